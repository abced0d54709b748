//! A deploy's steps as they happen, read from two successive reads of
//! its route in the proxy.
//!
//! Every step of a Docker deploy ends in the proxy: a color that passes
//! its gate is written to the record's `gated`, a switch changes `live`,
//! a verify window opens and closes in the record, a rollback and a
//! failed verify add history entries, the lock is taken and released.
//! So a watcher needs no channel from the deploying cyan (which may be in
//! a CI job on another machine): it compares what the proxy holds now
//! with what it held a moment ago. A step that comes and goes between two
//! reads is missed, but its end state is not (a gate then a switch in one
//! interval shows as the switch).

use serde::Serialize;

use crate::platform::docker::parse_record;
use crate::proxy::router::RouteView;
use crate::record::{DeployRecord, Event, HistoryEntry, Verdict};
use crate::release::Color;

/// One step of a deploy, as the route's state shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Change {
    /// The route was made: the app's first deploy on this proxy.
    RouteCreated,
    /// The route was removed (`cyan remove`): its traffic stopped.
    RouteRemoved,
    /// A color's set passed its health gate for `version` (not live).
    GatePassed {
        color: Color,
        version: String,
    },
    /// Traffic moved: `to` is live now (`from`: what was).
    Switched {
        from: Option<Color>,
        to: Color,
        version: Option<String>,
    },
    /// A verify window opened on the live release, until `until_ms`
    /// (Unix ms).
    Verifying {
        version: String,
        until_ms: u64,
    },
    /// The verify window of `version` passed.
    Verified {
        version: String,
        requests: u64,
        status_5xx: u64,
    },
    /// The verify window of `version` failed: traffic went back.
    VerifyFailed {
        version: String,
        requests: u64,
        status_5xx: u64,
    },
    /// Too few requests to judge, and the release was kept.
    VerifyInconclusive {
        version: String,
    },
    /// A rollback made `version` live again.
    RolledBack {
        version: String,
    },
    /// A color that passed its gate was removed (an abort, or a retire).
    Removed {
        color: Color,
        version: String,
    },
    /// A deploy, rollback or promote took the app's lock.
    Locked {
        holder: String,
    },
    Unlocked,
    /// The maintenance page went on or off.
    Maintenance {
        on: bool,
    },
    /// The host left the load balancer (`/cyan/up` 503) or came back.
    Draining {
        on: bool,
    },
}

impl Change {
    /// One line for a person.
    pub fn describe(&self) -> String {
        match self {
            Change::RouteCreated => "route created: the first deploy here".into(),
            Change::RouteRemoved => "route removed: this proxy no longer serves it".into(),
            Change::GatePassed { color, version } => {
                format!("gate passed: {color} runs {version}, ready to switch")
            }
            Change::Switched { from, to, version } => format!(
                "switched: {} -> {to}{}",
                from.map_or("nothing".into(), |c| c.to_string()),
                version.as_ref().map_or(String::new(), |v| format!(" ({v} is live)"))
            ),
            Change::Verifying { version, until_ms } => format!(
                "verifying {version} for {} s",
                until_ms.saturating_sub(crate::clock::now_ms()).div_ceil(1000)
            ),
            Change::Verified {
                version,
                requests,
                status_5xx,
            } => format!("verified: {version} ({requests} requests, {status_5xx} 5xx)"),
            Change::VerifyFailed {
                version,
                requests,
                status_5xx,
            } => format!(
                "verify FAILED: {version} ({requests} requests, {status_5xx} 5xx); traffic went back"
            ),
            Change::VerifyInconclusive { version } => {
                format!("verify inconclusive: {version} kept (too few requests to judge)")
            }
            Change::RolledBack { version } => format!("rolled back: {version} is live again"),
            Change::Removed { color, version } => format!("removed: {color} ({version})"),
            Change::Locked { holder } => format!("lock taken: {holder}"),
            Change::Unlocked => "lock released".into(),
            Change::Maintenance { on } => {
                format!("maintenance page {}", if *on { "on" } else { "off" })
            }
            Change::Draining { on: true } => "out of the load balancer (draining)".into(),
            Change::Draining { on: false } => "back in the load balancer".into(),
        }
    }
}

/// `v` as read now: a lock whose holder is gone (its lease ran out, or
/// its process on this host ended) is no lock. Done at each read, since
/// whether a lock is held depends on when it is asked.
pub fn as_read(mut v: RouteView) -> RouteView {
    let now = crate::clock::now_ms();
    v.state.lock = v.state.lock.filter(|l| l.held(now));
    v
}

/// What happened to a route between two reads (`None`: no route then or
/// now), each read through [`as_read`], in the order a deploy does it.
/// A route made since is said, then what it holds (its lock, its gated
/// set, its switch), as a change from nothing.
pub fn changes(before: Option<&RouteView>, after: Option<&RouteView>) -> Vec<Change> {
    let (before, after) = match (before, after) {
        (Some(b), Some(a)) => (b, a),
        (Some(_), None) => return vec![Change::RouteRemoved],
        (None, None) => return Vec::new(),
        (None, Some(a)) => {
            let empty = RouteView {
                name: a.name.clone(),
                state: Default::default(),
                stats: Default::default(),
                preview_stats: None,
            };
            let mut out = vec![Change::RouteCreated];
            out.extend(changes(Some(&empty), Some(a)));
            return out;
        }
    };
    let (was, now) = (
        parse_record(&before.state.record),
        parse_record(&after.state.record),
    );
    let (b, a) = (&before.state, &after.state);
    let mut out = Vec::new();
    let held = |v: &RouteView| v.state.lock.as_ref().map(|l| l.holder.clone());
    match (held(before), held(after)) {
        (None, Some(holder)) => out.push(Change::Locked { holder }),
        (Some(x), Some(y)) if x != y => out.push(Change::Locked { holder: y }),
        _ => {}
    }
    for color in Color::ALL {
        match (was.gated.get(&color), now.gated.get(&color)) {
            // A new set gated: a candidate, or one switched to since the
            // last read (the gate and the switch are milliseconds apart).
            (before_key, Some(key)) if before_key != Some(key) && b.live != Some(color) => {
                out.push(Change::GatePassed {
                    color,
                    version: key.version.clone(),
                });
            }
            (Some(key), None) => out.push(Change::Removed {
                color,
                version: key.version.clone(),
            }),
            _ => {}
        }
    }
    if a.live != b.live {
        if let Some(to) = a.live {
            out.push(Change::Switched {
                from: b.live,
                to,
                version: now.gated.get(&to).map(|k| k.version.clone()),
            });
        }
    }
    if let Some(w) = now
        .verify
        .as_ref()
        .filter(|w| was.verify.as_ref() != Some(*w))
    {
        out.push(Change::Verifying {
            version: w.release.version.clone(),
            until_ms: w.until_ms,
        });
    }
    out.extend(history(&was, &now));
    if a.maintenance.is_some() != b.maintenance.is_some() {
        out.push(Change::Maintenance {
            on: a.maintenance.is_some(),
        });
    }
    if a.draining != b.draining {
        out.push(Change::Draining { on: a.draining });
    }
    if held(before).is_some() && held(after).is_none() {
        out.push(Change::Unlocked);
    }
    out
}

/// The history's news: entries added, and verify figures written onto a
/// promotion whose window passed.
fn history(was: &DeployRecord, now: &DeployRecord) -> Vec<Change> {
    let same = |x: &HistoryEntry, y: &HistoryEntry| {
        x.event == y.event && x.at == y.at && x.color == y.color && x.release == y.release
    };
    let mut out = Vec::new();
    for e in &now.history {
        let version = e.release.version.clone();
        let figures = e.verify.as_ref();
        match was.history.iter().find(|w| same(w, e)) {
            // A promotion whose verify window passed since.
            Some(w) if w.verify.is_none() => {
                if let Some(f) = figures.filter(|f| f.verdict == Verdict::Passed) {
                    out.push(Change::Verified {
                        version,
                        requests: f.requests,
                        status_5xx: f.status_5xx,
                    });
                }
            }
            Some(_) => {}
            None => match e.event {
                Event::Promoted => {}
                Event::RolledBack => out.push(Change::RolledBack { version }),
                Event::VerifyFailed => out.push(Change::VerifyFailed {
                    version,
                    requests: figures.map_or(0, |f| f.requests),
                    status_5xx: figures.map_or(0, |f| f.status_5xx),
                }),
                Event::VerifyInconclusive => out.push(Change::VerifyInconclusive { version }),
            },
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::lease::Lock;
    use crate::proxy::state::RouteState;
    use crate::record::{VerifyFigures, VerifyWindow};
    use crate::release::{Release, ReleaseKey};

    fn release(version: &str) -> Release {
        Release {
            version: version.into(),
            revision: 1,
            image_id: "sha256:1".into(),
            digest: None,
            config_hash: "h".into(),
        }
    }

    fn view(live: Option<Color>, record: &DeployRecord) -> RouteView {
        RouteView {
            name: "web".into(),
            state: RouteState {
                live,
                record: serde_json::to_value(record).unwrap(),
                ..Default::default()
            },
            stats: Default::default(),
            preview_stats: None,
        }
    }

    /// A lock this test process holds.
    fn held_by(holder: &str) -> Lock {
        Lock {
            token: "t".into(),
            holder: holder.into(),
            pid: std::process::id(),
            host: crate::clock::hostname(),
            since: "now".into(),
            renewed_ms: crate::clock::now_ms(),
            ttl_ms: 60_000,
        }
    }

    fn entry(event: Event, color: Color, version: &str, at: &str) -> HistoryEntry {
        HistoryEntry {
            event,
            color,
            release: release(version),
            at: at.into(),
            verify: None,
            from_environment: None,
            by: None,
        }
    }

    /// A whole deploy, read once per step: gate, switch (with its
    /// verify window), verify passed, then a rollback.
    #[test]
    fn a_deploy_reads_as_its_steps() {
        let mut r = DeployRecord::default();
        r.gated.insert(Color::Blue, release("1.0.0").key());
        r.push_history(entry(Event::Promoted, Color::Blue, "1.0.0", "t0"));
        let v0 = view(Some(Color::Blue), &r);

        r.gated.insert(Color::Green, release("2.0.0").key());
        let v1 = view(Some(Color::Blue), &r);
        assert_eq!(
            changes(Some(&v0), Some(&v1)),
            vec![Change::GatePassed {
                color: Color::Green,
                version: "2.0.0".into()
            }]
        );

        r.push_history(entry(Event::Promoted, Color::Green, "2.0.0", "t1"));
        r.verify = Some(VerifyWindow {
            color: Color::Green,
            release: ReleaseKey {
                version: "2.0.0".into(),
                config_hash: "h".into(),
            },
            until_ms: 5,
            deadline_ms: None,
        });
        let v2 = view(Some(Color::Green), &r);
        let c = changes(Some(&v1), Some(&v2));
        assert_eq!(
            c,
            vec![
                Change::Switched {
                    from: Some(Color::Blue),
                    to: Color::Green,
                    version: Some("2.0.0".into())
                },
                Change::Verifying {
                    version: "2.0.0".into(),
                    until_ms: 5
                }
            ]
        );
        assert_eq!(c[0].describe(), "switched: blue -> green (2.0.0 is live)");

        r.verify = None;
        r.history.last_mut().unwrap().verify = Some(VerifyFigures {
            verdict: Verdict::Passed,
            requests: 420,
            status_5xx: 0,
            min_requests: 10,
        });
        let v3 = view(Some(Color::Green), &r);
        assert_eq!(
            changes(Some(&v2), Some(&v3)),
            vec![Change::Verified {
                version: "2.0.0".into(),
                requests: 420,
                status_5xx: 0
            }]
        );

        r.push_history(entry(Event::RolledBack, Color::Blue, "1.0.0", "t2"));
        let v4 = view(Some(Color::Blue), &r);
        assert_eq!(
            changes(Some(&v3), Some(&v4)),
            vec![
                Change::Switched {
                    from: Some(Color::Green),
                    to: Color::Blue,
                    version: Some("1.0.0".into())
                },
                Change::RolledBack {
                    version: "1.0.0".into()
                }
            ]
        );
        assert!(
            changes(Some(&v4), Some(&v4)).is_empty(),
            "nothing new, nothing said"
        );

        // The gate and the switch of 3.0.0 between two reads: both said.
        r.gated.insert(Color::Green, release("3.0.0").key());
        r.push_history(entry(Event::Promoted, Color::Green, "3.0.0", "t3"));
        let v5 = view(Some(Color::Green), &r);
        assert_eq!(
            changes(Some(&v4), Some(&v5)),
            vec![
                Change::GatePassed {
                    color: Color::Green,
                    version: "3.0.0".into()
                },
                Change::Switched {
                    from: Some(Color::Blue),
                    to: Color::Green,
                    version: Some("3.0.0".into())
                },
            ]
        );
    }

    #[test]
    fn a_route_made_and_removed_is_said_with_what_it_holds() {
        let mut r = DeployRecord::default();
        r.gated.insert(Color::Blue, release("6.0.0").key());
        let mut made = view(Some(Color::Blue), &r);
        made.state.lock = Some(held_by("deploy 6.0.0 by ci"));
        assert_eq!(
            changes(None, Some(&made)),
            vec![
                Change::RouteCreated,
                Change::Locked {
                    holder: "deploy 6.0.0 by ci".into()
                },
                Change::GatePassed {
                    color: Color::Blue,
                    version: "6.0.0".into()
                },
                Change::Switched {
                    from: None,
                    to: Color::Blue,
                    version: Some("6.0.0".into())
                },
            ]
        );
        assert_eq!(changes(Some(&made), None), vec![Change::RouteRemoved]);
        assert!(changes(None, None).is_empty());
    }

    #[test]
    fn a_failed_verify_an_abort_and_the_lock_are_seen() {
        let mut r = DeployRecord::default();
        r.gated.insert(Color::Blue, release("1.0.0").key());
        r.gated.insert(Color::Green, release("2.0.0").key());
        let mut v0 = view(Some(Color::Blue), &r);
        let mut v1 = v0.clone();
        v1.state.lock = Some(held_by("deploy 3.0.0 by ci"));
        assert_eq!(
            changes(Some(&v0), Some(&v1)),
            vec![Change::Locked {
                holder: "deploy 3.0.0 by ci".into()
            }]
        );
        assert_eq!(changes(Some(&v1), Some(&v0)), vec![Change::Unlocked]);
        // Read after its holder ended, the same lock is none: the two reads
        // of a deploy that finished in between differ by it.
        let mut ended = std::process::Command::new("true").spawn().unwrap();
        let pid = ended.id();
        ended.wait().unwrap();
        let mut gone = v1.clone();
        gone.state.lock.as_mut().unwrap().pid = pid;
        assert_eq!(as_read(v1.clone()).state.lock, v1.state.lock);
        assert!(as_read(gone.clone()).state.lock.is_none());
        assert_eq!(
            changes(Some(&as_read(v1.clone())), Some(&as_read(gone))),
            vec![Change::Unlocked]
        );

        r.gated.remove(&Color::Green);
        let mut failed = entry(Event::VerifyFailed, Color::Green, "2.0.0", "t1");
        failed.verify = Some(VerifyFigures {
            verdict: Verdict::Failed,
            requests: 100,
            status_5xx: 40,
            min_requests: 10,
        });
        r.push_history(failed);
        v0.state.draining = true;
        let v2 = view(Some(Color::Blue), &r);
        assert_eq!(
            changes(Some(&v0), Some(&v2)),
            vec![
                Change::Removed {
                    color: Color::Green,
                    version: "2.0.0".into()
                },
                Change::VerifyFailed {
                    version: "2.0.0".into(),
                    requests: 100,
                    status_5xx: 40
                },
                Change::Draining { on: false },
            ]
        );
    }
}
