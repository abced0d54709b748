//! Everything cyan says to a person or a pipeline, produced in one place.
//!
//! Progress goes to stderr: spinners and per-replica bars (indicatif) when
//! stderr is a terminal, plain timestamped lines otherwise, so CI logs stay
//! readable. Results go to stdout, as text or as one JSON document
//! (`--output json`), so they can be piped. `--output github` is for
//! `action.yml`: phases become collapsible log groups, the result becomes
//! step outputs and a job summary, and a failure becomes an annotation.

pub mod github;

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::error::Error;
use github::StepTiming;

/// A line to stderr, where progress goes. A closed pipe (`cyan rollback
/// 2>&1 | head -3`) must not stop a deploy half-way, as `eprintln!`'s
/// panic did: the line is dropped and the command goes on.
macro_rules! err_line {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// `v` as it may reach a terminal: control characters (an escape
/// sequence would rewrite the screen, a newline forge a line) shown as
/// `\u{..}`, and at most `max` characters (then `…`).
pub fn printable(v: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in v.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        // Control characters, and the invisible ones that reorder or hide
        // text (bidi overrides, zero-width, BOM: a version shown reversed).
        if c.is_control()
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
        {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether stdout is a pipe whose reader has gone (`cyan watch | head`
/// after `head` had its lines): a command that prints only now and then
/// asks, to end at once rather than at its next line. `poll(2)` reports
/// `POLLERR` on such a pipe's write end, and nothing on a terminal or a
/// file.
pub fn reader_gone() -> bool {
    let mut fd = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the call's duration; no wait.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n > 0 && fd.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

/// How results are printed (`-o`): `text`, `json` or `github`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
    /// GitHub Actions: log groups, step outputs, job summary, annotations.
    Github,
}

impl Format {
    /// The names `-o` takes.
    pub const NAMES: [&'static str; 3] = ["text", "json", "github"];
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            "github" => Ok(Format::Github),
            other => Err(format!(
                "unknown output format {other:?}: text, json or github"
            )),
        }
    }
}

/// What a command returns for `output` to render: its JSON (`-o json`,
/// and under `-o github` its top-level scalar fields become the step
/// outputs) is the serialization; `text` is what a person reads.
pub trait Report: Serialize {
    fn text(&self) -> String;
}

pub struct Output {
    format: Format,
    fancy: bool,
    multi: MultiProgress,
    current: Mutex<Option<Phase>>,
    started: Instant,
    /// Finished phases and gate results, for the GitHub job summary.
    steps: Mutex<Vec<StepTiming>>,
    gates: Mutex<Vec<String>>,
    /// A result that could not be written to stdout (`put`).
    unwritten: Mutex<Option<std::io::Error>>,
    /// Before every progress line: `[host] ` for one host of a fleet.
    prefix: String,
}

struct Phase {
    bar: ProgressBar,
    name: String,
    since: Instant,
}

impl Output {
    pub fn new(format: Format) -> Output {
        let fancy = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
        let multi = MultiProgress::with_draw_target(if fancy {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        Output {
            format,
            fancy,
            multi,
            current: Mutex::new(None),
            started: Instant::now(),
            steps: Mutex::new(Vec::new()),
            gates: Mutex::new(Vec::new()),
            unwritten: Mutex::new(None),
            prefix: String::new(),
        }
    }

    /// The progress of one host of a fleet, worked on beside the others:
    /// plain lines, each starting `[name]`, on the same stderr.
    pub fn for_host(&self, name: &str) -> Output {
        Output {
            format: match self.format {
                Format::Github => Format::Text,
                f => f,
            },
            fancy: false,
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
            current: Mutex::new(None),
            started: self.started,
            steps: Mutex::new(Vec::new()),
            gates: Mutex::new(Vec::new()),
            unwritten: Mutex::new(None),
            prefix: format!("[{name}] "),
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    fn github(&self) -> bool {
        self.format == Format::Github
    }

    fn line(&self, text: &str) {
        if self.fancy {
            let _ = self.multi.println(text);
        } else {
            let t = self.started.elapsed().as_secs_f64();
            err_line!("[{t:7.2}s] {}{text}", self.prefix);
        }
    }

    /// Starts a phase; the previous one, if any, is finished.
    pub fn phase(&self, text: impl std::fmt::Display) {
        self.finish_current(None);
        let name = text.to_string();
        let bar = if self.fancy {
            let bar = self.multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner:.cyan} {msg} {elapsed:.dim}")
                    .expect("template"),
            );
            bar.set_message(name.clone());
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        } else {
            if self.github() {
                err_line!("::group::{}", github::escape_data(&name));
            }
            self.line(&format!("▸ {name}"));
            ProgressBar::hidden()
        };
        *self.current.lock().expect("output lock") = Some(Phase {
            bar,
            name,
            since: Instant::now(),
        });
    }

    /// A detail of the current phase (a build line, a pushed layer).
    pub fn detail(&self, text: impl std::fmt::Display) {
        let text = text.to_string();
        if self.fancy {
            if let Some(p) = &*self.current.lock().expect("output lock") {
                p.bar.set_message(format!("{} — {text}", p.name));
            }
        } else {
            self.line(&format!("  │ {text}"));
        }
    }

    /// Ends the current phase as done, with a summary.
    pub fn done(&self, text: impl std::fmt::Display) {
        self.finish_current(Some(text.to_string()));
    }

    /// Ends the current phase: done with a summary line, or cut short
    /// (`None`: a warning, a result, or the error that stopped the run).
    fn finish_current(&self, summary: Option<String>) {
        let Some(p) = self.current.lock().expect("output lock").take() else {
            return;
        };
        let took = p.since.elapsed();
        p.bar.finish_and_clear();
        if self.github() {
            err_line!("::endgroup::");
        }
        self.steps.lock().expect("output lock").push(StepTiming {
            name: p.name,
            took,
            ok: summary.is_some(),
        });
        if let Some(s) = summary {
            self.line(&format!("✓ {s} ({})", fmt_duration(took)));
        }
    }

    pub fn warn(&self, text: impl std::fmt::Display) {
        self.finish_current(None);
        self.line(&format!("! {text}"));
    }

    /// A per-replica progress bar for a health gate.
    pub fn gate_bar(&self, name: &str, threshold: u32) -> GateBar {
        let bar = if self.fancy {
            let b = self.multi.add(ProgressBar::new(u64::from(threshold)));
            b.set_style(
                ProgressStyle::with_template("    {prefix} [{bar:12.cyan/blue}] {pos}/{len} {msg}")
                    .expect("template"),
            );
            b.set_prefix(name.to_string());
            b
        } else {
            ProgressBar::hidden()
        };
        GateBar {
            bar,
            name: name.to_string(),
            threshold,
            last: Mutex::new(None),
        }
    }

    /// Prints a command's report ([`Report`]): its text, or its JSON;
    /// under GitHub Actions also its step outputs and the job summary, all
    /// from that one value, so every platform that returns the same report
    /// type prints the same contract.
    pub fn report<R: Report>(&self, report: &R) {
        self.result(report, || report.text());
    }

    /// Prints a command's result: text for people, or one JSON document;
    /// under GitHub Actions also its step outputs and the job summary.
    pub fn result<T: Serialize>(&self, value: &T, text: impl FnOnce() -> String) {
        self.finish_current(None);
        match self.format {
            Format::Json => self.put(format_args!(
                "{}",
                serde_json::to_string_pretty(value).expect("serializable")
            )),
            Format::Text | Format::Github => {
                let t = text();
                if !t.is_empty() {
                    self.put(format_args!("{t}"));
                }
                if self.github() {
                    let value = serde_json::to_value(value).expect("serializable");
                    let outputs = github::outputs(&value);
                    let summary = github::Summary {
                        ok: true,
                        headline: &t,
                        detail: None,
                        fields: &outputs,
                        gates: &[],
                        steps: &[],
                    };
                    self.publish(summary, &outputs);
                }
            }
        }
    }

    /// Writes a line of the result to stdout. A reader that went away
    /// (`cyan history | head`) is not an error: the line is dropped, where
    /// `println!` would panic. Any other failure (a full disk under
    /// `cyan crd > crd.yaml`) is kept for `unwritten`, so the command
    /// does not exit 0 with its result lost.
    fn put(&self, line: std::fmt::Arguments) {
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), "{line}") {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                self.unwritten.lock().expect("output lock").get_or_insert(e);
            }
        }
    }

    /// The error that kept a result off stdout, other than a closed pipe.
    pub fn unwritten(&self) -> Option<std::io::Error> {
        self.unwritten.lock().expect("output lock").take()
    }

    /// Reports the error that ends the run, once, in the chosen format.
    pub fn error(&self, e: &Error) {
        self.finish_current(None);
        match self.format {
            Format::Json => self.put(format_args!(
                "{}",
                serde_json::json!({"error": {"kind": e.kind(), "message": e.to_string()}})
            )),
            Format::Github => {
                self.put(format_args!(
                    "::error title={}::{}",
                    github::escape_property(&format!("cyan: {}", e.kind())),
                    github::escape_data(&e.to_string())
                ));
                let outputs = [
                    ("phase".to_string(), "failed".to_string()),
                    ("error".to_string(), e.to_string()),
                ];
                self.publish(
                    github::Summary {
                        ok: false,
                        headline: &format!("cyan failed: {}", e.kind()),
                        detail: Some(&e.to_string()),
                        fields: &[],
                        gates: &[],
                        steps: &[],
                    },
                    &outputs,
                );
            }
            Format::Text => {}
        }
        err_line!("error: {e}");
    }

    /// Writes step outputs and the job summary (completed with this run's
    /// gate results and timings) to the files GitHub names.
    fn publish(&self, summary: github::Summary, outputs: &[(String, String)]) {
        let write = |var: &str, f: &dyn Fn(&std::path::Path) -> std::io::Result<()>| {
            if let Some(path) = std::env::var_os(var) {
                if let Err(e) = f(std::path::Path::new(&path)) {
                    err_line!("::warning::cannot write {var}: {e}");
                }
            }
        };
        write("GITHUB_OUTPUT", &|p| github::write_outputs(p, outputs));
        let steps = self.steps.lock().expect("output lock").clone();
        let gates = self.gates.lock().expect("output lock").clone();
        let summary = github::Summary {
            gates: &gates,
            steps: &steps,
            ..summary
        };
        write("GITHUB_STEP_SUMMARY", &|p| {
            github::append(p, &summary.markdown())
        });
    }
}

pub struct GateBar {
    bar: ProgressBar,
    name: String,
    threshold: u32,
    last: Mutex<Option<(u32, String)>>,
}

impl GateBar {
    /// Reports the replica's consecutive passes and its last probe result.
    pub fn update(&self, out: &Output, passes: u32, last: &str) {
        self.bar.set_position(u64::from(passes));
        self.bar.set_message(last.to_string());
        let mut prev = self.last.lock().expect("gate lock");
        let now = (passes, last.to_string());
        if !out.fancy && prev.as_ref() != Some(&now) {
            out.line(&format!(
                "  │ {}: {passes}/{} {last}",
                self.name, self.threshold
            ));
        }
        *prev = Some(now);
    }

    /// Ends the bar and keeps the replica's final state for the summary.
    pub fn finish(&self, out: &Output) {
        self.bar.finish_and_clear();
        if let Some((passes, last)) = &*self.last.lock().expect("gate lock") {
            out.gates
                .lock()
                .expect("output lock")
                .push(format!("{}: {passes}/{} {last}", self.name, self.threshold));
        }
    }
}

pub fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
