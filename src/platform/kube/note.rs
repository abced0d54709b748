//! The switch note: what a switch of the active Service did, written on the
//! Service (annotation `cyan.dev/switch`, JSON) in the same patch as its
//! selector, so the act and its record are one write.
//!
//! The status is the record people, the CLI and the planner read, and it is
//! written after the acts. When that write is lost (the operator killed
//! between the two, a 409 that outlasted its retries, an API error), the
//! Service already sends traffic to the new color while the status still
//! names the old one: the history misses the release, its verify window
//! never opens, and nothing would ever set that right, because the next
//! reconcile finds the switch done and plans no switch. So each reconcile
//! first applies the Service's note to the status when the status is older
//! than it. Found by the real-API-server suite: a writer annotating the
//! object back to back made the status keep `liveColor: blue` for good
//! while green served.

use serde::{Deserialize, Serialize};

use super::crd::{BlueGreenDeploymentStatus, HistoryEntry, Phase};
use super::switch::push_history;
use crate::release::Color;

/// The annotation on the active Service that holds the last switch's note.
pub const ANNOTATION: &str = "cyan.dev/switch";

/// How far past this replica's clock a note may be dated (ms): another
/// replica's clock may run ahead by this much.
pub const SKEW_MS: u64 = 5 * 60 * 1000;

/// One switch of the active Service and what it means for the status.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SwitchNote {
    /// The BlueGreenDeployment that switched (`metadata.uid`): a note is
    /// applied only to it, never to an object made again under its name
    /// (which would start halted, with the old one's history).
    pub uid: String,
    /// Its name, to tell a note of another object still there (a Service
    /// two objects switch) from one of an object since deleted.
    #[serde(default)]
    pub name: String,
    /// When the switch was made (Unix ms): the note's identity, kept in
    /// `status.switchedAtMs` once applied.
    pub at_ms: u64,
    /// The color the Service selects from then on.
    pub live_color: Color,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_revision: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_version: Option<String>,
    /// History entries the switch adds, oldest first: the release that went
    /// live, or (a switch back) the release that failed.
    pub history: Vec<HistoryEntry>,
    /// The end of the verify window the switch opened (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_until_ms: Option<u64>,
    /// A switch back halts the release it left: its template hash, and the
    /// phase that says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted: Option<(String, Phase)>,
    pub message: String,
}

impl SwitchNote {
    /// Makes `s` record this switch, unless it already records it or a
    /// later one; `true` when it changed `s`.
    pub fn apply(&self, s: &mut BlueGreenDeploymentStatus) -> bool {
        if s.switched_at_ms.is_some_and(|at| at >= self.at_ms) {
            return false;
        }
        for entry in &self.history {
            push_history(s, entry.clone());
        }
        s.switched_at_ms = Some(self.at_ms);
        s.verify_until_ms = self.verify_until_ms;
        s.verify_failures = 0;
        s.live_color = Some(self.live_color);
        if self.live_revision.is_some() {
            s.live_revision = self.live_revision;
            s.live_version = self.live_version.clone();
        }
        s.message = Some(self.message.clone());
        if let Some((hash, phase)) = &self.halted {
            s.halted_hash = Some(hash.clone());
            s.phase = Some(*phase);
        }
        true
    }

    /// The note a Service carries, whoever wrote it, if cyan can read it.
    pub fn read(svc: &k8s_openapi::api::core::v1::Service) -> Option<SwitchNote> {
        let text = svc.metadata.annotations.as_ref()?.get(ANNOTATION)?;
        serde_json::from_str(text).ok()
    }

    /// The note a Service carries for the object with `uid`, as of `now_ms`:
    /// one dated past `now_ms` by more than `SKEW_MS` (a hand-written
    /// `atMs`) is not one: applied, it froze the status (a value past what
    /// the API server holds) or pushed every later switch and its verify
    /// window into the future.
    pub fn of(
        svc: &k8s_openapi::api::core::v1::Service,
        uid: &str,
        now_ms: u64,
    ) -> Option<SwitchNote> {
        Self::read(svc).filter(|n| n.uid == uid && n.at_ms <= now_ms.saturating_add(SKEW_MS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::kube::crd::Outcome;

    fn entry(revision: i64, outcome: Outcome) -> HistoryEntry {
        HistoryEntry {
            revision,
            version: format!("{revision}"),
            image: format!("web:{revision}"),
            template_hash: format!("h{revision}"),
            color: Color::Green,
            promoted_at: "2026-11-30T10:00:00Z".into(),
            outcome,
        }
    }

    fn note(at_ms: u64) -> SwitchNote {
        SwitchNote {
            uid: "u-1".into(),
            name: "web".into(),
            at_ms,
            live_color: Color::Green,
            live_revision: Some(2),
            live_version: Some("2".into()),
            history: vec![entry(2, Outcome::Promoted)],
            verify_until_ms: Some(at_ms + 60_000),
            halted: None,
            message: "switched web to green (2)".into(),
        }
    }

    #[test]
    fn a_note_is_applied_once_and_never_over_a_later_switch() {
        let mut s = BlueGreenDeploymentStatus {
            switched_at_ms: Some(1_000),
            live_color: Some(Color::Blue),
            history: vec![entry(1, Outcome::Promoted)],
            ..Default::default()
        };
        assert!(note(2_000).apply(&mut s));
        assert_eq!(s.live_color, Some(Color::Green));
        assert_eq!((s.live_revision, s.switched_at_ms), (Some(2), Some(2_000)));
        assert_eq!(s.verify_until_ms, Some(62_000));
        assert_eq!(s.history.len(), 2);
        let applied = s.clone();
        assert!(!note(2_000).apply(&mut s), "the same note again");
        assert!(!note(1_500).apply(&mut s), "an older note");
        assert_eq!(s, applied);
    }

    #[test]
    fn a_switch_back_halts_the_release_it_left() {
        let mut back = note(3_000);
        back.live_color = Color::Blue;
        back.history = vec![entry(2, Outcome::VerifyFailed)];
        back.verify_until_ms = None;
        back.halted = Some(("h2".into(), Phase::RolledBack));
        let mut s = BlueGreenDeploymentStatus {
            switched_at_ms: Some(2_000),
            verify_until_ms: Some(62_000),
            verify_failures: 2,
            ..Default::default()
        };
        assert!(back.apply(&mut s));
        assert_eq!(s.halted_hash.as_deref(), Some("h2"));
        assert_eq!(s.phase, Some(Phase::RolledBack));
        assert_eq!((s.verify_until_ms, s.verify_failures), (None, 0));
        assert_eq!(s.history[0].outcome, Outcome::VerifyFailed);
    }

    #[test]
    fn a_note_round_trips_through_its_annotation() {
        let n = note(5);
        let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
            "metadata": { "annotations": { ANNOTATION: serde_json::to_string(&n).unwrap() } }
        }))
        .unwrap();
        assert_eq!(SwitchNote::of(&svc, "u-1", 5), Some(n));
        assert_eq!(
            SwitchNote::of(&svc, "u-2", 5),
            None,
            "another object's note"
        );
    }

    #[test]
    fn a_note_from_the_future_is_not_one() {
        let at = |at_ms: u64| {
            let n = SwitchNote { at_ms, ..note(0) };
            let text = serde_json::to_string(&n).unwrap();
            let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(
                serde_json::json!({ "metadata": { "annotations": { ANNOTATION: text } } }),
            )
            .unwrap();
            SwitchNote::of(&svc, "u-1", 1_000_000).map(|n| n.at_ms)
        };
        assert_eq!(
            at(1_000_000 + SKEW_MS),
            Some(1_000_000 + SKEW_MS),
            "within the skew"
        );
        assert_eq!(at(1_000_001 + SKEW_MS), None, "a year ahead, say");
        assert_eq!(at(u64::MAX), None, "past what the status holds");
    }
}
