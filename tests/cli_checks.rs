//! What the command line refuses before it reaches any platform: no
//! Docker engine, no cluster and no kubeconfig are needed to be told, so a
//! user without them gets the real reason and its exit code (README, "Exit
//! codes"), not "cannot reach …".

use std::process::{Command, Output, Stdio};

/// Runs `cyan args…` with `HOME` in `dir` and no `KUBECONFIG`.
fn cyan(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cyan"))
        .args(args)
        .env("HOME", dir)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn a_clusters_app_is_refused_what_needs_no_cluster_before_any_connection() {
    let dir = std::env::temp_dir().join(format!("cyan-cli-checks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("cyan.yaml");
    std::fs::write(
        &config,
        "app: katk\nimage: cyan-katk\nport: 8080\nplatform: kubernetes\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();

    let removed = cyan(&dir, &["remove", "-c", config, "--yes"]);
    assert_eq!(removed.status.code(), Some(9), "{}", stderr(&removed));
    assert!(
        stderr(&removed).contains("kubectl delete bgd katk"),
        "{}",
        stderr(&removed)
    );

    let deployed = cyan(&dir, &["deploy", "-c", config, "--version", "v1"]);
    assert_eq!(deployed.status.code(), Some(2), "{}", stderr(&deployed));
    assert!(
        stderr(&deployed).contains("must name a registry"),
        "{}",
        stderr(&deployed)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
