//! GitHub Actions' side channels: workflow commands, step outputs and the
//! job summary.
//!
//! `--output github` (what `action.yml` uses) routes a command's result
//! here instead of to plain stdout. Kept apart from `output`'s own code because these
//! are file formats with escaping rules of their own, and they are tested as
//! such.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use super::fmt_duration;

/// Escapes the message of a workflow command (`::error::message`).
pub fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a property of a workflow command (`::error title=…::`).
pub fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// The step outputs of a result: its top-level scalar fields, with
/// snake_case keys in the kebab-case GitHub users write
/// (`previous_version` → `previous-version`). Nulls become empty strings so
/// every output the action declares is always set.
pub fn outputs(value: &serde_json::Value) -> Vec<(String, String)> {
    let Some(map) = value.as_object() else {
        return Vec::new();
    };
    map.iter()
        .filter_map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => String::new(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Number(n) => n.to_string(),
                _ => return None,
            };
            Some((k.replace('_', "-"), text))
        })
        .collect()
}

/// Appends `name=value` lines in the `$GITHUB_OUTPUT` file format; values
/// with a line break use the heredoc form with a delimiter they cannot hold.
pub fn write_outputs(file: &Path, outputs: &[(String, String)]) -> std::io::Result<()> {
    let mut text = String::new();
    for (name, value) in outputs {
        if value.contains('\n') || value.contains('\r') {
            let mut delimiter = String::from("CYAN_EOF");
            while value.contains(&delimiter) {
                delimiter.push('_');
            }
            let _ = writeln!(text, "{name}<<{delimiter}\n{value}\n{delimiter}");
        } else {
            let _ = writeln!(text, "{name}={value}");
        }
    }
    append(file, &text)
}

pub fn append(file: &Path, text: &str) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?
        .write_all(text.as_bytes())
}

/// One finished (or failed) phase of the run, for the summary's timings.
#[derive(Debug, Clone)]
pub struct StepTiming {
    pub name: String,
    pub took: Duration,
    pub ok: bool,
}

/// What the job summary is made of.
pub struct Summary<'a> {
    pub ok: bool,
    pub headline: &'a str,
    /// Preformatted text under the headline (an error with log lines).
    pub detail: Option<&'a str>,
    pub fields: &'a [(String, String)],
    pub gates: &'a [String],
    pub steps: &'a [StepTiming],
}

impl Summary<'_> {
    /// Markdown for `$GITHUB_STEP_SUMMARY`: the headline, the release as a
    /// table, the gate's replicas, timings, and how to roll back.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let mark = if self.ok { "✅" } else { "❌" };
        let mut lines = self.headline.lines();
        let _ = writeln!(md, "### {mark} {}\n", lines.next().unwrap_or("cyan"));
        for more in lines {
            let _ = writeln!(md, "{}  ", more.trim());
        }
        if let Some(detail) = self.detail {
            let _ = writeln!(md, "```\n{}\n```", detail.replace("```", "'''"));
        }
        let shown: Vec<_> = self
            .fields
            .iter()
            .filter(|(k, v)| !v.is_empty() && k != "rollback-command")
            .collect();
        if !shown.is_empty() {
            md.push_str("\n| | |\n|---|---|\n");
            for (k, v) in shown {
                let _ = writeln!(md, "| {k} | `{}` |", v.replace('|', "\\|"));
            }
        }
        if !self.gates.is_empty() {
            md.push_str("\n**Health gate**\n\n");
            for g in self.gates {
                let _ = writeln!(md, "- {g}");
            }
        }
        if !self.steps.is_empty() {
            md.push_str("\n| step | took |\n|---|---:|\n");
            for s in self.steps {
                let mark = if s.ok { "" } else { "❌ " };
                let _ = writeln!(md, "| {mark}{} | {} |", s.name, fmt_duration(s.took));
            }
        }
        if let Some((_, cmd)) = self.fields.iter().find(|(k, _)| k == "rollback-command") {
            if !cmd.is_empty() {
                let _ = writeln!(
                    md,
                    "\n**Roll back:** `{cmd}`, or run this workflow with `command: rollback`. \
                     The previous color is still running, so the switch is instant."
                );
            }
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_command_escaping_keeps_one_line() {
        assert_eq!(escape_data("50% done\r\nnext"), "50%25 done%0D%0Anext");
        assert_eq!(escape_property("a:b,c"), "a%3Ab%2Cc");
    }

    #[test]
    fn outputs_are_scalar_fields_in_kebab_case() {
        let v = serde_json::json!({
            "version": "2.0.0", "previous_version": null, "replicas": 2,
            "ok": true, "containers": ["x"],
        });
        let mut got = outputs(&v);
        got.sort();
        assert_eq!(
            got,
            [
                ("ok".to_string(), "true".to_string()),
                ("previous-version".into(), "".into()),
                ("replicas".into(), "2".into()),
                ("version".into(), "2.0.0".into()),
            ]
        );
    }

    #[test]
    fn multiline_outputs_use_a_delimiter_the_value_lacks() {
        let dir = std::env::temp_dir().join(format!("cyan-gh-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("out");
        write_outputs(
            &file,
            &[
                ("a".into(), "1".into()),
                ("b".into(), "x\nCYAN_EOF\ny".into()),
            ],
        )
        .unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text, "a=1\nb<<CYAN_EOF_\nx\nCYAN_EOF\ny\nCYAN_EOF_\n");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn summary_shows_release_gates_timings_and_rollback() {
        let fields = [
            ("version".to_string(), "2.0.0".to_string()),
            ("previous-version".into(), "".into()),
            (
                "rollback-command".into(),
                "cyan rollback -c cyan.yaml".into(),
            ),
        ];
        let steps = [StepTiming {
            name: "switch traffic to green (2.0.0)".into(),
            took: Duration::from_millis(3),
            ok: true,
        }];
        let md = Summary {
            ok: true,
            headline: "web 2.0.0 is live on green",
            detail: None,
            fields: &fields,
            gates: &["web-1: 2/2 GET /healthz -> 200".into()],
            steps: &steps,
        }
        .markdown();
        assert!(md.starts_with("### ✅ web 2.0.0 is live on green\n"));
        assert!(md.contains("| version | `2.0.0` |"));
        assert!(
            !md.contains("previous-version"),
            "empty fields are left out"
        );
        assert!(md.contains("- web-1: 2/2 GET /healthz -> 200"));
        assert!(md.contains("| switch traffic to green (2.0.0) | 3ms |"));
        assert!(md.contains("**Roll back:** `cyan rollback -c cyan.yaml`"));
    }
}
