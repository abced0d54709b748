//! What every app command sets up first: the config, the Docker engine, the
//! proxy (started if needed) and the app's route in it.

use std::collections::BTreeMap;
use std::path::Path;

use super::ImageOverride;
use crate::config::{Config, Loaded, PlatformKind, ProxyTls};
use crate::error::{Error, Result};
use crate::output::Output;
use crate::platform::docker::{self, DockerPlatform};
use crate::proxy::api::RouteSpec;
use crate::proxy::client;
use crate::proxy::state::{TlsFiles, TlsSource};
use crate::proxy::Home;

/// Loads and checks config, secrets, engine and proxy, in that order, so the
/// cheapest mistakes are reported first.
pub async fn open<'a>(home: &Home, cfg: &'a Loaded, out: &'a Output) -> Result<DockerPlatform<'a>> {
    let secrets = read_secrets(&cfg.config)?;
    let docker = docker::connect().await?;
    let proxy = client::ensure_running(home).await?;
    let c = &cfg.config;
    let spec = RouteSpec {
        hosts: c.proxy.host.iter().chain(&c.proxy.hosts).cloned().collect(),
        listen: c.proxy.listen,
        path_prefix: c.proxy.path_prefix.clone(),
        policy: c.proxy.policy(),
        tls: c.proxy.tls.as_ref().map(|t| match t {
            ProxyTls::Files(t) => TlsSource::Files(TlsFiles {
                cert: absolute(&cfg.dir().join(&t.cert)),
                key: absolute(&cfg.dir().join(&t.key)),
            }),
            ProxyTls::Acme => TlsSource::Acme,
        }),
    };
    proxy.put_route(&c.route(), &spec).await?;
    Ok(DockerPlatform {
        docker,
        proxy,
        cfg,
        secrets,
        lock_token: String::new(),
        out,
    })
}

/// The proxy runs in another folder: it gets absolute paths.
fn absolute(p: &Path) -> std::path::PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
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

fn read_secrets(c: &Config) -> Result<BTreeMap<String, String>> {
    c.secrets
        .iter()
        .map(|name| match std::env::var(name) {
            Ok(v) => Ok((name.clone(), v)),
            Err(_) => Err(Error::Config(format!(
                "secret {name} is listed in cyan.yaml but not set in the environment"
            ))),
        })
        .collect()
}
