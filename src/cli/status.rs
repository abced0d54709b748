//! `cyan status` and `cyan history`. The JSON of `status` is a stable
//! contract (documented in README.md): add fields, never rename or remove.

use std::collections::HashMap;

use serde::Serialize;

use super::session;
use crate::config::Loaded;
use crate::error::Result;
use crate::health::{DockerHealth, HealthState, Replicas};
use crate::output::Output;
use crate::platform::docker::Managed;
use crate::proxy::Home;
use crate::record::HistoryEntry;
use crate::release::Color;

#[derive(Serialize)]
pub struct Status {
    pub app: String,
    pub environment: String,
    pub url: String,
    /// not-deployed | progressing | awaiting-approval | verifying | live
    pub phase: &'static str,
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
    let verifying = record
        .verify
        .as_ref()
        .is_some_and(|w| w.until_ms > crate::clock::now_ms());
    let phase = match (&live_view, &candidate) {
        (_, Some(cand)) if cand.gated && c.require_approval => "awaiting-approval",
        (_, Some(_)) => "progressing",
        (Some(_), None) if verifying => "verifying",
        (Some(_), None) => "live",
        (None, None) => "not-deployed",
    };
    let drift = p.drift(c.replicas.get(), &all, view.as_ref());
    let warnings = live
        .iter()
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
        })
        .collect();
    let status = Status {
        app: c.app.to_string(),
        environment: c.environment.to_string(),
        url: c.url(),
        phase,
        version: live_view.as_ref().map(|l| l.version.clone()),
        image: live_view.as_ref().map(|l| c.image.tag(&l.version)),
        digest: live_view.as_ref().and_then(|l| l.digest.clone()),
        previous_version: previous.as_ref().map(|p| p.version.clone()),
        live: live_view,
        previous,
        candidate,
        // A lease whose holder is gone is free: the next command takes it.
        lock: view
            .and_then(|v| v.state.lock)
            .filter(|l| l.held(crate::clock::now_ms()))
            .map(|l| l.describe()),
        warnings,
        drift,
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
