//! HTTP/1.1 heads on the fast path (`fast`): parsed in place with
//! httparse and written out again for the other side. A request head
//! loses its hop-by-hop headers and gains the forwarding ones; a response
//! head loses its hop-by-hop headers, and its framing (`Framing`) is worked
//! out so the body's end can be found. A request the fast path does not
//! take is told apart here (`Parse::NotFast`).

use std::ops::Range;

use hyper::StatusCode;

use super::attempt::{idempotent, Failed};
use super::drain;
use super::forward::ClientConn;
use super::forwarding;
use super::framing::Framing;
use super::headers::{
    connection_tokens, is_hop_by_hop, named_hop_by_hop, only_chunked, valid_host,
};
use super::request_id::RequestId;

/// More request header lines go to hyper (which takes 100).
const MAX_HEADERS: usize = 64;
/// As many response header lines as hyper's client takes.
const MAX_RESPONSE_HEADERS: usize = 100;

pub(crate) enum Parse<T> {
    Complete(T),
    Partial,
    /// Not for the fast path: hyper takes the connection.
    NotFast,
}

/// A request head the fast path forwards, already rewritten for the upstream.
pub(crate) struct RequestHead {
    /// Its length in the client's buffer.
    pub(crate) len: usize,
    /// The head to send: hop-by-hop headers out, forwarding headers in.
    pub(crate) upstream: Vec<u8>,
    /// Body length.
    pub(crate) body: u64,
    /// Where the Host header's value (the fast path requires one) and the
    /// path (no query) are in the buffer.
    pub(crate) host: Range<usize>,
    pub(crate) path: Range<usize>,
    pub(crate) method_head: bool,
    /// Its method may be sent twice (RFC 9110 §9.2.2).
    pub(crate) idempotent: bool,
    /// The client asked to close after this response.
    pub(crate) close: bool,
    pub(crate) id: RequestId,
}

impl RequestHead {
    pub(crate) fn parse(buf: &[u8], client: &ClientConn) -> Parse<RequestHead> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let len = match req.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Parse::Partial,
            Err(_) => return Parse::NotFast,
        };
        let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
            return Parse::NotFast;
        };
        if !target.starts_with('/') {
            return Parse::NotFast;
        }
        let mut host = None;
        let mut body = None;
        let mut close = false;
        let mut sent_id = None;
        for h in req.headers.iter() {
            let name = h.name;
            let is = |n: &str| name.eq_ignore_ascii_case(n);
            if is("host") {
                if host.is_some() || !valid_host(h.value) {
                    return Parse::NotFast;
                }
                host = Some(h.value);
            } else if is("content-length") {
                match (body, parse_length(h.value)) {
                    (None, Some(n)) => body = Some(n),
                    _ => return Parse::NotFast,
                }
            } else if is("transfer-encoding") || is("upgrade") || is("expect") {
                return Parse::NotFast;
            } else if is("connection") {
                let Ok(value) = std::str::from_utf8(h.value) else {
                    return Parse::NotFast;
                };
                for token in connection_tokens([value]) {
                    if token.eq_ignore_ascii_case("upgrade") {
                        return Parse::NotFast;
                    }
                    close |= token.eq_ignore_ascii_case("close");
                }
            } else if is("x-request-id") && sent_id.is_none() {
                // The first, as hyper's path reads it (the differential
                // fuzz target found the fast path taking the last).
                sent_id = Some(h.value);
            }
        }
        let Some(host) = host else {
            return Parse::NotFast;
        };
        let id = RequestId::new(sent_id);
        let upstream = upstream_head(&req, len, host, &id, client, false);
        let start = buf.as_ptr() as usize;
        let at = |s: &[u8]| {
            let from = s.as_ptr() as usize - start;
            from..from + s.len()
        };
        let path = target.split('?').next().unwrap_or(target);
        Parse::Complete(RequestHead {
            len,
            upstream,
            body: body.unwrap_or(0),
            host: at(host),
            path: at(path.as_bytes()),
            method_head: method == "HEAD",
            idempotent: idempotent(method.as_bytes()),
            close,
            id,
        })
    }
}

impl RequestHead {
    /// The head for the upstream when the client is one of the route's
    /// trusted proxies: its forwarding headers kept (`forwarding`). `buf`
    /// is the buffer the head was parsed from. Built again only when it
    /// differs: when the client sent a forwarding header.
    pub(crate) fn trust(&mut self, buf: &[u8], client: &ClientConn) {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        if !matches!(
            req.parse(&buf[..self.len]),
            Ok(httparse::Status::Complete(_))
        ) {
            return;
        }
        let sent = req
            .headers
            .iter()
            .any(|h| forwarding::classify(h.name.as_bytes()) != forwarding::Name::Other);
        if sent {
            let host = &buf[self.host.clone()];
            self.upstream = upstream_head(&req, self.len, host, &self.id, client, true);
        }
    }
}

/// A parsed request head as the upstream gets it: hop-by-hop headers out,
/// the forwarding headers by `forwarding`'s rules, and the request id.
fn upstream_head(
    req: &httparse::Request,
    len: usize,
    host: &[u8],
    id: &RequestId,
    client: &ClientConn,
    trusted: bool,
) -> Vec<u8> {
    let (method, target) = (req.method.unwrap_or("GET"), req.path.unwrap_or("/"));
    let named = connection_named(req.headers);
    let mut up = Vec::with_capacity(len + 160 + client.ip.len());
    up.extend_from_slice(method.as_bytes());
    up.push(b' ');
    up.extend_from_slice(target.as_bytes());
    up.extend_from_slice(b" HTTP/1.1\r\n");
    let mut found = forwarding::Found::default();
    let mut forwarded_for = Vec::new();
    for h in req.headers.iter() {
        if hop_by_hop_here(h.name, &named) || h.name.eq_ignore_ascii_case("x-request-id") {
            continue;
        }
        match forwarding::keep(h.name.as_bytes(), trusted, &mut found) {
            forwarding::Keep::Yes => header(&mut up, h.name, h.value),
            forwarding::Keep::No => {}
            forwarding::Keep::AppendTo => {
                forwarded_for.extend_from_slice(h.value);
                forwarded_for.extend_from_slice(b", ");
            }
        }
    }
    forwarded_for.extend_from_slice(client.ip.as_bytes());
    header(&mut up, "x-forwarded-for", &forwarded_for);
    if !found.proto {
        header(
            &mut up,
            "x-forwarded-proto",
            client.forwarder.scheme.as_bytes(),
        );
    }
    if !found.host {
        header(&mut up, "x-forwarded-host", host);
    }
    header(&mut up, "x-request-id", id.as_bytes());
    up.extend_from_slice(b"\r\n");
    up
}

fn connection_values<'a, 'h>(
    headers: &'a [httparse::Header<'h>],
) -> impl Iterator<Item = &'h str> + 'a {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
}

/// The extra hop-by-hop headers a message's `Connection` names.
fn connection_named<'h>(headers: &[httparse::Header<'h>]) -> Vec<&'h str> {
    named_hop_by_hop(connection_values(headers)).collect()
}

/// Hop-by-hop: one of the standard ones, or named by `Connection`.
fn hop_by_hop_here(name: &str, named: &[&str]) -> bool {
    is_hop_by_hop(name) || named.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// A `Content-Length` value: digits only, no sign, no list.
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// An upstream's response head, rewritten for the client (all but the
/// closing `x-request-id`, `connection` and the blank line).
pub(crate) struct ResponseHead {
    pub(crate) len: usize,
    pub(crate) status: u16,
    pub(crate) framing: Framing,
    /// The upstream keeps the connection open after this response.
    pub(crate) reusable: bool,
    /// Server-sent events (`drain` ends them at an event boundary).
    pub(crate) event_stream: bool,
    pub(crate) client_head: Vec<u8>,
}

impl ResponseHead {
    /// `None` until the head is complete.
    pub(crate) fn parse(buf: &[u8], method_head: bool) -> Result<Option<ResponseHead>, Failed> {
        let invalid =
            |why: &str| Failed::Broken(format!("invalid response from the upstream: {why}"));
        let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let len = match resp.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(invalid(&e.to_string())),
        };
        let (Some(version), Some(status)) = (resp.version, resp.code) else {
            return Err(invalid("no status"));
        };
        if status == 101 {
            return Err(invalid("101 without an upgrade request"));
        }
        let mut length = None;
        let mut chunked = false;
        let mut event_stream = false;
        for h in resp.headers.iter() {
            event_stream |=
                h.name.eq_ignore_ascii_case("content-type") && drain::is_event_stream(h.value);
            if h.name.eq_ignore_ascii_case("content-length") {
                match (length, parse_length(h.value)) {
                    (None, Some(n)) => length = Some(n),
                    (Some(a), Some(b)) if a == b => {}
                    _ => return Err(invalid("bad content-length")),
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = true;
            }
        }
        let codings = resp
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
            .map(|h| h.value);
        if chunked && !only_chunked(codings) {
            return Err(invalid("a transfer coding other than chunked"));
        }
        let bodiless =
            method_head || (100..200).contains(&status) || status == 204 || status == 304;
        let framing = match (bodiless, chunked, length) {
            (true, _, _) => Framing::Length(0),
            (false, true, _) => Framing::Chunked,
            (false, false, Some(n)) => Framing::Length(n),
            (false, false, None) => Framing::UntilClose,
        };
        let closes = connection_tokens(connection_values(resp.headers))
            .any(|t| t.eq_ignore_ascii_case("close"));
        let named = connection_named(resp.headers);
        let mut out = Vec::with_capacity(len + 64);
        status_line(&mut out, status, resp.reason);
        for h in resp.headers.iter() {
            // With chunks, a length is wrong (RFC 9112 §6.3): not passed on.
            // No length on a response that has no body by its status (RFC
            // 9110 §8.6): a client that believed it would swallow the next one.
            let no_length = chunked || (100..200).contains(&status) || status == 204;
            let dropped = hop_by_hop_here(h.name, &named)
                || h.name.eq_ignore_ascii_case("x-request-id")
                || (no_length && h.name.eq_ignore_ascii_case("content-length"));
            if !dropped {
                header(&mut out, h.name, h.value);
            }
        }
        // A body that ends when the upstream closes goes to the client in
        // chunks: its end (or a cut) is then visible, and the client's
        // connection outlives the upstream's.
        if matches!(framing, Framing::Chunked | Framing::UntilClose) {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        Ok(Some(ResponseHead {
            len,
            status,
            framing,
            reusable: version == 1 && !closes && framing != Framing::UntilClose,
            event_stream,
            client_head: out,
        }))
    }
}

/// `HTTP/1.1 200 OK`: the upstream's reason phrase, or the standard one.
pub(crate) fn status_line(out: &mut Vec<u8>, status: u16, reason: Option<&str>) {
    let reason = reason
        .filter(|r| !r.is_empty())
        .or_else(|| StatusCode::from_u16(status).ok()?.canonical_reason())
        .unwrap_or("");
    let status = status.min(999);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend([status / 100, status / 10 % 10, status % 10].map(|d| b'0' + d as u8));
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

pub(crate) fn header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::Forwarder;
    use crate::router::Router;
    use std::sync::Arc;

    fn client() -> ClientConn {
        let state = std::env::temp_dir().join("cyan-fast-tests-never-written.json");
        let router = Arc::new(Router::restore(state).unwrap());
        ClientConn::new(
            Arc::new(Forwarder::new(router, "http", Default::default())),
            "127.0.0.1:80".parse().unwrap(),
            "10.1.2.3:5555".parse().unwrap(),
        )
    }

    fn head(raw: &[u8]) -> Parse<RequestHead> {
        RequestHead::parse(raw, &client())
    }

    fn response(raw: &[u8], method_head: bool) -> ResponseHead {
        match ResponseHead::parse(raw, method_head) {
            Ok(Some(r)) => r,
            _ => panic!("{}", String::from_utf8_lossy(raw)),
        }
    }

    #[test]
    fn a_request_head_is_rewritten_for_the_upstream() {
        let raw = b"POST /a/b?x=1 HTTP/1.1\r\nHost: Web.Localhost:8080\r\n\
            Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\
            X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\nX-Request-Id: abc\r\n\
            Content-Length: 3\r\nX-App: Kept\r\n\r\nabcNEXT";
        let Parse::Complete(mut h) = head(raw) else {
            panic!("not parsed")
        };
        assert_eq!(h.len, raw.len() - "abcNEXT".len());
        assert_eq!(h.body, 3);
        assert_eq!(&raw[h.host.clone()], b"Web.Localhost:8080");
        assert_eq!(&raw[h.path.clone()], b"/a/b");
        assert!(!h.close && !h.method_head);
        assert_eq!(
            String::from_utf8(h.upstream.clone()).unwrap(),
            "POST /a/b?x=1 HTTP/1.1\r\nHost: Web.Localhost:8080\r\nContent-Length: 3\r\n\
             X-App: Kept\r\nx-forwarded-for: 10.1.2.3\r\nx-forwarded-proto: http\r\n\
             x-forwarded-host: Web.Localhost:8080\r\nx-request-id: abc\r\n\r\n",
            "the client's forwarding headers are replaced"
        );
        h.trust(raw, &client());
        assert_eq!(
            String::from_utf8(h.upstream).unwrap(),
            "POST /a/b?x=1 HTTP/1.1\r\nHost: Web.Localhost:8080\r\nX-Forwarded-Proto: https\r\n\
             Content-Length: 3\r\nX-App: Kept\r\nx-forwarded-for: 10.0.0.1, 10.1.2.3\r\n\
             x-forwarded-host: Web.Localhost:8080\r\nx-request-id: abc\r\n\r\n",
            "a trusted proxy's are kept, its list appended to"
        );
        let Parse::Complete(h) = head(b"HEAD / HTTP/1.1\r\nhost: a\r\nconnection: Close\r\n\r\n")
        else {
            panic!("not parsed")
        };
        assert!(h.close && h.method_head);
        let up = String::from_utf8(h.upstream).unwrap();
        assert!(up.contains("x-forwarded-for: 10.1.2.3\r\n"), "{up}");
        assert!(!up.to_ascii_lowercase().contains("connection"), "{up}");
    }

    #[test]
    fn requests_the_fast_path_does_not_take_go_to_hyper() {
        for raw in [
            &b"GET / HTTP/1.0\r\nHost: a\r\n\r\n"[..],
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"NOT HTTP\r\n\r\n",
        ] {
            let parsed = head(raw);
            assert!(
                matches!(parsed, Parse::NotFast),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        assert!(matches!(head(b"GET / HTTP/1.1\r\nHo"), Parse::Partial));
    }

    #[test]
    fn a_response_head_is_rewritten_for_the_client() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\
            Connection: close, X-Hop\r\nX-Hop: 1\r\nX-Request-Id: theirs\r\nSet-Cookie: a=b\r\n\r\n";
        let r = response(raw, false);
        assert_eq!(r.len, raw.len());
        assert_eq!((r.status, r.framing), (200, Framing::Chunked));
        assert!(!r.reusable, "the upstream closes");
        assert_eq!(
            String::from_utf8(r.client_head).unwrap(),
            "HTTP/1.1 200 OK\r\nSet-Cookie: a=b\r\ntransfer-encoding: chunked\r\n",
            "a length beside chunks is dropped, hop-by-hop headers too"
        );
        let sized = b"HTTP/1.1 404 \r\nContent-Length: 5\r\n\r\n";
        let r = response(sized, false);
        assert_eq!(r.framing, Framing::Length(5));
        assert!(r.reusable);
        assert!(r.client_head.starts_with(b"HTTP/1.1 404 Not Found\r\n"));
        assert_eq!(response(sized, true).framing, Framing::Length(0), "HEAD");
        for bodiless in [
            &b"HTTP/1.1 204 No Content\r\n\r\n"[..],
            b"HTTP/1.1 304 Not Modified\r\n\r\n",
        ] {
            assert_eq!(response(bodiless, false).framing, Framing::Length(0));
        }
        let until_close = response(b"HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!(until_close.framing, Framing::UntilClose);
        assert!(!until_close.reusable);
        assert!(!response(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false).reusable);
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"garbage\r\n\r\n",
        ] {
            assert!(
                ResponseHead::parse(bad, false).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            ResponseHead::parse(b"HTTP/1.1 200 OK\r\n", false),
            Ok(None)
        ));
    }
}
