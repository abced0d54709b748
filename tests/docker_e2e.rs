//! End-to-end tests against the real Docker engine, through the real `cyan`
//! binary and proxy. Requests go to 127.0.0.1 only and every load is bounded.

mod util;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use util::load::{assert_none_failed, failures, runtime, Load};
use util::{assert_contains_all, identity, text, TestApp};

fn pause() {
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn zero_downtime_across_deploy_rollback_deploy() {
    let app = TestApp::new("zd", "");
    app.deploy("1");
    let blue: HashSet<String> = (0..20).map(|_| identity(&app.get("/").1).0).collect();
    assert_eq!(blue.len(), 2, "two blue replicas share the traffic");

    let rt = runtime();
    let _ctx = rt.enter();
    let load = Load::start(app.port, &format!("{}.localhost", app.name), 4, 2);
    pause();

    let mut deploy = app.spawn(&["deploy", "--version", "2"]);
    let switched_to_2 = deploy.wait_for_step("switch", "done", Duration::from_secs(120));
    let (code, _, log) = deploy.finish();
    assert_eq!(code, 0, "{log}");
    pause();

    let before_rollback = app.containers();
    let rollback_started = Instant::now();
    let mut rollback = app.spawn(&["rollback"]);
    let switched_to_1 = rollback.wait_for_step("switch", "done", Duration::from_secs(30));
    let (code, _, log) = rollback.finish();
    assert_eq!(code, 0, "{log}");
    assert!(
        !log.contains("launch"),
        "a hot rollback launches nothing:\n{log}"
    );
    assert_eq!(
        app.containers(),
        before_rollback,
        "rollback started or removed a container"
    );
    pause();

    let deploy3_started = Instant::now();
    let mut deploy = app.spawn(&["deploy", "--version", "3"]);
    let switched_to_3 = deploy.wait_for_step("switch", "done", Duration::from_secs(120));
    let (code, _, log) = deploy.finish();
    assert_eq!(code, 0, "{log}");
    pause();

    let samples = rt.block_on(load.finish());
    assert_none_failed(&samples, "across deploy, rollback and deploy");
    assert!(
        samples.len() > 300,
        "too little load to prove anything: {}",
        samples.len()
    );

    let (mut on_2, mut on_1, mut on_3) = (0, 0, 0);
    for s in &samples {
        let (uuid, version) = identity(s.outcome.as_ref().unwrap());
        if s.start > switched_to_2 && s.end < rollback_started {
            assert_eq!(
                version, "2",
                "a request started after the switch to 2 was answered by {version}"
            );
            on_2 += 1;
        }
        if s.start > switched_to_1 && s.end < deploy3_started {
            assert_eq!(
                version, "1",
                "a request started after the rollback was answered by {version}"
            );
            assert!(
                blue.contains(&uuid),
                "rollback answered from a new instance {uuid}: blue was not kept hot"
            );
            on_1 += 1;
        }
        if s.start > switched_to_3 {
            assert_eq!(version, "3");
            on_3 += 1;
        }
    }
    assert!(
        on_2 > 20 && on_1 > 20 && on_3 > 20,
        "each window needs traffic: {on_2} {on_1} {on_3}"
    );
    eprintln!(
        "zero-downtime: {} requests, 0 failed; {on_2} after the switch to 2, all v2; {on_1} after the rollback, \
         all v1 from the same instances (switch printed {:?} after the rollback began); {on_3} after the switch to 3, all v3",
        samples.len(),
        switched_to_1 - rollback_started
    );
}

/// Networks named exactly `name`.
async fn networks_named(docker: &bollard::Docker, name: &str) -> Vec<String> {
    let all = docker.list_networks(None).await.unwrap();
    all.into_iter()
        .filter(|n| n.name.as_deref() == Some(name))
        .filter_map(|n| n.id)
        .collect()
}

#[test]
fn duplicate_app_networks_are_healed_not_fatal() {
    // The engine's duplicate-name check races: concurrent creates, as two
    // first deploys at once on a fresh host make, can leave two networks of
    // one name, and then every container start on it fails as "ambiguous".
    // This test races creates of a network of its own (CYAN_NETWORK), so
    // the other tests' `cyan` network is never made ambiguous.
    let name = format!("cyan-dup-{}", std::process::id());
    let rt = runtime();
    let docker = bollard::Docker::connect_with_local_defaults().unwrap();
    let made = rt.block_on(async {
        for _ in 0..20 {
            let create = || {
                docker.create_network(bollard::models::NetworkCreateRequest {
                    name: name.clone(),
                    driver: Some("bridge".into()),
                    ..Default::default()
                })
            };
            futures_util::future::join_all((0..6).map(|_| create())).await;
            if networks_named(&docker, &name).await.len() >= 2 {
                return true;
            }
        }
        false
    });
    if !made {
        eprintln!("note: the engine refused every duplicate {name}; the heal is not exercised");
    }
    let app = TestApp::new("dupnet", "");
    let out = app
        .command(&["deploy", "--version", "1"])
        .env("CYAN_NETWORK", &name)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(identity(&app.get("/").1).1, "1");
    let left = rt.block_on(networks_named(&docker, &name));
    assert_eq!(left.len(), 1, "the duplicates were removed");
    drop(app);
    rt.block_on(async {
        for id in left {
            let _ = docker.remove_network(&id).await;
        }
    });
}

#[test]
fn a_failing_green_never_touches_blue() {
    let app = TestApp::new("gate", "");
    app.deploy("1");
    let blue = app.containers();
    app.write_config("env:\n  FAIL_HEALTH: \"1\"\n");
    let out = app.cyan(&["deploy", "--version", "2"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(3), "{all}");
    assert_contains_all(
        &all,
        &[
            "health gate failed for",
            "(0/2 replicas healthy)",
            "GET /healthz -> 503",
            "unhealthy (FAIL_HEALTH=1)",
            "last log lines of",
            "listening on :8080",
        ],
    );
    assert_eq!(
        app.containers(),
        blue,
        "green must be removed and blue left as it was"
    );
    assert_eq!(identity(&app.get("/").1).1, "1");
}

/// An app that listens on loopback inside its container (Flask's and
/// Node's default) fails its gate at once, with the cause named, not at
/// the deadline (20 s here) with only "connection reset"; so does one on
/// another port.
#[test]
fn an_app_listening_where_nothing_reaches_it_fails_at_once_and_says_why() {
    let app = TestApp::new("bind", "");
    app.deploy("1");
    for (env, needle) in [
        (
            "BIND: \"127.0.0.1\"",
            "listens on 127.0.0.1:8080 inside its container: loopback",
        ),
        (
            "PORT: \"3000\"",
            "not on port 8080 that cyan.yaml's `port` names",
        ),
    ] {
        app.write_config(&format!("env:\n  {env}\n"));
        let started = Instant::now();
        let out = app.cyan(&["deploy", "--version", "2"]);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(3), "{all}");
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        assert!(all.contains("last log lines of"), "{all}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the gate took {:?}",
            started.elapsed()
        );
        assert_eq!(identity(&app.get("/").1).1, "1", "blue kept serving");
    }
}

#[test]
fn a_killed_deploy_converges_when_run_again() {
    let app = TestApp::new("crash", "");
    app.deploy("1");
    let rt = runtime();
    let _ctx = rt.enter();
    let load = Load::start(app.port, &format!("{}.localhost", app.name), 3, 1);
    // Kill with SIGKILL in the middle of each phase, then run the same deploy again.
    // As the launch begins, between a gate's first and second probe (no
    // step event marks it: its progress line does), as the switch begins.
    for (version, phase) in [
        ("2", Ok("launch")),
        ("3", Err("1/2 GET /healthz")),
        ("4", Ok("switch")),
    ] {
        let mut deploy = app.spawn(&["deploy", "--version", version]);
        let limit = Duration::from_secs(120);
        match phase {
            Ok(step) => deploy.wait_for_step(step, "began", limit),
            Err(line) => deploy.wait_for(line, limit),
        };
        deploy.kill9();
        let status = app.status_json();
        assert!(
            status["lock"].is_null(),
            "a killed holder's lock is free, and status says so: {status:#}"
        );
        // Killed with a candidate up: not "progressing", and says what to do.
        if phase.is_err() {
            assert!(!status["candidate"].is_null(), "{status:#}");
        }
        if !status["candidate"].is_null() && status["live"]["version"] != version {
            assert_eq!(status["phase"], "interrupted", "{status:#}");
            assert!(
                status["warnings"][0]
                    .as_str()
                    .is_some_and(|w| w.contains("cyan abort")),
                "{status:#}"
            );
        }
        app.deploy(version);
        let status = app.status_json();
        assert_eq!(status["live"]["version"], version, "{status:#}");
        assert_eq!(
            status["live"]["containers"].as_array().unwrap().len(),
            2,
            "{status:#}"
        );
        assert_eq!(
            app.containers().len(),
            4,
            "exactly live + previous remain: {status:#}"
        );
        assert!(status["lock"].is_null(), "the lock is released: {status:#}");
        assert_eq!(identity(&app.get("/").1).1, version);
    }
    let samples = rt.block_on(load.finish());
    assert_none_failed(&samples, "across the killed deploys");
}

#[test]
fn a_deploy_killed_while_verifying_is_interrupted_not_verifying() {
    let app = TestApp::new("crashverify", "");
    app.deploy("1");
    app.write_config("verify: { duration: 8s, on_inconclusive: pass }\n");
    let mut deploy = app.spawn(&["deploy", "--version", "2"]);
    deploy.wait_for_step("verify", "began", Duration::from_secs(120));
    deploy.kill9();
    // Nobody watches the window any more: status must not say it is
    // being verified, and says how to go on.
    let status = app.status_json();
    assert!(status["lock"].is_null(), "{status:#}");
    assert_eq!(status["live"]["version"], "2", "{status:#}");
    assert_eq!(status["phase"], "interrupted", "{status:#}");
    assert!(
        status["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("the deploy of 2 stopped while verifying it")
                && w.contains("`cyan deploy --version 2` watches the rest of it")),
        "{status:#}"
    );
    // Run again within the window: it watches the rest, and is done.
    app.deploy("2");
    assert_eq!(app.status_json()["phase"], "live");

    // A release whose every answer fails, killed while verifying and run
    // again after its window is over: judged then, not taken for a pass.
    app.write_config("verify: { duration: 2s, on_inconclusive: pass }\nenv:\n  FAIL_RATE: \"1\"\n");
    let mut deploy = app.spawn(&["deploy", "--version", "3"]);
    deploy.wait_for_step("verify", "began", Duration::from_secs(120));
    // Killed before the requests: a live deploy's verify loop would judge
    // the first 500 at once, and switch back before the kill.
    deploy.kill9();
    for _ in 0..5 {
        assert_eq!(app.get("/").0, 500);
    }
    std::thread::sleep(Duration::from_secs(3));
    let out = app.cyan(&["deploy", "--version", "3"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(6), "{all}");
    assert!(all.contains("every one of the"), "{all}");
    assert_eq!(identity(&app.get("/").1).1, "2", "traffic is back on 2");
}

#[test]
fn a_concurrent_deploy_is_refused_and_lock_wait_queues() {
    let app = TestApp::new("lock", "");
    let mut first = app.spawn(&["deploy", "--version", "1"]);
    first.wait_for_step("build", "began", Duration::from_secs(60));
    let out = app.cyan(&["deploy", "--version", "1"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(4), "{all}");
    assert!(
        all.contains("lock is held by deploy 1 by") && all.contains("pid"),
        "{all}"
    );

    let queued = app.spawn(&["deploy", "--version", "1", "--lock-wait", "2m"]);
    let (code, _, log) = first.finish();
    assert_eq!(code, 0, "{log}");
    let (code, stdout, log) = queued.finish();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("waiting for the deploy lock"), "{log}");
    assert!(stdout.contains("is live"), "{stdout}");
}

#[test]
fn approval_holds_green_until_promote_or_abort() {
    let app = TestApp::new("approve", "require_approval: true\n");
    let out = app.deploy("1");
    assert!(out.contains("cyan promote"), "{out}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", app.port)).is_err(),
        "nothing is routed before approval: the route (and its listen address) comes with the switch"
    );
    assert_eq!(app.status_json()["phase"], "awaiting-approval");
    app.cyan_ok(&["promote"]);
    assert_eq!(identity(&app.get("/").1).1, "1");
    // The URL cyan gives opens as it is: no name to resolve, the Host it
    // implies routes.
    let status = app.status_json();
    let url = status["url"].as_str().unwrap();
    let authority = url
        .strip_prefix("http://")
        .expect("a plain route's URL is http");
    let (code, body) = util::http_get(authority, authority, "/");
    assert_eq!((code, identity(&body).1.as_str()), (200, "1"), "{url}");

    app.deploy("2");
    let status = app.status_json();
    assert_eq!(status["candidate"]["version"], "2", "{status:#}");
    assert_eq!(
        identity(&app.get("/").1).1,
        "1",
        "live is untouched while 2 waits"
    );
    app.cyan_ok(&["abort"]);
    assert!(app.status_json()["candidate"].is_null());
    assert_eq!(app.containers().len(), 2);

    app.deploy("2");
    app.cyan_ok(&["promote"]);
    assert_eq!(identity(&app.get("/").1).1, "2");
    let out = app.cyan(&["promote"]);
    assert_eq!(
        out.status.code(),
        Some(9),
        "nothing left to promote: {}",
        text(&out)
    );
}

#[test]
fn failed_verification_switches_back_on_its_own() {
    let verify = "verify:\n  duration: 5s\n  max_5xx_ratio: 0.05\n  min_requests: 10\n";
    // Version 1 has no verify: nothing sends it traffic, so its verdict
    // would be inconclusive.
    let app = TestApp::new("verify", "");
    app.deploy("1");
    app.write_config(&format!("{verify}env:\n  FAIL_RATE: \"2\"\n"));
    let rt = runtime();
    let _ctx = rt.enter();
    let load = Load::start(app.port, &format!("{}.localhost", app.name), 2, 0);
    let out = app.cyan(&["deploy", "--version", "2"]);
    let samples = rt.block_on(load.finish());
    let all = text(&out);
    assert_eq!(out.status.code(), Some(6), "{all}");
    assert!(
        all.contains("verification of 2 failed") && all.contains("traffic is back on blue"),
        "{all}"
    );
    assert_eq!(identity(&app.get("/").1).1, "1");
    let history: serde_json::Value =
        serde_json::from_str(&app.cyan_ok(&["history", "-o", "json"])).unwrap();
    assert_eq!(history[0]["event"], "verify-failed", "{history:#}");
    assert_eq!(history[0]["verify"]["verdict"], "failed", "{history:#}");
    assert!(history[0]["verify"]["status_5xx"].as_u64() > Some(0));
    // Only the bad release answered with errors; they stop after the switch back.
    let injected = failures(&samples)
        .iter()
        .filter(|f| f.contains("injected failure"))
        .count();
    assert!(
        injected > 0 && injected == failures(&samples).len(),
        "{:?}",
        failures(&samples)
    );

    // A good release under traffic passes, and -o json gives the figures.
    app.write_config(verify);
    let load = Load::start(app.port, &format!("{}.localhost", app.name), 2, 0);
    let out = app.cyan(&["deploy", "--version", "3", "-o", "json"]);
    rt.block_on(load.finish());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["verify"]["verdict"], "passed", "{result:#}");
    assert_eq!(result["verify"]["status_5xx"], 0, "{result:#}");
    assert!(
        result["verify"]["requests"].as_u64() >= Some(10),
        "{result:#}"
    );
}

/// Too few requests to judge is inconclusive, not "verified": by default
/// cyan waits for enough until a deadline, then switches back; `pass` keeps
/// the release and says so in the history. A window in which every request
/// failed fails, however few they were.
#[test]
fn an_inconclusive_verification_is_not_a_pass() {
    let verify = "verify:\n  duration: 1s\n  min_requests: 20\n  deadline: 3s\n";
    let app = TestApp::new("inconclusive", "");
    app.deploy("1");
    app.write_config(verify);

    let started = Instant::now();
    let out = app.cyan(&["deploy", "--version", "2"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(6), "{all}");
    assert!(all.contains("inconclusive so far"), "{all}");
    assert!(
        all.contains("inconclusive by the verify deadline")
            && all.contains("traffic is back on blue"),
        "{all}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "it waited to the deadline"
    );
    assert_eq!(identity(&app.get("/").1).1, "1");

    app.write_config(&format!("{verify}  on_inconclusive: pass\n"));
    let out = app.cyan(&["deploy", "--version", "3", "-o", "json"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        all.contains("verification inconclusive") && !all.contains("verified:"),
        "{all}"
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["verify"]["verdict"], "inconclusive", "{result:#}");
    assert_eq!(result["verify"]["min_requests"], 20, "{result:#}");
    assert!(
        result["verify"]["requests"].as_u64().unwrap() < 20,
        "{result:#}"
    );
    assert_eq!(identity(&app.get("/").1).1, "3");
    let history: serde_json::Value =
        serde_json::from_str(&app.cyan_ok(&["history", "-o", "json"])).unwrap();
    let verdicts: Vec<(&str, &str)> = history
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["event"].as_str()?, e["verify"]["verdict"].as_str()?)))
        .collect();
    assert_eq!(
        verdicts,
        [
            ("verify-inconclusive", "inconclusive"),
            ("verify-failed", "inconclusive")
        ],
        "newest first, with the figures: {history:#}"
    );

    // Every request fails, ten of them, below min_requests: a failure.
    app.write_config(&format!(
        "{verify}  on_inconclusive: pass\nenv:\n  FAIL_RATE: \"1\"\n"
    ));
    let mut deploy = app.spawn(&["deploy", "--version", "4"]);
    deploy.wait_for_step("switch", "done", Duration::from_secs(60));
    for _ in 0..10 {
        app.get("/");
    }
    let (code, _, log) = deploy.finish();
    assert_eq!(code, 6, "{log}");
    assert!(log.contains("every one of the"), "{log}");
    assert_eq!(identity(&app.get("/").1).1, "3");
}

#[test]
fn bad_config_and_unreachable_docker_stop_before_anything_changes() {
    let app = TestApp::new("cfg", "helth: {}\n");
    let out = app.cyan(&["deploy", "--version", "1"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    let file = app.config.display().to_string();
    assert!(
        all.contains(&format!("{file}:")) && all.contains(": helth: unknown field `helth`"),
        "{all}"
    );

    app.write_config("");
    let out = app
        .command(&["deploy", "--version", "1"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(5), "{all}");
    assert!(all.contains("cannot reach the Docker engine"), "{all}");
    assert!(app.containers().is_empty());

    let out = app.cyan(&["deploy", "--version", "latest"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn push_records_the_registry_digest_for_both_tags() {
    let registry = "127.0.0.1:5000";
    if std::net::TcpStream::connect(registry).is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run a registry on {registry} (.ci/run starts Debian's docker-registry)"
        );
        eprintln!("SKIPPED push test: no registry on {registry}; .ci/run starts one");
        return;
    }
    let image = format!("{registry}/cyan-test-push-{}", std::process::id());
    let app = TestApp::with_image("push", "", Some(image.clone()));
    app.deploy("1");
    let status = app.status_json();
    let digest = status["live"]["digest"].as_str().unwrap().to_string();
    assert!(
        digest.starts_with(&format!("{image}@sha256:")),
        "{status:#}"
    );
    let repo = image.trim_start_matches(&format!("{registry}/"));
    for tag in ["1", "latest"] {
        let served = manifest_digest(registry, repo, tag);
        assert_eq!(
            format!("{image}@{served}"),
            digest,
            "tag {tag} in the registry is another image"
        );
    }

    // Another environment deploying the same version pulls that image
    // instead of building its own: the same digest everywhere.
    let untag = std::process::Command::new("docker")
        .args(["rmi", &format!("{image}:1")])
        .output()
        .unwrap();
    assert!(untag.status.success(), "{}", text(&untag));
    let prod = TestApp::with_image("push-prod", "", Some(image.clone()));
    let out = prod.cyan(&["deploy", "--version", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("pulled, not rebuilt"), "{log}");
    assert_eq!(prod.status_json()["live"]["digest"], digest.as_str());
}

/// Asks the registry which manifest digest a tag names.
fn manifest_digest(registry: &str, repo: &str, tag: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(registry).unwrap();
    write!(
        s,
        "HEAD /v2/{repo}/manifests/{tag} HTTP/1.1\r\nHost: {registry}\r\nAccept: application/vnd.docker.distribution.manifest.v2+json\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("docker-content-digest:")
                .then(|| l[22..].trim().to_string())
        })
        .unwrap_or_else(|| panic!("no digest for {repo}:{tag}: {resp}"))
}

/// The session a process belongs to, from `/proc/PID/stat`.
fn session_of(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // "pid (comm) state ppid pgrp session ...": comm may hold spaces.
    let after_comm = &stat[stat.rfind(')').unwrap() + 1..];
    after_comm
        .split_whitespace()
        .nth(3)
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn the_proxy_a_deploy_starts_has_a_session_of_its_own() {
    let app = TestApp::new("session", "");
    app.deploy("1");
    let admin = cyan::proxy::client::AdminClient::new(&cyan::proxy::Home {
        dir: app.home.clone(),
    });
    let pid = runtime().block_on(admin.health()).unwrap().pid;
    assert_eq!(
        session_of(pid),
        pid,
        "the proxy leads its own session: no terminal's hang-up reaches it, and \
         it does not share the CPU share of the session that ran the deploy"
    );
    assert_ne!(session_of(std::process::id()), pid);
    assert_eq!(identity(&app.get("/").1).1, "1", "and it serves");
}

#[test]
fn maintenance_mode_from_the_cli() {
    let app = TestApp::new("maint", "");
    app.deploy("1");
    app.cyan_ok(&[
        "maintenance",
        "on",
        "--retry-after",
        "30s",
        "--message",
        "upgrading the db",
    ]);
    let (status, body) = app.get("/");
    assert_eq!(status, 503);
    assert!(body.starts_with("upgrading the db"), "{body}");
    let containers = app.containers();
    app.cyan_ok(&["maintenance", "off"]);
    let (status, body) = app.get("/");
    assert_eq!(status, 200);
    assert_eq!(identity(&body).1, "1");
    assert_eq!(
        app.containers(),
        containers,
        "maintenance touches no container"
    );
}

/// Removes the proxy container when the test ends, however it ends.
struct ProxyContainer(String);

impl Drop for ProxyContainer {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.0])
            .output();
    }
}

#[test]
fn the_proxy_runs_as_a_container_and_survives_a_crash() {
    let static_cyan = util::repo_root().join("target/x86_64-unknown-linux-gnu/debug/cyan");
    assert!(
        static_cyan.exists(),
        "{} is missing: run scripts/build-static first (the README's test command does)",
        static_cyan.display()
    );
    let app = TestApp::new("boot", "");
    let boot_with = |run_flags: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cyan"))
            .args(["proxy", "boot", "-o", "json", "--binary"])
            .arg(&static_cyan)
            .arg("--")
            .args(run_flags)
            .env("CYAN_HOME", &app.home)
            .output()
            .unwrap()
    };
    // A flag the proxy would refuse is refused before any container.
    let bad = boot_with(&["--header-timeout", "soon"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(
        text(&bad).contains("the flags for the proxy in the container"),
        "{}",
        text(&bad)
    );
    let boot = || {
        let out = boot_with(&["--header-timeout", "7s"]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let booted = boot();
    let name = booted["container"].as_str().unwrap().to_string();
    let _cleanup = ProxyContainer(name.clone());
    assert_eq!(booted["action"], "started", "{booted}");
    let inspect = |format: &str| {
        let out = std::process::Command::new("docker")
            .args(["inspect", "-f", format, &name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(
        inspect("{{.HostConfig.RestartPolicy.Name}}"),
        "unless-stopped"
    );
    assert_eq!(inspect("{{.HostConfig.NetworkMode}}"), "host");
    let cmd = inspect("{{json .Config.Cmd}}");
    assert!(cmd.contains(r#""--header-timeout","7s""#), "{cmd}");
    if std::path::Path::new("/etc/ssl/certs").is_dir() {
        let binds = inspect("{{json .HostConfig.Binds}}");
        assert!(
            binds.contains("/etc/ssl/certs:/etc/ssl/certs:ro"),
            "{binds}"
        );
    }

    app.deploy("1");
    app.deploy("2");
    assert_eq!(identity(&app.get("/").1).1, "2");

    // A crash (SIGKILL of the proxy process): Docker restarts it, and the
    // routes come back from the state in the mounted home.
    let pid = inspect("{{.State.Pid}}");
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    util::wait::until(
        "the proxy container to come back",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let out = app.cyan(&["status", "-o", "json"]);
            (out.status.success() && inspect("{{.State.Pid}}") != pid && app.get("/").0 == 200)
                .then_some(())
        },
        String::new,
    );
    assert_eq!(identity(&app.get("/").1).1, "2");
    app.cyan_ok(&["rollback"]);
    assert_eq!(identity(&app.get("/").1).1, "1");

    // Booting again with the same binary leaves it alone.
    assert_eq!(boot()["action"], "running");
}
