//! The verify window after a switch (`Step::Verify`): the new live color's
//! requests and 5xx are read from the proxy until the window closes, and
//! the window ends in one of three ways, each written to the deploy record:
//! passed, kept though inconclusive (`verify.on_inconclusive: pass`), or
//! failed, with traffic switched back to the previous color when it can be.
//!
//! The window is kept in the record, not in this process, so a deploy
//! killed while verifying is judged when it is run again. On a fleet one
//! host judges the sum of every host's counts (`DockerPlatform::peers`),
//! and the others adopt its verdict.

use std::time::Duration;

use super::route::parse_record;
use super::DockerPlatform;
use crate::error::{Error, Result};
use crate::health;
use crate::output::fmt_duration;
use crate::plan::verify::{self, Counts, VerifyCall};
use crate::proxy::api::SwitchRequest;
use crate::proxy::router::RouteView;
use crate::record::{DeployRecord, Event, HistoryEntry, Verdict, VerifyFigures, VerifyWindow};
use crate::release::Color;

impl DockerPlatform<'_> {
    /// Watches `color` until its verify window ends; `Error::VerifyFailed`
    /// when it fails. Without `verify:` it only closes a window left open.
    pub(super) async fn verify(&self, color: Color) -> Result<()> {
        let Some(cfg) = &self.cfg.config.verify else {
            return self.close_verify().await;
        };
        let mut said_left = u64::MAX;
        loop {
            let view = self
                .route_view()
                .await?
                .ok_or_else(|| Error::Platform("the app's route vanished from the proxy".into()))?;
            let record = parse_record(&view.state.record);
            let Some(window) = record.verify.clone() else {
                return Ok(());
            };
            let mut stats = view.stats.get(&color).cloned().unwrap_or_default();
            // A fleet's judge counts the traffic of every host that runs
            // the release: on each, the color its own window names (hosts
            // need not give a release the same color), open until the
            // judge's verdict closes it (`adopt_verdict`).
            for peer in &self.peers {
                let Some(v) = peer.route(&self.route()).await? else {
                    continue;
                };
                let theirs = parse_record(&v.state.record).verify;
                if let Some(s) = theirs
                    .filter(|w| w.release == window.release)
                    .and_then(|w| v.stats.get(&w.color))
                {
                    stats.requests += s.requests;
                    stats.status_5xx += s.status_5xx;
                }
            }
            let figures = |verdict| VerifyFigures {
                verdict,
                requests: stats.requests,
                status_5xx: stats.status_5xx,
                min_requests: cfg.min_requests,
            };
            let counts = Counts {
                requests: stats.requests,
                status_5xx: stats.status_5xx,
            };
            let policy = cfg.policy();
            let now = crate::clock::now_ms();
            match verify::judge(counts, &policy, &window, now) {
                VerifyCall::Watch => {}
                VerifyCall::Pass => {
                    self.out.detail(format!(
                        "verified: {} requests, {} 5xx",
                        stats.requests, stats.status_5xx
                    ));
                    let passed = figures(Verdict::Passed);
                    *self.verdict.lock().expect("verdict lock") = Some(passed.clone());
                    let mut record = record;
                    record.mark_verified(&window.release, passed);
                    record.verify = None;
                    return self.put_record(&record).await;
                }
                VerifyCall::Extend { deadline_ms } => {
                    self.out.warn(format!(
                        "verification inconclusive so far ({}); watching until there are enough, for {} more at most",
                        verify::too_few(counts, &policy),
                        fmt_duration(Duration::from_millis(deadline_ms.saturating_sub(now)))
                    ));
                    let mut record = record;
                    record.verify = Some(VerifyWindow {
                        until_ms: deadline_ms,
                        deadline_ms: Some(deadline_ms),
                        ..window
                    });
                    self.put_record(&record).await?;
                    continue;
                }
                VerifyCall::PassInconclusive => {
                    self.out.warn(format!(
                        "verification inconclusive ({}); {} stays live, as verify.on_inconclusive: pass says",
                        verify::too_few(counts, &policy),
                        window.release.version
                    ));
                    let seen = figures(Verdict::Inconclusive);
                    *self.verdict.lock().expect("verdict lock") = Some(seen.clone());
                    return self.pass_inconclusive(color, record, seen).await;
                }
                VerifyCall::Fail(why) => {
                    let seen = figures(Verdict::Failed);
                    *self.verdict.lock().expect("verdict lock") = Some(seen.clone());
                    return self
                        .fail_verify(color, window, &view, record, why, seen)
                        .await;
                }
                VerifyCall::FailInconclusive(why) => {
                    let seen = figures(Verdict::Inconclusive);
                    *self.verdict.lock().expect("verdict lock") = Some(seen.clone());
                    return self
                        .fail_verify(color, window, &view, record, why, seen)
                        .await;
                }
            }
            let left = window.until_ms.saturating_sub(now);
            if left.div_ceil(1000) != said_left {
                said_left = left.div_ceil(1000);
                self.out.detail(format!(
                    "{} requests, {} 5xx; {said_left}s left",
                    stats.requests, stats.status_5xx
                ));
            }
            tokio::time::sleep(health::VERIFY_POLL.min(Duration::from_millis(left))).await;
        }
    }

    /// Closes this host's open window for `release` with a verdict another
    /// host's window reached over the whole fleet's traffic (`peers`): kept
    /// as passed or inconclusive, or failed (traffic back on the previous
    /// color, `Error::VerifyFailed`). Nothing without an open window.
    pub async fn adopt_verdict(&self, figures: &VerifyFigures, why: &str) -> Result<()> {
        let Some(view) = self.route_view().await? else {
            return Ok(());
        };
        let record = parse_record(&view.state.record);
        let Some(window) = record.verify.clone() else {
            return Ok(());
        };
        *self.verdict.lock().expect("verdict lock") = Some(figures.clone());
        match figures.verdict {
            Verdict::Passed => {
                let mut record = record;
                record.mark_verified(&window.release, figures.clone());
                record.verify = None;
                self.put_record(&record).await
            }
            Verdict::Inconclusive if why.is_empty() => {
                self.pass_inconclusive(window.color, record, figures.clone())
                    .await
            }
            _ => {
                self.fail_verify(
                    window.color,
                    window.clone(),
                    &view,
                    record,
                    why.to_string(),
                    figures.clone(),
                )
                .await
            }
        }
    }

    /// Closes an inconclusive window that `on_inconclusive: pass` keeps,
    /// and says so in the history.
    async fn pass_inconclusive(
        &self,
        color: Color,
        mut record: DeployRecord,
        seen: VerifyFigures,
    ) -> Result<()> {
        if let Some(m) = self.color_set(color).await?.first() {
            record.push_history(HistoryEntry {
                event: Event::VerifyInconclusive,
                color,
                release: m.release.clone(),
                at: crate::clock::now_rfc3339(),
                verify: Some(seen),
                from_environment: None,
                by: super::route::by(),
            });
        }
        record.verify = None;
        self.put_record(&record).await
    }

    async fn close_verify(&self) -> Result<()> {
        let mut record = self.record().await?;
        record.verify = None;
        self.put_record(&record).await
    }

    /// Switches back to the previous color (if it is still running and
    /// gated) and records the failure.
    async fn fail_verify(
        &self,
        color: Color,
        window: VerifyWindow,
        view: &RouteView,
        mut record: DeployRecord,
        why: String,
        seen: VerifyFigures,
    ) -> Result<()> {
        let back = color.other();
        let can_return = view.state.colors.get(&back).is_some_and(|u| !u.is_empty())
            && record.gated.contains_key(&back);
        let failed = self
            .color_set(color)
            .await?
            .first()
            .map(|m| m.release.clone());
        record.verify = None;
        if let Some(release) = failed {
            record.push_history(HistoryEntry {
                event: Event::VerifyFailed,
                color,
                release,
                at: crate::clock::now_rfc3339(),
                verify: Some(seen),
                from_environment: None,
                by: super::route::by(),
            });
        }
        if !can_return {
            self.put_record(&record).await?;
            return Err(Error::VerifyFailed(format!(
                "verification of {} failed: {why}; there is no previous color to return to, so {color} stays live",
                window.release.version
            )));
        }
        let req = SwitchRequest {
            color: back,
            upstreams: None,
            record: Some(serde_json::to_value(&record).expect("record serializes")),
            route: None,
        };
        self.proxy.switch(&self.route(), &req).await?;
        Err(Error::VerifyFailed(format!(
            "verification of {} failed: {why}; traffic is back on {back}. {color} is kept for inspection (cyan status)",
            window.release.version
        )))
    }
}
