//! What `cyan init` reads from the project's folder, and the value it
//! chooses for each key: the app's name (from the folder's), the port and
//! the health gate (from the Dockerfile, which `dockerfile` reads), and
//! where versions come from (a VERSION file, git). Each choice carries why
//! it was made, in the words the written file and the report show; a guess
//! says it is one.
//!
//! Reading the folder (`detect`) is apart from choosing (`choose`, no I/O),
//! so the choices are tested from a Dockerfile's text alone.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::dockerfile::{self, Facts};
use super::InitOptions;
use crate::config::Name;
use crate::error::{Error, Result};

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

/// Reads the folder: its name, its Dockerfile, and where versions come from.
pub(super) fn detect(dir: &Path, opts: &InitOptions) -> Result<Detected> {
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
pub(super) fn choose(
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

#[cfg(test)]
mod tests {
    use super::super::template::render;
    use super::super::template::tests::init_from;
    use super::*;

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
}
