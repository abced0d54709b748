//! The gate's other probes against the real engine: `health.tcp` (a
//! connect that must stay open) and `health.command` (run in the container,
//! exit 0 passes), with the demo app: `START_DELAY_MS` keeps it from
//! listening, `BIND` puts it on loopback, and `cyan-demo check` is a
//! command that fails with `FAIL_CHECK=1`.

mod util;

use std::time::{Duration, Instant};

use util::{assert_contains_all, text, TestApp, GATE_FAILED};

/// Rewrites the app's cyan.yaml with `probe` (lines under `health:`) in
/// place of its HTTP check, the gate deadline `deadline`, and `extra`.
fn configure(app: &TestApp, probe: &str, deadline: &str, extra: &str) {
    app.write_config(extra);
    let yaml = std::fs::read_to_string(&app.config).unwrap();
    let http = "  http: { path: /healthz, expect: 200 }\n";
    assert!(yaml.contains(http), "the test config changed: {yaml}");
    let yaml = yaml.replacen(http, &format!("  {probe}\n"), 1).replacen(
        "deadline: 20s",
        &format!("deadline: {deadline}"),
        1,
    );
    std::fs::write(&app.config, yaml).unwrap();
}

/// Deploys `version` and expects the gate to fail; returns the output and
/// how long it took. The live color must be untouched.
fn gate_fails(app: &TestApp, version: &str) -> (String, Duration) {
    let blue = app.containers();
    let started = Instant::now();
    let out = app.cyan(&["deploy", "--version", version]);
    let took = started.elapsed();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(GATE_FAILED), "{all}");
    assert!(all.contains("last log lines of"), "{all}");
    assert_eq!(
        app.containers(),
        blue,
        "green must be removed and blue left as it was"
    );
    app.assert_all_answers_from("1", 10);
    (all, took)
}

/// A replica is named right before `reason`, e.g.
/// `t1-tcp-production-green-2-0: connect to 127.0.0.1:…`.
fn names_a_replica(all: &str, app: &TestApp, reason: &str) {
    let prefix = format!("{}-production-", app.name);
    let named = all.match_indices(&prefix).any(|(at, _)| {
        all[at..].split_once(": ").is_some_and(|(replica, rest)| {
            !replica.contains(char::is_whitespace) && rest.starts_with(reason)
        })
    });
    assert!(named, "no replica named before {reason:?} in:\n{all}");
}

#[test]
fn a_tcp_gate_passes_a_listening_app_and_fails_one_that_never_listens() {
    let app = TestApp::new("tcp", "");
    configure(&app, "tcp: true", "20s", "");
    let out = app.cyan(&["deploy", "--version", "1"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    names_a_replica(&all, &app, "2/2 connect to 127.0.0.1:");
    assert!(all.contains(": open"), "{all}");
    app.assert_all_answers_from("1", 10);

    // Never listens within the deadline: Docker's userland proxy accepts on
    // the published port and closes at once, which must not pass.
    configure(
        &app,
        "tcp: true",
        "3s",
        "env:\n  START_DELAY_MS: \"600000\"\n",
    );
    let (all, took) = gate_fails(&app, "2");
    assert_contains_all(
        &all,
        &[
            "(0/2 replicas healthy)",
            "accepted, then closed at once without a byte",
            "(deadline 3s)",
        ],
    );
    names_a_replica(&all, &app, "connect to 127.0.0.1:");
    assert!(took < Duration::from_secs(15), "the gate took {took:?}");

    // Listens on loopback inside its container: failed at once, the cause named.
    configure(&app, "tcp: true", "20s", "env:\n  BIND: \"127.0.0.1\"\n");
    let (all, took) = gate_fails(&app, "2");
    assert!(
        all.contains("listens on 127.0.0.1:8080 inside its container: loopback"),
        "{all}"
    );
    names_a_replica(&all, &app, "connect to 127.0.0.1:");
    assert!(
        !all.contains("(deadline"),
        "must fail at once, not at the deadline:\n{all}"
    );
    assert!(took < Duration::from_secs(10), "the gate took {took:?}");
}

#[test]
fn a_command_gate_passes_on_exit_0_and_fails_with_the_exit_code_and_output() {
    let app = TestApp::new("cmd", "");
    let check = "command: [/cyan-demo, check]";
    configure(&app, check, "20s", "");
    let out = app.cyan(&["deploy", "--version", "1"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("`/cyan-demo check` exited 0"), "{all}");
    app.assert_all_answers_from("1", 10);

    // The app serves, but its own check says no: exit 1 and its output.
    configure(&app, check, "3s", "env:\n  FAIL_CHECK: \"1\"\n");
    let (all, _) = gate_fails(&app, "2");
    let reason =
        "`/cyan-demo check` exited 1: check failed: FAIL_CHECK=1 (the app's own check says no)";
    names_a_replica(&all, &app, reason);
    assert!(all.contains("(deadline 3s)"), "{all}");

    // The check passes inside the container, but the app listens on
    // loopback there, where the proxy reaches nothing: failed at once.
    configure(&app, check, "20s", "env:\n  BIND: \"127.0.0.1\"\n");
    let (all, took) = gate_fails(&app, "2");
    names_a_replica(
        &all,
        &app,
        "`/cyan-demo check` exited 0, but the app listens on 127.0.0.1:8080 inside its container: loopback",
    );
    assert!(took < Duration::from_secs(10), "the gate took {took:?}");

    // A program the image does not have can never pass: failed at once.
    configure(&app, "command: [/no-such-check]", "20s", "");
    let (all, took) = gate_fails(&app, "2");
    names_a_replica(&all, &app, "`/no-such-check` exited 126:");
    assert!(all.contains("could not be run in the container"), "{all}");
    assert!(took < Duration::from_secs(10), "the gate took {took:?}");
}
