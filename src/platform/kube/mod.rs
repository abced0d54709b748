//! Kubernetes: each color is a Deployment (`<name>-blue`, `<name>-green`),
//! and the switch is one patch of the active Service's selector.
//!
//! This platform observes and acts for one `BlueGreenDeployment`; the
//! planner decides. Unlike Docker, no act may block: the operator runs one
//! step per reconcile and requeues, so waiting (for availability, for a gate,
//! for approval) is a step that returns at once and is planned again. The
//! deploy record lives in the CR's status; acts edit a working copy that the
//! reconcile writes back.
//!
//! Here: the platform, what the spec asks for (`desired`), observe, and the
//! dispatch of each step to its act. The acts, one concept each, are
//! `impl KubePlatform` blocks in child modules: `launch` (a color's
//! Deployment and its size), `gate`, `switch` (and revision pruning),
//! `verify` (and rolling a failed live release back), `halt` (the progress
//! deadline and abort). Below them: `objects` (the Kubernetes objects, built
//! and read), `revisions` (the templates kept as ControllerRevisions),
//! `checks` (HTTP and Prometheus checks) and `crd` (the custom resource).

pub mod checks;
pub mod crd;
pub mod objects;
pub mod revisions;

mod gate;
mod halt;
mod launch;
mod note;
mod switch;
mod verify;

use std::collections::BTreeMap;
use std::sync::Mutex;

use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::error::{Error, Result};
use crate::health::{probe_client, ProbeClient};
use crate::plan::{self, Desired, ImageState, Intent, LockState, Observed, Step};
use crate::platform::kube::crd::{
    annotation, label, BlueGreenDeployment, BlueGreenDeploymentStatus,
};
use crate::platform::Platform;
use crate::record::{DeployRecord, VerifyWindow};
use crate::release::{Color, ReleaseKey};

/// The field manager of cyan's server-side applies.
pub const FIELD_MANAGER: &str = "cyan-operator";

pub struct KubePlatform {
    bgd: BlueGreenDeployment,
    ns: String,
    deployments: Api<Deployment>,
    services: Api<Service>,
    bgds: Api<BlueGreenDeployment>,
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
            bgds: Api::namespaced(client.clone(), &ns),
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

    pub fn status(&self) -> BlueGreenDeploymentStatus {
        self.status.lock().expect("status lock").clone()
    }

    pub fn edit<R>(&self, f: impl FnOnce(&mut BlueGreenDeploymentStatus) -> R) -> R {
        f(&mut self.status.lock().expect("status lock"))
    }

    /// How many replicas the target runs now, as the planner sized it at
    /// this reconcile's observe (`plan::replicas`: the preview size while
    /// it waits for approval); `d.replicas` before any observe.
    fn size(&self, d: &Desired) -> u32 {
        self.sized.lock().expect("sized lock").unwrap_or(d.replicas)
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

    /// The color the active Service sends traffic to once its selector is
    /// cyan's again. The selector's color is cyan's to set: one someone
    /// else moved (a `kubectl apply` of a Service file that names a color,
    /// or none) is put back on the live color the status records while
    /// that color is fully available, so a release that was halted never
    /// goes back on the air because the Service names its color, and a
    /// pinned color is not taken for a switch. The status's message says
    /// so (the operator's log too).
    async fn restore_selector(&self, svc: &Service) -> Result<Option<Color>> {
        let selected = objects::selected_color(svc);
        let Some(recorded) = self.status().live_color.filter(|c| selected != Some(*c)) else {
            return Ok(selected);
        };
        let serves = self.deployment(recorded).await?;
        if !serves.as_ref().is_some_and(objects::fully_available) {
            return Ok(selected);
        }
        tracing::warn!(
            service = self.bgd.spec.active_service,
            selected = selected.map(Color::as_str),
            live = recorded.as_str(),
            "the active Service's color was changed by someone else; putting it back on the live color"
        );
        self.select(&self.bgd.spec.active_service, "activeService", recorded)
            .await?;
        self.edit(|s| {
            s.message = Some(format!(
                "activeService {} was moved to {} by someone else and put back on {recorded}, the live color: move traffic with cyan promote or cyan rollback",
                self.bgd.spec.active_service,
                selected.map_or("no color", Color::as_str)
            ))
        });
        Ok(Some(recorded))
    }

    /// Refuses an active Service that another BlueGreenDeployment switches
    /// (its note names another object that still exists): two objects on
    /// one Service each put its color back on their own, and traffic went
    /// back and forth between two apps' pods many times a minute. A note of
    /// an object since deleted is no one's.
    async fn check_owner(&self, svc: &Service) -> Result<()> {
        let Some(note) = note::SwitchNote::read(svc).filter(|n| n.uid != self.uid()) else {
            return Ok(());
        };
        let other = self.bgds.get_opt(&note.name).await?;
        if other.is_some_and(|o| o.metadata.uid.as_deref() == Some(note.uid.as_str())) {
            return Err(Error::Config(format!(
                "activeService {} is switched by BlueGreenDeployment {}: each BlueGreenDeployment needs a Service of its own",
                self.bgd.spec.active_service, note.name
            )));
        }
        Ok(())
    }

    /// The object's `metadata.uid` (empty for one not read from a server).
    fn uid(&self) -> String {
        self.bgd.metadata.uid.clone().unwrap_or_default()
    }

    /// The time a switch made now is noted at (Unix ms): now, or just after
    /// the last switch when the clock has not moved past it, so each note
    /// is later than the one before (`SwitchNote::apply` relies on it).
    fn switch_ms(&self) -> u64 {
        let last = self.status().switched_at_ms;
        last.map_or(self.now_ms, |at| self.now_ms.max(at + 1))
    }

    /// Switches the active Service to `note.live_color`, writing `note` on
    /// it in the same patch, then records it in the status (`note`).
    async fn switch_to(&self, note: note::SwitchNote) -> Result<()> {
        let service = &self.bgd.spec.active_service;
        let svc = self.service(service, "activeService").await?;
        objects::check_selector(&svc, &self.bgd).map_err(Error::Config)?;
        self.check_owner(&svc).await?;
        let text = serde_json::to_string(&note).expect("a note serializes");
        let patch = json!({
            "metadata": { "annotations": { note::ANNOTATION: text } },
            "spec": { "selector": { label::COLOR: note.live_color.as_str() } },
        });
        self.services
            .patch(service, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        self.edit(|s| note.apply(s));
        Ok(())
    }

    /// Points the preview Service at `color`, which is never the live one.
    async fn preview(&self, color: Color) -> Result<()> {
        match &self.bgd.spec.preview_service {
            Some(name) => self.select(name, "previewService", color).await,
            None => Ok(()),
        }
    }
}

impl Platform for KubePlatform {
    async fn observe(&self, d: &Desired) -> Result<Observed> {
        let svc = self
            .service(&self.bgd.spec.active_service, "activeService")
            .await?;
        self.check_owner(&svc).await?;
        // A switch whose status write was lost is recorded from its note.
        if let Some(note) = note::SwitchNote::of(&svc, &self.uid(), self.now_ms) {
            self.edit(|s| note.apply(s));
        }
        let live = self.restore_selector(&svc).await?;
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
                ..DeployRecord::default()
            },
            lock: LockState::Ours,
            now_ms: self.now_ms,
            drift: Vec::new(),
            // The deadline bounds a rollout until its candidate first passes
            // its gates; a gate again after that (the scale-up of a preview
            // at promotion, a pod's blip while it waits) has none.
            progress_due_ms: status
                .progress_started_ms
                .filter(|_| status.gated_at_ms.is_none())
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
