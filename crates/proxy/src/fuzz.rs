//! Invariants of the request path's own parsing, checked on arbitrary
//! input: the entry point of the cargo-fuzz target in `fuzz/`, and of a unit
//! test that runs it on a corpus of nasty inputs. (HTTP parsing itself is
//! httparse's and hyper's; what is checked here is what cyan adds on top:
//! header rewriting on both paths, and the fast path's framing.)

use std::sync::{Arc, OnceLock};

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::forward::{ClientConn, Forwarder};
use super::framing::{Chunked, Framing};
use super::headers::{connection_named, is_hop_by_hop, prepare_upstream_headers, upgrade_protocol};
use super::heads::{Parse, RequestHead, ResponseHead};
use super::request_id::request_id;
use super::router::{normalize_host, Router};
use super::tunnel::FrameCursor;

/// Treats `data` as request headers (`name: value` lines), a Host header
/// and a WebSocket byte stream, and panics if an invariant breaks.
pub fn request_path(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut headers = HeaderMap::new();
    for line in text.split('\n') {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_bytes(value.trim().as_bytes()),
        ) {
            headers.append(n, v);
        }
    }

    // A host is normalized once and for all.
    let host = normalize_host(&text);
    assert_eq!(normalize_host(&host), host, "normalize_host is idempotent");
    assert!(!host.chars().any(|c| c.is_ascii_uppercase()));

    // A request id is always a valid, bounded header value.
    let id = request_id(&headers);
    assert!(!id.is_empty() && id.len() <= 128);

    // An upgrade is only seen when the client asked for one.
    if upgrade_protocol(&headers).is_some() {
        assert!(headers.contains_key(header::UPGRADE));
    }

    // Nothing hop-by-hop reaches the upstream; the client's address is last
    // in X-Forwarded-For.
    let named = connection_named(&headers);
    let client_ip = HeaderValue::from_static("192.0.2.7");
    let sent_host = headers.get(header::HOST).cloned();
    prepare_upstream_headers(&mut headers, sent_host.as_ref(), &client_ip, "http", false);
    for gone in named
        .iter()
        .chain([&header::CONNECTION, &header::TRANSFER_ENCODING, &header::TE])
    {
        assert!(!headers.contains_key(gone), "{gone} reached the upstream");
    }
    let xff = headers.get("x-forwarded-for").expect("always set");
    assert!(xff.to_str().expect("ascii").ends_with("192.0.2.7"));

    // WebSocket frame boundaries do not depend on how the bytes are split.
    let split = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let (mut whole, mut parts) = (FrameCursor::default(), FrameCursor::default());
    whole.advance(data);
    data.chunks(split).for_each(|c| parts.advance(c));
    assert_eq!(whole.at_boundary(), parts.at_boundary());

    fast_path(data, split);
}

/// The fast path: rewritten heads parse again and carry nothing
/// hop-by-hop; the end of a chunked body does not depend on how it is split.
fn fast_path(data: &[u8], split: usize) {
    static CLIENT: OnceLock<ClientConn> = OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        let state = std::env::temp_dir().join("cyan-fuzz-never-written.json");
        let router = Router::restore(state).expect("an empty router");
        ClientConn::new(
            Arc::new(Forwarder::new(Arc::new(router), "http", Default::default())),
            "127.0.0.1:80".parse().expect("an address"),
            "192.0.2.7:4000".parse().expect("an address"),
        )
    });
    if let Parse::Complete(head) = RequestHead::parse(data, client) {
        assert!(head.len <= data.len());
        let mut headers = [httparse::EMPTY_HEADER; 80];
        let mut again = httparse::Request::new(&mut headers);
        let parsed = again.parse(&head.upstream);
        assert!(
            matches!(parsed, Ok(httparse::Status::Complete(n)) if n == head.upstream.len()),
            "the upstream head parses: {parsed:?}"
        );
        let named: Vec<&str> = again
            .headers
            .iter()
            .filter(|h| is_hop_by_hop(h.name))
            .map(|h| h.name)
            .collect();
        assert!(named.is_empty(), "hop-by-hop headers went up: {named:?}");
        let xff: Vec<_> = again
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
            .collect();
        assert_eq!(xff.len(), 1);
        assert!(xff[0].value.ends_with(b"192.0.2.7"));
        let hosts = again
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("host"));
        assert_eq!(
            hosts.count(),
            1,
            "the upstream gets the Host it was routed by"
        );
    }
    for method_head in [false, true] {
        if let Ok(Some(response)) = ResponseHead::parse(data, method_head) {
            assert!(response.len <= data.len());
            let mut head = response.client_head.clone();
            head.extend_from_slice(b"\r\n");
            let mut headers = [httparse::EMPTY_HEADER; 120];
            let mut again = httparse::Response::new(&mut headers);
            assert!(matches!(
                again.parse(&head),
                Ok(httparse::Status::Complete(_))
            ));
            let chunked = response.framing == Framing::Chunked;
            for h in again.headers.iter() {
                let te = h.name.eq_ignore_ascii_case("transfer-encoding");
                assert!(
                    !is_hop_by_hop(h.name) || (te && chunked),
                    "{} went down",
                    h.name
                );
                assert!(!(chunked && h.name.eq_ignore_ascii_case("content-length")));
            }
        }
    }
    let (mut whole, mut parts) = (Chunked::default(), Chunked::default());
    let taken = whole.feed(data);
    let mut split_taken = Ok(0);
    for c in data.chunks(split) {
        match (split_taken, parts.feed(c)) {
            (Ok(t), Ok(n)) => split_taken = Ok(t + n),
            (_, e) => split_taken = e.map(|_| 0),
        }
        if split_taken.is_err() || parts.done() {
            break;
        }
    }
    assert_eq!(taken, split_taken, "chunked framing depends on the split");
    assert_eq!(whole.done(), parts.done());
}

#[cfg(test)]
mod tests {
    #[test]
    fn nasty_inputs_keep_the_invariants() {
        let corpus: [&[u8]; 16] = [
            b"Connection: keep-, Host\nHost: x",
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Host\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x-a, te\r\nx-a: 1\r\nTE: trailers\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-B\r\nX-B: 1\r\nContent-Length: 2\r\n\
              Transfer-Encoding: chunked\r\n\r\n",
            b"3\r\nabc\r\n0\r\nT: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\n\r\n",
            b"a:1:2",
            b"Web.Example :8080",
            b"",
            b"Connection: close, x-a, , ,\nx-a: 1\nTE: trailers\nHost: A.B:80",
            b"connection: upgrade\nupgrade: websocket\nx-forwarded-for: 1.2.3.4",
            b"[::1]:8080",
            b"\x82\x7f\xff\xff\xff\xff\xff\xff\xff\xff",
            b"Host: \xff\xfe:99999",
            b"x-request-id: \nx-request-id: 0123456789",
            &[0x81, 0x7e, 0x01, 0x00, 0x41, 0x41],
        ];
        for input in corpus {
            super::request_path(input);
        }
    }
}
