//! Value types that validate themselves while they are deserialized, so the
//! YAML parser can point at the exact offending value.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

/// A duration written the human way: `500ms`, `30s`, `2m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn from_secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }
    pub const fn from_millis(ms: u64) -> Dur {
        Dur(Duration::from_millis(ms))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim()).map(Dur).map_err(|e| {
            de::Error::custom(format!(
                "invalid duration {s:?} ({e}); write e.g. 500ms, 30s or 2m"
            ))
        })
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// A name that becomes part of container names, labels and routes:
/// lowercase letters, digits and '-', 1 to 40 characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Name(String);

impl Name {
    pub(super) fn new(s: &str) -> Name {
        Name(s.to_string())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Checks a name given on the command line (`cyan init --app`).
    pub fn parse(s: &str) -> Result<Name, String> {
        Name::check(s)?;
        Ok(Name(s.to_string()))
    }
    fn check(s: &str) -> Result<(), String> {
        let ok = !s.is_empty()
            && s.len() <= 40
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !s.starts_with('-')
            && !s.ends_with('-');
        if ok {
            Ok(())
        } else {
            Err(format!(
                "invalid name {s:?}: use 1-40 lowercase letters, digits and '-', not starting or ending with '-'"
            ))
        }
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Name::check(&s).map_err(de::Error::custom)?;
        Ok(Name(s))
    }
}

/// An image repository with no tag or digest, e.g. `127.0.0.1:5000/web`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageRepo(String);

impl ImageRepo {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The registry host when the repository names one (`host:port/…`,
    /// `host.tld/…` or `localhost/…`); images without one are never pushed.
    pub fn registry(&self) -> Option<&str> {
        let (first, _) = self.0.split_once('/')?;
        (first.contains('.') || first.contains(':') || first == "localhost").then_some(first)
    }

    pub fn tag(&self, tag: &str) -> String {
        format!("{}:{tag}", self.0)
    }
}

impl fmt::Display for ImageRepo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl ImageRepo {
    /// Checks a repository name as written in cyan.yaml or on the command line.
    pub fn parse(s: &str) -> Result<ImageRepo, String> {
        let last = s.rsplit('/').next().unwrap_or_default();
        if s.is_empty() || s.contains('@') || last.contains(':') {
            return Err(format!(
                "invalid image {s:?}: give the repository only (e.g. 127.0.0.1:5000/web); cyan adds the version and latest tags"
            ));
        }
        if s.chars()
            .any(|c| c.is_ascii_uppercase() || c.is_whitespace())
        {
            return Err(format!(
                "invalid image {s:?}: repositories are lowercase, with no spaces"
            ));
        }
        Ok(ImageRepo(s.to_string()))
    }

    /// The same repository path in another registry (`ghcr.io` + `web` or
    /// `old.example:5000/web` → `ghcr.io/web`).
    pub fn in_registry(&self, registry: &str) -> Result<ImageRepo, String> {
        let registry = registry.trim_end_matches('/');
        let path = match self.registry() {
            Some(old) => &self.0[old.len() + 1..],
            None => &self.0,
        };
        let repo = ImageRepo::parse(&format!("{registry}/{path}"))?;
        if repo.registry() != Some(registry) {
            return Err(format!(
                "invalid registry {registry:?}: give a host such as ghcr.io or 127.0.0.1:5000"
            ));
        }
        Ok(repo)
    }
}

impl<'de> Deserialize<'de> for ImageRepo {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ImageRepo::parse(&String::deserialize(d)?).map_err(de::Error::custom)
    }
}

/// A ratio between 0 and 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ratio(pub f64);

impl<'de> Deserialize<'de> for Ratio {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        if (0.0..=1.0).contains(&v) {
            Ok(Ratio(v))
        } else {
            Err(de::Error::custom(format!(
                "ratio {v} is out of range: use a number from 0 to 1 (0.01 is 1%)"
            )))
        }
    }
}

/// An inclusive HTTP status range: `200`, `200-299`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange {
    pub low: u16,
    pub high: u16,
}

impl StatusRange {
    pub fn contains(&self, status: u16) -> bool {
        (self.low..=self.high).contains(&status)
    }
}

impl Default for StatusRange {
    fn default() -> Self {
        StatusRange {
            low: 200,
            high: 399,
        }
    }
}

impl fmt::Display for StatusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.low == self.high {
            write!(f, "{}", self.low)
        } else {
            write!(f, "{}-{}", self.low, self.high)
        }
    }
}

impl Serialize for StatusRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // YAML reads `200` as a number and `200-299` as a string; take both.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u16),
            S(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::N(n) => n.to_string(),
            Raw::S(s) => s,
        };
        let parse = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|n| (100..=599).contains(n))
        };
        let range = match text.split_once('-') {
            Some((a, b)) => parse(a)
                .zip(parse(b))
                .map(|(low, high)| StatusRange { low, high }),
            None => parse(&text).map(|n| StatusRange { low: n, high: n }),
        };
        match range {
            Some(r) if r.low <= r.high => Ok(r),
            _ => Err(de::Error::custom(format!(
                "invalid status range {text:?}: write 200 or 200-299 (codes 100-599)"
            ))),
        }
    }
}

pub(super) fn zero_or_one<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if v <= 1 {
        Ok(v)
    } else {
        Err(de::Error::custom(format!(
            "hot: {v} is not possible: an app has two colors, so at most 1 previous color stays running"
        )))
    }
}

/// A command as a list (`health.command`): the program and its arguments.
/// A single string is refused with the form to write instead, since it
/// would need a shell that many images (FROM scratch) do not have.
pub(super) fn argv<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    struct Argv;
    impl<'de> de::Visitor<'de> for Argv {
        type Value = Option<Vec<String>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(
                "a list: the program and its arguments, e.g. [/app, check] \
                 (no shell runs it; write [sh, -c, \"...\"] if the image has one)",
            )
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut argv = Vec::new();
            while let Some(item) = seq.next_element::<String>()? {
                argv.push(item);
            }
            Ok(Some(argv))
        }
    }
    d.deserialize_any(Argv)
}
