//! A response body on hyper's path: the upstream's, streamed while it
//! holds its claim, or a page cyan wrote itself (`pages`), in one type
//! without a box per request.
//!
//! The upstream's body (`Tracked`) is what makes a drain exact: its claim
//! (`upstream`) ends with its last byte, so "the old color has drained"
//! counts it until then; its connection goes back to the pool (`conn_pool`)
//! only when it was read to the end; and if its color stops being live
//! while it streams, it ends at its slot before the drain deadline
//! (`drain`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::conn_pool::Sender;
use super::drain::{self, EventBoundary};
use super::timeouts::BusyGuard;
use super::upstream::Claim;

/// A response body: the upstream's, streamed and holding its claim, or one
/// cyan wrote itself.
pub enum ProxyBody {
    Upstream(Tracked),
    Own(Full<Bytes>),
}

impl ProxyBody {
    /// No body (the answer to an upgrade, whose bytes then go through the
    /// tunnel).
    pub(crate) fn empty() -> ProxyBody {
        ProxyBody::Own(Full::new(Bytes::new()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            ProxyBody::Upstream(t) => t.poll_frame(cx),
            ProxyBody::Own(full) => Pin::new(full).poll_frame(cx).map_err(|n| match n {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(t) => t.inner.is_end_stream(),
            ProxyBody::Own(full) => full.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(t) => t.inner.size_hint(),
            ProxyBody::Own(full) => full.size_hint(),
        }
    }
}

/// An upstream response body that keeps its upstream claimed until the
/// last frame, and returns the connection to the pool when it was read to
/// the end. If its color stops being live while it streams, it ends at its
/// slot before the drain deadline (`drain`): an event stream at an event
/// boundary, anything else cut (an error: hyper then closes the HTTP/1
/// connection without the last chunk, or resets the HTTP/2 stream).
pub struct Tracked {
    inner: Incoming,
    sender: Option<Sender>,
    claim: Claim,
    /// The connection is busy until the body ends.
    _busy: BusyGuard,
    event_stream: bool,
    events: EventBoundary,
    /// Frames passed on so far (the drain is watched once a body waits, or
    /// from its second frame on: short bodies touch nothing shared).
    frames: u32,
    /// Resolves at this body's slot once its color is no longer live.
    slot: Option<Pin<Box<dyn Future<Output = tokio::time::Instant> + Send>>>,
    /// The slot came; an event stream still looks for a boundary until then.
    cut_at: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Tracked {
    /// The upstream's `inner` body, on `sender`'s connection, under `claim`
    /// (`event_stream`: server-sent events, ended at an event boundary).
    pub(crate) fn new(
        inner: Incoming,
        sender: Sender,
        claim: Claim,
        busy: BusyGuard,
        event_stream: bool,
    ) -> Tracked {
        Tracked {
            inner,
            sender: Some(sender),
            claim,
            _busy: busy,
            event_stream,
            events: EventBoundary::default(),
            frames: 0,
            slot: None,
            cut_at: None,
        }
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let Some(cut_at) = &mut self.cut_at {
            if self.event_stream && self.events.at_boundary() {
                return Poll::Ready(None);
            }
            if !self.event_stream || cut_at.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Some(Err(std::io::Error::other(
                    "cut at the drain deadline",
                ))));
            }
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            self.frames = self.frames.saturating_add(1);
            if let (true, Some(data)) = (self.event_stream, frame.data_ref()) {
                self.events.advance(data);
            }
        }
        let streaming = self.frames > 1 || polled.is_pending();
        if self.cut_at.is_none() && streaming && !self.inner.is_end_stream() {
            let balancer = self.claim.balancer();
            let slot = self.slot.get_or_insert_with(|| {
                let (mut closing, slot) = (balancer.closing(), balancer.slots.next());
                Box::pin(async move { drain::slot_reached(&mut closing, slot).await })
            });
            if let Poll::Ready(at) = slot.as_mut().poll(cx) {
                self.cut_at = Some(Box::pin(tokio::time::sleep_until(
                    at + drain::BOUNDARY_GRACE,
                )));
                if polled.is_pending() {
                    return self.poll_frame(cx);
                }
            }
        }
        polled.map_err(std::io::Error::other)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take().filter(|_| self.inner.is_end_stream()) {
            self.claim.conns().checkin(sender);
        }
    }
}
