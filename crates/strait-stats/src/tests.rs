//! Store-level tests: concurrency, renderings, queries.

use super::*;

fn q(s: &str) -> StatsQuery {
    StatsQuery::from_query_string(s).unwrap_or_else(|e| panic!("bad query {s}: {e}"))
}

#[test]
fn sums_across_worker_threads() {
    let workers = 4;
    let store = Store::new(workers + 1);
    let c = store.counter("cluster.backend.upstream_rq_total");
    let g = store.gauge("cluster.backend.upstream_cx_active");
    let h = store.histogram(
        "cluster.backend.upstream_rq_time",
        HistogramUnit::Milliseconds,
    );
    let per_thread = 100_000u64;
    let threads: Vec<_> = (1..=workers)
        .map(|i| {
            let (c, g, h) = (c.clone(), g.clone(), h.clone());
            std::thread::spawn(move || {
                set_thread_slot(i);
                assert_eq!(thread_slot(), i);
                for n in 0..per_thread {
                    c.inc();
                    g.inc();
                    if n % 2 == 0 {
                        g.dec();
                    }
                    h.record(n % 1000);
                }
                c.add(10);
            })
        })
        .collect();
    // The main thread (slot 0) writes too.
    c.add(5);
    g.sub(3);
    for t in threads {
        t.join().expect("worker panicked");
    }
    let w = workers as u64;
    assert_eq!(c.value(), w * (per_thread + 10) + 5);
    assert_eq!(
        store.counter_value("cluster.backend.upstream_rq_total"),
        Some(c.value())
    );
    assert_eq!(g.value(), (w * per_thread / 2) as i64 - 3);
    assert_eq!(
        store.gauge_value("cluster.backend.upstream_cx_active"),
        Some(g.value())
    );
    assert_eq!(h.cumulative().sample_count, w * per_thread);
    // Each worker wrote its own slot.
    let inner = c.inner.as_ref().expect("store counter");
    assert_eq!(inner.cells.sum_except_slot0(), w * (per_thread + 10));
}

#[test]
fn out_of_range_slot_uses_slot_zero() {
    let store = Store::new(2);
    let c = store.counter("c");
    std::thread::spawn(move || {
        set_thread_slot(99);
        c.add(7);
    })
    .join()
    .expect("thread panicked");
    let inner = store.counter("c");
    assert_eq!(inner.value(), 7);
    assert_eq!(
        inner.inner.as_ref().map(|i| i.cells.sum_except_slot0()),
        Some(0)
    );
}

#[test]
fn same_name_same_stat_and_null_handles() {
    let store = Store::new(3);
    let a = store.counter("x.y");
    let b = store.counter("x.y");
    a.add(2);
    b.inc();
    assert_eq!(a.value(), 3);
    assert_eq!(store.counters(), vec![("x.y".to_string(), 3)]);
    assert_eq!(store.counter_value("nope"), None);
    assert_eq!(store.gauge_value("x.y"), None);

    let n = Counter::default();
    n.inc();
    assert_eq!(n.value(), 0);
    assert!(!n.used());
    let g = Gauge::null();
    g.set(4);
    assert_eq!(g.value(), 0);
    let h = Histogram::default();
    h.record(1);
    assert_eq!(h.cumulative().sample_count, 0);
    let d = Counter::detached("d");
    d.add(4);
    assert_eq!((d.value(), d.name()), (4, "d"));
    let dg = Gauge::detached("dg");
    dg.set(-2);
    assert_eq!(dg.value(), -2);
}

#[test]
fn gauge_set_accounts_for_worker_slots() {
    let store = Store::new(3);
    let g = store.gauge("g");
    let g2 = g.clone();
    std::thread::spawn(move || {
        set_thread_slot(2);
        g2.add(10);
    })
    .join()
    .expect("thread panicked");
    g.set(4);
    assert_eq!(g.value(), 4);
    g.inc();
    assert_eq!(g.value(), 5);
    assert!(g.used());
}

#[test]
fn reset_counters_zeroes_counters_only() {
    let store = Store::new(2);
    let c = store.counter("c");
    let g = store.gauge("g");
    c.add(5);
    g.add(5);
    store.reset_counters();
    assert_eq!(c.value(), 0);
    assert_eq!(g.value(), 5);
    // Still "used" after a reset, as in Envoy.
    assert_eq!(store.render_text(&q("usedonly")), "c: 0\ng: 5\n");
}

/// A small store shaped like a real Envoy one.
fn sample_store() -> Store {
    let store = Store::new(3);
    store.counter("cluster.backend.upstream_rq_total").add(5);
    store.counter("cluster.a.upstream_rq_total").inc();
    store.counter("cluster.backend.upstream_rq_200").add(3);
    store.counter("http.ingress_http.downstream_rq_2xx").add(3);
    store.counter("server.never");
    store.gauge("cluster.backend.upstream_cx_active").set(2);
    let h = store.histogram(
        "cluster.backend.upstream_rq_time",
        HistogramUnit::Milliseconds,
    );
    for v in [200, 300, 300] {
        h.record(v);
    }
    store.histogram(
        "http.ingress_http.downstream_rq_time",
        HistogramUnit::Milliseconds,
    );
    store.flush_interval();
    store
}

const P_ROW: &str = "P0(205,205) P25(205,205) P50(303.3333333333333,303.3333333333333) \
P75(306.6666666666667,306.6666666666667) P90(306.6666666666667,306.6666666666667) \
P95(306.6666666666667,306.6666666666667) P99(306.6666666666667,306.6666666666667) \
P99.5(306.6666666666667,306.6666666666667) P99.9(306.6666666666667,306.6666666666667) \
P100(306.6666666666667,306.6666666666667)";

#[test]
fn text_rendering() {
    let store = sample_store();
    let expected = format!(
        "cluster.a.upstream_rq_total: 1\n\
         cluster.backend.upstream_cx_active: 2\n\
         cluster.backend.upstream_rq_200: 3\n\
         cluster.backend.upstream_rq_total: 5\n\
         http.ingress_http.downstream_rq_2xx: 3\n\
         server.never: 0\n\
         cluster.backend.upstream_rq_time: {P_ROW}\n\
         http.ingress_http.downstream_rq_time: No recorded values\n"
    );
    assert_eq!(store.render_text(&StatsQuery::default()), expected);

    // usedonly hides never-written stats.
    let used = store.render_text(&q("usedonly"));
    assert!(!used.contains("server.never"));
    assert!(!used.contains("No recorded values"));

    // filter is a partial match on the full name; type restricts the kind.
    assert_eq!(
        store.render_text(&q("filter=upstream_rq_2&type=Counters")),
        "cluster.backend.upstream_rq_200: 3\n"
    );
    assert_eq!(
        store.render_text(&q("filter=%5Ecluster%5C.a%5C.")),
        "cluster.a.upstream_rq_total: 1\n"
    );
    assert_eq!(
        store.render_text(&q("type=Gauges")),
        "cluster.backend.upstream_cx_active: 2\n"
    );
    assert_eq!(store.render_text(&q("type=TextReadouts")), "");
    assert_eq!(
        store.render_text(&q("type=Histograms&usedonly")),
        format!("cluster.backend.upstream_rq_time: {P_ROW}\n")
    );
}

#[test]
fn text_interval_is_last_completed_flush() {
    let store = Store::new(2);
    let h = store.histogram("h", HistogramUnit::Unspecified);
    h.record(1);
    // Recorded, but no interval closed yet: interval is nan, cumulative is live.
    assert_eq!(
        store.render_text(&StatsQuery::default()),
        "h: P0(nan,1.05) P25(nan,1.05) P50(nan,1.05) P75(nan,1.05) P90(nan,1.05) P95(nan,1.05) \
         P99(nan,1.05) P99.5(nan,1.05) P99.9(nan,1.05) P100(nan,1.05)\n"
    );
    store.flush_interval();
    h.record(1);
    assert_eq!(h.interval().sample_count, 1);
    assert_eq!(h.cumulative().sample_count, 2);
    store.flush_interval();
    assert_eq!(h.interval().sample_count, 1);
    store.flush_interval();
    assert_eq!(h.interval().sample_count, 0);
    assert!(h.interval().quantiles[0].is_nan());
}

#[test]
fn json_rendering() {
    let store = sample_store();
    let vals = |c: &str, i: &str| {
        let mut v = vec!["{\"cumulative\":205,\"interval\":205}".to_string(); 2];
        v.push("{\"cumulative\":303.3333333333333,\"interval\":303.3333333333333}".to_string());
        v.extend((0..7).map(|_| format!("{{\"cumulative\":{c},\"interval\":{i}}}")));
        v.join(",")
    };
    let nulls: Vec<&str> = (0..10)
        .map(|_| "{\"cumulative\":null,\"interval\":null}")
        .collect();
    let expected = format!(
        "{{\"stats\":[\
         {{\"name\":\"cluster.a.upstream_rq_total\",\"value\":1}},\
         {{\"name\":\"cluster.backend.upstream_cx_active\",\"value\":2}},\
         {{\"name\":\"cluster.backend.upstream_rq_200\",\"value\":3}},\
         {{\"name\":\"cluster.backend.upstream_rq_total\",\"value\":5}},\
         {{\"name\":\"http.ingress_http.downstream_rq_2xx\",\"value\":3}},\
         {{\"name\":\"server.never\",\"value\":0}},\
         {{\"histograms\":{{\"supported_quantiles\":[0,25,50,75,90,95,99,99.5,99.9,100],\
         \"computed_quantiles\":[\
         {{\"name\":\"cluster.backend.upstream_rq_time\",\"values\":[{}]}},\
         {{\"name\":\"http.ingress_http.downstream_rq_time\",\"values\":[{}]}}]}}}}]}}",
        vals("306.6666666666667", "306.6666666666667"),
        nulls.join(",")
    );
    assert_eq!(store.render_json(&StatsQuery::default()), expected);
    assert_eq!(
        store.render_json(&q("filter=%5Eserver%5C.never%24")),
        "{\"stats\":[{\"name\":\"server.never\",\"value\":0}]}"
    );
    assert_eq!(
        store.render_json(&q("filter=nothing_matches")),
        "{\"stats\":[]}"
    );
    let only_hist = store.render_json(&q("type=Histograms&usedonly"));
    assert!(only_hist.starts_with("{\"stats\":[{\"histograms\":{\"supported_quantiles\":[0,25,"));
    assert!(only_hist.ends_with("]}]}}]}"));
    // Valid JSON escaping of odd names.
    let s = Store::new(1);
    s.counter("a\"b\\c\n");
    assert_eq!(
        s.render_json(&StatsQuery::default()),
        "{\"stats\":[{\"name\":\"a\\\"b\\\\c\\n\",\"value\":0}]}"
    );
}

fn bucket_lines(family: &str, tags: &str, counts: [u64; 19], total: u64) -> String {
    let mut s = String::new();
    for (b, c) in DEFAULT_BUCKETS.iter().zip(counts) {
        s.push_str(&format!(
            "{family}_bucket{{{tags}le=\"{}\"}} {c}\n",
            fmt_g(*b, 32)
        ));
    }
    s.push_str(&format!("{family}_bucket{{{tags}le=\"+Inf\"}} {total}\n"));
    s
}

#[test]
fn prometheus_rendering() {
    let store = sample_store();
    let mut expected = String::from(
        "# TYPE envoy_cluster_upstream_rq counter\n\
         envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"backend\"} 3\n\
         # TYPE envoy_cluster_upstream_rq_total counter\n\
         envoy_cluster_upstream_rq_total{envoy_cluster_name=\"a\"} 1\n\
         envoy_cluster_upstream_rq_total{envoy_cluster_name=\"backend\"} 5\n\
         # TYPE envoy_http_downstream_rq_xx counter\n\
         envoy_http_downstream_rq_xx{envoy_response_code_class=\"2\",envoy_http_conn_manager_prefix=\"ingress_http\"} 3\n\
         # TYPE envoy_server_never counter\n\
         envoy_server_never{} 0\n\
         # TYPE envoy_cluster_upstream_cx_active gauge\n\
         envoy_cluster_upstream_cx_active{envoy_cluster_name=\"backend\"} 2\n\
         # TYPE envoy_cluster_upstream_rq_time histogram\n",
    );
    expected.push_str(&bucket_lines(
        "envoy_cluster_upstream_rq_time",
        "envoy_cluster_name=\"backend\",",
        [0, 0, 0, 0, 0, 0, 0, 1, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3],
        3,
    ));
    expected.push_str(
        "envoy_cluster_upstream_rq_time_sum{envoy_cluster_name=\"backend\"} 814.71411435425829949963372200727\n\
         envoy_cluster_upstream_rq_time_count{envoy_cluster_name=\"backend\"} 3\n\
         # TYPE envoy_http_downstream_rq_time histogram\n",
    );
    expected.push_str(&bucket_lines(
        "envoy_http_downstream_rq_time",
        "envoy_http_conn_manager_prefix=\"ingress_http\",",
        [0; 19],
        0,
    ));
    expected.push_str(
        "envoy_http_downstream_rq_time_sum{envoy_http_conn_manager_prefix=\"ingress_http\"} 0\n\
         envoy_http_downstream_rq_time_count{envoy_http_conn_manager_prefix=\"ingress_http\"} 0\n",
    );
    assert_eq!(store.render_prometheus(&StatsQuery::default()), expected);

    // type= is ignored (as in Envoy); usedonly and filter apply to full names.
    assert_eq!(
        store.render_prometheus(&q("type=Gauges&filter=upstream_rq_total&usedonly")),
        "# TYPE envoy_cluster_upstream_rq_total counter\n\
         envoy_cluster_upstream_rq_total{envoy_cluster_name=\"a\"} 1\n\
         envoy_cluster_upstream_rq_total{envoy_cluster_name=\"backend\"} 5\n"
    );
    assert!(
        !store
            .render_prometheus(&q("usedonly"))
            .contains("server_never")
    );
}

#[test]
fn prometheus_matches_envoy_histogram_test() {
    // Envoy prometheus_stats_test OutputWithAllMetricTypes: values {50,20,30,70,100,5000,200}.
    let store = Store::new(2);
    let h = store.histogram(
        "cluster.test_1.upstream_rq_time",
        HistogramUnit::Milliseconds,
    );
    for v in [50, 20, 30, 70, 100, 5000, 200] {
        h.record(v);
    }
    let mut expected = String::from("# TYPE envoy_cluster_upstream_rq_time histogram\n");
    expected.push_str(&bucket_lines(
        "envoy_cluster_upstream_rq_time",
        "envoy_cluster_name=\"test_1\",",
        [0, 0, 0, 0, 1, 3, 5, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7],
        7,
    ));
    expected.push_str(
        "envoy_cluster_upstream_rq_time_sum{envoy_cluster_name=\"test_1\"} 5531.1160155998386471765115857124\n\
         envoy_cluster_upstream_rq_time_count{envoy_cluster_name=\"test_1\"} 7\n",
    );
    assert_eq!(store.render_prometheus(&StatsQuery::default()), expected);
}

#[test]
fn prometheus_sanitizes_names_and_values() {
    let store = Store::new(1);
    store.counter("vulture.eats-liver").inc();
    store.gauge("An.artist.plays-violin@019street").set(1);
    assert_eq!(
        store.render_prometheus(&StatsQuery::default()),
        "# TYPE envoy_vulture_eats_liver counter\n\
         envoy_vulture_eats_liver{} 1\n\
         # TYPE envoy_An_artist_plays_violin_019street gauge\n\
         envoy_An_artist_plays_violin_019street{} 1\n"
    );
    let store = Store::new(1);
    store.counter("cluster.we\"ird\\.upstream_rq_total").inc();
    assert_eq!(
        store.render_prometheus(&StatsQuery::default()),
        "# TYPE envoy_cluster_upstream_rq_total counter\n\
         envoy_cluster_upstream_rq_total{envoy_cluster_name=\"we\\\"ird\\\\\"} 1\n"
    );
}

#[test]
fn prometheus_groups_are_token_ordered() {
    // "a.b" sorts before "a-b" token-wise ("a" < "a-b"), unlike a plain string compare.
    let store = Store::new(1);
    store.counter("a-b").add(2);
    store.counter("a.b").add(1);
    assert_eq!(
        store.render_prometheus(&StatsQuery::default()),
        "# TYPE envoy_a_b counter\nenvoy_a_b{} 1\n# TYPE envoy_a_b counter\nenvoy_a_b{} 2\n"
    );
    assert_eq!(render::token_cmp("a.b", "a-b"), std::cmp::Ordering::Less);
    assert_eq!(
        render::token_cmp("cluster.upstream_rq", "cluster.upstream_rq_total"),
        std::cmp::Ordering::Less
    );
}

#[test]
fn percent_histograms_are_scaled() {
    let store = Store::new(1);
    let h = store.histogram("p", HistogramUnit::Percent);
    h.record((0.25 * PERCENT_SCALE) as u64);
    store.flush_interval();
    let st = h.cumulative();
    assert!((st.quantiles[0] - 0.25).abs() < 0.02, "{}", st.quantiles[0]);
    assert_eq!(st.bucket_counts[0], 1); // le="0.5" means 50%
    assert!(
        store
            .render_text(&StatsQuery::default())
            .starts_with("p: P0(0.25")
    );
}

#[test]
fn histogram_handles() {
    assert_eq!(
        std::mem::align_of::<Counter>(),
        std::mem::align_of::<usize>()
    );
    let store = Store::new(4);
    let h = store.histogram("h", HistogramUnit::Bytes);
    h.record_n(12345, 3);
    h.record(0);
    assert_eq!(h.cumulative().sample_count, 4);
    assert_eq!(h.unit(), HistogramUnit::Bytes);
    assert!(store.histogram("h", HistogramUnit::Percent).unit() == HistogramUnit::Bytes);
    assert_eq!(store.histogram_names(), vec!["h".to_string()]);
    assert!(store.find_histogram("h").is_some_and(|h| h.used()));
}

#[test]
fn scalar_handle_size() {
    assert_eq!(std::mem::size_of::<ScalarInner>(), 88);
    assert_eq!(std::mem::size_of::<Counter>(), 8);
}
