//! deploy, promote, rollback and abort: each resolves what it wants, takes
//! the app's lock, and lets the engine converge.

use std::time::Duration;

use super::lifecycle::{self, Lifecycle, Source};
use super::report::{AbortReport, DeployReport};
use super::session::{self, At};
use crate::config::{Config, Loaded};
use crate::engine::{self, Outcome};
use crate::error::{Error, Result};
use crate::lock::DeployLock;
use crate::notify::EventKind;
use crate::output::Output;
use crate::plan::{rollback_target, Desired, Intent, KeptSet, Phase, RollbackTarget};
use crate::platform::docker::{DockerPlatform, Managed};
use crate::platform::Platform;
use crate::release::{self, Color, ReleaseKey};

/// What `cyan deploy` was asked for beyond the config.
pub struct DeployOptions {
    pub version: Option<String>,
    pub rollback_on_failure: bool,
    pub lock_wait: Duration,
}

pub async fn deploy(
    at: At<'_>,
    cfg: &Loaded,
    o: &DeployOptions,
    out: &Output,
) -> Result<DeployReport> {
    let version = release::resolve_version(o.version.as_deref(), &cfg.dir())?;
    let mut p = session::open(at, cfg, out).await?;
    let c = &cfg.config;
    let target = ReleaseKey {
        version: version.clone(),
        config_hash: c.runtime_hash(&p.secrets),
    };
    let desired = Desired {
        build: true,
        push: c.image.registry().is_some(),
        ..desired(c, Intent::Deploy, target, c.replicas.get())
    };
    let run = Run {
        what: format!("deploy {version}"),
        lock_wait: o.lock_wait,
        rollback_on_failure: o.rollback_on_failure,
        source: None,
    };
    run.go(&mut p, &desired, out).await
}

pub async fn promote(
    at: At<'_>,
    cfg: &Loaded,
    wait: Duration,
    out: &Output,
) -> Result<DeployReport> {
    let mut p = session::open(at, cfg, out).await?;
    let (live, other) = sides(&p).await?;
    let record = p.record().await?;
    let Some(set) = other.filter(|s| !record.was_live(&s[0].release.key())) else {
        return Err(Error::Refused(format!(
            "nothing is waiting for approval for {} (live: {})",
            cfg.config.route(),
            live.map_or("none".into(), |s| s[0].release.version.clone())
        )));
    };
    let c = &cfg.config;
    // A candidate shipped from another stage: its source is checked again
    // before the switch, and the history names it.
    let source = record
        .promotion
        .clone()
        .filter(|pr| pr.target == set[0].release.key());
    p.promoted_from = source.as_ref().map(|pr| pr.environment.clone());
    let desired = desired(c, Intent::Promote, set[0].release.key(), set.len() as u32);
    let run = Run {
        source,
        ..Run::plain(format!("promote {}", desired.target.version), wait)
    };
    run.go(&mut p, &desired, out).await
}

pub async fn rollback(
    at: At<'_>,
    cfg: &Loaded,
    to: Option<&str>,
    wait: Duration,
    out: &Output,
) -> Result<DeployReport> {
    let Rollback {
        target,
        hot_replicas,
        recorded,
        instant,
    } = plan_rollback(at, cfg, to, out).await?;
    // A release is its image and its config: whatever the rollback has to
    // start or gate again (a cold release, a kept set that lost a replica,
    // a killed rollback's set never gated) runs with the config recorded
    // at its gate, not today's.
    if hot_replicas.is_none() {
        out.warn(match &recorded {
            Some(runtime) => {
                let changes = cfg.config.runtime_changes(runtime);
                format!(
                    "{} is no longer running: cold rollback (start from its image with the config it was deployed with, gate, then switch){}",
                    target.version,
                    if changes.is_empty() {
                        String::new()
                    } else {
                        format!("; restoring {}", changes.join(", "))
                    }
                )
            }
            None => format!(
                "{} is no longer running: cold rollback with today's config (no config this cyan can read was recorded for it: it was deployed by another version of cyan)",
                target.version
            ),
        });
    }
    let restored = recorded.as_ref().map(|runtime| Loaded {
        config: cfg.config.with_runtime(runtime),
        path: cfg.path.clone(),
    });
    let unset = recorded
        .as_ref()
        .and_then(|r| unset_secret(r, &cfg.config.secrets, &target.version));
    let cfg = restored.as_ref().unwrap_or(cfg);
    let mut p = match unset {
        None => session::open(at, cfg, out).await?,
        Some(_) if instant => session::open_to_read(at, cfg, out).await?,
        Some(why) => return Err(why),
    };
    if restored.is_some()
        && hot_replicas.is_none()
        && cfg.config.runtime_hash(&p.secrets) != target.config_hash
    {
        out.warn(format!(
            "the secrets' values differ from those {} was deployed with (values are never stored): it runs with today's values",
            target.version
        ));
    }
    let desired = Desired {
        intent: Intent::Rollback,
        target,
        replicas: hot_replicas.unwrap_or(cfg.config.replicas.get()),
        preview_replicas: None,
        build: false,
        push: false,
        require_approval: false,
        keep_hot: true,
        retire_delay_ms: 0,
    };
    Run::plain(format!("rollback to {}", desired.target.version), wait)
        .go(&mut p, &desired, out)
        .await
}

/// What a rollback goes to, read before anything is locked or started.
pub(super) struct Rollback {
    pub target: ReleaseKey,
    /// Replicas of the kept set it switches to; `None`: a cold rollback.
    hot_replicas: Option<u32>,
    recorded: Option<crate::config::Runtime>,
    /// Only a switch: the kept set runs whole and passed its gate.
    instant: bool,
}

/// Reads what `cyan rollback [--to V]` would go to at `at`; `Error::Refused`
/// when there is nothing (or no `V`) to go to.
pub(super) async fn plan_rollback(
    at: At<'_>,
    cfg: &Loaded,
    to: Option<&str>,
    out: &Output,
) -> Result<Rollback> {
    let p = session::open_to_read(at, cfg, out).await?;
    let record = p.record().await?;
    let (live, other) = sides(&p).await?;
    // A kept set that runs whole and passed its gate is only switched
    // to: nothing is started, so no secret is needed.
    let instant = other.as_ref().is_some_and(|s| {
        s.iter().all(|m| m.state == "running")
            && record.gated.get(&s[0].color) == Some(&s[0].release.key())
    });
    let kept = other.as_ref().map(|s| KeptSet {
        color: s[0].color,
        release: s[0].release.key(),
        replicas: s.len() as u32,
    });
    let live = live.map(|s| s[0].release.key());
    let route = cfg.config.route();
    let RollbackTarget {
        release: target,
        kept: hot_replicas,
    } = rollback_target(&route, &record, live.as_ref(), kept.as_ref(), to)
        .map_err(Error::Refused)?;
    // Recorded by an older or newer cyan in a shape this one cannot
    // read: as if not recorded (a cold rollback with today's config).
    let recorded = crate::config::Runtime::recorded(&record, &target);
    Ok(Rollback {
        target,
        hot_replicas,
        recorded,
        instant: instant && hot_replicas.is_some(),
    })
}

/// What a command wants of `target` on Docker, as the file says: nothing
/// built or pushed (a deploy turns both on), approval and keep-hot from
/// the config, the previous color retired at once.
pub(super) fn desired(c: &Config, intent: Intent, target: ReleaseKey, replicas: u32) -> Desired {
    Desired {
        intent,
        target,
        replicas,
        preview_replicas: None,
        build: false,
        push: false,
        require_approval: c.require_approval,
        keep_hot: c.keep.hot == 1,
        retire_delay_ms: 0,
    }
}

/// A secret `runtime` names that is not in cyan's environment, as the
/// error to give: it says that `version` was deployed with it (today's
/// cyan.yaml, `today`, may not list it any more).
fn unset_secret(
    runtime: &crate::config::Runtime,
    today: &[String],
    version: &str,
) -> Option<Error> {
    let name = runtime
        .secrets
        .iter()
        .find(|name| std::env::var_os(name).is_none())?;
    Some(Error::Config(format!(
        "secret {name} is not set in the environment, and {version} was deployed with it{}: a rollback starts it with the config it ran with; export {name} and run again",
        if today.contains(name) {
            ""
        } else {
            " (today's cyan.yaml no longer lists it)"
        }
    )))
}

pub async fn abort(at: At<'_>, cfg: &Loaded, wait: Duration, out: &Output) -> Result<AbortReport> {
    let mut p = session::open(at, cfg, out).await?;
    let lock = DeployLock::acquire(&p.proxy, &cfg.config.route(), "abort", wait, out).await?;
    p.lock_token = lock.token.clone();
    let result = async {
        let (color, version) = clear_candidate(&p, out).await?;
        Ok(AbortReport {
            id: super::status::docker_id(cfg),
            message: format!("aborted {version}; live traffic was not touched"),
            aborted: version,
            color: Some(color),
        })
    }
    .await;
    lock.release().await;
    result
}

/// Removes the candidate (a set never live) beside live, under the
/// caller's lock; returns its color and version. `Error::Refused` when
/// there is none.
pub(super) async fn clear_candidate(
    p: &DockerPlatform<'_>,
    out: &Output,
) -> Result<(Color, String)> {
    let (_, other) = sides(p).await?;
    let record = p.record().await?;
    let Some(set) = other.filter(|s| !record.was_live(&s[0].release.key())) else {
        return Err(Error::Refused(format!(
            "{} has no candidate to abort",
            p.cfg.config.route()
        )));
    };
    let (color, version) = (set[0].color, set[0].release.version.clone());
    out.phase(format!("remove candidate {color} ({version})"));
    p.clear(color).await?;
    out.done(format!("removed candidate {color} ({version})"));
    Ok((color, version))
}

/// The live set and the other color's set, if they exist. The other set is
/// a previous release if its release was ever live, else a candidate.
async fn sides(p: &DockerPlatform<'_>) -> Result<(Option<Vec<Managed>>, Option<Vec<Managed>>)> {
    let live = p.route_view().await?.and_then(|v| v.state.live);
    let all = p.containers().await?;
    let set = |c: Color| {
        Some(
            all.iter()
                .filter(|m| m.color == c)
                .cloned()
                .collect::<Vec<_>>(),
        )
        .filter(|s| !s.is_empty())
    };
    let live_set = live.and_then(set);
    let other = match live {
        Some(l) => set(l.other()),
        None => Color::ALL.into_iter().find_map(set),
    };
    Ok((live_set, other))
}

/// One converge under the app's lock, with its hooks and notifications
/// (`lifecycle`), and the result it prints.
pub(super) struct Run {
    pub what: String,
    pub lock_wait: Duration,
    pub rollback_on_failure: bool,
    /// A promotion between stages: its source.
    pub source: Option<Source>,
}

impl Run {
    fn plain(what: String, lock_wait: Duration) -> Run {
        Run {
            what,
            lock_wait,
            rollback_on_failure: false,
            source: None,
        }
    }

    pub(super) async fn go(
        &self,
        p: &mut DockerPlatform<'_>,
        desired: &Desired,
        out: &Output,
    ) -> Result<DeployReport> {
        let c = &p.cfg.config;
        // A host or listen address another app serves is refused before
        // anything is built, started or locked.
        p.claim_route().await?;
        let lock =
            DeployLock::acquire(&p.proxy, &c.route(), &self.what, self.lock_wait, out).await?;
        p.lock_token = lock.token.clone();
        if let Some(promotion) = &self.source {
            let kept = promotion.clone();
            p.update_record(|r| r.promotion = Some(kept)).await?;
        }
        let previous = p.record().await?.live_releases().first().map(|r| r.key());
        let p = &*p;
        let life = Lifecycle {
            source: self.source.clone(),
            ..Lifecycle::new(p, previous.clone())
        };
        if desired.intent == Intent::Deploy {
            life.notify(EventKind::Started, desired, None).await;
        }
        let mut outcome = engine::converge(p, desired, &life, out).await;
        if let Ok(Outcome::Done) = outcome {
            if desired.intent != Intent::Rollback {
                if let Err(e) = life.once("post_deploy", desired, None).await {
                    outcome = Err(e);
                }
            }
        }
        if let (Err(e), true) = (&outcome, self.rollback_on_failure) {
            if let Some(note) = switch_back(p, desired, &life, out).await {
                outcome = Err(e.annotate(&note));
            }
        }
        match &outcome {
            Ok(Outcome::Done) if self.source.is_some() => {
                life.notify(EventKind::Promoted, desired, None).await
            }
            Ok(Outcome::AwaitingApproval(_)) => {
                life.notify(EventKind::AwaitingApproval, desired, None)
                    .await
            }
            Ok(Outcome::Done) => {}
            Err(e @ Error::VerifyFailed(_)) => {
                life.notify(EventKind::VerifyFailed, desired, Some(e.to_string()))
                    .await;
                life.event("on_rollback", desired, Some(&e.to_string()))
                    .await;
            }
            Err(e) => {
                life.notify(EventKind::Failed, desired, Some(e.to_string()))
                    .await;
                life.event("on_failure", desired, Some(&e.to_string()))
                    .await;
            }
        }
        let notified = life.notifier.finish(lifecycle::NOTIFY_BOUND).await;
        if !notified.is_empty() {
            for n in notified.iter().filter(|n| !n.delivered) {
                out.warn(format!(
                    "notification {} to {} not delivered: {}",
                    n.event, n.destination, n.detail
                ));
            }
            let values = notified
                .iter()
                .map(|n| serde_json::to_value(n).expect("an outcome serializes"));
            let kept = p
                .update_record(|r| {
                    r.notifications.extend(values);
                    let excess = r
                        .notifications
                        .len()
                        .saturating_sub(crate::record::HISTORY_LIMIT);
                    r.notifications.drain(..excess);
                })
                .await;
            if let Err(e) = kept {
                out.warn(format!("could not record the notifications' outcomes: {e}"));
            }
        }
        lock.release().await;
        report(p, desired, outcome?, previous, notified).await
    }
}

/// What a converge that ended with `outcome` leaves, as the command's
/// result: `previous` is the release that was live before it.
pub(super) async fn report(
    p: &DockerPlatform<'_>,
    desired: &Desired,
    outcome: Outcome,
    previous: Option<ReleaseKey>,
    notified: Vec<crate::notify::Outcome>,
) -> Result<DeployReport> {
    let c = &p.cfg.config;
    let observed = p.observe(desired).await?;
    let color = match outcome {
        Outcome::Done => observed.live,
        Outcome::AwaitingApproval(c) => Some(c),
    };
    let containers = p.containers().await?;
    let release_in = |col: Option<Color>| {
        containers
            .iter()
            .find(|m| Some(m.color) == col)
            .map(|m| m.release.clone())
    };
    let release = release_in(color);
    let previous = previous.filter(|k| *k != desired.target);
    // The previous release is hot when the other color still runs it.
    let previous_color = color
        .map(Color::other)
        .filter(|col| previous.is_some() && release_in(Some(*col)).map(|r| r.key()) == previous);
    // The next commands the result suggests name the environment too.
    let config_path = match c.environments.is_empty() {
        true => p.cfg.path.display().to_string(),
        false => format!("{} -e {}", p.cfg.path.display(), c.environment),
    };
    // The switch is done: a proxy that does not answer now costs the
    // URL its port, never the deploy its success.
    let url = c.url(&p.proxy.health().await.unwrap_or_default());
    let done = outcome == Outcome::Done;
    Ok(DeployReport {
        id: super::status::docker_id(p.cfg),
        intent: desired.intent,
        phase: if done {
            Phase::Live
        } else {
            Phase::AwaitingApproval
        },
        version: desired.target.version.clone(),
        revision: release.as_ref().map(|r| r.revision),
        color,
        url,
        image: c.image.tag(&desired.target.version),
        digest: release.as_ref().and_then(|r| r.digest.clone()),
        image_id: release.map(|r| r.image_id),
        previous_version: previous.map(|k| k.version),
        previous_color,
        rollback_command: (done && previous_color.is_some())
            .then(|| format!("cyan rollback -c {config_path}")),
        verify: p.verdict.lock().expect("verdict lock").take(),
        notifications: notified,
        config_path,
        fleet: None,
    })
}

/// `--rollback-on-failure`: the deploy failed; if traffic is on the new
/// release, converge back to the release that was live before. Returns what
/// it did, for the error message; `None` when traffic never moved (a failed
/// gate, or a verify breach that already switched back).
pub(super) async fn switch_back(
    p: &DockerPlatform<'_>,
    failed: &Desired,
    life: &impl engine::Around,
    out: &Output,
) -> Option<String> {
    let on_target = match p.observe(failed).await {
        Ok(o) => {
            o.live
                .and_then(|l| o.sets.get(&l))
                .and_then(|s| s.release.clone())
                == Some(failed.target.clone())
        }
        Err(e) => return Some(format!("could not check where traffic is: {e}")),
    };
    if !on_target {
        return None;
    }
    let previous = match p.record().await {
        Ok(r) => r
            .rollback_targets()
            .into_iter()
            .map(|r| r.key())
            .find(|k| *k != failed.target),
        Err(e) => return Some(format!("could not read the history: {e}")),
    };
    let Some(target) = previous else {
        return Some("there is no previous release to roll back to".into());
    };
    out.warn(format!(
        "deploy failed after the switch; rolling back to {}",
        target.version
    ));
    let back = Desired {
        intent: Intent::Rollback,
        target: target.clone(),
        build: false,
        push: false,
        require_approval: false,
        keep_hot: true,
        retire_delay_ms: 0,
        ..failed.clone()
    };
    match engine::converge(p, &back, life, out).await {
        Ok(_) => Some(format!("rolled back: {} is live again", target.version)),
        Err(e) => Some(format!(
            "the rollback to {} failed too: {e}",
            target.version
        )),
    }
}
