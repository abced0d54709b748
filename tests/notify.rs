//! Notifications against real receivers on loopback: an HTTP server per
//! chat format that records what it got and answers as a scenario says, one
//! behind TLS, and a real SMTP server (Python's aiosmtpd, from PyPI; `.ci/run`
//! installs it). Each test's URLs live in files of its own, so tests share no
//! environment variable.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use cyan::notify::{Destination, EventKind, Notice, Notifier, Outcome, Policy};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;

// ---------------------------------------------------------------- fixtures

/// A scratch directory of one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("cyan-notify-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// Writes `content` to `name` and returns its path.
    fn file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `notify:` entries, parsed as cyan.yaml's are.
fn destinations(yaml: &str) -> Vec<Destination> {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

/// Short timeouts, so the failure scenarios take a second or two.
fn quick() -> Policy {
    Policy {
        attempt_timeout: Duration::from_millis(500),
        attempts: 3,
        first_delay: Duration::from_millis(50),
        max_delay: Duration::from_secs(5),
    }
}

fn notice(event: EventKind) -> Notice {
    Notice {
        event,
        app: "web".into(),
        environment: "production".into(),
        version: "2.3.0".into(),
        digest: Some("sha256:4f2a".into()),
        color: Some("green".into()),
        previous_version: Some("2.2.0".into()),
        url: Some("https://web.example.com".into()),
        preview_url: None,
        promote_command: None,
        rollback_command: Some("cyan rollback -c cyan.yaml".into()),
        reason: None,
        log_tail: None,
        from_environment: None,
        at_ms: 1_746_100_800_000,
    }
}

/// One outcome, after at most `bound`.
async fn only_outcome(notifier: &Notifier, bound: Duration) -> Outcome {
    let mut outcomes = notifier.finish(bound).await;
    assert_eq!(outcomes.len(), 1, "{outcomes:#?}");
    outcomes.remove(0)
}

// ------------------------------------------------------------ HTTP sinks

/// A request a sink got.
#[derive(Debug, Clone)]
struct Got {
    at: Instant,
    path: String,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }
}

/// How a sink answers one request.
#[derive(Clone)]
enum Reply {
    /// A status, headers and a body.
    Status(u16, &'static [(&'static str, &'static str)], &'static str),
    /// Reads the request, then never answers.
    Hang,
}

/// An HTTP/1.1 server on 127.0.0.1 that answers with `replies` in turn (200
/// once they run out) and records every request.
struct Sink {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
}

impl Sink {
    async fn start(replies: Vec<Reply>) -> Sink {
        Sink::serve(replies, None).await
    }

    /// The same behind TLS, with `tls`'s certificate.
    async fn start_tls(replies: Vec<Reply>, tls: &TestCa) -> Sink {
        Sink::serve(replies, Some(tls.acceptor())).await
    }

    async fn serve(replies: Vec<Reply>, tls: Option<tokio_rustls::TlsAcceptor>) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let replies = Arc::new(Mutex::new(replies.into_iter()));
        let (record, script) = (Arc::clone(&got), Arc::clone(&replies));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (record, script, tls) = (Arc::clone(&record), Arc::clone(&script), tls.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (record, script) = (Arc::clone(&record), Arc::clone(&script));
                        async move {
                            let path = req.uri().path().to_string();
                            let headers = req.headers().clone();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            record.lock().unwrap().push(Got {
                                at: Instant::now(),
                                path,
                                headers,
                                body,
                            });
                            let reply = script.lock().unwrap().next();
                            match reply {
                                Some(Reply::Hang) => std::future::pending().await,
                                Some(Reply::Status(code, headers, body)) => {
                                    let mut response = Response::builder().status(code);
                                    for (name, value) in headers {
                                        response = response.header(*name, *value);
                                    }
                                    Ok::<_, Infallible>(
                                        response.body(Full::new(Bytes::from(body))).unwrap(),
                                    )
                                }
                                None => Ok(Response::new(Full::new(Bytes::new()))),
                            }
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
        });
        Sink { addr, got }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------- certificates

/// A CA made for one test, and a certificate under it for 127.0.0.1 and
/// localhost; `ca` is the CA's PEM file, as `ca_file` takes it.
struct TestCa {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl TestCa {
    fn new(dir: &Path) -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "cyan test: notify CA");
        let ca_cert = params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(params, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        TestCa {
            ca: write("ca.pem", ca_cert.pem()),
            cert: write("cert.pem", cert.pem()),
            key: write("key.pem", key.serialize_pem()),
        }
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(&self.cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&self.key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

// ------------------------------------------------------------ chat formats

#[tokio::test]
async fn slack_discord_and_teams_get_their_own_payloads() {
    let dir = Scratch::new("chat");
    let (slack, discord, teams) = (
        Sink::start(vec![]).await,
        Sink::start(vec![Reply::Status(204, &[], "")]).await,
        Sink::start(vec![Reply::Status(202, &[], "")]).await,
    );
    let yaml = format!(
        "- slack: {{ url: {{ file: {} }} }}\n\
         - discord: {{ url: {{ file: {} }} }}\n\
         - teams: {{ url: {{ file: {} }} }}\n",
        dir.file("slack", &format!("{}\n", slack.url("/services/T0/B0/XXXX")))
            .display(),
        dir.file("discord", &discord.url("/api/webhooks/1/tok"))
            .display(),
        dir.file(
            "teams",
            &teams.url("/workflows/abc/triggers/manual/paths/invoke")
        )
        .display(),
    );
    let notifier = Notifier::with_policy(&destinations(&yaml), quick());
    let mut failed = notice(EventKind::Failed);
    failed.reason = Some("health gate failed: GET /healthz -> 503 <after 30s> & more".into());
    failed.log_tail = Some("booting\npanic: @everyone listen\n".into());
    failed.rollback_command = None;
    notifier.send(failed);
    let outcomes = notifier.finish(Duration::from_secs(10)).await;

    let shown = |sink: &Sink| format!("http://{}", sink.addr);
    assert_eq!(
        outcomes
            .iter()
            .map(|o| (
                o.destination.clone(),
                o.delivered,
                o.attempts,
                o.detail.clone()
            ))
            .collect::<Vec<_>>(),
        vec![
            (format!("slack ({})", shown(&slack)), true, 1, "200".into()),
            (
                format!("discord ({})", shown(&discord)),
                true,
                1,
                "204".into()
            ),
            (format!("teams ({})", shown(&teams)), true, 1, "202".into()),
        ]
    );
    assert!(outcomes.iter().all(|o| o.event == EventKind::Failed));

    let text = "web (production): deploy of 2.3.0 failed: health gate failed: \
                GET /healthz -> 503 <after 30s> & more; 2.2.0 stays live.";

    // Slack: `text`, and blocks: the text (escaped mrkdwn), the facts as
    // fields, the log tail as a code block.
    let got = slack.got();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/services/T0/B0/XXXX");
    assert_eq!(got[0].header("content-type"), "application/json");
    let escaped = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    assert_eq!(
        got[0].json(),
        json!({
            "text": escaped,
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": escaped}},
                {"type": "section", "fields": [
                    {"type": "mrkdwn", "text": "*Version*\n2.3.0"},
                    {"type": "mrkdwn", "text": "*Previous*\n2.2.0"},
                    {"type": "mrkdwn", "text": "*Color*\ngreen"},
                    {"type": "mrkdwn", "text": "*Digest*\nsha256:4f2a"},
                    {"type": "mrkdwn", "text": "*Live*\n<https://web.example.com>"},
                ]},
                {"type": "section", "text": {"type": "mrkdwn",
                    "text": "```booting\npanic: @everyone listen\n```"}},
            ],
        })
    );

    // Discord: `content`, one embed with fields and the log, no mentions.
    let got = discord.got();
    assert_eq!(got.len(), 1);
    let body = got[0].json();
    assert_eq!(
        body,
        json!({
            "content": text,
            "embeds": [{
                "color": 0xE01E5A,
                "fields": [
                    {"name": "Version", "value": "2.3.0", "inline": true},
                    {"name": "Previous", "value": "2.2.0", "inline": true},
                    {"name": "Color", "value": "green", "inline": true},
                    {"name": "Digest", "value": "sha256:4f2a", "inline": true},
                    {"name": "Live", "value": "https://web.example.com", "inline": true},
                ],
                "description": "```\nbooting\npanic: @everyone listen\n\n```",
                "timestamp": "2025-05-01T12:00:00.000Z",
            }],
            "allowed_mentions": {"parse": []},
        })
    );

    // Teams: the Workflows envelope around an Adaptive Card.
    let got = teams.got();
    assert_eq!(got.len(), 1);
    let body = got[0].json();
    assert_eq!(body["type"], "message");
    let attachments = body["attachments"].as_array().unwrap();
    assert_eq!(attachments.len(), 1);
    assert_eq!(
        attachments[0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(attachments[0]["contentUrl"], Value::Null);
    assert_eq!(
        attachments[0]["content"],
        json!({
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.2",
            "body": [
                {"type": "TextBlock", "text": "web (production): deploy of 2.3.0 failed",
                 "weight": "Bolder", "size": "Medium", "color": "Attention", "wrap": true},
                {"type": "TextBlock", "text": text, "wrap": true},
                {"type": "FactSet", "facts": [
                    {"title": "Version", "value": "2.3.0"},
                    {"title": "Previous", "value": "2.2.0"},
                    {"title": "Color", "value": "green"},
                    {"title": "Digest", "value": "sha256:4f2a"},
                ]},
                {"type": "TextBlock", "text": "booting\npanic: @everyone listen\n",
                 "fontType": "Monospace", "size": "Small", "wrap": true},
            ],
            "actions": [
                {"type": "Action.OpenUrl", "title": "Live", "url": "https://web.example.com"},
            ],
        })
    );
}

#[tokio::test]
async fn each_event_reads_as_a_sentence_with_its_next_step() {
    let dir = Scratch::new("wording");
    let sink = Sink::start(vec![]).await;
    let yaml = format!(
        "- slack: {{ url: {{ file: {} }} }}\n",
        dir.file("url", &sink.url("/hook")).display()
    );
    let notifier = Notifier::with_policy(&destinations(&yaml), quick());
    let mut waiting = notice(EventKind::AwaitingApproval);
    waiting.preview_url = Some("https://preview.web.example.com".into());
    waiting.promote_command = Some("cyan promote -c cyan.yaml".into());
    let mut verify_failed = notice(EventKind::VerifyFailed);
    verify_failed.reason = Some("5xx ratio 4.0% over 1.0%".into());
    let mut promoted = notice(EventKind::Promoted);
    promoted.from_environment = Some("staging".into());
    let mut rolled_back = notice(EventKind::RolledBack);
    rolled_back.version = "2.2.0".into();
    rolled_back.color = Some("blue".into());
    rolled_back.previous_version = Some("2.3.0".into());
    for n in [
        notice(EventKind::Started),
        waiting,
        notice(EventKind::Switched),
        notice(EventKind::Verified),
        verify_failed,
        rolled_back,
        promoted,
    ] {
        notifier.send(n);
        // One at a time, so the sink gets them in this order.
        assert!(
            only_outcome(&notifier, Duration::from_secs(5))
                .await
                .delivered
        );
    }
    let texts: Vec<String> = sink
        .got()
        .iter()
        .map(|g| g.json()["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        texts,
        [
            "web (production): deploying 2.3.0 on green; 2.2.0 stays live until the switch.",
            "web (production): 2.3.0 is up on green and waits for approval; \
             preview at https://preview.web.example.com; promote with `cyan promote -c cyan.yaml`.",
            "web (production): 2.3.0 is live on green, previous 2.2.0; \
             roll back with `cyan rollback -c cyan.yaml`.",
            "web (production): 2.3.0 passed verification on green and stays live; \
             roll back with `cyan rollback -c cyan.yaml`.",
            "web (production): 2.3.0 failed verification: 5xx ratio 4.0% over 1.0%; \
             switched back to 2.2.0.",
            "web (production): rolled back to 2.2.0 on blue from 2.3.0.",
            "web (production): 2.3.0 promoted from staging to production.",
        ]
    );
}

// ---------------------------------------------------------- the webhook

/// A Standard Webhooks secret: `whsec_` and base64 of 32 bytes.
const HOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw6sZ3eVvKt7Y=";

/// Verifies a Standard Webhooks signature as a receiver would, with ring:
/// HMAC-SHA256 over `id.timestamp.body`, keyed by the secret's base64.
fn verify_standard_webhook(got: &Got, secret: &str) {
    use ring::hmac;
    let id = got.header("webhook-id");
    let timestamp = got.header("webhook-timestamp");
    let key_bytes = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key_bytes);
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(&got.body);
    let signatures = got.header("webhook-signature");
    let verified = signatures.split(' ').any(|sig| {
        let Some(b64) = sig.strip_prefix("v1,") else {
            return false;
        };
        let tag = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        hmac::verify(&key, &signed, &tag).is_ok()
    });
    assert!(verified, "no v1 signature verifies: {signatures}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let at: u64 = timestamp.parse().unwrap();
    assert!(now.abs_diff(at) < 60, "timestamp {at}, now {now}");
}

#[tokio::test]
async fn the_webhook_is_signed_as_standard_webhooks_say_and_retries_keep_its_id() {
    let dir = Scratch::new("webhook");
    let sink = Sink::start(vec![Reply::Status(500, &[], "busy")]).await;
    let yaml = format!(
        "- webhook: {{ url: {{ file: {} }}, secret: {{ file: {} }} }}\n\
         - webhook: {{ url: {{ file: {} }}, secret: {{ file: {} }} }}\n  \
           events: [failed]\n",
        dir.file("url", &sink.url("/cyan")).display(),
        dir.file("secret", &format!("{HOOK_SECRET}\n")).display(),
        dir.file("url2", &sink.url("/only-failures")).display(),
        dir.file("secret2", HOOK_SECRET).display(),
    );
    let notifier = Notifier::with_policy(&destinations(&yaml), quick());
    notifier.send(notice(EventKind::Switched));
    let outcome = only_outcome(&notifier, Duration::from_secs(10)).await;
    assert!(outcome.delivered, "{outcome:?}");
    assert_eq!(outcome.attempts, 2, "a 500 is retried");
    assert_eq!(
        outcome.destination,
        format!("webhook (http://{})", sink.addr)
    );

    let got = sink.got();
    assert_eq!(got.len(), 2, "the `events: [failed]` entry got nothing");
    for g in &got {
        assert_eq!(g.path, "/cyan");
        assert_eq!(g.header("content-type"), "application/json");
        assert!(g.header("user-agent").starts_with("cyan/"));
        verify_standard_webhook(g, HOOK_SECRET);
    }
    let id = got[0].header("webhook-id");
    assert!(
        id.starts_with("msg_") && !id.contains('.'),
        "webhook-id {id}"
    );
    assert_eq!(id, got[1].header("webhook-id"), "one id for every attempt");
    assert_eq!(got[0].body, got[1].body);
    assert_eq!(
        got[0].json(),
        json!({
            "type": "deploy.switched",
            "timestamp": "2025-05-01T12:00:00.000Z",
            "data": {
                "event": "switched",
                "app": "web",
                "environment": "production",
                "version": "2.3.0",
                "digest": "sha256:4f2a",
                "color": "green",
                "previous_version": "2.2.0",
                "url": "https://web.example.com",
                "rollback_command": "cyan rollback -c cyan.yaml",
                "at_ms": 1_746_100_800_000_u64,
                "title": "web (production): 2.3.0 is live",
                "text": "web (production): 2.3.0 is live on green, previous 2.2.0; \
                         roll back with `cyan rollback -c cyan.yaml`.",
            },
        })
    );
}

#[tokio::test]
async fn a_webhook_over_https_trusts_its_ca_file() {
    let dir = Scratch::new("https");
    let ca = TestCa::new(&dir.0);
    let sink = Sink::start_tls(vec![], &ca).await;
    let url = format!("https://127.0.0.1:{}/hook", sink.addr.port());
    let entry = |ca_file: &str| {
        format!(
            "- webhook: {{ url: {{ file: {} }}, secret: {{ file: {} }}{ca_file} }}\n",
            dir.file("url", &url).display(),
            dir.file("secret", HOOK_SECRET).display(),
        )
    };

    // Without the CA, the certificate is not trusted, and that is final.
    let notifier = Notifier::with_policy(&destinations(&entry("")), quick());
    notifier.send(notice(EventKind::Verified));
    let outcome = only_outcome(&notifier, Duration::from_secs(10)).await;
    assert!(!outcome.delivered);
    assert_eq!(outcome.attempts, 1, "{outcome:?}");
    assert!(outcome.detail.contains("certificate"), "{}", outcome.detail);
    assert!(sink.got().is_empty());

    let with_ca = entry(&format!(", ca_file: {}", ca.ca.display()));
    let notifier = Notifier::with_policy(&destinations(&with_ca), quick());
    notifier.send(notice(EventKind::Verified));
    let outcome = only_outcome(&notifier, Duration::from_secs(10)).await;
    assert!(outcome.delivered, "{outcome:?}");
    assert_eq!(
        outcome.destination,
        format!("webhook (127.0.0.1:{})", sink.addr.port())
    );
    let got = sink.got();
    assert_eq!(got.len(), 1);
    verify_standard_webhook(&got[0], HOOK_SECRET);
}

// ------------------------------------------------------- retries, bounds

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after() {
    let dir = Scratch::new("429");
    let sink = Sink::start(vec![Reply::Status(
        429,
        &[("retry-after", "1")],
        "rate_limited",
    )])
    .await;
    let yaml = format!(
        "- discord: {{ url: {{ file: {} }} }}\n",
        dir.file("url", &sink.url("/api/webhooks/1/tok")).display()
    );
    let notifier = Notifier::with_policy(&destinations(&yaml), quick());
    notifier.send(notice(EventKind::Switched));
    let outcome = only_outcome(&notifier, Duration::from_secs(10)).await;
    assert!(outcome.delivered, "{outcome:?}");
    assert_eq!((outcome.attempts, outcome.detail.as_str()), (2, "200"));
    let got = sink.got();
    assert_eq!(got.len(), 2);
    let waited = got[1].at - got[0].at;
    assert!(
        waited >= Duration::from_secs(1),
        "the second attempt came {waited:?} after the first"
    );
}

#[tokio::test]
async fn a_400_is_not_retried_and_its_answer_is_kept_without_the_url() {
    let dir = Scratch::new("400");
    // The receiver echoes the path, as some do: the outcome must not.
    let sink = Sink::start(vec![Reply::Status(
        400,
        &[],
        "invalid_payload for /services/T0/B0/SECRETTOKEN123\n",
    )])
    .await;
    let yaml = format!(
        "- slack: {{ url: {{ file: {} }} }}\n",
        dir.file("url", &sink.url("/services/T0/B0/SECRETTOKEN123"))
            .display()
    );
    let notifier = Notifier::with_policy(&destinations(&yaml), quick());
    notifier.send(notice(EventKind::Started));
    let outcome = only_outcome(&notifier, Duration::from_secs(10)).await;
    assert!(!outcome.delivered);
    assert_eq!(outcome.attempts, 1);
    assert_eq!(outcome.detail, "400: invalid_payload for …");
    assert_eq!(sink.got().len(), 1);
    let all = serde_json::to_string(&outcome).unwrap();
    assert!(!all.contains("SECRETTOKEN123"), "{all}");
}

#[tokio::test]
async fn a_receiver_that_never_answers_costs_at_most_the_attempts_timeouts() {
    let dir = Scratch::new("hang");
    let sink = Sink::start(vec![Reply::Hang, Reply::Hang, Reply::Hang]).await;
    let yaml = format!(
        "- teams: {{ url: {{ file: {} }} }}\n",
        dir.file("url", &sink.url("/hook")).display()
    );
    let policy = Policy {
        attempt_timeout: Duration::from_millis(300),
        attempts: 2,
        first_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
    };
    let notifier = Notifier::with_policy(&destinations(&yaml), policy);
    let start = Instant::now();
    notifier.send(notice(EventKind::Failed));
    assert!(
        start.elapsed() < Duration::from_millis(200),
        "send returns at once"
    );
    let outcome = only_outcome(&notifier, Duration::from_secs(30)).await;
    let took = start.elapsed();
    assert!(!outcome.delivered);
    assert_eq!(outcome.attempts, 2);
    assert_eq!(
        outcome.detail,
        "gave up after 2 attempts: timed out after 300ms"
    );
    // 2 × 300 ms, and one wait of 100 to 200 ms (jitter) between them.
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    assert_eq!(sink.got().len(), 2);
}

#[tokio::test]
async fn finish_stops_at_its_bound_and_says_what_was_still_running() {
    let dir = Scratch::new("bound");
    let sink = Sink::start(vec![Reply::Hang]).await;
    let yaml = format!(
        "- slack: {{ url: {{ file: {} }} }}\n",
        dir.file("url", &sink.url("/hook")).display()
    );
    let policy = Policy {
        attempt_timeout: Duration::from_secs(60),
        ..quick()
    };
    let notifier = Notifier::with_policy(&destinations(&yaml), policy);
    notifier.send(notice(EventKind::Switched));
    let start = Instant::now();
    let outcome = only_outcome(&notifier, Duration::from_millis(300)).await;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(!outcome.delivered);
    assert_eq!(outcome.attempts, 1);
    assert_eq!(
        outcome.detail,
        "still running after 300ms (attempt 1); abandoned"
    );
    assert_eq!(outcome.destination, format!("slack (http://{})", sink.addr));
    assert!(notifier.finish(Duration::from_secs(1)).await.is_empty());
}

// ------------------------------------------------------ secrets, refusals

#[tokio::test]
async fn a_missing_secret_is_an_outcome_that_names_it() {
    let dir = Scratch::new("secret");
    let unset = "CYAN_TEST_NOTIFY_NEVER_SET";
    assert!(std::env::var_os(unset).is_none());
    let yaml = format!(
        "- slack: {{ url: {{ env: {unset} }} }}\n\
         - webhook: {{ url: {{ file: {} }}, secret: {{ file: {} }} }}\n\
         - webhook: {{ url: {{ file: {} }}, secret: {{ file: {} }} }}\n",
        dir.file("url", "http://127.0.0.1:9/hook").display(),
        dir.0.join("no-such-file").display(),
        dir.file("url2", "http://127.0.0.1:9/hook").display(),
        dir.file("short", "whsec_c2hvcnQ=").display(),
    );
    let notifier = Notifier::with_policy(&destinations(&yaml), quick());
    let start = Instant::now();
    notifier.send(notice(EventKind::Failed));
    let outcomes = notifier.finish(Duration::from_secs(5)).await;
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    let got: Vec<(&str, bool, u32, &str)> = outcomes
        .iter()
        .map(|o| {
            (
                o.destination.as_str(),
                o.delivered,
                o.attempts,
                o.detail.as_str(),
            )
        })
        .collect();
    let no_file = format!(
        "secret: cannot read the file {}: No such file or directory (os error 2)",
        dir.0.join("no-such-file").display()
    );
    assert_eq!(
        got,
        [
            (
                "slack",
                false,
                0,
                "secret: the variable CYAN_TEST_NOTIFY_NEVER_SET is not set in cyan's environment"
            ),
            ("webhook", false, 0, no_file.as_str()),
            (
                "webhook",
                false,
                0,
                "secret: the webhook secret is 5 bytes, Standard Webhooks wants 24 to 64; \
                 make one with `echo whsec_$(openssl rand -base64 32)`"
            ),
        ]
    );
}

#[tokio::test]
async fn a_url_is_refused_before_any_connection_when_it_would_leak() {
    let dir = Scratch::new("refused");
    let yaml = format!(
        "- discord: {{ url: {{ file: {} }} }}\n\
         - slack: {{ url: {{ file: {} }} }}\n\
         - teams: {{ url: {{ file: {} }} }}\n",
        dir.file("plain", "http://hooks.example.com/services/T0/B0/SECRET")
            .display(),
        dir.file("garbage", "not a url with SECRET").display(),
        dir.file("userinfo", "https://user:SECRET@hooks.example.com/x")
            .display(),
    );
    let notifier = Notifier::with_policy(&destinations(&yaml), quick());
    notifier.send(notice(EventKind::Started));
    let outcomes = notifier.finish(Duration::from_secs(5)).await;
    let details: Vec<&str> = outcomes.iter().map(|o| o.detail.as_str()).collect();
    assert_eq!(
        details,
        [
            "url: the URL to hooks.example.com is http://: a webhook URL is a credential, \
             so only https:// (or http:// to this host)",
            "url: the URL does not parse (expected https://host/path)",
            "url: the URL has a user:password@ part, which is not sent; use the URL the service gave",
        ]
    );
    assert!(outcomes.iter().all(|o| !o.delivered && o.attempts == 0));
}

// ----------------------------------------------------------------- config

#[test]
fn the_config_says_what_is_wrong_with_an_entry() {
    let err = |yaml: &str| {
        serde_saphyr::from_str::<Vec<Destination>>(yaml)
            .expect_err(yaml)
            .to_string()
    };
    assert!(
        err("- slak: { url: { env: X } }").contains("unknown field `slak`"),
        "{}",
        err("- slak: { url: { env: X } }")
    );
    let two = err("- slack: { url: { env: X } }\n  discord: { url: { env: Y } }");
    assert!(
        two.contains("a notify entry names one destination, this one names slack and discord"),
        "{two}"
    );
    let none = err("- events: [failed]");
    assert!(none.contains("names no destination"), "{none}");
    let empty = err("- slack: { url: { env: X } }\n  events: []");
    assert!(empty.contains("`events: []` gets nothing"), "{empty}");
    let event = err("- slack: { url: { env: X } }\n  events: [exploded]");
    assert!(event.contains("exploded"), "{event}");
    let key = err("- slack: { url: { env: X }, channel: '#ops' }");
    assert!(key.contains("unknown field `channel`"), "{key}");

    let email = |extra: &str| {
        format!(
            "- email:\n    server: smtp.example.com\n    from: cyan@example.com\n    to: [team@example.com]\n{extra}"
        )
    };
    let plain = err(&email(
        "    tls: none\n    username: deploy\n    password: { env: P }\n",
    ));
    assert!(
        plain.contains("`tls: none` would send the password in plaintext to smtp.example.com"),
        "{plain}"
    );
    let half = err(&email("    username: deploy\n"));
    assert!(half.contains("`username` needs a `password`"), "{half}");
    let bad_to = err(
        "- email:\n    server: smtp.example.com\n    from: cyan@example.com\n    to: [not-an-address]\n",
    );
    assert!(
        bad_to.contains("to \"not-an-address\" is not an address"),
        "{bad_to}"
    );
    let port = err(
        "- email:\n    server: smtp.example.com:smtp\n    from: cyan@example.com\n    to: [a@b.c]\n",
    );
    assert!(port.contains("is not `host` or `host:port`"), "{port}");

    // What parses, and reads back as written.
    let ok: Vec<Destination> = destinations(&format!(
        "{}- teams: {{ url: {{ env: T }} }}\n  events: [failed, awaiting_approval]\n",
        email(
            "    tls: none\n    server: '[::1]:2525'\n    username: u\n    password: { env: P }\n"
        )
        .replace("    server: smtp.example.com\n", "")
    ));
    assert_eq!(ok.len(), 2);
    assert_eq!(ok[0].name(), "email ([::1]:2525)");
    assert!(ok[1].wants(EventKind::Failed) && !ok[1].wants(EventKind::Switched));
    let back: Vec<Destination> =
        serde_saphyr::from_str(&serde_saphyr::to_string(&ok).unwrap()).unwrap();
    assert_eq!(back, ok);
    let default_port = destinations(&email(""));
    assert_eq!(default_port[0].name(), "email (smtp.example.com:587)");
}

// ------------------------------------------------------------------ SMTP

/// An SMTP server (aiosmtpd) on 127.0.0.1: `plain` (AUTH allowed without
/// TLS), `starttls` (STARTTLS required before AUTH) or `tls` (TLS from the
/// first byte); the login is `deploy` / `s3cret`. Each message it accepts
/// is printed as one JSON line.
const SMTP_SERVER: &str = r#"
import asyncio, json, ssl, sys
from email import message_from_bytes, policy
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

mode, cert, key = sys.argv[1], sys.argv[2], sys.argv[3]

class Handler:
    async def handle_DATA(self, server, session, envelope):
        msg = message_from_bytes(envelope.original_content, policy=policy.default)
        login = session.auth_data.login.decode() if session.auth_data else None
        print(json.dumps({
            "mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
            "from": str(msg["from"]), "to": str(msg["to"]), "subject": str(msg["subject"]),
            "body": msg.get_body(("plain",)).get_content(),
            "login": login, "starttls": session.ssl is not None,
        }), flush=True)
        return "250 OK queued"

def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) \
        and auth_data.login == b"deploy" and auth_data.password == b"s3cret"
    return AuthResult(success=ok, handled=False, auth_data=auth_data)

async def main():
    ctx = None
    if mode != "plain":
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
    def factory():
        return SMTP(Handler(), hostname="cyan-test", authenticator=authenticator,
                    auth_require_tls=(mode == "starttls"),
                    tls_context=ctx if mode == "starttls" else None,
                    require_starttls=(mode == "starttls"))
    server = await asyncio.get_running_loop().create_server(
        factory, "127.0.0.1", 0, ssl=ctx if mode == "tls" else None)
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"#;

/// Whether python3 can import aiosmtpd, installing it with pip if not.
/// Without it the SMTP tests skip, saying so, except in CI (`.ci/run`
/// installs it), where that is a failure.
fn aiosmtpd_present() -> bool {
    let import = || {
        std::process::Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if import() {
        return true;
    }
    let _ = std::process::Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "aiosmtpd"])
        .output();
    if import() {
        return true;
    }
    let missing = "python3 cannot import aiosmtpd and pip could not install it";
    assert!(
        std::env::var_os("CI").is_none(),
        "{missing}; .ci/run runs `python3 -m pip install --quiet aiosmtpd`"
    );
    eprintln!("SKIPPED: {missing} (`python3 -m pip install aiosmtpd`)");
    false
}

/// A running aiosmtpd, and the messages it accepted.
struct SmtpServer {
    port: u16,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    _child: tokio::process::Child,
}

impl SmtpServer {
    async fn start(mode: &str, ca: &TestCa) -> SmtpServer {
        let mut child = tokio::process::Command::new("python3")
            .args(["-c", SMTP_SERVER, mode])
            .arg(&ca.cert)
            .arg(&ca.key)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs");
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), stdout.next_line())
            .await
            .expect("aiosmtpd says its port within 20 s")
            .unwrap()
            .expect("aiosmtpd printed its port");
        let port = serde_json::from_str::<Value>(&first).unwrap()["port"]
            .as_u64()
            .unwrap() as u16;
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                let _ = tx.send(line);
            }
        });
        SmtpServer {
            port,
            lines,
            _child: child,
        }
    }

    async fn received(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(5), self.lines.recv())
            .await
            .expect("a message within 5 s")
            .expect("aiosmtpd is running");
        serde_json::from_str(&line).unwrap()
    }
}

/// Sends a `Failed` notice by e-mail in `mode` and checks what arrived.
async fn mail_arrives(mode: &str) {
    if !aiosmtpd_present() {
        return;
    }
    let dir = Scratch::new(&format!("smtp-{mode}"));
    let ca = TestCa::new(&dir.0);
    let mut server = SmtpServer::start(mode, &ca).await;
    let tls = if mode == "plain" { "none" } else { mode };
    let yaml = format!(
        "- email:\n    server: 127.0.0.1:{}\n    tls: {tls}\n    ca_file: {}\n    \
         username: deploy\n    password: {{ file: {} }}\n    from: Cyan <cyan@example.com>\n    \
         to: [team@example.com, oncall@example.com]\n  events: [failed]\n",
        server.port,
        ca.ca.display(),
        dir.file("password", "s3cret\n").display(),
    );
    let notifier = Notifier::with_policy(&destinations(&yaml), quick());
    notifier.send(notice(EventKind::Switched)); // not among its events
    let mut failed = notice(EventKind::Failed);
    failed.reason = Some("health gate failed".into());
    failed.log_tail = Some("listening on :8080\nthread 'main' panicked\n".into());
    notifier.send(failed);
    let outcome = only_outcome(&notifier, Duration::from_secs(15)).await;
    assert_eq!(
        (
            outcome.destination.as_str(),
            outcome.delivered,
            outcome.attempts,
            outcome.detail.as_str()
        ),
        (
            format!("email (127.0.0.1:{})", server.port).as_str(),
            true,
            1,
            "250"
        ),
        "{outcome:?}"
    );

    let got = server.received().await;
    assert_eq!(got["mail_from"], "cyan@example.com");
    assert_eq!(
        got["rcpt_tos"],
        json!(["team@example.com", "oncall@example.com"])
    );
    assert_eq!(got["from"], "Cyan <cyan@example.com>");
    assert_eq!(got["to"], "team@example.com, oncall@example.com");
    assert_eq!(got["subject"], "web (production): deploy of 2.3.0 failed");
    assert_eq!(got["login"], "deploy");
    assert_eq!(got["starttls"], mode == "starttls");
    assert_eq!(
        got["body"]
            .as_str()
            .unwrap()
            .replace("\r\n", "\n")
            .trim_end(),
        "web (production): deploy of 2.3.0 failed: health gate failed; 2.2.0 stays live.\n\
         \n\
         Version: 2.3.0\n\
         Previous: 2.2.0\n\
         Color: green\n\
         Digest: sha256:4f2a\n\
         Live: https://web.example.com\n\
         \n\
         Last log lines:\n\
         listening on :8080\n\
         thread 'main' panicked\n\
         \n\
         -- \n\
         cyan, 2025-05-01T12:00:00.000Z"
    );
}

#[tokio::test]
async fn mail_goes_in_plaintext_with_auth_to_a_loopback_relay() {
    mail_arrives("plain").await;
}

#[tokio::test]
async fn mail_goes_over_starttls_trusting_the_ca_file() {
    mail_arrives("starttls").await;
}

#[tokio::test]
async fn mail_goes_over_implicit_tls_trusting_the_ca_file() {
    mail_arrives("tls").await;
}

#[tokio::test]
async fn a_wrong_smtp_password_is_final_and_named_by_the_server() {
    if !aiosmtpd_present() {
        return;
    }
    let dir = Scratch::new("smtp-badauth");
    let ca = TestCa::new(&dir.0);
    let server = SmtpServer::start("starttls", &ca).await;
    let yaml = format!(
        "- email:\n    server: 127.0.0.1:{}\n    ca_file: {}\n    username: deploy\n    \
         password: {{ file: {} }}\n    from: cyan@example.com\n    to: [team@example.com]\n",
        server.port,
        ca.ca.display(),
        dir.file("password", "wrong").display(),
    );
    let notifier = Notifier::with_policy(&destinations(&yaml), quick());
    notifier.send(notice(EventKind::Started));
    let outcome = only_outcome(&notifier, Duration::from_secs(15)).await;
    assert!(!outcome.delivered);
    assert_eq!(outcome.attempts, 1, "{outcome:?}");
    assert!(outcome.detail.contains("535"), "{}", outcome.detail);
    assert!(!outcome.detail.contains("wrong"), "{}", outcome.detail);
}
