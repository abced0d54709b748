//! The per-app deploy lock, held as a lease in the proxy and renewed in the
//! background while cyan works.
//!
//! A crashed holder's lease is released at once when the proxy can see its
//! pid is gone (same host), else when the lease expires, so `kill -9` never
//! leaves an app locked for good.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::output::Output;
use crate::proxy::api::LockRequest;
use crate::proxy::client::AdminClient;

const TTL: Duration = Duration::from_secs(15);
const RENEW_EVERY: Duration = Duration::from_secs(4);

pub struct DeployLock {
    client: AdminClient,
    route: String,
    pub token: String,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl DeployLock {
    /// Takes the lock for `route`, waiting up to `wait` for another holder.
    pub async fn acquire(
        client: &AdminClient,
        route: &str,
        what: &str,
        wait: Duration,
        out: &Output,
    ) -> Result<DeployLock> {
        let user = crate::clock::user();
        let req = LockRequest {
            token: crate::clock::random_token(),
            holder: format!("{what} by {user}"),
            pid: std::process::id(),
            host: crate::clock::hostname(),
            ttl_ms: TTL.as_millis() as u64,
        };
        let deadline = Instant::now() + wait;
        let mut said = false;
        loop {
            match client.lock(route, &req).await {
                Ok(_) => break,
                Err(cyan_proxy::Error::LockHeld(msg)) if Instant::now() < deadline => {
                    if !said {
                        out.phase(format!("waiting for the deploy lock: {msg}"));
                        said = true;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                // Another host's proxy cannot see that a cyan on this
                // machine is gone (killed): its lease is waited out.
                Err(cyan_proxy::Error::LockHeld(msg))
                    if orphaned(client, route).await.is_some_and(|left| left < TTL * 2) =>
                {
                    if !said {
                        out.phase(format!(
                            "waiting for the deploy lock of a cyan on this machine that is gone ({msg}): its lease ends within {}s",
                            TTL.as_secs()
                        ));
                        said = true;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(cyan_proxy::Error::LockHeld(msg)) => {
                    return Err(Error::LockHeld(format!(
                        "{msg}. Another deploy of this app is running; wait for it, or pass --lock-wait 5m to queue behind it"
                    )))
                }
                Err(e) => return Err(e.into()),
            }
        }
        if said {
            out.done("took the deploy lock");
        }
        let heartbeat = {
            let client = client.clone();
            let route = route.to_string();
            let req = req.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(RENEW_EVERY).await;
                    if let Err(e) = client.lock(&route, &req).await {
                        tracing::warn!(error = %e, "could not renew the deploy lock");
                    }
                }
            })
        };
        Ok(DeployLock {
            client: client.clone(),
            route: route.to_string(),
            token: req.token,
            heartbeat,
        })
    }

    /// Stops renewing the lease, which a renewal would otherwise bring
    /// back after the route is removed (`cyan remove`).
    pub fn stop_renewing(&self) {
        self.heartbeat.abort();
    }

    pub async fn release(self) {
        self.heartbeat.abort();
        if let Err(e) = self.client.unlock(&self.route, &self.token).await {
            tracing::warn!(error = %e, "could not release the deploy lock; it expires on its own");
        }
    }
}

/// How long the lease on `route` has left, when its holder is a cyan on
/// this machine whose process is gone (a proxy on another host cannot see
/// that, so it waits for the lease to end); `None` otherwise.
async fn orphaned(client: &AdminClient, route: &str) -> Option<Duration> {
    let lock = client.route(route).await.ok()??.state.lock?;
    let gone = lock.host == crate::clock::hostname() && !crate::clock::pid_alive(lock.pid);
    let ends = lock.renewed_ms + lock.ttl_ms;
    gone.then(|| Duration::from_millis(ends.saturating_sub(crate::clock::now_ms())))
}
