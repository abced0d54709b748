//! The seed pipeline, end to end, with cyan alone: a commit pushed to a
//! real git repository, a signed push delivery to the real `cyan serve`,
//! the staging deploy under load, its verification, the chained promotion
//! to production waiting for approval, `cyan promote`, and production
//! switched under load: 0 failed requests in both environments, and
//! production running the very digest the registry holds for the commit.

mod util;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::load::{self, Load};
use util::{free_port, identity, repo_root, succeeded, text, TestApp};

const SECRET: &str = "pipeline-hook-secret";

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=Dev", "-c", "user.email=dev@example.com"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A signed Gitea push delivery of `after` on main; (status, body).
fn deliver(addr: &str, before: &str, after: &str) -> (u16, String) {
    let body = serde_json::json!({
        "ref": "refs/heads/main",
        "before": before,
        "after": after,
        "repository": {"full_name": "acme/demo", "clone_url": "https://git.example.com/acme/demo.git"},
    })
    .to_string();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let signature: String = ring::hmac::sign(&key, body.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /hooks HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nX-Gitea-Event: push\r\nX-Gitea-Delivery: {after}-1\r\nX-Gitea-Signature: {signature}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    (status, answer)
}

/// The registry's manifest digest of `repo:tag` (`sha256:…`).
fn registry_digest(repo: &str, tag: &str) -> String {
    let path = repo.trim_start_matches("127.0.0.1:5000/");
    let mut s = TcpStream::connect("127.0.0.1:5000").unwrap();
    write!(
        s,
        "HEAD /v2/{path}/manifests/{tag} HTTP/1.1\r\nHost: 127.0.0.1:5000\r\nAccept: application/vnd.docker.distribution.manifest.v2+json\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("docker-content-digest:")
                .then(|| l.split_once(':').unwrap().1.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no digest for {repo}:{tag}: {answer}"))
}

/// The deliveries log's rows, as `cyan serve deliveries -o json` gives them.
fn deliveries(app: &TestApp) -> Vec<serde_json::Value> {
    let out = app.cyan(&["serve", "deliveries", "-o", "json"]);
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

#[test]
fn a_signed_push_deploys_staging_then_production_after_approval_with_no_failed_request() {
    if !util::present_or_skipped(
        TcpStream::connect("127.0.0.1:5000").is_ok(),
        "a registry on 127.0.0.1:5000",
        "Debian's docker-registry",
    ) {
        return;
    }
    let name = format!("t{}-pipeline", std::process::id());
    let app = TestApp::with_image(
        "pipeline",
        "",
        Some(format!("127.0.0.1:5000/cyan-test-{name}")),
    );
    let (staging_port, serve_port) = (free_port(), free_port());
    // The app's repository: the demo's Dockerfile and static binary.
    let work = app.dir.join("work");
    std::fs::create_dir_all(work.join("build")).unwrap();
    let demo = repo_root().join("examples/demo");
    std::fs::copy(demo.join("Dockerfile"), work.join("Dockerfile")).unwrap();
    std::fs::copy(demo.join("build/cyan-demo"), work.join("build/cyan-demo")).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "the demo"]);
    let bare = app.dir.join("demo.git");
    git(&app.dir, &["init", "-q", "--bare", bare.to_str().unwrap()]);
    git(&work, &["push", "-q", bare.to_str().unwrap(), "main"]);
    let first = git(&work, &["rev-parse", "HEAD"]);

    let config = format!(
        r#"app: {name}
image: {image}
build: {{ context: work }}
replicas: 2
port: 8080
init: true
stop_timeout: 2s
proxy: {{ drain_timeout: 5s }}
health:
  http: {{ path: /healthz, expect: 200 }}
  interval: 100ms
  healthy_threshold: 2
  deadline: 30s
verify: {{ duration: 4s, min_requests: 5, on_inconclusive: pass }}
environments:
  staging:
    proxy: {{ host: staging.{name}.localhost, listen: "127.0.0.1:{staging_port}" }}
  production:
    proxy: {{ host: {name}.localhost, listen: "127.0.0.1:{port}" }}
    require_approval: true
serve:
  repo: acme/demo
  source: {bare}
  secret: {{ env: CYAN_TEST_HOOK_SECRET }}
  rules:
    - branch: main
      deploy: staging
      then: production
"#,
        image = app.image,
        port = app.port,
        bare = bare.display(),
    );
    std::fs::write(&app.config, config).unwrap();

    // v0, live in both, deployed by hand as the team did before.
    app.cyan_ok(&["deploy", "-e", "staging", "--version", "v0"]);
    app.cyan_ok(&["deploy", "-e", "production", "--version", "v0"]);
    app.cyan_ok(&["promote", "-e", "production"]);

    let mut serve = app
        .command(&[
            "serve",
            "run",
            "--listen",
            &format!("127.0.0.1:{serve_port}"),
        ])
        .env("CYAN_TEST_HOOK_SECRET", SECRET)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let serve_addr = format!("127.0.0.1:{serve_port}");
    let up = Instant::now();
    while TcpStream::connect(&serve_addr).is_err() {
        assert!(
            up.elapsed() < Duration::from_secs(20),
            "cyan serve did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let rt = load::runtime();
    let _guard = rt.enter();
    let staging_load = Load::start(staging_port, &format!("staging.{name}.localhost"), 2, 1);
    let production_load = Load::start(app.port, &format!("{name}.localhost"), 2, 1);

    // A new commit, pushed; the forge delivers the push.
    std::fs::write(work.join("CHANGES"), "the second release\n").unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "second"]);
    git(&work, &["push", "-q", bare.to_str().unwrap(), "main"]);
    let commit = git(&work, &["rev-parse", "HEAD"]);
    let version = commit[..12].to_string();
    let asked = Instant::now();
    let (status, answer) = deliver(&serve_addr, &first, &commit);
    assert_eq!(status, 202, "{answer}");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "answered fast: {:?}",
        asked.elapsed()
    );

    // Staging deploys and verifies; production waits for approval.
    let deadline = Instant::now() + Duration::from_secs(240);
    let waiting = loop {
        let rows = deliveries(&app);
        if let Some(row) = rows.iter().find(|r| r["verdict"] == "awaiting_approval") {
            break row.clone();
        }
        if let Some(row) = rows.iter().find(|r| r["verdict"] == "failed") {
            panic!("the pipeline failed: {row:#}");
        }
        assert!(Instant::now() < deadline, "{rows:#?}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(waiting.to_string().contains(&version), "{waiting:#}");
    app.cyan_ok(&["status", "-e", "staging"]);
    let (_, body) = util::http_get(
        &format!("127.0.0.1:{staging_port}"),
        &format!("staging.{name}.localhost"),
        "/",
    );
    assert_eq!(identity(&body).1, version, "staging runs the commit");
    app.assert_all_answers_from("v0", 3);

    // Approval: production switches to the digest staging verified.
    let promoted = succeeded(
        &["promote", "-e", "production"],
        &app.cyan(&["promote", "-e", "production", "-o", "json"]),
    );
    let promoted: serde_json::Value = serde_json::from_str(&promoted).unwrap();
    assert_eq!(promoted["version"], version.as_str(), "{promoted:#}");
    app.assert_all_answers_from(&version, 5);
    std::thread::sleep(Duration::from_secs(1));

    let staging_samples = rt.block_on(staging_load.finish());
    let production_samples = rt.block_on(production_load.finish());
    load::assert_none_failed(&staging_samples, "in staging, across the pushed deploy");
    load::assert_none_failed(&production_samples, "in production, across the promotion");
    assert!(staging_samples.len() > 50 && production_samples.len() > 50);

    let registry = registry_digest(&app.image, &version);
    let digest = promoted["digest"].as_str().unwrap_or_default();
    assert_eq!(
        digest,
        format!("{}@{registry}", app.image),
        "production runs the registry's digest of the commit"
    );
    let history: serde_json::Value =
        serde_json::from_str(&app.cyan_ok(&["history", "-e", "production", "-o", "json"])).unwrap();
    let newest = &history[0];
    assert_eq!(
        newest["release"]["version"],
        version.as_str(),
        "{history:#}"
    );
    assert_eq!(newest["from_environment"], "staging", "{history:#}");
    let stages = newest["stages"].as_array().unwrap();
    assert!(
        stages
            .iter()
            .any(|s| s["environment"] == "staging" && s["verified"] == true),
        "{history:#}"
    );
    assert!(
        stages.iter().any(|s| s["environment"] == "production"),
        "{history:#}"
    );

    let _ = Command::new("kill").arg(serve.id().to_string()).status();
    let _ = serve.wait();
}
