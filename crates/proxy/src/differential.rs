//! The differential fuzz target (`fuzz/fuzz_targets/fast_vs_hyper.rs`):
//! the HTTP/1.1 fast path is hand-written protocol code, so it is held to
//! a well-kept implementation. The same client bytes go through the proxy
//! twice, over loopback, to a recording upstream that hyper serves:
//! - as the proxy serves a plain-HTTP connection: the fast path, then hyper
//!   for whatever it hands over;
//! - through hyper's path alone.
//!
//! Both must bring the same requests to the upstream (method, target,
//! header set, framing, body), or both none. Header names compare without
//! case, and the set without order; framing compares by meaning (no
//! length and `Content-Length: 0` are the same empty body); a request id
//! that cyan made up is random, so only its presence compares.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::fast;
use super::forward::{ClientConn, Forwarder};
use super::prefixed::Prefixed;
use super::router::Router;
use super::timeouts::Timeouts;
use cyan_plan::release::Color;

/// One request as the upstream got it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub target: String,
    /// Lowercase names, sorted; framing headers and a made-up request id
    /// left out (see the module doc).
    pub headers: Vec<(String, Vec<u8>)>,
    /// `Some(n)`: a length (0 for none); `None`: chunked.
    pub length: Option<u64>,
    /// The body, or why it could not be read whole.
    pub body: Result<Vec<u8>, String>,
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    router: Arc<Router>,
    listener: std::net::TcpListener,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// Requests the upstream is still reading.
static READING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The request id cyan makes up when the client sent none (or a bad one).
const MADE_UP_ID: &[u8] = b"(made up)";

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let upstream = runtime.block_on(upstream(seen.clone()));
        let dir = std::env::temp_dir().join(format!("cyan-differential-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a state folder");
        let router = Arc::new(Router::restore(dir.join("proxy.json")).expect("a router"));
        router
            .change("f", true, |r| {
                r.hosts = vec!["f.test".into()];
                r.colors.insert(Color::Blue, vec![upstream.into()]);
                r.live = Some(Color::Blue);
                Ok(())
            })
            .expect("a route");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
        Harness {
            runtime,
            router,
            listener,
            seen,
        }
    })
}

/// Serves requests with hyper, recording each, answering `200 ok`.
async fn upstream(seen: Arc<Mutex<Vec<Seen>>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a listener");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| record(req, seen.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

async fn record(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    use std::sync::atomic::Ordering::SeqCst;
    READING.fetch_add(1, SeqCst);
    let (parts, body) = req.into_parts();
    let chunked = parts.headers.contains_key(hyper::header::TRANSFER_ENCODING);
    let length = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let mut headers: Vec<(String, Vec<u8>)> = parts
        .headers
        .iter()
        .filter(|(n, _)| {
            *n != hyper::header::CONTENT_LENGTH && *n != hyper::header::TRANSFER_ENCODING
        })
        .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
        .collect();
    headers.sort();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .map_err(|e| e.to_string());
    seen.lock().expect("seen lock").push(Seen {
        method: parts.method.to_string(),
        target: parts.uri.to_string(),
        headers,
        length: if chunked {
            None
        } else {
            Some(length.unwrap_or(0))
        },
        body,
    });
    READING.fetch_sub(1, SeqCst);
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

/// The requests `data` brings to the upstream through one of the paths.
pub fn upstream_requests(data: &[u8], fast_path: bool) -> Vec<Seen> {
    let h = harness();
    h.runtime.block_on(async {
        h.seen.lock().expect("seen lock").clear();
        let local = h.listener.local_addr().expect("an address");
        let mut talker = TcpStream::connect(local).await.expect("a connection");
        let (served, peer) = h.listener.accept().expect("a connection");
        served.set_nonblocking(true).expect("non-blocking");
        let served = TcpStream::from_std(served).expect("a tokio stream");
        let timeouts = Timeouts {
            header: Duration::from_secs(2),
            body: Duration::from_secs(2),
            idle: Duration::from_secs(2),
        };
        let forwarder = Arc::new(Forwarder::new(h.router.clone(), "http", timeouts));
        let client = Arc::new(ClientConn::new(forwarder, local, peer));
        let serve = async move {
            if fast_path {
                let (_tx, mut close_idle) = tokio::sync::watch::channel(false);
                if let fast::Ended::HandOff(io) =
                    fast::serve(served, &client, &mut close_idle).await
                {
                    let _ = crate::server::serve_hyper(io, client, None).await;
                }
            } else {
                let io = Prefixed::new(Bytes::new(), served);
                let _ = crate::server::serve_hyper(io, client, None).await;
            }
        };
        let talk = async move {
            let _ = talker.write_all(data).await;
            let _ = talker.shutdown().await;
            let mut answers = Vec::new();
            let _ = talker.read_to_end(&mut answers).await;
        };
        let limit = Duration::from_secs(5);
        let _ = tokio::time::timeout(limit, async { tokio::join!(serve, talk) }).await;
        // The upstream reads a body the proxy cut until it sees the close.
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_micros(200)).await;
            if READING.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                break;
            }
        }
        let mut seen = std::mem::take(&mut *h.seen.lock().expect("seen lock"));
        for s in &mut seen {
            for (name, value) in &mut s.headers {
                if name == "x-request-id" && !data_has(data, value) {
                    *value = MADE_UP_ID.to_vec();
                }
            }
        }
        seen
    })
}

fn data_has(data: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && data.windows(needle.len()).any(|w| w == needle)
}

/// The fuzz target: panics if the two paths bring different requests to
/// the upstream.
pub fn fast_vs_hyper(data: &[u8]) {
    let fast = upstream_requests(data, true);
    let hyper = upstream_requests(data, false);
    assert_eq!(
        fast,
        hyper,
        "the fast path and hyper's differ on {:?}",
        String::from_utf8_lossy(data)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smuggling_vectors_reach_the_upstream_alike_on_both_paths() {
        let corpus: [&[u8]; 16] = [
            b"POST / HTTP/1.1\r\nHost: f.test\r\nContent-Length: 9\r\n\r\nshort",
            b"GET / HTTP/1.1\r\nHost: f.test\r\n\r\n",
            b"POST /a?b=1 HTTP/1.1\r\nHost: f.test\r\nContent-Length: 5\r\n\r\nhello",
            b"POST / HTTP/1.1\r\nHost: f.test\r\nConnection: content-length\r\nContent-Length: 33\r\n\r\n\
              GET /hidden HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: f.test\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
            b"POST / HTTP/1.1\r\nHost: f.test\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            b"GET / HTTP/1.1\r\nHost: f.test\r\nHost: f.test\r\n\r\n",
            b"GET / HTTP/1.1\r\nhost: F.Test:80\r\nConnection: x-a, keep-alive\r\nX-A: 1\r\nX-B: 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: f.test\r\nX-Forwarded-For: 1.1.1.1\r\nx_forwarded_proto: https\r\n\
              Forwarded: for=1\r\nX-Request-Id: abc\r\n\r\n",
            b"GET / HTTP/1.1\nHost: f.test\n\n",
            b"GET / HTTP/1.1\r\nHost: f.test\r\n\r\nGET /2 HTTP/1.1\r\nHost: f.test\r\n\r\n\
              POST /3 HTTP/1.1\r\nHost: f.test\r\nContent-Length: 1\r\n\r\nx",
            b"GET / HTTP/1.1\r\nHost: f.test\r\nContent-Length: 3\r\n\r\nab",
            b"POST / HTTP/1.1\r\nHost: f.test\r\n\r\n",
            b"GET http://f.test/x HTTP/1.1\r\nHost: g.test\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: f.test\r\nX: \x80\xff\r\n\r\n",
            // Found by the fuzzer: the fast path kept the last request id.
            b"GET / HTTP/1.1\r\nHost: f.test\r\nX-Request-Id: ab\r\nX-Request-Id: abc\r\n\r\n",
        ];
        for input in corpus {
            fast_vs_hyper(input);
        }
        let plain = upstream_requests(b"GET /x HTTP/1.1\r\nHost: f.test\r\n\r\n", true);
        assert_eq!(plain.len(), 1, "the harness records what it forwards");
        assert_eq!(plain[0].target, "/x");
    }
}
