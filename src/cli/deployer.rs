//! One CLI over two platforms: the platform cyan.yaml names (or
//! `--platform`) is chosen once, and each command is one call on it that
//! returns the command's report (`report`), the same on both; `cli::run`
//! renders it.
//!
//! Kubernetes is connected once (kubeconfig, namespace, the
//! BlueGreenDeployment's API). On Docker each command opens the session it
//! needs (`session`): a read-only one needs no secrets, a write reads them,
//! and a rollback only knows which after it has read the record.

use std::time::Duration;

use super::converge::{self, DeployOptions};
use super::report::{AbortReport, DeployReport, History, StatusReport};
use super::{kube, remove, status};
use crate::config::{Loaded, PlatformKind};
use crate::error::{Error, Result};
use crate::output::Output;
use crate::proxy::Home;

/// Where the app of a cyan.yaml runs.
pub enum Deployer<'a> {
    /// This Docker host, through its cyan proxy (whose home this is).
    Docker(&'a Home),
    /// A cluster, through the BlueGreenDeployment the operator acts on.
    Kubernetes(Box<kube::Cluster>),
}

impl<'a> Deployer<'a> {
    /// The platform `cfg` names; a cluster is connected here (an error
    /// says what is missing: no kubeconfig, an unreachable API server).
    pub async fn open(home: &'a Home, cfg: &Loaded) -> Result<Deployer<'a>> {
        Ok(match cfg.config.platform {
            PlatformKind::Docker => Deployer::Docker(home),
            PlatformKind::Kubernetes => Deployer::Kubernetes(Box::new(kube::connect(cfg).await?)),
        })
    }

    /// `cyan deploy`: build, push where a registry is named, then roll out
    /// and follow to live (or to approval).
    pub async fn deploy(
        &self,
        cfg: &Loaded,
        o: &DeployOptions,
        out: &Output,
    ) -> Result<DeployReport> {
        match self {
            Deployer::Docker(home) => converge::deploy(home, cfg, o, out).await,
            Deployer::Kubernetes(c) => kube::deploy(c, cfg, o.version.as_deref(), out).await,
        }
    }

    /// `cyan promote`: the candidate waiting for approval goes live.
    pub async fn promote(
        &self,
        cfg: &Loaded,
        wait: Duration,
        out: &Output,
    ) -> Result<DeployReport> {
        match self {
            Deployer::Docker(home) => converge::promote(home, cfg, wait, out).await,
            Deployer::Kubernetes(c) => kube::promote(c, cfg, out).await,
        }
    }

    /// `cyan rollback [--to V]`: a previous release goes live again.
    pub async fn rollback(
        &self,
        cfg: &Loaded,
        to: Option<&str>,
        wait: Duration,
        out: &Output,
    ) -> Result<DeployReport> {
        match self {
            Deployer::Docker(home) => converge::rollback(home, cfg, to, wait, out).await,
            Deployer::Kubernetes(c) => kube::rollback(c, cfg, to, out).await,
        }
    }

    /// `cyan abort`: the rollout in progress stops; live traffic stays.
    pub async fn abort(&self, cfg: &Loaded, wait: Duration, out: &Output) -> Result<AbortReport> {
        match self {
            Deployer::Docker(home) => converge::abort(home, cfg, wait, out).await,
            Deployer::Kubernetes(c) => kube::abort(c, out).await,
        }
    }

    /// `cyan status`.
    pub async fn status(&self, cfg: &Loaded, out: &Output) -> Result<StatusReport> {
        match self {
            Deployer::Docker(home) => status::status(home, cfg, out).await,
            Deployer::Kubernetes(c) => kube::status(c).await,
        }
    }

    /// `cyan history`, newest first.
    pub async fn history(&self, cfg: &Loaded, out: &Output) -> Result<History> {
        match self {
            Deployer::Docker(home) => status::history(home, cfg, out).await,
            Deployer::Kubernetes(c) => kube::history(c).await,
        }
    }

    /// `cyan remove`: the app leaves this host (Docker only: on a cluster
    /// the BlueGreenDeployment is deleted with kubectl).
    pub async fn remove(
        &self,
        cfg: &Loaded,
        yes: bool,
        wait: Duration,
        out: &Output,
    ) -> Result<()> {
        match self {
            Deployer::Docker(home) => remove::remove(home, cfg, yes, wait, out).await,
            Deployer::Kubernetes(_) => Err(Error::Refused(format!(
                "{} runs on Kubernetes: delete its BlueGreenDeployment instead (kubectl delete bgd {})",
                cfg.config.route(),
                cfg.config.app
            ))),
        }
    }
}
