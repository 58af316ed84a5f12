//! Per-worker upstream connection pools.
//!
//! Each worker thread owns its pools (thread-local), like Envoy: no lock and no shared
//! cache line on the request path. HTTP/1.1 connections are reused after their response
//! body has been read to the end; one that the upstream closed while idle is never used
//! (checked before use, and a request hyper could not write is re-sent once on a fresh
//! connection). HTTP/2 keeps one multiplexed connection per host per worker.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use strait_config::model::UpstreamProtocol;
use tokio::net::TcpStream;

use crate::body::RequestBody;
use crate::cluster::{Cluster, Host};

/// Idle HTTP/1.1 connections kept per host per worker.
const MAX_IDLE_PER_HOST: usize = 256;

/// Why no response came back from the upstream.
#[derive(Debug)]
pub enum UpstreamError {
    /// TCP connect failed (refused, unreachable, ...).
    ConnectFailure(io::Error),
    /// `connect_timeout` elapsed.
    ConnectTimeout,
    /// The connection was reset or closed before response headers.
    Reset(hyper::Error),
}

impl UpstreamError {
    /// Envoy's wording of the reset reason in local replies and logs.
    pub fn reset_reason(&self) -> &'static str {
        match self {
            UpstreamError::ConnectFailure(_) => "remote connection failure",
            UpstreamError::ConnectTimeout => "connection timeout",
            UpstreamError::Reset(_) => "connection termination",
        }
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
            UpstreamError::Reset(_) => None,
        }
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
}

#[derive(Default)]
struct WorkerPools {
    h1: HashMap<u64, Vec<IdleH1>>,
    h2: HashMap<u64, http2::SendRequest<RequestBody>>,
}

thread_local! {
    static POOLS: RefCell<WorkerPools> = RefCell::new(WorkerPools::default());
}

/// The response from an upstream, its body returning the connection to the pool at the end.
pub type UpstreamResponse = Response<PooledBody>;

/// Sends `req` to `host` of `cluster`, reusing this worker's pooled connection when one is
/// usable. `req` must carry an origin-form URI for HTTP/1.1 and an absolute one for HTTP/2.
pub async fn send_request(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
    req: Request<RequestBody>,
) -> Result<UpstreamResponse, UpstreamError> {
    match cluster.spec.protocol {
        UpstreamProtocol::Http1 => send_h1(cluster, host, req).await,
        UpstreamProtocol::Http2 => send_h2(cluster, host, req).await,
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
            return Some(c);
        }
        None
    })
}

fn put_idle_h1(host_id: u64, c: IdleH1) {
    POOLS.with(|p| {
        let mut p = p.borrow_mut();
        let list = p.h1.entry(host_id).or_default();
        if list.len() < MAX_IDLE_PER_HOST {
            list.push(c);
        }
    });
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

/// Keeps the active-connection gauges right for the life of a connection task.
struct CxGuard {
    cluster: Arc<Cluster>,
    host: Arc<Host>,
    opened: Instant,
}

impl CxGuard {
    fn new(cluster: &Arc<Cluster>, host: &Arc<Host>) -> Self {
        cluster.stats.upstream_cx_active.inc();
        host.stats.cx_active.inc();
        CxGuard {
            cluster: cluster.clone(),
            host: host.clone(),
            opened: Instant::now(),
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
) -> Result<http1::SendRequest<RequestBody>, UpstreamError> {
    let stream = connect(cluster, host).await?;
    let (tx, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(UpstreamError::Reset)?;
    cluster.stats.upstream_cx_http1_total.inc();
    let guard = CxGuard::new(cluster, host);
    tokio::spawn(async move {
        let _guard = guard;
        let _ = conn.await;
    });
    Ok(tx)
}

async fn send_h1(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
    mut req: Request<RequestBody>,
) -> Result<UpstreamResponse, UpstreamError> {
    // At most: every usable pooled connection that fails before writing, then one fresh one.
    loop {
        let (mut tx, uses, fresh) = match take_idle_h1(cluster, host) {
            Some(mut c) => {
                // Just released connections may still be finishing the previous exchange.
                if c.tx.ready().await.is_err() {
                    continue;
                }
                (c.tx, c.uses, false)
            }
            None => (new_h1(cluster, host).await?, 0, true),
        };
        if fresh {
            cluster.stats.upstream_rq_pending_total.inc();
        }
        cluster.stats.upstream_rq_total.inc();
        host.stats.rq_total.inc();
        match tx.try_send_request(req).await {
            Ok(resp) => {
                let uses = uses + 1;
                let reusable = cluster
                    .spec
                    .max_requests_per_connection
                    .is_none_or(|m| uses < m);
                let back = reusable.then_some(PoolReturn {
                    host_id: host.id,
                    tx,
                    uses,
                });
                return Ok(wrap_response(resp, back));
            }
            Err(mut e) => match e.take_message() {
                // Never written: the pooled connection was already gone. Try again.
                Some(r) if !fresh => req = r,
                _ => return Err(UpstreamError::Reset(e.into_error())),
            },
        }
    }
}

async fn send_h2(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
    req: Request<RequestBody>,
) -> Result<UpstreamResponse, UpstreamError> {
    let existing = POOLS.with(|p| {
        let mut p = p.borrow_mut();
        match p.h2.get(&host.id) {
            Some(tx) if !tx.is_closed() => Some(tx.clone()),
            Some(_) => {
                p.h2.remove(&host.id);
                None
            }
            None => None,
        }
    });
    let mut tx = match existing {
        Some(tx) => tx,
        None => {
            let stream = connect(cluster, host).await?;
            let mut b = http2::Builder::new(TokioExecutor::new());
            let s = &cluster.spec.h2;
            if let Some(w) = s.initial_stream_window_size {
                b.initial_stream_window_size(w);
            }
            if let Some(w) = s.initial_connection_window_size {
                b.initial_connection_window_size(w);
            }
            let (tx, conn) = b
                .handshake(TokioIo::new(stream))
                .await
                .map_err(UpstreamError::Reset)?;
            cluster.stats.upstream_cx_http2_total.inc();
            let guard = CxGuard::new(cluster, host);
            tokio::spawn(async move {
                let _guard = guard;
                let _ = conn.await;
            });
            POOLS.with(|p| p.borrow_mut().h2.insert(host.id, tx.clone()));
            tx
        }
    };
    tx.ready().await.map_err(UpstreamError::Reset)?;
    cluster.stats.upstream_rq_total.inc();
    host.stats.rq_total.inc();
    match tx.try_send_request(req).await {
        Ok(resp) => Ok(wrap_response(resp, None)),
        Err(e) => Err(UpstreamError::Reset(e.into_error())),
    }
}

struct PoolReturn {
    host_id: u64,
    tx: http1::SendRequest<RequestBody>,
    uses: u32,
}

fn wrap_response(resp: Response<Incoming>, back: Option<PoolReturn>) -> UpstreamResponse {
    let (parts, body) = resp.into_parts();
    let done = body.is_end_stream();
    let mut pooled = PooledBody { inner: body, back };
    if done {
        pooled.release();
    }
    Response::from_parts(parts, pooled)
}

/// An upstream response body that gives its HTTP/1.1 connection back to the worker's pool
/// once read to the end. Dropped early, the connection is closed instead (its unread bytes
/// make it unusable).
pub struct PooledBody {
    inner: Incoming,
    back: Option<PoolReturn>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some(b) = self.back.take() {
            put_idle_h1(
                b.host_id,
                IdleH1 {
                    tx: b.tx,
                    since: Instant::now(),
                    uses: b.uses,
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
            Poll::Ready(Some(Err(_))) => this.back = None,
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
