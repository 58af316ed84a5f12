//! Load balancing: which host of a cluster gets a request.
//!
//! Layers, as in Envoy. [`HostSnapshot`] is the immutable view of a cluster's hosts that
//! workers read; it is rebuilt off the workers whenever membership or health changes and
//! swapped in atomically. Inside it, subset load balancing (`subset`) picks the hosts a
//! request's `metadata_match` selects; priority levels and panic mode (`priority`) pick a
//! level; locality weighting (`locality`) picks a locality in it; then a [`Balancer`] runs one
//! algorithm (`lb_policy`) over that list of hosts. Choosing a host takes no lock and
//! allocates nothing.

#[cfg(test)]
mod algorithm_tests;
mod balancer;
pub mod hash;
mod least_request;
mod locality;
mod maglev;
mod priority;
mod random;
mod ring_hash;
mod round_robin;
mod stats;
mod subset;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use strait_config::model::{ClusterSpec, MetadataMatch, MetadataValue};

use crate::host::{Host, HostHealth};
pub use balancer::Balancer;
pub use hash::xxhash64;
pub use least_request::LeastRequest;
pub use locality::{effective_locality_weight, weighted_schedule};
pub use maglev::Maglev;
pub use priority::{LevelHealth, PriorityLoad, choose_priority, priority_load};
use priority::{LocalityWeights, PrioritySet};
pub use random::Random;
pub use ring_hash::RingHash;
pub use round_robin::RoundRobin;
pub use stats::LbStats;
use subset::SubsetLb;
pub use subset::SubsetPick;

/// What a request brings to host selection.
#[derive(Debug, Default, Clone, Copy)]
pub struct LbContext<'a> {
    /// The route's `hash_policy` result, for ring hash and Maglev (and priority choice).
    pub hash: Option<u64>,
    /// Ids of the hosts this request already tried (`previous_hosts` retry predicate).
    pub attempted: &'a [u64],
    /// `host_selection_retry_max_attempts`: extra picks while the pick is in `attempted`.
    pub host_selection_retry_max_attempts: u32,
    /// The route's (or weighted cluster's) `metadata_match` `envoy.lb` criteria, for subset
    /// load balancing.
    pub metadata_match: Option<&'a MetadataMatch>,
    /// Which host-selection attempt this pick is (0 first): ring hash and Maglev move off
    /// the hash's host on later attempts, as Envoy does. Set by [`HostSnapshot::choose`].
    pub selection_attempt: u32,
    /// ORIGINAL_DST: the request's original destination ([`crate::Cluster::original_dst`]).
    pub original_dst: Option<std::net::SocketAddr>,
}

/// The hosts of a cluster as workers see them at one moment.
#[derive(Debug)]
pub struct HostSnapshot {
    /// Every host, by priority then discovery (config) order: what `/clusters` shows.
    pub hosts: Vec<Arc<Host>>,
    /// Hosts by health, over all priorities (`membership_healthy`, `membership_degraded`,
    /// `membership_excluded`).
    pub healthy: usize,
    pub degraded: usize,
    pub excluded: usize,
    /// Some priority level of the cluster is in panic (balancing over all its hosts).
    pub panic: bool,
    lb: Layer,
    /// Where picks are counted (`lb_healthy_panic`, `lb_subsets_*`).
    stats: Option<Arc<LbStats>>,
}

#[derive(Debug)]
enum Layer {
    Priority(PrioritySet),
    Subset(SubsetLb),
}

impl HostSnapshot {
    /// Builds every pick structure for `hosts` under the cluster's load-balancing specs
    /// (`lb_policy`, `common_lb_config`, `load_assignment.policy`, `lb_subset_config`).
    pub fn build(mut hosts: Vec<Arc<Host>>, spec: &ClusterSpec, slots: usize) -> HostSnapshot {
        // Envoy lists hosts priority by priority.
        hosts.sort_by_key(|h| h.priority);
        let levels = hosts
            .iter()
            .map(|h| h.priority as usize + 1)
            .max()
            .unwrap_or(1);
        let weights = if spec.common_lb.locality_weighted {
            LocalityWeights::Configured
        } else {
            LocalityWeights::Off
        };
        let main = PrioritySet::build(
            &hosts,
            levels,
            &spec.lb.policy,
            &spec.common_lb,
            weights,
            slots,
        );
        let panic = main.any_panic();
        let lb = match &spec.subset {
            Some(s) => Layer::Subset(SubsetLb::build(&hosts, spec, s, slots)),
            None => Layer::Priority(main),
        };
        HostSnapshot {
            healthy: hosts
                .iter()
                .filter(|h| h.health() == HostHealth::Healthy)
                .count(),
            degraded: hosts
                .iter()
                .filter(|h| h.health() == HostHealth::Degraded)
                .count(),
            excluded: hosts.iter().filter(|h| h.excluded()).count(),
            hosts,
            panic,
            lb,
            stats: None,
        }
    }

    /// Counts this snapshot's picks in `stats` (the cluster's, shared by its snapshots).
    pub fn with_stats(mut self, stats: Arc<LbStats>) -> HostSnapshot {
        self.stats = Some(stats);
        self
    }

    /// The cluster's priority loads and panic flags (`None` with subset load balancing, where
    /// each subset has its own).
    pub fn priority_load(&self) -> Option<&PriorityLoad> {
        match &self.lb {
            Layer::Priority(p) => Some(&p.load),
            Layer::Subset(_) => None,
        }
    }

    /// Subsets built by subset load balancing (`lb_subsets_active`).
    pub fn subsets_active(&self) -> usize {
        match &self.lb {
            Layer::Subset(s) => s.active(),
            Layer::Priority(_) => 0,
        }
    }

    /// The (key, value) pairs of every subset built.
    pub fn subset_keys(&self) -> Vec<&[(String, MetadataValue)]> {
        match &self.lb {
            Layer::Subset(s) => s.keys(),
            Layer::Priority(_) => Vec::new(),
        }
    }

    /// One pick, and what subset load balancing did for it.
    pub fn choose_once(&self, ctx: &LbContext<'_>) -> (Option<&Arc<Host>>, SubsetPick) {
        match &self.lb {
            Layer::Priority(p) => (p.choose(ctx, self.stats.as_deref()), SubsetPick::Other),
            Layer::Subset(s) => s.choose(ctx, self.stats.as_deref()),
        }
    }

    /// Picks a host for a request; with `attempted` hosts, retries the pick up to
    /// `host_selection_retry_max_attempts` times to avoid them, returning the last pick when
    /// every pick was already attempted (as Envoy does).
    pub fn choose(&self, ctx: &LbContext<'_>) -> Option<&Arc<Host>> {
        let mut last = None;
        let extra = if ctx.attempted.is_empty() {
            0
        } else {
            ctx.host_selection_retry_max_attempts
        };
        for attempt in 0..=extra {
            let ctx = LbContext {
                selection_attempt: attempt,
                ..*ctx
            };
            let h = self.choose_once(&ctx).0?;
            if !ctx.attempted.contains(&h.id) {
                return Some(h);
            }
            last = Some(h);
        }
        last
    }
}
