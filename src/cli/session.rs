//! What every app command sets up first: the config, the Docker engine and
//! the proxy (started if needed). The app's route is not touched here: it
//! changes with a switch (`DockerPlatform::route_spec`), so reading
//! commands never change routing.

use super::{ConfigArg, ImageOverride};
use crate::config::{Config, Loaded, Pick, PlatformKind, Secrets};
use crate::error::{Error, Result};
use crate::fleet::Host;
use crate::output::Output;
use crate::platform::docker::{self, DockerPlatform};
use crate::proxy::autostart;
use crate::proxy::Home;

/// Where a command acts: this machine (its engine and the proxy of this
/// home), or one host of the app's fleet, already connected.
#[derive(Clone, Copy)]
pub enum At<'h> {
    Here(&'h Home),
    Host(&'h Host),
}

/// Loads and checks config, secrets, engine and proxy, in that order, so the
/// cheapest mistakes are reported first.
pub async fn open<'a>(at: At<'_>, cfg: &'a Loaded, out: &'a Output) -> Result<DockerPlatform<'a>> {
    let secrets = read_secrets(at, &cfg.config)?;
    with_secrets(at, cfg, out, secrets).await
}

/// `open` for commands that start no container (`status`, `history`,
/// `remove`): they need no secret values, so a shell without them (an
/// on-call engineer's) can still look and clean up.
pub async fn open_to_read<'a>(
    at: At<'_>,
    cfg: &'a Loaded,
    out: &'a Output,
) -> Result<DockerPlatform<'a>> {
    with_secrets(at, cfg, out, Secrets::default()).await
}

async fn with_secrets<'a>(
    at: At<'_>,
    cfg: &'a Loaded,
    out: &'a Output,
    secrets: Secrets,
) -> Result<DockerPlatform<'a>> {
    let (docker, proxy, tunnel) = match at {
        At::Here(home) => (
            docker::connect().await?,
            autostart::ensure_running(home, out).await?,
            None,
        ),
        At::Host(h) => (h.docker.clone(), h.proxy.clone(), Some(h.tunnel.clone())),
    };
    Ok(DockerPlatform {
        docker,
        proxy,
        tunnel,
        peers: Vec::new(),
        cfg,
        secrets,
        lock_token: String::new(),
        out,
        verdict: Default::default(),
        promoted_from: None,
    })
}

/// Loads `--config` for what every environment shares (`build`, `push`):
/// `--environment` is not needed.
pub fn load_shared(arg: &ConfigArg, o: &ImageOverride) -> Result<Loaded> {
    let pick = Pick {
        environment: arg.environment.clone(),
        platform: None,
        shared_only: true,
    };
    overridden(Config::load(&arg.config, &pick)?, o)
}

/// `config check`: the environment named, else every one of the file's
/// (the first error stops it), else the file as written.
pub fn check(arg: &ConfigArg) -> Result<Vec<Loaded>> {
    if arg.environment.is_some() {
        return Ok(vec![load(arg)?]);
    }
    let first = load_shared(arg, &ImageOverride::default())?;
    let names = first.config.environment_names();
    if names.len() < 2 {
        return Ok(vec![first]);
    }
    names
        .into_iter()
        .map(|environment| {
            load(&ConfigArg {
                environment: Some(environment),
                ..arg.clone()
            })
        })
        .collect()
}

/// Loads `--config` for `--environment`.
pub fn load(arg: &ConfigArg) -> Result<Loaded> {
    load_with(arg, &ImageOverride::default(), None)
}

/// Loads `--config` for `--environment`, with `--image` / `--registry`
/// applied over its `image`, and `--platform` over its `platform`.
pub fn load_with(
    arg: &ConfigArg,
    o: &ImageOverride,
    platform: Option<PlatformKind>,
) -> Result<Loaded> {
    let pick = Pick {
        environment: arg.environment.clone(),
        platform,
        shared_only: false,
    };
    let mut cfg = overridden(Config::load(&arg.config, &pick)?, o)?;
    if let Some(branch) = &arg.branch {
        cfg.config = cfg.config.for_branch(branch)?;
    }
    if !arg.hosts.is_empty() {
        let known: Vec<&str> = cfg.config.hosts.iter().map(|h| h.name.as_str()).collect();
        if let Some(unknown) = arg.hosts.iter().find(|h| !known.contains(&h.as_str())) {
            return Err(Error::Config(format!(
                "--hosts {unknown}: {} has no such host (its hosts: {})",
                cfg.path.display(),
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            )));
        }
        cfg.config.hosts.retain(|h| arg.hosts.contains(&h.name));
    }
    Ok(cfg)
}

fn overridden(mut cfg: Loaded, o: &ImageOverride) -> Result<Loaded> {
    if let Some(image) = &o.image {
        cfg.config.image = image.clone();
    }
    if let Some(registry) = &o.registry {
        cfg.config.image = cfg
            .config
            .image
            .in_registry(registry)
            .map_err(|e| Error::Config(format!("--registry: {e}")))?;
    }
    Ok(cfg)
}

/// The values of `secrets:`, from cyan's environment, held as `Secrets`
/// from here to the container's `Env`.
/// A fleet's hash key is this machine's (the default home's), where the
/// command runs: the same for every host.
fn read_secrets(at: At<'_>, c: &Config) -> Result<Secrets> {
    let home = match at {
        At::Here(home) => home.clone(),
        At::Host(_) => Home::resolve(None),
    };
    Secrets::from_env(&c.secrets, &home.dir)
}
