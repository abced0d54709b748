//! What a Docker deploy does around the engine's acts (`engine::Around`):
//! the lifecycle hooks at their points, the notifications, and a stage
//! promotion's check that its source has not moved on.
//!
//! When each hook runs, and what its failure does:
//!
//! | hook | runs | a failure |
//! |---|---|---|
//! | `pre_build` | before the image is built or pulled | stops the deploy; nothing started |
//! | `pre_deploy` | before a new release's containers start | stops the deploy; nothing started |
//! | `post_gate` | after the gate, before the switch or the wait for approval | vetoes: the candidate is removed, live untouched |
//! | `post_switch` | right after the switch | fails the deploy (`--rollback-on-failure` switches back) |
//! | `post_deploy` | when the release is live and verified | fails the deploy; it stays live |
//! | `on_failure` | after a deploy failed | a warning |
//! | `on_rollback` | after traffic went back to an earlier release | a warning |
//!
//! The first five run once per release: each run is written to the deploy
//! record (started, then passed or failed), so a deploy killed during a
//! hook and run again runs again only a hook that did not pass. The
//! crash-safety contract holds for hooks as for the acts.

use std::time::Duration;

use crate::config::Hook;
use crate::engine::Around;
use crate::error::{Error, Result};
use crate::hooks::{self, OneOff, Ran};
use crate::notify::{EventKind, Notice, Notifier};
use crate::plan::{Desired, Intent, Step};
use crate::platform::docker::DockerPlatform;
use crate::record::{HookOutcome, HookRun, Verdict};
use crate::release::{Color, ReleaseKey};

/// How long a command waits at its end for notifications still in flight.
pub const NOTIFY_BOUND: Duration = Duration::from_secs(30);

/// A promotion's source: the stage whose live, verified release it ships
/// (`record::Promotion`, as the target's record keeps it).
pub type Source = crate::record::Promotion;

pub struct Lifecycle<'a> {
    pub p: &'a DockerPlatform<'a>,
    pub notifier: Notifier,
    /// The release live when the command started, if any.
    pub previous: Option<ReleaseKey>,
    pub source: Option<Source>,
}

impl<'a> Lifecycle<'a> {
    pub fn new(p: &'a DockerPlatform<'a>, previous: Option<ReleaseKey>) -> Self {
        Lifecycle {
            p,
            notifier: Notifier::new(&p.cfg.config.notify),
            previous,
            source: None,
        }
    }

    /// Runs `hook` for `d.target` unless it passed for it already; writes
    /// the run to the record. `Error::HookFailed` when it fails.
    pub async fn once(&self, hook: &'static str, d: &Desired, color: Option<Color>) -> Result<()> {
        let Some(h) = self.p.cfg.config.hooks.get(hook) else {
            return Ok(());
        };
        let out = self.p.out;
        let v = &d.target.version;
        let record = self.p.record().await?;
        // Whatever a killed cyan's hooks left running (any hook, any
        // release) stops before a new hook starts: two migrations never
        // run at once.
        let left: usize = record
            .hooks
            .iter()
            .filter(|r| r.outcome == HookOutcome::Started)
            .filter_map(|r| r.run.as_deref())
            .map(hooks::sweep)
            .sum();
        if left > 0 {
            out.warn(format!(
                "stopped {left} process(es) an interrupted hook left running"
            ));
        }
        match record.hook_run(hook, &d.target) {
            Some(r) if r.outcome == HookOutcome::Passed => {
                out.detail(format!("{hook} passed for {v} at {}: not run again", r.at));
                return Ok(());
            }
            Some(r) if r.outcome == HookOutcome::Started => {
                out.warn(format!(
                    "{hook} was started for {v} at {} by a cyan that did not finish; running it again",
                    r.at
                ));
            }
            _ => {}
        }
        let run = run_id();
        self.write(hook, &d.target, HookOutcome::Started, Some(run.clone()))
            .await?;
        out.phase(format!("hook {hook} ({v})"));
        let ran = self.run(hook, h, d, color, None, &run).await;
        let passed = matches!(&ran, Ok(r) if r.passed());
        let outcome = if passed {
            HookOutcome::Passed
        } else {
            HookOutcome::Failed
        };
        self.write(hook, &d.target, outcome, Some(run)).await?;
        match ran {
            Ok(_) if passed => {
                out.done(format!("hook {hook} ({v})"));
                Ok(())
            }
            Ok(r) => Err(Error::HookFailed(format!(
                "hook {hook} {}",
                r.failure(h.timeout.0)
            ))),
            Err(why) => Err(Error::HookFailed(format!("hook {hook}: {why}"))),
        }
    }

    /// Runs an event hook (`on_failure`, `on_rollback`) every time; its
    /// failure is a warning, never the command's result.
    pub async fn event(&self, hook: &'static str, d: &Desired, failure: Option<&str>) {
        let Some(h) = self.p.cfg.config.hooks.get(hook) else {
            return;
        };
        let out = self.p.out;
        out.phase(format!("hook {hook}"));
        match self.run(hook, h, d, None, failure, &run_id()).await {
            Ok(r) if r.passed() => out.done(format!("hook {hook}")),
            Ok(r) => out.warn(format!("hook {hook} {}", r.failure(h.timeout.0))),
            Err(why) => out.warn(format!("hook {hook}: {why}")),
        }
    }

    async fn write(
        &self,
        hook: &str,
        release: &ReleaseKey,
        outcome: HookOutcome,
        run: Option<String>,
    ) -> Result<()> {
        let run = HookRun {
            hook: hook.into(),
            release: release.clone(),
            outcome,
            at: crate::clock::now_rfc3339(),
            run,
        };
        self.p.update_record(|r| r.record_hook(run)).await
    }

    async fn run(
        &self,
        hook: &str,
        h: &Hook,
        d: &Desired,
        color: Option<Color>,
        failure: Option<&str>,
        run: &str,
    ) -> std::result::Result<Ran, String> {
        let env = self.env(hook, d, color, failure).await;
        let p = self.p;
        if !h.container {
            let dir = p.cfg.dir();
            return hooks::on_host(&h.run.argv(), &env, &dir, h.timeout.0, run, p.out).await;
        }
        let c = &p.cfg.config;
        let image = crate::image::inspect(&p.docker, c.image.as_str(), &d.target.version)
            .await
            .map_err(|e| format!("cannot look up its image: {e}"))?
            .ok_or_else(|| format!("its image {} is not on this host", c.image.tag(v(d))))?;
        let network = p.ensure_network().await.map_err(|e| e.to_string())?;
        let job = OneOff {
            name: format!("{}-hook-{}", c.route(), hook.replace('_', "-")),
            image: &image.id,
            argv: h.run.argv(),
            env: c
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .chain(p.secrets.expose_as_env())
                .chain(env.iter().map(|(k, v)| format!("{k}={v}")))
                .collect(),
            network,
            route: c.route(),
            secrets: &p.secrets,
        };
        hooks::in_container(&p.docker, job, h.timeout.0, p.out).await
    }

    /// The `CYAN_*` variables a hook gets.
    async fn env(
        &self,
        hook: &str,
        d: &Desired,
        color: Option<Color>,
        failure: Option<&str>,
    ) -> Vec<(String, String)> {
        let p = self.p;
        let c = &p.cfg.config;
        let served = p.proxy.health().await.unwrap_or_default();
        let live = p
            .route_view()
            .await
            .ok()
            .flatten()
            .and_then(|v| v.state.live);
        let digest = crate::image::inspect(&p.docker, c.image.as_str(), v(d))
            .await
            .ok()
            .flatten()
            .and_then(|i| i.digest);
        let preview = c
            .proxy
            .preview
            .as_ref()
            .map(|pv| pv.url(&served, c.proxy.path_prefix.as_deref()));
        let vars = [
            ("CYAN_HOOK", Some(hook.to_string())),
            ("CYAN_PHASE", Some(phase_of(hook).to_string())),
            ("CYAN_APP", Some(c.app.to_string())),
            ("CYAN_ENVIRONMENT", Some(c.environment.to_string())),
            ("CYAN_VERSION", Some(v(d).to_string())),
            ("CYAN_IMAGE", Some(c.image.tag(v(d)))),
            ("CYAN_DIGEST", digest),
            ("CYAN_COLOR", color.map(|c| c.to_string())),
            ("CYAN_LIVE_COLOR", live.map(|c| c.to_string())),
            (
                "CYAN_PREVIOUS_VERSION",
                self.previous.as_ref().map(|k| k.version.clone()),
            ),
            ("CYAN_URL", Some(c.url(&served))),
            ("CYAN_PREVIEW_URL", preview),
            ("CYAN_FAILURE", failure.map(String::from)),
            ("CYAN_CONFIG", Some(p.cfg.path.display().to_string())),
        ];
        vars.into_iter()
            .map(|(k, v)| (k.to_string(), v.unwrap_or_default()))
            .collect()
    }

    /// A notice of `event` about `d.target`, with what this deploy knows.
    pub async fn notice(&self, event: EventKind, d: &Desired) -> Notice {
        let p = self.p;
        let c = &p.cfg.config;
        let served = p.proxy.health().await.unwrap_or_default();
        let config = p.cfg.path.display();
        let env_flag = match c.environments.is_empty() {
            true => String::new(),
            false => format!(" -e {}", c.environment),
        };
        let color = p.containers().await.ok().and_then(|all| {
            all.into_iter()
                .find(|m| m.release.key() == d.target)
                .map(|m| (m.color, m.release.digest))
        });
        Notice {
            event,
            app: c.app.to_string(),
            environment: c.environment.to_string(),
            version: v(d).to_string(),
            digest: color.as_ref().and_then(|(_, digest)| digest.clone()),
            color: color.map(|(c, _)| c.to_string()),
            previous_version: self.previous.as_ref().map(|k| k.version.clone()),
            url: Some(c.url(&served)).filter(|u| !u.is_empty()),
            preview_url: c
                .proxy
                .preview
                .as_ref()
                .map(|pv| pv.url(&served, c.proxy.path_prefix.as_deref())),
            promote_command: Some(format!("cyan promote -c {config}{env_flag}")),
            rollback_command: Some(format!("cyan rollback -c {config}{env_flag}")),
            reason: None,
            log_tail: None,
            from_environment: self.source.as_ref().map(|s| s.environment.clone()),
            at_ms: crate::clock::now_ms(),
        }
    }

    /// Sends `event` (never waits for it; `finish` does).
    pub async fn notify(&self, event: EventKind, d: &Desired, reason: Option<String>) {
        if self.p.cfg.config.notify.is_empty() {
            return;
        }
        let mut notice = self.notice(event, d).await;
        if let Some(why) = reason {
            // A gate's or hook's report ends with the output that says why.
            let (head, tail) = why.split_once('\n').unwrap_or((&why, ""));
            notice.reason = Some(head.to_string());
            notice.log_tail = Some(tail.to_string()).filter(|t| !t.trim().is_empty());
        }
        self.notifier.send(notice);
    }

    /// `cyan promote --from`: refuses when the source stage moved on from
    /// the release this promotion ships (`Error::Refused`, exit 9).
    async fn source_unmoved(&self) -> Result<()> {
        let Some(src) = &self.source else {
            return Ok(());
        };
        let now = super::stages::live_verified(&self.p.proxy, &src.route).await?;
        match now {
            Some((key, true)) if key == src.source => Ok(()),
            Some((key, false)) if key == src.source => Err(Error::Refused(format!(
                "{} in {} is no longer verified (cyan history -e {}); nothing was switched",
                key.version, src.environment, src.environment
            ))),
            Some((key, _)) => Err(Error::Refused(format!(
                "{} moved on since this promotion was asked for: {} is live there now, not {}; nothing was switched. Promote again to ship {}",
                src.environment, key.version, src.source.version, key.version
            ))),
            None => Err(Error::Refused(format!(
                "{} no longer serves a verified {}; nothing was switched",
                src.environment, src.source.version
            ))),
        }
    }
}

/// A fresh mark for one hook run: 16 hex digits.
fn run_id() -> String {
    let mut bytes = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("the system's random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn v(d: &Desired) -> &str {
    &d.target.version
}

/// `CYAN_PHASE`: where in the walk the hook runs.
fn phase_of(hook: &str) -> &'static str {
    match hook {
        "pre_build" => "build",
        "pre_deploy" => "launch",
        "post_gate" => "gated",
        "post_switch" => "switched",
        "post_deploy" => "live",
        "on_failure" => "failed",
        _ => "rolled-back",
    }
}

impl Around for Lifecycle<'_> {
    async fn before(&self, step: &Step, d: &Desired) -> Result<()> {
        let new = d.intent != Intent::Rollback;
        match step {
            Step::Build if new => self.once("pre_build", d, None).await,
            Step::Launch(c) if new && !self.p.record().await?.was_live(&d.target) => {
                self.once("pre_deploy", d, Some(*c)).await
            }
            Step::Switch(c) | Step::AwaitApproval(c) if new => {
                self.source_unmoved().await?;
                self.once("post_gate", d, Some(*c)).await
            }
            _ => Ok(()),
        }
    }

    async fn after(&self, step: &Step, d: &Desired) -> Result<()> {
        match step {
            Step::Switch(_) if d.intent == Intent::Rollback => {
                self.notify(EventKind::RolledBack, d, None).await;
                self.event("on_rollback", d, None).await;
                Ok(())
            }
            Step::Switch(c) => {
                self.notify(EventKind::Switched, d, None).await;
                self.once("post_switch", d, Some(*c)).await
            }
            Step::Verify(_) if self.p.cfg.config.verify.is_some() => {
                // An inconclusive window kept live (`on_inconclusive:
                // pass`) is announced as such, not as a pass.
                let seen = self.p.verdict.lock().expect("verdict lock").clone();
                let why = seen.filter(|f| f.verdict != Verdict::Passed).map(|f| {
                    format!(
                        "verification inconclusive ({} requests, {} needed); kept live as verify.on_inconclusive: pass says",
                        f.requests, f.min_requests
                    )
                });
                self.notify(EventKind::Verified, d, why).await;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
