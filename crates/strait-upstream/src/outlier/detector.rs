//! The outlier detector of one cluster, run by its control task: ejection bookkeeping
//! (ejection count, back-off, jitter, `max_ejection_percent`), the interval's success-rate
//! and failure-percentage detectors, and Envoy's `outlier_detection.*` stats. Time and
//! randomness come in as arguments so the arithmetic is testable.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strait_config::model::OutlierSpec;
use strait_config::route::matcher::random_u64;
use strait_stats::{Counter, Gauge, Store};

use super::pending;
use crate::Host;
use crate::health_flag::FAILED_OUTLIER_CHECK;

/// Envoy's `OutlierEjectionType`s that Strait detects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Consecutive5xx,
    ConsecutiveGatewayFailure,
    ConsecutiveLocalOriginFailure,
    SuccessRate,
    LocalOriginSuccessRate,
    FailurePercentage,
    LocalOriginFailurePercentage,
}

impl Kind {
    const ALL: [Kind; 7] = [
        Kind::Consecutive5xx,
        Kind::ConsecutiveGatewayFailure,
        Kind::ConsecutiveLocalOriginFailure,
        Kind::SuccessRate,
        Kind::LocalOriginSuccessRate,
        Kind::FailurePercentage,
        Kind::LocalOriginFailurePercentage,
    ];

    /// The stat name suffix (`ejections_detected_<x>`, `ejections_enforced_<x>`).
    pub fn stat_name(self) -> &'static str {
        match self {
            Kind::Consecutive5xx => "consecutive_5xx",
            Kind::ConsecutiveGatewayFailure => "consecutive_gateway_failure",
            Kind::ConsecutiveLocalOriginFailure => "consecutive_local_origin_failure",
            Kind::SuccessRate => "success_rate",
            Kind::LocalOriginSuccessRate => "local_origin_success_rate",
            Kind::FailurePercentage => "failure_percentage",
            Kind::LocalOriginFailurePercentage => "local_origin_failure_percentage",
        }
    }

    fn enforcing(self, s: &OutlierSpec) -> u32 {
        match self {
            Kind::Consecutive5xx => s.enforcing_consecutive_5xx,
            Kind::ConsecutiveGatewayFailure => s.enforcing_consecutive_gateway_failure,
            Kind::ConsecutiveLocalOriginFailure => s.enforcing_consecutive_local_origin_failure,
            Kind::SuccessRate => s.enforcing_success_rate,
            Kind::LocalOriginSuccessRate => s.enforcing_local_origin_success_rate,
            Kind::FailurePercentage => s.enforcing_failure_percentage,
            Kind::LocalOriginFailurePercentage => s.enforcing_failure_percentage_local_origin,
        }
    }

    fn index(self) -> usize {
        Kind::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

/// `cluster.<name>.outlier_detection.*`, Envoy's names.
#[derive(Debug)]
pub struct Stats {
    pub ejections_active: Gauge,
    pub ejections_total: Counter,
    pub ejections_overflow: Counter,
    pub ejections_enforced_total: Counter,
    /// Deprecated Envoy counters, still emitted.
    pub ejections_consecutive_5xx: Counter,
    pub ejections_success_rate: Counter,
    pub ejections_detected_degradation: Counter,
    detected: Vec<Counter>,
    enforced: Vec<Counter>,
}

impl Stats {
    pub fn new(store: &Store, cluster: &str) -> Stats {
        let p = format!("cluster.{cluster}.outlier_detection.");
        let c = |n: &str| store.counter(&format!("{p}{n}"));
        Stats {
            ejections_active: store.gauge(&format!("{p}ejections_active")),
            ejections_total: c("ejections_total"),
            ejections_overflow: c("ejections_overflow"),
            ejections_enforced_total: c("ejections_enforced_total"),
            ejections_consecutive_5xx: c("ejections_consecutive_5xx"),
            ejections_success_rate: c("ejections_success_rate"),
            ejections_detected_degradation: c("ejections_detected_degradation"),
            detected: Kind::ALL
                .iter()
                .map(|k| c(&format!("ejections_detected_{}", k.stat_name())))
                .collect(),
            enforced: Kind::ALL
                .iter()
                .map(|k| c(&format!("ejections_enforced_{}", k.stat_name())))
                .collect(),
        }
    }

    pub fn detected(&self, k: Kind) -> &Counter {
        &self.detected[k.index()]
    }

    pub fn enforced(&self, k: Kind) -> &Counter {
        &self.enforced[k.index()]
    }
}

/// The detector's memory of one host.
#[derive(Debug, Default)]
struct HostState {
    num_ejections: u32,
    /// Multiplier of `base_ejection_time` for the current/next ejection.
    backoff: u32,
    ejected_at: Option<Instant>,
    jitter: Duration,
    last_unejection: Option<Instant>,
}

/// Mean and ejection threshold of Envoy's success-rate detector: hosts below
/// `mean - factor * stdev` (population standard deviation) are outliers.
pub fn success_rate_threshold(rates: &[f64], factor: f64) -> (f64, f64) {
    let n = rates.len() as f64;
    let mean = rates.iter().sum::<f64>() / n;
    let variance = rates.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n;
    (mean, mean - factor * variance.sqrt())
}

pub struct Detector {
    spec: OutlierSpec,
    stats: Stats,
    hosts: HashMap<u64, HostState>,
    /// Random source for enforcement and jitter (replaceable in tests).
    random: fn() -> u64,
    /// The last interval's cluster-wide success-rate figures, for `/clusters`.
    pub(crate) rates: Arc<super::ClusterRates>,
}

impl Detector {
    pub fn new(spec: OutlierSpec, stats: Stats) -> Detector {
        Detector {
            spec,
            stats,
            hosts: HashMap::new(),
            random: random_u64,
            rates: Default::default(),
        }
    }

    pub fn spec(&self) -> &OutlierSpec {
        &self.spec
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Follows membership: new hosts get a state, removed ones are forgotten (an ejected one
    /// no longer counts as active).
    fn sync(&mut self, hosts: &[Arc<Host>]) {
        if self.hosts.len() == hosts.len() && hosts.iter().all(|h| self.hosts.contains_key(&h.id)) {
            return;
        }
        for h in hosts {
            self.hosts.entry(h.id).or_default();
        }
        let before = self.hosts.len();
        self.hosts.retain(|id, _| hosts.iter().any(|h| h.id == *id));
        if before != self.hosts.len() {
            let active = hosts
                .iter()
                .filter(|h| h.health_flags() & FAILED_OUTLIER_CHECK != 0)
                .count();
            self.stats.ejections_active.set(active as i64);
        }
    }

    /// Handles what workers marked on hosts (consecutive-error detections, passed active
    /// health checks). True when a host's flags changed.
    pub fn process_pending(&mut self, hosts: &[Arc<Host>], now: Instant) -> bool {
        self.sync(hosts);
        let mut changed = false;
        for h in hosts {
            let bits = h.outlier.take_pending();
            if bits == 0 {
                continue;
            }
            // Envoy's order: the gateway-failure detection is posted before the 5xx one.
            for (bit, kind) in [
                (
                    pending::CONSECUTIVE_GATEWAY,
                    Kind::ConsecutiveGatewayFailure,
                ),
                (pending::CONSECUTIVE_5XX, Kind::Consecutive5xx),
                (
                    pending::CONSECUTIVE_LOCAL,
                    Kind::ConsecutiveLocalOriginFailure,
                ),
            ] {
                if bits & bit != 0 {
                    changed |= self.on_consecutive_error(h, hosts.len(), kind, now);
                }
            }
            if bits & pending::HC_PASSED != 0
                && self.spec.successful_active_health_check_uneject_host
                && h.health_flags() & FAILED_OUTLIER_CHECK != 0
                && h.health_flags() & crate::health_flag::FAILED_ACTIVE_HC == 0
            {
                self.uneject(h, now);
                changed = true;
            }
        }
        changed
    }

    fn on_consecutive_error(
        &mut self,
        h: &Arc<Host>,
        total: usize,
        kind: Kind,
        now: Instant,
    ) -> bool {
        if h.health_flags() & FAILED_OUTLIER_CHECK != 0 {
            return false;
        }
        self.stats.detected(kind).inc();
        let ejected = self.eject(h, total, kind, now);
        if kind == Kind::Consecutive5xx {
            self.stats.ejections_consecutive_5xx.inc();
        }
        h.outlier.reset_consecutive(kind);
        ejected
    }

    /// Envoy's `ejectHost`: bounded by `max_ejection_percent`, enforced with the detector's
    /// `enforcing_*` probability. True when the host was ejected.
    fn eject(&mut self, h: &Arc<Host>, total: usize, kind: Kind, now: Instant) -> bool {
        let active = self.stats.ejections_active.value().max(0) as u64;
        let percent = 100.0 * (active + 1) as f64 / total.max(1) as f64;
        let mut should = percent <= f64::from(self.spec.max_ejection_percent.min(100));
        if self.spec.always_eject_one_host {
            should |= active == 0;
        }
        if !should {
            self.stats.ejections_overflow.inc();
            return false;
        }
        if matches!(kind, Kind::Consecutive5xx | Kind::SuccessRate) {
            self.stats.ejections_total.inc();
        }
        if (self.random)() % 100 >= u64::from(kind.enforcing(&self.spec)) {
            return false;
        }
        self.stats.ejections_active.inc();
        self.stats.ejections_enforced_total.inc();
        self.stats.enforced(kind).inc();
        h.set_health_flag(FAILED_OUTLIER_CHECK, true);
        let jitter_max = self.spec.max_ejection_time_jitter.as_millis() as u64;
        let jitter = Duration::from_millis((self.random)() % (jitter_max + 1));
        let (base, max) = (self.spec.base_ejection_time, self.spec.max_ejection_time);
        let st = self.hosts.entry(h.id).or_default();
        st.num_ejections += 1;
        st.ejected_at = Some(now);
        st.jitter = jitter;
        if base * st.backoff < max + base {
            st.backoff += 1;
        }
        tracing::debug!(host = %h.address, ?kind, "outlier detection ejected host");
        true
    }

    fn uneject(&mut self, h: &Arc<Host>, now: Instant) {
        self.stats.ejections_active.dec();
        h.set_health_flag(FAILED_OUTLIER_CHECK, false);
        h.outlier.reset_all_consecutive();
        if let Some(st) = self.hosts.get_mut(&h.id) {
            st.last_unejection = Some(now);
        }
        tracing::debug!(host = %h.address, "outlier detection unejected host");
    }

    /// How long the current ejection of a host lasts (`None` when it is not ejected).
    pub fn ejection_time_of(&self, h: &Host) -> Option<Duration> {
        let st = self.hosts.get(&h.id)?;
        st.ejected_at?;
        Some(super::ejection_time(&self.spec, st.backoff, st.jitter))
    }

    /// Times a host has been ejected.
    pub fn num_ejections(&self, h: &Host) -> u32 {
        self.hosts.get(&h.id).map_or(0, |s| s.num_ejections)
    }

    /// The `interval` timer: unejects hosts whose time is up, runs the success-rate and
    /// failure-percentage detectors on the last interval's counts, decays the back-off of
    /// hosts that stayed healthy. True when a host's flags changed.
    pub fn on_interval(&mut self, hosts: &[Arc<Host>], now: Instant) -> bool {
        self.sync(hosts);
        let mut changed = false;
        let mut buckets = Vec::with_capacity(hosts.len());
        for h in hosts {
            if h.health_flags() & FAILED_OUTLIER_CHECK != 0
                && let Some(st) = self.hosts.get(&h.id)
                && let Some(at) = st.ejected_at
                && super::ejection_time(&self.spec, st.backoff, st.jitter)
                    <= now.saturating_duration_since(at)
            {
                self.uneject(h, now);
                changed = true;
            }
            buckets.push((h.outlier.take_bucket(false), h.outlier.take_bucket(true)));
            h.outlier.set_success_rate(false, -1.0);
            h.outlier.set_success_rate(true, -1.0);
        }
        for local in [false, true] {
            let data: Vec<(&Arc<Host>, u64, u64)> = hosts
                .iter()
                .zip(&buckets)
                .map(|(h, (e, l))| {
                    let (t, s) = if local { *l } else { *e };
                    (h, t, s)
                })
                .collect();
            changed |= self.success_rate_ejections(&data, local, now);
        }
        for h in hosts {
            if h.health_flags() & FAILED_OUTLIER_CHECK == 0
                && let Some(st) = self.hosts.get_mut(&h.id)
                && st
                    .last_unejection
                    .is_some_and(|t| now.saturating_duration_since(t) >= self.spec.interval)
                && st.backoff != 0
            {
                st.backoff -= 1;
            }
        }
        changed
    }

    /// Envoy's `processSuccessRateEjections` for one origin: `(host, total, success)` of the
    /// last interval.
    fn success_rate_ejections(
        &mut self,
        data: &[(&Arc<Host>, u64, u64)],
        local: bool,
        now: Instant,
    ) -> bool {
        let s = &self.spec;
        let (sr_min_hosts, sr_volume) = (
            u64::from(s.success_rate_minimum_hosts),
            u64::from(s.success_rate_request_volume),
        );
        let (fp_min_hosts, fp_volume) = (
            u64::from(s.failure_percentage_minimum_hosts),
            u64::from(s.failure_percentage_request_volume),
        );
        self.rates.set(local, -1.0, -1.0);
        let total = data.len() as u64;
        if total < sr_min_hosts && total < fp_min_hosts {
            return false;
        }
        let mut sr_hosts = Vec::new();
        let mut fp_hosts = Vec::new();
        for (h, t, ok) in data {
            if h.health_flags() & FAILED_OUTLIER_CHECK != 0 || *t == 0 {
                continue;
            }
            let rate = *ok as f64 * 100.0 / *t as f64;
            if *t >= sr_volume.min(fp_volume) {
                h.outlier.set_success_rate(local, rate);
            }
            if *t >= sr_volume {
                sr_hosts.push((*h, rate));
            }
            if *t >= fp_volume {
                fp_hosts.push((*h, rate));
            }
        }
        let mut changed = false;
        if !sr_hosts.is_empty() && sr_hosts.len() as u64 >= sr_min_hosts {
            let rates: Vec<f64> = sr_hosts.iter().map(|(_, r)| *r).collect();
            let (mean, threshold) = success_rate_threshold(&rates, s.success_rate_stdev_factor);
            self.rates.set(local, mean, threshold);
            let kind = if local {
                Kind::LocalOriginSuccessRate
            } else {
                Kind::SuccessRate
            };
            for (h, rate) in &sr_hosts {
                if *rate < threshold {
                    self.stats.ejections_success_rate.inc();
                    self.stats.detected(kind).inc();
                    changed |= self.eject(h, data.len(), kind, now);
                }
            }
        }
        let fp_threshold = f64::from(self.spec.failure_percentage_threshold);
        if !fp_hosts.is_empty() && fp_hosts.len() as u64 >= fp_min_hosts {
            let kind = if local {
                Kind::LocalOriginFailurePercentage
            } else {
                Kind::FailurePercentage
            };
            for (h, rate) in &fp_hosts {
                // A host the success-rate detector just ejected is not ejected twice.
                if 100.0 - rate >= fp_threshold && h.health_flags() & FAILED_OUTLIER_CHECK == 0 {
                    self.stats.detected(kind).inc();
                    changed |= self.eject(h, data.len(), kind, now);
                }
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests;
