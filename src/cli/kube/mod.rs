//! The CLI against a cluster (`platform: kubernetes`): deploy builds and
//! pushes as on Docker, then writes the BlueGreenDeployment and follows its
//! status; promote, abort and rollback set what the operator acts on
//! (annotations, or a restored template), and follow the outcome.
//!
//! The CLI never touches Deployments or Services itself: the operator is the
//! one writer, so a CLI killed mid-way leaves nothing half-done. What each
//! command prints is the report Docker prints, mapped from the CR's status
//! (`report.rs`).

mod manifest;
mod patch;
mod report;

use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};

use k8s_openapi::api::apps::v1::ControllerRevision;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

use crate::cli::report::{AbortReport, AppId, DeployReport, History, StatusReport};
use crate::config::{Loaded, PlatformKind};
use crate::error::{Error, Result};
use crate::image;
use crate::output::Output;
use crate::plan::Intent;
use crate::platform::docker;
use crate::platform::kube::crd::{
    annotation, BlueGreenDeployment, BlueGreenDeploymentStatus, HistoryEntry, Outcome, Phase,
};
use crate::platform::kube::{objects, revisions};
use crate::release;

struct Cluster {
    api: Api<BlueGreenDeployment>,
    revisions: Api<ControllerRevision>,
    name: String,
    namespace: String,
    /// The reports' id of the app.
    id: AppId,
}

async fn connect(cfg: &Loaded) -> Result<Cluster> {
    let config = kube::Config::infer().await.map_err(|e| {
        Error::Config(format!(
            "no Kubernetes configuration (KUBECONFIG, ~/.kube/config, or in-cluster): {e}"
        ))
    })?;
    let namespace = cfg
        .config
        .kubernetes
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config)
        .map_err(|e| Error::Config(format!("unusable Kubernetes configuration: {e}")))?;
    let cluster = Cluster {
        api: Api::namespaced(client.clone(), &namespace),
        revisions: Api::namespaced(client, &namespace),
        name: cfg.config.app.to_string(),
        id: AppId {
            app: cfg.config.app.to_string(),
            environment: cfg.config.environment.to_string(),
            platform: PlatformKind::Kubernetes,
            namespace: Some(namespace.clone()),
        },
        namespace,
    };
    // Fail before building anything when the cluster cannot take the CR
    // (a type the API does not know lists as 404).
    // Metadata only: another app's object that cannot be read must not
    // fail this one's commands.
    match cluster.api.list_metadata(&ListParams::default().limit(1)).await {
        Err(kube::Error::Api(s)) if s.code == 404 => Err(Error::Config(
            "the BlueGreenDeployment CRD is not installed in this cluster: kubectl apply -f manifests/crd.yaml (or `cyan crd | kubectl apply -f -`), then run the operator (manifests/operator.yaml)".into(),
        )),
        Err(e) => Err(e.into()),
        Ok(_) => Ok(cluster),
    }
}

impl Cluster {
    fn what(&self) -> String {
        format!("bluegreendeployment {}/{}", self.namespace, self.name)
    }

    async fn get(&self) -> Result<BlueGreenDeployment> {
        self.api.get_opt(&self.name).await?.ok_or_else(|| {
            Error::Refused(format!(
                "{} does not exist; run cyan deploy first",
                self.what()
            ))
        })
    }

    async fn annotate(&self, key: &str, value: &str) -> Result<()> {
        let patch = json!({ "metadata": { "annotations": { key: value } } });
        self.api
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    /// Writes the spec (and cyan's annotations) as `edit` changes the object
    /// read, on the condition that the spec is still the one read
    /// (`patch::spec_patch`). A refused write (another spec landed, or an
    /// annotation to remove went) is computed again from a fresh read,
    /// after a short pause that grows, with jitter.
    async fn update(&self, edit: impl Fn(&mut BlueGreenDeployment)) -> Result<()> {
        let mut pause = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(10))
            .with_max_delay(Duration::from_millis(500))
            .with_max_times(UPDATE_ATTEMPTS)
            .with_jitter()
            .build();
        loop {
            let read = self.get().await?;
            let mut edited = read.clone();
            edit(&mut edited);
            let write = Patch::Json::<()>(patch::spec_patch(&read, &edited));
            let refused = match self
                .api
                .patch(&self.name, &PatchParams::default(), &write)
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 422 => s.message,
                Err(e) => return Err(e.into()),
            };
            match pause.next() {
                Some(wait) => tokio::time::sleep(wait).await,
                None => {
                    return Err(Error::Platform(format!(
                        "{} kept changing under cyan ({} writes refused, the last: {refused}); try again",
                        self.what(),
                        UPDATE_ATTEMPTS + 1
                    )))
                }
            }
        }
    }

    /// Prints the operator's progress on template `hash` until it settles:
    /// live and healthy, waiting for approval (when `approval_settles`: a
    /// promote waits past it), or stopped.
    async fn follow(
        &self,
        hash: &str,
        approval_settles: bool,
        limit: Duration,
        out: &Output,
    ) -> Result<BlueGreenDeploymentStatus> {
        let started = Instant::now();
        let mut said = String::new();
        loop {
            let obj = self.get().await?;
            let s = obj.status.clone().unwrap_or_default();
            let fresh = s.observed_generation >= obj.metadata.generation
                && s.current_hash.as_deref() == Some(hash);
            if let (true, Some(phase)) = (fresh, s.phase) {
                let line = format!("{phase:?}: {}", s.message.clone().unwrap_or_default());
                if line != said {
                    out.detail(&line);
                    said = line;
                }
                let ours_live = s.live_color.is_some()
                    && s.history.last().is_some_and(|h| {
                        h.template_hash == hash && h.outcome != Outcome::VerifyFailed
                    });
                let why = || s.message.clone().unwrap_or_default();
                match phase {
                    Phase::Healthy if ours_live => return Ok(s),
                    Phase::AwaitingApproval if approval_settles => return Ok(s),
                    Phase::Degraded => return Err(Error::GateFailed(why())),
                    Phase::RolledBack => return Err(Error::VerifyFailed(why())),
                    _ => {}
                }
            }
            if started.elapsed() > limit {
                return Err(Error::Unreachable(format!(
                    "{} did not settle within {}: is `cyan operator` running? (kubectl -n cyan-system logs deploy/cyan-operator)",
                    self.what(),
                    humantime::format_duration(limit)
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// How long following a rollout may take: the operator's own deadlines plus
/// a margin.
fn follow_limit(b: &BlueGreenDeployment) -> Duration {
    let verify = b.spec.verify.as_ref().map_or(0, |v| v.duration_seconds);
    Duration::from_secs(u64::from(b.spec.progress_deadline_seconds + verify) + 120)
}

impl Cluster {
    /// The report of a rollout of the image `reference` that began at
    /// `before` and settled at `after`.
    fn settled(
        &self,
        cfg: &Loaded,
        intent: Intent,
        reference: &str,
        before: &BlueGreenDeploymentStatus,
        after: &BlueGreenDeploymentStatus,
    ) -> DeployReport {
        report::deploy(
            self.id.clone(),
            report::Settled {
                intent,
                reference,
                before,
                after,
                config_path: cfg.path.display().to_string(),
            },
        )
    }
}

pub async fn deploy(cfg: &Loaded, version: Option<&str>, out: &Output) -> Result<DeployReport> {
    let version = release::resolve_version(version, &cfg.dir())?;
    let c = &cfg.config;
    if c.image.registry().is_none() {
        return Err(Error::Config(format!(
            "on Kubernetes the cluster pulls the image, so it must name a registry: image: ghcr.io/acme/{0} in cyan.yaml, or --registry 127.0.0.1:5000",
            c.image
        )));
    }
    let cluster = connect(cfg).await?;
    let d = docker::connect().await?;
    if image::inspect(&d, c.image.as_str(), &version)
        .await?
        .is_none()
    {
        out.phase(format!("build {}", c.image.tag(&version)));
        image::build(&d, cfg, &version, out).await?;
        out.done(format!("built {}", c.image.tag(&version)));
    }
    out.phase(format!("push {}", c.image.tag(&version)));
    let digest = image::push(&d, cfg, &version, out).await?;
    out.done(format!("pushed {}", c.image.tag(&version)));
    // The tag names the version; the digest pins what runs.
    let pinned = match digest.split_once('@') {
        Some((_, sha)) => format!("{}@{sha}", c.image.tag(&version)),
        None => c.image.tag(&version),
    };
    let wanted = manifest::bluegreen(c, &pinned, &cluster.namespace);
    let hash = objects::template_hash(&wanted);

    out.phase(format!("write {}", cluster.what()));
    let existing = cluster.api.get_opt(&cluster.name).await?;
    let before = existing
        .as_ref()
        .and_then(|o| o.status.clone())
        .unwrap_or_default();
    match existing {
        None => {
            cluster.api.create(&PostParams::default(), &wanted).await?;
        }
        Some(_) => {
            let retry = crate::clock::random_token();
            cluster
                .update(|obj| {
                    let halted = obj.status.as_ref().and_then(|s| s.halted_hash.as_deref())
                        == Some(hash.as_str());
                    obj.spec = wanted.spec.clone();
                    let ann = obj.metadata.annotations.get_or_insert_default();
                    ann.remove(annotation::ROLLBACK);
                    ann.remove(annotation::ABORT);
                    // An approval is for the rollout it was given to.
                    ann.remove(annotation::PROMOTE);
                    if halted {
                        // The same release again: the user asks for a retry.
                        ann.insert(annotation::RETRY.into(), retry.clone());
                    }
                })
                .await?;
        }
    }
    out.done(format!(
        "wrote {} ({version}, template {hash})",
        cluster.what()
    ));
    out.phase(format!("operator rolls out {version}"));
    let s = cluster
        .follow(&hash, true, follow_limit(&wanted), out)
        .await?;
    out.done(format!(
        "{version}: {:?}",
        s.phase.unwrap_or(Phase::Healthy)
    ));
    Ok(cluster.settled(cfg, Intent::Deploy, &pinned, &before, &s))
}

pub async fn promote(cfg: &Loaded, out: &Output) -> Result<DeployReport> {
    let cluster = connect(cfg).await?;
    let obj = cluster.get().await?;
    let s = obj.status.clone().unwrap_or_default();
    let hash = match (s.phase, &s.current_hash) {
        (Some(Phase::AwaitingApproval), Some(h)) => h.clone(),
        _ => {
            return Err(Error::Refused(format!(
                "nothing waits for approval in {} (phase {:?})",
                cluster.what(),
                s.phase
            )))
        }
    };
    cluster.annotate(annotation::PROMOTE, &hash).await?;
    out.phase("promote: the operator scales and switches");
    let s = cluster
        .follow(&hash, false, follow_limit(&obj), out)
        .await?;
    out.done("promoted");
    let before = obj.status.clone().unwrap_or_default();
    Ok(cluster.settled(cfg, Intent::Promote, &objects::image(&obj), &before, &s))
}

pub async fn abort(cfg: &Loaded, out: &Output) -> Result<AbortReport> {
    let cluster = connect(cfg).await?;
    let obj = cluster.get().await?;
    let s = obj.status.clone().unwrap_or_default();
    let active = matches!(
        s.phase,
        Some(
            Phase::Progressing
                | Phase::Gating
                | Phase::AwaitingApproval
                | Phase::Switching
                | Phase::Verifying
        )
    );
    let Some(hash) = s.current_hash.clone().filter(|_| active) else {
        return Err(Error::Refused(format!(
            "{} has no rollout in progress to abort (phase {:?}); to go back to an earlier release use cyan rollback",
            cluster.what(),
            s.phase
        )));
    };
    let (color, version) = report::aborted(&obj);
    cluster.annotate(annotation::ABORT, &hash).await?;
    out.phase("abort: the operator stops the rollout");
    match cluster
        .follow(&hash, false, Duration::from_secs(120), out)
        .await
    {
        Err(Error::GateFailed(why) | Error::VerifyFailed(why)) => {
            out.done("aborted");
            Ok(AbortReport {
                id: cluster.id.clone(),
                aborted: version,
                color,
                message: why,
            })
        }
        Err(e) => Err(e),
        Ok(s) => Err(Error::Refused(format!(
            "the rollout finished before the abort took effect: live is {} ({}); use cyan rollback",
            s.live_color.map_or("none".into(), |c| c.to_string()),
            s.live_version.unwrap_or_default()
        ))),
    }
}

/// Retries of a spec write another write got in before, after the first.
const UPDATE_ATTEMPTS: usize = 9;

/// The revisions an unnamed rollback may go to, newest first. Each revision
/// is judged by its newest history entry, as `plan::rollback_target` judges
/// a release on Docker: the live revision and one whose newest entry is a
/// failed verification are left out (naming it with `--to` still reaches
/// it); one that failed once and went live again later is a target.
fn rollback_candidates(history: &[HistoryEntry], live: Option<i64>) -> Vec<i64> {
    let mut judged = std::collections::BTreeSet::new();
    history
        .iter()
        .rev()
        .filter(|h| judged.insert(h.revision))
        .filter(|h| h.outcome != Outcome::VerifyFailed && Some(h.revision) != live)
        .map(|h| h.revision)
        .collect()
}

pub async fn rollback(cfg: &Loaded, to: Option<&str>, out: &Output) -> Result<DeployReport> {
    let cluster = connect(cfg).await?;
    let obj = cluster.get().await?;
    let s = obj.status.clone().unwrap_or_default();
    let kept = revisions::list(&cluster.revisions, &cluster.name).await?;
    let version_of = |r: &ControllerRevision| {
        revisions::template_of(r)
            .ok()
            .and_then(|t| t.spec?.containers.first()?.image.clone())
            .map(|i| objects::version_of(&i))
            .unwrap_or_default()
    };
    let target = match to {
        Some(want) => kept
            .iter()
            .find(|r| r.revision.to_string() == want)
            .or_else(|| kept.iter().rev().find(|r| version_of(r) == want)),
        None => rollback_candidates(&s.history, s.live_revision)
            .into_iter()
            .find_map(|rev| kept.iter().find(|r| r.revision == rev)),
    };
    let Some(target) = target else {
        let list: Vec<String> = kept
            .iter()
            .map(|r| format!("{} ({})", r.revision, version_of(r)))
            .collect();
        return Err(Error::Refused(format!(
            "no revision to roll back to{}; kept revisions: {}",
            to.map(|t| format!(" named {t}")).unwrap_or_default(),
            if list.is_empty() {
                "none".into()
            } else {
                list.join(", ")
            }
        )));
    };
    if Some(target.revision) == s.live_revision {
        return Err(Error::Refused(format!(
            "revision {} is already live",
            target.revision
        )));
    }
    let template = revisions::template_of(target)?;
    let hash = revisions::hash_of(target).unwrap_or_default().to_string();
    let version = version_of(target);
    let reference = template
        .spec
        .as_ref()
        .and_then(|t| t.containers.first()?.image.clone())
        .unwrap_or_default();
    cluster
        .update(|obj| {
            obj.spec.template = template.clone();
            let ann = obj.metadata.annotations.get_or_insert_default();
            ann.insert(annotation::ROLLBACK.into(), hash.clone());
            ann.remove(annotation::ABORT);
        })
        .await?;
    out.phase(format!(
        "roll back to revision {} ({version})",
        target.revision
    ));
    let after = cluster
        .follow(&hash, false, follow_limit(&obj), out)
        .await?;
    out.done(format!("revision {} is live", target.revision));
    Ok(cluster.settled(cfg, Intent::Rollback, &reference, &s, &after))
}

/// `cyan status`: the BlueGreenDeployment's status as Docker's report; an
/// app with no BlueGreenDeployment is not deployed.
pub async fn status(cfg: &Loaded) -> Result<StatusReport> {
    let cluster = connect(cfg).await?;
    let obj = cluster.api.get_opt(&cluster.name).await?;
    Ok(report::status(cluster.id.clone(), obj.as_ref()))
}

/// `cyan history`: the status's history as Docker's lines, newest first.
pub async fn history(cfg: &Loaded) -> Result<History> {
    let cluster = connect(cfg).await?;
    let status = cluster
        .api
        .get_opt(&cluster.name)
        .await?
        .and_then(|o| o.status)
        .unwrap_or_default();
    Ok(History {
        route: cluster.what(),
        lines: report::history(&status),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::Color;

    fn entry(revision: i64, outcome: Outcome) -> HistoryEntry {
        HistoryEntry {
            revision,
            version: format!("{revision}.0.0"),
            image: format!("web:{revision}.0.0"),
            template_hash: format!("h{revision}"),
            color: Color::Blue,
            promoted_at: "2026-11-30T09:00:00Z".into(),
            outcome,
        }
    }

    #[test]
    fn an_unnamed_rollback_judges_each_revision_by_its_newest_entry() {
        use Outcome::*;
        // (history, oldest first; the live revision; the candidates)
        type Row = (&'static [(i64, Outcome)], i64, &'static [i64]);
        let table: &[Row] = &[
            // The one before live.
            (&[(1, Promoted), (2, Promoted)], 2, &[1]),
            // A failed verify is skipped; the one before it is the target.
            (&[(1, Promoted), (2, VerifyFailed), (3, Promoted)], 3, &[1]),
            // Rolled back to 2, which then failed its verify: 2 is skipped,
            // although it went live once before.
            (
                &[
                    (1, Promoted),
                    (2, Promoted),
                    (2, VerifyFailed),
                    (1, RolledBack),
                ],
                1,
                &[],
            ),
            // Failed once, live again later: a target.
            (
                &[
                    (1, Promoted),
                    (2, VerifyFailed),
                    (2, Promoted),
                    (3, Promoted),
                ],
                3,
                &[2, 1],
            ),
            // A revision rolled back to is judged like any other.
            (&[(1, Promoted), (2, Promoted), (1, RolledBack)], 1, &[2]),
        ];
        for (history, live, want) in table {
            let history: Vec<HistoryEntry> = history.iter().map(|(r, o)| entry(*r, *o)).collect();
            assert_eq!(
                rollback_candidates(&history, Some(*live)),
                want.to_vec(),
                "{history:?} live {live}"
            );
        }
    }
}
