//! `RANDOM`: a uniformly random host. Like Envoy, endpoint weights are not used (only
//! locality weights, which are chosen before this layer).

use super::hash::random_u64;

#[derive(Debug)]
pub struct Random {
    len: usize,
}

impl Random {
    pub fn new(len: usize) -> Self {
        Random { len }
    }

    pub fn choose(&self) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        Some((random_u64() % self.len as u64) as usize)
    }
}
