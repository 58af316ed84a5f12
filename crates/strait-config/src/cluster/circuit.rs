//! Circuit breaker configuration (`circuit_breakers`), per routing priority.

use envoy_api::pb::envoy::config::cluster::v3 as cl;

use crate::error::{ConfigErrors, FieldPath};

/// Thresholds of one routing priority, with Envoy's defaults.
#[derive(Debug, Clone)]
pub struct Thresholds {
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub max_requests: u32,
    pub max_retries: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
        }
    }
}

/// `[default, high]` thresholds.
#[derive(Debug, Clone, Default)]
pub struct CircuitBreakersSpec {
    pub default: Thresholds,
    pub high: Thresholds,
}

/// Fields of circuit-breaker messages Strait implements (chained into the supported table).
pub const SUPPORTED: &[(&str, &[&str])] = &[];

pub(crate) fn compile(
    _c: &cl::Cluster,
    _path: &FieldPath,
    _errs: &mut ConfigErrors,
) -> CircuitBreakersSpec {
    CircuitBreakersSpec::default()
}
