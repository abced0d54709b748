//! `cyan.yaml`: the schema, loading, and validation with precise errors.
//!
//! Every value is validated while it is deserialized, so that a bad value is
//! reported by the YAML parser with its exact line and column; `locate.rs` adds
//! the key path. Nothing below the CLI sees a raw, unvalidated value.

mod locate;
mod secrets;
mod values;

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::proxy::api::Health;
pub use crate::proxy::state::Balance;
use crate::proxy::state::{ActiveCheck, RoutePolicy};
pub use secrets::{log_filter, Secrets};
pub use values::{Dur, ImageRepo, Name, Ratio, StatusRange};

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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Host header the proxy routes to this app.
    #[serde(default)]
    pub host: Option<String>,
    /// More Host headers for the same app (`[www.example.com]`).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// A listen address of the app's own; requests there need no Host match.
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
    /// Only requests under this path are the app's (e.g. `/api`); not stripped.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// How long in-flight requests and WebSockets on the old color may go on.
    #[serde(default = "default_drain")]
    pub drain_timeout: Dur,
    /// The window before the drain deadline over which the old color's
    /// WebSockets and streaming responses end, spread (default: half the
    /// drain timeout, at least 5 s).
    #[serde(default)]
    pub drain_spread: Option<Dur>,
    /// `round-robin` or `least-connections`.
    #[serde(default)]
    pub balance: Balance,
    /// Time to the app's response head before the client gets a 504.
    #[serde(default = "default_response_timeout")]
    pub response_timeout: Dur,
    #[serde(default)]
    pub passive_health: PassiveHealth,
    /// Optional: the proxy probes the live replicas itself.
    #[serde(default)]
    pub active_check: Option<ActiveCheckConfig>,
    /// Terminate TLS for `host` (SNI on the proxy's `--tls-listen`) and on
    /// `listen`, which then speaks TLS: `{ cert, key }` (paths relative to
    /// cyan.yaml), or `acme` for a certificate the proxy obtains and renews.
    #[serde(default)]
    pub tls: Option<ProxyTls>,
    /// Networks (CIDRs) of the load balancers or CDNs in front of the
    /// proxy whose `X-Forwarded-*` headers the app may believe. From anyone
    /// else those headers are replaced with what the proxy saw.
    #[serde(default)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Where the candidate answers before it is promoted, and never the
    /// live color (`require_approval: true`: look, then `cyan promote`).
    #[serde(default)]
    pub preview: Option<PreviewConfig>,
}

/// `proxy.preview`: a host and/or a listen address of the app's preview,
/// both its own (not `proxy.host`'s, `hosts`' or `listen`'s). From the
/// moment a candidate passes its health gate until it is promoted,
/// aborted or removed after a failure, the preview serves it, under the
/// app's `path_prefix`, in plain HTTP; otherwise it answers 503 "no
/// candidate". A previous release kept hot is never served there.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewConfig {
    /// A Host header routed to the candidate.
    #[serde(default)]
    pub host: Option<String>,
    /// A listen address whose requests all go to the candidate.
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
}

impl PreviewConfig {
    /// The preview as the proxy's admin API takes it.
    pub fn spec(&self) -> crate::proxy::api::PreviewSpec {
        crate::proxy::api::PreviewSpec {
            hosts: self.host.iter().cloned().collect(),
            listen: self.listen,
        }
    }

    /// A URL a script on this host can open, as `Config::url` makes the
    /// app's: its own listen address when it has one, else its host on
    /// the proxy's `--listen` port (`served`), and the app's
    /// `path_prefix`, which the preview serves too. Always `http`.
    pub fn url(&self, served: &Health, path_prefix: Option<&str>) -> String {
        let base = match (&self.host, self.listen) {
            (_, Some(listen)) => format!("http://{}", reachable(listen)),
            (Some(host), None) => match served.listen.first().map(|a| a.port()) {
                Some(80) | None => format!("http://{host}"),
                Some(port) => format!("http://{host}:{port}"),
            },
            (None, None) => return String::new(),
        };
        with_prefix(base, path_prefix)
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            host: None,
            listen: None,
            path_prefix: None,
            drain_timeout: default_drain(),
            drain_spread: None,
            balance: Balance::default(),
            response_timeout: default_response_timeout(),
            passive_health: PassiveHealth::default(),
            active_check: None,
            tls: None,
            hosts: Vec::new(),
            trusted_proxies: Vec::new(),
            preview: None,
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
pub struct ActiveCheckConfig {
    #[serde(default = "default_health_path")]
    pub path: String,
    #[serde(default = "default_active_interval")]
    pub interval: Dur,
}

fn default_active_interval() -> Dur {
    Dur::from_secs(5)
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// `proxy.tls`: PEM files, or `acme`: a certificate for the app's hosts
/// that the proxy obtains from its ACME CA and renews (`cyan proxy run
/// --acme-*`).
#[derive(Debug, Clone)]
pub enum ProxyTls {
    Files(TlsConfig),
    Acme,
}

impl Serialize for ProxyTls {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            ProxyTls::Files(files) => files.serialize(s),
            ProxyTls::Acme => s.serialize_str("acme"),
        }
    }
}

impl<'de> Deserialize<'de> for ProxyTls {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Tls;
        impl<'de> serde::de::Visitor<'de> for Tls {
            type Value = ProxyTls;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`acme` or { cert: cert.pem, key: key.pem }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<ProxyTls, E> {
                match v {
                    "acme" => Ok(ProxyTls::Acme),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<ProxyTls, A::Error> {
                let files = serde::de::value::MapAccessDeserializer::new(map);
                TlsConfig::deserialize(files).map(ProxyTls::Files)
            }
        }
        d.deserialize_any(Tls)
    }
}

/// Upstreams that fail `failures` times in a row (connect errors and
/// timeouts) get no traffic for `cooloff`, unless all of them are out.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealth {
    #[serde(default = "default_eject_after")]
    pub failures: NonZeroU32,
    #[serde(default = "default_cooloff")]
    pub cooloff: Dur,
}

impl Default for PassiveHealth {
    fn default() -> Self {
        PassiveHealth {
            failures: default_eject_after(),
            cooloff: default_cooloff(),
        }
    }
}

impl ProxyConfig {
    /// The route's policy as the proxy stores it.
    pub fn policy(&self) -> RoutePolicy {
        RoutePolicy {
            balance: self.balance,
            drain_timeout_ms: self.drain_timeout.0.as_millis() as u64,
            drain_spread_ms: self.drain_spread.map(|d| d.0.as_millis() as u64),
            response_timeout_ms: self.response_timeout.0.as_millis() as u64,
            eject_after: self.passive_health.failures.get(),
            eject_for_ms: self.passive_health.cooloff.0.as_millis() as u64,
            active_check: self.active_check.as_ref().map(|a| ActiveCheck {
                path: a.path.clone(),
                interval_ms: a.interval.0.as_millis() as u64,
            }),
            trusted_proxies: self.trusted_proxies.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    #[serde(default = "default_health_path")]
    pub path: String,
    /// Host header for the check; defaults to `proxy.host`.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub expect: StatusRange,
    /// A substring the response body must contain.
    #[serde(default)]
    pub body: Option<String>,
}

impl Default for HttpCheck {
    fn default() -> Self {
        HttpCheck {
            path: default_health_path(),
            host: None,
            expect: StatusRange::default(),
            body: None,
        }
    }
}

/// `health:`. The probe is one of `http` (the default), `tcp` and
/// `command`; giving two is refused when the file is loaded. Read it with
/// `HealthConfig::probe`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// A GET to each replica; the probe when neither `tcp` nor `command`
    /// is given (with `path: /` then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheck>,
    /// A TCP connect to each replica's port, which must then stay open
    /// (Docker's userland proxy accepts for an app that has not bound yet
    /// and closes at once). A flag, like `docker` and `init`: a connect has
    /// nothing of its own to set (the port is `port`, the timing is
    /// `interval` and `timeout`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tcp: bool,
    /// A command run in each replica's container (Docker exec, as the
    /// container's user, no shell: `[sh, -c, "..."]` if the image has one):
    /// exit 0 passes; another exit code, or no exit within `timeout`, fails.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "values::argv"
    )]
    pub command: Option<Vec<String>>,
    #[serde(default = "default_interval")]
    pub interval: Dur,
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    /// Consecutive passes a replica needs.
    #[serde(default = "two")]
    pub healthy_threshold: NonZeroU32,
    /// Consecutive failures, after a replica first answered, that fail the
    /// gate early. "Answered" is any HTTP response for `http`, a connection
    /// that stayed open for `tcp`, and a passing run for `command` (a
    /// command runs, and fails, while the app is still starting).
    #[serde(default)]
    pub unhealthy_threshold: Option<NonZeroU32>,
    /// The whole gate must pass within this time.
    #[serde(default = "default_deadline")]
    pub deadline: Dur,
    /// When the image defines a `HEALTHCHECK`, the gate also waits for
    /// Docker to call each replica `healthy`, and fails on `unhealthy`.
    /// Ignored on Kubernetes, which never runs an image's `HEALTHCHECK`
    /// (the gate there is the probe, as the readiness probe).
    #[serde(default = "yes")]
    pub docker: bool,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            http: None,
            tcp: false,
            command: None,
            interval: default_interval(),
            timeout: default_timeout(),
            healthy_threshold: two(),
            unhealthy_threshold: None,
            deadline: default_deadline(),
            docker: yes(),
        }
    }
}

/// What the health gate does to each replica (`HealthConfig::probe`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Probe<'a> {
    /// GET `path`; the status must be in `expect` (and the body hold `body`).
    Http(&'a HttpCheck),
    /// Connect to the replica's port; the connection must stay open.
    Tcp,
    /// Run this in the container (argv, no shell); exit 0 passes.
    Command(&'a [String]),
}

impl HealthConfig {
    /// The probe: `tcp` or `command` when given, else `http` (given, or
    /// its defaults). Loading refuses a config that gives two.
    pub fn probe(&self) -> Probe<'_> {
        static DEFAULT_HTTP: std::sync::LazyLock<HttpCheck> =
            std::sync::LazyLock::new(HttpCheck::default);
        match (&self.command, self.tcp) {
            (Some(argv), _) => Probe::Command(argv),
            (None, true) => Probe::Tcp,
            (None, false) => Probe::Http(self.http.as_ref().unwrap_or(&DEFAULT_HTTP)),
        }
    }

    /// The HTTP check for what only HTTP can do (Kubernetes' verify
    /// through the Service): `http` as given, or its defaults.
    pub fn http_check(&self) -> HttpCheck {
        self.http.clone().unwrap_or_default()
    }

    /// Two probes, or an empty command: the key to blame and why.
    fn conflict(&self) -> Option<(&'static str, String)> {
        let given: Vec<&'static str> = [
            ("http", self.http.is_some()),
            ("tcp", self.tcp),
            ("command", self.command.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, on)| on.then_some(k))
        .collect();
        if let [first, second, ..] = given[..] {
            return Some((
                second,
                format!(
                    "health.{first} and health.{second} are both given, and the gate has one probe: \
                     keep http (a GET), tcp (a connect) or command (run in the container), and remove the other"
                ),
            ));
        }
        match self.command.as_deref() {
            Some([]) => Some((
                "command",
                "the command is empty: give the program and its arguments, e.g. [/app, check]"
                    .into(),
            )),
            Some([program, ..]) if program.trim().is_empty() => Some((
                "command",
                "the command's program (its first item) is empty".into(),
            )),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    pub duration: Dur,
    #[serde(default = "default_max_5xx")]
    pub max_5xx_ratio: Ratio,
    /// Below this many requests the ratio is not judged (1 error in 2 is
    /// noise): the verdict is inconclusive.
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// What an inconclusive verdict does: `wait` (the default) keeps
    /// watching until `min_requests` or `deadline`, then fails; `pass`
    /// keeps the release live and says so; `fail` switches back.
    #[serde(default)]
    pub on_inconclusive: Inconclusive,
    /// How long `wait` may watch in all, from the switch (default: three
    /// times `duration`).
    #[serde(default)]
    pub deadline: Option<Dur>,
}

pub use crate::plan::verify::Inconclusive;

impl VerifyConfig {
    /// How long verification may watch in all, from the switch.
    pub fn deadline(&self) -> std::time::Duration {
        self.deadline
            .map_or(self.duration.0 * 3, |d| d.0.max(self.duration.0))
    }

    /// The thresholds as the planner's verify policy takes them.
    pub fn policy(&self) -> crate::plan::verify::VerifyPolicy {
        crate::plan::verify::VerifyPolicy {
            duration_ms: self.duration.0.as_millis() as u64,
            deadline_ms: self.deadline().as_millis() as u64,
            max_5xx_ratio: self.max_5xx_ratio.0,
            min_requests: self.min_requests,
            on_inconclusive: self.on_inconclusive,
        }
    }
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

fn default_environment() -> Name {
    Name::new("production")
}
fn one() -> NonZeroU32 {
    NonZeroU32::MIN
}
fn yes() -> bool {
    true
}
fn two() -> NonZeroU32 {
    NonZeroU32::new(2).expect("2 is not zero")
}
fn default_context() -> PathBuf {
    PathBuf::from(".")
}
fn default_dockerfile() -> String {
    "Dockerfile".into()
}
fn default_drain() -> Dur {
    Dur::from_secs(30)
}
fn default_response_timeout() -> Dur {
    Dur::from_secs(60)
}
fn default_eject_after() -> NonZeroU32 {
    NonZeroU32::new(3).expect("nonzero")
}
fn default_cooloff() -> Dur {
    Dur::from_secs(10)
}
fn default_stop_timeout() -> Dur {
    Dur::from_secs(10)
}
fn default_health_path() -> String {
    "/".into()
}
fn default_interval() -> Dur {
    Dur::from_millis(1000)
}
fn default_timeout() -> Dur {
    Dur::from_secs(2)
}
fn default_deadline() -> Dur {
    Dur::from_secs(60)
}
fn default_max_5xx() -> Ratio {
    Ratio(0.01)
}
fn default_min_requests() -> u64 {
    20
}
fn default_hot() -> u32 {
    1
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
    /// Reads and validates a config file. Errors name file:line:column and the key path.
    pub fn load(path: &Path) -> Result<Loaded> {
        Self::load_for(path, None)
    }

    /// `load`, with `platform` (the `--platform` flag) in place of the file's.
    pub fn load_for(path: &Path, platform: Option<PlatformKind>) -> Result<Loaded> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read config {}: {e}", path.display())))?;
        let config = Self::parse_for(&text, &path.display().to_string(), platform)?;
        Ok(Loaded {
            config,
            path: path.to_path_buf(),
        })
    }

    /// Parses config text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config> {
        Self::parse_for(text, origin, None)
    }

    fn parse_for(text: &str, origin: &str, platform: Option<PlatformKind>) -> Result<Config> {
        let mut config: Config =
            serde_saphyr::from_str(text).map_err(|e| locate::describe(&e, text, origin))?;
        if let Some(p) = platform {
            config.platform = p;
        }
        config.validate(text, origin)?;
        Ok(config)
    }

    /// Checks that span several keys, reported at the first key involved.
    fn validate(&self, text: &str, origin: &str) -> Result<()> {
        let fail = |path: &[&str], msg: String| Err(locate::at_key(text, origin, path, &msg));
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
            self.validate_preview(preview, text, origin)?;
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
        if self.platform == PlatformKind::Kubernetes {
            return self.validate_kubernetes(text, origin);
        }
        Ok(())
    }

    /// On Kubernetes Secrets are the cluster's: cyan does not carry them.
    fn validate_kubernetes(&self, text: &str, origin: &str) -> Result<()> {
        let fail = |path: &[&str], msg: String| Err(locate::at_key(text, origin, path, &msg));
        if !self.secrets.is_empty() {
            return fail(
                &["secrets"],
                "on Kubernetes, pass secrets with a Kubernetes Secret (envFrom in the BlueGreenDeployment's template), not through cyan".into(),
            );
        }
        Ok(())
    }

    /// `proxy.preview`: the cyan proxy's, so Docker's only, and on a host
    /// and listen address the app does not serve live.
    fn validate_preview(&self, p: &PreviewConfig, text: &str, origin: &str) -> Result<()> {
        let fail = |path: &[&str], msg: String| Err(locate::at_key(text, origin, path, &msg));
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

    /// A URL a script on this host can open: the app's own listen address
    /// when it has one (an unspecified address as loopback), else its host
    /// on the port the proxy serves hosts on (`served`: the proxy's
    /// `--listen` / `--tls-listen`, as `GET /v1/health` gives them), the
    /// port left out when it is the scheme's own; `https` when the route
    /// terminates TLS; its `path_prefix` after (without it the URL would
    /// open another app on the host, or a 404).
    pub fn url(&self, served: &Health) -> String {
        let tls = self.proxy.tls.is_some();
        let scheme = if tls { "https" } else { "http" };
        let base = match (&self.proxy.host, &self.proxy.listen) {
            // Its own listen address opens from any client on this host;
            // `*.localhost` names do not resolve everywhere (Python's
            // urllib cannot, without nss-myhostname), and the listen
            // address takes every request whatever its Host.
            (_, Some(listen)) => format!("{scheme}://{}", reachable(*listen)),
            (Some(host), None) => {
                let listeners = if tls {
                    &served.tls_listen
                } else {
                    &served.listen
                };
                match listeners.first().map(|a| a.port()) {
                    Some(80) if !tls => format!("http://{host}"),
                    Some(443) if tls => format!("https://{host}"),
                    Some(port) => format!("{scheme}://{host}:{port}"),
                    None => format!("{scheme}://{host}"),
                }
            }
            (None, None) => return String::new(),
        };
        with_prefix(base, self.proxy.path_prefix.as_deref())
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

/// `base` with the path `prefix` routes on (`/api/` as `/api`), if any.
fn with_prefix(base: String, prefix: Option<&str>) -> String {
    match prefix.and_then(crate::proxy::api::prefix_key) {
        Some(p) => base + p,
        None => base,
    }
}

/// `addr` as a client on this host reaches it: an unspecified address
/// (`0.0.0.0`, `[::]`) as loopback.
fn reachable(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    if addr.ip().is_unspecified() {
        let ip: std::net::IpAddr = match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        };
        return std::net::SocketAddr::new(ip, addr.port());
    }
    addr
}

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

#[cfg(test)]
mod tests;
