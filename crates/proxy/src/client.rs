//! The admin API client, and starting a proxy when none is running.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;

use super::api::{
    CandidateRequest, ColorSpec, DrainingSpec, ErrorBody, Health, HoldRequest, LockRequest,
    MaintenanceSpec, ReloadResponse, RemoveRequest, RouteSpec, SwitchRequest, SwitchResponse,
    UpgradeRequest, UpgradeResponse,
};
use super::lease::Lock;
use super::router::RouteView;
use super::state::Maintenance;
use super::Home;
use crate::error::{Error, Result};
use cyan_plan::release::Color;

/// How long one admin request may take, from connect to its last byte. The
/// slowest answer the proxy gives is an upgrade's: up to 10 s for its
/// predecessor to go quiet and 15 s for the successor to answer. A proxy
/// that was stopped (SIGSTOP) or hangs still accepts on its socket: with
/// no deadline, `cyan status` waited for ever.
const DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct AdminClient {
    socket: PathBuf,
    deadline: Duration,
}

impl AdminClient {
    pub fn new(home: &Home) -> AdminClient {
        AdminClient::at(home.socket())
    }

    /// A client of the admin socket at `socket`: another host's proxy,
    /// reached through a forwarded socket.
    pub fn at(socket: PathBuf) -> AdminClient {
        AdminClient {
            socket,
            deadline: DEADLINE,
        }
    }

    /// One request and its whole answer, within `DEADLINE`;
    /// `Error::Unreachable` when the proxy does not answer (in time).
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes)> {
        tokio::time::timeout(self.deadline, self.exchange(method, path, body))
            .await
            .unwrap_or_else(|_| {
                Err(Error::Unreachable(format!(
                    "the cyan proxy did not answer on {} within {}s: it may be stopped or hung (see its log; `cyan proxy status`)",
                    self.socket.display(),
                    self.deadline.as_secs()
                )))
            })
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes)> {
        let unreachable = |e: &dyn std::fmt::Display| {
            Error::Unreachable(format!(
                "the cyan proxy is not answering on {}: {e}",
                self.socket.display()
            ))
        };
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| unreachable(&e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(&e))?;
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "cyan-proxy")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("valid admin request");
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| unreachable(&e))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(&e))?
            .to_bytes();
        Ok((status, bytes))
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        let body = body.map(|b| serde_json::to_vec(b).expect("serializable"));
        let (status, bytes) = self.request(method, path, body).await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                Error::Platform(format!("unexpected answer from the proxy to {path}: {e}"))
            });
        }
        let err: ErrorBody = serde_json::from_slice(&bytes).unwrap_or(ErrorBody {
            error: String::from_utf8_lossy(&bytes).into_owned(),
            lock: None,
        });
        Err(match status {
            StatusCode::CONFLICT if err.lock.is_some() => Error::LockHeld(err.error),
            StatusCode::CONFLICT => Error::Refused(format!("proxy refused: {}", err.error)),
            // What was asked cannot be: a path prefix, TLS files (config).
            StatusCode::BAD_REQUEST => Error::Config(format!("proxy refused: {}", err.error)),
            // No such route (the app is not deployed through this proxy),
            // or an endpoint an older proxy does not have.
            StatusCode::NOT_FOUND => Error::Refused(format!("proxy refused: {}", err.error)),
            _ => Error::Platform(format!("proxy error on {path} ({status}): {}", err.error)),
        })
    }

    pub async fn health(&self) -> Result<Health> {
        self.call(Method::GET, "/v1/health", None::<&()>).await
    }

    pub async fn route(&self, name: &str) -> Result<Option<RouteView>> {
        let (status, bytes) = self
            .request(Method::GET, &format!("/v1/routes/{name}"), None)
            .await?;
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Platform(format!("unexpected route answer: {e}"))),
            s => Err(Error::Platform(format!(
                "proxy error reading route {name} ({s}): {}",
                String::from_utf8_lossy(&bytes)
            ))),
        }
    }

    pub async fn routes(&self) -> Result<Vec<RouteView>> {
        self.call(Method::GET, "/v1/routes", None::<&()>).await
    }

    /// Reads again the TLS files that changed; returns the renewed routes.
    pub async fn reload(&self) -> Result<ReloadResponse> {
        self.call(Method::POST, "/v1/reload", None::<&()>).await
    }

    pub async fn put_route(&self, name: &str, spec: &RouteSpec) -> Result<()> {
        self.call::<serde_json::Value>(Method::PUT, &format!("/v1/routes/{name}"), Some(spec))
            .await
            .map(drop)
    }

    /// Asks whether `name` could take `spec`'s hosts and listen address;
    /// a conflict is `Error::Config`, naming the app that holds them.
    pub async fn claim(&self, name: &str, spec: &RouteSpec) -> Result<()> {
        let path = format!("/v1/routes/{name}/claim");
        match self
            .call::<serde_json::Value>(Method::POST, &path, Some(spec))
            .await
        {
            Ok(_) => Ok(()),
            Err(Error::Refused(why)) => Err(Error::Config(why)),
            Err(e) => Err(e),
        }
    }

    /// Removes the route, with its record and its lock, which `lock` (a
    /// token) must be, if the route's lock is held.
    pub async fn remove_route(&self, name: &str, lock: Option<&str>) -> Result<()> {
        let path = format!("/v1/routes/{name}");
        let req = RemoveRequest {
            lock: lock.map(str::to_string),
        };
        self.call::<serde_json::Value>(Method::DELETE, &path, Some(&req))
            .await
            .map(drop)
    }

    pub async fn set_color(
        &self,
        name: &str,
        color: Color,
        upstreams: Vec<super::state::Upstream>,
    ) -> Result<()> {
        let path = format!("/v1/routes/{name}/colors/{color}");
        self.call::<serde_json::Value>(Method::PUT, &path, Some(&ColorSpec { upstreams }))
            .await
            .map(drop)
    }

    /// Registers `color`'s gated set as the candidate the route's preview
    /// serves, and sets the preview, in one change (`CandidateRequest`).
    pub async fn set_candidate(&self, name: &str, req: &CandidateRequest) -> Result<()> {
        let path = format!("/v1/routes/{name}/candidate");
        self.call::<serde_json::Value>(Method::PUT, &path, Some(req))
            .await
            .map(drop)
    }

    /// No candidate any more: the route's preview answers 503.
    pub async fn clear_candidate(&self, name: &str) -> Result<()> {
        let path = format!("/v1/routes/{name}/candidate");
        self.call::<serde_json::Value>(Method::DELETE, &path, None::<&()>)
            .await
            .map(drop)
    }

    /// Holds the route's new requests for up to `timeout` (`None`: release).
    pub async fn hold(&self, name: &str, timeout: Option<std::time::Duration>) -> Result<()> {
        let path = format!("/v1/routes/{name}/hold");
        match timeout {
            Some(t) => {
                let req = HoldRequest {
                    timeout_ms: t.as_millis() as u64,
                };
                self.call::<serde_json::Value>(Method::POST, &path, Some(&req))
                    .await
            }
            None => {
                self.call::<serde_json::Value>(Method::DELETE, &path, None::<&()>)
                    .await
            }
        }
        .map(drop)
    }

    /// Turns the route's maintenance page on (`Some`) or off (`None`).
    pub async fn set_maintenance(
        &self,
        name: &str,
        maintenance: Option<Maintenance>,
    ) -> Result<()> {
        let path = format!("/v1/routes/{name}/maintenance");
        self.call::<serde_json::Value>(Method::PUT, &path, Some(&MaintenanceSpec { maintenance }))
            .await
            .map(drop)
    }

    /// Takes the route out of the load balancer in front of this host
    /// (`/cyan/up` answers 503), or puts it back.
    pub async fn set_draining(&self, name: &str, draining: bool) -> Result<()> {
        let path = format!("/v1/routes/{name}/draining");
        self.call::<serde_json::Value>(Method::PUT, &path, Some(&DrainingSpec { draining }))
            .await
            .map(drop)
    }

    pub async fn remove_color(&self, name: &str, color: Color) -> Result<()> {
        let path = format!("/v1/routes/{name}/colors/{color}");
        self.call::<serde_json::Value>(Method::DELETE, &path, None::<&()>)
            .await
            .map(drop)
    }

    pub async fn switch(&self, name: &str, req: &SwitchRequest) -> Result<SwitchResponse> {
        self.call(
            Method::POST,
            &format!("/v1/routes/{name}/switch"),
            Some(req),
        )
        .await
    }

    pub async fn put_record(&self, name: &str, record: &serde_json::Value) -> Result<()> {
        self.call::<serde_json::Value>(
            Method::PUT,
            &format!("/v1/routes/{name}/record"),
            Some(record),
        )
        .await
        .map(drop)
    }

    pub async fn lock(&self, name: &str, req: &LockRequest) -> Result<Lock> {
        self.call(Method::POST, &format!("/v1/routes/{name}/lock"), Some(req))
            .await
    }

    pub async fn unlock(&self, name: &str, token: &str) -> Result<()> {
        self.call::<serde_json::Value>(
            Method::DELETE,
            &format!("/v1/routes/{name}/lock/{token}"),
            None::<&()>,
        )
        .await
        .map(drop)
    }

    /// Hands the proxy over to a new process running `binary`.
    pub async fn upgrade(&self, binary: &std::path::Path) -> Result<UpgradeResponse> {
        let req = UpgradeRequest {
            binary: binary.to_path_buf(),
        };
        self.call(Method::POST, "/v1/upgrade", Some(&req)).await
    }

    pub async fn shutdown(&self) -> Result<()> {
        self.call::<serde_json::Value>(Method::POST, "/v1/shutdown", None::<&()>)
            .await
            .map(drop)
    }
}

/// The variables CI runners mark a job's processes with, to kill them all
/// when the job ends, by scanning every process's environment:
/// - `RUNNER_TRACKING_ID`: GitHub Actions runner (`Constants.ProcessTrackingId`
///   in actions/runner src/Runner.Common/Constants.cs; the job's orphan
///   process cleanup kills every process that carries the job's value);
/// - `VSTS_PROCESS_LOOKUP_ID`: Azure Pipelines agent, the same code's
///   ancestor (`Constants.ProcessLookupId` in microsoft/azure-pipelines-agent,
///   set when `process.clean` is on, the default);
/// - `BUILD_ID`, `JENKINS_NODE_COOKIE`: Jenkins' ProcessTreeKiller, for
///   freestyle jobs and Pipeline `sh` steps (wiki.jenkins.io
///   ProcessTreeKiller: "BUILD_ID=dontKillMe ... In case of Jenkins Pipeline
///   use JENKINS_NODE_COOKIE");
/// - `HUDSON_COOKIE`: Jenkins' `EnvVars.createCookie()`, the model variable
///   launchers kill by.
///
/// GitLab Runner (shell executor), Buildkite and TeamCity agents kill the
/// job's process group or process tree instead: the proxy's own session
/// (`own_session`, its parent gone) already leaves those.
pub const CI_JOB_MARKS: [&str; 5] = [
    "RUNNER_TRACKING_ID",
    "VSTS_PROCESS_LOOKUP_ID",
    "BUILD_ID",
    "JENKINS_NODE_COOKIE",
    "HUDSON_COOKIE",
];

/// Variables that say "this runs in a CI job", besides the marks above.
pub const CI_SIGNS: [&str; 7] = [
    "CI",
    "GITHUB_ACTIONS",
    "GITLAB_CI",
    "JENKINS_URL",
    "BUILDKITE",
    "TF_BUILD",
    "TEAMCITY_VERSION",
];

/// Keeps a proxy started from a CI job out of the job's end-of-job sweep:
/// removes the runners' marks (`CI_JOB_MARKS`) from `cmd`'s environment.
pub fn leave_ci_job(cmd: &mut std::process::Command) {
    for mark in CI_JOB_MARKS {
        cmd.env_remove(mark);
    }
}

/// Whether this cyan runs inside a CI job: a runner's mark or a CI's usual
/// variable is set (`CI=false` or empty says no).
pub fn inside_ci() -> bool {
    CI_JOB_MARKS.iter().chain(&CI_SIGNS).any(|name| {
        std::env::var_os(name)
            .is_some_and(|v| !v.is_empty() && !v.eq_ignore_ascii_case("false") && v != "0")
    })
}

/// Starts `cmd` in a session of its own, as a daemon: with no controlling
/// terminal, a Ctrl-C, a hang-up or a kill of the command that started it
/// leaves the proxy serving. And where the kernel shares CPU between
/// sessions (autogroup, on by default in many distributions), the proxy
/// gets a share of its own instead of one shared with everything else
/// started from that terminal or CI job. On a loaded 2-core host, sharing
/// the load generator's session cost the proxy 10-20% of its requests/s.
pub fn own_session(cmd: &mut std::process::Command) {
    // SAFETY: between fork and exec only setsid, async-signal-safe, runs.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, || {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Polls the proxy's health for up to 15 s.
pub async fn wait_healthy(client: AdminClient, what: &str) -> Result<AdminClient> {
    wait_healthy_for(client, what, Duration::from_secs(15)).await
}

/// Polls the proxy's health for up to `within`.
pub async fn wait_healthy_for(
    client: AdminClient,
    what: &str,
    within: Duration,
) -> Result<AdminClient> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if client.health().await.is_ok() {
            return Ok(client);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(Error::Unreachable(format!(
        "{what} did not answer on {} within {}s",
        client.socket.display(),
        within.as_secs()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A proxy that accepts on its socket and never answers (stopped with
    /// SIGSTOP, or hung): the request ends at its deadline, as an outage.
    #[tokio::test]
    async fn a_proxy_that_never_answers_is_unreachable_at_the_deadline() {
        let dir = std::env::temp_dir().join(format!("cyan-admin-deadline-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("admin.sock");
        let _ = std::fs::remove_file(&socket);
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                open.push(conn);
            }
        });
        let client = AdminClient {
            socket,
            deadline: Duration::from_millis(300),
        };
        let started = Instant::now();
        let err = client.health().await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(matches!(err, Error::Unreachable(_)), "{err:?}");
        assert!(err.to_string().contains("did not answer"), "{err}");
        held.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
