//! The router filter, in the order a request meets it:
//! `request` rewrites the request Envoy's way (forwarding headers, request id, protocol
//! form); `upstream` picks a host and sends it with the route's timeouts; `response`
//! turns the upstream's answer into the downstream response. Failures become Envoy's local
//! replies in `upstream`.

pub mod forwarding;
pub mod mutation;
pub mod redirect;
pub mod request;
pub mod response;
pub mod upstream;

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use strait_config::route::ClusterAction;
use strait_upstream::Cluster;

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
    match upstream::send(hcm, &target, parts, body, &mut finish).await {
        Ok(exchange) => response::build(hcm, exchange, request_id, finish),
        Err(failure) => upstream::failure_reply(hcm, &target, failure, request_id, finish),
    }
}
