//! The admin `/stats` query string comes from the network: parse it and render with it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(q) = std::str::from_utf8(data) else { return };
    if let Ok(query) = strait_stats::StatsQuery::from_query_string(q) {
        let store = strait_stats::Store::new(2);
        store.counter("cluster.a.upstream_rq_total").inc();
        store.histogram("cluster.a.upstream_rq_time", strait_stats::HistogramUnit::Milliseconds).record(3);
        let _ = store.render_text(&query);
        let _ = store.render_json(&query);
        let _ = store.render_prometheus(&query);
    }
});
