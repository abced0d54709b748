//! The routing table the request path reads: one immutable version of
//! every route, keyed by host and by listen address, and the host
//! normalization both its keys and the requests' Host headers go through.
//!
//! A version is made from the last by replacing one route's entries
//! (`Table::replace`): its maps are persistent (`imbl`), so the copy is
//! O(1) and the change touches only that route's keys. Rebuilding every
//! route per change made a switch cost O(apps).

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::sign::CertifiedKey;

use crate::load_balancer::LoadBalancer;
use crate::state::{Maintenance, RoutePolicy, RouteState};

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
    /// The certificate of the route's hosts and listen address (never a
    /// preview's).
    pub cert: Option<Arc<CertifiedKey>>,
}

/// One entry of a route and the keys it is found under.
pub(super) struct Keyed {
    pub entry: Arc<RouteEntry>,
    pub keys: Keys,
}

/// The hosts (normalized) and listen addresses entries are found under.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Keys {
    pub hosts: BTreeSet<String>,
    pub listen: BTreeSet<SocketAddr>,
}

impl Keys {
    fn of<'a>(hosts: impl IntoIterator<Item = &'a String>, listen: Option<SocketAddr>) -> Keys {
        Keys {
            hosts: hosts
                .into_iter()
                .map(|h| normalize_host(h).into_owned())
                .collect(),
            listen: listen.into_iter().collect(),
        }
    }

    /// The route's own keys, while it serves (a route that never went live
    /// holds no host, `claims`, unless it shows a maintenance page).
    pub fn own(r: &RouteState) -> Option<Keys> {
        let serving = r.live.is_some() || r.maintenance.is_some();
        serving.then(|| Keys::of(&r.hosts, r.listen))
    }

    /// Its preview's keys, if it has one.
    pub fn preview(r: &RouteState) -> Option<Keys> {
        r.preview.as_ref().map(|p| Keys::of(&p.hosts, p.listen))
    }

    /// Every key the route's entries are found under.
    pub fn all(r: &RouteState) -> Keys {
        let mut all = Keys::default();
        for k in [Keys::own(r), Keys::preview(r)].into_iter().flatten() {
            all.hosts.extend(k.hosts);
            all.listen.extend(k.listen);
        }
        all
    }
}

impl RouteEntry {
    pub(crate) fn matches(&self, path: &str) -> bool {
        self.path_prefix.as_deref().is_none_or(|p| {
            path.strip_prefix(p)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || p.ends_with('/'))
        })
    }
}

/// A key's entries, longest path prefix first, so `/api` wins over the
/// host's catch-all.
type Entries = Arc<[Arc<RouteEntry>]>;

/// Keyed with FNV rather than SipHash: a look-up per request, over a few
/// short keys that only the admin API inserts, so a client cannot flood a
/// bucket; SipHash cost more than the rest of the route look-up.
type Map<K, V> =
    imbl::GenericHashMap<K, V, fnv::FnvBuildHasher, imbl::shared_ptr::DefaultSharedPtr>;

/// One immutable version of the routing table.
#[derive(Default, Clone)]
pub struct Table {
    by_host: Map<String, Entries>,
    by_listen: Map<SocketAddr, Entries>,
    certs_by_host: Map<String, Arc<CertifiedKey>>,
    certs_by_listen: Map<SocketAddr, Arc<CertifiedKey>>,
}

impl Table {
    /// Puts `route`'s entries `now` where it had entries under `before`:
    /// only those keys' lists (and their certificates) are made again.
    pub(super) fn replace(&mut self, route: &str, before: &Keys, now: &[Keyed]) {
        let hosts: BTreeSet<&String> = before
            .hosts
            .iter()
            .chain(now.iter().flat_map(|k| &k.keys.hosts))
            .collect();
        for host in hosts {
            let list = merged(self.by_host.get(host), route, now, |k| {
                k.hosts.contains(host)
            });
            let cert = owner_cert(&list);
            put(&mut self.by_host, host.clone(), list);
            match cert {
                Some(c) => self.certs_by_host.insert(host.clone(), c),
                None => self.certs_by_host.remove(host),
            };
        }
        let listen: BTreeSet<SocketAddr> = before
            .listen
            .iter()
            .chain(now.iter().flat_map(|k| &k.keys.listen))
            .copied()
            .collect();
        for addr in listen {
            let list = merged(self.by_listen.get(&addr), route, now, |k| {
                k.listen.contains(&addr)
            });
            let cert = owner_cert(&list);
            put(&mut self.by_listen, addr, list);
            match cert {
                Some(c) => self.certs_by_listen.insert(addr, c),
                None => self.certs_by_listen.remove(&addr),
            };
        }
    }

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
        fn pick<'t>(routes: Option<&'t Entries>, path: &str) -> Option<&'t Arc<RouteEntry>> {
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

/// A key's entries with `route`'s replaced by those of `now` that `here`
/// keys under it, longest path prefix first (then by name, a route's own
/// before its preview, so a version does not depend on the order of
/// changes).
fn merged(
    was: Option<&Entries>,
    route: &str,
    now: &[Keyed],
    here: impl Fn(&Keys) -> bool,
) -> Vec<Arc<RouteEntry>> {
    let others = was
        .into_iter()
        .flat_map(|e| e.iter())
        .filter(|e| e.name != route);
    let mine = now.iter().filter(|k| here(&k.keys)).map(|k| &k.entry);
    let mut list: Vec<_> = others.chain(mine).cloned().collect();
    list.sort_by(|a, b| {
        let len = |e: &RouteEntry| e.path_prefix.as_ref().map_or(0, String::len);
        (len(b), &a.name, a.preview).cmp(&(len(a), &b.name, b.preview))
    });
    list
}

fn put<K: std::hash::Hash + Eq + Clone>(
    map: &mut Map<K, Entries>,
    key: K,
    list: Vec<Arc<RouteEntry>>,
) {
    match list.is_empty() {
        true => map.remove(&key),
        false => map.insert(key, list.into()),
    };
}

/// SNI names a host (and a client without SNI, only the listen address),
/// not a path: the certificate of a host or listen address shared by path
/// prefix is that of the route serving its shortest prefix (its owner),
/// never a sub-path's.
fn owner_cert(list: &[Arc<RouteEntry>]) -> Option<Arc<CertifiedKey>> {
    let depth = |e: &RouteEntry| {
        e.path_prefix
            .as_deref()
            .and_then(crate::api::prefix_key)
            .map_or(0, str::len)
    };
    list.iter()
        .filter(|e| !e.preview && e.cert.is_some())
        .min_by(|a, b| (depth(a), &a.name).cmp(&(depth(b), &b.name)))
        .and_then(|e| e.cert.clone())
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
