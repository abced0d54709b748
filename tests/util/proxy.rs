//! The cyan proxy under test: the real `cyan proxy run` process with its own
//! home and listen port, driven through its admin socket, raw HTTP/1.1
//! helpers for talking to it, and a WebSocket client.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cyan::proxy::api::{RouteSpec, SwitchRequest, UpgradeResponse};
use cyan::proxy::client::AdminClient;
use cyan::proxy::state::RoutePolicy;
use cyan::proxy::stats::StatsView;
use cyan::proxy::Home;
use cyan::release::Color;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::wait;

/// A `cyan proxy run` process with its own home and listen port.
pub struct TestProxy {
    pub home: PathBuf,
    pub port: u16,
    pub child: Child,
}

impl TestProxy {
    pub async fn start(tag: &str) -> TestProxy {
        Self::start_with(tag, &[]).await
    }

    pub async fn start_with(tag: &str, extra: &[&str]) -> TestProxy {
        let (home, port) = Self::new_home(tag);
        let child = spawn_proxy(&home, extra);
        let p = TestProxy { home, port, child };
        p.wait_ready().await;
        p
    }

    /// A proxy that also listens on its port for host-routed apps
    /// (`--listen`), where a host no route serves answers 404: on a route's
    /// own listen address, any host reaches that route (it owns it).
    pub async fn start_listening(tag: &str) -> TestProxy {
        Self::start_listening_with(tag, &[]).await
    }

    /// `start_listening`, with more `cyan proxy run` flags.
    pub async fn start_listening_with(tag: &str, extra: &[&str]) -> TestProxy {
        let (home, port) = Self::new_home(tag);
        let listen = format!("127.0.0.1:{port}");
        let child = spawn_proxy(&home, &[&["--listen", listen.as_str()], extra].concat());
        let p = TestProxy { home, port, child };
        p.wait_ready().await;
        p
    }

    /// A new, empty home for a proxy tagged `tag`, and a free port for it.
    pub fn new_home(tag: &str) -> (PathBuf, u16) {
        let home = std::env::temp_dir().join(format!("cyan-proxy-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        (home, super::free_port())
    }

    pub async fn wait_ready(&self) {
        wait::until_async(
            "the proxy to come up",
            Duration::from_secs(10),
            Duration::from_millis(20),
            async || self.admin().health().await.ok().map(drop),
            async || String::new(),
        )
        .await
    }

    pub fn admin(&self) -> AdminClient {
        AdminClient::new(&Home {
            dir: self.home.clone(),
        })
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Route `app` on this proxy's port: blue and green upstreams, blue live.
    pub async fn route(
        &self,
        app: &str,
        policy: RoutePolicy,
        blue: Vec<SocketAddr>,
        green: Vec<SocketAddr>,
    ) {
        let admin = self.admin();
        let spec = RouteSpec {
            listen: Some(self.addr().parse().unwrap()),
            policy,
            ..host_route(&[&format!("{app}.localhost")])
        };
        admin.put_route(app, &spec).await.unwrap();
        admin
            .set_color(
                app,
                Color::Green,
                green.into_iter().map(Into::into).collect(),
            )
            .await
            .unwrap();
        self.switch(app, Color::Blue, Some(blue)).await;
    }

    /// Routes `app` by its host `{app}.localhost` only, on no listen address
    /// of its own, live on blue at `upstreams`.
    pub async fn route_by_host(&self, app: &str, upstreams: Vec<SocketAddr>) {
        let spec = host_route(&[&format!("{app}.localhost")]);
        self.put_live(app, &spec, upstreams).await;
    }

    /// Puts `app`'s route as `spec`, live on blue at `upstreams`.
    pub async fn put_live(&self, app: &str, spec: &RouteSpec, upstreams: Vec<SocketAddr>) {
        self.admin().put_route(app, spec).await.unwrap();
        self.switch(app, Color::Blue, Some(upstreams)).await;
    }

    pub async fn switch(&self, app: &str, color: Color, upstreams: Option<Vec<SocketAddr>>) {
        let req = SwitchRequest {
            color,
            upstreams: upstreams.map(|u| u.into_iter().map(Into::into).collect()),
            record: None,
            route: None,
        };
        self.admin().switch(app, &req).await.unwrap();
    }

    /// `app`'s counters on `color`, once no request is in flight (or after
    /// a second).
    pub async fn stats(&self, app: &str, color: Color) -> StatsView {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let view = self.admin().route(app).await.unwrap().unwrap();
            let stats = view.stats[&color].clone();
            if stats.inflight == 0 || Instant::now() > deadline {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `cyan proxy upgrade` to this test build of cyan: the answer, which
    /// names this process as the old one and another as the new.
    pub async fn upgrade(&self) -> UpgradeResponse {
        let r = self
            .admin()
            .upgrade(Path::new(env!("CARGO_BIN_EXE_cyan")))
            .await
            .unwrap();
        assert_eq!(r.old_pid, self.child.id());
        assert_ne!(r.new_pid, r.old_pid);
        r
    }

    /// Waits (10 s at most) for the process an upgrade replaced to drain
    /// and exit.
    pub async fn wait_old_exited(&mut self) {
        wait::until_async(
            "the old proxy to exit",
            Duration::from_secs(10),
            Duration::from_millis(50),
            async || self.child.try_wait().unwrap().map(drop),
            async || String::new(),
        )
        .await
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        let _ = self.child.wait();
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        // Stops whichever process serves now (an upgrade's successor too).
        let _ = proxy_ctl("stop", &self.home);
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// A route by `hosts` alone: no listen address of its own, the default
/// policy, no TLS.
pub fn host_route(hosts: &[&str]) -> RouteSpec {
    RouteSpec {
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        listen: None,
        path_prefix: None,
        policy: RoutePolicy::default(),
        tls: None,
        preview: None,
    }
}

/// `cyan proxy run --home <home>`, to be given more flags and spawned:
/// RUST_LOG unset, its output dropped.
pub fn proxy_run(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cyan"));
    cmd.args(["proxy", "run", "--home"])
        .arg(home)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

pub fn spawn_proxy(home: &Path, extra: &[&str]) -> Child {
    proxy_run(home)
        .args(["--drain-timeout", "5s"])
        .args(extra)
        .spawn()
        .unwrap()
}

/// `cyan proxy <command> --home <home>` (`stop`, `reload`), run to its end.
pub fn proxy_ctl(command: &str, home: &Path) -> std::io::Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_cyan"))
        .args(["proxy", command, "--home"])
        .arg(home)
        .env_remove("RUST_LOG")
        .output()
}

/// A raw HTTP/1.1 exchange: the whole response as text.
pub async fn raw(addr: &str, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

pub async fn get(addr: &str, host: &str, path: &str) -> String {
    raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

pub fn body(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// A WebSocket client's upgrade request for `/ws` on `host`.
pub fn ws_hello(host: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
}

/// A WebSocket client over the proxy.
pub struct Ws(pub TcpStream);

impl Ws {
    pub async fn open(addr: &str, host: &str) -> Ws {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(ws_hello(host).as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        Ws(s)
    }

    pub async fn send(&mut self, text: &str) {
        let mut f = vec![0x81, 0x80 | text.len() as u8, 9, 8, 7, 6];
        f.extend(
            text.bytes()
                .enumerate()
                .map(|(i, b)| b ^ [9, 8, 7, 6][i % 4]),
        );
        self.0.write_all(&f).await.unwrap();
    }

    /// The next frame: (opcode, payload).
    pub async fn recv(&mut self) -> (u8, Vec<u8>) {
        self.next_frame().await.unwrap()
    }

    /// The next frame (small ones only: a 7-bit length), or the error that
    /// ended the connection before it.
    pub async fn next_frame(&mut self) -> std::io::Result<(u8, Vec<u8>)> {
        let mut head = [0u8; 2];
        self.0.read_exact(&mut head).await?;
        let mut payload = vec![0u8; usize::from(head[1] & 0x7f)];
        self.0.read_exact(&mut payload).await?;
        Ok((head[0] & 0x0f, payload))
    }
}
