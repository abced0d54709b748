//! The admin API's request and response bodies, shared by server and client.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::lease::Lock;
use super::router::normalize_host;
use super::state::{Maintenance, Preview, RoutePolicy, RouteState, TlsSource, Upstream};
use cyan_plan::release::Color;

/// `PUT /v1/routes/{name}`: where the route's requests come from, and how
/// they are balanced and drained.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouteSpec {
    pub hosts: Vec<String>,
    pub listen: Option<SocketAddr>,
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub policy: RoutePolicy,
    /// `{cert, key}` (PEM files), or `"acme"`: a certificate the proxy
    /// obtains and renews for `hosts` (`acme`).
    #[serde(default)]
    pub tls: Option<TlsSource>,
    /// Where the candidate is served before the switch (`proxy.preview`).
    #[serde(default)]
    pub preview: Option<PreviewSpec>,
}

/// `proxy.preview` as the admin API takes it: hosts and/or a listen
/// address of the route's preview. It serves the route's path prefix, in
/// plain HTTP.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviewSpec {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub listen: Option<SocketAddr>,
}

impl RouteSpec {
    /// The preview as the route's state holds it: hosts normalized, with
    /// this spec's path prefix.
    pub fn preview_state(&self) -> Option<Preview> {
        let p = self.preview.as_ref()?;
        Some(Preview {
            hosts: p
                .hosts
                .iter()
                .map(|h| normalize_host(h).into_owned())
                .collect(),
            listen: p.listen,
            path_prefix: self
                .path_prefix
                .as_deref()
                .and_then(prefix_key)
                .map(str::to_string),
        })
    }

    /// Sets `r`'s hosts (normalized), listen address, path prefix
    /// (`prefix_key`), policy, TLS and preview to this spec's.
    pub fn apply(self, r: &mut RouteState) {
        r.preview = self.preview_state();
        r.hosts = self
            .hosts
            .iter()
            .map(|h| normalize_host(h).into_owned())
            .collect();
        r.listen = self.listen;
        r.path_prefix = self
            .path_prefix
            .as_deref()
            .and_then(prefix_key)
            .map(str::to_string);
        r.policy = self.policy;
        r.tls = self.tls;
    }

    /// Does `r` route as this spec says?
    pub fn is_applied(&self, r: &RouteState) -> bool {
        let mut wanted = r.clone();
        self.clone().apply(&mut wanted);
        wanted == *r
    }
}

/// A path prefix as routes match and own it: without trailing slashes
/// (`/api/` and `/api` serve the same paths), and `None` for `/`.
pub fn prefix_key(prefix: &str) -> Option<&str> {
    Some(prefix.trim_end_matches('/')).filter(|p| !p.is_empty())
}

/// `POST /v1/routes/{name}/hold`: new requests wait until the next switch
/// (or `DELETE .../hold`), at most `timeout_ms` (capped at 60 s).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HoldRequest {
    pub timeout_ms: u64,
}

/// `PUT /v1/routes/{name}/maintenance`: on with `Some`, off with `None`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MaintenanceSpec {
    pub maintenance: Option<Maintenance>,
}

/// `PUT /v1/routes/{name}/draining`: out of the load balancer (`true`:
/// `/cyan/up` answers 503) or back in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrainingSpec {
    pub draining: bool,
}

/// `PUT /v1/routes/{name}/colors/{color}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ColorSpec {
    pub upstreams: Vec<Upstream>,
}

/// `POST /v1/routes/{name}/claim` takes a `RouteSpec` and changes nothing:
/// 200 when the route could take those hosts and that listen address, 409
/// naming the app that holds one.
///
/// `DELETE /v1/routes/{name}`: removes a route, with its record and lock;
/// refused (409) while someone else holds the lock.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RemoveRequest {
    /// The caller's lock token, when it holds the route's lock.
    #[serde(default)]
    pub lock: Option<String>,
}

/// `PUT /v1/routes/{name}/candidate`: `color`'s set passed its gate and
/// was never live. Its upstreams are set, it becomes the candidate the
/// preview serves, and the preview is set, in one change. Refused (409)
/// for the live color. `DELETE .../candidate`: no candidate (the preview
/// answers 503).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CandidateRequest {
    pub color: Color,
    pub upstreams: Vec<Upstream>,
    /// The route's preview (`RouteSpec::preview_state`); `None`: none.
    #[serde(default)]
    pub preview: Option<Preview>,
}

/// `POST /v1/routes/{name}/switch`: make `color` live in one atomic step,
/// optionally setting its upstreams and the deployer's record in the same step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SwitchRequest {
    pub color: Color,
    #[serde(default)]
    pub upstreams: Option<Vec<Upstream>>,
    #[serde(default)]
    pub record: Option<serde_json::Value>,
    /// The route's hosts, listen address and policy, applied in the same
    /// step: a deploy that never switches leaves routing as it was.
    ///
    /// A switch to the route's candidate ends it as the candidate in the
    /// same step: the preview answers 503 from then on.
    #[serde(default)]
    pub route: Option<RouteSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SwitchResponse {
    pub previous: Option<Color>,
    pub live: Color,
}

/// `POST /v1/routes/{name}/lock`: take or renew the deploy lock.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockRequest {
    pub token: String,
    pub holder: String,
    pub pid: u32,
    pub host: String,
    pub ttl_ms: u64,
}

/// The body of every error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default)]
    pub lock: Option<Lock>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Health {
    pub ok: bool,
    pub pid: u32,
    pub version: String,
    /// The proxy's own listen addresses (`--listen`), where every
    /// host-routed app is served; routes' own addresses are not here.
    #[serde(default)]
    pub listen: Vec<std::net::SocketAddr>,
    /// Its TLS listen addresses (`--tls-listen`).
    #[serde(default)]
    pub tls_listen: Vec<std::net::SocketAddr>,
}

/// `POST /v1/upgrade`: hand over to a new proxy process running `binary`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpgradeRequest {
    pub binary: std::path::PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpgradeResponse {
    pub old_pid: u32,
    pub new_pid: u32,
}

/// `POST /v1/reload`: TLS files read again where they changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadResponse {
    /// Routes now serving a renewed certificate.
    pub renewed: Vec<String>,
    /// Routes whose files changed into a pair that does not load, and why:
    /// they still serve their last good certificate.
    #[serde(default)]
    pub refused: Vec<RefusedCert>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefusedCert {
    pub route: String,
    pub error: String,
}
