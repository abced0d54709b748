//! `cyan dashboard` for real: the page in headless Chromium (Selenium,
//! `tests/dashboard/browser.py`) while the demo app is deployed under load
//! and rolled back by the page's own button, and its doors (loopback,
//! token login, a reverse proxy's header, read-only, CSRF, Origin) spoken
//! to in plain HTTP. Real Docker engine, real `cyan` binary and proxy.

mod util;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use util::load::{assert_none_failed, runtime, Load};
use util::{free_port, present_or_skipped, repo_root, text, wait, TestApp};

/// Where the screenshots go (and a failed run's `dashboard-failure.png`).
fn artifacts() -> PathBuf {
    repo_root().join("target/test-artifacts")
}

// ---------------------------------------------------------------------------
// The dashboard process.

/// `cyan dashboard` of a test app, on the app's proxy home; killed when
/// dropped.
struct Dashboard {
    child: Child,
    port: u16,
    log: PathBuf,
    /// The token a loopback dashboard made and printed in its URL.
    token: Option<String>,
}

impl Dashboard {
    /// Starts `cyan --home H dashboard -c CFG --listen IP:PORT ARGS` and
    /// waits until it takes connections.
    fn start(app: &TestApp, ip: &str, args: &[&str]) -> Dashboard {
        let port = free_port();
        let log = app.dir.join(format!("dashboard-{port}.log"));
        let child = dashboard_command(app, &format!("{ip}:{port}"), args)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap())
            .spawn()
            .unwrap();
        let mut d = Dashboard {
            child,
            port,
            log,
            token: None,
        };
        let log = d.log.clone();
        let read = move || std::fs::read_to_string(&log).unwrap_or_default();
        wait::until(
            "the dashboard to take connections",
            Duration::from_secs(20),
            Duration::from_millis(50),
            || {
                if let Ok(Some(status)) = d.child.try_wait() {
                    panic!("cyan dashboard exited ({status}):\n{}", read());
                }
                // Connections taken, and the URL printed.
                TcpStream::connect(("127.0.0.1", port)).ok()?;
                read().contains("cyan dashboard on").then_some(())
            },
            read.clone(),
        );
        d.token = d.log().split("?token=").nth(1).map(|rest| {
            rest.chars()
                .take_while(char::is_ascii_hexdigit)
                .collect::<String>()
        });
        d
    }

    /// The URL to open: with the made token, the one it prints.
    fn url(&self) -> String {
        match &self.token {
            Some(t) => format!("http://127.0.0.1:{}/?token={t}", self.port),
            None => format!("http://127.0.0.1:{}/", self.port),
        }
    }

    /// `headers`, and the made token as a script sends it unless they
    /// carry credentials of their own.
    fn with_token<'h>(
        &'h self,
        headers: &[(&'h str, &'h str)],
        bearer: &'h str,
    ) -> Vec<(&'h str, &'h str)> {
        let mut all = headers.to_vec();
        let own = headers.iter().any(|(k, _)| {
            k.eq_ignore_ascii_case("authorization") || k.eq_ignore_ascii_case("cookie")
        });
        if self.token.is_some() && !own {
            all.push(("Authorization", bearer));
        }
        all
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let bearer = format!("Bearer {}", self.token.as_deref().unwrap_or_default());
        http(
            self.port,
            "GET",
            path,
            &self.with_token(headers, &bearer),
            "",
        )
    }

    fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let bearer = format!("Bearer {}", self.token.as_deref().unwrap_or_default());
        http(
            self.port,
            "POST",
            path,
            &self.with_token(headers, &bearer),
            body,
        )
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("cyan dashboard's log:\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dashboard_command(app: &TestApp, listen: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cyan"));
    cmd.arg("--home")
        .arg(&app.home)
        .args(["dashboard", "-c"])
        .arg(&app.config)
        .args(["--listen", listen])
        .args(args)
        .env_remove("CYAN_HOME")
        .env_remove("CYAN_DASHBOARD_TOKEN_FILE")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

// ---------------------------------------------------------------------------
// Plain HTTP.

/// An answer: status, head (status line and headers) and body.
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        util::raw::header_values(&self.head, name)
            .into_iter()
            .next()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{e}: not JSON:\n{}\n{}", self.head, self.body))
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\n\n{}", self.head, self.body)
    }
}

/// One request to 127.0.0.1:`port` on a connection of its own; `Host`
/// is `127.0.0.1:port` unless `headers` name one. Actions run a cyan
/// command before they answer: 60 s at most.
fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = match util::raw::is_chunked(head) {
        true => match util::raw::dechunk(body.as_bytes()) {
            util::raw::Chunks::Whole { body, .. } => String::from_utf8_lossy(&body).into_owned(),
            _ => panic!("a broken chunked body:\n{raw}"),
        },
        false => body.to_string(),
    };
    Reply {
        status,
        head: head.to_string(),
        body,
    }
}

/// The page's CSRF token: `<meta name="csrf" content="...">`.
fn csrf_of(page: &str) -> String {
    let at = page
        .find(r#"<meta name="csrf" content=""#)
        .unwrap_or_else(|| panic!("no csrf meta in:\n{page}"));
    let rest = &page[at + r#"<meta name="csrf" content=""#.len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// A rollback as the page asks for it.
fn rollback_body(app: &TestApp) -> String {
    serde_json::json!({"action": "rollback", "app": app.name, "environment": "production"})
        .to_string()
}

fn live_version(app: &TestApp) -> String {
    app.status_json()["live"]["version"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The CSP every answer carries: nothing from elsewhere.
fn assert_csp(r: &Reply, what: &str) {
    let csp = r
        .header("content-security-policy")
        .unwrap_or_else(|| panic!("{what} has no Content-Security-Policy:\n{r:?}"));
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{what}: {csp}"
    );
}

// ---------------------------------------------------------------------------
// The browser.

/// Whether Chromium, its driver and Selenium are here (outside CI a test
/// without them says it skipped).
fn browser_present() -> bool {
    let found = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    present_or_skipped(
        found(&chromium(), &["--version"])
            && found(&chromedriver(), &["--version"])
            && found("python3", &["-c", "import selenium"]),
        "chromium, chromedriver or python3's selenium is missing",
        ".ci/run installs Debian's chromium and chromium-driver and PyPI's selenium",
    )
}

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

fn chromedriver() -> String {
    std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into())
}

/// `tests/dashboard/browser.py` running: its phases (one JSON line each)
/// as they come. Its process group (python, chromedriver, Chromium) is
/// killed when dropped.
struct Browser {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Browser {
    fn open(url: &str, mode: &str, env: &[(&str, &str)]) -> Browser {
        let mut child = Command::new("python3")
            .arg(repo_root().join("tests/dashboard/browser.py"))
            .args([url, &artifacts().display().to_string(), mode])
            .envs(env.iter().copied())
            .env("CHROMIUM", chromium())
            .env("CHROMEDRIVER", chromedriver())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (err, sink) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(err).read_to_string(&mut text);
            sink.lock().unwrap().push_str(&text);
        });
        Browser {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
        }
    }

    /// Waits (at most `limit`) for the phase `name`, the next line the
    /// script prints; panics with the script's reason if it stopped.
    fn phase(&mut self, name: &str, limit: Duration) -> Value {
        match self.lines.recv_timeout(limit) {
            Ok(line) => {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("{e}: browser.py printed {line:?}"));
                assert_eq!(v["phase"], name, "browser.py: {v:#}");
                eprintln!("browser.py {name}: {v}");
                v
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("browser.py: no phase {name:?} within {limit:?}")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().unwrap();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "browser.py exited ({status}) before {name:?}:\n{}",
                    self.stderr.lock().unwrap()
                )
            }
        }
    }

    fn say(&mut self, line: &str) {
        writeln!(self.stdin.as_mut().unwrap(), "{line}").unwrap();
    }

    /// Waits for the script to end; panics unless it succeeded.
    fn finish(mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "browser.py did not end");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.success(),
            "browser.py: {status}\n{}",
            self.stderr.lock().unwrap()
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Its group: python, chromedriver and Chromium (the group id is
            // python's pid, set at spawn).
            unsafe {
                libc::kill(-(self.child.id() as i32), libc::SIGKILL);
            }
            let _ = self.child.wait();
        }
    }
}

fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[1..4], b"PNG", "{} is no PNG", path.display());
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

// ---------------------------------------------------------------------------
// The tests.

#[test]
fn the_page_follows_a_deploy_under_load_and_its_button_rolls_back_without_a_failed_request() {
    if !browser_present() {
        return;
    }
    let app = TestApp::new("dashui", "");
    app.deploy("1.0.0");
    app.deploy("2.0.0");
    let dash = Dashboard::start(&app, "127.0.0.1", &["--every", "500ms"]);
    let route = dash.get("/api/overview", &[]).json()["apps"][0]["route"]
        .as_str()
        .unwrap()
        .to_string();
    let rt = runtime();
    let _ctx = rt.enter();
    let load = Load::start(app.port, &app.host(), 2, 1);

    let began = Instant::now();
    let mut page = Browser::open(
        &dash.url(),
        "deploy",
        &[
            ("EXPECT_ROUTE", &route),
            ("EXPECT_LIVE", "2.0.0"),
            ("EXPECT_PREVIOUS", "1.0.0"),
            ("EXPECT_NEXT", "3.0.0"),
        ],
    );
    // The card, the feed and the live color's requests/s line growing:
    // browser.py waited for each.
    let watching = page.phase("watching", Duration::from_secs(90));
    assert_eq!(watching["live_color"], "green", "{watching:#}");
    assert!(
        watching["points_after"].as_u64() > watching["points_before"].as_u64(),
        "{watching:#}"
    );
    let rate: f64 = watching["legend"]
        .as_str()
        .and_then(|l| l.strip_prefix("green (live): "))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("the legend: {watching:#}"));
    assert!(rate > 0.0, "{watching:#}");
    assert_eq!(watching["buttons"][0]["text"], "Roll back to 1.0.0");

    // A deploy while the page is open: it shows the switch.
    app.deploy("3.0.0");
    let switched = page.phase("switched", Duration::from_secs(120));
    assert!(
        switched["step"]
            .as_str()
            .unwrap()
            .contains("switched: green -> blue (3.0.0 is live)"),
        "{switched:#}"
    );
    assert_eq!(switched["mark_labels"][0], "→blue", "{switched:#}");
    let history = switched["history"].as_array().unwrap();
    let versions: Vec<&str> = history
        .iter()
        .map(|h| h["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["3.0.0", "2.0.0", "1.0.0"], "{switched:#}");
    assert!(
        history
            .iter()
            .all(|h| h["by"].as_str().is_some_and(|b| !b.is_empty())),
        "every release says who made it: {history:#?}"
    );
    for (shot, size) in [("desktop", (1280, 900)), ("phone", (390, 844))] {
        let path = artifacts().join(format!("dashboard-{shot}.png"));
        assert_eq!(png_size(&path), size, "{}", path.display());
        assert_eq!(
            switched[shot]["overflows_x"], false,
            "the page is wider than a {shot}'s screen: {switched:#}"
        );
    }

    // The keyboard: Tab, Enter, Cancel focused, Escape: nothing happened.
    let keyboard = page.phase("keyboard", Duration::from_secs(60));
    assert_eq!(keyboard["posts"], 0);
    let status = app.status_json();
    assert_eq!(
        status["live"]["version"], "3.0.0",
        "Escape acted: {status:#}"
    );
    assert_eq!(status["lock"], Value::Null, "{status:#}");

    // The mouse: the button, Confirm, the toast; cyan agrees.
    page.say("go on");
    let rolled = page.phase("rolled-back", Duration::from_secs(90));
    assert_eq!(rolled["posts"], 1, "one action posted: {rolled:#}");
    assert_eq!(live_version(&app), "2.0.0");
    // The history says who pressed it, through whose cyan.
    let history: Value = serde_json::from_str(&app.cyan_ok(&["history", "-o", "json"])).unwrap();
    let by = history[0]["by"].as_str().unwrap_or_default();
    assert!(
        history[0]["event"] == "rolled-back"
            && by.starts_with("token (dashboard) via ")
            && by.contains('@'),
        "{:#}",
        history[0]
    );
    let done = page.phase("done", Duration::from_secs(30));
    let severe: Vec<&Value> = done["console"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["level"] == "SEVERE")
        .collect();
    assert!(severe.is_empty(), "the browser's console: {severe:#?}");
    page.finish();
    let took = began.elapsed();

    let samples = rt.block_on(load.finish());
    assert_none_failed(&samples, "across the deploy and the rollback by button");
    assert!(samples.len() > 200, "too little load: {}", samples.len());
    let on_2 = samples
        .iter()
        .rev()
        .take(20)
        .filter(|s| s.outcome.as_ref().is_ok_and(|b| b.ends_with(" 2.0.0")))
        .count();
    assert_eq!(on_2, 20, "the last requests were answered by 2.0.0");
    eprintln!(
        "dashboard in a browser: {} requests, 0 failed, across a deploy and a rollback by button; page session {took:?}; \
         screenshots in {}",
        samples.len(),
        artifacts().display()
    );
}

#[test]
fn a_token_dashboard_off_loopback_needs_a_login_and_each_action_its_csrf_token_and_origin() {
    let app = TestApp::new("dashtok", "");
    app.deploy("1.0.0");
    app.deploy("2.0.0");
    let token = "a-test-token-of-thirty-two-chars";
    let token_file = app.dir.join("dashboard.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let file = token_file.display().to_string();
    let dash = Dashboard::start(&app, "0.0.0.0", &["--token-file", &file]);

    // No session: the data is refused, the page is the login form.
    let r = dash.get("/api/overview", &[]);
    assert_eq!(r.status, 401, "{r:?}");
    let r = dash.get("/", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.body.contains(r#"action="/login""#) && r.body.contains(r#"name="token""#),
        "{r:?}"
    );
    assert!(!r.body.contains("csrf"), "no CSRF token before a login");
    assert_csp(&r, "the login page");
    let form = [("Content-Type", "application/x-www-form-urlencoded")];

    // A wrong token, then the right one: a session cookie.
    let r = dash.post("/login", &form, "token=not-the-token-at-all-no");
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.body.contains("That is not the token."), "{r:?}");
    let r = dash.post("/login", &form, &format!("token={token}"));
    assert_eq!(r.status, 303, "{r:?}");
    assert_eq!(r.header("location").as_deref(), Some("/"));
    let set = r.header("set-cookie").expect("a cookie");
    assert!(
        set.starts_with("cyan_session=")
            && set.contains("HttpOnly")
            && set.contains("SameSite=Strict"),
        "{set}"
    );
    let session = set.split(';').next().unwrap().to_string();
    let cookie = [("Cookie", session.as_str())];
    let r = dash.get("/api/overview", &cookie);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["apps"][0]["status"]["live"]["version"], "2.0.0");
    let forged = [(
        "Cookie",
        "cyan_session=0000000000000000000000000000000000000000000000000000000000000000",
    )];
    assert_eq!(dash.get("/api/overview", &forged).status, 401);
    let page = dash.get("/", &cookie);
    assert_eq!(page.status, 200, "{page:?}");
    let csrf = csrf_of(&page.body);
    assert_eq!(csrf.len(), 32, "{csrf}");

    // Actions without the CSRF token, with a wrong one, or from another
    // origin: refused, and nothing changed.
    let body = rollback_body(&app);
    let json = ("Content-Type", "application/json");
    let origin = format!("http://127.0.0.1:{}", dash.port);
    let refused: [(&str, Vec<(&str, &str)>); 3] = [
        ("no X-CSRF-Token", vec![cookie[0], json]),
        (
            "a wrong X-CSRF-Token",
            vec![
                cookie[0],
                json,
                ("X-CSRF-Token", "0123456789abcdef0123456789abcdef"),
            ],
        ),
        (
            "Origin http://evil.example",
            vec![
                cookie[0],
                json,
                ("X-CSRF-Token", csrf.as_str()),
                ("Origin", "http://evil.example"),
            ],
        ),
    ];
    let history = app.cyan_ok(&["history", "-o", "json"]);
    for (what, headers) in &refused {
        let r = dash.post("/api/actions", headers, &body);
        assert_eq!(r.status, 403, "{what}: {r:?}");
        assert!(r.json()["error"].is_string(), "{what}: {r:?}");
    }
    assert_eq!(
        live_version(&app),
        "2.0.0",
        "a refused action changed nothing"
    );
    assert_eq!(app.cyan_ok(&["history", "-o", "json"]), history);

    // The same action with the token and the page's own origin is taken:
    // it was the guards that refused.
    let r = dash.post(
        "/api/actions",
        &[
            cookie[0],
            json,
            ("X-CSRF-Token", csrf.as_str()),
            ("Origin", origin.as_str()),
        ],
        &body,
    );
    assert_eq!(r.status, 200, "{r:?}");
    let outcome = r.json();
    assert_eq!(outcome["exit_code"], 0, "{outcome:#}");
    assert_eq!(outcome["meaning"], "done");
    assert_eq!(live_version(&app), "1.0.0");

    // Past five wrong tokens from one address (one above, four here)
    // wrong ones get 429s for a minute; the right token still logs in (a
    // hard lockout would let anyone behind the address lock the real
    // users out), and a session already given keeps working.
    for n in 2..=5 {
        let r = dash.post("/login", &form, &format!("token=wrong-guess-number-{n}"));
        assert_eq!(r.status, 401, "guess {n}: {r:?}");
    }
    let r = dash.post("/login", &form, "token=wrong-guess-number-6");
    assert_eq!(r.status, 429, "{r:?}");
    assert!(r.body.contains("too many wrong tokens"), "{r:?}");
    let r = dash.post("/login", &form, &format!("token={token}"));
    assert_eq!(r.status, 303, "{r:?}");
    assert_eq!(dash.get("/api/overview", &cookie).status, 200);

    // Logging out ends the session.
    let r = dash.post("/logout", &cookie, "");
    assert_eq!(r.status, 303, "{r:?}");
    assert!(
        r.header("set-cookie").unwrap().contains("Max-Age=0"),
        "{r:?}"
    );
    assert_eq!(dash.get("/api/overview", &cookie).status, 401);
}

#[test]
fn loopback_read_only_and_proxy_header_dashboards_refuse_what_they_must() {
    let app = TestApp::new("dashdoor", "");
    app.deploy("1.0.0");
    app.deploy("2.0.0");
    let json = ("Content-Type", "application/json");
    let body = rollback_body(&app);

    // Off loopback with no door: cyan refuses to start, naming the doors.
    let port = free_port().to_string();
    let mut open = dashboard_command(&app, &format!("0.0.0.0:{port}"), &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = open.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = open.kill();
            let _ = open.wait();
            panic!("cyan dashboard on 0.0.0.0 without a door still runs after 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = open.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(2), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("--token-file")
            && said.contains("--trust-header")
            && said.contains("not a loopback address"),
        "{said}"
    );

    // Loopback: a token is made and printed in the URL; without it,
    // another user of the machine (or a container on the host network)
    // gets the login form and no data, and cannot act.
    let dash = Dashboard::start(&app, "127.0.0.1", &[]);
    let token = dash
        .token
        .clone()
        .expect("a loopback dashboard prints its token");
    assert_eq!(token.len(), 32, "{}", dash.log());
    assert_eq!(http(dash.port, "GET", "/api/overview", &[], "").status, 401);
    let form = http(dash.port, "GET", "/", &[], "");
    assert!(
        form.status == 200 && form.body.contains(r#"name="token""#),
        "{form:?}"
    );
    let r = http(dash.port, "POST", "/api/actions", &[json], &body);
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(
        http(dash.port, "GET", "/?token=0123456789abcdef", &[], "").status,
        401
    );
    let entered = http(dash.port, "GET", &format!("/?token={token}"), &[], "");
    assert_eq!(entered.status, 303, "{entered:?}");
    let cookie = entered.header("set-cookie").expect("a session");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    assert_eq!(
        dash.get("/api/overview", &[("Cookie", session.as_str())])
            .status,
        200
    );
    // A query that is not a token (a bookmark's, a tracker's) is no login.
    let tagged = dash.get("/?utm_source=mail", &[("Cookie", session.as_str())]);
    assert!(
        tagged.status == 200 && tagged.body.contains(r#"name="csrf""#),
        "{tagged:?}"
    );
    assert_eq!(
        live_version(&app),
        "2.0.0",
        "nothing was done without the token"
    );

    // One address may hold 16 connections, idle ones included: the 17th
    // is closed unanswered, and the slots come back when they close.
    let idle: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect(("127.0.0.1", dash.port)).unwrap())
        .collect();
    wait::until(
        "the 17th connection from one address to be turned away",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let mut s = TcpStream::connect(("127.0.0.1", dash.port)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            let _ = s.write_all(b"GET /app.js HTTP/1.1\r\nHost: localhost\r\n\r\n");
            let mut buf = [0u8; 16];
            matches!(s.read(&mut buf), Ok(0) | Err(_)).then_some(())
        },
        String::new,
    );
    drop(idle);
    wait::until(
        "the slots to come back",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            // Until they are back, a new connection may be reset as it is
            // turned away: try, without the helper's panic on a reset.
            let mut s = TcpStream::connect(("127.0.0.1", dash.port)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            s.write_all(b"GET /app.js HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .ok()?;
            let mut raw = Vec::new();
            s.read_to_end(&mut raw).ok()?;
            raw.starts_with(b"HTTP/1.1 200").then_some(())
        },
        String::new,
    );

    // A Host that is not a loopback name is another site.
    for path in ["/", "/api/overview"] {
        let r = dash.get(path, &[("Host", "evil.example")]);
        assert_eq!(r.status, 421, "{path}: {r:?}");
    }
    let evil = format!("evil.example:{}", dash.port);
    let r = dash.post("/api/actions", &[("Host", evil.as_str()), json], &body);
    assert_eq!(r.status, 421, "{r:?}");
    let local = format!("localhost:{}", dash.port);
    assert_eq!(dash.get("/", &[("Host", local.as_str())]).status, 200);

    // The page: its own script and style only, under a CSP, and small.
    let page = dash.get("/", &[]);
    let script = dash.get("/app.js", &[]);
    let style = dash.get("/style.css", &[]);
    for (what, r) in [("/", &page), ("/app.js", &script), ("/style.css", &style)] {
        assert_eq!(r.status, 200, "{what}: {r:?}");
        assert_csp(r, what);
    }
    assert_csp(&dash.get("/api/overview", &[]), "/api/overview");
    let external = external_references(&page.body, &script.body, &style.body);
    assert!(external.is_empty(), "the page references: {external:#?}");
    let size = page.body.len() + script.body.len() + style.body.len();
    eprintln!(
        "dashboard page: {size} bytes (HTML {}, JS {}, CSS {})",
        page.body.len(),
        script.body.len(),
        style.body.len()
    );
    drop(dash);

    // Read-only: no buttons, and an action with the right CSRF token is
    // refused.
    let ro = Dashboard::start(&app, "127.0.0.1", &["--read-only"]);
    let page = ro.get("/", &[]);
    assert!(
        page.body
            .contains(r#"<meta name="read-only" content="true">"#),
        "{page:?}"
    );
    let overview = ro.get("/api/overview", &[]).json();
    assert_eq!(overview["read_only"], true);
    assert_eq!(overview["apps"][0]["actions"], false, "{overview:#}");
    let csrf = csrf_of(&page.body);
    let r = ro.post(
        "/api/actions",
        &[json, ("X-CSRF-Token", csrf.as_str())],
        &body,
    );
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.body.contains("read-only"), "{r:?}");
    assert_eq!(live_version(&app), "2.0.0");
    if browser_present() {
        let mut shown = Browser::open(&ro.url(), "read-only", &[]);
        let v = shown.phase("read-only", Duration::from_secs(60));
        assert_eq!(v["buttons"], 0, "{v:#}");
        shown.finish();
    }
    drop(ro);

    // Behind a reverse proxy that names the user: no name, no page.
    let hp = Dashboard::start(&app, "127.0.0.1", &["--trust-header", "X-Forwarded-User"]);
    assert_eq!(hp.get("/api/overview", &[]).status, 401);
    assert_eq!(hp.get("/", &[]).status, 401);
    let alice = ("X-Forwarded-User", "alice");
    assert_eq!(hp.get("/api/overview", &[alice]).status, 200);
    // A hostile page rebound to this address (DNS rebinding) sends the
    // header itself: its Host, a name of its own, keeps it out.
    for path in ["/", "/api/overview"] {
        let r = hp.get(path, &[alice, ("Host", "evil.example:7070")]);
        assert_eq!(r.status, 421, "{path}: {r:?}");
    }
    drop(hp);
    // A name the reverse proxy passes as Host is let in when given.
    let hp = Dashboard::start(
        &app,
        "127.0.0.1",
        &[
            "--trust-header",
            "X-Forwarded-User",
            "--host",
            "ops.example",
        ],
    );
    assert_eq!(
        hp.get("/api/overview", &[alice, ("Host", "ops.example")])
            .status,
        200
    );
    assert_eq!(hp.get("/api/overview", &[]).status, 401);
    let page = hp.get("/", &[alice]);
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("signed in as <span>alice</span>"),
        "{page:?}"
    );
    let csrf = csrf_of(&page.body);
    let r = hp.post(
        "/api/actions",
        &[
            alice,
            json,
            ("X-CSRF-Token", csrf.as_str()),
            ("Origin", "http://evil.example"),
        ],
        &body,
    );
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(live_version(&app), "2.0.0");

    // `cyan proxy stop` holds: the dashboard's reads never start a proxy
    // (`cyan status` would), its card says the proxy is not running.
    let stop = Command::new(env!("CARGO_BIN_EXE_cyan"))
        .args(["proxy", "stop"])
        .env("CYAN_HOME", &app.home)
        .output()
        .unwrap();
    assert!(stop.status.success(), "{}", text(&stop));
    let not_running = || {
        let o = hp.get("/api/overview", &[alice]).json();
        o["apps"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("is not running"))
            .then_some(o)
    };
    wait::until(
        "the card to say the proxy is not running",
        Duration::from_secs(15),
        Duration::from_millis(200),
        not_running,
        || hp.log(),
    );
    std::thread::sleep(Duration::from_secs(5));
    assert!(not_running().is_some(), "the proxy came back: {}", hp.log());
    let proxy = Command::new(env!("CARGO_BIN_EXE_cyan"))
        .args(["proxy", "status"])
        .env("CYAN_HOME", &app.home)
        .output()
        .unwrap();
    assert!(
        !proxy.status.success(),
        "a proxy runs again: {}",
        text(&proxy)
    );
}

/// What in the page's HTML, script and style could load something from
/// elsewhere: an absolute URL outside comments (the SVG namespace, a name
/// the browser never fetches, aside), a `src`/`href`/`action` not on this
/// origin, a CSS `url(` or `@import`.
fn external_references(html: &str, js: &str, css: &str) -> Vec<String> {
    let mut found = Vec::new();
    let html = strip_between(html, "<!--", "-->");
    let css = strip_between(css, "/*", "*/");
    let js: String = strip_between(js, "/*", "*/")
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\"http://www.w3.org/2000/svg\"", "\"\"");
    for (what, text) in [("HTML", &html), ("JS", &js), ("CSS", &css)] {
        for scheme in ["http://", "https://"] {
            for (at, _) in text.match_indices(scheme) {
                let line = text[at..].lines().next().unwrap_or("");
                found.push(format!("{what}: {line}"));
            }
        }
    }
    for attr in ["src=\"", "href=\"", "action=\""] {
        for (at, _) in html.match_indices(attr) {
            let value = &html[at + attr.len()..];
            if !value.starts_with('/') || value.starts_with("//") {
                found.push(format!(
                    "HTML: {attr}{}",
                    &value[..value.find('"').unwrap_or(0)]
                ));
            }
        }
    }
    for needle in ["url(", "@import"] {
        if css.contains(needle) {
            found.push(format!("CSS: {needle}"));
        }
    }
    for call in ["fetch(\"", "EventSource(\""] {
        for (at, _) in js.match_indices(call) {
            let value = &js[at + call.len()..];
            if !value.starts_with('/') || value.starts_with("//") {
                found.push(format!(
                    "JS: {call}{}",
                    &value[..value.find('"').unwrap_or(0)]
                ));
            }
        }
    }
    found
}

/// `text` without what is between each `open` and the next `close`.
fn strip_between(text: &str, open: &str, close: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(open) {
        out.push_str(&rest[..at]);
        rest = match rest[at + open.len()..].find(close) {
            Some(end) => &rest[at + open.len() + end + close.len()..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}
