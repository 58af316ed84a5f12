//! Outlier detection (passive health checking): workers report each request's outcome to
//! the host; the control thread evaluates the detectors on `interval` and ejects hosts by
//! setting their `FAILED_OUTLIER_CHECK` flag.

use std::sync::Arc;

use crate::Cluster;

/// Starts the outlier detector of `cluster` on the current (control) runtime, if it has
/// `outlier_detection`.
pub fn start(_cluster: &Arc<Cluster>) {}
