//! End-to-end access logs of the real `strait` binary: a file log with a text format and one
//! with `json_format`, checked value by value for a proxied request, a no-route 404 (`NR`),
//! an upstream connect failure 503 (`UF`), a route timeout 504 (`UT`) and an HTTP/2
//! request; lines reach the file within the flush interval and on shutdown.
//!
//! The expected values are what Envoy 1.40 writes for the same bootstrap and traffic
//! (checked by hand against the real binary).

#[path = "e2e_common.rs"]
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{Value, json};
use strait_testkit::{BackgroundEcho, EchoServer, HttpRequest};

const TEXT_FORMAT: &str = "%START_TIME%|%REQ(:METHOD)%|%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%|%PROTOCOL%|%RESPONSE_CODE%|%RESPONSE_FLAGS%|%BYTES_RECEIVED%|%BYTES_SENT%|%DURATION%|%UPSTREAM_HOST%|%UPSTREAM_CLUSTER%|%DOWNSTREAM_REMOTE_ADDRESS%\n";

fn json_format() -> Value {
    json!({
        "method": "%REQ(:METHOD)%",
        "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
        "protocol": "%PROTOCOL%",
        "code": "%RESPONSE_CODE%",
        "flags": "%RESPONSE_FLAGS%",
        "rx": "%BYTES_RECEIVED%",
        "tx": "%BYTES_SENT%",
        "duration": "%DURATION%",
        "upstream": "%UPSTREAM_HOST%",
        "cluster": "%UPSTREAM_CLUSTER%",
        "client": "%DOWNSTREAM_REMOTE_ADDRESS%",
        "nested": {"code_again": "%RESPONSE_CODE%", "label": "code-%RESPONSE_CODE%"},
    })
}

struct Setup {
    _echo: BackgroundEcho,
    dir: TestDir,
    strait: Strait,
    echo_addr: String,
    dead_addr: String,
}

/// Routes: `/delay/` to echo with a 0.3 s timeout, `/dead` to a cluster whose endpoint
/// refuses connections, `/echo` to echo; anything else has no route.
fn setup(name: &str) -> Setup {
    let echo = EchoServer::start_background("echo").unwrap();
    let dir = TestDir::new(name);
    let (admin, listen, dead) = (port(), port(), port());
    let logs = vec![
        file_log_text(&dir.join("text.log"), TEXT_FORMAT),
        file_log_json(&dir.join("json.log"), json_format()),
    ];
    let routes = vec![
        route("/delay/", "echo", Some("0.3s")),
        route("/dead", "dead", None),
        route("/echo", "echo", None),
    ];
    let bs = bootstrap(
        admin,
        vec![listener("main", listen, "ingress", routes, logs)],
        vec![
            cluster("echo", echo.port(), false),
            cluster("dead", dead, false),
        ],
    );
    let strait = Strait::start(&dir, &bs);
    Setup {
        echo_addr: echo.addr().to_string(),
        dead_addr: format!("127.0.0.1:{dead}"),
        _echo: echo,
        dir,
        strait,
    }
}

/// One request on its own connection; returns the client address, status and body length.
fn send(listen: SocketAddr, method: &str, path: &str, body: &[u8]) -> (SocketAddr, u16, usize) {
    let mut c = Conn::connect(listen).unwrap();
    let r = c.request(method, path, &[], body).unwrap();
    (c.local, r.status, r.body.len())
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` to milliseconds since the epoch.
fn parse_start_time(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 24
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[23] != b'Z'
    {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss, ms) = (n(11..13)?, n(14..16)?, n(17..19)?, n(20..23)?);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((((days * 24 + hh) * 60 + mm) * 60 + ss) as u64 * 1000 + ms as u64)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn text_and_json_access_logs_have_envoys_values() {
    let s = setup("access-log");
    let listen = s.strait.listen;
    let t0 = now_ms();

    let (c1, st1, len1) = send(listen, "POST", "/echo/a?b=1", b"hello world");
    assert_eq!(st1, 200);
    let (c2, st2, _) = send(listen, "GET", "/nothing", b"");
    assert_eq!(st2, 404);
    let (c3, st3, len3) = send(listen, "GET", "/dead", b"");
    assert_eq!(st3, 503);
    let (c4, st4, len4) = send(listen, "GET", "/delay/1000", b"");
    assert_eq!(st4, 504);
    assert_eq!(len4, 24, "upstream request timeout");
    let h2 = strait_testkit::client::send_blocking(listen, &HttpRequest::get("/echo/h2").http2())
        .unwrap();
    assert_eq!(h2.status, 200);
    let t1 = now_ms();

    // Written out within the flush interval (1 s), while strait keeps running.
    let text_path = s.dir.join("text.log");
    let json_path = s.dir.join("json.log");
    let text = wait_file(&text_path, Duration::from_millis(2500), |t| {
        t.lines().count() >= 5
    })
    .unwrap_or_else(|| {
        panic!(
            "5 text log lines not written within 2.5 s: {:?}",
            lines_of(&text_path)
        )
    });
    let json_text = wait_file(&json_path, Duration::from_millis(2500), |t| {
        t.lines().count() >= 5
    })
    .unwrap_or_else(|| {
        panic!(
            "5 JSON log lines not written within 2.5 s: {:?}",
            lines_of(&json_path)
        )
    });
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(lines.len(), 5, "text log:\n{text}");
    for l in &lines {
        assert_eq!(l.len(), 12, "fields of {l:?}");
        let start = parse_start_time(l[0])
            .unwrap_or_else(|| panic!("START_TIME {:?} is not Envoy's format", l[0]));
        assert!(
            start + 1000 >= t0 && start <= t1 + 1000,
            "START_TIME {} outside the test's time",
            l[0]
        );
        l[8].parse::<u64>()
            .unwrap_or_else(|_| panic!("DURATION {:?} is not a number", l[8]));
    }
    let dur = |l: &Vec<&str>| l[8].parse::<u64>().unwrap();
    let fields = |l: &Vec<&str>, skip_duration: bool| -> Vec<String> {
        l[1..]
            .iter()
            .enumerate()
            .filter(|(i, _)| !(skip_duration && *i == 7))
            .map(|(_, v)| v.to_string())
            .collect()
    };
    let expect = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    // Proxied: method, original path with query, protocol, 200, no flags, 11 bytes in,
    // the echo's body out, upstream host and cluster, the client's address.
    assert_eq!(
        fields(&lines[0], true),
        expect(&[
            "POST",
            "/echo/a?b=1",
            "HTTP/1.1",
            "200",
            "-",
            "11",
            &len1.to_string(),
            &s.echo_addr,
            "echo",
            &c1.to_string()
        ])
    );
    assert!(dur(&lines[0]) < 2000);
    // No route: NR, nothing sent, no upstream.
    assert_eq!(
        fields(&lines[1], false),
        expect(&[
            "GET",
            "/nothing",
            "HTTP/1.1",
            "404",
            "NR",
            "0",
            "0",
            "0",
            "-",
            "-",
            &c2.to_string()
        ])
    );
    // Connect failure: UF, the local reply's body, the host that refused.
    assert_eq!(
        fields(&lines[2], true),
        expect(&[
            "GET",
            "/dead",
            "HTTP/1.1",
            "503",
            "UF",
            "0",
            &len3.to_string(),
            &s.dead_addr,
            "dead",
            &c3.to_string()
        ])
    );
    // Route timeout: UT after the 0.3 s timeout, 24 bytes of "upstream request timeout".
    assert_eq!(
        fields(&lines[3], true),
        expect(&[
            "GET",
            "/delay/1000",
            "HTTP/1.1",
            "504",
            "UT",
            "0",
            "24",
            &s.echo_addr,
            "echo",
            &c4.to_string()
        ])
    );
    assert!(
        (300..1000).contains(&dur(&lines[3])),
        "UT duration {} ms",
        dur(&lines[3])
    );
    // HTTP/2 downstream.
    assert_eq!(lines[4][1..4], ["GET", "/echo/h2", "HTTP/2"]);
    assert_eq!(lines[4][4..6], ["200", "-"]);
    assert_eq!(lines[4][7], h2.body.len().to_string());

    // The JSON log: one object per line, numbers as numbers, absent values as null.
    let objs: Vec<Value> = json_text
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("JSON log line does not parse ({e}): {l}"))
        })
        .collect();
    assert_eq!(objs.len(), 5);
    let j = &objs[0];
    assert_eq!(j["method"], "POST");
    assert_eq!(j["path"], "/echo/a?b=1");
    assert_eq!(j["protocol"], "HTTP/1.1");
    assert_eq!(j["code"], json!(200));
    assert_eq!(j["flags"], "-");
    assert_eq!(j["rx"], json!(11));
    assert_eq!(j["tx"], json!(len1));
    assert!(
        j["duration"].is_u64(),
        "duration {:?} is not a number",
        j["duration"]
    );
    assert_eq!(j["upstream"], s.echo_addr.as_str());
    assert_eq!(j["cluster"], "echo");
    assert_eq!(j["client"], c1.to_string());
    assert_eq!(j["nested"], json!({"code_again": 200, "label": "code-200"}));

    let nr = &objs[1];
    assert_eq!(
        (&nr["code"], &nr["flags"], &nr["tx"]),
        (&json!(404), &json!("NR"), &json!(0))
    );
    assert_eq!(
        (&nr["upstream"], &nr["cluster"]),
        (&Value::Null, &Value::Null),
        "absent values: {nr}"
    );
    let uf = &objs[2];
    assert_eq!(
        (&uf["code"], &uf["flags"], &uf["cluster"]),
        (&json!(503), &json!("UF"), &json!("dead"))
    );
    assert_eq!(uf["upstream"], s.dead_addr.as_str());
    let ut = &objs[3];
    assert_eq!(
        (&ut["code"], &ut["flags"], &ut["tx"]),
        (&json!(504), &json!("UT"), &json!(24))
    );
    assert!(
        ut["duration"]
            .as_u64()
            .is_some_and(|d| (300..1000).contains(&d)),
        "{ut}"
    );
    assert_eq!(
        (&objs[4]["protocol"], &objs[4]["code"]),
        (&json!("HTTP/2"), &json!(200))
    );
}

/// Lines still buffered when strait is told to stop are written before it exits.
#[test]
fn access_log_is_flushed_on_shutdown() {
    let mut s = setup("access-log-shutdown");
    let text_path = s.dir.join("text.log");
    let json_path = s.dir.join("json.log");
    let mut clients = Vec::new();
    for i in 0..10 {
        let (c, st, _) = send(s.strait.listen, "GET", &format!("/echo/{i}"), b"");
        assert_eq!(st, 200);
        clients.push(c);
    }
    // Well inside the 1 s flush interval: most likely nothing is written yet.
    let before = lines_of(&text_path).len();
    s.strait.sigterm();
    let status = s
        .strait
        .wait_exit(Duration::from_secs(5))
        .expect("strait exits after SIGTERM");
    assert!(status.success(), "exit status {status}");
    if before == 10 {
        eprintln!(
            "note: the flusher wrote every line before SIGTERM; shutdown flush not exercised this run"
        );
    }
    let text = lines_of(&text_path);
    assert_eq!(
        text.len(),
        10,
        "text log after shutdown (had {before} lines before SIGTERM): {text:#?}"
    );
    for (i, (l, c)) in text.iter().zip(&clients).enumerate() {
        let f: Vec<&str> = l.split('|').collect();
        assert_eq!(
            (f[2], f[4], f[11]),
            (format!("/echo/{i}").as_str(), "200", c.to_string().as_str())
        );
    }
    let json = lines_of(&json_path);
    assert_eq!(json.len(), 10, "JSON log after shutdown: {json:#?}");
    for l in &json {
        let v: Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["code"], json!(200));
    }
}

/// Access logs see the response headers as sent: route `response_headers_to_add` included
/// (Envoy logs the final headers), and upstream ones too.
#[test]
fn access_log_sees_route_response_headers() {
    let echo = EchoServer::start_background("echo").unwrap();
    let dir = TestDir::new("access-log-route-headers");
    let (admin, listen) = (port(), port());
    let log_path = dir.join("resp.log");
    let logs = vec![file_log_text(
        &log_path,
        "%RESP(X-ADDED)%|%RESP(X-ECHO-NAME)%|%RESPONSE_CODE%\n",
    )];
    let mut r = route("/", "echo", None);
    r["response_headers_to_add"] = json!([{"header": {"key": "x-added", "value": "by-route"}}]);
    let bs = bootstrap(
        admin,
        vec![listener("main", listen, "ingress", vec![r], logs)],
        vec![cluster("echo", echo.port(), false)],
    );
    let mut strait = Strait::start(&dir, &bs);
    let (_, status, _) = send(strait.listen, "GET", "/x", b"");
    assert_eq!(status, 200);
    strait.sigterm();
    let exit = strait
        .wait_exit(Duration::from_secs(5))
        .expect("strait exits after SIGTERM");
    assert!(exit.success(), "exit status {exit}");
    assert_eq!(lines_of(&log_path), vec!["by-route|echo|200".to_string()]);
}
