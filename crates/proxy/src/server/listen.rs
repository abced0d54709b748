//! The proxy's listening sockets: bound per serving thread with
//! `SO_REUSEPORT`, or adopted from a predecessor; the accept loops that
//! serve them (TLS or plain, the fast path or hyper's); and the binds the
//! control plane asks for when a route names its own listen address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use super::{serve_hyper, Proxy, HANDSHAKE_TIMEOUT};
use crate::forward::ClientConn;
use crate::{control, fast, tls};

/// The sockets of one listen address: one per serving thread, bound with
/// `SO_REUSEPORT` so the kernel spreads new connections evenly over the
/// threads (one shared socket lets whichever thread wakes first take a whole
/// burst: measured 36k-53k req/s run to run, against a steady ~53k).
pub(crate) struct Listening {
    pub(crate) sockets: Vec<std::net::TcpListener>,
    pub(crate) tls: bool,
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
    pub(crate) fn adopt_listeners(
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

    pub(crate) async fn accept_loop(
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
