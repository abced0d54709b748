//! What `deploy`, `rollback`, `status` and `history` print, collected the
//! same way on each platform, and the contract the reports keep between
//! Docker and Kubernetes: the same JSON keys, and under `-o github` (the
//! Action) the same step outputs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Output;

use serde_json::Value;

/// Asserts the contract between a Docker and a Kubernetes run of
/// `Reports::collect`: the same keys in every JSON report, the same step
/// outputs, and the values both must agree on.
pub fn same_contract(d: &Reports, k: &Reports) {
    for (what, doc, kub) in [
        ("deploy", &d.deploy, &k.deploy),
        ("rollback", &d.rollback, &k.rollback),
        ("status", &d.status, &k.status),
        ("history", &d.history, &k.history),
    ] {
        same_keys(what, doc, kub);
    }
    assert!(d.status["live"].is_object() && k.status["live"].is_object());
    assert!(d.history[0]["release"].is_object() && k.history[0]["release"].is_object());
    for r in [&d, &k] {
        assert_eq!(r.status["phase"], "live", "{}: {:#}", r.platform, r.status);
        assert_eq!(
            r.status["version"], "1.0.0",
            "{}: {:#}",
            r.platform, r.status
        );
        assert_eq!(r.history[0]["event"], "rolled-back", "{}", r.platform);
    }

    for (what, doc, kub) in [
        ("deploy", &d.deploy_outputs, &k.deploy_outputs),
        ("status", &d.status_outputs, &k.status_outputs),
    ] {
        assert_eq!(
            doc.keys().collect::<Vec<_>>(),
            kub.keys().collect::<Vec<_>>(),
            "{what} step outputs differ:\ndocker: {doc:?}\nkubernetes: {kub:?}"
        );
        for declared in [
            "version",
            "image",
            "digest",
            "previous-version",
            "url",
            "phase",
        ] {
            assert!(doc.contains_key(declared), "{what}: no {declared}: {doc:?}");
        }
    }
    for r in [&d, &k] {
        let o = &r.deploy_outputs;
        assert_eq!(o["version"], "2.0.0", "{}: {o:?}", r.platform);
        assert_eq!(o["previous-version"], "1.0.0", "{}: {o:?}", r.platform);
        assert_eq!(o["phase"], "live", "{}: {o:?}", r.platform);
        assert_eq!(o["platform"], r.platform);
    }
}

/// What one platform printed for the same commands.
pub struct Reports {
    pub platform: &'static str,
    pub deploy: Value,
    pub rollback: Value,
    pub status: Value,
    pub history: Value,
    pub deploy_outputs: BTreeMap<String, String>,
    pub status_outputs: BTreeMap<String, String>,
}

impl Reports {
    /// Deploys 1.0.0 (`-o json`), then 2.0.0 as the Action does (`-o
    /// github`), rolls back, and reads status and history.
    pub fn collect(
        platform: &'static str,
        scratch: &Path,
        run: impl Fn(&[&str], &[(&str, &Path)]) -> Output,
    ) -> Reports {
        let json = |args: &[&str]| -> Value {
            let out = run(args, &[]);
            assert!(
                out.status.success(),
                "{platform}: cyan {args:?}:\n{}",
                super::text(&out)
            );
            serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("{platform}: {args:?}: {e}\n{}", super::text(&out)))
        };
        let github = |args: &[&str]| -> BTreeMap<String, String> {
            let file = scratch.join(format!("{platform}-{}", args[0]));
            let summary = scratch.join(format!("{platform}-{}-summary", args[0]));
            let out = run(
                args,
                &[("GITHUB_OUTPUT", &file), ("GITHUB_STEP_SUMMARY", &summary)],
            );
            assert!(
                out.status.success(),
                "{platform}: cyan {args:?}:\n{}",
                super::text(&out)
            );
            step_outputs(&file)
        };
        let deploy = json(&["deploy", "--version", "1.0.0", "-o", "json"]);
        let deploy_outputs = github(&["deploy", "--version", "2.0.0", "-o", "github"]);
        let status_outputs = github(&["status", "-o", "github"]);
        let rollback = json(&["rollback", "-o", "json"]);
        Reports {
            platform,
            deploy,
            rollback,
            status: json(&["status", "-o", "json"]),
            history: json(&["history", "-o", "json"]),
            deploy_outputs,
            status_outputs,
        }
    }
}

/// Asserts that `docker` and `kube` have the same keys wherever both hold
/// an object (in arrays, their first elements); `what` names the place.
fn same_keys(what: &str, docker: &Value, kube: &Value) {
    match (docker, kube) {
        (Value::Object(d), Value::Object(k)) => {
            let (dk, kk): (BTreeSet<&String>, BTreeSet<&String>) =
                (d.keys().collect(), k.keys().collect());
            assert_eq!(
                dk, kk,
                "{what}: the keys differ\ndocker: {docker:#}\nkubernetes: {kube:#}"
            );
            for (key, value) in d {
                same_keys(&format!("{what}.{key}"), value, &k[key]);
            }
        }
        (Value::Array(d), Value::Array(k)) => {
            if let (Some(d), Some(k)) = (d.first(), k.first()) {
                same_keys(&format!("{what}[0]"), d, k);
            }
        }
        _ => {}
    }
}

/// The step outputs cyan wrote to a `$GITHUB_OUTPUT` file (`name=value`
/// lines, or `name<<DELIMITER` blocks).
pub fn step_outputs(file: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut outputs = BTreeMap::new();
    let mut lines = text.lines();
    let is_name = |n: &str| n.chars().all(|c| c.is_ascii_lowercase() || c == '-');
    while let Some(line) = lines.next() {
        match (line.split_once("<<"), line.split_once('=')) {
            (Some((name, delimiter)), _) if is_name(name) => {
                let value: Vec<&str> = lines.by_ref().take_while(|l| *l != delimiter).collect();
                outputs.insert(name.to_string(), value.join("\n"));
            }
            (_, Some((name, value))) => {
                outputs.insert(name.to_string(), value.to_string());
            }
            _ => panic!("{}: not an output line: {line:?}", file.display()),
        }
    }
    outputs
}
