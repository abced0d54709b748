//! The request path: route, claim an upstream, forward, count.
//!
//! Kept short on purpose: one table load, one atomic claim, a pooled
//! keep-alive connection to the upstream (`upstream`), and a response body
//! that holds the claim until its last byte, so draining knows exactly what
//! is still in flight.

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::attempt::{connection_ended, idempotent, Attempt, Failed};
use super::client_body::ClientBody;
use super::drain::{self, EventBoundary};
use super::forwarding;
use super::pool::Claim;
use super::router::{normalize_host, Router};
use super::state::{Maintenance, RequestPolicy};
use super::timeouts::{Busy, BusyGuard, Timeouts};
use super::tunnel;
use super::upstream::{SendError, Sender};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};

/// The client side of one connection, worked out once per connection. Its
/// requests share it through a reference count that only its own thread
/// touches (the listener's `Forwarder` is shared by every thread).
pub struct Client {
    pub(crate) forwarder: Arc<Forwarder>,
    /// The listening address it came in on (routes may own one).
    pub(crate) local: SocketAddr,
    /// Its address, to tell a trusted proxy; and formatted once for
    /// `X-Forwarded-For`.
    pub(crate) peer: std::net::IpAddr,
    pub(crate) ip: HeaderValue,
    /// Requests of this connection in progress, for its idle deadline.
    pub(crate) busy: Arc<Busy>,
}

impl Client {
    pub fn new(forwarder: Arc<Forwarder>, local: SocketAddr, peer: SocketAddr) -> Client {
        Client {
            forwarder,
            local,
            peer: peer.ip(),
            ip: ip_header(peer),
            busy: Arc::default(),
        }
    }

    /// Forwards one request of this connection.
    pub async fn forward(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let busy = self.busy.enter();
        self.forwarder.handle(req, &self, busy).await
    }
}

fn ip_header(peer: SocketAddr) -> HeaderValue {
    HeaderValue::from_str(&peer.ip().to_string()).expect("an IP is a valid header")
}

/// A response body, without a box per request: the upstream's, streamed
/// and holding its claim, or one cyan wrote itself.
pub enum ProxyBody {
    Upstream(Tracked),
    Own(Full<Bytes>),
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            ProxyBody::Upstream(t) => t.poll_frame(cx),
            ProxyBody::Own(full) => Pin::new(full).poll_frame(cx).map_err(|n| match n {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(t) => t.inner.is_end_stream(),
            ProxyBody::Own(full) => full.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(t) => t.inner.size_hint(),
            ProxyBody::Own(full) => full.size_hint(),
        }
    }
}

/// Shared by every connection of a listener.
pub struct Forwarder {
    pub router: Arc<Router>,
    /// `http`, or `https` behind TLS: what `X-Forwarded-Proto` says.
    pub(crate) scheme: &'static str,
    /// Set at shutdown or handoff: each HTTP/1 connection is closed after its
    /// next response (`Connection: close`), so a keep-alive client moves to
    /// a new connection instead of racing an idle close.
    pub closing: AtomicBool,
    /// Deadlines on reads from clients.
    pub timeouts: Timeouts,
}

impl Forwarder {
    pub fn new(router: Arc<Router>, scheme: &'static str, timeouts: Timeouts) -> Forwarder {
        Forwarder {
            router,
            scheme,
            closing: AtomicBool::new(false),
            timeouts,
        }
    }

    /// Routes a request and claims an upstream of the live color, waiting
    /// out a hold first; or the page to answer with instead. `host` is the
    /// Host header as sent.
    pub(crate) async fn claim(
        &self,
        host: Option<&str>,
        client: &Client,
        path: &str,
    ) -> Result<(Claim, RequestPolicy), Own> {
        // An ACME server fetching an HTTP-01 answer on plain HTTP (RFC 8555
        // §8.3): the proxy answers it, before any route.
        if let Some(token) = path.strip_prefix(super::acme::HTTP01_PATH) {
            if let Some(answer) = self.router.acme.http01(token) {
                if self.scheme == "http" {
                    return Err(Own::text(StatusCode::OK, answer));
                }
            }
        }
        let local = client.local;
        let host = host.map(normalize_host);
        // Subscribed only once a hold is seen (then the route is looked up
        // again, so no switch can slip between the look-up and the wait).
        let mut published: Option<tokio::sync::watch::Receiver<u64>> = None;
        let mut hold_expired = false;
        loop {
            let table = self.router.table();
            let Some(route) = table.route(host.as_deref(), local, path) else {
                return Err(Own::text(
                    StatusCode::NOT_FOUND,
                    format!(
                        "cyan: no app is routed for host {:?}\n",
                        host.unwrap_or_default()
                    ),
                ));
            };
            if let Some(m) = &route.maintenance {
                return Err(Own::maintenance(m));
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
            // The claim is taken while the table is held, and is all the
            // request keeps of it (with a copy of the policy).
            let Some(pool) = &route.live else {
                let why = match route.preview {
                    true => format!(
                        "cyan: no candidate for {}; deploy one (the preview serves a release from its health gate until it is promoted or aborted, never the live one)\n",
                        route.name
                    ),
                    false => format!("cyan: {} has no live color yet\n", route.name),
                };
                return Err(Own::text(StatusCode::SERVICE_UNAVAILABLE, why));
            };
            let policy = route.policy.per_request(client.peer);
            return match pool.claim(&policy) {
                Some(claim) => Ok((claim, policy)),
                None => Err(Own::text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "cyan: {} has no {} replica in rotation (stopped, or not back yet){}\n",
                        route.name,
                        pool.color,
                        if route.preview {
                            " for its preview"
                        } else {
                            ""
                        }
                    ),
                )),
            };
        }
    }

    async fn handle(
        &self,
        mut req: Request<Incoming>,
        client: &Client,
        busy: BusyGuard,
    ) -> Result<Response<ProxyBody>, Infallible> {
        // The authority the request is for: an absolute-form target's (it
        // wins over Host, RFC 9112 §3.2.2; HTTP/2's :authority), else the
        // Host header. A clone shares its bytes, so `host` borrows nothing
        // from the request.
        let host_value = match request_authority(&req) {
            Ok(h) => h,
            Err(own) => return Ok(own.into_response()),
        };
        let host = host_value.as_ref().and_then(|h| h.to_str().ok());
        let request_id = request_id(req.headers());
        let http1 = req.version() < hyper::Version::HTTP_2;
        let (claim, policy) = match self.claim(host, client, req.uri().path()).await {
            Ok(claimed) => claimed,
            Err(own) => return Ok(own.into_response()),
        };
        let started = Instant::now();
        let upgrade = upgrade_protocol(req.headers()).map(|p| (p, hyper::upgrade::on(&mut req)));
        let (mut parts, body) = req.into_parts();
        prepare_upstream_headers(
            &mut parts.headers,
            host_value.as_ref(),
            &client.ip,
            self.scheme,
            policy.trusted,
        );
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
        let (body, outcome) = ClientBody::new(body, self.timeouts.body);
        // A request with no body to stream whose method allows it may be
        // sent again after the upstream dropped it: its head is kept.
        let replay = (outcome.is_none()
            && upgrade.is_none()
            && idempotent(parts.method.as_str().as_bytes()))
        .then(|| parts.clone());
        // A refused connection gives the request back unsent, for the retry.
        let mut unsent = Some(Request::from_parts(parts, body));
        let mut attempt = Attempt::new(claim, &policy, started, replay.is_some());
        let (claim, (mut resp, sender)) = loop {
            let req = unsent
                .take()
                .or_else(|| {
                    replay
                        .clone()
                        .map(|p| Request::from_parts(p, ClientBody::Empty))
                })
                .expect("only a request that is back or kept is tried again");
            let failed = match tokio::time::timeout(timeout, attempt.claim.conns().send(req)).await
            {
                Ok(Ok(sent)) => break (attempt.answered(), sent),
                Ok(Err(SendError::Connect(e, req))) => {
                    unsent = Some(*req);
                    Failed::Refused(e)
                }
                Ok(Err(SendError::Failed(e))) => match outcome.as_ref().and_then(|o| o.fault()) {
                    Some(fault) => Failed::Client(fault),
                    None if connection_ended(&e) => {
                        Failed::Dropped(format!("closed without answering: {e}"))
                    }
                    None => Failed::Broken(e.to_string()),
                },
                // Still waiting for the client's body: the client is slow,
                // not the upstream.
                Err(_) => match outcome.as_ref() {
                    Some(o) if !o.ended() => {
                        Failed::Client(o.fault().unwrap_or(super::attempt::ClientFault::Slow))
                    }
                    _ => Failed::Timeout(timeout),
                },
            };
            if let Err(own) = attempt.failed(failed) {
                let mut r = own.into_response();
                r.headers_mut().insert(X_REQUEST_ID, request_id);
                return Ok(r);
            }
        };
        let response_te = resp.headers().get_all(header::TRANSFER_ENCODING);
        let bad_switch = resp.status() == StatusCode::SWITCHING_PROTOCOLS
            && !upgrade
                .as_ref()
                .is_some_and(|(asked, _)| switches_to(resp.headers(), asked));
        if bad_switch
            || (response_te.iter().next().is_some()
                && !only_chunked(response_te.iter().map(|v| v.as_bytes())))
        {
            let why = if bad_switch {
                "a switch to a protocol the client did not ask for"
            } else {
                "a transfer coding other than chunked"
            };
            let mut r = Own::text(
                StatusCode::BAD_GATEWAY,
                format!("cyan: invalid response from the upstream: {why}\n"),
            )
            .into_response();
            claim.pool().stats.record_failure(502, started.elapsed());
            r.headers_mut().insert(X_REQUEST_ID, request_id);
            return Ok(r);
        }
        claim
            .pool()
            .stats
            .record(resp.status().as_u16(), started.elapsed());
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some((protocol, client_side)) = upgrade {
                let upstream_side = hyper::upgrade::on(&mut resp);
                let websocket = protocol.as_bytes().eq_ignore_ascii_case(b"websocket");
                // The tunnel reads the client through the connection's idle
                // deadline: it keeps the connection busy while it lasts.
                tokio::spawn(async move {
                    match tokio::try_join!(client_side, upstream_side) {
                        Ok((client, upstream)) => {
                            tunnel::run(client, upstream, websocket, claim).await
                        }
                        Err(e) => tracing::debug!(error = %e, "upgrade did not complete"),
                    }
                    drop(busy);
                });
                let (mut parts, _) = resp.into_parts();
                parts.headers.insert(X_REQUEST_ID, request_id);
                return Ok(Response::from_parts(parts, empty()));
            }
        }
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        // No length on a response that has no body by its status (RFC 9110
        // §8.6): a client that believed it would swallow the next response.
        if parts.status.is_informational() || parts.status == StatusCode::NO_CONTENT {
            parts.headers.remove(header::CONTENT_LENGTH);
        }
        parts.headers.insert(X_REQUEST_ID, request_id);
        if http1 && self.closing.load(Ordering::Relaxed) {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        let event_stream = parts
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|t| drain::is_event_stream(t.as_bytes()));
        let body = Tracked {
            inner: body,
            sender: Some(sender),
            claim,
            _busy: busy,
            event_stream,
            events: EventBoundary::default(),
            frames: 0,
            slot: None,
            cut_at: None,
        };
        Ok(Response::from_parts(parts, ProxyBody::Upstream(body)))
    }
}

/// The authority a request is for, or the 400 (405 for `CONNECT`, 501 for
/// a transfer coding other than chunked, RFC 9112 §6.1) that refuses it
/// before it reaches any app (RFC 9112 §3.2 and §3.2.2):
/// - an absolute-form target's authority wins over the Host header; its
///   scheme is http or https; the authority form is CONNECT's alone;
/// - an HTTP/1.1 request needs exactly one Host header;
/// - a Host must be a host (and port), not a path, user info or spaces;
/// - `CONNECT` asks for a tunnel, which a reverse proxy does not make.
fn request_authority(req: &Request<Incoming>) -> Result<Option<HeaderValue>, Own> {
    let bad = |why: &str| Own::text(StatusCode::BAD_REQUEST, format!("cyan: {why}\n"));
    if req.method() == hyper::Method::CONNECT {
        return Err(Own::text(
            StatusCode::METHOD_NOT_ALLOWED,
            "cyan: CONNECT is not served: this is a reverse proxy\n".into(),
        ));
    }
    let te = req.headers().get_all(header::TRANSFER_ENCODING);
    if te.iter().next().is_some() && !only_chunked(te.iter().map(|v| v.as_bytes())) {
        return Err(Own::text(
            StatusCode::NOT_IMPLEMENTED,
            "cyan: only the chunked transfer coding is understood\n".into(),
        ));
    }
    if let Some(scheme) = req.uri().scheme_str() {
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(bad(&format!("no {scheme}: URLs are served here")));
        }
    } else if req.uri().authority().is_some() && req.version() < hyper::Version::HTTP_2 {
        // The authority form is CONNECT's alone (RFC 9112 §3.2.3).
        return Err(bad("a target of only host and port is for CONNECT"));
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let sent = hosts.next();
    if hosts.next().is_some() {
        return Err(bad("more than one Host header"));
    }
    if sent.is_none() && req.version() == hyper::Version::HTTP_11 {
        return Err(bad("an HTTP/1.1 request needs a Host header"));
    }
    if let Some(h) = sent.filter(|h| !valid_host(h.as_bytes())) {
        return Err(bad(&format!("invalid Host header {h:?}")));
    }
    match req.uri().authority() {
        Some(a) if valid_host(a.as_str().as_bytes()) => Ok(HeaderValue::from_str(a.as_str()).ok()),
        Some(a) => Err(bad(&format!("invalid authority {:?}", a.as_str()))),
        None => Ok(sent.cloned()),
    }
}

/// A Host value (RFC 9110 §7.2: `uri-host [ ":" port ]`): a reg-name of
/// unreserved, percent-encoded and sub-delim characters, or a bracketed IP
/// literal, then an optional port of digits. Empty is allowed (no
/// authority). No user info, path, space or control character.
pub(crate) fn valid_host(host: &[u8]) -> bool {
    let (name, port) = match host.iter().rposition(|&b| b == b':') {
        Some(i) if !host[..i].contains(&b':') || host[..i].ends_with(b"]") => {
            (&host[..i], &host[i + 1..])
        }
        _ => (host, &b""[..]),
    };
    // Digits only (`parse` would take a `+`), and a u16.
    let port_ok = port.iter().all(u8::is_ascii_digit)
        && std::str::from_utf8(port).is_ok_and(|p| p.is_empty() || p.parse::<u16>().is_ok());
    let name_ok = match name {
        [b'[', literal @ .., b']'] => literal
            .iter()
            .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.' | b'v' | b'V')),
        _ => name.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'%'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                )
        }),
    };
    port_ok && name_ok
}

/// A response cyan makes itself: an error page, or the maintenance page.
pub(crate) struct Own {
    pub status: StatusCode,
    pub body: String,
    pub retry_after_s: Option<u64>,
}

impl Own {
    pub(crate) fn text(status: StatusCode, body: String) -> Own {
        Own {
            status,
            body,
            retry_after_s: None,
        }
    }

    /// The maintenance page: 503 with `Retry-After`.
    fn maintenance(m: &Maintenance) -> Own {
        let message = m.message.clone().unwrap_or_else(|| {
            "This service is down for maintenance. Please try again shortly.".into()
        });
        Own {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: format!("{message}\n"),
            retry_after_s: Some(m.retry_after_s),
        }
    }

    fn into_response(self) -> Response<ProxyBody> {
        let mut r = text(self.status, self.body);
        if let Some(s) = self.retry_after_s {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
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

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The client's `X-Request-Id` when it sent a sane one, else a new one.
pub(crate) fn request_id(headers: &HeaderMap) -> HeaderValue {
    match headers.get(&X_REQUEST_ID) {
        Some(v) if sane_request_id(v.as_bytes()) => v.clone(),
        _ => HeaderValue::from_bytes(&new_request_id()).expect("hex is a valid header"),
    }
}

/// Whether a client's `X-Request-Id` is kept (a longer one is replaced).
pub(crate) fn sane_request_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID
}

pub(crate) const MAX_REQUEST_ID: usize = 128;

/// A new request id: 32 hex digits, a per-process seed then a counter.
pub(crate) fn new_request_id() -> [u8; 32] {
    // Each thread counts in blocks of 2^32 numbers of its own: one shared
    // counter would be a cache line that every request on every core writes.
    static BLOCKS: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        /// The next number and the end of this thread's block.
        static NEXT: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    }
    static SEED: std::sync::OnceLock<[u8; 16]> = std::sync::OnceLock::new();
    let seed = SEED.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let mut hex = [0u8; 16];
        hex_into(&mut hex, h.finish());
        hex
    });
    let (mut n, mut end) = NEXT.get();
    if n == end {
        n = BLOCKS.fetch_add(1, Ordering::Relaxed) << 32;
        end = n + (1 << 32);
    }
    NEXT.set((n + 1, end));
    let mut id = [0u8; 32];
    let (high, low) = id.split_at_mut(16);
    high.copy_from_slice(seed);
    hex_into(low, n);
    id
}

/// Writes `v` as lowercase hex, right-aligned and zero-padded, into `out`.
fn hex_into(out: &mut [u8], mut v: u64) {
    for digit in out.iter_mut().rev() {
        *digit = b"0123456789abcdef"[(v & 0xf) as usize];
        v >>= 4;
    }
}

/// The protocol of an HTTP/1.1 upgrade request (`Connection: upgrade` plus
/// `Upgrade: X`). Never `h2c`: that upgrade is obsolete (RFC 9113 §3.1),
/// and carried through it would tunnel the client's next bytes to the app
/// as raw requests, past routing and the forwarding headers (a request
/// smuggled in by an attacker). Such a request goes up without `Upgrade`.
pub(crate) fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks =
        connection_tokens(connection_values(headers)).any(|t| t.eq_ignore_ascii_case("upgrade"));
    let protocol = asks.then(|| headers.get(header::UPGRADE)).flatten()?;
    let h2c = protocol.to_str().map_or(true, |p| {
        connection_tokens([p]).any(|t| t.eq_ignore_ascii_case("h2c"))
    });
    (!h2c).then(|| protocol.clone())
}

/// Whether a `101` switches to the protocol the client asked for (RFC 9110
/// §7.8): a tunnel to anything else is refused.
fn switches_to(response: &HeaderMap, asked: &HeaderValue) -> bool {
    let (Some(to), Ok(asked)) = (response.get(header::UPGRADE), asked.to_str()) else {
        return false;
    };
    let to = to.to_str().unwrap_or_default().trim_ascii();
    connection_tokens([asked]).any(|t| t.eq_ignore_ascii_case(to))
}

/// Whether a message's `Transfer-Encoding` is exactly `chunked`, once: any
/// other coding would be lost when the proxy frames the body again (the
/// header is hop-by-hop), so the body would arrive still coded and labelled
/// as plain (RFC 9112 §6.1).
pub(crate) fn only_chunked<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> bool {
    let mut codings = values
        .into_iter()
        .flat_map(|v| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty());
    matches!(codings.next(), Some(c) if c.eq_ignore_ascii_case(b"chunked"))
        && codings.next().is_none()
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1),
/// and `Upgrade` (the proxy sets it again on an upgrade it carries through).
/// `connection` comes first: `strip_hop_by_hop` looks for it at 0.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether a header name is one of the standard hop-by-hop ones.
pub(crate) fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// The tokens of `Connection` header values: options such as `upgrade`, and
/// the names of more hop-by-hop headers.
pub(crate) fn connection_tokens<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> impl Iterator<Item = &'a str> {
    values
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// The headers `Connection` names beyond the standard hop-by-hop ones (its
/// usual `keep-alive`, `close` or `upgrade` name nothing more to remove).
/// Never one of `NEVER_NAMED`.
pub(crate) fn named_hop_by_hop<'a>(
    connection: impl IntoIterator<Item = &'a str>,
) -> impl Iterator<Item = &'a str> {
    connection_tokens(connection).filter(|t| {
        !t.eq_ignore_ascii_case("close")
            && !is_hop_by_hop(t)
            && !NEVER_NAMED.iter().any(|n| t.eq_ignore_ascii_case(n))
    })
}

/// Headers a `Connection` token cannot remove:
/// - `Content-Length` decides where the message ends: dropping it while
///   framing by it let a body pass as a second, smuggled request (and a
///   response lose its end);
/// - `Host`: the upstream gets the Host the request was routed by (found by
///   the fuzz target: the fast path sent none).
///
/// (`Transfer-Encoding` is hop-by-hop anyway: each side frames again.)
const NEVER_NAMED: [&str; 2] = ["content-length", "host"];

fn connection_values(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
}

/// The headers a message's `Connection` header names as hop-by-hop.
pub(crate) fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    named_hop_by_hop(connection_values(headers))
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect()
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names (no hashing) finds which are there; most
    // messages carry none, or only `Connection`.
    let mut present = [false; HOP_BY_HOP.len()];
    for name in headers.keys() {
        let name = name.as_str();
        if let Some(i) = HOP_BY_HOP.iter().position(|h| *h == name) {
            present[i] = true;
        }
    }
    if present[0] {
        for name in connection_named(headers) {
            headers.remove(name);
        }
    }
    for (h, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(*h);
    }
}

/// Readies a client's request headers for the upstream: hop-by-hop headers
/// out; the forwarding headers by `forwarding`'s rules (`X-Forwarded-Host`
/// is the Host as the client sent it, as Caddy, Traefik and kamal-proxy
/// send it); and a Host header for an HTTP/2 request, which carries none,
/// or an absolute-form one, whose authority wins.
pub(crate) fn prepare_upstream_headers(
    headers: &mut HeaderMap,
    host: Option<&HeaderValue>,
    client_ip: &HeaderValue,
    scheme: &'static str,
    trusted: bool,
) {
    strip_hop_by_hop(headers);
    headers.reserve(3);
    forwarding::apply(headers, host, client_ip, scheme, trusted);
    if let Some(h) = host {
        headers.insert(header::HOST, h.clone());
    }
}

pub fn text(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::Own(Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn empty() -> ProxyBody {
    ProxyBody::Own(Full::new(Bytes::new()))
}

/// An upstream response body that keeps its upstream claimed until the
/// last frame, and returns the connection to the pool when it was read to
/// the end. If its color stops being live while it streams, it ends at its
/// slot before the drain deadline (`drain`): an event stream at an event
/// boundary, anything else cut (an error: hyper then closes the HTTP/1
/// connection without the last chunk, or resets the HTTP/2 stream).
pub struct Tracked {
    inner: Incoming,
    sender: Option<Sender>,
    claim: Claim,
    /// The connection is busy until the body ends.
    _busy: BusyGuard,
    event_stream: bool,
    events: EventBoundary,
    /// Frames passed on so far (the drain is watched once a body waits, or
    /// from its second frame on: short bodies touch nothing shared).
    frames: u32,
    /// Resolves at this body's slot once its color is no longer live.
    slot: Option<Pin<Box<dyn Future<Output = tokio::time::Instant> + Send>>>,
    /// The slot came; an event stream still looks for a boundary until then.
    cut_at: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Tracked {
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let Some(cut_at) = &mut self.cut_at {
            if self.event_stream && self.events.at_boundary() {
                return Poll::Ready(None);
            }
            if !self.event_stream || cut_at.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Some(Err(std::io::Error::other(
                    "cut at the drain deadline",
                ))));
            }
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            self.frames = self.frames.saturating_add(1);
            if let (true, Some(data)) = (self.event_stream, frame.data_ref()) {
                self.events.advance(data);
            }
        }
        let streaming = self.frames > 1 || polled.is_pending();
        if self.cut_at.is_none() && streaming && !self.inner.is_end_stream() {
            let pool = self.claim.pool();
            let slot = self.slot.get_or_insert_with(|| {
                let (mut closing, slot) = (pool.closing(), pool.slots.next());
                Box::pin(async move { drain::slot_reached(&mut closing, slot).await })
            });
            if let Poll::Ready(at) = slot.as_mut().poll(cx) {
                self.cut_at = Some(Box::pin(tokio::time::sleep_until(
                    at + drain::BOUNDARY_GRACE,
                )));
                if polled.is_pending() {
                    return self.poll_frame(cx);
                }
            }
        }
        polled.map_err(std::io::Error::other)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take().filter(|_| self.inner.is_end_stream()) {
            self.claim.conns().checkin(sender);
        }
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
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.insert("x-app", HeaderValue::from_static("kept"));
        // An HTTP/2 request: no Host header, the authority stands in.
        let client_ip = ip_header("127.0.0.9:5000".parse().unwrap());
        let authority = HeaderValue::from_static("Web.Localhost:8000");
        prepare_upstream_headers(&mut h, Some(&authority), &client_ip, "https", true);
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get("x-secret-hop").is_none());
        assert!(h.get("keep-alive").is_none());
        assert_eq!(h["x-app"], "kept");
        assert_eq!(
            h["x-forwarded-for"], "10.0.0.1, 127.0.0.9",
            "a trusted peer's list"
        );
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "Web.Localhost:8000", "as sent");
        assert_eq!(h[header::HOST], "Web.Localhost:8000");

        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a.example"));
        let v6 = ip_header("[::1]:4000".parse().unwrap());
        let sent = h.get(header::HOST).cloned();
        prepare_upstream_headers(&mut h, sent.as_ref(), &v6, "http", false);
        assert_eq!(h["x-forwarded-for"], "::1", "the first hop starts the list");
        assert_eq!(h[header::HOST], "a.example");
        assert_eq!(h["x-forwarded-host"], "a.example");
    }

    #[test]
    fn request_ids_are_fresh_unless_the_client_sent_a_sane_one() {
        let none = HeaderMap::new();
        let (a, b) = (request_id(&none), request_id(&none));
        assert_ne!(a, b);
        for id in [&a, &b] {
            assert_eq!(id.len(), 32);
            assert!(id.as_bytes().iter().all(u8::is_ascii_hexdigit), "{id:?}");
        }
        assert_eq!(
            a.as_bytes()[..16],
            b.as_bytes()[..16],
            "one seed per process"
        );
        // Threads count in blocks of their own: no id repeats across them.
        let other = std::thread::spawn(|| request_id(&HeaderMap::new()))
            .join()
            .unwrap();
        assert!(other != a && other != b, "{other:?}");
        assert_eq!(other.as_bytes()[..16], a.as_bytes()[..16]);
        let mut sent = HeaderMap::new();
        sent.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&sent), "abc-123");
        sent.insert(
            X_REQUEST_ID,
            HeaderValue::from_str(&"x".repeat(129)).unwrap(),
        );
        assert_eq!(request_id(&sent).len(), 32, "an oversized id is replaced");
    }
}
