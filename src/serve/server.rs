//! The HTTP side of `cyan serve`: a forge's webhook in, an answer out in
//! well under the 5 s or 10 s forges wait (GitHub's, GitLab's timeouts),
//! the deploy handed to the [`Queue`].
//!
//! Every request is hostile until its signature checks: headers must
//! arrive within [`Limits::header_read`], the body within
//! [`Limits::body_read`] and under [`Limits::body_max`] (a larger one is
//! a 413, not read on), each source address gets a token bucket of
//! requests, and the body is never logged. Answers:
//!
//! | status | when |
//! |---|---|
//! | 202 `queued` | a push that deploys (or removes a preview) |
//! | 200 `ignored` | a ping, another event, a ref no rule takes, a redelivery already deployed |
//! | 400 | not a forge's delivery, or one that cannot be read |
//! | 401 | a missing or wrong signature (GitHub's, Gitea's, … token) |
//! | 403 | a forge not in `serve.forges` |
//! | 405, 408, 413, 429 | not a POST, too slow, too big, too many |
//!
//! An ignored delivery is a 200, not a 4xx: GitLab disables a hook after
//! repeated failures, and a push to an untracked branch is no failure.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use secrecy::ExposeSecret as _;
use tokio::net::TcpListener;

use super::deliveries::{DeployRecord, Entry, Log, Verdict};
use super::forge::{self, Delivery, Event};
use super::queue::{Action, Job, Queue};
use super::rules::{Decision, ServeConfig};

/// The server's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest body read, in bytes (forges send at most a few hundred
    /// KiB; GitHub caps payloads at 25 MiB, which no push we act on needs).
    pub body_max: usize,
    /// How long the request line and headers may take to arrive.
    pub header_read: Duration,
    /// How long the body may take to arrive, once the headers are in.
    pub body_read: Duration,
    /// Requests a source address may send at once...
    pub burst: u32,
    /// ...and per second after that.
    pub per_second: f64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            body_max: 1 << 20,
            header_read: Duration::from_secs(10),
            body_read: Duration::from_secs(10),
            burst: 20,
            per_second: 1.0,
        }
    }
}

/// What the handler needs.
pub struct Server {
    pub config: ServeConfig,
    pub log: Arc<Log>,
    pub queue: Arc<Queue>,
    pub limits: Limits,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// An answer: its status and JSON body.
type Answer = (StatusCode, serde_json::Value);

impl Server {
    pub fn new(config: ServeConfig, log: Arc<Log>, queue: Arc<Queue>, limits: Limits) -> Server {
        Server {
            config,
            log,
            queue,
            limits,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Accepts connections on `listener` until `stop` resolves, then lets
    /// the connections finish their request for up to 10 s.
    pub async fn serve(
        self: Arc<Server>,
        listener: TcpListener,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read)
            .max_buf_size(64 * 1024);
        tokio::pin!(stop);
        loop {
            let (stream, peer) = tokio::select! {
                () = &mut stop => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors, say: wait rather than spin.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let server = Arc::clone(&self);
            let service = hyper::service::service_fn(move |req| {
                let server = Arc::clone(&server);
                async move { Ok::<_, Infallible>(server.handle(peer, req).await) }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, "connection ended: {e}");
                }
            });
        }
        if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("connections still open 10 s after the stop: closing them");
        }
    }

    /// One request. Only refusals spend the sender's tokens, so a flood of
    /// bad requests from an address (or from everyone behind one proxy)
    /// never turns away a delivery whose signature checks; past its
    /// tokens, an address's refusals are answered 429 and not logged.
    async fn handle(&self, peer: SocketAddr, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let response = self.answer(peer, req).await;
        if !response.status().is_client_error()
            || response.status() == StatusCode::TOO_MANY_REQUESTS
        {
            return response;
        }
        match self.take_token(peer.ip()) {
            Ok(()) => response,
            Err(wait) => {
                let mut r = closing(answer((
                    StatusCode::TOO_MANY_REQUESTS,
                    serde_json::json!({"error": "too many refused requests from this address"}),
                )));
                r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(wait));
                r
            }
        }
    }

    async fn answer(&self, peer: SocketAddr, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::POST {
            let mut r = answer((
                StatusCode::METHOD_NOT_ALLOWED,
                serde_json::json!({"error": "webhook deliveries are POSTs"}),
            ));
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("POST"));
            return r;
        }
        let too_big = || {
            closing(answer((
                StatusCode::PAYLOAD_TOO_LARGE,
                serde_json::json!({"error": format!("the body is over {} bytes", self.limits.body_max)}),
            )))
        };
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.limits.body_max as u64) {
            return too_big();
        }
        let (parts, body) = req.into_parts();
        let read = tokio::time::timeout(
            self.limits.body_read,
            Limited::new(body, self.limits.body_max).collect(),
        )
        .await;
        let body = match read {
            Err(_) => {
                return closing(answer((
                    StatusCode::REQUEST_TIMEOUT,
                    serde_json::json!({"error": "the body did not arrive in time"}),
                )))
            }
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return too_big(),
            Ok(Err(e)) => {
                tracing::debug!(%peer, "body read failed: {e}");
                return closing(answer((
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": "the body could not be read"}),
                )));
            }
            Ok(Ok(b)) => b.to_bytes(),
        };
        answer(self.delivery(peer, &parts.headers, &body).await)
    }

    /// Whether `ip` has a token left (none is taken).
    fn has_token(&self, ip: IpAddr) -> bool {
        let buckets = self.buckets.lock().expect("bucket lock");
        buckets.get(&ip).is_none_or(|b| {
            let refill = Instant::now().duration_since(b.at).as_secs_f64() * self.limits.per_second;
            b.tokens + refill >= 1.0
        })
    }

    /// Takes one refusal's token from `ip`'s bucket, or says how many
    /// seconds until there is one.
    fn take_token(&self, ip: IpAddr) -> Result<(), u64> {
        let now = Instant::now();
        let (burst, rate) = (f64::from(self.limits.burst), self.limits.per_second);
        let mut buckets = self.buckets.lock().expect("bucket lock");
        if buckets.len() > 10_000 {
            // Forget the addresses whose buckets are full again.
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let b = buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
        }
    }

    /// Identifies, verifies, reads and decides one delivery; logs it and
    /// queues its deploys.
    async fn delivery(&self, peer: SocketAddr, headers: &hyper::HeaderMap, body: &[u8]) -> Answer {
        let received_at = crate::clock::now_rfc3339();
        let mut entry = Entry {
            id: String::new(),
            forge: None,
            repo: None,
            git_ref: None,
            commit: None,
            received_at,
            verdict: Verdict::Refused,
            reason: None,
            deploy: None,
        };
        let refuse = |mut entry: Entry, status: StatusCode, reason: String| {
            // Past the sender's tokens a refusal is answered 429 and left
            // out of the log (`handle`), so a flood cannot fill it.
            if self.has_token(peer.ip()) {
                tracing::warn!(%peer, delivery = %entry.id, forge = entry.forge.as_deref().unwrap_or("-"), "refused ({status}): {reason}");
                entry.reason = Some(reason.clone());
                self.log.append(&entry);
            }
            (
                status,
                serde_json::json!({"verdict": "refused", "reason": reason}),
            )
        };
        let Some(forge) = forge::identify(headers) else {
            return refuse(
                entry,
                StatusCode::BAD_REQUEST,
                "not a forge delivery".into(),
            );
        };
        entry.forge = Some(forge.to_string());
        if !self.config.accepts(forge) {
            return refuse(
                entry,
                StatusCode::FORBIDDEN,
                format!("deliveries from {forge} are not taken here (serve.forges)"),
            );
        }
        let parsed = forge::parse(forge, headers, body);
        if let Ok(d) = &parsed {
            // The id is the forge module's, at most 128 safe characters;
            // the repository is written only once the signature checks.
            entry.id = d.id.clone();
        }
        // The secret: the matching rule's, read from the unverified
        // delivery; serve.secret for one that cannot be read.
        let secret_ref = match &parsed {
            Ok(d) => match self.config.secret_for(d) {
                Ok(s) => s,
                Err(e) => return refuse(entry, StatusCode::BAD_REQUEST, e),
            },
            Err(_) => &self.config.secret,
        };
        let secret = match secret_ref.read() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot read the webhook secret: {e}");
                entry.reason = Some(format!("cannot read the webhook secret: {e}"));
                self.log.append(&entry);
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    serde_json::json!({"error": "the server cannot read its webhook secret"}),
                );
            }
        };
        if let Err(r) = forge::verify(forge, headers, body, secret.expose_secret().as_bytes()) {
            return refuse(entry, StatusCode::UNAUTHORIZED, r.to_string());
        }
        let delivery = match parsed {
            Ok(d) => d,
            Err(e) => return refuse(entry, StatusCode::BAD_REQUEST, e.reason),
        };
        entry.repo = delivery.repo.as_ref().map(|r| r.full_name.clone());
        self.decided(delivery, entry).await
    }

    async fn decided(&self, d: Delivery, entry: Entry) -> Answer {
        let decisions = self.config.decide(&d);
        let refs: Vec<&forge::Push> = match &d.event {
            Event::Push(p) if p.len() == decisions.len() => p.iter().collect(),
            _ => Vec::new(),
        };
        let mut queued = Vec::new();
        let mut ignored = Vec::new();
        for (i, decision) in decisions.into_iter().enumerate() {
            let mut entry = entry.clone();
            if let Some(p) = refs.get(i) {
                entry.git_ref = Some(p.git_ref.clone());
                entry.commit = (!p.after.is_empty()).then(|| p.after.clone());
            }
            let (job, reason) = match decision {
                Decision::Ignore { reason } => (None, reason),
                Decision::Deploy {
                    environment,
                    version,
                    commit,
                    then,
                    preview,
                } => {
                    let action = Action::Deploy {
                        git_ref: entry.git_ref.clone().unwrap_or_default(),
                        commit,
                        version,
                        then,
                    };
                    (
                        Some(Job {
                            entry: entry.clone(),
                            environment,
                            preview,
                            action,
                        }),
                        String::new(),
                    )
                }
                Decision::RemovePreview { preview } => {
                    let environment = preview.base.clone();
                    (
                        Some(Job {
                            entry: entry.clone(),
                            environment,
                            preview: Some(preview),
                            action: Action::Remove,
                        }),
                        String::new(),
                    )
                }
            };
            let Some(mut job) = job else {
                tracing::info!(delivery = %entry.id, "ignored: {reason}");
                entry.verdict = Verdict::Ignored;
                entry.reason = Some(reason.clone());
                self.log.append(&entry);
                ignored.push(reason);
                continue;
            };
            let target = job.target();
            let version = match &job.action {
                Action::Deploy { version, .. } => version.clone(),
                Action::Remove => String::new(),
            };
            let redelivered = self
                .log
                .deployed(&entry.id, &target)
                .then(|| format!("delivery {} already deployed {target}, not again", entry.id));
            let replayed = || {
                match (&job.action, &entry.commit) {
                (Action::Deploy { .. }, Some(c)) if self.log.deployed_commit(c, &target) => {
                    Some(format!("commit {c} was deployed to {target} already; a push does not deploy it twice (to go back to it: cyan rollback --to {version})"))
                }
                (Action::Deploy { .. }, Some(c)) => self.log.newer_deployed(c, &target).map(|newer| {
                    format!("commit {c} was pushed before {newer}, which is deployed to {target}; an old push sent again does not go back (cyan rollback does)")
                }),
                _ => None,
            }
            };
            if let Some(reason) = redelivered.or_else(replayed) {
                entry.verdict = Verdict::Ignored;
                entry.reason = Some(reason.clone());
                self.log.append(&entry);
                ignored.push(reason);
                continue;
            }
            job.entry.verdict = Verdict::Queued;
            job.entry.deploy = Some(DeployRecord {
                environment: target.clone(),
                version: version.clone(),
                exit_code: None,
                report: None,
                error: None,
            });
            tracing::info!(delivery = %entry.id, %target, %version, "queued");
            queued.push(serde_json::json!({
                "environment": target,
                "version": version,
                "action": match job.action { Action::Deploy { .. } => "deploy", Action::Remove => "remove" },
            }));
            self.queue.submit(job).await;
        }
        if queued.is_empty() {
            (
                StatusCode::OK,
                serde_json::json!({"verdict": "ignored", "delivery": d.id, "reason": ignored.join("; ")}),
            )
        } else {
            (
                StatusCode::ACCEPTED,
                serde_json::json!({"verdict": "queued", "delivery": d.id, "deploys": queued, "ignored": ignored}),
            )
        }
    }
}

fn answer((status, body): Answer) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// The answer, and the connection closed after it: the rest of the body
/// is not read.
fn closing(mut r: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    r.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    r
}
