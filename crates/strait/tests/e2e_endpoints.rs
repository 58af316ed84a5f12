//! Per-endpoint behaviour through the real `strait` binary: `auto_host_rewrite` with
//! endpoints of different hostnames (the rewrite happens after host choice, so each endpoint
//! sees its own hostname and `x-envoy-original-host` the downstream host), and an endpoint
//! that closes its connections with `connection: close`.

#[path = "e2e_common.rs"]
mod common;
#[path = "e2e_upstream.rs"]
mod upstream;

use std::sync::{Arc, Mutex};

use common::*;
use serde_json::json;
use upstream::*;

#[test]
fn each_endpoint_sees_its_own_hostname() {
    type Seen = Arc<Mutex<Vec<(String, String)>>>;
    let recorder = |status: u16| {
        let seen: Seen = Arc::default();
        let s = seen.clone();
        let up = Upstream::start(move |req, _| {
            s.lock().unwrap().push((
                req.header("host").unwrap_or_default().to_string(),
                req.header("x-envoy-original-host")
                    .unwrap_or_default()
                    .to_string(),
            ));
            Reply::Answer(status, String::new())
        });
        (up, seen)
    };
    let (a, seen_a) = recorder(200);
    let (b, seen_b) = recorder(200);
    let dir = TestDir::new("auto-host");
    let (admin, listen) = (port(), port());
    let endpoint = |port: u16, host: &str| json!({"endpoint": {"address": socket_address(port), "hostname": host}});
    let mut routes = vec![route("/", "named", None)];
    routes[0]["route"]["auto_host_rewrite"] = json!(true);
    let b = bootstrap(
        admin,
        vec![listener("main", listen, "ingress", routes, vec![])],
        vec![json!({
            "name": "named",
            "connect_timeout": "1s",
            "load_assignment": {"cluster_name": "named", "endpoints": [{"lb_endpoints": [
                endpoint(a.addr.port(), "a.example"),
                endpoint(b.addr.port(), "b.example"),
            ]}]},
        })],
    );
    let strait = Strait::start(&dir, &b);
    let mut c = Conn::connect(strait.listen).unwrap();
    for _ in 0..6 {
        assert_eq!(c.request("GET", "/", &[], b"").unwrap().status, 200);
    }
    let (sa, sb) = (
        seen_a.lock().unwrap().clone(),
        seen_b.lock().unwrap().clone(),
    );
    assert_eq!(sa.len() + sb.len(), 6);
    assert!(
        !sa.is_empty() && !sb.is_empty(),
        "round robin reaches both: {sa:?} {sb:?}"
    );
    let want = |h: &str| (h.to_string(), "e2e.test".to_string());
    assert!(sa.iter().all(|x| *x == want("a.example")), "{sa:?}");
    assert!(sb.iter().all(|x| *x == want("b.example")), "{sb:?}");
}

/// An upstream answering `connection: close` counts `upstream_cx_close_notify` (Envoy's
/// "connections closed via HTTP/1.1 connection close header") and the next request opens a
/// new connection.
#[test]
fn connection_close_from_the_upstream_counts_close_notify() {
    let up = Upstream::start(|_, _| Reply::AnswerThenClose(200, "bye".into()));
    let dir = TestDir::new("close-notify");
    let (admin, listen) = (port(), port());
    let b = bootstrap(
        admin,
        vec![listener(
            "main",
            listen,
            "ingress",
            vec![route("/", "up", None)],
            vec![],
        )],
        vec![cluster("up", up.addr.port(), false)],
    );
    let strait = Strait::start(&dir, &b);
    let mut c = Conn::connect(strait.listen).unwrap();
    for _ in 0..3 {
        let r = c.request("GET", "/", &[], b"").unwrap();
        assert_eq!((r.status, r.body_str().as_str()), (200, "bye"));
    }
    assert!(strait.wait_stat(
        "cluster.up.upstream_cx_close_notify",
        std::time::Duration::from_secs(3),
        |v| v == 3
    ));
    assert_eq!(strait.stat("cluster.up.upstream_cx_total"), Some(3));
}
