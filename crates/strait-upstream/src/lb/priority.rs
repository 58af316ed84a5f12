//! Priority levels and panic mode, computed as Envoy computes them.
//!
//! Each level's health is `min(100, overprovisioning_factor x healthy / hosts)` (integer
//! percent; excluded hosts leave the denominator; degraded hosts get their own figure). Load
//! goes to levels in order in proportion to their health, healthy load first, then degraded
//! load, scaled so it adds up to 100. A level is in panic when the cluster is not fully
//! available and its healthy + degraded share is under `healthy_panic_threshold`; a level in
//! panic balances over all of its hosts. When every level is in panic ("total panic") load
//! follows host counts instead.

use std::collections::HashMap;
use std::sync::Arc;

use strait_config::model::{CommonLbSpec, LbPolicy, LocalitySpec};

use super::locality::{LocalityPicker, Pool, effective_locality_weight, random};
use super::{LbContext, LbStats};
use crate::host::{Host, HostHealth};

/// Host counts of one priority level, what the load arithmetic reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LevelHealth {
    /// Every host of the level, excluded ones included.
    pub hosts: u64,
    pub excluded: u64,
    pub healthy: u64,
    pub degraded: u64,
    /// Weight sums of the same sets (`weighted_priority_health`).
    pub weight: u64,
    pub excluded_weight: u64,
    pub healthy_weight: u64,
    pub degraded_weight: u64,
}

impl LevelHealth {
    /// Counts of `n` hosts with weight 1, `healthy` + `degraded` of them available.
    pub fn counts(hosts: u64, healthy: u64, degraded: u64) -> LevelHealth {
        LevelHealth {
            hosts,
            healthy,
            degraded,
            weight: hosts,
            healthy_weight: healthy,
            degraded_weight: degraded,
            ..Default::default()
        }
    }
}

/// Share of traffic per level, healthy and degraded (adding up to 100), and panic flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorityLoad {
    pub healthy: Vec<u32>,
    pub degraded: Vec<u32>,
    pub panic: Vec<bool>,
}

/// Envoy's priority load and panic computation over levels P0, P1, ...
pub fn priority_load(levels: &[LevelHealth], common: &CommonLbSpec) -> PriorityLoad {
    let n = levels.len().max(1);
    let mut health = vec![0u32; n];
    let mut degraded = vec![0u32; n];
    let op = common.overprovisioning_factor as u64;
    for (i, l) in levels.iter().enumerate() {
        let count = l.hosts.saturating_sub(l.excluded);
        if count == 0 {
            continue;
        }
        let (h, d, total) = if common.weighted_priority_health {
            (
                l.healthy_weight,
                l.degraded_weight,
                l.weight.saturating_sub(l.excluded_weight).max(1),
            )
        } else {
            (l.healthy, l.degraded, count)
        };
        health[i] = (op * h / total).min(100) as u32;
        degraded[i] = (op * d / total).min(100) as u32;
    }
    let total: u32 = (health.iter().sum::<u32>() + degraded.iter().sum::<u32>()).min(100);
    let mut load = PriorityLoad {
        healthy: vec![0; n],
        degraded: vec![0; n],
        panic: vec![false; n],
    };
    if total > 0 {
        let (first_healthy, left) = distribute(&mut load.healthy, &health, 100, total);
        let (first_degraded, left) = distribute(&mut load.degraded, &degraded, left, total);
        // Rounding leftovers go to the first available level.
        if left > 0 {
            if let Some(i) = first_healthy {
                load.healthy[i] += left;
            } else if let Some(i) = first_degraded {
                load.degraded[i] += left;
            }
        }
    }
    let threshold = common.healthy_panic_threshold.min(100);
    if threshold == 0 && total == 0 {
        // No panic and nothing available: P0 gets the load and no host is found.
        load.healthy[0] = 100;
        return load;
    }
    for (i, p) in load.panic.iter_mut().enumerate() {
        let l = levels.get(i).copied().unwrap_or_default();
        *p = total != 100 && level_in_panic(&l, threshold);
    }
    if load.panic.iter().all(|p| *p) {
        total_panic_load(levels, &mut load);
    }
    load
}

/// Assigns `total_load` to levels in order, each taking its share of `normalized` (capped by
/// what is left). Returns the first level with any availability and the load left over.
fn distribute(
    out: &mut [u32],
    avail: &[u32],
    mut total_load: u32,
    normalized: u32,
) -> (Option<usize>, u32) {
    let mut first = None;
    for (i, a) in avail.iter().enumerate() {
        if first.is_none() && *a > 0 {
            first = Some(i);
        }
        out[i] = (a * 100 / normalized).min(total_load);
        total_load -= out[i];
    }
    (first, total_load)
}

fn level_in_panic(l: &LevelHealth, threshold: u32) -> bool {
    let count = l.hosts.saturating_sub(l.excluded);
    let pct = |n: u64| {
        if count == 0 {
            0.0
        } else {
            100.0 * n as f64 / count as f64
        }
    };
    pct(l.healthy) + pct(l.degraded) < threshold as f64
}

/// Every level in panic: load in proportion to each level's host count, health ignored.
fn total_panic_load(levels: &[LevelHealth], load: &mut PriorityLoad) {
    let all: u64 = levels.iter().map(|l| l.hosts).sum();
    load.degraded.iter_mut().for_each(|d| *d = 0);
    load.healthy.iter_mut().for_each(|h| *h = 0);
    if all == 0 {
        load.healthy[0] = 100;
        return;
    }
    let mut left = 100u32;
    let mut first = None;
    for (i, l) in levels.iter().enumerate() {
        if first.is_none() && l.hosts > 0 {
            first = Some(i);
        }
        let share = (100 * l.hosts / all) as u32;
        load.healthy[i] = share;
        left -= share;
    }
    if let Some(i) = first {
        load.healthy[i] += left;
    }
}

/// Which level and which of its sources a hash (`1..=100` after `% 100 + 1`) falls in.
pub fn choose_priority(hash: u64, load: &PriorityLoad) -> (usize, bool) {
    let h = (hash % 100 + 1) as u32;
    let mut acc = 0;
    for (i, l) in load.healthy.iter().enumerate() {
        acc += l;
        if h <= acc {
            return (i, false);
        }
    }
    for (i, l) in load.degraded.iter().enumerate() {
        acc += l;
        if h <= acc {
            return (i, true);
        }
    }
    (0, false)
}

/// How locality weights apply to a set of hosts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LocalityWeights<'a> {
    /// No locality weighted balancing.
    Off,
    /// The configured `load_balancing_weight`s.
    Configured,
    /// Configured weights scaled by the share of each locality's hosts present
    /// (`scale_locality_weight` of a subset): hosts per (priority, locality) in the cluster.
    Scaled(&'a HashMap<(u32, &'a LocalitySpec), usize>),
}

/// One priority level's pick sources.
#[derive(Debug)]
struct Level {
    all: Pool,
    healthy: Pool,
    degraded: Pool,
    healthy_localities: Option<LocalityPicker>,
    degraded_localities: Option<LocalityPicker>,
}

/// A full priority-aware load balancer over a set of hosts: the cluster's, or one subset's.
#[derive(Debug)]
pub(crate) struct PrioritySet {
    levels: Vec<Level>,
    pub load: PriorityLoad,
}

impl PrioritySet {
    /// `hosts` in discovery order; `levels` is how many priority levels the cluster has.
    pub fn build(
        hosts: &[Arc<Host>],
        levels: usize,
        policy: &LbPolicy,
        common: &CommonLbSpec,
        weights: LocalityWeights<'_>,
        slots: usize,
    ) -> PrioritySet {
        let levels = levels.max(1);
        let mut per_level: Vec<Vec<Arc<Host>>> = vec![Vec::new(); levels];
        for h in hosts {
            if let Some(v) = per_level.get_mut(h.priority as usize) {
                v.push(h.clone());
            }
        }
        let mut health = Vec::with_capacity(levels);
        let mut built = Vec::with_capacity(levels);
        for (p, level_hosts) in per_level.into_iter().enumerate() {
            let (lh, level) = build_level(p as u32, level_hosts, policy, common, weights, slots);
            health.push(lh);
            built.push(level);
        }
        PrioritySet {
            load: priority_load(&health, common),
            levels: built,
        }
    }

    /// Picks a host: a level by the request hash (or a random number), then the level's
    /// hosts (all of them in panic), by locality first when localities are weighted.
    pub fn choose(&self, ctx: &LbContext<'_>, stats: Option<&LbStats>) -> Option<&Arc<Host>> {
        let hash = ctx.hash.unwrap_or_else(random);
        let (p, degraded) = choose_priority(hash, &self.load);
        let level = self.levels.get(p)?;
        if self.load.panic.get(p).copied().unwrap_or(false) {
            if let Some(s) = stats {
                s.lb_healthy_panic.inc();
            }
            return level.all.choose(ctx);
        }
        let (localities, pool) = if degraded {
            (&level.degraded_localities, &level.degraded)
        } else {
            (&level.healthy_localities, &level.healthy)
        };
        match localities {
            Some(l) => l.choose(ctx),
            None => pool.choose(ctx),
        }
    }

    /// Whether any level is in panic.
    pub fn any_panic(&self) -> bool {
        self.load.panic.iter().any(|p| *p)
    }
}

fn build_level(
    priority: u32,
    hosts: Vec<Arc<Host>>,
    policy: &LbPolicy,
    common: &CommonLbSpec,
    weights: LocalityWeights<'_>,
    slots: usize,
) -> (LevelHealth, Level) {
    let mut lh = LevelHealth::default();
    let mut healthy = Vec::new();
    let mut degraded = Vec::new();
    for h in &hosts {
        let w = h.weight as u64;
        lh.hosts += 1;
        lh.weight += w;
        if h.excluded() {
            lh.excluded += 1;
            lh.excluded_weight += w;
        }
        match h.health() {
            HostHealth::Healthy => {
                lh.healthy += 1;
                lh.healthy_weight += w;
                healthy.push(h.clone());
            }
            HostHealth::Degraded => {
                lh.degraded += 1;
                lh.degraded_weight += w;
                degraded.push(h.clone());
            }
            HostHealth::Unhealthy => {}
        }
    }
    let (healthy_localities, degraded_localities) = match weights {
        LocalityWeights::Off => (None, None),
        _ => (
            locality_picker(
                priority,
                &hosts,
                HostHealth::Healthy,
                policy,
                common,
                weights,
                slots,
            ),
            locality_picker(
                priority,
                &hosts,
                HostHealth::Degraded,
                policy,
                common,
                weights,
                slots,
            ),
        ),
    };
    let level = Level {
        all: Pool::new(hosts, policy, slots),
        healthy: Pool::new(healthy, policy, slots),
        degraded: Pool::new(degraded, policy, slots),
        healthy_localities,
        degraded_localities,
    };
    (lh, level)
}

/// The locality schedule of one level for hosts of one health; `None` without any eligible
/// host or positive effective weight (as Envoy, which then balances over the whole level).
fn locality_picker(
    priority: u32,
    hosts: &[Arc<Host>],
    eligible: HostHealth,
    policy: &LbPolicy,
    common: &CommonLbSpec,
    weights: LocalityWeights<'_>,
    slots: usize,
) -> Option<LocalityPicker> {
    if !hosts.iter().any(|h| h.health() == eligible) {
        return None;
    }
    // Localities in order of first appearance; a locality listed twice keeps its last weight.
    let mut groups: Vec<(Arc<LocalitySpec>, u32, Vec<Arc<Host>>)> = Vec::new();
    for h in hosts {
        match groups.iter_mut().find(|g| g.0 == h.locality) {
            Some(g) => {
                g.1 = h.locality_weight;
                g.2.push(h.clone());
            }
            None => groups.push((h.locality.clone(), h.locality_weight, vec![h.clone()])),
        }
    }
    let weighted = groups
        .into_iter()
        .map(|(locality, weight, group)| {
            let weight = match weights {
                LocalityWeights::Scaled(original) => {
                    let all = original.get(&(priority, &*locality)).copied().unwrap_or(0);
                    if all == 0 {
                        0
                    } else {
                        // Envoy rounds a float here.
                        ((weight as f32 * group.len() as f32) / all as f32).round() as u32
                    }
                }
                _ => weight,
            };
            let excluded = group.iter().filter(|h| h.excluded()).count();
            let ok: Vec<Arc<Host>> = group
                .iter()
                .filter(|h| h.health() == eligible)
                .cloned()
                .collect();
            let w = effective_locality_weight(
                weight,
                ok.len(),
                group.len(),
                excluded,
                common.overprovisioning_factor,
            );
            (w, Pool::new(ok, policy, slots))
        })
        .collect();
    LocalityPicker::build(weighted, slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> CommonLbSpec {
        CommonLbSpec::default()
    }

    fn load(levels: &[(u64, u64)]) -> PriorityLoad {
        let l: Vec<LevelHealth> = levels
            .iter()
            .map(|(n, h)| LevelHealth::counts(*n, *h, 0))
            .collect();
        priority_load(&l, &spec())
    }

    #[test]
    fn two_of_five_healthy_spills_44_percent() {
        // Envoy's docs: P0 40% healthy -> 40 x 1.4 = 56% stays, 44% goes to P1.
        let l = load(&[(5, 2), (5, 5)]);
        assert_eq!(l.healthy, vec![56, 44]);
        assert_eq!(l.degraded, vec![0, 0]);
        assert_eq!(l.panic, vec![false, false]);
    }

    #[test]
    fn envoy_docs_priority_table() {
        // (P0 healthy %, P1 healthy %) -> (P0 load, P1 load), from Envoy's priority docs.
        for (p0, p1, want0, want1) in [
            (100, 100, 100, 0),
            (72, 100, 100, 0),
            (71, 100, 99, 1),
            (50, 100, 70, 30),
            (25, 100, 35, 65),
            (0, 100, 0, 100),
        ] {
            let l = load(&[(100, p0), (100, p1)]);
            assert_eq!(l.healthy, vec![want0, want1], "P0 {p0}% P1 {p1}%");
        }
        // Three levels.
        for (h, want) in [
            ([100, 100, 100], [100, 0, 0]),
            ([72, 72, 100], [100, 0, 0]),
            ([71, 71, 100], [99, 1, 0]),
            ([50, 50, 100], [70, 30, 0]),
            ([25, 100, 100], [35, 65, 0]),
            ([25, 25, 100], [35, 35, 30]),
        ] {
            let l = load(&[(100, h[0]), (100, h[1]), (100, h[2])]);
            assert_eq!(l.healthy, want.to_vec(), "{h:?}");
        }
    }

    #[test]
    fn normalized_when_total_health_under_100() {
        // 25% / 25% / 20% healthy -> health 35/35/28 of 98: 35/35/28 plus the 2 left to P0
        // (with panic off: every level is under the default 50%).
        let levels: Vec<LevelHealth> = [(4, 1), (4, 1), (5, 1)]
            .iter()
            .map(|(n, h)| LevelHealth::counts(*n, *h, 0))
            .collect();
        let c = CommonLbSpec {
            healthy_panic_threshold: 20,
            ..spec()
        };
        let l = priority_load(&levels, &c);
        assert_eq!(l.healthy, vec![37, 35, 28]);
        assert_eq!(l.panic, vec![false; 3]);
        // Default threshold: total panic, load by host count 4 : 4 : 5 (30/30/38 + 2 to P0).
        let l = load(&[(4, 1), (4, 1), (5, 1)]);
        assert_eq!(l.healthy, vec![32, 30, 38]);
    }

    #[test]
    fn degraded_load_comes_after_healthy_load() {
        // Envoy's comment example: health 10/20/10, degraded 20/10/0 ->
        // healthy 16/28/14 (2 of rounding to the first), degraded 28/14/0.
        // With 14 hosts a level: 140 x 1/14 = 10, 140 x 2/14 = 20.
        let lv = |healthy, degraded| LevelHealth {
            hosts: 14,
            healthy,
            degraded,
            ..Default::default()
        };
        // Panic off: these levels would otherwise all be in panic (total panic).
        let c = CommonLbSpec {
            healthy_panic_threshold: 0,
            ..spec()
        };
        let l = priority_load(&[lv(1, 2), lv(2, 1), lv(1, 0)], &c);
        assert_eq!(l.healthy, vec![16, 28, 14]);
        assert_eq!(l.degraded, vec![28, 14, 0]);
        // With the default threshold every level is under 50%: load follows host counts.
        let l = priority_load(&[lv(1, 2), lv(2, 1), lv(1, 0)], &spec());
        assert_eq!(l.panic, vec![true; 3]);
        assert_eq!(l.healthy, vec![34, 33, 33]);
    }

    #[test]
    fn panic_threshold() {
        // 1 of 5 healthy in the only level: 20% < 50% -> panic.
        let l = load(&[(5, 1)]);
        assert_eq!(l.panic, vec![true]);
        assert_eq!(l.healthy, vec![100]);
        // 3 of 5 healthy: 60% -> no panic (total availability 84 < 100 but level is fine).
        assert_eq!(load(&[(5, 3)]).panic, vec![false]);
        // Fully available cluster: never panic, even with a weak level.
        let l = load(&[(5, 1), (5, 5)]);
        assert_eq!(l.panic, vec![false, false]);
        assert_eq!(l.healthy, vec![28, 72]);
        // Threshold 0 disables panic; nothing healthy -> P0 gets the load, no panic.
        let c = CommonLbSpec {
            healthy_panic_threshold: 0,
            ..spec()
        };
        let l = priority_load(&[LevelHealth::counts(3, 0, 0)], &c);
        assert_eq!((l.healthy, l.panic), (vec![100], vec![false]));
    }

    #[test]
    fn total_panic_follows_host_counts() {
        // Nothing healthy anywhere: every level in panic, load by host count (3:1).
        let l = load(&[(3, 0), (1, 0)]);
        assert_eq!(l.panic, vec![true, true]);
        assert_eq!(l.healthy, vec![75, 25]);
        // Both weak: 1/5 and 1/5 -> health 28 + 28 = 56 < 100, both under 50% -> total panic.
        let l = load(&[(5, 1), (5, 1)]);
        assert_eq!(l.healthy, vec![50, 50]);
        // Empty levels take no load.
        let l = load(&[(0, 0), (2, 0)]);
        assert_eq!(l.healthy, vec![0, 100]);
    }

    #[test]
    fn excluded_hosts_leave_the_denominator() {
        // Envoy's docs: P0 {healthy, excluded, excluded}, P1 {healthy, healthy}: all to P0.
        let p0 = LevelHealth {
            hosts: 3,
            excluded: 2,
            healthy: 1,
            weight: 3,
            excluded_weight: 2,
            healthy_weight: 1,
            ..Default::default()
        };
        let l = priority_load(&[p0, LevelHealth::counts(2, 2, 0)], &spec());
        assert_eq!(l.healthy, vec![100, 0]);
    }

    #[test]
    fn overprovisioning_and_weighted_health() {
        let c = CommonLbSpec {
            overprovisioning_factor: 100,
            ..spec()
        };
        let l = priority_load(
            &[LevelHealth::counts(5, 4, 0), LevelHealth::counts(5, 5, 0)],
            &c,
        );
        assert_eq!(l.healthy, vec![80, 20]);
        // Weighted: the healthy host weighs 3 of 4 -> 140 x 3/4 = 105 -> 100.
        let c = CommonLbSpec {
            weighted_priority_health: true,
            ..spec()
        };
        let p0 = LevelHealth {
            hosts: 2,
            healthy: 1,
            weight: 4,
            healthy_weight: 3,
            ..Default::default()
        };
        let l = priority_load(&[p0, LevelHealth::counts(1, 1, 0)], &c);
        assert_eq!(l.healthy, vec![100, 0]);
        // Unweighted the same level is 70%.
        let l = priority_load(&[p0, LevelHealth::counts(1, 1, 0)], &spec());
        assert_eq!(l.healthy, vec![70, 30]);
    }

    #[test]
    fn choose_priority_by_hash() {
        let l = load(&[(5, 2), (5, 5)]);
        // hash % 100 + 1 in 1..=56 -> P0, 57..=100 -> P1.
        assert_eq!(choose_priority(55, &l), (0, false));
        assert_eq!(choose_priority(56, &l), (1, false));
        assert_eq!(choose_priority(99, &l), (1, false));
        let counted = (0..100u64)
            .filter(|h| choose_priority(*h, &l).0 == 0)
            .count();
        assert_eq!(counted, 56);
        let d = PriorityLoad {
            healthy: vec![30, 0],
            degraded: vec![0, 70],
            panic: vec![false; 2],
        };
        assert_eq!(choose_priority(29, &d), (0, false));
        assert_eq!(choose_priority(30, &d), (1, true));
    }
}
