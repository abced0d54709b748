//! The challenges being answered (RFC 8555 §8): what the CA is shown while
//! an order validates a name. HTTP-01's key authorizations are read by
//! `forward` on plain HTTP (at `HTTP01_PATH`), TLS-ALPN-01's certificates
//! (RFC 8737) by `tls` in the handshake; an order puts them up
//! (`Answering`) and takes them down when it ends, however it ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use instant_acme::KeyAuthorization;
use rustls::pki_types::PrivateKeyDer;
use rustls::sign::CertifiedKey;

use crate::router::normalize_host;

/// The path an HTTP-01 answer is fetched at, followed by the token (RFC
/// 8555 §8.3).
pub const HTTP01_PATH: &str = "/.well-known/acme-challenge/";

/// The challenges being validated now, by type: what the request path and
/// the TLS resolver answer the CA with. Empty but for the seconds of an
/// order.
#[derive(Default)]
pub struct Challenges {
    /// HTTP-01: token to key authorization (RFC 8555 §8.1, §8.3).
    http01: Mutex<HashMap<String, String>>,
    /// TLS-ALPN-01: host (normalized) to its challenge certificate (RFC
    /// 8737 §3).
    tls_alpn01: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl Challenges {
    /// The answer to `GET /.well-known/acme-challenge/<token>` while the
    /// token is being validated: the key authorization, as the whole body
    /// (RFC 8555 §8.3).
    pub fn http01(&self, token: &str) -> Option<String> {
        self.http01
            .lock()
            .expect("challenges lock")
            .get(token)
            .cloned()
    }

    /// The certificate for a TLS-ALPN-01 handshake with SNI `host` while the
    /// host is being validated (RFC 8737 §3).
    pub fn tls_alpn01(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        self.tls_alpn01
            .lock()
            .expect("challenges lock")
            .get(host)
            .cloned()
    }
}

/// The challenges one order put up, taken down when it ends however it ends.
pub(super) struct Answering<'a> {
    challenges: &'a Challenges,
    tokens: Vec<String>,
    hosts: Vec<String>,
}

impl<'a> Answering<'a> {
    pub(super) fn new(challenges: &'a Challenges) -> Self {
        Answering {
            challenges,
            tokens: Vec::new(),
            hosts: Vec::new(),
        }
    }

    pub(super) fn http01(&mut self, token: &str, key_authorization: &KeyAuthorization) {
        let mut answers = self.challenges.http01.lock().expect("challenges lock");
        answers.insert(token.to_string(), key_authorization.as_str().to_string());
        self.tokens.push(token.to_string());
    }

    pub(super) fn tls_alpn01(&mut self, host: &str, cert: Arc<CertifiedKey>) {
        let host = normalize_host(host).into_owned();
        let mut answers = self.challenges.tls_alpn01.lock().expect("challenges lock");
        answers.insert(host.clone(), cert);
        self.hosts.push(host);
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        let mut http01 = self.challenges.http01.lock().expect("challenges lock");
        self.tokens.iter().for_each(|t| drop(http01.remove(t)));
        drop(http01);
        let mut tls_alpn01 = self.challenges.tls_alpn01.lock().expect("challenges lock");
        self.hosts.iter().for_each(|h| drop(tls_alpn01.remove(h)));
    }
}

/// The TLS-ALPN-01 certificate for `name` (RFC 8737 §3): self-signed,
/// naming `name` alone, with the critical acmeIdentifier extension holding
/// the SHA-256 digest of the key authorization.
pub(super) fn alpn_certificate(
    name: &str,
    key_authorization: &KeyAuthorization,
) -> Result<Arc<CertifiedKey>, String> {
    let fail = |e: rcgen::Error| format!("TLS-ALPN-01 certificate for {name}: {e}");
    let key = rcgen::KeyPair::generate().map_err(fail)?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).map_err(fail)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(
        key_authorization.digest().as_ref(),
    )];
    let cert = params.self_signed(&key).map_err(fail)?;
    let key = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("TLS-ALPN-01 key for {name}: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signer,
    )))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::acme::tests::cert;
    use crate::router::Router;

    /// Both request paths (the fast path and hyper's) route through
    /// `Forwarder::claim`, which answers a pending HTTP-01 token itself, on
    /// plain HTTP only.
    #[tokio::test]
    async fn a_pending_http01_token_is_answered_before_any_route() {
        use crate::forward::{ClientConn, Forwarder};
        let dir = std::env::temp_dir().join(format!("cyan-acme-claim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let router = Arc::new(Router::restore(dir.join("proxy.json")).unwrap());
        router
            .acme
            .http01
            .lock()
            .unwrap()
            .insert("tok".into(), "tok.thumb".into());
        let timeouts = crate::timeouts::Timeouts {
            header: Duration::from_secs(1),
            body: Duration::from_secs(1),
            idle: Duration::from_secs(1),
        };
        let local = "127.0.0.1:80".parse().unwrap();
        let peer = "127.0.0.1:5000".parse().unwrap();
        for (scheme, answered) in [("http", true), ("https", false)] {
            let forwarder = Arc::new(Forwarder::new(router.clone(), scheme, timeouts));
            let client = ClientConn::new(forwarder.clone(), local, peer);
            let Err(own) = forwarder
                .claim(Some("web.test"), &client, "/.well-known/acme-challenge/tok")
                .await
            else {
                panic!("no route, yet claimed");
            };
            assert_eq!(own.status == hyper::StatusCode::OK, answered, "{scheme}");
            assert_eq!(own.body == "tok.thumb", answered, "{scheme}");
        }
        let forwarder = Arc::new(Forwarder::new(router.clone(), "http", timeouts));
        let client = ClientConn::new(forwarder.clone(), local, peer);
        let Err(own) = forwarder
            .claim(
                Some("web.test"),
                &client,
                "/.well-known/acme-challenge/other",
            )
            .await
        else {
            panic!("no route, yet claimed");
        };
        assert_eq!(
            own.status,
            hyper::StatusCode::NOT_FOUND,
            "not pending: routed"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn answers_are_up_only_while_their_order_runs() {
        let challenges = Challenges::default();
        let c = Arc::new(cert(&["a.test"], (2024, 1, 1), (2034, 1, 1)));
        {
            let mut answering = Answering::new(&challenges);
            answering.tls_alpn01("A.test", c.clone());
            assert!(challenges.tls_alpn01("a.test").is_some());
            assert!(challenges.http01("token").is_none());
        }
        assert!(challenges.tls_alpn01("a.test").is_none());
    }
}
