//! `RING_HASH`: Envoy's ketama-style consistent hash ring.
//!
//! Each host gets a share of ring entries proportional to its normalized weight, scaled so
//! the lightest host gets a whole number of entries (at least `minimum_ring_size` in all,
//! at most `maximum_ring_size`). Entry `i` of a host is the hash of `"<key>_<i>"` (the key
//! is `ip:port` or the hostname), with xxHash64 or MurmurHash2 as configured, so the ring
//! is the one Envoy builds for the same hosts. A request's hash picks the first entry at or
//! after it, wrapping to the start.

use std::io::Write;
use std::sync::Arc;

use strait_config::cluster::lb::{RingHashFunction, RingHashSpec};

use super::hash::{MURMUR_SEED, host_key, murmur2_64, normalized_weights, xxhash64};
use crate::host::Host;

#[derive(Debug)]
pub struct RingHash {
    /// Entry hashes in ascending order (searched on their own: dense, cache-friendly).
    hashes: Box<[u64]>,
    /// `hosts[i]` is the host index of entry `i`.
    hosts: Box<[u32]>,
}

impl RingHash {
    pub fn new(hosts: &[Arc<Host>], spec: &RingHashSpec) -> Self {
        let mut ring = build_entries(hosts, spec);
        ring.sort_unstable();
        RingHash {
            hashes: ring.iter().map(|e| e.0).collect(),
            hosts: ring.iter().map(|e| e.1).collect(),
        }
    }

    /// The host for `hash`; attempt `n > 0` (a host-selection retry) takes the entry `n`
    /// places further on, as Envoy does.
    pub fn choose(&self, hash: u64, attempt: u32) -> Option<usize> {
        if self.hashes.is_empty() {
            return None;
        }
        let mut i = self.hashes.partition_point(|h| *h < hash);
        if i == self.hashes.len() {
            i = 0;
        }
        if attempt > 0 {
            i = (i + attempt as usize) % self.hashes.len();
        }
        Some(self.hosts[i] as usize)
    }

    /// Number of ring entries.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }
}

fn build_entries(hosts: &[Arc<Host>], spec: &RingHashSpec) -> Vec<(u64, u32)> {
    if hosts.is_empty() {
        return Vec::new();
    }
    let (weights, min_w, _) = normalized_weights(hosts);
    // Scale so the lightest host gets a whole number of entries, capped by the maximum.
    let scale =
        ((min_w * spec.minimum_ring_size as f64).ceil() / min_w).min(spec.maximum_ring_size as f64);
    let mut ring = Vec::with_capacity(scale.ceil() as usize);
    let mut key = Vec::with_capacity(64);
    // Running sums across hosts, so fractional shares add up to whole entries overall.
    let mut current = 0.0f64;
    let mut target = 0.0f64;
    for (idx, (host, w)) in hosts.iter().zip(&weights).enumerate() {
        key.clear();
        key.extend_from_slice(host_key(host, spec.use_hostname_for_hashing).as_bytes());
        key.push(b'_');
        let base = key.len();
        target += scale * w;
        let mut i = 0u64;
        while current < target {
            key.truncate(base);
            // Writing to a Vec cannot fail.
            let _ = write!(key, "{i}");
            let h = match spec.hash_function {
                RingHashFunction::XxHash => xxhash64(&key),
                RingHashFunction::MurmurHash2 => murmur2_64(&key, MURMUR_SEED),
            };
            ring.push((h, idx as u32));
            i += 1;
            current += 1.0;
        }
    }
    ring
}
