//! What the hash-based balancers share: Envoy's hash functions, the key a host is hashed
//! by, normalized host weights, and a cheap per-thread random source for picks that need
//! randomness (no lock, no allocation).

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use crate::host::Host;

/// Envoy's `HashUtil::xxHash64` (XXH64, seed 0): ring entries, Maglev offsets and the
/// route `hash_policy` results all use it.
pub fn xxhash64(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh64::xxh64(bytes, 0)
}

/// XXH64 with a seed (Maglev's skip uses seed 1).
pub fn xxhash64_seeded(bytes: &[u8], seed: u64) -> u64 {
    xxhash_rust::xxh64::xxh64(bytes, seed)
}

/// Seed of Envoy's `MurmurHash::murmurHash2` (that of libstdc++'s `std::hash<string>`).
pub const MURMUR_SEED: u64 = 0xc70f_6907;

/// The 64-bit MurmurHash2 variant of libstdc++'s `_Hash_bytes`, which Envoy's ring hash
/// uses for `MURMUR_HASH_2`: 8-byte little-endian blocks, then the tail as one
/// little-endian partial word.
pub fn murmur2_64(key: &[u8], seed: u64) -> u64 {
    const MUL: u64 = 0xc6a4_a793_5bd1_e995;
    let shift_mix = |v: u64| v ^ (v >> 47);
    let len = key.len() as u64;
    let mut hash = seed ^ len.wrapping_mul(MUL);
    let mut blocks = key.chunks_exact(8);
    for b in &mut blocks {
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        let data = shift_mix(u64::from_le_bytes(w).wrapping_mul(MUL)).wrapping_mul(MUL);
        hash ^= data;
        hash = hash.wrapping_mul(MUL);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let data = tail
            .iter()
            .rev()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        hash ^= data;
        hash = hash.wrapping_mul(MUL);
    }
    hash = shift_mix(hash).wrapping_mul(MUL);
    shift_mix(hash)
}

/// The text a host is placed on a ring or table by: its `ip:port` (Envoy's
/// `address()->asString()`) or, with `use_hostname_for_hashing`, its hostname.
pub fn host_key(host: &Host, use_hostname: bool) -> String {
    if use_hostname {
        host.hostname.clone()
    } else {
        host.address.to_string()
    }
}

/// Each host's weight over the sum of weights, with the smallest and largest (Envoy's
/// `normalizeHostWeights` without locality weighting: the same arithmetic, so the same
/// ring and table).
pub fn normalized_weights(hosts: &[Arc<Host>]) -> (Vec<f64>, f64, f64) {
    let sum: u64 = hosts.iter().map(|h| u64::from(h.weight)).sum();
    let mut min = 1.0f64;
    let mut max = 0.0f64;
    let weights = hosts
        .iter()
        .map(|h| {
            let w = f64::from(h.weight) * 1.0 / sum as f64;
            min = min.min(w);
            max = max.max(w);
            w
        })
        .collect();
    (weights, min, max)
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(RandomState::new().build_hasher().finish() | 1);
}

/// A uniformly random `u64` from a per-thread xorshift64* generator seeded from the OS's
/// randomness. Enough for spreading load; not for anything secret.
#[inline]
pub fn random_u64() -> u64 {
    RNG.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xxhash_matches_reference_vectors() {
        // XXH64 reference values (seed 0).
        assert_eq!(xxhash64(b""), 0xef46_db37_51d8_e999);
        assert_eq!(xxhash64(b"a"), 0xd24e_c4f1_a98c_6e5b);
    }

    #[test]
    fn murmur2_matches_libstdcxx_std_hash() {
        // `std::hash<std::string>` of GCC's libstdc++ on x86-64 (the function Envoy's
        // MURMUR_HASH_2 ring uses), computed with g++ 12 for these strings.
        for (s, want) in MURMUR_VECTORS {
            assert_eq!(murmur2_64(s.as_bytes(), MURMUR_SEED), *want, "{s:?}");
        }
    }

    const MURMUR_VECTORS: &[(&str, u64)] = &[
        ("", 0x553e_9390_1e46_2a6e),
        ("a", 0x454d_dee4_88c1_ed6b),
        ("foo", 0x85a8_e535_edf1_1e5a),
        ("127.0.0.1:8080_0", 0xde6d_9b15_4853_8b53),
        ("127.0.0.1:18081_17", 0x1c97_adfc_c0cb_471d),
        ("hello world, this is longer", 0x1b18_7e7c_c924_9baf),
        ("12345678", 0x8c5b_90a3_3a04_dca5),
    ];

    #[test]
    fn random_covers_small_ranges() {
        let mut seen = [false; 7];
        for _ in 0..1000 {
            seen[(random_u64() % 7) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
