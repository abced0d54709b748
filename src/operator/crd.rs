//! The `BlueGreenDeployment` custom resource: the Kubernetes face of a cyan app.
//!
//! The words follow Argo Rollouts' blueGreen strategy (activeService,
//! previewService, scaleDownDelaySeconds, promote, abort) so its users feel
//! at home. The CRD is generated from these types (`cyan crd`), and
//! `manifests/crd.yaml` is checked against it by a test.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use crate::release::Color;

/// Annotations the CLI (or a person with kubectl) sets to steer a rollout.
pub mod annotation {
    /// Approval: the template hash of the candidate that may go live.
    pub const PROMOTE: &str = "cyan.dev/promote";
    /// Stop: the template hash of the rollout to stop.
    pub const ABORT: &str = "cyan.dev/abort";
    /// Rollback: the revision number the template was restored from.
    pub const ROLLBACK: &str = "cyan.dev/rollback";
    /// A token; a new value retries a halted rollout of the same template.
    pub const RETRY: &str = "cyan.dev/retry";
}

/// Labels and annotations on the objects the operator owns.
pub mod label {
    pub const COLOR: &str = "cyan.dev/color";
    pub const NAME: &str = "cyan.dev/name";
    pub const TEMPLATE_HASH: &str = "cyan.dev/template-hash";
    pub const REVISION: &str = "cyan.dev/revision";
}

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "cyan.dev",
    version = "v1alpha1",
    kind = "BlueGreenDeployment",
    namespaced,
    shortname = "bgd",
    status = "BlueGreenDeploymentStatus",
    doc = "A blue/green deployed app: two Deployments behind one atomic Service selector switch",
    printcolumn(name = "Live", type_ = "string", json_path = ".status.liveColor"),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.liveVersion"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreenDeploymentSpec {
    /// Pods per color once live.
    #[serde(default = "one")]
    pub replicas: i32,
    /// Selects the app's pods; the operator adds `cyan.dev/color` per color.
    pub selector: LabelSelector,
    /// The pod template. A change to it starts a new rollout.
    #[schemars(schema_with = "any_object")]
    pub template: PodTemplateSpec,
    /// The Service whose selector is switched to the live color.
    pub active_service: String,
    /// A Service that selects the candidate only, never the live color.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_service: Option<String>,
    /// Pods of the candidate until it is promoted (default: `replicas`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_replicas: Option<i32>,
    #[serde(default)]
    pub gates: Gates,
    /// A watch after the switch; a failure rolls back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<Verify>,
    /// Wait for `cyan promote` before the switch.
    #[serde(default)]
    pub require_approval: bool,
    /// Promote on its own this long after the candidate passed its gates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_promote_seconds: Option<u32>,
    /// How long the previous color stays scaled after a switch (propagation, instant rollback).
    #[serde(default = "thirty")]
    pub scale_down_delay_seconds: u32,
    /// Revisions kept for `cyan rollback --to`.
    #[serde(default = "ten")]
    pub revision_history_limit: u32,
    /// Stop acting (the live color keeps serving).
    #[serde(default)]
    pub paused: bool,
    /// A candidate not available and gated within this long is halted (Degraded).
    #[serde(default = "six_hundred")]
    pub progress_deadline_seconds: u32,
}

fn one() -> i32 {
    1
}
fn thirty() -> u32 {
    30
}
fn ten() -> u32 {
    10
}
fn six_hundred() -> u32 {
    600
}
fn three() -> u32 {
    3
}
fn five() -> u32 {
    5
}

/// The pod template's schema is Kubernetes' own and is validated when the
/// Deployment is written; inlining it would make the CRD too large for
/// client-side `kubectl apply` (Argo Rollouts' old complaint).
fn any_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true })
}

/// What must hold before the switch. Readiness and `minReadySeconds` always do.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Gates {
    /// A pod counts as available only after being ready this long.
    #[serde(default)]
    pub min_ready_seconds: i32,
    /// HTTP checks against every candidate pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpCheck>,
    /// Skip the HTTP checks on the very first deploy (readiness still applies).
    #[serde(default)]
    pub skip_first_deploy: bool,
}

/// One HTTP GET.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpCheck {
    #[serde(default = "root")]
    pub path: String,
    /// The container port (gates); ignored when `url` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// A full URL instead of pod IP and port (verify: default is the active Service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Lowest and highest accepted status (default 200 to 399).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<(u16, u16)>,
    #[serde(default = "five")]
    pub timeout_seconds: u32,
}

fn root() -> String {
    "/".into()
}

/// Verification after the switch.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verify {
    pub duration_seconds: u32,
    #[serde(default = "five")]
    pub interval_seconds: u32,
    /// Failed checks in a row that roll back.
    #[serde(default = "three")]
    pub failure_threshold: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusCheck>,
}

/// A PromQL query whose value must stay at or below `max`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusCheck {
    /// e.g. `http://prometheus.monitoring:9090`
    pub address: String,
    pub query: String,
    pub max: f64,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    Progressing,
    Gating,
    AwaitingApproval,
    Switching,
    Verifying,
    Healthy,
    Degraded,
    RolledBack,
}

/// What happened to a revision that went live.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Outcome {
    Promoted,
    RolledBack,
    VerifyFailed,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub revision: i64,
    pub version: String,
    pub image: String,
    pub template_hash: String,
    pub color: Color,
    pub promoted_at: String,
    pub outcome: Outcome,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreenDeploymentStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_color: Option<Color>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_revision: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_revision: Option<i64>,
    /// The template hash the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Newest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
    /// Colors whose Deployment passed the gates, by template hash.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gated: BTreeMap<Color, String>,
    /// Unix ms when the candidate was gated (for autoPromoteSeconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gated_at_ms: Option<u64>,
    /// Unix ms when the candidate rollout began (for progressDeadlineSeconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_started_ms: Option<u64>,
    /// Unix ms of the last switch (for scaleDownDelaySeconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switched_at_ms: Option<u64>,
    /// Unix ms until which the live release is verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_until_ms: Option<u64>,
    #[serde(default)]
    pub verify_failures: u32,
    /// A template hash that was stopped (gate deadline, abort, failed verify)
    /// and is not retried until the template or the retry token changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_retry_token: Option<String>,
}
