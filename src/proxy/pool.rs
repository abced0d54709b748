//! Upstreams and the pool of one color: round-robin picking, in-flight
//! counting, and per-color counters.
//!
//! A request *claims* an upstream before it is proxied and releases the claim
//! when its response body ends. So every request is counted on exactly one
//! color, and "the old color has drained" is a simple sum of claims.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::release::Color;

pub struct Upstream {
    pub addr: SocketAddr,
    inflight: AtomicU64,
}

/// The live (or standby) set of one color of one route.
pub struct Pool {
    pub color: Color,
    upstreams: Vec<Upstream>,
    next: AtomicUsize,
    pub stats: ColorStats,
}

impl Pool {
    pub fn new(color: Color, addrs: &[SocketAddr]) -> Arc<Pool> {
        Arc::new(Pool {
            color,
            upstreams: addrs
                .iter()
                .map(|&addr| Upstream {
                    addr,
                    inflight: AtomicU64::new(0),
                })
                .collect(),
            next: AtomicUsize::new(0),
            stats: ColorStats::default(),
        })
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.upstreams.iter().map(|u| u.addr).collect()
    }

    /// Claims the next upstream in round-robin order; `None` if the pool is empty.
    pub fn claim(self: &Arc<Self>) -> Option<Claim> {
        if self.upstreams.is_empty() {
            return None;
        }
        let idx = self.next.fetch_add(1, Relaxed) % self.upstreams.len();
        self.upstreams[idx].inflight.fetch_add(1, Relaxed);
        Some(Claim {
            pool: self.clone(),
            idx,
        })
    }

    /// Requests on this pool that have not finished.
    pub fn inflight(&self) -> u64 {
        self.upstreams
            .iter()
            .map(|u| u.inflight.load(Relaxed))
            .sum()
    }
}

/// A request's hold on one upstream; released on drop.
pub struct Claim {
    pool: Arc<Pool>,
    idx: usize,
}

impl Claim {
    pub fn addr(&self) -> SocketAddr {
        self.pool.upstreams[self.idx].addr
    }
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.pool.upstreams[self.idx].inflight.fetch_sub(1, Relaxed);
    }
}

/// Counters of one color since its set was last replaced.
#[derive(Default)]
pub struct ColorStats {
    requests: AtomicU64,
    status: [AtomicU64; 5],
    failed: AtomicU64,
    latency_us_total: AtomicU64,
}

impl ColorStats {
    pub fn record(&self, status: u16, latency: Duration) {
        self.requests.fetch_add(1, Relaxed);
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.status[class].fetch_add(1, Relaxed);
        self.latency_us_total
            .fetch_add(latency.as_micros() as u64, Relaxed);
    }

    /// The proxy could not get a response from an upstream (counted as a 502 too).
    pub fn record_failure(&self, latency: Duration) {
        self.failed.fetch_add(1, Relaxed);
        self.record(502, latency);
    }

    pub fn snapshot(&self, inflight: u64) -> StatsView {
        let requests = self.requests.load(Relaxed);
        let total = self.latency_us_total.load(Relaxed);
        StatsView {
            requests,
            status_2xx: self.status[1].load(Relaxed),
            status_3xx: self.status[2].load(Relaxed),
            status_4xx: self.status[3].load(Relaxed),
            status_5xx: self.status[4].load(Relaxed),
            upstream_failures: self.failed.load(Relaxed),
            mean_latency_ms: if requests == 0 {
                0.0
            } else {
                total as f64 / requests as f64 / 1000.0
            },
            inflight,
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
    pub inflight: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_rotate_and_release_on_drop() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let pool = Pool::new(Color::Blue, &[a, b]);
        let c1 = pool.claim().unwrap();
        let c2 = pool.claim().unwrap();
        let c3 = pool.claim().unwrap();
        assert_eq!([c1.addr(), c2.addr(), c3.addr()], [a, b, a]);
        assert_eq!(pool.inflight(), 3);
        drop((c1, c2));
        assert_eq!(pool.inflight(), 1);
        drop(c3);
        assert_eq!(pool.inflight(), 0);
        assert!(Pool::new(Color::Green, &[]).claim().is_none());
    }

    #[test]
    fn stats_count_status_classes() {
        let s = ColorStats::default();
        s.record(200, Duration::from_millis(2));
        s.record(503, Duration::from_millis(4));
        s.record_failure(Duration::from_millis(6));
        let v = s.snapshot(0);
        assert_eq!(
            (v.requests, v.status_2xx, v.status_5xx, v.upstream_failures),
            (3, 1, 2, 1)
        );
        assert!((v.mean_latency_ms - 4.0).abs() < 0.01);
    }
}
