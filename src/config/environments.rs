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

/// One environment's mapping, as the file's first read sees it: the keys
/// it sets. Its values are read when the environment is picked (`merged`,
/// then the one parser), so a value only one stage uses never stops
/// another's commands.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Overrides(Vec<String>);

impl<'de> Deserialize<'de> for Overrides {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = Overrides;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an environment is a mapping of the keys that differ from the top level (e.g. proxy: { host: staging.example.com })")
            }
            fn visit_unit<E>(self) -> std::result::Result<Overrides, E> {
                Ok(Overrides::default())
            }
            fn visit_none<E>(self) -> std::result::Result<Overrides, E> {
                Ok(Overrides::default())
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Overrides, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    keys.push(key);
                }
                Ok(Overrides(keys))
            }
        }
        d.deserialize_any(Keys)
    }
}

/// How the file is read before an environment is picked: `.inf` and
/// `.nan` are scalars like any other (a string field reads them as written,
/// a number field refuses them), so a value one stage uses never stops
/// another's commands.
pub(super) fn yaml_options() -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    options.non_finite_float_policy = serde_saphyr::NonFiniteFloatPolicy::PassThrough;
    options
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
        if let Some((key, why)) = SHARED
            .iter()
            .find(|(k, _)| overrides.0.iter().any(|o| o == k))
        {
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
pub(super) fn merged(text: &str, name: &Name) -> Result<String> {
    let Node::Map(mut doc) = Node::read(text)? else {
        return Err(Error::Config("the file is not a mapping of keys".into()));
    };
    let overrides = doc
        .iter()
        .find(|(k, _)| k == "environments")
        .and_then(|(_, envs)| match envs {
            Node::Map(envs) => envs
                .iter()
                .find(|(k, _)| k == name.as_str())
                .map(|(_, v)| v.clone()),
            _ => None,
        })
        .unwrap_or(Node::Map(Vec::new()));
    doc.retain(|(k, _)| k != "environments" && k != "environment");
    doc.push(("environment".into(), Node::Str(name.to_string())));
    let mut doc = Node::Map(doc);
    doc.merge(overrides);
    let mut out = String::new();
    doc.emit(0, &mut out);
    Ok(out)
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
    /// `<environment>--<branch>`, served at `<branch>.<proxy.host>` only (no
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
            && !branch.ends_with('-')
            && !branch.contains("--");
        if !label {
            return Err(Error::Config(format!(
                "--branch {branch:?} must be a DNS label: at most 40 lowercase letters, digits and single '-', not starting or ending with '-'"
            )));
        }
        let Some(host) = self.proxy.host.take() else {
            return Err(Error::Config(format!(
                "a branch's environment is served at <branch>.<proxy.host>, and {} has no proxy.host",
                self.environment
            )));
        };
        // `--` parts the environment from the branch, which has none, so
        // no two (environment, branch) pairs make one name; it is longer
        // than a name written in the file may be (up to 82), never cut.
        let name = branch_environment(self.environment.as_str(), branch);
        if self.environments.keys().any(|e| e.as_str() == name) {
            return Err(Error::Config(format!(
                "--branch {branch}: its environment would be {name}, which is one of the file's environments; a branch never takes over a stage (rename the branch or the environment)"
            )));
        }
        self.environment = Name::new(&name);
        self.proxy.host = Some(format!("{branch}.{host}"));
        self.proxy.hosts.clear();
        self.proxy.listen = None;
        self.proxy.preview = None;
        self.replicas = std::num::NonZeroU32::MIN;
        self.require_approval = false;
        Ok(self)
    }
}

/// The environment a branch of `environment` deploys to (`--branch`,
/// `cyan serve`'s previews): `<environment>--<branch>`. A branch has no
/// `--`, so no two pairs make one name.
pub fn branch_environment(environment: &str, branch: &str) -> String {
    format!("{environment}--{branch}")
}

/// One node of the file as written: what the merge works on. A scalar
/// YAML would read as a number or a boolean keeps its text (`1.10`,
/// `0x10`, `yes`), so the merged document says what the file said, and a
/// string field reads it as written, as it does at the top level.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Map(Vec<(String, Node)>),
    Seq(Vec<Node>),
    /// A string, decoded (quoted, block or plain).
    Str(String),
    /// A plain scalar typed by YAML: its source text.
    Raw(String),
    Null,
}

/// A node as the parser gives it, with where it is written.
#[derive(Debug)]
enum Parsed {
    Map(Vec<(String, serde_saphyr::Spanned<Parsed>)>),
    Seq(Vec<serde_saphyr::Spanned<Parsed>>),
    Str(String),
    Typed,
    Null,
}

impl<'de> Deserialize<'de> for Parsed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Any;
        impl<'de> serde::de::Visitor<'de> for Any {
            type Value = Parsed;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any YAML node")
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Parsed, E> {
                Ok(Parsed::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> std::result::Result<Parsed, E> {
                Ok(Parsed::Str(v))
            }
            fn visit_bool<E>(self, _: bool) -> std::result::Result<Parsed, E> {
                Ok(Parsed::Typed)
            }
            fn visit_i64<E>(self, _: i64) -> std::result::Result<Parsed, E> {
                Ok(Parsed::Typed)
            }
            fn visit_u64<E>(self, _: u64) -> std::result::Result<Parsed, E> {
                Ok(Parsed::Typed)
            }
            fn visit_i128<E>(self, _: i128) -> std::result::Result<Parsed, E> {
                Ok(Parsed::Typed)
            }
            fn visit_u128<E>(self, _: u128) -> std::result::Result<Parsed, E> {
                Ok(Parsed::Typed)
            }
            fn visit_f64<E>(self, _: f64) -> std::result::Result<Parsed, E> {
                Ok(Parsed::Typed)
            }
            fn visit_unit<E>(self) -> std::result::Result<Parsed, E> {
                Ok(Parsed::Null)
            }
            fn visit_none<E>(self) -> std::result::Result<Parsed, E> {
                Ok(Parsed::Null)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Parsed, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Parsed::Seq(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Parsed, A::Error> {
                let mut entries = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, _>()? {
                    entries.push((k, v));
                }
                Ok(Parsed::Map(entries))
            }
        }
        d.deserialize_any(Any)
    }
}

impl Node {
    /// The file's tree, each typed scalar with its text from `text`.
    fn read(text: &str) -> Result<Node> {
        let parsed: serde_saphyr::Spanned<Parsed> =
            serde_saphyr::from_str_with_options(text, yaml_options())
                .map_err(|e| Error::Config(format!("cannot read the file as a mapping: {e}")))?;
        Ok(Node::of(parsed, text))
    }

    fn of(p: serde_saphyr::Spanned<Parsed>, text: &str) -> Node {
        match p.value {
            Parsed::Map(entries) => Node::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, Node::of(v, text)))
                    .collect(),
            ),
            Parsed::Seq(items) => Node::Seq(items.into_iter().map(|i| Node::of(i, text)).collect()),
            Parsed::Str(s) => Node::Str(s),
            Parsed::Null => Node::Null,
            Parsed::Typed => {
                // Where it is defined (an alias's anchor, else itself).
                let span = p.defined.span();
                let written = span
                    .byte_offset()
                    .zip(span.byte_len())
                    .and_then(|(at, len)| text.get(at as usize..(at + len) as usize))
                    .map(str::trim)
                    .filter(|t| !t.is_empty() && !t.contains(['\n', '#', '&', '*']));
                match written {
                    Some(t) => Node::Raw(t.to_string()),
                    None => Node::Null,
                }
            }
        }
    }

    /// Merges `over` into this mapping: mappings key by key at every
    /// depth; any other node replaces; `null` removes the key.
    fn merge(&mut self, over: Node) {
        let (Node::Map(into), Node::Map(over)) = (self, over) else {
            return;
        };
        for (key, value) in over {
            let at = into.iter().position(|(k, _)| *k == key);
            match (at, value) {
                (Some(i), Node::Null) => {
                    into.remove(i);
                }
                (None, Node::Null) => {}
                (Some(i), value @ Node::Map(_)) if matches!(into[i].1, Node::Map(_)) => {
                    into[i].1.merge(value)
                }
                (Some(i), value) => into[i].1 = value,
                (None, value) => into.push((key, value)),
            }
        }
    }

    /// Block-style YAML, keys plain where they can be (so `locate` reads
    /// the merged text's key paths), strings double-quoted (JSON's
    /// escapes are YAML's), typed scalars as written.
    fn emit(&self, indent: usize, out: &mut String) {
        let pad = " ".repeat(indent);
        match self {
            Node::Map(entries) => {
                for (k, v) in entries {
                    out.push_str(&pad);
                    out.push_str(&key(k));
                    out.push(':');
                    v.emit_value(indent, out);
                }
            }
            Node::Seq(items) => {
                for item in items {
                    out.push_str(&pad);
                    out.push('-');
                    item.emit_value(indent, out);
                }
            }
            scalar => {
                out.push_str(&pad);
                out.push_str(&scalar.inline());
                out.push('\n');
            }
        }
    }

    /// A value after its key or dash: inline, or nested on the next lines.
    fn emit_value(&self, indent: usize, out: &mut String) {
        match self {
            Node::Map(m) if !m.is_empty() => {
                out.push('\n');
                self.emit(indent + 2, out);
            }
            Node::Seq(s) if !s.is_empty() => {
                out.push('\n');
                self.emit(indent + 2, out);
            }
            other => {
                out.push(' ');
                out.push_str(&other.inline());
                out.push('\n');
            }
        }
    }

    fn inline(&self) -> String {
        match self {
            Node::Map(_) => "{}".into(),
            Node::Seq(_) => "[]".into(),
            Node::Str(s) => serde_json::to_string(s).expect("a string serializes"),
            Node::Raw(t) => t.clone(),
            Node::Null => "null".into(),
        }
    }
}

/// A key as the merged text writes it: plain when it is a simple word.
fn key(k: &str) -> String {
    let simple = k
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'));
    match simple {
        true => k.to_string(),
        false => serde_json::to_string(k).expect("a string serializes"),
    }
}
