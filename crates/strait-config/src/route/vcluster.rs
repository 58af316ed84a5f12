//! `virtual_clusters`: named slices of a virtual host's traffic (by request headers,
//! `:path` and `:method` included) that get their own upstream stats
//! (`vhost.<vhost>.vcluster.<name>.*`); requests matching none count under `other`.

use envoy_api::pb::envoy::config::route::v3 as rt;

use super::RequestView;
use super::matcher::{HeaderMatcher, compile_header_matcher};
use crate::error::{ConfigErrors, FieldPath};

pub const SUPPORTED: &[(&str, &[&str])] = &[
    ("envoy.config.route.v3.VirtualHost", &["virtual_clusters"]),
    ("envoy.config.route.v3.VirtualCluster", &["name", "headers"]),
];

/// The name Envoy gives requests that match no virtual cluster.
pub const OTHER: &str = "other";

#[derive(Debug)]
pub struct VirtualCluster {
    pub name: String,
    pub headers: Box<[HeaderMatcher]>,
}

/// The index of the first virtual cluster whose header matchers all accept the request;
/// `None` is `other`.
pub fn find(vcs: &[VirtualCluster], req: &RequestView<'_>) -> Option<usize> {
    vcs.iter()
        .position(|vc| vc.headers.iter().all(|h| h.matches(req)))
}

pub(crate) fn compile(
    vh: &rt::VirtualHost,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Box<[VirtualCluster]> {
    let mut out = Vec::with_capacity(vh.virtual_clusters.len());
    for (i, vc) in vh.virtual_clusters.iter().enumerate() {
        let p = path.field("virtual_clusters").index(i);
        if vc.headers.is_empty() {
            // Envoy: "virtual clusters must define 'headers'" (the deprecated pattern/method
            // fields are gone in v3).
            errs.push(
                p.field("headers").to_string(),
                "virtual clusters must define 'headers'",
            );
            continue;
        }
        let headers: Option<Vec<HeaderMatcher>> = vc
            .headers
            .iter()
            .enumerate()
            .map(|(j, h)| compile_header_matcher(h, &p.field("headers").index(j), errs))
            .collect();
        if let Some(headers) = headers {
            out.push(VirtualCluster {
                name: vc.name.clone(),
                headers: headers.into(),
            });
        }
    }
    out.into()
}
