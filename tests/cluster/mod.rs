//! A real Kubernetes control plane for the tests: kube-apiserver,
//! kube-controller-manager and etcd as `../shared/tools/real-kube-apiserver`
//! starts them (`.ci/run` does, and names the admin kubeconfig in
//! `CYAN_REAL_KUBECONFIG`). There is no scheduler and no kubelet: each test
//! runs the test kubelet (`kubelet`) for its own namespace, with pod
//! addresses in a network namespace (`netns`).
//!
//! Once per run, as an operator's installer would: the CRD is applied with
//! kubectl's client-side validation on, then `manifests/rbac.yaml`; the
//! operator then runs as its ServiceAccount (a token the controller
//! manager issues), so a verb missing from the ClusterRole fails a test
//! with the real authorizer's words. The CLI runs as a ServiceAccount
//! bound to `manifests/cli-role.yaml`.

#![allow(dead_code)]

pub mod kubelet;
pub mod netns;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;

use crate::util;
use netns::Netns;

/// The node the test kubelet binds pods to.
pub const NODE: &str = "cyan-test-node";
/// Where the environment names the control plane's admin kubeconfig.
const ENV: &str = "CYAN_REAL_KUBECONFIG";

pub struct ControlPlane {
    admin: PathBuf,
    server: String,
    ca: String,
    /// The operator's ServiceAccount (`manifests/rbac.yaml`).
    operator: PathBuf,
    dir: PathBuf,
    netns: Netns,
}

/// The control plane, set up once per test binary; `None` when there is
/// none to use (a skip outside CI, a failure in CI).
pub fn control_plane() -> Option<&'static ControlPlane> {
    static PLANE: OnceLock<Option<ControlPlane>> = OnceLock::new();
    PLANE
        .get_or_init(|| {
            let admin = std::env::var_os(ENV).map(PathBuf::from);
            let provided = ".ci/run starts ../shared/tools/real-kube-apiserver and sets it";
            if !util::present_or_skipped(admin.is_some(), &format!("{ENV} is not set"), provided) {
                return None;
            }
            let root = unsafe { libc::geteuid() } == 0;
            if !util::present_or_skipped(
                root,
                "not root: the test kubelet needs a network namespace",
                "CI runs as root",
            ) {
                return None;
            }
            Some(ControlPlane::set_up(admin.unwrap()))
        })
        .as_ref()
}

/// Runs kubectl with `kubeconfig`; the output, whatever the exit.
pub fn kubectl_with(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl (Debian's kubernetes-client)");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        std::io::Write::write_all(&mut input, text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl ControlPlane {
    fn set_up(admin: PathBuf) -> ControlPlane {
        let run = |args: &[&str], stdin: Option<&str>| ok(args, kubectl_with(&admin, args, stdin));
        let manifests = util::repo_root().join("manifests");
        let file = |name: &str| manifests.join(name).display().to_string();
        run(&["apply", "--validate=true", "-f", &file("crd.yaml")], None);
        run(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/bluegreendeployments.cyan.dev",
            ],
            None,
        );
        run(
            &["apply", "--validate=true", "-f", &file("rbac.yaml")],
            None,
        );
        run(
            &["apply", "-f", "-"],
            Some(&format!(
                "{{\"apiVersion\":\"v1\",\"kind\":\"Node\",\"metadata\":{{\"name\":\"{NODE}\"}}}}"
            )),
        );
        let server = run(
            &[
                "config",
                "view",
                "--raw",
                "-o",
                "jsonpath={.clusters[0].cluster.server}",
            ],
            None,
        );
        let ca = run(
            &[
                "config",
                "view",
                "--raw",
                "-o",
                "jsonpath={.clusters[0].cluster.certificate-authority}",
            ],
            None,
        );
        let dir = std::env::temp_dir().join(format!("cyan-real-kube-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plane = ControlPlane {
            admin,
            server,
            ca,
            operator: dir.join("operator.kubeconfig"),
            dir,
            netns: Netns::create().unwrap_or_else(|e| panic!("the test kubelet's network: {e}")),
        };
        let token = plane.token("cyan-system", "cyan-operator");
        std::fs::write(&plane.operator, plane.kubeconfig(&token, "cyan-system")).unwrap();
        plane
    }

    pub fn admin(&self) -> &Path {
        &self.admin
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// The token of ServiceAccount `ns/name`, once the controller manager
    /// has issued it (a Secret, as Kubernetes before 1.24 does).
    pub fn token(&self, ns: &str, name: &str) -> String {
        let get = |args: &[&str]| {
            let out = kubectl_with(&self.admin, args, None);
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        util::wait::until(
            &format!("a token for ServiceAccount {ns}/{name}"),
            Duration::from_secs(30),
            Duration::from_millis(200),
            || {
                let secret = get(&[
                    "-n",
                    ns,
                    "get",
                    "sa",
                    name,
                    "-o",
                    "jsonpath={.secrets[0].name}",
                ]);
                if secret.is_empty() {
                    return None;
                }
                let token = get(&[
                    "-n",
                    ns,
                    "get",
                    "secret",
                    &secret,
                    "-o",
                    "go-template={{.data.token | base64decode}}",
                ]);
                (!token.is_empty()).then_some(token)
            },
            String::new,
        )
    }

    /// A kubeconfig for `token`, in namespace `ns`.
    pub fn kubeconfig(&self, token: &str, ns: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters: [{{name: real, cluster: {{server: \"{}\", certificate-authority: \"{}\"}}}}]\n\
             users: [{{name: sa, user: {{token: \"{token}\"}}}}]\n\
             contexts: [{{name: real, context: {{cluster: real, user: sa, namespace: {ns}}}}}]\n\
             current-context: real\n",
            self.server, self.ca
        )
    }
}

/// One test's namespace on the control plane, with the test kubelet
/// running its pods; dropping it stops the operators it started and
/// deletes the namespace.
pub struct Space {
    pub ns: String,
    pub plane: &'static ControlPlane,
    pub rt: tokio::runtime::Runtime,
    pub client: kube::Client,
    pub dir: PathBuf,
    operators: Mutex<Vec<(u32, PathBuf)>>,
}

impl Space {
    /// A fresh namespace `cyan-<tag>-<5 hex digits>`; `None` when the control plane
    /// is not here (see `control_plane`).
    pub fn new(tag: &str) -> Option<Space> {
        let plane = control_plane()?;
        // etcd keeps what earlier runs left: a name of this moment.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let ns = format!("cyan-{tag}-{:05x}", nanos >> 12);
        let dir = plane.dir.join(&ns);
        std::fs::create_dir_all(&dir).unwrap();
        ok(
            &["create ns"],
            kubectl_with(&plane.admin, &["create", "ns", &ns], None),
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(async {
            let config = kube::Config::from_custom_kubeconfig(
                kube::config::Kubeconfig::read_from(&plane.admin).unwrap(),
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .unwrap();
            kube::Client::try_from(config).unwrap()
        });
        rt.spawn(kubelet::run(
            client.clone(),
            ns.clone(),
            NODE.into(),
            &plane.netns,
        ));
        Some(Space {
            ns,
            plane,
            rt,
            client,
            dir,
            operators: Mutex::new(Vec::new()),
        })
    }

    /// kubectl as the cluster's admin, in this namespace.
    pub fn kubectl_out(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut all = vec!["-n", &self.ns];
        all.extend_from_slice(args);
        kubectl_with(&self.plane.admin, &all, stdin)
    }

    pub fn kubectl(&self, args: &[&str]) -> String {
        ok(args, self.kubectl_out(args, None))
    }

    /// `kubectl apply` of a JSON or YAML object, with client-side
    /// validation on.
    pub fn apply(&self, object: &Value) {
        let args = ["apply", "--validate=true", "-f", "-"];
        ok(&args, self.kubectl_out(&args, Some(&object.to_string())));
    }

    /// An object as JSON (`kind/name`), or `Null` when there is none.
    pub fn get(&self, what: &str) -> Value {
        let out = self.kubectl_out(&["get", what, "-o", "json"], None);
        if !out.status.success() {
            return Value::Null;
        }
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The ready addresses Endpoints `name` lists, sorted.
    pub fn endpoints(&self, name: &str) -> Vec<String> {
        let ep = self.get(&format!("endpoints/{name}"));
        let mut ips: Vec<String> = ep["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["addresses"].as_array().into_iter().flatten())
            .filter_map(|a| a["ip"].as_str().map(String::from))
            .collect();
        ips.sort();
        ips
    }

    /// The addresses of the running pods of `color`, sorted.
    pub fn pod_ips(&self, color: &str) -> Vec<String> {
        let out = self.kubectl(&[
            "get",
            "pods",
            "-l",
            &format!("cyan.dev/color={color}"),
            "-o",
            "json",
        ]);
        let pods: Value = serde_json::from_str(&out).unwrap();
        let mut ips: Vec<String> = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter_map(|p| p["status"]["podIP"].as_str().map(String::from))
            .collect();
        ips.sort();
        ips
    }

    /// A Service `name` on port 80 to the pods' 8080, with `selector`.
    pub fn service(&self, name: &str, selector: Value) {
        self.apply(&serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": name },
            "spec": {
                "selector": selector,
                "ports": [{ "port": 80, "targetPort": 8080 }],
            },
        }));
    }

    /// Starts `cyan operator` for this namespace as the manifests'
    /// ServiceAccount; its log is `<dir>/<identity>.log`.
    pub fn operator(&self, identity: &str) -> Operator {
        let log = self.dir.join(format!("{identity}.log"));
        let port = util::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_cyan"))
            .args(["operator", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--namespace", &self.ns, "--lease-namespace", "cyan-system"])
            .args(["--identity", identity])
            .env("KUBECONFIG", &self.plane.operator)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        self.operators
            .lock()
            .unwrap()
            .push((child.id(), log.clone()));
        Operator { child, log, port }
    }

    /// A kubeconfig for this namespace as ServiceAccount `cyan-cli`, bound
    /// to `manifests/cli-role.yaml` and nothing else (made on first use).
    pub fn cli_kubeconfig(&self) -> PathBuf {
        let path = self.dir.join("cli.kubeconfig");
        if path.exists() {
            return path;
        }
        let role = util::repo_root().join("manifests/cli-role.yaml");
        self.kubectl(&[
            "apply",
            "--validate=true",
            "-f",
            &role.display().to_string(),
        ]);
        self.kubectl(&["create", "sa", "cyan-cli"]);
        self.kubectl(&[
            "create",
            "rolebinding",
            "cyan-cli",
            "--role=cyan-cli",
            &format!("--serviceaccount={}:cyan-cli", self.ns),
        ]);
        let token = self.plane.token(&self.ns, "cyan-cli");
        std::fs::write(&path, self.plane.kubeconfig(&token, &self.ns)).unwrap();
        path
    }

    /// Waits up to `limit` for `check`, failing with the operators' logs
    /// and the BlueGreenDeployments' status.
    pub fn wait<T>(&self, what: &str, limit: Duration, check: impl FnMut() -> Option<T>) -> T {
        util::wait::until(what, limit, Duration::from_millis(200), check, || {
            self.report()
        })
    }

    /// How things stand, for a failure's message.
    pub fn report(&self) -> String {
        let mut out = String::new();
        for (_, log) in self.operators.lock().unwrap().iter() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            out += &format!("--- {}\n", log.display());
            for line in tail.into_iter().rev() {
                out += line;
                out.push('\n');
            }
        }
        let state = self.kubectl_out(&["get", "bgd,deploy,pods,endpoints", "-o", "wide"], None);
        out += &String::from_utf8_lossy(&state.stdout);
        let status = self.kubectl_out(&["get", "bgd", "-o", "jsonpath={.items[*].status}"], None);
        out += &String::from_utf8_lossy(&status.stdout);
        out
    }
}

impl Drop for Space {
    fn drop(&mut self) {
        for (pid, _) in self.operators.lock().unwrap().iter() {
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
        let _ = self.kubectl_out(&["delete", "ns", &self.ns, "--wait=false"], None);
        // The pods the namespace's deletion ends are bound to a node with no
        // kubelet left; end them now.
        let _ = self.kubectl_out(
            &["delete", "pods", "--all", "--force", "--grace-period=0"],
            None,
        );
    }
}

/// A `cyan operator` process; killed when dropped.
pub struct Operator {
    pub child: Child,
    pub log: PathBuf,
    pub port: u16,
}

impl Operator {
    /// Its `/metrics` text.
    pub fn metrics(&self) -> String {
        util::http_get(&format!("127.0.0.1:{}", self.port), "operator", "/metrics").1
    }

    /// A counter's value from `/metrics` (0 when absent).
    pub fn counter(&self, name: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        util::wait::until(
            "the operator's exit after SIGTERM",
            Duration::from_secs(20),
            Duration::from_millis(100),
            || self.child.try_wait().unwrap(),
            String::new,
        )
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill9();
    }
}
