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
