//! `verify:`: how long a release is watched after the switch and what 5xx
//! ratio fails it. The verdict itself is the planner's (`plan::verify`).

use serde::{Deserialize, Serialize};

use super::{Dur, Ratio};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    pub duration: Dur,
    #[serde(default = "default_max_5xx")]
    pub max_5xx_ratio: Ratio,
    /// Below this many requests the ratio is not judged (1 error in 2 is
    /// noise): the verdict is inconclusive.
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// What an inconclusive verdict does: `wait` (the default) keeps
    /// watching until `min_requests` or `deadline`, then fails; `pass`
    /// keeps the release live and says so; `fail` switches back.
    #[serde(default)]
    pub on_inconclusive: Inconclusive,
    /// How long `wait` may watch in all, from the switch (default: three
    /// times `duration`).
    #[serde(default)]
    pub deadline: Option<Dur>,
}

pub use crate::plan::verify::Inconclusive;

impl VerifyConfig {
    /// How long verification may watch in all, from the switch.
    pub fn deadline(&self) -> std::time::Duration {
        self.deadline
            .map_or(self.duration.0 * 3, |d| d.0.max(self.duration.0))
    }

    /// The thresholds as the planner's verify policy takes them.
    pub fn policy(&self) -> crate::plan::verify::VerifyPolicy {
        crate::plan::verify::VerifyPolicy {
            duration_ms: self.duration.0.as_millis() as u64,
            deadline_ms: self.deadline().as_millis() as u64,
            max_5xx_ratio: self.max_5xx_ratio.0,
            min_requests: self.min_requests,
            on_inconclusive: self.on_inconclusive,
        }
    }
}

fn default_max_5xx() -> Ratio {
    Ratio(0.01)
}
fn default_min_requests() -> u64 {
    20
}
