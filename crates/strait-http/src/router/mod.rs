//! The router filter, in the order a request meets it:
//! `request` rewrites the request Envoy's way (forwarding headers, request id, protocol
//! form); `upstream` picks a host and sends it with the route's timeouts; `response`
//! turns the upstream's answer into the downstream response. Failures become Envoy's local
//! replies in `upstream`.

pub mod forwarding;
pub mod mirror;
pub mod mutation;
pub mod redirect;
pub mod request;
pub mod response;
pub mod upgrade;
pub mod upstream;

use std::sync::Arc;

use http::header::SET_COOKIE;
use http::{HeaderValue, Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use strait_config::route::ClusterAction;
use strait_config::route::hash::{HashInput, HashOutcome};
use strait_upstream::Cluster;
use strait_upstream::shadow::DownstreamBody;

use crate::body::ResponseBody;
use crate::conn::ConnInfo;
use crate::finish::Finish;
use crate::hcm::HttpConnectionManager;

/// Where a request goes: the matched cluster action and its cluster.
pub struct Target<'a> {
    pub action: &'a ClusterAction,
    pub cluster: Arc<Cluster>,
    /// The downstream authority, as received.
    pub authority: &'a str,
}

pub async fn forward(
    hcm: &HttpConnectionManager,
    req: Request<Incoming>,
    target: Target<'_>,
    conn: &ConnInfo,
    mut finish: Finish,
) -> Response<ResponseBody> {
    let (mut parts, body) = req.into_parts();
    let request_id = request::prepare(hcm, &mut parts, &target, conn, &mut finish);
    let body_empty = body.is_end_stream();
    let mut body = DownstreamBody::new(body);
    if !target.action.forward.mirrors.is_empty() {
        mirror::start(
            hcm,
            target.action,
            &parts,
            &mut body,
            body_empty,
            upstream::random_u64,
        );
    }
    let hashed = request_hash(&target, &parts, conn);
    let lb = upstream::LbInput { hash: hashed.hash };
    let mut response = match upstream::send(hcm, &target, parts, body, lb, &mut finish).await {
        Ok(exchange) => response::build(hcm, exchange, request_id, finish),
        Err(failure) => return upstream::failure_reply(hcm, &target, failure, request_id, finish),
    };
    if let Some(c) = hashed
        .set_cookie
        .and_then(|c| HeaderValue::from_str(&c).ok())
    {
        response.headers_mut().append(SET_COOKIE, c);
    }
    response
}

/// The route's `hash_policy` result, computed only when the cluster balances on a hash
/// (Envoy asks for it from ring hash and Maglev only, so a cookie is generated only then).
fn request_hash(target: &Target<'_>, parts: &http::request::Parts, conn: &ConnInfo) -> HashOutcome {
    let Some(policy) = &target.action.forward.hash else {
        return HashOutcome::default();
    };
    if !target.cluster.spec.lb.policy.uses_hash() {
        return HashOutcome::default();
    }
    let cookie = || {
        strait_config::route::hash::connection_cookie_value(
            &conn.remote.to_string(),
            &conn.local.to_string(),
        )
    };
    policy.evaluate(&HashInput {
        headers: &parts.headers,
        path: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        source_ip: Some(conn.remote.ip()),
        connection_cookie: &cookie,
    })
}
