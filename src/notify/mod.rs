//! Notifications about deploys: to chat (Slack, Discord, Microsoft Teams),
//! to a signed JSON webhook, and by e-mail.
//!
//! A deploy's result must never depend on a chat service, so delivery is
//! fire-and-record: [`Notifier::send`] starts one task per destination and
//! returns at once; each task makes a few attempts, each under a timeout,
//! with backoff between them (a 429's or 503's `Retry-After` honoured,
//! capped); [`Notifier::finish`] waits a bounded time and hands back one
//! [`Outcome`] per delivery, for the caller to record in history.
//!
//! Webhook URLs are credentials (whoever has a Slack URL can post to the
//! channel), and so are the signing secret and the SMTP password: each is a
//! [`SecretRef`](crate::config::SecretRef), read when a delivery starts, and
//! no URL, path or secret appears in a log line, an error or an outcome. A
//! destination is named by its kind and host: `slack (hooks.slack.com)`.
//!
//! Files: `destination` (the `notify:` entries of cyan.yaml), `message` (the
//! wording of each event, in one place), `slack`, `discord`, `teams` and
//! `webhook` (one payload format each; `webhook` also signs), `http` (the
//! HTTPS client and one POST), `email` (one SMTP submission), `trust` (the
//! roots TLS is verified against), `delivery` (attempts, backoff, outcome).

mod delivery;
mod destination;
mod discord;
mod email;
mod http;
mod message;
mod slack;
mod teams;
pub(crate) mod trust;
mod webhook;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

pub use destination::{Chat, Destination, Email, Kind, SmtpServer, SmtpTls, Webhook};

/// What happened to a deploy; each destination may pick some with `events:`.
/// Written in snake_case in cyan.yaml and in JSON (`awaiting_approval`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A deploy began: the candidate is being started.
    Started,
    /// The candidate is up and healthy and waits for `cyan promote`.
    AwaitingApproval,
    /// Traffic moved to the candidate: it is live.
    Switched,
    /// The live release passed its verify window.
    Verified,
    /// The live release failed verification and cyan switched back.
    VerifyFailed,
    /// The deploy failed before going live; the live release kept serving.
    Failed,
    /// An operator rolled back to the previous release.
    RolledBack,
    /// A release was promoted from one stage (environment) to the next.
    Promoted,
}

impl EventKind {
    /// Its name as written in cyan.yaml and JSON: `awaiting_approval`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::AwaitingApproval => "awaiting_approval",
            EventKind::Switched => "switched",
            EventKind::Verified => "verified",
            EventKind::VerifyFailed => "verify_failed",
            EventKind::Failed => "failed",
            EventKind::RolledBack => "rolled_back",
            EventKind::Promoted => "promoted",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event of one deploy, with what the caller knows of it. Fields an
/// event does not use are ignored; `None` ones are left out of messages.
/// The wording built from it is `message`'s (module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub event: EventKind,
    pub app: String,
    pub environment: String,
    /// The release the event is about: the candidate; for `RolledBack`, the
    /// release rolled back to (now live).
    pub version: String,
    /// The image digest of `version` (`sha256:…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The color `version` runs on (`blue`, `green`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    /// The other release of the story: the one live before the deploy (for
    /// `VerifyFailed` the one switched back to); for `RolledBack` the one
    /// rolled back from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<String>,
    /// The app's live URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Where the candidate can be seen before approval (`AwaitingApproval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_url: Option<String>,
    /// The exact command that promotes the candidate (`AwaitingApproval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote_command: Option<String>,
    /// The exact command that rolls back (`Switched`, `Verified`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_command: Option<String>,
    /// Why it failed (`Failed`, `VerifyFailed`) or was rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The candidate's last log lines (`Failed`, `VerifyFailed`); long tails
    /// are cut to their end for chat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<String>,
    /// The stage the release came from (`Promoted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_environment: Option<String>,
    /// When it happened, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// What became of one delivery, for the deploy's history. It never holds a
/// URL, a path of one, or a secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The destination's kind and host: `slack (hooks.slack.com)`,
    /// `webhook (http://127.0.0.1:8080)` (the scheme is shown when it is not
    /// https), `email (smtp.example.com:587)`; the kind alone when the URL
    /// could not be read.
    pub destination: String,
    pub event: EventKind,
    pub delivered: bool,
    /// Attempts made: 0 when none could be (a secret unreadable, a URL
    /// refused).
    pub attempts: u32,
    /// The last answer or error: `200`, `250` (SMTP), `400: invalid_payload`
    /// (not retried), `gave up after 4 attempts: 503`,
    /// `gave up after 2 attempts: timed out after 10s`,
    /// `secret: the variable X is not set in cyan's environment`,
    /// `still running after 5s (attempt 2, last: 503); abandoned`.
    pub detail: String,
    /// When the outcome was known, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// How hard one delivery tries. The default: 4 attempts of at most 10 s
/// each, 1 s then 2 s then 4 s apart (with jitter), a `Retry-After` honoured
/// up to 30 s: about a minute at worst, which `finish`'s bound caps anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The bound on one attempt: connect, TLS, request and response (or the
    /// whole SMTP dialogue).
    pub attempt_timeout: Duration,
    /// Attempts in all, at least 1.
    pub attempts: u32,
    /// The wait after the first failed attempt; it doubles after each.
    pub first_delay: Duration,
    /// The longest wait between attempts, a `Retry-After` included.
    pub max_delay: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            attempt_timeout: Duration::from_secs(10),
            attempts: 4,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// Sends notices to the configured destinations, in the background.
///
/// Shared by reference (`&self` everywhere); `send` and `finish` need a
/// tokio runtime, as `tokio::spawn` does.
pub struct Notifier {
    destinations: Vec<Arc<Destination>>,
    policy: Policy,
    pending: Mutex<Vec<Pending>>,
}

/// A delivery started and not yet collected by `finish`.
struct Pending {
    progress: Arc<delivery::Progress>,
    task: JoinHandle<Outcome>,
}

impl Notifier {
    /// A notifier with the default [`Policy`]. Reads no secret: each is
    /// read when a delivery starts, so a rotated one is picked up.
    pub fn new(destinations: &[Destination]) -> Notifier {
        Notifier::with_policy(destinations, Policy::default())
    }

    /// A notifier whose deliveries try as `policy` says.
    pub fn with_policy(destinations: &[Destination], policy: Policy) -> Notifier {
        Notifier {
            destinations: destinations.iter().cloned().map(Arc::new).collect(),
            policy: Policy {
                attempts: policy.attempts.max(1),
                ..policy
            },
            pending: Mutex::new(Vec::new()),
        }
    }

    /// Starts delivering `notice` to every destination that wants its event
    /// (`events:`, default all), each in its own task; returns at once.
    pub fn send(&self, notice: Notice) {
        let notice = Arc::new(notice);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for destination in &self.destinations {
            if !destination.wants(notice.event) {
                continue;
            }
            let progress = Arc::new(delivery::Progress::new(destination.name(), notice.event));
            let task = tokio::spawn(delivery::deliver(
                Arc::clone(destination),
                Arc::clone(&notice),
                self.policy,
                Arc::clone(&progress),
            ));
            pending.push(Pending { progress, task });
        }
    }

    /// Waits for every delivery started so far, at most `bound` in all, and
    /// returns their outcomes in the order they were started. A delivery
    /// still running at the bound is stopped and reported as
    /// `delivered: false` (`still running after …; abandoned`). Each
    /// delivery is returned once: a second call returns only later ones.
    pub async fn finish(&self, bound: Duration) -> Vec<Outcome> {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let deadline = tokio::time::Instant::now() + bound;
        let mut outcomes = Vec::with_capacity(pending.len());
        for Pending { progress, mut task } in pending {
            let outcome = match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(e)) => progress.ended(false, format!("the delivery task ended: {e}")),
                Err(_) => {
                    task.abort();
                    progress.abandoned(bound)
                }
            };
            outcomes.push(outcome);
        }
        outcomes
    }
}
