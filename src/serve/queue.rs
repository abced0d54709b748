//! One deploy per environment at a time, and what a deploy is: the
//! pushed commit fetched ([`super::fetch`]), then `cyan deploy` (and
//! `cyan promote --from/--to` for a rule's `then`, or `cyan remove` for a
//! deleted preview branch) run as subprocesses of the same binary.
//!
//! Each target (an environment, or a branch's preview of one) has at most
//! one job running and one waiting. A push for a busy target waits; a
//! later one replaces the one waiting, which is logged `superseded`: the
//! environment ends on the newest push, without deploying every commit in
//! between. A subprocess, not a call into the library: the deploy is
//! exactly what `cyan deploy` does from a shell, with its own lock, exit
//! code and JSON report, and a crash in it does not take the server down.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::process::Command;

use super::deliveries::{DeployRecord, Entry, Log, Verdict};
use super::fetch::Fetcher;
use super::rules::Preview;
use crate::config::SecretRef;

/// What a job does.
#[derive(Debug, Clone)]
pub enum Action {
    /// Fetch `commit` and deploy it as `version`, then promote to `then`.
    Deploy {
        commit: String,
        git_ref: String,
        version: String,
        then: Option<String>,
    },
    /// Remove the preview (its branch was deleted).
    Remove,
}

/// One deploy or removal, for one target.
#[derive(Debug, Clone)]
pub struct Job {
    /// The log line it started as (`queued`); its later lines copy it.
    pub entry: Entry,
    /// The environment of cyan.yaml (a preview's base).
    pub environment: String,
    pub preview: Option<Preview>,
    pub action: Action,
}

impl Job {
    /// The target's name: the environment, or for a preview the one
    /// `cyan deploy --branch` makes (`config::branch_environment`).
    pub fn target(&self) -> String {
        match &self.preview {
            Some(p) => crate::config::branch_environment(&self.environment, &p.slug),
            None => self.environment.clone(),
        }
    }
}

/// What every job needs: where, with what, and how to run cyan.
#[derive(Debug)]
pub struct Runner {
    /// The cyan binary (`std::env::current_exe`).
    pub exe: PathBuf,
    /// cyan.yaml, absolute.
    pub config: PathBuf,
    /// `--home`, passed on when given.
    pub home: Option<PathBuf>,
    /// `serve.source`.
    pub source: String,
    /// `serve.credentials`, read at each fetch.
    pub credentials: Option<SecretRef>,
    /// `<state>/logs`: each job's subprocess stderr, `<delivery>.log`.
    pub logs: PathBuf,
    pub fetcher: Fetcher,
    pub log: Arc<Log>,
}

#[derive(Default)]
struct Slot {
    running: bool,
    waiting: Option<Job>,
}

/// The per-target queue.
pub struct Queue {
    runner: Arc<Runner>,
    slots: Mutex<HashMap<String, Slot>>,
    closing: std::sync::atomic::AtomicBool,
    /// The running workers, to wait for at shutdown.
    workers: tokio::sync::Mutex<tokio::task::JoinSet<()>>,
}

impl Queue {
    pub fn new(runner: Runner) -> Arc<Queue> {
        Arc::new(Queue {
            runner: Arc::new(runner),
            slots: Mutex::new(HashMap::new()),
            closing: std::sync::atomic::AtomicBool::new(false),
            workers: tokio::sync::Mutex::new(tokio::task::JoinSet::new()),
        })
    }

    /// Logs `job` as `queued` and runs it when its target is free; a job
    /// already waiting for that target is `superseded`. Returns at once.
    pub async fn submit(self: &Arc<Queue>, job: Job) {
        self.runner.log.append(&job.entry);
        let target = job.target();
        let start = {
            let mut slots = self.slots.lock().expect("queue lock");
            let slot = slots.entry(target.clone()).or_default();
            if slot.running {
                if let Some(old) = slot.waiting.replace(job) {
                    self.end(
                        &old,
                        Verdict::Superseded,
                        None,
                        Some(format!("a newer push to {target} came before it ran")),
                    );
                }
                None
            } else {
                slot.running = true;
                Some(job)
            }
        };
        if let Some(job) = start {
            let queue = Arc::clone(self);
            let mut workers = self.workers.lock().await;
            while workers.try_join_next().is_some() {}
            workers.spawn(async move { queue.work(target, job).await });
        }
    }

    /// Runs `job`, then each job that came to wait for `target` meanwhile.
    async fn work(self: Arc<Queue>, target: String, mut job: Job) {
        loop {
            self.run(&job).await;
            let next = {
                let mut slots = self.slots.lock().expect("queue lock");
                let slot = slots.get_mut(&target).expect("a running target has a slot");
                match slot.waiting.take() {
                    Some(next) if !self.closing.load(std::sync::atomic::Ordering::SeqCst) => {
                        Some(next)
                    }
                    Some(dropped) => {
                        self.end(
                            &dropped,
                            Verdict::Failed,
                            None,
                            Some("cyan serve stopped before it ran: deliver it again".into()),
                        );
                        None
                    }
                    None => None,
                }
            };
            match next {
                Some(next) => job = next,
                None => {
                    self.slots.lock().expect("queue lock").remove(&target);
                    return;
                }
            }
        }
    }

    /// Stops starting waiting jobs and waits up to `bound` for the running
    /// ones; past it they are killed (their subprocesses with them: a
    /// `cyan deploy` run again continues where it stopped).
    pub async fn drain(&self, bound: Duration) {
        self.closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let mut workers = self.workers.lock().await;
        let all = async { while workers.join_next().await.is_some() {} };
        if tokio::time::timeout(bound, all).await.is_err() {
            tracing::warn!("deploys still running after {bound:?}: stopping them");
            workers.abort_all();
        }
    }

    fn end(
        &self,
        job: &Job,
        verdict: Verdict,
        record: Option<DeployRecord>,
        reason: Option<String>,
    ) {
        let mut entry = job.entry.clone();
        entry.verdict = verdict;
        entry.reason = reason;
        if let Some(r) = record {
            entry.deploy = Some(r);
        }
        match verdict {
            Verdict::Failed => {
                tracing::warn!(delivery = %entry.id, target = %job.target(), "failed: {}", entry.reason.as_deref().unwrap_or(""))
            }
            _ => {
                tracing::info!(delivery = %entry.id, target = %job.target(), "{}", verdict.as_str())
            }
        }
        self.runner.log.append(&entry);
    }

    async fn run(&self, job: &Job) {
        let r = &self.runner;
        let version = match &job.action {
            Action::Deploy { version, .. } => version.clone(),
            Action::Remove => String::new(),
        };
        let record = |exit_code, report, error| DeployRecord {
            environment: job.target(),
            version: version.clone(),
            exit_code,
            report,
            error,
        };
        let cfg = r.config.to_string_lossy().into_owned();
        let mut args: Vec<String> = Vec::new();
        if let Some(home) = &r.home {
            args.extend(["--home".into(), home.to_string_lossy().into_owned()]);
        }
        match &job.action {
            Action::Deploy {
                commit,
                git_ref,
                then,
                ..
            } => {
                let token = match r.credentials.as_ref().map(SecretRef::read).transpose() {
                    Ok(t) => t,
                    Err(e) => {
                        let msg = format!("cannot read serve.credentials: {e}");
                        return self.end(
                            job,
                            Verdict::Failed,
                            Some(record(None, None, Some(msg.clone()))),
                            Some(msg),
                        );
                    }
                };
                let dir = match r
                    .fetcher
                    .checkout(&r.source, git_ref, commit, token.as_ref())
                    .await
                {
                    Ok(d) => d,
                    Err(e) => {
                        return self.end(
                            job,
                            Verdict::Failed,
                            Some(record(None, None, Some(e.clone()))),
                            Some(e),
                        );
                    }
                };
                let mut deploy = args.clone();
                deploy.extend([
                    "deploy".into(),
                    "-c".into(),
                    cfg.clone(),
                    "-e".into(),
                    job.environment.clone(),
                    "--version".into(),
                    version.clone(),
                    "--context".into(),
                    dir.to_string_lossy().into_owned(),
                ]);
                if let Some(p) = &job.preview {
                    deploy.extend(["--branch".into(), p.slug.clone()]);
                }
                deploy.extend(["-o".into(), "json".into()]);
                let (code, report) = self.cyan(job, &deploy).await;
                let awaiting = phase(report.as_ref()) == Some("awaiting-approval");
                if code != Some(0) {
                    let reason = failure("deploy", code, report.as_ref());
                    return self.end(
                        job,
                        Verdict::Failed,
                        Some(record(code, report, None)),
                        Some(reason),
                    );
                }
                if awaiting {
                    return self.end(
                        job,
                        Verdict::AwaitingApproval,
                        Some(record(code, report, None)),
                        Some("the candidate waits for `cyan promote`".into()),
                    );
                }
                let Some(then) = then else {
                    return self.end(
                        job,
                        Verdict::Deployed,
                        Some(record(code, report, None)),
                        None,
                    );
                };
                let mut promote = args.clone();
                promote.extend([
                    "promote".into(),
                    "-c".into(),
                    cfg,
                    "--from".into(),
                    job.environment.clone(),
                    "--to".into(),
                    then.clone(),
                    "--version".into(),
                    version.clone(),
                    "-o".into(),
                    "json".into(),
                ]);
                let (pcode, preport) = self.cyan(job, &promote).await;
                let waits = phase(preport.as_ref()) == Some("awaiting-approval");
                if pcode == Some(0) {
                    let report = serde_json::json!({"deploy": report, "promote": preport});
                    let (verdict, reason) = match waits {
                        true => (
                            Verdict::AwaitingApproval,
                            format!("verified in {}; {then} waits for approval: cyan promote -c {} -e {then}", job.environment, r.config.display()),
                        ),
                        false => (Verdict::Deployed, format!("promoted to {then}")),
                    };
                    self.end(
                        job,
                        verdict,
                        Some(record(pcode, Some(report), None)),
                        Some(reason),
                    )
                } else {
                    let reason = failure(&format!("promote to {then}"), pcode, preport.as_ref());
                    let report = serde_json::json!({"deploy": report, "promote": preport});
                    self.end(
                        job,
                        Verdict::Failed,
                        Some(record(pcode, Some(report), None)),
                        Some(reason),
                    )
                }
            }
            Action::Remove => {
                let slug = job
                    .preview
                    .as_ref()
                    .map(|p| p.slug.clone())
                    .unwrap_or_default();
                let mut remove = args;
                remove.extend([
                    "remove".into(),
                    "-c".into(),
                    cfg,
                    "-e".into(),
                    job.environment.clone(),
                    "--branch".into(),
                    slug,
                    "--yes".into(),
                    "-o".into(),
                    "json".into(),
                ]);
                let (code, report) = self.cyan(job, &remove).await;
                let verdict = if code == Some(0) {
                    Verdict::Deployed
                } else {
                    Verdict::Failed
                };
                let reason = if code == Some(0) {
                    "preview removed".to_string()
                } else {
                    failure("remove", code, report.as_ref())
                };
                self.end(job, verdict, Some(record(code, report, None)), Some(reason))
            }
        }
    }

    /// Runs cyan with `args`, its stderr appended to
    /// `<state>/logs/<delivery>.log`; returns its exit code and the JSON
    /// it printed (none when it printed none or did not start).
    async fn cyan(&self, job: &Job, args: &[String]) -> (Option<i32>, Option<serde_json::Value>) {
        let r = &self.runner;
        let name: String = job
            .entry
            .id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = r.logs.join(format!("{name}.log"));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path);
        let stderr = match stderr {
            Ok(f) => Stdio::from(f),
            Err(e) => {
                tracing::warn!(
                    "cannot open {}: {e}; the subprocess's stderr is dropped",
                    path.display()
                );
                Stdio::null()
            }
        };
        tracing::info!(delivery = %job.entry.id, "running cyan {}", args.join(" "));
        let out = Command::new(&r.exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .output()
            .await;
        match out {
            Ok(out) => (out.status.code(), serde_json::from_slice(&out.stdout).ok()),
            Err(e) => {
                tracing::warn!("cannot run {}: {e}", r.exe.display());
                (None, None)
            }
        }
    }
}

/// Why a subprocess failed: its `{"error": {"message"}}`, else its code.
fn failure(what: &str, code: Option<i32>, report: Option<&serde_json::Value>) -> String {
    let message = report
        .and_then(|v| v.pointer("/error/message"))
        .and_then(|m| m.as_str());
    match (code, message) {
        (_, Some(m)) => format!("{what} failed: {m}"),
        (Some(c), None) => format!("{what} exited {c}"),
        (None, None) => format!("{what} did not run to its end"),
    }
}

/// A command's JSON report's `phase` (`live`, `awaiting-approval`).
fn phase(report: Option<&serde_json::Value>) -> Option<&str> {
    report?.get("phase")?.as_str()
}
