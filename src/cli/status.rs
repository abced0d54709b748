//! `cyan status` and `cyan history` on Docker: they read the containers,
//! the proxy's route and the deploy record, and fill the reports of
//! `report.rs` (whose JSON is the stable contract documented in README.md).

use std::collections::HashMap;

use super::report::{
    AppId, ColorView, ContainerView, History, HistoryLine, HookLine, PreviewView, StageVisit,
    StatusReport,
};
use super::session::{self, At};
use crate::config::{Loaded, PlatformKind};
use crate::error::Result;
use crate::health::{DockerHealth, HealthState, Replicas};
use crate::output::Output;
use crate::plan::{self, Phase, Seen};
use crate::platform::docker::Managed;
use crate::record::Event;
use crate::release::Color;

/// The app's id in a Docker report.
pub(super) fn docker_id(cfg: &Loaded) -> AppId {
    AppId {
        app: cfg.config.app.to_string(),
        environment: cfg.config.environment.to_string(),
        platform: PlatformKind::Docker,
        namespace: None,
    }
}

pub async fn status(at: At<'_>, cfg: &Loaded, out: &Output) -> Result<StatusReport> {
    let p = session::open_to_read(at, cfg, out).await?;
    let c = &cfg.config;
    let view = p.route_view().await?;
    let live = view.as_ref().and_then(|v| v.state.live);
    let record = p.record().await?;
    let all = p.containers().await?;
    let healths: HashMap<&str, DockerHealth> = futures_util::future::join_all(
        all.iter()
            .map(|m| async { (m.id.as_str(), p.docker_health(&m.id).await) }),
    )
    .await
    .into_iter()
    .collect();
    let color_view = |col: Color| -> Option<ColorView> {
        let set: Vec<&Managed> = all.iter().filter(|m| m.color == col).collect();
        let first = set.first()?;
        Some(ColorView {
            color: col,
            version: first.release.version.clone(),
            revision: first.release.revision,
            digest: first.release.digest.clone(),
            image_id: Some(first.release.image_id.clone()),
            gated: record.gated.get(&col) == Some(&first.release.key()),
            containers: set
                .iter()
                .map(|m| ContainerView {
                    name: m.name.clone(),
                    id: m.id.chars().take(12).collect(),
                    state: m.state.clone(),
                    address: m.addr.map(|a| a.to_string()),
                    health: healths[m.id.as_str()].state,
                })
                .collect(),
        })
    };
    let live_view = live.and_then(color_view);
    let other = match live {
        Some(l) => color_view(l.other()),
        None => Color::ALL.into_iter().find_map(color_view),
    };
    let (previous, candidate) = match other {
        Some(o)
            if record.was_live(&crate::release::ReleaseKey {
                version: o.version.clone(),
                config_hash: all
                    .iter()
                    .find(|m| m.color == o.color)
                    .map(|m| m.release.config_hash.clone())
                    .unwrap_or_default(),
            }) =>
        {
            (Some(o), None)
        }
        Some(o) => (None, Some(o)),
        None => (None, None),
    };
    // A lease whose holder is gone is free: the next command takes it.
    let lock = view
        .as_ref()
        .and_then(|v| v.state.lock.clone())
        .filter(|l| l.held(crate::clock::now_ms()));
    let phase = plan::phase(&Seen {
        live: live_view.is_some(),
        candidate: candidate.as_ref().map(|c| c.gated),
        verify_open: record
            .verify
            .as_ref()
            .is_some_and(|w| Some(w.color) == live),
        locked: lock.is_some(),
        require_approval: c.require_approval,
    });
    let drift = p.drift(c.replicas.get(), &all, view.as_ref());
    let interrupted = match (&candidate, &record.verify) {
        _ if phase != Phase::Interrupted => None,
        (Some(cand), _) => Some(format!(
            "the deploy of {} stopped before its switch (no cyan holds the lock): `cyan deploy --version {}` continues it, `cyan abort` removes it",
            cand.version, cand.version
        )),
        (None, Some(w)) => Some(format!(
            "the deploy of {} stopped while verifying it (no cyan holds the lock), so nothing judges its verify window: `cyan deploy --version {}` watches the rest of it, `cyan rollback` goes back",
            w.release.version, w.release.version
        )),
        (None, None) => None,
    };
    // A rolling deploy stopped while this host was out of the balancer.
    let drained = view.as_ref().filter(|v| v.state.draining).map(|_| {
        "out of the load balancer (its /cyan/up answers 503): a rolling deploy stopped while it was; the next `cyan deploy` puts it back".to_string()
    });
    let warnings = interrupted
        .into_iter()
        .chain(drained)
        .chain(live.iter()
        .flat_map(|l| all.iter().filter(move |m| m.color == *l))
        .filter_map(|m| {
            let h = &healths[m.id.as_str()];
            (h.state == HealthState::Unhealthy).then(|| {
                let last = h.log.last().map_or("no check kept".into(), |r| r.to_string());
                format!(
                    "live container {} is unhealthy according to Docker's HEALTHCHECK (last check: {last})",
                    m.name
                )
            })
        }))
        .collect();
    // Where the proxy serves host-routed apps, for the URLs.
    let served = p.proxy.health().await?;
    // What the proxy previews (never the live color), as cyan.yaml sets it.
    let preview = match &c.proxy.preview {
        Some(cfg) => {
            let color = view
                .as_ref()
                .filter(|v| v.state.preview.is_some())
                .and_then(|v| v.state.previewed());
            Some(PreviewView {
                url: cfg.url(&served, c.proxy.path_prefix.as_deref()),
                color,
                version: color.and_then(|col| {
                    let m = all.iter().find(|m| m.color == col)?;
                    Some(m.release.version.clone())
                }),
            })
        }
        None => None,
    };
    let status = StatusReport {
        id: docker_id(cfg),
        url: c.url(&served),
        phase,
        version: live_view.as_ref().map(|l| l.version.clone()),
        image: live_view.as_ref().map(|l| c.image.tag(&l.version)),
        digest: live_view.as_ref().and_then(|l| l.digest.clone()),
        revision: live_view.as_ref().map(|l| l.revision),
        previous_version: previous.as_ref().map(|p| p.version.clone()),
        live: live_view,
        previous,
        candidate,
        lock: lock.map(|l| l.describe()),
        warnings,
        drift,
        preview,
        message: None,
        hosts: Vec::new(),
    };
    Ok(status)
}

pub async fn history(at: At<'_>, cfg: &Loaded, out: &Output) -> Result<History> {
    let p = session::open_to_read(at, cfg, out).await?;
    let record = p.record().await?;
    let mut lines: Vec<HistoryLine> = record.history.iter().rev().map(HistoryLine::from).collect();
    // Each environment's record is in this proxy: a version's passage
    // through the stages is read from all of them.
    let c = &cfg.config;
    let mut records = Vec::new();
    for env in c.environment_names() {
        let route = format!("{}-{env}", c.app);
        let record = match route == c.route() {
            true => record.clone(),
            false => p
                .proxy
                .route(&route)
                .await?
                .map(|v| crate::platform::docker::parse_record(&v.state.record))
                .unwrap_or_default(),
        };
        records.push((env, record));
    }
    for line in &mut lines {
        let key = crate::release::ReleaseKey {
            version: line.release.version.clone(),
            config_hash: line.release.config_hash.clone(),
        };
        line.hooks = record
            .hooks
            .iter()
            .filter(|h| h.release == key)
            .map(|h| HookLine {
                hook: h.hook.clone(),
                outcome: h.outcome,
                at: h.at.clone(),
            })
            .collect();
        line.stages = records
            .iter()
            .filter_map(|(env, r)| {
                let entry = r.history.iter().rev().find(|e| {
                    e.release.version == line.release.version
                        && matches!(e.event, Event::Promoted | Event::RolledBack)
                })?;
                Some(StageVisit {
                    environment: env.clone(),
                    at: entry.at.clone(),
                    verified: r.verified(&entry.release.key()),
                })
            })
            .collect();
    }
    Ok(History {
        route: c.route(),
        lines,
    })
}
