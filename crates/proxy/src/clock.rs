//! Time, host and process facts, in one place so they read the same everywhere.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

/// Who runs this process, to name a lock's holder: `$USER`, else
/// `$LOGNAME`, else the account of the real uid in `/etc/passwd`, else
/// `uid N`. CI jobs, cron and systemd units often set no `$USER`.
pub fn user() -> String {
    let from_env = ["USER", "LOGNAME"]
        .into_iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty()));
    if let Some(name) = from_env {
        return name;
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    account(&passwd, uid).unwrap_or_else(|| format!("uid {uid}"))
}

/// The name of `uid`'s account in a passwd(5) file's text.
fn account(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_string())
    })
}

/// Whether a process with this pid exists on this host.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // A zombie (state Z) has exited; it only waits for its parent to reap it.
    let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
    state != Some(Some('Z'))
}

/// A short random token (hex), from the kernel's generator.
pub fn random_token() -> String {
    use std::io::Read;
    let mut buf = [0u8; 12];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut buf);
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_account_is_found_by_its_uid() {
        let passwd =
            "root:x:0:0:root:/root:/bin/bash\n\nci:x:1001:1001::/home/ci:/bin/sh\nbroken\n";
        assert_eq!(super::account(passwd, 1001).as_deref(), Some("ci"));
        assert_eq!(super::account(passwd, 0).as_deref(), Some("root"));
        assert_eq!(super::account(passwd, 7), None);
    }
}
