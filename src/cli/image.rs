//! `cyan build` and `cyan push`: the first steps of a deploy, alone.

use crate::config::Loaded;
use crate::error::{Error, Result};
use crate::image;
use crate::output::Output;
use crate::platform::docker;
use crate::release;

pub async fn build(cfg: &Loaded, version: Option<&str>, out: &Output) -> Result<()> {
    let version = release::resolve_version(version, &cfg.dir())?;
    let d = docker::connect().await?;
    let tag = cfg.config.image.tag(&version);
    out.phase(format!("build {tag}"));
    let id = image::build(&d, cfg, &version, out).await?;
    out.done(format!(
        "built {tag} and {}",
        cfg.config.image.tag("latest")
    ));
    out.result(&serde_json::json!({"image": tag, "image_id": id}), || {
        format!("{tag} {id}")
    });
    Ok(())
}

pub async fn push(cfg: &Loaded, version: Option<&str>, out: &Output) -> Result<()> {
    let version = release::resolve_version(version, &cfg.dir())?;
    if cfg.config.image.registry().is_none() {
        return Err(Error::Config(format!(
            "image {} names no registry, so there is nothing to push to (write e.g. 127.0.0.1:5000/{})",
            cfg.config.image, cfg.config.image
        )));
    }
    let d = docker::connect().await?;
    let tag = cfg.config.image.tag(&version);
    if image::inspect(&d, cfg.config.image.as_str(), &version)
        .await?
        .is_none()
    {
        return Err(Error::Refused(format!(
            "{tag} is not built yet; run `cyan build` first"
        )));
    }
    out.phase(format!("push {tag}"));
    let digest = image::push(&d, cfg, &version, out).await?;
    out.done(format!("pushed {tag} and latest"));
    out.result(&serde_json::json!({"image": tag, "digest": digest}), || {
        digest.clone()
    });
    Ok(())
}
