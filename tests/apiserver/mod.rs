//! An in-memory Kubernetes API server for the operator tests.
//!
//! No API server can run on our machines, so this one stands in: a tower
//! service that `kube::Client` talks to directly (or over loopback HTTP for
//! the real `cyan` binary), storing objects as JSON by path. It keeps the
//! semantics the operator relies on: resourceVersion conflicts (409) on
//! replace, metadata.generation bumps on spec changes, the status
//! subresource, merge and server-side-apply patches (approximated as merge
//! patches; field ownership is not modelled), label-selector lists, and
//! injected failures. The Deployment controller is simulated by
//! `settle_deployments`, with pods on 127.0.0.1 so HTTP gates probe real
//! loopback servers. A watch is answered with no events after a second
//! (as if it timed out), so the real `Controller` runs, driven by its list
//! and by requeues; most tests call `reconcile` directly.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

#[derive(Default)]
struct State {
    /// collection path (`/apis/apps/v1/namespaces/default/deployments`) -> name -> object
    objects: BTreeMap<String, BTreeMap<String, Value>>,
    rv: u64,
    faults: Vec<Fault>,
    log: Vec<String>,
    /// Deployments `settle_deployments` leaves unavailable.
    held: BTreeSet<String>,
}

/// The default namespace's Services.
pub const SERVICES: &str = "/api/v1/namespaces/default/services";

/// The default namespace's BlueGreenDeployments.
pub const BGDS: &str = "/apis/cyan.dev/v1alpha1/namespaces/default/bluegreendeployments";

/// A BlueGreenDeployment `web` of pods `app: web` running `image`, that
/// switches the Service `web`; `spec` is merged into its spec (RFC 7386).
pub fn bgd(image: &str, spec: Value) -> Value {
    let mut bgd = json!({
        "apiVersion": "cyan.dev/v1alpha1", "kind": "BlueGreenDeployment",
        "metadata": { "name": "web" },
        "spec": {
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": image }] },
            },
            "activeService": "web",
        },
    });
    merge(&mut bgd["spec"], &spec);
    bgd
}

struct Fault {
    method: Method,
    path_contains: String,
    code: u16,
    times: u32,
}

#[derive(Clone, Default)]
pub struct ApiServer {
    state: Arc<Mutex<State>>,
}

/// A parsed resource path.
struct Target {
    /// `/apis/apps/v1/namespaces/default/deployments`
    collection: String,
    /// `/apis/apps/v1/` + `deployments`, for lists across namespaces
    cluster_wide: Option<(String, String)>,
    name: Option<String>,
    status: bool,
}

fn parse(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix, rest) = match *segs.first()? {
        "api" => (format!("/api/{}", segs.get(1)?), &segs[2..]),
        "apis" => (
            format!("/apis/{}/{}", segs.get(1)?, segs.get(2)?),
            &segs[3..],
        ),
        _ => return None,
    };
    match rest {
        ["namespaces", ns, plural, tail @ ..] => Some(Target {
            collection: format!("{prefix}/namespaces/{ns}/{plural}"),
            cluster_wide: None,
            name: tail.first().map(|s| s.to_string()),
            status: tail.get(1) == Some(&"status"),
        }),
        [plural] => Some(Target {
            collection: String::new(),
            cluster_wide: Some((prefix, plural.to_string())),
            name: None,
            status: false,
        }),
        _ => None,
    }
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    })
}

fn reply(code: u16, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// RFC 7386 JSON merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

fn matches_labels(obj: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let labels = &obj["metadata"]["labels"];
        match term.split_once('=') {
            Some((k, v)) => labels[k.trim_end_matches('=')].as_str() == Some(v),
            None => labels.get(term).is_some(),
        }
    })
}

impl State {
    fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    fn handle(
        &mut self,
        method: Method,
        path: &str,
        query: &str,
        ctype: &str,
        body: &[u8],
    ) -> Response<Full<Bytes>> {
        self.log.push(format!("{method} {path}"));
        if let Some(f) = self
            .faults
            .iter_mut()
            .find(|f| f.method == method && path.contains(&f.path_contains) && f.times > 0)
        {
            f.times -= 1;
            let code = f.code;
            let reason = match code {
                409 => "Conflict",
                403 => "Forbidden",
                404 => "NotFound",
                429 => "TooManyRequests",
                _ => "InternalError",
            };
            return reply(
                code,
                &status_body(
                    code,
                    reason,
                    &format!("injected {code} for {method} {path}"),
                ),
            );
        }
        let Some(t) = parse(path) else {
            return reply(
                404,
                &status_body(404, "NotFound", &format!("no route {path}")),
            );
        };
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return reply(400, &status_body(400, "BadRequest", &e.to_string())),
            }
        };
        match (method, t.name.clone()) {
            (Method::GET, None) => self.list(&t, query),
            (Method::GET, Some(name)) => {
                match self.objects.get(&t.collection).and_then(|c| c.get(&name)) {
                    Some(o) => reply(200, o),
                    None => not_found(&name),
                }
            }
            (Method::POST, None) => self.create(&t, body),
            (Method::PUT, Some(name)) => self.replace(&t, &name, body),
            (Method::PATCH, Some(name)) => self.patch(&t, &name, ctype, body),
            (Method::DELETE, Some(name)) => match self
                .objects
                .get_mut(&t.collection)
                .and_then(|c| c.remove(&name))
            {
                Some(o) => reply(200, &o),
                None => not_found(&name),
            },
            (m, _) => reply(
                405,
                &status_body(405, "MethodNotAllowed", &format!("{m} {path}")),
            ),
        }
    }

    fn list(&self, t: &Target, query: &str) -> Response<Full<Bytes>> {
        let selector = query_param(query, "labelSelector").unwrap_or_default();
        let items: Vec<Value> = match &t.cluster_wide {
            Some((prefix, plural)) => self
                .objects
                .iter()
                .filter(|(k, _)| {
                    k.starts_with(&format!("{prefix}/namespaces/"))
                        && k.ends_with(&format!("/{plural}"))
                })
                .flat_map(|(_, c)| c.values().cloned())
                .collect(),
            None => self
                .objects
                .get(&t.collection)
                .map(|c| c.values().cloned().collect())
                .unwrap_or_default(),
        };
        let items: Vec<Value> = items
            .into_iter()
            .filter(|o| matches_labels(o, &selector))
            .collect();
        reply(
            200,
            &json!({
                "apiVersion": "v1", "kind": "List",
                "metadata": { "resourceVersion": self.rv.to_string() },
                "items": items,
            }),
        )
    }

    fn namespace_of(collection: &str) -> String {
        collection
            .split("/namespaces/")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or("default")
            .to_string()
    }

    fn create(&mut self, t: &Target, mut obj: Value) -> Response<Full<Bytes>> {
        let name = match obj["metadata"]["name"].as_str() {
            Some(n) => n.to_string(),
            None => match obj["metadata"]["generateName"].as_str() {
                Some(prefix) => format!("{prefix}{}", self.rv + 1),
                None => {
                    return reply(
                        422,
                        &status_body(422, "Invalid", "metadata.name is required"),
                    )
                }
            },
        };
        if self
            .objects
            .get(&t.collection)
            .is_some_and(|c| c.contains_key(&name))
        {
            return reply(
                409,
                &status_body(409, "AlreadyExists", &format!("{name} already exists")),
            );
        }
        let rv = self.next_rv();
        let meta = obj["metadata"].as_object_mut().unwrap();
        meta.insert("name".into(), json!(name));
        meta.insert("namespace".into(), json!(Self::namespace_of(&t.collection)));
        meta.insert("uid".into(), json!(format!("uid-{rv}")));
        meta.insert("resourceVersion".into(), json!(rv));
        meta.insert("creationTimestamp".into(), json!("2026-11-28T00:00:00Z"));
        meta.insert("generation".into(), json!(1));
        self.objects
            .entry(t.collection.clone())
            .or_default()
            .insert(name, obj.clone());
        reply(201, &obj)
    }

    fn store(
        &mut self,
        t: &Target,
        name: &str,
        old: &Value,
        mut new: Value,
        status_only: bool,
    ) -> Response<Full<Bytes>> {
        let mut next = old.clone();
        if status_only {
            next["status"] = new["status"].take();
        } else {
            let status = old.get("status").cloned();
            let meta = old["metadata"].clone();
            next = new;
            // Identity fields are the server's.
            for k in [
                "uid",
                "creationTimestamp",
                "namespace",
                "name",
                "generation",
            ] {
                next["metadata"][k] = meta[k].clone();
            }
            match status {
                Some(s) => next["status"] = s,
                None => {
                    next.as_object_mut().map(|o| o.remove("status"));
                }
            }
            if old.get("spec") != next.get("spec") {
                let g = meta["generation"].as_i64().unwrap_or(1) + 1;
                next["metadata"]["generation"] = json!(g);
            }
        }
        next["metadata"]["resourceVersion"] = json!(self.next_rv());
        self.objects
            .get_mut(&t.collection)
            .unwrap()
            .insert(name.to_string(), next.clone());
        reply(200, &next)
    }

    fn replace(&mut self, t: &Target, name: &str, body: Value) -> Response<Full<Bytes>> {
        let Some(old) = self
            .objects
            .get(&t.collection)
            .and_then(|c| c.get(name))
            .cloned()
        else {
            return not_found(name);
        };
        if let Some(rv) = body["metadata"]["resourceVersion"].as_str() {
            if rv
                != old["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
            {
                return reply(409, &status_body(409, "Conflict", &format!(
                    "Operation cannot be fulfilled on {name}: the object has been modified; please apply your changes to the latest version and try again"
                )));
            }
        }
        self.store(t, name, &old, body, t.status)
    }

    fn patch(&mut self, t: &Target, name: &str, ctype: &str, body: Value) -> Response<Full<Bytes>> {
        let apply = ctype.starts_with("application/apply-patch");
        let json_patch = ctype.starts_with("application/json-patch+json");
        if !(apply || json_patch || ctype.contains("merge-patch")) {
            return reply(415, &status_body(415, "UnsupportedMediaType", ctype));
        }
        let old = match self
            .objects
            .get(&t.collection)
            .and_then(|c| c.get(name))
            .cloned()
        {
            Some(o) => o,
            None if apply && !t.status => {
                // Apply creates a missing object (RBAC: the create verb).
                self.log
                    .push(format!("APPLY-CREATE {}/{name}", t.collection));
                return self.create(t, body);
            }
            None => return not_found(name),
        };
        let mut next = old.clone();
        if json_patch {
            // RFC 6902, as the API server applies it: a failed `test` or a
            // path that is not there is 422.
            let ops: json_patch::Patch = match serde_json::from_value(body) {
                Ok(ops) => ops,
                Err(e) => return reply(400, &status_body(400, "BadRequest", &e.to_string())),
            };
            if let Err(e) = json_patch::patch(&mut next, &ops) {
                return reply(422, &status_body(422, "Invalid", &e.to_string()));
            }
        } else {
            merge(&mut next, &body);
        }
        self.store(t, name, &old, next, t.status)
    }
}

fn not_found(name: &str) -> Response<Full<Bytes>> {
    reply(
        404,
        &status_body(404, "NotFound", &format!("\"{name}\" not found")),
    )
}

impl ApiServer {
    pub fn new() -> Self {
        Self::default()
    }

    /// A kube client whose requests this server answers in-process.
    pub fn client(&self) -> kube::Client {
        let state = self.state.clone();
        let svc = tower::service_fn(move |req: Request<kube::client::Body>| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(answer(&state, req).await) }
        });
        kube::Client::new(svc, "default")
    }

    /// The operator's context on this server, with its clock (Unix ms).
    pub fn operator(
        &self,
        clock: Box<dyn Fn() -> u64 + Send + Sync>,
    ) -> std::sync::Arc<cyan::operator::controller::Context> {
        let client = self.client();
        let recorder = kube::runtime::events::Recorder::new(
            client.clone(),
            kube::runtime::events::Reporter {
                controller: "cyan-operator".into(),
                instance: None,
            },
        );
        std::sync::Arc::new(cyan::operator::controller::Context::new(
            client,
            recorder,
            std::sync::Arc::new(cyan::operator::metrics::Metrics::default()),
            clock,
        ))
    }

    /// Serves the same store over HTTP on loopback (for the real binary);
    /// returns the address.
    pub async fn serve_http(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = self.state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = state.clone();
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(answer(&state, req).await) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc),
                );
            }
        });
        addr
    }

    /// A kubeconfig that points at `serve_http`'s address.
    pub fn kubeconfig(addr: SocketAddr, namespace: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: http://{addr}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    namespace: {namespace}\ncurrent-context: test\nusers:\n- name: test\n  user:\n    token: test\n"
        )
    }

    /// Seeds the user's Service `name` in `default` (port 80), selecting
    /// pods by `selector`: what the operator switches.
    pub fn put_service(&self, name: &str, selector: Value) {
        self.put(
            SERVICES,
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": { "name": name, "namespace": "default" },
                "spec": { "selector": selector, "ports": [{ "port": 80 }] },
            }),
        );
    }

    /// Stores an object as given (a Service the user created, say).
    pub fn put(&self, collection: &str, obj: Value) {
        let mut s = self.state.lock().unwrap();
        let t = Target {
            collection: collection.into(),
            cluster_wide: None,
            name: None,
            status: false,
        };
        let resp = s.create(&t, obj);
        assert_eq!(resp.status(), 201, "seeding {collection}");
    }

    pub fn get(&self, collection: &str, name: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .objects
            .get(collection)?
            .get(name)
            .cloned()
    }

    pub fn list(&self, collection: &str) -> Vec<Value> {
        self.state
            .lock()
            .unwrap()
            .objects
            .get(collection)
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn remove(&self, collection: &str, name: &str) {
        self.state
            .lock()
            .unwrap()
            .objects
            .get_mut(collection)
            .map(|c| c.remove(name));
    }

    /// Changes an object in place, as another client would (bumps its resourceVersion).
    pub fn edit(&self, collection: &str, name: &str, f: impl FnOnce(&mut Value)) {
        let mut s = self.state.lock().unwrap();
        let rv = s.next_rv();
        let obj = s
            .objects
            .get_mut(collection)
            .and_then(|c| c.get_mut(name))
            .expect("object to edit");
        f(obj);
        obj["metadata"]["resourceVersion"] = json!(rv);
    }

    /// The next `times` requests with this method whose path contains `path` fail with `code`.
    /// Ends every failure `fail_next` set that has not run out.
    pub fn clear_faults(&self) {
        self.state.lock().unwrap().faults.clear();
    }

    pub fn fail_next(&self, method: Method, path: &str, code: u16, times: u32) {
        self.state.lock().unwrap().faults.push(Fault {
            method,
            path_contains: path.into(),
            code,
            times,
        });
    }

    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    /// Never make this Deployment available (a crash-looping or unschedulable app).
    pub fn hold(&self, deployment: &str) {
        self.state.lock().unwrap().held.insert(deployment.into());
    }

    pub fn release(&self, deployment: &str) {
        self.state.lock().unwrap().held.remove(deployment);
    }

    /// What the Deployment controller and kubelet would do: each
    /// Deployment's status catches up with its spec, with one ready pod per
    /// replica on 127.0.0.1 (held ones get pods that are not ready).
    pub fn settle_deployments(&self) {
        let mut s = self.state.lock().unwrap();
        let collections: Vec<String> = s
            .objects
            .keys()
            .filter(|k| k.ends_with("/deployments"))
            .cloned()
            .collect();
        for coll in collections {
            let pods_coll = format!("/api/v1/namespaces/{}/pods", State::namespace_of(&coll));
            let names: Vec<String> = s.objects[&coll].keys().cloned().collect();
            for name in names {
                let held = s.held.contains(&name);
                let rv = s.next_rv();
                let d = s.objects.get_mut(&coll).unwrap().get_mut(&name).unwrap();
                let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
                let ready = if held { 0 } else { replicas };
                d["status"] = json!({
                    "observedGeneration": d["metadata"]["generation"],
                    "replicas": replicas, "updatedReplicas": replicas,
                    "readyReplicas": ready, "availableReplicas": ready,
                });
                d["metadata"]["resourceVersion"] = json!(rv);
                let labels = d["spec"]["template"]["metadata"]["labels"].clone();
                let pods = s.objects.entry(pods_coll.clone()).or_default();
                pods.retain(|k, _| !k.starts_with(&format!("{name}-")));
                for i in 0..replicas {
                    let pod = format!("{name}-{i}");
                    pods.insert(pod.clone(), json!({
                        "apiVersion": "v1", "kind": "Pod",
                        "metadata": { "name": pod, "labels": labels, "resourceVersion": "1" },
                        "status": {
                            "podIP": "127.0.0.1",
                            "conditions": [{ "type": "Ready", "status": if held { "False" } else { "True" } }],
                        },
                    }));
                }
            }
        }
    }
}

/// Reads a request's body, then answers it.
async fn answer<B: hyper::body::Body>(
    state: &Mutex<State>,
    req: Request<B>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    respond(state, &parts, &bytes).await
}

async fn respond(
    state: &Mutex<State>,
    parts: &http::request::Parts,
    body: &[u8],
) -> Response<Full<Bytes>> {
    let query = parts.uri.query().unwrap_or("");
    if query_param(query, "watch").as_deref() == Some("true") {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        return Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::new()))
            .unwrap();
    }
    let ctype = parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    state.lock().unwrap().handle(
        parts.method.clone(),
        parts.uri.path(),
        parts.uri.query().unwrap_or(""),
        ctype,
        body,
    )
}

/// A loopback HTTP server whose answer the test sets: the app in the
/// pods (which sit on 127.0.0.1), or a Prometheus.
pub struct Backend {
    pub port: u16,
    answer: Arc<Mutex<(u16, String)>>,
}

impl Backend {
    pub async fn start(status: u16, body: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer = Arc::new(Mutex::new((status, body.to_string())));
        let shared = answer.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = shared.clone();
                let svc = hyper::service::service_fn(move |_req| {
                    let (code, body) = shared.lock().unwrap().clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(code)
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc),
                );
            }
        });
        Backend { port, answer }
    }

    pub fn set(&self, status: u16, body: &str) {
        *self.answer.lock().unwrap() = (status, body.to_string());
    }
}
