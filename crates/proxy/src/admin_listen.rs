//! Where the admin API listens. Always a Unix socket (mode 0600 in a 0700
//! folder: only its owner can switch traffic). Optionally loopback TCP as
//! well, for tools that cannot reach the socket (another container on the
//! host); every TCP request must then carry `Authorization: Bearer <token>`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};

use super::{admin, Proxy};
use crate::error::{Error, Result};

/// `--admin-listen` with its token.
#[derive(Debug, Clone)]
pub struct TcpAdmin {
    pub addr: SocketAddr,
    /// Where the token was read from, so a successor reads it again.
    pub token_file: PathBuf,
    pub token: Arc<String>,
}

impl TcpAdmin {
    /// Checks the address is loopback and reads the token file.
    pub fn new(addr: SocketAddr, token_file: PathBuf) -> Result<TcpAdmin> {
        if !addr.ip().is_loopback() {
            return Err(Error::Config(format!(
                "--admin-listen {addr}: the admin API switches traffic; it listens on loopback only"
            )));
        }
        let token = std::fs::read_to_string(&token_file)
            .map_err(|e| {
                Error::Config(format!("--admin-token-file {}: {e}", token_file.display()))
            })?
            .trim()
            .to_string();
        if token.len() < 16 {
            return Err(Error::Config(format!(
                "--admin-token-file {}: the token must have at least 16 characters",
                token_file.display()
            )));
        }
        Ok(TcpAdmin {
            addr,
            token_file,
            token: Arc::new(token),
        })
    }
}

pub fn bind_socket(path: &Path) -> Result<UnixListener> {
    // A socket file left by a dead proxy is stale: the process lock proves it.
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|e| {
        Error::Platform(format!("cannot bind admin socket {}: {e}", path.display()))
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::Platform(format!("cannot chmod admin socket: {e}")))?;
    Ok(listener)
}

pub async fn serve_socket(proxy: Arc<Proxy>, listener: UnixListener, generation: u64) {
    serve(proxy, generation, None, || async {
        listener.accept().await.map(|(s, _)| s)
    })
    .await
}

/// Binds the TCP admin port (retrying briefly: during an upgrade the
/// predecessor lets go of it a moment after it stops its admin API).
pub fn spawn_tcp(proxy: Arc<Proxy>, admin: TcpAdmin, generation: u64) -> Result<()> {
    let std_listener = (0..40)
        .find_map(|_| match std::net::TcpListener::bind(admin.addr) {
            Ok(l) => Some(Ok(l)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                std::thread::sleep(Duration::from_millis(50));
                None
            }
            Err(e) => Some(Err(e)),
        })
        .unwrap_or_else(|| Err(std::io::ErrorKind::AddrInUse.into()))
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| Error::Platform(format!("cannot listen for admin on {}: {e}", admin.addr)))?;
    let listener = TcpListener::from_std(std_listener)
        .map_err(|e| Error::Platform(format!("admin listener: {e}")))?;
    let token = admin.token.clone();
    tokio::spawn(async move {
        serve(proxy, generation, Some(token), || async {
            listener.accept().await.map(|(s, _)| s)
        })
        .await
    });
    Ok(())
}

/// Serves admin connections until the proxy stops or the admin API is
/// paused (a newer `generation`).
async fn serve<S, F, Fut>(proxy: Arc<Proxy>, generation: u64, token: Option<Arc<String>>, accept: F)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<S>>,
{
    let mut stop = proxy.stop.subscribe();
    let mut paused = proxy.admin_generation.subscribe();
    loop {
        let stream = tokio::select! {
            r = accept() => match r {
                Ok(s) => s,
                Err(_) => continue,
            },
            _ = stop.changed() => break,
            _ = paused.wait_for(|g| *g != generation) => break,
        };
        let (proxy, token) = (proxy.clone(), token.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let (proxy, token) = (proxy.clone(), token.clone());
                async move {
                    match token {
                        Some(t) if !authorized(&req, &t) => Ok::<_, Infallible>(unauthorized()),
                        _ => admin::handle(proxy, req).await,
                    }
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn authorized(req: &Request<Incoming>, token: &str) -> bool {
    let given = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    constant_time_eq(given.as_bytes(), token.as_bytes())
}

/// Compares without an early exit, so timing does not reveal a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthorized() -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(
        b"{\"error\":\"missing or wrong bearer token\"}",
    )));
    *r.status_mut() = StatusCode::UNAUTHORIZED;
    r.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        hyper::header::HeaderValue::from_static("Bearer"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq(b"secret-token-123", b"secret-token-123"));
        assert!(!constant_time_eq(b"secret-token-124", b"secret-token-123"));
        assert!(!constant_time_eq(b"secret", b"secret-token-123"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn tcp_admin_is_loopback_only_with_a_real_token() {
        let dir = std::env::temp_dir().join(format!("cyan-admin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "short\n").unwrap();
        let lo: SocketAddr = "127.0.0.1:9100".parse().unwrap();
        assert!(TcpAdmin::new(lo, file.clone())
            .unwrap_err()
            .to_string()
            .contains("16"));
        std::fs::write(&file, "0123456789abcdef0123\n").unwrap();
        assert_eq!(
            *TcpAdmin::new(lo, file.clone()).unwrap().token,
            "0123456789abcdef0123"
        );
        let any: SocketAddr = "0.0.0.0:9100".parse().unwrap();
        assert!(TcpAdmin::new(any, file)
            .unwrap_err()
            .to_string()
            .contains("loopback"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
