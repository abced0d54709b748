//! Forwarding headers: what an app may believe about the client behind the
//! proxy (its address, the scheme and host it asked for).
//!
//! Only a trusted peer may speak for a client. By default no peer is
//! trusted: whatever a client sent under any forwarding name is dropped,
//! and cyan sets `X-Forwarded-For` (the peer's address), `-Proto` (its own
//! listener's scheme) and `-Host` (the Host as sent). A route may trust its
//! load balancer or CDN (`proxy.trusted_proxies`, as CIDRs; kamal-proxy's
//! `--forward-headers`): from a peer in those networks `X-Forwarded-For` is
//! appended to and every other forwarding header is kept, so behind a
//! TLS-terminating balancer an app sees `https`, not cyan's `http`.
//!
//! "Any forwarding name" includes the spellings a framework may read as the
//! same header: case does not matter, and CGI-style servers (WSGI, Rack,
//! PHP) turn `X_Forwarded_Proto` and `X-Forwarded-Proto` into the same
//! `HTTP_X_FORWARDED_PROTO`. So a forwarding name written with `_` is
//! dropped even from a trusted peer: no balancer sends it, and it could
//! override the real one.

use std::net::{IpAddr, SocketAddr};

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

/// Headers that claim something about the client or its request's
/// original scheme, host, port or path (lowercase, with `-`).
const FORWARDING: [&str; 15] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "x-forwarded-protocol",
    "x-forwarded-server",
    "x-url-scheme",
    "front-end-https",
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
];

const XFF: usize = 0;
const PROTO: usize = 1;
const HOST: usize = 2;

/// How a header name relates to the forwarding headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Name {
    /// Not a forwarding header.
    Other,
    /// `FORWARDING[i]`, spelled with `-` (any case).
    Forwarding(usize),
    /// A forwarding name spelled with `_`: always dropped.
    Underscored,
}

/// Classifies a header name.
pub(crate) fn classify(name: &[u8]) -> Name {
    // Every forwarding name starts with x, f or t: most names are out here.
    if !matches!(name.first(), Some(b'x' | b'X' | b'f' | b'F' | b't' | b'T')) {
        return Name::Other;
    }
    let same = |f: &str| {
        f.len() == name.len()
            && f.bytes()
                .zip(name)
                .all(|(f, &n)| f == n.to_ascii_lowercase() || (f == b'-' && n == b'_'))
    };
    match FORWARDING.iter().position(|f| same(f)) {
        Some(_) if name.contains(&b'_') => Name::Underscored,
        Some(i) => Name::Forwarding(i),
        None => Name::Other,
    }
}

/// A client's address as `X-Forwarded-For` carries it, formatted once per
/// connection.
pub(crate) fn client_ip(peer: SocketAddr) -> HeaderValue {
    HeaderValue::from_str(&peer.ip().to_string()).expect("an IP is a valid header")
}

/// Whether `peer` is one of the route's trusted proxies.
pub(crate) fn trusts(trusted: &[IpNet], peer: IpAddr) -> bool {
    let peer = match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
        v4 => v4,
    };
    trusted.iter().any(|net| net.contains(&peer))
}

/// What to do with one request header on the way up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    Yes,
    No,
    /// The client's `X-Forwarded-For`, to append to (trusted peers only).
    AppendTo,
}

/// The rule for one header from a trusted or other peer; also says which
/// of `X-Forwarded-Proto` and `-Host` cyan need not set (`found`).
pub(crate) fn keep(name: &[u8], trusted: bool, found: &mut Found) -> Keep {
    match classify(name) {
        Name::Other => Keep::Yes,
        Name::Underscored => Keep::No,
        Name::Forwarding(_) if !trusted => Keep::No,
        Name::Forwarding(XFF) => Keep::AppendTo,
        Name::Forwarding(i) => {
            found.proto |= i == PROTO;
            found.host |= i == HOST;
            Keep::Yes
        }
    }
}

/// Forwarding headers a trusted peer already set, which cyan keeps.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Found {
    pub proto: bool,
    pub host: bool,
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// hyper's path: applies the rules to a request's headers, then sets
/// `X-Forwarded-For` (the client's address appended to a trusted peer's
/// list), and `-Proto` and `-Host` unless a trusted peer set them.
pub(crate) fn apply(
    headers: &mut HeaderMap,
    host: Option<&HeaderValue>,
    client_ip: &HeaderValue,
    scheme: &'static str,
    trusted: bool,
) {
    let mut found = Found::default();
    let mut prior_for: Option<Vec<u8>> = None;
    let mut drop = Vec::new();
    for (name, value) in headers.iter() {
        match keep(name.as_str().as_bytes(), trusted, &mut found) {
            Keep::Yes => {}
            Keep::No => drop.push(name.clone()),
            Keep::AppendTo => {
                let list = prior_for.get_or_insert_with(Vec::new);
                if !list.is_empty() {
                    list.extend_from_slice(b", ");
                }
                list.extend_from_slice(value.as_bytes());
            }
        }
    }
    for name in drop {
        headers.remove(name);
    }
    let forwarded_for = match prior_for {
        Some(mut list) => {
            list.extend_from_slice(b", ");
            list.extend_from_slice(client_ip.as_bytes());
            HeaderValue::from_maybe_shared(bytes::Bytes::from(list)).ok()
        }
        None => Some(client_ip.clone()),
    };
    if let Some(v) = forwarded_for {
        headers.insert(X_FORWARDED_FOR, v);
    }
    if !found.proto {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
    }
    if let Some(h) = host.filter(|_| !found.host) {
        headers.insert(X_FORWARDED_HOST, h.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_forwarding_name_is_found() {
        assert_eq!(classify(b"X-Forwarded-Proto"), Name::Forwarding(PROTO));
        assert_eq!(classify(b"x-forwarded-for"), Name::Forwarding(XFF));
        assert_eq!(classify(b"X_Forwarded_Proto"), Name::Underscored);
        assert_eq!(classify(b"x-forwarded_host"), Name::Underscored);
        assert_eq!(classify(b"FORWARDED"), Name::Forwarding(11));
        assert_eq!(classify(b"X-Real-IP"), Name::Forwarding(12));
        for other in [
            &b"X-Forwarded"[..],
            b"x-forwarded-proto2",
            b"host",
            b"",
            b"xx",
        ] {
            assert_eq!(classify(other), Name::Other, "{other:?}");
        }
    }

    #[test]
    fn only_a_trusted_peer_may_speak_for_the_client() {
        let sent = || {
            let mut h = HeaderMap::new();
            h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
            h.append("x-forwarded-for", HeaderValue::from_static("7.7.7.7"));
            h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
            h.insert("x_forwarded_proto", HeaderValue::from_static("https"));
            h.insert("forwarded", HeaderValue::from_static("for=6.6.6.6"));
            h.insert("x-real-ip", HeaderValue::from_static("6.6.6.6"));
            h.insert("x-app", HeaderValue::from_static("kept"));
            h
        };
        let ip = HeaderValue::from_static("10.0.0.9");
        let host = HeaderValue::from_static("web.example");

        let mut h = sent();
        apply(&mut h, Some(&host), &ip, "http", false);
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "web.example");
        assert_eq!(h["x-app"], "kept");
        for gone in ["x_forwarded_proto", "forwarded", "x-real-ip"] {
            assert!(!h.contains_key(gone), "{gone}");
        }
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);

        let mut h = sent();
        apply(&mut h, Some(&host), &ip, "http", true);
        assert_eq!(h["x-forwarded-for"], "6.6.6.6, 7.7.7.7, 10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "https", "the balancer's scheme");
        assert_eq!(h["x-forwarded-host"], "web.example");
        assert_eq!(h["forwarded"], "for=6.6.6.6");
        assert!(!h.contains_key("x_forwarded_proto"), "never the _ spelling");
    }

    #[test]
    fn trust_is_by_network_and_v4_mapped_addresses_count() {
        let nets: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        assert!(trusts(&nets, "10.1.2.3".parse().unwrap()));
        assert!(trusts(&nets, "::ffff:10.1.2.3".parse().unwrap()));
        assert!(trusts(&nets, "::1".parse().unwrap()));
        assert!(!trusts(&nets, "11.0.0.1".parse().unwrap()));
        assert!(!trusts(&[], "10.1.2.3".parse().unwrap()));
    }
}
