//! `MAGLEV`: the lookup table of Google's Maglev paper (section 3.4), built as Envoy builds
//! it so a key maps to the same host.
//!
//! Hosts are sorted by key (`ip:port` or hostname); each gets a permutation of the table
//! from two hashes of its key (offset = xxHash64(key) mod M, skip = xxHash64(key, seed 1)
//! mod (M-1) + 1) and takes turns claiming its next free slot, a host with weight w taking
//! a turn in w/max_w of the rounds. A request's hash indexes the table directly.

use std::sync::Arc;

use strait_config::cluster::lb::MaglevSpec;

use super::hash::{host_key, normalized_weights, xxhash64, xxhash64_seeded};
use crate::host::Host;

#[derive(Debug)]
pub struct Maglev {
    /// Host index of each table slot (empty when there are no hosts).
    table: Box<[u32]>,
}

struct BuildEntry {
    host: u32,
    offset: u64,
    skip: u64,
    weight: f64,
    target: f64,
    next: u64,
}

impl Maglev {
    pub fn new(hosts: &[Arc<Host>], spec: &MaglevSpec) -> Self {
        Maglev {
            table: build_table(hosts, spec.table_size, spec.use_hostname_for_hashing),
        }
    }

    /// The host for `hash`; attempt `n > 0` (a host-selection retry) flips most bits of
    /// the hash, as Envoy does, to land far away in the table.
    pub fn choose(&self, hash: u64, attempt: u32) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let mut h = hash;
        if attempt > 0 {
            h ^= (!0u64).wrapping_sub(u64::from(attempt)).wrapping_add(1);
        }
        Some(self.table[(h % self.table.len() as u64) as usize] as usize)
    }

    /// Slots held by each host index (for tests and stats).
    pub fn entries_per_host(&self, hosts: usize) -> Vec<u64> {
        let mut n = vec![0u64; hosts];
        for h in self.table.iter() {
            if let Some(c) = n.get_mut(*h as usize) {
                *c += 1;
            }
        }
        n
    }
}

fn build_table(hosts: &[Arc<Host>], size: u64, use_hostname: bool) -> Box<[u32]> {
    // The config guarantees a prime >= 2; anything else cannot form permutations.
    if hosts.is_empty() || size < 2 {
        return Box::new([]);
    }
    let (weights, _, max_w) = normalized_weights(hosts);
    // The table is filled in host order, so the order must not depend on discovery order.
    let mut keyed: Vec<(String, usize)> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (host_key(h, use_hostname), i))
        .collect();
    keyed.sort();
    let mut entries: Vec<BuildEntry> = keyed
        .iter()
        .map(|(key, i)| BuildEntry {
            host: *i as u32,
            offset: xxhash64(key.as_bytes()) % size,
            skip: xxhash64_seeded(key.as_bytes(), 1) % (size - 1) + 1,
            weight: weights[*i],
            target: 0.0,
            next: 0,
        })
        .collect();
    const EMPTY: u32 = u32::MAX;
    let mut table = vec![EMPTY; size as usize];
    let permutation = |e: &BuildEntry| e.offset.wrapping_add(e.skip.wrapping_mul(e.next)) % size;
    let mut filled = 0u64;
    let mut iteration = 1u32;
    while filled < size {
        for e in entries.iter_mut() {
            if filled >= size {
                break;
            }
            // A host of the largest weight takes a slot every round; one of a third of
            // that weight every third round.
            if f64::from(iteration) * e.weight < e.target {
                continue;
            }
            e.target += max_w;
            let mut c = permutation(e);
            while table[c as usize] != EMPTY {
                e.next += 1;
                c = permutation(e);
            }
            table[c as usize] = e.host;
            e.next += 1;
            filled += 1;
        }
        iteration = iteration.wrapping_add(1);
    }
    table.into_boxed_slice()
}
