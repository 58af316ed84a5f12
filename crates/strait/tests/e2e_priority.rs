//! End-to-end priority levels, EDS `health_status`, locality weights and `/clusters` through
//! the real `strait` binary with echo backends (each answers with its name). Where Envoy is
//! installed the same bootstrap also runs on Envoy and the results are compared.

#[path = "e2e_common.rs"]
mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use strait_testkit::{BackgroundEcho, EchoServer, Process};

/// One endpoint of a `LocalityLbEndpoints`: the echo port and its `health_status`.
fn endpoint(port: u16, status: Option<&str>) -> Value {
    let mut e = json!({"endpoint": {"address": socket_address(port)}});
    if let Some(s) = status {
        e["health_status"] = json!(s);
    }
    e
}

/// A STATIC cluster `c` with the given `LocalityLbEndpoints` and optional `common_lb_config`.
fn cluster_with(localities: Vec<Value>, common_lb: Option<Value>) -> Value {
    let mut c = json!({
        "name": "c",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "c", "endpoints": localities},
    });
    if let Some(cl) = common_lb {
        c["common_lb_config"] = cl;
    }
    c
}

fn bootstrap_for(admin: u16, listen: u16, cluster: &Value) -> Value {
    bootstrap(
        admin,
        vec![listener(
            "main",
            listen,
            "ingress",
            vec![route("/", "c", None)],
            vec![],
        )],
        vec![cluster.clone()],
    )
}

/// `n` echo backends named `name0`, `name1`...
fn echoes(name: &str, n: usize) -> Vec<BackgroundEcho> {
    (0..n)
        .map(|i| EchoServer::start_background(&format!("{name}{i}")).unwrap())
        .collect()
}

/// Sends `n` requests (one connection each, so no pooling effect) and counts the answering
/// backends by name; anything but a 200 counts under its status.
fn spread(listen: std::net::SocketAddr, n: usize) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for i in 0..n {
        let r = http_get(listen, &format!("/r{i}")).unwrap();
        let key = if r.status == 200 {
            r.header("x-echo-name").unwrap_or("?").to_string()
        } else {
            format!("status {}", r.status)
        };
        *out.entry(key).or_default() += 1;
    }
    out
}

fn with_prefix(m: &HashMap<String, usize>, prefix: &str) -> usize {
    m.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

/// Envoy on the same bootstrap (admin and listener ports of its own), stopped on drop.
struct Envoy {
    process: Process,
    listen: std::net::SocketAddr,
    admin: std::net::SocketAddr,
}

impl Envoy {
    fn start(dir: &TestDir, cluster: &Value) -> Option<Envoy> {
        let Some(bin) = find_envoy() else {
            eprintln!("SKIP: Envoy not found: not compared against Envoy");
            return None;
        };
        let (admin, listen) = (port(), port());
        let path = dir.join("envoy.json");
        std::fs::write(&path, bootstrap_for(admin, listen, cluster).to_string()).unwrap();
        let base_id = (std::process::id() % 50_000 + u32::from(admin)).to_string();
        let args = [
            "-c",
            path.to_str().unwrap(),
            "--concurrency",
            "1",
            "-l",
            "warning",
            "--base-id",
            &base_id,
        ];
        let process = Process::spawn(&bin, args, &dir.join("envoy.log")).expect("spawn envoy");
        let e = Envoy {
            process,
            listen: strait_testkit::ports::localhost(listen),
            admin: strait_testkit::ports::localhost(admin),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !http_get(e.admin, "/ready").is_ok_and(|r| r.status == 200) {
            assert!(
                Instant::now() < deadline,
                "envoy not ready:\n{}",
                e.process.output_tail(30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(e)
    }
}

fn start(dir: &TestDir, cluster: &Value) -> Strait {
    let (admin, listen) = (port(), port());
    Strait::start(dir, &bootstrap_for(admin, listen, cluster))
}

/// P0 hosts answer every request while they are healthy; the P1 host gets nothing.
#[test]
fn p0_hosts_answer_while_healthy() {
    let p0 = echoes("p0-", 2);
    let p1 = echoes("p1-", 1);
    let c = cluster_with(
        vec![
            json!({"lb_endpoints": [endpoint(p0[0].port(), None), endpoint(p0[1].port(), Some("HEALTHY"))]}),
            json!({"priority": 1, "lb_endpoints": [endpoint(p1[0].port(), None)]}),
        ],
        None,
    );
    let dir = TestDir::new("prio-p0");
    let strait = start(&dir, &c);
    let got = spread(strait.listen, 40);
    assert_eq!(with_prefix(&got, "p0-"), 40, "{got:?}");
    // Round robin over the two P0 hosts.
    assert_eq!((got["p0-0"], got["p0-1"]), (20, 20), "{got:?}");
    if let Some(envoy) = Envoy::start(&dir, &c) {
        let e = spread(envoy.listen, 40);
        assert_eq!(with_prefix(&e, "p0-"), 40, "Envoy: {e:?}");
    }
}

/// P0 endpoints marked UNHEALTHY / TIMEOUT / DRAINING by `health_status`: P0 has no
/// availability and all traffic goes to P1, in Strait as in Envoy.
#[test]
fn p1_takes_traffic_when_eds_marks_p0_unhealthy() {
    let p0 = echoes("p0-", 3);
    let p1 = echoes("p1-", 1);
    let c = cluster_with(
        vec![
            json!({"lb_endpoints": [
                endpoint(p0[0].port(), Some("UNHEALTHY")),
                endpoint(p0[1].port(), Some("TIMEOUT")),
                endpoint(p0[2].port(), Some("DRAINING")),
            ]}),
            json!({"priority": 1, "lb_endpoints": [endpoint(p1[0].port(), None)]}),
        ],
        None,
    );
    let dir = TestDir::new("prio-eds");
    let strait = start(&dir, &c);
    let got = spread(strait.listen, 30);
    assert_eq!(got.get("p1-0"), Some(&30), "{got:?}");
    let stats = strait.stats();
    assert_eq!(stats.get("cluster.c.membership_healthy"), Some(&1));
    assert_eq!(stats.get("cluster.c.membership_total"), Some(&4));
    let clusters = strait.admin_get("/clusters").body_str();
    for (port, flags) in [
        (p0[0].port(), "/failed_eds_health"),
        (p0[1].port(), "/failed_eds_health"),
        (p0[2].port(), "/eds_status_draining"),
        (p1[0].port(), "healthy"),
    ] {
        let line = format!("c::127.0.0.1:{port}::health_flags::{flags}\n");
        assert!(clusters.contains(&line), "{line} not in\n{clusters}");
    }
    if let Some(envoy) = Envoy::start(&dir, &c) {
        let e = spread(envoy.listen, 30);
        assert_eq!(e.get("p1-0"), Some(&30), "Envoy: {e:?}");
    }
}

/// No P0 endpoint at all: P1 gets everything.
#[test]
fn p1_takes_traffic_when_p0_has_no_hosts() {
    let p1 = echoes("p1-", 2);
    let c = cluster_with(
        vec![json!({"priority": 1, "lb_endpoints": [
            endpoint(p1[0].port(), None),
            endpoint(p1[1].port(), None),
        ]})],
        None,
    );
    let dir = TestDir::new("prio-empty-p0");
    let strait = start(&dir, &c);
    let got = spread(strait.listen, 20);
    assert_eq!(with_prefix(&got, "p1-"), 20, "{got:?}");
    if let Some(envoy) = Envoy::start(&dir, &c) {
        let e = spread(envoy.listen, 20);
        assert_eq!(with_prefix(&e, "p1-"), 20, "Envoy: {e:?}");
    }
}

/// P0 with 2 of 5 hosts healthy keeps 56% of the traffic (40% x 1.4) and spills 44% to P1.
/// The level is chosen at random per request, so the shares are checked with a margin
/// (4 standard deviations over 600 requests), on Strait and on Envoy.
#[test]
fn partial_p0_health_spills_to_p1() {
    let p0 = echoes("p0-", 5);
    let p1 = echoes("p1-", 1);
    let c = cluster_with(
        vec![
            json!({"lb_endpoints": [
                endpoint(p0[0].port(), None),
                endpoint(p0[1].port(), None),
                endpoint(p0[2].port(), Some("UNHEALTHY")),
                endpoint(p0[3].port(), Some("UNHEALTHY")),
                endpoint(p0[4].port(), Some("UNHEALTHY")),
            ]}),
            json!({"priority": 1, "lb_endpoints": [endpoint(p1[0].port(), None)]}),
        ],
        None,
    );
    let n = 600;
    let check = |who: &str, got: &HashMap<String, usize>| {
        let to_p1 = got.get("p1-0").copied().unwrap_or(0);
        let healthy_p0 =
            got.get("p0-0").copied().unwrap_or(0) + got.get("p0-1").copied().unwrap_or(0);
        assert_eq!(
            to_p1 + healthy_p0,
            n,
            "{who}: unhealthy hosts got traffic: {got:?}"
        );
        // Expected 264 (44%); sd = sqrt(600 x 0.44 x 0.56) = 12.2.
        assert!(
            (215..=313).contains(&to_p1),
            "{who}: {to_p1} of {n} to P1: {got:?}"
        );
    };
    let dir = TestDir::new("prio-spill");
    let strait = start(&dir, &c);
    check("strait", &spread(strait.listen, n));
    if let Some(envoy) = Envoy::start(&dir, &c) {
        check("Envoy", &spread(envoy.listen, n));
    }
}

/// `locality_weighted_lb_config`: localities weighted 3 : 1 share traffic 3 : 1; a locality
/// without `load_balancing_weight` gets none.
#[test]
fn locality_weights_split_traffic() {
    let a = echoes("a-", 2);
    let b = echoes("b-", 1);
    let z = echoes("z-", 1);
    let c = cluster_with(
        vec![
            json!({"locality": {"zone": "a"}, "load_balancing_weight": 3,
                   "lb_endpoints": [endpoint(a[0].port(), None), endpoint(a[1].port(), None)]}),
            json!({"locality": {"zone": "b"}, "load_balancing_weight": 1,
                   "lb_endpoints": [endpoint(b[0].port(), None)]}),
            json!({"locality": {"zone": "z"}, "lb_endpoints": [endpoint(z[0].port(), None)]}),
        ],
        Some(json!({"locality_weighted_lb_config": {}})),
    );
    let n = 400;
    let check = |who: &str, got: &HashMap<String, usize>, margin: usize| {
        let to_a = with_prefix(got, "a-");
        assert!(to_a.abs_diff(300) <= margin, "{who}: {got:?}");
        assert_eq!(with_prefix(got, "z-"), 0, "{who}: {got:?}");
        assert_eq!(to_a + with_prefix(got, "b-"), n, "{who}: {got:?}");
    };
    let dir = TestDir::new("prio-locality");
    let strait = start(&dir, &c);
    // One worker: Strait's weighted schedule gives the exact split.
    check("strait", &spread(strait.listen, n), 0);
    if let Some(envoy) = Envoy::start(&dir, &c) {
        check("Envoy", &spread(envoy.listen, n), 20);
    }
}

/// `zone_aware_lb_config` needs a local cluster, which Strait does not support: refused
/// with the field's path.
#[test]
fn zone_aware_routing_is_refused_by_path() {
    let dir = TestDir::new("prio-zone-aware");
    let c = cluster_with(
        vec![json!({"lb_endpoints": [endpoint(port(), None)]})],
        Some(json!({"zone_aware_lb_config": {"min_cluster_size": 3}})),
    );
    let path = dir.join("bootstrap.json");
    std::fs::write(&path, bootstrap_for(port(), port(), &c).to_string()).unwrap();
    let out = run_strait(
        &dir,
        &["-c", path.to_str().unwrap(), "--mode", "validate"],
        Duration::from_secs(10),
        || {},
    );
    assert!(!out.status.success());
    assert!(
        out.stderr
            .contains("static_resources.clusters[0].common_lb_config.zone_aware_lb_config"),
        "{}",
        out.stderr
    );
}

/// `/clusters` (text and JSON) of a cluster with several priorities, localities and EDS
/// statuses is the same as Envoy's.
#[test]
fn clusters_output_matches_envoy() {
    // No traffic is sent: free ports stand in for the hosts.
    let p = port();
    let ports: Vec<u16> = (0..6).map(|_| port()).collect();
    let c = cluster_with(
        vec![
            json!({"locality": {"region": "r1", "zone": "z1", "sub_zone": "s1"}, "load_balancing_weight": 3,
            "lb_endpoints": [
                {"endpoint": {"address": socket_address(p), "hostname": "h1"},
                 "metadata": {"filter_metadata": {"envoy.lb": {"canary": true, "version": "v1"}}}},
                endpoint(ports[0], Some("DEGRADED")),
                {"endpoint": {"address": socket_address(ports[1])}, "health_status": "UNHEALTHY", "load_balancing_weight": 5},
            ]}),
            json!({"locality": {"region": "r1", "zone": "z2"}, "load_balancing_weight": 1,
                   "lb_endpoints": [endpoint(ports[2], Some("DRAINING")), endpoint(ports[3], Some("TIMEOUT"))]}),
            json!({"priority": 2, "lb_endpoints": [endpoint(ports[4], Some("UNKNOWN"))]}),
            json!({"locality": {"region": "r2"}, "priority": 1, "load_balancing_weight": 1,
                   "lb_endpoints": [endpoint(ports[5], Some("HEALTHY"))]}),
        ],
        Some(json!({"locality_weighted_lb_config": {}, "healthy_panic_threshold": {"value": 30}})),
    );
    let dir = TestDir::new("prio-clusters");
    let strait = start(&dir, &c);
    let text = strait.admin_get("/clusters").body_str();
    // Hosts are listed priority by priority.
    let order: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.ends_with("::priority::0")
                || l.ends_with("::priority::1")
                || l.ends_with("::priority::2")
        })
        .map(|l| l.rsplit("::").next().unwrap_or(""))
        .collect();
    assert_eq!(order, ["0", "0", "0", "0", "0", "1", "2"], "{text}");
    assert!(
        text.contains(&format!("c::127.0.0.1:{p}::canary::true\n")),
        "{text}"
    );
    let json = strait.admin_get("/clusters?format=json").json();
    let Some(envoy) = Envoy::start(&dir, &c) else {
        return;
    };
    let etext = http_get(envoy.admin, "/clusters").unwrap().body_str();
    assert_eq!(text, etext, "strait vs Envoy /clusters");
    let ejson = http_get(envoy.admin, "/clusters?format=json")
        .unwrap()
        .json();
    assert_eq!(json, ejson, "strait vs Envoy /clusters?format=json");
}

/// Subset load balancing through a route's `metadata_match`: requests for `version: v2`
/// reach only the v2 host.
#[test]
fn route_metadata_match_selects_a_subset() {
    let v1 = echoes("v1-", 1);
    let v2 = echoes("v2-", 1);
    let mut c = cluster_with(
        vec![json!({"lb_endpoints": [
            {"endpoint": {"address": socket_address(v1[0].port())},
             "metadata": {"filter_metadata": {"envoy.lb": {"version": "v1"}}}},
            {"endpoint": {"address": socket_address(v2[0].port())},
             "metadata": {"filter_metadata": {"envoy.lb": {"version": "v2"}}}},
        ]})],
        None,
    );
    c["lb_subset_config"] =
        json!({"subset_selectors": [{"keys": ["version"]}], "fallback_policy": "NO_FALLBACK"});
    let (admin, listen) = (port(), port());
    let mut b = bootstrap_for(admin, listen, &c);
    b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
        ["virtual_hosts"][0]["routes"] = json!([
        {"match": {"prefix": "/v2"}, "route": {"cluster": "c",
            "metadata_match": {"filter_metadata": {"envoy.lb": {"version": "v2"}}}}},
        {"match": {"prefix": "/none"}, "route": {"cluster": "c",
            "metadata_match": {"filter_metadata": {"envoy.lb": {"version": "v9"}}}}},
    ]);
    let dir = TestDir::new("prio-subset");
    let strait = Strait::start(&dir, &b);
    for i in 0..10 {
        let r = http_get(strait.listen, &format!("/v2/{i}")).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-echo-name"), Some("v2-0"));
    }
    // No subset and NO_FALLBACK: no healthy upstream.
    assert_eq!(http_get(strait.listen, "/none").unwrap().status, 503);
}
