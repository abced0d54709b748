//! A fleet, end to end, with real parts: three "servers" that are
//! containers the test makes (Debian, its own Docker engine, OpenSSH;
//! `tests/fleet/host-image`), each on its own address of a network the
//! test makes, reached by cyan over SSH with a key and a known-hosts file;
//! Debian's HAProxy in front of them on loopback, as the load balancer.
//!
//! One test walks the story: a deploy to two of the three hosts (the third
//! shows as behind), the third brought level, then v2, a rollback and v3
//! under load through HAProxy (keep-alive and fresh connections) with 0
//! failed requests and every request sent after the last switch answered
//! by the new version; then a gate that fails on one host only (nothing
//! switches anywhere) and a host whose SSH is cut before the switch
//! (refused, naming it), both under load with 0 failed requests.

mod util;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use util::load::{self, Load};
use util::{free_port, identity, repo_root, succeeded, text};

/// The proxy's listen address for the app on every host (HAProxy's
/// backends).
const APP_PORT: u16 = 18080;

fn sh(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

fn docker(args: &[&str]) -> Output {
    sh(Command::new("docker").args(args))
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(out.status.success(), "docker {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The test's servers, removed with their network when dropped.
struct Fleet {
    name: String,
    dir: PathBuf,
    hosts: Vec<(String, String)>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (c, _) in &self.hosts {
            docker(&["rm", "-fv", c]);
        }
        docker(&["network", "rm", &self.name]);
    }
}

impl Fleet {
    fn start(n: usize) -> Fleet {
        let image = {
            let out = sh(&mut Command::new(
                repo_root().join("tests/fleet/host-image"),
            ));
            assert!(out.status.success(), "host-image: {}", text(&out));
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let run_args: Vec<String> = {
            let out =
                sh(Command::new(repo_root().join("tests/fleet/host-image")).arg("--run-args"));
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect()
        };
        let name = format!("cyan-fleet-{}", std::process::id());
        let dir = std::env::temp_dir().join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key");
        let out = sh(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key));
        assert!(out.status.success(), "ssh-keygen: {}", text(&out));
        let public = std::fs::read_to_string(dir.join("key.pub")).unwrap();
        docker_ok(&["network", "create", &name]);
        let mut fleet = Fleet {
            name: name.clone(),
            dir,
            hosts: Vec::new(),
        };
        for i in 1..=n {
            let c = format!("{name}-h{i}");
            let mut args: Vec<String> = vec!["run".into(), "-d".into()];
            args.extend(run_args.iter().cloned());
            args.extend([
                "--network".into(),
                name.clone(),
                "--name".into(),
                c.clone(),
                "--hostname".into(),
                format!("h{i}"),
                "-e".into(),
                format!("CYAN_FLEET_AUTHORIZED_KEYS={public}"),
                image.clone(),
            ]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            docker_ok(&args);
            fleet.hosts.push((c, String::new()));
        }
        let mut known = String::new();
        for (c, ip) in &mut fleet.hosts {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !docker(&["exec", c, "test", "-e", "/run/cyan-fleet/ready"])
                .status
                .success()
            {
                assert!(
                    Instant::now() < deadline,
                    "{c} not ready: {}",
                    text(&docker(&["logs", c]))
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            *ip = docker_ok(&[
                "inspect",
                "-f",
                &format!("{{{{(index .NetworkSettings.Networks \"{name}\").IPAddress}}}}"),
                c,
            ]);
            let key = docker_ok(&["exec", c, "cat", "/etc/ssh/ssh_host_ed25519_key.pub"]);
            known.push_str(&format!("{ip} {key}\n"));
        }
        std::fs::write(fleet.dir.join("known_hosts"), known).unwrap();
        fleet
    }

    fn ip(&self, i: usize) -> &str {
        &self.hosts[i].1
    }

    fn container(&self, i: usize) -> &str {
        &self.hosts[i].0
    }

    /// Refuses (`cut`) or lets in again SSH connections to host `i`; its
    /// app port stays open.
    fn cut_ssh(&self, i: usize, cut: bool) {
        let op = if cut { "-I" } else { "-D" };
        let rule = [
            "INPUT",
            "-p",
            "tcp",
            "--dport",
            "22",
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ];
        let mut args = vec!["exec", self.container(i), "iptables", op];
        args.extend(rule);
        docker_ok(&args);
    }

    /// Runs `docker` inside host `i` (its own engine).
    fn inner(&self, i: usize, args: &[&str]) -> String {
        let mut all = vec!["exec", self.container(i), "docker"];
        all.extend(args);
        docker_ok(&all)
    }
}

/// The app: the demo, one replica per host, served on every host at
/// `APP_PORT`; the hosts named h1.. by their addresses.
struct App {
    dir: PathBuf,
    config: PathBuf,
    name: String,
    /// `image:`, without a registry unless `in_registry` gave it one.
    image: String,
}

impl App {
    /// The app on `fleet`; with `slow`, that host is reached over a link
    /// `slow_down` slows (`tests/fleet/slow-link`).
    fn new(fleet: &Fleet, slow: Option<usize>) -> App {
        let name = format!("fleet{}", std::process::id());
        let dir = fleet.dir.join("app");
        std::fs::create_dir_all(&dir).unwrap();
        let app = App {
            config: dir.join("cyan.yaml"),
            dir,
            image: format!("cyan-test-{name}"),
            name,
        };
        let ssh_config = app.dir.join("ssh_config");
        let slow_link = match slow {
            Some(i) => format!(
                "Host {}\n  ProxyCommand {} %h %p {}\n",
                fleet.ip(i),
                repo_root().join("tests/fleet/slow-link").display(),
                app.dir.join("delay").display()
            ),
            None => String::new(),
        };
        std::fs::write(&ssh_config, slow_link).unwrap();
        app.write(fleet, "");
        app
    }

    /// The image goes through the CI registry on 127.0.0.1:5000, which
    /// each host reaches on its own loopback through an SSH tunnel the
    /// test holds (`ssh -R`): pushed once here, pulled by digest there.
    fn in_registry(&mut self, fleet: &Fleet) -> Vec<Child> {
        self.image = format!("127.0.0.1:5000/cyan-test-{}", self.name);
        (0..fleet.hosts.len())
            .map(|i| {
                Command::new("ssh")
                    .arg("-i")
                    .arg(fleet.dir.join("key"))
                    .arg("-o")
                    .arg(format!(
                        "UserKnownHostsFile={}",
                        fleet.dir.join("known_hosts").display()
                    ))
                    .args([
                        "-o",
                        "BatchMode=yes",
                        "-o",
                        "ExitOnForwardFailure=yes",
                        "-N",
                        "-R",
                    ])
                    .arg("127.0.0.1:5000:127.0.0.1:5000")
                    .arg(format!("root@{}", fleet.ip(i)))
                    .stdin(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect()
    }

    /// Every byte to and from the slow host is delayed `seconds` from now.
    fn slow_down(&self, seconds: f64) {
        std::fs::write(self.dir.join("delay"), seconds.to_string()).unwrap();
    }

    /// Writes cyan.yaml with `extra` appended.
    fn write(&self, fleet: &Fleet, extra: &str) {
        let name = &self.name;
        let hosts: String = fleet
            .hosts
            .iter()
            .enumerate()
            .map(|(i, (_, ip))| format!("  - name: h{}\n    url: ssh://root@{ip}\n", i + 1))
            .collect();
        let yaml = format!(
            "app: {name}\nimage: {image}\nbuild:\n  context: {ctx}\nport: 8080\ninit: true\nstop_timeout: 2s\n\
proxy:\n  listen: 0.0.0.0:{APP_PORT}\n  drain_timeout: 5s\n\
{health}\
hosts:\n{hosts}\
fleet:\n  ssh:\n    identity_file: {key}\n    known_hosts_file: {known}\n    config_file: {ssh_config}\n{extra}",
            ctx = repo_root().join("examples/demo").display(),
            key = fleet.dir.join("key").display(),
            known = fleet.dir.join("known_hosts").display(),
            ssh_config = self.dir.join("ssh_config").display(),
            // `extra` may bring its own.
            health = if extra.contains("health:") { "" } else { GATE },
            image = self.image,
        );
        std::fs::write(&self.config, yaml).unwrap();
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cyan"));
        cmd.args(args)
            .arg("-c")
            .arg(&self.config)
            .env("CYAN_HOME", self.dir.join("home"))
            .env("CYAN_PROXY_BINARY", static_cyan())
            .env("CI", "true")
            .env_remove("RUST_LOG");
        cmd
    }

    fn cyan(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Starts cyan; `until(pattern)` on the result waits for a progress
    /// line holding `pattern`.
    fn spawn(&self, args: &[&str]) -> Spawned {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Spawned { child, lines }
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = succeeded(&all, &self.cyan(&all));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }
}

struct Spawned {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Spawned {
    fn until(&self, pattern: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !self
            .lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(pattern))
        {
            assert!(
                Instant::now() < deadline,
                "no {pattern:?} in {:?}",
                self.lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn wait(mut self) -> (Option<i32>, String) {
        let status = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        (status.code(), self.lines.lock().unwrap().join("\n"))
    }
}

/// The static cyan `scripts/build-static` makes (the README's test command
/// runs it first): the hosts' proxy containers run it.
fn static_cyan() -> PathBuf {
    let p = repo_root().join("target/x86_64-unknown-linux-gnu/debug/cyan");
    assert!(
        p.exists(),
        "{} is missing: run scripts/build-static first",
        p.display()
    );
    p
}

/// Debian's HAProxy on loopback in front of the hosts, checking each
/// host every 200 ms: by connecting, or with `up_check` by `GET
/// /cyan/up` (down after 2 failures, up after 2 passes).
fn haproxy(fleet: &Fleet, port: u16, up_check: bool) -> Haproxy {
    let servers: String = (0..fleet.hosts.len())
        .map(|i| {
            format!(
                "  server h{} {}:{APP_PORT} check inter 200ms fall 2 rise 2\n",
                i + 1,
                fleet.ip(i)
            )
        })
        .collect();
    let check = match up_check {
        true => "  option httpchk GET /cyan/up\n  http-check expect status 200\n",
        false => "",
    };
    let cfg = format!(
        "global\n  maxconn 2000\n\
defaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n  option http-keep-alive\n  retries 3\n  option redispatch\n\
frontend fe\n  bind 127.0.0.1:{port}\n  default_backend be\n\
backend be\n  balance roundrobin\n{check}{servers}"
    );
    let path = fleet.dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let child = Command::new("haproxy")
        .arg("-f")
        .arg(&path)
        .arg("-db")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("haproxy (Debian's package) must be installed: .ci/run installs it");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "haproxy did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    Haproxy(child)
}

/// The HAProxy process, stopped when dropped (a failed test leaves none).
struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every host's live version, from `cyan status`.
fn live_versions(app: &App) -> Vec<(String, Option<String>, bool)> {
    let s = app.json(&["status"]);
    s["hosts"]
        .as_array()
        .unwrap_or_else(|| panic!("no hosts in {s}"))
        .iter()
        .map(|h| {
            (
                h["name"].as_str().unwrap().to_string(),
                h["version"].as_str().map(str::to_string),
                h["behind"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn all_live(app: &App, version: &str) {
    for (name, v, behind) in live_versions(app) {
        assert_eq!(v.as_deref(), Some(version), "{name}");
        assert!(!behind, "{name}");
    }
}

/// From now on, kills on host `i` every container of `app` that starts,
/// as the engine announces it: a candidate that crashes on one host.
/// Returns how to stop it, which says how many it killed.
fn crash_starting_containers(fleet: &Fleet, i: usize, app: &str) -> impl FnOnce() -> usize {
    let c = fleet.container(i).to_string();
    let watch = format!(
        "docker events --filter event=start --filter label=cyan.app={app} --format '{{{{.ID}}}}' \
         | while read id; do docker kill \"$id\" >/dev/null 2>&1; echo \"$id\" >> /tmp/crashed; done"
    );
    docker_ok(&["exec", "-d", &c, "sh", "-c", &watch]);
    // `docker events` subscribes before the deploy's first start.
    std::thread::sleep(Duration::from_millis(500));
    move || {
        docker(&["exec", &c, "pkill", "-f", "docker events"]);
        let out = docker(&["exec", &c, "cat", "/tmp/crashed"]);
        String::from_utf8_lossy(&out.stdout).lines().count()
    }
}

/// The tests of this file one at a time: each runs three servers.
static ONE_FLEET: Mutex<()> = Mutex::new(());

#[test]
fn a_fleet_moves_together_behind_haproxy_with_no_failed_request() {
    let _one = ONE_FLEET.lock().unwrap_or_else(|e| e.into_inner());
    util::demo_binary_present();
    static_cyan();
    let fleet = Fleet::start(3);
    let app = App::new(&fleet, None);

    // Two of the three hosts: the third is behind.
    let first = app.json(&["deploy", "--version", "v1", "--hosts", "h1,h2"]);
    assert_eq!(
        first["fleet"]["hosts"].as_array().unwrap().len(),
        2,
        "{first}"
    );
    let seen = live_versions(&app);
    assert_eq!(seen[2].0, "h3");
    assert!(seen[2].2, "h3 is behind: {seen:?}");
    assert!(!seen[0].2 && !seen[1].2, "{seen:?}");
    // The next deploy of the version brings it level; the others stay.
    let level = app.json(&["deploy", "--version", "v1"]);
    let outcomes: Vec<&str> = level["fleet"]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["live", "live", "switched"], "{level}");
    all_live(&app, "v1");
    // Every host's image is the one built here, by id.
    let here = docker_ok(&[
        "image",
        "inspect",
        "-f",
        "{{.Id}}",
        &format!("cyan-test-{}:v1", app.name),
    ]);
    for i in 0..3 {
        let there = fleet.inner(
            i,
            &[
                "image",
                "inspect",
                "-f",
                "{{.Id}}",
                &format!("cyan-test-{}:v1", app.name),
            ],
        );
        assert_eq!(there, here, "host {}", i + 1);
    }

    let lb_port = free_port();
    let lb = haproxy(&fleet, lb_port, false);
    let rt = load::runtime();
    let _guard = rt.enter();
    let traffic = Load::start(lb_port, "fleet.test", 3, 3);
    std::thread::sleep(Duration::from_millis(500));

    let mut skews = Vec::new();
    let mut last_done = Instant::now();
    for (step, args) in [
        ("deploy v2", vec!["deploy", "--version", "v2"]),
        ("rollback", vec!["rollback"]),
        ("deploy v3", vec!["deploy", "--version", "v3"]),
    ] {
        let report = app.json(&args);
        last_done = Instant::now();
        let hosts = report["fleet"]["hosts"].as_array().unwrap();
        assert_eq!(hosts.len(), 3, "{step}: {report}");
        if let Some(skew) = report["fleet"]["skew_ms"].as_f64() {
            skews.push(skew);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    all_live(&app, "v3");
    std::thread::sleep(Duration::from_millis(500));
    let samples = rt.block_on(traffic.finish());
    load::assert_none_failed(&samples, "across deploy v2, rollback, deploy v3 on 3 hosts");
    let late: Vec<&String> = samples
        .iter()
        .filter(|s| s.start > last_done)
        .filter_map(|s| s.outcome.as_ref().ok())
        .filter(|body| identity(body).1 != "v3")
        .collect();
    let after = samples.iter().filter(|s| s.start > last_done).count();
    assert!(after > 50, "only {after} requests after the last switch");
    assert!(
        late.is_empty(),
        "answered by an old version after the switch: {late:?}"
    );
    assert_eq!(skews.len(), 2, "two deploys switched: {skews:?}");
    eprintln!(
        "fleet of 3: {} requests, 0 failed; switch skew {skews:?} ms",
        samples.len()
    );

    // One host's candidate crashes: its gate fails, nothing switches.
    let traffic = Load::start(lb_port, "fleet.test", 2, 2);
    let crashes = crash_starting_containers(&fleet, 1, &app.name);
    let out = app.cyan(&["deploy", "--version", "v4"]);
    assert!(crashes() > 0, "the candidate on h2 never started");
    assert_eq!(out.status.code(), Some(util::GATE_FAILED), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("h2:"), "names the host: {said}");
    assert!(said.contains("nothing was switched on any host"), "{said}");
    all_live(&app, "v3");
    for i in [0, 2] {
        let left = fleet.inner(i, &["ps", "-q", "--filter", "label=cyan.version=v4"]);
        assert!(
            left.is_empty(),
            "h{}: the candidate was removed: {left}",
            i + 1
        );
    }

    // One host's SSH is cut: refused before any switch, naming it.
    fleet.cut_ssh(2, true);
    let out = app.cyan(&["deploy", "--version", "v5"]);
    fleet.cut_ssh(2, false);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("h3") && said.contains("nothing was changed on any host"),
        "{said}"
    );
    all_live(&app, "v3");
    let samples = rt.block_on(traffic.finish());
    load::assert_none_failed(
        &samples,
        "across a failed gate on one host and an unreachable host",
    );
    for i in 0..3 {
        let v5 = fleet.inner(i, &["ps", "-aq", "--filter", "label=cyan.version=v5"]);
        assert!(v5.is_empty(), "h{}: nothing of v5 started", i + 1);
    }
    drop(lb);
}

/// The gate: five passes in a row, 100 ms apart (long enough for a test
/// to crash a candidate as it starts).
const GATE: &str = "health:\n  http: { path: /healthz, expect: 200 }\n  interval: 100ms\n  timeout: 1s\n  healthy_threshold: 5\n  deadline: 20s\n";

/// Probes over a link with 0.8 s round trips: each opens an SSH channel
/// first.
const SLOW_GATE: &str = "health:\n  http: { path: /healthz, expect: 200 }\n  interval: 100ms\n  timeout: 4s\n  healthy_threshold: 2\n  deadline: 60s\n";

/// Kills host `i`'s cyan proxy container.
fn kill_proxy(fleet: &Fleet, i: usize) {
    let id = fleet.inner(i, &["ps", "-q", "--filter", "label=cyan.role=proxy"]);
    assert!(!id.is_empty(), "h{} runs no proxy", i + 1);
    fleet.inner(i, &["kill", &id]);
}

#[test]
fn a_failed_verify_or_commit_switches_every_host_back_and_a_killed_deploy_converges() {
    let _one = ONE_FLEET.lock().unwrap_or_else(|e| e.into_inner());
    util::demo_binary_present();
    static_cyan();
    let fleet = Fleet::start(3);
    // h2 is behind a link the test slows down: its switch request is then
    // on the wire for 0.4 s, long enough to kill its proxy, or cyan.
    let app = App::new(&fleet, Some(1));
    app.json(&["deploy", "--version", "v1"]);
    all_live(&app, "v1");
    let lb_port = free_port();
    let lb = haproxy(&fleet, lb_port, false);
    let rt = load::runtime();
    let _guard = rt.enter();
    let traffic = Load::start(lb_port, "fleet.test", 2, 2);
    std::thread::sleep(Duration::from_millis(300));

    // v2 answers 500 to everything: the verify window, over the sum of
    // every host's counts, fails, and every host goes back to v1.
    app.write(
        &fleet,
        "verify: { duration: 5s, max_5xx_ratio: 0.05, min_requests: 10 }\nenv:\n  FAIL_RATE: \"1\"\n",
    );
    let bad_from = Instant::now();
    let out = app.cyan(&["deploy", "--version", "v2"]);
    let bad_until = Instant::now();
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(text(&out).contains("verification"), "{}", text(&out));
    all_live(&app, "v1");

    // The commit fails on h2 (its proxy killed while its switch is on the
    // wire): h1 and h3 switch back, and the error says so. Its probes take
    // longer than a second over the slow link.
    app.write(&fleet, SLOW_GATE);
    app.slow_down(0.4);
    let run = app.spawn(&["deploy", "--version", "v3"]);
    run.until("▸ switch 3 hosts");
    let killed_at = Instant::now();
    kill_proxy(&fleet, 1);
    let (code, said) = run.wait();
    assert_ne!(code, Some(0), "{said}");
    assert!(said.contains("h2:"), "names the host: {said}");
    assert!(
        said.contains("h1 switched back") && said.contains("h3 switched back"),
        "{said}"
    );
    // The next command boots h2's proxy again, from its state.
    all_live(&app, "v1");

    // cyan killed between the hosts' commits (h2's still on the wire):
    // run again, every host converges on v3.
    let run = app.spawn(&["deploy", "--version", "v3"]);
    run.until("▸ switch 3 hosts");
    let mut run = run;
    run.child.kill().unwrap();
    let _ = run.child.wait();
    let again = app.json(&["deploy", "--version", "v3"]);
    assert_eq!(
        again["fleet"]["hosts"].as_array().unwrap().len(),
        3,
        "{again}"
    );
    all_live(&app, "v3");
    std::thread::sleep(Duration::from_millis(500));
    let samples = rt.block_on(traffic.finish());
    drop(lb);

    // Failures only where the test broke something: v2's own 500s while
    // it was live, and requests in flight on h2's proxy when it was killed.
    let unexpected: Vec<String> = samples
        .iter()
        .filter(|s| s.outcome.is_err())
        .filter(|s| !(s.end >= bad_from && s.start <= bad_until))
        .filter(|s| !(s.end >= killed_at && s.start <= killed_at + Duration::from_secs(2)))
        .map(|s| format!("{:?}", s.outcome))
        .collect();
    let expected = load::failures(&samples).len() - unexpected.len();
    eprintln!(
        "{} requests; {expected} failed where v2 answered 500 or h2's proxy was killed; {} elsewhere",
        samples.len(),
        unexpected.len()
    );
    assert!(unexpected.is_empty(), "{unexpected:?}");
}

/// `GET /cyan/up` on every host every 50 ms until stopped: (when, host,
/// status) of each answer.
fn watch_up(
    fleet: &Fleet,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<(Instant, usize, u16)>> {
    let ips: Vec<String> = (0..fleet.hosts.len())
        .map(|i| fleet.ip(i).to_string())
        .collect();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for (i, ip) in ips.iter().enumerate() {
                let (status, _) =
                    util::http_get(&format!("{ip}:{APP_PORT}"), "fleet.test", "/cyan/up");
                seen.push((Instant::now(), i, status));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        seen
    })
}

#[test]
fn a_rolling_deploy_drains_one_host_at_a_time_from_haproxy_with_no_failed_request() {
    let _one = ONE_FLEET.lock().unwrap_or_else(|e| e.into_inner());
    util::demo_binary_present();
    static_cyan();
    let fleet = Fleet::start(3);
    let mut app = App::new(&fleet, None);
    let mut tunnels = app.in_registry(&fleet);
    app.write(&fleet, "  strategy: rolling\n  drain_wait: 1s\n");
    std::thread::sleep(Duration::from_millis(500));
    let first = app.json(&["deploy", "--version", "v1"]);
    all_live(&app, "v1");
    // Pushed once, pulled by that digest on every host.
    let digest = first["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no digest: {first}"));
    for i in 0..3 {
        let there = fleet.inner(
            i,
            &[
                "image",
                "inspect",
                "-f",
                "{{json .RepoDigests}}",
                &format!("{}:v1", app.image),
            ],
        );
        assert!(
            there.contains(digest.split('@').nth(1).unwrap()),
            "h{}: {there} lacks {digest}",
            i + 1
        );
    }
    let lb_port = free_port();
    let lb = haproxy(&fleet, lb_port, true);
    // HAProxy sees every host up (2 passes of /cyan/up).
    std::thread::sleep(Duration::from_millis(800));
    let rt = load::runtime();
    let _guard = rt.enter();
    let traffic = Load::start(lb_port, "fleet.test", 3, 3);
    std::thread::sleep(Duration::from_millis(300));
    for v in ["v2", "v3"] {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = watch_up(&fleet, stop.clone());
        let report = app.json(&["deploy", "--version", v]);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let seen = watcher.join().unwrap();
        // Each host was out of the balancer, one at a time, in order.
        let mut out_spans = Vec::new();
        for host in 0..3 {
            let out: Vec<Instant> = seen
                .iter()
                .filter(|(_, h, s)| *h == host && *s == 503)
                .map(|(t, _, _)| *t)
                .collect();
            assert!(
                !out.is_empty(),
                "h{} never left the balancer in {v}",
                host + 1
            );
            out_spans.push((out[0], *out.last().unwrap()));
        }
        for w in out_spans.windows(2) {
            assert!(
                w[0].1 < w[1].0,
                "two hosts out at once in {v}: {out_spans:?}"
            );
        }
        let at: Vec<f64> = report["fleet"]["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["switched_at_ms"].as_f64().unwrap())
            .collect();
        assert!(
            at.windows(2).all(|w| w[0] + 1000.0 < w[1]),
            "one after another: {at:?}"
        );
        all_live(&app, v);
        // Rolling keeps one version per host: the previous one is stopped.
        for i in 0..3 {
            let running = fleet.inner(
                i,
                &[
                    "ps",
                    "--filter",
                    &format!("label=cyan.app={}", app.name),
                    "--format",
                    "{{.Label \"cyan.version\"}}",
                ],
            );
            assert_eq!(running.lines().collect::<Vec<_>>(), [v], "h{}", i + 1);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let samples = rt.block_on(traffic.finish());
    drop(lb);
    for t in &mut tunnels {
        let _ = t.kill();
        let _ = t.wait();
    }
    load::assert_none_failed(
        &samples,
        "across two rolling deploys of 3 hosts behind HAProxy",
    );
    eprintln!("rolling, 3 hosts: {} requests, 0 failed", samples.len());
}
