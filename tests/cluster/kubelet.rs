//! The test kubelet: for the pods of one namespace, what a node agent
//! does. It binds each pending pod to the test's node, gives it an address
//! in the test's network namespace, serves HTTP there on each container
//! port, and writes the pod Running and Ready; a pod being deleted has its
//! server stopped and is removed at once (no grace period). kwok fakes
//! nodes the same way, at scale.
//!
//! A pod's HTTP behaviour comes from the env var `TEST_POD` of its first
//! container:
//! - unset: every path answers 200 with `<pod name> <image>`;
//! - `unready`: the same, but the pod never reports Ready;
//! - `broken`: `/healthz` answers 200, every other path 500 (a release
//!   that passes its gates and fails its users);
//! - `down`: every path answers 503.
//!
//! A Service stand-in (`serve_service`) plays kube-proxy for one Service:
//! it forwards each request to an address the Service's Endpoints list at
//! that moment, so a check through it follows the real selector switch.

use std::collections::hash_map::{Entry, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::netns::Netns;

/// How a pod answers, from its `TEST_POD` env var.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Behaviour {
    Serving,
    Unready,
    Broken,
    Down,
}

impl Behaviour {
    fn of(pod: &Pod) -> Behaviour {
        let var = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.env.as_ref())
            .and_then(|env| env.iter().find(|v| v.name == "TEST_POD"))
            .and_then(|v| v.value.clone());
        match var.as_deref() {
            None => Behaviour::Serving,
            Some("unready") => Behaviour::Unready,
            Some("broken") => Behaviour::Broken,
            Some("down") => Behaviour::Down,
            Some(other) => panic!("TEST_POD={other}: not a behaviour the test kubelet knows"),
        }
    }

    fn answer(self, path: &str) -> (u16, &'static str) {
        match (self, path) {
            (Behaviour::Down, _) => (503, "Service Unavailable"),
            (Behaviour::Broken, "/healthz") => (200, "OK"),
            (Behaviour::Broken, _) => (500, "Internal Server Error"),
            _ => (200, "OK"),
        }
    }
}

/// A pod this kubelet runs: its servers stop when it is dropped.
struct Running(Vec<JoinHandle<()>>);

impl Drop for Running {
    fn drop(&mut self) {
        for server in &self.0 {
            server.abort();
        }
    }
}

/// Runs the kubelet for namespace `ns` until the task is aborted.
pub async fn run(client: Client, ns: String, node: String, netns: &'static Netns) {
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let mut running: HashMap<String, Running> = HashMap::new();
    loop {
        if let Ok(list) = pods.list(&ListParams::default()).await {
            running.retain(|uid, _| list.items.iter().any(|p| p.uid().as_ref() == Some(uid)));
            for pod in list.items {
                let (name, uid) = (pod.name_any(), pod.uid().unwrap_or_default());
                if pod.metadata.deletion_timestamp.is_some() {
                    running.remove(&uid);
                    let now = DeleteParams {
                        grace_period_seconds: Some(0),
                        ..DeleteParams::default()
                    };
                    let _ = pods.delete(&name, &now).await;
                } else if pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_ref())
                    .is_none()
                {
                    let _ = bind(&pods, &name, &node).await;
                } else if let Entry::Vacant(slot) = running.entry(uid) {
                    if let Ok(servers) = start(&pods, &pod, netns).await {
                        slot.insert(servers);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the scheduler would do: `pods/binding` to the test's node.
async fn bind(pods: &Api<Pod>, name: &str, node: &str) -> kube::Result<Value> {
    let binding = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": { "name": name },
        "target": { "apiVersion": "v1", "kind": "Node", "name": node },
    });
    pods.create_subresource("binding", name, &PostParams::default(), &binding)
        .await
}

/// Serves the pod on a new address and reports it Running (and Ready,
/// unless it is `unready`).
async fn start(pods: &Api<Pod>, pod: &Pod, netns: &Netns) -> kube::Result<Running> {
    let behaviour = Behaviour::of(pod);
    let ip = netns.address();
    let spec = pod.spec.clone().unwrap_or_default();
    let mut ports: Vec<u16> = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .map(|p| p.container_port as u16)
        .collect();
    if ports.is_empty() {
        ports.push(80);
    }
    let image = spec
        .containers
        .first()
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let body = format!("{} {image}", pod.name_any());
    // Stopped again if the status cannot be written.
    let mut servers = Running(Vec::new());
    for port in ports {
        let listener = netns
            .listen(SocketAddr::from((ip, port)))
            .expect("a pod address in the test's namespace");
        let listener = TcpListener::from_std(listener).unwrap();
        let body = body.clone();
        servers.0.push(tokio::spawn(serve(listener, move |path| {
            let (code, reason) = behaviour.answer(path);
            (code, reason, body.clone())
        })));
    }
    let ready = if behaviour == Behaviour::Unready {
        "False"
    } else {
        "True"
    };
    let now = cyan::clock::now_rfc3339();
    let condition = |kind: &str, status: &str| json!({ "type": kind, "status": status, "lastTransitionTime": now });
    let containers: Vec<Value> = spec
        .containers
        .iter()
        .map(|c| {
            json!({
                "name": c.name, "image": c.image, "imageID": "", "ready": ready == "True",
                "restartCount": 0, "started": true, "state": { "running": { "startedAt": now } },
            })
        })
        .collect();
    let status = json!({ "status": {
        "phase": "Running",
        "hostIP": "10.213.255.1",
        "podIP": ip.to_string(),
        "podIPs": [{ "ip": ip.to_string() }],
        "startTime": now,
        "conditions": [
            condition("PodScheduled", "True"),
            condition("Initialized", "True"),
            condition("ContainersReady", ready),
            condition("Ready", ready),
        ],
        "containerStatuses": containers,
    }});
    pods.patch_status(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&status),
    )
    .await?;
    Ok(servers)
}

/// Answers each connection's one request with `answer(path)`, then closes.
async fn serve<F>(listener: TcpListener, answer: F)
where
    F: Fn(&str) -> (u16, &'static str, String) + Send + Sync + 'static,
{
    let answer = std::sync::Arc::new(answer);
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let answer = answer.clone();
        tokio::spawn(async move {
            let Some(path) = request_path(&mut stream).await else {
                return;
            };
            let (code, reason, body) = answer(&path);
            let _ = respond(&mut stream, code, reason, &body).await;
        });
    }
}

/// The path of the request on `stream`, once its head is read (within 5 s).
async fn request_path(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            head.extend_from_slice(&chunk[..n]);
        }
        Some(())
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .ok()??;
    let line = String::from_utf8_lossy(&head).lines().next()?.to_string();
    line.split(' ').nth(1).map(String::from)
}

async fn respond(
    stream: &mut TcpStream,
    code: u16,
    reason: &str,
    body: &str,
) -> std::io::Result<()> {
    let out = format!(
        "HTTP/1.1 {code} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

/// A stand-in for kube-proxy: serves `addr` (in the test's namespace) and
/// forwards each request to the first address, on the first port, that the
/// Endpoints of Service `service` list at that moment; 503 while they list
/// none. Runs until the task is aborted.
pub fn serve_service(
    client: Client,
    ns: String,
    service: String,
    addr: SocketAddr,
    netns: &Netns,
) -> JoinHandle<()> {
    let listener =
        TcpListener::from_std(netns.listen(addr).expect("the Service's address")).unwrap();
    let endpoints: Api<Endpoints> = Api::namespaced(client, &ns);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let (endpoints, service) = (endpoints.clone(), service.clone());
            tokio::spawn(async move {
                let Some(path) = request_path(&mut stream).await else {
                    return;
                };
                let target = endpoints
                    .get_opt(&service)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|e| {
                        let subset = e.subsets?.into_iter().next()?;
                        let ip: Ipv4Addr = subset.addresses?.first()?.ip.parse().ok()?;
                        let port = subset.ports?.first()?.port as u16;
                        Some(SocketAddr::from((ip, port)))
                    });
                let Some(target) = target else {
                    let _ = respond(&mut stream, 503, "Service Unavailable", "no endpoints").await;
                    return;
                };
                let Ok(mut upstream) = TcpStream::connect(target).await else {
                    let _ = respond(&mut stream, 502, "Bad Gateway", "endpoint refused").await;
                    return;
                };
                let request =
                    format!("GET {path} HTTP/1.1\r\nhost: {service}\r\nconnection: close\r\n\r\n");
                let mut answer = Vec::new();
                if upstream.write_all(request.as_bytes()).await.is_ok()
                    && upstream.read_to_end(&mut answer).await.is_ok()
                {
                    let _ = stream.write_all(&answer).await;
                }
                let _ = stream.shutdown().await;
            });
        }
    })
}
