//! The verify window after a switch: the live release is checked (HTTP,
//! Prometheus) until the window ends; `failureThreshold` failures in a row
//! take it off the air (`roll_back_live`), back to the previous color when
//! that is still scaled and gated.

use kube::ResourceExt;

use super::crd::{HistoryEntry, Outcome, Phase};
use super::note::SwitchNote;
use super::switch::push_history;
use super::{checks, objects, KubePlatform};
use crate::error::Result;
use crate::plan::Desired;
use crate::release::Color;

impl KubePlatform {
    pub(super) async fn verify(&self, color: Color, d: &Desired) -> Result<()> {
        let Some(v) = &self.bgd.spec.verify else {
            self.edit(|s| s.verify_until_ms = None);
            return Ok(());
        };
        let mut result = Ok(());
        if let Some(check) = &v.http {
            let url = check.url.clone().unwrap_or_else(|| {
                format!(
                    "http://{}.{}.svc:{}{}",
                    self.bgd.spec.active_service,
                    self.ns,
                    check.port.unwrap_or(80),
                    check.path
                )
            });
            result = checks::http(&self.probe, check, &url).await;
        }
        if let (Ok(()), Some(check)) = (&result, &v.prometheus) {
            result = checks::prometheus(&self.probe, check).await;
        }
        let failures = self.edit(|s| {
            s.verify_failures = if result.is_ok() {
                0
            } else {
                s.verify_failures + 1
            };
            s.verify_failures
        });
        match result {
            Err(why) if failures >= v.failure_threshold.max(1) => {
                self.roll_back_live(
                    color,
                    d,
                    &format!("verification failed {failures} times in a row: {why}"),
                )
                .await
            }
            Err(why) => {
                self.edit(|s| {
                    s.message = Some(format!(
                        "verify check failed ({failures}/{}): {why}",
                        v.failure_threshold
                    ))
                });
                Ok(())
            }
            Ok(()) => {
                let left = self
                    .status()
                    .verify_until_ms
                    .unwrap_or(0)
                    .saturating_sub(self.now_ms);
                self.edit(|s| {
                    s.message = Some(format!("verifying: {}s left", left.div_ceil(1000)))
                });
                Ok(())
            }
        }
    }

    /// Takes a live release that failed (verify, or an abort while verifying)
    /// off the air: traffic returns to the previous color when it is still
    /// scaled and gated, the failed color is scaled down, and the release is
    /// halted.
    pub async fn roll_back_live(&self, color: Color, d: &Desired, why: &str) -> Result<()> {
        let back = color.other();
        let back_dep = self.deployment(back).await?;
        let can_return = self.status().gated.contains_key(&back)
            && back_dep.as_ref().is_some_and(objects::fully_available);
        let failed = HistoryEntry {
            revision: self.status().live_revision.unwrap_or(0),
            version: d.target.version.clone(),
            image: objects::image(&self.bgd),
            template_hash: d.target.config_hash.clone(),
            color,
            promoted_at: crate::clock::now_rfc3339(),
            outcome: Outcome::VerifyFailed,
        };
        if !can_return {
            self.edit(|s| push_history(s, failed));
            self.halt(
                d,
                Phase::Degraded,
                format!(
                    "{}: {why}; there is no previous color to return to, so {color} stays live",
                    d.target.version
                ),
            );
            return Ok(());
        }
        let back_release = back_dep.as_ref().and_then(objects::release_of);
        self.switch_to(SwitchNote {
            uid: self.uid(),
            name: self.bgd.name_any(),
            at_ms: self.switch_ms(),
            live_color: back,
            live_revision: back_release.as_ref().map(|(_, rev)| *rev),
            live_version: back_release.map(|(k, _)| k.version),
            history: vec![failed],
            verify_until_ms: None,
            halted: Some((d.target.config_hash.clone(), Phase::RolledBack)),
            message: format!(
                "{}: {why}; traffic is back on {back}, and {color} was scaled down",
                d.target.version
            ),
        })
        .await?;
        self.scale_down(color).await
    }
}
