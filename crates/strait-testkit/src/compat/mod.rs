//! Envoy compatibility harness.
//!
//! Case files (`compat/cases/*.yaml`, format in `compat/README.md`) hold an Envoy bootstrap
//! template, requests and the responses real Envoy 1.40 gives. [`run_cases`] starts a proxy
//! binary (Strait or Envoy, same command line) per case, sends the requests and compares.
//! [`run_validate_cases`] runs `compat/validate/*.yaml` with `--mode validate` and compares
//! exit codes.

pub mod format;

use std::collections::{BTreeSet, HashMap};
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::client::{self, HttpRequest};
use crate::echo::{EchoHandle, EchoServer};
use crate::ports::{free_port, localhost};
use crate::process::Process;
use crate::raw::{RawConn, RawError};
use format::{CaseFile, Expect, HeaderList, RequestSpec, Target, UpstreamExpect, ValidateFile};

/// Which implementation a [`ProxyCmd`] runs; only changes what is checked for validate cases
/// (`envoy_output_contains` is checked for Envoy only) and the labels in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    Envoy,
    Strait,
}

/// How to start the proxy under test. Both kinds get Envoy's command line:
/// `-c <bootstrap.yaml> --concurrency 1 --base-id <unique> -l <level> [extra_args]`.
#[derive(Debug, Clone)]
pub struct ProxyCmd {
    pub program: PathBuf,
    pub kind: ProxyKind,
    pub extra_args: Vec<String>,
    /// `-l` level (default `info`; env `STRAIT_COMPAT_LOG_LEVEL` overrides).
    pub log_level: String,
    /// How long to wait for the proxy to become ready (default 10 s).
    pub ready_timeout: Duration,
}

impl ProxyCmd {
    pub fn new(program: impl Into<PathBuf>, kind: ProxyKind) -> ProxyCmd {
        ProxyCmd {
            program: program.into(),
            kind,
            extra_args: Vec::new(),
            log_level: std::env::var("STRAIT_COMPAT_LOG_LEVEL").unwrap_or_else(|_| "info".into()),
            ready_timeout: Duration::from_secs(10),
        }
    }

    pub fn envoy(program: impl Into<PathBuf>) -> ProxyCmd {
        Self::new(program, ProxyKind::Envoy)
    }

    pub fn strait(program: impl Into<PathBuf>) -> ProxyCmd {
        Self::new(program, ProxyKind::Strait)
    }

    fn label(&self) -> &'static str {
        match self.kind {
            ProxyKind::Envoy => "envoy",
            ProxyKind::Strait => "strait",
        }
    }
}

/// The outcome of one case file.
#[derive(Debug, Clone)]
pub struct CaseOutcome {
    pub name: String,
    pub file: PathBuf,
    /// Empty when the case passed.
    pub failures: Vec<String>,
    /// The proxy's last output lines, attached when the case failed.
    pub log_tail: Option<String>,
    /// Where the rendered bootstrap and the proxy log were kept (failed cases only).
    pub kept_dir: Option<PathBuf>,
    pub duration: Duration,
    /// `strait_pending` of the case, when it ran against Strait.
    pub pending: Option<String>,
}

impl CaseOutcome {
    /// A `strait_pending` case: its failures are expected (reported, not counted), and
    /// passing is itself a failure, so the marker is removed once the gap is closed.
    fn settle_pending(&mut self) {
        let Some(reason) = self.pending.clone() else {
            return;
        };
        if self.failures.is_empty() {
            self.failures.push(format!(
                "passes on Strait now: remove `strait_pending: {reason}` from the case file"
            ));
            self.pending = None;
        } else {
            self.failures.clear();
            self.log_tail = None;
        }
    }

    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Results of a run; [`Report::assert_ok`] panics with every failure.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub proxy: String,
    pub cases: Vec<CaseOutcome>,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.cases.iter().filter(|c| c.passed()).count()
    }

    pub fn failed(&self) -> usize {
        self.cases.len() - self.passed()
    }

    pub fn is_ok(&self) -> bool {
        !self.cases.is_empty() && self.failed() == 0
    }

    /// Appends another report's cases.
    pub fn merge(&mut self, other: Report) {
        if self.proxy.is_empty() {
            self.proxy = other.proxy;
        }
        self.cases.extend(other.cases);
    }

    /// Panics with the full report unless at least one case ran and all passed.
    #[track_caller]
    pub fn assert_ok(&self) {
        if !self.is_ok() {
            panic!("{self}");
        }
        eprintln!("{self}");
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for case in self.cases.iter().filter(|c| !c.passed()) {
            writeln!(
                f,
                "==== FAILED case `{}` ({})",
                case.name,
                case.file.display()
            )?;
            for failure in &case.failures {
                writeln!(f, "  - {}", failure.replace('\n', "\n    "))?;
            }
            if let Some(dir) = &case.kept_dir {
                writeln!(f, "  files kept in {}", dir.display())?;
            }
            if let Some(tail) = &case.log_tail {
                writeln!(f, "  --- {} output (tail) ---", self.proxy)?;
                for line in tail.lines() {
                    writeln!(f, "  | {line}")?;
                }
            }
        }
        if self.cases.is_empty() {
            writeln!(f, "compat {}: no cases ran", self.proxy)
        } else if self.failed() == 0 {
            writeln!(
                f,
                "compat {}: all {} cases match",
                self.proxy,
                self.cases.len()
            )
        } else {
            let names: Vec<&str> = self
                .cases
                .iter()
                .filter(|c| !c.passed())
                .map(|c| c.name.as_str())
                .collect();
            writeln!(
                f,
                "compat {}: {} of {} cases FAILED: {}",
                self.proxy,
                self.failed(),
                self.cases.len(),
                names.join(", ")
            )
        }
    }
}

/// The directory `compat/` of this workspace.
/// `STRAIT_COMPAT_DIR` overrides it.
pub fn compat_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STRAIT_COMPAT_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    crate::workspace_root().join("compat")
}

/// Runs `compat/cases` and `compat/validate` of this workspace against `proxy`.
pub fn run_all(proxy: &ProxyCmd) -> Report {
    let dir = compat_dir();
    let mut report = run_cases(proxy, &dir.join("cases"));
    report.merge(run_validate_cases(proxy, &dir.join("validate")));
    report
}

/// `*.yaml` files of `dir`, sorted, filtered by `STRAIT_COMPAT_FILTER` (comma-separated
/// substrings of `<prefix><file stem>`, the prefix being `validate/` for validate cases).
fn case_files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut files = all_case_files(dir);
    let filter: Vec<String> = std::env::var("STRAIT_COMPAT_FILTER")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    files.retain(|p| {
        let stem = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let label = format!("{prefix}{stem}");
        filter.is_empty() || filter.iter().any(|f| label.contains(f.as_str()))
    });
    files
}

/// Every `*.yaml` / `*.yml` file of `dir`, sorted.
fn all_case_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Ports a case is rendered with.
#[derive(Debug, Clone)]
struct Ports {
    listen: u16,
    listen2: u16,
    listen3: u16,
    admin: u16,
    echo: u16,
    echo2: u16,
    dead: u16,
}

/// Replaces `{{LISTEN_PORT}}`, `{{LISTEN2_PORT}}`, `{{LISTEN3_PORT}}`, `{{ADMIN_PORT}}`,
/// `{{ECHO_PORT}}`, `{{ECHO2_PORT}}`, `{{DEAD_PORT}}`, `{{HOST_IP}}` and
/// `{{REPEAT:<n>:<text>}}` (text repeated n times).
fn render(template: &str, ports: &Ports) -> Result<String, String> {
    let vars: HashMap<&str, String> = HashMap::from([
        ("LISTEN_PORT", ports.listen.to_string()),
        ("LISTEN2_PORT", ports.listen2.to_string()),
        ("LISTEN3_PORT", ports.listen3.to_string()),
        ("HOST_IP", crate::ports::host_ipv4().to_string()),
        ("ADMIN_PORT", ports.admin.to_string()),
        ("ECHO_PORT", ports.echo.to_string()),
        ("ECHO2_PORT", ports.echo2.to_string()),
        ("DEAD_PORT", ports.dead.to_string()),
    ]);
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err("unterminated `{{`".into());
        };
        let key = after[..end].trim();
        if let Some(v) = vars.get(key) {
            out.push_str(v);
        } else if let Some(spec) = key.strip_prefix("REPEAT:") {
            let (n, text) = spec.split_once(':').ok_or_else(|| {
                format!("bad placeholder {{{{{key}}}}}: use {{{{REPEAT:<n>:<text>}}}}")
            })?;
            let n: usize = n
                .parse()
                .map_err(|_| format!("bad count in {{{{{key}}}}}"))?;
            out.push_str(&text.repeat(n));
        } else {
            return Err(format!("unknown placeholder {{{{{key}}}}}"));
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

static RUN_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique `--base-id` so several proxies (and several test processes) can run at once.
fn unique_base_id() -> u32 {
    let n = RUN_COUNTER.fetch_add(1, Ordering::Relaxed);
    (std::process::id() % 40_000) * 100 + (n % 100)
}

/// Envoy's hot-restart shared memory (`/dev/shm/envoy_shared_memory_<base_id * 10>`) survives
/// SIGTERM; remove it once the proxy has exited so runs do not pile files up.
fn remove_envoy_shared_memory(base_id: u32) {
    let path = format!("/dev/shm/envoy_shared_memory_{}", u64::from(base_id) * 10);
    let _ = std::fs::remove_file(path);
}

fn work_dir(proxy: &ProxyCmd, case_stem: &str) -> PathBuf {
    let n = RUN_COUNTER.load(Ordering::Relaxed);
    std::env::temp_dir().join("strait-compat").join(format!(
        "{}-{}-{}-{}",
        proxy.label(),
        std::process::id(),
        n,
        case_stem
    ))
}

fn keep_files() -> bool {
    std::env::var("STRAIT_COMPAT_KEEP").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Runs every `*.yaml` case of `cases_dir` against `proxy`, one proxy process per case.
/// Blocking: call it from a plain `#[test]`, not from inside a tokio runtime.
pub fn run_cases(proxy: &ProxyCmd, cases_dir: &Path) -> Report {
    let mut report = Report {
        proxy: proxy.label().to_string(),
        cases: Vec::new(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("compat-rt")
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (echo, echo2): (EchoHandle, EchoHandle) = rt.block_on(async {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let (_, a) = EchoServer::start_named("echo", any)
            .await
            .expect("start echo");
        let (_, b) = EchoServer::start_named("echo2", any)
            .await
            .expect("start echo2");
        (a, b)
    });
    for file in case_files(cases_dir, "") {
        let ports = Ports {
            listen: free_port(),
            listen2: free_port(),
            listen3: free_port(),
            admin: free_port(),
            echo: echo.addr().port(),
            echo2: echo2.addr().port(),
            dead: free_port(),
        };
        let mut outcome = run_one_case(&rt, proxy, &file, &ports);
        outcome.settle_pending();
        let verdict = match (&outcome.pending, outcome.passed()) {
            (Some(_), _) => "PENDING",
            (None, true) => "PASS",
            (None, false) => "FAIL",
        };
        eprintln!(
            "[compat {}] {verdict} {} ({:.1}s){}",
            proxy.label(),
            outcome.name,
            outcome.duration.as_secs_f64(),
            outcome
                .pending
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
        report.cases.push(outcome);
    }
    rt.block_on(async move {
        echo.shutdown().await;
        echo2.shutdown().await;
    });
    report
}

fn file_stem(file: &Path) -> String {
    file.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn run_one_case(
    rt: &tokio::runtime::Runtime,
    proxy: &ProxyCmd,
    file: &Path,
    ports: &Ports,
) -> CaseOutcome {
    let started = Instant::now();
    let stem = file_stem(file);
    let mut outcome = CaseOutcome {
        name: stem.clone(),
        file: file.to_path_buf(),
        failures: Vec::new(),
        log_tail: None,
        kept_dir: None,
        duration: Duration::ZERO,
        pending: None,
    };
    let case = match std::fs::read_to_string(file)
        .map_err(|e| e.to_string())
        .and_then(|t| render(&t, ports))
        .and_then(|t| serde_saphyr::from_str::<CaseFile>(&t).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            outcome.failures.push(format!("cannot load case file: {e}"));
            return outcome;
        }
    };
    outcome.name = case.name.clone();
    if proxy.kind == ProxyKind::Strait {
        outcome.pending = case.strait_pending.clone();
    }
    if case.requests.is_empty() {
        outcome.failures.push("case has no requests".into());
        return outcome;
    }

    let dir = work_dir(proxy, &stem);
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        outcome
            .failures
            .push(format!("creating {}: {e}", dir.display()));
        return outcome;
    }
    let bootstrap_path = dir.join("bootstrap.yaml");
    if let Err(e) = std::fs::write(&bootstrap_path, &case.bootstrap) {
        outcome
            .failures
            .push(format!("writing {}: {e}", bootstrap_path.display()));
        return outcome;
    }
    let base_id = unique_base_id();
    let mut args: Vec<String> = vec![
        "-c".into(),
        bootstrap_path.display().to_string(),
        "--concurrency".into(),
        "1".into(),
        "--base-id".into(),
        base_id.to_string(),
        "-l".into(),
        proxy.log_level.clone(),
    ];
    args.extend(proxy.extra_args.iter().cloned());
    let mut process = match Process::spawn(&proxy.program, &args, &dir.join("proxy.log")) {
        Ok(p) => p,
        Err(e) => {
            outcome.failures.push(format!("cannot start proxy: {e}"));
            outcome.duration = started.elapsed();
            return outcome;
        }
    };

    let uses_admin = case.bootstrap.contains(&format!(":{}", ports.admin))
        || case
            .bootstrap
            .contains(&format!("port_value: {}", ports.admin));
    let mut targets: BTreeSet<u16> = BTreeSet::new();
    for r in &case.requests {
        match r.to {
            Target::Listener => targets.insert(ports.listen),
            Target::Listener2 => targets.insert(ports.listen2),
            Target::Listener3 => targets.insert(ports.listen3),
            Target::Admin => false,
        };
    }
    match wait_ready(
        &mut process,
        proxy.ready_timeout,
        uses_admin.then_some(ports.admin),
        &targets,
    ) {
        Ok(()) => {
            for (i, spec) in case.requests.iter().enumerate() {
                let label = match &spec.name {
                    Some(n) => format!("request #{} `{n}`", i + 1),
                    None => format!("request #{}", i + 1),
                };
                let failures = run_request(rt, spec, ports);
                outcome
                    .failures
                    .extend(failures.into_iter().map(|f| format!("{label}: {f}")));
                if let Some(status) = process.try_exit_status() {
                    outcome
                        .failures
                        .push(format!("proxy exited ({status}) during {label}"));
                    break;
                }
            }
        }
        Err(e) => outcome.failures.push(e),
    }
    process.stop();
    remove_envoy_shared_memory(base_id);
    if outcome.passed() && !keep_files() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        if !outcome.passed() {
            outcome.log_tail = Some(process.output_tail(40));
        }
        outcome.kept_dir = Some(dir);
    }
    outcome.duration = started.elapsed();
    outcome
}

/// Waits until admin `/ready` answers 200 (when the bootstrap has an admin listener) and every
/// listener port in `ports` accepts TCP connections.
fn wait_ready(
    process: &mut Process,
    timeout: Duration,
    admin: Option<u16>,
    ports: &BTreeSet<u16>,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let exited = |process: &mut Process| {
        process
            .try_exit_status()
            .map(|s| format!("proxy exited ({s}) before it was ready"))
    };
    if let Some(admin) = admin {
        loop {
            if let Some(e) = exited(process) {
                return Err(e);
            }
            let mut conn_ok = false;
            if let Ok(mut conn) = RawConn::connect(localhost(admin), Duration::from_millis(500)) {
                let req = format!(
                    "GET /ready HTTP/1.1\r\nHost: 127.0.0.1:{admin}\r\nConnection: close\r\n\r\n"
                );
                if conn.send(req.as_bytes()).is_ok() {
                    conn_ok = conn.read_response(false).is_ok_and(|r| r.status == 200);
                }
            }
            if conn_ok {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "admin /ready on port {admin} did not answer 200 within {timeout:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for &port in ports {
        loop {
            if let Some(e) = exited(process) {
                return Err(e);
            }
            if std::net::TcpStream::connect_timeout(&localhost(port), Duration::from_millis(200))
                .is_ok()
            {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "listener port {port} did not accept within {timeout:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// What came back for one request.
#[derive(Debug)]
struct Observed {
    status: u16,
    version: String,
    headers: Vec<(String, String)>,
    body: Bytes,
    closed: Option<bool>,
}

fn target_port(spec: &RequestSpec, ports: &Ports) -> u16 {
    match spec.to {
        Target::Listener => ports.listen,
        Target::Listener2 => ports.listen2,
        Target::Listener3 => ports.listen3,
        Target::Admin => ports.admin,
    }
}

fn run_request(rt: &tokio::runtime::Runtime, spec: &RequestSpec, ports: &Ports) -> Vec<String> {
    if spec.raw.is_some()
        && (spec.method.is_some()
            || spec.path.is_some()
            || spec.body.is_some()
            || !spec.headers.0.is_empty()
            || spec.http2)
    {
        return vec!["`raw` cannot be combined with method/path/headers/body/http2".into()];
    }
    if spec.expect.connection_closed && spec.raw.is_none() {
        return vec!["`connection_closed` needs a `raw` request".into()];
    }
    let repeat = spec.repeat.unwrap_or(1).max(1);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut failures = Vec::new();
        let mut names_seen = BTreeSet::new();
        for i in 0..repeat {
            let observed = send_one(rt, spec, ports);
            let mut f = check(&spec.expect, observed, &mut names_seen);
            if repeat > 1 {
                f = f
                    .into_iter()
                    .map(|m| format!("(repetition {}) {m}", i + 1))
                    .collect();
            }
            failures.extend(f);
        }
        if let Some(want) = &spec.expect.upstream_names_seen {
            let want: BTreeSet<String> = want.iter().cloned().collect();
            if want != names_seen {
                failures.push(format!(
                    "upstream_names_seen over {repeat} requests: expected {want:?}, got {names_seen:?}"
                ));
            }
        }
        if failures.is_empty() || !spec.eventually || Instant::now() >= deadline {
            return failures;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn send_one(
    rt: &tokio::runtime::Runtime,
    spec: &RequestSpec,
    ports: &Ports,
) -> Result<Observed, String> {
    let addr = localhost(target_port(spec, ports));
    let timeout = Duration::from_millis(spec.timeout_ms.unwrap_or(10_000));
    if let Some(raw) = &spec.raw {
        let mut conn = RawConn::connect_from(spec.source_ip, addr, timeout)
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = conn.send(raw.as_bytes());
        let resp = conn
            .read_response(raw.starts_with("HEAD "))
            .map_err(|e: RawError| e.to_string())?;
        let closed = if spec.expect.connection_closed {
            Some(conn.wait_closed(Duration::from_secs(2)))
        } else {
            None
        };
        return Ok(Observed {
            status: resp.status,
            version: resp.version,
            headers: resp.headers,
            body: Bytes::from(resp.body),
            closed,
        });
    }
    let req = HttpRequest {
        method: spec.method.clone().unwrap_or_else(|| "GET".into()),
        path: spec.path.clone().unwrap_or_else(|| "/".into()),
        headers: spec.headers.0.clone(),
        body: Bytes::from(spec.body.clone().unwrap_or_default()),
        http2: spec.http2,
        chunked: spec.chunked,
        source_ip: spec.source_ip,
        timeout,
    };
    let resp = rt
        .block_on(client::send(addr, &req))
        .map_err(|e| e.to_string())?;
    Ok(Observed {
        status: resp.status,
        version: resp.version,
        headers: resp.headers,
        body: resp.body,
        closed: None,
    })
}

fn show(s: &str) -> String {
    const MAX: usize = 600;
    if s.len() <= MAX {
        format!("{s:?}")
    } else {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{:?}... ({} bytes)", &s[..cut], s.len())
    }
}

/// Values of `name` joined with `, `, or None when absent.
fn header_value(headers: &[(String, String)], name: &str) -> Option<String> {
    let values: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

fn check_headers(
    what: &str,
    got: &[(String, String)],
    exact: &HeaderList,
    present: &[String],
    absent: &[String],
    failures: &mut Vec<String>,
) {
    for (name, want) in &exact.0 {
        match header_value(got, name) {
            Some(v) if &v == want => {}
            Some(v) => failures.push(format!(
                "{what} header `{name}`: expected {want:?}, got {v:?}"
            )),
            None => failures.push(format!(
                "{what} header `{name}`: expected {want:?}, but it is absent (got headers {got:?})"
            )),
        }
    }
    for name in present {
        if header_value(got, name).is_none() {
            failures.push(format!(
                "{what} header `{name}` should be present (got headers {got:?})"
            ));
        }
    }
    for name in absent {
        if let Some(v) = header_value(got, name) {
            failures.push(format!(
                "{what} header `{name}` should be absent, got {v:?}"
            ));
        }
    }
}

fn check(
    expect: &Expect,
    observed: Result<Observed, String>,
    names_seen: &mut BTreeSet<String>,
) -> Vec<String> {
    let mut failures = Vec::new();
    let got = match observed {
        Err(e) => {
            if !expect.no_response {
                failures.push(format!("no response: {e}"));
            }
            return failures;
        }
        Ok(got) => got,
    };
    if expect.no_response {
        failures.push(format!(
            "expected no response, got status {} with headers {:?} and body {}",
            got.status,
            got.headers,
            show(&String::from_utf8_lossy(&got.body))
        ));
        return failures;
    }
    let body = String::from_utf8_lossy(&got.body).into_owned();
    if let Some(status) = expect.status
        && status != got.status
    {
        failures.push(format!(
            "status: expected {status}, got {} (body {})",
            got.status,
            show(&body)
        ));
    }
    if let Some(v) = &expect.version
        && v != &got.version
    {
        failures.push(format!(
            "response version: expected {v}, got {}",
            got.version
        ));
    }
    check_headers(
        "response",
        &got.headers,
        &expect.headers,
        &expect.headers_present,
        &expect.headers_absent,
        &mut failures,
    );
    if let Some(want) = &expect.body
        && want != &body
    {
        failures.push(format!(
            "body: expected {}, got {}",
            show(want),
            show(&body)
        ));
    }
    for needle in &expect.body_contains.0 {
        if !body.contains(needle.as_str()) {
            failures.push(format!(
                "body should contain {}, got {}",
                show(needle),
                show(&body)
            ));
        }
    }
    for needle in &expect.body_not_contains.0 {
        if body.contains(needle.as_str()) {
            failures.push(format!(
                "body should not contain {}, got {}",
                show(needle),
                show(&body)
            ));
        }
    }
    if let Some(want) = &expect.json {
        match serde_json::from_slice::<serde_json::Value>(&got.body) {
            Ok(json) => json_subset(want, &json, "$", &mut failures),
            Err(e) => failures.push(format!("body is not JSON ({e}): {}", show(&body))),
        }
    }
    if expect.connection_closed && got.closed != Some(true) {
        failures.push("the proxy did not close the connection within 2s after the response".into());
    }
    let wants_upstream = expect.upstream.is_some() || expect.upstream_names_seen.is_some();
    if wants_upstream {
        match serde_json::from_slice::<serde_json::Value>(&got.body) {
            Ok(json) if json.get("name").is_some() && json.get("headers").is_some() => {
                if let Some(n) = json.get("name").and_then(|v| v.as_str()) {
                    names_seen.insert(n.to_string());
                }
                if let Some(up) = &expect.upstream {
                    check_upstream(up, &json, &mut failures);
                }
            }
            _ => failures.push(format!(
                "upstream: the response body is not strait-echo's JSON (did the request reach the upstream?): {}",
                show(&body)
            )),
        }
    }
    failures
}

/// Objects: every key of `want` must be in `got` and match; everything else: equality.
fn json_subset(
    want: &serde_json::Value,
    got: &serde_json::Value,
    path: &str,
    failures: &mut Vec<String>,
) {
    match (want, got) {
        (serde_json::Value::Object(w), serde_json::Value::Object(g)) => {
            for (k, wv) in w {
                match g.get(k) {
                    Some(gv) => json_subset(wv, gv, &format!("{path}.{k}"), failures),
                    None => failures.push(format!(
                        "json {path}.{k}: expected {wv}, but the key is absent"
                    )),
                }
            }
        }
        _ if want == got => {}
        _ => failures.push(format!(
            "json {path}: expected {want}, got {}",
            show(&got.to_string())
        )),
    }
}

fn check_upstream(up: &UpstreamExpect, json: &serde_json::Value, failures: &mut Vec<String>) {
    let field = |k: &str| {
        json.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let mut cmp = |what: &str, want: &Option<String>, got: String| {
        if let Some(want) = want
            && want != &got
        {
            failures.push(format!("upstream {what}: expected {want:?}, got {got:?}"));
        }
    };
    cmp("name", &up.name, field("name"));
    cmp("method", &up.method, field("method"));
    cmp("path", &up.path, field("path"));
    cmp("version", &up.version, field("version"));
    if let Some(want) = up.body_len {
        let got = json.get("body_len").and_then(|v| v.as_u64());
        if got != Some(want) {
            failures.push(format!("upstream body_len: expected {want}, got {got:?}"));
        }
    }
    let headers: Vec<(String, String)> = json
        .get("headers")
        .and_then(|h| h.as_array())
        .map(|arr| {
            arr.iter()
                .filter_map(|pair| {
                    let p = pair.as_array()?;
                    Some((
                        p.first()?.as_str()?.to_string(),
                        p.get(1)?.as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    check_headers(
        "upstream",
        &headers,
        &up.headers,
        &up.headers_present,
        &up.headers_absent,
        failures,
    );
}

/// Runs every `*.yaml` of `validate_dir` with `--mode validate -c <file>` and compares the
/// exit code (and, for Envoy only, `envoy_output_contains`).
pub fn run_validate_cases(proxy: &ProxyCmd, validate_dir: &Path) -> Report {
    let mut report = Report {
        proxy: proxy.label().to_string(),
        cases: Vec::new(),
    };
    for file in case_files(validate_dir, "validate/") {
        let started = Instant::now();
        let stem = file_stem(&file);
        let mut outcome = CaseOutcome {
            name: format!("validate/{stem}"),
            file: file.clone(),
            failures: Vec::new(),
            log_tail: None,
            kept_dir: None,
            duration: Duration::ZERO,
            pending: None,
        };
        let ports = Ports {
            listen: free_port(),
            listen2: free_port(),
            listen3: free_port(),
            admin: free_port(),
            echo: free_port(),
            echo2: free_port(),
            dead: free_port(),
        };
        match std::fs::read_to_string(&file)
            .map_err(|e| e.to_string())
            .and_then(|t| render(&t, &ports))
            .and_then(|t| serde_saphyr::from_str::<ValidateFile>(&t).map_err(|e| e.to_string()))
        {
            Err(e) => outcome.failures.push(format!("cannot load case file: {e}")),
            Ok(case) => {
                outcome.name = format!("validate/{}", case.name);
                validate_one(proxy, &case, &stem, &mut outcome);
            }
        }
        outcome.duration = started.elapsed();
        eprintln!(
            "[compat {}] {} {} ({:.1}s)",
            proxy.label(),
            if outcome.passed() { "PASS" } else { "FAIL" },
            outcome.name,
            outcome.duration.as_secs_f64()
        );
        report.cases.push(outcome);
    }
    report
}

fn validate_one(proxy: &ProxyCmd, case: &ValidateFile, stem: &str, outcome: &mut CaseOutcome) {
    let dir = work_dir(proxy, &format!("validate-{stem}"));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        outcome
            .failures
            .push(format!("creating {}: {e}", dir.display()));
        return;
    }
    let path = dir.join("bootstrap.yaml");
    if let Err(e) = std::fs::write(&path, &case.bootstrap) {
        outcome
            .failures
            .push(format!("writing {}: {e}", path.display()));
        return;
    }
    RUN_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut args: Vec<String> = vec![
        "--mode".into(),
        "validate".into(),
        "-c".into(),
        path.display().to_string(),
        "-l".into(),
        proxy.log_level.clone(),
    ];
    args.extend(proxy.extra_args.iter().cloned());
    let mut process = match Process::spawn(&proxy.program, &args, &dir.join("proxy.log")) {
        Ok(p) => p,
        Err(e) => {
            outcome.failures.push(format!("cannot start proxy: {e}"));
            return;
        }
    };
    let Some(status) = process.wait_timeout(Duration::from_secs(30)) else {
        outcome
            .failures
            .push("--mode validate did not exit within 30s".into());
        outcome.log_tail = Some(process.output_tail(40));
        return;
    };
    let output = process.output();
    let expected = match (proxy.kind, case.strait_expect_exit) {
        (ProxyKind::Strait, Some(code)) => {
            if case.strait_difference.is_none() {
                outcome
                    .failures
                    .push("`strait_expect_exit` needs a `strait_difference` saying why".into());
            }
            code
        }
        _ => case.expect_exit,
    };
    match status.code() {
        Some(code) if code == expected => {}
        other => outcome.failures.push(format!(
            "--mode validate exit code: expected {expected}, got {other:?}"
        )),
    }
    if proxy.kind == ProxyKind::Envoy {
        for needle in &case.envoy_output_contains.0 {
            if !output.contains(needle.as_str()) {
                outcome
                    .failures
                    .push(format!("output should contain {}", show(needle)));
            }
        }
    }
    if outcome.passed() && !keep_files() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        if !outcome.passed() {
            let mut tail = String::new();
            let _ = write!(tail, "{}", process.output_tail(40));
            outcome.log_tail = Some(tail);
        }
        outcome.kept_dir = Some(dir);
    }
}

/// Loads every case of `compat_dir/cases` and `compat_dir/validate` (with made-up ports) and
/// returns the problems found: unreadable or unparsable files, duplicate names, requests
/// that assert nothing, empty directories. Needs no proxy.
pub fn check_case_files(compat_dir: &Path) -> Vec<String> {
    let ports = Ports {
        listen: 10001,
        listen2: 10002,
        listen3: 10007,
        admin: 10003,
        echo: 10004,
        echo2: 10005,
        dead: 10006,
    };
    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    let load = |file: &Path| {
        std::fs::read_to_string(file)
            .map_err(|e| e.to_string())
            .and_then(|t| render(&t, &ports))
    };
    let cases = all_case_files(&compat_dir.join("cases"));
    let validate = all_case_files(&compat_dir.join("validate"));
    if cases.is_empty() {
        problems.push(format!(
            "no case files in {}",
            compat_dir.join("cases").display()
        ));
    }
    if validate.is_empty() {
        problems.push(format!(
            "no case files in {}",
            compat_dir.join("validate").display()
        ));
    }
    for file in cases {
        match load(&file)
            .and_then(|t| serde_saphyr::from_str::<CaseFile>(&t).map_err(|e| e.to_string()))
        {
            Err(e) => problems.push(format!("{}: {e}", file.display())),
            Ok(case) => {
                if !names.insert(case.name.clone()) {
                    problems.push(format!(
                        "{}: duplicate case name {}",
                        file.display(),
                        case.name
                    ));
                }
                if case.requests.is_empty() {
                    problems.push(format!("{}: no requests", file.display()));
                }
                for (i, r) in case.requests.iter().enumerate() {
                    if r.expect.is_empty() {
                        problems.push(format!(
                            "{}: request #{} asserts nothing",
                            file.display(),
                            i + 1
                        ));
                    }
                }
            }
        }
    }
    for file in validate {
        match load(&file)
            .and_then(|t| serde_saphyr::from_str::<ValidateFile>(&t).map_err(|e| e.to_string()))
        {
            Err(e) => problems.push(format!("{}: {e}", file.display())),
            Ok(case) => {
                if !names.insert(format!("validate/{}", case.name)) {
                    problems.push(format!(
                        "{}: duplicate case name {}",
                        file.display(),
                        case.name
                    ));
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports() -> Ports {
        Ports {
            listen: 1,
            listen2: 2,
            listen3: 7,
            admin: 3,
            echo: 4,
            echo2: 5,
            dead: 6,
        }
    }

    #[test]
    fn render_placeholders() {
        assert_eq!(
            render(
                "a {{LISTEN_PORT}} {{ ADMIN_PORT }} {{ECHO2_PORT}} {{REPEAT:3:ab}}",
                &ports()
            )
            .unwrap(),
            "a 1 3 5 ababab"
        );
        assert!(render("{{NOPE}}", &ports()).is_err());
        assert!(render("{{LISTEN_PORT", &ports()).is_err());
    }

    #[test]
    fn parse_case_format() {
        let yaml = r#"
name: t
description: d
bootstrap: |
  admin: {}
requests:
  - path: /x
    headers: {content-length: 5, x-a: b}
    expect:
      status: 200
      body_contains: one
      upstream:
        headers: [[x-b, c]]
  - raw: "GET / HTTP/1.1\r\n\r\n"
    to: admin
    expect: {status: 400, body_contains: [a, b]}
"#;
        let case: CaseFile = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(case.requests.len(), 2);
        assert_eq!(
            case.requests[0].headers.0,
            vec![
                ("content-length".into(), "5".into()),
                ("x-a".into(), "b".into())
            ]
        );
        assert_eq!(
            case.requests[0].expect.body_contains.0,
            vec!["one".to_string()]
        );
        let up = case.requests[0].expect.upstream.as_ref().unwrap();
        assert_eq!(up.headers.0, vec![("x-b".into(), "c".into())]);
        assert_eq!(
            case.requests[1].raw.as_deref(),
            Some("GET / HTTP/1.1\r\n\r\n")
        );
        assert_eq!(case.requests[1].to, Target::Admin);
        assert_eq!(case.requests[1].expect.body_contains.0.len(), 2);
    }
}
