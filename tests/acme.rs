//! Automatic certificates (`tls: acme`) against a real ACME CA: Debian's
//! `pebble` (Let's Encrypt's test CA) on loopback, with
//! `pebble-challtestsrv` as its DNS server (every name is 127.0.0.1), and
//! the real `cyan proxy run` answering its HTTP-01 and TLS-ALPN-01
//! challenges on the ports pebble validates (its `httpPort` and `tlsPort`).
//! pebble's random validation sleeps are off (`PEBBLE_VA_NOSLEEP`); its
//! validation is real (never `PEBBLE_VA_ALWAYS_VALID`).
//!
//! pebble comes from Debian's package (`apt-get install pebble`); `.ci/run`
//! installs it. Without it each test says it skipped, except in CI, where
//! that is a failure.

mod util;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cyan::proxy::api::RouteSpec;
use cyan::proxy::state::TlsSource;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use util::proxy::{host_route, proxy_run, TestProxy};
use util::tls::connector;
use util::upstream::answering;
use util::{free_port, wait};

/// The app's host name: the CA resolves it (through challtestsrv) to 127.0.0.1.
const HOST: &str = "web.test";

fn pebble_available() -> bool {
    let found = ["pebble", "pebble-challtestsrv"]
        .iter()
        .all(|b| Command::new(b).arg("-h").output().is_ok());
    util::present_or_skipped(
        found,
        "pebble is not installed",
        ".ci/run installs it with `apt-get install pebble`",
    )
}

/// pebble and its DNS server, each test its own, on free loopback ports.
struct Pebble {
    dir: PathBuf,
    acme: u16,
    management: u16,
    /// The root of pebble's own HTTPS (made here): `--acme-ca-root`.
    https_root: PathBuf,
    children: Vec<Child>,
}

impl Pebble {
    /// pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on
    /// `tls_port`, issuing certificates valid for `validity` seconds (its
    /// default, 5 years, if `None`).
    async fn start(tag: &str, http_port: u16, tls_port: u16, validity: Option<u64>) -> Pebble {
        let dir = std::env::temp_dir().join(format!("cyan-pebble-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let https_root = https_certificate(&dir);
        let (acme, management, dns, dns_management) =
            (free_port(), free_port(), free_port(), free_port());
        let mut config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.join("https.pem"),
            "privateKey": dir.join("https.key"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        if let Some(seconds) = validity {
            config["pebble"]["certificateValidityPeriod"] = seconds.into();
        }
        std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
        let log = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
        let dns_server = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-management", &format!("127.0.0.1:{dns_management}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(log("challtestsrv.log"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut pebble = Pebble {
            dir: dir.clone(),
            acme,
            management,
            https_root,
            children: vec![dns_server],
        };
        wait_listening(dns_management, || pebble.logs()).await;
        let ca = Command::new("pebble")
            .arg("-config")
            .arg(dir.join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env_remove("PEBBLE_VA_ALWAYS_VALID")
            .stdout(log("pebble.log"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        pebble.children.push(ca);
        wait_listening(acme, || pebble.logs()).await;
        wait_listening(management, || pebble.logs()).await;
        pebble
    }

    fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.acme)
    }

    /// The flags that make the proxy use this CA.
    fn flags(&self, challenge: &str) -> Vec<String> {
        vec![
            "--acme-directory".into(),
            self.directory(),
            "--acme-ca-root".into(),
            self.https_root.display().to_string(),
            "--acme-challenge".into(),
            challenge.into(),
            "--acme-email".into(),
            "ops@web.test".into(),
        ]
    }

    /// The root pebble issues under (new at each start), from its
    /// management interface.
    async fn root(&self) -> CertificateDer<'static> {
        use rustls::pki_types::pem::PemObject;
        let root = CertificateDer::from_pem_file(&self.https_root).unwrap();
        let tcp = TcpStream::connect(("127.0.0.1", self.management))
            .await
            .unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = connector(&[root], &[b"http/1.1"])
            .connect(name, tcp)
            .await
            .unwrap();
        tls.write_all(b"GET /roots/0 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        let _ = tls.read_to_end(&mut out).await;
        let text = String::from_utf8_lossy(&out);
        let (_, pem) = text.split_once("\r\n\r\n").expect("a response");
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("a PEM root")
    }

    fn logs(&self) -> String {
        ["challtestsrv.log", "pebble.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn stop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// pebble's HTTPS certificate, for 127.0.0.1, under a CA made here; returns
/// the CA's file.
fn https_certificate(dir: &Path) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "cyan test: pebble's HTTPS CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.join("https.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("https.key"), key.serialize_pem()).unwrap();
    let root = dir.join("https-ca.pem");
    std::fs::write(&root, ca_cert.pem()).unwrap();
    root
}

/// Waits for `port` to take connections. Pebble makes its keys before it
/// listens, which took over 10 s once on a loaded 2-core CI machine.
async fn wait_listening(port: u16, logs: impl Fn() -> String) {
    wait::until_async(
        &format!("something to listen on {port}"),
        Duration::from_secs(30),
        Duration::from_millis(20),
        async || TcpStream::connect(("127.0.0.1", port)).await.ok().map(drop),
        async || logs(),
    )
    .await
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// A handshake with SNI `HOST`, the certificate verified against `root`
/// alone (chain and validity period): the stream and the leaf served.
async fn handshake(
    addr: &str,
    root: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> Result<(Tls, Vec<u8>), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(HOST).unwrap();
    let connecting = connector(std::slice::from_ref(root), alpn).connect(name, tcp);
    let tls = tokio::time::timeout(Duration::from_secs(5), connecting)
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    Ok((tls, leaf))
}

/// Handshakes until the proxy serves a certificate for `HOST` that chains
/// to `root`; returns its leaf.
async fn wait_for_certificate(
    addr: &str,
    root: &CertificateDer<'static>,
    within: Duration,
    logs: impl Fn() -> String,
) -> Vec<u8> {
    let deadline = Instant::now() + within;
    loop {
        match handshake(addr, root, &[b"http/1.1"]).await {
            Ok((_, leaf)) => return leaf,
            Err(e) => assert!(
                Instant::now() < deadline,
                "no certificate for {HOST} within {within:?}: {e}\n{}",
                logs()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An HTTPS request for `HOST` through the proxy: the response as text.
async fn https_get(addr: &str, root: &CertificateDer<'static>) -> String {
    let (mut tls, _) = handshake(addr, root, &[b"http/1.1"]).await.unwrap();
    let request = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The app: answers every request with its name and closes.
async fn upstream() -> SocketAddr {
    answering(
        b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\nconnection: close\r\n\r\nthe app\r\n",
        true,
    )
    .await
}

/// `cyan proxy run` with `flags`, its log (RUST_LOG=info) kept in its home
/// for the assertions' messages.
fn spawn_proxy(home: &Path, flags: &[String]) -> Child {
    std::fs::create_dir_all(home).unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(home))
        .unwrap();
    proxy_run(home)
        .args(["--drain-timeout", "1s"])
        .args(flags)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(log)
        .spawn()
        .unwrap()
}

fn log_path(home: &Path) -> PathBuf {
    home.join("test-stderr.log")
}

async fn start_proxy(tag: &str, flags: &[String]) -> TestProxy {
    let (home, _) = TestProxy::new_home(&format!("acme-{tag}"));
    let child = spawn_proxy(&home, flags);
    let proxy = TestProxy {
        home,
        port: 0,
        child,
    };
    proxy.wait_ready().await;
    proxy
}

fn proxy_log(proxy: &TestProxy) -> String {
    std::fs::read_to_string(log_path(&proxy.home)).unwrap_or_default()
}

/// Routes `HOST` to a new app, with `tls: acme`.
async fn route_with_acme(proxy: &TestProxy) {
    let spec = RouteSpec {
        tls: Some(TlsSource::Acme),
        ..host_route(&[HOST])
    };
    proxy.put_live("web", &spec, vec![upstream().await]).await;
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A test's pebble, and a proxy using it that answers `challenge` on the
/// ports pebble validates, with `HOST` routed to the app with `tls: acme`.
struct Acme {
    proxy: TestProxy,
    pebble: Pebble,
    /// The proxy's flags, for a restart.
    flags: Vec<String>,
    /// pebble's HTTP-01 port: the proxy's plain listener with HTTP-01.
    http: u16,
    /// The proxy's TLS listener (pebble's TLS-ALPN-01 port).
    addr: String,
    /// What pebble's certificates chain to.
    root: CertificateDer<'static>,
}

impl Acme {
    /// With HTTP-01 the proxy also listens for plain HTTP; with
    /// TLS-ALPN-01 not at all: the TLS port alone proves control.
    /// Certificates are valid for `validity` seconds (pebble's default,
    /// 5 years, if `None`).
    async fn start(tag: &str, challenge: &str, validity: Option<u64>) -> Acme {
        let (http, tls) = (free_port(), free_port());
        let pebble = Pebble::start(tag, http, tls, validity).await;
        let mut flags = pebble.flags(challenge);
        if challenge == "http-01" {
            flags.extend(["--listen".into(), format!("127.0.0.1:{http}")]);
        }
        flags.extend(["--tls-listen".into(), format!("127.0.0.1:{tls}")]);
        let proxy = start_proxy(tag, &flags).await;
        let addr = format!("127.0.0.1:{tls}");
        let root = pebble.root().await;
        route_with_acme(&proxy).await;
        Acme {
            proxy,
            pebble,
            flags,
            http,
            addr,
            root,
        }
    }

    /// The proxy's log and pebble's, for failure messages.
    fn logs(&self) -> String {
        format!("{}\n{}", proxy_log(&self.proxy), self.pebble.logs())
    }

    /// The first certificate served for `HOST` (within 30 s): its leaf.
    async fn wait_for_certificate(&self) -> Vec<u8> {
        let within = Duration::from_secs(30);
        wait_for_certificate(&self.addr, &self.root, within, || self.logs()).await
    }
}

/// `challenge` gets a certificate issued and served, the app behind it,
/// and the proxy's log says it validated by `challenge`.
async fn assert_issued_and_served(tag: &str, challenge: &str) -> Acme {
    let acme = Acme::start(tag, challenge, None).await;
    acme.wait_for_certificate().await;
    let resp = https_get(&acme.addr, &acme.root).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("the app\r\n"), "{resp}");
    assert!(
        proxy_log(&acme.proxy).contains(&format!("challenge={challenge}")),
        "validated by {}\n{}",
        challenge.to_uppercase(),
        acme.logs()
    );
    acme
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_certificate_is_issued_and_served() {
    if !pebble_available() {
        return;
    }
    let started = Instant::now();
    let acme = assert_issued_and_served("http01", "http-01").await;

    // Account and certificate kept in the home, for the owner alone.
    let home = acme.proxy.home.join("acme");
    assert_eq!(mode(&home.join("web.pem")), 0o600);
    let accounts: Vec<_> = std::fs::read_dir(home.join("accounts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    assert_eq!(mode(&accounts[0]), 0o600);
    // The challenge was answered only while it ran: the path is the app's now.
    let plain = format!("127.0.0.1:{}", acme.http);
    let resp = util::proxy::get(&plain, HOST, "/.well-known/acme-challenge/x").await;
    assert!(resp.ends_with("the app\r\n"), "{resp}");
    eprintln!("HTTP-01 issuance test took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_certificate_is_issued_and_served() {
    if !pebble_available() {
        return;
    }
    let started = Instant::now();
    // No plain-HTTP listener at all: port 443 alone proves control.
    let acme = assert_issued_and_served("alpn", "tls-alpn-01").await;

    // A ClientHello offering acme-tls/1 with no challenge running gets no
    // certificate (never the app's), and so no HTTP.
    let tcp = TcpStream::connect(&acme.addr).await.unwrap();
    let name = ServerName::try_from(HOST).unwrap();
    let refused = connector(
        std::slice::from_ref(&acme.root),
        &[b"acme-tls/1", b"http/1.1"],
    )
    .connect(name, tcp)
    .await;
    assert!(refused.is_err(), "an acme-tls/1 hello was served");
    eprintln!("TLS-ALPN-01 issuance test took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_replaces_the_certificate_without_a_gap() {
    if !pebble_available() {
        return;
    }
    let started = Instant::now();
    // 15 s certificates: renewed 10 s after issuance (a third left).
    let acme = Acme::start("renew", "http-01", Some(15)).await;
    let (addr, root) = (&acme.addr, &acme.root);
    let first = acme.wait_for_certificate().await;

    // Handshakes every 50 ms, each verified (chain and validity period),
    // until a new certificate is served, and a while after: not one fails.
    let (mut handshakes, mut renewed_at) = (0, None);
    let deadline = Instant::now() + Duration::from_secs(25);
    while Instant::now() < deadline {
        let (_, leaf) = handshake(addr, root, &[b"http/1.1"])
            .await
            .unwrap_or_else(|e| panic!("handshake {handshakes} failed: {e}\n{}", acme.logs()));
        handshakes += 1;
        if leaf != first && renewed_at.is_none() {
            renewed_at = Some(handshakes);
        }
        if renewed_at.is_some_and(|n| handshakes >= n + 20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let renewed_at = renewed_at.unwrap_or_else(|| panic!("not renewed\n{}", acme.logs()));
    assert!(
        renewed_at > 1,
        "renewed before a third of the lifetime was left"
    );
    let resp = https_get(addr, root).await;
    assert!(resp.ends_with("the app\r\n"), "{resp}");
    eprintln!(
        "renewal test: {handshakes} handshakes, none failed, the new certificate from #{renewed_at}; took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_proxy_serves_the_kept_certificate_at_once() {
    if !pebble_available() {
        return;
    }
    let started = Instant::now();
    let mut acme = Acme::start("restart", "http-01", None).await;
    let issued = acme.wait_for_certificate().await;

    // The CA goes away, so no ACME traffic can happen; the proxy dies hard.
    acme.pebble.stop();
    let proxy = &mut acme.proxy;
    proxy.kill9();
    let before = proxy_log(proxy).len();
    proxy.child = spawn_proxy(&proxy.home, &acme.flags);
    proxy.wait_ready().await;
    let restarted = Instant::now();
    let (_, served) = handshake(&acme.addr, &acme.root, &[b"http/1.1"])
        .await
        .unwrap_or_else(|e| {
            panic!(
                "no certificate after the restart: {e}\n{}",
                proxy_log(&acme.proxy)
            )
        });
    assert_eq!(served, issued, "the kept certificate");
    assert!(restarted.elapsed() < Duration::from_secs(1));
    let resp = https_get(&acme.addr, &acme.root).await;
    assert!(resp.ends_with("the app\r\n"), "{resp}");
    let after = &proxy_log(&acme.proxy)[before..];
    assert!(
        !after.contains("ordering a certificate"),
        "the restarted proxy ordered again:\n{after}"
    );
    eprintln!("restart test took {:?}", started.elapsed());
}
