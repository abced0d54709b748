//! The proxy's persistent state: routes, their color sets, the deployer's
//! record and the deploy lock (`lease`). Kept on disk by `journal` (each
//! change appended and fsynced before it is acknowledged) and read back
//! before a restarted proxy accepts traffic.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::lease::Lock;
use cyan_plan::release::Color;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProxyState {
    /// By route name. A persistent map: a copy (a compaction's snapshot)
    /// costs nothing, and a change copies only its own path.
    #[serde(default)]
    pub routes: imbl::OrdMap<String, RouteState>,
}

/// One app (in one environment) as the proxy knows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteState {
    /// Host headers routed here (lowercase, no port).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// A listen address whose requests all come here.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// The color receiving traffic.
    #[serde(default)]
    pub live: Option<Color>,
    /// Upstreams per color.
    #[serde(default)]
    pub colors: BTreeMap<Color, Vec<Upstream>>,
    /// Opaque to the proxy: the deployer's record, stored verbatim.
    #[serde(default)]
    pub record: serde_json::Value,
    #[serde(default)]
    pub lock: Option<Lock>,
    /// Only requests whose path starts with this are the route's (`/api`).
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub policy: RoutePolicy,
    /// While set, every request gets a 503 with `Retry-After`.
    #[serde(default)]
    pub maintenance: Option<Maintenance>,
    /// Taken out of the load balancer in front of this host: its
    /// `/cyan/up` answers 503 (the LB stops sending), while the requests
    /// that still come are served as ever. Kept across restarts, so a
    /// deploy killed while the host was out leaves it out until the next.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
    /// Certificate and key for the route's hosts (and its own listener,
    /// which is then TLS): from files, or obtained by the proxy (ACME).
    #[serde(default)]
    pub tls: Option<TlsSource>,
    /// New requests wait (up to this wall-clock time, in ms since the
    /// epoch) until the next switch releases them to the new color.
    #[serde(default)]
    pub hold_until_ms: Option<u64>,
    /// Where the candidate is served before it is live (`proxy.preview`):
    /// held by the route from its first gate on, like its hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<Preview>,
    /// The color the preview serves: a set that passed its gate and was
    /// never live. Set by the deployer (the record is opaque here, so only
    /// it knows a candidate from a previous release kept hot); cleared by
    /// the switch that makes it live, in the same change, and when the
    /// color is removed. Never the live color.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<Color>,
}

/// A route's preview: hosts and a listen address of its own where the
/// candidate answers, under the route's own path prefix; without a
/// candidate, a 503 that says so. Never the live color.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preview {
    /// Host headers (lowercase, no port).
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// The route's path prefix (`api::prefix_key`), copied when the
    /// preview was set, so a preview set before the route's first switch
    /// serves the paths the route will.
    #[serde(default)]
    pub path_prefix: Option<String>,
}

impl RouteState {
    /// The color the preview serves now, if any: never the live one.
    pub fn previewed(&self) -> Option<Color> {
        self.candidate.filter(|c| Some(*c) != self.live)
    }

    /// Makes `color` live; returns the color that was. Held requests go
    /// to it, and a candidate it makes live is no longer one: all in the
    /// one change the caller makes, so the preview never serves live.
    pub fn switch_to(&mut self, color: Color) -> Option<Color> {
        self.hold_until_ms = None;
        if self.candidate == Some(color) {
            self.candidate = None;
        }
        self.live.replace(color)
    }

    /// `color`'s set (not live) is the candidate, at `upstreams`, and the
    /// preview is `preview`.
    pub fn set_candidate(
        &mut self,
        color: Color,
        upstreams: Vec<Upstream>,
        preview: Option<Preview>,
    ) -> Result<(), String> {
        if self.live == Some(color) {
            return Err(format!(
                "{color} is live; the preview never serves the live color"
            ));
        }
        self.colors.insert(color, upstreams);
        self.candidate = Some(color);
        self.preview = preview;
        Ok(())
    }

    /// Sets `color`'s upstreams outside a gate's candidate (a repair, a
    /// previous release started again): such a set is not the candidate.
    pub fn set_color(&mut self, color: Color, upstreams: Vec<Upstream>) {
        self.colors.insert(color, upstreams);
        if self.candidate == Some(color) {
            self.candidate = None;
        }
    }

    /// Takes `color` out, and its preview with it.
    pub fn remove_color(&mut self, color: Color) {
        self.colors.remove(&color);
        if self.candidate == Some(color) {
            self.candidate = None;
        }
    }
}

/// One upstream of a color: the address the proxy connects to and, when
/// the deployer named it, the container that address belongs to.
///
/// A published port belongs to a container only while it runs: a restart
/// moves it, and a freed port can be taken by another app's container. So
/// an upstream with a `container` is used only while the engine says the
/// address is that container's (the deployer's `platform::follow` keeps it so),
/// and is out of rotation (`down`) while it is not. Written as an object;
/// read as one or as a bare `"ip:port"` (older state files and clients).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Upstream {
    pub addr: SocketAddr,
    /// The engine's id of the container behind `addr`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Why the address is not in rotation now (`"exited"`, `"removed"`);
    /// `None`: it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down: Option<String>,
}

impl Upstream {
    /// The upstream at `addr` that `container` (an engine id) answers on.
    pub fn of_container(addr: SocketAddr, container: &str) -> Upstream {
        Upstream {
            addr,
            container: Some(container.to_string()),
            down: None,
        }
    }

    /// Is it in rotation?
    pub fn up(&self) -> bool {
        self.down.is_none()
    }
}

impl From<SocketAddr> for Upstream {
    fn from(addr: SocketAddr) -> Upstream {
        Upstream {
            addr,
            container: None,
            down: None,
        }
    }
}

impl<'de> Deserialize<'de> for Upstream {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            addr: SocketAddr,
            #[serde(default)]
            container: Option<String>,
            #[serde(default)]
            down: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Bare(SocketAddr),
            Full(Full),
        }
        Ok(match Either::deserialize(d)? {
            Either::Bare(addr) => addr.into(),
            Either::Full(f) => Upstream {
                addr: f.addr,
                container: f.container,
                down: f.down,
            },
        })
    }
}

/// The addresses of `upstreams` that are in rotation.
pub fn routable(upstreams: &[Upstream]) -> Vec<SocketAddr> {
    upstreams
        .iter()
        .filter(|u| u.up())
        .map(|u| u.addr)
        .collect()
}

/// PEM files, by absolute path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// Where a route's certificate comes from. Written as it always was for
/// files (`{"cert": ..., "key": ...}`, so older state files and admin
/// clients still read), or as the string `"acme"`: the proxy obtains and
/// renews one for the route's hosts itself (`acme`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    Files(TlsFiles),
    Acme,
}

impl From<TlsFiles> for TlsSource {
    fn from(files: TlsFiles) -> TlsSource {
        TlsSource::Files(files)
    }
}

impl Serialize for TlsSource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TlsSource::Files(files) => files.serialize(s),
            TlsSource::Acme => s.serialize_str("acme"),
        }
    }
}

impl<'de> Deserialize<'de> for TlsSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Source;
        impl<'de> serde::de::Visitor<'de> for Source {
            type Value = TlsSource;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"acme\" or {cert, key}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TlsSource, E> {
                match v {
                    "acme" => Ok(TlsSource::Acme),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<TlsSource, A::Error> {
                let files = serde::de::value::MapAccessDeserializer::new(map);
                TlsFiles::deserialize(files).map(TlsSource::Files)
            }
        }
        d.deserialize_any(Source)
    }
}

/// How a route's requests are balanced, timed and drained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoutePolicy {
    pub balance: Balance,
    /// How long the old color's requests, and its WebSockets, may go on after a switch.
    pub drain_timeout_ms: u64,
    /// The window before the drain deadline over which the old color's
    /// long-lived connections end (`drain`); `None`: `drain_spread()`'s default.
    pub drain_spread_ms: Option<u64>,
    /// Time to the upstream's response head before the client gets a 504.
    pub response_timeout_ms: u64,
    /// Consecutive connect failures or timeouts that eject an upstream...
    pub eject_after: u32,
    /// ...for this long, unless every upstream of the color is ejected.
    pub eject_for_ms: u64,
    /// Optional active checks of the live color's upstreams.
    pub active_check: Option<ActiveCheck>,
    /// Peers (a load balancer, a CDN) whose forwarding headers are believed
    /// (`forwarding`); from anyone else they are replaced.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// `GET path` on every live upstream each `interval_ms`; one that does not
/// answer 2xx/3xx is out of rotation until it does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveCheck {
    pub path: String,
    pub interval_ms: u64,
}

/// The part of a route's policy that every request uses, copied out of the
/// routing table: the request then holds no reference into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestPolicy {
    pub balance: Balance,
    pub response_timeout_ms: u64,
    pub eject_after: u32,
    pub eject_for_ms: u64,
    /// The request came from one of the route's trusted proxies.
    pub trusted: bool,
}

impl RoutePolicy {
    /// The window the old color's long-lived connections end in: as set,
    /// else half the drain timeout but at least 5 s (so about a fifth of
    /// them, at most, end in any one second), never more than all of it.
    pub fn drain_spread(&self) -> std::time::Duration {
        let drain = self.drain_timeout_ms;
        let ms = self
            .drain_spread_ms
            .unwrap_or_else(|| (drain / 2).max(5_000))
            .min(drain);
        std::time::Duration::from_millis(ms)
    }

    /// The policy of a request from `peer`.
    pub fn per_request(&self, peer: std::net::IpAddr) -> RequestPolicy {
        RequestPolicy {
            balance: self.balance,
            response_timeout_ms: self.response_timeout_ms,
            eject_after: self.eject_after,
            eject_for_ms: self.eject_for_ms,
            trusted: !self.trusted_proxies.is_empty()
                && super::forwarding::trusts(&self.trusted_proxies, peer),
        }
    }
}

impl Default for RoutePolicy {
    fn default() -> Self {
        RoutePolicy {
            balance: Balance::RoundRobin,
            drain_timeout_ms: 30_000,
            drain_spread_ms: None,
            response_timeout_ms: 60_000,
            eject_after: 3,
            eject_for_ms: 10_000,
            active_check: None,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    #[default]
    RoundRobin,
    LeastConnections,
}

/// A route's maintenance page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maintenance {
    pub retry_after_s: u64,
    #[serde(default)]
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_read_bare_or_whole() {
        let bare: Upstream = serde_json::from_str(r#""127.0.0.1:9""#).unwrap();
        assert_eq!(
            bare,
            Upstream::from("127.0.0.1:9".parse::<SocketAddr>().unwrap())
        );
        let whole: Upstream = serde_json::from_str(
            r#"{"addr": "127.0.0.1:9", "container": "c0ffee", "down": "exited"}"#,
        )
        .unwrap();
        assert_eq!(whole.container.as_deref(), Some("c0ffee"));
        assert!(!whole.up());
        assert_eq!(
            serde_json::to_value(&bare).unwrap(),
            serde_json::json!({"addr": "127.0.0.1:9"})
        );
        assert!(serde_json::from_str::<Upstream>(r#"{"addr": "127.0.0.1:9", "x": 1}"#).is_err());
    }

    #[test]
    fn tls_reads_as_files_or_acme() {
        let files: TlsSource =
            serde_json::from_str(r#"{"cert": "/c.pem", "key": "/k.pem"}"#).unwrap();
        assert_eq!(
            files,
            TlsSource::Files(TlsFiles {
                cert: "/c.pem".into(),
                key: "/k.pem".into()
            })
        );
        assert_eq!(
            serde_json::to_value(&files).unwrap(),
            serde_json::json!({"cert": "/c.pem", "key": "/k.pem"}),
            "files are written as they always were"
        );
        let acme: TlsSource = serde_json::from_str(r#""acme""#).unwrap();
        assert_eq!(acme, TlsSource::Acme);
        assert_eq!(serde_json::to_string(&acme).unwrap(), r#""acme""#);
        let e = serde_json::from_str::<TlsSource>(r#""acmee""#).unwrap_err();
        assert!(
            e.to_string().contains(r#"expected "acme" or {cert, key}"#),
            "{e}"
        );
        assert!(serde_json::from_str::<TlsSource>(r#"{"cert": "/c.pem"}"#).is_err());
    }
}
