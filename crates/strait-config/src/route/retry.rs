//! Timeouts and retries of a cluster action.

use std::time::Duration;

use envoy_api::pb::envoy::config::route::v3 as rt;

use super::compile::RouteContext;
use crate::compile::common::duration;
use crate::error::{ConfigErrors, FieldPath};

pub const SUPPORTED: &[(&str, &[&str])] = &[("envoy.config.route.v3.RouteAction", &["timeout"])];

/// The time limits of a cluster action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `timeout`: the whole upstream exchange, from the end of the downstream request.
    /// `None` = disabled (`0s`). Envoy's default is 15 s.
    pub route: Option<Duration>,
}

pub fn compile_timeouts(
    ra: &rt::RouteAction,
    _ctx: &RouteContext<'_>,
    ap: &FieldPath,
    errs: &mut ConfigErrors,
) -> Timeouts {
    let route = match &ra.timeout {
        Some(d) => duration(d, &ap.field("timeout"), errs).filter(|d| !d.is_zero()),
        None => Some(Duration::from_secs(15)),
    };
    Timeouts { route }
}
