//! Upstreams and the pool of one color: picking (round-robin or least
//! connections, skipping ejected upstreams), in-flight counting, passive
//! health, the closing deadline of its tunnels, and per-color counters.
//!
//! A request *claims* an upstream before it is proxied and releases the claim
//! when its response body (or its tunnel) ends. So every request is counted on
//! exactly one color, and "the old color has drained" is a sum of claims.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use super::drain::{Closing, Slots};
use super::state::{Balance, RequestPolicy};
use super::upstream::Conns;
use super::workers::PerThread;
use crate::release::Color;

pub struct Upstream {
    pub addr: SocketAddr,
    pub conns: Conns,
    inflight: PerThread<AtomicU64>,
    /// Connect failures and timeouts in a row.
    failures: AtomicU32,
    /// Ejected until this many ms after the pool's epoch (0: not ejected).
    ejected_until_ms: AtomicU64,
}

/// The live (or standby) set of one color of one route.
pub struct Pool {
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
    /// Shared with the pool that follows this one when its upstreams move
    /// (`moved`): a restarted replica does not reset the color's counters.
    pub stats: Arc<ColorStats>,
}

impl Pool {
    pub fn new(color: Color, addrs: &[SocketAddr]) -> Arc<Pool> {
        Self::with_stats(color, addrs, Arc::default())
    }

    /// The same color at new addresses (a replica restarted on another
    /// port, or was replaced), keeping its counters.
    pub fn moved(&self, addrs: &[SocketAddr]) -> Arc<Pool> {
        Self::with_stats(self.color, addrs, self.stats.clone())
    }

    fn with_stats(color: Color, addrs: &[SocketAddr], stats: Arc<ColorStats>) -> Arc<Pool> {
        Arc::new(Pool {
            color,
            upstreams: addrs
                .iter()
                .map(|&addr| Upstream {
                    addr,
                    conns: Conns::new(addr),
                    inflight: PerThread::default(),
                    failures: AtomicU32::new(0),
                    ejected_until_ms: AtomicU64::new(0),
                })
                .collect(),
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

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Claims an upstream by the route's balance, skipping ejected ones
    /// (unless all are ejected: then some traffic is better than none).
    /// `None` if the pool is empty.
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
        let mut healthy = |&i: &usize| match self.upstreams[i].ejected_until_ms.load(Relaxed) {
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
        self.upstreams[idx]
            .inflight
            .get(shard)
            .fetch_add(1, Relaxed);
        Some(Claim {
            pool: self.clone(),
            idx,
            shard,
        })
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
            u.ejected_until_ms.store(until, Relaxed);
        }
    }

    /// Upstreams currently ejected by passive health.
    pub fn ejected(&self) -> Vec<SocketAddr> {
        let now = self.now_ms();
        self.upstreams
            .iter()
            .filter(|u| u.ejected_until_ms.load(Relaxed) > now)
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

    /// Requests on this pool that have not finished.
    pub fn inflight(&self) -> u64 {
        self.upstreams.iter().map(Upstream::inflight).sum()
    }
}

impl Upstream {
    fn inflight(&self) -> u64 {
        self.inflight.iter().map(|n| n.load(Relaxed)).sum()
    }
}

/// A request's hold on one upstream; released on drop.
pub struct Claim {
    pool: Arc<Pool>,
    idx: usize,
    /// The in-flight shard it counts in (released there too, on any thread).
    shard: usize,
}

impl Claim {
    pub fn addr(&self) -> SocketAddr {
        self.pool.upstreams[self.idx].addr
    }
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// The claimed upstream's connections.
    pub fn conns(&self) -> &Conns {
        &self.pool.upstreams[self.idx].conns
    }

    /// The upstream answered: its failure streak ends. (Read first: a
    /// store on every request would pull the line from the other cores.)
    pub fn answered(&self) {
        let failures = &self.pool.upstreams[self.idx].failures;
        if failures.load(Relaxed) != 0 {
            failures.store(0, Relaxed);
        }
    }

    /// The upstream refused the connection or timed out. At the policy's
    /// streak length it is ejected for the cool-off period.
    pub fn failed(&self, policy: &RequestPolicy) {
        let u = &self.pool.upstreams[self.idx];
        let streak = u.failures.fetch_add(1, Relaxed) + 1;
        if streak >= policy.eject_after {
            u.failures.store(0, Relaxed);
            u.ejected_until_ms
                .store(self.pool.now_ms() + policy.eject_for_ms.max(1), Relaxed);
            tracing::warn!(upstream = %u.addr, streak, cooloff_ms = policy.eject_for_ms, "upstream ejected");
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.pool.upstreams[self.idx]
            .inflight
            .get(self.shard)
            .fetch_sub(1, Relaxed);
    }
}

/// Upper bounds (ms) of the latency histogram's buckets; a last, open
/// bucket counts the rest.
pub const LATENCY_BUCKETS_MS: [f64; 14] = [
    0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// Counters of one color since its set was last replaced, per serving
/// thread.
#[derive(Default)]
pub struct ColorStats {
    shards: PerThread<Shard>,
}

#[derive(Default)]
struct Shard {
    requests: AtomicU64,
    status: [AtomicU64; 5],
    failed: AtomicU64,
    latency_us_total: AtomicU64,
    /// Per bucket, not cumulative; one more than the bounds for the rest.
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
}

impl ColorStats {
    fn shard(&self) -> &Shard {
        self.shards.local().1
    }

    fn sum(&self, f: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards.iter().map(|s| f(s).load(Relaxed)).sum()
    }

    pub fn record(&self, status: u16, latency: Duration) {
        let shard = self.shard();
        shard.requests.fetch_add(1, Relaxed);
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        shard.status[class].fetch_add(1, Relaxed);
        let us = latency.as_micros() as u64;
        shard.latency_us_total.fetch_add(us, Relaxed);
        let ms = us as f64 / 1000.0;
        let bucket = LATENCY_BUCKETS_MS
            .iter()
            .position(|le| ms <= *le)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        shard.latency_buckets[bucket].fetch_add(1, Relaxed);
    }

    /// The proxy could not get a response from an upstream, and answered
    /// the client `status` (502 or 504) itself.
    pub fn record_failure(&self, status: u16, latency: Duration) {
        self.record_failed_try();
        self.record(status, latency);
    }

    /// A try at an upstream failed and the request went on to another
    /// replica: a failure of the color, but no answer to count.
    pub fn record_failed_try(&self) {
        self.shard().failed.fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self, inflight: u64, ejected: Vec<SocketAddr>) -> StatsView {
        let requests = self.sum(|s| &s.requests);
        let total = self.sum(|s| &s.latency_us_total);
        let mut cumulative = 0;
        let latency_buckets: Vec<(f64, u64)> = LATENCY_BUCKETS_MS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .enumerate()
            .map(|(i, le)| {
                cumulative += self.sum(|s| &s.latency_buckets[i]);
                (le, cumulative)
            })
            .collect();
        // A quantile in the overflow bucket is reported as the highest
        // finite bound, as Prometheus' histogram_quantile does: JSON has
        // no infinity, and a `null` here broke every client's read of the
        // route after one request slower than the last bound.
        let highest = LATENCY_BUCKETS_MS[LATENCY_BUCKETS_MS.len() - 1];
        let quantile = |q: f64| {
            let rank = (q * cumulative as f64).ceil() as u64;
            latency_buckets
                .iter()
                .find(|(_, n)| *n >= rank.max(1))
                .map_or(0.0, |(le, _)| le.min(highest))
        };
        StatsView {
            requests,
            status_2xx: self.sum(|s| &s.status[1]),
            status_3xx: self.sum(|s| &s.status[2]),
            status_4xx: self.sum(|s| &s.status[3]),
            status_5xx: self.sum(|s| &s.status[4]),
            upstream_failures: self.sum(|s| &s.failed),
            mean_latency_ms: if requests == 0 {
                0.0
            } else {
                total as f64 / requests as f64 / 1000.0
            },
            p50_latency_ms: if cumulative == 0 { 0.0 } else { quantile(0.5) },
            p99_latency_ms: if cumulative == 0 { 0.0 } else { quantile(0.99) },
            latency_sum_ms: total as f64 / 1000.0,
            latency_buckets: latency_buckets
                .into_iter()
                .filter(|(le, _)| le.is_finite())
                .collect(),
            inflight,
            ejected,
        }
    }
}

/// Counters as the admin API reports them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsView {
    pub requests: u64,
    pub status_2xx: u64,
    pub status_3xx: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    pub upstream_failures: u64,
    pub mean_latency_ms: f64,
    /// Upper bound of the histogram bucket holding the median (and p99).
    #[serde(default)]
    pub p50_latency_ms: f64,
    #[serde(default)]
    pub p99_latency_ms: f64,
    #[serde(default)]
    pub latency_sum_ms: f64,
    /// Cumulative `(le_ms, count)`; requests over the last bound are in
    /// `requests` only.
    #[serde(default)]
    pub latency_buckets: Vec<(f64, u64)>,
    pub inflight: u64,
    /// Upstreams passive health has taken out of rotation for now.
    #[serde(default)]
    pub ejected: Vec<SocketAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    use crate::proxy::state::RoutePolicy;

    #[test]
    fn claims_rotate_and_release_on_drop() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let pool = Pool::new(Color::Blue, &[a, b]);
        let rr = RoutePolicy::default().per_request(PEER);
        let c1 = pool.claim(&rr).unwrap();
        let c2 = pool.claim(&rr).unwrap();
        let c3 = pool.claim(&rr).unwrap();
        assert_eq!([c1.addr(), c2.addr(), c3.addr()], [a, b, a]);
        assert_eq!(pool.inflight(), 3);
        drop((c1, c2));
        assert_eq!(pool.inflight(), 1);
        drop(c3);
        assert_eq!(pool.inflight(), 0);
        assert!(Pool::new(Color::Green, &[]).claim(&rr).is_none());
    }

    #[test]
    fn least_connections_picks_the_idlest_upstream() {
        let addrs: Vec<SocketAddr> = (1..=3)
            .map(|p| format!("127.0.0.1:{p}").parse().unwrap())
            .collect();
        let pool = Pool::new(Color::Blue, &addrs);
        let lc = RoutePolicy {
            balance: Balance::LeastConnections,
            ..RoutePolicy::default()
        }
        .per_request(PEER);
        let mut held: Vec<Claim> = (0..3).map(|_| pool.claim(&lc).unwrap()).collect();
        let mut got: Vec<_> = held.iter().map(Claim::addr).collect();
        got.sort();
        assert_eq!(got, addrs, "one claim each before any doubles up");
        let idle = held.remove(1).addr();
        for _ in 0..4 {
            let c = pool.claim(&lc).unwrap();
            assert_eq!(c.addr(), idle, "the only idle upstream");
        }
        assert_eq!(held.len(), 2);
    }

    #[test]
    fn a_failure_streak_ejects_until_cooloff_and_all_ejected_fails_open() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let pool = Pool::new(Color::Blue, &[a, b]);
        let p = RoutePolicy {
            eject_after: 2,
            eject_for_ms: 60_000,
            ..RoutePolicy::default()
        }
        .per_request(PEER);
        let fail_on = |addr| loop {
            let c = pool.claim(&p).unwrap();
            if c.addr() == addr {
                c.failed(&p);
                return;
            }
        };
        fail_on(a);
        assert!(pool.ejected().is_empty(), "one failure is not a streak");
        fail_on(a);
        assert_eq!(pool.ejected(), [a]);
        for _ in 0..6 {
            assert_eq!(pool.claim(&p).unwrap().addr(), b);
        }
        fail_on(b);
        fail_on(b);
        assert_eq!(pool.ejected().len(), 2);
        assert!(pool.claim(&p).is_some(), "all ejected: still routes");
    }

    #[tokio::test]
    async fn closing_deadline_is_set_on_leaving_live_and_cleared_on_return() {
        let pool = Pool::new(Color::Blue, &["127.0.0.1:1".parse().unwrap()]);
        let rx = pool.closing();
        assert!(rx.borrow().is_none());
        pool.close_by(Duration::from_secs(30), Duration::from_secs(5));
        let first = rx.borrow().unwrap();
        assert_eq!(first.spread, Duration::from_secs(5));
        pool.close_by(Duration::from_secs(60), Duration::ZERO);
        assert_eq!(
            rx.borrow().unwrap(),
            first,
            "a later deadline does not extend"
        );
        pool.close_by(Duration::ZERO, Duration::from_secs(5));
        let now = rx.borrow().unwrap();
        assert!(now.at < first.at, "an earlier one wins");
        assert_eq!(
            now.spread,
            Duration::ZERO,
            "no window is wider than the time left"
        );
        pool.keep_open();
        assert!(rx.borrow().is_none());
    }

    #[test]
    fn stats_count_status_classes() {
        let s = ColorStats::default();
        s.record(200, Duration::from_millis(2));
        s.record(503, Duration::from_millis(4));
        s.record_failure(504, Duration::from_millis(6));
        s.record_failed_try();
        let v = s.snapshot(0, Vec::new());
        assert_eq!(
            (v.requests, v.status_2xx, v.status_5xx, v.upstream_failures),
            (3, 1, 2, 2),
            "a failed try that went on to another replica is no answer"
        );
        assert!((v.mean_latency_ms - 4.0).abs() < 0.01);
        assert_eq!(v.p50_latency_ms, 5.0, "the bucket holding 4 ms");
        assert_eq!(v.p99_latency_ms, 10.0, "the bucket holding 6 ms");
        assert_eq!(v.latency_buckets[2], (2.5, 1), "cumulative counts");
        assert_eq!(v.latency_buckets[4], (10.0, 3));
        s.record(499, Duration::from_millis(1));
        let v = s.snapshot(0, Vec::new());
        assert_eq!(
            (v.status_4xx, v.status_5xx),
            (1, 2),
            "a client that left is a 4xx"
        );
    }

    #[test]
    fn a_request_past_the_last_bucket_still_reads_as_json() {
        let s = ColorStats::default();
        s.record_failure(504, Duration::from_secs(60));
        let v = s.snapshot(0, Vec::new());
        let highest = LATENCY_BUCKETS_MS[LATENCY_BUCKETS_MS.len() - 1];
        assert_eq!((v.p50_latency_ms, v.p99_latency_ms), (highest, highest));
        let json = serde_json::to_string(&v).unwrap();
        let back: StatsView = serde_json::from_str(&json).expect("a client can read it");
        assert_eq!(back, v);
    }
}
