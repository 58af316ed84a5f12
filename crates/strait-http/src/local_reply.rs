//! Responses Strait makes itself (Envoy's "local replies"): no route, no healthy upstream,
//! upstream failure, timeout, direct responses.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::body::ResponseBody;
use crate::finish::Finish;
use crate::hcm::HttpConnectionManager;

/// Builds a local reply with Envoy's headers (`content-type: text/plain` when there is a
/// body, `server`), completing `finish` with `status`.
pub fn local_reply(
    hcm: &HttpConnectionManager,
    status: u16,
    body: Option<Bytes>,
    finish: Option<Finish>,
    details: &'static str,
) -> Response<ResponseBody> {
    local_reply_with(hcm, status, body, finish, details, false)
}

/// A local reply that also closes the connection (`connection: close`), as Envoy does after
/// protocol-level refusals (HTTP/1.0 without `accept_http_10`, missing `host`).
pub fn local_reply_with(
    hcm: &HttpConnectionManager,
    status: u16,
    body: Option<Bytes>,
    mut finish: Option<Finish>,
    details: &'static str,
    close: bool,
) -> Response<ResponseBody> {
    if finish.as_ref().is_some_and(|f| f.is_grpc) {
        return grpc_local_reply(hcm, status, body, finish, details, close);
    }
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = Response::new(ResponseBody::full(None, None));
    *resp.status_mut() = code;
    let h = resp.headers_mut();
    let has_body = body.as_ref().is_some_and(|b| !b.is_empty());
    if has_body {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    hcm.apply_server_header(h);
    if close {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(f) = finish.as_mut() {
        f.details = details;
        f.on_response_headers(code.as_u16(), resp.headers());
    }
    *resp.body_mut() = ResponseBody::full(body, finish);
    resp
}

/// Envoy answers a gRPC request's local reply the gRPC way: HTTP 200, `content-type:
/// application/grpc`, the HTTP status mapped to `grpc-status`, the body as `grpc-message`,
/// and no body (trailers-only).
fn grpc_local_reply(
    hcm: &HttpConnectionManager,
    status: u16,
    body: Option<Bytes>,
    mut finish: Option<Finish>,
    details: &'static str,
    close: bool,
) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(None, None));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert(
        "grpc-status",
        HeaderValue::from_static(grpc_status_for_http(status)),
    );
    if let Some(msg) = body.as_ref().filter(|b| !b.is_empty())
        && let Ok(v) = HeaderValue::from_bytes(&grpc_percent_encode(msg))
    {
        h.insert("grpc-message", v);
    }
    hcm.apply_server_header(h);
    if close {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(f) = finish.as_mut() {
        f.details = details;
        f.on_response_headers(200, resp.headers());
    }
    *resp.body_mut() = ResponseBody::full(None, finish);
    resp
}

/// Envoy's HTTP status -> gRPC status mapping (the gRPC spec's table).
pub fn grpc_status_for_http(status: u16) -> &'static str {
    match status {
        400 => "13",             // INTERNAL
        401 => "16",             // UNAUTHENTICATED
        403 => "7",              // PERMISSION_DENIED
        404 => "12",             // UNIMPLEMENTED
        429 | 502..=504 => "14", // UNAVAILABLE
        _ => "2",                // UNKNOWN
    }
}

/// gRPC's `grpc-message` encoding: printable ASCII except `%` as is, the rest `%XX`.
fn grpc_percent_encode(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len());
    for &b in msg {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

/// `application/grpc`, `application/grpc+proto`, `application/grpc;...` (not gRPC-Web).
pub fn is_grpc_content_type(v: &[u8]) -> bool {
    v.strip_prefix(b"application/grpc")
        .is_some_and(|rest| rest.is_empty() || rest[0] == b'+' || rest[0] == b';')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types() {
        assert!(is_grpc_content_type(b"application/grpc"));
        assert!(is_grpc_content_type(b"application/grpc+proto"));
        assert!(!is_grpc_content_type(b"application/grpc-web"));
        assert!(!is_grpc_content_type(b"application/json"));
    }

    #[test]
    fn grpc_status_mapping_and_encoding() {
        assert_eq!(grpc_status_for_http(503), "14");
        assert_eq!(grpc_status_for_http(404), "12");
        assert_eq!(grpc_status_for_http(500), "2");
        assert_eq!(grpc_percent_encode(b"a b%\n"), b"a b%25%0A".to_vec());
    }
}
