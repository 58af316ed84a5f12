//! Timers that fire after the response headers went downstream, through the real `strait`
//! binary, as Envoy 1.40 behaves (observed with the same config and a backend that sends its
//! headers at once and then its body slowly): the route `timeout` covers the whole response;
//! when it fires the status already sent stays (access log `200 UT response_timeout`),
//! `cluster.<name>.upstream_rq_timeout` counts it, and the response is cut: an HTTP/1.1
//! connection is closed before the last chunk, an HTTP/2 stream is reset. A stream idle
//! timeout does the same for a pause in the body (`SI stream_idle_timeout`).

#[path = "e2e_common.rs"]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use strait_testkit::{EchoServer, HttpRequest};

fn start(
    name: &str,
    route_json: serde_json::Value,
    idle: Option<&str>,
) -> (Strait, TestDir, strait_testkit::BackgroundEcho) {
    let echo = EchoServer::start_background("echo").unwrap();
    let dir = TestDir::new(name);
    let (admin, listen) = (port(), port());
    let log = file_log_text(
        &dir.join("access.log"),
        "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\n",
    );
    let mut l = listener("main", listen, "ingress", vec![route_json], vec![log]);
    if let Some(t) = idle {
        l["filter_chains"][0]["filters"][0]["typed_config"]["stream_idle_timeout"] = t.into();
    }
    let strait = Strait::start(
        &dir,
        &bootstrap(admin, vec![l], vec![cluster("echo", echo.port(), false)]),
    );
    (strait, dir, echo)
}

/// Reads an HTTP/1.1 response until the connection closes; returns the bytes.
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn wait_log(dir: &TestDir, lines: usize) -> Vec<String> {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(dir.join("access.log")).unwrap_or_default();
        let v: Vec<String> = text.lines().map(str::to_string).collect();
        if v.len() >= lines || Instant::now() > end {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn route_timeout_after_headers_cuts_the_response() {
    let (strait, dir, _echo) = start("rsp-timeout", route("/", "echo", Some("1s")), None);
    // HTTP/1.1: 10 chunks 300 ms apart take 2.7 s; the route timeout is 1 s.
    let mut s = TcpStream::connect(strait.listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t = Instant::now();
    s.write_all(b"GET /drip/10/300 HTTP/1.1\r\nhost: a\r\n\r\n")
        .unwrap();
    let raw = String::from_utf8_lossy(&read_to_close(&mut s)).into_owned();
    let took = t.elapsed();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.contains("ab\n"), "some body was sent: {raw}");
    assert!(
        !raw.ends_with("0\r\n\r\n"),
        "the body must not end cleanly: {raw:?}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "cut at the route timeout, took {took:?}"
    );

    // HTTP/2: the stream is reset, the client sees an error after the headers.
    let r = strait_testkit::client::send_blocking(
        strait.listen,
        &HttpRequest::get("/drip/10/300")
            .http2()
            .timeout(Duration::from_secs(10)),
    );
    assert!(
        r.is_err(),
        "an HTTP/2 response cut by the timeout is an error: {r:?}"
    );

    assert!(strait.wait_stat(
        "cluster.echo.upstream_rq_timeout",
        Duration::from_secs(5),
        |v| v == 2
    ));
    assert_eq!(strait.stat("http.ingress.downstream_rq_2xx"), Some(2));
    let log = wait_log(&dir, 2);
    assert_eq!(log, vec!["200 UT response_timeout"; 2], "{log:?}");

    // A response that finishes within the timeout is untouched.
    let r = strait_testkit::client::send_blocking(strait.listen, &HttpRequest::get("/drip/3/100"))
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "ab\nab\nab\n");
}

#[test]
fn stream_idle_timeout_cuts_a_paused_response() {
    // No route timeout; the connection manager's stream idle timeout is 0.5 s and the body
    // pauses 1 s between chunks.
    let (strait, dir, _echo) = start("rsp-idle", route("/", "echo", Some("0s")), Some("0.5s"));
    let mut s = TcpStream::connect(strait.listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t = Instant::now();
    s.write_all(b"GET /drip/3/1000 HTTP/1.1\r\nhost: a\r\n\r\n")
        .unwrap();
    let raw = String::from_utf8_lossy(&read_to_close(&mut s)).into_owned();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(!raw.ends_with("0\r\n\r\n"), "{raw:?}");
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert!(strait.wait_stat(
        "http.ingress.downstream_rq_idle_timeout",
        Duration::from_secs(5),
        |v| v == 1
    ));
    assert_eq!(wait_log(&dir, 1), vec!["200 SI stream_idle_timeout"]);

    // Chunks closer together than the idle timeout stream to the end.
    let r = strait_testkit::client::send_blocking(strait.listen, &HttpRequest::get("/drip/4/200"))
        .unwrap();
    assert_eq!(r.body_str(), "ab\nab\nab\nab\n");
}
