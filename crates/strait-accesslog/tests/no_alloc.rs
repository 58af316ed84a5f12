//! Rendering into a buffer with enough capacity performs no heap allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue};
use serde_json::json;
use strait_accesslog::{Formatter, LogContext, ResponseFlag};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn render_does_not_allocate() {
    let mut req = HeaderMap::new();
    req.insert("user-agent", HeaderValue::from_static("curl/8.5.0"));
    req.insert(
        "x-request-id",
        HeaderValue::from_static("5f0e0c4e-3b1a-4d6e-9a57-3c1b2a9d8e7f"),
    );
    req.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
    let mut resp = HeaderMap::new();
    resp.insert(
        "x-envoy-upstream-service-time",
        HeaderValue::from_static("3"),
    );
    let ctx = LogContext {
        start_time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_308_461_884),
        method: Some("GET"),
        path: Some("/api/v1/items?page=2"),
        authority: Some("example.com"),
        scheme: Some("https"),
        request_headers: Some(&req),
        response_headers: Some(&resp),
        protocol: Some("HTTP/2"),
        response_code: 200,
        response_flags: ResponseFlag::URX | ResponseFlag::UF,
        bytes_received: 10,
        bytes_sent: 2000,
        duration: Some(Duration::from_millis(5)),
        upstream_host: "10.0.0.7:9000".parse().ok(),
        downstream_remote_address: "[2001:db8::9]:55000".parse().ok(),
        ..Default::default()
    };
    let text = Formatter::parse_text(
        "%START_TIME(%Y-%m-%d %H:%M:%E3S %s.%6f)% %DOWNSTREAM_REMOTE_ADDRESS% \
         %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT(64)% %REQ(:PATH):10% %UNIQUE_ID% %RESPONSE_FLAGS_LONG% \
         %REQUEST_HEADERS_BYTES% %HOSTNAME%\n",
    );
    let json = serde_json::from_value(json!({
        "time": "%START_TIME%", "code": "%RESPONSE_CODE%", "path": "%REQ(:PATH)%", "ua": "ua=%REQ(user-agent)%",
        "up": "%UPSTREAM_HOST%", "nested": {"flags": "%RESPONSE_FLAGS%", "rid": "%REQ(x-request-id)%"},
    }))
    .map_err(|e| e.to_string())
    .and_then(|m| Formatter::parse_json(&m).map_err(|e| e.to_string()));
    let formatters = [
        Formatter::envoy_default(),
        text.unwrap_or_else(|_| Formatter::envoy_default()),
        json.unwrap_or_else(|_| Formatter::envoy_default()),
    ];

    let mut out = Vec::with_capacity(64 * 1024);
    // Warm up (thread-local RNG seeding, etc.).
    for f in &formatters {
        f.render(&ctx, &mut out);
    }
    out.clear();
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..100 {
        for f in &formatters {
            f.render(&ctx, &mut out);
        }
    }
    let after = ALLOCS.load(Ordering::Relaxed);
    assert_eq!(after - before, 0, "render allocated");
    assert!(out.len() > 100 * 300);
}
