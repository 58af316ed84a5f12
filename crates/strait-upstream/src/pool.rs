//! Per-worker upstream connection pools.
//!
//! Each worker thread owns its pools (thread-local), like Envoy: no lock and no shared
//! cache line on the request path. HTTP/1.1 connections are reused after their response
//! body has been read to the end; one that the upstream closed while idle is never used
//! (checked before use). The idle keep-alive race, where the upstream closes a pooled
//! connection just as a request is written on it, is absorbed here when it is safe: a
//! request hyper did not write is sent again, and so is an idempotent request without a
//! body (GET, HEAD, OPTIONS, TRACE, PUT, DELETE) that was written but got no response byte
//! before the close, each time on another connection and at most once on a fresh one.
//! HTTP/2 multiplexes requests on a connection per host per worker, and opens another one
//! when every connection has `max_concurrent_streams` streams or has carried
//! `max_requests_per_connection` requests, as Envoy does.
//!
//! Circuit breakers apply here, where Envoy's connection pool applies them: a request that
//! needs a new connection is pending (`max_pending_requests`); a new connection needs a
//! `max_connections` slot, except that a worker with no connection to the host may always
//! open one, and otherwise the request waits for one of the worker's connections to that
//! host to come free; a request given a connection needs a `max_requests` slot, held until
//! its response ends. A refused request fails with [`UpstreamError::Overflow`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use strait_config::model::UpstreamProtocol;
use tokio::net::TcpStream;

use crate::body::{RequestBody, StreamCounters};
use crate::circuit::{Priority, Resources, Slot};
use crate::cluster::Cluster;
use crate::counted::{Counted, OnClose};
use crate::host::Host;

/// Idle HTTP/1.1 connections kept per host per worker.
const MAX_IDLE_PER_HOST: usize = 256;

/// Why no response came back from the upstream.
#[derive(Debug)]
pub enum UpstreamError {
    /// TCP connect failed (refused, unreachable, ...).
    ConnectFailure(io::Error),
    /// `connect_timeout` elapsed.
    ConnectTimeout,
    /// The connection was closed before response headers (Envoy: `connection termination`).
    Reset(hyper::Error),
    /// The upstream reset the HTTP/2 stream (Envoy: `remote reset`, or `remote refused
    /// stream reset` for REFUSED_STREAM).
    RemoteReset { refused: bool, error: hyper::Error },
    /// The upstream sent bytes that are not a valid response head, or closed in the middle
    /// of one (Envoy: `protocol error`, answered with a 502).
    Protocol(hyper::Error),
    /// A circuit breaker (`max_pending_requests`, `max_requests`) refused the request
    /// (Envoy: `overflow`, a 503 with `x-envoy-overloaded: true` and response flag UO).
    Overflow,
    /// `max_connection_pools` refused a new pool for the host (Envoy answers it like no
    /// healthy upstream: 503 `no healthy upstream`, flag UH).
    NoPool,
}

impl UpstreamError {
    /// Envoy's wording of the reset reason in local replies and logs.
    pub fn reset_reason(&self) -> &'static str {
        match self {
            UpstreamError::ConnectFailure(_) => "remote connection failure",
            UpstreamError::ConnectTimeout => "connection timeout",
            UpstreamError::Reset(_) => "connection termination",
            UpstreamError::RemoteReset { refused: true, .. } => "remote refused stream reset",
            UpstreamError::RemoteReset { refused: false, .. } => "remote reset",
            UpstreamError::Protocol(_) => "protocol error",
            UpstreamError::Overflow => "overflow",
            UpstreamError::NoPool => "no pool",
        }
    }

    /// A failure to get a connection (Envoy's pool failure: the `connect-failure` retry
    /// condition).
    pub fn is_connect_failure(&self) -> bool {
        matches!(
            self,
            UpstreamError::ConnectFailure(_) | UpstreamError::ConnectTimeout
        )
    }
    /// `transport failure reason` as Envoy prints it, when there is one.
    pub fn transport_failure_reason(&self) -> Option<String> {
        match self {
            UpstreamError::ConnectFailure(e) => {
                Some(format!("delayed connect error: {}", errno_text(e)))
            }
            UpstreamError::ConnectTimeout => {
                Some("delayed connect error: Connection timed out".into())
            }
            UpstreamError::Reset(_)
            | UpstreamError::RemoteReset { .. }
            | UpstreamError::Protocol(_)
            | UpstreamError::Overflow
            | UpstreamError::NoPool => None,
        }
    }
}

/// Sorts an HTTP/2 request failure the way Envoy names it: a RST_STREAM from the upstream
/// is a remote reset (REFUSED_STREAM a refused one); anything else ends the connection.
fn h2_error(e: hyper::Error) -> UpstreamError {
    let mut src = e.source();
    while let Some(s) = src {
        let msg = s.to_string();
        if let Some(reason) = msg.strip_prefix("stream error received: ") {
            let refused = reason.starts_with("refused stream");
            return UpstreamError::RemoteReset { refused, error: e };
        }
        src = s.source();
    }
    UpstreamError::Reset(e)
}

/// Sorts an HTTP/1.1 request failure: response bytes that do not make a response head
/// (garbage, or a close in the middle of the head) are a protocol error, as in Envoy; a
/// close before any response byte is a connection termination.
fn h1_error(e: hyper::Error, response_bytes_seen: bool) -> UpstreamError {
    if e.is_parse() || e.is_parse_status() || (response_bytes_seen && e.is_incomplete_message()) {
        UpstreamError::Protocol(e)
    } else {
        UpstreamError::Reset(e)
    }
}

fn errno_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => {
            // "Connection refused (os error 111)" -> "Connection refused"
            let s = io::Error::from_raw_os_error(code).to_string();
            match s.find(" (os error") {
                Some(i) => s[..i].to_string(),
                None => s,
            }
        }
        None => e.to_string(),
    }
}

struct IdleH1 {
    tx: http1::SendRequest<RequestBody>,
    since: Instant,
    uses: u32,
    /// Bytes the connection has read so far (response bytes, for the keep-alive race).
    rx: Arc<AtomicU64>,
    opened: Instant,
}

/// One HTTP/2 connection of a worker's pool.
struct H2Conn {
    tx: http2::SendRequest<RequestBody>,
    /// Streams open on it (decremented from any thread when a stream ends).
    active: Arc<AtomicU32>,
    /// Streams it has carried (for `max_requests_per_connection`).
    total: u32,
    opened: Instant,
}

/// A worker's connections to one host: how many there are (connecting ones included) and
/// a wake-up for requests waiting for one of them to come free.
#[derive(Default)]
struct WorkerHost {
    conns: AtomicU32,
    freed: tokio::sync::Notify,
    /// The `max_connection_pools` slot this worker's pool for the host holds while it has
    /// a connection (Envoy removes an idle pool; locked only when a pool opens or empties).
    pool: std::sync::Mutex<Option<Slot>>,
}

#[derive(Default)]
struct WorkerPools {
    h1: HashMap<u64, Vec<IdleH1>>,
    h2: HashMap<u64, Vec<H2Conn>>,
    hosts: HashMap<u64, Arc<WorkerHost>>,
    /// HTTP/2 connections being opened: requests for the same host wait for it instead of
    /// opening their own (Envoy attaches pending streams to a connecting connection too).
    h2_connecting: HashMap<u64, Arc<tokio::sync::Notify>>,
}

thread_local! {
    static POOLS: RefCell<WorkerPools> = RefCell::new(WorkerPools::default());
    /// Cleared header maps kept for request-head copies, so a copy allocates nothing once
    /// the worker is warm.
    static SPARE_HEADERS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// Header maps kept per worker for head copies.
const MAX_SPARE_HEADERS: usize = 64;

/// A copy of a request head, kept while a bodiless idempotent request is on a reused
/// connection so it can be sent again if the upstream closes that connection without
/// answering.
struct HeadCopy {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl HeadCopy {
    fn of(req: &Request<RequestBody>) -> Self {
        let mut headers = SPARE_HEADERS
            .with(|s| s.borrow_mut().pop())
            .unwrap_or_default();
        for (k, v) in req.headers() {
            headers.append(k.clone(), v.clone());
        }
        HeadCopy {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers,
        }
    }

    fn into_request(mut self) -> Request<RequestBody> {
        let mut r = Request::new(RequestBody::Empty);
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.version_mut() = self.version;
        *r.headers_mut() = std::mem::take(&mut self.headers);
        r
    }
}

impl Drop for HeadCopy {
    fn drop(&mut self) {
        let mut h = std::mem::take(&mut self.headers);
        if h.capacity() == 0 {
            return;
        }
        h.clear();
        SPARE_HEADERS.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < MAX_SPARE_HEADERS {
                s.push(h);
            }
        });
    }
}

fn worker_host(host_id: u64) -> Arc<WorkerHost> {
    POOLS.with(|p| p.borrow_mut().hosts.entry(host_id).or_default().clone())
}

/// A `max_connections` slot plus the worker's count of connections to the host, held from
/// the start of the connect to the close.
struct CxSlot {
    worker_host: Arc<WorkerHost>,
    _slot: Slot,
}

impl CxSlot {
    fn new(worker_host: Arc<WorkerHost>, slot: Slot) -> Self {
        worker_host.conns.fetch_add(1, Ordering::AcqRel);
        CxSlot {
            worker_host,
            _slot: slot,
        }
    }
}

impl Drop for CxSlot {
    fn drop(&mut self) {
        if self.worker_host.conns.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The pool's last connection closed: the pool is gone.
            if let Ok(mut p) = self.worker_host.pool.lock() {
                p.take();
            }
        }
        self.worker_host.freed.notify_one();
    }
}

/// Takes a connection slot for a new connection to `host`: a free `max_connections` slot,
/// or any slot when this worker has no connection to the host at all (Envoy never leaves a
/// pool without a connection). `None`: the request must wait for one of the worker's
/// connections.
fn try_cx_slot(
    cluster: &Cluster,
    res: &Resources,
    wh: &Arc<WorkerHost>,
) -> Result<Option<CxSlot>, UpstreamError> {
    let first = wh.conns.load(Ordering::Acquire) == 0;
    if first
        && let Ok(mut pool) = wh.pool.lock()
        && pool.is_none()
    {
        // A new pool for this host on this worker: `max_connection_pools`.
        match res.connection_pools.try_acquire() {
            Some(s) => *pool = Some(s),
            None => {
                cluster.breakers.stats.upstream_cx_pool_overflow.inc();
                return Err(UpstreamError::NoPool);
            }
        }
    }
    let slot = match res.connections.try_acquire() {
        Some(s) => s,
        None if first => res.connections.acquire_anyway(),
        None => return Ok(None),
    };
    Ok(Some(CxSlot::new(wh.clone(), slot)))
}

/// A request waiting for a connection: a `max_pending_requests` slot and the
/// `upstream_rq_pending_active` gauge.
struct Pending {
    _slot: Slot,
    gauge: strait_stats::Gauge,
}

impl Pending {
    fn start(cluster: &Cluster, res: &Resources) -> Result<Pending, UpstreamError> {
        let stats = &cluster.breakers.stats;
        let Some(slot) = res.pending.try_acquire() else {
            stats.upstream_rq_pending_overflow.inc();
            return Err(UpstreamError::Overflow);
        };
        stats.upstream_rq_pending_active.inc();
        Ok(Pending {
            _slot: slot,
            gauge: stats.upstream_rq_pending_active.clone(),
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// What a request holds until its upstream stream ends: its `max_requests` slot and, on
/// HTTP/2, its place on the connection.
struct StreamEnd {
    _request: Slot,
    h2_active: Option<Arc<AtomicU32>>,
}

impl Drop for StreamEnd {
    fn drop(&mut self) {
        if let Some(a) = &self.h2_active {
            a.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn take_request_slot(cluster: &Cluster, res: &Resources) -> Result<Slot, UpstreamError> {
    res.try_request().ok_or_else(|| {
        cluster.breakers.stats.upstream_rq_active_overflow.inc();
        UpstreamError::Overflow
    })
}

fn expired(cluster: &Cluster, opened: Instant) -> bool {
    cluster
        .spec
        .max_connection_duration
        .is_some_and(|d| opened.elapsed() >= d)
}

/// Methods a client may repeat without changing the outcome (RFC 9110 §9.2.2).
fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// A pooled connection's stream: its byte totals go to the cluster's stats when it closes.
type UpstreamIo = Counted<ClusterBytes>;

#[derive(Debug)]
struct ClusterBytes(Arc<Cluster>);

impl OnClose for ClusterBytes {
    fn closed(&mut self, rx: u64, tx: u64) {
        let s = &self.0.stats;
        s.upstream_cx_rx_bytes_total.add(rx);
        s.upstream_cx_tx_bytes_total.add(tx);
    }
}

fn upstream_io(cluster: &Arc<Cluster>, stream: TcpStream) -> (UpstreamIo, Arc<AtomicU64>) {
    let io = Counted::new(stream, ClusterBytes(cluster.clone()));
    let rx = io.rx_counter();
    (io, rx)
}

/// The response from an upstream, its body returning the connection to the pool at the end.
pub type UpstreamResponse = Response<PooledBody>;

/// Sends `req` to `host` of `cluster`, reusing this worker's pooled connection when one is
/// usable. `req` must carry an origin-form URI for HTTP/1.1 and an absolute one for HTTP/2.
/// `counters` is told when the attempt has its connection (Envoy's "pool ready", where the
/// per-try timeout may start).
pub async fn send_request(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
    req: Request<RequestBody>,
    counters: &StreamCounters,
) -> Result<UpstreamResponse, UpstreamError> {
    send_request_at(cluster, host, req, counters, Priority::Default).await
}

/// [`send_request`] under the circuit breakers of the route's `priority`.
pub async fn send_request_at(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
    req: Request<RequestBody>,
    counters: &StreamCounters,
    priority: Priority,
) -> Result<UpstreamResponse, UpstreamError> {
    let res = cluster.resources(priority);
    match cluster.spec.protocol {
        UpstreamProtocol::Http1 => send_h1(cluster, host, req, counters, res).await,
        UpstreamProtocol::Http2 => send_h2(cluster, host, req, counters, res).await,
    }
}

fn take_idle_h1(cluster: &Cluster, host: &Host) -> Option<IdleH1> {
    let idle_timeout = cluster.spec.idle_timeout;
    POOLS.with(|p| {
        let mut p = p.borrow_mut();
        let list = p.h1.get_mut(&host.id)?;
        while let Some(c) = list.pop() {
            if c.tx.is_closed() {
                continue; // the upstream closed it while idle
            }
            if idle_timeout.is_some_and(|t| c.since.elapsed() >= t) {
                cluster.stats.upstream_cx_idle_timeout.inc();
                continue; // dropping the sender closes the connection
            }
            if expired(cluster, c.opened) {
                cluster
                    .breakers
                    .stats
                    .upstream_cx_max_duration_reached
                    .inc();
                continue;
            }
            return Some(c);
        }
        None
    })
}

fn put_idle_h1(host_id: u64, c: IdleH1) {
    let wh = POOLS.with(|p| {
        let mut p = p.borrow_mut();
        let list = p.h1.entry(host_id).or_default();
        if list.len() < MAX_IDLE_PER_HOST {
            list.push(c);
        }
        p.hosts.get(&host_id).cloned()
    });
    // A request may be waiting for this connection (connection limit reached).
    if let Some(wh) = wh {
        wh.freed.notify_one();
    }
}

async fn connect(cluster: &Cluster, host: &Host) -> Result<TcpStream, UpstreamError> {
    let started = Instant::now();
    let r = tokio::time::timeout(
        cluster.spec.connect_timeout,
        TcpStream::connect(host.address),
    )
    .await;
    let stream = match r {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            cluster.stats.upstream_cx_total.inc();
            cluster.stats.upstream_cx_connect_fail.inc();
            host.stats.cx_total.inc();
            host.stats.cx_connect_fail.inc();
            return Err(UpstreamError::ConnectFailure(e));
        }
        Err(_) => {
            cluster.stats.upstream_cx_total.inc();
            cluster.stats.upstream_cx_connect_fail.inc();
            cluster.stats.upstream_cx_connect_timeout.inc();
            host.stats.cx_total.inc();
            host.stats.cx_connect_fail.inc();
            return Err(UpstreamError::ConnectTimeout);
        }
    };
    let _ = stream.set_nodelay(true);
    cluster.stats.upstream_cx_total.inc();
    cluster
        .stats
        .upstream_cx_connect_ms
        .record(started.elapsed().as_millis() as u64);
    host.stats.cx_total.inc();
    Ok(stream)
}

/// Keeps the active-connection gauges right for the life of a connection task, and holds
/// its connection slot.
struct CxGuard {
    cluster: Arc<Cluster>,
    host: Arc<Host>,
    opened: Instant,
    _slot: CxSlot,
}

impl CxGuard {
    fn new(cluster: &Arc<Cluster>, host: &Arc<Host>, slot: CxSlot) -> Self {
        cluster.stats.upstream_cx_active.inc();
        host.stats.cx_active.inc();
        CxGuard {
            cluster: cluster.clone(),
            host: host.clone(),
            opened: Instant::now(),
            _slot: slot,
        }
    }
}

impl Drop for CxGuard {
    fn drop(&mut self) {
        self.cluster.stats.upstream_cx_active.dec();
        self.cluster.stats.upstream_cx_destroy.inc();
        self.cluster
            .stats
            .upstream_cx_length_ms
            .record(self.opened.elapsed().as_millis() as u64);
        self.host.stats.cx_active.dec();
    }
}

async fn new_h1(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
    slot: CxSlot,
) -> Result<(http1::SendRequest<RequestBody>, Arc<AtomicU64>), UpstreamError> {
    let stream = connect(cluster, host).await?;
    let (io, rx) = upstream_io(cluster, stream);
    let (tx, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(UpstreamError::Reset)?;
    cluster.stats.upstream_cx_http1_total.inc();
    let guard = CxGuard::new(cluster, host, slot);
    tokio::spawn(async move {
        let _guard = guard;
        let _ = conn.await;
    });
    Ok((tx, rx))
}

/// A connection for a request that found no idle one: a new connection, or, at the
/// connection limit, one of the worker's connections to the host once it comes free. The
/// request is pending meanwhile.
async fn h1_connection(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
    res: &Resources,
) -> Result<H1Conn, UpstreamError> {
    let _pending = Pending::start(cluster, res)?;
    let wh = worker_host(host.id);
    let mut overflow_counted = false;
    loop {
        if let Some(c) = take_idle_h1(cluster, host) {
            return Ok(H1Conn::Idle(c));
        }
        if let Some(slot) = try_cx_slot(cluster, res, &wh)? {
            let (tx, rx) = new_h1(cluster, host, slot).await?;
            return Ok(H1Conn::New(tx, rx));
        }
        if !overflow_counted {
            cluster.breakers.stats.upstream_cx_overflow.inc();
            overflow_counted = true;
        }
        wh.freed.notified().await;
    }
}

enum H1Conn {
    Idle(IdleH1),
    New(http1::SendRequest<RequestBody>, Arc<AtomicU64>),
}

async fn send_h1(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
    mut req: Request<RequestBody>,
    counters: &StreamCounters,
    res: &Resources,
) -> Result<UpstreamResponse, UpstreamError> {
    // Every usable pooled connection that fails in the keep-alive race, then one fresh one:
    // each turn of the loop consumes a pooled connection, a fresh one never loops.
    loop {
        let got = match take_idle_h1(cluster, host) {
            Some(c) => H1Conn::Idle(c),
            None => h1_connection(cluster, host, res).await?,
        };
        let (mut tx, uses, fresh, rx, opened) = match got {
            H1Conn::Idle(mut c) => {
                // Just released connections may still be finishing the previous exchange.
                if c.tx.ready().await.is_err() {
                    continue;
                }
                (c.tx, c.uses, false, c.rx, c.opened)
            }
            H1Conn::New(tx, rx) => (tx, 0, true, rx, Instant::now()),
        };
        if fresh {
            cluster.stats.upstream_rq_pending_total.inc();
        }
        let request_slot = match take_request_slot(cluster, res) {
            Ok(s) => s,
            Err(e) => {
                // The connection stays pooled for the next request, as in Envoy.
                put_idle_h1(
                    host.id,
                    IdleH1 {
                        tx,
                        since: Instant::now(),
                        uses,
                        rx,
                        opened,
                    },
                );
                return Err(e);
            }
        };
        counters.mark_upstream_ready();
        cluster.stats.upstream_rq_total.inc();
        host.stats.rq_total.inc();
        // On a reused connection a bodiless idempotent request may be sent again if the
        // upstream closes without a response byte: keep its head until the answer comes.
        let copy =
            (!fresh && is_idempotent(req.method()) && matches!(req.body(), RequestBody::Empty))
                .then(|| HeadCopy::of(&req));
        let rx_before = rx.load(Ordering::Relaxed);
        counters.mark_request_sent(true);
        match tx.try_send_request(req).await {
            Ok(resp) => {
                let uses = uses + 1;
                // The upstream announced it closes the connection (hyper will not reuse it).
                if resp
                    .headers()
                    .get(http::header::CONNECTION)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
                {
                    cluster.stats.upstream_cx_close_notify.inc();
                }
                let limits = &cluster.breakers.stats;
                let reusable = if cluster
                    .spec
                    .max_requests_per_connection
                    .is_some_and(|m| uses >= m)
                {
                    limits.upstream_cx_max_requests.inc();
                    false
                } else if expired(cluster, opened) {
                    limits.upstream_cx_max_duration_reached.inc();
                    false
                } else {
                    true
                };
                let back = reusable.then_some(PoolReturn {
                    host_id: host.id,
                    tx,
                    uses,
                    rx,
                    opened,
                });
                let end = StreamEnd {
                    _request: request_slot,
                    h2_active: None,
                };
                return Ok(wrap_response(resp, back, end));
            }
            Err(mut e) => {
                let response_bytes_seen = rx.load(Ordering::Relaxed) != rx_before;
                let unsent = e.take_message();
                counters.mark_request_sent(unsent.is_none());
                match (unsent, copy) {
                    // Never written: the pooled connection was already gone. Try again.
                    (Some(r), _) if !fresh => req = r,
                    // Written, closed before any response byte, safe to repeat.
                    (None, Some(copy)) if !response_bytes_seen && !e.error().is_user() => {
                        tracing::debug!(
                            cluster = %cluster.name,
                            "pooled connection closed before answering; sending the request again"
                        );
                        req = copy.into_request();
                    }
                    _ => return Err(h1_error(e.into_error(), response_bytes_seen)),
                }
            }
        }
    }
}

async fn send_h2(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
    req: Request<RequestBody>,
    counters: &StreamCounters,
    res: &Resources,
) -> Result<UpstreamResponse, UpstreamError> {
    let (mut tx, active) = h2_stream(cluster, host, res).await?;
    let request_slot = match take_request_slot(cluster, res) {
        Ok(s) => s,
        Err(e) => {
            active.fetch_sub(1, Ordering::AcqRel);
            return Err(e);
        }
    };
    let end = StreamEnd {
        _request: request_slot,
        h2_active: Some(active),
    };
    tx.ready().await.map_err(UpstreamError::Reset)?;
    counters.mark_upstream_ready();
    cluster.stats.upstream_rq_total.inc();
    host.stats.rq_total.inc();
    counters.mark_request_sent(true);
    match tx.try_send_request(req).await {
        Ok(resp) => Ok(wrap_response(resp, None, end)),
        Err(mut e) => {
            counters.mark_request_sent(e.take_message().is_none());
            Err(h2_error(e.into_error()))
        }
    }
}

enum H2Lookup {
    /// A connection with room, the stream already counted on it.
    Ready(http2::SendRequest<RequestBody>, Arc<AtomicU32>),
    Wait(Arc<tokio::sync::Notify>),
    Connect(Arc<tokio::sync::Notify>, CxSlot),
}

/// Streams one HTTP/2 connection may carry at once (`max_concurrent_streams`, Envoy's
/// default 2147483647). An upstream advertising fewer makes hyper queue the excess.
fn h2_max_streams(cluster: &Cluster) -> u32 {
    cluster
        .spec
        .h2
        .max_concurrent_streams
        .unwrap_or(2_147_483_647)
}

/// Counts a new stream on `c`.
fn reserve(c: &mut H2Conn) -> H2Lookup {
    c.active.fetch_add(1, Ordering::AcqRel);
    c.total += 1;
    H2Lookup::Ready(c.tx.clone(), c.active.clone())
}

/// A stream on one of this worker's HTTP/2 connections to `host`: one with room, the one
/// being opened (waited for), or a new one. At the connection limit the least busy
/// connection takes the stream.
async fn h2_stream(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
    res: &Resources,
) -> Result<(http2::SendRequest<RequestBody>, Arc<AtomicU32>), UpstreamError> {
    let max_streams = h2_max_streams(cluster);
    let max_requests = cluster.spec.max_requests_per_connection;
    let wh = worker_host(host.id);
    let mut waited = false;
    let mut pending: Option<Pending> = None;
    loop {
        let lookup = POOLS.with(|p| {
            let mut p = p.borrow_mut();
            let p = &mut *p;
            let list = p.h2.entry(host.id).or_default();
            // Closed, expired or used-up connections take no new stream; dropping the
            // pool's sender lets them close once their streams end.
            list.retain(|c| {
                if c.tx.is_closed() {
                    return false;
                }
                if max_requests.is_some_and(|m| c.total >= m) {
                    cluster.breakers.stats.upstream_cx_max_requests.inc();
                    return false;
                }
                if expired(cluster, c.opened) {
                    cluster
                        .breakers
                        .stats
                        .upstream_cx_max_duration_reached
                        .inc();
                    return false;
                }
                true
            });
            if let Some(c) = list
                .iter_mut()
                .find(|c| c.active.load(Ordering::Acquire) < max_streams)
            {
                return Ok(reserve(c));
            }
            if let Some(n) = p.h2_connecting.get(&host.id) {
                // After one wait that produced no room (the connect failed or others took
                // it), look for a connection of our own.
                if !waited {
                    return Ok(H2Lookup::Wait(n.clone()));
                }
            }
            let Ok(slot) = try_cx_slot(cluster, res, &wh) else {
                return Err(UpstreamError::NoPool);
            };
            match slot {
                Some(slot) => {
                    let n = Arc::new(tokio::sync::Notify::new());
                    p.h2_connecting.insert(host.id, n.clone());
                    Ok(H2Lookup::Connect(n, slot))
                }
                None => {
                    cluster.breakers.stats.upstream_cx_overflow.inc();
                    match list
                        .iter_mut()
                        .min_by_key(|c| c.active.load(Ordering::Acquire))
                    {
                        Some(c) => Ok(reserve(c)),
                        // Only connecting connections: wait for one.
                        None => match p.h2_connecting.get(&host.id) {
                            Some(n) => Ok(H2Lookup::Wait(n.clone())),
                            None => Err(UpstreamError::Overflow),
                        },
                    }
                }
            }
        });
        // `max_connection_pools` reached, or (unreachable in practice) no connection at
        // all to wait for: an overflow rather than a spin.
        let lookup = lookup?;
        match lookup {
            H2Lookup::Ready(tx, active) => return Ok((tx, active)),
            H2Lookup::Wait(n) => {
                if pending.is_none() {
                    pending = Some(Pending::start(cluster, res)?);
                }
                n.notified().await;
                waited = true;
            }
            H2Lookup::Connect(n, slot) => {
                let _pending = match pending.take() {
                    Some(p) => p,
                    None => Pending::start(cluster, res)?,
                };
                let _connecting = ConnectingGuard {
                    host_id: host.id,
                    notify: n,
                };
                let tx = open_h2(cluster, host, slot).await?;
                cluster.stats.upstream_rq_pending_total.inc();
                let active = Arc::new(AtomicU32::new(1));
                POOLS.with(|p| {
                    p.borrow_mut().h2.entry(host.id).or_default().push(H2Conn {
                        tx: tx.clone(),
                        active: active.clone(),
                        total: 1,
                        opened: Instant::now(),
                    })
                });
                return Ok((tx, active));
            }
        }
    }
}

/// Clears the "connecting" mark and wakes the waiters however the connect ends (success,
/// failure, or the request being dropped).
struct ConnectingGuard {
    host_id: u64,
    notify: Arc<tokio::sync::Notify>,
}

impl Drop for ConnectingGuard {
    fn drop(&mut self) {
        POOLS.with(|p| {
            let mut p = p.borrow_mut();
            if p.h2_connecting
                .get(&self.host_id)
                .is_some_and(|n| Arc::ptr_eq(n, &self.notify))
            {
                p.h2_connecting.remove(&self.host_id);
            }
        });
        self.notify.notify_waiters();
    }
}

async fn open_h2(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
    slot: CxSlot,
) -> Result<http2::SendRequest<RequestBody>, UpstreamError> {
    let stream = connect(cluster, host).await?;
    let (io, _rx) = upstream_io(cluster, stream);
    let mut b = http2::Builder::new(TokioExecutor::new());
    let s = &cluster.spec.h2;
    if let Some(w) = s.initial_stream_window_size {
        b.initial_stream_window_size(w);
    }
    if let Some(w) = s.initial_connection_window_size {
        b.initial_connection_window_size(w);
    }
    let (tx, conn) = b
        .handshake(TokioIo::new(io))
        .await
        .map_err(UpstreamError::Reset)?;
    cluster.stats.upstream_cx_http2_total.inc();
    let guard = CxGuard::new(cluster, host, slot);
    tokio::spawn(async move {
        let _guard = guard;
        let _ = conn.await;
    });
    Ok(tx)
}

struct PoolReturn {
    host_id: u64,
    tx: http1::SendRequest<RequestBody>,
    uses: u32,
    rx: Arc<AtomicU64>,
    opened: Instant,
}

fn wrap_response(
    resp: Response<Incoming>,
    back: Option<PoolReturn>,
    end: StreamEnd,
) -> UpstreamResponse {
    let (parts, body) = resp.into_parts();
    let done = body.is_end_stream();
    let mut pooled = PooledBody {
        inner: body,
        back,
        stream: Some(end),
    };
    if done {
        pooled.release();
    }
    Response::from_parts(parts, pooled)
}

/// An upstream response body that gives its HTTP/1.1 connection back to the worker's pool
/// once read to the end. Dropped early, the connection is closed instead (its unread bytes
/// make it unusable). Its circuit-breaker request slot is given back at the end too.
pub struct PooledBody {
    inner: Incoming,
    back: Option<PoolReturn>,
    stream: Option<StreamEnd>,
}

impl PooledBody {
    fn release(&mut self) {
        self.stream = None;
        if let Some(b) = self.back.take() {
            put_idle_h1(
                b.host_id,
                IdleH1 {
                    tx: b.tx,
                    since: Instant::now(),
                    uses: b.uses,
                    rx: b.rx,
                    opened: b.opened,
                },
            );
        }
    }
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody").finish()
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => {
                this.back = None;
                this.stream = None;
            }
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Drops every idle connection this worker holds (used when draining).
pub fn clear_worker_pools() {
    POOLS.with(|p| {
        let mut p = p.borrow_mut();
        p.h1.clear();
        p.h2.clear();
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use strait_config::model::ClusterSpec;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn cluster(addr: std::net::SocketAddr) -> Arc<Cluster> {
        let mut spec = ClusterSpec::static_http1("raw", &[addr]);
        spec.connect_timeout = Duration::from_secs(1);
        Arc::new(Cluster::new(
            Arc::new(spec),
            &strait_stats::Store::new(1),
            1,
        ))
    }

    /// Reads one request head (and a `content-length` body) from `s`; false at EOF.
    async fn read_request(s: &mut TcpStream) -> bool {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            match s.read(&mut byte).await {
                Ok(1) => buf.push(byte[0]),
                _ => return false,
            }
        }
        let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await.is_ok()
    }

    /// An upstream whose first connection answers one request, then reads the next one
    /// and closes without answering (the keep-alive race). Later connections answer every
    /// request, or with `close_fresh` read one and close too. Counts requests read.
    async fn racy_upstream(close_fresh: bool) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let seen = Arc::new(AtomicUsize::new(0));
        let seen2 = seen.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((mut s, _)) = l.accept().await {
                n += 1;
                let seen = seen2.clone();
                let first = n == 1;
                tokio::spawn(async move {
                    if first {
                        if read_request(&mut s).await {
                            seen.fetch_add(1, Ordering::SeqCst);
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                                .await;
                        }
                        // The keep-alive race: read the next request, close unanswered.
                        if read_request(&mut s).await {
                            seen.fetch_add(1, Ordering::SeqCst);
                        }
                        return;
                    }
                    while read_request(&mut s).await {
                        seen.fetch_add(1, Ordering::SeqCst);
                        if close_fresh {
                            return;
                        }
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok2")
                            .await;
                    }
                });
            }
        });
        (addr, seen)
    }

    fn get(method: Method, body: RequestBody) -> Request<RequestBody> {
        let mut r = Request::new(body);
        *r.method_mut() = method;
        *r.uri_mut() = Uri::from_static("/x");
        r.headers_mut()
            .insert(http::header::HOST, http::HeaderValue::from_static("up"));
        r
    }

    async fn read_all(mut b: PooledBody) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(f) = std::future::poll_fn(|cx| Pin::new(&mut b).poll_frame(cx)).await {
            if let Ok(d) = f.expect("frame").into_data() {
                out.extend_from_slice(&d);
            }
        }
        out
    }

    #[tokio::test]
    async fn idempotent_request_resent_when_pooled_connection_closes_unanswered() {
        let (addr, seen) = racy_upstream(false).await;
        let c = cluster(addr);
        let host = c.hosts()[0].clone();
        let counters = StreamCounters::default();
        let r = send_request(&c, &host, get(Method::GET, RequestBody::Empty), &counters)
            .await
            .expect("first");
        assert_eq!(read_all(r.into_body()).await, b"ok");
        // Reuses the pooled connection; the upstream closes it after reading the request.
        let r = send_request(&c, &host, get(Method::GET, RequestBody::Empty), &counters)
            .await
            .expect("resent on a fresh connection");
        assert_eq!(read_all(r.into_body()).await, b"ok2");
        assert_eq!(seen.load(Ordering::SeqCst), 3);
        assert_eq!(c.stats.upstream_cx_total.value(), 2);
        clear_worker_pools();
    }

    #[tokio::test]
    async fn non_idempotent_request_is_not_resent() {
        let (addr, seen) = racy_upstream(false).await;
        let c = cluster(addr);
        let host = c.hosts()[0].clone();
        let counters = StreamCounters::default();
        let r = send_request(&c, &host, get(Method::GET, RequestBody::Empty), &counters)
            .await
            .expect("first");
        assert_eq!(read_all(r.into_body()).await, b"ok");
        let e = send_request(&c, &host, get(Method::POST, RequestBody::Empty), &counters)
            .await
            .expect_err("a POST written on the closed connection fails");
        assert!(matches!(e, UpstreamError::Reset(_)), "{e:?}");
        assert_eq!(e.reset_reason(), "connection termination");
        assert!(counters.request_sent());
        assert_eq!(seen.load(Ordering::SeqCst), 2);
        clear_worker_pools();
    }

    #[tokio::test]
    async fn fresh_connection_closed_unanswered_is_not_resent() {
        let (addr, seen) = racy_upstream(true).await;
        let c = cluster(addr);
        let host = c.hosts()[0].clone();
        let counters = StreamCounters::default();
        let r = send_request(&c, &host, get(Method::GET, RequestBody::Empty), &counters)
            .await
            .expect("first");
        assert_eq!(read_all(r.into_body()).await, b"ok");
        // The pooled connection fails, the request goes to a fresh one, which also closes:
        // that failure is final (no loop).
        let e = send_request(&c, &host, get(Method::GET, RequestBody::Empty), &counters)
            .await
            .expect_err("fresh connection closed too");
        assert!(matches!(e, UpstreamError::Reset(_)), "{e:?}");
        assert_eq!(seen.load(Ordering::SeqCst), 3);
        clear_worker_pools();
    }

    #[tokio::test]
    async fn garbage_response_is_a_protocol_error() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    if read_request(&mut s).await {
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Le").await;
                    }
                });
            }
        });
        let c = cluster(addr);
        let host = c.hosts()[0].clone();
        let counters = StreamCounters::default();
        let e = send_request(&c, &host, get(Method::GET, RequestBody::Empty), &counters)
            .await
            .expect_err("partial head then close");
        assert_eq!(e.reset_reason(), "protocol error");
        clear_worker_pools();
    }
}
