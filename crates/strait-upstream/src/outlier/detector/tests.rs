use std::sync::Arc;
use std::time::{Duration, Instant};

use strait_config::model::{EndpointSpec, OutlierSpec};
use strait_stats::Store;

use super::*;
use crate::outlier::Outcome;

fn hosts(n: usize, store: &Store) -> Vec<Arc<Host>> {
    (0..n)
        .map(|i| {
            let address = format!("127.0.0.1:{}", 1000 + i).parse().unwrap();
            let e = EndpointSpec::at(address);
            Arc::new(Host::new(&e, address, store))
        })
        .collect()
}

fn detector(spec: OutlierSpec, store: &Store) -> Detector {
    let mut d = Detector::new(spec, Stats::new(store, "c"));
    // Deterministic: every enforcement roll is 0 (enforced unless enforcing is 0), no jitter.
    d.random = || 0;
    d
}

fn spec() -> OutlierSpec {
    OutlierSpec {
        max_ejection_percent: 100,
        ..OutlierSpec::default()
    }
}

fn ejected(h: &Host) -> bool {
    h.health_flags() & FAILED_OUTLIER_CHECK != 0
}

#[test]
fn success_rate_threshold_is_envoys_formula() {
    // Envoy's own example: {50, 100, 100, 100, 100} -> mean 90, stdev 20, 1.9 -> 52.
    let (mean, t) = success_rate_threshold(&[50.0, 100.0, 100.0, 100.0, 100.0], 1.9);
    assert_eq!(mean, 90.0);
    assert!((t - 52.0).abs() < 1e-9, "{t}");
    let (mean, t) = success_rate_threshold(&[80.0, 80.0], 1.0);
    assert_eq!((mean, t), (80.0, 80.0));
}

#[test]
fn fifth_consecutive_5xx_ejects() {
    let store = Store::new(1);
    let hs = hosts(3, &store);
    let s = spec();
    let mut d = detector(s.clone(), &store);
    let now = Instant::now();
    for _ in 0..4 {
        hs[0].outlier.put(&s, Outcome::Status(503));
    }
    assert!(!d.process_pending(&hs, now), "4 errors do not eject");
    // A success resets the run.
    hs[0].outlier.put(&s, Outcome::Status(200));
    for _ in 0..4 {
        hs[0].outlier.put(&s, Outcome::Status(500));
    }
    assert!(!d.process_pending(&hs, now));
    hs[0].outlier.put(&s, Outcome::Status(500));
    assert!(
        d.process_pending(&hs, now),
        "the 5th consecutive 5xx ejects"
    );
    assert!(ejected(&hs[0]));
    assert!(!ejected(&hs[1]));
    let st = d.stats();
    assert_eq!(st.ejections_active.value(), 1);
    assert_eq!(st.ejections_enforced_total.value(), 1);
    assert_eq!(st.enforced(Kind::Consecutive5xx).value(), 1);
    assert_eq!(st.detected(Kind::Consecutive5xx).value(), 1);
    assert_eq!(st.ejections_total.value(), 1);
    assert_eq!(st.ejections_consecutive_5xx.value(), 1);
    // 500 is not a gateway error: no gateway detection.
    assert_eq!(st.detected(Kind::ConsecutiveGatewayFailure).value(), 0);
}

#[test]
fn gateway_failures_are_detected_but_not_enforced_by_default() {
    let store = Store::new(1);
    let hs = hosts(2, &store);
    let s = OutlierSpec {
        consecutive_5xx: 100,
        ..spec()
    };
    let mut d = detector(s.clone(), &store);
    for _ in 0..5 {
        hs[1].outlier.put(&s, Outcome::Status(502));
    }
    assert!(!d.process_pending(&hs, Instant::now()));
    assert!(!ejected(&hs[1]));
    assert_eq!(
        d.stats().detected(Kind::ConsecutiveGatewayFailure).value(),
        1
    );
    assert_eq!(
        d.stats().enforced(Kind::ConsecutiveGatewayFailure).value(),
        0
    );
    // Not split: a connect failure counts as a 503 and a timeout as a 504.
    let s2 = OutlierSpec {
        consecutive_gateway_failure: 2,
        enforcing_consecutive_gateway_failure: 100,
        ..s
    };
    let mut d = detector(s2.clone(), &store);
    hs[0].outlier.put(&s2, Outcome::ConnectFailed);
    hs[0].outlier.put(&s2, Outcome::Timeout);
    assert!(d.process_pending(&hs, Instant::now()));
    assert!(ejected(&hs[0]));
}

#[test]
fn max_ejection_percent_limits_ejections() {
    let store = Store::new(1);
    let hs = hosts(3, &store);
    // Envoy's default 10%: one host of three is 33% -> overflow, nothing ejected.
    let s = OutlierSpec::default();
    let mut d = detector(s.clone(), &store);
    for _ in 0..5 {
        hs[0].outlier.put(&s, Outcome::Status(503));
    }
    assert!(!d.process_pending(&hs, Instant::now()));
    assert!(!ejected(&hs[0]));
    // 503 is also a gateway error: both detectors fire and both overflow (the percentage
    // is checked before enforcement, as in Envoy).
    assert_eq!(d.stats().ejections_overflow.value(), 2);
    assert_eq!(d.stats().detected(Kind::Consecutive5xx).value(), 1);

    // 50%: the first of three (33%) goes, the second (67%) overflows.
    let store = Store::new(1);
    let hs = hosts(3, &store);
    let s = OutlierSpec {
        max_ejection_percent: 50,
        ..OutlierSpec::default()
    };
    let mut d = detector(s.clone(), &store);
    for h in &hs[..2] {
        for _ in 0..5 {
            h.outlier.put(&s, Outcome::Status(500));
        }
    }
    d.process_pending(&hs, Instant::now());
    assert!(ejected(&hs[0]));
    assert!(!ejected(&hs[1]));
    assert_eq!(d.stats().ejections_overflow.value(), 1);

    // always_eject_one_host: the first ejection ignores the percentage.
    let store = Store::new(1);
    let hs = hosts(3, &store);
    let s = OutlierSpec {
        always_eject_one_host: true,
        ..OutlierSpec::default()
    };
    let mut d = detector(s.clone(), &store);
    for h in &hs[..2] {
        for _ in 0..5 {
            h.outlier.put(&s, Outcome::Status(503));
        }
    }
    d.process_pending(&hs, Instant::now());
    assert!(ejected(&hs[0]));
    assert!(!ejected(&hs[1]));
}

#[test]
fn ejection_time_grows_with_ejections_and_decays() {
    let store = Store::new(1);
    let hs = hosts(1, &store);
    let s = OutlierSpec {
        base_ejection_time: Duration::from_secs(10),
        max_ejection_time: Duration::from_secs(25),
        interval: Duration::from_secs(1),
        ..spec()
    };
    let mut d = detector(s.clone(), &store);
    let eject = |d: &mut Detector, at: Instant| {
        for _ in 0..5 {
            hs[0].outlier.put(&s, Outcome::Status(503));
        }
        assert!(d.process_pending(&hs, at));
        assert!(ejected(&hs[0]));
    };
    let t0 = Instant::now();
    eject(&mut d, t0);
    assert_eq!(d.ejection_time_of(&hs[0]), Some(Duration::from_secs(10)));
    assert!(!d.on_interval(&hs, t0 + Duration::from_secs(9)));
    assert!(
        d.on_interval(&hs, t0 + Duration::from_secs(10)),
        "unejected"
    );
    assert!(!ejected(&hs[0]));
    assert_eq!(d.stats().ejections_active.value(), 0);
    // Second ejection right away: 2 x base.
    let t1 = t0 + Duration::from_secs(10);
    eject(&mut d, t1);
    assert_eq!(d.ejection_time_of(&hs[0]), Some(Duration::from_secs(20)));
    assert!(d.on_interval(&hs, t1 + Duration::from_secs(20)));
    // Third: 3 x base capped at max_ejection_time.
    let t2 = t1 + Duration::from_secs(20);
    eject(&mut d, t2);
    assert_eq!(d.ejection_time_of(&hs[0]), Some(Duration::from_secs(25)));
    assert_eq!(d.num_ejections(&hs[0]), 3);
    assert!(d.on_interval(&hs, t2 + Duration::from_secs(25)));
    // Healthy intervals after the unejection decay the back-off one step each.
    let t3 = t2 + Duration::from_secs(25);
    d.on_interval(&hs, t3 + Duration::from_secs(1));
    d.on_interval(&hs, t3 + Duration::from_secs(2));
    eject(&mut d, t3 + Duration::from_secs(3));
    assert_eq!(d.ejection_time_of(&hs[0]), Some(Duration::from_secs(20)));
}

#[test]
fn ejection_time_formula_with_jitter() {
    let s = OutlierSpec {
        base_ejection_time: Duration::from_secs(30),
        max_ejection_time: Duration::from_secs(300),
        ..OutlierSpec::default()
    };
    let j = Duration::from_millis(7);
    assert_eq!(
        crate::outlier::ejection_time(&s, 1, j),
        Duration::from_millis(30_007)
    );
    assert_eq!(
        crate::outlier::ejection_time(&s, 11, j),
        Duration::from_millis(300_007)
    );
}

#[test]
fn success_rate_detector_ejects_the_outlier() {
    let store = Store::new(1);
    let hs = hosts(5, &store);
    let s = OutlierSpec {
        consecutive_5xx: 1000,
        ..spec()
    };
    let mut d = detector(s.clone(), &store);
    // 100 requests each; host 0 fails half of them.
    for (i, h) in hs.iter().enumerate() {
        for n in 0..100 {
            let status = if i == 0 && n % 2 == 0 { 500 } else { 200 };
            h.outlier.put(&s, Outcome::Status(status));
        }
    }
    assert!(d.on_interval(&hs, Instant::now()));
    assert!(ejected(&hs[0]));
    assert!(hs[1..].iter().all(|h| !ejected(h)));
    assert_eq!(d.stats().enforced(Kind::SuccessRate).value(), 1);
    assert_eq!(d.stats().ejections_success_rate.value(), 1);
    // mean 90, stdev 20: threshold 90 - 1.9 * 20 = 52.
    let (mean, threshold) = d.rates.get(false);
    assert_eq!(mean, 90.0);
    assert!((threshold - 52.0).abs() < 1e-9);
    assert_eq!(d.rates.get(true), (-1.0, -1.0));
    // /clusters shows the others' rates; the ejected host's was computed before ejection.
    assert_eq!(hs[1].outlier.success_rate(), 100.0);
    assert_eq!(hs[0].outlier.success_rate(), 50.0);
    // Below request_volume nothing is computed.
    hs[1].outlier.put(&s, Outcome::Status(200));
    d.on_interval(&hs, Instant::now());
    assert_eq!(hs[1].outlier.success_rate(), -1.0);
}

#[test]
fn success_rate_needs_minimum_hosts() {
    let store = Store::new(1);
    let hs = hosts(4, &store);
    let s = OutlierSpec {
        consecutive_5xx: 1000,
        ..spec()
    };
    let mut d = detector(s.clone(), &store);
    for (i, h) in hs.iter().enumerate() {
        for _ in 0..100 {
            h.outlier
                .put(&s, Outcome::Status(if i == 0 { 500 } else { 200 }));
        }
    }
    assert!(!d.on_interval(&hs, Instant::now()), "4 hosts < minimum 5");
    assert!(!ejected(&hs[0]));
}

#[test]
fn failure_percentage_detector() {
    let store = Store::new(1);
    let hs = hosts(5, &store);
    let s = OutlierSpec {
        consecutive_5xx: 1000,
        enforcing_success_rate: 0,
        enforcing_failure_percentage: 100,
        ..spec()
    };
    let mut d = detector(s.clone(), &store);
    for (i, h) in hs.iter().enumerate() {
        for n in 0..50 {
            // Host 2 fails 86%: above the 85% threshold.
            let fail = i == 2 && n < 43;
            h.outlier
                .put(&s, Outcome::Status(if fail { 503 } else { 200 }));
        }
    }
    assert!(d.on_interval(&hs, Instant::now()));
    assert!(ejected(&hs[2]));
    assert_eq!(d.stats().enforced(Kind::FailurePercentage).value(), 1);
    assert_eq!(
        d.stats().detected(Kind::SuccessRate).value(),
        0,
        "50 < request_volume 100"
    );
}

#[test]
fn split_mode_counts_local_origin_errors_apart() {
    let store = Store::new(1);
    let hs = hosts(2, &store);
    let s = OutlierSpec {
        split_external_local_origin_errors: true,
        consecutive_local_origin_failure: 3,
        ..spec()
    };
    let mut d = detector(s.clone(), &store);
    // Connect failures no longer count as 5xx...
    for _ in 0..6 {
        hs[0].outlier.put(&s, Outcome::ConnectFailed);
        hs[0].outlier.put(&s, Outcome::ConnectSuccess);
    }
    assert!(
        !d.process_pending(&hs, Instant::now()),
        "successes reset the run"
    );
    hs[0].outlier.put(&s, Outcome::ConnectFailed);
    hs[0].outlier.put(&s, Outcome::Timeout);
    hs[0].outlier.put(&s, Outcome::ConnectFailed);
    assert!(d.process_pending(&hs, Instant::now()));
    assert!(ejected(&hs[0]));
    assert_eq!(
        d.stats()
            .enforced(Kind::ConsecutiveLocalOriginFailure)
            .value(),
        1
    );
    assert_eq!(d.stats().detected(Kind::Consecutive5xx).value(), 0);
}

#[test]
fn passing_active_check_unejects() {
    let store = Store::new(1);
    let hs = hosts(2, &store);
    let s = spec();
    let mut d = detector(s.clone(), &store);
    for _ in 0..5 {
        hs[0].outlier.put(&s, Outcome::Status(503));
    }
    d.process_pending(&hs, Instant::now());
    assert!(ejected(&hs[0]));
    crate::outlier::on_active_hc_success(&hs[0]);
    assert!(d.process_pending(&hs, Instant::now()));
    assert!(!ejected(&hs[0]));
    assert_eq!(d.stats().ejections_active.value(), 0);
}
