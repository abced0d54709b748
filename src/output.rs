//! Everything cyan says to a person or a pipeline, produced in one place.
//!
//! Progress goes to stderr: spinners and per-replica bars (indicatif) when
//! stderr is a terminal, plain timestamped lines otherwise, so CI logs stay
//! readable. Results go to stdout, as text or as one JSON document
//! (`--output json`), so they can be piped.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
}

pub struct Output {
    format: Format,
    fancy: bool,
    multi: MultiProgress,
    current: Mutex<Option<(ProgressBar, Instant)>>,
    started: Instant,
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
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    fn line(&self, text: &str) {
        if self.fancy {
            let _ = self.multi.println(text);
        } else {
            let t = self.started.elapsed().as_secs_f64();
            eprintln!("[{t:7.2}s] {text}");
        }
    }

    /// Starts a phase; the previous one, if any, is finished.
    pub fn phase(&self, text: impl std::fmt::Display) {
        self.finish_current(None);
        let text = text.to_string();
        if self.fancy {
            let bar = self.multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner:.cyan} {msg} {elapsed:.dim}")
                    .expect("template"),
            );
            bar.set_message(text);
            bar.enable_steady_tick(Duration::from_millis(100));
            *self.current.lock().expect("output lock") = Some((bar, Instant::now()));
        } else {
            self.line(&format!("▸ {text}"));
            *self.current.lock().expect("output lock") =
                Some((ProgressBar::hidden(), Instant::now()));
        }
    }

    /// A detail of the current phase (a build line, a pushed layer).
    pub fn detail(&self, text: impl std::fmt::Display) {
        let text = text.to_string();
        if self.fancy {
            if let Some((bar, _)) = &*self.current.lock().expect("output lock") {
                bar.set_message(format!(
                    "{} — {}",
                    bar.message().split(" — ").next().unwrap_or(""),
                    text
                ));
            }
        } else {
            self.line(&format!("  │ {text}"));
        }
    }

    /// Ends the current phase as done, with a summary.
    pub fn done(&self, text: impl std::fmt::Display) {
        self.finish_current(Some(text.to_string()));
    }

    fn finish_current(&self, summary: Option<String>) {
        let Some((bar, since)) = self.current.lock().expect("output lock").take() else {
            return;
        };
        let took = since.elapsed();
        bar.finish_and_clear();
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

    /// Prints a command's result: text for people, or one JSON document.
    pub fn result<T: Serialize>(&self, value: &T, text: impl FnOnce() -> String) {
        self.finish_current(None);
        match self.format {
            Format::Json => println!(
                "{}",
                serde_json::to_string_pretty(value).expect("serializable")
            ),
            Format::Text => {
                let t = text();
                if !t.is_empty() {
                    println!("{t}");
                }
            }
        }
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

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

pub fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
