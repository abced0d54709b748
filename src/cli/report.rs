//! What the commands return: one report type per command, filled by either
//! platform and rendered by `output` (text, `-o json`, and the GitHub
//! step outputs and job summary of `-o github`).
//!
//! The JSON is a contract scripts and the GitHub Action read (README,
//! "`cyan status -o json` (stable contract)"): fields are added, never
//! renamed or removed, and every key is present on Docker and on
//! Kubernetes alike; a platform with nothing to say gives `null`, `""` or
//! `[]`, as each field's doc says. Docker builds these in `status.rs` and
//! `converge.rs`; Kubernetes maps the BlueGreenDeployment's status in
//! `kube/report.rs`.

use std::fmt::Write as _;

use serde::Serialize;

use crate::config::PlatformKind;
use crate::health::HealthState;
use crate::output::Report;
use crate::plan::{Intent, Phase};
use crate::record::{Event, HistoryEntry, VerifyFigures};
use crate::release::Color;

/// Which app a report is about; its fields sit at the report's top level.
#[derive(Debug, Clone, Serialize)]
pub struct AppId {
    /// cyan.yaml's `app`.
    pub app: String,
    /// cyan.yaml's `environment`.
    pub environment: String,
    /// `docker` or `kubernetes`: where the app runs.
    pub platform: PlatformKind,
    /// The BlueGreenDeployment's namespace; `null` on Docker.
    pub namespace: Option<String>,
}

/// `cyan status`: what is live, previous and candidate, and what the app
/// is doing now.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    #[serde(flatten)]
    pub id: AppId,
    /// Where a script on this host reaches the app: the proxy's address for
    /// it on Docker (`""` when cyan.yaml routes it nowhere); `""` on
    /// Kubernetes, where the app is reached through its active Service,
    /// and with `hosts:`, where it is reached through the load balancer.
    pub url: String,
    /// not-deployed | progressing | interrupted | awaiting-approval |
    /// verifying | live. On Kubernetes it is the operator's phase in these
    /// words (README, "From the CLI"); `interrupted` is Docker's only.
    pub phase: Phase,
    /// Copies of `live.version`, the live image (`repository:version`),
    /// `live.digest` (`repository@sha256:…`), `live.revision`, and
    /// `previous.version`, at the top level for scripts and step outputs.
    pub version: Option<String>,
    pub image: Option<String>,
    pub digest: Option<String>,
    pub revision: Option<u64>,
    pub previous_version: Option<String>,
    pub live: Option<ColorView>,
    /// The release live before, while its color still runs (instant
    /// rollback).
    pub previous: Option<ColorView>,
    /// A release brought up beside live that was never live.
    pub candidate: Option<ColorView>,
    /// The deploy that holds the app's lock, described; `null` when none
    /// does, and always on Kubernetes (the operator is the one writer).
    pub lock: Option<String>,
    /// Things a person should look at, one sentence each (an unhealthy live
    /// container; a rollout the operator stopped).
    pub warnings: Vec<String>,
    /// Where the live color's serving disagrees with its containers or
    /// with cyan.yaml's route, one line each; `cyan deploy` of the live
    /// version repairs it. Empty when all is in line, and always on
    /// Kubernetes (Services route by themselves).
    pub drift: Vec<String>,
    /// `proxy.preview`, when cyan.yaml sets one (Docker; `null` on
    /// Kubernetes, whose `previewService` selects the candidate).
    pub preview: Option<PreviewView>,
    /// The platform's last word on the rollout: the operator's
    /// `status.message` on Kubernetes; `null` on Docker, whose deploy says
    /// it as it goes.
    pub message: Option<String>,
    /// With `hosts:`, one line per host (the rest of the report is the
    /// first host's that answered); absent on one host.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostStatus>,
}

/// One host of a fleet, as `cyan status` sees it.
#[derive(Debug, Clone, Serialize)]
pub struct HostStatus {
    pub name: String,
    pub url: String,
    /// As `StatusReport::phase`; `null` when the host did not answer.
    pub phase: Option<Phase>,
    /// Its live version.
    pub version: Option<String>,
    /// Not on the version most hosts run live (or not answering): the
    /// next `cyan deploy` of that version brings it level.
    pub behind: bool,
    /// Why it did not answer.
    pub error: Option<String>,
}

/// The app's preview: where it is, and what it serves now.
#[derive(Debug, Clone, Serialize)]
pub struct PreviewView {
    pub url: String,
    /// The candidate it serves; `None`: no candidate, it answers 503.
    pub color: Option<Color>,
    pub version: Option<String>,
}

/// One color's release.
#[derive(Debug, Clone, Serialize)]
pub struct ColorView {
    pub color: Color,
    pub version: String,
    /// The release's number, counted per app (Kubernetes: its
    /// ControllerRevision's).
    pub revision: u64,
    /// `repository@sha256:…`; `null` when the image was never pushed.
    pub digest: Option<String>,
    /// The image's content address (`sha256:…`) that the containers run;
    /// `null` on Kubernetes, where the cluster pulls by `digest`.
    pub image_id: Option<String>,
    /// Whether this set passed its health gate.
    pub gated: bool,
    /// The color's containers (Docker); empty on Kubernetes, whose CLI
    /// reads only the BlueGreenDeployment (`kubectl get pods -l
    /// cyan.dev/color=…` lists the pods).
    pub containers: Vec<ContainerView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ContainerView {
    pub name: String,
    pub id: String,
    pub state: String,
    pub address: Option<String>,
    /// Docker's health from the image's HEALTHCHECK: healthy | unhealthy |
    /// starting | none (no HEALTHCHECK) | unknown (the engine did not say).
    pub health: HealthState,
}

impl Report for StatusReport {
    fn text(&self) -> String {
        let mut text = format!("{} ({}", self.id.app, self.id.environment);
        if let Some(ns) = &self.id.namespace {
            let _ = write!(text, ", namespace {ns}");
        }
        let _ = writeln!(text, ") — {}", self.phase);
        if !self.url.is_empty() {
            let _ = writeln!(text, "url: {}", self.url);
        }
        for (label, v) in [
            ("live", &self.live),
            ("previous", &self.previous),
            ("candidate", &self.candidate),
        ] {
            let Some(v) = v else {
                let _ = writeln!(text, "{label:>9}: -");
                continue;
            };
            let mut notes = vec![format!("revision {}", v.revision)];
            if !v.containers.is_empty() {
                notes.push(format!("{} container(s)", v.containers.len()));
            }
            if v.gated {
                notes.push("gated".into());
            }
            let _ = writeln!(
                text,
                "{label:>9}: {} {} ({})",
                v.color,
                v.version,
                notes.join(", ")
            );
            for ct in &v.containers {
                let _ = writeln!(
                    text,
                    "           {} {} {} health: {}",
                    ct.name,
                    ct.state,
                    ct.address.as_deref().unwrap_or("-"),
                    ct.health
                );
            }
        }
        if let Some(p) = &self.preview {
            let _ = match (&p.version, p.color) {
                (Some(v), Some(col)) => writeln!(text, "  preview: {} serves {v} ({col})", p.url),
                _ => writeln!(text, "  preview: {} (no candidate: answers 503)", p.url),
            };
        }
        if let Some(l) = &self.lock {
            let _ = writeln!(text, "     lock: {l}");
        }
        for d in &self.drift {
            let _ = writeln!(text, "    drift: {d}");
        }
        if let (Some(live), false) = (&self.live, self.drift.is_empty()) {
            let _ = writeln!(
                text,
                "           repair with: cyan deploy --version {}",
                live.version
            );
        }
        if let Some(m) = &self.message {
            let _ = writeln!(text, "  message: {m}");
        }
        for h in &self.hosts {
            let _ = match &h.error {
                Some(e) => writeln!(text, "  host {}: unreachable: {e}", h.name),
                None => writeln!(
                    text,
                    "  host {}: {} {}{}",
                    h.name,
                    h.phase.map_or("?".into(), |p| p.to_string()),
                    h.version.as_deref().unwrap_or("-"),
                    if h.behind { " (behind)" } else { "" }
                ),
            };
        }
        for w in &self.warnings {
            let _ = writeln!(text, "  warning: {w}");
        }
        text.trim_end().to_string()
    }
}

/// `cyan deploy`, `promote` and `rollback`: the release the command made
/// live, or left waiting for approval.
#[derive(Debug, Clone, Serialize)]
pub struct DeployReport {
    #[serde(flatten)]
    pub id: AppId,
    /// deploy | promote | rollback: what was asked.
    pub intent: Intent,
    /// live | awaiting-approval (a failure is the command's error).
    pub phase: Phase,
    pub version: String,
    /// The release's revision (see `ColorView::revision`).
    pub revision: Option<u64>,
    /// The color the release runs on.
    pub color: Option<Color>,
    /// As `StatusReport::url`.
    pub url: String,
    /// `repository:version`.
    pub image: String,
    /// `repository@sha256:…`; `null` when the image was never pushed.
    pub digest: Option<String>,
    /// As `ColorView::image_id` (`null` on Kubernetes).
    pub image_id: Option<String>,
    /// The release that was live before this command, when it is another.
    pub previous_version: Option<String>,
    /// The color still running `previous_version` (instant rollback).
    pub previous_color: Option<Color>,
    /// How to undo this, when the previous release is still running.
    pub rollback_command: Option<String>,
    /// What verification saw, when this run watched a verify window to
    /// its end: `{verdict: passed | inconclusive, requests, status_5xx,
    /// min_requests}` (a failed one is the command's error). Docker's
    /// proxy counts requests; on Kubernetes it is `null` (the operator's
    /// checks are probes, not counts).
    pub verify: Option<VerifyFigures>,
    /// What became of this run's notifications (`notify:`): destination,
    /// event, delivered, attempts, detail. Also kept in the deploy record.
    /// `[]` without destinations (and on Kubernetes, where the operator
    /// deploys).
    pub notifications: Vec<crate::notify::Outcome>,
    /// cyan.yaml's path (with `-e <environment>` when the file has
    /// environments), for the next commands the text suggests.
    #[serde(skip)]
    pub config_path: String,
    /// With `hosts:`: every host's part, and the switch's skew. Absent on
    /// one host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetReport>,
}

/// What a command did on each host of a fleet.
#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    pub hosts: Vec<HostPart>,
    /// The switch's spread, in milliseconds: from the first switch request
    /// sent to the last host's answer. Both versions may answer (on
    /// different hosts) within it, never outside it. `null` when no host
    /// switched in this run.
    pub skew_ms: Option<f64>,
}

/// One host's part in a fleet command.
#[derive(Debug, Clone, Serialize)]
pub struct HostPart {
    pub name: String,
    pub url: String,
    /// The color the release runs on there.
    pub color: Option<Color>,
    /// prepared | switched | live | rolled-back | awaiting-approval.
    pub outcome: String,
    /// When its switch was answered, in milliseconds after the first
    /// switch request was sent (`null` when it did not switch in this run).
    pub switched_at_ms: Option<f64>,
}

impl Report for DeployReport {
    fn text(&self) -> String {
        let color = self.color.map_or("?", Color::as_str);
        let where_ = match (&self.id.namespace, self.url.as_str()) {
            (_, url) if !url.is_empty() => format!(" at {url}"),
            (Some(ns), _) => format!(" in namespace {ns}"),
            (None, _) => String::new(),
        };
        let main = match self.phase {
            Phase::AwaitingApproval => format!(
                "{} {} is up on {color} and passed its health gate; live traffic is untouched.\n\
                 Approve with: cyan promote -c {path}\n\
                 Or remove it: cyan abort -c {path}",
                self.id.app,
                self.version,
                path = self.config_path
            ),
            _ => format!(
                "{} {} is live on {color}{where_}",
                self.id.app, self.version
            ),
        };
        let Some(fleet) = &self.fleet else {
            return main;
        };
        let mut text = main;
        for h in &fleet.hosts {
            text.push_str(&format!(
                "\n  {}: {} on {}",
                h.name,
                h.outcome,
                h.color.map_or("?", Color::as_str)
            ));
        }
        if let Some(skew) = fleet.skew_ms {
            text.push_str(&format!(
                "\nswitch skew across {} hosts: {skew:.1} ms",
                fleet.hosts.len()
            ));
        }
        text
    }
}

/// `cyan abort`: the rollout that was stopped.
#[derive(Debug, Clone, Serialize)]
pub struct AbortReport {
    #[serde(flatten)]
    pub id: AppId,
    /// The version of the candidate that was removed (scaled down).
    pub aborted: String,
    /// Its color.
    pub color: Option<Color>,
    /// What happened, in a sentence.
    pub message: String,
}

impl Report for AbortReport {
    fn text(&self) -> String {
        self.message.clone()
    }
}

/// One line of `cyan history`: a release that went live, or was switched
/// away from.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryLine {
    /// promoted | rolled-back | verify-failed | verify-inconclusive
    /// (Kubernetes has no `verify-inconclusive`).
    pub event: Event,
    pub color: Color,
    pub release: ReleaseView,
    /// RFC 3339 time of the event.
    pub at: String,
    /// What the verify window saw (Docker's `verify-failed` and
    /// `verify-inconclusive`, and a `promoted` whose window passed; else
    /// `null`).
    pub verify: Option<VerifyFigures>,
    /// The environment this release was promoted from (`cyan promote
    /// --from`); `null` for a deploy (and on Kubernetes).
    pub from_environment: Option<String>,
    /// Who made it happen (`user@host` of the cyan that switched); `null`
    /// on Kubernetes and for entries an older cyan wrote.
    pub by: Option<String>,
    /// The release's lifecycle hooks' latest runs, as the record keeps
    /// them (Docker; `[]` on Kubernetes and with no hook).
    pub hooks: Vec<HookLine>,
    /// Every environment of the file where this version went live, and
    /// when (Docker, with `environments:`; else `[]`).
    pub stages: Vec<StageVisit>,
}

/// One lifecycle hook's latest run for a history line's release.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HookLine {
    /// Its key in cyan.yaml (`post_gate`, ...).
    pub hook: String,
    /// started (never finished: its cyan was killed) | passed | failed
    pub outcome: crate::record::HookOutcome,
    /// RFC 3339 time the outcome was written.
    pub at: String,
}

/// A version's passage through one environment: when it went live there
/// (newest), and whether a verify window passed for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageVisit {
    pub environment: String,
    /// RFC 3339 time it went live there.
    pub at: String,
    pub verified: bool,
}

/// The release of a history line.
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseView {
    pub version: String,
    pub revision: u64,
    /// As `ColorView::image_id` (`null` on Kubernetes).
    pub image_id: Option<String>,
    /// `repository@sha256:…`; `null` when the image was never pushed.
    pub digest: Option<String>,
    /// What tells releases of one version apart: Docker's runtime config
    /// hash, Kubernetes' pod template hash.
    pub config_hash: String,
}

impl From<&HistoryEntry> for HistoryLine {
    fn from(e: &HistoryEntry) -> Self {
        HistoryLine {
            event: e.event,
            color: e.color,
            release: ReleaseView {
                version: e.release.version.clone(),
                revision: e.release.revision,
                image_id: Some(e.release.image_id.clone()),
                digest: e.release.digest.clone(),
                config_hash: e.release.config_hash.clone(),
            },
            at: e.at.clone(),
            verify: e.verify.clone(),
            from_environment: e.from_environment.clone(),
            by: e.by.clone(),
            hooks: Vec::new(),
            stages: Vec::new(),
        }
    }
}

/// `cyan history`: newest first. Its JSON is the array of lines.
#[derive(Debug, Clone)]
pub struct History {
    /// `app-environment`, for the text of an empty history.
    pub route: String,
    pub lines: Vec<HistoryLine>,
}

impl Serialize for History {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.lines.serialize(s)
    }
}

impl Report for History {
    fn text(&self) -> String {
        if self.lines.is_empty() {
            return format!("{}: no releases yet", self.route);
        }
        self.lines
            .iter()
            .map(|e| {
                let stages: Vec<String> = e
                    .stages
                    .iter()
                    .map(|s| {
                        let mark = if s.verified { " ✓" } else { "" };
                        format!("{} {}{mark}", s.environment, s.at)
                    })
                    .collect();
                format!(
                    "{}  r{:<4} {:<14} {:<6} {:?}  {}{}{}{}",
                    e.at,
                    e.release.revision,
                    e.release.version,
                    e.color.as_str(),
                    e.event,
                    e.release
                        .digest
                        .as_deref()
                        .or(e.release.image_id.as_deref())
                        .unwrap_or(""),
                    e.from_environment
                        .as_ref()
                        .map_or(String::new(), |f| format!("  from {f}")),
                    match stages.is_empty() {
                        true => String::new(),
                        false => format!("  [{}]", stages.join(", ")),
                    },
                    e.by.as_ref().map_or(String::new(), |b| format!(
                        "  by {}",
                        crate::output::printable(b, 120)
                    )),
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docker() -> AppId {
        AppId {
            app: "web".into(),
            environment: "production".into(),
            platform: PlatformKind::Docker,
            namespace: None,
        }
    }

    /// The README's contract, key by key: the app's id sits at the top
    /// level, and an absent value is a `null`, never a missing key.
    #[test]
    fn status_json_keeps_the_documented_keys() {
        let s = StatusReport {
            id: docker(),
            url: "http://127.0.0.1:8000".into(),
            phase: Phase::NotDeployed,
            version: None,
            image: None,
            digest: None,
            revision: None,
            previous_version: None,
            live: None,
            previous: None,
            candidate: None,
            lock: None,
            warnings: vec![],
            drift: vec![],
            preview: None,
            message: None,
            hosts: Vec::new(),
        };
        let v = serde_json::to_value(&s).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        for key in [
            "app",
            "environment",
            "platform",
            "namespace",
            "url",
            "phase",
            "version",
            "image",
            "digest",
            "revision",
            "previous_version",
            "live",
            "previous",
            "candidate",
            "lock",
            "warnings",
            "drift",
            "preview",
            "message",
        ] {
            assert!(keys.contains(&key), "{key} missing from {v}");
        }
        assert_eq!(keys.len(), 19, "{v}");
        assert_eq!(v["platform"], "docker");
        assert_eq!(v["phase"], "not-deployed");
    }

    #[test]
    fn history_serializes_as_its_lines() {
        let h = History {
            route: "web-production".into(),
            lines: vec![],
        };
        assert_eq!(serde_json::to_value(&h).unwrap(), serde_json::json!([]));
        assert_eq!(h.text(), "web-production: no releases yet");
    }
}
