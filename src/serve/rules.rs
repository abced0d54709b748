//! Which push deploys what: the `serve:` section of cyan.yaml, and the
//! decision for one verified delivery. Pure: a [`Delivery`] in, what to do
//! out; `cyan serve` fetches, deploys and answers the forge.
//!
//! ```yaml
//! serve:
//!   repo: acme/web                  # the repository whose pushes deploy (any case)
//!   source: /srv/git/web.git        # where to fetch the pushed commit: clone URL or path
//!   credentials: { file: /etc/cyan/git-token }  # optional: token for HTTP(S) fetches
//!   secret: { env: HOOK_SECRET }    # the webhooks' secret; a rule may have its own
//!   forges: [github, gitea]         # optional: the forges taken (default: all)
//!   rules:                          # the first rule that matches the ref wins
//!     - branch: main                # glob over the branch name (refs/heads/ dropped)
//!       deploy: staging             # an environment of the app
//!       then: production            # optional: promote there once the deploy is verified
//!     - tag: "v*"                   # glob over the tag name (refs/tags/ dropped)
//!       deploy: production
//!       version: tag                # the tag is the version; `commit` (default): its first 12 hex
//!     - branch: "feature/*"
//!       deploy: staging
//!       preview: true               # each branch its own preview of staging, removed with the branch
//! ```
//!
//! Globs are `globset`'s with `/` kept literal, as in GitHub Actions'
//! branch filters: `feature/*` matches `feature/a`, not `feature/a/b`;
//! `feature/**` matches both.

use std::fmt;

use globset::{GlobBuilder, GlobMatcher};
use ring::digest;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

use super::forge::{hex, Delivery, Event, Forge, Push};
use crate::config::{Name, SecretRef};
use crate::release::validate_version;

/// `serve:`: what `cyan serve` deploys, from which pushes.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// The repository whose pushes deploy, as the forge names it
    /// (`owner/name`, GitLab's `group/subgroup/name`); compared without
    /// regard to case.
    pub repo: RepoName,
    /// Where the pushed commit is fetched from: a clone URL or a local path.
    pub source: Source,
    /// A token for fetching `source` over HTTP(S).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<SecretRef>,
    /// The webhooks' signing secret (GitLab's token), for every rule that
    /// has none of its own.
    pub secret: SecretRef,
    /// The forges whose deliveries are taken; `None` (the key left out):
    /// all. Not consulted by [`ServeConfig::decide`]: a delivery from
    /// another forge is refused before it is verified ([`ServeConfig::accepts`]).
    #[serde(
        default,
        deserialize_with = "listed_forges",
        skip_serializing_if = "Option::is_none"
    )]
    pub forges: Option<Vec<Forge>>,
    /// The rules, in order: the first whose kind and glob match a pushed
    /// ref decides for it.
    #[serde(deserialize_with = "listed_rules")]
    pub rules: Vec<Rule>,
}

fn listed_forges<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Forge>>, D::Error> {
    let forges = Vec::<Forge>::deserialize(d)?;
    if forges.is_empty() {
        return Err(de::Error::custom(
            "forges is empty, which would take no delivery: list some, or leave the key out for all",
        ));
    }
    Ok(Some(forges))
}

fn listed_rules<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Rule>, D::Error> {
    let rules = Vec::<Rule>::deserialize(d)?;
    if rules.is_empty() {
        return Err(de::Error::custom(
            "rules is empty: add one, e.g. { branch: main, deploy: staging }",
        ));
    }
    Ok(rules)
}

/// One rule: which refs, and the environment their pushes deploy.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(try_from = "RuleFields", into = "RuleFields")]
pub struct Rule {
    /// `branch:` or `tag:` and its glob.
    pub refs: Refs,
    /// The environment a matching push deploys (for a preview: the one it
    /// is a preview of).
    pub deploy: Name,
    /// The environment to promote to once the deploy is verified.
    pub then: Option<Name>,
    /// `version:`, the commit's by default.
    pub version: VersionFrom,
    /// Each matching branch deploys its own preview of `deploy`, and its
    /// deletion removes it. Branch rules only.
    pub preview: bool,
    /// This rule's own secret, in place of `serve.secret`.
    pub secret: Option<SecretRef>,
}

/// The refs a rule is for: branches or tags, by a glob over their names.
#[derive(Debug, Clone, PartialEq)]
pub enum Refs {
    Branch(Pattern),
    Tag(Pattern),
}

impl fmt::Display for Refs {
    /// As written: `branch: main`, `tag: v*`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refs::Branch(p) => write!(f, "branch: {p}"),
            Refs::Tag(p) => write!(f, "tag: {p}"),
        }
    }
}

/// What a deploy's version is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionFrom {
    /// The first 12 hex digits of the pushed commit.
    #[default]
    Commit,
    /// The tag's name, which must be a valid version
    /// ([`crate::release::validate_version`]). Tag rules only.
    Tag,
}

/// A rule as written, checked into a [`Rule`].
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RuleFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    branch: Option<Pattern>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tag: Option<Pattern>,
    deploy: Name,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    then: Option<Name>,
    #[serde(default)]
    version: VersionFrom,
    #[serde(default)]
    preview: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<SecretRef>,
}

impl TryFrom<RuleFields> for Rule {
    type Error = String;
    fn try_from(f: RuleFields) -> Result<Rule, String> {
        let refs = match (f.branch, f.tag) {
            (Some(b), None) => Refs::Branch(b),
            (None, Some(t)) => Refs::Tag(t),
            (Some(_), Some(_)) => {
                return Err("a rule has branch: or tag:, not both: write two rules".into())
            }
            (None, None) => return Err(
                "a rule needs branch: or tag:, the glob of the refs it deploys (e.g. branch: main)"
                    .into(),
            ),
        };
        let is_tag = matches!(refs, Refs::Tag(_));
        if f.version == VersionFrom::Tag && !is_tag {
            return Err(format!(
                "rule ({refs}): version: tag needs a tag rule (a branch has no tag to name the version); use version: commit"
            ));
        }
        if f.preview && is_tag {
            return Err(format!(
                "rule ({refs}): preview: true is for branch rules (a preview lives as long as its branch)"
            ));
        }
        if let Some(then) = &f.then {
            if *then == f.deploy {
                return Err(format!(
                    "rule ({refs}): then: {then} is the environment the rule deploys; name the one to promote to"
                ));
            }
            if f.preview {
                return Err(format!(
                    "rule ({refs}): a preview is not promoted: drop then: or preview:"
                ));
            }
        }
        Ok(Rule {
            refs,
            deploy: f.deploy,
            then: f.then,
            version: f.version,
            preview: f.preview,
            secret: f.secret,
        })
    }
}

impl From<Rule> for RuleFields {
    fn from(r: Rule) -> RuleFields {
        let (branch, tag) = match r.refs {
            Refs::Branch(p) => (Some(p), None),
            Refs::Tag(p) => (None, Some(p)),
        };
        RuleFields {
            branch,
            tag,
            deploy: r.deploy,
            then: r.then,
            version: r.version,
            preview: r.preview,
            secret: r.secret,
        }
    }
}

/// A glob over a branch or tag name, kept as written.
#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    matcher: GlobMatcher,
}

impl Pattern {
    /// Compiles a glob (`*` and `?` stop at `/`, `**` crosses it).
    /// Errors: an empty glob, or one `globset` refuses (its reason).
    pub fn parse(text: &str) -> Result<Pattern, String> {
        if text.is_empty() {
            return Err("an empty glob matches nothing: write e.g. main or release/*".into());
        }
        let glob = GlobBuilder::new(text)
            .literal_separator(true)
            .build()
            .map_err(|e| format!("invalid glob {text:?}: {}", e.kind()))?;
        Ok(Pattern {
            text: text.to_string(),
            matcher: glob.compile_matcher(),
        })
    }

    /// Whether a branch or tag name (without `refs/heads/` or
    /// `refs/tags/`) matches.
    pub fn is_match(&self, name: &str) -> bool {
        self.matcher.is_match(name)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.text == other.text
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Pattern::parse(&String::deserialize(d)?).map_err(de::Error::custom)
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// A repository's full name as forges write it: two or more `/`-separated
/// segments, with no spaces or control characters, at most 255 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepoName(String);

impl RepoName {
    /// Checks a name as written in cyan.yaml; the error says what to write.
    pub fn parse(s: &str) -> Result<RepoName, String> {
        let ok = s.len() <= 255
            && s.split('/').count() >= 2
            && s.split('/').all(|seg| !seg.is_empty())
            && !s.chars().any(|c| c.is_whitespace() || c.is_control());
        if ok {
            Ok(RepoName(s.to_string()))
        } else {
            Err(format!(
                "invalid repo {s:?}: write the forge's full name, owner/name (GitLab: group/subgroup/name)"
            ))
        }
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a delivery's repository is this one, regardless of case.
    pub fn is(&self, full_name: &str) -> bool {
        self.0.eq_ignore_ascii_case(full_name)
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RepoName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RepoName::parse(&String::deserialize(d)?).map_err(de::Error::custom)
    }
}

/// Where commits are fetched from: a clone URL or a path. Not empty, no
/// control characters, and not starting with `-` (git would read it as an
/// option).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source(String);

impl Source {
    /// Checks a source as written in cyan.yaml; the error says what to write.
    pub fn parse(s: &str) -> Result<Source, String> {
        if s.is_empty() || s.starts_with('-') || s.chars().any(char::is_control) {
            return Err(format!(
                "invalid source {s:?}: give a clone URL (https://…, ssh://…, git@host:path) or a path to a repository"
            ));
        }
        Ok(Source(s.to_string()))
    }

    /// The URL or path as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Source {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Source::parse(&String::deserialize(d)?).map_err(de::Error::custom)
    }
}

/// What to do for one pushed ref (or a delivery that is not a push).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Deploy `commit` as `version` to `environment` (a preview's base,
    /// with `preview`), then promote it to `then` once verified.
    Deploy {
        environment: String,
        /// The tag's name, or the commit's first 12 hex digits.
        version: String,
        /// The pushed object's full name, lowercase hex (for an annotated
        /// tag, the tag object: its commit is `<commit>^{commit}`).
        commit: String,
        then: Option<String>,
        preview: Option<Preview>,
    },
    /// The branch of this preview was deleted: remove the preview.
    RemovePreview { preview: Preview },
    /// Nothing to do, and why; the forge is answered 2xx with it.
    Ignore { reason: String },
}

/// A branch's preview: its own deployment of a rule's environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Preview {
    /// The rule's `deploy`, whose configuration the preview runs.
    pub base: String,
    /// The branch's [`slug`], naming the preview.
    pub slug: String,
}

/// A branch name as a DNS label (RFC 1123), unique to the branch.
///
/// Lowercase ASCII letters and digits are kept; every run of anything
/// else becomes one `-`; leading and trailing `-` go. When that changed the
/// name, or it is over 40 characters, or it already ends like a changed
/// one (`-` and 8 hex digits), the result is cut to 31 characters and `-`
/// plus the first 8 hex digits of the name's SHA-256 is added (`branch-…`
/// when nothing was left). So `main` stays `main`; `feature/a_b` and
/// `feature/a-b` are `feature-a-b-` and two different hashes; a slug never
/// has `--`, and is at most 40 characters. Two branches share one only if
/// their names' hashes agree in 32 bits.
pub fn slug(branch: &str) -> String {
    let mut s = String::with_capacity(branch.len().min(64));
    for c in branch.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            s.push(c);
        } else if !s.is_empty() && !s.ends_with('-') {
            s.push('-');
        }
    }
    while s.ends_with('-') {
        s.pop();
    }
    if !s.is_empty() && s == branch && s.len() <= 40 && !looks_hashed(&s) {
        return s;
    }
    let hash = hex(digest::digest(&digest::SHA256, branch.as_bytes()).as_ref());
    // ASCII only by now, so bytes are characters.
    s.truncate(31);
    while s.ends_with('-') {
        s.pop();
    }
    if s.is_empty() {
        s.push_str("branch");
    }
    format!("{s}-{}", &hash[..8])
}

/// Ends in `-` and 8 lowercase hex digits, as a changed slug does.
fn looks_hashed(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 10
        && b[b.len() - 9] == b'-'
        && b[b.len() - 8..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// A pushed ref as a rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Branch,
    Tag,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Branch => "branch",
            Kind::Tag => "tag",
        })
    }
}

fn ref_name(git_ref: &str) -> Option<(Kind, &str)> {
    let (kind, name) = if let Some(b) = git_ref.strip_prefix("refs/heads/") {
        (Kind::Branch, b)
    } else {
        (Kind::Tag, git_ref.strip_prefix("refs/tags/")?)
    };
    (!name.is_empty()).then_some((kind, name))
}

/// A string from a delivery, for a reason: escaped, and cut at 100 characters.
fn quoted(s: &str) -> String {
    let cut: String = s.chars().take(100).collect();
    if cut.len() < s.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

fn ignore(reason: impl Into<String>) -> Decision {
    Decision::Ignore {
        reason: reason.into(),
    }
}

impl ServeConfig {
    /// Whether deliveries from `forge` are taken (`forges:`, all without it).
    pub fn accepts(&self, forge: Forge) -> bool {
        self.forges.as_ref().is_none_or(|f| f.contains(&forge))
    }

    /// The secret to [`super::forge::verify`] a delivery with, read from the
    /// delivery before it is verified: for a push, the secret of the rule
    /// that matches its refs (`serve.secret` for a rule without one, or
    /// when no rule matches); `serve.secret` for any other event.
    ///
    /// Errors: a push (Bitbucket sends several refs in one) whose refs
    /// match rules with different secrets, as no one secret may let a
    /// delivery through to a rule kept for another.
    pub fn secret_for(&self, d: &Delivery) -> Result<&SecretRef, String> {
        let Event::Push(pushes) = &d.event else {
            return Ok(&self.secret);
        };
        let mut chosen: Option<(&SecretRef, &str)> = None;
        for p in pushes {
            let Some((kind, name)) = ref_name(&p.git_ref) else {
                continue;
            };
            let Some(rule) = self.rule_for(kind, name) else {
                continue;
            };
            let secret = rule.secret.as_ref().unwrap_or(&self.secret);
            match chosen {
                None => chosen = Some((secret, &p.git_ref)),
                Some((first, first_ref)) if first != secret => {
                    return Err(format!(
                        "{} and {} in one push match rules with different secrets: push them separately",
                        quoted(first_ref),
                        quoted(&p.git_ref)
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(chosen.map_or(&self.secret, |(s, _)| s))
    }

    /// What to do for a verified delivery: one [`Decision`] for each of its
    /// pushed refs, in order, or one `Ignore` for a delivery that is not a
    /// push, is about another repository, or pushed no ref.
    ///
    /// For each ref, the first rule whose kind and glob match decides:
    /// - no rule, or a ref that is neither a branch nor a tag: `Ignore`;
    /// - a deleted branch: `RemovePreview` for a preview rule, else
    ///   `Ignore` (the environment keeps what it runs); a deleted tag:
    ///   `Ignore`;
    /// - a pushed object that is not 40 or 64 hex digits: `Ignore` (a forge
    ///   sends object names; anything else is not a commit to fetch);
    /// - `version: tag` with a tag name that is not a valid version: `Ignore`;
    /// - else `Deploy`, with `then` and, for a preview rule, the preview.
    ///
    /// One deploy per target: when two refs of one push deploy the same
    /// environment (and preview), the first does and the later ones are
    /// `Ignore`d, naming it.
    pub fn decide(&self, d: &Delivery) -> Vec<Decision> {
        let pushes = match &d.event {
            Event::Ping => return vec![ignore("a ping: the webhook reaches cyan")],
            Event::Other(name) => {
                return vec![ignore(format!(
                    "a {} {} event, not a push",
                    d.forge,
                    quoted(name)
                ))]
            }
            Event::Push(pushes) => pushes,
        };
        match &d.repo {
            None => return vec![ignore("the push names no repository")],
            Some(r) if !self.repo.is(&r.full_name) => {
                return vec![ignore(format!(
                    "the push is to {}, and this server deploys {}",
                    quoted(&r.full_name),
                    self.repo
                ))]
            }
            Some(_) => {}
        }
        if pushes.is_empty() {
            return vec![ignore("the push changed no branch or tag")];
        }
        let mut decisions: Vec<Decision> = Vec::with_capacity(pushes.len());
        for (i, p) in pushes.iter().enumerate() {
            let decision = self.decide_push(p);
            let earlier = decisions[..i]
                .iter()
                .position(|e| same_target(e, &decision));
            decisions.push(match earlier {
                Some(j) => ignore(format!(
                    "{} in the same push already deploys {}",
                    quoted(&pushes[j].git_ref),
                    target(&decision)
                )),
                None => decision,
            });
        }
        decisions
    }

    fn rule_for(&self, kind: Kind, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| match (&r.refs, kind) {
            (Refs::Branch(p), Kind::Branch) | (Refs::Tag(p), Kind::Tag) => p.is_match(name),
            _ => false,
        })
    }

    fn decide_push(&self, p: &Push) -> Decision {
        let Some((kind, name)) = ref_name(&p.git_ref) else {
            return ignore(format!("{} is not a branch or a tag", quoted(&p.git_ref)));
        };
        let Some(rule) = self.rule_for(kind, name) else {
            return ignore(format!("no rule matches {kind} {}", quoted(name)));
        };
        let deleted = p.deleted || (!p.after.is_empty() && p.after.bytes().all(|c| c == b'0'));
        let preview = || Preview {
            base: rule.deploy.to_string(),
            slug: slug(name),
        };
        if deleted {
            return match kind {
                Kind::Branch if rule.preview => Decision::RemovePreview { preview: preview() },
                Kind::Branch => ignore(format!(
                    "branch {} was deleted; its rule ({}) has no preview, so {} keeps what it runs",
                    quoted(name),
                    rule.refs,
                    rule.deploy
                )),
                Kind::Tag => ignore(format!(
                    "tag {} was deleted: nothing to deploy",
                    quoted(name)
                )),
            };
        }
        let is_hex = p.after.bytes().all(|c| c.is_ascii_hexdigit());
        if !is_hex || !(p.after.len() == 40 || p.after.len() == 64) {
            return ignore(format!(
                "the object pushed to {} is {}, not a 40- or 64-digit hex name",
                quoted(&p.git_ref),
                quoted(&p.after)
            ));
        }
        let commit = p.after.to_ascii_lowercase();
        let version = match rule.version {
            VersionFrom::Commit => commit[..12].to_string(),
            VersionFrom::Tag => match validate_version(name) {
                Ok(()) => name.to_string(),
                Err(e) => return ignore(format!("tag {} is not a version: {e}", quoted(name))),
            },
        };
        Decision::Deploy {
            environment: rule.deploy.to_string(),
            version,
            commit,
            then: rule.then.as_ref().map(Name::to_string),
            preview: rule.preview.then(preview),
        }
    }
}

/// Whether two decisions deploy to one target (environment and preview).
fn same_target(a: &Decision, b: &Decision) -> bool {
    match (a, b) {
        (
            Decision::Deploy {
                environment: e1,
                preview: p1,
                ..
            },
            Decision::Deploy {
                environment: e2,
                preview: p2,
                ..
            },
        ) => e1 == e2 && p1 == p2,
        _ => false,
    }
}

fn target(d: &Decision) -> String {
    match d {
        Decision::Deploy {
            environment,
            preview: Some(p),
            ..
        } => format!("the preview {} of {environment}", p.slug),
        Decision::Deploy { environment, .. } => environment.clone(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests;
