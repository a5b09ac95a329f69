//! `rewrites`: path templates for endpoints that moved (docs/migration.md).
//! `{ method: GET, from: "/v1/expenses/{id}", to: "/v2/expenses/{id}" }`
//! matches whole segments (a capture is a whole, non-empty segment), keeps
//! the query as sent, and only ever changes the path: the host and the
//! credential are the tenant's, whatever a rule says.

use std::fmt;

use http::Method;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Capture(String),
}

/// A parsed `/a/{b}/c`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathTemplate {
    pub text: String,
    pub segments: Vec<Segment>,
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PathTemplate {
    pub fn parse(text: &str) -> Result<PathTemplate, String> {
        if !text.starts_with('/') || text.starts_with("//") {
            return Err(format!("`{text}` is not a path template (expected /segment/{{capture}}/...)"));
        }
        if text.contains(['?', '#', ' ']) || text.contains("://") {
            return Err(format!("`{text}`: a template is a path only (no query, fragment, space or host)"));
        }
        let mut segments = Vec::new();
        for seg in text[1..].split('/') {
            if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                let ok = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                    && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if !ok {
                    return Err(format!("`{{{name}}}` is not a capture name (expected lowercase letters, digits, _)"));
                }
                segments.push(Segment::Capture(name.to_string()));
            } else if seg.contains(['{', '}']) {
                return Err(format!("`{seg}`: a capture is a whole segment, such as /{{id}}/"));
            } else {
                segments.push(Segment::Literal(seg.to_string()));
            }
        }
        Ok(PathTemplate { text: text.to_string(), segments })
    }

    pub fn captures(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Capture(n) => Some(n.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// The captured values if `path` matches (same number of segments,
    /// literals equal, captures non-empty).
    fn matches<'p>(&self, path: &'p str) -> Option<Vec<(&str, &'p str)>> {
        let rest = path.strip_prefix('/')?;
        let mut got = Vec::new();
        let mut parts = rest.split('/');
        for seg in &self.segments {
            let part = parts.next()?;
            match seg {
                Segment::Literal(l) if l == part => {}
                Segment::Literal(_) => return None,
                Segment::Capture(_) if part.is_empty() => return None,
                Segment::Capture(n) => got.push((n.as_str(), part)),
            }
        }
        parts.next().is_none().then_some(got)
    }
}

/// One rule, checked by the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RewriteRule {
    pub method: Option<Method>,
    pub from: PathTemplate,
    pub to: PathTemplate,
    /// `GET /v1/x/{id} -> /v2/x/{id}`: the metric label, the access log's and `explain`'s words.
    pub label: String,
}

impl RewriteRule {
    pub fn new(method: Option<Method>, from: PathTemplate, to: PathTemplate) -> RewriteRule {
        let label = match &method {
            Some(m) => format!("{m} {from} -> {to}"),
            None => format!("{from} -> {to}"),
        };
        RewriteRule { method, from, to, label }
    }

    /// The new path (without the query) if this rule applies.
    pub fn apply(&self, method: &Method, path: &str) -> Option<String> {
        if self.method.as_ref().is_some_and(|m| m != method) {
            return None;
        }
        let got = self.from.matches(path)?;
        let mut out = String::with_capacity(path.len() + 8);
        for seg in &self.to.segments {
            out.push('/');
            match seg {
                Segment::Literal(l) => out.push_str(l),
                Segment::Capture(n) => out.push_str(got.iter().find(|(k, _)| k == n).map_or("", |(_, v)| v)),
            }
        }
        Some(out)
    }

    /// Whether some request could match both rules.
    pub fn overlaps(&self, other: &RewriteRule) -> bool {
        let methods = match (&self.method, &other.method) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        methods
            && self.from.segments.len() == other.from.segments.len()
            && self.from.segments.iter().zip(&other.from.segments).all(|(a, b)| match (a, b) {
                (Segment::Literal(x), Segment::Literal(y)) => x == y,
                _ => true,
            })
    }
}

/// The first rule in `rules` that applies: it and the new path.
pub fn rewrite<'r>(rules: &'r [RewriteRule], method: &Method, path: &str) -> Option<(&'r RewriteRule, String)> {
    rules.iter().find_map(|r| r.apply(method, path).map(|p| (r, p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(m: Option<&str>, from: &str, to: &str) -> RewriteRule {
        RewriteRule::new(
            m.map(|m| m.parse().unwrap()),
            PathTemplate::parse(from).unwrap(),
            PathTemplate::parse(to).unwrap(),
        )
    }

    #[test]
    fn rewrites_whole_segments_only() {
        let r = rule(Some("GET"), "/v1/expenses/{id}", "/v2/expenses/{id}");
        assert_eq!(r.apply(&Method::GET, "/v1/expenses/42"), Some("/v2/expenses/42".into()));
        assert_eq!(r.apply(&Method::POST, "/v1/expenses/42"), None, "method");
        assert_eq!(r.apply(&Method::GET, "/v1/expenses/42/receipts"), None, "segment count");
        assert_eq!(r.apply(&Method::GET, "/v1/expenses/"), None, "empty capture");
        assert_eq!(r.apply(&Method::GET, "/v1/expensesx/42"), None);
        let swap = rule(None, "/v1/{a}/x/{b}", "/v2/{b}/{a}");
        assert_eq!(swap.apply(&Method::DELETE, "/v1/p/x/q"), Some("/v2/q/p".into()));
        assert_eq!(r.label, "GET /v1/expenses/{id} -> /v2/expenses/{id}");
    }

    #[test]
    fn overlap_and_parse_errors() {
        assert!(rule(None, "/v1/a/{id}", "/v2/a").overlaps(&rule(Some("GET"), "/v1/{x}/7", "/v2/b")));
        assert!(!rule(Some("GET"), "/v1/a/{id}", "/v2/a").overlaps(&rule(Some("POST"), "/v1/a/{id}", "/v2/b")));
        assert!(!rule(None, "/v1/a/{id}", "/v2/a").overlaps(&rule(None, "/v1/b/{id}", "/v2/b")));
        assert!(!rule(None, "/v1/a", "/v2/a").overlaps(&rule(None, "/v1/a/{id}", "/v2/b")));
        for bad in ["v1/x", "//evil.example/x", "/v1/x?y=1", "/v1/x{id}", "/v1/{Id}", "https://h/x"] {
            assert!(PathTemplate::parse(bad).is_err(), "{bad}");
        }
    }
}
