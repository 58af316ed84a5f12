//! The request on its way up, in Envoy's order: the connection manager's header rules
//! (hop-by-hop, forwarding headers, request id, `internal_only_headers`), the router's
//! (`x-envoy-expected-rq-timeout-ms`), then the route's: header mutations, host and path
//! rewrites ([`route_request`], run by the connection manager before the router takes the
//! request); finally the upstream protocol's form (origin-form + `host` for HTTP/1.1,
//! absolute URI for HTTP/2) in [`prepare`].

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Uri, Version};
use strait_accesslog::LogContext;
use strait_config::model::UpstreamProtocol;
use strait_config::route::action::{ClusterAction, HostRewrite};
use strait_config::route::path_without_query;
use strait_upstream::Cluster;

use super::Target;
use super::forwarding::set_forwarding_headers;
use super::mutation::{Side, apply_chain, apply_level};
use crate::conn::ConnInfo;
use crate::finish::Finish;
use crate::hcm::HttpConnectionManager;
use crate::headers::*;

static X_ENVOY_ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");
static X_ENVOY_ORIGINAL_HOST: HeaderName = HeaderName::from_static("x-envoy-original-host");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// What the response phase keeps of the request: only when a response header format of
/// the route reads request data (`%REQ(...)%`), the request as it went upstream.
#[derive(Debug, Default)]
pub struct RequestState {
    pub headers: Option<HeaderMap>,
    pub path: Option<String>,
}

/// Applies the connection manager's and the route's request rules to `req`, which goes to
/// `cluster` through `action`. `authority` is the downstream `:authority` / `host`.
pub fn route_request<B>(
    hcm: &HttpConnectionManager,
    req: Request<B>,
    action: &ClusterAction,
    cluster: &Cluster,
    authority: &str,
    conn: &ConnInfo,
    finish: &Finish,
) -> (Request<B>, RequestState) {
    let (mut parts, body) = req.into_parts();
    let spec = &hcm.spec;
    {
        let h = &mut parts.headers;
        super::upstream::set_expected_timeout(h, action, spec.suppress_envoy_headers);
    }
    apply_route_rules(
        &mut parts,
        action,
        cluster,
        authority,
        conn,
        finish,
        spec.suppress_envoy_headers,
    );
    let state = if action.response_reads_request {
        RequestState {
            headers: Some(parts.headers.clone()),
            path: parts.uri.path_and_query().map(|p| p.as_str().to_string()),
        }
    } else {
        RequestState::default()
    };
    (Request::from_parts(parts, body), state)
}

/// What Envoy's connection manager does to every request before route matching: drop
/// hop-by-hop headers, set the forwarding headers and `x-request-id`, append `via`.
/// Routes therefore match on, and local replies log, the headers as mutated.
pub fn connection_manager_headers(
    hcm: &HttpConnectionManager,
    h: &mut http::HeaderMap,
    version: http::Version,
    conn: &ConnInfo,
) {
    let spec = &hcm.spec;
    strip_hop_by_hop(h);
    // HTTP/2 clients may split `cookie` into several fields; Envoy's codec joins them.
    if version == http::Version::HTTP_2 {
        join_cookies(h);
    }
    // No address is internal without `internal_address_config`: a client's claim is dropped,
    // and so are the route configuration's internal-only headers.
    h.remove("x-envoy-internal");
    for name in spec.routes.internal_only_headers.iter() {
        h.remove(name);
    }
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
    if let Some(via) = &hcm.via {
        h.append(header::VIA, via.clone());
    }
}

/// Joins repeated `cookie` fields into one, separated by "; " (RFC 9113 §8.2.3).
fn join_cookies(h: &mut http::HeaderMap) {
    let mut values = h.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (values.next(), values.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for v in h.get_all(header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        h.insert(header::COOKIE, v);
    }
}

/// The format context of request header values.
pub fn request_context<'a>(
    parts: &'a Parts,
    authority: &'a str,
    cluster: &'a Cluster,
    conn: &ConnInfo,
    finish: &Finish,
) -> LogContext<'a> {
    LogContext {
        start_time: finish.start_time,
        method: Some(parts.method.as_str()),
        path: Some(parts.uri.path_and_query().map_or("/", |p| p.as_str())),
        authority: Some(authority),
        scheme: Some("http"),
        protocol: Some(finish.protocol),
        duration: Some(finish.start.elapsed()),
        upstream_cluster: Some(&cluster.name),
        downstream_remote_address: Some(conn.remote),
        downstream_direct_remote_address: Some(conn.remote),
        downstream_local_address: Some(conn.local),
        connection_id: conn.id,
        ..Default::default()
    }
}

/// Envoy's `finalizeRequestHeaders` (weighted cluster level, then the route's levels, then
/// the host and path rewrites) and the router's `auto_host_rewrite`.
fn apply_route_rules(
    parts: &mut Parts,
    action: &ClusterAction,
    cluster: &Cluster,
    authority: &str,
    conn: &ConnInfo,
    finish: &Finish,
    suppress_envoy_headers: bool,
) {
    let mut headers = std::mem::take(&mut parts.headers);
    if let Some(level) = &action.cluster_request {
        let ctx = request_context(parts, authority, cluster, conn, finish);
        apply_level(level, &mut headers, &ctx, Side::Request);
    }
    if let Some(host) = &action.cluster_host {
        headers.insert(header::HOST, host.clone());
    }
    if !action.request_headers.is_empty() {
        // The host as it is now (a weighted cluster may have rewritten it); a shared value,
        // not a copy.
        let current = headers.get(header::HOST).cloned();
        let authority = current
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or(authority);
        let ctx = request_context(parts, authority, cluster, conn, finish);
        apply_chain(&action.request_headers, &mut headers, &ctx, Side::Request);
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let new_host = match &action.host_rewrite {
        None => None,
        Some(HostRewrite::Literal(v)) => Some(v.clone()),
        Some(HostRewrite::Header(name)) => headers.get(name).filter(|v| !v.is_empty()).cloned(),
        Some(HostRewrite::PathRegex(re)) => {
            HeaderValue::from_str(&re.replace_all(path_without_query(path))).ok()
        }
        // After host choice, per attempt (see `upstream::send`).
        Some(HostRewrite::Auto) => None,
    };
    if let Some(v) = new_host {
        update_authority(
            &mut headers,
            authority,
            v,
            action.append_x_forwarded_host,
            !suppress_envoy_headers,
        );
    }
    if let Some(rw) = &action.path_rewrite {
        let new = rw.apply(path);
        if !suppress_envoy_headers && let Ok(old) = HeaderValue::from_str(path) {
            headers.insert(&X_ENVOY_ORIGINAL_PATH, old);
        }
        if let Ok(pq) = PathAndQuery::from_maybe_shared(Bytes::from(new)) {
            parts.uri = Uri::from(pq);
        }
    }
    parts.headers = headers;
}

/// Envoy's `Utility::updateAuthority`: the old host goes to `x-envoy-original-host` (unless
/// the router suppresses Envoy headers) and, with `append_x_forwarded_host`, is appended to
/// `x-forwarded-host` when it differs from the last value there.
pub(crate) fn update_authority(
    h: &mut HeaderMap,
    authority: &str,
    new: HeaderValue,
    append_xfh: bool,
    keep_old: bool,
) {
    let old = match h.get(header::HOST) {
        Some(v) => Some(v.clone()),
        None => HeaderValue::from_str(authority).ok(),
    };
    if let Some(old) = old.filter(|v| !v.is_empty()) {
        if append_xfh {
            append_forwarded_host(h, &old);
        }
        if keep_old {
            h.insert(&X_ENVOY_ORIGINAL_HOST, old);
        }
    }
    h.insert(header::HOST, new);
}

/// Envoy keeps one `x-forwarded-host` (repeated ones are joined with `,`) and appends the
/// host only when the last entry differs.
fn append_forwarded_host(h: &mut HeaderMap, host: &HeaderValue) {
    let mut joined: Vec<u8> = Vec::new();
    for v in h.get_all(&X_FORWARDED_HOST) {
        if !joined.is_empty() {
            joined.push(b',');
        }
        joined.extend_from_slice(v.as_bytes());
    }
    if joined.is_empty() {
        h.insert(&X_FORWARDED_HOST, host.clone());
        return;
    }
    let last = joined.rsplit(|b| *b == b',').next().unwrap_or(&[]);
    if last.trim_ascii() != host.as_bytes() {
        joined.push(b',');
        joined.extend_from_slice(host.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(joined)) {
        h.insert(&X_FORWARDED_HOST, v);
    }
}

/// Puts `parts` in the upstream protocol's form and records the request for access logs.
/// Returns the request id to echo in the response when `always_set_request_id_in_response`
/// is on. The header rules were applied by [`route_request`].
pub fn prepare(
    hcm: &HttpConnectionManager,
    parts: &mut Parts,
    target: &Target<'_>,
    _conn: &ConnInfo,
    finish: &mut Finish,
) -> Option<HeaderValue> {
    let request_id = hcm
        .spec
        .always_set_request_id_in_response
        .then(|| parts.headers.get(&X_REQUEST_ID).cloned())
        .flatten();
    if let Some(l) = finish.log.as_mut() {
        l.request_headers = parts.headers.clone();
        // A rewritten path is what Envoy's access log sees as `:path`.
        if let Some(pq) = parts.uri.path_and_query()
            && pq.as_str() != l.path
        {
            l.path = pq.as_str().to_string();
        }
    }
    to_upstream_form(parts, target);
    request_id
}

/// HTTP/1.1 carries the authority in `host` and an origin-form target; HTTP/2 carries it in
/// `:authority` (an absolute URI for hyper) and must not send `host`. A rewritten `host`
/// is the authority.
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
            let host = h.remove(header::HOST);
            let authority = host
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or(target.authority);
            parts.uri = Uri::builder()
                .scheme(Scheme::HTTP)
                .authority(authority)
                .path_and_query(path.clone())
                .build()
                .unwrap_or_else(|_| Uri::from(path));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_host_appends_only_a_new_last_value() {
        let host = HeaderValue::from_static("orig.com");
        let mut h = HeaderMap::new();
        append_forwarded_host(&mut h, &host);
        assert_eq!(h.get(&X_FORWARDED_HOST), Some(&host));
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_HOST, HeaderValue::from_static("prev.com"));
        append_forwarded_host(&mut h, &host);
        assert_eq!(
            h.get(&X_FORWARDED_HOST).map(|v| v.as_bytes()),
            Some(&b"prev.com,orig.com"[..])
        );
        let mut h = HeaderMap::new();
        h.append(&X_FORWARDED_HOST, HeaderValue::from_static("a.com"));
        h.append(&X_FORWARDED_HOST, HeaderValue::from_static("orig.com"));
        append_forwarded_host(&mut h, &host);
        assert_eq!(h.get_all(&X_FORWARDED_HOST).iter().count(), 1);
        assert_eq!(
            h.get(&X_FORWARDED_HOST).map(|v| v.as_bytes()),
            Some(&b"a.com,orig.com"[..])
        );
    }

    #[test]
    fn update_authority_keeps_the_old_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("orig.com"));
        update_authority(
            &mut h,
            "orig.com",
            HeaderValue::from_static("new.com"),
            false,
            true,
        );
        assert_eq!(
            h.get(header::HOST).map(|v| v.as_bytes()),
            Some(&b"new.com"[..])
        );
        assert_eq!(
            h.get(&X_ENVOY_ORIGINAL_HOST).map(|v| v.as_bytes()),
            Some(&b"orig.com"[..])
        );
        assert!(!h.contains_key(&X_FORWARDED_HOST));
        // HTTP/2 downstream: no host header, the authority is the old host.
        let mut h = HeaderMap::new();
        update_authority(
            &mut h,
            "h2.com",
            HeaderValue::from_static("new.com"),
            true,
            false,
        );
        assert!(!h.contains_key(&X_ENVOY_ORIGINAL_HOST));
        assert_eq!(
            h.get(&X_FORWARDED_HOST).map(|v| v.as_bytes()),
            Some(&b"h2.com"[..])
        );
    }
}
