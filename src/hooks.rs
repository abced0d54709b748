//! Running one lifecycle hook: a host command, or a one-off container of
//! the candidate's image, bounded by its timeout, with its exit code and
//! the end of its output kept for the report.
//!
//! When each hook runs, and what its failure does, is the deployer's
//! (`cli::lifecycle`); this module only runs a command and says how it
//! ended. A host command runs in a process group of its own, killed whole
//! at its timeout, and dies with cyan (`PR_SET_PDEATHSIG`), so a killed
//! deploy leaves no hook running beside the re-run's. A container hook has
//! a fixed name per app and hook: a re-run removes a leftover before it
//! starts its own.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::health::printable;
use crate::output::Output;

/// Lines of a hook's output kept for its report: its end, where the reason is.
pub const TAIL_LINES: usize = 20;

/// The label a hook's container carries (the app's route): never one of
/// the app's replicas.
pub const HOOK_LABEL: &str = "cyan.hook";

/// How a hook's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    /// `None` when it was killed (timeout) or ended by a signal.
    pub exit_code: Option<i64>,
    pub timed_out: bool,
    /// The last `TAIL_LINES` lines of its stdout and stderr, as written.
    pub tail: Vec<String>,
    pub elapsed: Duration,
}

impl Ran {
    pub fn passed(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out
    }

    /// Why it failed, in one line, with the end of its output on the
    /// following lines: `exited with 3` / `timed out after 30s`.
    pub fn failure(&self, timeout: Duration) -> String {
        let how = match (self.timed_out, self.exit_code) {
            (true, _) => format!(
                "did not finish within {} (its timeout) and was killed",
                humantime::format_duration(timeout)
            ),
            (false, Some(code)) => format!("exited with {code}"),
            (false, None) => "was killed by a signal".into(),
        };
        match self.tail.is_empty() {
            true => format!("{how}, no output"),
            false => format!("{how}; its last output:\n{}", self.tail.join("\n")),
        }
    }
}

/// The end of an output, a line at a time.
#[derive(Default)]
struct Tail(std::collections::VecDeque<String>);

impl Tail {
    fn push(&mut self, line: &str) {
        self.0.push_back(printable(line));
        if self.0.len() > TAIL_LINES {
            self.0.pop_front();
        }
    }
}

/// The variable every process of a host hook carries: the run's mark.
pub const RUN_VAR: &str = "CYAN_HOOK_RUN";

/// Bytes kept of one output line; the rest of it is dropped (`…`).
const LINE_MAX: usize = 4096;

/// After a hook exits, how long its output may still come: a background
/// child it left holding the pipes does not hold the hook.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);

/// Runs `argv` on the host in `dir` with `env` added to cyan's environment,
/// for at most `timeout`; each output line is shown as progress. Every
/// process of the run carries `RUN_VAR=run` (`sweep` finds them).
///
/// Errors: the command cannot be started (not found, not executable), as
/// the message to give.
pub async fn on_host(
    argv: &[String],
    env: &[(String, String)],
    dir: &Path,
    timeout: Duration,
    run: &str,
    out: &Output,
) -> Result<Ran, String> {
    let (program, args) = argv.split_first().ok_or("no command to run")?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env(RUN_VAR, run)
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    // One pipe for stdout and stderr, as `2>&1` does: the output in the
    // order it was written.
    let (reader, writer) = pipe().map_err(|e| format!("no pipe for {program}'s output: {e}"))?;
    let second = writer
        .try_clone()
        .map_err(|e| format!("no pipe for {program}'s output: {e}"))?;
    cmd.stdout(Stdio::from(writer)).stderr(Stdio::from(second));
    // SAFETY: prctl is async-signal-safe, and is the only call made
    // between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let spawned = cmd.spawn();
    // The write ends are the child's now: holding them, the reader would
    // never see the end.
    drop(cmd);
    let mut child = spawned.map_err(|e| format!("{program} could not be started: {e}"))?;
    let output = tokio::net::unix::pipe::Receiver::from_owned_fd(reader)
        .map_err(|e| format!("cannot read {program}'s output: {e}"))?;
    let pgid = child.id().map(|p| p as i32);
    let tail = std::sync::Mutex::new(Tail::default());
    let finished = tokio::time::timeout(timeout, async {
        let mut output = std::pin::pin!(drain(output, &tail, out));
        let exited = tokio::select! {
            status = child.wait() => Some(status),
            _ = &mut output => None,
        };
        match exited {
            Some(status) => {
                let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, &mut output).await;
                status
            }
            None => child.wait().await,
        }
    })
    .await;
    let tail = tail.into_inner().expect("tail lock").0.into();
    match finished {
        Ok(Ok(status)) => Ok(Ran {
            exit_code: status.code().map(i64::from),
            timed_out: false,
            tail,
            elapsed: started.elapsed(),
        }),
        Ok(Err(e)) => Err(format!("{program} could not be waited for: {e}")),
        Err(_) => {
            if let Some(pgid) = pgid {
                // The whole group: a shell's children too.
                // SAFETY: a plain syscall on a group this process made.
                unsafe { libc::killpg(pgid, libc::SIGKILL) };
            }
            // And what left the group (setsid) but carries the mark.
            sweep(run);
            Ok(Ran {
                exit_code: None,
                timed_out: true,
                tail,
                elapsed: started.elapsed(),
            })
        }
    }
}

/// A pipe, both ends close-on-exec: (read, write).
fn pipe() -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd as _;
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into `fds`, which are then
    // owned here and nowhere else.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    Ok(unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    })
}

/// Reads `from` to its end, a line at a time as bytes (not UTF-8 checked:
/// a hook's stray byte never stops the reading, which would end the hook by
/// SIGPIPE), each line cut at `LINE_MAX`.
async fn drain(mut from: impl AsyncRead + Unpin, tail: &std::sync::Mutex<Tail>, out: &Output) {
    let emit = |line: &[u8], cut: bool| {
        let mut text = String::from_utf8_lossy(line).into_owned();
        if cut {
            text.push('…');
        }
        out.detail(format!("| {}", printable(&text)));
        tail.lock().expect("tail lock").push(&text);
    };
    let mut buf = [0u8; 8192];
    let (mut line, mut cut) = (Vec::new(), false);
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        for &b in &buf[..n] {
            match b {
                b'\n' => {
                    emit(&line, cut);
                    line.clear();
                    cut = false;
                }
                _ if line.len() < LINE_MAX => line.push(b),
                _ => cut = true,
            }
        }
    }
    if !line.is_empty() {
        emit(&line, cut);
    }
}

/// Kills every process that carries `RUN_VAR=run` (what a killed cyan's
/// hook left: PR_SET_PDEATHSIG reaches only its first process), and waits
/// (2 s at most) until none of them runs; the count.
pub fn sweep(run: &str) -> usize {
    let mark = format!("{RUN_VAR}={run}");
    let marked = |pid: i32| {
        std::fs::read(format!("/proc/{pid}/environ"))
            .is_ok_and(|e| e.split(|b| *b == 0).any(|v| v == mark.as_bytes()))
    };
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = Vec::new();
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: a plain syscall on a process that carries our mark.
        if marked(pid) && unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
            killed.push(pid);
        }
    }
    // A killed process runs on until the kernel has torn it down (a zombie
    // has no environment left): the next hook must not start beside it.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while killed.iter().any(|p| marked(*p)) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    killed.len()
}

/// A one-off container to run a hook in.
pub struct OneOff<'a> {
    /// Fixed per app and hook, so a re-run finds a killed run's leftover.
    pub name: String,
    /// The candidate's image, by id.
    pub image: &'a str,
    pub argv: Vec<String>,
    /// `NAME=value`: the app's env and secrets, then the hook's `CYAN_*`.
    pub env: Vec<String>,
    pub network: String,
    /// The app's route, as the container's `cyan.hook` label.
    pub route: String,
    /// The app's secrets, which the container holds: their values are
    /// taken out of its output.
    pub secrets: &'a crate::config::Secrets,
}

/// Runs `job` to its end or `timeout`, then removes its container.
///
/// Errors: the container cannot be made or started (a missing image, a
/// command not in the image), as the message to give.
pub async fn in_container(
    docker: &Docker,
    job: OneOff<'_>,
    timeout: Duration,
    out: &Output,
) -> Result<Ran, String> {
    remove(docker, &job.name).await;
    let body = ContainerCreateBody {
        image: Some(job.image.to_string()),
        // The hook's command whole, whatever the image's entrypoint.
        entrypoint: Some(job.argv.clone()),
        cmd: Some(Vec::new()),
        env: Some(job.env.clone()),
        labels: Some(HashMap::from([(HOOK_LABEL.to_string(), job.route.clone())])),
        host_config: Some(HostConfig {
            network_mode: Some(job.network.clone()),
            init: Some(true),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    };
    let opts = CreateContainerOptionsBuilder::default()
        .name(&job.name)
        .build();
    let started = Instant::now();
    let made = docker
        .create_container(Some(opts), body)
        .await
        .map_err(|e| format!("its container could not be made: {e}"));
    let ran = match made {
        Ok(_) => run_made(docker, &job.name, timeout, out).await,
        Err(e) => Err(e),
    };
    let tail = container_tail(docker, &job.name, job.secrets).await;
    for line in &tail {
        out.detail(format!("| {line}"));
    }
    remove(docker, &job.name).await;
    let (exit_code, timed_out) = ran?;
    Ok(Ran {
        exit_code,
        timed_out,
        tail,
        elapsed: started.elapsed(),
    })
}

/// Starts the made container and waits: its exit code, or timed out.
async fn run_made(
    docker: &Docker,
    name: &str,
    timeout: Duration,
    out: &Output,
) -> Result<(Option<i64>, bool), String> {
    docker
        .start_container(name, None)
        .await
        .map_err(|e| format!("its container could not be started: {e}"))?;
    out.detail(format!("running in container {name}"));
    let opts = WaitContainerOptionsBuilder::default()
        .condition("not-running")
        .build();
    let mut wait = docker.wait_container(name, Some(opts));
    match tokio::time::timeout(timeout, wait.next()).await {
        Ok(Some(Ok(r))) => Ok((Some(r.status_code), false)),
        // The engine reports a non-zero exit as an error carrying the code.
        Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => {
            Ok((Some(code), false))
        }
        Ok(Some(Err(e))) => Err(format!("its container could not be waited for: {e}")),
        Ok(None) => Err("the engine ended the wait without an exit code".into()),
        Err(_) => {
            let _ = docker.kill_container(name, None).await;
            Ok((None, true))
        }
    }
}

/// The container's last `TAIL_LINES` lines, its secrets' values redacted
/// in the whole text first (a value may span lines, or hold a tab that
/// `printable` would change).
async fn container_tail(
    docker: &Docker,
    name: &str,
    secrets: &crate::config::Secrets,
) -> Vec<String> {
    let opts = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail(&TAIL_LINES.to_string())
        .build();
    let mut stream = docker.logs(name, Some(opts));
    let mut text = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        text.push_str(&chunk.to_string());
    }
    secrets.redact(&text).lines().map(printable).collect()
}

/// The names of `route`'s hook containers (a killed cyan's leftovers).
pub async fn leftovers(docker: &Docker, route: &str) -> crate::error::Result<Vec<String>> {
    let opts = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&HashMap::from([(
            "label".to_string(),
            vec![format!("{HOOK_LABEL}={route}")],
        )]))
        .build();
    Ok(docker
        .list_containers(Some(opts))
        .await?
        .into_iter()
        .filter_map(|c| {
            c.names?
                .first()
                .map(|n| n.trim_start_matches('/').to_string())
        })
        .collect())
}

/// Removes a container, running or not; one already gone is no error.
pub async fn remove(docker: &Docker, name: &str) {
    let opts = RemoveContainerOptionsBuilder::default().force(true).build();
    let _ = docker.remove_container(name, Some(opts)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Format;

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn a_host_hook_gives_its_exit_code_environment_and_the_end_of_its_output() {
        let out = Output::new(Format::Text);
        let env = [("CYAN_VERSION".to_string(), "2.0".to_string())];
        let script =
            "for i in $(seq 1 30); do echo line $i; done; echo v=$CYAN_VERSION >&2; exit 3";
        let ran = on_host(
            &sh(script),
            &env,
            Path::new("/"),
            Duration::from_secs(10),
            "t1",
            &out,
        )
        .await
        .expect("runs");
        assert_eq!(ran.exit_code, Some(3));
        assert!(!ran.passed());
        assert_eq!(ran.tail.len(), TAIL_LINES);
        assert_eq!(ran.tail.last().map(String::as_str), Some("v=2.0"));
        assert_eq!(ran.tail.first().map(String::as_str), Some("line 12"));
        assert!(ran
            .failure(Duration::from_secs(10))
            .starts_with("exited with 3; its last output:\nline 12"));
    }

    #[tokio::test]
    async fn a_hook_past_its_timeout_is_killed_with_its_children() {
        let out = Output::new(Format::Text);
        let marker = std::env::temp_dir().join(format!("cyan-hook-child-{}", std::process::id()));
        let _ = std::fs::remove_file(&marker);
        // A child that would write the marker after the timeout.
        let script = format!(
            "echo started; (sleep 2; touch {}) & sleep 30",
            marker.display()
        );
        let started = Instant::now();
        let ran = on_host(
            &sh(&script),
            &[],
            Path::new("/"),
            Duration::from_millis(500),
            "t2",
            &out,
        )
        .await
        .expect("runs");
        assert!(ran.timed_out && !ran.passed(), "{ran:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(ran.tail, ["started"]);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            !marker.exists(),
            "the group was killed: the child never wrote"
        );
    }

    #[tokio::test]
    async fn stray_bytes_long_lines_and_a_forked_child_do_not_change_the_verdict() {
        let out = Output::new(Format::Text);
        // A byte that is not UTF-8, a 1 MB line, then a daemon left holding
        // the pipes: the hook itself exited 0 at once.
        let script = "printf 'bad \\377 byte\\n'; head -c 1000000 /dev/zero | tr '\\0' x; echo; sleep 30 & echo forked; exit 0";
        let started = Instant::now();
        let ran = on_host(
            &sh(script),
            &[],
            Path::new("/"),
            Duration::from_secs(20),
            "t4",
            &out,
        )
        .await
        .expect("runs");
        assert!(ran.passed(), "{ran:?}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(ran.tail[0], "bad \u{fffd} byte");
        assert_eq!(
            ran.tail[1].chars().count(),
            LINE_MAX + 1,
            "cut, with its mark"
        );
        assert!(ran.tail[1].ends_with('…'));
        assert_eq!(ran.tail[2], "forked");
        // The daemon carries the run's mark: a sweep finds and stops it.
        assert_eq!(sweep("t4"), 1);
        assert_eq!(sweep("t4"), 0);
    }

    #[tokio::test]
    async fn a_command_that_is_not_there_is_an_error_not_a_run() {
        let out = Output::new(Format::Text);
        let e = on_host(
            &["/nonexistent/hook".to_string()],
            &[],
            Path::new("/"),
            Duration::from_secs(1),
            "t3",
            &out,
        )
        .await
        .expect_err("cannot start");
        assert!(
            e.starts_with("/nonexistent/hook could not be started"),
            "{e}"
        );
    }
}
