//! Service discovery: keeps a cluster's host set current. STATIC clusters need nothing;
//! STRICT_DNS and LOGICAL_DNS re-resolve their names ([`dns`]); ORIGINAL_DST creates hosts
//! on demand from the requests' original destinations and removes unused ones
//! ([`original_dst`]). All of it runs on the control thread, never on a worker: a worker
//! only reads the cluster's host snapshot (and, for ORIGINAL_DST, a lock-free map).

pub mod dns;
pub mod original_dst;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use strait_config::model::{ClusterSpec, DiscoverySpec};
use strait_stats::{Counter, Gauge, Store};

use crate::Cluster;

/// Envoy's config-update stats of a cluster (`cluster.<name>.update_*`, ...), present for
/// every cluster type as in Envoy.
#[derive(Debug)]
pub struct DiscoveryStats {
    pub update_attempt: Counter,
    pub update_success: Counter,
    pub update_failure: Counter,
    pub update_empty: Counter,
    pub update_no_rebuild: Counter,
    pub membership_change: Counter,
    pub original_dst_host_invalid: Counter,
    pub version: Gauge,
}

impl DiscoveryStats {
    fn new(store: &Store, cluster: &str) -> Self {
        let c = |n: &str| store.counter(&format!("cluster.{cluster}.{n}"));
        DiscoveryStats {
            update_attempt: c("update_attempt"),
            update_success: c("update_success"),
            update_failure: c("update_failure"),
            update_empty: c("update_empty"),
            update_no_rebuild: c("update_no_rebuild"),
            membership_change: c("membership_change"),
            original_dst_host_invalid: c("original_dst_host_invalid"),
            version: store.gauge(&format!("cluster.{cluster}.version")),
        }
    }
}

/// Whether a cluster has its first host set (Envoy's cluster initialization): DNS
/// clusters once every name had its first answer or failure, others at once.
#[derive(Debug, Default)]
pub struct Init {
    /// Names still waiting for their first resolution.
    remaining: AtomicUsize,
    done: tokio::sync::Notify,
}

impl Init {
    /// One name had its first resolution (or discovery could not start at all: `all`).
    pub(crate) fn complete(&self, all: bool) {
        let before = if all {
            self.remaining.swap(0, Ordering::AcqRel)
        } else {
            self.remaining
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .unwrap_or(0)
        };
        if before <= 1 {
            self.done.notify_waiters();
        }
    }

    pub fn is_done(&self) -> bool {
        self.remaining.load(Ordering::Acquire) == 0
    }

    /// Waits until the cluster is initialized.
    pub async fn wait(&self) {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_done() {
                return;
            }
            notified.await;
        }
    }
}

/// What a cluster's discovery keeps next to the cluster.
#[derive(Debug)]
pub struct DiscoveryState {
    pub stats: DiscoveryStats,
    /// The host map of an ORIGINAL_DST cluster.
    pub original_dst: Option<original_dst::OriginalDst>,
    /// First host set known.
    pub init: Init,
    /// Handles used to create hosts (their stats are not in the store's listing).
    pub(crate) store: Store,
}

impl DiscoveryState {
    pub fn new(spec: &ClusterSpec, store: &Store) -> Self {
        DiscoveryState {
            stats: DiscoveryStats::new(store, &spec.name),
            original_dst: match &spec.discovery {
                DiscoverySpec::OriginalDst(o) => Some(original_dst::OriginalDst::new(o.clone())),
                _ => None,
            },
            init: Init {
                remaining: AtomicUsize::new(spec.discovery.dns().map_or(0, |d| d.targets.len())),
                done: tokio::sync::Notify::new(),
            },
            store: store.clone(),
        }
    }
}

/// Starts discovery for `cluster` on the current (control) runtime, if its type needs it.
pub fn start(cluster: &Arc<Cluster>) {
    match &cluster.spec.discovery {
        DiscoverySpec::Static => {}
        DiscoverySpec::StrictDns(_) | DiscoverySpec::LogicalDns(_) => dns::start(cluster),
        DiscoverySpec::OriginalDst(_) => original_dst::start(cluster),
    }
}
