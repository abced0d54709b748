//! Invariants of the request path's own parsing, checked on arbitrary
//! input: the entry point of the cargo-fuzz target in `fuzz/`, and of a unit
//! test that runs it on a corpus of nasty inputs. (HTTP parsing itself is
//! hyper's; what is checked here is what cyan adds on top.)

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::forward::{connection_named, prepare_upstream_headers, request_id, upgrade_protocol};
use super::router::normalize_host;
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
    prepare_upstream_headers(&mut headers, sent_host.as_ref(), &client_ip, "http");
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
}

#[cfg(test)]
mod tests {
    #[test]
    fn nasty_inputs_keep_the_invariants() {
        let corpus: [&[u8]; 10] = [
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
