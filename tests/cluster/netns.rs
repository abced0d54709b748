//! Where the test kubelet's pods live: a network namespace this test run
//! creates, reached from the host over a veth pair. The API server refuses
//! loopback addresses in Endpoints, so pods need addresses of their own;
//! these never leave the machine.
//!
//! Layout: the veth pair is 10.213.255.1/30 (host) – .2 (namespace); the
//! namespace answers for all of 10.213.0.0/17 through one `local` route
//! (any address in it can be bound without adding it first), and the host
//! routes that range into the namespace.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

const NAME: &str = "cyan-kubelet";
const HOST_SIDE: &str = "cyank0";
const NS_SIDE: &str = "cyank1";
const PODS: &str = "10.213.0.0/17";

pub struct Netns {
    next: AtomicU32,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    /// Creates the namespace afresh (removing one a killed run left).
    /// Needs root (CAP_NET_ADMIN) and iproute2.
    pub fn create() -> Result<Netns, String> {
        let _ = ip(&["netns", "del", NAME]);
        let _ = ip(&["link", "del", HOST_SIDE]);
        let _ = ip(&["route", "del", PODS]);
        ip(&["netns", "add", NAME])?;
        ip(&[
            "link", "add", HOST_SIDE, "type", "veth", "peer", "name", NS_SIDE, "netns", NAME,
        ])?;
        ip(&["addr", "add", "10.213.255.1/30", "dev", HOST_SIDE])?;
        ip(&["link", "set", HOST_SIDE, "up"])?;
        ip(&["-n", NAME, "addr", "add", "10.213.255.2/30", "dev", NS_SIDE])?;
        ip(&["-n", NAME, "link", "set", NS_SIDE, "up"])?;
        ip(&["-n", NAME, "link", "set", "lo", "up"])?;
        ip(&["-n", NAME, "route", "add", "local", PODS, "dev", "lo"])?;
        ip(&["route", "add", PODS, "via", "10.213.255.2"])?;
        Ok(Netns {
            next: AtomicU32::new(1),
        })
    }

    /// A pod address no other pod of this run had.
    pub fn address(&self) -> Ipv4Addr {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        assert!(n < 32_000, "the pod range is used up");
        Ipv4Addr::new(10, 213, (n / 250) as u8, (n % 250 + 1) as u8)
    }

    /// A listening socket inside the namespace (non-blocking, for tokio).
    /// The socket stays in the namespace it was made in, so only the
    /// short-lived thread that makes it enters the namespace.
    pub fn listen(&self, addr: SocketAddr) -> std::io::Result<TcpListener> {
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = File::open(format!("/var/run/netns/{NAME}"))?;
                // SAFETY: setns changes only this thread's namespace, and
                // the thread ends right after.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let listener = TcpListener::bind(addr)?;
                listener.set_nonblocking(true)?;
                Ok(listener)
            })
            .join()
            .expect("the bind thread does not panic")
        })
    }
}
