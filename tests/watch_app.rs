//! `cyan watch -c` beside a real deploy under load: on a terminal (a tmux
//! pane, read with `capture-pane`) the view redrawn in place shows the
//! switch and the new live version; through a pipe each step and each
//! second's traffic is a line. Real Docker engine, `cyan` binary and proxy.

mod util;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use util::load::{assert_none_failed, runtime, Load};
use util::{present_or_skipped, text, wait, TestApp};

/// A tmux server of the test's own (`-L`), with one session running
/// `command` in a 140x40 pane; the server is ended when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(name: &str, command: &str) -> Tmux {
        let tmux = Tmux {
            socket: format!("cyan-test-{name}-{}", std::process::id()),
        };
        // A command that ends leaves its last screen and says how it ended.
        let shell = format!("{command}; echo \"[exited $?]\"; exec cat");
        let out = tmux
            .cmd(&[
                "new-session",
                "-d",
                "-s",
                "watch",
                "-x",
                "140",
                "-y",
                "40",
                &shell,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "tmux: {}", text(&out));
        tmux
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket, "-f", "/dev/null"]).args(args);
        c
    }

    /// What the pane shows now.
    fn screen(&self) -> String {
        let out = self
            .cmd(&["capture-pane", "-p", "-t", "watch"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits (at most `limit`) until the pane shows what `check` looks
    /// for; returns the screen then.
    fn wait_for(&self, what: &str, limit: Duration, check: impl Fn(&str) -> bool) -> String {
        wait::until(
            what,
            limit,
            Duration::from_millis(100),
            || Some(self.screen()).filter(|s| check(s)),
            || format!("the pane shows:\n{}", self.screen()),
        )
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]).output();
    }
}

fn tmux_present() -> bool {
    let found = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    present_or_skipped(found, "tmux is missing", ".ci/run installs Debian's tmux")
}

/// The table row of `color` (`BLUE`, `GREEN`): its words.
fn row<'s>(screen: &'s str, color: &str) -> Vec<&'s str> {
    screen
        .lines()
        .find(|l| l.starts_with(color))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default()
}

/// Whether `color`'s row says it is live with `version` and had traffic.
fn live_with_traffic(screen: &str, color: &str, version: &str) -> bool {
    let words = row(screen, color);
    words.len() >= 4
        && words[1] == "live"
        && words[2] == version
        && words[3].parse::<f64>().is_ok_and(|r| r > 0.0)
}

#[test]
fn watch_on_a_terminal_redraws_the_switch_and_the_new_live_version_in_place() {
    if !tmux_present() {
        return;
    }
    let app = TestApp::new("watchtty", "");
    app.deploy("1.0.0");
    app.cyan_ok(&["build", "--version", "2.0.0"]);
    let rt = runtime();
    let _ctx = rt.enter();
    let load = Load::start(app.port, &app.host(), 2, 0);

    let command = format!(
        "'{}' --home '{}' watch -c '{}' --every 200ms",
        env!("CARGO_BIN_EXE_cyan"),
        app.home.display(),
        app.config.display()
    );
    let tmux = Tmux::start("watch", &command);
    let title = format!("cyan watch · {} (production)", app.name);
    tmux.wait_for(
        "the view with blue live, 1.0.0, under load",
        Duration::from_secs(20),
        |s| s.contains(&title) && live_with_traffic(s, "BLUE", "1.0.0"),
    );

    app.deploy("2.0.0");
    let screen = tmux.wait_for(
        "the switch to green and 2.0.0 live, with traffic",
        Duration::from_secs(20),
        |s| {
            s.contains("switched: blue -> green (2.0.0 is live)")
                && s.lines()
                    .any(|l| l.starts_with("live: GREEN") && l.contains("2.0.0"))
                && live_with_traffic(s, "GREEN", "2.0.0")
        },
    );
    // Redrawn in place: one view on the screen, not one per read.
    assert_eq!(screen.matches("cyan watch ·").count(), 1, "{screen}");
    assert!(screen.contains("STEPS"), "{screen}");
    let previous = row(&screen, "BLUE");
    assert_eq!(
        previous[1..4],
        ["previous,", "hot", "1.0.0"],
        "blue is kept hot: {screen}"
    );
    assert!(!screen.contains("[exited"), "{screen}");
    eprintln!("cyan watch in tmux after the deploy:\n{screen}");
    drop(tmux);

    let samples = rt.block_on(load.finish());
    assert_none_failed(&samples, "while cyan watch looked on");
}

#[test]
fn watch_in_a_pipe_prints_the_gate_the_switch_and_each_colors_traffic_as_lines() {
    // Approval holds green between its gate and the switch: the gate is
    // seen (a plain deploy switches some 20 ms after the gate, between
    // two reads of the proxy, and shows as the switch alone).
    let app = TestApp::new("watchpipe", "");
    app.deploy("1.0.0");
    app.write_config("require_approval: true\n");
    app.cyan_ok(&["build", "--version", "2.0.0"]);
    let rt = runtime();
    let _ctx = rt.enter();
    let load = Load::start(app.port, &app.host(), 2, 0);

    let started = Instant::now();
    let mut watch = app
        .command(&["watch", "--every", "200ms", "--for", "8s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel::<String>();
    let out = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen: Vec<String> = Vec::new();
    let wait_line = |what: &str, seen: &mut Vec<String>, check: &dyn Fn(&str) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !seen.iter().any(|l| check(l)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(l) => seen.push(l),
                Err(_) => panic!(
                    "no line with {what}; cyan watch printed:\n{}",
                    seen.join("\n")
                ),
            }
        }
    };
    wait_line("blue (live) 1.0.0 traffic", &mut seen, &|l| {
        l.contains("blue (live) 1.0.0: ") && !l.contains(": 0.0 req/s")
    });

    let deployed = app.cyan(&["deploy", "--version", "2.0.0"]);
    assert!(deployed.status.success(), "{}", text(&deployed));
    wait_line("gate passed", &mut seen, &|l| {
        l.contains("gate passed: green runs 2.0.0, ready to switch")
    });
    app.cyan_ok(&["promote"]);
    wait_line("green (live) 2.0.0 traffic", &mut seen, &|l| {
        l.contains("green (live) 2.0.0: ") && !l.contains(": 0.0 req/s")
    });
    let status = watch.wait().unwrap();
    let ran = started.elapsed();
    seen.extend(lines.try_iter());
    let all = seen.join("\n");
    assert!(status.success(), "{status}: {all}");
    assert!(
        ran < Duration::from_secs(12),
        "--for 8s ran {ran:?}:\n{all}"
    );

    let at = |needle: &str| {
        seen.iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{all}"))
    };
    let gate = at("gate passed: green runs 2.0.0");
    let switch = at("switched: blue -> green (2.0.0 is live)");
    let green = at("green (live) 2.0.0: ");
    assert!(gate < switch && switch < green, "in order:\n{all}");
    assert!(at("blue (live) 1.0.0: ") < gate, "{all}");
    assert!(
        seen.iter()
            .all(|l| l.as_bytes().get(8..10) == Some(b"  ") && !l.contains('\x1b')),
        "each line is `HH:MM:SS  text`, no terminal codes:\n{all}"
    );

    let samples = rt.block_on(load.finish());
    assert_none_failed(&samples, "across the deploy and its promotion");
    eprintln!("cyan watch through a pipe, {ran:?}:\n{all}");
}
