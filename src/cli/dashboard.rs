//! `cyan dashboard`: the web page of `crate::dashboard`, for the apps of
//! the cyan.yaml files it is given and every other route of this host's
//! proxy.
//!
//! The overview is what `cyan status` and `cyan history` report, made
//! here every two seconds from the same code (`Deployer`), with the
//! webhook deliveries of `cyan serve` where its log is in the default
//! place. An app is acted on through its cyan.yaml, so the buttons are
//! shown for the apps of `-c` files only; the host's other routes are
//! listed with what the proxy knows of them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use super::deployer::Deployer;
use super::session;
use super::{ConfigArg, DashboardAccess};
use crate::config::Loaded;
use crate::dashboard::access::{Access, Mode};
use crate::dashboard::actions::{Actions, Target};
use crate::dashboard::feed::Feed;
use crate::dashboard::server::Dashboard;
use crate::error::{Error, Result};
use crate::output::{Format, Output};
use crate::proxy::client::AdminClient;
use crate::proxy::Home;
use crate::serve::deliveries;

/// How long one app's status and history may take to read.
const READ_WITHIN: Duration = Duration::from_secs(5);
/// Deliveries shown per app.
const DELIVERIES_SHOWN: usize = 20;

/// What `cyan dashboard` (and `cyan serve run --dashboard`) is given.
#[derive(Debug)]
pub struct Options {
    /// cyan.yaml files whose apps (every environment) are shown with
    /// buttons; none: `./cyan.yaml` if there is one.
    pub configs: Vec<PathBuf>,
    pub listen: SocketAddr,
    pub access: DashboardAccess,
    /// `--home`, passed on to the actions.
    pub home_flag: Option<PathBuf>,
    /// Where `cyan serve` keeps its state, when not in its default place
    /// (`--state`): its deliveries are read there.
    pub serve_state: Option<PathBuf>,
}

impl Options {
    pub fn new(
        configs: Vec<PathBuf>,
        listen: SocketAddr,
        access: DashboardAccess,
        home_flag: Option<PathBuf>,
    ) -> Options {
        Options {
            configs,
            listen,
            access,
            home_flag,
            serve_state: None,
        }
    }
}

/// Serves the dashboard until `stop` resolves.
///
/// Errors (`Error::Config`): a cyan.yaml that does not load, an app in
/// two files, an unreadable or short token file, or a listen address off
/// loopback with neither a token nor a trusted header;
/// (`Error::Platform`) an address that cannot be listened on.
pub async fn run(
    home: &Home,
    opts: Options,
    stop: impl std::future::Future<Output = ()>,
    out: &Output,
) -> Result<()> {
    let mode = mode(&opts.access)?;
    let apps = load(&opts.configs)?;
    let access =
        Access::new(mode, opts.listen, opts.access.hosts.clone()).map_err(Error::Config)?;
    let read_only = opts.access.read_only;
    let every = opts.access.dashboard_every;
    let exe = std::env::current_exe()
        .map_err(|e| Error::Platform(format!("cannot find cyan's own binary: {e}")))?;
    let targets = apps
        .iter()
        .map(|(cfg, named)| {
            (
                (
                    cfg.config.app.to_string(),
                    cfg.config.environment.to_string(),
                ),
                Target {
                    config: cfg.path.clone(),
                    named: *named,
                },
            )
        })
        .collect();
    let actions = Actions {
        exe,
        home: opts.home_flag.clone(),
        targets,
    };
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| Error::Platform(format!("cannot listen on {}: {e}", opts.listen)))?;
    let at = listener.local_addr().unwrap_or(opts.listen);
    let admin = AdminClient::new(home);
    let sources = Sources {
        home,
        apps: &apps,
        admin: &admin,
        read_only,
        serve_state: opts.serve_state.as_deref(),
    };
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(sources.overview().await));
    let feed = Feed::new(rx);
    tokio::spawn(Arc::clone(&feed).run(admin.clone(), every));
    let url = match access.made_token() {
        Some(token) => format!("http://{at}/?token={token}"),
        None => format!("http://{at}/"),
    };
    let dashboard = Arc::new(Dashboard::new(access, feed, actions, read_only));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(dashboard.serve(listener, async {
        let _ = stop_rx.await;
    }));
    out.phase(format!(
        "cyan dashboard on {url} ({} app environment(s) with buttons{})",
        apps.len(),
        if read_only { ", read-only" } else { "" }
    ));
    let refresh = every.max(Duration::from_secs(2));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep(refresh) => {}
        }
        let now = tokio::select! {
            () = &mut stop => break,
            now = sources.overview() => now,
        };
        tx.send_if_modified(|v| {
            let changed = **v != now;
            if changed {
                *v = Arc::new(now);
            }
            changed
        });
    }
    let _ = stop_tx.send(());
    let _ = server.await;
    Ok(())
}

/// The door `opts` asks for. Errors: an unreadable or empty token file, a
/// header name HTTP does not allow, or both.
fn mode(opts: &DashboardAccess) -> Result<Mode> {
    match (&opts.token_file, &opts.trust_header) {
        (Some(_), Some(_)) => Err(Error::Config(
            "give --token-file or --trust-header, not both".into(),
        )),
        (Some(file), None) => {
            let token = std::fs::read_to_string(file)
                .map_err(|e| Error::Config(format!("--token-file {}: {e}", file.display())))?;
            let token = token.trim();
            if token.len() < 16 {
                return Err(Error::Config(format!(
                    "--token-file {}: the token is {} characters; use at least 16 (e.g. `head -c 24 /dev/urandom | base64 > {}`)",
                    file.display(),
                    token.len(),
                    file.display()
                )));
            }
            Ok(Mode::Token(SecretString::from(token.to_string())))
        }
        (None, Some(name)) => hyper::header::HeaderName::from_bytes(name.as_bytes())
            .map(Mode::Header)
            .map_err(|_| Error::Config(format!("--trust-header {name:?} is not a header name"))),
        (None, None) => Ok(Mode::made()),
    }
}

/// Every environment of each file, with whether it is named by `-e`.
/// None given: `./cyan.yaml` when there is one.
fn load(configs: &[PathBuf]) -> Result<Vec<(Loaded, bool)>> {
    let default = PathBuf::from("cyan.yaml");
    let configs: Vec<PathBuf> = match configs {
        [] if default.exists() => vec![default],
        given => given.to_vec(),
    };
    let mut out: Vec<(Loaded, bool)> = Vec::new();
    for path in configs {
        let arg = ConfigArg {
            config: std::path::absolute(&path)
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?,
            environment: None,
            branch: None,
            hosts: Vec::new(),
        };
        let loaded = session::check(&arg)?;
        let named = loaded.len() > 1 || !loaded[0].config.environment_names().is_empty();
        for cfg in loaded {
            let id = (
                cfg.config.app.to_string(),
                cfg.config.environment.to_string(),
            );
            if out
                .iter()
                .any(|(c, _)| (c.config.app.to_string(), c.config.environment.to_string()) == id)
            {
                return Err(Error::Config(format!(
                    "{} ({}) is in two of the -c files",
                    id.0, id.1
                )));
            }
            out.push((cfg, named));
        }
    }
    Ok(out)
}

/// Where the overview is read from.
struct Sources<'a> {
    home: &'a Home,
    apps: &'a [(Loaded, bool)],
    admin: &'a AdminClient,
    read_only: bool,
    serve_state: Option<&'a std::path::Path>,
}

impl Sources<'_> {
    /// The overview the page shows: each app's status, history and
    /// deliveries, and the proxy's other routes.
    async fn overview(&self) -> serde_json::Value {
        let (home, apps, admin, read_only) = (self.home, self.apps, self.admin, self.read_only);
        // Reads print nothing a person needs here; their errors go on the page.
        let quiet = Output::new(Format::Json).for_host("dashboard");
        let routes: BTreeSet<String> = apps.iter().map(|(cfg, _)| cfg.config.route()).collect();
        // `cyan status` starts a proxy that is not running (a deploy
        // would); a dashboard must not undo a `cyan proxy stop`, so the
        // apps of this host are read only while their proxy answers.
        let proxy_up = admin.health().await.is_ok();
        // Every app at once, each within READ_WITHIN: a host that does not
        // answer (a fleet's, over SSH) slows its own card, not the page.
        let shown = futures_util::future::join_all(apps.iter().map(|(cfg, _)| async {
            let c = &cfg.config;
            let on = Deployer::of(home, cfg);
            let read = async { (on.status(cfg, &quiet).await, on.history(cfg, &quiet).await) };
            let (status, history, error) = if matches!(on, Deployer::Docker(_)) && !proxy_up {
                let why = format!(
                    "the cyan proxy of {} is not running (`cyan proxy run`, or the next deploy, starts it)",
                    home.dir.display()
                );
                (None, None, Some(why))
            } else {
                match tokio::time::timeout(READ_WITHIN, read).await {
                    Ok((status, history)) => {
                        let error = status
                            .as_ref()
                            .err()
                            .or(history.as_ref().err())
                            .map(ToString::to_string);
                        (status.ok(), history.ok(), error)
                    }
                    Err(_) => {
                        let why = format!(
                            "no answer within {} s from where {} runs",
                            READ_WITHIN.as_secs(),
                            c.app
                        );
                        (None, None, Some(why))
                    }
                }
            };
            let state = self
                .serve_state
                .map_or_else(|| home.dir.join("serve").join(c.app.as_str()), Into::into);
            let deliveries: Vec<deliveries::Entry> =
                deliveries::read(&state.join("deliveries.jsonl"))
                    .map(deliveries::latest)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|e| {
                        e.deploy
                            .as_ref()
                            .is_none_or(|d| d.environment == c.environment.as_str())
                    })
                    .take(DELIVERIES_SHOWN)
                    .collect();
            serde_json::json!({
                "app": c.app.to_string(),
                "environment": c.environment.to_string(),
                "route": c.route(),
                "config": cfg.path.display().to_string(),
                "actions": !read_only,
                "status": status,
                "history": history.map(|h| h.lines).unwrap_or_default(),
                "deliveries": deliveries,
                "error": error,
            })
        }))
        .await;
        let (others, proxy_error) = match admin.routes().await {
        Ok(views) => (
            views
                .into_iter()
                .filter(|v| !routes.contains(&v.name))
                .map(|v| {
                    let record = crate::platform::docker::parse_record(&v.state.record);
                    let version = |c| record.gated.get(&c).map(|k| k.version.clone());
                    serde_json::json!({
                        "route": v.name,
                        "hosts": v.state.hosts,
                        "listen": v.state.listen,
                        "live": v.state.live,
                        "version": v.state.live.and_then(version),
                        "candidate": v.state.candidate.map(|c| serde_json::json!({"color": c, "version": version(c)})),
                        "lock": v.state.lock.filter(|l| l.held(crate::clock::now_ms())).map(|l| l.holder),
                        "draining": v.state.draining,
                        "maintenance": v.state.maintenance.is_some(),
                    })
                })
                .collect::<Vec<_>>(),
            None,
        ),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
        let mut by_app: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
        for a in shown {
            by_app
                .entry(a["app"].as_str().unwrap_or_default().to_string())
                .or_default()
                .push(a);
        }
        serde_json::json!({
            "host": crate::clock::hostname(),
            "read_only": read_only,
            "apps": by_app.into_values().flatten().collect::<Vec<_>>(),
            "other_routes": others,
            "proxy_error": proxy_error,
        })
    }
}
