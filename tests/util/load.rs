//! A bounded load generator over loopback: keep-alive clients and clients
//! that open a fresh connection per request, each request timed and kept.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

#[derive(Debug, Clone)]
pub struct Sample {
    pub start: Instant,
    pub end: Instant,
    /// Ok(body) for a 200, Err(what went wrong) otherwise.
    pub outcome: Result<String, String>,
}

pub struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<Vec<Sample>>>,
}

/// Hard bounds: no load runs longer than this or sends more than this.
const MAX_TIME: Duration = Duration::from_secs(180);
const MAX_REQUESTS_PER_WORKER: usize = 200_000;

impl Load {
    pub fn start(port: u16, host: &str, keepalive: usize, fresh: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for i in 0..keepalive + fresh {
            let client = client(i < keepalive);
            let (stop, host) = (stop.clone(), host.to_string());
            workers.push(tokio::spawn(async move {
                let began = Instant::now();
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed)
                    && began.elapsed() < MAX_TIME
                    && samples.len() < MAX_REQUESTS_PER_WORKER
                {
                    samples.push(get(&client, port, &host).await);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                samples
            }));
        }
        Load { stop, workers }
    }

    pub async fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for w in self.workers {
            all.extend(w.await.unwrap());
        }
        all.sort_by_key(|s| s.start);
        all
    }
}

/// hyper's pooling client, as the load's workers use it: `keepalive`
/// keeps (one or more) connections open between requests, otherwise each
/// request opens a fresh one.
pub fn client(keepalive: bool) -> Client<HttpConnector, Empty<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let mut builder = Client::builder(TokioExecutor::new());
    if !keepalive {
        builder.pool_max_idle_per_host(0);
    }
    builder.build(connector)
}

/// One `GET /` to `127.0.0.1:port` with Host `host` (10 s at most), timed.
pub async fn get(client: &Client<HttpConnector, Empty<Bytes>>, port: u16, host: &str) -> Sample {
    let req = hyper::Request::get(format!("http://127.0.0.1:{port}/"))
        .header("host", host)
        .body(Empty::new())
        .unwrap();
    let start = Instant::now();
    let outcome = match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
        Err(_) => Err("timeout".to_string()),
        Ok(Err(e)) => Err(format!("request error: {e:?}")),
        Ok(Ok(resp)) => {
            let status = resp.status();
            match resp.into_body().collect().await {
                Ok(b) if status == 200 => {
                    Ok(String::from_utf8_lossy(&b.to_bytes()).trim().to_string())
                }
                Ok(b) => Err(format!(
                    "{status}: {}",
                    String::from_utf8_lossy(&b.to_bytes())
                )),
                Err(e) => Err(format!("body error: {e}")),
            }
        }
    };
    Sample {
        start,
        end: Instant::now(),
        outcome,
    }
}

/// Requests that did not get a 200, with what they got.
pub fn failures(samples: &[Sample]) -> Vec<String> {
    samples
        .iter()
        .filter_map(|s| s.outcome.clone().err())
        .collect()
}

/// Panics unless every request got a 200, naming the first failures.
pub fn assert_none_failed(samples: &[Sample], during: &str) {
    let failed = failures(samples);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed {during}: {:?}",
        failed.len(),
        samples.len(),
        &failed[..failed.len().min(5)]
    );
}

/// The runtime a `Load` runs on: two workers, as many as the test
/// machine's cores.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
