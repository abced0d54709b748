//! The reconcile: observe, plan, act one step, write the status, requeue.
//!
//! It is level-triggered and idempotent: everything it knows comes from the
//! cluster (the CR, its status, the Deployments and Services), so an operator
//! restarted at any instant picks up where the last one stopped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};

use super::crd::{annotation, BlueGreenDeployment, BlueGreenDeploymentStatus, Phase};
use super::metrics::Metrics;
use crate::error::{is_conflict, Error, Result};
use crate::plan::{plan, Desired, Intent, Observed, Step};
use crate::platform::kube::{objects, KubePlatform};
use crate::platform::Platform;

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Unix milliseconds; tests move it.
    pub clock: Box<dyn Fn() -> u64 + Send + Sync>,
    /// Failures in a row per object, for the error backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        clock: Box<dyn Fn() -> u64 + Send + Sync>,
    ) -> Self {
        Context {
            client,
            recorder,
            metrics,
            clock,
            failures: Mutex::default(),
        }
    }
}

fn key(bgd: &BlueGreenDeployment) -> String {
    format!("{}/{}", bgd.namespace().unwrap_or_default(), bgd.name_any())
}

pub async fn reconcile(bgd: Arc<BlueGreenDeployment>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_fresh(&bgd, &ctx).await;
    ctx.metrics.reconciled(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.failures
            .lock()
            .expect("failures lock")
            .remove(&key(&bgd));
    }
    result
}

/// Failed reconciles back off exponentially per object (1 s doubling to
/// 5 min, with jitter), and are counted by kind.
pub fn error_policy(bgd: Arc<BlueGreenDeployment>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(err.kind());
    let n = {
        let mut failures = ctx.failures.lock().expect("failures lock");
        let n = failures.entry(key(&bgd)).or_insert(0);
        *n += 1;
        *n
    };
    tracing::warn!(object = %key(&bgd), failures = n, error = %err, "reconcile failed");
    let delay = ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(300))
        .with_jitter()
        .without_max_times()
        .build()
        .nth(n as usize - 1)
        .unwrap_or(Duration::from_secs(300));
    Action::requeue(delay)
}

/// Attempts of a reconcile whose status write lost a race.
const ATTEMPTS: usize = 4;

/// The watch cache can lag behind the status this operator just wrote, and a
/// status computed from a stale copy would undo it. So each attempt reads
/// the object fresh and writes its status only on top of that exact
/// resourceVersion. A conflict with another writer of the status starts the
/// attempt over (acts are idempotent, so repeating them is safe); one with a
/// writer of metadata or spec only is rebased (`finish`).
async fn reconcile_fresh(cached: &BlueGreenDeployment, ctx: &Context) -> Result<Action> {
    let api: Api<BlueGreenDeployment> = Api::namespaced(
        ctx.client.clone(),
        &cached.namespace().unwrap_or_else(|| "default".into()),
    );
    let mut pause = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(20))
        .with_jitter()
        .build();
    for _ in 0..ATTEMPTS {
        let Some(bgd) = api.get_opt(&cached.name_any()).await? else {
            return Ok(Action::await_change());
        };
        if let Some(action) = reconcile_once(&api, &bgd, ctx).await? {
            return Ok(action);
        }
        tokio::time::sleep(pause.next().unwrap_or(Duration::from_millis(100))).await;
    }
    Err(Error::Unreachable(format!(
        "{}: the object changed under every status write ({ATTEMPTS} conflicts); retrying later",
        key(cached)
    )))
}

/// One observe → plan → act → write; `None` when the status write found
/// the object changed since it was read.
async fn reconcile_once(
    api: &Api<BlueGreenDeployment>,
    bgd: &BlueGreenDeployment,
    ctx: &Context,
) -> Result<Option<Action>> {
    let now = (ctx.clock)();
    let before = bgd.status.clone().unwrap_or_default();
    let p = KubePlatform::new(ctx.client.clone(), bgd.clone(), now);
    p.edit(|s| s.observed_generation = bgd.metadata.generation);

    if let Err(why) = objects::validate(bgd) {
        p.edit(|s| {
            s.phase = Some(Phase::Degraded);
            s.message = Some(format!("invalid spec: {why}"));
        });
        let written = finish(api, bgd, ctx, &before, &p.status()).await?;
        return Ok(written.then(Action::await_change));
    }
    if bgd.spec.paused {
        p.edit(|s| s.message = Some("paused: set spec.paused to false to continue".into()));
        let written = finish(api, bgd, ctx, &before, &p.status()).await?;
        return Ok(written.then(Action::await_change));
    }

    let d = p.desired();
    begin_rollout(&p, bgd, &d, now);
    match step(&p, bgd, &d, ctx).await {
        Ok(action) => {
            if !finish(api, bgd, ctx, &before, &p.status()).await? {
                return Ok(None);
            }
            consume_commands(api, bgd, &before, &p.status()).await?;
            Ok(Some(action))
        }
        Err(e @ Error::Config(_)) => {
            p.edit(|s| {
                s.phase = Some(Phase::Degraded);
                s.message = Some(e.to_string());
            });
            if !finish(api, bgd, ctx, &before, &p.status()).await? {
                return Ok(None);
            }
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// Removes the one-shot commands this reconcile carried out, once its
/// status (`before` → `after`) is written. An abort is consumed by the halt
/// it caused, so a later retry is not aborted again. An approval is for one
/// rollout: consumed by its switch, by a halt, or once the template it
/// approved is no longer the one rolling out; left on the object, the same
/// template applied again later (after a rollback, or a retry) went live
/// without approval. A rollback's request is consumed by its switch, or a
/// later re-apply of that template would be taken for a rollback and skip
/// its verify window. Each is removed only with the value this reconcile
/// read (an RFC 6902 `test`): one written since is a new command.
async fn consume_commands(
    api: &Api<BlueGreenDeployment>,
    bgd: &BlueGreenDeployment,
    before: &BlueGreenDeploymentStatus,
    after: &BlueGreenDeploymentStatus,
) -> Result<()> {
    let switched = before.switched_at_ms != after.switched_at_ms;
    let halted = after.halted_hash.is_some() && before.halted_hash != after.halted_hash;
    let ann = bgd.annotations();
    let spent = |key: &str| match ann.get(key) {
        Some(v) if key == annotation::ABORT => Some(v),
        Some(v) if key == annotation::PROMOTE => {
            (switched || halted || after.current_hash.as_ref() != Some(v)).then_some(v)
        }
        Some(v) => switched.then_some(v),
        None => None,
    };
    for key in [annotation::ABORT, annotation::PROMOTE, annotation::ROLLBACK] {
        let Some(value) = spent(key) else { continue };
        let path = objects::annotation_path(key);
        let ops = serde_json::json!([
            { "op": "test", "path": path, "value": value },
            { "op": "remove", "path": path },
        ]);
        let remove = Patch::Json::<()>(serde_json::from_value(ops).expect("RFC 6902 operations"));
        match api
            .patch(&bgd.name_any(), &PatchParams::default(), &remove)
            .await
        {
            Ok(_) => {}
            // Changed since it was read: a new command, for the next reconcile.
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 422 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A new template starts a new rollout (its own deadline, no halt); a new
/// retry token lifts the halt of the current one.
fn begin_rollout(p: &KubePlatform, bgd: &BlueGreenDeployment, d: &Desired, now: u64) {
    let hash = d.target.config_hash.clone();
    let retry = bgd.annotations().get(annotation::RETRY).cloned();
    p.edit(|s| {
        if s.current_hash.as_deref() != Some(hash.as_str()) {
            s.current_hash = Some(hash.clone());
            s.progress_started_ms = Some(now);
            s.gated_at_ms = None;
            s.candidate_revision = None;
            s.halted_hash = None;
        }
        if retry.is_some() && s.observed_retry_token != retry {
            s.observed_retry_token = retry;
            if s.halted_hash.as_deref() == Some(hash.as_str()) {
                // A retried rollout starts over: its own deadline, and
                // (with approval) its own wait from its own first gate.
                s.halted_hash = None;
                s.progress_started_ms = Some(now);
                s.gated_at_ms = None;
            }
        }
    });
}

async fn step(
    p: &KubePlatform,
    bgd: &BlueGreenDeployment,
    d: &Desired,
    ctx: &Context,
) -> Result<Action> {
    let observed = p.observe(d).await?;
    let status = p.status();
    let abort = bgd.annotations().get(annotation::ABORT) == Some(&d.target.config_hash);
    if abort && status.halted_hash.as_ref() != Some(&d.target.config_hash) {
        p.abort(&observed, d).await?;
        if p.status().phase == Some(Phase::RolledBack) {
            ctx.metrics.rolled_back();
        }
        conditions(p, &observed, d, bgd.metadata.generation);
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let step = plan(d, &observed);
    tracing::debug!(object = %key(bgd), ?step, "planned");
    p.edit(|s| {
        let next = phase_of(&step, s, d);
        if s.phase == Some(Phase::Verifying) && next == Phase::Healthy {
            // The window's countdown would otherwise stay as the message.
            s.message = Some(format!(
                "{} passed its verify window and is live",
                d.target.version
            ));
        }
        s.phase = Some(next);
        match &step {
            Step::AwaitApproval(c) => {
                s.message = Some(format!(
                    "{c} ({}) passed its gates and waits for approval: cyan promote",
                    d.target.version
                ))
            }
            Step::Failed(why) if s.message.is_none() => s.message = Some(why.clone()),
            _ => {}
        }
    });
    let switched_before = p.status().switched_at_ms;
    p.act(&step, d).await?;
    if matches!(step, Step::Switch(_)) && p.status().switched_at_ms != switched_before {
        match d.intent {
            Intent::Rollback => ctx.metrics.rolled_back(),
            _ => ctx.metrics.switched(),
        }
    }
    if p.status().phase == Some(Phase::RolledBack) && matches!(step, Step::Verify(_)) {
        ctx.metrics.rolled_back();
    }
    conditions(p, &observed, d, bgd.metadata.generation);
    Ok(requeue_after(&step, bgd, &p.status(), &observed))
}

fn phase_of(step: &Step, s: &BlueGreenDeploymentStatus, d: &Desired) -> Phase {
    let halted = s.halted_hash.as_ref() == Some(&d.target.config_hash);
    match step {
        Step::Launch(_) | Step::Clear(_) | Step::Repair(_) => Phase::Progressing,
        Step::Halt(_) => Phase::Degraded,
        Step::Gate(_) => Phase::Gating,
        Step::AwaitApproval(_) => Phase::AwaitingApproval,
        Step::Switch(_) => Phase::Switching,
        Step::Verify(_) => Phase::Verifying,
        Step::Retire(_) | Step::Done if !halted => Phase::Healthy,
        _ if s.phase == Some(Phase::RolledBack) => Phase::RolledBack,
        _ => Phase::Degraded,
    }
}

fn requeue_after(
    step: &Step,
    bgd: &BlueGreenDeployment,
    s: &BlueGreenDeploymentStatus,
    o: &Observed,
) -> Action {
    let secs = |n: u64| Action::requeue(Duration::from_secs(n));
    match step {
        Step::Verify(_) => secs(
            bgd.spec
                .verify
                .as_ref()
                .map_or(5, |v| u64::from(v.interval_seconds.max(1))),
        ),
        Step::AwaitApproval(_) => match o.auto_promote_due_ms {
            Some(due) => {
                Action::requeue(Duration::from_millis(due.saturating_sub(o.now_ms).max(500)))
            }
            None => secs(60),
        },
        Step::Done => match s.switched_at_ms {
            Some(at)
                if o.live
                    .is_some_and(|l| o.sets.get(&l.other()).is_some_and(|x| x.total > 0)) =>
            {
                let due = at + u64::from(bgd.spec.scale_down_delay_seconds) * 1000;
                Action::requeue(Duration::from_millis(due.saturating_sub(o.now_ms).max(500)))
            }
            _ => secs(300),
        },
        Step::Failed(_) | Step::Blocked(_) => secs(300),
        _ => secs(2),
    }
}

/// Available, Progressing and Promoted, each changing its transition time
/// only when its status changes.
fn conditions(p: &KubePlatform, o: &Observed, d: &Desired, generation: Option<i64>) {
    let s = p.status();
    let live_set = o.live.and_then(|c| o.sets.get(&c));
    let available = live_set.is_some_and(|set| set.total > 0 && set.unavailable == 0);
    let phase = s.phase.unwrap_or(Phase::Progressing);
    let progressing = matches!(
        phase,
        Phase::Progressing
            | Phase::Gating
            | Phase::AwaitingApproval
            | Phase::Switching
            | Phase::Verifying
    );
    let promoted = s.history.last().is_some_and(|h| {
        h.template_hash == d.target.config_hash && h.outcome != super::crd::Outcome::VerifyFailed
    }) && s.live_color.is_some();
    let message = s.message.clone().unwrap_or_default();
    p.edit(|s| {
        set_condition(
            &mut s.conditions,
            "Available",
            available,
            if available {
                "LiveColorAvailable"
            } else {
                "NoAvailableLiveColor"
            },
            &message,
            generation,
        );
        set_condition(
            &mut s.conditions,
            "Progressing",
            progressing,
            &format!("{phase:?}"),
            &message,
            generation,
        );
        set_condition(
            &mut s.conditions,
            "Promoted",
            promoted,
            if promoted {
                "TemplateLive"
            } else {
                "TemplateNotLive"
            },
            &message,
            generation,
        );
    });
}

fn set_condition(
    all: &mut Vec<Condition>,
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    let status = if ok { "True" } else { "False" };
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    match all.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now;
                c.status = status.into();
            }
            c.reason = reason.into();
            c.message = message.into();
            c.observed_generation = generation;
        }
        None => all.push(Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: generation,
            last_transition_time: now,
        }),
    }
}

/// Writes the status on top of the object as read, and publishes an Event
/// when the phase changed; `false` when another writer changed the status
/// meanwhile (the reconcile then starts over from a fresh read).
///
/// A write refused because the object changed since it was read (409) is
/// made again on the object read afresh, as long as its status is still
/// the one this reconcile started from: the other writer changed only
/// metadata or spec (an annotation, a new template), which the next
/// reconcile acts on, and the acts this status records are done. Starting
/// over instead would repeat the acts, and a writer busier than one
/// reconcile (a script annotating in a loop) would starve the rollout.
async fn finish(
    api: &Api<BlueGreenDeployment>,
    bgd: &BlueGreenDeployment,
    ctx: &Context,
    before: &BlueGreenDeploymentStatus,
    after: &BlueGreenDeploymentStatus,
) -> Result<bool> {
    if before != after && !write_status(api, bgd, ctx, before, after).await? {
        return Ok(false);
    }
    if before.phase != after.phase {
        let phase = after.phase.unwrap_or(Phase::Progressing);
        let warning = matches!(phase, Phase::Degraded | Phase::RolledBack);
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: format!("{phase:?}"),
            note: after
                .message
                .clone()
                .map(|m| m.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &bgd.object_ref(&())).await {
            tracing::warn!(error = %e, "could not publish an event");
        }
    }
    Ok(true)
}

/// Rewrites of one status onto a fresh read before the reconcile starts
/// over.
const REBASES: usize = 8;

/// `after` as the object's status, rebased onto a fresh read after each
/// 409 whose object still has the status `before` (see `finish`).
async fn write_status(
    api: &Api<BlueGreenDeployment>,
    bgd: &BlueGreenDeployment,
    ctx: &Context,
    before: &BlueGreenDeploymentStatus,
    after: &BlueGreenDeploymentStatus,
) -> Result<bool> {
    let mut obj = bgd.clone();
    for _ in 0..REBASES {
        obj.status = Some(after.clone());
        match api
            .replace_status(&bgd.name_any(), &PostParams::default(), &obj)
            .await
        {
            Ok(_) => return Ok(true),
            Err(e) if is_conflict(&e) => ctx.metrics.conflicted(),
            Err(e) => return Err(e.into()),
        }
        match api.get_opt(&bgd.name_any()).await? {
            Some(fresh) if fresh.status.clone().unwrap_or_default() == *before => obj = fresh,
            _ => return Ok(false),
        }
    }
    Ok(false)
}
