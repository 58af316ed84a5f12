//! The request on its way up: Envoy's connection-manager and router header rules, then the
//! upstream protocol's form (origin-form + `host` for HTTP/1.1, absolute URI for HTTP/2).

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::{PathAndQuery, Scheme};
use http::{Uri, Version};
use strait_config::model::UpstreamProtocol;

use super::Target;
use super::forwarding::set_forwarding_headers;
use crate::conn::ConnInfo;
use crate::finish::Finish;
use crate::hcm::HttpConnectionManager;
use crate::headers::*;

/// Rewrites `parts` for the upstream. Returns the request id to echo in the response when
/// `always_set_request_id_in_response` is on.
pub fn prepare(
    hcm: &HttpConnectionManager,
    parts: &mut Parts,
    target: &Target<'_>,
    conn: &ConnInfo,
    finish: &mut Finish,
) -> Option<HeaderValue> {
    let spec = &hcm.spec;
    let h = &mut parts.headers;
    strip_hop_by_hop(h);

    // Forwarding headers, as Envoy's connection manager sets them.
    let external = spec.use_remote_address;
    if external {
        set_forwarding_headers(h, conn, spec.xff_num_trusted_hops, spec.skip_xff_append);
    } else if !h.contains_key(&X_FORWARDED_PROTO) {
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if spec.generate_request_id
        && (!h.contains_key(&X_REQUEST_ID) || (external && !spec.preserve_external_request_id))
    {
        h.insert(&X_REQUEST_ID, new_request_id());
    }
    let request_id = spec
        .always_set_request_id_in_response
        .then(|| h.get(&X_REQUEST_ID).cloned())
        .flatten();
    if let Some(t) = target.action.timeouts.route
        && !spec.suppress_envoy_headers
    {
        h.insert(
            &X_ENVOY_EXPECTED_RQ_TIMEOUT_MS,
            number_value(t.as_millis() as u64),
        );
    }
    if let Some(via) = &hcm.via {
        h.append(header::VIA, via.clone());
    }
    if let Some(l) = finish.log.as_mut() {
        l.request_headers = h.clone();
    }
    to_upstream_form(parts, target);
    request_id
}

/// HTTP/1.1 carries the authority in `host` and an origin-form target; HTTP/2 carries it in
/// `:authority` (an absolute URI for hyper) and must not send `host`.
fn to_upstream_form(parts: &mut Parts, target: &Target<'_>) {
    let h = &mut parts.headers;
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    match target.cluster.spec.protocol {
        UpstreamProtocol::Http1 => {
            parts.version = Version::HTTP_11;
            if !h.contains_key(header::HOST)
                && let Ok(v) = HeaderValue::from_str(target.authority)
            {
                h.insert(header::HOST, v);
            }
            parts.uri = Uri::from(path);
        }
        UpstreamProtocol::Http2 => {
            parts.version = Version::HTTP_2;
            h.remove(header::HOST);
            parts.uri = Uri::builder()
                .scheme(Scheme::HTTP)
                .authority(target.authority)
                .path_and_query(path.clone())
                .build()
                .unwrap_or_else(|_| Uri::from(path));
        }
    }
}
