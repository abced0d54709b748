//! What `cyan abort` does to a release: deploy policy, so it lives beside
//! `plan`, pure, with a table test per rule. The platform observes, asks,
//! and acts on the answer.

use crate::release::{Color, ReleaseKey};
use crate::Observed;

/// The answer to "abort this release".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Abort {
    /// The release is live and its verify window is still open: take it
    /// off the air as a failed verification would (traffic back to the
    /// previous color where it can take it), then halt it.
    SwitchBack(Color),
    /// The release runs in these colors but was never switched to: take
    /// them down and halt it. Live traffic is not touched. Empty when the
    /// release runs nowhere: the halt alone keeps it from starting.
    Remove(Vec<Color>),
    /// The release is live and its verification is over: there is nothing
    /// to abort (`cyan rollback` is for that).
    Verified,
}

/// What aborting `release` means in the observed state.
///
/// Rules: a live release is aborted only while its verify window is open
/// (judged at `o.now_ms`); otherwise every non-live color that runs the
/// release is its candidate and is removed.
pub fn abort(o: &Observed, release: &ReleaseKey) -> Abort {
    let holds = |c: Color| o.sets.get(&c).and_then(|s| s.release.as_ref()) == Some(release);
    match o.live {
        Some(live) if holds(live) => match &o.record.verify {
            Some(w) if w.color == live && o.now_ms < w.until_ms => Abort::SwitchBack(live),
            _ => Abort::Verified,
        },
        live => Abort::Remove(
            Color::ALL
                .into_iter()
                .filter(|c| Some(*c) != live && holds(*c))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{key, running, world, World};
    use Color::{Blue, Green};

    /// Blue runs `blue`, green runs `green` (when given); `live` is live.
    fn sets(blue: &str, green: Option<&str>, live: Option<Color>) -> World {
        let mut w = world().set(Blue, running(blue, 2));
        if let Some(v) = green {
            w = w.set(Green, running(v, 2));
        }
        w.0.live = live;
        w
    }

    #[test]
    fn a_candidate_beside_live_is_removed_and_live_untouched() {
        let o = sets("1", Some("2"), Some(Blue)).0;
        assert_eq!(abort(&o, &key("2")), Abort::Remove(vec![Green]));
    }

    #[test]
    fn a_first_release_with_nothing_live_is_removed() {
        let o = sets("1", None, None).0;
        assert_eq!(abort(&o, &key("1")), Abort::Remove(vec![Blue]));
    }

    #[test]
    fn a_release_running_nowhere_has_nothing_to_remove() {
        let o = sets("1", Some("2"), Some(Blue)).0;
        assert_eq!(abort(&o, &key("3")), Abort::Remove(vec![]));
    }

    #[test]
    fn a_live_release_in_its_window_is_switched_back() {
        let o = sets("1", Some("2"), Some(Green))
            .verifying(Green, "2", 2_000)
            .0;
        assert_eq!(abort(&o, &key("2")), Abort::SwitchBack(Green));
    }

    #[test]
    fn a_live_release_past_its_window_or_with_none_is_verified() {
        let past = sets("1", Some("2"), Some(Green))
            .verifying(Green, "2", 1_000)
            .0;
        assert_eq!(abort(&past, &key("2")), Abort::Verified);
        let none = sets("1", Some("2"), Some(Green)).0;
        assert_eq!(abort(&none, &key("2")), Abort::Verified);
    }

    #[test]
    fn a_window_of_the_other_color_does_not_make_live_abortable() {
        let o = sets("1", Some("2"), Some(Green))
            .verifying(Blue, "1", 2_000)
            .0;
        assert_eq!(abort(&o, &key("2")), Abort::Verified);
    }
}
