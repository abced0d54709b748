//! What a release runs with besides its image (`Runtime`): how a config
//! gives it to be recorded, takes a recorded one back for a cold rollback,
//! and says which keys differ.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;

use serde::{Deserialize, Serialize};

use super::{default_stop_timeout, Config, Dur, HealthConfig};
use crate::record::DeployRecord;
use crate::release::ReleaseKey;

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

impl Runtime {
    /// What `release` ran with when it passed its gate, as `record` holds
    /// it: the first entry for it this cyan can read (`None`: none
    /// recorded, or only in another cyan's shape).
    pub fn recorded(record: &DeployRecord, release: &ReleaseKey) -> Option<Runtime> {
        record
            .runtimes_of(release)
            .find_map(|v| serde_json::from_value(v.clone()).ok())
    }

    /// As the record keeps it (JSON; the planner's crate never reads it).
    pub fn to_record(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a runtime serializes to JSON")
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use cyan_plan::sim::key;

    /// A record as another cyan may have written it: for v2 an entry of
    /// another shape first, then a readable one; `runtimes` itself may not
    /// even be a list.
    #[test]
    fn a_recorded_runtime_is_the_first_this_cyan_can_read() {
        let readable = serde_json::json!({"port": 8080, "replicas": 2, "env": {"MODE": "two"}});
        let record: DeployRecord = serde_json::from_value(serde_json::json!({
            "history": [],
            "runtimes": [
                {"release": key("2"), "runtime": {"shape": "from cyan 2.0"}},
                {"release": key("2"), "runtime": readable},
                {"release": key("3"), "runtime": {"shape": "from cyan 2.0"}},
            ],
        }))
        .unwrap();
        let two = Runtime::recorded(&record, &key("2")).expect("the readable entry");
        assert_eq!(two.env["MODE"], "two");
        assert!(Runtime::recorded(&record, &key("3")).is_none());
        assert!(Runtime::recorded(&record, &key("4")).is_none());

        let history = serde_json::json!([{
            "release": {"version": "1", "revision": 1, "image_id": "sha256:1",
                        "digest": null, "config_hash": "c0ffee"},
            "event": "promoted", "color": "blue", "at": "2026-11-30T00:00:00Z"
        }]);
        let record: DeployRecord = serde_json::from_value(serde_json::json!({
            "history": history,
            "runtimes": {"2": {"port": 8080}},
        }))
        .expect("a runtimes field of another shape does not break the record");
        assert!(record.runtimes.is_empty());
        assert_eq!(record.history.len(), 1, "the history survives it");
    }
}
