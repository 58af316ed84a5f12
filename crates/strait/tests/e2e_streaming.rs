//! End-to-end streaming through the real `strait` binary: bodies far larger than any buffer
//! pass through in both directions while strait's peak RSS (VmHWM) stays small. The client
//! generates and counts bodies on the fly; nothing large is held in memory on either side.

#[path = "e2e_common.rs"]
mod common;

use std::sync::Mutex;
use std::time::Instant;

use common::*;
use strait_testkit::{BackgroundEcho, EchoServer};

/// Peak RSS strait may reach while streaming (its idle footprint included).
const RSS_LIMIT_KIB: u64 = 64 * 1024;

/// The streaming tests each saturate both cores: run them one at a time.
static HEAVY: Mutex<()> = Mutex::new(());

fn start(name: &str) -> (BackgroundEcho, TestDir, Strait) {
    let echo = EchoServer::start_background("echo").unwrap();
    let dir = TestDir::new(name);
    let (admin, listen) = (port(), port());
    let strait = Strait::start(&dir, &simple_bootstrap(admin, listen, echo.port()));
    (echo, dir, strait)
}

/// Writes `total` bytes of body in `chunk`-sized pieces from one reused buffer; with
/// `chunked`, each piece is an HTTP/1.1 chunk and the terminating chunk follows.
fn stream_body(conn: &mut Conn, total: u64, chunk: usize, chunked: bool) {
    let buf: Vec<u8> = (0..chunk).map(|i| (i % 251) as u8).collect();
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk as u64) as usize;
        if chunked {
            conn.write(format!("{n:x}\r\n").as_bytes()).unwrap();
        }
        conn.write(&buf[..n])
            .unwrap_or_else(|e| panic!("writing the body with {left} bytes left: {e}"));
        if chunked {
            conn.write(b"\r\n").unwrap();
        }
        left -= n as u64;
    }
    if chunked {
        conn.write(b"0\r\n\r\n").unwrap();
    }
}

fn assert_rss_bounded(strait: &Strait, what: &str) {
    let peak = strait.peak_rss_kib();
    assert!(
        peak < RSS_LIMIT_KIB,
        "strait's peak RSS reached {} MiB during {what} (limit {} MiB)",
        peak / 1024,
        RSS_LIMIT_KIB / 1024
    );
    eprintln!("{what}: strait peak RSS {} MiB", peak / 1024);
}

/// A 1 GiB POST with `content-length` reaches the echo upstream whole (`body_len`), and
/// strait's peak RSS stays under 64 MiB.
#[test]
fn one_gib_upload_streams_with_bounded_memory() {
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let (_echo, _dir, strait) = start("upload");
    const TOTAL: u64 = 1 << 30;
    let started = Instant::now();
    let mut c = Conn::connect(strait.listen).unwrap();
    c.write(format!("POST /upload HTTP/1.1\r\nhost: e2e.test\r\ncontent-length: {TOTAL}\r\ncontent-type: application/octet-stream\r\n\r\n").as_bytes())
        .unwrap();
    stream_body(&mut c, TOTAL, 256 * 1024, false);
    let r = c
        .read_response(true)
        .unwrap_or_else(|e| panic!("reading the response: {e}\n{}", strait.output()));
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(
        r.json()["body_len"],
        TOTAL,
        "upstream did not get the whole body"
    );
    eprintln!("1 GiB upload took {:?}", started.elapsed());
    assert_rss_bounded(&strait, "a 1 GiB upload");
}

/// A 512 MiB response streams to the client byte for byte with bounded strait memory.
#[test]
fn large_download_streams_with_bounded_memory() {
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let (_echo, _dir, strait) = start("download");
    const TOTAL: u64 = 512 << 20;
    let started = Instant::now();
    let mut c = Conn::connect(strait.listen).unwrap();
    c.write(format!("GET /bytes/{TOTAL} HTTP/1.1\r\nhost: e2e.test\r\n\r\n").as_bytes())
        .unwrap();
    let r = c
        .read_response(false)
        .unwrap_or_else(|e| panic!("reading the download: {e}\n{}", strait.output()));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(TOTAL.to_string().as_str()));
    assert_eq!(r.body_len, TOTAL, "download cut short");
    eprintln!("512 MiB download took {:?}", started.elapsed());
    assert_rss_bounded(&strait, "a 512 MiB download");
    // The connection is still usable afterwards.
    let again = c.get("/after").unwrap();
    assert_eq!(again.status, 200);
}

/// A chunked request body (no `content-length`) of 256 MiB in uneven chunks reaches the
/// upstream whole, still chunked, with bounded strait memory.
#[test]
fn chunked_upload_streams_with_bounded_memory() {
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let (_echo, _dir, strait) = start("chunked");
    const TOTAL: u64 = (256 << 20) + 12_345;
    let mut c = Conn::connect(strait.listen).unwrap();
    c.write(b"POST /chunked HTTP/1.1\r\nhost: e2e.test\r\ntransfer-encoding: chunked\r\n\r\n")
        .unwrap();
    stream_body(&mut c, TOTAL, 100_003, true);
    let r = c
        .read_response(true)
        .unwrap_or_else(|e| panic!("reading the response: {e}\n{}", strait.output()));
    assert_eq!(r.status, 200, "{}", r.body_str());
    let echo = r.json();
    assert_eq!(echo["body_len"], TOTAL);
    let headers = echo["headers"].as_array().unwrap();
    let has = |name: &str| headers.iter().any(|h| h[0] == name);
    assert!(
        !has("content-length"),
        "a content-length was invented: {headers:?}"
    );
    assert!(
        headers
            .iter()
            .any(|h| h[0] == "transfer-encoding" && h[1] == "chunked"),
        "upstream request not chunked: {headers:?}"
    );
    assert_rss_bounded(&strait, "a 256 MiB chunked upload");
}
