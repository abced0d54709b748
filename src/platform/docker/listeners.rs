//! What a container listens on, read from its network namespace
//! (`/proc/<pid>/net/tcp` and `tcp6` of its main process), so a gate can
//! tell an app that listens on loopback inside its container (Flask's and
//! Node's default, unreachable through a published port) from one that is
//! still starting. From outside both look alike: Docker's userland proxy
//! accepts on the published port and closes the connection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// TCP sockets in LISTEN state in the network namespace of `pid`; `None`
/// when they cannot be read (the process is gone, or no permission).
pub fn listening(pid: i64) -> Option<Vec<SocketAddr>> {
    let v4 = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).ok()?;
    let v6 = std::fs::read_to_string(format!("/proc/{pid}/net/tcp6")).unwrap_or_default();
    let mut all = parse(&v4);
    all.extend(parse(&v6));
    // Docker's embedded DNS server on user-defined networks, not the app.
    let docker_dns = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11));
    all.retain(|a| a.ip() != docker_dns);
    Some(all)
}

/// The LISTEN (`0A`) sockets of a proc(5) `net/tcp` or `net/tcp6` table.
fn parse(table: &str) -> Vec<SocketAddr> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            if state != "0A" {
                return None;
            }
            let (ip, port) = local.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let ip = match ip.len() {
                8 => IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    u32::from_str_radix(ip, 16).ok()?,
                ))),
                32 => {
                    let mut bytes = [0u8; 16];
                    for (i, word) in bytes.chunks_mut(4).enumerate() {
                        let w = u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).ok()?;
                        word.copy_from_slice(&w.to_le_bytes());
                    }
                    IpAddr::V6(Ipv6Addr::from(bytes))
                }
                _ => return None,
            };
            Some(SocketAddr::new(ip, port))
        })
        .collect()
}

/// Why an app that listens on `listeners` cannot be reached on its
/// container `port`, if that is so: it listens, but not on `port` on every
/// address. `None` when it does, or when it listens on nothing yet (still
/// starting).
pub fn misbound(listeners: &[SocketAddr], port: u16) -> Option<String> {
    if listeners.is_empty() {
        return None;
    }
    let reachable = |a: &SocketAddr| a.port() == port && !a.ip().is_loopback();
    if listeners.iter().any(reachable) {
        return None;
    }
    let shown: Vec<String> = listeners.iter().map(SocketAddr::to_string).collect();
    let on_loopback = listeners
        .iter()
        .any(|a| a.port() == port && a.ip().is_loopback());
    Some(match on_loopback {
        true => format!(
            "the app listens on {} inside its container: loopback, which nothing outside the container reaches. \
             Make it listen on 0.0.0.0:{port} (Flask: --host 0.0.0.0; Node: listen({port}, \"0.0.0.0\"))",
            shown.join(", ")
        ),
        false => format!(
            "the app listens on {} inside its container, not on port {port} that cyan.yaml's `port` names. \
             Make it listen on 0.0.0.0:{port}, or set `port` to the port it uses",
            shown.join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D2C4 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
   1: 00000000000000000000000001000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0
";

    #[test]
    fn listeners_are_read_from_the_tables() {
        assert_eq!(
            parse(TCP),
            vec!["127.0.0.1:8080".parse().unwrap()],
            "LISTEN only"
        );
        assert_eq!(
            parse(TCP6),
            vec!["[::]:3000".parse().unwrap(), "[::1]:8081".parse().unwrap()]
        );
    }

    #[test]
    fn a_loopback_or_another_port_is_named() {
        let on = |s: &[&str]| {
            s.iter()
                .map(|a| a.parse().unwrap())
                .collect::<Vec<SocketAddr>>()
        };
        let why = misbound(&on(&["127.0.0.1:8080"]), 8080).unwrap();
        assert!(
            why.contains("loopback") && why.contains("0.0.0.0:8080"),
            "{why}"
        );
        let why = misbound(&on(&["0.0.0.0:3000"]), 8080).unwrap();
        assert!(why.contains("not on port 8080"), "{why}");
        assert_eq!(misbound(&on(&["0.0.0.0:8080"]), 8080), None);
        assert_eq!(misbound(&on(&["[::]:8080", "127.0.0.1:9"]), 8080), None);
        assert_eq!(misbound(&[], 8080), None, "nothing yet: still starting");
    }
}
