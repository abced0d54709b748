//! Routing: the immutable table the request path reads, and the control side
//! that changes routes and publishes a new table.
//!
//! Requests read the table through one `ArcSwap` load, with no lock. Every
//! change (a switch included) builds a complete new table and stores it with
//! one atomic pointer swap (before the state file's fsync, which the caller's
//! answer waits for), so no request ever sees a half-made route or a
//! moment with no upstreams. Load balancers are shared between table
//! versions, so in-flight counts survive a swap and the old color can be
//! drained.
//!
//! Here are the primitives a change is made of (`Router::change`,
//! `discard`, `check_claims`) and the rule every change keeps: no route
//! takes a host or listen address another holds. The named verbs that
//! build on them, each with its own rule (a switch, a color set, the
//! lease), are the control plane's, in `control`. The table itself is
//! `table`; who may hold a host or listen address is `claims`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};

mod claims;
mod table;

use super::certs::CertStore;
use super::journal::Journal;
use super::load_balancer::LoadBalancer;
use super::state::{routable, ProxyState, RouteState, Upstream};
use super::stats::StatsView;
use claims::{new_conflict, Owners};
use cyan_plan::release::Color;
pub use table::{normalize_host, RouteEntry, Table};
use table::{Keyed, Keys};

/// What the engine says of one container now (`Router::retarget`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Running, with its port published at this address.
    At(SocketAddr),
    /// Not running: why (`exited`, `restarting`, `paused`, `removed`,
    /// `engine unreachable`).
    Down(String),
}

impl Seen {
    /// Makes `u` agree; says what changed, if anything did.
    fn apply(&self, u: &mut Upstream) -> Option<String> {
        match self {
            Seen::At(addr) if u.addr == *addr && u.up() => None,
            Seen::At(addr) => {
                let what = match u.addr == *addr {
                    true => format!("back at {addr}"),
                    false => format!("moved {} -> {addr}", u.addr),
                };
                u.addr = *addr;
                u.down = None;
                Some(what)
            }
            Seen::Down(why) if u.down.as_ref() == Some(why) => None,
            Seen::Down(why) => {
                u.down = Some(why.clone());
                Some(format!("out of rotation ({why})"))
            }
        }
    }
}

/// The first 12 characters of an engine id, as `docker ps` shows it.
fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// A route with its live counters, as the admin API reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouteView {
    pub name: String,
    #[serde(flatten)]
    pub state: RouteState,
    /// Per color: what its own (live or standby) set served. Preview
    /// traffic is not in it, so `verify` judges only what went live.
    pub stats: std::collections::BTreeMap<Color, StatsView>,
    /// What the preview served of the candidate it serves now
    /// (`RouteState::previewed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_stats: Option<StatsView>,
}

/// The control side: owns the state, the load balancers and the published
/// table.
pub struct Router {
    table: ArcSwap<Table>,
    inner: Mutex<Control>,
    /// Set while a successor process takes over: the state file is theirs.
    frozen: std::sync::atomic::AtomicBool,
    /// Bumped after each new table: held requests wait on it.
    published: tokio::sync::watch::Sender<u64>,
    /// ACME challenges being answered (HTTP-01 tokens, TLS-ALPN-01
    /// certificates), for the request path and the TLS resolver.
    pub acme: super::acme::Challenges,
}

struct Control {
    state: ProxyState,
    journal: Journal,
    /// Who holds each host and listen address (`claims`).
    owners: Owners,
    balancers: HashMap<(String, Color), Arc<LoadBalancer>>,
    /// Per route with a preview that serves a candidate: the candidate's
    /// load balancer for preview requests, with counters (and in-flight
    /// claims) of its own.
    previews: HashMap<String, Arc<LoadBalancer>>,
    certs: CertStore,
}

/// Routes changed together: each one's new state, `None` when removed.
type Changes = BTreeMap<String, Option<RouteState>>;

impl Router {
    /// Restores routes from the state file (`journal`) and builds the
    /// first table.
    pub fn restore(state_path: PathBuf) -> std::io::Result<Router> {
        let (journal, state) = Journal::open(&state_path)?;
        let mut control = Control {
            state: ProxyState::default(),
            journal,
            owners: Owners::default(),
            balancers: HashMap::new(),
            previews: HashMap::new(),
            certs: CertStore::new(state_path.with_file_name("certs")),
        };
        let mut table = Table::default();
        for (name, route) in &state.routes {
            control.owners.add(name, route);
        }
        control.state = state;
        let names: Vec<String> = control.state.routes.keys().cloned().collect();
        for name in &names {
            control.sync_route(name, None, &mut table);
        }
        Ok(Router {
            table: ArcSwap::from_pointee(table),
            inner: Mutex::new(control),
            frozen: Default::default(),
            published: tokio::sync::watch::channel(0).0,
            acme: Default::default(),
        })
    }

    pub fn table(&self) -> arc_swap::Guard<Arc<Table>> {
        self.table.load()
    }

    /// Changes whenever a new table is published.
    pub fn published(&self) -> tokio::sync::watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// The listen addresses routes ask for, and whether each is TLS (a
    /// preview's never is).
    pub fn listen_addrs(&self) -> Vec<(SocketAddr, bool)> {
        let c = self.inner.lock().expect("router lock");
        let routes = || c.state.routes.values();
        let own = routes().filter_map(|r| r.listen.map(|a| (a, r.tls.is_some())));
        let previews = routes().filter_map(|r| Some((r.preview.as_ref()?.listen?, false)));
        own.chain(previews).collect()
    }

    /// Applies a change to one route (made first when `create`), persists
    /// it, and publishes it. The closure may refuse the change by
    /// returning an error; then nothing changes. The verbs in `control` are
    /// the changes the admin API make. Costs that route, whatever the
    /// number of routes: one entry of the table, one journal record.
    pub fn change<T>(
        &self,
        route: &str,
        create: bool,
        f: impl FnOnce(&mut RouteState) -> Result<T, ChangeError>,
    ) -> Result<T, ChangeError> {
        let mut c = self.for_change()?;
        let now = c.state.routes.get(route);
        let mut next = match now {
            Some(r) => r.clone(),
            None if create => RouteState::default(),
            None => return Err(ChangeError::NotFound(format!("no route named {route:?}"))),
        };
        let out = f(&mut next)?;
        if let Some(conflict) = new_conflict(&c.owners, now, &next, route) {
            return Err(ChangeError::Conflict(conflict));
        }
        self.commit(&mut c, BTreeMap::from([(route.to_string(), Some(next))]))?;
        Ok(out)
    }

    /// Would `route` with these claims take a host or listen address that
    /// another app serves? Says whose, and how to free it. Changes nothing.
    pub fn check_claims(&self, route: &str, claim: &RouteState) -> Result<(), ChangeError> {
        let c = self.inner.lock().expect("router lock");
        let now = c.state.routes.get(route);
        let mut next = now.cloned().unwrap_or_default();
        next.hosts = claim.hosts.clone();
        next.listen = claim.listen;
        next.path_prefix = claim.path_prefix.clone();
        next.preview = claim.preview.clone();
        next.live.get_or_insert(Color::Blue);
        match new_conflict(&c.owners, now, &next, route) {
            Some(conflict) => Err(ChangeError::Conflict(conflict)),
            None => Ok(()),
        }
    }

    /// Takes a route out, if `check` (given the route as it is) allows,
    /// persists that and publishes it. Its upstreams' in-flight requests
    /// finish; its tunnels close now.
    pub fn discard(
        &self,
        route: &str,
        check: impl FnOnce(&RouteState) -> Result<(), ChangeError>,
    ) -> Result<(), ChangeError> {
        let mut c = self.for_change()?;
        let Some(gone) = c.state.routes.get(route) else {
            return Err(ChangeError::NotFound(format!("no route named {route:?}")));
        };
        check(gone)?;
        self.commit(&mut c, BTreeMap::from([(route.to_string(), None)]))
    }

    /// The control side, unless a successor is taking over.
    fn for_change(&self) -> Result<std::sync::MutexGuard<'_, Control>, ChangeError> {
        let c = self.inner.lock().expect("router lock");
        if self.frozen.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ChangeError::Conflict(
                "the proxy is handing over to an upgraded process; try again".into(),
            ));
        }
        Ok(c)
    }

    /// Makes `changes` the routes' states, where they differ. Traffic
    /// moves first; the caller hears back only once the change is in the
    /// journal. If it cannot be written, the old routes come back and the
    /// caller gets the error (a crash in between restores the old routes
    /// too: the unacknowledged change is simply redone).
    fn commit(&self, c: &mut Control, mut changes: Changes) -> Result<(), ChangeError> {
        changes.retain(|name, next| c.state.routes.get(name) != next.as_ref());
        if changes.is_empty() {
            return Ok(());
        }
        let previous: Changes = changes
            .keys()
            .map(|name| (name.clone(), c.state.routes.get(name).cloned()))
            .collect();
        self.apply(c, &changes);
        if let Err(e) = c.journal.append(&changes) {
            self.apply(c, &previous);
            return Err(ChangeError::Io(format!("cannot write proxy state: {e}")));
        }
        c.journal.compact_if_due(&c.state);
        Ok(())
    }

    /// Puts `changes` in the state and, for the routes whose routing
    /// changed, in the table (one new version for all of them). A change
    /// to the deployer's record or the lease alone publishes nothing: a
    /// lease renewed every few seconds by every deploy must not cost a
    /// table.
    fn apply(&self, c: &mut Control, changes: &Changes) {
        let mut table: Option<Table> = None;
        for (name, next) in changes {
            let before = match next {
                Some(r) => c.state.routes.insert(name.clone(), r.clone()),
                None => c.state.routes.remove(name),
            };
            if let Some(b) = &before {
                c.owners.remove(name, b);
            }
            if let Some(r) = next {
                c.owners.add(name, r);
            }
            if routes_alike(before.as_ref(), next.as_ref()) {
                continue;
            }
            let table = table.get_or_insert_with(|| Table::clone(&self.table.load()));
            c.sync_route(name, before.as_ref(), table);
        }
        if let Some(table) = table {
            self.table.store(Arc::new(table));
            self.published.send_modify(|n| *n += 1);
        }
    }

    /// Is `container` in rotation at `addr`, wherever an upstream names it?
    pub fn in_rotation(&self, container: &str, addr: SocketAddr) -> bool {
        let c = self.inner.lock().expect("router lock");
        let mut named = c
            .state
            .routes
            .values()
            .flat_map(|r| r.colors.values().flatten())
            .filter(|u| u.container.as_deref() == Some(container))
            .peekable();
        named.peek().is_some() && named.all(|u| u.addr == addr && u.up())
    }

    /// Does an upstream of any route name `container` (an engine id)? A
    /// scan without copies: it is asked per engine event.
    pub fn names(&self, container: &str) -> bool {
        let c = self.inner.lock().expect("router lock");
        let mut upstreams = c
            .state
            .routes
            .values()
            .flat_map(|r| r.colors.values().flatten());
        upstreams.any(|u| u.container.as_deref() == Some(container))
    }

    /// The containers (engine ids) that upstreams name, over every route.
    pub fn containers(&self) -> std::collections::BTreeSet<String> {
        let c = self.inner.lock().expect("router lock");
        c.state
            .routes
            .values()
            .flat_map(|r| r.colors.values().flatten())
            .filter_map(|u| u.container.clone())
            .collect()
    }

    /// Brings every upstream that names a container in line with what the
    /// engine says of it, in one persisted change and one new table, and
    /// returns what changed (`route color container: what`), for the log.
    ///
    /// `seen` maps engine ids to what they are now. With `whole`, it is the
    /// engine's complete list, and a container missing from it is down as
    /// `removed`; without, containers it does not name are left alone.
    pub fn retarget(
        &self,
        seen: &HashMap<String, Seen>,
        whole: bool,
    ) -> Result<Vec<String>, ChangeError> {
        let mut c = self.for_change()?;
        let removed = Seen::Down("removed".into());
        let mut changes = Changes::new();
        let mut changed = Vec::new();
        for (name, route) in &c.state.routes {
            let mut next: Option<RouteState> = None;
            for (color, upstreams) in &route.colors {
                for (i, u) in upstreams.iter().enumerate() {
                    let Some(id) = &u.container else {
                        continue;
                    };
                    let Some(now) = seen.get(id).or(whole.then_some(&removed)) else {
                        continue;
                    };
                    let mut moved = u.clone();
                    if let Some(what) = now.apply(&mut moved) {
                        changed.push(format!("{name} {color} {}: {what}", short_id(id)));
                        let next = next.get_or_insert_with(|| route.clone());
                        next.colors.get_mut(color).expect("the same colors")[i] = moved;
                    }
                }
            }
            if let Some(next) = next {
                changes.insert(name.clone(), Some(next));
            }
        }
        self.commit(&mut c, changes)?;
        Ok(changed)
    }

    /// Checks that a route's TLS files load, before the change that names
    /// them (which then serves them). The files the route serves already,
    /// renewed in place since, are served at once.
    pub fn check_tls(&self, route: &str, files: &super::state::TlsFiles) -> Result<(), String> {
        let mut c = self.inner.lock().expect("router lock");
        if c.certs.check(route, files)? {
            tracing::info!(%route, "TLS certificate renewed");
            self.republish(&mut c, &[route.to_string()]);
        }
        Ok(())
    }

    /// Loads again the certificates whose files changed (`certs`) and
    /// publishes them. Returns the routes renewed, and those whose files
    /// do not load (they keep their last good pair).
    pub fn reload_certs(&self) -> super::certs::Refreshed {
        let watched = self.inner.lock().expect("router lock").certs.watched();
        let changed = watched.changed();
        let mut c = self.inner.lock().expect("router lock");
        let refreshed = c.certs.renew(changed);
        if !refreshed.renewed.is_empty() {
            tracing::info!(renewed = ?refreshed.renewed, "TLS certificates renewed");
            self.republish(&mut c, &refreshed.renewed);
        }
        refreshed
    }

    /// Makes `routes`' entries again (their certificates changed) in one
    /// new table.
    fn republish(&self, c: &mut Control, routes: &[String]) {
        let mut table = Table::clone(&self.table.load());
        for name in routes {
            let now = c.state.routes.get(name).cloned();
            c.sync_route(name, now.as_ref(), &mut table);
        }
        self.table.store(Arc::new(table));
    }

    /// The routes with `tls: acme`: each with its hosts and the certificate
    /// it serves now, if any.
    pub fn acme_routes(&self) -> Vec<(String, Vec<String>, Option<Arc<CertifiedKey>>)> {
        let c = self.inner.lock().expect("router lock");
        c.state
            .routes
            .iter()
            .filter(|(_, r)| r.tls == Some(super::state::TlsSource::Acme))
            .map(|(n, r)| (n.clone(), r.hosts.clone(), c.certs.get(n)))
            .collect()
    }

    /// Serves a certificate ACME obtained for `route` (PEM chain and key),
    /// kept first (`certs`): one new table, no moment without one.
    pub fn install_acme(&self, route: &str, pem: &[u8]) -> Result<(), String> {
        let mut c = self.inner.lock().expect("router lock");
        let acme = Some(super::state::TlsSource::Acme);
        if c.state.routes.get(route).is_none_or(|r| r.tls != acme) {
            return Err(format!("{route} no longer asks for an ACME certificate"));
        }
        c.certs.put_acme(route, pem)?;
        self.republish(&mut c, &[route.to_string()]);
        Ok(())
    }

    /// At shutdown: every color's tunnels close (cleanly) by `now + grace`.
    pub fn close_all(&self, grace: Duration) {
        let c = self.inner.lock().expect("router lock");
        c.balancers
            .values()
            .chain(c.previews.values())
            .for_each(|b| b.close_by(grace, Duration::ZERO));
    }

    /// Each live load balancer with its route's active check, if it has one.
    pub fn actively_checked(
        &self,
    ) -> Vec<(Arc<LoadBalancer>, super::state::ActiveCheck, Vec<String>)> {
        let c = self.inner.lock().expect("router lock");
        c.state
            .routes
            .iter()
            .filter_map(|(name, r)| {
                let check = r.policy.active_check.clone()?;
                let balancer = c.balancers.get(&(name.clone(), r.live?))?.clone();
                Some((balancer, check, r.hosts.clone()))
            })
            .collect()
    }

    /// Requests and tunnels still in flight, over every route and color.
    pub fn inflight(&self) -> u64 {
        let c = self.inner.lock().expect("router lock");
        c.balancers
            .values()
            .chain(c.previews.values())
            .map(|b| b.inflight())
            .sum()
    }

    /// Refuses (`true`) or allows changes. Taking the control lock makes
    /// sure no change is half-way when it returns. Either way the state is
    /// written afresh as one snapshot (a compaction in progress waited
    /// for): frozen, the files are a successor's to read, and a successor
    /// of an older cyan reads only the snapshot; allowed again, a
    /// successor that did not take over may have rewritten them.
    ///
    /// Errors: the snapshot cannot be written (a full disk). Changes are
    /// refused or allowed as asked all the same, and the journal still
    /// holds every change for a successor of this cyan or a later one.
    pub fn freeze(&self, frozen: bool) -> std::io::Result<()> {
        let mut c = self.inner.lock().expect("router lock");
        let c = &mut *c;
        self.frozen
            .store(frozen, std::sync::atomic::Ordering::SeqCst);
        c.journal.rewrite(&c.state).inspect_err(|e| {
            tracing::error!(error = %e, "cannot write the proxy's state as one snapshot");
        })
    }

    pub fn view(&self, route: &str) -> Option<RouteView> {
        let c = self.inner.lock().expect("router lock");
        c.state.routes.get(route).map(|r| c.view(route, r))
    }

    pub fn views(&self) -> Vec<RouteView> {
        let c = self.inner.lock().expect("router lock");
        c.state.routes.iter().map(|(n, r)| c.view(n, r)).collect()
    }
}

impl Control {
    /// Brings one route's load balancers, preview, certificate and table
    /// entries in line with its state (gone: all of them go), where it
    /// had entries under `before`'s keys.
    fn sync_route(&mut self, name: &str, before: Option<&RouteState>, table: &mut Table) {
        let route = self.state.routes.get(name).cloned();
        self.sync_balancers(name, route.as_ref());
        self.sync_preview(name, route.as_ref());
        self.certs
            .sync_route(name, route.as_ref().and_then(|r| r.tls.as_ref()));
        let was = before.map(Keys::all).unwrap_or_default();
        let now = route.map_or(Vec::new(), |r| self.entries(name, &r));
        table.replace(name, &was, &now);
    }

    /// Keeps one load balancer per color of the route whose upstream list
    /// matches the state; one whose list is unchanged is kept, with its
    /// counters.
    ///
    /// A color that is not live gets a closing deadline (now + the route's
    /// drain timeout) for its long-lived connections; a live one has none, so
    /// a rollback to a color that is still draining keeps its WebSockets.
    /// Removed colors close their tunnels now.
    fn sync_balancers(&mut self, name: &str, route: Option<&RouteState>) {
        for color in Color::ALL {
            let k = (name.to_string(), color);
            let old = self.balancers.remove(&k);
            let (Some(route), Some(upstreams)) = (route, route.and_then(|r| r.colors.get(&color)))
            else {
                if let Some(gone) = old {
                    gone.close_by(Duration::ZERO, Duration::ZERO);
                }
                continue;
            };
            let addrs = routable(upstreams);
            let balancer = match old {
                Some(b) if b.addrs() == addrs => b,
                Some(b) => b.moved(&addrs),
                None => LoadBalancer::new(color, &addrs),
            };
            if route.live == Some(color) {
                balancer.keep_open();
            } else {
                balancer.close_by(
                    Duration::from_millis(route.policy.drain_timeout_ms),
                    route.policy.drain_spread(),
                );
            }
            self.balancers.insert(k, balancer);
        }
    }

    /// The route's preview load balancer, while its preview serves a
    /// candidate: over the candidate's upstreams, kept (with its counters)
    /// while it previews the same color. One that stops previewing (its
    /// candidate went live, or was removed) lets its long-lived
    /// connections run to the route's drain deadline, as an old color's.
    fn sync_preview(&mut self, name: &str, route: Option<&RouteState>) {
        let old = self.previews.remove(name);
        let previewed = route.and_then(|r| Some((r, r.preview.as_ref()?, r.previewed()?)));
        let Some((route, _, color)) = previewed else {
            match (old, route) {
                (Some(gone), Some(route)) => Self::close_preview(&gone, route),
                (Some(gone), None) => gone.close_by(Duration::ZERO, Duration::ZERO),
                (None, _) => {}
            }
            return;
        };
        let addrs = route.colors.get(&color).map_or(Vec::new(), |u| routable(u));
        let balancer = match old {
            Some(b) if b.color == color && b.addrs() == addrs => b,
            Some(b) if b.color == color => b.moved(&addrs),
            Some(b) => {
                Self::close_preview(&b, route);
                LoadBalancer::new(color, &addrs)
            }
            None => LoadBalancer::new(color, &addrs),
        };
        self.previews.insert(name.to_string(), balancer);
    }

    fn close_preview(balancer: &LoadBalancer, route: &RouteState) {
        balancer.close_by(
            Duration::from_millis(route.policy.drain_timeout_ms),
            route.policy.drain_spread(),
        );
    }

    /// The route's table entries: its own while it serves, and its
    /// preview's, each with the keys it is found under.
    fn entries(&self, name: &str, route: &RouteState) -> Vec<Keyed> {
        let own = Keys::own(route).map(|keys| {
            let live = route
                .live
                .and_then(|c| self.balancers.get(&(name.to_string(), c)).cloned());
            let entry = RouteEntry {
                name: name.to_string(),
                live,
                preview: false,
                path_prefix: route.path_prefix.clone(),
                policy: route.policy.clone(),
                maintenance: route.maintenance.clone(),
                hold_until_ms: route.hold_until_ms,
                draining: route.draining,
                cert: route.tls.as_ref().and(self.certs.get(name)),
            };
            Keyed {
                entry: Arc::new(entry),
                keys,
            }
        });
        // Never the live color's: the candidate's own, or none (503).
        let preview = Keys::preview(route).map(|keys| {
            let entry = RouteEntry {
                name: name.to_string(),
                live: self.previews.get(name).cloned(),
                preview: true,
                path_prefix: route.preview.as_ref().and_then(|p| p.path_prefix.clone()),
                policy: route.policy.clone(),
                maintenance: None,
                hold_until_ms: None,
                draining: false,
                cert: None,
            };
            Keyed {
                entry: Arc::new(entry),
                keys,
            }
        });
        own.into_iter().chain(preview).collect()
    }

    fn view(&self, name: &str, r: &RouteState) -> RouteView {
        let stats = Color::ALL
            .into_iter()
            .filter_map(|c| {
                let b = self.balancers.get(&(name.to_string(), c))?;
                Some((c, b.stats.snapshot(b.inflight(), b.ejected())))
            })
            .collect();
        let preview_stats = self
            .previews
            .get(name)
            .map(|b| b.stats.snapshot(b.inflight(), b.ejected()));
        RouteView {
            name: name.to_string(),
            state: r.clone(),
            stats,
            preview_stats,
        }
    }
}

/// Do two states of a route route alike? All but the deployer's record and
/// the lease count, which no request reads. Every field is named, so a new
/// one must be placed on one side or the other.
fn routes_alike(a: Option<&RouteState>, b: Option<&RouteState>) -> bool {
    let (Some(a), Some(b)) = (a, b) else {
        return a.is_none() && b.is_none();
    };
    let RouteState {
        hosts,
        listen,
        live,
        colors,
        record: _,
        lock: _,
        path_prefix,
        policy,
        maintenance,
        draining,
        tls,
        hold_until_ms,
        preview,
        candidate,
    } = a;
    *hosts == b.hosts
        && *listen == b.listen
        && *live == b.live
        && *colors == b.colors
        && *path_prefix == b.path_prefix
        && *policy == b.policy
        && *maintenance == b.maintenance
        && *draining == b.draining
        && *tls == b.tls
        && *hold_until_ms == b.hold_until_ms
        && *preview == b.preview
        && *candidate == b.candidate
}

/// Why a route change was refused.
#[derive(Debug)]
pub enum ChangeError {
    NotFound(String),
    Conflict(String),
    Invalid(String),
    Io(String),
    /// The deploy lock is held by someone else.
    Locked(super::lease::Lock),
}

#[cfg(test)]
impl Router {
    /// A router over a fresh state file in a folder of this test thread's
    /// own, and that file's path.
    pub(crate) fn scratch() -> (Router, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "cyan-router-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("proxy.json");
        (Router::restore(path.clone()).unwrap(), path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Maintenance, RoutePolicy};

    const PEER: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn host_headers_are_normalized() {
        assert_eq!(normalize_host("Web.Localhost:8000"), "web.localhost");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
        assert_eq!(normalize_host("example.com"), "example.com");
        assert_eq!(
            normalize_host("Web.Localhost."),
            "web.localhost",
            "a trailing dot"
        );
        assert_eq!(normalize_host("web.localhost.:8000"), "web.localhost");
        assert_eq!(normalize_host("a:80."), "a");
    }

    #[test]
    fn a_switch_publishes_a_new_table_and_keeps_load_balancers() {
        let (r, path) = Router::scratch();
        let local: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        r.change("web", true, |s| {
            s.hosts = vec!["web.localhost".into()];
            s.colors.insert(Color::Blue, vec![a.into()]);
            s.colors.insert(Color::Green, vec![b.into()]);
            s.live = Some(Color::Blue);
            Ok(())
        })
        .unwrap();
        let before = r.table();
        let blue = before
            .route(Some("web.localhost"), local, "/")
            .unwrap()
            .live
            .clone()
            .unwrap();
        let held = blue
            .claim(&RoutePolicy::default().per_request(PEER))
            .unwrap();
        r.change("web", false, |s| {
            s.live = Some(Color::Green);
            Ok(())
        })
        .unwrap();
        let after = r.table();
        let live = after
            .route(Some("web.localhost"), local, "/")
            .unwrap()
            .live
            .clone()
            .unwrap();
        assert_eq!(live.color, Color::Green);
        // The old table still routes to blue: requests that loaded it finish there.
        assert_eq!(
            before
                .route(Some("web.localhost"), local, "/")
                .unwrap()
                .live
                .as_ref()
                .unwrap()
                .color,
            Color::Blue
        );
        // Blue's load balancer (and its in-flight count) is shared with the new
        // table's state.
        assert_eq!(r.view("web").unwrap().stats[&Color::Blue].inflight, 1);
        drop(held);
        assert_eq!(r.view("web").unwrap().stats[&Color::Blue].inflight, 0);
        // Restored from disk, the route comes back as it was.
        let again = Router::restore(path).unwrap();
        assert_eq!(again.view("web").unwrap().state.live, Some(Color::Green));
    }

    #[test]
    fn a_change_that_cannot_be_saved_is_undone() {
        let (r, path) = Router::scratch();
        let local: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        r.change("web", true, |s| {
            s.hosts = vec!["web.localhost".into()];
            s.colors.insert(
                Color::Blue,
                vec!["127.0.0.1:1".parse::<SocketAddr>().unwrap().into()],
            );
            s.colors.insert(
                Color::Green,
                vec!["127.0.0.1:2".parse::<SocketAddr>().unwrap().into()],
            );
            s.live = Some(Color::Blue);
            Ok(())
        })
        .unwrap();
        r.inner.lock().unwrap().journal.fail_writes();
        let out = r.change("web", false, |s| {
            s.live = Some(Color::Green);
            Ok(())
        });
        assert!(matches!(out, Err(ChangeError::Io(_))));
        let table = r.table();
        let live = table.route(Some("web.localhost"), local, "/").unwrap();
        assert_eq!(live.live.as_ref().unwrap().color, Color::Blue);
        assert_eq!(r.view("web").unwrap().state.live, Some(Color::Blue));
        drop(r);
        let again = Router::restore(path).unwrap();
        assert_eq!(again.view("web").unwrap().state.live, Some(Color::Blue));
    }

    #[test]
    fn a_freeze_says_when_the_state_cannot_be_one_snapshot() {
        let (r, path) = Router::scratch();
        live_on(&r, "web", "web.localhost", addr("127.0.0.1:1").into()).unwrap();
        r.freeze(true).unwrap();
        assert!(
            std::fs::metadata(crate::journal::journal_path(&path))
                .unwrap()
                .len()
                == 0,
            "frozen, the state is the snapshot alone"
        );
        r.freeze(false).unwrap();
        // The snapshot's temp file cannot be made, as on a full disk: the
        // handover that asked is refused (`handoff`).
        std::fs::create_dir(path.with_extension("json.tmp")).unwrap();
        assert!(r.freeze(true).is_err());
        assert!(matches!(
            live_on(&r, "api", "api.localhost", addr("127.0.0.1:1").into()),
            Err(ChangeError::Conflict(_))
        ));
        assert!(r.freeze(false).is_err());
        live_on(&r, "api", "api.localhost", addr("127.0.0.1:1").into()).unwrap();
    }

    #[test]
    fn a_refused_change_changes_nothing() {
        let (r, _) = Router::scratch();
        let out: Result<(), _> = r.change("web", true, |s| {
            s.live = Some(Color::Blue);
            Err(ChangeError::Conflict("no".into()))
        });
        assert!(out.is_err());
        assert!(r.view("web").is_none());
    }

    fn live_on(r: &Router, route: &str, host: &str, upstream: Upstream) -> Result<(), ChangeError> {
        r.change(route, true, |s| {
            s.hosts = vec![host.into()];
            s.colors.insert(Color::Blue, vec![upstream]);
            s.live = Some(Color::Blue);
            Ok(())
        })
    }

    /// A table made from scratch out of the routes as they are now.
    fn rebuilt(r: &Router) -> Table {
        let c = r.inner.lock().unwrap();
        let mut t = Table::default();
        for (name, route) in &c.state.routes {
            t.replace(name, &Keys::default(), &c.entries(name, route));
        }
        t
    }

    #[test]
    fn a_table_changed_route_by_route_routes_as_one_made_from_scratch() {
        let (r, path) = Router::scratch();
        // xorshift: the same walk on every run.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let hosts = ["a.localhost", "B.localhost", "c.localhost"];
        let prefixes = [None, Some("/api"), Some("/api/v1")];
        let listens = [
            None,
            Some(addr("127.0.0.1:18301")),
            Some(addr("127.0.0.1:18302")),
        ];
        let ups = [addr("127.0.0.1:1"), addr("127.0.0.1:2")];
        let queries: Vec<(&str, SocketAddr, &str)> =
            ["a.localhost", "b.localhost", "c.localhost", "p.localhost"]
                .into_iter()
                .flat_map(|h| {
                    [
                        addr(SHARED),
                        addr("127.0.0.1:18301"),
                        addr("127.0.0.1:18302"),
                    ]
                    .into_iter()
                    .flat_map(move |l| ["/", "/api/x", "/api/v1/x"].map(|p| (h, l, p)))
                })
                .collect();
        let answer = |t: &Table, (h, l, p): (&str, SocketAddr, &str)| {
            t.route(Some(h), l, p).map(|e| {
                (
                    e.name.clone(),
                    e.preview,
                    e.live.as_ref().map(|b| b.addrs()),
                )
            })
        };
        let (mut applied, mut refused) = (0, 0);
        for step in 0..600 {
            let name = format!("r{}", next(5));
            let roll = next(10);
            let out = match roll {
                0 => r.remove(&name, None),
                _ => r.change(&name, true, |s| {
                    match roll {
                        1 => s.hosts = vec![hosts[next(3)].into()],
                        2 => s.path_prefix = prefixes[next(3)].map(String::from),
                        3 => s.listen = listens[next(3)],
                        4 => {
                            s.maintenance = s.maintenance.is_none().then_some(Maintenance {
                                retry_after_s: 1,
                                message: None,
                            })
                        }
                        5 => {
                            s.preview = (next(2) == 0).then(|| crate::state::Preview {
                                hosts: vec!["p.localhost".into()],
                                listen: listens[next(3)],
                                path_prefix: s.path_prefix.clone(),
                            })
                        }
                        6 => {
                            let color = [Color::Blue, Color::Green][next(2)];
                            let up: Upstream = ups[next(2)].into();
                            match s.live == Some(color) {
                                true => s.set_color(color, vec![up]),
                                false => s
                                    .set_candidate(color, vec![up], s.preview.clone())
                                    .map_err(ChangeError::Conflict)?,
                            }
                        }
                        7 => {
                            let color = [Color::Blue, Color::Green][next(2)];
                            s.colors.entry(color).or_insert_with(|| vec![ups[0].into()]);
                            s.switch_to(color);
                        }
                        8 => s.record = serde_json::json!({ "step": step }),
                        _ => s.draining = !s.draining,
                    }
                    Ok(())
                }),
            };
            match out {
                Ok(()) => applied += 1,
                Err(_) => refused += 1,
            }
            let (now, fresh) = (r.table(), rebuilt(&r));
            for q in &queries {
                assert_eq!(answer(&now, *q), answer(&fresh, *q), "step {step}: {q:?}");
            }
        }
        assert!(
            applied > 300 && refused > 10,
            "{applied} applied, {refused} refused"
        );
        // And a restart routes the same.
        let names = |t: &Table| {
            let answers = queries.iter().map(|q| answer(t, *q));
            answers.map(|a| a.map(|a| (a.0, a.1))).collect::<Vec<_>>()
        };
        let before = names(&r.table());
        drop(r);
        assert_eq!(before, names(&Router::restore(path).unwrap().table()));
    }

    #[test]
    fn a_live_route_owns_its_host() {
        let (r, _) = Router::scratch();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        live_on(&r, "web-production", "web.localhost", a.into()).unwrap();
        let taken = live_on(&r, "api-production", "Web.Localhost.", a.into());
        match taken {
            Err(ChangeError::Conflict(m)) => {
                assert!(
                    m.contains("host web.localhost belongs to web-production"),
                    "{m}"
                );
                assert!(m.contains("cyan remove"), "{m}");
            }
            other => panic!("the host was taken: {other:?}"),
        }
        assert!(
            r.view("api-production").is_none(),
            "a refused change changes nothing"
        );
        // A route that never went live claims nothing, and routes nothing.
        r.change("api-production", true, |s| {
            s.hosts = vec!["web.localhost".into()];
            Ok(())
        })
        .unwrap();
        let table = r.table();
        let local: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        assert_eq!(
            table.route(Some("web.localhost"), local, "/").unwrap().name,
            "web-production"
        );
        // Another path prefix on the same host is another claim.
        r.change("api-production", false, |s| {
            s.path_prefix = Some("/api".into());
            s.colors.insert(Color::Blue, vec![a.into()]);
            s.live = Some(Color::Blue);
            Ok(())
        })
        .unwrap();
        let claim = RouteState {
            hosts: vec!["web.localhost".into()],
            ..RouteState::default()
        };
        assert!(r.check_claims("other-production", &claim).is_err());
        assert!(r.check_claims("web-production", &claim).is_ok(), "its own");
        r.remove("web-production", None).unwrap();
        assert!(r.check_claims("other-production", &claim).is_ok(), "freed");
    }

    #[test]
    fn upstreams_follow_their_containers() {
        let (r, path) = Router::scratch();
        let local: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        let old: SocketAddr = "127.0.0.1:32784".parse().unwrap();
        let new: SocketAddr = "127.0.0.1:32786".parse().unwrap();
        live_on(
            &r,
            "web",
            "web.localhost",
            Upstream::of_container(old, "c1"),
        )
        .unwrap();
        r.change("web", false, |s| {
            s.colors.get_mut(&Color::Blue).unwrap().push(old.into());
            Ok(())
        })
        .unwrap();
        let seen = HashMap::from([("c1".to_string(), Seen::At(new))]);
        let changed = r.retarget(&seen, false).unwrap();
        assert_eq!(changed, vec![format!("web blue c1: moved {old} -> {new}")]);
        assert!(
            r.retarget(&seen, false).unwrap().is_empty(),
            "nothing left to do"
        );
        let table = r.table();
        let balancer = table
            .route(Some("web.localhost"), local, "/")
            .unwrap()
            .live
            .clone();
        assert_eq!(
            balancer.unwrap().addrs(),
            vec![new, old],
            "an upstream with no container is left alone"
        );
        // Missing from a whole listing: removed, out of rotation.
        let changed = r.retarget(&HashMap::new(), true).unwrap();
        assert_eq!(
            changed,
            vec!["web blue c1: out of rotation (removed)".to_string()]
        );
        let table = r.table();
        let balancer = table
            .route(Some("web.localhost"), local, "/")
            .unwrap()
            .live
            .clone();
        assert_eq!(balancer.unwrap().addrs(), vec![old]);
        // Persisted: a restarted proxy starts from what it last knew.
        let again = Router::restore(path).unwrap();
        let blue = &again.view("web").unwrap().state.colors[&Color::Blue];
        assert_eq!(blue[0].down.as_deref(), Some("removed"));
        assert_eq!(blue[0].addr, new);
    }

    #[test]
    fn a_listen_address_belongs_to_its_app_before_any_host() {
        let (r, _) = Router::scratch();
        let owned: SocketAddr = "127.0.0.1:18105".parse().unwrap();
        let shared: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let up: SocketAddr = "127.0.0.1:1".parse().unwrap();
        r.change("listen-only", true, |s| {
            s.listen = Some(owned);
            s.colors.insert(Color::Blue, vec![up.into()]);
            s.live = Some(Color::Blue);
            Ok(())
        })
        .unwrap();
        live_on(&r, "by-ip", "127.0.0.1", up.into()).unwrap();
        let table = r.table();
        let name = |local, host| table.route(Some(host), local, "/").map(|e| e.name.clone());
        assert_eq!(name(owned, "127.0.0.1").as_deref(), Some("listen-only"));
        assert_eq!(name(shared, "127.0.0.1").as_deref(), Some("by-ip"));
        // Another app's path prefix on the owner's own host keeps its paths
        // on the owner's listen address.
        r.change("listen-only", false, |s| {
            s.hosts = vec!["web.localhost".into()];
            Ok(())
        })
        .unwrap();
        r.change("api", true, |s| {
            s.hosts = vec!["web.localhost".into()];
            s.path_prefix = Some("/api".into());
            s.colors.insert(Color::Blue, vec![up.into()]);
            s.live = Some(Color::Blue);
            Ok(())
        })
        .unwrap();
        let table = r.table();
        let name = |host, path| table.route(Some(host), owned, path).map(|e| e.name.clone());
        assert_eq!(name("web.localhost", "/api/x").as_deref(), Some("api"));
        assert_eq!(name("web.localhost", "/").as_deref(), Some("listen-only"));
        assert_eq!(name("127.0.0.1", "/api/x").as_deref(), Some("listen-only"));
    }

    #[test]
    fn a_trailing_slash_does_not_make_another_claim() {
        let (r, _) = Router::scratch();
        let up: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let with_prefix = |route: &str, prefix: &str| {
            let spec = super::super::api::RouteSpec {
                hosts: vec!["shared.localhost".into()],
                listen: None,
                path_prefix: Some(prefix.into()),
                policy: RoutePolicy::default(),
                tls: None,
                preview: None,
            };
            r.change(route, true, |s| {
                spec.apply(s);
                s.colors.insert(Color::Blue, vec![up.into()]);
                s.live = Some(Color::Blue);
                Ok(())
            })
        };
        with_prefix("c", "/api").unwrap();
        assert!(matches!(
            with_prefix("d", "/api/"),
            Err(ChangeError::Conflict(_))
        ));
        assert!(
            with_prefix("e", "/apix").is_ok(),
            "another path is another claim"
        );
    }

    const WEB_LISTEN: &str = "127.0.0.1:18201";
    const PREVIEW_LISTEN: &str = "127.0.0.1:18202";
    const SHARED: &str = "127.0.0.1:80";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// `web` live on blue (upstream :1) with its host and listen address,
    /// and a preview host and listen address of its own.
    fn web_with_preview(r: &Router) {
        r.change("web", true, |s| {
            s.hosts = vec!["web.localhost".into()];
            s.listen = Some(addr(WEB_LISTEN));
            s.colors
                .insert(Color::Blue, vec![addr("127.0.0.1:1").into()]);
            s.live = Some(Color::Blue);
            s.preview = Some(crate::state::Preview {
                hosts: vec!["preview.localhost".into()],
                listen: Some(addr(PREVIEW_LISTEN)),
                path_prefix: None,
            });
            Ok(())
        })
        .unwrap();
    }

    /// Where a request goes: the route's name, whether it is the preview,
    /// and the upstreams it would reach (`None`: a 503).
    fn served(r: &Router, host: &str, local: &str) -> (String, bool, Option<Vec<SocketAddr>>) {
        let table = r.table();
        let e = table.route(Some(host), addr(local), "/").expect("routed");
        (
            e.name.clone(),
            e.preview,
            e.live.as_ref().map(|p| p.addrs()),
        )
    }

    #[test]
    fn a_preview_serves_the_candidate_and_never_live() {
        let (r, path) = Router::scratch();
        web_with_preview(&r);
        let (blue, green) = (addr("127.0.0.1:1"), addr("127.0.0.1:2"));
        let no_candidate = ("web".to_string(), true, None);
        // No candidate: the preview answers 503, on its host and its
        // listen address, whatever the Host there; it is not live's.
        assert_eq!(served(&r, "preview.localhost", SHARED), no_candidate);
        assert_eq!(served(&r, "web.localhost", PREVIEW_LISTEN), no_candidate);
        assert_eq!(served(&r, "preview.localhost", WEB_LISTEN), no_candidate);
        assert_eq!(
            served(&r, "web.localhost", SHARED),
            ("web".to_string(), false, Some(vec![blue]))
        );

        r.change("web", false, |s| {
            s.set_candidate(Color::Green, vec![green.into()], s.preview.clone())
                .map_err(ChangeError::Conflict)
        })
        .unwrap();
        let previewing = ("web".to_string(), true, Some(vec![green]));
        assert_eq!(served(&r, "preview.localhost", SHARED), previewing);
        assert_eq!(served(&r, "anything", PREVIEW_LISTEN), previewing);
        assert_eq!(served(&r, "web.localhost", PREVIEW_LISTEN), previewing);
        // An app's preview host is one of its own on its listen address.
        assert_eq!(served(&r, "preview.localhost", WEB_LISTEN), previewing);
        assert_eq!(served(&r, "web.localhost", WEB_LISTEN).2, Some(vec![blue]));
        assert!(r.listen_addrs().contains(&(addr(PREVIEW_LISTEN), false)));

        // Preview traffic is counted apart: verify reads only live's.
        let table = r.table();
        let balancer = table
            .route(Some("preview.localhost"), addr(SHARED), "/")
            .unwrap()
            .live
            .clone()
            .unwrap();
        balancer.stats.record(500, Duration::from_millis(1));
        let view = r.view("web").unwrap();
        assert_eq!(view.preview_stats.as_ref().unwrap().requests, 1);
        assert!(view.stats.values().all(|s| s.requests == 0), "{view:?}");

        // A restarted proxy previews the same candidate.
        let again = Router::restore(path.clone()).unwrap();
        assert_eq!(served(&again, "preview.localhost", SHARED), previewing);

        // The switch that makes it live ends the preview, in one change.
        r.change("web", false, |s| {
            s.switch_to(Color::Green);
            Ok(())
        })
        .unwrap();
        assert_eq!(served(&r, "preview.localhost", SHARED), no_candidate);
        assert_eq!(served(&r, "web.localhost", SHARED).2, Some(vec![green]));
        assert_eq!(r.view("web").unwrap().state.candidate, None);
        assert_eq!(
            Router::restore(path)
                .unwrap()
                .view("web")
                .unwrap()
                .state
                .candidate,
            None
        );
        // Blue, kept hot, is not a candidate: its set registered again
        // outside a gate's candidate, it is still not previewed.
        r.change("web", false, |s| {
            s.set_color(Color::Blue, vec![blue.into()]);
            Ok(())
        })
        .unwrap();
        assert_eq!(served(&r, "preview.localhost", SHARED), no_candidate);
    }

    #[test]
    fn the_live_color_is_never_previewed_nor_made_a_candidate() {
        let (r, _) = Router::scratch();
        web_with_preview(&r);
        let refused = r.change("web", false, |s| {
            s.set_candidate(Color::Blue, vec![addr("127.0.0.1:1").into()], None)
                .map_err(ChangeError::Conflict)
        });
        assert!(matches!(refused, Err(ChangeError::Conflict(m)) if m.contains("blue is live")));
        // Even a state that says so (written by hand, or by an older
        // proxy) gets a 503 on the preview, not the live color.
        r.change("web", false, |s| {
            s.candidate = Some(Color::Blue);
            Ok(())
        })
        .unwrap();
        assert_eq!(served(&r, "preview.localhost", SHARED).2, None);
        // An aborted candidate: its color removed, the preview answers 503.
        r.change("web", false, |s| {
            s.set_candidate(
                Color::Green,
                vec![addr("127.0.0.1:2").into()],
                s.preview.clone(),
            )
            .map_err(ChangeError::Conflict)
        })
        .unwrap();
        assert!(served(&r, "preview.localhost", SHARED).2.is_some());
        r.change("web", false, |s| {
            s.remove_color(Color::Green);
            Ok(())
        })
        .unwrap();
        assert_eq!(served(&r, "preview.localhost", SHARED).2, None);
    }

    #[test]
    fn no_app_takes_another_apps_preview_host() {
        let (r, _) = Router::scratch();
        let up: SocketAddr = addr("127.0.0.1:1");
        // A first deploy awaiting approval: nothing live, its preview set.
        r.change("web", true, |s| {
            let preview = Some(crate::state::Preview {
                hosts: vec!["preview.localhost".into()],
                listen: Some(addr(PREVIEW_LISTEN)),
                path_prefix: None,
            });
            s.set_candidate(Color::Blue, vec![up.into()], preview)
                .map_err(ChangeError::Conflict)
        })
        .unwrap();
        assert_eq!(served(&r, "preview.localhost", SHARED).2, Some(vec![up]));
        let taken = live_on(&r, "api", "Preview.Localhost", up.into());
        match taken {
            Err(ChangeError::Conflict(m)) => assert!(
                m.contains(
                    "host preview.localhost belongs to web, which previews its candidate on it"
                ),
                "{m}"
            ),
            other => panic!("the preview host was taken: {other:?}"),
        }
        let mut claim = RouteState {
            listen: Some(addr(PREVIEW_LISTEN)),
            ..RouteState::default()
        };
        assert!(r.check_claims("api", &claim).is_err(), "its listen address");
        // Nor as a preview of its own.
        claim.listen = None;
        claim.preview = Some(crate::state::Preview {
            hosts: vec!["preview.localhost".into()],
            ..Default::default()
        });
        assert!(r.check_claims("api", &claim).is_err());
        // And a preview cannot take a live app's host.
        live_on(&r, "api", "api.localhost", up.into()).unwrap();
        let refused = r.change("web", false, |s| {
            s.preview.as_mut().unwrap().hosts = vec!["api.localhost".into()];
            Ok(())
        });
        assert!(
            matches!(&refused, Err(ChangeError::Conflict(m)) if m.contains("belongs to api, which is live on it")),
            "{refused:?}"
        );
        // Nor one of its own app's: a request there could not tell.
        let refused = r.change("api", false, |s| {
            s.preview = Some(crate::state::Preview {
                hosts: vec!["api.localhost".into()],
                ..Default::default()
            });
            Ok(())
        });
        assert!(
            matches!(&refused, Err(ChangeError::Conflict(m)) if m.contains("preview's host api.localhost is also api's own")),
            "{refused:?}"
        );
        // Removing the app frees its preview host.
        r.remove("web", None).unwrap();
        assert!(live_on(&r, "other", "preview.localhost", up.into()).is_ok());
    }

    /// A new self-signed pair for web.localhost in `dir`, named `n`.
    fn pair(dir: &std::path::Path, n: &str) -> crate::state::TlsFiles {
        let c = rcgen::generate_simple_self_signed(vec!["web.localhost".into()]).unwrap();
        let (cert, key) = (dir.join(format!("{n}.crt")), dir.join(format!("{n}.key")));
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        crate::state::TlsFiles { cert, key }
    }

    #[test]
    fn a_shared_host_or_listen_address_gives_its_owners_certificate() {
        let (r, path) = Router::scratch();
        let dir = path.parent().unwrap();
        let listen = addr("127.0.0.1:18303");
        // "api" sorts first, and its longer prefix comes first in the
        // keys' lists: neither makes it the owner.
        for (name, prefix) in [("web", None), ("api", Some("/api"))] {
            let files = pair(dir, name);
            r.change(name, true, |s| {
                s.hosts = vec!["web.localhost".into()];
                s.listen = Some(listen);
                s.path_prefix = prefix.map(String::from);
                s.tls = Some(files.into());
                s.colors
                    .insert(Color::Blue, vec![addr("127.0.0.1:1").into()]);
                s.live = Some(Color::Blue);
                Ok(())
            })
            .unwrap();
        }
        let certs = |name| r.inner.lock().unwrap().certs.get(name).unwrap();
        let (web, api) = (certs("web"), certs("api"));
        assert!(!Arc::ptr_eq(&web, &api));
        let table = r.table();
        assert!(Arc::ptr_eq(&table.cert_for_listen(listen).unwrap(), &web));
        assert!(Arc::ptr_eq(
            &table.cert_for_host("web.localhost").unwrap(),
            &web
        ));
        // The owner gone, the address and host are the sub-path's.
        r.remove("web", None).unwrap();
        let table = r.table();
        assert!(Arc::ptr_eq(&table.cert_for_listen(listen).unwrap(), &api));
        assert!(Arc::ptr_eq(
            &table.cert_for_host("web.localhost").unwrap(),
            &api
        ));
    }
}
