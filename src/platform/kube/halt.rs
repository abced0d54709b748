//! Stopping a rollout: a candidate past its progress deadline
//! (`Step::Halt`) and `cyan abort` (what `plan::abort` answers). Both end in
//! `halt`, as a failed verify does: the spec's release is not started again
//! on its own, until a new template or retry token lifts it.

use super::crd::Phase;
use super::KubePlatform;
use crate::error::Result;
use crate::plan::{self, Abort, Desired, Observed};
use crate::release::Color;

impl KubePlatform {
    /// `Step::Halt`: the candidate missed its progress deadline. It is
    /// scaled down and halted; the live color keeps serving. The message
    /// keeps the gate's last reason.
    pub(super) async fn halt_overdue(&self, color: Color, d: &Desired) -> Result<()> {
        self.scale_down(color).await?;
        let secs = self.bgd.spec.progress_deadline_seconds;
        let why = self.status().message.unwrap_or_default();
        self.halt(d, Phase::Degraded, format!(
            "{} did not pass its gates within progressDeadlineSeconds ({secs}s): {why}. It was scaled down; the live color kept serving. Fix the template, or `cyan deploy` again to retry",
            d.target.version
        ));
        Ok(())
    }

    /// Stops the rollout of the spec's release: it is not started again on
    /// its own (a new template or retry token lifts the halt).
    pub(super) fn halt(&self, d: &Desired, phase: Phase, message: String) {
        let hash = d.target.config_hash.clone();
        self.edit(|s| {
            s.halted_hash = Some(hash);
            s.verify_until_ms = None;
            s.phase = Some(phase);
            s.message = Some(message);
        });
    }

    /// `cyan abort`: acts on the planner's answer (`plan::abort`): a
    /// candidate not yet live is scaled down and halted; a release still
    /// being verified is rolled back; a verified live release is left alone
    /// (that is what rollback is for).
    pub async fn abort(&self, o: &Observed, d: &Desired) -> Result<()> {
        match plan::abort(o, &d.target) {
            Abort::SwitchBack(live) => {
                self.roll_back_live(live, d, "aborted while verifying")
                    .await
            }
            Abort::Verified => {
                self.edit(|s| {
                    s.message = Some(format!(
                        "nothing to abort: {} is live and verified; use cyan rollback",
                        d.target.version
                    ))
                });
                Ok(())
            }
            Abort::Remove(colors) => {
                for color in colors {
                    self.scale_down(color).await?;
                }
                self.halt(
                    d,
                    Phase::Degraded,
                    format!(
                        "{} was aborted and scaled down; the live color kept serving",
                        d.target.version
                    ),
                );
                Ok(())
            }
        }
    }
}
