//! The gate a candidate passes before it may go live: every pod available
//! (for `minReadySeconds`), then the HTTP gates against each ready pod.
//! Not yet is not an error: the status says why and the planner asks
//! again next reconcile (and halts the candidate at its progress deadline).

use kube::api::ListParams;

use super::{checks, objects, KubePlatform};
use crate::error::{Error, Result};
use crate::plan::Desired;
use crate::release::Color;

impl KubePlatform {
    pub(super) async fn gate(&self, color: Color, d: &Desired) -> Result<()> {
        let name = objects::deployment_name(&self.bgd, color);
        let dep = self
            .deployment(color)
            .await?
            .ok_or_else(|| Error::Platform(format!("{name} vanished while being gated")))?;
        if !objects::fully_available(&dep) {
            self.edit(|s| s.gated.remove(&color));
            let st = dep.status.clone().unwrap_or_default();
            let why = format!(
                "{name}: {}/{} pods available (ready for minReadySeconds {})",
                st.available_replicas.unwrap_or(0),
                self.size(d),
                self.bgd.spec.gates.min_ready_seconds
            );
            return self.not_yet(why);
        }
        if let Err(why) = self.http_gates(color, d).await? {
            return self.not_yet(why);
        }
        let now = self.now_ms;
        self.edit(|s| {
            s.gated.insert(color, d.target.config_hash.clone());
            // The rollout's first gate starts its auto-promote delay; a
            // gate again (a scale-up to full size) does not restart it.
            s.gated_at_ms.get_or_insert(now);
            s.message = Some(format!("{name} passed its gates"));
        });
        Ok(())
    }

    /// The HTTP gates against every ready candidate pod: `Ok(Err(why))` when
    /// one fails this round.
    async fn http_gates(&self, color: Color, d: &Desired) -> Result<Result<(), String>> {
        let gates = &self.bgd.spec.gates;
        let first_deploy = self.status().history.is_empty();
        if gates.http.is_empty() || (gates.skip_first_deploy && first_deploy) {
            return Ok(Ok(()));
        }
        let lp = ListParams::default().labels(&objects::pod_selector(&self.bgd, color));
        let pods = objects::ready_ips(&self.pods.list(&lp).await?.items);
        let size = self.size(d);
        if pods.len() < size as usize {
            return Ok(Err(format!(
                "{}/{size} candidate pods are ready to probe",
                pods.len()
            )));
        }
        for check in &gates.http {
            for (pod, ip) in &pods {
                let url = checks::pod_url(check, ip);
                if let Err(why) = checks::http(&self.probe, check, &url).await {
                    return Ok(Err(format!("gate on pod {pod}: {why}")));
                }
            }
        }
        Ok(Ok(()))
    }

    /// The candidate is not through its gates yet: the status says why
    /// (the planner halts it once its progress deadline passes).
    fn not_yet(&self, why: String) -> Result<()> {
        self.edit(|s| s.message = Some(why));
        Ok(())
    }
}
