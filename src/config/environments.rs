//! `environments:`: one file, several stages of one app (staging,
//! production, …), each written as what differs from the rest of the file.
//!
//! In the spirit of Kamal's destinations: the file's top level is what every
//! environment shares, and `environments.<name>` is a mapping merged over it
//! when `--environment <name>` is picked. Mappings merge key by key at every
//! depth (`proxy: { host: staging.example.com }` keeps the rest of `proxy`;
//! `env:` adds and replaces variables); any other value, lists included,
//! replaces the top level's; `null` puts a key back to its default.
//!
//! The merge is done on the YAML's values, and the merged document goes
//! through the one parser and the one validation a plain file does, so no
//! key has a second set of rules. What cannot differ between stages is
//! refused where it is written: the app (its routes and containers are
//! named by it), the image and its build (a promotion ships one digest from
//! stage to stage, so every stage must run the same repository).
//!
//! Errors in the merged document are reported in the user's file: at the
//! environment's own key when it wrote one, else at the top level's, with
//! the environment named.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use sha2::Digest as _;

use super::locate;
use super::{Config, Name};
use crate::error::{Error, Result};

/// Keys every environment shares, and why.
const SHARED: [(&str, &str); 6] = [
    ("app", "containers, routes and records are named by it"),
    (
        "image",
        "a promotion runs the one digest every stage tested",
    ),
    ("build", "one image is built once for every stage"),
    ("serve", "one cyan serve deploys every stage of the app"),
    (
        "environment",
        "the environment's name is its key under environments",
    ),
    ("environments", "environments do not nest"),
];

/// One environment's mapping, as written. Its values are checked when the
/// environment is picked, by the same parser as the top level's.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Overrides(Map<String, Value>);

impl<'de> Deserialize<'de> for Overrides {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Object(map) => Ok(Overrides(map)),
            Value::Null => Ok(Overrides::default()),
            _ => Err(serde::de::Error::custom(
                "an environment is a mapping of the keys that differ from the top level (e.g. proxy: { host: staging.example.com })",
            )),
        }
    }
}

/// Which of the file's environments a command acts on: `Ok(None)` for a
/// file without `environments:` (the top level as written), else the name.
///
/// Errors (`Error::Config`): a file with environments and no `wanted`
/// (deploying to production by default is a 3 a.m. surprise, so the name
/// is asked for); a name the file does not have. On a file without
/// environments, `wanted` may only repeat its `environment:`.
pub(super) fn choose(base: &Config, wanted: Option<&str>, origin: &str) -> Result<Option<Name>> {
    let names = || {
        base.environments
            .keys()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match wanted {
        None if base.environments.is_empty() => Ok(None),
        None => Err(Error::Config(format!(
            "{origin} defines the environments {}: name one with --environment NAME (or CYAN_ENVIRONMENT)",
            names()
        ))),
        Some(w) if base.environments.is_empty() && base.environment.as_str() == w => Ok(None),
        Some(w) if base.environments.is_empty() => Err(Error::Config(format!(
            "{origin} has no environments: section and its environment is {}, not {w:?}; add `environments: {{ {w}: {{}} }}` with what differs there",
            base.environment
        ))),
        Some(w) => base
            .environments
            .keys()
            .find(|n| n.as_str() == w)
            .cloned()
            .map(Some)
            .ok_or_else(|| {
                Error::Config(format!(
                    "{origin} has no environment {w:?}; it has {}",
                    names()
                ))
            }),
    }
}

/// The keys an environment may not set, as the error to give at the first.
pub(super) fn shared_key_set(base: &Config, text: &str, origin: &str) -> Result<()> {
    for (name, overrides) in &base.environments {
        if let Some((key, why)) = SHARED.iter().find(|(k, _)| overrides.0.contains_key(*k)) {
            return Err(locate::at_key(
                text,
                origin,
                &["environments", name.as_str(), key],
                &format!(
                    "{key} is the same in every environment ({why}): set it at the top of the file"
                ),
            ));
        }
    }
    Ok(())
}

/// The document for environment `name`: the file's top level with
/// `environments` taken out, `environment: <name>`, and the environment's
/// mapping merged over it; as YAML text, for the one parser.
pub(super) fn merged(text: &str, base: &Config, name: &Name) -> Result<String> {
    let mut doc: Map<String, Value> = serde_saphyr::from_str(text)
        .map_err(|e| Error::Config(format!("cannot read the file as a mapping: {e}")))?;
    doc.remove("environments");
    doc.insert("environment".into(), Value::String(name.to_string()));
    let overrides = base.environments.get(name).cloned().unwrap_or_default();
    merge(&mut doc, overrides.0);
    serde_saphyr::to_string(&Value::Object(doc))
        .map_err(|e| Error::Config(format!("cannot merge environment {name}: {e}")))
}

/// Merges `over` into `into`: mappings key by key at every depth; any other
/// value replaces; `null` removes the key (its default applies).
fn merge(into: &mut Map<String, Value>, over: Map<String, Value>) {
    for (key, value) in over {
        match (into.get_mut(&key), value) {
            (_, Value::Null) => {
                into.remove(&key);
            }
            (Some(Value::Object(inner)), Value::Object(over)) => merge(inner, over),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// Where a key of the picked document is written in the user's file.
pub(super) struct Locator<'a> {
    pub text: &'a str,
    pub origin: &'a str,
    /// The picked environment, if the document was merged.
    pub environment: Option<&'a str>,
}

impl Locator<'_> {
    /// `message` at `path`: under the environment's mapping when it wrote
    /// the key's top-level section, else at the top level, naming the
    /// environment.
    pub fn key(&self, path: &[&str], message: &str) -> Error {
        let Some(env) = self.environment else {
            return locate::at_key(self.text, self.origin, path, message);
        };
        let mut within = vec!["environments", env];
        within.extend_from_slice(path);
        if locate::is_written(self.text, &within[..3.min(within.len())]) {
            return locate::at_key(self.text, self.origin, &within, message);
        }
        locate::at_key(
            self.text,
            self.origin,
            path,
            &format!("{message} (in environment {env})"),
        )
    }

    /// A parse error of the merged document (`merged`), reported in the file.
    pub fn parse_error(&self, e: &serde_saphyr::Error, merged: &str) -> Error {
        let message = locate::message_of(e);
        let path = e
            .location()
            .filter(|l| l.line() > 0)
            .map(|l| locate::key_path_at(merged, l.line() as usize))
            .unwrap_or_default();
        let parts: Vec<&str> = path.split('.').filter(|p| !p.is_empty()).collect();
        self.key(&parts, &message)
    }
}

impl Config {
    /// A branch's own copy of this environment (`--branch`): named
    /// `<environment>-<branch>`, served at `<branch>.<proxy.host>` only (no
    /// other host, listen address or preview, which the environment itself
    /// holds), one replica, no approval.
    ///
    /// Errors (`Error::Config`): a branch that is not a DNS label, or an
    /// environment with no `proxy.host` to put it under.
    pub fn for_branch(mut self, branch: &str) -> Result<Config> {
        let label = branch.len() <= 40
            && !branch.is_empty()
            && branch
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !branch.starts_with('-')
            && !branch.ends_with('-');
        if !label {
            return Err(Error::Config(format!(
                "--branch {branch:?} must be a DNS label: at most 40 lowercase letters, digits and '-', not starting or ending with '-'"
            )));
        }
        let Some(host) = self.proxy.host.take() else {
            return Err(Error::Config(format!(
                "a branch's environment is served at <branch>.<proxy.host>, and {} has no proxy.host",
                self.environment
            )));
        };
        // A name's 40 characters: a long one keeps its start and a hash of
        // the whole, so two branches never share an environment.
        let mut name = format!("{}-{branch}", self.environment);
        if name.len() > 40 {
            let hash = sha2::Sha256::digest(name.as_bytes());
            let mut head = name[..31].trim_end_matches('-').to_string();
            head.push('-');
            head.extend(hash.iter().take(4).map(|b| format!("{b:02x}")));
            name = head;
        }
        if self.environments.keys().any(|e| e.as_str() == name) {
            return Err(Error::Config(format!(
                "--branch {branch}: its environment would be {name}, which is one of the file's environments; a branch never takes over a stage (rename the branch or the environment)"
            )));
        }
        self.environment =
            Name::parse(&name).map_err(|e| Error::Config(format!("--branch {branch}: {e}")))?;
        self.proxy.host = Some(format!("{branch}.{host}"));
        self.proxy.hosts.clear();
        self.proxy.listen = None;
        self.proxy.preview = None;
        self.replicas = std::num::NonZeroU32::MIN;
        self.require_approval = false;
        Ok(self)
    }
}
