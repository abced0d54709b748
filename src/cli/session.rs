//! What every app command sets up first: the config, the Docker engine and
//! the proxy (started if needed). The app's route is not touched here: it
//! changes with a switch (`DockerPlatform::route_spec`), so reading
//! commands never change routing.

use std::path::Path;

use super::ImageOverride;
use crate::config::{Config, Loaded, PlatformKind, Secrets};
use crate::error::{Error, Result};
use crate::output::Output;
use crate::platform::docker::{self, DockerPlatform};
use crate::proxy::autostart;
use crate::proxy::Home;

/// Loads and checks config, secrets, engine and proxy, in that order, so the
/// cheapest mistakes are reported first.
pub async fn open<'a>(home: &Home, cfg: &'a Loaded, out: &'a Output) -> Result<DockerPlatform<'a>> {
    let secrets = read_secrets(home, &cfg.config)?;
    with_secrets(home, cfg, out, secrets).await
}

/// `open` for commands that start no container (`status`, `history`,
/// `remove`): they need no secret values, so a shell without them (an
/// on-call engineer's) can still look and clean up.
pub async fn open_to_read<'a>(
    home: &Home,
    cfg: &'a Loaded,
    out: &'a Output,
) -> Result<DockerPlatform<'a>> {
    with_secrets(home, cfg, out, Secrets::default()).await
}

async fn with_secrets<'a>(
    home: &Home,
    cfg: &'a Loaded,
    out: &'a Output,
    secrets: Secrets,
) -> Result<DockerPlatform<'a>> {
    let docker = docker::connect().await?;
    let proxy = autostart::ensure_running(home, out).await?;
    Ok(DockerPlatform {
        docker,
        proxy,
        cfg,
        secrets,
        lock_token: String::new(),
        out,
        verdict: Default::default(),
    })
}

pub fn load(path: &Path) -> Result<Loaded> {
    Config::load(path)
}

/// Loads config with `--image` / `--registry` applied over its `image`, and
/// `--platform` over its `platform`.
pub fn load_with(path: &Path, o: &ImageOverride, platform: Option<PlatformKind>) -> Result<Loaded> {
    let mut cfg = Config::load_for(path, platform)?;
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
fn read_secrets(home: &Home, c: &Config) -> Result<Secrets> {
    Secrets::from_env(&c.secrets, &home.dir)
}
