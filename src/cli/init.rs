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

mod dockerfile;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::config::{Config, Name};
use crate::error::{Error, Result};
use crate::output::Output;
use dockerfile::Facts;

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

/// The port written when nothing in the project names one.
const DEFAULT_PORT: u16 = 8080;
/// The health path written when the HEALTHCHECK shows none.
const DEFAULT_HEALTH_PATH: &str = "/healthz";
/// `health.deadline` unless the HEALTHCHECK's timing needs longer.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);
/// The Dockerfile names Docker and Podman look for, in that order.
const DOCKERFILES: [&str; 2] = ["Dockerfile", "Containerfile"];

/// What init read from the project, and the value it chose for each key
/// (this is also `-o json`'s shape, with `path` and `url` added).
#[derive(Debug, Clone, Serialize)]
pub struct Detected {
    pub app: AppName,
    /// The image repository (`app`, local: never pushed).
    pub image: String,
    /// The Dockerfile found in the folder (`Dockerfile`, `Containerfile`), if any.
    pub dockerfile: Option<String>,
    pub port: PortChoice,
    pub health: HealthChoice,
    pub listen: SocketAddr,
    pub version: VersionSource,
    /// What the user must fix or check before `cyan deploy` works.
    pub warnings: Vec<String>,
}

/// The app's name and where it came from.
#[derive(Debug, Clone, Serialize)]
pub struct AppName {
    pub name: String,
    /// The folder's name it was made from (`None`: given with --app).
    pub folder: Option<String>,
    /// What was changed to make the folder's name a valid app name.
    pub changes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PortSource {
    /// The final stage's `EXPOSE`.
    Expose,
    /// No EXPOSE: the port the HEALTHCHECK's URL calls.
    Healthcheck,
    /// Nothing says: `DEFAULT_PORT`, a guess.
    Default,
}

/// The container port, and why.
#[derive(Debug, Clone, Serialize)]
pub struct PortChoice {
    pub port: u16,
    pub source: PortSource,
    /// The Dockerfile line it was read from.
    pub line: Option<usize>,
    /// Every TCP port the final stage exposes, in order.
    pub exposed: Vec<u16>,
    pub why: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthSource {
    /// The URL the HEALTHCHECK calls.
    Healthcheck,
    /// `DEFAULT_HEALTH_PATH`, a guess.
    Default,
}

/// The health gate, and why.
#[derive(Debug, Clone, Serialize)]
pub struct HealthChoice {
    /// `health.http.path`.
    pub path: String,
    pub source: HealthSource,
    /// The HEALTHCHECK command, when the Dockerfile has one.
    pub healthcheck: Option<String>,
    /// Whether Docker's health gates too (the image has a HEALTHCHECK).
    pub docker: bool,
    /// `health.deadline`, in seconds.
    pub deadline_secs: u64,
    pub why: String,
    /// How the HEALTHCHECK's timing slows each deploy, when it does.
    pub timing: Option<String>,
}

/// Where `cyan deploy` takes a version from when `--version` is not given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "source", rename_all = "lowercase")]
pub enum VersionSource {
    /// The VERSION file beside cyan.yaml, and what it says.
    File { value: String },
    /// `git describe --tags --always` in the folder, and what it says now.
    Git { value: String },
    /// Neither: `--version` is needed.
    None,
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

/// Reads the folder: its name, its Dockerfile, and where versions come from.
fn detect(dir: &Path, opts: &InitOptions) -> Result<Detected> {
    let folder = std::fs::canonicalize(dir)
        .map_err(|e| Error::Config(format!("cannot read folder {}: {e}", dir.display())))?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dockerfile = match DOCKERFILES.iter().find(|n| dir.join(n).is_file()) {
        Some(name) => {
            let file = dir.join(name);
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Error::Config(format!("cannot read {}: {e}", file.display())))?;
            Some((*name, dockerfile::read(&text)))
        }
        None => None,
    };
    let version = detect_version(dir);
    Ok(choose(
        &folder,
        dockerfile,
        version,
        opts.app.as_ref(),
        opts.listen,
    ))
}

/// The VERSION file, else `git describe` as `cyan deploy` runs it (without
/// the dirty-tree suffix: that changes with every edit).
fn detect_version(dir: &Path) -> VersionSource {
    if let Ok(text) = std::fs::read_to_string(dir.join("VERSION")) {
        return VersionSource::File {
            value: text.trim().to_string(),
        };
    }
    let described = std::process::Command::new("git")
        .args(["describe", "--tags", "--always"])
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .output();
    match described {
        Ok(o) if o.status.success() => VersionSource::Git {
            value: String::from_utf8_lossy(&o.stdout).trim().to_string(),
        },
        _ => VersionSource::None,
    }
}

/// Chooses every value from what was read; no I/O.
fn choose(
    folder: &str,
    dockerfile: Option<(&str, Facts)>,
    version: VersionSource,
    app: Option<&Name>,
    listen: SocketAddr,
) -> Detected {
    let app = match app {
        Some(name) => AppName {
            name: name.to_string(),
            folder: None,
            changes: Vec::new(),
        },
        None => app_name(folder),
    };
    let facts = dockerfile.as_ref().map(|(name, facts)| (*name, facts));
    let port = choose_port(facts);
    let health = choose_health(facts, port.port);
    let mut warnings = Vec::new();
    if dockerfile.is_none() {
        warnings.push(
            "no Dockerfile here: `cyan deploy` builds the image from one, so write a Dockerfile beside cyan.yaml (or set build.dockerfile to yours)".to_string(),
        );
    }
    let unreadable = facts.and_then(|(name, f)| Some((name, f.unreadable.as_ref()?)));
    if let Some((name, why)) = unreadable {
        warnings.push(format!(
            "cyan could not read the {name} ({why}), so `port` ({}) and the health path ({}) in cyan.yaml are guesses: set them to the port your app listens on and a path it answers",
            port.port, health.path
        ));
    } else if port.source == PortSource::Default {
        warnings.push(format!(
            "port {} is a guess ({}): set `port` in cyan.yaml to the port your app listens on",
            port.port,
            match dockerfile {
                Some(_) => "the Dockerfile has no EXPOSE",
                None => "there is no Dockerfile",
            }
        ));
    }
    if let VersionSource::File { value } = &version {
        if let Err(e) = crate::release::validate_version(value) {
            warnings.push(format!("the VERSION file will not do: {e}"));
        }
    }
    Detected {
        image: app.name.clone(),
        app,
        dockerfile: dockerfile.map(|(name, _)| name.to_string()),
        port,
        health,
        listen,
        version,
        warnings,
    }
}

/// A valid app name (1-40 of `a-z`, `0-9`, `-`, not starting or ending
/// with `-`) made from a folder's name, and what had to change.
fn app_name(folder: &str) -> AppName {
    let mut changes = Vec::new();
    if folder.chars().any(char::is_uppercase) {
        changes.push("lowercased".to_string());
    }
    let mut replaced: Vec<char> = Vec::new();
    let mut name = String::new();
    for c in folder.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
            name.push(c);
        } else {
            if !replaced.contains(&c) {
                replaced.push(c);
            }
            name.push('-');
        }
    }
    if !replaced.is_empty() {
        // `My App - Two` is my-app-two, not my-app---two.
        while name.contains("--") {
            name = name.replace("--", "-");
        }
        let shown: Vec<String> = replaced.iter().map(|c| format!("{c:?}")).collect();
        changes.push(format!("{} became '-'", shown.join(", ")));
    }
    if name.starts_with('-') || name.ends_with('-') {
        name = name.trim_matches('-').to_string();
        changes.push("'-' at the ends dropped".to_string());
    }
    if name.len() > 40 {
        name.truncate(40);
        name = name.trim_end_matches('-').to_string();
        changes.push("cut to 40 characters".to_string());
    }
    if name.is_empty() {
        name = "app".to_string();
        changes =
            vec!["no a-z letter or 0-9 digit in it, so: app (--app gives another)".to_string()];
    }
    debug_assert!(Name::parse(&name).is_ok(), "{name:?} is not a valid name");
    AppName {
        name,
        folder: Some(folder.to_string()),
        changes,
    }
}

fn choose_port(dockerfile: Option<(&str, &Facts)>) -> PortChoice {
    let guess = |why: String| PortChoice {
        port: DEFAULT_PORT,
        source: PortSource::Default,
        line: None,
        exposed: Vec::new(),
        why,
    };
    let Some((file, facts)) = dockerfile else {
        return guess(
            "a guess: there is no Dockerfile to read an EXPOSE from; set the port your app listens on"
                .into(),
        );
    };
    if let Some(why) = &facts.unreadable {
        return guess(format!(
            "a guess: cyan could not read the {file} ({why}); set the port your app listens on"
        ));
    }
    let mut exposed: Vec<&dockerfile::Exposed> = Vec::new();
    for e in &facts.exposed {
        if !exposed.iter().any(|seen| seen.port == e.port) {
            exposed.push(e);
        }
    }
    let ports: Vec<u16> = exposed.iter().map(|e| e.port).collect();
    let listed = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let unused = match facts.skipped.as_slice() {
        [] => String::new(),
        skipped => format!(" (not used: {})", skipped.join("; ")),
    };
    let check = facts.healthcheck.as_ref();
    let check_port = check.and_then(|h| h.url.as_ref()?.port);
    let written = |e: &dockerfile::Exposed| match e.written == e.port.to_string() {
        true => format!("EXPOSE {}", e.written),
        false => format!("EXPOSE {} (= {})", e.written, e.port),
    };
    let chosen = |e: &dockerfile::Exposed, why: String| PortChoice {
        port: e.port,
        source: PortSource::Expose,
        line: Some(e.line),
        exposed: ports.clone(),
        why: format!("{why}{unused}"),
    };
    match exposed.as_slice() {
        [] => match (check, check_port) {
            (Some(h), Some(port)) => PortChoice {
                port,
                source: PortSource::Healthcheck,
                line: Some(h.line),
                exposed: Vec::new(),
                why: format!(
                    "the {file} has no EXPOSE, and its HEALTHCHECK (line {}) calls port {port}{unused}",
                    h.line
                ),
            },
            _ => {
                let base = match &facts.base_image {
                    Some(b) => format!(" (its base image {b} may expose one; cyan does not read images)"),
                    None => String::new(),
                };
                guess(format!(
                    "a guess: the {file} has no EXPOSE{base}{unused}; set the port your app listens on"
                ))
            }
        },
        [one] => chosen(one, format!("from {} in the {file}, line {}", written(one), one.line)),
        [first, ..] => match exposed.iter().find(|e| Some(e.port) == check_port) {
            Some(called) => chosen(
                called,
                format!(
                    "the {file} exposes {listed}, and its HEALTHCHECK calls {}, so that one serves HTTP",
                    called.port
                ),
            ),
            None => chosen(
                first,
                format!(
                    "the first port the {file} exposes ({listed}; {}, line {}): cyan routes one port, so make it the one that serves HTTP",
                    written(first),
                    first.line
                ),
            ),
        },
    }
}

fn choose_health(dockerfile: Option<(&str, &Facts)>, port: u16) -> HealthChoice {
    let answer = "set a path your app answers with 200-399 (/ will do), or replace http with `tcp: true` to gate on a connect";
    let Some(check) = dockerfile.and_then(|(_, f)| f.healthcheck.as_ref()) else {
        let why = match dockerfile {
            Some((file, f)) if f.unreadable.is_some() => {
                format!("a guess: cyan could not read the {file}; {answer}")
            }
            Some((file, _)) => {
                format!("a guess: the {file} has no HEALTHCHECK to copy a path from; {answer}")
            }
            None => format!("a guess: there is no Dockerfile to copy a health path from; {answer}"),
        };
        return HealthChoice {
            path: DEFAULT_HEALTH_PATH.into(),
            source: HealthSource::Default,
            healthcheck: None,
            docker: false,
            deadline_secs: DEFAULT_DEADLINE.as_secs(),
            why,
            timing: None,
        };
    };
    let file = dockerfile.map_or("Dockerfile", |(f, _)| f);
    let command = shown(&check.command);
    let (path, source, why) = match &check.url {
        Some(url) => {
            let other_port = match url.port {
                Some(p) if p != port => format!(
                    " (it calls port {p}, not {port}: check which one serves HTTP)"
                ),
                _ => String::new(),
            };
            (
                url.path.clone(),
                HealthSource::Healthcheck,
                format!(
                    "the path the {file}'s HEALTHCHECK calls, on line {}: `{command}`{other_port}",
                    check.line
                ),
            )
        }
        None => (
            DEFAULT_HEALTH_PATH.to_string(),
            HealthSource::Default,
            format!(
                "a guess: the {file}'s HEALTHCHECK on line {}, `{command}`, calls no URL to copy a path from; {answer}",
                check.line
            ),
        ),
    };
    // Docker calls a container healthy only after its first check passes.
    let first = check.first_check;
    let timing = (first >= Duration::from_secs(10)).then(|| {
        format!(
            "Docker runs the HEALTHCHECK first {} after a container starts, so each deploy waits that long; --start-period=30s --start-interval=1s on it makes that sooner",
            humantime::format_duration(first)
        )
    });
    let deadline = DEFAULT_DEADLINE.max(first * 2);
    HealthChoice {
        path,
        source,
        healthcheck: Some(check.command.clone()),
        docker: true,
        deadline_secs: deadline.as_secs() + u64::from(deadline.subsec_nanos() > 0),
        why,
        timing,
    }
}

/// A command as a comment can show it: one line, at most 60 characters.
fn shown(command: &str) -> String {
    let one_line: String = command
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match one_line.char_indices().nth(60) {
        Some((at, _)) => format!("{}…", &one_line[..at]),
        None => one_line,
    }
}

/// A value as YAML reads it back unchanged: plain when that is safe,
/// else double-quoted (a JSON string is a YAML double-quoted scalar).
fn scalar(s: &str) -> String {
    let plain = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-:".contains(c))
        && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '/')
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
        );
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).expect("a string serializes")
    }
}

/// A key's line with a short comment after it, comments aligned.
fn keyed(line: &str, note: &str) -> String {
    format!("{line:<31} # {note}\n")
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

/// `text` as `#` comment lines at `indent`, wrapped before column 78.
fn comment(indent: usize, text: &str) -> String {
    let pad = " ".repeat(indent);
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent + 2 + line.len() + 1 + word.len() > 78 {
            out.push_str(&format!("{pad}# {line}\n"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(&format!("{pad}# {line}\n"));
    }
    out
}

/// The cyan.yaml text.
fn render(d: &Detected) -> String {
    let app = &d.app.name;
    let deploy = match d.version {
        VersionSource::None => "cyan deploy --version 1.0.0",
        _ => "cyan deploy",
    };
    let versions = match &d.version {
        VersionSource::File { value } => format!(
            "Versions: with no --version, cyan deploy takes the VERSION file beside this one (now {value:?})."
        ),
        VersionSource::Git { value } => format!(
            "Versions: with no --version, cyan deploy takes `git describe --tags --always` here (now {value:?}), plus -dirty- and a hash of the changes while some are uncommitted."
        ),
        VersionSource::None => "Versions: there is no VERSION file and no git repository here, so give one with --version. A version is immutable: deploy a new one for each change.".to_string(),
    };
    let mut y = String::new();
    y.push_str(&comment(
        0,
        &format!(
            "cyan.yaml for {app}, written by `cyan init`: what a first deploy needs. The README's config reference (\"cyan.yaml\") explains every other key; `cyan config check` checks this file. From this folder:"
        ),
    ));
    y.push_str(&format!(
        "#   {deploy:<29} # build, start beside live, gate, switch\n\
         #   {:<29} # what is live, and its URL\n\
         #   {:<29} # back to the previous version, at once\n",
        "cyan status", "cyan rollback"
    ));
    y.push_str(&comment(0, &versions));

    y.push('\n');
    let origin = match (&d.app.folder, d.app.changes.as_slice()) {
        (None, _) => "Given with --app.".to_string(),
        (Some(f), []) => format!("From the folder's name, {f:?}."),
        (Some(f), changes) => format!("From the folder's name, {f:?}: {}.", changes.join("; ")),
    };
    y.push_str(&comment(
        0,
        &format!(
            "The app's name: containers, labels and the proxy's route are named after it (lowercase letters, digits and '-'). {origin}"
        ),
    ));
    y.push_str(&format!("app: {}\n", scalar(app)));

    y.push('\n');
    y.push_str(&comment(
        0,
        "The image repository, without a tag: cyan tags each build with its version and `latest`. With no registry host it is built and run on this machine, never pushed; to push, name a registry:",
    ));
    y.push_str(&format!("#   image: ghcr.io/you/{app}\n"));
    y.push_str(&format!("image: {}\n", scalar(&d.image)));
    y.push_str("build:\n");
    y.push_str(&keyed(
        "  context: .",
        "what is sent to Docker, relative to this file",
    ));
    match &d.dockerfile {
        Some(file) => y.push_str(&keyed(
            &format!("  dockerfile: {}", scalar(file)),
            "relative to the context",
        )),
        None => {
            y.push_str(&comment(
                2,
                "There is no Dockerfile here yet: cyan deploy builds the image from one, so write it, or point this at yours.",
            ));
            y.push_str("  dockerfile: Dockerfile\n");
        }
    }

    y.push('\n');
    y.push_str(&comment(
        0,
        &format!(
            "The port the app listens on inside its container. {}. The app must listen on 0.0.0.0 there, not 127.0.0.1, or nothing outside the container reaches it.",
            capitalized(&d.port.why)
        ),
    ));
    y.push_str(&format!("port: {}\n", d.port.port));
    y.push_str(&keyed("replicas: 1", "containers per color"));
    y.push_str(&keyed(
        "init: true",
        "tini as PID 1, so SIGTERM stops the app at once",
    ));

    y.push('\n');
    y.push_str(&comment(
        0,
        &format!(
            "Where the cyan proxy serves the app: {}. A deploy moves this address from the old version to the new one in one step.",
            listen_url(d.listen)
        ),
    ));
    y.push_str("proxy:\n");
    let listen = match d.listen {
        SocketAddr::V4(v4) => v4.to_string(),
        SocketAddr::V6(v6) => scalar(&v6.to_string()),
    };
    y.push_str(&format!("  listen: {listen}\n"));
    y.push_str("  # Or by Host header as well (the README's proxy section says how):\n");
    y.push_str(&format!("  # host: {app}.example.com\n"));

    y.push('\n');
    y.push_str(&comment(
        0,
        "Every new container must pass this before it gets traffic; one that does not is removed, and the live version keeps serving.",
    ));
    y.push_str("health:\n");
    y.push_str(&comment(2, &format!("{}.", capitalized(&d.health.why))));
    y.push_str(&format!(
        "  http: {{ path: {}, expect: 200-399 }}\n",
        scalar(&d.health.path)
    ));
    if d.health.docker {
        y.push_str(&comment(
            2,
            "The image has a HEALTHCHECK, so Docker's `healthy` gates each container too, and its `unhealthy` fails the deploy (false: gate on HTTP alone).",
        ));
        if let Some(timing) = &d.health.timing {
            y.push_str(&comment(2, &format!("{timing}.")));
        }
        y.push_str("  docker: true\n");
    }
    y.push_str(&keyed(
        &format!("  deadline: {}s", d.health.deadline_secs),
        "the whole gate, all containers",
    ));

    y.push('\n');
    y.push_str(&comment(
        0,
        "After the switch, cyan can watch the proxy's 5xx ratio and switch back on its own. It needs traffic: below min_requests the verdict is inconclusive, and by default cyan waits for more, then switches back.",
    ));
    y.push_str("# verify: { duration: 30s, max_5xx_ratio: 0.01, min_requests: 20 }\n");
    y
}

/// The URL a listen address opens at from this host (an unspecified
/// address as loopback, as `Config::url` makes it).
fn listen_url(listen: SocketAddr) -> String {
    let reachable = match listen.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], listen.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, listen.port()))
        }
        _ => listen,
    };
    format!("http://{reachable}")
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn listen() -> SocketAddr {
        "127.0.0.1:8000".parse().unwrap()
    }

    /// Chooses from a Dockerfile's text, renders, and checks that cyan's
    /// own loader takes the file with the chosen values in it.
    fn init_from(folder: &str, dockerfile: Option<&str>, version: VersionSource) -> Detected {
        let facts = dockerfile.map(|text| ("Dockerfile", dockerfile::read(text)));
        let d = choose(folder, facts, version, None, listen());
        let yaml = render(&d);
        let config = Config::parse(&yaml, "cyan.yaml")
            .unwrap_or_else(|e| panic!("the written file does not load: {e}\n{yaml}"));
        assert_eq!(config.app.as_str(), d.app.name, "{yaml}");
        assert_eq!(config.image.as_str(), d.image);
        assert_eq!(config.port, d.port.port);
        assert_eq!(config.health.http_check().path, d.health.path);
        assert_eq!(config.health.deadline.0.as_secs(), d.health.deadline_secs);
        assert_eq!(config.proxy.listen, Some(listen()));
        for line in yaml.lines() {
            assert!(line.chars().count() <= 90, "a long line: {line}");
        }
        d
    }

    fn from_dockerfile(text: &str) -> Detected {
        init_from("web", Some(text), VersionSource::None)
    }

    #[test]
    fn folder_names_become_valid_app_names_and_say_what_changed() {
        let cases: [(&str, &str, &[&str]); 7] = [
            ("web", "web", &[]),
            (
                "My_Web App",
                "my-web-app",
                &["lowercased", "'_', ' ' became '-'"],
            ),
            (
                "api.v2 - New",
                "api-v2-new",
                &["lowercased", "'.', ' ' became '-'"],
            ),
            ("-svc-", "svc", &["'-' at the ends dropped"]),
            (
                "Café",
                "caf",
                &["lowercased", "'é' became '-'", "'-' at the ends dropped"],
            ),
            (
                "___",
                "app",
                &["no a-z letter or 0-9 digit in it, so: app (--app gives another)"],
            ),
            ("2048", "2048", &[]),
        ];
        for (folder, name, changes) in cases {
            let d = init_from(folder, None, VersionSource::None);
            assert_eq!(d.app.name, name, "{folder:?}");
            assert_eq!(d.app.changes, changes, "{folder:?}");
        }
        let long = "a".repeat(39) + "-b";
        let d = init_from(&long, None, VersionSource::None);
        assert_eq!(d.app.name, "a".repeat(39));
        assert_eq!(d.app.changes, ["cut to 40 characters"]);
    }

    #[test]
    fn the_port_is_the_first_exposed_and_says_why() {
        let one = from_dockerfile("FROM scratch\nEXPOSE 8080/tcp\n");
        assert_eq!((one.port.port, one.port.source), (8080, PortSource::Expose));
        assert_eq!(
            one.port.why,
            "from EXPOSE 8080/tcp (= 8080) in the Dockerfile, line 2"
        );
        let several = from_dockerfile("FROM scratch\nEXPOSE 9090 8081\nEXPOSE 9090\n");
        assert_eq!(
            (several.port.port, several.port.exposed.as_slice()),
            (9090, &[9090, 8081][..])
        );
        assert!(several
            .port
            .why
            .contains("the first port the Dockerfile exposes (9090, 8081"));
        let arg = from_dockerfile("FROM scratch\nARG PORT=3000\nEXPOSE ${PORT}\n");
        assert_eq!(arg.port.port, 3000);
        assert!(
            arg.port.why.contains("EXPOSE ${PORT} (= 3000)"),
            "{}",
            arg.port.why
        );
        let unset = from_dockerfile("FROM node:20\nARG PORT\nEXPOSE $PORT 53/udp\n");
        assert_eq!(
            (unset.port.port, unset.port.source),
            (DEFAULT_PORT, PortSource::Default)
        );
        assert!(
            unset.port.why.contains("$PORT has no value"),
            "{}",
            unset.port.why
        );
        assert!(unset.port.why.contains("53/udp"), "{}", unset.port.why);
        assert!(
            unset.port.why.contains("base image node:20"),
            "{}",
            unset.port.why
        );
        assert!(unset
            .warnings
            .iter()
            .any(|w| w.contains("port 8080 is a guess")));
    }

    #[test]
    fn the_healthcheck_gives_the_path_the_port_and_docker_gating() {
        let d = from_dockerfile(
            "FROM scratch\nEXPOSE 9000 8080\nHEALTHCHECK --interval=2s \\\n  CMD curl -fsS http://localhost:8080/status || exit 1\n",
        );
        assert_eq!(d.port.port, 8080, "the exposed port the check calls");
        assert!(
            d.port.why.contains("HEALTHCHECK calls 8080"),
            "{}",
            d.port.why
        );
        assert_eq!(
            (d.health.path.as_str(), d.health.source),
            ("/status", HealthSource::Healthcheck)
        );
        assert!(d.health.docker);
        assert_eq!(
            (d.health.deadline_secs, d.health.timing.as_deref()),
            (60, None)
        );
        let yaml = render(&d);
        assert!(yaml.contains("  docker: true\n"), "{yaml}");
        let words: Vec<&str> = yaml.split_whitespace().filter(|w| *w != "#").collect();
        assert!(
            words
                .join(" ")
                .contains("on line 3: `curl -fsS http://localhost:8080/status || exit 1`."),
            "{yaml}"
        );

        let no_expose =
            from_dockerfile("FROM scratch\nHEALTHCHECK CMD wget -qO- localhost:3000/up?deep=1\n");
        assert_eq!(
            (no_expose.port.port, no_expose.port.source),
            (3000, PortSource::Healthcheck)
        );
        assert_eq!(no_expose.health.path, "/up?deep=1");
        assert!(render(&no_expose).contains("path: \"/up?deep=1\""));
        // Docker's default interval: the first check 30s in, so 60s is tight.
        let slow = from_dockerfile(
            "FROM scratch\nEXPOSE 80\nHEALTHCHECK --interval=45s CMD [\"/bin/check\"]\n",
        );
        assert_eq!(
            (slow.health.path.as_str(), slow.health.source),
            (DEFAULT_HEALTH_PATH, HealthSource::Default)
        );
        assert!(
            slow.health.why.contains("calls no URL"),
            "{}",
            slow.health.why
        );
        assert_eq!(slow.health.deadline_secs, 90);
        assert!(slow.health.timing.as_deref().unwrap().contains("45s"));

        let none = from_dockerfile("FROM scratch\nEXPOSE 80\n");
        assert!(!none.health.docker && !render(&none).contains("docker:"));
        assert!(
            none.health.why.contains("no HEALTHCHECK"),
            "{}",
            none.health.why
        );
    }

    #[test]
    fn a_dockerfile_cyan_cannot_read_gives_guesses_and_says_so() {
        let d = from_dockerfile("FROM scratch\nRUN cat <<EOF > /etc/motd\nhi\nEOF\nEXPOSE 3000\n");
        assert_eq!(
            (d.port.port, d.port.source, d.health.source, d.health.docker),
            (
                DEFAULT_PORT,
                PortSource::Default,
                HealthSource::Default,
                false
            )
        );
        for why in [&d.port.why, &d.health.why] {
            assert!(
                why.starts_with("a guess: cyan could not read the Dockerfile"),
                "{why}"
            );
        }
        assert_eq!(d.warnings.len(), 1, "{:?}", d.warnings);
        assert!(
            d.warnings[0].contains("could not read the Dockerfile (line 2 has a heredoc")
                && d.warnings[0].contains("`port` (8080) and the health path (/healthz)"),
            "{}",
            d.warnings[0]
        );
    }

    #[test]
    fn every_variant_loads_with_the_config_loader() {
        let dockerfiles = [
            None,
            Some("FROM scratch\n"),
            Some("FROM scratch\nEXPOSE 1\n"),
            Some(
                "FROM scratch\nEXPOSE 65535/tcp 80\nHEALTHCHECK CMD curl http://[::1]:65535/a'b\n",
            ),
            Some("FROM scratch\nHEALTHCHECK CMD curl -f \"https://localhost/x y\"\n"),
            Some("FROM scratch\nHEALTHCHECK --interval=10m CMD true\n"),
        ];
        let versions = [
            VersionSource::None,
            VersionSource::File {
                value: "1.2.3".into(),
            },
            VersionSource::File {
                value: "not a version".into(),
            },
            VersionSource::Git {
                value: "v1.0-3-gabc1234".into(),
            },
        ];
        for dockerfile in dockerfiles {
            for version in &versions {
                for folder in ["web", "Web App", "-", "true", "9"] {
                    init_from(folder, dockerfile, version.clone());
                }
            }
        }
        let d = init_from(
            "web",
            None,
            VersionSource::File {
                value: "not a version".into(),
            },
        );
        assert!(
            d.warnings.iter().any(|w| w.contains("no Dockerfile here")),
            "{:?}",
            d.warnings
        );
        assert!(
            d.warnings
                .iter()
                .any(|w| w.contains("VERSION file will not do")),
            "{:?}",
            d.warnings
        );
        let given = Name::parse("given").unwrap();
        let d = choose("Folder", None, VersionSource::None, Some(&given), listen());
        assert_eq!(
            (d.app.name.as_str(), d.app.folder.as_deref()),
            ("given", None)
        );
        Config::parse(&render(&d), "cyan.yaml").unwrap();
        let v6 = choose(
            "web",
            None,
            VersionSource::None,
            None,
            "[::]:9000".parse().unwrap(),
        );
        let config = Config::parse(&render(&v6), "cyan.yaml").unwrap();
        assert_eq!(config.proxy.listen, Some(v6.listen));
        assert_eq!(listen_url(v6.listen), "http://[::1]:9000");
    }
}
