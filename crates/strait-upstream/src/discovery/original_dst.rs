//! ORIGINAL_DST: a host per original destination, created by the worker that first needs
//! it and removed by the control thread once a whole `cleanup_interval` passed without a
//! pick and without a connection to it.
//!
//! Workers look hosts up in an immutable map swapped with arc-swap (no lock). A worker that
//! finds no host creates one, uses it at once and sends it to the control task over a
//! channel; the control task adds it to the map and to the cluster's host set. Two workers
//! racing on a new destination may each create a host; the control task keeps the first.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use arc_swap::ArcSwap;
use http::HeaderMap;
use strait_config::model::{EndpointSpec, OriginalDstSpec};
use tokio::sync::mpsc;

use crate::Cluster;
use crate::host::Host;

#[derive(Debug, Clone)]
struct Entry {
    host: Arc<Host>,
    /// Picked since the last cleanup.
    used: Arc<AtomicBool>,
}

type NewHost = (SocketAddr, Arc<Host>);

/// The host map of one ORIGINAL_DST cluster.
#[derive(Debug)]
pub struct OriginalDst {
    pub spec: OriginalDstSpec,
    map: ArcSwap<HashMap<SocketAddr, Entry>>,
    tx: mpsc::UnboundedSender<NewHost>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<NewHost>>>,
}

impl OriginalDst {
    pub fn new(spec: OriginalDstSpec) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        OriginalDst {
            spec,
            map: ArcSwap::from_pointee(HashMap::new()),
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }

    /// The destination a request asks for: the `use_http_header` header when set and
    /// valid (an invalid one counts `original_dst_host_invalid`), otherwise the downstream
    /// connection's original destination when a listener filter restored it (Strait has no
    /// such filter yet, so pass `None`). `upstream_port_override` replaces the port.
    pub fn destination(
        &self,
        cluster: &Cluster,
        headers: &HeaderMap,
        restored_local: Option<SocketAddr>,
    ) -> Option<SocketAddr> {
        let mut dst = None;
        if self.spec.use_http_header
            && let Some(v) = headers.get(self.spec.header_name.as_str())
        {
            match v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse::<SocketAddr>().ok())
            {
                Some(a) => dst = Some(a),
                None => cluster.discovery.stats.original_dst_host_invalid.inc(),
            }
        }
        let mut dst = dst.or(restored_local)?;
        if let Some(p) = self.spec.port_override {
            dst.set_port(p);
        }
        Some(dst)
    }

    /// The host for `dst`, created on first use (allocates only then).
    pub fn choose(&self, cluster: &Cluster, dst: SocketAddr) -> Option<Arc<Host>> {
        if let Some(e) = self.map.load().get(&dst) {
            if !e.used.load(Ordering::Relaxed) {
                e.used.store(true, Ordering::Relaxed);
            }
            return Some(e.host.clone());
        }
        let ep = EndpointSpec::at(dst);
        let host = Arc::new(Host::new(&ep, dst, &cluster.discovery.store));
        cluster.stats.default_total_match_count.inc();
        // The control task may be gone (shutdown): the host still serves this request.
        let _ = self.tx.send((dst, host.clone()));
        Some(host)
    }
}

/// Starts the control task that adds new hosts and removes unused ones.
pub fn start(cluster: &Arc<Cluster>) {
    let Some(od) = &cluster.discovery.original_dst else {
        return;
    };
    let Some(rx) = od.rx.lock().unwrap_or_else(PoisonError::into_inner).take() else {
        return;
    };
    tokio::spawn(control(
        Arc::downgrade(cluster),
        rx,
        od.spec.cleanup_interval,
    ));
}

async fn control(
    weak: Weak<Cluster>,
    mut rx: mpsc::UnboundedReceiver<NewHost>,
    cleanup: std::time::Duration,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + cleanup, cleanup);
    loop {
        tokio::select! {
            new = rx.recv() => {
                let Some((addr, host)) = new else { return };
                let Some(c) = weak.upgrade() else { return };
                let Some(od) = &c.discovery.original_dst else { return };
                let mut map = HashMap::clone(&od.map.load());
                if map.contains_key(&addr) {
                    continue;
                }
                map.insert(addr, Entry { host, used: Arc::new(AtomicBool::new(true)) });
                publish(&c, od, map);
            }
            _ = tick.tick() => {
                let Some(c) = weak.upgrade() else { return };
                let Some(od) = &c.discovery.original_dst else { return };
                let current = od.map.load();
                let mut keep = HashMap::with_capacity(current.len());
                for (addr, e) in current.iter() {
                    // Kept while picked since the last sweep or holding connections (in
                    // Envoy 1.40 a host's connection pools keep it in use, idle ones too).
                    let picked = e.used.swap(false, Ordering::Relaxed);
                    if picked || e.host.stats.cx_active.value() > 0 {
                        keep.insert(*addr, e.clone());
                    }
                }
                if keep.len() != current.len() {
                    drop(current);
                    publish(&c, od, keep);
                }
            }
        }
    }
}

fn publish(c: &Cluster, od: &OriginalDst, map: HashMap<SocketAddr, Entry>) {
    let mut hosts: Vec<Arc<Host>> = map.values().map(|e| e.host.clone()).collect();
    hosts.sort_by_key(|h| h.id);
    od.map.store(Arc::new(map));
    c.set_hosts(hosts);
    c.discovery.stats.membership_change.inc();
}
