//! `cyan promote --from <stage> --to <stage>`: ships to one environment
//! exactly the image that is live and verified in another.
//!
//! Both stages are environments of one cyan.yaml on one host, so both
//! records are in one proxy. The source's live release is read from its
//! record (gated on the live color), and must have passed a verify window
//! that nothing judged otherwise since (`DeployRecord::verified`). The
//! target runs that release's image by content address: the local tag is
//! pointed at the very image id the source runs (pulled by its digest when
//! the host lost it), never rebuilt or pulled by tag, so a tag moved in the
//! registry meanwhile cannot slip in. Just before the target's switch the
//! source is read again (`lifecycle`): a source that moved on since the
//! promotion was asked for refuses it, and the candidate is removed.

use std::time::Duration;

use bollard::query_parameters::{CreateImageOptionsBuilder, TagImageOptionsBuilder};
use futures_util::StreamExt;

use super::converge::{desired, Run};
use super::lifecycle::Source;
use super::report::DeployReport;
use super::session;
use crate::config::Loaded;
use crate::error::{Error, Result};
use crate::output::Output;
use crate::plan::Intent;
use crate::platform::docker::parse_record;
use crate::proxy::client::AdminClient;
use crate::proxy::Home;
use crate::record::DeployRecord;
use crate::release::{Release, ReleaseKey};

/// A stage's live release, as its record holds it.
#[derive(Debug, Clone)]
pub struct Live {
    pub key: ReleaseKey,
    pub release: Release,
    pub record: DeployRecord,
}

/// The live release of `route`, if it has one.
pub async fn live(proxy: &AdminClient, route: &str) -> Result<Option<Live>> {
    let Some(view) = proxy.route(route).await? else {
        return Ok(None);
    };
    let record = parse_record(&view.state.record);
    let Some(key) = view.state.live.and_then(|c| record.gated.get(&c).cloned()) else {
        return Ok(None);
    };
    let release = record
        .history
        .iter()
        .rev()
        .find(|e| e.release.key() == key)
        .map(|e| e.release.clone());
    Ok(release.map(|release| Live {
        key,
        release,
        record,
    }))
}

/// The live release of `route` and whether it is verified: what the
/// promotion's check before the switch reads.
pub async fn live_verified(proxy: &AdminClient, route: &str) -> Result<Option<(ReleaseKey, bool)>> {
    Ok(live(proxy, route).await?.map(|l| {
        let verified = l.record.verified(&l.key) && l.record.verify.is_none();
        (l.key, verified)
    }))
}

/// Why `live` cannot be promoted, if it cannot.
fn unverified(from: &Loaded, live: &Live) -> Option<String> {
    let (env, v) = (&from.config.environment, &live.key.version);
    if from.config.verify.is_none() {
        return Some(format!(
            "{env} has no verify: section, so nothing verified {v} after its switch; add verify to {env} (or deploy {v} to the target with cyan deploy --version {v})"
        ));
    }
    if live
        .record
        .verify
        .as_ref()
        .is_some_and(|w| w.release == live.key)
    {
        return Some(format!(
            "{v} is still being verified in {env}; promote it once its verify window has passed"
        ));
    }
    if live.record.failed_verify(&live.key) {
        return Some(format!("{v} failed its verification in {env}"));
    }
    (!live.record.verified(&live.key)).then(|| {
        format!("{v} did not pass a verify window in {env} (inconclusive, or its window was never judged)")
    })
}

/// `cyan promote --from FROM --to TO [--version V]`.
pub async fn promote(
    home: &Home,
    from: &Loaded,
    to: &Loaded,
    version: Option<&str>,
    wait: Duration,
    out: &Output,
) -> Result<DeployReport> {
    let (src, dst) = (&from.config.environment, &to.config.environment);
    if src == dst {
        return Err(Error::Config(format!(
            "--from and --to are both {src}: promote between two environments"
        )));
    }
    let mut p = session::open(session::At::Here(home), to, out).await?;
    let route = from.config.route();
    let Some(live) = live(&p.proxy, &route).await? else {
        return Err(Error::Refused(format!(
            "{src} has no live release to promote"
        )));
    };
    if let Some(asked) = version.filter(|v| *v != live.key.version) {
        return Err(Error::Refused(format!(
            "{src} moved on since the promotion of {asked} was asked for: {} is live there now; nothing was deployed to {dst}",
            live.key.version
        )));
    }
    if let Some(why) = unverified(from, &live) {
        return Err(Error::Refused(format!("cannot promote to {dst}: {why}")));
    }
    let c = &to.config;
    let target = ReleaseKey {
        version: live.key.version.clone(),
        config_hash: c.runtime_hash(&p.secrets),
    };
    // A release is (version, config): one the target runs already from
    // another image (its tag rebuilt on this host) would be taken as done.
    if let Some(other) = p
        .containers()
        .await?
        .into_iter()
        .find(|m| m.release.key() == target && m.release.image_id != live.release.image_id)
    {
        return Err(Error::Refused(format!(
            "{dst} runs {} from image {} already, not from {src}'s {}: the version's image was rebuilt on this host. Deploy a new version to {src} and promote that",
            target.version, other.release.image_id, live.release.image_id
        )));
    }
    pin_image(&p.docker, to, &live.release, out).await?;
    p.promoted_from = Some(src.to_string());
    // Nothing built or pushed: the image is the source's, pinned above.
    let desired = desired(c, Intent::Deploy, target, c.replicas.get());
    let run = Run {
        what: format!("promote {} from {src}", live.key.version),
        lock_wait: wait,
        rollback_on_failure: false,
        source: Some(Source {
            environment: src.to_string(),
            route,
            source: live.key,
            target: desired.target.clone(),
        }),
    };
    run.go(&mut p, &desired, out).await
}

/// Points the local `IMAGE:VERSION` at the image `release` runs, pulling
/// it by its digest if this host lost it. Errors: the image is gone and
/// has no digest to pull by, or the registry does not answer.
async fn pin_image(
    docker: &bollard::Docker,
    to: &Loaded,
    release: &Release,
    out: &Output,
) -> Result<()> {
    let repo = to.config.image.as_str();
    let have = docker.inspect_image(&release.image_id).await.is_ok();
    if !have {
        let Some(digest) = &release.digest else {
            return Err(Error::Refused(format!(
                "the image of {} ({}) is no longer on this host and was never pushed: nothing to promote",
                release.version, release.image_id
            )));
        };
        out.phase(format!("pull {digest}"));
        let opts = CreateImageOptionsBuilder::default()
            .from_image(digest)
            .build();
        let registry = to.config.image.registry().unwrap_or_default();
        let creds = crate::image::credentials::for_registry(registry);
        let mut stream = docker.create_image(Some(opts), None, creds);
        while let Some(item) = stream.next().await {
            let failed = match item {
                Ok(info) => info.error_detail.and_then(|e| e.message),
                Err(e) => Some(e.to_string()),
            };
            if let Some(why) = failed {
                return Err(Error::Unreachable(format!(
                    "cannot pull {digest}: {why}. Nothing was switched"
                )));
            }
        }
        out.done(format!("pull {digest}"));
    }
    let opts = TagImageOptionsBuilder::default()
        .repo(repo)
        .tag(&release.version)
        .build();
    docker
        .tag_image(&release.image_id, Some(opts))
        .await
        .map_err(|e| Error::Platform(format!("cannot tag {}: {e}", release.image_id)))?;
    let info = crate::image::inspect(docker, repo, &release.version).await?;
    match info {
        Some(i) if i.id == release.image_id => Ok(()),
        other => Err(Error::Platform(format!(
            "{} names {} after tagging it as {}",
            to.config.image.tag(&release.version),
            other.map_or("nothing".into(), |i| i.id),
            release.image_id
        ))),
    }
}
