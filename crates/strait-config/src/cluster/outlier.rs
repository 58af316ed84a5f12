//! Passive health checking configuration (`outlier_detection`).

use envoy_api::pb::envoy::config::cluster::v3 as cl;

use crate::error::{ConfigErrors, FieldPath};

/// A compiled `outlier_detection` block.
#[derive(Debug, Clone)]
pub struct OutlierSpec {}

/// Fields of outlier-detection messages Strait implements (chained into the supported table).
pub const SUPPORTED: &[(&str, &[&str])] = &[];

pub(crate) fn compile(
    _c: &cl::Cluster,
    _path: &FieldPath,
    _errs: &mut ConfigErrors,
) -> Option<OutlierSpec> {
    None
}
