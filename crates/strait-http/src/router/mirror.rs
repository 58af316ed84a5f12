//! Request mirroring (`request_mirror_policies`): a fire-and-forget copy of the request to
//! another cluster, with `-shadow` appended to its host as Envoy does. The shadow runs in its
//! own task; its body is a copy of the frames the main request reads (see
//! `strait_upstream::shadow`), its response is read and dropped, and nothing it does can
//! delay or fail the main request.

use std::sync::Arc;
use std::time::Duration;

use http::header::HOST;
use http::request::Parts;
use http::uri::Authority;
use http::{HeaderName, HeaderValue, Request, Uri};
use http_body_util::BodyExt;
use strait_config::route::ClusterAction;
use strait_config::route::forward::{MirrorCluster, MirrorPolicy};
use strait_upstream::shadow::DownstreamBody;
use strait_upstream::{Cluster, LbContext, RequestBody, StreamCounters};

use crate::hcm::HttpConnectionManager;

static X_ENVOY_INTERNAL: HeaderName = HeaderName::from_static("x-envoy-internal");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// The address Envoy's internal client appends to a shadow's x-forwarded-for.
const SHADOW_CLIENT_ADDRESS: &str = "192.0.2.2";

/// Starts the route's mirrors for a request about to be forwarded. `parts` is the request as
/// it goes upstream (after the router's header changes).
pub fn start(
    hcm: &HttpConnectionManager,
    action: &ClusterAction,
    parts: &Parts,
    body: &mut DownstreamBody,
    body_empty: bool,
    random: impl Fn() -> u64,
) {
    for policy in action.forward.mirrors.iter() {
        if policy
            .fraction
            .as_ref()
            .is_some_and(|f| !f.sample(random()))
        {
            continue;
        }
        let cluster = match &policy.cluster {
            MirrorCluster::Named(n) => hcm.clusters.get(n),
            MirrorCluster::Header(h) => parts
                .headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .and_then(|n| hcm.clusters.get(n)),
        };
        // A cluster that does not exist (any more) is skipped, as Envoy does.
        let Some(cluster) = cluster.cloned() else {
            continue;
        };
        let Some(req) = shadow_request(policy, parts, body, body_empty) else {
            continue;
        };
        let timeout = action.timeouts.route;
        tokio::spawn(run(cluster, req, timeout));
    }
}

fn shadow_request(
    policy: &MirrorPolicy,
    parts: &Parts,
    body: &mut DownstreamBody,
    body_empty: bool,
) -> Option<Request<RequestBody>> {
    let b = if body_empty {
        RequestBody::Empty
    } else {
        RequestBody::Shadow(body.add_shadow())
    };
    let mut req = Request::new(b);
    *req.method_mut() = parts.method.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    *req.uri_mut() = parts.uri.clone();
    // Envoy sends shadows through its internal HTTP client, which marks them internal and
    // appends its own (documentation-range) address to x-forwarded-for: observed from
    // Envoy 1.40, kept so shadow backends see what they saw behind Envoy.
    let h = req.headers_mut();
    h.insert(&X_ENVOY_INTERNAL, HeaderValue::from_static("true"));
    let xff = match h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(v) if !v.is_empty() => {
            HeaderValue::from_str(&format!("{v},{SHADOW_CLIENT_ADDRESS}")).ok()
        }
        _ => Some(HeaderValue::from_static(SHADOW_CLIENT_ADDRESS)),
    };
    if let Some(v) = xff {
        h.insert(&X_FORWARDED_FOR, v);
    }
    let host = policy.host.clone().or_else(|| {
        parts.headers.get(HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        })
    });
    let host = match host {
        Some(h) if !policy.keep_host => shadow_host(h.to_str().ok()?)?,
        Some(h) => h,
        None => return Some(req),
    };
    if req.headers().contains_key(HOST) || req.uri().authority().is_none() {
        req.headers_mut().insert(HOST, host.clone());
    }
    if req.uri().authority().is_some() {
        let mut p = req.uri().clone().into_parts();
        p.authority = Authority::try_from(host.as_bytes()).ok();
        if let Ok(u) = Uri::from_parts(p) {
            *req.uri_mut() = u;
        }
    }
    Some(req)
}

/// `host-shadow`, the suffix going before the port (Envoy's `shadowAppendedHost`).
fn shadow_host(host: &str) -> Option<HeaderValue> {
    let port_start = port_start(host);
    let s = match port_start {
        Some(i) => format!("{}-shadow{}", &host[..i], &host[i..]),
        None => format!("{host}-shadow"),
    };
    HeaderValue::from_str(&s).ok()
}

/// Where `:port` starts in a host, if it has one (an IPv6 literal's colons are not a port).
fn port_start(host: &str) -> Option<usize> {
    let i = host.rfind(':')?;
    if host.starts_with('[') && !host[..i].ends_with(']') {
        return None;
    }
    if !host.starts_with('[') && host[..i].contains(':') {
        return None;
    }
    host[i + 1..]
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then_some(i)
}

/// One shadow exchange: its stats land on the shadow cluster like any request's.
async fn run(cluster: Arc<Cluster>, req: Request<RequestBody>, timeout: Option<Duration>) {
    let Some(host) = cluster.choose_host(&LbContext::default()) else {
        cluster.stats.upstream_cx_none_healthy.inc();
        return;
    };
    let counters = StreamCounters::default();
    let origin = strait_upstream::cluster::RqOrigin {
        internal: strait_upstream::cluster::RqOrigin::is_internal(req.headers()),
        canary: host.canary,
    };
    cluster.stats.upstream_rq_active.inc();
    host.request_started();
    let exchange = async {
        match strait_upstream::send_request(&cluster, &host, req, &counters).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                // Read the body through (and drop it) so the connection can be reused.
                let mut body = resp.into_body();
                let mut ok = true;
                while let Some(frame) = body.frame().await {
                    if frame.is_err() {
                        ok = false;
                        break;
                    }
                }
                Some((status, ok))
            }
            Err(_) => None,
        }
    };
    let outcome = match timeout {
        Some(t) => tokio::time::timeout(t, exchange).await,
        None => Ok(exchange.await),
    };
    cluster.stats.upstream_rq_active.dec();
    host.request_ended();
    match outcome {
        Ok(Some((status, ok))) => {
            cluster.stats.record_status(status, origin);
            cluster.stats.upstream_rq_completed.inc();
            if ok && status < 500 {
                host.stats.rq_success.inc();
            } else {
                host.stats.rq_error.inc();
            }
        }
        Ok(None) => host.stats.rq_error.inc(),
        Err(_) => {
            cluster.stats.upstream_rq_timeout.inc();
            host.stats.rq_timeout.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_suffix_goes_before_the_port() {
        let s = |h: &str| shadow_host(h).map(|v| v.to_str().unwrap_or_default().to_string());
        assert_eq!(s("example.com").as_deref(), Some("example.com-shadow"));
        assert_eq!(
            s("example.com:8080").as_deref(),
            Some("example.com-shadow:8080")
        );
        assert_eq!(s("[::1]:80").as_deref(), Some("[::1]-shadow:80"));
        assert_eq!(s("[::1]").as_deref(), Some("[::1]-shadow"));
        assert_eq!(s("10.0.0.1:9").as_deref(), Some("10.0.0.1-shadow:9"));
    }
}
