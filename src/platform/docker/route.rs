//! The app's route in the cyan proxy, over its admin API: the route spec
//! cyan.yaml asks for, the deploy record the proxy keeps for cyan, a set
//! registered as a color or as the preview's candidate, the switch, and
//! taking a color out (drained first).
//!
//! The proxy holds everything a deploy needs that containers cannot show.
//! Of this platform, only this file writes it, except the verify window's
//! endings (`verify`) and a repair (`drift`).

use std::time::{Duration, Instant};

use super::gate::targets;
use super::spec::Managed;
use super::DockerPlatform;
use crate::config::ProxyTls;
use crate::error::{Error, Result};
use crate::plan::{Desired, Intent};
use crate::proxy::api::{CandidateRequest, RouteSpec, SwitchRequest, SwitchResponse};
use crate::proxy::router::RouteView;
use crate::proxy::state::{TlsFiles, TlsSource, Upstream};
use crate::record::{DeployRecord, Event, HistoryEntry, VerifyWindow};
use crate::release::Color;

/// The deploy record in a route's state (opaque to the proxy); an empty
/// record when there is none, or when it is not one cyan can read.
pub fn parse_record(v: &serde_json::Value) -> DeployRecord {
    if v.is_null() {
        return DeployRecord::default();
    }
    serde_json::from_value(v.clone()).unwrap_or_default()
}

/// Who a history entry written now is by: this cyan's user and host,
/// after whom it acts for when `CYAN_BY` says (the dashboard's visitor:
/// `alice (dashboard) via root@ops-1`).
pub(super) fn by() -> Option<String> {
    let here = format!("{}@{}", crate::clock::user(), crate::clock::hostname());
    let on_behalf = std::env::var("CYAN_BY").ok().map(|v| {
        v.chars()
            .filter(|c| !c.is_control())
            .take(80)
            .collect::<String>()
    });
    Some(match on_behalf.filter(|v| !v.trim().is_empty()) {
        Some(who) => format!("{} via {here}", who.trim()),
        None => here,
    })
}

/// The set as the proxy's upstreams: each address tied to its container,
/// so the proxy follows the container when it moves.
pub(super) fn upstreams(set: &[Managed]) -> Result<Vec<Upstream>> {
    Ok(targets(set)?
        .into_iter()
        .zip(set)
        .map(|(t, m)| Upstream::of_container(t.addr, &m.id))
        .collect())
}

impl DockerPlatform<'_> {
    /// The app's route name in the proxy: `<app>-<environment>`.
    pub fn route(&self) -> String {
        self.cfg.config.route()
    }

    /// The route cyan.yaml asks for: the proxy takes it with the switch
    /// (and a repair), never before.
    pub fn route_spec(&self) -> RouteSpec {
        let c = &self.cfg.config;
        // The proxy runs in another folder: it gets absolute paths.
        let absolute = |p: &std::path::Path| std::path::absolute(p).unwrap_or(p.to_path_buf());
        RouteSpec {
            hosts: c.proxy.host.iter().chain(&c.proxy.hosts).cloned().collect(),
            listen: c.proxy.listen,
            path_prefix: c.proxy.path_prefix.clone(),
            policy: c.proxy.policy(),
            tls: c.proxy.tls.as_ref().map(|t| match t {
                ProxyTls::Files(t) => TlsSource::Files(TlsFiles {
                    cert: absolute(&self.cfg.dir().join(&t.cert)),
                    key: absolute(&self.cfg.dir().join(&t.key)),
                }),
                ProxyTls::Acme => TlsSource::Acme,
            }),
            preview: c.proxy.preview.as_ref().map(|p| p.spec()),
        }
    }

    /// Refuses (`Error::Config`) a route whose host or listen address
    /// another live app holds, before anything is built or started.
    pub async fn claim_route(&self) -> Result<()> {
        self.proxy
            .claim(&self.route(), &self.route_spec())
            .await
            .map_err(|e| match e {
                cyan_proxy::Error::Config(why) => Error::Config(format!(
                    "{} cannot be routed as cyan.yaml asks: {why}",
                    self.route()
                )),
                e => e.into(),
            })
    }

    /// The app's route in the proxy, if it has one yet.
    pub async fn route_view(&self) -> Result<Option<RouteView>> {
        Ok(self.proxy.route(&self.route()).await?)
    }

    /// The deploy record; empty before the first deploy.
    pub async fn record(&self) -> Result<DeployRecord> {
        Ok(self
            .route_view()
            .await?
            .map(|v| parse_record(&v.state.record))
            .unwrap_or_default())
    }

    /// Reads the record, changes it with `change`, and writes it back (under
    /// the deploy lock, so nothing else writes between).
    pub async fn update_record(&self, change: impl FnOnce(&mut DeployRecord)) -> Result<()> {
        let mut record = self.record().await?;
        change(&mut record);
        self.put_record(&record).await
    }

    pub(super) async fn put_record(&self, record: &DeployRecord) -> Result<()> {
        let value = serde_json::to_value(record).expect("record serializes");
        Ok(self.proxy.put_record(&self.route(), &value).await?)
    }

    /// Registers a gated `set` of `color` with the proxy (not live) and
    /// marks it gated. A release that was never live is the candidate:
    /// the preview serves it from now on (a previous release started
    /// again is not).
    pub(super) async fn register(&self, color: Color, d: &Desired, set: &[Managed]) -> Result<()> {
        let upstreams = upstreams(set)?;
        let mut record = self.record().await?;
        if record.was_live(&d.target) {
            self.proxy
                .set_color(&self.route(), color, upstreams)
                .await?;
        } else {
            let req = CandidateRequest {
                color,
                upstreams,
                preview: self.route_spec().preview_state(),
            };
            self.proxy.set_candidate(&self.route(), &req).await?;
        }
        record.gated.insert(color, d.target.clone());
        record.record_runtime(&d.target, self.cfg.config.runtime().to_record());
        self.put_record(&record).await
    }

    /// `Step::Switch`: makes `color` live, with cyan.yaml's route, and in
    /// the same request records the promotion (or rollback) and opens the
    /// verify window.
    pub(super) async fn switch(&self, color: Color, d: &Desired) -> Result<()> {
        let req = self.prepare_switch(color, d).await?;
        let started = Instant::now();
        let resp = self.commit_switch(&req).await?;
        self.out.detail(format!(
            "switched {}: {} -> {color} ({}) in {}",
            self.route(),
            resp.previous.map_or("none".into(), |c| c.to_string()),
            d.target.version,
            crate::output::fmt_duration(started.elapsed())
        ));
        Ok(())
    }

    /// The switch to `color` as one request, read and written ahead
    /// (`commit_switch` sends it): a fleet prepares every host's, then
    /// sends them all at once.
    pub async fn prepare_switch(&self, color: Color, d: &Desired) -> Result<SwitchRequest> {
        let set = self.color_set(color).await?;
        let upstreams = upstreams(&set)?;
        let release = set
            .first()
            .map(|m| m.release.clone())
            .ok_or_else(|| Error::Platform(format!("{color} has no containers to switch to")))?;
        let mut record = self.record().await?;
        let verify = self
            .cfg
            .config
            .verify
            .as_ref()
            .filter(|_| d.intent != Intent::Rollback);
        record.verify = verify.map(|v| VerifyWindow {
            color,
            release: d.target.clone(),
            until_ms: crate::clock::now_ms() + v.duration.0.as_millis() as u64,
            deadline_ms: None,
        });
        record.push_history(HistoryEntry {
            event: if d.intent == Intent::Rollback {
                Event::RolledBack
            } else {
                Event::Promoted
            },
            color,
            release,
            at: crate::clock::now_rfc3339(),
            verify: None,
            from_environment: (d.intent != Intent::Rollback)
                .then(|| self.promoted_from.clone())
                .flatten(),
            by: by(),
        });
        let req = SwitchRequest {
            color,
            upstreams: Some(upstreams),
            record: Some(serde_json::to_value(&record).expect("record serializes")),
            route: Some(self.route_spec()),
        };
        Ok(req)
    }

    /// Sends a prepared switch: one admin request, the moment traffic moves.
    pub async fn commit_switch(&self, req: &SwitchRequest) -> Result<SwitchResponse> {
        Ok(self.proxy.switch(&self.route(), req).await?)
    }

    /// Takes `color` out of the proxy before its containers go: no longer
    /// gated, no longer the preview's candidate, drained, and removed from
    /// the route. Refuses the live color.
    pub(super) async fn withdraw(&self, color: Color) -> Result<()> {
        let route = self.route();
        let mut record = self.record().await?;
        if record.gated.remove(&color).is_some() {
            self.put_record(&record).await?;
        }
        if let Some(view) = self.route_view().await? {
            if view.state.live == Some(color) {
                return Err(Error::Platform(format!(
                    "refusing to remove {color}: it is live"
                )));
            }
            // The preview stops taking requests for it first.
            if view.state.candidate == Some(color) {
                self.proxy.clear_candidate(&route).await?;
            }
            self.drain(color).await?;
            if view.state.colors.contains_key(&color) {
                self.proxy.remove_color(&route, color).await?;
            }
        }
        Ok(())
    }

    /// Waits until no request is in flight on `color`, up to the drain timeout.
    async fn drain(&self, color: Color) -> Result<()> {
        let deadline = Instant::now() + self.cfg.config.proxy.drain_timeout.0;
        loop {
            let inflight = self
                .route_view()
                .await?
                .and_then(|v| v.stats.get(&color).map(|s| s.inflight))
                .unwrap_or(0);
            if inflight == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.out.warn(format!(
                    "drain deadline {} reached with {inflight} request(s) still on {color}",
                    self.cfg.config.proxy.drain_timeout
                ));
                return Ok(());
            }
            self.out
                .detail(format!("draining {color}: {inflight} in flight"));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
