//! [`LogContext`]: everything a format string can refer to, borrowed from the request.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use http::HeaderMap;

use crate::flags::ResponseFlags;

/// Per-request data the proxy fills once (at stream end) and hands to
/// [`Formatter::render`](crate::Formatter::render).
///
/// All fields are plain values or borrows, so building one costs nothing; set only what you
/// have and leave the rest at [`Default`] (`None`, `0`, empty) — missing values render as `-`
/// (or JSON `null`) exactly where Envoy prints them as missing.
///
/// Pseudo-headers (`:method`, `:path`, `:authority`, `:scheme`) are taken from the dedicated
/// fields, not from `request_headers`: HTTP/1 requests do not carry them in the
/// [`HeaderMap`]. `%REQ(HOST)%` is `:authority` (as in Envoy, where `Host` is folded into
/// `:authority`), falling back to a `host` header.
#[derive(Clone, Copy, Debug)]
pub struct LogContext<'a> {
    /// Request (downstream stream) start, wall clock. `%START_TIME%`.
    pub start_time: SystemTime,
    /// `:method`.
    pub method: Option<&'a str>,
    /// `:path`, including the query string.
    pub path: Option<&'a str>,
    /// `:authority` (HTTP/1 `Host`).
    pub authority: Option<&'a str>,
    /// `:scheme`.
    pub scheme: Option<&'a str>,
    /// Request headers as forwarded (after the proxy's own additions such as
    /// `x-request-id`, `x-forwarded-proto`).
    pub request_headers: Option<&'a HeaderMap>,
    /// Response headers sent downstream (without `:status`, see `response_code`).
    pub response_headers: Option<&'a HeaderMap>,
    /// Response trailers sent downstream.
    pub response_trailers: Option<&'a HeaderMap>,
    /// Downstream protocol: `"HTTP/1.0"`, `"HTTP/1.1"`, `"HTTP/2"`, `"HTTP/3"`. `%PROTOCOL%`.
    pub protocol: Option<&'static str>,
    /// Upstream protocol, same spellings. `%UPSTREAM_PROTOCOL%`.
    pub upstream_protocol: Option<&'static str>,
    /// Final response code, `0` = no response was sent (Envoy prints `0`).
    pub response_code: u16,
    /// `%RESPONSE_CODE_DETAILS%`, e.g. `via_upstream`, `route_not_found`.
    pub response_code_details: Option<&'a str>,
    /// `%CONNECTION_TERMINATION_DETAILS%`.
    pub connection_termination_details: Option<&'a str>,
    /// `%RESPONSE_FLAGS%` / `%RESPONSE_FLAGS_LONG%`.
    pub response_flags: ResponseFlags,
    /// Request body bytes received from downstream.
    pub bytes_received: u64,
    /// Response body bytes sent downstream.
    pub bytes_sent: u64,
    /// `%REQUEST_HEADERS_BYTES%`; when `None` it is computed like Envoy does (sum of name and
    /// value lengths, pseudo-headers included) from the fields above.
    pub request_headers_bytes: Option<u64>,
    /// `%RESPONSE_HEADERS_BYTES%`; when `None` computed from `response_headers` plus
    /// `:status`.
    pub response_headers_bytes: Option<u64>,
    /// `%RESPONSE_TRAILERS_BYTES%`; when `None` computed from `response_trailers`.
    pub response_trailers_bytes: Option<u64>,
    /// `%UPSTREAM_WIRE_BYTES_SENT%` (0 when no upstream).
    pub upstream_wire_bytes_sent: u64,
    /// `%UPSTREAM_WIRE_BYTES_RECEIVED%` (0 when no upstream).
    pub upstream_wire_bytes_received: u64,
    /// Start to last byte sent downstream. `%DURATION%`.
    pub duration: Option<Duration>,
    /// Start to last request byte received. `%REQUEST_DURATION%`.
    pub request_duration: Option<Duration>,
    /// Start to last request byte sent upstream. `%REQUEST_TX_DURATION%`.
    pub request_tx_duration: Option<Duration>,
    /// Start to first response byte received from upstream. `%RESPONSE_DURATION%`.
    pub response_duration: Option<Duration>,
    /// First upstream response byte to last byte sent downstream. `%RESPONSE_TX_DURATION%`.
    pub response_tx_duration: Option<Duration>,
    /// Selected upstream host. `%UPSTREAM_HOST%`, `%UPSTREAM_REMOTE_ADDRESS%`.
    pub upstream_host: Option<SocketAddr>,
    /// Upstream host's hostname, if it has one. `%UPSTREAM_HOST_NAME%` (falls back to
    /// `upstream_host`).
    pub upstream_host_name: Option<&'a str>,
    /// Upstream cluster (its `alt_stat_name` if configured). `%UPSTREAM_CLUSTER%`.
    pub upstream_cluster: Option<&'a str>,
    /// Local address of the upstream connection. `%UPSTREAM_LOCAL_ADDRESS%`.
    pub upstream_local_address: Option<SocketAddr>,
    /// Why the upstream connection failed (spaces are rendered as `_`).
    pub upstream_transport_failure_reason: Option<&'a str>,
    /// Number of upstream attempts (0 = never attempted).
    pub upstream_request_attempt_count: u32,
    /// Id of the upstream connection used (0 when none).
    pub upstream_connection_id: u64,
    /// Downstream remote address, after XFF / original-IP detection.
    pub downstream_remote_address: Option<SocketAddr>,
    /// Downstream peer address of the socket.
    pub downstream_direct_remote_address: Option<SocketAddr>,
    /// Downstream local (listener) address.
    pub downstream_local_address: Option<SocketAddr>,
    /// SNI. `%REQUESTED_SERVER_NAME%`.
    pub requested_server_name: Option<&'a str>,
    /// Matched route's name. `%ROUTE_NAME%`.
    pub route_name: Option<&'a str>,
    /// Matched virtual cluster. `%VIRTUAL_CLUSTER_NAME%`.
    pub virtual_cluster_name: Option<&'a str>,
    /// Filter chain name. `%FILTER_CHAIN_NAME%`.
    pub filter_chain_name: Option<&'a str>,
    /// Listener name. `%LISTENER_NAME%`.
    pub listener_name: Option<&'a str>,
    /// Downstream connection id. `%CONNECTION_ID%`.
    pub connection_id: u64,
}

impl Default for LogContext<'_> {
    fn default() -> Self {
        LogContext {
            start_time: SystemTime::UNIX_EPOCH,
            method: None,
            path: None,
            authority: None,
            scheme: None,
            request_headers: None,
            response_headers: None,
            response_trailers: None,
            protocol: None,
            upstream_protocol: None,
            response_code: 0,
            response_code_details: None,
            connection_termination_details: None,
            response_flags: ResponseFlags::EMPTY,
            bytes_received: 0,
            bytes_sent: 0,
            request_headers_bytes: None,
            response_headers_bytes: None,
            response_trailers_bytes: None,
            upstream_wire_bytes_sent: 0,
            upstream_wire_bytes_received: 0,
            duration: None,
            request_duration: None,
            request_tx_duration: None,
            response_duration: None,
            response_tx_duration: None,
            upstream_host: None,
            upstream_host_name: None,
            upstream_cluster: None,
            upstream_local_address: None,
            upstream_transport_failure_reason: None,
            upstream_request_attempt_count: 0,
            upstream_connection_id: 0,
            downstream_remote_address: None,
            downstream_direct_remote_address: None,
            downstream_local_address: None,
            requested_server_name: None,
            route_name: None,
            virtual_cluster_name: None,
            filter_chain_name: None,
            listener_name: None,
            connection_id: 0,
        }
    }
}

/// Envoy's `%PROTOCOL%` spelling for an [`http::Version`] (`None` for HTTP/0.9, which Envoy
/// does not speak).
pub fn protocol_str(version: http::Version) -> Option<&'static str> {
    Some(match version {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => return None,
    })
}

impl LogContext<'_> {
    /// `%REQUEST_HEADERS_BYTES%` as Envoy computes it: Σ(name + value) over the request
    /// header map, pseudo-headers included. A `host` header is not counted when
    /// `authority` is set (Envoy stores it as `:authority`).
    pub(crate) fn request_headers_bytes(&self) -> u64 {
        if let Some(n) = self.request_headers_bytes {
            return n;
        }
        let pseudo = |name: &str, v: Option<&str>| v.map_or(0, |v| (name.len() + v.len()) as u64);
        let mut total = pseudo(":method", self.method)
            + pseudo(":path", self.path)
            + pseudo(":authority", self.authority)
            + pseudo(":scheme", self.scheme);
        if let Some(h) = self.request_headers {
            for (name, value) in h {
                if self.authority.is_some() && name == http::header::HOST {
                    continue;
                }
                total += (name.as_str().len() + value.len()) as u64;
            }
        }
        total
    }

    pub(crate) fn response_headers_bytes(&self) -> u64 {
        if let Some(n) = self.response_headers_bytes {
            return n;
        }
        match self.response_headers {
            None => 0,
            Some(h) => {
                let status = if self.response_code != 0 {
                    (":status".len() + itoa::Buffer::new().format(self.response_code).len()) as u64
                } else {
                    0
                };
                status + map_bytes(h)
            }
        }
    }

    pub(crate) fn response_trailers_bytes(&self) -> u64 {
        if let Some(n) = self.response_trailers_bytes {
            return n;
        }
        self.response_trailers.map_or(0, map_bytes)
    }
}

fn map_bytes(h: &HeaderMap) -> u64 {
    h.iter()
        .map(|(n, v)| (n.as_str().len() + v.len()) as u64)
        .sum()
}
