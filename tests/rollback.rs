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

    // The secret is read again by name: without it nothing changes.
    let missing = app.cyan(&["rollback", "--to", "v1"]);
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing));
    assert!(text(&missing).contains("TOKEN"), "{}", text(&missing));
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
