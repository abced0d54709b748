//! The connection pool: keep-alive connections to one upstream, kept per
//! upstream and per serving thread.
//!
//! A thin layer over hyper's HTTP/1 client connections instead of
//! hyper-util's general-purpose client: a connection is checked out before
//! the request is handed over, so a refused connection gives the request
//! back untouched (it can go to another replica, body and all, with nothing
//! cloned), and a pooled connection that the upstream closed meanwhile gives
//! it back too (it is sent again on a fresh one). The connection returns to
//! the pool when its response body has been read to the end.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::client_body::ClientBody;
use super::workers::PerThread;

/// Idle connections kept per upstream; more are closed when returned.
const MAX_IDLE: usize = 512;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

pub type Sender = SendRequest<ClientBody>;

/// Why a request could not be sent.
pub enum SendError {
    /// No connection could be made; the request comes back unsent.
    Connect(std::io::Error, Box<Request<ClientBody>>),
    /// The connection failed after the request was (maybe) sent.
    Failed(hyper::Error),
}

/// One idle list per serving thread: a connection's task runs on the
/// thread that opened it, so it is only reused there. hyper's connections
/// serve the general path; bare streams serve the HTTP/1.1 fast path
/// (`fast`), which reads and writes them itself.
pub struct ConnPool {
    addr: SocketAddr,
    idle: PerThread<Mutex<Vec<Sender>>>,
    idle_streams: PerThread<Mutex<Vec<TcpStream>>>,
}

impl ConnPool {
    pub fn new(addr: SocketAddr) -> ConnPool {
        ConnPool {
            addr,
            idle: PerThread::default(),
            idle_streams: PerThread::default(),
        }
    }

    fn idle(&self) -> &Mutex<Vec<Sender>> {
        self.idle.local().1
    }

    /// Sends `req` on a pooled connection, or a new one. On success the
    /// connection comes back with the response, to be returned with
    /// `checkin` once the response body has ended.
    pub async fn send(
        &self,
        mut req: Request<ClientBody>,
    ) -> Result<(hyper::Response<Incoming>, Sender), SendError> {
        // A pooled connection may have been closed by the upstream; then the
        // request comes back unsent and goes out once more on a new one.
        for pooled in [true, false] {
            let reused = if pooled { self.pooled().await } else { None };
            let mut sender = match reused {
                Some(s) => s,
                None => match self.connect().await {
                    Ok(s) => s,
                    Err(e) => return Err(SendError::Connect(e, Box::new(req))),
                },
            };
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, sender)),
                // Sent again only if none of it left: hyper gives a request
                // back when the connection failed before it was written, but
                // its streamed body may have been read from already.
                Err(mut e) => match e.take_message() {
                    Some(back) if pooled && !back.body().started() => req = back,
                    _ => return Err(SendError::Failed(e.into_error())),
                },
            }
        }
        unreachable!("the second attempt always returns")
    }

    /// Returns a connection whose response has been read to the end.
    pub fn checkin(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle().lock().expect("idle lock");
        if idle.len() < MAX_IDLE {
            idle.push(sender);
        }
    }

    /// The most recently used idle connection that is still open.
    async fn pooled(&self) -> Option<Sender> {
        loop {
            let mut sender = self.idle().lock().expect("idle lock").pop()?;
            if sender.is_closed() {
                continue;
            }
            // Ready once the connection has finished the previous exchange.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    /// A stream for the fast path: the most recently used idle one that
    /// the upstream has not closed (`true` with it), or a new one.
    pub async fn stream(&self) -> std::io::Result<(TcpStream, bool)> {
        loop {
            let Some(stream) = self.idle_streams.local().1.lock().expect("idle lock").pop() else {
                return Ok((self.fresh_stream().await?, false));
            };
            // Open and quiet: nothing to read, not even the end.
            let mut probe = [0u8; 1];
            if matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            {
                return Ok((stream, true));
            }
        }
    }

    /// Returns a stream whose exchange ended cleanly.
    pub fn checkin_stream(&self, stream: TcpStream) {
        let mut idle = self.idle_streams.local().1.lock().expect("idle lock");
        if idle.len() < MAX_IDLE {
            idle.push(stream);
        }
    }

    /// A new stream (refused: `Err`).
    pub async fn fresh_stream(&self) -> std::io::Result<TcpStream> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.addr))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    async fn connect(&self) -> std::io::Result<Sender> {
        let stream = self.fresh_stream().await?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }
}
