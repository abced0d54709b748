//! The cyan proxy on its own: the real `cyan proxy run` process, driven
//! through its admin socket, in front of small in-test backends on 127.0.0.1
//! that answer with their color. Every load is bounded.

mod util;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cyan::proxy::api::RouteSpec;
use cyan::proxy::state::{ActiveCheck, Maintenance, RoutePolicy, TlsFiles};
use cyan::proxy::Home;
use cyan::release::Color;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use util::load::{self, assert_none_failed, Load};
use util::proxy::{body, get, host_route, raw, spawn_proxy, TestProxy, Ws};
use util::tls::{connector, self_signed};
use util::upstream::answering;
use util::{free_port, wait};

/// A backend answering `GET /` with its name, `/slow` after 3 s, `/echo-headers`
/// with the request's headers, and WebSocket upgrades with an echo that
/// prefixes each message with its name.
async fn backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = service_fn(move |req| answer(name, req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

async fn answer(
    name: &'static str,
    mut req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    if req.headers().contains_key(hyper::header::UPGRADE) {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                echo_frames(name, TokioIo::new(upgraded)).await;
            }
        });
        return Ok(Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", "test")
            .body(Full::default())
            .unwrap());
    }
    if req.uri().path() == "/healthz" && name.starts_with("sick") {
        let mut r = Response::new(Full::new(Bytes::from_static(b"sick")));
        *r.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
        return Ok(r);
    }
    let body = match req.uri().path() {
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            name.to_string()
        }
        "/echo-headers" => req
            .headers()
            .iter()
            .map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or("?")))
            .collect(),
        "/echo-body" => {
            let sent = req.into_body().collect().await?.to_bytes();
            return Ok(Response::new(Full::new(sent)));
        }
        _ => name.to_string(),
    };
    Ok(Response::new(Full::new(Bytes::from(body))))
}

/// Server side of the test WebSocket: small masked frames in, unmasked out.
async fn echo_frames(name: &str, mut io: TokioIo<hyper::upgrade::Upgraded>) {
    loop {
        let mut head = [0u8; 2];
        if io.read_exact(&mut head).await.is_err() {
            return;
        }
        let len = usize::from(head[1] & 0x7f);
        let mut mask = [0u8; 4];
        if head[1] & 0x80 != 0 && io.read_exact(&mut mask).await.is_err() {
            return;
        }
        let mut payload = vec![0u8; len];
        if io.read_exact(&mut payload).await.is_err() {
            return;
        }
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        if head[0] & 0x0f == 0x8 {
            return; // close
        }
        let reply = format!("{name}:{}", String::from_utf8_lossy(&payload));
        let mut frame = vec![0x81, reply.len() as u8];
        frame.extend_from_slice(reply.as_bytes());
        if io.write_all(&frame).await.is_err() {
            return;
        }
    }
}

/// A GET of `url` over HTTP/2 on `io` (prior knowledge, or ALPN's
/// choice): the response, its body still to read.
async fn h2_get<IO>(io: IO, url: &str) -> Response<hyper::body::Incoming>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(io),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = Request::get(url).body(Full::<Bytes>::default()).unwrap();
    send.send_request(req).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_on_blue_survives_a_switch_until_the_drain_deadline() {
    let proxy = TestProxy::start("ws").await;
    let (blue, green) = (backend("blue").await, backend("green").await);
    let drain = Duration::from_millis(2000);
    let policy = RoutePolicy {
        drain_timeout_ms: drain.as_millis() as u64,
        // No spread: every tunnel stays until the deadline itself.
        drain_spread_ms: Some(0),
        ..RoutePolicy::default()
    };
    proxy.route("ws", policy, vec![blue], vec![green]).await;
    let mut ws = Ws::open(&proxy.addr(), "ws.localhost").await;
    ws.send("hi").await;
    assert_eq!(ws.recv().await, (1, b"blue:hi".to_vec()));

    // The deadline starts when the new table is published, inside the call.
    let switched = Instant::now();
    proxy.switch("ws", Color::Green, None).await;
    assert_eq!(
        body(&get(&proxy.addr(), "ws.localhost", "/").await),
        "green"
    );
    // Still open on blue, well into the drain window.
    tokio::time::sleep(drain / 2).await;
    ws.send("still").await;
    assert_eq!(ws.recv().await, (1, b"blue:still".to_vec()));

    // At the deadline: a close frame with 1001 (going away), not a reset.
    let (op, payload) = tokio::time::timeout(drain * 2, ws.recv())
        .await
        .expect("closed by the deadline");
    let closed = switched.elapsed();
    assert_eq!(op, 0x8, "a close frame");
    assert_eq!(payload, [0x03, 0xE9], "status 1001");
    assert!(
        closed >= drain,
        "closed after {closed:?}, before the {drain:?} deadline"
    );
    assert!(
        closed < drain + Duration::from_secs(2),
        "closed late: {closed:?}"
    );
    // A new WebSocket lands on green.
    let mut ws = Ws::open(&proxy.addr(), "ws.localhost").await;
    ws.send("new").await;
    assert_eq!(ws.recv().await, (1, b"green:new".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_inside_the_drain_window_keeps_blues_websockets() {
    let proxy = TestProxy::start("wsback").await;
    let (blue, green) = (backend("blue").await, backend("green").await);
    let policy = RoutePolicy {
        drain_timeout_ms: 800,
        // No spread: a spread window as long as this drain could end the
        // socket right at the switch.
        drain_spread_ms: Some(0),
        ..RoutePolicy::default()
    };
    proxy.route("wsback", policy, vec![blue], vec![green]).await;
    let mut ws = Ws::open(&proxy.addr(), "wsback.localhost").await;
    proxy.switch("wsback", Color::Green, None).await;
    proxy.switch("wsback", Color::Blue, None).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ws.send("kept").await;
    assert_eq!(ws.recv().await, (1, b"blue:kept".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_switches_under_load_fail_nothing_and_order_holds() {
    let proxy = TestProxy::start("flip").await;
    let (blue, green) = (backend("blue").await, backend("green").await);
    proxy
        .route("flip", RoutePolicy::default(), vec![blue], vec![green])
        .await;
    let load = Load::start(proxy.port, "flip.localhost", 4, 2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut switches = Vec::new();
    for i in 0..60 {
        let color = if i % 2 == 0 {
            Color::Green
        } else {
            Color::Blue
        };
        let began = Instant::now();
        proxy.switch("flip", color, None).await;
        switches.push((began, Instant::now(), color));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let samples = load.finish().await;
    assert!(samples.len() > 500, "only {} requests", samples.len());
    assert_none_failed(&samples, "across the switches");
    // Ordering: a request that started after a switch call returned, and
    // ended before the next call began, is answered by the color switched to.
    let mut checked = 0;
    for s in &samples {
        let Some(i) = switches.iter().rposition(|(_, done, _)| *done < s.start) else {
            continue;
        };
        if switches
            .get(i + 1)
            .is_some_and(|(next, _, _)| *next < s.end)
        {
            continue; // the next switch began while it ran
        }
        checked += 1;
        let want = switches[i].2.to_string();
        assert_eq!(
            s.outcome.as_ref().unwrap(),
            &want,
            "request started {:?} after switch {i} returned, took {:?}",
            s.start - switches[i].1,
            s.end - s.start
        );
    }
    assert!(
        checked > samples.len() / 3,
        "only {checked} requests fell between switches"
    );
    eprintln!(
        "{} requests across {} switches, 0 failed; {checked} checked for ordering",
        samples.len(),
        switches.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_answered_and_never_fatal() {
    let proxy = TestProxy::start("bad").await;
    let good = backend("blue").await;
    // Free, and nothing listens there: connections are refused.
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let policy = RoutePolicy {
        response_timeout_ms: 500,
        eject_after: 2,
        eject_for_ms: 60_000,
        ..RoutePolicy::default()
    };
    proxy
        .route("bad", policy.clone(), vec![good], vec![dead])
        .await;
    let addr = proxy.addr();

    let r = raw(&addr, b"THIS IS NOT HTTP\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: bad.localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(512 * 1024)
    );
    let r = raw(&addr, huge.as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{}", &r[..r.len().min(200)]);
    let r = get(&addr, "bad.localhost", "/slow").await;
    assert!(r.starts_with("HTTP/1.1 504"), "{r}");
    assert!(r.to_ascii_lowercase().contains("x-request-id:"), "{r}");

    // Only the dead upstream: 502.
    proxy.switch("bad", Color::Green, None).await;
    let r = get(&addr, "bad.localhost", "/").await;
    assert!(r.starts_with("HTTP/1.1 502"), "{r}");

    // Blue with a dead replica beside the good one: the retry hides it from
    // clients, and passive health takes it out of rotation.
    proxy
        .switch("bad", Color::Blue, Some(vec![good, dead]))
        .await;
    for _ in 0..10 {
        let r = get(&addr, "bad.localhost", "/").await;
        assert_eq!(body(&r), "blue", "{r}");
    }
    let view = proxy.admin().route("bad").await.unwrap().unwrap();
    assert_eq!(view.stats[&Color::Blue].ejected, vec![dead], "{view:?}");

    // Maintenance: 503 with Retry-After, then back.
    let m = Maintenance {
        retry_after_s: 120,
        message: Some("back soon".into()),
    };
    proxy.admin().set_maintenance("bad", Some(m)).await.unwrap();
    let r = get(&addr, "bad.localhost", "/").await;
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    assert!(r.to_ascii_lowercase().contains("retry-after: 120"), "{r}");
    assert!(body(&r).starts_with("back soon"), "{r}");
    proxy.admin().set_maintenance("bad", None).await.unwrap();
    assert_eq!(body(&get(&addr, "bad.localhost", "/").await), "blue");

    // Nothing leaks: after two hundred bad requests, no claim is held and
    // the proxy holds no more file descriptors than before.
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", proxy.child.id()))
            .unwrap()
            .count()
    };
    let before = fds();
    for i in 0..200 {
        let _ = match i % 20 {
            0 => get(&addr, "bad.localhost", "/slow").await,
            n if n % 2 == 0 => raw(&addr, b"NOT HTTP\r\n\r\n").await,
            _ => raw(&addr, huge.as_bytes()).await,
        };
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let view = proxy.admin().route("bad").await.unwrap().unwrap();
    assert!(view.stats.values().all(|s| s.inflight == 0), "{view:?}");
    let after = fds();
    assert!(after <= before + 4, "file descriptors {before} -> {after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_request_ids_path_prefixes_and_h2c() {
    let proxy = TestProxy::start("hdr").await;
    let (web, api) = (backend("web").await, backend("api").await);
    proxy
        .route("hdr", RoutePolicy::default(), vec![web], vec![])
        .await;
    let admin = proxy.admin();
    let spec = RouteSpec {
        path_prefix: Some("/api".into()),
        ..host_route(&["hdr.localhost"])
    };
    admin.put_route("hdr-api", &spec).await.unwrap();
    proxy.switch("hdr-api", Color::Blue, Some(vec![api])).await;
    let addr = proxy.addr();
    assert_eq!(body(&get(&addr, "hdr.localhost", "/").await), "web");
    assert_eq!(body(&get(&addr, "hdr.localhost", "/apix").await), "web");
    assert_eq!(body(&get(&addr, "hdr.localhost", "/api").await), "api");
    assert_eq!(
        body(&get(&addr, "hdr.localhost", "/api/users").await),
        "api"
    );

    let r = raw(
        &addr,
        b"GET /echo-headers HTTP/1.1\r\nHost: hdr.localhost\r\nX-Request-Id: abc-123\r\n\
          Connection: close, x-hop\r\nX-Hop: secret\r\n\r\n",
    )
    .await;
    let seen = body(&r);
    assert!(seen.contains("x-request-id: abc-123"), "{seen}");
    assert!(seen.contains("x-forwarded-for: 127.0.0.1"), "{seen}");
    assert!(seen.contains("x-forwarded-proto: http"), "{seen}");
    assert!(seen.contains("x-forwarded-host: hdr.localhost"), "{seen}");
    assert!(!seen.contains("x-hop"), "hop-by-hop header leaked: {seen}");
    assert!(
        r.to_ascii_lowercase().contains("x-request-id: abc-123"),
        "{r}"
    );

    // HTTP/2 with prior knowledge (h2c).
    let stream = TcpStream::connect(&addr).await.unwrap();
    let url = format!("http://hdr.localhost:{}/api/x", proxy.port);
    let resp = h2_get(stream, &url).await;
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    let b = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&b[..], b"api");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_and_keep_alive_through_the_http1_fast_path() {
    let proxy = TestProxy::start("body").await;
    let echo = backend("blue").await;
    proxy
        .route("body", RoutePolicy::default(), vec![echo], vec![])
        .await;
    let addr = proxy.addr();

    // A 1 MiB request body streams up and back, then a pipelined request
    // on the same connection is answered in turn.
    let big: Vec<u8> = (0..1 << 20).map(|i| b'a' + (i % 26) as u8).collect();
    let mut two = format!(
        "POST /echo-body HTTP/1.1\r\nHost: body.localhost\r\nContent-Length: {}\r\n\r\n",
        big.len()
    )
    .into_bytes();
    two.extend_from_slice(&big);
    two.extend_from_slice(b"GET / HTTP/1.1\r\nHost: body.localhost\r\nConnection: close\r\n\r\n");
    let r = raw(&addr, &two).await;
    let first_body = r.find("\r\n\r\n").unwrap() + 4;
    assert!(
        r[first_body..].starts_with(std::str::from_utf8(&big).unwrap()),
        "the echoed body"
    );
    let second = &r[first_body + big.len()..];
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert_eq!(body(second), "blue");
    assert_eq!(r.matches("HTTP/1.1 200").count(), 2);

    // HEAD: a head and no body, and the connection goes on.
    let r = raw(
        &addr,
        b"HEAD / HTTP/1.1\r\nHost: body.localhost\r\n\r\n\
          GET / HTTP/1.1\r\nHost: body.localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.matches("HTTP/1.1 200").count(), 2, "{r}");
    assert!(r.ends_with("\r\n\r\nblue"), "{r}");

    // A chunked response passes through as chunked, and the upstream
    // connection is reused after its last chunk.
    let chunked = answering(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n6;x=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
        false,
    )
    .await;
    proxy
        .switch("body", Color::Green, Some(vec![chunked]))
        .await;
    let r = raw(
        &addr,
        b"GET /1 HTTP/1.1\r\nHost: body.localhost\r\n\r\n\
          GET /2 HTTP/1.1\r\nHost: body.localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    let lower = r.to_ascii_lowercase();
    assert_eq!(
        lower.matches("transfer-encoding: chunked").count(),
        2,
        "{r}"
    );
    assert_eq!(
        r.matches("5\r\nhello\r\n6;x=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
            .count(),
        2,
        "{r}"
    );

    // No length and no chunks: the body runs to the upstream's close. The
    // client gets it in chunks, so its end (or a cut) shows, and keeps its
    // connection for the next request.
    let until_close = answering(b"HTTP/1.1 200 OK\r\n\r\nall of it", true).await;
    proxy
        .switch("body", Color::Blue, Some(vec![until_close]))
        .await;
    let r = raw(
        &addr,
        b"GET / HTTP/1.1\r\nHost: body.localhost\r\n\r\n\
          GET / HTTP/1.1\r\nHost: body.localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.matches("HTTP/1.1 200").count(), 2, "{r}");
    assert_eq!(
        r.to_ascii_lowercase()
            .matches("transfer-encoding: chunked\r\n")
            .count(),
        2,
        "{r}"
    );
    assert_eq!(
        r.matches("\r\n\r\n9\r\nall of it\r\n0\r\n\r\n").count(),
        2,
        "{r}"
    );
    let view = proxy.admin().route("body").await.unwrap().unwrap();
    assert!(view.stats.values().all(|s| s.inflight == 0), "{view:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_under_load_fails_nothing() {
    let mut proxy = TestProxy::start("upg").await;
    let (blue, green) = (backend("blue").await, backend("green").await);
    proxy
        .route("upg", RoutePolicy::default(), vec![blue], vec![green])
        .await;
    let load = Load::start(proxy.port, "upg.localhost", 4, 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = proxy.upgrade().await;
    // The old process drains its keep-alive connections and exits.
    proxy.wait_old_exited().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The successor serves and accepts route changes.
    assert_eq!(proxy.admin().health().await.unwrap().pid, r.new_pid);
    proxy.switch("upg", Color::Green, None).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let samples = load.finish().await;
    assert!(samples.len() > 200, "only {} requests", samples.len());
    assert_none_failed(&samples, "across the upgrade");
    assert_eq!(samples.last().unwrap().outcome.as_deref(), Ok("green"));
    eprintln!(
        "{} requests across a proxy upgrade, 0 failed",
        samples.len()
    );
}

/// A switch made on the successor right after `cyan proxy upgrade` returns
/// holds for every request that starts after the switch returns: none of
/// them is answered from the old process's frozen table, whether it comes
/// on a fresh connection, on a keep-alive connection the old process
/// accepted before the upgrade (idle since), or on one opened the moment
/// the upgrade returned; and no request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_right_after_an_upgrade_holds_for_every_later_request() {
    let mut proxy = TestProxy::start("upgsw").await;
    let (blue, green) = (backend("blue").await, backend("green").await);
    proxy
        .route("upgsw", RoutePolicy::default(), vec![blue], vec![green])
        .await;
    let (port, host) = (proxy.port, "upgsw.localhost");
    let traffic = Load::start(port, host, 2, 2);
    let (idle, fresh) = (load::client(true), load::client(true));
    let mut mine = vec![load::get(&idle, port, host).await];
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.upgrade().await;
    mine.push(load::get(&fresh, port, host).await);
    let asked = Instant::now();
    proxy.switch("upgsw", Color::Green, None).await;
    let switched = Instant::now();
    for _ in 0..10 {
        mine.push(load::get(&idle, port, host).await);
        mine.push(load::get(&fresh, port, host).await);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut samples = traffic.finish().await;
    samples.extend(mine);
    assert_none_failed(&samples, "across the upgrade and the switch");
    let after: Vec<_> = samples.iter().filter(|s| s.start >= switched).collect();
    assert!(
        after.len() > 50,
        "only {} requests after the switch",
        after.len()
    );
    let stale: Vec<_> = after
        .iter()
        .filter(|s| s.outcome.as_deref() != Ok("green"))
        .map(|s| (s.start - switched, s.outcome.clone()))
        .collect();
    assert!(
        stale.is_empty(),
        "{} of {} requests that started after the switch returned were not \
         routed by it: {:?} ... {:?}",
        stale.len(),
        after.len(),
        &stale[..stale.len().min(4)],
        stale.last()
    );
    // The old process still drains and exits.
    proxy.wait_old_exited().await;
    eprintln!(
        "{} requests across an upgrade and a switch (which took {:?}), {} after it, \
         all green, 0 failed",
        samples.len(),
        switched - asked,
        after.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upgrade_changes_nothing() {
    let proxy = TestProxy::start("upgfail").await;
    let blue = backend("blue").await;
    proxy
        .route("upgfail", RoutePolicy::default(), vec![blue], vec![])
        .await;
    let e = proxy
        .admin()
        .upgrade(std::path::Path::new("/bin/false"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("exited at start"), "{e}");
    assert_eq!(proxy.admin().health().await.unwrap().pid, proxy.child.id());
    proxy.switch("upgfail", Color::Blue, None).await;
    assert_eq!(
        body(&get(&proxy.addr(), "upgfail.localhost", "/").await),
        "blue"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_survive_kill_9_of_the_proxy() {
    let mut proxy = TestProxy::start("k9").await;
    let (blue, green) = (backend("blue").await, backend("green").await);
    proxy
        .route("k9", RoutePolicy::default(), vec![blue], vec![green])
        .await;
    proxy.switch("k9", Color::Green, None).await;
    proxy.kill9();
    proxy.child = spawn_proxy(&proxy.home, &[]);
    proxy.wait_ready().await;
    let view = proxy.admin().route("k9").await.unwrap().unwrap();
    assert_eq!(view.state.live, Some(Color::Green));
    assert_eq!(
        body(&get(&proxy.addr(), "k9.localhost", "/").await),
        "green"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_access_is_the_owners_socket_or_a_bearer_token() {
    use std::os::unix::fs::PermissionsExt;
    let token_dir = std::env::temp_dir().join(format!("cyan-token-{}", std::process::id()));
    std::fs::create_dir_all(&token_dir).unwrap();
    let token_file = token_dir.join("token");
    let token = "t0ken-for-the-admin-api-0123";
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let admin_addr = format!("127.0.0.1:{}", free_port());
    let proxy = TestProxy::start_with(
        "perm",
        &[
            "--admin-listen",
            &admin_addr,
            "--admin-token-file",
            token_file.to_str().unwrap(),
        ],
    )
    .await;
    let socket = Home {
        dir: proxy.home.clone(),
    }
    .socket();
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    let dir_mode = std::fs::metadata(&proxy.home).unwrap().permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o700, "home mode {dir_mode:o}");

    let health = |auth: &str| {
        format!("GET /v1/health HTTP/1.1\r\nHost: admin\r\n{auth}Connection: close\r\n\r\n")
    };
    let r = raw(&admin_addr, health("").as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 401"), "no token: {r}");
    let r = raw(
        &admin_addr,
        health("Authorization: Bearer wrong-token-000000000\r\n").as_bytes(),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 401"), "wrong token: {r}");
    let r = raw(
        &admin_addr,
        health(&format!("Authorization: Bearer {token}\r\n")).as_bytes(),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "right token: {r}");
    assert!(
        body(&r).contains(&format!("\"pid\":{}", proxy.child.id())),
        "{r}"
    );
    std::fs::remove_dir_all(token_dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_metrics_count_per_app_and_color() {
    let metrics = format!("127.0.0.1:{}", free_port());
    let proxy = TestProxy::start_with("metrics", &["--metrics", &metrics]).await;
    let (blue, green) = (backend("blue").await, backend("green").await);
    proxy
        .route("m", RoutePolicy::default(), vec![blue], vec![green])
        .await;
    for _ in 0..5 {
        assert_eq!(body(&get(&proxy.addr(), "m.localhost", "/").await), "blue");
    }
    let r = get(&metrics, "localhost", "/metrics").await;
    let text = body(&r);
    for line in [
        r#"cyan_proxy_requests_total{app="m",color="blue",class="2xx"} 5"#,
        r#"cyan_proxy_requests_total{app="m",color="green",class="2xx"} 0"#,
        r#"cyan_proxy_request_duration_seconds_count{app="m",color="blue"} 5"#,
        r#"cyan_proxy_request_duration_seconds_bucket{le="+Inf",app="m",color="blue"} 5"#,
        r#"cyan_proxy_live{app="m",color="blue"} 1"#,
        r#"cyan_proxy_live{app="m",color="green"} 0"#,
    ] {
        assert!(text.contains(line), "missing {line}:\n{text}");
    }
    let view = proxy.admin().route("m").await.unwrap().unwrap();
    assert!(view.stats[&Color::Blue].p99_latency_ms > 0.0, "{view:?}");

    let out = Command::new(env!("CARGO_BIN_EXE_cyan"))
        .args(["proxy", "run", "--metrics", "0.0.0.0:9464", "--home"])
        .arg(proxy.home.join("other"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_termination_with_h2_over_alpn() {
    use rustls::pki_types::pem::PemObject;
    let proxy = TestProxy::start("tls").await;
    let files = self_signed(&proxy.home.join("certs"), "tls.localhost");
    let app = backend("blue").await;
    let spec = RouteSpec {
        listen: Some(proxy.addr().parse().unwrap()),
        tls: Some(files.clone().into()),
        ..host_route(&["tls.localhost"])
    };
    proxy.admin().put_route("tls", &spec).await.unwrap();
    proxy.switch("tls", Color::Blue, Some(vec![app])).await;

    let roots: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(&files.cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let tcp = TcpStream::connect(proxy.addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("tls.localhost").unwrap();
    let tls = connector(&roots, &[b"h2", b"http/1.1"])
        .connect(name, tcp)
        .await
        .expect("handshake with the route's certificate");
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "h2 by ALPN"
    );
    let url = format!("https://tls.localhost:{}/echo-headers", proxy.port);
    let resp = h2_get(tls, &url).await;
    assert_eq!(resp.status(), 200);
    let seen = resp.into_body().collect().await.unwrap().to_bytes();
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.contains("x-forwarded-proto: https"), "{seen}");

    // A route whose files are missing is refused with the file named.
    let mut bad = spec.clone();
    bad.listen = None;
    bad.tls = Some(
        TlsFiles {
            cert: proxy.home.join("nope.pem"),
            key: files.key.clone(),
        }
        .into(),
    );
    let e = proxy
        .admin()
        .put_route("tls2", &bad)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.pem"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_requests_wait_for_the_switch_and_go_to_the_new_color() {
    let proxy = TestProxy::start("hold").await;
    let (blue, green) = (backend("blue").await, backend("green").await);
    proxy
        .route("hold", RoutePolicy::default(), vec![blue], vec![green])
        .await;
    let admin = proxy.admin();
    admin
        .hold("hold", Some(Duration::from_secs(10)))
        .await
        .unwrap();
    let addr = proxy.addr();
    let started = Instant::now();
    let held: Vec<_> = (0..10)
        .map(|_| {
            let addr = addr.clone();
            tokio::spawn(async move { (get(&addr, "hold.localhost", "/").await, Instant::now()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let switched = Instant::now();
    proxy.switch("hold", Color::Green, None).await;
    for h in held {
        let (resp, done) = h.await.unwrap();
        assert_eq!(body(&resp), "green", "{resp}");
        assert!(done >= switched, "answered before the switch");
    }
    assert!(started.elapsed() < Duration::from_secs(5));

    // A hold with no switch ends at its deadline: requests go to what is live.
    admin
        .hold("hold", Some(Duration::from_millis(400)))
        .await
        .unwrap();
    let t = Instant::now();
    assert_eq!(body(&get(&addr, "hold.localhost", "/").await), "green");
    assert!(
        t.elapsed() >= Duration::from_millis(350),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_checks_take_a_sick_replica_out_of_rotation() {
    let proxy = TestProxy::start("active").await;
    let (good, sick) = (backend("good").await, backend("sick").await);
    let policy = RoutePolicy {
        active_check: Some(ActiveCheck {
            path: "/healthz".into(),
            interval_ms: 1000,
        }),
        ..RoutePolicy::default()
    };
    proxy
        .route("active", policy, vec![good, sick], vec![])
        .await;
    let view = async || proxy.admin().route("active").await.unwrap().unwrap();
    wait::until_async(
        "the sick replica to be ejected",
        Duration::from_secs(10),
        Duration::from_millis(100),
        async || (view().await.stats[&Color::Blue].ejected == vec![sick]).then_some(()),
        async || format!("{:?}", view().await),
    )
    .await;
    for _ in 0..10 {
        assert_eq!(
            body(&get(&proxy.addr(), "active.localhost", "/").await),
            "good"
        );
    }
}

/// `/cyan/up`, where a load balancer checks a route on this host: 200 while
/// it serves, 503 while it is drained out of the balancer (and after a
/// restart, until put back), on the fast path and on hyper's (HTTP/2);
/// under a route's path prefix; never forwarded, and nothing else is
/// shadowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_balancers_up_check_says_draining_and_is_never_forwarded() {
    let mut proxy = TestProxy::start("up").await;
    let (blue, api) = (backend("blue").await, backend("api").await);
    proxy
        .route("up", RoutePolicy::default(), vec![blue], vec![])
        .await;
    let admin = proxy.admin();
    let spec = RouteSpec {
        path_prefix: Some("/api".into()),
        ..host_route(&["up.localhost"])
    };
    admin.put_route("up-api", &spec).await.unwrap();
    proxy.switch("up-api", Color::Blue, Some(vec![api])).await;
    let addr = proxy.addr();
    let status = |r: &str| r.split(' ').nth(1).unwrap_or("").to_string();
    let up = get(&addr, "up.localhost", "/cyan/up").await;
    assert_eq!(
        (status(&up).as_str(), body(&up).trim()),
        ("200", "up"),
        "{up}"
    );
    let api_up = get(&addr, "up.localhost", "/api/cyan/up").await;
    assert_eq!(body(&api_up).trim(), "up", "{api_up}");
    // Only the route's own check path is the proxy's.
    assert_eq!(
        body(&get(&addr, "up.localhost", "/x/cyan/up").await),
        "blue"
    );
    assert_eq!(body(&get(&addr, "up.localhost", "/cyan/upx").await), "blue");

    admin.set_draining("up", true).await.unwrap();
    let drained = get(&addr, "up.localhost", "/cyan/up?x=1").await;
    assert_eq!(
        (status(&drained).as_str(), body(&drained).trim()),
        ("503", "draining"),
        "{drained}"
    );
    // Requests that still come are served; the other route is still in.
    assert_eq!(body(&get(&addr, "up.localhost", "/").await), "blue");
    assert_eq!(
        body(&get(&addr, "up.localhost", "/api/cyan/up").await).trim(),
        "up"
    );
    // HTTP/2 (hyper's path) says the same.
    let stream = TcpStream::connect(&addr).await.unwrap();
    let url = format!("http://up.localhost:{}/cyan/up", proxy.port);
    let resp = h2_get(stream, &url).await;
    assert_eq!(resp.status(), 503);

    // Kept across a crash: a host drained stays out until put back.
    proxy.kill9();
    proxy.child = spawn_proxy(&proxy.home, &[]);
    proxy.wait_ready().await;
    assert_eq!(status(&get(&addr, "up.localhost", "/cyan/up").await), "503");
    proxy.admin().set_draining("up", false).await.unwrap();
    assert_eq!(
        body(&get(&addr, "up.localhost", "/cyan/up").await).trim(),
        "up"
    );

    // A live color with no replica in rotation (its only one ejected after
    // failed connects) is not up: the balancer takes the host out.
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let policy = RoutePolicy {
        eject_after: 1,
        eject_for_ms: 60_000,
        ..RoutePolicy::default()
    };
    let own = format!("127.0.0.1:{}", free_port());
    let spec = RouteSpec {
        policy,
        listen: Some(own.parse().unwrap()),
        ..host_route(&["down.localhost"])
    };
    proxy.put_live("down", &spec, vec![dead]).await;
    let up = get(&own, "down.localhost", "/cyan/up").await;
    assert_eq!(status(&up), "200", "not ejected yet: {up}");
    let failed = get(&own, "down.localhost", "/").await;
    assert_eq!(status(&failed), "502", "{failed}");
    let down = get(&own, "down.localhost", "/cyan/up").await;
    assert_eq!(
        (status(&down).as_str(), body(&down).trim()),
        ("503", "no replica in rotation"),
        "{down}"
    );
}

/// A log that cannot be written (the disk under the proxy's log is full)
/// takes nothing down: requests are answered, and an upstream that is gone
/// gets the 502 page, not a dropped connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_cannot_be_written_takes_nothing_down() {
    let (home, port) = TestProxy::new_home("full-log");
    let listen = format!("127.0.0.1:{port}");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let child = util::proxy::proxy_run(&home)
        .args(["--listen", &listen])
        .env("RUST_LOG", "debug")
        .stderr(full)
        .spawn()
        .unwrap();
    let proxy = TestProxy { home, port, child };
    proxy.wait_ready().await;
    let up = util::upstream::Upstream::named("alive").await;
    proxy.route_by_host("alive", vec![up.addr]).await;
    let gone = free_port();
    proxy
        .route_by_host("gone", vec![SocketAddr::from(([127, 0, 0, 1], gone))])
        .await;
    for _ in 0..3 {
        let answer = get(&proxy.addr(), "alive.localhost", "/").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let answer = get(&proxy.addr(), "gone.localhost", "/").await;
        assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    }
    proxy.admin().health().await.expect("still running");
}
