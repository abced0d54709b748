//! `cyan proxy install`: the proxy as a systemd service.
//!
//! A proxy that `cyan deploy` starts lives as long as nothing kills it: not
//! across a reboot, and not past a CI runner that sweeps up what its job
//! left. A systemd unit starts it at boot, restarts it after a crash, and
//! owns it: no job does. This module writes that unit (plain text, built
//! from plain values) and hands it to systemd.
//!
//! The unit's choices, for a process that `cyan proxy upgrade` replaces
//! with a child of its own:
//! - `Type=simple` and `NotifyAccess=main`: systemd tracks the process it
//!   started; at an upgrade that process names its successor the new main
//!   process (`MAINPID=`, see `handoff`) before it exits, so its exit is not
//!   the service's end and nothing is stopped or restarted. (`Type=forking`
//!   with a PID file would need the proxy to daemonize; `Type=notify` would
//!   need a readiness message the proxy does not send.)
//! - `KillMode=mixed`: on stop, SIGTERM goes to the main process alone,
//!   which drains for its `--drain-timeout`; what is left of the unit when
//!   it exits (a predecessor still draining) is killed. Never
//!   `KillMode=process`/`none`: they leave strays that hold the home's lock.
//! - `TimeoutStopSec` = the drain timeout + 15 s, so a drain is never cut.
//! - `Restart=always`, `RestartSec=1`, `StartLimitIntervalSec=0`: a proxy
//!   that exits, or cannot take its home yet, is tried again, forever.
//! - `LimitNOFILE=1048576`: one descriptor per client and per upstream
//!   connection.
//! - `After=`/`Wants=docker.service`: the apps behind it run there.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Serialize;

use super::client::AdminClient;
use super::Home;
use crate::error::{Error, Result};
use crate::output::Output;

/// The unit's name.
pub const UNIT_NAME: &str = "cyan-proxy.service";

/// Where the system administrator's units go.
pub const SYSTEM_UNIT_DIR: &str = "/etc/systemd/system";

/// Extra stop time beyond the drain, for the last responses and the exit.
const STOP_MARGIN: Duration = Duration::from_secs(15);

/// What the unit runs: `BINARY proxy run --home HOME RUN_FLAGS`.
#[derive(Debug, Clone)]
pub struct Unit {
    /// The cyan binary, an absolute path.
    pub binary: PathBuf,
    /// The proxy's home, an absolute path.
    pub home: PathBuf,
    /// More `cyan proxy run` flags, already checked.
    pub run_flags: Vec<String>,
    /// The proxy's `--drain-timeout`: how long a stop may take, less a margin.
    pub drain: Duration,
}

impl Unit {
    /// The unit file's text. Errors (`Error::Config`) on a path or flag that
    /// a unit file cannot carry (a line break) or a relative path.
    pub fn text(&self) -> Result<String> {
        for (what, path) in [("the cyan binary", &self.binary), ("--home", &self.home)] {
            if !path.is_absolute() {
                return Err(Error::Config(format!(
                    "{what} {} must be an absolute path in a systemd unit",
                    path.display()
                )));
            }
        }
        let bin = exec_arg(&self.binary.display().to_string())?;
        let home = exec_arg(&self.home.display().to_string())?;
        let mut run = format!("{bin} proxy run --home {home}");
        for flag in &self.run_flags {
            run.push(' ');
            run.push_str(&exec_arg(flag)?);
        }
        let stop = (self.drain + STOP_MARGIN).as_secs();
        Ok(format!(
            "# Written by `cyan proxy install`; running it again rewrites this file.
[Unit]
Description=cyan proxy (home {description})
After=network-online.target docker.service
Wants=network-online.target docker.service
StartLimitIntervalSec=0

[Service]
# `cyan proxy upgrade` names its successor the main process (MAINPID=).
Type=simple
NotifyAccess=main
ExecStart={run}
ExecReload={bin} proxy reload --home {home}
# SIGTERM to the proxy alone: it drains; what is left after it is killed.
KillMode=mixed
TimeoutStopSec={stop}
Restart=always
RestartSec=1
LimitNOFILE=1048576

[Install]
WantedBy=multi-user.target
",
            description = specifiers(&self.home.display().to_string()),
        ))
    }
}

/// Whether systemd manages this machine (what `sd_booted(3)` checks).
pub fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// What `install` did.
#[derive(Debug, Serialize)]
pub struct Installed {
    /// The unit file written.
    pub unit: PathBuf,
    /// `written` (not started), `started`, `enabled` (a proxy outside
    /// systemd already serves the home) or `running` (the unit already ran).
    pub action: &'static str,
    /// What the user should know or do next.
    pub note: String,
}

/// Writes `unit` as `dir/cyan-proxy.service` and, when `start` (and
/// systemd runs here), reloads systemd and enables the unit: started now,
/// unless a proxy outside systemd already serves `home` (then it is only
/// enabled, and `note` says how to switch) or the unit already runs (then
/// it applies at its next restart). Errors: the file cannot be written
/// (`Error::Platform`, saying to run as root), `systemctl` fails, or the
/// started proxy does not answer within 15 s.
pub async fn install(
    unit: &Unit,
    home: &Home,
    dir: &Path,
    start: bool,
    out: &Output,
) -> Result<Installed> {
    let text = unit.text()?;
    let path = dir.join(UNIT_NAME);
    out.phase(format!("write {}", path.display()));
    write_unit(&path, &text)?;
    out.done(format!("wrote {}", path.display()));
    let installed = |action, note: String| Installed {
        unit: path.clone(),
        action,
        note,
    };
    if !start {
        return Ok(installed(
            "written",
            "start it with `systemctl daemon-reload && systemctl enable --now cyan-proxy`".into(),
        ));
    }
    if !systemd_running() {
        return Ok(installed(
            "written",
            "not started: systemd does not run here (no /run/systemd/system)".into(),
        ));
    }
    systemctl(&["daemon-reload"], out)?;
    if unit_active() {
        systemctl(&["enable", UNIT_NAME], out)?;
        return Ok(installed(
            "running",
            "cyan-proxy.service already runs; the new unit applies at its next restart \
             (`systemctl restart cyan-proxy`: a gap while the proxy drains and starts again)"
                .into(),
        ));
    }
    let client = AdminClient::new(home);
    if let Ok(h) = client.health().await {
        systemctl(&["enable", UNIT_NAME], out)?;
        return Ok(installed(
            "enabled",
            format!(
                "a cyan proxy started outside systemd (pid {}) already serves {}; it keeps \
                 serving, and the unit is enabled but not started (the two would contend for \
                 the home). To switch, when a short gap is acceptable: `cyan proxy stop --home \
                 {}` then `systemctl start cyan-proxy`; at the latest the unit runs it from the \
                 next boot",
                h.pid,
                home.dir.display(),
                home.dir.display()
            ),
        ));
    }
    systemctl(&["enable", "--now", UNIT_NAME], out)?;
    out.phase("wait for the proxy to answer");
    super::client::wait_healthy(client, "the proxy of cyan-proxy.service")
        .await
        .map_err(|e| {
            Error::Platform(format!(
                "{e}; see `journalctl -u cyan-proxy` and {}",
                home.log().display()
            ))
        })?;
    out.done(format!("cyan-proxy.service serves {}", home.dir.display()));
    Ok(installed(
        "started",
        "stop it with `systemctl stop cyan-proxy` (`cyan proxy stop` ends it, and systemd starts it again)"
            .into(),
    ))
}

/// Writes the file whole or not at all (temp file, then rename), 0644.
fn write_unit(path: &Path, text: &str) -> Result<()> {
    let cannot = |e: std::io::Error| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
            "; run it as root (sudo), or print the unit with `cyan proxy install --print` and install it yourself"
        } else {
            ""
        };
        Error::Platform(format!("cannot write {}: {e}{hint}", path.display()))
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(cannot)?;
    }
    let tmp = path.with_extension("service.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(cannot)?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.set_permissions(std::fs::Permissions::from_mode(0o644)))
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            cannot(e)
        })
}

fn systemctl(args: &[&str], out: &Output) -> Result<()> {
    let line = format!("systemctl {}", args.join(" "));
    out.phase(&line);
    let done = Command::new("systemctl")
        .args(args)
        .output()
        .map_err(|e| Error::Platform(format!("cannot run {line}: {e}")))?;
    if !done.status.success() {
        return Err(Error::Platform(format!(
            "{line} failed ({}): {}",
            done.status,
            String::from_utf8_lossy(&done.stderr).trim()
        )));
    }
    out.done(line);
    Ok(())
}

fn unit_active() -> bool {
    Command::new("systemctl")
        .args(["is-active", "--quiet", UNIT_NAME])
        .status()
        .is_ok_and(|s| s.success())
}

/// One `ExecStart=` word: `%` and `$` escaped (systemd expands specifiers
/// and variables there), and double-quoted when it holds anything but
/// plain path and flag characters.
fn exec_arg(word: &str) -> Result<String> {
    if word.chars().any(char::is_control) {
        return Err(Error::Config(format!(
            "{word:?}: a systemd unit cannot carry control characters (a line break) in a command line"
        )));
    }
    let escaped = specifiers(word).replace('$', "$$");
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-:,=@+%$".contains(c);
    if !escaped.is_empty() && escaped.chars().all(plain) {
        return Ok(escaped);
    }
    Ok(format!(
        "\"{}\"",
        escaped.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// `%` escaped: systemd expands specifiers (`%h`, `%n`) in most settings.
fn specifiers(s: &str) -> String {
    s.replace('%', "%%")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(flags: &[&str]) -> Unit {
        Unit {
            binary: "/usr/local/bin/cyan".into(),
            home: "/var/lib/cyan".into(),
            run_flags: flags.iter().map(|f| f.to_string()).collect(),
            drain: Duration::from_secs(30),
        }
    }

    fn line<'a>(text: &'a str, key: &str) -> &'a str {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in\n{text}"))
    }

    #[test]
    fn the_unit_runs_the_proxy_with_its_home_and_flags() {
        let text = unit(&["--listen", "0.0.0.0:80", "--drain-timeout", "30s"])
            .text()
            .unwrap();
        assert_eq!(
            line(&text, "ExecStart="),
            "/usr/local/bin/cyan proxy run --home /var/lib/cyan --listen 0.0.0.0:80 --drain-timeout 30s"
        );
        assert_eq!(
            line(&text, "ExecReload="),
            "/usr/local/bin/cyan proxy reload --home /var/lib/cyan"
        );
        assert_eq!(line(&text, "KillMode="), "mixed");
        assert_eq!(line(&text, "NotifyAccess="), "main");
        assert_eq!(line(&text, "Restart="), "always");
        assert_eq!(
            line(&text, "TimeoutStopSec="),
            "45",
            "the drain and a margin"
        );
        assert_eq!(line(&text, "StartLimitIntervalSec="), "0");
        assert!(line(&text, "Wants=").contains("docker.service"));
        assert!(line(&text, "After=").contains("docker.service"));
    }

    #[test]
    fn odd_paths_and_flags_are_quoted_and_escaped() {
        let mut u = unit(&["--acme-email", "ops$1@example.com"]);
        u.home = "/srv/my home/100%".into();
        let text = u.text().unwrap();
        assert_eq!(
            line(&text, "ExecStart="),
            "/usr/local/bin/cyan proxy run --home \"/srv/my home/100%%\" --acme-email ops$$1@example.com"
        );
        assert_eq!(exec_arg("a\"b\\c").unwrap(), "\"a\\\"b\\\\c\"");
        assert_eq!(exec_arg("").unwrap(), "\"\"");
    }

    #[test]
    fn what_a_unit_cannot_carry_is_refused() {
        assert!(unit(&["--acme-email", "a\nExecStartPre=/bin/sh"])
            .text()
            .is_err());
        let mut u = unit(&[]);
        u.home = "relative/home".into();
        assert!(u.text().is_err());
    }
}
