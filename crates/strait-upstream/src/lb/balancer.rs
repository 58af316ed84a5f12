//! The algorithm layer: one `lb_policy` over one list of hosts.

use std::sync::Arc;

use strait_config::model::LbPolicy;

use super::{LbContext, RoundRobin};
use crate::host::Host;

/// One load-balancing algorithm over one list of hosts (indexes into that list).
#[derive(Debug)]
pub enum Balancer {
    RoundRobin(RoundRobin),
}

impl Balancer {
    pub fn build(policy: &LbPolicy, hosts: &[Arc<Host>], slots: usize) -> Balancer {
        match policy {
            LbPolicy::RoundRobin => Balancer::RoundRobin(RoundRobin::new(hosts, slots)),
        }
    }

    /// Index into the `hosts` this balancer was built over.
    pub fn choose(&self, hosts: &[Arc<Host>], ctx: &LbContext<'_>) -> Option<usize> {
        match self {
            Balancer::RoundRobin(b) => b.choose(hosts, ctx),
        }
    }
}
