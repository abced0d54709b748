//! Deadlines on every read from a client. A client that says nothing, or
//! says it a byte at a time (slowloris), would otherwise hold a connection,
//! and a file descriptor, for ever: under the usual 1,024 open-files limit
//! about a thousand of them stop all traffic and the admin socket with it.
//!
//! The values are the proxy's, not a route's: the head must be read before
//! any route is known, and one app's configuration must not weaken the
//! edge that every app on the host shares (`cyan proxy run --header-timeout
//! …`). Where each one is enforced:
//! - the fast path (`fast`) times its own reads;
//! - hyper's path: hyper's `header_read_timeout` for heads, `client_body`
//!   for bodies, and `IdleDeadline` (below) for idle connections, HTTP/2
//!   and TLS included;
//! - TLS handshakes have their own limit (`proxy::HANDSHAKE_TIMEOUT`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The client-side read deadlines of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A request head must arrive whole within this, from its first byte.
    pub header: Duration,
    /// The longest wait for the next bytes of a request body.
    pub body: Duration,
    /// How long a connection may wait for its next request (for a new one:
    /// its first byte).
    pub idle: Duration,
}

impl Default for Timeouts {
    /// 10 s for a head (haproxy's usual `timeout http-request`), 30 s
    /// between two reads of a body, 60 s for an idle keep-alive connection
    /// (nginx: 60 s and 75 s).
    fn default() -> Self {
        Timeouts {
            header: Duration::from_secs(10),
            body: Duration::from_secs(30),
            idle: Duration::from_secs(60),
        }
    }
}

/// Requests of one connection that are in progress (from the head until
/// the response's last byte); a connection with none is idle.
#[derive(Default)]
pub struct Busy {
    active: AtomicU32,
    /// When the last request ended (ms since the epoch).
    last_done_ms: AtomicU64,
}

impl Busy {
    /// Marks a request in progress until the guard drops.
    pub fn enter(self: &Arc<Self>) -> BusyGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        BusyGuard(self.clone())
    }

    /// How long the connection has been idle (`None`: it is busy).
    fn idle_for(&self) -> Option<Duration> {
        if self.active.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let since = self.last_done_ms.load(Ordering::Relaxed);
        Some(Duration::from_millis(
            crate::clock::now_ms().saturating_sub(since),
        ))
    }
}

pub struct BusyGuard(Arc<Busy>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let busy = &self.0;
        busy.last_done_ms
            .store(crate::clock::now_ms(), Ordering::Relaxed);
        busy.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A client connection served by hyper: a read that waits longer than
/// `idle` while no request of the connection is in progress fails with
/// `TimedOut`, and hyper closes the connection. While a request is in
/// progress the wait is not limited here: its body has its own deadline
/// (`client_body`), and a response may stream for as long as it lasts.
pub struct IdleDeadline<S> {
    inner: S,
    idle: Duration,
    busy: Arc<Busy>,
    sleep: Pin<Box<Sleep>>,
    armed: bool,
}

impl<S> IdleDeadline<S> {
    pub fn new(inner: S, idle: Duration, busy: Arc<Busy>) -> Self {
        IdleDeadline {
            inner,
            idle,
            busy,
            sleep: Box::pin(tokio::time::sleep(idle)),
            armed: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Poll::Ready(r) = Pin::new(&mut this.inner).poll_read(cx, buf) {
            this.armed = false;
            return Poll::Ready(r);
        }
        if !this.armed {
            this.armed = true;
            this.sleep.as_mut().reset(Instant::now() + this.idle);
        }
        while this.sleep.as_mut().poll(cx).is_ready() {
            // Busy, or not idle for long: the wait is counted from the end
            // of the last request (closing just after a response would race
            // the client's next request on this connection).
            let left = match this.busy.idle_for() {
                Some(idle) if idle >= this.idle => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "idle connection timed out",
                    )))
                }
                Some(idle) => this.idle - idle,
                None => this.idle,
            };
            this.sleep.as_mut().reset(Instant::now() + left);
        }
        Poll::Pending
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Raises this process's open-files limit to its hard limit, so that
/// connections, not the soft default (often 1,024), bound what the proxy
/// can hold open. Returns the limit now in force.
pub fn raise_open_files_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(limit.rlim_cur)
}
