//! The proxy's ACME account (RFC 8555 §7.3): registered once per CA, its
//! key kept in `<home>/acme/accounts/` (mode 0600), and the HTTPS client
//! that talks to the CA (the system's roots plus `--acme-ca-root`).

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use instant_acme::{Account, AccountCredentials, NewAccount};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use super::renewal::Manager;

impl Manager {
    /// The account: kept, else read from the home, else registered (RFC
    /// 8555 §7.3, agreeing to the CA's terms of service) and saved.
    pub(super) async fn account(&mut self) -> Result<Account, String> {
        if let Some(account) = &self.account {
            return Ok(account.clone());
        }
        let file = self.account_file();
        let directory = &self.opts.directory;
        let http = http_client(self.opts.ca_root.as_deref())?;
        let builder = instant_acme::Account::builder_with_http(http);
        let account = match std::fs::read(&file) {
            Ok(bytes) => {
                let credentials: AccountCredentials = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("{}: {e}", file.display()))?;
                builder
                    .from_credentials(credentials)
                    .await
                    .map_err(|e| format!("ACME directory {directory}: {e}"))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let contact: Vec<String> = self
                    .opts
                    .email
                    .iter()
                    .map(|e| format!("mailto:{e}"))
                    .collect();
                let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
                let new = NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                };
                let (account, credentials) = builder
                    .create(&new, directory.clone(), None)
                    .await
                    .map_err(|e| format!("new account at {directory}: {e}"))?;
                let json = serde_json::to_vec_pretty(&credentials).expect("credentials serialize");
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(file.parent().expect("a folder"))
                    .and_then(|()| crate::certs::write_private(&file, &json))
                    .map_err(|e| format!("cannot keep the account in {}: {e}", file.display()))?;
                tracing::info!(%directory, id = account.id(), "ACME account registered");
                account
            }
            Err(e) => return Err(format!("{}: {e}", file.display())),
        };
        self.account = Some(account.clone());
        Ok(account)
    }

    /// `<home>/acme/accounts/<digest of the directory URL>.json`: one account
    /// per CA (staging and production are different CAs).
    pub(super) fn account_file(&self) -> PathBuf {
        let digest = Sha256::digest(self.opts.directory.as_bytes());
        let name: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        self.dir.join("accounts").join(format!("{name}.json"))
    }
}

/// The HTTPS client to the CA: the system's roots (rustls' platform
/// verifier), plus those in `ca_root`.
fn http_client(ca_root: Option<&Path>) -> Result<Box<dyn instant_acme::HttpClient>, String> {
    let extra: Vec<CertificateDer<'static>> = match ca_root {
        Some(path) => CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect())
            .map_err(|e| format!("--acme-ca-root {}: {e}", path.display()))?,
        None => Vec::new(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
            .map_err(|e| format!("no roots to trust the ACME directory with: {e}"))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, instant_acme::BodyWrapper<bytes::Bytes>>(https);
    Ok(Box::new(client))
}
