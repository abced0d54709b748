//! The end of long-lived traffic on a color that is no longer live:
//! WebSockets and other tunnels (`tunnel`), and responses that are still
//! streaming (server-sent events, long polls, downloads) on both request
//! paths.
//!
//! Each ends by the route's drain deadline, not at once (kamal-proxy cuts
//! them at the switch) and not never (a stream opened before a switch
//! would go on serving the old version). The ends are spread over a window
//! before the deadline (`drain_spread`), one slot per connection, so the
//! clients do not all reconnect in the same second. How each one ends:
//! - a WebSocket gets a close frame (1001, going away) at a frame boundary;
//! - an event stream (`text/event-stream`) ends at an event boundary with a
//!   proper end (the last chunk, or HTTP/2's end of stream), so the
//!   browser's EventSource reconnects, to the new color;
//! - any other response is cut as *incomplete* (HTTP/1.1: the connection
//!   closes without the last chunk, or short of its length; HTTP/2:
//!   `RST_STREAM`), never presented as complete.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// After its slot, how long a stream may take to reach a frame or event
/// boundary before it is cut anyway.
pub const BOUNDARY_GRACE: Duration = Duration::from_secs(2);

/// When a color's long-lived connections must have ended, and over how
/// long a window before that their ends are spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closing {
    pub at: Instant,
    pub spread: Duration,
}

/// Hands out the connections' places in the spread window: the golden
/// ratio's multiples modulo 1, which cover [0, 1) evenly for any count
/// (a low-discrepancy sequence), without knowing the count in advance.
#[derive(Default)]
pub struct Slots(AtomicU64);

impl Slots {
    /// The next place, in [0, 1).
    pub fn next(&self) -> f64 {
        const GOLDEN: f64 = 0.618_033_988_749_894_9;
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        (n as f64 * GOLDEN).fract()
    }
}

impl Closing {
    /// The end of the connection at `slot` in the window.
    pub fn end_of(&self, slot: f64) -> Instant {
        let start = self.at.checked_sub(self.spread).unwrap_or(self.at);
        start + self.spread.mul_f64(slot.clamp(0.0, 1.0))
    }
}

/// Resolves when the color's closing deadline is set and the connection's
/// slot before it has come (a color that is live again sets none).
pub async fn slot_reached(closing: &mut watch::Receiver<Option<Closing>>, slot: f64) -> Instant {
    loop {
        let current = *closing.borrow_and_update();
        match current {
            Some(c) => {
                let at = c.end_of(slot);
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => return at,
                    changed = closing.changed() => if changed.is_err() {
                        std::future::pending::<()>().await;
                    },
                }
            }
            None => {
                if closing.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

/// Whether a `Content-Type` is an event stream (server-sent events).
pub fn is_event_stream(content_type: &[u8]) -> bool {
    let essence = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    essence.eq_ignore_ascii_case(b"text/event-stream")
}

/// Follows an event stream's data to tell when it is between two events
/// (after a blank line: `\n\n`, `\r\n\r\n` or `\r\r`, WHATWG HTML §9.2.5).
#[derive(Debug, Default)]
pub struct EventBoundary {
    /// The last bytes seen, newest last.
    tail: [u8; 4],
    seen: bool,
}

impl EventBoundary {
    pub fn advance(&mut self, data: &[u8]) {
        for &b in &data[data.len().saturating_sub(4)..] {
            self.tail.rotate_left(1);
            self.tail[3] = b;
        }
        self.seen |= !data.is_empty();
    }

    /// The data so far ends with a blank line (or nothing was sent yet).
    pub fn at_boundary(&self) -> bool {
        let t = &self.tail;
        !self.seen || t[2..] == *b"\n\n" || t[..] == *b"\r\n\r\n" || t[2..] == *b"\r\r"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_spread_evenly_for_any_count() {
        for count in [5usize, 40, 200] {
            let slots = Slots::default();
            let mut per_fifth = [0usize; 5];
            for _ in 0..count {
                per_fifth[(slots.next() * 5.0) as usize] += 1;
            }
            let most = *per_fifth.iter().max().unwrap();
            assert!(
                most <= count / 5 + 2,
                "{count} ends: {per_fifth:?} per fifth of the window"
            );
        }
    }

    #[test]
    fn an_end_falls_inside_the_window_before_the_deadline() {
        let at = Instant::now() + Duration::from_secs(10);
        let c = Closing {
            at,
            spread: Duration::from_secs(4),
        };
        assert_eq!(c.end_of(0.0), at - Duration::from_secs(4));
        assert_eq!(c.end_of(0.5), at - Duration::from_secs(2));
        assert!(c.end_of(0.999) <= at);
    }

    #[test]
    fn event_boundaries_are_blank_lines_however_the_data_is_split() {
        let mut e = EventBoundary::default();
        assert!(e.at_boundary(), "nothing sent yet");
        e.advance(b"data: a\n");
        assert!(!e.at_boundary());
        e.advance(b"\n");
        assert!(e.at_boundary());
        e.advance(b"data: b\r\n\r");
        assert!(!e.at_boundary());
        e.advance(b"\n");
        assert!(e.at_boundary());
        e.advance(b"data: c\r\r");
        assert!(e.at_boundary());
    }

    #[test]
    fn event_streams_are_known_by_their_content_type() {
        assert!(is_event_stream(b"text/event-stream"));
        assert!(is_event_stream(b"Text/Event-Stream; charset=utf-8"));
        assert!(!is_event_stream(b"text/plain"));
        assert!(!is_event_stream(b""));
    }
}
