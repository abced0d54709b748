//! The proxy's errors, grouped as the deployer's are (`cyan::error`), so
//! that a failure of the proxy or of its admin API keeps its exit code when
//! it reaches `cyan`'s command line.

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, by what the caller should do next.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag, a request body or a route spec is wrong: fix the input.
    #[error("{0}")]
    Config(String),
    /// The change makes no sense in the route's state (a conflict, 409).
    #[error("{0}")]
    Refused(String),
    /// Another deploy holds the route's lock.
    #[error("{0}")]
    LockHeld(String),
    /// The proxy (its admin socket) cannot be reached.
    #[error("{0}")]
    Unreachable(String),
    /// An operating-system call or the proxy itself failed.
    #[error("{0}")]
    Platform(String),
}
