//! What the page shows live, read once for every viewer and pushed to
//! each as Server-Sent Events (the WHATWG HTML standard, §9.2).
//!
//! One task reads the proxy's routes every second and turns them into
//! per-color rates (`watch::traffic`) and deploy steps (`watch::events`);
//! the overview (what `cyan status` and `cyan history` say of each app) is
//! made by the command that runs the dashboard and handed in through a
//! channel. Each is rendered once as an SSE frame and sent to every open
//! page, so a hundred viewers cost the proxy and the engine what one does.
//! A new page first gets the overview, the last five minutes of traffic
//! and the recent steps.
//!
//! Frames: `event: overview` (the overview JSON), `event: traffic`
//! (`{at_ms, rates: [Rates]}`), `event: history` (the kept traffic and
//! steps, on connect), `event: step` (`{at_ms, route, change}`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::proxy::client::AdminClient;
use crate::proxy::router::RouteView;
use crate::watch::events::{self, Change};
use crate::watch::traffic::{Rates, Sampler};

/// How much traffic is kept for a new page's charts: 5 minutes of 1 s
/// points.
pub const KEPT_POINTS: usize = 300;
/// Steps kept for a new page.
const KEPT_STEPS: usize = 200;

/// The rates of one read of the proxy.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// Unix ms of the read.
    pub at_ms: u64,
    pub rates: Vec<Rates>,
}

/// A deploy step seen on a route.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub at_ms: u64,
    pub route: String,
    pub change: Change,
    /// `change.describe()`, for the page.
    pub text: String,
}

#[derive(Default)]
struct Kept {
    points: VecDeque<Point>,
    steps: VecDeque<Step>,
}

/// The live side of the dashboard.
pub struct Feed {
    kept: Mutex<Kept>,
    frames: broadcast::Sender<Bytes>,
    overview: watch::Receiver<Arc<serde_json::Value>>,
}

impl Feed {
    pub fn new(overview: watch::Receiver<Arc<serde_json::Value>>) -> Arc<Feed> {
        let (frames, _) = broadcast::channel(64);
        Arc::new(Feed {
            kept: Mutex::new(Kept::default()),
            frames,
            overview,
        })
    }

    /// Reads the proxy every `every` and sends what changed, and sends the
    /// overview each time it changes. Runs until the process ends.
    pub async fn run(self: Arc<Feed>, admin: AdminClient, every: Duration) {
        let mut sampler = Sampler::default();
        // `None` until the first read: what is there then is no news.
        let mut last: Option<HashMap<String, RouteView>> = None;
        let mut overview = self.overview.clone();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                changed = overview.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let v = Arc::clone(&overview.borrow_and_update());
                    self.send(frame("overview", &*v));
                    continue;
                }
            }
            let read =
                tokio::time::timeout(every.max(Duration::from_secs(1)), admin.routes()).await;
            // A proxy that does not answer is said by the overview
            // (`proxy_error`); the charts wait for the next read.
            let Ok(Ok(views)) = read else {
                continue;
            };
            let views: Vec<RouteView> = views.into_iter().map(events::as_read).collect();
            let at_ms = crate::clock::now_ms();
            let rates = sampler.sample(&views, Instant::now());
            let mut steps = Vec::new();
            if let Some(last) = &last {
                let gone = last.keys().filter(|n| !views.iter().any(|v| &v.name == *n));
                let pairs = views
                    .iter()
                    .map(|v| (v.name.clone(), last.get(&v.name), Some(v)))
                    .chain(gone.map(|n| (n.clone(), last.get(n), None)));
                for (route, before, now) in pairs {
                    for change in events::changes(before, now) {
                        steps.push(Step {
                            at_ms,
                            route: route.clone(),
                            text: change.describe(),
                            change,
                        });
                    }
                }
            }
            last = Some(views.into_iter().map(|v| (v.name.clone(), v)).collect());
            let point = Point { at_ms, rates };
            {
                let mut kept = self.kept.lock().expect("feed");
                kept.points.push_back(point.clone());
                while kept.points.len() > KEPT_POINTS {
                    kept.points.pop_front();
                }
                kept.steps.extend(steps.iter().cloned());
                while kept.steps.len() > KEPT_STEPS {
                    kept.steps.pop_front();
                }
            }
            self.send(frame("traffic", &point));
            for s in &steps {
                self.send(frame("step", s));
            }
        }
    }

    fn send(&self, frame: Bytes) {
        // No page open is no error.
        let _ = self.frames.send(frame);
    }

    /// A new page's first frames and the stream of the rest. The
    /// receiver lags (skipping frames) if the page reads too slowly.
    pub fn subscribe(&self) -> (Vec<Bytes>, broadcast::Receiver<Bytes>) {
        let rx = self.frames.subscribe();
        let kept = self.kept.lock().expect("feed");
        let first = vec![
            frame("overview", &**self.overview.borrow()),
            frame(
                "history",
                &serde_json::json!({
                    "points": kept.points,
                    "steps": kept.steps,
                }),
            ),
        ];
        (first, rx)
    }

    /// The overview as JSON, for `GET /api/overview`.
    pub fn overview(&self) -> Arc<serde_json::Value> {
        Arc::clone(&self.overview.borrow())
    }
}

/// One SSE frame: `event: NAME`, the JSON on one `data:` line (JSON has
/// no raw newline), and the blank line that ends it.
pub fn frame(name: &str, value: &impl Serialize) -> Bytes {
    let json = serde_json::to_string(value).expect("feed values serialize");
    Bytes::from(format!("event: {name}\ndata: {json}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_one_event_on_one_data_line() {
        let f = frame("step", &serde_json::json!({"text": "line one\nline two"}));
        assert_eq!(
            std::str::from_utf8(&f).unwrap(),
            "event: step\ndata: {\"text\":\"line one\\nline two\"}\n\n"
        );
    }
}
