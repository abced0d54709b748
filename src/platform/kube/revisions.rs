//! Every template cyan rolls out is kept as a ControllerRevision (as
//! StatefulSets and DaemonSets keep theirs), numbered in order. That is what
//! `cyan rollback --to N` restores from, and what `revisionHistoryLimit` prunes.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Resource, ResourceExt};

use crate::error::{Error, Result};
use crate::platform::kube::crd::{label, BlueGreenDeployment};

/// The app's revisions, oldest first.
pub async fn list(api: &Api<ControllerRevision>, app: &str) -> Result<Vec<ControllerRevision>> {
    let lp = ListParams::default().labels(&format!("{}={app}", label::NAME));
    let mut items = api.list(&lp).await?.items;
    items.sort_by_key(|r| r.revision);
    Ok(items)
}

/// The revision number of the spec's template, writing its
/// ControllerRevision the first time it is seen.
pub async fn ensure(
    api: &Api<ControllerRevision>,
    bgd: &BlueGreenDeployment,
    hash: &str,
) -> Result<i64> {
    let existing = list(api, &bgd.name_any()).await?;
    if let Some(r) = existing.iter().find(|r| hash_of(r) == Some(hash)) {
        return Ok(r.revision);
    }
    let revision = existing.last().map_or(1, |r| r.revision + 1);
    let cr = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", bgd.name_any())),
            namespace: bgd.namespace(),
            labels: Some(BTreeMap::from([
                (label::NAME.into(), bgd.name_any()),
                (label::TEMPLATE_HASH.into(), hash.to_string()),
            ])),
            owner_references: bgd.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        data: Some(RawExtension(
            serde_json::json!({ "template": bgd.spec.template }),
        )),
        revision,
    };
    match api.create(&PostParams::default(), &cr).await {
        Ok(_) => Ok(revision),
        // A racing reconcile wrote it first: read its number back.
        Err(e) if crate::error::is_conflict(&e) => list(api, &bgd.name_any())
            .await?
            .iter()
            .find(|r| hash_of(r) == Some(hash))
            .map(|r| r.revision)
            .ok_or_else(|| {
                Error::Platform(format!(
                    "ControllerRevision {} conflicts but is not listed",
                    cr.name_any()
                ))
            }),
        Err(e) => Err(e.into()),
    }
}

pub fn hash_of(r: &ControllerRevision) -> Option<&str> {
    r.metadata
        .labels
        .as_ref()?
        .get(label::TEMPLATE_HASH)
        .map(String::as_str)
}

/// The pod template a revision holds.
pub fn template_of(r: &ControllerRevision) -> Result<PodTemplateSpec> {
    let data = r.data.as_ref().map(|d| d.0["template"].clone());
    data.and_then(|t| serde_json::from_value(t).ok())
        .ok_or_else(|| {
            Error::Platform(format!(
                "ControllerRevision {} holds no pod template",
                r.name_any()
            ))
        })
}

/// Deletes the oldest revisions beyond `limit`, never one in `keep`
/// (the hashes the two Deployments run).
pub async fn prune(
    api: &Api<ControllerRevision>,
    app: &str,
    limit: u32,
    keep: &[String],
) -> Result<()> {
    let all = list(api, app).await?;
    let excess = all.len().saturating_sub(limit.max(1) as usize);
    for r in all.iter().take(excess) {
        if hash_of(r).is_some_and(|h| keep.iter().any(|k| k == h)) {
            continue;
        }
        match api.delete(&r.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
