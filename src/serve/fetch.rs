//! Getting the pushed commit onto disk: fetched from `serve.source` into a
//! bare cache repository under the state folder, then written out as a
//! plain folder, `<state>/checkouts/<commit>`, that `cyan deploy --context`
//! builds.
//!
//! Only `git` itself runs, with a fixed argv: the source and the commit
//! are the only outside values in it (the commit is hex, checked by
//! `rules`; the source is cyan.yaml's). A token for an HTTP(S) source
//! reaches git through `GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_0`/
//! `GIT_CONFIG_VALUE_0` (git-config(1), "ENVIRONMENT") as an
//! `http.extraHeader`, so it is never in an argv (`ps`) nor in a log.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use secrecy::{ExposeSecret as _, SecretString};
use tokio::process::Command;

/// How long one git command may take (a fetch of a large repository over
/// a slow link included).
const GIT_DEADLINE: Duration = Duration::from_secs(600);

/// The cache and checkouts under one state folder.
#[derive(Debug)]
pub struct Fetcher {
    /// `<state>/cache.git`.
    cache: PathBuf,
    /// `<state>/checkouts`.
    checkouts: PathBuf,
    /// One git at a time on the cache (two fetches would race on its refs
    /// and pack files).
    lock: tokio::sync::Mutex<()>,
}

impl Fetcher {
    /// The fetcher of `state`; nothing is made until the first fetch.
    pub fn new(state: &Path) -> Fetcher {
        Fetcher {
            cache: state.join("cache.git"),
            checkouts: state.join("checkouts"),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Fetches `commit` (full hex) from `source` (a clone URL or a path)
    /// and returns the folder holding its files. `git_ref` is what was
    /// pushed: when the source refuses to serve an object by its name
    /// (a server without `uploadpack.allowReachableSHA1InWant`), the ref is
    /// fetched and the commit must then be in the cache. A checkout made
    /// before is used again.
    ///
    /// Errors: git's own message (its last lines of stderr), or a deadline.
    pub async fn checkout(
        &self,
        source: &str,
        git_ref: &str,
        commit: &str,
        token: Option<&SecretString>,
    ) -> Result<PathBuf, String> {
        let dir = self.checkouts.join(commit);
        let _held = self.lock.lock().await;
        if dir.is_dir() {
            return Ok(dir);
        }
        if !self.cache.join("HEAD").exists() {
            let cache = self.cache.to_string_lossy().into_owned();
            git(None, &["init", "--bare", "--quiet", &cache], None).await?;
        }
        let want = format!("{commit}^{{commit}}");
        let by_name = git(
            Some(&self.cache),
            &["fetch", "--no-tags", "--quiet", "--", source, commit],
            token,
        )
        .await;
        if let Err(first) = by_name {
            tracing::debug!("fetch by object name failed ({first}); fetching {git_ref}");
            git(
                Some(&self.cache),
                &["fetch", "--no-tags", "--quiet", "--", source, git_ref],
                token,
            )
            .await
            .map_err(|e| format!("cannot fetch {commit} or {git_ref} from {source}: {e}"))?;
            git(Some(&self.cache), &["cat-file", "-e", &want], None)
                .await
                .map_err(|_| {
                    format!("{source} has no commit {commit} (its {git_ref} is elsewhere now)")
                })?;
        }
        std::fs::create_dir_all(&self.checkouts)
            .map_err(|e| format!("cannot make {}: {e}", self.checkouts.display()))?;
        let partial = self.checkouts.join(format!(".{commit}.partial"));
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir(&partial)
            .map_err(|e| format!("cannot make {}: {e}", partial.display()))?;
        let tar = git(Some(&self.cache), &["archive", "--format=tar", &want], None).await?;
        tar::Archive::new(tar.as_slice())
            .unpack(&partial)
            .map_err(|e| format!("cannot write the checkout of {commit}: {e}"))?;
        std::fs::rename(&partial, &dir)
            .map_err(|e| format!("cannot move the checkout into {}: {e}", dir.display()))?;
        self.prune();
        Ok(dir)
    }

    /// Removes all but the newest `KEPT_CHECKOUTS` checkouts: a deploy
    /// reads its checkout only while it builds (the context goes to the
    /// engine whole), so an old one is never needed again.
    fn prune(&self) {
        let Ok(entries) = std::fs::read_dir(&self.checkouts) else {
            return;
        };
        let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.0));
        for (_, old) in dirs.into_iter().skip(KEPT_CHECKOUTS) {
            if let Err(e) = std::fs::remove_dir_all(&old) {
                tracing::warn!(path = %old.display(), "cannot remove an old checkout: {e}");
            }
        }
    }
}

/// How many checkouts are kept (the newest).
const KEPT_CHECKOUTS: usize = 10;

/// Runs git (in `git_dir`, a bare repository, when given) and returns its
/// stdout. No terminal prompt, no system or user config's credential
/// helpers asked for a password: a fetch that needs one fails.
async fn git(
    git_dir: Option<&Path>,
    args: &[&str],
    token: Option<&SecretString>,
) -> Result<Vec<u8>, String> {
    let mut cmd = Command::new("git");
    if let Some(dir) = git_dir {
        cmd.arg("--git-dir").arg(dir);
    }
    cmd.args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GCM_INTERACTIVE", "never")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(token) = token {
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("x-access-token:{}", token.expose_secret()));
        cmd.env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env(
                "GIT_CONFIG_VALUE_0",
                format!("Authorization: Basic {basic}"),
            );
    }
    let run = tokio::time::timeout(GIT_DEADLINE, cmd.output()).await;
    let out = match run {
        Err(_) => return Err(format!("git {} took over {GIT_DEADLINE:?}", args[0])),
        Ok(Err(e)) => return Err(format!("cannot run git: {e}")),
        Ok(Ok(out)) => out,
    };
    if out.status.success() {
        return Ok(out.stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .rev()
        .take(3)
        .collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(format!(
        "git {} failed ({}): {}",
        args[0],
        out.status,
        tail.join(" / ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git_in(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .current_dir(dir)
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    #[tokio::test]
    async fn each_commit_is_checked_out_as_pushed_and_only_the_newest_are_kept() {
        let root = std::env::temp_dir().join(format!("cyan-fetch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let work = root.join("work");
        std::fs::create_dir_all(&work).unwrap();
        git_in(&work, &["init", "-q", "-b", "main"]);
        let fetcher = Fetcher::new(&root.join("state"));
        let mut made = Vec::new();
        for n in 0..KEPT_CHECKOUTS + 2 {
            std::fs::write(work.join("n"), n.to_string()).unwrap();
            git_in(&work, &["add", "."]);
            git_in(&work, &["commit", "-q", "-m", &n.to_string()]);
            let commit = git_in(&work, &["rev-parse", "HEAD"]);
            let dir = fetcher
                .checkout(work.to_str().unwrap(), "refs/heads/main", &commit, None)
                .await
                .expect("checks out");
            assert_eq!(
                std::fs::read_to_string(dir.join("n")).unwrap(),
                n.to_string()
            );
            made.push(dir);
            // Distinct modification times for the newest-first order.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(
            !made[0].exists() && !made[1].exists(),
            "the oldest two went"
        );
        assert!(made[2..].iter().all(|d| d.exists()));
        std::fs::remove_dir_all(&root).ok();
    }
}
