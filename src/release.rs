//! The version a deploy ships: the `--version` flag, a `VERSION` file, or
//! what git says of the config's folder (with the content of a dirty tree).
//!
//! The release vocabulary itself (colors, release keys) is the planner's,
//! re-exported here.

use std::path::Path;

pub use cyan_plan::release::*;

use crate::error::{Error, Result};

/// Resolves the release version: the flag, else a `VERSION` file beside the
/// config, else `git describe --tags --always --dirty` in that folder.
pub fn resolve_version(flag: Option<&str>, config_dir: &Path) -> Result<String> {
    let version = if let Some(v) = flag {
        v.trim().to_string()
    } else if let Ok(text) = std::fs::read_to_string(config_dir.join("VERSION")) {
        text.trim().to_string()
    } else {
        let out = std::process::Command::new("git")
            .args(["describe", "--tags", "--always"])
            .current_dir(config_dir)
            .output();
        match out {
            Ok(o) if o.status.success() => {
                let described = String::from_utf8_lossy(&o.stdout).trim().to_string();
                match dirty_content(config_dir)? {
                    Some(content) => format!("{described}-dirty-{content}"),
                    None => described,
                }
            }
            _ => {
                return Err(Error::Config(format!(
                    "no version: pass --version, or write a VERSION file in {}, or run inside a git repository",
                    config_dir.display()
                )))
            }
        }
    };
    validate_version(&version)?;
    Ok(version)
}

/// `None` for a clean tree; else 8 hex characters that name what the
/// uncommitted work holds: a SHA-256 of the tracked changes (`git diff
/// HEAD --binary`) and of every untracked, not ignored file (name and
/// content). `git describe --dirty` says `-dirty` for every set of
/// changes (and nothing for new files), so two different trees shipped as
/// one version, and the second deploy found it live and did nothing.
fn dirty_content(dir: &Path) -> Result<Option<String>> {
    use sha2::{Digest, Sha256};
    let git = |args: &[&str]| -> Result<Vec<u8>> {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .map_err(|e| Error::Config(format!("cannot run git in {}: {e}", dir.display())))?;
        if !out.status.success() {
            return Err(Error::Config(format!(
                "git {} failed in {}: {}; pass --version",
                args.join(" "),
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(out.stdout)
    };
    if git(&["status", "--porcelain"])?.is_empty() {
        return Ok(None);
    }
    let top = String::from_utf8_lossy(&git(&["rev-parse", "--show-toplevel"])?)
        .trim()
        .to_string();
    let top = Path::new(&top);
    let mut h = Sha256::new();
    h.update(git(&[
        "-C",
        &top.to_string_lossy(),
        "diff",
        "HEAD",
        "--binary",
    ])?);
    let others = git(&[
        "-C",
        &top.to_string_lossy(),
        "ls-files",
        "-z",
        "--others",
        "--exclude-standard",
    ])?;
    for name in others.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        h.update(b"\0untracked\0");
        h.update(name);
        h.update(b"\0");
        let path = top.join(String::from_utf8_lossy(name).as_ref());
        h.update(std::fs::read(path).unwrap_or_default());
    }
    let digest = h.finalize();
    Ok(Some(
        digest[..4].iter().map(|b| format!("{b:02x}")).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dirty_tree_names_its_content() {
        let dir = std::env::temp_dir().join(format!("cyan-dirty-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let git = |args: &[&str]| {
            let ok = std::process::Command::new("git")
                .args([
                    "-c",
                    "user.name=t",
                    "-c",
                    "user.email=t@t",
                    "-c",
                    "commit.gpgsign=false",
                ])
                .args(args)
                .current_dir(&dir)
                .output()
                .unwrap();
            assert!(ok.status.success(), "git {args:?}: {ok:?}");
        };
        git(&["init", "-q"]);
        std::fs::write(dir.join("app.txt"), "A").unwrap();
        git(&["add", "."]);
        git(&["commit", "-qm", "one"]);
        git(&["tag", "v1.0"]);
        assert_eq!(resolve_version(None, &dir).unwrap(), "v1.0");
        std::fs::write(dir.join("app.txt"), "B").unwrap();
        let b = resolve_version(None, &dir).unwrap();
        assert!(
            b.starts_with("v1.0-dirty-") && b.len() == "v1.0-dirty-".len() + 8,
            "{b}"
        );
        assert_eq!(
            resolve_version(None, &dir).unwrap(),
            b,
            "the same tree, the same version"
        );
        std::fs::write(dir.join("app.txt"), "C").unwrap();
        let c = resolve_version(None, &dir).unwrap();
        assert_ne!(c, b, "another edit is another version");
        std::fs::write(dir.join("new.txt"), "x").unwrap();
        assert_ne!(
            resolve_version(None, &dir).unwrap(),
            c,
            "an untracked file counts"
        );
        git(&["add", "."]);
        git(&["commit", "-qm", "two"]);
        let clean = resolve_version(None, &dir).unwrap();
        assert!(
            clean.starts_with("v1.0-1-g") && !clean.contains("dirty"),
            "{clean}"
        );
        std::fs::write(dir.join("only-new.txt"), "y").unwrap();
        assert!(
            resolve_version(None, &dir)
                .unwrap()
                .starts_with(&format!("{clean}-dirty-")),
            "a new file alone makes the tree dirty"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn colors_alternate() {
        assert_eq!(Color::Blue.other(), Color::Green);
        assert_eq!(Color::Green.other(), Color::Blue);
        assert_eq!("green".parse::<Color>().unwrap(), Color::Green);
        assert!("red".parse::<Color>().is_err());
    }

    #[test]
    fn versions_are_valid_tags_and_never_latest() {
        for ok in ["1.4.0", "v2", "abc123-dirty", "2024_01_01"] {
            validate_version(ok).unwrap();
        }
        for bad in ["", "latest", "-x", ".x", "a/b", "a b", &"x".repeat(129)] {
            assert!(validate_version(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn version_falls_back_to_version_file() {
        let dir = std::env::temp_dir().join(format!("cyan-ver-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("VERSION"), "3.1.4\n").unwrap();
        assert_eq!(resolve_version(None, &dir).unwrap(), "3.1.4");
        assert_eq!(resolve_version(Some("9"), &dir).unwrap(), "9");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
