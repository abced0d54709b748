//! The roots a notification's TLS connection is verified against, the same
//! for HTTPS and SMTP (and `cyan watch --url`'s https): Mozilla's (webpki-root-certs, compiled in, since the
//! image is `FROM scratch` and has no `/etc/ssl`), the host's where it has
//! some (rustls-native-certs: `SSL_CERT_FILE`, `SSL_CERT_DIR`, the
//! distribution's bundle; a private CA installed there is trusted), and a
//! destination's own `ca_file`.

use std::collections::HashSet;
use std::path::Path;
use std::sync::OnceLock;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

/// Mozilla's roots and the host's, each one a trust anchor rustls accepts;
/// read once per process.
fn shared() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let host = rustls_native_certs::load_native_certs().certs;
        let mut seen = HashSet::new();
        webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .cloned()
            .chain(host)
            .filter(|cert| seen.insert(cert.to_vec()))
            .filter(|cert| RootCertStore::empty().add(cert.clone()).is_ok())
            .collect()
    })
}

/// The roots to trust: the shared ones, and those of `ca_file` (PEM).
///
/// Errors: `ca_file` cannot be read, holds no certificate, or one that is
/// not a usable trust anchor; the message names the file.
pub(crate) fn roots(ca_file: Option<&Path>) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut roots = shared().to_vec();
    if let Some(path) = ca_file {
        let extra: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect())
            .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        if extra.is_empty() {
            return Err(format!(
                "ca_file {} holds no PEM certificate",
                path.display()
            ));
        }
        for cert in &extra {
            RootCertStore::empty()
                .add(cert.clone())
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        }
        roots.extend(extra);
    }
    Ok(roots)
}
