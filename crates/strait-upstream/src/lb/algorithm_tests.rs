//! Tests of the algorithm layer through [`Balancer`]: distributions follow weights, hash
//! balancers are consistent and disrupt little, and rings/tables are Envoy's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use strait_config::cluster::lb::{LeastRequestSpec, MaglevSpec, RingHashFunction, RingHashSpec};
use strait_config::model::{EndpointSpec, LbPolicy};
use strait_stats::Store;

use super::hash::xxhash64;
use super::{Balancer, LbContext, Maglev, RingHash};
use crate::host::Host;

fn host(addr: &str, weight: u32) -> Arc<Host> {
    let address: SocketAddr = addr.parse().expect("test address");
    let spec = EndpointSpec {
        weight,
        hostname: format!("host-{}", address.port()),
        ..EndpointSpec::at(address)
    };
    Arc::new(Host::new(&spec, address, &Store::new(1)))
}

fn hosts(weights: &[u32]) -> Vec<Arc<Host>> {
    weights
        .iter()
        .enumerate()
        .map(|(i, w)| host(&format!("10.0.{}.{}:80", i / 250, i % 250 + 1), *w))
        .collect()
}

fn counts(b: &Balancer, hs: &[Arc<Host>], n: usize) -> Vec<usize> {
    let mut c = vec![0; hs.len()];
    for _ in 0..n {
        c[b.choose(hs, &LbContext::default()).expect("a host")] += 1;
    }
    c
}

fn pick(b: &Balancer, hs: &[Arc<Host>], hash: u64) -> usize {
    let ctx = LbContext {
        hash: Some(hash),
        ..LbContext::default()
    };
    b.choose(hs, &ctx).expect("a host")
}

#[test]
fn round_robin_follows_weights() {
    let hs = hosts(&[1, 2, 3]);
    let b = Balancer::build(&LbPolicy::RoundRobin, &hs, 1);
    assert_eq!(counts(&b, &hs, 6000), vec![1000, 2000, 3000]);
}

#[test]
fn random_is_uniform_and_ignores_endpoint_weights() {
    // Envoy's RANDOM picks `random % hosts`: endpoint weights play no part.
    let hs = hosts(&[1, 9]);
    let b = Balancer::build(&LbPolicy::Random, &hs, 1);
    let c = counts(&b, &hs, 20_000);
    assert!(c[0] > 9_000 && c[1] > 9_000, "{c:?}");
    assert!(
        Balancer::build(&LbPolicy::Random, &[], 1)
            .choose(&[], &LbContext::default())
            .is_none()
    );
}

#[test]
fn least_request_two_choices_avoid_the_busy_host() {
    let hs = hosts(&[1, 1, 1]);
    let b = Balancer::build(&LbPolicy::LeastRequest(LeastRequestSpec::default()), &hs, 1);
    // All idle: uniform.
    let c = counts(&b, &hs, 9_000);
    assert!(c.iter().all(|n| (2_500..3_500).contains(n)), "{c:?}");
    // Host 0 busy: chosen only when both samples are host 0 (1 in 9).
    hs[0].lb_active_requests.store(5, Ordering::Relaxed);
    let c = counts(&b, &hs, 9_000);
    assert!((700..1_300).contains(&c[0]), "{c:?}");
    assert!(c[1] > 3_400 && c[2] > 3_400, "{c:?}");
}

#[test]
fn least_request_full_scan_takes_the_least_loaded() {
    let hs = hosts(&[1, 1, 1, 1]);
    let spec = LeastRequestSpec {
        full_scan: true,
        ..LeastRequestSpec::default()
    };
    let b = Balancer::build(&LbPolicy::LeastRequest(spec), &hs, 1);
    for (h, a) in hs.iter().zip([3, 1, 2, 1]) {
        h.lb_active_requests.store(a, Ordering::Relaxed);
    }
    let c = counts(&b, &hs, 4_000);
    assert_eq!(c[0] + c[2], 0, "{c:?}");
    // The two tied hosts share the picks.
    assert!(c[1] > 1_700 && c[3] > 1_700, "{c:?}");
}

#[test]
fn least_request_weighted_uses_weight_over_active() {
    let hs = hosts(&[1, 3]);
    let b = Balancer::build(&LbPolicy::LeastRequest(LeastRequestSpec::default()), &hs, 1);
    // Idle: the EDF schedule follows the weights exactly (up to its random start).
    let c = counts(&b, &hs, 4_000);
    assert!(c[0].abs_diff(1_000) <= 2, "{c:?}");
    // Host 1 has 2 requests in flight: 3 / (2 + 1) = 1, the same as host 0.
    hs[1].lb_active_requests.store(2, Ordering::Relaxed);
    let c = counts(&b, &hs, 4_000);
    assert!(c[0].abs_diff(2_000) <= 10, "{c:?}");
    // A bias of 0 ignores the load: plain weighted round robin.
    let spec = LeastRequestSpec {
        active_request_bias: 0.0,
        ..LeastRequestSpec::default()
    };
    let b = Balancer::build(&LbPolicy::LeastRequest(spec), &hs, 1);
    let c = counts(&b, &hs, 4_000);
    assert!(c[0].abs_diff(1_000) <= 2, "{c:?}");
}

fn ring(hs: &[Arc<Host>], min: u64) -> Balancer {
    Balancer::build(
        &LbPolicy::RingHash(RingHashSpec {
            minimum_ring_size: min,
            ..RingHashSpec::default()
        }),
        hs,
        1,
    )
}

fn maglev(hs: &[Arc<Host>], size: u64) -> Balancer {
    Balancer::build(
        &LbPolicy::Maglev(MaglevSpec {
            table_size: size,
            use_hostname_for_hashing: false,
        }),
        hs,
        1,
    )
}

#[test]
fn ring_sizes_follow_normalized_weights() {
    // Equal weights: ceil(1024 / 3) = 342 entries each.
    let r = RingHash::new(&hosts(&[1, 1, 1]), &RingHashSpec::default());
    assert_eq!(r.len(), 1026);
    // 1:2: the lighter host gets 342, the heavier 684.
    let hs = hosts(&[1, 2]);
    let b = ring(&hs, 1024);
    let c = (0..30_000u64).fold([0usize; 2], |mut c, k| {
        c[pick(&b, &hs, xxhash64(&k.to_le_bytes()))] += 1;
        c
    });
    assert!((8_500..11_500).contains(&c[0]), "{c:?}");
    // The maximum caps the ring.
    let capped = RingHashSpec {
        minimum_ring_size: 1024,
        maximum_ring_size: 10,
        ..RingHashSpec::default()
    };
    assert_eq!(RingHash::new(&hosts(&[1, 1, 1]), &capped).len(), 10);
    assert!(RingHash::new(&[], &RingHashSpec::default()).is_empty());
}

#[test]
fn hash_balancers_are_consistent() {
    let hs = hosts(&[1, 1, 1, 1, 1]);
    for b in [ring(&hs, 1024), maglev(&hs, 65537)] {
        let mut seen = [false; 5];
        for k in 0..1_000u64 {
            let h = xxhash64(format!("key-{k}").as_bytes());
            let first = pick(&b, &hs, h);
            assert_eq!(pick(&b, &hs, h), first);
            seen[first] = true;
        }
        assert!(seen.iter().all(|s| *s), "every host gets keys");
        assert!(b.uses_hash());
    }
    // Without a hash, Envoy hashes at random: all hosts are used.
    let b = ring(&hs, 1024);
    assert!(counts(&b, &hs, 5_000).iter().all(|n| *n > 500));
}

#[test]
fn ring_hash_builds_the_same_ring_in_any_host_order() {
    let hs = hosts(&[1, 2, 1, 3]);
    let mut rev = hs.clone();
    rev.reverse();
    let a = ring(&hs, 1024);
    let b = ring(&rev, 1024);
    for k in 0..2_000u64 {
        let h = xxhash64(&k.to_le_bytes());
        assert_eq!(hs[pick(&a, &hs, h)].id, rev[pick(&b, &rev, h)].id);
    }
}

#[test]
fn maglev_table_contents() {
    // Equal weights: every host takes one slot per round, so shares differ by at most 1.
    let hs = hosts(&[1, 1, 1, 1, 1, 1, 1]);
    let t = Maglev::new(&hs, &MaglevSpec::default());
    let n = t.entries_per_host(hs.len());
    assert_eq!(n.iter().sum::<u64>(), 65537);
    let (lo, hi) = (n.iter().min().unwrap(), n.iter().max().unwrap());
    assert!(hi - lo <= 1, "{n:?}");
    // Weighted 1:3: a quarter and three quarters of the table.
    let hs = hosts(&[1, 3]);
    let n = Maglev::new(&hs, &MaglevSpec::default()).entries_per_host(2);
    assert!(n[0].abs_diff(65537 / 4) <= 2, "{n:?}");
    // Host order does not change the table (hosts are sorted by key first).
    let mut rev = hs.clone();
    rev.reverse();
    let a = maglev(&hs, 65537);
    let b = maglev(&rev, 65537);
    for k in 0..2_000u64 {
        let h = xxhash64(&k.to_le_bytes());
        assert_eq!(hs[pick(&a, &hs, h)].id, rev[pick(&b, &rev, h)].id);
    }
}

#[test]
fn retry_attempts_move_hash_picks() {
    let hs = hosts(&[1; 10]);
    for b in [ring(&hs, 1024), maglev(&hs, 65537)] {
        let ctx = LbContext {
            hash: Some(12345),
            ..LbContext::default()
        };
        let first = b.choose_attempt(&hs, &ctx, 0).unwrap();
        let moved = (1..10).any(|a| b.choose_attempt(&hs, &ctx, a).unwrap() != first);
        assert!(moved);
    }
}

/// Fraction of 100k keys whose host changes when one of 100 hosts goes away.
fn disruption(build: impl Fn(&[Arc<Host>]) -> Balancer) -> (f64, f64) {
    let all = hosts(&[1; 100]);
    let removed = all[37].id;
    let fewer: Vec<_> = all.iter().filter(|h| h.id != removed).cloned().collect();
    let (a, b) = (build(&all), build(&fewer));
    let (mut moved, mut on_removed) = (0u32, 0u32);
    for k in 0..100_000u64 {
        let h = xxhash64(format!("user-{k}").as_bytes());
        let before = all[pick(&a, &all, h)].id;
        let after = fewer[pick(&b, &fewer, h)].id;
        if before == removed {
            on_removed += 1;
        }
        if before != after {
            moved += 1;
        }
    }
    (
        f64::from(moved) / 100_000.0,
        f64::from(on_removed) / 100_000.0,
    )
}

#[test]
fn removing_one_host_of_100_moves_about_one_percent_of_keys() {
    let (ring_moved, ring_lost) = disruption(|hs| ring(hs, 1024));
    let (maglev_moved, maglev_lost) = disruption(|hs| maglev(hs, 65537));
    eprintln!(
        "ring hash: {:.3}% moved ({:.3}% were on the removed host); \
         maglev: {:.3}% moved ({:.3}% were on the removed host)",
        ring_moved * 100.0,
        ring_lost * 100.0,
        maglev_moved * 100.0,
        maglev_lost * 100.0
    );
    // A ring loses the removed host's entries; its keys move, plus a few at hosts whose
    // entry count shifts by one as the running float sums of the shares change (Envoy's
    // arithmetic, kept as is).
    assert!(
        ring_moved >= ring_lost && ring_moved - ring_lost < 0.002,
        "{ring_moved}"
    );
    assert!(ring_moved > 0.002 && ring_moved < 0.03, "{ring_moved}");
    // Maglev moves the removed host's keys plus a little churn, far from a reshuffle.
    assert!(maglev_moved >= maglev_lost, "{maglev_moved}");
    assert!(maglev_moved < 0.03, "{maglev_moved}");
}

#[test]
fn murmur_ring_differs_but_is_consistent() {
    let hs = hosts(&[1, 1, 1]);
    let spec = RingHashSpec {
        hash_function: RingHashFunction::MurmurHash2,
        ..RingHashSpec::default()
    };
    let b = Balancer::build(&LbPolicy::RingHash(spec), &hs, 1);
    for k in 0..100u64 {
        assert_eq!(pick(&b, &hs, k * 7919), pick(&b, &hs, k * 7919));
    }
}

/// Hosts chosen by real Envoy 1.40 for `x-key: key-0` .. `key-29` (route `hash_policy:
/// header x-key`, so the hash is xxHash64 of the value), over five endpoints
/// 127.0.0.1:28081..28085 with weights 2, 3, 1, 2, 3. Each digit is the last digit of the
/// answering backend's port. Obtained by running Envoy with four clusters over those
/// endpoints (RING_HASH default; RING_HASH MURMUR_HASH_2 with minimum_ring_size 64; MAGLEV
/// default; MAGLEV table_size 13) and echo backends that answer with their port.
const ENVOY_PICKS: &[(&str, &str)] = &[
    ("ring", "535552122521225541524525251224"),
    ("murmur", "234241541554254154424252234545"),
    ("maglev", "223412525153211451522453515113"),
    ("small", "152531131144225231512441422121"),
];

#[test]
fn ring_hash_and_maglev_pick_what_envoy_picks() {
    let hs: Vec<_> = [(28081, 2), (28082, 3), (28083, 1), (28084, 2), (28085, 3)]
        .iter()
        .map(|(p, w)| host(&format!("127.0.0.1:{p}"), *w))
        .collect();
    for (cluster, want) in ENVOY_PICKS {
        let policy = match *cluster {
            "ring" => LbPolicy::RingHash(RingHashSpec::default()),
            "murmur" => LbPolicy::RingHash(RingHashSpec {
                hash_function: RingHashFunction::MurmurHash2,
                minimum_ring_size: 64,
                ..RingHashSpec::default()
            }),
            "maglev" => LbPolicy::Maglev(MaglevSpec::default()),
            _ => LbPolicy::Maglev(MaglevSpec {
                table_size: 13,
                use_hostname_for_hashing: false,
            }),
        };
        let b = Balancer::build(&policy, &hs, 1);
        let got: String = (0..want.len())
            .map(|i| {
                let h = xxhash64(format!("key-{i}").as_bytes());
                let port = hs[pick(&b, &hs, h)].address.port();
                char::from(b'0' + (port % 10) as u8)
            })
            .collect();
        assert_eq!(&got, want, "{cluster}");
    }
}
