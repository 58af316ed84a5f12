//! Circuit breakers: a cluster's limits on connections, pending requests, requests,
//! retries and connection pools, per routing priority, shared by every worker (one atomic
//! counter per resource), with Envoy's gauges
//! `cluster.<name>.circuit_breakers.<priority>.{cx_open,..}` and, with `track_remaining`,
//! `remaining_{cx,pending,rq,retries,cx_pools}`.
//!
//! Taking a slot returns a guard that gives it back when dropped, so no error path can leak
//! a slot.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use strait_config::model::{RetryBudget, Thresholds};
use strait_stats::{Counter, Gauge, Store};

/// A route's `priority`: which thresholds apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    #[default]
    Default,
    High,
}

/// One limited resource: a shared count against a maximum.
#[derive(Debug)]
pub struct Resource {
    max: u64,
    current: AtomicU64,
    /// `*_open`: 1 while the resource is exhausted.
    open: Gauge,
    /// `remaining_*` (with `track_remaining`).
    remaining: Gauge,
}

impl Resource {
    fn new(max: u64, open: Gauge, remaining: Gauge) -> Resource {
        // Gauges hold u64 bits, as Envoy's do.
        remaining.add(max as i64);
        if max == 0 {
            open.add(1);
        }
        Resource {
            max,
            current: AtomicU64::new(0),
            open,
            remaining,
        }
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn count(&self) -> u64 {
        self.current.load(Ordering::Acquire)
    }

    /// Whether one more would fit.
    pub fn can_create(&self) -> bool {
        self.count() < self.max
    }

    /// Takes a slot if one is free.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        let old = self
            .current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()?;
        self.note_acquired(old);
        Some(Slot(self.clone()))
    }

    /// Takes a slot even past the maximum (Envoy lets a pool with no connection at all open
    /// one whatever the connection limit, so requests are never stuck).
    pub fn acquire_anyway(self: &Arc<Self>) -> Slot {
        let old = self.current.fetch_add(1, Ordering::AcqRel);
        self.note_acquired(old);
        Slot(self.clone())
    }

    fn note_acquired(&self, old: u64) {
        if old < self.max {
            self.remaining.sub(1);
            if old + 1 == self.max {
                self.open.add(1);
            }
        }
    }

    /// Gives back a slot taken without a guard ([`Slot::forget`]).
    pub(crate) fn release(&self) {
        let old = self
            .current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .unwrap_or(0);
        if old == 0 {
            return;
        }
        if old <= self.max {
            self.remaining.add(1);
            if old == self.max {
                self.open.sub(1);
            }
        }
    }
}

/// A held unit of a [`Resource`], given back on drop.
#[derive(Debug)]
pub struct Slot(Arc<Resource>);

impl Slot {
    /// Keeps the slot taken without a guard; [`Resource::release`] gives it back.
    pub(crate) fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// The retry limit: `max_retries`, or a budget over the requests in flight.
#[derive(Debug)]
pub struct RetryResource {
    fixed: Arc<Resource>,
    budget: Option<RetryBudget>,
}

/// The resources of one priority.
#[derive(Debug)]
pub struct Resources {
    pub connections: Arc<Resource>,
    pub pending: Arc<Resource>,
    pub requests: Arc<Resource>,
    pub retries: RetryResource,
    pub connection_pools: Arc<Resource>,
}

impl Resources {
    fn new(t: &Thresholds, store: &Store, cluster: &str, priority: &str) -> Resources {
        let p = format!("cluster.{cluster}.circuit_breakers.{priority}.");
        let make = |max: u64, open: &str, remaining: &str| {
            let rem = if t.track_remaining {
                store.gauge(&format!("{p}{remaining}"))
            } else {
                Gauge::null()
            };
            Arc::new(Resource::new(max, store.gauge(&format!("{p}{open}")), rem))
        };
        let retries_max = match &t.retry_budget {
            Some(b) => u64::from(b.min_retry_concurrency),
            None => u64::from(t.max_retries),
        };
        Resources {
            connections: make(u64::from(t.max_connections), "cx_open", "remaining_cx"),
            pending: make(
                u64::from(t.max_pending_requests),
                "rq_pending_open",
                "remaining_pending",
            ),
            requests: make(u64::from(t.max_requests), "rq_open", "remaining_rq"),
            retries: RetryResource {
                fixed: make(retries_max, "rq_retry_open", "remaining_retries"),
                budget: t.retry_budget,
            },
            connection_pools: make(
                t.max_connection_pools.map_or(u64::MAX, u64::from),
                "cx_pool_open",
                "remaining_cx_pools",
            ),
        }
    }

    /// Takes a request slot (`max_requests`): the router holds it for the life of the
    /// upstream stream. `None` means overflow.
    pub fn try_request(&self) -> Option<Slot> {
        self.requests.try_acquire()
    }

    /// Takes a retry slot (`max_retries` or `retry_budget`). `None` means the retry
    /// overflows (`upstream_rq_retry_overflow`).
    pub fn try_retry(&self) -> Option<Slot> {
        let r = &self.retries;
        match &r.budget {
            None => r.fixed.try_acquire(),
            Some(b) => {
                // Envoy: budget_percent of the active and pending requests, at least
                // min_retry_concurrency.
                let active = self.requests.count() + self.pending.count();
                let allowed = ((b.budget_percent / 100.0) * active as f64) as u64;
                let max = allowed.max(u64::from(b.min_retry_concurrency));
                (r.fixed.count() < max).then(|| r.fixed.acquire_anyway())
            }
        }
    }

    /// Retries holding a slot.
    pub fn retries_active(&self) -> u64 {
        self.retries.fixed.count()
    }

    /// Gives back a retry slot taken with [`Resources::try_retry`] and forgotten.
    pub(crate) fn end_retry(&self) {
        self.retries.fixed.release();
    }
}

/// What the breakers refused, the requests waiting for a connection and the connections
/// closed by connection-pool limits (`cluster.<name>.*`).
#[derive(Debug)]
pub struct LimitStats {
    /// A new connection was needed but `max_connections` was reached.
    pub upstream_cx_overflow: Counter,
    /// A request found `max_pending_requests` reached.
    pub upstream_rq_pending_overflow: Counter,
    /// A request found `max_requests` reached (Envoy 1.40's name for it).
    pub upstream_rq_active_overflow: Counter,
    /// A connection pool was needed but `max_connection_pools` was reached.
    pub upstream_cx_pool_overflow: Counter,
    /// Requests waiting for a connection.
    pub upstream_rq_pending_active: Gauge,
    /// Connections closed for `max_requests_per_connection`.
    pub upstream_cx_max_requests: Counter,
    /// Connections closed for `max_connection_duration`.
    pub upstream_cx_max_duration_reached: Counter,
}

/// A cluster's breakers for both priorities.
#[derive(Debug)]
pub struct CircuitBreakers {
    default: Resources,
    high: Resources,
    pub stats: LimitStats,
}

impl CircuitBreakers {
    pub fn new(
        spec: &strait_config::model::CircuitBreakersSpec,
        store: &Store,
        cluster: &str,
    ) -> Self {
        let c = |n: &str| store.counter(&format!("cluster.{cluster}.{n}"));
        CircuitBreakers {
            default: Resources::new(&spec.default, store, cluster, "default"),
            high: Resources::new(&spec.high, store, cluster, "high"),
            stats: LimitStats {
                upstream_cx_max_requests: c("upstream_cx_max_requests"),
                upstream_cx_max_duration_reached: c("upstream_cx_max_duration_reached"),
                upstream_cx_overflow: c("upstream_cx_overflow"),
                upstream_rq_pending_overflow: c("upstream_rq_pending_overflow"),
                upstream_rq_active_overflow: c("upstream_rq_active_overflow"),
                upstream_cx_pool_overflow: c("upstream_cx_pool_overflow"),
                upstream_rq_pending_active: store
                    .gauge(&format!("cluster.{cluster}.upstream_rq_pending_active")),
            },
        }
    }

    pub fn get(&self, p: Priority) -> &Resources {
        match p {
            Priority::Default => &self.default,
            Priority::High => &self.high,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(max: u64) -> (Arc<Resource>, Store) {
        let store = Store::new(1);
        let r = Arc::new(Resource::new(
            max,
            store.gauge("open"),
            store.gauge("remaining"),
        ));
        (r, store)
    }

    #[test]
    fn slots_limit_and_gauges_follow() {
        let (r, store) = res(2);
        let g = |n: &str| store.gauge_value(n).unwrap_or(-99);
        assert_eq!((g("open"), g("remaining")), (0, 2));
        let a = r.try_acquire().expect("first");
        let b = r.try_acquire().expect("second");
        assert!(r.try_acquire().is_none(), "third overflows");
        assert_eq!((g("open"), g("remaining")), (1, 0));
        drop(a);
        assert_eq!((g("open"), g("remaining")), (0, 1));
        let c = r.acquire_anyway();
        let d = r.acquire_anyway();
        assert_eq!(r.count(), 3);
        assert_eq!((g("open"), g("remaining")), (1, 0));
        drop(b);
        assert_eq!((g("open"), g("remaining")), (1, 0), "still at the max");
        drop((c, d));
        assert_eq!((g("open"), g("remaining")), (0, 2));
    }

    #[test]
    fn retry_budget_scales_with_requests_in_flight() {
        let store = Store::new(1);
        let t = Thresholds {
            retry_budget: Some(RetryBudget {
                budget_percent: 50.0,
                min_retry_concurrency: 1,
            }),
            ..Thresholds::default()
        };
        let r = Resources::new(&t, &store, "c", "default");
        let first = r.try_retry().expect("min_retry_concurrency");
        assert!(
            r.try_retry().is_none(),
            "no requests in flight: only the minimum"
        );
        let rq: Vec<Slot> = (0..6).filter_map(|_| r.try_request()).collect();
        assert_eq!(rq.len(), 6);
        let more: Vec<Slot> = (0..5).filter_map(|_| r.try_retry()).collect();
        assert_eq!(
            more.len(),
            2,
            "50% of 6 requests = 3 retries, one already held"
        );
        drop(first);
    }
}
