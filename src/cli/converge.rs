//! deploy, promote, rollback and abort: each resolves what it wants, takes
//! the app's lock, and lets the engine converge.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::session;
use crate::engine::{self, Outcome};
use crate::error::{Error, Result};
use crate::lock::DeployLock;
use crate::output::Output;
use crate::plan::{Desired, Intent};
use crate::platform::docker::{DockerPlatform, Managed};
use crate::platform::Platform;
use crate::proxy::Home;
use crate::release::{self, Color, ReleaseKey};

#[derive(Serialize)]
struct ConvergeResult {
    app: String,
    environment: String,
    intent: Intent,
    phase: &'static str,
    version: String,
    color: Option<Color>,
    url: String,
    digest: Option<String>,
    image_id: Option<String>,
    previous_version: Option<String>,
}

pub async fn deploy(
    home: &Home,
    config: &Path,
    version: Option<&str>,
    wait: Duration,
    out: &Output,
) -> Result<()> {
    let cfg = session::load(config)?;
    let version = release::resolve_version(version, &cfg.dir())?;
    let mut p = session::open(home, &cfg, out).await?;
    let c = &cfg.config;
    let desired = Desired {
        intent: Intent::Deploy,
        target: ReleaseKey {
            version: version.clone(),
            config_hash: c.runtime_hash(&p.secrets),
        },
        replicas: c.replicas.get(),
        build: true,
        push: c.image.registry().is_some(),
        require_approval: c.require_approval,
        keep_hot: c.keep.hot == 1,
    };
    run(&mut p, &desired, &format!("deploy {version}"), wait, out).await
}

pub async fn promote(home: &Home, config: &Path, wait: Duration, out: &Output) -> Result<()> {
    let cfg = session::load(config)?;
    let mut p = session::open(home, &cfg, out).await?;
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
    let desired = Desired {
        intent: Intent::Promote,
        target: set[0].release.key(),
        replicas: set.len() as u32,
        build: false,
        push: false,
        require_approval: c.require_approval,
        keep_hot: c.keep.hot == 1,
    };
    run(
        &mut p,
        &desired,
        &format!("promote {}", desired.target.version),
        wait,
        out,
    )
    .await
}

pub async fn rollback(
    home: &Home,
    config: &Path,
    to: Option<&str>,
    wait: Duration,
    out: &Output,
) -> Result<()> {
    let cfg = session::load(config)?;
    let mut p = session::open(home, &cfg, out).await?;
    let record = p.record().await?;
    let (live, other) = sides(&p).await?;
    let live_key = live.as_ref().map(|s| s[0].release.key()).ok_or_else(|| {
        Error::Refused(format!(
            "nothing is live for {}; there is nothing to roll back",
            cfg.config.route()
        ))
    })?;
    // A running set of the wanted release is used as it is (instant); else
    // the release comes from history (cold: started from its image).
    let hot = other.filter(|s| match to {
        Some(v) => s[0].release.version == v,
        None => record.was_live(&s[0].release.key()),
    });
    let target = match (&hot, to) {
        (Some(set), _) => set[0].release.key(),
        (None, Some(v)) => record
            .live_releases()
            .into_iter()
            .find(|r| r.version == v)
            .map(|r| r.key())
            .ok_or_else(|| {
                Error::Refused(format!(
                    "version {v} is not in the history of {}; see `cyan history`",
                    cfg.config.route()
                ))
            })?,
        (None, None) => record
            .live_releases()
            .into_iter()
            .map(|r| r.key())
            .find(|k| *k != live_key)
            .ok_or_else(|| {
                Error::Refused(format!(
                    "{} has no previous release to roll back to",
                    cfg.config.route()
                ))
            })?,
    };
    if target == live_key {
        return Err(Error::Refused(format!(
            "{} is already live",
            target.version
        )));
    }
    if hot.is_none() {
        out.warn(format!(
            "{} is no longer running: cold rollback (start from its image, gate, then switch)",
            target.version
        ));
    }
    let desired = Desired {
        intent: Intent::Rollback,
        target,
        replicas: hot
            .as_ref()
            .map_or(cfg.config.replicas.get(), |s| s.len() as u32),
        build: false,
        push: false,
        require_approval: false,
        keep_hot: true,
    };
    run(
        &mut p,
        &desired,
        &format!("rollback to {}", desired.target.version),
        wait,
        out,
    )
    .await
}

pub async fn abort(home: &Home, config: &Path, wait: Duration, out: &Output) -> Result<()> {
    let cfg = session::load(config)?;
    let mut p = session::open(home, &cfg, out).await?;
    let lock = DeployLock::acquire(&p.proxy, &cfg.config.route(), "abort", wait, out).await?;
    p.lock_token = lock.token.clone();
    let result = async {
        let (_, other) = sides(&p).await?;
        let record = p.record().await?;
        let Some(set) = other.filter(|s| !record.was_live(&s[0].release.key())) else {
            return Err(Error::Refused(format!(
                "{} has no candidate to abort",
                cfg.config.route()
            )));
        };
        let (color, version) = (set[0].color, set[0].release.version.clone());
        out.phase(format!("remove candidate {color} ({version})"));
        p.clear(color).await?;
        out.done(format!("removed candidate {color} ({version})"));
        out.result(
            &serde_json::json!({"aborted": version, "color": color}),
            || format!("aborted {version}; live traffic was not touched"),
        );
        Ok(())
    }
    .await;
    lock.release().await;
    result
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

async fn run(
    p: &mut DockerPlatform<'_>,
    desired: &Desired,
    what: &str,
    wait: Duration,
    out: &Output,
) -> Result<()> {
    let c = &p.cfg.config;
    let lock = DeployLock::acquire(&p.proxy, &c.route(), what, wait, out).await?;
    p.lock_token = lock.token.clone();
    let previous = p
        .record()
        .await?
        .live_releases()
        .first()
        .map(|r| r.version.clone());
    let outcome = engine::converge(&*p, desired, out).await;
    lock.release().await;
    let outcome = outcome?;
    let observed = p.observe(desired).await?;
    let color = match outcome {
        Outcome::Done => observed.live,
        Outcome::AwaitingApproval(c) => Some(c),
    };
    let release = match color {
        Some(col) => p
            .containers()
            .await?
            .into_iter()
            .find(|m| m.color == col)
            .map(|m| m.release),
        None => None,
    };
    let result = ConvergeResult {
        app: c.app.to_string(),
        environment: c.environment.to_string(),
        intent: desired.intent,
        phase: match outcome {
            Outcome::Done => "live",
            Outcome::AwaitingApproval(_) => "awaiting-approval",
        },
        version: desired.target.version.clone(),
        color,
        url: c.url(),
        digest: release.as_ref().and_then(|r| r.digest.clone()),
        image_id: release.map(|r| r.image_id),
        previous_version: previous.filter(|v| *v != desired.target.version),
    };
    let config_path = p.cfg.path.display().to_string();
    out.result(&result, || match outcome {
        Outcome::Done => format!(
            "{} {} is live on {} at {}",
            c.app,
            desired.target.version,
            color.map_or("?".into(), |c| c.to_string()),
            c.url()
        ),
        Outcome::AwaitingApproval(col) => format!(
            "{} {} is up on {col} and passed its health gate; live traffic is untouched.\n\
             Approve with: cyan promote -c {config_path}\n\
             Or remove it: cyan abort -c {config_path}",
            c.app, desired.target.version
        ),
    });
    Ok(())
}
