//! The admin API server: JSON over a Unix socket (mode 0600, in a 0700 folder).
//!
//! It never listens on a network address, so only the socket's owner can
//! switch traffic. Every change goes through `Router::change`, which persists
//! before it publishes.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::api::{
    CandidateRequest, ColorSpec, ErrorBody, Health, HoldRequest, LockRequest, MaintenanceSpec,
    RefusedCert, ReloadResponse, RemoveRequest, RouteSpec, SwitchRequest, SwitchResponse,
    UpgradeRequest, UpgradeResponse,
};

/// A hold is bounded: requests never wait longer than this.
const MAX_HOLD_MS: u64 = 60_000;
use super::router::ChangeError;
use super::state::{routable, Lock, RouteState, TlsSource};
use super::Proxy;
use crate::release::Color;

type AdminResponse = Response<Full<Bytes>>;

pub async fn handle(
    proxy: Arc<Proxy>,
    req: Request<Incoming>,
) -> Result<AdminResponse, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(error(
                StatusCode::BAD_REQUEST,
                format!("cannot read body: {e}"),
            ))
        }
    };
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    // Right after an upgrade, a change waits until the old process can
    // start no request any more: otherwise a request that starts after the
    // change could still get the old routes there (`handoff`).
    if method != Method::GET && matches!(segs.as_slice(), ["v1", "routes", ..] | ["v1", "upgrade"])
    {
        proxy.predecessor_quiet().await;
    }
    let resp = match (&method, segs.as_slice()) {
        (&Method::GET, ["v1", "health"]) => json(
            StatusCode::OK,
            &Health {
                ok: true,
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").into(),
                listen: proxy.opts.listen.clone(),
                tls_listen: proxy.opts.tls_listen.clone(),
            },
        ),
        (&Method::GET, ["v1", "routes"]) => json(StatusCode::OK, &proxy.router.views()),
        (&Method::POST, ["v1", "reload"]) => {
            let refreshed = proxy.router.reload_certs();
            let refused = refreshed.refused.into_iter();
            json(
                StatusCode::OK,
                &ReloadResponse {
                    renewed: refreshed.renewed,
                    refused: refused
                        .map(|(route, error)| RefusedCert { route, error })
                        .collect(),
                },
            )
        }
        (&Method::GET, ["v1", "routes", name]) => match proxy.router.view(name) {
            Some(v) => json(StatusCode::OK, &v),
            None => error(StatusCode::NOT_FOUND, format!("no route named {name:?}")),
        },
        (&Method::PUT, ["v1", "routes", name]) => with_body(&body, |spec: RouteSpec| {
            prepare_route(&proxy, name, &spec)?;
            proxy.router.change(name, true, |r| {
                spec.apply(r);
                Ok(serde_json::json!({}))
            })
        }),
        (&Method::DELETE, ["v1", "routes", name]) => with_body(&body, |req: RemoveRequest| {
            let token = req.lock.as_deref();
            proxy
                .router
                .remove(name, token)
                .map(|()| serde_json::json!({}))
        }),
        (&Method::POST, ["v1", "routes", name, "claim"]) => {
            with_body(&body, |spec: RouteSpec| claim(&proxy, name, spec))
        }
        (&Method::PUT, ["v1", "routes", name, "colors", color]) => {
            with_body(&body, |spec: ColorSpec| {
                let color: Color = color
                    .parse()
                    .map_err(|e| ChangeError::Invalid(format!("{e}")))?;
                proxy.router.change(name, false, |r| {
                    if r.live == Some(color) && routable(&spec.upstreams).is_empty() {
                        return Err(ChangeError::Conflict(format!(
                            "{color} is live; it cannot be emptied"
                        )));
                    }
                    r.set_color(color, spec.upstreams);
                    Ok(serde_json::json!({}))
                })
            })
        }
        (&Method::DELETE, ["v1", "routes", name, "colors", color]) => result(
            color
                .parse::<Color>()
                .map_err(|e| ChangeError::Invalid(format!("{e}")))
                .and_then(|color| {
                    proxy.router.change(name, false, |r| {
                        if r.live == Some(color) {
                            return Err(ChangeError::Conflict(format!(
                                "{color} is live; switch away first"
                            )));
                        }
                        r.remove_color(color);
                        Ok(serde_json::json!({}))
                    })
                }),
        ),
        (&Method::PUT, ["v1", "routes", name, "candidate"]) => {
            with_body(&body, |req: CandidateRequest| {
                if let Some(addr) = req.preview.as_ref().and_then(|p| p.listen) {
                    not_the_proxys_own(&proxy, addr, "preview listen address")?;
                    if !proxy.serves(addr) {
                        check_owners(&proxy, name, |r| r.preview = req.preview.clone())?;
                    }
                    listen_for(&proxy, addr, false)?;
                }
                proxy.router.change(name, false, |r| {
                    r.set_candidate(req.color, req.upstreams, req.preview)
                        .map_err(ChangeError::Conflict)?;
                    Ok(serde_json::json!({}))
                })
            })
        }
        (&Method::DELETE, ["v1", "routes", name, "candidate"]) => {
            result(proxy.router.change(name, false, |r| {
                r.candidate = None;
                Ok(serde_json::json!({}))
            }))
        }
        (&Method::POST, ["v1", "routes", name, "switch"]) => {
            with_body(&body, |req: SwitchRequest| {
                if let Some(spec) = &req.route {
                    prepare_route(&proxy, name, spec)?;
                }
                proxy.router.change(name, false, |r| {
                    if let Some(spec) = req.route {
                        spec.apply(r);
                    }
                    if let Some(ups) = req.upstreams {
                        r.colors.insert(req.color, ups);
                    }
                    if r.colors
                        .get(&req.color)
                        .is_none_or(|u| routable(u).is_empty())
                    {
                        return Err(ChangeError::Conflict(format!(
                            "{} has no upstreams in rotation; refusing to switch to nothing",
                            req.color
                        )));
                    }
                    // Held requests go to the new color; the candidate it
                    // makes live is no longer previewed, in this same change.
                    let previous = r.switch_to(req.color);
                    if let Some(record) = req.record {
                        r.record = record;
                    }
                    Ok(SwitchResponse {
                        previous,
                        live: req.color,
                    })
                })
            })
        }
        (&Method::POST, ["v1", "routes", name, "hold"]) => with_body(&body, |req: HoldRequest| {
            let timeout = req.timeout_ms.min(MAX_HOLD_MS);
            proxy.router.change(name, false, |r| {
                r.hold_until_ms = Some(crate::clock::now_ms() + timeout);
                Ok(serde_json::json!({"held_ms": timeout}))
            })
        }),
        (&Method::DELETE, ["v1", "routes", name, "hold"]) => {
            result(proxy.router.change(name, false, |r| {
                r.hold_until_ms = None;
                Ok(serde_json::json!({}))
            }))
        }
        (&Method::PUT, ["v1", "routes", name, "maintenance"]) => {
            with_body(&body, |spec: MaintenanceSpec| {
                proxy.router.change(name, false, |r| {
                    r.maintenance = spec.maintenance;
                    Ok(serde_json::json!({}))
                })
            })
        }
        (&Method::PUT, ["v1", "routes", name, "record"]) => {
            with_body(&body, |record: serde_json::Value| {
                proxy.router.change(name, false, |r| {
                    r.record = record;
                    Ok(serde_json::json!({}))
                })
            })
        }
        (&Method::POST, ["v1", "routes", name, "lock"]) => {
            match serde_json::from_slice::<LockRequest>(&body) {
                Ok(req) => take_lock(&proxy, name, req),
                Err(e) => error(StatusCode::BAD_REQUEST, format!("bad request body: {e}")),
            }
        }
        (&Method::DELETE, ["v1", "routes", name, "lock", token]) => {
            result(proxy.router.change(name, false, |r| {
                if r.lock.as_ref().is_some_and(|l| l.token == *token) {
                    r.lock = None;
                }
                Ok(serde_json::json!({}))
            }))
        }
        (&Method::POST, ["v1", "upgrade"]) => {
            match serde_json::from_slice::<UpgradeRequest>(&body) {
                Ok(req) => match super::handoff::upgrade(&proxy, &req.binary).await {
                    Ok(new_pid) => json(
                        StatusCode::OK,
                        &UpgradeResponse {
                            old_pid: std::process::id(),
                            new_pid,
                        },
                    ),
                    Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                },
                Err(e) => error(StatusCode::BAD_REQUEST, format!("bad request body: {e}")),
            }
        }
        (&Method::POST, ["v1", "shutdown"]) => {
            proxy.shutdown();
            json(StatusCode::OK, &serde_json::json!({"shutting_down": true}))
        }
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {method} {path}"),
        ),
    };
    Ok(resp)
}

/// Checks what a route spec needs outside the route's state (its TLS
/// files, its ACME hosts) and binds its listen address, before the change
/// that applies it.
fn prepare_route(proxy: &Arc<Proxy>, name: &str, spec: &RouteSpec) -> Result<(), ChangeError> {
    check_route(proxy, name, spec)?;
    let preview_listen = spec.preview.as_ref().and_then(|p| p.listen);
    if spec
        .listen
        .into_iter()
        .chain(preview_listen)
        .any(|a| !proxy.serves(a))
    {
        check_owners(proxy, name, |r| spec.clone().apply(r))?;
    }
    if let Some(addr) = spec.listen {
        listen_for(proxy, addr, spec.tls.is_some())?;
    }
    if let Some(addr) = spec.preview.as_ref().and_then(|p| p.listen) {
        listen_for(proxy, addr, false)?;
    }
    Ok(())
}

/// Refuses, before anything is bound, a change (`change` applied to the
/// route's state now) that would take a host or listen address another
/// route holds: a refused change must not leave a listener behind.
fn check_owners(
    proxy: &Arc<Proxy>,
    name: &str,
    change: impl FnOnce(&mut RouteState),
) -> Result<(), ChangeError> {
    let mut wanted = proxy.router.view(name).map(|v| v.state).unwrap_or_default();
    change(&mut wanted);
    proxy.router.check_claims(name, &wanted)
}

/// Binds `addr` (plain HTTP or TLS) unless the proxy serves it already.
fn listen_for(
    proxy: &Arc<Proxy>,
    addr: std::net::SocketAddr,
    tls: bool,
) -> Result<(), ChangeError> {
    proxy
        .ensure_listener(addr, tls)
        .map_err(|e| ChangeError::Conflict(format!("cannot listen on {addr}: {e}")))
}

/// Refuses `addr` as a route's own listen address (or its preview's,
/// `whose`) when it is one of the proxy's `--listen` / `--tls-listen`
/// addresses: there every app is routed by its Host, and an address a
/// route owns takes every request that arrives on it, other apps' too.
fn not_the_proxys_own(
    proxy: &Arc<Proxy>,
    addr: std::net::SocketAddr,
    whose: &str,
) -> Result<(), ChangeError> {
    let flag = match (
        proxy.opts.listen.contains(&addr),
        proxy.opts.tls_listen.contains(&addr),
    ) {
        (true, _) => "--listen",
        (_, true) => "--tls-listen",
        _ => return Ok(()),
    };
    Err(ChangeError::Conflict(format!(
        "{whose} {addr} is the proxy's own {flag} address, where every app is served by its host: \
         an app (or preview) that owned it would take the other apps' requests there. \
         Give it an address of its own, or route it there by host (proxy.host, preview.host)"
    )))
}

/// A route spec's path prefix, TLS files and ACME hosts, and listen
/// addresses that are not the proxy's own.
fn check_route(proxy: &Arc<Proxy>, name: &str, spec: &RouteSpec) -> Result<(), ChangeError> {
    if let Some(addr) = spec.listen {
        not_the_proxys_own(proxy, addr, "listen address")?;
    }
    if let Some(addr) = spec.preview.as_ref().and_then(|p| p.listen) {
        not_the_proxys_own(proxy, addr, "preview listen address")?;
    }
    if let Some(p) = spec.path_prefix.as_deref().filter(|p| !p.starts_with('/')) {
        return Err(ChangeError::Invalid(format!(
            "path prefix {p:?} must start with '/'"
        )));
    }
    match &spec.tls {
        Some(TlsSource::Files(files)) => proxy
            .router
            .check_tls(name, files)
            .map_err(ChangeError::Invalid)?,
        Some(TlsSource::Acme) => {
            super::acme::check_hosts(&spec.hosts).map_err(ChangeError::Invalid)?
        }
        None => {}
    }
    Ok(())
}

/// Could `name` take `spec`'s hosts and listen address? Nothing changes:
/// the listen address is bound and let go at once when nothing serves it.
fn claim(
    proxy: &Arc<Proxy>,
    name: &str,
    spec: RouteSpec,
) -> Result<serde_json::Value, ChangeError> {
    check_route(proxy, name, &spec)?;
    let preview_listen = spec.preview.as_ref().and_then(|p| p.listen);
    for addr in spec.listen.into_iter().chain(preview_listen) {
        if !proxy.serves(addr) {
            std::net::TcpListener::bind(addr)
                .map_err(|e| ChangeError::Conflict(format!("cannot listen on {addr}: {e}")))?;
        }
    }
    let mut wanted = RouteState::default();
    spec.apply(&mut wanted);
    proxy.router.check_claims(name, &wanted)?;
    Ok(serde_json::json!({}))
}

fn take_lock(proxy: &Arc<Proxy>, name: &str, req: LockRequest) -> AdminResponse {
    let now = crate::clock::now_ms();
    let out = proxy.router.change(name, true, |r| {
        if let Some(held) = &r.lock {
            if held.token != req.token && held.held(now) {
                return Err(ChangeError::Locked(held.clone()));
            }
        }
        let since = match &r.lock {
            Some(l) if l.token == req.token => l.since.clone(),
            _ => crate::clock::now_rfc3339(),
        };
        r.lock = Some(Lock {
            token: req.token,
            holder: req.holder,
            pid: req.pid,
            host: req.host,
            since,
            renewed_ms: now,
            ttl_ms: req.ttl_ms,
        });
        Ok(r.lock.clone())
    });
    result(out)
}

fn with_body<T: DeserializeOwned, R: Serialize>(
    body: &Bytes,
    f: impl FnOnce(T) -> Result<R, ChangeError>,
) -> AdminResponse {
    match serde_json::from_slice::<T>(body) {
        Ok(v) => result(f(v)),
        Err(e) => error(StatusCode::BAD_REQUEST, format!("bad request body: {e}")),
    }
}

fn result<R: Serialize>(r: Result<R, ChangeError>) -> AdminResponse {
    match r {
        Ok(v) => json(StatusCode::OK, &v),
        Err(ChangeError::NotFound(m)) => error(StatusCode::NOT_FOUND, m),
        Err(ChangeError::Conflict(m)) => error(StatusCode::CONFLICT, m),
        Err(ChangeError::Invalid(m)) => error(StatusCode::BAD_REQUEST, m),
        Err(ChangeError::Io(m)) => error(StatusCode::INTERNAL_SERVER_ERROR, m),
        Err(ChangeError::Locked(held)) => json(
            StatusCode::CONFLICT,
            &ErrorBody {
                error: format!("the deploy lock is held by {}", held.describe()),
                lock: Some(held),
            },
        ),
    }
}

fn json<T: Serialize>(status: StatusCode, v: &T) -> AdminResponse {
    let mut r = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(v).expect("serializable"),
    )));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, message: String) -> AdminResponse {
    json(
        status,
        &ErrorBody {
            error: message,
            lock: None,
        },
    )
}
