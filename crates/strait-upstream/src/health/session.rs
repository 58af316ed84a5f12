//! One host's health-check state: Envoy's threshold rules (a non-network failure of a
//! healthy host fails it at once unless retriable; network failures need
//! `unhealthy_threshold` in a row; a failed host needs `healthy_threshold` passes, except on
//! its very first check) and the next-interval rule.

use std::time::Duration;

use strait_config::cluster::health::HealthCheckSpec;

use super::Stats;
use crate::Host;
use crate::health_flag::{
    ACTIVE_HC_TIMEOUT, DEGRADED_ACTIVE_HC, EXCLUDED_VIA_IMMEDIATE_HC_FAIL, FAILED_ACTIVE_HC,
    PENDING_ACTIVE_HC,
};

/// Envoy's `HealthCheckFailureType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureType {
    Active,
    Passive,
    Network,
    NetworkTimeout,
}

impl FailureType {
    pub fn name(self) -> &'static str {
        match self {
            FailureType::Active => "ACTIVE",
            FailureType::Passive => "PASSIVE",
            FailureType::Network => "NETWORK",
            FailureType::NetworkTimeout => "NETWORK_TIMEOUT",
        }
    }

    fn is_network(self) -> bool {
        matches!(self, FailureType::Network | FailureType::NetworkTimeout)
    }
}

/// Envoy's `HealthTransition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Unchanged,
    Changed,
    /// On the way to a change (a threshold is being counted).
    ChangePending,
}

/// An event for the health-check event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    AddHealthy {
        first_check: bool,
    },
    EjectUnhealthy {
        failure: FailureType,
    },
    Failure {
        failure: FailureType,
        first_check: bool,
    },
    Success,
    Degraded,
    NoLongerDegraded,
}

/// What one result did.
#[derive(Debug)]
pub struct Output {
    pub transition: Transition,
    /// The check passed (Envoy's `HealthState::Healthy`), whatever the host's state.
    pub healthy_result: bool,
    pub events: Vec<Event>,
    pub http_status: u16,
}

#[derive(Debug)]
pub struct Session {
    num_healthy: u32,
    num_unhealthy: u32,
    first_check: bool,
}

impl Session {
    /// A session for `host`; counts it in the `healthy` gauge when it is not failed.
    pub fn new(host: &Host, stats: &Stats) -> Session {
        if host.health_flags() & FAILED_ACTIVE_HC == 0 {
            stats.healthy.inc();
        }
        Session {
            num_healthy: 0,
            num_unhealthy: 0,
            first_check: true,
        }
    }

    /// Envoy's `handleSuccess`.
    pub fn on_success(
        &mut self,
        host: &Host,
        spec: &HealthCheckSpec,
        stats: &Stats,
        degraded: bool,
    ) -> Output {
        self.num_unhealthy = 0;
        let mut events = Vec::new();
        let mut t = Transition::Unchanged;
        if host.health_flags() & FAILED_ACTIVE_HC != 0 {
            self.num_healthy += 1;
            if self.first_check || self.num_healthy == spec.healthy_threshold {
                host.set_health_flag(ACTIVE_HC_TIMEOUT, false);
                host.set_health_flag(EXCLUDED_VIA_IMMEDIATE_HC_FAIL, false);
                host.set_health_flag(FAILED_ACTIVE_HC, false);
                stats.healthy.inc();
                t = Transition::Changed;
                events.push(Event::AddHealthy {
                    first_check: self.first_check,
                });
            } else {
                t = Transition::ChangePending;
            }
        }
        if t != Transition::Changed && spec.always_log_health_check_success {
            events.push(Event::Success);
        }
        t = clear_pending(host, t);
        if degraded != (host.health_flags() & DEGRADED_ACTIVE_HC != 0) {
            host.set_health_flag(DEGRADED_ACTIVE_HC, degraded);
            if degraded {
                stats.degraded.inc();
                events.push(Event::Degraded);
            } else {
                stats.degraded.dec();
                events.push(Event::NoLongerDegraded);
            }
            if t == Transition::Unchanged {
                t = Transition::Changed;
            }
        }
        stats.success.inc();
        self.first_check = false;
        Output {
            transition: t,
            healthy_result: true,
            events,
            http_status: 0,
        }
    }

    /// Envoy's `setUnhealthy`.
    pub fn on_failure(
        &mut self,
        host: &Host,
        spec: &HealthCheckSpec,
        stats: &Stats,
        failure: FailureType,
        retriable: bool,
    ) -> Output {
        self.num_healthy = 0;
        let mut events = Vec::new();
        let mut t = Transition::Unchanged;
        if host.health_flags() & FAILED_ACTIVE_HC == 0 {
            self.num_unhealthy += 1;
            if (!failure.is_network() && !retriable)
                || self.num_unhealthy == spec.unhealthy_threshold
            {
                host.set_health_flag(FAILED_ACTIVE_HC, true);
                stats.healthy.dec();
                t = Transition::Changed;
                events.push(Event::EjectUnhealthy { failure });
            } else {
                t = Transition::ChangePending;
            }
        }
        let timed_out =
            failure == FailureType::NetworkTimeout && host.health_flags() & FAILED_ACTIVE_HC != 0;
        host.set_health_flag(ACTIVE_HC_TIMEOUT, timed_out);
        t = clear_pending(host, t);
        if self.first_check || spec.always_log_health_check_failures {
            events.push(Event::Failure {
                failure,
                first_check: self.first_check,
            });
        }
        stats.failure.inc();
        if failure.is_network() {
            stats.network_failure.inc();
        } else if failure == FailureType::Passive {
            stats.passive_failure.inc();
        }
        self.first_check = false;
        Output {
            transition: t,
            healthy_result: false,
            events,
            http_status: 0,
        }
    }
}

fn clear_pending(host: &Host, t: Transition) -> Transition {
    if host.set_health_flag(PENDING_ACTIVE_HC, false) {
        // The host's exclusion changed even if its health did not.
        Transition::Changed
    } else {
        t
    }
}

/// Envoy's next-check delay. `traffic`: the cluster has carried traffic (else the
/// no-traffic intervals apply); `healthy_result`: the check that just ran passed;
/// `random_below(n)` is uniform in `0..n`.
pub fn next_interval(
    spec: &HealthCheckSpec,
    traffic: bool,
    healthy_result: bool,
    t: Transition,
    random_below: impl Fn(u64) -> u64,
) -> Duration {
    let pending = t == Transition::ChangePending;
    let base = if traffic {
        match (healthy_result, pending) {
            (false, true) => spec.unhealthy_edge_interval,
            (false, false) => spec.unhealthy_interval,
            (true, true) => spec.healthy_edge_interval,
            (true, false) => spec.interval,
        }
    } else if healthy_result && !pending {
        spec.no_traffic_healthy_interval
    } else {
        spec.no_traffic_interval
    };
    let mut ms = base.as_millis() as u64;
    let pct = u64::from(spec.interval_jitter_percent) * ms / 100;
    if pct > 0 {
        ms += random_below(pct);
    }
    let jitter = spec.interval_jitter.as_millis() as u64;
    if jitter > 0 {
        ms += random_below(jitter);
    }
    Duration::from_millis(ms.max(1))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use strait_config::cluster::health::{CheckKind, TcpCheck};
    use strait_config::model::EndpointSpec;
    use strait_stats::Store;

    use super::*;

    fn spec(unhealthy: u32, healthy: u32) -> HealthCheckSpec {
        let s = Duration::from_secs;
        HealthCheckSpec {
            timeout: s(1),
            interval: s(10),
            initial_jitter: Duration::ZERO,
            interval_jitter: Duration::ZERO,
            interval_jitter_percent: 0,
            unhealthy_threshold: unhealthy,
            healthy_threshold: healthy,
            reuse_connection: true,
            no_traffic_interval: s(60),
            no_traffic_healthy_interval: s(70),
            unhealthy_interval: s(20),
            unhealthy_edge_interval: s(30),
            healthy_edge_interval: s(40),
            always_log_health_check_failures: false,
            always_log_health_check_success: false,
            event_log_path: None,
            kind: CheckKind::Tcp(TcpCheck {
                send: Default::default(),
                receive: Vec::new(),
            }),
        }
    }

    fn host(store: &Store) -> Arc<Host> {
        let address = "127.0.0.1:1".parse().unwrap();
        let e = EndpointSpec::at(address);
        let h = Arc::new(Host::new(&e, address, store));
        h.set_health_flag(FAILED_ACTIVE_HC, true);
        h
    }

    fn failed(h: &Host) -> bool {
        h.health_flags() & FAILED_ACTIVE_HC != 0
    }

    #[test]
    fn first_success_is_healthy_at_once() {
        let store = Store::new(1);
        let stats = Stats::new(&store, "c");
        let (h, sp) = (host(&store), spec(3, 5));
        let mut s = Session::new(&h, &stats);
        assert_eq!(stats.healthy.value(), 0);
        let o = s.on_success(&h, &sp, &stats, false);
        assert_eq!(o.transition, Transition::Changed);
        assert_eq!(o.events, vec![Event::AddHealthy { first_check: true }]);
        assert!(!failed(&h));
        assert_eq!(stats.healthy.value(), 1);
        assert_eq!(stats.success.value(), 1);
    }

    #[test]
    fn first_failure_logs_and_keeps_failed() {
        let store = Store::new(1);
        let stats = Stats::new(&store, "c");
        let (h, sp) = (host(&store), spec(3, 2));
        let mut s = Session::new(&h, &stats);
        let o = s.on_failure(&h, &sp, &stats, FailureType::Network, false);
        assert_eq!(o.transition, Transition::Unchanged);
        assert_eq!(
            o.events,
            vec![Event::Failure {
                failure: FailureType::Network,
                first_check: true
            }]
        );
        assert_eq!(
            (stats.failure.value(), stats.network_failure.value()),
            (1, 1)
        );
        // Now healthy_threshold passes are needed.
        assert_eq!(
            s.on_success(&h, &sp, &stats, false).transition,
            Transition::ChangePending
        );
        assert!(failed(&h));
        assert_eq!(
            s.on_success(&h, &sp, &stats, false).transition,
            Transition::Changed
        );
        assert!(!failed(&h));
    }

    #[test]
    fn active_failure_fails_a_healthy_host_at_once() {
        let store = Store::new(1);
        let stats = Stats::new(&store, "c");
        let (h, sp) = (host(&store), spec(3, 2));
        let mut s = Session::new(&h, &stats);
        s.on_success(&h, &sp, &stats, false);
        let o = s.on_failure(&h, &sp, &stats, FailureType::Active, false);
        assert_eq!(o.transition, Transition::Changed);
        assert!(failed(&h));
        assert_eq!(stats.healthy.value(), 0);
        // A retriable status counts towards the threshold instead.
        let (h2, mut s2) = (host(&store), Session::new(&host(&store), &stats));
        s2.on_success(&h2, &sp, &stats, false);
        for _ in 0..2 {
            assert_eq!(
                s2.on_failure(&h2, &sp, &stats, FailureType::Active, true)
                    .transition,
                Transition::ChangePending
            );
        }
        assert!(!failed(&h2));
        s2.on_failure(&h2, &sp, &stats, FailureType::Active, true);
        assert!(failed(&h2));
    }

    #[test]
    fn network_failures_need_the_threshold_and_successes_reset_it() {
        let store = Store::new(1);
        let stats = Stats::new(&store, "c");
        let (h, sp) = (host(&store), spec(3, 2));
        let mut s = Session::new(&h, &stats);
        s.on_success(&h, &sp, &stats, false);
        s.on_failure(&h, &sp, &stats, FailureType::Network, false);
        s.on_failure(&h, &sp, &stats, FailureType::NetworkTimeout, false);
        s.on_success(&h, &sp, &stats, false);
        s.on_failure(&h, &sp, &stats, FailureType::Network, false);
        s.on_failure(&h, &sp, &stats, FailureType::Network, false);
        assert!(!failed(&h));
        let o = s.on_failure(&h, &sp, &stats, FailureType::NetworkTimeout, false);
        assert_eq!(o.transition, Transition::Changed);
        assert!(failed(&h));
        assert!(h.health_flags() & ACTIVE_HC_TIMEOUT != 0, "timeout flag");
        assert_eq!(h.health_flags_text(), "/failed_active_hc/active_hc_timeout");
        s.on_failure(&h, &sp, &stats, FailureType::Network, false);
        assert_eq!(h.health_flags_text(), "/failed_active_hc");
    }

    #[test]
    fn passing_check_clears_immediate_fail_exclusion() {
        let store = Store::new(1);
        let stats = Stats::new(&store, "c");
        let (h, sp) = (host(&store), spec(3, 1));
        let mut s = Session::new(&h, &stats);
        s.on_success(&h, &sp, &stats, false);
        h.set_health_flag(EXCLUDED_VIA_IMMEDIATE_HC_FAIL, true);
        let o = s.on_failure(&h, &sp, &stats, FailureType::Passive, false);
        assert_eq!(o.transition, Transition::Changed);
        assert_eq!(stats.passive_failure.value(), 1);
        s.on_success(&h, &sp, &stats, false);
        assert_eq!(h.health_flags(), 0);
    }

    #[test]
    fn degraded_is_a_change() {
        let store = Store::new(1);
        let stats = Stats::new(&store, "c");
        let (h, sp) = (host(&store), spec(3, 1));
        let mut s = Session::new(&h, &stats);
        s.on_success(&h, &sp, &stats, false);
        let o = s.on_success(&h, &sp, &stats, true);
        assert_eq!(o.transition, Transition::Changed);
        assert_eq!(o.events, vec![Event::Degraded]);
        assert_eq!(stats.degraded.value(), 1);
        let o = s.on_success(&h, &sp, &stats, false);
        assert_eq!(o.events, vec![Event::NoLongerDegraded]);
        assert_eq!(stats.degraded.value(), 0);
    }

    #[test]
    fn intervals_follow_traffic_and_transitions() {
        let sp = spec(3, 2);
        let none = |_| 0;
        let s = Duration::from_secs;
        use Transition::*;
        assert_eq!(next_interval(&sp, true, true, Unchanged, none), s(10));
        assert_eq!(next_interval(&sp, true, true, ChangePending, none), s(40));
        assert_eq!(next_interval(&sp, true, false, Unchanged, none), s(20));
        assert_eq!(next_interval(&sp, true, false, ChangePending, none), s(30));
        assert_eq!(next_interval(&sp, false, true, Changed, none), s(70));
        assert_eq!(next_interval(&sp, false, true, ChangePending, none), s(60));
        assert_eq!(next_interval(&sp, false, false, Unchanged, none), s(60));
    }

    #[test]
    fn jitter_bounds() {
        let mut sp = spec(3, 2);
        sp.interval_jitter = Duration::from_millis(500);
        sp.interval_jitter_percent = 10;
        // Largest draws: +10% of 10s (< 1000ms) and < 500ms.
        let max = next_interval(&sp, true, true, Transition::Unchanged, |n| n - 1);
        assert_eq!(max, Duration::from_millis(10_000 + 999 + 499));
        let min = next_interval(&sp, true, true, Transition::Unchanged, |_| 0);
        assert_eq!(min, Duration::from_secs(10));
        sp.interval = Duration::ZERO;
        sp.interval_jitter = Duration::ZERO;
        assert_eq!(
            next_interval(&sp, true, true, Transition::Unchanged, |_| 0),
            Duration::from_millis(1),
            "never zero"
        );
    }
}
