//! Lifecycle hooks on a real Docker engine with the real `cyan` binary:
//! their order and variables, a veto, a timeout, a one-off container of
//! the candidate's image, and a deploy killed during a hook.

mod util;

use std::time::Duration;

use util::{text, TestApp};

/// Exit code of a failed hook (README, "Exit codes").
const HOOK_FAILED: i32 = 10;

/// A host hook that appends one line of its variables to `log`.
fn logging(hook: &str, log: &std::path::Path) -> String {
    format!(
        "  {hook}: {{ run: 'echo \"$CYAN_HOOK v=$CYAN_VERSION color=$CYAN_COLOR live=$CYAN_LIVE_COLOR prev=$CYAN_PREVIOUS_VERSION env=$CYAN_ENVIRONMENT phase=$CYAN_PHASE\" >> {}', timeout: 10s }}\n",
        log.display()
    )
}

fn lines(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn hooks_run_in_order_with_their_variables_once_per_release() {
    let app = TestApp::new("hookorder", "");
    let log = app.dir.join("hooks.log");
    let hooks: String = [
        "pre_build",
        "pre_deploy",
        "post_gate",
        "post_switch",
        "post_deploy",
        "on_rollback",
    ]
    .iter()
    .map(|h| logging(h, &log))
    .collect();
    app.write_config(&format!("hooks:\n{hooks}"));
    app.deploy("v1");
    app.deploy("v2");
    assert_eq!(
        lines(&log),
        [
            "pre_build v=v1 color= live= prev= env=production phase=build",
            "pre_deploy v=v1 color=blue live= prev= env=production phase=launch",
            "post_gate v=v1 color=blue live= prev= env=production phase=gated",
            "post_switch v=v1 color=blue live=blue prev= env=production phase=switched",
            "post_deploy v=v1 color= live=blue prev= env=production phase=live",
            "pre_build v=v2 color= live=blue prev=v1 env=production phase=build",
            "pre_deploy v=v2 color=green live=blue prev=v1 env=production phase=launch",
            "post_gate v=v2 color=green live=blue prev=v1 env=production phase=gated",
            "post_switch v=v2 color=green live=green prev=v1 env=production phase=switched",
            "post_deploy v=v2 color= live=green prev=v1 env=production phase=live",
        ]
    );
    // Run again: the release is live; no hook runs twice for it.
    app.deploy("v2");
    assert_eq!(lines(&log).len(), 10, "{:#?}", lines(&log));
    // A rollback runs on_rollback only.
    app.cyan_ok(&["rollback"]);
    let all = lines(&log);
    assert_eq!(all.len(), 11, "{all:#?}");
    assert!(
        all[10].starts_with("on_rollback v=v1 color= live=blue prev=v2"),
        "{}",
        all[10]
    );
    app.assert_all_answers_from("v1", 5);
}

#[test]
fn a_failing_post_gate_vetoes_the_switch_and_removes_the_candidate() {
    let app = TestApp::new("hookveto", "");
    app.deploy("v1");
    let before = app.containers();
    let fail_log = app.dir.join("failure.log");
    app.write_config(&format!(
        "hooks:\n  post_gate: {{ run: 'echo smoke test: GET $CYAN_PREVIEW_URL/checkout failed; exit 7', timeout: 10s }}\n  on_failure: {{ run: 'echo \"$CYAN_FAILURE\" > {}' }}\n",
        fail_log.display()
    ));
    let out = app.cyan(&["deploy", "--version", "v2"]);
    assert_eq!(out.status.code(), Some(HOOK_FAILED), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("hook post_gate exited with 7"), "{said}");
    assert!(said.contains("smoke test: GET"), "its output: {said}");
    assert!(said.contains("vetoed"), "{said}");
    assert_eq!(app.containers(), before, "green is gone, blue untouched");
    app.assert_all_answers_from("v1", 5);
    let failure = std::fs::read_to_string(&fail_log).expect("on_failure ran");
    assert!(
        failure.contains("hook post_gate exited with 7"),
        "{failure}"
    );

    // A hook past its timeout is killed and fails the same way.
    app.write_config("hooks:\n  post_gate: { run: 'sleep 30', timeout: 1s }\n");
    let started = std::time::Instant::now();
    let out = app.cyan(&["deploy", "--version", "v2"]);
    assert_eq!(out.status.code(), Some(HOOK_FAILED), "{}", text(&out));
    assert!(
        text(&out).contains("did not finish within 1s"),
        "{}",
        text(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(25));
    assert_eq!(app.containers(), before);
    app.assert_all_answers_from("v1", 5);
}

#[test]
fn a_container_hook_runs_the_candidates_image_with_the_apps_env_and_secrets() {
    let app = TestApp::new("hookbox", "");
    let config = "secrets: [DB_PASSWORD]\nhooks:\n  pre_deploy: { run: [/cyan-demo, migrate], container: true, timeout: 30s }\n";
    app.write_config(config);
    let out = app
        .command(&["deploy", "--version", "v1"])
        .env("DB_PASSWORD", "hunter2")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    let name = &app.name;
    assert!(
        said.contains(&format!(
            "migrate version=v1 hook=pre_deploy app={name} environment=production color=blue secret=set"
        )),
        "{said}"
    );
    assert!(
        !said.contains("hunter2"),
        "the secret's value is never printed"
    );
    // Its container is gone, and never counted as a replica.
    let left = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label=cyan.hook={name}-production"))
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "the one-off container was removed");

    // A failing migration stops the deploy before any container starts.
    app.write_config(&format!(
        "{config}env: {{ MIGRATE_EXIT: \"3\", MIGRATE_PRINT_SECRET: \"1\" }}\n"
    ));
    let before = app.containers();
    let out = app
        .command(&["deploy", "--version", "v2"])
        .env("DB_PASSWORD", "hunter2")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(HOOK_FAILED), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("hook pre_deploy exited with 3"), "{said}");
    assert!(said.contains("migration failed: MIGRATE_EXIT=3"), "{said}");
    // What it printed of the secret is redacted, in the progress and the error.
    assert!(
        said.contains("connecting with password [redacted DB_PASSWORD]"),
        "{said}"
    );
    assert!(!said.contains("hunter2"), "{said}");
    assert_eq!(app.containers(), before);
    app.assert_all_answers_from("v1", 3);
}

/// Deploys `version` with a slow `post_gate` (and a logged `pre_deploy`)
/// and kills cyan with -9 inside the hook, once the first run's hook has
/// left a child that would write `orphan` 8 s later unless it is stopped.
/// Returns when cyan was killed.
fn killed_in_post_gate(app: &TestApp, log: &std::path::Path, version: &str) -> std::time::Instant {
    let first = app.dir.join("first-run");
    let slow = format!(
        "  post_gate: {{ run: 'echo start >> {log}; if [ ! -e {first} ]; then touch {first}; (sleep 8; echo orphan >> {log}) & echo forked >> {log}; fi; sleep 4; echo end >> {log}', timeout: 30s }}\n",
        log = log.display(),
        first = first.display(),
    );
    app.write_config(&format!("hooks:\n{}{slow}", logging("pre_deploy", log)));
    let mut run = app.spawn(&["deploy", "--version", version]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    // Killed once the child is there: `forked` comes after it started.
    while !lines(log).iter().any(|l| l == "forked") {
        assert!(std::time::Instant::now() < deadline, "{}", run.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    run.kill9();
    std::time::Instant::now()
}

#[test]
fn a_deploy_killed_during_a_hook_runs_again_only_the_hook_that_did_not_pass() {
    let app = TestApp::new("hookkill", "");
    app.deploy("v1");
    let log = app.dir.join("hooks.log");
    let killed = killed_in_post_gate(&app, &log, "v2");
    app.assert_all_answers_from("v1", 3);

    let out = app.cyan(&["deploy", "--version", "v2"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("post_gate was started for v2"),
        "the re-run says why it runs the hook again: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("an interrupted hook left running"),
        "and stops what the first run left: {}",
        text(&out)
    );
    // Past the moment the first run's child would have written.
    std::thread::sleep(Duration::from_secs(10).saturating_sub(killed.elapsed()));
    let all = lines(&log);
    assert!(all[0].starts_with("pre_deploy v=v2"), "{all:#?}");
    assert_eq!(
        all[1..],
        ["start", "forked", "start", "end"],
        "pre_deploy passed: once; the first post_gate never ended, nor its child wrote"
    );
    app.assert_all_answers_from("v2", 3);
}

#[test]
fn what_a_killed_deploys_hook_left_stops_before_the_next_versions_hooks() {
    let app = TestApp::new("hooknext", "");
    app.deploy("v1");
    let log = app.dir.join("hooks.log");
    let killed = killed_in_post_gate(&app, &log, "v2");
    // Another version now: its own hooks, and the old one's child stopped.
    let out = app.cyan(&["deploy", "--version", "v3"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("an interrupted hook left running"),
        "{}",
        text(&out)
    );
    std::thread::sleep(Duration::from_secs(10).saturating_sub(killed.elapsed()));
    let all = lines(&log);
    assert!(all[3].starts_with("pre_deploy v=v3"), "{all:#?}");
    assert_eq!(all[4..], ["start", "end"], "{all:#?}");
    app.assert_all_answers_from("v3", 3);
}
