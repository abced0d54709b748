//! Prometheus `/metrics` on a loopback port of its own (`--metrics`).
//!
//! The numbers are the same per-route, per-color counters the admin API
//! reports and `verify` reads, rendered at scrape time by a collector, so
//! there is one source of truth and nothing extra on the request path.
//! Counters restart when a color's set is replaced by a new release, which
//! Prometheus' `rate()` treats as a counter reset. A route's preview has
//! series of its own, labeled `preview="true"` (and the color it serves).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::router::{RouteView, Router};
use super::stats::StatsView;
use crate::error::{Error, Result};

/// Serves `GET /metrics` on `addr`, which must be a loopback address, until
/// `stop`. Binding is retried for a while: during `cyan proxy upgrade` the
/// predecessor holds the port until it starts draining.
pub fn serve(addr: SocketAddr, router: Arc<Router>, mut stop: watch::Receiver<bool>) -> Result<()> {
    if !addr.ip().is_loopback() {
        return Err(Error::Config(format!(
            "--metrics {addr}: metrics name every app on this host; listen on loopback (127.0.0.1) and scrape through a local agent"
        )));
    }
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Routes(router)));
    let registry = Arc::new(registry);
    tokio::spawn(async move {
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) if tries < 60 => {
                    tries += 1;
                    tracing::debug!(%addr, error = %e, "metrics port busy; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
                Err(e) => {
                    tracing::error!(%addr, error = %e, "cannot listen for metrics");
                    return;
                }
            }
        };
        tracing::info!(%addr, "metrics");
        loop {
            let stream = tokio::select! {
                r = listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(_) => continue,
                },
                _ = stop.changed() => return,
            };
            let registry = registry.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let registry = registry.clone();
                    async move { Ok::<_, Infallible>(scrape(req.uri().path(), &registry)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(())
}

fn scrape(path: &str, registry: &Registry) -> Response<Full<Bytes>> {
    if path != "/metrics" {
        let mut r = Response::new(Full::new(Bytes::from_static(b"see /metrics\n")));
        *r.status_mut() = StatusCode::NOT_FOUND;
        return r;
    }
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, registry) {
        tracing::warn!(error = %e, "cannot encode metrics");
    }
    Response::builder()
        .header(
            hyper::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
        .body(Full::new(Bytes::from(text)))
        .expect("valid response")
}

/// Renders every route's counters at scrape time.
struct Routes(Arc<Router>);

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Routes")
    }
}

type Labels = Vec<(&'static str, String)>;

/// How a gauge reads its value off a color's counters.
type GaugeOf = fn(&StatsView) -> i64;

impl Collector for Routes {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::result::Result<(), std::fmt::Error> {
        let views = self.0.views();
        // A preview's series carry `preview="true"` besides the color it
        // serves: its requests are not the color's live traffic.
        fn per_color(v: &RouteView) -> Vec<(Labels, &StatsView)> {
            let preview = v.preview_stats.as_ref().zip(v.state.previewed());
            let preview = preview.map(|(s, color)| {
                let labels = vec![
                    ("app", v.name.clone()),
                    ("color", color.to_string()),
                    ("preview", "true".to_string()),
                ];
                (labels, s)
            });
            v.stats
                .iter()
                .map(|(color, s)| {
                    let labels = vec![("app", v.name.clone()), ("color", color.to_string())];
                    (labels, s)
                })
                .chain(preview)
                .collect()
        }
        let mut m = enc.encode_descriptor(
            "cyan_proxy_requests",
            "Requests answered, by app, color and status class",
            None,
            MetricType::Counter,
        )?;
        for v in &views {
            for (labels, s) in per_color(v) {
                for (class, n) in [
                    ("2xx", s.status_2xx),
                    ("3xx", s.status_3xx),
                    ("4xx", s.status_4xx),
                    ("5xx", s.status_5xx),
                ] {
                    let mut l = labels.clone();
                    l.push(("class", class.into()));
                    ConstCounter::new(n).encode(m.encode_family(&l)?)?;
                }
            }
        }
        let mut m = enc.encode_descriptor(
            "cyan_proxy_upstream_failures",
            "Requests that got no upstream response (502/504), by app and color",
            None,
            MetricType::Counter,
        )?;
        for v in &views {
            for (labels, s) in per_color(v) {
                ConstCounter::new(s.upstream_failures).encode(m.encode_family(&labels)?)?;
            }
        }
        let mut m = enc.encode_descriptor(
            "cyan_proxy_request_duration_seconds",
            "Time to the upstream's response head, by app and color",
            None,
            MetricType::Histogram,
        )?;
        for v in &views {
            for (labels, s) in per_color(v) {
                // The encoder wants per-bucket counts; ours are cumulative.
                let mut below = 0;
                let mut buckets: Vec<(f64, u64)> = s
                    .latency_buckets
                    .iter()
                    .map(|(le, n)| {
                        let in_bucket = n - below;
                        below = *n;
                        (le / 1000.0, in_bucket)
                    })
                    .collect();
                buckets.push((f64::INFINITY, s.requests.saturating_sub(below)));
                m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                    s.latency_sum_ms / 1000.0,
                    s.requests,
                    &buckets,
                    None,
                )?;
            }
        }
        let gauges: [(&str, &str, GaugeOf); 2] = [
            (
                "cyan_proxy_inflight",
                "Requests and WebSockets in flight, by app and color",
                |s| s.inflight as i64,
            ),
            (
                "cyan_proxy_ejected_upstreams",
                "Upstreams out of rotation by passive health, by app and color",
                |s| s.ejected.len() as i64,
            ),
        ];
        for (name, help, value) in gauges {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for v in &views {
                for (labels, s) in per_color(v) {
                    ConstGauge::new(value(s)).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        let mut m = enc.encode_descriptor(
            "cyan_proxy_live",
            "1 for the color that receives the app's traffic",
            None,
            MetricType::Gauge,
        )?;
        for v in &views {
            let live_lane = |(l, _): &(Labels, &StatsView)| l.iter().all(|(k, _)| *k != "preview");
            for (labels, _) in per_color(v).into_iter().filter(live_lane) {
                let live = v.state.live.map(|c| c.to_string()) == Some(labels[1].1.clone());
                ConstGauge::new(i64::from(live)).encode(m.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
