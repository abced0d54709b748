//! `cyan watch --url URL`: probe one URL at a steady pace and say, as it
//! happens, which version answers and when errors start and stop.
//!
//! Three parts, apart so the middle one can be tested without a network:
//! - [`Prober`]: one GET with a deadline, over a kept-alive connection,
//!   reduced to an [`Outcome`]: a status and the version the answer
//!   names, or the kind of failure;
//! - [`Tracker`]: pure; fed each outcome with the time its probe was sent,
//!   it returns the [`Event`]s (a version change, an error window opened
//!   or closed) and keeps the counts the [`Summary`] holds;
//! - [`run`]: the loop (a `tokio::time::interval` that never bursts), the
//!   stop conditions, and the lines (text or JSON), written to stdout as
//!   they happen.
//!
//! An error is what a user of the app would call an outage: no answer
//! (refused, reset, closed, timed out, TLS) or a 5xx. A 4xx is an answer
//! (the app said no, to that path or that client): counted apart, it opens
//! no window.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{HeaderMap, USER_AGENT};
use hyper::{Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::output::{fmt_duration, Format};

/// Distinct versions counted by name; the rest are counted together as
/// [`OTHER_VERSIONS`].
pub const VERSIONS_KEPT: usize = 100;
/// The summary's name for versions past [`VERSIONS_KEPT`].
pub const OTHER_VERSIONS: &str = "(others)";

/// The headers a version is read from when `--version-header` names none,
/// in this order.
pub const VERSION_HEADERS: [&str; 2] = ["x-version", "x-app-version"];

/// The shortest `--every`: a probe loop faster than this measures the
/// machine running it more than the app.
pub const MIN_EVERY: Duration = Duration::from_millis(10);

/// The most of an answer's body read: enough for a JSON version, and to
/// keep the connection for the next probe (a longer body is dropped, with
/// its connection).
const BODY_LIMIT: usize = 1 << 20;

/// What `cyan watch --url` does: the resolved flags.
#[derive(Debug, Clone)]
pub struct Options {
    /// `http://` or `https://`, with a host.
    pub url: String,
    /// The pace: one probe starts every `every` (one at a time; a probe
    /// longer than that delays the next, never two at once).
    pub every: Duration,
    /// Each probe's deadline: connecting, sending, the whole answer.
    pub timeout: Duration,
    /// When the watch ends by itself (it always ends on SIGINT or SIGTERM).
    pub until: Until,
    pub version: VersionSource,
}

/// When a watch ends by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Only on SIGINT or SIGTERM.
    Stopped,
    /// `--for`: this long after it started.
    Elapsed(Duration),
    /// `--count`: once this many probes were made.
    Probes(u64),
}

/// Where an answer names its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionSource {
    /// The response header; `None`: [`VERSION_HEADERS`], in order.
    pub header: Option<String>,
    /// The top-level field of a JSON body, when no header names it.
    pub field: String,
}

impl Default for VersionSource {
    fn default() -> Self {
        VersionSource {
            header: None,
            field: "version".into(),
        }
    }
}

impl VersionSource {
    /// The version an answer names: the header's value, else the JSON
    /// body's field (a string, or a number or boolean as written); `None`
    /// when neither is there or it is empty.
    pub fn find(&self, headers: &HeaderMap, body: Option<&[u8]>) -> Option<String> {
        let named: Vec<&str> = match &self.header {
            Some(h) => vec![h.as_str()],
            None => VERSION_HEADERS.to_vec(),
        };
        let from_header = named.iter().find_map(|name| {
            let value = headers.get(*name)?.to_str().ok()?.trim();
            (!value.is_empty()).then(|| value.to_string())
        });
        from_header
            .or_else(|| {
                let body = body?;
                if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
                    return None;
                }
                let json: serde_json::Value = serde_json::from_slice(body).ok()?;
                let version = match json.get(&self.field)? {
                    serde_json::Value::String(s) => s.trim().to_string(),
                    v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)) => {
                        v.to_string()
                    }
                    _ => return None,
                };
                (!version.is_empty()).then_some(version)
            })
            .map(|v| crate::output::printable(&v, VERSION_MAX_CHARS))
    }
}

/// The longest version kept, in characters: a server's word is printed
/// and counted, so it is held to a version's size.
pub const VERSION_MAX_CHARS: usize = 128;

/// Why a probe failed: its `label` is what the windows count by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The connection was refused: nothing listens.
    Refused,
    /// The connection was reset (RST), before or during the answer.
    Reset,
    /// The connection was closed before a whole answer came.
    Closed,
    /// No whole answer within the probe's deadline.
    Timeout,
    /// The TLS handshake failed (a certificate refused, say).
    Tls,
    /// Another failure to connect: a name that does not resolve, a host
    /// that cannot be reached.
    Connect,
    /// What came back is not HTTP.
    Invalid,
    /// An answer with a 5xx status.
    Status(u16),
}

impl Failure {
    /// `refused`, `reset`, `closed`, `timeout`, `tls`, `connect`,
    /// `invalid`, or the status (`502`).
    pub fn label(&self) -> String {
        match self {
            Failure::Refused => "refused".into(),
            Failure::Reset => "reset".into(),
            Failure::Closed => "closed".into(),
            Failure::Timeout => "timeout".into(),
            Failure::Tls => "tls".into(),
            Failure::Connect => "connect".into(),
            Failure::Invalid => "invalid".into(),
            Failure::Status(code) => code.to_string(),
        }
    }
}

/// What one probe came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An answer below 500, and the version it named, if any.
    Answered {
        status: u16,
        version: Option<String>,
    },
    Failed(Failure),
}

impl Outcome {
    /// An answer with `status`: a 5xx is a failure, whatever it says.
    pub fn answer(status: u16, version: Option<String>) -> Outcome {
        match status {
            500.. => Outcome::Failed(Failure::Status(status)),
            _ => Outcome::Answered { status, version },
        }
    }
}

/// Failed probes in a row, from the first to the next answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// When its first failed probe was sent (since the watch started).
    pub start: Duration,
    /// When the next answered probe was sent, or the watch ended (`open`).
    pub end: Duration,
    /// The failed probes in it.
    pub failed: u64,
    /// Failed probes by [`Failure::label`].
    pub kinds: BTreeMap<String, u64>,
    /// Still failing when the watch ended.
    pub open: bool,
}

impl Window {
    pub fn duration(&self) -> Duration {
        self.end.saturating_sub(self.start)
    }

    /// `refused ×12, 502 ×3, timeout ×1`: the most first.
    pub fn breakdown(&self) -> String {
        let mut kinds: Vec<(&String, &u64)> = self.kinds.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        kinds
            .iter()
            .map(|(kind, n)| format!("{kind} ×{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What the watch says as it happens; times are since it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The answering version changed (`from: None`: the first one seen).
    Version {
        at: Duration,
        from: Option<String>,
        to: String,
    },
    /// A probe failed after an answer (or as the first): a window opens.
    WindowOpened { at: Duration, kind: String },
    /// A probe was answered after failures, or the watch ended during them.
    WindowClosed(Window),
}

/// The counts at the end.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Counts {
    /// Probes made (one cut short by the watch's end is not one).
    pub probes: u64,
    /// Answered below 500 (4xx included).
    pub ok: u64,
    /// Failed: `probes - ok`.
    pub failed: u64,
    /// Answered 4xx (part of `ok`).
    pub status_4xx: u64,
    /// Error windows (one still open at the end included).
    pub windows: u64,
    /// Their durations added up.
    pub windows_total: Duration,
    pub longest_window: Duration,
    /// Answered probes by the version they named; `-`: none named.
    pub versions: BTreeMap<String, u64>,
    /// How many times the answering version changed (the first not counted).
    pub version_changes: u64,
}

/// Versions and error windows from a stream of probe outcomes: pure, the
/// times given (those the probes were sent at, since the watch started).
#[derive(Debug, Default)]
pub struct Tracker {
    counts: Counts,
    current: Option<String>,
    open: Option<Window>,
}

/// The version key of answers that named none.
pub const UNKNOWN_VERSION: &str = "-";

impl Tracker {
    pub fn new() -> Tracker {
        Tracker::default()
    }

    /// Takes one probe's outcome, sent at `at`; returns what changed, in
    /// order (a window closing before the new version that closed it).
    pub fn record(&mut self, at: Duration, outcome: &Outcome) -> Vec<Event> {
        let mut events = Vec::new();
        self.counts.probes += 1;
        match outcome {
            Outcome::Failed(failure) => {
                self.counts.failed += 1;
                let label = failure.label();
                let window = self.open.get_or_insert_with(|| {
                    events.push(Event::WindowOpened {
                        at,
                        kind: label.clone(),
                    });
                    Window {
                        start: at,
                        end: at,
                        failed: 0,
                        kinds: BTreeMap::new(),
                        open: true,
                    }
                });
                window.failed += 1;
                window.end = at;
                *window.kinds.entry(label).or_default() += 1;
            }
            Outcome::Answered { status, version } => {
                self.counts.ok += 1;
                if (400..500).contains(status) {
                    self.counts.status_4xx += 1;
                }
                if let Some(window) = self.close(at, false) {
                    events.push(Event::WindowClosed(window));
                }
                let key = version.as_deref().unwrap_or(UNKNOWN_VERSION);
                // A server naming a new version every probe is counted,
                // past a bound, as one: the summary stays a summary.
                let key = if self.counts.versions.len() >= VERSIONS_KEPT
                    && !self.counts.versions.contains_key(key)
                {
                    OTHER_VERSIONS
                } else {
                    key
                };
                *self.counts.versions.entry(key.to_string()).or_default() += 1;
                if let Some(v) = version {
                    if self.current.as_ref() != Some(v) {
                        let from = self.current.replace(v.clone());
                        if from.is_some() {
                            self.counts.version_changes += 1;
                        }
                        events.push(Event::Version {
                            at,
                            from,
                            to: v.clone(),
                        });
                    }
                }
            }
        }
        events
    }

    /// Ends the watch at `at`: the window still open, if any, closed as
    /// open (it lasted at least until then).
    pub fn finish(&mut self, at: Duration) -> Option<Event> {
        self.close(at, true).map(Event::WindowClosed)
    }

    fn close(&mut self, at: Duration, open: bool) -> Option<Window> {
        let mut window = self.open.take()?;
        window.end = at.max(window.start);
        window.open = open;
        self.counts.windows += 1;
        self.counts.windows_total += window.duration();
        self.counts.longest_window = self.counts.longest_window.max(window.duration());
        Some(window)
    }

    /// The counts so far (an open window not among them until `finish`).
    pub fn counts(&self) -> &Counts {
        &self.counts
    }
}

// ---------------------------------------------------------------------------
// Probing.

/// Makes probes to one URL, one at a time, keeping the connection.
///
/// The connection is kept alive between probes, as browsers and HTTP
/// clients keep theirs, and opened again when the server closed it: so a
/// server that resets its kept connections as it stops is seen, which a
/// new connection per probe would hide. A request on a kept connection
/// that the server had closed before the request was written is sent
/// again on a new one (hyper's client does so, as clients do); once it is
/// written, a reset or a close is the probe's failure.
pub struct Prober {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    uri: Uri,
    timeout: Duration,
    version: VersionSource,
}

/// Checks a `--url`: `http://` or `https://` with a host.
///
/// Errors ([`Error::Config`]): it does not parse, has another scheme, no
/// host, or a `user:password@` part.
pub fn parse_url(url: &str) -> Result<Uri> {
    let uri: Uri = url.trim().parse().map_err(|e| {
        Error::Config(format!(
            "--url {url:?}: {e} (write e.g. http://127.0.0.1:8000/)"
        ))
    })?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return Err(Error::Config(format!(
                "--url {url:?}: {other}:// is not HTTP; write http:// or https://"
            )))
        }
        None => {
            return Err(Error::Config(format!(
                "--url {url:?} has no scheme; write http://{url}"
            )))
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(Error::Config(format!(
            "--url {url:?} has no host (write e.g. http://127.0.0.1:8000/)"
        )));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(Error::Config(format!(
            "--url {url:?}: a user:password@ part is not sent; put credentials elsewhere"
        )));
    }
    // A port past 65535 is not one (`Uri` takes it, and has no port
    // then), nor is 0.
    let authority = uri.authority().map_or("", |a| a.as_str());
    let after_host = authority
        .rsplit_once(']')
        .map_or(authority, |(_, rest)| rest);
    let port = after_host.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
    if matches!(port, Some(Err(_) | Ok(0))) {
        return Err(Error::Config(format!(
            "--url {url:?}: the port is not one of 1 to 65535"
        )));
    }
    Ok(uri)
}

impl Prober {
    /// A prober for `uri` (from [`parse_url`]); an `https://` one verifies
    /// the server against Mozilla's roots and the host's (`SSL_CERT_FILE`
    /// and `SSL_CERT_DIR` name others).
    ///
    /// Errors ([`Error::Platform`]): TLS cannot be set up.
    pub fn new(uri: Uri, timeout: Duration, version: VersionSource) -> Result<Prober> {
        let mut roots = rustls::RootCertStore::empty();
        if uri.scheme_str() == Some("https") {
            roots.add_parsable_certificates(
                crate::notify::trust::roots(None)
                    .map_err(|e| Error::Platform(format!("TLS: {e}")))?,
            );
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Platform(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1)
            .build(https);
        Ok(Prober {
            client,
            uri,
            timeout,
            version,
        })
    }

    /// One GET, within the deadline: connecting (when there is no kept
    /// connection), the request, and the whole answer.
    pub async fn probe(&self) -> Outcome {
        match tokio::time::timeout(self.timeout, self.exchange()).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Failed(Failure::Timeout),
        }
    }

    async fn exchange(&self) -> Outcome {
        let request = Request::get(self.uri.clone())
            .header(
                USER_AGENT,
                concat!("cyan-watch/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::new())
            .expect("a GET of a checked URI");
        let response = match self.client.request(request).await {
            Ok(response) => response,
            Err(e) => return Outcome::Failed(failure_of(&e)),
        };
        let status = response.status().as_u16();
        let (head, mut body) = response.into_parts();
        // The whole body is read, so the connection can be kept; a body
        // cut short is a failure, whatever the status said.
        let mut read = Vec::new();
        let mut whole = true;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Some(data) = frame.data_ref() {
                        if read.len() + data.len() > BODY_LIMIT {
                            whole = false;
                            break;
                        }
                        read.extend_from_slice(data);
                    }
                }
                Err(e) => return Outcome::Failed(failure_of(&e)),
            }
        }
        let version = match status {
            500.. => None,
            _ => self
                .version
                .find(&head.headers, whole.then_some(read.as_slice())),
        };
        Outcome::answer(status, version)
    }
}

/// The kind of a failed exchange, from its chain of causes: the io error
/// (refused, reset, closed), rustls's (TLS), or hyper's own.
fn failure_of(e: &(dyn std::error::Error + 'static)) -> Failure {
    let mut next = Some(e);
    let mut found = None;
    while let Some(err) = next {
        // rustls's errors travel inside io errors, whose `source` skips them.
        let mut inner = err;
        loop {
            if inner.downcast_ref::<rustls::Error>().is_some() {
                return Failure::Tls;
            }
            match inner
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
            {
                Some(wrapped) => inner = wrapped,
                None => break,
            }
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            match io.kind() {
                K::ConnectionRefused => return Failure::Refused,
                K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => return Failure::Reset,
                K::UnexpectedEof => found = found.or(Some(Failure::Closed)),
                K::TimedOut => return Failure::Timeout,
                _ => {}
            }
        }
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
                found = found.or(Some(Failure::Closed));
            } else if h.is_parse() || h.is_parse_status() {
                found = found.or(Some(Failure::Invalid));
            } else if h.is_timeout() {
                found = found.or(Some(Failure::Timeout));
            }
        }
        if let Some(l) = err.downcast_ref::<hyper_util::client::legacy::Error>() {
            if l.is_connect() {
                found = found.or(Some(Failure::Connect));
            }
        }
        next = err.source();
    }
    found.unwrap_or(Failure::Closed)
}

// ---------------------------------------------------------------------------
// What is printed.

/// Why the watch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stopped {
    /// SIGINT or SIGTERM.
    Signal,
    /// `--for` elapsed.
    Elapsed,
    /// `--count` probes made.
    Count,
    /// Nobody reads stdout any more.
    ClosedOutput,
}

/// The last line: the counts, as JSON.
#[derive(Debug, Serialize)]
pub struct Summary<'a> {
    pub event: &'static str,
    pub url: &'a str,
    pub started: String,
    pub started_ms: u64,
    pub duration_ms: u64,
    pub stopped_by: Stopped,
    pub probes: u64,
    pub ok: u64,
    pub failed: u64,
    pub status_4xx: u64,
    pub windows: WindowTotals,
    pub versions: &'a BTreeMap<String, u64>,
    pub version_changes: u64,
}

#[derive(Debug, Serialize)]
pub struct WindowTotals {
    pub count: u64,
    pub total_ms: u64,
    pub longest_ms: u64,
}

/// Turns events into lines, text or JSON, with wall-clock times: text in
/// the machine's local time (`HH:MM:SS.mmm`), JSON as RFC 3339 in UTC and
/// Unix milliseconds (`*_ms`).
struct Lines {
    json: bool,
    /// Unix milliseconds when the watch started (its `Duration`s count from it).
    started_ms: u64,
    /// Local time's offset from UTC then, in milliseconds.
    offset_ms: i64,
}

impl Lines {
    fn wall_ms(&self, at: Duration) -> u64 {
        self.started_ms + at.as_millis() as u64
    }

    fn rfc3339(ms: u64) -> String {
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
    }

    fn clock(&self, at: Duration) -> String {
        let local = self.wall_ms(at) as i64 + self.offset_ms;
        let day = local.rem_euclid(86_400_000);
        format!(
            "{:02}:{:02}:{:02}.{:03}",
            day / 3_600_000,
            day / 60_000 % 60,
            day / 1000 % 60,
            day % 1000
        )
    }

    /// A moment, as JSON shows it: RFC 3339 (UTC) and Unix milliseconds.
    fn moment(&self, at: Duration) -> (String, u64) {
        let ms = self.wall_ms(at);
        (Self::rfc3339(ms), ms)
    }

    fn started(&self, opts: &Options) -> String {
        if self.json {
            let (at, at_ms) = self.moment(Duration::ZERO);
            return json_line(&StartedLine {
                event: "started",
                at,
                at_ms,
                url: &opts.url,
                every_ms: opts.every.as_millis() as u64,
                timeout_ms: opts.timeout.as_millis() as u64,
            });
        }
        let until = match opts.until {
            Until::Stopped => "until Ctrl-C".to_string(),
            Until::Elapsed(d) => format!("for {}", humantime::format_duration(d)),
            Until::Probes(n) => format!("for {n} probes"),
        };
        format!(
            "{}  watching {} every {} (timeout {}), {until}",
            self.clock(Duration::ZERO),
            opts.url,
            fmt_duration(opts.every),
            fmt_duration(opts.timeout)
        )
    }

    fn event(&self, event: &Event) -> String {
        match (event, self.json) {
            (Event::Version { at, from, to }, true) => {
                let (at, at_ms) = self.moment(*at);
                json_line(&VersionLine {
                    event: "version",
                    at,
                    at_ms,
                    from: from.as_deref(),
                    to,
                })
            }
            (Event::Version { at, from, to }, false) => match from {
                Some(from) => format!("{}  version {from} -> {to}", self.clock(*at)),
                None => format!("{}  version {to}", self.clock(*at)),
            },
            (Event::WindowOpened { at, kind }, true) => {
                let (at, at_ms) = self.moment(*at);
                json_line(&OpenedLine {
                    event: "window_opened",
                    at,
                    at_ms,
                    kind,
                })
            }
            (Event::WindowOpened { at, kind }, false) => {
                format!("{}  errors start: {kind}", self.clock(*at))
            }
            (Event::WindowClosed(w), true) => {
                let ((start, start_ms), (end, end_ms)) = (self.moment(w.start), self.moment(w.end));
                json_line(&ClosedLine {
                    event: "window_closed",
                    start,
                    start_ms,
                    end,
                    end_ms,
                    duration_ms: end_ms - start_ms,
                    failed: w.failed,
                    kinds: &w.kinds,
                    open: w.open,
                })
            }
            (Event::WindowClosed(w), false) => format!(
                "{}  errors {}: {} from {} to {}, {} failed {}: {}",
                self.clock(w.end),
                if w.open { "still on at the end" } else { "end" },
                fmt_duration(w.duration()),
                self.clock(w.start),
                self.clock(w.end),
                w.failed,
                if w.failed == 1 { "probe" } else { "probes" },
                w.breakdown()
            ),
        }
    }

    fn summary(&self, url: &str, counts: &Counts, took: Duration, stopped: Stopped) -> String {
        if self.json {
            let summary = Summary {
                event: "summary",
                url,
                started: Self::rfc3339(self.started_ms),
                started_ms: self.started_ms,
                duration_ms: took.as_millis() as u64,
                stopped_by: stopped,
                probes: counts.probes,
                ok: counts.ok,
                failed: counts.failed,
                status_4xx: counts.status_4xx,
                windows: WindowTotals {
                    count: counts.windows,
                    total_ms: counts.windows_total.as_millis() as u64,
                    longest_ms: counts.longest_window.as_millis() as u64,
                },
                versions: &counts.versions,
                version_changes: counts.version_changes,
            };
            return json_line(&summary);
        }
        let windows = match counts.windows {
            0 => "none".to_string(),
            n => format!(
                "{n}, {} in all, the longest {}",
                fmt_duration(counts.windows_total),
                fmt_duration(counts.longest_window)
            ),
        };
        let mut versions: Vec<String> = counts
            .versions
            .iter()
            .map(|(v, n)| format!("{v} ×{n}"))
            .collect();
        if versions.is_empty() {
            versions.push("none answered".into());
        }
        format!(
            "summary: {} probes in {}: {} answered ({} of them 4xx), {} failed\n  \
             error windows: {windows}\n  versions: {}",
            counts.probes,
            fmt_duration(took),
            counts.ok,
            counts.status_4xx,
            counts.failed,
            versions.join(", ")
        )
    }
}

fn json_line(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("serializable")
}

/// `-o json`'s first line: what is watched, how.
#[derive(Serialize)]
struct StartedLine<'a> {
    event: &'static str,
    at: String,
    at_ms: u64,
    url: &'a str,
    every_ms: u64,
    timeout_ms: u64,
}

/// `-o json`: the answering version changed (`from: null`: the first).
#[derive(Serialize)]
struct VersionLine<'a> {
    event: &'static str,
    at: String,
    at_ms: u64,
    from: Option<&'a str>,
    to: &'a str,
}

/// `-o json`: a probe failed after an answer; `kind` as the windows count.
#[derive(Serialize)]
struct OpenedLine<'a> {
    event: &'static str,
    at: String,
    at_ms: u64,
    kind: &'a str,
}

/// `-o json`: a window closed (`open`: by the end of the watch).
#[derive(Serialize)]
struct ClosedLine<'a> {
    event: &'static str,
    start: String,
    start_ms: u64,
    end: String,
    end_ms: u64,
    duration_ms: u64,
    failed: u64,
    kinds: &'a BTreeMap<String, u64>,
    open: bool,
}

/// Local time's offset from UTC at `unix_s`, in milliseconds (0 where the
/// zone is not known: a `FROM scratch` container is on UTC).
pub(crate) fn utc_offset_ms(unix_s: i64) -> i64 {
    let t = unix_s as libc::time_t;
    // SAFETY: a plain C struct, all zeroes is a valid value; localtime_r
    // writes only into it, and both outlive the call.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let done = unsafe { libc::localtime_r(&t, &mut tm) };
    if done.is_null() {
        0
    } else {
        // c_long: i64 here, i32 on 32-bit targets.
        #[allow(clippy::useless_conversion)]
        let offset_s = i64::from(tm.tm_gmtoff);
        offset_s * 1000
    }
}

/// Writes lines to stdout, each flushed as it is written (a pipe to `tee`
/// sees it at once).
#[derive(Default)]
struct Stdout {
    /// A write failed for another reason than a closed pipe (a full disk).
    failed: Option<std::io::Error>,
}

impl Stdout {
    /// Writes `line`; false when stdout cannot take it (closed: the reader
    /// went away; or failing), and the watch should end.
    fn put(&mut self, line: &str) -> bool {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        match writeln!(out, "{line}").and_then(|()| out.flush()) {
            Ok(()) => true,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    self.failed.get_or_insert(e);
                }
                false
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The loop.

/// Watches `opts.url` until SIGINT, SIGTERM, `opts.until`, or a stdout
/// that no one reads; prints as [`Lines`] says, on stdout.
///
/// Errors: [`Error::Config`] for a bad URL; [`Error::VerifyFailed`] (exit
/// 6) when a probe failed, after the summary; [`Error::Platform`] when
/// stdout cannot be written (other than closed) or signals cannot be
/// caught.
pub async fn run(opts: &Options, format: Format) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let uri = parse_url(&opts.url)?;
    let prober = Prober::new(uri, opts.timeout, opts.version.clone())?;
    let catch =
        |kind| signal(kind).map_err(|e| Error::Platform(format!("cannot catch signals: {e}")));
    let (mut int, mut term) = (
        catch(SignalKind::interrupt())?,
        catch(SignalKind::terminate())?,
    );
    let started = Instant::now();
    let started_ms = crate::clock::now_ms();
    let lines = Lines {
        json: format == Format::Json,
        started_ms,
        offset_ms: utc_offset_ms((started_ms / 1000) as i64),
    };
    let mut stdout = Stdout::default();
    let mut tracker = Tracker::new();
    let stop = async {
        let deadline = async {
            match opts.until {
                Until::Elapsed(d) => tokio::time::sleep_until((started + d).into()).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = int.recv() => Stopped::Signal,
            _ = term.recv() => Stopped::Signal,
            () = deadline => Stopped::Elapsed,
        }
    };
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(opts.every);
    // A probe longer than `every` delays the next tick: never a burst.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stopped = 'watch: {
        if !stdout.put(&lines.started(opts)) {
            break 'watch Stopped::ClosedOutput;
        }
        loop {
            tokio::select! {
                biased;
                stopped = &mut stop => break 'watch stopped,
                _ = tick.tick() => {}
            }
            // A reader that went away (`| head`) ends the watch now, not
            // at the next line, which may never come.
            if crate::output::reader_gone() {
                break 'watch Stopped::ClosedOutput;
            }
            let at = whole_ms(started.elapsed());
            let outcome = tokio::select! {
                biased;
                stopped = &mut stop => break 'watch stopped,
                outcome = prober.probe() => outcome,
            };
            for event in tracker.record(at, &outcome) {
                if !stdout.put(&lines.event(&event)) {
                    break 'watch Stopped::ClosedOutput;
                }
            }
            if let Until::Probes(n) = opts.until {
                if tracker.counts().probes >= n {
                    break 'watch Stopped::Count;
                }
            }
        }
    };
    let took = whole_ms(started.elapsed());
    let last = tracker.finish(took);
    if stopped != Stopped::ClosedOutput {
        if stopped == Stopped::Signal && !lines.json && std::io::stdout().is_terminal() {
            // The terminal echoed `^C` where the next line starts: over it.
            use std::io::Write as _;
            let _ = std::io::stdout().lock().write_all(b"\r");
        }
        if let Some(event) = &last {
            stdout.put(&lines.event(event));
        }
        stdout.put(&lines.summary(&opts.url, tracker.counts(), took, stopped));
    }
    if let Some(e) = stdout.failed {
        return Err(Error::Platform(format!("cannot write to stdout: {e}")));
    }
    let counts = tracker.counts();
    match counts.failed {
        0 => Ok(()),
        failed => Err(Error::VerifyFailed(format!(
            "{failed} of {} probes to {} failed, in {} error {} (the longest {})",
            counts.probes,
            opts.url,
            counts.windows,
            if counts.windows == 1 {
                "window"
            } else {
                "windows"
            },
            fmt_duration(counts.longest_window)
        ))),
    }
}

/// `d` to the millisecond below: what is printed, so that a window's
/// `duration_ms` is its `end_ms - start_ms` exactly.
fn whole_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn ok(version: &str) -> Outcome {
        Outcome::answer(200, Some(version.to_string()))
    }

    fn refused() -> Outcome {
        Outcome::Failed(Failure::Refused)
    }

    #[test]
    fn a_hostile_version_is_printable_bounded_and_counted_in_bounds() {
        let source = VersionSource {
            header: None,
            field: "version".into(),
        };
        let body = br#"{"version": "1.0\u001b[2J\u001b]0;owned\u0007\nfake line"}"#;
        let v = source.find(&HeaderMap::new(), Some(body)).unwrap();
        assert!(!v.chars().any(char::is_control), "{v:?}");
        assert_eq!(v, "1.0\\u{1b}[2J\\u{1b}]0;owned\\u{7}\\u{a}fake line");
        let reversed = source
            .find(
                &HeaderMap::new(),
                Some(r#"{"version": "2.0.0\u202e1.0.0"}"#.as_bytes()),
            )
            .unwrap();
        assert_eq!(reversed, "2.0.0\\u{202e}1.0.0");
        let long = format!(r#"{{"version": "{}"}}"#, "9".repeat(100_000));
        let v = source
            .find(&HeaderMap::new(), Some(long.as_bytes()))
            .unwrap();
        assert_eq!(
            v.chars().count(),
            VERSION_MAX_CHARS + 1,
            "128 characters and an ellipsis"
        );
        let mut t = Tracker::new();
        for i in 0..(VERSIONS_KEPT as u64 + 50) {
            t.record(ms(i), &Outcome::answer(200, Some(format!("v{i}"))));
        }
        let c = t.counts();
        assert_eq!(c.versions.len(), VERSIONS_KEPT + 1);
        assert_eq!(c.versions[OTHER_VERSIONS], 50);
    }

    #[test]
    fn the_first_version_then_each_change_is_an_event() {
        let mut t = Tracker::new();
        assert_eq!(
            t.record(ms(0), &ok("1.0.0")),
            vec![Event::Version {
                at: ms(0),
                from: None,
                to: "1.0.0".into()
            }]
        );
        assert!(t.record(ms(200), &ok("1.0.0")).is_empty());
        assert_eq!(
            t.record(ms(400), &ok("2.0.0")),
            vec![Event::Version {
                at: ms(400),
                from: Some("1.0.0".into()),
                to: "2.0.0".into()
            }]
        );
        // Back and forth (two colors behind a balancer) is two changes.
        t.record(ms(600), &ok("1.0.0"));
        let c = t.counts();
        assert_eq!(c.version_changes, 2);
        assert_eq!(c.versions["1.0.0"], 3);
        assert_eq!(c.versions["2.0.0"], 1);
        assert_eq!((c.probes, c.ok, c.failed, c.windows), (4, 4, 0, 0));
    }

    #[test]
    fn an_answer_naming_no_version_changes_nothing_and_is_counted_as_unknown() {
        let mut t = Tracker::new();
        t.record(ms(0), &ok("1.0.0"));
        assert!(t.record(ms(10), &Outcome::answer(200, None)).is_empty());
        // Still 1.0.0 as far as changes go: no `1.0.0 -> -`, no `- -> 1.0.0`.
        assert!(t.record(ms(20), &ok("1.0.0")).is_empty());
        assert_eq!(t.counts().versions[UNKNOWN_VERSION], 1);
        assert_eq!(t.counts().version_changes, 0);
    }

    #[test]
    fn failures_in_a_row_are_one_window_from_the_first_to_the_next_answer() {
        let mut t = Tracker::new();
        t.record(ms(0), &ok("1.0.0"));
        assert_eq!(
            t.record(ms(200), &refused()),
            vec![Event::WindowOpened {
                at: ms(200),
                kind: "refused".into()
            }]
        );
        assert!(t.record(ms(400), &refused()).is_empty());
        assert!(t
            .record(ms(600), &Outcome::Failed(Failure::Timeout))
            .is_empty());
        assert!(t.record(ms(1600), &Outcome::answer(502, None)).is_empty());
        // The answer that ends it is also the new version: window first.
        let events = t.record(ms(1800), &ok("2.0.0"));
        let Event::WindowClosed(w) = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!(
            (w.start, w.end, w.failed, w.open),
            (ms(200), ms(1800), 4, false)
        );
        assert_eq!(w.duration(), ms(1600));
        assert_eq!(w.breakdown(), "refused ×2, 502 ×1, timeout ×1");
        assert!(matches!(&events[1], Event::Version { to, .. } if to == "2.0.0"));
        assert_eq!(events.len(), 2);
        let c = t.counts();
        assert_eq!((c.probes, c.ok, c.failed), (6, 2, 4));
        assert_eq!(
            (c.windows, c.windows_total, c.longest_window),
            (1, ms(1600), ms(1600))
        );
    }

    #[test]
    fn windows_add_up_and_the_longest_is_kept() {
        let mut t = Tracker::new();
        for (at, outcome) in [
            (0, refused()),
            (100, ok("1")),
            (200, refused()),
            (300, refused()),
            (400, refused()),
            (500, ok("1")),
            (600, refused()),
            (700, ok("1")),
        ] {
            t.record(ms(at), &outcome);
        }
        let c = t.counts();
        assert_eq!(
            (c.windows, c.windows_total, c.longest_window),
            (3, ms(500), ms(300))
        );
        assert_eq!((c.probes, c.ok, c.failed), (8, 3, 5));
        assert_eq!(c.ok + c.failed, c.probes);
    }

    #[test]
    fn a_4xx_is_an_answer_counted_apart_and_opens_no_window() {
        let mut t = Tracker::new();
        assert!(t.record(ms(0), &Outcome::answer(404, None)).is_empty());
        assert!(t
            .record(ms(10), &Outcome::answer(429, Some("1.0.0".into())))
            .iter()
            .all(|e| matches!(e, Event::Version { .. })));
        let c = t.counts();
        assert_eq!((c.ok, c.failed, c.status_4xx, c.windows), (2, 0, 2, 0));
        assert_eq!(
            Outcome::answer(503, Some("x".into())),
            Outcome::Failed(Failure::Status(503))
        );
    }

    #[test]
    fn a_window_still_open_at_the_end_is_closed_as_open_and_counted() {
        let mut t = Tracker::new();
        t.record(ms(0), &ok("1.0.0"));
        t.record(ms(100), &refused());
        t.record(ms(200), &refused());
        let Some(Event::WindowClosed(w)) = t.finish(ms(250)) else {
            panic!("no window")
        };
        assert!(w.open);
        assert_eq!((w.start, w.end, w.failed), (ms(100), ms(250), 2));
        assert_eq!(t.counts().windows, 1);
        assert_eq!(t.finish(ms(300)), None, "closed once");
        // Nothing open: nothing to close.
        assert_eq!(Tracker::new().finish(ms(1)), None);
    }

    #[test]
    fn the_version_comes_from_the_header_else_the_json_field() {
        let mut headers = HeaderMap::new();
        let default = VersionSource::default();
        let body = br#" {"version": "3.1.4", "build": 7}"#;
        assert_eq!(default.find(&headers, Some(body)).as_deref(), Some("3.1.4"));
        assert_eq!(default.find(&headers, Some(b"3.1.4")), None, "not JSON");
        assert_eq!(default.find(&headers, None), None);
        let build = VersionSource {
            header: None,
            field: "build".into(),
        };
        assert_eq!(build.find(&headers, Some(body)).as_deref(), Some("7"));
        headers.insert("x-app-version", "2.0.0".parse().unwrap());
        assert_eq!(default.find(&headers, Some(body)).as_deref(), Some("2.0.0"));
        headers.insert("x-version", "1.0.0".parse().unwrap());
        assert_eq!(default.find(&headers, None).as_deref(), Some("1.0.0"));
        let named = VersionSource {
            header: Some("X-Release".into()),
            field: "version".into(),
        };
        assert_eq!(
            named.find(&headers, Some(body)).as_deref(),
            Some("3.1.4"),
            "a named header replaces the defaults"
        );
        headers.insert("x-release", "9".parse().unwrap());
        assert_eq!(named.find(&headers, None).as_deref(), Some("9"));
    }

    #[test]
    fn urls_are_http_or_https_with_a_host() {
        assert!(parse_url("http://127.0.0.1:8000/").is_ok());
        assert!(parse_url("https://example.com/healthz?x=1").is_ok());
        for bad in [
            "127.0.0.1:8000",
            "ftp://example.com/",
            "http:///path",
            "http://user:pw@example.com/",
            "not a url",
        ] {
            let e = parse_url(bad).unwrap_err();
            assert_eq!(e.kind(), "config", "{bad}: {e}");
        }
        for bad in ["http://127.0.0.1:99999/", "http://127.0.0.1:0/"] {
            assert!(
                matches!(parse_url(bad), Err(Error::Config(m)) if m.contains("65535")),
                "{bad}"
            );
        }
    }

    #[test]
    fn lines_read_as_documented() {
        let lines = Lines {
            json: false,
            started_ms: 3_600_000 + 2 * 60_000 + 3_000 + 4,
            offset_ms: 0,
        };
        let w = Window {
            start: ms(1000),
            end: ms(2600),
            failed: 9,
            kinds: [("refused".to_string(), 8), ("closed".to_string(), 1)].into(),
            open: false,
        };
        assert_eq!(
            lines.event(&Event::WindowClosed(w.clone())),
            "01:02:05.604  errors end: 1.6s from 01:02:04.004 to 01:02:05.604, 9 failed probes: refused ×8, closed ×1"
        );
        let json = Lines {
            json: true,
            ..lines
        };
        let v: serde_json::Value =
            serde_json::from_str(&json.event(&Event::WindowClosed(w))).unwrap();
        assert_eq!(v["event"], "window_closed");
        assert_eq!(v["duration_ms"], 1600);
        assert_eq!(
            v["end_ms"].as_u64().unwrap() - v["start_ms"].as_u64().unwrap(),
            1600
        );
        assert_eq!(v["kinds"]["refused"], 8);
        assert_eq!(v["start"], "1970-01-01T01:02:04.004Z");
    }
}
