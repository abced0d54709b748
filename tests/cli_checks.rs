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

/// `cyan proxy run` refuses a listen address on port 0: it binds a random
/// port at each start, which nothing in front of the proxy can follow, and
/// an upgrade (which hands sockets over by address) failed on it.
#[test]
fn a_proxy_listen_address_needs_a_port_of_its_own() {
    let dir = std::env::temp_dir().join(format!("cyan-cli-port0-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let home = dir.join("home");
    let home = home.to_str().unwrap();
    for flag in ["--listen", "--tls-listen"] {
        let out = cyan(&dir, &["proxy", "run", "--home", home, flag, "127.0.0.1:0"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
        assert!(
            stderr.contains("port 0 binds a random port"),
            "{flag}: {stderr}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A proxy that `cyan` starts by itself gets its home as one argument, so
/// a home named like a flag (`--home=-h`, relative) still starts one.
#[test]
fn a_proxy_started_for_a_home_named_like_a_flag_serves_it() {
    let dir = std::env::temp_dir().join(format!("cyan-cli-dash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("cyan.yaml"),
        "app: dash\nimage: cyan-dash\nport: 8080\nproxy:\n  host: dash.localhost\n",
    )
    .unwrap();
    let in_dir = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cyan"))
            .args(args)
            .current_dir(&dir)
            .env("HOME", &dir)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let status = in_dir(&["--home=-h", "status", "-c", "cyan.yaml"]);
    let stopped = in_dir(&["--home=-h", "proxy", "stop"]);
    let log = std::fs::read_to_string(dir.join("-h/proxy.log")).unwrap_or_default();
    assert_eq!(
        status.status.code(),
        Some(0),
        "{}\nproxy log:\n{log}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert_eq!(
        stopped.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Holding requests and the maintenance page are the cyan proxy's: for an
/// app on Kubernetes they are refused (exit 9) before any proxy is asked.
#[test]
fn hold_and_maintenance_are_refused_for_a_clusters_app() {
    let dir = std::env::temp_dir().join(format!("cyan-cli-hold-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("cyan.yaml");
    std::fs::write(
        &config,
        "app: katk\nimage: ghcr.io/acme/katk\nport: 8080\nplatform: kubernetes\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let home = dir.join("home");
    let home = home.to_str().unwrap();
    for args in [
        ["--home", home, "maintenance", "on", "-c", config],
        ["--home", home, "hold", "on", "-c", config],
    ] {
        let out = cyan(&dir, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(9), "{args:?}: {stderr}");
        assert!(stderr.contains("runs on Kubernetes"), "{args:?}: {stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A fleet's app (`hosts:`) is refused what would act on this machine's
/// proxy or engine instead of the hosts', before any connection.
#[test]
fn what_acts_on_one_proxy_is_refused_for_a_fleet() {
    let dir = std::env::temp_dir().join(format!("cyan-cli-fleet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("cyan.yaml");
    std::fs::write(
        &config,
        "app: fatk\nimage: fatk\nport: 8080\nproxy: { listen: 0.0.0.0:18080 }\n\
environments:\n  staging: {}\n  production:\n    hosts: [ssh://root@192.0.2.1]\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let home = dir.join("home");
    let home = home.to_str().unwrap();
    let runs: [&[&str]; 3] = [
        &[
            "--home",
            home,
            "maintenance",
            "on",
            "-c",
            config,
            "-e",
            "production",
        ],
        &[
            "--home",
            home,
            "hold",
            "on",
            "-c",
            config,
            "-e",
            "production",
        ],
        &[
            "--home",
            home,
            "promote",
            "-c",
            config,
            "--from",
            "staging",
            "--to",
            "production",
        ],
    ];
    for args in runs {
        let out = cyan(&dir, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(9), "{args:?}: {stderr}");
        assert!(stderr.contains("hosts:"), "{args:?}: {stderr}");
    }
    assert!(
        !std::path::Path::new(home).exists(),
        "no proxy was started here"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
