//! `health:`: the gate's one probe (http, tcp or command), its timing and
//! thresholds. A concept of its own: the gate (`crate::health`) runs it, and
//! a release records it in its `Runtime`, so a rollback is gated as before.

use std::num::NonZeroU32;

use serde::{Deserialize, Serialize};

use super::{values, Dur, StatusRange};

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
    pub(super) fn conflict(&self) -> Option<(&'static str, String)> {
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

pub(super) fn default_health_path() -> String {
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
fn two() -> NonZeroU32 {
    NonZeroU32::new(2).expect("2 is not zero")
}
fn yes() -> bool {
    true
}
