//! One error type for the whole crate, and the exit code each kind maps to.
//!
//! Exit codes are part of cyan's contract with pipelines: a CI job can tell a
//! bad config from a failed health gate from a held lock without parsing text.
//! They are documented in README.md; change them only with a major version.

use std::process::ExitCode;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, grouped by what the user should do next.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file or a flag is wrong. Fix the input and run again.
    #[error("{0}")]
    Config(String),
    /// The candidate never became healthy. Blue kept serving.
    #[error("{0}")]
    GateFailed(String),
    /// Another cyan holds the app's deploy lock.
    #[error("{0}")]
    LockHeld(String),
    /// The Docker engine, the proxy or the registry cannot be reached.
    #[error("{0}")]
    Unreachable(String),
    /// The release was live but failed verification, and cyan switched back.
    #[error("{0}")]
    VerifyFailed(String),
    /// The image build failed.
    #[error("{0}")]
    Build(String),
    /// A push to the registry failed.
    #[error("{0}")]
    Push(String),
    /// The request makes no sense in the current state (nothing to roll back to, ...).
    #[error("{0}")]
    Refused(String),
    /// A lifecycle hook failed (or vetoed the switch). What it did to
    /// traffic is in the message.
    #[error("{0}")]
    HookFailed(String),
    /// A platform call failed in a way that is not one of the above.
    #[error("{0}")]
    Platform(String),
}

/// Named process exit codes. See README.md, "Exit codes".
pub mod exit {
    pub const OK: u8 = 0;
    pub const INTERNAL: u8 = 1;
    pub const CONFIG: u8 = 2;
    pub const GATE_FAILED: u8 = 3;
    pub const LOCK_HELD: u8 = 4;
    pub const UNREACHABLE: u8 = 5;
    pub const VERIFY_FAILED: u8 = 6;
    pub const BUILD_FAILED: u8 = 7;
    pub const PUSH_FAILED: u8 = 8;
    pub const REFUSED: u8 = 9;
    pub const HOOK_FAILED: u8 = 10;
}

impl Error {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Error::Config(_) => exit::CONFIG,
            Error::GateFailed(_) => exit::GATE_FAILED,
            Error::LockHeld(_) => exit::LOCK_HELD,
            Error::Unreachable(_) => exit::UNREACHABLE,
            Error::VerifyFailed(_) => exit::VERIFY_FAILED,
            Error::Build(_) => exit::BUILD_FAILED,
            Error::Push(_) => exit::PUSH_FAILED,
            Error::Refused(_) => exit::REFUSED,
            Error::HookFailed(_) => exit::HOOK_FAILED,
            Error::Platform(_) => exit::INTERNAL,
        })
    }

    /// The same kind of error with a note appended to its message.
    pub fn annotate(&self, note: &str) -> Error {
        self.with_text(format!("{self}; {note}"))
    }

    /// An error of the same kind (so the same exit code) saying `text`.
    pub fn with_text(&self, text: String) -> Error {
        match self {
            Error::Config(_) => Error::Config(text),
            Error::GateFailed(_) => Error::GateFailed(text),
            Error::LockHeld(_) => Error::LockHeld(text),
            Error::Unreachable(_) => Error::Unreachable(text),
            Error::VerifyFailed(_) => Error::VerifyFailed(text),
            Error::Build(_) => Error::Build(text),
            Error::Push(_) => Error::Push(text),
            Error::Refused(_) => Error::Refused(text),
            Error::HookFailed(_) => Error::HookFailed(text),
            Error::Platform(_) => Error::Platform(text),
        }
    }

    /// A short stable label, for JSON output and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Config(_) => "config",
            Error::GateFailed(_) => "gate_failed",
            Error::LockHeld(_) => "lock_held",
            Error::Unreachable(_) => "unreachable",
            Error::VerifyFailed(_) => "verify_failed",
            Error::Build(_) => "build_failed",
            Error::Push(_) => "push_failed",
            Error::Refused(_) => "refused",
            Error::HookFailed(_) => "hook_failed",
            Error::Platform(_) => "platform",
        }
    }
}

impl From<cyan_proxy::Error> for Error {
    /// The same kind: the proxy's errors are grouped as these are.
    fn from(e: cyan_proxy::Error) -> Self {
        use cyan_proxy::Error as P;
        match e {
            P::Config(m) => Error::Config(m),
            P::Refused(m) => Error::Refused(m),
            P::LockHeld(m) => Error::LockHeld(m),
            P::Unreachable(m) => Error::Unreachable(m),
            P::Platform(m) => Error::Platform(m),
        }
    }
}

impl From<cyan_plan::release::Invalid> for Error {
    /// A color or version that is not one is bad input.
    fn from(e: cyan_plan::release::Invalid) -> Self {
        Error::Config(e.0)
    }
}

impl From<bollard::errors::Error> for Error {
    fn from(e: bollard::errors::Error) -> Self {
        use bollard::errors::Error as B;
        match e {
            B::HyperResponseError { .. }
            | B::IOError { .. }
            | B::SocketNotFoundError(_)
            | B::RequestTimeoutError => Error::Unreachable(format!(
                "cannot reach the Docker engine: {e}. Is dockerd running, and is DOCKER_HOST right?"
            )),
            other => Error::Platform(format!("docker: {other}")),
        }
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        match &e {
            kube::Error::Api(s) if matches!(s.code, 401 | 403) => Error::Config(format!(
                "the Kubernetes API refused cyan ({} {}): {}. Check the kubeconfig context and RBAC (manifests/rbac.yaml)",
                s.code, s.reason, s.message
            )),
            kube::Error::Api(s) if s.code == 422 => Error::Config(format!(
                "the Kubernetes API rejected an object as invalid: {}",
                s.message
            )),
            kube::Error::Api(s) if s.code == 429 || s.code >= 500 => Error::Unreachable(format!(
                "the Kubernetes API is failing ({} {}): {}",
                s.code, s.reason, s.message
            )),
            kube::Error::Api(s) => Error::Platform(format!(
                "Kubernetes API: {} {}: {}",
                s.code, s.reason, s.message
            )),
            kube::Error::HyperError(_) | kube::Error::Service(_) => Error::Unreachable(format!(
                "cannot reach the Kubernetes API: {e}. Is the cluster up, and is KUBECONFIG right?"
            )),
            _ => Error::Platform(format!("kubernetes: {e}")),
        }
    }
}

/// Whether an error is the API's optimistic-concurrency conflict (409).
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}
