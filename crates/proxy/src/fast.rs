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
//! Routing and claims (`forward`'s `Forwarder::claim`), retries and blame
//! (`attempt`), passive health (`upstream`), counters (`stats`), cyan's
//! pages (`pages`) and drain are the same code as on hyper's path.

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::attempt::{Attempt, ClientFault, Failed};
use super::conn_pool::ConnPool;
use super::drain::{slot_reached, EventBoundary, BOUNDARY_GRACE};
use super::forward::ClientConn;
use super::framing::{Chunked, Framing};
use super::heads::{header, status_line, Parse, RequestHead, ResponseHead};
use super::load_balancer::LoadBalancer;
use super::pages::{Page, REQUEST_TIMEOUT};
use super::prefixed::Prefixed;

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
/// when the proxy closes its idle connections (the end of a drain). Every
/// read from the client has a deadline (`timeouts`): the first byte of a
/// request within the idle timeout, the rest of its head within the header
/// timeout, each piece of its body within the body timeout.
pub async fn serve(
    mut stream: TcpStream,
    client: &ClientConn,
    close_idle: &mut watch::Receiver<bool>,
) -> Ended {
    let timeouts = client.forwarder.timeouts;
    let mut buf = BytesMut::with_capacity(READ_SIZE);
    loop {
        let mut head_deadline = None;
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
                    read = tokio::time::timeout(timeouts.idle, stream.read_buf(&mut buf)) => read,
                }
            } else {
                let deadline = *head_deadline
                    .get_or_insert_with(|| tokio::time::Instant::now() + timeouts.header);
                let read = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await;
                if read.is_err() {
                    // A head that never ends (slowloris): 408, then close.
                    let _ = stream.write_all(REQUEST_TIMEOUT).await;
                    close_gently(stream).await;
                    return Ended::Closed;
                }
                read
            };
            if !matches!(read, Ok(Ok(n)) if n > 0) {
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
    client: &ClientConn,
) -> io::Result<bool> {
    let forwarder = &client.forwarder;
    let claimed = {
        let host = text_at(buf, head.host.clone());
        forwarder
            .claim(Some(host), client, text_at(buf, head.path.clone()))
            .await
    };
    if let Ok((_, policy)) = &claimed {
        if policy.trusted {
            head.trust(buf, client);
        }
    }
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
        Err(page) => return answer(stream, &page, None, &head, keep_alive && unread == 0).await,
    };
    let started = Instant::now();
    let exchange = Exchange {
        out: &out,
        unread,
        method_head: head.method_head,
        // Sent again after a drop only if the method allows it and the
        // whole request is in `out` (nothing streamed from the client).
        replayable: head.idempotent && unread == 0,
        response_timeout: Duration::from_millis(policy.response_timeout_ms),
        body_timeout: forwarder.timeouts.body,
    };
    let mut attempt = Attempt::new(claim, &policy, started, exchange.replayable);
    let mut body_sent = false;
    let (claim, (mut upstream, mut rbuf, response)) = loop {
        let sent = exchange.send(attempt.claim.conns(), stream, buf, &mut body_sent);
        let failed = match sent.await {
            Ok(answered) => break (attempt.answered(), answered),
            Err(failed) => failed,
        };
        let client_gone = matches!(failed, Failed::Client(ClientFault::Gone));
        if let Err(page) = attempt.failed(failed) {
            if client_gone {
                return Ok(false);
            }
            // Unread body bytes would be taken for the next request: close.
            let reusable = keep_alive && (unread == 0 || body_sent);
            let id = head.id.as_bytes();
            return answer(stream, &page, Some(id), &head, reusable).await;
        }
    };
    claim
        .balancer()
        .stats
        .record(response.status, started.elapsed());
    let mut reply = response.client_head;
    reply.extend_from_slice(b"x-request-id: ");
    reply.extend_from_slice(head.id.as_bytes());
    reply.extend_from_slice(if keep_alive {
        b"\r\n\r\n"
    } else {
        b"\r\nconnection: close\r\n\r\n"
    });
    let copy = BodyCopy {
        framing: response.framing,
        event_stream: response.event_stream,
        balancer: claim.balancer(),
    };
    let complete = copy.run(&mut upstream, &mut rbuf, reply, stream).await?;
    if complete && response.reusable && rbuf.is_empty() {
        claim.conns().checkin_stream(upstream);
    }
    // The claim ends with the body: the color's drain counts it till here.
    drop(claim);
    Ok(keep_alive)
}

/// What one request sends to an upstream, and its deadlines.
struct Exchange<'a> {
    /// The request head and the body bytes already read.
    out: &'a [u8],
    /// Body bytes still to come from the client.
    unread: u64,
    method_head: bool,
    replayable: bool,
    response_timeout: Duration,
    body_timeout: Duration,
}

impl Exchange<'_> {
    /// One try: sends the request on a stream to the claimed upstream and
    /// reads the response head (interim 1xx responses go to the client on
    /// the way). A pooled stream that the upstream closed before answering
    /// is replaced once by a new one, if the request may be sent again.
    /// `body_sent` turns true once the client's body has been read whole.
    async fn send(
        &self,
        conns: &ConnPool,
        client: &mut TcpStream,
        buf: &mut BytesMut,
        body_sent: &mut bool,
    ) -> Result<(TcpStream, BytesMut, ResponseHead), Failed> {
        let mut fresh_only = false;
        loop {
            let (mut upstream, pooled) = if fresh_only {
                (conns.fresh_stream().await.map_err(Failed::Refused)?, false)
            } else {
                conns.stream().await.map_err(Failed::Refused)?
            };
            let dropped = |what: String| {
                if pooled && self.replayable {
                    None
                } else {
                    Some(Failed::Dropped(what))
                }
            };
            let write = tokio::time::timeout(self.response_timeout, upstream.write_all(self.out));
            match write.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => match dropped(format!("sending the request: {e}")) {
                    Some(failed) => return Err(failed),
                    None => {
                        fresh_only = true;
                        continue;
                    }
                },
                Err(_) => return Err(Failed::Timeout(self.response_timeout)),
            }
            if self.unread > 0 {
                self.copy_request_body(client, buf, &mut upstream).await?;
            }
            *body_sent = true;
            match self.read_response(&mut upstream, client).await {
                Ok(answered) => return Ok((upstream, answered.0, answered.1)),
                Err(Unanswered::Dropped(why)) => match dropped(why) {
                    Some(failed) => return Err(failed),
                    None => fresh_only = true,
                },
                Err(Unanswered::Failed(failed)) => return Err(failed),
            }
        }
    }

    /// Reads the response head within the response timeout.
    async fn read_response(
        &self,
        upstream: &mut TcpStream,
        client: &mut TcpStream,
    ) -> Result<(BytesMut, ResponseHead), Unanswered> {
        let deadline = tokio::time::Instant::now() + self.response_timeout;
        let mut rbuf = BytesMut::with_capacity(READ_SIZE);
        loop {
            let read = tokio::time::timeout_at(deadline, upstream.read_buf(&mut rbuf)).await;
            let why = match read {
                Ok(Ok(n)) if n > 0 => None,
                Ok(Ok(_)) => Some("the upstream closed the connection".to_string()),
                Ok(Err(e)) => Some(format!("reading the response: {e}")),
                Err(_) => return Err(Unanswered::Failed(Failed::Timeout(self.response_timeout))),
            };
            if let Some(why) = why {
                return Err(match rbuf.is_empty() {
                    true => Unanswered::Dropped(why),
                    false => Unanswered::Failed(Failed::Broken(why)),
                });
            }
            while let Some(response) =
                ResponseHead::parse(&rbuf, self.method_head).map_err(Unanswered::Failed)?
            {
                rbuf.advance(response.len);
                if !(100..200).contains(&response.status) {
                    return Ok((rbuf, response));
                }
                // Interim (100 Continue, 103 Early Hints): passed on as is.
                let mut interim = response.client_head;
                interim.extend_from_slice(b"\r\n");
                client
                    .write_all(&interim)
                    .await
                    .map_err(|_| Unanswered::Failed(Failed::Client(ClientFault::Gone)))?;
            }
            if rbuf.len() >= MAX_RESPONSE_HEAD {
                return Err(Unanswered::Failed(Failed::Broken(
                    "the response head is too large".into(),
                )));
            }
            rbuf.reserve(READ_SIZE);
        }
    }

    /// Copies the rest of a fixed-length request body from the client,
    /// each read within the body timeout.
    async fn copy_request_body(
        &self,
        client: &mut TcpStream,
        buf: &mut BytesMut,
        upstream: &mut TcpStream,
    ) -> Result<(), Failed> {
        let mut left = self.unread;
        while left > 0 {
            buf.reserve(READ_SIZE);
            match tokio::time::timeout(self.body_timeout, client.read_buf(buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return Err(Failed::Client(ClientFault::Gone)),
                Err(_) => return Err(Failed::Client(ClientFault::Slow)),
            }
            let take = left.min(buf.len() as u64) as usize;
            let write =
                tokio::time::timeout(self.response_timeout, upstream.write_all(&buf[..take]));
            match write.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(Failed::Broken(format!("sending the request body: {e}"))),
                Err(_) => return Err(Failed::Timeout(self.response_timeout)),
            }
            buf.advance(take);
            left -= take as u64;
        }
        Ok(())
    }
}

/// Why a try got no response head.
enum Unanswered {
    /// The connection ended before any byte of a response.
    Dropped(String),
    Failed(Failed),
}

/// A response body on its way to the client.
struct BodyCopy<'a> {
    framing: Framing,
    event_stream: bool,
    /// The color it comes from: if that stops being live, the body ends at
    /// its slot before the drain deadline (`drain`).
    balancer: &'a Arc<LoadBalancer>,
}

impl BodyCopy<'_> {
    /// Writes the response head and copies the body to the client (a body
    /// that ends when the upstream closes goes out in chunks). `true` if the
    /// body ended where its framing says (the upstream stream may then be
    /// reused); `false` if the client's response ended properly without
    /// that. An error leaves the client's response incomplete: close.
    async fn run(
        &self,
        upstream: &mut TcpStream,
        rbuf: &mut BytesMut,
        mut pending: Vec<u8>,
        client: &mut TcpStream,
    ) -> io::Result<bool> {
        let mut chunked = Chunked::default();
        let mut events = EventBoundary::default();
        let mut left = match self.framing {
            Framing::Length(n) => n,
            _ => u64::MAX,
        };
        // Watched (and a slot taken) only once the body outlasts its first
        // read: short responses touch nothing shared.
        let mut closing = None;
        let mut ending_since = None;
        loop {
            let take = match self.framing {
                Framing::Length(_) => left.min(rbuf.len() as u64) as usize,
                Framing::Chunked => chunked
                    .feed_data(rbuf, |data| events.advance(data))
                    .map_err(|_| io::Error::other("invalid chunked framing from the upstream"))?,
                Framing::UntilClose => {
                    events.advance(rbuf);
                    rbuf.len()
                }
            };
            // The head goes out with the first bytes of the body, in one write.
            let until_close = self.framing == Framing::UntilClose && take > 0;
            if until_close {
                pending.extend_from_slice(format!("{take:x}\r\n").as_bytes());
            }
            if pending.is_empty() {
                client.write_all(&rbuf[..take]).await?;
            } else {
                pending.extend_from_slice(&rbuf[..take]);
                if until_close {
                    pending.extend_from_slice(b"\r\n");
                }
                client.write_all(&pending).await?;
                pending = Vec::new();
            }
            rbuf.advance(take);
            let done = match self.framing {
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
            if let Some(since) = ending_since {
                if self.end_now(&chunked, &events, since, client).await? {
                    return Ok(false);
                }
            }
            rbuf.clear();
            rbuf.reserve(READ_SIZE);
            let (closing, slot) = closing
                .get_or_insert_with(|| (self.balancer.closing(), self.balancer.slots.next()));
            let grace = ending_since.map(|t: tokio::time::Instant| t + BOUNDARY_GRACE);
            let read = tokio::select! {
                read = upstream.read_buf(rbuf) => read?,
                at = slot_reached(closing, *slot), if ending_since.is_none() => {
                    ending_since = Some(at);
                    continue;
                }
                _ = tokio::time::sleep_until(grace.unwrap_or_else(tokio::time::Instant::now)), if grace.is_some() => {
                    return Err(io::Error::other("cut at the drain deadline"));
                }
            };
            if read == 0 {
                return match self.framing {
                    Framing::UntilClose => {
                        client.write_all(b"0\r\n\r\n").await?;
                        Ok(false)
                    }
                    _ => Err(io::Error::other("the upstream closed mid-body")),
                };
            }
        }
    }

    /// The color stopped being live and this body's slot has come: an
    /// event stream ends at its next event boundary, with its last chunk;
    /// anything else (or a stream that finds no boundary in time) is cut.
    /// `true`: the client's response has ended properly.
    async fn end_now(
        &self,
        chunked: &Chunked,
        events: &EventBoundary,
        since: tokio::time::Instant,
        client: &mut TcpStream,
    ) -> io::Result<bool> {
        let boundary = match self.framing {
            Framing::Chunked => chunked.between_chunks() && events.at_boundary(),
            Framing::UntilClose => events.at_boundary(),
            Framing::Length(_) => false,
        };
        if self.event_stream && boundary {
            client.write_all(b"0\r\n\r\n").await?;
            return Ok(true);
        }
        if !self.event_stream || since.elapsed() >= BOUNDARY_GRACE {
            return Err(io::Error::other("cut at the drain deadline"));
        }
        Ok(false)
    }
}

/// Answers with a page cyan made.
async fn answer(
    stream: &mut TcpStream,
    page: &Page,
    id: Option<&[u8]>,
    head: &RequestHead,
    keep_alive: bool,
) -> io::Result<bool> {
    let mut out = Vec::with_capacity(256 + page.body.len());
    status_line(&mut out, page.status.as_u16(), None);
    out.extend_from_slice(b"content-type: text/plain; charset=utf-8\r\ncontent-length: ");
    out.extend_from_slice(page.body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(s) = page.retry_after_s {
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
        out.extend_from_slice(page.body.as_bytes());
    }
    stream.write_all(&out).await?;
    Ok(keep_alive)
}

fn text_at(buf: &[u8], range: Range<usize>) -> &str {
    std::str::from_utf8(&buf[range]).unwrap_or_default()
}
