//! The rules for a message's headers as it crosses the proxy, shared by
//! both request paths (hyper's, `forward`; the fast path, `heads`) and
//! held to each other by `fuzz`:
//! - which authority a request is for, and which requests are refused
//!   before any app sees them (RFC 9112 §3.2);
//! - hop-by-hop headers: the standard ones and those `Connection` names,
//!   which describe one connection and never cross (RFC 9110 §7.6.1);
//! - framing: only the chunked transfer coding is carried (RFC 9112 §6.1);
//! - upgrades: which protocol a client asks for, and whether the upstream
//!   switched to it.
//!
//! What an app may believe about the client (`X-Forwarded-*`) is
//! `forwarding`'s.

use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, StatusCode};

use super::forwarding;
use super::pages::Page;

/// The authority a request is for, or the 400 (405 for `CONNECT`, 501 for
/// a transfer coding other than chunked, RFC 9112 §6.1) that refuses it
/// before it reaches any app (RFC 9112 §3.2 and §3.2.2):
/// - an absolute-form target's authority wins over the Host header; its
///   scheme is http or https; the authority form is CONNECT's alone;
/// - an HTTP/1.1 request needs exactly one Host header;
/// - a Host must be a host (and port), not a path, user info or spaces;
/// - `CONNECT` asks for a tunnel, which a reverse proxy does not make.
pub(crate) fn request_authority(req: &Request<Incoming>) -> Result<Option<HeaderValue>, Page> {
    let bad = |why: &str| Page::error(StatusCode::BAD_REQUEST, why);
    if req.method() == hyper::Method::CONNECT {
        return Err(Page::text(
            StatusCode::METHOD_NOT_ALLOWED,
            "cyan: CONNECT is not served: this is a reverse proxy\n".into(),
        ));
    }
    let te = req.headers().get_all(header::TRANSFER_ENCODING);
    if te.iter().next().is_some() && !only_chunked(te.iter().map(|v| v.as_bytes())) {
        return Err(Page::text(
            StatusCode::NOT_IMPLEMENTED,
            "cyan: only the chunked transfer coding is understood\n".into(),
        ));
    }
    if let Some(scheme) = req.uri().scheme_str() {
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(bad(&format!("no {scheme}: URLs are served here")));
        }
    } else if req.uri().authority().is_some() && req.version() < hyper::Version::HTTP_2 {
        // The authority form is CONNECT's alone (RFC 9112 §3.2.3).
        return Err(bad("a target of only host and port is for CONNECT"));
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let sent = hosts.next();
    if hosts.next().is_some() {
        return Err(bad("more than one Host header"));
    }
    if sent.is_none() && req.version() == hyper::Version::HTTP_11 {
        return Err(bad("an HTTP/1.1 request needs a Host header"));
    }
    if let Some(h) = sent.filter(|h| !valid_host(h.as_bytes())) {
        return Err(bad(&format!("invalid Host header {h:?}")));
    }
    match req.uri().authority() {
        Some(a) if valid_host(a.as_str().as_bytes()) => Ok(HeaderValue::from_str(a.as_str()).ok()),
        Some(a) => Err(bad(&format!("invalid authority {:?}", a.as_str()))),
        None => Ok(sent.cloned()),
    }
}

/// A Host value (RFC 9110 §7.2: `uri-host [ ":" port ]`): a reg-name of
/// unreserved, percent-encoded and sub-delim characters, or a bracketed IP
/// literal, then an optional port of digits. Empty is allowed (no
/// authority). No user info, path, space or control character.
pub(crate) fn valid_host(host: &[u8]) -> bool {
    let (name, port) = match host.iter().rposition(|&b| b == b':') {
        Some(i) if !host[..i].contains(&b':') || host[..i].ends_with(b"]") => {
            (&host[..i], &host[i + 1..])
        }
        _ => (host, &b""[..]),
    };
    // Digits only (`parse` would take a `+`), and a u16.
    let port_ok = port.iter().all(u8::is_ascii_digit)
        && std::str::from_utf8(port).is_ok_and(|p| p.is_empty() || p.parse::<u16>().is_ok());
    let name_ok = match name {
        [b'[', literal @ .., b']'] => literal
            .iter()
            .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.' | b'v' | b'V')),
        _ => name.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'%'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                )
        }),
    };
    port_ok && name_ok
}

/// The protocol of an HTTP/1.1 upgrade request (`Connection: upgrade` plus
/// `Upgrade: X`). Never `h2c`: that upgrade is obsolete (RFC 9113 §3.1),
/// and carried through it would tunnel the client's next bytes to the app
/// as raw requests, past routing and the forwarding headers (a request
/// smuggled in by an attacker). Such a request goes up without `Upgrade`.
pub(crate) fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks =
        connection_tokens(connection_values(headers)).any(|t| t.eq_ignore_ascii_case("upgrade"));
    let protocol = asks.then(|| headers.get(header::UPGRADE)).flatten()?;
    let h2c = protocol.to_str().map_or(true, |p| {
        connection_tokens([p]).any(|t| t.eq_ignore_ascii_case("h2c"))
    });
    (!h2c).then(|| protocol.clone())
}

/// Why an upstream's response cannot be passed on, if it cannot: a `101`
/// to a protocol other than the one the client asked for (`asked`; a
/// tunnel to anything else is refused, RFC 9110 §7.8), or a transfer
/// coding other than chunked.
pub(crate) fn unforwardable(
    status: StatusCode,
    headers: &HeaderMap,
    asked: Option<&HeaderValue>,
) -> Option<&'static str> {
    if status == StatusCode::SWITCHING_PROTOCOLS && !asked.is_some_and(|a| switches_to(headers, a))
    {
        return Some("a switch to a protocol the client did not ask for");
    }
    let te = headers.get_all(header::TRANSFER_ENCODING);
    (te.iter().next().is_some() && !only_chunked(te.iter().map(|v| v.as_bytes())))
        .then_some("a transfer coding other than chunked")
}

/// Whether a `101` switches to the protocol the client asked for.
fn switches_to(response: &HeaderMap, asked: &HeaderValue) -> bool {
    let (Some(to), Ok(asked)) = (response.get(header::UPGRADE), asked.to_str()) else {
        return false;
    };
    let to = to.to_str().unwrap_or_default().trim_ascii();
    connection_tokens([asked]).any(|t| t.eq_ignore_ascii_case(to))
}

/// Whether a message's `Transfer-Encoding` is exactly `chunked`, once: any
/// other coding would be lost when the proxy frames the body again (the
/// header is hop-by-hop), so the body would arrive still coded and labelled
/// as plain (RFC 9112 §6.1).
pub(crate) fn only_chunked<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> bool {
    let mut codings = values
        .into_iter()
        .flat_map(|v| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty());
    matches!(codings.next(), Some(c) if c.eq_ignore_ascii_case(b"chunked"))
        && codings.next().is_none()
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1),
/// and `Upgrade` (the proxy sets it again on an upgrade it carries through).
/// `connection` comes first: `strip_hop_by_hop` looks for it at 0.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether a header name is one of the standard hop-by-hop ones.
pub(crate) fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// The tokens of `Connection` header values: options such as `upgrade`, and
/// the names of more hop-by-hop headers.
pub(crate) fn connection_tokens<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> impl Iterator<Item = &'a str> {
    values
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// The headers `Connection` names beyond the standard hop-by-hop ones (its
/// usual `keep-alive`, `close` or `upgrade` name nothing more to remove).
/// Never one of `NEVER_NAMED`.
pub(crate) fn named_hop_by_hop<'a>(
    connection: impl IntoIterator<Item = &'a str>,
) -> impl Iterator<Item = &'a str> {
    connection_tokens(connection).filter(|t| {
        !t.eq_ignore_ascii_case("close")
            && !is_hop_by_hop(t)
            && !NEVER_NAMED.iter().any(|n| t.eq_ignore_ascii_case(n))
    })
}

/// Headers a `Connection` token cannot remove:
/// - `Content-Length` decides where the message ends: dropping it while
///   framing by it let a body pass as a second, smuggled request (and a
///   response lose its end);
/// - `Host`: the upstream gets the Host the request was routed by (found by
///   the fuzz target: the fast path sent none).
///
/// (`Transfer-Encoding` is hop-by-hop anyway: each side frames again.)
const NEVER_NAMED: [&str; 2] = ["content-length", "host"];

fn connection_values(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
}

/// The headers a message's `Connection` header names as hop-by-hop.
pub(crate) fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    named_hop_by_hop(connection_values(headers))
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect()
}

/// Takes the hop-by-hop headers out of a message.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names (no hashing) finds which are there; most
    // messages carry none, or only `Connection`.
    let mut present = [false; HOP_BY_HOP.len()];
    for name in headers.keys() {
        let name = name.as_str();
        if let Some(i) = HOP_BY_HOP.iter().position(|h| *h == name) {
            present[i] = true;
        }
    }
    if present[0] {
        for name in connection_named(headers) {
            headers.remove(name);
        }
    }
    for (h, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(*h);
    }
}

/// Readies a client's request headers for the upstream: hop-by-hop headers
/// out; the forwarding headers by `forwarding`'s rules (`X-Forwarded-Host`
/// is the Host as the client sent it, as Caddy, Traefik and kamal-proxy
/// send it); and a Host header for an HTTP/2 request, which carries none,
/// or an absolute-form one, whose authority wins.
pub(crate) fn prepare_upstream_headers(
    headers: &mut HeaderMap,
    host: Option<&HeaderValue>,
    client_ip: &HeaderValue,
    scheme: &'static str,
    trusted: bool,
) {
    strip_hop_by_hop(headers);
    headers.reserve(3);
    forwarding::apply(headers, host, client_ip, scheme, trusted);
    if let Some(h) = host {
        headers.insert(header::HOST, h.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed_and_forwarding_headers_added() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.insert("x-app", HeaderValue::from_static("kept"));
        // An HTTP/2 request: no Host header, the authority stands in.
        let client_ip = forwarding::client_ip("127.0.0.9:5000".parse().unwrap());
        let authority = HeaderValue::from_static("Web.Localhost:8000");
        prepare_upstream_headers(&mut h, Some(&authority), &client_ip, "https", true);
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get("x-secret-hop").is_none());
        assert!(h.get("keep-alive").is_none());
        assert_eq!(h["x-app"], "kept");
        assert_eq!(
            h["x-forwarded-for"], "10.0.0.1, 127.0.0.9",
            "a trusted peer's list"
        );
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "Web.Localhost:8000", "as sent");
        assert_eq!(h[header::HOST], "Web.Localhost:8000");

        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a.example"));
        let v6 = forwarding::client_ip("[::1]:4000".parse().unwrap());
        let sent = h.get(header::HOST).cloned();
        prepare_upstream_headers(&mut h, sent.as_ref(), &v6, "http", false);
        assert_eq!(h["x-forwarded-for"], "::1", "the first hop starts the list");
        assert_eq!(h[header::HOST], "a.example");
        assert_eq!(h["x-forwarded-host"], "a.example");
    }
}
