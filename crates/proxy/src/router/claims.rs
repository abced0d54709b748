//! Owners: the keys (a host, a listen address, under a path prefix) that
//! only one route may hold, and the check every routing change passes, that
//! no route takes a key another holds. `Owners` indexes who holds each
//! key, so the check costs the route's own keys, not every route's.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::normalize_host;
use crate::state::RouteState;

/// One key only one route may hold (`host a`, `listen address b`), with
/// the path prefix it is held for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Claim<'r> {
    key: String,
    prefix: Option<&'r str>,
    /// Held by the route's preview rather than its live color.
    preview: bool,
}

impl Claim<'_> {
    /// The same key and path, whoever holds it for what.
    fn same(&self, other: &Claim) -> bool {
        self.key == other.key && self.prefix == other.prefix
    }
}

/// The keys of `hosts` and `listen` under `prefix`.
pub(super) fn keys<'r>(
    hosts: &[String],
    listen: Option<SocketAddr>,
    prefix: Option<&'r str>,
    preview: bool,
) -> Vec<Claim<'r>> {
    let prefix = prefix.and_then(crate::api::prefix_key);
    let hosts = hosts.iter().map(|h| format!("host {}", normalize_host(h)));
    let listen = listen.map(|a| format!("listen address {a}"));
    hosts
        .chain(listen)
        .map(|key| Claim {
            key,
            prefix,
            preview,
        })
        .collect()
}

/// What a route serves, as keys only one app may hold: each host and its
/// listen address, with its path prefix, while it has a live color (one
/// that never went live serves nothing, so it cannot take requests from
/// one that did); and its preview's, from the moment the preview is set
/// (it answers then, with the candidate or a 503), so no app can take
/// another's preview host either.
pub(super) fn claims(r: &RouteState) -> Vec<Claim<'_>> {
    let live = r
        .live
        .map(|_| keys(&r.hosts, r.listen, r.path_prefix.as_deref(), false));
    let preview = r
        .preview
        .as_ref()
        .map(|p| keys(&p.hosts, p.listen, p.path_prefix.as_deref(), true));
    live.into_iter()
        .flatten()
        .chain(preview.into_iter().flatten())
        .collect()
}

/// A key and the path prefix it is held under.
type Held = (String, Option<String>);

/// Who holds each key: the routes, each with whether by its preview.
/// Usually one holder; several only in a state from before owners were
/// checked.
#[derive(Default)]
pub(super) struct Owners(HashMap<Held, Vec<(String, bool)>>);

impl Owners {
    pub fn add(&mut self, route: &str, r: &RouteState) {
        for c in claims(r) {
            let holders = self
                .0
                .entry((c.key, c.prefix.map(str::to_string)))
                .or_default();
            holders.push((route.to_string(), c.preview));
        }
    }

    pub fn remove(&mut self, route: &str, r: &RouteState) {
        for c in claims(r) {
            let k = (c.key, c.prefix.map(str::to_string));
            if let Some(holders) = self.0.get_mut(&k) {
                holders.retain(|(name, _)| name != route);
                if holders.is_empty() {
                    self.0.remove(&k);
                }
            }
        }
    }

    /// A route other than `route` that holds `claim`'s key and path, and
    /// whether by its preview.
    fn other_than(&self, route: &str, claim: &Claim) -> Option<(&str, bool)> {
        let k = (claim.key.clone(), claim.prefix.map(str::to_string));
        let holders = self.0.get(&k)?;
        let other = holders.iter().find(|(name, _)| name != route)?;
        Some((other.0.as_str(), other.1))
    }
}

/// A claim `route` makes in `next` that it did not make in `now` and that
/// another route already makes: who holds it, and how to free it. Claims
/// that were already shared (a state from before owners were checked) are
/// left as they are. A preview on one of the route's own hosts or its
/// listen address is refused too: a request there could not tell the
/// candidate from live.
pub(super) fn new_conflict(
    owners: &Owners,
    now: Option<&RouteState>,
    next: &RouteState,
    route: &str,
) -> Option<String> {
    let held: Vec<_> = now.map(claims).unwrap_or_default();
    if let Some(key) = own_preview_overlap(next) {
        if now.and_then(own_preview_overlap) != Some(key.clone()) {
            return Some(format!(
                "the preview's {key} is also {route}'s own: give the preview a host and listen address of its own"
            ));
        }
    }
    let wanted = claims(next);
    for claim in wanted.iter().filter(|c| !held.iter().any(|h| h.same(c))) {
        if let Some((owner, preview)) = owners.other_than(route, claim) {
            let path = claim
                .prefix
                .map_or(String::new(), |p| format!(" (path prefix {p})"));
            let on_it = match preview {
                true => "which previews its candidate on it",
                false => "which is live on it",
            };
            return Some(format!(
                "{}{path} belongs to {owner}, {on_it}; free it with \
                 `cyan remove -c <{owner}'s cyan.yaml> --yes`, or give this app another host or listen address",
                claim.key
            ));
        }
    }
    None
}

/// A key the route's preview shares with the route itself, if any.
pub(super) fn own_preview_overlap(r: &RouteState) -> Option<String> {
    let p = r.preview.as_ref()?;
    let own = keys(&r.hosts, r.listen, r.path_prefix.as_deref(), false);
    let previewed = keys(&p.hosts, p.listen, p.path_prefix.as_deref(), true);
    previewed
        .into_iter()
        .find(|c| own.iter().any(|o| o.same(c)))
        .map(|c| c.key)
}
