//! `cyan proxy upgrade`: a new proxy process takes over with no gap.
//!
//! The running proxy hands its listening sockets to a successor as inherited
//! file descriptors. Both then hold the *same* sockets, with the same accept
//! queues, so no connection attempt is refused or reset at any moment. (The
//! sockets of one address form a `SO_REUSEPORT` group, one per serving
//! thread; none of them is ever closed while it has a queue, which is what
//! resets connections when a new process merely binds beside an old one.)
//! In order:
//!
//! 1. freeze route changes and stop the admin socket (the state file now
//!    belongs to whoever serves it next), and let go of the process lock;
//! 2. start the successor, which restores the state and serves the inherited
//!    sockets and a fresh admin socket;
//! 3. once it answers on the admin socket as itself, and *before* this
//!    process answers the upgrade call: stop accepting (and wait until no
//!    accept loop runs), and end every connection after its next response
//!    (`Connection: close`);
//! 4. a moment later (for the answer to reach the caller), drain open
//!    connections as at any shutdown: a linger for busy ones, then idle
//!    ones are closed, then in-flight requests and tunnels get the rest of
//!    the drain time.
//!
//! If the successor does not come up, it is killed and this process takes
//! its lock and admin socket back: a failed upgrade changes nothing.
//!
//! # A switch after an upgrade holds at once
//!
//! The old process keeps serving its connections with its own, frozen
//! table while it drains; route changes go to the successor. Every request
//! that starts after a change returns must still be routed by it. Two ways
//! it could reach the frozen table were found (a test of real processes saw
//! about half the requests in the 200 ms after a switch answered by the
//! old color):
//!
//! - the old process went on accepting for the moment between the answer
//!   and its drain (both processes accept from the same queues), so fresh
//!   connections, and keep-alive ones opened then, landed on it: hence
//!   step 3 before the answer;
//! - a keep-alive connection it accepted earlier, idle, stays open through
//!   the linger (closing an idle connection races a request the client may
//!   be sending on it, which would fail), and its next request would be
//!   served there.
//!
//! For the second, the successor's route changes wait for the old process
//! instead of the other way round: the old one holds the write end of a
//! pipe whose read end the successor inherits (`CYAN_PROXY_GATE_FD`), and
//! closes it once it can start no request any more: every connection has
//! been told to close (idle ones close at once, busy ones after their
//! current response), and they are gone or `GATE_GRACE` has passed. Its
//! exit closes it too, however it ends. Until then the successor's admin
//! API holds every route change (and a further upgrade), for ~2.3 s at most
//! after an upgrade, 10 s if the old process hangs. Nothing else waits:
//! requests, reads of the state, health checks.
//!
//! Rejected: closing idle connections at the handoff (the race above fails
//! requests), and having the old process reload the successor's state
//! file per request (a second routing engine per drain, and the file is
//! written after the change is live).
//!
//! Left as it is: an HTTP/2 client may open a stream in the moment
//! between the old process's GOAWAY and its arrival; pipelined requests
//! behind a `Connection: close` are left to the client to send again, as
//! at any shutdown.
//!
//! Under systemd (`cyan proxy install`), the successor also becomes the
//! unit's main process before this one exits, so the unit lives on.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::client::AdminClient;
use super::Proxy;
use crate::error::{Error, Result};

/// `addr=fd,tls+addr=fd`: the sockets a successor inherits.
const LISTEN_FDS: &str = "CYAN_PROXY_LISTEN_FDS";
/// The read end of the pipe a successor waits on before route changes:
/// its predecessor holds the write end until it can start no request.
const GATE_FD: &str = "CYAN_PROXY_GATE_FD";
/// Marks a socket that speaks TLS.
const TLS_MARK: &str = "tls+";

/// How long a successor gets to answer on the admin socket.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Hands over to `binary` (`cyan proxy run`); returns the successor's pid.
pub async fn upgrade(proxy: &Arc<Proxy>, binary: &Path) -> Result<u32> {
    if let Err(e) = proxy.router.freeze(true) {
        // A successor of an older cyan reads only the snapshot: it would
        // come up without the changes since the last one.
        let _ = proxy.router.freeze(false);
        return Err(Error::Platform(format!(
            "cannot write the proxy's state as one snapshot for the successor ({e}); \
             free space in the proxy's home and try again. This proxy keeps serving"
        )));
    }
    proxy.stop_admin();
    if let Some(lock) = proxy.process_lock.lock().expect("lock").as_ref() {
        let _ = lock.unlock();
    }
    let outcome = match start_successor(proxy, binary) {
        Ok((child, gate)) => await_ready(proxy, child).await.map(|pid| (pid, gate)),
        Err(e) => Err(e),
    };
    match outcome {
        Ok((pid, gate)) => {
            // Before the caller hears of the successor: from then on every
            // new connection is the successor's, and every response here
            // ends its connection.
            *proxy.successor_gate.lock().expect("gate lock") = Some(gate);
            proxy.stop_accepting().await;
            proxy.close_keep_alive();
            tracing::info!(pid, "successor is serving; draining and exiting");
            if let Err(e) = notify_main_pid(pid) {
                tracing::warn!(error = %e, "cannot tell the service manager the new main pid");
            }
            proxy.handed_off.store(true, Ordering::SeqCst);
            // A moment for this answer to reach the caller before the
            // process starts draining (and may exit).
            let proxy = proxy.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                proxy.shutdown();
            });
            Ok(pid)
        }
        Err(e) => {
            tracing::warn!(error = %e, "upgrade failed; this proxy keeps serving");
            if let Some(lock) = proxy.process_lock.lock().expect("lock").as_ref() {
                let _ = lock.try_lock();
            }
            let _ = proxy.router.freeze(false);
            proxy.start_admin()?;
            Err(e)
        }
    }
}

/// Starts the successor with the listening sockets and the read end of the
/// gate pipe; returns it and the write end, which this process holds until
/// it can start no request any more.
fn start_successor(proxy: &Proxy, binary: &Path) -> Result<(Child, OwnedFd)> {
    let listeners = proxy.listeners.lock().expect("listeners lock");
    let fds: Vec<(SocketAddr, RawFd, bool)> = listeners
        .iter()
        .flat_map(|(addr, l)| l.sockets.iter().map(move |s| (*addr, s.as_raw_fd(), l.tls)))
        .collect();
    let spec = fds
        .iter()
        .map(|(a, fd, tls)| format!("{}{a}={fd}", if *tls { TLS_MARK } else { "" }))
        .collect::<Vec<_>>()
        .join(",");
    let log = |what| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(proxy.home.log())
            .map_err(|e| Error::Platform(format!("cannot open the proxy log for {what}: {e}")))
    };
    let (gate_read, gate_write) =
        pipe().map_err(|e| Error::Platform(format!("cannot make the handoff pipe: {e}")))?;
    let mut cmd = Command::new(binary);
    cmd.args(&proxy.opts.successor_args)
        .env(LISTEN_FDS, spec)
        .env(GATE_FD, gate_read.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(log("stdout")?)
        .stderr(log("stderr")?);
    super::client::own_session(&mut cmd);
    super::client::leave_ci_job(&mut cmd);
    let inherit: Vec<RawFd> = fds
        .iter()
        .map(|(_, fd, _)| *fd)
        .chain([gate_read.as_raw_fd()])
        .collect();
    // SAFETY: between fork and exec only async-signal-safe calls are made:
    // fcntl on descriptors this process owns.
    unsafe {
        cmd.pre_exec(move || {
            for fd in &inherit {
                if libc::fcntl(*fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| {
        Error::Platform(format!(
            "cannot start the new proxy {}: {e}",
            binary.display()
        ))
    })?;
    Ok((child, gate_write))
}

/// A pipe, both ends close-on-exec (the successor's end is opened for it
/// alone, between fork and exec): (read, write).
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into an array of two.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both were just opened, and nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// In a successor: a flag that turns true once the predecessor can start
/// no request any more (its end of the gate pipe closed: on purpose, or at
/// its exit, however it ends). True at once in a proxy that took over from
/// no one, or from a cyan that passes no gate. Read by a thread of its own,
/// which a process exit does not wait for.
pub fn predecessor_quiet() -> watch::Receiver<bool> {
    let quiet = || watch::channel(true).1;
    let Some(fd) = std::env::var(GATE_FD).ok().and_then(|v| v.parse().ok()) else {
        return quiet();
    };
    if !is_pipe(fd) {
        tracing::warn!("{GATE_FD}: fd {fd} is not a pipe; not waiting for a predecessor");
        return quiet();
    }
    // SAFETY: the predecessor passed this pipe for exactly this purpose;
    // nothing else in this process owns it.
    let gate = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: fcntl on a descriptor this process owns. Not for a successor
    // of ours: it gets a gate of its own.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    let (tx, rx) = watch::channel(false);
    let waited = std::thread::Builder::new()
        .name("handoff-gate".into())
        .spawn(move || {
            let mut gate = std::fs::File::from(gate);
            let mut byte = [0u8; 1];
            loop {
                match std::io::Read::read(&mut gate, &mut byte) {
                    Ok(0) => break,
                    Err(e) if e.kind() != std::io::ErrorKind::Interrupted => break,
                    _ => {}
                }
            }
            tx.send_replace(true);
        });
    if let Err(e) = waited {
        tracing::warn!(error = %e, "cannot wait for the predecessor; not waiting");
        return quiet();
    }
    rx
}

fn is_pipe(fd: RawFd) -> bool {
    // SAFETY: fstat writes into the zeroed struct it is given; a bad fd
    // is an error, not undefined behaviour.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    unsafe { libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFIFO }
}

/// systemd's notification socket (`sd_notify(3)`), set for a unit with
/// `NotifyAccess=`; `@` starts an abstract socket's name.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Under systemd, makes the successor the unit's main process
/// (`MAINPID=`), before this one exits: otherwise systemd would take this
/// exit for the service's end, and stop (then restart) the unit, killing
/// the successor with it. Nothing to do outside systemd.
fn notify_main_pid(pid: u32) -> std::io::Result<()> {
    let Some(path) = std::env::var_os(NOTIFY_SOCKET) else {
        return Ok(());
    };
    let socket = std::os::unix::net::UnixDatagram::unbound()?;
    let message = format!("MAINPID={pid}\n");
    match path.as_encoded_bytes().strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(message.as_bytes(), &addr)?;
        }
        None => {
            socket.send_to(message.as_bytes(), &path)?;
        }
    }
    Ok(())
}

async fn await_ready(proxy: &Proxy, mut child: Child) -> Result<u32> {
    let pid = child.id();
    let client = AdminClient::new(&proxy.home);
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Error::Platform(format!(
                "the new proxy exited at start ({status}); see {}",
                proxy.home.log().display()
            )));
        }
        if client.health().await.is_ok_and(|h| h.pid == pid) {
            return Ok(pid);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Platform(format!(
                "the new proxy did not answer within {READY_TIMEOUT:?}; see {}",
                proxy.home.log().display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Inherited sockets of one address, and whether they speak TLS.
pub type Inherited = BTreeMap<SocketAddr, (Vec<std::net::TcpListener>, bool)>;

/// The listening sockets a predecessor handed over (several per address:
/// one per serving thread), if this process is a successor.
pub fn inherited_listeners() -> Result<Inherited> {
    let mut out = Inherited::new();
    let Ok(spec) = std::env::var(LISTEN_FDS) else {
        return Ok(out);
    };
    for (addr, fd, tls) in parse(&spec)? {
        // SAFETY: the predecessor passed this descriptor for exactly this
        // purpose; nothing else in this process owns it.
        let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
        match listener.local_addr() {
            Ok(local) if local == addr => out
                .entry(addr)
                .or_insert((Vec::new(), tls))
                .0
                .push(listener),
            other => {
                return Err(Error::Platform(format!(
                    "{LISTEN_FDS}: fd {fd} is not a socket listening on {addr} ({other:?})"
                )))
            }
        }
    }
    Ok(out)
}

fn parse(spec: &str) -> Result<Vec<(SocketAddr, RawFd, bool)>> {
    spec.split(',')
        .filter(|s| !s.is_empty())
        .map(|item| {
            let bad = || Error::Platform(format!("{LISTEN_FDS}: bad entry {item:?}"));
            let (tls, rest) = match item.strip_prefix(TLS_MARK) {
                Some(rest) => (true, rest),
                None => (false, item),
            };
            let (addr, fd) = rest.rsplit_once('=').ok_or_else(bad)?;
            Ok((
                addr.parse().map_err(|_| bad())?,
                fd.parse().map_err(|_| bad())?,
                tls,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fd_list_round_trips_and_rejects_garbage() {
        assert_eq!(
            parse("127.0.0.1:8000=5,tls+[::1]:443=6").unwrap(),
            [
                ("127.0.0.1:8000".parse().unwrap(), 5, false),
                ("[::1]:443".parse().unwrap(), 6, true)
            ]
        );
        assert!(parse("").unwrap().is_empty());
        assert!(parse("127.0.0.1:8000").is_err());
        assert!(parse("nope=5").is_err());
    }
}
