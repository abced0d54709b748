//! What a notice says, for people: the wording of every event in one place,
//! so Slack, Discord, Teams, the webhook's `text` and e-mail read the same.
//!
//! A message is a title (an e-mail's subject, a card's heading), a sentence
//! that says what happened and what to do next (commands in backticks), a
//! few facts, links, and the log tail of a failure.

use std::time::{Duration, UNIX_EPOCH};

use super::{EventKind, Notice};

/// How a message should look: colors in Discord and Teams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tone {
    Info,
    Good,
    Warning,
    Bad,
}

/// One notice, worded.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Message {
    /// One short line: `web (production): 2.3.0 is live`.
    pub title: String,
    /// What happened and what to do next, one or two sentences.
    pub text: String,
    /// Label and value, in display order; only the known ones.
    pub facts: Vec<(&'static str, String)>,
    /// Label and URL: the live app, the preview.
    pub links: Vec<(&'static str, String)>,
    pub log_tail: Option<String>,
    pub tone: Tone,
    /// The notice's time, RFC 3339 with milliseconds.
    pub time: String,
}

/// Words `notice`: e.g. for `Switched`, "web (production): 2.3.0 is live on
/// green, previous 2.2.0; roll back with `cyan rollback -c cyan.yaml`."
pub(super) fn compose(notice: &Notice) -> Message {
    let n = notice;
    let who = format!("{} ({})", n.app, n.environment);
    let v = &n.version;
    let on_color = n
        .color
        .as_deref()
        .map(|c| format!(" on {c}"))
        .unwrap_or_default();
    let reason = n
        .reason
        .as_deref()
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    let then = |part: Option<String>| part.map(|p| format!("; {p}")).unwrap_or_default();
    let (title, text, tone) = match n.event {
        EventKind::Started => (
            format!("{who}: deploying {v}"),
            format!(
                "{who}: deploying {v}{on_color}{}.",
                then(
                    n.previous_version
                        .as_ref()
                        .map(|p| format!("{p} stays live until the switch"))
                )
            ),
            Tone::Info,
        ),
        EventKind::AwaitingApproval => (
            format!("{who}: {v} waits for approval"),
            format!(
                "{who}: {v} is up{on_color} and waits for approval{}{}.",
                then(n.preview_url.as_ref().map(|u| format!("preview at {u}"))),
                then(
                    n.promote_command
                        .as_ref()
                        .map(|c| format!("promote with `{c}`"))
                )
            ),
            Tone::Warning,
        ),
        EventKind::Switched => (
            format!("{who}: {v} is live"),
            format!(
                "{who}: {v} is live{on_color}{}{}.",
                n.previous_version
                    .as_ref()
                    .map(|p| format!(", previous {p}"))
                    .unwrap_or_default(),
                then(
                    n.rollback_command
                        .as_ref()
                        .map(|c| format!("roll back with `{c}`"))
                )
            ),
            Tone::Good,
        ),
        EventKind::Verified => (
            format!("{who}: {v} verified"),
            format!(
                "{who}: {v} passed verification{on_color} and stays live{}.",
                then(
                    n.rollback_command
                        .as_ref()
                        .map(|c| format!("roll back with `{c}`"))
                )
            ),
            Tone::Good,
        ),
        EventKind::VerifyFailed => (
            format!("{who}: {v} failed verification"),
            format!(
                "{who}: {v} failed verification{reason}; switched back{}.",
                n.previous_version
                    .as_ref()
                    .map(|p| format!(" to {p}"))
                    .unwrap_or_default()
            ),
            Tone::Bad,
        ),
        EventKind::Failed => (
            format!("{who}: deploy of {v} failed"),
            format!(
                "{who}: deploy of {v} failed{reason}{}.",
                then(
                    n.previous_version
                        .as_ref()
                        .map(|p| format!("{p} stays live"))
                )
            ),
            Tone::Bad,
        ),
        EventKind::RolledBack => (
            format!("{who}: rolled back to {v}"),
            format!(
                "{who}: rolled back to {v}{on_color}{}{reason}.",
                n.previous_version
                    .as_ref()
                    .map(|p| format!(" from {p}"))
                    .unwrap_or_default()
            ),
            Tone::Warning,
        ),
        EventKind::Promoted => {
            let from = n
                .from_environment
                .as_ref()
                .map(|f| format!(" from {f}"))
                .unwrap_or_default();
            (
                format!("{who}: {v} promoted{from}"),
                format!("{who}: {v} promoted{from} to {}.", n.environment),
                Tone::Good,
            )
        }
    };
    let facts = [
        ("Version", Some(v.clone())),
        ("Previous", n.previous_version.clone()),
        ("Color", n.color.clone()),
        ("Digest", n.digest.clone()),
        ("From", n.from_environment.clone()),
    ]
    .into_iter()
    .filter_map(|(label, value)| value.map(|value| (label, value)))
    .collect();
    let links = [("Live", n.url.clone()), ("Preview", n.preview_url.clone())]
        .into_iter()
        .filter_map(|(label, url)| url.map(|url| (label, url)))
        .collect();
    Message {
        title,
        text,
        facts,
        links,
        log_tail: n.log_tail.clone().filter(|t| !t.trim().is_empty()),
        tone,
        time: rfc3339(n.at_ms),
    }
}

/// `ms` since the Unix epoch as RFC 3339 in UTC, with milliseconds.
pub(super) fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// The end of `text` in at most `max` characters: a cut one starts with
/// `…` and, where it can, at a line's start.
pub(super) fn tail(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_string();
    }
    let start = text
        .char_indices()
        .nth(count - (max - 1))
        .map_or(0, |(i, _)| i);
    let kept = &text[start..];
    let kept = kept
        .split_once('\n')
        .filter(|(_, rest)| !rest.is_empty())
        .map_or(kept, |(_, rest)| rest);
    format!("…{kept}")
}

/// The start of `text` in at most `max` characters (`…` ends a cut one).
pub(super) fn head(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max - 1).collect();
    cut.push('…');
    cut
}
