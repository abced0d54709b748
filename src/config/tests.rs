use super::*;

const GOOD: &str = "\
app: web
image: 127.0.0.1:5000/web
port: 8080
replicas: 2
proxy: { host: web.localhost, listen: 127.0.0.1:8000 }
health:
  http: { path: /healthz, expect: 200-299 }
  interval: 500ms
  healthy_threshold: 3
verify: { duration: 30s, max_5xx_ratio: 0.01 }
keep: { hot: 1 }
";

fn err(text: &str) -> String {
    Config::parse(text, "cyan.yaml").unwrap_err().to_string()
}

#[test]
fn parses_the_design_sketch() {
    let c = Config::parse(GOOD, "cyan.yaml").unwrap();
    assert_eq!(c.app.as_str(), "web");
    assert_eq!(c.environment.as_str(), "production");
    assert_eq!(c.replicas.get(), 2);
    assert_eq!(c.health.interval, Dur::from_millis(500));
    assert_eq!(
        c.health.http.as_ref().unwrap().expect,
        StatusRange {
            low: 200,
            high: 299
        }
    );
    assert_eq!(c.image.registry(), Some("127.0.0.1:5000"));
    assert_eq!(c.route(), "web-production");
}

#[test]
fn the_url_is_one_a_script_can_open() {
    let served = |listen: &[&str], tls_listen: &[&str]| crate::proxy::api::Health {
        ok: true,
        pid: 1,
        version: String::new(),
        listen: listen.iter().map(|a| a.parse().unwrap()).collect(),
        tls_listen: tls_listen.iter().map(|a| a.parse().unwrap()).collect(),
    };
    let proxy = served(&["0.0.0.0:8000"], &["0.0.0.0:8443"]);
    let c = Config::parse(GOOD, "cyan.yaml").unwrap();
    assert_eq!(
        c.url(&proxy),
        "http://127.0.0.1:8000",
        "its own listen address"
    );
    let all = Config::parse(&GOOD.replace("127.0.0.1:8000", "0.0.0.0:9000"), "cyan.yaml").unwrap();
    assert_eq!(
        all.url(&proxy),
        "http://127.0.0.1:9000",
        "unspecified as loopback"
    );
    let v6 = Config::parse(
        &GOOD.replace("127.0.0.1:8000", "\"[::]:9000\""),
        "cyan.yaml",
    )
    .unwrap();
    assert_eq!(v6.url(&proxy), "http://[::1]:9000");
    let by_host =
        Config::parse(&GOOD.replace(", listen: 127.0.0.1:8000", ""), "cyan.yaml").unwrap();
    assert_eq!(
        by_host.url(&proxy),
        "http://web.localhost:8000",
        "a host-only route on the port the proxy serves hosts on"
    );
    assert_eq!(
        by_host.url(&served(&["0.0.0.0:80"], &[])),
        "http://web.localhost"
    );
    assert_eq!(by_host.url(&served(&[], &[])), "http://web.localhost");
    let tls = Config::parse(
        &GOOD.replace(
            ", listen: 127.0.0.1:8000",
            ", tls: { cert: c.pem, key: k.pem }",
        ),
        "cyan.yaml",
    )
    .unwrap();
    assert_eq!(
        tls.url(&proxy),
        "https://web.localhost:8443",
        "the TLS listener's port"
    );
    assert_eq!(
        tls.url(&served(&["0.0.0.0:80"], &["0.0.0.0:443"])),
        "https://web.localhost"
    );
    // A route under a path prefix: its host's `/` is another app's (or a
    // 404), on its own listen address too.
    let prefixed = |proxy: &str| {
        let text = GOOD.replace(
            "proxy: { host: web.localhost, listen: 127.0.0.1:8000 }",
            proxy,
        );
        Config::parse(&text, "cyan.yaml").unwrap()
    };
    assert_eq!(
        prefixed("proxy: { host: web.localhost, path_prefix: /api/ }").url(&proxy),
        "http://web.localhost:8000/api"
    );
    let both = prefixed(
        "proxy: { host: web.localhost, listen: 127.0.0.1:8000, path_prefix: /api, preview: { host: p.localhost } }",
    );
    assert_eq!(both.url(&proxy), "http://127.0.0.1:8000/api");
    let preview = both.proxy.preview.as_ref().unwrap();
    assert_eq!(
        preview.url(&proxy, both.proxy.path_prefix.as_deref()),
        "http://p.localhost:8000/api"
    );
}

#[test]
fn unknown_key_names_file_line_column_and_path() {
    let text = GOOD.replace("  healthy_threshold: 3", "  healthy_treshold: 3");
    let e = err(&text);
    assert!(
        e.starts_with("cyan.yaml:9:3: health.healthy_treshold: unknown field"),
        "{e}"
    );
}

#[test]
fn bad_values_name_their_key() {
    let e = err(&GOOD.replace("interval: 500ms", "interval: soon"));
    assert!(
        e.starts_with("cyan.yaml:8:13: health.interval: invalid duration \"soon\""),
        "{e}"
    );
    let e = err(&GOOD.replace("replicas: 2", "replicas: 0"));
    assert!(
        e.starts_with(
            "cyan.yaml:4:1: replicas: invalid value: integer `0`, expected a nonzero u32\n"
        ),
        "{e}"
    );
    let e = err(&GOOD.replace("hot: 1", "hot: 3"));
    assert!(
        e.contains("keep") && e.contains("at most 1 previous color"),
        "{e}"
    );
    let e = err(&GOOD.replace("expect: 200-299", "expect: 299-200"));
    assert!(
        e.contains("health.http") && e.contains("invalid status range"),
        "{e}"
    );
    let e = err(&GOOD.replace("127.0.0.1:5000/web", "Web:latest"));
    assert!(e.starts_with("cyan.yaml:2:8: image: invalid image"), "{e}");
}

#[test]
fn cross_field_checks_point_at_the_key() {
    let text = GOOD.replace(
        "proxy: { host: web.localhost, listen: 127.0.0.1:8000 }",
        "proxy: {}",
    );
    let e = err(&text);
    assert!(e.starts_with("cyan.yaml:5:1: proxy: set proxy.host"), "{e}");
    let e = err(&GOOD.replace("path: /healthz", "path: healthz"));
    assert!(
        e.contains("health.http.path") && e.contains("must start with '/'"),
        "{e}"
    );
}

#[test]
fn edge_keys_are_checked_where_they_are() {
    let text = GOOD.replace(
        "proxy: { host: web.localhost, listen: 127.0.0.1:8000 }",
        "proxy: { host: web.localhost, hosts: [www.web.localhost], trusted_proxies: [10.0.0.0/8, \"::1/128\"], drain_spread: 5s }",
    );
    let c = Config::parse(&text, "cyan.yaml").unwrap();
    let policy = c.proxy.policy();
    assert_eq!(policy.trusted_proxies.len(), 2);
    assert_eq!(policy.drain_spread_ms, Some(5000));
    let e = err(&GOOD.replace(
        "proxy: { host: web.localhost, listen: 127.0.0.1:8000 }",
        "proxy: { host: web.localhost, trusted_proxies: [10.0.0.0/33] }",
    ));
    assert!(
        e.starts_with("cyan.yaml:5:") && e.contains("trusted_proxies"),
        "{e}"
    );
    let e = err(&GOOD.replace(
        "proxy: { host: web.localhost, listen: 127.0.0.1:8000 }",
        "proxy: { listen: 127.0.0.1:8000, hosts: [a.localhost] }",
    ));
    assert!(
        e.contains("proxy.hosts") && e.contains("set proxy.host"),
        "{e}"
    );
}

#[test]
fn missing_required_key_is_named() {
    let e = err(&GOOD.replace("port: 8080\n", ""));
    assert!(e.contains("port"), "{e}");
}

#[test]
fn runtime_hash_changes_with_secrets_but_a_guess_cannot_be_tested() {
    let c = Config::parse(GOOD, "cyan.yaml").unwrap();
    let key = [7u8; 32];
    let none = Secrets::default();
    let old = Secrets::with(&[("DB_PASSWORD", "hunter2")], &key);
    let rotated = Secrets::with(&[("DB_PASSWORD", "hunter3")], &key);
    let (plain, a, b) = (
        c.runtime_hash(&none),
        c.runtime_hash(&old),
        c.runtime_hash(&rotated),
    );
    assert_ne!(a, b, "a rotated secret is a new release");
    assert_ne!(plain, a);
    assert_eq!(a, c.runtime_hash(&old), "stable for one key and value");
    assert_ne!(
        a,
        c.runtime_hash(&Secrets::with(&[("DB_PASSWORD", "hunter2")], &[8u8; 32])),
        "another host's key gives another hash"
    );
    // What a guesser who reads the label and cyan.yaml computes: the
    // unkeyed hash of the runtime with the guessed value, as cyan did before.
    let runtime = serde_json::json!({
        "port": c.port, "replicas": c.replicas, "env": c.env,
        "command": c.command, "init": c.init,
    });
    let guess = |v: &str| {
        let mut h = Sha256::new();
        h.update(runtime.to_string().as_bytes());
        h.update(format!("\0{}\0DB_PASSWORD\0{v}", c.app).as_bytes());
        let d = h.finalize();
        d.iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    assert_eq!(plain.len(), 12);
    assert_ne!(a, guess("hunter2"), "the right guess does not match");
    let mut h = Sha256::new();
    h.update(runtime.to_string().as_bytes());
    let unsalted: String = h
        .finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(plain, unsalted, "without secrets the hash is unchanged");
    assert!(!format!("{old:?}").contains("hunter2"), "{old:?}");
}

#[test]
fn the_hash_key_is_made_once_0600_and_reused() {
    use std::os::unix::fs::PermissionsExt;
    let home = std::env::temp_dir().join(format!("cyan-key-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    let names = ["CYAN_UNIT_TEST_SECRET".to_string()];
    // Only this test reads or writes this variable.
    let set = || std::env::set_var(&names[0], "s3cret-value");
    set();
    let first = Secrets::from_env(&names, &home).unwrap();
    assert!(
        std::env::var_os(&names[0]).is_none(),
        "taken out of the environment"
    );
    let key = home.join(secrets::KEY_FILE);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(std::fs::read(&key).unwrap().len(), 32);
    let c = Config::parse(GOOD, "cyan.yaml").unwrap();
    set();
    let again = Secrets::from_env(&names, &home).unwrap();
    assert_eq!(
        c.runtime_hash(&first),
        c.runtime_hash(&again),
        "stable across runs"
    );
    assert_eq!(
        first.expose_as_env().collect::<Vec<_>>(),
        ["CYAN_UNIT_TEST_SECRET=s3cret-value"]
    );
    std::fs::write(&key, b"short").unwrap();
    set();
    let e = Secrets::from_env(&names, &home).unwrap_err().to_string();
    assert!(e.contains("remove it") && !e.contains("s3cret"), "{e}");
    let e = Secrets::from_env(&["CYAN_UNIT_TEST_UNSET".into()], &home).unwrap_err();
    assert!(e.to_string().contains("CYAN_UNIT_TEST_UNSET"), "{e}");
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn image_moves_to_another_registry() {
    let moved = |image: &str, registry: &str| {
        ImageRepo::parse(image)
            .unwrap()
            .in_registry(registry)
            .map(|r| r.to_string())
    };
    assert_eq!(moved("acme/web", "ghcr.io").unwrap(), "ghcr.io/acme/web");
    assert_eq!(
        moved("127.0.0.1:5000/web", "ghcr.io/").unwrap(),
        "ghcr.io/web"
    );
    assert!(moved("web", "not a host").is_err());
    assert!(moved("web", "plainword").unwrap_err().contains("registry"));
}

#[test]
fn tls_is_files_or_acme_and_mistakes_point_at_it() {
    let proxy = "proxy: { host: web.localhost, listen: 127.0.0.1:8000 }";
    let with = |tls: &str| {
        GOOD.replace(
            proxy,
            &format!("proxy:\n  host: web.localhost\n  tls: {tls}"),
        )
    };
    let c = Config::parse(&with("acme"), "cyan.yaml").unwrap();
    assert!(matches!(c.proxy.tls, Some(ProxyTls::Acme)));
    let c = Config::parse(&with("{ cert: c.pem, key: k.pem }"), "cyan.yaml").unwrap();
    assert!(matches!(&c.proxy.tls, Some(ProxyTls::Files(f)) if f.cert == Path::new("c.pem")));
    let e = err(&with("acmee"));
    assert!(
        e.starts_with("cyan.yaml:7:3: proxy.tls: invalid value: string \"acmee\", expected `acme` or { cert: cert.pem, key: key.pem }"),
        "{e}"
    );
    let e = err(&with("{ cert: c.pem, kee: k.pem }"));
    assert!(
        e.starts_with("cyan.yaml:7:") && e.contains("unknown field `kee`"),
        "{e}"
    );
    let e = err(&GOOD.replace(proxy, "proxy:\n  listen: 127.0.0.1:8443\n  tls: acme"));
    assert!(
        e.starts_with("cyan.yaml:7:3: proxy.tls: tls: acme needs proxy.host"),
        "{e}"
    );
}

#[test]
fn health_docker_is_on_by_default_and_a_checked_bool() {
    assert!(Config::parse(GOOD, "cyan.yaml").unwrap().health.docker);
    let off = GOOD.replace(
        "  healthy_threshold: 3",
        "  healthy_threshold: 3\n  docker: false",
    );
    assert!(!Config::parse(&off, "cyan.yaml").unwrap().health.docker);
    // Kubernetes never runs an image's HEALTHCHECK: the key is accepted and ignored.
    let kube = off.replace("replicas: 2", "replicas: 2\nplatform: kubernetes");
    assert!(!Config::parse(&kube, "cyan.yaml").unwrap().health.docker);
    let e = err(&GOOD.replace(
        "  healthy_threshold: 3",
        "  healthy_threshold: 3\n  docker: maybe",
    ));
    assert!(e.starts_with("cyan.yaml:10:11: health.docker: "), "{e}");
}

#[test]
fn a_name_in_both_env_and_secrets_is_refused_at_its_env_key() {
    let text = format!("{GOOD}env:\n  DB_PASSWORD: hunter2\nsecrets: [DB_PASSWORD]\n");
    let e = err(&text);
    assert!(e.starts_with("cyan.yaml:13:3: env.DB_PASSWORD:"), "{e}");
    assert!(e.contains("both in env and in secrets"), "{e}");
}

#[test]
fn the_probe_is_http_tcp_or_command() {
    let c = Config::parse(GOOD, "cyan.yaml").unwrap();
    assert!(matches!(c.health.probe(), Probe::Http(h) if h.path == "/healthz"));
    let none = GOOD.replace("  http: { path: /healthz, expect: 200-299 }\n", "");
    let c = Config::parse(&none, "cyan.yaml").unwrap();
    assert!(
        matches!(c.health.probe(), Probe::Http(h) if h.path == "/"),
        "http, GET /, when no probe is given"
    );
    let tcp = GOOD.replace("  http: { path: /healthz, expect: 200-299 }", "  tcp: true");
    let c = Config::parse(&tcp, "cyan.yaml").unwrap();
    assert_eq!(c.health.probe(), Probe::Tcp);
    let off = GOOD.replace(
        "  http: { path: /healthz, expect: 200-299 }",
        "  tcp: false",
    );
    let c = Config::parse(&off, "cyan.yaml").unwrap();
    assert!(matches!(c.health.probe(), Probe::Http(_)));
    let command = GOOD.replace(
        "  http: { path: /healthz, expect: 200-299 }",
        "  command: [/app, check, \"--db url\"]",
    );
    let c = Config::parse(&command, "cyan.yaml").unwrap();
    assert_eq!(
        c.health.probe(),
        Probe::Command(&["/app".into(), "check".into(), "--db url".into()])
    );
    // A recorded release's health reads back as it was written.
    let json = serde_json::to_value(&c.health).unwrap();
    assert_eq!(json.get("http"), None, "{json}");
    let back: HealthConfig = serde_json::from_value(json).unwrap();
    assert_eq!(back.probe(), c.health.probe());
    let e = err(&GOOD.replace(
        "  http: { path: /healthz, expect: 200-299 }",
        "  tcp: yes please",
    ));
    assert!(e.starts_with("cyan.yaml:7:8: health.tcp: "), "{e}");
}

#[test]
fn two_probes_are_refused_at_the_second_key() {
    let e = err(&GOOD.replace(
        "  http: { path: /healthz, expect: 200-299 }",
        "  http: { path: /healthz, expect: 200-299 }\n  tcp: true",
    ));
    assert!(
        e.starts_with("cyan.yaml:8:3: health.tcp: health.http and health.tcp are both given"),
        "{e}"
    );
    assert!(
        e.contains("keep http (a GET), tcp (a connect) or command"),
        "{e}"
    );
    let e = err(&GOOD.replace(
        "  http: { path: /healthz, expect: 200-299 }",
        "  tcp: true\n  command: [/app, check]",
    ));
    assert!(
        e.starts_with(
            "cyan.yaml:8:3: health.command: health.tcp and health.command are both given"
        ),
        "{e}"
    );
    let e = err(&GOOD.replace(
        "  http: { path: /healthz, expect: 200-299 }",
        "  command: []",
    ));
    assert!(
        e.starts_with("cyan.yaml:7:3: health.command: the command is empty"),
        "{e}"
    );
    let e = err(&GOOD.replace(
        "  http: { path: /healthz, expect: 200-299 }",
        "  command: /app check",
    ));
    assert!(
        e.starts_with("cyan.yaml:7:3: health.command: invalid type: string \"/app check\", expected a list: the program and its arguments"),
        "{e}"
    );
}

#[test]
fn a_preview_is_a_host_or_listen_address_of_its_own_and_docker_only() {
    let with = |preview: &str| {
        GOOD.replace(
            "proxy: { host: web.localhost, listen: 127.0.0.1:8000 }",
            &format!(
                "proxy:\n  host: web.localhost\n  listen: 127.0.0.1:8000\n  preview: {preview}"
            ),
        )
    };
    let c = Config::parse(
        &with("{ host: preview.web.localhost, listen: 127.0.0.1:8001 }"),
        "cyan.yaml",
    )
    .unwrap();
    let p = c.proxy.preview.as_ref().unwrap();
    assert_eq!(p.spec().hosts, ["preview.web.localhost"]);
    let served = crate::proxy::api::Health {
        ok: true,
        pid: 1,
        version: String::new(),
        listen: vec!["0.0.0.0:8080".parse().unwrap()],
        tls_listen: Vec::new(),
    };
    assert_eq!(
        p.url(&served, None),
        "http://127.0.0.1:8001",
        "its own listen address"
    );
    let by_host = Config::parse(&with("{ host: preview.web.localhost }"), "cyan.yaml").unwrap();
    assert_eq!(
        by_host.proxy.preview.unwrap().url(&served, None),
        "http://preview.web.localhost:8080"
    );

    let e = err(&with("{}"));
    assert!(
        e.starts_with("cyan.yaml:8:3: proxy.preview: set preview.host, preview.listen or both"),
        "{e}"
    );
    let e = err(&with("{ host: Web.Localhost }"));
    assert!(
        e.starts_with("cyan.yaml:8:")
            && e.contains("proxy.preview.host")
            && e.contains("live release"),
        "{e}"
    );
    let e = err(&with("{ listen: 127.0.0.1:8000 }"));
    assert!(
        e.contains("proxy.preview.listen") && e.contains("is proxy.listen too"),
        "{e}"
    );
    let e = err(&with("{ hots: a.localhost }"));
    assert!(e.contains("unknown field `hots`"), "{e}");
    let kube = with("{ host: preview.web.localhost }")
        .replace("replicas: 2", "replicas: 2\nplatform: kubernetes");
    let e = err(&kube);
    assert!(
        e.contains("proxy.preview") && e.contains("kubernetes.preview_service"),
        "{e}"
    );
}

const STAGED: &str = "\
app: web
image: 127.0.0.1:5000/web
port: 8080
replicas: 2
proxy: { host: web.example.com, drain_timeout: 20s }
env:
  LOG: info
  REGION: eu
require_approval: true
environments:
  staging:
    replicas: 1
    proxy: { host: staging.web.example.com }
    env: { LOG: debug, FEATURE_X: \"1\" }
    require_approval: false
  production:
    verify: { duration: 30s, max_5xx_ratio: 0.01 }
";

fn pick(text: &str, environment: Option<&str>) -> Result<Config> {
    Config::parse_for(
        text,
        "cyan.yaml",
        &Pick {
            environment: environment.map(String::from),
            ..Pick::default()
        },
    )
}

#[test]
fn an_environment_is_merged_over_the_top_level_key_by_key() {
    let s = pick(STAGED, Some("staging")).unwrap();
    assert_eq!(s.environment.as_str(), "staging");
    assert_eq!(s.route(), "web-staging");
    assert_eq!(s.replicas.get(), 1);
    assert_eq!(s.proxy.host.as_deref(), Some("staging.web.example.com"));
    assert_eq!(
        s.proxy.drain_timeout,
        Dur::from_secs(20),
        "the rest of proxy stays"
    );
    let env: Vec<_> = s.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    assert_eq!(env, ["FEATURE_X=1", "LOG=debug", "REGION=eu"]);
    assert!(!s.require_approval);
    assert!(s.verify.is_none());

    let p = pick(STAGED, Some("production")).unwrap();
    assert_eq!(p.route(), "web-production");
    assert_eq!(p.replicas.get(), 2);
    assert_eq!(p.proxy.host.as_deref(), Some("web.example.com"));
    assert!(p.require_approval);
    assert_eq!(p.verify.as_ref().unwrap().duration, Dur::from_secs(30));
    assert_eq!(p.environment_names(), ["production", "staging"]);
}

#[test]
fn null_puts_a_key_back_to_its_default_and_lists_replace() {
    let text = STAGED.replace(
        "    require_approval: false\n",
        "    require_approval: null\n    secrets: [DB_URL]\n",
    );
    let text = text.replace(
        "require_approval: true\nenv",
        "require_approval: true\nsecrets: [A, B]\nenv",
    );
    let s = pick(&text, Some("staging")).unwrap();
    assert!(!s.require_approval, "null: the default, false");
    assert_eq!(s.secrets, ["DB_URL"]);
    assert_eq!(pick(&text, Some("production")).unwrap().secrets, ["A", "B"]);
}

#[test]
fn a_file_with_environments_asks_which_and_names_them() {
    let e = pick(STAGED, None).unwrap_err().to_string();
    assert!(
        e.contains("defines the environments production, staging"),
        "{e}"
    );
    assert!(e.contains("--environment"), "{e}");
    let e = pick(STAGED, Some("prod")).unwrap_err().to_string();
    assert_eq!(
        e,
        "cyan.yaml has no environment \"prod\"; it has production, staging"
    );
    // A file without environments: its own name is fine, another is not.
    assert!(pick(GOOD, Some("production")).is_ok());
    let e = pick(GOOD, Some("staging")).unwrap_err().to_string();
    assert!(e.contains("has no environments: section"), "{e}");
    // Build and push read what is shared: no name needed.
    let shared = Config::parse_for(
        STAGED,
        "cyan.yaml",
        &Pick {
            shared_only: true,
            ..Pick::default()
        },
    )
    .unwrap();
    assert_eq!(shared.image.tag("1"), "127.0.0.1:5000/web:1");
}

#[test]
fn errors_inside_an_environment_point_into_it() {
    // A bad value written in the environment: its own line.
    let text = STAGED.replace("    replicas: 1\n", "    replicas: 0\n");
    let e = pick(&text, Some("staging")).unwrap_err().to_string();
    assert!(
        e.starts_with("cyan.yaml:12:") && e.contains("environments.staging.replicas"),
        "{e}"
    );
    // Production does not read staging's mapping.
    assert!(pick(&text, Some("production")).is_ok());
    // A cross-key rule broken by the merge: at the environment's key.
    let text = STAGED.replace(
        "    proxy: { host: staging.web.example.com }\n",
        "    proxy: { host: null }\n",
    );
    let e = pick(&text, Some("staging")).unwrap_err().to_string();
    assert!(e.contains("environments.staging.proxy"), "{e}");
    // A rule broken at the top level, seen through one environment.
    let text = STAGED.replace("env:\n  LOG: info", "env:\n  \"1BAD\": x\n  LOG: info");
    let e = pick(&text, Some("production")).unwrap_err().to_string();
    assert!(e.contains("(in environment production)"), "{e}");
    // Unknown keys are refused inside environments too.
    let text = STAGED.replace("    replicas: 1\n", "    replica: 1\n");
    let e = pick(&text, Some("staging")).unwrap_err().to_string();
    assert!(
        e.contains("environments.staging") && e.contains("replica"),
        "{e}"
    );
}

#[test]
fn what_every_stage_shares_cannot_be_set_per_environment() {
    for key in [
        "app: api",
        "image: other/web",
        "build: { context: x }",
        "environment: x",
    ] {
        let text = STAGED.replace("    replicas: 1\n", &format!("    {key}\n"));
        let e = pick(&text, Some("production")).unwrap_err().to_string();
        let name = key.split(':').next().unwrap();
        assert!(
            e.starts_with("cyan.yaml:12:") && e.contains("is the same in every environment"),
            "{key}: {e}"
        );
        assert!(e.contains(&format!("environments.staging.{name}")), "{e}");
    }
    let e = pick(
        &STAGED.replace("  production:\n", "  production: 3\n"),
        Some("staging"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("an environment is a mapping"), "{e}");
}

#[test]
fn a_branch_gets_its_own_environment_host_and_one_replica() {
    let b = pick(STAGED, Some("staging"))
        .unwrap()
        .for_branch("feature-login")
        .unwrap();
    assert_eq!(b.route(), "web-staging--feature-login");
    assert_eq!(
        b.proxy.host.as_deref(),
        Some("feature-login.staging.web.example.com")
    );
    assert_eq!(b.replicas.get(), 1);
    assert!(!b.require_approval);
    // Long names are kept whole: two branches never share an environment.
    let long = pick(STAGED, Some("staging"))
        .unwrap()
        .for_branch("a-very-long-feature-branch-name-number-1")
        .unwrap();
    assert_eq!(
        long.route(),
        "web-staging--a-very-long-feature-branch-name-number-1"
    );
    // A branch named after another stage's suffix never becomes that stage.
    let text = STAGED.replace("  production:\n", "  staging--eu: {}\n  production:\n");
    let e = pick(&text, Some("staging"))
        .unwrap()
        .for_branch("eu")
        .unwrap_err();
    assert!(e.to_string().contains("never takes over a stage"), "{e}");
    // No `--` in a branch: it parts the environment from the branch.
    for bad in ["Feature", "-x", "x-", "a/b", "", "x--y"] {
        let e = pick(STAGED, Some("staging"))
            .unwrap()
            .for_branch(bad)
            .unwrap_err();
        assert!(e.to_string().contains("must be a DNS label"), "{bad}: {e}");
    }
}

#[test]
fn an_environments_values_are_read_as_written_like_the_top_levels() {
    let values = [
        "X: 1.10",
        "Y: yes",
        "Z: 0x10",
        "O: 0o17",
        "F: 1e3",
        "BIG: 12345678901234567890123",
        "Q: \"007\"",
        "T: 'it''s'",
    ];
    let indented = |n: usize| {
        values
            .iter()
            .map(|v| format!("{}{v}\n", " ".repeat(n)))
            .collect::<String>()
    };
    let top = STAGED.replace("  LOG: info\n", &indented(2));
    let staged = STAGED.replace(
        "    env: { LOG: debug, FEATURE_X: \"1\" }\n",
        &format!("    env:\n{}", indented(6)),
    );
    let written = |c: &Config| {
        ["X", "Y", "Z", "O", "F", "BIG", "Q", "T"]
            .map(|k| c.env.get(k).cloned().unwrap_or_default())
    };
    let expected = [
        "1.10",
        "yes",
        "0x10",
        "0o17",
        "1e3",
        "12345678901234567890123",
        "007",
        "it's",
    ];
    assert_eq!(written(&pick(&top, Some("production")).unwrap()), expected);
    assert_eq!(written(&pick(&top, Some("staging")).unwrap()), expected);
    assert_eq!(written(&pick(&staged, Some("staging")).unwrap()), expected);
    // `.inf` is a scalar like another: as written for a string, and one
    // stage's value never stops another's commands.
    let text = STAGED.replace(
        "  production:\n",
        "  lab:\n    env: { A: .inf, B: .NaN }\n  production:\n",
    );
    let lab = pick(&text, Some("lab")).unwrap();
    assert_eq!(lab.env["A"], ".inf");
    assert_eq!(lab.env["B"], ".NaN");
    assert!(pick(&text, Some("staging")).is_ok());
    // Anchors and aliases, and a block scalar, keep their values too.
    let text = STAGED.replace(
        "    replicas: 1\n",
        "    replicas: &one 1\n    command:\n      - sh\n      - |\n        echo a\n        echo b\n    stop_timeout: 5s\n",
    );
    let s = pick(&text, Some("staging")).unwrap();
    assert_eq!(s.replicas.get(), 1);
    assert_eq!(
        s.command.unwrap(),
        ["sh".to_string(), "echo a\necho b\n".to_string()]
    );
}

#[test]
fn a_containers_output_loses_every_secret_value_longest_first() {
    let s = Secrets::with(
        &[
            ("KEY", "-----BEGIN KEY-----\nabc\tdef\n-----END KEY-----"),
            ("DB", "hunter2"),
            ("DB_URL", "postgres://app:hunter2@db"),
            ("PIN", "123"),
        ],
        b"k",
    );
    let printed = "key: -----BEGIN KEY-----\nabc\tdef\n-----END KEY-----\nurl postgres://app:hunter2@db, pw hunter2, pin 123";
    assert_eq!(
        s.redact(printed),
        "key: [redacted KEY]\nurl [redacted DB_URL], pw [redacted DB], pin 123"
    );
}

#[test]
fn verify_needs_at_least_one_request_to_judge() {
    let e = err(&GOOD.replace(
        "max_5xx_ratio: 0.01",
        "max_5xx_ratio: 0.01, min_requests: 0",
    ));
    assert!(
        e.starts_with("cyan.yaml:10:") && e.contains("verify.min_requests: must be at least 1"),
        "{e}"
    );
}

#[test]
fn hosts_are_ssh_urls_named_once_and_mistakes_point_at_them() {
    let fleet = format!(
        "{GOOD}hosts:\n  - ssh://deploy@10.0.0.11\n  - name: web2\n    url: ssh://deploy@10.0.0.12:2222\nfleet: {{ strategy: rolling, drain_wait: 2s }}\n"
    );
    let c = Config::parse(&fleet, "cyan.yaml").unwrap();
    let names: Vec<&str> = c.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["10.0.0.11", "web2"]);
    assert_eq!(c.hosts[1].url.port, Some(2222));
    assert_eq!(c.fleet.strategy, Strategy::Rolling);
    assert_eq!(c.fleet.batch.get(), 1);
    assert_eq!(c.fleet.home, PathBuf::from("/var/lib/cyan"));

    let e = err(&format!(
        "{GOOD}hosts:\n  - ssh://a\n  - tcp://10.0.0.5:2376\n"
    ));
    assert!(
        e.contains("cyan.yaml:14:5: hosts: ") && e.contains("only ssh://"),
        "{e}"
    );
    let e = err(&format!(
        "{GOOD}hosts:\n  - ssh://a@web1\n  - ssh://b@web1\n"
    ));
    assert!(
        e.contains("hosts") && e.contains("two hosts are called \"web1\""),
        "{e}"
    );
    let e = err(&format!(
        "{GOOD}hosts:\n  - name: 'a b'\n    url: ssh://web1\n"
    ));
    assert!(e.contains("invalid host name"), "{e}");
    let e = err(&format!(
        "{GOOD}hosts: [ssh://web1]\nfleet: {{ strategy: sideways }}\n"
    ));
    assert!(e.contains("strategy") && e.contains("cyan.yaml:13"), "{e}");
    let e = err(&format!(
        "{GOOD}hosts: [ssh://web1]\nhooks:\n  post_switch: {{ run: [\"true\"] }}\n"
    ));
    assert!(
        e.contains("hooks") && e.contains("refused rather than skipped"),
        "{e}"
    );
    let e = err(&format!("{GOOD}hosts:\n  - ssh://root:hunter22@web1\n"));
    assert!(e.contains("no password") && !e.contains("hunter22"), "{e}");
    let e = err(&format!("{GOOD}hosts:\n  - ssh://root@fd00::2\n"));
    assert!(e.contains("in brackets"), "{e}");
    let v6 = Config::parse(
        &format!("{GOOD}hosts: ['ssh://root@[fd00::2]']\n"),
        "cyan.yaml",
    )
    .unwrap();
    assert_eq!(v6.hosts[0].name, "fd00::2");
    let e = err(&format!(
        "{GOOD}hosts:\n  - ssh://root@web1\n  - {{ name: again, url: 'ssh://root@web1' }}\n"
    ));
    assert!(e.contains("same host"), "{e}");
    let e = err(&format!(
        "{GOOD}hosts: [ssh://web1]\nfleet: {{ home: relative }}\n"
    ));
    assert!(e.contains("fleet.home") && e.contains("absolute"), "{e}");
    let e = err(&format!("{GOOD}fleet: {{ strategy: rolling }}\n"));
    assert!(e.contains("there are none"), "{e}");
    assert_eq!(
        c.fleet.ssh.connect_timeout, 10,
        "the default without fleet.ssh"
    );
    let kube = GOOD.replace("app: web", "app: web\nplatform: kubernetes");
    let e = err(&format!("{kube}hosts: [ssh://web1]\n"));
    assert!(e.contains("hosts") && e.contains("scheduler"), "{e}");
}
