//! End-to-end service discovery through the real `strait` binary: STRICT_DNS and
//! LOGICAL_DNS clusters resolved through a test DNS server (pointed at with the c-ares
//! `resolvers` field, as a user points Envoy at one), and ORIGINAL_DST with
//! `use_http_header`.

#[path = "e2e_common.rs"]
mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use strait_testkit::{BackgroundEcho, TestDns};

const CARES_TYPE: &str =
    "type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// Echo servers named after their address, all on one port of several loopback addresses
/// (a DNS answer gives addresses; the port comes from the cluster).
fn echoes(addrs: &[&str]) -> (u16, Vec<BackgroundEcho>) {
    for _ in 0..20 {
        let port = port();
        let started: Result<Vec<_>, _> = addrs
            .iter()
            .map(|a| BackgroundEcho::start(a, SocketAddr::new(ip(a), port)))
            .collect();
        if let Ok(v) = started {
            return (port, v);
        }
    }
    panic!("no port free on every loopback address");
}

fn dns_cluster(kind: &str, dns: &TestDns, name: &str, port: u16, extra: Value) -> Value {
    let mut c = json!({
        "name": "svc",
        "type": kind,
        "connect_timeout": "1s",
        "dns_refresh_rate": "0.2s",
        "dns_lookup_family": "V4_ONLY",
        "typed_dns_resolver_config": {
            "name": "envoy.network.dns_resolver.cares",
            "typed_config": {
                "@type": CARES_TYPE,
                "resolvers": [{"socket_address": {"address": "127.0.0.1", "port_value": dns.port()}}],
                "query_timeout_seconds": 1,
                "query_tries": 1,
            }
        },
        "load_assignment": {
            "cluster_name": "svc",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": name, "port_value": port}}}}]}],
        },
    });
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    c
}

fn start(dir: &TestDir, cluster: Value) -> Strait {
    let (admin, listen) = (port(), port());
    let b = bootstrap(
        admin,
        vec![listener(
            "main",
            listen,
            "ingress",
            vec![route("/", "svc", Some("2s"))],
            vec![],
        )],
        vec![cluster],
    );
    Strait::start(dir, &b)
}

/// Which echo answered each of `n` requests, counted by name.
fn spread(strait: &Strait, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for i in 0..n {
        let r = http_get(strait.listen, &format!("/r/{i}")).expect("request");
        let name = match r.status {
            200 => r.header("x-echo-name").unwrap_or("?").to_string(),
            s => format!("status {s}"),
        };
        *seen.entry(name).or_default() += 1;
    }
    seen
}

/// `/clusters` lines `svc::<addr>::cx_total::..`: the cluster's host addresses.
fn host_addrs(strait: &Strait) -> Vec<String> {
    let body = strait.admin_get("/clusters").body_str();
    let mut v: Vec<String> = body
        .lines()
        .filter_map(|l| l.strip_prefix("svc::")?.split_once("::cx_total::"))
        .map(|(a, _)| a.to_string())
        .collect();
    v.sort();
    v
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

#[test]
fn strict_dns_hosts_follow_the_answers() {
    let dns = TestDns::start().expect("dns");
    let (p, _echoes) = echoes(&["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
    dns.set("backend.test", &[ip("127.0.0.2"), ip("127.0.0.3")]);
    let dir = TestDir::new("strict-dns");
    let strait = start(
        &dir,
        dns_cluster("STRICT_DNS", &dns, "backend.test", p, json!({})),
    );
    assert!(
        strait.wait_stat(
            "cluster.svc.membership_total",
            Duration::from_secs(5),
            |v| v == 2
        ),
        "two hosts after the first resolution: {:?}",
        strait.stats()
    );
    let seen = spread(&strait, 20);
    assert_eq!(seen.get("127.0.0.2"), Some(&10), "{seen:?}");
    assert_eq!(seen.get("127.0.0.3"), Some(&10), "{seen:?}");
    assert_eq!(
        host_addrs(&strait),
        vec![format!("127.0.0.2:{p}"), format!("127.0.0.3:{p}")]
    );
    let hostname = strait.admin_get("/clusters").body_str();
    assert!(
        hostname.contains(&format!("svc::127.0.0.2:{p}::hostname::backend.test")),
        "{hostname}"
    );

    // A new answer: the hosts follow after the next refresh (the answer's 30 s TTL is not
    // waited for without respect_dns_ttl, as in Envoy).
    dns.set("backend.test", &[ip("127.0.0.3"), ip("127.0.0.4")]);
    assert!(
        wait_until(Duration::from_secs(5), || host_addrs(&strait)
            == vec![format!("127.0.0.3:{p}"), format!("127.0.0.4:{p}")]),
        "hosts: {:?}",
        host_addrs(&strait)
    );
    let seen = spread(&strait, 20);
    assert_eq!(seen.get("127.0.0.3"), Some(&10), "{seen:?}");
    assert_eq!(seen.get("127.0.0.4"), Some(&10), "{seen:?}");
    // Unchanged answers (every 0.2 s) rebuild nothing.
    assert!(
        strait.wait_stat(
            "cluster.svc.update_no_rebuild",
            Duration::from_secs(3),
            |v| v >= 1
        ),
        "{:?}",
        strait.stats()
    );
    let s = strait.stats();
    assert!(s["cluster.svc.update_success"] >= 3, "{s:?}");
    assert!(s["cluster.svc.membership_change"] >= 2, "{s:?}");
    assert_eq!(s["cluster.svc.update_failure"], 0);
    assert!(s["dns.cares.resolve_total"] >= 2, "{s:?}");

    // The server stops answering: lookups fail, the hosts stay and keep serving.
    dns.set_answering(false);
    assert!(
        strait.wait_stat("cluster.svc.update_failure", Duration::from_secs(10), |v| v
            >= 1),
        "{:?}",
        strait.stats()
    );
    let seen = spread(&strait, 10);
    assert_eq!(seen.get("127.0.0.3"), Some(&5), "{seen:?}");
    assert_eq!(seen.get("127.0.0.4"), Some(&5), "{seen:?}");
    assert_eq!(strait.stat("cluster.svc.membership_total"), Some(2));
    assert!(strait.stat("dns.cares.timeouts").unwrap_or(0) >= 1);

    // NXDOMAIN is an answer: the name's hosts go away (Envoy 1.40 does the same).
    dns.set_answering(true);
    dns.remove("backend.test");
    assert!(
        strait.wait_stat(
            "cluster.svc.membership_total",
            Duration::from_secs(5),
            |v| v == 0
        ),
        "{:?}",
        strait.stats()
    );
    let r = http_get(strait.listen, "/none").expect("request");
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (503, "no healthy upstream")
    );
}

#[test]
fn strict_dns_failure_refresh_rate_backs_off() {
    let dns = TestDns::start().expect("dns");
    dns.set_answering(false);
    let dir = TestDir::new("dns-backoff");
    // Failures retry at most every 0.3 s instead of the 60 s refresh rate.
    let strait = start(
        &dir,
        dns_cluster(
            "STRICT_DNS",
            &dns,
            "slow.test",
            9,
            json!({"dns_refresh_rate": "60s",
                   "dns_failure_refresh_rate": {"base_interval": "0.1s", "max_interval": "0.3s"}}),
        ),
    );
    assert!(
        strait.wait_stat("cluster.svc.update_failure", Duration::from_secs(15), |v| v
            >= 3),
        "{:?}",
        strait.stats()
    );
    assert!(dns.queries("slow.test") >= 3);
    assert_eq!(strait.stat("cluster.svc.update_success"), Some(0));
}

#[test]
fn logical_dns_uses_the_first_address_and_follows_changes() {
    let dns = TestDns::start().expect("dns");
    let (p, _echoes) = echoes(&["127.0.0.5", "127.0.0.6"]);
    dns.set("logical.test", &[ip("127.0.0.5"), ip("127.0.0.6")]);
    let dir = TestDir::new("logical-dns");
    let strait = start(
        &dir,
        dns_cluster("LOGICAL_DNS", &dns, "logical.test", p, json!({})),
    );
    assert!(
        strait.wait_stat(
            "cluster.svc.membership_total",
            Duration::from_secs(5),
            |v| v == 1
        ),
        "{:?}",
        strait.stats()
    );
    let seen = spread(&strait, 6);
    assert_eq!(
        seen.get("127.0.0.5"),
        Some(&6),
        "one logical host: {seen:?}"
    );
    dns.set("logical.test", &[ip("127.0.0.6")]);
    assert!(
        wait_until(Duration::from_secs(5), || host_addrs(&strait)
            == vec![format!("127.0.0.6:{p}")]),
        "{:?}",
        host_addrs(&strait)
    );
    let seen = spread(&strait, 6);
    assert_eq!(
        seen.get("127.0.0.6"),
        Some(&6),
        "new connections use the new address: {seen:?}"
    );
    assert_eq!(strait.stat("cluster.svc.membership_total"), Some(1));
    // The address change counts as a membership change, as in Envoy 1.40.
    assert_eq!(strait.stat("cluster.svc.membership_change"), Some(2));
}

#[test]
fn original_dst_with_http_header() {
    let a = BackgroundEcho::start("a", "127.0.0.1:0".parse().expect("addr")).expect("echo");
    let b = BackgroundEcho::start("b", "127.0.0.1:0".parse().expect("addr")).expect("echo");
    let dir = TestDir::new("original-dst");
    let strait = start(
        &dir,
        json!({
            "name": "svc",
            "type": "ORIGINAL_DST",
            "lb_policy": "CLUSTER_PROVIDED",
            "connect_timeout": "1s",
            "cleanup_interval": "0.5s",
            "original_dst_lb_config": {"use_http_header": true},
            // Connections close after each response: a host with a connection (idle
            // ones too) is kept, as in Envoy.
            "common_http_protocol_options": {"max_requests_per_connection": 1},
        }),
    );
    let get = |dst: Option<&str>| {
        let headers: Vec<(&str, &str)> = dst
            .map(|d| vec![("x-envoy-original-dst-host", d)])
            .unwrap_or_default();
        http_request(strait.listen, "GET", "/od", &headers, b"").expect("request")
    };
    for _ in 0..3 {
        let r = get(Some(&a.addr().to_string()));
        assert_eq!((r.status, r.header("x-echo-name")), (200, Some("a")));
        let r = get(Some(&b.addr().to_string()));
        assert_eq!((r.status, r.header("x-echo-name")), (200, Some("b")));
    }
    assert!(
        strait.wait_stat(
            "cluster.svc.membership_total",
            Duration::from_secs(2),
            |v| v == 2
        ),
        "{:?}",
        strait.stats()
    );
    // No header and no restored destination: no host, as in Envoy.
    let r = get(None);
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (503, "no healthy upstream")
    );
    let r = get(Some("not-an-address"));
    assert_eq!(r.status, 503);
    assert_eq!(
        strait.stat("cluster.svc.original_dst_host_invalid"),
        Some(1)
    );
    // Hosts without picks or connections are removed after a cleanup interval or two.
    assert!(
        strait.wait_stat(
            "cluster.svc.membership_total",
            Duration::from_secs(3),
            |v| v == 0
        ),
        "{:?}",
        strait.stats()
    );
    let r = get(Some(&a.addr().to_string()));
    assert_eq!((r.status, r.header("x-echo-name")), (200, Some("a")));
}
