//! Who may see the dashboard and who may act on it.
//!
//! The page shows every app on the host and has a rollback button, so it
//! is guarded as an admin console, whose users can do what the CLI does
//! only with the Docker engine's socket:
//! - **A token, always.** Given with `--token-file`, or made at start and
//!   printed in the URL (`http://127.0.0.1:7070/?token=…`, as Jupyter
//!   does): opening that URL, or the login form, exchanges it for a
//!   session cookie (`HttpOnly`, `SameSite=Strict`, 12 h); scripts may
//!   send `Authorization: Bearer <token>`. So another user of the machine,
//!   or a container on the host network, cannot act through a loopback
//!   dashboard. Wrong tokens are answered 429 past 5 a minute from one
//!   address (an IPv6 /64), but a right one is always let in: a token of
//!   16 characters or more is not guessed, and a hard lockout would let
//!   anyone behind the same address lock the real users out.
//! - **Or a reverse proxy's header** (`--trust-header X-Forwarded-User`):
//!   the proxy in front authenticates and names the user in that header; a
//!   request without it is refused. The dashboard must then be reachable
//!   only through that proxy (listen on loopback or a private address).
//!
//! Without a token from a file, `Host` must be a loopback name, an IP
//! address (no page can be rebound to an address: DNS rebinding needs a
//! name of the attacker's), or a name given with `--host`: a browser that
//! a hostile page rebinds to the dashboard's address sends a trusted
//! header itself. Every action also needs the page's CSRF token in
//! `X-CSRF-Token` (a cross-site form cannot set a header, and a
//! cross-site script cannot read the page that holds it) and an `Origin`,
//! when sent, of the page's own host.
//!
//! A session cookie, like any cookie, goes to every port of its host name
//! (RFC 6265 §8.5): serve the dashboard under a name of its own, not one
//! the host's apps answer on.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::header::{HeaderMap, AUTHORIZATION, COOKIE, HOST, ORIGIN};
use secrecy::{ExposeSecret as _, SecretString};

/// How long a login lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The session cookie's name.
pub const COOKIE_NAME: &str = "cyan_session";
/// Wrong tokens an address may send in a minute before it is refused.
const FAILURES_PER_MINUTE: u32 = 5;
/// Sessions kept at most (the oldest goes first).
const MAX_SESSIONS: usize = 1000;

/// How requests are let in.
pub enum Mode {
    /// A login with this token, from `--token-file`.
    Token(SecretString),
    /// A login with this token, made at start and printed (loopback only).
    Made(SecretString),
    /// A reverse proxy that authenticates, naming the user in this header.
    Header(hyper::header::HeaderName),
}

impl Mode {
    /// A token made now: 32 hex characters (128 bits).
    pub fn made() -> Mode {
        Mode::Made(SecretString::from(random_hex(16)))
    }

    fn token(&self) -> Option<&SecretString> {
        match self {
            Mode::Token(t) | Mode::Made(t) => Some(t),
            Mode::Header(_) => None,
        }
    }
}

/// Who a request is, once let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visitor {
    /// The name shown (`token`, or the trusted header's value).
    pub user: String,
    /// The CSRF token the page carries and actions must send back.
    pub csrf: String,
}

/// Why a request is not let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No session or credentials: the login page (token mode), or 401.
    LoginNeeded,
    /// A `Host` that is none of the dashboard's names (without a token).
    ForeignHost(String),
    /// The trusted header is missing.
    NoHeader(String),
    /// A wrong token, past too many from this address lately.
    TooMany,
}

impl Refusal {
    pub fn message(&self) -> String {
        match self {
            Refusal::LoginNeeded => "log in first: this dashboard needs its token".into(),
            Refusal::ForeignHost(h) => format!(
                "Host {h:?} is not a name of this dashboard: it answers localhost, IP addresses and the names given with --host (a name that resolves here from elsewhere is how DNS rebinding reaches it)"
            ),
            Refusal::NoHeader(h) => format!(
                "no {h} header: this dashboard is served behind a reverse proxy that authenticates"
            ),
            Refusal::TooMany => {
                "too many wrong tokens from this address in a minute: wait, then give the right one".into()
            }
        }
    }
}

struct Session {
    csrf: String,
    until: Instant,
}

/// The dashboard's door: its mode, the sessions it gave, the wrong tokens
/// it saw.
pub struct Access {
    mode: Mode,
    /// `--host`: names, besides loopback ones and addresses, that `Host`
    /// may be without a token (lowercase, no port).
    names: Vec<String>,
    /// The CSRF token of loopback and header visitors (one per process:
    /// it guards against other sites, not against users of this one).
    shared_csrf: String,
    sessions: Mutex<HashMap<String, Session>>,
    /// Wrong tokens per address (`network`) in the last minute.
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Access {
    /// Errors: a listen address other than loopback with a token made here
    /// (`Mode::Made`).
    pub fn new(mode: Mode, listen: SocketAddr, names: Vec<String>) -> Result<Access, String> {
        if matches!(mode, Mode::Made(_)) && !listen.ip().is_loopback() {
            return Err(format!(
                "--listen {listen} is not a loopback address: give --token-file FILE (a login with the token in FILE, kept where you choose) or --trust-header NAME (a reverse proxy in front authenticates and names the user in that header)"
            ));
        }
        Ok(Access {
            mode,
            names: names.iter().map(|n| n.to_ascii_lowercase()).collect(),
            shared_csrf: random_hex(16),
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        })
    }

    /// Whether a login (form, `?token=`) is what an unknown visitor gets.
    pub fn has_login(&self) -> bool {
        self.mode.token().is_some()
    }

    /// The token made at start, to print in the URL.
    pub fn made_token(&self) -> Option<&str> {
        match &self.mode {
            Mode::Made(t) => Some(t.expose_secret()),
            _ => None,
        }
    }

    /// Lets a request in, or says why not.
    pub fn admit(&self, peer: IpAddr, headers: &HeaderMap) -> Result<Visitor, Refusal> {
        if !matches!(self.mode, Mode::Token(_)) {
            let host = header(headers, HOST).unwrap_or_default();
            if !self.known_host(host) {
                return Err(Refusal::ForeignHost(host.to_string()));
            }
        }
        let token = match &self.mode {
            Mode::Header(name) => {
                return match header(headers, name.clone()).filter(|v| !v.is_empty()) {
                    Some(user) => Ok(Visitor {
                        user: user.chars().take(64).collect(),
                        csrf: self.shared_csrf.clone(),
                    }),
                    None => Err(Refusal::NoHeader(name.to_string())),
                };
            }
            Mode::Token(t) | Mode::Made(t) => t,
        };
        {
            let mut sessions = self.sessions.lock().expect("sessions");
            let now = Instant::now();
            // Every cookie of the name is tried: one planted by a sibling
            // name or a longer path does not hide the real one.
            for id in cookies(headers, COOKIE_NAME) {
                match sessions.get(id) {
                    Some(s) if s.until > now => {
                        return Ok(Visitor {
                            user: "token".into(),
                            csrf: s.csrf.clone(),
                        })
                    }
                    Some(_) => {
                        sessions.remove(id);
                    }
                    None => {}
                }
            }
        }
        // RFC 9110 §11.1: the scheme is case-insensitive.
        let bearer = header(headers, AUTHORIZATION)
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim());
        match bearer {
            Some(given) => {
                self.check_token(peer, token, given)?;
                // A script sends the token itself each time: the token is
                // its proof, no page involved.
                Ok(Visitor {
                    user: "token".into(),
                    csrf: String::new(),
                })
            }
            None => Err(Refusal::LoginNeeded),
        }
    }

    /// A login: the token, exchanged for a session id (the cookie's
    /// value). Errors: a wrong token, or too many from this address.
    pub fn login(&self, peer: IpAddr, given: &str) -> Result<String, Refusal> {
        let Some(token) = self.mode.token() else {
            return Err(Refusal::LoginNeeded);
        };
        self.check_token(peer, token, given)?;
        let id = random_hex(32);
        let mut sessions = self.sessions.lock().expect("sessions");
        let now = Instant::now();
        sessions.retain(|_, s| s.until > now);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.until)
                .map(|(k, _)| k.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            id.clone(),
            Session {
                csrf: random_hex(16),
                until: now + SESSION_TTL,
            },
        );
        Ok(id)
    }

    /// Ends the session a request carries.
    pub fn logout(&self, headers: &HeaderMap) {
        let mut sessions = self.sessions.lock().expect("sessions");
        for id in cookies(headers, COOKIE_NAME) {
            sessions.remove(id);
        }
    }

    /// The right token is always let in; a wrong one is a 401, or a 429
    /// past [`FAILURES_PER_MINUTE`] from its address.
    fn check_token(&self, peer: IpAddr, token: &SecretString, given: &str) -> Result<(), Refusal> {
        if same(token.expose_secret().as_bytes(), given.as_bytes()) {
            return Ok(());
        }
        let mut failures = self.failures.lock().expect("failures");
        let now = Instant::now();
        failures.retain(|_, (_, since)| now.duration_since(*since) < Duration::from_secs(60));
        if failures.len() >= MAX_SESSIONS {
            // A flood from many addresses: counted as one.
            failures.clear();
        }
        let count = &mut failures.entry(network(peer)).or_insert((0, now)).0;
        *count += 1;
        if *count > FAILURES_PER_MINUTE {
            return Err(Refusal::TooMany);
        }
        Err(Refusal::LoginNeeded)
    }

    /// Whether an action may be taken by `visitor`: the CSRF token it was
    /// given is sent back in `X-CSRF-Token` (unless it came with the token
    /// itself, as a script does), and an `Origin`, if any, is this host.
    pub fn action_allowed(visitor: &Visitor, headers: &HeaderMap) -> Result<(), String> {
        if !visitor.csrf.is_empty() {
            let sent = header(headers, "x-csrf-token").unwrap_or_default();
            if !same(sent.as_bytes(), visitor.csrf.as_bytes()) {
                return Err("missing or wrong X-CSRF-Token: actions are taken from the dashboard's own page (reload it: a restarted dashboard gives new tokens)".into());
            }
        }
        Access::same_origin(headers)
    }

    /// Whether a form or an action comes from the dashboard's own page: an
    /// `Origin`, when the browser sends one, is this `Host`.
    pub fn same_origin(headers: &HeaderMap) -> Result<(), String> {
        if let Some(origin) = header(headers, ORIGIN) {
            let host = header(headers, HOST).unwrap_or_default();
            let bare = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .unwrap_or(origin);
            if bare != host {
                return Err(format!(
                    "Origin {origin} is not this dashboard's ({host}): cross-site requests are refused"
                ));
            }
        }
        Ok(())
    }
}

fn header<K: hyper::header::AsHeaderName>(headers: &HeaderMap, name: K) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The values of cookie `name` in the request's `Cookie` headers.
fn cookies<'h>(headers: &'h HeaderMap, name: &'h str) -> impl Iterator<Item = &'h str> + 'h {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(move |(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// The address wrong tokens and connections are counted by: an IPv4
/// address (an IPv4 client of a `[::]` listener included), or an IPv6 /64
/// (what one host is usually given).
pub fn network(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

impl Access {
    /// A `Host` (with or without a port) no rebound page can send:
    /// `localhost`, an IP address (`127.0.0.1`, `[::1]`, `10.0.0.5`), or
    /// one of `--host`'s names.
    fn known_host(&self, host: &str) -> bool {
        let name = match host.strip_prefix('[') {
            Some(rest) => rest.split_once(']').map_or("", |(ip, _)| ip),
            None => host.rsplit_once(':').map_or(host, |(h, _)| h),
        };
        name.eq_ignore_ascii_case("localhost")
            || name.parse::<IpAddr>().is_ok()
            || (!name.is_empty() && self.names.iter().any(|n| n.eq_ignore_ascii_case(name)))
    }
}

/// Compares in time that does not depend on where the inputs differ
/// (an HMAC of each under a fresh key; ring has no bare `memcmp`).
fn same(a: &[u8], b: &[u8]) -> bool {
    let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
        .expect("system randomness");
    let tag = ring::hmac::sign(&key, a);
    ring::hmac::verify(&key, b, tag.as_ref()).is_ok()
}

/// `n` random bytes as lowercase hex.
fn random_hex(n: usize) -> String {
    use ring::rand::SecureRandom as _;
    let mut buf = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .expect("system randomness");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 9));

    #[test]
    fn a_made_token_is_for_loopback_and_its_host_must_be_one_no_rebound_page_can_send() {
        let open: SocketAddr = "0.0.0.0:7070".parse().unwrap();
        let refused = Access::new(Mode::made(), open, vec![])
            .err()
            .expect("refused");
        assert!(refused.contains("not a loopback address"), "{refused}");
        let a = Access::new(
            Mode::made(),
            "127.0.0.1:7070".parse().unwrap(),
            vec!["Ops.Example".into()],
        )
        .unwrap();
        let token = a.made_token().unwrap().to_string();
        assert_eq!(token.len(), 32);
        let bearer = format!("Bearer {token}");
        for ok in [
            "127.0.0.1:7070",
            "localhost:7070",
            "LOCALHOST",
            "[::1]:7070",
            "127.0.0.2",
            "ops.example:7070",
        ] {
            let h = headers(&[("host", ok), ("authorization", &bearer)]);
            assert!(a.admit(PEER, &h).is_ok(), "{ok}");
            // Another user of the machine, without the token, is not let in.
            assert_eq!(
                a.admit(PEER, &headers(&[("host", ok)])),
                Err(Refusal::LoginNeeded)
            );
        }
        for bad in [
            "evil.example:7070",
            "127.0.0.1.nip.io",
            "ops.example.evil",
            "[::1",
            "",
        ] {
            assert_eq!(
                a.admit(PEER, &headers(&[("host", bad), ("authorization", &bearer)])),
                Err(Refusal::ForeignHost(bad.into())),
                "{bad}"
            );
        }
        // The scheme is case-insensitive, and spaces around the token are not part of it.
        let h = headers(&[
            ("host", "localhost"),
            ("authorization", &format!("bearer  {token} ")),
        ]);
        assert!(a.admit(PEER, &h).is_ok());
    }

    #[test]
    fn a_token_login_gives_a_session_with_its_own_csrf_and_wrong_tokens_are_counted() {
        let a = Access::new(
            Mode::Token(SecretString::from("s3cret-token")),
            "0.0.0.0:7070".parse().unwrap(),
            vec![],
        )
        .unwrap();
        assert_eq!(a.admit(PEER, &headers(&[])), Err(Refusal::LoginNeeded));
        let id = a.login(PEER, "s3cret-token").unwrap();
        let cookie = format!("other=1; {COOKIE_NAME}={id}");
        let v = a.admit(PEER, &headers(&[("cookie", &cookie)])).unwrap();
        assert_eq!(v.csrf.len(), 32);
        let forged = format!("{COOKIE_NAME}={}", "0".repeat(64));
        assert_eq!(
            a.admit(PEER, &headers(&[("cookie", &forged)])),
            Err(Refusal::LoginNeeded)
        );
        // An action needs the session's CSRF token back.
        assert!(Access::action_allowed(&v, &headers(&[])).is_err());
        assert!(Access::action_allowed(&v, &headers(&[("x-csrf-token", "nope")])).is_err());
        assert!(Access::action_allowed(&v, &headers(&[("x-csrf-token", &v.csrf)])).is_ok());
        assert!(Access::action_allowed(
            &v,
            &headers(&[
                ("x-csrf-token", &v.csrf),
                ("host", "ops:7070"),
                ("origin", "http://evil.example")
            ])
        )
        .is_err());
        assert!(Access::action_allowed(
            &v,
            &headers(&[
                ("x-csrf-token", &v.csrf),
                ("host", "ops:7070"),
                ("origin", "https://ops:7070")
            ])
        )
        .is_ok());
        a.logout(&headers(&[("cookie", &cookie)]));
        assert_eq!(
            a.admit(PEER, &headers(&[("cookie", &cookie)])),
            Err(Refusal::LoginNeeded)
        );
        // A cookie of the same name planted before the real one hides nothing.
        let id = a.login(PEER, "s3cret-token").unwrap();
        let planted = format!("{COOKIE_NAME}=planted; {COOKIE_NAME}={id}");
        assert!(a.admit(PEER, &headers(&[("cookie", &planted)])).is_ok());
        // A script's bearer token works. Past five wrong ones a minute an
        // address (an IPv6 /64) gets 429s, yet the right token still works:
        // no one locks the real users out.
        assert!(a
            .admit(PEER, &headers(&[("authorization", "Bearer s3cret-token")]))
            .is_ok());
        for _ in 0..FAILURES_PER_MINUTE {
            assert_eq!(a.login(PEER, "guess"), Err(Refusal::LoginNeeded));
        }
        assert_eq!(a.login(PEER, "guess"), Err(Refusal::TooMany));
        assert!(a.login(PEER, "s3cret-token").is_ok());
        let v6 =
            |last: u16| IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, last));
        for i in 0..FAILURES_PER_MINUTE as u16 {
            assert_eq!(a.login(v6(i), "guess"), Err(Refusal::LoginNeeded));
        }
        assert_eq!(
            a.login(v6(999), "guess"),
            Err(Refusal::TooMany),
            "one /64 is one address"
        );
        // IPv4 clients of a `[::]` listener are told apart as IPv4 ones.
        let mapped = |d: u8| IpAddr::V6(std::net::Ipv4Addr::new(192, 0, 2, d).to_ipv6_mapped());
        assert_eq!(
            network(mapped(1)),
            IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1))
        );
        assert_ne!(network(mapped(1)), network(mapped(2)));
        assert_eq!(a.login(mapped(1), "guess"), Err(Refusal::LoginNeeded));
    }

    #[test]
    fn a_trusted_header_names_the_user_and_its_absence_is_refused() {
        let a = Access::new(
            Mode::Header(hyper::header::HeaderName::from_static("x-forwarded-user")),
            "10.0.0.1:7070".parse().unwrap(),
            vec![],
        )
        .unwrap();
        assert_eq!(
            a.admit(PEER, &headers(&[("host", "10.0.0.1:7070")])),
            Err(Refusal::NoHeader("x-forwarded-user".into()))
        );
        // A page rebound to the dashboard's address sends the header itself:
        // its Host, a name of the attacker's, gives it away.
        assert_eq!(
            a.admit(
                PEER,
                &headers(&[("host", "evil.example:7070"), ("x-forwarded-user", "alice")])
            ),
            Err(Refusal::ForeignHost("evil.example:7070".into()))
        );
        let v = a
            .admit(
                PEER,
                &headers(&[("host", "10.0.0.1:7070"), ("x-forwarded-user", "alice")]),
            )
            .unwrap();
        assert_eq!(v.user, "alice");
        assert!(
            !v.csrf.is_empty(),
            "a page behind the proxy still needs CSRF"
        );
    }
}
