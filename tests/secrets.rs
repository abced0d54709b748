//! Secrets stay secret: real deploys on the real Docker engine at
//! `RUST_LOG=trace`, with `-o json` and `-o github`, then status and history.
//! A secret's value must reach the app (its container's `Env`, the one place
//! it belongs) and appear nowhere else: no output, log line, container label,
//! file in the proxy home, GitHub output file, or the proxy's environment.

mod util;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use util::{text, TestApp};

/// 32 hex characters from the kernel's generator: a value no log line holds
/// by chance.
fn random_hex() -> String {
    let mut buf = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut buf)
        .unwrap();
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn inspect(id: &str, field: &str) -> serde_json::Value {
    let out = Command::new("docker")
        .args(["inspect", "--format", &format!("{{{{json {field}}}}}"), id])
        .output()
        .unwrap();
    assert!(out.status.success(), "docker inspect {id}: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every regular file under `dir`, with its path.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            found.extend(files(&entry.path()));
        } else if kind.is_file() {
            found.push((entry.path(), std::fs::read(entry.path()).unwrap()));
        }
    }
    found
}

/// The environment of the `cyan proxy run` process serving `home`.
fn proxy_environ(home: &Path) -> Vec<u8> {
    // As `cyan` starts its own proxy: the home as one `--home=` argument.
    let wanted = format!("proxy\0run\0--home={}\0", home.display());
    for entry in std::fs::read_dir("/proc").unwrap().map(Result::unwrap) {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&wanted) {
            return std::fs::read(entry.path().join("environ")).unwrap();
        }
    }
    panic!("no `cyan proxy run --home {}` process", home.display());
}

/// What a finished command printed, kept to be searched.
struct Scan {
    places: Vec<(String, Vec<u8>)>,
}

impl Scan {
    fn add(&mut self, place: impl Into<String>, bytes: impl AsRef<[u8]>) {
        self.places.push((place.into(), bytes.as_ref().to_vec()));
    }

    fn command(&mut self, what: &str, out: &Output) {
        assert!(out.status.success(), "cyan {what} failed:\n{}", text(out));
        self.add(format!("{what}: stdout"), &out.stdout);
        self.add(format!("{what}: stderr"), &out.stderr);
    }

    /// Panics naming every place that holds `value`, and how many times.
    fn assert_absent(&self, value: &str) {
        let leaks: Vec<(&str, usize)> = self
            .places
            .iter()
            .map(|(place, bytes)| {
                let n = String::from_utf8_lossy(bytes).matches(value).count();
                (place.as_str(), n)
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        assert!(leaks.is_empty(), "the secret's value is in: {leaks:?}");
    }
}

#[test]
fn a_secret_reaches_the_app_and_nothing_else() {
    let (first, rotated) = (random_hex(), random_hex());
    let app = TestApp::new("secret", "secrets: [APP_TOKEN]\n");
    let gh = app.dir.join("github");
    std::fs::create_dir_all(&gh).unwrap();
    let cyan = |args: &[&str], token: &str| -> Output {
        app.command(args)
            .env("APP_TOKEN", token)
            .env("RUST_LOG", "trace")
            .env("GITHUB_OUTPUT", gh.join("output"))
            .env("GITHUB_STEP_SUMMARY", gh.join("summary"))
            .output()
            .unwrap()
    };
    let mut scan = Scan { places: Vec::new() };

    // The first deploy starts the proxy, which inherits RUST_LOG=trace.
    let out = cyan(&["deploy", "--version", "1", "-o", "json"], &first);
    scan.command("deploy -o json", &out);
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["version"], "1", "{result}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TRACE") && stderr.contains("planned"),
        "RUST_LOG=trace reached cyan's own logs, so the search below means something:\n{stderr}"
    );
    let with_token = |token: &str| -> BTreeSet<String> {
        let entry = format!("APP_TOKEN={token}");
        app.containers()
            .into_iter()
            .filter(|id| {
                inspect(id, ".Config.Env")
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e == &serde_json::Value::String(entry.clone()))
            })
            .collect()
    };
    let hash_of = |ids: &BTreeSet<String>| -> BTreeSet<String> {
        ids.iter()
            .map(|id| inspect(id, ".Config.Labels")["cyan.config-hash"].to_string())
            .collect()
    };
    let blue = with_token(&first);
    assert_eq!(blue.len(), 2, "both replicas got the secret in their Env");

    // A rotated secret is a new release of the same version, deployed blue/green.
    let out = cyan(
        &[
            "deploy",
            "--version",
            "1",
            "-o",
            "github",
            "--log-format",
            "json",
        ],
        &rotated,
    );
    scan.command("deploy -o github --log-format json", &out);
    let green = with_token(&rotated);
    assert_eq!(
        green.len(),
        2,
        "the rotated value reached both new replicas"
    );
    assert!(blue.is_disjoint(&green));
    let (blue_hash, green_hash) = (hash_of(&blue), hash_of(&green));
    assert_eq!((blue_hash.len(), green_hash.len()), (1, 1));
    assert_ne!(blue_hash, green_hash, "the config hash follows the secret");

    // The same value again is the same release: the hash is stable across runs.
    let before = app.containers();
    let out = cyan(&["deploy", "--version", "1"], &rotated);
    scan.command("deploy again", &out);
    assert_eq!(app.containers(), before, "an unchanged secret redeployed");

    for args in [
        &["status"][..],
        &["status", "-o", "json"],
        &["history"],
        &["history", "-o", "json"],
    ] {
        let out = cyan(args, &rotated);
        scan.command(&args.join(" "), &out);
    }

    // Labels only: the Env of the app's containers holds the value on purpose.
    for id in app.containers() {
        scan.add(
            format!("labels of {id}"),
            inspect(&id, ".Config.Labels").to_string(),
        );
    }
    let home = files(&app.home);
    for name in ["proxy.json", "proxy.log"] {
        assert!(
            home.iter()
                .any(|(p, bytes)| p.ends_with(name) && !bytes.is_empty()),
            "{name} in the proxy home is searched"
        );
    }
    let github = files(&gh);
    assert_eq!(
        github.len(),
        2,
        "GITHUB_OUTPUT and GITHUB_STEP_SUMMARY written"
    );
    for (path, bytes) in home.into_iter().chain(github) {
        scan.add(path.display().to_string(), bytes);
    }
    scan.add("the proxy's environment", proxy_environ(&app.home));

    scan.assert_absent(&first);
    scan.assert_absent(&rotated);
}
