//! An upstream TCP stream that counts its bytes: received bytes in a shared counter (the
//! pool reads it to know whether a response started), sent bytes locally; when the stream
//! is dropped its owner is told the totals (cluster byte stats, connection gauges).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// What happens when a counted stream closes.
pub trait OnClose {
    fn closed(&mut self, rx_bytes: u64, tx_bytes: u64);
}

#[derive(Debug)]
pub struct Counted<T: OnClose> {
    inner: TcpStream,
    rx: Arc<AtomicU64>,
    tx: u64,
    owner: T,
}

impl<T: OnClose> Counted<T> {
    pub fn new(inner: TcpStream, owner: T) -> Self {
        Counted {
            inner,
            rx: Arc::default(),
            tx: 0,
            owner,
        }
    }

    /// The received-bytes counter, readable while the stream is in use elsewhere.
    pub fn rx_counter(&self) -> Arc<AtomicU64> {
        self.rx.clone()
    }
}

impl<T: OnClose> Drop for Counted<T> {
    fn drop(&mut self) {
        let rx = self.rx.load(Ordering::Relaxed);
        self.owner.closed(rx, self.tx);
    }
}

impl<T: OnClose + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let n = (buf.filled().len() - before) as u64;
            if n > 0 {
                this.rx.fetch_add(n, Ordering::Relaxed);
            }
        }
        r
    }
}

impl<T: OnClose + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            this.tx += *n as u64;
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &r {
            this.tx += *n as u64;
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
