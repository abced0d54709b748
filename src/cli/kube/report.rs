//! The BlueGreenDeployment's status in the reports Docker gives
//! (`cli/report.rs`), so `-o json` and the GitHub step outputs are one
//! contract on both platforms. Pure functions of the CR, tested here from
//! status values.
//!
//! The operator's phases in the CLI's words:
//!
//! | operator | report |
//! |---|---|
//! | Progressing, Gating, Switching | progressing |
//! | AwaitingApproval | awaiting-approval |
//! | Verifying | verifying |
//! | Healthy | live |
//! | Degraded, RolledBack, none yet | live while a color is live, else not-deployed; a stopped rollout is a warning |
//!
//! `interrupted` never occurs: the operator, not the CLI, carries a rollout,
//! so a killed CLI leaves nothing waiting.

use crate::cli::report::{AppId, ColorView, DeployReport, HistoryLine, ReleaseView, StatusReport};
use crate::plan::{Intent, Phase};
use crate::platform::kube::crd::{self, BlueGreenDeployment, BlueGreenDeploymentStatus, Outcome};
use crate::platform::kube::objects;
use crate::record::Event;
use crate::release::Color;

/// The operator's phase in the CLI's words (the table above).
pub fn phase(s: &BlueGreenDeploymentStatus) -> Phase {
    match s.phase {
        Some(crd::Phase::Progressing | crd::Phase::Gating | crd::Phase::Switching) => {
            Phase::Progressing
        }
        Some(crd::Phase::AwaitingApproval) => Phase::AwaitingApproval,
        Some(crd::Phase::Verifying) => Phase::Verifying,
        Some(crd::Phase::Healthy | crd::Phase::Degraded | crd::Phase::RolledBack) | None => {
            match s.live_color {
                Some(_) => Phase::Live,
                None => Phase::NotDeployed,
            }
        }
    }
}

/// `repository:tag@sha256:…` as the report's `image` (`repository:tag`)
/// and `digest` (`repository@sha256:…`, what Docker records); a reference
/// without a digest is the image, with none.
pub fn image_and_digest(reference: &str) -> (String, Option<String>) {
    let Some((named, sha)) = reference.split_once('@') else {
        return (reference.to_string(), None);
    };
    let repository = match named.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => named,
    };
    (named.to_string(), Some(format!("{repository}@{sha}")))
}

fn revision(r: i64) -> u64 {
    u64::try_from(r).unwrap_or(0)
}

fn event(o: Outcome) -> Event {
    match o {
        Outcome::Promoted => Event::Promoted,
        Outcome::RolledBack => Event::RolledBack,
        Outcome::VerifyFailed => Event::VerifyFailed,
    }
}

/// The history's newest entry for the live revision: what runs live.
fn live_entry(s: &BlueGreenDeploymentStatus) -> Option<&crd::HistoryEntry> {
    let rev = s.live_revision?;
    let of_rev = || s.history.iter().rev().filter(move |h| h.revision == rev);
    of_rev()
        .find(|h| h.outcome != Outcome::VerifyFailed)
        .or_else(|| of_rev().next())
}

/// The color a rollout of the current template runs on: the one that
/// passed its gates with it, else the one that is not live (the planner's
/// choice: blue when nothing is live).
fn candidate_color(s: &BlueGreenDeploymentStatus) -> Color {
    s.gated
        .iter()
        .find(|(_, h)| Some(*h) == s.current_hash.as_ref())
        .map(|(c, _)| *c)
        .unwrap_or_else(|| s.live_color.map_or(Color::Blue, Color::other))
}

fn view(color: Color, e: &crd::HistoryEntry, gated: bool) -> ColorView {
    ColorView {
        color,
        version: e.version.clone(),
        revision: revision(e.revision),
        digest: image_and_digest(&e.image).1,
        image_id: None,
        gated,
        containers: Vec::new(),
    }
}

/// `cyan status` of the BlueGreenDeployment `bgd` (`None`: there is none,
/// so nothing is deployed).
pub fn status(id: AppId, bgd: Option<&BlueGreenDeployment>) -> StatusReport {
    let empty = BlueGreenDeploymentStatus::default();
    let s = bgd.and_then(|b| b.status.as_ref()).unwrap_or(&empty);
    let live_e = live_entry(s);
    let live = s.live_color.map(|color| match live_e {
        Some(e) => ColorView {
            version: s.live_version.clone().unwrap_or_else(|| e.version.clone()),
            ..view(color, e, s.gated.get(&color) == Some(&e.template_hash))
        },
        None => ColorView {
            color,
            version: s.live_version.clone().unwrap_or_default(),
            revision: s.live_revision.map_or(0, revision),
            digest: None,
            image_id: None,
            gated: s.gated.contains_key(&color),
            containers: Vec::new(),
        },
    });
    // A rollout of the spec's template, up (it has a revision) and not yet
    // live, is the candidate; the spec's image is its image.
    let rolling = matches!(
        s.phase,
        Some(
            crd::Phase::Progressing
                | crd::Phase::Gating
                | crd::Phase::AwaitingApproval
                | crd::Phase::Switching
        )
    );
    let candidate = match (bgd, &s.current_hash, s.candidate_revision) {
        (Some(b), Some(hash), Some(rev))
            if rolling
                && live_e.map(|e| &e.template_hash) != Some(hash)
                && objects::template_hash(b) == *hash =>
        {
            let color = candidate_color(s);
            let reference = objects::image(b);
            Some(ColorView {
                color,
                version: objects::version_of(&reference),
                revision: revision(rev),
                digest: image_and_digest(&reference).1,
                image_id: None,
                gated: s.gated.get(&color) == Some(hash),
                containers: Vec::new(),
            })
        }
        _ => None,
    };
    // The other color still holds a release that was live: it is kept
    // for an instant rollback (scaling it down forgets its gate).
    let previous = s
        .live_color
        .map(Color::other)
        .filter(|o| candidate.as_ref().is_none_or(|c| c.color != *o))
        .and_then(|o| {
            let hash = s.gated.get(&o)?;
            let e = s
                .history
                .iter()
                .rev()
                .find(|h| &h.template_hash == hash && h.outcome != Outcome::VerifyFailed)?;
            Some(view(o, e, true))
        });
    let mut warnings = Vec::new();
    if let (Some(p @ (crd::Phase::Degraded | crd::Phase::RolledBack)), Some(m)) =
        (s.phase, &s.message)
    {
        warnings.push(format!(
            "the operator stopped the last rollout ({p:?}): {m}"
        ));
    }
    if let Some(b) = bgd {
        let generation = b.metadata.generation.unwrap_or(0);
        let seen = s.observed_generation.unwrap_or(0);
        if seen < generation {
            warnings.push(format!(
                "the operator has not acted on the latest spec yet (generation {generation}, observed {seen}): is `cyan operator` running?"
            ));
        }
    }
    let (image, digest) = match live_e {
        Some(e) => {
            let (image, digest) = image_and_digest(&e.image);
            (Some(image), digest)
        }
        None => (None, None),
    };
    StatusReport {
        id,
        url: String::new(),
        phase: phase(s),
        version: live.as_ref().map(|l| l.version.clone()),
        image: image.filter(|_| live.is_some()),
        digest: digest.filter(|_| live.is_some()),
        revision: live.as_ref().map(|l| l.revision),
        previous_version: previous.as_ref().map(|p| p.version.clone()),
        live,
        previous,
        candidate,
        lock: None,
        warnings,
        drift: Vec::new(),
        preview: None,
        message: s.message.clone(),
        hosts: Vec::new(),
    }
}

/// `cyan history`: the CR's history, newest first.
pub fn history(s: &BlueGreenDeploymentStatus) -> Vec<HistoryLine> {
    s.history
        .iter()
        .rev()
        .map(|h| HistoryLine {
            event: event(h.outcome),
            color: h.color,
            release: ReleaseView {
                version: h.version.clone(),
                revision: revision(h.revision),
                image_id: None,
                digest: image_and_digest(&h.image).1,
                config_hash: h.template_hash.clone(),
            },
            at: h.promoted_at.clone(),
            verify: None,
            from_environment: None,
            by: None,
            hooks: Vec::new(),
            stages: Vec::new(),
        })
        .collect()
}

/// What a deploy, promote or rollback of the image `reference` ended in:
/// `before` is the status when the command began, `after` the one it
/// settled on (live, or waiting for approval).
pub struct Settled<'a> {
    pub intent: Intent,
    pub reference: &'a str,
    pub before: &'a BlueGreenDeploymentStatus,
    pub after: &'a BlueGreenDeploymentStatus,
    pub config_path: String,
}

pub fn deploy(id: AppId, d: Settled) -> DeployReport {
    let s = d.after;
    let phase = match s.phase {
        Some(crd::Phase::AwaitingApproval) => Phase::AwaitingApproval,
        _ => Phase::Live,
    };
    let (color, rev) = match phase {
        Phase::AwaitingApproval => (Some(candidate_color(s)), s.candidate_revision),
        _ => (s.live_color, s.live_revision),
    };
    // As on Docker: the newest release that went live and stayed, before
    // this command, unless it is the one the command went to.
    let previous = d
        .before
        .history
        .iter()
        .rev()
        .find(|h| h.outcome != Outcome::VerifyFailed)
        .filter(|h| s.current_hash.as_ref() != Some(&h.template_hash));
    let previous_color = color
        .map(Color::other)
        .filter(|o| previous.is_some_and(|p| s.gated.get(o) == Some(&p.template_hash)));
    let (image, digest) = image_and_digest(d.reference);
    DeployReport {
        id,
        intent: d.intent,
        phase,
        version: objects::version_of(d.reference),
        revision: rev.map(revision),
        color,
        url: String::new(),
        image,
        digest,
        image_id: None,
        previous_version: previous.map(|p| p.version.clone()),
        previous_color,
        rollback_command: (phase == Phase::Live && previous_color.is_some())
            .then(|| format!("cyan rollback -c {}", d.config_path)),
        verify: None,
        notifications: Vec::new(),
        config_path: d.config_path,
        fleet: None,
    }
}

/// The color and version `cyan abort` stops: the release being verified
/// (it is rolled back), else the spec's candidate.
pub fn aborted(bgd: &BlueGreenDeployment) -> (Option<Color>, String) {
    let s = bgd.status.clone().unwrap_or_default();
    let color = match s.phase {
        Some(crd::Phase::Verifying) => s.live_color,
        _ => Some(candidate_color(&s)),
    };
    (color, objects::version_of(&objects::image(bgd)))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::PlatformKind;
    use crate::platform::kube::crd::BlueGreenDeploymentSpec;

    const REPO: &str = "127.0.0.1:5000/web";

    fn id() -> AppId {
        AppId {
            app: "web".into(),
            environment: "production".into(),
            platform: PlatformKind::Kubernetes,
            namespace: Some("default".into()),
        }
    }

    fn pinned(version: &str) -> String {
        format!("{REPO}:{version}@sha256:{:0>64}", version.replace('.', ""))
    }

    fn entry(rev: i64, version: &str, color: Color, outcome: Outcome) -> crd::HistoryEntry {
        crd::HistoryEntry {
            revision: rev,
            version: version.into(),
            image: pinned(version),
            template_hash: format!("h{rev}"),
            color,
            promoted_at: "2026-11-02T10:00:00Z".into(),
            outcome,
        }
    }

    /// A BlueGreenDeployment whose template runs `version` (revision `rev`'s
    /// template, hash `h{rev}`), with `status`.
    fn bgd(version: &str, status: BlueGreenDeploymentStatus) -> BlueGreenDeployment {
        let spec: BlueGreenDeploymentSpec = serde_json::from_value(serde_json::json!({
            "selector": { "matchLabels": { "app": "web" } },
            "template": { "metadata": { "labels": { "app": "web" } },
                          "spec": { "containers": [{ "name": "web", "image": pinned(version) }] } },
            "activeService": "web",
        }))
        .unwrap();
        let mut b = BlueGreenDeployment::new("web", spec);
        b.metadata.generation = Some(2);
        b.status = Some(status);
        b
    }

    /// 1.0.0 (revision 1) went live on blue, then 2.0.0 (revision 2) on
    /// green; blue still runs 1.0.0.
    fn two_releases() -> BlueGreenDeploymentStatus {
        BlueGreenDeploymentStatus {
            phase: Some(crd::Phase::Healthy),
            message: Some("switched web to green (2.0.0)".into()),
            live_color: Some(Color::Green),
            live_revision: Some(2),
            live_version: Some("2.0.0".into()),
            candidate_revision: Some(2),
            current_hash: Some("h2".into()),
            observed_generation: Some(2),
            history: vec![
                entry(1, "1.0.0", Color::Blue, Outcome::Promoted),
                entry(2, "2.0.0", Color::Green, Outcome::Promoted),
            ],
            gated: BTreeMap::from([(Color::Blue, "h1".into()), (Color::Green, "h2".into())]),
            ..Default::default()
        }
    }

    #[test]
    fn the_operators_phases_in_the_clis_words() {
        use crd::Phase as Op;
        let live = Some(Color::Blue);
        let cases = [
            (None, None, Phase::NotDeployed),
            (None, live, Phase::Live),
            (Some(Op::Progressing), None, Phase::Progressing),
            (Some(Op::Gating), live, Phase::Progressing),
            (Some(Op::Switching), live, Phase::Progressing),
            (Some(Op::AwaitingApproval), live, Phase::AwaitingApproval),
            (Some(Op::Verifying), live, Phase::Verifying),
            (Some(Op::Healthy), live, Phase::Live),
            (Some(Op::Degraded), live, Phase::Live),
            (Some(Op::Degraded), None, Phase::NotDeployed),
            (Some(Op::RolledBack), live, Phase::Live),
        ];
        for (op, live_color, want) in cases {
            let s = BlueGreenDeploymentStatus {
                phase: op,
                live_color,
                ..Default::default()
            };
            assert_eq!(phase(&s), want, "{op:?} live {live_color:?}");
        }
    }

    #[test]
    fn a_pinned_reference_is_an_image_and_a_digest() {
        let sha = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            image_and_digest(&format!("{REPO}:1.0.0@{sha}")),
            (format!("{REPO}:1.0.0"), Some(format!("{REPO}@{sha}")))
        );
        assert_eq!(
            image_and_digest("web:1.0.0"),
            ("web:1.0.0".to_string(), None)
        );
    }

    #[test]
    fn status_names_live_and_the_hot_previous() {
        let r = status(id(), Some(&bgd("2.0.0", two_releases())));
        assert_eq!(r.phase, Phase::Live);
        assert_eq!(r.version.as_deref(), Some("2.0.0"));
        assert_eq!(r.revision, Some(2));
        assert_eq!(r.image.as_deref(), Some("127.0.0.1:5000/web:2.0.0"));
        assert!(r
            .digest
            .as_deref()
            .is_some_and(|d| d.starts_with("127.0.0.1:5000/web@sha256:")));
        let live = r.live.as_ref().unwrap();
        assert_eq!((live.color, live.gated), (Color::Green, true));
        let previous = r.previous.as_ref().unwrap();
        assert_eq!(
            (previous.color, previous.version.as_str()),
            (Color::Blue, "1.0.0")
        );
        assert_eq!(r.previous_version.as_deref(), Some("1.0.0"));
        assert!(r.candidate.is_none() && r.warnings.is_empty(), "{r:?}");
        assert_eq!(r.message.as_deref(), Some("switched web to green (2.0.0)"));
    }

    #[test]
    fn a_scaled_down_previous_is_not_shown() {
        let mut s = two_releases();
        s.gated.remove(&Color::Blue);
        let r = status(id(), Some(&bgd("2.0.0", s)));
        assert!(
            r.previous.is_none() && r.previous_version.is_none(),
            "{r:?}"
        );
    }

    #[test]
    fn a_gated_candidate_waits_for_approval() {
        let mut s = two_releases();
        s.phase = Some(crd::Phase::AwaitingApproval);
        s.current_hash = Some("h3".into());
        s.candidate_revision = Some(3);
        s.gated.insert(Color::Blue, "h3".into());
        let mut b = bgd("3.0.0", s);
        let hash = objects::template_hash(&b);
        let st = b.status.as_mut().unwrap();
        st.current_hash = Some(hash.clone());
        st.gated.insert(Color::Blue, hash);
        let r = status(id(), Some(&b));
        assert_eq!(r.phase, Phase::AwaitingApproval);
        let c = r.candidate.as_ref().unwrap();
        assert_eq!(
            (c.color, c.version.as_str(), c.revision, c.gated),
            (Color::Blue, "3.0.0", 3, true)
        );
        assert!(
            r.previous.is_none(),
            "the candidate took the other color: {r:?}"
        );
        assert_eq!(r.version.as_deref(), Some("2.0.0"));
    }

    #[test]
    fn a_stopped_rollout_is_a_warning_and_a_lagging_operator_too() {
        let mut s = two_releases();
        s.phase = Some(crd::Phase::Degraded);
        s.message = Some("3.0.0 did not pass its gates".into());
        s.observed_generation = Some(1);
        let r = status(id(), Some(&bgd("3.0.0", s)));
        assert_eq!(r.phase, Phase::Live);
        assert!(r.candidate.is_none());
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
        assert!(r.warnings[0].contains("Degraded): 3.0.0 did not pass"));
        assert!(r.warnings[1].contains("cyan operator"));
    }

    #[test]
    fn no_resource_is_not_deployed() {
        let r = status(id(), None);
        assert_eq!(r.phase, Phase::NotDeployed);
        assert!(r.live.is_none() && r.version.is_none() && r.warnings.is_empty());
    }

    #[test]
    fn history_lines_newest_first_with_docker_words() {
        let mut s = two_releases();
        s.history
            .push(entry(1, "1.0.0", Color::Blue, Outcome::RolledBack));
        let lines = history(&s);
        let v = serde_json::to_value(&lines).unwrap();
        assert_eq!(v[0]["event"], "rolled-back");
        assert_eq!(v[0]["release"]["version"], "1.0.0");
        assert_eq!(v[0]["release"]["config_hash"], "h1");
        assert_eq!(v[2]["event"], "promoted");
        assert!(v[0]["release"]["digest"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:5000/web@sha256:"));
    }

    #[test]
    fn a_deploy_reports_the_previous_release_while_it_runs() {
        let before = BlueGreenDeploymentStatus {
            history: vec![entry(1, "1.0.0", Color::Blue, Outcome::Promoted)],
            ..Default::default()
        };
        let after = two_releases();
        let r = deploy(
            id(),
            Settled {
                intent: Intent::Deploy,
                reference: &pinned("2.0.0"),
                before: &before,
                after: &after,
                config_path: "cyan.yaml".into(),
            },
        );
        assert_eq!(
            (r.phase, r.color, r.revision),
            (Phase::Live, Some(Color::Green), Some(2))
        );
        assert_eq!(r.version, "2.0.0");
        assert_eq!(r.image, "127.0.0.1:5000/web:2.0.0");
        assert_eq!(r.previous_version.as_deref(), Some("1.0.0"));
        assert_eq!(r.previous_color, Some(Color::Blue));
        assert_eq!(
            r.rollback_command.as_deref(),
            Some("cyan rollback -c cyan.yaml")
        );

        // The same release again: nothing was live before it but itself.
        let r = deploy(
            id(),
            Settled {
                intent: Intent::Deploy,
                reference: &pinned("2.0.0"),
                before: &after,
                after: &after,
                config_path: "cyan.yaml".into(),
            },
        );
        assert_eq!((r.previous_version, r.rollback_command), (None, None));
    }
}
