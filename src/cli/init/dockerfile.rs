//! What a Dockerfile says about the container it builds, as far as `cyan
//! init` needs it: the ports the final stage exposes and its HEALTHCHECK.
//!
//! Not a Dockerfile parser (BuildKit's is Go, and a build is not needed to
//! answer this): it reads instructions the way Docker splits them, which is
//! what makes a naive `grep EXPOSE` wrong. An escape at a line's end (`\`,
//! or the `# escape=` directive's character) joins the next line; comment
//! and blank lines inside such a continuation are dropped; `#` starts a
//! comment only at the start of a line; instructions are case-insensitive;
//! heredoc bodies (`RUN <<EOF`) are skipped, so a script's line is never
//! taken for an instruction. Stages are followed: only the final stage
//! counts, with what it inherits from an earlier stage it is built `FROM`,
//! and `$VAR` in `EXPOSE` is filled from `ARG` defaults and `ENV`, since
//! init writes no build args.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// One instruction, continuation lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// Line (1-based) the instruction starts on.
    pub line: usize,
    /// The keyword, uppercased (`EXPOSE`).
    pub keyword: String,
    /// Everything after the keyword, trimmed.
    pub args: String,
}

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
}

/// Reads a Dockerfile's text.
pub fn read(text: &str) -> Facts {
    let all = instructions(text);
    let first_from = all
        .iter()
        .position(|i| i.keyword == "FROM")
        .unwrap_or(all.len());
    let global_args = arg_defaults(&all[..first_from]);
    let stages = stages(&all[first_from..]);
    let Some(last) = stages.len().checked_sub(1) else {
        return Facts::default();
    };
    // The final stage and the stages it builds on, root first.
    let mut chain = vec![last];
    loop {
        let base = &stages[*chain.last().expect("not empty")].base;
        let before = *chain.last().expect("not empty");
        match stages[..before]
            .iter()
            .rposition(|s| s.name.as_deref() == Some(base.as_str()))
        {
            Some(parent) => chain.push(parent),
            None => break,
        }
    }
    chain.reverse();
    let mut facts = Facts {
        base_image: Some(stages[chain[0]].base.clone()).filter(|b| b != "scratch"),
        ..Facts::default()
    };
    // ENV lasts into the stages built on this one; ARG ends with its stage.
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for &s in &chain {
        let mut args: BTreeMap<String, String> = BTreeMap::new();
        for ins in &stages[s].body {
            let lookup = |name: &str| env.get(name).or_else(|| args.get(name)).cloned();
            match ins.keyword.as_str() {
                // One instruction's values see the ones before it, not each other.
                "ARG" => {
                    let declared: Vec<(String, Option<String>)> = words(&ins.args)
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
                "ENV" => {
                    let set: Vec<(String, String)> = env_pairs(&ins.args)
                        .into_iter()
                        .map(|(name, value)| (name, expand(&value, &lookup).unwrap_or_default()))
                        .collect();
                    env.extend(set);
                }
                "EXPOSE" => {
                    for word in ins.args.split_whitespace() {
                        match exposed_port(word, &lookup) {
                            Ok(Some(port)) => facts.exposed.push(Exposed {
                                port,
                                line: ins.line,
                                written: word.to_string(),
                            }),
                            Ok(None) => {}
                            Err(why) => facts
                                .skipped
                                .push(format!("EXPOSE {word} (line {}): {why}", ins.line)),
                        }
                    }
                }
                "HEALTHCHECK" => {
                    facts.healthcheck = healthcheck(ins, &|name| env.get(name).cloned());
                }
                _ => {}
            }
        }
    }
    facts
}

/// The instructions in `text`, continuation lines joined, comments,
/// blank lines, parser directives and heredoc bodies left out.
pub fn instructions(text: &str) -> Vec<Instruction> {
    let mut escape = '\\';
    let mut directives = true;
    let mut heredoc_ends: VecDeque<(String, bool)> = VecDeque::new();
    let mut current: Option<(usize, String)> = None;
    let mut out = Vec::new();
    // A byte order mark (Windows editors write one) is not part of the
    // first instruction; Docker drops it too.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (i, line) in text.lines().enumerate() {
        if let Some((end, tabs)) = heredoc_ends.front() {
            let candidate = if *tabs {
                line.trim_start_matches('\t')
            } else {
                line
            };
            if candidate == end {
                heredoc_ends.pop_front();
            }
            continue;
        }
        let trimmed = line.trim_start();
        if directives {
            if let Some((key, value)) = directive(trimmed) {
                if key == "escape" {
                    escape = match value.as_str() {
                        "`" => '`',
                        _ => '\\',
                    };
                }
                continue;
            }
            directives = false;
        }
        // A comment or blank line, even inside a continuation (Docker drops both there).
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (body, continues) = match line.trim_end().strip_suffix(escape) {
            Some(body) => (body, true),
            None => (line, false),
        };
        match &mut current {
            Some((_, joined)) => joined.push_str(body),
            None => current = Some((i + 1, body.trim_start().to_string())),
        }
        if !continues {
            let (start, joined) = current.take().expect("set above");
            let ins = instruction(start, &joined);
            heredoc_ends.extend(heredocs(&ins));
            out.push(ins);
        }
    }
    // A file that ends inside a continuation: Docker takes what is there.
    if let Some((start, joined)) = current {
        out.push(instruction(start, &joined));
    }
    out
}

fn instruction(line: usize, text: &str) -> Instruction {
    let (keyword, args) = first_word(text);
    Instruction {
        line,
        keyword: keyword.to_ascii_uppercase(),
        args: args.trim().to_string(),
    }
}

/// `# key=value` at the top of the file, for the directives Docker knows.
fn directive(line: &str) -> Option<(String, String)> {
    let body = line.strip_prefix('#')?;
    let (key, value) = body.split_once('=')?;
    let key = key.trim().to_ascii_lowercase();
    let value = value.trim();
    let known = matches!(key.as_str(), "escape" | "syntax" | "check");
    (known && !value.is_empty() && !value.contains(char::is_whitespace))
        .then(|| (key, value.to_string()))
}

/// The end words of the heredocs an instruction opens (`<<EOF`, `<<-"EOF"`),
/// and whether leading tabs are stripped before comparing (`<<-`).
fn heredocs(ins: &Instruction) -> Vec<(String, bool)> {
    if !matches!(ins.keyword.as_str(), "RUN" | "COPY" | "ADD") {
        return Vec::new();
    }
    let mut ends = Vec::new();
    let mut rest = ins.args.as_str();
    while let Some(at) = rest.find("<<") {
        let mut after = &rest[at + 2..];
        rest = after;
        if after.starts_with('<') {
            // `<<<`: a here-string, not a heredoc.
            rest = after.trim_start_matches('<');
            continue;
        }
        let tabs = after.starts_with('-');
        if tabs {
            after = &after[1..];
        }
        let unquoted = after.trim_start_matches(['"', '\'']);
        let word: String = unquoted
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !word.is_empty() {
            ends.push((word, tabs));
        }
    }
    ends
}

struct Stage {
    /// `AS name`, lowercased (stage names are case-insensitive).
    name: Option<String>,
    /// The image or stage it is built from, lowercased.
    base: String,
    body: Vec<Instruction>,
}

fn stages(instructions: &[Instruction]) -> Vec<Stage> {
    let mut stages: Vec<Stage> = Vec::new();
    for ins in instructions {
        if ins.keyword == "FROM" {
            let words: Vec<&str> = ins
                .args
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let name = match words.as_slice() {
                [_, as_, name, ..] if as_.eq_ignore_ascii_case("as") => {
                    Some(name.to_ascii_lowercase())
                }
                _ => None,
            };
            stages.push(Stage {
                name,
                base: words.first().unwrap_or(&"").to_ascii_lowercase(),
                body: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.body.push(ins.clone());
        }
    }
    stages
}

/// `ARG name=default` values declared before the first FROM.
fn arg_defaults(instructions: &[Instruction]) -> BTreeMap<String, String> {
    let mut defaults = BTreeMap::new();
    for ins in instructions.iter().filter(|i| i.keyword == "ARG") {
        for word in words(&ins.args) {
            if let Some((name, value)) = word.split_once('=') {
                defaults.insert(name.to_string(), value.to_string());
            }
        }
    }
    defaults
}

/// `ENV a=1 b="two words"`, or the old `ENV name the rest of the line`.
fn env_pairs(args: &str) -> Vec<(String, String)> {
    let (first, rest) = first_word(args);
    if !first.contains('=') {
        return vec![(first.to_string(), unquote(rest.trim()))];
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

fn unquote(s: &str) -> String {
    words(s).join(" ")
}

fn first_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(at) => (&s[..at], &s[at..]),
        None => (s, ""),
    }
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
fn healthcheck(ins: &Instruction, env: &dyn Fn(&str) -> Option<String>) -> Option<Healthcheck> {
    let mut rest = ins.args.as_str();
    let mut options: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let (word, after) = first_word(rest);
        if let Some(option) = word.strip_prefix("--") {
            let (name, value) = option.split_once('=').unwrap_or((option, ""));
            options.insert(name.to_ascii_lowercase(), value.to_string());
            rest = after;
            continue;
        }
        if !word.eq_ignore_ascii_case("CMD") {
            return None;
        }
        rest = after.trim();
        break;
    }
    let command = match serde_json::from_str::<Vec<String>>(rest) {
        Ok(exec) => exec.join(" "),
        Err(_) => rest.to_string(),
    };
    let duration = |name: &str| {
        options
            .get(name)
            .and_then(|v| humantime::parse_duration(v).ok())
    };
    let first_check = match (duration("start-period"), duration("start-interval")) {
        (Some(period), Some(interval)) if !period.is_zero() => interval,
        _ => duration("interval").unwrap_or(Duration::from_secs(30)),
    };
    Some(Healthcheck {
        line: ins.line,
        url: check_url(&command, env),
        command,
        first_check,
    })
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
                    RUN echo 'EXPOSE 9999' # not a comment: only at a line's start\n";
        let all = instructions(text);
        let keywords: Vec<&str> = all.iter().map(|i| i.keyword.as_str()).collect();
        assert_eq!(keywords, ["FROM", "RUN", "EXPOSE", "RUN"]);
        assert_eq!(all[1].args, "echo a     && echo b");
        assert_eq!((all[2].line, all[2].args.as_str()), (6, "80   443"));
        assert_eq!(ports(text), [80, 443]);
    }

    #[test]
    fn a_byte_order_mark_and_crlf_line_ends_are_read_as_docker_reads_them() {
        assert_eq!(ports("\u{feff}FROM scratch\nEXPOSE 3000\n"), [3000]);
        assert_eq!(
            ports("\u{feff}# escape=`\r\nFROM scratch\r\nEXPOSE `\r\n  3001\r\n"),
            [3001]
        );
    }

    #[test]
    fn the_escape_directive_changes_the_continuation_character() {
        let text = "# escape=`\nFROM scratch\nEXPOSE 8080 `\n  9090\nWORKDIR C:\\\nEXPOSE 7070\n";
        assert_eq!(ports(text), [8080, 9090, 7070]);
        // Not at the top, it is only a comment.
        let late = "FROM scratch\n# escape=`\nEXPOSE 8080 `\nEXPOSE 9090\n";
        assert_eq!(instructions(late)[1].args, "8080 `");
    }

    #[test]
    fn heredoc_bodies_are_not_instructions() {
        let text = "FROM scratch\nRUN <<EOF\nEXPOSE 1111\nEOF\nCOPY <<-\"END\" /x\n\tEXPOSE 2222\n\tEND\nRUN cat <<< 'EXPOSE 3'\nEXPOSE 8080\n";
        assert_eq!(ports(text), [8080]);
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
        let text = "FROM golang AS build\nEXPOSE 1111\nFROM alpine AS base\nEXPOSE 2222\n\
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
