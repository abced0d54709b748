//! TLS for tests: certificates made on the spot, and a client that trusts
//! only the roots a test gives it.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use cyan::proxy::state::TlsFiles;
use rustls::pki_types::CertificateDer;

/// A self-signed certificate for `host`, made by the openssl command (a new
/// key and a random serial each time).
pub fn self_signed(dir: &Path, host: &str) -> TlsFiles {
    std::fs::create_dir_all(dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", &format!("/CN={host}")])
        .args(["-addext", &format!("subjectAltName=DNS:{host}")])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    TlsFiles { cert, key }
}

/// A client that verifies servers (chain and validity period) against
/// `roots` alone, offering `alpn`.
pub fn connector(roots: &[CertificateDer<'static>], alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}
