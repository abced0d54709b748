//! A secret that cyan itself uses (a webhook's signing secret, a chat
//! webhook's URL, an SMTP password, a git token), named in cyan.yaml by
//! where it is, never by its value.
//!
//! `secrets:` are the app's, passed to its containers; these are cyan's own,
//! read when they are needed. Either form keeps the value out of the config
//! file, which is committed and printed by `cyan config check`:
//!
//! ```yaml
//! secret: { env: GITEA_HOOK_SECRET }      # a variable of cyan's environment
//! secret: { file: /etc/cyan/hook-secret } # a file's content, trailing newline dropped
//! ```

use std::path::PathBuf;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where a secret's value is: exactly one of `env` or `file`. It serializes
/// as it was written (the name or the path), never as the value.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum SecretRef {
    /// The name of a variable in cyan's environment.
    Env(String),
    /// A file whose content is the value; one trailing newline (`\n` or
    /// `\r\n`) is dropped, as `echo secret > file` writes one.
    File(PathBuf),
}

impl SecretRef {
    /// Reads the value now (a file is read again on every call, so a
    /// rotated secret is picked up without a restart).
    ///
    /// Errors (`Error::Config`, naming the variable or the path, never a
    /// value): an unset or non-UTF-8 variable, a file that cannot be read or
    /// is not UTF-8, an empty value.
    pub fn read(&self) -> Result<SecretString> {
        let value = match self {
            SecretRef::Env(name) => std::env::var(name).map_err(|e| {
                Error::Config(format!(
                    "{self} is {}",
                    match e {
                        std::env::VarError::NotPresent => "not set in cyan's environment",
                        std::env::VarError::NotUnicode(_) => "not valid UTF-8",
                    }
                ))
            })?,
            SecretRef::File(path) => {
                let mut text = std::fs::read_to_string(path)
                    .map_err(|e| Error::Config(format!("cannot read {self}: {e}")))?;
                for end in ["\r\n", "\n"] {
                    if text.ends_with(end) {
                        text.truncate(text.len() - end.len());
                        break;
                    }
                }
                text
            }
        };
        if value.is_empty() {
            return Err(Error::Config(format!("{self} is empty")));
        }
        Ok(SecretString::from(value))
    }
}

impl std::fmt::Display for SecretRef {
    /// Where the secret is, for messages: `the variable NAME` or `the file PATH`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "the variable {name}"),
            SecretRef::File(path) => write!(f, "the file {}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn a_file_loses_one_trailing_newline_and_an_env_var_is_read_as_is() {
        let dir = std::env::temp_dir().join(format!("cyan-secret-ref-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("s");
        std::fs::write(&file, "s3cret\n\n").expect("write");
        let got = SecretRef::File(file.clone()).read().expect("reads");
        assert_eq!(got.expose_secret(), "s3cret\n");
        std::fs::write(&file, "").expect("write");
        let err = SecretRef::File(file.clone()).read().expect_err("empty");
        assert!(err.to_string().contains("is empty"), "{err}");

        std::env::set_var("CYAN_TEST_SECRET_REF", " v ");
        let got = SecretRef::Env("CYAN_TEST_SECRET_REF".into())
            .read()
            .expect("reads");
        assert_eq!(got.expose_secret(), " v ");
        let err = SecretRef::Env("CYAN_TEST_SECRET_REF_UNSET".into())
            .read()
            .expect_err("unset");
        assert_eq!(
            err.to_string(),
            "the variable CYAN_TEST_SECRET_REF_UNSET is not set in cyan's environment"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn it_is_written_as_a_map_of_one_key() {
        let r: SecretRef = serde_saphyr::from_str("env: HOOK").expect("parses");
        assert_eq!(r, SecretRef::Env("HOOK".into()));
        let r: SecretRef = serde_saphyr::from_str("file: /etc/x").expect("parses");
        assert_eq!(r, SecretRef::File("/etc/x".into()));
        assert!(serde_saphyr::from_str::<SecretRef>("value: x").is_err());
    }
}
