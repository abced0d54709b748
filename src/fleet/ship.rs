//! One image, built once on this machine, on every host by its image id:
//! pulled by digest where the image was pushed (the registry's exact
//! manifest, never a tag that may have moved), else streamed from this
//! engine to the host's (`docker save | docker load`, over the host's SSH
//! connection), for fleets without a registry.

use bollard::query_parameters::{
    CreateImageOptionsBuilder, ImportImageOptionsBuilder, TagImageOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

use super::Host;
use crate::config::Loaded;
use crate::error::{Error, Result};
use crate::image::{self, ImageInfo};
use crate::output::Output;

/// `IMAGE:VERSION` on this machine: pulled when the registry has the
/// version, else built, and pushed when a registry is named (so it has a
/// digest the hosts pull).
pub async fn local_image(
    docker: &Docker,
    cfg: &Loaded,
    version: &str,
    out: &Output,
) -> Result<ImageInfo> {
    let repo = cfg.config.image.as_str();
    let pushes = cfg.config.image.registry().is_some();
    if let Some(i) = image::inspect(docker, repo, version).await? {
        if i.digest.is_some() || !pushes {
            return Ok(i);
        }
    }
    if image::pull(docker, cfg, version, out).await?.is_none()
        && image::inspect(docker, repo, version).await?.is_none()
    {
        out.phase(format!("build {}", cfg.config.image.tag(version)));
        image::build(docker, cfg, version, out).await?;
        out.done(format!("built {}", cfg.config.image.tag(version)));
    }
    if pushes
        && image::inspect(docker, repo, version)
            .await?
            .and_then(|i| i.digest)
            .is_none()
    {
        out.phase(format!("push {}", cfg.config.image.tag(version)));
        let digest = image::push(docker, cfg, version, out).await?;
        out.done(format!("pushed {digest}"));
    }
    image::inspect(docker, repo, version).await?.ok_or_else(|| {
        Error::Build(format!(
            "{} vanished from this engine",
            cfg.config.image.tag(version)
        ))
    })
}

/// Makes `IMAGE:VERSION` on `host` the image `local` is (same image id).
///
/// Errors: `Error::Unreachable` naming the host when the registry or the
/// host's engine fails; `Error::Platform` when the host ends up with
/// another image under the tag.
pub async fn ship(
    local: &Docker,
    image: &ImageInfo,
    host: &Host,
    cfg: &Loaded,
    version: &str,
    out: &Output,
) -> Result<()> {
    let repo = cfg.config.image.as_str();
    let tag = cfg.config.image.tag(version);
    let on_host = |e: &dyn std::fmt::Display| {
        Error::Unreachable(format!("host {}: cannot get {tag} there: {e}", host.name))
    };
    if let Some(there) = image::inspect(&host.docker, repo, version).await? {
        if there.id == image.id {
            return Ok(());
        }
    }
    match (&image.digest, cfg.config.image.registry()) {
        (Some(digest), Some(registry)) => {
            out.detail(format!("{}: pull {digest}", host.name));
            let opts = CreateImageOptionsBuilder::default()
                .from_image(digest)
                .build();
            let creds = image::credentials::for_registry(registry);
            let mut stream = host.docker.create_image(Some(opts), None, creds);
            while let Some(item) = stream.next().await {
                let info = item.map_err(|e| on_host(&e))?;
                if let Some(err) = info.error_detail.and_then(|e| e.message) {
                    return Err(on_host(&err));
                }
            }
            let opts = TagImageOptionsBuilder::default()
                .repo(repo)
                .tag(version)
                .build();
            host.docker
                .tag_image(digest, Some(opts))
                .await
                .map_err(|e| on_host(&e))?;
        }
        _ => {
            out.detail(format!("{}: copy {tag} (no registry)", host.name));
            let saved = local.export_images(&[tag.as_str()]);
            let opts = ImportImageOptionsBuilder::default().quiet(true).build();
            let mut stream = host.docker.import_image_stream(opts, saved, None);
            while let Some(item) = stream.next().await {
                let info = item.map_err(|e| on_host(&e))?;
                if let Some(err) = info.error_detail.and_then(|e| e.message) {
                    return Err(on_host(&err));
                }
            }
        }
    }
    match image::inspect(&host.docker, repo, version).await? {
        Some(there) if there.id == image.id => Ok(()),
        there => Err(Error::Platform(format!(
            "host {}: {tag} is {} there, not {} as here",
            host.name,
            there.map_or("missing".into(), |i| i.id),
            image.id
        ))),
    }
}
