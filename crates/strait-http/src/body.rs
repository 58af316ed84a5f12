//! The body sent downstream: either the upstream's body streamed through, or a local
//! reply. It counts bytes and completes the request's `Finish` at end of stream.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use strait_accesslog::ResponseFlag;
use strait_upstream::pool::PooledBody;
use tokio::time::Sleep;

use crate::finish::Finish;

#[derive(Debug)]
enum Kind {
    Upstream(PooledBody),
    Full(Option<Bytes>),
}

/// The request's timers that still run while an upstream response body streams: the route
/// timeout covers the whole response, the stream idle timeout every pause, the max stream
/// duration the whole stream. One firing ends the body with an error: hyper then resets the
/// HTTP/2 stream or closes the HTTP/1.1 connection, as Envoy does once headers are out.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResponseTimers {
    /// End of the route timeout (from the end of the downstream request).
    pub global_at: Option<Instant>,
    pub idle: Option<Duration>,
    pub max_at: Option<Instant>,
}

/// Which response timer fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fired {
    Global,
    Idle,
    MaxDuration,
}

#[derive(Debug)]
pub struct ResponseTimedOut(&'static str);

impl std::fmt::Display for ResponseTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "response body ended by {}", self.0)
    }
}

impl std::error::Error for ResponseTimedOut {}

/// Errors the downstream body can end with.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
pub struct ResponseBody {
    kind: Kind,
    finish: Option<Finish>,
    timers: ResponseTimers,
    last_frame: Option<Instant>,
    /// The last poll found the upstream body pending.
    waiting: bool,
    /// Created the first time the upstream body makes us wait: a response that streams
    /// without pausing never arms a timer.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl ResponseBody {
    pub fn upstream(body: PooledBody, finish: Finish, timers: ResponseTimers) -> Self {
        let mut b = ResponseBody {
            kind: Kind::Upstream(body),
            finish: Some(finish),
            timers,
            last_frame: None,
            waiting: false,
            sleep: None,
        };
        b.complete_if_empty();
        b
    }

    pub fn full(bytes: Option<Bytes>, finish: Option<Finish>) -> Self {
        let bytes = bytes.filter(|b| !b.is_empty());
        let mut b = ResponseBody {
            kind: Kind::Full(bytes),
            finish,
            timers: ResponseTimers::default(),
            last_frame: None,
            waiting: false,
            sleep: None,
        };
        b.complete_if_empty();
        b
    }

    /// A body with nothing to send is complete now: hyper may never poll it.
    fn complete_if_empty(&mut self) {
        if self.is_end_stream()
            && let Some(f) = self.finish.as_mut()
        {
            f.completed = true;
        }
    }

    /// Whether access logs record this response's headers.
    pub fn logs_headers(&self) -> bool {
        self.finish.as_ref().is_some_and(|f| f.log.is_some())
    }

    /// The response headers as finally sent (after route mutations), for access logs.
    pub fn set_logged_response_headers(&mut self, headers: http::HeaderMap) {
        if let Some(l) = self.finish.as_mut().and_then(|f| f.log.as_mut()) {
            l.response_headers = Some(headers);
        }
    }

    /// The earliest deadline of the response timers, and which one it is.
    fn next_deadline(&self) -> Option<(Instant, Fired)> {
        let t = &self.timers;
        let idle = t.idle.map(|d| {
            (
                self.last_frame.unwrap_or_else(Instant::now) + d,
                Fired::Idle,
            )
        });
        [
            t.global_at.map(|i| (i, Fired::Global)),
            t.max_at.map(|i| (i, Fired::MaxDuration)),
            idle,
        ]
        .into_iter()
        .flatten()
        .min_by_key(|(i, _)| *i)
    }

    /// While the upstream body is pending: has a response timer fired?
    fn poll_timers(&mut self, cx: &mut Context<'_>) -> Option<Fired> {
        loop {
            let (at, which) = self.next_deadline()?;
            if Instant::now() >= at {
                return Some(which);
            }
            match self.sleep.as_mut() {
                Some(s) => {
                    if s.deadline() != at.into() {
                        s.as_mut().reset(at.into());
                    }
                }
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at.into()))),
            }
            let sleep = self.sleep.as_mut()?;
            if sleep.as_mut().poll(cx).is_pending() {
                return None;
            }
        }
    }

    /// A response timer fired after the headers went out: Envoy's flags, details and stats.
    fn timed_out(&mut self, which: Fired) -> ResponseTimedOut {
        let Some(f) = self.finish.as_mut() else {
            return ResponseTimedOut("a timeout");
        };
        f.completed = true;
        let details = match which {
            Fired::Global => {
                f.flags.insert(ResponseFlag::UpstreamRequestTimeout);
                if let Some(u) = &f.upstream {
                    u.cluster.stats.upstream_rq_timeout.inc();
                    u.host.stats.rq_timeout.inc();
                }
                if let Some(vc) = &f.vcluster {
                    vc.upstream_rq_timeout.inc();
                }
                "response_timeout"
            }
            Fired::Idle => {
                f.flags.insert(ResponseFlag::StreamIdleTimeout);
                f.hcm_stats().downstream_rq_idle_timeout.inc();
                "stream_idle_timeout"
            }
            Fired::MaxDuration => {
                f.hcm_stats().downstream_rq_max_duration_reached.inc();
                "max_duration_timeout"
            }
        };
        f.details = details;
        ResponseTimedOut(details)
    }

    /// Responses to HEAD (and 204/304) are never polled: nothing more will be sent.
    pub fn mark_complete(&mut self) {
        if let Some(f) = self.finish.as_mut() {
            f.completed = true;
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        // The idle clock starts when we begin waiting on the upstream, not when the last
        // frame was read: a slow downstream reader is not an idle upstream.
        if !this.waiting && this.timers.idle.is_some() {
            this.last_frame = Some(Instant::now());
        }
        let r = match &mut this.kind {
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(body) => Pin::new(body).poll_frame(cx),
        };
        this.waiting = r.is_pending();
        if let Kind::Upstream(_) = this.kind {
            match &r {
                Poll::Pending => {
                    if let Some(which) = this.poll_timers(cx) {
                        let e = this.timed_out(which);
                        // Dropping the upstream body resets that stream (no reuse).
                        this.kind = Kind::Full(None);
                        return Poll::Ready(Some(Err(Box::new(e))));
                    }
                }
                _ => {}
            }
        }
        let r = r.map_err(|e| -> BodyError { Box::new(e) });
        if let Some(f) = this.finish.as_mut() {
            match &r {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(d) = frame.data_ref() {
                        f.bytes_sent += d.len() as u64;
                    }
                }
                Poll::Ready(Some(Err(_))) => {
                    f.flags.insert(ResponseFlag::UpstreamConnectionTermination);
                    f.completed = true;
                }
                Poll::Ready(None) => f.completed = true,
                Poll::Pending => {}
            }
        }
        if matches!(r, Poll::Ready(Some(Ok(_))))
            && this.is_end_stream()
            && let Some(f) = this.finish.as_mut()
        {
            f.completed = true;
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(b) => b.is_none(),
            Kind::Upstream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map(|b| b.len() as u64).unwrap_or(0)),
            Kind::Upstream(body) => body.size_hint(),
        }
    }
}
