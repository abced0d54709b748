//! The engine: observe → plan → act until the planner says done.
//!
//! It has no deploy policy of its own, with one exception kept here on
//! purpose: a candidate that fails its gate (or whose switch is vetoed) is
//! removed before cyan exits, so a failed deploy leaves the host as it
//! found it.
//!
//! What runs beside the acts and decides no step (lifecycle hooks,
//! notifications, a promotion's check of its source stage) comes in as an
//! `Around`: called before and after each act, it can stop the walk but
//! never choose another step.

use std::future::Future;

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

/// What runs around the engine's acts. Both calls may stop the walk with
/// an error; neither can change the step.
pub trait Around {
    /// Before `step` is acted, and before the walk stops at
    /// `AwaitApproval`. An error before a candidate's `Switch` or
    /// `AwaitApproval` is a veto: the candidate is removed, live untouched.
    fn before(&self, step: &Step, d: &Desired) -> impl Future<Output = Result<()>>;
    /// After `step` took effect.
    fn after(&self, step: &Step, d: &Desired) -> impl Future<Output = Result<()>>;
}

/// Nothing around the acts: the walk alone.
pub struct Bare;

impl Around for Bare {
    async fn before(&self, _: &Step, _: &Desired) -> Result<()> {
        Ok(())
    }
    async fn after(&self, _: &Step, _: &Desired) -> Result<()> {
        Ok(())
    }
}

pub async fn converge(
    p: &impl Platform,
    d: &Desired,
    around: &impl Around,
    out: &Output,
) -> Result<Outcome> {
    let mut last: Option<Step> = None;
    for _ in 0..MAX_STEPS {
        let observed = p.observe(d).await?;
        let step = plan(d, &observed);
        tracing::debug!(?step, "planned");
        match &step {
            Step::Done => return Ok(Outcome::Done),
            Step::AwaitApproval(c) => {
                if let Err(e) = around.before(&step, d).await {
                    return Err(veto(p, *c, d, e, out).await);
                }
                return Ok(Outcome::AwaitingApproval(*c));
            }
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
        if let Err(e) = around.before(&step, d).await {
            return Err(match step {
                Step::Switch(c) if d.intent != Intent::Rollback => veto(p, c, d, e, out).await,
                _ => e,
            });
        }
        step_event(&step, d, "began");
        match p.act(&step, d).await {
            Ok(()) => {
                step_event(&step, d, "done");
                out.done(describe(&step, d));
                around.after(&step, d).await?;
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

/// A candidate's switch vetoed by `Around::before` (`why`): the candidate
/// is removed and live is left as it was. Returns the error to give.
async fn veto(p: &impl Platform, candidate: Color, d: &Desired, why: Error, out: &Output) -> Error {
    out.warn(format!(
        "the switch to {candidate} ({}) was vetoed; removing it (live traffic was never touched)",
        d.target.version
    ));
    match p.act(&Step::Clear(candidate), d).await {
        Ok(()) => why,
        Err(e) => why.annotate(&format!("removing the candidate failed too: {e}")),
    }
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

/// The loop on a fake platform: the planner's simulated world
/// (`cyan_plan::sim`), acted on step by step, with the failures a real
/// platform has (a failed gate, an act that changes nothing, a killed cyan).
#[cfg(test)]
mod tests {
    use std::mem::discriminant;
    use std::sync::Mutex;

    use super::*;
    use crate::output::Format;
    use crate::plan::sim::{apply, deploy, key, running, world, World};
    use crate::plan::{LockState, Observed};
    use Color::{Blue, Green};

    /// A platform that is the simulated world: `observe` clones it (its
    /// clock stands still: no walk here waits on time), `act` applies the
    /// step with `sim::apply` and records it.
    struct FakePlatform {
        world: Mutex<Observed>,
        acted: Mutex<Vec<Step>>,
        /// Every gate fails, changing nothing.
        fail_gates: bool,
        /// Steps of this kind (any color) succeed but do not take effect.
        ignored: Option<Step>,
        /// Acts left before cyan is killed; after that every act fails
        /// without happening. `None`: never.
        acts_left: Mutex<Option<usize>>,
    }

    impl FakePlatform {
        fn new(w: World) -> Self {
            FakePlatform {
                world: Mutex::new(w.0),
                acted: Mutex::new(Vec::new()),
                fail_gates: false,
                ignored: None,
                acts_left: Mutex::new(None),
            }
        }
        fn failing_gates(self) -> Self {
            FakePlatform {
                fail_gates: true,
                ..self
            }
        }
        fn ignoring(self, kind: Step) -> Self {
            FakePlatform {
                ignored: Some(kind),
                ..self
            }
        }
        fn killed_after(self, acts: usize) -> Self {
            *self.acts_left.lock().expect("fake lock") = Some(acts);
            self
        }
        /// A fresh cyan on the same platform.
        fn revive(&self) {
            *self.acts_left.lock().expect("fake lock") = None;
        }
        /// The steps acted since the last call.
        fn take_acted(&self) -> Vec<Step> {
            std::mem::take(&mut *self.acted.lock().expect("fake lock"))
        }
        fn world(&self) -> Observed {
            self.world.lock().expect("fake lock").clone()
        }
    }

    impl Platform for FakePlatform {
        async fn observe(&self, _: &Desired) -> Result<Observed> {
            Ok(self.world())
        }

        async fn act(&self, step: &Step, d: &Desired) -> Result<()> {
            if let Some(left) = self.acts_left.lock().expect("fake lock").as_mut() {
                if *left == 0 {
                    return Err(Error::Platform("cyan was killed".into()));
                }
                *left -= 1;
            }
            self.acted.lock().expect("fake lock").push(step.clone());
            if self.fail_gates && matches!(step, Step::Gate(_)) {
                return Err(Error::GateFailed(format!("{step:?}: GET /healthz -> 503")));
            }
            if self
                .ignored
                .as_ref()
                .is_some_and(|kind| discriminant(kind) == discriminant(step))
            {
                return Ok(());
            }
            apply(d, &mut self.world.lock().expect("fake lock"), step);
            Ok(())
        }
    }

    fn output() -> Output {
        // Text is the quietest: no GitHub log groups, and progress is plain
        // lines on stderr, which the test harness captures.
        Output::new(Format::Text)
    }

    #[tokio::test]
    async fn a_fresh_deploy_builds_launches_gates_and_switches() {
        let p = FakePlatform::new(world());
        let outcome = converge(&p, &deploy("1"), &Bare, &output()).await;
        assert_eq!(outcome.expect("converges"), Outcome::Done);
        assert_eq!(
            p.take_acted(),
            vec![
                Step::Build,
                Step::Launch(Blue),
                Step::Gate(Blue),
                Step::Switch(Blue)
            ]
        );
        let o = p.world();
        assert_eq!(o.live, Some(Blue));
        assert_eq!(o.sets[&Blue], running("1", 2));
    }

    #[tokio::test]
    async fn approval_stops_before_the_switch_and_promote_finishes() {
        let p = FakePlatform::new(world().built().live(Blue, "1"));
        let d = Desired {
            require_approval: true,
            ..deploy("2")
        };
        let outcome = converge(&p, &d, &Bare, &output()).await;
        assert_eq!(outcome.expect("stops"), Outcome::AwaitingApproval(Green));
        assert_eq!(p.take_acted(), vec![Step::Launch(Green), Step::Gate(Green)]);
        assert_eq!(p.world().live, Some(Blue), "no switch before approval");

        let promote = Desired {
            intent: Intent::Promote,
            ..d
        };
        let outcome = converge(&p, &promote, &Bare, &output()).await;
        assert_eq!(outcome.expect("converges"), Outcome::Done);
        assert_eq!(p.take_acted(), vec![Step::Switch(Green)]);
        assert_eq!(p.world().live, Some(Green));
    }

    #[tokio::test]
    async fn a_failed_gate_clears_the_candidate_and_leaves_live_alone() {
        let start = world().built().live(Blue, "1");
        let p = FakePlatform::new(start.clone()).failing_gates();
        let outcome = converge(&p, &deploy("2"), &Bare, &output()).await;
        assert!(matches!(outcome, Err(Error::GateFailed(_))), "{outcome:?}");
        assert_eq!(
            p.take_acted(),
            vec![Step::Launch(Green), Step::Gate(Green), Step::Clear(Green)]
        );
        let o = p.world();
        assert_eq!(o.live, Some(Blue));
        assert_eq!(o.sets[&Blue], running("1", 2), "live is never cleared");
        assert_eq!(o.record.gated.get(&Blue), Some(&key("1")));
        assert_eq!(o, start.0, "the candidate is gone: the host as it was");
    }

    #[tokio::test]
    async fn an_act_that_does_not_take_effect_stops_the_loop() {
        let p = FakePlatform::new(world()).ignoring(Step::Launch(Blue));
        let outcome = converge(&p, &deploy("1"), &Bare, &output()).await;
        match outcome {
            Err(Error::Platform(why)) => assert!(why.contains("did not take effect"), "{why}"),
            other => panic!("expected the platform error, got {other:?}"),
        }
        assert_eq!(
            p.take_acted(),
            vec![Step::Build, Step::Launch(Blue)],
            "stopped at the first repeat, long before {MAX_STEPS} steps"
        );
    }

    #[tokio::test]
    async fn a_lock_held_by_another_stops_before_any_act() {
        let mut start = world().built().live(Blue, "1");
        start.0.lock = LockState::Other("pid 42 on ci-7".into());
        let p = FakePlatform::new(start.clone());
        let outcome = converge(&p, &deploy("2"), &Bare, &output()).await;
        match outcome {
            Err(Error::LockHeld(why)) => assert!(why.contains("pid 42 on ci-7"), "{why}"),
            other => panic!("expected the lock error, got {other:?}"),
        }
        assert_eq!(p.take_acted(), vec![]);
        assert_eq!(p.world(), start.0);
    }

    #[tokio::test]
    async fn a_killed_run_started_again_ends_where_an_uninterrupted_one_does() {
        let redeploy = world()
            .built()
            .live(Green, "2")
            .set(Blue, running("1", 2))
            .gated(Blue, "1");
        let cold = Desired {
            keep_hot: false,
            ..deploy("3")
        };
        let walks = [
            (
                deploy("1"),
                world(),
                vec![
                    Step::Build,
                    Step::Launch(Blue),
                    Step::Gate(Blue),
                    Step::Switch(Blue),
                ],
            ),
            (
                cold,
                redeploy,
                vec![
                    Step::Clear(Blue),
                    Step::Launch(Blue),
                    Step::Gate(Blue),
                    Step::Switch(Blue),
                    Step::Retire(Green),
                ],
            ),
        ];
        for (d, start, full) in walks {
            let clean = FakePlatform::new(start.clone());
            let outcome = converge(&clean, &d, &Bare, &output()).await;
            assert_eq!(outcome.expect("converges"), Outcome::Done);
            assert_eq!(clean.take_acted(), full);
            let end = clean.world();

            for k in 0..full.len() {
                let p = FakePlatform::new(start.clone()).killed_after(k);
                let outcome = converge(&p, &d, &Bare, &output()).await;
                assert!(
                    matches!(&outcome, Err(Error::Platform(why)) if why == "cyan was killed"),
                    "killed after {k}: {outcome:?}"
                );
                assert_eq!(p.take_acted(), full[..k]);
                p.revive();
                let outcome = converge(&p, &d, &Bare, &output()).await;
                assert_eq!(
                    outcome.expect("converges"),
                    Outcome::Done,
                    "killed after {k}"
                );
                assert_eq!(
                    p.take_acted(),
                    full[k..],
                    "killed after {k}: picks up there"
                );
                assert_eq!(p.world(), end, "killed after {k}");
            }
        }
    }
}
