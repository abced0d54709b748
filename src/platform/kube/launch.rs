//! A color's Deployment and its size: launched (applied at the revision
//! of the spec's template, at the size the planner chose, with the preview
//! Service on it), scaled down, and the live one kept at `spec.replicas`.
//! Scaling down keeps the Deployment, so its revision can come back.

use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::{objects, revisions, KubePlatform, FIELD_MANAGER};
use crate::error::Result;
use crate::plan::Desired;
use crate::release::Color;

impl KubePlatform {
    pub(super) async fn launch(&self, color: Color, d: &Desired) -> Result<()> {
        let hash = &d.target.config_hash;
        let revision = revisions::ensure(&self.revisions, &self.bgd, hash).await?;
        let replicas = self.size(d);
        let dep = objects::deployment(&self.bgd, color, replicas as i32, revision);
        let name = objects::deployment_name(&self.bgd, color);
        self.deployments
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&dep),
            )
            .await?;
        self.preview(color).await?;
        self.edit(|s| {
            s.candidate_revision = Some(revision);
            s.message = Some(format!(
                "{name} runs revision {revision} ({})",
                d.target.version
            ));
        });
        Ok(())
    }

    /// Scales a color to 0 and forgets that it passed its gates. The
    /// Deployment stays, so its revision can come back.
    pub async fn scale_down(&self, color: Color) -> Result<()> {
        let name = objects::deployment_name(&self.bgd, color);
        if let Some(dep) = self.deployment(color).await? {
            if dep.spec.and_then(|s| s.replicas) != Some(0) {
                let patch = json!({ "spec": { "replicas": 0 } });
                self.deployments
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
        }
        self.edit(|s| s.gated.remove(&color));
        Ok(())
    }

    /// The live color follows `spec.replicas` (a scale, not a new rollout).
    pub(super) async fn keep_live_scaled(&self) -> Result<()> {
        let observed = *self.live_size.lock().expect("live size lock");
        let Some((live, total)) = observed else {
            return Ok(());
        };
        let wanted = self.bgd.spec.replicas.max(1) as u32;
        if total != wanted {
            let patch = json!({ "spec": { "replicas": wanted } });
            self.deployments
                .patch(
                    &objects::deployment_name(&self.bgd, live),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
        }
        Ok(())
    }
}
