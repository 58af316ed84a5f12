//! Circuit breaker configuration (`circuit_breakers`), per routing priority, and the
//! connection-pool limits that live next to them (`max_connection_duration`).

use envoy_api::pb::envoy::config::cluster::v3 as cl;

use crate::error::{ConfigErrors, FieldPath};

/// `retry_budget`: retries allowed as a share of the requests in flight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    /// Percent of active plus pending requests (20 by default).
    pub budget_percent: f64,
    /// Retries always allowed whatever the budget (3 by default).
    pub min_retry_concurrency: u32,
}

/// Thresholds of one routing priority, with Envoy's defaults.
#[derive(Debug, Clone)]
pub struct Thresholds {
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub max_requests: u32,
    pub max_retries: u32,
    /// Replaces `max_retries` when set.
    pub retry_budget: Option<RetryBudget>,
    /// `max_connection_pools`; unlimited when unset. A pool is one worker's connections to
    /// one host, open while it has a connection.
    pub max_connection_pools: Option<u32>,
    /// Publish the `remaining_*` gauges.
    pub track_remaining: bool,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
            retry_budget: None,
            max_connection_pools: None,
            track_remaining: false,
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
pub const SUPPORTED: &[(&str, &[&str])] = &[
    ("envoy.config.cluster.v3.Cluster", &["circuit_breakers"]),
    ("envoy.config.cluster.v3.CircuitBreakers", &["thresholds"]),
    (
        "envoy.config.cluster.v3.CircuitBreakers.Thresholds",
        &[
            "priority",
            "max_connections",
            "max_pending_requests",
            "max_requests",
            "max_retries",
            "retry_budget",
            "track_remaining",
            "max_connection_pools",
        ],
    ),
    (
        "envoy.config.cluster.v3.CircuitBreakers.Thresholds.RetryBudget",
        &["budget_percent", "min_retry_concurrency"],
    ),
    (
        "envoy.config.core.v3.HttpProtocolOptions",
        &["max_connection_duration"],
    ),
];

pub(crate) fn compile(
    c: &cl::Cluster,
    _path: &FieldPath,
    _errs: &mut ConfigErrors,
) -> CircuitBreakersSpec {
    let mut spec = CircuitBreakersSpec::default();
    let Some(cb) = &c.circuit_breakers else {
        return spec;
    };
    // Envoy uses the first entry of each priority.
    let mut seen = [false, false];
    for t in &cb.thresholds {
        let high =
            t.priority == envoy_api::pb::envoy::config::core::v3::RoutingPriority::High as i32;
        if std::mem::replace(&mut seen[usize::from(high)], true) {
            continue;
        }
        let d = Thresholds::default();
        let v = |w: &Option<u32>, dflt: u32| w.unwrap_or(dflt);
        let compiled = Thresholds {
            max_connections: v(&t.max_connections.map(|x| x.value), d.max_connections),
            max_pending_requests: v(
                &t.max_pending_requests.map(|x| x.value),
                d.max_pending_requests,
            ),
            max_requests: v(&t.max_requests.map(|x| x.value), d.max_requests),
            max_retries: v(&t.max_retries.map(|x| x.value), d.max_retries),
            retry_budget: t.retry_budget.as_ref().map(|b| RetryBudget {
                budget_percent: b.budget_percent.map_or(20.0, |p| p.value),
                min_retry_concurrency: b.min_retry_concurrency.map_or(3, |m| m.value),
            }),
            max_connection_pools: t.max_connection_pools.map(|x| x.value),
            track_remaining: t.track_remaining,
        };
        if high {
            spec.high = compiled;
        } else {
            spec.default = compiled;
        }
    }
    spec
}
