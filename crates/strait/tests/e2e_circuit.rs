//! End-to-end circuit breakers and connection-pool limits through the real `strait`
//! binary: `max_requests`, `max_pending_requests` and `max_connections` overflow (503,
//! `x-envoy-overloaded: true`, flag UO, overflow stats, as Envoy 1.40 answers), the
//! `track_remaining` gauges, HTTP/2 `max_concurrent_streams`, `max_connection_duration`,
//! and a client that does not read a large response.

#[path = "e2e_common.rs"]
mod common;

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use strait_testkit::EchoServer;

const LOG_FORMAT: &str = "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\n";

fn start(dir: &TestDir, cluster: Value) -> Strait {
    let (admin, listen) = (port(), port());
    let log = file_log_text(&dir.join("access.log"), LOG_FORMAT);
    let b = bootstrap(
        admin,
        vec![listener(
            "main",
            listen,
            "ingress",
            vec![route("/", "echo", Some("10s"))],
            vec![log],
        )],
        vec![cluster],
    );
    Strait::start(dir, &b)
}

fn with(mut c: Value, extra: Value) -> Value {
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    c
}

/// Sends `paths` concurrently, each `gap` after the previous one, and returns the responses
/// in that order.
fn concurrent(strait: &Strait, paths: &[&str], gap: Duration) -> Vec<Resp> {
    let handles: Vec<_> = paths
        .iter()
        .map(|p| {
            let (addr, p) = (strait.listen, p.to_string());
            let h = thread::spawn(move || http_get(addr, &p).expect("request"));
            thread::sleep(gap);
            h
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("request thread"))
        .collect()
}

const OVERFLOW_BODY: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: overflow";

fn assert_overflow(r: &Resp) {
    assert_eq!(r.status, 503, "{}", r.body_str());
    assert_eq!(r.header("x-envoy-overloaded"), Some("true"));
    assert_eq!(r.body_str(), OVERFLOW_BODY);
}

#[test]
fn max_requests_overflow_is_a_503_uo() {
    let echo = EchoServer::start_background("echo").unwrap();
    let dir = TestDir::new("cb-max-requests");
    let strait = start(
        &dir,
        with(
            cluster("echo", echo.port(), false),
            json!({"circuit_breakers": {"thresholds": [{"max_requests": 1, "track_remaining": true}]}}),
        ),
    );
    let p = "cluster.echo.circuit_breakers.default.";
    assert_eq!(strait.stat(&format!("{p}remaining_rq")), Some(1));
    assert_eq!(strait.stat(&format!("{p}remaining_pending")), Some(1024));
    assert_eq!(strait.stat(&format!("{p}remaining_cx")), Some(1024));
    assert_eq!(strait.stat(&format!("{p}remaining_retries")), Some(3));
    // While one slow request holds the only slot, the gauges show it.
    let slow = {
        let addr = strait.listen;
        thread::spawn(move || http_get(addr, "/delay/1500").expect("request"))
    };
    assert!(
        strait.wait_stat(&format!("{p}rq_open"), Duration::from_secs(2), |v| v == 1),
        "{:?}",
        strait.stats()
    );
    assert_eq!(strait.stat(&format!("{p}remaining_rq")), Some(0));
    let r = http_get(strait.listen, "/second").expect("request");
    assert_overflow(&r);
    assert_eq!(slow.join().expect("slow").status, 200);
    let s = strait.stats();
    assert_eq!(s["cluster.echo.upstream_rq_active_overflow"], 1);
    assert_eq!(s["cluster.echo.upstream_rq_pending_overflow"], 0);
    assert_eq!(s[&format!("{p}rq_open")], 0);
    assert_eq!(s[&format!("{p}remaining_rq")], 1);
    // Envoy 1.40 charges the overflow reply to the cluster too.
    assert_eq!(s["cluster.echo.upstream_rq_503"], 1);
    let log = wait_file(&dir.join("access.log"), Duration::from_secs(3), |l| {
        l.lines().count() >= 2
    })
    .expect("access log");
    assert!(
        log.contains("503 UO upstream_reset_before_response_started{overflow}\n"),
        "{log}"
    );
    assert!(log.contains("200 - via_upstream\n"), "{log}");
    // The slot is free again.
    assert_eq!(
        http_get(strait.listen, "/third").expect("request").status,
        200
    );
}

#[test]
fn pending_and_connection_limits() {
    let echo = EchoServer::start_background("echo").unwrap();
    let dir = TestDir::new("cb-pending");
    let strait = start(
        &dir,
        with(
            cluster("echo", echo.port(), false),
            json!({"circuit_breakers": {"thresholds": [
                {"max_connections": 1, "max_pending_requests": 1, "track_remaining": true}]}}),
        ),
    );
    // The first request opens the only connection; the second waits for it (pending); the
    // third finds the pending queue full.
    let rs = concurrent(
        &strait,
        &["/delay/800", "/delay/10", "/delay/10"],
        Duration::from_millis(200),
    );
    assert_eq!(rs[0].status, 200);
    assert_eq!(
        rs[1].status,
        200,
        "waited for the connection: {}",
        rs[1].body_str()
    );
    assert_overflow(&rs[2]);
    let s = strait.stats();
    assert_eq!(s["cluster.echo.upstream_cx_total"], 1, "{s:?}");
    assert_eq!(s["cluster.echo.upstream_cx_overflow"], 1, "{s:?}");
    assert_eq!(s["cluster.echo.upstream_rq_pending_overflow"], 1, "{s:?}");
    assert_eq!(s["cluster.echo.upstream_rq_pending_active"], 0);
    let p = "cluster.echo.circuit_breakers.default.";
    assert_eq!(
        s[&format!("{p}cx_open")],
        1,
        "the one connection stays open"
    );
    assert_eq!(s[&format!("{p}remaining_cx")], 0);
    assert_eq!(s[&format!("{p}rq_pending_open")], 0);
    assert_eq!(s[&format!("{p}remaining_pending")], 1);
}

#[test]
fn high_priority_thresholds_exist_apart() {
    let echo = EchoServer::start_background("echo").unwrap();
    let dir = TestDir::new("cb-high");
    let strait = start(
        &dir,
        with(
            cluster("echo", echo.port(), false),
            json!({"circuit_breakers": {"thresholds": [
                {"priority": "HIGH", "max_requests": 7, "track_remaining": true},
                {"max_requests": 3}]}}),
        ),
    );
    let s = strait.stats();
    assert_eq!(
        s.get("cluster.echo.circuit_breakers.high.remaining_rq"),
        Some(&7)
    );
    assert_eq!(
        s.get("cluster.echo.circuit_breakers.high.rq_open"),
        Some(&0)
    );
    assert_eq!(
        s.get("cluster.echo.circuit_breakers.default.remaining_rq"),
        None,
        "no track_remaining for DEFAULT"
    );
}

#[test]
fn http2_opens_another_connection_when_streams_are_full() {
    let echo = EchoServer::start_background("echo").unwrap();
    let dir = TestDir::new("h2-streams");
    let mut c = cluster("echo", echo.port(), true);
    c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        ["explicit_http_config"]["http2_protocol_options"] = json!({"max_concurrent_streams": 1});
    let strait = start(&dir, c);
    let rs = concurrent(
        &strait,
        &["/delay/600", "/delay/600", "/delay/600"],
        Duration::from_millis(50),
    );
    assert!(rs.iter().all(|r| r.status == 200));
    assert_eq!(strait.stat("cluster.echo.upstream_cx_http2_total"), Some(3));
    // Now idle: the next requests reuse those connections.
    for _ in 0..3 {
        assert_eq!(http_get(strait.listen, "/x").expect("request").status, 200);
    }
    assert_eq!(strait.stat("cluster.echo.upstream_cx_http2_total"), Some(3));
}

#[test]
fn max_connection_duration_retires_connections() {
    let echo = EchoServer::start_background("echo").unwrap();
    let dir = TestDir::new("cx-duration");
    let strait = start(
        &dir,
        with(
            cluster("echo", echo.port(), false),
            json!({"common_http_protocol_options": {"max_connection_duration": "0.4s"}}),
        ),
    );
    let mut c = Conn::connect(strait.listen).unwrap();
    assert_eq!(c.get("/a").unwrap().status, 200);
    assert_eq!(c.get("/b").unwrap().status, 200);
    assert_eq!(strait.stat("cluster.echo.upstream_cx_total"), Some(1));
    thread::sleep(Duration::from_millis(500));
    assert_eq!(c.get("/c").unwrap().status, 200);
    let s = strait.stats();
    assert_eq!(s["cluster.echo.upstream_cx_total"], 2, "{s:?}");
    assert_eq!(
        s["cluster.echo.upstream_cx_max_duration_reached"], 1,
        "{s:?}"
    );
}

/// A client that asks for 256 MiB and reads nothing: Strait stops reading the upstream once
/// the socket buffers are full, so its memory stays far below the response size.
#[test]
fn slow_reader_does_not_make_strait_buffer_the_response() {
    let echo = EchoServer::start_background("echo").unwrap();
    let dir = TestDir::new("slow-reader");
    let strait = start(&dir, cluster("echo", echo.port(), false));
    assert_eq!(http_get(strait.listen, "/warm").expect("warm").status, 200);
    let before = proc_status_kib(strait.pid(), "VmRSS:").expect("rss");
    let mut s = TcpStream::connect(strait.listen).expect("connect");
    s.write_all(b"GET /bytes/268435456 HTTP/1.1\r\nhost: x\r\n\r\n")
        .expect("write");
    // Give the upstream time to push as much as it can.
    thread::sleep(Duration::from_secs(2));
    let during = proc_status_kib(strait.pid(), "VmRSS:").expect("rss");
    let rx = strait
        .stat("cluster.echo.upstream_cx_rx_bytes_total")
        .unwrap_or(0);
    drop(s);
    assert!(
        during < before + 64 * 1024,
        "RSS grew from {before} KiB to {during} KiB for a response nobody reads"
    );
    // Nothing near the whole response went through (counted when the connection closes).
    assert!(rx < 64 << 20, "{rx}");
}

/// A route's `priority: HIGH` uses the HIGH thresholds: with DEFAULT `max_requests: 1` and
/// HIGH `max_requests: 5`, two concurrent slow requests both pass on the HIGH route while the
/// second overflows on the DEFAULT one.
#[test]
fn route_priority_selects_the_high_thresholds() {
    let echo = EchoServer::start_background("echo").unwrap();
    let dir = TestDir::new("cb-route-priority");
    let (admin, listen) = (port(), port());
    let mut high = route("/high/", "echo", Some("10s"));
    high["route"]["priority"] = json!("HIGH");
    let b = bootstrap(
        admin,
        vec![listener(
            "main",
            listen,
            "ingress",
            vec![high, route("/", "echo", Some("10s"))],
            vec![],
        )],
        vec![with(
            cluster("echo", echo.port(), false),
            json!({"circuit_breakers": {"thresholds": [
                {"max_requests": 1},
                {"priority": "HIGH", "max_requests": 5},
            ]}}),
        )],
    );
    let strait = Strait::start(&dir, &b);
    let high = concurrent(
        &strait,
        &["/high/delay/600", "/high/delay/600"],
        Duration::from_millis(150),
    );
    assert!(high.iter().all(|r| r.status == 200), "{high:?}");
    let default = concurrent(
        &strait,
        &["/delay/600", "/delay/600"],
        Duration::from_millis(150),
    );
    assert_eq!(default[0].status, 200);
    assert_overflow(&default[1]);
}

/// `max_connection_pools: 1` with two keep-alive hosts on one worker (Envoy 1.40 observed
/// the same): the first host's pool stays open with its idle connection, so a request
/// balanced to the second host needs a second pool and gets Envoy's
/// `503 no healthy upstream` (flag UH), counted in `upstream_cx_pool_overflow`.
#[test]
fn max_connection_pools_overflow_is_no_healthy_upstream() {
    let a = EchoServer::start_background("a").unwrap();
    let b = EchoServer::start_background("b").unwrap();
    let dir = TestDir::new("cb-pools");
    let ep = |p: u16| json!({"endpoint": {"address": socket_address(p)}});
    let c = json!({
        "name": "echo",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "echo", "endpoints": [{"lb_endpoints": [ep(a.port()), ep(b.port())]}]},
        "circuit_breakers": {"thresholds": [{"max_connection_pools": 1, "track_remaining": true}]},
    });
    let strait = start(&dir, c);
    let statuses: Vec<u16> = (0..4)
        .map(|i| {
            http_get(strait.listen, &format!("/p{i}"))
                .expect("request")
                .status
        })
        .collect();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(ok, 2, "{statuses:?}");
    assert_eq!(
        statuses.iter().filter(|s| **s == 503).count(),
        2,
        "{statuses:?}"
    );
    let s = strait.stats();
    assert_eq!(s["cluster.echo.upstream_cx_pool_overflow"], 2);
    assert_eq!(s["cluster.echo.circuit_breakers.default.cx_pool_open"], 1);
    assert_eq!(
        s["cluster.echo.circuit_breakers.default.remaining_cx_pools"],
        0
    );
    assert_eq!(s["cluster.echo.upstream_rq_503"], 2);
    let log = wait_file(&dir.join("access.log"), Duration::from_secs(3), |l| {
        l.lines().count() >= 4
    })
    .expect("access log");
    assert_eq!(
        log.matches("503 UH no_healthy_upstream\n").count(),
        2,
        "{log}"
    );
}
