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

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backon::BackoffBuilder;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, KeyAuthorization,
    NewAccount, NewOrder, Order, OrderStatus, RetryPolicy,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::router::{normalize_host, Router};
use super::Home;

/// Let's Encrypt's production directory: the default `--acme-directory`.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// The path an HTTP-01 answer is fetched at, followed by the token (RFC
/// 8555 §8.3).
pub const HTTP01_PATH: &str = "/.well-known/acme-challenge/";

/// How often the ACME routes are looked at, at the least; also at start,
/// after every route change, and when a certificate falls due.
pub const CHECK_EVERY: Duration = Duration::from_secs(60);

/// The first wait after a failed order; it doubles (with jitter) on each
/// failure in a row, up to `RETRY_MAX`.
pub const RETRY_MIN: Duration = Duration::from_secs(10);
pub const RETRY_MAX: Duration = Duration::from_secs(3600);

/// How long one order may take, its challenges and the issuance included.
const ORDER_TIMEOUT: Duration = Duration::from_secs(180);

/// How long the CA gets to validate the challenges, then to issue.
const POLL_TIMEOUT: Duration = Duration::from_secs(90);

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

    fn acme_type(self) -> ChallengeType {
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
struct Answering<'a> {
    challenges: &'a Challenges,
    tokens: Vec<String>,
    hosts: Vec<String>,
}

impl<'a> Answering<'a> {
    fn new(challenges: &'a Challenges) -> Self {
        Answering {
            challenges,
            tokens: Vec::new(),
            hosts: Vec::new(),
        }
    }

    fn http01(&mut self, token: &str, key_authorization: &KeyAuthorization) {
        let mut answers = self.challenges.http01.lock().expect("challenges lock");
        answers.insert(token.to_string(), key_authorization.as_str().to_string());
        self.tokens.push(token.to_string());
    }

    fn tls_alpn01(&mut self, host: &str, cert: Arc<CertifiedKey>) {
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

struct Manager {
    router: Arc<Router>,
    /// `<home>/acme`.
    dir: PathBuf,
    opts: AcmeOptions,
    /// Made or read at the first order, then kept.
    account: Option<Account>,
    /// Routes whose last order failed: when to try again.
    retries: HashMap<String, Retry>,
}

struct Retry {
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
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
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

    /// One order for `hosts`, RFC 8555 §7.4: returns the PEM chain and its
    /// new private key, in one text.
    async fn order(&mut self, hosts: &[String]) -> Result<String, String> {
        let account = self.account().await?;
        let identifiers: Vec<Identifier> = hosts.iter().cloned().map(Identifier::Dns).collect();
        let mut order = match account.new_order(&NewOrder::new(&identifiers)).await {
            Ok(order) => order,
            Err(e) => {
                if e.to_string().contains("accountDoesNotExist") {
                    // The CA forgot the account (a test CA restarted): a
                    // new one next time.
                    self.account = None;
                    let _ = std::fs::remove_file(self.account_file());
                }
                return Err(format!("new order: {e}"));
            }
        };
        let router = self.router.clone();
        let mut answering = Answering::new(&router.acme);
        let kind = self.opts.challenge;
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(|e| format!("authorization: {e}"))?;
            let name = authz.identifier().to_string();
            match authz.status {
                // Validated earlier and still good (RFC 8555 §7.1.4).
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => return Err(format!("the authorization for {name} is {other:?}")),
            }
            let mut challenge = authz.challenge(kind.acme_type()).ok_or_else(|| {
                format!("the CA offers no {} challenge for {name}", kind.as_str())
            })?;
            let key_authorization = challenge.key_authorization();
            tracing::info!(%name, challenge = %kind.as_str(), "answering the ACME challenge");
            match kind {
                ChallengeKind::Http01 => answering.http01(&challenge.token, &key_authorization),
                ChallengeKind::TlsAlpn01 => {
                    answering.tls_alpn01(&name, alpn_certificate(&name, &key_authorization)?)
                }
            }
            challenge
                .set_ready()
                .await
                .map_err(|e| format!("{name}: {e}"))?;
        }
        let polling = RetryPolicy::new().timeout(POLL_TIMEOUT);
        match order.poll_ready(&polling).await {
            Ok(OrderStatus::Ready) => {}
            Ok(status) => return Err(why_invalid(&mut order, format!("order {status:?}")).await),
            Err(instant_acme::Error::Api(problem)) => {
                return Err(why_invalid(&mut order, problem.to_string()).await)
            }
            Err(e) => return Err(format!("waiting for validation: {e}")),
        }
        drop(answering);
        let key = rcgen::KeyPair::generate().map_err(|e| format!("new key: {e}"))?;
        let mut params =
            rcgen::CertificateParams::new(hosts.to_vec()).map_err(|e| format!("CSR: {e}"))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params
            .serialize_request(&key)
            .map_err(|e| format!("CSR: {e}"))?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(|e| format!("finalize: {e}"))?;
        let mut pem = order
            .poll_certificate(&polling)
            .await
            .map_err(|e| format!("certificate: {e}"))?;
        if !pem.ends_with('\n') {
            pem.push('\n');
        }
        pem.push_str(&key.serialize_pem());
        Ok(pem)
    }

    /// The account: kept, else read from the home, else registered (RFC
    /// 8555 §7.3, agreeing to the CA's terms of service) and saved.
    async fn account(&mut self) -> Result<Account, String> {
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
                    .and_then(|()| super::certs::write_private(&file, &json))
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
    fn account_file(&self) -> PathBuf {
        let digest = Sha256::digest(self.opts.directory.as_bytes());
        let name: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        self.dir.join("accounts").join(format!("{name}.json"))
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

/// What the CA said about each failed challenge (RFC 8555 §7.1.5 `error`),
/// after `outcome`.
async fn why_invalid(order: &mut Order, outcome: String) -> String {
    let mut reasons = vec![outcome];
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        let name = authz.identifier().to_string();
        if let Ok(state) = authz.refresh().await {
            for challenge in &state.challenges {
                if let Some(e) = &challenge.error {
                    reasons.push(format!("{name}: {e}"));
                }
            }
        }
    }
    reasons.join("; ")
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

/// The TLS-ALPN-01 certificate for `name` (RFC 8737 §3): self-signed,
/// naming `name` alone, with the critical acmeIdentifier extension holding
/// the SHA-256 digest of the key authorization.
fn alpn_certificate(
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

/// A certificate's validity period (RFC 5280 §4.1.2.5), read from its DER:
/// `notBefore` and `notAfter`. Enough of X.509 for that, and no more.
fn validity(der: &[u8]) -> Option<(SystemTime, SystemTime)> {
    let (0x30, cert, _) = tlv(der)? else {
        return None;
    };
    let (0x30, tbs, _) = tlv(cert)? else {
        return None;
    };
    let mut rest = tbs;
    // [0] version, if there; then serialNumber, signature, issuer.
    if rest.first() == Some(&0xa0) {
        rest = tlv(rest)?.2;
    }
    for _ in 0..3 {
        rest = tlv(rest)?.2;
    }
    let (0x30, validity, _) = tlv(rest)? else {
        return None;
    };
    let (tag, not_before, rest) = tlv(validity)?;
    let not_before = time(tag, not_before)?;
    let (tag, not_after, _) = tlv(rest)?;
    Some((not_before, time(tag, not_after)?))
}

/// One DER element: its tag, its contents, and what follows it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (len, after) = rest.split_at(n);
        rest = after;
        len.iter().fold(0usize, |l, b| l << 8 | usize::from(*b))
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// An X.509 time: UTCTime (`YYMMDDHHMMSSZ`, years 1950-2049) or
/// GeneralizedTime (`YYYYMMDDHHMMSSZ`), RFC 5280 §4.1.2.5.1-2.
fn time(tag: u8, text: &[u8]) -> Option<SystemTime> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (year, rest) = match (tag, text.len()) {
        (0x17, 12) => {
            let yy: i64 = text[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        (0x18, 14) => (text[..4].parse().ok()?, &text[4..]),
        _ => return None,
    };
    let field = |i: usize| rest.get(i..i + 2)?.parse::<i64>().ok();
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
    // days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(hosts: &[&str], not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> CertifiedKey {
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

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn validity_reads_utc_and_generalized_times() {
        // 2024-03-01 is a UTCTime, 2051-01-02 a GeneralizedTime (RFC 5280).
        let c = cert(&["a.test"], (2024, 3, 1), (2051, 1, 2));
        assert_eq!(
            validity(&c.cert[0]),
            Some((at(1_709_251_200), at(2_556_230_400)))
        );
        assert_eq!(validity(b"\x30\x03\x30\x01"), None, "truncated");
        assert_eq!(validity(b""), None);
    }

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

    #[test]
    fn hosts_must_be_dns_names() {
        assert!(check_hosts(&["web.example.com".into(), "WWW.example.com:443".into()]).is_ok());
        assert!(check_hosts(&[]).unwrap_err().contains("needs hosts"));
        assert!(check_hosts(&["127.0.0.1".into()])
            .unwrap_err()
            .contains("not a DNS name"));
        assert!(check_hosts(&["*.example.com".into()]).is_err());
    }

    /// Both request paths (the fast path and hyper's) route through
    /// `Forwarder::claim`, which answers a pending HTTP-01 token itself, on
    /// plain HTTP only.
    #[tokio::test]
    async fn a_pending_http01_token_is_answered_before_any_route() {
        use super::super::forward::{ClientConn, Forwarder};
        let dir = std::env::temp_dir().join(format!("cyan-acme-claim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let router = Arc::new(Router::restore(dir.join("proxy.json")).unwrap());
        router
            .acme
            .http01
            .lock()
            .unwrap()
            .insert("tok".into(), "tok.thumb".into());
        let timeouts = super::super::timeouts::Timeouts {
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
