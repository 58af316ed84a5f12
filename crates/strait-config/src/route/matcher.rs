//! Route matchers: does this route apply to this request?

use envoy_api::pb::envoy::config::route::v3 as rt;

use super::{RequestView, path_without_query};
use crate::error::{ConfigErrors, FieldPath};

pub const SUPPORTED: &[(&str, &[&str])] = &[
    (
        "envoy.config.route.v3.RouteMatch",
        &["prefix", "path", "safe_regex", "case_sensitive"],
    ),
    (
        "envoy.type.matcher.v3.RegexMatcher",
        &["regex", "google_re2"],
    ),
    ("envoy.type.matcher.v3.RegexMatcher.GoogleRE2", &[]),
];

/// A compiled `RouteMatch`: every condition must hold.
#[derive(Debug)]
pub struct RouteMatcher {
    pub path: PathMatcher,
}

impl RouteMatcher {
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        self.path.matches(req.path)
    }
}

#[derive(Debug)]
pub enum PathMatcher {
    /// Matches the start of `:path` (query included), like Envoy.
    Prefix {
        prefix: String,
        case_sensitive: bool,
    },
    /// Matches the path without the query exactly.
    Path { path: String, case_sensitive: bool },
    /// The whole path without the query must match.
    Regex(regex::Regex),
}

impl PathMatcher {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatcher::Prefix {
                prefix,
                case_sensitive,
            } => {
                if *case_sensitive {
                    path.starts_with(prefix.as_str())
                } else {
                    path.len() >= prefix.len()
                        && path.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
                }
            }
            PathMatcher::Path {
                path: want,
                case_sensitive,
            } => {
                let p = path_without_query(path);
                if *case_sensitive {
                    p == want
                } else {
                    p.eq_ignore_ascii_case(want)
                }
            }
            PathMatcher::Regex(re) => re.is_match(path_without_query(path)),
        }
    }
}

/// Compiles a `RouteMatch`.
pub fn compile_match(
    m: &rt::RouteMatch,
    mp: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<RouteMatcher> {
    use rt::route_match::PathSpecifier as PS;
    let case_sensitive = m.case_sensitive.as_ref().map(|v| v.value).unwrap_or(true);
    let path = match &m.path_specifier {
        Some(PS::Prefix(p)) => PathMatcher::Prefix {
            prefix: p.clone(),
            case_sensitive,
        },
        Some(PS::Path(p)) => PathMatcher::Path {
            path: p.clone(),
            case_sensitive,
        },
        Some(PS::SafeRegex(re)) => {
            // Envoy's safe_regex must match the whole path: anchor it.
            match regex::Regex::new(&re.regex)
                .and_then(|_| regex::Regex::new(&format!("^(?:{})$", re.regex)))
            {
                Ok(re) => PathMatcher::Regex(re),
                Err(e) => {
                    errs.push(
                        mp.field("safe_regex").field("regex").to_string(),
                        format!("invalid regex {:?}: {e}", re.regex),
                    );
                    return None;
                }
            }
        }
        Some(_) => {
            errs.push(mp.to_string(), "this path matcher is not supported by Strait yet (prefix, path and safe_regex are)");
            return None;
        }
        None => {
            errs.push(
                mp.to_string(),
                "one of prefix, path or safe_regex must be set",
            );
            return None;
        }
    };
    Some(RouteMatcher { path })
}
