//! Self-tests of the testkit: echo server behaviour, the hyper and raw clients, the
//! `strait-echo` binary and the process guard.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use strait_testkit::client::{self, HttpRequest};
use strait_testkit::raw::{self, RawConn};
use strait_testkit::{EchoServer, Process, wait_for_port};

fn header<'a>(json: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    json["headers"]
        .as_array()?
        .iter()
        .find(|p| p[0] == name)
        .and_then(|p| p[1].as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_describes_http1_and_h2_requests() {
    let (addr, _echo) = EchoServer::start().await.unwrap();

    let resp = client::send(addr, &HttpRequest::get("/a/b?c=d").header("x-test", "1"))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-echo-name"), Some("echo"));
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let json = resp.json().unwrap();
    assert_eq!(json["name"], "echo");
    assert_eq!(json["method"], "GET");
    assert_eq!(json["path"], "/a/b?c=d");
    assert_eq!(json["version"], "HTTP/1.1");
    assert_eq!(json["body_len"], 0);
    assert_eq!(header(&json, "host"), Some(addr.to_string().as_str()));
    assert_eq!(header(&json, "x-test"), Some("1"));
    // Order is kept: host (added first by the client) before x-test.
    assert_eq!(json["headers"][0][0], "host");

    let resp = client::send(
        addr,
        &HttpRequest::new("POST", "/h2")
            .http2()
            .header("host", "h2.example")
            .body("hello"),
    )
    .await
    .unwrap();
    assert_eq!(resp.version, "HTTP/2");
    let json = resp.json().unwrap();
    assert_eq!(json["version"], "HTTP/2");
    assert_eq!(json["body_len"], 5);
    assert_eq!(
        header(&json, "host"),
        Some("h2.example"),
        "authority reported as host"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_special_paths() {
    let (addr, _echo) = EchoServer::start().await.unwrap();

    let resp = client::send(addr, &HttpRequest::get("/status/503"))
        .await
        .unwrap();
    assert_eq!(resp.status, 503);
    assert_eq!(resp.json().unwrap()["path"], "/status/503");

    let resp = client::send(addr, &HttpRequest::get("/bytes/100000"))
        .await
        .unwrap();
    assert_eq!(resp.body.len(), 100_000);
    assert_eq!(resp.header("content-length"), Some("100000"));

    let resp = client::send(addr, &HttpRequest::get("/headers?x-a=b&server=my+srv"))
        .await
        .unwrap();
    assert_eq!(resp.header("x-a"), Some("b"));
    assert_eq!(resp.header("server"), Some("my srv"));

    let started = Instant::now();
    let resp = client::send(addr, &HttpRequest::get("/delay/150"))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));

    let err = client::send(addr, &HttpRequest::get("/close"))
        .await
        .unwrap_err();
    assert!(!err.0.is_empty());
    let err = client::send(addr, &HttpRequest::get("/close").http2())
        .await
        .unwrap_err();
    assert!(!err.0.is_empty());

    // Large chunked body, counted without buffering.
    let mut req = HttpRequest::new("PUT", "/up").body(vec![7u8; 3 * 1024 * 1024]);
    req.chunked = true;
    let json = client::send(addr, &req).await.unwrap().json().unwrap();
    assert_eq!(json["body_len"], 3 * 1024 * 1024);
    assert_eq!(header(&json, "transfer-encoding"), Some("chunked"));
}

#[test]
fn background_echo_and_raw_client() {
    let echo = EchoServer::start_background("bg").unwrap();
    let addr = echo.addr();

    let resp = client::send_blocking(addr, &HttpRequest::get("/sync")).unwrap();
    assert_eq!(resp.header("x-echo-name"), Some("bg"));

    let resp = raw::send_raw(
        addr,
        b"POST /raw HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.version, "HTTP/1.1");
    let json: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(json["body_len"], 3);
    assert_eq!(json["path"], "/raw");

    // Connection: close makes the server close after the response.
    let mut conn = RawConn::connect(addr, Duration::from_secs(5)).unwrap();
    conn.send(b"GET / HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(conn.read_response(false).unwrap().status, 200);
    assert!(conn.wait_closed(Duration::from_secs(2)));

    // /close: no response at all.
    let err = raw::send_raw(
        addr,
        b"GET /close HTTP/1.1\r\nHost: r\r\n\r\n",
        Duration::from_secs(5),
    )
    .unwrap_err();
    assert!(
        matches!(err.kind, raw::RawErrorKind::ClosedBeforeResponse),
        "{err}"
    );
}

/// A one-shot server that reads a request head and writes `response`, then closes.
fn canned_server(response: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                return;
            }
            head.extend_from_slice(&buf[..n]);
        }
        s.write_all(response).unwrap();
    });
    addr
}

#[test]
fn raw_client_parses_framing() {
    let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let t = Duration::from_secs(5);

    let addr = canned_server(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A:  b \r\n\r\n4;ext=1\r\nwiki\r\n5\r\npedia\r\n0\r\nT: 1\r\n\r\n",
    );
    let resp = raw::send_raw(addr, req, t).unwrap();
    assert_eq!(resp.interim, vec![100]);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.reason, "OK");
    assert_eq!(resp.header("x-a"), Some("b"));
    assert_eq!(resp.body_str(), "wikipedia");

    let addr = canned_server(b"HTTP/1.0 200 OK\r\nServer: s\r\n\r\nuntil close");
    let resp = raw::send_raw(addr, req, t).unwrap();
    assert_eq!(resp.version, "HTTP/1.0");
    assert_eq!(resp.body_str(), "until close");

    let addr = canned_server(b"HTTP/1.1 431 Too Large\r\nContent-Length: 3\r\n\r\nabcEXTRA");
    let resp = raw::send_raw(addr, req, t).unwrap();
    assert_eq!(resp.status, 431);
    assert_eq!(resp.body_str(), "abc");

    let addr = canned_server(b"\x00\x00\x12\x04\x00\x00\x00\x00\x00garbage");
    let err = raw::send_raw(addr, req, t).unwrap_err();
    assert!(matches!(err.kind, raw::RawErrorKind::Malformed(_)), "{err}");

    let addr = canned_server(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
    let err = raw::send_raw(addr, req, t).unwrap_err();
    assert!(matches!(err.kind, raw::RawErrorKind::ClosedInBody), "{err}");
}

#[test]
fn strait_echo_binary_and_process_guard() {
    let dir = std::env::temp_dir().join(format!("strait-testkit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("echo.log");
    let mut process = Process::spawn(
        env!("CARGO_BIN_EXE_strait-echo").as_ref(),
        ["--listen", "127.0.0.1:0", "--name", "from-binary"],
        &log,
    )
    .unwrap();
    let line = process
        .wait_for_output("listening on ", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no listening line; output: {}", process.output()));
    let addr: SocketAddr = line
        .trim()
        .trim_start_matches("listening on ")
        .parse()
        .unwrap();
    assert!(wait_for_port(addr, Duration::from_secs(5)));

    let resp = client::send_blocking(addr, &HttpRequest::get("/bin")).unwrap();
    assert_eq!(resp.header("x-echo-name"), Some("from-binary"));
    let resp = client::send_blocking(addr, &HttpRequest::get("/bin").http2()).unwrap();
    assert_eq!(resp.json().unwrap()["version"], "HTTP/2");

    process.stop().expect("stopped");
    assert!(process.try_exit_status().is_some());
    drop(process);
    assert!(
        !wait_for_port(addr, Duration::from_millis(100)),
        "port closed after stop"
    );

    let bad = Process::spawn(
        env!("CARGO_BIN_EXE_strait-echo").as_ref(),
        ["--bogus"],
        &dir.join("bad.log"),
    );
    let mut bad = bad.unwrap();
    let status = bad.wait_timeout(Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(2));
    assert!(bad.output().contains("unknown argument"));
    let _ = std::fs::remove_dir_all(&dir);
}
