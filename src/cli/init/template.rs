//! The cyan.yaml `cyan init` writes: the keys a first deploy needs, each
//! with a comment that says what it does and where its value came from.
//!
//! Values are written so that YAML reads them back unchanged (`scalar`),
//! and comments wrap before column 78. `init` checks the text with cyan's
//! own loader before it writes it; the tests here check that every kind of
//! project gives a file that loads, with the values chosen.

use std::net::SocketAddr;

use super::detect::{Detected, VersionSource};

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
pub(super) fn render(d: &Detected) -> String {
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
pub(super) fn listen_url(listen: SocketAddr) -> String {
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

#[cfg(test)]
pub(super) mod tests {
    use super::super::detect::choose;
    use super::super::dockerfile;
    use super::*;
    use crate::config::{Config, Name};

    fn listen() -> SocketAddr {
        "127.0.0.1:8000".parse().unwrap()
    }

    /// Chooses from a Dockerfile's text, renders, and checks that cyan's
    /// own loader takes the file with the chosen values in it (`detect`'s
    /// tests start from it too).
    pub(in crate::cli::init) fn init_from(
        folder: &str,
        dockerfile: Option<&str>,
        version: VersionSource,
    ) -> Detected {
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
