//! Routing: virtual hosts, ordered routes, matchers and actions, compiled from Envoy's
//! `RouteConfiguration` into structures a worker walks without parsing or allocating.
//!
//! `matcher` decides whether a route applies to a request, `action` what happens then,
//! `retry` the timeouts and retry policy of a cluster action; `compile` builds it all with
//! field-path errors.

use std::collections::HashMap;

pub mod action;
pub mod compile;
pub mod matcher;
pub mod retry;

pub use action::{ClusterAction, RouteAction};
pub use compile::compile_route_config;
pub use matcher::{PathMatcher, RouteMatcher};

/// What route matching may look at in a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// `:path`, query string included.
    pub path: &'a str,
    pub method: &'a http::Method,
    pub headers: &'a http::HeaderMap,
    /// `:authority` / `host`, as received.
    pub authority: &'a str,
    pub scheme: &'a str,
}

/// Virtual hosts compiled for lookup without scanning: exact domains in a map, wildcard
/// domains grouped by length (longest first, as Envoy prefers the longest wildcard).
#[derive(Debug, Default)]
pub struct RouteTable {
    pub name: String,
    pub vhosts: Vec<VirtualHost>,
    pub exact: HashMap<String, usize>,
    /// `*.example.com` stored as ".example.com" (the part after `*`), longest first.
    pub suffix: Vec<(String, usize)>,
    /// `example.*` stored as "example." (the part before `*`), longest first.
    pub prefix: Vec<(String, usize)>,
    pub default: Option<usize>,
    pub ignore_port_in_host_matching: bool,
}

impl RouteTable {
    /// Envoy's virtual host selection: exact, then longest `*suffix`, then longest
    /// `prefix*`, then `*`. `host` must already be lowercase.
    pub fn find_vhost(&self, host: &str) -> Option<&VirtualHost> {
        if self.vhosts.len() == 1 && self.default.is_some() && self.exact.is_empty() {
            return self.vhosts.first();
        }
        let host = if self.ignore_port_in_host_matching {
            strip_port(host)
        } else {
            host
        };
        if let Some(&i) = self.exact.get(host) {
            return self.vhosts.get(i);
        }
        for (suffix, i) in &self.suffix {
            if host.len() > suffix.len() && host.ends_with(suffix.as_str()) {
                return self.vhosts.get(*i);
            }
        }
        for (prefix, i) in &self.prefix {
            if host.len() > prefix.len() && host.starts_with(prefix.as_str()) {
                return self.vhosts.get(*i);
            }
        }
        self.default.and_then(|i| self.vhosts.get(i))
    }
}

/// `host:port` -> `host`, `[v6]:port` -> `[v6]`; a bare IPv6 address is left alone.
pub fn strip_port(host: &str) -> &str {
    if let Some(end) = host.rfind(']') {
        return &host[..=end];
    }
    match host.rfind(':') {
        Some(i) if host[..i].find(':').is_none() => &host[..i],
        _ => host,
    }
}

#[derive(Debug)]
pub struct VirtualHost {
    pub name: String,
    pub routes: Vec<Route>,
}

impl VirtualHost {
    /// The first route whose matcher accepts the request (Envoy: routes in order).
    pub fn find_route(&self, req: &RequestView<'_>) -> Option<&Route> {
        self.routes.iter().find(|r| r.matcher.matches(req))
    }
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub matcher: RouteMatcher,
    pub action: RouteAction,
}

pub fn path_without_query(path: &str) -> &str {
    match path.find(['?', '#']) {
        Some(i) => &path[..i],
        None => path,
    }
}

/// Every Envoy field the routing modules implement, for the supported-field check.
pub fn supported_fields() -> impl Iterator<Item = &'static (&'static str, &'static [&'static str])>
{
    matcher::SUPPORTED
        .iter()
        .chain(action::SUPPORTED.iter())
        .chain(retry::SUPPORTED.iter())
        .chain(SUPPORTED.iter())
}

const SUPPORTED: &[(&str, &[&str])] = &[
    (
        "envoy.config.route.v3.RouteConfiguration",
        &["name", "virtual_hosts", "ignore_port_in_host_matching"],
    ),
    (
        "envoy.config.route.v3.VirtualHost",
        &["name", "domains", "routes"],
    ),
    (
        "envoy.config.route.v3.Route",
        &["name", "match", "route", "direct_response"],
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::matcher::PathMatcher;

    #[test]
    fn strip_port_forms() {
        assert_eq!(strip_port("a.com:80"), "a.com");
        assert_eq!(strip_port("a.com"), "a.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("::1"), "::1");
    }

    #[test]
    fn prefix_and_path_matching() {
        let p = PathMatcher::Prefix {
            prefix: "/api".into(),
            case_sensitive: true,
        };
        assert!(p.matches("/api/x?y"));
        assert!(!p.matches("/API/x"));
        let p = PathMatcher::Prefix {
            prefix: "/api".into(),
            case_sensitive: false,
        };
        assert!(p.matches("/API/x"));
        let p = PathMatcher::Path {
            path: "/a".into(),
            case_sensitive: true,
        };
        assert!(p.matches("/a?x=1"));
        assert!(!p.matches("/a/b"));
    }
}
