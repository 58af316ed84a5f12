//! Active health checking configuration (`health_checks`): timing, thresholds and the
//! checker kind (HTTP, TCP, gRPC, or the Redis custom checker), with Envoy's defaults.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use envoy_api::pb::envoy::config::cluster::v3 as cl;
use envoy_api::pb::envoy::config::core::v3 as core;
use envoy_api::pb::envoy::extensions::health_checkers::redis::v3 as redis;
use http::{HeaderName, HeaderValue};

use crate::compile::common::{duration, type_name, unpack};
use crate::error::{ConfigErrors, FieldPath};
use crate::route::matcher::{StringMatch, compile_string_match};

/// The Redis health checker's `typed_config` type.
pub const REDIS_TYPE: &str = "envoy.extensions.health_checkers.redis.v3.Redis";

/// One compiled `health_checks` entry.
#[derive(Debug, Clone)]
pub struct HealthCheckSpec {
    pub timeout: Duration,
    pub interval: Duration,
    /// `initial_jitter`: the first check of a host waits a random time up to this.
    pub initial_jitter: Duration,
    pub interval_jitter: Duration,
    pub interval_jitter_percent: u32,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
    /// `reuse_connection` (default true).
    pub reuse_connection: bool,
    /// Used instead of the intervals until the cluster has carried traffic (default 60s).
    pub no_traffic_interval: Duration,
    /// As `no_traffic_interval`, for a host that is healthy (default `no_traffic_interval`).
    pub no_traffic_healthy_interval: Duration,
    /// Interval for an unhealthy host (default `interval`).
    pub unhealthy_interval: Duration,
    /// Interval after a failure that has not made the host unhealthy yet (default
    /// `unhealthy_interval`).
    pub unhealthy_edge_interval: Duration,
    /// Interval after a success that has not made the host healthy yet (default `interval`).
    pub healthy_edge_interval: Duration,
    pub always_log_health_check_failures: bool,
    pub always_log_health_check_success: bool,
    /// `event_log_path`: JSON lines of `HealthCheckEvent`s.
    pub event_log_path: Option<String>,
    pub kind: CheckKind,
}

/// What a check sends and expects.
#[derive(Debug, Clone)]
pub enum CheckKind {
    Http(Arc<HttpCheck>),
    Tcp(TcpCheck),
    Grpc(Arc<GrpcCheck>),
    Redis(RedisCheck),
}

impl CheckKind {
    /// Envoy's `health_checker_type` name in events.
    pub fn type_name(&self) -> &'static str {
        match self {
            CheckKind::Http(_) => "HTTP",
            CheckKind::Tcp(_) => "TCP",
            CheckKind::Grpc(_) => "GRPC",
            CheckKind::Redis(_) => "REDIS",
        }
    }
}

/// How a configured header is added to a check request (`append_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderAdd {
    Append,
    AddIfAbsent,
    OverwriteOrAdd,
    OverwriteIfExists,
}

#[derive(Debug)]
pub struct HttpCheck {
    /// `host`; empty means the cluster name (as Envoy).
    pub host: String,
    pub path: String,
    pub method: http::Method,
    /// Half-open ranges `[start, end)`; default `[200, 201)`.
    pub expected_statuses: Vec<(u16, u16)>,
    pub retriable_statuses: Vec<(u16, u16)>,
    pub http2: bool,
    pub headers_to_add: Vec<(HeaderName, HeaderValue, HeaderAdd)>,
    pub headers_to_remove: Vec<HeaderName>,
    /// Compared with the response's `x-envoy-upstream-healthchecked-cluster`.
    pub service_name_matcher: Option<StringMatch>,
}

impl HttpCheck {
    pub fn expects(&self, status: u16) -> bool {
        in_ranges(&self.expected_statuses, status)
    }

    pub fn retriable(&self, status: u16) -> bool {
        in_ranges(&self.retriable_statuses, status)
    }
}

fn in_ranges(ranges: &[(u16, u16)], status: u16) -> bool {
    ranges.iter().any(|(s, e)| status >= *s && status < *e)
}

#[derive(Debug, Clone)]
pub struct TcpCheck {
    /// Empty: connect-only.
    pub send: Bytes,
    /// Blocks that must appear in the response, in order.
    pub receive: Vec<Bytes>,
}

#[derive(Debug)]
pub struct GrpcCheck {
    pub service_name: String,
    /// `authority`; empty means the cluster name.
    pub authority: String,
    pub initial_metadata: Vec<(HeaderName, HeaderValue, HeaderAdd)>,
}

#[derive(Debug, Clone)]
pub struct RedisCheck {
    /// `key`: `EXISTS key` (healthy when 0) instead of `PING`.
    pub key: String,
}

/// Fields of health-check messages Strait implements (chained into the supported table).
pub const SUPPORTED: &[(&str, &[&str])] = &[
    ("envoy.config.cluster.v3.Cluster", &["health_checks"]),
    (
        "envoy.config.core.v3.HealthCheck",
        &[
            "timeout",
            "interval",
            "initial_jitter",
            "interval_jitter",
            "interval_jitter_percent",
            "unhealthy_threshold",
            "healthy_threshold",
            "reuse_connection",
            "no_traffic_interval",
            "no_traffic_healthy_interval",
            "unhealthy_interval",
            "unhealthy_edge_interval",
            "healthy_edge_interval",
            "event_log_path",
            "always_log_health_check_failures",
            "always_log_health_check_success",
            "http_health_check",
            "tcp_health_check",
            "grpc_health_check",
            "custom_health_check",
        ],
    ),
    (
        "envoy.config.core.v3.HealthCheck.HttpHealthCheck",
        &[
            "host",
            "path",
            "method",
            "expected_statuses",
            "retriable_statuses",
            "codec_client_type",
            "request_headers_to_add",
            "request_headers_to_remove",
            "service_name_matcher",
        ],
    ),
    ("envoy.type.v3.Int64Range", &["start", "end"]),
    (
        "envoy.config.core.v3.HealthCheck.TcpHealthCheck",
        &["send", "receive"],
    ),
    (
        "envoy.config.core.v3.HealthCheck.Payload",
        &["text", "binary"],
    ),
    (
        "envoy.config.core.v3.HealthCheck.GrpcHealthCheck",
        &["service_name", "authority", "initial_metadata"],
    ),
    (
        "envoy.config.core.v3.HealthCheck.CustomHealthCheck",
        &["name", "typed_config"],
    ),
    ("envoy.extensions.health_checkers.redis.v3.Redis", &["key"]),
];

fn dur(
    d: &Option<envoy_api::pb::google::protobuf::Duration>,
    p: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<Duration> {
    d.as_ref().and_then(|d| duration(d, p, errs))
}

pub(crate) fn compile(
    c: &cl::Cluster,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Vec<HealthCheckSpec> {
    if c.health_checks.len() > 1 {
        errs.push(
            path.field("health_checks").to_string(),
            "more than one health check per cluster is not supported by Strait yet",
        );
        return Vec::new();
    }
    c.health_checks
        .iter()
        .enumerate()
        .filter_map(|(i, hc)| compile_one(hc, &path.field("health_checks").index(i), errs))
        .collect()
}

fn compile_one(
    hc: &core::HealthCheck,
    p: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<HealthCheckSpec> {
    let Some(timeout) = dur(&hc.timeout, &p.field("timeout"), errs) else {
        errs.push(p.field("timeout").to_string(), "is required");
        return None;
    };
    let Some(interval) = dur(&hc.interval, &p.field("interval"), errs) else {
        errs.push(p.field("interval").to_string(), "is required");
        return None;
    };
    let (Some(unhealthy), Some(healthy)) = (&hc.unhealthy_threshold, &hc.healthy_threshold) else {
        let f = if hc.unhealthy_threshold.is_none() {
            "unhealthy_threshold"
        } else {
            "healthy_threshold"
        };
        errs.push(p.field(f).to_string(), "is required");
        return None;
    };
    let kind = compile_kind(hc, p, errs)?;
    let no_traffic_interval = dur(
        &hc.no_traffic_interval,
        &p.field("no_traffic_interval"),
        errs,
    )
    .unwrap_or(Duration::from_secs(60));
    let unhealthy_interval =
        dur(&hc.unhealthy_interval, &p.field("unhealthy_interval"), errs).unwrap_or(interval);
    Some(HealthCheckSpec {
        timeout,
        interval,
        initial_jitter: dur(&hc.initial_jitter, &p.field("initial_jitter"), errs)
            .unwrap_or_default(),
        interval_jitter: dur(&hc.interval_jitter, &p.field("interval_jitter"), errs)
            .unwrap_or_default(),
        interval_jitter_percent: hc.interval_jitter_percent,
        unhealthy_threshold: unhealthy.value,
        healthy_threshold: healthy.value,
        reuse_connection: hc.reuse_connection.as_ref().is_none_or(|b| b.value),
        no_traffic_interval,
        no_traffic_healthy_interval: dur(
            &hc.no_traffic_healthy_interval,
            &p.field("no_traffic_healthy_interval"),
            errs,
        )
        .unwrap_or(no_traffic_interval),
        unhealthy_interval,
        unhealthy_edge_interval: dur(
            &hc.unhealthy_edge_interval,
            &p.field("unhealthy_edge_interval"),
            errs,
        )
        .unwrap_or(unhealthy_interval),
        healthy_edge_interval: dur(
            &hc.healthy_edge_interval,
            &p.field("healthy_edge_interval"),
            errs,
        )
        .unwrap_or(interval),
        always_log_health_check_failures: hc.always_log_health_check_failures,
        always_log_health_check_success: hc.always_log_health_check_success,
        #[allow(deprecated)] // still honoured by Envoy 1.40
        event_log_path: Some(hc.event_log_path.clone()).filter(|s| !s.is_empty()),
        kind,
    })
}

fn compile_kind(
    hc: &core::HealthCheck,
    p: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<CheckKind> {
    use core::health_check::HealthChecker as K;
    match &hc.health_checker {
        Some(K::HttpHealthCheck(h)) => {
            let hp = p.field("http_health_check");
            compile_http(h, &hp, errs).map(|h| CheckKind::Http(Arc::new(h)))
        }
        Some(K::TcpHealthCheck(t)) => {
            let tp = p.field("tcp_health_check");
            let send = match &t.send {
                Some(s) => payload(s, &tp.field("send"), errs)?,
                None => Bytes::new(),
            };
            let mut receive = Vec::new();
            for (i, r) in t.receive.iter().enumerate() {
                receive.push(payload(r, &tp.field("receive").index(i), errs)?);
            }
            Some(CheckKind::Tcp(TcpCheck { send, receive }))
        }
        Some(K::GrpcHealthCheck(g)) => {
            let gp = p.field("grpc_health_check");
            Some(CheckKind::Grpc(Arc::new(GrpcCheck {
                service_name: g.service_name.clone(),
                authority: g.authority.clone(),
                initial_metadata: headers_to_add(
                    &g.initial_metadata,
                    &gp.field("initial_metadata"),
                    errs,
                ),
            })))
        }
        Some(K::CustomHealthCheck(c)) => {
            let cp = p.field("custom_health_check");
            use core::health_check::custom_health_check::ConfigType;
            let Some(ConfigType::TypedConfig(any)) = &c.config_type else {
                errs.push(cp.field("typed_config").to_string(), "is required");
                return None;
            };
            if type_name(any) != REDIS_TYPE {
                errs.push(
                    cp.field("typed_config").to_string(),
                    format!(
                        "custom health checker {} is not supported by Strait yet (Redis is)",
                        type_name(any)
                    ),
                );
                return None;
            }
            let r: redis::Redis = unpack(any, &cp.field("typed_config"), errs)?;
            Some(CheckKind::Redis(RedisCheck { key: r.key }))
        }
        None => {
            errs.push(p.to_string(), "a health checker must be set");
            None
        }
    }
}

fn compile_http(
    h: &core::health_check::HttpHealthCheck,
    p: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<HttpCheck> {
    use envoy_api::pb::envoy::r#type::v3::CodecClientType;
    let http2 = match CodecClientType::try_from(h.codec_client_type) {
        Ok(CodecClientType::Http1) => false,
        Ok(CodecClientType::Http2) => true,
        _ => {
            errs.push(
                p.field("codec_client_type").to_string(),
                "only HTTP1 and HTTP2 are supported by Strait",
            );
            return None;
        }
    };
    if h.path.is_empty() {
        errs.push(p.field("path").to_string(), "is required");
        return None;
    }
    let method = match core::RequestMethod::try_from(h.method) {
        Ok(core::RequestMethod::MethodUnspecified) => http::Method::GET,
        Ok(core::RequestMethod::Connect) | Err(_) => {
            errs.push(p.field("method").to_string(), "CONNECT is not allowed");
            return None;
        }
        Ok(m) => http::Method::from_bytes(m.as_str_name().as_bytes()).unwrap_or(http::Method::GET),
    };
    let ranges = |rs: &[envoy_api::pb::envoy::r#type::v3::Int64Range],
                  field: &str,
                  errs: &mut ConfigErrors|
     -> Vec<(u16, u16)> {
        let mut out = Vec::new();
        for (i, r) in rs.iter().enumerate() {
            if r.start >= r.end || r.start < 100 || r.end > 600 {
                errs.push(
                    p.field(field).index(i).to_string(),
                    format!(
                        "invalid http status range [{}, {}): start must be >= 100, end <= 600 and start < end",
                        r.start, r.end
                    ),
                );
                continue;
            }
            out.push((r.start as u16, r.end as u16));
        }
        out
    };
    let mut expected_statuses = ranges(&h.expected_statuses, "expected_statuses", errs);
    if expected_statuses.is_empty() {
        expected_statuses.push((200, 201));
    }
    let retriable_statuses = ranges(&h.retriable_statuses, "retriable_statuses", errs);
    let mut headers_to_remove = Vec::new();
    for (i, n) in h.request_headers_to_remove.iter().enumerate() {
        match HeaderName::from_bytes(n.as_bytes()) {
            Ok(n) => headers_to_remove.push(n),
            Err(_) => errs.push(
                p.field("request_headers_to_remove").index(i).to_string(),
                format!("{n:?} is not a valid header name"),
            ),
        }
    }
    let service_name_matcher = h
        .service_name_matcher
        .as_ref()
        .and_then(|m| compile_string_match(m, &p.field("service_name_matcher"), errs));
    Some(HttpCheck {
        host: h.host.clone(),
        path: h.path.clone(),
        method,
        expected_statuses,
        retriable_statuses,
        http2,
        headers_to_add: headers_to_add(
            &h.request_headers_to_add,
            &p.field("request_headers_to_add"),
            errs,
        ),
        headers_to_remove,
        service_name_matcher,
    })
}

/// Literal header values only: a `%` operator would need the request formatter.
fn headers_to_add(
    opts: &[core::HeaderValueOption],
    p: &FieldPath,
    errs: &mut ConfigErrors,
) -> Vec<(HeaderName, HeaderValue, HeaderAdd)> {
    use core::header_value_option::HeaderAppendAction as HA;
    let mut out = Vec::new();
    for (i, o) in opts.iter().enumerate() {
        let op = p.index(i);
        let Some(h) = &o.header else {
            errs.push(op.field("header").to_string(), "is required");
            continue;
        };
        let value = h.value.replace("%%", "\u{0}");
        if value.contains('%') {
            errs.push(
                op.field("header").field("value").to_string(),
                "formatter operators in health-check headers are not supported by Strait yet",
            );
            continue;
        }
        let value = value.replace('\u{0}', "%");
        let (Ok(name), Ok(val)) = (
            HeaderName::from_bytes(h.key.as_bytes()),
            HeaderValue::from_str(&value),
        ) else {
            errs.push(
                op.field("header").to_string(),
                "invalid header name or value",
            );
            continue;
        };
        #[allow(deprecated)] // the legacy `append` bool is still honoured, as by Envoy
        let action = match (&o.append, HA::try_from(o.append_action)) {
            (Some(a), _) if a.value => HeaderAdd::Append,
            (Some(_), _) => HeaderAdd::OverwriteOrAdd,
            (None, Ok(HA::AddIfAbsent)) => HeaderAdd::AddIfAbsent,
            (None, Ok(HA::OverwriteIfExistsOrAdd)) => HeaderAdd::OverwriteOrAdd,
            (None, Ok(HA::OverwriteIfExists)) => HeaderAdd::OverwriteIfExists,
            (None, _) => HeaderAdd::Append,
        };
        out.push((name, val, action));
    }
    out
}

fn payload(
    pl: &core::health_check::Payload,
    p: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<Bytes> {
    use core::health_check::payload::Payload as P;
    match &pl.payload {
        Some(P::Text(hex)) => match decode_hex(hex) {
            Some(b) => Some(Bytes::from(b)),
            None => {
                errs.push(
                    p.field("text").to_string(),
                    format!("{hex:?} is not a hex string"),
                );
                None
            }
        },
        Some(P::Binary(b)) => Some(Bytes::from(b.clone())),
        None => {
            errs.push(p.to_string(), "a payload must be set");
            None
        }
    }
}

/// Envoy's `Payload.text` is hex, case-insensitive, even length.
pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16);
    s.as_bytes()
        .chunks(2)
        .map(|p| Some((digit(p[0])? * 16 + digit(p[1])?) as u8))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_payloads() {
        assert_eq!(decode_hex("50494E47"), Some(b"PING".to_vec()));
        assert_eq!(decode_hex("50494e47"), Some(b"PING".to_vec()));
        assert_eq!(decode_hex("504"), None);
        assert_eq!(decode_hex("zz"), None);
        assert_eq!(decode_hex(""), Some(Vec::new()));
    }

    #[test]
    fn status_ranges_are_half_open() {
        let h = HttpCheck {
            host: String::new(),
            path: "/".into(),
            method: http::Method::GET,
            expected_statuses: vec![(200, 201), (204, 300)],
            retriable_statuses: vec![(503, 504)],
            http2: false,
            headers_to_add: Vec::new(),
            headers_to_remove: Vec::new(),
            service_name_matcher: None,
        };
        assert!(h.expects(200));
        assert!(!h.expects(201));
        assert!(h.expects(204));
        assert!(h.expects(299));
        assert!(!h.expects(300));
        assert!(h.retriable(503));
        assert!(!h.retriable(502));
    }
}
