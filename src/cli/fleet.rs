//! The app commands on a fleet (cyan.yaml's `hosts:`): every host moves
//! from blue to green together, and back together.
//!
//! A deploy is two phases, as a two-phase commit:
//!
//! 1. **Prepare** on every host (at most `fleet.parallel` at once): connect,
//!    ship the one image built here, take the host's deploy lock, and
//!    converge to the point before the switch (the candidate gated, as if
//!    it waited for approval). A host that cannot be reached, or whose gate
//!    fails, stops the deploy before any switch: candidates are removed
//!    everywhere, live traffic is untouched, and the error names the host.
//! 2. **Commit**: every host's switch request is written ahead, then all
//!    are sent at once; the spread from the first request to the last
//!    answer is the skew, reported. A host whose switch fails has the others
//!    switched back. The verify window then judges the sum of every host's
//!    counts, and a failure switches every host back.
//!
//! Each host keeps its own record and lock in its own proxy, so a killed
//! deploy run again converges on every host, as on one. Rollback, abort,
//! status, history and remove are the one-host commands run on every host
//! at once (`session::At::Host`).

use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use futures_util::stream::{self, StreamExt};

use super::converge::{self, DeployOptions};
use super::report::{
    AbortReport, DeployReport, FleetReport, History, HostPart, HostStatus, StatusReport,
};
use super::session::{self, At};
use super::status;
use crate::config::{Loaded, Strategy};
use crate::engine::{self, Bare, Outcome};
use crate::error::{Error, Result};
use crate::fleet::{self, Host};
use crate::lock::DeployLock;
use crate::output::Output;
use crate::plan::{Desired, Intent, Step};
use crate::platform::docker::{self, DockerPlatform};
use crate::platform::Platform;
use crate::release::{self, Color, ReleaseKey};

/// Connects to every host (at most `fleet.parallel` at once). Errors
/// naming every host that could not be reached, and why.
pub async fn connect(cfg: &Loaded, out: &Output) -> Result<Vec<Host>> {
    let c = &cfg.config;
    out.phase(format!("connect to {} hosts", c.hosts.len()));
    let results = bounded(
        cfg,
        c.hosts.iter().map(|h| async move {
            let o = out.for_host(&h.name);
            Host::connect(h, cfg, &o).await
        }),
    )
    .await;
    let mut hosts = Vec::new();
    let mut failed = Vec::new();
    for r in results {
        match r {
            Ok(h) => hosts.push(h),
            Err(e) => failed.push(e.to_string()),
        }
    }
    if !failed.is_empty() {
        return Err(Error::Unreachable(format!(
            "{} of {} hosts cannot be reached, so nothing was changed on any host:\n  {}\n(to act on the others only: --hosts {})",
            failed.len(),
            c.hosts.len(),
            failed.join("\n  "),
            hosts.iter().map(|h: &Host| h.name.as_str()).collect::<Vec<_>>().join(",")
        )));
    }
    out.done(format!(
        "connected to {}",
        hosts
            .iter()
            .map(|h| h.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(hosts)
}

/// Runs `jobs` with at most `fleet.parallel` at once, keeping their order.
async fn bounded<T>(cfg: &Loaded, jobs: impl Iterator<Item = impl Future<Output = T>>) -> Vec<T> {
    let n = cfg.config.fleet.parallel.get() as usize;
    stream::iter(jobs).buffered(n).collect().await
}

/// One host in a deploy: its platform, its lock, its output.
struct Member<'a> {
    host: &'a Host,
    p: DockerPlatform<'a>,
    lock: Option<DeployLock>,
    out: &'a Output,
    /// The release live there before this command.
    previous: Option<ReleaseKey>,
    /// The live color before this command.
    was_live: Option<Color>,
}

/// `cyan deploy` on a fleet.
pub async fn deploy(cfg: &Loaded, o: &DeployOptions, out: &Output) -> Result<DeployReport> {
    let c = &cfg.config;
    let version = release::resolve_version(o.version.as_deref(), &cfg.dir())?;
    let hosts = connect(cfg, out).await?;
    let local = docker::connect().await?;
    let image = fleet::local_image(&local, cfg, &version, out).await?;
    out.phase(format!(
        "ship {} to {} hosts",
        c.image.tag(&version),
        hosts.len()
    ));
    let shipped = bounded(
        cfg,
        hosts
            .iter()
            .map(|h| fleet::ship(&local, &image, h, cfg, &version, out)),
    )
    .await;
    first_error(
        hosts.iter().map(|h| h.name.as_str()),
        &shipped,
        "nothing was started or switched on any host",
    )?;
    out.done(format!("{} is on every host", c.image.tag(&version)));
    let outs: Vec<Output> = hosts.iter().map(|h| out.for_host(&h.name)).collect();
    let members = open(
        &hosts,
        &outs,
        cfg,
        &format!("deploy {version}"),
        o.lock_wait,
    )
    .await?;
    let target = ReleaseKey {
        version,
        config_hash: c.runtime_hash(&members[0].p.secrets),
    };
    let desired = converge::desired(c, Intent::Deploy, target, c.replicas.get());
    let result = walk(&members, &desired, cfg, out).await;
    finish(members, Intent::Deploy, result).await
}

/// `cyan promote` on a fleet: the candidates waiting for approval go live
/// on every host together.
pub async fn promote(cfg: &Loaded, wait: Duration, out: &Output) -> Result<DeployReport> {
    let c = &cfg.config;
    let hosts = connect(cfg, out).await?;
    let outs: Vec<Output> = hosts.iter().map(|h| out.for_host(&h.name)).collect();
    let members = open(&hosts, &outs, cfg, "promote", wait).await?;
    // The candidate waiting on any host (a host that lost its own gets it
    // again by the prepare).
    let target = async {
        for m in &members {
            let record = m.p.record().await?;
            let sets = m.p.containers().await?;
            let waiting = sets
                .iter()
                .find(|s| Some(s.color) != m.was_live && !record.was_live(&s.release.key()));
            if let Some(s) = waiting {
                return Ok(s.release.key());
            }
        }
        Err(Error::Refused(format!(
            "nothing is waiting for approval for {} on any host",
            c.route()
        )))
    }
    .await;
    let result = match target {
        Ok(target) => {
            let desired = converge::desired(c, Intent::Promote, target, c.replicas.get());
            walk(&members, &desired, cfg, out).await
        }
        Err(e) => Err(e),
    };
    finish(members, Intent::Promote, result).await
}

/// Opens every host's platform and takes its lock, the route claimed
/// first. On an error the locks taken are released.
async fn open<'a>(
    hosts: &'a [Host],
    outs: &'a [Output],
    cfg: &'a Loaded,
    what: &str,
    wait: Duration,
) -> Result<Vec<Member<'a>>> {
    let opened = join_all(hosts.iter().zip(outs).map(|(h, out)| async move {
        let mut p = session::open(At::Host(h), cfg, out).await?;
        p.claim_route().await?;
        let lock = DeployLock::acquire(&p.proxy, &cfg.config.route(), what, wait, out).await?;
        p.lock_token = lock.token.clone();
        // The first host judges the verify window over every host's traffic.
        if std::ptr::eq(h, &hosts[0]) {
            p.peers = hosts[1..].iter().map(|o| o.proxy.clone()).collect();
        }
        let record = p.record().await?;
        let was_live = p.route_view().await?.and_then(|v| v.state.live);
        Ok(Member {
            host: h,
            previous: record.live_releases().first().map(|r| r.key()),
            was_live,
            p,
            lock: Some(lock),
            out,
        })
    }))
    .await;
    let mut members = Vec::new();
    let mut failed = Vec::new();
    for (r, h) in opened.into_iter().zip(hosts) {
        match r {
            Ok(m) => members.push(m),
            Err(e) => failed.push((h.name.as_str(), e)),
        }
    }
    if failed.is_empty() {
        return Ok(members);
    }
    release(&mut members).await;
    let failed: Vec<(&str, &Error)> = failed.iter().map(|(h, e)| (*h, e)).collect();
    Err(failed_on(&failed, "nothing was changed on any host"))
}

async fn release(members: &mut [Member<'_>]) {
    join_all(
        members
            .iter_mut()
            .filter_map(|m| m.lock.take())
            .map(DeployLock::release),
    )
    .await;
}

/// What the commit did, for the report.
struct Committed {
    /// Per member: when its switch was answered, after the first request.
    at: Vec<Option<Duration>>,
    skew: Option<Duration>,
}

/// The fleet's walk to `desired`, as `fleet.strategy` says.
async fn walk(
    members: &[Member<'_>],
    desired: &Desired,
    cfg: &Loaded,
    out: &Output,
) -> Result<(Outcome, Committed)> {
    match cfg.config.fleet.strategy {
        Strategy::Together => together(members, desired, out).await,
        Strategy::Rolling => rolling(members, desired, cfg, out).await,
    }
}

/// Prepare on every host, then commit on every host, then verify and
/// finish on every host.
async fn together(
    members: &[Member<'_>],
    desired: &Desired,
    out: &Output,
) -> Result<(Outcome, Committed)> {
    let prepare = Desired {
        intent: Intent::Deploy,
        require_approval: true,
        ..desired.clone()
    };
    out.phase(format!(
        "prepare {} on {} hosts (start, gate)",
        desired.target.version,
        members.len()
    ));
    let cfg = members[0].p.cfg;
    let prepared = bounded(cfg, members.iter().map(|m| prepare_one(m, &prepare))).await;
    let why = failures(members.iter().map(|m| m.host.name.as_str()), &prepared);
    if !why.is_empty() {
        out.warn(format!(
            "{} of {} hosts failed to prepare; removing the candidates everywhere, switching nothing",
            why.len(),
            members.len()
        ));
        join_all(members.iter().map(|m| async move {
            // A host whose gate failed has removed its own.
            let _ = converge::clear_candidate(&m.p, m.out).await;
        }))
        .await;
        return Err(failed_on(
            &why,
            "nothing was switched on any host; live traffic is untouched",
        ));
    }
    let colors: Vec<Option<Color>> = prepared.into_iter().map(|r| r.expect("checked")).collect();
    out.done(format!("{} gated on every host", desired.target.version));
    let waiting = colors.iter().flatten().next().copied();
    if let (Some(color), true) = (
        waiting,
        desired.require_approval && desired.intent == Intent::Deploy,
    ) {
        let at = vec![None; members.len()];
        return Ok((
            Outcome::AwaitingApproval(color),
            Committed { at, skew: None },
        ));
    }
    let committed = commit(members, &colors, desired, out).await?;
    let finish = Desired {
        require_approval: false,
        ..desired.clone()
    };
    let results = settle(members, &finish).await;
    let why = failures(members.iter().map(|m| m.host.name.as_str()), &results);
    if !why.is_empty() {
        let back = join_all(
            members
                .iter()
                .map(|m| converge::switch_back(&m.p, &finish, &Bare, m.out)),
        )
        .await;
        let back: Vec<String> = back
            .into_iter()
            .zip(members.iter())
            .filter_map(|(note, m)| note.map(|n| format!("{}: {n}", m.host.name)))
            .collect();
        let after = match back.is_empty() {
            true => "every host is back on its previous release".to_string(),
            false => format!("switching back: {}", back.join("; ")),
        };
        return Err(failed_on(&why, &after));
    }
    // A host a stopped rolling deploy left out of the balancer comes back.
    let back_in = join_all(members.iter().map(|m| set_draining(m, false))).await;
    first_error(
        members.iter().map(|m| m.host.name.as_str()),
        &back_in,
        "the release is live on every host",
    )?;
    Ok((Outcome::Done, committed))
}

/// `strategy: rolling`: `fleet.batch` hosts at a time, each out of the
/// load balancer (`/cyan/up` answers 503) for `fleet.drain_wait` before
/// its switch, back in after it, then verified on its own traffic with its
/// previous release stopped. A failure stops the walk: the hosts done run
/// the new release, the failing one its old one, back in the balancer,
/// and the rest are untouched; the error says which are which.
async fn rolling(
    members: &[Member<'_>],
    desired: &Desired,
    cfg: &Loaded,
    out: &Output,
) -> Result<(Outcome, Committed)> {
    let fleet = &cfg.config.fleet;
    let wait = fleet.drain_wait.0;
    // Each host gates, switches, then is verified and runs one version.
    let prepare = Desired {
        intent: Intent::Deploy,
        require_approval: true,
        keep_hot: false,
        ..desired.clone()
    };
    let finish = Desired {
        require_approval: false,
        keep_hot: false,
        ..desired.clone()
    };
    if desired.require_approval && desired.intent == Intent::Deploy {
        // Nothing to roll until the approval: every host prepares now.
        return together(members, desired, out).await;
    }
    let t0 = Instant::now();
    let mut at = vec![None; members.len()];
    let order: Vec<usize> = (0..members.len()).collect();
    for batch in order.chunks(fleet.batch.get() as usize) {
        let names = batch
            .iter()
            .map(|&i| members[i].host.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let done_so_far = |at: &[Option<Duration>]| {
            let done: Vec<&str> = members
                .iter()
                .zip(at)
                .filter(|(_, a)| a.is_some())
                .map(|(m, _)| m.host.name.as_str())
                .collect();
            match done.len() {
                0 => "no host runs it yet".to_string(),
                1 => format!("{} runs it", done[0]),
                _ => format!("{} run it", done.join(", ")),
            }
        };
        out.phase(format!(
            "{names}: out of the load balancer for {}",
            fleet.drain_wait
        ));
        let names_of = |i: &usize| members[*i].host.name.as_str();
        let drained = join_all(batch.iter().map(|&i| set_draining(&members[i], true))).await;
        let failed = failures(batch.iter().map(names_of), &drained);
        if !failed.is_empty() {
            join_all(batch.iter().map(|&i| set_draining(&members[i], false))).await;
            return Err(failed_on(
                &failed,
                &format!("the rollout stopped before it ({})", done_so_far(&at)),
            ));
        }
        tokio::time::sleep(wait).await;
        out.done(format!("{names}: out of the load balancer"));
        let switched = join_all(batch.iter().map(|&i| {
            let (m, prepare, finish) = (&members[i], &prepare, &finish);
            async move {
                let Some(color) = prepare_one(m, prepare).await? else {
                    return Ok(None);
                };
                let req = m.p.prepare_switch(color, finish).await?;
                m.p.commit_switch(&req).await?;
                m.out.done(format!("switched to {color}"));
                Ok::<_, Error>(Some(t0.elapsed()))
            }
        }))
        .await;
        // Back in, switched or not: a host that failed serves its old release.
        let back_in = join_all(batch.iter().map(|&i| set_draining(&members[i], false))).await;
        let failed = failures(batch.iter().map(names_of), &switched);
        if !failed.is_empty() {
            return Err(failed_on(
                &failed,
                &format!(
                    "it keeps its live release; the rollout stopped ({})",
                    done_so_far(&at)
                ),
            ));
        }
        for (&i, r) in batch.iter().zip(&switched) {
            at[i] = *r.as_ref().expect("checked");
        }
        let failed = failures(batch.iter().map(names_of), &back_in);
        if !failed.is_empty() {
            return Err(failed_on(
                &failed,
                "it is still out of the load balancer; run the deploy again",
            ));
        }
        out.phase(format!("{names}: back in the load balancer; verify"));
        tokio::time::sleep(wait).await;
        let settled = join_all(
            batch
                .iter()
                .map(|&i| engine::converge(&members[i].p, &finish, &Bare, members[i].out)),
        )
        .await;
        let failed = failures(batch.iter().map(names_of), &settled);
        if !failed.is_empty() {
            return Err(failed_on(
                &failed,
                &format!("the rollout stopped ({})", done_so_far(&at)),
            ));
        }
        out.done(format!("{names}: {} live", desired.target.version));
    }
    Ok((Outcome::Done, Committed { at, skew: None }))
}

/// Takes a host's route out of the load balancer, or puts it back; nothing
/// where the route serves nothing yet (a first deploy).
async fn set_draining(m: &Member<'_>, draining: bool) -> Result<()> {
    let route = m.p.route();
    match m.p.route_view().await? {
        Some(v) if v.state.live.is_some() && v.state.draining != draining => {
            Ok(m.p.proxy.set_draining(&route, draining).await?)
        }
        _ => Ok(()),
    }
}

/// After the switch, on every host: the verify window, judged by the first
/// host over every host's traffic (`peers`) and adopted by the others,
/// then the rest of the converge (the previous color retired or kept).
async fn settle(members: &[Member<'_>], finish: &Desired) -> Vec<Result<()>> {
    let judge = &members[0];
    let judged = engine::converge(&judge.p, finish, &Bare, judge.out)
        .await
        .map(drop);
    let verdict = judge.p.verdict.lock().expect("verdict lock").clone();
    let judged_ok = judged.is_ok();
    let why = judged
        .as_ref()
        .err()
        .map(ToString::to_string)
        .unwrap_or_default();
    let others = join_all(members[1..].iter().map(|m| {
        let (verdict, why) = (&verdict, &why);
        async move {
            if let Some(figures) = verdict {
                m.p.adopt_verdict(figures, why).await?;
            }
            match judged_ok {
                true => engine::converge(&m.p, finish, &Bare, m.out).await.map(drop),
                false => Ok(()),
            }
        }
    }))
    .await;
    std::iter::once(judged).chain(others).collect()
}

/// One host's prepare: its candidate's color, gated; `None` when the
/// target is live there already (a re-run after a kill).
async fn prepare_one(m: &Member<'_>, prepare: &Desired) -> Result<Option<Color>> {
    let observed = m.p.observe(prepare).await?;
    let live_release = observed
        .live
        .and_then(|l| observed.sets.get(&l))
        .and_then(|s| s.release.clone());
    if live_release.as_ref() == Some(&prepare.target) {
        m.out
            .detail(format!("{} is live here already", prepare.target.version));
        return Ok(None);
    }
    match engine::converge(&m.p, prepare, &Bare, m.out).await? {
        Outcome::AwaitingApproval(c) => Ok(Some(c)),
        Outcome::Done => Ok(None),
    }
}

/// Sends every prepared host's switch at once. A failure switches the
/// hosts that did switch back to their previous color.
async fn commit(
    members: &[Member<'_>],
    colors: &[Option<Color>],
    desired: &Desired,
    out: &Output,
) -> Result<Committed> {
    let requests = join_all(members.iter().zip(colors).map(|(m, c)| async move {
        match c {
            Some(c) => m.p.prepare_switch(*c, desired).await.map(Some),
            None => Ok(None),
        }
    }))
    .await;
    let failed = failures(members.iter().map(|m| m.host.name.as_str()), &requests);
    if !failed.is_empty() {
        return Err(failed_on(&failed, "nothing was switched on any host"));
    }
    let reqs: Vec<_> = requests.into_iter().map(|r| r.expect("checked")).collect();
    if reqs.iter().all(Option::is_none) {
        out.detail(format!(
            "{} is live on every host already",
            desired.target.version
        ));
        return Ok(Committed {
            at: vec![None; members.len()],
            skew: None,
        });
    }
    out.phase(format!(
        "switch {} hosts to {}",
        reqs.iter().flatten().count(),
        desired.target.version
    ));
    let t0 = Instant::now();
    let sent = join_all(members.iter().zip(&reqs).map(|(m, req)| async move {
        match req {
            Some(req) => Some(m.p.commit_switch(req).await.map(|_| t0.elapsed())),
            None => None,
        }
    }))
    .await;
    let at: Vec<Option<Duration>> = sent
        .iter()
        .map(|r| r.as_ref().and_then(|r| r.as_ref().ok().copied()))
        .collect();
    let skew = at.iter().flatten().max().copied();
    let sent: Vec<Result<()>> = sent
        .into_iter()
        .map(|r| r.map_or(Ok(()), |r| r.map(drop)))
        .collect();
    let failed = failures(members.iter().map(|m| m.host.name.as_str()), &sent);
    if failed.is_empty() {
        out.done(format!(
            "switched every host to {} (skew {})",
            desired.target.version,
            skew.map_or("none".into(), fmt_ms)
        ));
        return Ok(Committed { at, skew });
    }
    out.warn(format!(
        "the switch failed on {}; switching the others back",
        failed.len()
    ));
    let back = Desired {
        intent: Intent::Rollback,
        ..desired.clone()
    };
    let undone = join_all(members.iter().zip(&at).map(|(m, at)| {
        let back = &back;
        async move {
            let (Some(_), Some(prev)) = (at, m.was_live) else {
                return None;
            };
            Some(match m.p.act(&Step::Switch(prev), back).await {
                Ok(()) => format!("{} switched back to {prev}", m.host.name),
                Err(e) => format!("{} could not switch back to {prev}: {e}", m.host.name),
            })
        }
    }))
    .await;
    let undone: Vec<String> = undone.into_iter().flatten().collect();
    Err(failed_on(
        &failed,
        &match undone.is_empty() {
            true => "no other host had switched".to_string(),
            false => undone.join("; "),
        },
    ))
}

/// Releases every lock, then reports: the first host's report with every
/// host's part.
async fn finish(
    mut members: Vec<Member<'_>>,
    intent: Intent,
    result: Result<(Outcome, Committed)>,
) -> Result<DeployReport> {
    release(&mut members).await;
    let (outcome, committed) = result?;
    let mut parts = Vec::new();
    for (m, at) in members.iter().zip(&committed.at) {
        let sets = m.p.containers().await?;
        let live = m.p.route_view().await?.and_then(|v| v.state.live);
        let color = match outcome {
            Outcome::Done => live,
            Outcome::AwaitingApproval(_) => {
                sets.iter().find(|s| Some(s.color) != live).map(|s| s.color)
            }
        };
        parts.push(HostPart {
            name: m.host.name.clone(),
            url: m.host.url.clone(),
            color,
            outcome: match (outcome, at) {
                (Outcome::AwaitingApproval(_), _) => "awaiting-approval",
                (Outcome::Done, Some(_)) => "switched",
                (Outcome::Done, None) => "live",
            }
            .into(),
            switched_at_ms: at.map(as_ms),
        });
    }
    let m = &members[0];
    let first_color = parts[0].color.unwrap_or(Color::Green);
    let target =
        m.p.containers()
            .await?
            .into_iter()
            .find(|s| s.color == first_color)
            .map(|s| s.release.key())
            .ok_or_else(|| {
                Error::Platform(format!("{}: nothing runs on {first_color}", m.host.name))
            })?;
    let desired = converge::desired(&m.p.cfg.config, intent, target, 1);
    let outcome = match outcome {
        Outcome::AwaitingApproval(_) => Outcome::AwaitingApproval(first_color),
        done => done,
    };
    let mut report =
        converge::report(&m.p, &desired, outcome, m.previous.clone(), Vec::new()).await?;
    report.fleet = Some(FleetReport {
        hosts: parts,
        skew_ms: committed.skew.map(as_ms),
    });
    Ok(report)
}

/// `cyan rollback` on every host at once.
pub async fn rollback(
    cfg: &Loaded,
    to: Option<&str>,
    wait: Duration,
    out: &Output,
) -> Result<DeployReport> {
    let hosts = connect(cfg, out).await?;
    let outs: Vec<Output> = hosts.iter().map(|h| out.for_host(&h.name)).collect();
    // One release for the whole fleet: `--to`, else what the first host
    // would go back to; every host must have it before any moves.
    let version = match to {
        Some(v) => v.to_string(),
        None => {
            converge::plan_rollback(At::Host(&hosts[0]), cfg, None, &outs[0])
                .await
                .map_err(|e| e.with_text(format!("{}: {e}", hosts[0].name)))?
                .target
                .version
        }
    };
    let planned = join_all(
        hosts
            .iter()
            .zip(&outs)
            .map(|(h, o)| converge::plan_rollback(At::Host(h), cfg, Some(&version), o)),
    )
    .await;
    first_error(
        hosts.iter().map(|h| h.name.as_str()),
        &planned,
        &format!(
            "nothing was rolled back on any host: every host goes back to {version} or none does"
        ),
    )?;
    let to = Some(version.as_str());
    let t0 = Instant::now();
    let results = join_all(hosts.iter().zip(&outs).map(|(h, o)| async move {
        let r = converge::rollback(At::Host(h), cfg, to, wait, o).await;
        (r, t0.elapsed())
    }))
    .await;
    let (results, times): (Vec<_>, Vec<_>) = results.into_iter().unzip();
    let failed = failures(hosts.iter().map(|h| h.name.as_str()), &results);
    if !failed.is_empty() {
        return Err(failed_on(
            &failed,
            "the other hosts rolled back; run cyan rollback again once the host answers (cyan status shows who is behind)",
        ));
    }
    let mut reports: Vec<(DeployReport, Duration)> = results
        .into_iter()
        .map(|r| r.expect("checked"))
        .zip(times)
        .collect();
    let parts = reports
        .iter()
        .zip(&hosts)
        .map(|((r, t), h)| HostPart {
            name: h.name.clone(),
            url: h.url.clone(),
            color: r.color,
            outcome: "rolled-back".into(),
            switched_at_ms: Some(as_ms(*t)),
        })
        .collect();
    let (mut report, _) = reports.remove(0);
    report.url = String::new();
    report.fleet = Some(FleetReport {
        hosts: parts,
        skew_ms: None,
    });
    Ok(report)
}

/// `cyan abort` on every host at once; hosts without a candidate are
/// passed over.
pub async fn abort(cfg: &Loaded, wait: Duration, out: &Output) -> Result<AbortReport> {
    let hosts = connect(cfg, out).await?;
    let outs: Vec<Output> = hosts.iter().map(|h| out.for_host(&h.name)).collect();
    let results = join_all(
        hosts
            .iter()
            .zip(&outs)
            .map(|(h, o)| converge::abort(At::Host(h), cfg, wait, o)),
    )
    .await;
    let failed: Vec<_> = failures(hosts.iter().map(|h| h.name.as_str()), &results)
        .into_iter()
        .filter(|(_, e)| !matches!(e, Error::Refused(_)))
        .collect();
    if !failed.is_empty() {
        return Err(failed_on(&failed, "live traffic was not touched"));
    }
    results.into_iter().find_map(Result::ok).ok_or_else(|| {
        Error::Refused(format!(
            "{} has no candidate to abort on any host",
            cfg.config.route()
        ))
    })
}

/// `cyan status` of every host: the first host's report, with every
/// host's line. A host that cannot be reached is a line, not an error.
pub async fn status(cfg: &Loaded, out: &Output) -> Result<StatusReport> {
    let c = &cfg.config;
    let results = bounded(
        cfg,
        c.hosts.iter().map(|e| async move {
            let o = out.for_host(&e.name);
            let h = Host::connect(e, cfg, &o).await?;
            status::status(At::Host(&h), cfg, &o).await
        }),
    )
    .await;
    let versions: Vec<Option<String>> = results
        .iter()
        .map(|r| r.as_ref().ok().and_then(|s| s.version.clone()))
        .collect();
    let fleet_version = most_common(&versions);
    let mut lines = Vec::new();
    let mut first = None;
    // Every host's warnings and drift, each naming its host.
    let (mut warnings, mut drift) = (Vec::new(), Vec::new());
    for (r, e) in results.into_iter().zip(&c.hosts) {
        match r {
            Ok(s) => {
                warnings.extend(s.warnings.iter().map(|w| format!("{}: {w}", e.name)));
                drift.extend(s.drift.iter().map(|d| format!("{}: {d}", e.name)));
                lines.push(HostStatus {
                    name: e.name.clone(),
                    url: e.url.to_string(),
                    phase: Some(s.phase),
                    version: s.version.clone(),
                    behind: s.version != fleet_version,
                    error: None,
                });
                first.get_or_insert(s);
            }
            Err(err) => lines.push(HostStatus {
                name: e.name.clone(),
                url: e.url.to_string(),
                phase: None,
                version: None,
                behind: true,
                error: Some(err.to_string()),
            }),
        }
    }
    let Some(mut report) = first else {
        return Err(Error::Unreachable(format!(
            "no host of {} answers:\n  {}",
            c.route(),
            lines
                .iter()
                .map(|l| format!("{}: {}", l.name, l.error.as_deref().unwrap_or("")))
                .collect::<Vec<_>>()
                .join("\n  ")
        )));
    };
    report.warnings = warnings;
    report.drift = drift;
    if lines.iter().any(|l| l.behind) {
        report.warnings.push(format!(
            "not every host runs {}: {}",
            fleet_version.as_deref().unwrap_or("one release"),
            lines
                .iter()
                .filter(|l| l.behind)
                .map(|l| l.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    report.hosts = lines;
    report.url = String::new();
    Ok(report)
}

/// `cyan history` of the first host that answers (every host keeps its own).
pub async fn history(cfg: &Loaded, out: &Output) -> Result<History> {
    let mut last = None;
    for e in &cfg.config.hosts {
        let o = out.for_host(&e.name);
        match Host::connect(e, cfg, &o).await {
            Ok(h) => return status::history(At::Host(&h), cfg, out).await,
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| Error::Config("no hosts".into())))
}

/// `cyan remove` on every host at once.
pub async fn remove(cfg: &Loaded, yes: bool, wait: Duration, out: &Output) -> Result<()> {
    let hosts = connect(cfg, out).await?;
    let outs: Vec<Output> = hosts.iter().map(|h| out.for_host(&h.name)).collect();
    let results = join_all(
        hosts
            .iter()
            .zip(&outs)
            .map(|(h, o)| super::remove::remove(At::Host(h), cfg, yes, wait, o)),
    )
    .await;
    let after = match yes {
        true => "the other hosts removed it",
        false => "nothing was removed on any host",
    };
    first_error(hosts.iter().map(|h| h.name.as_str()), &results, after)
}

/// The failures of a per-host step, each with its host's name.
fn failures<'r, T>(
    names: impl Iterator<Item = &'r str>,
    results: &'r [Result<T>],
) -> Vec<(&'r str, &'r Error)> {
    names
        .zip(results)
        .filter_map(|(n, r)| r.as_ref().err().map(|e| (n, e)))
        .collect()
}

/// `Err` naming every host (by `names`, in the order of `results`) that
/// failed, when any did.
fn first_error<'n, T>(
    names: impl Iterator<Item = &'n str>,
    results: &'n [Result<T>],
    after: &str,
) -> Result<()> {
    let failed = failures(names, results);
    match failed.is_empty() {
        true => Ok(()),
        false => Err(failed_on(&failed, after)),
    }
}

/// One error for failures on several hosts: the first one's kind (so the
/// exit code says what failed), every host's words, and what became of
/// the rest.
fn failed_on(failed: &[(&str, &Error)], after: &str) -> Error {
    let each: Vec<String> = failed.iter().map(|(h, e)| format!("{h}: {e}")).collect();
    let text = format!(
        "failed on {} host(s): {}; {after}",
        failed.len(),
        each.join("; ")
    );
    failed[0].1.with_text(text)
}

fn most_common(values: &[Option<String>]) -> Option<String> {
    let mut best: Option<(&Option<String>, usize)> = None;
    for v in values.iter().filter(|v| v.is_some()) {
        let n = values.iter().filter(|o| *o == v).count();
        if best.is_none_or(|(_, b)| n > b) {
            best = Some((v, n));
        }
    }
    best.and_then(|(v, _)| v.clone())
}

fn as_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0
}

fn fmt_ms(d: Duration) -> String {
    format!("{:.1} ms", as_ms(d))
}
