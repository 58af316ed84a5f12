//! `%UNIQUE_ID%`: a random (version 4) UUID per rendered line, like Envoy's
//! `Random::RandomUtility::uuid()`. Not cryptographic: a per-thread xoshiro256** generator
//! seeded from the OS (`getrandom`), falling back to time and address entropy.

use std::cell::Cell;

thread_local! {
    static RNG: Cell<[u64; 4]> = Cell::new(seed());
}

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn seed() -> [u64; 4] {
    let mut buf = [0u8; 32];
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    let mut x: u64 = if n == buf.len() as isize {
        buf.chunks_exact(8).fold(0u64, |acc, c| {
            acc.rotate_left(17)
                ^ u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
        })
    } else {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        t ^ (&buf as *const _ as u64).rotate_left(32)
    };
    [
        splitmix(&mut x),
        splitmix(&mut x),
        splitmix(&mut x),
        splitmix(&mut x),
    ]
}

fn next(s: &mut [u64; 4]) -> u64 {
    let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
    let t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = s[3].rotate_left(45);
    result
}

/// Appends a lowercase RFC 4122 version-4 UUID (`xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`).
pub(crate) fn write_v4(out: &mut Vec<u8>) {
    let (hi, lo) = RNG.with(|c| {
        let mut s = c.get();
        let r = (next(&mut s), next(&mut s));
        c.set(s);
        r
    });
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&hi.to_be_bytes());
    bytes[8..].copy_from_slice(&lo.to_be_bytes());
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push(b'-');
        }
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 0xf) as usize]);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shape_and_uniqueness() {
        let mut a = Vec::new();
        super::write_v4(&mut a);
        let mut b = Vec::new();
        super::write_v4(&mut b);
        assert_ne!(a, b);
        let s = String::from_utf8(a).unwrap_or_default();
        assert_eq!(s.len(), 36);
        let parts: Vec<&str> = s.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            vec![8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'));
        assert!(matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'));
        assert!(
            s.bytes()
                .all(|c| c == b'-' || c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
    }
}
