//! The load balancer of one color of one route: its upstreams, and for
//! each request the one it claims, by the route's balance (round-robin or
//! least connections), skipping upstreams that passive or active health
//! took out of rotation (kamal-proxy's `load_balancer.go`).
//!
//! It also holds what is the color's as a whole: its counters (`stats`),
//! kept when its upstreams move, and, once the color stops being live, the
//! deadline by which its long-lived connections end (`drain`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::drain::{Closing, Slots};
use super::state::{Balance, RequestPolicy};
use super::stats::ColorStats;
use super::upstream::{Claim, Upstream};
use super::workers::PerThread;
use cyan_plan::release::Color;

/// The live (or standby) set of one color of one route.
pub struct LoadBalancer {
    pub color: Color,
    upstreams: Vec<Upstream>,
    /// Round-robin position, per thread.
    next: PerThread<AtomicUsize>,
    epoch: Instant,
    /// When this color's long-lived connections (tunnels, streamed
    /// responses) must end; `None` while live.
    closing: watch::Sender<Option<Closing>>,
    /// Their places in the window their ends are spread over.
    pub slots: Slots,
    /// Shared with the load balancer that follows this one when its
    /// upstreams move (`moved`): a restarted replica does not reset the
    /// color's counters.
    pub stats: Arc<ColorStats>,
}

impl LoadBalancer {
    pub fn new(color: Color, addrs: &[SocketAddr]) -> Arc<LoadBalancer> {
        Self::with_stats(color, addrs, Arc::default())
    }

    /// The same color at new addresses (a replica restarted on another
    /// port, or was replaced), keeping its counters.
    pub fn moved(&self, addrs: &[SocketAddr]) -> Arc<LoadBalancer> {
        Self::with_stats(self.color, addrs, self.stats.clone())
    }

    fn with_stats(color: Color, addrs: &[SocketAddr], stats: Arc<ColorStats>) -> Arc<LoadBalancer> {
        Arc::new(LoadBalancer {
            color,
            upstreams: addrs.iter().map(|&addr| Upstream::new(addr)).collect(),
            next: PerThread::default(),
            epoch: Instant::now(),
            closing: watch::channel(None).0,
            slots: Slots::default(),
            stats,
        })
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.upstreams.iter().map(|u| u.addr).collect()
    }

    /// Milliseconds since its epoch: the clock of its ejections.
    pub(super) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub(super) fn upstream(&self, idx: usize) -> &Upstream {
        &self.upstreams[idx]
    }

    /// Claims an upstream by the route's balance, skipping ejected ones
    /// (unless all are ejected: then some traffic is better than none).
    /// `None` if it has no upstream.
    pub fn claim(self: &Arc<Self>, policy: &RequestPolicy) -> Option<Claim> {
        let n = self.upstreams.len();
        if n == 0 {
            return None;
        }
        let (shard, next) = self.next.local();
        let start = next.fetch_add(1, Relaxed);
        let order = (0..n).map(|i| (start + i) % n);
        // The clock is read only if some upstream has been ejected.
        let mut now = None;
        let mut healthy = |&i: &usize| match self.upstreams[i].ejected_until_ms() {
            0 => true,
            until => until <= *now.get_or_insert_with(|| self.now_ms()),
        };
        let idx = match policy.balance {
            Balance::RoundRobin => order.clone().find(|i| healthy(i)),
            Balance::LeastConnections => order
                .clone()
                .filter(|i| healthy(i))
                .min_by_key(|&i| self.upstreams[i].inflight()),
        }
        .unwrap_or(start % n);
        Some(Claim::new(self.clone(), idx, shard))
    }

    /// Takes `addr` out of rotation for `for_ms` (an active check failed),
    /// or puts it back (`0`: it passed).
    pub fn set_ejected(&self, addr: SocketAddr, for_ms: u64) {
        let until = if for_ms == 0 {
            0
        } else {
            self.now_ms() + for_ms
        };
        for u in self.upstreams.iter().filter(|u| u.addr == addr) {
            u.eject_until_ms(until);
        }
    }

    /// How many upstreams are in rotation: not ejected (by passive or
    /// active health) now.
    pub fn in_rotation(&self) -> usize {
        let now = self.now_ms();
        self.upstreams
            .iter()
            .filter(|u| u.ejected_until_ms() <= now)
            .count()
    }

    /// Upstreams currently ejected by passive health.
    pub fn ejected(&self) -> Vec<SocketAddr> {
        let now = self.now_ms();
        self.upstreams
            .iter()
            .filter(|u| u.ejected_until_ms() > now)
            .map(|u| u.addr)
            .collect()
    }

    /// The color is live again: its tunnels stay open.
    pub fn keep_open(&self) {
        self.closing.send_if_modified(|c| c.take().is_some());
    }

    /// The color is no longer live: its long-lived connections end by
    /// `now + grace`, spread over the `spread` before that (an earlier
    /// deadline already set stands).
    pub fn close_by(&self, grace: Duration, spread: Duration) {
        let at = Instant::now() + grace;
        let closing = Closing {
            at,
            spread: spread.min(grace),
        };
        self.closing.send_if_modified(|c| match c {
            Some(t) if t.at <= at => false,
            _ => {
                *c = Some(closing);
                true
            }
        });
    }

    /// Watches the closing deadline.
    pub fn closing(&self) -> watch::Receiver<Option<Closing>> {
        self.closing.subscribe()
    }

    /// Requests on this color that have not finished.
    pub fn inflight(&self) -> u64 {
        self.upstreams.iter().map(Upstream::inflight).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    use crate::state::RoutePolicy;

    #[test]
    fn claims_rotate_and_release_on_drop() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let balancer = LoadBalancer::new(Color::Blue, &[a, b]);
        let rr = RoutePolicy::default().per_request(PEER);
        let c1 = balancer.claim(&rr).unwrap();
        let c2 = balancer.claim(&rr).unwrap();
        let c3 = balancer.claim(&rr).unwrap();
        assert_eq!([c1.addr(), c2.addr(), c3.addr()], [a, b, a]);
        assert_eq!(balancer.inflight(), 3);
        drop((c1, c2));
        assert_eq!(balancer.inflight(), 1);
        drop(c3);
        assert_eq!(balancer.inflight(), 0);
        assert!(LoadBalancer::new(Color::Green, &[]).claim(&rr).is_none());
    }

    #[test]
    fn least_connections_picks_the_idlest_upstream() {
        let addrs: Vec<SocketAddr> = (1..=3)
            .map(|p| format!("127.0.0.1:{p}").parse().unwrap())
            .collect();
        let balancer = LoadBalancer::new(Color::Blue, &addrs);
        let lc = RoutePolicy {
            balance: Balance::LeastConnections,
            ..RoutePolicy::default()
        }
        .per_request(PEER);
        let mut held: Vec<Claim> = (0..3).map(|_| balancer.claim(&lc).unwrap()).collect();
        let mut got: Vec<_> = held.iter().map(Claim::addr).collect();
        got.sort();
        assert_eq!(got, addrs, "one claim each before any doubles up");
        let idle = held.remove(1).addr();
        for _ in 0..4 {
            let c = balancer.claim(&lc).unwrap();
            assert_eq!(c.addr(), idle, "the only idle upstream");
        }
        assert_eq!(held.len(), 2);
    }

    #[test]
    fn a_failure_streak_ejects_until_cooloff_and_all_ejected_fails_open() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let balancer = LoadBalancer::new(Color::Blue, &[a, b]);
        let p = RoutePolicy {
            eject_after: 2,
            eject_for_ms: 60_000,
            ..RoutePolicy::default()
        }
        .per_request(PEER);
        let fail_on = |addr| loop {
            let c = balancer.claim(&p).unwrap();
            if c.addr() == addr {
                c.failed(&p);
                return;
            }
        };
        fail_on(a);
        assert!(balancer.ejected().is_empty(), "one failure is not a streak");
        fail_on(a);
        assert_eq!(balancer.ejected(), [a]);
        for _ in 0..6 {
            assert_eq!(balancer.claim(&p).unwrap().addr(), b);
        }
        fail_on(b);
        fail_on(b);
        assert_eq!(balancer.ejected().len(), 2);
        assert!(balancer.claim(&p).is_some(), "all ejected: still routes");
    }

    #[tokio::test]
    async fn closing_deadline_is_set_on_leaving_live_and_cleared_on_return() {
        let balancer = LoadBalancer::new(Color::Blue, &["127.0.0.1:1".parse().unwrap()]);
        let rx = balancer.closing();
        assert!(rx.borrow().is_none());
        balancer.close_by(Duration::from_secs(30), Duration::from_secs(5));
        let first = rx.borrow().unwrap();
        assert_eq!(first.spread, Duration::from_secs(5));
        balancer.close_by(Duration::from_secs(60), Duration::ZERO);
        assert_eq!(
            rx.borrow().unwrap(),
            first,
            "a later deadline does not extend"
        );
        balancer.close_by(Duration::ZERO, Duration::from_secs(5));
        let now = rx.borrow().unwrap();
        assert!(now.at < first.at, "an earlier one wins");
        assert_eq!(
            now.spread,
            Duration::ZERO,
            "no window is wider than the time left"
        );
        balancer.keep_open();
        assert!(rx.borrow().is_none());
    }
}
