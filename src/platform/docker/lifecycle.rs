//! A color's containers on the engine: listing them, launching a release
//! into a color (create, start, adopt what a killed run left), and removing
//! them.
//!
//! Most of this file is about runs that were killed half-way: the engine
//! may still finish (or undo) their creates after this run looked, so every
//! call here expects the container it saw, or did not see, to have changed.

use std::collections::HashMap;
use std::time::Duration;

use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};

use super::spec::{container_spec, Managed};
use super::{label, short_id, DockerPlatform};
use crate::error::{Error, Result};
use crate::image;
use crate::plan::Desired;
use crate::release::{Color, Release};

impl DockerPlatform<'_> {
    /// All of this app's containers, sorted by color and replica.
    pub async fn containers(&self) -> Result<Vec<Managed>> {
        let c = &self.cfg.config;
        let mut filters = HashMap::new();
        filters.insert(
            "label".to_string(),
            vec![
                format!("{}={}", label::APP, c.app),
                format!("{}={}", label::ENV, c.environment),
            ],
        );
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = self.docker.list_containers(Some(opts)).await?;
        let mut out: Vec<Managed> = list
            .into_iter()
            .filter_map(|s| Managed::from_summary(s, c.port))
            .collect();
        out.sort_by(|a, b| (a.color, a.replica, &a.name).cmp(&(b.color, b.replica, &b.name)));
        Ok(out)
    }

    /// The containers of `color`.
    pub(super) async fn color_set(&self, color: Color) -> Result<Vec<Managed>> {
        Ok(self
            .containers()
            .await?
            .into_iter()
            .filter(|m| m.color == color)
            .collect())
    }

    /// `Step::Launch`: `d.replicas` containers of the desired release in
    /// `color`, created and started; those already there are kept.
    pub(super) async fn launch(&self, color: Color, d: &Desired) -> Result<()> {
        let network = self.ensure_network().await?;
        let c = &self.cfg.config;
        // One listing for both the replicas found and the next revision: a
        // killed run's create that shows up between two listings would
        // otherwise be taken for an older revision.
        let all = self.containers().await?;
        let existing: Vec<&Managed> = all.iter().filter(|m| m.color == color).collect();
        let info = image::inspect(&self.docker, c.image.as_str(), &d.target.version)
            .await?
            .ok_or_else(|| {
                Error::Refused(format!("image {} is gone", c.image.tag(&d.target.version)))
            })?;
        let revision = match existing.first() {
            Some(m) => m.release.revision,
            None => self.next_revision(&all).await?,
        };
        let release = Release {
            version: d.target.version.clone(),
            revision,
            image_id: info.id,
            digest: info.digest,
            config_hash: d.target.config_hash.clone(),
        };
        self.out.detail(format!(
            "{} × {} (revision {revision}, image {})",
            d.replicas,
            c.image.tag(&release.version),
            short_id(&release.image_id)
        ));
        // Replicas are created and started at once: the engine's network
        // setup for each start is most of a launch's time.
        let launches = (0..d.replicas).map(|replica| {
            let found = existing.iter().find(|m| m.replica == replica).copied();
            self.launch_replica(color, &release, replica, found, &network)
        });
        futures_util::future::try_join_all(launches).await?;
        self.remove_strays(color, &release, d.replicas).await
    }

    /// Removes containers of `color` that are not replicas of `release`:
    /// the engine can finish a killed run's create after this run listed
    /// the containers, under another revision's name. (The color being
    /// launched is never live: the planner does not launch into it.)
    async fn remove_strays(&self, color: Color, release: &Release, replicas: u32) -> Result<()> {
        let strays = self.containers().await?.into_iter().filter(|m| {
            m.color == color && (m.release.revision != release.revision || m.replica >= replicas)
        });
        for m in strays {
            self.out
                .detail(format!("removing {}, left by an interrupted run", m.name));
            let rm = RemoveContainerOptionsBuilder::default().force(true).build();
            match self.docker.remove_container(&m.id, Some(rm)).await {
                Ok(())
                | Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Creates (unless a container of this replica exists) and starts one
    /// replica; one already running is left alone.
    async fn launch_replica(
        &self,
        color: Color,
        release: &Release,
        replica: u32,
        found: Option<&Managed>,
        network: &str,
    ) -> Result<()> {
        let mut id = match found {
            Some(m) if m.state != "created" => return Ok(()),
            Some(m) => m.id.clone(),
            None => self.create(color, release, replica, network).await?,
        };
        // A killed run's create can still be undone by the engine (it
        // rolls back a create whose client went away), so the container
        // seen a moment ago may be gone: create it again.
        for attempt in 1.. {
            match self.docker.start_container(&id, None).await {
                // 304: already started, by the killed run's request.
                Ok(())
                | Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 304, ..
                }) => break,
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) if attempt < 4 => {
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                    id = self.create(color, release, replica, network).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Creates one replica's container and returns its id, adopting the
    /// same replica when a killed run's create got there first.
    async fn create(
        &self,
        color: Color,
        release: &Release,
        replica: u32,
        network: &str,
    ) -> Result<String> {
        let spec = container_spec(
            &self.cfg.config,
            &self.secrets,
            release,
            color,
            replica,
            network,
        );
        let name = &spec.name;
        let opts = CreateContainerOptionsBuilder::default().name(name).build();
        for attempt in 1..=4 {
            let taken = match self
                .docker
                .create_container(Some(opts.clone()), spec.body.clone())
                .await
            {
                Ok(r) => return Ok(r.id),
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 409,
                    message,
                }) => message,
                Err(e) => return Err(e.into()),
            };
            // The name is taken: by this very replica when a killed run's
            // create finished after this run looked (adopt it), or by a
            // container the engine is still rolling back (try again).
            match self.docker.inspect_container(name, None).await {
                Ok(info) => {
                    let found = info.config.and_then(|c| c.labels).unwrap_or_default();
                    return match info.id.filter(|_| spec.made_by(&found)) {
                        Some(id) => Ok(id),
                        None => Err(Error::Platform(format!(
                            "container {name} exists but is not labeled for this release: {taken}"
                        ))),
                    };
                }
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => tokio::time::sleep(Duration::from_millis(100 * attempt)).await,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Platform(format!(
            "container name {name} stayed taken by a container that is being removed; run the deploy again"
        )))
    }

    /// One past the highest revision in the history or on the engine.
    async fn next_revision(&self, containers: &[Managed]) -> Result<u64> {
        let record = self.record().await?;
        let from_history = record
            .history
            .iter()
            .map(|e| e.release.revision)
            .max()
            .unwrap_or(0);
        let from_containers = containers
            .iter()
            .map(|m| m.release.revision)
            .max()
            .unwrap_or(0);
        Ok(from_history.max(from_containers) + 1)
    }

    /// Drains a color in the proxy, then stops and removes its containers
    /// (`Step::Clear`, `Step::Retire`, and `cyan abort` / `cyan remove`).
    /// Refuses the live color.
    pub async fn clear(&self, color: Color) -> Result<()> {
        self.withdraw(color).await?;
        let set = self.color_set(color).await?;
        let c = &self.cfg.config;
        let stops = set.iter().map(|m| async move {
            let opts = StopContainerOptionsBuilder::default()
                .t(c.stop_timeout.0.as_secs() as i32)
                .build();
            let _ = self.docker.stop_container(&m.id, Some(opts)).await;
            let rm = RemoveContainerOptionsBuilder::default().force(true).build();
            match self.docker.remove_container(&m.id, Some(rm)).await {
                Ok(())
                | Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => Ok(()),
                Err(e) => Err(Error::from(e)),
            }
        });
        for r in futures_util::future::join_all(stops).await {
            r?;
        }
        self.out
            .detail(format!("removed {} {color} container(s)", set.len()));
        Ok(())
    }
}
