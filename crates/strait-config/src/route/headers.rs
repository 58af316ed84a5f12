//! Header mutations of routes: `request_headers_to_add` / `_to_remove` and
//! `response_headers_to_add` / `_to_remove` at route configuration, virtual host, route and
//! weighted-cluster level, plus the route configuration's `internal_only_headers`.
//!
//! Each level is one [`HeaderMutation`] (Envoy's `HeaderParser`), compiled once: header names
//! are [`HeaderName`]s, constant values are [`HeaderValue`]s, and only values containing `%`
//! get a substitution [`Formatter`]. A route's levels are chained in the order Envoy applies
//! them ([`level_order`]).

use std::cell::RefCell;
use std::sync::Arc;

use envoy_api::pb::envoy::config::core::v3 as core;
use envoy_api::pb::envoy::config::route::v3 as rt;
use http::header::{HeaderName, HeaderValue};
use strait_accesslog::Formatter;

use crate::error::{ConfigErrors, FieldPath};

pub const SUPPORTED: &[(&str, &[&str])] = &[
    (
        "envoy.config.route.v3.RouteConfiguration",
        &[
            "request_headers_to_add",
            "request_headers_to_remove",
            "response_headers_to_add",
            "response_headers_to_remove",
            "most_specific_header_mutations_wins",
            "internal_only_headers",
        ],
    ),
    (
        "envoy.config.route.v3.VirtualHost",
        &[
            "request_headers_to_add",
            "request_headers_to_remove",
            "response_headers_to_add",
            "response_headers_to_remove",
        ],
    ),
    (
        "envoy.config.route.v3.Route",
        &[
            "request_headers_to_add",
            "request_headers_to_remove",
            "response_headers_to_add",
            "response_headers_to_remove",
        ],
    ),
    (
        "envoy.config.core.v3.HeaderValueOption",
        &["header", "append", "append_action", "keep_empty_value"],
    ),
    ("envoy.config.core.v3.HeaderValue", &["key", "value"]),
];

/// `HeaderValueOption.append_action` (the legacy `append` bool maps onto the first and third).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendAction {
    /// Add the value, keeping existing ones (Envoy's default).
    AppendIfExistsOrAdd,
    /// Add only when the header is absent.
    AddIfAbsent,
    /// Replace every existing value, or add.
    OverwriteIfExistsOrAdd,
    /// Replace every existing value; do nothing when absent.
    OverwriteIfExists,
}

/// Where a header value comes from.
#[derive(Debug, Clone)]
pub enum HeaderSource {
    /// A constant (no `%` in the configured value).
    Static(HeaderValue),
    /// A substitution format (`%REQ(x)%`, `%START_TIME%`, ...); missing values render empty.
    Format(Formatter),
}

#[derive(Debug, Clone)]
pub struct HeaderToAdd {
    pub name: HeaderName,
    pub value: HeaderSource,
    pub action: AppendAction,
    /// `keep_empty_value`: add the header even when its value is empty.
    pub keep_empty: bool,
}

/// One level's mutation (Envoy's `HeaderParser`): removals first, then additions whose values
/// and conditions are all evaluated against the headers as they are after the removals.
#[derive(Debug, Clone, Default)]
pub struct HeaderMutation {
    pub remove: Box<[HeaderName]>,
    pub add: Box<[HeaderToAdd]>,
    /// Whether any value is a format (the application then renders before it mutates).
    pub has_format: bool,
    /// Whether a format reads request data (`%REQ(...)%`, the path, ...).
    pub reads_request: bool,
}

impl HeaderMutation {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.add.is_empty()
    }
}

/// Levels in the order they are applied.
pub type MutationChain = Box<[Arc<HeaderMutation>]>;

/// Which direction a list applies to: some formatter operators need data a response
/// mutation does not have in Strait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Request,
    Response,
}

/// Operators whose value Strait does not know when response headers are mutated (the
/// upstream host and connection, flags, byte counts and partial durations are kept by the
/// stream's completion record, not by the route): refused rather than rendered wrong.
const RESPONSE_UNSUPPORTED_OPERATORS: &[&str] = &[
    "UPSTREAM_HOST",
    "UPSTREAM_HOST_NAME",
    "UPSTREAM_HOST_NAME_WITHOUT_PORT",
    "UPSTREAM_REMOTE_ADDRESS",
    "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
    "UPSTREAM_REMOTE_PORT",
    "UPSTREAM_LOCAL_ADDRESS",
    "UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT",
    "UPSTREAM_LOCAL_PORT",
    "UPSTREAM_TRANSPORT_FAILURE_REASON",
    "UPSTREAM_REQUEST_ATTEMPT_COUNT",
    "UPSTREAM_CONNECTION_ID",
    "UPSTREAM_WIRE_BYTES_SENT",
    "UPSTREAM_WIRE_BYTES_RECEIVED",
    "UPSTREAM_PROTOCOL",
    "RESPONSE_FLAGS",
    "RESPONSE_FLAGS_LONG",
    "RESPONSE_CODE_DETAILS",
    "BYTES_RECEIVED",
    "BYTES_SENT",
    "REQUEST_DURATION",
    "REQUEST_TX_DURATION",
    "RESPONSE_DURATION",
    "RESPONSE_TX_DURATION",
];

/// Operators that read the request (its headers or pseudo-headers).
const REQUEST_OPERATORS: &[&str] = &[
    "REQ",
    "REQUEST_HEADER",
    "STREAM_INFO_REQ",
    "REQ_WITHOUT_QUERY",
    "PATH",
    "QUERY_PARAMS",
    "REQUEST_HEADERS_BYTES",
];

/// Envoy's `HeaderUtility::isModifiableHeader` / `isRemovableHeader`: no pseudo-header and
/// no `host`.
fn is_protected(name: &str) -> bool {
    name.starts_with(':') || name.eq_ignore_ascii_case("host")
}

/// Whether format string `format` uses operator `name` (`%NAME%`, `%NAME(`, `%NAME:`).
fn uses_operator(format: &str, name: &str) -> bool {
    format.match_indices('%').any(|(i, _)| {
        format[i + 1..]
            .strip_prefix(name)
            .is_some_and(|rest| rest.starts_with(['%', '(', ':']))
    })
}

/// Compiles one `HeaderValueOption`.
fn compile_add(
    o: &core::HeaderValueOption,
    dir: Direction,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<(HeaderToAdd, bool)> {
    let hp = path.field("header");
    let Some(h) = &o.header else {
        errs.push(hp.to_string(), "is required");
        return None;
    };
    if is_protected(&h.key) {
        errs.push(
            hp.field("key").to_string(),
            ":-prefixed or host headers may not be modified",
        );
        return None;
    }
    let Ok(name) = HeaderName::from_bytes(h.key.to_ascii_lowercase().as_bytes()) else {
        errs.push(
            hp.field("key").to_string(),
            format!("{:?} is not a valid header name", h.key),
        );
        return None;
    };
    use core::header_value_option::HeaderAppendAction as HA;
    #[allow(deprecated)]
    let action = match &o.append {
        Some(append) => {
            if o.append_action != HA::AppendIfExistsOrAdd as i32 {
                errs.push(
                    path.to_string(),
                    "Both append and append_action are set and it's not allowed",
                );
                return None;
            }
            if append.value {
                AppendAction::AppendIfExistsOrAdd
            } else {
                AppendAction::OverwriteIfExistsOrAdd
            }
        }
        None => match HA::try_from(o.append_action) {
            Ok(HA::AppendIfExistsOrAdd) => AppendAction::AppendIfExistsOrAdd,
            Ok(HA::AddIfAbsent) => AppendAction::AddIfAbsent,
            Ok(HA::OverwriteIfExistsOrAdd) => AppendAction::OverwriteIfExistsOrAdd,
            Ok(HA::OverwriteIfExists) => AppendAction::OverwriteIfExists,
            Err(_) => {
                errs.push(
                    path.field("append_action").to_string(),
                    format!("unknown append action {}", o.append_action),
                );
                return None;
            }
        },
    };
    let vp = hp.field("value");
    let mut reads_request = false;
    let value = if h.value.contains('%') {
        reads_request = REQUEST_OPERATORS
            .iter()
            .any(|op| uses_operator(&h.value, op));
        if dir == Direction::Response
            && let Some(op) = RESPONSE_UNSUPPORTED_OPERATORS
                .iter()
                .find(|op| uses_operator(&h.value, op))
        {
            errs.push(
                vp.to_string(),
                format!("%{op}% in response headers is not supported by Strait yet"),
            );
            return None;
        }
        match Formatter::parse_text(&h.value) {
            Ok(f) => HeaderSource::Format(f.with_omit_empty_values(true)),
            Err(e) => {
                errs.push(vp.to_string(), e.to_string());
                return None;
            }
        }
    } else {
        match HeaderValue::from_bytes(h.value.as_bytes()) {
            Ok(v) => HeaderSource::Static(v),
            Err(_) => {
                errs.push(vp.to_string(), "is not a valid header value");
                return None;
            }
        }
    };
    Some((
        HeaderToAdd {
            name,
            value,
            action,
            keep_empty: o.keep_empty_value,
        },
        reads_request,
    ))
}

/// Compiles one level's add and remove lists (`<prefix>_headers_to_add` /
/// `<prefix>_headers_to_remove` under `path`). `None` when both are empty.
pub fn compile_level(
    add: &[core::HeaderValueOption],
    remove: &[String],
    dir: Direction,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<Arc<HeaderMutation>> {
    if add.is_empty() && remove.is_empty() {
        return None;
    }
    let (add_field, remove_field) = match dir {
        Direction::Request => ("request_headers_to_add", "request_headers_to_remove"),
        Direction::Response => ("response_headers_to_add", "response_headers_to_remove"),
    };
    let mut m = HeaderMutation::default();
    let mut removes = Vec::with_capacity(remove.len());
    for (i, r) in remove.iter().enumerate() {
        let rp = path.field(remove_field).index(i);
        if is_protected(r) {
            errs.push(
                rp.to_string(),
                ":-prefixed or host headers may not be removed",
            );
            continue;
        }
        match HeaderName::from_bytes(r.to_ascii_lowercase().as_bytes()) {
            Ok(n) => removes.push(n),
            Err(_) => errs.push(rp.to_string(), format!("{r:?} is not a valid header name")),
        }
    }
    let mut adds = Vec::with_capacity(add.len());
    for (i, o) in add.iter().enumerate() {
        if let Some((a, reads)) = compile_add(o, dir, &path.field(add_field).index(i), errs) {
            m.has_format |= matches!(a.value, HeaderSource::Format(_));
            m.reads_request |= reads;
            // A constant empty value without keep_empty_value is never added (Envoy skips
            // empty values): drop it now.
            if matches!(&a.value, HeaderSource::Static(v) if v.is_empty()) && !a.keep_empty {
                continue;
            }
            adds.push(a);
        }
    }
    m.remove = removes.into_boxed_slice();
    m.add = adds.into_boxed_slice();
    Some(Arc::new(m))
}

/// The most recently compiled route-configuration and virtual-host levels, so every route of
/// a virtual host shares one compiled copy (routes are compiled in order). Keyed by content.
type LevelKey = (Vec<core::HeaderValueOption>, Vec<String>, bool);

thread_local! {
    static LEVEL_CACHE: RefCell<Vec<(LevelKey, Option<Arc<HeaderMutation>>)>> =
        const { RefCell::new(Vec::new()) };
}

/// [`compile_level`] for the shared (route configuration and virtual host) levels: reuses the
/// compiled level when the same lists were compiled just before. Errors are reported by
/// [`validate_shared_levels`], once, not per route.
fn shared_level(
    add: &[core::HeaderValueOption],
    remove: &[String],
    dir: Direction,
) -> Option<Arc<HeaderMutation>> {
    if add.is_empty() && remove.is_empty() {
        return None;
    }
    let response = dir == Direction::Response;
    let hit = LEVEL_CACHE.with(|c| {
        c.borrow()
            .iter()
            .find(|(k, _)| k.2 == response && k.0 == add && k.1 == remove)
            .map(|(_, v)| v.clone())
    });
    if let Some(v) = hit {
        return v;
    }
    let mut ignored = ConfigErrors::default();
    let level = compile_level(add, remove, dir, &FieldPath::root(), &mut ignored);
    LEVEL_CACHE.with(|c| {
        let mut c = c.borrow_mut();
        // Route configuration + virtual host, request + response: a handful suffices.
        if c.len() >= 8 {
            c.remove(0);
        }
        c.push(((add.to_vec(), remove.to_vec(), response), level.clone()));
    });
    level
}

/// Checks the route configuration's and every virtual host's header lists (once per route
/// configuration: `route_config_path` is the path of the `RouteConfiguration`).
pub fn validate_shared_levels(
    rc: &rt::RouteConfiguration,
    route_config_path: &FieldPath,
    errs: &mut ConfigErrors,
) {
    let _ = compile_level(
        &rc.request_headers_to_add,
        &rc.request_headers_to_remove,
        Direction::Request,
        route_config_path,
        errs,
    );
    let _ = compile_level(
        &rc.response_headers_to_add,
        &rc.response_headers_to_remove,
        Direction::Response,
        route_config_path,
        errs,
    );
    for (i, vh) in rc.virtual_hosts.iter().enumerate() {
        let vp = route_config_path.field("virtual_hosts").index(i);
        let _ = compile_level(
            &vh.request_headers_to_add,
            &vh.request_headers_to_remove,
            Direction::Request,
            &vp,
            errs,
        );
        let _ = compile_level(
            &vh.response_headers_to_add,
            &vh.response_headers_to_remove,
            Direction::Response,
            &vp,
            errs,
        );
    }
}

/// The header mutations a route applies, in Envoy's order.
#[derive(Debug, Clone, Default)]
pub struct RouteHeaders {
    /// Route, virtual host and route configuration levels (most specific first, or last
    /// with `most_specific_header_mutations_wins`).
    pub request: MutationChain,
    pub response: MutationChain,
}

/// Envoy's order across levels: by default route, then virtual host, then route
/// configuration (so the least specific wins when it overwrites);
/// `most_specific_header_mutations_wins` reverses it.
pub fn level_order<T>(route: T, vhost: T, config: T, most_specific_wins: bool) -> [T; 3] {
    if most_specific_wins {
        [config, vhost, route]
    } else {
        [route, vhost, config]
    }
}

/// Compiles the request and response chains of route `r` (errors of the route's own lists go
/// under `route_path`; the shared levels are checked by [`validate_shared_levels`]).
pub fn compile_route_headers(
    r: &rt::Route,
    vh: &rt::VirtualHost,
    rc: &rt::RouteConfiguration,
    route_path: &FieldPath,
    errs: &mut ConfigErrors,
) -> RouteHeaders {
    let ms = rc.most_specific_header_mutations_wins;
    let req = level_order(
        compile_level(
            &r.request_headers_to_add,
            &r.request_headers_to_remove,
            Direction::Request,
            route_path,
            errs,
        ),
        shared_level(
            &vh.request_headers_to_add,
            &vh.request_headers_to_remove,
            Direction::Request,
        ),
        shared_level(
            &rc.request_headers_to_add,
            &rc.request_headers_to_remove,
            Direction::Request,
        ),
        ms,
    );
    let resp = level_order(
        compile_level(
            &r.response_headers_to_add,
            &r.response_headers_to_remove,
            Direction::Response,
            route_path,
            errs,
        ),
        shared_level(
            &vh.response_headers_to_add,
            &vh.response_headers_to_remove,
            Direction::Response,
        ),
        shared_level(
            &rc.response_headers_to_add,
            &rc.response_headers_to_remove,
            Direction::Response,
        ),
        ms,
    );
    RouteHeaders {
        request: req
            .into_iter()
            .flatten()
            .filter(|l| !l.is_empty())
            .collect(),
        response: resp
            .into_iter()
            .flatten()
            .filter(|l| !l.is_empty())
            .collect(),
    }
}

/// `internal_only_headers`: removed from requests Envoy does not consider internal (with no
/// `internal_address_config`, every request). Names that are not valid header names can
/// never be present and are skipped, as Envoy accepts them.
pub fn internal_only_headers(rc: &rt::RouteConfiguration) -> Arc<[HeaderName]> {
    rc.internal_only_headers
        .iter()
        .filter_map(|h| HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).ok())
        .collect()
}

/// Whether any level of `chain` reads request data.
pub fn chain_reads_request(chain: &[Arc<HeaderMutation>]) -> bool {
    chain.iter().any(|l| l.reads_request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hvo(key: &str, value: &str) -> core::HeaderValueOption {
        core::HeaderValueOption {
            header: Some(core::HeaderValue {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn protected_headers_are_refused() {
        let mut errs = ConfigErrors::default();
        let p = FieldPath::root().field("r");
        compile_level(
            &[hvo(":path", "x"), hvo("Host", "y"), hvo("x-ok", "z")],
            &["host".into(), ":authority".into(), "x-gone".into()],
            Direction::Request,
            &p,
            &mut errs,
        );
        let paths: Vec<&str> = errs.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "r.request_headers_to_remove[0]",
                "r.request_headers_to_remove[1]",
                "r.request_headers_to_add[0].header.key",
                "r.request_headers_to_add[1].header.key",
            ]
        );
    }

    #[test]
    fn append_and_append_action_conflict() {
        let mut errs = ConfigErrors::default();
        let mut o = hvo("x", "v");
        #[allow(deprecated)]
        {
            o.append = Some(envoy_api::pb::google::protobuf::BoolValue { value: true });
        }
        o.append_action = 2;
        compile_level(
            &[o.clone()],
            &[],
            Direction::Request,
            &FieldPath::root(),
            &mut errs,
        );
        assert_eq!(errs.0.len(), 1);
        // append + the default action is fine: append false means overwrite.
        #[allow(deprecated)]
        {
            o.append = Some(envoy_api::pb::google::protobuf::BoolValue { value: false });
        }
        o.append_action = 0;
        let mut errs = ConfigErrors::default();
        let l = compile_level(&[o], &[], Direction::Request, &FieldPath::root(), &mut errs)
            .expect("level");
        assert!(errs.is_empty());
        assert_eq!(l.add[0].action, AppendAction::OverwriteIfExistsOrAdd);
    }

    #[test]
    fn formats_only_where_percent_appears() {
        let mut errs = ConfigErrors::default();
        let l = compile_level(
            &[hvo("a", "plain"), hvo("b", "%REQ(x)%"), hvo("c", "")],
            &[],
            Direction::Request,
            &FieldPath::root(),
            &mut errs,
        )
        .expect("level");
        assert!(errs.is_empty(), "{errs}");
        // The empty constant is dropped (never added without keep_empty_value).
        assert_eq!(l.add.len(), 2);
        assert!(matches!(l.add[0].value, HeaderSource::Static(_)));
        assert!(matches!(l.add[1].value, HeaderSource::Format(_)));
        assert!(l.has_format && l.reads_request);
    }

    #[test]
    fn bad_formats_and_response_only_limits() {
        let mut errs = ConfigErrors::default();
        compile_level(
            &[hvo("a", "100%"), hvo("b", "%NOPE%")],
            &[],
            Direction::Request,
            &FieldPath::root(),
            &mut errs,
        );
        assert_eq!(errs.0.len(), 2, "{errs}");
        let mut errs = ConfigErrors::default();
        compile_level(
            &[hvo("a", "%UPSTREAM_HOST%")],
            &[],
            Direction::Response,
            &FieldPath::root(),
            &mut errs,
        );
        assert_eq!(errs.0.len(), 1, "{errs}");
        let mut errs = ConfigErrors::default();
        compile_level(
            &[hvo("a", "%UPSTREAM_HOST%"), hvo("b", "%START_TIME(%Y)%")],
            &[],
            Direction::Request,
            &FieldPath::root(),
            &mut errs,
        );
        assert!(errs.is_empty(), "{errs}");
    }

    #[test]
    fn operator_scan() {
        let f = "a %REQ(x)% %% b %START_TIME(%Y)%%PROTOCOL%";
        assert!(uses_operator(f, "REQ"));
        assert!(uses_operator(f, "START_TIME"));
        assert!(uses_operator(f, "PROTOCOL"));
        assert!(!uses_operator(f, "PATH"));
        assert!(!uses_operator("%UPSTREAM_HOST_NAME%", "UPSTREAM_HOST"));
    }

    #[test]
    fn level_order_follows_most_specific_flag() {
        assert_eq!(level_order(1, 2, 3, false), [1, 2, 3]);
        assert_eq!(level_order(1, 2, 3, true), [3, 2, 1]);
    }
}
