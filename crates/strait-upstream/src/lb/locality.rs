//! Locality weighted load balancing inside one priority level: a locality is picked by its
//! effective weight (its `load_balancing_weight` times its availability, as Envoy computes
//! it), then a host inside it by the cluster's `lb_policy`. Also the small per-worker
//! primitives the priority layer shares: a smooth weighted schedule, per-worker cursors and a
//! per-thread random number source.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::{Balancer, LbContext};
use crate::host::Host;

/// Hosts and the balancer over them: one pick source (a priority's healthy hosts, one
/// locality's degraded hosts...).
#[derive(Debug)]
pub(crate) struct Pool {
    pub hosts: Vec<Arc<Host>>,
    /// `None` without hosts (no per-worker state is kept for empty sources).
    balancer: Option<Balancer>,
}

impl Pool {
    pub fn new(
        hosts: Vec<Arc<Host>>,
        policy: &strait_config::model::LbPolicy,
        slots: usize,
    ) -> Pool {
        let balancer = (!hosts.is_empty()).then(|| Balancer::build(policy, &hosts, slots));
        Pool { hosts, balancer }
    }

    pub fn choose(&self, ctx: &LbContext<'_>) -> Option<&Arc<Host>> {
        self.hosts
            .get(self.balancer.as_ref()?.choose(&self.hosts, ctx)?)
    }
}

/// Effective weight of a locality: `weight x min(1, overprovisioning x eligible / hosts)`,
/// where `hosts` leaves out excluded hosts (0 when nothing is left).
pub fn effective_locality_weight(
    weight: u32,
    eligible: usize,
    hosts: usize,
    excluded: usize,
    overprovisioning_factor: u32,
) -> f64 {
    let count = hosts.saturating_sub(excluded);
    if count == 0 {
        return 0.0;
    }
    let ratio = eligible as f64 / count as f64;
    weight as f64 * (overprovisioning_factor as f64 / 100.0 * ratio).min(1.0)
}

/// Picks a locality by effective weight, then a host in it.
#[derive(Debug)]
pub(crate) struct LocalityPicker {
    /// Eligible (healthy, or degraded) hosts of each locality with a positive weight.
    pools: Vec<Pool>,
    /// Smooth weighted order of indexes into `pools`.
    schedule: Vec<u32>,
    cursors: Cursors,
}

impl LocalityPicker {
    /// `None` when no locality has a positive effective weight (Envoy then balances over the
    /// whole level).
    pub fn build(weighted: Vec<(f64, Pool)>, slots: usize) -> Option<LocalityPicker> {
        let (weights, pools): (Vec<f64>, Vec<Pool>) =
            weighted.into_iter().filter(|(w, _)| *w > 0.0).unzip();
        if pools.is_empty() {
            return None;
        }
        Some(LocalityPicker {
            schedule: weighted_schedule(&weights),
            pools,
            cursors: Cursors::new(slots),
        })
    }

    pub fn choose(&self, ctx: &LbContext<'_>) -> Option<&Arc<Host>> {
        let i = *self
            .schedule
            .get(self.cursors.next() % self.schedule.len().max(1))?;
        self.pools.get(i as usize)?.choose(ctx)
    }
}

/// One worker slot's cursor, on its own cache line.
#[repr(align(64))]
#[derive(Debug, Default)]
struct Cursor(AtomicUsize);

/// One cursor per worker slot so workers never contend.
#[derive(Debug)]
pub(crate) struct Cursors(Box<[Cursor]>);

impl Cursors {
    pub fn new(slots: usize) -> Cursors {
        Cursors(
            (0..slots.max(1))
                .map(|i| Cursor(AtomicUsize::new(i)))
                .collect(),
        )
    }

    /// This worker's next position.
    pub fn next(&self) -> usize {
        let c = &self.0[strait_stats::thread_slot() % self.0.len()].0;
        // Only this worker writes its cursor: a relaxed load/store pair is enough.
        let i = c.load(Ordering::Relaxed);
        c.store(i.wrapping_add(1), Ordering::Relaxed);
        i
    }
}

/// Smooth weighted round robin over positive real weights, unrolled into a fixed schedule.
/// Whole-number weights are used as they are (reduced by their common divisor); others are
/// scaled to integers with three decimals. The schedule stays under 64 K entries.
pub fn weighted_schedule(weights: &[f64]) -> Vec<u32> {
    if weights.is_empty() {
        return Vec::new();
    }
    let integral = weights.iter().all(|w| (w - w.round()).abs() < 1e-9);
    let mut ints: Vec<u64> = weights
        .iter()
        .map(|w| {
            let v = if integral {
                w.round()
            } else {
                (w * 1000.0).round()
            };
            (v as u64).max(1)
        })
        .collect();
    let g = ints.iter().copied().fold(0, gcd);
    for w in &mut ints {
        *w /= g.max(1);
    }
    super::round_robin::smooth_schedule(&ints)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

static SEED: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);

thread_local! {
    static RNG: Cell<u64> = const { Cell::new(0) };
}

/// A per-thread pseudo-random number (xorshift64*, seeded once per thread): what Envoy's
/// random generator is used for in host selection. No lock, no allocation.
pub fn random() -> u64 {
    RNG.with(|c| {
        let mut x = c.get();
        if x == 0 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            x = splitmix(SEED.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed) ^ nanos) | 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        c.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_weight_follows_envoy() {
        // Weight 10, 1 of 2 hosts healthy: 10 x min(1, 1.4 x 0.5) = 7.
        assert!((effective_locality_weight(10, 1, 2, 0, 140) - 7.0).abs() < 1e-9);
        // Overprovisioning caps at the full weight.
        assert!((effective_locality_weight(10, 4, 5, 0, 140) - 10.0).abs() < 1e-9);
        // Excluded hosts leave the denominator.
        assert!((effective_locality_weight(10, 1, 3, 2, 140) - 10.0).abs() < 1e-9);
        assert_eq!(effective_locality_weight(10, 0, 2, 2, 140), 0.0);
        assert_eq!(effective_locality_weight(0, 2, 2, 0, 140), 0.0);
    }

    #[test]
    fn schedule_follows_weights() {
        let s = weighted_schedule(&[3.0, 1.0]);
        assert_eq!(s.len(), 4);
        assert_eq!(s.iter().filter(|i| **i == 0).count(), 3);
        let s = weighted_schedule(&[7.0, 10.0]);
        assert_eq!(s.len(), 17);
        assert_eq!(s.iter().filter(|i| **i == 0).count(), 7);
        // Real weights: 2.5 : 1 -> 5 : 2.
        let s = weighted_schedule(&[2.5, 1.0]);
        assert_eq!(s.len(), 7);
        assert_eq!(s.iter().filter(|i| **i == 0).count(), 5);
        assert!(weighted_schedule(&[]).is_empty());
    }

    #[test]
    fn random_varies() {
        let a: Vec<u64> = (0..8).map(|_| random()).collect();
        assert!(a.windows(2).any(|w| w[0] != w[1]));
        // Roughly uniform over 1..=100.
        let mut buckets = [0u32; 2];
        for _ in 0..10_000 {
            buckets[((random() % 100) / 50) as usize] += 1;
        }
        assert!(buckets[0] > 4_000 && buckets[1] > 4_000);
    }
}
