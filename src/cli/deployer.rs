//! One CLI over two platforms: the platform cyan.yaml names (or
//! `--platform`) is chosen once, and each command is one call on it that
//! returns the command's report (`report`), the same on both; `cli::run`
//! renders it.
//!
//! Choosing is not connecting: each command connects when its own checks
//! that need no platform have passed (a deploy to a cluster with no
//! registry in its image is refused before any kubeconfig is read, and
//! `cyan remove` of a cluster's app before any API call). On Docker each
//! command opens the session it needs (`session`): a read-only one needs no
//! secrets, a write reads them, and a rollback only knows which after it
//! has read the record.

use std::time::Duration;

use super::converge::{self, DeployOptions};
use super::report::{AbortReport, DeployReport, History, StatusReport};
use super::session::At;
use super::{fleet, kube, remove, status};
use crate::config::{Loaded, PlatformKind};
use crate::error::{Error, Result};
use crate::output::Output;
use crate::proxy::Home;

/// Where the app of a cyan.yaml runs.
pub enum Deployer<'a> {
    /// This Docker host, through its cyan proxy (whose home this is).
    Docker(&'a Home),
    /// cyan.yaml's `hosts:`, each through its own cyan proxy, over SSH.
    Fleet,
    /// A cluster, through the BlueGreenDeployment the operator acts on.
    Kubernetes,
}

impl<'a> Deployer<'a> {
    /// The platform `cfg` names.
    pub fn of(home: &'a Home, cfg: &Loaded) -> Deployer<'a> {
        match cfg.config.platform {
            PlatformKind::Docker if !cfg.config.hosts.is_empty() => Deployer::Fleet,
            PlatformKind::Docker => Deployer::Docker(home),
            PlatformKind::Kubernetes => Deployer::Kubernetes,
        }
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
            Deployer::Docker(home) => converge::deploy(At::Here(home), cfg, o, out).await,
            Deployer::Fleet => fleet::deploy(cfg, o, out).await,
            Deployer::Kubernetes => kube::deploy(cfg, o.version.as_deref(), out).await,
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
            Deployer::Docker(home) => converge::promote(At::Here(home), cfg, wait, out).await,
            Deployer::Fleet => fleet::promote(cfg, wait, out).await,
            Deployer::Kubernetes => kube::promote(cfg, out).await,
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
            Deployer::Docker(home) => converge::rollback(At::Here(home), cfg, to, wait, out).await,
            Deployer::Fleet => fleet::rollback(cfg, to, wait, out).await,
            Deployer::Kubernetes => kube::rollback(cfg, to, out).await,
        }
    }

    /// `cyan abort`: the rollout in progress stops; live traffic stays.
    pub async fn abort(&self, cfg: &Loaded, wait: Duration, out: &Output) -> Result<AbortReport> {
        match self {
            Deployer::Docker(home) => converge::abort(At::Here(home), cfg, wait, out).await,
            Deployer::Fleet => fleet::abort(cfg, wait, out).await,
            Deployer::Kubernetes => kube::abort(cfg, out).await,
        }
    }

    /// `cyan status`.
    pub async fn status(&self, cfg: &Loaded, out: &Output) -> Result<StatusReport> {
        match self {
            Deployer::Docker(home) => status::status(At::Here(home), cfg, out).await,
            Deployer::Fleet => fleet::status(cfg, out).await,
            Deployer::Kubernetes => kube::status(cfg).await,
        }
    }

    /// `cyan history`, newest first.
    pub async fn history(&self, cfg: &Loaded, out: &Output) -> Result<History> {
        match self {
            Deployer::Docker(home) => status::history(At::Here(home), cfg, out).await,
            Deployer::Fleet => fleet::history(cfg, out).await,
            Deployer::Kubernetes => kube::history(cfg).await,
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
            Deployer::Docker(home) => remove::remove(At::Here(home), cfg, yes, wait, out).await,
            Deployer::Fleet => fleet::remove(cfg, yes, wait, out).await,
            Deployer::Kubernetes => Err(Error::Refused(format!(
                "{} runs on Kubernetes: delete its BlueGreenDeployment instead (kubectl delete bgd {})",
                cfg.config.route(),
                cfg.config.app
            ))),
        }
    }
}
