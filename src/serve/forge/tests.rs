use std::path::{Path, PathBuf};

use hyper::http::{HeaderMap, HeaderName, HeaderValue};

use super::*;

/// The secret every fixture is signed with (tests/fixtures/forge/README.md).
const SECRET: &[u8] = b"cyan-fixture-secret";
const A: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";
const B: &str = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c";
const Z: &str = "0000000000000000000000000000000000000000";

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/forge")
}

/// A fixture's header lines and body (the README's format).
fn split(text: &[u8]) -> (Vec<(String, String)>, Vec<u8>) {
    let at = text
        .windows(2)
        .position(|w| w == b"\n\n")
        .expect("a blank line ends the headers");
    let head = std::str::from_utf8(&text[..at]).expect("headers are text");
    let lines = head
        .lines()
        .map(|l| {
            let (name, value) = l.split_once(": ").expect("Name: value");
            (name.to_string(), value.to_string())
        })
        .collect();
    (lines, text[at + 2..].to_vec())
}

fn header_map(lines: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in lines {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    map
}

fn fixtures() -> Vec<(String, HeaderMap, Vec<u8>)> {
    let mut names: Vec<_> = std::fs::read_dir(fixture_dir())
        .expect("fixture dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".http"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let text = std::fs::read(fixture_dir().join(&n)).expect("fixture");
            let (lines, body) = split(&text);
            (n, header_map(&lines), body)
        })
        .collect()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let lines: Vec<(String, String)> = pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    header_map(&lines)
}

fn sign256(secret: &[u8], data: &[u8]) -> String {
    hex(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), data).as_ref())
}

/// Rewrites every fixture's signature headers for [`SECRET`], over what
/// its forge signs (this module's table); nothing else changes.
#[test]
#[ignore = "rewrites tests/fixtures/forge; run after editing a body"]
fn sign_fixtures() {
    for (name, _, _) in fixtures() {
        let path = fixture_dir().join(&name);
        let (lines, body) = split(&std::fs::read(&path).expect("fixture"));
        let map = header_map(&lines);
        let forge = identify(&map).expect("a forge's delivery");
        let signed = match forge {
            Forge::Gitea | Forge::Gogs => payload_json(&map, &body).expect("payload").into_owned(),
            _ => body.clone(),
        };
        let sha1 = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, SECRET),
            &signed,
        );
        let mut out = String::new();
        for (n, v) in lines {
            let v = match (forge, n.to_ascii_lowercase().as_str()) {
                (_, "x-hub-signature-256") => format!("sha256={}", sign256(SECRET, &signed)),
                (Forge::Bitbucket, "x-hub-signature") => {
                    format!("sha256={}", sign256(SECRET, &signed))
                }
                (_, "x-hub-signature") => format!("sha1={}", hex(sha1.as_ref())),
                (_, "x-gitea-signature" | "x-forgejo-signature" | "x-gogs-signature") => {
                    sign256(SECRET, &signed)
                }
                (_, "x-gitlab-token") => String::from_utf8(SECRET.to_vec()).expect("text"),
                _ => v,
            };
            out.push_str(&format!("{n}: {v}\n"));
        }
        let mut text = out.into_bytes();
        text.push(b'\n');
        text.extend_from_slice(&body);
        std::fs::write(&path, text).expect("write fixture");
    }
}

#[test]
fn every_fixture_verifies_with_the_readme_secret_and_no_other() {
    let all = fixtures();
    assert_eq!(
        all.len(),
        14,
        "{:?}",
        all.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    for (name, map, body) in all {
        let forge = identify(&map).unwrap_or_else(|| panic!("{name}: no forge"));
        verify(forge, &map, &body, SECRET).unwrap_or_else(|e| panic!("{name}: {e}"));
        let err = verify(forge, &map, &body, b"another-secret").expect_err(&name);
        assert!(matches!(err, Refusal::Mismatch { .. }), "{name}: {err}");
        let mut tampered = body.clone();
        let last = tampered.len() - 2;
        tampered[last] ^= 0x01;
        // GitLab's token proves who sent a delivery, not what it says.
        let tampered_passes = forge == Forge::GitLab;
        assert_eq!(
            verify(forge, &map, &tampered, SECRET).is_ok(),
            tampered_passes,
            "{name}"
        );
    }
}

/// `(forge, id, pushes as "ref before→after +created -deleted", repo, clone URLs)`.
type Summary = (Forge, String, String, Option<String>, Vec<String>);

fn summary(d: &Delivery) -> Summary {
    let event = match &d.event {
        Event::Ping => "ping".to_string(),
        Event::Other(n) => format!("other {n}"),
        Event::Push(pushes) => pushes
            .iter()
            .map(|p| {
                let short = |h: &str| h.get(..8).unwrap_or(h).to_string();
                format!(
                    "{} {}→{}{}{}",
                    p.git_ref,
                    short(&p.before),
                    short(&p.after),
                    if p.created { " +created" } else { "" },
                    if p.deleted { " -deleted" } else { "" }
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
    };
    (
        d.forge,
        d.id.clone(),
        event,
        d.repo.as_ref().map(|r| r.full_name.clone()),
        d.repo
            .as_ref()
            .map(|r| r.clone_urls.clone())
            .unwrap_or_default(),
    )
}

#[test]
fn every_fixture_reads_as_its_forge_sent_it() {
    let gh = || {
        vec![
            "https://github.com/acme/web.git".to_string(),
            "git@github.com:acme/web.git".to_string(),
        ]
    };
    let gitea = || {
        vec![
            "https://git.acme.example/acme/web.git".to_string(),
            "git@git.acme.example:acme/web.git".to_string(),
        ]
    };
    let gitlab = || {
        vec![
            "https://gitlab.acme.example/acme/web.git".to_string(),
            "git@gitlab.acme.example:acme/web.git".to_string(),
        ]
    };
    let main = "refs/heads/main 6113728f→0d1a26e6";
    let web = || Some("acme/web".to_string());
    let table: Vec<(&str, Summary)> = vec![
        (
            "bitbucket-push.http",
            (
                Forge::Bitbucket,
                "39f4c2d5-e6f7-4819-c42b-3c5d6e7f8091".into(),
                format!("{main}; refs/heads/feature/old-nav 6113728f→00000000 -deleted"),
                web(),
                vec!["https://bitbucket.org/acme/web.git".into()],
            ),
        ),
        (
            "bitbucket-server-push.http",
            (
                Forge::Bitbucket,
                "4a05d3e6-f708-492a-d53c-4d6e7f8091a2".into(),
                main.into(),
                Some("ACME/web".into()),
                vec![
                    "https://bitbucket.acme.example/scm/acme/web.git".into(),
                    "ssh://git@bitbucket.acme.example:7999/acme/web.git".into(),
                ],
            ),
        ),
        (
            "forgejo-delete.http",
            (
                Forge::Gitea,
                "a06b3a4c-5d7e-4f80-9ba2-a3c4d5e6f708".into(),
                "refs/heads/feature/login →00000000 -deleted".into(),
                web(),
                gitea(),
            ),
        ),
        (
            "gitea-push-form.http",
            (
                Forge::Gitea,
                "9e5a2f3b-4c6d-4e7f-8a91-92b3c4d5e6f7".into(),
                main.into(),
                web(),
                gitea(),
            ),
        ),
        (
            "gitea-push.http",
            (
                Forge::Gitea,
                "8d4f1e2a-3b5c-4d6e-9f70-81a2b3c4d5e6".into(),
                main.into(),
                web(),
                gitea(),
            ),
        ),
        (
            "github-ping.http",
            (
                Forge::GitHub,
                "0b1d4f60-087a-11ef-8a2f-0e1f2d3c4b5a".into(),
                "ping".into(),
                web(),
                gh(),
            ),
        ),
        (
            "github-push-delete.http",
            (
                Forge::GitHub,
                "3c9e0a10-087b-11ef-9c1d-6a7b8c9d0e1f".into(),
                "refs/heads/feature/login 0d1a26e6→00000000 -deleted".into(),
                web(),
                gh(),
            ),
        ),
        (
            "github-push-form.http",
            (
                Forge::GitHub,
                "2a6c0b90-087a-11ef-8f6e-b2d1f0e0e8a4".into(),
                main.into(),
                web(),
                gh(),
            ),
        ),
        (
            "github-push.http",
            (
                Forge::GitHub,
                "1f8e3e30-087a-11ef-9b3e-5d0e6c1e6a0b".into(),
                main.into(),
                web(),
                gh(),
            ),
        ),
        (
            "gitlab-push-delete.http",
            (
                Forge::GitLab,
                "28e3b1c4-d5e6-4708-b31a-2b4c5d6e7f80".into(),
                "refs/heads/feature/login 0d1a26e6→00000000 -deleted".into(),
                web(),
                gitlab(),
            ),
        ),
        (
            "gitlab-push.http",
            (
                Forge::GitLab,
                "e4af7e80-91a2-43c4-9fe6-e708192a3b4c".into(),
                main.into(),
                web(),
                gitlab(),
            ),
        ),
        (
            "gitlab-tag-push.http",
            (
                Forge::GitLab,
                "06c19fa2-b3c4-45e6-91f8-092a3b4c5d6e".into(),
                "refs/tags/v1.2.0 00000000→5e2f0c5b +created".into(),
                web(),
                gitlab(),
            ),
        ),
        (
            "gogs-push-form.http",
            (
                Forge::Gogs,
                "c28d5c6e-7f90-41a2-9dc4-c5e6f708192a".into(),
                main.into(),
                web(),
                gitea(),
            ),
        ),
        (
            "gogs-push.http",
            (
                Forge::Gogs,
                "b17c4b5d-6e8f-4091-8cb3-b4d5e6f70819".into(),
                main.into(),
                web(),
                gitea(),
            ),
        ),
    ];
    let all = fixtures();
    assert_eq!(all.len(), table.len());
    for ((name, map, body), (want_name, want)) in all.iter().zip(table) {
        assert_eq!(name, want_name);
        let forge = identify(map).expect("forge");
        let d = parse(forge, map, body).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(summary(&d), want, "{name}");
    }
}

#[test]
fn github_s_documented_test_vector_verifies() {
    // https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries#testing-the-webhook-payload-validation
    let secret = b"It's a Secret to Everybody";
    let sig = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let ok = headers(&[("X-Hub-Signature-256", &format!("sha256={sig}"))]);
    assert_eq!(verify(Forge::GitHub, &ok, b"Hello, World!", secret), Ok(()));
    let upper = headers(&[(
        "X-Hub-Signature-256",
        &format!("sha256={}", sig.to_uppercase()),
    )]);
    assert_eq!(
        verify(Forge::GitHub, &upper, b"Hello, World!", secret),
        Ok(())
    );
    assert_eq!(
        verify(Forge::GitHub, &ok, b"Hello, World?", secret),
        Err(Refusal::Mismatch {
            header: "X-Hub-Signature-256"
        })
    );
    // Bitbucket signs the same way in its own header.
    let bb = headers(&[("X-Hub-Signature", &format!("sha256={sig}"))]);
    assert_eq!(
        verify(Forge::Bitbucket, &bb, b"Hello, World!", secret),
        Ok(())
    );
}

#[test]
fn a_signature_header_that_is_absent_or_malformed_is_refused_by_name() {
    let body = b"{}";
    let missing = |h: &'static str| Err(Refusal::Missing { header: h });
    assert_eq!(
        verify(Forge::GitHub, &HeaderMap::new(), body, SECRET),
        missing("X-Hub-Signature-256")
    );
    assert_eq!(
        verify(Forge::Bitbucket, &HeaderMap::new(), body, SECRET),
        missing("X-Hub-Signature")
    );
    assert_eq!(
        verify(Forge::Gogs, &HeaderMap::new(), body, SECRET),
        missing("X-Gogs-Signature")
    );
    assert_eq!(
        verify(Forge::GitLab, &HeaderMap::new(), body, SECRET),
        missing("X-Gitlab-Token")
    );
    assert_eq!(
        verify(Forge::Gitea, &HeaderMap::new(), body, SECRET),
        missing("X-Gitea-Signature or X-Forgejo-Signature")
    );
    // A Gitea hook without a secret sends the header empty.
    let empty = headers(&[("X-Gitea-Signature", "")]);
    assert_eq!(
        verify(Forge::Gitea, &empty, body, SECRET),
        missing("X-Gitea-Signature or X-Forgejo-Signature")
    );
    let good = sign256(SECRET, body);
    for bad in [
        format!("sha1={good}"),
        good.clone(),
        format!("sha256={}", &good[..62]),
        format!("sha256={good}00"),
        format!("sha256={}zz", &good[..62]),
        format!("SHA256={good}"),
    ] {
        let h = headers(&[("X-Hub-Signature-256", &bad)]);
        assert!(
            matches!(
                verify(Forge::GitHub, &h, body, SECRET),
                Err(Refusal::Malformed { .. })
            ),
            "{bad}"
        );
    }
    let h = headers(&[("X-Gogs-Signature", &format!("sha256={good}"))]);
    assert_eq!(
        verify(Forge::Gogs, &h, body, SECRET),
        Err(Refusal::Malformed {
            header: "X-Gogs-Signature",
            expected: "64 hex digits"
        })
    );
    // Forgejo's own header is enough.
    let h = headers(&[("X-Forgejo-Signature", &good)]);
    assert_eq!(verify(Forge::Gitea, &h, body, SECRET), Ok(()));
}

#[test]
fn gitlab_s_token_must_be_the_secret_exactly() {
    let token = |t: &str| headers(&[("X-Gitlab-Token", t)]);
    assert_eq!(
        verify(Forge::GitLab, &token("cyan-fixture-secret"), b"", SECRET),
        Ok(())
    );
    for wrong in [
        "cyan-fixture-secre",
        "cyan-fixture-secret ",
        "cyan-fixture-secretx",
        "CYAN-FIXTURE-SECRET",
        "x",
    ] {
        assert_eq!(
            verify(Forge::GitLab, &token(wrong), b"", SECRET),
            Err(Refusal::Mismatch {
                header: "X-Gitlab-Token"
            }),
            "{wrong}"
        );
    }
}

#[test]
fn an_empty_secret_verifies_nothing() {
    let h = headers(&[(
        "X-Hub-Signature-256",
        &format!("sha256={}", sign256(b"", b"x")),
    )]);
    assert_eq!(verify(Forge::GitHub, &h, b"x", b""), Err(Refusal::NoSecret));
    let h = headers(&[("X-Gitlab-Token", "")]);
    assert_eq!(verify(Forge::GitLab, &h, b"x", b""), Err(Refusal::NoSecret));
}

#[test]
fn a_refusal_never_says_the_secret_the_body_or_the_header_s_value() {
    let secret = b"s3cret-value-42";
    let body = b"{\"ref\":\"body-marker\"}";
    let value = "sha256=00000000000000000000000000000000000000000000000000000000000000ff";
    let cases = [
        (Forge::GitHub, headers(&[("X-Hub-Signature-256", value)])),
        (
            Forge::GitHub,
            headers(&[("X-Hub-Signature-256", "sha256=value-marker")]),
        ),
        (
            Forge::GitLab,
            headers(&[("X-Gitlab-Token", "value-marker")]),
        ),
        (
            Forge::Gogs,
            headers(&[("X-Gogs-Signature", "value-marker")]),
        ),
        (Forge::Bitbucket, HeaderMap::new()),
        (
            Forge::Gitea,
            headers(&[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("X-Gitea-Signature", &value[7..]),
            ]),
        ),
    ];
    for (forge, h) in cases {
        let text = verify(forge, &h, body, secret)
            .expect_err("refused")
            .to_string();
        for leak in ["s3cret", "body-marker", "value-marker", "00000000ff"] {
            assert!(!text.contains(leak), "{forge}: {text}");
        }
    }
    assert_eq!(
        verify(
            Forge::Gitea,
            &headers(&[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("X-Gitea-Signature", &value[7..]),
            ]),
            body,
            secret
        ),
        Err(Refusal::NoPayload)
    );
}

#[test]
fn the_most_specific_headers_name_the_forge() {
    let forge = |pairs: &[(&str, &str)]| identify(&headers(pairs));
    // What each sends (their sources): Forgejo all four families, Gitea
    // three, Gogs GitHub's too.
    assert_eq!(
        forge(&[
            ("X-Forgejo-Event", "push"),
            ("X-Gitea-Event", "push"),
            ("X-Gogs-Event", "push"),
            ("X-GitHub-Event", "push")
        ]),
        Some(Forge::Gitea)
    );
    assert_eq!(
        forge(&[
            ("X-Gitea-Event", "push"),
            ("X-Gogs-Event", "push"),
            ("X-GitHub-Event", "push")
        ]),
        Some(Forge::Gitea)
    );
    assert_eq!(
        forge(&[("X-Gogs-Event", "push"), ("X-Github-Event", "push")]),
        Some(Forge::Gogs)
    );
    assert_eq!(forge(&[("X-GitHub-Event", "push")]), Some(Forge::GitHub));
    assert_eq!(
        forge(&[("X-Gitlab-Event", "Push Hook")]),
        Some(Forge::GitLab)
    );
    assert_eq!(
        forge(&[("X-Event-Key", "repo:push")]),
        Some(Forge::Bitbucket)
    );
    assert_eq!(forge(&[("X-Hub-Signature-256", "sha256=00")]), None);
    assert_eq!(forge(&[]), None);
}

#[test]
fn forges_are_named_in_lowercase_and_forgejo_is_gitea() {
    for f in Forge::ALL {
        assert_eq!(f.to_string().parse::<Forge>(), Ok(f));
        let json = serde_json::to_string(&f).expect("serializes");
        assert_eq!(json, format!("\"{f}\""));
        assert_eq!(serde_json::from_str::<Forge>(&json).expect("reads"), f);
    }
    assert_eq!("forgejo".parse::<Forge>(), Ok(Forge::Gitea));
    assert_eq!(
        serde_json::from_str::<Forge>("\"forgejo\"").expect("reads"),
        Forge::Gitea
    );
    let err = "GitHub".parse::<Forge>().expect_err("case matters");
    assert!(
        err.contains("github, gitea (or forgejo), gogs, gitlab or bitbucket"),
        "{err}"
    );
}

#[test]
fn a_form_is_read_as_the_whatwg_form_parser_reads_it() {
    let form = headers(&[(
        "Content-Type",
        "Application/X-WWW-Form-Urlencoded; charset=utf-8",
    )]);
    let read = |body: &[u8]| payload_json(&form, body).map(|c| c.into_owned());
    assert_eq!(
        read(b"a=1&payload=%7B%22k%22%3A+%22v%22%7D&payload=2").as_deref(),
        Some(&b"{\"k\": \"v\"}"[..])
    );
    assert_eq!(read(b"pay%6Coad=x").as_deref(), Some(&b"x"[..]));
    assert_eq!(read(b"payload=100%&x").as_deref(), Some(&b"100%"[..]));
    assert_eq!(read(b"payload=%4").as_deref(), Some(&b"%4"[..]));
    assert_eq!(read(b"payload=%e9%ZZ").as_deref(), Some(&b"\xe9%ZZ"[..]));
    assert_eq!(read(b"payload").as_deref(), Some(&b""[..]));
    assert_eq!(read(b"other=1"), None);
    assert_eq!(read(b""), None);
    let json = headers(&[("Content-Type", "application/json")]);
    assert_eq!(
        payload_json(&json, b"payload=1").as_deref(),
        Some(&b"payload=1"[..])
    );
    assert_eq!(
        payload_json(&HeaderMap::new(), b"{}").as_deref(),
        Some(&b"{}"[..])
    );
}

#[test]
fn gitea_and_gogs_sign_the_json_of_a_form_and_github_the_form() {
    let json = br#"{"ref":"refs/heads/main"}"#;
    let form = format!("payload={}", "%7B%22ref%22%3A%22refs%2Fheads%2Fmain%22%7D");
    let over_json = sign256(SECRET, json);
    let over_form = sign256(SECRET, form.as_bytes());
    let ctype = ("Content-Type", "application/x-www-form-urlencoded");
    for (forge, header) in [
        (Forge::Gitea, "X-Gitea-Signature"),
        (Forge::Gogs, "X-Gogs-Signature"),
    ] {
        let ok = headers(&[ctype, (header, &over_json)]);
        assert_eq!(
            verify(forge, &ok, form.as_bytes(), SECRET),
            Ok(()),
            "{forge}"
        );
        let wrong = headers(&[ctype, (header, &over_form)]);
        assert!(
            verify(forge, &wrong, form.as_bytes(), SECRET).is_err(),
            "{forge}"
        );
    }
    let ok = headers(&[
        ctype,
        ("X-Hub-Signature-256", &format!("sha256={over_form}")),
    ]);
    assert_eq!(verify(Forge::GitHub, &ok, form.as_bytes(), SECRET), Ok(()));
    let wrong = headers(&[
        ctype,
        ("X-Hub-Signature-256", &format!("sha256={over_json}")),
    ]);
    assert!(verify(Forge::GitHub, &wrong, form.as_bytes(), SECRET).is_err());
}

fn hub_push_json(git_ref: &str, before: &str, after: &str) -> String {
    format!(
        r#"{{"ref":"{git_ref}","before":"{before}","after":"{after}","repository":{{"full_name":"acme/web","clone_url":null}}}}"#
    )
}

#[test]
fn a_push_without_created_or_deleted_says_so_by_its_zeros() {
    let h = headers(&[("X-Gogs-Event", "push")]);
    let d = parse(
        Forge::Gogs,
        &h,
        hub_push_json("refs/heads/x", Z, B).as_bytes(),
    )
    .expect("reads");
    assert_eq!(summary(&d).2, "refs/heads/x 00000000→0d1a26e6 +created");
    assert_eq!(d.repo.expect("repo").clone_urls, Vec::<String>::new());
    let d = parse(
        Forge::Gogs,
        &h,
        hub_push_json("refs/heads/x", B, Z).as_bytes(),
    )
    .expect("reads");
    assert_eq!(summary(&d).2, "refs/heads/x 0d1a26e6→00000000 -deleted");
    // SHA-256 repositories: sixty-four zeros.
    let z64 = "0".repeat(64);
    let d = parse(
        Forge::Gogs,
        &h,
        hub_push_json("refs/heads/x", &"a".repeat(64), &z64).as_bytes(),
    )
    .expect("reads");
    assert!(matches!(&d.event, Event::Push(p) if p[0].deleted && !p[0].created));
}

#[test]
fn a_gitea_or_gogs_delete_event_is_a_deletion_of_the_full_ref() {
    let repo = r#""repository":{"full_name":"acme/web"}"#;
    for (forge, event, body, want) in [
        (
            Forge::Gitea,
            "X-Gitea-Event",
            format!(r#"{{"ref":"feature/a","ref_type":"branch",{repo}}}"#),
            "refs/heads/feature/a",
        ),
        (
            Forge::Gitea,
            "X-Forgejo-Event",
            format!(r#"{{"ref":"refs/heads/feature/a","ref_type":"branch",{repo}}}"#),
            "refs/heads/feature/a",
        ),
        (
            Forge::Gogs,
            "X-Gogs-Event",
            format!(r#"{{"ref":"v1","ref_type":"tag",{repo}}}"#),
            "refs/tags/v1",
        ),
    ] {
        let d = parse(forge, &headers(&[(event, "delete")]), body.as_bytes()).expect("reads");
        let Event::Push(pushes) = d.event else {
            panic!("a push")
        };
        assert_eq!(
            pushes,
            vec![Push {
                git_ref: want.into(),
                before: String::new(),
                after: Z.into(),
                deleted: true,
                created: false
            }]
        );
    }
    let err = parse(
        Forge::Gitea,
        &headers(&[("X-Gitea-Event", "delete")]),
        format!(r#"{{"ref":"x","ref_type":"note",{repo}}}"#).as_bytes(),
    )
    .expect_err("unknown ref_type");
    assert!(err.to_string().contains("ref_type \"note\""), "{err}");
    // GitHub deletes by a push; its `delete` event is another event.
    let d = parse(
        Forge::GitHub,
        &headers(&[("X-GitHub-Event", "delete")]),
        b"{}",
    )
    .expect("reads");
    assert_eq!(d.event, Event::Other("delete".into()));
}

#[test]
fn gitlab_system_hooks_are_pushes_when_they_say_so() {
    let h = headers(&[
        ("X-Gitlab-Event", "System Hook"),
        ("X-Gitlab-Event-UUID", "u-1"),
    ]);
    let push = format!(
        r#"{{"event_name":"push","ref":"refs/heads/main","before":"{A}","after":"{B}","project":{{"path_with_namespace":"acme/web"}}}}"#
    );
    let d = parse(Forge::GitLab, &h, push.as_bytes()).expect("reads");
    assert_eq!(d.id, "u-1");
    assert_eq!(summary(&d).2, "refs/heads/main 6113728f→0d1a26e6");
    let d = parse(Forge::GitLab, &h, br#"{"event_name":"project_create"}"#).expect("reads");
    assert_eq!(
        (d.event, d.repo),
        (Event::Other("System Hook".into()), None)
    );
    let d = parse(
        Forge::GitLab,
        &headers(&[("X-Gitlab-Event", "Merge Request Hook")]),
        br#"{"project":{"path_with_namespace":"acme/web"}}"#,
    )
    .expect("reads");
    assert_eq!(d.event, Event::Other("Merge Request Hook".into()));
    assert_eq!(d.repo.expect("repo").full_name, "acme/web");
}

#[test]
fn bitbucket_changes_are_each_a_push_and_other_kinds_are_unreadable() {
    let h = headers(&[("X-Event-Key", "repo:push")]);
    let change = |new: &str, old: &str| format!(r#"{{"new":{new},"old":{old}}}"#);
    let r = |kind: &str, name: &str, hash: &str| {
        format!(r#"{{"type":"{kind}","name":"{name}","target":{{"hash":"{hash}"}}}}"#)
    };
    let body = |changes: &[String]| {
        format!(
            r#"{{"push":{{"changes":[{}]}},"repository":{{"full_name":"acme/web","links":{{"html":{{"href":"https://bitbucket.org/acme/web/"}}}}}}}}"#,
            changes.join(",")
        )
    };
    let b = body(&[
        change(&r("tag", "v1", B), "null"),
        change("null", &r("branch", "gone", A)),
        change(&r("branch", "main", B), &r("branch", "main", A)),
    ]);
    let d = parse(Forge::Bitbucket, &h, b.as_bytes()).expect("reads");
    assert_eq!(
        summary(&d).2,
        "refs/tags/v1 00000000→0d1a26e6 +created; refs/heads/gone 6113728f→00000000 -deleted; refs/heads/main 6113728f→0d1a26e6"
    );
    assert_eq!(
        d.repo.expect("repo").clone_urls,
        vec!["https://bitbucket.org/acme/web.git".to_string()]
    );
    let d = parse(Forge::Bitbucket, &h, body(&[]).as_bytes()).expect("reads");
    assert_eq!(d.event, Event::Push(vec![]));
    for bad in [
        change("null", "null"),
        change(&r("bookmark", "x", B), "null"),
    ] {
        assert!(parse(Forge::Bitbucket, &h, body(&[bad]).as_bytes()).is_err());
    }
    let ping = parse(
        Forge::Bitbucket,
        &headers(&[("X-Event-Key", "diagnostics:ping")]),
        br#"{"test":true}"#,
    );
    assert_eq!(ping.expect("reads").event, Event::Ping);
    let pr = parse(
        Forge::Bitbucket,
        &headers(&[("X-Event-Key", "pr:opened")]),
        br#"{"repository":{"slug":"web","project":{"key":"ACME"}}}"#,
    )
    .expect("reads");
    assert_eq!(
        (pr.event, pr.repo.map(|r| r.full_name)),
        (Event::Other("pr:opened".into()), Some("ACME/web".into()))
    );
}

#[test]
fn a_push_of_the_wrong_shape_is_unreadable_and_says_where() {
    let h = headers(&[("X-GitHub-Event", "push")]);
    let cases: [(&[u8], &str); 5] = [
        (b"", "ends too soon"),
        (b"not json", "is not JSON"),
        (br#"{"ref":1}"#, "has the wrong shape"),
        (
            br#"{"ref":"refs/heads/x","before":"a","after":"b"}"#,
            "missing field `repository`",
        ),
        (
            br#"{"ref":"refs/heads/x","before":"a","after":"b","repository":{}}"#,
            "missing field `full_name`",
        ),
    ];
    for (body, says) in cases {
        let err = parse(Forge::GitHub, &h, body).expect_err("unreadable");
        assert_eq!(err.forge, Forge::GitHub);
        assert!(err.to_string().contains(says), "{err}");
    }
    let long = format!(r#"{{"ref":"{}"#, "x".repeat(10_000));
    let err = parse(Forge::GitHub, &h, long.as_bytes()).expect_err("unreadable");
    assert!(
        err.to_string().len() < 300,
        "bounded: {}",
        err.to_string().len()
    );
    let form = headers(&[
        ("X-GitHub-Event", "push"),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ]);
    let err = parse(Forge::GitHub, &form, b"nothing=here").expect_err("no payload");
    assert!(err.to_string().contains("no payload field"), "{err}");
}

#[test]
fn the_event_header_must_be_there_and_a_short_name() {
    let err = parse(Forge::Gitea, &HeaderMap::new(), b"{}").expect_err("no event");
    assert_eq!(
        err.to_string(),
        "unreadable gitea delivery: no X-Gitea-Event or X-Forgejo-Event header"
    );
    for bad in ["", "push;rm", &"a".repeat(65)] {
        let err = parse(Forge::GitHub, &headers(&[("X-GitHub-Event", bad)]), b"{}").expect_err(bad);
        assert!(err.to_string().contains("not an event name"), "{err}");
    }
    let d = parse(
        Forge::GitHub,
        &headers(&[("X-GitHub-Event", "pull_request")]),
        b"[]",
    )
    .expect("reads");
    assert_eq!(
        (d.event, d.repo),
        (Event::Other("pull_request".into()), None)
    );
}

#[test]
fn a_delivery_without_a_usable_id_is_named_by_its_body() {
    let body = b"{}";
    let digest = format!(
        "sha256:{}",
        hex(digest::digest(&digest::SHA256, body).as_ref())
    );
    for extra in [None, Some("has space"), Some("")] {
        let mut pairs = vec![("X-GitHub-Event", "ping")];
        if let Some(v) = extra {
            pairs.push(("X-GitHub-Delivery", v));
        }
        let d = parse(Forge::GitHub, &headers(&pairs), body).expect("reads");
        assert_eq!(d.id, digest);
    }
    let long = "a".repeat(129);
    let d = parse(
        Forge::GitHub,
        &headers(&[("X-GitHub-Event", "ping"), ("X-GitHub-Delivery", &long)]),
        body,
    )
    .expect("reads");
    assert_eq!(d.id, digest);
    // GitLab: Idempotency-Key first, then the event's UUID, never the hook's.
    let lab = |pairs: &[(&str, &str)]| {
        let mut all = vec![("X-Gitlab-Event", "Note Hook")];
        all.extend_from_slice(pairs);
        parse(Forge::GitLab, &headers(&all), body)
            .expect("reads")
            .id
    };
    assert_eq!(
        lab(&[("X-Gitlab-Event-UUID", "e"), ("Idempotency-Key", "k")]),
        "k"
    );
    assert_eq!(lab(&[("X-Gitlab-Event-UUID", "e")]), "e");
    assert_eq!(lab(&[("X-Gitlab-Webhook-UUID", "w")]), digest);
    // Bitbucket: the request's UUID, never the hook's.
    let bb = |pairs: &[(&str, &str)]| {
        let mut all = vec![("X-Event-Key", "repo:fork")];
        all.extend_from_slice(pairs);
        parse(Forge::Bitbucket, &headers(&all), body)
            .expect("reads")
            .id
    };
    assert_eq!(bb(&[("X-Hook-UUID", "{h}"), ("X-Request-UUID", "r")]), "r");
    assert_eq!(bb(&[("X-Request-Id", "s")]), "s");
    assert_eq!(bb(&[("X-Hook-UUID", "{h}")]), digest);
}

/// xorshift64*: reproducible noise without a dependency.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Everything a server would call, on every forge's rules.
fn poke(map: &HeaderMap, body: &[u8]) {
    let _ = identify(map);
    for forge in Forge::ALL {
        let _ = verify(forge, map, body, SECRET);
        if let Ok(d) = parse(forge, map, body) {
            assert!(!d.id.is_empty() && d.id.len() <= 128 + 7);
            let _ = serde_json::to_string(&d);
        }
    }
}

#[test]
fn hostile_bodies_and_headers_never_panic() {
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let bytes = b"{}[]\",:0123456789abcdefnulltrue%+=&\\u00\n refs/heads/payload";
    for (name, map, body) in fixtures() {
        // Every cut of the body, at a stride that keeps the test quick.
        let stride = (body.len() / 150).max(1);
        for end in (0..body.len()).step_by(stride) {
            poke(&map, &body[..end]);
        }
        // Bytes changed, dropped and doubled, at random.
        for _ in 0..150 {
            let mut b = body.clone();
            for _ in 0..1 + noise.below(4) {
                let at = noise.below(b.len());
                match noise.below(3) {
                    0 => b[at] = bytes[noise.below(bytes.len())],
                    1 => {
                        b.remove(at);
                    }
                    _ => b.insert(at, b[at]),
                }
            }
            poke(&map, &b);
            let forge = identify(&map).expect("forge");
            if matches!(forge, Forge::GitHub | Forge::Bitbucket) && b != body {
                assert!(
                    verify(forge, &map, &b, SECRET).is_err(),
                    "{name}: a changed body verified"
                );
            }
        }
    }
    // Random bodies under every forge's headers, and random header values.
    let names = [
        "x-github-event",
        "x-gitea-event",
        "x-gogs-event",
        "x-gitlab-event",
        "x-event-key",
        "x-hub-signature-256",
        "x-hub-signature",
        "x-gitea-signature",
        "x-gogs-signature",
        "x-gitlab-token",
        "content-type",
        "x-github-delivery",
        "idempotency-key",
    ];
    let values = [
        "push",
        "ping",
        "delete",
        "Push Hook",
        "System Hook",
        "repo:push",
        "repo:refs_changed",
        "diagnostics:ping",
        "application/x-www-form-urlencoded",
        "sha256=",
        "",
        "\u{7f}",
    ];
    for _ in 0..3000 {
        let mut map = HeaderMap::new();
        for _ in 0..noise.below(5) {
            let value = values[noise.below(values.len())];
            if let Ok(v) = HeaderValue::from_str(value) {
                map.insert(HeaderName::from_static(names[noise.below(names.len())]), v);
            }
        }
        let len = noise.below(300);
        let body: Vec<u8> = (0..len)
            .map(|_| match noise.below(3) {
                0 => noise.next() as u8,
                _ => bytes[noise.below(bytes.len())],
            })
            .collect();
        poke(&map, &body);
    }
    // Nesting past serde_json's limit is an error, not a stack overflow.
    let deep = format!(r#"{{"ref":{}}}"#, "[".repeat(100_000));
    poke(
        &headers(&[("X-GitHub-Event", "push"), ("X-Event-Key", "repo:push")]),
        deep.as_bytes(),
    );
}
