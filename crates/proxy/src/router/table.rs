//! The routing table the request path reads: one immutable version of
//! every route, keyed by host and by listen address, and the host
//! normalization both its keys and the requests' Host headers go through.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use fnv::FnvHashMap;
use rustls::sign::CertifiedKey;

use crate::load_balancer::LoadBalancer;
use crate::state::{Maintenance, RoutePolicy};

/// What the request path needs of one route, or of its preview.
pub struct RouteEntry {
    pub name: String,
    /// The load balancer requests go to: the live color's, or for a
    /// preview the candidate's own (its counters apart from the color's,
    /// which `verify` reads after the switch). `None`: a 503 that says why.
    pub live: Option<Arc<LoadBalancer>>,
    /// The route's preview (`proxy.preview`): it serves only a candidate.
    pub preview: bool,
    pub path_prefix: Option<String>,
    pub policy: RoutePolicy,
    pub maintenance: Option<Maintenance>,
    pub hold_until_ms: Option<u64>,
    /// Out of the load balancer (`RouteState::draining`).
    pub draining: bool,
}

impl RouteEntry {
    pub(crate) fn matches(&self, path: &str) -> bool {
        self.path_prefix.as_deref().is_none_or(|p| {
            path.strip_prefix(p)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || p.ends_with('/'))
        })
    }
}

/// One immutable version of the routing table. Each key holds its routes
/// longest path prefix first, so `/api` wins over the host's catch-all.
///
/// Keyed with FNV rather than SipHash: a look-up per request, over a few
/// short keys that only the admin API inserts, so a client cannot flood a
/// bucket; SipHash cost more than the rest of the route look-up.
#[derive(Default)]
pub struct Table {
    pub(super) by_host: FnvHashMap<String, Vec<Arc<RouteEntry>>>,
    pub(super) by_listen: FnvHashMap<SocketAddr, Vec<Arc<RouteEntry>>>,
    pub(super) certs_by_host: FnvHashMap<String, Arc<CertifiedKey>>,
    pub(super) certs_by_listen: FnvHashMap<SocketAddr, Arc<CertifiedKey>>,
}

impl Table {
    pub fn cert_for_host(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        self.certs_by_host.get(host).cloned()
    }

    pub fn cert_for_listen(&self, local: SocketAddr) -> Option<Arc<CertifiedKey>> {
        self.certs_by_listen.get(&local).cloned()
    }

    /// The routes for a request: on a listen address no app owns, the Host
    /// header's; on one an app owns, that app's, unless the Host is one of
    /// the owner's own hosts (then all routes of that host, so another
    /// app's path prefix on it still gets its paths). A listen address
    /// belongs to its app: no other app's host takes its requests. Within
    /// each, the longest matching path prefix. To route several apps by
    /// host on one port, give the port to the proxy (`--listen`).
    ///
    /// An app's preview host is one of its own hosts on its listen
    /// address (where else would a host-only preview be asked for?); on
    /// a preview's listen address only preview hosts are: the preview
    /// never answers with the live color.
    pub fn route(
        &self,
        host: Option<&str>,
        local: SocketAddr,
        path: &str,
    ) -> Option<&Arc<RouteEntry>> {
        fn pick<'t>(
            routes: Option<&'t Vec<Arc<RouteEntry>>>,
            path: &str,
        ) -> Option<&'t Arc<RouteEntry>> {
            routes.and_then(|rs| rs.iter().find(|r| r.matches(path)))
        }
        let by_host = host.and_then(|h| self.by_host.get(h));
        match self.by_listen.get(&local) {
            None => pick(by_host, path),
            Some(owners) => {
                let own = |r: &Arc<RouteEntry>| {
                    owners
                        .iter()
                        .any(|o| o.name == r.name && (r.preview || !o.preview))
                };
                let owners_host = by_host.filter(|rs| rs.iter().any(own));
                pick(owners_host, path).or_else(|| pick(Some(owners), path))
            }
        }
    }
}

/// Lowercases a Host header and drops its port and a trailing dot. A
/// normalized host is a fixed point (the fuzz target checks it).
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    // Port and dot off until nothing changes: `a:80.` and `a.:80` are `a`.
    let mut host = host;
    loop {
        let next = strip_port(host.trim_ascii())
            .trim_ascii()
            .trim_end_matches('.');
        if next.len() == host.len() {
            break;
        }
        host = next;
    }
    match host.bytes().any(|b| b.is_ascii_uppercase()) {
        true => Cow::Owned(host.to_ascii_lowercase()),
        false => Cow::Borrowed(host),
    }
}

/// A host without its `:port` (an IP literal keeps its brackets); a fully
/// qualified name's trailing dot is taken off by the caller.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}
