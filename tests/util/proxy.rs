//! The cyan proxy under test: the real `cyan proxy run` process with its own
//! home and listen port, driven through its admin socket, and raw HTTP/1.1
//! helpers for talking to it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cyan::proxy::api::{RouteSpec, SwitchRequest};
use cyan::proxy::client::AdminClient;
use cyan::proxy::state::RoutePolicy;
use cyan::proxy::Home;
use cyan::release::Color;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
        let home = std::env::temp_dir().join(format!("cyan-proxy-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = spawn_proxy(&home, extra);
        let p = TestProxy { home, port, child };
        p.wait_ready().await;
        p
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.admin().health().await.is_err() {
            assert!(Instant::now() < deadline, "proxy did not come up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
            hosts: vec![format!("{app}.localhost")],
            listen: Some(self.addr().parse().unwrap()),
            path_prefix: None,
            policy,
            tls: None,
        };
        admin.put_route(app, &spec).await.unwrap();
        admin.set_color(app, Color::Green, green).await.unwrap();
        self.switch(app, Color::Blue, Some(blue)).await;
    }

    pub async fn switch(&self, app: &str, color: Color, upstreams: Option<Vec<SocketAddr>>) {
        let req = SwitchRequest {
            color,
            upstreams,
            record: None,
        };
        self.admin().switch(app, &req).await.unwrap();
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        let _ = self.child.wait();
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        // Stops whichever process serves now (an upgrade's successor too).
        let _ = Command::new(env!("CARGO_BIN_EXE_cyan"))
            .args(["proxy", "stop", "--home"])
            .arg(&self.home)
            .output();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

pub fn spawn_proxy(home: &std::path::Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_cyan"))
        .args(["proxy", "run", "--drain-timeout", "5s", "--home"])
        .arg(home)
        .args(extra)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
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
