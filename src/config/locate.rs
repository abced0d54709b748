//! Turns parser errors into `file:line:column: key.path: message`.
//!
//! The YAML parser knows where an error is but not which key path leads
//! there; block-style YAML encodes the path in indentation, so it is read back
//! from the lines above the error.

use crate::error::Error;

/// Describes a deserialization error with its location and key path.
pub(super) fn describe(e: &serde_saphyr::Error, text: &str, origin: &str) -> Error {
    let message = message_of(e);
    match e.location() {
        Some(loc) if loc.line() > 0 => {
            let line = loc.line() as usize;
            let path = key_path_at(text, line);
            let key = if path.is_empty() {
                String::new()
            } else {
                format!("{path}: ")
            };
            Error::Config(format!(
                "{origin}:{line}:{}: {key}{message}\n{}",
                loc.column(),
                excerpt(text, line)
            ))
        }
        _ => Error::Config(format!("{origin}: {message}")),
    }
}

/// Reports `message` at the line where `path` is written, else where its
/// nearest written parent is (a key inside a flow mapping, `{ host: a }`),
/// else at the file.
pub(super) fn at_key(text: &str, origin: &str, path: &[&str], message: &str) -> Error {
    let dotted = path.join(".");
    let found = (1..=path.len())
        .rev()
        .find_map(|n| find_key(text, &path[..n]));
    match found {
        Some((line, column)) => Error::Config(format!(
            "{origin}:{line}:{column}: {dotted}: {message}\n{}",
            excerpt(text, line)
        )),
        None => Error::Config(format!("{origin}: {dotted}: {message}")),
    }
}

/// A parser error's message, without saphyr's own position and snippet.
pub(super) fn message_of(e: &serde_saphyr::Error) -> String {
    strip_position(&e.without_snippet().to_string())
}

/// Whether the key at `path` is written in `text` (not only a parent).
pub(super) fn is_written(text: &str, path: &[&str]) -> bool {
    find_key(text, path).is_some()
}

/// saphyr adds "error: line L column C: " before and sometimes " at line L,
/// column C" after the message; we print our own position instead.
fn strip_position(s: &str) -> String {
    let mut s = s.trim().trim_start_matches("error: ");
    if let Some(rest) = s.strip_prefix("line ") {
        if let Some(idx) = rest.find(": ") {
            if rest[..idx].contains("column") {
                s = &rest[idx + 2..];
            }
        }
    }
    let first = s.lines().next().unwrap_or_default();
    match first.rfind(" at line ") {
        Some(idx) if first[idx..].contains(", column ") => first[..idx].to_string(),
        _ => first.to_string(),
    }
}

fn excerpt(text: &str, line: usize) -> String {
    match text.lines().nth(line.saturating_sub(1)) {
        Some(l) => format!("  {line:>4} | {}", without_url_passwords(l)),
        None => String::new(),
    }
}

/// `l` with the password of every `scheme://user:password@` blanked: an
/// error's excerpt goes to logs the file does not.
fn without_url_passwords(l: &str) -> String {
    let mut out = String::new();
    let mut rest = l;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || "/'\",]}".contains(c))
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rsplit_once('@') {
            Some((userinfo, host)) if userinfo.contains(':') => {
                let user = userinfo.split(':').next().unwrap_or("");
                out.push_str(&format!("{user}:…@{host}"));
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// The key written on a line (`  key: value` or `- key: value`), and its indent.
fn key_on(line: &str) -> Option<(usize, &str)> {
    let trimmed = line.trim_start();
    if trimmed.starts_with('#') || trimmed.is_empty() {
        return None;
    }
    let indent = line.len() - trimmed.len();
    let (indent, body) = match trimmed.strip_prefix("- ") {
        Some(rest) => (indent + 2, rest),
        None => (indent, trimmed),
    };
    // A key ends at ": " or at a ':' ending the line; a ':' inside a
    // scalar (`- ssh://web1`, `127.0.0.1:5000`) is not one.
    let key = match body.split_once(": ") {
        Some((key, _)) => key,
        None => body.trim_end().strip_suffix(':')?,
    }
    .trim();
    let is_key = !key.is_empty() && !key.contains(' ') && !key.starts_with(['{', '[', '"', '\'']);
    is_key.then_some((indent, key))
}

/// The dotted key path that leads to `line` (1-based), read from indentation.
pub(super) fn key_path_at(text: &str, line: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let Some(start) = lines.get(line.saturating_sub(1)) else {
        return String::new();
    };
    let mut parts = Vec::new();
    let mut limit = match key_on(start) {
        Some((indent, key)) => {
            parts.push(key);
            indent
        }
        None => start.len() - start.trim_start().len(),
    };
    for l in lines[..line.saturating_sub(1)].iter().rev() {
        if limit == 0 {
            break;
        }
        if let Some((indent, key)) = key_on(l) {
            if indent < limit {
                parts.push(key);
                limit = indent;
            }
        }
    }
    parts.reverse();
    parts.join(".")
}

/// Line and column (1-based) of the key at `path`, if it is written.
fn find_key(text: &str, path: &[&str]) -> Option<(usize, usize)> {
    text.lines().enumerate().find_map(|(i, l)| {
        let (indent, key) = key_on(l)?;
        (key == *path.last()? && key_path_at(text, i + 1) == path.join("."))
            .then_some((i + 1, indent + 1))
    })
}
