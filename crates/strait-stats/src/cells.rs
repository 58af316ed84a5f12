//! Per-thread-slot storage for counters and gauges.
//!
//! A *cell group* holds [`CELLS_PER_BLOCK`] stats. For each thread slot it has one
//! 64-byte-aligned block of `AtomicU64`s; a stat owns one index inside the group and
//! therefore one 8-byte cell in every slot's block. A worker thread only ever writes
//! the blocks of its own slot, so two workers never write the same cache line, and a
//! stat costs `8 B × slots` (plus its share of the handle/name metadata).

use std::cell::Cell as StdCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Number of stats that share one group (one block per slot).
pub(crate) const CELLS_PER_BLOCK: usize = 64;

thread_local! {
    static THREAD_SLOT: StdCell<usize> = const { StdCell::new(0) };
}

/// Selects the stats slot used by the calling thread (thread-local).
///
/// Workers call this once at start with `1..=workers`; every other thread keeps the
/// default slot 0. A slot that is out of range for a given [`crate::Store`] (i.e.
/// `>= slots`) is treated as slot 0 by that store.
pub fn set_thread_slot(slot: usize) {
    THREAD_SLOT.with(|s| s.set(slot));
}

/// The slot set by [`set_thread_slot`] for the calling thread (0 if never set).
pub fn thread_slot() -> usize {
    THREAD_SLOT.with(StdCell::get)
}

/// The calling thread's slot, clamped to `0` when it is not below `slots`.
#[inline]
pub(crate) fn current_slot(slots: usize) -> usize {
    let s = THREAD_SLOT.with(StdCell::get);
    if s < slots { s } else { 0 }
}

/// One slot's block of cells: exactly `CELLS_PER_BLOCK × 8` bytes, cache-line aligned.
#[repr(C, align(64))]
pub(crate) struct SlotBlock([AtomicU64; CELLS_PER_BLOCK]);

impl SlotBlock {
    fn new() -> SlotBlock {
        SlotBlock(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

/// A handle on one stat's cells (one per slot).
#[derive(Clone)]
pub(crate) struct Cells {
    /// `group[slot]` is that slot's block. `Arc<[T]>` keeps the refcounts on their own
    /// cache line (the data is 64-byte aligned) and saves one pointer hop.
    group: Arc<[SlotBlock]>,
    idx: usize,
}

impl Cells {
    /// Cells for a handle that is not attached to any store (one private slot).
    pub(crate) fn detached() -> Cells {
        let v: Vec<SlotBlock> = vec![SlotBlock::new()];
        Cells {
            group: Arc::from(v),
            idx: 0,
        }
    }

    /// Adds (wrapping) to the calling thread's slot.
    #[inline]
    pub(crate) fn add(&self, v: u64) {
        let s = current_slot(self.group.len());
        if let Some(block) = self.group.get(s) {
            block.0[self.idx].fetch_add(v, Ordering::Relaxed);
        }
    }

    /// Wrapping sum over all slots (relaxed loads).
    pub(crate) fn sum(&self) -> u64 {
        self.group.iter().fold(0u64, |acc, b| {
            acc.wrapping_add(b.0[self.idx].load(Ordering::Relaxed))
        })
    }

    /// Sum over all slots except slot 0.
    pub(crate) fn sum_except_slot0(&self) -> u64 {
        self.group.iter().skip(1).fold(0u64, |acc, b| {
            acc.wrapping_add(b.0[self.idx].load(Ordering::Relaxed))
        })
    }

    pub(crate) fn store_slot0(&self, v: u64) {
        if let Some(b) = self.group.first() {
            b.0[self.idx].store(v, Ordering::Relaxed);
        }
    }

    /// Zeroes every slot.
    pub(crate) fn reset(&self) {
        for b in self.group.iter() {
            b.0[self.idx].store(0, Ordering::Relaxed);
        }
    }
}

/// Hands out cells; takes a lock, so only call at stat creation (config) time.
pub(crate) struct CellArena {
    slots: usize,
    state: Mutex<ArenaState>,
}

struct ArenaState {
    group: Arc<[SlotBlock]>,
    next: usize,
}

fn new_group(slots: usize) -> Arc<[SlotBlock]> {
    let v: Vec<SlotBlock> = (0..slots).map(|_| SlotBlock::new()).collect();
    Arc::from(v)
}

impl CellArena {
    pub(crate) fn new(slots: usize) -> CellArena {
        CellArena {
            slots,
            state: Mutex::new(ArenaState {
                group: new_group(slots),
                next: 0,
            }),
        }
    }

    pub(crate) fn allocate(&self) -> Cells {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.next == CELLS_PER_BLOCK {
            st.group = new_group(self.slots);
            st.next = 0;
        }
        let idx = st.next;
        st.next += 1;
        Cells {
            group: st.group.clone(),
            idx,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_is_cache_line_sized_and_aligned() {
        assert_eq!(std::mem::align_of::<SlotBlock>(), 64);
        assert_eq!(std::mem::size_of::<SlotBlock>(), CELLS_PER_BLOCK * 8);
        let arena = CellArena::new(3);
        let c = arena.allocate();
        for b in c.group.iter() {
            assert_eq!((b as *const SlotBlock as usize) % 64, 0);
        }
    }

    #[test]
    fn arena_rolls_over_to_new_group() {
        let arena = CellArena::new(2);
        let cells: Vec<Cells> = (0..CELLS_PER_BLOCK + 3).map(|_| arena.allocate()).collect();
        for (i, c) in cells.iter().enumerate() {
            c.add(i as u64);
        }
        for (i, c) in cells.iter().enumerate() {
            assert_eq!(c.sum(), i as u64);
        }
    }
}
