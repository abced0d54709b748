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

/// A signed Gitea push delivery of `after` on `branch` (all zeros: the
/// branch was deleted); (status, body).
fn deliver(addr: &str, branch: &str, before: &str, after: &str) -> (u16, String) {
    deliver_as(addr, &format!("{after}-1"), branch, before, after)
}

/// `deliver` with the delivery id `id`.
fn deliver_as(addr: &str, id: &str, branch: &str, before: &str, after: &str) -> (u16, String) {
    let body = serde_json::json!({
        "ref": format!("refs/heads/{branch}"),
        "before": before,
        "after": after,
        "deleted": after.bytes().all(|b| b == b'0'),
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
        "POST /hooks HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nX-Gitea-Event: push\r\nX-Gitea-Delivery: {id}\r\nX-Gitea-Signature: {signature}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
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

/// A repository, a cyan.yaml with staging and production, and a running
/// `cyan serve` on a proxy of the test's own that also listens on a port
/// for host-routed apps (a branch's environment).
struct Pipeline {
    app: TestApp,
    work: std::path::PathBuf,
    bare: std::path::PathBuf,
    first: String,
    staging_port: u16,
    /// The proxy's listen address for host-routed apps.
    shared: String,
    serve_addr: String,
    serve: std::process::Child,
    _proxy: std::process::Child,
}

impl Pipeline {
    fn new(tag: &str) -> Pipeline {
        let name = format!("t{}-{tag}", std::process::id());
        let app = TestApp::with_image(tag, "", Some(format!("127.0.0.1:5000/cyan-test-{name}")));
        let (staging_port, serve_port, shared_port) = (free_port(), free_port(), free_port());
        let shared = format!("127.0.0.1:{shared_port}");
        let proxy = util::proxy::spawn_proxy(&app.home, &["--listen", &shared]);
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
    - branch: "feature/*"
      deploy: staging
      preview: true
"#,
            image = app.image,
            port = app.port,
            bare = bare.display(),
        );
        std::fs::write(&app.config, config).unwrap();
        let serve_addr = format!("127.0.0.1:{serve_port}");
        let serve = app
            .command(&["serve", "run", "--listen", &serve_addr])
            .env("CYAN_TEST_HOOK_SECRET", SECRET)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let up = Instant::now();
        while TcpStream::connect(&serve_addr).is_err() {
            assert!(
                up.elapsed() < Duration::from_secs(20),
                "cyan serve did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Pipeline {
            app,
            work,
            bare,
            first,
            staging_port,
            shared,
            serve_addr,
            serve,
            _proxy: proxy,
        }
    }

    /// Commits a change on `branch` and pushes it: the commit.
    fn push(&self, branch: &str, file: &str) -> String {
        let work = &self.work;
        if branch != "main" {
            git(work, &["checkout", "-q", "-B", branch, "main"]);
        }
        std::fs::write(work.join(file), format!("{file}\n")).unwrap();
        git(work, &["add", "."]);
        git(work, &["commit", "-q", "-m", file]);
        git(
            work,
            &["push", "-q", "-f", self.bare.to_str().unwrap(), branch],
        );
        let commit = git(work, &["rev-parse", "HEAD"]);
        git(work, &["checkout", "-q", "main"]);
        commit
    }

    /// Waits for a delivery row with `verdict`: the row. Fails on `failed`.
    fn wait_for(&self, verdict: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            let rows = deliveries(&self.app);
            if let Some(row) = rows.iter().find(|r| r["verdict"] == verdict) {
                return row.clone();
            }
            if let Some(row) = rows.iter().find(|r| r["verdict"] == "failed") {
                panic!("the pipeline failed: {row:#}");
            }
            assert!(Instant::now() < deadline, "no {verdict}: {rows:#?}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let _ = self.serve.kill();
        let _ = self.serve.wait();
    }
}

fn registry_up() -> bool {
    util::present_or_skipped(
        TcpStream::connect("127.0.0.1:5000").is_ok(),
        "a registry on 127.0.0.1:5000",
        "Debian's docker-registry",
    )
}

#[test]
fn a_signed_push_deploys_staging_then_production_after_approval_with_no_failed_request() {
    if !registry_up() {
        return;
    }
    let pipe = Pipeline::new("pipeline");
    let (app, name, staging_port) = (&pipe.app, &pipe.app.name, pipe.staging_port);
    // v0, live in both, deployed by hand as the team did before.
    app.cyan_ok(&["deploy", "-e", "staging", "--version", "v0"]);
    app.cyan_ok(&["deploy", "-e", "production", "--version", "v0"]);
    app.cyan_ok(&["promote", "-e", "production"]);

    let rt = load::runtime();
    let _guard = rt.enter();
    let staging_load = Load::start(staging_port, &format!("staging.{name}.localhost"), 2, 1);
    let production_load = Load::start(app.port, &format!("{name}.localhost"), 2, 1);

    // A new commit, pushed; the forge delivers the push.
    let commit = pipe.push("main", "CHANGES");
    let version = commit[..12].to_string();
    let asked = Instant::now();
    let (status, answer) = deliver(&pipe.serve_addr, "main", &pipe.first, &commit);
    assert_eq!(status, 202, "{answer}");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "answered fast: {:?}",
        asked.elapsed()
    );

    // Staging deploys and verifies; production waits for approval.
    let waiting = pipe.wait_for("awaiting_approval");
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

    // The forge delivers the same push again: deployed, so not again; nor
    // the same push captured and sent under a new id.
    let (status, answer) = deliver(&pipe.serve_addr, "main", &pipe.first, &commit);
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("already deployed"), "{answer}");
    let (status, answer) = deliver_as(&pipe.serve_addr, "replayed", "main", &pipe.first, &commit);
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer.contains("was deployed to staging already"),
        "{answer}"
    );
}

#[test]
fn a_pushed_branch_gets_its_own_environment_until_it_is_deleted() {
    if !registry_up() {
        return;
    }
    let pipe = Pipeline::new("branches");
    let commit = pipe.push("feature/login", "LOGIN");
    let (status, answer) = deliver(&pipe.serve_addr, "feature/login", &pipe.first, &commit);
    assert_eq!(status, 202, "{answer}");
    let row = pipe.wait_for("deployed");
    let environment = row["deploy"]["environment"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        environment.starts_with("staging--feature-login-"),
        "{row:#}"
    );
    let slug = environment.trim_start_matches("staging--");
    let host = format!("{slug}.staging.{}.localhost", pipe.app.name);
    let (status, body) = util::http_get(&pipe.shared, &host, "/");
    assert_eq!(status, 200, "{body}");
    assert_eq!(identity(&body).1, commit[..12], "the branch's own release");
    // Staging itself was never touched.
    let staging = pipe.app.cyan(&["status", "-e", "staging", "-o", "json"]);
    let staging: serde_json::Value = serde_json::from_slice(&staging.stdout).unwrap();
    assert!(staging["live"].is_null(), "{staging:#}");

    // The branch is deleted: its environment goes.
    let zeros = "0".repeat(40);
    let (status, answer) = deliver(&pipe.serve_addr, "feature/login", &commit, &zeros);
    assert_eq!(status, 202, "{answer}");
    let deadline = Instant::now() + Duration::from_secs(120);
    while util::http_get(&pipe.shared, &host, "/").0 == 200 {
        assert!(Instant::now() < deadline, "{:#?}", deliveries(&pipe.app));
        std::thread::sleep(Duration::from_millis(500));
    }
    let left = Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label=cyan.env={environment}"))
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "its containers are gone");
}
