//! The dashboard's HTTP side: the page, its live feed, its actions.
//!
//! | request | answer |
//! |---|---|
//! | `GET /` | the page (or, with `--token-file`, the login form) |
//! | `GET /app.js`, `/style.css` | the page's script and style (no data in them) |
//! | `GET /api/overview` | every app's status and history (JSON) |
//! | `GET /api/events` | the live feed (`text/event-stream`, see `feed`) |
//! | `POST /api/actions` | `{action, app, environment, to?}`: promote, abort, rollback |
//! | `POST /login`, `/logout` | a session from the token, and its end |
//!
//! Everything the page needs is in the binary: it works offline, with no
//! font, script or style from elsewhere, and its Content-Security-Policy
//! allows nothing else. Header reads have a deadline, bodies a size and a
//! deadline, and live feeds a number.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt as _, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

use super::access::{Access, Refusal, Visitor, COOKIE_NAME, SESSION_TTL};
use super::actions::{self, Actions};
use super::feed::Feed;

const PAGE: &str = include_str!("assets/index.html");
const LOGIN: &str = include_str!("assets/login.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");

/// The page may load its own script and style and talk to its own
/// origin, nothing else.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Live feeds open at once, over all viewers.
pub const MAX_FEEDS: usize = 64;
/// Connections open at once; each has its header deadline (10 s).
pub const MAX_CONNECTIONS: usize = 256;
/// Connections open at once from one address (an IPv6 /64 counts as
/// one): a browser opens 6 per host, and a page holds one feed.
pub const PER_ADDRESS: usize = 16;
/// The largest request body (a login or an action), in bytes.
const BODY_MAX: usize = 4096;

type Answer = Response<BoxBody<Bytes, Infallible>>;

/// The dashboard's parts.
pub struct Dashboard {
    pub access: Access,
    pub feed: Arc<Feed>,
    pub actions: Actions,
    /// No action is taken (`--read-only`): the page shows no buttons and
    /// `POST /api/actions` is a 403.
    pub read_only: bool,
    feeds: Arc<AtomicUsize>,
}

impl Dashboard {
    pub fn new(access: Access, feed: Arc<Feed>, actions: Actions, read_only: bool) -> Dashboard {
        Dashboard {
            access,
            feed,
            actions,
            read_only,
            feeds: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Accepts connections until `stop` resolves; connections already open
    /// (live feeds) end with the process.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            .max_buf_size(64 * 1024);
        let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let per_address = Arc::new(std::sync::Mutex::new(HashMap::new()));
        tokio::pin!(stop);
        loop {
            let (stream, peer) = tokio::select! {
                () = &mut stop => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("dashboard: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            // Past the bound, a connection is closed at once: the page
            // is for a few people, not for whoever opens sockets.
            let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
                tracing::debug!(%peer, "dashboard: {MAX_CONNECTIONS} connections open; closing a new one");
                continue;
            };
            // One address may not take every slot (before any login, so
            // the console stays reachable when someone floods it).
            let Some(mine) = PerAddress::take(&per_address, peer.ip()) else {
                tracing::debug!(%peer, "dashboard: {PER_ADDRESS} connections open from this address; closing a new one");
                continue;
            };
            let me = Arc::clone(&self);
            let service = hyper::service::service_fn(move |req| {
                let me = Arc::clone(&me);
                async move { Ok::<_, Infallible>(me.handle(peer, req).await) }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, "dashboard connection ended: {e}");
                }
                drop((permit, mine));
            });
        }
    }

    async fn handle(&self, peer: SocketAddr, req: Request<Incoming>) -> Answer {
        let mut r = self.route(peer, req).await;
        let h = r.headers_mut();
        h.insert("content-security-policy", HeaderValue::from_static(CSP));
        h.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
        h.insert("x-frame-options", HeaderValue::from_static("DENY"));
        h.entry(CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
        r
    }

    async fn route(&self, peer: SocketAddr, req: Request<Incoming>) -> Answer {
        let path = req.uri().path().to_string();
        match (req.method().clone(), path.as_str()) {
            (Method::GET, "/app.js") => asset(SCRIPT, "text/javascript; charset=utf-8"),
            (Method::GET, "/style.css") => asset(STYLE, "text/css; charset=utf-8"),
            (Method::GET, "/favicon.ico") => plain(StatusCode::NO_CONTENT, ""),
            (Method::POST, "/login") => self.login(peer, req).await,
            (Method::POST, "/logout") => {
                self.access.logout(req.headers());
                let mut r = see_other("/");
                r.headers_mut().insert(
                    SET_COOKIE,
                    HeaderValue::from_str(&format!(
                        "{COOKIE_NAME}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"
                    ))
                    .expect("cookie"),
                );
                r
            }
            (Method::GET, "/") if self.access.has_login() && query_token(&req).is_some() => {
                // `/?token=…`, the URL `cyan dashboard` prints: a login.
                let token = query_token(&req).unwrap_or_default();
                self.session(peer, req.headers(), &token)
            }
            (method, "/" | "/api/overview" | "/api/events" | "/api/actions") => {
                let visitor = match self.access.admit(peer.ip(), req.headers()) {
                    Ok(v) => v,
                    Err(Refusal::LoginNeeded) if path == "/" && method == Method::GET => {
                        return login_page(StatusCode::OK, "");
                    }
                    Err(refusal) => return refused(&refusal),
                };
                match (method, path.as_str()) {
                    (Method::GET, "/") => self.page(&visitor),
                    (Method::GET, "/api/overview") => json(StatusCode::OK, &*self.feed.overview()),
                    (Method::GET, "/api/events") => self.events(),
                    (Method::POST, "/api/actions") => self.act(&visitor, req).await,
                    (m, _) => plain(
                        StatusCode::METHOD_NOT_ALLOWED,
                        &format!("{m} is not taken here"),
                    ),
                }
            }
            _ => plain(StatusCode::NOT_FOUND, "no such page"),
        }
    }

    fn page(&self, visitor: &Visitor) -> Answer {
        let html = fill(PAGE, |name| match name {
            "csrf" => escape(&visitor.csrf),
            "user" => escape(&visitor.user),
            "read_only" => (if self.read_only { "true" } else { "false" }).into(),
            "logout" => (if self.access.has_login() {
                ""
            } else {
                "hidden"
            })
            .into(),
            _ => String::new(),
        });
        asset_owned(html, "text/html; charset=utf-8")
    }

    fn events(&self) -> Answer {
        if self.feeds.fetch_add(1, Ordering::SeqCst) >= MAX_FEEDS {
            self.feeds.fetch_sub(1, Ordering::SeqCst);
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("{MAX_FEEDS} live feeds are open already"),
            );
        }
        let (first, rx) = self.feed.subscribe();
        let body = FeedBody::new(first, rx, Open(Arc::clone(&self.feeds)));
        let mut r = Response::new(body.boxed());
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        r
    }

    async fn act(&self, visitor: &Visitor, req: Request<Incoming>) -> Answer {
        if self.read_only {
            return error(
                StatusCode::FORBIDDEN,
                "this dashboard is read-only (--read-only)".into(),
            );
        }
        if let Err(e) = Access::action_allowed(visitor, req.headers()) {
            return error(StatusCode::FORBIDDEN, e);
        }
        let body = match read_body(req).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let asked: actions::Request = match serde_json::from_slice(&body) {
            Ok(a) => a,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("not an action: {e}")),
        };
        match self.actions.run(&asked, &visitor.user).await {
            Ok(outcome) => json(StatusCode::OK, &outcome),
            Err(e) => error(StatusCode::BAD_REQUEST, e),
        }
    }

    async fn login(&self, peer: SocketAddr, req: Request<Incoming>) -> Answer {
        if !self.access.has_login() {
            return see_other("/");
        }
        // Another site may not log a browser in with a token of its own.
        if let Err(e) = Access::same_origin(req.headers()) {
            return login_page(StatusCode::FORBIDDEN, &e);
        }
        let parts = req.headers().clone();
        let body = match read_body(req).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let token = form_urlencoded::parse(&body)
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        self.session(peer, &parts, &token)
    }

    /// A session for `token`: its cookie, and the page (303 to `/`, which
    /// also takes a `?token=` out of the address bar); else the login
    /// form, saying why.
    fn session(&self, peer: SocketAddr, headers: &hyper::HeaderMap, token: &str) -> Answer {
        match self.access.login(peer.ip(), token.trim()) {
            Ok(id) => {
                let mut r = see_other("/");
                // Served over TLS by a proxy in front: the cookie is never
                // sent in the clear.
                let secure = headers
                    .get("x-forwarded-proto")
                    .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));
                let cookie = format!(
                    "{COOKIE_NAME}={id}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}",
                    SESSION_TTL.as_secs(),
                    if secure { "; Secure" } else { "" }
                );
                r.headers_mut()
                    .insert(SET_COOKIE, HeaderValue::from_str(&cookie).expect("cookie"));
                r
            }
            Err(Refusal::TooMany) => {
                login_page(StatusCode::TOO_MANY_REQUESTS, &Refusal::TooMany.message())
            }
            Err(_) => login_page(StatusCode::UNAUTHORIZED, "That is not the token."),
        }
    }
}

/// The `token` of a request's query (`/?token=…`), if it has one; any
/// other query (`/?utm=…`) is no login.
fn query_token(req: &Request<Incoming>) -> Option<String> {
    let query = req.uri().query()?.as_bytes();
    form_urlencoded::parse(query)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

/// A request body of at most `BODY_MAX` bytes, in at most 10 s.
async fn read_body(req: Request<Incoming>) -> Result<Bytes, Answer> {
    match tokio::time::timeout(
        Duration::from_secs(10),
        Limited::new(req.into_body(), BODY_MAX).collect(),
    )
    .await
    {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(_)) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a body here is at most {BODY_MAX} bytes"),
        )),
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            "the body took over 10 s".into(),
        )),
    }
}

/// The live feed's body: the first frames, then each broadcast one.
struct FeedBody {
    first: std::collections::VecDeque<Bytes>,
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    _open: Open,
}

impl FeedBody {
    /// Forwards `rx` to the body through a task of its own (a broadcast
    /// receiver has no poll method), which ends when the page goes.
    fn new(first: Vec<Bytes>, mut rx: broadcast::Receiver<Bytes>, open: Open) -> FeedBody {
        let (tx, body_rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let frame = match rx.recv().await {
                    Ok(b) => b,
                    // A page that read too slowly skips what it missed.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(frame).await.is_err() {
                    return;
                }
            }
        });
        FeedBody {
            first: first.into(),
            rx: body_rx,
            _open: open,
        }
    }
}

/// Connections open per address: one is held until dropped.
struct PerAddress {
    counts: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
    at: IpAddr,
}

impl PerAddress {
    fn take(
        counts: &Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
        peer: IpAddr,
    ) -> Option<PerAddress> {
        let at = super::access::network(peer);
        let mut c = counts.lock().expect("connections");
        let n = c.entry(at).or_default();
        if *n >= PER_ADDRESS {
            return None;
        }
        *n += 1;
        Some(PerAddress {
            counts: Arc::clone(counts),
            at,
        })
    }
}

impl Drop for PerAddress {
    fn drop(&mut self) {
        let mut c = self.counts.lock().expect("connections");
        if let Some(n) = c.get_mut(&self.at) {
            *n -= 1;
            if *n == 0 {
                c.remove(&self.at);
            }
        }
    }
}

/// Counts an open feed until it is dropped.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Body for FeedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(b) = self.first.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        self.rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

fn asset(text: &'static str, kind: &'static str) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())).boxed());
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn asset_owned(text: String, kind: &'static str) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(text)).boxed());
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    r
}

fn login_page(status: StatusCode, message: &str) -> Answer {
    let mut r = asset_owned(fill(LOGIN, |_| escape(message)), "text/html; charset=utf-8");
    *r.status_mut() = status;
    r
}

fn see_other(to: &'static str) -> Answer {
    let mut r = plain(StatusCode::SEE_OTHER, "");
    r.headers_mut()
        .insert(LOCATION, HeaderValue::from_static(to));
    r
}

fn plain(status: StatusCode, text: &str) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(text.to_string())).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(status: StatusCode, v: &impl serde::Serialize) -> Answer {
    let mut r =
        Response::new(Full::new(Bytes::from(serde_json::to_vec(v).expect("serializes"))).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, message: String) -> Answer {
    json(status, &serde_json::json!({"error": message}))
}

fn refused(r: &Refusal) -> Answer {
    let status = match r {
        Refusal::TooMany => StatusCode::TOO_MANY_REQUESTS,
        Refusal::ForeignHost(_) => StatusCode::MISDIRECTED_REQUEST,
        Refusal::LoginNeeded | Refusal::NoHeader(_) => StatusCode::UNAUTHORIZED,
    };
    error(status, r.message())
}

/// `template` with each `{{name}}` replaced by `value(name)`, in one pass:
/// a value is never read as a placeholder itself.
fn fill(template: &str, value: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start..].find("}}") else {
            break;
        };
        out.push_str(&rest[..start]);
        out.push_str(&value(&rest[start + 2..start + len]));
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

/// Text made safe inside HTML (element content and quoted attributes).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
