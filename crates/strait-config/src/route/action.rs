//! Route actions: what happens to a request its route matched — forward it to a cluster
//! (named, from a header, or picked by weight), redirect it, or answer it directly — and
//! the rewrites and header mutations that go with it.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;

use crate::cluster::subset::MetadataMatch;

use bytes::Bytes;
use envoy_api::pb::envoy::config::route::v3 as rt;
use envoy_api::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute;
use http::header::{HeaderName, HeaderValue};

use super::compile::RouteContext;
use super::headers::{
    self, Direction, HeaderMutation, MutationChain, RouteHeaders, chain_reads_request,
};
use super::retry::{Timeouts, compile_timeouts};
use crate::compile::common::data_source;
use crate::error::{ConfigErrors, FieldPath};

pub const SUPPORTED: &[(&str, &[&str])] = &[
    ("envoy.config.route.v3.Route", &["redirect"]),
    (
        "envoy.config.route.v3.RouteAction",
        &[
            "cluster",
            "cluster_header",
            "weighted_clusters",
            "cluster_not_found_response_code",
            "prefix_rewrite",
            "regex_rewrite",
            "host_rewrite_literal",
            "auto_host_rewrite",
            "host_rewrite_header",
            "host_rewrite_path_regex",
            "append_x_forwarded_host",
            "metadata_match",
        ],
    ),
    (
        "envoy.config.route.v3.WeightedCluster",
        &["clusters", "total_weight", "runtime_key_prefix"],
    ),
    (
        "envoy.config.route.v3.WeightedCluster.ClusterWeight",
        &[
            "name",
            "cluster_header",
            "weight",
            "request_headers_to_add",
            "request_headers_to_remove",
            "response_headers_to_add",
            "response_headers_to_remove",
            "host_rewrite_literal",
            "metadata_match",
        ],
    ),
    (
        "envoy.config.route.v3.RedirectAction",
        &[
            "https_redirect",
            "scheme_redirect",
            "host_redirect",
            "port_redirect",
            "path_redirect",
            "prefix_rewrite",
            "regex_rewrite",
            "response_code",
            "strip_query",
        ],
    ),
    (
        "envoy.config.route.v3.DirectResponseAction",
        &["status", "body"],
    ),
    (
        "envoy.type.matcher.v3.RegexMatchAndSubstitute",
        &["pattern", "substitution"],
    ),
];

#[derive(Debug)]
pub enum RouteAction {
    /// `route: {cluster: ...}`.
    Cluster(ClusterAction),
    /// `route: {cluster_header: ...}`: the cluster named by a request header.
    ClusterHeader(ClusterHeaderAction),
    /// `route: {weighted_clusters: ...}`.
    Weighted(WeightedClusters),
    /// `redirect: ...`.
    Redirect(RedirectAction),
    /// `direct_response: ...`.
    DirectResponse(DirectResponseAction),
}

/// Forwarding to one cluster, with everything applied to the request and its response.
#[derive(Debug)]
pub struct ClusterAction {
    /// The cluster; empty for `cluster_header` (known per request) and for a weighted entry
    /// that names its cluster by header when that header is absent (then: not found).
    pub cluster: Arc<str>,
    /// `cluster_not_found_response_code` as a status (503 by default).
    pub cluster_not_found_status: u16,
    pub timeouts: Timeouts,
    pub retry: Option<Arc<super::retry::RetryPolicy>>,
    /// The weighted cluster's own request mutation, applied first.
    pub cluster_request: Option<Arc<HeaderMutation>>,
    /// The weighted cluster's `host_rewrite_literal`: sets `host`, applied after its
    /// mutation (no `x-envoy-original-host`, as Envoy).
    pub cluster_host: Option<HeaderValue>,
    /// Route, virtual host and route configuration request mutations, in Envoy's order.
    pub request_headers: MutationChain,
    /// Weighted cluster (first), then route, virtual host, route configuration.
    pub response_headers: MutationChain,
    /// Whether a response header format reads request data (the request headers are then
    /// kept for the response).
    pub response_reads_request: bool,
    pub host_rewrite: Option<HostRewrite>,
    /// `append_x_forwarded_host`.
    pub append_x_forwarded_host: bool,
    pub path_rewrite: Option<PathRewrite>,
    /// Mirroring, hash policy and priority of the route.
    pub forward: Arc<super::forward::ForwardOptions>,
    /// `metadata_match` `envoy.lb` criteria for subset load balancing: the route's, with a
    /// weighted cluster's own merged over them.
    pub metadata_match: Option<Arc<MetadataMatch>>,
    /// A weighted cluster's `typed_per_filter_config` (the most specific level).
    pub per_filter: super::per_filter::PerFilterConfigs,
}

/// `cluster_header`: the cluster is the first value of `header`; absent, empty or unknown
/// answers `action.cluster_not_found_status`.
#[derive(Debug)]
pub struct ClusterHeaderAction {
    pub header: HeaderName,
    pub action: ClusterAction,
}

/// `weighted_clusters`: one cluster per request, picked in proportion to the weights.
#[derive(Debug)]
pub struct WeightedClusters {
    /// The sum of the weights (> 0, at most `u32::MAX`, as Envoy checks).
    pub total: u64,
    pub entries: Box<[WeightedEntry]>,
}

#[derive(Debug)]
pub struct WeightedEntry {
    pub weight: u64,
    /// The entry's `cluster_header`: when present in the request it names the cluster.
    pub cluster_header: Option<HeaderName>,
    pub action: ClusterAction,
}

impl WeightedClusters {
    /// Envoy's pick: `random % total` falls in one entry's interval, entries in config order.
    pub fn pick(&self, random: u64) -> Option<&WeightedEntry> {
        if self.total == 0 {
            return None;
        }
        let mut v = random % self.total;
        for e in self.entries.iter() {
            if v < e.weight {
                return Some(e);
            }
            v -= e.weight;
        }
        None
    }

    /// [`pick`](Self::pick) with this thread's fast generator.
    pub fn pick_random(&self) -> Option<&WeightedEntry> {
        self.pick(next_random())
    }
}

thread_local! {
    static RNG: Cell<u64> =
        Cell::new(RandomState::new().hash_one(std::time::SystemTime::now()) | 1);
}

/// A per-thread SplitMix64: weighted picks need spread, not secrecy, and never contend.
pub fn next_random() -> u64 {
    RNG.with(|s| {
        let mut z = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

/// How the upstream `host` is rewritten (route level; Envoy keeps the old value in
/// `x-envoy-original-host` unless `suppress_envoy_headers`).
#[derive(Debug, Clone)]
pub enum HostRewrite {
    /// `host_rewrite_literal`.
    Literal(HeaderValue),
    /// `host_rewrite_header`: the first value of this header, when present and not empty.
    Header(HeaderName),
    /// `host_rewrite_path_regex`: the substitution applied to the path without its query.
    PathRegex(RegexRewrite),
    /// `auto_host_rewrite`: the chosen endpoint's `hostname`, when it has one.
    Auto,
}

/// `prefix_rewrite` / `regex_rewrite` of a route or a redirect.
#[derive(Debug, Clone)]
pub enum PathRewrite {
    /// Replaces the first `matched` bytes of `:path` (the route's matched prefix or path).
    Prefix { matched: Matched, rewrite: Box<str> },
    /// Replaces the path (without query) by the regex substitution; the query is kept.
    Regex(RegexRewrite),
}

/// What part of the path a route's matcher covers, for `prefix_rewrite`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matched {
    /// The first N bytes (`prefix`, `path`, `path_separated_prefix`).
    Bytes(usize),
    /// The whole path without query (`safe_regex`, `connect_matcher`).
    WholePath,
}

impl PathRewrite {
    /// The rewritten `:path` (query kept).
    pub fn apply(&self, path: &str) -> String {
        let just_path = super::path_without_query(path);
        let rest = &path[just_path.len()..];
        match self {
            PathRewrite::Prefix { matched, rewrite } => {
                let n = match matched {
                    Matched::Bytes(n) => *n,
                    Matched::WholePath => just_path.len(),
                };
                match path.get(n..) {
                    Some(tail) => format!("{rewrite}{tail}"),
                    None => format!("{rewrite}{rest}"),
                }
            }
            PathRewrite::Regex(re) => {
                let mut out = re.replace_all(just_path);
                out.push_str(rest);
                out
            }
        }
    }
}

/// A `RegexMatchAndSubstitute` with RE2's `GlobalReplace` semantics: `\0`-`\9` are groups,
/// `\\` a backslash; a substitution naming a group the pattern does not have replaces
/// nothing; an invalid escape ends the substitution text.
#[derive(Debug, Clone)]
pub struct RegexRewrite {
    pub regex: regex::Regex,
    pieces: Box<[Piece]>,
    /// False when the substitution refers to a group the pattern lacks.
    applies: bool,
}

#[derive(Debug, Clone)]
enum Piece {
    Lit(Box<str>),
    Group(usize),
}

impl RegexRewrite {
    pub fn new(pattern: &str, substitution: &str) -> Result<RegexRewrite, regex::Error> {
        let regex = regex::Regex::new(pattern)?;
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut max_group = 0usize;
        let mut valid = true;
        let mut chars = substitution.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                if valid {
                    lit.push(c);
                }
                continue;
            }
            match chars.next() {
                Some(d) if d.is_ascii_digit() => {
                    let n = d as usize - '0' as usize;
                    max_group = max_group.max(n);
                    if valid {
                        if !lit.is_empty() {
                            pieces.push(Piece::Lit(std::mem::take(&mut lit).into()));
                        }
                        pieces.push(Piece::Group(n));
                    }
                }
                Some('\\') => {
                    if valid {
                        lit.push('\\');
                    }
                }
                // RE2 stops rewriting at an invalid escape (what came before is kept).
                _ => valid = false,
            }
        }
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit.into()));
        }
        let applies = max_group < regex.captures_len();
        Ok(RegexRewrite {
            regex,
            pieces: pieces.into_boxed_slice(),
            applies,
        })
    }

    /// RE2's `GlobalReplace` of every non-overlapping match (an empty match right where the
    /// previous match ended is skipped).
    pub fn replace_all(&self, s: &str) -> String {
        if !self.applies {
            return s.to_string();
        }
        let mut out = String::with_capacity(s.len() + 16);
        let mut p = 0usize;
        let mut last_end: Option<usize> = None;
        while p <= s.len() {
            let Some(caps) = self.regex.captures_at(s, p) else {
                break;
            };
            let Some(m) = caps.get(0) else { break };
            out.push_str(&s[p..m.start()]);
            if m.is_empty() && Some(m.start()) == last_end {
                // Disallow an empty match at the end of the last match: copy one character.
                match s[m.start()..].chars().next() {
                    Some(c) => {
                        out.push(c);
                        p = m.start() + c.len_utf8();
                    }
                    None => {
                        p = s.len() + 1;
                    }
                }
                continue;
            }
            for piece in self.pieces.iter() {
                match piece {
                    Piece::Lit(l) => out.push_str(l),
                    Piece::Group(n) => {
                        if let Some(g) = caps.get(*n) {
                            out.push_str(g.as_str());
                        }
                    }
                }
            }
            p = m.end();
            last_end = Some(p);
        }
        if p < s.len() {
            out.push_str(&s[p..]);
        }
        out
    }
}

/// `redirect:`: a local `3xx` with a `location` built from the request.
#[derive(Debug)]
pub struct RedirectAction {
    pub status: u16,
    /// `scheme_redirect`, or `https` for `https_redirect`.
    pub scheme: Option<Box<str>>,
    /// `host_redirect`.
    pub host: Option<Box<str>>,
    /// `port_redirect` as `:N`.
    pub port: Option<Box<str>>,
    pub path: RedirectPath,
    pub strip_query: bool,
    pub response_headers: MutationChain,
    pub response_reads_request: bool,
}

#[derive(Debug)]
pub enum RedirectPath {
    /// The request's path.
    Keep,
    /// `path_redirect`; when it has a query, that query replaces the request's and
    /// `strip_query` does not apply.
    Path { path: Box<str>, has_query: bool },
    /// `prefix_rewrite` / `regex_rewrite` of the request's path.
    Rewrite(PathRewrite),
}

/// `direct_response:`.
#[derive(Debug)]
pub struct DirectResponseAction {
    pub status: u16,
    pub body: Option<Bytes>,
    pub response_headers: MutationChain,
    pub response_reads_request: bool,
}

/// Compiles the action of route `r`.
pub fn compile_action(
    r: &rt::Route,
    ctx: &RouteContext<'_>,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<RouteAction> {
    use rt::route::Action as A;
    check_shared_levels_once(r, ctx, path, errs);
    let hdrs = headers::compile_route_headers(r, ctx.vhost, ctx.config, path, errs);
    match &r.action {
        Some(A::Route(ra)) => compile_route_action(r, ra, &hdrs, ctx, path, errs),
        Some(A::Redirect(rd)) => {
            compile_redirect(r, rd, &hdrs, &path.field("redirect"), errs).map(RouteAction::Redirect)
        }
        Some(A::DirectResponse(dr)) => {
            let dp = path.field("direct_response");
            let Ok(status) = u16::try_from(dr.status) else {
                errs.push(dp.field("status").to_string(), "invalid status");
                return None;
            };
            let body = match &dr.body {
                Some(ds) => Some(data_source(ds, &dp.field("body"), errs)?),
                None => None,
            };
            Some(RouteAction::DirectResponse(DirectResponseAction {
                status,
                body,
                response_reads_request: chain_reads_request(&hdrs.response),
                response_headers: hdrs.response,
            }))
        }
        Some(_) => {
            errs.push(
                path.to_string(),
                "this route action is not supported by Strait yet (route, redirect and direct_response are)",
            );
            None
        }
        None => {
            errs.push(
                path.to_string(),
                "one of route, redirect or direct_response must be set",
            );
            None
        }
    }
}

/// The route configuration's and virtual hosts' header lists are shared by many routes:
/// they are checked once, when the first route of the configuration is compiled.
fn check_shared_levels_once(
    r: &rt::Route,
    ctx: &RouteContext<'_>,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) {
    let first = ctx
        .config
        .virtual_hosts
        .iter()
        .find_map(|vh| vh.routes.first());
    if !first.is_some_and(|f| std::ptr::eq(f, r)) {
        return;
    }
    // `path` is `<route config>.virtual_hosts[i].routes[j]`.
    let p = path.as_str();
    let rc_path = match p.rfind(".virtual_hosts[") {
        Some(i) => FieldPath::root().field(&p[..i]),
        None => FieldPath::root(),
    };
    headers::validate_shared_levels(ctx.config, &rc_path, errs);
}

pub(crate) fn compile_regex_rewrite(
    rs: &RegexMatchAndSubstitute,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<RegexRewrite> {
    let Some(pattern) = &rs.pattern else {
        errs.push(path.field("pattern").to_string(), "is required");
        return None;
    };
    match RegexRewrite::new(&pattern.regex, &rs.substitution) {
        Ok(r) => Some(r),
        Err(e) => {
            errs.push(
                path.field("pattern").field("regex").to_string(),
                format!("invalid regex {:?}: {e}", pattern.regex),
            );
            None
        }
    }
}

/// The part of the path a `prefix_rewrite` replaces, from the route's matcher.
fn matched_part(r: &rt::Route, path: &FieldPath, errs: &mut ConfigErrors) -> Option<Matched> {
    use rt::route_match::PathSpecifier as PS;
    match r.r#match.as_ref().and_then(|m| m.path_specifier.as_ref()) {
        Some(PS::Prefix(p)) | Some(PS::Path(p)) | Some(PS::PathSeparatedPrefix(p)) => {
            Some(Matched::Bytes(p.len()))
        }
        Some(PS::SafeRegex(_)) | Some(PS::ConnectMatcher(_)) => Some(Matched::WholePath),
        Some(PS::PathMatchPolicy(_)) => {
            errs.push(
                path.to_string(),
                "Cannot use prefix_rewrite with matcher extension",
            );
            None
        }
        None => None,
    }
}

fn compile_route_action(
    r: &rt::Route,
    ra: &rt::RouteAction,
    hdrs: &RouteHeaders,
    ctx: &RouteContext<'_>,
    route_path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<RouteAction> {
    use rt::route_action::ClusterSpecifier as CS;
    let ap = &route_path.field("route");
    use rt::route_action::HostRewriteSpecifier as HR;

    // ClusterNotFoundResponseCode: SERVICE_UNAVAILABLE (0) => 503, NOT_FOUND (1) => 404,
    // INTERNAL_SERVER_ERROR (2) => 500.
    let cluster_not_found_status = match ra.cluster_not_found_response_code {
        1 => 404,
        2 => 500,
        _ => 503,
    };
    let timeouts = compile_timeouts(ra, ctx, ap, errs);

    let has_regex = ra.regex_rewrite.is_some();
    let path_rewrite = if !ra.prefix_rewrite.is_empty() && has_regex {
        errs.push(
            ap.to_string(),
            "Specify only one of prefix_rewrite, regex_rewrite or path_rewrite_policy",
        );
        None
    } else if !ra.prefix_rewrite.is_empty() {
        matched_part(r, &ap.field("prefix_rewrite"), errs).map(|matched| PathRewrite::Prefix {
            matched,
            rewrite: ra.prefix_rewrite.as_str().into(),
        })
    } else if let Some(rs) = &ra.regex_rewrite {
        compile_regex_rewrite(rs, &ap.field("regex_rewrite"), errs).map(PathRewrite::Regex)
    } else {
        None
    };

    let host_rewrite = match &ra.host_rewrite_specifier {
        Some(HR::HostRewriteLiteral(h)) if !h.is_empty() => {
            match HeaderValue::from_bytes(h.as_bytes()) {
                Ok(v) => Some(HostRewrite::Literal(v)),
                Err(_) => {
                    errs.push(
                        ap.field("host_rewrite_literal").to_string(),
                        "is not a valid header value",
                    );
                    None
                }
            }
        }
        Some(HR::AutoHostRewrite(b)) if b.value => Some(HostRewrite::Auto),
        Some(HR::HostRewriteHeader(h)) if !h.is_empty() => {
            match HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()) {
                Ok(n) => Some(HostRewrite::Header(n)),
                Err(_) => {
                    errs.push(
                        ap.field("host_rewrite_header").to_string(),
                        format!("{h:?} is not supported by Strait yet (a regular header name is)"),
                    );
                    None
                }
            }
        }
        Some(HR::HostRewritePathRegex(rs)) => {
            compile_regex_rewrite(rs, &ap.field("host_rewrite_path_regex"), errs)
                .map(HostRewrite::PathRegex)
        }
        Some(HR::HostRewrite(_)) => {
            errs.push(
                ap.field("host_rewrite").to_string(),
                "is not supported by Strait yet",
            );
            None
        }
        _ => None,
    };

    let first_route = ctx.vhost.routes.first().is_some_and(|f| std::ptr::eq(f, r));
    let forward = super::forward::compile(ra, ctx.vhost, first_route, ctx.clusters, ap, errs);
    let route_mm = ra
        .metadata_match
        .as_ref()
        .and_then(MetadataMatch::from_metadata)
        .map(Arc::new);
    let base = |cluster: &str| ClusterAction {
        cluster: Arc::from(cluster),
        cluster_not_found_status,
        timeouts,
        retry: super::retry::route_retry(r, ctx, ap),
        cluster_request: None,
        cluster_host: None,
        request_headers: hdrs.request.clone(),
        response_headers: hdrs.response.clone(),
        response_reads_request: chain_reads_request(&hdrs.response),
        host_rewrite: host_rewrite.clone(),
        append_x_forwarded_host: ra.append_x_forwarded_host,
        path_rewrite: path_rewrite.clone(),
        forward: forward.clone(),
        metadata_match: route_mm.clone(),
        per_filter: Default::default(),
    };

    match &ra.cluster_specifier {
        Some(CS::Cluster(c)) => {
            if !ctx.clusters.contains(c) {
                errs.push(
                    ap.field("cluster").to_string(),
                    format!("route refers to undefined cluster {c:?}"),
                );
            }
            Some(RouteAction::Cluster(base(c)))
        }
        Some(CS::ClusterHeader(h)) => {
            match HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()) {
                Ok(header) => Some(RouteAction::ClusterHeader(ClusterHeaderAction {
                    header,
                    action: base(""),
                })),
                Err(_) => {
                    errs.push(
                        ap.field("cluster_header").to_string(),
                        format!("{h:?} is not supported by Strait yet (a regular header name is)"),
                    );
                    None
                }
            }
        }
        Some(CS::WeightedClusters(wc)) => {
            compile_weighted(wc, &base, ctx, &ap.field("weighted_clusters"), errs)
                .map(RouteAction::Weighted)
        }
        Some(_) => {
            errs.push(
                ap.to_string(),
                "this cluster specifier is not supported by Strait yet (cluster, cluster_header and weighted_clusters are)",
            );
            None
        }
        None => {
            errs.push(
                ap.to_string(),
                "one of cluster, cluster_header or weighted_clusters must be set",
            );
            None
        }
    }
}

/// `weighted_clusters`. `total_weight` (deprecated) is ignored as Envoy 1.40 ignores it: the
/// sum of the weights is used. `runtime_key_prefix` names runtime keys that could override the
/// weights; Strait has no runtime, so the configured weights always apply — what Envoy does
/// when the keys are not set.
fn compile_weighted(
    wc: &rt::WeightedCluster,
    base: &dyn Fn(&str) -> ClusterAction,
    ctx: &RouteContext<'_>,
    wp: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<WeightedClusters> {
    use rt::weighted_cluster::cluster_weight::HostRewriteSpecifier as WHR;
    let mut total: u64 = 0;
    let mut entries = Vec::with_capacity(wc.clusters.len());
    let mut ok = true;
    for (i, c) in wc.clusters.iter().enumerate() {
        let cp = wp.field("clusters").index(i);
        if !c.name.is_empty() && !c.cluster_header.is_empty() {
            errs.push(
                cp.to_string(),
                "Only one of name or cluster_header can be specified",
            );
            ok = false;
            continue;
        }
        if c.name.is_empty() && c.cluster_header.is_empty() {
            errs.push(
                cp.to_string(),
                "At least one of name or cluster_header need to be specified",
            );
            ok = false;
            continue;
        }
        let Some(weight) = c.weight.as_ref().map(|w| u64::from(w.value)) else {
            errs.push(cp.field("weight").to_string(), "is required");
            ok = false;
            continue;
        };
        if !c.name.is_empty() && !ctx.clusters.contains(&c.name) {
            errs.push(
                cp.field("name").to_string(),
                format!("route refers to undefined weighted cluster {:?}", c.name),
            );
            ok = false;
        }
        let cluster_header = if c.cluster_header.is_empty() {
            None
        } else {
            match HeaderName::from_bytes(c.cluster_header.to_ascii_lowercase().as_bytes()) {
                Ok(n) => Some(n),
                Err(_) => {
                    errs.push(
                        cp.field("cluster_header").to_string(),
                        format!(
                            "{:?} is not supported by Strait yet (a regular header name is)",
                            c.cluster_header
                        ),
                    );
                    ok = false;
                    None
                }
            }
        };
        let mut action = base(&c.name);
        action.cluster_request = headers::compile_level(
            &c.request_headers_to_add,
            &c.request_headers_to_remove,
            Direction::Request,
            &cp,
            errs,
        )
        .filter(|l| !l.is_empty());
        if let Some(resp) = headers::compile_level(
            &c.response_headers_to_add,
            &c.response_headers_to_remove,
            Direction::Response,
            &cp,
            errs,
        )
        .filter(|l| !l.is_empty())
        {
            action.response_headers = std::iter::once(resp)
                .chain(action.response_headers.iter().cloned())
                .collect();
            action.response_reads_request = chain_reads_request(&action.response_headers);
        }
        if let Some(WHR::HostRewriteLiteral(h)) = &c.host_rewrite_specifier
            && !h.is_empty()
        {
            match HeaderValue::from_bytes(h.as_bytes()) {
                Ok(v) => action.cluster_host = Some(v),
                Err(_) => {
                    errs.push(
                        cp.field("host_rewrite_literal").to_string(),
                        "is not a valid header value",
                    );
                    ok = false;
                }
            }
        }
        if let Some(own) = c
            .metadata_match
            .as_ref()
            .and_then(MetadataMatch::from_metadata)
        {
            action.metadata_match = Some(Arc::new(match &action.metadata_match {
                Some(route) => route.merged_with(&own),
                None => own,
            }));
        }
        total += weight;
        entries.push(WeightedEntry {
            weight,
            cluster_header,
            action,
        });
    }
    if !ok {
        return None;
    }
    if total == 0 {
        errs.push(
            wp.to_string(),
            "Sum of weights in the weighted_cluster must be greater than 0.",
        );
        return None;
    }
    if total > u64::from(u32::MAX) {
        errs.push(
            wp.to_string(),
            "The sum of weights of all weighted clusters of a route exceeds 4294967295",
        );
        return None;
    }
    Some(WeightedClusters {
        total,
        entries: entries.into_boxed_slice(),
    })
}

fn compile_redirect(
    r: &rt::Route,
    rd: &rt::RedirectAction,
    hdrs: &RouteHeaders,
    rp: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<RedirectAction> {
    use rt::redirect_action::PathRewriteSpecifier as PR;
    use rt::redirect_action::SchemeRewriteSpecifier as SR;
    // RedirectResponseCode: MOVED_PERMANENTLY, FOUND, SEE_OTHER, TEMPORARY_REDIRECT,
    // PERMANENT_REDIRECT.
    let status = match rd.response_code {
        0 => 301,
        1 => 302,
        2 => 303,
        3 => 307,
        4 => 308,
        other => {
            errs.push(
                rp.field("response_code").to_string(),
                format!("unknown redirect response code {other}"),
            );
            return None;
        }
    };
    let scheme = match &rd.scheme_rewrite_specifier {
        Some(SR::SchemeRedirect(s)) if !s.is_empty() => Some(s.as_str().into()),
        Some(SR::HttpsRedirect(true)) => Some("https".into()),
        _ => None,
    };
    let path = match &rd.path_rewrite_specifier {
        Some(PR::PathRedirect(p)) if !p.is_empty() => RedirectPath::Path {
            has_query: p.contains('?'),
            path: p.as_str().into(),
        },
        Some(PR::PrefixRewrite(p)) if !p.is_empty() => {
            match matched_part(r, &rp.field("prefix_rewrite"), errs) {
                Some(matched) => RedirectPath::Rewrite(PathRewrite::Prefix {
                    matched,
                    rewrite: p.as_str().into(),
                }),
                None => RedirectPath::Keep,
            }
        }
        Some(PR::RegexRewrite(rs)) => {
            match compile_regex_rewrite(rs, &rp.field("regex_rewrite"), errs) {
                Some(re) => RedirectPath::Rewrite(PathRewrite::Regex(re)),
                None => return None,
            }
        }
        Some(PR::PathRewrite(_)) => {
            errs.push(
                rp.field("path_rewrite").to_string(),
                "is not supported by Strait yet",
            );
            return None;
        }
        _ => RedirectPath::Keep,
    };
    Some(RedirectAction {
        status,
        scheme,
        host: (!rd.host_redirect.is_empty()).then(|| rd.host_redirect.as_str().into()),
        port: (rd.port_redirect != 0).then(|| format!(":{}", rd.port_redirect).into()),
        path,
        strip_query: rd.strip_query,
        response_reads_request: chain_reads_request(&hdrs.response),
        response_headers: hdrs.response.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn re2_substitution_groups_and_escapes() {
        let r = RegexRewrite::new("^/rx/([^/]+)(/.*)$", r"\2/instance/\1").expect("re");
        assert_eq!(r.replace_all("/rx/foo/v1/api"), "/v1/api/instance/foo");
        let r = RegexRewrite::new("one", "two").expect("re");
        assert_eq!(
            r.replace_all("/xxx/one/yyy/one/zzz"),
            "/xxx/two/yyy/two/zzz"
        );
        let r = RegexRewrite::new("b+", r"[\0]").expect("re");
        assert_eq!(r.replace_all("/g0/abbbcb"), "/g0/a[bbb]c[b]");
        // `\\` is a backslash, `$1` is literal.
        let r = RegexRewrite::new("b", r"x\\y$1").expect("re");
        assert_eq!(r.replace_all("/bs/abc"), r"/x\y$1s/ax\y$1c");
        // A group the pattern lacks: nothing is replaced.
        let r = RegexRewrite::new("^/grp/(.*)$", r"/\0|\1|\9").expect("re");
        assert_eq!(r.replace_all("/grp/abc"), "/grp/abc");
        // An invalid escape ends the substitution.
        let r = RegexRewrite::new("b", r"\q").expect("re");
        assert_eq!(r.replace_all("/bad/abc"), "/ad/ac");
    }

    #[test]
    fn re2_empty_matches() {
        let r = RegexRewrite::new("z*", "-").expect("re");
        assert_eq!(r.replace_all("/emp/az"), "-/-e-m-p-/-a-");
    }

    #[test]
    fn prefix_rewrite_keeps_the_query() {
        let p = PathRewrite::Prefix {
            matched: Matched::Bytes(5),
            rewrite: "/new/".into(),
        };
        assert_eq!(p.apply("/old/thing?q=1"), "/new/thing?q=1");
        let p = PathRewrite::Prefix {
            matched: Matched::WholePath,
            rewrite: "/R".into(),
        };
        assert_eq!(p.apply("/rgx/abc?z"), "/R?z");
    }

    fn route_table(routes: &str) -> Result<Arc<crate::model::RouteTable>, ConfigErrors> {
        let yaml = format!(
            r#"
static_resources:
  listeners:
  - name: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: 10000}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
{routes}
  clusters:
  - name: a
    connect_timeout: 1s
    load_assignment:
      cluster_name: a
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 1}}}}}}
  - name: b
    connect_timeout: 1s
    load_assignment:
      cluster_name: b
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 2}}}}}}
"#
        );
        let src = crate::Source {
            path: None,
            yaml: Some(&yaml),
        };
        let cfg = crate::load_bootstrap(&src, &crate::CompileOptions::default())?;
        Ok(cfg.listeners[0].hcm.routes.clone())
    }

    #[test]
    fn weighted_pick_follows_intervals() {
        let t = route_table(
            "              - match: {prefix: /}
                route:
                  weighted_clusters:
                    clusters:
                    - {name: a, weight: 1}
                    - {name: b, weight: 0}
                    - {name: b, weight: 3, host_rewrite_literal: h}",
        )
        .expect("config");
        let RouteAction::Weighted(w) = &t.vhosts[0].routes[0].action else {
            panic!("weighted expected");
        };
        assert_eq!(w.total, 4);
        let name = |r: u64| {
            w.pick(r).map(|e| {
                (
                    e.action.cluster.to_string(),
                    e.action.cluster_host.is_some(),
                )
            })
        };
        assert_eq!(name(0), Some(("a".into(), false)));
        assert_eq!(name(1), Some(("b".into(), true)));
        assert_eq!(name(3), Some(("b".into(), true)));
        assert_eq!(name(4), Some(("a".into(), false)));
    }

    #[test]
    fn weighted_validation_matches_envoy() {
        let err = |routes: &str| {
            route_table(routes)
                .expect_err("must be refused")
                .to_string()
        };
        assert!(
            err("              - match: {prefix: /}
                route: {weighted_clusters: {clusters: [{name: a, weight: 0}]}}")
            .contains("Sum of weights")
        );
        assert!(
            err("              - match: {prefix: /}
                route: {weighted_clusters: {clusters: [{name: nope, weight: 1}]}}")
            .contains("undefined weighted cluster")
        );
        assert!(
            err("              - match: {prefix: /}
                route: {weighted_clusters: {clusters: [{name: a}]}}")
            .contains("weight")
        );
        assert!(
            err("              - match: {prefix: /}
                route: {weighted_clusters: {clusters: [{weight: 1}]}}")
            .contains("At least one of name or cluster_header")
        );
        assert!(err("              - match: {prefix: /}
                route: {weighted_clusters: {clusters: [{name: a, weight: 4294967295}, {name: b, weight: 1}]}}")
        .contains("exceeds"));
        // total_weight (deprecated) and runtime_key_prefix are accepted, as by Envoy.
        route_table("              - match: {prefix: /}
                route: {weighted_clusters: {total_weight: 100, runtime_key_prefix: rt, clusters: [{name: a, weight: 1}]}}")
        .expect("accepted");
    }

    #[test]
    fn rewrite_and_header_validation_matches_envoy() {
        let err = |routes: &str| {
            route_table(routes)
                .expect_err("must be refused")
                .to_string()
        };
        assert!(err("              - match: {prefix: /}
                route: {cluster: a, prefix_rewrite: /x, regex_rewrite: {pattern: {regex: a}, substitution: b}}")
        .contains("Specify only one of"));
        assert!(
            err("              - match: {prefix: /}
                route: {cluster: a}
                request_headers_to_add: [{header: {key: \":path\", value: x}}]")
            .contains("may not be modified")
        );
        assert!(
            err("              - match: {prefix: /}
                route: {cluster: a}
                response_headers_to_remove: [Host]")
            .contains("may not be removed")
        );
        assert!(
            err("              - match: {prefix: /}
                redirect: {regex_rewrite: {pattern: {regex: \"(\"}, substitution: b}}")
            .contains("invalid regex")
        );
    }
}
