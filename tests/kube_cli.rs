//! The real `cyan` binary against a cluster: deploy (build, push to the
//! local registry, write the BlueGreenDeployment, follow it), approval and
//! promote, rollback, status, history and a refused abort.
//!
//! The cluster is the in-memory API server served over loopback HTTP, with
//! the operator's reconcile and a simulated Deployment controller running
//! beside it in this process; pods live on 127.0.0.1, where a loopback
//! server answers the HTTP gates. Needs Docker and the registry on
//! 127.0.0.1:5000 (`.ci/run` starts both).

mod apiserver;
mod util;

use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use apiserver::{ApiServer, Backend, SERVICES as SVCS};
use cyan::operator::controller;
use cyan::operator::crd::BlueGreenDeployment;
use kube::api::{Api, ListParams};
use serde_json::{json, Value};

const BGDS: &str = "/apis/cyan.dev/v1alpha1/namespaces/default/bluegreendeployments";

/// What the operator Deployment and kube-controller-manager would do.
async fn run_operator(api: ApiServer) {
    let ctx = api.operator(Box::new(cyan::clock::now_ms));
    let bgds: Api<BlueGreenDeployment> = Api::namespaced(api.client(), "default");
    loop {
        if let Ok(list) = bgds.list(&ListParams::default()).await {
            for b in list.items {
                let _ = controller::reconcile(Arc::new(b), ctx.clone()).await;
            }
        }
        api.settle_deployments();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Env {
    dir: std::path::PathBuf,
    kubeconfig: std::path::PathBuf,
}

impl Env {
    fn cyan(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_cyan"))
            .args(args)
            .arg("-c")
            .arg(self.dir.join("cyan.yaml"))
            .env("KUBECONFIG", &self.kubeconfig)
            .env("CI", "true")
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cyan(args);
        assert!(
            out.status.success(),
            "cyan {args:?} failed:\n{}",
            util::text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[test]
fn the_cli_deploys_promotes_and_rolls_back_through_the_operator() {
    let registry = "127.0.0.1:5000";
    if std::net::TcpStream::connect(registry).is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run a registry on {registry} (.ci/run starts Debian's docker-registry)"
        );
        eprintln!("SKIPPED kube CLI test: no registry on {registry}; .ci/run starts one");
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = ApiServer::new();
    let addr = rt.block_on(api.serve_http());
    let name = format!("k{}", std::process::id());
    api.put_service(&name, json!({ "app.kubernetes.io/name": name }));
    rt.spawn(run_operator(api.clone()));
    let pods = rt.block_on(Backend::start(200, "ok"));

    let dir = std::env::temp_dir().join(format!("cyan-kube-cli-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, ApiServer::kubeconfig(addr, "default")).unwrap();
    std::fs::write(
        dir.join("cyan.yaml"),
        format!(
            "app: {name}\nimage: 127.0.0.1:5000/cyan-test-{name}\nplatform: kubernetes\nbuild:\n  context: {ctx}\n\
             replicas: 2\nport: {port}\nhealth:\n  http: {{ path: /healthz }}\n  interval: 1s\n\
             kubernetes:\n  scale_down_delay: 1s\n  progress_deadline: 1m\n",
            ctx = util::repo_root().join("examples/demo").display(),
            port = pods.port,
        ),
    )
    .unwrap();
    let env = Env { dir, kubeconfig };

    let out = env.ok(&["deploy", "--version", "1.0.0"]);
    assert!(out.contains("live is blue (1.0.0)"), "{out}");
    let bgd = api.get(BGDS, &name).unwrap();
    let image = bgd["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap();
    assert!(
        image.starts_with(&format!("127.0.0.1:5000/cyan-test-{name}:1.0.0@sha256:")),
        "the template pins the pushed digest: {image}"
    );

    let out = env.ok(&["deploy", "--version", "2.0.0", "--require-approval"]);
    assert!(out.contains("waits for approval"), "{out}");
    assert_eq!(
        api.get(SVCS, &name).unwrap()["spec"]["selector"]["cyan.dev/color"],
        "blue",
        "no switch before approval"
    );
    let out = env.ok(&["promote"]);
    assert!(out.contains("live is green (2.0.0)"), "{out}");

    let out = env.ok(&["rollback"]);
    assert!(out.contains("live is blue (1.0.0)"), "{out}");

    let status: Value = serde_json::from_str(&env.ok(&["status", "-o", "json"])).unwrap();
    assert_eq!(status["status"]["liveVersion"], "1.0.0");
    assert_eq!(status["status"]["phase"], "Healthy");
    // `--platform kubernetes` over a cyan.yaml that says nothing of it.
    let yaml = std::fs::read_to_string(env.dir.join("cyan.yaml")).unwrap();
    let plain = env.dir.join("plain.yaml");
    std::fs::write(&plain, yaml.replace("platform: kubernetes\n", "")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cyan"))
        .args(["status", "-o", "json", "--platform", "kubernetes", "-c"])
        .arg(&plain)
        .env("KUBECONFIG", &env.kubeconfig)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", util::text(&out));
    let flagged: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(flagged["status"]["liveVersion"], "1.0.0");

    let history = env.ok(&["history"]);
    assert_eq!(history.lines().count(), 3, "{history}");
    assert!(
        history.lines().next().unwrap().contains("RolledBack"),
        "{history}"
    );

    let abort = env.cyan(&["abort"]);
    assert_eq!(
        abort.status.code(),
        Some(9),
        "nothing to abort: {}",
        util::text(&abort)
    );
    let _ = std::fs::remove_dir_all(&env.dir);
}

#[test]
fn a_cluster_without_the_crd_is_reported_before_anything_is_built() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = ApiServer::new();
    api.fail_next(http::Method::GET, "/bluegreendeployments", 404, 1);
    let addr = rt.block_on(api.serve_http());
    let dir = std::env::temp_dir().join(format!("cyan-kube-nocrd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("kubeconfig"),
        ApiServer::kubeconfig(addr, "default"),
    )
    .unwrap();
    std::fs::write(
        dir.join("cyan.yaml"),
        "app: web\nimage: 127.0.0.1:5000/never-built\nplatform: kubernetes\nport: 80\n",
    )
    .unwrap();
    let env = Env {
        kubeconfig: dir.join("kubeconfig"),
        dir,
    };
    let out = env.cyan(&["deploy", "--version", "1.0.0"]);
    assert_eq!(out.status.code(), Some(2), "{}", util::text(&out));
    assert!(
        util::text(&out).contains("CRD is not installed"),
        "{}",
        util::text(&out)
    );
    let _ = std::fs::remove_dir_all(&env.dir);
}
