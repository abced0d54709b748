//! One request's tries at an upstream, and who is to blame when one fails.
//!
//! Every failure is booked on exactly one side, and the same way by the
//! answer, the color's counters (and so `verify` and the metrics) and
//! passive health:
//! - **the client's** (`ClientFault`): a request body that ends early,
//!   stops arriving, or breaks its chunked framing. Answered 400 or 408, or
//!   logged as 499 when the client left; counted as a 4xx; never a failure
//!   of the color, never toward ejecting a replica. Otherwise one anonymous
//!   client could fail a verify (and roll back a healthy release) or eject
//!   healthy replicas by its own behaviour.
//! - **the upstream's**: refused, closed before answering, too slow, or an
//!   invalid response. Answered 502 or 504 and counted as a failure of the
//!   color; the connect-class ones (refused, closed before any byte, too
//!   slow) count toward ejection.
//!
//! A request that may have reached an app is sent again only if its method
//! is idempotent (RFC 9110 §9.2.2) and nothing of its body was streamed:
//! a refused connection (nothing sent) may go to another replica whatever
//! the method, a dropped one only then.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};

use super::pages::Page;
use super::state::RequestPolicy;
use super::upstream::Claim;

/// Why no upstream response came.
#[derive(Debug)]
pub(crate) enum Failed {
    /// No connection could be made: nothing was sent.
    Refused(std::io::Error),
    /// The upstream closed or reset the connection before any byte of a
    /// response. With Docker's userland proxy this is also what a replica
    /// that stopped listening looks like: the engine accepts, then closes.
    Dropped(String),
    /// No response head within the route's response timeout, counted from
    /// the end of the request body.
    Timeout(Duration),
    /// The exchange broke once the upstream was answering, or the response
    /// was invalid.
    Broken(String),
    /// The client's fault, not the upstream's.
    Client(ClientFault),
}

impl Failed {
    /// hyper's path: the exchange failed once the request was (maybe) sent.
    /// A body the client broke (`body`) is the client's fault, whatever the
    /// upstream's connection then reported.
    pub(crate) fn sending(e: hyper::Error, body: Option<&BodyOutcome>) -> Failed {
        match body.and_then(BodyOutcome::fault) {
            Some(fault) => Failed::Client(fault),
            None if connection_ended(&e) => {
                Failed::Dropped(format!("closed without answering: {e}"))
            }
            None => Failed::Broken(e.to_string()),
        }
    }

    /// hyper's path: no response head within `timeout`. Still waiting for
    /// the client's body: the client is slow, not the upstream.
    pub(crate) fn no_answer(timeout: Duration, body: Option<&BodyOutcome>) -> Failed {
        match body {
            Some(o) if !o.ended() => Failed::Client(o.fault().unwrap_or(ClientFault::Slow)),
            _ => Failed::Timeout(timeout),
        }
    }
}

/// What a client did wrong while its request was being forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientFault {
    /// It closed or reset its connection before its request was whole:
    /// logged as 499 (nginx's "client closed request"), as nobody is left to
    /// answer.
    Gone,
    /// Its request body stopped arriving for longer than the body timeout: 408.
    Slow,
    /// Its request body broke its framing (an invalid chunk): 400.
    Malformed,
}

impl ClientFault {
    pub(crate) fn status(self) -> StatusCode {
        match self {
            ClientFault::Gone => StatusCode::from_u16(499).expect("499 is a valid status"),
            ClientFault::Slow => StatusCode::REQUEST_TIMEOUT,
            ClientFault::Malformed => StatusCode::BAD_REQUEST,
        }
    }

    fn why(self) -> &'static str {
        match self {
            ClientFault::Gone => "the client closed the connection before its request was whole",
            ClientFault::Slow => "the request body stopped arriving",
            ClientFault::Malformed => "the request body's framing is invalid",
        }
    }
}

/// What became of a client's body that is being sent on hyper's path
/// (`client_body`): still being read (0), ended, or failed by the client.
/// Shared between the body (on the upstream connection's task) and the
/// request that waits for the response, which books a failure by it.
#[derive(Default)]
pub(crate) struct BodyOutcome(AtomicU8);

const ENDED: u8 = 1;
const GONE: u8 = 2;
const SLOW: u8 = 3;
const MALFORMED: u8 = 4;

impl BodyOutcome {
    /// The client's fault, if its body failed.
    pub(crate) fn fault(&self) -> Option<ClientFault> {
        match self.0.load(Ordering::Acquire) {
            GONE => Some(ClientFault::Gone),
            SLOW => Some(ClientFault::Slow),
            MALFORMED => Some(ClientFault::Malformed),
            _ => None,
        }
    }

    /// The whole body has been read from the client.
    pub(crate) fn ended(&self) -> bool {
        self.0.load(Ordering::Acquire) == ENDED
    }

    pub(crate) fn set_ended(&self) {
        self.set(ENDED);
    }

    pub(crate) fn set_fault(&self, fault: ClientFault) {
        self.set(match fault {
            ClientFault::Gone => GONE,
            ClientFault::Slow => SLOW,
            ClientFault::Malformed => MALFORMED,
        });
    }

    fn set(&self, to: u8) {
        self.0.store(to, Ordering::Release);
    }
}

/// Whether an HTTP exchange failed because the other side closed or reset
/// the connection before the message was whole: a client that left (its
/// body), or an upstream that dropped a request without answering.
pub(crate) fn connection_ended(e: &hyper::Error) -> bool {
    use std::error::Error as _;
    use std::io::ErrorKind;
    if e.is_incomplete_message() {
        return true;
    }
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ErrorKind::UnexpectedEof
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
            );
        }
        source = s.source();
    }
    false
}

/// Whether a request with this method may be sent twice (RFC 9110 §9.2.2).
pub(crate) fn idempotent(method: &[u8]) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ]
    .iter()
    .any(|m| m.as_str().as_bytes() == method)
}

/// One request's tries at an upstream exchange: the claim it is on, and
/// whether it may still go to another replica (once: a container that just
/// died costs no request).
pub(crate) struct Attempt<'p> {
    pub claim: Claim,
    policy: &'p RequestPolicy,
    started: Instant,
    retried: bool,
    /// Idempotent, with nothing of its body streamed: may be sent again.
    replayable: bool,
}

impl<'p> Attempt<'p> {
    pub fn new(
        claim: Claim,
        policy: &'p RequestPolicy,
        started: Instant,
        replayable: bool,
    ) -> Self {
        Attempt {
            claim,
            policy,
            started,
            retried: false,
            replayable,
        }
    }

    /// The upstream answered: its failure streak ends.
    pub fn answered(self) -> Claim {
        self.claim.answered();
        self.claim
    }

    /// Books a failed try on the side at fault. `Ok`: try again, on the new
    /// `claim`; `Err`: the page for the client (already counted).
    pub fn failed(&mut self, failed: Failed) -> Result<(), Page> {
        let elapsed = self.started.elapsed();
        let (status, why) = match failed {
            Failed::Client(fault) => {
                let stats = &self.claim.balancer().stats;
                stats.record(fault.status().as_u16(), elapsed);
                tracing::debug!(upstream = %self.claim.addr(), status = %fault.status(), why = fault.why(), "client fault");
                return Err(Page::error(fault.status(), fault.why()));
            }
            Failed::Refused(e) => {
                self.claim.failed(self.policy);
                if self.retry_elsewhere(true) {
                    return Ok(());
                }
                (StatusCode::BAD_GATEWAY, e.to_string())
            }
            Failed::Dropped(why) => {
                self.claim.failed(self.policy);
                if self.retry_elsewhere(self.replayable) {
                    return Ok(());
                }
                (StatusCode::BAD_GATEWAY, why)
            }
            Failed::Timeout(t) => {
                self.claim.failed(self.policy);
                (
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("no response within {t:?}"),
                )
            }
            Failed::Broken(why) => (StatusCode::BAD_GATEWAY, why),
        };
        let claim = &self.claim;
        claim
            .balancer()
            .stats
            .record_failure(status.as_u16(), elapsed);
        tracing::warn!(upstream = %claim.addr(), %status, error = %why, "upstream request failed");
        Err(Page::upstream_failed(status, claim.addr(), &why))
    }

    /// Moves the request to another replica, once, when `allowed`; the try
    /// that failed counts as a failed try of the color, not as an answer.
    fn retry_elsewhere(&mut self, allowed: bool) -> bool {
        if !allowed || self.retried {
            return false;
        }
        self.retried = true;
        let Some(next) = self.claim.balancer().claim(self.policy) else {
            return false;
        };
        if next.addr() == self.claim.addr() {
            return false;
        }
        self.claim.balancer().stats.record_failed_try();
        self.claim = next;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_idempotent_methods_may_be_sent_twice() {
        for m in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
            assert!(idempotent(m.as_bytes()), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT", "get", "LOCK"] {
            assert!(!idempotent(m.as_bytes()), "{m}");
        }
    }

    #[test]
    fn a_clients_fault_is_a_4xx_or_499() {
        assert_eq!(ClientFault::Gone.status().as_u16(), 499);
        assert_eq!(ClientFault::Slow.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(ClientFault::Malformed.status(), StatusCode::BAD_REQUEST);
    }
}
