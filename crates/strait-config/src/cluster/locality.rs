//! Priority and locality configuration: `common_lb_config` (panic threshold, locality
//! weighted load balancing), `load_assignment.policy` (overprovisioning factor, weighted
//! priority health) and the per-endpoint fields they read (`priority`, locality
//! `load_balancing_weight`, `health_status`).

use envoy_api::pb::envoy::config::cluster::v3 as cl;
use envoy_api::pb::envoy::config::core::v3 as core;

use crate::error::{ConfigErrors, FieldPath};

/// What the priority and locality layer of a cluster's load balancer is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct CommonLbSpec {
    /// `common_lb_config.healthy_panic_threshold`, rounded to a whole percent as Envoy does
    /// (default 50; 0 disables panic mode).
    pub healthy_panic_threshold: u32,
    /// `common_lb_config.locality_weighted_lb_config` is set.
    pub locality_weighted: bool,
    /// `load_assignment.policy.overprovisioning_factor` in percent (default 140).
    pub overprovisioning_factor: u32,
    /// `load_assignment.policy.weighted_priority_health`: priority health counts host
    /// weights instead of hosts.
    pub weighted_priority_health: bool,
}

impl Default for CommonLbSpec {
    fn default() -> Self {
        CommonLbSpec {
            healthy_panic_threshold: 50,
            locality_weighted: false,
            overprovisioning_factor: 140,
            weighted_priority_health: false,
        }
    }
}

/// An endpoint's `health_status` as EDS (or a static `load_assignment`) gives it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EdsHealthStatus {
    #[default]
    Unknown,
    Healthy,
    Unhealthy,
    Draining,
    Timeout,
    Degraded,
}

impl EdsHealthStatus {
    pub fn from_proto(v: i32) -> EdsHealthStatus {
        match core::HealthStatus::try_from(v) {
            Ok(core::HealthStatus::Healthy) => EdsHealthStatus::Healthy,
            Ok(core::HealthStatus::Unhealthy) => EdsHealthStatus::Unhealthy,
            Ok(core::HealthStatus::Draining) => EdsHealthStatus::Draining,
            Ok(core::HealthStatus::Timeout) => EdsHealthStatus::Timeout,
            Ok(core::HealthStatus::Degraded) => EdsHealthStatus::Degraded,
            _ => EdsHealthStatus::Unknown,
        }
    }
}

/// Fields of priority and locality messages Strait implements (chained into the supported
/// table).
pub const SUPPORTED: &[(&str, &[&str])] = &[
    ("envoy.config.cluster.v3.Cluster", &["common_lb_config"]),
    (
        "envoy.config.cluster.v3.Cluster.CommonLbConfig",
        &[
            "healthy_panic_threshold",
            "locality_weighted_lb_config",
            // Listed so the compile step can refuse it with the reason.
            "zone_aware_lb_config",
        ],
    ),
    (
        "envoy.config.cluster.v3.Cluster.CommonLbConfig.LocalityWeightedLbConfig",
        &[],
    ),
    ("envoy.type.v3.Percent", &["value"]),
    (
        "envoy.config.endpoint.v3.ClusterLoadAssignment",
        &["policy"],
    ),
    (
        "envoy.config.endpoint.v3.ClusterLoadAssignment.Policy",
        &["overprovisioning_factor", "weighted_priority_health"],
    ),
    (
        "envoy.config.endpoint.v3.LocalityLbEndpoints",
        &["priority", "load_balancing_weight"],
    ),
    ("envoy.config.endpoint.v3.LbEndpoint", &["health_status"]),
];

pub(crate) fn compile(c: &cl::Cluster, path: &FieldPath, errs: &mut ConfigErrors) -> CommonLbSpec {
    use cl::cluster::common_lb_config::LocalityConfigSpecifier as L;
    let mut spec = CommonLbSpec::default();
    if let Some(common) = &c.common_lb_config {
        let p = path.field("common_lb_config");
        if let Some(t) = &common.healthy_panic_threshold {
            // Envoy rounds the percentage to a whole number.
            spec.healthy_panic_threshold = t.value.clamp(0.0, 100.0).round() as u32;
        }
        match &common.locality_config_specifier {
            Some(L::LocalityWeightedLbConfig(_)) => spec.locality_weighted = true,
            Some(L::ZoneAwareLbConfig(_)) => errs.push(
                p.field("zone_aware_lb_config").to_string(),
                "zone aware routing is not supported by Strait yet (it needs \
                 cluster_manager.local_cluster_name, which Strait does not support)",
            ),
            None => {}
        }
    }
    if let Some(policy) = c.load_assignment.as_ref().and_then(|la| la.policy.as_ref()) {
        if let Some(f) = &policy.overprovisioning_factor {
            if f.value == 0 {
                errs.push(
                    path.field("load_assignment")
                        .field("policy")
                        .field("overprovisioning_factor")
                        .to_string(),
                    "value must be greater than 0",
                );
            } else {
                spec.overprovisioning_factor = f.value;
            }
        }
        spec.weighted_priority_health = policy.weighted_priority_health;
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eds_status_names() {
        assert_eq!(EdsHealthStatus::from_proto(0), EdsHealthStatus::Unknown);
        assert_eq!(EdsHealthStatus::from_proto(3), EdsHealthStatus::Draining);
    }
}
