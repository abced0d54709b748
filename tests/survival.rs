//! Routing that survives the real world: a replica's published port moves
//! when its container restarts (a crash its restart policy restarts,
//! `docker restart`, a reboot, a daemon restart), and a freed port can be
//! taken by another app's container. These tests do each of those to real
//! containers under real load, through the real `cyan` binary and proxy,
//! and check that every answer comes from the app's own containers, that
//! the proxy's upstreams follow the containers' ports, and how many
//! requests fail, and when.
//!
//! What the machine's engine must never go through (a restart) is done to
//! a second `dockerd` the tests start on their own socket and folders
//! (`Dockerd`), one at a time. Every load is bounded; the whole file takes
//! under a minute on two cores.

mod util;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use util::load::{runtime, Load, Sample};
use util::{
    foreign_answers, hostname, identity, proxy::proxy_ctl, short_id, short_ids, succeeded, text,
    wait, TestApp,
};

/// How soon after its replicas pass /healthz an app must answer 200 again.
const WITHIN: Duration = Duration::from_secs(5);

/// The port the demo listens on in its container.
const APP_PORT: &str = "8080/tcp";

/// How often a wait checks again.
const POLL: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------
// 1. A crash that the restart policy restarts

/// One replica crashes on a request the proxy sent it (the demo's
/// `CRASH_AFTER`), its restart policy starts it again on another port,
/// and the proxy follows it there.
///
/// Both replicas get the same `CRASH_AFTER`, so the test first sends one of
/// them all but 200 of its requests straight to its port: the load through
/// the proxy then makes that one crash about a second in, while the other
/// keeps serving with most of its budget left (the /healthz of the gate
/// does not count; only `/` does).
#[test]
fn a_crashed_replica_restarted_by_its_policy_is_followed_under_load() {
    const CRASH_AFTER: usize = 20_000;
    let app = TestApp::new(
        "crash",
        &format!("env:\n  CRASH_AFTER: \"{CRASH_AFTER}\"\n"),
    );
    cyan_ok(&app, None, &["deploy", "--version", "1"]);
    let ids = app.containers();
    assert_eq!(ids.len(), 2, "two replicas");
    let (doomed, steady) = (&ids[0], &ids[1]);
    let before = published(None, doomed).expect("the replica is published");
    let old_uuid = identity(&send_straight(before, CRASH_AFTER - 200)).0;

    let rt = runtime();
    let _ctx = rt.enter();
    let (keepalive, fresh) = (1, 1);
    let load = Load::start(app.port, &app.host(), keepalive, fresh);
    wait::until(
        "the crashed replica to be running again",
        Duration::from_secs(30),
        POLL,
        || {
            let s = inspect(None, doomed);
            (s.restarts >= 1 && s.running).then_some(())
        },
        String::new,
    );
    let after = wait_published(None, doomed);
    let healthy = wait_healthz(&[after]);
    std::thread::sleep(WITHIN + Duration::from_secs(1));
    let routed = routed(&app.home, &app.name);
    let samples = rt.block_on(load.finish());
    let log = proxy_log(&app.home);

    assert_ne!(
        before, after,
        "a restarted container is published on another port"
    );
    assert_eq!(
        inspect(None, steady).restarts,
        0,
        "only one replica was to crash"
    );
    assert_routed_at_their_ports(&routed, None, &ids, &log);
    let ours = short_ids(&ids);
    assert_answers_from(&samples, &ours, &log);
    // A request in flight on the dying process gets no byte of an answer;
    // the proxy sends a GET that got none to the other replica, once. So at
    // most the requests in flight when it died (one per load worker) can
    // fail, and only if their second try failed too.
    let failed: Vec<&Sample> = samples.iter().filter(|s| s.outcome.is_err()).collect();
    assert!(
        failed.len() <= keepalive + fresh,
        "{} requests failed around one crash (at most the {} in flight may): {:?}\nproxy log:\n{log}",
        failed.len(),
        keepalive + fresh,
        outcomes(&failed)
    );
    let late: Vec<&Sample> = failed
        .iter()
        .copied()
        .filter(|s| s.start > healthy)
        .collect();
    assert!(
        late.is_empty(),
        "requests failed after the restarted replica passed /healthz: {:?}\nproxy log:\n{log}",
        outcomes(&late)
    );
    let back = first_answer_from(&samples, short_id(doomed), &old_uuid);
    assert!(
        back.is_some_and(|t| t < healthy + WITHIN),
        "the restarted replica was not answering through the proxy within {WITHIN:?} of passing /healthz \
         (first answer {:?} after)\nproxy log:\n{log}",
        back.map(|t| t.saturating_duration_since(healthy))
    );
    eprintln!(
        "crash: {} requests, {} failed; the restarted replica moved {before} -> {after} and answered \
         through the proxy {} ms after passing /healthz (negative: before our own check saw it)",
        samples.len(),
        failed.len(),
        ms_since(healthy, back.unwrap())
    );
}

// ---------------------------------------------------------------------------
// 2. `docker restart` of every replica

#[test]
fn docker_restart_of_every_replica_is_followed_under_load() {
    let app = TestApp::new("restart", "");
    cyan_ok(&app, None, &["deploy", "--version", "1"]);
    let ids = app.containers();
    let before: Vec<SocketAddr> = ids.iter().map(|id| published(None, id).unwrap()).collect();
    let old_uuids: Vec<String> = (0..20).map(|_| identity(&app.get("/").1).0).collect();

    let rt = runtime();
    let _ctx = rt.enter();
    let load = Load::start(app.port, &app.host(), 2, 1);
    std::thread::sleep(Duration::from_millis(500));
    let restarting = Instant::now();
    docker(None, &command("restart", &ids));
    let after: Vec<SocketAddr> = ids.iter().map(|id| wait_published(None, id)).collect();
    let healthy = wait_healthz(&after);
    std::thread::sleep(WITHIN + Duration::from_secs(1));
    let routed = routed(&app.home, &app.name);
    let samples = rt.block_on(load.finish());
    let log = proxy_log(&app.home);

    for (b, a) in before.iter().zip(&after) {
        assert_ne!(b, a, "a restarted container is published on another port");
    }
    assert_routed_at_their_ports(&routed, None, &ids, &log);
    let ours = short_ids(&ids);
    assert_answers_from(&samples, &ours, &log);
    // While a replica restarts, the app may be down: then the proxy says so
    // (502, 503), and only then.
    let failed = assert_down_only_while(
        &samples,
        restarting,
        healthy,
        "the replicas restarted",
        &log,
    );
    for id in &ids {
        let back = samples.iter().find(|s| {
            s.outcome
                .as_ref()
                .is_ok_and(|b| b.starts_with(short_id(id)) && !old_uuids.contains(&identity(b).0))
        });
        assert!(
            back.is_some_and(|s| s.start < healthy + WITHIN),
            "restarted {} did not answer through the proxy within {WITHIN:?} of passing /healthz\nproxy log:\n{log}",
            short_id(id)
        );
    }
    let last_failure = failed.last().map(|s| ms_since(healthy, s.start));
    eprintln!(
        "docker restart: {} requests, {} failed (502/503), the last one starting {last_failure:?} ms after \
         both passed /healthz; ports {before:?} -> {after:?}",
        samples.len(),
        failed.len()
    );
}

// ---------------------------------------------------------------------------
// 3. A reboot, two apps on one proxy

/// A reboot, simulated on an engine of the test's own: the proxy stopped,
/// every container of two apps stopped, the engine restarted (so it hands
/// out ports from the start of its range again), the containers started
/// in an order that gives one app's old ports to the other, then the
/// proxy started, under load from that moment. Each app must answer from
/// its own containers only.
#[test]
fn after_a_reboot_each_app_answers_from_its_own_containers() {
    let _one_at_a_time = ENGINE_OF_OUR_OWN.lock().unwrap_or_else(|e| e.into_inner());
    let mut engine = Dockerd::start("reboot", 201);
    let a = TestApp::new("reboot-a", "");
    let b = TestApp::on_home("reboot-b", "", &a.home);
    cyan_ok(&a, Some(&engine), &["deploy", "--version", "1"]);
    cyan_ok(&b, Some(&engine), &["deploy", "--version", "1"]);
    let (a_ids, b_ids) = (engine.containers(&a.name), engine.containers(&b.name));
    assert_eq!(
        answered(&a),
        short_ids(&a_ids),
        "A answers from its own containers"
    );
    assert_eq!(
        answered(&b),
        short_ids(&b_ids),
        "B answers from its own containers"
    );
    let (a_before, b_before) = (engine.ports(&a_ids), engine.ports(&b_ids));

    let stopped = proxy_ctl("stop", &a.home).unwrap();
    assert!(stopped.status.success(), "{}", text(&stopped));
    engine.docker(&command("stop", &[&a_ids[..], &b_ids[..]].concat()));
    engine.restart();
    // B's first: the engine gives them the lowest free ports, A's before.
    for id in [&b_ids[0], &a_ids[0], &b_ids[1], &a_ids[1]] {
        engine.docker(&["start", id]);
    }
    let (a_after, b_after) = (engine.ports(&a_ids), engine.ports(&b_ids));
    let crossed: Vec<String> = (b_after.keys().filter(|p| a_before.contains_key(p)))
        .map(|p| {
            format!(
                "{p}: {} of A -> {} of B",
                short_id(&a_before[p]),
                short_id(&b_after[p])
            )
        })
        .chain(
            a_after
                .keys()
                .filter(|p| b_before.contains_key(p))
                .map(|p| {
                    format!(
                        "{p}: {} of B -> {} of A",
                        short_id(&b_before[p]),
                        short_id(&a_after[p])
                    )
                }),
        )
        .collect();
    assert!(
        !crossed.is_empty(),
        "no port went from one app to the other, so this run proves nothing: A {a_before:?} -> {a_after:?}, \
         B {b_before:?} -> {b_after:?}"
    );
    wait_healthz(
        &[
            a_after.keys().copied().collect::<Vec<_>>(),
            b_after.keys().copied().collect(),
        ]
        .concat(),
    );

    let rt = runtime();
    let _ctx = rt.enter();
    let (load_a, load_b) = (
        Load::start(a.port, &a.host(), 1, 1),
        Load::start(b.port, &b.host(), 1, 1),
    );
    // `cyan status` starts the proxy of this home, and returns once it answers.
    cyan_ok(&a, Some(&engine), &["status"]);
    let ready = Instant::now();
    std::thread::sleep(WITHIN + Duration::from_secs(1));
    let (routed_a, routed_b) = (routed(&a.home, &a.name), routed(&a.home, &b.name));
    let (samples_a, samples_b) = (rt.block_on(load_a.finish()), rt.block_on(load_b.finish()));
    let log = proxy_log(&a.home);

    assert_routed_at_their_ports(&routed_a, Some(&engine), &a_ids, &log);
    assert_routed_at_their_ports(&routed_b, Some(&engine), &b_ids, &log);
    for (samples, ids, app) in [(&samples_a, &a_ids, "A"), (&samples_b, &b_ids, "B")] {
        assert_answers_from(samples, &short_ids(ids), &log);
        // Until the proxy listens, its port refuses; after, it answers.
        let wrong: Vec<&Sample> = samples
            .iter()
            .filter(|s| match &s.outcome {
                Ok(_) => false,
                Err(e) if e.contains("ConnectError") => s.start > ready,
                Err(_) => !is_proxy_unavailable(s),
            })
            .collect();
        assert!(
            wrong.is_empty(),
            "{app} got failures other than a refused connection before the proxy listened or a 502/503: {:?}\nproxy log:\n{log}",
            outcomes(&wrong)
        );
        assert_all_ok_after(samples, ready + WITHIN, &log);
        let served = samples
            .iter()
            .filter(|s| s.start > ready && s.outcome.is_ok())
            .count();
        assert!(
            served > 100,
            "{app}: too little load after the proxy started to prove anything: {served}"
        );
    }
    let failed = |s: &[Sample]| {
        s.iter()
            .filter(|s| s.start > ready && s.outcome.is_err())
            .count()
    };
    eprintln!(
        "reboot: ports crossed between the apps ({}); A {} requests, B {}, each answered by its own \
         containers only; after the proxy answered its first `cyan status`, {} of A's and {} of B's failed",
        crossed.join("; "),
        samples_a.len(),
        samples_b.len(),
        failed(&samples_a),
        failed(&samples_b)
    );
}

// ---------------------------------------------------------------------------
// 4. The engine restarts under a running proxy

/// The engine (one of the test's own) restarts while the proxy runs and
/// serves: its containers come back by their restart policy, on other
/// ports, since a program of the test's own takes the old ones while the
/// engine is down and answers there as another app would. The proxy must
/// answer 502/503 while the app is down, never send a request to the old
/// ports, and serve from the containers' new ports.
#[test]
fn the_proxy_follows_an_engine_restart() {
    let _one_at_a_time = ENGINE_OF_OUR_OWN.lock().unwrap_or_else(|e| e.into_inner());
    let mut engine = Dockerd::start("restart", 202);
    let app = TestApp::new("engine", "");
    cyan_ok(&app, Some(&engine), &["deploy", "--version", "1"]);
    let ids = engine.containers(&app.name);
    let before: Vec<SocketAddr> = ids
        .iter()
        .map(|id| published(Some(&engine), id).unwrap())
        .collect();
    let old_uuids: HashSet<String> = (0..20).map(|_| identity(&app.get("/").1).0).collect();
    assert_eq!(old_uuids.len(), 2, "both replicas serve");

    let rt = runtime();
    let _ctx = rt.enter();
    let load = Load::start(app.port, &app.host(), 2, 1);
    std::thread::sleep(Duration::from_millis(500));
    let down = Instant::now();
    engine.stop();
    let squatters: Vec<Squatter> = before.iter().filter_map(|a| Squatter::on(*a)).collect();
    engine.launch();
    let after: Vec<SocketAddr> = ids
        .iter()
        .map(|id| wait_published(Some(&engine), id))
        .collect();
    let healthy = wait_healthz(&after);
    std::thread::sleep(WITHIN + Duration::from_secs(1));
    let routed = routed(&app.home, &app.name);
    let samples = rt.block_on(load.finish());
    let squatted: usize = squatters.iter().map(Squatter::hits).sum();
    let log = proxy_log(&app.home);

    assert_eq!(
        squatters.len(),
        before.len(),
        "could not take every old port while the engine was down"
    );
    for a in &after {
        assert!(
            !before.contains(a),
            "{a} was taken by the test: the engine cannot have it"
        );
    }
    assert_eq!(
        squatted, 0,
        "the proxy connected to an old port after its container stopped\nproxy log:\n{log}"
    );
    assert_routed_at_their_ports(&routed, Some(&engine), &ids, &log);
    let ours = short_ids(&ids);
    assert_answers_from(&samples, &ours, &log);
    let failed = assert_down_only_while(&samples, down, healthy, "the engine restarted", &log);
    let back = samples
        .iter()
        .filter(|s| {
            s.outcome
                .as_ref()
                .is_ok_and(|b| !old_uuids.contains(&identity(b).0))
        })
        .map(|s| s.start)
        .next();
    assert!(
        back.is_some_and(|t| t < healthy + WITHIN),
        "the restarted replicas did not answer through the proxy within {WITHIN:?} of passing /healthz\nproxy log:\n{log}"
    );
    let last_failure = failed.last().map(|s| ms_since(healthy, s.start));
    eprintln!(
        "engine restart: {} requests, {} failed (502/503; the engine was down {:?} and the replicas \
         passed /healthz {:?} after it was stopped), the last failure starting {last_failure:?} ms after \
         that; ports {before:?} -> {after:?}; the old ports got {squatted} connections",
        samples.len(),
        failed.len(),
        engine.down_for,
        healthy - down
    );
}

// ---------------------------------------------------------------------------
// 5. A deploy of the live version repairs drift

/// A replica stopped by hand (its restart policy leaves it stopped, and the
/// proxy can only take it out of rotation): `cyan status` says so, and a
/// deploy of the live version starts it, gates it and routes it again.
#[test]
fn a_deploy_of_the_live_version_repairs_drift() {
    let app = TestApp::new("repair", "");
    cyan_ok(&app, None, &["deploy", "--version", "1"]);
    let ids = app.containers();
    let stopped = &ids[1];
    let name = inspect(None, stopped).name;

    let rt = runtime();
    let _ctx = rt.enter();
    let (keepalive, fresh) = (1, 1);
    let load = Load::start(app.port, &app.host(), keepalive, fresh);
    std::thread::sleep(Duration::from_millis(300));
    docker(None, &["stop", stopped]);
    let status = app.status_json();
    let repairing = Instant::now();
    let out = cyan(&app, None, &["deploy", "--version", "1"]);
    std::thread::sleep(Duration::from_millis(300));
    let samples = rt.block_on(load.finish());
    let log = proxy_log(&app.home);
    let all = text(&out);

    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        all.lines()
            .any(|l| l.contains("repairing:") && l.contains(&name) && l.contains("exited")),
        "no `repairing:` line names the stopped {name}:\n{all}"
    );
    assert!(all.contains("repaired:"), "{all}");
    assert!(
        inspect(None, stopped).running,
        "{name} was not started again"
    );
    assert_eq!(
        app.containers(),
        ids,
        "the repair made or removed containers"
    );
    let routed = routed(&app.home, &app.name);
    assert_routed_at_their_ports(&routed, None, &ids, &log);
    // The repair gated the replica: it must take its share within WITHIN.
    let deadline = Instant::now() + WITHIN;
    let mut seen = answered(&app);
    while seen != short_ids(&ids) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        seen = answered(&app);
    }
    assert_eq!(
        seen,
        short_ids(&ids),
        "both replicas do not serve {WITHIN:?} after the repair\nproxy log:\n{}",
        proxy_log(&app.home)
    );
    // The stop drops what is in flight on the replica (one per load worker
    // at most; a GET gets a second try elsewhere); the repair drops nothing.
    let failed: Vec<&Sample> = samples.iter().filter(|s| s.outcome.is_err()).collect();
    assert!(
        failed.len() <= keepalive + fresh && failed.iter().all(|s| s.start < repairing),
        "{:?}\nproxy log:\n{log}",
        outcomes(&failed)
    );
    let after = app.status_json();
    assert!(
        drift_named(&after).is_empty(),
        "`cyan status` reports drift after the repair: {after:#}"
    );
    let reported = drift_named(&status);
    assert!(
        reported.iter().any(|l| l.contains(&name)),
        "`cyan status` did not report the stopped live replica {name} as drift \
         : {status:#}"
    );
}

// ---------------------------------------------------------------------------
// 6. Pause, unpause and kill: events the engine's list lags behind

/// After `docker pause` the replicas leave rotation (a quick 503, not a
/// request hung on a frozen process), `docker unpause` brings them back,
/// and after `docker kill` (which no restart policy undoes) their freed
/// ports are never used, even when something else takes them.
#[test]
fn pause_unpause_and_kill_are_followed() {
    let app = TestApp::new("pause", "");
    cyan_ok(&app, None, &["deploy", "--version", "1"]);
    let ids = app.containers();
    let (home, name) = (app.home.clone(), app.name.clone());
    let all_down = |why: &'static str| {
        move || {
            let routed = routed(&home, &name);
            routed
                .values()
                .all(|(_, down)| down.as_deref() == Some(why))
                .then_some(())
        }
    };

    docker(None, &command("pause", &ids));
    wait::until(
        "both replicas out of rotation as paused",
        WITHIN,
        POLL,
        all_down("paused"),
        String::new,
    );
    let asked = Instant::now();
    let (code, body) = app.get("/");
    assert_eq!(code, 503, "{body}");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "a request waited {:?} on paused replicas",
        asked.elapsed()
    );

    docker(None, &command("unpause", &ids));
    wait::until(
        "both replicas back in rotation",
        WITHIN,
        POLL,
        || (answered(&app) == short_ids(&ids)).then_some(()),
        String::new,
    );
    let log = proxy_log(&app.home);
    assert_routed_at_their_ports(&routed(&app.home, &app.name), None, &ids, &log);

    let ports: Vec<SocketAddr> = ids.iter().map(|id| published(None, id).unwrap()).collect();
    docker(None, &command("kill", &ids));
    wait::until(
        "both replicas out of rotation after the kill",
        WITHIN,
        POLL,
        || {
            let routed = routed(&app.home, &app.name);
            routed
                .values()
                .all(|(_, down)| down.is_some())
                .then_some(())
        },
        String::new,
    );
    let squatters: Vec<Squatter> = ports.iter().filter_map(|a| Squatter::on(*a)).collect();
    for _ in 0..20 {
        let (code, body) = app.get("/");
        assert!(
            !body.contains("squatter"),
            "another server answered: {body}"
        );
        assert!(code == 503 || code == 200, "{code} {body}");
    }
    let hits: usize = squatters.iter().map(Squatter::hits).sum();
    assert_eq!(hits, 0, "the proxy used a killed replica's freed port");
}

/// The `drift` lines of `cyan status -o json`.
fn drift_named(status: &serde_json::Value) -> Vec<String> {
    let lines = status["drift"].as_array().expect("status has `drift`");
    lines
        .iter()
        .filter_map(|l| l.as_str().map(String::from))
        .collect()
}

// ---------------------------------------------------------------------------
// Checks on the load

/// Which containers (short ids) answer 20 GET / through the proxy.
fn answered(app: &TestApp) -> HashSet<String> {
    (0..20)
        .map(|_| hostname(&app.get("/").1).to_string())
        .collect()
}

/// Panics unless every 200 came from one of `ours` (short ids).
fn assert_answers_from(samples: &[Sample], ours: &HashSet<String>, log: &str) {
    let foreign = foreign_answers(samples, ours);
    assert!(
        foreign.is_empty(),
        "{} answers came from something other than this app's containers {ours:?}: {:?}\nproxy log:\n{log}",
        foreign.len(),
        &foreign[..foreign.len().min(5)]
    );
}

/// Panics unless every request that started after `t` got a 200.
fn assert_all_ok_after(samples: &[Sample], t: Instant, log: &str) {
    let late: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.start > t && s.outcome.is_err())
        .collect();
    assert!(
        late.is_empty(),
        "{} requests failed later than {WITHIN:?} after the replicas passed /healthz: {:?}\nproxy log:\n{log}",
        late.len(),
        outcomes(&late)
    );
    let after = samples.iter().filter(|s| s.start > t).count();
    assert!(
        after > 50,
        "too little load at the end to prove anything: {after}"
    );
}

/// Every failure is the proxy saying the app is down (502, 503), or an
/// answer cut short by a killed container, after `from` (when it went
/// down); and from `WITHIN` after it was `healthy` again, every request
/// succeeds. Returns the failures.
fn assert_down_only_while<'s>(
    samples: &'s [Sample],
    from: Instant,
    healthy: Instant,
    what: &str,
    log: &str,
) -> Vec<&'s Sample> {
    let failed: Vec<&Sample> = samples.iter().filter(|s| s.outcome.is_err()).collect();
    let wrong: Vec<&Sample> = failed
        .iter()
        .copied()
        .filter(|s| !(is_proxy_unavailable(s) || is_cut_short(s)) || s.end < from)
        .collect();
    assert!(
        wrong.is_empty(),
        "failures other than 502/503 while {what}: {:?}\nproxy log:\n{log}",
        outcomes(&wrong)
    );
    assert_all_ok_after(samples, healthy + WITHIN, log);
    failed
}

/// An answer the app began and could not finish: its container was killed
/// with the response under way (the proxy had sent the head; it can only
/// end the connection). The app going down, like a 502.
fn is_cut_short(s: &Sample) -> bool {
    s.outcome
        .as_ref()
        .is_err_and(|e| e.starts_with("body error"))
}

/// The proxy's own answer for an app it cannot reach now.
fn is_proxy_unavailable(s: &Sample) -> bool {
    s.outcome
        .as_ref()
        .is_err_and(|e| e.starts_with("502 ") || e.starts_with("503 "))
}

/// When the first answer from container `short_id` not given by the
/// process `old_uuid` started.
fn first_answer_from(samples: &[Sample], short_id: &str, old_uuid: &str) -> Option<Instant> {
    samples
        .iter()
        .find(|s| {
            s.outcome
                .as_ref()
                .is_ok_and(|b| b.starts_with(short_id) && identity(b).0 != old_uuid)
        })
        .map(|s| s.start)
}

/// Milliseconds from `from` to `to`, negative when `to` came first.
fn ms_since(from: Instant, to: Instant) -> i128 {
    match to.checked_duration_since(from) {
        Some(d) => d.as_millis() as i128,
        None => -((from - to).as_millis() as i128),
    }
}

/// The first few failures.
fn outcomes(samples: &[&Sample]) -> Vec<String> {
    samples
        .iter()
        .take(5)
        .map(|s| format!("{:?}", s.outcome))
        .collect()
}

// ---------------------------------------------------------------------------
// The proxy, the engine and the containers

/// Runs cyan for `app` on `engine` (the machine's when `None`); a proxy it
/// starts logs at info to its home's proxy.log, and follows that engine.
fn cyan(app: &TestApp, engine: Option<&Dockerd>, args: &[&str]) -> Output {
    let mut cmd = app.command(args);
    cmd.env("RUST_LOG", "cyan=info");
    if let Some(e) = engine {
        cmd.env("DOCKER_HOST", e.host());
    }
    cmd.output().unwrap()
}

fn cyan_ok(app: &TestApp, engine: Option<&Dockerd>, args: &[&str]) -> String {
    succeeded(args, &cyan(app, engine, args))
}

/// The proxy's log (home/proxy.log), for failure messages.
fn proxy_log(home: &Path) -> String {
    std::fs::read_to_string(home.join("proxy.log")).unwrap_or_default()
}

/// The upstreams of `app`'s live color, from the proxy's state files
/// (snapshot and journal): container id -> (address, why it is out of
/// rotation).
fn routed(home: &Path, app: &str) -> BTreeMap<String, (SocketAddr, Option<String>)> {
    let state = cyan::proxy::journal::read(&home.join("proxy.json")).unwrap();
    let state = serde_json::to_value(state).unwrap();
    let route = &state["routes"][format!("{app}-production")];
    let live = route["live"].as_str().expect("a live color");
    route["colors"][live]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["container"]
                    .as_str()
                    .expect("the upstream names its container")
                    .to_string(),
                (
                    u["addr"].as_str().unwrap().parse().unwrap(),
                    u["down"].as_str().map(String::from),
                ),
            )
        })
        .collect()
}

/// Panics unless the proxy routes to exactly `ids`, each in rotation at the
/// port it is published on now.
fn assert_routed_at_their_ports(
    routed: &BTreeMap<String, (SocketAddr, Option<String>)>,
    engine: Option<&Dockerd>,
    ids: &[String],
    log: &str,
) {
    let now: BTreeMap<String, (SocketAddr, Option<String>)> = ids
        .iter()
        .map(|id| (id.clone(), (published(engine, id).unwrap(), None)))
        .collect();
    assert_eq!(
        routed, &now,
        "the proxy's upstreams are not the containers' ports\nproxy log:\n{log}"
    );
}

/// `verb ids...`, as arguments.
fn command<'a>(verb: &'a str, ids: &'a [String]) -> Vec<&'a str> {
    std::iter::once(verb)
        .chain(ids.iter().map(String::as_str))
        .collect()
}

/// `docker args` on `engine` (the machine's when `None`); its stdout.
fn docker(engine: Option<&str>, args: &[&str]) -> String {
    let mut cmd = Command::new("docker");
    if let Some(h) = engine {
        cmd.args(["-H", h]);
    }
    let out = cmd.args(args).output().unwrap();
    assert!(out.status.success(), "docker {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The container's port on 127.0.0.1, if it has one now.
fn published(engine: Option<&Dockerd>, id: &str) -> Option<SocketAddr> {
    let mut cmd = Command::new("docker");
    if let Some(e) = engine {
        cmd.args(["-H", &e.host()]);
    }
    let out = cmd.args(["port", id, APP_PORT]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().parse().ok())
}

/// Waits (30 s at most) until the container is running and published.
fn wait_published(engine: Option<&Dockerd>, id: &str) -> SocketAddr {
    wait::until(
        "the container to run and be published",
        Duration::from_secs(30),
        POLL,
        || {
            inspect(engine, id)
                .running
                .then(|| published(engine, id))
                .flatten()
        },
        String::new,
    )
}

struct State {
    running: bool,
    restarts: u32,
    name: String,
}

fn inspect(engine: Option<&Dockerd>, id: &str) -> State {
    let host = engine.map(Dockerd::host);
    let out = docker(
        host.as_deref(),
        &[
            "inspect",
            "-f",
            "{{.State.Running}} {{.RestartCount}} {{.Name}}",
            id,
        ],
    );
    let mut w = out.split_whitespace();
    State {
        running: w.next() == Some("true"),
        restarts: w.next().and_then(|n| n.parse().ok()).unwrap_or(0),
        name: w.next().unwrap_or("").trim_start_matches('/').to_string(),
    }
}

/// Waits (30 s at most) until GET /healthz straight to each of `addrs`
/// answers 200; returns when the last did.
fn wait_healthz(addrs: &[SocketAddr]) -> Instant {
    for addr in addrs {
        wait::until(
            &format!("{addr}/healthz to answer 200"),
            Duration::from_secs(30),
            POLL,
            || healthz(*addr).then_some(()),
            String::new,
        );
    }
    Instant::now()
}

fn healthz(addr: SocketAddr) -> bool {
    let status = || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        Ok(line)
    };
    status().is_ok_and(|l| l.starts_with("HTTP/1.1 200"))
}

/// Sends `n` GET / straight to `addr`, pipelined on one connection, and
/// reads every answer; returns the last body.
fn send_straight(addr: SocketAddr, n: usize) -> String {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut writer = s.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
            writer.write_all(&req.repeat(chunk.len())).unwrap();
        }
    });
    let mut reader = BufReader::new(s);
    let mut body = String::new();
    for _ in 0..n {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("HTTP/1.1 200"), "{addr} answered {line:?}");
        let mut length = 0;
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut b = vec![0; length];
        reader.read_exact(&mut b).unwrap();
        body = String::from_utf8_lossy(&b).trim().to_string();
    }
    sender.join().unwrap();
    body
}

/// A program that took a port the engine freed, as another app's container
/// or any other program may: it answers 200 with a body no replica gives,
/// and counts the connections it got.
struct Squatter {
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Squatter {
    /// `None` if `addr` is taken already.
    fn on(addr: SocketAddr) -> Option<Squatter> {
        let listener = TcpListener::bind(addr).ok()?;
        listener.set_nonblocking(true).unwrap();
        let (hits, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (h, st) = (hits.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut c, _)) => {
                        h.fetch_add(1, Ordering::SeqCst);
                        let body = "squatter not-this-app 0\n";
                        let _ = write!(
                            c,
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Some(Squatter { hits, stop })
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Squatter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One engine of the tests' own at a time: they share the start of the
/// port range, and the machine has two cores.
static ENGINE_OF_OUR_OWN: Mutex<()> = Mutex::new(());

/// A Docker engine of the test's own, for what the machine's must never go
/// through: `dockerd` on its own socket, data root, exec root and pidfile,
/// with a default bridge of its own (`bridge_of`, 10.`pool`.255.1/24), no
/// iptables rules, and an address pool of its own (10.`pool`.0.0/16).
/// Dropping it stops it, kills what it left running and removes its
/// folders and its bridge.
///
/// Not `--bridge=none`: a dockerd started so deletes the host's `docker0`
/// (moby's `removeDefaultBridgeInterface`), and the machine's engine then
/// fails every `docker run` on its default network ("could not find
/// bridge docker0"). A dockerd started again on a data root it used
/// before deletes `docker0` too, whatever its `--bridge` (seen, not traced
/// in moby), so each launch puts the machine's back as it was.
struct Dockerd {
    dir: PathBuf,
    pool: u8,
    child: Option<Child>,
    /// How long the last `stop` .. `launch` took.
    down_for: Duration,
    stopped_at: Option<Instant>,
}

impl Dockerd {
    fn start(tag: &str, pool: u8) -> Dockerd {
        // Short: containerd's socket goes under it, and a socket's path has
        // at most 107 bytes.
        let dir = PathBuf::from(format!("/tmp/cyan-dd-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // The machine's /etc/docker/daemon.json names its data root and
        // storage driver; this engine reads an empty one instead.
        std::fs::write(dir.join("daemon.json"), "{}").unwrap();
        let bridge = Self::bridge_of(pool);
        let _ = Command::new("ip").args(["link", "del", &bridge]).output();
        for args in [
            vec!["link", "add", &bridge, "type", "bridge"],
            vec![
                "addr",
                "add",
                &format!("10.{pool}.255.1/24"),
                "dev",
                &bridge,
            ],
            vec!["link", "set", &bridge, "up"],
        ] {
            let out = Command::new("ip")
                .args(&args)
                .output()
                .expect("ip is installed");
            assert!(out.status.success(), "ip {args:?}: {out:?}");
        }
        let mut d = Dockerd {
            dir,
            pool,
            child: None,
            down_for: Duration::ZERO,
            stopped_at: None,
        };
        d.launch();
        d
    }

    fn host(&self) -> String {
        format!("unix://{}", self.dir.join("d.sock").display())
    }

    /// The name of the default bridge of the engine with address pool `pool`.
    fn bridge_of(pool: u8) -> String {
        format!("cyandd{pool}")
    }

    /// Starts dockerd (again, with the same flags) and waits until it
    /// answers; the machine's `docker0` is as it was before.
    fn launch(&mut self) {
        let docker0 = MachineBridge::read();
        self.start_dockerd();
        if let Some(bridge) = docker0 {
            bridge.restore();
        }
    }

    fn start_dockerd(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))
            .unwrap();
        let d = &self.dir;
        let child = Command::new("dockerd")
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .args(["--host", &self.host()])
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("d.pid"))
            .arg(format!("--bridge={}", Self::bridge_of(self.pool)))
            .args(["--iptables=false", "--ip6tables=false"])
            .arg(format!(
                "--default-address-pool=base=10.{}.0.0/16,size=24",
                self.pool
            ))
            // The machine's engine uses fuse-overlayfs; vfs needs nothing.
            .args(["--storage-driver", "vfs"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd is installed");
        self.child = Some(child);
        let host = self.host();
        wait::until(
            "the test's own dockerd to answer",
            Duration::from_secs(60),
            POLL,
            || {
                if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                    panic!(
                    "the test's own dockerd exited ({status}) before answering (it needs root):\n{}",
                    self.log_tail()
                );
                }
                let out = Command::new("docker")
                    .args(["-H", &host, "info", "--format", "{{.ID}}"])
                    .output()
                    .unwrap();
                out.status.success().then_some(())
            },
            String::new,
        );
        if let Some(t) = self.stopped_at.take() {
            self.down_for = t.elapsed();
        }
    }

    /// SIGTERM, as a shutdown does (it stops the containers first), and
    /// waits for it to exit (60 s, then SIGKILL).
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        self.stopped_at = Some(Instant::now());
        // SAFETY: a plain kill(2) of our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the test's own dockerd did not stop in 60 s:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    fn docker(&self, args: &[&str]) -> String {
        docker(Some(&self.host()), args)
    }

    /// IDs of `app`'s containers on this engine, sorted.
    fn containers(&self, app: &str) -> Vec<String> {
        let out = self.docker(&[
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label=cyan.app={app}"),
        ]);
        let mut ids: Vec<String> = out.lines().map(String::from).collect();
        ids.sort();
        ids
    }

    /// Where each of `ids` is published now: port -> id.
    fn ports(&self, ids: &[String]) -> BTreeMap<SocketAddr, String> {
        ids.iter()
            .map(|id| (published(Some(self), id).expect("published"), id.clone()))
            .collect()
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// The machine engine's default bridge, `docker0`, and its address.
struct MachineBridge {
    /// `172.17.0.1/16`
    addr: String,
}

impl MachineBridge {
    fn read() -> Option<MachineBridge> {
        let out = Command::new("ip")
            .args(["-o", "-4", "addr", "show", "dev", "docker0"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut words = text.split_whitespace();
        words.find(|w| *w == "inet")?;
        Some(MachineBridge {
            addr: words.next()?.to_string(),
        })
    }

    /// Makes `docker0` again if a dockerd of the test's own deleted it.
    fn restore(&self) {
        if std::path::Path::new("/sys/class/net/docker0").exists() {
            return;
        }
        for args in [
            vec!["link", "add", "docker0", "type", "bridge"],
            vec!["addr", "add", &self.addr, "dev", "docker0"],
            vec!["link", "set", "docker0", "up"],
        ] {
            let out = Command::new("ip")
                .args(&args)
                .output()
                .expect("ip is installed");
            assert!(out.status.success(), "ip {args:?}: {out:?}");
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            // Its containers go with it: nothing of them is worth a clean stop.
            let ids = Command::new("docker")
                .args(["-H", &self.host(), "ps", "-aq"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let ids: Vec<&str> = ids.lines().collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["-H", &self.host(), "rm", "-f"])
                    .args(&ids)
                    .output();
            }
        }
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.stop())).is_err() {
            eprintln!("the test's own dockerd did not stop cleanly");
        }
        // Shims (and a containerd) that outlived it name its exec root.
        let exec = self.dir.join("exec").display().to_string();
        for pid in pids_naming(&exec) {
            // SAFETY: kill(2) of a process that names this engine's folder.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let dir = self.dir.display().to_string();
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mut under: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(&dir))
            .collect();
        under.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in under {
            let _ = Command::new("umount").args(["-l", m]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = Command::new("ip")
            .args(["link", "del", &Self::bridge_of(self.pool)])
            .output();
    }
}

/// Processes whose command line contains `needle`.
fn pids_naming(needle: &str) -> Vec<i32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != std::process::id() as i32)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}
