//! What a Dockerfile says about the container it builds, as far as `cyan
//! init` needs it: the ports the final stage exposes and its HEALTHCHECK.
//!
//! The crate parse-dockerfile (taiki-e) parses: Docker's rules are what
//! make a naive `grep EXPOSE` wrong (escaped line ends, comment lines inside
//! them, `# escape=`, case-insensitive keywords, heredoc bodies, a byte
//! order mark, stages), it follows BuildKit's parser and test files, and it
//! is kept up by someone else. What it leaves to its caller is here: only
//! the final stage counts, with what it inherits from an earlier stage it
//! is built `FROM`; `$VAR` in `EXPOSE` and the health URL is filled from
//! `ARG` defaults and `ENV` (init writes no build args), whose arguments
//! the crate keeps as one string; a shell-form HEALTHCHECK, which it keeps
//! as written, is joined into one line. A file it cannot read (or a heredoc
//! after a RUN's first word, which it does not read yet) gives no facts,
//! only the reason, and init says its values are guesses.

use std::collections::BTreeMap;
use std::time::Duration;

use parse_dockerfile::{Command, HealthcheckArguments, HealthcheckInstruction, Instruction};

/// A port the final stage exposes, as written and as resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposed {
    pub port: u16,
    pub line: usize,
    /// The word in the EXPOSE instruction (`${PORT}/tcp`).
    pub written: String,
}

/// An HTTP URL seen in a HEALTHCHECK command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckUrl {
    /// The path and query (`/healthz`), always starting with `/`.
    pub path: String,
    /// The port the URL names, when it names one.
    pub port: Option<u16>,
}

/// The final stage's HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    pub line: usize,
    /// The command after `CMD`, an exec form's words joined by spaces.
    pub command: String,
    /// When Docker runs the check first after a container starts: its
    /// `--start-interval` within a `--start-period`, else `--interval`
    /// (Docker's default, 30 s).
    pub first_check: Duration,
    /// The URL the command calls, when one is visible.
    pub url: Option<CheckUrl>,
}

/// What the final stage says, with notes on what could not be used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// Exposed TCP ports in the order written, inherited stages first.
    pub exposed: Vec<Exposed>,
    /// Words of EXPOSE that are not usable TCP ports, and why.
    pub skipped: Vec<String>,
    pub healthcheck: Option<Healthcheck>,
    /// The image the final stage builds on, when it is not a stage of this
    /// file (its own EXPOSE and HEALTHCHECK are not read here).
    pub base_image: Option<String>,
    /// Why the file could not be read (then every other field is empty).
    pub unreadable: Option<String>,
}

/// Reads a Dockerfile's text.
pub fn read(text: &str) -> Facts {
    // The parser skips a byte order mark too; its spans count from after it.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let line = |at: usize| text[..at].matches('\n').count() + 1;
    let unread = |at: usize| {
        format!(
            "line {} has a heredoc after the start of its RUN command, which the parser cyan uses does not read yet",
            line(at)
        )
    };
    let file = match parse_dockerfile::parse(text) {
        Ok(file) => file,
        Err(e) => {
            // A heredoc it skipped makes its body instructions: say that, not what follows.
            let heredoc = parse_dockerfile::parse_iter(text).ok().and_then(|all| {
                all.map_while(Result::ok)
                    .find_map(|i| heredoc_left_unread(&i))
            });
            // The message quotes the file: no control characters to the terminal.
            let said = || e.to_string().replace(|c: char| c.is_control(), "?");
            return Facts {
                unreadable: Some(heredoc.map_or_else(said, unread)),
                ..Facts::default()
            };
        }
    };
    if let Some(at) = file.instructions.iter().find_map(heredoc_left_unread) {
        return Facts {
            unreadable: Some(unread(at)),
            ..Facts::default()
        };
    }
    let escape = file
        .parser_directives
        .escape
        .as_ref()
        .map_or('\\', |d| d.value.value);
    let global_args: BTreeMap<String, String> = file
        .global_args()
        .flat_map(|arg| words(&arg.arguments.value))
        .filter_map(|w| {
            w.split_once('=')
                .map(|(n, v)| (n.to_string(), v.to_string()))
        })
        .collect();
    let stages: Vec<_> = file.stages().collect();
    // The final stage and the stages it builds on (stage names are
    // case-insensitive), root first; `parse` errs on a file without a stage.
    let mut chain = vec![stages.len() - 1];
    loop {
        let last = *chain.last().expect("not empty");
        let base = &stages[last].from.image.value;
        match stages[..last].iter().rposition(|s| {
            s.from
                .as_
                .as_ref()
                .is_some_and(|(_, name)| name.value.eq_ignore_ascii_case(base))
        }) {
            Some(parent) => chain.push(parent),
            None => break,
        }
    }
    chain.reverse();
    let root = stages[chain[0]].from.image.value.to_ascii_lowercase();
    let mut facts = Facts {
        base_image: Some(root).filter(|b| b != "scratch"),
        ..Facts::default()
    };
    // ENV lasts into the stages built on this one; ARG ends with its stage.
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for &s in &chain {
        let mut args: BTreeMap<String, String> = BTreeMap::new();
        for ins in stages[s].instructions {
            let lookup = |name: &str| env.get(name).or_else(|| args.get(name)).cloned();
            match ins {
                // One instruction's values see the ones before it, not each other.
                Instruction::Arg(arg) => {
                    let declared: Vec<(String, Option<String>)> = words(&arg.arguments.value)
                        .into_iter()
                        .map(|word| match word.split_once('=') {
                            Some((n, d)) => (n.to_string(), expand(d, &lookup).ok()),
                            None => (word.clone(), global_args.get(&word).cloned()),
                        })
                        .collect();
                    for (name, default) in declared {
                        match default {
                            Some(v) => args.insert(name, v),
                            None => args.remove(&name),
                        };
                    }
                }
                Instruction::Env(set) => {
                    let set: Vec<(String, String)> = env_pairs(&set.arguments.value)
                        .into_iter()
                        .map(|(name, value)| (name, expand(&value, &lookup).unwrap_or_default()))
                        .collect();
                    env.extend(set);
                }
                Instruction::Expose(expose) => {
                    let line = line(expose.expose.span.start);
                    for word in &expose.arguments {
                        let word = word.value.as_ref();
                        match exposed_port(word, &lookup) {
                            Ok(Some(port)) => facts.exposed.push(Exposed {
                                port,
                                line,
                                written: word.to_string(),
                            }),
                            Ok(None) => {}
                            Err(why) => facts
                                .skipped
                                .push(format!("EXPOSE {word} (line {line}): {why}")),
                        }
                    }
                }
                Instruction::Healthcheck(check) => {
                    let line = line(check.healthcheck.span.start);
                    facts.healthcheck =
                        healthcheck(check, line, escape, &|name| env.get(name).cloned());
                }
                _ => {}
            }
        }
    }
    facts
}

/// Where a RUN starts whose shell form still holds a heredoc opener
/// (`RUN cat <<EOF > f`, a second one in `RUN <<A <<B`): parse-dockerfile
/// reads a heredoc only at the command's start, so its body was read as
/// instructions. `<<<` (a here-string) and `1<<2` are not heredocs.
fn heredoc_left_unread(ins: &Instruction<'_>) -> Option<usize> {
    let Instruction::Run(run) = ins else {
        return None;
    };
    let Command::Shell(shell) = &run.arguments else {
        return None;
    };
    let command = shell.value;
    command
        .match_indices("<<")
        .any(|(at, _)| {
            let word = command[at + 2..]
                .trim_start_matches('-')
                .trim_start_matches(['"', '\'']);
            word.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        })
        .then_some(run.run.span.start)
}

/// `ENV a=1 b="two words"`, or the old `ENV name the rest of the line`.
fn env_pairs(args: &str) -> Vec<(String, String)> {
    let (first, rest) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
    if !first.contains('=') {
        return vec![(first.to_string(), words(rest).join(" "))];
    }
    words(args)
        .into_iter()
        .filter_map(|w| {
            w.split_once('=')
                .map(|(n, v)| (n.to_string(), v.to_string()))
        })
        .collect()
}

/// Whitespace-separated words, with quotes removed and the spaces they hold kept.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut started = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '"' | '\'') => {
                quote = Some(c);
                started = true;
            }
            (q, '\\') if q != Some('\'') => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
                started = true;
            }
            (None, c) if c.is_whitespace() => {
                if started {
                    out.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            (_, c) => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        out.push(word);
    }
    out
}

/// Expands `$NAME`, `${NAME}`, `${NAME:-default}`, `${NAME-default}`,
/// `${NAME:+alt}` and `${NAME+alt}` as Docker does in EXPOSE; `\$` is a
/// plain `$`. The error names a variable with no value.
pub fn expand(word: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = word;
    while let Some(at) = rest.find(['$', '\\']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("\\$") {
            out.push('$');
            rest = after;
            continue;
        }
        if let Some(after) = tail.strip_prefix('\\') {
            out.push('\\');
            rest = after;
            continue;
        }
        let after = &tail[1..];
        if let Some(braced) = after.strip_prefix('{') {
            let close = braced
                .find('}')
                .ok_or_else(|| format!("{tail:?} has no closing '}}'"))?;
            let inner = &braced[..close];
            let name_len = inner
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(inner.len());
            let (name, modifier) = inner.split_at(name_len);
            let value = lookup(name);
            let set = value.as_deref().is_some_and(|v| !v.is_empty());
            let expanded = match modifier {
                "" => value.ok_or_else(|| format!("${name} has no value in the Dockerfile"))?,
                m if m.starts_with(":-") => match value.filter(|_| set) {
                    Some(v) => v,
                    None => expand(&m[2..], lookup)?,
                },
                m if m.starts_with('-') => match value {
                    Some(v) => v,
                    None => expand(&m[1..], lookup)?,
                },
                m if m.starts_with(":+") => match set {
                    true => expand(&m[2..], lookup)?,
                    false => String::new(),
                },
                m if m.starts_with('+') => match value {
                    Some(_) => expand(&m[1..], lookup)?,
                    None => String::new(),
                },
                m => return Err(format!("${{{name}{m}}} is not a substitution cyan reads")),
            };
            out.push_str(&expanded);
            rest = &braced[close + 1..];
        } else {
            let name_len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if name_len == 0 {
                out.push('$');
                rest = after;
                continue;
            }
            let name = &after[..name_len];
            out.push_str(
                &lookup(name).ok_or_else(|| format!("${name} has no value in the Dockerfile"))?,
            );
            rest = &after[name_len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// One EXPOSE word: `Ok(None)` for nothing (an empty expansion), `Err`
/// with the reason for a word that is not a usable TCP port.
fn exposed_port(
    word: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<u16>, String> {
    let value = expand(word, lookup)?;
    if value.is_empty() {
        return Ok(None);
    }
    let (ports, proto) = match value.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (value.as_str(), "tcp".to_string()),
    };
    if proto != "tcp" {
        return Err(format!(
            "{proto}, and the cyan proxy forwards HTTP over TCP"
        ));
    }
    // A range (`8000-8010`) exposes each; the first is the one to route.
    let first = ports.split('-').next().unwrap_or_default();
    match first.parse::<u16>() {
        Ok(port) if port > 0 => Ok(Some(port)),
        _ => Err(format!("{value:?} is not a port number")),
    }
}

/// `HEALTHCHECK [--option=value ...] CMD command`, or `None` for
/// `HEALTHCHECK NONE` (which also turns off an inherited one).
fn healthcheck(
    check: &HealthcheckInstruction<'_>,
    line: usize,
    escape: char,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<Healthcheck> {
    let HealthcheckArguments::Cmd { arguments, .. } = &check.arguments else {
        return None;
    };
    let command = match arguments {
        Command::Exec(exec) => {
            let words: Vec<&str> = exec.value.iter().map(|w| w.value.as_ref()).collect();
            words.join(" ")
        }
        Command::Shell(shell) => one_line(shell.value, escape),
        _ => return None,
    };
    let duration = |name: &str| {
        let flag = check.options.iter().rev().find(|f| f.name.value == name)?;
        humantime::parse_duration(&flag.value.as_ref()?.value).ok()
    };
    let first_check = match (duration("start-period"), duration("start-interval")) {
        (Some(period), Some(interval)) if !period.is_zero() => interval,
        _ => duration("interval").unwrap_or(Duration::from_secs(30)),
    };
    Some(Healthcheck {
        line,
        url: check_url(&command, env),
        command,
        first_check,
    })
}

/// A shell-form command as Docker runs it: escaped line ends joined, and
/// the comment and blank lines between them dropped.
fn one_line(written: &str, escape: char) -> String {
    let mut out = String::new();
    for (i, line) in written.lines().enumerate() {
        let trimmed = line.trim_start();
        if i > 0 && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        out.push_str(line.trim_end().strip_suffix(escape).unwrap_or(line));
    }
    out
}

/// The path (and port) of the HTTP URL a health command calls: any
/// `http://` or `https://` URL, or with curl or wget also a bare
/// `localhost:3000/path` (both accept a URL without a scheme).
fn check_url(command: &str, env: &dyn Fn(&str) -> Option<String>) -> Option<CheckUrl> {
    let ends = |c: char| c.is_whitespace() || "\"'`;|&)<>,".contains(c);
    let lower = command.to_ascii_lowercase();
    let schemed = ["http://", "https://"]
        .iter()
        .filter_map(|s| lower.find(s).map(|at| at + s.len()))
        .min();
    let url = match schemed {
        Some(start) => {
            let rest = &command[start..];
            &rest[..rest.find(ends).unwrap_or(rest.len())]
        }
        None => {
            let tool = command.split(ends).any(|w| {
                let name = w.rsplit('/').next().unwrap_or(w);
                name == "curl" || name == "wget"
            });
            if !tool {
                return None;
            }
            command.split(ends).find(|w| {
                ["localhost", "127.0.0.1", "0.0.0.0", "[::1]"]
                    .iter()
                    .any(|h| match w.strip_prefix(h) {
                        Some(after) => after.is_empty() || after.starts_with([':', '/']),
                        None => false,
                    })
            })?
        }
    };
    let url = expand(url, env).ok()?;
    let (authority, path) = match url.find('/') {
        Some(at) => (&url[..at], url[at..].to_string()),
        None => (url.as_str(), "/".to_string()),
    };
    let port = authority
        .rsplit_once(':')
        .filter(|(_, p)| !p.contains(']'))
        .and_then(|(_, p)| p.parse::<u16>().ok());
    Some(CheckUrl { path, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(text: &str) -> Vec<u16> {
        read(text).exposed.iter().map(|e| e.port).collect()
    }

    #[test]
    fn continuations_join_and_comments_inside_them_are_dropped() {
        let text = "FROM scratch\n\
                    RUN echo a \\\n\
                    # a comment inside the continuation\n\
                    \n\
                    \x20   && echo b\n\
                    expose 80 \\  \n\
                    \x20 443\n\
                    RUN echo 'EXPOSE 9999' # not a comment: only at a line's start\n\
                    HEALTHCHECK CMD curl -f \\\n\
                    \x20 # the port\n\
                    \x20 http://localhost:80/up \\\n\
                    \n\
                    \x20 || exit 1\n";
        let facts = read(text);
        assert_eq!(ports(text), [80, 443]);
        assert_eq!(facts.exposed[1].line, 6);
        let check = facts.healthcheck.unwrap();
        assert_eq!(
            check.command,
            "curl -f   http://localhost:80/up   || exit 1"
        );
        assert_eq!((check.line, check.url.unwrap().path.as_str()), (9, "/up"));
    }

    #[test]
    fn a_byte_order_mark_and_crlf_line_ends_are_read_as_docker_reads_them() {
        assert_eq!(ports("\u{feff}FROM scratch\nEXPOSE 3000\n"), [3000]);
        let crlf = read("\u{feff}# escape=`\r\nFROM scratch\r\nEXPOSE `\r\n  3001\r\n");
        assert_eq!((crlf.exposed[0].port, crlf.exposed[0].line), (3001, 3));
    }

    #[test]
    fn the_escape_directive_changes_the_continuation_character() {
        let text = "# escape=`\nFROM scratch\nEXPOSE 8080 `\n  9090\nWORKDIR C:\\\nEXPOSE 7070\n";
        assert_eq!(ports(text), [8080, 9090, 7070]);
        // Not at the top, it is only a comment: the backtick is a word.
        let late = read("FROM scratch\n# escape=`\nEXPOSE 8080 `\nEXPOSE 9090\n");
        assert_eq!(late.exposed.len(), 2);
        assert!(late.skipped[0].contains("EXPOSE ` (line 3)"), "{late:?}");
    }

    #[test]
    fn heredoc_bodies_are_not_instructions() {
        let text = "FROM scratch\nRUN <<EOF\nEXPOSE 1111\nEOF\nCOPY <<-\"END\" /x\n\tEXPOSE 2222\n\tEND\nRUN cat <<< 'EXPOSE 3'\nRUN echo $((1<<2))\nEXPOSE 8080\n";
        assert_eq!(ports(text), [8080]);
        // Docker takes these; parse-dockerfile reads the body as instructions.
        for (text, line) in [
            (
                "FROM scratch\nRUN cat <<EOF > /x\nEXPOSE 1111\nEOF\nEXPOSE 80\n",
                2,
            ),
            ("FROM scratch\nEXPOSE 80\nRUN <<A <<B\nA\nhello\nB\n", 3),
            // A body that parses as instructions, to its end (`RUN` alone).
            ("FROM scratch\nRUN cat <<RUN > /x\nEXPOSE 1111\nRUN\n", 2),
        ] {
            let facts = read(text);
            assert_eq!((facts.exposed.len(), facts.healthcheck), (0, None));
            let why = facts.unreadable.unwrap();
            assert!(why.contains(&format!("line {line} has a heredoc")), "{why}");
        }
    }

    #[test]
    fn a_file_docker_would_refuse_is_unreadable_with_the_parsers_reason() {
        let facts = read("FROM scratch\nEXPOSE 80\nFORM typo\n");
        assert_eq!(facts.exposed, []);
        assert!(
            facts.unreadable.as_deref().unwrap().contains("'FORM'")
                && facts.unreadable.as_deref().unwrap().contains("line 3"),
            "{facts:?}"
        );
        assert!(read("").unreadable.unwrap().contains("FROM"));
        let escape = read("FROM scratch\n\x1b[2J\n").unreadable.unwrap();
        assert!(escape.contains("'?[2J'"), "{escape}");
    }

    #[test]
    fn expose_takes_protocols_ranges_and_variables() {
        assert_eq!(ports("FROM scratch\nEXPOSE 8080/tcp\n"), [8080]);
        assert_eq!(ports("FROM scratch\nEXPOSE 8000-8010\n"), [8000]);
        let udp = read("FROM scratch\nEXPOSE 53/udp 8080\n");
        assert_eq!(udp.exposed[0].port, 8080);
        assert!(udp.skipped[0].contains("udp"), "{:?}", udp.skipped);
        // ARG defaults, ENV (over an ARG of the same name), `${X:-d}`.
        assert_eq!(ports("FROM scratch\nARG PORT=3000\nEXPOSE $PORT\n"), [3000]);
        assert_eq!(
            ports("FROM scratch\nARG PORT=3000\nENV PORT=4000\nEXPOSE ${PORT}/tcp\n"),
            [4000]
        );
        assert_eq!(
            ports("FROM scratch\nENV PORT 5000\nEXPOSE ${PORT}\n"),
            [5000]
        );
        assert_eq!(ports("FROM scratch\nEXPOSE ${PORT:-8081}\n"), [8081]);
        // A global ARG reaches a stage only when declared there again.
        assert_eq!(
            ports("ARG PORT=7000\nFROM scratch\nARG PORT\nEXPOSE $PORT\n"),
            [7000]
        );
        let unset = read("ARG PORT=7000\nFROM scratch\nEXPOSE $PORT 9000\n");
        assert_eq!(
            unset.exposed.iter().map(|e| e.port).collect::<Vec<_>>(),
            [9000]
        );
        assert!(
            unset.skipped[0].contains("$PORT has no value"),
            "{:?}",
            unset.skipped
        );
    }

    #[test]
    fn only_the_final_stage_and_what_it_builds_on_count() {
        let text = "FROM golang AS build\nEXPOSE 1111\nFROM alpine AS Base\nEXPOSE 2222\n\
                    HEALTHCHECK CMD wget -q localhost:2222/up\nFROM base\nEXPOSE 3333\n";
        let facts = read(text);
        assert_eq!(
            facts.exposed.iter().map(|e| e.port).collect::<Vec<_>>(),
            [2222, 3333]
        );
        assert_eq!(facts.healthcheck.unwrap().url.unwrap().path, "/up");
        assert_eq!(facts.base_image.as_deref(), Some("alpine"));
        assert_eq!(read("FROM scratch\nEXPOSE 1\n").base_image, None);
    }

    #[test]
    fn healthcheck_urls_paths_ports_and_timing() {
        let hc = |text: &str| read(&format!("FROM scratch\n{text}\n")).healthcheck;
        let curl = hc("HEALTHCHECK --interval=5s CMD curl -fsS http://localhost:8080/health/live?full=1 || exit 1")
            .unwrap();
        assert_eq!(
            curl.url,
            Some(CheckUrl {
                path: "/health/live?full=1".into(),
                port: Some(8080)
            })
        );
        assert_eq!(curl.first_check, Duration::from_secs(5));
        let exec = hc(r#"healthcheck cmd ["wget", "-qO-", "http://127.0.0.1:3000/ping"]"#).unwrap();
        assert_eq!(exec.url.unwrap().path, "/ping");
        assert_eq!(
            exec.first_check,
            Duration::from_secs(30),
            "Docker's default"
        );
        let bare = hc("HEALTHCHECK CMD curl -f localhost/").unwrap();
        assert_eq!(
            bare.url,
            Some(CheckUrl {
                path: "/".into(),
                port: None
            })
        );
        let env = read("FROM scratch\nENV PORT=9000\nHEALTHCHECK --start-period=1m --start-interval=1s CMD curl -f \"http://localhost:${PORT}/ready\"\n")
            .healthcheck
            .unwrap();
        assert_eq!(env.url.unwrap().port, Some(9000));
        assert_eq!(env.first_check, Duration::from_secs(1));
        let binary = hc(r#"HEALTHCHECK CMD ["/app", "check"]"#).unwrap();
        assert_eq!((binary.command.as_str(), binary.url), ("/app check", None));
        assert_eq!(hc("HEALTHCHECK NONE"), None);
        assert_eq!(
            read("FROM scratch AS a\nHEALTHCHECK CMD true\nFROM a\nHEALTHCHECK NONE\n").healthcheck,
            None,
            "NONE turns off an inherited check"
        );
    }
}
