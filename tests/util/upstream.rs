//! Small upstreams on 127.0.0.1 that speak raw HTTP/1.1 themselves, for
//! framings hyper's server does not make on request: one that answers every
//! request head with the same bytes, and one that records every request
//! (head, decoded body, the connection it came on, bytes left over) and
//! answers each by a script of writes and waits.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::raw::{find, header_values, serve_each, take_request, Take};

/// Answers each request head it reads with `response`, as is (then closes
/// the connection, if `close`); what came with the head is not read as a
/// body.
pub async fn answering(response: impl Into<Vec<u8>>, close: bool) -> SocketAddr {
    let response: Arc<[u8]> = response.into().into();
    serve_each(move |mut stream| {
        let response = response.clone();
        async move {
            let mut seen = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                match stream.read(&mut chunk).await {
                    Ok(n) if n > 0 => seen.extend_from_slice(&chunk[..n]),
                    _ => return,
                }
                while let Some(end) = find(&seen, b"\r\n\r\n") {
                    seen.drain(..end + 4);
                    if stream.write_all(&response).await.is_err() || close {
                        return;
                    }
                }
            }
        }
    })
    .await
}

/// A 200 response with a fixed-length body.
pub fn fixed(body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

/// One request as the upstream read it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Which of the upstream's connections it came on, from 0.
    pub conn: usize,
    pub head: String,
    /// Decoded: without chunked framing.
    pub body: Vec<u8>,
    /// Why the upstream could not frame its body, if it could not (it then
    /// closed the connection unanswered).
    pub bad: Option<String>,
}

impl Seen {
    pub fn start_line(&self) -> String {
        self.head
            .split("\r\n")
            .next()
            .unwrap_or_default()
            .to_string()
    }

    pub fn path(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or_default()
    }

    pub fn headers(&self, name: &str) -> Vec<String> {
        header_values(&self.head, name)
    }

    /// The names of its headers, as sent.
    pub fn names(&self) -> Vec<String> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .map(|(k, _)| k.to_string())
            .collect()
    }
}

/// What an upstream does for one request, in order.
pub enum Step {
    Write(Vec<u8>),
    Wait(Duration),
}

#[derive(Default)]
struct Log {
    requests: Vec<Seen>,
    /// Per connection: bytes read that are not (yet) a whole request.
    pending: Vec<Vec<u8>>,
    connections: usize,
    bytes: usize,
}

/// The steps for one request; `None`: close the connection unanswered.
type Script = Arc<dyn Fn(&Seen) -> Option<Vec<Step>> + Send + Sync>;

/// A raw HTTP/1.1 server that records every request and answers each,
/// once whole, by its script.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    log: Arc<Mutex<Log>>,
}

impl Upstream {
    /// Answers every request with `name` as its body.
    pub async fn named(name: &'static str) -> Upstream {
        Self::answering(fixed(name.as_bytes())).await
    }

    /// Answers every request with `response`, as is.
    pub async fn answering(response: impl Into<Vec<u8>>) -> Upstream {
        let response = response.into();
        Self::with(move |_| Some(response.clone())).await
    }

    /// Answers each request with what `reply` returns for it (`None`: closes
    /// the connection unanswered).
    pub async fn with(
        reply: impl Fn(&Seen) -> Option<Vec<u8>> + Send + Sync + 'static,
    ) -> Upstream {
        Self::serve(Arc::new(move |seen| {
            reply(seen).map(|r| vec![Step::Write(r)])
        }))
        .await
    }

    /// Answers each request with the steps `script` gives for it.
    pub async fn scripted(script: impl Fn(&Seen) -> Vec<Step> + Send + Sync + 'static) -> Upstream {
        Self::serve(Arc::new(move |seen| Some(script(seen)))).await
    }

    async fn serve(script: Script) -> Upstream {
        let log: Arc<Mutex<Log>> = Arc::default();
        let served = log.clone();
        let addr = serve_each(move |stream| {
            let conn = {
                let mut l = served.lock().unwrap();
                l.connections += 1;
                l.pending.push(Vec::new());
                l.connections - 1
            };
            serve_recorded(stream, conn, served.clone(), script.clone())
        })
        .await;
        Upstream { addr, log }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.log.lock().unwrap().requests.clone()
    }

    /// Every byte it read, on all its connections.
    pub fn bytes(&self) -> usize {
        self.log.lock().unwrap().bytes
    }

    /// Bytes left over on each connection that are not a whole request.
    pub fn pending(&self) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log.pending
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect()
    }

    /// What it received, for failure messages.
    pub fn report(&self) -> String {
        let log = self.log.lock().unwrap();
        let mut out = format!(
            "upstream got {} bytes on {} connections, {} requests",
            log.bytes,
            log.connections,
            log.requests.len()
        );
        for r in &log.requests {
            out += &format!(
                "\n  [conn {}] {:?} body {:?}{}",
                r.conn,
                r.head,
                String::from_utf8_lossy(&r.body),
                r.bad
                    .as_ref()
                    .map_or(String::new(), |b| format!(" (unframeable: {b})"))
            );
        }
        for p in log.pending.iter().filter(|p| !p.is_empty()) {
            out += &format!("\n  left over: {:?}", String::from_utf8_lossy(p));
        }
        out
    }
}

async fn serve_recorded(mut s: TcpStream, conn: usize, log: Arc<Mutex<Log>>, script: Script) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        loop {
            let (seen, used) = match take_request(&buf) {
                Take::Partial => break,
                Take::Whole { head, body, used } => {
                    let seen = Seen {
                        conn,
                        head: String::from_utf8_lossy(&head).into_owned(),
                        body,
                        bad: None,
                    };
                    (seen, used)
                }
                Take::Bad { head, why } => {
                    let seen = Seen {
                        conn,
                        head: String::from_utf8_lossy(&head).into_owned(),
                        body: Vec::new(),
                        bad: Some(why),
                    };
                    (seen, head.len())
                }
            };
            buf.drain(..used);
            {
                let mut l = log.lock().unwrap();
                l.requests.push(seen.clone());
                l.pending[conn] = buf.clone();
            }
            if seen.bad.is_some() {
                return;
            }
            let Some(steps) = script(&seen) else {
                return;
            };
            for step in steps {
                match step {
                    Step::Write(bytes) => {
                        if s.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                    Step::Wait(d) => tokio::time::sleep(d).await,
                }
            }
        }
        log.lock().unwrap().pending[conn] = buf.clone();
        let n = match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        log.lock().unwrap().bytes += n;
        buf.extend_from_slice(&chunk[..n]);
    }
}
