//! Health gates (before the switch) and verification (after it).
//!
//! A gate probes every candidate replica directly, not through the proxy, so
//! a replica is judged on its own. The probe is one of three
//! (`config::Probe`):
//! - `http`: a GET to the replica's published port; the status (and body)
//!   must be as expected;
//! - `tcp`: a connect to that port, which must then stay open for a moment
//!   (`HOLD`): Docker's userland proxy accepts on a published port while
//!   nothing listens in the container and closes at once, and that is not
//!   an app taking connections;
//! - `command`: a run in the replica's container (`Replicas::exec`); exit 0
//!   passes, and a failure keeps the exit code and the end of the output.
//!
//! When it fails, the error says which replica, what the last probe saw, and
//! what the container last logged: "target failed to become healthy" with no
//! why is the complaint we fix. An app that listens where nothing reaches it
//! (loopback inside its container, or another port) fails at once with that
//! named, whatever the probe: a command can pass inside the container while
//! the proxy could reach nothing. When the image has a `HEALTHCHECK`,
//! Docker's verdict counts too: an app whose own check fails is not switched
//! to because the probe passes, and the failure shows the check's exit codes
//! and output.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Request;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use crate::config::{HealthConfig, HttpCheck, Probe};
use crate::output::{fmt_duration, Output};

/// One replica to gate.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub addr: SocketAddr,
}

/// What the gate asks the platform about a replica besides HTTP.
pub trait Replicas {
    /// `Some(why)` when the replica has stopped or restarted: it cannot pass.
    fn stopped(&self, name: &str) -> impl Future<Output = Option<String>>;
    /// The replica's last log lines.
    fn log_tail(&self, name: &str) -> impl Future<Output = String>;
    /// What Docker's own health check (the image's `HEALTHCHECK`) says of
    /// the replica now.
    fn docker_health(&self, name: &str) -> impl Future<Output = DockerHealth>;
    /// Why the replica's app cannot be reached though it listens (on
    /// loopback inside its container, or on another port), if that is so.
    fn misbound(&self, name: &str) -> impl Future<Output = Option<String>>;
    /// Runs `argv` in the replica's container (`health.command`), waiting at
    /// most `timeout`: its exit code and the end of its output, or why it
    /// did not run or exit (with the output so far).
    fn exec(
        &self,
        name: &str,
        argv: &[String],
        timeout: Duration,
    ) -> impl Future<Output = Result<CheckRun, String>>;
}

/// Docker's verdict on a container from the image's `HEALTHCHECK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    /// The image defines no `HEALTHCHECK`.
    None,
    /// Checks run, but not yet enough have passed (or failed).
    Starting,
    Healthy,
    /// The check failed `--retries` times in a row.
    Unhealthy,
    /// The engine could not be asked (the container is gone, or the engine
    /// did not answer).
    Unknown,
}

impl std::fmt::Display for HealthState {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            HealthState::None => "none",
            HealthState::Starting => "starting",
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
            HealthState::Unknown => "unknown",
        })
    }
}

/// One run of a `HEALTHCHECK` command, as Docker keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRun {
    /// 0 passed, 1 failed, anything else: the command could not run.
    pub exit_code: i64,
    pub output: String,
}

impl std::fmt::Display for CheckRun {
    /// `exit 1: <output>`, the output trimmed and on one line.
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let output = one_line(&self.output);
        if output.is_empty() {
            write!(f, "exit {}, no output", self.exit_code)
        } else {
            write!(f, "exit {}: {}", self.exit_code, snippet(output.as_bytes()))
        }
    }
}

/// A command's output on one line: its non-empty lines, trimmed, joined
/// by ` / `. Control characters are shown escaped (`\u{1b}`, `\r`), tabs
/// as spaces: the output is the container's, and it goes to a terminal,
/// where an escape sequence or a lone carriage return could clear the
/// screen or overwrite what cyan said.
pub fn one_line(output: &str) -> String {
    let lines: Vec<String> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(printable)
        .collect();
    lines.join(" / ")
}

/// One line of a container's output as it may reach a terminal: control
/// characters escaped (`\u{1b}`, `\r`), tabs as spaces.
pub fn printable(line: &str) -> String {
    line.chars()
        .map(|c| match c {
            '\t' => " ".to_string(),
            c if c.is_control() => c.escape_debug().to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// A container's Docker health and the last check runs Docker keeps
/// (up to five, oldest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerHealth {
    pub state: HealthState,
    pub log: Vec<CheckRun>,
}

impl DockerHealth {
    pub fn new(state: HealthState) -> DockerHealth {
        DockerHealth {
            state,
            log: Vec::new(),
        }
    }

    /// The kept check runs, one per line, each indented by two spaces.
    pub fn checks(&self) -> String {
        if self.log.is_empty() {
            return "  (no check has run yet)".into();
        }
        self.log
            .iter()
            .map(|r| format!("  {r}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Why a replica failed its gate.
#[derive(Debug, Clone)]
pub struct GateFailure {
    pub replica: String,
    pub reason: String,
    pub logs: String,
    /// Replicas that passed.
    pub healthy: usize,
}

/// Runs the gate over all replicas at once; all must pass.
pub async fn gate(
    cfg: &HealthConfig,
    host: Option<&str>,
    targets: &[Target],
    replicas: &impl Replicas,
    out: &Output,
) -> Result<(), GateFailure> {
    let client = probe_client();
    let started = Instant::now();
    let runs = targets
        .iter()
        .map(|t| gate_one(cfg, host, t, replicas, &client, started, out));
    let results = futures_util::future::join_all(runs).await;
    let healthy = results.iter().filter(|r| r.is_ok()).count();
    match results.into_iter().find_map(Result::err) {
        None => Ok(()),
        Some(mut f) => {
            f.logs = replicas.log_tail(&f.replica).await;
            f.healthy = healthy;
            Err(f)
        }
    }
}

async fn gate_one(
    cfg: &HealthConfig,
    host: Option<&str>,
    t: &Target,
    replicas: &impl Replicas,
    client: &ProbeClient,
    started: Instant,
    out: &Output,
) -> Result<(), GateFailure> {
    let threshold = cfg.healthy_threshold.get();
    let bar = out.gate_bar(&t.name, threshold);
    let (mut passes, mut fails, mut answered) = (0u32, 0u32, false);
    let mut last = "not probed yet".to_string();
    // Docker's health is watched until the engine says the image has none.
    let mut watch_docker = cfg.docker;
    let fail = |reason: String| GateFailure {
        replica: t.name.clone(),
        reason,
        logs: String::new(),
        healthy: 0,
    };
    let result = loop {
        if let Some(why) = replicas.stopped(&t.name).await {
            break Err(fail(format!("{why}; last probe: {last}")));
        }
        let probe = probe(client, cfg, host, t, replicas).await;
        match &probe {
            Ok(_) => {
                passes += 1;
                fails = 0;
                answered = true;
            }
            Err(ProbeError::Answered(_)) => {
                passes = 0;
                fails += 1;
                answered = true;
            }
            Err(ProbeError::NoAnswer(_)) => {
                passes = 0;
                fails += u32::from(answered);
            }
            Err(ProbeError::Hopeless(s)) => break Err(fail(s.clone())),
        }
        // No answer may be an app still starting, or one that listens where
        // nothing reaches it: that one fails now, with the cause named,
        // instead of at the deadline. A command runs inside the container,
        // so its pass says nothing of what the proxy reaches: asked too.
        let reachable_unknown = matches!(
            (&probe, cfg.probe()),
            (Err(ProbeError::NoAnswer(_)), _) | (Ok(_), Probe::Command(_))
        );
        if reachable_unknown {
            if let Some(why) = replicas.misbound(&t.name).await {
                break Err(fail(match &probe {
                    Ok(s) => format!("{s}, but {why}"),
                    Err(e) => format!("{}: {why}", e.said()),
                }));
            }
        }
        last = match probe {
            Ok(s) => s,
            Err(e) => e.said().to_string(),
        };
        let docker = if watch_docker {
            replicas.docker_health(&t.name).await
        } else {
            DockerHealth::new(HealthState::None)
        };
        let docker_passed = match docker.state {
            HealthState::None => {
                watch_docker = false;
                true
            }
            HealthState::Healthy => {
                last.push_str("; Docker health: healthy");
                true
            }
            HealthState::Unhealthy => {
                break Err(fail(format!(
                    "Docker reports the container unhealthy: the image's HEALTHCHECK fails ({last}). \
                     Fix the check or what it tests, or set health.docker: false to gate on the probe alone. \
                     Docker's last health checks, oldest first:\n{}",
                    docker.checks()
                )));
            }
            HealthState::Starting | HealthState::Unknown => {
                last.push_str(&format!("; waiting for Docker's health ({})", docker.state));
                false
            }
        };
        bar.update(out, passes.min(threshold), &last);
        if passes >= threshold && docker_passed {
            break Ok(());
        }
        if let Some(limit) = cfg.unhealthy_threshold {
            if fails >= limit.get() {
                break Err(fail(format!("{last} ({fails} failures in a row)")));
            }
        }
        if started.elapsed() >= cfg.deadline.0 {
            let checks = match (docker_passed, docker.log.is_empty()) {
                (true, _) => String::new(),
                (false, true) => "; Docker has run no health check yet: it runs the first one \
                    a HEALTHCHECK --interval after the container starts. Shorten the interval, \
                    raise health.deadline, or set health.docker: false"
                    .into(),
                (false, false) => format!(
                    "; Docker's last health checks, oldest first:\n{}",
                    docker.checks()
                ),
            };
            break Err(fail(format!(
                "{last} after {} (deadline {}){checks}",
                fmt_duration(started.elapsed()),
                cfg.deadline
            )));
        }
        tokio::time::sleep(cfg.interval.0).await;
    };
    bar.finish(out);
    result
}

enum ProbeError {
    /// The app answered, but not as expected.
    Answered(String),
    /// No answer at all (refused, reset, timeout), or a command that failed:
    /// the app may still be starting.
    NoAnswer(String),
    /// It can never pass (a command the container cannot run): the gate
    /// fails at once.
    Hopeless(String),
}

impl ProbeError {
    /// What the probe saw.
    fn said(&self) -> &str {
        match self {
            ProbeError::Answered(s) | ProbeError::NoAnswer(s) | ProbeError::Hopeless(s) => s,
        }
    }
}

/// One probe of one replica: what it saw when it passed, or why not.
async fn probe(
    client: &ProbeClient,
    cfg: &HealthConfig,
    host: Option<&str>,
    t: &Target,
    replicas: &impl Replicas,
) -> Result<String, ProbeError> {
    match cfg.probe() {
        Probe::Http(http) => probe_http(client, http, cfg.timeout.0, host, t.addr).await,
        Probe::Tcp => match tcp_connect(t.addr, cfg.timeout.0).await {
            Ok(()) => Ok(format!("connect to {}: open", t.addr)),
            Err(why) => Err(ProbeError::NoAnswer(format!(
                "connect to {}: {why}",
                t.addr
            ))),
        },
        Probe::Command(argv) => {
            command_result(argv, replicas.exec(&t.name, argv, cfg.timeout.0).await)
        }
    }
}

async fn probe_http(
    client: &ProbeClient,
    http: &HttpCheck,
    timeout: Duration,
    host: Option<&str>,
    addr: SocketAddr,
) -> Result<String, ProbeError> {
    let url = format!("http://{addr}{}", http.path);
    let said = format!("GET {}", http.path);
    let (status, body) = http_get(client, &url, http.host.as_deref().or(host), timeout)
        .await
        .map_err(|e| ProbeError::NoAnswer(format!("{said} -> {e}")))?;
    if !http.expect.contains(status) {
        return Err(ProbeError::Answered(format!(
            "{said} -> {status} (expected {}): {}",
            http.expect,
            snippet(&body)
        )));
    }
    if let Some(needle) = &http.body {
        if !String::from_utf8_lossy(&body).contains(needle.as_str()) {
            return Err(ProbeError::Answered(format!(
                "{said} -> {status} but the body lacks {needle:?}"
            )));
        }
    }
    Ok(format!("{said} -> ok"))
}

/// How long a new connection must stay open, unless the app speaks first,
/// for its port to count as taken (at most the probe's timeout).
pub const HOLD: Duration = Duration::from_millis(150);

/// Connects to `addr` within `timeout` and keeps the connection for `HOLD`:
/// `Ok` when it stays open or the app sends a byte first (a banner), else
/// why not. A connection closed or reset at once is how Docker's userland
/// proxy answers for a container where nothing listens on the port yet.
pub async fn tcp_connect(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    use tokio::io::AsyncReadExt;
    let connect = tokio::net::TcpStream::connect(addr);
    let mut stream = match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(io_reason(&e)),
        Err(_) => {
            return Err(format!(
                "no connection within {}",
                humantime::format_duration(timeout)
            ))
        }
    };
    let mut byte = [0u8; 1];
    match tokio::time::timeout(HOLD.min(timeout), stream.read(&mut byte)).await {
        Err(_) | Ok(Ok(1..)) => Ok(()),
        Ok(Ok(0)) => Err(
            "accepted, then closed at once without a byte (nothing listens on the app's port in its container yet, or the app closes new connections at once)"
                .into(),
        ),
        Ok(Err(e)) => Err(format!(
            "accepted, then {} at once (nothing listens on the app's port in its container yet, or the app closes new connections at once)",
            io_reason(&e)
        )),
    }
}

fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => "connection refused".into(),
        ErrorKind::ConnectionReset => "connection reset".into(),
        _ => e.to_string(),
    }
}

/// Exit codes with which a shell or the engine says the command itself
/// could not run (126: not executable, 127: not found).
const CANNOT_RUN: [i64; 2] = [126, 127];

/// Judges one run of `health.command`.
fn command_result(argv: &[String], run: Result<CheckRun, String>) -> Result<String, ProbeError> {
    let said = format!("`{}`", shown(argv));
    let run = run.map_err(|why| ProbeError::NoAnswer(format!("{said} {why}")))?;
    if run.exit_code == 0 {
        return Ok(format!("{said} exited 0"));
    }
    let output = match one_line(&run.output) {
        o if o.is_empty() => ", no output".to_string(),
        o => format!(": {o}"),
    };
    let said = format!("{said} exited {}{output}", run.exit_code);
    match CANNOT_RUN.contains(&run.exit_code) {
        true => Err(ProbeError::Hopeless(format!(
            "{said}. Exit {} means the command could not be run in the container (not found, or not executable): \
             health.command must name a program in the image (an image FROM scratch has no shell)",
            run.exit_code
        ))),
        // 128 + N: the shell's way to say signal N ended it.
        false if run.exit_code > 128 && run.exit_code < 160 => Err(ProbeError::NoAnswer(format!(
            "{said} (killed by signal {}{})",
            run.exit_code - 128,
            if run.exit_code == 137 {
                ": SIGKILL, often out of memory"
            } else {
                ""
            }
        ))),
        false => Err(ProbeError::NoAnswer(said)),
    }
}

/// An argv as one would type it: items with spaces or quotes are quoted.
fn shown(argv: &[String]) -> String {
    let items: Vec<String> = argv
        .iter()
        .map(|a| {
            let plain = !a.is_empty()
                && !a
                    .chars()
                    .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | '`'));
            match plain {
                true => a.clone(),
                false => format!("{a:?}"),
            }
        })
        .collect();
    items.join(" ")
}

/// The start of a body, for an error message.
/// Control characters are shown escaped and line breaks as spaces: a body
/// is the app's, and it is printed to a terminal.
pub fn snippet(body: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .take(120)
        .map(|c| match c {
            '\n' | '\r' | '\t' => " ".to_string(),
            c if c.is_control() => c.escape_debug().to_string(),
            c => c.to_string(),
        })
        .collect();
    text.trim().to_string()
}

/// An HTTP/1.1 client for probes (gates, verification, queries).
pub type ProbeClient = Client<HttpConnector, Empty<Bytes>>;

pub fn probe_client() -> ProbeClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// One GET: the status and up to 64 KiB of body, or why nothing answered
/// (refused, reset, timeout).
pub async fn http_get(
    client: &ProbeClient,
    url: &str,
    host: Option<&str>,
    timeout: Duration,
) -> Result<(u16, Bytes), String> {
    let mut req = Request::get(url);
    if let Some(h) = host {
        req = req.header(hyper::header::HOST, h);
    }
    let req = req
        .body(Empty::new())
        .map_err(|e| format!("bad URL {url:?}: {e}"))?;
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| describe_error(&e))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), 64 * 1024)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("timeout after {}", humantime::format_duration(timeout)))?
}

fn describe_error(e: &hyper_util::client::legacy::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(cause) = src {
        s = format!("{s}: {cause}");
        src = cause.source();
    }
    s
}

/// How often verification reads the counters.
pub const VERIFY_POLL: Duration = Duration::from_millis(250);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_health_check_run_reads_on_one_line() {
        let run = CheckRun {
            exit_code: 1,
            output: "database down\n  retrying\n".into(),
        };
        assert_eq!(run.to_string(), "exit 1: database down / retrying");
        let silent = CheckRun {
            exit_code: 137,
            output: " \n".into(),
        };
        assert_eq!(silent.to_string(), "exit 137, no output");
        let health = DockerHealth {
            state: HealthState::Unhealthy,
            log: vec![silent, run],
        };
        assert_eq!(
            health.checks(),
            "  exit 137, no output\n  exit 1: database down / retrying"
        );
    }

    /// A loopback port where nothing listens.
    fn closed_port() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }

    #[tokio::test]
    async fn tcp_passes_a_connection_that_stays_open_not_one_closed_at_once() {
        let timeout = Duration::from_secs(1);
        let refused = closed_port();
        assert_eq!(
            tcp_connect(refused, timeout).await,
            Err("connection refused".into())
        );
        // An app that holds the connection, and one that speaks first (and
        // then closes: the byte is what counts).
        let holds = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = holds.local_addr().unwrap();
        let held = tokio::spawn(async move { holds.accept().await.map(|(s, _)| s) });
        assert_eq!(tcp_connect(addr, timeout).await, Ok(()));
        drop(held);
        let banner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = banner.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let (mut s, _) = banner.accept().await.unwrap();
            s.write_all(b"220 ready\r\n").await.unwrap();
        });
        assert_eq!(tcp_connect(addr, timeout).await, Ok(()));
        // What Docker's userland proxy does while nothing listens in the
        // container: accept, then close without a byte.
        let closes = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closes.local_addr().unwrap();
        tokio::spawn(async move {
            let (s, _) = closes.accept().await.unwrap();
            drop(s);
        });
        let why = tcp_connect(addr, timeout).await.unwrap_err();
        assert!(
            why.starts_with("accepted, then closed at once without a byte"),
            "{why}"
        );
    }

    #[test]
    fn a_commands_output_cannot_drive_the_terminal() {
        // What an image's check may print: a title and a screen clear
        // (escape sequences), a bell, and a lone carriage return that
        // would overwrite the line with a lie.
        let run = CheckRun {
            exit_code: 1,
            output: "\u{1b}]0;title\u{7}\u{1b}[2Jdb\tdown\rgate passed\n\u{0}\n".into(),
        };
        let shown = run.to_string();
        assert_eq!(
            shown,
            "exit 1: \\u{1b}]0;title\\u{7}\\u{1b}[2Jdb down\\rgate passed / \\0"
        );
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
    }

    #[test]
    fn a_command_run_is_judged_by_its_exit_code() {
        let argv: Vec<String> = ["/app", "check", "--db url"].map(String::from).into();
        let run = |exit_code, output: &str| {
            command_result(
                &argv,
                Ok(CheckRun {
                    exit_code,
                    output: output.into(),
                }),
            )
        };
        assert_eq!(
            run(0, "fine").ok().as_deref(),
            Some("`/app check \"--db url\"` exited 0")
        );
        match run(1, "checking\ndb down\n") {
            Err(ProbeError::NoAnswer(s)) => {
                assert_eq!(s, "`/app check \"--db url\"` exited 1: checking / db down")
            }
            _ => panic!("exit 1 fails the probe, and may pass later"),
        }
        match run(3, "") {
            Err(ProbeError::NoAnswer(s)) => assert!(s.ends_with("exited 3, no output"), "{s}"),
            _ => panic!("any exit but 0 fails"),
        }
        match run(137, "") {
            Err(ProbeError::NoAnswer(s)) => assert!(
                s.ends_with(
                    "exited 137, no output (killed by signal 9: SIGKILL, often out of memory)"
                ),
                "{s}"
            ),
            _ => panic!("a killed check fails, and may pass later"),
        }
        match run(143, "bye") {
            Err(ProbeError::NoAnswer(s)) => {
                assert!(s.ends_with("exited 143: bye (killed by signal 15)"), "{s}")
            }
            _ => panic!("a killed check fails, and may pass later"),
        }
        match run(
            126,
            "OCI runtime exec failed: exec: \"/app\": stat /app: no such file",
        ) {
            Err(ProbeError::Hopeless(s)) => {
                assert!(s.contains("exited 126: OCI runtime exec failed"), "{s}");
                assert!(s.contains("could not be run in the container"), "{s}");
            }
            _ => panic!("a command that cannot run fails the gate at once"),
        }
        match command_result(
            &argv,
            Err("did not exit within 1s (health.timeout), no output".into()),
        ) {
            Err(ProbeError::NoAnswer(s)) => assert_eq!(
                s,
                "`/app check \"--db url\"` did not exit within 1s (health.timeout), no output"
            ),
            _ => panic!("a timeout fails the probe"),
        }
    }
}
