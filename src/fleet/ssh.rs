//! One SSH connection per host, made by the user's own OpenSSH client, that
//! carries everything cyan says to that host: the Docker engine's socket,
//! the cyan proxy's admin socket, and the health gate's probes.
//!
//! Why OpenSSH and not an SSH library: the user's agent, `~/.ssh/config`
//! (jump hosts, ports, keys per host), known hosts and hardware keys work
//! as they do for `ssh` and `docker -H ssh://`, and cyan holds no
//! credential. The connection is a control master (`ssh -M`) with two
//! Unix-socket forwards; the gate's probes add TCP forwards to it on
//! demand (`ssh -O forward`). Nothing is ever asked (`BatchMode`): an
//! unknown host key is refused unless the user's ssh config says
//! otherwise, and with `fleet.ssh.known_hosts_file` only that file counts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use crate::config::{SshConfig, SshUrl};
use crate::error::{Error, Result};

/// A live SSH connection to one host, with the engine's and the proxy's
/// sockets forwarded into a private folder (mode 0700) on this machine.
/// Dropping it closes the connection and removes the folder.
pub struct Tunnel {
    dir: PathBuf,
    url: SshUrl,
    base: Vec<String>,
    master: Child,
    forwards: Mutex<HashMap<SocketAddr, SocketAddr>>,
}

impl Tunnel {
    /// Connects to `url` and forwards `remote_engine` (the host's Docker
    /// socket) and `remote_admin` (its proxy's admin socket). Paths in
    /// `ssh` are taken as they are (`relative_to` makes them absolute).
    ///
    /// Errors: `Error::Unreachable` with ssh's own last words (refused,
    /// timed out, host key, permission) when the connection fails.
    pub async fn open(
        url: &SshUrl,
        ssh: &SshConfig,
        relative_to: &Path,
        remote_engine: &Path,
        remote_admin: &Path,
    ) -> Result<Tunnel> {
        let dir = private_dir()?;
        // ssh's own words before `-E` takes over (a refused option) too.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("ssh.log"))
            .map_err(|e| Error::Platform(format!("cannot create {}: {e}", dir.display())))?;
        let mut base = vec![
            "-S".to_string(),
            dir.join("ctl").display().to_string(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            format!("ConnectTimeout={}", ssh.connect_timeout),
            "-o".into(),
            "ServerAliveInterval=5".into(),
            "-o".into(),
            "ServerAliveCountMax=3".into(),
            "-E".into(),
            dir.join("ssh.log").display().to_string(),
        ];
        let at = |p: &Path| file(p, relative_to).display().to_string();
        if let Some(config) = &ssh.config_file {
            base.extend(["-F".into(), at(config)]);
        }
        if let Some(key) = &ssh.identity_file {
            base.extend([
                "-i".into(),
                at(key),
                "-o".into(),
                "IdentitiesOnly=yes".into(),
            ]);
        }
        if let Some(known) = &ssh.known_hosts_file {
            base.extend([
                "-o".into(),
                format!("UserKnownHostsFile={}", at(known)),
                "-o".into(),
                "StrictHostKeyChecking=yes".into(),
            ]);
        }
        if let Some(port) = url.port {
            base.extend(["-p".into(), port.to_string()]);
        }
        let mut cmd = Command::new("ssh");
        cmd.args(&base)
            .args(["-M", "-N", "-o", "ControlPersist=no", "-o"])
            .arg("ExitOnForwardFailure=yes")
            .args(["-o", "StreamLocalBindUnlink=yes", "-L"])
            .arg(format!(
                "{}:{}",
                dir.join("docker.sock").display(),
                remote_engine.display()
            ))
            .arg("-L")
            .arg(format!(
                "{}:{}",
                dir.join("admin.sock").display(),
                remote_admin.display()
            ))
            .arg("--")
            .arg(url.destination())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        // SAFETY: only prctl, async-signal-safe, runs between fork and exec.
        // The connection dies with cyan, even by SIGKILL.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let master = cmd.spawn().map_err(|e| {
            Error::Unreachable(format!(
                "{url}: cannot run ssh: {e}. cyan reaches hosts with the OpenSSH client (Debian: openssh-client)"
            ))
        })?;
        let mut tunnel = Tunnel {
            dir,
            url: url.clone(),
            base,
            master,
            forwards: Mutex::default(),
        };
        tunnel
            .wait_up(Duration::from_secs(u64::from(ssh.connect_timeout) + 10))
            .await?;
        Ok(tunnel)
    }

    /// Waits until both forwards listen, or ssh gave up.
    async fn wait_up(&mut self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.master.try_wait() {
                return Err(Error::Unreachable(format!(
                    "{}: ssh exited ({status}): {}",
                    self.url,
                    self.last_words()
                )));
            }
            if self.engine_socket().exists() && self.admin_socket().exists() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Unreachable(format!(
                    "{}: no SSH connection within {}s: {}",
                    self.url,
                    within.as_secs(),
                    self.last_words()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The host, as cyan.yaml names it.
    pub fn url(&self) -> &SshUrl {
        &self.url
    }

    /// The host's Docker engine, as a socket on this machine.
    pub fn engine_socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// The host's cyan proxy admin API, as a socket on this machine.
    pub fn admin_socket(&self) -> PathBuf {
        self.dir.join("admin.sock")
    }

    /// Is the connection still up? `Error::Unreachable` with why not.
    pub async fn check(&self) -> Result<()> {
        let out = Command::new("ssh")
            .args(&self.base)
            .args(["-O", "check", "--"])
            .arg(self.url.destination())
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| Error::Unreachable(format!("{}: cannot run ssh: {e}", self.url)))?;
        if out.status.success() {
            return Ok(());
        }
        Err(Error::Unreachable(format!(
            "{}: the SSH connection is gone: {}",
            self.url,
            self.last_words()
        )))
    }

    /// `addr` on the host (a replica's port on its loopback), as an
    /// address on this machine's loopback that reaches it through the
    /// connection. Each address is forwarded once.
    pub async fn forward(&self, addr: SocketAddr) -> Result<SocketAddr> {
        let mut forwards = self.forwards.lock().await;
        if let Some(local) = forwards.get(&addr) {
            return Ok(*local);
        }
        // A free port, released for ssh to bind: nothing else on this
        // machine is choosing ports from the same range at this instant
        // but the kernel, which hands them out in turn.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| Error::Platform(format!("no free local port: {e}")))?
            .port();
        let out = Command::new("ssh")
            .args(&self.base)
            .args(["-O", "forward", "-L"])
            .arg(format!("127.0.0.1:{port}:{addr}"))
            .arg("--")
            .arg(self.url.destination())
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| Error::Unreachable(format!("{}: cannot run ssh: {e}", self.url)))?;
        if !out.status.success() {
            return Err(Error::Unreachable(format!(
                "{}: cannot forward {addr}: {}",
                self.url,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let local = SocketAddr::from(([127, 0, 0, 1], port));
        forwards.insert(addr, local);
        Ok(local)
    }

    /// The last lines ssh logged (`-E`): its reason, in its words.
    fn last_words(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("ssh.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        match lines.len() {
            0 => "ssh said nothing".into(),
            n => lines[n.saturating_sub(3)..].join("; "),
        }
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        let _ = self.master.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A path of cyan.yaml's `fleet.ssh`: `~/` is the user's home, a relative
/// path is the config file's folder's.
fn file(p: &Path, relative_to: &Path) -> PathBuf {
    match (p.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => relative_to.join(p),
    }
}

/// A new folder only this user can enter, short enough for socket paths
/// (108 bytes on Linux), named after this process; those of cyan processes
/// that are gone (killed, or stopped by Ctrl-C before they could clean up)
/// are removed first.
fn private_dir() -> Result<PathBuf> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    if let Ok(entries) = std::fs::read_dir(&base) {
        for e in entries.flatten() {
            let name = e.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.strip_prefix("cyan-ssh-"))
                .and_then(|n| n.split('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|p| !crate::clock::pid_alive(p)) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = base.join(format!(
        "cyan-ssh-{}-{}",
        std::process::id(),
        &crate::clock::random_token()[..8]
    ));
    std::fs::create_dir(&dir)
        .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| Error::Platform(format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::file;
    use std::path::Path;

    #[test]
    fn key_and_config_paths_are_the_users_or_the_config_files() {
        let cfg = Path::new("/srv/app");
        let home = std::env::var("HOME").unwrap();
        assert_eq!(
            file(Path::new("~/.ssh/deploy"), cfg),
            Path::new(&home).join(".ssh/deploy")
        );
        assert_eq!(
            file(Path::new("keys/deploy"), cfg),
            Path::new("/srv/app/keys/deploy")
        );
        assert_eq!(file(Path::new("/etc/ssh/k"), cfg), Path::new("/etc/ssh/k"));
    }
}
