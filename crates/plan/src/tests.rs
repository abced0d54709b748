//! Table tests for every transition of the planner, plus a walk that applies
//! each step to the simulated platform (`crate::sim`) and checks that
//! deploys converge from any crash point.

use super::*;
use crate::sim::*;
use Color::{Blue, Green};

#[test]
fn fresh_deploy_walks_build_launch_gate_switch_done() {
    let d = deploy("1");
    assert_eq!(plan(&d, &world().0), Step::Build);
    assert_eq!(plan(&d, &world().built().0), Step::Launch(Blue));
    let w = world().built().set(Blue, running("1", 2));
    assert_eq!(
        plan(&d, &w.0),
        Step::Gate(Blue),
        "the first deploy is gated too"
    );
    let w = world().built().set(Blue, running("1", 2)).gated(Blue, "1");
    assert_eq!(plan(&d, &w.0), Step::Switch(Blue));
    let w = world().built().live(Blue, "1");
    assert_eq!(plan(&d, &w.0), Step::Done);
}

#[test]
fn a_deploy_of_the_live_release_repairs_drift_first() {
    let d = deploy("1");
    let mut w = world().built().live(Blue, "1");
    w.0.drift = vec!["web-production-blue-1-0 is exited".into()];
    assert_eq!(plan(&d, &w.0), Step::Repair(Blue));
    let mut verifying = w.clone().verifying(Blue, "1", 5_000);
    assert_eq!(
        plan(&d, &verifying.0),
        Step::Repair(Blue),
        "serving comes before the verify window"
    );
    verifying.0.drift.clear();
    assert_eq!(plan(&d, &verifying.0), Step::Verify(Blue));
    assert_eq!(
        plan(&deploy("2"), &w.0),
        Step::Launch(Green),
        "a new release goes on beside a drifted live color"
    );
    w.0.lock = LockState::Other("alice".into());
    assert_eq!(plan(&d, &w.0), Step::Blocked("alice".into()));
}

#[test]
fn a_candidate_not_through_its_gates_by_its_due_time_is_halted() {
    let d = deploy("2");
    let mut w = world().built().live(Blue, "1").set(Green, running("2", 2));
    w.0.progress_due_ms = Some(10_000);
    w.0.now_ms = 9_999;
    assert_eq!(plan(&d, &w.0), Step::Gate(Green), "before its due time");
    w.0.now_ms = 10_000;
    assert_eq!(plan(&d, &w.0), Step::Halt(Green));
    let mut short = w.clone();
    short.0.sets.insert(Green, running("2", 1));
    assert_eq!(
        plan(&d, &short.0),
        Step::Launch(Green),
        "a launch still goes on: the gate after it is what is due"
    );
    let gated = w.clone().gated(Green, "2");
    assert_eq!(
        plan(&d, &gated.0),
        Step::Switch(Green),
        "a gated set is through: the due time is past its concern"
    );
    w.0.progress_due_ms = None;
    assert_eq!(
        plan(&d, &w.0),
        Step::Gate(Green),
        "no due time: the gate bounds itself"
    );
}

#[test]
fn push_comes_before_launch_when_the_image_names_a_registry() {
    let d = Desired {
        push: true,
        ..deploy("1")
    };
    assert_eq!(plan(&d, &world().built().0), Step::Push);
    assert_eq!(plan(&d, &world().pushed().0), Step::Launch(Blue));
}

#[test]
fn redeploy_starts_the_other_color_beside_live() {
    let d = deploy("2");
    let w = world().built().live(Blue, "1");
    assert_eq!(plan(&d, &w.0), Step::Launch(Green));
    let w = world().built().live(Blue, "1").set(Green, running("2", 2));
    assert_eq!(plan(&d, &w.0), Step::Gate(Green));
    let w = w.gated(Green, "2");
    assert_eq!(plan(&d, &w.0), Step::Switch(Green));
}

#[test]
fn an_older_hot_color_is_cleared_before_a_new_launch() {
    // blue=1 was the previous release, green=2 is live; deploy 3 goes to blue.
    let d = deploy("3");
    let w = world()
        .built()
        .live(Green, "2")
        .set(Blue, running("1", 2))
        .gated(Blue, "1");
    assert_eq!(plan(&d, &w.0), Step::Clear(Blue));
}

#[test]
fn a_mixed_or_partial_set_is_finished_or_cleared() {
    let d = deploy("2");
    let mixed = SetState {
        release: None,
        total: 2,
        running: 2,
        ..SetState::default()
    };
    let w = world().built().live(Blue, "1").set(Green, mixed);
    assert_eq!(plan(&d, &w.0), Step::Clear(Green));
    // Killed between create and start: launch finishes the job.
    let half = SetState {
        release: Some(key("2")),
        total: 2,
        running: 1,
        created: 1,
        ..SetState::default()
    };
    let w = world().built().live(Blue, "1").set(Green, half);
    assert_eq!(plan(&d, &w.0), Step::Launch(Green));
    // Killed after one of two creates.
    let w = world().built().live(Blue, "1").set(Green, running("2", 1));
    assert_eq!(plan(&d, &w.0), Step::Launch(Green));
}

#[test]
fn an_unhealthy_candidate_is_gated_not_switched() {
    // A crashed candidate that never passed its gate goes to the gate, which
    // fails with its logs; it is never switched to.
    let crashed = SetState {
        release: Some(key("2")),
        total: 2,
        running: 1,
        exited: 1,
        ..SetState::default()
    };
    let w = world().built().live(Blue, "1").set(Green, crashed.clone());
    assert_eq!(plan(&deploy("2"), &w.0), Step::Gate(Green));
    // A gated set that later lost a container is started afresh.
    let w = w.gated(Green, "2");
    assert_eq!(plan(&deploy("2"), &w.0), Step::Clear(Green));
}

#[test]
fn approval_stops_before_the_switch_and_promote_continues() {
    let d = Desired {
        require_approval: true,
        ..deploy("2")
    };
    let w = world()
        .built()
        .live(Blue, "1")
        .set(Green, running("2", 2))
        .gated(Green, "2");
    assert_eq!(plan(&d, &w.0), Step::AwaitApproval(Green));
    let promote = Desired {
        intent: Intent::Promote,
        ..d.clone()
    };
    assert_eq!(plan(&promote, &w.0), Step::Switch(Green));
    // Approval is never asked before the gate has passed.
    let w = world().built().live(Blue, "1").set(Green, running("2", 2));
    assert_eq!(plan(&d, &w.0), Step::Gate(Green));
}

#[test]
fn a_candidate_waiting_for_approval_runs_its_preview_size_until_promoted() {
    let d = Desired {
        require_approval: true,
        preview_replicas: Some(1),
        ..deploy("2")
    };
    let mut o = world().built().live(Blue, "1").0;
    // Launched and gated at its preview size, then it waits.
    for want in [Step::Launch(Green), Step::Gate(Green)] {
        let step = plan(&d, &o);
        assert_eq!(step, want);
        apply(&d, &mut o, &step);
    }
    assert_eq!(o.sets[&Green].total, 1, "previewReplicas while it waits");
    assert_eq!(plan(&d, &o), Step::AwaitApproval(Green));
    // Promoted: scaled to replicas before the switch.
    let promote = Desired {
        intent: Intent::Promote,
        ..d.clone()
    };
    assert_eq!(
        walk(&promote, &mut o),
        [Step::Launch(Green), Step::Switch(Green)]
    );
    assert_eq!(o.sets[&Green].total, 2);
}

#[test]
fn auto_promote_goes_live_when_its_time_comes_and_not_before() {
    let d = Desired {
        require_approval: true,
        preview_replicas: Some(1),
        ..deploy("2")
    };
    let mut o = world()
        .built()
        .live(Blue, "1")
        .set(Green, running("2", 1))
        .gated(Green, "2")
        .0;
    o.auto_promote_due_ms = Some(o.now_ms + 1);
    assert_eq!(plan(&d, &o), Step::AwaitApproval(Green), "not yet");
    assert_eq!(crate::replicas(&d, &o), 1);
    o.now_ms += 1;
    assert!(crate::approved(&d, &o));
    assert_eq!(crate::replicas(&d, &o), 2, "full size once due");
    assert_eq!(walk(&d, &mut o), [Step::Launch(Green), Step::Switch(Green)]);
    // Without approval required there is nothing to wait for, and the
    // preview size never applies.
    let plain = Desired {
        preview_replicas: Some(1),
        ..deploy("3")
    };
    let o = world().built().0;
    assert!(crate::approved(&plain, &o));
    assert_eq!(crate::replicas(&plain, &o), 2);
}

#[test]
fn verify_runs_until_a_verdict_closes_its_window() {
    let d = deploy("2");
    let w = world()
        .built()
        .live(Green, "2")
        .set(Blue, running("1", 2))
        .verifying(Green, "2", 5_000);
    assert_eq!(plan(&d, &w.0), Step::Verify(Green));
    // Its time is up but no verdict closed it (the cyan watching it was
    // killed): it is judged now, never taken for a pass.
    let mut after = w.0.clone();
    after.now_ms = 5_000;
    assert_eq!(plan(&d, &after), Step::Verify(Green));
    // Closed by a verdict: done.
    let mut closed = after.clone();
    closed.record.verify = None;
    assert_eq!(plan(&d, &closed), Step::Done);
    // A window for another release does not hold this one.
    let w = world()
        .built()
        .live(Green, "2")
        .verifying(Green, "1", 5_000);
    assert_eq!(plan(&d, &w.0), Step::Done);
}

#[test]
fn verify_failure_state_redeploys_only_on_request() {
    // After verify failed, traffic is back on blue=1 and green=2 is still up.
    // Deploying 1 again (what status shows as live) is already done…
    let w = world()
        .built()
        .live(Blue, "1")
        .set(Green, running("2", 2))
        .gated(Green, "2");
    assert_eq!(plan(&deploy("1"), &w.0), Step::Done);
    // …and re-running deploy 2 retries the switch, which opens a new window.
    assert_eq!(plan(&deploy("2"), &w.0), Step::Switch(Green));
}

#[test]
fn previous_color_is_retired_only_when_keep_hot_is_zero() {
    let w = world()
        .built()
        .live(Green, "2")
        .set(Blue, running("1", 2))
        .gated(Blue, "1");
    assert_eq!(plan(&deploy("2"), &w.0), Step::Done);
    let cold = Desired {
        keep_hot: false,
        ..deploy("2")
    };
    assert_eq!(plan(&cold, &w.0), Step::Retire(Blue));
}

#[test]
fn a_delayed_retire_waits_for_its_time_after_the_switch() {
    let mut w = world()
        .pushed()
        .live(Green, "2")
        .set(Blue, running("1", 2))
        .gated(Blue, "1");
    w.0.record.switched_at_ms = Some(1_000);
    let d = Desired {
        keep_hot: false,
        retire_delay_ms: 30_000,
        ..deploy("2")
    };
    w.0.now_ms = 30_999;
    assert_eq!(plan(&d, &w.0), Step::Done, "blue stays hot for the delay");
    w.0.now_ms = 31_000;
    assert_eq!(plan(&d, &w.0), Step::Retire(Blue));
}

#[test]
fn a_halted_release_is_not_started_again_until_it_changes() {
    let mut w = world().pushed().live(Blue, "1");
    w.0.record.halted = Some(key("2"));
    assert!(matches!(plan(&deploy("2"), &w.0), Step::Failed(_)));
    assert_eq!(plan(&deploy("3"), &w.0), Step::Launch(Green));
    assert_eq!(
        plan(&deploy("1"), &w.0),
        Step::Done,
        "a halt never stops the live release"
    );
}

#[test]
fn a_gated_set_that_lost_availability_is_gated_again_not_switched() {
    let lame = SetState {
        unavailable: 1,
        ..running("2", 2)
    };
    let w = world()
        .pushed()
        .live(Blue, "1")
        .set(Green, lame)
        .gated(Green, "2");
    assert_eq!(plan(&deploy("2"), &w.0), Step::Gate(Green));
}

#[test]
fn hot_rollback_is_a_single_switch() {
    let w = world()
        .built()
        .live(Green, "2")
        .set(Blue, running("1", 2))
        .gated(Blue, "1");
    assert_eq!(plan(&rollback_to("1"), &w.0), Step::Switch(Blue));
}

#[test]
fn cold_rollback_launches_and_gates_the_old_image() {
    let w = world().built().live(Green, "2");
    let d = rollback_to("1");
    assert_eq!(plan(&d, &w.0), Step::Launch(Blue));
    let w = w.set(Blue, running("1", 2));
    assert_eq!(plan(&d, &w.0), Step::Gate(Blue));
    // A rollback never waits for approval.
    let d = Desired {
        require_approval: true,
        ..d
    };
    let w = w.gated(Blue, "1");
    assert_eq!(plan(&d, &w.0), Step::Switch(Blue));
}

#[test]
fn rollback_without_its_image_fails_clearly() {
    let w = world().live(Green, "2");
    match plan(&rollback_to("1"), &w.0) {
        Step::Failed(why) => assert!(why.contains("no longer on this host"), "{why}"),
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[test]
fn a_concurrent_deploy_is_refused() {
    let mut w = world().built().live(Blue, "1");
    w.0.lock = LockState::Other("pid 42 on ci-7 since 10:00".into());
    assert_eq!(
        plan(&deploy("2"), &w.0),
        Step::Blocked("pid 42 on ci-7 since 10:00".into())
    );
}

// ---- convergence: apply steps to a simulated platform, crash anywhere ----

/// Runs plan/apply until Done, returning the steps taken.
fn walk(d: &Desired, o: &mut Observed) -> Vec<Step> {
    let mut steps = Vec::new();
    for _ in 0..20 {
        let s = plan(d, o);
        if s == Step::Done {
            return steps;
        }
        if let Step::Clear(c) | Step::Retire(c) = &s {
            assert_ne!(Some(*c), o.live, "never remove the live color");
        }
        apply(d, o, &s);
        steps.push(s);
    }
    panic!("no convergence: {steps:?}");
}

#[test]
fn every_crash_point_converges_to_the_same_end_state() {
    let d = deploy("3");
    let start = world()
        .built()
        .live(Green, "2")
        .set(Blue, running("1", 2))
        .gated(Blue, "1")
        .0;
    let mut clean = start.clone();
    let full = walk(&d, &mut clean);
    assert_eq!(
        full,
        vec![
            Step::Clear(Blue),
            Step::Launch(Blue),
            Step::Gate(Blue),
            Step::Switch(Blue)
        ]
    );
    // Crash after k steps: a fresh planner run sees only the platform state.
    for k in 0..full.len() {
        let mut o = start.clone();
        for s in &full[..k] {
            apply(&d, &mut o, s);
        }
        walk(&d, &mut o);
        assert_eq!(o.live, Some(Blue));
        assert_eq!(o.sets[&Blue].release, Some(key("3")));
        assert_eq!(o.sets[&Green].release, Some(key("2")), "previous stays hot");
        assert_eq!(o.live, clean.live);
        assert_eq!(o.sets, clean.sets);
    }
}

#[test]
fn deploy_then_rollback_then_deploy_alternates_colors() {
    let mut o = world().built().0;
    walk(&deploy("1"), &mut o);
    assert_eq!(o.live, Some(Blue));
    walk(&deploy("2"), &mut o);
    assert_eq!(o.live, Some(Green));
    let steps = walk(&rollback_to("1"), &mut o);
    assert_eq!(
        steps,
        vec![Step::Switch(Blue)],
        "hot rollback starts nothing"
    );
    let steps = walk(&deploy("3"), &mut o);
    assert_eq!(steps[0], Step::Clear(Green));
    assert_eq!(o.live, Some(Green));
    assert_eq!(o.sets[&Blue].release, Some(key("1")));
}
