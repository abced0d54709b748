//! A replica's container as cyan writes it to the engine, and as it reads
//! it back: pure functions, so they are tested without an engine (as
//! `platform::kube::objects` is without an API server).
//!
//! The labels are the Docker platform's memory: which app, environment,
//! color, release and replica a container is. Whatever `container_spec`
//! writes, `Managed::from_summary` must read back the same.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use bollard::models::{
    ContainerCreateBody, ContainerSummary, ContainerSummaryStateEnum, HostConfig, PortBinding,
    RestartPolicy, RestartPolicyNameEnum,
};

use crate::config::{Config, Secrets};
use crate::plan::SetState;
use crate::release::{Color, Release};

/// Container labels. `cyan.app` + `cyan.env` select an app's containers.
pub mod label {
    pub const MANAGED: &str = "cyan.managed";
    pub const APP: &str = "cyan.app";
    pub const ENV: &str = "cyan.env";
    pub const COLOR: &str = "cyan.color";
    pub const VERSION: &str = "cyan.version";
    pub const REVISION: &str = "cyan.revision";
    pub const CONFIG_HASH: &str = "cyan.config-hash";
    pub const IMAGE_ID: &str = "cyan.image-id";
    pub const DIGEST: &str = "cyan.digest";
    pub const REPLICA: &str = "cyan.replica";
    /// The container port the proxy's upstream is published from.
    pub const PORT: &str = "cyan.port";
}

/// One container cyan manages, as read from the engine.
#[derive(Debug, Clone)]
pub struct Managed {
    pub id: String,
    pub name: String,
    pub color: Color,
    pub release: Release,
    pub replica: u32,
    /// The engine's word for it: `running`, `created`, `exited`, …
    pub state: String,
    /// Where the host reaches it: its port published on 127.0.0.1, if any.
    pub addr: Option<SocketAddr>,
}

impl Managed {
    /// The replica a listed container is, from its labels and published
    /// ports; `None` for a container with no color label. `port` is
    /// today's `port`, for a container made before the port label.
    pub fn from_summary(s: ContainerSummary, port: u16) -> Option<Managed> {
        let labels = s.labels.unwrap_or_default();
        let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
        let color: Color = get(label::COLOR).parse().ok()?;
        // The port the container was made with (a release's own,
        // restored by a rollback), not today's `port`.
        let port = get(label::PORT).parse().unwrap_or(port);
        let addr = s.ports.unwrap_or_default().into_iter().find_map(|p| {
            let ip = p.ip.as_deref()?;
            let public = p.public_port?;
            (p.private_port == port && ip == "127.0.0.1")
                .then(|| SocketAddr::new([127, 0, 0, 1].into(), public))
        });
        Some(Managed {
            id: s.id.unwrap_or_default(),
            name: s
                .names
                .unwrap_or_default()
                .first()
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_default(),
            color,
            release: Release {
                version: get(label::VERSION),
                revision: get(label::REVISION).parse().unwrap_or(0),
                image_id: get(label::IMAGE_ID),
                digest: labels.get(label::DIGEST).cloned().filter(|d| !d.is_empty()),
                config_hash: get(label::CONFIG_HASH),
            },
            replica: get(label::REPLICA).parse().unwrap_or(0),
            state: s
                .state
                .unwrap_or(ContainerSummaryStateEnum::EMPTY)
                .to_string(),
            addr,
        })
    }
}

/// What the engine is asked to create for one replica of a release.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// `<app>-<environment>-<color>-<revision>-<replica>`: one name per
    /// replica of a release, so a create that a killed run left behind
    /// takes the name this run wants.
    pub name: String,
    pub body: ContainerCreateBody,
}

impl ContainerSpec {
    /// Whether a container labeled `found` is this very replica of this
    /// release (a killed run's create, to adopt rather than refuse).
    pub fn made_by(&self, found: &HashMap<String, String>) -> bool {
        self.body
            .labels
            .iter()
            .flatten()
            .all(|(k, v)| found.get(k) == Some(v))
    }
}

/// The container for `replica` of `release` in `color`, on `network`.
///
/// Its env is cyan.yaml's `env`, then the secrets (their one way out: the
/// env goes to the engine and nowhere else, never into a label), then
/// `CYAN_COLOR` and `CYAN_VERSION`. Its `port` is published on 127.0.0.1
/// at a port the engine picks, and recorded in a label, so a later
/// `port` does not hide where an older release listens.
pub fn container_spec(
    config: &Config,
    secrets: &Secrets,
    release: &Release,
    color: Color,
    replica: u32,
    network: &str,
) -> ContainerSpec {
    let name = format!(
        "{}-{}-{color}-{}-{replica}",
        config.app, config.environment, release.revision
    );
    let labels: HashMap<String, String> = [
        (label::MANAGED, "true".to_string()),
        (label::APP, config.app.to_string()),
        (label::ENV, config.environment.to_string()),
        (label::COLOR, color.to_string()),
        (label::VERSION, release.version.clone()),
        (label::REVISION, release.revision.to_string()),
        (label::CONFIG_HASH, release.config_hash.clone()),
        (label::IMAGE_ID, release.image_id.clone()),
        (label::DIGEST, release.digest.clone().unwrap_or_default()),
        (label::REPLICA, replica.to_string()),
        (label::PORT, config.port.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut env: Vec<String> = config.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.extend(secrets.expose_as_env());
    env.push(format!("CYAN_COLOR={color}"));
    env.push(format!("CYAN_VERSION={}", release.version));
    let port = format!("{}/tcp", config.port);
    let bindings = HashMap::from([(
        port.clone(),
        Some(vec![PortBinding {
            host_ip: Some("127.0.0.1".into()),
            host_port: Some(String::new()),
        }]),
    )]);
    let body = ContainerCreateBody {
        image: Some(release.image_id.clone()),
        env: Some(env),
        cmd: config.command.clone(),
        labels: Some(labels),
        exposed_ports: Some(vec![port]),
        stop_timeout: Some(config.stop_timeout.0.as_secs() as i64),
        host_config: Some(HostConfig {
            port_bindings: Some(bindings),
            network_mode: Some(network.into()),
            init: Some(config.init),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    };
    ContainerSpec { name, body }
}

/// Each color's set as the planner sees it (`Observed::sets`): the release
/// its containers share (`None` when they disagree), and how many are
/// running, created but never started, or stopped.
pub fn set_states(containers: &[Managed]) -> BTreeMap<Color, SetState> {
    let mut sets: BTreeMap<Color, SetState> = BTreeMap::new();
    for m in containers {
        let s = sets.entry(m.color).or_insert_with(|| SetState {
            release: Some(m.release.key()),
            ..SetState::default()
        });
        if s.release.as_ref() != Some(&m.release.key()) {
            s.release = None;
        }
        s.total += 1;
        match m.state.as_str() {
            "running" => s.running += 1,
            "created" => s.created += 1,
            _ => s.exited += 1,
        }
    }
    sets
}

#[cfg(test)]
mod tests {
    use bollard::models::PortSummary;

    use super::*;

    const CONFIG: &str = "\
app: web
environment: staging
image: 127.0.0.1:5000/web
port: 8080
replicas: 2
env: { LOG: debug, A_FIRST: '1' }
secrets: [DB_PASSWORD]
command: [/app, --serve]
init: true
stop_timeout: 25s
proxy: { host: web.localhost }
";

    fn config() -> Config {
        Config::parse(CONFIG, "cyan.yaml").unwrap()
    }

    fn release() -> Release {
        Release {
            version: "v7".into(),
            revision: 3,
            image_id: "sha256:abc".into(),
            digest: None,
            config_hash: "h1".into(),
        }
    }

    fn spec_of(config: &Config, release: &Release, color: Color, replica: u32) -> ContainerSpec {
        let secrets = Secrets::with(&[("DB_PASSWORD", "hunter2")], &[7u8; 32]);
        container_spec(config, &secrets, release, color, replica, "net-id")
    }

    /// What the engine lists for a container made from `spec`, published
    /// on `published` (container port, host ip, host port).
    fn listed(
        spec: &ContainerSpec,
        state: &str,
        published: &[(u16, &str, u16)],
    ) -> ContainerSummary {
        ContainerSummary {
            id: Some(format!("id-{}", spec.name)),
            names: Some(vec![format!("/{}", spec.name)]),
            labels: spec.body.labels.clone(),
            state: Some(serde_json::from_value(state.into()).unwrap()),
            ports: Some(
                published
                    .iter()
                    .map(|&(private, ip, public)| PortSummary {
                        ip: Some(ip.into()),
                        private_port: private,
                        public_port: Some(public),
                        ..PortSummary::default()
                    })
                    .collect(),
            ),
            ..ContainerSummary::default()
        }
    }

    #[test]
    fn the_name_and_labels_say_which_replica_of_which_release() {
        let spec = spec_of(&config(), &release(), Color::Green, 1);
        assert_eq!(spec.name, "web-staging-green-3-1");
        let labels = spec.body.labels.as_ref().unwrap();
        let want = [
            (label::MANAGED, "true"),
            (label::APP, "web"),
            (label::ENV, "staging"),
            (label::COLOR, "green"),
            (label::VERSION, "v7"),
            (label::REVISION, "3"),
            (label::CONFIG_HASH, "h1"),
            (label::IMAGE_ID, "sha256:abc"),
            (label::DIGEST, ""),
            (label::REPLICA, "1"),
            (label::PORT, "8080"),
        ];
        assert_eq!(labels.len(), want.len(), "{labels:?}");
        for (k, v) in want {
            assert_eq!(labels.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert_eq!(spec.body.image.as_deref(), Some("sha256:abc"));
    }

    #[test]
    fn env_is_the_config_then_the_secrets_then_cyan_s_own_and_secrets_stay_out_of_labels() {
        let spec = spec_of(&config(), &release(), Color::Blue, 0);
        assert_eq!(
            spec.body.env.as_deref().unwrap(),
            [
                "A_FIRST=1",
                "LOG=debug",
                "DB_PASSWORD=hunter2",
                "CYAN_COLOR=blue",
                "CYAN_VERSION=v7"
            ]
        );
        let labels = spec.body.labels.as_ref().unwrap();
        assert!(
            labels
                .iter()
                .all(|(k, v)| !k.contains("hunter2") && !v.contains("hunter2")),
            "{labels:?}"
        );
    }

    #[test]
    fn the_port_is_published_on_loopback_only_and_the_runtime_follows_the_config() {
        let spec = spec_of(&config(), &release(), Color::Blue, 0);
        let body = &spec.body;
        assert_eq!(body.exposed_ports.as_deref().unwrap(), ["8080/tcp"]);
        assert_eq!(body.cmd.as_deref().unwrap(), ["/app", "--serve"]);
        assert_eq!(body.stop_timeout, Some(25));
        let host = body.host_config.as_ref().unwrap();
        let bindings = host.port_bindings.as_ref().unwrap();
        assert_eq!(bindings.len(), 1);
        let binding = bindings["8080/tcp"].as_deref().unwrap();
        assert_eq!(binding.len(), 1);
        assert_eq!(binding[0].host_ip.as_deref(), Some("127.0.0.1"));
        // Empty: the engine picks a free port.
        assert_eq!(binding[0].host_port.as_deref(), Some(""));
        assert_eq!(host.network_mode.as_deref(), Some("net-id"));
        assert_eq!(host.init, Some(true));
        assert_eq!(
            host.restart_policy.as_ref().unwrap().name,
            Some(RestartPolicyNameEnum::UNLESS_STOPPED)
        );

        let mut plain = config();
        plain.init = false;
        plain.command = None;
        let body = spec_of(&plain, &release(), Color::Blue, 0).body;
        assert_eq!(body.host_config.unwrap().init, Some(false));
        assert_eq!(body.cmd, None, "the image's own command");
    }

    #[test]
    fn a_listed_container_reads_back_as_the_replica_it_was_made() {
        let mut pushed = release();
        pushed.digest = Some("127.0.0.1:5000/web@sha256:def".into());
        for r in [release(), pushed] {
            let spec = spec_of(&config(), &r, Color::Green, 1);
            let s = listed(
                &spec,
                "running",
                &[
                    (8080, "0.0.0.0", 1111),
                    (9000, "127.0.0.1", 2222),
                    (8080, "127.0.0.1", 3333),
                ],
            );
            let m = Managed::from_summary(s, 8080).unwrap();
            assert_eq!(m.release, r, "the digest label is empty when not pushed");
            assert_eq!((m.color, m.replica), (Color::Green, 1));
            assert_eq!(m.name, "web-staging-green-3-1");
            assert_eq!(m.id, "id-web-staging-green-3-1");
            assert_eq!(m.state, "running");
            assert_eq!(
                m.addr,
                Some("127.0.0.1:3333".parse().unwrap()),
                "loopback, its port"
            );
        }
    }

    #[test]
    fn a_container_is_reached_on_the_port_it_was_made_with() {
        let mut old = config();
        old.port = 9000;
        let spec = spec_of(&old, &release(), Color::Blue, 0);
        let s = listed(
            &spec,
            "running",
            &[(8080, "127.0.0.1", 1111), (9000, "127.0.0.1", 2222)],
        );
        // Today's cyan.yaml says 8080; the container was made for 9000.
        let m = Managed::from_summary(s, 8080).unwrap();
        assert_eq!(m.addr, Some("127.0.0.1:2222".parse().unwrap()));

        let mut unlabeled = listed(&spec, "running", &[(8080, "127.0.0.1", 1111)]);
        unlabeled.labels.as_mut().unwrap().remove(label::PORT);
        let m = Managed::from_summary(unlabeled, 8080).unwrap();
        assert_eq!(
            m.addr,
            Some("127.0.0.1:1111".parse().unwrap()),
            "today's port"
        );

        let stopped = listed(&spec, "exited", &[]);
        assert_eq!(Managed::from_summary(stopped, 9000).unwrap().addr, None);

        let mut colorless = listed(&spec, "running", &[]);
        colorless.labels.as_mut().unwrap().remove(label::COLOR);
        assert!(Managed::from_summary(colorless, 9000).is_none());
    }

    #[test]
    fn only_this_replica_of_this_release_is_adopted() {
        let spec = spec_of(&config(), &release(), Color::Blue, 0);
        let same = spec.body.labels.clone().unwrap();
        assert!(spec.made_by(&same));
        let mut extra = same.clone();
        extra.insert("com.example.other".into(), "x".into());
        assert!(
            spec.made_by(&extra),
            "labels the engine or others add do not matter"
        );
        let mut other_release = same.clone();
        other_release.insert(label::CONFIG_HASH.into(), "h2".into());
        assert!(!spec.made_by(&other_release));
        assert!(!spec.made_by(&HashMap::new()));
    }

    #[test]
    fn a_color_s_set_counts_states_and_names_one_release_only_when_all_agree() {
        let c = config();
        let mut newer = release();
        newer.config_hash = "h2".into();
        let read = |r: &Release, color, replica, state| {
            let spec = spec_of(&c, r, color, replica);
            Managed::from_summary(listed(&spec, state, &[]), c.port).unwrap()
        };
        let containers = [
            read(&release(), Color::Blue, 0, "running"),
            read(&release(), Color::Blue, 1, "created"),
            read(&release(), Color::Green, 0, "running"),
            read(&newer, Color::Green, 1, "exited"),
            read(&newer, Color::Green, 2, "dead"),
        ];
        let sets = set_states(&containers);
        assert_eq!(
            sets[&Color::Blue],
            SetState {
                release: Some(release().key()),
                total: 2,
                running: 1,
                created: 1,
                ..SetState::default()
            }
        );
        assert_eq!(
            sets[&Color::Green],
            SetState {
                release: None,
                total: 3,
                running: 1,
                exited: 2,
                ..SetState::default()
            }
        );
        assert!(set_states(&[]).is_empty());
    }
}
