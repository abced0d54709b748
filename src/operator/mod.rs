//! `cyan operator`: the Kubernetes controller for `BlueGreenDeployment`.
//!
//! It runs the same planner as the CLI on Docker, once per reconcile (see
//! `controller`). Around it: leader election (`leader`), metrics and probes
//! (`server`, `metrics`), and a graceful stop on SIGTERM.

pub mod controller;
/// The CRD is the Kubernetes platform's (`platform::kube::crd`): the operator,
/// the platform and the CLI all use it, so it sits below them.
pub use crate::platform::kube::crd;
pub mod leader;
pub mod metrics;
pub mod server;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use crate::error::{Error, Result};
use controller::Context;
use crd::{label, BlueGreenDeployment};
use leader::LeaseLock;
use metrics::Metrics;

/// The Lease's name, in the operator's namespace, for an operator that
/// watches every namespace.
const LEASE: &str = "cyan-operator";
const LEASE_SECONDS: i32 = 15;

pub struct OperatorOptions {
    /// Where `/metrics`, `/healthz` and `/readyz` listen.
    pub listen: SocketAddr,
    /// Watch one namespace only; all when `None`.
    pub namespace: Option<String>,
    /// Where the Lease lives.
    pub lease_namespace: String,
    /// This replica's name in the Lease (the pod name).
    pub identity: String,
}

/// The Lease a replica competes for. Operators that watch different
/// namespaces (one per team, say) reconcile different objects, so each
/// scope has its own Lease: with one shared name, the operator of one
/// namespace would stand by while another namespace's leads.
fn lease_name(watched: Option<&str>) -> String {
    match watched {
        None => LEASE.to_string(),
        Some(ns) => format!("{LEASE}-{ns}"),
    }
}

pub async fn run(o: OperatorOptions) -> Result<()> {
    let client = Client::try_default().await.map_err(|e| {
        Error::Unreachable(format!(
            "no usable Kubernetes configuration (in-cluster service account or KUBECONFIG): {e}"
        ))
    })?;
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    server::serve(o.listen, metrics.clone(), ready.clone()).await?;

    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("SIGTERM: finishing the reconciles in flight, then stopping");
        let _ = stop_tx.send(true);
    });

    let lock = Arc::new(LeaseLock::new(
        client.clone(),
        &o.lease_namespace,
        &lease_name(o.namespace.as_deref()),
        &o.identity,
        LEASE_SECONDS,
    ));
    if !wait_to_lead(&lock, &ready, stop.clone()).await {
        return Ok(());
    }
    tracing::info!(identity = lock.identity(), "leading; reconciling");
    let lost = keep_leading(lock.clone());

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "cyan-operator".into(),
            instance: Some(o.identity.clone()),
        },
    );
    let ctx = Arc::new(Context::new(
        client.clone(),
        recorder,
        metrics,
        Box::new(crate::clock::now_ms),
    ));
    let (bgds, deployments, services) = match &o.namespace {
        Some(ns) => (
            Api::<BlueGreenDeployment>::namespaced(client.clone(), ns),
            Api::<Deployment>::namespaced(client.clone(), ns),
            Api::<Service>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client),
        ),
    };
    let controller = Controller::new(bgds, watcher::Config::default());
    let store = controller.store();
    let mut stop_rx = stop.clone();
    let mut lost_rx = lost.clone();
    controller
        .owns(deployments, watcher::Config::default().labels(label::NAME))
        .watches(services, watcher::Config::default(), move |svc: Service| {
            store
                .state()
                .into_iter()
                .filter(|b| {
                    b.namespace() == svc.namespace()
                        && (b.spec.active_service == svc.name_any()
                            || b.spec.preview_service.as_deref() == Some(&svc.name_any()))
                })
                .map(|b| ObjectRef::from_obj(&*b))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(async move {
            tokio::select! {
                _ = stop_rx.wait_for(|s| *s) => {}
                _ = lost_rx.wait_for(|l| *l) => {}
            }
        })
        .run(controller::reconcile, controller::error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "reconcile not completed");
            }
        })
        .await;

    if *lost.borrow() {
        return Err(Error::Unreachable(
            "lost the leader Lease (could not renew it in time); stopped reconciling so another replica can lead".into(),
        ));
    }
    if let Err(e) = lock.release().await {
        tracing::warn!(error = %e, "could not release the Lease; a standby takes over when it expires");
    }
    Ok(())
}

/// Polls the Lease until this replica holds it; `false` when asked to stop first.
async fn wait_to_lead(
    lock: &LeaseLock,
    ready: &AtomicBool,
    mut stop: watch::Receiver<bool>,
) -> bool {
    loop {
        match lock
            .try_acquire_or_renew(k8s_openapi::jiff::Timestamp::now())
            .await
        {
            Ok(leading) => {
                ready.store(true, Ordering::Relaxed);
                if leading {
                    return true;
                }
                tracing::info!("another replica leads; standing by");
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the Lease"),
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return false,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// Renews the Lease every third of its duration; the receiver turns true
/// when it could not be renewed for two thirds of it (before it can expire
/// for the others).
fn keep_leading(lock: Arc<LeaseLock>) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let period = Duration::from_secs(LEASE_SECONDS as u64 / 3);
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(period).await;
            match lock
                .try_acquire_or_renew(k8s_openapi::jiff::Timestamp::now())
                .await
            {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => break,
                Err(e) => tracing::warn!(error = %e, "could not renew the Lease"),
            }
            if last_renewed.elapsed() > period * 2 {
                break;
            }
        }
        let _ = tx.send(true);
    });
    rx
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
