//! End-to-end lifecycle of the real `strait` binary: graceful drain on SIGTERM and on
//! `POST /quitquitquit` (in-flight requests finish, new connections are refused, access logs
//! are flushed, exit 0), the `--drain-time-s` bound, and `/healthcheck/fail|ok`.

#[path = "e2e_common.rs"]
mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;
use strait_testkit::EchoServer;

/// Which shutdown trigger a drain test uses.
#[derive(Clone, Copy, Debug)]
enum Trigger {
    Sigterm,
    QuitQuitQuit,
}

fn fire(strait: &Strait, trigger: Trigger) {
    match trigger {
        Trigger::Sigterm => strait.sigterm(),
        Trigger::QuitQuitQuit => {
            let r = strait.admin_post("/quitquitquit");
            assert_eq!(r.status, 200, "/quitquitquit: {}", r.body_str());
            assert_eq!(r.body_str(), "OK\n");
        }
    }
}

/// A slow request is in flight when the shutdown is triggered: it completes with 200, a new
/// connection is refused while it is still running, strait exits 0 once it is done, and the
/// file access log holds the request line (written out on shutdown).
fn drain_lets_inflight_request_finish(trigger: Trigger) {
    let echo = EchoServer::start_background("echo").unwrap();
    let dir = TestDir::new("drain");
    let log = dir.join("access.log");
    let (admin, listen) = (port(), port());
    let fmt = "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL% %RESPONSE_CODE% %RESPONSE_FLAGS%\n";
    let bs = bootstrap(
        admin,
        vec![listener(
            "main",
            listen,
            "ingress",
            vec![route("/", "echo", None)],
            vec![file_log_text(&log, fmt)],
        )],
        vec![cluster("echo", echo.port(), false)],
    );
    let mut strait = Strait::start_with(
        &dir,
        &bs,
        StartOpts {
            drain_time_s: Some(10),
            ..Default::default()
        },
    );
    let addr = strait.listen;

    let slow = thread::spawn(move || {
        let mut c = Conn::connect(addr).expect("connect for the slow request");
        let r = c.get("/delay/1500");
        (r, Instant::now())
    });
    assert!(
        strait.wait_stat(
            "http.ingress.downstream_rq_active",
            Duration::from_secs(5),
            |v| v == 1
        ),
        "the slow request never became active"
    );
    let fired = Instant::now();
    fire(&strait, trigger);

    // The listener closes at once: a new connection is refused while the slow request is
    // still being served.
    let deadline = Instant::now() + Duration::from_secs(1);
    while can_connect(addr) {
        assert!(
            Instant::now() < deadline,
            "the listener still accepts 1 s after {trigger:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !slow.is_finished(),
        "the slow request ended before the listener closed"
    );

    let (resp, done_at) = slow.join().unwrap();
    let resp = resp.unwrap_or_else(|e| {
        panic!(
            "in-flight request failed during drain: {e}\n{}",
            strait.output()
        )
    });
    assert_eq!(resp.status, 200, "{}", resp.body_str());
    assert_eq!(resp.json()["path"], "/delay/1500");
    // Draining HTTP/1.1 connections are closed after their response, as Envoy does.
    assert_eq!(
        resp.header("connection"),
        Some("close"),
        "headers: {:?}",
        resp.headers
    );

    let status = strait.wait_exit(Duration::from_secs(5)).unwrap_or_else(|| {
        panic!(
            "strait did not exit within 5 s of {trigger:?}:\n{}",
            strait.output()
        )
    });
    let exited = Instant::now();
    assert!(
        status.success(),
        "exit status {status} after {trigger:?}:\n{}",
        strait.output()
    );
    assert!(
        exited >= done_at,
        "exited before the in-flight response was complete"
    );
    assert!(
        exited.duration_since(fired) < Duration::from_secs(4),
        "took {:?} to exit after the in-flight request finished",
        exited.duration_since(fired)
    );

    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.lines().any(|l| l == "GET /delay/1500 HTTP/1.1 200 -"),
        "access log lacks the drained request after shutdown:\n{text}"
    );
}

#[test]
fn sigterm_drains_inflight_request_then_exits_0() {
    drain_lets_inflight_request_finish(Trigger::Sigterm);
}

#[test]
fn quitquitquit_drains_inflight_request_then_exits_0() {
    drain_lets_inflight_request_finish(Trigger::QuitQuitQuit);
}

/// `--drain-time-s 1` bounds the wait for a request that would take 10 s: strait exits 0
/// within ~3 s and the client does not get a 200.
#[test]
fn drain_time_bounds_shutdown() {
    let echo = EchoServer::start_background("echo").unwrap();
    let dir = TestDir::new("drain-bound");
    let (admin, listen) = (port(), port());
    let mut strait = Strait::start_with(
        &dir,
        &simple_bootstrap(admin, listen, echo.port()),
        StartOpts {
            drain_time_s: Some(1),
            ..Default::default()
        },
    );
    let addr = strait.listen;
    let slow = thread::spawn(move || {
        let mut c = Conn::connect(addr).expect("connect");
        c.set_read_timeout(Duration::from_secs(15));
        c.get("/delay/10000")
    });
    assert!(
        strait.wait_stat(
            "http.ingress.downstream_rq_active",
            Duration::from_secs(5),
            |v| v == 1
        ),
        "the slow request never became active"
    );
    let fired = Instant::now();
    strait.sigterm();
    let status = strait.wait_exit(Duration::from_secs(6));
    let took = fired.elapsed();
    let status = status
        .unwrap_or_else(|| panic!("strait still running 6 s after SIGTERM with --drain-time-s 1"));
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        strait.output()
    );
    assert!(
        took < Duration::from_secs(3),
        "exit took {took:?} with --drain-time-s 1"
    );
    assert!(
        took >= Duration::from_millis(900),
        "exit after {took:?}: did not wait for the drain time"
    );
    // The client sees the connection closed by the exit, or at worst an error reply.
    if let Ok(r) = slow.join().unwrap() {
        assert_ne!(r.status, 200, "a 10 s request cannot have succeeded");
    }
}

/// `/healthcheck/fail` turns `/ready` into 503 DRAINING (and `server.live` to 0) while
/// traffic is still served; `/healthcheck/ok` brings back 200 LIVE.
#[test]
fn healthcheck_fail_and_ok_toggle_ready() {
    let echo = EchoServer::start_background("echo").unwrap();
    let dir = TestDir::new("healthcheck");
    let (admin, listen) = (port(), port());
    let strait = Strait::start(&dir, &simple_bootstrap(admin, listen, echo.port()));

    let r = strait.admin_get("/ready");
    assert_eq!((r.status, r.body_str().as_str()), (200, "LIVE\n"));

    let r = strait.admin_post("/healthcheck/fail");
    assert_eq!(r.status, 200, "{}", r.body_str());
    let r = strait.admin_get("/ready");
    assert_eq!((r.status, r.body_str().as_str()), (503, "DRAINING\n"));
    assert_eq!(strait.admin_get("/server_info").json()["state"], "DRAINING");
    assert!(
        strait.wait_stat("server.live", Duration::from_secs(3), |v| v == 0),
        "server.live stays {:?} after /healthcheck/fail",
        strait.stat("server.live")
    );
    // Failing health checks does not stop serving.
    let p = http_get(strait.listen, "/still-serving").unwrap();
    assert_eq!(p.status, 200);

    let r = strait.admin_post("/healthcheck/ok");
    assert_eq!(r.status, 200, "{}", r.body_str());
    let r = strait.admin_get("/ready");
    assert_eq!((r.status, r.body_str().as_str()), (200, "LIVE\n"));
    assert_eq!(strait.admin_get("/server_info").json()["state"], "LIVE");
    assert!(strait.wait_stat("server.live", Duration::from_secs(3), |v| v == 1));
}
