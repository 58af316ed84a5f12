//! Active health checking configuration (`health_checks`).

use envoy_api::pb::envoy::config::cluster::v3 as cl;

use crate::error::{ConfigErrors, FieldPath};

/// One compiled `health_checks` entry.
#[derive(Debug, Clone)]
pub struct HealthCheckSpec {}

/// Fields of health-check messages Strait implements (chained into the supported table).
pub const SUPPORTED: &[(&str, &[&str])] = &[];

pub(crate) fn compile(
    _c: &cl::Cluster,
    _path: &FieldPath,
    _errs: &mut ConfigErrors,
) -> Vec<HealthCheckSpec> {
    Vec::new()
}
