//! The cyan demo app: a tiny HTTP/1.1 server with keep-alive, standard
//! library only, so it builds into a static binary for a `FROM scratch` image.
//!
//! `GET /` answers `<hostname> <instance-uuid> <version>`: the uuid is new for
//! every process, so a restarted or replaced instance is visible in responses.
//! Every answer to `/` (an injected failure too) carries `X-Version:
//! <version>`, where `cyan watch --url` reads the answering version.
//! `GET /healthz` is the health check. `cyan-demo check` is the same check
//! as a command, for an image's `HEALTHCHECK` (see `Dockerfile.healthcheck`):
//! it exits 0 when this container's /healthz answers 200.
//!
//! Fault knobs (environment):
//! - `FAIL_HEALTH=1`: /healthz answers 503;
//! - `FAIL_CHECK=1`: `check` fails, while /healthz still answers 200;
//! - `START_DELAY_MS=N`: sleep before listening;
//! - `RESPONSE_DELAY_MS=N`: sleep before each answer to `/`;
//! - `CRASH_AFTER=N`: exit(1) after N requests to `/`;
//! - `FAIL_RATE=N`: answer 500 to every Nth request to `/`;
//! - `PORT` (default 8080);
//! - `BIND` (default 0.0.0.0): `127.0.0.1` is the common mistake of an app
//!   that listens on loopback inside its container.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

struct App {
    identity: String,
    version: String,
    fail_health: bool,
    response_delay: Duration,
    crash_after: Option<u64>,
    fail_rate: Option<u64>,
    served: AtomicU64,
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn instance_uuid() -> String {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    } else {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b = (t ^ u128::from(std::process::id())).to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn main() {
    let port = env_u64("PORT").unwrap_or(8080);
    if std::env::args().nth(1).as_deref() == Some("check") {
        std::process::exit(check(port));
    }
    if std::env::args().nth(1).as_deref() == Some("migrate") {
        std::process::exit(migrate());
    }
    if let Some(ms) = env_u64("START_DELAY_MS") {
        std::thread::sleep(Duration::from_millis(ms));
    }
    let hostname = std::fs::read_to_string("/etc/hostname")
        .or_else(|_| std::fs::read_to_string("/proc/sys/kernel/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let version = std::env::var("VERSION").unwrap_or_else(|_| "dev".into());
    let app = Arc::new(App {
        identity: format!("{hostname} {} {version}", instance_uuid()),
        version,
        fail_health: std::env::var("FAIL_HEALTH").is_ok_and(|v| v == "1"),
        response_delay: Duration::from_millis(env_u64("RESPONSE_DELAY_MS").unwrap_or(0)),
        crash_after: env_u64("CRASH_AFTER"),
        fail_rate: env_u64("FAIL_RATE").filter(|n| *n > 0),
        served: AtomicU64::new(0),
    });
    let bind = std::env::var("BIND").unwrap_or_else(|_| "0.0.0.0".into());
    let listener = TcpListener::bind((bind.as_str(), port as u16)).expect("bind");
    eprintln!("cyan-demo {} listening on :{port}", app.identity);
    for stream in listener.incoming().flatten() {
        let app = app.clone();
        std::thread::spawn(move || {
            let _ = serve(stream, &app);
        });
    }
}

/// `cyan-demo check`: GET /healthz on this container; the exit code for
/// Docker (0 healthy, 1 unhealthy) and a line saying why.
/// `cyan-demo migrate`: what a one-off hook container of the release's
/// image sees (its version, cyan's variables, whether a secret reached
/// it); exits with MIGRATE_EXIT (default 0).
fn migrate() -> i32 {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    println!(
        "migrate version={} hook={} app={} environment={} color={} secret={}",
        var("VERSION"),
        var("CYAN_HOOK"),
        var("CYAN_APP"),
        var("CYAN_ENVIRONMENT"),
        var("CYAN_COLOR"),
        if var("DB_PASSWORD").is_empty() {
            "unset"
        } else {
            "set"
        },
    );
    // A careless migration that logs its connection string: what cyan
    // must keep out of what it prints (tests/hooks.rs).
    if var("MIGRATE_PRINT_SECRET") == "1" {
        println!("connecting with password {}", var("DB_PASSWORD"));
    }
    match env_u64("MIGRATE_EXIT") {
        Some(code) if code != 0 => {
            eprintln!("migration failed: MIGRATE_EXIT={code}");
            code as i32
        }
        _ => 0,
    }
}

fn check(port: u64) -> i32 {
    if std::env::var("FAIL_CHECK").is_ok_and(|v| v == "1") {
        println!("check failed: FAIL_CHECK=1 (the app's own check says no)");
        return 1;
    }
    let status_line = || -> std::io::Result<String> {
        let timeout = Duration::from_secs(2);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port as u16));
        let mut s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        Ok(line.trim().to_string())
    };
    match status_line() {
        Ok(line) if line.split_whitespace().nth(1) == Some("200") => {
            println!("ok: {line}");
            0
        }
        Ok(line) => {
            println!("check failed: GET /healthz -> {line}");
            1
        }
        Err(e) => {
            println!("check failed: GET /healthz: {e}");
            1
        }
    }
}

/// Serves requests on one connection until the client closes it.
fn serve(stream: TcpStream, app: &App) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut parts = request_line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
        let http10 = parts.next() == Some("HTTP/1.0");
        let (mut length, mut close) = (0usize, http10);
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                if k == "content-length" {
                    length = v.parse().unwrap_or(0);
                } else if k == "connection" {
                    close = v.eq_ignore_ascii_case("close");
                }
            }
        }
        std::io::copy(&mut (&mut reader).take(length as u64), &mut std::io::sink())?;
        let (status, body) = respond(method, path, app);
        let version = match path.split('?').next() {
            Some("/") => format!("x-version: {}\r\n", app.version),
            _ => String::new(),
        };
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{version}{}\r\n",
            body.len(),
            if close { "connection: close\r\n" } else { "" }
        );
        writer.write_all(head.as_bytes())?;
        if method != "HEAD" {
            writer.write_all(body.as_bytes())?;
        }
        writer.flush()?;
        if close {
            return Ok(());
        }
    }
}

fn respond(method: &str, path: &str, app: &App) -> (&'static str, String) {
    match (method, path.split('?').next().unwrap_or("/")) {
        (_, "/healthz") if app.fail_health => (
            "503 Service Unavailable",
            "unhealthy (FAIL_HEALTH=1)\n".into(),
        ),
        (_, "/healthz") => ("200 OK", "ok\n".into()),
        ("GET" | "HEAD", "/") => {
            let n = app.served.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some(limit) = app.crash_after {
                if n > limit {
                    eprintln!("CRASH_AFTER={limit} reached; exiting");
                    std::process::exit(1);
                }
            }
            if !app.response_delay.is_zero() {
                std::thread::sleep(app.response_delay);
            }
            if app.fail_rate.is_some_and(|r| n.is_multiple_of(r)) {
                return (
                    "500 Internal Server Error",
                    format!("{} injected failure\n", app.identity),
                );
            }
            ("200 OK", format!("{}\n", app.identity))
        }
        _ => ("404 Not Found", "not found\n".into()),
    }
}
