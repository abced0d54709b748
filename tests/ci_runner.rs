//! The proxy outlives the CI job that started it. A self-hosted GitHub
//! Actions runner, an Azure Pipelines agent and Jenkins all end a job by
//! killing every process whose environment carries the job's mark; these
//! tests do that sweep for real, over /proc, and check the apps behind the
//! proxy keep answering. And `cyan proxy install`, the systemd unit that
//! runs the proxy as a service instead (written and checked here, never
//! enabled on this machine).

mod util;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use cyan::proxy::client::CI_SIGNS;
use util::proxy::{proxy_ctl, proxy_run, TestProxy};
use util::{text, TestApp};

/// The variables runners mark a job's processes with: cyan's list, which
/// must name at least those the runners the issue names kill by.
const MARKS: [&str; 5] = cyan::proxy::client::CI_JOB_MARKS;

#[test]
fn the_marks_cover_github_and_jenkins() {
    for var in [
        "RUNNER_TRACKING_ID",
        "JENKINS_NODE_COOKIE",
        "BUILD_ID",
        "HUDSON_COOKIE",
    ] {
        assert!(MARKS.contains(&var), "{var} is not stripped");
    }
}

/// What the message says when cyan starts a proxy inside a CI job.
const DETACHED: &str = "detached from this CI job";

/// A job mark no other process on this machine carries.
fn new_mark() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("github_{}_{nanos:x}", std::process::id())
}

/// `cmd` as a job with `mark` would run it: every runner's variable set to it.
fn in_job<'a>(cmd: &'a mut Command, mark: &str) -> &'a mut Command {
    for var in MARKS {
        cmd.env(var, mark);
    }
    cmd.env("CI", "true").env("GITHUB_ACTIONS", "true")
}

/// `cmd` with no sign of CI at all.
fn outside_ci(cmd: &mut Command) -> &mut Command {
    for var in MARKS.iter().chain(&CI_SIGNS) {
        cmd.env_remove(var);
    }
    cmd
}

/// The variables of `pid`'s environment, as `NAME=value` entries.
fn environ(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|e| !e.is_empty())
            .map(|e| String::from_utf8_lossy(e).into_owned())
            .collect(),
    )
}

/// The runner's end-of-job sweep: SIGKILL every process (but this test)
/// with a variable whose value is `mark`. Returns the pids it killed.
fn sweep(mark: &str) -> Vec<u32> {
    let me = std::process::id();
    let suffix = format!("={mark}");
    let mut killed = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let marked = environ(pid).is_some_and(|env| env.iter().any(|e| e.ends_with(&suffix)));
        if pid != me && marked && unsafe { libc::kill(pid as i32, libc::SIGKILL) } == 0 {
            killed.push(pid);
        }
    }
    killed
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s[s.rfind(')').unwrap() + 1..].trim_start().starts_with('Z'))
}

fn proxy_pid(home: &Path) -> u32 {
    let admin = cyan::proxy::client::AdminClient::new(&cyan::proxy::Home {
        dir: home.to_path_buf(),
    });
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(admin.health())
        .unwrap()
        .pid
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_proxy_a_ci_job_started_survives_the_runners_sweep() {
    let app = TestApp::new("sweep", "");
    let mark = new_mark();
    let out = in_job(&mut app.command(&["deploy", "--version", "1"]), &mark)
        .output()
        .unwrap();
    assert!(out.status.success(), "deploy failed:\n{}", text(&out));
    assert!(
        stderr(&out).contains(DETACHED) && stderr(&out).contains("cyan proxy install"),
        "a proxy started in CI is announced, with the ways to run it as a service:\n{}",
        text(&out)
    );
    assert_eq!(
        stderr(&out).matches(DETACHED).count(),
        1,
        "said once:\n{}",
        text(&out)
    );
    let pid = proxy_pid(&app.home);
    assert_eq!(app.get("/").0, 200);

    // Something else the job left behind, for the sweep to find.
    let mut leftover = in_job(&mut Command::new("sleep"), &mark)
        .arg("60")
        .spawn()
        .unwrap();
    let killed = sweep(&mark);
    let _ = leftover.wait();
    assert!(
        killed.contains(&leftover.id()),
        "the sweep kills what carries the mark: {killed:?}"
    );
    assert!(
        !killed.contains(&pid),
        "the sweep found the proxy (pid {pid}): {killed:?}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(alive(pid), "the proxy survives the job's end");
    let statuses: Vec<u16> = (0..50).map(|_| app.get("/").0).collect();
    assert!(
        statuses.iter().all(|s| *s == 200),
        "after the sweep: {statuses:?}"
    );
    let env = environ(pid).unwrap();
    for var in MARKS {
        assert!(
            !env.iter().any(|e| e.starts_with(&format!("{var}="))),
            "the proxy's environment carries {var}: {env:?}"
        );
    }
}

#[test]
fn outside_ci_the_proxy_starts_without_a_word() {
    let app = TestApp::new("noci", "");
    let out = outside_ci(&mut app.command(&["deploy", "--version", "1"]))
        .output()
        .unwrap();
    assert!(out.status.success(), "deploy failed:\n{}", text(&out));
    assert!(!stderr(&out).contains(DETACHED), "{}", text(&out));
    assert_eq!(app.get("/").0, 200);
}

/// A proxy started by hand, in a job (with its marks) and under a service
/// manager's notification socket; stopped at the end.
struct MarkedProxy {
    proxy: TestProxy,
    notify: UnixDatagram,
}

impl MarkedProxy {
    async fn start(tag: &str, mark: &str) -> MarkedProxy {
        let (home, port) = TestProxy::new_home(tag);
        std::fs::create_dir_all(&home).unwrap();
        let socket = home.join("notify.sock");
        let notify = UnixDatagram::bind(&socket).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut cmd = proxy_run(&home);
        in_job(&mut cmd, mark)
            .env("NOTIFY_SOCKET", &socket)
            .args(["--drain-timeout", "1s"]);
        let proxy = TestProxy {
            home,
            port,
            child: cmd.spawn().unwrap(),
        };
        proxy.wait_ready().await;
        MarkedProxy { proxy, notify }
    }
}

#[tokio::test]
async fn an_upgrades_successor_leaves_the_job_and_becomes_the_units_main_process() {
    let mark = new_mark();
    let p = MarkedProxy::start("upgrade-ci", &mark).await;
    let old = p.proxy.admin().health().await.unwrap().pid;
    let out = proxy_ctl("upgrade", &p.proxy.home).unwrap();
    assert!(out.status.success(), "upgrade failed:\n{}", text(&out));
    let new = p.proxy.admin().health().await.unwrap().pid;
    assert_ne!(old, new);

    let mut buf = [0u8; 256];
    let n = p
        .notify
        .recv(&mut buf)
        .expect("a message to the service manager");
    assert_eq!(
        String::from_utf8_lossy(&buf[..n]),
        format!("MAINPID={new}\n"),
        "the successor is named the unit's main process"
    );
    let env = environ(new).unwrap();
    for var in MARKS {
        assert!(
            !env.iter().any(|e| e.starts_with(&format!("{var}="))),
            "the successor's environment carries {var}"
        );
    }
    assert!(
        env.iter().any(|e| e.starts_with("NOTIFY_SOCKET=")),
        "the successor keeps the socket, for the next upgrade"
    );

    let killed = sweep(&mark);
    assert!(!killed.contains(&new), "the sweep found the successor");
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(old) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(alive(new), "the successor outlives the job");
    assert_eq!(p.proxy.admin().health().await.unwrap().pid, new);
}

/// `cyan proxy install ARGS`, with a home of the test's own.
fn install(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cyan"))
        .args(["proxy", "install", "--home"])
        .arg(home)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cyan-install-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The value of `key` in the unit text.
fn setting<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|l| l.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in\n{unit}"))
}

#[test]
fn install_print_shows_the_unit_for_this_binary_home_and_flags() {
    let dir = scratch("print");
    let home = dir.join("home");
    let out = install(
        &home,
        &[
            "--print",
            "--",
            "--listen",
            "127.0.0.1:8123",
            "--drain-timeout",
            "7s",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let unit = String::from_utf8_lossy(&out.stdout);
    let binary = std::fs::canonicalize(env!("CARGO_BIN_EXE_cyan")).unwrap();
    assert_eq!(
        setting(&unit, "ExecStart"),
        format!(
            "{} proxy run --home {} --listen 127.0.0.1:8123 --drain-timeout 7s",
            binary.display(),
            home.display()
        )
    );
    assert_eq!(setting(&unit, "TimeoutStopSec"), "22", "7s of drain + 15s");
    assert_eq!(setting(&unit, "Restart"), "always");
    assert_eq!(setting(&unit, "KillMode"), "mixed");
    assert!(!home.exists(), "--print makes nothing");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn install_refuses_bad_flags_before_writing_anything() {
    let dir = scratch("refuse");
    let home = dir.join("home");
    let units = dir.join("units");
    let unit_dir = units.to_str().unwrap();
    for (flags, why) in [
        (&["--no-such-flag"][..], "--no-such-flag"),
        (&["--drain-timeout", "soon"], "soon"),
        (&["--home", "/elsewhere"], "--home goes before"),
        (
            &[
                "--admin-listen",
                "127.0.0.1:9",
                "--admin-token-file",
                "token",
            ],
            "absolute path",
        ),
    ] {
        let mut args = vec!["--unit-dir", unit_dir, "--no-start", "--"];
        args.extend(flags);
        let out = install(&home, &args);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {}", text(&out));
        assert!(stderr(&out).contains(why), "{flags:?}: {}", text(&out));
        assert!(!units.exists(), "{flags:?}: nothing is written");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn install_writes_the_unit_into_unit_dir_without_starting_it() {
    let dir = scratch("write");
    let home = dir.join("home");
    let units = dir.join("units");
    let flags = ["--", "--tls-listen", "127.0.0.1:8443"];
    let printed = install(&home, &[&["--print"][..], &flags].concat());
    let out = install(
        &home,
        &[
            &["--unit-dir", units.to_str().unwrap(), "--no-start"][..],
            &flags,
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let path = units.join("cyan-proxy.service");
    let written = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        written.trim_end(),
        String::from_utf8_lossy(&printed.stdout).trim_end()
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o644
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("systemctl daemon-reload"),
        "says how to start it: {}",
        text(&out)
    );
    assert!(!home.exists(), "no proxy was started");

    // systemd's own checker, where it is installed (it reads the file; it
    // starts nothing).
    if let Ok(verify) = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
    {
        let complaints = stderr(&verify);
        assert!(
            verify.status.success() && !complaints.contains("cyan-proxy.service"),
            "systemd-analyze verify: {}",
            text(&verify)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_systemd_install_prints_the_unit_and_how_to_install_it() {
    if Path::new("/run/systemd/system").exists() {
        // This would enable a service on this machine: not in a test.
        return;
    }
    let dir = scratch("nosystemd");
    let home = dir.join("home");
    let out = install(&home, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let unit = String::from_utf8_lossy(&out.stdout);
    assert!(setting(&unit, "ExecStart").contains(" proxy run --home "));
    assert!(
        stderr(&out).contains("systemd does not run here")
            && stderr(&out).contains("systemctl enable --now cyan-proxy"),
        "{}",
        text(&out)
    );
    assert!(!home.exists());
    let _ = std::fs::remove_dir_all(&dir);
}
