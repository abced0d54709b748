//! The entries of cyan.yaml's `notify:`: each names one destination by its
//! kind, and optionally the events it gets.
//!
//! ```yaml
//! notify:
//!   - slack: { url: { env: SLACK_WEBHOOK_URL } }
//!   - discord: { url: { file: /etc/cyan/discord-url } }
//!   - teams: { url: { env: TEAMS_WORKFLOW_URL } }
//!   - webhook: { url: { env: HOOK_URL }, secret: { env: HOOK_SECRET } }
//!   - email:
//!       server: smtp.example.com:587
//!       tls: starttls          # starttls (default) | tls (implicit, port 465) | none
//!       username: deploy
//!       password: { env: SMTP_PASSWORD }
//!       from: cyan@example.com
//!       to: [team@example.com]
//!     events: [failed, awaiting_approval]   # on any entry; default: all
//! ```
//!
//! `events:` sits beside the kind's key, in the same mapping, so an entry
//! reads as one item. Everything that can be checked without a secret is
//! checked here, when the file is read: one kind per entry, no unknown key,
//! e-mail addresses that parse, no password over a plaintext connection to
//! another host.

use std::net::IpAddr;
use std::path::PathBuf;

use lettre::message::Mailbox;
use serde::{Deserialize, Serialize};

use super::EventKind;
use crate::config::SecretRef;

/// One `notify:` entry: where to send, and which events (`None`: all).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(try_from = "Entry", into = "Entry")]
pub struct Destination {
    pub kind: Kind,
    pub events: Option<Vec<EventKind>>,
}

/// Where notices go, and in which format.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A Slack incoming webhook: `text`, plus `blocks`.
    Slack(Chat),
    /// A Discord webhook: `content`, plus `embeds`.
    Discord(Chat),
    /// A Microsoft Teams Workflows webhook ("When a Teams webhook request is
    /// received"): an Adaptive Card in a `message`.
    Teams(Chat),
    /// Any receiver of JSON, signed as Standard Webhooks sign (`webhook`).
    Webhook(Webhook),
    /// Mail through an SMTP server.
    Email(Email),
}

/// A chat service's incoming-webhook URL, which is a credential.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Chat {
    pub url: SecretRef,
}

/// A generic JSON webhook.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    pub url: SecretRef,
    /// The signing secret: `whsec_` then base64 of 24 to 64 random bytes
    /// (`echo whsec_$(openssl rand -base64 32)`); the prefix is optional.
    pub secret: SecretRef,
    /// A PEM file of extra roots to trust, for a receiver under a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// Mail through an SMTP server (submission, RFC 6409).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Email {
    /// `host` or `host:port` (`[::1]:25` for IPv6); the port defaults to
    /// the `tls` mode's: 587, 465 or 25.
    pub server: SmtpServer,
    #[serde(default)]
    pub tls: SmtpTls,
    /// A PEM file of extra roots to trust, for a server under a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The AUTH user; with `password`, or neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretRef>,
    /// The sender: `cyan@example.com` or `Cyan <cyan@example.com>`.
    pub from: String,
    /// The recipients, at least one.
    pub to: Vec<String>,
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plaintext, then STARTTLS, required (RFC 3207): port 587.
    #[default]
    Starttls,
    /// TLS from the first byte (RFC 8314): port 465.
    Tls,
    /// Plaintext throughout: a relay on this host (port 25). With a
    /// password, only to a loopback address or `localhost`.
    None,
}

/// An SMTP server's host and, if given, port; written `host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct SmtpServer {
    /// A name or an IP address (IPv6 without brackets).
    pub host: String,
    pub port: Option<u16>,
}

impl Destination {
    /// Whether this destination gets `event`.
    pub fn wants(&self, event: EventKind) -> bool {
        self.events
            .as_ref()
            .is_none_or(|events| events.contains(&event))
    }

    /// Its name before any secret is read: the kind, and an SMTP server's
    /// address (which is no secret). Deliveries add the URL's host.
    pub fn name(&self) -> String {
        match &self.kind {
            Kind::Email(email) => {
                let server = SmtpServer {
                    port: Some(email.port()),
                    ..email.server.clone()
                };
                format!("email ({})", String::from(server))
            }
            kind => kind.key().to_string(),
        }
    }
}

impl Kind {
    /// Its key in cyan.yaml.
    pub fn key(&self) -> &'static str {
        match self {
            Kind::Slack(_) => "slack",
            Kind::Discord(_) => "discord",
            Kind::Teams(_) => "teams",
            Kind::Webhook(_) => "webhook",
            Kind::Email(_) => "email",
        }
    }
}

impl Email {
    /// The port: the one written, else the `tls` mode's (587, 465, 25).
    pub fn port(&self) -> u16 {
        self.server.port.unwrap_or(match self.tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        })
    }

    fn check(&self) -> Result<(), String> {
        self.from
            .parse::<Mailbox>()
            .map_err(|e| format!("email: from {:?} is not an address: {e}", self.from))?;
        if self.to.is_empty() {
            return Err("email: `to` names no recipient".into());
        }
        for to in &self.to {
            to.parse::<Mailbox>()
                .map_err(|e| format!("email: to {to:?} is not an address: {e}"))?;
        }
        match (&self.username, &self.password) {
            (Some(_), None) => return Err("email: `username` needs a `password`".into()),
            (None, Some(_)) => return Err("email: `password` needs a `username`".into()),
            _ => {}
        }
        if self.tls == SmtpTls::None && self.password.is_some() && !is_loopback(&self.server.host) {
            return Err(format!(
                "email: `tls: none` would send the password in plaintext to {}; \
                 use `tls: starttls` or `tls: tls` (plaintext is for a relay on this host)",
                self.server.host
            ));
        }
        Ok(())
    }
}

/// Whether `host` is this host: `localhost` or a loopback address.
pub(super) fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl TryFrom<String> for SmtpServer {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let bad = || format!("email: server {text:?} is not `host` or `host:port`");
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(bad)?;
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':').ok_or_else(bad)?)),
            }
        } else if text.matches(':').count() > 1 {
            (text.as_str(), None) // a bare IPv6 address
        } else {
            match text.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (text.as_str(), None),
            }
        };
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(bad());
        }
        let port = match port {
            Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?),
            None => None,
        };
        Ok(SmtpServer {
            host: host.to_string(),
            port,
        })
    }
}

impl From<SmtpServer> for String {
    fn from(server: SmtpServer) -> String {
        let host = if server.host.contains(':') {
            format!("[{}]", server.host)
        } else {
            server.host
        };
        match server.port {
            Some(port) => format!("{host}:{port}"),
            None => host,
        }
    }
}

/// An entry as written: every kind's key optional, exactly one required.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    slack: Option<Chat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    discord: Option<Chat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    teams: Option<Chat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    webhook: Option<Webhook>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email: Option<Email>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    events: Option<Vec<EventKind>>,
}

impl TryFrom<Entry> for Destination {
    type Error = String;
    fn try_from(entry: Entry) -> Result<Self, String> {
        let mut kinds: Vec<Kind> = [
            entry.slack.map(Kind::Slack),
            entry.discord.map(Kind::Discord),
            entry.teams.map(Kind::Teams),
            entry.webhook.map(Kind::Webhook),
            entry.email.map(Kind::Email),
        ]
        .into_iter()
        .flatten()
        .collect();
        let kind = match kinds.len() {
            1 => kinds.remove(0),
            0 => {
                return Err("a notify entry names no destination: \
                     one of slack, discord, teams, webhook, email"
                    .into())
            }
            _ => {
                let keys: Vec<&str> = kinds.iter().map(Kind::key).collect();
                return Err(format!(
                    "a notify entry names one destination, this one names {}: \
                     make one entry each",
                    keys.join(" and ")
                ));
            }
        };
        if let Kind::Email(email) = &kind {
            email.check()?;
        }
        if entry.events.as_ref().is_some_and(Vec::is_empty) {
            return Err(format!(
                "the {} entry's `events: []` gets nothing: remove the entry, \
                 or leave `events` out for all events",
                kind.key()
            ));
        }
        Ok(Destination {
            kind,
            events: entry.events,
        })
    }
}

impl From<Destination> for Entry {
    fn from(destination: Destination) -> Entry {
        let mut entry = Entry {
            slack: None,
            discord: None,
            teams: None,
            webhook: None,
            email: None,
            events: destination.events,
        };
        match destination.kind {
            Kind::Slack(chat) => entry.slack = Some(chat),
            Kind::Discord(chat) => entry.discord = Some(chat),
            Kind::Teams(chat) => entry.teams = Some(chat),
            Kind::Webhook(webhook) => entry.webhook = Some(webhook),
            Kind::Email(email) => entry.email = Some(email),
        }
        entry
    }
}
