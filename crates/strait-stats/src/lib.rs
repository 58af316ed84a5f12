//! # strait-stats — Strait's stats store, with Envoy's names and Envoy's admin renderings
//!
//! ## What this crate owns
//! * The process stats store ([`Store`]): counters, gauges and histograms, created by
//!   name (get-or-create; the same name always yields the same stat).
//! * Envoy's default tag extraction ([`extract_tags`]): the built-in extractors of
//!   Envoy's `well_known_names.cc` (regex and token forms), applied in Envoy's order,
//!   giving the tag-extracted name and the tags used by the Prometheus rendering.
//! * The admin renderings: `GET /stats` ([`Store::render_text`]),
//!   `GET /stats?format=json` ([`Store::render_json`]), `GET /stats/prometheus`
//!   ([`Store::render_prometheus`]), `POST /reset_counters` ([`Store::reset_counters`]),
//!   and the parsing of Envoy's `filter` / `usedonly` / `type` parameters
//!   ([`StatsQuery::from_query_string`]).
//! * Histogram statistics computed exactly as Envoy's libcircllhist does (same bins,
//!   type-1 quantile interpolation, bin-midpoint sums, inclusive bucket counts).
//!
//! ## What it does not own
//! * The HTTP admin listener and routing, content types, `format=` dispatch, and the
//!   periodic timer: the server calls [`Store::flush_interval`] every
//!   `stats_flush_interval` (5 s by default).
//! * Stats sinks (statsd, metrics service, ...), scopes and stat deletion (stats live
//!   as long as the store), text readouts, custom `stats_tags` / `use_all_default_tags:
//!   false`, custom histogram buckets, the `histogram_buckets=`/`hidden=` admin modes,
//!   per-endpoint stats, and HTML output.
//!
//! ## Hot path: no shared lock, no shared written cache line
//! Every stat has one cell per *thread slot*. A worker calls [`set_thread_slot`]`(i)`
//! once at start (`i` in `1..=workers`); every other thread uses slot 0 (so does a
//! thread whose slot is `>=` the store's `slots`). An update is a relaxed `fetch_add`
//! on the caller's own cell; reading sums all slots with relaxed loads. Creating or
//! looking up a stat by name takes a lock — do it at config time and keep the handle.
//!
//! Counter/gauge cells live in *per-slot blocks*: 64 stats share a group made of one
//! 64-byte-aligned block of 64 `AtomicU64` per slot, so each slot's cells for those
//! stats are contiguous and written only by that slot's thread. Cost per counter or
//! gauge: **8 B × slots** for the cells (instead of 64 B × slots with one padded line
//! per stat and slot), plus ~104 B of shared handle state (refcounts, cell reference,
//! "used" flag, name/tag pointers), the name twice (registry key and handle), the
//! tag-extracted name and tag strings, and a B-tree entry. Handles are one pointer
//! (8 B). The "used" flag (for `usedonly`) is written only on the first update, so
//! afterwards it sits on a read-only shared line.
//!
//! Histograms have per slot a cache-line-aligned block (≈384 B: a zero-value bin and
//! 20 lazily allocated decades) and 720 B per decade that the slot actually records
//! into (latencies in ms typically touch 3–5 decades), plus two sparse snapshots kept
//! for the interval statistics (16 B per non-empty bin). Recording is lock-free: one
//! relaxed `fetch_add` (plus a one-time allocation the first time a slot records into a
//! new decade).
//!
//! ## Gauges written with `set`
//! [`Gauge::set`] writes slot 0 with `value − Σ(other slots)`. It is meant for gauges
//! that one non-worker thread owns (e.g. the main thread publishing a size); mixing
//! `set` with concurrent `add`/`sub` from workers is racy, exactly as the arithmetic
//! suggests.
//!
//! ## Example
//! ```
//! use strait_stats::{HistogramUnit, StatsQuery, Store, set_thread_slot};
//!
//! let store = Store::new(2 + 1); // two workers + slot 0
//! let rq = store.counter("cluster.backend.upstream_rq_total"); // config time
//! let t = store.histogram("cluster.backend.upstream_rq_time", HistogramUnit::Milliseconds);
//! std::thread::spawn(move || {
//!     set_thread_slot(1); // worker 1
//!     rq.inc();
//!     t.record(12);
//! })
//! .join()
//! .unwrap();
//! store.flush_interval(); // every stats_flush_interval
//! let q = StatsQuery::from_query_string("usedonly&filter=upstream_rq_total").unwrap();
//! assert_eq!(store.render_text(&q), "cluster.backend.upstream_rq_total: 1\n");
//! assert_eq!(
//!     store.render_prometheus(&q),
//!     "# TYPE envoy_cluster_upstream_rq_total counter\n\
//!      envoy_cluster_upstream_rq_total{envoy_cluster_name=\"backend\"} 1\n"
//! );
//! ```
//!
//! ## Envoy fidelity
//! Envoy-exact: stat names (the store does not alter names), text/JSON/Prometheus
//! layouts, ordering (text/JSON by full name; Prometheus families by tag-extracted
//! name and metrics by full name, both compared token by token as Envoy's symbol table
//! does), `# TYPE` lines once per family, `{}` for untagged Prometheus metrics, label
//! sanitising and escaping, default buckets, number formatting (`fmt` `{}` for the text
//! quantiles, `%.32g` for Prometheus sums and bounds, `to_chars` for JSON doubles),
//! quantile/sum/bucket arithmetic, tag extraction and the query-parameter errors.
//!
//! Deliberate differences: "cumulative" histogram values are live (Envoy shows them as
//! of the last flush) while "interval" values are those of the last completed flush
//! interval; a histogram counts as used as soon as it records (Envoy: after the first
//! flush that saw data); gauges are `i64` internally and print wrapped to `u64` as
//! Envoy's `uint64_t` gauges would.

mod cells;
mod fmt;
mod histogram;
mod query;
mod render;
mod status;
mod tags;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use cells::{set_thread_slot, thread_slot};
pub use fmt::{fmt_g, fmt_json_double, fmt_shortest};
pub use histogram::{
    DEFAULT_BUCKETS, Histogram, HistogramStatistics, HistogramUnit, PERCENT_SCALE,
    SUPPORTED_QUANTILES,
};
pub use query::{StatKind, StatsQuery, parse_query_pairs, percent_decode, query_param};
pub use status::StatusCounters;
pub use tags::{ExtractedName, Tag, TagExtractor, extract_tags};

use cells::{CellArena, Cells};
use histogram::HistInner;

/// A stat's name, tag-extracted name and tags (computed once, at creation).
#[derive(Debug)]
pub(crate) struct StatMeta {
    pub(crate) name: Box<str>,
    pub(crate) tag_extracted_name: Box<str>,
    pub(crate) tags: Vec<Tag>,
}

impl StatMeta {
    fn new(name: &str) -> StatMeta {
        let ex = extract_tags(name);
        StatMeta {
            name: name.into(),
            tag_extracted_name: ex.tag_extracted_name.into_boxed_str(),
            tags: ex.tags,
        }
    }
}

pub(crate) struct ScalarInner {
    pub(crate) meta: StatMeta,
    cells: Cells,
    used: AtomicBool,
}

impl ScalarInner {
    fn new(meta: StatMeta, cells: Cells) -> ScalarInner {
        ScalarInner {
            meta,
            cells,
            used: AtomicBool::new(false),
        }
    }

    #[inline]
    fn add(&self, v: u64) {
        self.cells.add(v);
        self.mark_used();
    }

    #[inline]
    fn mark_used(&self) {
        // Read first: after the first update the line stays shared (no writes).
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
    }

    pub(crate) fn used(&self) -> bool {
        self.used.load(Ordering::Relaxed)
    }

    /// Wrapping sum of all slots.
    pub(crate) fn value_u64(&self) -> u64 {
        self.cells.sum()
    }
}

/// A monotonically increasing counter. Cheap to clone; `Default` is a no-op handle.
#[derive(Clone, Default)]
pub struct Counter {
    inner: Option<Arc<ScalarInner>>,
}

impl Counter {
    /// A handle that counts nothing and reads 0.
    pub fn null() -> Counter {
        Counter { inner: None }
    }

    /// A working counter that belongs to no store (for tests and one-off uses; all
    /// threads share its single slot).
    pub fn detached(name: &str) -> Counter {
        Counter {
            inner: Some(Arc::new(ScalarInner::new(
                StatMeta::new(name),
                Cells::detached(),
            ))),
        }
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    #[inline]
    pub fn add(&self, v: u64) {
        if let Some(i) = &self.inner {
            i.add(v);
        }
    }

    /// Sum over all slots.
    pub fn value(&self) -> u64 {
        self.inner.as_ref().map_or(0, |i| i.cells.sum())
    }

    /// Whether it was ever written (Envoy's "used", for `usedonly`).
    pub fn used(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| i.used())
    }

    /// The stat name ("" for a null handle).
    pub fn name(&self) -> &str {
        self.inner.as_ref().map_or("", |i| &i.meta.name)
    }
}

/// A gauge (signed; summed over slots). Cheap to clone; `Default` is a no-op handle.
#[derive(Clone, Default)]
pub struct Gauge {
    inner: Option<Arc<ScalarInner>>,
}

impl Gauge {
    /// A handle that does nothing and reads 0.
    pub fn null() -> Gauge {
        Gauge { inner: None }
    }

    /// A working gauge that belongs to no store (single shared slot).
    pub fn detached(name: &str) -> Gauge {
        Gauge {
            inner: Some(Arc::new(ScalarInner::new(
                StatMeta::new(name),
                Cells::detached(),
            ))),
        }
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    #[inline]
    pub fn dec(&self) {
        self.sub(1);
    }

    #[inline]
    pub fn add(&self, v: i64) {
        if let Some(i) = &self.inner {
            i.add(v as u64);
        }
    }

    #[inline]
    pub fn sub(&self, v: i64) {
        if let Some(i) = &self.inner {
            i.add(v.wrapping_neg() as u64);
        }
    }

    /// Sets the value by writing slot 0 (`v − Σ other slots`). Intended for gauges
    /// written only from one non-worker thread; see the crate docs.
    pub fn set(&self, v: i64) {
        if let Some(i) = &self.inner {
            let others = i.cells.sum_except_slot0();
            i.cells.store_slot0((v as u64).wrapping_sub(others));
            i.mark_used();
        }
    }

    /// Sum over all slots.
    pub fn value(&self) -> i64 {
        self.inner.as_ref().map_or(0, |i| i.cells.sum() as i64)
    }

    pub fn used(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| i.used())
    }

    pub fn name(&self) -> &str {
        self.inner.as_ref().map_or("", |i| &i.meta.name)
    }
}

#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) counters: BTreeMap<String, Arc<ScalarInner>>,
    pub(crate) gauges: BTreeMap<String, Arc<ScalarInner>>,
    pub(crate) histograms: BTreeMap<String, Arc<HistInner>>,
}

struct StoreInner {
    slots: usize,
    arena: CellArena,
    registry: RwLock<Registry>,
}

/// The stats store. Cheap `Arc` handle; clone it freely.
#[derive(Clone)]
pub struct Store {
    inner: Arc<StoreInner>,
}

impl Default for Store {
    fn default() -> Store {
        Store::new(1)
    }
}

impl Store {
    /// A store with `slots` thread slots (`workers + 1`; 0 is treated as 1).
    pub fn new(slots: usize) -> Store {
        let slots = slots.max(1);
        Store {
            inner: Arc::new(StoreInner {
                slots,
                arena: CellArena::new(slots),
                registry: RwLock::new(Registry::default()),
            }),
        }
    }

    /// Number of thread slots.
    pub fn slots(&self) -> usize {
        self.inner.slots
    }

    fn read(&self) -> RwLockReadGuard<'_, Registry> {
        self.inner
            .registry
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Registry> {
        self.inner
            .registry
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// A per-slot counter that is not listed by the store's renderings (for per-host stats
    /// that `/clusters` shows but `/stats` does not, as in Envoy).
    pub fn unlisted_counter(&self, name: &str) -> Counter {
        Counter {
            inner: Some(Arc::new(ScalarInner::new(
                StatMeta::new(name),
                self.inner.arena.allocate(),
            ))),
        }
    }

    /// A per-slot gauge that is not listed by the store's renderings.
    pub fn unlisted_gauge(&self, name: &str) -> Gauge {
        Gauge {
            inner: Some(Arc::new(ScalarInner::new(
                StatMeta::new(name),
                self.inner.arena.allocate(),
            ))),
        }
    }

    /// Gets or creates the counter `name` (takes a lock: call at config time).
    pub fn counter(&self, name: &str) -> Counter {
        if let Some(c) = self.read().counters.get(name) {
            return Counter {
                inner: Some(c.clone()),
            };
        }
        let meta = StatMeta::new(name);
        let mut reg = self.write();
        let c = reg
            .counters
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(ScalarInner::new(meta, self.inner.arena.allocate())));
        Counter {
            inner: Some(c.clone()),
        }
    }

    /// Gets or creates the gauge `name` (takes a lock: call at config time).
    pub fn gauge(&self, name: &str) -> Gauge {
        if let Some(g) = self.read().gauges.get(name) {
            return Gauge {
                inner: Some(g.clone()),
            };
        }
        let meta = StatMeta::new(name);
        let mut reg = self.write();
        let g = reg
            .gauges
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(ScalarInner::new(meta, self.inner.arena.allocate())));
        Gauge {
            inner: Some(g.clone()),
        }
    }

    /// Gets or creates the histogram `name`. An existing histogram keeps the unit it
    /// was created with.
    pub fn histogram(&self, name: &str, unit: HistogramUnit) -> Histogram {
        if let Some(h) = self.read().histograms.get(name) {
            return Histogram {
                inner: Some(h.clone()),
            };
        }
        let meta = Arc::new(StatMeta::new(name));
        let slots = self.inner.slots;
        let mut reg = self.write();
        let h = reg
            .histograms
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(HistInner::new(meta, unit, slots)));
        Histogram {
            inner: Some(h.clone()),
        }
    }

    /// The value of counter `name`, if it exists.
    pub fn counter_value(&self, name: &str) -> Option<u64> {
        self.read().counters.get(name).map(|c| c.cells.sum())
    }

    /// The value of gauge `name`, if it exists.
    pub fn gauge_value(&self, name: &str) -> Option<i64> {
        self.read().gauges.get(name).map(|g| g.cells.sum() as i64)
    }

    /// The histogram `name`, if it exists.
    pub fn find_histogram(&self, name: &str) -> Option<Histogram> {
        self.read().histograms.get(name).map(|h| Histogram {
            inner: Some(h.clone()),
        })
    }

    /// `(name, value)` of every counter, sorted by name.
    pub fn counters(&self) -> Vec<(String, u64)> {
        self.read()
            .counters
            .iter()
            .map(|(n, c)| (n.clone(), c.cells.sum()))
            .collect()
    }

    /// `(name, value)` of every gauge, sorted by name.
    pub fn gauges(&self) -> Vec<(String, i64)> {
        self.read()
            .gauges
            .iter()
            .map(|(n, g)| (n.clone(), g.cells.sum() as i64))
            .collect()
    }

    /// Names of every histogram, sorted.
    pub fn histogram_names(&self) -> Vec<String> {
        self.read().histograms.keys().cloned().collect()
    }

    /// `POST /reset_counters`: zeroes every counter (the "used" flags stay set, as in
    /// Envoy). Increments racing with the reset may survive it.
    pub fn reset_counters(&self) {
        let counters: Vec<Arc<ScalarInner>> = self.read().counters.values().cloned().collect();
        for c in counters {
            c.cells.reset();
        }
    }

    /// Closes a histogram interval: every histogram's "interval" statistics become the
    /// samples recorded since the previous call. The server calls this every
    /// `stats_flush_interval`.
    pub fn flush_interval(&self) {
        let hs: Vec<Arc<HistInner>> = self.read().histograms.values().cloned().collect();
        for h in hs {
            h.flush_interval();
        }
    }

    /// `GET /stats` (text).
    pub fn render_text(&self, q: &StatsQuery) -> String {
        render::text(&self.read_snapshot(), q)
    }

    /// `GET /stats?format=json`.
    pub fn render_json(&self, q: &StatsQuery) -> String {
        render::json(&self.read_snapshot(), q)
    }

    /// `GET /stats/prometheus` (text exposition format). Like Envoy, this honours
    /// `usedonly` and `filter` (matched against the full stat name) but not `type`.
    pub fn render_prometheus(&self, q: &StatsQuery) -> String {
        render::prometheus(&self.read_snapshot(), q)
    }

    fn read_snapshot(&self) -> render::Snapshot {
        let reg = self.read();
        render::Snapshot {
            counters: reg.counters.values().cloned().collect(),
            gauges: reg.gauges.values().cloned().collect(),
            histograms: reg.histograms.values().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests;

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Counter({}={})", self.name(), self.value())
    }
}

impl std::fmt::Debug for Gauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gauge({}={})", self.name(), self.value())
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Histogram({})", self.name())
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store(slots={})", self.slots())
    }
}
