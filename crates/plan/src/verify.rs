//! The verdict on a verify window: deploy policy (what is a breach, what is
//! too few requests to judge, when waiting ends), so it lives beside `plan`,
//! pure, with its table. The Docker platform reads the proxy's counters and
//! acts on the call; it decides nothing.

use serde::{Deserialize, Serialize};

use crate::record::VerifyWindow;

/// `verify.on_inconclusive`: what too few requests to judge lead to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Inconclusive {
    /// Keep the release live, and say so in the history.
    Pass,
    /// Switch back at once.
    Fail,
    /// Watch on until there are enough requests or the deadline passes,
    /// then fail.
    #[default]
    Wait,
}

/// The thresholds of `verify:`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VerifyPolicy {
    /// The window, from the switch (ms).
    pub duration_ms: u64,
    /// How long `wait` may watch in all, from the switch (ms).
    pub deadline_ms: u64,
    /// 5xx answers over requests above which the release fails (0..=1).
    pub max_5xx_ratio: f64,
    /// Fewer requests than this are too few to judge.
    pub min_requests: u64,
    pub on_inconclusive: Inconclusive,
}

/// What the live release answered through the proxy since its switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub requests: u64,
    pub status_5xx: u64,
}

/// What to do with a verify window now.
#[derive(Debug, Clone, PartialEq)]
pub enum VerifyCall {
    /// Not over yet: keep watching.
    Watch,
    Pass,
    /// Over with too few requests, `on_inconclusive: wait`: watch on until
    /// `deadline_ms` (Unix ms), or until there are enough.
    Extend {
        deadline_ms: u64,
    },
    /// Over with too few requests, `on_inconclusive: pass`.
    PassInconclusive,
    /// Switch back: the counts breach the thresholds (why).
    Fail(String),
    /// Switch back: too few requests to judge by the end (why).
    FailInconclusive(String),
}

/// `Some(why)` when the counts alone fail the release: every request
/// answered 5xx (however few), or, with at least `min_requests`, a 5xx
/// ratio above the threshold.
pub fn breach(c: Counts, p: &VerifyPolicy) -> Option<String> {
    if c.requests > 0 && c.status_5xx == c.requests {
        return Some(format!(
            "every one of the {} requests answered 5xx",
            c.requests
        ));
    }
    if c.requests < p.min_requests.max(1) {
        return None;
    }
    let ratio = c.status_5xx as f64 / c.requests as f64;
    (ratio > p.max_5xx_ratio).then(|| {
        format!(
            "5xx ratio {:.1}% ({} of {} requests) exceeds {:.1}%",
            ratio * 100.0,
            c.status_5xx,
            c.requests,
            p.max_5xx_ratio * 100.0
        )
    })
}

/// The call on `window` at `now_ms`, given the counts so far.
pub fn judge(c: Counts, p: &VerifyPolicy, window: &VerifyWindow, now_ms: u64) -> VerifyCall {
    if let Some(why) = breach(c, p) {
        return VerifyCall::Fail(why);
    }
    let over = now_ms >= window.until_ms;
    let enough = c.requests >= p.min_requests.max(1);
    // Waiting past the window ends as soon as there is enough.
    let ends = over || (enough && window.deadline_ms.is_some());
    if !ends {
        return VerifyCall::Watch;
    }
    if enough {
        return VerifyCall::Pass;
    }
    match (p.on_inconclusive, window.deadline_ms) {
        (Inconclusive::Wait, None) => VerifyCall::Extend {
            deadline_ms: window.until_ms.saturating_sub(p.duration_ms) + p.deadline_ms,
        },
        (Inconclusive::Pass, _) => VerifyCall::PassInconclusive,
        (_, deadline) => VerifyCall::FailInconclusive(format!(
            "inconclusive {}: {}",
            if deadline.is_some() {
                "by the verify deadline"
            } else {
                "in the window"
            },
            too_few(c, p)
        )),
    }
}

/// Counts below `min_requests`, in words.
pub fn too_few(c: Counts, p: &VerifyPolicy) -> String {
    format!(
        "{} request(s), {} 5xx: fewer than the {} verify.min_requests needs to judge",
        c.requests, c.status_5xx, p.min_requests
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::{Color, ReleaseKey};

    const POLICY: VerifyPolicy = VerifyPolicy {
        duration_ms: 10_000,
        deadline_ms: 30_000,
        max_5xx_ratio: 0.05,
        min_requests: 20,
        on_inconclusive: Inconclusive::Wait,
    };

    /// A window opened by a switch at 1_000.
    fn window(deadline_ms: Option<u64>) -> VerifyWindow {
        VerifyWindow {
            color: Color::Green,
            release: ReleaseKey {
                version: "2".into(),
                config_hash: "h".into(),
            },
            until_ms: deadline_ms.unwrap_or(11_000),
            deadline_ms,
        }
    }

    fn counts(requests: u64, status_5xx: u64) -> Counts {
        Counts {
            requests,
            status_5xx,
        }
    }

    #[test]
    fn the_verdict_table() {
        let open = window(None);
        let extended = window(Some(31_000));
        let with = |on_inconclusive| VerifyPolicy {
            on_inconclusive,
            ..POLICY
        };
        use Inconclusive::{Fail, Pass, Wait};
        let cases: [(Counts, Inconclusive, &VerifyWindow, u64, VerifyCall); 10] = [
            (counts(5, 0), Wait, &open, 5_000, VerifyCall::Watch),
            (counts(50, 1), Wait, &open, 11_000, VerifyCall::Pass),
            (counts(50, 1), Wait, &open, 5_000, VerifyCall::Watch),
            (
                counts(5, 0),
                Wait,
                &open,
                11_000,
                VerifyCall::Extend {
                    deadline_ms: 31_000,
                },
            ),
            (counts(20, 0), Wait, &extended, 20_000, VerifyCall::Pass),
            (counts(5, 0), Wait, &extended, 20_000, VerifyCall::Watch),
            (
                counts(5, 0),
                Pass,
                &open,
                11_000,
                VerifyCall::PassInconclusive,
            ),
            (
                counts(5, 0),
                Fail,
                &open,
                11_000,
                VerifyCall::FailInconclusive(format!(
                    "inconclusive in the window: {}",
                    too_few(counts(5, 0), &POLICY)
                )),
            ),
            (
                counts(5, 0),
                Wait,
                &extended,
                31_000,
                VerifyCall::FailInconclusive(format!(
                    "inconclusive by the verify deadline: {}",
                    too_few(counts(5, 0), &POLICY)
                )),
            ),
            // Long after the window (its cyan was killed): judged now.
            (counts(50, 0), Wait, &open, 999_000, VerifyCall::Pass),
        ];
        for (c, on, w, now, want) in cases {
            assert_eq!(
                judge(c, &with(on), w, now),
                want,
                "{c:?} {on:?} {w:?} at {now}"
            );
        }
    }

    #[test]
    fn a_breach_fails_at_once_and_all_5xx_fails_however_few() {
        let open = window(None);
        assert_eq!(
            judge(counts(3, 3), &POLICY, &open, 2_000),
            VerifyCall::Fail("every one of the 3 requests answered 5xx".into())
        );
        assert_eq!(
            judge(counts(100, 10), &POLICY, &open, 2_000),
            VerifyCall::Fail("5xx ratio 10.0% (10 of 100 requests) exceeds 5.0%".into())
        );
        assert_eq!(
            breach(counts(100, 5), &POLICY),
            None,
            "at the threshold passes"
        );
        assert_eq!(
            breach(counts(10, 9), &POLICY),
            None,
            "too few to judge a ratio"
        );
        assert_eq!(breach(counts(0, 0), &POLICY), None);
    }
}
