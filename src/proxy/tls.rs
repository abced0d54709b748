//! TLS termination with rustls (ring; no OpenSSL), from PEM files.
//!
//! A route may name a certificate and key. The proxy loads them into the
//! routing table when the route changes, so a handshake picks its
//! certificate with one lock-free table load: by SNI among every route's
//! hosts, else the certificate of the route that owns the listen address.
//! ALPN offers h2 and http/1.1.

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

/// The server side of one TLS listener.
pub fn server_config(router: Arc<Router>, local: SocketAddr) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver { router, local }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
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
        let table = self.router.table();
        hello
            .server_name()
            .and_then(|sni| table.cert_for_host(&normalize_host(sni)))
            .or_else(|| table.cert_for_listen(self.local))
    }
}
