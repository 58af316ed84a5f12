//! The upstream's response on its way down: hop-by-hop headers out, Envoy's headers in.

use http::header::{self, HeaderValue};
use http::{Response, Version};

use super::upstream::Exchange;
use crate::body::ResponseBody;
use crate::finish::Finish;
use crate::hcm::HttpConnectionManager;
use crate::headers::*;

pub fn build(
    hcm: &HttpConnectionManager,
    exchange: Exchange,
    request_id: Option<HeaderValue>,
    mut finish: Finish,
) -> Response<ResponseBody> {
    let spec = &hcm.spec;
    let (mut parts, body) = exchange.response.into_parts();
    let status = parts.status.as_u16();
    let h = &mut parts.headers;
    strip_hop_by_hop(h);
    if !spec.suppress_envoy_headers {
        h.insert(
            &X_ENVOY_UPSTREAM_SERVICE_TIME,
            number_value(exchange.started.elapsed().as_millis() as u64),
        );
    }
    hcm.apply_server_header(h);
    if let Some(via) = &hcm.via {
        h.append(header::VIA, via.clone());
    }
    if let Some(id) = request_id {
        h.insert(&X_REQUEST_ID, id);
    }
    finish.details = "via_upstream";
    finish.on_response_headers(status, &parts.headers);
    // hyper picks the downstream version; the upstream's must not leak through.
    parts.version = Version::HTTP_11;
    Response::from_parts(parts, ResponseBody::upstream(body, finish, exchange.timers))
}

/// Applies a route's response header mutations to a response that is about to go
/// downstream (an upstream response or any local reply of the route), then what Envoy's
/// connection manager sets after the router: `server` and, when configured, `x-request-id`.
/// `%RESPONSE_CODE%` renders `base.response_code`: Envoy has not recorded the status yet when
/// it mutates a local reply (0), it has for an upstream response.
pub fn apply_route_headers(
    hcm: &HttpConnectionManager,
    chain: &[std::sync::Arc<strait_config::route::headers::HeaderMutation>],
    resp: &mut Response<ResponseBody>,
    base: &strait_accesslog::LogContext<'_>,
) {
    if chain.is_empty() {
        return;
    }
    let request_id = hcm
        .spec
        .always_set_request_id_in_response
        .then(|| resp.headers().get(&X_REQUEST_ID).cloned())
        .flatten();
    super::mutation::apply_chain(
        chain,
        resp.headers_mut(),
        base,
        super::mutation::Side::Response,
    );
    let h = resp.headers_mut();
    hcm.apply_server_header(h);
    if let Some(id) = request_id {
        h.insert(&X_REQUEST_ID, id);
    }
    // Access logs see the headers as sent, route additions included (Envoy logs them).
    if resp.body().logs_headers() {
        let sent = resp.headers().clone();
        resp.body_mut().set_logged_response_headers(sent);
    }
}

/// Envoy closes an HTTP/1 connection when it answers before the request body has been
/// received (`connection: close`); HTTP/2 streams are independent.
pub fn local_reply_closes<B: http_body::Body>(
    req: &http::Request<B>,
    conn: &crate::conn::ConnInfo,
) -> bool {
    let close = req.version() < Version::HTTP_2 && !req.body().is_end_stream();
    if close {
        conn.closing
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    close
}

/// The format context of response header values for a reply the route makes itself.
pub fn route_reply_context<'a, B>(
    req: &'a http::Request<B>,
    authority: &'a str,
    finish: &crate::finish::Finish,
    route_name: &'a str,
    conn: &crate::conn::ConnInfo,
) -> strait_accesslog::LogContext<'a> {
    strait_accesslog::LogContext {
        start_time: finish.start_time,
        method: Some(req.method().as_str()),
        path: Some(req.uri().path_and_query().map_or("/", |p| p.as_str())),
        authority: Some(authority),
        scheme: Some("http"),
        request_headers: Some(req.headers()),
        protocol: Some(finish.protocol),
        duration: Some(finish.start.elapsed()),
        route_name: Some(route_name).filter(|n| !n.is_empty()),
        downstream_remote_address: Some(conn.remote),
        downstream_direct_remote_address: Some(conn.remote),
        downstream_local_address: Some(conn.local),
        connection_id: conn.id,
        ..Default::default()
    }
}
