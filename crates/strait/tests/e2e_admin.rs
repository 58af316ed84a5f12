//! End-to-end admin API of the real `strait` binary: `/config_dump` gives a bootstrap real
//! Envoy accepts, `/stats?format=json` and `/stats/prometheus` have Envoy's shapes, and
//! counters from several workers add up.

#[path = "e2e_common.rs"]
mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use strait_testkit::EchoServer;

/// A bootstrap using much of what Strait supports: two listeners, access logs in both
/// formats, regex/path/prefix routes, a route timeout, a direct response, an h2 cluster,
/// HCM options.
fn rich_bootstrap(dir: &TestDir, admin: u16, listen: u16, listen2: u16, echo: u16) -> Value {
    let logs = vec![
        file_log_text(
            &dir.join("text.log"),
            "%START_TIME% %REQ(:METHOD)% %RESPONSE_CODE%\n",
        ),
        file_log_json(
            &dir.join("json.log"),
            json!({"code": "%RESPONSE_CODE%", "path": "%REQ(:PATH)%"}),
        ),
    ];
    let routes = vec![
        json!({"match": {"path": "/exact"}, "direct_response": {"status": 200, "body": {"inline_string": "exact\n"}}}),
        json!({"match": {"safe_regex": {"regex": "/re/[0-9]+"}}, "route": {"cluster": "echo_h2"}}),
        route("/slow", "echo", Some("2.5s")),
        route("/", "echo", None),
    ];
    let mut main = listener("main", listen, "ingress", routes, logs);
    let hcm = &mut main["filter_chains"][0]["filters"][0]["typed_config"];
    hcm["server_name"] = json!("strait-e2e");
    hcm["use_remote_address"] = json!(true);
    hcm["generate_request_id"] = json!(true);
    hcm["common_http_protocol_options"] = json!({"idle_timeout": "30s"});
    let mut bs = bootstrap(
        admin,
        vec![
            main,
            listener(
                "second",
                listen2,
                "second",
                vec![route("/", "echo_h2", None)],
                vec![],
            ),
        ],
        vec![cluster("echo", echo, false), cluster("echo_h2", echo, true)],
    );
    bs["node"] = json!({"id": "e2e-node", "cluster": "e2e-cluster"});
    bs
}

/// `/config_dump`: Envoy's structure, the loaded bootstrap in `configs[0].bootstrap`, which
/// Strait and (when installed) real Envoy 1.40 both accept with `--mode validate`.
#[test]
fn config_dump_bootstrap_is_valid_for_envoy() {
    let echo = EchoServer::start_background("echo").unwrap();
    let dir = TestDir::new("config-dump");
    let (admin, listen, listen2) = (port(), port(), port());
    let bs = rich_bootstrap(&dir, admin, listen, listen2, echo.port());
    let strait = Strait::start(&dir, &bs);
    // It serves what it says it loaded.
    assert_eq!(
        http_get(strait.listen, "/exact").unwrap().body_str(),
        "exact\n"
    );

    let r = strait.admin_get("/config_dump");
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        r.headers
    );
    let dump = r.json();
    let configs = dump["configs"].as_array().expect("configs array");
    assert_eq!(
        configs[0]["@type"],
        "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump"
    );
    let types: Vec<&str> = configs.iter().filter_map(|c| c["@type"].as_str()).collect();
    for t in [
        "ClustersConfigDump",
        "ListenersConfigDump",
        "RoutesConfigDump",
    ] {
        assert!(
            types
                .iter()
                .any(|x| x == &format!("type.googleapis.com/envoy.admin.v3.{t}")),
            "no {t} in {types:?}"
        );
    }
    let boot = &configs[0]["bootstrap"];
    assert_eq!(boot["node"]["id"], "e2e-node");
    let listeners = boot["static_resources"]["listeners"]
        .as_array()
        .expect("listeners");
    assert_eq!(
        listeners
            .iter()
            .map(|l| l["name"].clone())
            .collect::<Vec<_>>(),
        [json!("main"), json!("second")]
    );
    let hcm = &listeners[0]["filter_chains"][0]["filters"][0]["typed_config"];
    assert_eq!(hcm["@type"], HCM_TYPE, "typed_config keeps its @type");
    assert_eq!(hcm["server_name"], "strait-e2e");
    assert_eq!(hcm["stat_prefix"], "ingress");
    let clusters = boot["static_resources"]["clusters"]
        .as_array()
        .expect("clusters");
    assert_eq!(clusters.len(), 2);
    assert_eq!(
        clusters[1]["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
            ["@type"],
        HTTP_OPTIONS_TYPE
    );

    // The dumped bootstrap is a bootstrap: Strait validates it...
    let dumped = dir.join("dumped.json");
    std::fs::write(&dumped, serde_json::to_string_pretty(boot).unwrap()).unwrap();
    let out = run_strait(
        &dir,
        &["-c", dumped.to_str().unwrap(), "--mode", "validate"],
        Duration::from_secs(10),
        || {},
    );
    assert!(
        out.status.success(),
        "strait refuses its own config_dump:\n{}",
        out.stderr
    );

    // ...and so does Envoy.
    let Some(envoy) = find_envoy() else {
        eprintln!(
            "SKIP: Envoy not found (ENVOY_BIN, <workspace>/.venv-envoy, ../.venv-envoy): config_dump not checked against Envoy"
        );
        return;
    };
    let out = std::process::Command::new(&envoy)
        .args([
            "--mode",
            "validate",
            "-c",
            dumped.to_str().unwrap(),
            "-l",
            "warning",
        ])
        .output()
        .expect("run envoy");
    assert!(
        out.status.success(),
        "Envoy ({}) refuses strait's /config_dump bootstrap ({}):\n{}\n{}",
        envoy.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("Envoy {} accepts the dumped bootstrap", envoy.display());
}

fn start_simple(
    name: &str,
    concurrency: usize,
) -> (strait_testkit::BackgroundEcho, TestDir, Strait) {
    let echo = EchoServer::start_background("echo").unwrap();
    let dir = TestDir::new(name);
    let (admin, listen) = (port(), port());
    let strait = Strait::start_with(
        &dir,
        &simple_bootstrap(admin, listen, echo.port()),
        StartOpts {
            concurrency,
            ..Default::default()
        },
    );
    (echo, dir, strait)
}

/// `/stats?format=json`: `{"stats": [{name, value}..., {"histograms": {...}}]}` as Envoy
/// writes it, with the live counter values.
#[test]
fn stats_json_has_envoys_shape() {
    let (_echo, _dir, strait) = start_simple("stats-json", 1);
    for i in 0..3 {
        assert_eq!(
            http_get(strait.listen, &format!("/s{i}")).unwrap().status,
            200
        );
    }
    assert!(strait.wait_stat(
        "cluster.echo.upstream_rq_completed",
        Duration::from_secs(2),
        |v| v == 3
    ));
    // Histograms are computed at each stats flush (1 s here).
    let deadline = Instant::now() + Duration::from_secs(4);
    let (stats, hist) = loop {
        let r = strait.admin_get("/stats?format=json");
        assert_eq!(r.status, 200);
        assert!(
            r.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{:?}",
            r.headers
        );
        let v = r.json();
        let stats = v["stats"].as_array().expect("a `stats` array").clone();
        let hist = stats
            .iter()
            .find_map(|s| s.get("histograms"))
            .cloned()
            .expect("a histograms element");
        let rq_time_seen = hist["computed_quantiles"]
            .as_array()
            .expect("computed_quantiles")
            .iter()
            .any(|h| {
                h["name"] == "cluster.echo.upstream_rq_time"
                    && h["values"]
                        .as_array()
                        .is_some_and(|v| v.iter().any(|q| !q["cumulative"].is_null()))
            });
        if rq_time_seen {
            break (stats, hist);
        }
        assert!(
            Instant::now() < deadline,
            "cluster.echo.upstream_rq_time has no cumulative value after 4 s: {hist}"
        );
        thread::sleep(Duration::from_millis(100));
    };
    for s in &stats {
        if s.get("histograms").is_some() {
            continue;
        }
        assert!(
            s["name"].is_string() && s["value"].is_number(),
            "not a {{name, value}} stat: {s}"
        );
    }
    let value = |name: &str| {
        stats
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| s["value"].clone())
    };
    assert_eq!(value("cluster.echo.upstream_rq_total"), Some(json!(3)));
    assert_eq!(value("http.ingress.downstream_rq_2xx"), Some(json!(3)));
    assert_eq!(value("server.concurrency"), Some(json!(1)));
    assert_eq!(
        hist["supported_quantiles"],
        json!([0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 100])
    );
}

/// `/stats/prometheus`: typed families with Envoy's names and tags, counters with live
/// values, and histograms as `_bucket{..le=..}` / `_sum` / `_count`.
#[test]
fn prometheus_has_counter_and_histogram_families() {
    let (_echo, _dir, strait) = start_simple("prometheus", 1);
    for i in 0..4 {
        assert_eq!(
            http_get(strait.listen, &format!("/p{i}")).unwrap().status,
            200
        );
    }
    let deadline = Instant::now() + Duration::from_secs(4);
    let text = loop {
        let r = strait.admin_get("/stats/prometheus");
        assert_eq!(r.status, 200);
        let t = r.body_str();
        // Histogram samples appear at the next stats flush (1 s).
        if t.lines()
            .any(|l| l == "envoy_cluster_upstream_rq_time_count{envoy_cluster_name=\"echo\"} 4")
        {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "no upstream_rq_time count of 4 after 4 s:\n{t}"
        );
        thread::sleep(Duration::from_millis(100));
    };
    let has = |l: &str| text.lines().any(|x| x == l);
    assert!(
        has("# TYPE envoy_cluster_upstream_rq_total counter"),
        "{text}"
    );
    assert!(
        has("envoy_cluster_upstream_rq_total{envoy_cluster_name=\"echo\"} 4"),
        "{text}"
    );
    assert!(
        has("# TYPE envoy_http_downstream_rq_total counter"),
        "{text}"
    );
    assert!(
        has("envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix=\"ingress\"} 4"),
        "{text}"
    );
    assert!(
        has("# TYPE envoy_cluster_upstream_cx_active gauge"),
        "{text}"
    );
    assert!(
        has("# TYPE envoy_cluster_upstream_rq_time histogram"),
        "{text}"
    );
    let buckets: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"echo\",le=")
        })
        .collect();
    assert!(buckets.len() > 5, "buckets: {buckets:?}");
    assert_eq!(
        buckets.last().copied(),
        Some("envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"echo\",le=\"+Inf\"} 4")
    );
    // Cumulative buckets never decrease.
    let counts: Vec<u64> = buckets
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]),
        "buckets not cumulative: {buckets:?}"
    );
    assert!(text.lines().any(|l| {
        l.starts_with("envoy_cluster_upstream_rq_time_sum{envoy_cluster_name=\"echo\"} ")
    }));
    // Every sample line belongs to a family declared with # TYPE before it.
    let mut declared = std::collections::HashSet::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            declared.insert(rest.split(' ').next().unwrap().to_string());
        } else if !l.is_empty() && !l.starts_with('#') {
            let name = l.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| declared.contains(*f)));
            assert!(
                declared.contains(name) || family.is_some(),
                "sample before its # TYPE: {l}"
            );
        }
    }
}

/// `--concurrency 2`: connections land on both workers (SO_REUSEPORT) and the counters
/// every worker increments add up exactly.
#[test]
fn counters_sum_over_two_workers() {
    let (_echo, _dir, strait) = start_simple("two-workers", 2);
    let addr = strait.listen;

    // Sequential requests, a new connection each: every worker keeps one pooled upstream
    // connection, so two upstream connections mean both workers served.
    const SEQ: usize = 20;
    for i in 0..SEQ {
        let r = http_get(addr, &format!("/seq/{i}")).unwrap();
        assert_eq!(r.status, 200);
    }
    assert!(strait.wait_stat(
        "cluster.echo.upstream_rq_total",
        Duration::from_secs(2),
        |v| v == SEQ as i64
    ));
    assert_eq!(
        strait.stat("cluster.echo.upstream_cx_total"),
        Some(2),
        "{SEQ} connections were not served by both workers, each with its own pool"
    );

    // Then parallel clients.
    const THREADS: usize = 4;
    const EACH: usize = 10;
    let clients: Vec<_> = (0..THREADS)
        .map(|t| {
            thread::spawn(move || {
                for i in 0..EACH {
                    let r = http_get(addr, &format!("/w{t}/{i}")).unwrap();
                    assert_eq!(r.status, 200);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let n = (SEQ + THREADS * EACH) as i64;
    assert!(
        strait.wait_stat(
            "http.ingress.downstream_rq_completed",
            Duration::from_secs(2),
            |v| v == n
        ),
        "downstream_rq_completed = {:?}",
        strait.stat("http.ingress.downstream_rq_completed")
    );
    let stats = strait.stats();
    assert_eq!(stats.get("server.concurrency"), Some(&2));
    assert_eq!(stats.get("http.ingress.downstream_rq_total"), Some(&n));
    assert_eq!(stats.get("http.ingress.downstream_rq_2xx"), Some(&n));
    assert_eq!(stats.get("http.ingress.downstream_cx_total"), Some(&n));
    let listener_cx = format!("listener.127.0.0.1_{}.downstream_cx_total", addr.port());
    assert_eq!(stats.get(&listener_cx), Some(&n));
    assert_eq!(stats.get("cluster.echo.upstream_rq_total"), Some(&n));
    assert_eq!(stats.get("cluster.echo.upstream_rq_2xx"), Some(&n));
    let prom = strait.admin_get("/stats/prometheus").body_str();
    let line =
        format!("envoy_http_downstream_rq_total{{envoy_http_conn_manager_prefix=\"ingress\"}} {n}");
    assert!(
        prom.lines().any(|l| l == line),
        "prometheus disagrees with /stats: no {line:?}"
    );
}
