//! The downstream socket as the codec sees it: counts bytes for Envoy's connection stats and
//! turns the codec's bare protocol-error replies into Envoy's local replies.
//!
//! hyper answers a request it cannot parse (400, 431, ...) itself, with an empty body and
//! no `server` header. Envoy sends `content-type: text/plain`, the status text as body and
//! `server`. When such a reply is written while no request is being served, it is replaced
//! here, byte for byte, before it reaches the socket. The check is one comparison per
//! write.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::conn::ConnInfo;
use crate::hcm::HttpConnectionManager;

const HEAD_COPY: usize = 256;

pub struct DownstreamIo<T> {
    inner: T,
    info: Arc<ConnInfo>,
    hcm: Arc<HttpConnectionManager>,
    /// A replacement reply still being written.
    pending: Vec<u8>,
    pending_pos: usize,
    /// The start of the last request head read while idle (to tell a bad version from
    /// other garbage, as Envoy answers 426 to the former).
    head: [u8; HEAD_COPY],
    head_len: usize,
    rx_bytes: u64,
    tx_bytes: u64,
}

impl<T> DownstreamIo<T> {
    pub fn new(inner: T, info: Arc<ConnInfo>, hcm: Arc<HttpConnectionManager>) -> Self {
        DownstreamIo {
            inner,
            info,
            hcm,
            pending: Vec::new(),
            pending_pos: 0,
            head: [0; HEAD_COPY],
            head_len: 0,
            rx_bytes: 0,
            tx_bytes: 0,
        }
    }

    /// Envoy's reply for a codec error hyper is about to send as `status`.
    fn replacement(&self, status: &[u8]) -> Option<Vec<u8>> {
        let (code, text): (u16, &str) = match status {
            b"400" if bad_version(&self.head[..self.head_len]) => (426, "Upgrade Required"),
            b"400" if missing_host(&self.head[..self.head_len]) => (400, ""),
            b"400" => (400, "Bad Request"),
            b"431" => (431, "Request Header Fields Too Large"),
            b"414" => (414, "URI Too Long"),
            b"413" => (413, "Payload Too Large"),
            b"501" => (501, "Not Implemented"),
            b"505" => (426, "Upgrade Required"),
            _ => return None,
        };
        let s = &self.hcm.stats;
        s.downstream_rq_total.inc();
        s.downstream_cx_protocol_error.inc();
        s.record_status(code);
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let server = self.hcm.server_name.to_str().unwrap_or("envoy");
        if text.is_empty() {
            // Envoy's reply to an HTTP/1.1 request without `host`: no body at all.
            return Some(
                format!("HTTP/1.1 {code} Bad Request\r\ncontent-length: 0\r\ndate: {date}\r\nserver: {server}\r\nconnection: close\r\n\r\n")
                    .into_bytes(),
            );
        }
        Some(
            format!(
                "HTTP/1.1 {code} {text}\r\ncontent-length: {}\r\ncontent-type: text/plain\r\ndate: {date}\r\nserver: {server}\r\nconnection: close\r\n\r\n{text}",
                text.len()
            )
            .into_bytes(),
        )
    }
}

/// `GET / HTTP/1.2` or `HTTP/2.0` on an HTTP/1 connection: a version Envoy's codec
/// refuses with 426.
pub fn bad_version(head: &[u8]) -> bool {
    let line_end = head
        .iter()
        .position(|b| *b == b'\r' || *b == b'\n')
        .unwrap_or(head.len());
    let line = &head[..line_end];
    let Some(pos) = line.windows(5).rposition(|w| w == b"HTTP/") else {
        return false;
    };
    let v = &line[pos + 5..];
    v.len() == 3
        && v[1] == b'.'
        && v[0].is_ascii_digit()
        && v[2].is_ascii_digit()
        && v != b"1.0"
        && v != b"1.1"
}

pub fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// A complete HTTP/1.1 head (seen whole in the copy) without a `host` header.
pub fn missing_host(head: &[u8]) -> bool {
    let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = &head[..end];
    let is_11 = head
        .split(|b| *b == b'\n')
        .next()
        .is_some_and(|l| l.ends_with(b"HTTP/1.1\r") || l.ends_with(b"HTTP/1.1"));
    is_11
        && !head
            .split(|b| *b == b'\n')
            .skip(1)
            .any(|l| l.len() >= 5 && l[..5].eq_ignore_ascii_case(b"host:"))
}

/// hyper's own error replies have exactly this shape: a 4xx/5xx status line, then
/// `connection: close`, `content-length: 0`, `date`, and nothing else. Every response the
/// connection manager makes carries other headers (`server` at least), so the shape tells
/// them apart without tracking request state.
pub fn is_codec_error_reply(buf: &[u8]) -> Option<&[u8]> {
    if buf.len() < 12 || !buf.starts_with(b"HTTP/1.1 ") || !(buf[9] == b'4' || buf[9] == b'5') {
        return None;
    }
    let status = &buf[9..12];
    let rest = &buf[buf.iter().position(|b| *b == b'\n')? + 1..];
    let rest = rest.strip_prefix(b"connection: close\r\ncontent-length: 0\r\ndate: ")?;
    let date_end = rest.iter().position(|b| *b == b'\n')?;
    rest[date_end + 1..].starts_with(b"\r\n").then_some(status)
}

impl<T: AsyncWrite + Unpin> DownstreamIo<T> {
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pending_pos < self.pending.len() {
            let n = ready!(
                Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.pending_pos..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending_pos += n;
            self.tx_bytes += n as u64;
        }
        Poll::Ready(Ok(()))
    }

    fn try_replace(
        &mut self,
        first: &[u8],
        total: usize,
        cx: &mut Context<'_>,
    ) -> Option<Poll<io::Result<usize>>> {
        let status = is_codec_error_reply(first)?;
        if self.info.upgraded.load(Ordering::Relaxed) {
            // Tunneled bytes are the peers' own, whatever they look like.
            return None;
        }
        if self.info.closing.load(Ordering::Relaxed) {
            // Already answered and closing: hyper's complaint about the unread rest is dropped.
            return Some(Poll::Ready(Ok(total)));
        }
        let status: [u8; 3] = status.try_into().ok()?;
        let rep = self.replacement(&status)?;
        self.pending = rep;
        self.pending_pos = 0;
        Some(match self.poll_pending(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            // Queued: the rest goes out on the next write/flush/shutdown.
            _ => Poll::Ready(Ok(total)),
        })
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for DownstreamIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let got = &buf.filled()[before..];
            this.rx_bytes += got.len() as u64;
            if !got.is_empty() && this.info.active_requests.load(Ordering::Relaxed) == 0 {
                let n = got.len().min(HEAD_COPY);
                this.head[..n].copy_from_slice(&got[..n]);
                this.head_len = n;
                // Bodies with both framings are refused like Envoy does; only methods that
                // usually carry a body pay for the scan.
                let suspect = !got.starts_with(b"GET ") && !got.starts_with(b"HEAD ") && {
                    let h = &this.head[..n];
                    contains_ci(h, b"\ncontent-length:") && contains_ci(h, b"\ntransfer-encoding:")
                };
                this.info
                    .head_has_cl_and_te
                    .store(suspect, Ordering::Relaxed);
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for DownstreamIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if let Some(r) = this.try_replace(buf, buf.len(), cx) {
            return r;
        }
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            this.tx_bytes += *n as u64;
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            let total = bufs.iter().map(|b| b.len()).sum();
            if let Some(r) = this.try_replace(first, total, cx) {
                return r;
            }
        }
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &r {
            this.tx_bytes += *n as u64;
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<T> Drop for DownstreamIo<T> {
    fn drop(&mut self) {
        // Totals once per connection: no per-write stat traffic.
        let s = &self.hcm.stats;
        s.downstream_cx_rx_bytes_total.add(self.rx_bytes);
        s.downstream_cx_tx_bytes_total.add(self.tx_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_versions() {
        assert!(bad_version(b"GET / HTTP/1.2\r\nhost: a\r\n"));
        assert!(bad_version(b"GET / HTTP/2.0\r\n"));
        assert!(!bad_version(b"GET / HTTP/1.1\r\n"));
        assert!(!bad_version(b"GET / HTTP/1.0\r\n"));
        assert!(!bad_version(b"garbage\r\n"));
    }

    #[test]
    fn host_detection() {
        assert!(missing_host(b"GET / HTTP/1.1\r\nx: y\r\n\r\n"));
        assert!(!missing_host(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(!missing_host(b"GET / HTTP/1.1\r\nx: y\r\n"));
    }

    #[test]
    fn codec_error_detection() {
        let hyper_reply = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Sun, 22 Nov 2026 01:12:21 GMT\r\n\r\n";
        assert_eq!(is_codec_error_reply(hyper_reply), Some(&b"431"[..]));
        let ours = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: Sun, 22 Nov 2026 01:12:21 GMT\r\nserver: envoy\r\n\r\n";
        assert_eq!(is_codec_error_reply(ours), None);
        assert_eq!(is_codec_error_reply(b"HTTP/1.1 200 OK\r\n"), None);
        assert_eq!(is_codec_error_reply(b"\x00\x00\x12\x04"), None);
    }
}
