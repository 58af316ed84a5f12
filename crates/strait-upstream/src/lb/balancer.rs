//! The algorithm layer: one `lb_policy` over one list of hosts. Built once per host
//! snapshot (off the workers); choosing takes no lock and allocates nothing.

use std::sync::Arc;

use strait_config::model::LbPolicy;

use super::hash::random_u64;
use super::{LbContext, LeastRequest, Maglev, Random, RingHash, RoundRobin};
use crate::host::Host;

/// One load-balancing algorithm over one list of hosts (indexes into that list).
#[derive(Debug)]
pub enum Balancer {
    RoundRobin(RoundRobin),
    LeastRequest(LeastRequest),
    Random(Random),
    RingHash(RingHash),
    Maglev(Maglev),
}

impl Balancer {
    /// `slots` is the number of worker slots (per-slot state of round robin and weighted
    /// least request).
    pub fn build(policy: &LbPolicy, hosts: &[Arc<Host>], slots: usize) -> Balancer {
        match policy {
            LbPolicy::RoundRobin => Balancer::RoundRobin(RoundRobin::new(hosts, slots)),
            LbPolicy::LeastRequest(s) => Balancer::LeastRequest(LeastRequest::new(hosts, s, slots)),
            LbPolicy::Random => Balancer::Random(Random::new(hosts.len())),
            LbPolicy::RingHash(s) => Balancer::RingHash(RingHash::new(hosts, s)),
            LbPolicy::Maglev(s) => Balancer::Maglev(Maglev::new(hosts, s)),
        }
    }

    /// Index into the `hosts` this balancer was built over.
    pub fn choose(&self, hosts: &[Arc<Host>], ctx: &LbContext<'_>) -> Option<usize> {
        self.choose_attempt(hosts, ctx, ctx.selection_attempt)
    }

    /// [`Balancer::choose`] for host-selection retry `attempt` (0 for the first pick). Hash
    /// balancers move away from the hash's host on later attempts, as Envoy does; the
    /// others simply pick again.
    pub fn choose_attempt(
        &self,
        hosts: &[Arc<Host>],
        ctx: &LbContext<'_>,
        attempt: u32,
    ) -> Option<usize> {
        match self {
            Balancer::RoundRobin(b) => b.choose(hosts, ctx),
            Balancer::LeastRequest(b) => b.choose(hosts),
            Balancer::Random(b) => b.choose(),
            // Without a hash (no `hash_policy`, or none of its parts applied) Envoy uses a
            // random one, which makes these random balancers.
            Balancer::RingHash(b) => b.choose(ctx.hash.unwrap_or_else(random_u64), attempt),
            Balancer::Maglev(b) => b.choose(ctx.hash.unwrap_or_else(random_u64), attempt),
        }
    }

    /// Whether picks depend on `LbContext::hash`.
    pub fn uses_hash(&self) -> bool {
        matches!(self, Balancer::RingHash(_) | Balancer::Maglev(_))
    }
}
