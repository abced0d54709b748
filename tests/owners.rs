//! Routes have owners, against the real Docker engine, the real `cyan`
//! binary and one real proxy that two apps share: a host or listen address
//! belongs to the app live on it. Another app's (or environment's) reading
//! commands never touch it, its deploy is refused before anything is built,
//! a failed deploy leaves routing as it was, and `cyan remove` frees it.
//!
//! The proxy also listens on a port of no app's (`TestProxy::start_listening`):
//! there a host answers only if a route claims it, where on an app's own
//! listen address any host reaches that app.

mod util;

use std::process::Command;
use std::time::{Duration, Instant};

use cyan::proxy::state::RouteState;
use util::load::{assert_none_failed, runtime, Load, Sample};
use util::proxy::TestProxy;
use util::{
    assert_contains_all, foreign_answers, hostname, http_get, identity, short_ids, text, TestApp,
};

/// Each load's windows (before, during and after the commands) must each
/// carry at least this many requests to prove anything.
const MIN_REQUESTS: usize = 10;

/// Rewrites `app`'s cyan.yaml (`TestApp::write_config(extra)`) to route
/// `host`, and `more_hosts` as `proxy.hosts`, on `127.0.0.1:listen`.
fn route_as(app: &TestApp, host: &str, listen: u16, more_hosts: &[&str], extra: &str) {
    app.write_config(extra);
    let yaml = std::fs::read_to_string(&app.config).unwrap();
    let own = format!(
        "  host: {}.localhost\n  listen: 127.0.0.1:{}\n",
        app.name, app.port
    );
    assert!(yaml.contains(&own), "TestApp's cyan.yaml changed:\n{yaml}");
    let mut routed = format!("  host: {host}\n  listen: 127.0.0.1:{listen}\n");
    if !more_hosts.is_empty() {
        routed += &format!("  hosts: [{}]\n", more_hosts.join(", "));
    }
    std::fs::write(&app.config, yaml.replace(&own, &routed)).unwrap();
}

fn route_name(app: &TestApp, environment: &str) -> String {
    format!("{}-{environment}", app.name)
}

/// GET / with `host` on the proxy's own listener (host routing only).
fn get_by_host(proxy: &TestProxy, host: &str) -> (u16, String) {
    http_get(&proxy.addr(), host, "/")
}

/// The proxy's state of `route`, without its record and lock (which a
/// deploy writes whether or not it switches): what routing is made of.
fn routing(proxy: &TestProxy, route: &str) -> Option<RouteState> {
    let view = runtime().block_on(proxy.admin().route(route)).unwrap();
    view.map(|v| RouteState {
        record: serde_json::Value::Null,
        lock: None,
        ..v.state
    })
}

/// Image IDs of `image`, any tag.
fn images(image: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["images", "-q", image])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

/// Runs `f` while two bounded loads ask for `web` on its listen address
/// and by its host on the proxy's own listener; panics unless every request
/// of both, before, during and after `f`, got a 200 from one of `web`'s
/// containers `ids`. Returns what `f` returned.
fn serving_only<T>(proxy: &TestProxy, web: &TestApp, ids: &[String], f: impl FnOnce() -> T) -> T {
    let rt = runtime();
    let _ctx = rt.enter();
    let on_listen = Load::start(web.port, &web.host(), 2, 1);
    let by_host = Load::start(proxy.port, &web.host(), 1, 1);
    std::thread::sleep(Duration::from_secs(1));
    let (began, out, ended) = (Instant::now(), f(), Instant::now());
    std::thread::sleep(Duration::from_secs(1));
    let ours = short_ids(ids);
    for (load, where_) in [(on_listen, "on its listen address"), (by_host, "by host")] {
        let samples: Vec<Sample> = rt.block_on(load.finish());
        let during = format!("for {} {where_}", web.name);
        assert_none_failed(&samples, &during);
        let foreign = foreign_answers(&samples, &ours);
        assert!(
            foreign.is_empty(),
            "{} of {} requests {during} were answered by a container not web's {ours:?}: {:?}",
            foreign.len(),
            samples.len(),
            &foreign[..foreign.len().min(3)]
        );
        let windows = [
            samples.iter().filter(|s| s.end < began).count(),
            samples
                .iter()
                .filter(|s| s.start > began && s.end < ended)
                .count(),
            samples.iter().filter(|s| s.start > ended).count(),
        ];
        assert!(
            windows.iter().all(|n| *n >= MIN_REQUESTS),
            "too little load {during} to prove anything: {windows:?} before, during and after"
        );
        eprintln!(
            "{during}: {} requests ({windows:?} before, during, after), all 200 from web",
            samples.len()
        );
    }
    out
}

/// Panics unless `out` is a refusal (exit 2) naming `owner`'s route, the
/// claim (`what`) and how to free it.
fn assert_refused_for(out: &std::process::Output, owner: &str, what: &str) {
    let all = text(out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert_contains_all(
        &all,
        &[
            what,
            &format!("belongs to {owner}, which is live on it"),
            "cyan remove",
        ],
    );
}

#[test]
fn another_app_on_a_live_host_reads_without_touching_it_and_is_refused() {
    let proxy = runtime().block_on(TestProxy::start_listening("owners-read"));
    let web = TestApp::on_home("web", "", &proxy.home);
    web.deploy("1");
    let web_ids = web.containers();
    let web_route = route_name(&web, "production");
    let before = routing(&proxy, &web_route).expect("web is routed");

    // `api` asks for web's host and web's listen address, as in the report.
    let api = TestApp::on_home("api", "", &proxy.home);
    route_as(&api, &web.host(), web.port, &[], "");
    // Only web's listen address; only web's host.
    let on_listen = TestApp::on_home("onlisten", "", &proxy.home);
    route_as(&on_listen, &on_listen.host(), web.port, &[], "");
    let on_host = TestApp::on_home("onhost", "", &proxy.home);
    route_as(&on_host, &web.host(), on_host.port, &[], "");

    serving_only(&proxy, &web, &web_ids, || {
        for _ in 0..3 {
            for args in [&["status"][..], &["history"], &["config", "check"]] {
                let out = api.cyan(args);
                assert!(out.status.success(), "cyan {args:?}: {}", text(&out));
            }
        }
        let out = api.cyan(&["deploy", "--version", "1"]);
        assert_refused_for(&out, &web_route, &format!("host {}", web.host()));
        let out = on_listen.cyan(&["deploy", "--version", "1"]);
        let listen = format!("listen address 127.0.0.1:{}", web.port);
        assert_refused_for(&out, &web_route, &listen);
        let out = on_host.cyan(&["deploy", "--version", "1"]);
        assert_refused_for(&out, &web_route, &format!("host {}", web.host()));
    });

    for app in [&api, &on_listen, &on_host] {
        assert_eq!(
            images(&app.image),
            Vec::<String>::new(),
            "{} was refused, yet an image was built",
            app.name
        );
        assert_eq!(app.containers(), Vec::<String>::new(), "{}", app.name);
        assert_eq!(
            routing(&proxy, &route_name(app, "production")),
            None,
            "{} got a route in the proxy",
            app.name
        );
    }
    assert_eq!(web.containers(), web_ids);
    assert_eq!(routing(&proxy, &web_route), Some(before));
}

#[test]
fn another_environment_of_a_live_app_is_refused_its_host() {
    let proxy = runtime().block_on(TestProxy::start_listening("owners-env"));
    let web = TestApp::on_home("env", "", &proxy.home);
    web.deploy("1");
    let web_ids = web.containers();
    let production = route_name(&web, "production");
    let before = routing(&proxy, &production).expect("web is routed");

    web.write_config("environment: staging\n");
    serving_only(&proxy, &web, &web_ids, || {
        let out = web.cyan(&["status"]);
        assert!(out.status.success(), "{}", text(&out));
        let out = web.cyan(&["deploy", "--version", "2"]);
        assert_refused_for(&out, &production, &format!("host {}", web.host()));
    });

    assert_eq!(web.containers(), web_ids, "nothing was launched");
    assert_eq!(
        images(&format!("{}:2", web.image)),
        Vec::<String>::new(),
        "nothing was built"
    );
    assert_eq!(routing(&proxy, &route_name(&web, "staging")), None);
    let after = routing(&proxy, &production).expect("web is routed");
    assert_eq!(after, before);
    assert_eq!(after.hosts, vec![web.host()]);
    assert_eq!(
        after.listen,
        Some(format!("127.0.0.1:{}", web.port).parse().unwrap())
    );
}

#[test]
fn a_failed_deploy_leaves_routing_as_it_was() {
    let proxy = runtime().block_on(TestProxy::start_listening("owners-gate"));
    let web = TestApp::on_home("gatehost", "", &proxy.home);
    web.deploy("1");
    let route = route_name(&web, "production");
    let before = routing(&proxy, &route).expect("web is routed");
    let extra = format!("{}-extra.localhost", web.name);
    assert_eq!(get_by_host(&proxy, &extra).0, 404, "not routed yet");

    route_as(
        &web,
        &web.host(),
        web.port,
        &[&extra],
        "env:\n  FAIL_HEALTH: \"1\"\n",
    );
    let out = web.cyan(&["deploy", "--version", "2"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let (status, body) = get_by_host(&proxy, &extra);
    assert_eq!(status, 404, "the failed deploy routed its new host: {body}");
    assert!(body.contains("no app is routed for host"), "{body}");
    let (status, body) = get_by_host(&proxy, &web.host());
    assert_eq!((status, identity(&body).1.as_str()), (200, "1"));
    assert_eq!(routing(&proxy, &route), Some(before), "the route changed");

    route_as(&web, &web.host(), web.port, &[&extra], "");
    web.deploy("3");
    for h in [&extra, &web.host()] {
        let (status, body) = get_by_host(&proxy, h);
        assert_eq!(status, 200, "{h}: {body}");
        assert_eq!(identity(&body).1, "3", "{h}");
    }
    let after = routing(&proxy, &route).unwrap();
    assert_eq!(after.hosts, vec![web.host(), extra]);
}

#[test]
fn a_deploy_of_the_live_version_repairs_the_route() {
    let proxy = runtime().block_on(TestProxy::start_listening("owners-repair"));
    let web = TestApp::on_home("repair", "", &proxy.home);
    web.deploy("1");
    let web_ids = web.containers();
    let route = route_name(&web, "production");
    let extra = format!("{}-extra.localhost", web.name);

    route_as(&web, &web.host(), web.port, &[&extra], "");
    // A config change alone routes nothing: the route follows a switch or
    // a repair.
    web.cyan_ok(&["status"]);
    assert_eq!(get_by_host(&proxy, &extra).0, 404);

    let out = serving_only(&proxy, &web, &web_ids, || {
        web.cyan(&["deploy", "--version", "1"])
    });
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert_contains_all(
        &all,
        &[
            &format!(
                "repairing: the proxy routes {route} differently from cyan.yaml's proxy settings"
            ),
            "repaired:",
        ],
    );
    assert_eq!(
        web.containers(),
        web_ids,
        "a repair of the route launches nothing"
    );
    let (status, body) = get_by_host(&proxy, &extra);
    assert_eq!(status, 200, "{body}");
    assert!(short_ids(&web_ids).contains(hostname(&body)), "{body}");
    assert_eq!(
        routing(&proxy, &route).unwrap().hosts,
        vec![web.host(), extra.clone()]
    );

    // And back: the host taken out of cyan.yaml is taken out of routing.
    route_as(&web, &web.host(), web.port, &[], "");
    let out = web.cyan(&["deploy", "--version", "1"]);
    assert!(
        out.status.success() && text(&out).contains("repairing: the proxy routes"),
        "{}",
        text(&out)
    );
    assert_eq!(get_by_host(&proxy, &extra).0, 404);
    assert_eq!(get_by_host(&proxy, &web.host()).0, 200);
}

#[test]
fn remove_frees_the_host_under_the_deploy_lock() {
    let proxy = runtime().block_on(TestProxy::start_listening("owners-remove"));
    let web = TestApp::on_home("rmweb", "", &proxy.home);
    web.deploy("1");
    let route = route_name(&web, "production");
    let api = TestApp::on_home("rmapi", "", &proxy.home);
    route_as(&api, &web.host(), web.port, &[], "");

    // Without --yes: what it would remove, and nothing removed.
    let blue = web.containers();
    let out = web.cyan(&["remove"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    let listen = format!("127.0.0.1:{}", web.port);
    assert_contains_all(
        &all,
        &[
            "cyan remove would remove",
            &format!("route {route} ({}, {listen})", web.host()),
            "2 container(s)",
            "--yes",
        ],
    );
    assert_eq!(web.containers(), blue);
    assert_eq!(identity(&get_by_host(&proxy, &web.host()).1).1, "1");

    // A deploy holds the lock while its slow replicas are gated.
    web.write_config("env:\n  START_DELAY_MS: \"6000\"\n");
    let mut deploy = web.spawn(&["deploy", "--version", "2"]);
    deploy.wait_for_step("gate", "began", Duration::from_secs(120));
    let out = web.cyan(&["remove", "--yes"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(4), "{all}");
    assert!(all.contains("deploy 2"), "names the holder: {all}");
    assert!(
        blue.iter().all(|id| web.containers().contains(id)),
        "a refused remove removed a container"
    );
    assert_eq!(identity(&get_by_host(&proxy, &web.host()).1).1, "1");
    let (code, _, log) = deploy.finish();
    assert_eq!(code, 0, "{log}");
    assert_eq!(identity(&get_by_host(&proxy, &web.host()).1).1, "2");
    assert_eq!(web.containers().len(), 4, "live 2 and previous 1");

    // Free: the route, all four containers and the record go.
    let out = web.cyan(&["remove", "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(web.containers(), Vec::<String>::new());
    assert_eq!(routing(&proxy, &route), None);
    let status = web.status_json();
    assert_eq!(status["phase"], "not-deployed", "{status:#}");
    assert!(
        status["live"].is_null() && status["previous"].is_null(),
        "{status:#}"
    );
    let history: serde_json::Value =
        serde_json::from_str(&web.cyan_ok(&["history", "-o", "json"])).unwrap();
    assert_eq!(history, serde_json::json!([]));
    let (status, body) = get_by_host(&proxy, &web.host());
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no app is routed for host"), "{body}");

    // The host and listen address are free for api.
    api.deploy("1");
    let api_ids = api.containers();
    assert_eq!(api_ids.len(), 2);
    let on_listen = http_get(&format!("127.0.0.1:{}", web.port), &web.host(), "/");
    for (status, body) in [get_by_host(&proxy, &web.host()), on_listen] {
        assert_eq!(status, 200, "{body}");
        assert!(short_ids(&api_ids).contains(hostname(&body)), "{body}");
    }
}

#[test]
fn a_remove_queued_behind_a_deploy_removes_what_the_deploy_launched() {
    let proxy = runtime().block_on(TestProxy::start_listening("owners-queue"));
    let web = TestApp::on_home("queue", "", &proxy.home);
    web.deploy("1");
    let mut deploy = web.spawn(&["deploy", "--version", "2"]);
    deploy.wait_for_step("build", "began", Duration::from_secs(120));
    let mut remove = web.spawn(&["remove", "--yes", "--lock-wait", "1m"]);
    let queued = remove.wait_for("waiting for the deploy lock", Duration::from_secs(30));
    let launched = deploy.wait_for_step("launch", "began", Duration::from_secs(120));
    if queued > launched {
        // Green may have existed when the remove first looked.
        eprintln!(
            "note: the remove queued after green was launched; the stale look is not exercised"
        );
    }
    let (code, _, log) = deploy.finish();
    assert_eq!(code, 0, "{log}");
    let (code, stdout, log) = remove.finish();
    assert_eq!(code, 0, "{log}");
    assert!(
        stdout.contains("4 container(s)") && stdout.contains("-green-2-"),
        "the remove names green, which the deploy launched while it waited: {stdout}"
    );
    assert_eq!(
        web.containers(),
        Vec::<String>::new(),
        "containers were left: {stdout}\n{log}"
    );
    assert_eq!(routing(&proxy, &route_name(&web, "production")), None);
    assert_eq!(get_by_host(&proxy, &web.host()).0, 404);
}
