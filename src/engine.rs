//! The engine: observe → plan → act until the planner says done.
//!
//! It has no deploy policy of its own, with one exception kept here on
//! purpose: a candidate that fails its gate is removed before cyan exits, so
//! a failed deploy leaves the host as it found it.

use crate::error::{Error, Result};
use crate::output::Output;
use crate::plan::{plan, Desired, Intent, Step};
use crate::platform::Platform;
use crate::release::Color;

/// More steps than any real walk takes (the longest is ~8): a guard against a
/// platform whose acts do not change what it observes.
const MAX_STEPS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    AwaitingApproval(Color),
}

pub async fn converge(p: &impl Platform, d: &Desired, out: &Output) -> Result<Outcome> {
    let mut last: Option<Step> = None;
    for _ in 0..MAX_STEPS {
        let observed = p.observe(d).await?;
        let step = plan(d, &observed);
        tracing::debug!(?step, "planned");
        match &step {
            Step::Done => return Ok(Outcome::Done),
            Step::AwaitApproval(c) => return Ok(Outcome::AwaitingApproval(*c)),
            Step::Failed(why) => return Err(Error::Refused(why.clone())),
            Step::Blocked(holder) => {
                return Err(Error::LockHeld(format!(
                    "the deploy lock is now held by {holder}; stopped before changing anything else"
                )))
            }
            _ => {}
        }
        if last.as_ref() == Some(&step) && !matches!(step, Step::Verify(_)) {
            return Err(Error::Platform(format!(
                "{} did not take effect; the platform still needs it. Check `cyan status` and the Docker engine",
                describe(&step, d)
            )));
        }
        out.phase(describe(&step, d));
        step_event(&step, d, "began");
        match p.act(&step, d).await {
            Ok(()) => {
                step_event(&step, d, "done");
                out.done(describe(&step, d))
            }
            Err(e @ Error::GateFailed(_)) => {
                if let Step::Gate(color) = step {
                    out.warn(format!("{color} failed its health gate; removing it (live traffic was never touched)"));
                    p.act(&Step::Clear(color), d).await?;
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        }
        last = Some(step);
    }
    Err(Error::Platform(format!(
        "no convergence after {MAX_STEPS} steps"
    )))
}

/// The target of the structured step events: with `--log-format json`
/// they are on stderr whatever `RUST_LOG` says, one JSON line each
/// (`"fields": {"step": "verify", "color": "green", "version": "2",
/// "event": "began" | "done"}`), for scripts and tests to follow a deploy
/// without reading its progress wording.
pub const STEP_EVENTS: &str = "cyan::step";

fn step_event(step: &Step, d: &Desired, event: &str) {
    let tagged = serde_json::to_value(step).expect("a step serializes");
    let kind = tagged["step"].as_str().unwrap_or_default();
    let color = tagged["color"].as_str().unwrap_or_default();
    tracing::info!(target: STEP_EVENTS, step = kind, color, version = %d.target.version, event);
}

/// A step in words, for progress lines.
pub fn describe(step: &Step, d: &Desired) -> String {
    let v = &d.target.version;
    match step {
        Step::Build => format!("build {v}"),
        Step::Push => format!("push {v}"),
        Step::Clear(c) => format!("remove old {c} set"),
        Step::Launch(c) => format!("launch {v} as {c}"),
        Step::Gate(c) => format!("health-gate {c} ({v})"),
        Step::AwaitApproval(c) => format!("await approval for {c} ({v})"),
        Step::Switch(c) if d.intent == Intent::Rollback => {
            format!("roll back: switch traffic to {c} ({v})")
        }
        Step::Switch(c) => format!("switch traffic to {c} ({v})"),
        Step::Verify(c) => format!("verify {c} ({v})"),
        Step::Retire(c) => format!("retire previous {c} set"),
        Step::Repair(c) => format!("repair live {c} ({v})"),
        Step::Halt(c) => format!("halt {c} ({v}): past its progress deadline"),
        Step::Done => "done".into(),
        Step::Failed(why) => format!("failed: {why}"),
        Step::Blocked(who) => format!("blocked by {who}"),
    }
}
