//! `LEAST_REQUEST`, as Envoy does it.
//!
//! All weights equal: sample `choice_count` hosts at random (with replacement) and keep the
//! one with the fewest active requests, the first sampled winning ties ("power of two
//! choices"); or, with `FULL_SCAN`, the least loaded of all hosts, ties broken at random.
//! Weights differ: an earliest-deadline-first schedule where a host's weight is
//! `weight / (active_requests + 1)^active_request_bias`, computed when the host is put back
//! after being picked (so, as in Envoy, it lags behind load changes by one pick).
//!
//! The schedule is mutable, so each worker slot has its own (Envoy keeps one per worker
//! too). A slot is entered through an uncontended flag: only its worker uses it; should two
//! threads meet on one slot (non-worker threads share slot 0), the loser picks at random
//! instead of waiting.

use std::cell::UnsafeCell;
use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use strait_config::cluster::lb::LeastRequestSpec;

use super::hash::random_u64;
use crate::host::Host;

#[derive(Debug)]
pub struct LeastRequest {
    choice_count: u32,
    full_scan: bool,
    bias: f64,
    /// Per-slot EDF schedules; `None` when all weights are equal (or one host).
    weighted: Option<Box<[EdfSlot]>>,
}

impl LeastRequest {
    pub fn new(hosts: &[Arc<Host>], spec: &LeastRequestSpec, slots: usize) -> Self {
        let equal = hosts.windows(2).all(|w| w[0].weight == w[1].weight);
        let weighted = (!equal && hosts.len() > 1).then(|| {
            (0..slots.max(1))
                .map(|_| EdfSlot::new(hosts, spec.active_request_bias))
                .collect()
        });
        LeastRequest {
            choice_count: spec.choice_count.max(1),
            full_scan: spec.full_scan,
            bias: spec.active_request_bias,
            weighted,
        }
    }

    pub fn choose(&self, hosts: &[Arc<Host>]) -> Option<usize> {
        if hosts.is_empty() {
            return None;
        }
        if let Some(slots) = &self.weighted {
            let slot = &slots[strait_stats::thread_slot() % slots.len()];
            return Some(
                slot.pick(hosts, self.bias)
                    .unwrap_or_else(|| random_index(hosts.len())),
            );
        }
        if self.full_scan {
            return Some(full_scan(hosts));
        }
        let mut best = random_index(hosts.len());
        for _ in 1..self.choice_count {
            let i = random_index(hosts.len());
            if active(&hosts[i]) < active(&hosts[best]) {
                best = i;
            }
        }
        Some(best)
    }
}

fn random_index(n: usize) -> usize {
    (random_u64() % n as u64) as usize
}

fn active(h: &Host) -> u32 {
    h.lb_active_requests.load(Ordering::Relaxed)
}

/// The least loaded host; among equals, each is equally likely (reservoir sampling).
fn full_scan(hosts: &[Arc<Host>]) -> usize {
    let mut best = 0;
    let mut best_active = active(&hosts[0]);
    let mut tied = 1u64;
    for (i, h) in hosts.iter().enumerate().skip(1) {
        let a = active(h);
        if a < best_active {
            best = i;
            best_active = a;
            tied = 1;
        } else if a == best_active {
            tied += 1;
            if random_u64().is_multiple_of(tied) {
                best = i;
            }
        }
    }
    best
}

/// `weight / (active + 1)^bias`: the dynamic weight of a host when weights differ.
fn effective_weight(h: &Host, bias: f64) -> f64 {
    let w = f64::from(h.weight);
    let a = f64::from(active(h)) + 1.0;
    if bias == 1.0 {
        w / a
    } else if bias == 0.0 {
        w
    } else {
        w / a.powf(bias)
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    deadline: f64,
    /// Insertion order: breaks deadline ties first-in first-out.
    seq: u64,
    host: u32,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == CmpOrdering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    // Reversed: `BinaryHeap` is a max-heap and the earliest deadline must come out first.
    fn cmp(&self, o: &Self) -> CmpOrdering {
        o.deadline
            .total_cmp(&self.deadline)
            .then(o.seq.cmp(&self.seq))
    }
}

#[derive(Debug)]
struct EdfState {
    now: f64,
    seq: u64,
    heap: BinaryHeap<Entry>,
}

impl EdfState {
    fn add(&mut self, host: u32, weight: f64) {
        self.seq += 1;
        self.heap.push(Entry {
            deadline: self.now + 1.0 / weight,
            seq: self.seq,
            host,
        });
    }
}

/// One worker slot's schedule, on its own cache lines.
#[repr(align(64))]
#[derive(Debug)]
struct EdfSlot {
    busy: AtomicBool,
    state: UnsafeCell<EdfState>,
}

// SAFETY: `state` is only touched by the thread that set `busy` (see `pick`).
unsafe impl Sync for EdfSlot {}

impl EdfSlot {
    fn new(hosts: &[Arc<Host>], bias: f64) -> Self {
        let mut s = EdfState {
            now: 0.0,
            seq: 0,
            heap: BinaryHeap::with_capacity(hosts.len()),
        };
        for (i, h) in hosts.iter().enumerate() {
            s.add(i as u32, effective_weight(h, bias));
        }
        // Start each slot at a random point of the schedule, so workers are not in step.
        for _ in 0..random_index(hosts.len()) {
            if let Some(e) = s.heap.pop() {
                s.now = e.deadline;
                s.add(e.host, effective_weight(&hosts[e.host as usize], bias));
            }
        }
        EdfSlot {
            busy: AtomicBool::new(false),
            state: UnsafeCell::new(s),
        }
    }

    /// Pops the earliest deadline and puts that host back with its current weight. `None`
    /// when another thread is in this slot. The heap keeps its length, so never allocates.
    fn pick(&self, hosts: &[Arc<Host>], bias: f64) -> Option<usize> {
        if self
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        // SAFETY: `busy` was false and is now ours: no other reference to `state` exists
        // until we store false below.
        let s = unsafe { &mut *self.state.get() };
        let picked = s.heap.pop().map(|e| {
            s.now = e.deadline;
            let w = hosts
                .get(e.host as usize)
                .map_or(1.0, |h| effective_weight(h, bias));
            s.add(e.host, w);
            e.host as usize
        });
        self.busy.store(false, Ordering::Release);
        picked.filter(|i| *i < hosts.len())
    }
}
