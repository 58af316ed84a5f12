//! End-to-end outlier detection through the real `strait` binary: three backends, one of
//! them answering 503. It is ejected after 5 consecutive 5xx, traffic goes to the others,
//! and it returns after `base_ejection_time`. With Envoy's default `max_ejection_percent`
//! (10%) one host of three is never ejected (the ejection overflows), as in Envoy.

#[path = "e2e_common.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// An HTTP/1.1 backend answering every request with `status` and its port as the body.
fn backend(status: Arc<AtomicU16>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            let status = status.clone();
            thread::spawn(move || serve(s, port, &status));
        }
    });
    port
}

fn serve(mut s: TcpStream, port: u16, status: &AtomicU16) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        buf.drain(..end + 4);
        let body = port.to_string();
        let resp = format!(
            "HTTP/1.1 {} X\r\ncontent-length: {}\r\n\r\n{body}",
            status.load(Ordering::SeqCst),
            body.len()
        );
        if s.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

fn start(dir: &TestDir, ports: &[u16], outlier: Value) -> Strait {
    let (admin, listen) = (port(), port());
    let eps: Vec<Value> = ports
        .iter()
        .map(|p| json!({"endpoint": {"address": socket_address(*p)}}))
        .collect();
    let cluster = json!({
        "name": "svc",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "svc", "endpoints": [{"lb_endpoints": eps}]},
        "outlier_detection": outlier,
    });
    let b = bootstrap(
        admin,
        vec![listener(
            "main",
            listen,
            "ingress",
            vec![route("/", "svc", None)],
            vec![],
        )],
        vec![cluster],
    );
    Strait::start(dir, &b)
}

fn flags(strait: &Strait, port: u16) -> String {
    let body = strait.admin_get("/clusters").body_str();
    let key = format!("::127.0.0.1:{port}::health_flags::");
    body.lines()
        .find_map(|l| l.split_once(&key).map(|(_, v)| v.to_string()))
        .unwrap_or_default()
}

fn three_backends() -> (Vec<u16>, Arc<AtomicU16>) {
    let bad = Arc::new(AtomicU16::new(503));
    let ports = vec![
        backend(bad.clone()),
        backend(Arc::new(AtomicU16::new(200))),
        backend(Arc::new(AtomicU16::new(200))),
    ];
    (ports, bad)
}

#[test]
fn consecutive_5xx_ejects_then_the_host_returns() {
    let (ports, _bad) = three_backends();
    let dir = TestDir::new("outlier-5xx");
    let strait = start(
        &dir,
        &ports,
        json!({"interval": "0.2s", "base_ejection_time": "1.5s", "max_ejection_percent": 50}),
    );
    // Round robin over three hosts: the bad one has answered 5 times after 15 requests.
    let mut bad_answers = 0;
    for i in 0..15 {
        let r = http_get(strait.listen, &format!("/a{i}")).unwrap();
        if r.status == 503 {
            bad_answers += 1;
            assert_eq!(r.body_str(), ports[0].to_string());
        }
    }
    assert_eq!(bad_answers, 5);
    assert!(
        strait.wait_stat(
            "cluster.svc.outlier_detection.ejections_active",
            Duration::from_secs(2),
            |v| v == 1
        ),
        "{:?}",
        strait.stats()
    );
    let ejected_at = Instant::now();
    assert_eq!(flags(&strait, ports[0]), "/failed_outlier_check");
    let stats = strait.stats();
    let od = |n: &str| {
        stats
            .get(&format!("cluster.svc.outlier_detection.{n}"))
            .copied()
    };
    assert_eq!(od("ejections_enforced_consecutive_5xx"), Some(1));
    assert_eq!(od("ejections_detected_consecutive_5xx"), Some(1));
    assert_eq!(od("ejections_enforced_total"), Some(1));
    assert_eq!(od("ejections_total"), Some(1));
    // 503 is a gateway error too: detected, not enforced (enforcing default 0), as Envoy.
    assert_eq!(
        od("ejections_detected_consecutive_gateway_failure"),
        Some(1)
    );
    assert_eq!(
        od("ejections_enforced_consecutive_gateway_failure"),
        Some(0)
    );
    assert_eq!(stats.get("cluster.svc.membership_healthy"), Some(&2));

    // Only the good hosts answer while it is out.
    for i in 0..12 {
        let r = http_get(strait.listen, &format!("/b{i}")).unwrap();
        assert_eq!(r.status, 200, "request {i} went to the ejected host");
    }

    // base_ejection_time (1.5 s) later, on an interval tick, it is back.
    let deadline = Instant::now() + Duration::from_secs(4);
    while flags(&strait, ports[0]) != "healthy" {
        assert!(
            Instant::now() < deadline,
            "not unejected: {}",
            flags(&strait, ports[0])
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert!(ejected_at.elapsed() >= Duration::from_millis(1300));
    assert_eq!(
        strait.stat("cluster.svc.outlier_detection.ejections_active"),
        Some(0)
    );
    let mut back = 0;
    for i in 0..6 {
        back += u32::from(http_get(strait.listen, &format!("/c{i}")).unwrap().status == 503);
    }
    assert!(back > 0, "the unejected host gets traffic again");
}

#[test]
fn default_max_ejection_percent_overflows_with_three_hosts() {
    let (ports, _bad) = three_backends();
    let dir = TestDir::new("outlier-overflow");
    let strait = start(&dir, &ports, json!({"interval": "0.2s"}));
    for i in 0..15 {
        http_get(strait.listen, &format!("/a{i}")).unwrap();
    }
    // Both detectors (5xx and gateway failure) fire and both overflow: 1 of 3 is > 10%.
    assert!(
        strait.wait_stat(
            "cluster.svc.outlier_detection.ejections_overflow",
            Duration::from_secs(2),
            |v| v == 2
        ),
        "{:?}",
        strait.stats()
    );
    assert_eq!(flags(&strait, ports[0]), "healthy");
    assert_eq!(
        strait.stat("cluster.svc.outlier_detection.ejections_active"),
        Some(0)
    );
    assert_eq!(
        strait.stat("cluster.svc.outlier_detection.ejections_consecutive_5xx"),
        Some(1)
    );
}

/// Connect failures count as 503s (not split): the 5th refused connection ejects, as the
/// same traffic does in Envoy 1.40 (each failure is counted once).
#[test]
fn connect_failures_eject() {
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let ports = vec![
        dead,
        backend(Arc::new(AtomicU16::new(200))),
        backend(Arc::new(AtomicU16::new(200))),
    ];
    let dir = TestDir::new("outlier-connect");
    let strait = start(
        &dir,
        &ports,
        json!({"interval": "30s", "base_ejection_time": "2s", "max_ejection_percent": 50}),
    );
    let mut failures = 0;
    for i in 0..15 {
        let active = strait.stat("cluster.svc.outlier_detection.ejections_active");
        assert_eq!(active, Some(0), "ejected after only {failures} failures");
        failures += u32::from(http_get(strait.listen, &format!("/a{i}")).unwrap().status == 503);
        if failures == 5 {
            break;
        }
    }
    assert_eq!(failures, 5);
    assert!(strait.wait_stat(
        "cluster.svc.outlier_detection.ejections_active",
        Duration::from_secs(2),
        |v| v == 1
    ));
    assert_eq!(flags(&strait, dead), "/failed_outlier_check");
}

/// The success-rate detector's figures reach `/clusters` (Envoy's
/// `<cluster>::outlier::success_rate_*` lines and each host's `success_rate`): one host of
/// three answering only 503 has rate 0, the others 100, the cluster average 66.7 (not
/// enforced here, so nothing is ejected).
#[test]
fn success_rate_figures_show_in_clusters() {
    let (ports, _bad) = three_backends();
    let dir = TestDir::new("outlier-sr");
    let strait = start(
        &dir,
        &ports,
        json!({"interval": "0.3s", "consecutive_5xx": 1000, "success_rate_minimum_hosts": 3,
               "success_rate_request_volume": 5, "enforcing_success_rate": 0}),
    );
    let before = strait.admin_get("/clusters").body_str();
    assert!(
        before.contains("svc::outlier::success_rate_average::-1\n"),
        "{before}"
    );
    for i in 0..30 {
        let _ = http_get(strait.listen, &format!("/s{i}")).unwrap();
    }
    let line = |body: &str, key: &str| -> Option<f64> {
        body.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.parse().ok())
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    let body = loop {
        let body = strait.admin_get("/clusters").body_str();
        if line(&body, "svc::outlier::success_rate_average::").is_some_and(|v| v > 0.0)
            || Instant::now() > deadline
        {
            break body;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let avg = line(&body, "svc::outlier::success_rate_average::").unwrap_or(-1.0);
    assert!((avg - 200.0 / 3.0).abs() < 0.01, "{body}");
    let bad = format!("svc::127.0.0.1:{}::success_rate::", ports[0]);
    let good = format!("svc::127.0.0.1:{}::success_rate::", ports[1]);
    assert_eq!(line(&body, &bad), Some(0.0), "{body}");
    assert_eq!(line(&body, &good), Some(100.0), "{body}");
    assert_eq!(flags(&strait, ports[0]), "healthy");
}
