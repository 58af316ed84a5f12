//! Route actions: what happens to a request its route matched.

use std::sync::Arc;

use bytes::Bytes;
use envoy_api::pb::envoy::config::route::v3 as rt;

use super::compile::RouteContext;
use super::retry::{Timeouts, compile_timeouts};
use crate::compile::common::data_source;
use crate::error::{ConfigErrors, FieldPath};

pub const SUPPORTED: &[(&str, &[&str])] = &[
    (
        "envoy.config.route.v3.RouteAction",
        &["cluster", "cluster_not_found_response_code"],
    ),
    (
        "envoy.config.route.v3.DirectResponseAction",
        &["status", "body"],
    ),
];

#[derive(Debug)]
pub enum RouteAction {
    Cluster(ClusterAction),
    DirectResponse { status: u16, body: Option<Bytes> },
}

/// `route:`: send the request to a cluster.
#[derive(Debug)]
pub struct ClusterAction {
    pub cluster: Arc<str>,
    /// `cluster_not_found_response_code` as a status (503 by default).
    pub cluster_not_found_status: u16,
    pub timeouts: Timeouts,
}

/// Compiles the action of route `r`.
pub fn compile_action(
    r: &rt::Route,
    ctx: &RouteContext<'_>,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<RouteAction> {
    use rt::route::Action as A;
    match &r.action {
        Some(A::Route(ra)) => {
            let ap = path.field("route");
            let cluster = match &ra.cluster_specifier {
                Some(rt::route_action::ClusterSpecifier::Cluster(c)) => c.clone(),
                _ => {
                    errs.push(
                        ap.to_string(),
                        "only `cluster` is supported by Strait yet as the cluster specifier",
                    );
                    return None;
                }
            };
            if !ctx.clusters.contains(&cluster) {
                errs.push(
                    ap.field("cluster").to_string(),
                    format!("route refers to undefined cluster {cluster:?}"),
                );
            }
            // ClusterNotFoundResponseCode: SERVICE_UNAVAILABLE (0) => 503, NOT_FOUND (1) => 404,
            // INTERNAL_SERVER_ERROR (2) => 500.
            let cluster_not_found_status = match ra.cluster_not_found_response_code {
                1 => 404,
                2 => 500,
                _ => 503,
            };
            let timeouts = compile_timeouts(ra, ctx, &ap, errs);
            Some(RouteAction::Cluster(ClusterAction {
                cluster: Arc::from(cluster.as_str()),
                cluster_not_found_status,
                timeouts,
            }))
        }
        Some(A::DirectResponse(dr)) => {
            let dp = path.field("direct_response");
            let Ok(status) = u16::try_from(dr.status) else {
                errs.push(dp.field("status").to_string(), "invalid status");
                return None;
            };
            let body = match &dr.body {
                Some(ds) => Some(data_source(ds, &dp.field("body"), errs)?),
                None => None,
            };
            Some(RouteAction::DirectResponse { status, body })
        }
        Some(_) => {
            errs.push(
                path.to_string(),
                "this route action is not supported by Strait yet (route and direct_response are)",
            );
            None
        }
        None => {
            errs.push(
                path.to_string(),
                "one of route, redirect or direct_response must be set",
            );
            None
        }
    }
}
