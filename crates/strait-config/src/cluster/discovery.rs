//! Service discovery configuration: the cluster `type` and what it needs (DNS settings,
//! original-destination options).

use envoy_api::pb::envoy::config::cluster::v3 as cl;

use crate::error::{ConfigErrors, FieldPath};

/// How a cluster finds its hosts.
#[derive(Debug, Clone, PartialEq)]
pub enum DiscoverySpec {
    Static,
}

/// Fields of discovery messages Strait implements (chained into the supported table).
pub const SUPPORTED: &[(&str, &[&str])] = &[];

pub(crate) fn compile(
    c: &cl::Cluster,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<DiscoverySpec> {
    match &c.cluster_discovery_type {
        None => Some(DiscoverySpec::Static),
        Some(cl::cluster::ClusterDiscoveryType::Type(t))
            if *t == cl::cluster::DiscoveryType::Static as i32 =>
        {
            Some(DiscoverySpec::Static)
        }
        Some(cl::cluster::ClusterDiscoveryType::Type(t)) => {
            let name = cl::cluster::DiscoveryType::try_from(*t)
                .map(|d| d.as_str_name())
                .unwrap_or("?");
            errs.push(
                path.field("type").to_string(),
                format!("cluster type {name} is not supported by Strait yet (STATIC is)"),
            );
            None
        }
        Some(_) => {
            errs.push(
                path.field("cluster_type").to_string(),
                "is not supported by Strait yet",
            );
            None
        }
    }
}
