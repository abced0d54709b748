//! Which phase an app is in, as `cyan status` reports it: deploy policy
//! (what counts as interrupted, what as verifying), so it lives beside
//! `plan`, pure, with its table.

use std::fmt;

use serde::Serialize;

/// What an app is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Nothing is live and no candidate is up.
    NotDeployed,
    /// A deploy holds the lock and has a candidate up.
    Progressing,
    /// A candidate is up, or a verify window is open, and no cyan holds the
    /// lock: the deploy that started it is gone (killed), and nothing moves
    /// until a command continues or aborts it.
    Interrupted,
    /// The candidate passed its gate and waits for `cyan promote`.
    AwaitingApproval,
    /// A deploy holds the lock and watches the live release's verify window.
    Verifying,
    Live,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_value(self).expect("a phase serializes");
        f.write_str(text.as_str().expect("a phase is a string"))
    }
}

/// What the phase is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub live: bool,
    /// `Some(gated)` when a set that was never live is up.
    pub candidate: Option<bool>,
    /// The record holds a verify window for the live release: no verdict
    /// has closed it (however late it is).
    pub verify_open: bool,
    /// A cyan holds the app's lock now (a dead holder's lease is free).
    pub locked: bool,
    pub require_approval: bool,
}

pub fn phase(s: &Seen) -> Phase {
    match (s.live, s.candidate) {
        (_, Some(true)) if s.require_approval => Phase::AwaitingApproval,
        (_, Some(_)) if s.locked => Phase::Progressing,
        (_, Some(_)) => Phase::Interrupted,
        (true, None) if s.verify_open && s.locked => Phase::Verifying,
        (true, None) if s.verify_open => Phase::Interrupted,
        (true, None) => Phase::Live,
        (false, None) => Phase::NotDeployed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_phase_table() {
        let quiet = Seen {
            live: true,
            candidate: None,
            verify_open: false,
            locked: false,
            require_approval: false,
        };
        let cases = [
            (
                Seen {
                    live: false,
                    ..quiet
                },
                Phase::NotDeployed,
            ),
            (quiet, Phase::Live),
            (
                Seen {
                    candidate: Some(false),
                    locked: true,
                    ..quiet
                },
                Phase::Progressing,
            ),
            (
                Seen {
                    candidate: Some(true),
                    locked: true,
                    ..quiet
                },
                Phase::Progressing,
            ),
            (
                Seen {
                    candidate: Some(false),
                    ..quiet
                },
                Phase::Interrupted,
            ),
            (
                Seen {
                    live: false,
                    candidate: Some(false),
                    ..quiet
                },
                Phase::Interrupted,
            ),
            (
                Seen {
                    candidate: Some(true),
                    require_approval: true,
                    ..quiet
                },
                Phase::AwaitingApproval,
            ),
            (
                Seen {
                    candidate: Some(false),
                    require_approval: true,
                    locked: true,
                    ..quiet
                },
                Phase::Progressing,
            ),
            (
                Seen {
                    verify_open: true,
                    locked: true,
                    ..quiet
                },
                Phase::Verifying,
            ),
            (
                Seen {
                    verify_open: true,
                    ..quiet
                },
                Phase::Interrupted,
            ),
        ];
        for (seen, want) in cases {
            assert_eq!(phase(&seen), want, "{seen:?}");
        }
        assert_eq!(Phase::AwaitingApproval.to_string(), "awaiting-approval");
    }
}
