//! Request mirroring's body plumbing: the downstream body is read once, by the main request;
//! each shadow gets a copy of every frame through a bounded channel. A shadow that falls
//! behind (channel full) is cut off: the main request is never slowed down by its shadows.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::mpsc;

/// Frames a shadow may hold unsent before it is abandoned (each `Bytes` is shared, not
/// copied, so this bounds queued work rather than memory twice over).
const SHADOW_QUEUE: usize = 64;

/// Error of a shadow body cut off from the main request's body.
#[derive(Debug)]
pub struct ShadowAbandoned;

impl std::fmt::Display for ShadowAbandoned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the shadow request fell behind the main request and was abandoned")
    }
}

impl std::error::Error for ShadowAbandoned {}

#[derive(Debug)]
enum ShadowFrame {
    Data(Bytes),
    Trailers(HeaderMap),
    End,
}

/// The downstream request body as the router reads it: first what was already read and
/// kept (an internal redirect sends a buffered body again), then the rest from the client;
/// every frame is copied to the shadows.
#[derive(Debug, Default)]
pub struct DownstreamBody {
    buffered: VecDeque<Bytes>,
    /// Trailers read with the buffered part (sent after it).
    trailers: Option<HeaderMap>,
    inner: Option<Incoming>,
    /// The client's body failed while it was being buffered: reported after the buffer.
    failed: bool,
    shadows: Vec<mpsc::Sender<ShadowFrame>>,
}

/// A whole request body kept in memory (shared `Bytes`, cheap to send again).
#[derive(Debug, Clone, Default)]
pub struct BufferedBody {
    pub chunks: Vec<Bytes>,
    pub trailers: Option<HeaderMap>,
}

/// Error of a downstream body that broke while it was being buffered.
#[derive(Debug)]
pub struct DownstreamBodyFailed;

impl std::fmt::Display for DownstreamBodyFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the downstream request body failed")
    }
}

impl std::error::Error for DownstreamBodyFailed {}

impl DownstreamBody {
    pub fn new(inner: Incoming) -> Self {
        DownstreamBody {
            inner: Some(inner),
            ..Default::default()
        }
    }

    /// A body that sends `b` (again).
    pub fn from_buffered(b: &BufferedBody) -> Self {
        DownstreamBody {
            buffered: b.chunks.iter().cloned().collect(),
            trailers: b.trailers.clone(),
            ..Default::default()
        }
    }

    /// Reads the whole body if it is at most `limit` bytes. Otherwise (or when the client's
    /// body fails) returns the body, what was read kept in front of the rest.
    pub async fn read_all(mut self, limit: u64) -> Result<BufferedBody, DownstreamBody> {
        use http_body_util::BodyExt;
        let mut total = 0u64;
        while let Some(inner) = self.inner.as_mut() {
            if inner.is_end_stream() {
                self.inner = None;
                break;
            }
            match inner.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(d) => {
                        total += d.len() as u64;
                        self.buffered.push_back(d);
                        if total > limit {
                            return Err(self);
                        }
                    }
                    Err(frame) => {
                        if let Ok(t) = frame.into_trailers() {
                            self.trailers = Some(t);
                        }
                    }
                },
                Some(Err(_)) => {
                    self.inner = None;
                    self.failed = true;
                    return Err(self);
                }
                None => self.inner = None,
            }
        }
        Ok(BufferedBody {
            chunks: self.buffered.drain(..).collect(),
            trailers: self.trailers.take(),
        })
    }

    /// A body for a shadow request that receives every frame read from now on.
    pub fn add_shadow(&mut self) -> ShadowBody {
        let (tx, rx) = mpsc::channel(SHADOW_QUEUE);
        self.shadows.push(tx);
        ShadowBody { rx, ended: false }
    }

    fn copy(&mut self, make: impl Fn() -> ShadowFrame) {
        // A full or closed channel drops that shadow's sender: it sees an abandoned body.
        self.shadows.retain(|tx| tx.try_send(make()).is_ok());
    }

    fn end_shadows(&mut self) {
        self.copy(|| ShadowFrame::End);
        self.shadows.clear();
    }

    /// The next frame, from the buffer first, then the client.
    fn next_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(d) = self.buffered.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        if let Some(t) = self.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(t))));
        }
        if std::mem::take(&mut self.failed) {
            return Poll::Ready(Some(Err(Box::new(DownstreamBodyFailed))));
        }
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner)
                .poll_frame(cx)
                .map_err(|e| -> BodyError { Box::new(e) }),
            None => Poll::Ready(None),
        }
    }
}

/// Errors a request body can end with.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl Body for DownstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let r = this.next_frame(cx);
        if !this.shadows.is_empty() {
            match &r {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(d) = frame.data_ref() {
                        this.copy(|| ShadowFrame::Data(d.clone()));
                    } else if let Some(t) = frame.trailers_ref() {
                        this.copy(|| ShadowFrame::Trailers(t.clone()));
                    }
                    if this.is_end_stream() {
                        this.end_shadows();
                    }
                }
                Poll::Ready(None) => this.end_shadows(),
                // The shadows see their channel close without an end: abandoned.
                Poll::Ready(Some(Err(_))) => this.shadows.clear(),
                Poll::Pending => {}
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.buffered.is_empty()
            && self.trailers.is_none()
            && !self.failed
            && self.inner.as_ref().is_none_or(|i| i.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self.buffered.iter().map(|b| b.len() as u64).sum();
        match &self.inner {
            Some(i) => hint_plus(i.size_hint(), buffered),
            None => SizeHint::with_exact(buffered),
        }
    }
}

/// A shadow request's body: the frames the main request read, in order.
#[derive(Debug)]
pub struct ShadowBody {
    rx: mpsc::Receiver<ShadowFrame>,
    ended: bool,
}

impl Body for ShadowBody {
    type Data = Bytes;
    type Error = ShadowAbandoned;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ShadowAbandoned>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(ShadowFrame::Data(d))) => Poll::Ready(Some(Ok(Frame::data(d)))),
            Poll::Ready(Some(ShadowFrame::Trailers(t))) => {
                Poll::Ready(Some(Ok(Frame::trailers(t))))
            }
            Poll::Ready(Some(ShadowFrame::End)) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(None) => Poll::Ready(Some(Err(ShadowAbandoned))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

/// `h` with `extra` bytes known to come first.
pub(crate) fn hint_plus(h: SizeHint, extra: u64) -> SizeHint {
    let mut out = SizeHint::new();
    out.set_lower(h.lower() + extra);
    if let Some(u) = h.upper() {
        out.set_upper(u + extra);
    }
    out
}
