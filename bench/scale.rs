//! The measuring half of `bench/scale`: one cyan proxy serving N apps
//! (issue 20). One proxy serves every app on a host, so what a switch, a
//! lock renewal, a restart or a proxied request costs must not grow with
//! the number of apps. The driver grows one proxy through the sizes in
//! `SIZES` (admin API only, so it measures any state layout behind it),
//! measures each size, and at the largest size also an upgrade under load
//! and 10,000 WebSockets through a drain. nginx with as many server blocks
//! is the peer: kamal-proxy needs a Go toolchain and modules this host
//! cannot fetch. Prints Markdown.
//!
//! Run through `bench/scale`; it is `cargo run --release --example scale`.

#[path = "../tests/util/load.rs"]
#[allow(dead_code)]
mod load;
#[path = "percentile.rs"]
mod percentile;

use percentile::percentile;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cyan::proxy::api::{LockRequest, RouteSpec, SwitchRequest};
use cyan::proxy::client::{own_session, AdminClient};
use cyan::proxy::state::{RoutePolicy, Upstream};
use cyan::proxy::Home;
use cyan::release::Color;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The knobs, from the environment (`bench/scale` passes them on).
struct Knobs {
    cyan: PathBuf,
    out: PathBuf,
    sizes: Vec<usize>,
    switches: usize,
    sockets: usize,
    duration: u64,
    /// Request-path rounds, each one run on the 10-app proxy and one on
    /// the grown one, in alternating order.
    rounds: usize,
    wrk: bool,
    nginx: bool,
}

fn knobs() -> Knobs {
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let num = |name: &str, default: &str| -> usize {
        env(name, default)
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not a number"))
    };
    let mut sizes: Vec<usize> = env("SIZES", "10 100 1000 10000")
        .split_whitespace()
        .map(|s| s.parse().expect("SIZES: numbers"))
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    assert!(!sizes.is_empty(), "SIZES is empty");
    let on_path = |tool: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    Knobs {
        cyan: PathBuf::from(env("CYAN", "target/release/cyan")),
        out: PathBuf::from(env("OUT", "/tmp/cyan-scale")),
        sizes,
        switches: num("SWITCHES", "200"),
        sockets: num("SOCKETS", "10000"),
        duration: num("DURATION", "4") as u64,
        rounds: num("ROUNDS", "5").max(1),
        wrk: on_path("wrk"),
        nginx: on_path("nginx"),
    }
}

/// The apps on the proxy every size's request path is compared with.
const REFERENCE_APPS: usize = 10;
/// Clients that create routes at once while the proxy grows.
const CREATORS: usize = 4;
/// No stage grows for longer than this.
const GROW_LIMIT: Duration = Duration::from_secs(3600);
/// Apps whose lease the renewals go to (chosen at random).
const LOCKED_APPS: usize = 20;
/// The drain timeout of the WebSocket apps' routes.
const DRAIN_MS: u64 = 5_000;
/// After the drain deadline, how long closes still count as on time.
const SLACK: Duration = Duration::from_secs(1);
/// WebSocket apps (one of them takes a fifth of the sockets).
const WS_APPS: usize = 100;
/// nginx switches per size, and the time they may take.
const NGINX_SWITCHES: usize = 20;
const NGINX_LIMIT: Duration = Duration::from_secs(120);

fn main() {
    let limit = raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if std::env::args().nth(1).as_deref() == Some("backends") {
        return rt.block_on(Backends::serve());
    }
    eprintln!("open files limit: {limit}");
    let k = knobs();
    std::fs::create_dir_all(&k.out).unwrap();
    rt.block_on(run(k, limit));
}

/// The soft limit of open files up to the hard one: 10,000 WebSockets
/// are 20,000 sockets here (client and backend), and as many in the proxy,
/// which inherits the limit.
fn raise_fd_limit() -> u64 {
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur
    }
}

async fn run(k: Knobs, limit: u64) {
    let mut backends = Backends::start();
    // The request path at N apps is compared, round by round, with this
    // proxy of 10 apps, on the same cores at the same time.
    let reference = Proxy::start(&k.cyan, &k.out.join("cyan-reference"), &k.out).await;
    if !grow(&reference, &mut Apps::default(), REFERENCE_APPS, &backends).await {
        panic!("the reference proxy did not take {REFERENCE_APPS} apps");
    }
    let mut proxy = Proxy::start(&k.cyan, &k.out.join("cyan-home"), &k.out).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_empty = rss_mb(proxy.pid().await);
    eprintln!("empty proxy: {rss_empty:.1} MB");
    let mut apps = Apps::default();
    let mut rows: Vec<Row> = Vec::new();
    let mut md_tail = String::new();
    let largest = *k.sizes.last().unwrap();
    for &n in &k.sizes {
        let mut row = Row {
            n,
            ..Row::default()
        };
        let t = Instant::now();
        let added = n.saturating_sub(apps.live.len());
        if !grow(&proxy, &mut apps, n, &backends).await {
            eprintln!("growing to {n} apps took over {GROW_LIMIT:?}: stopping here");
            break;
        }
        row.create_ms = t.elapsed().as_secs_f64() * 1000.0 / added.max(1) as f64;
        tokio::time::sleep(Duration::from_secs(1)).await;
        row.rss_grown = rss_mb(proxy.pid().await);
        row.disk = state_bytes(&proxy.home);
        eprintln!("{n} apps: switches ...");
        row.switch = switches(&proxy, &mut apps, k.switches).await;
        eprintln!("{n} apps: lock renewals ...");
        (row.take, row.renew) = renewals(&proxy, &apps, k.switches).await;
        eprintln!("{n} apps: kill -9 and restart ...");
        row.restart_ms = proxy.restart(&Apps::host(n - 1)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        row.rss_restarted = rss_mb(proxy.pid().await);
        row.bytes_per_app = (row.rss_restarted - rss_empty) * 1024.0 * 1024.0 / n as f64;
        eprintln!("{n} apps: request path, {} rounds ...", k.rounds);
        let (grown, small) = (
            (proxy.port, Apps::host(n / 2)),
            (reference.port, Apps::host(REFERENCE_APPS / 2)),
        );
        (row.paced, row.saturated) = request_rounds(&k, grown, small).await;
        if k.nginx {
            eprintln!("{n} apps: nginx with {n} server blocks ...");
            row.nginx = Some(nginx_stage(&k, n, &backends).await);
        }
        eprintln!(
            "{n} apps: switch p50 {:.2} ms, renew p50 {:.2} ms, restart {:.0} ms, request p99 {:.2} ms",
            percentile(&row.switch, 50.0),
            percentile(&row.renew, 50.0),
            row.restart_ms,
            row.paced.grown.p99_ms
        );
        if n == largest {
            eprintln!("{n} apps: proxy upgrades under load ...");
            md_tail += &upgrades(&k, &mut proxy, &apps).await;
            eprintln!("{n} apps: {} WebSockets ...", k.sockets);
            md_tail += &websockets(&k, &proxy, &mut apps, limit).await;
        }
        rows.push(row);
        let md = tables(&rows, rss_empty, &k) + &md_tail;
        std::fs::write(k.out.join("scale.md"), &md).unwrap();
    }
    proxy.stop().await;
    reference.stop().await;
    let _ = backends.process.kill();
    let _ = backends.process.wait();
    println!("{}", tables(&rows, rss_empty, &k) + &md_tail);
}

// ---------------------------------------------------------------- backends

/// The apps' upstreams: every app's blue is the same two ports, and its
/// green two others. Each answers its color over HTTP/1.1 keep-alive, and
/// a WebSocket upgrade with a 101, then echoes bytes. They run in a process
/// of their own (this binary, `scale backends`): each WebSocket is a
/// socket on the client's side and one on the backend's, and both in one
/// process would need twice the open files a container may allow.
struct Backends {
    blue: Vec<SocketAddr>,
    green: Vec<SocketAddr>,
    process: Child,
}

impl Backends {
    fn start() -> Backends {
        use std::io::BufRead;
        let mut process = Command::new(std::env::current_exe().unwrap())
            .arg("backends")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the backends");
        let mut line = String::new();
        std::io::BufReader::new(process.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addrs: Vec<SocketAddr> = line
            .split_whitespace()
            .map(|a| a.parse().expect("backend address"))
            .collect();
        assert_eq!(addrs.len(), 4, "backends said {line:?}");
        Backends {
            blue: addrs[..2].to_vec(),
            green: addrs[2..].to_vec(),
            process,
        }
    }

    /// The backends' process: prints its four addresses (blue, blue,
    /// green, green), serves until its stdin closes (the driver is gone).
    async fn serve() {
        let mut addrs = Vec::new();
        for body in ["blue", "blue", "green", "green"] {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(l.local_addr().unwrap().to_string());
            tokio::spawn(serve_backend(l, body));
        }
        println!("{}", addrs.join(" "));
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    }

    fn of(&self, color: Color) -> Vec<Upstream> {
        let addrs = match color {
            Color::Blue => &self.blue,
            Color::Green => &self.green,
        };
        addrs.iter().copied().map(Upstream::from).collect()
    }
}

async fn serve_backend(listener: TcpListener, body: &'static str) {
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                tokio::spawn(backend_conn(s, body));
            }
            // Out of file descriptors, for a moment.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// RFC 6455's example accept value, for the one key the clients send.
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

async fn backend_conn(mut s: TcpStream, body: &'static str) {
    let _ = s.set_nodelay(true);
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}\n",
        body.len() + 1
    );
    let mut seen = Vec::with_capacity(512);
    let mut chunk = [0u8; 2048];
    loop {
        let Some(end) = find(&seen, b"\r\n\r\n") else {
            match s.read(&mut chunk).await {
                Ok(n) if n > 0 && seen.len() < 65_536 => seen.extend_from_slice(&chunk[..n]),
                _ => return,
            }
            continue;
        };
        let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
        if head.contains("\r\nupgrade: websocket") {
            let hello = format!(
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
                 sec-websocket-accept: {WS_ACCEPT}\r\n\r\n"
            );
            if s.write_all(hello.as_bytes()).await.is_err()
                || s.write_all(&seen[end + 4..]).await.is_err()
            {
                return;
            }
            let mut buf = [0u8; 512];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            return;
        }
        // GETs only: no request bodies.
        seen.drain(..end + 4);
        if s.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------- proxy

/// The `cyan proxy run` under test, host-routing every app on its
/// `--listen` port, in a session of its own as `cyan deploy` starts it.
struct Proxy {
    cyan: PathBuf,
    home: PathBuf,
    log: PathBuf,
    port: u16,
    /// The process this driver started last (an upgrade's successor is
    /// not its child).
    child: Option<Child>,
    /// Processes an upgrade replaced: they drain and exit.
    replaced: Vec<Child>,
}

impl Proxy {
    async fn start(cyan: &Path, home: &Path, out: &Path) -> Proxy {
        let _ = std::fs::remove_dir_all(home);
        let port = free_port();
        let name = home.file_name().expect("a home folder").to_string_lossy();
        let log = out.join(format!("{name}.log"));
        let mut p = Proxy {
            cyan: cyan.into(),
            home: home.into(),
            log,
            port,
            child: None,
            replaced: Vec::new(),
        };
        p.child = Some(p.spawn());
        p.wait_ready().await;
        p
    }

    fn spawn(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(&self.cyan);
        cmd.args(["proxy", "run", "--home"])
            .arg(&self.home)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log);
        own_session(&mut cmd);
        cmd.spawn().expect("cyan proxy run")
    }

    fn admin(&self) -> AdminClient {
        AdminClient::new(&Home {
            dir: self.home.clone(),
        })
    }

    async fn wait_ready(&self) {
        let t = Instant::now();
        while self.admin().health().await.is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "the proxy did not come up (see {})",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The pid serving now (after an upgrade, not our child's).
    async fn pid(&self) -> u32 {
        self.admin().health().await.expect("proxy health").pid
    }

    /// `kill -9` the proxy and start it again: ms from the spawn until
    /// `host` is answered 200 by its upstream (polled every 5 ms, on fresh
    /// connections).
    async fn restart(&mut self, host: &str) -> f64 {
        let pid = self.pid().await;
        // SAFETY: a signal to a process this driver started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        if let Some(mut c) = self.child.take() {
            if c.id() == pid {
                let _ = c.wait();
            } else {
                self.replaced.push(c);
            }
        }
        let gone = Instant::now();
        while Path::new(&format!("/proc/{pid}/status")).exists()
            && gone.elapsed() < Duration::from_secs(10)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let t0 = Instant::now();
        self.child = Some(self.spawn());
        let mut answered = None;
        while t0.elapsed() < Duration::from_secs(120) {
            if get_once(self.port, host).await.is_ok() {
                answered = Some(t0.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.wait_ready().await;
        answered.unwrap_or(f64::NAN)
    }

    async fn stop(mut self) {
        let _ = self.admin().shutdown().await;
        for c in self.child.iter_mut().chain(self.replaced.iter_mut()) {
            let t = Instant::now();
            while c.try_wait().ok().flatten().is_none() && t.elapsed() < Duration::from_secs(10) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One GET on a fresh connection (3 s at most): the body of a 200, or
/// what went wrong.
async fn get_once(port: u16, host: &str) -> Result<String, String> {
    let exchange = async {
        let mut s = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut r = Vec::new();
        s.read_to_end(&mut r).await.map_err(|e| e.to_string())?;
        let r = String::from_utf8_lossy(&r);
        match r.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.trim().to_string()),
            _ => Err(r.lines().next().unwrap_or("no answer").to_string()),
        }
    };
    tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .unwrap_or_else(|_| Err("timeout".into()))
}

// ---------------------------------------------------------------- apps

/// The apps created so far, and each one's live color.
#[derive(Default)]
struct Apps {
    live: Vec<Color>,
}

impl Apps {
    fn name(i: usize) -> String {
        format!("app{i}")
    }

    fn host(i: usize) -> String {
        format!("app{i}.localhost")
    }
}

fn route_spec(i: usize, policy: RoutePolicy) -> RouteSpec {
    RouteSpec {
        hosts: vec![format!("app{i}.localhost")],
        listen: None,
        path_prefix: None,
        policy,
        tls: None,
        preview: None,
    }
}

/// Creates apps up to `n`, each as a deploy leaves it (route, green
/// standby, blue live: three admin calls), from `CREATORS` clients at once.
/// False when it took longer than `GROW_LIMIT`.
async fn grow(proxy: &Proxy, apps: &mut Apps, n: usize, backends: &Backends) -> bool {
    let from = apps.live.len();
    if n <= from {
        return true;
    }
    let next = Arc::new(AtomicUsize::new(from));
    let done = Arc::new(AtomicUsize::new(0));
    let (blue, green) = (backends.of(Color::Blue), backends.of(Color::Green));
    let began = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CREATORS {
        let (next, done, admin) = (next.clone(), done.clone(), proxy.admin());
        let (blue, green) = (blue.clone(), green.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n || began.elapsed() > GROW_LIMIT {
                    return;
                }
                let name = Apps::name(i);
                admin
                    .put_route(&name, &route_spec(i, RoutePolicy::default()))
                    .await
                    .expect("put_route");
                admin
                    .set_color(&name, Color::Green, green.clone())
                    .await
                    .expect("set_color");
                let req = SwitchRequest {
                    color: Color::Blue,
                    upstreams: Some(blue.clone()),
                    record: None,
                    route: None,
                };
                admin.switch(&name, &req).await.expect("switch");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut last_report = Instant::now();
    while tasks.iter().any(|t| !t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            let d = done.load(Ordering::Relaxed);
            let rate = d as f64 / began.elapsed().as_secs_f64();
            eprintln!(
                "  created {}/{n} apps ({rate:.0}/s, {:.0} s left)",
                from + d,
                (n - from - d) as f64 / rate.max(0.001)
            );
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let created = from + done.load(Ordering::Relaxed);
    apps.live.resize(created, Color::Blue);
    created == n
}

/// A small deterministic generator (xorshift64*): the same apps in every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as usize
    }
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// `count` switches of random apps, one after another, each to its other
/// color: each admin call's ms (it returns once the change is persisted).
async fn switches(proxy: &Proxy, apps: &mut Apps, count: usize) -> Vec<f64> {
    let admin = proxy.admin();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ apps.live.len() as u64);
    let mut times = Vec::new();
    for _ in 0..count {
        let i = rng.below(apps.live.len());
        let color = apps.live[i].other();
        let req = SwitchRequest {
            color,
            upstreams: None,
            record: None,
            route: None,
        };
        let t = Instant::now();
        admin.switch(&Apps::name(i), &req).await.expect("switch");
        times.push(ms_since(t));
        apps.live[i] = color;
    }
    times
}

/// The deploy lease: taken on `LOCKED_APPS` random apps, then renewed
/// `count` times on random ones of those, then let go. Each call's ms:
/// (takes, renewals).
async fn renewals(proxy: &Proxy, apps: &Apps, count: usize) -> (Vec<f64>, Vec<f64>) {
    let admin = proxy.admin();
    let mut rng = Rng(0xD1B5_4A32_D192_ED03 ^ apps.live.len() as u64);
    let mut locked: Vec<usize> = Vec::new();
    while locked.len() < LOCKED_APPS.min(apps.live.len()) {
        let i = rng.below(apps.live.len());
        if !locked.contains(&i) {
            locked.push(i);
        }
    }
    let token = format!("scale-{}", std::process::id());
    let req = || LockRequest {
        token: token.clone(),
        holder: "bench/scale".into(),
        pid: std::process::id(),
        host: "localhost".into(),
        ttl_ms: 120_000,
    };
    let mut takes = Vec::new();
    for &i in &locked {
        let t = Instant::now();
        admin.lock(&Apps::name(i), &req()).await.expect("lock");
        takes.push(ms_since(t));
    }
    let mut renews = Vec::new();
    for _ in 0..count {
        let i = locked[rng.below(locked.len())];
        let t = Instant::now();
        admin.lock(&Apps::name(i), &req()).await.expect("renew");
        renews.push(ms_since(t));
    }
    for &i in &locked {
        admin.unlock(&Apps::name(i), &token).await.expect("unlock");
    }
    (takes, renews)
}

/// Sum of the regular files in the proxy's home but its logs: its state.
fn state_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(meta) = e.metadata() else { continue };
        let name = e.file_name();
        if meta.is_dir() {
            total += state_bytes(&e.path());
        } else if meta.is_file() && !name.to_string_lossy().ends_with(".log") {
            total += meta.len();
        }
    }
    total
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status_kb(&status, "VmRSS:") / 1024.0
}

fn status_kb(text: &str, field: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .unwrap_or(f64::NAN)
}

// ---------------------------------------------------------------- request path

#[derive(Debug, Default, Clone)]
struct RequestRun {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

/// One app's host under a load that leaves the cores room: 16
/// keep-alive clients that pause 2 ms between requests (about 7,000
/// requests/s here), for `DURATION` s. Its latencies are the request
/// path's own, not a run queue's.
async fn paced(k: &Knobs, port: u16, host: &str) -> RequestRun {
    let load = load::Load::start(port, host, 16, 0);
    tokio::time::sleep(Duration::from_secs(k.duration)).await;
    let samples = load.finish().await;
    let lat: Vec<f64> = samples
        .iter()
        .map(|s| (s.end - s.start).as_secs_f64() * 1000.0)
        .collect();
    RequestRun {
        rps: samples.len() as f64 / k.duration as f64,
        p50_ms: percentile(&lat, 50.0),
        p99_ms: percentile(&lat, 99.0),
        errors: load::failures(&samples).len() as u64,
    }
}

/// One app's host as fast as wrk can (2 threads, 16 connections), for
/// `DURATION` s after a 1 s warm-up: throughput, and latencies that are
/// mostly the shared cores' run queue.
async fn saturated(k: &Knobs, port: u16, host: &str) -> RequestRun {
    let run = |secs: u64| {
        let (host, url) = (host.to_string(), format!("http://127.0.0.1:{port}/"));
        tokio::task::spawn_blocking(move || wrk(&host, &url, secs))
    };
    run(1).await.unwrap(); // warm-up
    let out = run(k.duration.max(1)).await.unwrap();
    let field = |name: &str| -> f64 {
        out.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let rps = out
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    RequestRun {
        rps,
        p50_ms: field("p50") / 1000.0,
        p99_ms: field("p99") / 1000.0,
        errors: field("errors") as u64,
    }
}

/// The request path on the grown proxy and on the 10-app one, both
/// measured the same way in one round: each one's median round (by p99),
/// and the median of the rounds' p99 ratios (grown over 10 apps).
#[derive(Debug, Default, Clone)]
struct Compared {
    grown: RequestRun,
    reference: RequestRun,
    p99_ratio: f64,
}

/// `ROUNDS` rounds, each the paced load (and wrk, when installed) on both
/// proxies, alternating which goes first, so a noisy second on the shared
/// cores hits both sides of a ratio alike.
async fn request_rounds(
    k: &Knobs,
    grown: (u16, String),
    small: (u16, String),
) -> (Compared, Option<Compared>) {
    let mut runs: [Vec<(RequestRun, RequestRun)>; 2] = Default::default();
    for round in 0..k.rounds {
        let order = match round % 2 {
            0 => [(&grown, true), (&small, false)],
            _ => [(&small, false), (&grown, true)],
        };
        let mut got: [[RequestRun; 2]; 2] = Default::default();
        for ((port, host), is_grown) in order {
            let i = usize::from(!is_grown);
            got[0][i] = paced(k, *port, host).await;
            if k.wrk {
                got[1][i] = saturated(k, *port, host).await;
            }
        }
        for (kind, [g, s]) in got.into_iter().enumerate() {
            runs[kind].push((g, s));
        }
    }
    let compare = |rounds: &[(RequestRun, RequestRun)]| {
        let median_run = |mut v: Vec<RequestRun>| {
            v.sort_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms));
            v.swap_remove(v.len() / 2)
        };
        let ratios: Vec<f64> = rounds.iter().map(|(g, s)| g.p99_ms / s.p99_ms).collect();
        Compared {
            grown: median_run(rounds.iter().map(|r| r.0.clone()).collect()),
            reference: median_run(rounds.iter().map(|r| r.1.clone()).collect()),
            p99_ratio: percentile(&ratios, 50.0),
        }
    };
    (compare(&runs[0]), k.wrk.then(|| compare(&runs[1])))
}

/// wrk's output, with the percentiles `bench/percentiles.lua` prints.
fn wrk(host: &str, url: &str, secs: u64) -> String {
    let out = Command::new("wrk")
        .args(["-t2", "-c16", &format!("-d{secs}s"), "-H"])
        .arg(format!("Host: {host}"))
        .args(["-s", "bench/percentiles.lua", url])
        .output()
        .expect("wrk");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------- upgrade

/// `cyan proxy upgrade` three times while 12 clients (keep-alive and
/// fresh connections) load four apps: failed requests.
async fn upgrades(k: &Knobs, proxy: &mut Proxy, apps: &Apps) -> String {
    let n = apps.live.len();
    let hosts: Vec<String> = (0..4).map(|j| Apps::host(j * n / 4)).collect();
    let loads: Vec<load::Load> = hosts
        .iter()
        .map(|h| load::Load::start(proxy.port, h, 2, 1))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut walls = Vec::new();
    for _ in 0..3 {
        let before = proxy.pid().await;
        let t = Instant::now();
        let out = Command::new(&k.cyan)
            .args(["proxy", "upgrade", "--home"])
            .arg(&proxy.home)
            .env_remove("RUST_LOG")
            .output()
            .expect("cyan proxy upgrade");
        walls.push(ms_since(t));
        if !out.status.success() {
            eprintln!(
                "  upgrade failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        if proxy.child.as_ref().is_some_and(|c| c.id() == before) {
            proxy.replaced.extend(proxy.child.take());
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let mut samples = Vec::new();
    for l in loads {
        samples.extend(l.finish().await);
    }
    let failed = load::failures(&samples);
    if !failed.is_empty() {
        eprintln!(
            "  failed during upgrades: {:?}",
            &failed[..failed.len().min(5)]
        );
    }
    format!(
        "#### Proxy upgrade under load, {n} apps (`cyan proxy upgrade`; 12 clients on 4 apps)\n\n\
         | upgrades | upgrade command p50 ms | requests | failed |\n|---:|---:|---:|---:|\n\
         | {} | {:.0} | {} | {} |\n\n",
        walls.len(),
        percentile(&walls, 50.0),
        samples.len(),
        failed.len()
    )
}

// ---------------------------------------------------------------- websockets

/// When each socket ended (a close frame or the connection's end), by
/// socket; and which app each socket is on.
struct Sockets {
    app: Vec<usize>,
    ended: Arc<Mutex<Vec<Option<Instant>>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Sockets {
    /// Sockets of apps for which `pick` holds that ended in `[from, to]`.
    fn ended_between(&self, pick: impl Fn(usize) -> bool, from: Instant, to: Instant) -> usize {
        let ended = self.ended.lock().unwrap();
        self.app
            .iter()
            .zip(ended.iter())
            .filter(|(a, e)| pick(**a) && e.is_some_and(|t| t >= from && t <= to))
            .count()
    }

    fn last_end(&self, app: usize) -> Option<Instant> {
        let ended = self.ended.lock().unwrap();
        self.app
            .iter()
            .zip(ended.iter())
            .filter(|(a, _)| **a == app)
            .filter_map(|(_, e)| *e)
            .max()
    }

    fn on(&self, app: usize) -> usize {
        self.app.iter().filter(|a| **a == app).count()
    }
}

/// A WebSocket through the proxy to `host`: the upgrade, then one masked
/// frame echoed back. 10 s at most.
async fn open_ws(port: u16, host: &str) -> Result<TcpStream, String> {
    let open = async {
        let mut s = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let hello = format!(
            "GET /ws HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {WS_KEY}\r\n\r\n"
        );
        s.write_all(hello.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut head = Vec::new();
        let mut chunk = [0u8; 512];
        while find(&head, b"\r\n\r\n").is_none() {
            let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err(format!("closed: {}", String::from_utf8_lossy(&head)));
            }
            head.extend_from_slice(&chunk[..n]);
        }
        if !head.starts_with(b"HTTP/1.1 101") {
            return Err(String::from_utf8_lossy(&head)
                .lines()
                .next()
                .unwrap_or("")
                .into());
        }
        let frame = [0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
        s.write_all(&frame).await.map_err(|e| e.to_string())?;
        let mut echo = [0u8; 8];
        s.read_exact(&mut echo)
            .await
            .map_err(|e| format!("echo: {e}"))?;
        if echo != frame {
            return Err("echo differs".into());
        }
        Ok(s)
    };
    tokio::time::timeout(Duration::from_secs(10), open)
        .await
        .unwrap_or_else(|_| Err("timeout".into()))
}

/// Opens `per_app[j]` sockets to each app `ws_apps[j]`, 200 at a time, and
/// watches each until it ends (10 minutes at most).
async fn open_sockets(port: u16, ws_apps: &[usize], per_app: &[usize]) -> (Sockets, Vec<String>) {
    let plan: Vec<usize> = ws_apps
        .iter()
        .zip(per_app)
        .flat_map(|(&a, &c)| std::iter::repeat_n(a, c))
        .collect();
    let ended = Arc::new(Mutex::new(vec![None; plan.len()]));
    let opened = Arc::new(AtomicUsize::new(0));
    let began = Instant::now();
    let progress = {
        let opened = opened.clone();
        let total = plan.len();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                eprintln!(
                    "  opened {}/{total} WebSockets",
                    opened.load(Ordering::Relaxed)
                );
            }
        })
    };
    let results: Vec<(usize, Result<TcpStream, String>)> =
        futures_util::stream::iter(plan.iter().copied().enumerate())
            .map(|(id, app)| {
                let opened = opened.clone();
                async move {
                    let r = open_ws(port, &format!("app{app}.localhost")).await;
                    opened.fetch_add(1, Ordering::Relaxed);
                    (id, r)
                }
            })
            .buffer_unordered(200)
            .collect()
            .await;
    progress.abort();
    eprintln!(
        "  opened {} WebSockets in {:.1} s",
        plan.len(),
        began.elapsed().as_secs_f64()
    );
    let mut errors = Vec::new();
    let mut tasks = Vec::new();
    for (id, r) in results {
        match r {
            Ok(mut s) => {
                let ended = ended.clone();
                tasks.push(tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    let watch = async {
                        loop {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(_) if buf[0] == 0x88 => return,
                                Ok(_) => {}
                            }
                        }
                    };
                    if tokio::time::timeout(Duration::from_secs(600), watch)
                        .await
                        .is_ok()
                    {
                        ended.lock().unwrap()[id] = Some(Instant::now());
                    }
                }));
            }
            Err(e) => {
                ended.lock().unwrap()[id] = Some(began);
                errors.push(e);
            }
        }
    }
    (
        Sockets {
            app: plan,
            ended,
            tasks,
        },
        errors,
    )
}

/// Two keep-alive clients and one on fresh connections per host, for `d`.
async fn load_hosts(port: u16, hosts: Vec<String>, d: Duration) -> Vec<load::Sample> {
    let loads: Vec<load::Load> = hosts
        .iter()
        .map(|h| load::Load::start(port, h, 2, 1))
        .collect();
    tokio::time::sleep(d).await;
    let mut samples = Vec::new();
    for l in loads {
        samples.extend(l.finish().await);
    }
    samples
}

/// Latencies (ms) of the load's successful requests, and its failures.
fn latencies(samples: &[load::Sample]) -> (Vec<f64>, usize) {
    let ok = samples
        .iter()
        .filter(|s| s.outcome.is_ok())
        .map(|s| (s.end - s.start).as_secs_f64() * 1000.0)
        .collect();
    (ok, load::failures(samples).len())
}

/// 10,000 WebSockets (`SOCKETS`) over 100 apps, a fifth of them on one
/// app; then (a) one small app switched: the other apps' sockets stay,
/// its own end by the drain deadline; (b) the big app switched: its
/// sockets end by the deadline, and what that does to other apps' plain
/// requests.
async fn websockets(k: &Knobs, proxy: &Proxy, apps: &mut Apps, limit: u64) -> String {
    let n = apps.live.len();
    let ws_apps: Vec<usize> = (0..WS_APPS.min(n)).collect();
    // The proxy holds two sockets per WebSocket, and a few files besides.
    let sockets = k.sockets.min(limit.saturating_sub(300) as usize / 2);
    if sockets < k.sockets {
        eprintln!(
            "  {sockets} WebSockets, not {}: the open files limit is {limit}",
            k.sockets
        );
    }
    if ws_apps.len() < 2 || sockets < ws_apps.len() {
        return String::new();
    }
    let admin = proxy.admin();
    let policy = RoutePolicy {
        drain_timeout_ms: DRAIN_MS,
        ..RoutePolicy::default()
    };
    for &a in &ws_apps {
        admin
            .put_route(&Apps::name(a), &route_spec(a, policy.clone()))
            .await
            .expect("put_route with a drain timeout");
    }
    let big = ws_apps[0];
    let big_count = sockets / 5;
    let rest = sockets - big_count;
    let small = ws_apps.len() - 1;
    let per_app: Vec<usize> = std::iter::once(big_count)
        .chain((0..small).map(|j| rest / small + usize::from(j < rest % small)))
        .collect();
    let (socks, errors) = open_sockets(proxy.port, &ws_apps, &per_app).await;
    if !errors.is_empty() {
        eprintln!(
            "  {} WebSockets did not open: {:?}",
            errors.len(),
            &errors[..errors.len().min(5)]
        );
    }
    let open = socks.app.len() - errors.len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_ws = rss_mb(proxy.pid().await);
    let drain = Duration::from_millis(DRAIN_MS);

    // (a) one small app.
    let one = ws_apps[1];
    let switch = |i: usize, color: Color| {
        let admin = admin.clone();
        async move {
            let req = SwitchRequest {
                color,
                upstreams: None,
                record: None,
                route: None,
            };
            admin.switch(&Apps::name(i), &req).await.expect("switch");
        }
    };
    eprintln!("  (a) switching app{one} ({} sockets) ...", socks.on(one));
    let t0 = Instant::now();
    let color = apps.live[one].other();
    switch(one, color).await;
    apps.live[one] = color;
    tokio::time::sleep_until((t0 + drain + SLACK).into()).await;
    let a_own_on_time = socks.ended_between(|a| a == one, t0, t0 + drain);
    let a_own_late = socks.ended_between(|a| a == one, t0 + drain, t0 + drain + SLACK);
    let a_others = socks.ended_between(|a| a != one, t0, Instant::now());

    // (b) the big app, with plain requests to four other apps before and
    // during its drain.
    let hosts: Vec<String> = (1..=4).map(|j| Apps::host(n / 2 + j)).collect();
    eprintln!("  (b) plain requests before the big drain ...");
    let before = load_hosts(proxy.port, hosts.clone(), drain).await;
    eprintln!("  (b) switching app{big} ({} sockets) ...", socks.on(big));
    let during = tokio::spawn(load_hosts(proxy.port, hosts, drain));
    let t1 = Instant::now();
    let color = apps.live[big].other();
    switch(big, color).await;
    apps.live[big] = color;
    let during = during.await.unwrap();
    tokio::time::sleep_until((t1 + drain + SLACK).into()).await;
    let b_on_time = socks.ended_between(|a| a == big, t1, t1 + drain);
    let b_late = socks.ended_between(|a| a == big, t1 + drain, t1 + drain + SLACK);
    let b_last = socks.last_end(big).map_or(f64::NAN, |t| {
        t.saturating_duration_since(t1).as_secs_f64() * 1000.0
    });
    let b_others = socks.ended_between(|a| a != big && a != one, t1, Instant::now());
    let (lat_before, failed_before) = latencies(&before);
    let (lat_during, failed_during) = latencies(&during);
    for t in &socks.tasks {
        t.abort();
    }
    let big_open = socks.on(big);
    let one_open = socks.on(one);
    format!(
        "#### WebSockets, {n} apps: {total} sockets over {apps_n} apps ({big_open} on app{big}), drain timeout {DRAIN_MS} ms\n\n\
         {open} opened and echoed ({errs} failed to open); proxy RSS with them open: {rss_ws:.0} MB.\n\n\
         | switched | its sockets | ended by the deadline | ended in the {slack} s after | other apps' sockets ended | last end after the switch ms |\n\
         |---|---:|---:|---:|---:|---:|\n\
         | (a) app{one} | {one_open} | {a_own_on_time} | {a_own_late} | {a_others} | - |\n\
         | (b) app{big} | {big_open} | {b_on_time} | {b_late} | {b_others} | {b_last:.0} |\n\n\
         Plain requests to 4 other apps (12 clients) for {drain_s} s before (b) and during its drain:\n\n\
         | when | requests | failed | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|\n\
         | before | {rb} | {failed_before} | {p50b:.2} | {p99b:.2} |\n\
         | during the drain | {rd} | {failed_during} | {p50d:.2} | {p99d:.2} |\n\n",
        total = socks.app.len(),
        apps_n = ws_apps.len(),
        errs = errors.len(),
        slack = SLACK.as_secs(),
        drain_s = drain.as_secs(),
        rb = before.len(),
        rd = during.len(),
        p50b = percentile(&lat_before, 50.0),
        p99b = percentile(&lat_before, 99.0),
        p50d = percentile(&lat_during, 50.0),
        p99d = percentile(&lat_during, 99.0),
    )
}

// ---------------------------------------------------------------- nginx

#[derive(Debug, Default, Clone)]
struct NginxRun {
    switches: Vec<f64>,
    rss_mb: f64,
    pss_mb: f64,
    start_ms: f64,
}

/// nginx with one server block (and upstream block) per app, all on one
/// port: RSS of master and workers, and switches as a config generator
/// makes them (rewrite one app's upstream, `nginx -s reload`), each timed
/// until a fresh request to that host is answered by the new upstream.
async fn nginx_stage(k: &Knobs, n: usize, backends: &Backends) -> NginxRun {
    let dir = k.out.join(format!("nginx-{n}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    std::fs::create_dir_all(dir.join("apps")).unwrap();
    let port = free_port();
    let workers = std::thread::available_parallelism().map_or(2, |p| p.get());
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "worker_processes {workers};\npid nginx.pid;\nerror_log logs/error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  server_names_hash_max_size 65536;\n  server_names_hash_bucket_size 128;\n\
             proxy_http_version 1.1;\n  proxy_set_header Connection \"\";\n  proxy_set_header Host $host;\n\
             include apps/*.conf;\n  include servers.conf;\n}}\n"
        ),
    )
    .unwrap();
    let mut servers = String::new();
    for i in 0..n {
        servers += &format!(
            "server {{ listen 127.0.0.1:{port}; server_name app{i}.localhost; location / {{ proxy_pass http://app{i}; }} }}\n"
        );
        write_nginx_upstream(&dir, i, &backends.blue);
    }
    std::fs::write(dir.join("servers.conf"), servers).unwrap();
    let nginx = |args: &[&str]| {
        Command::new("nginx")
            .arg("-p")
            .arg(&dir)
            .args(["-c", "nginx.conf"])
            .args(args)
            .output()
            .expect("nginx")
    };
    let t = Instant::now();
    let out = nginx(&[]);
    assert!(
        out.status.success(),
        "nginx: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut run = NginxRun::default();
    while get_once(port, &format!("app{}.localhost", n - 1))
        .await
        .is_err()
    {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "nginx did not answer"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    run.start_ms = ms_since(t);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let master: u32 = std::fs::read_to_string(dir.join("nginx.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pids: Vec<u32> = std::iter::once(master).chain(children(master)).collect();
    for &p in &pids {
        run.rss_mb += rss_mb(p);
        let smaps = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).unwrap_or_default();
        run.pss_mb += status_kb(&smaps, "Pss:") / 1024.0;
    }
    let mut live = vec![Color::Blue; n];
    let mut rng = Rng(0x2545_F491_4F6C_DD1D ^ n as u64);
    let began = Instant::now();
    while run.switches.len() < NGINX_SWITCHES && began.elapsed() < NGINX_LIMIT {
        let i = rng.below(n);
        let color = live[i].other();
        let want = color.to_string();
        let t = Instant::now();
        write_nginx_upstream(
            &dir,
            i,
            match color {
                Color::Blue => &backends.blue,
                Color::Green => &backends.green,
            },
        );
        let out = nginx(&["-s", "reload"]);
        assert!(out.status.success(), "nginx reload");
        let host = format!("app{i}.localhost");
        while get_once(port, &host).await.as_deref() != Ok(want.as_str()) {
            if t.elapsed() > Duration::from_secs(30) {
                break;
            }
        }
        run.switches.push(ms_since(t));
        live[i] = color;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    nginx(&["-s", "stop"]);
    let t = Instant::now();
    while Path::new(&format!("/proc/{master}")).exists() && t.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run
}

fn write_nginx_upstream(dir: &Path, i: usize, addrs: &[SocketAddr]) {
    let servers: String = addrs.iter().map(|a| format!("server {a}; ")).collect();
    let path = dir.join(format!("apps/app{i}.conf"));
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        format!("upstream app{i} {{ {servers}keepalive 4; }}\n"),
    )
    .unwrap();
    std::fs::rename(tmp, path).unwrap();
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid ...: the comm may hold spaces.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

// ---------------------------------------------------------------- tables

#[derive(Default)]
struct Row {
    n: usize,
    create_ms: f64,
    switch: Vec<f64>,
    take: Vec<f64>,
    renew: Vec<f64>,
    rss_grown: f64,
    rss_restarted: f64,
    bytes_per_app: f64,
    disk: u64,
    restart_ms: f64,
    /// The request path, paced and (with wrk) saturated, against the
    /// 10-app proxy.
    paced: Compared,
    saturated: Option<Compared>,
    nginx: Option<NginxRun>,
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / (1 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KB", b as f64 / (1 << 10) as f64),
        b => format!("{b} B"),
    }
}

fn tables(rows: &[Row], rss_empty: f64, k: &Knobs) -> String {
    let Some(first) = rows.first() else {
        return String::new();
    };
    let base_switch = percentile(&first.switch, 50.0);
    let mut md = format!(
        "#### Control plane: admin calls with N apps (each returns once the change is persisted)\n\n\
         | apps | create ms/app | switch p50 ms | switch p99 ms | p50 vs {f} | lock take p50 ms | renew p50 ms | renew p99 ms |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|\n",
        f = first.n
    );
    for r in rows {
        md += &format!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2}x | {:.2} | {:.2} | {:.2} |\n",
            r.n,
            r.create_ms,
            percentile(&r.switch, 50.0),
            percentile(&r.switch, 99.0),
            percentile(&r.switch, 50.0) / base_switch,
            percentile(&r.take, 50.0),
            percentile(&r.renew, 50.0),
            percentile(&r.renew, 99.0),
        );
    }
    md += &format!(
        "\n#### Footprint and restart (empty proxy: {rss_empty:.1} MB)\n\n\
         | apps | RSS grown MB | RSS restarted MB | bytes/app | state on disk | kill -9 to last app's 200 ms |\n\
         |---:|---:|---:|---:|---:|---:|\n"
    );
    for r in rows {
        md += &format!(
            "| {} | {:.1} | {:.1} | {:.0} | {} | {:.0} |\n",
            r.n,
            r.rss_grown,
            r.rss_restarted,
            r.bytes_per_app,
            size(r.disk),
            r.restart_ms
        );
    }
    md += &format!(
        "\n#### Request path: one app in the middle, against a proxy of {REFERENCE_APPS} apps \
         ({n} rounds of {d} s each, alternating which goes first; each side's median round)\n\n\
         Paced: 16 keep-alive clients, 2 ms between requests. Saturated: wrk -t2 -c16.\n\n\
         | apps | paced p50 ms | paced p99 ms | {REFERENCE_APPS} apps: paced p99 ms | paced p99 vs {REFERENCE_APPS} apps | \
         wrk requests/s | wrk p99 ms | {REFERENCE_APPS} apps: wrk p99 ms | wrk p99 vs {REFERENCE_APPS} apps | errors |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        d = k.duration,
        n = k.rounds
    );
    for r in rows {
        let p = &r.paced;
        let w = r.saturated.clone().unwrap_or_default();
        let nan = |v: f64| match v.is_nan() || v == 0.0 {
            true => "-".to_string(),
            false => format!("{v:.2}"),
        };
        md += &format!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2}x | {} | {} | {} | {}x | {} |\n",
            r.n,
            p.grown.p50_ms,
            p.grown.p99_ms,
            p.reference.p99_ms,
            p.p99_ratio,
            match w.grown.rps {
                0.0 => "-".to_string(),
                rps => format!("{rps:.0}"),
            },
            nan(w.grown.p99_ms),
            nan(w.reference.p99_ms),
            nan(w.p99_ratio),
            p.grown.errors + p.reference.errors + w.grown.errors + w.reference.errors
        );
    }
    if rows.iter().any(|r| r.nginx.is_some()) {
        md += "\n#### Peer: nginx with N server blocks (switch: rewrite one upstream, `nginx -s reload`, until a fresh request gets the new one)\n\n\
               | apps | switches | switch p50 ms | switch p99 ms | vs cyan p50 | start to last app's 200 ms | RSS MB (master + workers) | PSS MB |\n\
               |---:|---:|---:|---:|---:|---:|---:|---:|\n";
        for r in rows {
            if let Some(x) = &r.nginx {
                md += &format!(
                    "| {} | {} | {:.1} | {:.1} | {:.0}x | {:.0} | {:.1} | {:.1} |\n",
                    r.n,
                    x.switches.len(),
                    percentile(&x.switches, 50.0),
                    percentile(&x.switches, 99.0),
                    percentile(&x.switches, 50.0) / percentile(&r.switch, 50.0),
                    x.start_ms,
                    x.rss_mb,
                    x.pss_mb
                );
            }
        }
    }
    md + "\n"
}
