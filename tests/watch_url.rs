//! `cyan watch --url` as a person watching a deploy runs it, against real
//! servers: the demo image redeployed the way users do today (`docker
//! stop; docker rm; sleep 1; docker run`), small servers on 127.0.0.1 that
//! answer 404, 503 or nothing at all, one behind TLS, and the text lines
//! as a terminal (tmux) shows them while they happen.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// `cyan watch`'s exit code when a probe failed (its --help).
const SOME_PROBE_FAILED: i32 = 6;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn cyan() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cyan"));
    c.stdin(Stdio::null());
    c
}

fn json_lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}")))
        .collect()
}

fn events<'v>(all: &'v [Value], kind: &str) -> Vec<&'v Value> {
    all.iter().filter(|v| v["event"] == kind).collect()
}

fn summary(all: &[Value]) -> &Value {
    let last = all.last().expect("some output");
    // Failed probes add the error object after the summary (exit 6).
    let last = match last.get("error") {
        Some(_) => &all[all.len() - 2],
        None => last,
    };
    assert_eq!(last["event"], "summary", "{all:#?}");
    last
}

fn ms(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

// ---------------------------------------------------------------------------
// A watch running as a child process, its lines read as they come.

struct Watch {
    child: Child,
    /// Each stdout line with when the test read it.
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    readers: Vec<JoinHandle<()>>,
    stderr: Arc<Mutex<String>>,
}

impl Watch {
    fn start(args: &[&str]) -> Watch {
        let mut child = cyan()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = BufReader::new(child.stdout.take().unwrap());
        let err = child.stderr.take().unwrap();
        let readers = vec![
            std::thread::spawn({
                let lines = lines.clone();
                move || {
                    for line in out.lines().map_while(Result::ok) {
                        lines.lock().unwrap().push((Instant::now(), line));
                    }
                }
            }),
            std::thread::spawn({
                let stderr = stderr.clone();
                move || {
                    let mut text = String::new();
                    let _ = BufReader::new(err).read_to_string(&mut text);
                    *stderr.lock().unwrap() = text;
                }
            }),
        ];
        Watch {
            child,
            lines,
            readers,
            stderr,
        }
    }

    /// The first JSON line `is` takes, and when it was read; waits for it
    /// up to `limit`.
    fn wait_for(&self, what: &str, limit: Duration, is: impl Fn(&Value) -> bool) -> Instant {
        util::wait::until(
            what,
            limit,
            Duration::from_millis(10),
            || {
                self.lines
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|(_, l)| serde_json::from_str::<Value>(l).is_ok_and(|v| is(&v)))
                    .map(|(at, _)| *at)
            },
            || {
                self.lines
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(_, l)| format!("{l}\n"))
                    .collect()
            },
        )
    }

    /// Ctrl-C (SIGINT), then its exit code, stdout lines (with when each was
    /// read) and stderr.
    fn interrupt(mut self) -> (i32, Vec<(Instant, Value)>, String) {
        let pid = self.child.id() as libc::pid_t;
        assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
        let status = util::wait::until(
            "the watch to end after SIGINT",
            Duration::from_secs(10),
            Duration::from_millis(10),
            || self.child.try_wait().unwrap(),
            String::new,
        );
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        let lines = self
            .lines
            .lock()
            .unwrap()
            .iter()
            .map(|(at, l)| (*at, serde_json::from_str(l).unwrap()))
            .collect();
        let stderr = self.stderr.lock().unwrap().clone();
        (status.code().expect("an exit code"), lines, stderr)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// Docker, by name, removed on drop (a panic included).

struct Docker {
    image: String,
    container: String,
}

impl Docker {
    fn new() -> Docker {
        let tag = format!("cyan-watch-test-{}", std::process::id());
        Docker {
            image: format!("{tag}:demo"),
            container: tag,
        }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("docker").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The demo at `version`, published on 127.0.0.1:`port`, as users run
    /// it: no --init, so the app is PID 1 and ignores SIGTERM.
    fn start_demo(&self, port: u16, version: &str) {
        self.run(&[
            "run",
            "-d",
            "--name",
            &self.container,
            "-p",
            &format!("127.0.0.1:{port}:8080"),
            "-e",
            &format!("VERSION={version}"),
            &self.image,
        ]);
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        for args in [
            vec!["rm", "-f", &self.container],
            vec!["rmi", "-f", &self.image],
        ] {
            let _ = Command::new("docker").args(args).output();
        }
    }
}

/// The version `GET /` on 127.0.0.1:`port` names in its X-Version, on a
/// new connection; `None` when nothing whole answers.
fn version_at(port: u16) -> Option<String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    let (head, _) = answer.split_once("\r\n\r\n")?;
    head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("x-version")
            .then(|| value.trim().to_string())
    })
}

#[test]
fn a_naive_redeploy_is_one_error_window_from_the_stop_to_the_new_run() {
    util::demo_binary_present();
    let docker = Docker::new();
    let context = util::repo_root().join("examples/demo");
    docker.run(&[
        "build",
        "-q",
        "-t",
        &docker.image,
        &util::path_str(&context),
    ]);
    let port = util::free_port();
    docker.start_demo(port, "1.0.0");
    util::wait::until(
        "the demo's 1.0.0 to answer",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || (version_at(port).as_deref() == Some("1.0.0")).then_some(()),
        String::new,
    );
    let every = 50;
    let url = format!("http://127.0.0.1:{port}/");
    let watch = Watch::start(&[
        "watch",
        "--url",
        &url,
        "--every",
        &format!("{every}ms"),
        "-o",
        "json",
    ]);
    watch.wait_for("1.0.0 to be watched", Duration::from_secs(10), |v| {
        v["event"] == "version" && v["to"] == "1.0.0"
    });

    // The redeploy of the issue. `-t 1`: the demo (PID 1, no handler)
    // ignores SIGTERM, so `docker stop` always waits out its timeout before
    // SIGKILL; 1s instead of the default 10s keeps the test short.
    let stop_began = now_ms();
    docker.run(&["stop", "-t", "1", &docker.container]);
    let stop_done = now_ms();
    docker.run(&["rm", &docker.container]);
    std::thread::sleep(Duration::from_secs(1)); // the scenario's `sleep 1`, not a wait
    let run_began = now_ms();
    let run_began_at = Instant::now();
    docker.start_demo(port, "2.0.0");
    let run_done = now_ms();
    watch.wait_for("2.0.0 to be watched", Duration::from_secs(20), |v| {
        v["event"] == "version" && v["to"] == "2.0.0"
    });
    let (code, lines, stderr) = watch.interrupt();
    let all: Vec<Value> = lines.iter().map(|(_, v)| v.clone()).collect();
    eprintln!(
        "stop {stop_began}..{stop_done}, run {run_began}..{run_done}\n{}",
        all.iter().map(|v| format!("{v}\n")).collect::<String>()
    );
    assert_eq!(code, SOME_PROBE_FAILED, "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let opened = events(&all, "window_opened");
    let closed = events(&all, "window_closed");
    assert_eq!((opened.len(), closed.len()), (1, 1), "one error window");
    let w = closed[0];
    let (start, end) = (ms(&w["start_ms"]), ms(&w["end_ms"]));
    assert_eq!(w["open"], false);
    assert_eq!(ms(&opened[0]["at_ms"]), start);
    // It opens during `docker stop` (the SIGKILL, a second in), or at the
    // latest with the first probe after it: one period later, plus 500ms
    // for a busy 2-core machine to schedule it.
    assert!(
        start >= stop_began && start <= stop_done + every + 500,
        "window start {start} vs docker stop {stop_began}..{stop_done}"
    );
    // It closes with the first answer, which nothing could give before
    // the new container was asked for; that answer is 2.0.0's.
    assert!(
        end >= run_began,
        "window end {end} before docker run {run_began}"
    );
    let versions = events(&all, "version");
    assert_eq!(versions.len(), 2, "{versions:?}");
    assert_eq!(
        (&versions[0]["from"], &versions[0]["to"]),
        (&Value::Null, &Value::from("1.0.0"))
    );
    assert_eq!(
        (&versions[1]["from"], &versions[1]["to"]),
        (&Value::from("1.0.0"), &Value::from("2.0.0"))
    );
    assert_eq!(ms(&versions[1]["at_ms"]), end, "the answer that closed it");
    // Printed as it happened: the window's opening was read before the
    // new container was even asked for.
    let opened_read = lines
        .iter()
        .find(|(_, v)| v["event"] == "window_opened")
        .unwrap()
        .0;
    assert!(opened_read < run_began_at, "the opening line came late");

    let s = summary(&all);
    let (probes, ok, failed) = (ms(&s["probes"]), ms(&s["ok"]), ms(&s["failed"]));
    assert_eq!(ok + failed, probes);
    assert_eq!(
        ms(&w["failed"]),
        failed,
        "every failure is in the one window"
    );
    let kinds: u64 = w["kinds"].as_object().unwrap().values().map(ms).sum();
    assert_eq!(kinds, failed);
    assert_eq!(ms(&s["windows"]["count"]), 1);
    assert_eq!(ms(&s["windows"]["longest_ms"]), ms(&w["duration_ms"]));
    assert_eq!(ms(&s["status_4xx"]), 0);
    assert_eq!(s["stopped_by"], "signal");
    assert_eq!(ms(&s["version_changes"]), 1);
    let seen = s["versions"].as_object().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(ms(&seen["1.0.0"]) + ms(&seen["2.0.0"]), ok);
    // How many probes fit: they start at least `every` apart (the
    // interval never bursts), so at most duration/every. A refused or
    // closed connection fails in a few milliseconds, so those keep the
    // pace: at least half of it on a busy machine, over the time the
    // timeouts did not take. (One is usual: a connection the engine's
    // port forwarding takes as the new container starts waits for the
    // kernel's SYN retransmission, a second, past the 1s deadline.)
    let duration = ms(&w["duration_ms"]);
    assert_eq!(duration, end - start);
    let timeouts = w["kinds"].get("timeout").map_or(0, ms);
    let paced = duration.saturating_sub(timeouts * 1000);
    assert!(
        failed <= duration / every + 1 && failed >= timeouts + paced / every / 2,
        "{failed} failed probes ({timeouts} timeouts) in {duration}ms at one per {every}ms"
    );
    eprintln!(
        "window {duration}ms ({} failed: {}), from {}ms after docker stop began to {}ms after docker run began; \
         docker stop took {}ms, the stop..run gap {}ms",
        failed,
        w["kinds"],
        start - stop_began,
        end - run_began,
        stop_done - stop_began,
        run_began - stop_done,
    );
}

// ---------------------------------------------------------------------------
// Small servers on 127.0.0.1.

/// An HTTP/1.1 response with a body and extra header lines (each ending
/// in CRLF).
fn response(status: &str, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\n{headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A server whose `n`th request (from 1, over all connections) is
/// answered `answer(n)`, or never (`None`: the connection is held until
/// the client leaves). Keep-alive: a connection serves requests until the
/// client closes it. It takes at most 64 connections.
struct Server {
    port: u16,
    connections: Arc<AtomicUsize>,
}

type Answer = Arc<dyn Fn(usize) -> Option<Vec<u8>> + Send + Sync>;

impl Server {
    fn start(answer: impl Fn(usize) -> Option<Vec<u8>> + Send + Sync + 'static) -> Server {
        Self::with(answer, |stream| Box::new(stream))
    }

    /// A server whose connections are wrapped by `wrap` (TLS) first.
    fn with(
        answer: impl Fn(usize) -> Option<Vec<u8>> + Send + Sync + 'static,
        wrap: impl Fn(TcpStream) -> Box<dyn ReadWrite> + Send + 'static,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let answer: Answer = Arc::new(answer);
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(64).flatten() {
                counted.fetch_add(1, Ordering::SeqCst);
                let (answer, requests) = (answer.clone(), requests.clone());
                let stream = wrap(stream);
                std::thread::spawn(move || serve(stream, &answer, &requests));
            }
        });
        Server { port, connections }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

fn serve(stream: Box<dyn ReadWrite>, answer: &Answer, requests: &AtomicUsize) {
    let mut reader = BufReader::new(stream);
    loop {
        // A GET: a head, no body.
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => {}
            }
        }
        let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
        match answer(n) {
            Some(bytes) => {
                let out = reader.get_mut();
                if out.write_all(&bytes).and_then(|()| out.flush()).is_err() {
                    return;
                }
            }
            None => {
                let _ = std::io::copy(&mut reader, &mut std::io::sink());
                return;
            }
        }
    }
}

#[test]
fn a_5xx_is_a_window_counted_by_status_and_a_4xx_opens_none() {
    // 3 × 404 naming no version, 5 × 503, then 200s whose JSON body names
    // the version: the version comes from the body when no header does.
    let server = Server::start(|n| {
        Some(match n {
            1..=3 => response("404 Not Found", "", "no\n"),
            4..=8 => response("503 Service Unavailable", "x-version: 9.9.9\r\n", "busy\n"),
            _ => response(
                "200 OK",
                "content-type: application/json\r\n",
                r#"{"version": "3.1.4", "ok": true}"#,
            ),
        })
    });
    let out = cyan()
        .args([
            "watch",
            "--url",
            &server.url(),
            "--every",
            "20ms",
            "--count",
            "14",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(SOME_PROBE_FAILED),
        "stderr: {stderr}"
    );
    let all = json_lines(&out.stdout);
    let closed = events(&all, "window_closed");
    assert_eq!(closed.len(), 1, "the 404s opened no window: {all:#?}");
    let w = closed[0];
    assert_eq!(ms(&w["failed"]), 5);
    assert_eq!(w["kinds"], serde_json::json!({"503": 5}));
    assert_eq!(w["open"], false);
    assert_eq!(events(&all, "window_opened")[0]["kind"], "503");
    // A 5xx's X-Version is not an answering version.
    let versions = events(&all, "version");
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert_eq!(versions[0]["to"], "3.1.4");
    let s = summary(&all);
    assert_eq!(
        (
            ms(&s["probes"]),
            ms(&s["ok"]),
            ms(&s["failed"]),
            ms(&s["status_4xx"])
        ),
        (14, 9, 5, 3)
    );
    assert_eq!(s["versions"], serde_json::json!({"-": 3, "3.1.4": 6}));
    assert_eq!(s["stopped_by"], "count");
    assert_eq!(
        all.last().unwrap()["error"]["kind"],
        "verify_failed",
        "after the summary, the error that gives exit 6"
    );
    // 14 probes, 404s and 503s among them, on one kept-alive connection.
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

#[test]
fn a_server_that_never_answers_is_a_timeout_at_the_probe_deadline() {
    let server = Server::start(|_| None);
    let (count, every, timeout) = (4u64, 50u64, 300u64);
    let began = Instant::now();
    let out = cyan()
        .args(["watch", "--url", &server.url(), "-o", "json"])
        .args(["--count", &count.to_string()])
        .args([
            "--every",
            &format!("{every}ms"),
            "--timeout",
            &format!("{timeout}ms"),
        ])
        .output()
        .unwrap();
    let took = began.elapsed();
    assert_eq!(out.status.code(), Some(SOME_PROBE_FAILED));
    let all = json_lines(&out.stdout);
    let closed = events(&all, "window_closed");
    assert_eq!(closed.len(), 1);
    let w = closed[0];
    assert_eq!(w["kinds"], serde_json::json!({"timeout": count}));
    assert_eq!(w["open"], true, "never answered: open at the end");
    // Each probe waits out its deadline, and not much past it: the
    // probes, one at a time, take count × timeout, plus at most 150ms
    // each of scheduling; the next starts at once (the period is past).
    let s = summary(&all);
    let lasted = ms(&s["duration_ms"]);
    assert!(
        lasted >= count * timeout && lasted < count * (timeout + 150),
        "{count} probes with a {timeout}ms deadline lasted {lasted}ms"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    // A connection with an unanswered request cannot carry another
    // (HTTP/1.1): each probe had a new one.
    assert_eq!(server.connections.load(Ordering::SeqCst), count as usize);
}

#[test]
fn https_is_verified_against_the_hosts_roots() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = std::env::temp_dir().join(format!("cyan-watch-tls-{}", std::process::id()));
    let files = util::tls::self_signed(&dir, "localhost");
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&files.key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    );
    let server = Server::with(
        |_| Some(response("200 OK", "x-app-version: 4.0.0\r\n", "tls\n")),
        move |tcp| {
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            Box::new(rustls::StreamOwned::new(conn, tcp))
        },
    );
    let url = format!("https://localhost:{}/", server.port);
    let watch = |trusted: bool| {
        let mut c = cyan();
        c.args([
            "watch", "--url", &url, "--count", "3", "--every", "20ms", "-o", "json",
        ]);
        c.env_remove("SSL_CERT_DIR");
        match trusted {
            true => c.env("SSL_CERT_FILE", &files.cert),
            false => c.env_remove("SSL_CERT_FILE"),
        };
        c.output().unwrap()
    };
    // Trusted (the host's roots name it): answered, the version from
    // X-App-Version.
    let out = watch(true);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = json_lines(&out.stdout);
    assert_eq!(summary(&all)["versions"], serde_json::json!({"4.0.0": 3}));
    // Not trusted: each probe fails as `tls`.
    let out = watch(false);
    assert_eq!(out.status.code(), Some(SOME_PROBE_FAILED));
    let all = json_lines(&out.stdout);
    assert_eq!(
        events(&all, "window_closed")[0]["kinds"],
        serde_json::json!({"tls": 3})
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_reader_that_goes_away_ends_the_watch() {
    let server = Server::start(|_| Some(response("200 OK", "x-version: 1\r\n", "")));
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out: Output = cyan()
        .args(["watch", "--url", &server.url(), "--every", "20ms"])
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

// ---------------------------------------------------------------------------
// In a terminal.

/// A tmux server of its own (a socket named for this test), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// The pane's lines, those scrolled off the top included.
    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-S", "-", "-t", "watch"])
    }

    /// Waits until the screen shows `needle`; returns the screen.
    fn wait_for(&self, needle: &str) -> String {
        util::wait::until(
            &format!("{needle:?} on the screen"),
            Duration::from_secs(15),
            Duration::from_millis(20),
            || Some(self.screen()).filter(|s| s.contains(needle)),
            || self.screen(),
        )
    }
}

impl Drop for Tmux {
    /// Kills the server and removes its socket (which tmux leaves behind).
    fn drop(&mut self) {
        let tmux = |args: &[&str]| {
            Command::new("tmux")
                .args(["-L", &self.socket])
                .args(args)
                .output()
                .ok()
        };
        let socket = tmux(&["display-message", "-p", "#{socket_path}"])
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string());
        let _ = tmux(&["kill-server"]);
        if let Some(path) = socket.filter(|p| !p.is_empty()) {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[test]
fn in_a_terminal_the_lines_come_as_it_happens() {
    if !util::present_or_skipped(
        Command::new("tmux").arg("-V").output().is_ok(),
        "tmux is not installed",
        "apt-get install tmux",
    ) {
        return;
    }
    // 0: 1.0.0 answers; 1: 502s; 2: 2.0.0 answers. The test moves it on
    // once the screen shows the last step.
    let phase = Arc::new(AtomicUsize::new(0));
    let bad = Arc::new(AtomicUsize::new(0));
    let server = Server::start({
        let (phase, bad) = (phase.clone(), bad.clone());
        move |_| {
            Some(match phase.load(Ordering::SeqCst) {
                0 => response("200 OK", "x-version: 1.0.0\r\n", "one\n"),
                1 => {
                    bad.fetch_add(1, Ordering::SeqCst);
                    response("502 Bad Gateway", "", "down\n")
                }
                _ => response("200 OK", "x-version: 2.0.0\r\n", "two\n"),
            })
        }
    });
    let tmux = Tmux {
        socket: format!("cyan-watch-test-{}", std::process::id()),
    };
    let command = format!(
        "{} watch --url {} --every 100ms",
        env!("CARGO_BIN_EXE_cyan"),
        server.url()
    );
    tmux.run(&[
        "-f",
        "/dev/null",
        "new-session",
        "-d",
        "-s",
        "watch",
        "-x",
        "120",
        "-y",
        "30",
        &command,
        ";",
        "set-option",
        "-t",
        "watch",
        "remain-on-exit",
        "on",
    ]);
    tmux.wait_for("  version 1.0.0");
    phase.store(1, Ordering::SeqCst);
    // On the screen while the errors go on.
    tmux.wait_for("errors start: 502");
    util::wait::until(
        "three 502s",
        Duration::from_secs(10),
        Duration::from_millis(10),
        || (bad.load(Ordering::SeqCst) >= 3).then_some(()),
        String::new,
    );
    phase.store(2, Ordering::SeqCst);
    tmux.wait_for("version 1.0.0 -> 2.0.0");
    tmux.run(&["send-keys", "-t", "watch", "C-c"]);
    let screen = tmux.wait_for("versions: ");
    eprintln!("{screen}");
    assert!(!screen.contains("panicked"), "{screen}");
    let lines: Vec<&str> = screen.lines().filter(|l| !l.trim().is_empty()).collect();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} on the screen:\n{screen}"))
    };
    // In the order they happened, each on a line of its own.
    let order = [
        at("watching http://127.0.0.1:"),
        at("  version 1.0.0"),
        at("errors start: 502"),
        at("errors end: "),
        at("version 1.0.0 -> 2.0.0"),
        at("summary: "),
        at("error windows: 1, "),
        at("versions: 1.0.0 ×"),
    ];
    assert!(order.windows(2).all(|p| p[0] < p[1]), "{order:?}\n{screen}");
    let bad = bad.load(Ordering::SeqCst);
    assert!(
        lines[at("errors end: ")].contains(&format!("{bad} failed probes: 502 ×{bad}")),
        "{bad} 502s: {screen}"
    );
    assert!(
        lines[at("versions: 1.0.0 ×")].contains(", 2.0.0 ×"),
        "{screen}"
    );
    assert!(screen.contains("error: "), "exit 6's message: {screen}");
}
