//! The Kubernetes objects cyan derives from a `BlueGreenDeployment`, and how
//! it reads their state back: pure functions, so they are tested without an
//! API server.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::plan::SetState;
use crate::platform::kube::crd::{annotation, label, BlueGreenDeployment};
use crate::release::{Color, ReleaseKey};

/// `<name>-blue` or `<name>-green`.
pub fn deployment_name(bgd: &BlueGreenDeployment, color: Color) -> String {
    format!("{}-{color}", bgd.name_any())
}

/// A short, stable hash of the pod template: what makes two rollouts the
/// same release. Serialization of k8s-openapi types is ordered (structs and
/// BTreeMaps), so equal templates hash equal.
pub fn template_hash(bgd: &BlueGreenDeployment) -> String {
    let json = serde_json::to_vec(&bgd.spec.template).expect("a pod template serializes");
    let digest = Sha256::digest(&json);
    digest[..5].iter().map(|b| format!("{b:02x}")).collect()
}

/// The image of the template's first container (what people call the version).
pub fn image(bgd: &BlueGreenDeployment) -> String {
    bgd.spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

/// The tag of an image reference (`repo:1.2` -> `1.2`), else the reference.
pub fn version_of(image: &str) -> String {
    let name = image.split('@').next().unwrap_or(image);
    match name.rsplit_once(':') {
        Some((_, tag)) if !tag.contains('/') => tag.to_string(),
        _ => image.to_string(),
    }
}

/// The release the spec asks for.
pub fn target(bgd: &BlueGreenDeployment) -> ReleaseKey {
    ReleaseKey {
        version: version_of(&image(bgd)),
        config_hash: template_hash(bgd),
    }
}

/// The app's labels plus the color.
fn colored(mut labels: BTreeMap<String, String>, color: Color) -> BTreeMap<String, String> {
    labels.insert(label::COLOR.into(), color.to_string());
    labels
}

/// The labels of the template's pods.
fn pod_labels(bgd: &BlueGreenDeployment) -> BTreeMap<String, String> {
    bgd.spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

/// A label selector string (`k=v,k=v`) for the color's pods.
pub fn pod_selector(bgd: &BlueGreenDeployment, color: Color) -> String {
    let labels = colored(
        bgd.spec.selector.match_labels.clone().unwrap_or_default(),
        color,
    );
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// What the spec must satisfy before cyan writes anything: the selector must
/// select the template's pods, or a switch could point a Service at nothing.
/// The JSON Pointer (RFC 6901) of annotation `key` in an object, for an
/// RFC 6902 patch: `~` and `/` escaped.
pub fn annotation_path(key: &str) -> String {
    format!(
        "/metadata/annotations/{}",
        key.replace('~', "~0").replace('/', "~1")
    )
}

pub fn validate(bgd: &BlueGreenDeployment) -> Result<(), String> {
    let template = &bgd.spec.template.metadata;
    if let Some(why) = template
        .as_ref()
        .and_then(|m| m.annotations.as_ref()?.get(annotation::INVALID_TEMPLATE))
    {
        return Err(format!("spec.template is not a pod template: {why}"));
    }
    let wanted = bgd.spec.selector.match_labels.clone().unwrap_or_default();
    if wanted.is_empty() {
        return Err("spec.selector.matchLabels is empty: it must name the app's pod labels".into());
    }
    let labels = pod_labels(bgd);
    for (k, v) in &wanted {
        if labels.get(k) != Some(v) {
            return Err(format!(
                "spec.selector.matchLabels {k}={v} is not among spec.template.metadata.labels"
            ));
        }
    }
    if labels.contains_key(label::COLOR) {
        return Err(format!(
            "spec.template.metadata.labels must not set {}: cyan sets it per color",
            label::COLOR
        ));
    }
    if image(bgd).is_empty() {
        return Err("spec.template.spec.containers[0].image is missing".into());
    }
    if bgd.spec.replicas < 1 {
        return Err("spec.replicas must be at least 1".into());
    }
    Ok(())
}

/// The color's Deployment at `replicas`, owned by the BlueGreenDeployment.
pub fn deployment(
    bgd: &BlueGreenDeployment,
    color: Color,
    replicas: i32,
    revision: i64,
) -> Deployment {
    let app_labels = bgd.spec.selector.match_labels.clone().unwrap_or_default();
    let mut template = bgd.spec.template.clone();
    let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    meta.labels = Some(colored(meta.labels.take().unwrap_or_default(), color));
    let mut labels = colored(BTreeMap::new(), color);
    labels.insert(label::NAME.into(), bgd.name_any());
    Deployment {
        metadata: ObjectMeta {
            name: Some(deployment_name(bgd, color)),
            namespace: bgd.namespace(),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([
                (label::TEMPLATE_HASH.into(), template_hash(bgd)),
                (label::REVISION.into(), revision.to_string()),
            ])),
            owner_references: bgd.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(colored(app_labels, color)),
                match_expressions: bgd.spec.selector.match_expressions.clone(),
            },
            template,
            min_ready_seconds: Some(bgd.spec.gates.min_ready_seconds),
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// The release a Deployment runs, from the annotations cyan wrote.
pub fn release_of(d: &Deployment) -> Option<(ReleaseKey, i64)> {
    let ann = d.metadata.annotations.as_ref()?;
    let hash = ann.get(label::TEMPLATE_HASH)?.clone();
    let revision = ann.get(label::REVISION)?.parse().ok()?;
    let image = d
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .first()?
        .image
        .clone()?;
    Some((
        ReleaseKey {
            version: version_of(&image),
            config_hash: hash,
        },
        revision,
    ))
}

/// Whether every wanted pod is updated, available (ready for
/// `minReadySeconds`), and no old pod is left.
pub fn fully_available(d: &Deployment) -> bool {
    let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(st) = &d.status else {
        return false;
    };
    let fresh = st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    wanted > 0
        && fresh
        && st.updated_replicas.unwrap_or(0) == wanted
        && st.available_replicas.unwrap_or(0) == wanted
        && st.replicas.unwrap_or(0) == wanted
}

/// A color's Deployment as the planner sees it.
pub fn set_state(d: &Deployment) -> SetState {
    let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0) as u32;
    let available = d
        .status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
        .max(0) as u32;
    let unavailable = if wanted == 0 || fully_available(d) {
        0
    } else {
        wanted.saturating_sub(available).max(1)
    };
    SetState {
        release: release_of(d).map(|(k, _)| k),
        total: wanted,
        running: available.min(wanted),
        unavailable,
        ..SetState::default()
    }
}

/// The color a Service's selector points at, if any.
pub fn selected_color(svc: &Service) -> Option<Color> {
    svc.spec
        .as_ref()?
        .selector
        .as_ref()?
        .get(label::COLOR)?
        .parse()
        .ok()
}

/// Refuses a switch that would leave the Service selecting no pod: every
/// other key of its selector must be on the template's pods (Argo #4750).
pub fn check_selector(svc: &Service, bgd: &BlueGreenDeployment) -> Result<(), String> {
    let pod_labels = pod_labels(bgd);
    let selector = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    for (k, v) in selector.iter().filter(|(k, _)| *k != label::COLOR) {
        if pod_labels.get(k) != Some(v) {
            return Err(format!(
                "Service {} selects {k}={v}, which the pods do not carry; switching it would select nothing",
                svc.name_any()
            ));
        }
    }
    Ok(())
}

/// The pod IPs of ready pods.
pub fn ready_ips(pods: &[Pod]) -> Vec<(String, String)> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let st = p.status.as_ref()?;
            let ready = st
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let ip = st.pod_ip.clone()?;
            ready.then(|| (p.name_any(), ip))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_image_tags() {
        assert_eq!(version_of("ghcr.io/acme/web:1.4.0"), "1.4.0");
        assert_eq!(version_of("127.0.0.1:5000/web:2"), "2");
        assert_eq!(version_of("127.0.0.1:5000/web"), "127.0.0.1:5000/web");
        assert_eq!(version_of("web:3@sha256:abc"), "3");
    }
}
