use super::*;
use crate::serve::forge::Repo;

const A: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";
const B: &str = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c";
const Z: &str = "0000000000000000000000000000000000000000";

const CONFIG: &str = r#"
repo: acme/web
source: /srv/git/web.git
credentials: { file: /etc/cyan/git-token }
secret: { env: HOOK_SECRET }
forges: [github, forgejo]
rules:
  - branch: main
    deploy: staging
    then: production
  - tag: "v*"
    deploy: production
    version: tag
  - branch: "feature/*"
    deploy: staging
    preview: true
  - branch: "release/**"
    deploy: staging
  - branch: "release/1.x"
    deploy: production
  - branch: hotfix
    deploy: staging
  - tag: "build-*"
    deploy: qa
    secret: { env: QA_SECRET }
"#;

fn config() -> ServeConfig {
    serde_saphyr::from_str(CONFIG).expect("the example parses")
}

fn push(git_ref: &str, after: &str) -> Push {
    Push {
        git_ref: git_ref.into(),
        before: A.into(),
        after: after.into(),
        deleted: false,
        created: false,
    }
}

fn deletion(git_ref: &str) -> Push {
    Push {
        git_ref: git_ref.into(),
        before: A.into(),
        after: Z.into(),
        deleted: true,
        created: false,
    }
}

fn delivery(event: Event) -> Delivery {
    Delivery {
        forge: Forge::GitHub,
        id: "d-1".into(),
        event,
        repo: Some(Repo {
            full_name: "acme/web".into(),
            clone_urls: vec![],
        }),
    }
}

fn of(pushes: Vec<Push>) -> Delivery {
    delivery(Event::Push(pushes))
}

fn deploy(
    environment: &str,
    version: &str,
    then: Option<&str>,
    preview: Option<Preview>,
) -> Decision {
    Decision::Deploy {
        environment: environment.into(),
        version: version.into(),
        commit: B.into(),
        then: then.map(Into::into),
        preview,
    }
}

/// The reason of a single `Ignore`, or a panic naming what came instead.
fn ignored(decisions: Vec<Decision>) -> String {
    match decisions.as_slice() {
        [Decision::Ignore { reason }] => reason.clone(),
        other => panic!("want one Ignore, got {other:?}"),
    }
}

#[test]
fn the_example_parses_and_writes_back_as_it_reads() {
    let c = config();
    assert_eq!(c.repo.as_str(), "acme/web");
    assert_eq!(c.source.as_str(), "/srv/git/web.git");
    assert_eq!(
        c.credentials,
        Some(SecretRef::File("/etc/cyan/git-token".into()))
    );
    assert_eq!(c.secret, SecretRef::Env("HOOK_SECRET".into()));
    assert_eq!(c.forges, Some(vec![Forge::GitHub, Forge::Gitea]));
    assert_eq!(c.rules.len(), 7);
    assert_eq!(c.rules[1].refs.to_string(), "tag: v*");
    assert_eq!(c.rules[1].version, VersionFrom::Tag);
    assert!(c.rules[2].preview);
    let text = serde_saphyr::to_string(&c).expect("serializes");
    let again: ServeConfig = serde_saphyr::from_str(&text).expect("reads back");
    assert_eq!(again, c, "{text}");
    // Without `forges:`, every forge is taken.
    let all: ServeConfig = serde_saphyr::from_str(
        "repo: a/b\nsource: https://git.example/a/b.git\nsecret: { env: S }\nrules: [{ branch: main, deploy: web }]",
    )
    .expect("parses");
    assert!(Forge::ALL.into_iter().all(|f| all.accepts(f)));
    assert!(c.accepts(Forge::Gitea) && c.accepts(Forge::GitHub));
    assert!(!c.accepts(Forge::GitLab) && !c.accepts(Forge::Bitbucket) && !c.accepts(Forge::Gogs));
}

#[test]
fn a_wrong_value_is_refused_while_it_is_read_saying_what_to_write() {
    let base = "repo: acme/web\nsource: /srv/git/web.git\nsecret: { env: S }\n";
    let cases: &[(&str, &str)] = &[
        (
            "rules: [{ branch: main, tag: v1, deploy: web }]",
            "branch: or tag:, not both",
        ),
        ("rules: [{ deploy: web }]", "a rule needs branch: or tag:"),
        (
            "rules: [{ branch: main, deploy: web, version: tag }]",
            "version: tag needs a tag rule",
        ),
        (
            "rules: [{ tag: v*, deploy: web, preview: true }]",
            "preview: true is for branch rules",
        ),
        (
            "rules: [{ branch: main, deploy: web, then: web }]",
            "then: web is the environment the rule deploys",
        ),
        (
            "rules: [{ branch: f/*, deploy: web, preview: true, then: prod }]",
            "a preview is not promoted",
        ),
        (
            "rules: [{ branch: main, deploy: web, when: push }]",
            "unknown field",
        ),
        (
            "rules: [{ branch: main, deploy: Web }]",
            "invalid name \"Web\"",
        ),
        (
            "rules: [{ branch: \"[main\", deploy: web }]",
            "invalid glob \"[main\"",
        ),
        (
            "rules: [{ branch: \"\", deploy: web }]",
            "an empty glob matches nothing",
        ),
        (
            "rules: [{ branch: main, deploy: web, version: semver }]",
            "unknown variant",
        ),
        ("rules: []", "rules is empty"),
        (
            "forges: []\nrules: [{ branch: main, deploy: web }]",
            "forges is empty",
        ),
        (
            "forges: [sourcehut]\nrules: [{ branch: main, deploy: web }]",
            "unknown variant `sourcehut`",
        ),
        (
            "rules: [{ branch: main, deploy: web }]\nport: 80",
            "unknown field `port`",
        ),
    ];
    for (rest, says) in cases {
        let text = format!("{base}{rest}");
        let err = serde_saphyr::from_str::<ServeConfig>(&text)
            .expect_err(rest)
            .to_string();
        assert!(err.contains(says), "{rest}: {err}");
    }
    let rules = "rules: [{ branch: main, deploy: web }]\n";
    for (head, says) in [
        (
            "repo: web\nsource: /x\nsecret: { env: S }\n",
            "invalid repo \"web\"",
        ),
        (
            "repo: acme//web\nsource: /x\nsecret: { env: S }\n",
            "invalid repo",
        ),
        (
            "repo: acme/my web\nsource: /x\nsecret: { env: S }\n",
            "invalid repo",
        ),
        (
            "repo: acme/web\nsource: --upload-pack=x\nsecret: { env: S }\n",
            "invalid source",
        ),
        (
            "repo: acme/web\nsource: \"\"\nsecret: { env: S }\n",
            "invalid source",
        ),
        ("repo: acme/web\nsource: /x\n", "missing field `secret`"),
    ] {
        let err = serde_saphyr::from_str::<ServeConfig>(&format!("{head}{rules}"))
            .expect_err(head)
            .to_string();
        assert!(err.contains(says), "{head}: {err}");
    }
}

#[test]
fn what_is_not_a_push_to_this_repository_is_ignored_with_why() {
    let c = config();
    assert_eq!(
        ignored(c.decide(&delivery(Event::Ping))),
        "a ping: the webhook reaches cyan"
    );
    assert_eq!(
        ignored(c.decide(&delivery(Event::Other("issues".into())))),
        "a github \"issues\" event, not a push"
    );
    let mut elsewhere = of(vec![push("refs/heads/main", B)]);
    elsewhere.repo = Some(Repo {
        full_name: "acme/api".into(),
        clone_urls: vec![],
    });
    assert_eq!(
        ignored(c.decide(&elsewhere)),
        "the push is to \"acme/api\", and this server deploys acme/web"
    );
    let mut nameless = of(vec![push("refs/heads/main", B)]);
    nameless.repo = None;
    assert_eq!(ignored(c.decide(&nameless)), "the push names no repository");
    assert_eq!(
        ignored(c.decide(&of(vec![]))),
        "the push changed no branch or tag"
    );
    // The name is compared without regard to case.
    let mut cased = of(vec![push("refs/heads/main", B)]);
    cased.repo = Some(Repo {
        full_name: "ACME/Web".into(),
        clone_urls: vec![],
    });
    assert_eq!(
        c.decide(&cased),
        vec![deploy("staging", &B[..12], Some("production"), None)]
    );
}

#[test]
fn each_pushed_ref_is_decided_by_the_first_rule_that_matches_it() {
    let c = config();
    let feature = || Preview {
        base: "staging".into(),
        slug: slug("feature/login"),
    };
    let b64 = format!("{B}{}", &A[..24]);
    let table: Vec<(Push, Decision)> = vec![
        (
            push("refs/heads/main", B),
            deploy("staging", &B[..12], Some("production"), None),
        ),
        // An object name in capitals is still one, written in lowercase.
        (
            push("refs/heads/main", &B.to_uppercase()),
            deploy("staging", &B[..12], Some("production"), None),
        ),
        (
            push("refs/tags/v1.2.0", B),
            deploy("production", "v1.2.0", None, None),
        ),
        // `version: commit` on a tag rule: the commit names the version.
        (
            push("refs/tags/build-7", B),
            deploy("qa", &B[..12], None, None),
        ),
        (
            push("refs/heads/feature/login", B),
            deploy("staging", &B[..12], None, Some(feature())),
        ),
        (
            deletion("refs/heads/feature/login"),
            Decision::RemovePreview { preview: feature() },
        ),
        // `**` crosses `/`, and the first match wins over a later, closer one.
        (
            push("refs/heads/release/1.x", B),
            deploy("staging", &B[..12], None, None),
        ),
        (
            push("refs/heads/release/2/rc", B),
            deploy("staging", &B[..12], None, None),
        ),
        (
            push("refs/heads/main", &b64),
            Decision::Deploy {
                environment: "staging".into(),
                version: b64[..12].into(),
                commit: b64.clone(),
                then: Some("production".into()),
                preview: None,
            },
        ),
        // All zeros is a deletion, whatever `deleted` says.
        (
            push("refs/heads/feature/login", Z),
            Decision::RemovePreview { preview: feature() },
        ),
    ];
    for (p, want) in table {
        assert_eq!(c.decide(&of(vec![p.clone()])), vec![want], "{p:?}");
    }
}

#[test]
fn a_ref_no_rule_deploys_is_ignored_with_why() {
    let c = config();
    let table: Vec<(Push, &str)> = vec![
        (push("refs/heads/docs", B), "no rule matches branch \"docs\""),
        // `*` stays within one `/` segment.
        (push("refs/heads/feature/a/b", B), "no rule matches branch \"feature/a/b\""),
        (push("refs/tags/release-1", B), "no rule matches tag \"release-1\""),
        (push("refs/pull/7/head", B), "\"refs/pull/7/head\" is not a branch or a tag"),
        (push("refs/heads/", B), "\"refs/heads/\" is not a branch or a tag"),
        (
            deletion("refs/heads/main"),
            "branch \"main\" was deleted; its rule (branch: main) has no preview, so staging keeps what it runs",
        ),
        (deletion("refs/tags/v1.2.0"), "tag \"v1.2.0\" was deleted: nothing to deploy"),
        (
            push("refs/heads/main", "HEAD"),
            "the object pushed to \"refs/heads/main\" is \"HEAD\", not a 40- or 64-digit hex name",
        ),
        (
            push("refs/heads/main", &B[..39]),
            "the object pushed to \"refs/heads/main\" is \"0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1\", not a 40- or 64-digit hex name",
        ),
        (
            push("refs/heads/main", &format!("{}g", &B[..39])),
            "the object pushed to \"refs/heads/main\" is \"0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1g\", not a 40- or 64-digit hex name",
        ),
    ];
    for (p, says) in table {
        assert_eq!(ignored(c.decide(&of(vec![p.clone()]))), says, "{p:?}");
    }
    let reason = ignored(c.decide(&of(vec![push("refs/tags/v1+build", B)])));
    assert!(
        reason.starts_with("tag \"v1+build\" is not a version: invalid version"),
        "{reason}"
    );
    // A reason quotes what the delivery said, escaped and cut short.
    let long = format!("refs/heads/\n{}", "x".repeat(500));
    let reason = ignored(c.decide(&of(vec![push(&long, B)])));
    assert!(
        reason.starts_with("no rule matches branch \"\\nxxx") && reason.len() < 150,
        "{reason}"
    );
}

#[test]
fn one_push_of_several_refs_deploys_each_target_once() {
    let c = config();
    let decisions = c.decide(&of(vec![
        push("refs/heads/release/3", B),
        push("refs/tags/v3.0.0", B),
        push("refs/heads/hotfix", B),
        deletion("refs/heads/feature/old"),
        push("refs/heads/feature/new", B),
        push("refs/heads/feature/newer", B),
    ]));
    let preview = |b: &str| Preview {
        base: "staging".into(),
        slug: slug(b),
    };
    assert_eq!(
        decisions,
        vec![
            deploy("staging", &B[..12], None, None),
            deploy("production", "v3.0.0", None, None),
            Decision::Ignore {
                reason: "\"refs/heads/release/3\" in the same push already deploys staging".into()
            },
            Decision::RemovePreview {
                preview: preview("feature/old")
            },
            deploy("staging", &B[..12], None, Some(preview("feature/new"))),
            deploy("staging", &B[..12], None, Some(preview("feature/newer"))),
        ]
    );
}

#[test]
fn the_secret_is_the_matching_rule_s() {
    let c = config();
    let hook = SecretRef::Env("HOOK_SECRET".into());
    let qa = SecretRef::Env("QA_SECRET".into());
    assert_eq!(c.secret_for(&delivery(Event::Ping)), Ok(&hook));
    assert_eq!(
        c.secret_for(&delivery(Event::Other("issues".into()))),
        Ok(&hook)
    );
    assert_eq!(
        c.secret_for(&of(vec![push("refs/heads/main", B)])),
        Ok(&hook)
    );
    assert_eq!(
        c.secret_for(&of(vec![push("refs/tags/build-1", B)])),
        Ok(&qa)
    );
    assert_eq!(
        c.secret_for(&of(vec![push("refs/heads/nothing", B)])),
        Ok(&hook)
    );
    assert_eq!(
        c.secret_for(&of(vec![
            push("refs/heads/nothing", B),
            push("refs/tags/build-1", B)
        ])),
        Ok(&qa)
    );
    assert_eq!(
        c.secret_for(&of(vec![push("refs/tags/build-1", B), push("refs/heads/main", B)])),
        Err("\"refs/tags/build-1\" and \"refs/heads/main\" in one push match rules with different secrets: push them separately".into())
    );
}

/// A DNS label (RFC 1123) of at most 40, never with `--`.
fn is_label(s: &str) -> bool {
    (1..=40).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

#[test]
fn a_slug_is_the_branch_when_it_can_be_and_hashed_when_it_cannot() {
    let h = |name: &str| {
        hex(digest::digest(&digest::SHA256, name.as_bytes()).as_ref())[..8].to_string()
    };
    assert_eq!(slug("main"), "main");
    assert_eq!(slug("release-2"), "release-2");
    assert_eq!(slug("Main"), format!("main-{}", h("Main")));
    assert_eq!(
        slug("feature/a_b"),
        format!("feature-a-b-{}", h("feature/a_b"))
    );
    assert_eq!(
        slug("feature/a-b"),
        format!("feature-a-b-{}", h("feature/a-b"))
    );
    assert_ne!(slug("feature/a_b"), slug("feature/a-b"));
    assert_eq!(slug("--x--"), format!("x-{}", h("--x--")));
    assert_eq!(slug("日本語"), format!("branch-{}", h("日本語")));
    assert_eq!(
        slug("feature/ünïcode"),
        format!("feature-n-code-{}", h("feature/ünïcode"))
    );
    assert_eq!(slug("a"), "a");
    let forty = "a".repeat(40);
    assert_eq!(slug(&forty), forty);
    let long = "b".repeat(300);
    assert_eq!(slug(&long), format!("{}-{}", "b".repeat(31), h(&long)));
    // Cut where the name had a separator: no `-` before the hash's own.
    let cut = format!("{}/x", "c".repeat(30));
    assert_eq!(slug(&cut), format!("{}-{}", "c".repeat(30), h(&cut)));
    // A branch named like another's slug gets its own.
    let taken = slug("feature/a_b");
    assert_ne!(slug(&taken), taken);
    assert!(slug(&taken).starts_with(&format!("{}-", &taken[..20])));
}

#[test]
fn slugs_are_labels_and_no_two_branches_share_one() {
    let mut names: Vec<String> = vec![
        "main".into(),
        "Main".into(),
        "MAIN".into(),
        "main-".into(),
        "-main".into(),
        "feature/a_b".into(),
        "feature/a-b".into(),
        "feature/a.b".into(),
        "feature--a-b".into(),
        "".into(),
        "-".into(),
        "/".into(),
        "é".into(),
        "日本".into(),
        "emoji/🚀".into(),
    ];
    let taken: Vec<String> = names.iter().map(|n| slug(n)).collect();
    names.extend(taken);
    let mut noise = 0x2545_f491_4f6c_dd1d_u64;
    let alphabet: Vec<char> = "abcxyz019-_/.A日é".chars().collect();
    for _ in 0..5000 {
        noise ^= noise << 13;
        noise ^= noise >> 7;
        noise ^= noise << 17;
        let len = 1 + (noise % 60) as usize;
        let name: String = (0..len)
            .map(|i| alphabet[((noise >> (i % 50)) as usize + i) % alphabet.len()])
            .collect();
        names.push(name);
    }
    names.sort();
    names.dedup();
    let mut seen = std::collections::HashMap::new();
    for n in &names {
        let s = slug(n);
        assert!(is_label(&s), "{n:?} → {s:?}");
        if let Some(other) = seen.insert(s.clone(), n.clone()) {
            panic!("{n:?} and {other:?} share {s:?}");
        }
    }
}
