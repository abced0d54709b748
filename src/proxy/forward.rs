//! The request path: route, claim an upstream, forward, count.
//!
//! Kept short on purpose: one table load, one atomic claim, a pooled
//! keep-alive connection to the upstream (`upstream`), and a response body
//! that holds the claim until its last byte, so draining knows exactly what
//! is still in flight.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::pool::Claim;
use super::router::{normalize_host, Router};
use super::state::Maintenance;
use super::tunnel;
use super::upstream::{SendError, Sender};
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};

pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Shared by every connection of a listener.
pub struct Forwarder {
    pub router: Arc<Router>,
    /// `http`, or `https` behind TLS: what `X-Forwarded-Proto` says.
    scheme: &'static str,
    /// Set at shutdown or handoff: each HTTP/1 connection is closed after its
    /// next response (`Connection: close`), so a keep-alive client moves to
    /// a new connection instead of racing an idle close.
    pub closing: AtomicBool,
}

impl Forwarder {
    pub fn new(router: Arc<Router>, scheme: &'static str) -> Forwarder {
        Forwarder {
            router,
            scheme,
            closing: AtomicBool::new(false),
        }
    }

    pub async fn handle(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        local: SocketAddr,
        peer: SocketAddr,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .map(normalize_host);
        let request_id = request_id(req.headers());
        let http1 = req.version() < hyper::Version::HTTP_2;
        // Subscribed only once a hold is seen (then the route is looked up
        // again, so no switch can slip between the look-up and the wait).
        let mut published: Option<tokio::sync::watch::Receiver<u64>> = None;
        let mut hold_expired = false;
        let (pool, route) = loop {
            let table = self.router.table();
            let Some(route) = table.route(host.as_deref(), local, req.uri().path()) else {
                return Ok(text(
                    StatusCode::NOT_FOUND,
                    format!(
                        "cyan: no app is routed for host {:?}\n",
                        host.unwrap_or_default()
                    ),
                ));
            };
            if let Some(m) = &route.maintenance {
                return Ok(maintenance(m));
            }
            // Held: wait for the next table (the switch releases the hold)
            // or the deadline, then route again.
            if let Some(until) = route.hold_until_ms.filter(|_| !hold_expired) {
                let left = until.saturating_sub(crate::clock::now_ms());
                if left > 0 {
                    drop(table);
                    let Some(changes) = published.as_mut() else {
                        published = Some(self.router.published());
                        continue;
                    };
                    let waited =
                        tokio::time::timeout(Duration::from_millis(left), changes.changed()).await;
                    hold_expired = waited.is_err();
                    continue;
                }
            }
            match &route.live {
                Some(pool) => break (pool.clone(), route.clone()),
                None => {
                    return Ok(text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("cyan: {} has no live color yet\n", route.name),
                    ))
                }
            }
        };
        let policy = &route.policy;
        let Some(claim) = pool.claim(policy) else {
            return Ok(text(
                StatusCode::SERVICE_UNAVAILABLE,
                "cyan: no upstreams\n".into(),
            ));
        };
        let started = Instant::now();
        let upgrade = upgrade_protocol(req.headers()).map(|p| (p, hyper::upgrade::on(&mut req)));
        let (mut parts, body) = req.into_parts();
        prepare_upstream_headers(&mut parts.headers, host.as_deref(), peer, self.scheme);
        if let Some((protocol, _)) = &upgrade {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, protocol.clone());
        }
        parts.headers.insert(X_REQUEST_ID, request_id.clone());
        parts.version = hyper::Version::HTTP_11;
        let timeout = Duration::from_millis(policy.response_timeout_ms);
        origin_form(&mut parts.uri);
        let req = Request::from_parts(parts, body.boxed());
        // A refused connection gives the request back unsent: it goes to the
        // next replica once (a container that just died costs no request).
        let (claim, result) = match send(&claim, req, timeout).await {
            Err(Failure::Connect(e, Some(req))) => {
                claim.failed(policy);
                claim.pool().stats.record_failure(started.elapsed());
                match pool.claim(policy) {
                    Some(next) if next.addr() != claim.addr() => {
                        drop(claim);
                        let r = send(&next, *req, timeout).await;
                        (next, r)
                    }
                    _ => (claim, Err(Failure::Connect(e, None))),
                }
            }
            r => (claim, r),
        };
        let (mut resp, sender) = match result {
            Ok(sent) => sent,
            Err(failure) => {
                claim.pool().stats.record_failure(started.elapsed());
                let (status, why) = match &failure {
                    Failure::Timeout => {
                        claim.failed(policy);
                        (
                            StatusCode::GATEWAY_TIMEOUT,
                            format!("no response within {timeout:?}"),
                        )
                    }
                    Failure::Connect(e, _) => {
                        claim.failed(policy);
                        (StatusCode::BAD_GATEWAY, e.to_string())
                    }
                    Failure::Other(e) => (StatusCode::BAD_GATEWAY, e.to_string()),
                };
                tracing::warn!(upstream = %claim.addr(), %status, error = %why, "upstream request failed");
                let mut r = text(
                    status,
                    format!("cyan: upstream {} failed: {why}\n", claim.addr()),
                );
                r.headers_mut().insert(X_REQUEST_ID, request_id);
                return Ok(r);
            }
        };
        claim.answered();
        claim
            .pool()
            .stats
            .record(resp.status().as_u16(), started.elapsed());
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some((protocol, client_side)) = upgrade {
                let upstream_side = hyper::upgrade::on(&mut resp);
                let websocket = protocol.as_bytes().eq_ignore_ascii_case(b"websocket");
                tokio::spawn(async move {
                    match tokio::try_join!(client_side, upstream_side) {
                        Ok((client, upstream)) => {
                            tunnel::run(client, upstream, websocket, claim).await
                        }
                        Err(e) => tracing::debug!(error = %e, "upgrade did not complete"),
                    }
                });
                let (mut parts, _) = resp.into_parts();
                parts.headers.insert(X_REQUEST_ID, request_id);
                return Ok(Response::from_parts(parts, empty()));
            }
        }
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.insert(X_REQUEST_ID, request_id);
        if http1 && self.closing.load(Ordering::Relaxed) {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        let body = Tracked {
            inner: body,
            sender: Some(sender),
            claim,
        };
        Ok(Response::from_parts(parts, body.boxed()))
    }
}

/// Sends on the claimed upstream's connections, within the response timeout.
async fn send(
    claim: &Claim,
    req: Request<ProxyBody>,
    timeout: Duration,
) -> Result<(Response<Incoming>, Sender), Failure> {
    match tokio::time::timeout(timeout, claim.conns().send(req)).await {
        Err(_) => Err(Failure::Timeout),
        Ok(Ok(sent)) => Ok(sent),
        Ok(Err(SendError::Connect(e, req))) => Err(Failure::Connect(e, Some(req))),
        Ok(Err(SendError::Failed(e))) => Err(Failure::Other(e)),
    }
}

/// Upstreams get the origin form (`/path?query`); an HTTP/2 client's
/// request carries the absolute form.
fn origin_form(uri: &mut Uri) {
    if uri.scheme().is_some() || uri.authority().is_some() {
        let mut parts = hyper::http::uri::Parts::default();
        parts.path_and_query = Some(
            uri.path_and_query()
                .cloned()
                .unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/")),
        );
        *uri = Uri::from_parts(parts).expect("a path is a valid uri");
    }
}

/// Why no upstream response came.
enum Failure {
    /// Refused or unreachable: counts toward passive health; the request
    /// comes back unsent the first time, for another replica.
    Connect(std::io::Error, Option<Box<Request<ProxyBody>>>),
    /// No response head within the route's response timeout: a 504.
    Timeout,
    Other(hyper::Error),
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The client's `X-Request-Id` when it sent a sane one, else a new one.
pub(crate) fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        if !v.is_empty() && v.len() <= 128 {
            return v.clone();
        }
    }
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish()
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    HeaderValue::from_str(&format!("{seed:016x}{n:08x}")).expect("hex is a valid header")
}

/// The protocol of an HTTP/1.1 upgrade request (`Connection: upgrade` plus
/// `Upgrade: X`).
pub(crate) fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = connection_named(headers).contains(&header::UPGRADE);
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// The maintenance page: 503 with `Retry-After`.
fn maintenance(m: &Maintenance) -> Response<ProxyBody> {
    let message = m.message.clone().unwrap_or_else(|| {
        "This service is down for maintenance. Please try again shortly.".into()
    });
    let mut r = text(StatusCode::SERVICE_UNAVAILABLE, format!("{message}\n"));
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(m.retry_after_s));
    r
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// The headers a `Connection` header names as hop-by-hop.
pub(crate) fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect()
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named = connection_named(headers);
    for h in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(h);
    }
    headers.remove(header::UPGRADE);
}

pub(crate) fn prepare_upstream_headers(
    headers: &mut HeaderMap,
    host: Option<&str>,
    peer: SocketAddr,
    scheme: &'static str,
) {
    strip_hop_by_hop(headers);
    let client_ip = peer.ip().to_string();
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {client_ip}"),
        None => client_ip,
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
        headers.insert("x-forwarded-for", v);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static(scheme));
    if let Some(h) = host.and_then(|h| HeaderValue::from_str(h).ok()) {
        if !headers.contains_key(header::HOST) {
            headers.insert(header::HOST, h.clone());
        }
        headers.insert("x-forwarded-host", h);
    }
}

pub fn text(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut resp = Response::new(Full::new(Bytes::from(body)).map_err(|n| match n {}).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn empty() -> ProxyBody {
    Empty::new().map_err(|n| match n {}).boxed()
}

/// A response body that keeps its upstream claimed until the last frame,
/// and returns the connection to the pool when it was read to the end.
struct Tracked {
    inner: Incoming,
    sender: Option<Sender>,
    claim: Claim,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take().filter(|_| self.inner.is_end_stream()) {
            self.claim.conns().checkin(sender);
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed_and_forwarding_headers_added() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.insert("x-app", HeaderValue::from_static("kept"));
        prepare_upstream_headers(
            &mut h,
            Some("web.localhost"),
            "127.0.0.9:5000".parse().unwrap(),
            "http",
        );
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get("x-secret-hop").is_none());
        assert!(h.get("keep-alive").is_none());
        assert_eq!(h["x-app"], "kept");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.9");
        assert_eq!(h["x-forwarded-host"], "web.localhost");
        assert_eq!(h[header::HOST], "web.localhost");
    }
}
