//! End-to-end upstream connection reuse through the real `strait` binary: HTTP/1.1
//! keep-alive pooling, pooled connections the upstream closed while idle, and HTTP/2
//! multiplexing.

#[path = "e2e_common.rs"]
mod common;

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use strait_testkit::{EchoServer, HttpRequest};

/// 20 sequential requests on one downstream keep-alive connection, one worker: one upstream
/// connection carries them all.
#[test]
fn sequential_requests_reuse_one_upstream_connection() {
    let echo = EchoServer::start_background("echo").unwrap();
    let dir = TestDir::new("h1-reuse");
    let (admin, listen) = (port(), port());
    let strait = Strait::start(&dir, &simple_bootstrap(admin, listen, echo.port()));
    let mut c = Conn::connect(strait.listen).unwrap();
    for i in 0..20 {
        let r = c
            .get(&format!("/seq/{i}"))
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(r.status, 200, "request {i}: {}", r.body_str());
        assert_eq!(r.json()["path"], format!("/seq/{i}"));
    }
    assert!(
        strait.wait_stat(
            "cluster.echo.upstream_rq_total",
            Duration::from_secs(2),
            |v| v == 20
        ),
        "upstream_rq_total = {:?}",
        strait.stat("cluster.echo.upstream_rq_total")
    );
    let stats = strait.stats();
    assert_eq!(
        stats.get("cluster.echo.upstream_cx_total"),
        Some(&1),
        "one upstream connection for 20 requests"
    );
    assert_eq!(stats.get("cluster.echo.upstream_cx_http1_total"), Some(&1));
    assert_eq!(
        stats.get("cluster.echo.upstream_cx_active"),
        Some(&1),
        "the connection stays pooled"
    );
    assert_eq!(stats.get("http.ingress.downstream_cx_total"), Some(&1));
    assert_eq!(stats.get("http.ingress.downstream_rq_total"), Some(&20));
}

/// A tiny HTTP/1.1 upstream that answers each request with `content-length` and closes a
/// connection once it has been idle for `idle_close`.
struct ClosingUpstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl ClosingUpstream {
    fn start(idle_close: Duration) -> ClosingUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, cl, rq, st) = (
            accepted.clone(),
            closed.clone(),
            requests.clone(),
            stop.clone(),
        );
        let thread = thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let n = a.fetch_add(1, Ordering::SeqCst) + 1;
                        let (cl, rq) = (cl.clone(), rq.clone());
                        thread::spawn(move || serve_then_close(s, n, idle_close, &rq, &cl));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
        });
        ClosingUpstream {
            addr,
            accepted,
            closed,
            requests,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for ClosingUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_then_close(
    s: TcpStream,
    conn_no: usize,
    idle_close: Duration,
    requests: &AtomicUsize,
    closed: &AtomicUsize,
) {
    s.set_nonblocking(false).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut first = true;
    let mut served = 0;
    'conn: loop {
        // The first request may take a while to come; after that, idle means close.
        let _ = r.get_ref().set_read_timeout(Some(if first {
            Duration::from_secs(10)
        } else {
            idle_close
        }));
        let mut line = String::new();
        let mut head_lines = 0;
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) => break 'conn,
                Ok(_) => {}
                Err(_) => break 'conn, // idle timeout (or error): close
            }
            if line == "\r\n" && head_lines > 0 {
                break;
            }
            head_lines += 1;
        }
        first = false;
        served += 1;
        requests.fetch_add(1, Ordering::SeqCst);
        let body = format!("conn {conn_no} request {served}");
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: text/plain\r\n\r\n{body}",
            body.len()
        );
        if w.write_all(resp.as_bytes()).is_err() {
            break;
        }
    }
    let _ = w.shutdown(std::net::Shutdown::Both);
    closed.fetch_add(1, Ordering::SeqCst);
}

/// The upstream closes keep-alive connections after 200 ms idle; requests 400 ms apart all
/// succeed: the pooled connection closed by the upstream is noticed and never used (no 503,
/// no request written to a dead connection).
#[test]
fn upstream_idle_close_is_detected_before_reuse() {
    let upstream = ClosingUpstream::start(Duration::from_millis(200));
    let dir = TestDir::new("idle-close");
    let (admin, listen) = (port(), port());
    let strait = Strait::start(&dir, &simple_bootstrap(admin, listen, upstream.addr.port()));
    let mut c = Conn::connect(strait.listen).unwrap();
    const N: usize = 4;
    for i in 1..=N {
        let r = c
            .get(&format!("/r{i}"))
            .unwrap_or_else(|e| panic!("request {i}: {e}\n{}", strait.output()));
        assert_eq!(
            r.status,
            200,
            "request {i} got {}: {}",
            r.status,
            r.body_str()
        );
        assert_eq!(
            r.body_str(),
            format!("conn {i} request 1"),
            "request {i} not on a fresh upstream connection"
        );
        let answered = Instant::now();
        if i < N {
            // The upstream closes this connection at ~200 ms; the next request goes at 400 ms.
            let deadline = answered + Duration::from_secs(2);
            while upstream.closed.load(Ordering::SeqCst) < i {
                assert!(
                    Instant::now() < deadline,
                    "the test upstream did not close connection {i}"
                );
                thread::sleep(Duration::from_millis(10));
            }
            let gap = Duration::from_millis(400).saturating_sub(answered.elapsed());
            thread::sleep(gap);
        }
    }
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), N);
    assert_eq!(upstream.requests.load(Ordering::SeqCst), N);
    assert!(strait.wait_stat(
        "cluster.echo.upstream_cx_total",
        Duration::from_secs(2),
        |v| v == N as i64
    ));
    let stats = strait.stats();
    assert_eq!(
        stats.get("cluster.echo.upstream_rq_total"),
        Some(&(N as i64)),
        "a request was sent to a closed connection"
    );
    assert_eq!(
        stats
            .get("cluster.echo.upstream_rq_503")
            .copied()
            .unwrap_or(0),
        0
    );
    assert_eq!(
        stats
            .get("http.ingress.downstream_rq_5xx")
            .copied()
            .unwrap_or(0),
        0
    );
}

/// HTTP/2 upstream, one worker: 20 concurrent h2c downstream requests (each on its own
/// downstream connection, all in flight together) share one upstream connection. With
/// `warm`, one request opens that connection first.
fn h2_burst_uses_one_upstream_connection(warm: bool) {
    let echo = EchoServer::start_background("echo").unwrap();
    let dir = TestDir::new("h2-mux");
    let (admin, listen) = (port(), port());
    let bs = bootstrap(
        admin,
        vec![listener(
            "main",
            listen,
            "ingress",
            vec![route("/", "echo", None)],
            vec![],
        )],
        vec![cluster("echo", echo.port(), true)],
    );
    let strait = Strait::start(&dir, &bs);
    let addr = strait.listen;
    let warmups = if warm {
        let r = strait_testkit::client::send_blocking(addr, &HttpRequest::get("/warm").http2())
            .unwrap();
        assert_eq!(r.status, 200);
        1
    } else {
        0
    };
    const N: usize = 20;
    let barrier = Arc::new(Barrier::new(N));
    let clients: Vec<_> = (0..N)
        .map(|i| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                let req = HttpRequest::get(&format!("/delay/300?i={i}")).http2();
                strait_testkit::client::send_blocking(addr, &req)
            })
        })
        .collect();
    for (i, c) in clients.into_iter().enumerate() {
        let r = c
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(r.status, 200, "request {i}: {}", r.body_str());
        assert_eq!(r.version, "HTTP/2");
        let echo = r.json().unwrap();
        assert_eq!(
            echo["version"], "HTTP/2",
            "upstream saw {}",
            echo["version"]
        );
        assert_eq!(echo["path"], format!("/delay/300?i={i}"));
    }
    let total = (N + warmups) as i64;
    assert!(strait.wait_stat(
        "cluster.echo.upstream_rq_total",
        Duration::from_secs(2),
        |v| v == total
    ));
    let stats = strait.stats();
    assert_eq!(
        stats.get("http.ingress.downstream_cx_http2_total"),
        Some(&total)
    );
    assert_eq!(
        stats.get("cluster.echo.upstream_cx_http2_total"),
        Some(&1),
        "{N} concurrent requests opened several h2 upstream connections"
    );
    assert_eq!(stats.get("cluster.echo.upstream_cx_total"), Some(&1));
}

#[test]
fn h2_upstream_multiplexes_concurrent_requests() {
    h2_burst_uses_one_upstream_connection(false);
}

/// The same burst once the h2 connection is up: all 20 streams go on it.
#[test]
fn h2_upstream_multiplexes_concurrent_requests_on_open_connection() {
    h2_burst_uses_one_upstream_connection(true);
}
