//! The body sent downstream: either the upstream's body streamed through, or a local
//! reply. It counts bytes and completes the request's `Finish` at end of stream.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use strait_accesslog::ResponseFlag;
use strait_upstream::pool::PooledBody;

use crate::finish::Finish;

#[derive(Debug)]
enum Kind {
    Upstream(PooledBody),
    Full(Option<Bytes>),
}

#[derive(Debug)]
pub struct ResponseBody {
    kind: Kind,
    finish: Option<Finish>,
}

impl ResponseBody {
    pub fn upstream(body: PooledBody, finish: Finish) -> Self {
        let mut b = ResponseBody {
            kind: Kind::Upstream(body),
            finish: Some(finish),
        };
        b.complete_if_empty();
        b
    }

    pub fn full(bytes: Option<Bytes>, finish: Option<Finish>) -> Self {
        let bytes = bytes.filter(|b| !b.is_empty());
        let mut b = ResponseBody {
            kind: Kind::Full(bytes),
            finish,
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

    /// Responses to HEAD (and 204/304) are never polled: nothing more will be sent.
    pub fn mark_complete(&mut self) {
        if let Some(f) = self.finish.as_mut() {
            f.completed = true;
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let r = match &mut this.kind {
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(body) => Pin::new(body).poll_frame(cx),
        };
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
