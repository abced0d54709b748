//! The proxy as an edge: deadlines, trust, drains and certificates. The
//! real `cyan proxy run` process in front of small scripted upstreams on
//! 127.0.0.1 that record every request head and answer with bytes written
//! on a schedule; each test checks what the client got and when.
//!
//! - Read deadlines (`--header-timeout`, `--body-timeout`,
//!   `--idle-timeout`) on the fast path and on hyper's, and the open-files
//!   limit the proxy raises for itself.
//! - Forwarding headers: replaced from an untrusted client, kept and
//!   appended to from a route's trusted proxies.
//! - The drain of long-lived traffic on the old color after a switch:
//!   event streams end whole, downloads are cut as incomplete, WebSocket
//!   closes are spread over the drain window.
//! - TLS certificates whose files are deleted, renewed in place, or
//!   renewed broken.

mod util;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cyan::proxy::api::RouteSpec;
use cyan::proxy::state::{RoutePolicy, TlsFiles};
use cyan::release::Color;
use futures_util::future::join_all;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::DigitallySignedStruct;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use util::proxy::{body, get, host_route, proxy_ctl, proxy_run, spawn_proxy, TestProxy, Ws};
use util::raw::{
    assert_all_right, chunk, content_length, dechunk, find, header_values, is_chunked, read_head,
    serve_each, shown, split_response, status_of, whole_body, Chunks, Conn, RESPONSE_TIMEOUT,
};
use util::tls::self_signed;
use util::upstream::{fixed, Seen, Step, Upstream};
use util::wait;

/// The app every test routes, on the proxy's listen address.
const APP: &str = "edge";
const HOST: &str = "edge.localhost";

// ---------------------------------------------------------------------------
// Upstreams.

const SSE_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";

/// An event stream: `count` events `data: n`, one each `every`, then its end.
fn event_stream(count: usize, every: Duration) -> Vec<Step> {
    let mut steps = vec![Step::Write(SSE_HEAD.to_vec())];
    for n in 0..count {
        steps.push(Step::Wait(every));
        steps.push(Step::Write(chunk(format!("data: {n}\n\n").as_bytes())));
    }
    steps.push(Step::Write(b"0\r\n\r\n".to_vec()));
    steps
}

/// A download of `pieces` pieces of `size` bytes, one each `every`: with a
/// length, or chunked (not an event stream). With `total`, the length it
/// announces (more than it sends in the test's time).
fn download(
    chunked: bool,
    total: Option<usize>,
    pieces: usize,
    size: usize,
    every: Duration,
) -> Vec<Step> {
    let head = match chunked {
        true => "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ntransfer-encoding: chunked\r\n\r\n".to_string(),
        false => format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\n\r\n",
            total.unwrap_or(pieces * size)
        ),
    };
    let mut steps = vec![Step::Write(head.into_bytes())];
    for _ in 0..pieces {
        steps.push(Step::Wait(every));
        let piece = vec![b'x'; size];
        steps.push(Step::Write(match chunked {
            true => chunk(&piece),
            false => piece,
        }));
    }
    if chunked {
        steps.push(Step::Write(b"0\r\n\r\n".to_vec()));
    }
    steps
}

/// A WebSocket upstream: answers the upgrade, then each read with a text
/// frame `pong`, until the end.
async fn ws_upstream() -> SocketAddr {
    serve_each(|mut s| async move {
        if read_head(&mut s).await.is_none() {
            return;
        }
        let hello = b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\n\
                      upgrade: websocket\r\nsec-websocket-accept: test\r\n\r\n";
        if s.write_all(hello).await.is_err() {
            return;
        }
        let mut chunk = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_secs(60), async {
            while matches!(s.read(&mut chunk).await, Ok(n) if n > 0) {
                if s.write_all(b"\x81\x04pong").await.is_err() {
                    return;
                }
            }
        })
        .await;
    })
    .await
}

// ---------------------------------------------------------------------------
// Proxy set-up.

/// A proxy run with `flags`, with `APP` on its listen address: blue live
/// at `blue`, green at `green`.
async fn edge(
    tag: &str,
    flags: &[&str],
    policy: RoutePolicy,
    blue: Vec<SocketAddr>,
    green: Vec<SocketAddr>,
) -> TestProxy {
    let proxy = TestProxy::start_with(tag, flags).await;
    proxy.route(APP, policy, blue, green).await;
    proxy
}

/// A proxy run with `flags`, with `APP` on its listen address live on blue
/// at `up` alone, default policy.
async fn edge_to(tag: &str, flags: &[&str], up: SocketAddr) -> TestProxy {
    edge(tag, flags, RoutePolicy::default(), vec![up], vec![]).await
}

/// A drain policy: `drain` long, its ends spread over `spread` (`None`:
/// the default spread).
fn draining(drain: Duration, spread: Option<Duration>) -> RoutePolicy {
    RoutePolicy {
        drain_timeout_ms: drain.as_millis() as u64,
        drain_spread_ms: spread.map(|s| s.as_millis() as u64),
        ..RoutePolicy::default()
    }
}

/// A request that goes to hyper's path: a chunked POST (keep-alive).
fn chunked_post(path: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    .into_bytes()
}

/// A GET on the fast path (`hyper`: false) or, with an empty chunked body,
/// on hyper's.
fn get_on(path: &str, hyper: bool) -> Vec<u8> {
    match hyper {
        false => format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n"),
        true => format!(
            "GET {path} HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ),
    }
    .into_bytes()
}

fn path_name(hyper: bool) -> &'static str {
    match hyper {
        false => "fast path",
        true => "hyper's path",
    }
}

// ---------------------------------------------------------------------------
// 1. Read deadlines.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_sent_a_byte_at_a_time_is_answered_408_within_the_header_timeout() {
    let header = Duration::from_secs(1);
    let up = Upstream::named("ok").await;
    let flags = ["--header-timeout", "1s", "--idle-timeout", "10s"];
    let proxy = edge_to("slowloris", &flags, up.addr).await;
    let slow = format!(
        "GET /slow HTTP/1.1\r\nHost: {HOST}\r\nX-Slow: {}",
        "a".repeat(60)
    );
    let mut wrong = Vec::new();
    for hyper in [false, true] {
        let what = path_name(hyper);
        let mut c = Conn::open(&proxy.addr()).await;
        if hyper {
            // One request hyper serves first: the connection stays with it.
            c.send(&chunked_post("/warm")).await;
            if c.whole_response(RESPONSE_TIMEOUT).await.is_none() || status_of(&c.buf) != 200 {
                wrong.push(format!("{what}: warm-up got {}", shown(&c.buf)));
                continue;
            }
            c.buf.clear();
        }
        let every = Duration::from_millis(200);
        let (first, closed) = c.drip(slow.as_bytes(), every, header * 4).await;
        let Some(closed) = closed else {
            wrong.push(format!(
                "{what}: still open {:?} after the first byte; got {}",
                header * 4,
                shown(&c.buf)
            ));
            continue;
        };
        let after = closed - first;
        eprintln!(
            "{what}: closed {after:?} after the first byte, with {}",
            shown(&c.buf)
        );
        if after > header + Duration::from_secs(1) {
            wrong.push(format!(
                "{what}: closed only {after:?} after the first byte"
            ));
        }
        // On the fast path the head's deadline runs from its first byte.
        if !hyper && after < header - Duration::from_millis(50) {
            wrong.push(format!(
                "{what}: closed {after:?} after the first byte, before the header timeout"
            ));
        }
        // hyper closes without an answer; cyan's own path answers 408.
        let status = status_of(&c.buf);
        let answered_right = status == 408 || (hyper && c.buf.is_empty());
        if !answered_right {
            wrong.push(format!(
                "{what}: closed after {after:?} with {}",
                shown(&c.buf)
            ));
        }
    }
    if up.requests().iter().any(|s| s.path() == "/slow") {
        wrong.push(format!(
            "the slow head reached the upstream: {}",
            up.report()
        ));
    }
    assert_all_right(&wrong);
}

/// On a new connection, sends `warm` (if any) and reads its response, then
/// sends nothing: the connection must stay open until shortly before
/// `idle` and be closed shortly after. Returns how long it stayed open.
async fn idle_close(
    addr: String,
    warm: Option<Vec<u8>>,
    idle: Duration,
) -> Result<Duration, String> {
    let mut c = Conn::open(&addr).await;
    if let Some(request) = warm {
        c.send(&request).await;
        if c.whole_response(RESPONSE_TIMEOUT).await.is_none() || status_of(&c.buf) != 200 {
            return Err(format!("warm-up got {}", shown(&c.buf)));
        }
        let head = split_response(&c.buf)
            .map(|(_, h, _)| h)
            .unwrap_or_default();
        if header_values(&head, "connection")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("close"))
        {
            return Err(format!(
                "the warm-up response closes the connection: {head:?}"
            ));
        }
    }
    let since = Instant::now();
    let before = idle - Duration::from_millis(500);
    c.buf.clear();
    c.read_until(before, &|_| false).await;
    if let Some(at) = c.closed {
        return Err(format!(
            "closed {:?} into the idle wait, before the {idle:?} timeout",
            at - since
        ));
    }
    if !c.buf.is_empty() {
        return Err(format!("got bytes while idle: {}", shown(&c.buf)));
    }
    let slack = Duration::from_secs(1);
    match c.closed_within(idle + slack - before).await {
        Some(at) => Ok(at - since),
        None => Err(format!("still open {:?} into the idle wait", idle + slack)),
    }
}

async fn assert_idle_closes(tag: &str, cases: Vec<(&'static str, Option<Vec<u8>>)>) {
    let idle = Duration::from_secs(2);
    let up = Upstream::named("ok").await;
    let flags = ["--idle-timeout", "2s"];
    let proxy = edge_to(tag, &flags, up.addr).await;
    let runs = cases
        .iter()
        .map(|(_, warm)| idle_close(proxy.addr(), warm.clone(), idle));
    let results = join_all(runs).await;
    let mut wrong = Vec::new();
    for ((name, _), r) in cases.iter().zip(results) {
        match r {
            Ok(open) => eprintln!("{name}: closed after {open:?} idle"),
            Err(e) => wrong.push(format!("{name}: {e}")),
        }
    }
    assert_all_right(&wrong);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed_after_the_idle_timeout() {
    assert_idle_closes(
        "idle-fast",
        vec![
            ("a new connection", None),
            ("after a GET on the fast path", Some(get_on("/", false))),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_on_hypers_path_is_closed_after_the_idle_timeout() {
    // The header timeout is the default 10 s: only the idle deadline can
    // close these in time.
    assert_idle_closes(
        "idle-hyper",
        vec![
            ("after a chunked POST", Some(chunked_post("/"))),
            (
                "after an HTTP/1.0 keep-alive GET",
                Some(
                    format!("GET / HTTP/1.0\r\nHost: {HOST}\r\nConnection: keep-alive\r\n\r\n")
                        .into_bytes(),
                ),
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_that_stops_arriving_gets_408_and_is_not_the_colors_failure() {
    let body_timeout = Duration::from_secs(1);
    let up = Upstream::named("ok").await;
    let flags = ["--body-timeout", "1s"];
    let proxy = edge_to("bodystall", &flags, up.addr).await;
    let cases = [
        (
            "fast path, Content-Length 10 and 5 bytes sent",
            format!("POST /stall HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 10\r\n\r\nhello"),
        ),
        (
            "hyper's path, chunked and one chunk sent",
            format!("POST /stall HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"),
        ),
    ];
    let runs = cases.iter().map(|(_, request)| {
        let addr = proxy.addr();
        async move {
            let mut c = Conn::open(&addr).await;
            c.send(request.as_bytes()).await;
            let sent = Instant::now();
            let answered = c
                .read_until(body_timeout * 3, &|b| whole_body(b).is_some())
                .await;
            (sent, answered, c.buf)
        }
    });
    let results = join_all(runs).await;
    let mut wrong = Vec::new();
    for ((name, _), (sent, answered, buf)) in cases.iter().zip(results) {
        let Some(at) = answered else {
            wrong.push(format!("{name}: no whole response: {}", shown(&buf)));
            continue;
        };
        let after = at - sent;
        eprintln!(
            "{name}: answered {} {after:?} after the last byte",
            status_of(&buf)
        );
        if status_of(&buf) != 408 {
            wrong.push(format!("{name}: got {} after {after:?}", shown(&buf)));
        }
        if after > body_timeout + Duration::from_secs(1)
            || after < body_timeout - Duration::from_millis(100)
        {
            wrong.push(format!(
                "{name}: answered {after:?} after the last byte (body timeout {body_timeout:?})"
            ));
        }
    }
    let blue = proxy.stats(APP, Color::Blue).await;
    if blue.status_5xx != 0 || blue.upstream_failures != 0 {
        wrong.push(format!(
            "the client's stall was booked against blue: {blue:?}"
        ));
    }
    assert_all_right(&wrong);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_that_streams_slowly_is_not_cut_by_the_idle_timeout() {
    // A chunk each 300 ms for 3 s, with every client deadline at 1 s: the
    // client is busy receiving, not idle.
    let up = Upstream::scripted(|_| {
        let mut steps = vec![Step::Write(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec(),
        )];
        for n in 0..10 {
            steps.push(Step::Wait(Duration::from_millis(300)));
            steps.push(Step::Write(chunk(n.to_string().as_bytes())));
        }
        steps.push(Step::Write(b"0\r\n\r\n".to_vec()));
        steps
    })
    .await;
    let flags = [
        "--idle-timeout",
        "1s",
        "--header-timeout",
        "1s",
        "--body-timeout",
        "1s",
    ];
    let proxy = edge_to("slowresp", &flags, up.addr).await;
    let runs = [false, true].map(|hyper| {
        let addr = proxy.addr();
        async move {
            let mut c = Conn::open(&addr).await;
            c.send(&get_on("/drip", hyper)).await;
            let sent = Instant::now();
            let done = c.whole_response(Duration::from_secs(8)).await;
            (hyper, done.map(|at| at - sent), c)
        }
    });
    let mut wrong = Vec::new();
    for (hyper, took, c) in join_all(runs).await {
        let what = path_name(hyper);
        match (took, whole_body(&c.buf)) {
            (Some(took), Some(body)) if body == b"0123456789" => {
                eprintln!("{what}: whole after {took:?}")
            }
            _ => wrong.push(format!(
                "{what}: not whole (closed: {}): {}",
                c.closed.is_some(),
                shown(&c.buf)
            )),
        }
    }
    assert_all_right(&wrong);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_websocket_is_not_closed_by_the_idle_timeout() {
    // An upgraded connection is a request in progress, however long it
    // says nothing.
    let idle = Duration::from_secs(1);
    let flags = ["--idle-timeout", "1s", "--header-timeout", "1s"];
    let proxy = edge_to("ws-quiet", &flags, ws_upstream().await).await;
    let mut ws = Ws::open(&proxy.addr(), HOST).await;
    ws.send("ping").await;
    assert_eq!(ws.recv().await, (1, b"pong".to_vec()));
    let quiet = idle * 3;
    match tokio::time::timeout(quiet, ws.next_frame()).await {
        Err(_) => {}
        Ok(frame) => panic!("the quiet WebSocket got {frame:?} within {quiet:?}"),
    }
    ws.send("ping").await;
    let answer = tokio::time::timeout(RESPONSE_TIMEOUT, ws.next_frame()).await;
    assert!(
        matches!(&answer, Ok(Ok((1, p))) if p == b"pong"),
        "after {quiet:?} quiet: {answer:?}"
    );
}

/// This process's open-files limit: (soft, hard).
fn open_files_limit() -> (u64, u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes `limit`.
    let r = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(r, 0, "getrlimit: {}", std::io::Error::last_os_error());
    (limit.rlim_cur, limit.rlim_max)
}

/// The proxy's open-files limit as /proc shows it: (soft, hard).
fn proc_open_files_limit(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_default();
    let mut values = line["Max open files".len().min(line.len())..].split_whitespace();
    let soft = values.next().unwrap_or_default().to_string();
    let hard = values.next().unwrap_or_default().to_string();
    (soft, hard)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_connections_under_a_1024_soft_limit_stop_neither_requests_nor_the_admin_api(
) {
    use std::os::unix::process::CommandExt;
    const IDLE: usize = 2000;
    // This process holds the client ends: its own soft limit must allow them.
    let (soft, hard) = open_files_limit();
    if soft < (IDLE as u64) * 2 {
        let raised = libc::rlimit {
            rlim_cur: hard,
            rlim_max: hard,
        };
        // SAFETY: setrlimit only reads `raised`.
        let r = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) };
        assert_eq!(r, 0, "cannot raise this test's open-files limit to {hard}");
    }
    let (_, hard) = open_files_limit();
    assert!(
        hard >= IDLE as u64 * 2,
        "this test's hard open-files limit is only {hard}"
    );

    // The proxy starts with a soft limit of 1,024 and the hard one above.
    let (home, port) = TestProxy::new_home("nofile");
    let mut cmd = proxy_run(&home);
    cmd.args(["--drain-timeout", "5s", "--idle-timeout", "60s"]);
    let limit = libc::rlimit {
        rlim_cur: 1024,
        rlim_max: hard,
    };
    // SAFETY: between fork and exec only setrlimit runs (async-signal-safe).
    unsafe {
        cmd.pre_exec(move || match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        });
    }
    let proxy = TestProxy {
        home,
        port,
        child: cmd.spawn().unwrap(),
    };
    proxy.wait_ready().await;
    let pid = proxy.child.id();
    let (psoft, phard) = proc_open_files_limit(pid);
    assert_eq!(
        (psoft.as_str(), phard.as_str()),
        (hard.to_string().as_str(), hard.to_string().as_str()),
        "the proxy's open-files limit (soft, hard), started at (1024, {hard})"
    );
    let up = Upstream::named("ok").await;
    proxy
        .route(APP, RoutePolicy::default(), vec![up.addr], vec![])
        .await;

    let started = Instant::now();
    let mut idle = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(proxy.addr())).await {
            Ok(Ok(s)) => idle.push(s),
            other => panic!("connection {i} of {IDLE}: {other:?}"),
        }
    }
    // The proxy holds them all (more descriptors than its old soft limit).
    wait::until_async(
        &format!("the proxy to hold {IDLE} descriptors"),
        Duration::from_secs(10),
        Duration::from_millis(50),
        async || (open_fds(pid) >= IDLE).then_some(()),
        async || format!("it holds {}", open_fds(pid)),
    )
    .await;
    eprintln!(
        "{IDLE} idle connections open in {:?}; the proxy holds {} descriptors",
        started.elapsed(),
        open_fds(pid)
    );
    let r = tokio::time::timeout(RESPONSE_TIMEOUT, get(&proxy.addr(), HOST, "/"))
        .await
        .expect("a request beside the idle connections is answered");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(body(&r), "ok");
    let health = tokio::time::timeout(RESPONSE_TIMEOUT, proxy.admin().health())
        .await
        .expect("the admin API answers")
        .unwrap();
    assert_eq!(health.pid, pid);
    // The idle ones are still open (the idle timeout is 60 s).
    let mut probe = [0u8; 1];
    for s in idle.iter().step_by(200) {
        let peek = tokio::time::timeout(Duration::from_millis(20), s.peek(&mut probe)).await;
        assert!(peek.is_err(), "an idle connection was closed: {peek:?}");
    }
    drop(idle);
}

// ---------------------------------------------------------------------------
// 2. Forwarding headers.

/// Forwarding headers a client (or a load balancer) sends, and the same
/// names with `_`, which nothing may pass on.
const FORWARDING: &str = "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n\
    X-FORWARDED-HOST: public.example\r\nForwarded: for=6.6.6.6;proto=https\r\nX-Real-IP: 6.6.6.6\r\n\
    X_Forwarded_Proto: underscored\r\nX_Forwarded_For: 8.8.8.8\r\nx_forwarded_host: underscored.example\r\n";

/// Sends the forwarding headers on the fast path, on hyper's (a chunked
/// POST) and as HTTP/1.0 (hyper's too), and checks what reached the
/// upstream with `check`.
async fn forwarded_on_each_path(
    tag: &str,
    policy: RoutePolicy,
    check: impl Fn(&Seen, &str) -> Vec<String>,
) {
    let up = Upstream::named("ok").await;
    let proxy = edge(tag, &[], policy, vec![up.addr], vec![]).await;
    let host = format!("{HOST}:{}", proxy.port);
    let requests = [
        ("fast path", "/fast", format!("GET /fast HTTP/1.1\r\nHost: {host}\r\n{FORWARDING}\r\n")),
        (
            "hyper's path (chunked POST)",
            "/chunked",
            format!(
                "POST /chunked HTTP/1.1\r\nHost: {host}\r\n{FORWARDING}Transfer-Encoding: chunked\r\n\r\n\
                 5\r\nhello\r\n0\r\n\r\n"
            ),
        ),
        ("hyper's path (HTTP/1.0)", "/old", format!("GET /old HTTP/1.0\r\nHost: {host}\r\n{FORWARDING}\r\n")),
    ];
    let mut wrong = Vec::new();
    for (name, path, request) in &requests {
        let mut c = Conn::open(&proxy.addr()).await;
        c.send(request.as_bytes()).await;
        c.whole_response(RESPONSE_TIMEOUT).await;
        if status_of(&c.buf) != 200 {
            wrong.push(format!("{name}: got {}", shown(&c.buf)));
            continue;
        }
        let seen = up.requests();
        let Some(seen) = seen.iter().find(|s| s.path() == *path) else {
            wrong.push(format!("{name}: not at the upstream; {}", up.report()));
            continue;
        };
        let found = check(seen, &host);
        if !found.is_empty() {
            wrong.push(format!(
                "{name}: {}\n  upstream saw {:?}",
                found.join("; "),
                seen.head
            ));
        }
    }
    assert_all_right(&wrong);
}

/// What no upstream may see, trusted peer or not: a forwarding name
/// written with `_`, or its value.
fn underscores_dropped(seen: &Seen) -> Vec<String> {
    let mut wrong = Vec::new();
    for name in seen.names() {
        if name.contains('_') {
            wrong.push(format!("header {name:?} passed"));
        }
    }
    for value in ["underscored", "8.8.8.8"] {
        if seen.head.contains(value) {
            wrong.push(format!("the value {value:?} of an _ spelling passed"));
        }
    }
    wrong
}

fn expect_values(seen: &Seen, name: &str, want: &[&str], wrong: &mut Vec<String>) {
    let got = seen.headers(name);
    if got != want {
        wrong.push(format!("{name}: {got:?}, not {want:?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_an_untrusted_client_are_replaced_on_both_paths() {
    forwarded_on_each_path("fwd-untrusted", RoutePolicy::default(), |seen, host| {
        let mut wrong = underscores_dropped(seen);
        expect_values(seen, "x-forwarded-for", &["127.0.0.1"], &mut wrong);
        expect_values(seen, "x-forwarded-proto", &["http"], &mut wrong);
        expect_values(seen, "x-forwarded-host", &[host], &mut wrong);
        expect_values(seen, "forwarded", &[], &mut wrong);
        expect_values(seen, "x-real-ip", &[], &mut wrong);
        for value in ["6.6.6.6", "https", "public.example"] {
            if seen.head.contains(value) {
                wrong.push(format!("the client's {value:?} passed"));
            }
        }
        wrong
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_a_trusted_proxy_are_kept_and_appended_to_on_both_paths() {
    let policy = RoutePolicy {
        trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
        ..RoutePolicy::default()
    };
    forwarded_on_each_path("fwd-trusted", policy, |seen, _| {
        let mut wrong = underscores_dropped(seen);
        // One list, however many lines carry it.
        let xff = seen.headers("x-forwarded-for").join(", ");
        if xff != "6.6.6.6, 127.0.0.1" {
            wrong.push(format!(
                "x-forwarded-for {xff:?}, not \"6.6.6.6, 127.0.0.1\""
            ));
        }
        expect_values(seen, "x-forwarded-proto", &["https"], &mut wrong);
        expect_values(seen, "x-forwarded-host", &["public.example"], &mut wrong);
        expect_values(seen, "forwarded", &["for=6.6.6.6;proto=https"], &mut wrong);
        expect_values(seen, "x-real-ip", &["6.6.6.6"], &mut wrong);
        wrong
    })
    .await;
}

// ---------------------------------------------------------------------------
// 3. The drain of streams on the old color.

/// Blue's upstream: event streams, downloads and short responses by path.
async fn streaming_upstream() -> Upstream {
    Upstream::scripted(|seen| match seen.path() {
        "/events" => event_stream(60, Duration::from_millis(200)),
        "/long-length" => download(
            false,
            Some(10_000_000),
            100,
            1000,
            Duration::from_millis(100),
        ),
        "/long-chunked" => download(true, None, 100, 1000, Duration::from_millis(100)),
        "/short-events" => event_stream(5, Duration::from_millis(200)),
        "/short-length" => download(false, None, 5, 1000, Duration::from_millis(200)),
        "/short-chunked" => download(true, None, 5, 1000, Duration::from_millis(200)),
        _ => vec![Step::Write(fixed(b"blue"))],
    })
    .await
}

/// A proxy with `streaming_upstream` live on blue and `green` on green,
/// draining for `drain` with no spread.
async fn streaming_edge(tag: &str, drain: Duration) -> TestProxy {
    let (blue, green) = (streaming_upstream().await, Upstream::named("green").await);
    let policy = draining(drain, Some(Duration::ZERO));
    edge(tag, &[], policy, vec![blue.addr], vec![green.addr]).await
}

/// Opens `path` on blue on a new connection and reads until its body has
/// begun (`min_body` bytes past the head).
async fn open_stream(addr: &str, path: &str, hyper: bool, min_body: usize) -> Result<Conn, String> {
    let mut c = Conn::open(addr).await;
    c.send(&get_on(path, hyper)).await;
    let begun = |b: &[u8]| split_response(b).is_some_and(|(_, _, rest)| rest.len() >= min_body);
    match c.read_until(RESPONSE_TIMEOUT, &begun).await {
        Some(_) => Ok(c),
        None => Err(format!(
            "{path} on the {} did not begin: {}",
            path_name(hyper),
            shown(&c.buf)
        )),
    }
}

/// An event stream opened on blue ends, after a switch to green, by the
/// drain deadline (no spread), at an event boundary with its last chunk;
/// every event arrives whole.
async fn assert_event_stream_ends_whole(tag: &str, hyper: bool) {
    let drain = Duration::from_secs(2);
    let proxy = streaming_edge(tag, drain).await;
    let mut c = open_stream(&proxy.addr(), "/events", hyper, 0)
        .await
        .unwrap();
    let two_events = |b: &[u8]| find(b, b"data: 1\n\n").is_some();
    assert!(
        c.read_until(RESPONSE_TIMEOUT, &two_events).await.is_some(),
        "no events: {}",
        shown(&c.buf)
    );
    let switched = Instant::now();
    proxy.switch(APP, Color::Green, None).await;
    let ended = c
        .read_until(drain + Duration::from_secs(3), &|b| whole_body(b).is_some())
        .await;
    let Some(ended) = ended else {
        panic!(
            "the stream did not end properly ({}, {:?} after the switch): {}",
            match c.closed {
                Some(_) => "cut: closed without its last chunk",
                None => "still open",
            },
            switched.elapsed(),
            shown(&c.buf[c.buf.len().saturating_sub(200)..])
        );
    };
    let after = ended - switched;
    assert!(
        after >= drain,
        "ended {after:?} after the switch, before the {drain:?} deadline"
    );
    assert!(
        after <= drain + Duration::from_secs(1),
        "ended {after:?} after the switch, late for the {drain:?} deadline"
    );
    let (_, head, _) = split_response(&c.buf).unwrap();
    assert!(is_chunked(&head), "{head:?}");
    let events = String::from_utf8(whole_body(&c.buf).unwrap()).unwrap();
    let count = events.matches("data: ").count();
    let expected: String = (0..count).map(|n| format!("data: {n}\n\n")).collect();
    assert_eq!(events, expected, "the events are not whole and in order");
    assert!(count >= 10, "only {count} events in {after:?}");
    eprintln!(
        "{}: {count} whole events, ended {after:?} after the switch",
        path_name(hyper)
    );
    // A new request goes to green.
    assert_eq!(body(&get(&proxy.addr(), HOST, "/").await), "green");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_on_the_old_color_ends_whole_at_the_drain_deadline_on_the_fast_path() {
    assert_event_stream_ends_whole("sse-fast", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_on_the_old_color_ends_whole_at_the_drain_deadline_on_hypers_path() {
    assert_event_stream_ends_whole("sse-hyper", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_on_the_old_color_is_cut_as_incomplete_at_the_drain_deadline() {
    let drain = Duration::from_secs(2);
    let proxy = streaming_edge("cut", drain).await;
    let cases = [
        ("/long-length", false),
        ("/long-chunked", false),
        ("/long-length", true),
        ("/long-chunked", true),
    ];
    let mut conns = Vec::new();
    for (path, hyper) in cases {
        conns.push(open_stream(&proxy.addr(), path, hyper, 1000).await.unwrap());
    }
    let switched = Instant::now();
    proxy.switch(APP, Color::Green, None).await;
    let waits = conns
        .iter_mut()
        .map(|c| c.closed_within(drain + Duration::from_secs(3)));
    let closed = join_all(waits).await;
    let mut wrong = Vec::new();
    for (((path, hyper), c), closed) in cases.iter().zip(&conns).zip(closed) {
        let what = format!("{path} on the {}", path_name(*hyper));
        let (_, head, rest) = split_response(&c.buf).unwrap();
        let complete = match (is_chunked(&head), content_length(&head)) {
            (true, _) => matches!(dechunk(rest), Chunks::Whole { .. }),
            (false, Some(n)) => rest.len() >= n,
            // Delimited by the close: a client cannot tell it was cut.
            (false, None) => true,
        };
        if complete {
            wrong.push(format!(
                "{what}: looks complete to the client: {head:?}, {} body bytes",
                rest.len()
            ));
        }
        match closed {
            None => wrong.push(format!(
                "{what}: still open {:?} after the switch",
                switched.elapsed()
            )),
            Some(at) => {
                let after = at - switched;
                eprintln!(
                    "{what}: closed {after:?} after the switch, {} body bytes",
                    rest.len()
                );
                if after < drain || after > drain + Duration::from_secs(1) {
                    wrong.push(format!(
                        "{what}: cut {after:?} after the switch, not at the {drain:?} deadline"
                    ));
                }
            }
        }
    }
    assert_all_right(&wrong);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_that_ends_before_the_drain_deadline_is_untouched() {
    let drain = Duration::from_secs(3);
    let proxy = streaming_edge("untouched", drain).await;
    let events: String = (0..5).map(|n| format!("data: {n}\n\n")).collect();
    let bytes = vec![b'x'; 5000];
    let cases: Vec<(&str, bool, Vec<u8>)> = [false, true]
        .into_iter()
        .flat_map(|hyper| {
            [
                ("/short-events", hyper, events.clone().into_bytes()),
                ("/short-length", hyper, bytes.clone()),
                ("/short-chunked", hyper, bytes.clone()),
            ]
        })
        .collect();
    let mut conns = Vec::new();
    for (path, hyper, _) in &cases {
        conns.push(open_stream(&proxy.addr(), path, *hyper, 0).await.unwrap());
    }
    let switched = Instant::now();
    proxy.switch(APP, Color::Green, None).await;
    let waits = conns
        .iter_mut()
        .map(|c| c.read_until(drain, &|b| whole_body(b).is_some()));
    let ended = join_all(waits).await;
    let mut wrong = Vec::new();
    for (((path, hyper, want), c), ended) in cases.iter().zip(conns.iter_mut()).zip(ended) {
        let what = format!("{path} on the {}", path_name(*hyper));
        match whole_body(&c.buf) {
            Some(body) if body == *want => {}
            _ => {
                wrong.push(format!(
                    "{what}: not whole {:?} after the switch (closed: {}): {}",
                    ended.map_or(switched.elapsed(), |at| at - switched),
                    c.closed.is_some(),
                    shown(&c.buf)
                ));
                continue;
            }
        }
        // The connection goes on, and its next request goes to green.
        c.send(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
            .await;
        c.whole_response(RESPONSE_TIMEOUT).await;
        if whole_body(&c.buf).as_deref() != Some(&b"green"[..]) {
            wrong.push(format!(
                "{what}: the next request on the connection got {}",
                shown(&c.buf)
            ));
        }
    }
    assert_all_right(&wrong);
}

/// Opens `count` WebSockets on blue, switches to green, and returns when
/// each got its close frame, measured from just before the switch call
/// (`Err`: what it got instead).
async fn websocket_closes(
    tag: &str,
    count: usize,
    policy: RoutePolicy,
    wait: Duration,
) -> Vec<Result<Duration, String>> {
    let (blue, green) = (ws_upstream().await, ws_upstream().await);
    let proxy = edge(tag, &[], policy, vec![blue], vec![green]).await;
    let mut sockets = Vec::new();
    for _ in 0..count {
        sockets.push(Ws::open(&proxy.addr(), HOST).await);
    }
    let switched = Instant::now();
    proxy.switch(APP, Color::Green, None).await;
    let waits = sockets.into_iter().map(|mut ws| async move {
        match tokio::time::timeout(wait, ws.next_frame()).await {
            Ok(Ok((0x8, payload))) if payload == [0x03, 0xE9] => Ok(switched.elapsed()),
            Ok(Ok(frame)) => Err(format!("got {frame:?} after {:?}", switched.elapsed())),
            Ok(Err(e)) => Err(format!(
                "ended without a close frame after {:?}: {e}",
                switched.elapsed()
            )),
            Err(_) => Err(format!("no close frame within {wait:?}")),
        }
    });
    let closes = join_all(waits).await;
    drop(proxy);
    closes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_closes_after_a_switch_are_spread_over_the_drain_window() {
    let (count, drain) = (100, Duration::from_secs(5));
    let closes = websocket_closes(
        "spread",
        count,
        draining(drain, None),
        drain + Duration::from_secs(3),
    )
    .await;
    let wrong: Vec<String> = closes.iter().filter_map(|c| c.clone().err()).collect();
    assert_all_right(&wrong);
    let times: Vec<Duration> = closes.into_iter().map(Result::unwrap).collect();
    let mut per_second = [0usize; 8];
    for t in &times {
        per_second[(t.as_secs() as usize).min(7)] += 1;
    }
    let latest = times.iter().max().unwrap();
    eprintln!(
        "{count} close frames per second after the switch: {per_second:?}; last at {latest:?}"
    );
    assert!(
        *latest <= drain + Duration::from_secs(2),
        "the last close came {latest:?} after the switch"
    );
    let most = *per_second.iter().max().unwrap();
    assert!(
        most * 100 <= count * 30,
        "{most} of {count} closes in one second: {per_second:?} per second after the switch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_spread_every_websocket_closes_at_the_deadline_and_none_before() {
    let (count, drain) = (20, Duration::from_secs(2));
    let policy = draining(drain, Some(Duration::ZERO));
    let closes = websocket_closes("nospread", count, policy, drain + Duration::from_secs(3)).await;
    let times: Vec<Duration> = closes.iter().filter_map(|c| c.clone().ok()).collect();
    eprintln!(
        "{} close frames between {:?} and {:?} after the switch",
        times.len(),
        times.iter().min(),
        times.iter().max()
    );
    let mut wrong = Vec::new();
    for close in closes {
        match close {
            Ok(t) if t >= drain && t <= drain + Duration::from_secs(1) => {}
            Ok(t) => wrong.push(format!(
                "closed {t:?} after the switch, not at the {drain:?} deadline"
            )),
            Err(e) => wrong.push(e),
        }
    }
    assert_all_right(&wrong);
}

// ---------------------------------------------------------------------------
// 4. TLS certificates that move.

/// Accepts any certificate (the test compares it byte for byte instead),
/// but checks the handshake's signature with it: a certificate served with
/// a key that is not its own fails the handshake.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

/// A `ServerCertVerifier` method that checks the handshake's signature by
/// rustls's function of the same name: `verify_tls12_signature` and
/// `verify_tls13_signature` differ in nothing else.
macro_rules! verify_signature_by {
    ($name:ident) => {
        fn $name(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            let algorithms = &self.0.signature_verification_algorithms;
            rustls::crypto::$name(message, cert, dss, algorithms)
        }
    };
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    verify_signature_by!(verify_tls12_signature);
    verify_signature_by!(verify_tls13_signature);

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A GET over TLS with `sni`: the certificate served (DER) and the response.
async fn tls_get(addr: &str, sni: &str, host: &str) -> Result<(Vec<u8>, String), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let mut tls = tokio::time::timeout(RESPONSE_TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| format!("handshake: {e}"))?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or("no certificate")?;
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = tokio::time::timeout(RESPONSE_TIMEOUT, async {
        // A close without close_notify ends the response as well.
        while let Ok(n @ 1..) = tls.read(&mut chunk).await {
            out.extend_from_slice(&chunk[..n]);
        }
    });
    read.await.map_err(|_| "response timed out".to_string())?;
    Ok((leaf, String::from_utf8_lossy(&out).into_owned()))
}

/// The certificate in a PEM file, DER.
fn der(files: &TlsFiles) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(&files.cert).unwrap().to_vec()
}

/// A short fingerprint, for messages.
fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(der);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// A proxy run with `flags`, and `web` on its listen address, TLS with a
/// new self-signed pair in the proxy's home (`pem`), live on blue and
/// served: the proxy and the pair.
async fn tls_web(tag: &str, flags: &[&str]) -> (TestProxy, TlsFiles) {
    let proxy = TestProxy::start_with(tag, flags).await;
    let files = self_signed(&proxy.home.join("pem"), "web.localhost");
    let up = Upstream::named("web").await;
    let spec = RouteSpec {
        listen: Some(proxy.addr().parse().unwrap()),
        tls: Some(files.clone().into()),
        ..host_route(&["web.localhost"])
    };
    proxy.put_live("web", &spec, vec![up.addr]).await;
    serves(&proxy.addr(), &der(&files)).await.unwrap();
    (proxy, files)
}

/// `web.localhost` answers over TLS, from `web`, with the certificate `want`.
async fn serves(addr: &str, want: &[u8]) -> Result<(), String> {
    let (leaf, response) = tls_get(addr, "web.localhost", "web.localhost").await?;
    if leaf != want {
        return Err(format!(
            "serves certificate {}, not {}",
            fingerprint(&leaf),
            fingerprint(want)
        ));
    }
    if !response.starts_with("HTTP/1.1 200") || body(&response) != "web" {
        return Err(format!("answered {response:?}"));
    }
    Ok(())
}

/// Waits up to `within` for `serves(addr, want)`: how long it took.
async fn serves_within(addr: &str, want: &[u8], within: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        let r = serves(addr, want).await;
        match r {
            Ok(()) => return Ok(started.elapsed()),
            Err(e) if started.elapsed() >= within => {
                return Err(format!("after {:?}: {e}", started.elapsed()))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Writes the certificate in `cert_from` and the key in `key_from` over
/// `files`, in place.
fn renew(files: &TlsFiles, cert_from: &Path, key_from: &Path) {
    std::fs::write(&files.cert, std::fs::read(cert_from).unwrap()).unwrap();
    std::fs::write(&files.key, std::fs::read(key_from).unwrap()).unwrap();
}

/// Writes a new self-signed pair, made in the proxy's home (`dir`), over
/// `files`, in place: the new pair.
fn renew_with_new_pair(proxy: &TestProxy, files: &TlsFiles, dir: &str) -> TlsFiles {
    let new = self_signed(&proxy.home.join(dir), "web.localhost");
    renew(files, &new.cert, &new.key);
    new
}

/// Another app's route is put (and made live), by host only.
async fn change_another_route(proxy: &TestProxy, app: &str) {
    let up = Upstream::named("other").await;
    proxy.route_by_host(app, vec![up.addr]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_route_keeps_serving_when_its_files_are_gone_and_another_route_changes() {
    let (proxy, files) = tls_web("tls-gone", &[]).await;
    let want = der(&files);
    std::fs::remove_dir_all(proxy.home.join("pem")).unwrap();
    change_another_route(&proxy, "other").await;
    serves(&proxy.addr(), &want)
        .await
        .expect("web's TLS after its files were deleted and another route changed");
    // A change of web's own upstreams too.
    let up = Upstream::named("web").await;
    proxy.switch("web", Color::Green, Some(vec![up.addr])).await;
    serves(&proxy.addr(), &want)
        .await
        .expect("web's TLS after its files were deleted and it switched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_route_keeps_serving_after_a_restart_with_its_files_gone() {
    let (mut proxy, files) = tls_web("tls-restart", &[]).await;
    let want = der(&files);
    std::fs::remove_dir_all(proxy.home.join("pem")).unwrap();
    proxy.kill9();
    proxy.child = spawn_proxy(&proxy.home, &[]);
    proxy.wait_ready().await;
    serves_within(&proxy.addr(), &want, Duration::from_secs(2))
        .await
        .expect("web's TLS after a restart with its files gone");
    change_another_route(&proxy, "other").await;
    serves(&proxy.addr(), &want)
        .await
        .expect("web's TLS after a restart with its files gone, and another route's change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_renewed_in_place_is_served_after_cyan_proxy_reload() {
    let (proxy, files) = tls_web("tls-reload", &[]).await;
    let old = der(&files);
    let renewed = renew_with_new_pair(&proxy, &files, "renewed");
    assert_ne!(der(&renewed), old);
    // The files are checked on their own only every 30 s (the default):
    // until the reload, the old certificate.
    serves(&proxy.addr(), &old)
        .await
        .expect("the old certificate before the reload");
    let out = proxy_ctl("reload", &proxy.home).unwrap();
    assert!(
        out.status.success(),
        "cyan proxy reload: {}",
        util::text(&out)
    );
    let took = serves_within(&proxy.addr(), &der(&renewed), Duration::from_secs(1))
        .await
        .expect("the renewed certificate after cyan proxy reload");
    eprintln!("renewed certificate served {took:?} after the reload");
}

/// A client that sends no SNI names only the listen address: it gets the
/// certificate of the route that owns the address, never that of another
/// app's path prefix on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_sni_a_shared_listen_address_gives_its_owners_certificate() {
    let (proxy, files) = tls_web("tls-no-sni", &[]).await;
    let api_files = self_signed(&proxy.home.join("api"), "web.localhost");
    let up = Upstream::named("api").await;
    let spec = RouteSpec {
        listen: Some(proxy.addr().parse().unwrap()),
        path_prefix: Some("/api".into()),
        tls: Some(api_files.clone().into()),
        ..host_route(&["web.localhost"])
    };
    // "api" sorts before "web", and its longer prefix comes first in the
    // address's list: neither makes it the owner.
    proxy.put_live("api", &spec, vec![up.addr]).await;
    let (leaf, _) = tls_get(&proxy.addr(), "127.0.0.1", "web.localhost")
        .await
        .unwrap();
    assert_eq!(fingerprint(&leaf), fingerprint(&der(&files)), "the owner's");
    serves(&proxy.addr(), &der(&files)).await.expect("SNI too");
}

/// Every deploy claims its route first. A claim of the files the route
/// serves, renewed in place, serves them; a claim of other files (a
/// deploy that is then refused) changes neither what is served nor which
/// files a reload looks at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_serves_its_routes_renewed_files_and_a_claim_of_others_changes_nothing() {
    let (proxy, files) = tls_web("tls-claim", &[]).await;
    let spec = |files: &TlsFiles| RouteSpec {
        listen: Some(proxy.addr().parse().unwrap()),
        tls: Some(files.clone().into()),
        ..host_route(&["web.localhost"])
    };
    let renewed = renew_with_new_pair(&proxy, &files, "renewed");
    proxy.admin().claim("web", &spec(&files)).await.unwrap();
    serves(&proxy.addr(), &der(&renewed))
        .await
        .expect("the renewed pair once a deploy claims the route");

    let elsewhere = self_signed(&proxy.home.join("elsewhere"), "web.localhost");
    proxy.admin().claim("web", &spec(&elsewhere)).await.unwrap();
    serves(&proxy.addr(), &der(&renewed))
        .await
        .expect("a claim of other files serves nothing of them");
    let again = renew_with_new_pair(&proxy, &files, "again");
    let out = proxy_ctl("reload", &proxy.home).unwrap();
    assert!(out.status.success(), "{}", util::text(&out));
    serves_within(&proxy.addr(), &der(&again), Duration::from_secs(1))
        .await
        .expect("the route's own files are still the ones a reload looks at");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_renewed_in_place_is_served_within_the_check_interval() {
    let flags = ["--cert-check-interval", "1s"];
    let (proxy, files) = tls_web("tls-check", &flags).await;
    let renewed = renew_with_new_pair(&proxy, &files, "renewed");
    let took = serves_within(&proxy.addr(), &der(&renewed), Duration::from_secs(3))
        .await
        .expect("the renewed certificate within 3 s, with a 1 s check interval");
    eprintln!("renewed certificate served {took:?} after the files changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_pair_that_does_not_match_is_not_served_and_the_last_good_one_stays() {
    let flags = ["--cert-check-interval", "1s"];
    let (proxy, files) = tls_web("tls-broken", &flags).await;
    let good = der(&files);
    // A new certificate with another pair's key.
    let (one, two) = (
        self_signed(&proxy.home.join("one"), "web.localhost"),
        self_signed(&proxy.home.join("two"), "web.localhost"),
    );
    renew(&files, &one.cert, &two.key);
    let out = proxy_ctl("reload", &proxy.home).unwrap();
    let said = util::text(&out);
    assert!(
        !out.status.success(),
        "a refused renewal is an error: {said}"
    );
    assert!(
        said.contains("refused") && said.contains("do not belong together"),
        "the reload says which pair was refused and why: {said}"
    );
    // Three check intervals: the last good pair all along.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        if let Err(e) = serves(&proxy.addr(), &good).await {
            panic!(
                "{:?} after a broken renewal (reload: exit {:?}): {e}",
                started.elapsed(),
                out.status.code()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A good pair after it is picked up: the check was running.
    let good_again = renew_with_new_pair(&proxy, &files, "good-again");
    serves_within(&proxy.addr(), &der(&good_again), Duration::from_secs(3))
        .await
        .expect("a good pair after the broken one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trailing_dot_and_a_second_host_reach_a_tls_route() {
    let tls_addr = format!("127.0.0.1:{}", util::free_port());
    let proxy = TestProxy::start_listening_with("tls-hosts", &["--tls-listen", &tls_addr]).await;
    // `other` is another app by host on the same ports.
    let other = Upstream::named("other").await;
    proxy.route_by_host("other", vec![other.addr]).await;
    let files = self_signed(&proxy.home.join("pem"), "web.localhost");
    let want = der(&files);
    let web = Upstream::named("web").await;
    let spec = RouteSpec {
        tls: Some(files.clone().into()),
        ..host_route(&["web.localhost", "www.web.localhost"])
    };
    proxy.put_live("web", &spec, vec![web.addr]).await;

    let mut wrong = Vec::new();
    for host in [
        "web.localhost.",
        "www.web.localhost",
        "www.web.localhost.",
        "WWW.Web.localhost",
    ] {
        let r = get(&proxy.addr(), host, "/").await;
        if body(&r) != "web" {
            wrong.push(format!("plain, Host {host:?}: {r:?}"));
        }
    }
    for (sni, host) in [
        ("web.localhost", "web.localhost."),
        ("www.web.localhost", "www.web.localhost"),
        ("www.web.localhost", "www.web.localhost."),
    ] {
        match tls_get(&tls_addr, sni, host).await {
            Ok((leaf, r)) if leaf == want && body(&r) == "web" => {}
            Ok((leaf, r)) => wrong.push(format!(
                "TLS, SNI {sni:?}, Host {host:?}: certificate {} (web's is {}), {r:?}",
                fingerprint(&leaf),
                fingerprint(&want)
            )),
            Err(e) => wrong.push(format!("TLS, SNI {sni:?}, Host {host:?}: {e}")),
        }
    }
    // Sanity: other hosts are not web's.
    let r = get(&proxy.addr(), "other.localhost", "/").await;
    if body(&r) != "other" {
        wrong.push(format!("plain, Host other.localhost: {r:?}"));
    }
    let r = get(&proxy.addr(), "elsewhere.localhost", "/").await;
    if !r.starts_with("HTTP/1.1 404") {
        wrong.push(format!("plain, Host elsewhere.localhost: {r:?}"));
    }
    assert_all_right(&wrong);
}
