//! The health gate on Docker: `health::gate` runs the probes, and this file
//! gives it the replicas to probe and what only the engine can tell about
//! them (`health::Replicas`): a replica that stopped or restarted, its last
//! log lines, the image's own `HEALTHCHECK`, an app listening where no
//! request can reach it (`listeners`), and `health.command` run inside the
//! container (`exec`).

use std::time::Duration;

use bollard::models::HealthStatusEnum;
use bollard::query_parameters::LogsOptionsBuilder;
use futures_util::StreamExt;

use super::spec::Managed;
use super::{exec, listeners, DockerPlatform};
use crate::error::{Error, Result};
use crate::health::{self, CheckRun, DockerHealth, HealthState, Replicas, Target};
use crate::plan::Desired;
use crate::release::Color;

/// The replicas of `set` as the gate probes them: each at the port its
/// container publishes on 127.0.0.1. Errors for one without it.
pub(super) fn targets(set: &[Managed]) -> Result<Vec<Target>> {
    set.iter()
        .map(|m| {
            m.addr
                .map(|addr| Target {
                    name: m.name.clone(),
                    addr,
                })
                .ok_or_else(|| {
                    Error::Platform(format!("container {} has no published port", m.name))
                })
        })
        .collect()
}

impl DockerPlatform<'_> {
    /// `Step::Gate`: gates every replica of `color`, then registers the set
    /// with the proxy (`route`), not live.
    pub(super) async fn gate(&self, color: Color, d: &Desired) -> Result<()> {
        let set = self.color_set(color).await?;
        self.gate_replicas(color, &set).await?;
        self.register(color, d, &set).await
    }

    /// The health gate over `set`, a color's replicas or some of them.
    pub(super) async fn gate_replicas(&self, color: Color, set: &[Managed]) -> Result<()> {
        let c = &self.cfg.config;
        let mut targets = targets(set)?;
        if let Some(tunnel) = &self.tunnel {
            for t in &mut targets {
                t.addr = tunnel.forward(t.addr).await?;
            }
        }
        let outcome =
            health::gate(&c.health, c.proxy.host.as_deref(), &targets, self, self.out).await;
        outcome.map_err(|f| {
            Error::GateFailed(format!(
                "health gate failed for {} {color} ({}/{} replicas healthy): {}: {}\nlast log lines of {}:\n{}",
                c.app,
                f.healthy,
                targets.len(),
                f.replica,
                f.reason,
                f.replica,
                indent(&f.logs)
            ))
        })
    }
}

impl Replicas for DockerPlatform<'_> {
    async fn stopped(&self, name: &str) -> Option<String> {
        let info = self.docker.inspect_container(name, None).await.ok()?;
        let state = info.state?;
        let restarts = info.restart_count.unwrap_or(0);
        if state.running == Some(true) && restarts == 0 {
            return None;
        }
        let code = state.exit_code.unwrap_or_default();
        Some(if state.oom_killed == Some(true) {
            "container was killed for using too much memory (OOM)".into()
        } else if restarts > 0 {
            format!("container restarted {restarts} time(s) (last exit code {code})")
        } else {
            format!("container exited with code {code}")
        })
    }

    async fn log_tail(&self, name: &str) -> String {
        let opts = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail("20")
            .build();
        let mut stream = self.docker.logs(name, Some(opts));
        let mut text = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            text.push_str(&chunk.to_string());
        }
        if text.trim().is_empty() {
            return "(no output)".into();
        }
        // The container's own words, bound for a terminal.
        let lines: Vec<String> = text.lines().map(health::printable).collect();
        lines.join("\n")
    }

    async fn misbound(&self, name: &str) -> Option<String> {
        let info = self.docker.inspect_container(name, None).await.ok()?;
        let pid = info.state?.pid.filter(|p| *p > 0)?;
        let listening = listeners::listening(pid)?;
        listeners::misbound(&listening, self.cfg.config.port)
    }

    async fn exec(
        &self,
        name: &str,
        argv: &[String],
        timeout: Duration,
    ) -> std::result::Result<CheckRun, String> {
        exec::run(&self.docker, name, argv, timeout).await
    }

    async fn docker_health(&self, name: &str) -> DockerHealth {
        let Ok(info) = self.docker.inspect_container(name, None).await else {
            return DockerHealth::new(HealthState::Unknown);
        };
        let Some(health) = info.state.and_then(|s| s.health) else {
            return DockerHealth::new(HealthState::None);
        };
        let state = match health.status {
            Some(HealthStatusEnum::HEALTHY) => HealthState::Healthy,
            Some(HealthStatusEnum::UNHEALTHY) => HealthState::Unhealthy,
            Some(HealthStatusEnum::STARTING) => HealthState::Starting,
            Some(HealthStatusEnum::NONE | HealthStatusEnum::EMPTY) | None => HealthState::None,
        };
        let log = health
            .log
            .unwrap_or_default()
            .into_iter()
            .map(|r| CheckRun {
                exit_code: r.exit_code.unwrap_or(-1),
                output: r.output.unwrap_or_default(),
            });
        DockerHealth {
            state,
            log: log.collect(),
        }
    }
}

/// `text` with each line indented, under the error's first line.
fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
