//! The Docker platform: containers through bollard, traffic through the cyan proxy.
//!
//! What it knows is on the engine and in the proxy: container labels say
//! which app, environment, color and release a container belongs to; the
//! proxy holds the live color, the upstreams and the deploy record.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, HealthStatusEnum, HostConfig,
    NetworkCreateRequest, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

use super::Platform;
use crate::config::{Inconclusive, Loaded, ProxyTls, Secrets};
use crate::error::{Error, Result};
use crate::health::{self, CheckRun, DockerHealth, HealthState, Replicas, Target};
use crate::image;
use crate::output::Output;
use crate::plan::{Desired, ImageState, Intent, LockState, Observed, SetState, Step};
use crate::proxy::api::{CandidateRequest, RouteSpec, SwitchRequest};
use crate::proxy::client::AdminClient;
use crate::proxy::router::RouteView;
use crate::proxy::state::{TlsFiles, TlsSource, Upstream};
use crate::record::{DeployRecord, Event, HistoryEntry, Verdict, VerifyFigures, VerifyWindow};
use crate::release::{Color, Release};

/// Container labels. `cyan.app` + `cyan.env` select an app's containers.
pub mod label {
    pub const MANAGED: &str = "cyan.managed";
    pub const APP: &str = "cyan.app";
    pub const ENV: &str = "cyan.env";
    pub const COLOR: &str = "cyan.color";
    pub const VERSION: &str = "cyan.version";
    pub const REVISION: &str = "cyan.revision";
    pub const CONFIG_HASH: &str = "cyan.config-hash";
    pub const IMAGE_ID: &str = "cyan.image-id";
    pub const DIGEST: &str = "cyan.digest";
    pub const REPLICA: &str = "cyan.replica";
    /// The container port the proxy's upstream is published from.
    pub const PORT: &str = "cyan.port";
}

/// The network app containers join, so a containerized proxy can reach them
/// too: `cyan`, or `CYAN_NETWORK` (to keep a group of apps apart).
fn network() -> String {
    std::env::var("CYAN_NETWORK").unwrap_or_else(|_| "cyan".into())
}

/// Connects to the engine named by `DOCKER_HOST` (or the local socket) and
/// agrees on an API version both sides speak.
pub async fn connect() -> Result<Docker> {
    if let Ok(host) = std::env::var("DOCKER_HOST") {
        check_local(&host)?;
    }
    let docker = Docker::connect_with_defaults().map_err(|e| {
        Error::Unreachable(format!(
            "cannot reach the Docker engine: {e}. Is DOCKER_HOST right?"
        ))
    })?;
    docker.negotiate_version().await.map_err(|e| {
        Error::Unreachable(format!(
            "cannot reach the Docker engine: {e}. Is dockerd running, and is DOCKER_HOST right?"
        ))
    })
}

/// Refuses an engine on another machine: the cyan proxy runs beside the CLI
/// and reaches containers on their 127.0.0.1-published ports, so a remote
/// engine would pass no gate and route nowhere.
fn check_local(docker_host: &str) -> Result<()> {
    let local = match docker_host.split_once("://") {
        Some(("unix" | "npipe", _)) => true,
        Some(("tcp" | "http" | "https", rest)) => {
            let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
            matches!(host, "localhost" | "[::1]") || host.starts_with("127.")
        }
        _ => docker_host.is_empty(),
    };
    if local {
        return Ok(());
    }
    Err(Error::Config(format!(
        "DOCKER_HOST={docker_host} is not on this machine. cyan drives the engine where its proxy runs, \
         so run cyan on the Docker host itself (over ssh, or from a runner on that host)"
    )))
}

/// One container cyan manages, as read from the engine.
#[derive(Debug, Clone)]
pub struct Managed {
    pub id: String,
    pub name: String,
    pub color: Color,
    pub release: Release,
    pub replica: u32,
    pub state: String,
    pub addr: Option<SocketAddr>,
}

pub struct DockerPlatform<'a> {
    pub docker: Docker,
    pub proxy: AdminClient,
    pub cfg: &'a Loaded,
    /// Values of `secrets`, read from cyan's environment.
    pub secrets: Secrets,
    pub lock_token: String,
    pub out: &'a Output,
    /// What this run's verify window concluded, for the command's result.
    pub verdict: std::sync::Mutex<Option<VerifyFigures>>,
}

impl<'a> DockerPlatform<'a> {
    pub fn route(&self) -> String {
        self.cfg.config.route()
    }

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
            .filter_map(|s| {
                let labels = s.labels.unwrap_or_default();
                let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
                let color: Color = get(label::COLOR).parse().ok()?;
                // The port the container was made with (a release's own,
                // restored by a rollback), not today's `port`.
                let port = get(label::PORT).parse().unwrap_or(c.port);
                let addr = s.ports.unwrap_or_default().into_iter().find_map(|p| {
                    let ip = p.ip.as_deref()?;
                    let public = p.public_port?;
                    (p.private_port == port && ip == "127.0.0.1")
                        .then(|| SocketAddr::new([127, 0, 0, 1].into(), public))
                });
                Some(Managed {
                    id: s.id.unwrap_or_default(),
                    name: s
                        .names
                        .unwrap_or_default()
                        .first()
                        .map(|n| n.trim_start_matches('/').to_string())
                        .unwrap_or_default(),
                    color,
                    release: Release {
                        version: get(label::VERSION),
                        revision: get(label::REVISION).parse().unwrap_or(0),
                        image_id: get(label::IMAGE_ID),
                        digest: labels.get(label::DIGEST).cloned().filter(|d| !d.is_empty()),
                        config_hash: get(label::CONFIG_HASH),
                    },
                    replica: get(label::REPLICA).parse().unwrap_or(0),
                    state: s
                        .state
                        .unwrap_or(ContainerSummaryStateEnum::EMPTY)
                        .to_string(),
                    addr,
                })
            })
            .collect();
        out.sort_by(|a, b| (a.color, a.replica, &a.name).cmp(&(b.color, b.replica, &b.name)));
        Ok(out)
    }

    /// The route cyan.yaml asks for: the proxy takes it with the switch
    /// (and a repair), never before.
    pub fn route_spec(&self) -> RouteSpec {
        let c = &self.cfg.config;
        // The proxy runs in another folder: it gets absolute paths.
        let absolute = |p: &std::path::Path| std::path::absolute(p).unwrap_or(p.to_path_buf());
        RouteSpec {
            hosts: c.proxy.host.iter().chain(&c.proxy.hosts).cloned().collect(),
            listen: c.proxy.listen,
            path_prefix: c.proxy.path_prefix.clone(),
            policy: c.proxy.policy(),
            tls: c.proxy.tls.as_ref().map(|t| match t {
                ProxyTls::Files(t) => TlsSource::Files(TlsFiles {
                    cert: absolute(&self.cfg.dir().join(&t.cert)),
                    key: absolute(&self.cfg.dir().join(&t.key)),
                }),
                ProxyTls::Acme => TlsSource::Acme,
            }),
            preview: c.proxy.preview.as_ref().map(|p| p.spec()),
        }
    }

    /// Refuses (`Error::Config`) a route whose host or listen address
    /// another live app holds, before anything is built or started.
    pub async fn claim_route(&self) -> Result<()> {
        self.proxy
            .claim(&self.route(), &self.route_spec())
            .await
            .map_err(|e| match e {
                Error::Config(why) => Error::Config(format!(
                    "{} cannot be routed as cyan.yaml asks: {why}",
                    self.route()
                )),
                e => e,
            })
    }

    /// The app's route in the proxy, if it has one yet.
    pub async fn route_view(&self) -> Result<Option<RouteView>> {
        self.proxy.route(&self.route()).await
    }

    pub async fn record(&self) -> Result<DeployRecord> {
        Ok(self
            .route_view()
            .await?
            .map(|v| parse_record(&v.state.record))
            .unwrap_or_default())
    }

    async fn put_record(&self, record: &DeployRecord) -> Result<()> {
        let value = serde_json::to_value(record).expect("record serializes");
        self.proxy.put_record(&self.route(), &value).await
    }

    /// Makes sure exactly one app network exists, and returns its id.
    ///
    /// The engine's duplicate-name check races: concurrent creates (two
    /// first deploys at once on a fresh host) can make two networks named
    /// `cyan`, and then every container start on it fails as "ambiguous",
    /// even when created by id. So creation is serialized across cyan
    /// processes by a host-wide file lock, and duplicates left by older
    /// versions are healed: the oldest is kept, the empty others removed.
    async fn ensure_network(&self) -> Result<String> {
        let name = network();
        let _lock = HostLock::take(&format!("cyan-network-{name}"))?;
        if let Some(id) = self.cyan_network(&name).await? {
            return Ok(id);
        }
        let mut labels = HashMap::new();
        labels.insert(label::MANAGED.to_string(), "true".to_string());
        let req = NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".into()),
            labels: Some(labels),
            ..NetworkCreateRequest::default()
        };
        match self.docker.create_network(req).await {
            Ok(_) => {}
            // Created at the same moment by something that is not cyan.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => {}
            Err(e) => return Err(e.into()),
        }
        self.cyan_network(&name).await?.ok_or_else(|| {
            Error::Platform(format!(
                "the {name} network vanished right after it was created"
            ))
        })
    }

    /// The oldest network named exactly `name`; younger duplicates are
    /// removed (one with containers attached cannot be, and is reported).
    async fn cyan_network(&self, name: &str) -> Result<Option<String>> {
        let filters = HashMap::from([("name".to_string(), vec![name.to_string()])]);
        let opts = ListNetworksOptionsBuilder::default()
            .filters(&filters)
            .build();
        let mut found: Vec<_> = self
            .docker
            .list_networks(Some(opts))
            .await?
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .filter_map(|n| Some((n.created, n.id?)))
            .collect();
        found.sort();
        let mut ids = found.into_iter().map(|(_, id)| id);
        let oldest = ids.next();
        for duplicate in ids {
            if let Err(e) = self.docker.remove_network(&duplicate).await {
                return Err(Error::Platform(format!(
                    "there are several Docker networks named {name}, and duplicate {} cannot be removed ({e}); remove the extra ones with `docker network rm`",
                    short_id(&duplicate)
                )));
            }
        }
        Ok(oldest)
    }

    async fn launch(&self, color: Color, d: &Desired) -> Result<()> {
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

    async fn create(
        &self,
        color: Color,
        release: &Release,
        replica: u32,
        network: &str,
    ) -> Result<String> {
        let c = &self.cfg.config;
        let name = format!(
            "{}-{}-{color}-{}-{replica}",
            c.app, c.environment, release.revision
        );
        let mut labels = HashMap::new();
        for (k, v) in [
            (label::MANAGED, "true".to_string()),
            (label::APP, c.app.to_string()),
            (label::ENV, c.environment.to_string()),
            (label::COLOR, color.to_string()),
            (label::VERSION, release.version.clone()),
            (label::REVISION, release.revision.to_string()),
            (label::CONFIG_HASH, release.config_hash.clone()),
            (label::IMAGE_ID, release.image_id.clone()),
            (label::DIGEST, release.digest.clone().unwrap_or_default()),
            (label::REPLICA, replica.to_string()),
            (label::PORT, c.port.to_string()),
        ] {
            labels.insert(k.to_string(), v);
        }
        let mut env: Vec<String> = c.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        // The secrets' one way out: `env` goes to the engine and nowhere else.
        env.extend(self.secrets.expose_as_env());
        env.push(format!("CYAN_COLOR={color}"));
        env.push(format!("CYAN_VERSION={}", release.version));
        let port = format!("{}/tcp", c.port);
        let mut bindings = HashMap::new();
        bindings.insert(
            port.clone(),
            Some(vec![PortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(String::new()),
            }]),
        );
        let body = ContainerCreateBody {
            image: Some(release.image_id.clone()),
            env: Some(env),
            cmd: c.command.clone(),
            labels: Some(labels.clone()),
            exposed_ports: Some(vec![port]),
            stop_timeout: Some(c.stop_timeout.0.as_secs() as i64),
            host_config: Some(HostConfig {
                port_bindings: Some(bindings),
                network_mode: Some(network.into()),
                init: Some(c.init),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        };
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        for attempt in 1..=4 {
            let taken = match self
                .docker
                .create_container(Some(opts.clone()), body.clone())
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
            match self.docker.inspect_container(&name, None).await {
                Ok(info) => {
                    let found = info.config.and_then(|c| c.labels).unwrap_or_default();
                    let same = labels.iter().all(|(k, v)| found.get(k) == Some(v));
                    return match info.id.filter(|_| same) {
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

    fn targets(set: &[Managed]) -> Result<Vec<Target>> {
        set.iter()
            .map(|m| {
                m.addr
                    .map(|addr| Target {
                        name: m.name.clone(),
                        addr,
                    })
                    .ok_or_else(|| {
                        Error::Platform(format!("container {} has no published port", m.name))
                    })
            })
            .collect()
    }

    /// The set as the proxy's upstreams: each address tied to its
    /// container, so the proxy follows the container when it moves.
    fn upstreams(set: &[Managed]) -> Result<Vec<Upstream>> {
        Ok(Self::targets(set)?
            .into_iter()
            .zip(set)
            .map(|(t, m)| Upstream::of_container(t.addr, &m.id))
            .collect())
    }

    async fn color_set(&self, color: Color) -> Result<Vec<Managed>> {
        Ok(self
            .containers()
            .await?
            .into_iter()
            .filter(|m| m.color == color)
            .collect())
    }

    async fn gate(&self, color: Color, d: &Desired) -> Result<()> {
        let set = self.color_set(color).await?;
        self.gate_replicas(color, &set).await?;
        // Register the set with the proxy (not live) and mark it gated. A
        // release that was never live is the candidate: the preview serves
        // it from now on (a previous release started again is not).
        let upstreams = Self::upstreams(&set)?;
        let mut record = self.record().await?;
        if record.was_live(&d.target) {
            self.proxy
                .set_color(&self.route(), color, upstreams)
                .await?;
        } else {
            let req = CandidateRequest {
                color,
                upstreams,
                preview: self.route_spec().preview_state(),
            };
            self.proxy.set_candidate(&self.route(), &req).await?;
        }
        record.gated.insert(color, d.target.clone());
        record.record_runtime(&d.target, self.cfg.config.runtime());
        self.put_record(&record).await
    }

    /// The health gate over `set`, a color's replicas or some of them.
    async fn gate_replicas(&self, color: Color, set: &[Managed]) -> Result<()> {
        let c = &self.cfg.config;
        let targets = Self::targets(set)?;
        let outcome =
            health::gate(&c.health, c.proxy.host.as_deref(), &targets, self, self.out).await;
        outcome.map_err(|f| {
            Error::GateFailed(format!(
                "health gate failed for {} {color} ({}/{} replicas healthy): {}: {}\nlast log lines of {}:\n{}",
                c.app,
                f.healthy,
                targets.len(),
                f.replica,
                f.reason,
                f.replica,
                indent(&f.logs)
            ))
        })
    }

    /// Where the live color's serving disagrees with its containers and
    /// with cyan.yaml's route (`Observed::drift`); nothing when not live.
    pub fn drift(
        &self,
        replicas: u32,
        containers: &[Managed],
        view: Option<&RouteView>,
    ) -> Vec<String> {
        let Some(v) = view.filter(|v| v.state.live.is_some()) else {
            return Vec::new();
        };
        let live = v.state.live.expect("filtered");
        let mut out = drift(live, replicas, containers, view);
        if !self.route_spec().is_applied(&v.state) {
            out.push(format!(
                "the proxy routes {} differently from cyan.yaml's proxy settings",
                self.route()
            ));
        }
        out
    }

    /// Brings the live `color` back in line (`Step::Repair`): replicas
    /// that are missing are launched, stopped ones started, and those are
    /// gated; then the proxy gets every replica at its current address.
    /// Says what it repaired, and fails if drift is left (a replica that
    /// keeps crashing).
    async fn repair(&self, color: Color, d: &Desired) -> Result<()> {
        let before = self.containers().await?;
        let view = self.route_view().await?;
        for line in self.drift(d.replicas, &before, view.as_ref()) {
            self.out.detail(format!("repairing: {line}"));
        }
        self.launch(color, d).await?;
        let stopped = self
            .color_set(color)
            .await?
            .into_iter()
            .filter(|m| matches!(m.state.as_str(), "exited" | "dead" | "created"));
        for m in stopped {
            match self.docker.start_container(&m.id, None).await {
                Ok(())
                | Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 304, ..
                }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let set = self.color_set(color).await?;
        let was_running = |m: &Managed| before.iter().any(|b| b.id == m.id && b.state == "running");
        let fresh: Vec<Managed> = set.iter().filter(|m| !was_running(m)).cloned().collect();
        if !fresh.is_empty() {
            self.gate_replicas(color, &fresh).await?;
        }
        self.proxy
            .set_color(&self.route(), color, Self::upstreams(&set)?)
            .await?;
        if view.is_some_and(|v| !self.route_spec().is_applied(&v.state)) {
            self.proxy
                .put_route(&self.route(), &self.route_spec())
                .await?;
        }
        let after = self.containers().await?;
        let left = self.drift(d.replicas, &after, self.route_view().await?.as_ref());
        if !left.is_empty() {
            return Err(Error::Platform(format!(
                "live {color} could not be repaired: {}. See `cyan status` and `docker logs`",
                left.join("; ")
            )));
        }
        self.out.detail(format!(
            "repaired: {} {color} replica(s) running and routed at their current addresses",
            set.len()
        ));
        Ok(())
    }

    async fn switch(&self, color: Color, d: &Desired) -> Result<()> {
        let set = self.color_set(color).await?;
        let upstreams = Self::upstreams(&set)?;
        let release = set
            .first()
            .map(|m| m.release.clone())
            .ok_or_else(|| Error::Platform(format!("{color} has no containers to switch to")))?;
        let mut record = self.record().await?;
        let verify = self
            .cfg
            .config
            .verify
            .as_ref()
            .filter(|_| d.intent != Intent::Rollback);
        record.verify = verify.map(|v| VerifyWindow {
            color,
            release: d.target.clone(),
            until_ms: crate::clock::now_ms() + v.duration.0.as_millis() as u64,
            deadline_ms: None,
        });
        record.push_history(HistoryEntry {
            event: if d.intent == Intent::Rollback {
                Event::RolledBack
            } else {
                Event::Promoted
            },
            color,
            release,
            at: crate::clock::now_rfc3339(),
            verify: None,
        });
        let req = SwitchRequest {
            color,
            upstreams: Some(upstreams),
            record: Some(serde_json::to_value(&record).expect("record serializes")),
            route: Some(self.route_spec()),
        };
        let started = Instant::now();
        let resp = self.proxy.switch(&self.route(), &req).await?;
        self.out.detail(format!(
            "switched {}: {} -> {color} ({}) in {}",
            self.route(),
            resp.previous.map_or("none".into(), |c| c.to_string()),
            d.target.version,
            crate::output::fmt_duration(started.elapsed())
        ));
        Ok(())
    }

    async fn verify(&self, color: Color) -> Result<()> {
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
            let stats = view.stats.get(&color).cloned().unwrap_or_default();
            let figures = |verdict| VerifyFigures {
                verdict,
                requests: stats.requests,
                status_5xx: stats.status_5xx,
                min_requests: cfg.min_requests,
            };
            if let Some(why) = health::verify_breach(&stats, cfg) {
                let seen = figures(Verdict::Failed);
                return self
                    .fail_verify(color, window, &view, record, why, seen)
                    .await;
            }
            let left = window.until_ms.saturating_sub(crate::clock::now_ms());
            let enough = stats.requests >= cfg.min_requests.max(1);
            // Waiting past the window ends as soon as there is enough.
            if left == 0 || (enough && window.deadline_ms.is_some()) {
                if enough {
                    self.out.detail(format!(
                        "verified: {} requests, {} 5xx",
                        stats.requests, stats.status_5xx
                    ));
                    *self.verdict.lock().expect("verdict lock") = Some(figures(Verdict::Passed));
                    return self.close_verify().await;
                }
                let short = format!(
                    "{} request(s), {} 5xx: fewer than the {} verify.min_requests needs to judge",
                    stats.requests, stats.status_5xx, cfg.min_requests
                );
                match (cfg.on_inconclusive, window.deadline_ms) {
                    (Inconclusive::Wait, None) => {
                        let started = window.until_ms - cfg.duration.0.as_millis() as u64;
                        let deadline = started + cfg.deadline().as_millis() as u64;
                        self.out.warn(format!(
                            "verification inconclusive so far ({short}); watching until there are enough, for {} more at most",
                            crate::output::fmt_duration(Duration::from_millis(
                                deadline.saturating_sub(crate::clock::now_ms())
                            ))
                        ));
                        let mut record = record;
                        record.verify = Some(VerifyWindow {
                            until_ms: deadline,
                            deadline_ms: Some(deadline),
                            ..window
                        });
                        self.put_record(&record).await?;
                        continue;
                    }
                    (Inconclusive::Pass, _) => {
                        self.out.warn(format!(
                            "verification inconclusive ({short}); {} stays live, as verify.on_inconclusive: pass says",
                            window.release.version
                        ));
                        let seen = figures(Verdict::Inconclusive);
                        *self.verdict.lock().expect("verdict lock") = Some(seen.clone());
                        return self.pass_inconclusive(color, record, seen).await;
                    }
                    (_, deadline) => {
                        let when = if deadline.is_some() {
                            "by the verify deadline"
                        } else {
                            "in the window"
                        };
                        let why = format!("inconclusive {when}: {short}");
                        let seen = figures(Verdict::Inconclusive);
                        return self
                            .fail_verify(color, window, &view, record, why, seen)
                            .await;
                    }
                }
            }
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
            });
        }
        let value = serde_json::to_value(&record).expect("record serializes");
        if !can_return {
            self.proxy.put_record(&self.route(), &value).await?;
            return Err(Error::VerifyFailed(format!(
                "verification of {} failed: {why}; there is no previous color to return to, so {color} stays live",
                window.release.version
            )));
        }
        let req = SwitchRequest {
            color: back,
            upstreams: None,
            record: Some(value),
            route: None,
        };
        self.proxy.switch(&self.route(), &req).await?;
        Err(Error::VerifyFailed(format!(
            "verification of {} failed: {why}; traffic is back on {back}. {color} is kept for inspection (cyan status)",
            window.release.version
        )))
    }

    /// Drains a color in the proxy, then stops and removes its containers.
    pub async fn clear(&self, color: Color) -> Result<()> {
        let route = self.route();
        let mut record = self.record().await?;
        if record.gated.remove(&color).is_some() {
            self.put_record(&record).await?;
        }
        if let Some(view) = self.route_view().await? {
            if view.state.live == Some(color) {
                return Err(Error::Platform(format!(
                    "refusing to remove {color}: it is live"
                )));
            }
            // The preview stops taking requests for it first.
            if view.state.candidate == Some(color) {
                self.proxy.clear_candidate(&route).await?;
            }
            self.drain(color).await?;
            if view.state.colors.contains_key(&color) {
                self.proxy.remove_color(&route, color).await?;
            }
        }
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

    /// Waits until no request is in flight on `color`, up to the drain timeout.
    async fn drain(&self, color: Color) -> Result<()> {
        let deadline = Instant::now() + self.cfg.config.proxy.drain_timeout.0;
        loop {
            let inflight = self
                .route_view()
                .await?
                .and_then(|v| v.stats.get(&color).map(|s| s.inflight))
                .unwrap_or(0);
            if inflight == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.out.warn(format!(
                    "drain deadline {} reached with {inflight} request(s) still on {color}",
                    self.cfg.config.proxy.drain_timeout
                ));
                return Ok(());
            }
            self.out
                .detail(format!("draining {color}: {inflight} in flight"));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
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
        let mut sets: BTreeMap<Color, SetState> = BTreeMap::new();
        for m in containers {
            let s = sets.entry(m.color).or_insert_with(|| SetState {
                release: Some(m.release.key()),
                ..SetState::default()
            });
            if s.release.as_ref() != Some(&m.release.key()) {
                s.release = None;
            }
            s.total += 1;
            match m.state.as_str() {
                "running" => s.running += 1,
                "created" => s.created += 1,
                _ => s.exited += 1,
            }
        }
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
            sets,
            record,
            lock,
            now_ms: crate::clock::now_ms(),
            drift,
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
            Step::AwaitApproval(_) | Step::Done | Step::Failed(_) | Step::Blocked(_) => Ok(()),
        }
    }
}

impl Replicas for DockerPlatform<'_> {
    async fn stopped(&self, name: &str) -> Option<String> {
        let info = self.docker.inspect_container(name, None).await.ok()?;
        let state = info.state?;
        let restarts = info.restart_count.unwrap_or(0);
        if state.running == Some(true) && restarts == 0 {
            return None;
        }
        let code = state.exit_code.unwrap_or_default();
        Some(if state.oom_killed == Some(true) {
            "container was killed for using too much memory (OOM)".into()
        } else if restarts > 0 {
            format!("container restarted {restarts} time(s) (last exit code {code})")
        } else {
            format!("container exited with code {code}")
        })
    }

    async fn log_tail(&self, name: &str) -> String {
        let opts = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail("20")
            .build();
        let mut stream = self.docker.logs(name, Some(opts));
        let mut text = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            text.push_str(&chunk.to_string());
        }
        if text.trim().is_empty() {
            return "(no output)".into();
        }
        // The container's own words, bound for a terminal.
        let lines: Vec<String> = text.lines().map(crate::health::printable).collect();
        lines.join("\n")
    }

    async fn misbound(&self, name: &str) -> Option<String> {
        let info = self.docker.inspect_container(name, None).await.ok()?;
        let pid = info.state?.pid.filter(|p| *p > 0)?;
        let listening = super::listeners::listening(pid)?;
        super::listeners::misbound(&listening, self.cfg.config.port)
    }

    async fn exec(
        &self,
        name: &str,
        argv: &[String],
        timeout: Duration,
    ) -> std::result::Result<CheckRun, String> {
        super::exec::run(&self.docker, name, argv, timeout).await
    }

    async fn docker_health(&self, name: &str) -> DockerHealth {
        let Ok(info) = self.docker.inspect_container(name, None).await else {
            return DockerHealth::new(HealthState::Unknown);
        };
        let Some(health) = info.state.and_then(|s| s.health) else {
            return DockerHealth::new(HealthState::None);
        };
        let state = match health.status {
            Some(HealthStatusEnum::HEALTHY) => HealthState::Healthy,
            Some(HealthStatusEnum::UNHEALTHY) => HealthState::Unhealthy,
            Some(HealthStatusEnum::STARTING) => HealthState::Starting,
            Some(HealthStatusEnum::NONE | HealthStatusEnum::EMPTY) | None => HealthState::None,
        };
        let log = health
            .log
            .unwrap_or_default()
            .into_iter()
            .map(|r| CheckRun {
                exit_code: r.exit_code.unwrap_or(-1),
                output: r.output.unwrap_or_default(),
            });
        DockerHealth {
            state,
            log: log.collect(),
        }
    }
}

/// Where `color`'s serving disagrees with its containers
/// (`Observed::drift`), one line each: every replica should exist, run,
/// and be one of the proxy's upstreams at the address it has now, and
/// every upstream should name one of them.
pub fn drift(
    color: Color,
    replicas: u32,
    containers: &[Managed],
    view: Option<&RouteView>,
) -> Vec<String> {
    let set: Vec<&Managed> = containers.iter().filter(|m| m.color == color).collect();
    let upstreams = view
        .and_then(|v| v.state.colors.get(&color))
        .map_or(&[][..], Vec::as_slice);
    let mut out = Vec::new();
    if (set.len() as u32) < replicas {
        out.push(format!(
            "{} of {replicas} {color} replica(s) missing",
            replicas - set.len() as u32
        ));
    }
    for m in &set {
        if m.state != "running" {
            out.push(format!("{} is {}", m.name, m.state));
            continue;
        }
        let routed = upstreams
            .iter()
            .find(|u| u.container.as_deref() == Some(m.id.as_str()));
        match (routed, m.addr) {
            (None, _) => out.push(format!("{} is not one of the proxy's upstreams", m.name)),
            (Some(u), Some(addr)) if u.addr != addr => out.push(format!(
                "the proxy sends {}'s requests to {}, but its port is now {addr}",
                m.name, u.addr
            )),
            (Some(u), _) if !u.up() => out.push(format!(
                "the proxy has {} out of rotation ({})",
                m.name,
                u.down.as_deref().unwrap_or_default()
            )),
            _ => {}
        }
    }
    for u in upstreams {
        match &u.container {
            None => out.push(format!(
                "upstream {} names no container (registered by an older cyan)",
                u.addr
            )),
            Some(id) if !set.iter().any(|m| &m.id == id) => out.push(format!(
                "upstream {} names container {}, which is gone",
                u.addr,
                short_id(id)
            )),
            _ => {}
        }
    }
    out
}

pub fn parse_record(v: &serde_json::Value) -> DeployRecord {
    if v.is_null() {
        return DeployRecord::default();
    }
    serde_json::from_value(v.clone()).unwrap_or_default()
}

/// An exclusive lock shared by every cyan process on this host (flock on a
/// file in the temp folder), released when dropped.
struct HostLock {
    /// Held for its lifetime: closing it releases the lock.
    _file: std::fs::File,
}

impl HostLock {
    fn take(name: &str) -> Result<HostLock> {
        use std::os::fd::AsRawFd;
        let path = std::env::temp_dir().join(format!("{name}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::Platform(format!("cannot open {}: {e}", path.display())))?;
        // SAFETY: flock on a file descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Error::Platform(format!(
                "cannot lock {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            )));
        }
        Ok(HostLock { _file: file })
    }
}

pub fn short_id(id: &str) -> &str {
    let id = id.trim_start_matches("sha256:");
    &id[..id.len().min(12)]
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::check_local;

    #[test]
    fn only_engines_on_this_machine_are_driven() {
        for ok in [
            "",
            "unix:///var/run/docker.sock",
            "tcp://127.0.0.1:2375",
            "tcp://localhost:2375",
            "tcp://[::1]:2375",
        ] {
            assert!(check_local(ok).is_ok(), "{ok}");
        }
        for remote in [
            "ssh://deploy@web1",
            "tcp://10.0.0.5:2376",
            "tcp://web1:2375",
        ] {
            let e = check_local(remote).unwrap_err().to_string();
            assert!(e.contains("not on this machine"), "{remote}: {e}");
        }
    }
}
