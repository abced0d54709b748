//! The real `cyan` binary against a cluster: deploy (build, push to the
//! local registry, write the BlueGreenDeployment, follow it), approval and
//! promote, rollback, status, history and a refused abort; and the same
//! commands' reports on Docker and on Kubernetes, key for key.
//!
//! The cluster is the in-memory API server served over loopback HTTP, with
//! the operator's reconcile and a simulated Deployment controller running
//! beside it in this process; pods live on 127.0.0.1, where a loopback
//! server answers the HTTP gates. Needs Docker and the registry on
//! 127.0.0.1:5000 (`.ci/run` starts both).

mod apiserver;
mod util;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use apiserver::{ApiServer, Backend, BGDS, SERVICES as SVCS};
use cyan::operator::controller;
use cyan::operator::crd::BlueGreenDeployment;
use kube::api::{Api, ListParams};
use serde_json::{json, Value};
use util::{reports, TestApp};

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
    dir: PathBuf,
    kubeconfig: PathBuf,
}

impl Env {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cyan"));
        cmd.args(args)
            .arg("-c")
            .arg(self.dir.join("cyan.yaml"))
            .env("KUBECONFIG", &self.kubeconfig)
            .env("CI", "true")
            .env_remove("RUST_LOG");
        cmd
    }

    fn cyan(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        util::succeeded(args, &self.cyan(args))
    }
}

/// Whether the registry the cluster pulls from runs (in CI it must).
fn registry_up() -> bool {
    let registry = "127.0.0.1:5000";
    let up = std::net::TcpStream::connect(registry).is_ok();
    util::present_or_skipped(
        up,
        &format!("no registry on {registry}"),
        "CI must run one: .ci/run starts Debian's docker-registry",
    )
}

/// A cluster with the operator running beside it and the pods' HTTP
/// answered on loopback, and a cyan.yaml for app `name` (image
/// `127.0.0.1:5000/cyan-test-{name}`) on it.
struct Cluster {
    api: ApiServer,
    env: Env,
    name: String,
    _rt: tokio::runtime::Runtime,
}

impl Cluster {
    fn start(name: &str) -> Cluster {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let api = ApiServer::new();
        let addr = rt.block_on(api.serve_http());
        api.put_service(name, json!({ "app.kubernetes.io/name": name }));
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
        Cluster {
            api,
            env: Env { dir, kubeconfig },
            name: name.to_string(),
            _rt: rt,
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.env.dir);
    }
}

#[test]
fn the_cli_deploys_promotes_and_rolls_back_through_the_operator() {
    if !registry_up() {
        return;
    }
    let cluster = Cluster::start(&format!("k{}", std::process::id()));
    let (api, env, name) = (&cluster.api, &cluster.env, &cluster.name);

    let out = env.ok(&["deploy", "--version", "1.0.0"]);
    assert!(out.contains("1.0.0 is live on blue"), "{out}");
    let bgd = api.get(BGDS, name).unwrap();
    let image = bgd["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap();
    assert!(
        image.starts_with(&format!("127.0.0.1:5000/cyan-test-{name}:1.0.0@sha256:")),
        "the template pins the pushed digest: {image}"
    );

    let out = env.ok(&["deploy", "--version", "2.0.0", "--require-approval"]);
    assert!(out.contains("Approve with: cyan promote"), "{out}");
    assert_eq!(
        api.get(SVCS, name).unwrap()["spec"]["selector"]["cyan.dev/color"],
        "blue",
        "no switch before approval"
    );
    let status: Value = serde_json::from_str(&env.ok(&["status", "-o", "json"])).unwrap();
    assert_eq!(status["phase"], "awaiting-approval", "{status:#}");
    assert_eq!(status["candidate"]["version"], "2.0.0", "{status:#}");
    assert_eq!(status["candidate"]["gated"], true, "{status:#}");
    assert_eq!(status["version"], "1.0.0", "{status:#}");
    let out = env.ok(&["promote"]);
    assert!(out.contains("2.0.0 is live on green"), "{out}");

    let out = env.ok(&["rollback"]);
    assert!(out.contains("1.0.0 is live on blue"), "{out}");

    let status: Value = serde_json::from_str(&env.ok(&["status", "-o", "json"])).unwrap();
    assert_eq!(status["version"], "1.0.0", "{status:#}");
    assert_eq!(status["phase"], "live", "{status:#}");
    assert_eq!(status["namespace"], "default", "{status:#}");
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
    assert_eq!(flagged["version"], "1.0.0");
    assert_eq!(flagged["platform"], "kubernetes");

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
}

/// `deploy`, `rollback`, `status` and `history` print one contract on
/// Docker and on Kubernetes: the same JSON keys, and under `-o github` (the
/// Action) the same step outputs. One image serves both apps, so both
/// report the same image and digest.
#[test]
fn docker_and_kubernetes_print_the_same_reports() {
    if !registry_up() {
        return;
    }
    let cluster = Cluster::start(&format!("k{}-same", std::process::id()));
    let kube = &cluster.env;
    let docker = TestApp::with_image(
        "same",
        "",
        Some(format!("127.0.0.1:5000/cyan-test-{}", cluster.name)),
    );
    let kube_run = |args: &[&str], vars: &[(&str, &Path)]| {
        let mut cmd = kube.command(args);
        cmd.envs(vars.iter().copied());
        cmd.output().unwrap()
    };
    let docker_run = |args: &[&str], vars: &[(&str, &Path)]| {
        let mut cmd = docker.command(args);
        cmd.envs(vars.iter().copied());
        cmd.output().unwrap()
    };
    let scratch = docker.dir.join("github");
    std::fs::create_dir_all(&scratch).unwrap();
    // The cluster first: it builds and pushes; Docker then uses that image.
    let k = reports::Reports::collect("kubernetes", &scratch, kube_run);
    let d = reports::Reports::collect("docker", &scratch, docker_run);

    reports::same_contract(&d, &k);
    for key in ["image", "digest"] {
        assert_eq!(
            d.deploy_outputs[key], k.deploy_outputs[key],
            "one image, one {key}"
        );
    }
    assert!(
        k.deploy_outputs["digest"].starts_with(&format!(
            "127.0.0.1:5000/cyan-test-{}@sha256:",
            cluster.name
        )),
        "{:?}",
        k.deploy_outputs
    );
    assert!(d.deploy_outputs["url"].starts_with("http://"));
    assert_eq!(
        k.deploy_outputs["url"], "",
        "a Service has no URL cyan knows"
    );
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
