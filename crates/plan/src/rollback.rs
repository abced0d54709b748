//! What a rollback goes to: deploy policy, so it lives beside `plan`, pure,
//! with a table test per rule. The CLI only observes the two sides and
//! reports the answer.

use crate::record::DeployRecord;
use crate::release::{Color, ReleaseKey};

/// The non-live color's set as a rollback sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptSet {
    pub color: Color,
    pub release: ReleaseKey,
    /// Containers in the set.
    pub replicas: u32,
}

/// Where a rollback goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackTarget {
    pub release: ReleaseKey,
    /// `Some(replicas)` when the release still runs in the other color (an
    /// instant switch); `None` when it comes from history (cold: started
    /// from its image and its recorded config, then gated).
    pub kept: Option<u32>,
}

/// The release `cyan rollback [--to to]` goes to, given what is live and
/// what the other color holds; `Err` says why there is none, for `route`.
///
/// Rules: a set that was never live is the candidate, never a rollback's
/// (promote makes it live); a named version is found in the other color,
/// else in the history; unnamed, the newest release that was live before,
/// skipping any whose newest event is a failed verification (naming it
/// still reaches it); never the live release itself.
pub fn rollback_target(
    route: &str,
    record: &DeployRecord,
    live: Option<&ReleaseKey>,
    other: Option<&KeptSet>,
    to: Option<&str>,
) -> Result<RollbackTarget, String> {
    let live =
        live.ok_or_else(|| format!("nothing is live for {route}; there is nothing to roll back"))?;
    let named_in_history = |v: &str| record.live_releases().iter().any(|r| r.version == v);
    if let Some(set) = other.filter(|s| {
        !record.was_live(&s.release)
            && Some(s.release.version.as_str()) == to
            && !named_in_history(&s.release.version)
    }) {
        return Err(format!(
            "{} on {} was never live: it is the candidate, not a release to roll back to; `cyan promote` makes it live, `cyan abort` removes it",
            set.release.version, set.color
        ));
    }
    let kept = other.filter(|s| {
        record.was_live(&s.release)
            && match to {
                Some(v) => s.release.version == v,
                None => !record.failed_verify(&s.release),
            }
    });
    let release = match (kept, to) {
        (Some(set), _) => set.release.clone(),
        (None, Some(v)) => record
            .live_releases()
            .into_iter()
            .find(|r| r.version == v)
            .map(|r| r.key())
            .ok_or_else(|| format!("version {v} is not in the history of {route}; see `cyan history`"))?,
        (None, None) => record
            .rollback_targets()
            .into_iter()
            .map(|r| r.key())
            .find(|k| k != live)
            .ok_or_else(|| {
                let failed = record
                    .live_releases()
                    .into_iter()
                    .find(|r| &r.key() != live && record.failed_verify(&r.key()));
                format!(
                    "{route} has no previous release to roll back to{}",
                    failed.map_or(String::new(), |r| format!(
                        " ({} failed its verification; `cyan rollback --to {}` goes back to it all the same)",
                        r.version, r.version
                    ))
                )
            })?,
    };
    if &release == live {
        return Err(format!("{} is already live", release.version));
    }
    Ok(RollbackTarget {
        kept: kept.map(|s| s.replicas),
        release,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Event, HistoryEntry};
    use crate::release::Release;

    fn key(v: &str) -> ReleaseKey {
        ReleaseKey {
            version: v.into(),
            config_hash: "h".into(),
        }
    }

    /// A record whose history is `events`, oldest first.
    fn record(events: &[(Event, &str)]) -> DeployRecord {
        let mut r = DeployRecord::default();
        for (event, v) in events {
            r.push_history(HistoryEntry {
                event: *event,
                color: Color::Blue,
                release: Release {
                    version: v.to_string(),
                    revision: 1,
                    image_id: String::new(),
                    digest: None,
                    config_hash: "h".into(),
                },
                at: String::new(),
                verify: None,
                from_environment: None,
                by: None,
            });
        }
        r
    }

    fn kept(v: &str) -> KeptSet {
        KeptSet {
            color: Color::Green,
            release: key(v),
            replicas: 2,
        }
    }

    fn target(v: &str, kept: Option<u32>) -> Result<RollbackTarget, String> {
        Ok(RollbackTarget {
            release: key(v),
            kept,
        })
    }

    use Event::{Promoted as P, VerifyFailed as F};

    #[test]
    fn unnamed_goes_to_the_release_before_and_prefers_it_running() {
        let r = record(&[(P, "1"), (P, "2")]);
        let two = key("2");
        assert_eq!(
            rollback_target("web", &r, Some(&two), Some(&kept("1")), None),
            target("1", Some(2)),
            "kept hot: instant"
        );
        assert_eq!(
            rollback_target("web", &r, Some(&two), None, None),
            target("1", None),
            "retired: cold"
        );
    }

    #[test]
    fn a_named_version_comes_from_the_other_color_or_the_history() {
        let r = record(&[(P, "1"), (P, "2"), (P, "3")]);
        let three = key("3");
        assert_eq!(
            rollback_target("web", &r, Some(&three), Some(&kept("2")), Some("1")),
            target("1", None)
        );
        assert_eq!(
            rollback_target("web", &r, Some(&three), Some(&kept("2")), Some("2")),
            target("2", Some(2))
        );
        assert!(rollback_target("web", &r, Some(&three), None, Some("9"))
            .unwrap_err()
            .contains("version 9 is not in the history of web"));
        assert!(rollback_target("web", &r, Some(&three), None, Some("3"))
            .unwrap_err()
            .contains("3 is already live"));
    }

    #[test]
    fn a_failed_verification_is_skipped_unless_named() {
        // 1 live, 2 failed its verify and traffic went back to 1, then 3.
        let r = record(&[(P, "1"), (P, "2"), (F, "2"), (P, "3")]);
        let three = key("3");
        assert_eq!(
            rollback_target("web", &r, Some(&three), Some(&kept("2")), None),
            target("1", None),
            "not the kept set that failed"
        );
        assert_eq!(
            rollback_target("web", &r, Some(&three), Some(&kept("2")), Some("2")),
            target("2", Some(2)),
            "named, it is reached"
        );
        let only_failed = record(&[(P, "2"), (F, "2"), (P, "3")]);
        let err = rollback_target("web", &only_failed, Some(&three), None, None).unwrap_err();
        assert!(
            err.contains("no previous release") && err.contains("--to 2"),
            "{err}"
        );
    }

    #[test]
    fn the_candidate_is_never_a_rollbacks() {
        let r = record(&[(P, "1")]);
        let one = key("1");
        let err = rollback_target("web", &r, Some(&one), Some(&kept("2")), Some("2")).unwrap_err();
        assert!(
            err.contains("never live") && err.contains("cyan promote"),
            "{err}"
        );
        let err = rollback_target("web", &r, Some(&one), Some(&kept("2")), None).unwrap_err();
        assert!(err.contains("no previous release"), "{err}");
    }

    #[test]
    fn nothing_live_nothing_to_roll_back() {
        let err = rollback_target("web", &DeployRecord::default(), None, None, None).unwrap_err();
        assert!(err.contains("nothing is live for web"), "{err}");
    }
}
