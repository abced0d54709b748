//! One upstream (a replica's address) and a request's claim on it.
//!
//! A request *claims* an upstream before it is proxied and releases the claim
//! when its response body (or its tunnel) ends. So every request is counted on
//! exactly one color, and "the old color has drained" is a sum of claims
//! (kamal-proxy's `target.go` `StartRequest` and `Drain`).
//!
//! A claim also reports how the upstream did (passive health): a streak of
//! refused or timed-out tries at the route's length takes the upstream out
//! of its load balancer's rotation for a cool-off.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use super::conn_pool::ConnPool;
use super::load_balancer::LoadBalancer;
use super::state::RequestPolicy;
use super::workers::PerThread;

/// One replica of a color, at its address: its connections, its requests
/// in flight, and its passive health.
pub struct Upstream {
    pub addr: SocketAddr,
    pub conns: ConnPool,
    inflight: PerThread<AtomicU64>,
    /// Connect failures and timeouts in a row.
    failures: AtomicU32,
    /// Ejected until this many ms after its load balancer's epoch (0: not
    /// ejected).
    ejected_until_ms: AtomicU64,
}

impl Upstream {
    pub(super) fn new(addr: SocketAddr) -> Upstream {
        Upstream {
            addr,
            conns: ConnPool::new(addr),
            inflight: PerThread::default(),
            failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
        }
    }

    /// Requests on it that have not finished.
    pub(super) fn inflight(&self) -> u64 {
        self.inflight.iter().map(|n| n.load(Relaxed)).sum()
    }

    /// Out of rotation until this many ms after its load balancer's epoch
    /// (0: in rotation).
    pub(super) fn ejected_until_ms(&self) -> u64 {
        self.ejected_until_ms.load(Relaxed)
    }

    pub(super) fn eject_until_ms(&self, until: u64) {
        self.ejected_until_ms.store(until, Relaxed);
    }
}

/// A request's hold on one upstream; released on drop.
pub struct Claim {
    balancer: Arc<LoadBalancer>,
    idx: usize,
    /// The in-flight shard it counts in (released there too, on any thread).
    shard: usize,
}

impl Claim {
    /// Counts a request in flight on the balancer's upstream `idx`, in
    /// this thread's `shard`, until the claim is dropped.
    pub(super) fn new(balancer: Arc<LoadBalancer>, idx: usize, shard: usize) -> Claim {
        balancer
            .upstream(idx)
            .inflight
            .get(shard)
            .fetch_add(1, Relaxed);
        Claim {
            balancer,
            idx,
            shard,
        }
    }

    fn upstream(&self) -> &Upstream {
        self.balancer.upstream(self.idx)
    }

    pub fn addr(&self) -> SocketAddr {
        self.upstream().addr
    }

    /// The load balancer of the color it is on.
    pub fn balancer(&self) -> &Arc<LoadBalancer> {
        &self.balancer
    }

    /// The claimed upstream's connections.
    pub fn conns(&self) -> &ConnPool {
        &self.upstream().conns
    }

    /// The upstream answered: its failure streak ends. (Read first: a
    /// store on every request would pull the line from the other cores.)
    pub fn answered(&self) {
        let failures = &self.upstream().failures;
        if failures.load(Relaxed) != 0 {
            failures.store(0, Relaxed);
        }
    }

    /// The upstream refused the connection or timed out. At the policy's
    /// streak length it is ejected for the cool-off period.
    pub fn failed(&self, policy: &RequestPolicy) {
        let u = self.upstream();
        let streak = u.failures.fetch_add(1, Relaxed) + 1;
        if streak >= policy.eject_after {
            u.failures.store(0, Relaxed);
            u.eject_until_ms(self.balancer.now_ms() + policy.eject_for_ms.max(1));
            tracing::warn!(upstream = %u.addr, streak, cooloff_ms = policy.eject_for_ms, "upstream ejected");
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.upstream()
            .inflight
            .get(self.shard)
            .fetch_sub(1, Relaxed);
    }
}
