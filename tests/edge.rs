//! The proxy as an internet edge: the real `cyan proxy run` process in
//! front of recording upstreams on 127.0.0.1 that parse HTTP/1.1 themselves
//! and keep every request head and body they read. Each test sends raw bytes
//! a hostile or broken client (or upstream) would, and checks both what the
//! client got and exactly what reached the upstream: message framing
//! (RFC 9112 §6), Host (RFC 9112 §3.2), no replays of non-idempotent
//! requests (RFC 9110 §9.2.2), and upstreams that close before any byte.

mod util;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cyan::proxy::state::RoutePolicy;
use cyan::release::Color;
use util::proxy::{ws_hello, TestProxy};
use util::raw::{assert_all_right, exchange, line, serve_each, status, Conn, Resp};
use util::upstream::{fixed, Upstream};

/// How long after the client's answer the upstream may still record.
const SETTLE: Duration = Duration::from_millis(150);

// ---------------------------------------------------------------------------
// Upstreams.

/// A replica that accepts each connection and closes it at once without
/// reading (with `reset`: an RST, by SO_LINGER 0), as docker-proxy does
/// when the app behind it stopped listening.
async fn closing_upstream(reset: bool) -> SocketAddr {
    serve_each(move |stream| {
        if reset {
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        }
        drop(stream);
        async {}
    })
    .await
}

// ---------------------------------------------------------------------------
// Proxy set-up.

/// A proxy with `app` (`{app}.localhost`, and the proxy's listen address)
/// live on blue at `upstreams`, default policy.
async fn edge(tag: &str, app: &str, upstreams: Vec<SocketAddr>) -> TestProxy {
    let proxy = TestProxy::start(tag).await;
    proxy
        .route(app, RoutePolicy::default(), upstreams, vec![])
        .await;
    proxy
}

/// Sends each `(name, request)` on a new connection with a fresh upstream
/// behind `app`, and returns a line for each one that did not get a 400
/// with nothing at the upstream.
async fn refused(proxy: &TestProxy, app: &str, cases: &[(&str, Vec<u8>)]) -> Vec<String> {
    let mut wrong = Vec::new();
    for (name, request) in cases {
        let up = Upstream::named("ok").await;
        proxy.switch(app, Color::Blue, Some(vec![up.addr])).await;
        let r = exchange(&proxy.addr(), request).await;
        tokio::time::sleep(SETTLE).await;
        if status(&r) != 400 || up.bytes() != 0 {
            wrong.push(format!(
                "{name}: client got {:?}; {}",
                line(&r),
                up.report()
            ));
        }
    }
    wrong
}

/// The upstream saw no request it was not sent on purpose: none whose
/// start line contains `marker`, and no bytes left over past the last
/// whole request (the start of a smuggled one).
fn assert_nothing_smuggled(up: &Upstream, marker: &str) {
    let requests = up.requests();
    assert!(
        requests.iter().all(|r| !r.start_line().contains(marker)),
        "a smuggled request reached the upstream: {}",
        up.report()
    );
    assert!(up.pending().is_empty(), "{}", up.report());
}

// ---------------------------------------------------------------------------
// Framing (RFC 9112 §6).

/// The body of the framing tests: a whole request of its own.
const HIDDEN: &str = "GET /hidden HTTP/1.1\r\nHost: x\r\n\r\n";

/// Sends `HIDDEN` as the body of a POST with `Connection: {connection}`,
/// framed by its length or (`chunked`) in one chunk: one request must reach
/// the upstream, with all of `HIDDEN` as its body, nothing smuggled, and
/// the header `kept` (name, value) if there is one; the client a 200.
async fn assert_framing_kept(
    tag: &str,
    connection: &str,
    chunked: bool,
    kept: Option<(&str, &str)>,
) {
    let up = Upstream::named("ok").await;
    let proxy = edge(tag, "edge", vec![up.addr]).await;
    let framed = match chunked {
        false => format!("Content-Length: {}\r\n\r\n{HIDDEN}", HIDDEN.len()),
        true => format!(
            "Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{HIDDEN}\r\n0\r\n\r\n",
            HIDDEN.len()
        ),
    };
    let request =
        format!("POST / HTTP/1.1\r\nHost: edge.localhost\r\nConnection: {connection}\r\n{framed}");
    let r = exchange(&proxy.addr(), request.as_bytes()).await;
    tokio::time::sleep(SETTLE).await;
    assert_nothing_smuggled(&up, "/hidden");
    let seen = up.requests();
    assert_eq!(seen.len(), 1, "{}", up.report());
    assert!(seen[0].bad.is_none(), "{}", up.report());
    if let Some((name, value)) = kept {
        assert_eq!(seen[0].headers(name), [value], "{}", up.report());
    }
    assert_eq!(seen[0].body, HIDDEN.as_bytes(), "{}", up.report());
    assert_eq!(status(&r), 200, "{}", line(&r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_content_length_does_not_strip_the_request_length() {
    let length = HIDDEN.len().to_string();
    assert_framing_kept(
        "cncl",
        "content-length",
        false,
        Some(("content-length", &length)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_transfer_encoding_does_not_strip_the_request_chunking() {
    assert_framing_kept("cnte", "transfer-encoding", true, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_host_does_not_strip_the_host() {
    assert_framing_kept("cnhost", "host", false, Some(("host", "edge.localhost"))).await;
}

/// Behind an upstream answering `response`, two requests on one client
/// connection, the first on the fast path (`GET`) or sending the
/// connection to hyper's (a chunked `POST`): each response must be a 200
/// with `body`, and `right`.
async fn assert_two_on_one_connection(
    tag: &str,
    response: &'static [u8],
    body: &[u8],
    right: impl Fn(&Resp) -> bool,
) {
    let up = Upstream::answering(response).await;
    let proxy = edge(tag, "edge", vec![up.addr]).await;
    let check = |r: &Option<Resp>| match r {
        Some(r) if r.status == 200 && right(r) && r.body == body => Ok(()),
        Some(r) => Err(format!("{:?} body {:?}", r.head, r.body_text())),
        None => Err("no response".to_string()),
    };
    let host = "edge.localhost";
    let mut wrong = Vec::new();
    let firsts = [
        (
            "fast path",
            format!("GET /1 HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        ),
        (
            "hyper's path",
            format!(
                "POST /1 HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n\
                 2\r\nhi\r\n0\r\n\r\n"
            ),
        ),
    ];
    for (path, first) in firsts {
        let mut c = Conn::open(&proxy.addr()).await;
        c.send(first.as_bytes()).await;
        let r = c.response().await;
        if let Err(e) = check(&r) {
            wrong.push(format!("{path}, first response: {e}"));
            continue;
        }
        c.send(format!("GET /2 HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
            .await;
        let r = c.response().await;
        if let Err(e) = check(&r) {
            wrong.push(format!("{path}, second response: {e}"));
        }
    }
    assert_all_right(&wrong);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_content_length_on_a_response_keeps_its_length_and_the_connection() {
    assert_two_on_one_connection(
        "rescl",
        b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello",
        b"hello",
        |r| r.headers("content-length") == ["5"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_transfer_encoding_on_a_response_keeps_its_chunking_and_the_connection() {
    assert_two_on_one_connection(
        "reste",
        b"HTTP/1.1 200 OK\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\n",
        b"hello",
        |r| r.headers("transfer-encoding") == ["chunked"] || r.headers("content-length") == ["5"],
    )
    .await;
}

/// Checks the CL.TE / TE.CL property for `request`: a 400 with nothing at
/// the upstream, or one request there without Content-Length and with the
/// chunked body (empty) decoded; never one starting with `G`.
async fn assert_not_smuggled(tag: &str, request: &[u8]) {
    let up = Upstream::named("ok").await;
    let proxy = edge(tag, "edge", vec![up.addr]).await;
    let mut c = Conn::open(&proxy.addr()).await;
    c.send(request).await;
    // The `G` may wait at the proxy as the start of the client's own next
    // request, which is no smuggling: only what reaches the upstream counts.
    let r = c.response().await;
    tokio::time::sleep(SETTLE).await;
    let seen = up.requests();
    assert!(
        seen.iter().all(|r| !r.start_line().starts_with('G')),
        "a smuggled request reached the upstream: {}",
        up.report()
    );
    assert!(
        up.pending().iter().all(|p| !p.starts_with('G')),
        "a smuggled request reached the upstream: {}",
        up.report()
    );
    let refused = status(&r) == 400 && up.bytes() == 0;
    let one_chunked = seen.len() == 1
        && seen[0].headers("content-length").is_empty()
        && seen[0].bad.is_none()
        && seen[0].body.is_empty()
        && up.pending().is_empty();
    assert!(
        refused || one_chunked,
        "client got {:?}; {}",
        line(&r),
        up.report()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_then_transfer_encoding_smuggles_nothing() {
    assert_not_smuggled(
        "clte",
        b"POST / HTTP/1.1\r\nHost: edge.localhost\r\nContent-Length: 6\r\n\
          Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_encoding_then_content_length_smuggles_nothing() {
    assert_not_smuggled(
        "tecl",
        b"POST / HTTP/1.1\r\nHost: edge.localhost\r\nTransfer-Encoding: chunked\r\n\
          Content-Length: 6\r\n\r\n0\r\n\r\nG",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_different_content_lengths_are_refused() {
    let proxy = edge("cl2diff", "edge", vec![Upstream::named("ok").await.addr]).await;
    let wrong = refused(
        &proxy,
        "edge",
        &[(
            "Content-Length 5 and 6",
            b"POST / HTTP/1.1\r\nHost: edge.localhost\r\nContent-Length: 5\r\n\
              Content-Length: 6\r\n\r\nhello!"
                .to_vec(),
        )],
    )
    .await;
    assert_all_right(&wrong);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_equal_content_lengths_reach_the_upstream_as_one() {
    let up = Upstream::named("ok").await;
    let proxy = edge("cl2same", "edge", vec![up.addr]).await;
    let r = exchange(
        &proxy.addr(),
        b"POST / HTTP/1.1\r\nHost: edge.localhost\r\nContent-Length: 5\r\n\
          Content-Length: 5\r\n\r\nhello",
    )
    .await;
    tokio::time::sleep(SETTLE).await;
    let seen = up.requests();
    assert_eq!(seen.len(), 1, "client got {:?}; {}", line(&r), up.report());
    assert_eq!(seen[0].headers("content-length"), ["5"], "{}", up.report());
    assert_eq!(seen[0].body, b"hello", "{}", up.report());
    assert!(up.pending().is_empty(), "{}", up.report());
    assert_eq!(status(&r), 200, "{}", line(&r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_signed_or_hex_content_length_is_refused_or_made_one() {
    let proxy = edge("cllist", "edge", vec![Upstream::named("ok").await.addr]).await;
    let mut wrong = Vec::new();
    for value in ["5, 5", "+5", "0x5"] {
        let up = Upstream::named("ok").await;
        proxy.switch("edge", Color::Blue, Some(vec![up.addr])).await;
        let request = format!(
            "POST / HTTP/1.1\r\nHost: edge.localhost\r\nContent-Length: {value}\r\n\r\nhello"
        );
        let r = exchange(&proxy.addr(), request.as_bytes()).await;
        tokio::time::sleep(SETTLE).await;
        let seen = up.requests();
        let refused = status(&r) == 400 && up.bytes() == 0;
        let one = seen.len() == 1
            && seen[0].headers("content-length") == ["5"]
            && seen[0].body == b"hello"
            && up.pending().is_empty();
        if !(refused || one) {
            wrong.push(format!(
                "Content-Length: {value}: client got {:?}; {}",
                line(&r),
                up.report()
            ));
        }
    }
    assert_all_right(&wrong);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_heads_are_refused_before_the_upstream() {
    let proxy = edge("malformed", "edge", vec![Upstream::named("ok").await.addr]).await;
    let post = |version: &str, header: &str| {
        format!(
            "POST / {version}\r\nHost: edge.localhost\r\n{header}\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        )
        .into_bytes()
    };
    let get = |header: &[u8]| {
        let mut r = b"GET / HTTP/1.1\r\nHost: edge.localhost\r\n".to_vec();
        r.extend_from_slice(header);
        r.extend_from_slice(b"\r\n\r\n");
        r
    };
    let cases = [
        ("obs-fold", get(b"X-Foo: a\r\n b")),
        (
            "whitespace before the colon",
            post("HTTP/1.1", "Transfer-Encoding : chunked"),
        ),
        (
            "Transfer-Encoding: xchunked",
            post("HTTP/1.1", "Transfer-Encoding: xchunked"),
        ),
        (
            "Transfer-Encoding: chunked, identity",
            post("HTTP/1.1", "Transfer-Encoding: chunked, identity"),
        ),
        (
            "Transfer-Encoding: identity",
            post("HTTP/1.1", "Transfer-Encoding: identity"),
        ),
        ("a NUL in a header value", get(b"X-Foo: a\0b")),
        ("a bare CR in a header value", get(b"X-Foo: a\rb")),
        (
            "chunked on HTTP/1.0",
            post("HTTP/1.0", "Transfer-Encoding: chunked"),
        ),
    ];
    let wrong = refused(&proxy, "edge", &cases).await;
    assert_all_right(&wrong);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_chunk_sizes_are_the_clients_fault() {
    let up = Upstream::named("ok").await;
    let proxy = edge("badchunk", "edge", vec![up.addr]).await;
    let mut wrong = Vec::new();
    for (name, body) in [
        ("size zz", "zz\r\nhello\r\n0\r\n\r\n"),
        ("a 17-digit size", "10000000000000000\r\nhello\r\n0\r\n\r\n"),
        ("no CRLF after the data", "5\r\nhelloXX0\r\n\r\n"),
    ] {
        let request = format!(
            "POST / HTTP/1.1\r\nHost: edge.localhost\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
        );
        let r = exchange(&proxy.addr(), request.as_bytes()).await;
        tokio::time::sleep(SETTLE).await;
        let stats = proxy.stats("edge", Color::Blue).await;
        if status(&r) != 400 || stats.status_5xx != 0 || stats.upstream_failures != 0 {
            wrong.push(format!(
                "{name}: client got {:?}; blue has {} 5xx, {} upstream failures; {}",
                line(&r),
                stats.status_5xx,
                stats.upstream_failures,
                up.report()
            ));
        }
    }
    assert_all_right(&wrong);
}

/// Sends `head` and the first 10 bytes of its body, then ends the client's
/// side early, four times (twice shutting down its write side, twice
/// closing), with two replicas behind `edge`; nothing of it may count
/// against the color.
async fn assert_early_end_is_not_upstream_failure(tag: &str, head: &str, partial: &str) {
    let (one, two) = (Upstream::named("ok").await, Upstream::named("ok").await);
    let proxy = edge(tag, "edge", vec![one.addr, two.addr]).await;
    for i in 0..4 {
        let mut c = Conn::open(&proxy.addr()).await;
        c.send(format!("{head}{partial}").as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        if i % 2 == 0 {
            c.shutdown_write().await;
            let _ = c.response().await;
        } else {
            drop(c);
        }
    }
    tokio::time::sleep(SETTLE).await;
    let stats = proxy.stats("edge", Color::Blue).await;
    let what = format!("{stats:?}\n{}\n{}", one.report(), two.report());
    assert_eq!(stats.status_5xx, 0, "{what}");
    assert_eq!(stats.upstream_failures, 0, "{what}");
    assert!(stats.ejected.is_empty(), "{what}");
    assert_eq!(stats.inflight, 0, "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_ending_early_on_the_fast_path_is_no_upstream_failure() {
    assert_early_end_is_not_upstream_failure(
        "early-fast",
        "POST / HTTP/1.1\r\nHost: edge.localhost\r\nContent-Length: 100\r\n\r\n",
        "0123456789",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_request_body_ending_early_on_hypers_path_is_no_upstream_failure() {
    assert_early_end_is_not_upstream_failure(
        "early-hyper",
        "POST / HTTP/1.1\r\nHost: edge.localhost\r\nTransfer-Encoding: chunked\r\n\r\n",
        "64\r\n0123456789",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_answered_405_and_never_forwarded() {
    let up = Upstream::named("ok").await;
    let proxy = edge("connect", "a", vec![up.addr]).await;
    let r = exchange(
        &proxy.addr(),
        b"CONNECT a.localhost:443 HTTP/1.1\r\nHost: a.localhost:443\r\n\r\n",
    )
    .await;
    tokio::time::sleep(SETTLE).await;
    assert_eq!(status(&r), 405, "{}; {}", line(&r), up.report());
    assert_eq!(up.bytes(), 0, "{}", up.report());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_header_named_in_connection_does_not_reach_the_upstream() {
    let up = Upstream::named("ok").await;
    let proxy = edge("hopreq", "edge", vec![up.addr]).await;
    let requests: [&[u8]; 2] = [
        b"GET / HTTP/1.1\r\nHost: edge.localhost\r\nConnection: x-secret\r\nX-Secret: 1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: edge.localhost\r\nConnection: x-secret\r\nX-Secret: 1\r\n\
          Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    ];
    for request in requests {
        let r = exchange(&proxy.addr(), request).await;
        assert_eq!(status(&r), 200, "{}", line(&r));
    }
    tokio::time::sleep(SETTLE).await;
    let seen = up.requests();
    assert_eq!(seen.len(), 2, "{}", up.report());
    for s in &seen {
        assert!(s.headers("x-secret").is_empty(), "{}", up.report());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_header_named_in_connection_does_not_reach_the_client() {
    assert_two_on_one_connection(
        "hopresp",
        b"HTTP/1.1 200 OK\r\nConnection: x-secret\r\nX-Secret: 1\r\ncontent-length: 2\r\n\r\nok",
        b"ok",
        |r| r.headers("x-secret").is_empty(),
    )
    .await;
}

// ---------------------------------------------------------------------------
// Host (RFC 9112 §3.2).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_host_headers_are_refused() {
    let proxy = edge("host2", "edge", vec![Upstream::named("ok").await.addr]).await;
    let cases = [
        (
            "the same host twice",
            b"GET / HTTP/1.1\r\nHost: edge.localhost\r\nHost: edge.localhost\r\n\r\n".to_vec(),
        ),
        (
            "two hosts",
            b"GET / HTTP/1.1\r\nHost: edge.localhost\r\nHost: other.localhost\r\n\r\n".to_vec(),
        ),
    ];
    let wrong = refused(&proxy, "edge", &cases).await;
    assert_all_right(&wrong);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http11_without_a_host_is_refused() {
    let proxy = edge("nohost", "edge", vec![Upstream::named("ok").await.addr]).await;
    let cases = [("no Host", b"GET / HTTP/1.1\r\nX-Foo: 1\r\n\r\n".to_vec())];
    let wrong = refused(&proxy, "edge", &cases).await;
    assert_all_right(&wrong);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_with_a_space_a_slash_or_an_at_is_refused() {
    let proxy = edge("badhost", "edge", vec![Upstream::named("ok").await.addr]).await;
    let cases: Vec<(&str, Vec<u8>)> = ["a b", "a/b", "a@b"]
        .into_iter()
        .map(|h| {
            (
                h,
                format!("GET / HTTP/1.1\r\nHost: {h}\r\n\r\n").into_bytes(),
            )
        })
        .collect();
    let wrong = refused(&proxy, "edge", &cases).await;
    assert_all_right(&wrong);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_without_a_host_is_routed_by_the_listen_address() {
    let up = Upstream::named("ok").await;
    let proxy = edge("h10", "edge", vec![up.addr]).await;
    let r = exchange(&proxy.addr(), b"GET /old HTTP/1.0\r\n\r\n").await;
    tokio::time::sleep(SETTLE).await;
    assert_eq!(status(&r), 200, "{}; {}", line(&r), up.report());
    assert_eq!(up.requests().len(), 1, "{}", up.report());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_target_is_routed_by_its_authority() {
    let (a, b) = (Upstream::named("ok").await, Upstream::named("ok").await);
    // Both by host, on the proxy's port: a listen address an app owns
    // would take every request that arrives there.
    let proxy = TestProxy::start_listening("absform").await;
    proxy.route_by_host("a", vec![a.addr]).await;
    proxy.route_by_host("b", vec![b.addr]).await;
    let r = exchange(
        &proxy.addr(),
        b"GET http://b.localhost/x HTTP/1.1\r\nHost: a.localhost\r\n\r\n",
    )
    .await;
    tokio::time::sleep(SETTLE).await;
    let what = format!(
        "client got {:?}\na: {}\nb: {}",
        line(&r),
        a.report(),
        b.report()
    );
    assert_eq!(a.bytes(), 0, "{what}");
    let seen = b.requests();
    assert_eq!(seen.len(), 1, "{what}");
    assert_eq!(seen[0].start_line(), "GET /x HTTP/1.1", "{what}");
    assert_eq!(seen[0].headers("host"), ["b.localhost"], "{what}");
    assert_eq!(status(&r), 200, "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trailing_dot_upper_case_or_a_port_in_host_routes_alike() {
    let (other, web) = (Upstream::named("ok").await, Upstream::named("ok").await);
    // `other` is another app on the same port: a host that does not
    // match `web` would go there, or to nobody.
    let proxy = TestProxy::start_listening("hostnorm").await;
    proxy.route_by_host("other", vec![other.addr]).await;
    proxy.route_by_host("web", vec![web.addr]).await;
    let mut wrong = Vec::new();
    for host in ["web.localhost", "web.localhost.", "WEB.localhost:1234"] {
        let before = web.requests().len();
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let r = exchange(&proxy.addr(), request.as_bytes()).await;
        tokio::time::sleep(SETTLE).await;
        if status(&r) != 200 || web.requests().len() != before + 1 {
            wrong.push(format!(
                "Host: {host}: client got {:?}\nweb: {}\nother: {}",
                line(&r),
                web.report(),
                other.report()
            ));
        }
    }
    assert_all_right(&wrong);
}

// ---------------------------------------------------------------------------
// No replays (RFC 9110 §9.2.2).

/// An app that counts `POST /work` requests and closes the connection on
/// them unanswered; it answers everything else, keep-alive.
async fn closing_on_work() -> (Upstream, Arc<Mutex<usize>>) {
    let count = Arc::new(Mutex::new(0));
    let counted = count.clone();
    let up = Upstream::with(move |seen| {
        if seen.start_line().starts_with("POST /work ") {
            *counted.lock().unwrap() += 1;
            return None;
        }
        Some(fixed(b"ok"))
    })
    .await;
    (up, count)
}

/// On one keep-alive client connection, `warm` requests (each answered 200,
/// leaving pooled upstream connections), then `work`: with one replica and
/// then with two, the app(s) must have seen `work` exactly once, and the
/// client a 502.
async fn assert_not_replayed(tag: &str, warm: &[&[u8]], work: &[u8]) {
    let mut wrong = Vec::new();
    for replicas in [1, 2] {
        let mut apps = Vec::new();
        for _ in 0..replicas {
            apps.push(closing_on_work().await);
        }
        let proxy = edge(
            &format!("{tag}{replicas}"),
            "work",
            apps.iter().map(|(up, _)| up.addr).collect(),
        )
        .await;
        let mut c = Conn::open(&proxy.addr()).await;
        let mut warmed = true;
        for request in warm {
            c.send(request).await;
            let r = c.response().await;
            if status(&r) != 200 {
                wrong.push(format!("{replicas} replicas: warm-up got {:?}", line(&r)));
                warmed = false;
                break;
            }
        }
        if !warmed {
            continue;
        }
        c.send(work).await;
        let r = c.response().await;
        tokio::time::sleep(SETTLE).await;
        let counts: Vec<usize> = apps.iter().map(|(_, n)| *n.lock().unwrap()).collect();
        if counts.iter().sum::<usize>() != 1 || status(&r) != 502 {
            let reports: Vec<String> = apps.iter().map(|(up, _)| up.report()).collect();
            wrong.push(format!(
                "{replicas} replicas: POST /work seen {counts:?} times, client got {:?}\n{}",
                line(&r),
                reports.join("\n")
            ));
        }
    }
    assert_all_right(&wrong);
}

const WARM_GET: &[u8] = b"GET / HTTP/1.1\r\nHost: work.localhost\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_never_replayed_on_the_fast_path() {
    assert_not_replayed(
        "replay-fast",
        &[WARM_GET, WARM_GET],
        b"POST /work HTTP/1.1\r\nHost: work.localhost\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_post_is_never_replayed_on_hypers_path() {
    let chunked = |path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: work.localhost\r\nTransfer-Encoding: chunked\r\n\r\n\
             5\r\nhello\r\n0\r\n\r\n"
        )
        .into_bytes()
    };
    let warm = chunked("/");
    assert_not_replayed(
        "replay-chunked",
        &[WARM_GET, &warm, &warm],
        &chunked("/work"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_expecting_100_continue_is_never_replayed() {
    let expect = |path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: work.localhost\r\nExpect: 100-continue\r\n\
             Content-Length: 5\r\n\r\nhello"
        )
        .into_bytes()
    };
    let warm = expect("/");
    assert_not_replayed("replay-expect", &[WARM_GET, &warm, &warm], &expect("/work")).await;
}

// ---------------------------------------------------------------------------
// Upstreams that close before any byte.

/// 50 sequential GETs with a good replica and one that `closing_upstream`
/// serves: all 200, and the bad one ejected.
async fn assert_closing_replica_is_retried_and_ejected(tag: &str, reset: bool) {
    let (good, bad) = (Upstream::named("ok").await, closing_upstream(reset).await);
    let proxy = edge(tag, "edge", vec![good.addr, bad]).await;
    let mut failed = Vec::new();
    for i in 0..50 {
        let r = exchange(
            &proxy.addr(),
            format!("GET /{i} HTTP/1.1\r\nHost: edge.localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        if status(&r) != 200 {
            failed.push(format!("GET /{i}: {}", line(&r)));
        }
    }
    let stats = proxy.stats("edge", Color::Blue).await;
    assert!(
        failed.is_empty(),
        "{} of 50 failed: {failed:?}\n{stats:?}",
        failed.len()
    );
    assert_eq!(stats.ejected, vec![bad], "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_accepts_and_closes_is_retried_around_and_ejected() {
    assert_closing_replica_is_retried_and_ejected("acceptclose", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_accepts_and_resets_is_retried_around_and_ejected() {
    assert_closing_replica_is_retried_and_ejected("acceptreset", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_upgrade_is_not_carried_and_smuggles_nothing() {
    let up = Upstream::named("ok").await;
    let proxy = edge("h2c", "edge", vec![up.addr]).await;
    let mut c = Conn::open(&proxy.addr()).await;
    c.send(
        b"GET / HTTP/1.1\r\nHost: edge.localhost\r\nConnection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    let first = c.response().await;
    assert_eq!(
        status(&first),
        200,
        "answered as plain HTTP/1.1: {}",
        line(&first)
    );
    c.send(b"GET /admin HTTP/1.1\r\nHost: edge.localhost\r\n\r\n")
        .await;
    let second = c.response().await;
    assert_eq!(status(&second), 200, "{}", line(&second));
    tokio::time::sleep(SETTLE).await;
    let seen = up.requests();
    assert_eq!(seen.len(), 2, "{}", up.report());
    for s in &seen {
        assert!(s.headers("upgrade").is_empty(), "{}", up.report());
        assert!(s.headers("http2-settings").is_empty(), "{}", up.report());
        assert_eq!(
            s.headers("x-request-id").len(),
            1,
            "through the proxy: {}",
            up.report()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_to_a_protocol_the_client_did_not_ask_for_is_refused() {
    let up = Upstream::answering(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n",
    )
    .await;
    let proxy = edge("badswitch", "edge", vec![up.addr]).await;
    let r = exchange(&proxy.addr(), ws_hello("edge.localhost").as_bytes()).await;
    assert_eq!(status(&r), 502, "{}", line(&r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_codings_other_than_chunked_are_refused_both_ways() {
    // Requests: 501 (RFC 9112 §6.1), nothing at the upstream.
    let up = Upstream::named("ok").await;
    let proxy = edge("codings", "edge", vec![up.addr]).await;
    let mut wrong = Vec::new();
    for te in [
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked, chunked\r\n",
    ] {
        let request =
            format!("POST / HTTP/1.1\r\nHost: edge.localhost\r\n{te}\r\n5\r\nhello\r\n0\r\n\r\n");
        let r = exchange(&proxy.addr(), request.as_bytes()).await;
        if status(&r) != 501 {
            wrong.push(format!("{te:?}: {}", line(&r)));
        }
    }
    tokio::time::sleep(SETTLE).await;
    assert_eq!(up.bytes(), 0, "{}", up.report());
    assert_all_right(&wrong);
    let stats = proxy.stats("edge", Color::Blue).await;
    assert_eq!(
        stats.status_5xx, 0,
        "a client's 501 is not the app's: {stats:?}"
    );

    // Responses: a coding the proxy would lose when it frames the body
    // again is the upstream's fault, on both paths.
    let gzip = Upstream::answering(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let proxy = edge("codings-up", "edge", vec![gzip.addr]).await;
    for request in [
        &b"GET / HTTP/1.1\r\nHost: edge.localhost\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: edge.localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let r = exchange(&proxy.addr(), request).await;
        assert_eq!(status(&r), 502, "{}", line(&r));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_length_reaches_the_client_on_a_204() {
    let up = Upstream::answering(b"HTTP/1.1 204 No Content\r\nContent-Length: 44\r\n\r\n").await;
    let proxy = edge("nolength", "edge", vec![up.addr]).await;
    for first in [
        &b"GET / HTTP/1.1\r\nHost: edge.localhost\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: edge.localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let mut c = Conn::open(&proxy.addr()).await;
        c.send(first).await;
        let r = c.response().await.expect("a response");
        assert_eq!(r.status, 204, "{}", r.head);
        assert!(r.headers("content-length").is_empty(), "{}", r.head);
        c.send(b"GET /2 HTTP/1.1\r\nHost: edge.localhost\r\n\r\n")
            .await;
        let next = c.response().await.expect("the next response");
        assert_eq!(next.status, 204, "{}", next.head);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_a_reverse_proxy_does_not_serve_are_refused() {
    let up = Upstream::named("ok").await;
    let proxy = edge("targets", "edge", vec![up.addr]).await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "a port past 65535",
            b"GET / HTTP/1.1\r\nHost: edge.localhost:99999\r\n\r\n".to_vec(),
        ),
        (
            "the authority form on GET",
            b"GET edge.localhost:80 HTTP/1.1\r\nHost: edge.localhost\r\n\r\n".to_vec(),
        ),
        (
            "an ftp URL",
            b"GET ftp://edge.localhost/x HTTP/1.1\r\nHost: edge.localhost\r\n\r\n".to_vec(),
        ),
    ];
    assert_all_right(&refused(&proxy, "edge", &cases).await);
}
