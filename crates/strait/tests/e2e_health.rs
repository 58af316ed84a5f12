//! End-to-end active health checking through the real `strait` binary: HTTP checks against
//! a backend whose health endpoint the test flips, TCP send/receive checks against a
//! listener that starts closing connections, gRPC `grpc.health.v1` checks against a small
//! h2 server, and the Redis checker against a real `redis-server` when one is installed.

#[path = "e2e_common.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// An HTTP/1.1 backend: `/healthz` answers `health` (flippable); other paths answer 200 with
/// the backend's name, plus `x-envoy-immediate-health-check-fail` on `/immediate`. Health
/// check requests are recorded raw.
struct Backend {
    port: u16,
    health: Arc<AtomicU16>,
    hc_requests: Arc<Mutex<Vec<String>>>,
}

impl Backend {
    fn start(name: &'static str) -> Backend {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let health = Arc::new(AtomicU16::new(200));
        let hc_requests = Arc::new(Mutex::new(Vec::new()));
        let (h, r) = (health.clone(), hc_requests.clone());
        thread::spawn(move || {
            for s in l.incoming().flatten() {
                let (h, r) = (h.clone(), r.clone());
                thread::spawn(move || serve_http(s, name, &h, &r));
            }
        });
        Backend {
            port,
            health,
            hc_requests,
        }
    }
}

fn serve_http(mut s: TcpStream, name: &str, health: &AtomicU16, hc: &Mutex<Vec<String>>) {
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
        let head = String::from_utf8_lossy(&buf[..end + 4]).to_string();
        buf.drain(..end + 4);
        let path = head.split(' ').nth(1).unwrap_or("").to_string();
        let (status, extra) = if path == "/healthz" {
            hc.lock().unwrap().push(head);
            (health.load(Ordering::SeqCst), "")
        } else if path == "/immediate" {
            (200, "x-envoy-immediate-health-check-fail: true\r\n")
        } else {
            (200, "")
        };
        let resp = format!(
            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\n{extra}\r\n{name}",
            name.len()
        );
        if s.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

fn cluster_with(name: &str, ports: &[u16], health_check: Value) -> Value {
    let eps: Vec<Value> = ports
        .iter()
        .map(|p| json!({"endpoint": {"address": socket_address(*p)}}))
        .collect();
    json!({
        "name": name,
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": eps}]},
        "health_checks": [health_check],
    })
}

/// Fast checks: every 200 ms with or without traffic (Envoy's `no_traffic_interval`
/// default is 60 s).
fn timing(unhealthy: u32, healthy: u32) -> Value {
    json!({
        "timeout": "1s",
        "interval": "0.2s",
        "no_traffic_interval": "0.2s",
        "unhealthy_threshold": unhealthy,
        "healthy_threshold": healthy,
    })
}

fn merged(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

fn start(dir: &TestDir, cluster: Value) -> Strait {
    let (admin, listen) = (port(), port());
    let name = cluster["name"].as_str().unwrap().to_string();
    let b = bootstrap(
        admin,
        vec![listener(
            "main",
            listen,
            "ingress",
            vec![route("/", &name, None)],
            vec![],
        )],
        vec![cluster],
    );
    Strait::start(dir, &b)
}

/// `health_flags` of the host on `port` in `/clusters`.
fn flags(strait: &Strait, port: u16) -> String {
    let body = strait.admin_get("/clusters").body_str();
    let key = format!("::127.0.0.1:{port}::health_flags::");
    body.lines()
        .find_map(|l| l.split_once(&key).map(|(_, v)| v.to_string()))
        .unwrap_or_default()
}

fn wait_flags(strait: &Strait, port: u16, want: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let f = flags(strait, port);
        if f == want {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "host {port}: health_flags {f:?}, expected {want:?}\n{}",
                strait.admin_get("/clusters").body_str()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn http_check_takes_a_host_out_and_back() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let dir = TestDir::new("hc-http");
    let log = dir.join("hc-events.log");
    let hc = merged(
        timing(2, 2),
        json!({
            "event_log_path": log.display().to_string(),
            "http_health_check": {"path": "/healthz"},
        }),
    );
    let strait = start(&dir, cluster_with("web", &[a.port, b.port], hc));
    wait_flags(&strait, a.port, "healthy", Duration::from_secs(5));
    wait_flags(&strait, b.port, "healthy", Duration::from_secs(5));

    // The request Envoy 1.40 sends: host is the cluster name, user-agent Envoy/HC.
    let first = a.hc_requests.lock().unwrap()[0].clone();
    assert_eq!(
        first,
        "GET /healthz HTTP/1.1\r\nhost: web\r\nuser-agent: Envoy/HC\r\n\r\n"
    );
    assert_eq!(strait.stat("cluster.web.health_check.healthy"), Some(2));
    assert_eq!(strait.stat("cluster.web.membership_healthy"), Some(2));
    for s in ["attempt", "success"] {
        assert!(
            strait
                .stat(&format!("cluster.web.health_check.{s}"))
                .unwrap()
                >= 2
        );
    }

    // 503 fails a healthy host at once (a non-retriable active failure).
    a.health.store(503, Ordering::SeqCst);
    wait_flags(&strait, a.port, "/failed_active_hc", Duration::from_secs(3));
    assert!(strait.wait_stat(
        "cluster.web.membership_healthy",
        Duration::from_secs(2),
        |v| v == 1
    ));
    assert!(strait.stat("cluster.web.health_check.failure").unwrap() >= 1);
    assert_eq!(strait.stat("cluster.web.health_check.healthy"), Some(1));
    for i in 0..10 {
        let r = http_get(strait.listen, &format!("/r{i}")).unwrap();
        assert_eq!(
            (r.status, r.body_str()),
            (200, "b".to_string()),
            "only b serves"
        );
    }

    // Two passes (healthy_threshold) bring it back.
    a.health.store(200, Ordering::SeqCst);
    wait_flags(&strait, a.port, "healthy", Duration::from_secs(3));
    let mut seen_a = false;
    for i in 0..10 {
        let r = http_get(strait.listen, &format!("/back{i}")).unwrap();
        seen_a |= r.body_str() == "a";
    }
    assert!(seen_a, "a is back in rotation");

    // The event log: Envoy's HealthCheckEvent lines.
    let events = wait_file(&log, Duration::from_secs(2), |s| {
        s.contains("eject_unhealthy_event")
    })
    .expect("event log");
    let lines: Vec<Value> = events
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert!(
        lines
            .iter()
            .any(|e| e["add_healthy_event"]["first_check"] == true)
    );
    let eject = lines
        .iter()
        .find(|e| e.get("eject_unhealthy_event").is_some())
        .unwrap();
    assert_eq!(eject["health_checker_type"], "HTTP");
    assert_eq!(eject["cluster_name"], "web");
    assert_eq!(eject["eject_unhealthy_event"]["failure_type"], "ACTIVE");
    assert_eq!(eject["eject_unhealthy_event"]["http_status_code"], 503);
    assert_eq!(eject["host"]["socket_address"]["port_value"], a.port);
    assert!(
        lines
            .iter()
            .any(|e| e["add_healthy_event"]["first_check"] == false)
    );
}

#[test]
fn immediate_fail_from_traffic_is_a_passive_failure() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let dir = TestDir::new("hc-immediate");
    let hc = merged(
        timing(2, 2),
        json!({"http_health_check": {"path": "/healthz"}}),
    );
    let strait = start(&dir, cluster_with("web", &[a.port, b.port], hc));
    wait_flags(&strait, a.port, "healthy", Duration::from_secs(5));
    // Round robin: two requests reach both hosts.
    for _ in 0..2 {
        assert_eq!(http_get(strait.listen, "/immediate").unwrap().status, 200);
    }
    assert!(
        strait.wait_stat(
            "cluster.web.health_check.passive_failure",
            Duration::from_secs(2),
            |v| v >= 2
        ),
        "{:?}",
        strait.stats()
    );
    // Passing checks bring both back and clear the exclusion.
    wait_flags(&strait, a.port, "healthy", Duration::from_secs(3));
    wait_flags(&strait, b.port, "healthy", Duration::from_secs(3));
    let _ = &b.health;
}

/// A TCP service answering `PONG` to each `PING` until `closing` is set, then closing every
/// connection.
fn pong_server(closing: Arc<AtomicBool>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            let closing = closing.clone();
            thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 64];
                loop {
                    if closing.load(Ordering::SeqCst) {
                        return;
                    }
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(_) if closing.load(Ordering::SeqCst) => return,
                        Ok(_) => {
                            if s.write_all(b"PONG").is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    port
}

#[test]
fn tcp_check_fails_on_a_closing_listener() {
    let closing = Arc::new(AtomicBool::new(false));
    let p = pong_server(closing.clone());
    let dir = TestDir::new("hc-tcp");
    let hc = merged(
        timing(2, 1),
        json!({"tcp_health_check": {"send": {"text": "50494e47"}, "receive": [{"text": "504f4e47"}]}}),
    );
    let strait = start(&dir, cluster_with("tcp", &[p], hc));
    wait_flags(&strait, p, "healthy", Duration::from_secs(5));
    closing.store(true, Ordering::SeqCst);
    // Network failures need unhealthy_threshold (2) in a row.
    wait_flags(&strait, p, "/failed_active_hc", Duration::from_secs(5));
    assert!(
        strait
            .stat("cluster.tcp.health_check.network_failure")
            .unwrap()
            >= 2
    );
    closing.store(false, Ordering::SeqCst);
    wait_flags(&strait, p, "healthy", Duration::from_secs(5));
}

#[test]
fn tcp_connect_only_check_fails_when_nothing_listens() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let p = l.local_addr().unwrap().port();
    let dir = TestDir::new("hc-tcp-connect");
    let hc = merged(timing(1, 1), json!({"tcp_health_check": {}}));
    let strait = start(&dir, cluster_with("tcp", &[p], hc));
    wait_flags(&strait, p, "healthy", Duration::from_secs(5));
    drop(l);
    wait_flags(&strait, p, "/failed_active_hc", Duration::from_secs(5));
}

// ---------------------------------------------------------------------------------------
// gRPC
// ---------------------------------------------------------------------------------------

/// What the gRPC health server saw and answers.
#[derive(Default)]
struct GrpcState {
    serving: AtomicBool,
    requests: Mutex<Vec<(http::HeaderMap, String, bytes::Bytes)>>,
}

/// A unary response body: one message frame, then `grpc-status: 0` trailers.
struct GrpcBody(Option<bytes::Bytes>, bool);

impl http_body::Body for GrpcBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        if let Some(d) = self.0.take() {
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(d))));
        }
        if !self.1 {
            self.1 = true;
            let mut t = http::HeaderMap::new();
            t.insert("grpc-status", http::HeaderValue::from_static("0"));
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::trailers(t))));
        }
        std::task::Poll::Ready(None)
    }
}

fn grpc_server(state: Arc<GrpcState>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    l.set_nonblocking(true).unwrap();
    thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(l).unwrap();
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let state = state.clone();
                            async move {
                                use http_body_util::BodyExt;
                                let (parts, body) = req.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|c| c.to_bytes())
                                    .unwrap_or_default();
                                let serving = state.serving.load(Ordering::SeqCst);
                                state.requests.lock().unwrap().push((
                                    parts.headers.clone(),
                                    parts.uri.to_string(),
                                    body,
                                ));
                                let status = if serving { 1u8 } else { 2u8 };
                                let msg = bytes::Bytes::from(vec![0, 0, 0, 0, 2, 0x08, status]);
                                let resp = http::Response::builder()
                                    .header("content-type", "application/grpc")
                                    .body(GrpcBody(Some(msg), false))
                                    .unwrap();
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
                });
            }
        });
    });
    port
}

#[test]
fn grpc_check_follows_serving_status() {
    let state = Arc::new(GrpcState::default());
    state.serving.store(true, Ordering::SeqCst);
    let p = grpc_server(state.clone());
    let dir = TestDir::new("hc-grpc");
    let hc = merged(
        timing(2, 1),
        json!({"grpc_health_check": {"service_name": "pkg.Svc", "authority": "grpc.local"}}),
    );
    let strait = start(&dir, cluster_with("grpc", &[p], hc));
    wait_flags(&strait, p, "healthy", Duration::from_secs(5));
    {
        let reqs = state.requests.lock().unwrap();
        let (h, uri, body) = &reqs[0];
        assert_eq!(uri, "http://grpc.local/grpc.health.v1.Health/Check");
        assert_eq!(h["content-type"], "application/grpc");
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["user-agent"], "Envoy/HC");
        assert_eq!(h["grpc-timeout"], "1000m");
        // HealthCheckRequest{service: "pkg.Svc"} in a gRPC frame.
        assert_eq!(&body[..], b"\x00\x00\x00\x00\x09\x0a\x07pkg.Svc");
    }
    // NOT_SERVING is an active failure: out at once.
    state.serving.store(false, Ordering::SeqCst);
    wait_flags(&strait, p, "/failed_active_hc", Duration::from_secs(3));
    state.serving.store(true, Ordering::SeqCst);
    wait_flags(&strait, p, "healthy", Duration::from_secs(3));
}

// ---------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------

fn redis_cmd(addr: SocketAddr, cmd: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    let parts: Vec<&str> = cmd.split(' ').collect();
    let mut out = format!("*{}\r\n", parts.len());
    for p in parts {
        out.push_str(&format!("${}\r\n{p}\r\n", p.len()));
    }
    s.write_all(out.as_bytes()).unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).to_string()
}

#[test]
fn redis_check_with_a_maintenance_key() {
    let Some(bin) = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        eprintln!("SKIPPED redis_check_with_a_maintenance_key: redis-server is not installed");
        return;
    };
    let dir = TestDir::new("hc-redis");
    let rp = port();
    let _redis = strait_testkit::Process::spawn(
        std::path::Path::new(bin),
        [
            "--port",
            &rp.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        &dir.join("redis.log"),
    )
    .expect("start redis-server");
    let raddr: SocketAddr = format!("127.0.0.1:{rp}").parse().unwrap();
    assert!(strait_testkit::wait_for_port(raddr, Duration::from_secs(5)));
    let hc = merged(
        timing(2, 1),
        json!({"custom_health_check": {
            "name": "envoy.health_checkers.redis",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.health_checkers.redis.v3.Redis",
                "key": "maint",
            },
        }}),
    );
    let strait = start(&dir, cluster_with("redis", &[rp], hc));
    wait_flags(&strait, rp, "healthy", Duration::from_secs(5));
    assert_eq!(redis_cmd(raddr, "SET maint 1"), "+OK\r\n");
    wait_flags(&strait, rp, "/failed_active_hc", Duration::from_secs(3));
    assert_eq!(redis_cmd(raddr, "DEL maint"), ":1\r\n");
    wait_flags(&strait, rp, "healthy", Duration::from_secs(3));
}

#[test]
fn unsupported_health_check_fields_are_refused() {
    let dir = TestDir::new("hc-refused");
    let hc = merged(
        timing(1, 1),
        json!({"http_health_check": {"path": "/h", "receive": [{"text": "00"}]}}),
    );
    let b = bootstrap(port(), vec![], vec![cluster_with("web", &[1], hc)]);
    let path = dir.join("bad.json");
    std::fs::write(&path, b.to_string()).unwrap();
    let out = std::process::Command::new(strait_bin())
        .args(["--mode", "validate", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        err.contains("health_checks[0].http_health_check.receive"),
        "{err}"
    );
}

/// `codec_client_type: HTTP2`: the check goes over h2c with `:authority` = the cluster name.
#[test]
fn http2_check() {
    let state = Arc::new(GrpcState::default());
    let p = grpc_server(state.clone());
    let dir = TestDir::new("hc-http2");
    let hc = merged(
        timing(2, 1),
        json!({"http_health_check": {"path": "/healthz", "codec_client_type": "HTTP2"}}),
    );
    let strait = start(&dir, cluster_with("web2", &[p], hc));
    wait_flags(&strait, p, "healthy", Duration::from_secs(5));
    let reqs = state.requests.lock().unwrap();
    let (h, uri, body) = &reqs[0];
    assert_eq!(uri, "http://web2/healthz");
    assert_eq!(h["user-agent"], "Envoy/HC");
    assert!(body.is_empty());
}
