//! `cyan status` and `cyan history`. The JSON of `status` is a stable
//! contract (documented in README.md): add fields, never rename or remove.

use std::collections::HashMap;

use serde::Serialize;

use super::session;
use crate::config::Loaded;
use crate::error::Result;
use crate::health::{DockerHealth, HealthState, Replicas};
use crate::output::Output;
use crate::plan::{self, Phase, Seen};
use crate::platform::docker::Managed;
use crate::proxy::Home;
use crate::record::HistoryEntry;
use crate::release::Color;

#[derive(Serialize)]
pub struct Status {
    pub app: String,
    pub environment: String,
    pub url: String,
    /// not-deployed | progressing | interrupted | awaiting-approval |
    /// verifying | live
    pub phase: Phase,
    /// Copies of `live.version`, the live image and `live.digest`, and
    /// `previous.version`, at the top level for scripts and step outputs.
    pub version: Option<String>,
    pub image: Option<String>,
    pub digest: Option<String>,
    pub previous_version: Option<String>,
    pub live: Option<ColorView>,
    pub previous: Option<ColorView>,
    pub candidate: Option<ColorView>,
    pub lock: Option<String>,
    /// Things a person should look at, one sentence each (an unhealthy
    /// live container).
    pub warnings: Vec<String>,
    /// Where the live color's serving disagrees with its containers or
    /// with cyan.yaml's route, one line each; `cyan deploy` of the live
    /// version repairs it. Empty when all is in line.
    pub drift: Vec<String>,
    /// `proxy.preview`, when cyan.yaml sets one.
    pub preview: Option<PreviewView>,
}

/// The app's preview: where it is, and what it serves now.
#[derive(Serialize)]
pub struct PreviewView {
    pub url: String,
    /// The candidate it serves; `None`: no candidate, it answers 503.
    pub color: Option<Color>,
    pub version: Option<String>,
}

#[derive(Serialize)]
pub struct ColorView {
    pub color: Color,
    pub version: String,
    pub revision: u64,
    pub digest: Option<String>,
    pub image_id: String,
    pub gated: bool,
    pub containers: Vec<ContainerView>,
}

#[derive(Serialize)]
pub struct ContainerView {
    pub name: String,
    pub id: String,
    pub state: String,
    pub address: Option<String>,
    /// Docker's health from the image's HEALTHCHECK: healthy | unhealthy |
    /// starting | none (no HEALTHCHECK) | unknown (the engine did not say).
    pub health: HealthState,
}

pub async fn status(home: &Home, cfg: &Loaded, out: &Output) -> Result<()> {
    let p = session::open_to_read(home, cfg, out).await?;
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
            image_id: first.release.image_id.clone(),
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
    let warnings = interrupted
        .into_iter()
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
    let status = Status {
        app: c.app.to_string(),
        environment: c.environment.to_string(),
        url: c.url(&served),
        phase,
        version: live_view.as_ref().map(|l| l.version.clone()),
        image: live_view.as_ref().map(|l| c.image.tag(&l.version)),
        digest: live_view.as_ref().and_then(|l| l.digest.clone()),
        previous_version: previous.as_ref().map(|p| p.version.clone()),
        live: live_view,
        previous,
        candidate,
        lock: lock.map(|l| l.describe()),
        warnings,
        drift,
        preview,
    };
    out.result(&status, || render(&status));
    Ok(())
}

fn render(s: &Status) -> String {
    let mut text = format!(
        "{} ({}) — {}\nurl: {}\n",
        s.app, s.environment, s.phase, s.url
    );
    for (label, v) in [
        ("live", &s.live),
        ("previous", &s.previous),
        ("candidate", &s.candidate),
    ] {
        match v {
            Some(v) => {
                text += &format!(
                    "{label:>9}: {} {} (revision {}, {} container(s){})\n",
                    v.color,
                    v.version,
                    v.revision,
                    v.containers.len(),
                    if v.gated { ", gated" } else { "" }
                );
                for ct in &v.containers {
                    text += &format!(
                        "           {} {} {} health: {}\n",
                        ct.name,
                        ct.state,
                        ct.address.as_deref().unwrap_or("-"),
                        ct.health
                    );
                }
            }
            None => text += &format!("{label:>9}: -\n"),
        }
    }
    if let Some(p) = &s.preview {
        text += &match (&p.version, p.color) {
            (Some(v), Some(col)) => format!("  preview: {} serves {v} ({col})\n", p.url),
            _ => format!("  preview: {} (no candidate: answers 503)\n", p.url),
        };
    }
    if let Some(l) = &s.lock {
        text += &format!("     lock: {l}\n");
    }
    for d in &s.drift {
        text += &format!("    drift: {d}\n");
    }
    if let (Some(live), false) = (&s.live, s.drift.is_empty()) {
        text += &format!(
            "           repair with: cyan deploy --version {}\n",
            live.version
        );
    }
    for w in &s.warnings {
        text += &format!("  warning: {w}\n");
    }
    text.trim_end().to_string()
}

pub async fn history(home: &Home, cfg: &Loaded, out: &Output) -> Result<()> {
    let p = session::open_to_read(home, cfg, out).await?;
    let mut entries: Vec<HistoryEntry> = p.record().await?.history;
    entries.reverse();
    out.result(&entries, || {
        if entries.is_empty() {
            return format!("{}: no releases yet", cfg.config.route());
        }
        entries
            .iter()
            .map(|e| {
                format!(
                    "{}  r{:<4} {:<14} {:<6} {:?}  {}",
                    e.at,
                    e.release.revision,
                    e.release.version,
                    e.color,
                    e.event,
                    e.release.digest.as_deref().unwrap_or(&e.release.image_id)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}
