//! `.dockerignore` matching, as the Docker CLI does it: patterns relative to
//! the context root, `*` within a path segment, `**` across segments, `!` to
//! re-include, the last matching pattern wins, and a pattern that matches a
//! folder excludes everything under it.

use globset::{GlobBuilder, GlobMatcher};

pub struct DockerIgnore {
    rules: Vec<(GlobMatcher, bool)>,
}

impl DockerIgnore {
    pub fn parse(text: &str) -> Result<DockerIgnore, String> {
        let mut rules = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (negated, pattern) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            let pattern = pattern.trim_start_matches("./").trim_start_matches('/');
            let pattern = pattern.trim_end_matches('/');
            if pattern.is_empty() {
                continue;
            }
            let glob = GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .map_err(|e| format!(".dockerignore line {}: {e}", n + 1))?;
            rules.push((glob.compile_matcher(), negated));
        }
        Ok(DockerIgnore { rules })
    }

    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|(_, negated)| *negated)
    }

    /// Whether `path` (relative, '/'-separated) is left out of the context.
    pub fn excludes(&self, path: &str) -> bool {
        let mut excluded = false;
        for (glob, negated) in &self.rules {
            let hit = ancestors_and_self(path).any(|p| glob.is_match(p));
            if hit {
                excluded = !negated;
            }
        }
        excluded
    }
}

fn ancestors_and_self(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/')
        .map(move |(i, _)| &path[..i])
        .chain(std::iter::once(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_like_the_docker_cli() {
        let d = DockerIgnore::parse(
            "# comment\ntarget\n*.log\n**/*.tmp\n/secrets/\n!secrets/public.pem\n",
        )
        .unwrap();
        assert!(d.excludes("target"));
        assert!(
            d.excludes("target/debug/app"),
            "a folder excludes its contents"
        );
        assert!(d.excludes("build.log"));
        assert!(!d.excludes("logs/build.log"), "* does not cross '/'");
        assert!(d.excludes("a/b/c.tmp"));
        assert!(d.excludes("secrets/key"));
        assert!(!d.excludes("secrets/public.pem"), "! re-includes");
        assert!(!d.excludes("src/main.rs"));
        assert!(d.has_exceptions());
    }
}
