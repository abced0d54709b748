//! cyan.yaml as a BlueGreenDeployment: how the CLI describes an app to the
//! operator when `platform: kubernetes`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, ExecAction, HTTPGetAction, PodSpec, PodTemplateSpec, Probe,
    TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::config::{self, Config};
use crate::platform::kube::crd::{
    BlueGreenDeployment, BlueGreenDeploymentSpec, Gates, HttpCheck, Verify,
};

/// The label that selects the app's pods.
pub const APP_LABEL: &str = "app.kubernetes.io/name";

fn secs(d: std::time::Duration) -> u32 {
    d.as_secs().clamp(1, u64::from(u32::MAX)) as u32
}

pub fn bluegreen(c: &Config, image: &str, namespace: &str) -> BlueGreenDeployment {
    let app = c.app.to_string();
    let labels = BTreeMap::from([(APP_LABEL.to_string(), app.clone())]);
    let port = i32::from(c.port);
    // The gate's probe is the readiness probe: httpGet, tcpSocket or exec.
    let mut probe = Probe {
        period_seconds: Some(secs(c.health.interval.0) as i32),
        timeout_seconds: Some(secs(c.health.timeout.0) as i32),
        ..Probe::default()
    };
    match c.health.probe() {
        config::Probe::Http(http) => {
            probe.http_get = Some(HTTPGetAction {
                path: Some(http.path.clone()),
                port: IntOrString::Int(port),
                ..HTTPGetAction::default()
            })
        }
        config::Probe::Tcp => {
            probe.tcp_socket = Some(TCPSocketAction {
                port: IntOrString::Int(port),
                host: None,
            })
        }
        config::Probe::Command(argv) => {
            probe.exec = Some(ExecAction {
                command: Some(argv.to_vec()),
            })
        }
    }
    let container = Container {
        name: app.clone(),
        image: Some(image.to_string()),
        args: c.command.clone(),
        ports: Some(vec![ContainerPort {
            container_port: port,
            ..ContainerPort::default()
        }]),
        env: (!c.env.is_empty()).then(|| {
            c.env
                .iter()
                .map(|(k, v)| EnvVar {
                    name: k.clone(),
                    value: Some(v.clone()),
                    value_from: None,
                })
                .collect()
        }),
        readiness_probe: Some(probe),
        ..Container::default()
    };
    // Verify GETs through the active Service even when the gate is tcp or
    // command (the proxy on Docker judges HTTP answers too): `health.http`
    // as given, or `GET /`.
    let gate = HttpCheck {
        path: c.health.http_check().path,
        port: Some(c.port),
        url: None,
        expect_status: None,
        timeout_seconds: secs(c.health.timeout.0),
    };
    let k = &c.kubernetes;
    let spec = BlueGreenDeploymentSpec {
        replicas: c.replicas.get() as i32,
        selector: LabelSelector {
            match_labels: Some(labels.clone()),
            match_expressions: None,
        },
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels),
                ..ObjectMeta::default()
            }),
            spec: Some(PodSpec {
                containers: vec![container],
                termination_grace_period_seconds: Some(c.stop_timeout.0.as_secs() as i64),
                ..PodSpec::default()
            }),
        },
        active_service: k.active_service.clone().unwrap_or_else(|| app.clone()),
        preview_service: k.preview_service.clone(),
        preview_replicas: None,
        gates: Gates {
            min_ready_seconds: 0,
            // An HTTP gate on every pod only for an HTTP probe; tcp and
            // command are the readiness probe alone.
            http: match c.health.probe() {
                config::Probe::Http(_) => vec![gate.clone()],
                config::Probe::Tcp | config::Probe::Command(_) => Vec::new(),
            },
            skip_first_deploy: false,
        },
        // Verification probes the app through its active Service (port 80).
        verify: c.verify.as_ref().map(|v| Verify {
            duration_seconds: secs(v.duration.0),
            interval_seconds: secs(c.health.interval.0),
            failure_threshold: 3,
            http: Some(HttpCheck { port: None, ..gate }),
            prometheus: None,
        }),
        require_approval: c.require_approval,
        auto_promote_seconds: None,
        scale_down_delay_seconds: k
            .scale_down_delay
            .as_ref()
            .map_or(30, |d| d.0.as_secs() as u32),
        revision_history_limit: 10,
        paused: false,
        progress_deadline_seconds: k.progress_deadline.as_ref().map_or(600, |d| secs(d.0)),
    };
    let mut bgd = BlueGreenDeployment::new(&app, spec);
    bgd.metadata.namespace = Some(namespace.to_string());
    bgd.metadata.labels = Some(BTreeMap::from([(
        "app.kubernetes.io/managed-by".to_string(),
        "cyan".to_string(),
    )]));
    bgd
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::kube::objects;

    #[test]
    fn cyan_yaml_maps_to_a_valid_bluegreen_deployment() {
        let c = Config::parse(
            "app: web\nimage: 127.0.0.1:5000/web\nplatform: kubernetes\nport: 8080\nreplicas: 3\n\
             env: { MODE: fast }\nhealth: { http: { path: /healthz } }\nverify: { duration: 2m }\n\
             require_approval: true\nkubernetes: { active_service: web-svc, scale_down_delay: 45s }\n",
            "cyan.yaml",
        )
        .unwrap();
        let b = bluegreen(&c, "127.0.0.1:5000/web:1.2.0", "apps");
        objects::validate(&b).unwrap();
        assert_eq!(b.metadata.namespace.as_deref(), Some("apps"));
        assert_eq!(b.spec.replicas, 3);
        assert_eq!(b.spec.active_service, "web-svc");
        assert_eq!(b.spec.scale_down_delay_seconds, 45);
        assert!(b.spec.require_approval);
        assert_eq!(b.spec.gates.http[0].path, "/healthz");
        assert_eq!(b.spec.gates.http[0].port, Some(8080));
        assert_eq!(b.spec.verify.as_ref().unwrap().duration_seconds, 120);
        assert_eq!(objects::target(&b).version, "1.2.0");
        let pod = b.spec.template.spec.as_ref().unwrap();
        let container = &pod.containers[0];
        assert_eq!(container.env.as_ref().unwrap()[0].name, "MODE");
        assert_eq!(container.ports.as_ref().unwrap()[0].container_port, 8080);
        assert!(container.readiness_probe.is_some());
    }

    #[test]
    fn tcp_and_command_become_the_readiness_probe() {
        let with = |health: &str| {
            let c = Config::parse(
                &format!(
                    "app: web\nimage: 127.0.0.1:5000/web\nplatform: kubernetes\nport: 8080\n\
                     health: {health}\nverify: {{ duration: 1m }}\n"
                ),
                "cyan.yaml",
            )
            .unwrap();
            let b = bluegreen(&c, "127.0.0.1:5000/web:1", "apps");
            objects::validate(&b).unwrap();
            let probe = b.spec.template.spec.as_ref().unwrap().containers[0]
                .readiness_probe
                .clone()
                .unwrap();
            (b, probe)
        };
        let (b, probe) = with("{ tcp: true, timeout: 3s }");
        assert_eq!(
            probe.tcp_socket.as_ref().map(|t| &t.port),
            Some(&IntOrString::Int(8080))
        );
        assert!(probe.http_get.is_none() && probe.exec.is_none());
        assert_eq!(probe.timeout_seconds, Some(3));
        assert!(b.spec.gates.http.is_empty(), "readiness is the gate");
        assert_eq!(
            b.spec.verify.as_ref().unwrap().http.as_ref().unwrap().path,
            "/",
            "verify still GETs through the Service"
        );
        let (b, probe) = with("{ command: [/app, check, --quick] }");
        assert_eq!(
            probe.exec.and_then(|e| e.command).unwrap(),
            ["/app", "check", "--quick"]
        );
        assert!(probe.http_get.is_none() && probe.tcp_socket.is_none());
        assert!(b.spec.gates.http.is_empty());
        let (b, probe) = with("{ http: { path: /ready } }");
        assert_eq!(probe.http_get.unwrap().path.as_deref(), Some("/ready"));
        assert_eq!(b.spec.gates.http[0].path, "/ready");
    }

    #[test]
    fn kubernetes_configs_keep_secrets_in_the_cluster() {
        let secrets = Config::parse(
            "app: web\nimage: ghcr.io/a/web\nplatform: kubernetes\nport: 80\nsecrets: [TOKEN]\n",
            "cyan.yaml",
        )
        .unwrap_err();
        assert!(secrets.to_string().contains("cyan.yaml:5"), "{secrets}");
        assert!(
            secrets.to_string().contains("Kubernetes Secret"),
            "{secrets}"
        );
    }
}
