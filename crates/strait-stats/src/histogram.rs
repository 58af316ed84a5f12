//! Lock-free histograms with Envoy's (libcircllhist) log-linear bins and Envoy's
//! statistics (quantiles, Prometheus buckets, sum).
//!
//! Bins: value 0 has its own bin; a value `v >= 1` with `d = floor(log10 v)` falls in
//! the bin whose lower bound is `v` truncated to two significant digits and whose width
//! is `10^(d-1)` (`0.1` for `v < 10`). That is exactly circllhist's
//! `hist_insert_intscale(v, 0)`, so quantiles/sums/bucket counts match Envoy's.
//!
//! Storage: per thread slot, a cache-line-aligned [`HistSlot`] with a zero-bin counter
//! and 20 lazily allocated decades of 90 `AtomicU64` bins (720 B each, allocated on the
//! first value recorded in that decade by that slot). Recording is one relaxed
//! `fetch_add` on the caller's slot.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::StatMeta;
use crate::cells::current_slot;

/// Envoy's `Histogram::PercentScale`: a `Percent` histogram records `fraction × 1e6`.
pub const PERCENT_SCALE: f64 = 1_000_000.0;

/// Quantiles Envoy reports (as fractions).
pub const SUPPORTED_QUANTILES: [f64; 10] =
    [0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1.0];

/// Envoy's default Prometheus bucket upper bounds.
pub const DEFAULT_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

const DECADES: usize = 20; // u64::MAX < 10^20
const BINS_PER_DECADE: usize = 90;
/// Total number of bins (zero bin + 20 decades × 90).
pub(crate) const NUM_BINS: usize = 1 + DECADES * BINS_PER_DECADE;

const POW10_U64: [u64; 20] = {
    let mut t = [1u64; 20];
    let mut i = 1;
    while i < 20 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// Exact `10^e` as f64 for `0 <= e <= 22` (and the same as the C literal `1eN`).
const POW10_F64: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// The unit of a histogram's samples (Envoy's `Histogram::Unit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HistogramUnit {
    #[default]
    Unspecified,
    Milliseconds,
    Microseconds,
    Bytes,
    /// Samples are `fraction × PERCENT_SCALE`; renderings divide by it.
    Percent,
}

/// Bin index of a value (0 = the zero bin).
#[inline]
pub(crate) fn bin_index(v: u64) -> usize {
    if v == 0 {
        return 0;
    }
    let d = v.ilog10() as usize;
    let val = if d == 0 { v * 10 } else { v / POW10_U64[d - 1] };
    1 + d * BINS_PER_DECADE + (val as usize - 10)
}

/// `(lower bound, width)` of a bin, computed like circllhist does.
pub(crate) fn bin_bounds(idx: usize) -> (f64, f64) {
    if idx == 0 {
        return (0.0, 0.0);
    }
    let d = (idx - 1) / BINS_PER_DECADE;
    let val = 10 + (idx - 1) % BINS_PER_DECADE;
    let p = POW10_F64[d];
    ((val as f64 / 10.0) * p, p / 10.0)
}

/// One thread slot's bins.
#[repr(C, align(64))]
struct HistSlot {
    zero: AtomicU64,
    decades: [OnceLock<Box<[AtomicU64; BINS_PER_DECADE]>>; DECADES],
}

impl HistSlot {
    fn new() -> HistSlot {
        HistSlot {
            zero: AtomicU64::new(0),
            decades: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    #[inline]
    fn record(&self, v: u64, n: u64) {
        let idx = bin_index(v);
        if idx == 0 {
            self.zero.fetch_add(n, Ordering::Relaxed);
            return;
        }
        let d = (idx - 1) / BINS_PER_DECADE;
        let off = (idx - 1) % BINS_PER_DECADE;
        if let Some(slot) = self.decades.get(d) {
            let arr = slot.get_or_init(|| Box::new(std::array::from_fn(|_| AtomicU64::new(0))));
            arr[off].fetch_add(n, Ordering::Relaxed);
        }
    }

    fn add_into(&self, acc: &mut [u64]) {
        acc[0] = acc[0].wrapping_add(self.zero.load(Ordering::Relaxed));
        for (d, slot) in self.decades.iter().enumerate() {
            if let Some(arr) = slot.get() {
                let base = 1 + d * BINS_PER_DECADE;
                for (i, c) in arr.iter().enumerate() {
                    acc[base + i] = acc[base + i].wrapping_add(c.load(Ordering::Relaxed));
                }
            }
        }
    }
}

/// Sparse, sorted `(bin index, count)` pairs with non-zero counts.
pub(crate) type Bins = Vec<(u16, u64)>;

#[derive(Default)]
struct FlushState {
    /// Cumulative bins as of the last [`crate::Store::flush_interval`].
    last: Bins,
    /// Bins recorded between the last two flushes.
    interval: Bins,
}

pub(crate) struct HistInner {
    pub(crate) meta: Arc<StatMeta>,
    pub(crate) unit: HistogramUnit,
    used: AtomicBool,
    slots: Box<[HistSlot]>,
    flush: Mutex<FlushState>,
}

impl HistInner {
    pub(crate) fn new(meta: Arc<StatMeta>, unit: HistogramUnit, slots: usize) -> HistInner {
        HistInner {
            meta,
            unit,
            used: AtomicBool::new(false),
            slots: (0..slots.max(1)).map(|_| HistSlot::new()).collect(),
            flush: Mutex::new(FlushState::default()),
        }
    }

    pub(crate) fn used(&self) -> bool {
        self.used.load(Ordering::Relaxed)
    }

    /// Current cumulative bins (sum over slots).
    pub(crate) fn cumulative_bins(&self) -> Bins {
        let mut acc = vec![0u64; NUM_BINS];
        for s in self.slots.iter() {
            s.add_into(&mut acc);
        }
        acc.iter()
            .enumerate()
            .filter(|(_, c)| **c != 0)
            .map(|(i, c)| (i as u16, *c))
            .collect()
    }

    pub(crate) fn interval_bins(&self) -> Bins {
        self.flush
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .interval
            .clone()
    }

    /// Closes an interval: `interval = cumulative now − cumulative at the last flush`.
    pub(crate) fn flush_interval(&self) {
        let cur = self.cumulative_bins();
        let mut st = self.flush.lock().unwrap_or_else(|e| e.into_inner());
        let mut interval = Vec::new();
        let mut j = 0;
        for &(bin, c) in &cur {
            while j < st.last.len() && st.last[j].0 < bin {
                j += 1;
            }
            let prev = match st.last.get(j) {
                Some(&(b, p)) if b == bin => p,
                _ => 0,
            };
            let d = c.saturating_sub(prev);
            if d != 0 {
                interval.push((bin, d));
            }
        }
        st.interval = interval;
        st.last = cur;
    }
}

/// A histogram handle. Cheap to clone; `Default` is a no-op handle.
#[derive(Clone, Default)]
pub struct Histogram {
    pub(crate) inner: Option<Arc<HistInner>>,
}

impl Histogram {
    /// A handle that records nothing and reports no samples.
    pub fn null() -> Histogram {
        Histogram { inner: None }
    }

    /// Records one sample (lock-free; writes only the calling thread's slot).
    #[inline]
    pub fn record(&self, value: u64) {
        self.record_n(value, 1);
    }

    /// Records `count` samples of `value`.
    #[inline]
    pub fn record_n(&self, value: u64, count: u64) {
        if let Some(inner) = &self.inner {
            let s = current_slot(inner.slots.len());
            if let Some(slot) = inner.slots.get(s) {
                slot.record(value, count);
            }
            if !inner.used.load(Ordering::Relaxed) {
                inner.used.store(true, Ordering::Relaxed);
            }
        }
    }

    /// The stat name ("" for a null handle).
    pub fn name(&self) -> &str {
        self.inner.as_ref().map_or("", |i| &i.meta.name)
    }

    /// The unit given at creation.
    pub fn unit(&self) -> HistogramUnit {
        self.inner
            .as_ref()
            .map_or(HistogramUnit::Unspecified, |i| i.unit)
    }

    /// Whether any sample was ever recorded.
    pub fn used(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| i.used())
    }

    /// Statistics over every sample recorded so far (live).
    pub fn cumulative(&self) -> HistogramStatistics {
        match &self.inner {
            Some(i) => HistogramStatistics::compute(&i.cumulative_bins(), i.unit, &DEFAULT_BUCKETS),
            None => HistogramStatistics::compute(&[], HistogramUnit::Unspecified, &DEFAULT_BUCKETS),
        }
    }

    /// Statistics over the last completed flush interval (see
    /// [`crate::Store::flush_interval`]); empty (NaN quantiles) before the first flush.
    pub fn interval(&self) -> HistogramStatistics {
        match &self.inner {
            Some(i) => HistogramStatistics::compute(&i.interval_bins(), i.unit, &DEFAULT_BUCKETS),
            None => HistogramStatistics::compute(&[], HistogramUnit::Unspecified, &DEFAULT_BUCKETS),
        }
    }
}

/// Envoy's `HistogramStatistics`: quantiles, Prometheus buckets, count and sum.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramStatistics {
    /// One value per [`SUPPORTED_QUANTILES`] entry; NaN when there are no samples.
    pub quantiles: [f64; 10],
    /// Upper bounds of the Prometheus buckets (already in the output unit).
    pub bucket_bounds: Vec<f64>,
    /// Cumulative count per bound (Envoy/circllhist "count below, inclusive of the bin").
    pub bucket_counts: Vec<u64>,
    pub sample_count: u64,
    /// Approximate sum (circllhist bin midpoints), as Envoy reports it.
    pub sample_sum: f64,
}

impl HistogramStatistics {
    pub(crate) fn compute(bins: &[(u16, u64)], unit: HistogramUnit, bounds: &[f64]) -> Self {
        let percent = unit == HistogramUnit::Percent;
        let mut quantiles = approx_quantiles(bins, &SUPPORTED_QUANTILES);
        let mut sample_sum = approx_sum(bins);
        if percent {
            for q in quantiles.iter_mut() {
                *q /= PERCENT_SCALE;
            }
            sample_sum /= PERCENT_SCALE;
        }
        let sample_count = bins.iter().fold(0u64, |a, (_, c)| a.saturating_add(*c));
        let bucket_counts = bounds
            .iter()
            .map(|b| count_below_inclusive(bins, if percent { b * PERCENT_SCALE } else { *b }))
            .collect();
        HistogramStatistics {
            quantiles,
            bucket_bounds: bounds.to_vec(),
            bucket_counts,
            sample_count,
            sample_sum,
        }
    }
}

/// circllhist `hist_approx_quantile` (type-1 quantiles, the version Envoy builds with).
fn approx_quantiles(bins: &[(u16, u64)], qs: &[f64; 10]) -> [f64; 10] {
    let mut out = [f64::NAN; 10];
    let total: f64 = bins.iter().map(|(_, c)| *c as f64).sum();
    if total == 0.0 || bins.is_empty() {
        return out;
    }
    for (o, q) in out.iter_mut().zip(qs.iter()) {
        *o = total * q;
    }
    let mut i_b = 0usize;
    let (mut width, mut left, mut lower_cnt, mut upper_cnt) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    let track = |idx: usize, width: &mut f64, left: &mut f64, lo: &mut f64, up: &mut f64| {
        let (l, w) = bin_bounds(bins[idx].0 as usize);
        *width = w;
        *left = l;
        *lo = *up;
        *up = *lo + bins[idx].1 as f64;
    };
    track(0, &mut width, &mut left, &mut lower_cnt, &mut upper_cnt);
    for o in out.iter_mut() {
        let qn = *o;
        while i_b + 1 < bins.len() && upper_cnt < qn {
            i_b += 1;
            track(i_b, &mut width, &mut left, &mut lower_cnt, &mut upper_cnt);
        }
        if width == 0.0 {
            *o = left;
        } else {
            let n = bins[i_b].1;
            let k = (qn - lower_cnt).ceil();
            let denom = n.wrapping_add(1) as f64;
            *o = if k == 0.0 {
                left + 1.0 / denom * width
            } else {
                left + k / denom * width
            };
        }
    }
    out
}

/// circllhist `hist_approx_sum` with its bin "midpoint" (`b + w·b/(b+t)`).
fn approx_sum(bins: &[(u16, u64)]) -> f64 {
    let mut sum = 0.0f64;
    for &(idx, c) in bins {
        let mid = if idx == 0 {
            0.0
        } else {
            let (bottom, interval) = bin_bounds(idx as usize);
            let top = bottom + interval;
            let ratio = bottom / (bottom + top);
            bottom + interval * ratio
        };
        sum += mid * c as f64;
    }
    sum
}

/// A threshold converted to a circllhist bucket, for comparisons with bins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Threshold {
    Nan,
    Negative,
    Zero,
    /// `(exponent, two-digit value)`.
    Positive(i32, i32),
}

fn pow10_f64(e: i32) -> f64 {
    if (0..=22).contains(&e) {
        POW10_F64[e as usize]
    } else {
        // Same value as the C literal `1eN` (correctly rounded parse).
        format!("1e{e}").parse::<f64>().unwrap_or(f64::NAN)
    }
}

/// circllhist `double_to_hist_bucket`.
fn threshold_bucket(d: f64) -> Threshold {
    if d.is_nan() || d.is_infinite() {
        return Threshold::Nan;
    }
    if d == 0.0 {
        return Threshold::Zero;
    }
    if d < 0.0 {
        return Threshold::Negative;
    }
    let mut e = d.log10().floor() as i32;
    while e > -400 && pow10_f64(e) > d {
        e -= 1;
    }
    while e < 400 && pow10_f64(e + 1) <= d {
        e += 1;
    }
    if e > 127 {
        return Threshold::Nan;
    }
    if e < -128 {
        return Threshold::Zero;
    }
    let mut val = ((d / pow10_f64(e)) * 10.0 + 1e-13).floor() as i32;
    if val == 100 {
        if e < 127 {
            val = 10;
            e += 1;
        } else {
            return Threshold::Nan;
        }
    }
    if val == 0 {
        return Threshold::Zero;
    }
    if !(10..100).contains(&val) {
        return Threshold::Nan;
    }
    Threshold::Positive(e, val)
}

fn bin_as_threshold(idx: u16) -> Threshold {
    if idx == 0 {
        return Threshold::Zero;
    }
    let i = idx as usize - 1;
    // Bins of decade d have circllhist exponent d.
    Threshold::Positive(
        (i / BINS_PER_DECADE) as i32,
        (10 + i % BINS_PER_DECADE) as i32,
    )
}

/// circllhist `hist_approx_count_below` (inclusive: counts every bin at or below the
/// bin that contains `threshold`).
fn count_below_inclusive(bins: &[(u16, u64)], threshold: f64) -> u64 {
    let tgt = threshold_bucket(threshold);
    let mut running = 0u64;
    for &(idx, c) in bins {
        if tgt < bin_as_threshold(idx) {
            break;
        }
        running = running.saturating_add(c);
    }
    running
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bins_of(values: &[(u64, u64)]) -> Bins {
        let mut acc = vec![0u64; NUM_BINS];
        for &(v, n) in values {
            acc[bin_index(v)] += n;
        }
        acc.iter()
            .enumerate()
            .filter(|(_, c)| **c != 0)
            .map(|(i, c)| (i as u16, *c))
            .collect()
    }

    #[test]
    fn bin_mapping_matches_circllhist() {
        assert_eq!(bin_bounds(bin_index(1)), (1.0, 0.1));
        assert_eq!(bin_bounds(bin_index(9)), (9.0, 0.1));
        assert_eq!(bin_bounds(bin_index(57)), (57.0, 1.0));
        assert_eq!(bin_bounds(bin_index(573)), (570.0, 10.0));
        assert_eq!(bin_bounds(bin_index(5000)), (5000.0, 100.0));
        assert_eq!(bin_index(u64::MAX), NUM_BINS - 90 + (18 - 10));
        assert!(bin_index(u64::MAX) < NUM_BINS);
        for v in [1u64, 9, 10, 99, 100, 999, 1000, 12345, u64::MAX] {
            let (lo, w) = bin_bounds(bin_index(v));
            assert!(lo <= v as f64 && (v as f64) < lo + w + 1e-9 * lo, "{v}");
        }
    }

    #[test]
    fn quantiles_match_envoy() {
        // Envoy stats_render_test: populateHistogram({200, 300, 300}).
        let s = HistogramStatistics::compute(
            &bins_of(&[(200, 1), (300, 2)]),
            HistogramUnit::Unspecified,
            &DEFAULT_BUCKETS,
        );
        assert_eq!(s.quantiles[0], 205.0);
        assert_eq!(s.quantiles[1], 205.0);
        assert_eq!(format!("{}", s.quantiles[2]), "303.3333333333333");
        assert_eq!(format!("{}", s.quantiles[3]), "306.6666666666667");
        assert_eq!(format!("{}", s.quantiles[9]), "306.6666666666667");
        assert_eq!(s.sample_count, 3);
    }

    #[test]
    fn sums_and_buckets_match_envoy() {
        let b = bins_of(&[
            (50, 1),
            (20, 1),
            (30, 1),
            (70, 1),
            (100, 1),
            (5000, 1),
            (200, 1),
        ]);
        let s = HistogramStatistics::compute(&b, HistogramUnit::Milliseconds, &DEFAULT_BUCKETS);
        assert_eq!(
            s.bucket_counts,
            vec![0, 0, 0, 0, 1, 3, 5, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7]
        );
        assert_eq!(
            crate::fmt::fmt_g(s.sample_sum, 32),
            "5531.1160155998386471765115857124"
        );

        let b = bins_of(&[(1, 100000), (100, 1000000), (1000, 100000000)]);
        let s = HistogramStatistics::compute(&b, HistogramUnit::Unspecified, &DEFAULT_BUCKETS);
        assert_eq!(
            crate::fmt::fmt_g(s.sample_sum, 32),
            "104866771428.571441650390625"
        );
        assert_eq!(s.bucket_counts[1], 100000); // le="1" includes the [1,1.1) bin

        let b = bins_of(&[(250000, 1), (750000, 1), (1250000, 1)]);
        let s = HistogramStatistics::compute(&b, HistogramUnit::Percent, &[0.5, 1.0]);
        assert_eq!(
            crate::fmt::fmt_g(s.sample_sum, 32),
            "2.2578688482015323302221077028662"
        );
        assert_eq!(s.bucket_counts, vec![1, 2]);
    }

    #[test]
    fn empty_and_zero() {
        let s = HistogramStatistics::compute(&[], HistogramUnit::Unspecified, &DEFAULT_BUCKETS);
        assert!(s.quantiles.iter().all(|q| q.is_nan()));
        assert_eq!(s.sample_sum, 0.0);
        let s = HistogramStatistics::compute(
            &bins_of(&[(0, 4)]),
            HistogramUnit::Unspecified,
            &DEFAULT_BUCKETS,
        );
        assert!(s.quantiles.iter().all(|q| *q == 0.0));
        assert_eq!(s.bucket_counts[0], 4);
    }

    #[test]
    fn threshold_buckets() {
        assert!(threshold_bucket(0.5) < bin_as_threshold(bin_index(1) as u16));
        assert!(threshold_bucket(0.5) > Threshold::Zero);
        assert_eq!(
            threshold_bucket(2500.0),
            bin_as_threshold(bin_index(2599) as u16)
        );
        assert_eq!(
            threshold_bucket(1800000.0),
            bin_as_threshold(bin_index(1_800_000) as u16)
        );
        assert_eq!(threshold_bucket(f64::NAN), Threshold::Nan);
    }
}

#[cfg(test)]
mod size_tests {
    #[test]
    fn slot_size() {
        assert_eq!(std::mem::size_of::<super::HistSlot>(), 384);
        assert_eq!(std::mem::align_of::<super::HistSlot>(), 64);
    }
}
