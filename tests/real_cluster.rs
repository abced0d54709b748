//! The operator and the CRD against a real Kubernetes control plane
//! (kube-apiserver, kube-controller-manager and etcd; see
//! `tests/cluster`): the CRD as kubectl validates it and the server stores
//! it, rollouts seen through the Endpoints the controller manager writes,
//! approval, abort, a failed verify, the progress deadline, operators
//! killed, replaced and racing a second writer. The operator runs as the
//! real `cyan operator` process under the manifests' ServiceAccount and
//! RBAC. The in-memory API (`tests/operator.rs`) keeps the faults a real
//! server cannot be made to produce on demand.

mod apiserver;
mod cluster;
mod util;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster::Space;
use cyan::operator::crd::BlueGreenDeployment;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Endpoints;
use kube::api::Api;
use kube::runtime::watcher;
use serde_json::{json, Value};

const MINUTE: Duration = Duration::from_secs(60);

/// BlueGreenDeployment `web`: two pods of `image` answering on 8080, gated
/// on `/healthz`, that switch Service `web`; `spec` is merged into its
/// spec. `behaviour` is the test kubelet's `TEST_POD` for its pods.
fn web(image: &str, behaviour: Option<&str>, spec: Value) -> Value {
    let container = container(image, behaviour);
    let mut bgd = apiserver::bgd(
        image,
        json!({
            "replicas": 2,
            "template": { "spec": { "containers": [container] } },
            "gates": { "http": [{ "path": "/healthz", "port": 8080 }] },
            "scaleDownDelaySeconds": 3,
            "progressDeadlineSeconds": 60,
        }),
    );
    apiserver::merge(&mut bgd["spec"], &spec);
    bgd
}

/// The pods' one container: `image` on port 8080, answering as
/// `behaviour` says (the test kubelet's `TEST_POD`).
fn container(image: &str, behaviour: Option<&str>) -> Value {
    let mut container =
        json!({ "name": "web", "image": image, "ports": [{ "containerPort": 8080 }] });
    if let Some(b) = behaviour {
        container["env"] = json!([{ "name": "TEST_POD", "value": b }]);
    }
    container
}

/// The namespace's BlueGreenDeployments as JSON, for writes the way
/// another client would make them (a status subresource patch, a merge
/// patch of annotations).
fn bgd_api(s: &Space) -> Api<kube::api::DynamicObject> {
    let gvk = kube::api::GroupVersionKind::gvk("cyan.dev", "v1alpha1", "BlueGreenDeployment");
    Api::namespaced_with(
        s.client.clone(),
        &s.ns,
        &kube::api::ApiResource::from_gvk(&gvk),
    )
}

/// `cyan <args>` for app `web` (no build: the image is given), as the
/// CLI's ServiceAccount.
fn cli_on_web(s: &Space, args: &[&str]) -> std::process::Output {
    let config = s.dir.join("cyan.yaml");
    std::fs::write(
        &config,
        "app: web\nimage: web\nplatform: kubernetes\nport: 8080\n",
    )
    .unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_cyan"))
        .args(args)
        .arg("-c")
        .arg(&config)
        .env("KUBECONFIG", s.cli_kubeconfig())
        .output()
        .unwrap()
}

fn status(s: &Space) -> Value {
    s.get("bgd/web")["status"].clone()
}

/// Waits until the status is `phase` with `version` live.
fn live_in(s: &Space, phase: &str, version: &str) -> Value {
    s.wait(&format!("{phase} on {version}"), MINUTE, || {
        let st = status(s);
        (st["phase"] == phase && st["liveVersion"] == version).then_some(st)
    })
}

fn in_phase(s: &Space, phase: &str) -> Value {
    s.wait(phase, MINUTE, || {
        let st = status(s);
        (st["phase"] == phase).then_some(st)
    })
}

fn selected(s: &Space, svc: &str) -> Option<String> {
    s.get(&format!("svc/{svc}"))["spec"]["selector"]["cyan.dev/color"]
        .as_str()
        .map(String::from)
}

fn replicas(s: &Space, color: &str) -> Option<i64> {
    s.get(&format!("deploy/web-{color}"))["spec"]["replicas"].as_i64()
}

/// Merge-patches the BlueGreenDeployment as a person with kubectl would.
fn patch(s: &Space, change: Value) {
    s.kubectl(&[
        "patch",
        "bgd",
        "web",
        "--type=merge",
        "-p",
        &change.to_string(),
    ]);
}

/// A new pod template: `image`, answering as `behaviour` says.
fn set_pods(s: &Space, image: &str, behaviour: Option<&str>) {
    let containers = json!([container(image, behaviour)]);
    patch(
        s,
        json!({ "spec": { "template": { "spec": { "containers": containers } } } }),
    );
}

fn set_image(s: &Space, image: &str) {
    set_pods(s, image, None);
}

/// Annotates the BlueGreenDeployment with `key` for the rollout in flight.
fn annotate_current(s: &Space, key: &str) {
    let hash = status(s)["currentHash"].as_str().unwrap().to_string();
    patch(s, json!({ "metadata": { "annotations": { key: hash } } }));
}

/// Every distinct value `project` made of object `name` (of kind `K`) while
/// this runs, in order, from its state when it starts (if it exists): a
/// watch, so no state the API server published is missed, however briefly
/// it held.
struct Watched<T> {
    seen: Arc<Mutex<Vec<T>>>,
    task: tokio::task::JoinHandle<()>,
}

impl<T: PartialEq + Clone + Send + 'static> Watched<T> {
    fn start<K>(s: &Space, name: &str, project: fn(K) -> T) -> Watched<T>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
        K: Clone + std::fmt::Debug + Send + 'static,
        K: serde::de::DeserializeOwned,
    {
        let api: Api<K> = Api::namespaced(s.client.clone(), &s.ns);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let listed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = listed.clone();
        let task = s.rt.spawn(async move {
            let mut events = std::pin::pin!(watcher(api, config));
            while let Some(Ok(event)) = events.next().await {
                let object = match event {
                    watcher::Event::Apply(o) | watcher::Event::InitApply(o) => o,
                    watcher::Event::InitDone => {
                        done.store(true, std::sync::atomic::Ordering::SeqCst);
                        continue;
                    }
                    _ => continue,
                };
                let value = project(object);
                let mut seen = record.lock().unwrap();
                if seen.last() != Some(&value) {
                    seen.push(value);
                }
            }
        });
        // Until the watch has listed the current state, a change could be
        // missed.
        util::wait::until(
            &format!("the watch's first list of {name}"),
            Duration::from_secs(10),
            Duration::from_millis(20),
            || {
                listed
                    .load(std::sync::atomic::Ordering::SeqCst)
                    .then_some(())
            },
            String::new,
        );
        Watched { seen, task }
    }

    fn stop(self) -> Vec<T> {
        self.task.abort();
        self.seen.lock().unwrap().clone()
    }
}

/// The ready addresses an Endpoints object lists, sorted.
fn addresses(ep: Endpoints) -> Vec<String> {
    let mut ips: Vec<String> = ep
        .subsets
        .into_iter()
        .flatten()
        .flat_map(|s| s.addresses.into_iter().flatten())
        .map(|a| a.ip)
        .collect();
    ips.sort();
    ips
}

/// A BlueGreenDeployment's phase, as the status names it ("" before one).
fn phase(bgd: BlueGreenDeployment) -> String {
    bgd.status
        .and_then(|s| s.phase)
        .map(|p| format!("{p:?}"))
        .unwrap_or_default()
}

/// web:1 live on blue behind Service `web` (and `web-preview` there for a
/// spec that names it), with one operator running.
fn first_release(tag: &str, spec: Value) -> Option<(Space, cluster::Operator)> {
    let s = Space::new(tag)?;
    s.service("web", json!({ "app": "web" }));
    s.service("web-preview", json!({ "app": "web" }));
    let op = s.operator("op-1");
    s.apply(&web("web:1", None, spec));
    live_in(&s, "Healthy", "1");
    Some((s, op))
}

/// The CRD applies with kubectl's validation on (the setup did it; again
/// here, unchanged), `kubectl explain` reads its optional fields, and an
/// object with every field the schema has comes back from the server as it
/// went in, through client- and server-side apply: nothing pruned. The
/// status's enums take their values and `null`, and refuse others.
#[test]
fn the_crd_applies_with_validation_and_every_field_round_trips() {
    let Some(s) = Space::new("crd") else {
        return;
    };
    let crd = util::repo_root().join("manifests/crd.yaml");
    s.kubectl(&["apply", "--validate=true", "-f", &crd.display().to_string()]);
    for (path, needle) in [
        ("bgd.spec.verify.prometheus", "max"),
        ("bgd.status.phase", "AwaitingApproval"),
        ("bgd.spec.previewReplicas", "integer"),
    ] {
        let out = s.kubectl(&["explain", path]);
        assert!(out.contains(needle), "kubectl explain {path}: {out}");
    }

    let spec = json!({
        "selector": {
            "matchLabels": { "app": "web" },
            "matchExpressions": [{ "key": "tier", "operator": "In", "values": ["web"] }],
        },
        "template": { "metadata": { "labels": { "app": "web", "tier": "web" } } },
        "replicas": 3,
        "previewReplicas": 1,
        "previewService": "web-preview",
        "requireApproval": true,
        "autoPromoteSeconds": 600,
        "scaleDownDelaySeconds": 45,
        "revisionHistoryLimit": 4,
        "paused": true,
        "progressDeadlineSeconds": 300,
        "gates": {
            "minReadySeconds": 2,
            "skipFirstDeploy": true,
            "http": [{
                "path": "/healthz", "port": 8080, "url": "http://gate.example/ok",
                "expectStatus": { "min": 200, "max": 204 }, "timeoutSeconds": 3,
            }],
        },
        "verify": {
            "durationSeconds": 120, "intervalSeconds": 5, "failureThreshold": 2,
            "http": {
                "path": "/", "port": 80, "url": "http://web.example/",
                "expectStatus": { "min": 200, "max": 299 }, "timeoutSeconds": 2,
            },
            "prometheus": {
                "address": "http://prometheus:9090", "query": "sum(rate(errors[1m]))", "max": 0.5,
            },
        },
    });
    let crd_json: Value = serde_json::from_str(&s.kubectl(&[
        "get",
        "crd",
        "bluegreendeployments.cyan.dev",
        "-o",
        "json",
    ]))
    .unwrap();
    let schema = &crd_json["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let full = web("web:1", None, spec);
    let mut missing = Vec::new();
    uncovered(
        &schema["properties"]["spec"],
        &full["spec"],
        "spec",
        &mut missing,
    );
    assert!(
        missing.is_empty(),
        "the sample leaves fields of the schema unset (add them): {missing:?}"
    );

    s.apply(&full);
    let back = s.get("bgd/web");
    assert_eq!(back["spec"], full["spec"], "what the server kept differs");
    let args = [
        "apply",
        "--server-side",
        "--field-manager=test",
        "--force-conflicts",
        "-f",
        "-",
    ];
    let out = s.kubectl_out(&args, Some(&full.to_string()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.get("bgd/web")["spec"], full["spec"], "server-side apply");

    // A null someone writes to an optional field is pruned, not refused.
    let mut with_null = s.get("bgd/web");
    with_null["spec"]["previewService"] = Value::Null;
    with_null["spec"]["verify"] = Value::Null;
    let out = s.kubectl_out(&["replace", "-f", "-"], Some(&with_null.to_string()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spec = s.get("bgd/web")["spec"].clone();
    assert!(
        spec.get("previewService").is_none() && spec.get("verify").is_none(),
        "{spec}"
    );

    // The status, through its subresource, as the operator writes it.
    let api = bgd_api(&s);
    let write = |status: Value| {
        let patch = kube::api::Patch::Merge(json!({ "status": status }));
        s.rt.block_on(api.patch_status("web", &Default::default(), &patch))
            .map(|o| o.data["status"].clone())
    };
    let kept =
        write(json!({ "phase": "Verifying", "liveColor": "green", "liveRevision": 2 })).unwrap();
    assert_eq!(
        (kept["phase"].as_str(), kept["liveColor"].as_str()),
        (Some("Verifying"), Some("green"))
    );
    let cleared = write(json!({ "phase": null, "liveColor": null })).unwrap();
    assert!(
        cleared.get("phase").is_none() && cleared.get("liveColor").is_none(),
        "{cleared}"
    );
    let refused = write(json!({ "liveColor": "purple" }))
        .unwrap_err()
        .to_string();
    assert!(refused.contains("supported values"), "{refused}");
}

/// Schema paths under `schema` that `value` does not set (the pod template
/// is Kubernetes' own and kept whole).
fn uncovered(schema: &Value, value: &Value, at: &str, missing: &mut Vec<String>) {
    if schema["x-kubernetes-preserve-unknown-fields"] == true {
        return;
    }
    if let Some(props) = schema["properties"].as_object() {
        for (key, sub) in props {
            let path = format!("{at}.{key}");
            match value.get(key) {
                None => missing.push(path),
                Some(v) => uncovered(sub, v, &path, missing),
            }
        }
    }
    if let (Some(items), Some(first)) = (
        schema.get("items"),
        value.as_array().and_then(|a| a.first()),
    ) {
        uncovered(items, first, &format!("{at}[0]"), missing);
    }
}

/// A first release is gated and switched; a new template goes live on
/// green, and the `web` Endpoints move from blue's two pod addresses to
/// green's two in one step, never listing none; blue is scaled down after
/// its delay and its pods end.
#[test]
fn a_rollout_moves_the_endpoints_from_blue_to_green_with_no_empty_moment() {
    let Some((s, op)) = first_release("switch", json!({})) else {
        return;
    };
    assert_eq!(selected(&s, "web").as_deref(), Some("blue"));
    let blue = s.pod_ips("blue");
    assert_eq!(blue.len(), 2, "{}", s.report());
    s.wait("the Endpoints to list blue", MINUTE, || {
        (s.endpoints("web") == blue).then_some(())
    });

    let watch = Watched::start(&s, "web", addresses);
    set_image(&s, "web:2");
    let st = live_in(&s, "Healthy", "2");
    assert_eq!(st["liveColor"], "green");
    let green = s.pod_ips("green");
    assert_eq!(green.len(), 2);
    s.wait("the Endpoints to list green", MINUTE, || {
        (s.endpoints("web") == green).then_some(())
    });
    let seen = watch.stop();
    assert_eq!(seen.first(), Some(&blue), "{seen:?}");
    assert_eq!(seen.last(), Some(&green), "{seen:?}");
    assert!(
        seen.iter().all(|ips| !ips.is_empty()),
        "an empty moment: {seen:?}"
    );
    let both: BTreeSet<&String> = blue.iter().chain(&green).collect();
    assert!(
        seen.iter().flatten().all(|ip| both.contains(ip)),
        "only blue's and green's pods: {seen:?}"
    );

    s.wait("blue scaled down after its delay", MINUTE, || {
        (replicas(&s, "blue") == Some(0) && s.pod_ips("blue").is_empty()).then_some(())
    });
    assert_eq!(
        s.endpoints("web"),
        green,
        "the scale-down leaves live alone"
    );
    let history = status(&s)["history"].as_array().unwrap().clone();
    let versions: Vec<&str> = history
        .iter()
        .map(|h| h["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["1", "2"], "{history:?}");
    assert!(
        op.counter("cyan_operator_switches_total") >= 2.0,
        "{}",
        op.metrics()
    );
}

/// With approval required, the candidate runs at its preview size behind
/// the preview Service and nothing switches until promote; a later
/// candidate aborted is scaled down, and live keeps its Endpoints.
#[test]
fn approval_holds_the_preview_until_promote_and_abort_leaves_live_alone() {
    let Some((s, _op)) = first_release("approve", json!({ "previewService": "web-preview" }))
    else {
        return;
    };
    let blue = s.pod_ips("blue");
    patch(
        &s,
        json!({ "spec": { "requireApproval": true, "previewReplicas": 1 } }),
    );
    set_image(&s, "web:2");
    let st = in_phase(&s, "AwaitingApproval");
    assert!(
        st["message"].as_str().unwrap().contains("cyan promote"),
        "{st}"
    );
    assert_eq!(
        replicas(&s, "green"),
        Some(1),
        "previewReplicas until promotion"
    );
    assert_eq!(
        selected(&s, "web").as_deref(),
        Some("blue"),
        "no switch before approval"
    );
    assert_eq!(selected(&s, "web-preview").as_deref(), Some("green"));
    let preview = s.pod_ips("green");
    assert_eq!(preview.len(), 1);
    s.wait("the preview's Endpoints", MINUTE, || {
        (s.endpoints("web-preview") == preview).then_some(())
    });
    assert_eq!(s.endpoints("web"), blue, "live's Endpoints untouched");

    annotate_current(&s, "cyan.dev/promote");
    live_in(&s, "Healthy", "2");
    assert_eq!(
        replicas(&s, "green"),
        Some(2),
        "scaled to replicas before the switch"
    );
    let green = s.pod_ips("green");
    s.wait("live's Endpoints on green", MINUTE, || {
        (s.endpoints("web") == green).then_some(())
    });

    set_image(&s, "web:3");
    in_phase(&s, "AwaitingApproval");
    annotate_current(&s, "cyan.dev/abort");
    let st = in_phase(&s, "Degraded");
    assert!(st["message"].as_str().unwrap().contains("aborted"), "{st}");
    s.wait("the aborted candidate scaled down", MINUTE, || {
        (replicas(&s, "blue") == Some(0) && s.pod_ips("blue").is_empty()).then_some(())
    });
    assert_eq!(selected(&s, "web").as_deref(), Some("green"));
    assert_eq!(s.endpoints("web"), green, "live keeps serving");
}

/// A release that passes its gates but fails its users: the verify check,
/// sent through the Service's Endpoints as traffic would be, fails after
/// the switch, and the operator switches back to the hot blue, whose pods
/// the Endpoints list again. Then a careless user: a Service file that pins
/// the failed color, and the object deleted and made again.
#[test]
fn a_failed_verify_switches_back_and_the_endpoints_follow() {
    let Some(s) = Space::new("verify") else {
        return;
    };
    s.service("web", json!({ "app": "web" }));
    let vip = std::net::SocketAddr::from((s.plane.netns().address(), 80));
    let _proxy = {
        let _guard = s.rt.enter();
        cluster::kubelet::serve_service(
            s.client.clone(),
            s.ns.clone(),
            "web".into(),
            vip,
            s.plane.netns(),
        )
    };
    let verify = json!({ "verify": {
        "durationSeconds": 6, "intervalSeconds": 1, "failureThreshold": 2,
        "http": { "path": "/", "url": format!("http://{vip}/") },
    }});
    let op = s.operator("op-1");
    let phases = Watched::start(&s, "web", phase);
    s.apply(&web("web:1", None, verify.clone()));
    live_in(&s, "Healthy", "1");
    let blue = s.pod_ips("blue");

    set_pods(&s, "web:2", Some("broken"));
    let st = in_phase(&s, "RolledBack");
    // Every phase a rollout with a verify window passes through, as the
    // status published it, for the good release and then the bad one.
    let phases = phases.stop();
    let walk = ["Progressing", "Gating", "Switching", "Verifying"];
    let expected: Vec<&str> = [""]
        .into_iter()
        .chain(walk)
        .chain(["Healthy"])
        .chain(walk)
        .chain(["RolledBack"])
        .collect();
    assert_eq!(phases, expected, "the phases the status went through");
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("verification failed 2 times"),
        "{st}"
    );
    assert_eq!(st["liveVersion"], "1");
    assert_eq!(selected(&s, "web").as_deref(), Some("blue"));
    s.wait("the Endpoints back on blue", MINUTE, || {
        (s.endpoints("web") == blue).then_some(())
    });
    s.wait("the failed green scaled down", MINUTE, || {
        (replicas(&s, "green") == Some(0)).then_some(())
    });
    let (code, body) = util::http_get(&vip.to_string(), "web", "/");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("web-blue-"), "{body}");
    let last = st["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["outcome"], "VerifyFailed", "{last}");
    assert!(op.counter("cyan_operator_rollbacks_total") >= 1.0);

    // A careless `kubectl apply` of a Service file that pins green: the
    // selector is put back on the live blue, and the halted release stays
    // down (it was scaled up and served 500s again before).
    s.service("web", json!({ "app": "web", "cyan.dev/color": "green" }));
    s.wait("the selector back on blue", MINUTE, || {
        (selected(&s, "web").as_deref() == Some("blue") && s.endpoints("web") == blue).then_some(())
    });
    let said = status(&s)["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        said.contains("moved to green by someone else and put back on blue"),
        "{said}"
    );
    std::thread::sleep(Duration::from_secs(4)); // past scaleDownDelaySeconds
    assert_eq!(
        replicas(&s, "green"),
        Some(0),
        "the halted release stays down"
    );
    assert_eq!(replicas(&s, "blue"), Some(2), "live keeps serving");
    assert_eq!(s.endpoints("web"), blue);

    // Deleted and made again under its name: a new object, which neither
    // starts halted nor inherits the old one's history from the Service.
    s.kubectl(&[
        "delete",
        "bgd",
        "web",
        "--cascade=foreground",
        "--wait=true",
    ]);
    s.apply(&web("web:1", None, json!({})));
    let st = live_in(&s, "Healthy", "1");
    let history: Vec<&str> = st["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["Promoted"], "{st:#}");
}

/// A candidate whose pods never become Ready is halted at its progress
/// deadline and scaled down; live never leaves blue.
#[test]
fn a_candidate_that_never_becomes_ready_is_halted_at_its_progress_deadline() {
    let Some((s, _op)) = first_release("deadline", json!({})) else {
        return;
    };
    let blue = s.pod_ips("blue");
    patch(&s, json!({ "spec": { "progressDeadlineSeconds": 8 } }));
    set_pods(&s, "web:2", Some("unready"));
    let st = in_phase(&s, "Gating");
    assert!(
        st["message"].as_str().unwrap().contains("pods available"),
        "{st}"
    );
    let st = in_phase(&s, "Degraded");
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("progressDeadlineSeconds (8s)"),
        "{st}"
    );
    s.wait("the stuck candidate scaled down", MINUTE, || {
        (replicas(&s, "green") == Some(0)).then_some(())
    });
    assert_eq!(selected(&s, "web").as_deref(), Some("blue"));
    assert_eq!(s.endpoints("web"), blue);
}

/// Two operator replicas: one leads. Killed (-9) in the middle of a
/// rollout, its Lease expires and the standby finishes the rollout from
/// what the cluster holds; stopped with SIGTERM, it hands the Lease over
/// at once.
#[test]
fn a_killed_leader_is_replaced_and_the_standby_finishes_the_rollout() {
    let Some(s) = Space::new("lease") else {
        return;
    };
    s.service("web", json!({ "app": "web" }));
    let lease = format!("lease/cyan-operator-{}", s.ns);
    let holder = || {
        let out = cluster::kubectl_with(
            s.plane.admin(),
            &[
                "-n",
                "cyan-system",
                "get",
                &lease,
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ],
            None,
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut first = s.operator("op-1");
    s.wait("op-1 to lead", MINUTE, || {
        (holder() == "op-1").then_some(())
    });
    let second = s.operator("op-2");
    s.apply(&web("web:1", None, json!({ "requireApproval": true })));
    in_phase(&s, "AwaitingApproval");

    first.kill9();
    annotate_current(&s, "cyan.dev/promote");
    let taken = std::time::Instant::now();
    s.wait("op-2 to take the expired Lease", MINUTE, || {
        (holder() == "op-2").then_some(())
    });
    live_in(&s, "Healthy", "1");
    assert!(
        taken.elapsed() < Duration::from_secs(40),
        "{:?}",
        taken.elapsed()
    );
    assert_eq!(selected(&s, "web").as_deref(), Some("blue"));

    let mut second = second;
    let third = s.operator("op-3");
    let exit = second.sigterm();
    assert!(exit.success(), "{exit:?}");
    let handed = std::time::Instant::now();
    s.wait("op-3 to lead after the SIGTERM", MINUTE, || {
        (holder() == "op-3").then_some(())
    });
    assert!(
        handed.elapsed() < Duration::from_secs(10),
        "a released Lease is taken without waiting out its term: {:?}",
        handed.elapsed()
    );
    set_image(&s, "web:2");
    in_phase(&s, "AwaitingApproval");
    annotate_current(&s, "cyan.dev/promote");
    live_in(&s, "Healthy", "2");
    drop(third);
}

/// A second writer (a script annotating the object back to back, as a CI job
/// or another controller might while the rollout runs) makes the
/// operator's status writes and the CLI's spec write lose races; each is
/// retried on a fresh read, and the rollout and a rollback end as they
/// would alone.
#[test]
fn a_second_writer_causes_conflicts_that_are_retried() {
    let Some((s, op)) = first_release("conflict", json!({})) else {
        return;
    };
    let api = bgd_api(&s);
    set_image(&s, "web:2");
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = done.clone();
    let writer = s.rt.spawn(async move {
        for i in 0..6000 {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            let patch = kube::api::Patch::Merge(json!({
                "metadata": { "annotations": { "example.com/touched": i.to_string() } }
            }));
            let _ = api.patch("web", &Default::default(), &patch).await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    live_in(&s, "Healthy", "2");
    // The CLI's spec write races the same writer (and the operator).
    let out = cli_on_web(&s, &["rollback"]);
    assert!(
        out.status.success(),
        "cyan rollback: {}\n{}",
        util::text(&out),
        s.report()
    );
    let rolled_back = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(rolled_back.contains("1 is live on blue"), "{rolled_back}");
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    s.rt.block_on(writer).unwrap();
    let conflicts = op.counter("cyan_operator_status_conflicts_total");
    assert!(
        conflicts >= 1.0,
        "no status write lost a race: {}",
        op.metrics()
    );
    assert_eq!(selected(&s, "web").as_deref(), Some("blue"));
    let outcomes: Vec<String> = status(&s)["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            format!(
                "{} {}",
                h["version"].as_str().unwrap(),
                h["outcome"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        ["1 Promoted", "2 Promoted", "1 RolledBack"],
        "one entry per step, however many retries"
    );
}

/// The real `cyan` CLI against the real API server, as ServiceAccount
/// `cyan-cli` bound to `manifests/cli-role.yaml` and nothing more: deploy
/// (built, pushed to the local registry), status, history, promote, abort
/// and rollback, hot and cold, with the reports Docker prints key for key.
#[test]
fn the_cli_deploys_promotes_and_rolls_back_hot_and_cold() {
    let registry = "127.0.0.1:5000";
    let up = std::net::TcpStream::connect(registry).is_ok();
    let provided = "CI must run one: .ci/run starts Debian's docker-registry";
    if !util::present_or_skipped(up, &format!("no registry on {registry}"), provided) {
        return;
    }
    let Some(s) = Space::new("cli") else {
        return;
    };
    s.service("shop", json!({ "app.kubernetes.io/name": "shop" }));
    let _op = s.operator("op-1");
    let kubeconfig = s.cli_kubeconfig();
    let image = format!("{registry}/cyan-test-{}", s.ns);
    let config = s.dir.join("cyan.yaml");
    std::fs::write(
        &config,
        format!(
            "app: shop\nimage: {image}\nplatform: kubernetes\nbuild:\n  context: {ctx}\n\
             replicas: 2\nport: 8080\nhealth:\n  http: {{ path: /healthz }}\n  interval: 1s\n\
             kubernetes:\n  scale_down_delay: 8s\n  progress_deadline: 1m\n",
            ctx = util::repo_root().join("examples/demo").display(),
        ),
    )
    .unwrap();
    let command = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cyan"));
        cmd.args(args)
            .arg("-c")
            .arg(&config)
            .env("KUBECONFIG", &kubeconfig)
            .env("CI", "true")
            .env_remove("RUST_LOG");
        cmd
    };
    let run = |args: &[&str]| command(args).output().unwrap();
    let ok = |args: &[&str]| util::succeeded(args, &run(args));

    // 1.0.0, then 2.0.0 as the Action deploys it, a hot rollback: the
    // reports keep Docker's contract.
    let scratch = s.dir.join("github");
    std::fs::create_dir_all(&scratch).unwrap();
    let kube = util::reports::Reports::collect("kubernetes", &scratch, |args, vars| {
        let mut cmd = command(args);
        cmd.envs(vars.iter().copied());
        cmd.output().unwrap()
    });
    let docker_app = util::TestApp::with_image("realk", "", Some(image.clone()));
    let docker = util::reports::Reports::collect("docker", &scratch, |args, vars| {
        let mut cmd = docker_app.command(args);
        cmd.envs(vars.iter().copied());
        cmd.output().unwrap()
    });
    util::reports::same_contract(&docker, &kube);
    for key in ["image", "digest"] {
        assert_eq!(
            docker.deploy_outputs[key], kube.deploy_outputs[key],
            "one image, one {key}"
        );
    }
    assert_eq!(kube.status["namespace"], s.ns.as_str(), "{:#}", kube.status);
    drop(docker_app);

    // Approval, promote, a hot rollback to the very pods that served before.
    let blue = s.pod_ips("blue");
    assert_eq!(blue.len(), 2, "{}", s.report());
    let out = ok(&["deploy", "--version", "3.0.0", "--require-approval"]);
    assert!(out.contains("Approve with: cyan promote"), "{out}");
    let st: Value = serde_json::from_str(&ok(&["status", "-o", "json"])).unwrap();
    assert_eq!(st["phase"], "awaiting-approval", "{st:#}");
    assert_eq!(st["candidate"]["version"], "3.0.0", "{st:#}");
    assert_eq!(s.endpoints("shop"), blue, "no switch before approval");
    let out = ok(&["promote"]);
    assert!(out.contains("3.0.0 is live on green"), "{out}");
    let green = s.pod_ips("green");
    s.wait("the Endpoints on green", MINUTE, || {
        (s.endpoints("shop") == green).then_some(())
    });
    let out = ok(&["rollback"]);
    assert!(out.contains("1.0.0 is live on blue"), "{out}");
    s.wait("the Endpoints back on blue", MINUTE, || {
        (s.endpoints("shop") == blue).then_some(())
    });
    assert_eq!(s.pod_ips("blue"), blue, "a hot rollback restarts nothing");
    let abort = run(&["abort"]);
    assert_eq!(
        abort.status.code(),
        Some(9),
        "nothing to abort: {}",
        util::text(&abort)
    );

    // Cold: once green is scaled down, a rollback to 3.0.0 starts it
    // again, gated, on new pods.
    s.wait("green scaled down after its delay", MINUTE, || {
        (s.get("deploy/shop-green")["spec"]["replicas"] == 0 && s.pod_ips("green").is_empty())
            .then_some(())
    });
    let out = ok(&["rollback", "--to", "3.0.0"]);
    assert!(out.contains("3.0.0 is live on green"), "{out}");
    let fresh = s.pod_ips("green");
    assert_eq!(fresh.len(), 2);
    assert!(
        fresh.iter().all(|ip| !green.contains(ip)),
        "new pods: {fresh:?} vs {green:?}"
    );
    s.wait("the Endpoints on the restarted green", MINUTE, || {
        (s.endpoints("shop") == fresh).then_some(())
    });
    let history: Value = serde_json::from_str(&ok(&["history", "-o", "json"])).unwrap();
    let events: Vec<(&str, &str)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["event"].as_str().unwrap(),
                h["release"]["version"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(events[0], ("rolled-back", "3.0.0"), "{history:#}");
}

/// What the API server stores but cannot be a BlueGreenDeployment: an
/// integer past its type is refused by the CRD; a pod template with a typo
/// (the CRD keeps the template's schema open) fails its own object, marked
/// Degraded, while the namespace's other objects roll out and the CLI
/// still works for them.
#[test]
fn an_object_that_cannot_be_read_fails_alone() {
    let Some((s, _op)) = first_release("unreadable", json!({})) else {
        return;
    };
    let mut huge = web("web:1", None, json!({ "replicas": 3_000_000_000u64 }));
    huge["metadata"]["name"] = json!("huge");
    let out = s.kubectl_out(&["apply", "-f", "-"], Some(&huge.to_string()));
    let refused = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && refused.contains("2147483647"),
        "{refused}"
    );

    let mut typo = web("web:1", None, json!({}));
    typo["metadata"]["name"] = json!("typo");
    typo["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = json!("8080");
    s.apply(&typo);
    s.wait("the typo reported on its own object", MINUTE, || {
        let st = &s.get("bgd/typo")["status"];
        (st["phase"] == "Degraded"
            && st["message"]
                .as_str()?
                .contains("spec.template is not a pod template"))
        .then_some(())
    });
    set_image(&s, "web:2");
    live_in(&s, "Healthy", "2");

    let out = cli_on_web(&s, &["status", "-o", "json"]);
    assert!(out.status.success(), "{}", util::text(&out));
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["version"], "2", "{st:#}");
}

/// Two BlueGreenDeployments naming one active Service: the second is
/// refused (Degraded, naming the first), and the Service's color stays
/// where the first put it. Before, each put its own color back after the
/// other's switch, and traffic went back and forth between two apps' pods
/// many times a minute.
#[test]
fn two_objects_on_one_service_do_not_fight_over_it() {
    let Some((s, _op)) = first_release("shared", json!({})) else {
        return;
    };
    set_image(&s, "web:2");
    live_in(&s, "Healthy", "2");
    let colors = Watched::start(&s, "web", |svc: k8s_openapi::api::core::v1::Service| {
        svc.spec
            .and_then(|sp| sp.selector)
            .and_then(|sel| sel.get("cyan.dev/color").cloned())
    });
    let mut other = web("other:1", None, json!({}));
    other["metadata"]["name"] = json!("web2");
    s.apply(&other);
    s.wait("the second object refused", MINUTE, || {
        let st = &s.get("bgd/web2")["status"];
        (st["phase"] == "Degraded"
            && st["message"]
                .as_str()?
                .contains("switched by BlueGreenDeployment web"))
        .then_some(())
    });
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        colors.stop(),
        [Some("green".to_string())],
        "the selector never moved"
    );
    assert_eq!(status(&s)["phase"], "Healthy");
}
