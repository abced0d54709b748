//! The counters of one color: requests by status class, failures of the
//! upstream's side, and a latency histogram, per serving thread so that a
//! request writes only its own core's lines. The admin API reports them
//! (`StatsView`), `verify` judges a release by them, and `metrics` exports
//! them to Prometheus.
//!
//! A failure is booked here on the side `attempt` blames: a client's fault
//! is a 4xx, never a failure of the color.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::workers::PerThread;

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
