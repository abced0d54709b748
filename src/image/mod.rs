//! Building, tagging and pushing release images through the Engine API.
//!
//! An image is built once per version and tagged `IMAGE:VERSION` and
//! `IMAGE:latest`; containers run it by content address (image id), and the
//! registry digest is recorded when it is pushed.

mod context;
pub mod credentials;
mod dockerignore;

use std::collections::HashMap;

use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateImageOptionsBuilder, PushImageOptionsBuilder,
    TagImageOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

use crate::config::Loaded;
use crate::error::{Error, Result};
use crate::output::Output;

/// What the engine knows of an image tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub id: String,
    /// `repo@sha256:…` when the image was pushed to `repo`.
    pub digest: Option<String>,
}

/// Looks up `repo:tag`; `None` if the engine does not have it.
pub async fn inspect(docker: &Docker, repo: &str, tag: &str) -> Result<Option<ImageInfo>> {
    match docker.inspect_image(&format!("{repo}:{tag}")).await {
        Ok(img) => Ok(Some(ImageInfo {
            id: img.id.unwrap_or_default(),
            digest: img
                .repo_digests
                .unwrap_or_default()
                .into_iter()
                .find(|d| d.split_once('@').is_some_and(|(r, _)| r == repo)),
        })),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Builds the app's image for `version` and tags it `version` and `latest`.
pub async fn build(docker: &Docker, cfg: &Loaded, version: &str, out: &Output) -> Result<String> {
    let c = &cfg.config;
    let ctx_dir = cfg.context_dir();
    let mut args: HashMap<String, String> = c.build.args.clone().into_iter().collect();
    args.insert("VERSION".into(), version.into());
    let mut labels = std::collections::BTreeMap::new();
    labels.insert(
        "org.opencontainers.image.version".to_string(),
        version.to_string(),
    );
    labels.insert(
        "org.opencontainers.image.created".to_string(),
        crate::clock::now_rfc3339(),
    );
    labels.insert(
        "org.opencontainers.image.title".to_string(),
        c.app.to_string(),
    );
    if let Some(rev) = git(&ctx_dir, &["rev-parse", "HEAD"]) {
        labels.insert("org.opencontainers.image.revision".to_string(), rev);
    }
    if let Some(src) = git(&ctx_dir, &["config", "--get", "remote.origin.url"]) {
        labels.insert("org.opencontainers.image.source".to_string(), src);
    }
    // The engine's `labels` option adds one LABEL step, and one committed
    // layer, per label (about a second each on our hosts). One LABEL line
    // appended to the Dockerfile does the same in one step; it applies to
    // the last stage, so with a `target` stage the option is used instead.
    let label_line = c.build.target.is_none().then(|| label_instruction(&labels));
    let tar = context::tar_context(&ctx_dir, &c.build.dockerfile, label_line.as_deref())?;
    out.detail(format!(
        "context {} ({} KiB)",
        ctx_dir.display(),
        tar.len() / 1024
    ));
    let tag = c.image.tag(version);
    let mut opts = BuildImageOptionsBuilder::default()
        .dockerfile(&c.build.dockerfile)
        .t(&tag)
        .rm(true)
        .forcerm(true)
        .buildargs(&args);
    if let Some(target) = &c.build.target {
        let labels: HashMap<String, String> = labels.into_iter().collect();
        opts = opts.target(target).labels(&labels);
    }
    let id = run_build(docker, opts.build(), tar, out).await?;
    let id = match id {
        Some(id) => id,
        None => inspect(docker, c.image.as_str(), version)
            .await?
            .map(|i| i.id)
            .ok_or_else(|| Error::Build(format!("the build of {tag} produced no image")))?,
    };
    let latest = TagImageOptionsBuilder::default()
        .repo(c.image.as_str())
        .tag("latest")
        .build();
    docker.tag_image(&id, Some(latest)).await?;
    Ok(id)
}

/// `LABEL "k"="v" ...` with Dockerfile quoting (`\`, `"` and `$` escaped).
fn label_instruction(labels: &std::collections::BTreeMap<String, String>) -> String {
    let quote = |s: &str| {
        let escaped = s
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('$', "\\$")
            .replace('\n', " ");
        format!("\"{escaped}\"")
    };
    let pairs: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{}={}", quote(k), quote(v)))
        .collect();
    format!("LABEL {}", pairs.join(" "))
}

/// Runs one build on the engine, showing its step lines as progress; the
/// built image's id when the engine reports it.
pub async fn run_build(
    docker: &Docker,
    opts: bollard::query_parameters::BuildImageOptions,
    tar: Vec<u8>,
    out: &Output,
) -> Result<Option<String>> {
    let mut stream = docker.build_image(opts, None, Some(bollard::body_full(tar.into())));
    let mut id = None;
    let mut tail: Vec<String> = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(line) = info
                    .stream
                    .as_deref()
                    .map(str::trim_end)
                    .filter(|l| !l.is_empty())
                {
                    // Step lines tell the story; the engine's bookkeeping lines do not.
                    if !line.starts_with(" --->") && !line.starts_with("Removing intermediate") {
                        out.detail(line);
                    }
                    tail.push(line.to_string());
                    if tail.len() > 15 {
                        tail.remove(0);
                    }
                }
                if let Some(aux) = info.aux.and_then(|a| a.id) {
                    id = Some(aux);
                }
            }
            Err(bollard::errors::Error::DockerStreamError { error }) => {
                return Err(Error::Build(format!(
                    "image build failed: {error}\nlast build output:\n{}",
                    tail.join("\n")
                )))
            }
            Err(e) => return Err(Error::from(e)),
        }
    }
    Ok(id)
}

/// Pushes `version` and `latest` to the image's registry; returns the digest.
pub async fn push(docker: &Docker, cfg: &Loaded, version: &str, out: &Output) -> Result<String> {
    let c = &cfg.config;
    let registry = c.image.registry().unwrap_or_default();
    let creds = credentials::for_registry(registry);
    for tag in [version, "latest"] {
        let opts = PushImageOptionsBuilder::default().tag(tag).build();
        let mut stream = docker.push_image(c.image.as_str(), Some(opts), creds.clone());
        let mut last_status = String::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(status) = info.status {
                        if status != last_status {
                            out.detail(format!("{tag}: {status}"));
                            last_status = status;
                        }
                    }
                    if let Some(err) = info.error_detail.and_then(|e| e.message) {
                        return Err(push_error(registry, &err));
                    }
                }
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    return Err(push_error(registry, &error))
                }
                Err(e) => return Err(push_error(registry, &e.to_string())),
            }
        }
    }
    inspect(docker, c.image.as_str(), version)
        .await?
        .and_then(|i| i.digest)
        .ok_or_else(|| {
            Error::Push(format!(
                "pushed {} but the engine reports no digest for it",
                c.image.tag(version)
            ))
        })
}

/// Pulls `version` when the registry already has it: a version is immutable,
/// so an image pushed by another environment's deploy is this release, and
/// every environment then runs the same digest. `None` when the registry
/// does not have the tag (build it); an unreachable registry is an error.
pub async fn pull(
    docker: &Docker,
    cfg: &Loaded,
    version: &str,
    out: &Output,
) -> Result<Option<ImageInfo>> {
    let c = &cfg.config;
    let Some(registry) = c.image.registry() else {
        return Ok(None);
    };
    let opts = CreateImageOptionsBuilder::default()
        .from_image(c.image.as_str())
        .tag(version)
        .build();
    let creds = credentials::for_registry(registry);
    let mut stream = docker.create_image(Some(opts), None, creds);
    while let Some(item) = stream.next().await {
        let message = match item {
            Ok(info) => match info.error_detail.and_then(|e| e.message) {
                Some(err) => err,
                None => continue,
            },
            Err(bollard::errors::Error::DockerStreamError { error }) => error,
            Err(bollard::errors::Error::DockerResponseServerError { message, .. }) => message,
            Err(e) => e.to_string(),
        };
        if says_absent(&message) {
            return Ok(None);
        }
        return Err(Error::Unreachable(format!(
            "cannot ask {registry} for {}: {message}. Nothing was switched",
            c.image.tag(version)
        )));
    }
    out.detail(format!(
        "{} is in {registry} already: pulled, not rebuilt",
        c.image.tag(version)
    ));
    inspect(docker, c.image.as_str(), version).await
}

/// Does a registry's pull error say the image is not there (so it is to be
/// built), rather than that the registry failed? The wordings of the
/// Docker engine over Docker Hub (a new repository: "pull access denied
/// ... repository does not exist"), GHCR and the distribution registry
/// (Debian's `docker-registry`: MANIFEST_UNKNOWN, NAME_UNKNOWN).
fn says_absent(message: &str) -> bool {
    const ABSENT: [&str; 5] = [
        "not found",
        "manifest unknown",
        "name unknown",
        "repository does not exist",
        "repository name not known to registry",
    ];
    let lower = message.to_lowercase();
    ABSENT.iter().any(|w| lower.contains(w))
}

fn push_error(registry: &str, message: &str) -> Error {
    Error::Push(format!(
        "push to {registry} failed: {message}. Nothing was switched; check the registry is up and the credentials (CYAN_REGISTRY_USERNAME/PASSWORD or docker login)"
    ))
}

fn git(dir: &std::path::Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {

    #[test]
    fn registries_saying_an_image_is_not_there_are_told_apart_from_failures() {
        for absent in [
            // Docker Hub, a repository never pushed
            "pull access denied for acme/web, repository does not exist or may require 'docker login': denied: requested access to the resource is denied",
            // GHCR
            "manifest unknown",
            "Head \"https://ghcr.io/v2/acme/web/manifests/1.0\": name unknown",
            // the distribution registry (Debian's docker-registry)
            "manifest for 127.0.0.1:5000/web:1.0 not found: manifest unknown: manifest unknown",
            "repository name not known to registry",
        ] {
            assert!(super::says_absent(absent), "{absent}");
        }
        for failure in [
            "Get \"https://127.0.0.1:5000/v2/\": dial tcp 127.0.0.1:5000: connect: connection refused",
            "unauthorized: authentication required",
            "received unexpected HTTP status: 500 Internal Server Error",
        ] {
            assert!(!super::says_absent(failure), "{failure}");
        }
    }
    #[test]
    fn labels_become_one_quoted_instruction() {
        let labels = std::collections::BTreeMap::from([
            (
                "org.opencontainers.image.version".to_string(),
                "1.2.3".to_string(),
            ),
            (
                "org.opencontainers.image.source".to_string(),
                "a \"b\" $HOME \\c".to_string(),
            ),
        ]);
        assert_eq!(
            super::label_instruction(&labels),
            r#"LABEL "org.opencontainers.image.source"="a \"b\" \$HOME \\c" "org.opencontainers.image.version"="1.2.3""#
        );
    }
}
