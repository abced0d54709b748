//! `cyan serve run` as a process: the forges' fixture deliveries
//! (tests/fixtures/forge) sent over a real socket, the answers and the
//! deliveries log checked. The deploys of the protocol tests fail fast and
//! harmlessly (`serve.source` is a path with no repository, so the fetch
//! fails): what they test is the server, not a deploy.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "cyan-fixture-secret";

/// A fixture: its headers and body, as the forge sent them.
struct Fixture {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Fixture {
    fn read(name: &str) -> Fixture {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/forge")
            .join(name);
        let raw = std::fs::read(&path).expect("fixture");
        let split = raw
            .windows(2)
            .position(|w| w == b"\n\n")
            .expect("a blank line");
        let head = std::str::from_utf8(&raw[..split]).expect("utf-8 headers");
        let headers = head
            .lines()
            .map(|l| {
                let (k, v) = l.split_once(':').expect("Name: value");
                (k.to_string(), v.trim().to_string())
            })
            .collect();
        Fixture {
            headers,
            body: raw[split + 2..].to_vec(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn set(&mut self, name: &str, value: &str) {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.to_string()));
    }

    fn without(mut self, name: &str) -> Fixture {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self
    }
}

/// A request's answer: status and body.
struct Answer {
    status: u16,
    headers: String,
    body: String,
}

/// Sends one request (`Connection: close`) and reads the answer.
fn send(addr: SocketAddr, method: &str, headers: &[(String, String)], body: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} /hooks HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // A server that answers before the body (413) may close first.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    Answer {
        status,
        headers: head.to_string(),
        body: body.to_string(),
    }
}

fn post(addr: SocketAddr, f: &Fixture) -> Answer {
    send(addr, "POST", &f.headers, &f.body)
}

/// A running `cyan serve run`, stopped (SIGTERM) on drop.
struct Serve {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Serve {
    /// Starts the server on `cyan.yaml` in `dir`, with its state in `dir/state`.
    fn start(dir: &Path, env: &[(&str, &str)]) -> Serve {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cyan"));
        cmd.args(["serve", "run", "-c"])
            .arg(dir.join("cyan.yaml"))
            .args(["--listen", &addr.to_string(), "--state"])
            .arg(dir.join("state"))
            .env("CYAN_TEST_HOOK_SECRET", SECRET)
            .env("CYAN_HOME", dir.join("home"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("serve.stderr")).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("cyan serve");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "cyan serve did not listen: {}",
                std::fs::read_to_string(dir.join("serve.stderr")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Serve {
            child,
            addr,
            dir: dir.to_path_buf(),
        }
    }

    fn log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.join("state/deliveries.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    /// The verdicts logged for delivery `id`, in order.
    fn verdicts(&self, id: &str) -> Vec<String> {
        self.log()
            .iter()
            .filter(|e| e["id"] == id)
            .map(|e| e["verdict"].as_str().unwrap().to_string())
            .collect()
    }

    /// Waits until `id`'s last verdict is one of `ends`.
    fn wait_for(&self, id: &str, ends: &[&str]) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let v = self.verdicts(id);
            if v.last().is_some_and(|l| ends.contains(&l.as_str())) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "delivery {id}: verdicts {v:?}, waiting for {ends:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cyan-serve-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A config whose `main` deploys `staging`, fetched from `source`.
fn config(dir: &Path, source: &str, extra: &str) {
    std::fs::write(
        dir.join("cyan.yaml"),
        format!(
            "app: hooks\nimage: 127.0.0.1:5000/hooks\nport: 8080\nproxy:\n  host: hooks.localhost\n\
environments:\n  staging: {{}}\n  production: {{}}\n\
serve:\n  repo: acme/web\n  source: {source}\n  secret: {{ env: CYAN_TEST_HOOK_SECRET }}\n{extra}  rules:\n    - branch: main\n      deploy: staging\n"
        ),
    )
    .unwrap();
}

fn json(a: &Answer) -> serde_json::Value {
    serde_json::from_str(&a.body).unwrap_or_else(|e| panic!("{e}: {:?}", a.body))
}

#[test]
fn every_forges_push_is_queued_and_its_failed_deploy_logged() {
    let dir = tempdir("forges");
    config(&dir, &dir.join("no-repository").display().to_string(), "");
    let serve = Serve::start(&dir, &[]);
    let pushes = [
        ("github-push.http", "X-GitHub-Delivery"),
        ("github-push-form.http", "X-GitHub-Delivery"),
        ("gitea-push.http", "X-Gitea-Delivery"),
        ("gitea-push-form.http", "X-Gitea-Delivery"),
        ("gogs-push.http", "X-Gogs-Delivery"),
        ("gogs-push-form.http", "X-Gogs-Delivery"),
        ("gitlab-push.http", "Idempotency-Key"),
        ("bitbucket-push.http", "X-Request-UUID"),
        ("bitbucket-server-push.http", "X-Request-Id"),
    ];
    let mut ids = Vec::new();
    for (i, (name, id_header)) in pushes.iter().enumerate() {
        let mut f = Fixture::read(name);
        // Fixtures that share a delivery id (a push and its form twin)
        // are told apart, except where the id is signed-over body: the
        // headers are not signed.
        let id = format!("{}-{i}", f.header(id_header).expect("an id header"));
        f.set(id_header, &id);
        let a = post(serve.addr, &f);
        assert_eq!(a.status, 202, "{name}: {}", a.body);
        let body = json(&a);
        assert_eq!(body["verdict"], "queued", "{name}");
        assert_eq!(body["delivery"], id.as_str(), "{name}");
        assert_eq!(body["deploys"][0]["environment"], "staging", "{name}");
        assert_eq!(body["deploys"][0]["version"], "0d1a26e67d8f", "{name}");
        ids.push(id);
    }
    for id in &ids {
        let v = serve.wait_for(id, &["failed", "superseded"]);
        assert_eq!(v[0], "queued", "{id}: {v:?}");
    }
    // At least the first ran (and failed at the fetch); later ones may
    // have been superseded while it ran, but the last one always runs.
    let last = serve
        .log()
        .into_iter()
        .rev()
        .find(|e| e["id"] == ids.last().unwrap().as_str())
        .unwrap();
    assert_eq!(last["verdict"], "failed", "{last}");
    assert!(
        last["reason"].as_str().unwrap().contains("cannot fetch"),
        "{last}"
    );
    assert_eq!(last["commit"], "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c");
    assert_eq!(last["ref"], "refs/heads/main");

    // A failed delivery sent again is queued again.
    let mut again = Fixture::read("github-push.http");
    again.set("X-GitHub-Delivery", &ids[0]);
    let a = post(serve.addr, &again);
    assert_eq!(a.status, 202, "{}", a.body);

    // The log read back, newest first.
    let out = Command::new(env!("CARGO_BIN_EXE_cyan"))
        .args(["serve", "deliveries", "-o", "json", "-c"])
        .arg(dir.join("cyan.yaml"))
        .arg("--state")
        .arg(dir.join("state"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut listed_ids: Vec<&str> = listed
        .iter()
        .filter(|e| e["verdict"] != "ignored")
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    listed_ids.sort();
    let mut want: Vec<&str> = ids.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(
        listed_ids, want,
        "one line per delivery and target: {listed:?}"
    );
    assert_eq!(
        listed[0]["id"],
        ids[0].as_str(),
        "the redelivery is the newest"
    );
}

#[test]
fn refusals_and_ignored_deliveries() {
    let dir = tempdir("refusals");
    config(
        &dir,
        &dir.join("no-repository").display().to_string(),
        "  forges: [github, gitea, gitlab]\n",
    );
    let serve = Serve::start(&dir, &[]);
    let addr = serve.addr;

    // Bad signature: one hex digit changed.
    let mut f = Fixture::read("github-push.http");
    let sig = f.header("X-Hub-Signature-256").unwrap().to_string();
    let flipped = format!(
        "{}{}",
        &sig[..sig.len() - 1],
        if sig.ends_with('0') { '1' } else { '0' }
    );
    f.set("X-Hub-Signature-256", &flipped);
    f.set("X-GitHub-Delivery", "bad-signature");
    let a = post(addr, &f);
    assert_eq!(a.status, 401, "{}", a.body);
    assert_eq!(json(&a)["verdict"], "refused");

    // No signature.
    let mut f = Fixture::read("gitea-push.http")
        .without("X-Gitea-Signature")
        .without("X-Gogs-Signature")
        .without("X-Hub-Signature-256")
        .without("X-Hub-Signature");
    f.set("X-Gitea-Delivery", "no-signature");
    assert_eq!(post(addr, &f).status, 401);

    // GitLab with the wrong token.
    let mut f = Fixture::read("gitlab-push.http");
    f.set("X-Gitlab-Token", "not-the-secret");
    assert_eq!(post(addr, &f).status, 401);

    // A forge left out of serve.forges.
    assert_eq!(post(addr, &Fixture::read("gogs-push.http")).status, 403);
    assert_eq!(
        post(addr, &Fixture::read("bitbucket-push.http")).status,
        403
    );

    // Not a forge's delivery at all.
    let a = send(
        addr,
        "POST",
        &[("Content-Type".into(), "application/json".into())],
        b"{}",
    );
    assert_eq!(a.status, 400);
    assert!(a.body.contains("not a forge delivery"), "{}", a.body);

    // Not a POST.
    let a = send(addr, "GET", &[], b"");
    assert_eq!(a.status, 405);
    assert!(
        a.headers.to_ascii_lowercase().contains("allow: post"),
        "{}",
        a.headers
    );

    // Over the body cap: refused on the declared length.
    let big = vec![b'{'; 2 << 20];
    let f = Fixture::read("github-push.http");
    let a = send(addr, "POST", &f.headers, &big);
    assert_eq!(a.status, 413, "{}", a.body);

    // A ping, an unhandled event, a tag no rule takes, a deleted branch:
    // 200 ignored, so a forge keeps the hook.
    let a = post(addr, &Fixture::read("github-ping.http"));
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(json(&a)["verdict"], "ignored");
    let mut f = Fixture::read("github-push.http");
    f.set("X-GitHub-Event", "issues");
    f.set("X-GitHub-Delivery", "an-issue");
    let a = post(addr, &f);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(json(&a)["verdict"], "ignored");
    assert!(
        json(&a)["reason"].as_str().unwrap().contains("not a push"),
        "{}",
        a.body
    );
    for name in [
        "gitlab-tag-push.http",
        "github-push-delete.http",
        "forgejo-delete.http",
    ] {
        let a = post(addr, &Fixture::read(name));
        assert_eq!(a.status, 200, "{name}: {}", a.body);
        assert_eq!(json(&a)["verdict"], "ignored", "{name}");
    }

    let log = serve.log();
    let refused = log.iter().filter(|e| e["verdict"] == "refused").count();
    assert_eq!(refused, 6, "{log:?}");
    assert_eq!(serve.verdicts("bad-signature"), ["refused"]);
    assert_eq!(serve.verdicts("an-issue"), ["ignored"]);
    // Nothing of a refused body reaches the log.
    for e in log.iter().filter(|e| e["verdict"] == "refused") {
        assert!(e.get("commit").is_none() && e.get("ref").is_none(), "{e}");
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("state/deliveries.jsonl"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_delivery_that_deployed_is_not_deployed_again() {
    let dir = tempdir("redelivery");
    config(&dir, &dir.join("no-repository").display().to_string(), "");
    // What the log holds after the delivery deployed.
    std::fs::create_dir_all(dir.join("state")).unwrap();
    let f = Fixture::read("github-push.http");
    let id = f.header("X-GitHub-Delivery").unwrap().to_string();
    let line = serde_json::json!({
        "id": id, "forge": "github", "repo": "acme/web", "ref": "refs/heads/main",
        "commit": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", "received_at": "2025-01-01T00:00:00Z",
        "verdict": "deployed", "deploy": {"environment": "staging", "version": "0d1a26e67d8f", "exit_code": 0},
    });
    std::fs::write(dir.join("state/deliveries.jsonl"), format!("{line}\n")).unwrap();
    let serve = Serve::start(&dir, &[]);
    let a = post(serve.addr, &f);
    assert_eq!(a.status, 200, "{}", a.body);
    let body = json(&a);
    assert_eq!(body["verdict"], "ignored");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("already deployed"),
        "{body}"
    );
    assert_eq!(serve.verdicts(&id), ["deployed", "ignored"]);
}

#[test]
fn too_many_requests_from_one_address() {
    let dir = tempdir("rate");
    config(&dir, &dir.join("no-repository").display().to_string(), "");
    let serve = Serve::start(&dir, &[]);
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let a = send(serve.addr, "GET", &[], b"");
        if a.status == 429 {
            assert!(
                a.headers.to_ascii_lowercase().contains("retry-after: "),
                "{}",
                a.headers
            );
        }
        statuses.push(a.status);
    }
    // The first (the burst, 20, less the start-up probe's none) are answered.
    assert!(statuses[..19].iter().all(|s| *s == 405), "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    // Only refusals spend tokens: a signed delivery from the same address
    // still gets through, and the flood did not fill the log.
    let ping = Fixture::read("github-ping.http");
    let a = send(serve.addr, "POST", &ping.headers, &ping.body);
    assert_eq!(a.status, 200, "{}", a.body);
    let log = std::fs::read_to_string(dir.join("state/deliveries.jsonl")).unwrap_or_default();
    assert!(log.lines().count() <= 21, "{log}");
}

#[test]
fn a_rule_naming_no_environment_is_a_config_error() {
    let dir = tempdir("badrule");
    config(&dir, "/nowhere", "");
    let text = std::fs::read_to_string(dir.join("cyan.yaml"))
        .unwrap()
        .replace("deploy: staging", "deploy: qa");
    std::fs::write(dir.join("cyan.yaml"), text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cyan"))
        .args(["serve", "run", "--listen", "127.0.0.1:0", "-c"])
        .arg(dir.join("cyan.yaml"))
        .arg("--state")
        .arg(dir.join("state"))
        .env("CYAN_TEST_HOOK_SECRET", SECRET)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("qa"));
}
