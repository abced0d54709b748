//! `cyan init` through the real binary: the file it writes for a copy of the
//! demo loads with cyan's own loader, a second run leaves it alone, and it
//! deploys as written on the real Docker engine (a newcomer's first file
//! already deploys). Requests go to 127.0.0.1 only.

mod util;

use std::path::Path;
use std::process::{Command, Output};

use util::{demo_binary_present, free_port, identity, repo_root, text, TestApp};

fn init(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cyan"))
        .arg("init")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env("CI", "true")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

#[test]
fn init_writes_a_demo_config_that_loads_is_never_overwritten_and_deploys() {
    demo_binary_present();
    let pid = std::process::id();
    let root = std::env::temp_dir().join(format!("cyan-test-init-{pid}"));
    let _ = std::fs::remove_dir_all(&root);
    // A folder name that needs fixing: uppercase, '_' and a space.
    let folder = format!("T{pid}_Init Demo");
    let dir = root.join(&folder);
    std::fs::create_dir_all(dir.join("build")).unwrap();
    let demo = repo_root().join("examples/demo");
    std::fs::copy(demo.join("Dockerfile"), dir.join("Dockerfile")).unwrap();
    std::fs::copy(demo.join("build/cyan-demo"), dir.join("build/cyan-demo")).unwrap();
    let name = format!("t{pid}-init-demo");
    // The harness's app, for its commands and its cleanup (containers and
    // image by the app's name, the proxy, the folder); init wrote its config.
    let port = free_port();
    let app = TestApp {
        name: name.clone(),
        dir: root.clone(),
        home: root.join("home"),
        port,
        config: dir.join("cyan.yaml"),
        image: name.clone(),
    };
    let listen = format!("127.0.0.1:{port}");

    let out = init(&dir, &["--listen", &listen]);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    for needle in [
        format!("app      {name} (from the folder's name \"{folder}\": lowercased; '_', ' ' became '-')"),
        "port     8080 (from EXPOSE 8080 in the Dockerfile, line ".into(),
        "health   GET /healthz (a guess".into(),
        "version  none found".into(),
        format!("url      http://{listen}"),
    ] {
        assert!(said.contains(&needle), "missing {needle:?} in:\n{}", text(&out));
    }
    let written = std::fs::read_to_string(&app.config).unwrap();
    for needle in [
        format!("\napp: {name}\n"),
        format!("\nimage: {name}\n"),
        "\nport: 8080\n".into(),
        format!("\n  listen: {listen}\n"),
        "README's config reference".into(),
    ] {
        assert!(
            written.contains(&needle),
            "missing {needle:?} in:\n{written}"
        );
    }

    // It loads: through cyan's library, and through `cyan config check`.
    let loaded = cyan::config::Config::load(&app.config, &Default::default()).unwrap();
    assert_eq!(
        (loaded.config.app.as_str(), loaded.config.port),
        (name.as_str(), 8080)
    );
    assert_eq!(loaded.config.health.http_check().path, "/healthz");
    assert_eq!(loaded.config.proxy.listen, Some(listen.parse().unwrap()));
    let check = app.cyan(&["config", "check"]);
    assert!(check.status.success(), "{}", text(&check));

    // A second run refuses, says how to overwrite, and leaves the file.
    let again = init(&dir, &["--listen", &listen]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("pass --force to replace it"),
        "{}",
        text(&again)
    );
    assert_eq!(std::fs::read_to_string(&app.config).unwrap(), written);

    // --force replaces it; -o json says what was read and chosen.
    let forced = init(&dir, &["--listen", &listen, "--force", "-o", "json"]);
    assert!(forced.status.success(), "{}", text(&forced));
    let json: serde_json::Value = serde_json::from_slice(&forced.stdout).unwrap();
    assert_eq!(json["app"]["name"], name.as_str(), "{json}");
    assert_eq!(json["app"]["folder"], folder.as_str(), "{json}");
    assert_eq!(json["port"]["port"], 8080, "{json}");
    assert_eq!(json["port"]["source"], "expose", "{json}");
    assert_eq!(json["health"]["source"], "default", "{json}");
    assert_eq!(json["health"]["docker"], false, "{json}");
    assert_eq!(json["version"]["source"], "none", "{json}");
    assert_eq!(json["dockerfile"], "Dockerfile", "{json}");
    assert_eq!(json["warnings"], serde_json::json!([]), "{json}");
    assert_eq!(std::fs::read_to_string(&app.config).unwrap(), written);

    // And it deploys as written: built from the folder, gated, served.
    app.deploy("1");
    let (status, body) = app.get("/");
    assert_eq!(status, 200, "{body}");
    assert_eq!(identity(&body).1, "1");
}

#[test]
fn init_without_a_dockerfile_warns_and_still_writes_a_file_that_loads() {
    let dir = std::env::temp_dir().join(format!("cyan-test-init-empty-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = init(&dir, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "no Dockerfile here: `cyan deploy` builds the image from one",
        "port 8080 is a guess (there is no Dockerfile)",
    ] {
        assert!(
            stderr.contains(needle),
            "missing {needle:?} in:\n{}",
            text(&out)
        );
    }
    let config = dir.join("cyan.yaml");
    let loaded = cyan::config::Config::load(&config, &Default::default()).unwrap();
    assert_eq!(loaded.config.build.dockerfile, "Dockerfile");
    assert!(std::fs::read_to_string(&config)
        .unwrap()
        .contains("There is no Dockerfile here yet"));

    let missing = init(&dir.join("nope"), &[]);
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("is not a folder"),
        "{}",
        text(&missing)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn init_writes_no_second_config_beside_a_cyan_yml_and_force_replaces_a_link_not_its_target() {
    let dir = std::env::temp_dir().join(format!("cyan-test-init-yml-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Dockerfile"), "FROM scratch\nEXPOSE 3000\n").unwrap();
    // A project that has its config as cyan.yml: a cyan.yaml beside it
    // would be the one commands read, for an app of another name.
    let yml = "app: live-one\nimage: live-one\nport: 3000\n";
    std::fs::write(dir.join("cyan.yml"), yml).unwrap();
    let refused = init(&dir, &[]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains("cyan.yml is here already")
            && text(&refused).contains("pass --force to write cyan.yaml beside it"),
        "{}",
        text(&refused)
    );
    assert!(!dir.join("cyan.yaml").exists());

    // --force writes beside it; over a cyan.yaml that is a link, it
    // replaces the link, and the file it pointed to is left as it was.
    let elsewhere = dir.join("shared-notes.txt");
    std::fs::write(&elsewhere, "not a cyan config\n").unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.join("cyan.yaml")).unwrap();
    let forced = init(&dir, &["--force"]);
    assert!(forced.status.success(), "{}", text(&forced));
    assert_eq!(
        std::fs::read_to_string(&elsewhere).unwrap(),
        "not a cyan config\n"
    );
    let written = dir.join("cyan.yaml");
    assert!(!written.symlink_metadata().unwrap().is_symlink());
    assert_eq!(
        cyan::config::Config::load(&written, &Default::default())
            .unwrap()
            .config
            .port,
        3000
    );
    assert_eq!(std::fs::read_to_string(dir.join("cyan.yml")).unwrap(), yml);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
