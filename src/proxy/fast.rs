//! The HTTP/1.1 fast path of plain-HTTP listeners.
//!
//! Most traffic through a deploy proxy is plain keep-alive HTTP/1.1 with a
//! fixed-length or no request body. For that, hyper's general machinery
//! (a header map per message on each side, and a task per upstream
//! connection with channels between them) cost cyan twice nginx's
//! user-space time per request, and with it the throughput target (see
//! bench/README.md). Here each head is parsed once, in place, and written
//! out again with the forwarding headers (`heads`); bodies are copied as
//! they come (`framing` finds their ends); the client connection's task
//! drives its upstream stream itself.
//!
//! Anything else goes to hyper, for the rest of the connection, with the
//! bytes read so far: HTTP/1.0, upgrades, `Expect`, chunked or doubtful
//! request framing, absolute-form targets, h2c, a head that does not parse
//! or is larger than `MAX_HEAD` (hyper then answers 400 or 431 itself).
//! Routing, claims, retries, passive health, counters and drain are the
//! same code as on hyper's path (`forward`).

use std::io;
use std::ops::Range;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::forward::{Attempt, Client, Failed, Own};
use super::framing::{Chunked, Framing};
use super::heads::{header, status_line, Parse, RequestHead, ResponseHead};
use super::prefixed::Prefixed;
use super::upstream::Conns;

/// Larger request heads go to hyper, which takes up to ~400 KiB and
/// answers 431 past that.
const MAX_HEAD: usize = 16 * 1024;
/// What an upstream's response head may take, as with hyper's client.
const MAX_RESPONSE_HEAD: usize = 400 * 1024;
const READ_SIZE: usize = 16 * 1024;
/// How long a closing connection waits for the client's end.
const LINGER: Duration = Duration::from_secs(1);

/// How the fast path left a connection.
pub enum Ended {
    /// Closed: by the client, after `Connection: close`, at shutdown, or on
    /// an error that left the connection out of step.
    Closed,
    /// hyper serves the rest, starting with the bytes read so far.
    HandOff(Prefixed),
}

/// Serves `stream` until it closes or needs hyper. `close_idle` turns true
/// when the proxy closes its idle connections (the end of a drain).
pub async fn serve(
    mut stream: TcpStream,
    client: &Client,
    close_idle: &mut watch::Receiver<bool>,
) -> Ended {
    let mut buf = BytesMut::with_capacity(READ_SIZE);
    loop {
        let head = loop {
            if !buf.is_empty() {
                match RequestHead::parse(&buf, client) {
                    Parse::Complete(head) => break head,
                    Parse::Partial if buf.len() < MAX_HEAD => {}
                    Parse::Partial | Parse::NotFast => {
                        return Ended::HandOff(Prefixed::new(buf.freeze(), stream))
                    }
                }
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(READ_SIZE);
            }
            let read = if buf.is_empty() {
                tokio::select! {
                    biased;
                    _ = close_idle.wait_for(|closing| *closing) => return Ended::Closed,
                    read = stream.read_buf(&mut buf) => read,
                }
            } else {
                stream.read_buf(&mut buf).await
            };
            if !matches!(read, Ok(n) if n > 0) {
                return Ended::Closed;
            }
        };
        match forward(&mut stream, &mut buf, head, client).await {
            Ok(true) => {}
            Ok(false) => {
                close_gently(stream).await;
                return Ended::Closed;
            }
            Err(_) => return Ended::Closed,
        }
    }
}

/// Closes after a last response: the write side first, then what the
/// client still sends is read and dropped for a moment. Closing with
/// unread bytes would answer them with a reset, which can destroy the
/// response in flight.
async fn close_gently(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// Forwards one request whose head is at the start of `buf`. `Ok(true)`:
/// the connection is ready for the next request.
async fn forward(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    mut head: RequestHead,
    client: &Client,
) -> io::Result<bool> {
    let forwarder = &client.forwarder;
    let claimed = {
        let host = text_at(buf, head.host.clone());
        forwarder
            .claim(Some(host), client.local, text_at(buf, head.path.clone()))
            .await
    };
    buf.advance(head.len);
    // Request body bytes already read go out with the head; the rest are
    // copied from the client as they come.
    let mut out = std::mem::take(&mut head.upstream);
    let read = head.body.min(buf.len() as u64) as usize;
    out.extend_from_slice(&buf[..read]);
    buf.advance(read);
    let unread = head.body - read as u64;
    let keep_alive = !head.close && !forwarder.closing.load(std::sync::atomic::Ordering::Relaxed);
    let (claim, policy) = match claimed {
        Ok(claimed) => claimed,
        // Unread body bytes would be taken for the next request: close.
        Err(own) => return answer(stream, &own, None, &head, keep_alive && unread == 0).await,
    };
    let started = Instant::now();
    let timeout = Duration::from_millis(policy.response_timeout_ms);
    let mut attempt = Attempt::new(claim, &policy, started);
    let (claim, (mut upstream, mut rbuf, response)) = loop {
        let sent = send(
            attempt.claim.conns(),
            &out,
            unread,
            stream,
            buf,
            head.method_head,
        );
        let failed = match tokio::time::timeout(timeout, sent).await {
            Ok(Ok(answered)) => break (attempt.answered(), answered),
            Ok(Err(failed)) => failed,
            Err(_) => Failed::Timeout(timeout),
        };
        if let Err(own) = attempt.failed(failed) {
            let id = head.id.as_bytes();
            return answer(stream, &own, Some(id), &head, keep_alive && unread == 0).await;
        }
    };
    claim
        .pool()
        .stats
        .record(response.status, started.elapsed());
    let keep_alive = keep_alive && response.framing != Framing::UntilClose;
    let mut reply = response.client_head;
    reply.extend_from_slice(b"x-request-id: ");
    reply.extend_from_slice(head.id.as_bytes());
    reply.extend_from_slice(if keep_alive {
        b"\r\n\r\n"
    } else {
        b"\r\nconnection: close\r\n\r\n"
    });
    let complete = copy_body(response.framing, &mut upstream, &mut rbuf, reply, stream).await?;
    if complete && response.reusable && rbuf.is_empty() {
        claim.conns().checkin_stream(upstream);
    }
    // The claim ends with the body: the color's drain counts it till here.
    drop(claim);
    Ok(keep_alive)
}

/// One try: sends the request on a stream to the claimed upstream and
/// reads the response head (interim 1xx responses go to the client on the
/// way). A pooled stream the upstream closed meanwhile is replaced once
/// by a new one, when no body was streamed from the client yet.
async fn send(
    conns: &Conns,
    out: &[u8],
    unread: u64,
    client: &mut TcpStream,
    buf: &mut BytesMut,
    method_head: bool,
) -> Result<(TcpStream, BytesMut, ResponseHead), Failed> {
    let mut fresh_only = false;
    'stream: loop {
        let (mut upstream, pooled) = if fresh_only {
            (conns.fresh_stream().await.map_err(Failed::Refused)?, false)
        } else {
            conns.stream().await.map_err(Failed::Refused)?
        };
        let may_retry = pooled && unread == 0;
        if let Err(e) = upstream.write_all(out).await {
            if may_retry {
                fresh_only = true;
                continue 'stream;
            }
            return Err(Failed::Other(format!("sending the request: {e}")));
        }
        if unread > 0 {
            copy_request_body(client, buf, &mut upstream, unread).await?;
        }
        let mut rbuf = BytesMut::with_capacity(READ_SIZE);
        loop {
            let read = upstream.read_buf(&mut rbuf).await;
            match read {
                Ok(n) if n > 0 => {}
                _ if may_retry && rbuf.is_empty() => {
                    fresh_only = true;
                    continue 'stream;
                }
                Ok(_) => return Err(Failed::Other("the upstream closed the connection".into())),
                Err(e) => return Err(Failed::Other(format!("reading the response: {e}"))),
            }
            while let Some(response) = ResponseHead::parse(&rbuf, method_head)? {
                rbuf.advance(response.len);
                if !(100..200).contains(&response.status) {
                    return Ok((upstream, rbuf, response));
                }
                // Interim (100 Continue, 103 Early Hints): passed on as is.
                let mut interim = response.client_head;
                interim.extend_from_slice(b"\r\n");
                client
                    .write_all(&interim)
                    .await
                    .map_err(|e| Failed::Other(format!("the client went away: {e}")))?;
            }
            if rbuf.len() >= MAX_RESPONSE_HEAD {
                return Err(Failed::Other("the response head is too large".into()));
            }
            rbuf.reserve(READ_SIZE);
        }
    }
}

/// Copies the rest of a fixed-length request body from the client.
async fn copy_request_body(
    client: &mut TcpStream,
    buf: &mut BytesMut,
    upstream: &mut TcpStream,
    mut left: u64,
) -> Result<(), Failed> {
    while left > 0 {
        buf.reserve(READ_SIZE);
        match client.read_buf(buf).await {
            Ok(n) if n > 0 => {}
            _ => {
                return Err(Failed::Other(
                    "the client ended the request body early".into(),
                ))
            }
        }
        let take = left.min(buf.len() as u64) as usize;
        upstream
            .write_all(&buf[..take])
            .await
            .map_err(|e| Failed::Other(format!("sending the request body: {e}")))?;
        buf.advance(take);
        left -= take as u64;
    }
    Ok(())
}

/// Writes the response head and copies the body to the client. `true` if
/// the body ended where its framing says (the upstream stream may then be
/// reused).
async fn copy_body(
    framing: Framing,
    upstream: &mut TcpStream,
    rbuf: &mut BytesMut,
    mut pending: Vec<u8>,
    client: &mut TcpStream,
) -> io::Result<bool> {
    let mut chunked = Chunked::default();
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    loop {
        let take = match framing {
            Framing::Length(_) => left.min(rbuf.len() as u64) as usize,
            Framing::Chunked => chunked
                .feed(rbuf)
                .map_err(|_| io::Error::other("invalid chunked framing from the upstream"))?,
            Framing::UntilClose => rbuf.len(),
        };
        // The head goes out with the first bytes of the body, in one write.
        if pending.is_empty() {
            client.write_all(&rbuf[..take]).await?;
        } else {
            pending.extend_from_slice(&rbuf[..take]);
            client.write_all(&pending).await?;
            pending = Vec::new();
        }
        rbuf.advance(take);
        let done = match framing {
            Framing::Length(_) => {
                left -= take as u64;
                left == 0
            }
            Framing::Chunked => chunked.done(),
            Framing::UntilClose => false,
        };
        if done {
            return Ok(true);
        }
        rbuf.clear();
        rbuf.reserve(READ_SIZE);
        if upstream.read_buf(rbuf).await? == 0 {
            return match framing {
                Framing::UntilClose => Ok(false),
                _ => Err(io::Error::other("the upstream closed mid-body")),
            };
        }
    }
}

/// Answers with a page cyan made.
async fn answer(
    stream: &mut TcpStream,
    own: &Own,
    id: Option<&[u8]>,
    head: &RequestHead,
    keep_alive: bool,
) -> io::Result<bool> {
    let mut out = Vec::with_capacity(256 + own.body.len());
    status_line(&mut out, own.status.as_u16(), None);
    out.extend_from_slice(b"content-type: text/plain; charset=utf-8\r\ncontent-length: ");
    out.extend_from_slice(own.body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(s) = own.retry_after_s {
        out.extend_from_slice(format!("retry-after: {s}\r\n").as_bytes());
    }
    if let Some(id) = id {
        header(&mut out, "x-request-id", id);
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head.method_head {
        out.extend_from_slice(own.body.as_bytes());
    }
    stream.write_all(&out).await?;
    Ok(keep_alive)
}

fn text_at(buf: &[u8], range: Range<usize>) -> &str {
    std::str::from_utf8(&buf[range]).unwrap_or_default()
}
