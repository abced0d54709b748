//! A running proxy: its start (`run`: restore the table, bind or adopt the
//! listeners, serve the admin API), its serving (`serve_hyper`; the accept
//! loops are in `listen`), and its end (stop accepting, close keep-alive
//! connections, drain, or hand the sockets to a successor).

mod listen;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::forward::{ClientConn, Forwarder};
use crate::home::lock_process;
use crate::router::Router;
use crate::timeouts::IdleDeadline;
use crate::{
    acme, active, admin_listen, certs, handoff, metrics, timeouts, workers, Follow, Home,
    RunOptions,
};
use listen::Listening;

/// How long a client gets to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown lets busy keep-alive connections end on their own.
const LINGER: Duration = Duration::from_secs(2);

/// How long the accept loops get to stop (they stop at their next poll).
const ACCEPT_STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// After the drain has told every connection to close: how long the
/// predecessor of an upgrade waits for them to be gone before it lets the
/// successor change routes (a connection still busy then is serving a
/// request that started before, and starts none after it).
const GATE_GRACE: Duration = Duration::from_millis(100);

/// How long a successor's route changes wait for its predecessor: its
/// linger, the moment before it drains and `GATE_GRACE`, with room to spare.
const PREDECESSOR_QUIET_TIMEOUT: Duration = Duration::from_secs(10);

/// A running proxy: what the admin API and the listeners share.
pub struct Proxy {
    pub router: Arc<Router>,
    /// One per scheme, for `X-Forwarded-Proto`.
    pub(crate) forwarder: Arc<Forwarder>,
    pub(crate) forwarder_tls: Arc<Forwarder>,
    /// Clones of the listening sockets (and whether they speak TLS), kept to
    /// hand them to a successor.
    pub(crate) listeners: Mutex<HashMap<SocketAddr, Listening>>,
    /// Tracks open connections for the drain at shutdown; `None` once draining.
    pub(crate) graceful: Mutex<Option<GracefulShutdown>>,
    pub(crate) stop: watch::Sender<bool>,
    /// Set to stop the accept loops: at shutdown, or at a handoff as soon as
    /// the successor serves. Each loop holds a receiver until it has
    /// stopped, so `closed()` says that no loop accepts any more.
    pub(crate) accepting: watch::Sender<bool>,
    /// Set when the drain closes idle connections: hyper's get a graceful
    /// close, the fast path's (which hold a drain watcher) watch this. One
    /// per serving thread: an idle connection registers with it after every
    /// request, which on one shared channel bounced between the cores.
    pub(crate) close_idle: workers::PerThread<watch::Sender<bool>>,
    /// Bumped to stop the admin loop (during a handoff).
    pub(crate) admin_generation: watch::Sender<u64>,
    pub(crate) home: Home,
    pub(crate) opts: RunOptions,
    /// The flock that makes this the home's only proxy.
    pub(crate) process_lock: Mutex<Option<std::fs::File>>,
    /// A successor took over: leave the admin socket alone at exit.
    pub(crate) handed_off: std::sync::atomic::AtomicBool,
    /// After a handoff: the pipe end the successor waits on before any
    /// route change, closed once no connection here can start a request
    /// (`handoff`). The process's exit closes it too.
    pub(crate) successor_gate: Mutex<Option<std::os::fd::OwnedFd>>,
    /// In a successor: turns true once the predecessor can start no request
    /// any more; route changes wait for it (`handoff`). True from the start
    /// in a proxy that took over from no one.
    pub(crate) predecessor_quiet: watch::Receiver<bool>,
    /// The serving threads' runtimes.
    pub(crate) workers: Vec<tokio::runtime::Handle>,
}

impl Proxy {
    pub fn shutdown(&self) {
        self.accepting.send_replace(true);
        let _ = self.stop.send(true);
    }

    /// Stops every accept loop and returns once none accepts any more (or
    /// after `ACCEPT_STOP_TIMEOUT`, with a warning). Connections already
    /// accepted are served on; new ones stay in the listening sockets'
    /// queues for whoever else serves them (a successor).
    pub(crate) async fn stop_accepting(&self) {
        self.accepting.send_replace(true);
        if tokio::time::timeout(ACCEPT_STOP_TIMEOUT, self.accepting.closed())
            .await
            .is_err()
        {
            tracing::warn!("accept loops did not stop within {ACCEPT_STOP_TIMEOUT:?}");
        }
    }

    /// Every HTTP/1.1 response from now on says `Connection: close` and
    /// ends its connection, so keep-alive clients move on (to a successor).
    pub(crate) fn close_keep_alive(&self) {
        for forwarder in [&self.forwarder, &self.forwarder_tls] {
            forwarder
                .closing
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Lets a waiting successor change routes (`handoff`).
    pub(crate) fn open_successor_gate(&self) {
        self.successor_gate.lock().expect("gate lock").take();
    }

    /// Returns once the predecessor of an upgrade can start no request any
    /// more (at once in a proxy that took over from no one), so that a
    /// route change made now holds for every request that starts after it.
    /// Gives up after `PREDECESSOR_QUIET_TIMEOUT`, with a warning.
    pub(crate) async fn predecessor_quiet(&self) {
        let mut quiet = self.predecessor_quiet.clone();
        let waited = tokio::time::timeout(PREDECESSOR_QUIET_TIMEOUT, quiet.wait_for(|q| *q));
        if waited.await.is_err() {
            tracing::warn!(
                "the previous proxy process did not finish its handoff within \
                 {PREDECESSOR_QUIET_TIMEOUT:?}; changing routes anyway"
            );
        }
    }
}

impl Proxy {
    /// Binds the admin socket and serves it until the next `stop_admin`.
    pub(crate) fn start_admin(self: &Arc<Self>) -> Result<()> {
        let generation = *self.admin_generation.borrow();
        let unix = admin_listen::bind_socket(&self.home.socket())?;
        tokio::spawn(admin_listen::serve_socket(self.clone(), unix, generation));
        if let Some(tcp) = &self.opts.admin_tcp {
            admin_listen::spawn_tcp(self.clone(), tcp.clone(), generation)?;
        }
        Ok(())
    }

    pub(crate) fn stop_admin(&self) {
        self.admin_generation.send_modify(|g| *g += 1);
    }
}

/// hyper's side of a client connection (HTTP/1.1 with upgrades, or h2),
/// under the client read deadlines (`timeouts`); `watcher` lets a drain at
/// shutdown close it gracefully.
pub(crate) async fn serve_hyper<I>(
    io: I,
    client: Arc<ClientConn>,
    watcher: Option<Watcher>,
) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let timeouts = client.forwarder.timeouts;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A client that half-closes after its requests still gets its answers,
    // as on the fast path (the differential fuzz target found hyper's
    // default dropping them).
    builder
        .http1()
        .half_close(true)
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header);
    let io = IdleDeadline::new(io, timeouts.idle, client.busy.clone());
    let svc = service_fn(move |req| client.clone().forward(req));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    match watcher {
        Some(w) => w.watch(conn).await,
        None => conn.await,
    }
}

/// Runs the proxy until SIGTERM, SIGINT or an admin shutdown, then drains
/// open connections for up to `drain`. Listening sockets named in
/// `CYAN_PROXY_LISTEN_FDS` (set by a predecessor's `upgrade`) are served as
/// they are instead of being bound again.
pub async fn run(home: &Home, opts: &RunOptions, follow: Option<Follow>) -> Result<()> {
    let drain = opts.drain;
    home.create()
        .map_err(|e| Error::Platform(format!("cannot create {}: {e}", home.dir.display())))?;
    let lock_file = lock_process(home)?;
    match timeouts::raise_open_files_limit() {
        Ok(n) => tracing::info!(open_files = n, "open-files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
    }
    let threads = opts
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let workers = workers::start(threads)
        .map_err(|e| Error::Platform(format!("cannot start serving threads: {e}")))?;
    let router = Arc::new(
        Router::restore(home.state())
            .map_err(|e| Error::Platform(format!("cannot restore proxy state: {e}")))?,
    );
    let (stop, _) = watch::channel(false);
    let predecessor_quiet = handoff::predecessor_quiet();
    let proxy = Arc::new(Proxy {
        forwarder: Arc::new(Forwarder::new(router.clone(), "http", opts.timeouts)),
        forwarder_tls: Arc::new(Forwarder::new(router.clone(), "https", opts.timeouts)),
        router,
        listeners: Mutex::new(HashMap::new()),
        graceful: Mutex::new(Some(GracefulShutdown::new())),
        stop,
        accepting: watch::channel(false).0,
        close_idle: Default::default(),
        admin_generation: watch::channel(0).0,
        home: home.clone(),
        opts: opts.clone(),
        process_lock: Mutex::new(Some(lock_file)),
        handed_off: Default::default(),
        successor_gate: Mutex::new(None),
        predecessor_quiet,
        workers,
    });
    // Upstreams are checked against their containers before any request.
    if let Some(follow) = follow {
        follow(proxy.router.clone(), proxy.stop.subscribe()).await;
    }
    for (addr, (sockets, tls)) in handoff::inherited_listeners()? {
        proxy
            .adopt_listeners(addr, sockets, tls)
            .map_err(|e| Error::Platform(format!("cannot serve inherited {addr}: {e}")))?;
    }
    // Routes come back before any listener accepts: no request sees an empty table.
    let flags = opts.listen.iter().map(|a| (*a, false));
    let tls_flags = opts.tls_listen.iter().map(|a| (*a, true));
    for (addr, tls) in proxy
        .router
        .listen_addrs()
        .into_iter()
        .chain(flags)
        .chain(tls_flags)
    {
        proxy
            .ensure_listener(addr, tls)
            .map_err(|e| Error::Platform(format!("cannot listen on {addr}: {e}")))?;
    }
    if let Some(addr) = opts.metrics {
        metrics::serve(addr, proxy.router.clone(), proxy.stop.subscribe())?;
    }
    active::spawn(proxy.router.clone(), proxy.stop.subscribe());
    certs::spawn_refresh(
        proxy.router.clone(),
        opts.cert_check,
        proxy.stop.subscribe(),
    );
    acme::spawn(
        proxy.router.clone(),
        home,
        opts.acme.clone(),
        proxy.stop.subscribe(),
    );
    proxy.start_admin()?;
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
    if !proxy.handed_off.load(std::sync::atomic::Ordering::SeqCst) {
        let _ = std::fs::remove_file(home.socket());
        // Stopped, the state is one snapshot: what any cyan reads (on a
        // full disk the journal keeps it, for this cyan and later ones).
        let _ = proxy.router.freeze(true);
    }
    // Busy keep-alive connections close after their next response; what is
    // left after the linger (idle ones, HTTP/2) gets hyper's graceful close.
    proxy.close_keep_alive();
    let graceful = proxy.graceful.lock().expect("graceful lock").take();
    let started = tokio::time::Instant::now();
    let linger = drain.min(LINGER);
    if let Some(g) = &graceful {
        while g.count() > 0 && started.elapsed() < linger {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // WebSockets get the rest of the drain time (less a moment to send
    // their close frames), then a clean 1001 close.
    proxy.router.close_all(
        drain
            .saturating_sub(started.elapsed())
            .saturating_sub(Duration::from_millis(500)),
    );
    let router = proxy.router.clone();
    let drained = async {
        if let Some(g) = graceful {
            for close_idle in proxy.close_idle.iter() {
                let _ = close_idle.send(true);
            }
            // hyper's connections are told with the first poll. From then
            // on no connection here starts a request; once they are gone
            // (or only busy ones are left) a successor may change routes.
            let mut shutdown = std::pin::pin!(g.shutdown());
            if tokio::time::timeout(GATE_GRACE, &mut shutdown)
                .await
                .is_err()
            {
                proxy.open_successor_gate();
                shutdown.await;
            }
        }
        proxy.open_successor_gate();
        while router.inflight() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(drain.saturating_sub(started.elapsed()), drained)
        .await
        .is_err()
    {
        tracing::warn!("drain deadline reached; closing remaining connections");
    }
    Ok(())
}
