//! `cyan init`: a first cyan.yaml, written from what the project shows.
//!
//! The README's config reference lists every key, and a newcomer starting
//! from it has to pick the few a first deploy needs and guess their values.
//! The project already says most of them: the Dockerfile's `EXPOSE` (the
//! port) and `HEALTHCHECK` (a health path, and whether Docker's health also
//! gates), the folder's name (the app's), a VERSION file or git (where
//! versions come from). Init reads those and writes a short file that
//! deploys as written, each value explained in a comment beside its key,
//! guesses named as guesses. The text is parsed with cyan's own loader
//! before it is written, so init never writes a file `cyan deploy` refuses.
//!
//! Three parts: `detect` reads the folder and chooses each value (with
//! `dockerfile`, what the Dockerfile says), `template` writes them as the
//! commented cyan.yaml, and this file is the command: its checks, --force,
//! writing the file, and the report.

mod detect;
mod dockerfile;
mod template;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{Config, Name};
use crate::error::{Error, Result};
use crate::output::Output;
use detect::{detect, Detected, VersionSource};
use template::{listen_url, render};

/// `cyan init`'s flags, resolved.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The project folder; cyan.yaml is written there.
    pub dir: PathBuf,
    /// Overwrite an existing cyan.yaml.
    pub force: bool,
    /// The app's name, instead of one made from the folder's.
    pub app: Option<Name>,
    /// The proxy address the app is served on (`proxy.listen`).
    pub listen: SocketAddr,
}

/// Writes `cyan.yaml` in `opts.dir`, and reports what it read.
///
/// Errors: `Config` (exit 2) when the folder does not exist, a cyan.yaml is
/// there already and `--force` is not given, or a file cannot be read or
/// written.
pub fn init(opts: &InitOptions, out: &Output) -> Result<()> {
    let dir = &opts.dir;
    if !dir.is_dir() {
        return Err(Error::Config(format!(
            "{} is not a folder: give the project's folder with --dir",
            dir.display()
        )));
    }
    let path = dir.join("cyan.yaml");
    if path.symlink_metadata().is_ok() && !opts.force {
        return Err(exists(&path));
    }
    let yml = dir.join("cyan.yml");
    if yml.symlink_metadata().is_ok() && !opts.force {
        return Err(Error::Config(format!(
            "{} is here already: cyan reads cyan.yaml unless -c names another file, so a new cyan.yaml beside it would be a second config of this project, and the one commands use. Check it with `cyan config check -c {}` and rename it to cyan.yaml, or pass --force to write cyan.yaml beside it",
            yml.display(),
            yml.display()
        )));
    }
    let detected = detect(dir, opts)?;
    let yaml = render(&detected);
    Config::parse(&yaml, &path.display().to_string()).map_err(|e| {
        Error::Platform(format!(
            "cyan init made a config that cyan's own loader refuses, a bug in cyan (please report it); nothing was written: {e}"
        ))
    })?;
    write(&path, &yaml, opts.force)?;
    for w in &detected.warnings {
        out.warn(w);
    }
    let report = Report {
        path: path.display().to_string(),
        url: listen_url(detected.listen),
        detected: &detected,
    };
    out.result(&report, || summary(&report, dir));
    Ok(())
}

#[derive(Serialize)]
struct Report<'a> {
    path: String,
    url: String,
    #[serde(flatten)]
    detected: &'a Detected,
}

fn exists(path: &Path) -> Error {
    Error::Config(format!(
        "{} already exists, and cyan init does not overwrite it: pass --force to replace it, or check it with `cyan config check -c {}`",
        path.display(),
        path.display()
    ))
}

/// Writes `yaml` at `path`: only where nothing is, unless `force`; then
/// through a file beside it renamed over `path`, so a `path` that is a
/// symbolic link is replaced, never the file it points to.
fn write(path: &Path, yaml: &str, force: bool) -> Result<()> {
    use std::io::Write;
    let cannot = |e: std::io::Error| Error::Config(format!("cannot write {}: {e}", path.display()));
    let target = match force {
        true => path.with_file_name(format!(".cyan.yaml.{}.tmp", std::process::id())),
        false => path.to_path_buf(),
    };
    // Not a check then a write: a file made in between is not replaced.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&target)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists if !force => exists(path),
            _ => cannot(e),
        })?;
    let written = file.write_all(yaml.as_bytes()).map_err(cannot);
    drop(file);
    let done = written.and_then(|()| match force {
        true => std::fs::rename(&target, path).map_err(cannot),
        false => Ok(()),
    });
    if done.is_err() && force {
        let _ = std::fs::remove_file(&target);
    }
    done
}

/// The text result: what was written, each value with where it came from.
fn summary(r: &Report, dir: &Path) -> String {
    let d = r.detected;
    let app = match (&d.app.folder, d.app.changes.as_slice()) {
        (None, _) => "from --app".to_string(),
        (Some(f), []) => format!("from the folder's name {f:?}"),
        (Some(f), changes) => format!("from the folder's name {f:?}: {}", changes.join("; ")),
    };
    let image = match d.image.contains('/') {
        true => String::new(),
        false => " (no registry: built here, never pushed)".to_string(),
    };
    let version = match &d.version {
        VersionSource::File { value } => format!("the VERSION file ({value})"),
        VersionSource::Git { value } => format!("git describe (now {value})"),
        VersionSource::None => "none found: pass --version to cyan deploy".to_string(),
    };
    let docker = match d.health.docker {
        true => ", and Docker's HEALTHCHECK",
        false => "",
    };
    let config = match dir == Path::new(".") {
        true => String::new(),
        false => format!(" -c {}", shell_word(&r.path)),
    };
    let deploy = match d.version {
        VersionSource::None => format!("cyan deploy{config} --version 1.0.0"),
        _ => format!("cyan deploy{config}"),
    };
    format!(
        "wrote {}\n  app      {} ({app})\n  image    {}{image}\n  port     {} ({})\n  health   GET {}{docker} ({})\n  version  {version}\n  url      {}\nnext: {deploy}",
        r.path,
        d.app.name,
        d.image,
        d.port.port,
        d.port.why,
        d.health.path,
        d.health.why,
        r.url,
    )
}

/// A path as a shell command line can take it.
fn shell_word(s: &str) -> String {
    let plain = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%,=".contains(c));
    if plain && !s.is_empty() {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
