//! A static site's rewrites, redirects and headers (Render's `routes` and
//! `headers`): read by berth-spec, applied by the router.

use serde::{Deserialize, Serialize};

/// A rewrite or a redirect. `source` is a path, or a prefix ending in `*`;
/// a `*` in `destination` is what the source's `*` matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteRule {
    /// The path it applies to.
    pub source: String,
    /// The path served instead (a rewrite) or sent to (a redirect).
    pub destination: String,
    /// `None`: a rewrite; else a redirect with this status (301 or 302…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<u16>,
}

/// A header added to answers for paths matching `path` (a path, or a
/// prefix ending in `*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteHeader {
    /// The paths it applies to.
    pub path: String,
    /// The header's name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// What `pattern` (a path, or a prefix ending in `*`) matches of `path`:
/// `Some("")` for an exact match, the rest after the prefix for a `*`.
pub fn match_path<'a>(pattern: &str, path: &'a str) -> Option<&'a str> {
    match pattern.strip_suffix('*') {
        Some(prefix) => path.strip_prefix(prefix),
        None => (pattern == path).then_some(""),
    }
}

impl SiteRule {
    /// Where the rule sends `path`, when it applies.
    pub fn destination_for(&self, path: &str) -> Option<String> {
        let matched = match_path(&self.source, path)?;
        let to = self.destination.replacen('*', matched, 1);
        // A path stays a path on this site: `/blog//evil.example` must not
        // become `//evil.example`, another host to a browser.
        Some(match self.destination.starts_with('/') {
            true => format!("/{}", to.trim_start_matches(['/', '\\'])),
            false => to,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exact_paths_and_prefixes_with_a_star() {
        assert_eq!(match_path("/old", "/old"), Some(""));
        assert_eq!(match_path("/old", "/older"), None);
        assert_eq!(match_path("/blog/*", "/blog/a/b"), Some("a/b"));
        assert_eq!(match_path("/*", "/anything"), Some("anything"));
        let rule = SiteRule {
            source: "/blog/*".into(),
            destination: "/news/*".into(),
            redirect: Some(301),
        };
        assert_eq!(rule.destination_for("/blog/x").as_deref(), Some("/news/x"));
        assert_eq!(rule.destination_for("/other"), None);
        let everything = SiteRule {
            source: "/blog/*".into(),
            destination: "/*".into(),
            redirect: Some(301),
        };
        assert_eq!(
            everything.destination_for("/blog//evil.example").as_deref(),
            Some("/evil.example")
        );
        assert_eq!(
            everything
                .destination_for("/blog/\\\\evil.example")
                .as_deref(),
            Some("/evil.example")
        );
    }
}
