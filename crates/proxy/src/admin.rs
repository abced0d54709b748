//! The admin API: JSON in, a control-plane verb (`control`), JSON out.
//!
//! `handle` is a table from (method, path) to one verb of the router, or to
//! one of the server's own acts (health, upgrade, shutdown); the rules live
//! in the verbs. Where it listens, and who may ask, is `admin_listen`'s.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::api::{
    CandidateRequest, ColorSpec, DrainingSpec, ErrorBody, Health, HoldRequest, LockRequest,
    MaintenanceSpec, RefusedCert, ReloadResponse, RemoveRequest, RouteSpec, SwitchRequest,
    UpgradeRequest, UpgradeResponse,
};
use super::router::ChangeError;
use super::Proxy;
use cyan_plan::release::Color;

type AdminResponse = Response<Full<Bytes>>;

/// Answers one admin request (never an `Err`: every failure is an
/// answer, with a JSON `ErrorBody`).
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
    Ok(dispatch(&proxy, &method, &path, &segs, &body).await)
}

/// The table: (method, path) to a verb, with its body decoded and its
/// answer encoded.
async fn dispatch(
    proxy: &Arc<Proxy>,
    method: &Method,
    path: &str,
    segs: &[&str],
    body: &Bytes,
) -> AdminResponse {
    let router = &proxy.router;
    use Method as M;
    match (method, segs) {
        (&M::GET, ["v1", "health"]) => json(StatusCode::OK, &health(proxy)),
        (&M::GET, ["v1", "routes"]) => json(StatusCode::OK, &router.views()),
        (&M::POST, ["v1", "reload"]) => json(StatusCode::OK, &reload(proxy)),
        (&M::GET, ["v1", "routes", name]) => match router.view(name) {
            Some(v) => json(StatusCode::OK, &v),
            None => error(StatusCode::NOT_FOUND, format!("no route named {name:?}")),
        },
        (&M::PUT, ["v1", "routes", name]) => {
            with_body(body, |spec: RouteSpec| router.put_route(name, spec, proxy))
        }
        (&M::DELETE, ["v1", "routes", name]) => with_body(body, |req: RemoveRequest| {
            router.remove(name, req.lock.as_deref())
        }),
        (&M::POST, ["v1", "routes", name, "claim"]) => {
            with_body(body, |spec: RouteSpec| router.claim(name, &spec, proxy))
        }
        (&M::PUT, ["v1", "routes", name, "colors", color]) => with_body(body, |spec: ColorSpec| {
            router.set_color(name, parse_color(color)?, spec.upstreams)
        }),
        (&M::DELETE, ["v1", "routes", name, "colors", color]) => {
            done(parse_color(color).and_then(|color| router.remove_color(name, color)))
        }
        (&M::PUT, ["v1", "routes", name, "candidate"]) => {
            with_body(body, |req: CandidateRequest| {
                router.set_candidate(name, req, proxy)
            })
        }
        (&M::DELETE, ["v1", "routes", name, "candidate"]) => done(router.clear_candidate(name)),
        (&M::POST, ["v1", "routes", name, "switch"]) => decode(body, |req: SwitchRequest| {
            answer(router.switch(name, req, proxy))
        }),
        (&M::POST, ["v1", "routes", name, "hold"]) => decode(body, |req: HoldRequest| {
            let held = router.hold(name, req.timeout_ms);
            answer(held.map(|ms| serde_json::json!({"held_ms": ms})))
        }),
        (&M::DELETE, ["v1", "routes", name, "hold"]) => done(router.release_hold(name)),
        (&M::PUT, ["v1", "routes", name, "maintenance"]) => {
            with_body(body, |spec: MaintenanceSpec| {
                router.set_maintenance(name, spec.maintenance)
            })
        }
        (&M::PUT, ["v1", "routes", name, "draining"]) => with_body(body, |spec: DrainingSpec| {
            router.set_draining(name, spec.draining)
        }),
        (&M::PUT, ["v1", "routes", name, "record"]) => {
            with_body(body, |record| router.put_record(name, record))
        }
        (&M::POST, ["v1", "routes", name, "lock"]) => {
            decode(body, |req: LockRequest| answer(router.lock(name, req)))
        }
        (&M::DELETE, ["v1", "routes", name, "lock", token]) => done(router.unlock(name, token)),
        (&M::POST, ["v1", "upgrade"]) => match serde_json::from_slice::<UpgradeRequest>(body) {
            Ok(req) => upgrade(proxy, req).await,
            Err(e) => bad_body(e),
        },
        (&M::POST, ["v1", "shutdown"]) => {
            proxy.shutdown();
            json(StatusCode::OK, &serde_json::json!({"shutting_down": true}))
        }
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {method} {path}"),
        ),
    }
}

fn health(proxy: &Proxy) -> Health {
    Health {
        ok: true,
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
        listen: proxy.opts.listen.clone(),
        tls_listen: proxy.opts.tls_listen.clone(),
    }
}

fn reload(proxy: &Proxy) -> ReloadResponse {
    let refreshed = proxy.router.reload_certs();
    let refused = refreshed.refused.into_iter();
    ReloadResponse {
        renewed: refreshed.renewed,
        refused: refused
            .map(|(route, error)| RefusedCert { route, error })
            .collect(),
    }
}

async fn upgrade(proxy: &Arc<Proxy>, req: UpgradeRequest) -> AdminResponse {
    match super::handoff::upgrade(proxy, &req.binary).await {
        Ok(new_pid) => json(
            StatusCode::OK,
            &UpgradeResponse {
                old_pid: std::process::id(),
                new_pid,
            },
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// A color named in the path: 400 for any other word.
fn parse_color(color: &str) -> Result<Color, ChangeError> {
    color
        .parse()
        .map_err(|e| ChangeError::Invalid(format!("{e}")))
}

/// Decodes the body as `T` (400 when it is not one) and answers with `f`.
fn decode<T: DeserializeOwned>(body: &Bytes, f: impl FnOnce(T) -> AdminResponse) -> AdminResponse {
    match serde_json::from_slice::<T>(body) {
        Ok(v) => f(v),
        Err(e) => bad_body(e),
    }
}

/// Decodes the body as `T` for a verb that answers `{}` when it is done.
fn with_body<T: DeserializeOwned>(
    body: &Bytes,
    verb: impl FnOnce(T) -> Result<(), ChangeError>,
) -> AdminResponse {
    decode(body, |v| done(verb(v)))
}

fn bad_body(e: serde_json::Error) -> AdminResponse {
    error(StatusCode::BAD_REQUEST, format!("bad request body: {e}"))
}

/// `{}` for a verb that was done, else its error.
fn done(r: Result<(), ChangeError>) -> AdminResponse {
    answer(r.map(|()| serde_json::json!({})))
}

/// A verb's answer as JSON, or its error with the status that says why.
fn answer<R: Serialize>(r: Result<R, ChangeError>) -> AdminResponse {
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
