//! What a release runs with besides its image (`Runtime`): how a config
//! gives it to be recorded, takes a recorded one back for a cold rollback,
//! and says which keys differ.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;

use serde::{Deserialize, Serialize};

use super::{default_stop_timeout, Config, Dur, HealthConfig};

/// What a release runs with besides its image, as recorded when it passed
/// its gate (`DeployRecord::runtimes`): a cold rollback starts the old
/// image with this, not with today's file. Secrets are held by name only;
/// their values are read from cyan's environment again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Runtime {
    pub port: u16,
    pub replicas: NonZeroU32,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub secrets: Vec<String>,
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub init: bool,
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: Dur,
    #[serde(default)]
    pub health: HealthConfig,
}

impl Config {
    /// This config's `Runtime`, to record with a release.
    pub fn runtime(&self) -> Runtime {
        Runtime {
            port: self.port,
            replicas: self.replicas,
            env: self.env.clone(),
            secrets: self.secrets.clone(),
            command: self.command.clone(),
            init: self.init,
            stop_timeout: self.stop_timeout,
            health: self.health.clone(),
        }
    }

    /// This config with a recorded `Runtime` in place of its own; app,
    /// image, routing and verify stay today's.
    pub fn with_runtime(&self, r: &Runtime) -> Config {
        Config {
            port: r.port,
            replicas: r.replicas,
            env: r.env.clone(),
            secrets: r.secrets.clone(),
            command: r.command.clone(),
            init: r.init,
            stop_timeout: r.stop_timeout,
            health: r.health.clone(),
            ..self.clone()
        }
    }

    /// The runtime keys where `other` differs from this config, as a
    /// user reads them (`env MODE`, `port`, `health`), for saying what a
    /// cold rollback restores.
    pub fn runtime_changes(&self, other: &Runtime) -> Vec<String> {
        let mine = self.runtime();
        fn json<T: Serialize>(v: &T) -> serde_json::Value {
            serde_json::to_value(v).expect("runtime serializes")
        }
        let mut changed = Vec::new();
        let names: BTreeSet<&String> = mine.env.keys().chain(other.env.keys()).collect();
        for name in names {
            if mine.env.get(name) != other.env.get(name) {
                changed.push(format!("env {name}"));
            }
        }
        for (key, a, b) in [
            ("port", json(&mine.port), json(&other.port)),
            ("replicas", json(&mine.replicas), json(&other.replicas)),
            ("secrets", json(&mine.secrets), json(&other.secrets)),
            ("command", json(&mine.command), json(&other.command)),
            ("init", json(&mine.init), json(&other.init)),
            (
                "stop_timeout",
                json(&mine.stop_timeout),
                json(&other.stop_timeout),
            ),
            ("health", json(&mine.health), json(&other.health)),
        ] {
            if a != b {
                changed.push(key.to_string());
            }
        }
        changed
    }
}
