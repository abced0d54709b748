//! The switch: one patch of the active Service's selector and its switch
//! note (the preview moves off first), recorded in the status's history,
//! and the template revisions pruned to `revisionHistoryLimit` once it is
//! done.

use kube::ResourceExt;

use super::crd::{BlueGreenDeploymentStatus, HistoryEntry, Outcome};
use super::note::SwitchNote;
use super::{objects, revisions, KubePlatform};
use crate::error::{Error, Result};
use crate::plan::{Desired, Intent};
use crate::record::HISTORY_LIMIT;
use crate::release::Color;

impl KubePlatform {
    pub(super) async fn switch(&self, color: Color, d: &Desired) -> Result<()> {
        let Some(dep) = self.deployment(color).await? else {
            return Err(Error::Platform(format!(
                "{color} has no Deployment to switch to"
            )));
        };
        if !objects::fully_available(&dep) {
            // Never switch to a color that is not fully available: gate again.
            self.edit(|s| s.gated.remove(&color));
            return Ok(());
        }
        let (key, revision) = objects::release_of(&dep).ok_or_else(|| {
            Error::Platform(format!("{} lost its cyan annotations", dep.name_any()))
        })?;
        // The preview moves off first, so it never selects the live color.
        self.preview(color.other()).await?;
        let rollback = d.intent == Intent::Rollback;
        let verify = self.bgd.spec.verify.as_ref().filter(|_| !rollback);
        let (at, now) = (self.switch_ms(), self.now_ms);
        let entry = HistoryEntry {
            revision,
            version: key.version.clone(),
            image: objects::image(&self.bgd),
            template_hash: key.config_hash.clone(),
            color,
            promoted_at: crate::clock::now_rfc3339(),
            outcome: if rollback {
                Outcome::RolledBack
            } else {
                Outcome::Promoted
            },
        };
        self.switch_to(SwitchNote {
            uid: self.uid(),
            name: self.bgd.name_any(),
            at_ms: at,
            live_color: color,
            live_revision: Some(revision),
            live_version: Some(key.version.clone()),
            history: vec![entry],
            verify_until_ms: verify.map(|v| now + u64::from(v.duration_seconds) * 1000),
            halted: None,
            message: format!(
                "switched {} to {color} ({})",
                self.bgd.spec.active_service, key.version
            ),
        })
        .await?;
        self.prune().await
    }

    /// Keeps `revisionHistoryLimit` revisions, and always the two colors'.
    async fn prune(&self) -> Result<()> {
        let mut keep = Vec::new();
        for color in Color::ALL {
            if let Some((k, _)) = self
                .deployment(color)
                .await?
                .as_ref()
                .and_then(objects::release_of)
            {
                keep.push(k.config_hash);
            }
        }
        revisions::prune(
            &self.revisions,
            &self.bgd.name_any(),
            self.bgd.spec.revision_history_limit,
            &keep,
        )
        .await
    }
}

/// Appends to the status's history, which keeps the last `HISTORY_LIMIT`.
pub(super) fn push_history(s: &mut BlueGreenDeploymentStatus, entry: HistoryEntry) {
    s.history.push(entry);
    let excess = s.history.len().saturating_sub(HISTORY_LIMIT);
    s.history.drain(..excess);
}
