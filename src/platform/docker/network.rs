//! The network app containers join, so a containerized proxy can reach
//! them too: `cyan`, or `CYAN_NETWORK` (to keep a group of apps apart).
//!
//! It has a file of its own because making it is not a plain create: the
//! engine's duplicate-name check races, so creation is serialized across
//! cyan processes by a host-wide lock, and duplicates are healed.

use std::collections::HashMap;

use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::ListNetworksOptionsBuilder;

use super::{label, short_id, DockerPlatform};
use crate::error::{Error, Result};

/// The network's name: `cyan`, or `CYAN_NETWORK`.
fn name() -> String {
    std::env::var("CYAN_NETWORK").unwrap_or_else(|_| "cyan".into())
}

impl DockerPlatform<'_> {
    /// Makes sure exactly one app network exists, and returns its id.
    ///
    /// The engine's duplicate-name check races: concurrent creates (two
    /// first deploys at once on a fresh host) can make two networks named
    /// `cyan`, and then every container start on it fails as "ambiguous",
    /// even when created by id. So creation is serialized across cyan
    /// processes by a host-wide file lock, and duplicates left by older
    /// versions are healed: the oldest is kept, the empty others removed.
    pub async fn ensure_network(&self) -> Result<String> {
        let name = name();
        // One lock per engine: a fleet's hosts are made at once, each by
        // its own lock (one shared name deadlocked them in this process).
        let engine = match &self.tunnel {
            Some(t) => format!(
                "-{}",
                t.url()
                    .to_string()
                    .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
            ),
            None => String::new(),
        };
        let _lock = HostLock::take(&format!("cyan-network-{name}{engine}"))?;
        if let Some(id) = self.cyan_network(&name).await? {
            return Ok(id);
        }
        let mut labels = HashMap::new();
        labels.insert(label::MANAGED.to_string(), "true".to_string());
        let req = NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".into()),
            labels: Some(labels),
            ..NetworkCreateRequest::default()
        };
        match self.docker.create_network(req).await {
            Ok(_) => {}
            // Created at the same moment by something that is not cyan.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => {}
            Err(e) => return Err(e.into()),
        }
        self.cyan_network(&name).await?.ok_or_else(|| {
            Error::Platform(format!(
                "the {name} network vanished right after it was created"
            ))
        })
    }

    /// The oldest network named exactly `name`; younger duplicates are
    /// removed (one with containers attached cannot be, and is reported).
    async fn cyan_network(&self, name: &str) -> Result<Option<String>> {
        let filters = HashMap::from([("name".to_string(), vec![name.to_string()])]);
        let opts = ListNetworksOptionsBuilder::default()
            .filters(&filters)
            .build();
        let mut found: Vec<_> = self
            .docker
            .list_networks(Some(opts))
            .await?
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .filter_map(|n| Some((n.created, n.id?)))
            .collect();
        found.sort();
        let mut ids = found.into_iter().map(|(_, id)| id);
        let oldest = ids.next();
        for duplicate in ids {
            if let Err(e) = self.docker.remove_network(&duplicate).await {
                return Err(Error::Platform(format!(
                    "there are several Docker networks named {name}, and duplicate {} cannot be removed ({e}); remove the extra ones with `docker network rm`",
                    short_id(&duplicate)
                )));
            }
        }
        Ok(oldest)
    }
}

/// An exclusive lock shared by every cyan process on this machine (flock
/// on a file in the temp folder), released when dropped. For another
/// host's engine it serializes this machine's cyan processes only; the
/// duplicates another machine's could make are healed (`cyan_network`).
struct HostLock {
    /// Held for its lifetime: closing it releases the lock.
    _file: std::fs::File,
}

impl HostLock {
    fn take(name: &str) -> Result<HostLock> {
        use std::os::fd::AsRawFd;
        let path = std::env::temp_dir().join(format!("{name}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::Platform(format!("cannot open {}: {e}", path.display())))?;
        // SAFETY: flock on a file descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Error::Platform(format!(
                "cannot lock {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            )));
        }
        Ok(HostLock { _file: file })
    }
}
