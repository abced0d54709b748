//! The deliveries log: one JSON line per thing `cyan serve` did with a
//! webhook delivery (refused it, ignored it, queued a deploy, and how that
//! deploy ended), in `<state>/deliveries.jsonl`, readable by its owner only.
//!
//! A log, appended to and never rewritten: a deploy is a `queued` line and
//! later a `deployed` / `failed` / `superseded` / `awaiting_approval` line
//! with the same delivery id. [`Log::latest`] folds it into one line per
//! delivery and target, newest first, for `cyan serve deliveries`; it also
//! tells a redelivery of one that already deployed ([`Log::deployed`]).

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What became of a delivery (or of one of its pushed refs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Not taken: not a forge's, a forge not listed, a bad signature, unreadable.
    Refused,
    /// Taken, with nothing to do (a ping, another event, no rule, a redelivery).
    Ignored,
    /// A deploy (or a preview's removal) waits for its environment.
    Queued,
    /// A newer push to the same environment came first; this one never ran.
    Superseded,
    /// The deploy (and its `then` promotion) exited 0.
    Deployed,
    /// The fetch, the deploy or the promotion failed.
    Failed,
    /// The deploy stopped at the gated candidate, for `cyan promote`.
    AwaitingApproval,
}

impl Entry {
    /// Adds a queued deploy's commit to its environment's push order.
    fn note_pushed(&self, pushed: &mut HashMap<String, Vec<String>>) {
        let (Verdict::Queued, Some(d), Some(c)) = (self.verdict, &self.deploy, &self.commit) else {
            return;
        };
        let order = pushed.entry(d.environment.clone()).or_default();
        if !order.contains(c) {
            order.push(c.clone());
        }
    }

    /// The keys a deployed entry adds to `Log::deployed`; none otherwise.
    fn deployed_keys(&self) -> Vec<(String, String)> {
        let Some(d) = self.deploy.as_ref().filter(|_| self.verdict.deployed()) else {
            return Vec::new();
        };
        let mut keys = vec![(self.id.clone(), d.environment.clone())];
        if let Some(c) = &self.commit {
            keys.push((format!("commit {c}"), d.environment.clone()));
        }
        keys
    }
}

impl Verdict {
    /// Whether the delivery's deploy happened: `deployed`, or a chain that
    /// stopped where it was to, at an approval. A redelivery of it is not
    /// deployed again.
    pub fn deployed(self) -> bool {
        matches!(self, Verdict::Deployed | Verdict::AwaitingApproval)
    }

    /// As written in the log: `queued`, `awaiting_approval`, …
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Refused => "refused",
            Verdict::Ignored => "ignored",
            Verdict::Queued => "queued",
            Verdict::Superseded => "superseded",
            Verdict::Deployed => "deployed",
            Verdict::Failed => "failed",
            Verdict::AwaitingApproval => "awaiting_approval",
        }
    }
}

/// The deploy a line is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployRecord {
    /// The environment deployed (for a preview, `config::branch_environment`).
    pub environment: String,
    pub version: String,
    /// The cyan subprocess's exit code (its `error::exit` codes); `None`
    /// before it ran, or when it did not start or was killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Its `-o json` report (or `{"error": …}`), when it printed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<serde_json::Value>,
    /// What went wrong, in cyan serve's words (the fetch, a start failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The forge's delivery id (`forge::Delivery::id`); empty when refused
    /// before it was read.
    pub id: String,
    /// `github`, `gitea`, …; `None` when no forge was recognized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The pushed ref (`refs/heads/main`).
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// The pushed object, full hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// When the delivery arrived, RFC 3339 UTC.
    pub received_at: String,
    pub verdict: Verdict,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<DeployRecord>,
}

impl Entry {
    /// What the line is about within its delivery: the deploy's
    /// environment, else the ref, else nothing (a whole delivery).
    fn target(&self) -> (&str, &str) {
        let env = self.deploy.as_ref().map_or("", |d| d.environment.as_str());
        (
            self.id.as_str(),
            if env.is_empty() {
                self.git_ref.as_deref().unwrap_or("")
            } else {
                env
            },
        )
    }
}

/// The log file, appended to by one server (a lock per line).
#[derive(Debug)]
pub struct Log {
    path: PathBuf,
    /// What deployed: (delivery id, environment) and (`commit <sha>`,
    /// environment) of every deploy that ended `deployed` (or at an
    /// approval).
    deployed: Mutex<HashSet<(String, String)>>,
    /// Each environment's pushed commits, in the order they were first
    /// queued: what tells a replayed old push from a new one.
    pushed: Mutex<HashMap<String, Vec<String>>>,
    write: Mutex<()>,
}

impl Log {
    /// `<state>/deliveries.jsonl`, reading what it holds already (to know
    /// the deliveries that deployed).
    ///
    /// Errors: the file exists and cannot be read (`Error::Platform`).
    pub fn open(state: &Path) -> Result<Log> {
        let path = state.join("deliveries.jsonl");
        let entries = read(&path)?;
        let deployed = entries.iter().flat_map(Entry::deployed_keys).collect();
        let mut pushed = HashMap::new();
        for e in &entries {
            e.note_pushed(&mut pushed);
        }
        Ok(Log {
            path,
            deployed: Mutex::new(deployed),
            pushed: Mutex::new(pushed),
            write: Mutex::new(()),
        })
    }

    /// Appends one line (the file is made 0600). A line that cannot be
    /// written is logged, not fatal: the deploy it records went on.
    pub fn append(&self, entry: &Entry) {
        self.deployed
            .lock()
            .expect("log lock")
            .extend(entry.deployed_keys());
        entry.note_pushed(&mut self.pushed.lock().expect("log lock"));
        let mut line = serde_json::to_vec(entry).expect("serializable");
        line.push(b'\n');
        let _guard = self.write.lock().expect("log lock");
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .and_then(|mut f| f.write_all(&line));
        if let Err(e) = written {
            tracing::error!(path = %self.path.display(), "cannot write the deliveries log: {e}");
        }
    }

    /// Whether `commit` was deployed to `environment` already (by any
    /// delivery): a replay of an old push under a new id is no downgrade.
    pub fn deployed_commit(&self, commit: &str, environment: &str) -> bool {
        self.deployed
            .lock()
            .expect("log lock")
            .contains(&(format!("commit {commit}"), environment.to_string()))
    }

    /// A commit pushed after `commit` and deployed to `environment`, if
    /// there is one: then `commit` sent again (under any delivery id) is an
    /// old push replayed, and deploying it would go back.
    pub fn newer_deployed(&self, commit: &str, environment: &str) -> Option<String> {
        let pushed = self.pushed.lock().expect("log lock");
        let order = pushed.get(environment)?;
        let at = order.iter().position(|c| c == commit)?;
        order[at + 1..]
            .iter()
            .find(|c| self.deployed_commit(c, environment))
            .cloned()
    }

    /// Whether delivery `id` already deployed `environment`.
    pub fn deployed(&self, id: &str, environment: &str) -> bool {
        self.deployed
            .lock()
            .expect("log lock")
            .contains(&(id.to_string(), environment.to_string()))
    }
}

/// Every line of `<state>/deliveries.jsonl`, oldest first; none when there
/// is no file. A line that does not parse (a torn last write) is skipped.
///
/// Errors: the file cannot be read (`Error::Platform`).
pub fn read(path: &Path) -> Result<Vec<Entry>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::Platform(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// The log folded for people: the last line of each delivery and target
/// (a `queued` line gives way to how its deploy ended), newest first.
pub fn latest(entries: Vec<Entry>) -> Vec<Entry> {
    let mut seen = HashSet::new();
    let mut out: Vec<Entry> = Vec::new();
    for e in entries.into_iter().rev() {
        let (id, target) = e.target();
        if id.is_empty() || seen.insert((id.to_string(), target.to_string())) {
            out.push(e);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, commit: &str, verdict: Verdict) -> Entry {
        Entry {
            id: id.into(),
            forge: Some("gitea".into()),
            repo: Some("acme/web".into()),
            git_ref: Some("refs/heads/main".into()),
            commit: Some(commit.into()),
            received_at: "2026-11-30T12:00:00Z".into(),
            verdict,
            reason: None,
            deploy: Some(DeployRecord {
                environment: "staging".into(),
                version: commit[..4].into(),
                exit_code: None,
                report: None,
                error: None,
            }),
        }
    }

    #[test]
    fn an_old_push_sent_again_is_told_from_a_failed_one_and_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("cyan-deliveries-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = Log::open(&dir).unwrap();
        // A failed, then B deployed: A is older than a deployed push.
        log.append(&line("1", "aaaa1", Verdict::Queued));
        log.append(&line("1", "aaaa1", Verdict::Failed));
        assert_eq!(
            log.newer_deployed("aaaa1", "staging"),
            None,
            "A's redelivery may deploy"
        );
        log.append(&line("2", "bbbb2", Verdict::Queued));
        log.append(&line("2", "bbbb2", Verdict::Deployed));
        assert_eq!(
            log.newer_deployed("aaaa1", "staging").as_deref(),
            Some("bbbb2")
        );
        assert_eq!(log.newer_deployed("bbbb2", "staging"), None);
        assert!(log.deployed_commit("bbbb2", "staging"));
        assert_eq!(log.newer_deployed("aaaa1", "production"), None);
        // Read again from the file, as a restarted server does.
        let again = Log::open(&dir).unwrap();
        assert_eq!(
            again.newer_deployed("aaaa1", "staging").as_deref(),
            Some("bbbb2")
        );
        assert!(again.deployed("2", "staging") && !again.deployed("1", "staging"));
        std::fs::remove_dir_all(&dir).ok();
    }
}
