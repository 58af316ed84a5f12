//! Hosts: one upstream endpoint with its identity, placement (priority, locality), health
//! and stats. A host is shared (`Arc`) by every snapshot of its cluster that contains it, so
//! its stats and health survive membership updates.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use strait_config::model::{EndpointMetadata, EndpointSpec, LocalitySpec};
use strait_stats::{Counter, Gauge, Store};

static NEXT_HOST_ID: AtomicU64 = AtomicU64::new(1);

/// Stats of one host, shown by `/clusters`.
#[derive(Debug)]
pub struct HostStats {
    pub cx_total: Counter,
    pub cx_active: Gauge,
    pub cx_connect_fail: Counter,
    pub rq_total: Counter,
    pub rq_active: Gauge,
    pub rq_success: Counter,
    pub rq_error: Counter,
    pub rq_timeout: Counter,
}

/// Why a host is not healthy: Envoy's health flags, as `/clusters` prints them.
pub mod health_flag {
    /// Failed active health checking.
    pub const FAILED_ACTIVE_HC: u32 = 1 << 0;
    /// Ejected by outlier detection.
    pub const FAILED_OUTLIER_CHECK: u32 = 1 << 1;
    /// Marked unhealthy by EDS (`health_status`).
    pub const FAILED_EDS_HEALTH: u32 = 1 << 2;
    /// Degraded by active health checking (`x-envoy-degraded`).
    pub const DEGRADED_ACTIVE_HC: u32 = 1 << 3;
    /// Degraded by EDS.
    pub const DEGRADED_EDS_HEALTH: u32 = 1 << 4;
    /// Not yet checked once by active health checking.
    pub const PENDING_ACTIVE_HC: u32 = 1 << 5;
    /// Removed by discovery but kept until its health check fails.
    pub const PENDING_DYNAMIC_REMOVAL: u32 = 1 << 6;
    /// Failed active health checking with `x-envoy-immediate-health-check-fail`.
    pub const EXCLUDED_VIA_IMMEDIATE_HC_FAIL: u32 = 1 << 7;
    /// EDS `health_status: DRAINING`: unhealthy and excluded.
    pub const EDS_STATUS_DRAINING: u32 = 1 << 8;
    /// The last active health check failed by timing out (shown with `FAILED_ACTIVE_HC`).
    pub const ACTIVE_HC_TIMEOUT: u32 = 1 << 9;

    /// Flags that make a host unhealthy (not used while healthy hosts remain).
    pub const UNHEALTHY: u32 =
        FAILED_ACTIVE_HC | FAILED_OUTLIER_CHECK | FAILED_EDS_HEALTH | EDS_STATUS_DRAINING;
    /// Flags that make a healthy host degraded.
    pub const DEGRADED: u32 = DEGRADED_ACTIVE_HC | DEGRADED_EDS_HEALTH;
    /// Flags that take a host out of load balancing altogether.
    pub const EXCLUDED: u32 = EXCLUDED_VIA_IMMEDIATE_HC_FAIL;
    /// Envoy's *excluded* hosts: left out of the host counts that priority health, locality
    /// weights and panic mode divide by (and counted by `membership_excluded`).
    pub const LB_EXCLUDED: u32 =
        PENDING_ACTIVE_HC | EXCLUDED_VIA_IMMEDIATE_HC_FAIL | EDS_STATUS_DRAINING;

    /// The flag an EDS `health_status` sets, as Envoy maps it (`UNHEALTHY` and `TIMEOUT`
    /// fail the host, `DRAINING` drains it, `DEGRADED` degrades it).
    pub fn from_eds(status: strait_config::model::EdsHealthStatus) -> u32 {
        use strait_config::model::EdsHealthStatus as S;
        match status {
            S::Unhealthy | S::Timeout => FAILED_EDS_HEALTH,
            S::Draining => EDS_STATUS_DRAINING,
            S::Degraded => DEGRADED_EDS_HEALTH,
            S::Unknown | S::Healthy => 0,
        }
    }
}

/// Health of a host as load balancing sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostHealth {
    Healthy,
    Degraded,
    Unhealthy,
}

#[derive(Debug)]
pub struct Host {
    /// Process-unique id: the key of this host's idle connections in a worker's pool.
    pub id: u64,
    pub address: SocketAddr,
    pub weight: u32,
    pub hostname: String,
    /// Priority level (0 is the highest).
    pub priority: u32,
    pub locality: Arc<LocalitySpec>,
    /// The locality's `load_balancing_weight` (0 when unset).
    pub locality_weight: u32,
    /// Endpoint metadata; its `envoy.lb` fields place the host in subsets.
    pub metadata: Arc<EndpointMetadata>,
    /// `envoy.lb` `canary: true` (shown by `/clusters`).
    pub canary: bool,
    pub stats: HostStats,
    /// Requests in flight to this host, as `LEAST_REQUEST` reads it: one shared atomic (a
    /// load per candidate), where `stats.rq_active` is sharded per worker. Incremented and
    /// decremented next to `stats.rq_active`.
    pub lb_active_requests: AtomicU32,
    /// [`health_flag`] bits, written by health checking, outlier detection and discovery
    /// (off the workers); a change is published by rebuilding the cluster's snapshot.
    health_flags: AtomicU32,
    /// Outlier detection's per-host counters, written by workers without locks.
    pub outlier: crate::outlier::HostCounters,
    /// Active health checking's link to this host's check task.
    pub health_check: crate::health::HostHook,
}

impl Host {
    /// A host for an endpoint (`address` may differ from the endpoint's when a DNS name
    /// resolved to it).
    pub fn new(e: &EndpointSpec, address: SocketAddr, store: &Store) -> Self {
        Host {
            id: NEXT_HOST_ID.fetch_add(1, Ordering::Relaxed),
            address,
            weight: e.weight,
            hostname: e.hostname.clone(),
            priority: e.priority,
            locality: e.locality.clone(),
            locality_weight: e.locality_weight,
            metadata: e.metadata.clone(),
            canary: matches!(
                e.metadata.lb_value("canary"),
                Some(strait_config::model::MetadataValue::Bool(true))
            ),
            // Host stats are shown by /clusters, not /stats: kept out of the store.
            stats: HostStats {
                cx_total: store.unlisted_counter("cx_total"),
                cx_active: store.unlisted_gauge("cx_active"),
                cx_connect_fail: store.unlisted_counter("cx_connect_fail"),
                rq_total: store.unlisted_counter("rq_total"),
                rq_active: store.unlisted_gauge("rq_active"),
                rq_success: store.unlisted_counter("rq_success"),
                rq_error: store.unlisted_counter("rq_error"),
                rq_timeout: store.unlisted_counter("rq_timeout"),
            },
            lb_active_requests: AtomicU32::new(0),
            health_flags: AtomicU32::new(health_flag::from_eds(e.health_status)),
            outlier: crate::outlier::HostCounters::default(),
            health_check: Default::default(),
        }
    }

    /// A request starts using this host: `rq_active` and the least-request counter.
    pub fn request_started(&self) {
        self.stats.rq_active.inc();
        self.lb_active_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A request stops using this host (pairs with [`Host::request_started`]).
    pub fn request_ended(&self) {
        self.stats.rq_active.dec();
        let _ = self
            .lb_active_requests
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    pub fn health_flags(&self) -> u32 {
        self.health_flags.load(Ordering::Acquire)
    }

    /// Sets or clears a [`health_flag`]; true when the flags changed. The caller rebuilds
    /// the cluster's snapshot ([`crate::Cluster::refresh`]) so workers see it.
    pub fn set_health_flag(&self, flag: u32, on: bool) -> bool {
        let old = if on {
            self.health_flags.fetch_or(flag, Ordering::AcqRel)
        } else {
            self.health_flags.fetch_and(!flag, Ordering::AcqRel)
        };
        (old & flag != 0) != on
    }

    pub fn health(&self) -> HostHealth {
        let f = self.health_flags();
        if f & (health_flag::UNHEALTHY | health_flag::EXCLUDED) != 0 {
            HostHealth::Unhealthy
        } else if f & health_flag::DEGRADED != 0 {
            HostHealth::Degraded
        } else {
            HostHealth::Healthy
        }
    }

    /// Excluded from load-balancing arithmetic ([`health_flag::LB_EXCLUDED`]).
    pub fn excluded(&self) -> bool {
        self.health_flags() & health_flag::LB_EXCLUDED != 0
    }

    /// `/clusters`' `health_flags` text: `healthy` or the set flags joined by `/`.
    pub fn health_flags_text(&self) -> String {
        let f = self.health_flags();
        if f == 0 {
            return "healthy".into();
        }
        const NAMES: [(u32, &str); 10] = [
            (health_flag::FAILED_ACTIVE_HC, "/failed_active_hc"),
            (health_flag::FAILED_OUTLIER_CHECK, "/failed_outlier_check"),
            (health_flag::FAILED_EDS_HEALTH, "/failed_eds_health"),
            (health_flag::DEGRADED_ACTIVE_HC, "/degraded_active_hc"),
            (health_flag::DEGRADED_EDS_HEALTH, "/degraded_eds_health"),
            (
                health_flag::PENDING_DYNAMIC_REMOVAL,
                "/pending_dynamic_removal",
            ),
            (health_flag::PENDING_ACTIVE_HC, "/pending_active_hc"),
            (
                health_flag::EXCLUDED_VIA_IMMEDIATE_HC_FAIL,
                "/excluded_via_immediate_hc_fail",
            ),
            (health_flag::ACTIVE_HC_TIMEOUT, "/active_hc_timeout"),
            (health_flag::EDS_STATUS_DRAINING, "/eds_status_draining"),
        ];
        NAMES
            .iter()
            .filter(|(b, _)| f & b != 0)
            .map(|(_, n)| *n)
            .collect()
    }
}
