//! Kubernetes: each color is a Deployment (`<name>-blue`, `<name>-green`),
//! and the switch is one patch of the active Service's selector.
//!
//! This platform observes and acts for one `BlueGreenDeployment`; the
//! planner decides. Unlike Docker, no act may block: the operator runs one
//! step per reconcile and requeues, so waiting (for availability, for a gate,
//! for approval) is a step that returns at once and is planned again. The
//! deploy record lives in the CR's status; acts edit a working copy that the
//! reconcile writes back.

pub mod checks;
pub mod crd;
pub mod objects;
pub mod revisions;

use std::collections::BTreeMap;
use std::sync::Mutex;

use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::error::{Error, Result};
use crate::health::{probe_client, ProbeClient};
use crate::plan::{self, Abort, Desired, ImageState, Intent, LockState, Observed, Step};
use crate::platform::kube::crd::{
    annotation, label, BlueGreenDeployment, BlueGreenDeploymentStatus, HistoryEntry, Outcome, Phase,
};
use crate::platform::Platform;
use crate::record::{DeployRecord, VerifyWindow, HISTORY_LIMIT};
use crate::release::{Color, ReleaseKey};

/// The field manager of cyan's server-side applies.
pub const FIELD_MANAGER: &str = "cyan-operator";

pub struct KubePlatform {
    bgd: BlueGreenDeployment,
    ns: String,
    deployments: Api<Deployment>,
    services: Api<Service>,
    pods: Api<Pod>,
    revisions: Api<ControllerRevision>,
    probe: ProbeClient,
    now_ms: u64,
    status: Mutex<BlueGreenDeploymentStatus>,
    /// The live color and its Deployment's replicas, as last observed (the
    /// `Done` act needs them, and this reconcile has just read them).
    live_size: Mutex<Option<(Color, u32)>>,
    /// The replicas the planner sizes the target at (`plan::replicas`), as
    /// of this reconcile's observe: `Launch` creates or scales to that many.
    sized: Mutex<Option<u32>>,
}

impl KubePlatform {
    pub fn new(client: Client, bgd: BlueGreenDeployment, now_ms: u64) -> Self {
        let ns = bgd.namespace().unwrap_or_else(|| "default".into());
        let status = bgd.status.clone().unwrap_or_default();
        KubePlatform {
            deployments: Api::namespaced(client.clone(), &ns),
            services: Api::namespaced(client.clone(), &ns),
            pods: Api::namespaced(client.clone(), &ns),
            revisions: Api::namespaced(client, &ns),
            probe: probe_client(),
            ns,
            bgd,
            now_ms,
            status: Mutex::new(status),
            live_size: Mutex::default(),
            sized: Mutex::default(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    pub fn status(&self) -> BlueGreenDeploymentStatus {
        self.status.lock().expect("status lock").clone()
    }

    pub fn edit<R>(&self, f: impl FnOnce(&mut BlueGreenDeploymentStatus) -> R) -> R {
        f(&mut self.status.lock().expect("status lock"))
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.bgd.annotations().get(key).map(String::as_str)
    }

    /// What the spec and its annotations ask for now.
    pub fn desired(&self) -> Desired {
        let spec = &self.bgd.spec;
        let target = objects::target(&self.bgd);
        let hash = target.config_hash.as_str();
        let intent = if self.annotation(annotation::ROLLBACK) == Some(hash) {
            Intent::Rollback
        } else if self.annotation(annotation::PROMOTE) == Some(hash) {
            Intent::Promote
        } else {
            Intent::Deploy
        };
        Desired {
            intent,
            target,
            replicas: spec.replicas.max(1) as u32,
            preview_replicas: spec.preview_replicas.map(|n| n.max(1) as u32),
            build: false,
            push: false,
            require_approval: spec.require_approval,
            keep_hot: false,
            retire_delay_ms: u64::from(spec.scale_down_delay_seconds) * 1000,
        }
    }

    async fn deployment(&self, color: Color) -> Result<Option<Deployment>> {
        Ok(self
            .deployments
            .get_opt(&objects::deployment_name(&self.bgd, color))
            .await?)
    }

    async fn service(&self, name: &str, role: &str) -> Result<Service> {
        self.services.get_opt(name).await?.ok_or_else(|| {
            Error::Config(format!(
                "{role} Service {}/{name} does not exist: create it (cyan only switches its selector)",
                self.ns
            ))
        })
    }

    async fn select(&self, service: &str, role: &str, color: Color) -> Result<()> {
        let svc = self.service(service, role).await?;
        objects::check_selector(&svc, &self.bgd).map_err(Error::Config)?;
        if objects::selected_color(&svc) != Some(color) {
            let patch = json!({ "spec": { "selector": { label::COLOR: color.as_str() } } });
            self.services
                .patch(service, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        Ok(())
    }

    /// Points the preview Service at `color`, which is never the live one.
    async fn preview(&self, color: Color) -> Result<()> {
        match &self.bgd.spec.preview_service {
            Some(name) => self.select(name, "previewService", color).await,
            None => Ok(()),
        }
    }

    async fn launch(&self, color: Color, d: &Desired) -> Result<()> {
        let hash = &d.target.config_hash;
        let revision = revisions::ensure(&self.revisions, &self.bgd, hash).await?;
        let replicas = self.sized.lock().expect("sized lock").unwrap_or(d.replicas);
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

    async fn gate(&self, color: Color, d: &Desired) -> Result<()> {
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
                d.replicas,
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
        if pods.len() < d.replicas as usize {
            return Ok(Err(format!(
                "{}/{} candidate pods are ready to probe",
                pods.len(),
                d.replicas
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

    /// `Step::Halt`: the candidate missed its progress deadline. It is
    /// scaled down and halted; the live color keeps serving. The message
    /// keeps the gate's last reason.
    async fn halt_overdue(&self, color: Color, d: &Desired) -> Result<()> {
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
    fn halt(&self, d: &Desired, phase: Phase, message: String) {
        let hash = d.target.config_hash.clone();
        self.edit(|s| {
            s.halted_hash = Some(hash);
            s.verify_until_ms = None;
            s.phase = Some(phase);
            s.message = Some(message);
        });
    }

    async fn switch(&self, color: Color, d: &Desired) -> Result<()> {
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
        self.select(&self.bgd.spec.active_service, "activeService", color)
            .await?;
        let rollback = d.intent == Intent::Rollback;
        let verify = self.bgd.spec.verify.as_ref().filter(|_| !rollback);
        let now = self.now_ms;
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
        self.edit(|s| {
            push_history(s, entry);
            s.switched_at_ms = Some(now);
            s.verify_until_ms = verify.map(|v| now + u64::from(v.duration_seconds) * 1000);
            s.verify_failures = 0;
            s.live_color = Some(color);
            s.live_revision = Some(revision);
            s.live_version = Some(key.version.clone());
            s.message = Some(format!(
                "switched {} to {color} ({})",
                self.bgd.spec.active_service, key.version
            ));
        });
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

    async fn verify(&self, color: Color, d: &Desired) -> Result<()> {
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
        self.edit(|s| push_history(s, failed));
        if !can_return {
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
        self.select(&self.bgd.spec.active_service, "activeService", back)
            .await?;
        self.scale_down(color).await?;
        let back_release = back_dep.as_ref().and_then(objects::release_of);
        self.edit(|s| {
            s.live_color = Some(back);
            if let Some((k, rev)) = back_release {
                s.live_revision = Some(rev);
                s.live_version = Some(k.version);
            }
        });
        self.halt(
            d,
            Phase::RolledBack,
            format!(
                "{}: {why}; traffic is back on {back}, and {color} was scaled down",
                d.target.version
            ),
        );
        Ok(())
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

    /// The live color follows `spec.replicas` (a scale, not a new rollout).
    async fn keep_live_scaled(&self) -> Result<()> {
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

fn push_history(s: &mut BlueGreenDeploymentStatus, entry: HistoryEntry) {
    s.history.push(entry);
    let excess = s.history.len().saturating_sub(HISTORY_LIMIT);
    s.history.drain(..excess);
}

impl Platform for KubePlatform {
    async fn observe(&self, d: &Desired) -> Result<Observed> {
        let svc = self
            .service(&self.bgd.spec.active_service, "activeService")
            .await?;
        let live = objects::selected_color(&svc);
        let mut sets = BTreeMap::new();
        for color in Color::ALL {
            if let Some(dep) = self.deployment(color).await? {
                sets.insert(color, objects::set_state(&dep));
            }
        }
        let status = self.status();
        let key_in = |c: Color| -> Option<ReleaseKey> { sets.get(&c)?.release.clone() };
        let gated = status
            .gated
            .iter()
            .filter_map(|(c, h)| Some((*c, key_in(*c).filter(|k| &k.config_hash == h)?)))
            .collect();
        // Here checks run all through the window and its end is the
        // verdict (no failure_threshold failures in a row: a pass), so
        // only a window still open is one.
        let verify = match (live, status.verify_until_ms) {
            (Some(color), Some(until_ms)) if self.now_ms < until_ms => {
                key_in(color).map(|release| VerifyWindow {
                    color,
                    release,
                    until_ms,
                    deadline_ms: None,
                })
            }
            _ => None,
        };
        let halted = status
            .halted_hash
            .filter(|h| *h == d.target.config_hash)
            .map(|_| d.target.clone());
        *self.live_size.lock().expect("live size lock") =
            live.and_then(|c| Some((c, sets.get(&c)?.total)));
        let observed = Observed {
            image: ImageState::Pushed,
            live,
            sets,
            record: DeployRecord {
                gated,
                verify,
                history: Vec::new(),
                switched_at_ms: status.switched_at_ms,
                halted,
                runtimes: Vec::new(),
            },
            lock: LockState::Ours,
            now_ms: self.now_ms,
            drift: Vec::new(),
            progress_due_ms: status
                .progress_started_ms
                .map(|started| started + u64::from(self.bgd.spec.progress_deadline_seconds) * 1000),
            auto_promote_due_ms: self
                .bgd
                .spec
                .auto_promote_seconds
                .zip(status.gated_at_ms)
                .map(|(secs, gated)| gated + u64::from(secs) * 1000),
        };
        *self.sized.lock().expect("sized lock") = Some(plan::replicas(d, &observed));
        Ok(observed)
    }

    async fn act(&self, step: &Step, d: &Desired) -> Result<()> {
        match step {
            Step::Launch(c) => self.launch(*c, d).await,
            Step::Clear(c) | Step::Retire(c) => self.scale_down(*c).await,
            Step::Gate(c) => self.gate(*c, d).await,
            Step::Switch(c) => self.switch(*c, d).await,
            Step::Verify(c) => self.verify(*c, d).await,
            Step::Done => self.keep_live_scaled().await,
            // Services route by themselves: nothing drifts (`Observed::drift`).
            Step::Repair(_) => Ok(()),
            Step::Halt(c) => self.halt_overdue(*c, d).await,
            Step::AwaitApproval(_) | Step::Failed(_) | Step::Blocked(_) => Ok(()),
            Step::Build | Step::Push => Err(Error::Platform(
                "the operator neither builds nor pushes; `cyan deploy` does that before it writes the BlueGreenDeployment".into(),
            )),
        }
    }
}
