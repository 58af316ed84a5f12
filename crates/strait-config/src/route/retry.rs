//! Timeouts and retries of a cluster action, compiled the way Envoy 1.40's router reads them.
//!
//! * [`Timeouts`]: the route `timeout` (15 s default, `0s` disables), the route `idle_timeout`
//!   (overrides the connection manager's `stream_idle_timeout`), and `max_stream_duration`
//!   with its gRPC header options. Setting `max_stream_duration` at all switches the route to
//!   Envoy's "new timeouts": the route `timeout` is then ignored.
//! * [`RetryPolicy`]: the route's `retry_policy`, or the virtual host's when the route has
//!   none (route wins, no merging, as Envoy), plus the virtual-host options that go with
//!   retrying (`include_request_attempt_count`, `include_attempt_count_in_response`) and the
//!   retry buffer limit (`per_request_buffer_limit_bytes`, route over virtual host).
//!
//! What a request may add through `x-envoy-*` headers is merged at request time by the router.

use std::sync::Arc;
use std::time::Duration;

use envoy_api::pb::envoy::config::route::v3 as rt;

use super::compile::RouteContext;
use super::matcher::{HeaderMatcher, compile_header_matcher};
use crate::compile::common::{duration, type_name};
use crate::error::{ConfigErrors, FieldPath};

pub const SUPPORTED: &[(&str, &[&str])] = &[
    (
        "envoy.config.route.v3.RouteAction",
        &[
            "timeout",
            "idle_timeout",
            "retry_policy",
            "max_stream_duration",
        ],
    ),
    (
        "envoy.config.route.v3.RouteAction.MaxStreamDuration",
        &[
            "max_stream_duration",
            "grpc_timeout_header_max",
            "grpc_timeout_header_offset",
        ],
    ),
    (
        "envoy.config.route.v3.VirtualHost",
        &[
            "retry_policy",
            "include_request_attempt_count",
            "include_attempt_count_in_response",
            "per_request_buffer_limit_bytes",
        ],
    ),
    (
        "envoy.config.route.v3.Route",
        &["per_request_buffer_limit_bytes"],
    ),
    (
        "envoy.config.route.v3.RetryPolicy",
        &[
            "retry_on",
            "num_retries",
            "per_try_timeout",
            "per_try_idle_timeout",
            "retry_host_predicate",
            "host_selection_retry_max_attempts",
            "retriable_status_codes",
            "retry_back_off",
            "retriable_headers",
            "retriable_request_headers",
        ],
    ),
    (
        "envoy.config.route.v3.RetryPolicy.RetryBackOff",
        &["base_interval", "max_interval"],
    ),
    (
        "envoy.config.route.v3.RetryPolicy.RetryHostPredicate",
        &["name", "typed_config"],
    ),
];

/// The `envoy.retry_host_predicates.previous_hosts` predicate, by the type of its
/// `typed_config` (Envoy finds retry extensions by type URL; the name is free).
pub const PREVIOUS_HOSTS_TYPE: &str =
    "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate";

/// Envoy's default route timeout.
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

/// The time limit of a cluster action that every request needs (the others are in
/// [`RetryPolicy::stream`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `timeout`: the whole upstream exchange, from the end of the downstream request.
    /// `None` = disabled (`0s`, or the route sets `max_stream_duration`). Default 15 s.
    pub route: Option<Duration>,
}

/// The route's stream timeouts beyond `timeout`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamTimeouts {
    /// `idle_timeout`: `None` when unset (the connection manager's `stream_idle_timeout`
    /// applies), `Some(None)` when `0s` (no idle timeout on this route).
    pub idle: Option<Option<Duration>>,
    /// `max_stream_duration.max_stream_duration`: `Some(None)` when `0s` (disabled).
    pub max_stream_duration: Option<Option<Duration>>,
    /// `max_stream_duration.grpc_timeout_header_max`: with it, a request's `grpc-timeout`
    /// bounds the stream instead (`Duration::ZERO` = no cap).
    pub grpc_timeout_header_max: Option<Duration>,
    /// `max_stream_duration.grpc_timeout_header_offset`.
    pub grpc_timeout_header_offset: Option<Duration>,
    /// `max_stream_duration` is set: Envoy's "new timeouts" (no route `timeout`, and
    /// `grpc-timeout` is rewritten for gRPC requests).
    pub using_new_timeouts: bool,
}

/// The route `timeout`. Also reports every error of the route's retry policy and stream
/// timeouts (compiled again, silently, by [`route_retry`]).
pub fn compile_timeouts(
    ra: &rt::RouteAction,
    ctx: &RouteContext<'_>,
    ap: &FieldPath,
    errs: &mut ConfigErrors,
) -> Timeouts {
    let route = match &ra.timeout {
        _ if ra.max_stream_duration.is_some() => None,
        Some(d) => duration(d, &ap.field("timeout"), errs).filter(|d| !d.is_zero()),
        None => Some(DEFAULT_ROUTE_TIMEOUT),
    };
    let _ = build(ra, None, ctx, ap, errs);
    Timeouts { route }
}

fn compile_stream_timeouts(
    ra: &rt::RouteAction,
    ap: &FieldPath,
    errs: &mut ConfigErrors,
) -> StreamTimeouts {
    let opt = |d: &Option<envoy_api::pb::google::protobuf::Duration>,
               p: &FieldPath,
               errs: &mut ConfigErrors| {
        d.as_ref()
            .and_then(|d| duration(d, p, errs))
            .map(|d| Some(d).filter(|d| !d.is_zero()))
    };
    let mut t = StreamTimeouts {
        idle: opt(&ra.idle_timeout, &ap.field("idle_timeout"), errs),
        using_new_timeouts: ra.max_stream_duration.is_some(),
        ..StreamTimeouts::default()
    };
    if let Some(m) = &ra.max_stream_duration {
        let mp = ap.field("max_stream_duration");
        t.max_stream_duration = opt(
            &m.max_stream_duration,
            &mp.field("max_stream_duration"),
            errs,
        );
        t.grpc_timeout_header_max = opt(
            &m.grpc_timeout_header_max,
            &mp.field("grpc_timeout_header_max"),
            errs,
        )
        .map(|d| d.unwrap_or(Duration::ZERO));
        t.grpc_timeout_header_offset = opt(
            &m.grpc_timeout_header_offset,
            &mp.field("grpc_timeout_header_offset"),
            errs,
        )
        .map(|d| d.unwrap_or(Duration::ZERO));
    }
    t
}

/// Retry conditions (`retry_on`, `x-envoy-retry-on`, `x-envoy-retry-grpc-on`) as bits.
pub mod retry_on {
    pub const FIVE_XX: u32 = 1 << 0;
    pub const GATEWAY_ERROR: u32 = 1 << 1;
    pub const CONNECT_FAILURE: u32 = 1 << 2;
    pub const RETRIABLE_4XX: u32 = 1 << 3;
    pub const REFUSED_STREAM: u32 = 1 << 4;
    pub const RETRIABLE_STATUS_CODES: u32 = 1 << 5;
    pub const RESET: u32 = 1 << 6;
    pub const RETRIABLE_HEADERS: u32 = 1 << 7;
    pub const ENVOY_RATELIMITED: u32 = 1 << 8;
    pub const RESET_BEFORE_REQUEST: u32 = 1 << 9;
    /// Only acts on HTTP/3 upstreams, which Strait does not have: accepted, never matches.
    pub const HTTP3_POST_CONNECT_FAILURE: u32 = 1 << 10;
    pub const GRPC_CANCELLED: u32 = 1 << 16;
    pub const GRPC_DEADLINE_EXCEEDED: u32 = 1 << 17;
    pub const GRPC_RESOURCE_EXHAUSTED: u32 = 1 << 18;
    pub const GRPC_UNAVAILABLE: u32 = 1 << 19;
    pub const GRPC_INTERNAL: u32 = 1 << 20;
    pub const ANY_GRPC: u32 = GRPC_CANCELLED
        | GRPC_DEADLINE_EXCEEDED
        | GRPC_RESOURCE_EXHAUSTED
        | GRPC_UNAVAILABLE
        | GRPC_INTERNAL;

    /// `x-envoy-retry-on` values. Unknown names are ignored, as Envoy does; items are
    /// comma-separated and trimmed.
    pub fn parse_http(list: &str) -> u32 {
        list.split(',')
            .map(str::trim)
            .map(|v| match v {
                "5xx" => FIVE_XX,
                "gateway-error" => GATEWAY_ERROR,
                "connect-failure" => CONNECT_FAILURE,
                "envoy-ratelimited" => ENVOY_RATELIMITED,
                "retriable-4xx" => RETRIABLE_4XX,
                "refused-stream" => REFUSED_STREAM,
                "retriable-status-codes" => RETRIABLE_STATUS_CODES,
                "retriable-headers" => RETRIABLE_HEADERS,
                "reset" => RESET,
                "reset-before-request" => RESET_BEFORE_REQUEST,
                "http3-post-connect-failure" => HTTP3_POST_CONNECT_FAILURE,
                _ => 0,
            })
            .fold(0, |a, b| a | b)
    }

    /// `x-envoy-retry-grpc-on` values.
    pub fn parse_grpc(list: &str) -> u32 {
        list.split(',')
            .map(str::trim)
            .map(|v| match v {
                "cancelled" => GRPC_CANCELLED,
                "deadline-exceeded" => GRPC_DEADLINE_EXCEEDED,
                "resource-exhausted" => GRPC_RESOURCE_EXHAUSTED,
                "unavailable" => GRPC_UNAVAILABLE,
                "internal" => GRPC_INTERNAL,
                _ => 0,
            })
            .fold(0, |a, b| a | b)
    }

    /// A config `retry_on`: HTTP and gRPC conditions in one list.
    pub fn parse_config(list: &str) -> u32 {
        parse_http(list) | parse_grpc(list)
    }
}

/// The retry settings of a route: its retry policy (the route's, else the virtual host's)
/// and the virtual host's attempt-count options. `None` on a [`ClusterAction`] means all of
/// Envoy's defaults (no retries unless the request asks for them).
///
/// [`ClusterAction`]: super::ClusterAction
#[derive(Debug)]
pub struct RetryPolicy {
    /// `retry_on` as [`retry_on`] bits; 0 = retries only when a request asks.
    pub retry_on: u32,
    /// `num_retries` (default 1).
    pub num_retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub per_try_idle_timeout: Option<Duration>,
    pub retriable_status_codes: Vec<u32>,
    /// `retriable_headers`, matched against response headers (the request-side matchers of
    /// the route matching module, fed the response headers).
    pub retriable_headers: Vec<HeaderMatcher>,
    /// When set, only requests matching one of these may be retried.
    pub retriable_request_headers: Vec<HeaderMatcher>,
    /// `retry_back_off.base_interval` (default 25 ms).
    pub base_interval: Duration,
    /// `retry_back_off.max_interval` (default 10 × base).
    pub max_interval: Duration,
    /// `envoy.retry_host_predicates.previous_hosts`: retries avoid hosts already tried.
    pub previous_hosts: bool,
    /// `host_selection_retry_max_attempts`: extra host picks a predicate may ask for
    /// (default 1).
    pub host_selection_max_attempts: u32,
    /// Virtual host `include_request_attempt_count`: `x-envoy-attempt-count` upstream.
    pub include_attempt_count_in_request: bool,
    /// Virtual host `include_attempt_count_in_response`: `x-envoy-attempt-count` downstream.
    pub include_attempt_count_in_response: bool,
    /// `per_request_buffer_limit_bytes` (route, else virtual host): at most this much request
    /// body is kept for retries, below the connection buffer limit.
    pub buffer_limit: Option<u32>,
    /// The route's `idle_timeout` and `max_stream_duration`.
    pub stream: StreamTimeouts,
}

/// Envoy's default base back-off (runtime `upstream.base_retry_backoff_ms`).
pub const DEFAULT_BASE_INTERVAL: Duration = Duration::from_millis(25);

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retry_on: 0,
            num_retries: 1,
            per_try_timeout: None,
            per_try_idle_timeout: None,
            retriable_status_codes: Vec::new(),
            retriable_headers: Vec::new(),
            retriable_request_headers: Vec::new(),
            base_interval: DEFAULT_BASE_INTERVAL,
            max_interval: DEFAULT_BASE_INTERVAL * 10,
            previous_hosts: false,
            host_selection_max_attempts: 1,
            include_attempt_count_in_request: false,
            include_attempt_count_in_response: false,
            buffer_limit: None,
            stream: StreamTimeouts::default(),
        }
    }
}

/// The retry settings of route `r` whose action is `ra` at `ap` (see [`RetryPolicy`]);
/// `None` when everything is at Envoy's defaults. Errors were reported by
/// [`compile_timeouts`].
pub fn route_retry(
    r: &rt::Route,
    ctx: &RouteContext<'_>,
    ap: &FieldPath,
) -> Option<Arc<RetryPolicy>> {
    let Some(rt::route::Action::Route(ra)) = &r.action else {
        return None;
    };
    build(ra, Some(r), ctx, ap, &mut ConfigErrors::default())
}

// `per_request_buffer_limit_bytes` is deprecated but still honoured by Envoy 1.40.
#[allow(deprecated)]
fn build(
    ra: &rt::RouteAction,
    r: Option<&rt::Route>,
    ctx: &RouteContext<'_>,
    ap: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<Arc<RetryPolicy>> {
    let vh = ctx.vhost;
    let mut out = match (&ra.retry_policy, &vh.retry_policy) {
        (Some(p), _) => compile_policy(p, &ap.field("retry_policy"), errs),
        // The virtual host's policy is reported at its own path (once per route using it).
        (None, Some(p)) => compile_policy(p, &vhost_path(ap).field("retry_policy"), errs),
        (None, None) => RetryPolicy::default(),
    };
    out.stream = compile_stream_timeouts(ra, ap, errs);
    out.include_attempt_count_in_request = vh.include_request_attempt_count;
    out.include_attempt_count_in_response = vh.include_attempt_count_in_response;
    out.buffer_limit = r
        .and_then(|r| r.per_request_buffer_limit_bytes.as_ref())
        .or(vh.per_request_buffer_limit_bytes.as_ref())
        .map(|v| v.value);
    let defaults = ra.retry_policy.is_none()
        && vh.retry_policy.is_none()
        && !out.include_attempt_count_in_request
        && !out.include_attempt_count_in_response
        && out.buffer_limit.is_none()
        && out.stream == StreamTimeouts::default();
    (!defaults).then(|| Arc::new(out))
}

/// `...virtual_hosts[i]` from `...virtual_hosts[i].routes[j].route`.
fn vhost_path(action: &FieldPath) -> FieldPath {
    let s = action.as_str();
    let vh = s.rfind(".routes[").map(|i| &s[..i]).unwrap_or(s);
    FieldPath::root().field(vh)
}

fn compile_policy(p: &rt::RetryPolicy, pp: &FieldPath, errs: &mut ConfigErrors) -> RetryPolicy {
    let mut out = RetryPolicy {
        retry_on: retry_on::parse_config(&p.retry_on),
        num_retries: p.num_retries.as_ref().map(|v| v.value).unwrap_or(1),
        ..RetryPolicy::default()
    };
    let nonzero = |d: &Option<envoy_api::pb::google::protobuf::Duration>,
                   name: &str,
                   errs: &mut ConfigErrors| {
        d.as_ref()
            .and_then(|d| duration(d, &pp.field(name), errs))
            .filter(|d| !d.is_zero())
    };
    out.per_try_timeout = nonzero(&p.per_try_timeout, "per_try_timeout", errs);
    out.per_try_idle_timeout = nonzero(&p.per_try_idle_timeout, "per_try_idle_timeout", errs);
    out.retriable_status_codes = p.retriable_status_codes.clone();
    out.retriable_headers =
        compile_header_matchers(&p.retriable_headers, &pp.field("retriable_headers"), errs);
    out.retriable_request_headers = compile_header_matchers(
        &p.retriable_request_headers,
        &pp.field("retriable_request_headers"),
        errs,
    );
    if let Some(b) = &p.retry_back_off {
        let bp = pp.field("retry_back_off");
        // base_interval is required and > 0 (checked with the proto rules).
        if let Some(base) = nonzero(&b.base_interval, "retry_back_off.base_interval", errs) {
            out.base_interval = base;
        }
        out.max_interval = match nonzero(&b.max_interval, "retry_back_off.max_interval", errs) {
            Some(max) => {
                if max < out.base_interval {
                    // Envoy: "retry_policy.max_interval must greater than or equal to the
                    // base_interval".
                    errs.push(
                        bp.field("max_interval").to_string(),
                        "must be greater than or equal to base_interval",
                    );
                }
                max
            }
            None => out.base_interval * 10,
        };
    }
    if p.host_selection_retry_max_attempts < 0 {
        errs.push(
            pp.field("host_selection_retry_max_attempts").to_string(),
            "must not be negative",
        );
    } else if p.host_selection_retry_max_attempts > 0 {
        out.host_selection_max_attempts =
            u32::try_from(p.host_selection_retry_max_attempts).unwrap_or(u32::MAX);
    }
    for (i, hp) in p.retry_host_predicate.iter().enumerate() {
        let hpp = pp.field("retry_host_predicate").index(i);
        use rt::retry_policy::retry_host_predicate::ConfigType;
        let ty = match &hp.config_type {
            Some(ConfigType::TypedConfig(any)) => type_name(any),
            None => "",
        };
        if ty == PREVIOUS_HOSTS_TYPE {
            out.previous_hosts = true;
        } else {
            // Envoy: "Didn't find a registered implementation for '<name>' with type URL".
            errs.push(
                hpp.to_string(),
                format!(
                    "retry host predicate {:?} with type {ty:?} is not supported by Strait yet \
                     (only {PREVIOUS_HOSTS_TYPE} is)",
                    hp.name
                ),
            );
        }
    }
    out
}

fn compile_header_matchers(
    ms: &[rt::HeaderMatcher],
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Vec<HeaderMatcher> {
    ms.iter()
        .enumerate()
        .filter_map(|(i, m)| compile_header_matcher(m, &path.index(i), errs))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_on_lists() {
        use retry_on::*;
        assert_eq!(parse_http("5xx, reset ,bogus"), FIVE_XX | RESET);
        assert_eq!(parse_http("cancelled"), 0);
        assert_eq!(
            parse_grpc("cancelled,unavailable"),
            GRPC_CANCELLED | GRPC_UNAVAILABLE
        );
        assert_eq!(
            parse_config("gateway-error,resource-exhausted"),
            GATEWAY_ERROR | GRPC_RESOURCE_EXHAUSTED
        );
        assert_eq!(parse_config(""), 0);
    }

    fn compile(v: serde_json::Value) -> (Option<super::super::RouteTable>, ConfigErrors) {
        let desc = envoy_api::pool()
            .get_message_by_name("envoy.config.route.v3.RouteConfiguration")
            .expect("RouteConfiguration descriptor");
        let rc: rt::RouteConfiguration = crate::load::message_from_json(v, &desc)
            .and_then(|d| {
                d.transcode_to()
                    .map_err(|e| ConfigErrors::one("", e.to_string()))
            })
            .unwrap_or_else(|e| panic!("{e}"));
        let clusters: std::collections::HashSet<String> = ["c".to_string()].into();
        let mut errs = ConfigErrors::default();
        let t = super::super::compile::compile_route_config(
            &rc,
            &FieldPath::root(),
            &clusters,
            &mut errs,
        );
        (t, errs)
    }

    fn retry_of(t: &super::super::RouteTable, vh: usize, r: usize) -> Option<Arc<RetryPolicy>> {
        match &t.vhosts[vh].routes[r].action {
            super::super::RouteAction::Cluster(c) => c.retry.clone(),
            _ => panic!("not a cluster action"),
        }
    }

    #[test]
    fn route_policy_wins_over_the_virtual_host() {
        let (t, errs) = compile(serde_json::json!({"virtual_hosts": [{
        "name": "v", "domains": ["*"],
        "include_attempt_count_in_response": true,
        "per_request_buffer_limit_bytes": 1000,
        "retry_policy": {"retry_on": "5xx,cancelled", "num_retries": 4},
        "routes": [
            {"match": {"prefix": "/a"}, "route": {"cluster": "c"}},
            {"match": {"prefix": "/b"}, "per_request_buffer_limit_bytes": 10,
             "route": {"cluster": "c", "idle_timeout": "0s",
                "retry_policy": {"retry_on": "reset", "per_try_timeout": "0.25s",
                    "retry_back_off": {"base_interval": "0.1s"},
                    "retriable_status_codes": [418],
                    "host_selection_retry_max_attempts": 5,
                    "retry_host_predicate": [{"name": "p", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}]}}}
        ]}]}));
        assert!(errs.is_empty(), "{errs}");
        let t = t.expect("table");
        let a = retry_of(&t, 0, 0).expect("vhost policy");
        assert_eq!(a.retry_on, retry_on::FIVE_XX | retry_on::GRPC_CANCELLED);
        assert_eq!(a.num_retries, 4);
        assert_eq!(a.buffer_limit, Some(1000));
        assert!(a.include_attempt_count_in_response);
        assert!(!a.previous_hosts);
        assert_eq!(a.base_interval, Duration::from_millis(25));
        assert_eq!(a.max_interval, Duration::from_millis(250));
        let b = retry_of(&t, 0, 1).expect("route policy");
        assert_eq!(b.retry_on, retry_on::RESET);
        assert_eq!(b.num_retries, 1);
        assert_eq!(b.per_try_timeout, Some(Duration::from_millis(250)));
        assert_eq!(b.base_interval, Duration::from_millis(100));
        assert_eq!(b.max_interval, Duration::from_secs(1));
        assert_eq!(b.retriable_status_codes, vec![418]);
        assert!(b.previous_hosts);
        assert_eq!(b.host_selection_max_attempts, 5);
        assert_eq!(b.buffer_limit, Some(10));
        assert_eq!(b.stream.idle, Some(None));
    }

    #[test]
    fn defaults_need_no_policy() {
        let (t, errs) = compile(serde_json::json!({"virtual_hosts": [{
        "name": "v", "domains": ["*"],
        "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": "c", "timeout": "0s"}},
            {"match": {"prefix": "/m"}, "route": {"cluster": "c", "timeout": "3s",
                "max_stream_duration": {"max_stream_duration": "1s"}}}
        ]}]}));
        assert!(errs.is_empty(), "{errs}");
        let t = t.expect("table");
        assert!(retry_of(&t, 0, 0).is_none());
        let m = retry_of(&t, 0, 1).expect("stream timeouts");
        assert!(m.stream.using_new_timeouts);
        assert_eq!(
            m.stream.max_stream_duration,
            Some(Some(Duration::from_secs(1)))
        );
        assert_eq!(m.retry_on, 0);
        match &t.vhosts[0].routes[1].action {
            super::super::RouteAction::Cluster(c) => assert_eq!(c.timeouts.route, None),
            _ => panic!("not a cluster action"),
        }
    }

    #[test]
    fn bad_policies_are_refused_with_their_path() {
        let (_, errs) = compile(serde_json::json!({"virtual_hosts": [{
        "name": "v", "domains": ["*"],
        "retry_policy": {"retry_on": "5xx", "retry_host_predicate": [{"name": "x"}]},
        "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": "c",
                "retry_policy": {"retry_back_off": {"base_interval": "1s", "max_interval": "0.5s"}}}},
            {"match": {"prefix": "/v"}, "route": {"cluster": "c"}}
        ]}]}));
        let text = errs.to_string();
        assert!(
            text.contains(
                "virtual_hosts[0].routes[0].route.retry_policy.retry_back_off.max_interval"
            ),
            "{text}"
        );
        assert!(
            text.contains("virtual_hosts[0].retry_policy.retry_host_predicate[0]"),
            "{text}"
        );
    }
}
