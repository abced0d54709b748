//! The planner: `plan(desired, observed) -> Step`, a pure function.
//!
//! It is the whole deploy policy. Platforms observe and act but decide
//! nothing; the CLI loop and the operator's reconcile both ask this function
//! for the next single step. Because it sees only what is on the platform, a
//! cyan killed at any moment and run again gets the same answer and converges.
//!
//! This crate is the planner and its vocabulary, and nothing else: no tokio,
//! no I/O, no platform. `release` names what is deployed (colors, release
//! keys); `record` is the state a deploy keeps on the platform; `verify`,
//! `phase` and `rollback` are the planner's other pure answers. The compiler
//! keeps it so: the deployer and the proxy depend on this crate, never the
//! other way round.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::record::DeployRecord;
use crate::release::{Color, ReleaseKey};

mod abort;
mod phase;
pub mod record;
pub mod release;
mod rollback;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod verify;
pub use abort::{abort, Abort};
pub use phase::{phase, Phase, Seen};
pub use rollback::{rollback_target, KeptSet, RollbackTarget};

/// Why the user ran cyan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Intent {
    /// Bring a new release live (stopping for approval if required).
    Deploy,
    /// Bring the gated candidate live: approval is given.
    Promote,
    /// Bring a previous release live again.
    Rollback,
}

/// What the user wants, resolved from config and flags.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub intent: Intent,
    pub target: ReleaseKey,
    pub replicas: u32,
    /// While a deploy waits for approval, its candidate runs this many
    /// replicas instead (Kubernetes' `previewReplicas`); promoted, it is
    /// scaled to `replicas` before the switch. `None`: always `replicas`.
    pub preview_replicas: Option<u32>,
    /// cyan may build the image when it is missing (false for rollback).
    pub build: bool,
    /// The image names a registry, so it must be pushed before launch.
    pub push: bool,
    pub require_approval: bool,
    /// Keep the previous color running after a switch.
    pub keep_hot: bool,
    /// When not kept hot, how long after the switch the previous color is
    /// retired (Kubernetes: `scaleDownDelaySeconds`; Docker: 0).
    pub retire_delay_ms: u64,
}

/// The target release's image, as the platform sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageState {
    Missing,
    Local,
    Pushed,
}

/// One color's container set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetState {
    /// The release all containers run; `None` when they disagree.
    pub release: Option<ReleaseKey>,
    pub total: u32,
    pub running: u32,
    /// Created but never started (cyan stopped between create and start).
    pub created: u32,
    /// Stopped or crashed.
    pub exited: u32,
    /// Running but not (yet) available: not ready, or ready for less than
    /// `minReadySeconds` (Kubernetes). A gated set with any must be gated again.
    pub unavailable: u32,
}

/// Who holds the app's deploy lock, as seen now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockState {
    Ours,
    Other(String),
}

/// Everything the planner may look at.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub image: ImageState,
    pub live: Option<Color>,
    pub sets: BTreeMap<Color, SetState>,
    pub record: DeployRecord,
    pub lock: LockState,
    pub now_ms: u64,
    /// Where the live color's serving disagrees with its containers (a
    /// replica stopped, removed or missing; an upstream on an address its
    /// container no longer has), one line each. Empty where the platform
    /// routes by itself (Kubernetes' Services).
    pub drift: Vec<String>,
    /// When the target's rollout must have passed its gates (Unix ms), on a
    /// platform that bounds it as a whole (Kubernetes: when the rollout
    /// began plus `progressDeadlineSeconds`, until its candidate first
    /// passes them). `None`: the gate bounds itself (Docker's
    /// `health.deadline`), or the candidate passed its gates once, and a
    /// gate again (a scale-up at promotion) is not a late rollout.
    pub progress_due_ms: Option<u64>,
    /// When a candidate waiting for approval is promoted without `cyan
    /// promote` (Unix ms; Kubernetes: its gate plus `autoPromoteSeconds`).
    /// `None`: only a promote does.
    pub auto_promote_due_ms: Option<u64>,
}

/// Whether the target may go live without waiting: it is not a deploy
/// that requires approval, or its auto-promote time has come.
pub fn approved(d: &Desired, o: &Observed) -> bool {
    d.intent != Intent::Deploy
        || !d.require_approval
        || o.auto_promote_due_ms.is_some_and(|due| o.now_ms >= due)
}

/// How many replicas the target runs now: `preview_replicas` while it
/// waits for approval, else `replicas`. A `Step::Launch` starts (or
/// scales to) this many.
pub fn replicas(d: &Desired, o: &Observed) -> u32 {
    match d.preview_replicas {
        Some(n) if !approved(d, o) => n.clamp(1, d.replicas.max(1)),
        _ => d.replicas,
    }
}

/// The single next action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", content = "color", rename_all = "kebab-case")]
pub enum Step {
    Build,
    Push,
    /// Drain and remove a color's containers: a stale, mixed or decayed set.
    Clear(Color),
    /// Create and start the missing containers of the target in a color
    /// (`replicas(d, o)` of them: a candidate waiting for approval runs
    /// its preview size).
    Launch(Color),
    Gate(Color),
    AwaitApproval(Color),
    Switch(Color),
    Verify(Color),
    /// Stop the previous color after a switch (when `keep.hot` is 0).
    Retire(Color),
    /// Bring the live color back in line with what it should be (its
    /// replicas running and gated, the proxy on their addresses): a deploy
    /// of the release that is already live repairs drift.
    Repair(Color),
    /// The candidate did not pass its gates by `Observed::progress_due_ms`:
    /// take it down and halt the release (not started again on its own;
    /// the live color keeps serving).
    Halt(Color),
    Done,
    Failed(String),
    /// Another cyan took the lock: stop before acting.
    Blocked(String),
}

pub fn plan(d: &Desired, o: &Observed) -> Step {
    if let LockState::Other(holder) = &o.lock {
        return Step::Blocked(holder.clone());
    }
    let live_holds_target = o
        .live
        .and_then(|c| o.sets.get(&c))
        .and_then(|s| s.release.as_ref())
        == Some(&d.target);
    if o.record.halted.as_ref() == Some(&d.target) && !live_holds_target {
        return Step::Failed(format!(
            "release {} was stopped (failed gate, verify or abort); change it or retry",
            d.target.version
        ));
    }
    match o.image {
        ImageState::Missing if d.build => return Step::Build,
        ImageState::Missing => {
            return Step::Failed(format!(
                "the image of release {} is no longer on this host, so it cannot be started again",
                d.target.version
            ))
        }
        ImageState::Local if d.push => return Step::Push,
        _ => {}
    }

    let holds_target =
        |c: &Color| o.sets.get(c).and_then(|s| s.release.as_ref()) == Some(&d.target);

    if let Some(live) = o.live.filter(holds_target) {
        if !o.drift.is_empty() {
            return Step::Repair(live);
        }
        // A window stays in the record until a verdict closes it: one whose
        // time is up but that has none (its cyan was killed) is judged now,
        // never taken for a pass.
        if let Some(w) = &o.record.verify {
            if w.color == live && w.release == d.target {
                return Step::Verify(live);
            }
        }
        if !d.keep_hot && o.sets.get(&live.other()).is_some_and(|s| s.total > 0) {
            let due = o.record.switched_at_ms.map_or(0, |t| t + d.retire_delay_ms);
            if o.now_ms >= due {
                return Step::Retire(live.other());
            }
        }
        return Step::Done;
    }

    // The target is not live. Bring it up in the color that already holds it,
    // else in the color that is not live.
    let color = Color::ALL
        .into_iter()
        .find(|c| Some(*c) != o.live && holds_target(c))
        .unwrap_or_else(|| o.live.map_or(Color::Blue, Color::other));
    let set = o.sets.get(&color).cloned().unwrap_or_default();
    let gated = o.record.gated.get(&color) == Some(&d.target);

    if set.total > 0 && set.release.as_ref() != Some(&d.target) {
        return Step::Clear(color);
    }
    if set.exited > 0 && gated {
        // A set that passed its gate and then lost containers is no longer
        // known good: start it afresh rather than switch to it.
        return Step::Clear(color);
    }
    if set.total < replicas(d, o) || set.created > 0 {
        return Step::Launch(color);
    }
    if !gated || set.unavailable > 0 {
        // Still not through its gates when its rollout is due: stop it.
        return match o.progress_due_ms {
            Some(due) if o.now_ms >= due => Step::Halt(color),
            _ => Step::Gate(color),
        };
    }
    if !approved(d, o) {
        return Step::AwaitApproval(color);
    }
    Step::Switch(color)
}

#[cfg(test)]
mod tests;
