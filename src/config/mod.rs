//! `cyan.yaml`: the schema, loading, and validation with precise errors.
//!
//! Every value is validated while it is deserialized, so that a bad value is
//! reported by the YAML parser with its exact line and column; `locate.rs` adds
//! the key path. Nothing below the CLI sees a raw, unvalidated value.
//!
//! This file holds `Config`, its small sections, loading and the checks that
//! span sections; a section with rules of its own has its file (`proxy`,
//! `health`, `verify`), as has what a release records (`runtime`).

mod environments;
pub use environments::branch_environment;
mod fleet;
pub use fleet::{FleetConfig, HostEntry, SshConfig, SshUrl, Strategy};
mod health;
mod hooks;
mod locate;
mod proxy;
mod runtime;
mod secret_ref;
mod secrets;
mod values;
mod verify;

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
pub use crate::proxy::state::Balance;
pub use health::{HealthConfig, HttpCheck, Probe};
pub use hooks::{Hook, HookCommand, HooksConfig};
pub use proxy::{
    ActiveCheckConfig, PassiveHealth, PreviewConfig, ProxyConfig, ProxyTls, TlsConfig,
};
pub use runtime::Runtime;
pub use secret_ref::SecretRef;
pub use secrets::{log_filter, Secrets};
pub use values::{Dur, ImageRepo, Name, Ratio, StatusRange};
pub use verify::{Inconclusive, VerifyConfig};

/// Where the app runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PlatformKind {
    #[default]
    Docker,
    Kubernetes,
}

impl PlatformKind {
    /// The names `platform:` and `--platform` take.
    pub const NAMES: [&'static str; 2] = ["docker", "kubernetes"];
}

impl std::str::FromStr for PlatformKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "docker" => Ok(PlatformKind::Docker),
            "kubernetes" => Ok(PlatformKind::Kubernetes),
            other => Err(format!("unknown platform {other:?}: docker or kubernetes")),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The app's name: container names, labels and routes derive from it.
    pub app: Name,
    /// Several environments of one app (staging, production) can share a host.
    #[serde(default = "default_environment")]
    pub environment: Name,
    /// Image repository, without a tag: tags come from the version.
    pub image: values::ImageRepo,
    #[serde(default)]
    pub build: BuildConfig,
    #[serde(default)]
    pub platform: PlatformKind,
    #[serde(default = "one")]
    pub replicas: NonZeroU32,
    /// The port the app listens on inside its container.
    pub port: u16,
    /// How the cyan proxy routes to the app (Docker; unused on Kubernetes).
    #[serde(default)]
    pub proxy: ProxyConfig,
    /// Where and how the BlueGreenDeployment is written (`platform: kubernetes`).
    #[serde(default)]
    pub kubernetes: KubernetesConfig,
    /// Plain environment variables for the app. Not for secrets.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names of variables passed through from cyan's own environment at deploy
    /// time. Their values are held as `Secrets` and never reach labels, logs,
    /// outputs or state files.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Command override for the container.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Run an init process (docker --init) as PID 1, so SIGTERM reaches the app.
    #[serde(default)]
    pub init: bool,
    /// How long a container gets after SIGTERM before SIGKILL.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: Dur,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub verify: Option<VerifyConfig>,
    #[serde(default)]
    pub require_approval: bool,
    #[serde(default)]
    pub keep: KeepConfig,
    /// Where deploys are announced (chat, webhooks, mail).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<crate::notify::Destination>,
    /// Commands run at named points of a deploy (Docker).
    #[serde(default, skip_serializing_if = "is_default")]
    pub hooks: HooksConfig,
    /// What `cyan serve` deploys, from which pushes (`serve::rules`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serve: Option<crate::serve::rules::ServeConfig>,
    /// Stages of the app (staging, production, …): each a mapping of what
    /// differs, merged over the rest of the file when `--environment` picks
    /// it (`environments`' module doc).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environments: BTreeMap<Name, environments::Overrides>,
    /// The Docker hosts the app runs on, each with its cyan proxy
    /// (`crate::fleet`); empty: this host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostEntry>,
    /// How a deploy moves `hosts`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub fleet: FleetConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BuildConfig {
    /// Build context, relative to the config file.
    #[serde(default = "default_context")]
    pub context: PathBuf,
    /// Dockerfile path, relative to the context.
    #[serde(default = "default_dockerfile")]
    pub dockerfile: String,
    #[serde(default)]
    pub args: BTreeMap<String, String>,
    #[serde(default)]
    pub target: Option<String>,
}

impl Default for BuildConfig {
    fn default() -> Self {
        BuildConfig {
            context: default_context(),
            dockerfile: default_dockerfile(),
            args: BTreeMap::new(),
            target: None,
        }
    }
}

/// The `kubernetes:` section: how cyan.yaml becomes a BlueGreenDeployment.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// Namespace of the app (default: the kubeconfig context's).
    #[serde(default)]
    pub namespace: Option<String>,
    /// The Service whose selector is switched (default: the app's name).
    #[serde(default)]
    pub active_service: Option<String>,
    /// A Service that shows the candidate before the switch.
    #[serde(default)]
    pub preview_service: Option<String>,
    /// How long the previous color stays scaled after a switch (default 30s).
    #[serde(default)]
    pub scale_down_delay: Option<Dur>,
    /// A candidate not gated within this long is halted (default 10m).
    #[serde(default)]
    pub progress_deadline: Option<Dur>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeepConfig {
    /// Previous colors kept running for instant rollback: 0 or 1.
    #[serde(default = "default_hot", deserialize_with = "values::zero_or_one")]
    pub hot: u32,
}

impl Default for KeepConfig {
    fn default() -> Self {
        KeepConfig { hot: default_hot() }
    }
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

fn default_environment() -> Name {
    Name::new("production")
}
fn one() -> NonZeroU32 {
    NonZeroU32::MIN
}
fn default_context() -> PathBuf {
    PathBuf::from(".")
}
fn default_dockerfile() -> String {
    "Dockerfile".into()
}
fn default_stop_timeout() -> Dur {
    Dur::from_secs(10)
}
fn default_hot() -> u32 {
    1
}

/// Which stage of the file a command acts on, and on which platform: the
/// `--environment` and `--platform` flags, over the file's own.
#[derive(Debug, Clone, Default)]
pub struct Pick {
    pub environment: Option<String>,
    pub platform: Option<PlatformKind>,
    /// For what every environment shares (the image and its build): with
    /// no `environment`, the file's first environment rather than an error.
    pub shared_only: bool,
}

/// A config and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub path: PathBuf,
}

impl Loaded {
    /// The folder relative paths in the config are resolved against.
    pub fn dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    pub fn context_dir(&self) -> PathBuf {
        self.dir().join(&self.config.build.context)
    }
}

impl Config {
    /// Reads and validates a config file, for `pick.environment` when the
    /// file has `environments:`. Errors name file:line:column and the key
    /// path.
    pub fn load(path: &Path, pick: &Pick) -> Result<Loaded> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read config {}: {e}", path.display())))?;
        let config = Self::parse_for(&text, &path.display().to_string(), pick)?;
        Ok(Loaded {
            config,
            path: path.to_path_buf(),
        })
    }

    /// Parses config text, a file without `environments:` (or one picked
    /// with `parse_for`); `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config> {
        Self::parse_for(text, origin, &Pick::default())
    }

    /// Parses config text for `pick`: the environment's mapping merged over
    /// the top level (`environments`), then `pick.platform` over `platform`.
    pub fn parse_for(text: &str, origin: &str, pick: &Pick) -> Result<Config> {
        let base: Config = serde_saphyr::from_str_with_options(text, environments::yaml_options())
            .map_err(|e| locate::describe(&e, text, origin))?;
        environments::shared_key_set(&base, text, origin)?;
        let wanted = match (&pick.environment, pick.shared_only) {
            (None, true) => base.environments.keys().next().map(|n| n.to_string()),
            (wanted, _) => wanted.clone(),
        };
        let chosen = environments::choose(&base, wanted.as_deref(), origin)?;
        let at = environments::Locator {
            text,
            origin,
            environment: chosen.as_ref().map(Name::as_str),
        };
        let mut config = match &chosen {
            None => base,
            Some(name) => {
                let merged = environments::merged(text, name)?;
                let mut picked: Config =
                    serde_saphyr::from_str(&merged).map_err(|e| at.parse_error(&e, &merged))?;
                picked.environments = base.environments;
                picked
            }
        };
        if let Some(p) = pick.platform {
            config.platform = p;
        }
        config.validate(&at)?;
        Ok(config)
    }

    /// The file's environments, by name (empty without `environments:`).
    pub fn environment_names(&self) -> Vec<String> {
        self.environments.keys().map(|n| n.to_string()).collect()
    }

    /// Checks that span several keys, reported at the first key involved.
    fn validate(&self, at: &environments::Locator) -> Result<()> {
        let fail = |path: &[&str], msg: String| Err(at.key(path, &msg));
        let routed = self.proxy.host.is_some() || self.proxy.listen.is_some();
        if !self.proxy.hosts.is_empty() && self.proxy.host.is_none() {
            return fail(
                &["proxy", "hosts"],
                "proxy.hosts adds hosts to proxy.host: set proxy.host (the main one) too".into(),
            );
        }
        if matches!(self.proxy.tls, Some(ProxyTls::Acme)) && self.proxy.host.is_none() {
            return fail(
                &["proxy", "tls"],
                "tls: acme needs proxy.host: the certificate names the app's hosts".into(),
            );
        }
        if self.platform == PlatformKind::Docker && !routed {
            return fail(
                &["proxy"],
                "set proxy.host, proxy.listen or both, so the proxy knows which requests are this app's".into(),
            );
        }
        if self.health.timeout.0 > self.health.deadline.0 {
            return fail(
                &["health", "timeout"],
                format!(
                    "timeout {} is longer than the gate deadline {}",
                    self.health.timeout, self.health.deadline
                ),
            );
        }
        if let Some(prefix) = self.proxy.path_prefix.as_deref() {
            if !prefix.starts_with('/') {
                return fail(
                    &["proxy", "path_prefix"],
                    format!("path prefix {prefix:?} must start with '/'"),
                );
            }
        }
        if let Some(preview) = &self.proxy.preview {
            self.validate_preview(preview, at)?;
        }
        if let Some((key, why)) = self.health.conflict() {
            return fail(&["health", key], why);
        }
        if let Some(http) = self
            .health
            .http
            .as_ref()
            .filter(|h| !h.path.starts_with('/'))
        {
            return fail(
                &["health", "http", "path"],
                format!("path {:?} must start with '/'", http.path),
            );
        }
        for name in self.env.keys().chain(self.secrets.iter()) {
            let valid = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                let key = if self.env.contains_key(name) {
                    "env"
                } else {
                    "secrets"
                };
                return fail(
                    &[key],
                    format!("{name:?} is not a valid environment variable name"),
                );
            }
        }
        if let Some(both) = self.secrets.iter().find(|n| self.env.contains_key(*n)) {
            return fail(
                &["env", both],
                format!(
                    "{both} is both in env and in secrets; keep it in secrets only (a plain env value would stand beside the secret in the container)"
                ),
            );
        }
        if self.verify.as_ref().is_some_and(|v| v.min_requests == 0) {
            return fail(
                &["verify", "min_requests"],
                "must be at least 1: with no request there is nothing to judge (to keep a release that got too few, set on_inconclusive: pass)".into(),
            );
        }
        for (key, hook) in self.hooks.all() {
            if hook.run.is_empty() {
                return fail(&["hooks", key, "run"], "give the command to run".into());
            }
            if hook.timeout.0.is_zero() {
                return fail(
                    &["hooks", key, "timeout"],
                    "a hook needs time to run".into(),
                );
            }
            if hook.container && key == "pre_build" {
                return fail(
                    &["hooks", key, "container"],
                    "pre_build runs before the image exists: it can only run on the host".into(),
                );
            }
        }
        if self.platform == PlatformKind::Kubernetes {
            return self.validate_kubernetes(at);
        }
        self.validate_hosts(at)
    }

    /// A fleet's hosts have distinct names, and what runs beside a
    /// one-host deploy only (hooks, notifications) is refused with them.
    fn validate_hosts(&self, at: &environments::Locator) -> Result<()> {
        let fail = |path: &[&str], msg: String| Err(at.key(path, &msg));
        for (i, h) in self.hosts.iter().enumerate() {
            if self.hosts[..i].iter().any(|o| o.name == h.name) {
                return fail(
                    &["hosts"],
                    format!(
                        "two hosts are called {:?}: give each a name (- name: web1, url: ssh://…)",
                        h.name
                    ),
                );
            }
        }
        for (i, h) in self.hosts.iter().enumerate() {
            if let Some(o) = self.hosts[..i].iter().find(|o| o.url == h.url) {
                return fail(
                    &["hosts"],
                    format!(
                        "{} and {} are the same host ({}): list each server once",
                        o.name, h.name, h.url
                    ),
                );
            }
        }
        if !self.fleet.home.is_absolute() {
            return fail(
                &["fleet", "home"],
                format!(
                    "{}: the proxy's home on every host is an absolute path (default /var/lib/cyan)",
                    self.fleet.home.display()
                ),
            );
        }
        if self.hosts.is_empty() {
            // With environments, `fleet:` may be shared by stages of which
            // only some have hosts.
            if self.fleet != FleetConfig::default() && self.environments.is_empty() {
                return fail(
                    &["fleet"],
                    "fleet: says how to deploy to hosts:, and there are none: list the servers under hosts: (without them the app is deployed on this machine)".into(),
                );
            }
            return Ok(());
        }
        if self.hooks != HooksConfig::default() {
            return fail(
                &["hooks"],
                "hooks run beside a one-host deploy; with hosts: they are not run yet, so they are refused rather than skipped".into(),
            );
        }
        if !self.notify.is_empty() {
            return fail(
                &["notify"],
                "notifications are sent by a one-host deploy; with hosts: they are not sent yet, so they are refused rather than skipped".into(),
            );
        }
        Ok(())
    }

    /// On Kubernetes Secrets are the cluster's: cyan does not carry them.
    fn validate_kubernetes(&self, at: &environments::Locator) -> Result<()> {
        let fail = |path: &[&str], msg: String| Err(at.key(path, &msg));
        if !self.hosts.is_empty() {
            return fail(
                &["hosts"],
                "hosts: are Docker hosts; a cluster's nodes are the scheduler's".into(),
            );
        }
        if !self.secrets.is_empty() {
            return fail(
                &["secrets"],
                "on Kubernetes, pass secrets with a Kubernetes Secret (envFrom in the BlueGreenDeployment's template), not through cyan".into(),
            );
        }
        if self.hooks != HooksConfig::default() {
            return fail(
                &["hooks"],
                "hooks run with the Docker platform's deploys; on Kubernetes the operator deploys, so use the cluster's own (a Job, an init container, a preview Service check)".into(),
            );
        }
        Ok(())
    }

    /// `proxy.preview`: the cyan proxy's, so Docker's only, and on a host
    /// and listen address the app does not serve live.
    fn validate_preview(&self, p: &PreviewConfig, at: &environments::Locator) -> Result<()> {
        let fail = |path: &[&str], msg: String| Err(at.key(path, &msg));
        if self.platform == PlatformKind::Kubernetes {
            return fail(
                &["proxy", "preview"],
                "proxy.preview is the cyan proxy's, on Docker; on Kubernetes set kubernetes.preview_service: a Service that selects the candidate only (the BlueGreenDeployment's previewService)".into(),
            );
        }
        if p.host.is_none() && p.listen.is_none() {
            return fail(
                &["proxy", "preview"],
                "set preview.host, preview.listen or both: where the candidate is served".into(),
            );
        }
        let normalized = |h: &str| crate::proxy::router::normalize_host(h).into_owned();
        if let Some(host) = &p.host {
            let own = self.proxy.host.iter().chain(&self.proxy.hosts);
            if host.trim().is_empty() || own.clone().any(|h| normalized(h) == normalized(host)) {
                return fail(
                    &["proxy", "preview", "host"],
                    format!(
                        "preview host {host:?} must be a name of its own, not empty nor one of proxy.host and proxy.hosts: requests for those get the live release"
                    ),
                );
            }
        }
        if let Some(listen) = p.listen.filter(|l| Some(*l) == self.proxy.listen) {
            return fail(
                &["proxy", "preview", "listen"],
                format!(
                    "preview listen address {listen} is proxy.listen too: give the preview an address of its own"
                ),
            );
        }
        Ok(())
    }

    /// The route name in the proxy: one per app and environment.
    pub fn route(&self) -> String {
        format!("{}-{}", self.app, self.environment)
    }

    /// Hash of everything that changes what a container runs, besides the
    /// image: 12 hex characters. Secret values enter only as their HMAC
    /// under the host's key (`Secrets`), so a rotated secret makes a new
    /// release while the hash, which is a container label, cannot be used
    /// to test a guessed value. Without secrets it is a plain SHA-256 of
    /// the rest.
    pub fn runtime_hash(&self, secrets: &Secrets) -> String {
        let mut h = Sha256::new();
        let runtime = serde_json::json!({
            "port": self.port,
            "replicas": self.replicas,
            "env": self.env,
            "command": self.command,
            "init": self.init,
        });
        h.update(runtime.to_string().as_bytes());
        if let Some(tag) = secrets.fingerprint() {
            h.update(b"\0secrets\0");
            h.update(tag.as_ref());
        }
        let digest = h.finalize();
        digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests;
