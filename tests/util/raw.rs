//! Raw HTTP/1.1 on plain TCP, for tests that send the bytes a hostile or
//! broken peer would: parsing heads and chunked bodies, framing requests
//! and responses as a lenient peer does, a client connection that keeps
//! what it reads (and when the other side closed it), and the accept loop
//! of small hand-written upstreams.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a client waits for an ordinary response.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------
// Parsing.

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The values of every `name` header in `head`, trimmed, in order.
pub fn header_values(head: impl AsRef<[u8]>, name: &str) -> Vec<String> {
    String::from_utf8_lossy(head.as_ref())
        .split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

pub fn is_chunked(head: impl AsRef<[u8]>) -> bool {
    header_values(head, "transfer-encoding")
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("chunked"))
}

/// The first Content-Length, if it is a number.
pub fn content_length(head: impl AsRef<[u8]>) -> Option<usize> {
    header_values(head, "content-length").first()?.parse().ok()
}

pub enum Chunks {
    Partial,
    Invalid(String),
    Whole { body: Vec<u8>, used: usize },
}

/// Decodes a chunked body at the start of `buf` (RFC 9112 §7.1).
pub fn dechunk(buf: &[u8]) -> Chunks {
    let mut body = Vec::new();
    let mut i = 0;
    loop {
        let Some(eol) = find(&buf[i..], b"\r\n") else {
            return match buf.len() - i > 128 {
                true => Chunks::Invalid("chunk-size line too long".into()),
                false => Chunks::Partial,
            };
        };
        let line = &buf[i..i + eol];
        let size = line.split(|&b| b == b';').next().unwrap_or_default();
        let size = String::from_utf8_lossy(size);
        let size = size.trim_matches([' ', '\t']);
        if size.is_empty() || size.len() > 16 || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Chunks::Invalid(format!("chunk size {size:?}"));
        }
        let size = u64::from_str_radix(size, 16).unwrap() as usize;
        i += eol + 2;
        if size == 0 {
            // Trailers, then the blank line.
            loop {
                let Some(eol) = find(&buf[i..], b"\r\n") else {
                    return Chunks::Partial;
                };
                i += eol + 2;
                if eol == 0 {
                    return Chunks::Whole { body, used: i };
                }
            }
        }
        if buf.len() - i < size.saturating_add(2) {
            return Chunks::Partial;
        }
        body.extend_from_slice(&buf[i..i + size]);
        if &buf[i + size..i + size + 2] != b"\r\n" {
            return Chunks::Invalid("no CRLF after chunk data".into());
        }
        i += size + 2;
    }
}

/// One chunk of a chunked body.
pub fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

pub enum Take {
    Partial,
    Whole {
        head: Vec<u8>,
        body: Vec<u8>,
        used: usize,
    },
    /// A whole head whose body framing the upstream cannot follow.
    Bad {
        head: Vec<u8>,
        why: String,
    },
}

/// One request from the start of `buf`, framed as a lenient origin server
/// would: Transfer-Encoding over Content-Length, a list of equal lengths
/// taken as one.
pub fn take_request(buf: &[u8]) -> Take {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return Take::Partial;
    };
    let head = buf[..end + 4].to_vec();
    let rest = &buf[end + 4..];
    let te = header_values(&head, "transfer-encoding");
    let cl = header_values(&head, "content-length");
    if !te.is_empty() {
        let codings = te.join(",");
        let last = codings.rsplit(',').next().unwrap_or_default();
        if !last.trim().eq_ignore_ascii_case("chunked") {
            let why = format!("transfer-encoding {codings:?}");
            return Take::Bad { head, why };
        }
        return match dechunk(rest) {
            Chunks::Partial => Take::Partial,
            Chunks::Invalid(why) => Take::Bad { head, why },
            Chunks::Whole { body, used } => Take::Whole {
                head,
                body,
                used: end + 4 + used,
            },
        };
    }
    let lens: Vec<Result<usize, _>> = cl
        .iter()
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().parse::<usize>())
        .collect();
    let n = match lens.first() {
        None => 0,
        Some(Ok(n)) if lens.iter().all(|l| l.as_ref() == Ok(n)) => *n,
        Some(_) => {
            let why = format!("content-length {cl:?}");
            return Take::Bad { head, why };
        }
    };
    match rest.len() < n {
        true => Take::Partial,
        false => Take::Whole {
            head,
            body: rest[..n].to_vec(),
            used: end + 4 + n,
        },
    }
}

/// The response at the start of `buf`: status (0 if it is not a number),
/// head, and the body bytes received so far, framing and all.
pub fn split_response(buf: &[u8]) -> Option<(u16, String, &[u8])> {
    let end = find(buf, b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Some((status, head, &buf[end..]))
}

/// A response with this status has no body, whatever its head says.
fn bodiless(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

/// The decoded body of the response at the start of `buf`, once it is
/// whole by its framing (chunked, or a length; no body for 1xx/204/304).
pub fn whole_body(buf: &[u8]) -> Option<Vec<u8>> {
    let (status, head, rest) = split_response(buf)?;
    if bodiless(status) {
        return Some(Vec::new());
    }
    if is_chunked(&head) {
        return match dechunk(rest) {
            Chunks::Whole { body, .. } => Some(body),
            _ => None,
        };
    }
    let n = content_length(&head)?;
    (rest.len() >= n).then(|| rest[..n].to_vec())
}

/// The status of the response at the start of `buf` (0: none).
pub fn status_of(buf: &[u8]) -> u16 {
    split_response(buf).map_or(0, |(s, _, _)| s)
}

/// The start of what a client received, for failure messages.
pub fn shown(buf: &[u8]) -> String {
    let text = String::from_utf8_lossy(buf);
    match text.len() > 300 {
        true => format!("{:?}… ({} bytes)", &text[..300], buf.len()),
        false => format!("{text:?}"),
    }
}

/// A response as a client read it.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub head: String,
    /// Decoded: without chunked framing.
    pub body: Vec<u8>,
}

impl Resp {
    pub fn headers(&self, name: &str) -> Vec<String> {
        header_values(&self.head, name)
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One response from the start of `buf`, and how many bytes it took;
/// `eof`: nothing more will come (a body cut short is taken as it is).
pub fn take_response(buf: &[u8], eof: bool) -> Option<(Resp, usize)> {
    let (status, head, rest) = split_response(buf)?;
    let end = buf.len() - rest.len();
    let resp = |body: &[u8]| Resp {
        status,
        head: head.clone(),
        body: body.to_vec(),
    };
    if bodiless(status) {
        return Some((resp(b""), end));
    }
    if is_chunked(&head) {
        return match dechunk(rest) {
            Chunks::Whole { body, used } => Some((resp(&body), end + used)),
            Chunks::Invalid(_) => Some((resp(rest), buf.len())),
            Chunks::Partial if eof => Some((resp(rest), buf.len())),
            Chunks::Partial => None,
        };
    }
    if let Some(n) = content_length(&head) {
        return match rest.len() >= n {
            true => Some((resp(&rest[..n]), end + n)),
            false if eof => Some((resp(rest), buf.len())),
            false => None,
        };
    }
    // Delimited by the close.
    eof.then(|| (resp(rest), buf.len()))
}

// ---------------------------------------------------------------------------
// The client.

/// A client connection that writes raw bytes and keeps what it reads, and
/// when the other side closed it.
pub struct Conn {
    pub s: TcpStream,
    /// Read and not yet taken as a response.
    pub buf: Vec<u8>,
    /// When the connection was closed (or reading from it failed).
    pub closed: Option<Instant>,
}

impl Conn {
    pub async fn open(addr: &str) -> Conn {
        Conn {
            s: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
            closed: None,
        }
    }

    /// Writes `bytes`; the other side may have closed already, which the
    /// next read shows.
    pub async fn send(&mut self, bytes: &[u8]) {
        let _ = self.s.write_all(bytes).await;
    }

    pub async fn shutdown_write(&mut self) {
        let _ = self.s.shutdown().await;
    }

    /// Reads once into `buf`, or notes the close; `false`: nothing came
    /// by `deadline`.
    async fn read_some(&mut self, deadline: tokio::time::Instant) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout_at(deadline, self.s.read(&mut chunk)).await {
            Err(_) => false,
            Ok(Ok(0)) | Ok(Err(_)) => {
                self.closed = Some(Instant::now());
                true
            }
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Reads for up to `wait` until `enough` holds for what was read (then:
    /// when it did) or the connection closes (`None`).
    pub async fn read_until(
        &mut self,
        wait: Duration,
        enough: &dyn Fn(&[u8]) -> bool,
    ) -> Option<Instant> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if enough(&self.buf) {
                return Some(Instant::now());
            }
            if self.closed.is_some() || !self.read_some(deadline).await {
                return None;
            }
        }
    }

    /// The next final response (interim 1xx ones skipped), taken out of
    /// `buf`, or `None` when the connection closed or nothing came within
    /// `RESPONSE_TIMEOUT`.
    pub async fn response(&mut self) -> Option<Resp> {
        let deadline = tokio::time::Instant::now() + RESPONSE_TIMEOUT;
        loop {
            if let Some((resp, used)) = take_response(&self.buf, self.closed.is_some()) {
                self.buf.drain(..used);
                if (100..200).contains(&resp.status) {
                    continue;
                }
                return Some(resp);
            }
            if self.closed.is_some() || !self.read_some(deadline).await {
                return None;
            }
        }
    }

    /// Drops what was read, then reads for up to `wait` until a whole
    /// response is in `buf`: when it was (`None`: closed or out of time).
    pub async fn whole_response(&mut self, wait: Duration) -> Option<Instant> {
        self.buf.clear();
        self.read_until(wait, &|b| whole_body(b).is_some()).await
    }

    /// Reads until the connection closes, for up to `wait`: when it closed.
    pub async fn closed_within(&mut self, wait: Duration) -> Option<Instant> {
        self.read_until(wait, &|_| false).await;
        self.closed
    }

    /// Writes `bytes` one at a time, `every` apart, while reading, until the
    /// other side closes the connection or `wait` passes: when the first
    /// byte went out, and when the connection closed.
    pub async fn drip(
        &mut self,
        bytes: &[u8],
        every: Duration,
        wait: Duration,
    ) -> (Instant, Option<Instant>) {
        let Conn { s, buf, closed } = self;
        let (mut r, mut w) = s.split();
        let first = Instant::now();
        let writer = async {
            for b in bytes {
                if w.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(every).await;
            }
            std::future::pending::<()>().await;
        };
        let reader = async {
            let mut chunk = [0u8; 4096];
            loop {
                match r.read(&mut chunk).await {
                    Ok(0) | Err(_) => return Instant::now(),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        };
        tokio::select! {
            at = reader => *closed = Some(at),
            _ = writer => {}
            _ = tokio::time::sleep(wait) => {}
        }
        (first, *closed)
    }
}

/// One request on a new connection, and its response.
pub async fn exchange(addr: &str, request: &[u8]) -> Option<Resp> {
    let mut c = Conn::open(addr).await;
    c.send(request).await;
    c.response().await
}

/// The status line of a response, for failure messages.
pub fn line(r: &Option<Resp>) -> String {
    match r {
        Some(r) => r.head.split("\r\n").next().unwrap_or_default().to_string(),
        None => "no response".into(),
    }
}

pub fn status(r: &Option<Resp>) -> u16 {
    r.as_ref().map_or(0, |r| r.status)
}

/// Fails with every line of `wrong`, if there is one.
pub fn assert_all_right(wrong: &[String]) {
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

// ---------------------------------------------------------------------------
// Upstreams.

/// Listens on 127.0.0.1 and runs what `serve` makes of each connection
/// (it is called at the accept, in order); returns the address.
pub async fn serve_each<F, S>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream) -> S + Send + 'static,
    S: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    addr
}

/// Reads until a whole request head has come (what came after it is
/// dropped); `None`: the connection ended first.
pub async fn read_head(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while find(&head, b"\r\n\r\n").is_none() {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    Some(head)
}
