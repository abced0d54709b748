//! `cyan proxy boot`: the proxy as a container instead of a host process.
//!
//! The image is built offline from the static cyan binary itself
//! (`FROM scratch`, nothing pulled). The container uses the host's network
//! (it listens on host ports and reaches upstreams published on 127.0.0.1),
//! the host's pid and UTS namespaces (the deploy lock checks holders' pids
//! and host name), and bind-mounts the proxy home at the same path, so the
//! state survives the container and the CLI finds the admin socket where it
//! always does (and the host's CA roots, read-only, for ACME). It also gets
//! the engine's socket: the proxy follows the app containers through it
//! (`platform::follow`), as a host process would. That gives the container
//! the engine's power, as any Docker-aware proxy (Traefik's provider) has;
//! a host process under systemd (`cyan proxy install`) is the alternative. Docker restarts it (`unless-stopped`) after a crash or reboot.

use std::collections::HashMap;
use std::path::Path;

use bollard::models::{ContainerCreateBody, HostConfig, RestartPolicy, RestartPolicyNameEnum};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::client::AdminClient;
use super::Home;
use crate::error::{Error, Result};
use crate::output::Output;

/// What `boot` did.
#[derive(Debug, Serialize)]
pub struct Booted {
    pub container: String,
    pub image: String,
    /// `started`, `replaced` or `running` (already up with this image).
    pub action: &'static str,
}

/// The host a proxy container is booted on, as this process reaches it.
pub struct Site {
    /// The proxy's home, a path on that host.
    pub home: Home,
    /// Its admin API, as this process reaches it.
    pub admin: AdminClient,
    /// The Docker engine's socket, a path on that host.
    pub engine_socket: String,
    /// This machine: the home is created here, and the CA roots are bound
    /// only when this machine has them (another host's are bound as they
    /// are).
    pub here: bool,
}

impl Site {
    /// This machine, with the engine `DOCKER_HOST` names (or the default).
    pub fn here(home: &Home) -> Site {
        Site {
            home: home.clone(),
            admin: AdminClient::new(home),
            engine_socket: engine_socket(),
            here: true,
        }
    }
}

/// Creates (or replaces, when the image changed) the proxy container for
/// `home`, running `binary`, and waits until it answers.
pub async fn boot(
    docker: &Docker,
    home: &Home,
    binary: &Path,
    args: &[String],
    out: &Output,
) -> Result<Booted> {
    boot_at(docker, &Site::here(home), binary, args, out).await
}

/// `boot` on `site`, whose engine `docker` is.
pub async fn boot_at(
    docker: &Docker,
    site: &Site,
    binary: &Path,
    args: &[String],
    out: &Output,
) -> Result<Booted> {
    let home = &site.home;
    let bytes = std::fs::read(binary)
        .map_err(|e| Error::Config(format!("cannot read {}: {e}", binary.display())))?;
    if is_dynamic(&bytes) {
        return Err(Error::Config(format!(
            "{} is dynamically linked, so it cannot run in a FROM scratch image; build a static cyan \
             (scripts/build-static) and pass it with --binary",
            binary.display()
        )));
    }
    if home.dir.to_string_lossy().contains(':') {
        // The engine's bind-mount syntax is `host:container[:mode]`.
        return Err(Error::Config(format!(
            "{}: a home with ':' in its path cannot be bind-mounted into the proxy container; \
             choose another --home",
            home.dir.display()
        )));
    }
    if site.here {
        home.create()
            .map_err(|e| Error::Platform(format!("cannot create {}: {e}", home.dir.display())))?;
    }
    let digest = hex(&Sha256::digest(&bytes));
    let image = format!("cyan-proxy:{}-{}", env!("CARGO_PKG_VERSION"), &digest[..12]);
    let name = container_name(home);

    let current = docker.inspect_container(&name, None).await.ok();
    if let Some(c) = &current {
        let same_image = c.config.as_ref().and_then(|c| c.image.as_deref()) == Some(image.as_str());
        let running = c.state.as_ref().and_then(|s| s.running) == Some(true);
        if same_image && running {
            return Ok(Booted {
                container: name,
                image,
                action: "running",
            });
        }
    }
    if current.is_none() {
        if let Ok(h) = site.admin.health().await {
            return Err(Error::Refused(format!(
                "a cyan proxy (pid {}) already serves {} as a host process; stop it first (cyan proxy stop)",
                h.pid,
                home.dir.display()
            )));
        }
    }

    if docker.inspect_image(&image).await.is_err() {
        out.phase(format!("build {image} (FROM scratch)"));
        build_image(docker, &image, &bytes, out).await?;
        out.done(format!("built {image}"));
    }
    if current.is_some() {
        out.phase(format!(
            "replace {name} (state stays in {})",
            home.dir.display()
        ));
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        docker.remove_container(&name, Some(opts)).await?;
    } else {
        out.phase(format!("start {name}"));
    }
    create(docker, &name, &image, site, args).await?;
    docker.start_container(&name, None).await?;
    // Another host's proxy starts over SSH, on that host's disk and cores.
    let within = std::time::Duration::from_secs(if site.here { 15 } else { 60 });
    super::client::wait_healthy_for(
        site.admin.clone(),
        &format!("the proxy container {name}"),
        within,
    )
    .await
    .map_err(|e| Error::Platform(format!("{e}; see `docker logs {name}`")))?;
    out.done(format!("{name} serves {}", home.dir.display()));
    Ok(Booted {
        container: name,
        image,
        action: if current.is_some() {
            "replaced"
        } else {
            "started"
        },
    })
}

/// One proxy container per home folder.
pub fn container_name(home: &Home) -> String {
    let h = hex(&Sha256::digest(home.dir.display().to_string().as_bytes()));
    format!("cyan-proxy-{}", &h[..8])
}

async fn build_image(docker: &Docker, tag: &str, binary: &[u8], out: &Output) -> Result<()> {
    let dockerfile = "FROM scratch\nCOPY cyan /cyan\nENTRYPOINT [\"/cyan\"]\n";
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: &str, mode: u32, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_cksum();
        tar.append_data(&mut header, path, data)
    };
    add("Dockerfile", 0o644, dockerfile.as_bytes())
        .and_then(|()| add("cyan", 0o755, binary))
        .map_err(|e| Error::Build(format!("cannot pack the proxy image: {e}")))?;
    let tar = tar
        .into_inner()
        .map_err(|e| Error::Build(format!("cannot pack the proxy image: {e}")))?;
    let labels = HashMap::from([("cyan.role".to_string(), "proxy".to_string())]);
    let opts = BuildImageOptionsBuilder::default()
        .t(tag)
        .rm(true)
        .forcerm(true)
        .labels(&labels)
        .build();
    crate::image::run_build(docker, opts, tar, out)
        .await
        .map(drop)
}

async fn create(
    docker: &Docker,
    name: &str,
    image: &str,
    site: &Site,
    args: &[String],
) -> Result<()> {
    let dir = site.home.dir.display().to_string();
    let mut cmd = vec![
        "proxy".to_string(),
        "run".into(),
        "--home".into(),
        dir.clone(),
    ];
    cmd.extend(args.iter().cloned());
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(cmd),
        env: Some(vec![format!("DOCKER_HOST=unix://{}", site.engine_socket)]),
        labels: Some(HashMap::from([
            ("cyan.role".to_string(), "proxy".to_string()),
            ("cyan.home".to_string(), dir.clone()),
        ])),
        host_config: Some(HostConfig {
            network_mode: Some("host".into()),
            pid_mode: Some("host".into()),
            uts_mode: Some("host".into()),
            binds: Some(binds(&dir, site)),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let opts = CreateContainerOptionsBuilder::default().name(name).build();
    docker.create_container(Some(opts), body).await?;
    Ok(())
}

/// The engine's socket on this host: `DOCKER_HOST`'s when it names one,
/// else the default.
fn engine_socket() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_string))
        .unwrap_or_else(|| "/var/run/docker.sock".into())
}

/// The proxy's home at the same path; the engine's socket, so the proxy
/// follows containers that restart on new ports (`platform::follow`); and
/// the host's CA roots, read-only, where a FROM scratch image has none (the
/// ACME CA's HTTPS needs them).
fn binds(home: &str, site: &Site) -> Vec<String> {
    let socket = &site.engine_socket;
    let mut binds = vec![format!("{home}:{home}"), format!("{socket}:{socket}")];
    if !site.here || Path::new(HOST_ROOTS).is_dir() {
        binds.push(format!("{HOST_ROOTS}:{HOST_ROOTS}:ro"));
    }
    binds
}

/// Where Debian and most distributions keep the system's CA roots.
const HOST_ROOTS: &str = "/etc/ssl/certs";

/// An ELF executable that names a program interpreter (`PT_INTERP`) needs
/// the dynamic loader and libc at run time.
fn is_dynamic(elf: &[u8]) -> bool {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    // 64-bit little-endian ELF only: what this build targets.
    if elf.get(..5) != Some(&[0x7f, b'E', b'L', b'F', 2][..]) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..usize::from(phnum)).any(|i| {
        let at = phoff as usize + i * usize::from(phentsize);
        u32_at(at) == Some(3) // PT_INTERP
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamically_linked_binary_is_told_apart() {
        let this_test = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(
            is_dynamic(&this_test),
            "test binaries link glibc dynamically"
        );
        assert!(!is_dynamic(b"#!/bin/sh\n"));
        let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo/build/cyan-demo");
        if let Ok(bytes) = std::fs::read(demo) {
            assert!(!is_dynamic(&bytes), "the demo binary is built static");
        }
    }
}
