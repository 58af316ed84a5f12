//! Request mirroring's body plumbing: the downstream body is read once, by the main request;
//! each shadow gets a copy of every frame through a bounded channel. A shadow that falls
//! behind (channel full) is cut off: the main request is never slowed down by its shadows.

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

/// The downstream request body as the router reads it, copying frames to shadows.
#[derive(Debug)]
pub struct DownstreamBody {
    inner: Incoming,
    shadows: Vec<mpsc::Sender<ShadowFrame>>,
}

impl DownstreamBody {
    pub fn new(inner: Incoming) -> Self {
        DownstreamBody {
            inner,
            shadows: Vec::new(),
        }
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
}

impl Body for DownstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        if !this.shadows.is_empty() {
            match &r {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(d) = frame.data_ref() {
                        this.copy(|| ShadowFrame::Data(d.clone()));
                    } else if let Some(t) = frame.trailers_ref() {
                        this.copy(|| ShadowFrame::Trailers(t.clone()));
                    }
                    if this.inner.is_end_stream() {
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
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
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
