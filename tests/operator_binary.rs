//! The real `cyan operator` process against the in-memory API over
//! loopback HTTP: it takes the Lease, runs the kube-rs Controller (list,
//! then requeues; the test API's watches time out empty), rolls out a
//! BlueGreenDeployment, serves /metrics, /healthz and /readyz, and on
//! SIGTERM stops and releases the Lease so a standby takes over at once.

mod apiserver;
mod util;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use apiserver::{ApiServer, BGDS, SERVICES};
use serde_json::json;

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/default/leases";

fn operator(
    kubeconfig: &std::path::Path,
    identity: &str,
    port: u16,
    log: &std::path::Path,
) -> Child {
    Command::new(env!("CARGO_BIN_EXE_cyan"))
        .args(["operator", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--lease-namespace", "default", "--identity", identity])
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn holder(api: &ApiServer) -> Option<String> {
    api.get(LEASES, "cyan-operator")?["spec"]["holderIdentity"]
        .as_str()
        .map(String::from)
}

/// Waits for `check`, failing with the operator's log.
fn wait(what: &str, limit: Duration, log: &std::path::Path, mut check: impl FnMut() -> bool) {
    util::wait::until(
        what,
        limit,
        Duration::from_millis(200),
        || check().then_some(()),
        || {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            format!("operator log:\n{log}")
        },
    )
}

fn sigterm(child: &mut Child) -> std::process::ExitStatus {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    util::wait::until(
        "an exit after SIGTERM",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || child.try_wait().unwrap(),
        String::new,
    )
}

#[test]
fn the_operator_process_leads_rolls_out_serves_probes_and_hands_over_on_sigterm() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = ApiServer::new();
    let addr = rt.block_on(api.serve_http());
    api.put_service("web", json!({ "app": "web" }));
    api.put(BGDS, apiserver::bgd("web:1", json!({ "replicas": 2 })));
    let dir = std::env::temp_dir().join(format!("cyan-operator-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, ApiServer::kubeconfig(addr, "default")).unwrap();
    let (log1, log2) = (dir.join("op-1.log"), dir.join("op-2.log"));

    let port1 = util::free_port();
    let mut first = operator(&kubeconfig, "op-1", port1, &log1);
    wait("op-1 to lead", Duration::from_secs(20), &log1, || {
        holder(&api).as_deref() == Some("op-1")
    });
    let port2 = util::free_port();
    let mut second = operator(&kubeconfig, "op-2", port2, &log2);

    wait(
        "the rollout to be Healthy",
        Duration::from_secs(60),
        &log1,
        || {
            api.settle_deployments();
            let status = &api.get(BGDS, "web").unwrap()["status"];
            status["phase"] == "Healthy" && status["liveColor"] == "blue"
        },
    );
    let svc = api.get(SERVICES, "web").unwrap();
    assert_eq!(svc["spec"]["selector"]["cyan.dev/color"], "blue");

    let at = |port: u16, path: &str| util::http_get(&format!("127.0.0.1:{port}"), "operator", path);
    let (code, metrics) = at(port1, "/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("cyan_operator_switches_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cyan_operator_reconciles_total"),
        "{metrics}"
    );
    assert_eq!(at(port1, "/healthz").0, 200);
    assert_eq!(at(port1, "/readyz").0, 200);
    wait(
        "op-2 to stand by ready",
        Duration::from_secs(10),
        &log2,
        || at(port2, "/readyz").0 == 200,
    );
    assert_eq!(
        holder(&api).as_deref(),
        Some("op-1"),
        "the standby does not take the Lease"
    );

    let status = sigterm(&mut first);
    assert!(
        status.success(),
        "op-1 exits cleanly on SIGTERM: {status:?}"
    );
    wait("op-2 to take over", Duration::from_secs(10), &log2, || {
        holder(&api).as_deref() == Some("op-2")
    });
    assert!(sigterm(&mut second).success());
    assert_eq!(holder(&api), None, "the last leader released the Lease");
    let _ = std::fs::remove_dir_all(&dir);
}
