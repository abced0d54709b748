//! The preview route on Docker (`proxy.preview`), against the real Docker
//! engine, the real `cyan` binary and its proxy: the candidate is reachable
//! there from its gate until it is promoted or aborted, and the preview
//! never serves the live color; without a candidate it answers 503. It is
//! what `require_approval: true` needs: look at the preview, then promote.

mod util;

use std::time::{Duration, Instant};

use util::{free_port, http_get, identity, text, TestApp};

/// The demo app with `require_approval: true` and a preview of its own: a
/// host (`<name>-preview.localhost`) and a listen address. Returns the app
/// and the preview's port.
fn app_with_preview(tag: &str) -> (TestApp, u16) {
    let app = TestApp::new(tag, "require_approval: true\n");
    let port = free_port();
    let yaml = std::fs::read_to_string(&app.config).unwrap();
    let drain = "  drain_timeout: 5s\n";
    assert!(yaml.contains(drain), "TestApp's cyan.yaml changed:\n{yaml}");
    let preview = format!(
        "{drain}  preview: {{ host: {}, listen: 127.0.0.1:{port} }}\n",
        preview_host(&app)
    );
    std::fs::write(&app.config, yaml.replace(drain, &preview)).unwrap();
    (app, port)
}

fn preview_host(app: &TestApp) -> String {
    format!("{}-preview.localhost", app.name)
}

/// What the preview answers on its own listen address (any Host):
/// `Ok(version)` for a 200 from the demo, `Err((status, body))` else.
fn on_preview(port: u16, host: &str) -> Result<String, (u16, String)> {
    match http_get(&format!("127.0.0.1:{port}"), host, "/") {
        (200, body) => Ok(identity(&body).1),
        other => Err(other),
    }
}

/// Panics unless the preview answers 503 "no candidate" on its listen
/// address and by its host on the app's own listen address.
fn assert_no_candidate(app: &TestApp, port: u16, when: &str) {
    let route = format!("{}-production", app.name);
    let by_host = http_get(&format!("127.0.0.1:{}", app.port), &preview_host(app), "/");
    for (status, body) in [on_preview(port, "anything.localhost").unwrap_err(), by_host] {
        assert_eq!(status, 503, "{when}: {body}");
        assert!(
            body.contains(&format!("no candidate for {route}; deploy one")),
            "{when}: {body}"
        );
    }
}

/// Waits (10 s at most) for the predecessor `cyan proxy upgrade` names
/// ("pid N drains and exits") to be gone: until then it may still take
/// connections with the table it had.
fn wait_for_exit(upgraded: &std::process::Output) {
    let said = String::from_utf8_lossy(&upgraded.stdout);
    let old: u32 = said
        .split("pid ")
        .nth(2)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no predecessor pid in {said:?}"));
    util::wait::until(
        &format!("pid {old} to exit after the upgrade"),
        Duration::from_secs(10),
        Duration::from_millis(50),
        || (!std::path::Path::new(&format!("/proc/{old}")).exists()).then_some(()),
        String::new,
    )
}

/// The version live traffic gets.
fn live_version(app: &TestApp) -> String {
    identity(&app.get("/").1).1
}

#[test]
fn the_preview_serves_the_candidate_until_promote_or_abort_and_never_live() {
    let (app, port) = app_with_preview("preview");
    let host = preview_host(&app);

    // A first deploy: nothing live, the candidate on the preview only.
    app.deploy("1");
    assert_eq!(on_preview(port, "x.localhost"), Ok("1".into()));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", app.port)).is_err(),
        "the app's own listen address comes with the switch, not the preview"
    );
    let status = app.status_json();
    assert_eq!(status["preview"]["version"], "1", "{status:#}");
    assert_eq!(
        status["preview"]["url"],
        format!("http://127.0.0.1:{port}"),
        "{status:#}"
    );
    app.cyan_ok(&["promote"]);
    assert_eq!(live_version(&app), "1");
    assert_no_candidate(&app, port, "after the first promote");

    // v2 waits for approval: the preview shows it, live traffic stays on 1,
    // whatever Host a request to the preview names.
    app.deploy("2");
    assert_eq!(live_version(&app), "1");
    assert_eq!(
        on_preview(port, &format!("{}.localhost", app.name)),
        Ok("2".into())
    );
    let own_listen = format!("127.0.0.1:{}", app.port);
    let (code, body) = http_get(&own_listen, &host, "/");
    assert_eq!((code, identity(&body).1), (200, "2".into()), "{body}");
    let rendered = app.cyan_ok(&["status"]);
    assert!(
        rendered.contains(&format!("preview: http://127.0.0.1:{port} serves 2")),
        "{rendered}"
    );
    // A rollback never makes the candidate live: that is `cyan promote`,
    // after someone looked.
    let skipped = app.cyan(&["rollback", "--to", "2"]);
    assert_eq!(skipped.status.code(), Some(9), "{}", text(&skipped));
    assert!(
        text(&skipped).contains("2 on green was never live: it is the candidate"),
        "{}",
        text(&skipped)
    );
    assert_eq!(live_version(&app), "1");
    assert_eq!(on_preview(port, "x.localhost"), Ok("2".into()));

    // A restarted proxy previews the same candidate (state on disk).
    let stopped = util::proxy::proxy_ctl("stop", &app.home).unwrap();
    assert!(stopped.status.success(), "{}", text(&stopped));
    assert_eq!(app.status_json()["preview"]["version"], "2");
    let deadline = Instant::now() + Duration::from_secs(10);
    let after_restart = loop {
        let answer = std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| on_preview(port, "x.localhost"));
        match answer {
            Some(Ok(v)) => break v,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            other => panic!("the restarted proxy's preview: {other:?}"),
        }
    };
    assert_eq!(after_restart, "2");
    // And a successor that takes over the sockets (`cyan proxy upgrade`).
    let upgraded = util::proxy::proxy_ctl("upgrade", &app.home).unwrap();
    assert!(upgraded.status.success(), "{}", text(&upgraded));
    wait_for_exit(&upgraded);
    assert_eq!(on_preview(port, "x.localhost"), Ok("2".into()));
    assert_eq!(live_version(&app), "1");

    // Promote while someone keeps looking at the preview: it answers 2
    // until the switch, then 503, and never 1 (live before) nor 2 after.
    let watch = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        for _ in 0..5_000 {
            let answer = on_preview(port, "x.localhost").map_err(|(status, _)| status);
            let done = answer == Err(503);
            seen.push(answer);
            if done || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        seen
    });
    app.cyan_ok(&["promote"]);
    let seen = watch.join().unwrap();
    let first_503 = seen.iter().position(|a| *a == Err(503));
    assert!(
        first_503.is_some(),
        "the preview never went to 503: {seen:?}"
    );
    assert!(
        seen[..first_503.unwrap()]
            .iter()
            .all(|a| *a == Ok("2".into())),
        "before the switch the preview serves only the candidate: {seen:?}"
    );
    assert_eq!(live_version(&app), "2");
    // 1 is kept hot for an instant rollback: never on the preview.
    assert_eq!(app.status_json()["previous"]["version"], "1");
    assert_no_candidate(&app, port, "after promote, with 1 kept hot");
    let status = app.status_json();
    assert!(status["preview"]["version"].is_null(), "{status:#}");

    // v3, then abort: the preview is back to 503, live untouched.
    app.deploy("3");
    assert_eq!(on_preview(port, "x.localhost"), Ok("3".into()));
    app.cyan_ok(&["abort"]);
    assert_no_candidate(&app, port, "after abort");
    assert_eq!(live_version(&app), "2");

    // The preview host is the app's: another app cannot be routed there,
    // and is refused before it builds anything.
    let thief = TestApp::on_home("thief", "", &app.home);
    let yaml = std::fs::read_to_string(&thief.config).unwrap();
    let own = format!("  host: {}.localhost\n", thief.name);
    assert!(yaml.contains(&own), "{yaml}");
    std::fs::write(
        &thief.config,
        yaml.replace(&own, &format!("  host: {host}\n")),
    )
    .unwrap();
    let out = thief.cyan(&["deploy", "--version", "1"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains(&format!(
            "host {host} belongs to {}-production, which previews its candidate on it",
            app.name
        )),
        "{all}"
    );
    assert!(thief.containers().is_empty());
    assert_no_candidate(&app, port, "after another app asked for the preview host");
}

/// A preview (or an app's own listen address) on one of the proxy's own
/// `--listen` addresses would own it, and take every host-routed app's
/// requests there: an unapproved candidate, or a 503 once it is aborted.
/// The proxy refuses it, whichever way it is asked, and the app served by
/// host there keeps its requests. No Docker: the proxy alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_preview_nor_app_takes_the_proxys_own_listen_address() {
    use cyan::proxy::api::{CandidateRequest, PreviewSpec, RouteSpec};
    use cyan::proxy::state::Preview;
    use cyan::release::Color;
    use util::proxy::{host_route, TestProxy};

    let answering = |name: &str| {
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{name}",
            name.len()
        );
        util::upstream::answering(response, true)
    };
    let mut proxy = TestProxy::start_listening("preview-own-port").await;
    proxy
        .route_by_host("web", vec![answering("web").await])
        .await;
    let own: std::net::SocketAddr = proxy.addr().parse().unwrap();
    let admin = proxy.admin();
    admin
        .put_route("evil", &host_route(&["evil.localhost"]))
        .await
        .unwrap();
    let previewed = RouteSpec {
        preview: Some(PreviewSpec {
            hosts: Vec::new(),
            listen: Some(own),
        }),
        ..host_route(&["evil.localhost"])
    };
    let listening = RouteSpec {
        listen: Some(own),
        ..host_route(&["evil.localhost"])
    };
    let candidate = CandidateRequest {
        color: Color::Green,
        upstreams: vec![answering("evil").await.into()],
        preview: Some(Preview {
            listen: Some(own),
            ..Preview::default()
        }),
    };
    let asked = [
        ("claim, preview", admin.claim("evil", &previewed).await),
        ("put, preview", admin.put_route("evil", &previewed).await),
        ("candidate", admin.set_candidate("evil", &candidate).await),
        ("claim, listen", admin.claim("evil", &listening).await),
        ("put, listen", admin.put_route("evil", &listening).await),
    ];
    let mut wrong = Vec::new();
    for (how, answer) in asked {
        match answer {
            Err(e)
                if e.to_string().contains(&format!(
                "{own} is the proxy's own --listen address, where every app is served by its host"
            )) => {}
            other => wrong.push(format!("{how}: {other:?}")),
        }
        let (status, body) = http_get(&proxy.addr(), "web.localhost", "/");
        if (status, body.as_str()) != (200, "web") {
            wrong.push(format!("after {how}: web.localhost got {status} {body:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // The successor of `cyan proxy upgrade` knows its own listen address
    // too: it says so (deploy URLs are built from it) and keeps refusing.
    proxy.upgrade().await;
    proxy.wait_old_exited().await;
    let health = admin.health().await.unwrap();
    assert_eq!(health.listen, vec![own], "after an upgrade");
    for (how, answer) in [
        ("put, listen", admin.put_route("evil", &listening).await),
        ("candidate", admin.set_candidate("evil", &candidate).await),
    ] {
        assert!(
            matches!(&answer, Err(e) if e.to_string().contains("is the proxy's own --listen address")),
            "after an upgrade, {how}: {answer:?}"
        );
    }
    let (status, body) = http_get(&proxy.addr(), "web.localhost", "/");
    assert_eq!((status, body.as_str()), (200, "web"), "after an upgrade");
}

/// A route or preview refused for a host another app holds leaves no
/// listen address bound behind it: the address stays free for its owner.
#[tokio::test]
async fn a_refused_claim_binds_nothing() {
    use cyan::proxy::api::{CandidateRequest, RouteSpec};
    use cyan::proxy::state::Preview;
    use cyan::release::Color;
    use util::proxy::{host_route, TestProxy};
    use util::raw::{read_head, serve_each};

    let backend = serve_each(|mut s| async move {
        let _ = read_head(&mut s).await;
    })
    .await;
    let proxy = TestProxy::start("refused-binds-nothing").await;
    proxy.route_by_host("web", vec![backend]).await;
    let admin = proxy.admin();
    let free = util::free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{free}").parse().unwrap();
    let taking = RouteSpec {
        listen: Some(addr),
        ..host_route(&["web.localhost"])
    };
    let route = admin.put_route("evil", &taking).await;
    assert!(
        route.as_ref().is_err_and(|e| e.to_string().contains("web")),
        "{route:?}"
    );
    let candidate = CandidateRequest {
        color: Color::Green,
        upstreams: vec![backend.into()],
        preview: Some(Preview {
            hosts: vec!["web.localhost".into()],
            listen: Some(addr),
            ..Preview::default()
        }),
    };
    let preview = admin.set_candidate("evil", &candidate).await;
    assert!(preview.is_err(), "{preview:?}");
    std::net::TcpListener::bind(addr).expect("the refused address is still free");
}
