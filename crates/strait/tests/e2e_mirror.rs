//! End-to-end request mirroring through the real `strait` binary: the shadow request's shape
//! (observed from Envoy 1.40: `-shadow` host suffix before the port, `x-envoy-internal: true`,
//! `192.0.2.2` appended to x-forwarded-for, same body), `runtime_fraction`, a shadow cluster
//! that hangs or is down never delaying or failing the main request, and concurrent load
//! with bodies: every main request answered once, every shadow a faithful copy.

#[path = "e2e_common.rs"]
mod common;
#[path = "e2e_upstream.rs"]
mod upstream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use upstream::*;

/// A bootstrap routing `/` to cluster `main` with `mirrors` as request_mirror_policies.
fn mirror_bootstrap(admin: u16, listen: u16, main: u16, shadow: u16, mirrors: Value) -> Value {
    let mut routes = vec![route("/", "main", Some("5s"))];
    routes[0]["route"]["request_mirror_policies"] = mirrors;
    bootstrap(
        admin,
        vec![listener("main", listen, "ingress", routes, vec![])],
        vec![
            cluster("main", main, false),
            cluster("shadow", shadow, false),
        ],
    )
}

type Seen = Arc<Mutex<Vec<(String, HashMap<String, String>, Vec<u8>)>>>;

fn recording(status: u16, delay: Option<Duration>) -> (Upstream, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let up = Upstream::start(move |req, _| {
        s.lock()
            .unwrap()
            .push((req.path.clone(), req.headers.clone(), req.body.clone()));
        let id = req.header("x-id").unwrap_or("-").to_string();
        match delay {
            Some(d) => Reply::Later(d, status, id),
            None => Reply::Answer(status, id),
        }
    });
    (up, seen)
}

fn wait_for(pred: impl Fn() -> bool, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if pred() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    pred()
}

#[test]
fn shadow_is_a_copy_with_envoys_shadow_headers() {
    let (main, main_seen) = recording(200, None);
    let (shadow, shadow_seen) = recording(200, None);
    let dir = TestDir::new("mirror-shape");
    let (admin, listen) = (port(), port());
    let strait = Strait::start(
        &dir,
        &mirror_bootstrap(
            admin,
            listen,
            main.addr.port(),
            shadow.addr.port(),
            json!([{"cluster": "shadow"}]),
        ),
    );
    let mut c = Conn::connect(strait.listen).unwrap();
    let r = c
        .request(
            "POST",
            "/p?q=1",
            &[("x-id", "7"), ("x-forwarded-for", "1.2.3.4")],
            b"hello",
        )
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "7");
    assert!(wait_for(
        || !shadow_seen.lock().unwrap().is_empty(),
        Duration::from_secs(5)
    ));
    let (path, h, body) = shadow_seen.lock().unwrap()[0].clone();
    let (_, mh, mbody) = main_seen.lock().unwrap()[0].clone();
    assert_eq!(path, "/p?q=1");
    assert_eq!(body, b"hello");
    assert_eq!(mbody, b"hello");
    // The test client sends `host: e2e.test`.
    assert_eq!(mh.get("host").map(String::as_str), Some("e2e.test"));
    assert_eq!(h.get("host").map(String::as_str), Some("e2e.test-shadow"));
    assert_eq!(h.get("x-envoy-internal").map(String::as_str), Some("true"));
    assert_eq!(mh.get("x-envoy-internal"), None);
    assert_eq!(
        h.get("x-forwarded-for").map(String::as_str),
        Some("1.2.3.4,192.0.2.2")
    );
    assert_eq!(h.get("x-request-id"), mh.get("x-request-id"));
    assert!(strait.wait_stat(
        "cluster.shadow.upstream_rq_200",
        Duration::from_secs(5),
        |v| v == 1
    ));
    assert_eq!(strait.stat("cluster.main.upstream_rq_200"), Some(1));
}

#[test]
fn runtime_fraction_zero_never_mirrors_and_host_suffix_can_be_disabled() {
    let (main, _) = recording(200, None);
    let (shadow, shadow_seen) = recording(200, None);
    let dir = TestDir::new("mirror-fraction");
    let (admin, listen) = (port(), port());
    let strait = Strait::start(
        &dir,
        &mirror_bootstrap(
            admin,
            listen,
            main.addr.port(),
            shadow.addr.port(),
            json!([
                {"cluster": "shadow", "runtime_fraction": {"default_value": {"numerator": 0}}},
                {"cluster": "shadow", "disable_shadow_host_suffix_append": true,
                 "runtime_fraction": {"default_value": {"numerator": 100}}},
            ]),
        ),
    );
    let mut c = Conn::connect(strait.listen).unwrap();
    for i in 0..20 {
        let id = i.to_string();
        assert_eq!(
            c.request("GET", "/", &[("x-id", &id)], b"").unwrap().status,
            200
        );
    }
    assert!(wait_for(
        || shadow_seen.lock().unwrap().len() >= 20,
        Duration::from_secs(5)
    ));
    thread::sleep(Duration::from_millis(200));
    let seen = shadow_seen.lock().unwrap();
    // Only the 100% policy mirrored, each request once, host unchanged.
    assert_eq!(seen.len(), 20);
    assert!(
        seen.iter()
            .all(|(_, h, _)| h.get("host").map(String::as_str) == Some("e2e.test"))
    );
}

#[test]
fn a_hanging_or_dead_shadow_never_delays_or_fails_the_main_request() {
    let (main, _) = recording(200, None);
    // The shadow answers after 3 s (the route timeout is 5 s).
    let (shadow, shadow_seen) = recording(200, Some(Duration::from_secs(3)));
    let dead = port(); // nothing listens there
    let dir = TestDir::new("mirror-slow");
    let (admin, listen) = (port(), port());
    let mut b = mirror_bootstrap(
        admin,
        listen,
        main.addr.port(),
        shadow.addr.port(),
        json!([{"cluster": "shadow"}, {"cluster": "dead"}]),
    );
    b["static_resources"]["clusters"]
        .as_array_mut()
        .unwrap()
        .push(cluster("dead", dead, false));
    let strait = Strait::start(&dir, &b);
    let mut c = Conn::connect(strait.listen).unwrap();
    let body = vec![b'x'; 256 * 1024];
    for i in 0..5 {
        let t = Instant::now();
        let id = i.to_string();
        let r = c.request("POST", "/", &[("x-id", &id)], &body).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body_str(), id);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "main request {i} waited for its shadow: {:?}",
            t.elapsed()
        );
    }
    assert!(strait.wait_stat(
        "cluster.dead.upstream_cx_connect_fail",
        Duration::from_secs(5),
        |v| v >= 5
    ));
    assert!(wait_for(
        || shadow_seen.lock().unwrap().len() == 5,
        Duration::from_secs(10)
    ));
    assert!(
        shadow_seen
            .lock()
            .unwrap()
            .iter()
            .all(|(_, _, b)| b.len() == 256 * 1024)
    );
    assert_eq!(strait.stat("cluster.main.upstream_rq_200"), Some(5));
}

/// Many clients with bodies of many sizes: every main request answered once with its own
/// answer, and the shadow upstream sees each id once with the same body.
#[test]
fn mirroring_under_concurrent_load_loses_and_duplicates_nothing() {
    let (main, main_seen) = recording(200, None);
    let (shadow, shadow_seen) = recording(200, None);
    let dir = TestDir::new("mirror-load");
    let (admin, listen) = (port(), port());
    let strait = Strait::start_with(
        &dir,
        &mirror_bootstrap(
            admin,
            listen,
            main.addr.port(),
            shadow.addr.port(),
            json!([{"cluster": "shadow"}]),
        ),
        StartOpts {
            concurrency: 2,
            ..StartOpts::default()
        },
    );
    const CLIENTS: usize = 8;
    const PER_CLIENT: usize = 25;
    let threads: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let addr = strait.listen;
            thread::spawn(move || {
                let mut conn = Conn::connect(addr).unwrap();
                for i in 0..PER_CLIENT {
                    let id = c * PER_CLIENT + i;
                    let len = [0, 10, 3000, 70_000][id % 4] + id;
                    let body = body_for(id, len);
                    let ids = id.to_string();
                    let r = conn
                        .request("POST", "/m", &[("x-id", &ids)], &body)
                        .unwrap();
                    assert_eq!(r.status, 200, "request {id}");
                    assert_eq!(r.body_str(), ids, "request {id} got another answer");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    let total = CLIENTS * PER_CLIENT;
    assert!(wait_for(
        || shadow_seen.lock().unwrap().len() >= total,
        Duration::from_secs(10)
    ));
    thread::sleep(Duration::from_millis(200));
    for (name, seen) in [("main", &main_seen), ("shadow", &shadow_seen)] {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), total, "{name} saw every request once");
        let mut ids: Vec<usize> = seen
            .iter()
            .map(|(_, h, body)| {
                let id: usize = h["x-id"].parse().unwrap();
                let len = [0, 10, 3000, 70_000][id % 4] + id;
                assert_eq!(
                    checksum(body),
                    checksum(&body_for(id, len)),
                    "{name} body of {id}"
                );
                id
            })
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), total, "{name}: no id twice");
    }
    println!("mirrored {total} requests under {CLIENTS} concurrent clients: 0 lost, 0 duplicated");
}
