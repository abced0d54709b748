//! The cyan proxy: the atomic traffic switch on Docker hosts.
//!
//! One proxy per host serves every app on it, routed by Host header and/or
//! listen address. It is a crate of its own, like kamal-proxy is a program
//! of its own: it depends on nothing of the deployer (no Docker engine, no
//! Kubernetes, no command line), only on the planner's vocabulary
//! (`cyan_plan::release::Color`). What it needs from its host comes in as
//! values: `RunOptions` (with the arguments that start a successor) and a
//! `Follow` that keeps container upstreams current. Its parts, one concept
//! each:
//! - `router`: the ArcSwap'd table and the primitives that change it;
//!   `control`: the control plane's named verbs (put route, set color,
//!   switch, hold, ...), each with its rule; `lease`: the deploy lock;
//! - the request path, the same for the fast path and hyper's: `forward`:
//!   a listener's `Forwarder` and each connection's `ClientConn`, the claim
//!   that routes a request, and hyper's path; `load_balancer`: one color of
//!   a route, picking the upstream a request claims (round-robin or least
//!   connections); `upstream`: one upstream, its claims (in-flight
//!   counting, which a drain waits on) and passive health; `conn_pool`:
//!   keep-alive connections to one upstream; `stats`: per-color counters;
//!   `attempt`: a request's tries at an upstream, and who is to blame for
//!   a failure (client or upstream); `pages`: cyan's own answers (404,
//!   maintenance, 503s, 502/504, refused requests);
//! - headers on the way: `headers`: authority, hop-by-hop, framing and
//!   upgrade rules; `forwarding`: `X-Forwarded-*` and their kin, believed
//!   only from a route's trusted proxies; `request_id`: `X-Request-Id`;
//! - `fast`, `heads`, `framing`, `prefixed`: the HTTP/1.1 fast path;
//!   `differential`: the fuzz target that holds it to hyper's path;
//!   `fuzz`: the invariants of cyan's own parsing, on arbitrary input;
//! - `timeouts`: deadlines on every read from a client; `client_body`: a
//!   request body on hyper's path, read under its deadline;
//!   `response_body`: a response body on hyper's path, holding its claim
//!   until its last byte;
//! - `admin`: the admin API, a table from (method, path) to a verb; `api`:
//!   its bodies; `client`: its client (and how a proxy process is started
//!   detached); `admin_listen`: its Unix socket and optional token-guarded
//!   loopback TCP listener;
//! - `tls`: TLS termination, a certificate picked by SNI from the table;
//!   `certs`: each TLS route's last good certificate, kept in the home and
//!   renewed in place;
//! - `acme`: certificates obtained and renewed from an ACME CA (Let's
//!   Encrypt) for routes with `tls: acme`, and the challenges' answers;
//! - `state`: the state file, written atomically, restored before listening;
//! - `tunnel`: upgraded connections (WebSocket); `drain`: how long-lived
//!   connections and streamed responses on an old color end, spread;
//! - `handoff`: `cyan proxy upgrade`, a new process taking over the sockets;
//! - `metrics`: Prometheus `/metrics` on a loopback port;
//! - `active`: optional active health checks of live upstreams;
//! - `workers`: thread-per-core serving runtimes;
//! - `clock`: wall-clock time and this host's identity (the deployer uses
//!   it too); `error`: the proxy's errors, grouped as the deployer's are.

pub mod acme;
pub mod active;
pub mod admin;
pub mod admin_listen;
pub mod api;
pub mod attempt;
pub mod certs;
pub mod client;
pub mod client_body;
pub mod clock;
pub mod conn_pool;
pub mod control;
pub mod differential;
pub mod drain;
mod error;
pub mod fast;
pub mod forward;
pub mod forwarding;
pub mod framing;
pub mod fuzz;
pub mod handoff;
pub mod headers;
pub mod heads;
pub mod lease;
pub mod load_balancer;
pub mod metrics;
pub mod pages;
pub mod prefixed;
pub mod request_id;
pub mod response_body;
pub mod router;
pub mod state;
pub mod stats;
pub mod timeouts;
pub mod tls;
pub mod tunnel;
pub mod upstream;
pub mod workers;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use error::{Error, Result};
use forward::{ClientConn, Forwarder};
use router::Router;
use timeouts::IdleDeadline;

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

/// How the proxy runs: what `cyan proxy run`'s flags say.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Listen addresses beyond those the routes ask for.
    pub listen: Vec<SocketAddr>,
    /// TLS listen addresses for host-routed apps (certificates by SNI).
    pub tls_listen: Vec<SocketAddr>,
    /// How long open connections get at shutdown.
    pub drain: Duration,
    /// Where to serve Prometheus `/metrics` (loopback only).
    pub metrics: Option<SocketAddr>,
    /// The admin API on loopback TCP too, with a bearer token.
    pub admin_tcp: Option<admin_listen::TcpAdmin>,
    /// Serving threads (default: one per core).
    pub threads: Option<usize>,
    /// Deadlines on reads from clients.
    pub timeouts: timeouts::Timeouts,
    /// How often TLS files are checked for a renewal.
    pub cert_check: Duration,
    /// The ACME CA and account for routes with `tls: acme`.
    pub acme: acme::AcmeOptions,
    /// The arguments (after the program) that start a successor with these
    /// options, for `cyan proxy upgrade` (`handoff`): whoever parsed the
    /// flags writes them back, so the proxy never learns its command line.
    pub successor_args: Vec<String>,
}

/// What keeps upstreams that name containers on their containers' current
/// addresses (the deployer's `platform::follow`; the proxy knows no
/// engine). It is given the restored router before any listener accepts,
/// and the proxy waits for its future, which ends once the routes have been
/// checked (or could not be); what follows runs in its own tasks until the
/// receiver sees the stop.
pub type Follow = Box<
    dyn FnOnce(
            Arc<Router>,
            watch::Receiver<bool>,
        ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
        + Send,
>;

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
    forwarder: Arc<Forwarder>,
    forwarder_tls: Arc<Forwarder>,
    /// Clones of the listening sockets (and whether they speak TLS), kept to
    /// hand them to a successor.
    listeners: Mutex<HashMap<SocketAddr, Listening>>,
    /// Tracks open connections for the drain at shutdown; `None` once draining.
    graceful: Mutex<Option<GracefulShutdown>>,
    stop: watch::Sender<bool>,
    /// Set to stop the accept loops: at shutdown, or at a handoff as soon as
    /// the successor serves. Each loop holds a receiver until it has
    /// stopped, so `closed()` says that no loop accepts any more.
    accepting: watch::Sender<bool>,
    /// Set when the drain closes idle connections: hyper's get a graceful
    /// close, the fast path's (which hold a drain watcher) watch this. One
    /// per serving thread: an idle connection registers with it after every
    /// request, which on one shared channel bounced between the cores.
    close_idle: workers::PerThread<watch::Sender<bool>>,
    /// Bumped to stop the admin loop (during a handoff).
    admin_generation: watch::Sender<u64>,
    home: Home,
    opts: RunOptions,
    /// The flock that makes this the home's only proxy.
    process_lock: Mutex<Option<std::fs::File>>,
    /// A successor took over: leave the admin socket alone at exit.
    handed_off: std::sync::atomic::AtomicBool,
    /// After a handoff: the pipe end the successor waits on before any
    /// route change, closed once no connection here can start a request
    /// (`handoff`). The process's exit closes it too.
    successor_gate: Mutex<Option<std::os::fd::OwnedFd>>,
    /// In a successor: turns true once the predecessor can start no request
    /// any more; route changes wait for it (`handoff`). True from the start
    /// in a proxy that took over from no one.
    predecessor_quiet: watch::Receiver<bool>,
    /// The serving threads' runtimes.
    workers: Vec<tokio::runtime::Handle>,
}

/// The sockets of one listen address: one per serving thread, bound with
/// `SO_REUSEPORT` so the kernel spreads new connections evenly over the
/// threads (one shared socket lets whichever thread wakes first take a whole
/// burst: measured 36k-53k req/s run to run, against a steady ~53k).
struct Listening {
    sockets: Vec<std::net::TcpListener>,
    tls: bool,
}

impl Proxy {
    /// Is `addr` one of the proxy's listen addresses already?
    pub fn serves(&self, addr: SocketAddr) -> bool {
        self.listeners
            .lock()
            .expect("listeners lock")
            .contains_key(&addr)
    }

    /// Binds `addr` unless it is already served (the same way: plain HTTP
    /// and TLS cannot share a port).
    pub fn ensure_listener(self: &Arc<Self>, addr: SocketAddr, tls: bool) -> std::io::Result<()> {
        if let Some(l) = self.listeners.lock().expect("listeners lock").get(&addr) {
            if l.tls != tls {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!(
                        "{addr} already serves {}",
                        if l.tls { "TLS" } else { "plain HTTP" }
                    ),
                ));
            }
            return Ok(());
        }
        // A plain bind first: if anything listens there (another proxy
        // too), this fails instead of quietly joining its group.
        drop(std::net::TcpListener::bind(addr)?);
        let sockets = (0..self.workers.len())
            .map(|_| bind_reuseport(addr))
            .collect::<std::io::Result<_>>()?;
        self.adopt_listeners(addr, sockets, tls)
    }

    /// Serves bound sockets, new or inherited from a predecessor: each on
    /// one serving thread, in turn (every socket is served, whatever the
    /// number of threads, so no queued connection is left behind).
    fn adopt_listeners(
        self: &Arc<Self>,
        addr: SocketAddr,
        sockets: Vec<std::net::TcpListener>,
        tls: bool,
    ) -> std::io::Result<()> {
        let acceptor = tls.then(|| {
            tokio_rustls::TlsAcceptor::from(tls::server_config(self.router.clone(), addr))
        });
        for (i, socket) in sockets.iter().enumerate() {
            socket.set_nonblocking(true)?;
            let dup = socket.try_clone()?;
            let (proxy, acceptor) = (self.clone(), acceptor.clone());
            self.workers[i % self.workers.len()].spawn(async move {
                match TcpListener::from_std(dup) {
                    Ok(listener) => proxy.accept_loop(listener, acceptor).await,
                    Err(e) => tracing::error!(%addr, error = %e, "cannot serve listener"),
                }
            });
        }
        self.listeners
            .lock()
            .expect("listeners lock")
            .insert(addr, Listening { sockets, tls });
        tracing::info!(%addr, tls, "listening");
        Ok(())
    }

    async fn accept_loop(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) {
        let Ok(local) = listener.local_addr() else {
            return;
        };
        let mut accepting = self.accepting.subscribe();
        loop {
            // The watcher is taken before the accept: a connection accepted
            // while shutdown begins is then always served and drained,
            // never dropped unread (its client would see a reset).
            let Some(watcher) = self
                .graceful
                .lock()
                .expect("graceful lock")
                .as_ref()
                .map(|g| g.watcher())
            else {
                break;
            };
            let (stream, peer) = tokio::select! {
                biased;
                _ = async { drop(accepting.wait_for(|stop| *stop).await) } => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(%local, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let forwarder = match tls {
                Some(_) => self.forwarder_tls.clone(),
                None => self.forwarder.clone(),
            };
            let tls = tls.clone();
            let mut close_idle = self.close_idle.local().1.subscribe();
            tokio::spawn(async move {
                let client = Arc::new(ClientConn::new(forwarder, local, peer));
                let served = match tls {
                    // The fast path first; hyper for what it hands over.
                    None => {
                        let io = match fast::serve(stream, &client, &mut close_idle).await {
                            fast::Ended::Closed => return,
                            fast::Ended::HandOff(io) => io,
                        };
                        serve_hyper(io, client, Some(watcher)).await
                    }
                    Some(acceptor) => {
                        let handshake =
                            tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                        let stream = match handshake.await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                return tracing::debug!(%peer, error = %e, "TLS handshake failed")
                            }
                            Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                        };
                        // An ACME server's TLS-ALPN-01 check is the
                        // handshake alone: no HTTP on it (RFC 8737 §3).
                        if tls::is_acme_challenge(stream.get_ref().1) {
                            let mut stream = stream;
                            let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
                            return;
                        }
                        serve_hyper(stream, client, Some(watcher)).await
                    }
                };
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
    }

    pub fn shutdown(&self) {
        self.accepting.send_replace(true);
        let _ = self.stop.send(true);
    }

    /// Stops every accept loop and returns once none accepts any more (or
    /// after `ACCEPT_STOP_TIMEOUT`, with a warning). Connections already
    /// accepted are served on; new ones stay in the listening sockets'
    /// queues for whoever else serves them (a successor).
    async fn stop_accepting(&self) {
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
    fn close_keep_alive(&self) {
        for forwarder in [&self.forwarder, &self.forwarder_tls] {
            forwarder
                .closing
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Lets a waiting successor change routes (`handoff`).
    fn open_successor_gate(&self) {
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

/// The control plane's verbs bind a route's listen address here.
impl control::Listeners for Arc<Proxy> {
    fn flag_for(&self, addr: SocketAddr) -> Option<&'static str> {
        match (
            self.opts.listen.contains(&addr),
            self.opts.tls_listen.contains(&addr),
        ) {
            (true, _) => Some("--listen"),
            (_, true) => Some("--tls-listen"),
            _ => None,
        }
    }

    fn serves(&self, addr: SocketAddr) -> bool {
        Proxy::serves(self, addr)
    }

    fn listen(&self, addr: SocketAddr, tls: bool) -> std::io::Result<()> {
        self.ensure_listener(addr, tls)
    }
}

/// A listening socket that shares its address with its siblings
/// (`SO_REUSEPORT`; the kernel only lets the same user join the group).
fn bind_reuseport(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

fn lock_process(home: &Home) -> Result<std::fs::File> {
    let lock_file = std::fs::File::create(home.process_lock())
        .map_err(|e| Error::Platform(format!("cannot open proxy lock: {e}")))?;
    if lock_file.try_lock().is_err() {
        return Err(Error::Refused(format!(
            "another cyan proxy is already running with home {}",
            home.dir.display()
        )));
    }
    Ok(lock_file)
}

impl Proxy {
    /// Binds the admin socket and serves it until the next `stop_admin`.
    fn start_admin(self: &Arc<Self>) -> Result<()> {
        let generation = *self.admin_generation.borrow();
        let unix = admin_listen::bind_socket(&self.home.socket())?;
        tokio::spawn(admin_listen::serve_socket(self.clone(), unix, generation));
        if let Some(tcp) = &self.opts.admin_tcp {
            admin_listen::spawn_tcp(self.clone(), tcp.clone(), generation)?;
        }
        Ok(())
    }

    fn stop_admin(&self) {
        self.admin_generation.send_modify(|g| *g += 1);
    }
}
