//! `hooks:`: commands cyan runs at named points of a deploy, each with a
//! timeout, on the host or in a one-off container of the candidate image.
//!
//! The points follow the walk (`hooks::Point` says when each runs and what
//! its failure does). A hook is the pipeline's own step where it belongs,
//! as CodeDeploy's appspec hooks are (`BeforeAllowTraffic`,
//! `ValidateService`): migrations before the switch, a smoke test through
//! the preview that can veto it, a cache purge after it.
//!
//! ```yaml
//! hooks:
//!   pre_deploy: { run: [./migrate, up], container: true, timeout: 5m }
//!   post_gate: { run: "curl -fsS $CYAN_PREVIEW_URL/healthz", timeout: 30s }
//! ```

use serde::{Deserialize, Serialize};

use super::Dur;

/// One hook per point; each optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HooksConfig {
    /// Before the image is built (or pulled): host only, no image exists yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_build: Option<Hook>,
    /// Before the candidate's containers start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_deploy: Option<Hook>,
    /// After the candidate passed its gate, before the switch (and before
    /// waiting for approval): a failure vetoes the switch and removes the
    /// candidate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_gate: Option<Hook>,
    /// Right after traffic moved to the new release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_switch: Option<Hook>,
    /// After the release is live and verified: the deploy's last act.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_deploy: Option<Hook>,
    /// After a deploy failed, with the reason in `CYAN_FAILURE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<Hook>,
    /// After traffic went back to an earlier release (`cyan rollback`, a
    /// failed verification, `--rollback-on-failure`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_rollback: Option<Hook>,
}

/// A command and how long it may take.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Hook {
    /// A string runs with `sh -c`; a list is the argv itself.
    pub run: HookCommand,
    /// Past this the hook is killed and counts as failed (default 5m).
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    /// Run in a one-off container of the candidate's image, with the app's
    /// env and secrets, on the `cyan` network, instead of on the host.
    /// `run` replaces the image's entrypoint and command.
    #[serde(default)]
    pub container: bool,
}

/// `run:` as written.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum HookCommand {
    Shell(String),
    Argv(Vec<String>),
}

impl HookCommand {
    /// The argv to start: `sh -c <string>`, or the list.
    pub fn argv(&self) -> Vec<String> {
        match self {
            HookCommand::Shell(s) => vec!["sh".into(), "-c".into(), s.clone()],
            HookCommand::Argv(v) => v.clone(),
        }
    }

    /// Whether there is nothing to run.
    pub fn is_empty(&self) -> bool {
        match self {
            HookCommand::Shell(s) => s.trim().is_empty(),
            HookCommand::Argv(v) => v.first().is_none_or(|a| a.is_empty()),
        }
    }
}

fn default_timeout() -> Dur {
    Dur::from_secs(300)
}

impl HooksConfig {
    /// Every hook written, with its key.
    pub fn all(&self) -> impl Iterator<Item = (&'static str, &Hook)> {
        [
            ("pre_build", &self.pre_build),
            ("pre_deploy", &self.pre_deploy),
            ("post_gate", &self.post_gate),
            ("post_switch", &self.post_switch),
            ("post_deploy", &self.post_deploy),
            ("on_failure", &self.on_failure),
            ("on_rollback", &self.on_rollback),
        ]
        .into_iter()
        .filter_map(|(k, h)| h.as_ref().map(|h| (k, h)))
    }

    /// The hook at `key` (`pre_build`, …), if written.
    pub fn get(&self, key: &str) -> Option<&Hook> {
        self.all().find(|(k, _)| *k == key).map(|(_, h)| h)
    }
}
