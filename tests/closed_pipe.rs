//! A reader that goes away (`cyan history | head`, `cyan rollback 2>&1 |
//! head -3`) must not stop cyan: writes to a closed stdout or stderr are
//! dropped, the command runs to its end and exits with its own code. A
//! result lost for another reason (a full disk) is a failure. No Docker:
//! `cyan config check` is enough to write to both.

use std::process::{Command, Stdio};

/// A pipe whose read end is already closed.
fn closed_pipe() -> std::io::PipeWriter {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer
}

fn config(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("cyan.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_closed_stdout_or_stderr_does_not_stop_cyan() {
    let dir = std::env::temp_dir().join(format!("cyan-closed-pipe-{}", std::process::id()));
    let good = config(
        &dir.join("good"),
        "app: web\nimage: web\nport: 8080\nproxy:\n  host: web.localhost\n",
    );
    let bad = config(&dir.join("bad"), "app: web\nimage: web\nport: eighty\n");
    let run = |path: &std::path::Path, stdout: Stdio, stderr: Stdio| {
        Command::new(env!("CARGO_BIN_EXE_cyan"))
            .args(["config", "check", "-c"])
            .arg(path)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .output()
            .unwrap()
    };
    // The result goes to a closed stdout: still a success.
    let out = run(&good, Stdio::from(closed_pipe()), Stdio::piped());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The error goes to a closed stderr: still the config error's exit 2.
    let out = run(&bad, Stdio::piped(), Stdio::from(closed_pipe()));
    assert_eq!(out.status.code(), Some(2));
    // A result that cannot be written for another reason (a full disk)
    // is not a success: it says why, with the internal error's exit 1.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = run(&good, Stdio::from(full), Stdio::piped());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("cannot write the result to stdout"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
