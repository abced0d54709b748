//! `cyan promote --from --to`: one image from stage to stage, and every
//! refusal a pipeline relies on (exit 9, naming why). Real Docker engine,
//! real registry, real `cyan` binary.

mod util;

use std::net::TcpStream;
use std::time::Duration;

use util::load::{self, Load};
use util::{free_port, text, TestApp};

const REFUSED: i32 = 9;

fn staged(app: &TestApp, staging_port: u16, approval: bool) {
    let name = &app.name;
    let config = format!(
        r#"app: {name}
image: {image}
build: {{ context: {ctx} }}
replicas: 1
port: 8080
init: true
stop_timeout: 2s
proxy: {{ drain_timeout: 3s }}
health:
  http: {{ path: /healthz, expect: 200 }}
  interval: 100ms
  healthy_threshold: 2
verify: {{ duration: 2s, min_requests: 5, on_inconclusive: pass }}
environments:
  staging:
    proxy: {{ host: staging.{name}.localhost, listen: "127.0.0.1:{staging_port}" }}
  production:
    proxy: {{ host: {name}.localhost, listen: "127.0.0.1:{port}" }}
    require_approval: {approval}
"#,
        image = app.image,
        ctx = util::repo_root().join("examples/demo").display(),
        port = app.port,
    );
    std::fs::write(&app.config, config).unwrap();
}

/// Deploys `version` to staging with traffic through its verify window.
fn deploy_verified(app: &TestApp, staging_port: u16, version: &str) {
    let rt = load::runtime();
    let _guard = rt.enter();
    let traffic = Load::start(
        staging_port,
        &format!("staging.{}.localhost", app.name),
        1,
        0,
    );
    app.cyan_ok(&["deploy", "-e", "staging", "--version", version]);
    load::assert_none_failed(&rt.block_on(traffic.finish()), "in staging");
}

fn refused(app: &TestApp, args: &[&str], why: &str) {
    let out = app.cyan(args);
    assert_eq!(out.status.code(), Some(REFUSED), "{args:?}: {}", text(&out));
    assert!(
        text(&out).contains(why),
        "{args:?} should say {why:?}: {}",
        text(&out)
    );
}

fn live_image(app: &TestApp, environment: &str) -> (String, String) {
    let status: serde_json::Value =
        serde_json::from_str(&app.cyan_ok(&["status", "-e", environment, "-o", "json"])).unwrap();
    let live = status["live"].clone();
    (
        live["version"].as_str().unwrap_or_default().to_string(),
        live["image_id"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn a_promotion_ships_the_sources_verified_image_and_refuses_anything_else() {
    if !util::present_or_skipped(
        TcpStream::connect("127.0.0.1:5000").is_ok(),
        "a registry on 127.0.0.1:5000",
        "Debian's docker-registry",
    ) {
        return;
    }
    let name = format!("t{}-stages", std::process::id());
    let app = TestApp::with_image(
        "stages",
        "",
        Some(format!("127.0.0.1:5000/cyan-test-{name}")),
    );
    let staging_port = free_port();
    staged(&app, staging_port, false);
    let promote = ["promote", "--from", "staging", "--to", "production"];

    // Nothing live in staging yet.
    refused(&app, &promote, "staging has no live release to promote");
    // v1 went live with no traffic: kept as inconclusive, never verified.
    app.cyan_ok(&["deploy", "-e", "staging", "--version", "v1"]);
    refused(&app, &promote, "v1 did not pass a verify window in staging");
    // A name the file does not have, and a stage to itself.
    let out = app.cyan(&["promote", "--from", "staging", "--to", "prod"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("has no environment \"prod\""),
        "{}",
        text(&out)
    );
    let out = app.cyan(&["promote", "--from", "staging", "--to", "staging"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // v2, verified under traffic, ships; v1, asked for by an old
    // notification, is refused: staging moved on.
    deploy_verified(&app, staging_port, "v2");
    let mut asked = promote.to_vec();
    asked.extend(["--version", "v1"]);
    refused(
        &app,
        &asked,
        "staging moved on since the promotion of v1 was asked for",
    );
    let mut asked = promote.to_vec();
    asked.extend(["--version", "v2"]);
    app.cyan_ok(&asked);
    let (version, image) = live_image(&app, "production");
    assert_eq!(version, "v2");
    assert_eq!(
        (version, image),
        live_image(&app, "staging"),
        "production runs staging's very image"
    );

    // With approval in production: the candidate waits; staging rolls back
    // meanwhile; the approval is refused before any switch.
    staged(&app, staging_port, true);
    deploy_verified(&app, staging_port, "v3");
    app.cyan_ok(&promote);
    let waiting: serde_json::Value =
        serde_json::from_str(&app.cyan_ok(&["status", "-e", "production", "-o", "json"])).unwrap();
    assert_eq!(waiting["candidate"]["version"], "v3", "{waiting:#}");
    app.cyan_ok(&["rollback", "-e", "staging"]);
    refused(
        &app,
        &["promote", "-e", "production"],
        "staging moved on since this promotion was asked for: v2 is live there now, not v3",
    );
    let after: serde_json::Value =
        serde_json::from_str(&app.cyan_ok(&["status", "-e", "production", "-o", "json"])).unwrap();
    assert_eq!(after["live"]["version"], "v2", "{after:#}");
    assert!(
        after["candidate"].is_null(),
        "the candidate was removed: {after:#}"
    );
    let (status, body) = util::http_get(
        &format!("127.0.0.1:{}", app.port),
        &format!("{}.localhost", app.name),
        "/",
    );
    assert_eq!((status, util::identity(&body).1), (200, "v2".to_string()));
    std::thread::sleep(Duration::from_millis(10));
}
