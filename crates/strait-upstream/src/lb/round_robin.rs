//! `ROUND_ROBIN`: weighted and smooth (a heavy host is not picked many times in a row), with
//! one cursor per worker so workers never contend.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::LbContext;
use crate::host::Host;

/// One worker slot's cursor, on its own cache line.
#[repr(align(64))]
#[derive(Debug, Default)]
struct Cursor(AtomicUsize);

#[derive(Debug)]
pub struct RoundRobin {
    /// Smooth weighted order of host indexes (one entry per host when weights are equal).
    schedule: Vec<u32>,
    cursors: Box<[Cursor]>,
}

impl RoundRobin {
    pub fn new(hosts: &[Arc<Host>], slots: usize) -> Self {
        let schedule =
            smooth_weighted_schedule(&hosts.iter().map(|h| h.weight).collect::<Vec<_>>());
        let cursors = (0..slots.max(1))
            .map(|i| Cursor(AtomicUsize::new(i)))
            .collect();
        RoundRobin { schedule, cursors }
    }

    pub fn choose(&self, _hosts: &[Arc<Host>], _ctx: &LbContext<'_>) -> Option<usize> {
        if self.schedule.is_empty() {
            return None;
        }
        let slot = strait_stats::thread_slot();
        let cursor = &self.cursors[slot % self.cursors.len()].0;
        // Only this worker writes its cursor: a relaxed load/store pair is enough.
        let i = cursor.load(Ordering::Relaxed);
        cursor.store(i.wrapping_add(1), Ordering::Relaxed);
        Some(self.schedule[i % self.schedule.len()] as usize)
    }
}

/// Nginx-style smooth weighted round robin, unrolled into a fixed schedule. Large weight
/// sums are scaled down to keep the schedule under 64 K entries.
fn smooth_weighted_schedule(weights: &[u32]) -> Vec<u32> {
    if weights.is_empty() {
        return Vec::new();
    }
    let first = weights[0];
    if weights.iter().all(|w| *w == first) {
        return (0..weights.len() as u32).collect();
    }
    smooth_schedule(&weights.iter().map(|w| u64::from(*w)).collect::<Vec<_>>())
}

/// The smooth weighted order itself (also used for locality picks): indexes into
/// `weights`, each as often as its weight, spread out; scaled to stay under 64 K entries.
pub(super) fn smooth_schedule(weights: &[u64]) -> Vec<u32> {
    let total: u64 = weights.iter().sum();
    let scale = total.div_ceil(65_536).max(1);
    let w: Vec<i64> = weights
        .iter()
        .map(|x| ((x / scale).max(1)) as i64)
        .collect();
    let total: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..w.len() {
            current[i] += w[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u32);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_schedule_respects_weights() {
        let s = smooth_weighted_schedule(&[5, 1, 1]);
        assert_eq!(s.len(), 7);
        assert_eq!(s.iter().filter(|i| **i == 0).count(), 5);
        // Smooth: the heavy host is not picked five times in a row.
        assert_eq!(s, vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_weighted_schedule(&[1, 1, 1]), vec![0, 1, 2]);
        assert!(smooth_weighted_schedule(&[]).is_empty());
    }

    #[test]
    fn huge_weights_are_scaled() {
        let s = smooth_weighted_schedule(&[1_000_000, 3_000_000]);
        assert!(s.len() <= 65_536);
        let zeros = s.iter().filter(|i| **i == 0).count() as f64;
        assert!((zeros / s.len() as f64 - 0.25).abs() < 0.01);
    }
}
