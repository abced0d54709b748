//! The renewal loop: one task that looks at the ACME routes at start,
//! after every route change, when a certificate falls due and at least
//! every `CHECK_EVERY`, orders a certificate for each route that is due
//! (missing, short of a host, or a third of its lifetime left), puts it
//! into the certificate store, and backs off a route whose order failed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use backon::BackoffBuilder;
use instant_acme::Account;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

use super::options::AcmeOptions;
use super::order::ORDER_TIMEOUT;
use super::validity::validity;
use crate::router::{normalize_host, Router};

/// How often the ACME routes are looked at, at the least; also at start,
/// after every route change, and when a certificate falls due.
pub const CHECK_EVERY: Duration = Duration::from_secs(60);

/// The first wait after a failed order; it doubles (with jitter) on each
/// failure in a row, up to `RETRY_MAX`.
pub const RETRY_MIN: Duration = Duration::from_secs(10);
pub const RETRY_MAX: Duration = Duration::from_secs(3600);

/// The renewal task's state. Its orders are `order`'s, its account
/// `account`'s (both `impl Manager` there).
pub(super) struct Manager {
    pub(super) router: Arc<Router>,
    /// `<home>/acme`.
    pub(super) dir: PathBuf,
    pub(super) opts: AcmeOptions,
    /// Made or read at the first order, then kept.
    pub(super) account: Option<Account>,
    /// Routes whose last order failed: when to try again.
    pub(super) retries: HashMap<String, Retry>,
}

pub(super) struct Retry {
    at: Instant,
    /// The hosts that failed: new hosts are tried at once.
    hosts: Vec<String>,
    backoff: backon::ExponentialBackoff,
}

/// Whether a certificate is to be replaced, and why.
#[derive(Debug, PartialEq, Eq)]
enum Due {
    Now(&'static str),
    In(Duration),
}

impl Manager {
    pub(super) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut published = self.router.published();
        loop {
            let wait = tokio::select! {
                biased;
                _ = stop.changed() => return,
                wait = self.pass() => wait,
            };
            tokio::select! {
                _ = stop.changed() => return,
                _ = published.changed() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Orders what is due; returns how long until something may be.
    async fn pass(&mut self) -> Duration {
        let routes = self.router.acme_routes();
        self.retries
            .retain(|r, _| routes.iter().any(|(name, ..)| name == r));
        let mut wait = CHECK_EVERY;
        for (route, hosts, current) in routes {
            let mut hosts: Vec<String> = hosts
                .iter()
                .map(|h| normalize_host(h).into_owned())
                .collect();
            hosts.sort();
            hosts.dedup();
            let why = match due(current.as_deref(), &hosts, SystemTime::now()) {
                Due::In(left) => {
                    wait = wait.min(left);
                    continue;
                }
                Due::Now(why) => why,
            };
            if let Some(retry) = self.retries.get(&route).filter(|r| r.hosts == hosts) {
                let left = retry.at.saturating_duration_since(Instant::now());
                if !left.is_zero() {
                    wait = wait.min(left);
                    continue;
                }
            }
            tracing::info!(%route, ?hosts, why, directory = %self.opts.directory, "ordering a certificate (ACME)");
            let ordered = tokio::time::timeout(ORDER_TIMEOUT, self.order(&hosts))
                .await
                .unwrap_or_else(|_| Err(format!("the order took longer than {ORDER_TIMEOUT:?}")));
            let served = ordered.and_then(|pem| {
                self.router.install_acme(&route, pem.as_bytes())?;
                let now = self.router.acme_routes().into_iter().find(|r| r.0 == route);
                match due(now.and_then(|r| r.2).as_deref(), &hosts, SystemTime::now()) {
                    Due::In(left) => Ok(left),
                    Due::Now(why) => Err(format!("the new certificate is due at once: {why}")),
                }
            });
            match served {
                Ok(left) => {
                    self.retries.remove(&route);
                    let renew_in = humantime::format_duration(Duration::from_secs(left.as_secs()));
                    tracing::info!(%route, ?hosts, %renew_in, "ACME certificate obtained and served");
                    wait = wait.min(left);
                }
                Err(error) => {
                    let retry = self.retries.entry(route.clone()).or_insert_with(|| Retry {
                        at: Instant::now(),
                        hosts: hosts.clone(),
                        backoff: backoff(),
                    });
                    if retry.hosts != hosts {
                        retry.hosts = hosts.clone();
                        retry.backoff = backoff();
                    }
                    let delay = retry.backoff.next().unwrap_or(RETRY_MAX);
                    retry.at = Instant::now() + delay;
                    wait = wait.min(delay);
                    let serving = current.is_some();
                    let retry_in = humantime::format_duration(Duration::from_secs(delay.as_secs()));
                    tracing::warn!(%route, ?hosts, %error, %retry_in, serving_the_last_certificate = serving, "no ACME certificate this time");
                }
            }
        }
        wait
    }
}

/// The backoff between failed orders of one route.
fn backoff() -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::new()
        .with_min_delay(RETRY_MIN)
        .with_max_delay(RETRY_MAX)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// When a route's certificate is to be replaced: now if there is none or it
/// does not name each host, else when a third of its lifetime is left (as
/// Let's Encrypt advises: 30 days before the end of a 90-day certificate).
fn due(cert: Option<&CertifiedKey>, hosts: &[String], now: SystemTime) -> Due {
    let Some(leaf) = cert.and_then(|c| c.cert.first()) else {
        return Due::Now("no certificate yet");
    };
    if !hosts.iter().all(|h| names(leaf, h)) {
        return Due::Now("the certificate does not name every host");
    }
    let Some((not_before, not_after)) = validity(leaf) else {
        return Due::Now("the certificate's validity cannot be read");
    };
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    let renew_at = not_after - lifetime / 3;
    match renew_at.duration_since(now) {
        Ok(left) if !left.is_zero() => Due::In(left),
        _ => Due::Now("a third of its lifetime is left"),
    }
}

/// Whether a certificate is valid for `host` (its subjectAltName).
fn names(leaf: &CertificateDer<'_>, host: &str) -> bool {
    let Ok(parsed) = rustls::server::ParsedCertificate::try_from(leaf) else {
        return false;
    };
    ServerName::try_from(host)
        .is_ok_and(|name| rustls::client::verify_server_name(&parsed, &name).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acme::tests::{at, cert};

    #[test]
    fn a_certificate_is_due_when_missing_short_of_a_host_or_a_third_from_its_end() {
        let hosts = vec!["a.test".to_string(), "www.a.test".to_string()];
        assert_eq!(due(None, &hosts, at(0)), Due::Now("no certificate yet"));
        // 2024-01-01 to 2024-04-01: 91 days; due 30d8h before the end.
        let c = cert(&["a.test", "www.a.test"], (2024, 1, 1), (2024, 4, 1));
        let start = 1_704_067_200;
        let lifetime = 91 * 86_400;
        let renew_at = start + lifetime - lifetime / 3;
        assert_eq!(
            due(Some(&c), &hosts, at(start)),
            Due::In(Duration::from_secs(renew_at - start))
        );
        assert_eq!(
            due(Some(&c), &hosts, at(renew_at)),
            Due::Now("a third of its lifetime is left")
        );
        let short = cert(&["a.test"], (2024, 1, 1), (2024, 4, 1));
        assert_eq!(
            due(Some(&short), &hosts, at(start)),
            Due::Now("the certificate does not name every host")
        );
    }
}
