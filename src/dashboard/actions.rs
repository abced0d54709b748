//! The page's buttons: promote, abort and rollback, run as the CLI runs
//! them.
//!
//! Each action is `cyan <verb> -c <config> [-e <environment>] -o json`,
//! run as a child process of the dashboard: the same code, the same deploy
//! lock (a button pressed while a deploy runs is refused with exit 4, as
//! the command would be), the same exit codes, and the same record and
//! history. The child runs in its own process group and is never killed
//! with the request: a browser closed mid-rollback does not stop the
//! rollback half-way.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::exit;

/// How long an action may take before the page is told it still runs.
const ANSWER_WITHIN: Duration = Duration::from_secs(600);

/// What a button asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    Promote,
    Abort,
    Rollback,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Promote => "promote",
            Verb::Abort => "abort",
            Verb::Rollback => "rollback",
        }
    }
}

/// `POST /api/actions`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub action: Verb,
    pub app: String,
    pub environment: String,
    /// Rollback only: the version to go back to (`cyan rollback --to`).
    #[serde(default)]
    pub to: Option<String>,
}

/// What became of an action: the command's exit code and its report (or
/// error object), as `-o json` printed them.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The command as it was run, for the page and the log.
    pub command: String,
    /// `None` when it could not be run, or was killed by a signal.
    pub exit_code: Option<i32>,
    /// What the exit code means (`cyan --help`'s list).
    pub meaning: String,
    /// The command's JSON result, or its `{"error": {kind, message}}`.
    pub report: Option<serde_json::Value>,
}

/// The apps the dashboard may act on: `(app, environment)` to its
/// cyan.yaml, and how to run cyan.
pub struct Actions {
    pub exe: PathBuf,
    /// `--home`, passed on.
    pub home: Option<PathBuf>,
    pub targets: BTreeMap<(String, String), Target>,
}

/// One environment of a cyan.yaml.
#[derive(Debug, Clone)]
pub struct Target {
    pub config: PathBuf,
    /// Whether `-e` is passed (the file has `environments:`).
    pub named: bool,
}

impl Actions {
    /// Runs `req`. Errors: an app and environment the dashboard was not
    /// given, or a version with a character no version has.
    ///
    /// `by` is who pressed the button: the command records it in the
    /// history (`CYAN_BY`), before its own user and host.
    pub async fn run(&self, req: &Request, by: &str) -> Result<Outcome, String> {
        let target = self
            .targets
            .get(&(req.app.clone(), req.environment.clone()))
            .ok_or_else(|| {
                format!(
                    "no cyan.yaml of {} ({}) was given to this dashboard: it acts only on the apps of its -c files",
                    req.app, req.environment
                )
            })?;
        let mut args: Vec<OsString> = Vec::new();
        if let Some(home) = &self.home {
            args.push(crate::proxy::flag_arg("home", home));
        }
        args.push(req.action.as_str().into());
        args.push(crate::proxy::flag_arg("config", &target.config));
        if target.named {
            args.push(format!("--environment={}", req.environment).into());
        }
        if let Some(to) = &req.to {
            if req.action != Verb::Rollback {
                return Err("`to` is for a rollback only".into());
            }
            if to.is_empty()
                || !to
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
            {
                return Err(format!("{to:?} is not a version"));
            }
            args.push(format!("--to={to}").into());
        }
        args.push("--output=json".into());
        let shown: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
        let command = format!("cyan {}", shown.join(" "));
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("CYAN_BY", format!("{by} (dashboard)"))
            .process_group(0)
            .kill_on_drop(false);
        tracing::warn!("dashboard action by {by}: {command}");
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.exe.display()))?;
        // Its own task: the request may go away, the action finishes.
        let running = tokio::spawn(child.wait_with_output());
        let out = match tokio::time::timeout(ANSWER_WITHIN, running).await {
            Ok(Ok(Ok(out))) => out,
            Ok(Ok(Err(e))) => return Err(format!("{command}: {e}")),
            Ok(Err(e)) => return Err(format!("{command}: {e}")),
            Err(_) => {
                return Ok(Outcome {
                    command,
                    exit_code: None,
                    meaning: "still running after 10 minutes: see cyan status".into(),
                    report: None,
                })
            }
        };
        let code = out.status.code();
        tracing::warn!("dashboard action by {by}: {command} exited {code:?}");
        Ok(Outcome {
            command,
            exit_code: code,
            meaning: meaning(code).into(),
            report: serde_json::from_slice(&out.stdout).ok().or_else(|| {
                let tail = String::from_utf8_lossy(&out.stderr);
                let tail: Vec<&str> = tail.lines().rev().take(5).collect();
                Some(serde_json::json!({"error": {"kind": "output", "message": tail.into_iter().rev().collect::<Vec<_>>().join("\n")}}))
            }),
        })
    }
}

/// The exit codes of `cyan --help`.
fn meaning(code: Option<i32>) -> &'static str {
    let Some(code) = code.and_then(|c| u8::try_from(c).ok()) else {
        return "killed by a signal";
    };
    match code {
        exit::OK => "done",
        exit::INTERNAL => "internal error",
        exit::CONFIG => "config error",
        exit::GATE_FAILED => "health gate failed",
        exit::LOCK_HELD => "the app's lock is held by another deploy",
        exit::UNREACHABLE => "Docker, the proxy or the registry is unreachable",
        exit::VERIFY_FAILED => "verification failed (rolled back)",
        exit::REFUSED => "refused (e.g. nothing to roll back to)",
        exit::HOOK_FAILED => "a lifecycle hook failed",
        _ => "failed",
    }
}
