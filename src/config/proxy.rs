//! `proxy:`: how the cyan proxy routes to the app (hosts, listen address,
//! drain, balance, passive and active health, TLS, preview), and the URLs a
//! script opens it at. Docker's only: Kubernetes routes with Services.

use std::num::NonZeroU32;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::health::default_health_path;
use super::{Balance, Config, Dur};
use crate::proxy::api::Health;
use crate::proxy::state::{ActiveCheck, RoutePolicy};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Host header the proxy routes to this app.
    #[serde(default)]
    pub host: Option<String>,
    /// More Host headers for the same app (`[www.example.com]`).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// A listen address of the app's own; requests there need no Host match.
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
    /// Only requests under this path are the app's (e.g. `/api`); not stripped.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// How long in-flight requests and WebSockets on the old color may go on.
    #[serde(default = "default_drain")]
    pub drain_timeout: Dur,
    /// The window before the drain deadline over which the old color's
    /// WebSockets and streaming responses end, spread (default: half the
    /// drain timeout, at least 5 s).
    #[serde(default)]
    pub drain_spread: Option<Dur>,
    /// `round-robin` or `least-connections`.
    #[serde(default)]
    pub balance: Balance,
    /// Time to the app's response head before the client gets a 504.
    #[serde(default = "default_response_timeout")]
    pub response_timeout: Dur,
    #[serde(default)]
    pub passive_health: PassiveHealth,
    /// Optional: the proxy probes the live replicas itself.
    #[serde(default)]
    pub active_check: Option<ActiveCheckConfig>,
    /// Terminate TLS for `host` (SNI on the proxy's `--tls-listen`) and on
    /// `listen`, which then speaks TLS: `{ cert, key }` (paths relative to
    /// cyan.yaml), or `acme` for a certificate the proxy obtains and renews.
    #[serde(default)]
    pub tls: Option<ProxyTls>,
    /// Networks (CIDRs) of the load balancers or CDNs in front of the
    /// proxy whose `X-Forwarded-*` headers the app may believe. From anyone
    /// else those headers are replaced with what the proxy saw.
    #[serde(default)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Where the candidate answers before it is promoted, and never the
    /// live color (`require_approval: true`: look, then `cyan promote`).
    #[serde(default)]
    pub preview: Option<PreviewConfig>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            host: None,
            listen: None,
            path_prefix: None,
            drain_timeout: default_drain(),
            drain_spread: None,
            balance: Balance::default(),
            response_timeout: default_response_timeout(),
            passive_health: PassiveHealth::default(),
            active_check: None,
            tls: None,
            hosts: Vec::new(),
            trusted_proxies: Vec::new(),
            preview: None,
        }
    }
}

impl ProxyConfig {
    /// The route's policy as the proxy stores it.
    pub fn policy(&self) -> RoutePolicy {
        RoutePolicy {
            balance: self.balance,
            drain_timeout_ms: self.drain_timeout.0.as_millis() as u64,
            drain_spread_ms: self.drain_spread.map(|d| d.0.as_millis() as u64),
            response_timeout_ms: self.response_timeout.0.as_millis() as u64,
            eject_after: self.passive_health.failures.get(),
            eject_for_ms: self.passive_health.cooloff.0.as_millis() as u64,
            active_check: self.active_check.as_ref().map(|a| ActiveCheck {
                path: a.path.clone(),
                interval_ms: a.interval.0.as_millis() as u64,
            }),
            trusted_proxies: self.trusted_proxies.clone(),
        }
    }
}

/// `proxy.preview`: a host and/or a listen address of the app's preview,
/// both its own (not `proxy.host`'s, `hosts`' or `listen`'s). From the
/// moment a candidate passes its health gate until it is promoted,
/// aborted or removed after a failure, the preview serves it, under the
/// app's `path_prefix`, in plain HTTP; otherwise it answers 503 "no
/// candidate". A previous release kept hot is never served there.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewConfig {
    /// A Host header routed to the candidate.
    #[serde(default)]
    pub host: Option<String>,
    /// A listen address whose requests all go to the candidate.
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
}

impl PreviewConfig {
    /// The preview as the proxy's admin API takes it.
    pub fn spec(&self) -> crate::proxy::api::PreviewSpec {
        crate::proxy::api::PreviewSpec {
            hosts: self.host.iter().cloned().collect(),
            listen: self.listen,
        }
    }

    /// A URL a script on this host can open, as `Config::url` makes the
    /// app's: its own listen address when it has one, else its host on
    /// the proxy's `--listen` port (`served`), and the app's
    /// `path_prefix`, which the preview serves too. Always `http`.
    pub fn url(&self, served: &Health, path_prefix: Option<&str>) -> String {
        let base = match (&self.host, self.listen) {
            (_, Some(listen)) => format!("http://{}", reachable(listen)),
            (Some(host), None) => match served.listen.first().map(|a| a.port()) {
                Some(80) | None => format!("http://{host}"),
                Some(port) => format!("http://{host}:{port}"),
            },
            (None, None) => return String::new(),
        };
        with_prefix(base, path_prefix)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActiveCheckConfig {
    #[serde(default = "default_health_path")]
    pub path: String,
    #[serde(default = "default_active_interval")]
    pub interval: Dur,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// `proxy.tls`: PEM files, or `acme`: a certificate for the app's hosts
/// that the proxy obtains from its ACME CA and renews (`cyan proxy run
/// --acme-*`).
#[derive(Debug, Clone)]
pub enum ProxyTls {
    Files(TlsConfig),
    Acme,
}

impl Serialize for ProxyTls {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            ProxyTls::Files(files) => files.serialize(s),
            ProxyTls::Acme => s.serialize_str("acme"),
        }
    }
}

impl<'de> Deserialize<'de> for ProxyTls {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Tls;
        impl<'de> serde::de::Visitor<'de> for Tls {
            type Value = ProxyTls;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`acme` or { cert: cert.pem, key: key.pem }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<ProxyTls, E> {
                match v {
                    "acme" => Ok(ProxyTls::Acme),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<ProxyTls, A::Error> {
                let files = serde::de::value::MapAccessDeserializer::new(map);
                TlsConfig::deserialize(files).map(ProxyTls::Files)
            }
        }
        d.deserialize_any(Tls)
    }
}

/// Upstreams that fail `failures` times in a row (connect errors and
/// timeouts) get no traffic for `cooloff`, unless all of them are out.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealth {
    #[serde(default = "default_eject_after")]
    pub failures: NonZeroU32,
    #[serde(default = "default_cooloff")]
    pub cooloff: Dur,
}

impl Default for PassiveHealth {
    fn default() -> Self {
        PassiveHealth {
            failures: default_eject_after(),
            cooloff: default_cooloff(),
        }
    }
}

fn default_drain() -> Dur {
    Dur::from_secs(30)
}
fn default_response_timeout() -> Dur {
    Dur::from_secs(60)
}
fn default_active_interval() -> Dur {
    Dur::from_secs(5)
}
fn default_eject_after() -> NonZeroU32 {
    NonZeroU32::new(3).expect("nonzero")
}
fn default_cooloff() -> Dur {
    Dur::from_secs(10)
}

impl Config {
    /// A URL a script on this host can open: the app's own listen address
    /// when it has one (an unspecified address as loopback), else its host
    /// on the port the proxy serves hosts on (`served`: the proxy's
    /// `--listen` / `--tls-listen`, as `GET /v1/health` gives them), the
    /// port left out when it is the scheme's own; `https` when the route
    /// terminates TLS; its `path_prefix` after (without it the URL would
    /// open another app on the host, or a 404).
    pub fn url(&self, served: &Health) -> String {
        let tls = self.proxy.tls.is_some();
        let scheme = if tls { "https" } else { "http" };
        let base = match (&self.proxy.host, &self.proxy.listen) {
            // Its own listen address opens from any client on this host;
            // `*.localhost` names do not resolve everywhere (Python's
            // urllib cannot, without nss-myhostname), and the listen
            // address takes every request whatever its Host.
            (_, Some(listen)) => format!("{scheme}://{}", reachable(*listen)),
            (Some(host), None) => {
                let listeners = if tls {
                    &served.tls_listen
                } else {
                    &served.listen
                };
                match listeners.first().map(|a| a.port()) {
                    Some(80) if !tls => format!("http://{host}"),
                    Some(443) if tls => format!("https://{host}"),
                    Some(port) => format!("{scheme}://{host}:{port}"),
                    None => format!("{scheme}://{host}"),
                }
            }
            (None, None) => return String::new(),
        };
        with_prefix(base, self.proxy.path_prefix.as_deref())
    }
}

/// `base` with the path `prefix` routes on (`/api/` as `/api`), if any.
fn with_prefix(base: String, prefix: Option<&str>) -> String {
    match prefix.and_then(crate::proxy::api::prefix_key) {
        Some(p) => base + p,
        None => base,
    }
}

/// `addr` as a client on this host reaches it: an unspecified address
/// (`0.0.0.0`, `[::]`) as loopback.
fn reachable(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    if addr.ip().is_unspecified() {
        let ip: std::net::IpAddr = match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        };
        return std::net::SocketAddr::new(ip, addr.port());
    }
    addr
}
