//! One notification POST over HTTPS, and what its answer means for the
//! next attempt: 2xx is delivered; 429 and 5xx are retried (a 429's or
//! 503's `Retry-After` says when), and so are network errors; any other
//! status is final, redirects included (they are not followed: the URL is
//! to be fixed), and so is a refused certificate. A URL is a
//! credential: it must be `https://` (`http://` only to this host), and
//! no part of it appears in a detail.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::{ClientConfig, RootCertStore};
use secrecy::{ExposeSecret, SecretString};

use super::delivery::{chain, Attempt};
use super::destination::is_loopback;
use super::trust;

/// A webhook URL read from its secret and checked, with what may be shown.
pub(super) struct Endpoint {
    uri: Uri,
    /// `hooks.slack.com` (with `:port` if one is written), or
    /// `http://127.0.0.1:8080` when the scheme is not https.
    shown: String,
    /// Pieces of the URL a detail must not repeat: the path and its
    /// longer segments, the query.
    hidden: Vec<String>,
}

impl Endpoint {
    /// Parses and checks the URL. Errors never quote it.
    pub(super) fn parse(url: &SecretString) -> Result<Endpoint, String> {
        let uri: Uri = url
            .expose_secret()
            .trim()
            .parse()
            .map_err(|_| "the URL does not parse (expected https://host/path)".to_string())?;
        let host = uri
            .host()
            .ok_or("the URL has no host (expected https://host/path)")?
            .to_string();
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        if authority.contains('@') {
            return Err("the URL has a user:password@ part, which is not sent; \
                 use the URL the service gave"
                .into());
        }
        let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
        let shown = match uri.scheme_str() {
            Some("https") => format!("{host}{port}"),
            Some("http") if is_loopback(&host) => format!("http://{host}{port}"),
            Some("http") => {
                return Err(format!(
                    "the URL to {host} is http://: a webhook URL is a credential, \
                     so only https:// (or http:// to this host)"
                ))
            }
            _ => return Err("the URL is not https://".into()),
        };
        let mut hidden: Vec<String> = Vec::new();
        if let Some(pq) = uri.path_and_query() {
            hidden.push(pq.as_str().to_string());
            if pq.path().len() > 1 {
                hidden.push(pq.path().to_string());
            }
            hidden.extend(pq.query().map(str::to_string));
            hidden.extend(
                pq.path()
                    .split('/')
                    .filter(|s| s.len() >= 6)
                    .map(str::to_string),
            );
        }
        hidden.sort_by_key(|h| std::cmp::Reverse(h.len()));
        Ok(Endpoint { uri, shown, hidden })
    }

    /// `text` with every hidden piece of the URL replaced by `…`.
    fn redact(&self, text: &str) -> String {
        self.hidden.iter().fold(text.to_string(), |text, piece| {
            text.replace(piece.as_str(), "…")
        })
    }
}

/// An HTTPS client bound to one endpoint.
pub(super) struct Poster {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    endpoint: Endpoint,
}

impl Poster {
    /// A client trusting `trust`'s roots plus `ca_file`'s.
    pub(super) fn new(endpoint: Endpoint, ca_file: Option<&Path>) -> Result<Poster, String> {
        let mut store = RootCertStore::empty();
        store.add_parsable_certificates(trust::roots(ca_file)?);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(store)
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(https);
        Ok(Poster { client, endpoint })
    }

    /// The endpoint's host, as outcomes show it.
    pub(super) fn shown(&self) -> &str {
        &self.endpoint.shown
    }

    /// One POST of `body` (JSON) with `headers`; the caller bounds its time.
    pub(super) async fn post(&self, body: Bytes, headers: &[(&'static str, String)]) -> Attempt {
        let mut request = Request::post(self.endpoint.uri.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("cyan/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = match request.body(Full::new(body)) {
            Ok(request) => request,
            Err(e) => return Attempt::Final(format!("request: {e}")),
        };
        let response = match self.client.request(request).await {
            Ok(response) => response,
            Err(e) => {
                let detail = self.endpoint.redact(&chain(&e));
                return if certificate_refused(&e) {
                    Attempt::Final(detail)
                } else {
                    Attempt::Retry {
                        detail,
                        after: None,
                    }
                };
            }
        };
        let status = response.status();
        if status.is_success() {
            return Attempt::Delivered(status.as_u16().to_string());
        }
        let after = match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                retry_after(response.headers(), SystemTime::now())
            }
            _ => None,
        };
        let said = self
            .endpoint
            .redact(&first_words(response.into_body()).await);
        let mut detail = status.as_u16().to_string();
        if status.is_redirection() {
            detail.push_str(" (redirects are not followed: check the URL)");
        } else if !said.is_empty() {
            detail = format!("{detail}: {said}");
        }
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Attempt::Retry { detail, after }
        } else {
            Attempt::Final(detail)
        }
    }
}

/// Whether the server's certificate was refused (untrusted, expired, for
/// another name): another attempt would meet the same certificate. The
/// rustls error sits in `io::Error`s (tokio-rustls wraps it in one, then
/// hyper-rustls that in another), whose `source` skips it.
fn certificate_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        let mut inner = err;
        while let Some(wrapped) = inner
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            inner = wrapped;
        }
        if let Some(rustls::Error::InvalidCertificate(_)) = inner.downcast_ref::<rustls::Error>() {
            return true;
        }
        next = err.source();
    }
    false
}

/// What a `Retry-After` asks (RFC 9110 §10.2.3): seconds, or an HTTP-date
/// (a past one is now).
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The first line of an error answer's body (at most 4 KiB read, 200
/// characters kept, control characters dropped): Slack says
/// `invalid_payload`, Discord a JSON error.
async fn first_words(mut body: hyper::body::Incoming) -> String {
    let mut read = Vec::new();
    while read.len() < 4096 {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    read.extend_from_slice(data);
                }
            }
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&read);
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let clean: String = line.chars().filter(|c| !c.is_control()).collect();
    super::message::head(clean.trim(), 200)
}
