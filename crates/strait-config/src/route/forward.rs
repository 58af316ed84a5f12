//! Per-route options of forwarding beyond the cluster choice: request mirroring
//! (`request_mirror_policies`), the hash policy, and the routing priority.

use std::collections::HashSet;
use std::sync::Arc;

use envoy_api::pb::envoy::config::route::v3 as rt;
use http::HeaderName;

use super::hash::{self, HashPolicy};
use super::matcher::RuntimeFraction;
use crate::error::{ConfigErrors, FieldPath};

pub const SUPPORTED: &[(&str, &[&str])] = &[
    (
        "envoy.config.route.v3.RouteAction",
        &[
            "request_mirror_policies",
            "priority",
            "internal_redirect_policy",
        ],
    ),
    (
        "envoy.config.route.v3.InternalRedirectPolicy",
        &[
            "max_internal_redirects",
            "redirect_response_codes",
            "predicates",
            "allow_cross_scheme_redirect",
            "response_headers_to_copy",
        ],
    ),
    (
        "envoy.extensions.internal_redirect.allow_listed_routes.v3.AllowListedRoutesConfig",
        &["allowed_route_names"],
    ),
    (
        "envoy.config.route.v3.VirtualHost",
        &["request_mirror_policies"],
    ),
    (
        "envoy.config.route.v3.RouteAction.RequestMirrorPolicy",
        &[
            "cluster",
            "cluster_header",
            "runtime_fraction",
            "disable_shadow_host_suffix_append",
            "host_rewrite_literal",
        ],
    ),
];

/// Routing priority (`RoutingPriority`): which circuit-breaker thresholds apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RoutePriority {
    #[default]
    Default,
    High,
}

/// The internal-redirect predicate extensions Strait implements.
pub const SUPPORTED_EXTENSIONS: &[&str] =
    &[PREVIOUS_ROUTES, ALLOW_LISTED_ROUTES, SAFE_CROSS_SCHEME];
const PREVIOUS_ROUTES: &str =
    "envoy.extensions.internal_redirect.previous_routes.v3.PreviousRoutesConfig";
const ALLOW_LISTED_ROUTES: &str =
    "envoy.extensions.internal_redirect.allow_listed_routes.v3.AllowListedRoutesConfig";
const SAFE_CROSS_SCHEME: &str =
    "envoy.extensions.internal_redirect.safe_cross_scheme.v3.SafeCrossSchemeConfig";

/// What a route adds to forwarding, shared by every cluster choice of the route.
#[derive(Debug, Default)]
pub struct ForwardOptions {
    pub hash: Option<Arc<HashPolicy>>,
    pub mirrors: Box<[MirrorPolicy]>,
    pub priority: RoutePriority,
    pub internal_redirect: Option<InternalRedirectPolicy>,
    /// `upgrade_configs`: the route's upgrade types (see [`super::upgrade`]).
    pub upgrades: Box<[super::upgrade::UpgradeEntry]>,
}

/// `internal_redirect_policy`: 3xx answers the proxy follows itself.
#[derive(Debug, Clone)]
pub struct InternalRedirectPolicy {
    /// `max_internal_redirects` (default 1): redirects one downstream request may follow.
    pub max_redirects: u32,
    /// `redirect_response_codes` among 301, 302, 303, 307, 308 (default 302).
    pub codes: Box<[u16]>,
    pub allow_cross_scheme: bool,
    pub response_headers_to_copy: Box<[HeaderName]>,
    pub predicates: Box<[RedirectPredicate]>,
}

#[derive(Debug, Clone)]
pub enum RedirectPredicate {
    /// `previous_routes`: never redirect to a route this request already went through.
    PreviousRoutes,
    /// `allow_listed_routes`: only to routes with these names.
    AllowListed(Box<[String]>),
    /// `safe_cross_scheme`: http -> https is allowed, https -> http is not.
    SafeCrossScheme,
}

/// One `request_mirror_policies` entry.
#[derive(Debug)]
pub struct MirrorPolicy {
    pub cluster: MirrorCluster,
    /// `runtime_fraction`'s default value; absent: every request is mirrored.
    pub fraction: Option<RuntimeFraction>,
    /// `disable_shadow_host_suffix_append`: keep the host as it is.
    pub keep_host: bool,
    /// `host_rewrite_literal`: the shadow's host (the `-shadow` suffix is still added unless
    /// disabled).
    pub host: Option<http::HeaderValue>,
}

#[derive(Debug)]
pub enum MirrorCluster {
    Named(Arc<str>),
    /// `cluster_header`: the cluster named by a request header (absent/unknown: no mirror).
    Header(HeaderName),
}

pub(crate) fn compile(
    ra: &rt::RouteAction,
    vhost: &rt::VirtualHost,
    first_route: bool,
    clusters: &HashSet<String>,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Arc<ForwardOptions> {
    // The route's mirror policies replace the virtual host's when it has any.
    let mirrors = if ra.request_mirror_policies.is_empty() {
        // The virtual host's list: errors are reported once, with the first route, under
        // the virtual host's path (`path` is `...virtual_hosts[i].routes[j].route`).
        let p = path.as_str();
        let vh_path = FieldPath::root()
            .field(p.rfind(".routes[").map_or(p, |i| &p[..i]))
            .field("request_mirror_policies");
        let mut vh_errs = ConfigErrors::default();
        let m = compile_mirrors(
            &vhost.request_mirror_policies,
            clusters,
            &vh_path,
            &mut vh_errs,
        );
        if first_route {
            errs.0.extend(vh_errs.0);
        }
        m
    } else {
        compile_mirrors(
            &ra.request_mirror_policies,
            clusters,
            &path.field("request_mirror_policies"),
            errs,
        )
    };
    Arc::new(ForwardOptions {
        hash: hash::compile(ra, path, errs),
        mirrors,
        internal_redirect: ra.internal_redirect_policy.as_ref().and_then(|p| {
            compile_internal_redirect(p, &path.field("internal_redirect_policy"), errs)
        }),
        // RoutingPriority: DEFAULT = 0, HIGH = 1.
        priority: if ra.priority == 1 {
            RoutePriority::High
        } else {
            RoutePriority::Default
        },
        upgrades: super::upgrade::compile_route(
            &ra.upgrade_configs,
            &path.field("upgrade_configs"),
            errs,
        ),
    })
}

fn compile_mirrors(
    list: &[rt::route_action::RequestMirrorPolicy],
    clusters: &HashSet<String>,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Box<[MirrorPolicy]> {
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let p = path.index(i);
        let cluster = match (m.cluster.is_empty(), m.cluster_header.is_empty()) {
            (false, true) => {
                if !clusters.contains(&m.cluster) {
                    errs.push(
                        p.field("cluster").to_string(),
                        format!("route refers to undefined mirror cluster {:?}", m.cluster),
                    );
                    continue;
                }
                MirrorCluster::Named(m.cluster.as_str().into())
            }
            (true, false) => {
                match HeaderName::from_bytes(m.cluster_header.to_ascii_lowercase().as_bytes()) {
                    Ok(h) => MirrorCluster::Header(h),
                    Err(_) => {
                        errs.push(
                            p.field("cluster_header").to_string(),
                            format!("{:?} is not a valid header name", m.cluster_header),
                        );
                        continue;
                    }
                }
            }
            _ => {
                errs.push(
                    p.to_string(),
                    "Exactly one of cluster or cluster_header in request mirror policy need to be specified",
                );
                continue;
            }
        };
        let fraction = m
            .runtime_fraction
            .as_ref()
            .and_then(|rf| rf.default_value.as_ref())
            .map(RuntimeFraction::from_percent);
        let host = if m.host_rewrite_literal.is_empty() {
            None
        } else {
            match http::HeaderValue::from_str(&m.host_rewrite_literal) {
                Ok(v) => Some(v),
                Err(_) => {
                    errs.push(
                        p.field("host_rewrite_literal").to_string(),
                        "is not a valid header value",
                    );
                    continue;
                }
            }
        };
        out.push(MirrorPolicy {
            cluster,
            fraction,
            keep_host: m.disable_shadow_host_suffix_append,
            host,
        });
    }
    out.into()
}

fn compile_internal_redirect(
    p: &rt::InternalRedirectPolicy,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<InternalRedirectPolicy> {
    // Envoy ignores codes other than 301, 302, 303, 307 and 308.
    let mut codes: Vec<u16> = p
        .redirect_response_codes
        .iter()
        .filter_map(|c| u16::try_from(*c).ok())
        .filter(|c| matches!(c, 301 | 302 | 303 | 307 | 308))
        .collect();
    if p.redirect_response_codes.is_empty() {
        codes.push(302);
    }
    let mut headers = Vec::new();
    for (i, h) in p.response_headers_to_copy.iter().enumerate() {
        match HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()) {
            Ok(n) if n != http::header::HOST => headers.push(n),
            _ => errs.push(
                path.field("response_headers_to_copy").index(i).to_string(),
                format!("{h:?} cannot be copied (a pseudo-header, host or invalid name)"),
            ),
        }
    }
    let mut predicates = Vec::new();
    for (i, tc) in p.predicates.iter().enumerate() {
        let pp = path.field("predicates").index(i);
        let Some(any) = &tc.typed_config else {
            errs.push(pp.field("typed_config").to_string(), "is required");
            continue;
        };
        let t = crate::compile::common::type_name(any);
        let pred = match t {
            PREVIOUS_ROUTES => RedirectPredicate::PreviousRoutes,
            SAFE_CROSS_SCHEME => RedirectPredicate::SafeCrossScheme,
            ALLOW_LISTED_ROUTES => {
                use envoy_api::pb::envoy::extensions::internal_redirect::allow_listed_routes::v3::AllowListedRoutesConfig;
                let Some(c) = crate::compile::common::unpack::<AllowListedRoutesConfig>(
                    any,
                    &pp.field("typed_config"),
                    errs,
                ) else {
                    continue;
                };
                RedirectPredicate::AllowListed(c.allowed_route_names.into())
            }
            // Unknown types were already reported by the supported-extension check.
            _ => continue,
        };
        predicates.push(pred);
    }
    Some(InternalRedirectPolicy {
        max_redirects: p.max_internal_redirects.as_ref().map_or(1, |v| v.value),
        codes: codes.into(),
        allow_cross_scheme: p.allow_cross_scheme_redirect,
        response_headers_to_copy: headers.into(),
        predicates: predicates.into(),
    })
}
