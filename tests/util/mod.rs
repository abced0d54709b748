//! Test harness: one `TestApp` per test, with its own app name, proxy home
//! and listen port, running the real `cyan` binary against the real Docker
//! engine. Dropping it removes everything it made, found by label.
//!
//! Beside it, what more than one test file needs, one concept a file: the
//! proxy on its own (`proxy`), upstreams on loopback (`upstream`), raw
//! HTTP/1.1 (`raw`), bounded load (`load`), TLS (`tls`), bounded waits
//! (`wait`) and the CLI's report contract across platforms (`reports`). The Kubernetes API the operator tests talk to is
//! `tests/apiserver`.

#![allow(dead_code)]

pub mod load;
pub mod proxy;
pub mod raw;
pub mod reports;
pub mod tls;
pub mod upstream;
pub mod wait;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fails the test, saying what to run, when the demo's static binary (what
/// the test images are made of) has not been built.
pub fn demo_binary_present() {
    let bin = repo_root().join("examples/demo/build/cyan-demo");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/build-static before the tests (the README's test command does)",
        bin.display()
    );
}

/// Exit code of a failed health gate (README, "Exit codes").
pub const GATE_FAILED: i32 = 3;

/// Whether what a test needs (a tool, a service) is here: `found`. Without
/// it the test says it skipped, naming what is `missing` and how `.ci/run`
/// provides it (`provided`), except in CI, where that is a failure.
pub fn present_or_skipped(found: bool, missing: &str, provided: &str) -> bool {
    if !found {
        assert!(std::env::var_os("CI").is_none(), "{missing}; {provided}");
        eprintln!("SKIPPED: {missing} ({provided})");
    }
    found
}

/// A port free on 127.0.0.1 now, below the kernel's ephemeral range
/// (32768 and up): the engine publishes containers' ports from that range,
/// so a port the kernel handed out could be a container's after a restart
/// (a survival test's proxy once found its app's port taken that way).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let seed = std::process::id().wrapping_mul(7919);
    for _ in 0..SPAN {
        let port = (LOW + (seed + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN)
}

pub struct TestApp {
    pub name: String,
    pub dir: PathBuf,
    pub home: PathBuf,
    pub port: u16,
    pub config: PathBuf,
    pub image: String,
}

impl TestApp {
    /// A demo app with a unique name; `extra` is appended to its cyan.yaml.
    pub fn new(tag: &str, extra: &str) -> TestApp {
        Self::with_image(tag, extra, None)
    }

    pub fn with_image(tag: &str, extra: &str, image: Option<String>) -> TestApp {
        demo_binary_present();
        let name = format!("t{}-{tag}", std::process::id());
        let dir = std::env::temp_dir().join(format!("cyan-test-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let home = dir.join("home");
        let port = free_port();
        let image = image.unwrap_or_else(|| format!("cyan-test-{name}"));
        let app = TestApp {
            config: dir.join("cyan.yaml"),
            name,
            dir,
            home,
            port,
            image,
        };
        app.write_config(extra);
        app
    }

    /// A demo app whose proxy home is `home`: apps made on one home share
    /// one proxy, as apps on one machine do.
    pub fn on_home(tag: &str, extra: &str, home: &Path) -> TestApp {
        let mut app = Self::new(tag, extra);
        app.home = home.to_path_buf();
        app
    }

    /// Rewrites cyan.yaml with different extra settings (a new release config).
    pub fn write_config(&self, extra: &str) {
        let yaml = format!(
            "app: {name}\nimage: {image}\nbuild:\n  context: {ctx}\nreplicas: 2\nport: 8080\ninit: true\nstop_timeout: 2s\n\
proxy:\n  host: {name}.localhost\n  listen: 127.0.0.1:{port}\n  drain_timeout: 5s\n\
health:\n  http: {{ path: /healthz, expect: 200 }}\n  interval: 100ms\n  timeout: 1s\n  healthy_threshold: 2\n  unhealthy_threshold: 4\n  deadline: 20s\n{extra}",
            name = self.name,
            image = self.image,
            ctx = repo_root().join("examples/demo").display(),
            port = self.port,
        );
        std::fs::write(&self.config, yaml).unwrap();
    }

    /// The host the proxy routes this app by: `{name}.localhost`.
    pub fn host(&self) -> String {
        format!("{}.localhost", self.name)
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cyan"));
        cmd.args(args)
            .arg("-c")
            .arg(&self.config)
            .env("CYAN_HOME", &self.home)
            .env("CI", "true")
            .env_remove("RUST_LOG");
        cmd
    }

    /// Runs cyan to completion.
    pub fn cyan(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs cyan and panics with its output unless it succeeds.
    pub fn cyan_ok(&self, args: &[&str]) -> String {
        succeeded(args, &self.cyan(args))
    }

    pub fn deploy(&self, version: &str) -> String {
        self.cyan_ok(&["deploy", "--version", version])
    }

    /// Starts cyan in the background, watching its progress lines and its
    /// structured step events (`--log-format json`).
    pub fn spawn(&self, args: &[&str]) -> Running {
        let mut child = self
            .command(args)
            .args(["--log-format", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::<(Instant, String)>::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push((Instant::now(), line));
            }
        });
        Running { child, lines }
    }

    pub fn status_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.cyan_ok(&["status", "-o", "json"])).unwrap()
    }

    /// GET through the proxy: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(&format!("127.0.0.1:{}", self.port), &self.host(), path)
    }

    /// `times` GET / through the proxy: each a 200 from `version`.
    pub fn assert_all_answers_from(&self, version: &str, times: usize) {
        for _ in 0..times {
            let (status, body) = self.get("/");
            assert_eq!(status, 200, "{body}");
            assert_eq!(identity(&body).1, version, "{body}");
        }
    }

    /// IDs of this app's containers, running or not, sorted.
    pub fn containers(&self) -> Vec<String> {
        let out = Command::new("docker")
            .args(["ps", "-aq", "--no-trunc", "--filter"])
            .arg(format!("label=cyan.app={}", self.name))
            .output()
            .unwrap();
        let mut ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect();
        ids.sort();
        ids
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // `proxy stop` takes no `-c`: through `self.cyan` it failed, and every
        // test left its proxy running.
        let _ = proxy::proxy_ctl("stop", &self.home);
        let ids = self.containers();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .output();
        }
        let images = Command::new("docker")
            .args(["images", "-q", "--filter"])
            .arg(format!("reference={}", self.image))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let images: Vec<&str> = images.lines().collect();
        if !images.is_empty() {
            // --no-prune keeps the untagged parent layers: they are the build
            // cache other tests' builds are using at this moment, and pruning
            // them fails those builds ("failed to get digest").
            let _ = Command::new("docker")
                .args(["rmi", "-f", "--no-prune"])
                .args(&images)
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A cyan process running in the background.
pub struct Running {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Running {
    /// Waits for a progress line containing `needle`; returns when it was
    /// printed. For a moment inside a step (a probe's result, say); a
    /// step's start or end is `wait_for_step`.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Instant {
        self.wait_until(needle, timeout, |l| l.contains(needle))
    }

    /// Waits for the step event `step` (`build`, `launch`, `gate`,
    /// `switch`, `verify`, …: `Step`'s names) with `event` `began` or
    /// `done`; returns when it was printed.
    pub fn wait_for_step(&mut self, step: &str, event: &str, timeout: Duration) -> Instant {
        self.wait_until(&format!("step {step} {event}"), timeout, |l| {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
                return false;
            };
            v["target"] == "cyan::step"
                && v["fields"]["step"] == step
                && v["fields"]["event"] == event
        })
    }

    fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        seen: impl Fn(&str) -> bool,
    ) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((at, _)) = self.lines.lock().unwrap().iter().find(|(_, l)| seen(l)) {
                return *at;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "cyan exited ({status}) before printing {what:?}:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {what:?} within {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap(); // SIGKILL
        let _ = self.child.wait();
    }

    /// Waits for exit; returns (exit code, stdout, progress log).
    pub fn finish(mut self) -> (i32, String, String) {
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        let status = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        (status.code().unwrap_or(-1), stdout, self.log())
    }

    pub fn log(&self) -> String {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The stdout of cyan run with `args`, once it succeeded: panics with its
/// output otherwise.
pub fn succeeded(args: &[&str], out: &Output) -> String {
    assert!(out.status.success(), "cyan {args:?} failed:\n{}", text(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Panics unless `all` contains each of `needles`, naming the first it
/// does not.
pub fn assert_contains_all(all: &str, needles: &[&str]) {
    for needle in needles {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
}

pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A one-shot HTTP/1.1 GET over a fresh connection.
pub fn http_get(addr: &str, host: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// `<hostname> <uuid> <version>` → (uuid, version).
pub fn identity(body: &str) -> (String, String) {
    let parts: Vec<&str> = body.split_whitespace().collect();
    assert_eq!(parts.len(), 3, "unexpected demo body {body:?}");
    (parts[1].to_string(), parts[2].to_string())
}

/// The demo's hostname (its container's short id): the first word of its
/// answer.
pub fn hostname(body: &str) -> &str {
    body.split_whitespace().next().unwrap_or("")
}

/// The first 12 characters of an engine id: the demo's hostname.
pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// The short ids of `ids`: what the demo answers as its hostname.
pub fn short_ids(ids: &[String]) -> HashSet<String> {
    ids.iter().map(|id| short_id(id).to_string()).collect()
}

/// The 200s among `samples` that came from none of `ours` (short ids).
pub fn foreign_answers<'s>(samples: &'s [load::Sample], ours: &HashSet<String>) -> Vec<&'s String> {
    samples
        .iter()
        .filter_map(|s| s.outcome.as_ref().ok())
        .filter(|b| !ours.contains(hostname(b)))
        .collect()
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}
