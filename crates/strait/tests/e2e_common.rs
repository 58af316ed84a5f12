//! Shared helpers for the end-to-end tests (`e2e_*.rs`): each of those files includes this
//! one with `#[path = "e2e_common.rs"] mod common;`. Cargo also builds it as a test target
//! of its own, which has no tests.
//!
//! What is here: a temporary directory per test, bootstrap builders (bootstraps are written
//! as JSON, which Envoy and Strait read by the `.json` extension), a [`Strait`] guard that
//! starts the real binary and waits for `/ready`, admin and stats helpers, signals, and a
//! small blocking HTTP/1.1 client that streams bodies without holding them.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use strait_testkit::ports::localhost;
use strait_testkit::{Process, free_port};

/// The `strait` binary under test.
pub fn strait_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_strait"))
}

/// A fresh directory for one test's files, removed on drop unless the test failed (then
/// its path is printed so the bootstrap and logs can be read).
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "strait-e2e-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create test dir");
        TestDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("e2e: test files kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Bootstrap builders
// ---------------------------------------------------------------------------------------

pub const HCM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
pub const ROUTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
pub const FILE_LOG_TYPE: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog";
pub const HTTP_OPTIONS_TYPE: &str =
    "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

pub fn socket_address(port: u16) -> Value {
    json!({"socket_address": {"address": "127.0.0.1", "port_value": port}})
}

/// A route `{match: {prefix}, route: {cluster}}`, with a route timeout when given.
pub fn route(prefix: &str, cluster: &str, timeout: Option<&str>) -> Value {
    let mut action = json!({"cluster": cluster});
    if let Some(t) = timeout {
        action["timeout"] = json!(t);
    }
    json!({"match": {"prefix": prefix}, "route": action})
}

/// A file access log with a text format.
pub fn file_log_text(path: &Path, format: &str) -> Value {
    json!({
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": FILE_LOG_TYPE,
            "path": path.display().to_string(),
            "log_format": {"text_format_source": {"inline_string": format}},
        }
    })
}

/// A file access log with a JSON format.
pub fn file_log_json(path: &Path, format: Value) -> Value {
    json!({
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": FILE_LOG_TYPE,
            "path": path.display().to_string(),
            "log_format": {"json_format": format},
        }
    })
}

/// A listener on 127.0.0.1:`port` with an HTTP connection manager (codec AUTO) whose only
/// virtual host (`*`) has `routes`.
pub fn listener(
    name: &str,
    port: u16,
    stat_prefix: &str,
    routes: Vec<Value>,
    access_logs: Vec<Value>,
) -> Value {
    let mut hcm = json!({
        "@type": HCM_TYPE,
        "stat_prefix": stat_prefix,
        "codec_type": "AUTO",
        "route_config": {
            "name": format!("{name}_routes"),
            "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}],
        },
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}],
    });
    if !access_logs.is_empty() {
        hcm["access_log"] = json!(access_logs);
    }
    json!({
        "name": name,
        "address": socket_address(port),
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
    })
}

/// A STATIC cluster with one endpoint at 127.0.0.1:`port`; `http2` makes it speak h2c.
pub fn cluster(name: &str, port: u16, http2: bool) -> Value {
    let mut c = json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket_address(port)}}]}],
        },
    });
    if http2 {
        c["typed_extension_protocol_options"] = json!({
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_OPTIONS_TYPE,
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        });
    }
    c
}

/// A whole bootstrap: admin on `admin_port`, the given listeners and clusters, and a 1 s
/// stats flush interval (histograms show up quickly).
pub fn bootstrap(admin_port: u16, listeners: Vec<Value>, clusters: Vec<Value>) -> Value {
    json!({
        "admin": {"address": socket_address(admin_port)},
        "stats_flush_interval": "1s",
        "static_resources": {"listeners": listeners, "clusters": clusters},
    })
}

/// The usual shape: one listener `main` (stat prefix `ingress`) routing `/` to cluster `echo`
/// at `echo_port`.
pub fn simple_bootstrap(admin_port: u16, listen_port: u16, echo_port: u16) -> Value {
    bootstrap(
        admin_port,
        vec![listener(
            "main",
            listen_port,
            "ingress",
            vec![route("/", "echo", None)],
            vec![],
        )],
        vec![cluster("echo", echo_port, false)],
    )
}

// ---------------------------------------------------------------------------------------
// The strait process
// ---------------------------------------------------------------------------------------

/// A running `strait`, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Strait {
    pub process: Process,
    pub admin: SocketAddr,
    /// The address of the first listener (what most tests send to).
    pub listen: SocketAddr,
}

/// How to start strait.
pub struct StartOpts<'a> {
    pub concurrency: usize,
    pub drain_time_s: Option<u64>,
    pub extra_args: Vec<String>,
    /// Name of the bootstrap file in the test dir.
    pub file_name: &'a str,
}

impl Default for StartOpts<'_> {
    fn default() -> Self {
        StartOpts {
            concurrency: 1,
            drain_time_s: None,
            extra_args: Vec::new(),
            file_name: "bootstrap.json",
        }
    }
}

impl Strait {
    /// Writes `bootstrap` into `dir` and starts strait on it with `--concurrency 1`; waits
    /// until `/ready` answers 200. `listen` is the port of the first listener.
    pub fn start(dir: &TestDir, bootstrap: &Value) -> Strait {
        Self::start_with(dir, bootstrap, StartOpts::default())
    }

    pub fn start_with(dir: &TestDir, bootstrap: &Value, opts: StartOpts<'_>) -> Strait {
        let path = dir.join(opts.file_name);
        std::fs::write(&path, serde_json::to_string_pretty(bootstrap).unwrap())
            .expect("write bootstrap");
        let mut args = vec![
            "-c".to_string(),
            path.display().to_string(),
            "--concurrency".to_string(),
            opts.concurrency.to_string(),
            "-l".to_string(),
            "info".to_string(),
        ];
        if let Some(d) = opts.drain_time_s {
            args.push("--drain-time-s".into());
            args.push(d.to_string());
        }
        args.extend(opts.extra_args);
        let admin_port = bootstrap["admin"]["address"]["socket_address"]["port_value"]
            .as_u64()
            .expect("admin port") as u16;
        let listen_port = bootstrap["static_resources"]["listeners"][0]["address"]["socket_address"]
            ["port_value"]
            .as_u64()
            .unwrap_or(0) as u16;
        Self::spawn_args(dir, &args, admin_port, listen_port)
    }

    /// Starts strait with exactly `args` and waits for `/ready` on `admin_port`.
    pub fn spawn_args(dir: &TestDir, args: &[String], admin_port: u16, listen_port: u16) -> Strait {
        let process =
            Process::spawn(&strait_bin(), args, &dir.join("strait.log")).expect("spawn strait");
        let mut s = Strait {
            process,
            admin: localhost(admin_port),
            listen: localhost(listen_port),
        };
        s.wait_ready(Duration::from_secs(15));
        s
    }

    /// Polls `/ready` until it answers 200 LIVE; panics with strait's output otherwise.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.process.try_exit_status() {
                panic!(
                    "strait exited during start ({status}):\n{}",
                    self.process.output_tail(40)
                );
            }
            if let Ok(r) = http_get(self.admin, "/ready")
                && r.status == 200
            {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "strait not ready after {timeout:?}:\n{}",
                    self.process.output_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn admin_get(&self, path: &str) -> Resp {
        http_get(self.admin, path).unwrap_or_else(|e| panic!("admin GET {path}: {e}"))
    }

    pub fn admin_post(&self, path: &str) -> Resp {
        http_request(self.admin, "POST", path, &[], b"")
            .unwrap_or_else(|e| panic!("admin POST {path}: {e}"))
    }

    /// Every counter and gauge of `/stats` (text format) by name.
    pub fn stats(&self) -> BTreeMap<String, i64> {
        let body = self.admin_get("/stats").body_str();
        body.lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(": ")?;
                Some((k.to_string(), v.trim().parse::<i64>().ok()?))
            })
            .collect()
    }

    pub fn stat(&self, name: &str) -> Option<i64> {
        self.stats().get(name).copied()
    }

    /// Polls `/stats` until `name` satisfies `pred` (true) or `timeout` passes (false).
    pub fn wait_stat(&self, name: &str, timeout: Duration, pred: impl Fn(i64) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stat(name).is_some_and(&pred) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Peak resident set size (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:").expect("VmHWM in /proc/<pid>/status")
    }

    pub fn sigterm(&self) {
        signal(self.pid(), libc::SIGTERM);
    }

    /// Waits up to `timeout` for strait to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.process.wait_timeout(timeout)
    }

    pub fn output(&self) -> String {
        self.process.output()
    }
}

pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a child we spawned and have not reaped.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}): {}", io::Error::last_os_error());
}

/// A `kB` field of `/proc/<pid>/status` (VmHWM, VmRSS, ...).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A free 127.0.0.1 port (this process never hands one out twice).
pub fn port() -> u16 {
    free_port()
}

/// Polls `path` until it exists and `pred` holds for its content, or `timeout` passes.
/// Returns the content seen last.
pub fn wait_file(path: &Path, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && pred(&s)
        {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// True if a TCP connect to `addr` succeeds (within 300 ms).
pub fn can_connect(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

// ---------------------------------------------------------------------------------------
// A blocking HTTP/1.1 client that can stream
// ---------------------------------------------------------------------------------------

/// A response read by [`Conn`]. `body` is empty when it was only counted.
#[derive(Debug, Clone, Default)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub body_len: u64,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {:?}", self.body_str()))
    }
}

/// One HTTP/1.1 connection: write requests (whole or piece by piece), read responses.
pub struct Conn {
    reader: BufReader<TcpStream>,
    pub local: SocketAddr,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        s.set_write_timeout(Some(Duration::from_secs(20)))?;
        let local = s.local_addr()?;
        Ok(Conn {
            reader: BufReader::with_capacity(64 * 1024, s),
            local,
        })
    }

    pub fn set_read_timeout(&self, t: Duration) {
        let _ = self.reader.get_ref().set_read_timeout(Some(t));
    }

    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.reader.get_mut().write_all(bytes)
    }

    /// Sends a request with `content-length` (when `body` is non-empty or the method is
    /// POST/PUT) and reads the response.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Resp> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: e2e.test\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" || method == "PUT" {
            head.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut msg = head.into_bytes();
        msg.extend_from_slice(body);
        self.write(&msg)?;
        self.read_response(true)
    }

    pub fn get(&mut self, path: &str) -> io::Result<Resp> {
        self.request("GET", path, &[], b"")
    }

    /// Reads one response; the body is kept when `keep_body`, else only counted (so a
    /// response of any size takes constant memory).
    pub fn read_response(&mut self, keep_body: bool) -> io::Result<Resp> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ));
        }
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad status line {line:?}"),
                )
            })?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed in the response head",
                ));
            }
            let l = line.trim_end_matches(['\r', '\n']);
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let mut resp = Resp {
            status,
            headers,
            body: Vec::new(),
            body_len: 0,
        };
        let chunked = resp
            .header("transfer-encoding")
            .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line)?;
                let size = u64::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("bad chunk size {line:?}"),
                        )
                    })?;
                if size == 0 {
                    loop {
                        line.clear();
                        if self.reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                self.read_body(size, keep_body, &mut resp)?;
                line.clear();
                self.reader.read_line(&mut line)?;
            }
        } else if let Some(n) = resp
            .header("content-length")
            .and_then(|v| v.parse::<u64>().ok())
        {
            self.read_body(n, keep_body, &mut resp)?;
        } else if !(status == 204 || status == 304 || (100..200).contains(&status)) {
            // Delimited by close.
            self.read_body(u64::MAX, keep_body, &mut resp)?;
        }
        Ok(resp)
    }

    fn read_body(&mut self, mut n: u64, keep: bool, resp: &mut Resp) -> io::Result<()> {
        let until_eof = n == u64::MAX;
        while n > 0 {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                if until_eof {
                    return Ok(());
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("closed with {n} body bytes missing"),
                ));
            }
            let take = buf.len().min(n.min(usize::MAX as u64) as usize);
            if keep {
                resp.body.extend_from_slice(&buf[..take]);
            }
            resp.body_len += take as u64;
            self.reader.consume(take);
            if !until_eof {
                n -= take as u64;
            }
        }
        Ok(())
    }

    /// True if the peer closes the connection within `timeout` (any bytes are discarded).
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        self.set_read_timeout(timeout);
        let mut b = [0u8; 1024];
        loop {
            match self.reader.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return false;
                }
                Err(_) => return true,
            }
        }
    }
}

/// One request on a fresh connection.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Resp> {
    Conn::connect(addr)?.request(method, path, headers, body)
}

pub fn http_get(addr: SocketAddr, path: &str) -> io::Result<Resp> {
    http_request(addr, "GET", path, &[], b"")
}

/// Finds Envoy for checks against the real thing: `$ENVOY_BIN`, then `.venv-envoy/bin/envoy`
/// in the workspace root or its parent.
pub fn find_envoy() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ENVOY_BIN").map(PathBuf::from)
        && p.is_file()
    {
        return Some(p);
    }
    let root = strait_testkit::workspace_root();
    [
        root.join(".venv-envoy/bin/envoy"),
        root.join("../.venv-envoy/bin/envoy"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

/// The result of a strait run that is expected to end by itself.
#[derive(Debug)]
pub struct RunOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

/// Runs strait with `args` (stdout and stderr captured apart) and waits up to `timeout` for
/// it to exit; kills it and panics if it does not. `while_running` is called every few
/// milliseconds until the exit (e.g. to check a port stays closed).
pub fn run_strait(
    dir: &TestDir,
    args: &[&str],
    timeout: Duration,
    mut while_running: impl FnMut(),
) -> RunOutput {
    let out_path = dir.join("run.stdout");
    let err_path = dir.join("run.stderr");
    let started = Instant::now();
    let mut child = std::process::Command::new(strait_bin())
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("spawn strait");
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "strait {args:?} still running after {timeout:?}; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        while_running();
        std::thread::sleep(Duration::from_millis(5));
    };
    RunOutput {
        status,
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
        took: started.elapsed(),
    }
}
