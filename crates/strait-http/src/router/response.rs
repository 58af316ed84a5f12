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
    Response::from_parts(parts, ResponseBody::upstream(body, finish))
}
