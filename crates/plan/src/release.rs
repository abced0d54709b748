//! The vocabulary of a deploy: colors, versions and releases.
//!
//! A release is immutable: one version of one app, built once into one image
//! whose content address (image id) and registry digest are recorded. Rollback
//! goes by that address, never by a mutable tag.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A color or version that is not one: the message says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// One of the two slots an app alternates between.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    Blue,
    Green,
}

impl Color {
    pub const ALL: [Color; 2] = [Color::Blue, Color::Green];

    pub fn other(self) -> Color {
        match self {
            Color::Blue => Color::Green,
            Color::Green => Color::Blue,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Color::Blue => "blue",
            Color::Green => "green",
        }
    }
}

impl fmt::Display for Color {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Color {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        match s {
            "blue" => Ok(Color::Blue),
            "green" => Ok(Color::Green),
            other => Err(Invalid(format!(
                "unknown color {other:?}: expected blue or green"
            ))),
        }
    }
}

/// What makes two container sets "the same release" to the planner: the
/// version and the hash of the runtime config. Versions are immutable, so the
/// image follows from the version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReleaseKey {
    pub version: String,
    pub config_hash: String,
}

impl fmt::Display for ReleaseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (config {})", self.version, self.config_hash)
    }
}

/// One immutable, launched version of an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub version: String,
    pub revision: u64,
    /// Content address of the image (`sha256:…`): what containers run.
    pub image_id: String,
    /// Registry manifest digest (`repo@sha256:…`) when the image was pushed.
    pub digest: Option<String>,
    pub config_hash: String,
}

impl Release {
    pub fn key(&self) -> ReleaseKey {
        ReleaseKey {
            version: self.version.clone(),
            config_hash: self.config_hash.clone(),
        }
    }
}

/// Checks a version string: it becomes an image tag, so it must be a valid
/// one, and `latest` is refused because it is not a version.
pub fn validate_version(v: &str) -> Result<(), Invalid> {
    let ok_chars = v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if v.is_empty() || v.len() > 128 || !ok_chars || v.starts_with(['.', '-']) {
        return Err(Invalid(format!(
            "invalid version {v:?}: a version becomes an image tag, so use letters, digits, '.', '_' or '-' (at most 128, not starting with '.' or '-')"
        )));
    }
    if v == "latest" {
        return Err(Invalid(
            "version \"latest\" is refused: it names no release and makes rollback ambiguous; pass --version 1.2.3 or a git sha".into(),
        ));
    }
    Ok(())
}
