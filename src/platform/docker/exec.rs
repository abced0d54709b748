//! `health.command`: one run of the gate's command in a container.
//!
//! Docker exec, with no user given, so the command runs as the container's
//! own user, in its environment and working directory, as Docker runs an
//! image's `HEALTHCHECK`. The engine has no call that stops an exec, so a
//! run past its timeout is abandoned, not killed: it finishes (or dies with
//! its container) on its own, and the gate's next probe starts beside it.

use std::time::Duration;

use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::Docker;
use futures_util::StreamExt;

use crate::health::{one_line, CheckRun};

/// How much of a run's output is kept: its end, where the reason usually is.
pub const OUTPUT_TAIL: usize = 512;

/// Runs `argv` in `container` and waits at most `timeout` for it to exit.
/// `Ok` with the exit code and the last `OUTPUT_TAIL` bytes of stdout and
/// stderr (interleaved as written) when it exited; `Err(why)` when it could
/// not be started or did not exit in time (with the output it gave so far).
pub async fn run(
    docker: &Docker,
    container: &str,
    argv: &[String],
    timeout: Duration,
) -> Result<CheckRun, String> {
    let mut tail = Vec::new();
    let exchange = async {
        let exec = docker
            .create_exec(
                container,
                CreateExecOptions {
                    cmd: Some(argv.to_vec()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..CreateExecOptions::default()
                },
            )
            .await
            .map_err(|e| format!("could not be started: {e}"))?;
        let opts = StartExecOptions {
            detach: false,
            tty: false,
            output_capacity: None,
        };
        match docker.start_exec(&exec.id, Some(opts)).await {
            Ok(StartExecResults::Attached { mut output, .. }) => {
                while let Some(Ok(chunk)) = output.next().await {
                    keep_tail(&mut tail, chunk.as_ref());
                }
            }
            Ok(StartExecResults::Detached) => {}
            Err(e) => return Err(format!("could not be started: {e}")),
        }
        // The output ends when the process does; the engine may record the
        // exit code a moment later.
        loop {
            let info = docker
                .inspect_exec(&exec.id)
                .await
                .map_err(|e| format!("could not be inspected: {e}"))?;
            match (info.running, info.exit_code) {
                (Some(false), Some(code)) => return Ok(code),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    };
    let exited = tokio::time::timeout(timeout, exchange).await;
    let output = String::from_utf8_lossy(&tail).into_owned();
    match exited {
        Ok(Ok(exit_code)) => Ok(CheckRun { exit_code, output }),
        Ok(Err(why)) => Err(why),
        Err(_) => {
            let so_far = match one_line(&output) {
                line if line.is_empty() => ", no output".to_string(),
                line => format!(": {line}"),
            };
            Err(format!(
                "did not exit within {} (health.timeout){so_far}",
                humantime::format_duration(timeout)
            ))
        }
    }
}

/// Appends `bytes`, keeping only the last `OUTPUT_TAIL` bytes.
fn keep_tail(tail: &mut Vec<u8>, bytes: &[u8]) {
    tail.extend_from_slice(bytes);
    if tail.len() > OUTPUT_TAIL {
        tail.drain(..tail.len() - OUTPUT_TAIL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_end_of_the_output_is_kept() {
        let mut tail = Vec::new();
        keep_tail(&mut tail, b"starting\n");
        assert_eq!(tail, b"starting\n");
        keep_tail(&mut tail, &[b'x'; OUTPUT_TAIL]);
        keep_tail(&mut tail, b"\nfailed: db down\n");
        assert_eq!(tail.len(), OUTPUT_TAIL);
        assert!(tail.ends_with(b"x\nfailed: db down\n"));
        assert!(!tail.starts_with(b"starting"));
    }
}
