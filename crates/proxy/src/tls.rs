//! TLS termination with rustls (ring; no OpenSSL), from PEM files.
//!
//! A route may name a certificate and key. The proxy loads them into the
//! routing table when the route changes, so a handshake picks its
//! certificate with one lock-free table load: by SNI among every route's
//! hosts, else the certificate of the route that owns the listen address.
//! ALPN offers h2 and http/1.1, and `acme-tls/1`: a ClientHello that
//! offers it is an ACME server checking a TLS-ALPN-01 challenge (RFC 8737),
//! answered with that challenge's certificate and closed after the handshake.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use super::router::{normalize_host, Router};
use super::state::TlsFiles;

/// Reads a PEM certificate chain and its private key.
pub fn load(files: &TlsFiles) -> Result<Arc<CertifiedKey>, String> {
    let name = |p: &Path| p.display().to_string();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("certificate {}: {e}", name(&files.cert)))?;
    if certs.is_empty() {
        return Err(format!(
            "certificate {}: no CERTIFICATE block in it",
            name(&files.cert)
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("key {}: {e}", name(&files.key)))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("key {}: {e}", name(&files.key)))?;
    let certified = CertifiedKey::new(certs, signer);
    certified.keys_match().map_err(|e| {
        format!(
            "{} and {} do not belong together: {e}",
            name(&files.cert),
            name(&files.key)
        )
    })?;
    Ok(Arc::new(certified))
}

/// The ALPN protocol of TLS-ALPN-01 challenges (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Whether a connection was an ACME server's TLS-ALPN-01 check: it
/// negotiated `acme-tls/1` (listed first, so any ClientHello that offers it
/// does). It is closed after the handshake, never served as HTTP (RFC 8737
/// §3).
pub fn is_acme_challenge(conn: &rustls::ServerConnection) -> bool {
    conn.alpn_protocol() == Some(ACME_TLS_ALPN)
}

/// The server side of one TLS listener.
pub fn server_config(router: Arc<Router>, local: SocketAddr) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver { router, local }));
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec(), b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

struct Resolver {
    router: Arc<Router>,
    local: SocketAddr,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Resolver({})", self.local)
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // An ACME server validating TLS-ALPN-01 gets the challenge's
        // certificate for the name, or no handshake (RFC 8737 §3).
        if hello
            .alpn()
            .is_some_and(|mut offered| offered.any(|p| p == ACME_TLS_ALPN))
        {
            let sni = hello.server_name()?;
            return self.router.acme.tls_alpn01(&normalize_host(sni));
        }
        let table = self.router.table();
        hello
            .server_name()
            .and_then(|sni| table.cert_for_host(&normalize_host(sni)))
            .or_else(|| table.cert_for_listen(self.local))
    }
}
