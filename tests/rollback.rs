//! A cold rollback restores a release: its image and the config it was
//! deployed with (env, port, replicas, health, secrets by name), not
//! today's file. Real Docker engine, real `cyan` binary.

mod util;

use std::process::Command;

use util::{text, TestApp};

/// `docker inspect` of each running replica of `version`: its env, sorted.
fn running_env(app: &TestApp, version: &str) -> Vec<Vec<String>> {
    let ids = Command::new("docker")
        .args(["ps", "-q", "--filter"])
        .arg(format!("label=cyan.app={}", app.name))
        .arg("--filter")
        .arg(format!("label=cyan.version={version}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&ids.stdout)
        .lines()
        .map(|id| {
            let out = Command::new("docker")
                .args(["inspect", "--format", "{{json .Config.Env}}", id])
                .output()
                .unwrap();
            let mut env: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
            env.retain(|e| {
                !e.starts_with("PATH=") && !e.starts_with("VERSION=") && !e.starts_with("CYAN_")
            });
            env.sort();
            env
        })
        .collect()
}

/// The test app's config with `port`, `replicas` and `extra` of its own.
fn release_config(app: &TestApp, port: u16, replicas: u32, extra: &str) {
    app.write_config(extra);
    let yaml = std::fs::read_to_string(&app.config)
        .unwrap()
        .replace("port: 8080", &format!("port: {port}"))
        .replace("replicas: 2", &format!("replicas: {replicas}"));
    std::fs::write(&app.config, yaml).unwrap();
}

#[test]
fn a_cold_rollback_restores_the_config_the_release_was_deployed_with() {
    let app = TestApp::new("coldcfg", "");
    // v1: one replica on port 9090, with a secret.
    release_config(
        &app,
        9090,
        1,
        "env: { MODE: one, PORT: \"9090\" }\nsecrets: [TOKEN]\n",
    );
    let v1 = app
        .command(&["deploy", "--version", "v1"])
        .env("TOKEN", "first-token-value")
        .output()
        .unwrap();
    assert!(v1.status.success(), "{}", text(&v1));
    // v2 and v3: two replicas on 8080, no secret.
    release_config(&app, 8080, 2, "env: { MODE: two }\n");
    app.deploy("v2");
    release_config(&app, 8080, 2, "env: { MODE: three }\n");
    app.deploy("v3");
    assert!(running_env(&app, "v1").is_empty(), "v1 is retired: cold");

    // The secret is read again by name: without it nothing changes, and
    // the error says where the name comes from (not today's file).
    let missing = app.cyan(&["rollback", "--to", "v1"]);
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing));
    assert!(
        text(&missing).contains(
            "secret TOKEN is not set in the environment, and v1 was deployed with it (today's cyan.yaml no longer lists it)"
        ),
        "{}",
        text(&missing)
    );
    assert!(app.get("/").1.contains("v3"), "v3 stays live");

    let back = app
        .command(&["rollback", "--to", "v1"])
        .env("TOKEN", "first-token-value")
        .output()
        .unwrap();
    let said = text(&back);
    assert!(back.status.success(), "{said}");
    assert!(
        said.contains("restoring env MODE, env PORT, port, replicas, secrets"),
        "says what it restores: {said}"
    );
    assert!(!said.contains("secrets' values differ"), "{said}");
    assert_eq!(
        running_env(&app, "v1"),
        vec![vec![
            "MODE=one".to_string(),
            "PORT=9090".into(),
            "TOKEN=first-token-value".into()
        ]],
        "one replica, with v1's env and its secret"
    );
    let (status, body) = app.get("/");
    assert_eq!(status, 200);
    assert!(body.contains("v1"), "{body}");

    // The value was passed, never stored.
    let stored = Command::new("grep")
        .args(["-r", "-l", "first-token-value"])
        .arg(&app.home)
        .output()
        .unwrap();
    assert!(
        stored.stdout.is_empty(),
        "secret value found in {}",
        String::from_utf8_lossy(&stored.stdout)
    );

    // A hot rollback keeps the running set as it is: v3 was kept hot.
    app.cyan_ok(&["rollback", "--to", "v3"]);
    assert_eq!(running_env(&app, "v3").len(), 2);
    assert!(running_env(&app, "v3")
        .iter()
        .all(|e| e == &vec!["MODE=three".to_string()]));

    // A rotated secret still rolls back, and says it runs with today's value.
    app.cyan_ok(&["rollback", "--to", "v2"]);
    let rotated = app
        .command(&["rollback", "--to", "v1"])
        .env("TOKEN", "rotated")
        .output()
        .unwrap();
    assert!(rotated.status.success(), "{}", text(&rotated));
    assert!(
        text(&rotated).contains("secrets' values differ"),
        "{}",
        text(&rotated)
    );
}

/// The address of each of `version`'s containers, as `cyan status -o json`
/// gives it (live or previous).
fn status_addresses(app: &TestApp, version: &str) -> Vec<serde_json::Value> {
    let status = app.status_json();
    ["live", "previous"]
        .iter()
        .filter(|side| status[side]["version"] == version)
        .flat_map(|side| status[side]["containers"].as_array().cloned().unwrap())
        .map(|c| c["address"].clone())
        .collect()
}

#[test]
fn a_release_kept_hot_is_switched_to_and_started_again_with_its_own_config() {
    let app = TestApp::new("hotcfg", "");
    // v1 listens on 9090 with MODE one; v2, today's file, on 8080.
    release_config(&app, 9090, 1, "env: { MODE: one, PORT: \"9090\" }\n");
    app.deploy("v1");
    release_config(&app, 8080, 1, "env: { MODE: two }\n");
    app.deploy("v2");

    // v1 kept hot is found at its own port, not today's: the instant
    // rollback switches to it, and status shows where it is.
    let back = app.cyan(&["rollback"]);
    assert!(back.status.success(), "{}", text(&back));
    assert!(app.get("/").1.contains("v1"));
    let addresses = status_addresses(&app, "v1");
    assert!(
        !addresses.is_empty() && addresses.iter().all(|a| a.is_string()),
        "v1's containers have an address: {addresses:?}"
    );
    app.cyan_ok(&["rollback", "--to", "v2"]);

    // v1's replica stops: rolling back starts it again with v1's config
    // (MODE one on 9090), as recorded at its gate, not with today's file.
    let stopped = Command::new("docker")
        .args(["stop", "-t", "1"])
        .arg(format!("{}-production-blue-1-0", app.name))
        .output()
        .unwrap();
    assert!(stopped.status.success(), "{}", text(&stopped));
    let again = app.cyan(&["rollback"]);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(
        running_env(&app, "v1"),
        vec![vec!["MODE=one".to_string(), "PORT=9090".into()]],
        "{}",
        text(&again)
    );
    assert!(app.get("/").1.contains("v1"));
}

#[test]
fn a_rollback_never_goes_back_to_a_release_that_failed_its_verification() {
    let app = TestApp::new("badverify", "");
    app.deploy("v1");
    // v2 answers 500 to everything: its verification fails, and traffic
    // goes back to v1 by itself; v2 is kept for inspection.
    app.write_config(
        "verify: { duration: 3s, max_5xx_ratio: 0.01, min_requests: 5 }\nenv: { FAIL_RATE: \"1\" }\n",
    );
    let mut deploy = app.spawn(&["deploy", "--version", "v2"]);
    deploy.wait_for_step("verify", "began", std::time::Duration::from_secs(120));
    for _ in 0..10 {
        app.get("/");
    }
    let (code, _, log) = deploy.finish();
    assert_eq!(code, 6, "{log}");
    assert!(app.get("/").1.contains("v1"));

    // "Make sure we are rolled back" must not put v2 live again.
    let out = app.cyan(&["rollback"]);
    assert_eq!(out.status.code(), Some(9), "{}", text(&out));
    assert!(
        text(&out).contains("no previous release to roll back to (v2 failed its verification; `cyan rollback --to v2` goes back to it all the same)"),
        "{}",
        text(&out)
    );
    let (status, body) = app.get("/");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("v1"), "{body}");
}
