//! `cyan serve run` and `cyan serve deliveries`: the webhook server for
//! cyan.yaml's `serve:` section, and its log read back.
//!
//! The server is foreground and logs to stderr (systemd's way); SIGTERM or
//! SIGINT stops it taking deliveries, and a deploy already running gets
//! `--stop-timeout` to finish.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, Pick};
use crate::error::{Error, Result};
use crate::output::Output;
use crate::serve::deliveries::{self, Log};
use crate::serve::fetch::Fetcher;
use crate::serve::queue::{Queue, Runner};
use crate::serve::rules::ServeConfig;
use crate::serve::server::{Limits, Server};

/// What `cyan serve run` is given.
#[derive(Debug)]
pub struct RunOptions {
    pub config: PathBuf,
    pub listen: std::net::SocketAddr,
    pub state: Option<PathBuf>,
    /// `--home`, passed on to the deploys.
    pub home_flag: Option<PathBuf>,
    /// How long a running deploy may take to finish after SIGTERM.
    pub stop_timeout: Duration,
    pub body_max: usize,
    /// `--dashboard`: the dashboard of this app beside the webhooks.
    pub dashboard: Option<super::dashboard::Options>,
}

/// Loads cyan.yaml's `serve:` and checks its rules name environments of
/// the file. Returns the app's name too.
///
/// Errors (`Error::Config`): no `serve:`, or a rule's `deploy`/`then`
/// that is none of the file's environments.
fn load(path: &Path) -> Result<(String, ServeConfig)> {
    let loaded = Config::load(
        path,
        &Pick {
            shared_only: true,
            ..Default::default()
        },
    )?;
    let config = loaded.config;
    let serve = config.serve.clone().ok_or_else(|| {
        Error::Config(format!(
            "{} has no serve: section (what cyan serve deploys, from which pushes)",
            path.display()
        ))
    })?;
    let names = config.environment_names();
    for (i, rule) in serve.rules.iter().enumerate() {
        for name in std::iter::once(&rule.deploy).chain(rule.then.as_ref()) {
            if !names.iter().any(|n| n == name.as_str()) {
                return Err(Error::Config(format!(
                    "serve.rules[{i}] ({}) names the environment {name}, which is not one of the file's environments ({})",
                    rule.refs,
                    if names.is_empty() { "it has none: add environments:".to_string() } else { names.join(", ") }
                )));
            }
        }
    }
    Ok((config.app.to_string(), serve))
}

/// `--state`, else `<cyan home>/serve/<app>`.
fn state_dir(home: &crate::proxy::Home, flag: Option<&Path>, app: &str) -> Result<PathBuf> {
    let dir = flag.map_or_else(|| home.dir.join("serve").join(app), Path::to_path_buf);
    std::path::absolute(&dir).map_err(|e| Error::Config(format!("--state {}: {e}", dir.display())))
}

fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| Error::Platform(format!("cannot make {}: {e}", dir.display())))
}

/// Runs the server until SIGTERM or SIGINT.
pub async fn run(home: &crate::proxy::Home, opts: RunOptions, out: &Output) -> Result<()> {
    let config = std::path::absolute(&opts.config)
        .map_err(|e| Error::Config(format!("{}: {e}", opts.config.display())))?;
    let (app, serve) = load(&config)?;
    // Read now, so a missing secret is a start failure, not a 500 later.
    serve.secret.read()?;
    for rule in &serve.rules {
        if let Some(s) = &rule.secret {
            s.read()?;
        }
    }
    let state = state_dir(home, opts.state.as_deref(), &app)?;
    private_dir(&state)?;
    private_dir(&state.join("logs"))?;
    let log = Arc::new(Log::open(&state)?);
    let exe = std::env::current_exe()
        .map_err(|e| Error::Platform(format!("cannot find cyan's own binary: {e}")))?;
    let queue = Queue::new(Runner {
        exe,
        config,
        home: opts.home_flag,
        source: serve.source.as_str().to_string(),
        credentials: serve.credentials.clone(),
        logs: state.join("logs"),
        fetcher: Fetcher::new(&state),
        log: Arc::clone(&log),
    });
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| Error::Platform(format!("cannot listen on {}: {e}", opts.listen)))?;
    let at = listener.local_addr().unwrap_or(opts.listen);
    out.phase(format!(
        "cyan serve: {app}'s webhooks on http://{at}, state in {}",
        state.display()
    ));
    let limits = Limits {
        body_max: opts.body_max,
        ..Limits::default()
    };
    let server = Arc::new(Server::new(serve, log, Arc::clone(&queue), limits));
    match opts.dashboard {
        Some(mut dashboard) => {
            dashboard.serve_state = Some(state.clone());
            // The dashboard runs as long as the webhooks; one that cannot
            // start (a taken address, a missing token) stops cyan serve.
            tokio::select! {
                () = server.serve(listener, stopped()) => {}
                shown = super::dashboard::run(home, dashboard, std::future::pending(), out) => {
                    shown?;
                }
            }
        }
        None => server.serve(listener, stopped()).await,
    }
    out.phase("cyan serve: stopping; waiting for running deploys");
    queue.drain(opts.stop_timeout).await;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub(super) async fn stopped() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot watch SIGTERM/SIGINT: stop the server with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// `cyan serve deliveries`: the log, newest first, one line per delivery
/// and target.
pub fn list(
    home: &crate::proxy::Home,
    config: &Path,
    state: Option<&Path>,
    out: &Output,
) -> Result<()> {
    let (app, _) = load(config)?;
    let state = state_dir(home, state, &app)?;
    let entries = deliveries::latest(deliveries::read(&state.join("deliveries.jsonl"))?);
    out.result(&entries, || {
        let mut t = String::from("RECEIVED              FORGE      REF                        COMMIT        VERDICT            ENVIRONMENT  VERSION       REASON");
        for e in &entries {
            let d = e.deploy.as_ref();
            t.push_str(&format!(
                "\n{:<21} {:<10} {:<26} {:<13} {:<18} {:<12} {:<13} {}",
                e.received_at,
                e.forge.as_deref().unwrap_or("-"),
                e.git_ref.as_deref().unwrap_or("-").trim_start_matches("refs/heads/"),
                e.commit.as_deref().map_or("-", |c| &c[..c.len().min(12)]),
                e.verdict.as_str(),
                d.map_or("-", |d| d.environment.as_str()),
                d.map_or("-", |d| d.version.as_str()),
                e.reason.as_deref().unwrap_or(""),
            ));
        }
        t
    });
    Ok(())
}
