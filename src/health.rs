//! Health gates (before the switch) and verification (after it).
//!
//! A gate probes every candidate replica directly, not through the proxy, so
//! a replica is judged on its own. When it fails, the error says which
//! replica, what the last probe saw, and what the container last logged:
//! "target failed to become healthy" with no why is the complaint we fix.
//! When the image has a `HEALTHCHECK`, Docker's verdict counts too: an app
//! whose own check fails is not switched to because `/healthz` answers 200,
//! and the failure shows the check's exit codes and output.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Request;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use crate::config::{HealthConfig, VerifyConfig};
use crate::output::{fmt_duration, Output};
use crate::proxy::pool::StatsView;

/// One replica to gate.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub addr: SocketAddr,
}

/// What the gate asks the platform about a replica besides HTTP.
pub trait Replicas {
    /// `Some(why)` when the replica has stopped or restarted: it cannot pass.
    fn stopped(&self, name: &str) -> impl Future<Output = Option<String>>;
    /// The replica's last log lines.
    fn log_tail(&self, name: &str) -> impl Future<Output = String>;
    /// What Docker's own health check (the image's `HEALTHCHECK`) says of
    /// the replica now.
    fn docker_health(&self, name: &str) -> impl Future<Output = DockerHealth>;
    /// Why the replica's app cannot be reached though it listens (on
    /// loopback inside its container, or on another port), if that is so.
    fn misbound(&self, name: &str) -> impl Future<Output = Option<String>>;
}

/// Docker's verdict on a container from the image's `HEALTHCHECK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    /// The image defines no `HEALTHCHECK`.
    None,
    /// Checks run, but not yet enough have passed (or failed).
    Starting,
    Healthy,
    /// The check failed `--retries` times in a row.
    Unhealthy,
    /// The engine could not be asked (the container is gone, or the engine
    /// did not answer).
    Unknown,
}

impl std::fmt::Display for HealthState {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            HealthState::None => "none",
            HealthState::Starting => "starting",
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
            HealthState::Unknown => "unknown",
        })
    }
}

/// One run of a `HEALTHCHECK` command, as Docker keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRun {
    /// 0 passed, 1 failed, anything else: the command could not run.
    pub exit_code: i64,
    pub output: String,
}

impl std::fmt::Display for CheckRun {
    /// `exit 1: <output>`, the output trimmed and on one line.
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let output: Vec<&str> = self.output.lines().map(str::trim).collect();
        let output = output.join(" / ");
        let output = output.trim();
        if output.is_empty() {
            write!(f, "exit {}, no output", self.exit_code)
        } else {
            write!(f, "exit {}: {}", self.exit_code, snippet(output.as_bytes()))
        }
    }
}

/// A container's Docker health and the last check runs Docker keeps
/// (up to five, oldest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerHealth {
    pub state: HealthState,
    pub log: Vec<CheckRun>,
}

impl DockerHealth {
    pub fn new(state: HealthState) -> DockerHealth {
        DockerHealth {
            state,
            log: Vec::new(),
        }
    }

    /// The kept check runs, one per line, each indented by two spaces.
    pub fn checks(&self) -> String {
        if self.log.is_empty() {
            return "  (no check has run yet)".into();
        }
        self.log
            .iter()
            .map(|r| format!("  {r}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Why a replica failed its gate.
#[derive(Debug, Clone)]
pub struct GateFailure {
    pub replica: String,
    pub reason: String,
    pub logs: String,
    /// Replicas that passed.
    pub healthy: usize,
}

/// Runs the gate over all replicas at once; all must pass.
pub async fn gate(
    cfg: &HealthConfig,
    host: Option<&str>,
    targets: &[Target],
    replicas: &impl Replicas,
    out: &Output,
) -> Result<(), GateFailure> {
    let client = probe_client();
    let started = Instant::now();
    let runs = targets
        .iter()
        .map(|t| gate_one(cfg, host, t, replicas, &client, started, out));
    let results = futures_util::future::join_all(runs).await;
    let healthy = results.iter().filter(|r| r.is_ok()).count();
    match results.into_iter().find_map(Result::err) {
        None => Ok(()),
        Some(mut f) => {
            f.logs = replicas.log_tail(&f.replica).await;
            f.healthy = healthy;
            Err(f)
        }
    }
}

async fn gate_one(
    cfg: &HealthConfig,
    host: Option<&str>,
    t: &Target,
    replicas: &impl Replicas,
    client: &ProbeClient,
    started: Instant,
    out: &Output,
) -> Result<(), GateFailure> {
    let threshold = cfg.healthy_threshold.get();
    let bar = out.gate_bar(&t.name, threshold);
    let (mut passes, mut fails, mut answered) = (0u32, 0u32, false);
    let mut last = "not probed yet".to_string();
    // Docker's health is watched until the engine says the image has none.
    let mut watch_docker = cfg.docker;
    let fail = |reason: String| GateFailure {
        replica: t.name.clone(),
        reason,
        logs: String::new(),
        healthy: 0,
    };
    let result = loop {
        if let Some(why) = replicas.stopped(&t.name).await {
            break Err(fail(format!("{why}; last probe: {last}")));
        }
        let probe = probe(client, cfg, host, t.addr).await;
        match &probe {
            Ok(()) => {
                passes += 1;
                fails = 0;
                answered = true;
            }
            Err(ProbeError::Answered(_)) => {
                passes = 0;
                fails += 1;
                answered = true;
            }
            Err(ProbeError::NoAnswer(_)) => {
                passes = 0;
                fails += u32::from(answered);
            }
        }
        // No answer may be an app still starting, or one that listens where
        // nothing reaches it: that one fails now, with the cause named,
        // instead of at the deadline.
        if let (Err(ProbeError::NoAnswer(s)), Some(why)) =
            (&probe, replicas.misbound(&t.name).await)
        {
            break Err(fail(format!("GET {} -> {s}: {why}", cfg.http.path)));
        }
        last = match probe {
            Ok(()) => format!("GET {} -> ok", cfg.http.path),
            Err(ProbeError::Answered(s) | ProbeError::NoAnswer(s)) => {
                format!("GET {} -> {s}", cfg.http.path)
            }
        };
        let docker = if watch_docker {
            replicas.docker_health(&t.name).await
        } else {
            DockerHealth::new(HealthState::None)
        };
        let docker_passed = match docker.state {
            HealthState::None => {
                watch_docker = false;
                true
            }
            HealthState::Healthy => {
                last.push_str("; Docker health: healthy");
                true
            }
            HealthState::Unhealthy => {
                break Err(fail(format!(
                    "Docker reports the container unhealthy: the image's HEALTHCHECK fails ({last}). \
                     Fix the check or what it tests, or set health.docker: false to gate on HTTP alone. \
                     Docker's last health checks, oldest first:\n{}",
                    docker.checks()
                )));
            }
            HealthState::Starting | HealthState::Unknown => {
                last.push_str(&format!("; waiting for Docker's health ({})", docker.state));
                false
            }
        };
        bar.update(out, passes.min(threshold), &last);
        if passes >= threshold && docker_passed {
            break Ok(());
        }
        if let Some(limit) = cfg.unhealthy_threshold {
            if fails >= limit.get() {
                break Err(fail(format!("{last} ({fails} failures in a row)")));
            }
        }
        if started.elapsed() >= cfg.deadline.0 {
            let checks = match (docker_passed, docker.log.is_empty()) {
                (true, _) => String::new(),
                (false, true) => "; Docker has run no health check yet: it runs the first one \
                    a HEALTHCHECK --interval after the container starts. Shorten the interval, \
                    raise health.deadline, or set health.docker: false"
                    .into(),
                (false, false) => format!(
                    "; Docker's last health checks, oldest first:\n{}",
                    docker.checks()
                ),
            };
            break Err(fail(format!(
                "{last} after {} (deadline {}){checks}",
                fmt_duration(started.elapsed()),
                cfg.deadline
            )));
        }
        tokio::time::sleep(cfg.interval.0).await;
    };
    bar.finish(out);
    result
}

enum ProbeError {
    /// The app answered, but not as expected.
    Answered(String),
    /// No HTTP answer at all (refused, reset, timeout).
    NoAnswer(String),
}

async fn probe(
    client: &ProbeClient,
    cfg: &HealthConfig,
    host: Option<&str>,
    addr: SocketAddr,
) -> Result<(), ProbeError> {
    let url = format!("http://{addr}{}", cfg.http.path);
    let (status, body) = http_get(
        client,
        &url,
        cfg.http.host.as_deref().or(host),
        cfg.timeout.0,
    )
    .await
    .map_err(ProbeError::NoAnswer)?;
    if !cfg.http.expect.contains(status) {
        return Err(ProbeError::Answered(format!(
            "{status} (expected {}): {}",
            cfg.http.expect,
            snippet(&body)
        )));
    }
    if let Some(needle) = &cfg.http.body {
        if !String::from_utf8_lossy(&body).contains(needle.as_str()) {
            return Err(ProbeError::Answered(format!(
                "{status} but the body lacks {needle:?}"
            )));
        }
    }
    Ok(())
}

/// The start of a body, for an error message.
pub fn snippet(body: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(body).chars().take(120).collect();
    text.trim().to_string()
}

/// An HTTP/1.1 client for probes (gates, verification, queries).
pub type ProbeClient = Client<HttpConnector, Empty<Bytes>>;

pub fn probe_client() -> ProbeClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// One GET: the status and up to 64 KiB of body, or why nothing answered
/// (refused, reset, timeout).
pub async fn http_get(
    client: &ProbeClient,
    url: &str,
    host: Option<&str>,
    timeout: Duration,
) -> Result<(u16, Bytes), String> {
    let mut req = Request::get(url);
    if let Some(h) = host {
        req = req.header(hyper::header::HOST, h);
    }
    let req = req
        .body(Empty::new())
        .map_err(|e| format!("bad URL {url:?}: {e}"))?;
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| describe_error(&e))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), 64 * 1024)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("timeout after {}", humantime::format_duration(timeout)))?
}

fn describe_error(e: &hyper_util::client::legacy::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(cause) = src {
        s = format!("{s}: {cause}");
        src = cause.source();
    }
    s
}

/// Judges the live color's counters against the verify thresholds.
/// `Some(why)` means roll back.
pub fn verify_breach(stats: &StatsView, cfg: &VerifyConfig) -> Option<String> {
    if stats.requests > 0 && stats.status_5xx == stats.requests {
        // Whatever the threshold and however few: nothing worked.
        return Some(format!(
            "every one of the {} requests answered 5xx",
            stats.requests
        ));
    }
    if stats.requests < cfg.min_requests.max(1) {
        return None;
    }
    let ratio = stats.status_5xx as f64 / stats.requests as f64;
    (ratio > cfg.max_5xx_ratio.0).then(|| {
        format!(
            "5xx ratio {:.1}% ({} of {} requests) exceeds {:.1}%",
            ratio * 100.0,
            stats.status_5xx,
            stats.requests,
            cfg.max_5xx_ratio.0 * 100.0
        )
    })
}

/// How often verification reads the counters.
pub const VERIFY_POLL: Duration = Duration::from_millis(250);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Dur, Ratio};

    #[test]
    fn a_health_check_run_reads_on_one_line() {
        let run = CheckRun {
            exit_code: 1,
            output: "database down\n  retrying\n".into(),
        };
        assert_eq!(run.to_string(), "exit 1: database down / retrying");
        let silent = CheckRun {
            exit_code: 137,
            output: " \n".into(),
        };
        assert_eq!(silent.to_string(), "exit 137, no output");
        let health = DockerHealth {
            state: HealthState::Unhealthy,
            log: vec![silent, run],
        };
        assert_eq!(
            health.checks(),
            "  exit 137, no output\n  exit 1: database down / retrying"
        );
    }

    #[test]
    fn verify_needs_enough_requests_and_a_real_breach() {
        let cfg = VerifyConfig {
            duration: Dur::from_secs(10),
            max_5xx_ratio: Ratio(0.05),
            min_requests: 20,
            on_inconclusive: Default::default(),
            deadline: None,
        };
        let stats = |requests, status_5xx| StatsView {
            requests,
            status_5xx,
            ..StatsView::default()
        };
        assert_eq!(
            verify_breach(&stats(10, 9), &cfg),
            None,
            "too few requests to judge"
        );
        let why = verify_breach(&stats(10, 10), &cfg).unwrap();
        assert!(
            why.contains("every one of the 10"),
            "all failed is a failure: {why}"
        );
        assert_eq!(
            verify_breach(&stats(100, 5), &cfg),
            None,
            "5% is not above 5%"
        );
        let why = verify_breach(&stats(100, 6), &cfg).unwrap();
        assert!(why.contains("6 of 100"), "{why}");
    }
}
