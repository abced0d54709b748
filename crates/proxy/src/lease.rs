//! The deploy lock: a lease on one route, so two deploys of one app never
//! interleave their steps.
//!
//! A deploy takes the lease with a token of its own and renews it while it
//! runs; it is held until its ttl runs out after the last renewal, or
//! until its holder's process is gone from this host. The lease is kept in
//! the route's state (`RouteState::lock`), so it is persisted with the
//! route and removed with it. The rules here are pure: the control plane
//! (`control`) applies them inside one route change.

use serde::{Deserialize, Serialize};

use super::api::LockRequest;

/// A deploy lock: a lease renewed by its holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub token: String,
    /// Human description: "deploy 1.4.0 by alice".
    pub holder: String,
    pub pid: u32,
    pub host: String,
    /// RFC 3339.
    pub since: String,
    pub renewed_ms: u64,
    pub ttl_ms: u64,
}

impl Lock {
    /// Is the lease still held at `now_ms`? Not once it expired, nor once
    /// its holder's process is gone from this host (a SIGKILLed deploy
    /// frees its app at once rather than after the lease).
    pub fn held(&self, now_ms: u64) -> bool {
        let expired = now_ms > self.renewed_ms + self.ttl_ms;
        let gone = self.host == crate::clock::hostname() && !crate::clock::pid_alive(self.pid);
        !expired && !gone
    }

    pub fn describe(&self) -> String {
        format!(
            "{} (pid {} on {}, since {})",
            self.holder, self.pid, self.host, self.since
        )
    }
}

/// Takes the lease for `req`, or renews it when `req`'s token holds it
/// already, at `now_ms`. A renewal keeps the lease's `since`; anyone may
/// take a lease that is no longer `held`. `Err`: the lease held by another
/// token, as it stands.
pub fn take(current: Option<&Lock>, req: LockRequest, now_ms: u64) -> Result<Lock, Lock> {
    if let Some(held) = current {
        if held.token != req.token && held.held(now_ms) {
            return Err(held.clone());
        }
    }
    let since = match current {
        Some(l) if l.token == req.token => l.since.clone(),
        _ => crate::clock::now_rfc3339(),
    };
    Ok(Lock {
        token: req.token,
        holder: req.holder,
        pid: req.pid,
        host: req.host,
        since,
        renewed_ms: now_ms,
        ttl_ms: req.ttl_ms,
    })
}

/// Lets the lease go if `token` holds it; under any other token (a lease
/// that expired and was taken by another) it stays as it is.
pub fn release(current: &mut Option<Lock>, token: &str) {
    if current.as_ref().is_some_and(|l| l.token == token) {
        *current = None;
    }
}

/// The lease that stands in the way of `token` at `now_ms`, if any: one
/// still held, by another token (`None`: the caller holds none).
pub fn held_against<'l>(
    current: Option<&'l Lock>,
    token: Option<&str>,
    now_ms: u64,
) -> Option<&'l Lock> {
    current.filter(|l| l.held(now_ms) && Some(l.token.as_str()) != token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(token: &str) -> LockRequest {
        LockRequest {
            token: token.into(),
            holder: format!("deploy by {token}"),
            pid: std::process::id(),
            host: crate::clock::hostname(),
            ttl_ms: 1_000,
        }
    }

    #[test]
    fn a_lease_is_taken_renewed_and_refused_to_others() {
        let first = take(None, request("t1"), 10_000).unwrap();
        assert_eq!((first.token.as_str(), first.renewed_ms), ("t1", 10_000));
        let renewed = take(Some(&first), request("t1"), 10_500).unwrap();
        assert_eq!(renewed.renewed_ms, 10_500);
        assert_eq!(renewed.since, first.since, "a renewal keeps since");
        let refused = take(Some(&renewed), request("t2"), 11_000).unwrap_err();
        assert_eq!(refused, renewed, "the holder's lease, as it stands");
        assert_eq!(
            held_against(Some(&renewed), Some("t2"), 11_000),
            Some(&renewed)
        );
        assert_eq!(held_against(Some(&renewed), None, 11_000), Some(&renewed));
        assert_eq!(held_against(Some(&renewed), Some("t1"), 11_000), None);
    }

    #[test]
    fn an_expired_lease_or_a_gone_holder_holds_nothing() {
        let lease = take(None, request("t1"), 10_000).unwrap();
        assert!(lease.held(11_000));
        assert!(!lease.held(11_001), "past its ttl");
        let taken = take(Some(&lease), request("t2"), 11_001).unwrap();
        assert_eq!(taken.token, "t2");
        // A holder whose process is gone from this host holds nothing.
        let dead = Lock {
            pid: u32::MAX,
            ..lease.clone()
        };
        assert!(!dead.held(10_000));
        assert_eq!(held_against(Some(&dead), None, 10_000), None);
        // On another host, the pid says nothing: only the ttl counts.
        let elsewhere = Lock {
            host: "another-host.invalid".into(),
            ..dead
        };
        assert!(elsewhere.held(10_000));
    }

    #[test]
    fn only_the_holder_releases_a_lease() {
        let mut lease = Some(take(None, request("t1"), 10_000).unwrap());
        release(&mut lease, "t2");
        assert!(lease.is_some());
        release(&mut lease, "t1");
        assert_eq!(lease, None);
        release(&mut lease, "t1");
        assert_eq!(lease, None, "releasing nothing is no error");
    }
}
