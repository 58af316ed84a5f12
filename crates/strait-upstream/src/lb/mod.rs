//! Load balancing: which host of a cluster gets a request.
//!
//! Two layers, as in Envoy. [`HostSnapshot`] is the immutable view of a cluster's hosts that
//! workers read (membership, health, priority levels, panic mode); it is rebuilt off the
//! workers whenever membership or health changes and swapped in atomically. Inside it a
//! [`Balancer`] runs one algorithm (`lb_policy`) over one list of hosts. Choosing a host takes
//! no lock and allocates nothing.

mod balancer;
mod round_robin;

use std::sync::Arc;

use strait_config::model::LbSpec;

use crate::host::{Host, HostHealth};
pub use balancer::Balancer;
pub use round_robin::RoundRobin;

/// What a request brings to host selection.
#[derive(Debug, Default, Clone, Copy)]
pub struct LbContext<'a> {
    /// The route's `hash_policy` result, for ring hash and Maglev (and priority choice).
    pub hash: Option<u64>,
    /// Ids of the hosts this request already tried (`previous_hosts` retry predicate).
    pub attempted: &'a [u64],
    /// `host_selection_retry_max_attempts`: extra picks while the pick is in `attempted`.
    pub host_selection_retry_max_attempts: u32,
    /// ORIGINAL_DST: the request's original destination ([`crate::Cluster::original_dst`]).
    pub original_dst: Option<std::net::SocketAddr>,
}

/// The hosts of a cluster as workers see them at one moment.
#[derive(Debug)]
pub struct HostSnapshot {
    /// Every host, in discovery (config) order: what `/clusters` shows.
    pub hosts: Vec<Arc<Host>>,
    /// Hosts requests go to: the healthy ones, or all of them in panic mode.
    targets: Vec<Arc<Host>>,
    balancer: Balancer,
    pub healthy: usize,
    pub degraded: usize,
    /// Fewer healthy hosts than `healthy_panic_threshold`: Envoy then balances over all.
    pub panic: bool,
}

impl HostSnapshot {
    pub fn build(hosts: Vec<Arc<Host>>, lb: &LbSpec, slots: usize) -> HostSnapshot {
        let healthy: Vec<Arc<Host>> = hosts
            .iter()
            .filter(|h| h.health() != HostHealth::Unhealthy)
            .cloned()
            .collect();
        let degraded = healthy
            .iter()
            .filter(|h| h.health() == HostHealth::Degraded)
            .count();
        let percent = if hosts.is_empty() {
            0.0
        } else {
            100.0 * healthy.len() as f64 / hosts.len() as f64
        };
        let panic = !hosts.is_empty() && percent < lb.healthy_panic_threshold;
        let targets = if panic { hosts.clone() } else { healthy };
        let balancer = Balancer::build(&lb.policy, &targets, slots);
        HostSnapshot {
            healthy: targets.len() - degraded,
            degraded,
            hosts,
            targets,
            balancer,
            panic,
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
        for _ in 0..=extra {
            let h = self
                .targets
                .get(self.balancer.choose(&self.targets, ctx)?)?;
            if !ctx.attempted.contains(&h.id) {
                return Some(h);
            }
            last = Some(h);
        }
        last
    }
}
