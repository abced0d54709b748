//! Request ids: the `X-Request-Id` every request carries to its upstream
//! and back to its client, so one request can be found in the proxy's log,
//! the app's log and the client's.
//!
//! A client's own id is kept when it is sane (not empty, at most 128
//! bytes); otherwise cyan makes one. Both request paths use these rules:
//! hyper's as a `HeaderValue`, the fast path as a `RequestId` held inline
//! (no allocation per request).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper::header::{HeaderMap, HeaderName, HeaderValue};

pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client id that is kept.
const MAX_REQUEST_ID: usize = 128;

/// The client's `X-Request-Id` when it sent a sane one, else a new one.
pub(crate) fn request_id(headers: &HeaderMap) -> HeaderValue {
    match headers.get(&X_REQUEST_ID) {
        Some(v) if sane_request_id(v.as_bytes()) => v.clone(),
        _ => HeaderValue::from_bytes(&new_request_id()).expect("hex is a valid header"),
    }
}

/// A request id as sent by the client, or a new one, held inline: the fast
/// path's.
pub(crate) struct RequestId {
    bytes: [u8; MAX_REQUEST_ID],
    len: usize,
}

impl RequestId {
    /// The id for a request whose head carried `sent` (its first
    /// `X-Request-Id`, as hyper's path reads it).
    pub(crate) fn new(sent: Option<&[u8]>) -> RequestId {
        let fresh;
        let id = match sent {
            Some(id) if sane_request_id(id) => id,
            _ => {
                fresh = new_request_id();
                &fresh[..]
            }
        };
        let mut bytes = [0u8; MAX_REQUEST_ID];
        bytes[..id.len()].copy_from_slice(id);
        RequestId {
            bytes,
            len: id.len(),
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Whether a client's `X-Request-Id` is kept (a longer one is replaced).
fn sane_request_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID
}

/// A new request id: 32 hex digits, a per-process seed then a counter.
fn new_request_id() -> [u8; 32] {
    // Each thread counts in blocks of 2^32 numbers of its own: one shared
    // counter would be a cache line that every request on every core writes.
    static BLOCKS: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        /// The next number and the end of this thread's block.
        static NEXT: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    }
    static SEED: std::sync::OnceLock<[u8; 16]> = std::sync::OnceLock::new();
    let seed = SEED.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let mut hex = [0u8; 16];
        hex_into(&mut hex, h.finish());
        hex
    });
    let (mut n, mut end) = NEXT.get();
    if n == end {
        n = BLOCKS.fetch_add(1, Ordering::Relaxed) << 32;
        end = n + (1 << 32);
    }
    NEXT.set((n + 1, end));
    let mut id = [0u8; 32];
    let (high, low) = id.split_at_mut(16);
    high.copy_from_slice(seed);
    hex_into(low, n);
    id
}

/// Writes `v` as lowercase hex, right-aligned and zero-padded, into `out`.
fn hex_into(out: &mut [u8], mut v: u64) {
    for digit in out.iter_mut().rev() {
        *digit = b"0123456789abcdef"[(v & 0xf) as usize];
        v >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_fresh_unless_the_client_sent_a_sane_one() {
        let none = HeaderMap::new();
        let (a, b) = (request_id(&none), request_id(&none));
        assert_ne!(a, b);
        for id in [&a, &b] {
            assert_eq!(id.len(), 32);
            assert!(id.as_bytes().iter().all(u8::is_ascii_hexdigit), "{id:?}");
        }
        assert_eq!(
            a.as_bytes()[..16],
            b.as_bytes()[..16],
            "one seed per process"
        );
        // Threads count in blocks of their own: no id repeats across them.
        let other = std::thread::spawn(|| request_id(&HeaderMap::new()))
            .join()
            .unwrap();
        assert!(other != a && other != b, "{other:?}");
        assert_eq!(other.as_bytes()[..16], a.as_bytes()[..16]);
        let mut sent = HeaderMap::new();
        sent.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&sent), "abc-123");
        sent.insert(
            X_REQUEST_ID,
            HeaderValue::from_str(&"x".repeat(129)).unwrap(),
        );
        assert_eq!(request_id(&sent).len(), 32, "an oversized id is replaced");
    }
}
