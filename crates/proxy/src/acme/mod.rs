//! Certificates from an ACME CA (RFC 8555; Let's Encrypt by default) for
//! routes with `tls: acme`, obtained and renewed by the proxy itself.
//!
//! Why here, in the proxy, and not in the deployer: the CA checks control of
//! a name by talking to the edge, on port 80 (HTTP-01, RFC 8555 §8.3) or
//! on 443 (TLS-ALPN-01, RFC 8737), and the proxy is the edge; it is also
//! what serves the certificates, and it outlives every deploy, where a
//! renewal can fall. So the proxy holds the ACME account (`cyan proxy run
//! --acme-*`), and an app only says `tls: acme`.
//!
//! One task (`spawn`) looks at the ACME routes at start, after every route
//! change, when a certificate falls due and at least every `CHECK_EVERY`.
//! A route whose certificate is missing, does not name each of its hosts,
//! or has less than a third of its lifetime left gets a new one: an order,
//! its challenges answered (`Challenges`, read by `forward` on plain HTTP
//! and by `tls` in the handshake), a new key and CSR, and the chain put into
//! the certificate store (`certs`), which keeps it in
//! `<home>/acme/<route>.pem` (mode 0600) and publishes one new table. The
//! certificate served before stays served until then, so a renewal has no
//! gap; a failure is logged with the CA's reason and tried again with
//! exponential backoff (`RETRY_MIN` to `RETRY_MAX`). The account's key is
//! kept in `<home>/acme/accounts/` (mode 0600), one per directory URL.
//!
//! One file per concept: `options` (the CA and account the proxy is run
//! with), `challenges` (the answers shown to the CA while an order runs),
//! `account` (registered once per CA, and the HTTPS client to it), `order`
//! (one order, RFC 8555 §7.4), `renewal` (the task that decides what is due
//! and retries), `validity` (a certificate's dates, read from its DER).

mod account;
mod challenges;
mod options;
mod order;
mod renewal;
mod validity;

use std::collections::HashMap;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::sync::watch;

pub use challenges::{Challenges, HTTP01_PATH};
pub use options::{AcmeOptions, ChallengeKind, LETS_ENCRYPT};
pub use renewal::{CHECK_EVERY, RETRY_MAX, RETRY_MIN};

use super::router::{normalize_host, Router};
use super::Home;
use renewal::Manager;

/// Whether a route can ask for an ACME certificate: it needs hosts, each a
/// DNS name (the names on the certificate; no IP address, no wildcard).
pub fn check_hosts(hosts: &[String]) -> Result<(), String> {
    if hosts.is_empty() {
        return Err("tls: acme needs hosts: the certificate names the route's hosts".into());
    }
    for host in hosts {
        let host = normalize_host(host);
        if !matches!(
            ServerName::try_from(host.as_ref()),
            Ok(ServerName::DnsName(_))
        ) {
            return Err(format!(
                "tls: acme: {host:?} is not a DNS name; an ACME certificate names hosts"
            ));
        }
    }
    Ok(())
}

/// Starts the task that obtains and renews the ACME routes' certificates,
/// until `stop`. It does nothing (no traffic to the CA) while no route has
/// `tls: acme`.
pub fn spawn(router: Arc<Router>, home: &Home, opts: AcmeOptions, stop: watch::Receiver<bool>) {
    let manager = Manager {
        router,
        dir: home.dir.join("acme"),
        opts,
        account: None,
        retries: HashMap::new(),
    };
    tokio::spawn(manager.run(stop));
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use rustls::pki_types::PrivateKeyDer;
    use rustls::sign::CertifiedKey;

    use super::*;

    /// A self-signed certificate for `hosts`, valid between the two dates
    /// (year, month, day): the tests' certificate, in each of the files.
    pub(super) fn cert(
        hosts: &[&str],
        not_before: (i32, u8, u8),
        not_after: (i32, u8, u8),
    ) -> CertifiedKey {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let cert = params.self_signed(&key).unwrap();
        let key = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let signer = rustls::crypto::ring::sign::any_supported_type(&key).unwrap();
        CertifiedKey::new(vec![cert.der().clone()], signer)
    }

    /// The time `secs` seconds after the Unix epoch.
    pub(super) fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn hosts_must_be_dns_names() {
        assert!(check_hosts(&["web.example.com".into(), "WWW.example.com:443".into()]).is_ok());
        assert!(check_hosts(&[]).unwrap_err().contains("needs hosts"));
        assert!(check_hosts(&["127.0.0.1".into()])
            .unwrap_err()
            .contains("not a DNS name"));
        assert!(check_hosts(&["*.example.com".into()]).is_err());
    }
}
