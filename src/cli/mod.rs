//! The command line: what runs each command, and where.
//!
//! - `args`: clap's definitions (commands, flags, value parsers), apart
//!   from what runs them; re-exported here, so `cli::Cli`, `cli::Command`
//!   and the rest keep their paths.
//! - Here: `run`, which loads the config, opens the platform once for the
//!   app commands (`deployer`) and hands each command plain values;
//!   `main_with_args` (the async runtime, tracing, the exit code).
//! - One module per command: `converge` (deploy, promote, rollback,
//!   abort), `status` (status, history), `dashboard`, `remove`, `image` (build, push),
//!   `proxy` (proxy, maintenance, hold), `init`; `kube/` the same commands
//!   against a cluster; `report` what they return, `session` what they set
//!   up first.
//!
//! Flags are parsed and resolved into plain values before any command
//! logic runs; nothing below this layer sees clap types.

mod args;
mod converge;
mod dashboard;
mod deployer;
mod fleet;
mod image;
mod init;
mod kube;
mod lifecycle;
mod proxy;
mod remove;
mod report;
mod serve;
mod session;
mod stages;
mod status;

use clap::Parser;

use crate::error::{Error, Result};
use crate::output::Output;
pub use args::{
    AcmeArgs, Cli, Command, ConfigArg, ConfigCommand, DashboardAccess, HoldCommand, ImageOverride,
    ImageStep, LockWait, LogFormat, MaintenanceCommand, PlatformArg, ProxyCommand, ServeCommand,
};
use deployer::Deployer;

/// Runs a parsed command line.
pub async fn run(cli: Cli, out: &Output) -> Result<()> {
    let home = crate::proxy::Home::resolve(cli.home.as_deref());
    match cli.command {
        Command::Deploy {
            config,
            platform,
            release,
            image,
            require_approval,
            context,
            rollback_on_failure,
            lock,
        } => {
            let mut cfg = session::load_with(&config, &image, platform.platform)?;
            if let Some(dir) = context {
                let dir = std::path::absolute(&dir)
                    .map_err(|e| Error::Config(format!("--context {}: {e}", dir.display())))?;
                cfg.config.build.context = dir;
            }
            if let Some(required) = require_approval {
                cfg.config.require_approval = required;
            }
            let options = converge::DeployOptions {
                version: release,
                rollback_on_failure,
                lock_wait: lock.lock_wait,
            };
            let on = Deployer::of(&home, &cfg);
            out.report(&on.deploy(&cfg, &options, out).await?);
            Ok(())
        }
        Command::Rollback {
            config,
            platform,
            to,
            image,
            lock,
        } => {
            let cfg = session::load_with(&config, &image, platform.platform)?;
            let on = Deployer::of(&home, &cfg);
            out.report(
                &on.rollback(&cfg, to.as_deref(), lock.lock_wait, out)
                    .await?,
            );
            Ok(())
        }
        Command::Promote {
            config,
            from: Some(from),
            to: Some(to),
            release,
            platform,
            image,
            lock,
        } => {
            let stage = |name: &str| {
                let arg = ConfigArg {
                    environment: Some(name.to_string()),
                    ..config.clone()
                };
                session::load_with(&arg, &image, platform.platform)
            };
            let (from, to) = (stage(&from)?, stage(&to)?);
            if to.config.platform != crate::config::PlatformKind::Docker {
                return Err(Error::Refused(
                    "promote --from/--to runs on Docker hosts; on Kubernetes apply the same image to the other environment's BlueGreenDeployment".into(),
                ));
            }
            if let Some(fleet) = [&from, &to]
                .into_iter()
                .find(|c| !c.config.hosts.is_empty())
            {
                return Err(Error::Refused(format!(
                    "promote --from/--to ships one host's image to the same host; {} runs on hosts:, so deploy the version there instead (cyan deploy -e {} --version V: built or pulled once, and every host gets that image id)",
                    fleet.config.environment, to.config.environment
                )));
            }
            out.report(
                &stages::promote(&home, &from, &to, release.as_deref(), lock.lock_wait, out)
                    .await?,
            );
            Ok(())
        }
        Command::Promote {
            config,
            platform,
            image,
            lock,
            ..
        } => {
            let cfg = session::load_with(&config, &image, platform.platform)?;
            let on = Deployer::of(&home, &cfg);
            out.report(&on.promote(&cfg, lock.lock_wait, out).await?);
            Ok(())
        }
        Command::Abort {
            config,
            platform,
            lock,
        } => {
            let cfg = session::load_with(&config, &ImageOverride::default(), platform.platform)?;
            let on = Deployer::of(&home, &cfg);
            out.report(&on.abort(&cfg, lock.lock_wait, out).await?);
            Ok(())
        }
        Command::Remove { config, yes, lock } => {
            let cfg = session::load(&config)?;
            let on = Deployer::of(&home, &cfg);
            on.remove(&cfg, yes, lock.lock_wait, out).await
        }
        Command::Status { config, platform } => {
            let cfg = session::load_with(&config, &ImageOverride::default(), platform.platform)?;
            let on = Deployer::of(&home, &cfg);
            out.report(&on.status(&cfg, out).await?);
            Ok(())
        }
        Command::History { config, platform } => {
            let cfg = session::load_with(&config, &ImageOverride::default(), platform.platform)?;
            let on = Deployer::of(&home, &cfg);
            out.report(&on.history(&cfg, out).await?);
            Ok(())
        }
        Command::Build(step) => {
            let cfg = session::load_shared(&step.config, &step.image)?;
            image::build(&cfg, step.release.as_deref(), out).await
        }
        Command::Push(step) => {
            let cfg = session::load_shared(&step.config, &step.image)?;
            image::push(&cfg, step.release.as_deref(), out).await
        }
        Command::Init {
            dir,
            force,
            app,
            listen,
        } => init::init(
            &init::InitOptions {
                dir,
                force,
                app,
                listen,
            },
            out,
        ),
        Command::Config {
            command: ConfigCommand::Check { config },
        } => {
            let checked = session::check(&config)?;
            let first = &checked[0].config;
            let names: Vec<&str> = checked
                .iter()
                .map(|l| l.config.environment.as_str())
                .collect();
            out.result(
                &serde_json::json!({
                    "valid": true,
                    "config": first,
                    "environments": checked.iter().map(|l| (l.config.environment.to_string(), &l.config)).collect::<std::collections::BTreeMap<_, _>>(),
                }),
                || format!("{}: ok ({} in {})", config.config.display(), first.app, names.join(", ")),
            );
            Ok(())
        }
        Command::Maintenance { command } => proxy::maintenance(&home, command, out).await,
        Command::Hold { command } => proxy::hold(&home, command, out).await,
        Command::Proxy { command } => proxy::run(&home, command, cli.log_format, out).await,
        Command::Crd => {
            // `cyan crd | head` is not an error, a full disk is (`output`'s rule).
            use std::io::Write as _;
            match std::io::stdout().write_all(crate::platform::kube::crd::crd_yaml().as_bytes()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::Platform(
                    format!("cannot write the CRD to stdout: {e}"),
                )),
                _ => Ok(()),
            }
        }
        Command::Serve {
            command:
                ServeCommand::Run {
                    config,
                    listen,
                    state,
                    stop_timeout,
                    max_body,
                    dashboard,
                    access,
                },
        } => {
            if dashboard.is_none()
                && (access.token_file.is_some()
                    || access.trust_header.is_some()
                    || access.read_only)
            {
                return Err(Error::Config(
                    "--token-file, --trust-header and --read-only are the dashboard's: add --dashboard ADDR".into(),
                ));
            }
            let opts = serve::RunOptions {
                dashboard: dashboard.map(|at| {
                    dashboard::Options::new(vec![config.clone()], at, access, cli.home.clone())
                }),
                config,
                listen,
                state,
                home_flag: cli.home.clone(),
                stop_timeout,
                body_max: max_body,
            };
            serve::run(&home, opts, out).await
        }
        Command::Dashboard {
            configs,
            listen,
            access,
        } => {
            let opts = dashboard::Options::new(configs, listen, access, cli.home.clone());
            dashboard::run(&home, opts, serve::stopped(), out).await
        }
        Command::Serve {
            command: ServeCommand::Deliveries { config, state },
        } => serve::list(&home, &config, state.as_deref(), out),
        Command::Watch {
            url: Some(url),
            every,
            timeout,
            duration,
            count,
            version_header,
            version_field,
            ..
        } => {
            use crate::watch::probe::{Options, Until, VersionSource};
            let until = match (duration, count) {
                (Some(d), _) => Until::Elapsed(d),
                (None, Some(n)) => Until::Probes(n),
                (None, None) => Until::Stopped,
            };
            let opts = Options {
                url,
                every,
                timeout,
                until,
                version: VersionSource {
                    header: version_header,
                    field: version_field,
                },
            };
            crate::watch::probe::run(&opts, out.format()).await
        }
        Command::Watch {
            url: None,
            config,
            environment,
            every,
            duration,
            count,
            version_header,
            ..
        } => {
            if count.is_some() || version_header.is_some() {
                return Err(Error::Config(
                    "--count and --version-header are for --url; with -c, --for ends the watch"
                        .into(),
                ));
            }
            let cfg = session::load(&ConfigArg {
                config: config.unwrap_or_else(|| "cyan.yaml".into()),
                environment,
                branch: None,
                hosts: Vec::new(),
            })?;
            crate::watch::app::run(&home, &cfg, every, duration, out.format()).await
        }
        Command::Operator {
            listen,
            namespace,
            lease_namespace,
            identity,
        } => {
            crate::operator::run(crate::operator::OperatorOptions {
                listen,
                namespace,
                lease_namespace,
                identity: identity.unwrap_or_else(crate::clock::hostname),
            })
            .await
        }
    }
}

/// Parses args, runs, and turns an error into its exit code after printing it once.
pub fn main_with_args() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    // The proxy serves traffic on threads of its own (one per core); its
    // main runtime only runs the admin API, so one thread is plenty.
    let proxy = matches!(
        cli.command,
        Command::Proxy {
            command: ProxyCommand::Run { .. }
        }
    );
    let runtime = if proxy {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Runtime::new()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(crate::error::exit::INTERNAL);
        }
    };
    let out = Output::new(cli.output);
    let outcome = runtime.block_on(run(cli, &out));
    // A result that did not reach stdout is not a success.
    let outcome = outcome.and_then(|()| match out.unwritten() {
        Some(e) => Err(Error::Platform(format!(
            "cannot write the result to stdout: {e}"
        ))),
        None => Ok(()),
    });
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            out.error(&e);
            e.exit_code()
        }
    }
}

fn init_tracing(format: LogFormat) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    if format == LogFormat::Json {
        // The step events are the structured progress: always on in JSON.
        let steps = format!("{}=info", crate::engine::STEP_EVENTS);
        filter = filter.add_directive(steps.parse().expect("a valid directive"));
    }
    // Colour only for a person: a log file or journal gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A log that cannot be written (a full disk under the proxy's
        // log) must not take the process down: tracing would say so with
        // `eprintln!` to the same failing stderr, which panics.
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    // Over RUST_LOG: the Docker client's debug logs hold secret values.
    let secrets = tracing_subscriber::filter::filter_fn(crate::config::log_filter);
    use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt};
    match format {
        LogFormat::Json => builder.json().finish().with(secrets).init(),
        LogFormat::Text => builder.finish().with(secrets).init(),
    }
}
