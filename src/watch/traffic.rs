//! Live traffic per color: rates over the last interval, from two reads
//! of the proxy's counters (`GET /v1/routes`).
//!
//! The proxy keeps cumulative counters per color (`StatsView`); a person
//! watching a deploy wants what happens *now*: requests and 5xx per
//! second, and the latency quantiles of the requests answered since the
//! last read, not since the container set started. The dashboard and
//! `cyan watch -c` read the proxy once per interval and turn each pair of
//! reads into [`Rates`] here.

use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;

use crate::proxy::router::RouteView;
use crate::proxy::stats::{StatsView, LATENCY_BUCKETS_MS};
use crate::release::Color;

/// One color's traffic over one interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rates {
    pub route: String,
    pub color: Color,
    /// Whether the color was live at the end of the interval.
    pub live: bool,
    /// Requests answered in the interval, and per second.
    pub requests: u64,
    pub requests_per_s: f64,
    /// Of those, answers with a 5xx status (the app's own, and the
    /// proxy's 502/504 for it); and per second.
    pub status_5xx: u64,
    pub errors_per_s: f64,
    /// The median and 99th percentile of the interval's requests, in ms:
    /// the upper bound of the proxy's histogram bucket holding them
    /// (0.5 ms … 10 s); `None` with no request.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Requests being answered at the end of the interval.
    pub inflight: u64,
}

/// Turns successive reads of the proxy's routes into per-interval rates.
#[derive(Default)]
pub struct Sampler {
    last: HashMap<(String, Color), StatsView>,
    /// When each route was last read.
    read: HashMap<String, Instant>,
}

impl Sampler {
    /// The rates of every route and color in `views` since the previous
    /// call, read at `at`. A route seen for the first time gives nothing
    /// (there is no interval yet, and its counters hold what came before);
    /// a color new to a route seen before counts from zero (its set was
    /// just made, so its counters started with it), as do counters that
    /// went down (the set was replaced).
    pub fn sample(&mut self, views: &[RouteView], at: Instant) -> Vec<Rates> {
        let zero = StatsView::default();
        let mut out = Vec::new();
        let mut last = HashMap::with_capacity(self.last.len());
        let mut read = HashMap::with_capacity(views.len());
        for v in views {
            if let Some(then) = self.read.get(&v.name) {
                let secs = at.duration_since(*then).as_secs_f64().max(1e-3);
                for (color, now) in &v.stats {
                    let before = self.last.get(&(v.name.clone(), *color)).unwrap_or(&zero);
                    let live = v.state.live == Some(*color);
                    out.push(rates(&v.name, *color, live, before, now, secs));
                }
            }
            for (color, now) in &v.stats {
                last.insert((v.name.clone(), *color), now.clone());
            }
            read.insert(v.name.clone(), at);
        }
        self.last = last;
        self.read = read;
        out
    }
}

fn rates(
    route: &str,
    color: Color,
    live: bool,
    before: &StatsView,
    now: &StatsView,
    secs: f64,
) -> Rates {
    // Counters started again: the interval holds all of `now`.
    let restarted = now.requests < before.requests;
    let zero = StatsView::default();
    let before = if restarted { &zero } else { before };
    let requests = now.requests - before.requests;
    let status_5xx = now.status_5xx.saturating_sub(before.status_5xx);
    let buckets = delta_buckets(&before.latency_buckets, &now.latency_buckets);
    Rates {
        route: route.to_string(),
        color,
        live,
        requests,
        requests_per_s: requests as f64 / secs,
        status_5xx,
        errors_per_s: status_5xx as f64 / secs,
        p50_ms: quantile(&buckets, requests, 0.5),
        p99_ms: quantile(&buckets, requests, 0.99),
        inflight: now.inflight,
    }
}

/// Per bucket bound, how many of the interval's requests took at most it
/// (cumulative, as the proxy reports them).
fn delta_buckets(before: &[(f64, u64)], now: &[(f64, u64)]) -> Vec<(f64, u64)> {
    now.iter()
        .map(|&(le, n)| {
            let was = before.iter().find(|(b, _)| *b == le).map_or(0, |(_, c)| *c);
            (le, n.saturating_sub(was))
        })
        .collect()
}

/// The bound of the bucket holding the `q` quantile of `total` requests;
/// a request past the last bound reads as the last bound (as the proxy's
/// own quantiles, and Prometheus' `histogram_quantile`).
fn quantile(cumulative: &[(f64, u64)], total: u64, q: f64) -> Option<f64> {
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let highest = LATENCY_BUCKETS_MS[LATENCY_BUCKETS_MS.len() - 1];
    Some(
        cumulative
            .iter()
            .find(|(_, n)| *n >= rank)
            .map_or(highest, |(le, _)| *le),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::proxy::stats::ColorStats;

    fn view(name: &str, live: Color, stats: &[(Color, StatsView)]) -> RouteView {
        RouteView {
            name: name.into(),
            state: crate::proxy::state::RouteState {
                live: Some(live),
                ..Default::default()
            },
            stats: stats.iter().cloned().collect(),
            preview_stats: None,
        }
    }

    #[test]
    fn rates_are_of_the_interval_not_of_the_set_s_life() {
        let counters = ColorStats::default();
        // Before the interval: 1,000 slow requests.
        for _ in 0..1000 {
            counters.record(200, Duration::from_millis(400));
        }
        let t0 = Instant::now();
        let mut s = Sampler::default();
        let first = s.sample(
            &[view(
                "web",
                Color::Blue,
                &[(Color::Blue, counters.snapshot(0, vec![]))],
            )],
            t0,
        );
        assert!(first.is_empty(), "no interval yet: {first:?}");
        // In it: 98 fast answers and 2 failures, over 2 s.
        for _ in 0..98 {
            counters.record(200, Duration::from_micros(300));
        }
        counters.record(502, Duration::from_millis(3));
        counters.record(503, Duration::from_millis(3));
        let r = s.sample(
            &[view(
                "web",
                Color::Blue,
                &[(Color::Blue, counters.snapshot(7, vec![]))],
            )],
            t0 + Duration::from_secs(2),
        );
        assert_eq!(r.len(), 1);
        let r = &r[0];
        assert_eq!((r.requests, r.status_5xx, r.inflight), (100, 2, 7));
        assert!((r.requests_per_s - 50.0).abs() < 1e-9);
        assert!((r.errors_per_s - 1.0).abs() < 1e-9);
        assert_eq!(
            r.p50_ms,
            Some(0.5),
            "the slow requests before are not in it"
        );
        assert_eq!(r.p99_ms, Some(5.0), "the 99th of 100 is a 3 ms failure");
        assert!(r.live);
    }

    #[test]
    fn a_replaced_set_counts_from_zero_and_an_idle_color_has_no_quantiles() {
        let old = ColorStats::default();
        for _ in 0..50 {
            old.record(200, Duration::from_millis(1));
        }
        let t0 = Instant::now();
        let mut s = Sampler::default();
        let idle = ColorStats::default().snapshot(0, vec![]);
        s.sample(
            &[view(
                "web",
                Color::Blue,
                &[
                    (Color::Blue, old.snapshot(0, vec![])),
                    (Color::Green, idle.clone()),
                ],
            )],
            t0,
        );
        let new = ColorStats::default();
        for _ in 0..4 {
            new.record(200, Duration::from_millis(20));
        }
        let r = s.sample(
            &[view(
                "web",
                Color::Green,
                &[(Color::Blue, new.snapshot(0, vec![])), (Color::Green, idle)],
            )],
            t0 + Duration::from_secs(1),
        );
        let blue = r.iter().find(|r| r.color == Color::Blue).unwrap();
        assert_eq!(
            (blue.requests, blue.p50_ms, blue.live),
            (4, Some(25.0), false)
        );
        let green = r.iter().find(|r| r.color == Color::Green).unwrap();
        assert_eq!(
            (green.requests, green.p50_ms, green.p99_ms, green.live),
            (0, None, None, true)
        );
    }

    /// A deploy replaces the standby color's set: for a read or more the
    /// color is gone, then back with fresh counters. Its first interval
    /// back is counted, not skipped.
    #[test]
    fn a_color_back_with_a_new_set_counts_its_first_interval() {
        let t0 = Instant::now();
        let mut s = Sampler::default();
        let blue = ColorStats::default();
        s.sample(
            &[view(
                "web",
                Color::Blue,
                &[(Color::Blue, blue.snapshot(0, vec![]))],
            )],
            t0,
        );
        let green = ColorStats::default();
        for _ in 0..30 {
            green.record(200, Duration::from_millis(1));
        }
        let r = s.sample(
            &[view(
                "web",
                Color::Green,
                &[
                    (Color::Blue, blue.snapshot(0, vec![])),
                    (Color::Green, green.snapshot(2, vec![])),
                ],
            )],
            t0 + Duration::from_millis(500),
        );
        let g = r
            .iter()
            .find(|r| r.color == Color::Green)
            .expect("green's first interval");
        assert_eq!((g.requests, g.inflight, g.live), (30, 2, true));
        assert!((g.requests_per_s - 60.0).abs() < 1e-9);
        // A route seen for the first time says nothing of its past.
        let other = ColorStats::default();
        other.record(200, Duration::from_millis(1));
        let r = s.sample(
            &[view(
                "api",
                Color::Blue,
                &[(Color::Blue, other.snapshot(0, vec![]))],
            )],
            t0 + Duration::from_secs(1),
        );
        assert!(r.is_empty(), "{r:?}");
    }

    #[test]
    fn a_request_past_the_last_bound_reads_as_the_last_bound() {
        let c = ColorStats::default();
        let t0 = Instant::now();
        let mut s = Sampler::default();
        s.sample(
            &[view(
                "web",
                Color::Blue,
                &[(Color::Blue, c.snapshot(0, vec![]))],
            )],
            t0,
        );
        c.record(504, Duration::from_secs(30));
        let r = s.sample(
            &[view(
                "web",
                Color::Blue,
                &[(Color::Blue, c.snapshot(0, vec![]))],
            )],
            t0 + Duration::from_secs(1),
        );
        assert_eq!(r[0].p99_ms, Some(10_000.0));
    }
}
