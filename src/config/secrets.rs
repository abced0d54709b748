//! Secret values: read from cyan's environment, held only as `SecretString`,
//! and folded into the config hash through an HMAC keyed per host.
//!
//! A secret's value has one place to go: the app container's environment.
//! Holding it in a type with no `Display`, no `Serialize` and a redacted
//! `Debug` makes "printed it by accident" a compile error or `[REDACTED]`,
//! for every log line, `-o json` field and error message at once, rather
//! than something each of them must remember. The Docker client's own debug
//! logs carry request and response bodies (the container's `Env`); `log_filter`
//! keeps them off whatever `RUST_LOG` says.
//!
//! The config hash (the `cyan.config-hash` label) must change when a value
//! changes, since a rotated secret is a new release. A plain hash over the
//! value would let anyone who can list containers test a guess offline; an
//! HMAC under a random key kept 0600 in the cyan home cannot be tested
//! without that key.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ring::hmac;
use secrecy::{ExposeSecret, SecretString};

use crate::error::{Error, Result};

/// The key file's name in the cyan home.
pub const KEY_FILE: &str = "config-hash.key";
const KEY_LEN: usize = 32;

/// The values of `secrets:`, by variable name, with the key that hashes them.
/// `Debug` shows names only; there is no other way to print one.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    values: BTreeMap<String, SecretString>,
    /// Present whenever `values` is not empty.
    key: Option<HashKey>,
}

impl Secrets {
    /// Takes each named variable out of cyan's environment; with at least
    /// one, loads the hash key from `home` (creating it on first use).
    ///
    /// The variables are removed once read, so no process cyan starts (the
    /// proxy, started on demand and long-lived; a credential helper) inherits
    /// them. The values read are kept in this process, so a command that
    /// opens several hosts of a fleet reads the same values for each. Call
    /// it before other tasks run: it writes the process environment.
    ///
    /// Errors: a name that is unset or not UTF-8 (`Error::Config`, naming the
    /// variable, never a value); a key file that cannot be read or made.
    pub fn from_env(names: &[String], home: &Path) -> Result<Secrets> {
        static READ: std::sync::Mutex<BTreeMap<String, SecretString>> =
            std::sync::Mutex::new(BTreeMap::new());
        let mut read = READ.lock().expect("secrets lock");
        let values = names
            .iter()
            .map(|name| match std::env::var(name) {
                Ok(v) => {
                    std::env::remove_var(name);
                    let v = SecretString::from(v);
                    read.insert(name.clone(), v.clone());
                    Ok((name.clone(), v))
                }
                Err(std::env::VarError::NotPresent) if read.contains_key(name) => {
                    Ok((name.clone(), read[name].clone()))
                }
                Err(std::env::VarError::NotPresent) => Err(Error::Config(format!(
                    "secret {name} is listed in cyan.yaml but not set in the environment: export it (or pass it to the action as an env var) and run again"
                ))),
                Err(std::env::VarError::NotUnicode(_)) => Err(Error::Config(format!(
                    "secret {name} is not valid UTF-8: Docker takes environment variables as text"
                ))),
            })
            .collect::<Result<BTreeMap<_, _>>>()?;
        let key = match values.is_empty() {
            true => None,
            false => Some(HashKey::load_or_create(home)?),
        };
        Ok(Secrets { values, key })
    }

    /// `NAME=value` for each secret: the container's environment, the one
    /// place the values are meant to go. Keep the result out of anything
    /// that is printed or stored.
    pub fn expose_as_env(&self) -> impl Iterator<Item = String> + '_ {
        self.values
            .iter()
            .map(|(k, v)| format!("{k}={}", v.expose_secret()))
    }

    /// `text` with every secret value (of 4 characters or more: shorter
    /// ones would blank common words) replaced by `[redacted NAME]`: for
    /// what a container that holds the values prints (a hook's output),
    /// before it is shown, kept or sent.
    pub fn redact(&self, text: &str) -> String {
        // Longest first: a value inside another's leaves none of it.
        let mut values: Vec<(&String, &str)> = self
            .values
            .iter()
            .map(|(name, v)| (name, v.expose_secret()))
            .filter(|(_, v)| v.chars().count() >= 4)
            .collect();
        values.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
        let mut out = text.to_string();
        for (name, value) in values {
            out = out.replace(value, &format!("[redacted {name}]"));
        }
        out
    }

    /// HMAC-SHA256 over every name and value, under the host's key; `None`
    /// without secrets. Names and values are length-prefixed, so no two
    /// different sets give the same input.
    pub(super) fn fingerprint(&self) -> Option<hmac::Tag> {
        let key = self.key.as_ref()?;
        let mut mac = hmac::Context::with_key(&key.0);
        for (name, value) in &self.values {
            for part in [name.as_bytes(), value.expose_secret().as_bytes()] {
                mac.update(&(part.len() as u64).to_be_bytes());
                mac.update(part);
            }
        }
        Some(mac.sign())
    }

    #[cfg(test)]
    pub(crate) fn with(values: &[(&str, &str)], key: &[u8]) -> Secrets {
        Secrets {
            values: values
                .iter()
                .map(|(k, v)| (k.to_string(), SecretString::from(*v)))
                .collect(),
            key: Some(HashKey(hmac::Key::new(hmac::HMAC_SHA256, key))),
        }
    }
}

/// The per-host HMAC key. Its `Debug` names the algorithm only.
#[derive(Debug, Clone)]
struct HashKey(hmac::Key);

impl HashKey {
    /// Reads `home/config-hash.key`, or makes it: 32 random bytes, mode 0600,
    /// written aside and linked into place, so two cyans starting at once
    /// agree on one key and none reads a half-written file.
    fn load_or_create(home: &Path) -> Result<HashKey> {
        let path = home.join(KEY_FILE);
        let broken = |what: &str, e: std::io::Error| {
            Error::Platform(format!(
                "cannot {what} the config-hash key {}: {e}; check that the cyan home is writable by this user (or set --home / CYAN_HOME)",
                path.display()
            ))
        };
        match std::fs::read(&path) {
            Ok(bytes) => return HashKey::from_file(&path, &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(broken("read", e)),
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(home)
            .map_err(|e| broken("create the folder of", e))?;
        let bytes: [u8; KEY_LEN] = ring::rand::generate(&ring::rand::SystemRandom::new())
            .map_err(|_| {
                Error::Platform(
                    "the system's random generator failed; cannot make the config-hash key".into(),
                )
            })?
            .expose();
        let aside = PathBuf::from(format!("{}.{}.new", path.display(), std::process::id()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&aside)
            .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.sync_all()));
        let linked = written.and_then(|()| std::fs::hard_link(&aside, &path));
        let _ = std::fs::remove_file(&aside);
        match linked {
            Ok(()) => Ok(HashKey(hmac::Key::new(hmac::HMAC_SHA256, &bytes))),
            // Another cyan made it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let bytes = std::fs::read(&path).map_err(|e| broken("read", e))?;
                HashKey::from_file(&path, &bytes)
            }
            Err(e) => Err(broken("write", e)),
        }
    }

    fn from_file(path: &Path, bytes: &[u8]) -> Result<HashKey> {
        if bytes.len() != KEY_LEN {
            return Err(Error::Platform(format!(
                "{} holds {} bytes, not a {KEY_LEN}-byte config-hash key: remove it and cyan makes a new one (each app with secrets then deploys its next release blue/green once, even if unchanged)",
                path.display(),
                bytes.len()
            )));
        }
        Ok(HashKey(hmac::Key::new(hmac::HMAC_SHA256, bytes)))
    }
}

/// Whether a log event may be recorded at all: the Docker client (bollard)
/// logs request and response bodies at debug and trace, and those hold the
/// app container's `Env`, secrets included. Install as a global filter next
/// to `RUST_LOG`'s, so no setting of it turns them on.
pub fn log_filter(meta: &tracing::Metadata<'_>) -> bool {
    let docker_client = meta.target() == "bollard" || meta.target().starts_with("bollard::");
    !(docker_client && *meta.level() > tracing::Level::INFO)
}
