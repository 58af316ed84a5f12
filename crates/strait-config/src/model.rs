//! The compiled, immutable runtime model that workers read. Built once per config version
//! on the control thread, shared as `Arc`s; nothing here is parsed on the request path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strait_accesslog::Formatter;

/// A whole validated bootstrap, compiled.
#[derive(Debug)]
pub struct Config {
    pub node: NodeInfo,
    pub admin: Option<AdminSpec>,
    pub listeners: Vec<Arc<ListenerSpec>>,
    pub clusters: Vec<Arc<ClusterSpec>>,
    pub stats_flush_interval: Duration,
    /// The loaded bootstrap as Envoy JSON (snake_case), for `/config_dump`.
    pub bootstrap_json: serde_json::Value,
}

#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub id: String,
    pub cluster: String,
    pub zone: String,
}

#[derive(Debug)]
pub struct AdminSpec {
    pub address: SocketAddr,
    pub access_logs: Vec<AccessLogSpec>,
}

#[derive(Debug)]
pub struct ListenerSpec {
    pub name: String,
    pub address: SocketAddr,
    /// `listener.<stat_prefix or address>.` without the trailing dot.
    pub stat_prefix: String,
    pub reuse_port: bool,
    pub buffer_limit_bytes: u32,
    pub hcm: Arc<HcmSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Auto,
    Http1,
    Http2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerHeader {
    Overwrite,
    AppendIfAbsent,
    PassThrough,
}

#[derive(Debug)]
pub struct HcmSpec {
    pub stat_prefix: String,
    pub codec: Codec,
    pub routes: Arc<RouteTable>,
    pub server_name: String,
    pub server_header: ServerHeader,
    pub use_remote_address: bool,
    pub xff_num_trusted_hops: u32,
    pub skip_xff_append: bool,
    pub generate_request_id: bool,
    pub preserve_external_request_id: bool,
    pub always_set_request_id_in_response: bool,
    pub max_request_headers_kb: u32,
    pub max_headers_count: u32,
    /// Connection idle timeout (`common_http_protocol_options.idle_timeout`, default 1 h).
    pub idle_timeout: Option<Duration>,
    pub stream_idle_timeout: Option<Duration>,
    pub request_timeout: Option<Duration>,
    pub drain_timeout: Duration,
    pub accept_http_10: bool,
    pub default_host_for_http_10: Option<String>,
    pub via: Option<String>,
    pub suppress_envoy_headers: bool,
    pub h2: H2Settings,
    pub access_logs: Vec<AccessLogSpec>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct H2Settings {
    pub max_concurrent_streams: Option<u32>,
    pub initial_stream_window_size: Option<u32>,
    pub initial_connection_window_size: Option<u32>,
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
    /// First route whose matcher accepts `path` (the `:path`, query included).
    pub fn find_route(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.matcher.matches(path))
    }
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub matcher: PathMatcher,
    pub action: RouteAction,
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

pub fn path_without_query(path: &str) -> &str {
    match path.find(['?', '#']) {
        Some(i) => &path[..i],
        None => path,
    }
}

#[derive(Debug)]
pub enum RouteAction {
    Cluster {
        cluster: Arc<str>,
        /// `None` = disabled (`timeout: 0s`). Envoy's default is 15 s.
        timeout: Option<Duration>,
        cluster_not_found_status: u16,
    },
    DirectResponse {
        status: u16,
        body: Option<Bytes>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    Http2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
}

#[derive(Debug)]
pub struct ClusterSpec {
    pub name: String,
    pub connect_timeout: Duration,
    pub lb_policy: LbPolicy,
    pub endpoints: Vec<EndpointSpec>,
    pub protocol: UpstreamProtocol,
    pub h2: H2Settings,
    pub idle_timeout: Option<Duration>,
    pub max_requests_per_connection: Option<u32>,
    pub buffer_limit_bytes: u32,
}

#[derive(Debug, Clone)]
pub struct EndpointSpec {
    pub address: SocketAddr,
    pub weight: u32,
    pub hostname: String,
}

#[derive(Debug, Clone)]
pub enum AccessLogSink {
    File(String),
    Stdout,
    Stderr,
}

#[derive(Debug, Clone)]
pub struct AccessLogSpec {
    pub sink: AccessLogSink,
    pub format: Arc<Formatter>,
}

#[cfg(test)]
mod tests {
    use super::*;

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
