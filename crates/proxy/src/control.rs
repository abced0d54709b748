//! The control plane: the verbs that change routes, each with the rule it
//! keeps. The admin API (`admin`) only maps a request to one of them.
//!
//! Every verb but `claim` (which only asks) is one `Router::change` (or
//! `Router::discard`): it is checked, applied, persisted and published
//! whole, or refused with nothing changed. `ChangeError` says why:
//! `NotFound` (no such route), `Conflict` (the rule refuses it, a listen
//! address cannot be bound, or the proxy is handing over to an upgraded
//! process), `Invalid` (a malformed spec), `Locked` (another deploy holds
//! the route's lease), `Io` (the state file cannot be written).
//!
//! | verb | keeps |
//! |---|---|
//! | `put_route` | hosts, listen address and preview are free, and bound before the change |
//! | `claim` | changes nothing: could the route take them? |
//! | `remove` | only the lease's holder removes a locked route |
//! | `set_color` | the live color is never emptied |
//! | `remove_color` | the live color is never removed: switch away first |
//! | `set_candidate` / `clear_candidate` | the preview never serves the live color |
//! | `switch` | never to a color with nothing in rotation; releases held requests; ends the candidate it makes live |
//! | `hold` / `release_hold` | requests wait at most `MAX_HOLD_MS` |
//! | `set_maintenance`, `set_draining`, `put_record` | none: stored as given |
//! | `lock` / `unlock` | the lease (`lease`) |
//!
//! Binding a listen address is the server's business, not the router's
//! (the router knows no sockets), yet it belongs to the verb: an address
//! is bound only once the verb's checks pass, and before the change that
//! routes it, so a refused verb leaves no listener behind and an accepted
//! one never routes an address nobody serves. So the verbs that bind take
//! `Listeners`, a small trait the server implements, rather than a closure:
//! they ask three things of it (is the address the proxy's own, is it
//! served, bind it), which one named trait says more plainly than three
//! closures; and the unit tests give it real sockets, with no HTTP.

use std::net::SocketAddr;

use super::api::{CandidateRequest, LockRequest, RouteSpec, SwitchRequest, SwitchResponse};
use super::lease::{self, Lock};
use super::router::{ChangeError, Router};
use super::state::{routable, Maintenance, RouteState, TlsSource, Upstream};
use cyan_plan::release::Color;

/// A hold is bounded: requests never wait longer than this.
pub const MAX_HOLD_MS: u64 = 60_000;

/// The server's listening sockets, as the verbs that give a route (or its
/// preview) a listen address need them.
pub trait Listeners {
    /// The proxy's own flag that listens on `addr` (`--listen`,
    /// `--tls-listen`), if one does: there every app is routed by its host.
    fn flag_for(&self, addr: SocketAddr) -> Option<&'static str>;
    /// Is `addr` served already?
    fn serves(&self, addr: SocketAddr) -> bool;
    /// Serves `addr` (TLS, or plain HTTP) unless it is served already;
    /// fails when it cannot be bound, or is served the other way.
    fn listen(&self, addr: SocketAddr, tls: bool) -> std::io::Result<()>;
}

impl Router {
    /// Sets a route's hosts, listen address, path prefix, policy, TLS and
    /// preview (`RouteSpec::apply`), creating the route if need be.
    ///
    /// Refused, before anything is bound, when the spec is not one the
    /// proxy can serve (`check_route`) or takes a host or listen address
    /// another route holds; then its listen addresses are bound, then the
    /// change is made. Errors: `Invalid`, `Conflict` (whose address it
    /// is, or `cannot listen on ...`), `Io`.
    pub fn put_route(
        &self,
        route: &str,
        spec: RouteSpec,
        listeners: &impl Listeners,
    ) -> Result<(), ChangeError> {
        self.prepare_route(route, &spec, listeners)?;
        self.change(route, true, |r| {
            spec.apply(r);
            Ok(())
        })
    }

    /// Could `route` take `spec`'s hosts and listen addresses? Nothing
    /// changes: a listen address nothing serves is bound and let go at
    /// once. Errors as `put_route`'s, without `Io`.
    pub fn claim(
        &self,
        route: &str,
        spec: &RouteSpec,
        listeners: &impl Listeners,
    ) -> Result<(), ChangeError> {
        self.check_route(route, spec, listeners)?;
        for addr in listen_addrs(spec) {
            if !listeners.serves(addr) {
                std::net::TcpListener::bind(addr).map_err(|e| cannot_listen(addr, e))?;
            }
        }
        let mut wanted = RouteState::default();
        spec.clone().apply(&mut wanted);
        self.check_claims(route, &wanted)
    }

    /// Takes a route out: its requests, its record and its lease. Its
    /// upstreams' in-flight requests finish; its tunnels close now.
    /// Refused (`Locked`) while the lease is held by anyone but `token`'s
    /// holder; `NotFound` when there is no such route.
    pub fn remove(&self, route: &str, token: Option<&str>) -> Result<(), ChangeError> {
        self.discard(route, |r| {
            let now = crate::clock::now_ms();
            match lease::held_against(r.lock.as_ref(), token, now) {
                Some(held) => Err(ChangeError::Locked(held.clone())),
                None => Ok(()),
            }
        })
    }

    /// Sets `color`'s upstreams outside a gate's candidate (a repair, a
    /// previous release started again); such a set is not the candidate.
    /// Refused (`Conflict`) when `color` is live and none of `upstreams` is
    /// in rotation: the live color is never emptied.
    pub fn set_color(
        &self,
        route: &str,
        color: Color,
        upstreams: Vec<Upstream>,
    ) -> Result<(), ChangeError> {
        self.change(route, false, |r| {
            if r.live == Some(color) && routable(&upstreams).is_empty() {
                return Err(ChangeError::Conflict(format!(
                    "{color} is live; it cannot be emptied"
                )));
            }
            r.set_color(color, upstreams);
            Ok(())
        })
    }

    /// Takes `color`'s set out, and the preview of it if it was the
    /// candidate. Refused (`Conflict`) for the live color: switch away first.
    pub fn remove_color(&self, route: &str, color: Color) -> Result<(), ChangeError> {
        self.change(route, false, |r| {
            if r.live == Some(color) {
                return Err(ChangeError::Conflict(format!(
                    "{color} is live; switch away first"
                )));
            }
            r.remove_color(color);
            Ok(())
        })
    }

    /// `req.color`'s set passed its gate and was never live: its upstreams
    /// are set, it becomes the candidate the preview serves, and the
    /// preview is set, in one change. A preview listen address is checked
    /// (not the proxy's own, not another route's) and bound first.
    /// Refused (`Conflict`) for the live color: the preview never serves it.
    pub fn set_candidate(
        &self,
        route: &str,
        req: CandidateRequest,
        listeners: &impl Listeners,
    ) -> Result<(), ChangeError> {
        if let Some(addr) = req.preview.as_ref().and_then(|p| p.listen) {
            not_the_proxys_own(listeners, addr, "preview listen address")?;
            if !listeners.serves(addr) {
                self.check_owners(route, |r| r.preview = req.preview.clone())?;
            }
            listen_for(listeners, addr, false)?;
        }
        self.change(route, false, |r| {
            r.set_candidate(req.color, req.upstreams, req.preview)
                .map_err(ChangeError::Conflict)
        })
    }

    /// No candidate: the preview answers 503 until the next one.
    pub fn clear_candidate(&self, route: &str) -> Result<(), ChangeError> {
        self.change(route, false, |r| {
            r.candidate = None;
            Ok(())
        })
    }

    /// Makes `req.color` live in one atomic step, with (in the same step)
    /// its upstreams, the route's spec (checked and bound first, as
    /// `put_route`'s) and the deployer's record when `req` has them. Held
    /// requests go to the new color; a candidate it makes live is no
    /// longer previewed. Returns the color that was live.
    ///
    /// Refused (`Conflict`) when the color has no upstream in rotation:
    /// never a switch to nothing.
    pub fn switch(
        &self,
        route: &str,
        req: SwitchRequest,
        listeners: &impl Listeners,
    ) -> Result<SwitchResponse, ChangeError> {
        if let Some(spec) = &req.route {
            self.prepare_route(route, spec, listeners)?;
        }
        self.change(route, false, |r| {
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
            let previous = r.switch_to(req.color);
            if let Some(record) = req.record {
                r.record = record;
            }
            Ok(SwitchResponse {
                previous,
                live: req.color,
            })
        })
    }

    /// New requests wait until the next switch (or `release_hold`), for
    /// at most `timeout_ms`, capped at `MAX_HOLD_MS`. Returns the ms held.
    pub fn hold(&self, route: &str, timeout_ms: u64) -> Result<u64, ChangeError> {
        let timeout = timeout_ms.min(MAX_HOLD_MS);
        self.change(route, false, |r| {
            r.hold_until_ms = Some(crate::clock::now_ms() + timeout);
            Ok(timeout)
        })
    }

    /// Held requests go on to the live color now.
    pub fn release_hold(&self, route: &str) -> Result<(), ChangeError> {
        self.change(route, false, |r| {
            r.hold_until_ms = None;
            Ok(())
        })
    }

    /// The route leaves (`true`) or rejoins the load balancer in front of
    /// this host: what its `/cyan/up` answers.
    pub fn set_draining(&self, route: &str, draining: bool) -> Result<(), ChangeError> {
        self.change(route, false, |r| {
            r.draining = draining;
            Ok(())
        })
    }

    /// Every request gets the maintenance page (`Some`), or is routed again (`None`).
    pub fn set_maintenance(
        &self,
        route: &str,
        maintenance: Option<Maintenance>,
    ) -> Result<(), ChangeError> {
        self.change(route, false, |r| {
            r.maintenance = maintenance;
            Ok(())
        })
    }

    /// Stores the deployer's record, verbatim: the proxy never reads it.
    pub fn put_record(&self, route: &str, record: serde_json::Value) -> Result<(), ChangeError> {
        self.change(route, false, |r| {
            r.record = record;
            Ok(())
        })
    }

    /// Takes or renews the route's lease for `req.token` (`lease::take`),
    /// creating the route if need be. Returns the lease as it is now;
    /// `Locked` with the holder's lease while another token holds it.
    pub fn lock(&self, route: &str, req: LockRequest) -> Result<Lock, ChangeError> {
        let now = crate::clock::now_ms();
        self.change(route, true, |r| {
            let taken = lease::take(r.lock.as_ref(), req, now).map_err(ChangeError::Locked)?;
            r.lock = Some(taken.clone());
            Ok(taken)
        })
    }

    /// Lets the route's lease go if `token` holds it; any other token
    /// changes nothing (its lease expired and was taken by another).
    pub fn unlock(&self, route: &str, token: &str) -> Result<(), ChangeError> {
        self.change(route, false, |r| {
            lease::release(&mut r.lock, token);
            Ok(())
        })
    }

    /// Checks what a route spec needs outside the route's state and binds
    /// its listen addresses, before the change that applies it.
    fn prepare_route(
        &self,
        route: &str,
        spec: &RouteSpec,
        listeners: &impl Listeners,
    ) -> Result<(), ChangeError> {
        self.check_route(route, spec, listeners)?;
        if listen_addrs(spec).any(|a| !listeners.serves(a)) {
            self.check_owners(route, |r| spec.clone().apply(r))?;
        }
        if let Some(addr) = spec.listen {
            listen_for(listeners, addr, spec.tls.is_some())?;
        }
        if let Some(addr) = spec.preview.as_ref().and_then(|p| p.listen) {
            listen_for(listeners, addr, false)?;
        }
        Ok(())
    }

    /// Refuses, before anything is bound, a change (`change` applied to the
    /// route's state now) that would take a host or listen address another
    /// route holds: a refused change must not leave a listener behind.
    fn check_owners(
        &self,
        route: &str,
        change: impl FnOnce(&mut RouteState),
    ) -> Result<(), ChangeError> {
        let mut wanted = self.view(route).map(|v| v.state).unwrap_or_default();
        change(&mut wanted);
        self.check_claims(route, &wanted)
    }

    /// A route spec's listen addresses that are not the proxy's own, its
    /// path prefix, and its TLS files or ACME hosts.
    fn check_route(
        &self,
        route: &str,
        spec: &RouteSpec,
        listeners: &impl Listeners,
    ) -> Result<(), ChangeError> {
        if let Some(addr) = spec.listen {
            not_the_proxys_own(listeners, addr, "listen address")?;
        }
        if let Some(addr) = spec.preview.as_ref().and_then(|p| p.listen) {
            not_the_proxys_own(listeners, addr, "preview listen address")?;
        }
        if let Some(p) = spec.path_prefix.as_deref().filter(|p| !p.starts_with('/')) {
            return Err(ChangeError::Invalid(format!(
                "path prefix {p:?} must start with '/'"
            )));
        }
        match &spec.tls {
            Some(TlsSource::Files(files)) => {
                self.check_tls(route, files).map_err(ChangeError::Invalid)
            }
            Some(TlsSource::Acme) => {
                super::acme::check_hosts(&spec.hosts).map_err(ChangeError::Invalid)
            }
            None => Ok(()),
        }
    }
}

/// A spec's own listen address, then its preview's.
fn listen_addrs(spec: &RouteSpec) -> impl Iterator<Item = SocketAddr> {
    let preview = spec.preview.as_ref().and_then(|p| p.listen);
    spec.listen.into_iter().chain(preview)
}

/// Binds `addr` (plain HTTP or TLS) unless the proxy serves it already.
fn listen_for(listeners: &impl Listeners, addr: SocketAddr, tls: bool) -> Result<(), ChangeError> {
    listeners
        .listen(addr, tls)
        .map_err(|e| cannot_listen(addr, e))
}

fn cannot_listen(addr: SocketAddr, e: std::io::Error) -> ChangeError {
    ChangeError::Conflict(format!("cannot listen on {addr}: {e}"))
}

/// Refuses `addr` as a route's own listen address (or its preview's,
/// `whose`) when it is one of the proxy's `--listen` / `--tls-listen`
/// addresses: there every app is routed by its Host, and an address a
/// route owns takes every request that arrives on it, other apps' too.
fn not_the_proxys_own(
    listeners: &impl Listeners,
    addr: SocketAddr,
    whose: &str,
) -> Result<(), ChangeError> {
    let Some(flag) = listeners.flag_for(addr) else {
        return Ok(());
    };
    Err(ChangeError::Conflict(format!(
        "{whose} {addr} is the proxy's own {flag} address, where every app is served by its host: \
         an app (or preview) that owned it would take the other apps' requests there. \
         Give it an address of its own, or route it there by host (proxy.host, preview.host)"
    )))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use crate::api::PreviewSpec;
    use crate::state::{Preview, RoutePolicy};

    /// The server's side with real sockets on loopback, bound on demand;
    /// `own` plays the proxy's `--listen`.
    #[derive(Default)]
    struct Sockets {
        own: Vec<SocketAddr>,
        bound: Mutex<HashMap<SocketAddr, std::net::TcpListener>>,
    }

    impl Listeners for Sockets {
        fn flag_for(&self, addr: SocketAddr) -> Option<&'static str> {
            self.own.contains(&addr).then_some("--listen")
        }
        fn serves(&self, addr: SocketAddr) -> bool {
            self.bound.lock().unwrap().contains_key(&addr)
        }
        fn listen(&self, addr: SocketAddr, _tls: bool) -> std::io::Result<()> {
            if !self.serves(addr) {
                let socket = std::net::TcpListener::bind(addr)?;
                self.bound.lock().unwrap().insert(addr, socket);
            }
            Ok(())
        }
    }

    /// A loopback address nothing listens on (the kernel's pick, let go).
    fn free_addr() -> SocketAddr {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap()
    }

    fn up(port: u16) -> Upstream {
        SocketAddr::from(([127, 0, 0, 1], port)).into()
    }

    fn spec(host: &str, listen: Option<SocketAddr>) -> RouteSpec {
        RouteSpec {
            hosts: vec![host.into()],
            listen,
            path_prefix: None,
            policy: RoutePolicy::default(),
            tls: None,
            preview: None,
        }
    }

    fn switch_to(color: Color, upstreams: Option<Vec<Upstream>>) -> SwitchRequest {
        SwitchRequest {
            color,
            upstreams,
            record: None,
            route: None,
        }
    }

    /// `route` on `host`, live on blue (upstream :1), green standing by (:2).
    fn live(r: &Router, route: &str, host: &str) {
        let none = Sockets::default();
        r.put_route(route, spec(host, None), &none).unwrap();
        r.set_color(route, Color::Green, vec![up(2)]).unwrap();
        r.switch(route, switch_to(Color::Blue, Some(vec![up(1)])), &none)
            .unwrap();
    }

    fn state(r: &Router, route: &str) -> RouteState {
        r.view(route).expect("the route").state
    }

    #[test]
    fn put_route_binds_only_what_it_may_take() {
        let (r, _) = Router::scratch();
        let (own, taken, free) = (free_addr(), free_addr(), free_addr());
        let sockets = Sockets {
            own: vec![own],
            ..Sockets::default()
        };
        let refused = r.put_route("web", spec("web.localhost", Some(own)), &sockets);
        assert!(
            matches!(&refused, Err(ChangeError::Conflict(m)) if m.contains(&format!("listen address {own} is the proxy's own --listen address"))),
            "{refused:?}"
        );
        let mut bad = spec("web.localhost", None);
        bad.path_prefix = Some("api".into());
        let refused = r.put_route("web", bad, &sockets);
        assert!(
            matches!(&refused, Err(ChangeError::Invalid(m)) if m == r#"path prefix "api" must start with '/'"#),
            "{refused:?}"
        );
        let mut acme = spec("127.0.0.1", None);
        acme.tls = Some(TlsSource::Acme);
        assert!(matches!(
            r.put_route("web", acme, &sockets),
            Err(ChangeError::Invalid(_))
        ));
        assert!(r.view("web").is_none(), "a refused route is not made");

        // Another app's listen address: refused before it is bound.
        r.put_route("api", spec("api.localhost", Some(taken)), &sockets)
            .unwrap();
        r.switch("api", switch_to(Color::Blue, Some(vec![up(1)])), &sockets)
            .unwrap();
        sockets.bound.lock().unwrap().remove(&taken);
        let refused = r.put_route("web", spec("web.localhost", Some(taken)), &sockets);
        assert!(
            matches!(&refused, Err(ChangeError::Conflict(m)) if m.contains("belongs to api")),
            "{refused:?}"
        );
        assert!(!sockets.serves(taken), "a refused route binds nothing");

        r.put_route("web", spec("Web.Localhost", Some(free)), &sockets)
            .unwrap();
        assert!(sockets.serves(free), "bound before it is routed");
        let web = state(&r, "web");
        assert_eq!(
            (web.hosts, web.listen),
            (vec!["web.localhost".into()], Some(free))
        );
    }

    #[test]
    fn claim_changes_nothing() {
        let (r, _) = Router::scratch();
        let sockets = Sockets::default();
        live(&r, "api", "api.localhost");
        let free = free_addr();
        r.claim("web", &spec("web.localhost", Some(free)), &sockets)
            .unwrap();
        assert!(r.view("web").is_none(), "no route made");
        assert!(!sockets.serves(free), "nothing kept bound");
        let refused = r.claim("web", &spec("api.localhost", None), &sockets);
        assert!(
            matches!(&refused, Err(ChangeError::Conflict(m)) if m.contains("host api.localhost belongs to api, which is live on it")),
            "{refused:?}"
        );
        // An address something else listens on cannot be the route's.
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = busy.local_addr().unwrap();
        let refused = r.claim("web", &spec("web.localhost", Some(at)), &sockets);
        assert!(
            matches!(&refused, Err(ChangeError::Conflict(m)) if m.starts_with(&format!("cannot listen on {at}: "))),
            "{refused:?}"
        );
    }

    #[test]
    fn a_locked_route_is_not_removed_but_by_its_holder() {
        let (r, _) = Router::scratch();
        let holder = LockRequest {
            token: "t1".into(),
            holder: "deploy 2 by alice".into(),
            pid: std::process::id(),
            host: crate::clock::hostname(),
            ttl_ms: 15_000,
        };
        r.lock("web", holder).unwrap();
        assert!(matches!(r.remove("web", None), Err(ChangeError::Locked(_))));
        assert!(matches!(
            r.remove("web", Some("t2")),
            Err(ChangeError::Locked(_))
        ));
        r.remove("web", Some("t1")).unwrap();
        assert!(matches!(
            r.remove("web", None),
            Err(ChangeError::NotFound(_))
        ));
    }

    #[test]
    fn the_live_color_is_never_emptied() {
        let (r, _) = Router::scratch();
        live(&r, "web", "web.localhost");
        let refused = r.set_color("web", Color::Blue, vec![]);
        assert!(
            matches!(&refused, Err(ChangeError::Conflict(m)) if m == "blue is live; it cannot be emptied"),
            "{refused:?}"
        );
        let mut down = up(3);
        down.down = Some("exited".into());
        assert!(
            r.set_color("web", Color::Blue, vec![down]).is_err(),
            "nothing in rotation is empty too"
        );
        assert_eq!(state(&r, "web").colors[&Color::Blue], vec![up(1)]);
        r.set_color("web", Color::Blue, vec![up(3)]).unwrap();
        r.set_color("web", Color::Green, vec![]).unwrap();
        assert!(matches!(
            r.set_color("nope", Color::Green, vec![up(2)]),
            Err(ChangeError::NotFound(_))
        ));
    }

    #[test]
    fn the_live_color_is_not_removed_until_switched_away() {
        let (r, _) = Router::scratch();
        live(&r, "web", "web.localhost");
        let refused = r.remove_color("web", Color::Blue);
        assert!(
            matches!(&refused, Err(ChangeError::Conflict(m)) if m == "blue is live; switch away first"),
            "{refused:?}"
        );
        r.remove_color("web", Color::Green).unwrap();
        assert!(!state(&r, "web").colors.contains_key(&Color::Green));
        r.switch(
            "web",
            switch_to(Color::Green, Some(vec![up(2)])),
            &Sockets::default(),
        )
        .unwrap();
        r.remove_color("web", Color::Blue).unwrap();
    }

    #[test]
    fn a_candidate_is_never_the_live_color() {
        let (r, _) = Router::scratch();
        live(&r, "web", "web.localhost");
        let (own, free) = (free_addr(), free_addr());
        let sockets = Sockets {
            own: vec![own],
            ..Sockets::default()
        };
        let candidate = |color, listen| CandidateRequest {
            color,
            upstreams: vec![up(2)],
            preview: Some(Preview {
                hosts: vec!["preview.localhost".into()],
                listen,
                path_prefix: None,
            }),
        };
        let refused = r.set_candidate("web", candidate(Color::Blue, None), &sockets);
        assert!(
            matches!(&refused, Err(ChangeError::Conflict(m)) if m == "blue is live; the preview never serves the live color"),
            "{refused:?}"
        );
        let refused = r.set_candidate("web", candidate(Color::Green, Some(own)), &sockets);
        assert!(
            matches!(&refused, Err(ChangeError::Conflict(m)) if m.starts_with(&format!("preview listen address {own} is the proxy's own --listen"))),
            "{refused:?}"
        );
        assert_eq!(state(&r, "web").candidate, None);
        r.set_candidate("web", candidate(Color::Green, Some(free)), &sockets)
            .unwrap();
        assert!(sockets.serves(free), "the preview's address is bound");
        assert_eq!(state(&r, "web").previewed(), Some(Color::Green));
        r.clear_candidate("web").unwrap();
        let web = state(&r, "web");
        assert_eq!(web.previewed(), None);
        assert!(web.preview.is_some(), "the preview stays, answering 503");
    }

    #[test]
    fn a_switch_is_never_to_nothing_and_releases_what_it_ends() {
        let (r, _) = Router::scratch();
        let sockets = Sockets::default();
        live(&r, "web", "web.localhost");
        let refused = r.switch("web", switch_to(Color::Green, Some(vec![])), &sockets);
        assert!(
            matches!(&refused, Err(ChangeError::Conflict(m)) if m == "green has no upstreams in rotation; refusing to switch to nothing"),
            "{refused:?}"
        );
        assert_eq!(
            state(&r, "web").colors[&Color::Green],
            vec![up(2)],
            "nothing changed"
        );

        // The candidate it makes live, the hold and the record: one step.
        r.set_candidate(
            "web",
            CandidateRequest {
                color: Color::Green,
                upstreams: vec![up(2)],
                preview: None,
            },
            &sockets,
        )
        .unwrap();
        r.hold("web", 5_000).unwrap();
        let mut req = switch_to(Color::Green, None);
        req.record = Some(serde_json::json!({"release": 2}));
        let mut moved = spec("web.localhost", None);
        moved.path_prefix = Some("/app".into());
        moved.preview = Some(PreviewSpec {
            hosts: vec!["preview.localhost".into()],
            listen: None,
        });
        req.route = Some(moved);
        let switched = r.switch("web", req, &sockets).unwrap();
        assert_eq!(
            (switched.previous, switched.live),
            (Some(Color::Blue), Color::Green)
        );
        let web = state(&r, "web");
        assert_eq!(web.live, Some(Color::Green));
        assert_eq!((web.candidate, web.hold_until_ms), (None, None));
        assert_eq!(web.record, serde_json::json!({"release": 2}));
        assert_eq!(web.path_prefix.as_deref(), Some("/app"));
        assert!(matches!(
            r.switch("nope", switch_to(Color::Blue, None), &sockets),
            Err(ChangeError::NotFound(_))
        ));
    }

    #[test]
    fn a_hold_is_bounded_and_released() {
        let (r, _) = Router::scratch();
        live(&r, "web", "web.localhost");
        let before = crate::clock::now_ms();
        assert_eq!(r.hold("web", 600_000).unwrap(), MAX_HOLD_MS);
        let until = state(&r, "web").hold_until_ms.unwrap();
        assert!(until >= before + MAX_HOLD_MS && until <= crate::clock::now_ms() + MAX_HOLD_MS);
        assert_eq!(r.hold("web", 250).unwrap(), 250);
        r.release_hold("web").unwrap();
        assert_eq!(state(&r, "web").hold_until_ms, None);
    }

    #[test]
    fn maintenance_and_the_record_are_stored_as_given() {
        let (r, path) = Router::scratch();
        live(&r, "web", "web.localhost");
        let page = Maintenance {
            retry_after_s: 30,
            message: Some("back soon".into()),
        };
        r.set_maintenance("web", Some(page.clone())).unwrap();
        let record = serde_json::json!({"anything": ["the", "deployer", 1]});
        r.put_record("web", record.clone()).unwrap();
        let again = Router::restore(path).unwrap().view("web").unwrap().state;
        assert_eq!((again.maintenance, again.record), (Some(page), record));
        r.set_maintenance("web", None).unwrap();
        assert_eq!(state(&r, "web").maintenance, None);
        assert!(matches!(
            r.put_record("nope", serde_json::json!({})),
            Err(ChangeError::NotFound(_))
        ));
    }

    #[test]
    fn the_lease_is_taken_renewed_and_released_by_its_holder() {
        let (r, _) = Router::scratch();
        let request = |token: &str| LockRequest {
            token: token.into(),
            holder: format!("deploy by {token}"),
            pid: std::process::id(),
            host: crate::clock::hostname(),
            ttl_ms: 15_000,
        };
        let taken = r.lock("web", request("t1")).unwrap();
        assert_eq!(
            state(&r, "web").lock.as_ref(),
            Some(&taken),
            "the route is made"
        );
        let refused = r.lock("web", request("t2"));
        assert!(
            matches!(&refused, Err(ChangeError::Locked(held)) if held.token == "t1"),
            "{refused:?}"
        );
        // A renewal (or the record) is kept, and costs no table: no
        // request reads either.
        live(&r, "web", "web.localhost");
        let published = r.published();
        let table = std::sync::Arc::as_ptr(&r.table());
        let renewed = r.lock("web", request("t1")).unwrap();
        assert_eq!(renewed.since, taken.since);
        r.put_record("web", serde_json::json!({"n": 1})).unwrap();
        assert!(!published.has_changed().unwrap(), "no new table");
        assert_eq!(std::sync::Arc::as_ptr(&r.table()), table);
        r.switch("web", switch_to(Color::Green, None), &Sockets::default())
            .unwrap();
        assert!(published.has_changed().unwrap(), "a switch publishes");
        r.unlock("web", "t2").unwrap();
        assert!(state(&r, "web").lock.is_some(), "not t2's to release");
        r.unlock("web", "t1").unwrap();
        assert_eq!(state(&r, "web").lock, None);
        r.lock("web", request("t2")).unwrap();
    }
}
