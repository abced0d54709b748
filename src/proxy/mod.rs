//! The cyan proxy: the atomic traffic switch on Docker hosts.
//!
//! One proxy per host serves every app on it, routed by Host header and/or
//! listen address. Its parts, one concept each:
//! - `router`: the ArcSwap'd table and the control side that changes it;
//! - `pool`: upstreams, claims (in-flight counting) and per-color counters;
//! - `forward`: the request path;
//! - `admin` / `api` / `client`: the admin API on a Unix socket;
//! - `state`: the state file, written atomically, restored before listening.

pub mod admin;
pub mod api;
pub mod client;
pub mod forward;
pub mod pool;
pub mod router;
pub mod state;
pub mod tunnel;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

use crate::error::{Error, Result};
use forward::Forwarder;
use router::Router;

/// The proxy's folder: admin socket, state file, log, process lock.
#[derive(Debug, Clone)]
pub struct Home {
    pub dir: PathBuf,
}

impl Home {
    /// `--home`, else `$CYAN_HOME`, else `/var/lib/cyan` for root, else
    /// `$XDG_STATE_HOME/cyan` or `~/.local/state/cyan`.
    pub fn resolve(flag: Option<&Path>) -> Home {
        let dir = flag
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("CYAN_HOME").map(PathBuf::from))
            .unwrap_or_else(default_home);
        Home { dir }
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join("proxy.sock")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("proxy.json")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("proxy.log")
    }
    fn process_lock(&self) -> PathBuf {
        self.dir.join("proxy.lock")
    }
    /// Creates the folder, readable by its owner only.
    pub fn create(&self) -> std::io::Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
    }
}

fn default_home() -> PathBuf {
    let is_root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if is_root {
        return PathBuf::from("/var/lib/cyan");
    }
    if let Some(x) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(x).join("cyan");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/state/cyan")
}

/// A running proxy: what the admin API and the listeners share.
pub struct Proxy {
    pub router: Arc<Router>,
    forwarder: Arc<Forwarder>,
    listeners: Mutex<HashMap<SocketAddr, ()>>,
    /// Tracks open connections for the drain at shutdown; `None` once draining.
    graceful: Mutex<Option<GracefulShutdown>>,
    stop: watch::Sender<bool>,
}

impl Proxy {
    /// Binds `addr` unless it is already served.
    pub fn ensure_listener(self: &Arc<Self>, addr: SocketAddr) -> std::io::Result<()> {
        let mut listeners = self.listeners.lock().expect("listeners lock");
        if listeners.contains_key(&addr) {
            return Ok(());
        }
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(std_listener)?;
        listeners.insert(addr, ());
        tokio::spawn(self.clone().accept_loop(listener));
        tracing::info!(%addr, "listening");
        Ok(())
    }

    async fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        let Ok(local) = listener.local_addr() else {
            return;
        };
        let mut stop = self.stop.subscribe();
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(%local, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stop.changed() => break,
            };
            let _ = stream.set_nodelay(true);
            let forwarder = self.forwarder.clone();
            let Some(watcher) = self
                .graceful
                .lock()
                .expect("graceful lock")
                .as_ref()
                .map(|g| g.watcher())
            else {
                break;
            };
            tokio::spawn(async move {
                let svc = service_fn(move |req| forwarder.clone().handle(req, local, peer));
                let builder = auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
    }

    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }
}

/// Runs the proxy until SIGTERM, SIGINT or an admin shutdown, then drains
/// open connections for up to `drain`.
pub async fn run(home: &Home, extra_listen: &[SocketAddr], drain: Duration) -> Result<()> {
    home.create()
        .map_err(|e| Error::Platform(format!("cannot create {}: {e}", home.dir.display())))?;
    let lock_file = std::fs::File::create(home.process_lock())
        .map_err(|e| Error::Platform(format!("cannot open proxy lock: {e}")))?;
    if lock_file.try_lock().is_err() {
        return Err(Error::Refused(format!(
            "another cyan proxy is already running with home {}",
            home.dir.display()
        )));
    }
    let router = Arc::new(
        Router::restore(home.state())
            .map_err(|e| Error::Platform(format!("cannot restore proxy state: {e}")))?,
    );
    let (stop, _) = watch::channel(false);
    let proxy = Arc::new(Proxy {
        forwarder: Arc::new(Forwarder::new(router.clone(), "http")),
        router,
        listeners: Mutex::new(HashMap::new()),
        graceful: Mutex::new(Some(GracefulShutdown::new())),
        stop,
    });
    // Routes come back before any listener accepts: no request sees an empty table.
    for addr in proxy
        .router
        .listen_addrs()
        .into_iter()
        .chain(extra_listen.iter().copied())
    {
        proxy
            .ensure_listener(addr)
            .map_err(|e| Error::Platform(format!("cannot listen on {addr}: {e}")))?;
    }
    let admin = bind_admin(&home.socket())?;
    tokio::spawn(admin_loop(proxy.clone(), admin));
    tracing::info!(socket = %home.socket().display(), "cyan proxy ready");

    let mut stop = proxy.stop.subscribe();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::Platform(format!("cannot handle SIGTERM: {e}")))?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = stop.changed() => {}
    }
    proxy.shutdown();
    tracing::info!(?drain, "draining connections");
    let _ = std::fs::remove_file(home.socket());
    let graceful = proxy.graceful.lock().expect("graceful lock").take();
    let drained = async {
        if let Some(g) = graceful {
            g.shutdown().await;
        }
    };
    if tokio::time::timeout(drain, drained).await.is_err() {
        tracing::warn!("drain deadline reached; closing remaining connections");
    }
    drop(lock_file);
    Ok(())
}

fn bind_admin(path: &Path) -> Result<UnixListener> {
    // A socket file left by a dead proxy is stale: the process lock proves it.
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|e| {
        Error::Platform(format!("cannot bind admin socket {}: {e}", path.display()))
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::Platform(format!("cannot chmod admin socket: {e}")))?;
    Ok(listener)
}

async fn admin_loop(proxy: Arc<Proxy>, listener: UnixListener) {
    let mut stop = proxy.stop.subscribe();
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
            _ = stop.changed() => break,
        };
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| admin::handle(proxy.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
