//! Auto-start: a deploy on a host whose proxy is not running starts one.
//!
//! `cyan deploy` on a fresh host needs no setup step: when no proxy answers
//! on the home's admin socket, this starts `cyan proxy run` detached (its
//! own session, out of any CI job's sweep) and waits until it answers. A
//! proxy container (`cyan proxy boot`) that owns the home is waited for
//! instead. This is the deployer's side: the proxy itself knows nothing of
//! the Docker engine or of `cyan`'s command line.

use std::process::Stdio;

use super::client::{inside_ci, leave_ci_job, own_session, wait_healthy, AdminClient};
use super::Home;
use crate::error::{Error, Result};
use crate::output::Output;

/// Returns a client for the proxy of `home`, starting `cyan proxy run` in the
/// background first when none answers (and saying so on `out` when that
/// happens inside a CI job).
pub async fn ensure_running(home: &Home, out: &Output) -> Result<AdminClient> {
    let client = AdminClient::new(home);
    if client.health().await.is_ok() {
        return Ok(client);
    }
    // A proxy container (`cyan proxy boot`) that is restarting owns this
    // home: wait for it rather than start a host process beside it.
    if let Ok(docker) = crate::platform::docker::connect().await {
        let name = super::boot::container_name(home);
        if docker.inspect_container(&name, None).await.is_ok() {
            return Ok(wait_healthy(client, &format!("the proxy container {name}")).await?);
        }
    }
    home.create()
        .map_err(|e| Error::Platform(format!("cannot create {}: {e}", home.dir.display())))?;
    let exe = std::env::current_exe().map_err(|e| {
        Error::Platform(format!(
            "cannot find the cyan binary to start the proxy: {e}"
        ))
    })?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.log())
        .map_err(|e| Error::Platform(format!("cannot open {}: {e}", home.log().display())))?;
    let log2 = log
        .try_clone()
        .map_err(|e| Error::Platform(format!("cannot open proxy log: {e}")))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["proxy", "run"])
        .arg(super::flag_arg("home", &home.dir))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        // The service manager that runs this cyan (a CI runner's unit, say)
        // is not the proxy's: an upgrade must not hand it a new main pid.
        .env_remove(super::handoff::NOTIFY_SOCKET);
    own_session(&mut cmd);
    leave_ci_job(&mut cmd);
    let child = cmd
        .spawn()
        .map_err(|e| Error::Platform(format!("cannot start the cyan proxy: {e}")))?;
    let client = wait_healthy(client, "the cyan proxy").await.map_err(|e| {
        let tail = std::fs::read_to_string(home.log()).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(10).collect();
        Error::Unreachable(format!(
            "{e}; last log lines:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ))
    })?;
    if inside_ci() {
        out.warn(format!(
            "started the cyan proxy (pid {}) detached from this CI job, so it keeps serving after \
             the job ends; to run it as a service instead: `cyan proxy install` (systemd) or \
             `cyan proxy boot` (container)",
            child.id()
        ));
    }
    Ok(client)
}
