//! The body sent upstream: the downstream request body streamed through, counting bytes and
//! telling the router when the downstream request is complete (Envoy starts the route
//! timeout then).
//!
//! When the router may retry, the body is a [`ReplayBody`]: what has been read from
//! downstream is kept (up to the route's buffer limit, Envoy's
//! `per_request_buffer_limit_bytes` / connection buffer limit) so a later attempt can send it
//! again, and the whole state goes back to the router through a oneshot channel when hyper
//! is done with the body. Without a retry policy nothing is buffered or allocated.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::shadow::{DownstreamBody, ShadowBody};
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use strait_stats::Counter;
use tokio::sync::{Notify, oneshot};

/// Per-request counters shared by the downstream request body, the connection pool and the
/// router. Atomics only: the body is polled by the upstream connection's task.
#[derive(Debug)]
pub struct StreamCounters {
    pub bytes_received: AtomicU64,
    request_done: AtomicBool,
    done_notify: Notify,
    /// When the request started, the base of the `*_ms` instants.
    started: Instant,
    /// Milliseconds after `started` of the last downstream body frame (stream idle timer).
    last_activity_ms: AtomicU64,
    /// Milliseconds after `started` when the downstream request was complete.
    done_at_ms: AtomicU64,
    /// Upstream attempts made (Envoy's `%UPSTREAM_REQUEST_ATTEMPT_COUNT%`).
    attempts: AtomicU32,
    /// Some attempt of this request may have put request bytes on the wire (Envoy's
    /// "upstream request started", for `reset-before-request`).
    request_sent: AtomicBool,
    /// The request body outgrew the retry buffer: no more retries for this request.
    retry_abandoned: AtomicBool,
    /// The current attempt has its upstream connection (Envoy's "pool ready").
    upstream_ready: AtomicBool,
    ready_notify: Notify,
}

impl Default for StreamCounters {
    fn default() -> Self {
        StreamCounters {
            bytes_received: AtomicU64::new(0),
            request_done: AtomicBool::new(false),
            done_notify: Notify::new(),
            started: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            done_at_ms: AtomicU64::new(0),
            attempts: AtomicU32::new(0),
            request_sent: AtomicBool::new(false),
            retry_abandoned: AtomicBool::new(false),
            upstream_ready: AtomicBool::new(false),
            ready_notify: Notify::new(),
        }
    }
}

impl StreamCounters {
    pub fn mark_request_done(&self) {
        self.done_at_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Release);
        if !self.request_done.swap(true, Ordering::AcqRel) {
            self.done_notify.notify_waiters();
        }
    }
    /// When the downstream request was complete (`None` while it is not).
    pub fn request_done_at(&self) -> Option<Instant> {
        self.is_request_done()
            .then(|| self.started + Duration::from_millis(self.done_at_ms.load(Ordering::Acquire)))
    }
    pub fn is_request_done(&self) -> bool {
        self.request_done.load(Ordering::Acquire)
    }
    /// Resolves once the downstream request body has been fully read.
    pub async fn request_done(&self) {
        loop {
            let notified = self.done_notify.notified();
            if self.is_request_done() {
                return;
            }
            notified.await;
        }
    }

    /// Records downstream activity (a body frame) for the stream idle timer.
    pub fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_activity_ms.store(ms, Ordering::Relaxed);
    }
    /// When the downstream last sent something (the request start if never).
    pub fn last_activity(&self) -> Instant {
        self.started + Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed))
    }

    /// Counts one more upstream attempt; returns its number (1 for the first).
    pub fn next_attempt(&self) -> u32 {
        self.attempts.fetch_add(1, Ordering::Relaxed) + 1
    }
    /// Upstream attempts made so far.
    pub fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// The pool is handing the request to a connection (it may be written from now on).
    pub fn mark_request_sent(&self, sent: bool) {
        self.request_sent.store(sent, Ordering::Release);
    }
    /// Whether the current attempt's request may have been written.
    pub fn request_sent(&self) -> bool {
        self.request_sent.load(Ordering::Acquire)
    }

    /// The request body no longer fits the retry buffer (Envoy: "give up on the retry").
    pub fn abandon_retries(&self) {
        self.retry_abandoned.store(true, Ordering::Release);
    }
    pub fn retries_abandoned(&self) -> bool {
        self.retry_abandoned.load(Ordering::Acquire)
    }

    /// A new attempt starts: it has no connection yet.
    pub fn begin_attempt(&self) {
        self.upstream_ready.store(false, Ordering::Release);
        self.request_sent.store(false, Ordering::Release);
    }
    /// The pool has a connection for the current attempt and is about to write the request.
    pub fn mark_upstream_ready(&self) {
        if !self.upstream_ready.swap(true, Ordering::AcqRel) {
            self.ready_notify.notify_waiters();
        }
    }
    /// Whether the current attempt has its upstream connection.
    pub fn is_upstream_ready(&self) -> bool {
        self.upstream_ready.load(Ordering::Acquire)
    }
    /// Resolves once the current attempt has its upstream connection.
    pub async fn upstream_ready(&self) {
        loop {
            let notified = self.ready_notify.notified();
            if self.upstream_ready.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// The request body sent to an upstream.
#[derive(Debug)]
pub enum RequestBody {
    Empty,
    /// Streamed through, nothing kept: the request cannot be retried once written.
    Incoming {
        inner: DownstreamBody,
        counters: Arc<StreamCounters>,
    },
    /// Kept for retries (see [`ReplayBody`]).
    Replay(Box<ReplayBody>),
    /// A mirrored request's copy of the main request's body.
    Shadow(ShadowBody),
}

pub use crate::shadow::BodyError;

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Incoming { inner, counters } => {
                let r = Pin::new(&mut *inner).poll_frame(cx);
                match &r {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(d) = frame.data_ref() {
                            counters
                                .bytes_received
                                .fetch_add(d.len() as u64, Ordering::Relaxed);
                        }
                        counters.touch();
                        // hyper stops polling a body that says it is done (content-length
                        // reached): the downstream request is complete now.
                        if inner.is_end_stream() {
                            counters.mark_request_done();
                        }
                    }
                    Poll::Ready(None) => counters.mark_request_done(),
                    _ => {}
                }
                r.map_err(Into::into)
            }
            RequestBody::Replay(b) => Pin::new(b.as_mut()).poll_frame(cx).map_err(Into::into),
            RequestBody::Shadow(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Incoming { inner, .. } => inner.is_end_stream(),
            RequestBody::Replay(b) => b.is_end_stream(),
            RequestBody::Shadow(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Incoming { inner, .. } => inner.size_hint(),
            RequestBody::Replay(b) => b.size_hint(),
            RequestBody::Shadow(b) => b.size_hint(),
        }
    }
}

/// One piece of the downstream request body as received.
#[derive(Debug, Clone)]
pub enum Chunk {
    Data(Bytes),
    Trailers(HeaderMap),
}

impl Chunk {
    fn frame(&self) -> Frame<Bytes> {
        match self {
            Chunk::Data(b) => Frame::data(b.clone()),
            Chunk::Trailers(t) => Frame::trailers(t.clone()),
        }
    }
    fn len(&self) -> u64 {
        match self {
            Chunk::Data(b) => b.len() as u64,
            Chunk::Trailers(_) => 0,
        }
    }
}

/// What a [`ReplayBody`] hands back to the router when hyper drops it (sent, failed, or the
/// attempt abandoned): the downstream body received so far and the part not read yet.
#[derive(Debug)]
pub struct Replay {
    /// Everything read from downstream, in order (empty once `overflowed`).
    pub chunks: Vec<Chunk>,
    /// The rest of the downstream body; `None` once it has been read to the end.
    pub rest: Option<DownstreamBody>,
    /// The body outgrew the buffer limit: it cannot be sent again.
    pub overflowed: bool,
}

/// A request body that can be sent again: first the chunks already received (replayed
/// without copying, `Bytes` are shared), then the rest of the downstream body, which is kept
/// as it passes (tee) while the total stays within `limit` bytes. Past the limit the buffer
/// is dropped, the request streams on, and the router is told (no more retries, as Envoy's
/// `retry_or_shadow_abandoned`).
#[derive(Debug)]
pub struct ReplayBody {
    chunks: Vec<Chunk>,
    pos: usize,
    rest: Option<DownstreamBody>,
    buffered: u64,
    limit: u64,
    overflowed: bool,
    counters: Arc<StreamCounters>,
    /// `retry_or_shadow_abandoned`, counted when the buffer overflows.
    abandoned: Counter,
    back: Option<oneshot::Sender<Replay>>,
}

impl Replay {
    /// The state before the first attempt: nothing read yet.
    pub fn first(body: DownstreamBody) -> Self {
        Replay {
            chunks: Vec::new(),
            rest: Some(body),
            overflowed: false,
        }
    }
}

impl ReplayBody {
    /// A body for one attempt. `replay` is what earlier attempts received
    /// ([`Replay::first`] for the first attempt). The receiver gets the state back when hyper
    /// drops the body.
    pub fn new(
        replay: Replay,
        limit: u64,
        counters: Arc<StreamCounters>,
        abandoned: Counter,
    ) -> (Self, oneshot::Receiver<Replay>) {
        let (tx, rx) = oneshot::channel();
        let buffered = replay.chunks.iter().map(Chunk::len).sum();
        let body = ReplayBody {
            chunks: replay.chunks,
            pos: 0,
            rest: replay.rest,
            buffered,
            limit,
            overflowed: replay.overflowed,
            counters,
            abandoned,
            back: Some(tx),
        };
        (body, rx)
    }

    fn remaining_buffered(&self) -> u64 {
        self.chunks
            .get(self.pos..)
            .map(|c| c.iter().map(Chunk::len).sum())
            .unwrap_or(0)
    }

    fn keep(&mut self, chunk: Chunk) {
        if self.overflowed {
            return;
        }
        self.buffered += chunk.len();
        if self.buffered > self.limit {
            // Envoy: "The request payload has at least N bytes data which exceeds buffer
            // limit. Give up on the retry/shadow."
            self.overflowed = true;
            self.chunks = Vec::new();
            self.pos = 0;
            self.counters.abandon_retries();
            self.abandoned.inc();
        } else {
            self.chunks.push(chunk);
            self.pos = self.chunks.len();
        }
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if let Some(c) = this.chunks.get(this.pos) {
            this.pos += 1;
            return Poll::Ready(Some(Ok(c.frame())));
        }
        let Some(rest) = this.rest.as_mut() else {
            return Poll::Ready(None);
        };
        let r = Pin::new(rest).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(frame))) => {
                this.counters.touch();
                if let Some(d) = frame.data_ref() {
                    this.counters
                        .bytes_received
                        .fetch_add(d.len() as u64, Ordering::Relaxed);
                    let d = d.clone();
                    this.keep(Chunk::Data(d));
                } else if let Some(t) = frame.trailers_ref() {
                    let t = t.clone();
                    this.keep(Chunk::Trailers(t));
                }
                // hyper stops polling a body that says it is done (content-length reached).
                if this.rest.as_ref().is_some_and(|r| r.is_end_stream()) {
                    this.rest = None;
                    this.counters.mark_request_done();
                }
            }
            Poll::Ready(None) => {
                this.rest = None;
                this.counters.mark_request_done();
            }
            Poll::Ready(Some(Err(_))) => {
                // The downstream body broke: what was kept cannot be sent again.
                this.rest = None;
                this.overflowed = true;
                this.chunks = Vec::new();
                this.pos = 0;
            }
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.pos >= self.chunks.len() && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let buffered = self.remaining_buffered();
        match &self.rest {
            None => SizeHint::with_exact(buffered),
            Some(r) => crate::shadow::hint_plus(r.size_hint(), buffered),
        }
    }
}

impl Drop for ReplayBody {
    fn drop(&mut self) {
        if let Some(tx) = self.back.take() {
            let _ = tx.send(Replay {
                chunks: std::mem::take(&mut self.chunks),
                rest: self.rest.take(),
                overflowed: self.overflowed,
            });
        }
    }
}
