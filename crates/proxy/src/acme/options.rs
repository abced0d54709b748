//! How the proxy reaches its ACME CA (`cyan proxy run --acme-*`): the
//! directory, the account's contact, extra roots for a test CA, and which
//! challenge proves control of a name. Values only: the CLI builds them,
//! the renewal task reads them.

use std::path::PathBuf;

use instant_acme::ChallengeType;

/// Let's Encrypt's production directory: the default `--acme-directory`.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// The proxy's ACME CA and account (`cyan proxy run --acme-*`).
#[derive(Debug, Clone)]
pub struct AcmeOptions {
    /// The CA's directory URL (RFC 8555 §7.1.1), over HTTPS.
    pub directory: String,
    /// A contact address for the account (RFC 8555 §7.3): the CA writes
    /// there about expiring certificates and policy changes.
    pub email: Option<String>,
    /// A PEM file of roots trusted for the directory's HTTPS, besides the
    /// system's (a test CA such as pebble).
    pub ca_root: Option<PathBuf>,
    /// How control of each name is proven.
    pub challenge: ChallengeKind,
}

impl Default for AcmeOptions {
    fn default() -> Self {
        AcmeOptions {
            directory: LETS_ENCRYPT.into(),
            email: None,
            ca_root: None,
            challenge: ChallengeKind::Http01,
        }
    }
}

/// A challenge type the proxy answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChallengeKind {
    /// The CA fetches http://HOST/.well-known/acme-challenge/TOKEN (RFC
    /// 8555 §8.3); the proxy answers on its plain-HTTP listeners.
    #[default]
    Http01,
    /// The CA makes a TLS handshake offering ALPN acme-tls/1 (RFC 8737);
    /// the proxy answers on its TLS listeners. For hosts whose port 80 is
    /// closed.
    TlsAlpn01,
}

impl ChallengeKind {
    /// Every kind, in the order `--help` lists them.
    pub const ALL: [ChallengeKind; 2] = [ChallengeKind::Http01, ChallengeKind::TlsAlpn01];

    /// As written on the command line and by the CA.
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeKind::Http01 => "http-01",
            ChallengeKind::TlsAlpn01 => "tls-alpn-01",
        }
    }

    pub(super) fn acme_type(self) -> ChallengeType {
        match self {
            ChallengeKind::Http01 => ChallengeType::Http01,
            ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
        }
    }
}

impl std::str::FromStr for ChallengeKind {
    type Err = String;
    /// `http-01` or `tls-alpn-01`, as `as_str` writes them.
    fn from_str(s: &str) -> Result<Self, String> {
        ChallengeKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown ACME challenge {s:?}: expected http-01 or tls-alpn-01"))
    }
}
