//! The measuring half of `bench/run` (which sets up the peers): switches
//! under load (cyan, nginx reload, naive stop/start), proxy upgrades under
//! load, rollback and deploy through the CLI, and memory. Prints Markdown.
//!
//! Run through `bench/run`; it is `cargo run --release --example bench`.

#[path = "../tests/util/load.rs"]
#[allow(dead_code)]
mod load;
#[path = "percentile.rs"]
mod percentile;

use percentile::percentile;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cyan::proxy::api::{RouteSpec, SwitchRequest};
use cyan::proxy::client::AdminClient;
use cyan::proxy::state::RoutePolicy;
use cyan::proxy::Home;
use cyan::release::Color;
use load::{Load, Sample};

struct Args {
    cyan: PathBuf,
    home: PathBuf,
    out: PathBuf,
    overhead: PathBuf,
    nginx_prefix: PathBuf,
    demo: PathBuf,
}

fn args() -> Args {
    let mut a = std::env::args().skip(2);
    let mut get = |name: &str| -> PathBuf {
        let flag = a.next().unwrap_or_default();
        assert_eq!(
            flag,
            format!("--{name}"),
            "usage: bench tables --cyan P --home P --out P --overhead P --nginx-prefix P --demo P"
        );
        PathBuf::from(a.next().expect("a value"))
    };
    Args {
        cyan: get("cyan"),
        home: get("home"),
        out: get("out"),
        overhead: get("overhead"),
        nginx_prefix: get("nginx-prefix"),
        demo: get("demo"),
    }
}

const CYAN_PORT: u16 = 18090;
const NGINX_PORT: u16 = 18091;
const NAIVE_PORT: u16 = 18095;
const APP_PORT: u16 = 18096;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let mut md = String::new();
    md += &overhead_table(&a.overhead);
    eprintln!("switch under load: cyan ...");
    let cyan = switches_cyan(&a.home).await;
    eprintln!("switch under load: nginx reload ...");
    let nginx = switches_nginx(&a.nginx_prefix).await;
    eprintln!("switch under load: naive stop/start ...");
    let naive = naive_redeploys(&a.demo).await;
    md += &switch_table(&cyan, &nginx, &naive);
    eprintln!("proxy upgrade under load ...");
    md += &upgrades(&a.home, &a.cyan).await;
    eprintln!("rollback and deploy through the CLI ...");
    md += &cli_timings(&a, &nginx).await;
    eprintln!("memory ...");
    md += &memory(&a).await;
    println!("{md}");
}

// ---------------------------------------------------------------- overhead

/// One wrk run of one path: name, requests/s, p50/p99/p99.9 (µs), errors,
/// RSS, and the proxy's CPU time per request (µs, user and system).
struct Run {
    name: String,
    rps: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    errors: u64,
    rss: String,
    cpu_us: f64,
}

fn overhead_table(file: &Path) -> String {
    let text = std::fs::read_to_string(file).expect("overhead results");
    let runs: Vec<Run> = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            let num = |i: usize| {
                f.get(i)
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(f64::NAN)
            };
            Run {
                name: f[0].to_string(),
                rps: num(1),
                p50: num(2),
                p99: num(3),
                p999: num(4),
                errors: num(5) as u64,
                rss: f.get(6).unwrap_or(&"-").to_string(),
                cpu_us: num(7),
            }
        })
        .collect();
    let mut names: Vec<&str> = Vec::new();
    for r in &runs {
        if !names.contains(&r.name.as_str()) {
            names.push(&r.name);
        }
    }
    let of = |name: &str| -> Vec<&Run> { runs.iter().filter(|r| r.name == name).collect() };
    // Each path's median round by requests/s, with that round's latencies.
    let median_round = |name: &str| -> &Run {
        let mut rs = of(name);
        rs.sort_by(|a, b| a.rps.total_cmp(&b.rps));
        rs[rs.len() / 2]
    };
    let median = |mut xs: Vec<f64>| -> f64 {
        xs.sort_by(f64::total_cmp);
        xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let nginx_name = *names
        .iter()
        .find(|n| n.starts_with("nginx"))
        .expect("nginx row");
    let nginx = of(nginx_name);
    // Ratios are taken round by round (the paths of one round ran within
    // seconds of each other), then their median: the neighbours' load
    // drifts over a run, and a ratio of two medians from different
    // rounds would carry that drift.
    let vs_nginx = |name: &str, f: fn(&Run) -> f64| {
        median(
            of(name)
                .iter()
                .zip(&nginx)
                .map(|(r, n)| f(r) / f(n))
                .collect(),
        )
    };
    let rounds = runs.len() / names.len().max(1);
    let mut md = format!(
        "### 1. Proxy overhead (wrk, 64 connections, same backend; {rounds} interleaved rounds)\n\n\
         Requests/s and latencies are each path's median round; the ratios to nginx are \
         the median of the per-round ratios. CPU is the proxy's own (user and system), \
         per request.\n\n\
         | path | requests/s | vs nginx | p50 ms | p99 ms | p99 vs nginx | p99.9 ms | errors | peak RSS | CPU µs/request | CPU vs nginx | every round's requests/s |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    );
    for name in &names {
        let r = median_round(name);
        let all: Vec<String> = of(name).iter().map(|x| format!("{:.0}", x.rps)).collect();
        let cpu = median(of(name).iter().map(|x| x.cpu_us).collect());
        let (cpu, cpu_vs) = if cpu.is_nan() {
            ("-".to_string(), "-".to_string())
        } else {
            (
                format!("{cpu:.1}"),
                format!("{:.2}x", vs_nginx(name, |r| r.cpu_us)),
            )
        };
        md += &format!(
            "| {} | {:.0} | {:.2}x | {:.2} | {:.2} | {:.2}x | {:.2} | {} | {} | {} | {} | {} |\n",
            r.name,
            r.rps,
            vs_nginx(name, |r| r.rps),
            r.p50 / 1000.0,
            r.p99 / 1000.0,
            vs_nginx(name, |r| r.p99),
            r.p999 / 1000.0,
            of(name).iter().map(|x| x.errors).sum::<u64>(),
            r.rss,
            cpu,
            cpu_vs,
            all.join(", ")
        );
    }
    md + "\n"
}

// ---------------------------------------------------------------- switches

/// What a series of switches did to the traffic.
struct SwitchStats {
    name: String,
    switches: usize,
    requests: usize,
    failed: usize,
    /// From the start of the switch command to the first answer by the new color.
    to_new_ms: Vec<f64>,
    /// Requests begun after the command returned, answered by the old color.
    stale: usize,
    /// For stop/start: the longest run of failures.
    outage_ms: Option<f64>,
}

/// (began, returned, color-or-version the switch went to)
type Switch = (Instant, Instant, String);

fn analyse(name: &str, samples: &[Sample], switches: &[Switch]) -> SwitchStats {
    let mut to_new_ms = Vec::new();
    let mut stale = 0;
    for (i, (t0, t1, want)) in switches.iter().enumerate() {
        let next = switches.get(i + 1).map(|s| s.0);
        let answered_by = |s: &Sample| {
            s.outcome
                .as_ref()
                .ok()
                .map(|b| b.split_whitespace().last().unwrap_or("").to_string())
        };
        if let Some(first) = samples
            .iter()
            .filter(|s| s.end > *t0 && answered_by(s).as_deref() == Some(want.as_str()))
            .map(|s| s.end)
            .min()
        {
            to_new_ms.push((first - *t0).as_secs_f64() * 1000.0);
        }
        stale += samples
            .iter()
            .filter(|s| s.start > *t1 && next.is_none_or(|n| s.end < n))
            .filter(|s| answered_by(s).is_some_and(|b| b != *want))
            .count();
    }
    SwitchStats {
        name: name.into(),
        switches: switches.len(),
        requests: samples.len(),
        failed: load::failures(samples).len(),
        to_new_ms,
        stale,
        outage_ms: None,
    }
}

/// Requests back to back, each on a fresh connection, from a thread of its
/// own, until one is answered by `want` (at most 2 s or 20,000 requests).
/// Started just before a switch, it samples the moment the new color
/// starts answering densely: the paced load's clients pause 2 ms between
/// requests, and the first answer after a switch waited on those pauses.
fn probe(port: u16, want: &str) -> std::thread::JoinHandle<Vec<Sample>> {
    let want = want.to_string();
    std::thread::spawn(move || {
        let began = Instant::now();
        let mut samples = Vec::new();
        while began.elapsed() < Duration::from_secs(2) && samples.len() < 20_000 {
            let start = Instant::now();
            let outcome = answer_once(port, "bench.localhost");
            let seen = outcome.as_deref() == Ok(want.as_str());
            samples.push(Sample {
                start,
                end: Instant::now(),
                outcome,
            });
            if seen {
                break;
            }
        }
        samples
    })
}

/// The load's samples and the probes', in order of start.
async fn all_samples(load: Load, probes: Vec<std::thread::JoinHandle<Vec<Sample>>>) -> Vec<Sample> {
    let mut samples = load.finish().await;
    for p in probes {
        samples.extend(p.join().expect("probe"));
    }
    samples.sort_by_key(|s| s.start);
    samples
}

async fn switches_cyan(home: &Path) -> SwitchStats {
    let admin = AdminClient::new(&Home { dir: home.into() });
    let load = Load::start(CYAN_PORT, "bench.localhost", 8, 4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut switches, mut probes) = (Vec::new(), Vec::new());
    for i in 0..100 {
        let color = if i % 2 == 0 {
            Color::Green
        } else {
            Color::Blue
        };
        probes.push(probe(CYAN_PORT, &color.to_string()));
        let t0 = Instant::now();
        let req = SwitchRequest {
            color,
            upstreams: None,
            record: None,
            route: None,
        };
        admin.switch("bench", &req).await.expect("switch");
        switches.push((t0, Instant::now(), color.to_string()));
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let samples = all_samples(load, probes).await;
    analyse("cyan proxy (one admin call)", &samples, &switches)
}

async fn switches_nginx(prefix: &Path) -> SwitchStats {
    let load = Load::start(NGINX_PORT, "bench.localhost", 8, 4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut switches, mut probes) = (Vec::new(), Vec::new());
    for i in 0..20 {
        let (port, color) = if i % 2 == 0 {
            (18082, "green")
        } else {
            (18081, "blue")
        };
        probes.push(probe(NGINX_PORT, color));
        let t0 = Instant::now();
        std::fs::write(
            prefix.join("upstream.conf"),
            format!("server 127.0.0.1:{port};\n"),
        )
        .unwrap();
        let ok = Command::new("nginx")
            .arg("-p")
            .arg(prefix)
            .args(["-c", "nginx.conf", "-s", "reload"])
            .status()
            .unwrap();
        assert!(ok.success(), "nginx reload");
        switches.push((t0, Instant::now(), color.to_string()));
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let samples = all_samples(load, probes).await;
    analyse(
        "nginx: rewrite upstream + `nginx -s reload`",
        &samples,
        &switches,
    )
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `docker stop; docker rm; docker run` of the demo app, load straight at
/// its published port: what many Jenkins jobs do today.
async fn naive_redeploys(demo: &Path) -> SwitchStats {
    let image = "cyan-bench-naive";
    docker(&["build", "-q", "-t", image, demo.to_str().unwrap()]);
    let name = "cyan-bench-naive";
    let _ = Command::new("docker").args(["rm", "-f", name]).output();
    let run = |version: &str| {
        docker(&[
            "run",
            "-d",
            "--name",
            name,
            "-p",
            &format!("127.0.0.1:{NAIVE_PORT}:8080"),
            "-e",
            &format!("VERSION={version}"),
            image,
        ]);
    };
    run("1");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let load = Load::start(NAIVE_PORT, "localhost", 8, 4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut switches = Vec::new();
    for v in 2..=6 {
        let t0 = Instant::now();
        docker(&["stop", "-t", "10", name]);
        docker(&["rm", name]);
        run(&v.to_string());
        switches.push((t0, Instant::now(), v.to_string()));
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let samples = load.finish().await;
    let _ = Command::new("docker").args(["rm", "-f", name]).output();
    let mut stats = analyse("naive: docker stop; rm; run", &samples, &switches);
    // The longest stretch with no successful answer.
    let mut last_ok: Option<Instant> = None;
    let mut worst = 0.0f64;
    for s in &samples {
        if s.outcome.is_ok() {
            if let Some(prev) = last_ok {
                worst = worst.max((s.end - prev).as_secs_f64() * 1000.0);
            }
            last_ok = Some(s.end);
        }
    }
    stats.outage_ms = Some(worst);
    stats
}

fn switch_table(cyan: &SwitchStats, nginx: &SwitchStats, naive: &SwitchStats) -> String {
    let mut md = String::from(
        "### 2-3. Switching traffic under load (12 clients: 8 keep-alive, 4 new connection per request; plus a probe per switch, back to back on new connections)\n\n\
         | how | switches | requests | failed | to first new answer p50 / p99 ms | old answers after the command returned | longest outage ms |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for s in [cyan, nginx, naive] {
        md += &format!(
            "| {} | {} | {} | {} | {:.2} / {:.2} | {} | {} |\n",
            s.name,
            s.switches,
            s.requests,
            s.failed,
            percentile(&s.to_new_ms, 50.0),
            percentile(&s.to_new_ms, 99.0),
            s.stale,
            s.outage_ms.map_or("-".into(), |o| format!("{o:.0}")),
        );
    }
    md + "\n"
}

// ---------------------------------------------------------------- upgrade

async fn upgrades(home: &Path, cyan: &Path) -> String {
    let admin = AdminClient::new(&Home { dir: home.into() });
    let load = Load::start(CYAN_PORT, "bench.localhost", 8, 4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut pids = Vec::new();
    for _ in 0..5 {
        let r = admin.upgrade(cyan).await.expect("upgrade");
        pids.push(r.new_pid);
        tokio::time::sleep(Duration::from_millis(3000)).await;
    }
    let samples = load.finish().await;
    format!(
        "### 4. Proxy upgrade under load (`cyan proxy upgrade`, new process takes the sockets)\n\n\
         | upgrades | requests | failed |\n|---:|---:|---:|\n| {} | {} | {} |\n\n",
        pids.len(),
        samples.len(),
        load::failures(&samples).len()
    )
}

// ---------------------------------------------------------------- CLI

fn write_app_config(a: &Args) -> PathBuf {
    let dir = a.out.join("app");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("cyan.yaml");
    std::fs::write(
        &cfg,
        format!(
            "app: bench-app\nimage: cyan-bench-app\nbuild:\n  context: {}\nreplicas: 2\nport: 8080\ninit: true\nstop_timeout: 2s\n\
             proxy:\n  host: bench-app.localhost\n  listen: 127.0.0.1:{APP_PORT}\n  drain_timeout: 5s\n\
             health:\n  http: {{ path: /healthz }}\n  interval: 100ms\n  healthy_threshold: 2\n",
            a.demo.display()
        ),
    )
    .unwrap();
    cfg
}

fn cyan_cmd(a: &Args, cfg: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(&a.cyan);
    c.args(args)
        .arg("-c")
        .arg(cfg)
        .env("CYAN_HOME", &a.home)
        .env("CI", "1");
    c
}

/// The version the app answers with through the proxy (fresh connection).
fn version_now() -> Option<String> {
    answer_once(APP_PORT, "bench-app.localhost").ok()
}

/// One GET on a fresh connection: the last word of a 200's body, or what
/// went wrong.
fn answer_once(port: u16, host: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut r = String::new();
    s.read_to_string(&mut r).map_err(|e| e.to_string())?;
    if r.starts_with("HTTP/1.1 200") {
        Ok(r.split_whitespace().last().unwrap_or("").to_string())
    } else {
        Err(r.lines().next().unwrap_or("no answer").to_string())
    }
}

async fn cli_timings(a: &Args, nginx: &SwitchStats) -> String {
    let cfg = write_app_config(a);
    // interval x healthy_threshold
    let gate_waits = 0.1 * 2.0;
    // Versions no earlier run built: every build below is a real one.
    let run = std::process::id();
    let version = |n: u32| format!("{run}.{n}");
    // `cyan COMMAND --version V`'s wall time, in seconds.
    let timed = |command: &str, n: u32| {
        let t = Instant::now();
        let out = cyan_cmd(a, &cfg, &[command, "--version", &version(n)])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t.elapsed().as_secs_f64()
    };
    // A new version, built by the deploy (after a first deploy from nothing).
    timed("deploy", 1);
    let with_build: Vec<f64> = (2..=4).map(|n| timed("deploy", n) - gate_waits).collect();
    // Versions built beforehand (`cyan build`, as a CI job does before the
    // deploy job, or a redeploy), so the deploy itself is measured.
    for n in 5..=8 {
        timed("build", n);
    }
    let prebuilt: Vec<f64> = (5..=8).map(|n| timed("deploy", n) - gate_waits).collect();
    let mut rollbacks = Vec::new();
    for _ in 0..20 {
        let before = version_now().expect("app answers");
        let t = Instant::now();
        let mut child = cyan_cmd(a, &cfg, &["rollback"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        loop {
            if version_now().is_some_and(|v| v != before) {
                rollbacks.push(t.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "rollback did not switch"
            );
        }
        assert!(child.wait().unwrap().success());
    }
    let ids = docker(&["ps", "-aq", "--filter", "label=cyan.app=bench-app"]);
    let ids: Vec<&str> = ids.lines().collect();
    if !ids.is_empty() {
        let mut rm = vec!["rm", "-f"];
        rm.extend(ids);
        docker(&rm);
    }
    // This run's images (a version per run, so they would pile up).
    let tags: Vec<String> = (1..=8)
        .map(|n| format!("cyan-bench-app:{}", version(n)))
        .collect();
    let mut rmi = vec!["rmi", "--no-prune"];
    rmi.extend(tags.iter().map(String::as_str));
    let _ = Command::new("docker").args(&rmi).output();
    format!(
        "### 5. Rollback and deploy through the CLI (demo app, 2 replicas, real Docker)\n\n\
         | what | p50 | p99 | runs |\n|---|---:|---:|---:|\n\
         | `cyan rollback` start → first answer from the old release | {:.0} ms | {:.0} ms | {} |\n\
         | nginx reload start → first answer from the new upstream | {:.0} ms | {:.0} ms | {} |\n\
         | `cyan deploy` of a built image: wall time minus gate waits ({:.1} s; the demo starts at once) | {:.2} s | {:.2} s | {} |\n\
         | `cyan deploy` of a new version, its image build included | {:.2} s | {:.2} s | {} |\n\n",
        percentile(&rollbacks, 50.0),
        percentile(&rollbacks, 99.0),
        rollbacks.len(),
        percentile(&nginx.to_new_ms, 50.0),
        percentile(&nginx.to_new_ms, 99.0),
        nginx.to_new_ms.len(),
        gate_waits,
        percentile(&prebuilt, 50.0),
        percentile(&prebuilt, 99.0),
        prebuilt.len(),
        percentile(&with_build, 50.0),
        percentile(&with_build, 99.0),
        with_build.len(),
    )
}

// ---------------------------------------------------------------- memory

fn rss_mb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

async fn memory(a: &Args) -> String {
    let home = a.out.join("cyan-idle");
    let mut child = Command::new(&a.cyan)
        .args(["proxy", "run", "--home"])
        .arg(&home)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let admin = AdminClient::new(&Home { dir: home.clone() });
    while admin.health().await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 0..10 {
        let name = format!("app{i}");
        let spec = RouteSpec {
            hosts: vec![format!("{name}.localhost")],
            listen: None,
            path_prefix: None,
            policy: RoutePolicy::default(),
            tls: None,
            preview: None,
        };
        admin.put_route(&name, &spec).await.unwrap();
        let ups = |p: u16| {
            vec![
                format!("127.0.0.1:{p}")
                    .parse::<std::net::SocketAddr>()
                    .unwrap()
                    .into(),
                format!("127.0.0.1:{}", p + 1)
                    .parse::<std::net::SocketAddr>()
                    .unwrap()
                    .into(),
            ]
        };
        admin
            .set_color(&name, Color::Green, ups(20000 + i * 4))
            .await
            .unwrap();
        let req = SwitchRequest {
            color: Color::Blue,
            upstreams: Some(ups(20002 + i * 4)),
            record: None,
            route: None,
        };
        admin.switch(&name, &req).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = rss_mb(child.id(), "VmRSS:");
    let _ = admin.shutdown().await;
    let _ = child.wait();
    format!(
        "### 6. Memory\n\n| cyan proxy | RSS |\n|---|---:|\n| idle, 10 apps with 2 colors each | {idle:.1} MB |\n\
         | at 64 connections | see the peak RSS column of table 1 |\n"
    )
}
