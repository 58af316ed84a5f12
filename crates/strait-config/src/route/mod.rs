//! Routing: virtual hosts, ordered routes, matchers and actions, compiled from Envoy's
//! `RouteConfiguration` into structures a worker walks without parsing or allocating.
//!
//! `matcher` decides whether a route applies to a request, `action` what happens then,
//! `retry` the timeouts and retry policy of a cluster action; `compile` builds it all with
//! field-path errors.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Deref;

pub mod action;
pub mod compile;
pub mod forward;
pub mod hash;
pub mod headers;
pub mod matcher;
pub mod per_filter;
pub mod retry;
pub mod upgrade;
pub mod vcluster;

pub use action::{ClusterAction, RouteAction};
pub use matcher::{PathMatcher, RequestRandom, RouteMatcher};

use crate::error::{ConfigErrors, FieldPath};
use envoy_api::pb::envoy::config::route::v3 as rt;

/// Compiles a `RouteConfiguration` ([`compile::compile_route_config`]) and builds its
/// lookup indexes (wildcard domains by length, routes by path literal).
pub fn compile_route_config(
    rc: &rt::RouteConfiguration,
    path: &FieldPath,
    clusters: &HashSet<String>,
    errs: &mut ConfigErrors,
) -> Option<RouteTable> {
    let mut table = compile::compile_route_config(rc, path, clusters, errs)?;
    table.build_indexes();
    Some(table)
}

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

/// Virtual hosts compiled for lookup without scanning. Compilation fills `exact`, `suffix`,
/// `prefix` and `default`; [`RouteTable::build_indexes`] then groups the wildcard domains by
/// length into hash maps (Envoy's own structure: for each length, longest first, one hash
/// lookup of the host's suffix/prefix of that length) and indexes each virtual host's
/// routes. A table whose indexes were not built is still matched correctly, by scanning.
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
    /// `internal_only_headers`: removed from every request not known to be internal (with
    /// no `internal_address_config`, all of them) before route matching, as in Envoy.
    pub internal_only_headers: std::sync::Arc<[http::HeaderName]>,
    /// `exact`, `suffix` and `prefix` indexed (built by `build_indexes`).
    wildcards: Option<WildcardIndex>,
    /// One entry per virtual host (built by `build_indexes`; `None`: too few routes to be
    /// worth an index).
    route_indexes: Vec<Option<RouteIndex>>,
}

/// The domains of a table in fast-hashing maps; wildcard domains by length: for each length
/// (longest first), the domain parts of that length.
#[derive(Debug, Default)]
struct WildcardIndex {
    exact: DomainMap,
    suffix: Vec<(usize, DomainMap)>,
    prefix: Vec<(usize, DomainMap)>,
}

type DomainMap = HashMap<Box<[u8]>, usize, BuildDomainHasher>;

/// A fast, well-mixed, unkeyed hash for domain lookups. The maps are built from the config
/// and never grow from requests, so a chosen Host can only pick which probe sequence of
/// a fixed table it walks.
#[derive(Debug, Default, Clone, Copy)]
struct BuildDomainHasher;

impl std::hash::BuildHasher for BuildDomainHasher {
    type Hasher = DomainHasher;
    fn build_hasher(&self) -> DomainHasher {
        DomainHasher(0x243f_6a88_85a3_08d3)
    }
}

struct DomainHasher(u64);

impl DomainHasher {
    #[inline]
    fn mix(&mut self, v: u64) {
        let m = u128::from(self.0 ^ v) * 0x9e37_79b9_7f4a_7c15;
        self.0 = (m as u64) ^ ((m >> 64) as u64);
    }
}

impl std::hash::Hasher for DomainHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.mix(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }
    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h
    }
}

fn by_length(list: &[(String, usize)]) -> Vec<(usize, DomainMap)> {
    let mut by_len: BTreeMap<usize, DomainMap> = BTreeMap::new();
    for (part, i) in list {
        by_len
            .entry(part.len())
            .or_default()
            .entry(part.as_bytes().into())
            .or_insert(*i);
    }
    by_len.into_iter().rev().collect()
}

/// Virtual hosts with fewer routes are scanned: an index does not pay off.
const INDEX_MIN_ROUTES: usize = 8;

impl RouteTable {
    /// Builds the wildcard-domain and route indexes (done by [`compile_route_config`]).
    pub fn build_indexes(&mut self) {
        self.wildcards = Some(WildcardIndex {
            exact: self
                .exact
                .iter()
                .map(|(d, i)| (d.as_bytes().into(), *i))
                .collect(),
            suffix: by_length(&self.suffix),
            prefix: by_length(&self.prefix),
        });
        self.route_indexes = self
            .vhosts
            .iter()
            .map(|vh| (vh.routes.len() >= INDEX_MIN_ROUTES).then(|| RouteIndex::build(&vh.routes)))
            .collect();
    }

    /// Envoy's virtual host selection: exact domain, then the longest `*suffix`, then the
    /// longest `prefix*` (a wildcard must leave at least one character of the host), then
    /// `*`. `host` must already be lowercase; with `ignore_port_in_host_matching` its port
    /// is dropped first.
    pub fn find_vhost(&self, host: &str) -> Option<SelectedVhost<'_>> {
        self.vhost_at(self.find_vhost_index(host)?)
    }

    /// The virtual host at index `i` of `vhosts`, with its route index.
    pub fn vhost_at(&self, i: usize) -> Option<SelectedVhost<'_>> {
        let vhost = self.vhosts.get(i)?;
        Some(SelectedVhost {
            vhost,
            index: self.route_indexes.get(i).and_then(Option::as_ref),
        })
    }

    /// The index in `vhosts` of the virtual host for `host` (see [`RouteTable::find_vhost`]).
    pub fn find_vhost_index(&self, host: &str) -> Option<usize> {
        // Envoy's fast path: only `*` (the Host is not even looked at).
        if self.exact.is_empty() && self.suffix.is_empty() && self.prefix.is_empty() {
            return self.default;
        }
        let host = if self.ignore_port_in_host_matching {
            strip_port(host)
        } else {
            host
        };
        let h = host.as_bytes();
        match &self.wildcards {
            Some(w) => {
                if let Some(&i) = w.exact.get(h) {
                    return Some(i);
                }
                for (len, parts) in &w.suffix {
                    if *len >= h.len() {
                        continue;
                    }
                    if let Some(&i) = parts.get(&h[h.len() - len..]) {
                        return Some(i);
                    }
                }
                for (len, parts) in &w.prefix {
                    if *len >= h.len() {
                        continue;
                    }
                    if let Some(&i) = parts.get(&h[..*len]) {
                        return Some(i);
                    }
                }
            }
            None => {
                if let Some(&i) = self.exact.get(host) {
                    return Some(i);
                }
                for (suffix, i) in &self.suffix {
                    if h.len() > suffix.len() && h.ends_with(suffix.as_bytes()) {
                        return Some(*i);
                    }
                }
                for (prefix, i) in &self.prefix {
                    if h.len() > prefix.len() && h.starts_with(prefix.as_bytes()) {
                        return Some(*i);
                    }
                }
            }
        }
        self.default
    }
}

/// Envoy's `HeaderUtility::getPortStart` applied: `host:port` -> `host`, `[v6]:port` ->
/// `[v6]`, `host:` -> `host`; the port need not be numeric. Like Envoy, a bare IPv6 address
/// loses what follows its last ':' (it is not a valid Host anyway).
pub fn strip_port(host: &str) -> &str {
    let Some(colon) = host.rfind(':') else {
        return host;
    };
    match host.rfind(']') {
        Some(v6_end) if v6_end > colon => host,
        _ => &host[..colon],
    }
}

/// The virtual host [`RouteTable::find_vhost`] selected, with its route index. Derefs to
/// the [`VirtualHost`].
#[derive(Debug, Clone, Copy)]
pub struct SelectedVhost<'a> {
    pub vhost: &'a VirtualHost,
    index: Option<&'a RouteIndex>,
}

impl<'a> SelectedVhost<'a> {
    /// The first route (in config order) whose matcher accepts the request, found through
    /// the route index when there is one.
    pub fn find_route(&self, req: &RequestView<'_>) -> Option<&'a Route> {
        match self.index {
            Some(index) => index.find(&self.vhost.routes, req),
            None => self.vhost.find_route(req),
        }
    }
}

impl Deref for SelectedVhost<'_> {
    type Target = VirtualHost;
    fn deref(&self) -> &VirtualHost {
        self.vhost
    }
}

#[derive(Debug)]
pub struct VirtualHost {
    pub name: String,
    pub routes: Vec<Route>,
    /// `virtual_clusters` (empty: no virtual cluster stats for this virtual host).
    pub virtual_clusters: Box<[vcluster::VirtualCluster]>,
    /// `typed_per_filter_config` of the virtual host.
    pub per_filter: per_filter::PerFilterConfigs,
}

impl VirtualHost {
    /// The first route whose matcher accepts the request (Envoy: routes in order), by
    /// scanning. Every route sees the same random value for `runtime_fraction`.
    pub fn find_route(&self, req: &RequestView<'_>) -> Option<&Route> {
        let random = RequestRandom::new();
        self.routes
            .iter()
            .find(|r| r.matcher.matches_with(req, &random))
    }
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub matcher: RouteMatcher,
    pub action: RouteAction,
    /// `typed_per_filter_config` of the route.
    pub per_filter: per_filter::PerFilterConfigs,
}

/// Candidate routes of one virtual host by the literal their path matcher requires.
///
/// A `prefix`, `path` or `path_separated_prefix` route can only match a path (without
/// query) that starts with its literal, so routes sit in a radix trie under their literal
/// (case-insensitive ones, lowercased, in a second trie walked with the path folded to
/// lowercase). A lookup walks the path once through each trie, visiting only the routes
/// whose literal is a prefix of the path, plus the routes without a literal (`safe_regex`).
/// First-match order is kept: among the candidates the lowest route index that fully
/// matches wins, and candidates at or after the best found so far are skipped.
#[derive(Debug, Default)]
pub struct RouteIndex {
    case_sensitive: Trie,
    folded: Trie,
    unindexed: Box<[u32]>,
}

impl RouteIndex {
    pub fn build(routes: &[Route]) -> Self {
        let mut index = RouteIndex {
            case_sensitive: Trie::new(),
            folded: Trie::new(),
            unindexed: Box::default(),
        };
        let mut unindexed = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            let Ok(i) = u32::try_from(i) else {
                break;
            };
            match r.matcher.path.literal_prefix() {
                Some((lit, false)) => index.case_sensitive.insert(lit.as_bytes(), i),
                Some((lit, true)) => index.folded.insert(&lit.as_bytes().to_ascii_lowercase(), i),
                None => unindexed.push(i),
            }
        }
        index.unindexed = unindexed.into();
        index
    }

    /// The first route (config order) that matches, among the candidates.
    pub fn find<'a>(&self, routes: &'a [Route], req: &RequestView<'_>) -> Option<&'a Route> {
        let path = path_without_query(req.path).as_bytes();
        let random = RequestRandom::new();
        let mut best = u32::MAX;
        let mut consider = |candidates: &[u32]| {
            for &i in candidates {
                if i >= best {
                    break;
                }
                if routes
                    .get(i as usize)
                    .is_some_and(|r| r.matcher.matches_with(req, &random))
                {
                    best = i;
                    break;
                }
            }
        };
        self.case_sensitive.walk(path, false, &mut consider);
        if !self.folded.is_empty() {
            self.folded.walk(path, true, &mut consider);
        }
        consider(&self.unindexed);
        routes.get(best as usize)
    }
}

/// A radix trie from byte strings to ascending route lists. Node 0 is the root.
#[derive(Debug, Default)]
struct Trie {
    nodes: Vec<TrieNode>,
}

#[derive(Debug, Default)]
struct TrieNode {
    /// The bytes on the edge into this node (empty for the root).
    label: Box<[u8]>,
    /// The first byte of each child's label, sorted; `child_ids` in the same order.
    child_bytes: Vec<u8>,
    child_ids: Vec<u32>,
    /// Routes whose literal ends exactly here, ascending.
    routes: Vec<u32>,
}

impl Trie {
    fn new() -> Self {
        Trie {
            nodes: vec![TrieNode::default()],
        }
    }

    fn is_empty(&self) -> bool {
        self.nodes.len() <= 1 && self.nodes.first().is_none_or(|n| n.routes.is_empty())
    }

    fn insert(&mut self, key: &[u8], route: u32) {
        let mut node = 0usize;
        let mut key = key;
        loop {
            let Some(&b) = key.first() else {
                self.nodes[node].routes.push(route);
                return;
            };
            match self.nodes[node].child_bytes.binary_search(&b) {
                Err(pos) => {
                    let new = self.nodes.len() as u32;
                    self.nodes.push(TrieNode {
                        label: key.into(),
                        child_bytes: Vec::new(),
                        child_ids: Vec::new(),
                        routes: vec![route],
                    });
                    self.nodes[node].child_bytes.insert(pos, b);
                    self.nodes[node].child_ids.insert(pos, new);
                    return;
                }
                Ok(pos) => {
                    let child = self.nodes[node].child_ids[pos] as usize;
                    let label = &self.nodes[child].label;
                    let common = label.iter().zip(key).take_while(|(a, b)| a == b).count();
                    if common < label.len() {
                        // Split the edge: node -> mid (common part) -> child (the rest).
                        let head: Box<[u8]> = label[..common].into();
                        let tail: Box<[u8]> = label[common..].into();
                        let mid = self.nodes.len() as u32;
                        self.nodes.push(TrieNode {
                            label: head,
                            child_bytes: vec![tail[0]],
                            child_ids: vec![child as u32],
                            routes: Vec::new(),
                        });
                        self.nodes[child].label = tail;
                        self.nodes[node].child_ids[pos] = mid;
                        node = mid as usize;
                    } else {
                        node = child;
                    }
                    key = &key[common..];
                }
            }
        }
    }

    /// Calls `f` with the routes of every node whose full key is a prefix of `path`
    /// (compared ignoring ASCII case when `fold`), shallowest first.
    fn walk(&self, path: &[u8], fold: bool, f: &mut impl FnMut(&[u32])) {
        let Some(mut node) = self.nodes.first() else {
            return;
        };
        let mut rest = path;
        loop {
            if !node.routes.is_empty() {
                f(&node.routes);
            }
            let Some(&b) = rest.first() else {
                return;
            };
            let b = if fold { b.to_ascii_lowercase() } else { b };
            // Few children per node: a linear scan of their first bytes is fastest.
            let Some(pos) = node.child_bytes.iter().position(|&c| c == b) else {
                return;
            };
            let Some(child) = node
                .child_ids
                .get(pos)
                .and_then(|&id| self.nodes.get(id as usize))
            else {
                return;
            };
            let Some(head) = rest.get(..child.label.len()) else {
                return;
            };
            // Labels are short: a byte loop beats a memcmp call.
            let same = if fold {
                head.iter()
                    .zip(child.label.iter())
                    .all(|(a, b)| a.to_ascii_lowercase() == *b)
            } else {
                head.iter().zip(child.label.iter()).all(|(a, b)| a == b)
            };
            if !same {
                return;
            }
            rest = &rest[child.label.len()..];
            node = child;
        }
    }
}

/// `:path` without its query and fragment (Envoy's `PathUtil::removeQueryAndFragment`).
pub fn path_without_query(path: &str) -> &str {
    // A byte scan: '?' and '#' are ASCII, so the cut is on a char boundary.
    match path.bytes().position(|b| b == b'?' || b == b'#') {
        Some(i) => path.get(..i).unwrap_or(path),
        None => path,
    }
}

/// Every Envoy field the routing modules implement, for the supported-field check.
pub fn supported_fields() -> impl Iterator<Item = &'static (&'static str, &'static [&'static str])>
{
    matcher::SUPPORTED
        .iter()
        .chain(action::SUPPORTED.iter())
        .chain(headers::SUPPORTED.iter())
        .chain(retry::SUPPORTED.iter())
        .chain(hash::SUPPORTED.iter())
        .chain(forward::SUPPORTED.iter())
        .chain(vcluster::SUPPORTED.iter())
        .chain(per_filter::SUPPORTED.iter())
        .chain(upgrade::SUPPORTED.iter())
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

    /// A route configuration from JSON, compiled (`indexed`: with its indexes).
    fn table(v: serde_json::Value, indexed: bool) -> RouteTable {
        let desc = envoy_api::pool()
            .get_message_by_name("envoy.config.route.v3.RouteConfiguration")
            .expect("RouteConfiguration descriptor");
        let rc: rt::RouteConfiguration = crate::load::message_from_json(v, &desc)
            .and_then(|d| {
                d.transcode_to()
                    .map_err(|e| ConfigErrors::one("", e.to_string()))
            })
            .unwrap_or_else(|e| panic!("{e}"));
        let mut errs = ConfigErrors::default();
        let t = if indexed {
            compile_route_config(&rc, &FieldPath::root(), &HashSet::new(), &mut errs)
        } else {
            compile::compile_route_config(&rc, &FieldPath::root(), &HashSet::new(), &mut errs)
        };
        assert!(errs.is_empty(), "{errs}");
        t.expect("route table")
    }

    fn vhost(name: &str, domains: &[&str]) -> serde_json::Value {
        serde_json::json!({"name": name, "domains": domains, "routes": [
            {"match": {"prefix": "/"}, "direct_response": {"status": 200}}]})
    }

    fn selected(t: &RouteTable, host: &str) -> String {
        t.find_vhost(host)
            .map(|v| v.name.clone())
            .unwrap_or_else(|| "-".into())
    }

    #[test]
    fn strip_port_is_envoys_get_port_start() {
        assert_eq!(strip_port("a.com:80"), "a.com");
        assert_eq!(strip_port("a.com"), "a.com");
        assert_eq!(strip_port("a.com:"), "a.com");
        assert_eq!(strip_port("a.com:abc"), "a.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("::1"), ":");
    }

    #[test]
    fn vhost_selection_like_envoy() {
        let cfg = serde_json::json!({"name": "t", "virtual_hosts": [
            vhost("default", &["*"]),
            vhost("nodot", &["*example.com"]),
            vhost("dotted", &["*.dotted.com"]),
            vhost("dash", &["*-bar.baz.com"]),
            vhost("baz", &["*.baz.com"]),
            vhost("suffix_port", &["*.ported.com:8080"]),
            vhost("prefix_short", &["w*"]),
            vhost("prefix_long", &["www.*"]),
            vhost("upper", &["UPPER.Example.org"]),
            vhost("v6", &["[::1]:8080"]),
            vhost("exact", &["www.example.com"]),
        ]});
        let cases = [
            ("myexample.com", "nodot"),
            ("example.com", "default"),
            ("dotted.com", "default"),
            (".dotted.com", "default"),
            ("a.b.dotted.com", "dotted"),
            ("foo-bar.baz.com", "dash"),
            ("foo.baz.com", "baz"),
            ("a.ported.com:8080", "suffix_port"),
            ("a.ported.com:9090", "default"),
            ("www.x.net", "prefix_long"),
            ("wx.net", "prefix_short"),
            ("www.", "prefix_short"),
            ("www.baz.com", "baz"),
            ("upper.example.org", "upper"),
            ("upper.example.org.", "default"),
            ("upper.example.org:", "default"),
            ("[::1]:8080", "v6"),
            ("www.example.com", "exact"),
            ("www.example.com:8080", "prefix_long"),
        ];
        for indexed in [false, true] {
            let t = table(cfg.clone(), indexed);
            for (host, want) in cases {
                assert_eq!(selected(&t, host), want, "{host} (indexed: {indexed})");
            }
        }
    }

    #[test]
    fn ignore_port_in_host_matching() {
        let cfg = serde_json::json!({"name": "t", "ignore_port_in_host_matching": true,
        "virtual_hosts": [
            vhost("default", &["*"]),
            vhost("exact", &["www.example.com"]),
            vhost("with_port", &["ported.example.com:8080"]),
            vhost("suffix", &["*.example.net"]),
            vhost("v6", &["[::1]"]),
        ]});
        let t = table(cfg, true);
        for (host, want) in [
            ("www.example.com:8080", "exact"),
            ("www.example.com:", "exact"),
            ("www.example.com:abc", "exact"),
            ("ported.example.com:8080", "default"),
            ("a.example.net:1", "suffix"),
            ("[::1]:9000", "v6"),
        ] {
            assert_eq!(selected(&t, host), want, "{host}");
        }
    }

    #[test]
    fn only_a_default_vhost_ignores_the_host() {
        let t = table(
            serde_json::json!({"name": "t", "virtual_hosts": [vhost("d", &["*"])]}),
            true,
        );
        assert_eq!(selected(&t, ""), "d");
        let t = table(
            serde_json::json!({"name": "t", "virtual_hosts": [vhost("a", &["a.com"])]}),
            true,
        );
        assert_eq!(selected(&t, "b.com"), "-");
    }

    #[test]
    fn trie_walk_visits_every_literal_prefix() {
        let mut t = Trie::new();
        for (i, k) in ["/api", "/api/v1", "/", "/apix", "/b", "/api", ""]
            .iter()
            .enumerate()
        {
            t.insert(k.as_bytes(), i as u32);
        }
        let mut seen = Vec::new();
        t.walk(b"/api/v1/users", false, &mut |r: &[u32]| {
            seen.extend_from_slice(r)
        });
        assert_eq!(seen, vec![6, 2, 0, 5, 1]);
        let mut seen = Vec::new();
        t.walk(b"/ap", false, &mut |r: &[u32]| seen.extend_from_slice(r));
        assert_eq!(seen, vec![6, 2]);
        let mut seen = Vec::new();
        t.walk(b"/API/V1", true, &mut |r: &[u32]| seen.extend_from_slice(r));
        assert_eq!(seen, vec![6, 2, 0, 5, 1]);
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

    /// The route index finds exactly what a scan in order finds.
    #[test]
    fn route_index_agrees_with_a_scan() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let words = ["", "a", "ab", "api", "API", "v1", "x", "Ab"];
        let pick_path = |rnd: &mut dyn FnMut(u64) -> u64| {
            let n = rnd(4);
            let mut p = String::new();
            for _ in 0..n {
                p.push('/');
                p.push_str(words[rnd(words.len() as u64) as usize]);
            }
            if p.is_empty() || rnd(5) == 0 {
                p.push('/');
            }
            p
        };
        for round in 0..40 {
            let mut routes = Vec::new();
            for _ in 0..(8 + rnd(40)) {
                let lit = pick_path(&mut rnd);
                let cs = rnd(3) != 0;
                let m = match rnd(6) {
                    0 | 1 => serde_json::json!({"prefix": lit, "case_sensitive": cs}),
                    2 => serde_json::json!({"path": lit, "case_sensitive": cs}),
                    3 if lit.len() >= 2 && !lit.ends_with('/') => {
                        serde_json::json!({"path_separated_prefix": lit, "case_sensitive": cs})
                    }
                    4 => {
                        serde_json::json!({"safe_regex": {"regex": format!("{}.*", regex::escape(&lit))}})
                    }
                    _ => {
                        serde_json::json!({"prefix": lit, "headers": [{"name": "x-h", "present_match": true}]})
                    }
                };
                routes.push(serde_json::json!({"match": m, "direct_response": {"status": 200}}));
            }
            let cfg = serde_json::json!({"name": "t", "virtual_hosts": [
                {"name": "v", "domains": ["*"], "routes": routes}]});
            let t = table(cfg, true);
            let sel = t.find_vhost("h").expect("vhost");
            assert!(sel.index.is_some());
            let method = http::Method::GET;
            for _ in 0..200 {
                let mut path = pick_path(&mut rnd);
                if rnd(4) == 0 {
                    path.push_str("?q=/api");
                }
                let mut headers = http::HeaderMap::new();
                if rnd(2) == 0 {
                    headers.insert("x-h", http::HeaderValue::from_static("1"));
                }
                let req = RequestView {
                    path: &path,
                    method: &method,
                    headers: &headers,
                    authority: "h",
                    scheme: "http",
                };
                let by_index = sel.find_route(&req).map(|r| r as *const Route);
                let by_scan = sel.vhost.find_route(&req).map(|r| r as *const Route);
                assert_eq!(by_index, by_scan, "round {round}: {path}");
            }
        }
    }
}
