//! `cyan proxy run|status|boot|install|upgrade|stop` and `cyan maintenance on|off`.

use std::ffi::OsString;

use crate::error::{Error, Result};
use crate::output::Output;
use crate::proxy::client::AdminClient;
use crate::proxy::{self, install, Home};

use super::{session, HoldCommand, LogFormat, MaintenanceCommand, ProxyCommand};
use crate::proxy::admin_listen::TcpAdmin;
use crate::proxy::state::Maintenance;

pub async fn hold(home: &Home, cmd: HoldCommand, out: &Output) -> Result<()> {
    let (config, duration) = match cmd {
        HoldCommand::On { config, duration } => (config, Some(duration)),
        HoldCommand::Off { config } => (config, None),
    };
    let cfg = docker_only(session::load(&config)?)?;
    let route = cfg.config.route();
    AdminClient::new(home).hold(&route, duration).await?;
    out.result(&serde_json::json!({"app": route, "held": duration.is_some()}), || match duration {
        Some(d) => format!(
            "{route}: new requests wait for the next switch (at most {}); `cyan hold off` releases them",
            humantime::format_duration(d)
        ),
        None => format!("{route}: released; requests go to the live color"),
    });
    Ok(())
}

/// `cfg`, unless its app runs on Kubernetes: holding and maintenance are
/// the cyan proxy's, on Docker hosts (a cluster's Service has neither).
fn docker_only(cfg: crate::config::Loaded) -> Result<crate::config::Loaded> {
    match cfg.config.platform {
        crate::config::PlatformKind::Docker if !cfg.config.hosts.is_empty() => {
            Err(Error::Refused(format!(
                "{} runs on hosts: holding requests and the maintenance page act on one proxy, so on a fleet they are not offered yet (they would act on this machine's proxy, not the hosts')",
                cfg.config.route()
            )))
        }
        crate::config::PlatformKind::Docker => Ok(cfg),
        crate::config::PlatformKind::Kubernetes => Err(Error::Refused(format!(
            "{} runs on Kubernetes: holding requests and the maintenance page are the cyan proxy's, on Docker hosts",
            cfg.config.route()
        ))),
    }
}

/// Parses `args` as `cyan proxy run` does, so a container or service that
/// would only restart with flags the proxy refuses is never made; `what`
/// names them in the error. `--home` is refused among them: it goes before
/// `--`, where it names the home being set up.
fn parse_run_flags(args: &[String], what: &str) -> Result<ProxyCommand> {
    use clap::Parser;
    let line = ["cyan", "proxy", "run"].into_iter().map(String::from);
    let cli = super::Cli::try_parse_from(line.chain(args.iter().cloned())).map_err(|e| {
        let why = e.to_string();
        let why = why.trim_start_matches("error: ").trim_end().to_string();
        Error::Config(format!("{what}: {why}"))
    })?;
    if cli.home.is_some() {
        return Err(Error::Config(format!(
            "{what}: --home goes before `--`, not among them"
        )));
    }
    match cli.command {
        super::Command::Proxy { command } => Ok(command),
        _ => unreachable!("`cyan proxy run ...` parses as a proxy command"),
    }
}

/// `--binary`, else the running cyan, as an absolute path.
fn binary_or_this(binary: Option<std::path::PathBuf>) -> Result<std::path::PathBuf> {
    let binary = match binary {
        Some(b) => b,
        None => std::env::current_exe()
            .map_err(|e| Error::Platform(format!("cannot find this cyan binary: {e}")))?,
    };
    binary
        .canonicalize()
        .map_err(|e| Error::Config(format!("--binary {}: {e}", binary.display())))
}

/// The systemd unit for `cyan proxy install`: the run flags checked as
/// `cyan proxy run` checks them, and the files they name absolute (the
/// unit runs from /, not from here).
fn service_unit(
    home: &Home,
    binary: Option<std::path::PathBuf>,
    run_flags: Vec<String>,
) -> Result<install::Unit> {
    let what = "cyan proxy install: the flags for `cyan proxy run`";
    let ProxyCommand::Run {
        drain_timeout,
        admin_token_file,
        acme,
        ..
    } = parse_run_flags(&run_flags, what)?
    else {
        unreachable!("`cyan proxy run ...` parses as Run")
    };
    let files = [
        ("--admin-token-file", admin_token_file),
        ("--acme-ca-root", acme.acme_ca_root),
    ];
    if let Some((flag, file)) = files
        .iter()
        .find_map(|(flag, f)| f.as_ref().filter(|f| f.is_relative()).map(|f| (flag, f)))
    {
        return Err(Error::Config(format!(
            "{what}: {flag} {}: give an absolute path (the service does not run from this folder)",
            file.display()
        )));
    }
    let home_dir = std::path::absolute(&home.dir)
        .map_err(|e| Error::Config(format!("--home {}: {e}", home.dir.display())))?;
    Ok(install::Unit {
        binary: binary_or_this(binary)?,
        home: home_dir,
        run_flags,
        drain: drain_timeout,
    })
}

pub async fn maintenance(home: &Home, cmd: MaintenanceCommand, out: &Output) -> Result<()> {
    let (config, page) = match cmd {
        MaintenanceCommand::On {
            config,
            retry_after,
            message,
        } => {
            let page = Maintenance {
                retry_after_s: retry_after.as_secs().max(1),
                message,
            };
            (config, Some(page))
        }
        MaintenanceCommand::Off { config } => (config, None),
    };
    let cfg = docker_only(session::load(&config)?)?;
    let route = cfg.config.route();
    let on = page.is_some();
    AdminClient::new(home).set_maintenance(&route, page).await?;
    out.result(
        &serde_json::json!({"app": route, "maintenance": on}),
        || {
            if on {
                format!("{route}: maintenance page on (503); `cyan maintenance off` ends it")
            } else {
                format!("{route}: maintenance off; traffic goes to the live color")
            }
        },
    );
    Ok(())
}

/// `cyan proxy …`; `log_format` is the global `--log-format`, which an
/// upgrade's successor keeps.
pub async fn run(
    home: &Home,
    cmd: ProxyCommand,
    log_format: LogFormat,
    out: &Output,
) -> Result<()> {
    match cmd {
        cmd @ ProxyCommand::Run { .. } => {
            let opts = run_options(home, cmd, log_format)?;
            let follow: proxy::Follow =
                Box::new(|router, stop| Box::pin(crate::platform::follow::follow(router, stop)));
            Ok(proxy::run(home, &opts, Some(follow)).await?)
        }
        ProxyCommand::Reload => {
            let reloaded = AdminClient::new(home).reload().await?;
            out.result(&reloaded, || match reloaded.renewed.as_slice() {
                [] => "no TLS certificate renewed".into(),
                renewed => format!("renewed certificates: {}", renewed.join(", ")),
            });
            if reloaded.refused.is_empty() {
                return Ok(());
            }
            let why: Vec<String> = reloaded
                .refused
                .iter()
                .map(|r| format!("{}: {}", r.route, r.error))
                .collect();
            Err(Error::Refused(format!(
                "TLS files that do not load were refused; the last good certificate is still served ({}). Fix the files and run `cyan proxy reload` again",
                why.join("; ")
            )))
        }
        ProxyCommand::Status => {
            let routes = AdminClient::new(home).routes().await?;
            out.result(&routes, || {
                routes
                    .iter()
                    .map(|r| {
                        let stats = r
                            .stats
                            .iter()
                            .map(|(c, s)| {
                                format!(
                                    "{c}: {} req, {} 5xx, {} in flight",
                                    s.requests, s.status_5xx, s.inflight
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("; ");
                        format!(
                            "{}: live {} hosts {:?} listen {} — {stats}",
                            r.name,
                            r.state.live.map_or("-".into(), |c| c.to_string()),
                            r.state.hosts,
                            r.state.listen.map_or("-".into(), |a| a.to_string())
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Ok(())
        }
        ProxyCommand::Boot {
            binary,
            listen,
            metrics,
            run_flags,
        } => {
            let binary = binary_or_this(binary)?;
            let mut args: Vec<String> = listen
                .iter()
                .flat_map(|a| ["--listen".to_string(), a.to_string()])
                .collect();
            args.extend(
                metrics
                    .iter()
                    .flat_map(|m| ["--metrics".to_string(), m.to_string()]),
            );
            args.extend(run_flags);
            parse_run_flags(
                &args,
                "cyan proxy boot: the flags for the proxy in the container",
            )?;
            let docker = crate::platform::docker::connect().await?;
            let b = crate::proxy::boot::boot(&docker, home, &binary, &args, out).await?;
            out.result(&b, || {
                format!(
                    "{} {} ({}); state in {}",
                    b.container,
                    b.action,
                    b.image,
                    home.dir.display()
                )
            });
            Ok(())
        }
        ProxyCommand::Install {
            binary,
            unit_dir,
            no_start,
            print,
            run_flags,
        } => {
            let unit = service_unit(home, binary, run_flags)?;
            if print || (unit_dir.is_none() && !install::systemd_running()) {
                if !print {
                    out.warn(format!(
                        "systemd does not run here (no /run/systemd/system), so nothing was \
                         installed; on a host with systemd, save this unit as {}/{} and run \
                         `systemctl daemon-reload && systemctl enable --now cyan-proxy` (or run \
                         the proxy as a container: `cyan proxy boot`)",
                        install::SYSTEM_UNIT_DIR,
                        install::UNIT_NAME
                    ));
                }
                let text = unit.text()?;
                out.result(&serde_json::json!({ "unit_file": text }), || {
                    text.trim_end().to_string()
                });
                return Ok(());
            }
            let dir = unit_dir.unwrap_or_else(|| install::SYSTEM_UNIT_DIR.into());
            let done = install::install(&unit, home, &dir, !no_start, out).await?;
            out.result(&done, || {
                format!("{} {}; {}", done.unit.display(), done.action, done.note)
            });
            Ok(())
        }
        ProxyCommand::Upgrade { binary } => {
            let binary = binary_or_this(binary)?;
            out.phase(format!("hand the proxy over to {}", binary.display()));
            let r = AdminClient::new(home).upgrade(&binary).await?;
            out.done(format!(
                "pid {} took over from pid {}",
                r.new_pid, r.old_pid
            ));
            out.result(&r, || {
                format!(
                    "proxy upgraded: pid {} serves; pid {} drains and exits",
                    r.new_pid, r.old_pid
                )
            });
            Ok(())
        }
        ProxyCommand::Stop => {
            AdminClient::new(home).shutdown().await?;
            out.result(&serde_json::json!({"stopping": true}), || {
                "proxy is draining and will exit".into()
            });
            Ok(())
        }
    }
}

/// The proxy's options from `cyan proxy run`'s flags (`cmd` is `Run`),
/// with the arguments that start a successor the same way.
fn run_options(home: &Home, cmd: ProxyCommand, log_format: LogFormat) -> Result<proxy::RunOptions> {
    let ProxyCommand::Run {
        listen,
        tls_listen,
        drain_timeout,
        metrics,
        threads,
        header_timeout,
        body_timeout,
        idle_timeout,
        cert_check_interval,
        admin_listen,
        admin_token_file,
        acme,
    } = cmd
    else {
        unreachable!("run_options is given `cyan proxy run`");
    };
    let admin_tcp = match (admin_listen, admin_token_file) {
        (Some(addr), Some(file)) => Some(TcpAdmin::new(addr, file)?),
        _ => None,
    };
    let mut opts = proxy::RunOptions {
        listen,
        tls_listen,
        drain: drain_timeout,
        metrics,
        admin_tcp,
        threads,
        timeouts: proxy::timeouts::Timeouts {
            header: header_timeout,
            body: body_timeout,
            idle: idle_timeout,
        },
        cert_check: cert_check_interval,
        acme: proxy::acme::AcmeOptions {
            directory: acme.acme_directory,
            email: acme.acme_email,
            ca_root: acme
                .acme_ca_root
                .map(|p| std::path::absolute(&p).unwrap_or(p)),
            challenge: acme.acme_challenge,
        },
        successor_args: Vec::new(),
    };
    opts.successor_args = successor_args(home, &opts, log_format);
    Ok(opts)
}

/// The arguments of `cyan proxy run` that give an upgrade's successor the
/// same options as `opts`. The successor takes the listening sockets
/// themselves (`proxy::handoff`) and binds nothing twice; it gets the
/// listen flags anyway, since they say which addresses are the proxy's own
/// (no route may take one, and deploy URLs name them).
fn successor_args(home: &Home, opts: &proxy::RunOptions, log_format: LogFormat) -> Vec<OsString> {
    let flag = |name: &str, value: &dyn AsRef<std::ffi::OsStr>| proxy::flag_arg(name, value);
    let d = |d| humantime::format_duration(d).to_string();
    let t = &opts.timeouts;
    let acme = &opts.acme;
    let log_format = match log_format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    let mut args = vec![
        OsString::from("proxy"),
        OsString::from("run"),
        flag("log-format", &log_format),
        flag("home", &home.dir),
        flag("drain-timeout", &d(opts.drain)),
        flag("header-timeout", &d(t.header)),
        flag("body-timeout", &d(t.body)),
        flag("idle-timeout", &d(t.idle)),
        flag("cert-check-interval", &d(opts.cert_check)),
        flag("acme-directory", &acme.directory),
        flag("acme-challenge", &acme.challenge.as_str()),
    ];
    args.extend(opts.listen.iter().map(|a| flag("listen", &a.to_string())));
    args.extend(
        opts.tls_listen
            .iter()
            .map(|a| flag("tls-listen", &a.to_string())),
    );
    args.extend(opts.metrics.iter().map(|m| flag("metrics", &m.to_string())));
    args.extend(opts.threads.iter().map(|n| flag("threads", &n.to_string())));
    args.extend(acme.email.iter().map(|e| flag("acme-email", e)));
    args.extend(acme.ca_root.iter().map(|r| flag("acme-ca-root", r)));
    if let Some(a) = &opts.admin_tcp {
        args.push(flag("admin-listen", &a.addr.to_string()));
        args.push(flag("admin-token-file", &a.token_file));
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upgrade's successor, started with `successor_args`, runs with
    /// every option its predecessor had.
    #[test]
    fn a_successor_gets_the_same_options() {
        let dir = std::env::temp_dir().join(format!("cyan-successor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("token");
        std::fs::write(&token, "0123456789abcdef0123").unwrap();
        let home = Home { dir: dir.clone() };
        let flags: Vec<String> = [
            "--drain-timeout",
            "7s",
            "--header-timeout",
            "3s",
            "--body-timeout",
            "11s",
            "--idle-timeout",
            "42s",
            "--cert-check-interval",
            "5m",
            "--listen",
            "127.0.0.1:8080",
            "--listen",
            "[::1]:8080",
            "--metrics",
            "127.0.0.1:9109",
            "--threads",
            "3",
            "--tls-listen",
            "127.0.0.1:8443",
            "--acme-directory",
            "https://127.0.0.1:14000/dir",
            "--acme-email",
            "ops@example.com",
            "--acme-ca-root",
            "/etc/pebble.pem",
            "--acme-challenge",
            "tls-alpn-01",
            "--admin-listen",
            "127.0.0.1:9180",
            "--admin-token-file",
        ]
        .into_iter()
        .map(String::from)
        .chain([token.display().to_string()])
        .collect();
        let first = run_options(
            &home,
            parse_run_flags(&flags, "test").unwrap(),
            LogFormat::Json,
        )
        .unwrap();
        // The successor's whole command line, as it will be parsed: its home
        // may start with '-' and need not be UTF-8.
        use std::os::unix::ffi::OsStringExt;
        let odd = Home {
            dir: std::path::PathBuf::from(std::ffi::OsString::from_vec(b"-odd/h\xffome".to_vec())),
        };
        let first = proxy::RunOptions {
            successor_args: successor_args(&odd, &first, LogFormat::Json),
            ..first
        };
        let line = [OsString::from("cyan")]
            .into_iter()
            .chain(first.successor_args.iter().cloned());
        let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(line).unwrap();
        assert_eq!(
            cli.home.as_deref(),
            Some(odd.dir.as_path()),
            "the home, exactly"
        );
        assert_eq!(cli.log_format, LogFormat::Json, "the log format");
        let crate::cli::Command::Proxy { command } = cli.command else {
            panic!("not `cyan proxy run`");
        };
        let again = proxy::RunOptions {
            successor_args: first.successor_args.clone(),
            ..run_options(&odd, command, cli.log_format).unwrap()
        };
        assert_eq!(format!("{first:?}"), format!("{again:?}"));
        assert_eq!(again.acme.challenge, proxy::acme::ChallengeKind::TlsAlpn01);
        assert_eq!(again.timeouts.idle, std::time::Duration::from_secs(42));
        assert_eq!(again.listen.len(), 2, "the proxy's own addresses");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
