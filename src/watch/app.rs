//! `cyan watch -c cyan.yaml`: one app's deploy, live, in the terminal.
//!
//! It reads the app's route in this host's proxy at `--every` and shows
//! per color the requests and 5xx per second, the latency and what is in
//! flight (over the last second, `traffic`), which color is live, and the
//! deploy's steps as they happen (gate passed, switched, verified, rolled
//! back: `events`). It needs nothing from the cyan that deploys (which
//! may be a CI job): every step ends in the proxy. On a terminal the view
//! is redrawn in place; otherwise (a pipe, a log, `-o json`) each step and
//! each second's traffic of a color that had some is one line.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use crate::config::{Loaded, PlatformKind};
use crate::error::{Error, Result};
use crate::output::{printable, Format};
use crate::platform::docker::parse_record;
use crate::proxy::client::AdminClient;
use crate::proxy::router::RouteView;
use crate::proxy::Home;
use crate::release::Color;

use super::events::{self, Change};
use super::traffic::{Rates, Sampler};

/// The interval traffic rates are taken over (reads at a shorter
/// `--every` only make the steps show sooner).
const RATE_EVERY: Duration = Duration::from_secs(1);
/// Steps kept on the terminal view.
const STEPS_SHOWN: usize = 12;

/// Watches `cfg`'s app until SIGINT, SIGTERM, `until`, or a stdout no one
/// reads.
///
/// Errors: `Error::Config` for an app not on this host's proxy
/// (Kubernetes, or `hosts:`); `Error::Unreachable` when the proxy does not
/// answer at the start.
pub async fn run(
    home: &Home,
    cfg: &Loaded,
    every: Duration,
    until: Option<Duration>,
    format: Format,
) -> Result<()> {
    let c = &cfg.config;
    if c.platform == PlatformKind::Kubernetes {
        return Err(Error::Config(
            "cyan watch -c reads this host's cyan proxy; an app on Kubernetes is watched with `cyan watch --url` (or kubectl get bluegreendeployment -w)".into(),
        ));
    }
    if !c.hosts.is_empty() {
        return Err(Error::Config(format!(
            "{} runs on hosts: ({}); run cyan watch -c on one of them, or `cyan watch --url` against the load balancer",
            c.app,
            c.hosts.iter().map(|h| h.name.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    let route = c.route();
    let admin = AdminClient::new(home);
    admin.health().await.map_err(|e| {
        Error::Unreachable(format!(
            "the cyan proxy of {} does not answer: {e}",
            home.dir.display()
        ))
    })?;
    let screen = format == Format::Text && std::io::stdout().is_terminal();
    let mut view = View {
        title: format!("{} ({})", c.app, c.environment),
        json: format == Format::Json,
        screen,
        steps: Vec::new(),
        rates: Vec::new(),
        route: None,
    };
    let mut sampler = Sampler::default();
    let mut rated_at: Option<Instant> = None;
    let mut last: Option<RouteView> = None;
    // Nothing read yet: the first read is the state, not news.
    let mut first = true;
    // The proxy's last failure, said once until it answers again.
    let mut down: Option<String> = None;
    let started = Instant::now();
    let stop = stopped(until.map(|d| started + d));
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = &mut stop => break,
            _ = tick.tick() => {}
        }
        // A reader that went away (`| head`) ends the watch now, not at
        // the next line.
        if !view.screen && crate::output::reader_gone() {
            break;
        }
        let now = match admin.route(&route).await {
            Ok(v) => v.map(events::as_read),
            Err(e) => {
                let e = e.to_string();
                if down.as_ref() != Some(&e)
                    && !view.note(&format!("the proxy did not answer: {e}"))
                {
                    break;
                }
                down = Some(e);
                continue;
            }
        };
        let mut lines_ok = true;
        if down.take().is_some() {
            lines_ok &= view.note("the proxy answers again");
        }
        if first {
            first = false;
            lines_ok &= view.note(&match &now {
                None => format!(
                    "{route} has no route in this host's proxy yet: the first deploy makes it"
                ),
                Some(v) => view.state_line(v),
            });
        } else {
            for change in events::changes(last.as_ref(), now.as_ref()) {
                lines_ok &= view.step(&change);
            }
        }
        let at = Instant::now();
        if rated_at.is_none_or(|t| at.duration_since(t) >= RATE_EVERY) {
            let rates = sampler.sample(now.as_slice(), at);
            rated_at = Some(at);
            lines_ok &= view.traffic(rates);
        }
        view.route = now.clone();
        if view.screen {
            lines_ok &= view.draw();
        }
        last = now;
        if !lines_ok {
            break;
        }
    }
    if view.screen {
        // The last view stays on the terminal, with its steps.
        let _ = writeln!(std::io::stdout());
    }
    Ok(())
}

/// Resolves on SIGINT, SIGTERM, or at `deadline`.
async fn stopped(deadline: Option<Instant>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    let deadline = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
        () = deadline => {}
    }
}

/// What is shown, and how.
struct View {
    title: String,
    json: bool,
    /// A terminal: redrawn in place.
    screen: bool,
    steps: Vec<String>,
    rates: Vec<Rates>,
    route: Option<RouteView>,
}

impl View {
    /// A step: a line now (lines), or kept for the next draw (screen).
    /// False when stdout cannot be written.
    fn step(&mut self, change: &Change) -> bool {
        let line = format!("{}  {}", clock(), printable(&change.describe(), 400));
        if self.screen {
            self.steps.push(line);
            let excess = self.steps.len().saturating_sub(STEPS_SHOWN);
            self.steps.drain(..excess);
            return true;
        }
        if self.json {
            let mut v = serde_json::to_value(change).expect("a change serializes");
            v["at_ms"] = crate::clock::now_ms().into();
            v["text"] = change.describe().into();
            return put(&v.to_string());
        }
        put(&line)
    }

    fn traffic(&mut self, rates: Vec<Rates>) -> bool {
        self.rates = rates;
        if self.screen {
            return true;
        }
        let versions = versions(self.route.as_ref());
        self.rates
            .iter()
            .filter(|r| r.requests > 0 || r.inflight > 0)
            .all(|r| {
                if self.json {
                    let mut v = serde_json::to_value(r).expect("rates serialize");
                    v["event"] = "traffic".into();
                    v["at_ms"] = crate::clock::now_ms().into();
                    v["version"] = versions(r.color).into();
                    put(&v.to_string())
                } else {
                    put(&format!(
                        "{}  {}",
                        clock(),
                        rate_line(r, versions(r.color).as_deref())
                    ))
                }
            })
    }

    /// What a route holds now, in one line: the first line of a watch.
    fn state_line(&self, route: &RouteView) -> String {
        let versions = versions(Some(route));
        let record = parse_record(&route.state.record);
        let live = route.state.live;
        let other = live
            .map(Color::other)
            .filter(|c| record.gated.contains_key(c));
        format!(
            "live: {}{}; lock: {}",
            live.map_or("nothing".into(), |c| format!(
                "{c} {}",
                versions(c).unwrap_or_default()
            )),
            other.map_or(String::new(), |c| format!(
                "; {c}: {} ({})",
                versions(c).unwrap_or_default(),
                if record.gated.get(&c).is_some_and(|k| record.was_live(k)) {
                    "previous, hot"
                } else {
                    "candidate"
                }
            )),
            route
                .state
                .lock
                .as_ref()
                .map_or("free".to_string(), |l| printable(&l.holder, 120)),
        )
    }

    fn note(&mut self, text: &str) -> bool {
        if self.json {
            put(&serde_json::json!({"event": "note", "at_ms": crate::clock::now_ms(), "text": text}).to_string())
        } else if self.screen {
            self.steps.push(format!("{}  {text}", clock()));
            self.draw()
        } else {
            put(&format!("{}  {text}", clock()))
        }
    }

    /// The whole view, in place of the last.
    fn draw(&self) -> bool {
        let mut s = String::from("\x1b[H\x1b[2J");
        s.push_str(&format!("cyan watch · {}    {}\n", self.title, clock()));
        let Some(route) = &self.route else {
            s.push_str("\nNo route in this host's proxy yet: the first deploy makes it.\n");
            return put_raw(&s);
        };
        let record = parse_record(&route.state.record);
        let versions = versions(Some(route));
        let live = route.state.live;
        let role = |c: Color| -> &'static str {
            match (live == Some(c), record.gated.get(&c)) {
                (true, _) => "live",
                (false, Some(k)) if record.was_live(k) => "previous, hot",
                (false, Some(_)) => "candidate",
                (false, None) => "-",
            }
        };
        let lock = route
            .state
            .lock
            .as_ref()
            .map_or("free".to_string(), |l| printable(&l.holder, 120));
        s.push_str(&format!(
            "live: {}   lock: {lock}{}{}\n\n",
            live.map_or("nothing".to_string(), |c| format!(
                "{} {}",
                label(c),
                versions(c).unwrap_or_default()
            )),
            if route.state.maintenance.is_some() {
                "   MAINTENANCE"
            } else {
                ""
            },
            if route.state.draining {
                "   DRAINING"
            } else {
                ""
            },
        ));
        s.push_str(
            "COLOR      ROLE            VERSION        REQ/S   5XX/S  P50 MS  P99 MS  IN FLIGHT\n",
        );
        for c in Color::ALL {
            let r = self.rates.iter().find(|r| r.color == c);
            let q = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("≤{v}"));
            s.push_str(&format!(
                "{}  {:<15} {:<14} {:>6.1}  {:>6.1}  {:>6}  {:>6}  {:>9}\n",
                label(c),
                role(c),
                versions(c).unwrap_or_else(|| "-".into()),
                r.map_or(0.0, |r| r.requests_per_s),
                r.map_or(0.0, |r| r.errors_per_s),
                q(r.and_then(|r| r.p50_ms)),
                q(r.and_then(|r| r.p99_ms)),
                r.map_or(0, |r| r.inflight),
            ));
        }
        s.push_str("\nSTEPS\n");
        if self.steps.is_empty() {
            s.push_str("(none yet: a deploy's gate, switch and verify show here)\n");
        }
        for line in &self.steps {
            s.push_str(line);
            s.push('\n');
        }
        s.push_str("\nCtrl-C stops watching (nothing else).\n");
        put_raw(&s)
    }
}

/// A color's name, colored on a terminal, and always spelled out.
fn label(c: Color) -> String {
    let code = match c {
        Color::Blue => "34",
        Color::Green => "32",
    };
    let name = format!("{:<7}", c.as_str().to_uppercase());
    if std::io::stdout().is_terminal() {
        format!("\x1b[1;{code}m{name}\x1b[0m  ")
    } else {
        format!("{name}  ")
    }
}

/// Each color's version, from the record's gated sets (as a terminal may
/// show it: a record is written by whoever holds the admin socket).
fn versions(route: Option<&RouteView>) -> impl Fn(Color) -> Option<String> {
    let record = route
        .map(|r| parse_record(&r.state.record))
        .unwrap_or_default();
    move |c| record.gated.get(&c).map(|k| printable(&k.version, 40))
}

fn rate_line(r: &Rates, version: Option<&str>) -> String {
    let q = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("≤{v} ms"));
    format!(
        "{}{} {}: {:.1} req/s, {:.1} 5xx/s, p50 {}, p99 {}, {} in flight",
        r.color,
        if r.live { " (live)" } else { "" },
        version.unwrap_or("-"),
        r.requests_per_s,
        r.errors_per_s,
        q(r.p50_ms),
        q(r.p99_ms),
        r.inflight
    )
}

/// `HH:MM:SS` now, in local time (as `cyan watch --url` prints).
fn clock() -> String {
    let s = (crate::clock::now_ms() / 1000) as i64;
    let day = (s + super::probe::utc_offset_ms(s) / 1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", day / 3600, day / 60 % 60, day % 60)
}

/// A line to stdout, flushed; false when it cannot be written.
fn put(line: &str) -> bool {
    put_raw(&format!("{line}\n"))
}

fn put_raw(text: &str) -> bool {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_ok()
}
