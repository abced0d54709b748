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
    /// The runtime config each release passed its gate with, for the
    /// releases still in `gated`, `verify` or `history` (Docker; on
    /// Kubernetes the ControllerRevisions keep whole pod templates). The
    /// planner never reads it: it is kept as the deployer wrote it (JSON of
    /// `config::Runtime`), and an entry of another shape is dropped, never
    /// the record.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "readable"
    )]
    pub runtimes: Vec<RecordedRuntime>,
    /// Each lifecycle hook's latest run per release (Docker), so a deploy
    /// killed during a hook and run again skips the hooks that passed.
    /// Entries this cyan cannot read are dropped, never the record.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "readable"
    )]
    pub hooks: Vec<HookRun>,
    /// What became of each notification (the deployer's `notify::Outcome`,
    /// as JSON the planner never reads), newest last, at most
    /// `HISTORY_LIMIT`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<serde_json::Value>,
    /// The latest promotion from another stage (`cyan promote --from`):
    /// an approval given later (`cyan promote`) checks its source again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<Promotion>,
}

/// A release shipped here from another environment's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promotion {
    /// The source environment's name and its route (`<app>-<environment>`).
    pub environment: String,
    pub route: String,
    /// The release live and verified there when it was asked for.
    pub source: ReleaseKey,
    /// The release it became here (the same version, this stage's config).
    pub target: ReleaseKey,
}

/// At most this many hook runs are kept (the newest).
pub const HOOK_RUNS_LIMIT: usize = 32;

/// One lifecycle hook's latest run for one release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRun {
    /// The hook's key in cyan.yaml (`post_gate`, …).
    pub hook: String,
    pub release: ReleaseKey,
    pub outcome: HookOutcome,
    /// RFC 3339 time the outcome was written.
    pub at: String,
    /// The run's mark (a host hook's processes carry it in their
    /// environment), so a re-run can find what an interrupted run left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookOutcome {
    /// Started and not finished: the cyan running it was killed (or runs
    /// it now). It runs again.
    Started,
    Passed,
    Failed,
}

/// The runtime config of one release, as the deployer recorded it (a JSON
/// object; the deployer's `config::Runtime`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRuntime {
    pub release: ReleaseKey,
    pub runtime: serde_json::Value,
}

/// A list of which only the entries this cyan can read are kept: not even
/// a list (another cyan's shape) is an empty one, never a record that
/// cannot be read.
fn readable<'de, D: serde::Deserializer<'de>, T: serde::de::DeserializeOwned>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    let serde_json::Value::Array(values) = serde_json::Value::deserialize(d)? else {
        return Ok(Vec::new());
    };
    Ok(values
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect())
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
    /// What the verify window saw (`verify-failed`, `verify-inconclusive`;
    /// on `promoted`, written when its window passed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyFigures>,
    /// `promoted` by `cyan promote --from <environment>`: the stage whose
    /// live, verified release this was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_environment: Option<String>,
    /// Who made it happen: the user and host of the cyan that switched
    /// (`alice@build-7`); `None` when not known (the operator, and
    /// entries written by an older cyan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// What a verify window saw of the release it watched, and its verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyFigures {
    pub verdict: Verdict,
    /// Requests the release answered through the proxy in the window.
    pub requests: u64,
    /// Of those, answers with a 5xx status (the app's own, and the
    /// proxy's 502/504 for it).
    pub status_5xx: u64,
    /// `verify.min_requests`: with fewer requests the verdict is
    /// `inconclusive`.
    pub min_requests: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Passed,
    /// Too few requests to judge.
    Inconclusive,
    Failed,
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

    /// Whether `key`'s newest event is a failed verification: it was live,
    /// and was switched away from as bad (or stays live with no previous).
    pub fn failed_verify(&self, key: &ReleaseKey) -> bool {
        self.history
            .iter()
            .rev()
            .find(|e| &e.release.key() == key)
            .is_some_and(|e| e.event == Event::VerifyFailed)
    }

    /// The releases a rollback goes back to unless told which
    /// (`live_releases` without those whose verification failed last),
    /// newest first.
    pub fn rollback_targets(&self) -> Vec<&Release> {
        self.live_releases()
            .into_iter()
            .filter(|r| !self.failed_verify(&r.key()))
            .collect()
    }

    /// Records `runtime` as what `release` runs with (replacing an older
    /// entry for it), and forgets the runtimes of releases no longer
    /// named by `gated`, `verify` or `history`.
    pub fn record_runtime(&mut self, release: &ReleaseKey, runtime: serde_json::Value) {
        self.runtimes.retain(|r| &r.release != release);
        self.runtimes.push(RecordedRuntime {
            release: release.clone(),
            runtime,
        });
        let named: Vec<ReleaseKey> = self
            .gated
            .values()
            .cloned()
            .chain(self.verify.iter().map(|v| v.release.clone()))
            .chain(self.history.iter().map(|e| e.release.key()))
            .collect();
        self.runtimes.retain(|r| named.contains(&r.release));
    }

    /// What `release` ran with when it passed its gate, as recorded: every
    /// entry for it, oldest first (one, unless another cyan wrote one too;
    /// the reader takes the first it can read).
    pub fn runtimes_of<'r>(
        &'r self,
        release: &'r ReleaseKey,
    ) -> impl Iterator<Item = &'r serde_json::Value> + 'r {
        self.runtimes
            .iter()
            .filter(move |r| &r.release == release)
            .map(|r| &r.runtime)
    }

    /// The latest run of `hook` for `release`, if any.
    pub fn hook_run(&self, hook: &str, release: &ReleaseKey) -> Option<&HookRun> {
        self.hooks
            .iter()
            .find(|r| r.hook == hook && &r.release == release)
    }

    /// Records `run` as its hook's latest for its release, keeping the
    /// newest `HOOK_RUNS_LIMIT`.
    pub fn record_hook(&mut self, run: HookRun) {
        self.hooks
            .retain(|r| !(r.hook == run.hook && r.release == run.release));
        self.hooks.push(run);
        let excess = self.hooks.len().saturating_sub(HOOK_RUNS_LIMIT);
        self.hooks.drain(..excess);
    }

    /// Whether `release` went live and passed a verify window, and nothing
    /// since judged it otherwise (its newest entry is not a failed or
    /// inconclusive verification): what a promotion between stages needs.
    /// A release rolled back to keeps the pass it had.
    pub fn verified(&self, release: &ReleaseKey) -> bool {
        let mut entries = self
            .history
            .iter()
            .rev()
            .filter(|e| &e.release.key() == release)
            .peekable();
        let judged_since = entries
            .peek()
            .is_some_and(|e| matches!(e.event, Event::VerifyFailed | Event::VerifyInconclusive));
        !judged_since
            && entries.any(|e| {
                e.event == Event::Promoted
                    && e.verify
                        .as_ref()
                        .is_some_and(|v| v.verdict == Verdict::Passed)
            })
    }

    /// Marks the newest `promoted` entry of `release` as verified with
    /// `figures` (its window passed).
    pub fn mark_verified(&mut self, release: &ReleaseKey, figures: VerifyFigures) {
        if let Some(e) = self
            .history
            .iter_mut()
            .rev()
            .find(|e| &e.release.key() == release)
            .filter(|e| e.event == Event::Promoted)
        {
            e.verify = Some(figures);
        }
    }

    /// Whether `key` was ever live (so a set holding it is a previous release,
    /// not a candidate).
    pub fn was_live(&self, key: &ReleaseKey) -> bool {
        self.live_releases().iter().any(|r| &r.key() == key)
    }
}
