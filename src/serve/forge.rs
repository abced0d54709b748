//! One webhook delivery from a git forge: which forge sent it, whether it
//! is signed with our secret, and what it says (a push, a ping, something
//! else). Pure: headers and body in, a [`Delivery`] or a refusal out;
//! `cyan serve` owns the sockets.
//!
//! Each forge is checked exactly as its own documentation (or, where the
//! documentation is silent, its source) says:
//!
//! | forge | secret check | over | event | delivery id |
//! |---|---|---|---|---|
//! | GitHub | `X-Hub-Signature-256: sha256=<hex>` | the raw body, form or JSON | `X-GitHub-Event` | `X-GitHub-Delivery` |
//! | Gitea, Forgejo | `X-Gitea-Signature` / `X-Forgejo-Signature`: bare hex | the JSON, inside `payload=` for a form | `X-Gitea-Event` / `X-Forgejo-Event` | `X-Gitea-Delivery` / `X-Forgejo-Delivery` |
//! | Gogs | `X-Gogs-Signature`: bare hex | the JSON, inside `payload=` for a form | `X-Gogs-Event` | `X-Gogs-Delivery` |
//! | GitLab | `X-Gitlab-Token`: the secret itself | — | `X-Gitlab-Event` | `Idempotency-Key`, else `X-Gitlab-Event-UUID` |
//! | Bitbucket Cloud and Data Center | `X-Hub-Signature: sha256=<hex>` | the raw body | `X-Event-Key` | `X-Request-UUID` (Cloud) / `X-Request-Id` (Data Center) |
//!
//! Every signature is HMAC-SHA256 keyed with the secret, checked in
//! constant time (`ring::hmac::verify`); GitLab's token is compared as the
//! HMACs of both under the secret, so in constant time and whatever its
//! length.
//!
//! Gitea, Forgejo and Gogs also send GitHub's headers (`X-GitHub-Event`,
//! and for Gitea `X-Hub-Signature-256`, over the JSON even for a form, where
//! GitHub signs the form), and Gitea sends Gogs's: [`identify`] tries the
//! most specific headers first, so a delivery is checked the way its sender
//! signed it.
//!
//! Sources: GitHub <https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries>,
//! <https://docs.github.com/en/webhooks/webhook-events-and-payloads#delivery-headers>
//! ("the HMAC hex digest of the request body"), and the content types in
//! <https://docs.github.com/en/webhooks/using-webhooks/creating-webhooks>
//! ("a form parameter called `payload`"). Gitea <https://docs.gitea.com/usage/webhooks>
//! and its `services/webhook/deliver.go`, Forgejo <https://forgejo.org/docs/latest/user/webhooks/>
//! and its `services/webhook/shared/payloader.go` (`AddDefaultHeaders` signs
//! the payload content, not the form). Gogs <https://gogs.io/docs/features/webhook>
//! and its `internal/database/webhook.go` (the signature is of the JSON
//! payload, the form carries it as `payload`). GitLab
//! <https://docs.gitlab.com/user/project/integrations/webhooks/#delivery-headers>
//! and <https://docs.gitlab.com/user/project/integrations/webhook_events/#push-events>.
//! Bitbucket Cloud <https://support.atlassian.com/bitbucket-cloud/docs/event-payloads/>
//! and <https://support.atlassian.com/bitbucket-cloud/docs/manage-webhooks/>;
//! Bitbucket Data Center <https://confluence.atlassian.com/bitbucketserver/event-payload-938025882.html>.
//!
//! Input is hostile until verified, and parsing must hold after that too:
//! nothing here panics or allocates beyond a small multiple of the body
//! (serde_json's recursion limit bounds the nesting); a payload of the wrong
//! shape is an [`Unreadable`], never a default.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use hyper::http::HeaderMap;
use ring::{digest, hmac};
use serde::{Deserialize, Serialize};

/// The git forges whose webhooks cyan reads. Written in lowercase
/// (`github`, `gitea`, `gogs`, `gitlab`, `bitbucket`); `forgejo` reads as
/// `gitea`, whose webhooks Forgejo's are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Forge {
    GitHub,
    /// Gitea and Forgejo.
    #[serde(alias = "forgejo")]
    Gitea,
    Gogs,
    GitLab,
    /// Bitbucket Cloud and Bitbucket Data Center (Server).
    Bitbucket,
}

impl Forge {
    /// Every forge, in the order of their names above.
    pub const ALL: [Forge; 5] = [
        Forge::GitHub,
        Forge::Gitea,
        Forge::Gogs,
        Forge::GitLab,
        Forge::Bitbucket,
    ];

    /// The forge's name as written in cyan.yaml.
    pub fn as_str(self) -> &'static str {
        match self {
            Forge::GitHub => "github",
            Forge::Gitea => "gitea",
            Forge::Gogs => "gogs",
            Forge::GitLab => "gitlab",
            Forge::Bitbucket => "bitbucket",
        }
    }
}

impl fmt::Display for Forge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Forge {
    type Err = String;
    fn from_str(s: &str) -> Result<Forge, String> {
        match s {
            "forgejo" => Ok(Forge::Gitea),
            _ => Forge::ALL
                .into_iter()
                .find(|f| f.as_str() == s)
                .ok_or_else(|| {
                    format!("unknown forge {s:?}: github, gitea (or forgejo), gogs, gitlab or bitbucket")
                }),
        }
    }
}

/// Which forge sent a delivery, by the event header only that forge sends.
/// `None` when there is none of them: not a webhook cyan reads.
///
/// The most specific first: Forgejo also sends Gitea's, Gogs's and
/// GitHub's headers, Gitea Gogs's and GitHub's, Gogs GitHub's.
pub fn identify(headers: &HeaderMap) -> Option<Forge> {
    let has = |name: &str| headers.contains_key(name);
    if has("x-forgejo-event") || has("x-gitea-event") {
        Some(Forge::Gitea)
    } else if has("x-gogs-event") {
        Some(Forge::Gogs)
    } else if has("x-github-event") {
        Some(Forge::GitHub)
    } else if has("x-gitlab-event") {
        Some(Forge::GitLab)
    } else if has("x-event-key") {
        Some(Forge::Bitbucket)
    } else {
        None
    }
}

/// Why a delivery is not taken as the forge's: for a 401 or 403. Its text
/// names headers, never a header's value, the body or the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The secret to check against is empty (a forgeable HMAC key).
    #[error("no secret to check the delivery against")]
    NoSecret,
    /// The header that carries the signature or token is absent or empty
    /// (a forge sends an empty one when its webhook has no secret).
    #[error("the delivery has no {header} header: set the webhook's secret on the forge")]
    Missing { header: &'static str },
    /// The header is there but not of its documented form.
    #[error("the {header} header is malformed: {expected}")]
    Malformed {
        header: &'static str,
        expected: &'static str,
    },
    /// A form whose signature covers its `payload` field, with none.
    #[error("the delivery is a form with no payload field, which is what its signature covers")]
    NoPayload,
    /// Well formed, but not made with the configured secret.
    #[error(
        "the {header} header does not match: the delivery is not signed with the configured secret"
    )]
    Mismatch { header: &'static str },
}

/// Checks that a delivery comes from a forge that holds `secret`, as
/// [`Forge`]'s own documentation says (this module's table). `body` is the
/// request body exactly as received.
///
/// Errors: a [`Refusal`] naming the header and what is wrong with it.
pub fn verify(
    forge: Forge,
    headers: &HeaderMap,
    body: &[u8],
    secret: &[u8],
) -> Result<(), Refusal> {
    if secret.is_empty() {
        return Err(Refusal::NoSecret);
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    match forge {
        Forge::GitHub => {
            let header = "X-Hub-Signature-256";
            let tag = hex_signature(headers.get(header), header, Some("sha256="))?;
            matches(&key, body, &tag, header)
        }
        Forge::Gitea => {
            let (header, value) = match headers.get("x-gitea-signature") {
                Some(v) if !v.is_empty() => ("X-Gitea-Signature", Some(v)),
                _ => ("X-Forgejo-Signature", headers.get("x-forgejo-signature")),
            };
            let tag = hex_signature(value, header, None).map_err(|e| match e {
                Refusal::Missing { .. } => Refusal::Missing {
                    header: "X-Gitea-Signature or X-Forgejo-Signature",
                },
                e => e,
            })?;
            let signed = payload_json(headers, body).ok_or(Refusal::NoPayload)?;
            matches(&key, &signed, &tag, header)
        }
        Forge::Gogs => {
            let header = "X-Gogs-Signature";
            let tag = hex_signature(headers.get(header), header, None)?;
            let signed = payload_json(headers, body).ok_or(Refusal::NoPayload)?;
            matches(&key, &signed, &tag, header)
        }
        Forge::GitLab => {
            let header = "X-Gitlab-Token";
            let token = match headers.get(header) {
                Some(v) if !v.is_empty() => v.as_bytes(),
                _ => return Err(Refusal::Missing { header }),
            };
            // The HMAC of the secret under itself, checked against the
            // token's: a constant-time compare that hides the length too.
            matches(&key, token, hmac::sign(&key, secret).as_ref(), header)
        }
        Forge::Bitbucket => {
            let header = "X-Hub-Signature";
            let tag = hex_signature(headers.get(header), header, Some("sha256="))?;
            matches(&key, body, &tag, header)
        }
    }
}

fn matches(key: &hmac::Key, data: &[u8], tag: &[u8], header: &'static str) -> Result<(), Refusal> {
    hmac::verify(key, data, tag).map_err(|_| Refusal::Mismatch { header })
}

/// A signature header's 32 bytes: `prefix` then 64 hex digits (either case).
fn hex_signature(
    value: Option<&hyper::http::HeaderValue>,
    header: &'static str,
    prefix: Option<&'static str>,
) -> Result<[u8; 32], Refusal> {
    let value = match value {
        Some(v) if !v.is_empty() => v.as_bytes(),
        _ => return Err(Refusal::Missing { header }),
    };
    let expected = match prefix {
        Some(_) => "sha256= and 64 hex digits",
        None => "64 hex digits",
    };
    let malformed = Refusal::Malformed { header, expected };
    let digits = match prefix {
        Some(p) => value.strip_prefix(p.as_bytes()).ok_or(malformed.clone())?,
        None => value,
    };
    if digits.len() != 64 {
        return Err(malformed);
    }
    let mut tag = [0u8; 32];
    for (byte, pair) in tag.iter_mut().zip(digits.chunks_exact(2)) {
        match (hex_digit(pair[0]), hex_digit(pair[1])) {
            (Some(hi), Some(lo)) => *byte = hi << 4 | lo,
            _ => return Err(malformed),
        }
    }
    Ok(tag)
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// One delivery, as cyan reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub forge: Forge,
    /// The forge's id for the delivery, to log and to drop a redelivery
    /// by: the first of the forge's delivery headers (this module's table)
    /// that holds 1 to 128 of `A-Z a-z 0-9 - _ . : { }`; else, for a forge
    /// or a version that sends none, `sha256:` and the body's SHA-256 in hex
    /// (the same on a redelivery, as the body is).
    pub id: String,
    pub event: Event,
    /// The repository the delivery is about: always there for a push (one
    /// without is unreadable); `None` for a ping or another event that
    /// names none (an organization's hook, a GitLab system hook).
    pub repo: Option<Repo>,
}

/// A repository as the delivery names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Repo {
    /// `owner/name` (GitHub, Gitea, Gogs, Bitbucket Cloud), GitLab's
    /// `path_with_namespace` (`group/subgroup/name`), Bitbucket Data
    /// Center's `PROJECT/slug`; as the forge spells it.
    pub full_name: String,
    /// The URLs the forge gives to clone it: HTTPS first, then SSH, those
    /// the payload has. Bitbucket Cloud's payload has none, so its web
    /// URL plus `.git`, which is its HTTPS clone URL.
    pub clone_urls: Vec<String>,
}

/// What a delivery says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    /// The forge checking that the hook reaches us (GitHub's `ping`,
    /// Bitbucket Data Center's `diagnostics:ping`). Gitea, Gogs and GitLab
    /// test a hook with a push.
    Ping,
    /// Refs that changed, one [`Push`] each, in the forge's order: one for
    /// every forge but Bitbucket, which sends each ref of a `git push` in
    /// one delivery (none when all its changes are of other kinds).
    Push(Vec<Push>),
    /// Any other event, by the forge's name for it (`issues`,
    /// `Merge Request Hook`, `pr:opened`, …).
    Other(String),
}

/// One ref that a push changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Push {
    /// The full ref: `refs/heads/main`, `refs/tags/v1`.
    pub git_ref: String,
    /// The ref's object before: forty zeros (sixty-four in a SHA-256
    /// repository) when the push created it; empty when the forge does not
    /// say (a Gitea, Forgejo or Gogs `delete` event).
    pub before: String,
    /// The ref's object after: forty (or sixty-four) zeros when the push
    /// deleted it. As the forge sends it, not checked: an annotated tag's
    /// is the tag object, whose commit is `<after>^{commit}`.
    pub after: String,
    /// The push deleted the ref (GitHub's `deleted`, Bitbucket Cloud's
    /// `closed`, Bitbucket Data Center's `DELETE`, a `delete` event, or
    /// `after` all zeros).
    pub deleted: bool,
    /// The push created the ref (GitHub's `created`, Bitbucket's
    /// `created` / `ADD`, or `before` all zeros).
    pub created: bool,
}

/// A delivery that passed [`identify`] but cannot be read: for a 400. The
/// reason is cyan's, with at most a bounded excerpt of the parser's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable {forge} delivery: {reason}")]
pub struct Unreadable {
    pub forge: Forge,
    pub reason: String,
}

/// Reads a delivery of `forge` (after [`verify`]: nothing here checks
/// where it comes from). `body` is the request body as received, JSON or,
/// for GitHub, Gitea and Gogs, a form whose `payload` field is the JSON
/// (`Content-Type: application/x-www-form-urlencoded`).
///
/// Errors ([`Unreadable`]): no event header, or one that is not a short
/// name; a form without `payload`; a push or delete payload that is not
/// JSON or lacks what this module reads (ref, commits, repository). Other
/// events are not read beyond their repository, which may be absent.
pub fn parse(forge: Forge, headers: &HeaderMap, body: &[u8]) -> Result<Delivery, Unreadable> {
    let unreadable = |reason: String| Unreadable { forge, reason };
    let id = delivery_id(forge, headers, body);
    let event_header: &[&'static str] = match forge {
        Forge::GitHub => &["X-GitHub-Event"],
        Forge::Gitea => &["X-Gitea-Event", "X-Forgejo-Event"],
        Forge::Gogs => &["X-Gogs-Event"],
        Forge::GitLab => &["X-Gitlab-Event"],
        Forge::Bitbucket => &["X-Event-Key"],
    };
    let name = event_name(headers, event_header).map_err(unreadable)?;
    let json = match forge {
        Forge::GitHub | Forge::Gitea | Forge::Gogs => payload_json(headers, body)
            .ok_or_else(|| unreadable("the delivery is a form with no payload field".into()))?,
        Forge::GitLab | Forge::Bitbucket => Cow::Borrowed(body),
    };
    let (event, repo) = match (forge, name.as_str()) {
        (Forge::GitHub | Forge::Gitea | Forge::Gogs, "push") => {
            let p: HubPush = read(&json).map_err(unreadable)?;
            (
                Event::Push(vec![push(
                    p.git_ref, p.before, p.after, p.created, p.deleted,
                )]),
                Some(p.repository.into()),
            )
        }
        (Forge::GitHub, "ping") => (Event::Ping, hub_repo(&json)),
        (Forge::Gitea | Forge::Gogs, "delete") => {
            let d: HubDelete = read(&json).map_err(unreadable)?;
            (
                Event::Push(vec![d.push().map_err(unreadable)?]),
                Some(d.repository.into()),
            )
        }
        (Forge::GitHub | Forge::Gitea | Forge::Gogs, _) => (Event::Other(name), hub_repo(&json)),
        (Forge::GitLab, "Push Hook" | "Tag Push Hook") => gitlab_push(&json).map_err(unreadable)?,
        (Forge::GitLab, "System Hook") if gitlab_system_push(&json) => {
            gitlab_push(&json).map_err(unreadable)?
        }
        (Forge::GitLab, _) => (Event::Other(name), gitlab_repo(&json)),
        (Forge::Bitbucket, "repo:push") => {
            let p: CloudPush = read(&json).map_err(unreadable)?;
            let repo = p.repository.into();
            let pushes = p.push.changes.into_iter().map(CloudChange::push);
            let pushes = pushes.collect::<Result<_, _>>().map_err(unreadable)?;
            (Event::Push(pushes), Some(repo))
        }
        (Forge::Bitbucket, "repo:refs_changed") => {
            let p: ServerPush = read(&json).map_err(unreadable)?;
            let repo = p.repository.into();
            let pushes = p.changes.into_iter().map(ServerChange::push);
            let pushes = pushes.collect::<Result<_, _>>().map_err(unreadable)?;
            (Event::Push(pushes), Some(repo))
        }
        (Forge::Bitbucket, "diagnostics:ping") => (Event::Ping, None),
        (Forge::Bitbucket, _) => (Event::Other(name), bitbucket_repo(&json)),
    };
    Ok(Delivery {
        forge,
        id,
        event,
        repo,
    })
}

/// The event header's value: 1 to 64 of letters, digits, space and
/// `_ - . :` (GitLab's `Push Hook`, Bitbucket's `repo:push`).
fn event_name(headers: &HeaderMap, names: &[&'static str]) -> Result<String, String> {
    let value = names
        .iter()
        .find_map(|n| headers.get(*n))
        .ok_or_else(|| format!("no {} header", names.join(" or ")))?;
    let ok = (1..=64).contains(&value.len())
        && value
            .as_bytes()
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b" _-.:".contains(c));
    match value.to_str() {
        Ok(s) if ok => Ok(s.to_string()),
        _ => Err(format!(
            "the {} header is not an event name (1 to 64 letters, digits, spaces, '_', '-', '.', ':')",
            names[0]
        )),
    }
}

fn delivery_id(forge: Forge, headers: &HeaderMap, body: &[u8]) -> String {
    let names: &[&str] = match forge {
        Forge::GitHub => &["x-github-delivery"],
        Forge::Gitea => &["x-gitea-delivery", "x-forgejo-delivery"],
        Forge::Gogs => &["x-gogs-delivery"],
        // `Idempotency-Key` stays the same across GitLab's retries (GitLab
        // 17.4 and later); `X-Gitlab-Event-UUID` is older.
        Forge::GitLab => &["idempotency-key", "x-gitlab-event-uuid"],
        // Not `X-Hook-UUID`: that names the hook, the same on every delivery.
        Forge::Bitbucket => &["x-request-uuid", "x-request-id"],
    };
    let usable = |v: &&hyper::http::HeaderValue| {
        (1..=128).contains(&v.len())
            && v.as_bytes()
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.:{}".contains(c))
    };
    match names.iter().filter_map(|n| headers.get(*n)).find(usable) {
        Some(v) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
        None => format!(
            "sha256:{}",
            hex(digest::digest(&digest::SHA256, body).as_ref())
        ),
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The JSON a delivery carries: the body, or for a form
/// (`application/x-www-form-urlencoded`) its first `payload` field, decoded
/// as the WHATWG URL standard's form parser does (`+` is a space, `%XX` a
/// byte, a stray `%` itself). `None` for a form without `payload`.
fn payload_json<'b>(headers: &HeaderMap, body: &'b [u8]) -> Option<Cow<'b, [u8]>> {
    let is_form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| {
            t.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Some(Cow::Borrowed(body));
    }
    body.split(|&c| c == b'&').find_map(|pair| {
        let (name, value) = match pair.iter().position(|&c| c == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        (form_decode(name) == b"payload").then(|| Cow::Owned(form_decode(value)))
    })
}

fn form_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                s.get(i + 1).copied().and_then(hex_digit),
                s.get(i + 2).copied().and_then(hex_digit),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// Deserializes a payload, with a bounded reason when it does not fit.
fn read<'a, T: Deserialize<'a>>(json: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(json).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => "has the wrong shape",
            serde_json::error::Category::Eof => "ends too soon",
            _ => "is not JSON",
        };
        let said: String = e.to_string().chars().take(160).collect();
        format!("the payload {what} ({said})")
    })
}

fn is_zero(hash: &str) -> bool {
    !hash.is_empty() && hash.bytes().all(|c| c == b'0')
}

/// A push from its ref and objects; the flags, when the forge does not
/// send them, from the all-zeros object name.
fn push(
    git_ref: String,
    before: String,
    after: String,
    created: Option<bool>,
    deleted: Option<bool>,
) -> Push {
    Push {
        created: created.unwrap_or_else(|| is_zero(&before)),
        deleted: deleted.unwrap_or_else(|| is_zero(&after)),
        git_ref,
        before,
        after,
    }
}

/// The zeros of an object name as long as `like` (40 by default).
fn zeros(like: &str) -> String {
    "0".repeat(if like.len() == 64 { 64 } else { 40 })
}

// GitHub, Gitea, Forgejo and Gogs: one payload shape for a push.
// https://docs.github.com/en/webhooks/webhook-events-and-payloads#push

#[derive(Deserialize)]
struct HubPush {
    #[serde(rename = "ref")]
    git_ref: String,
    before: String,
    after: String,
    created: Option<bool>,
    deleted: Option<bool>,
    repository: HubRepo,
}

#[derive(Deserialize)]
struct HubRepo {
    full_name: String,
    clone_url: Option<String>,
    ssh_url: Option<String>,
}

impl From<HubRepo> for Repo {
    fn from(r: HubRepo) -> Repo {
        Repo {
            full_name: r.full_name,
            clone_urls: r.clone_url.into_iter().chain(r.ssh_url).collect(),
        }
    }
}

/// Gitea, Forgejo and Gogs tell a deleted branch with a `delete` event
/// (and no push); its `ref` is the short name (Forgejo's own hook type:
/// the full one).
#[derive(Deserialize)]
struct HubDelete {
    #[serde(rename = "ref")]
    git_ref: String,
    ref_type: String,
    repository: HubRepo,
}

impl HubDelete {
    fn push(&self) -> Result<Push, String> {
        let prefix = match self.ref_type.as_str() {
            "branch" => "refs/heads/",
            "tag" => "refs/tags/",
            other => {
                let other: String = other.chars().take(32).collect();
                return Err(format!(
                    "a delete event of ref_type {other:?} (want branch or tag)"
                ));
            }
        };
        let git_ref = if self.git_ref.starts_with("refs/") {
            self.git_ref.clone()
        } else {
            format!("{prefix}{}", self.git_ref)
        };
        Ok(Push {
            git_ref,
            before: String::new(),
            after: zeros(""),
            deleted: true,
            created: false,
        })
    }
}

#[derive(Deserialize)]
struct MaybeHubRepo {
    repository: Option<HubRepo>,
}

fn hub_repo(json: &[u8]) -> Option<Repo> {
    read::<MaybeHubRepo>(json).ok()?.repository.map(Repo::from)
}

// GitLab: https://docs.gitlab.com/user/project/integrations/webhook_events/#push-events

#[derive(Deserialize)]
struct LabPush {
    #[serde(rename = "ref")]
    git_ref: String,
    before: String,
    after: String,
    project: LabProject,
}

#[derive(Deserialize)]
struct LabProject {
    path_with_namespace: String,
    git_http_url: Option<String>,
    git_ssh_url: Option<String>,
}

impl From<LabProject> for Repo {
    fn from(p: LabProject) -> Repo {
        Repo {
            full_name: p.path_with_namespace,
            clone_urls: p.git_http_url.into_iter().chain(p.git_ssh_url).collect(),
        }
    }
}

fn gitlab_push(json: &[u8]) -> Result<(Event, Option<Repo>), String> {
    let p: LabPush = read(json)?;
    Ok((
        Event::Push(vec![push(p.git_ref, p.before, p.after, None, None)]),
        Some(p.project.into()),
    ))
}

/// A system hook's push or tag push has the project hook's shape, named by
/// `event_name` (<https://docs.gitlab.com/administration/system_hooks/>).
fn gitlab_system_push(json: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Named {
        event_name: Option<String>,
    }
    read::<Named>(json)
        .ok()
        .and_then(|n| n.event_name)
        .is_some_and(|n| n == "push" || n == "tag_push")
}

fn gitlab_repo(json: &[u8]) -> Option<Repo> {
    #[derive(Deserialize)]
    struct Maybe {
        project: Option<LabProject>,
    }
    read::<Maybe>(json).ok()?.project.map(Repo::from)
}

// Bitbucket Cloud: https://support.atlassian.com/bitbucket-cloud/docs/event-payloads/#Push

#[derive(Deserialize)]
struct CloudPush {
    push: CloudChanges,
    repository: CloudRepo,
}

#[derive(Deserialize)]
struct CloudChanges {
    changes: Vec<CloudChange>,
}

/// `new` is null when the push deleted the ref (`closed`), `old` when it
/// created it (`created`).
#[derive(Deserialize)]
struct CloudChange {
    new: Option<CloudRef>,
    old: Option<CloudRef>,
}

#[derive(Deserialize)]
struct CloudRef {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    target: CloudTarget,
}

#[derive(Deserialize)]
struct CloudTarget {
    hash: String,
}

impl CloudChange {
    fn push(self) -> Result<Push, String> {
        let named = self
            .new
            .as_ref()
            .or(self.old.as_ref())
            .ok_or("a change with neither new nor old")?;
        let prefix = match named.kind.as_str() {
            "branch" => "refs/heads/",
            "tag" => "refs/tags/",
            other => {
                let other: String = other.chars().take(32).collect();
                return Err(format!("a change of type {other:?} (want branch or tag)"));
            }
        };
        let git_ref = format!("{prefix}{}", named.name);
        let hash = |r: &Option<CloudRef>, other: &Option<CloudRef>| match (r, other) {
            (Some(r), _) => r.target.hash.clone(),
            (None, Some(o)) => zeros(&o.target.hash),
            (None, None) => zeros(""),
        };
        Ok(Push {
            before: hash(&self.old, &self.new),
            after: hash(&self.new, &self.old),
            deleted: self.new.is_none(),
            created: self.old.is_none(),
            git_ref,
        })
    }
}

#[derive(Deserialize)]
struct CloudRepo {
    full_name: String,
    links: Option<CloudLinks>,
}

#[derive(Deserialize)]
struct CloudLinks {
    html: Option<Href>,
}

#[derive(Deserialize)]
struct Href {
    href: String,
}

impl From<CloudRepo> for Repo {
    fn from(r: CloudRepo) -> Repo {
        let web = r.links.and_then(|l| l.html).map(|h| h.href);
        Repo {
            full_name: r.full_name,
            clone_urls: web
                .filter(|w| w.starts_with("https://"))
                .map(|w| format!("{}.git", w.trim_end_matches('/')))
                .into_iter()
                .collect(),
        }
    }
}

// Bitbucket Data Center: https://confluence.atlassian.com/bitbucketserver/event-payload-938025882.html#Eventpayload-Push

#[derive(Deserialize)]
struct ServerPush {
    repository: ServerRepo,
    changes: Vec<ServerChange>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServerChange {
    #[serde(rename = "ref")]
    git_ref: ServerRef,
    from_hash: String,
    to_hash: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct ServerRef {
    id: String,
}

impl ServerChange {
    fn push(self) -> Result<Push, String> {
        let (created, deleted) = match self.kind.as_str() {
            "ADD" => (true, false),
            "UPDATE" => (false, false),
            "DELETE" => (false, true),
            other => {
                let other: String = other.chars().take(32).collect();
                return Err(format!(
                    "a change of type {other:?} (want ADD, UPDATE or DELETE)"
                ));
            }
        };
        Ok(Push {
            git_ref: self.git_ref.id,
            before: self.from_hash,
            after: self.to_hash,
            deleted,
            created,
        })
    }
}

#[derive(Deserialize)]
struct ServerRepo {
    slug: String,
    project: ServerProject,
    links: Option<ServerLinks>,
}

#[derive(Deserialize)]
struct ServerProject {
    key: String,
}

#[derive(Deserialize)]
struct ServerLinks {
    #[serde(default)]
    clone: Vec<ServerLink>,
}

#[derive(Deserialize)]
struct ServerLink {
    href: String,
    name: Option<String>,
}

impl From<ServerRepo> for Repo {
    fn from(r: ServerRepo) -> Repo {
        let mut links = r.links.map(|l| l.clone).unwrap_or_default();
        // HTTPS ("http") before SSH, as for the other forges.
        links.sort_by_key(|l| l.name.as_deref() != Some("http"));
        Repo {
            full_name: format!("{}/{}", r.project.key, r.slug),
            clone_urls: links.into_iter().map(|l| l.href).collect(),
        }
    }
}

fn bitbucket_repo(json: &[u8]) -> Option<Repo> {
    #[derive(Deserialize)]
    struct Maybe {
        repository: Option<serde_json::Value>,
    }
    let repo = read::<Maybe>(json).ok()?.repository?;
    serde_json::from_value::<CloudRepo>(repo.clone())
        .map(Repo::from)
        .or_else(|_| serde_json::from_value::<ServerRepo>(repo).map(Repo::from))
        .ok()
}

#[cfg(test)]
mod tests;
