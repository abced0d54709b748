//! One delivery of one notice to one destination: get it ready (read the
//! secrets, word the notice, build the payload and the client), then
//! attempt, wait, attempt again, and say how it ended.
//!
//! Each attempt is bounded by `Policy::attempt_timeout`. Between attempts
//! the wait doubles from `first_delay` (backon's exponential backoff, with
//! jitter), or is what a 429's or 503's `Retry-After` asks; either is capped
//! at `max_delay`. A final answer (a 4xx other than 429, an SMTP 5xx, an
//! untrusted certificate) ends the delivery at once.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use ring::hmac;

use super::destination::{Destination, Kind};
use super::email::Mailer;
use super::http::{Endpoint, Poster};
use super::message::{compose, Message};
use super::{discord, slack, teams, webhook, EventKind, Notice, Outcome, Policy};
use crate::clock;
use crate::config::SecretRef;

/// What one attempt came to.
pub(super) enum Attempt {
    /// Accepted; the status (`200`, SMTP `250`).
    Delivered(String),
    /// Failed in a way another attempt may not; after `after` if the
    /// server said (`Retry-After`).
    Retry {
        detail: String,
        after: Option<Duration>,
    },
    /// Refused for good: no other attempt.
    Final(String),
}

/// What a running delivery has done so far, shared with `Notifier::finish`
/// so a delivery stopped at its bound is reported with what it knew.
pub(super) struct Progress {
    destination: Mutex<String>,
    event: EventKind,
    attempts: AtomicU32,
    last: Mutex<Option<String>>,
}

impl Progress {
    pub(super) fn new(destination: String, event: EventKind) -> Progress {
        Progress {
            destination: Mutex::new(destination),
            event,
            attempts: AtomicU32::new(0),
            last: Mutex::new(None),
        }
    }

    /// The outcome of a delivery that ended, logged.
    pub(super) fn ended(&self, delivered: bool, detail: String) -> Outcome {
        let outcome = Outcome {
            destination: lock(&self.destination).clone(),
            event: self.event,
            delivered,
            attempts: self.attempts.load(Ordering::Relaxed),
            detail,
            at_ms: clock::now_ms(),
        };
        if delivered {
            tracing::info!(destination = %outcome.destination, event = %outcome.event,
                attempts = outcome.attempts, "notification delivered");
        } else {
            tracing::warn!(destination = %outcome.destination, event = %outcome.event,
                attempts = outcome.attempts, detail = %outcome.detail, "notification not delivered");
        }
        outcome
    }

    /// The outcome of a delivery stopped because `finish`'s bound passed.
    pub(super) fn abandoned(&self, bound: Duration) -> Outcome {
        let attempt = self.attempts.load(Ordering::Relaxed);
        let last = lock(&self.last)
            .as_ref()
            .map(|l| format!(", last: {l}"))
            .unwrap_or_default();
        self.ended(
            false,
            format!(
                "still running after {} (attempt {attempt}{last}); abandoned",
                humantime::format_duration(bound)
            ),
        )
    }
}

/// A poisoned lock still holds a usable string.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Delivers `notice` to `destination` as `policy` says; never panics on
/// bad input, and returns how it went.
pub(super) async fn deliver(
    destination: Arc<Destination>,
    notice: Arc<Notice>,
    policy: Policy,
    progress: Arc<Progress>,
) -> Outcome {
    let message = compose(&notice);
    let target = match Target::new(&destination.kind, &notice, &message, &policy) {
        Ok(target) => target,
        Err(detail) => return progress.ended(false, detail),
    };
    if let Some(shown) = target.shown() {
        *lock(&progress.destination) = format!("{} ({shown})", destination.kind.key());
    }
    let mut delays = ExponentialBuilder::new()
        .with_min_delay(policy.first_delay)
        .with_max_delay(policy.max_delay)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build();
    let mut n = 0;
    loop {
        n += 1;
        progress.attempts.store(n, Ordering::Relaxed);
        let attempt = tokio::time::timeout(policy.attempt_timeout, target.attempt())
            .await
            .unwrap_or_else(|_| Attempt::Retry {
                detail: format!(
                    "timed out after {}",
                    humantime::format_duration(policy.attempt_timeout)
                ),
                after: None,
            });
        match attempt {
            Attempt::Delivered(detail) => return progress.ended(true, detail),
            Attempt::Final(detail) => return progress.ended(false, detail),
            Attempt::Retry { detail, .. } if n >= policy.attempts => {
                let attempts = if n == 1 {
                    "1 attempt".into()
                } else {
                    format!("{n} attempts")
                };
                return progress.ended(false, format!("gave up after {attempts}: {detail}"));
            }
            Attempt::Retry { detail, after } => {
                *lock(&progress.last) = Some(detail);
                let backoff = delays.next().unwrap_or(policy.max_delay);
                tokio::time::sleep(after.unwrap_or(backoff).min(policy.max_delay)).await;
            }
        }
    }
}

/// A destination made ready: payload built, secrets read, client made.
enum Target {
    /// Slack, Discord, Teams: the same body on every attempt.
    Chat {
        poster: Poster,
        body: Bytes,
    },
    /// Signed anew on every attempt (the timestamp is the attempt's).
    Webhook {
        poster: Poster,
        body: Bytes,
        key: hmac::Key,
        id: String,
    },
    Email(Box<Mailer>),
}

impl Target {
    /// Errors, as an outcome's detail: `secret: …` (unreadable, or not a
    /// usable signing key), `url: …` (refused), `ca_file …`.
    fn new(kind: &Kind, notice: &Notice, m: &Message, policy: &Policy) -> Result<Target, String> {
        let json = |value: serde_json::Value| Bytes::from(value.to_string());
        Ok(match kind {
            Kind::Slack(chat) => Target::Chat {
                poster: poster(&chat.url, None)?,
                body: json(slack::payload(m)),
            },
            Kind::Discord(chat) => Target::Chat {
                poster: poster(&chat.url, None)?,
                body: json(discord::payload(m)),
            },
            Kind::Teams(chat) => Target::Chat {
                poster: poster(&chat.url, None)?,
                body: json(teams::payload(m)),
            },
            Kind::Webhook(hook) => {
                let secret = hook.secret.read().map_err(|e| format!("secret: {e}"))?;
                Target::Webhook {
                    key: webhook::key(&secret).map_err(|e| format!("secret: {e}"))?,
                    poster: poster(&hook.url, hook.ca_file.as_deref())?,
                    body: json(webhook::payload(notice, m)),
                    id: format!("msg_{}", clock::random_token()),
                }
            }
            Kind::Email(email) => {
                Target::Email(Box::new(Mailer::new(email, m, policy.attempt_timeout)?))
            }
        })
    }

    /// The URL's host as outcomes show it (HTTP destinations).
    fn shown(&self) -> Option<&str> {
        match self {
            Target::Chat { poster, .. } | Target::Webhook { poster, .. } => Some(poster.shown()),
            Target::Email(_) => None,
        }
    }

    async fn attempt(&self) -> Attempt {
        match self {
            Target::Chat { poster, body } => poster.post(body.clone(), &[]).await,
            Target::Webhook {
                poster,
                body,
                key,
                id,
            } => {
                let timestamp = clock::now_ms() / 1000;
                let headers = [
                    ("webhook-id", id.clone()),
                    ("webhook-timestamp", timestamp.to_string()),
                    ("webhook-signature", webhook::sign(key, id, timestamp, body)),
                ];
                poster.post(body.clone(), &headers).await
            }
            Target::Email(mailer) => mailer.send().await,
        }
    }
}

/// The client for the URL in `url`.
fn poster(url: &SecretRef, ca_file: Option<&std::path::Path>) -> Result<Poster, String> {
    let url = url.read().map_err(|e| format!("secret: {e}"))?;
    let endpoint = Endpoint::parse(&url).map_err(|e| format!("url: {e}"))?;
    Poster::new(endpoint, ca_file)
}

/// An error and its causes, `: `-joined, each said once.
pub(super) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}
