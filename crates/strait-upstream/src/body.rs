//! The body sent upstream: the downstream request body streamed through unbuffered, counting
//! bytes and telling the router when the downstream request is complete (Envoy starts the
//! route timeout then).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::Notify;

/// Per-request counters shared by the downstream request body and the router.
#[derive(Debug, Default)]
pub struct StreamCounters {
    pub bytes_received: AtomicU64,
    request_done: AtomicBool,
    done_notify: Notify,
}

impl StreamCounters {
    pub fn mark_request_done(&self) {
        if !self.request_done.swap(true, Ordering::AcqRel) {
            self.done_notify.notify_waiters();
        }
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
}

/// The request body sent to an upstream.
#[derive(Debug)]
pub enum RequestBody {
    Empty,
    Incoming {
        inner: Incoming,
        counters: Arc<StreamCounters>,
    },
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Incoming { inner, counters } => {
                let r = Pin::new(inner).poll_frame(cx);
                match &r {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(d) = frame.data_ref() {
                            counters
                                .bytes_received
                                .fetch_add(d.len() as u64, Ordering::Relaxed);
                        }
                    }
                    Poll::Ready(None) => counters.mark_request_done(),
                    _ => {}
                }
                r
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Incoming { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Incoming { inner, .. } => inner.size_hint(),
        }
    }
}
