//! The Docker platform: containers through bollard, traffic through the cyan proxy.
//!
//! What it knows is on the engine and in the proxy: container labels say
//! which app, environment, color and release a container belongs to; the
//! proxy holds the live color, the upstreams and the deploy record.
//!
//! This file holds the platform and its observe/act dispatch. Each act,
//! and each thing the acts touch, has a file of its own:
//!
//! - `connect`: the engine connection, and the refusal of a remote engine;
//! - `spec`: a replica's container as cyan writes and reads it (pure);
//! - `lifecycle`: listing, launching (`Step::Launch`) and removing
//!   (`Step::Clear`, `Step::Retire`) a color's containers;
//! - `network`: the `cyan` network, made and healed under a host-wide lock;
//! - `route`: the app's route in the proxy: spec, deploy record,
//!   registration as a color or candidate, the switch (`Step::Switch`);
//! - `gate`: the health gate (`Step::Gate`) and what the engine tells it,
//!   with two of its probes in `listeners` and `exec`;
//! - `verify`: the verify window after a switch (`Step::Verify`);
//! - `drift`: live serving that disagrees with the containers, and its
//!   repair (`Step::Repair`).

mod connect;
mod drift;
mod exec;
mod gate;
mod lifecycle;
mod listeners;
mod network;
mod route;
mod spec;
mod verify;

use bollard::Docker;

use super::Platform;
use crate::config::{Loaded, Secrets};
use crate::error::{Error, Result};
use crate::image;
use crate::output::Output;
use crate::plan::{Desired, ImageState, LockState, Observed, Step};
use crate::proxy::client::AdminClient;
use crate::record::{DeployRecord, VerifyFigures};

pub use connect::connect;
pub use route::parse_record;
pub use spec::{label, Managed};

pub struct DockerPlatform<'a> {
    pub docker: Docker,
    pub proxy: AdminClient,
    /// A fleet host's SSH connection: the gate reaches replicas through it.
    pub tunnel: Option<std::sync::Arc<crate::fleet::Tunnel>>,
    /// The other hosts' proxies of a fleet: verification counts their
    /// requests too.
    pub peers: Vec<AdminClient>,
    pub cfg: &'a Loaded,
    /// Values of `secrets`, read from cyan's environment.
    pub secrets: Secrets,
    pub lock_token: String,
    pub out: &'a Output,
    /// What this run's verify window concluded, for the command's result.
    pub verdict: std::sync::Mutex<Option<VerifyFigures>>,
    /// `cyan promote --from`: the stage whose release this deploy ships,
    /// written into the switch's history entry.
    pub promoted_from: Option<String>,
}

impl Platform for DockerPlatform<'_> {
    async fn observe(&self, d: &Desired) -> Result<Observed> {
        let c = &self.cfg.config;
        // Three independent reads, at once: an observe runs before every step.
        let (image, containers, view) = tokio::try_join!(
            image::inspect(&self.docker, c.image.as_str(), &d.target.version),
            self.containers(),
            self.route_view(),
        )?;
        let image = match image {
            None => ImageState::Missing,
            Some(i) if i.digest.is_some() => ImageState::Pushed,
            Some(_) => ImageState::Local,
        };
        let drift = self.drift(d.replicas, &containers, view.as_ref());
        let (live, record, lock) = match &view {
            Some(v) => (
                v.state.live,
                parse_record(&v.state.record),
                match &v.state.lock {
                    Some(l) if l.token != self.lock_token => LockState::Other(l.describe()),
                    _ => LockState::Ours,
                },
            ),
            None => (None, DeployRecord::default(), LockState::Ours),
        };
        Ok(Observed {
            image,
            live,
            sets: spec::set_states(&containers),
            record,
            lock,
            now_ms: crate::clock::now_ms(),
            drift,
            // The gate bounds itself (`health.deadline`).
            progress_due_ms: None,
            // Only `cyan promote` promotes on Docker.
            auto_promote_due_ms: None,
        })
    }

    async fn act(&self, step: &Step, d: &Desired) -> Result<()> {
        let version = &d.target.version;
        match step {
            Step::Build => {
                if image::pull(&self.docker, self.cfg, version, self.out)
                    .await?
                    .is_none()
                {
                    image::build(&self.docker, self.cfg, version, self.out).await?;
                }
                Ok(())
            }
            Step::Push => image::push(&self.docker, self.cfg, version, self.out)
                .await
                .map(drop),
            Step::Clear(c) | Step::Retire(c) => self.clear(*c).await,
            Step::Launch(c) => self.launch(*c, d).await,
            Step::Gate(c) => self.gate(*c, d).await,
            Step::Switch(c) => self.switch(*c, d).await,
            Step::Verify(c) => self.verify(*c).await,
            Step::Repair(c) => self.repair(*c, d).await,
            // Never planned here: `progress_due_ms` is `None`.
            Step::Halt(c) => {
                self.clear(*c).await?;
                Err(Error::GateFailed(format!(
                    "{version} did not pass its gates in time; {c} was removed"
                )))
            }
            Step::AwaitApproval(_) | Step::Done | Step::Failed(_) | Step::Blocked(_) => Ok(()),
        }
    }
}

/// A Docker id (image or container) as people read it: its first 12 hex
/// digits, without `sha256:`.
fn short_id(id: &str) -> &str {
    let id = id.trim_start_matches("sha256:");
    &id[..id.len().min(12)]
}
