//! hyper's request path (HTTP/2, TLS, and whatever HTTP/1.1 the fast path
//! hands over), and what both paths share: a listener's `Forwarder` and
//! each connection's `ClientConn`, and the claim that routes a request.
//!
//! A request takes one table load, waits out a hold, and claims an upstream
//! of its route's live color (`Forwarder::claim`: kamal-proxy's
//! `service.go` answers pause and stop first the same way), or gets one of
//! cyan's pages (`pages`). Then hyper's path sends it on a pooled
//! connection (`conn_pool`), tries again where `attempt` allows, counts the
//! answer on its color (`stats`), and hands back a response body that holds
//! the claim until its last byte (`response_body`), or a tunnel (`tunnel`).
//! The headers on the way are `headers`' and `forwarding`'s.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};

use super::attempt::{idempotent, Attempt, Failed};
use super::client_body::ClientBody;
use super::conn_pool::SendError;
use super::drain;
use super::forwarding;
use super::headers;
use super::pages::Page;
use super::request_id::{request_id, X_REQUEST_ID};
use super::response_body::{ProxyBody, Tracked};
use super::router::{normalize_host, Router};
use super::state::RequestPolicy;
use super::timeouts::{Busy, BusyGuard, Timeouts};
use super::tunnel;
use super::upstream::Claim;

/// The client side of one connection, worked out once per connection. Its
/// requests share it through a reference count that only its own thread
/// touches (the listener's `Forwarder` is shared by every thread).
pub struct ClientConn {
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

impl ClientConn {
    pub fn new(forwarder: Arc<Forwarder>, local: SocketAddr, peer: SocketAddr) -> ClientConn {
        ClientConn {
            forwarder,
            local,
            peer: peer.ip(),
            ip: forwarding::client_ip(peer),
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
        client: &ClientConn,
        path: &str,
    ) -> Result<(Claim, RequestPolicy), Page> {
        // An ACME server fetching an HTTP-01 answer on plain HTTP (RFC 8555
        // §8.3): the proxy answers it, before any route.
        if let Some(token) = path.strip_prefix(super::acme::HTTP01_PATH) {
            if let Some(answer) = self.router.acme.http01(token) {
                if self.scheme == "http" {
                    return Err(Page::text(StatusCode::OK, answer));
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
                return Err(Page::no_route(host.as_deref()));
            };
            let prefix = route.path_prefix.as_deref().unwrap_or("");
            if path.strip_prefix(prefix.trim_end_matches('/')) == Some(UP_PATH) {
                return Err(up(route));
            }
            if let Some(m) = &route.maintenance {
                return Err(Page::maintenance(m));
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
            let Some(balancer) = &route.live else {
                return Err(Page::no_live(&route.name, route.preview));
            };
            let policy = route.policy.per_request(client.peer);
            return match balancer.claim(&policy) {
                Some(claim) => Ok((claim, policy)),
                None => Err(Page::no_replica(&route.name, balancer.color, route.preview)),
            };
        }
    }

    async fn handle(
        &self,
        mut req: Request<Incoming>,
        client: &ClientConn,
        busy: BusyGuard,
    ) -> Result<Response<ProxyBody>, Infallible> {
        // The authority the request is for: an absolute-form target's (it
        // wins over Host, RFC 9112 §3.2.2; HTTP/2's :authority), else the
        // Host header. A clone shares its bytes, so `host` borrows nothing
        // from the request.
        let host_value = match headers::request_authority(&req) {
            Ok(h) => h,
            Err(page) => return Ok(respond(page)),
        };
        let host = host_value.as_ref().and_then(|h| h.to_str().ok());
        let request_id = request_id(req.headers());
        let http1 = req.version() < hyper::Version::HTTP_2;
        let (claim, policy) = match self.claim(host, client, req.uri().path()).await {
            Ok(claimed) => claimed,
            Err(page) => return Ok(respond(page)),
        };
        let started = Instant::now();
        let upgrade =
            headers::upgrade_protocol(req.headers()).map(|p| (p, hyper::upgrade::on(&mut req)));
        let (mut parts, body) = req.into_parts();
        headers::prepare_upstream_headers(
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
                Ok(Err(SendError::Failed(e))) => Failed::sending(e, outcome.as_deref()),
                Err(_) => Failed::no_answer(timeout, outcome.as_deref()),
            };
            if let Err(page) = attempt.failed(failed) {
                let mut r = respond(page);
                r.headers_mut().insert(X_REQUEST_ID, request_id);
                return Ok(r);
            }
        };
        let asked = upgrade.as_ref().map(|(protocol, _)| protocol);
        if let Some(why) = headers::unforwardable(resp.status(), resp.headers(), asked) {
            let mut r = respond(Page::invalid_response(why));
            claim
                .balancer()
                .stats
                .record_failure(502, started.elapsed());
            r.headers_mut().insert(X_REQUEST_ID, request_id);
            return Ok(r);
        }
        claim
            .balancer()
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
                return Ok(Response::from_parts(parts, ProxyBody::empty()));
            }
        }
        let (mut parts, body) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
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
        let body = Tracked::new(body, sender, claim, busy, event_stream);
        Ok(Response::from_parts(parts, ProxyBody::Upstream(body)))
    }
}

/// One of cyan's pages, as hyper's path answers it.
/// Where a load balancer checks a route on this host: the route's path
/// prefix, then this (`/cyan/up` for a route without one). A path of the
/// app's own by that name is shadowed.
pub const UP_PATH: &str = "/cyan/up";

/// `/cyan/up`: 200 while the route serves and is in the load balancer;
/// 503 while it is drained out of it (`draining`), in maintenance, or has
/// no replica of its live color in rotation (none live, all stopped or
/// ejected by health checks). Never forwarded.
fn up(route: &super::router::RouteEntry) -> Page {
    let serving = route.live.as_ref().map_or(0, |b| b.in_rotation());
    let (status, why) = if route.draining {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else if route.maintenance.is_some() {
        (StatusCode::SERVICE_UNAVAILABLE, "maintenance")
    } else if serving == 0 {
        (StatusCode::SERVICE_UNAVAILABLE, "no replica in rotation")
    } else {
        (StatusCode::OK, "up")
    };
    Page::text(status, format!("{why}\n"))
}

fn respond(page: Page) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::Own(Full::new(Bytes::from(page.body))));
    *r.status_mut() = page.status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(s) = page.retry_after_s {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    r
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
