//! The connection to the Docker engine, and the refusal of a remote one.
//!
//! Every Docker command on this machine starts here, and so does the
//! proxy's check for its own container: one place decides which engine
//! `DOCKER_HOST` may name. Other machines are a fleet's hosts, each reached
//! with its proxy over one SSH connection (`fleet::Host`).

use bollard::Docker;

use crate::error::{Error, Result};

/// Connects to the engine named by `DOCKER_HOST` (or the local socket) and
/// agrees on an API version both sides speak.
///
/// Errors: `Error::Config` for a `DOCKER_HOST` on another machine;
/// `Error::Unreachable` when no engine answers.
pub async fn connect() -> Result<Docker> {
    if let Ok(host) = std::env::var("DOCKER_HOST") {
        check_local(&host)?;
    }
    let docker = Docker::connect_with_defaults().map_err(|e| {
        Error::Unreachable(format!(
            "cannot reach the Docker engine: {e}. Is DOCKER_HOST right?"
        ))
    })?;
    docker.negotiate_version().await.map_err(|e| {
        Error::Unreachable(format!(
            "cannot reach the Docker engine: {e}. Is dockerd running, and is DOCKER_HOST right?"
        ))
    })
}

/// Refuses an engine on another machine: the cyan proxy runs beside the CLI
/// and reaches containers on their 127.0.0.1-published ports, so a remote
/// engine would pass no gate and route nowhere.
fn check_local(docker_host: &str) -> Result<()> {
    let local = match docker_host.split_once("://") {
        Some(("unix" | "npipe", _)) => true,
        Some(("tcp" | "http" | "https", rest)) => {
            let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
            matches!(host, "localhost" | "[::1]") || host.starts_with("127.")
        }
        _ => docker_host.is_empty(),
    };
    if local {
        return Ok(());
    }
    Err(Error::Config(format!(
        "DOCKER_HOST={docker_host} is not on this machine. cyan drives the engine where its proxy runs: \
         to deploy to other machines, list them under hosts: in cyan.yaml (ssh://user@host; README, \
         \"Several servers behind a load balancer\"), or run cyan on the Docker host itself"
    )))
}

#[cfg(test)]
mod tests {
    use super::check_local;

    #[test]
    fn only_engines_on_this_machine_are_driven() {
        for ok in [
            "",
            "unix:///var/run/docker.sock",
            "tcp://127.0.0.1:2375",
            "tcp://localhost:2375",
            "tcp://[::1]:2375",
        ] {
            assert!(check_local(ok).is_ok(), "{ok}");
        }
        for remote in [
            "ssh://deploy@web1",
            "tcp://10.0.0.5:2376",
            "tcp://web1:2375",
        ] {
            let e = check_local(remote).unwrap_err().to_string();
            assert!(e.contains("not on this machine"), "{remote}: {e}");
        }
    }
}
