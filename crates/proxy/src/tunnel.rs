//! Upgraded connections (WebSocket and other `Upgrade:` protocols): bytes
//! copied both ways while the request's claim is held, so a tunnel counts as
//! in flight on its color until it ends.
//!
//! When its color stops being live, a tunnel is not cut at once (kamal-proxy
//! does that): it stays open until its slot before the route's drain
//! deadline (`drain`). Then a WebSocket is closed the way the protocol
//! expects, with a close frame (1001, going away) sent at a frame boundary
//! to both sides, so a client reconnects (to the new color) instead of
//! seeing an error. Other protocols get a plain FIN.

use std::time::Duration;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::drain::{slot_reached, Closing, BOUNDARY_GRACE};
use super::upstream::Claim;

/// Close frame, status 1001 "going away", as a server sends it (unmasked).
const CLOSE_TO_CLIENT: [u8; 4] = [0x88, 0x02, 0x03, 0xE9];
/// The same as a client sends it: masked, here with a zero key.
const CLOSE_TO_SERVER: [u8; 8] = [0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE9];

/// Copies between the client and the upstream until either side ends or the
/// color's closing deadline passes.
pub async fn run(client: Upgraded, upstream: Upgraded, websocket: bool, claim: Claim) {
    let closing = claim.balancer().closing();
    // Both directions end at the same place in the drain's spread window.
    let slot = claim.balancer().slots.next();
    let (client_read, client_write) = tokio::io::split(TokioIo::new(client));
    let (upstream_read, upstream_write) = tokio::io::split(TokioIo::new(upstream));
    let (to_client, to_server) = if websocket {
        (Some(&CLOSE_TO_CLIENT[..]), Some(&CLOSE_TO_SERVER[..]))
    } else {
        (None, None)
    };
    let down = pump(
        upstream_read,
        client_write,
        to_client,
        closing.clone(),
        slot,
    );
    let up = pump(client_read, upstream_write, to_server, closing, slot);
    // When one direction ends, the other is given a moment to finish its
    // close handshake, then the tunnel (and its claim) is released.
    tokio::pin!(down, up);
    tokio::select! {
        _ = &mut down => { let _ = tokio::time::timeout(BOUNDARY_GRACE, up).await; }
        _ = &mut up => { let _ = tokio::time::timeout(BOUNDARY_GRACE, down).await; }
    }
    drop(claim);
}

/// One direction. With `close_frame`, the stream is WebSocket frames: at the
/// deadline it waits for a frame boundary, sends the close frame, and ends.
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    close_frame: Option<&[u8]>,
    mut closing: watch::Receiver<Option<Closing>>,
    slot: f64,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    let mut frames = FrameCursor::default();
    let mut stop_at: Option<Instant> = None;
    loop {
        if let Some(at) = stop_at {
            if Instant::now() >= at + BOUNDARY_GRACE || frames.at_boundary() {
                if let Some(frame) = close_frame {
                    let _ = to.write_all(frame).await;
                }
                break;
            }
        }
        let read = tokio::select! {
            r = from.read(&mut buf) => r,
            at = slot_reached(&mut closing, slot), if stop_at.is_none() => {
                stop_at = Some(at);
                continue;
            }
            _ = tokio::time::sleep_until(stop_at.map_or_else(far_future, |t| t + BOUNDARY_GRACE)), if stop_at.is_some() => continue,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if close_frame.is_some() {
                    frames.advance(&buf[..n]);
                }
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

/// Tracks where WebSocket frames begin and end in a byte stream (RFC 6455
/// §5.2), without buffering: only header bytes are looked at.
#[derive(Default)]
pub(crate) struct FrameCursor {
    header: Vec<u8>,
    remaining: u64,
}

impl FrameCursor {
    pub(crate) fn advance(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len() as u64);
                self.remaining -= n;
                data = &data[n as usize..];
                continue;
            }
            self.header.push(data[0]);
            data = &data[1..];
            if let Some(payload) = payload_len(&self.header) {
                self.remaining = payload;
                self.header.clear();
            }
        }
    }

    pub(crate) fn at_boundary(&self) -> bool {
        self.remaining == 0 && self.header.is_empty()
    }
}

/// The payload length once `h` holds a whole frame header.
fn payload_len(h: &[u8]) -> Option<u64> {
    if h.len() < 2 {
        return None;
    }
    let mask = if h[1] & 0x80 != 0 { 4 } else { 0 };
    let (ext, len) = match h[1] & 0x7f {
        126 => (2, None),
        127 => (8, None),
        n => (0, Some(u64::from(n))),
    };
    if h.len() < 2 + ext + mask {
        return None;
    }
    Some(len.unwrap_or_else(|| {
        h[2..2 + ext]
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: usize, masked: bool) -> Vec<u8> {
        let mut f = vec![0x82];
        let m = if masked { 0x80 } else { 0 };
        match payload {
            0..=125 => f.push(m | payload as u8),
            126..=65535 => {
                f.push(m | 126);
                f.extend_from_slice(&(payload as u16).to_be_bytes());
            }
            _ => {
                f.push(m | 127);
                f.extend_from_slice(&(payload as u64).to_be_bytes());
            }
        }
        if masked {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend(std::iter::repeat_n(7u8, payload));
        f
    }

    #[test]
    fn frame_boundaries_are_found_across_any_split() {
        let stream: Vec<u8> = [
            frame(5, false),
            frame(300, true),
            frame(70_000, false),
            frame(0, true),
        ]
        .concat();
        for chunk in [1, 2, 3, 7, 100, 4096, stream.len()] {
            let mut c = FrameCursor::default();
            let mut boundaries = 0;
            for part in stream.chunks(chunk) {
                c.advance(part);
                boundaries += usize::from(c.at_boundary());
            }
            assert!(c.at_boundary(), "chunk {chunk}: ends on a boundary");
            assert!(boundaries >= 1);
        }
        let mut c = FrameCursor::default();
        c.advance(&frame(300, false)[..200]);
        assert!(!c.at_boundary(), "inside a payload");
        let mut c = FrameCursor::default();
        c.advance(&[0x82, 0xFE, 0x01]);
        assert!(!c.at_boundary(), "inside a header");
    }
}
