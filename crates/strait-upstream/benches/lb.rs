//! Cost of one host pick per algorithm (10 and 10,000 hosts) and of building a ring hash
//! ring / Maglev table for 10,000 hosts. Figures are recorded in docs/load-balancing.md.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use strait_config::cluster::lb::{LeastRequestSpec, MaglevSpec, RingHashSpec};
use strait_config::model::{EndpointSpec, LbPolicy};
use strait_stats::Store;
use strait_upstream::Host;
use strait_upstream::lb::{Balancer, LbContext, xxhash64};

fn hosts(n: usize, weighted: bool) -> Vec<Arc<Host>> {
    let store = Store::new(1);
    (0..n)
        .map(|i| {
            let ip = Ipv4Addr::from(0x0a00_0000u32 + i as u32 + 1);
            let address = SocketAddr::new(ip.into(), 8080);
            let spec = EndpointSpec {
                weight: if weighted { 1 + (i % 5) as u32 } else { 1 },
                ..EndpointSpec::at(address)
            };
            Arc::new(Host::new(&spec, address, &store))
        })
        .collect()
}

fn policies() -> Vec<(&'static str, LbPolicy, bool)> {
    vec![
        ("round_robin", LbPolicy::RoundRobin, false),
        ("round_robin_weighted", LbPolicy::RoundRobin, true),
        (
            "least_request",
            LbPolicy::LeastRequest(LeastRequestSpec::default()),
            false,
        ),
        (
            "least_request_weighted",
            LbPolicy::LeastRequest(LeastRequestSpec::default()),
            true,
        ),
        ("random", LbPolicy::Random, false),
        (
            "ring_hash",
            LbPolicy::RingHash(RingHashSpec::default()),
            false,
        ),
        ("maglev", LbPolicy::Maglev(MaglevSpec::default()), false),
    ]
}

fn pick(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick");
    for n in [10usize, 10_000] {
        for (name, policy, weighted) in policies() {
            let hs = hosts(n, weighted);
            let b = Balancer::build(&policy, &hs, 1);
            let mut key = 0u64;
            g.bench_function(format!("{name}/{n}"), |bench| {
                bench.iter(|| {
                    key = key.wrapping_add(1);
                    let ctx = LbContext {
                        hash: Some(xxhash64(&key.to_le_bytes())),
                        ..LbContext::default()
                    };
                    black_box(b.choose(&hs, &ctx))
                })
            });
        }
    }
    g.finish();
}

fn build(c: &mut Criterion) {
    let mut g = c.benchmark_group("build_10000_hosts");
    g.sample_size(10);
    let hs = hosts(10_000, false);
    g.bench_function("ring_hash", |bench| {
        bench.iter(|| Balancer::build(&LbPolicy::RingHash(RingHashSpec::default()), &hs, 1))
    });
    g.bench_function("maglev", |bench| {
        bench.iter(|| Balancer::build(&LbPolicy::Maglev(MaglevSpec::default()), &hs, 1))
    });
    let weighted = hosts(10_000, true);
    g.bench_function("least_request_weighted_8_slots", |bench| {
        bench.iter(|| {
            Balancer::build(
                &LbPolicy::LeastRequest(LeastRequestSpec::default()),
                &weighted,
                8,
            )
        })
    });
    g.finish();
}

criterion_group!(benches, pick, build);
criterion_main!(benches);
