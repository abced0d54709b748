//! Optional active health checks (`proxy.active_check` in cyan.yaml): the
//! proxy probes every upstream of each live color and keeps one that fails
//! out of rotation until it passes again. Passive health (failure streaks on
//! real traffic) needs no configuration and is always on; this catches a
//! replica that went bad while no request happened to reach it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;

use super::router::Router;

/// Probes once a second for routes whose interval has come.
pub fn spawn(router: Arc<Router>, mut stop: watch::Receiver<bool>) {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(Duration::from_secs(1)));
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(http);
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let elapsed_ms = started.elapsed().as_millis() as u64;
            for (balancer, check, hosts) in router.actively_checked() {
                if elapsed_ms % check.interval_ms.max(1000) >= 1000 {
                    continue;
                }
                for addr in balancer.addrs() {
                    let mut req = hyper::Request::get(format!("http://{addr}{}", check.path));
                    if let Some(h) = hosts.first() {
                        req = req.header(hyper::header::HOST, h);
                    }
                    let req = req.body(Empty::new()).expect("valid probe");
                    let answer =
                        tokio::time::timeout(Duration::from_secs(2), client.request(req)).await;
                    let ok = matches!(&answer, Ok(Ok(r)) if r.status().as_u16() < 400);
                    // Out until the next probe passes (two intervals, so a
                    // late probe does not let it back early).
                    balancer.set_ejected(
                        addr,
                        if ok {
                            0
                        } else {
                            2 * check.interval_ms.max(1000)
                        },
                    );
                    if !ok {
                        tracing::warn!(%addr, path = %check.path, "active check failed");
                    }
                }
            }
        }
    });
}
