//! Envoy's load-balancer stats of a cluster (`cluster.<name>.lb_*`, `membership_excluded`):
//! panic picks, subset picks and subset churn. The zone-aware counters exist (always 0) so
//! `/stats` lists what Envoy lists.

use strait_stats::{Counter, Gauge, Store};

use super::HostSnapshot;

#[derive(Debug)]
pub struct LbStats {
    /// Picks made from a priority level in panic.
    pub lb_healthy_panic: Counter,
    pub lb_subsets_active: Gauge,
    pub lb_subsets_created: Counter,
    pub lb_subsets_removed: Counter,
    /// Picks from the subset a request's `metadata_match` named.
    pub lb_subsets_selected: Counter,
    /// Picks from the cluster-level fallback subset.
    pub lb_subsets_fallback: Counter,
    /// Picks from the `panic_mode_any` subset.
    pub lb_subsets_fallback_panic: Counter,
    pub membership_excluded: Gauge,
    /// Zone-aware routing (not supported: never counted).
    _zone: [Counter; 7],
    /// Envoy keeps one subset load balancer per worker plus one on the main thread, each
    /// counting its subsets: the subset gauges and counters are multiplied by this.
    instances: u64,
    /// `lb_subsets_single_host_per_subset_duplicate`, which Envoy creates only for clusters
    /// with subset load balancing (always 0: `single_host_per_subset` is refused).
    _single_host_duplicate: Option<Gauge>,
}

impl LbStats {
    /// `instances`: the cluster's worker slots (workers + the main thread); `subsets`: the
    /// cluster has `lb_subset_config`.
    pub fn new(store: &Store, cluster: &str, instances: usize, subsets: bool) -> LbStats {
        let c = |n: &str| store.counter(&format!("cluster.{cluster}.{n}"));
        let g = |n: &str| store.gauge(&format!("cluster.{cluster}.{n}"));
        LbStats {
            lb_healthy_panic: c("lb_healthy_panic"),
            lb_subsets_active: g("lb_subsets_active"),
            lb_subsets_created: c("lb_subsets_created"),
            lb_subsets_removed: c("lb_subsets_removed"),
            lb_subsets_selected: c("lb_subsets_selected"),
            lb_subsets_fallback: c("lb_subsets_fallback"),
            lb_subsets_fallback_panic: c("lb_subsets_fallback_panic"),
            membership_excluded: g("membership_excluded"),
            _zone: [
                c("lb_local_cluster_not_ok"),
                c("lb_recalculate_zone_structures"),
                c("lb_zone_cluster_too_small"),
                c("lb_zone_no_capacity_left"),
                c("lb_zone_routing_all_directly"),
                c("lb_zone_routing_cross_zone"),
                c("lb_zone_routing_sampled"),
            ],
            instances: instances.max(1) as u64,
            _single_host_duplicate: subsets
                .then(|| g("lb_subsets_single_host_per_subset_duplicate")),
        }
    }

    /// Accounts for a new snapshot replacing `old` (none at cluster creation): subsets that
    /// appeared or went away, the excluded-host gauge.
    pub fn record_rebuild(&self, old: Option<&HostSnapshot>, new: &HostSnapshot) {
        let before = old.map(|o| o.subset_keys()).unwrap_or_default();
        let after = new.subset_keys();
        let created = after.iter().filter(|k| !before.contains(k)).count() as u64;
        let removed = before.iter().filter(|k| !after.contains(k)).count() as u64;
        let n = self.instances;
        self.lb_subsets_created.add(created * n);
        self.lb_subsets_removed.add(removed * n);
        self.lb_subsets_active.set((after.len() as u64 * n) as i64);
        self.membership_excluded.set(new.excluded as i64);
    }
}
