//! Envoy's admin renderings (`source/server/admin/stats_request.cc`, `stats_render.cc`,
//! `prometheus_stats.cc`).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use crate::fmt::{fmt_g, fmt_json_double, fmt_shortest};
use crate::histogram::{DEFAULT_BUCKETS, HistInner, HistogramStatistics, SUPPORTED_QUANTILES};
use crate::query::{StatKind, StatsQuery};
use crate::{ScalarInner, StatMeta};

/// The stats to render, each list sorted by full name.
pub(crate) struct Snapshot {
    pub(crate) counters: Vec<Arc<ScalarInner>>,
    pub(crate) gauges: Vec<Arc<ScalarInner>>,
    pub(crate) histograms: Vec<Arc<HistInner>>,
}

/// Envoy prints gauges as `uint64_t`: an i64 gauge's bits, wrapped.
fn gauge_u64(g: &ScalarInner) -> u64 {
    g.value_u64()
}

/// Counters and gauges shown by `q`, merged by name (a gauge replaces a counter of the
/// same name, as Envoy's name-keyed map does).
fn scalars(s: &Snapshot, q: &StatsQuery) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for c in &s.counters {
        if q.shows(StatKind::Counters, &c.meta.name, c.used()) {
            m.insert(c.meta.name.to_string(), c.value_u64());
        }
    }
    for g in &s.gauges {
        if q.shows(StatKind::Gauges, &g.meta.name, g.used()) {
            m.insert(g.meta.name.to_string(), gauge_u64(g));
        }
    }
    m
}

fn shown_histograms<'a>(s: &'a Snapshot, q: &StatsQuery) -> Vec<&'a Arc<HistInner>> {
    s.histograms
        .iter()
        .filter(|h| q.shows(StatKind::Histograms, &h.meta.name, h.used()))
        .collect()
}

fn stats_of(h: &HistInner) -> (HistogramStatistics, HistogramStatistics) {
    let interval = HistogramStatistics::compute(&h.interval_bins(), h.unit, &DEFAULT_BUCKETS);
    let cumulative = HistogramStatistics::compute(&h.cumulative_bins(), h.unit, &DEFAULT_BUCKETS);
    (interval, cumulative)
}

/// `GET /stats`.
pub(crate) fn text(s: &Snapshot, q: &StatsQuery) -> String {
    let mut out = String::new();
    for (name, v) in scalars(s, q) {
        let _ = writeln!(out, "{name}: {v}");
    }
    for h in shown_histograms(s, q) {
        if !h.used() {
            let _ = writeln!(out, "{}: No recorded values", h.meta.name);
            continue;
        }
        let (interval, cumulative) = stats_of(h);
        let parts: Vec<String> = SUPPORTED_QUANTILES
            .iter()
            .enumerate()
            .map(|(i, q)| {
                format!(
                    "P{}({},{})",
                    fmt_g(100.0 * q, 6),
                    fmt_shortest(interval.quantiles[i]),
                    fmt_shortest(cumulative.quantiles[i])
                )
            })
            .collect();
        let _ = writeln!(out, "{}: {}", h.meta.name, parts.join(" "));
    }
    out
}

/// JSON string body (without quotes), escaped like a JSON serializer does.
fn json_escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

fn json_number(x: f64) -> String {
    if x.is_nan() {
        "null".to_string()
    } else {
        fmt_json_double(x)
    }
}

/// `GET /stats?format=json`.
pub(crate) fn json(s: &Snapshot, q: &StatsQuery) -> String {
    let mut out = String::from("{\"stats\":[");
    let mut first = true;
    for (name, v) in scalars(s, q) {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str("{\"name\":\"");
        json_escape(&name, &mut out);
        let _ = write!(out, "\",\"value\":{v}}}");
    }
    let hs = shown_histograms(s, q);
    if !hs.is_empty() {
        if !first {
            out.push(',');
        }
        out.push_str("{\"histograms\":{\"supported_quantiles\":[");
        let sq: Vec<String> = SUPPORTED_QUANTILES
            .iter()
            .map(|q| fmt_json_double(q * 100.0))
            .collect();
        out.push_str(&sq.join(","));
        out.push_str("],\"computed_quantiles\":[");
        for (i, h) in hs.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let (interval, cumulative) = stats_of(h);
            out.push_str("{\"name\":\"");
            json_escape(&h.meta.name, &mut out);
            out.push_str("\",\"values\":[");
            for j in 0..SUPPORTED_QUANTILES.len() {
                if j > 0 {
                    out.push(',');
                }
                let _ = write!(
                    out,
                    "{{\"cumulative\":{},\"interval\":{}}}",
                    json_number(cumulative.quantiles[j]),
                    json_number(interval.quantiles[j])
                );
            }
            out.push_str("]}");
        }
        out.push_str("]}}");
    }
    out.push_str("]}");
    out
}

/// Envoy's `sanitizeName`: every byte outside `[a-zA-Z0-9_]` becomes `_`.
pub(crate) fn prom_sanitize_name(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' {
                b as char
            } else {
                '_'
            }
        })
        .collect()
}

/// Envoy's `sanitizeValue`: escapes `\`, newline and `"`.
fn prom_sanitize_value(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

fn prom_tags(meta: &StatMeta) -> String {
    let mut out = String::new();
    for (i, (k, v)) in meta.tags.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&prom_sanitize_name(k));
        out.push_str("=\"");
        prom_sanitize_value(v, &mut out);
        out.push('"');
    }
    out
}

/// Envoy's symbol-table order: compare `.`-separated tokens lexicographically.
pub(crate) fn token_cmp(a: &str, b: &str) -> Ordering {
    a.split('.').cmp(b.split('.'))
}

/// Sorts into Envoy's Prometheus order: family (tag-extracted name), then full name.
fn prom_sort<T>(items: &mut [(&StatMeta, T)]) {
    items.sort_by(|(a, _), (b, _)| {
        token_cmp(&a.tag_extracted_name, &b.tag_extracted_name)
            .then_with(|| token_cmp(&a.name, &b.name))
    });
}

fn prom_family_header(
    out: &mut String,
    last: &mut Option<String>,
    meta: &StatMeta,
    kind: &str,
) -> String {
    let family = format!("envoy_{}", prom_sanitize_name(&meta.tag_extracted_name));
    if last.as_deref() != Some(&*meta.tag_extracted_name) {
        let _ = writeln!(out, "# TYPE {family} {kind}");
        *last = Some(meta.tag_extracted_name.to_string());
    }
    family
}

fn prom_scalars(out: &mut String, mut items: Vec<(&StatMeta, u64)>, kind: &str) {
    prom_sort(&mut items);
    let mut last = None;
    for (meta, v) in items {
        let family = prom_family_header(out, &mut last, meta, kind);
        let _ = writeln!(out, "{family}{{{}}} {v}", prom_tags(meta));
    }
}

/// `GET /stats/prometheus`.
pub(crate) fn prometheus(s: &Snapshot, q: &StatsQuery) -> String {
    let mut out = String::new();
    let counters: Vec<(&StatMeta, u64)> = s
        .counters
        .iter()
        .filter(|c| q.shows_ignoring_kind(&c.meta.name, c.used()))
        .map(|c| (&c.meta, c.value_u64()))
        .collect();
    prom_scalars(&mut out, counters, "counter");
    let gauges: Vec<(&StatMeta, u64)> = s
        .gauges
        .iter()
        .filter(|g| q.shows_ignoring_kind(&g.meta.name, g.used()))
        .map(|g| (&g.meta, gauge_u64(g)))
        .collect();
    prom_scalars(&mut out, gauges, "gauge");

    let mut hists: Vec<(&StatMeta, &HistInner)> = s
        .histograms
        .iter()
        .filter(|h| q.shows_ignoring_kind(&h.meta.name, h.used()))
        .map(|h| (&*h.meta, &**h))
        .collect();
    prom_sort(&mut hists);
    let mut last = None;
    for (meta, h) in hists {
        let family = prom_family_header(&mut out, &mut last, meta, "histogram");
        let st = HistogramStatistics::compute(&h.cumulative_bins(), h.unit, &DEFAULT_BUCKETS);
        let tags = prom_tags(meta);
        let hist_tags = if meta.tags.is_empty() {
            String::new()
        } else {
            format!("{tags},")
        };
        for (bound, count) in st.bucket_bounds.iter().zip(st.bucket_counts.iter()) {
            let _ = writeln!(
                out,
                "{family}_bucket{{{hist_tags}le=\"{}\"}} {count}",
                fmt_g(*bound, 32)
            );
        }
        let _ = writeln!(
            out,
            "{family}_bucket{{{hist_tags}le=\"+Inf\"}} {}",
            st.sample_count
        );
        let _ = writeln!(out, "{family}_sum{{{tags}}} {}", fmt_g(st.sample_sum, 32));
        let _ = writeln!(out, "{family}_count{{{tags}}} {}", st.sample_count);
    }
    out
}
