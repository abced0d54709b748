//! The operator's reconcile against the in-memory API server
//! (`tests/apiserver`): every phase, approval, abort, rollback, verify, the
//! progress deadline, unavailable Deployments, missing Services, API errors
//! and conflicts, a restart mid-rollout, and leader election. HTTP gates and
//! verify checks hit real loopback servers.

mod apiserver;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use apiserver::{ApiServer, Backend, BGDS, SERVICES as SVCS};
use cyan::operator::controller::{self, Context};
use cyan::operator::crd::BlueGreenDeployment;
use cyan::operator::leader::LeaseLock;
use cyan::operator::metrics::Metrics;
use http::Method;
use kube::api::Api;
use serde_json::{json, Value};

const DEPLOYS: &str = "/apis/apps/v1/namespaces/default/deployments";
const REVS: &str = "/apis/apps/v1/namespaces/default/controllerrevisions";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

const T0: u64 = 1_800_000_000_000;

struct Cluster {
    api: ApiServer,
    now: Arc<AtomicU64>,
    ctx: Arc<Context>,
    metrics: Arc<Metrics>,
    /// Every phase a reconcile wrote, in order, without repeats.
    phases: Mutex<Vec<String>>,
}

fn bgd(image: &str) -> Value {
    let mut bgd = apiserver::bgd(
        image,
        json!({
            "replicas": 2,
            "previewService": "web-preview",
            "scaleDownDelaySeconds": 30,
            "progressDeadlineSeconds": 120,
        }),
    );
    bgd["metadata"]["namespace"] = json!("default");
    bgd
}

/// The status's message.
fn message(status: &Value) -> String {
    status["message"].as_str().unwrap().to_string()
}

/// The status's condition of type `kind`.
fn condition(status: &Value, kind: &str) -> Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
        .unwrap()
        .clone()
}

impl Cluster {
    fn new() -> Self {
        let api = ApiServer::new();
        api.put_service("web", json!({ "app": "web" }));
        api.put_service("web-preview", json!({ "app": "web" }));
        Self::attach(api, Arc::new(AtomicU64::new(T0)))
    }

    /// A fresh operator (new client, context and metrics) on the same cluster.
    fn attach(api: ApiServer, now: Arc<AtomicU64>) -> Self {
        let clock = now.clone();
        let ctx = api.operator(Box::new(move || clock.load(Ordering::SeqCst)));
        Cluster {
            api,
            now,
            metrics: ctx.metrics.clone(),
            ctx,
            phases: Mutex::default(),
        }
    }

    fn create(&self, spec: Value) {
        self.api.put(BGDS, spec);
    }

    /// Changes the BGD's spec or annotations as `kubectl` would.
    fn edit(&self, f: impl FnOnce(&mut Value)) {
        self.api.edit(BGDS, "web", |o| {
            let before = o["spec"].clone();
            f(o);
            if o["spec"] != before {
                let g = o["metadata"]["generation"].as_i64().unwrap() + 1;
                o["metadata"]["generation"] = json!(g);
            }
        });
    }

    fn set_image(&self, image: &str) {
        self.edit(|o| o["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image));
    }

    fn annotate(&self, key: &str, value: &str) {
        self.edit(|o| o["metadata"]["annotations"][key] = json!(value));
    }

    fn advance(&self, secs: u64) {
        self.now.fetch_add(secs * 1000, Ordering::SeqCst);
    }

    async fn reconcile(&self) -> cyan::error::Result<()> {
        let api: Api<BlueGreenDeployment> = Api::namespaced(self.ctx.client.clone(), "default");
        let obj = api.get("web").await.expect("the BlueGreenDeployment");
        let result = controller::reconcile(Arc::new(obj), self.ctx.clone()).await;
        if let Err(e) = &result {
            let obj = Arc::new(api.get("web").await.unwrap());
            controller::error_policy(obj, e, self.ctx.clone());
        }
        if let Some(p) = self.status()["phase"].as_str() {
            let mut phases = self.phases.lock().unwrap();
            if phases.last().map(String::as_str) != Some(p) {
                phases.push(p.to_string());
            }
        }
        result.map(drop)
    }

    /// Reconciles, letting the Deployment controller catch up after each
    /// step, until `done` holds for the status (at most 40 rounds).
    async fn run_until(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..40 {
            let _ = self.reconcile().await;
            self.api.settle_deployments();
            let status = self.status();
            if done(&status) {
                return status;
            }
        }
        panic!(
            "never reached {what}; status: {:#}\nphases: {:?}",
            self.status(),
            self.phases.lock().unwrap()
        );
    }

    /// web:1 live, then web:2 rolled out with approval required and
    /// `approval`'s fields in the spec (previewReplicas,
    /// autoPromoteSeconds), until it waits for the approval.
    async fn waiting_for_approval(&self, approval: Value) {
        self.create(bgd("web:1"));
        self.healthy_on("1").await;
        self.edit(|o| {
            o["spec"]["requireApproval"] = json!(true);
            for (field, value) in approval.as_object().unwrap() {
                o["spec"][field] = value.clone();
            }
            o["spec"]["template"]["spec"]["containers"][0]["image"] = json!("web:2");
        });
        self.in_phase("AwaitingApproval").await;
    }

    /// Runs until the status is `phase`.
    async fn in_phase(&self, phase: &str) -> Value {
        self.run_until(phase, |s| s["phase"] == phase).await
    }

    /// Runs until the status is `phase` with `version` live.
    async fn live_in(&self, phase: &str, version: &str) -> Value {
        self.run_until(&format!("{phase} on {version}"), |s| {
            s["phase"] == phase && s["liveVersion"] == version
        })
        .await
    }

    async fn healthy_on(&self, version: &str) -> Value {
        self.live_in("Healthy", version).await
    }

    /// `n` reconciles, each followed by the Deployment controller; each
    /// must succeed.
    async fn rounds(&self, n: usize) {
        for _ in 0..n {
            self.reconcile().await.unwrap();
            self.api.settle_deployments();
        }
    }

    /// `rounds`, whatever each reconcile returns.
    async fn rounds_ignoring_errors(&self, n: usize) {
        for _ in 0..n {
            let _ = self.reconcile().await;
            self.api.settle_deployments();
        }
    }

    /// Annotates the BGD with `key` (`cyan.dev/promote`, `cyan.dev/abort`)
    /// for the release it is rolling out now.
    fn annotate_current(&self, key: &str) {
        let hash = self.hash();
        self.annotate(key, &hash);
    }

    /// web:1, with approval required, promoted and Healthy.
    async fn approved_first_release(&self) {
        let mut spec = bgd("web:1");
        spec["spec"]["requireApproval"] = json!(true);
        self.create(spec);
        self.in_phase("AwaitingApproval").await;
        self.annotate_current("cyan.dev/promote");
        self.healthy_on("1").await;
    }

    /// Releases web:1, then web:2, each until Healthy: revision 1's hash
    /// and template, for a rollback to it.
    async fn two_releases(&self) -> (String, Value) {
        self.create(bgd("web:1"));
        self.healthy_on("1").await;
        let v1 = self.hash();
        let v1_template = self.api.get(BGDS, "web").unwrap()["spec"]["template"].clone();
        self.set_image("web:2");
        self.healthy_on("2").await;
        (v1, v1_template)
    }

    /// What `cyan rollback` writes: the revision's template and the
    /// annotation naming its hash.
    fn roll_back_to(&self, hash: &str, template: Value) {
        self.edit(|o| {
            o["spec"]["template"] = template;
            o["metadata"]["annotations"]["cyan.dev/rollback"] = json!(hash);
        });
    }

    fn status(&self) -> Value {
        self.api.get(BGDS, "web").unwrap()["status"].clone()
    }

    fn selected(&self, svc: &str) -> Option<String> {
        self.api.get(SVCS, svc).unwrap()["spec"]["selector"]["cyan.dev/color"]
            .as_str()
            .map(String::from)
    }

    fn replicas(&self, color: &str) -> Option<i64> {
        self.api.get(DEPLOYS, &format!("web-{color}"))?["spec"]["replicas"].as_i64()
    }

    fn hash(&self) -> String {
        self.status()["currentHash"].as_str().unwrap().to_string()
    }

    fn message(&self) -> String {
        message(&self.status())
    }

    fn phases(&self) -> Vec<String> {
        self.phases.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn a_first_deploy_is_gated_then_switched_and_recorded() {
    let c = Cluster::new();
    c.create(bgd("registry.local/web:1.0.0"));
    let s = c.healthy_on("1.0.0").await;
    assert_eq!(
        c.phases(),
        ["Progressing", "Gating", "Switching", "Healthy"],
        "the first deploy walks every phase, gate included"
    );
    assert_eq!(c.selected("web").as_deref(), Some("blue"));
    assert_eq!(s["liveColor"], "blue");
    assert_eq!(s["liveRevision"], 1);
    assert_eq!(s["history"].as_array().unwrap().len(), 1);
    assert_eq!(s["history"][0]["outcome"], "Promoted");
    assert_eq!(s["observedGeneration"], 1);
    let cond = |t: &str| condition(&s, t)["status"].clone();
    assert_eq!(cond("Available"), "True");
    assert_eq!(cond("Promoted"), "True");
    assert_eq!(cond("Progressing"), "False");
    let dep = c.api.get(DEPLOYS, "web-blue").unwrap();
    assert_eq!(
        dep["metadata"]["ownerReferences"][0]["kind"],
        "BlueGreenDeployment"
    );
    assert_eq!(dep["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(
        dep["spec"]["template"]["metadata"]["labels"]["cyan.dev/color"],
        "blue"
    );
    assert_eq!(
        dep["spec"]["selector"]["matchLabels"]["cyan.dev/color"],
        "blue"
    );
    assert_eq!(
        c.api.list(REVS).len(),
        1,
        "the template is kept as a ControllerRevision"
    );
    let reasons: Vec<String> = c
        .api
        .list(EVENTS)
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
        .collect();
    for r in ["Progressing", "Gating", "Switching", "Healthy"] {
        assert!(
            reasons.iter().any(|x| x == r),
            "an Event per transition: {reasons:?}"
        );
    }
    assert!(c
        .metrics
        .render()
        .contains("cyan_operator_switches_total 1"));
}

#[tokio::test]
async fn a_new_template_goes_live_on_the_other_color_and_blue_stays_hot_for_the_delay() {
    let c = Cluster::new();
    c.create(bgd("web:1"));
    c.healthy_on("1").await;
    c.set_image("web:2");
    c.healthy_on("2").await;
    assert_eq!(c.selected("web").as_deref(), Some("green"));
    assert_eq!(
        c.selected("web-preview").as_deref(),
        Some("blue"),
        "the preview never selects live"
    );
    assert_eq!(
        c.replicas("blue"),
        Some(2),
        "blue stays scaled for scaleDownDelaySeconds"
    );
    c.advance(29);
    c.reconcile().await.unwrap();
    assert_eq!(c.replicas("blue"), Some(2));
    c.advance(2);
    c.reconcile().await.unwrap();
    assert_eq!(c.replicas("blue"), Some(0), "then it scales to 0");
    assert!(c.api.get(DEPLOYS, "web-blue").is_some(), "and is kept");
    assert_eq!(c.status()["phase"], "Healthy");
    assert_eq!(c.status()["liveRevision"], 2);
}

#[tokio::test]
async fn approval_holds_the_candidate_at_preview_size_until_promote() {
    let c = Cluster::new();
    c.create(bgd("web:1"));
    c.healthy_on("1").await;
    c.edit(|o| {
        o["spec"]["requireApproval"] = json!(true);
        o["spec"]["previewReplicas"] = json!(1);
        o["spec"]["template"]["spec"]["containers"][0]["image"] = json!("web:2");
    });
    c.in_phase("AwaitingApproval").await;
    for _ in 0..3 {
        c.reconcile().await.unwrap();
    }
    assert_eq!(c.status()["phase"], "AwaitingApproval");
    assert_eq!(
        c.selected("web").as_deref(),
        Some("blue"),
        "no switch without approval"
    );
    assert_eq!(
        c.selected("web-preview").as_deref(),
        Some("green"),
        "the preview shows the candidate"
    );
    assert_eq!(
        c.replicas("green"),
        Some(1),
        "previewReplicas until promotion"
    );
    assert!(c.message().contains("cyan promote"));

    c.annotate_current("cyan.dev/promote");
    c.healthy_on("2").await;
    assert_eq!(
        c.replicas("green"),
        Some(2),
        "scaled to replicas before the switch"
    );
    assert_eq!(c.selected("web").as_deref(), Some("green"));
}

#[tokio::test]
async fn auto_promote_switches_after_its_delay() {
    let c = Cluster::new();
    let mut spec = bgd("web:1");
    spec["spec"]["requireApproval"] = json!(true);
    spec["spec"]["autoPromoteSeconds"] = json!(60);
    c.create(spec);
    c.in_phase("AwaitingApproval").await;
    c.advance(59);
    c.reconcile().await.unwrap();
    assert_eq!(c.status()["phase"], "AwaitingApproval");
    c.advance(2);
    c.healthy_on("1").await;
    assert_eq!(c.selected("web").as_deref(), Some("blue"));
}

/// A candidate held at previewReplicas is scaled to replicas when its
/// auto-promote delay is up, and switched to once that many are available:
/// the scale-up's new gate does not start the delay again.
#[tokio::test]
async fn auto_promote_scales_the_preview_up_and_switches_without_a_second_delay() {
    let c = Cluster::new();
    c.waiting_for_approval(json!({"previewReplicas": 1, "autoPromoteSeconds": 60}))
        .await;
    assert_eq!(
        c.replicas("green"),
        Some(1),
        "previewReplicas while it waits"
    );
    c.advance(61);
    // The scale-up's new pod is not available at once: the candidate is
    // gated again meanwhile, and its wait must not start over.
    c.reconcile().await.unwrap();
    assert_eq!(c.replicas("green"), Some(2), "scaled up when its time came");
    c.reconcile().await.unwrap();
    c.healthy_on("2").await;
    assert_eq!(c.replicas("green"), Some(2), "scaled to replicas");
    assert_eq!(c.selected("web").as_deref(), Some("green"));
}

#[tokio::test]
async fn abort_scales_the_candidate_down_and_keeps_live_until_a_retry() {
    let c = Cluster::new();
    c.approved_first_release().await;

    c.set_image("web:2");
    c.in_phase("AwaitingApproval").await;
    c.annotate_current("cyan.dev/abort");
    c.in_phase("Degraded").await;
    c.rounds(3).await;
    assert_eq!(
        c.status()["phase"],
        "Degraded",
        "an aborted rollout is not restarted on its own"
    );
    assert_eq!(c.replicas("green"), Some(0));
    assert_eq!(c.selected("web").as_deref(), Some("blue"));
    assert!(c.message().contains("aborted"));

    c.annotate("cyan.dev/retry", "try-2");
    c.run_until("AwaitingApproval again", |s| {
        s["phase"] == "AwaitingApproval"
    })
    .await;
    assert_eq!(c.status()["observedRetryToken"], "try-2");
    assert_eq!(c.replicas("green"), Some(2));
}

/// Release 1 of an app verified by an HTTP check against a loopback
/// backend (answering 200 until the test says otherwise), run until it
/// verifies.
async fn verifying(mut verify: Value) -> (Backend, Cluster) {
    let backend = Backend::start(200, "ok").await;
    verify["http"] = json!({ "url": format!("http://127.0.0.1:{}/healthz", backend.port) });
    let c = Cluster::new();
    c.create(with_verify("web:1", verify));
    c.in_phase("Verifying").await;
    (backend, c)
}

/// `verifying`, until release 1's window has passed and it is Healthy.
async fn verified(verify: Value) -> (Backend, Cluster) {
    let window = verify["durationSeconds"].as_u64().expect("durationSeconds");
    let (backend, c) = verifying(verify).await;
    c.advance(window + 1);
    c.healthy_on("1").await;
    (backend, c)
}

fn with_verify(image: &str, verify: Value) -> Value {
    let mut spec = bgd(image);
    spec["spec"]["verify"] = verify;
    spec
}

#[tokio::test]
async fn a_failed_verify_rolls_back_to_the_hot_previous_color() {
    let (backend, c) = verified(json!({ "durationSeconds": 60, "failureThreshold": 2 })).await;

    c.set_image("web:2");
    c.live_in("Verifying", "2").await;
    assert_eq!(c.selected("web").as_deref(), Some("green"));
    backend.set(500, "boom");
    c.reconcile().await.unwrap();
    assert_eq!(
        c.status()["phase"],
        "Verifying",
        "one failure is under the threshold"
    );
    c.reconcile().await.unwrap();
    let s = c.status();
    assert_eq!(s["phase"], "RolledBack", "{s:#}");
    assert_eq!(
        c.selected("web").as_deref(),
        Some("blue"),
        "traffic is back on blue"
    );
    assert_eq!(
        c.replicas("green"),
        Some(0),
        "the failed candidate is scaled down"
    );
    assert_eq!(s["liveVersion"], "1");
    assert_eq!(
        s["history"].as_array().unwrap().last().unwrap()["outcome"],
        "VerifyFailed"
    );
    assert!(message(&s).contains("500"), "{}", s["message"]);
    c.rounds(3).await;
    assert_eq!(
        c.status()["phase"],
        "RolledBack",
        "the failed release is not retried on its own"
    );
    assert_eq!(c.selected("web").as_deref(), Some("blue"));
    assert!(c
        .metrics
        .render()
        .contains("cyan_operator_rollbacks_total 1"));
}

/// An approval is for one rollout: the promote annotation is consumed by
/// the switch it allowed, and a rollback's by its switch. Left behind, the
/// same template applied again after a rollback went live with no approval.
#[tokio::test]
async fn an_approval_is_consumed_by_the_switch_it_allowed() {
    let c = Cluster::new();
    c.approved_first_release().await;
    let v1 = c.hash();
    let v1_template = c.api.get(BGDS, "web").unwrap()["spec"]["template"].clone();
    c.set_image("web:2");
    c.in_phase("AwaitingApproval").await;
    c.annotate_current("cyan.dev/promote");
    c.healthy_on("2").await;
    let annotations = || c.api.get(BGDS, "web").unwrap()["metadata"]["annotations"].clone();
    assert!(
        annotations().get("cyan.dev/promote").is_none(),
        "{}",
        annotations()
    );

    c.roll_back_to(&v1, v1_template);
    c.healthy_on("1").await;
    assert!(
        annotations().get("cyan.dev/rollback").is_none(),
        "{}",
        annotations()
    );
    c.set_image("web:2");
    c.in_phase("AwaitingApproval").await;
    c.rounds(2).await;
    assert_eq!(c.status()["phase"], "AwaitingApproval", "no approval given");
    assert_eq!(c.selected("web").as_deref(), Some("blue"));
}

/// Refuses every status write from now on, as a killed operator or a long
/// outage loses the write after an act.
fn lose_status_writes(c: &Cluster) {
    c.api
        .fail_next(Method::PUT, "/bluegreendeployments/web/status", 409, 10_000);
}

/// A switch whose status write is lost: the Service already selects green.
/// The next reconcile records the switch from the note the Service carries
/// (history, live color, the verify window it opened), where before the
/// status named blue for good and the window never opened.
#[tokio::test]
async fn a_switch_whose_status_write_was_lost_is_recorded_from_the_service() {
    let (_backend, c) = verified(json!({ "durationSeconds": 60 })).await;
    c.set_image("web:2");
    c.run_until("green gated", |s| s["gated"]["green"].is_string())
        .await;
    lose_status_writes(&c);
    let _ = c.reconcile().await;
    assert_eq!(c.selected("web").as_deref(), Some("green"), "switched");
    assert_eq!(c.status()["liveColor"], "blue", "the record of it was lost");

    c.api.clear_faults();
    c.reconcile().await.unwrap();
    let s = c.status();
    assert_eq!(
        (&s["liveColor"], &s["liveVersion"]),
        (&json!("green"), &json!("2")),
        "{s:#}"
    );
    let last = s["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (&last["version"], &last["outcome"]),
        (&json!("2"), &json!("Promoted"))
    );
    assert_eq!(s["phase"], "Verifying", "its verify window is open: {s:#}");
    assert!(s["verifyUntilMs"].as_u64().unwrap() > s["switchedAtMs"].as_u64().unwrap());
}

/// A switch back after a failed verify whose status write is lost: the
/// Service is back on blue and green scaled down. The next reconciles record
/// the failure and the halt from the Service's note; before, the status
/// still said green was live and being verified, and the planner started
/// the failed release again and switched back to it.
#[tokio::test]
async fn a_lost_switch_back_is_recorded_and_the_failed_release_stays_down() {
    let (backend, c) = verified(json!({ "durationSeconds": 60, "failureThreshold": 2 })).await;
    c.set_image("web:2");
    c.live_in("Verifying", "2").await;
    backend.set(500, "boom");
    c.reconcile().await.unwrap();
    lose_status_writes(&c);
    let _ = c.reconcile().await;
    assert_eq!(c.selected("web").as_deref(), Some("blue"), "switched back");
    assert_eq!(
        c.status()["liveColor"],
        "green",
        "the record of it was lost"
    );

    c.api.clear_faults();
    c.rounds(4).await;
    let s = c.status();
    assert_eq!(s["phase"], "RolledBack", "{s:#}");
    assert_eq!(s["liveVersion"], "1");
    let last = s["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (&last["version"], &last["outcome"]),
        (&json!("2"), &json!("VerifyFailed"))
    );
    assert_eq!(c.selected("web").as_deref(), Some("blue"));
    assert_eq!(
        c.replicas("green"),
        Some(0),
        "the failed release is not started again"
    );
}

#[tokio::test]
async fn abort_while_verifying_rolls_back_and_a_verified_release_is_left_alone() {
    let (_backend, c) = verified(json!({ "durationSeconds": 60 })).await;

    c.annotate_current("cyan.dev/abort");
    c.reconcile().await.unwrap();
    assert_eq!(
        c.status()["phase"],
        "Healthy",
        "a verified live release is not aborted"
    );
    assert!(c.message().contains("use cyan rollback"));
    assert!(
        c.api.get(BGDS, "web").unwrap()["metadata"]["annotations"]["cyan.dev/abort"].is_null(),
        "the abort was consumed"
    );

    c.set_image("web:2");
    c.live_in("Verifying", "2").await;
    c.annotate_current("cyan.dev/abort");
    c.reconcile().await.unwrap();
    let s = c.status();
    assert_eq!(s["phase"], "RolledBack", "{s:#}");
    assert_eq!(c.selected("web").as_deref(), Some("blue"));
    assert_eq!(c.replicas("green"), Some(0));
    assert_eq!(s["liveVersion"], "1");
}

#[tokio::test]
async fn a_prometheus_query_above_its_maximum_rolls_back() {
    let answer = |v: &str| {
        format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1,"{v}"]}}]}}}}"#
        )
    };
    let prom = Backend::start(200, &answer("0.01")).await;
    let c = Cluster::new();
    let verify = json!({
        "durationSeconds": 30, "failureThreshold": 1,
        "prometheus": { "address": format!("http://127.0.0.1:{}", prom.port), "query": "error_ratio", "max": 0.05 },
    });
    c.create(with_verify("web:1", verify));
    c.in_phase("Verifying").await;
    c.reconcile().await.unwrap();
    assert_eq!(c.status()["phase"], "Verifying", "0.01 is under 0.05");
    c.advance(31);
    c.healthy_on("1").await;
    c.set_image("web:2");
    c.live_in("Verifying", "2").await;
    prom.set(200, &answer("0.4"));
    c.in_phase("RolledBack").await;
    assert_eq!(c.selected("web").as_deref(), Some("blue"));
    assert!(c.message().contains("error_ratio = 0.4 exceeds 0.05"));
}

#[tokio::test]
async fn a_verify_that_passes_ends_healthy_after_its_duration() {
    let (_backend, c) = verifying(json!({ "durationSeconds": 120 })).await;
    c.advance(60);
    c.reconcile().await.unwrap();
    assert_eq!(c.status()["phase"], "Verifying");
    assert!(
        c.message().starts_with("verifying: 60s left"),
        "{}",
        c.message()
    );
    c.advance(61);
    c.reconcile().await.unwrap();
    assert_eq!(c.status()["phase"], "Healthy");
    assert_eq!(c.message(), "1 passed its verify window and is live");
}

#[tokio::test]
async fn rollback_to_a_hot_color_is_one_reconcile() {
    let c = Cluster::new();
    let (v1, v1_template) = c.two_releases().await;
    c.roll_back_to(&v1, v1_template);
    c.reconcile().await.unwrap();
    assert_eq!(
        c.selected("web").as_deref(),
        Some("blue"),
        "blue was hot: switched at once"
    );
    let s = c.status();
    assert_eq!(s["liveVersion"], "1");
    assert_eq!(s["liveRevision"], 1, "the old revision number comes back");
    assert_eq!(
        s["history"].as_array().unwrap().last().unwrap()["outcome"],
        "RolledBack"
    );
    assert_eq!(c.api.list(REVS).len(), 2);
}

#[tokio::test]
async fn rollback_after_scale_down_restarts_the_old_revision_gated() {
    let c = Cluster::new();
    let (v1, v1_template) = c.two_releases().await;
    c.advance(31);
    c.reconcile().await.unwrap();
    assert_eq!(c.replicas("blue"), Some(0));
    c.roll_back_to(&v1, v1_template);
    c.reconcile().await.unwrap();
    assert_eq!(
        c.selected("web").as_deref(),
        Some("green"),
        "not switched to a cold color"
    );
    assert_eq!(c.replicas("blue"), Some(2));
    c.healthy_on("1").await;
    assert_eq!(c.selected("web").as_deref(), Some("blue"));
}

#[tokio::test]
async fn a_candidate_past_its_progress_deadline_is_halted_and_live_keeps_serving() {
    let c = Cluster::new();
    c.create(bgd("web:1"));
    c.healthy_on("1").await;
    c.api.hold("web-green");
    c.set_image("web:2");
    c.in_phase("Gating").await;
    c.advance(60);
    c.reconcile().await.unwrap();
    assert_eq!(c.status()["phase"], "Gating");
    assert!(c.message().contains("0/2 pods available"));
    c.advance(61);
    c.reconcile().await.unwrap();
    let s = c.status();
    assert_eq!(s["phase"], "Degraded");
    assert!(
        message(&s).contains("progressDeadlineSeconds (120s)"),
        "{s:#}"
    );
    assert_eq!(c.replicas("green"), Some(0));
    assert_eq!(c.selected("web").as_deref(), Some("blue"));
    let progressing = condition(&s, "Progressing");
    assert_eq!(progressing["status"], "False");
    assert_eq!(progressing["reason"], "Degraded");
}

#[tokio::test]
async fn a_deployment_that_never_becomes_available_is_never_switched_to() {
    let c = Cluster::new();
    c.api.hold("web-blue");
    c.create(bgd("web:1"));
    c.rounds_ignoring_errors(10).await;
    assert_eq!(c.status()["phase"], "Gating");
    assert_eq!(
        c.selected("web"),
        None,
        "the Service is never pointed at an unavailable color"
    );
    c.api.release("web-blue");
    c.healthy_on("1").await;
}

#[tokio::test]
async fn a_gated_color_that_loses_availability_is_gated_again_not_switched() {
    let c = Cluster::new();
    let mut spec = bgd("web:1");
    spec["spec"]["requireApproval"] = json!(true);
    c.create(spec);
    c.in_phase("AwaitingApproval").await;
    c.api.hold("web-blue");
    c.api.settle_deployments();
    c.annotate_current("cyan.dev/promote");
    c.rounds(4).await;
    assert_eq!(c.selected("web"), None);
    assert_eq!(c.status()["phase"], "Gating");
    c.api.release("web-blue");
    c.healthy_on("1").await;
}

#[tokio::test]
async fn http_gates_probe_every_candidate_pod_before_the_switch() {
    let app = Backend::start(503, "warming up").await;
    let c = Cluster::new();
    let mut spec = bgd("web:1");
    spec["spec"]["gates"] = json!({ "http": [{ "path": "/healthz", "port": app.port }] });
    c.create(spec);
    c.rounds_ignoring_errors(6).await;
    let s = c.status();
    assert_eq!(s["phase"], "Gating");
    let msg = s["message"].as_str().unwrap();
    assert!(
        msg.contains("web-blue-0") && msg.contains("503") && msg.contains("warming up"),
        "{msg}"
    );
    assert_eq!(c.selected("web"), None);
    app.set(200, "ok");
    c.healthy_on("1").await;
}

#[tokio::test]
async fn skip_first_deploy_skips_the_http_gates_only_the_first_time() {
    let app = Backend::start(503, "no").await;
    let c = Cluster::new();
    let mut spec = bgd("web:1");
    spec["spec"]["gates"] =
        json!({ "http": [{ "path": "/", "port": app.port }], "skipFirstDeploy": true });
    c.create(spec);
    c.healthy_on("1").await;
    c.set_image("web:2");
    c.rounds_ignoring_errors(6).await;
    assert_eq!(c.status()["phase"], "Gating", "the second deploy is gated");
}

#[tokio::test]
async fn a_missing_active_service_is_reported_and_nothing_is_created() {
    let c = Cluster::new();
    c.api.remove(SVCS, "web");
    c.create(bgd("web:1"));
    let err = c.reconcile().await.unwrap_err();
    assert_eq!(err.kind(), "config");
    let s = c.status();
    assert_eq!(s["phase"], "Degraded");
    assert!(
        message(&s).contains("activeService Service default/web does not exist"),
        "{s:#}"
    );
    assert!(c.api.get(DEPLOYS, "web-blue").is_none());
    assert!(c
        .metrics
        .render()
        .contains(r#"cyan_operator_reconcile_failures_total{kind="config"} 1"#));
    c.api.put_service("web", json!({ "app": "web" }));
    c.healthy_on("1").await;
}

#[tokio::test]
async fn a_service_selector_the_pods_cannot_match_is_never_switched() {
    let c = Cluster::new();
    c.api.edit(SVCS, "web", |svc| {
        svc["spec"]["selector"]["tier"] = json!("frontend")
    });
    c.create(bgd("web:1"));
    c.in_phase("Degraded").await;
    assert!(c.message().contains("tier=frontend"));
    assert_eq!(c.selected("web"), None, "the selector was left as it was");
}

#[tokio::test]
async fn conflicts_on_the_status_are_retried_and_api_errors_back_off() {
    let c = Cluster::new();
    c.create(bgd("web:1"));
    c.api
        .fail_next(Method::PUT, "/bluegreendeployments/web/status", 409, 2);
    c.reconcile()
        .await
        .expect("two conflicts are retried within the reconcile");
    assert!(
        c.status()["phase"].is_string(),
        "the third attempt wrote its status"
    );
    assert!(c.api.get(DEPLOYS, "web-blue").is_some());

    c.api
        .fail_next(Method::GET, "/deployments/web-blue", 500, 3);
    for _ in 0..3 {
        let err = c.reconcile().await.unwrap_err();
        assert_eq!(err.kind(), "unreachable", "{err}");
    }
    let m = c.metrics.render();
    assert!(
        m.contains(r#"cyan_operator_reconcile_failures_total{kind="unreachable"} 3"#),
        "{m}"
    );
    c.healthy_on("1").await;
}

#[tokio::test]
async fn the_error_backoff_grows_per_object() {
    let c = Cluster::new();
    c.create(bgd("web:1"));
    let obj = Arc::new(
        Api::<BlueGreenDeployment>::namespaced(c.ctx.client.clone(), "default")
            .get("web")
            .await
            .unwrap(),
    );
    let err = cyan::error::Error::Unreachable("down".into());
    let delays: Vec<_> = (0..6)
        .map(|_| controller::error_policy(obj.clone(), &err, c.ctx.clone()))
        .collect();
    let first = format!("{:?}", delays[0]);
    let last = format!("{:?}", delays[5]);
    assert_ne!(first, last, "the delay grows: {delays:?}");
}

#[tokio::test]
async fn an_operator_restarted_mid_rollout_continues_from_the_cluster() {
    let c = Cluster::new();
    c.create(bgd("web:1"));
    c.healthy_on("1").await;
    c.set_image("web:2");
    c.in_phase("Gating").await;

    let restarted = Cluster::attach(c.api.clone(), c.now.clone());
    restarted.healthy_on("2").await;
    let s = restarted.status();
    let promoted: Vec<&Value> = s["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["version"] == "2")
        .collect();
    assert_eq!(promoted.len(), 1, "switched exactly once");
    assert_eq!(restarted.selected("web").as_deref(), Some("green"));
    assert_eq!(c.api.list(REVS).len(), 2, "no duplicate revision");
}

#[tokio::test]
async fn the_live_color_follows_spec_replicas() {
    let c = Cluster::new();
    c.create(bgd("web:1"));
    c.healthy_on("1").await;
    c.edit(|o| o["spec"]["replicas"] = json!(4));
    c.reconcile().await.unwrap();
    assert_eq!(c.replicas("blue"), Some(4));
    assert_eq!(c.selected("web").as_deref(), Some("blue"));
    assert!(
        c.api.get(DEPLOYS, "web-green").is_none(),
        "scaling is not a new rollout"
    );
}

#[tokio::test]
async fn revisions_are_pruned_to_the_history_limit() {
    let c = Cluster::new();
    let mut spec = bgd("web:1");
    spec["spec"]["revisionHistoryLimit"] = json!(2);
    c.create(spec);
    for v in ["1", "2", "3", "4"] {
        c.set_image(&format!("web:{v}"));
        c.healthy_on(v).await;
    }
    let revs: Vec<i64> = c
        .api
        .list(REVS)
        .iter()
        .map(|r| r["revision"].as_i64().unwrap())
        .collect();
    assert_eq!(revs.len(), 2, "{revs:?}");
    assert!(
        revs.contains(&4) && revs.contains(&3),
        "the newest are kept: {revs:?}"
    );
}

#[tokio::test]
async fn a_paused_or_invalid_spec_changes_nothing() {
    let c = Cluster::new();
    let mut spec = bgd("web:1");
    spec["spec"]["paused"] = json!(true);
    c.create(spec);
    c.reconcile().await.unwrap();
    assert!(c.api.get(DEPLOYS, "web-blue").is_none());
    assert!(c.message().contains("paused"));

    c.edit(|o| {
        o["spec"]["paused"] = json!(false);
        o["spec"]["selector"]["matchLabels"]["app"] = json!("other");
    });
    c.reconcile().await.unwrap();
    let s = c.status();
    assert_eq!(s["phase"], "Degraded");
    assert!(message(&s).contains("app=other"), "{s:#}");
    assert!(c.api.get(DEPLOYS, "web-blue").is_none());
}

#[tokio::test]
async fn only_one_replica_leads_and_an_expired_lease_is_taken_over() {
    let api = ApiServer::new();
    let a = LeaseLock::new(api.client(), "cyan-system", "cyan-operator", "a", 15);
    let b = LeaseLock::new(api.client(), "cyan-system", "cyan-operator", "b", 15);
    let t = k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap();
    let secs = |n| k8s_openapi::jiff::SignedDuration::from_secs(n);
    assert!(a.try_acquire_or_renew(t).await.unwrap());
    assert!(
        !b.try_acquire_or_renew(t + secs(1)).await.unwrap(),
        "a holds it"
    );
    assert!(
        a.try_acquire_or_renew(t + secs(5)).await.unwrap(),
        "a renews"
    );
    assert!(
        !b.try_acquire_or_renew(t + secs(19)).await.unwrap(),
        "renewed at 5 s, valid to 20 s"
    );
    assert!(
        b.try_acquire_or_renew(t + secs(21)).await.unwrap(),
        "expired: b takes over"
    );
    assert!(
        !a.try_acquire_or_renew(t + secs(22)).await.unwrap(),
        "a lost it"
    );
    b.release().await.unwrap();
    assert!(
        a.try_acquire_or_renew(t + secs(23)).await.unwrap(),
        "released: a takes it at once"
    );
    let lease = api
        .get(
            "/apis/coordination.k8s.io/v1/namespaces/cyan-system/leases",
            "cyan-operator",
        )
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "a");
    assert_eq!(lease["spec"]["leaseTransitions"], 2);
}

#[tokio::test]
async fn two_racing_lease_writes_elect_one_leader() {
    let api = ApiServer::new();
    let a = LeaseLock::new(api.client(), "cyan-system", "cyan-operator", "a", 15);
    let t = k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap();
    assert!(a.try_acquire_or_renew(t).await.unwrap());
    // b read the Lease, then a renewed before b wrote: b's write conflicts.
    api.fail_next(Method::PUT, "/leases/cyan-operator", 409, 1);
    let b = LeaseLock::new(api.client(), "cyan-system", "cyan-operator", "b", 15);
    let late = t + k8s_openapi::jiff::SignedDuration::from_secs(60);
    assert!(
        !b.try_acquire_or_renew(late).await.unwrap(),
        "a conflict loses"
    );
}

/// A candidate held at previewReplicas with HTTP gates is probed at its
/// preview size: it reaches approval, and once promoted it is probed at
/// full size and switched.
#[tokio::test]
async fn a_preview_with_http_gates_is_probed_at_its_own_size() {
    let app = Backend::start(200, "ok").await;
    let c = Cluster::new();
    let mut spec = bgd("web:1");
    spec["spec"]["gates"] = json!({ "http": [{ "path": "/healthz", "port": app.port }] });
    c.create(spec);
    c.healthy_on("1").await;
    c.edit(|o| {
        o["spec"]["requireApproval"] = json!(true);
        o["spec"]["previewReplicas"] = json!(1);
        o["spec"]["template"]["spec"]["containers"][0]["image"] = json!("web:2");
    });
    c.in_phase("AwaitingApproval").await;
    assert_eq!(c.replicas("green"), Some(1));
    c.annotate_current("cyan.dev/promote");
    c.healthy_on("2").await;
    assert_eq!(c.replicas("green"), Some(2));
}

/// progressDeadlineSeconds bounds a rollout until its candidate passes its
/// gates. A promote (by hand or on its own) long after that scales the
/// preview up and gates it again: it is switched, not halted; and so is a
/// waiting candidate whose pod is unavailable for a moment.
#[tokio::test]
async fn a_promote_after_the_progress_deadline_is_switched_not_halted() {
    for (auto, blip) in [(false, false), (true, false), (false, true)] {
        let c = Cluster::new();
        let mut approval = json!({});
        if !blip {
            approval["previewReplicas"] = json!(1);
        }
        if auto {
            approval["autoPromoteSeconds"] = json!(900);
        }
        c.waiting_for_approval(approval).await;
        c.advance(901);
        let case = format!("auto {auto}, blip {blip}");
        if blip {
            c.api.hold("web-green");
            c.api.settle_deployments();
            c.reconcile().await.unwrap();
            assert_ne!(
                c.status()["phase"],
                "Degraded",
                "{case}: {}",
                message(&c.status())
            );
            c.api.release("web-green");
            c.annotate_current("cyan.dev/promote");
        } else if !auto {
            c.annotate_current("cyan.dev/promote");
        }
        // The scale-up's (or the blip's) pod is not available at once.
        c.reconcile().await.unwrap();
        c.reconcile().await.unwrap();
        assert_ne!(
            c.status()["phase"],
            "Degraded",
            "{case}: {}",
            message(&c.status())
        );
        c.live_in("Healthy", "2").await;
        assert_eq!(c.selected("web").as_deref(), Some("green"), "{case}");
    }
}

/// A retry after an abort starts the rollout over: at preview size, and
/// waiting for approval again (its autoPromoteSeconds counted from its own
/// gate, not the aborted one's).
#[tokio::test]
async fn a_retry_after_an_abort_waits_for_approval_again() {
    let c = Cluster::new();
    c.waiting_for_approval(json!({"previewReplicas": 1, "autoPromoteSeconds": 60}))
        .await;
    c.annotate_current("cyan.dev/abort");
    c.in_phase("Degraded").await;
    c.advance(3600);
    c.annotate("cyan.dev/retry", "try-2");
    c.rounds(6).await;
    let s = c.status();
    assert_eq!(s["phase"], "AwaitingApproval", "{}", message(&s));
    assert_eq!(c.selected("web").as_deref(), Some("blue"));
    assert_eq!(c.replicas("green"), Some(1));
    c.advance(61);
    c.healthy_on("2").await;
}
