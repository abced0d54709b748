//! The deploy record: the little state a deploy needs that the running
//! containers cannot show by themselves.
//!
//! Which color passed its gate, whether a verify window is open, and the
//! release history. It lives on the platform (the proxy's state file on
//! Docker; the CR status on Kubernetes), never in a cyan process, so a killed
//! cyan can be run again and pick up where it stopped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::release::{Color, Release, ReleaseKey};

/// At most this many history entries are kept.
pub const HISTORY_LIMIT: usize = 50;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeployRecord {
    /// Colors whose current container set passed the health gate, and for which release.
    #[serde(default)]
    pub gated: BTreeMap<Color, ReleaseKey>,
    /// Open while a just-switched release is being verified.
    #[serde(default)]
    pub verify: Option<VerifyWindow>,
    /// Newest last.
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
    /// Unix milliseconds of the last switch (for a delayed retire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switched_at_ms: Option<u64>,
    /// A release that was stopped and must not be started again on its own
    /// (Kubernetes: a failed gate deadline, abort or verify; the operator
    /// would otherwise retry it forever).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted: Option<ReleaseKey>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyWindow {
    pub color: Color,
    pub release: ReleaseKey,
    /// Unix milliseconds at which verification ends.
    pub until_ms: u64,
    /// Set once an inconclusive window was extended (`on_inconclusive:
    /// wait`): past it, still too few requests fail the release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Event {
    /// The release became live by a deploy or promote.
    Promoted,
    /// The release became live again by a rollback.
    RolledBack,
    /// The release failed verification and traffic went back.
    VerifyFailed,
    /// Too few requests to judge, and `on_inconclusive: pass` kept it live.
    VerifyInconclusive,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub event: Event,
    pub color: Color,
    pub release: Release,
    /// RFC 3339 time of the event.
    pub at: String,
}

impl DeployRecord {
    pub fn push_history(&mut self, entry: HistoryEntry) {
        self.history.push(entry);
        let excess = self.history.len().saturating_sub(HISTORY_LIMIT);
        self.history.drain(..excess);
    }

    /// The releases that were live, newest first, without repeats.
    pub fn live_releases(&self) -> Vec<&Release> {
        let mut seen: Vec<&Release> = Vec::new();
        for e in self.history.iter().rev() {
            if e.event != Event::VerifyFailed && !seen.iter().any(|r| r.key() == e.release.key()) {
                seen.push(&e.release);
            }
        }
        seen
    }

    /// Whether `key` was ever live (so a set holding it is a previous release,
    /// not a candidate).
    pub fn was_live(&self, key: &ReleaseKey) -> bool {
        self.live_releases().iter().any(|r| &r.key() == key)
    }
}
