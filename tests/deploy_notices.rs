//! Notifications from real deploys: the events of a deploy, an approval
//! and a failure reach a local receiver, signed; a receiver that is down
//! never fails a deploy, and what became of each notification is in the
//! command's report. Real Docker engine, real `cyan` binary.

mod util;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use util::{free_port, text, TestApp};

/// 32 bytes, base64, as `whsec_$(openssl rand -base64 32)` makes.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw0+8TQiyXBxE=";

struct Received {
    headers: Vec<(String, String)>,
    body: serde_json::Value,
}

/// A receiver on loopback answering 200 to every POST, keeping each.
fn receiver() -> (u16, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut headers = Vec::new();
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                if let Some((k, v)) = line.trim_end().split_once(':') {
                    headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
                }
                line.clear();
            }
            let length = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let mut stream = stream;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            sink.lock().unwrap().push(Received {
                headers,
                body: serde_json::from_slice(&body).unwrap_or_default(),
            });
        }
    });
    (port, got)
}

fn header<'r>(r: &'r Received, name: &str) -> &'r str {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_default()
}

/// Checks the Standard Webhooks signature of `r` independently.
fn signed(r: &Received) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let signed = format!(
        "{}.{}.{}",
        header(r, "webhook-id"),
        header(r, "webhook-timestamp"),
        r.body
    );
    let tag = ring::hmac::sign(&key, signed.as_bytes());
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    );
    header(r, "webhook-signature") == expected
}

fn events(got: &Mutex<Vec<Received>>) -> Vec<String> {
    got.lock()
        .unwrap()
        .iter()
        .map(|r| r.body["data"]["event"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[test]
fn a_deploys_events_reach_a_signed_webhook_and_a_dead_receiver_fails_nothing() {
    let (port, got) = receiver();
    let app = TestApp::new("notices", "");
    let dead = free_port();
    let notify = "notify:\n  - webhook: { url: { env: CYAN_TEST_HOOK_URL }, secret: { env: CYAN_TEST_HOOK_SECRET } }\n  - webhook: { url: { env: CYAN_TEST_DEAD_URL }, secret: { env: CYAN_TEST_HOOK_SECRET } }\n    events: [failed]\n";
    let run = |args: &[&str], extra: &str| {
        app.write_config(&format!("{notify}{extra}"));
        app.command(args)
            .args(["-o", "json"])
            .env(
                "CYAN_TEST_HOOK_URL",
                format!("http://127.0.0.1:{port}/deploys"),
            )
            .env(
                "CYAN_TEST_DEAD_URL",
                format!("http://127.0.0.1:{dead}/down"),
            )
            .env("CYAN_TEST_HOOK_SECRET", SECRET)
            .output()
            .unwrap()
    };

    let out = run(&["deploy", "--version", "v1"], "");
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(events(&got), ["started", "switched"]);
    let delivered: Vec<_> = report["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["event"].clone(), n["delivered"].clone()))
        .collect();
    assert_eq!(
        delivered,
        [
            ("started".into(), true.into()),
            ("switched".into(), true.into())
        ],
        "{report:#}"
    );
    {
        let all = got.lock().unwrap();
        assert!(all.iter().all(signed), "every delivery is signed");
        assert_eq!(all[1].body["type"], "deploy.switched");
        assert_eq!(all[1].body["data"]["version"], "v1");
        assert_eq!(all[1].body["data"]["color"], "blue");
        assert_eq!(all[1].body["data"]["app"], app.name.as_str());
    }

    // Waiting for approval: the exact command to promote.
    let out = run(&["deploy", "--version", "v2"], "require_approval: true\n");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(events(&got)[2..], ["started", "awaiting_approval"]);
    let waiting = got.lock().unwrap()[3].body["data"].clone();
    assert_eq!(
        waiting["promote_command"],
        format!("cyan promote -c {}", app.config.display()),
        "{waiting:#}"
    );
    assert_eq!(waiting["previous_version"], "v1", "{waiting:#}");
    let out = run(&["promote"], "require_approval: true\n");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(events(&got)[4..], ["switched"]);

    // A failed gate: the reason and the log tail; the receiver that is
    // down costs the deploy nothing but a line in its report.
    let started = Instant::now();
    let out = run(
        &["deploy", "--version", "v3"],
        "env: { FAIL_HEALTH: \"1\" }\n",
    );
    assert_eq!(out.status.code(), Some(util::GATE_FAILED), "{}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(events(&got)[5..], ["started", "failed"]);
    let failed = got.lock().unwrap()[6].body["data"].clone();
    assert!(
        failed["reason"].as_str().unwrap_or_default().contains("v3")
            || failed["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("health"),
        "{failed:#}"
    );
    assert!(
        text(&out).contains("not delivered"),
        "the dead receiver is named: {}",
        text(&out)
    );
    app.assert_all_answers_from("v2", 3);
}
