//! The shipped manifests: the CRD files are the generated CRD, the Helm
//! chart renders to the same objects as `manifests/`, RBAC lists exactly
//! the verbs the operator uses (checked against the requests it makes), and
//! the example is a valid BlueGreenDeployment.

mod apiserver;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use apiserver::{ApiServer, Backend, BGDS};
use cyan::operator::controller::{self, Context};
use cyan::operator::crd::{crd_yaml, BlueGreenDeployment};
use cyan::operator::leader::LeaseLock;
use cyan::platform::kube::objects;
use serde_json::{json, Value};

fn read(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn docs(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .unwrap()
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn the_crd_files_are_the_generated_crd() {
    for path in ["manifests/crd.yaml", "charts/cyan/crds/crd.yaml"] {
        assert!(
            read(path) == crd_yaml(),
            "{path} is stale: run `cargo run -- crd > {path}`"
        );
    }
    let crd = &docs(&crd_yaml())[0];
    let version = &crd["spec"]["versions"][0];
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["bgd"]));
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert!(version["subresources"]["status"].is_object());
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Live", "Version", "Phase", "Age"]);
    assert!(
        !crd_yaml().contains("prefixItems"),
        "the schema must stay structural"
    );
    // kubectl's client-side validation fails on a `null` among an enum's
    // values, API servers before 1.23 reject the CRD, and they publish a
    // `nullable` field without its type and fields (so `kubectl explain`
    // shows nothing inside `verify`): an optional field is one that is not
    // required, nothing more.
    fn nulls(v: &Value, at: &str, found: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if map
                    .get("enum")
                    .and_then(Value::as_array)
                    .is_some_and(|values| values.iter().any(Value::is_null))
                {
                    found.push(format!("{at}.enum"));
                }
                if map.contains_key("nullable") {
                    found.push(format!("{at}.nullable"));
                }
                for (k, v) in map {
                    nulls(v, &format!("{at}.{k}"), found);
                }
            }
            Value::Array(items) => items
                .iter()
                .for_each(|v| nulls(v, &format!("{at}[]"), found)),
            _ => {}
        }
    }
    let schema = &version["schema"]["openAPIV3Schema"];
    let mut found = Vec::new();
    nulls(schema, "openAPIV3Schema", &mut found);
    assert!(found.is_empty(), "null or nullable at {found:?}");
    let status = &schema["properties"]["status"]["properties"];
    for optional in ["liveColor", "phase"] {
        assert!(
            !status[optional]["enum"].as_array().unwrap().is_empty(),
            "{optional}"
        );
        assert_eq!(status[optional]["type"], "string", "{optional}");
    }
    let spec = &schema["properties"]["spec"];
    assert_eq!(spec["properties"]["verify"]["type"], "object");
    let required = spec["required"].as_array().unwrap();
    assert!(!required.contains(&json!("verify")), "{required:?}");
}

/// Renders the chart's plain substitutions, as `helm template` would for
/// these templates (no helm binary here).
fn render(template: &str, values: &Value) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").expect("closed {{") + start;
        let expr = rest[start + 2..end].trim();
        let value = match expr {
            ".Release.Name" => json!("cyan"),
            ".Release.Namespace" => json!("cyan-system"),
            path => {
                let path = path
                    .strip_prefix(".Values.")
                    .unwrap_or_else(|| panic!("unsupported {expr}"));
                path.split('.').fold(values.clone(), |v, k| v[k].clone())
            }
        };
        assert!(!value.is_null(), "{expr} has no value");
        match value {
            Value::String(s) => out.push_str(&s),
            other => out.push_str(&other.to_string()),
        }
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

#[test]
fn the_chart_renders_to_the_same_objects_as_the_manifests() {
    let chart: Value = serde_saphyr::from_str(&read("charts/cyan/Chart.yaml")).unwrap();
    assert_eq!(chart["name"], "cyan");
    let values: Value = serde_saphyr::from_str(&read("charts/cyan/values.yaml")).unwrap();
    let mut rendered = Vec::new();
    for t in ["serviceaccount", "rbac", "deployment"] {
        let text = render(&read(&format!("charts/cyan/templates/{t}.yaml")), &values);
        rendered.extend(docs(&text));
    }
    let mut plain = docs(&read("manifests/rbac.yaml"));
    plain.extend(docs(&read("manifests/operator.yaml")));
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ] {
        assert_eq!(find(&rendered, kind), find(&plain, kind), "{kind}");
    }
    let mut deployment = find(&rendered, "Deployment").clone();
    let container = &mut deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["imagePullPolicy"], "IfNotPresent");
    container.as_object_mut().unwrap().remove("imagePullPolicy");
    assert_eq!(&deployment, find(&plain, "Deployment"));

    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert!(c["resources"]["limits"]["memory"].is_string());
    assert_eq!(c["args"][0], "operator");
}

#[test]
fn the_example_is_a_valid_bluegreen_deployment() {
    let all = docs(&read("examples/kubernetes/web.yaml"));
    let bgd: BlueGreenDeployment =
        serde_json::from_value(find(&all, "BlueGreenDeployment").clone()).unwrap();
    objects::validate(&bgd).unwrap();
    let services: Vec<&str> = all
        .iter()
        .filter(|d| d["kind"] == "Service")
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    assert!(services.contains(&bgd.spec.active_service.as_str()));
    assert!(services.contains(&bgd.spec.preview_service.as_deref().unwrap()));
}

/// `METHOD /path` (or `APPLY-CREATE collection/name`) -> (group, resource, verb).
fn verb_of(line: &str) -> (String, String, String) {
    let (method, path) = line.split_once(' ').unwrap();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segs[0] {
        "api" => (String::new(), &segs[2..]),
        _ => (segs[1].to_string(), &segs[3..]),
    };
    let rest = if rest[0] == "namespaces" {
        &rest[2..]
    } else {
        rest
    };
    let resource = match rest.get(2) {
        Some(sub) => format!("{}/{sub}", rest[0]),
        None => rest[0].to_string(),
    };
    let verb = match (method, rest.len()) {
        ("APPLY-CREATE", _) => "create",
        ("GET", 1) => "list",
        ("GET", _) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", _) => "delete",
        _ => panic!("{line}"),
    };
    (group, resource, verb.to_string())
}

fn granted() -> BTreeSet<(String, String, String)> {
    let rbac = docs(&read("manifests/rbac.yaml"));
    let mut all = BTreeSet::new();
    for role in rbac
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
    {
        for rule in role["rules"].as_array().unwrap() {
            for g in rule["apiGroups"].as_array().unwrap() {
                for r in rule["resources"].as_array().unwrap() {
                    for v in rule["verbs"].as_array().unwrap() {
                        all.insert((
                            g.as_str().unwrap().to_string(),
                            r.as_str().unwrap().to_string(),
                            v.as_str().unwrap().to_string(),
                        ));
                    }
                }
            }
        }
    }
    all
}

async fn reconcile(api: &ApiServer, ctx: &Arc<Context>, rounds: usize) {
    for _ in 0..rounds {
        // Read as the runtime's watch would hand it over (not an API call).
        let obj: BlueGreenDeployment =
            serde_json::from_value(api.get(BGDS, "web").unwrap()).unwrap();
        let _ = controller::reconcile(Arc::new(obj), ctx.clone()).await;
        api.settle_deployments();
    }
}

#[tokio::test]
async fn rbac_grants_exactly_the_verbs_the_operator_uses() {
    let api = ApiServer::new();
    let app = Backend::start(200, "ok").await;
    let app_port = app.port;
    for name in ["web", "web-preview"] {
        api.put_service(name, json!({ "app": "web" }));
    }
    let image = |v: &str| json!([{ "name": "web", "image": format!("web:{v}") }]);
    api.put(
        BGDS,
        apiserver::bgd(
            "web:1",
            json!({
                "previewService": "web-preview",
                "gates": { "http": [{ "path": "/", "port": app_port }] },
                "revisionHistoryLimit": 1, "scaleDownDelaySeconds": 0,
            }),
        ),
    );
    let now = Arc::new(AtomicU64::new(1_800_000_000_000));
    let clock = now.clone();
    let ctx = api.operator(Box::new(move || clock.load(Ordering::SeqCst)));
    let client = api.client();
    reconcile(&api, &ctx, 6).await;
    // New releases: the previous color scales down, old revisions are pruned.
    for v in ["2", "3"] {
        api.edit(BGDS, "web", |o| {
            o["spec"]["template"]["spec"]["containers"] = image(v);
        });
        reconcile(&api, &ctx, 8).await;
        now.fetch_add(1000, Ordering::SeqCst);
    }
    // An aborted candidate: the operator consumes the annotation.
    api.edit(BGDS, "web", |o| {
        o["spec"]["template"]["spec"]["containers"] = image("4");
        o["spec"]["requireApproval"] = json!(true);
    });
    reconcile(&api, &ctx, 6).await;
    let hash = api.get(BGDS, "web").unwrap()["status"]["currentHash"].clone();
    api.edit(BGDS, "web", |o| {
        o["metadata"]["annotations"] = json!({ "cyan.dev/abort": hash })
    });
    reconcile(&api, &ctx, 2).await;

    let lease = LeaseLock::new(client.clone(), "cyan-system", "cyan-operator", "a", 15);
    let t = k8s_openapi::jiff::Timestamp::now();
    assert!(lease.try_acquire_or_renew(t).await.unwrap());
    assert!(lease.try_acquire_or_renew(t).await.unwrap());
    lease.release().await.unwrap();

    let used: BTreeSet<_> = api.requests().iter().map(|l| verb_of(l)).collect();
    let granted = granted();
    let missing: Vec<_> = used.difference(&granted).collect();
    assert!(
        missing.is_empty(),
        "the operator uses verbs RBAC does not grant: {missing:?}"
    );
    // Granted but not seen here, each for a reason this scenario cannot show.
    let unseen_ok: BTreeMap<(&str, &str, &str), &str> = BTreeMap::from([
        (
            ("cyan.dev", "bluegreendeployments", "list"),
            "the controller's watch",
        ),
        (
            ("cyan.dev", "bluegreendeployments", "watch"),
            "the controller's watch",
        ),
        (
            ("apps", "deployments", "list"),
            "owned Deployments are watched",
        ),
        (
            ("apps", "deployments", "watch"),
            "owned Deployments are watched",
        ),
        (("", "services", "list"), "switched Services are watched"),
        (("", "services", "watch"), "switched Services are watched"),
        (
            ("events.k8s.io", "events", "patch"),
            "a repeated Event becomes a series",
        ),
    ]);
    for g in &granted {
        let key = (g.0.as_str(), g.1.as_str(), g.2.as_str());
        assert!(
            used.contains(g) || unseen_ok.contains_key(&key),
            "RBAC grants {g:?}, which the operator never uses: remove it"
        );
    }
}
