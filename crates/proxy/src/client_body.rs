//! A client's request body on hyper's path, as it goes to the upstream:
//! each read from the client has a deadline (the body timeout, between two
//! frames), and when the body fails, the request knows it was the client's
//! fault (`attempt::BodyOutcome`) and not the upstream's, whose connection
//! merely carried the error.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::Sleep;

use super::attempt::{connection_ended, BodyOutcome, ClientFault};

/// A request body for the upstream: none, or the client's, read under a
/// deadline.
pub enum ClientBody {
    Empty,
    Streamed(Box<Streamed>),
}

pub struct Streamed {
    inner: Incoming,
    /// Something was read (or failed): the body can no longer be sent whole.
    started: bool,
    timeout: Duration,
    /// Armed while a read waits; reset by every frame.
    sleep: Option<Pin<Box<Sleep>>>,
    outcome: Arc<BodyOutcome>,
}

impl ClientBody {
    /// Wraps a client's body; `None` with it when there is none to read.
    pub(crate) fn new(
        inner: Incoming,
        timeout: Duration,
    ) -> (ClientBody, Option<Arc<BodyOutcome>>) {
        if inner.is_end_stream() {
            return (ClientBody::Empty, None);
        }
        let outcome = Arc::new(BodyOutcome::default());
        let body = Streamed {
            inner,
            started: false,
            timeout,
            sleep: None,
            outcome: outcome.clone(),
        };
        (ClientBody::Streamed(Box::new(body)), Some(outcome))
    }
}

impl ClientBody {
    /// Whether any of it was read: if so, it cannot be sent again.
    pub(crate) fn started(&self) -> bool {
        matches!(self, ClientBody::Streamed(s) if s.started)
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let ClientBody::Streamed(s) = self.get_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(&mut s.inner).poll_frame(cx);
        s.started |= polled.is_ready();
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                s.sleep = None;
                if s.inner.is_end_stream() {
                    s.outcome.set_ended();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                s.outcome.set_ended();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                let gone = e.is_canceled() || connection_ended(&e);
                s.outcome.set_fault(if gone {
                    ClientFault::Gone
                } else {
                    ClientFault::Malformed
                });
                Poll::Ready(Some(Err(io::Error::other(e))))
            }
            Poll::Pending => {
                let timeout = s.timeout;
                let sleep = s
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(sleep.as_mut().poll(cx));
                s.outcome.set_fault(ClientFault::Slow);
                Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the request body stopped arriving",
                ))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::Streamed(s) => s.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::Streamed(s) => s.inner.size_hint(),
        }
    }
}
