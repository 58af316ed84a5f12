//! Resilience under load through the real `strait` binary: three HTTP/1.1 backends behind
//! one cluster, a steady load from several client threads, and part way through one backend
//! dies (its listener and connections are closed abruptly, later it comes back) or hangs
//! (accepts and reads but never answers). With a route retry policy (`previous_hosts`,
//! `per_try_timeout`), cluster outlier detection and a `max_retries` circuit breaker sized to
//! the requests in flight, the clients see no failed request; the
//! same scenario without them is run too and its failures are printed, so
//! `docs/resilience.md` can show the difference. When Envoy 1.40 is found (`$ENVOY_BIN` or
//! `.venv-envoy`), each scenario also runs against Envoy on the same bootstrap and its numbers
//! are printed next to Strait's (`cargo test -p strait --test e2e_resilience -- --nocapture`).
//! Also here: a request given up while it waits for a connection (`upstream_rq_cancelled`).

#[path = "e2e_common.rs"]
mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use strait_testkit::Process;

/// The load scenarios run one at a time: they measure failures under timing, and two of them
/// competing for the CPU would measure the machine instead.
static SERIAL: Mutex<()> = Mutex::new(());

const UP: u8 = 0;
/// Listener closed, connections reset: what a crashed process looks like.
const DOWN: u8 = 1;
/// Connections are accepted and read, nothing is ever answered.
const HANG: u8 = 2;

/// One backend: answers `200` with its name after a short delay (so requests are in flight
/// when it dies). Its state is switched by the test; the port stays the same across
/// restarts.
struct Backend {
    port: u16,
    state: Arc<AtomicU8>,
    answered: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Backend {
    fn start(name: &'static str) -> Backend {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let b = Backend {
            port,
            state: Arc::new(AtomicU8::new(UP)),
            answered: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (state, answered, stop) = (b.state.clone(), b.answered.clone(), b.stop.clone());
        thread::spawn(move || accept_loop(Some(l), port, name, &state, &answered, &stop));
        b
    }

    fn set(&self, s: u8) {
        self.state.store(s, Ordering::SeqCst);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(
    mut listener: Option<TcpListener>,
    port: u16,
    name: &'static str,
    state: &Arc<AtomicU8>,
    answered: &Arc<AtomicU64>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::SeqCst) {
        if state.load(Ordering::SeqCst) == DOWN {
            // Closing the listener: new connections are refused.
            listener = None;
            thread::sleep(Duration::from_millis(2));
            continue;
        }
        let l = match &listener {
            Some(l) => l,
            None => match TcpListener::bind(("127.0.0.1", port)) {
                Ok(l) => listener.insert(l),
                Err(_) => {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                }
            },
        };
        l.set_nonblocking(true).unwrap();
        match l.accept() {
            Ok((s, _)) => {
                let (state, answered) = (state.clone(), answered.clone());
                thread::spawn(move || serve(s, name, &state, &answered));
            }
            Err(_) => thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// Closes `s` with a TCP reset (SO_LINGER 0), as the kernel does for a killed process with
/// unread data.
fn reset(s: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a correctly sized `linger`.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(s);
}

fn serve(mut s: TcpStream, name: &str, state: &AtomicU8, answered: &AtomicU64) {
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match state.load(Ordering::SeqCst) {
            DOWN => return reset(s),
            HANG => {
                // Read and discard, never answer; until the backend is dropped or restarted.
                match s.read(&mut chunk) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => return,
                }
                buf.clear();
                continue;
            }
            _ => {}
        }
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match s.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return,
            }
            continue;
        };
        buf.drain(..end + 4);
        // The request is "processed"; the backend may die meanwhile.
        thread::sleep(Duration::from_millis(2));
        match state.load(Ordering::SeqCst) {
            DOWN => return reset(s),
            HANG => continue,
            _ => {}
        }
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: text/plain\r\n\r\n{name}",
            name.len()
        );
        if s.write_all(resp.as_bytes()).is_err() {
            return;
        }
        answered.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the failing backend does during the run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    /// Killed (listener closed, connections reset) at 1/4 of the run, back at 2/3.
    Crash,
    /// Hangs at 1/4 of the run until the end.
    Hang,
}

/// The load's results.
#[derive(Debug, Default)]
struct Tally {
    requests: u64,
    failures: u64,
    /// Failures by cause (`status 503`, `io: ...`), for the report.
    causes: std::collections::BTreeMap<String, u64>,
    slowest_ms: u128,
}

/// Client threads, each with one request in flight at a time.
const CLIENTS: usize = 6;
const RUN: Duration = Duration::from_secs(6);

/// Drives `clients` keep-alive clients against `listen` for `RUN` while `fault` happens to
/// `victim`.
fn run_load(
    listen: SocketAddr,
    clients: usize,
    victim: &Backend,
    fault: Fault,
    trace: Option<SocketAddr>,
) -> Tally {
    let end = Instant::now() + RUN;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let clients: Vec<_> = (0..clients)
        .map(|i| {
            let tally = tally.clone();
            thread::spawn(move || client(listen, i, end, &tally))
        })
        .collect();
    let start = Instant::now();
    if let Some(admin) = trace {
        let victim_port = victim.port;
        thread::spawn(move || {
            while Instant::now() < end {
                let s = admin_stats(admin);
                let g = |n: &str| s.get(&format!("cluster.svc.{n}")).copied().unwrap_or(0);
                // The victim's line in `/clusters`: its health flags and requests.
                let clusters = http_get(admin, "/clusters")
                    .map(|r| r.body_str())
                    .unwrap_or_default();
                let host = |field: &str| {
                    let key = format!("::127.0.0.1:{victim_port}::{field}::");
                    clusters
                        .lines()
                        .find_map(|l| l.split_once(&key).map(|(_, v)| v.to_string()))
                        .unwrap_or_default()
                };
                eprintln!(
                    "  trace t={:?} connect_fail={} retry={} overflow={} ejected={} \
                     victim flags={} rq_total={}",
                    start.elapsed(),
                    g("upstream_cx_connect_fail"),
                    g("upstream_rq_retry"),
                    g("upstream_rq_retry_overflow"),
                    g("outlier_detection.ejections_active"),
                    host("health_flags"),
                    host("rq_total"),
                );
                thread::sleep(Duration::from_millis(100));
            }
        });
    }
    thread::sleep(RUN / 4);
    victim.set(match fault {
        Fault::Crash => DOWN,
        Fault::Hang => HANG,
    });
    eprintln!(
        "  t={:?}: backend {} {fault:?}",
        start.elapsed(),
        victim.port
    );
    if fault == Fault::Crash {
        thread::sleep(RUN * 2 / 3 - RUN / 4);
        victim.set(UP);
        eprintln!("  t={:?}: backend {} back", start.elapsed(), victim.port);
    }
    for c in clients {
        c.join().unwrap();
    }
    Arc::try_unwrap(tally).unwrap().into_inner().unwrap()
}

fn client(listen: SocketAddr, i: usize, end: Instant, tally: &Mutex<Tally>) {
    let mut conn: Option<Conn> = None;
    let mut n = 0u64;
    while Instant::now() < end {
        n += 1;
        let path = format!("/c{i}/{n}");
        let t = Instant::now();
        let result = match conn.as_mut() {
            Some(c) => c.get(&path),
            None => Conn::connect(listen).and_then(|c| conn.insert(c).get(&path)),
        };
        let took = t.elapsed().as_millis();
        let failure = match result {
            Ok(r) if r.status == 200 => None,
            Ok(r) => {
                if r.header("connection") == Some("close") {
                    conn = None;
                }
                Some(format!("status {} {}", r.status, r.body_str()))
            }
            Err(e) => {
                conn = None;
                Some(format!("io: {e}"))
            }
        };
        {
            let mut t = tally.lock().unwrap();
            t.requests += 1;
            t.slowest_ms = t.slowest_ms.max(took);
            if let Some(f) = failure {
                t.failures += 1;
                *t.causes.entry(f).or_default() += 1;
            }
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// How the route and cluster are set up.
#[derive(Clone, Copy, Debug)]
struct Setup {
    /// Retry policy on the route and outlier detection on the cluster.
    protected: bool,
    /// `circuit_breakers.thresholds[0].max_retries`, when raised above the default.
    max_retries: Option<usize>,
    clients: usize,
}

/// The bootstrap: listener `main` routes `/` to cluster `svc` (the three backends, round
/// robin), with the protections of `setup`.
fn resilience_bootstrap(admin: u16, listen: u16, ports: &[u16], setup: Setup) -> Value {
    let eps: Vec<Value> = ports
        .iter()
        .map(|p| json!({"endpoint": {"address": socket_address(*p)}}))
        .collect();
    let mut cluster = json!({
        "name": "svc",
        "type": "STATIC",
        "connect_timeout": "0.25s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {"cluster_name": "svc", "endpoints": [{"lb_endpoints": eps}]},
    });
    let mut r = route("/", "svc", None);
    if let Some(n) = setup.max_retries {
        cluster["circuit_breakers"] = json!({"thresholds": [{"max_retries": n}]});
    }
    if setup.protected {
        r["route"]["retry_policy"] = json!({
            "retry_on": "5xx,reset,connect-failure",
            "num_retries": 3,
            "per_try_timeout": "0.3s",
            "retry_host_predicate": [{
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"},
            }],
            "host_selection_retry_max_attempts": 5,
        });
        cluster["outlier_detection"] = json!({
            "consecutive_5xx": 3,
            "consecutive_gateway_failure": 3,
            "enforcing_consecutive_gateway_failure": 100,
            "interval": "0.5s",
            "base_ejection_time": "1s",
            "max_ejection_percent": 50,
        });
    }
    bootstrap(
        admin,
        vec![listener("main", listen, "ingress", vec![r], vec![])],
        vec![cluster],
    )
}

/// Counters of `/stats` on `admin` (text format).
fn admin_stats(admin: SocketAddr) -> std::collections::BTreeMap<String, i64> {
    let body = http_get(admin, "/stats")
        .map(|r| r.body_str())
        .unwrap_or_default();
    body.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(": ")?;
            Some((k.to_string(), v.trim().parse::<i64>().ok()?))
        })
        .collect()
}

/// One scenario's numbers, printed for `docs/resilience.md`.
fn report(proxy: &str, label: &str, tally: &Tally, admin: SocketAddr, answered: [u64; 3]) {
    let s = admin_stats(admin);
    let g = |n: &str| s.get(&format!("cluster.svc.{n}")).copied().unwrap_or(0);
    eprintln!(
        "RESILIENCE {proxy} {label}: requests={} failures={} retries={} retry_overflow={} \
         ejections={} per_try_timeouts={} connect_fail={} slowest_ms={} backends={answered:?}",
        tally.requests,
        tally.failures,
        g("upstream_rq_retry"),
        g("upstream_rq_retry_overflow"),
        g("outlier_detection.ejections_enforced_total"),
        g("upstream_rq_per_try_timeout"),
        g("upstream_cx_connect_fail"),
        tally.slowest_ms,
    );
    for (cause, n) in &tally.causes {
        eprintln!("  {proxy} {label} failure x{n}: {cause}");
    }
    if std::env::var_os("STRAIT_RESILIENCE_STATS").is_some() {
        for (k, v) in s.iter().filter(|(k, _)| k.starts_with("cluster.svc.")) {
            eprintln!("  {proxy} {label} {k}: {v}");
        }
    }
}

/// Which proxy a scenario runs against.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Proxy {
    Strait,
    Envoy,
}

/// A started proxy: `listen`, `admin`, and the process guard (Strait's or Envoy's).
enum Running {
    Strait(Strait),
    /// Kept to stop Envoy on drop.
    Envoy(#[allow(dead_code)] Process),
}

fn start_proxy(proxy: Proxy, dir: &TestDir, b: &Value) -> Option<Running> {
    match proxy {
        Proxy::Strait => Some(Running::Strait(Strait::start(dir, b))),
        Proxy::Envoy => {
            let bin = find_envoy()?;
            let path = dir.join("envoy.json");
            std::fs::write(&path, b.to_string()).unwrap();
            let admin = b["admin"]["address"]["socket_address"]["port_value"]
                .as_u64()
                .unwrap() as u16;
            let base_id = (std::process::id() % 50_000 + u32::from(admin)).to_string();
            let args = [
                "-c",
                path.to_str().unwrap(),
                "--concurrency",
                "1",
                "-l",
                "warning",
                "--base-id",
                &base_id,
            ];
            let p = Process::spawn(&bin, args, &dir.join("envoy.log")).expect("spawn envoy");
            let addr = strait_testkit::ports::localhost(admin);
            let deadline = Instant::now() + Duration::from_secs(15);
            while !http_get(addr, "/ready").is_ok_and(|r| r.status == 200) {
                assert!(
                    Instant::now() < deadline,
                    "envoy not ready:\n{}",
                    p.output_tail(30)
                );
                thread::sleep(Duration::from_millis(50));
            }
            Some(Running::Envoy(p))
        }
    }
}

/// Runs one scenario against `proxy` on fresh backends; `None` when the proxy is Envoy and
/// Envoy is not installed.
fn scenario(proxy: Proxy, fault: Fault, setup: Setup) -> Option<Tally> {
    let name = match proxy {
        Proxy::Strait => "strait",
        Proxy::Envoy => "envoy",
    };
    let label = format!(
        "{fault:?} {} ({} clients{})",
        if setup.protected {
            "with retries+outlier detection"
        } else {
            "unprotected"
        },
        setup.clients,
        setup
            .max_retries
            .map(|n| format!(", max_retries {n}"))
            .unwrap_or_default(),
    );
    let backends = [
        Backend::start("b0"),
        Backend::start("b1"),
        Backend::start("b2"),
    ];
    let ports: Vec<u16> = backends.iter().map(|b| b.port).collect();
    let dir = TestDir::new(&format!("resilience-{name}"));
    let (admin, listen) = (port(), port());
    let b = resilience_bootstrap(admin, listen, &ports, setup);
    let Some(running) = start_proxy(proxy, &dir, &b) else {
        eprintln!("SKIP: Envoy not found: {label} not run against Envoy");
        return None;
    };
    let trace = std::env::var_os("STRAIT_RESILIENCE_TRACE")
        .is_some()
        .then(|| strait_testkit::ports::localhost(admin));
    let tally = run_load(
        strait_testkit::ports::localhost(listen),
        setup.clients,
        &backends[0],
        fault,
        trace,
    );
    let answered = [0, 1, 2].map(|i| backends[i].answered.load(Ordering::Relaxed));
    report(
        name,
        &label,
        &tally,
        strait_testkit::ports::localhost(admin),
        answered,
    );
    if let Running::Strait(s) = &running
        && setup.protected
        && tally.failures > 0
    {
        eprintln!("{}", s.process.output_tail(30));
    }
    drop(running);
    Some(tally)
}

/// The setup of a protected run. Every client has one request in flight, so at most
/// `clients` retries are pending at once: `max_retries` is raised to that (the default, 3,
/// would make some of them overflow when a hung host's per-try timeouts fire together).
fn protected_setup() -> Setup {
    Setup {
        protected: true,
        max_retries: Some(CLIENTS),
        clients: CLIENTS,
    }
}

fn run(fault: Fault, setup: Setup) -> Tally {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tally = scenario(Proxy::Strait, fault, setup).expect("strait runs");
    scenario(Proxy::Envoy, fault, setup);
    if setup.protected && std::env::var_os("STRAIT_RESILIENCE_DEFAULT_BREAKER").is_some() {
        // What the default retry circuit breaker does to the same load (for the docs).
        let default = Setup {
            max_retries: None,
            clients: CLIENTS,
            ..setup
        };
        scenario(Proxy::Strait, fault, default);
        scenario(Proxy::Envoy, fault, default);
    }
    tally
}

#[test]
fn crashed_backend_loses_no_request_with_retries_and_outlier_detection() {
    let t = run(Fault::Crash, protected_setup());
    assert!(t.requests > 500, "too little load to mean anything: {t:?}");
    assert_eq!(t.failures, 0, "{t:?}");
}

#[test]
fn hung_backend_loses_no_request_with_per_try_timeout_and_outlier_detection() {
    let t = run(Fault::Hang, protected_setup());
    assert!(t.requests > 500, "too little load to mean anything: {t:?}");
    assert_eq!(t.failures, 0, "{t:?}");
}

/// The same crash without protection, for comparison: the requests that were on or sent to
/// the dead backend fail (how many depends on timing, so only the load is asserted).
#[test]
fn crashed_backend_without_protection_for_comparison() {
    let t = run(
        Fault::Crash,
        Setup {
            protected: false,
            max_retries: None,
            clients: CLIENTS,
        },
    );
    assert!(t.requests > 500, "too little load to mean anything: {t:?}");
}

/// A listener whose accept queue is full and never drained: further connects hang (the
/// kernel drops their SYNs), so a request to it waits for a connection until a timeout.
/// Returns the port and the descriptors to close.
fn black_hole() -> (u16, Vec<TcpStream>, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor this function owns; the sockaddr is a
    // zeroed, correctly sized sockaddr_in.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let owned = std::os::fd::OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(
            libc::bind(fd, (&addr as *const libc::sockaddr_in).cast(), len),
            0
        );
        assert_eq!(libc::listen(fd, 0), 0);
        let mut got: libc::sockaddr_in = std::mem::zeroed();
        let mut got_len = len;
        libc::getsockname(
            fd,
            (&mut got as *mut libc::sockaddr_in).cast(),
            &mut got_len,
        );
        let port = u16::from_be(got.sin_port);
        // Fill the accept queue (backlog 0 still admits one or two).
        let mut fillers = Vec::new();
        for _ in 0..4 {
            if let Ok(s) = TcpStream::connect_timeout(
                &SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_millis(200),
            ) {
                fillers.push(s);
            }
        }
        (port, fillers, owned)
    }
}

/// A request whose route timeout fires while it still waits for a connection is a
/// cancelled pool request (`upstream_rq_cancelled`) and a timeout (`upstream_rq_timeout`),
/// answered 504, as in Envoy (checked against it when installed).
#[test]
fn request_given_up_while_connecting_counts_as_cancelled() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (hole, _fillers, _fd) = black_hole();
    for proxy in [Proxy::Strait, Proxy::Envoy] {
        let dir = TestDir::new("resilience-cancelled");
        let (admin, listen) = (port(), port());
        let mut c = cluster("svc", hole, false);
        c["connect_timeout"] = json!("5s");
        let b = bootstrap(
            admin,
            vec![listener(
                "main",
                listen,
                "ingress",
                vec![route("/", "svc", Some("0.3s"))],
                vec![],
            )],
            vec![c],
        );
        let Some(_running) = start_proxy(proxy, &dir, &b) else {
            eprintln!("SKIP: Envoy not found: not compared against Envoy");
            continue;
        };
        let r = http_get(strait_testkit::ports::localhost(listen), "/").unwrap();
        assert_eq!(r.status, 504, "{}", r.body_str());
        let admin = strait_testkit::ports::localhost(admin);
        let deadline = Instant::now() + Duration::from_secs(3);
        let stats = loop {
            let s = admin_stats(admin);
            if s.get("cluster.svc.upstream_rq_cancelled") == Some(&1) || Instant::now() > deadline {
                break s;
            }
            thread::sleep(Duration::from_millis(25));
        };
        let g = |n: &str| stats.get(&format!("cluster.svc.{n}")).copied();
        assert_eq!(g("upstream_rq_cancelled"), Some(1), "{stats:?}");
        assert_eq!(g("upstream_rq_timeout"), Some(1), "{stats:?}");
        assert_eq!(g("upstream_rq_pending_failure_eject"), Some(0), "{stats:?}");
    }
}
