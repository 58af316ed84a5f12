//! Outlier detection (passive health checking): workers report each request's outcome to
//! the host ([`report`]: atomics only, no lock); the control thread runs the detector
//! ([`detector::Detector`]), which ejects hosts by setting their `FAILED_OUTLIER_CHECK` flag
//! and unejects them after their ejection time.
//!
//! Consecutive-error detectors fire on the reporting path, as in Envoy: the worker that sees
//! the N-th consecutive error marks it pending on the host and wakes the control task, which
//! does the ejection (so ejection bookkeeping stays single-threaded). Success rate and
//! failure percentage are evaluated every `interval` over the last interval's counts.

pub mod detector;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use strait_config::model::OutlierSpec;
use tokio::sync::Notify;

use crate::{Cluster, Host};
pub use detector::{Detector, Kind};

/// What one request attempt did, as the router knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with this status (an external-origin result).
    Status(u16),
    /// A connection to the host was established (local origin success).
    ConnectSuccess,
    /// Connecting failed or timed out, or the connection/stream was reset (Envoy's
    /// `LOCAL_ORIGIN_CONNECT_FAILED`; counted as a 503 unless errors are split).
    ConnectFailed,
    /// The upstream did not answer in time (Envoy's `LOCAL_ORIGIN_TIMEOUT`; a 504 unless
    /// errors are split).
    Timeout,
}

/// Bits of [`HostCounters::pending`]: consecutive-error detections and requests waiting for
/// the control task.
pub(crate) mod pending {
    pub const CONSECUTIVE_GATEWAY: u32 = 1 << 0;
    pub const CONSECUTIVE_5XX: u32 = 1 << 1;
    pub const CONSECUTIVE_LOCAL: u32 = 1 << 2;
    /// A successful active health check asks for unejection.
    pub const HC_PASSED: u32 = 1 << 3;
}

/// Per-host outlier counters. Workers only touch atomics here; the control task reads and
/// resets them.
#[derive(Debug)]
pub struct HostCounters {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_local: AtomicU32,
    /// The success-rate bucket being written (external origin), swapped out each interval.
    ext_total: AtomicU64,
    ext_success: AtomicU64,
    local_total: AtomicU64,
    local_success: AtomicU64,
    pending: AtomicU32,
    /// Success rates of the last interval (f64 bits; -1 when not computed), for `/clusters`.
    success_rate: AtomicU64,
    local_success_rate: AtomicU64,
    /// The control task's wake-up, set when the detector starts.
    wake: OnceLock<Arc<Notify>>,
}

impl Default for HostCounters {
    fn default() -> Self {
        HostCounters {
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway: AtomicU32::new(0),
            consecutive_local: AtomicU32::new(0),
            ext_total: AtomicU64::new(0),
            ext_success: AtomicU64::new(0),
            local_total: AtomicU64::new(0),
            local_success: AtomicU64::new(0),
            pending: AtomicU32::new(0),
            success_rate: AtomicU64::new((-1f64).to_bits()),
            local_success_rate: AtomicU64::new((-1f64).to_bits()),
            wake: OnceLock::new(),
        }
    }
}

impl HostCounters {
    /// The external-origin success rate of the last interval (`/clusters`' `success_rate`),
    /// -1 when it was not computed.
    pub fn success_rate(&self) -> f64 {
        f64::from_bits(self.success_rate.load(Ordering::Relaxed))
    }

    /// `/clusters`' `local_origin_success_rate`.
    pub fn local_success_rate(&self) -> f64 {
        f64::from_bits(self.local_success_rate.load(Ordering::Relaxed))
    }

    pub(crate) fn set_success_rate(&self, local: bool, v: f64) {
        let cell = if local {
            &self.local_success_rate
        } else {
            &self.success_rate
        };
        cell.store(v.to_bits(), Ordering::Relaxed);
    }

    fn mark(&self, bit: u32) {
        let old = self.pending.fetch_or(bit, Ordering::AcqRel);
        if old & bit == 0
            && let Some(w) = self.wake.get()
        {
            w.notify_one();
        }
    }

    pub(crate) fn take_pending(&self) -> u32 {
        self.pending.swap(0, Ordering::AcqRel)
    }

    /// The last interval's (total, success) for external or local origin; starts a new one.
    pub(crate) fn take_bucket(&self, local: bool) -> (u64, u64) {
        let (t, s) = if local {
            (&self.local_total, &self.local_success)
        } else {
            (&self.ext_total, &self.ext_success)
        };
        (t.swap(0, Ordering::AcqRel), s.swap(0, Ordering::AcqRel))
    }

    pub(crate) fn reset_consecutive(&self, kind: Kind) {
        let c = match kind {
            Kind::Consecutive5xx => &self.consecutive_5xx,
            Kind::ConsecutiveGatewayFailure => &self.consecutive_gateway,
            Kind::ConsecutiveLocalOriginFailure => &self.consecutive_local,
            _ => return,
        };
        c.store(0, Ordering::Relaxed);
    }

    pub(crate) fn reset_all_consecutive(&self) {
        self.consecutive_5xx.store(0, Ordering::Relaxed);
        self.consecutive_gateway.store(0, Ordering::Relaxed);
        self.consecutive_local.store(0, Ordering::Relaxed);
    }

    /// Envoy's `putHttpResponseCode`.
    fn put_status(&self, spec: &OutlierSpec, status: u16) {
        self.ext_total.fetch_add(1, Ordering::Relaxed);
        if (500..600).contains(&status) {
            if (502..=504).contains(&status) {
                let n = self.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1;
                if n == spec.consecutive_gateway_failure {
                    self.mark(pending::CONSECUTIVE_GATEWAY);
                }
            } else {
                self.consecutive_gateway.store(0, Ordering::Relaxed);
            }
            let n = self.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
            if n == spec.consecutive_5xx {
                self.mark(pending::CONSECUTIVE_5XX);
            }
        } else {
            self.ext_success.fetch_add(1, Ordering::Relaxed);
            self.consecutive_5xx.store(0, Ordering::Relaxed);
            self.consecutive_gateway.store(0, Ordering::Relaxed);
        }
    }

    fn local_failure(&self, spec: &OutlierSpec) {
        self.local_total.fetch_add(1, Ordering::Relaxed);
        let n = self.consecutive_local.fetch_add(1, Ordering::Relaxed) + 1;
        if n == spec.consecutive_local_origin_failure {
            self.mark(pending::CONSECUTIVE_LOCAL);
        }
    }

    fn local_success(&self) {
        self.local_total.fetch_add(1, Ordering::Relaxed);
        self.local_success.fetch_add(1, Ordering::Relaxed);
        self.consecutive_local.store(0, Ordering::Relaxed);
    }

    /// Envoy's `putResult`, with or without splitting local-origin errors out.
    pub(crate) fn put(&self, spec: &OutlierSpec, outcome: Outcome) {
        if spec.split_external_local_origin_errors {
            match outcome {
                Outcome::Status(s) => self.put_status(spec, s),
                Outcome::ConnectSuccess => self.local_success(),
                Outcome::ConnectFailed | Outcome::Timeout => self.local_failure(spec),
            }
        } else {
            match outcome {
                Outcome::Status(s) => self.put_status(spec, s),
                Outcome::ConnectSuccess => {}
                Outcome::ConnectFailed => self.put_status(spec, 503),
                Outcome::Timeout => self.put_status(spec, 504),
            }
        }
    }
}

/// Reports one attempt's outcome to outlier detection (call it on the worker, once per
/// attempt result). Does nothing when the cluster has no `outlier_detection`. No lock, no
/// allocation.
pub fn report(cluster: &Cluster, host: &Host, outcome: Outcome) {
    if let Some(spec) = &cluster.spec.outlier {
        host.outlier.put(spec, outcome);
    }
}

/// Tells the detector that an active health check of `host` passed: with
/// `successful_active_health_check_uneject_host` (default true) an ejected host returns.
pub fn on_active_hc_success(host: &Host) {
    if host.health_flags() & crate::health_flag::FAILED_OUTLIER_CHECK != 0 {
        host.outlier.mark(pending::HC_PASSED);
    }
}

/// A cluster's success-rate figures of the last interval (-1 when not computed), for
/// `/clusters`' `<cluster>::outlier::*` lines.
#[derive(Debug)]
pub struct ClusterRates {
    cells: [AtomicU64; 4],
}

impl Default for ClusterRates {
    fn default() -> Self {
        let v = (-1f64).to_bits();
        ClusterRates {
            cells: [
                AtomicU64::new(v),
                AtomicU64::new(v),
                AtomicU64::new(v),
                AtomicU64::new(v),
            ],
        }
    }
}

impl ClusterRates {
    /// (`success_rate_average`, `success_rate_ejection_threshold`) of one origin.
    pub fn get(&self, local: bool) -> (f64, f64) {
        let i = if local { 2 } else { 0 };
        let f = |c: &AtomicU64| f64::from_bits(c.load(Ordering::Relaxed));
        (f(&self.cells[i]), f(&self.cells[i + 1]))
    }

    pub(crate) fn set(&self, local: bool, average: f64, threshold: f64) {
        let i = if local { 2 } else { 0 };
        self.cells[i].store(average.to_bits(), Ordering::Relaxed);
        self.cells[i + 1].store(threshold.to_bits(), Ordering::Relaxed);
    }
}

/// The success-rate figures of `cluster`'s detector; `None` without `outlier_detection`
/// (then `/clusters` prints no `outlier::` lines, as Envoy).
pub fn cluster_rates(cluster: &Cluster) -> Option<&ClusterRates> {
    cluster
        .spec
        .outlier
        .is_some()
        .then_some(&cluster.outlier_rates)
}

/// Starts the outlier detector of `cluster` on the current (control) runtime, if it has
/// `outlier_detection`.
pub fn start(cluster: &Arc<Cluster>) {
    let Some(spec) = cluster.spec.outlier.clone() else {
        return;
    };
    let wake = Arc::new(Notify::new());
    let mut detector = Detector::new(
        spec,
        detector::Stats::new(cluster.stats.store(), &cluster.name),
    );
    detector.rates = cluster.outlier_rates.clone();
    let weak: Weak<Cluster> = Arc::downgrade(cluster);
    tokio::spawn(async move {
        let mut next = tokio::time::Instant::now() + detector.spec().interval;
        loop {
            // Hosts discovered since the last round get the wake-up too.
            let Some(cluster) = weak.upgrade() else {
                return;
            };
            for h in cluster.hosts() {
                let _ = h.outlier.wake.set(wake.clone());
            }
            let changed = detector.process_pending(&cluster.hosts(), std::time::Instant::now());
            if changed {
                cluster.refresh();
            }
            drop(cluster);
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {
                    let Some(cluster) = weak.upgrade() else { return };
                    let hosts = cluster.hosts();
                    if detector.on_interval(&hosts, std::time::Instant::now()) {
                        cluster.refresh();
                    }
                    next = tokio::time::Instant::now() + detector.spec().interval;
                }
                _ = wake.notified() => {}
            }
        }
    });
}

/// How long an ejection lasts: `min(base * backoff, max) + jitter` (Envoy's rule).
pub fn ejection_time(spec: &OutlierSpec, backoff: u32, jitter: Duration) -> Duration {
    (spec.base_ejection_time * backoff).min(spec.max_ejection_time) + jitter
}
