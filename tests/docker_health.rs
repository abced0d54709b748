//! Docker's own health (an image's `HEALTHCHECK`) in the gate and in
//! `cyan status`, against the real engine: the demo image built with
//! `examples/demo/Dockerfile.healthcheck`, whose check is `cyan-demo check`
//! (it fails with `FAIL_CHECK=1` while /healthz still answers 200).

mod util;

use std::time::Duration;

use serde_json::Value;
use util::{assert_contains_all, text, TestApp, GATE_FAILED};

/// A demo app whose image has a HEALTHCHECK; `extra` as for `TestApp::new`.
fn with_healthcheck(tag: &str, extra: &str) -> TestApp {
    let app = TestApp::new(tag, "");
    configure(&app, extra);
    app
}

/// Rewrites the app's cyan.yaml to build `Dockerfile.healthcheck`.
fn configure(app: &TestApp, extra: &str) {
    app.write_config(extra);
    let yaml = std::fs::read_to_string(&app.config).unwrap();
    let yaml = yaml.replacen(
        "build:\n",
        "build:\n  dockerfile: Dockerfile.healthcheck\n",
        1,
    );
    std::fs::write(&app.config, yaml).unwrap();
}

/// The Docker health of each container of a color in `cyan status -o json`.
fn healths(status: &Value, color: &str) -> Vec<String> {
    status[color]["containers"]
        .as_array()
        .unwrap_or_else(|| panic!("no {color} containers in {status:#}"))
        .iter()
        .map(|c| c["health"].as_str().unwrap_or("(missing)").to_string())
        .collect()
}

#[test]
fn a_failing_healthcheck_fails_the_gate_though_http_passes() {
    let app = with_healthcheck("dh-fail", "");
    app.deploy("1");
    let blue = app.containers();

    configure(&app, "env:\n  FAIL_CHECK: \"1\"\n");
    let out = app.cyan(&["deploy", "--version", "2"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(GATE_FAILED), "{all}");
    assert_contains_all(
        &all,
        &[
            "health gate failed for",
            "(0/2 replicas healthy)",
            "Docker reports the container unhealthy",
            // cyan's own probe passed: Docker's check is what failed.
            "GET /healthz -> ok",
            // Docker's log of the check: its exit code and output.
            "exit 1: check failed: FAIL_CHECK=1",
            "health.docker: false",
            "waiting for Docker's health (starting)",
        ],
    );
    assert!(
        !all.contains("(deadline"),
        "unhealthy must fail the gate at once, not at the deadline:\n{all}"
    );
    assert_eq!(
        app.containers(),
        blue,
        "green must be removed and blue left as it was"
    );
    app.assert_all_answers_from("1", 20);
}

#[test]
fn health_docker_false_gates_on_http_alone_and_status_warns() {
    let app = with_healthcheck("dh-off", "  docker: false\nenv:\n  FAIL_CHECK: \"1\"\n");
    let out = app.cyan(&["deploy", "--version", "1"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        !all.contains("Docker's health"),
        "health.docker: false must not wait for Docker:\n{all}"
    );
    app.assert_all_answers_from("1", 20);

    // Docker calls the live containers unhealthy after two failed checks
    // (1s apart); status says so, with a warning line.
    let status = util::wait::until(
        "Docker to report the live containers unhealthy",
        Duration::from_secs(20),
        Duration::from_millis(250),
        || {
            let status = app.status_json();
            healths(&status, "live")
                .iter()
                .all(|h| h == "unhealthy")
                .then_some(status)
        },
        || format!("{:#}", app.status_json()),
    );
    let warnings = status["warnings"].as_array().unwrap();
    assert_eq!(
        warnings.len(),
        2,
        "one warning per live container: {status:#}"
    );
    for w in warnings {
        let w = w.as_str().unwrap();
        assert!(w.contains("unhealthy") && w.contains("FAIL_CHECK=1"), "{w}");
    }
    let text_status = app.cyan_ok(&["status"]);
    assert!(
        text_status.contains("health: unhealthy")
            && text_status.contains("warning: live container"),
        "{text_status}"
    );
}

#[test]
fn a_passing_healthcheck_is_waited_for_and_shown_healthy() {
    let app = with_healthcheck("dh-pass", "");
    let out = app.cyan(&["deploy", "--version", "1"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        all.contains("waiting for Docker's health (starting)"),
        "the gate says what it waits for:\n{all}"
    );
    // The gate waited for `healthy`, so status shows it at once.
    let status = app.status_json();
    assert_eq!(
        healths(&status, "live"),
        ["healthy", "healthy"],
        "{status:#}"
    );
    assert_eq!(status["warnings"], serde_json::json!([]), "{status:#}");
    let text_status = app.cyan_ok(&["status"]);
    assert_eq!(
        text_status.matches("health: healthy").count(),
        2,
        "{text_status}"
    );
    app.assert_all_answers_from("1", 20);
}

#[test]
fn an_image_without_healthcheck_is_unaffected() {
    let app = TestApp::new("dh-none", "");
    let out = app.cyan(&["deploy", "--version", "1"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        !all.contains("Docker's health") && !all.contains("Docker health"),
        "no HEALTHCHECK, nothing to wait for:\n{all}"
    );
    let status = app.status_json();
    assert_eq!(healths(&status, "live"), ["none", "none"], "{status:#}");
    app.assert_all_answers_from("1", 20);
}

#[test]
fn starting_blocks_the_switch_until_the_deadline() {
    // Docker runs the first check one --interval after the start: with 60s,
    // the gate (3s) sees only `starting`, though /healthz answers at once.
    let app = TestApp::new("dh-slow", "");
    let ctx = app.dir.join("context");
    std::fs::create_dir_all(ctx.join("build")).unwrap();
    let demo = util::repo_root().join("examples/demo/build/cyan-demo");
    std::fs::copy(demo, ctx.join("build/cyan-demo")).unwrap();
    let dockerfile =
        std::fs::read_to_string(util::repo_root().join("examples/demo/Dockerfile.healthcheck"))
            .unwrap()
            .replace("--interval=1s", "--interval=60s");
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    let yaml = std::fs::read_to_string(&app.config)
        .unwrap()
        .replace(
            &util::repo_root()
                .join("examples/demo")
                .display()
                .to_string(),
            &ctx.display().to_string(),
        )
        .replace("deadline: 20s", "deadline: 3s");
    std::fs::write(&app.config, yaml).unwrap();

    let out = app.cyan(&["deploy", "--version", "1"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(GATE_FAILED), "{all}");
    assert_contains_all(
        &all,
        &[
            "GET /healthz -> ok; waiting for Docker's health (starting) after",
            "(deadline 3s)",
            "Docker has run no health check yet",
        ],
    );
    assert!(app.containers().is_empty(), "the failed color is removed");
}
