//! One host of the fleet, connected: its SSH tunnel, its Docker engine and
//! its cyan proxy (booted as a container when none answers).

use std::path::PathBuf;
use std::sync::Arc;

use bollard::Docker;

use super::ssh::Tunnel;
use crate::config::{HostEntry, Loaded};
use crate::error::{Error, Result};
use crate::output::Output;
use crate::proxy::boot::{self, Site};
use crate::proxy::client::AdminClient;
use crate::proxy::Home;

/// Where the engine listens on a fleet host.
const REMOTE_ENGINE: &str = "/var/run/docker.sock";

/// A connected host. Its engine and proxy are reached through `tunnel`,
/// which closes when the last clone of it is dropped.
#[derive(Clone)]
pub struct Host {
    pub name: String,
    pub url: String,
    pub tunnel: Arc<Tunnel>,
    pub docker: Docker,
    pub proxy: AdminClient,
}

impl Host {
    /// Connects to `entry`, checks its engine answers, and makes sure its
    /// cyan proxy runs (booting it as a container from this cyan binary,
    /// or `CYAN_PROXY_BINARY`, when none answers).
    ///
    /// Errors: `Error::Unreachable` naming the host and why (ssh's words,
    /// or the engine's), `Error::Config` for a binary that cannot run in
    /// the proxy's image.
    pub async fn connect(entry: &HostEntry, cfg: &Loaded, out: &Output) -> Result<Host> {
        let fleet = &cfg.config.fleet;
        let home = Home {
            dir: fleet.home.clone(),
        };
        let tunnel = Tunnel::open(
            &entry.url,
            &fleet.ssh,
            &cfg.dir(),
            REMOTE_ENGINE.as_ref(),
            &home.socket(),
        )
        .await
        .map_err(|e| e.with_text(format!("host {}: {e}", entry.name)))?;
        let at = |e: &dyn std::fmt::Display| {
            Error::Unreachable(format!("host {} ({}): {e}", entry.name, entry.url))
        };
        let socket = tunnel.engine_socket().display().to_string();
        let docker = Docker::connect_with_unix(&socket, 120, bollard::API_DEFAULT_VERSION)
            .map_err(|e| at(&e))?
            .negotiate_version()
            .await
            .map_err(|e| at(&format!("its Docker engine does not answer: {e}")))?;
        let proxy = AdminClient::at(tunnel.admin_socket());
        if proxy.health().await.is_err() {
            let binary = proxy_binary()?;
            out.phase(format!("boot the cyan proxy on {}", entry.name));
            let site = Site {
                home,
                admin: proxy.clone(),
                engine_socket: REMOTE_ENGINE.into(),
                here: false,
            };
            let booted = boot::boot_at(&docker, &site, &binary, &[], out)
                .await
                .map_err(|e| {
                    at(&format!(
                        "cannot start its cyan proxy: {e} (on a fleet, CYAN_PROXY_BINARY names the static cyan to boot it from)"
                    ))
                })?;
            out.done(format!(
                "{}: {} {}",
                entry.name, booted.action, booted.container
            ));
        }
        Ok(Host {
            name: entry.name.clone(),
            url: entry.url.to_string(),
            tunnel: Arc::new(tunnel),
            docker,
            proxy,
        })
    }
}

/// The static cyan binary a host's proxy container runs: `CYAN_PROXY_BINARY`,
/// else this one.
fn proxy_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("CYAN_PROXY_BINARY") {
        return Ok(PathBuf::from(p));
    }
    std::env::current_exe().map_err(|e| {
        Error::Platform(format!(
            "cannot find the cyan binary to boot a host's proxy: {e}; set CYAN_PROXY_BINARY"
        ))
    })
}
