//! Load-balancing configuration of a cluster: `lb_policy` / `load_balancing_policy`, the
//! per-policy configs (`least_request_lb_config`, `ring_hash_lb_config`, `maglev_lb_config`),
//! `common_lb_config` (panic threshold, locality weighting) and `lb_subset_config`.

use envoy_api::pb::envoy::config::cluster::v3 as cl;

use crate::error::{ConfigErrors, FieldPath};

/// Which algorithm picks a host inside one priority level.
#[derive(Debug, Clone, PartialEq)]
pub enum LbPolicy {
    RoundRobin,
}

impl LbPolicy {
    /// Whether the policy balances on the request hash (`hash_policy`); the router computes
    /// the hash only then, as Envoy does.
    pub fn uses_hash(&self) -> bool {
        match self {
            LbPolicy::RoundRobin => false,
        }
    }
}

/// Everything a cluster's load balancer is built from.
#[derive(Debug, Clone)]
pub struct LbSpec {
    pub policy: LbPolicy,
}

impl Default for LbSpec {
    fn default() -> Self {
        LbSpec {
            policy: LbPolicy::RoundRobin,
        }
    }
}

/// Fields of load-balancing messages Strait implements (chained into the supported table).
pub const SUPPORTED: &[(&str, &[&str])] = &[];

pub(crate) fn compile(c: &cl::Cluster, path: &FieldPath, errs: &mut ConfigErrors) -> LbSpec {
    if c.lb_policy != cl::cluster::LbPolicy::RoundRobin as i32 {
        let name = cl::cluster::LbPolicy::try_from(c.lb_policy)
            .map(|d| d.as_str_name())
            .unwrap_or("?");
        errs.push(
            path.field("lb_policy").to_string(),
            format!("lb_policy {name} is not supported by Strait yet (ROUND_ROBIN is)"),
        );
    }
    LbSpec::default()
}
