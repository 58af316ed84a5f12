//! A tiny blocking HTTP/1 client over `TcpStream`, for malformed-input tests.
//!
//! It writes arbitrary bytes and parses whatever comes back: status line, headers and a
//! body delimited by `content-length`, `transfer-encoding: chunked`, or connection close.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A parsed HTTP/1 response.
#[derive(Debug, Clone, Default)]
pub struct RawResponse {
    /// e.g. `HTTP/1.1`.
    pub version: String,
    pub status: u16,
    pub reason: String,
    /// Header names lowercased, values as sent, in order.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked if it was chunked).
    pub body: Vec<u8>,
    /// Interim (1xx) responses seen before this one, by status.
    pub interim: Vec<u16>,
}

impl RawResponse {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Error from [`RawConn::read_response`]: the connection closed or sent something that is not
/// an HTTP/1 response. `received` holds the bytes read for this response.
#[derive(Debug)]
pub struct RawError {
    pub kind: RawErrorKind,
    pub received: Vec<u8>,
}

#[derive(Debug)]
pub enum RawErrorKind {
    /// The peer closed before a complete response head arrived.
    ClosedBeforeResponse,
    /// The peer closed in the middle of the body.
    ClosedInBody,
    /// The bytes are not an HTTP/1 response.
    Malformed(String),
    Io(io::Error),
}

impl std::fmt::Display for RawError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            RawErrorKind::ClosedBeforeResponse => write!(f, "connection closed before a response")?,
            RawErrorKind::ClosedInBody => write!(f, "connection closed in the response body")?,
            RawErrorKind::Malformed(m) => write!(f, "malformed response: {m}")?,
            RawErrorKind::Io(e) => write!(f, "i/o error: {e}")?,
        }
        if !self.received.is_empty() {
            let shown = &self.received[..self.received.len().min(200)];
            write!(
                f,
                " (received {} bytes: {:?})",
                self.received.len(),
                String::from_utf8_lossy(shown)
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for RawError {}

/// A raw connection: write bytes, read responses, see whether the peer closes.
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
    deadline_per_read: Duration,
}

impl RawConn {
    /// Connects to `addr`; every read waits at most `timeout`.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<RawConn> {
        Self::connect_from(None, addr, timeout)
    }

    /// Like [`RawConn::connect`], binding the local side to `source` first when given
    /// (e.g. 127.0.0.2).
    pub fn connect_from(
        source: Option<IpAddr>,
        addr: SocketAddr,
        timeout: Duration,
    ) -> io::Result<RawConn> {
        let stream = match source {
            None => TcpStream::connect_timeout(&addr, timeout)?,
            Some(ip) => {
                // std has no bind-then-connect; use a tokio socket on a throwaway runtime.
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let s = rt.block_on(async {
                    let sock = if ip.is_ipv4() {
                        tokio::net::TcpSocket::new_v4()?
                    } else {
                        tokio::net::TcpSocket::new_v6()?
                    };
                    sock.bind(SocketAddr::new(ip, 0))?;
                    match tokio::time::timeout(timeout, sock.connect(addr)).await {
                        Ok(r) => r,
                        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
                    }
                })?;
                let std = s.into_std()?;
                std.set_nonblocking(false)?;
                std
            }
        };
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(RawConn {
            stream,
            buf: Vec::new(),
            eof: false,
            deadline_per_read: timeout,
        })
    }

    /// Writes all of `bytes`. A peer that already closed may make this fail; callers
    /// that send malformed input usually ignore the error and read the response.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Half-closes the write side (FIN).
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        self.stream.shutdown(std::net::Shutdown::Write)
    }

    fn fill(&mut self) -> io::Result<usize> {
        if self.eof {
            return Ok(0);
        }
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => {
                self.eof = true;
                Ok(0)
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            // A reset after the response counts as the end of the stream.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                self.eof = true;
                Ok(0)
            }
            Err(e) => Err(e),
        }
    }

    /// Reads one response. `head_request` means the request was HEAD (no body follows).
    pub fn read_response(&mut self, head_request: bool) -> Result<RawResponse, RawError> {
        let mut interim = Vec::new();
        loop {
            let mut resp = self.read_one(head_request)?;
            if (100..200).contains(&resp.status) && resp.status != 101 {
                interim.push(resp.status);
                continue;
            }
            resp.interim = interim;
            return Ok(resp);
        }
    }

    fn err(&mut self, kind: RawErrorKind) -> RawError {
        RawError {
            kind,
            received: std::mem::take(&mut self.buf),
        }
    }

    fn read_one(&mut self, head_request: bool) -> Result<RawResponse, RawError> {
        // Head.
        let head_end = loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                break pos + 4;
            }
            if self.buf.len() > 1024 * 1024 {
                return Err(self.err(RawErrorKind::Malformed("head larger than 1 MiB".into())));
            }
            // Reject early if what we have cannot be an HTTP response.
            if self.buf.len() >= 5 && !self.buf.starts_with(b"HTTP/") {
                return Err(self.err(RawErrorKind::Malformed("does not start with HTTP/".into())));
            }
            match self.fill() {
                Ok(0) => return Err(self.err(RawErrorKind::ClosedBeforeResponse)),
                Ok(_) => {}
                Err(e) => return Err(self.err(RawErrorKind::Io(e))),
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end - 4]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_string();
        let status = parts.next().and_then(|s| s.parse::<u16>().ok());
        let reason = parts.next().unwrap_or_default().to_string();
        let Some(status) = status.filter(|_| version.starts_with("HTTP/")) else {
            return Err(self.err(RawErrorKind::Malformed(format!(
                "bad status line {status_line:?}"
            ))));
        };
        let mut headers = Vec::new();
        for line in lines {
            let Some((k, v)) = line.split_once(':') else {
                return Err(self.err(RawErrorKind::Malformed(format!("bad header line {line:?}"))));
            };
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        self.buf.drain(..head_end);

        let mut resp = RawResponse {
            version,
            status,
            reason,
            headers,
            body: Vec::new(),
            interim: Vec::new(),
        };
        if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
            return Ok(resp);
        }
        let chunked = resp
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        if chunked {
            resp.body = self.read_chunked()?;
        } else if let Some(cl) = resp.header("content-length") {
            let Ok(n) = cl.parse::<usize>() else {
                return Err(self.err(RawErrorKind::Malformed(format!(
                    "bad content-length {cl:?}"
                ))));
            };
            while self.buf.len() < n {
                match self.fill() {
                    Ok(0) => return Err(self.err(RawErrorKind::ClosedInBody)),
                    Ok(_) => {}
                    Err(e) => return Err(self.err(RawErrorKind::Io(e))),
                }
            }
            resp.body = self.buf.drain(..n).collect();
        } else {
            loop {
                match self.fill() {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => return Err(self.err(RawErrorKind::Io(e))),
                }
            }
            resp.body = std::mem::take(&mut self.buf);
        }
        Ok(resp)
    }

    fn read_line(&mut self) -> Result<String, RawError> {
        loop {
            if let Some(pos) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..pos + 2).collect();
                return Ok(String::from_utf8_lossy(&line[..pos]).into_owned());
            }
            match self.fill() {
                Ok(0) => return Err(self.err(RawErrorKind::ClosedInBody)),
                Ok(_) => {}
                Err(e) => return Err(self.err(RawErrorKind::Io(e))),
            }
        }
    }

    fn read_chunked(&mut self) -> Result<Vec<u8>, RawError> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line()?;
            let size_str = line.split(';').next().unwrap_or_default().trim();
            let Ok(size) = usize::from_str_radix(size_str, 16) else {
                return Err(self.err(RawErrorKind::Malformed(format!("bad chunk size {line:?}"))));
            };
            if size == 0 {
                // Trailers until an empty line.
                while !self.read_line()?.is_empty() {}
                return Ok(body);
            }
            while self.buf.len() < size + 2 {
                match self.fill() {
                    Ok(0) => return Err(self.err(RawErrorKind::ClosedInBody)),
                    Ok(_) => {}
                    Err(e) => return Err(self.err(RawErrorKind::Io(e))),
                }
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }

    /// Waits up to `timeout` for the peer to close the connection; true if it did. Any bytes
    /// that arrive meanwhile are kept for the next read.
    pub fn wait_closed(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.eof {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let _ = self
                .stream
                .set_read_timeout(Some(left.min(self.deadline_per_read)));
            match self.fill() {
                Ok(_) => {}
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    let _ = self.stream.set_read_timeout(Some(self.deadline_per_read));
                    return self.eof;
                }
                Err(_) => return true,
            }
        }
    }

    /// Bytes received but not consumed by a response.
    pub fn leftover(&self) -> &[u8] {
        &self.buf
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Connects, sends `bytes`, and reads one response.
pub fn send_raw(
    addr: SocketAddr,
    bytes: &[u8],
    timeout: Duration,
) -> Result<RawResponse, RawError> {
    let mut conn = RawConn::connect(addr, timeout).map_err(|e| RawError {
        kind: RawErrorKind::Io(e),
        received: Vec::new(),
    })?;
    // The peer may answer and close before reading everything (e.g. 431): ignore write errors
    // and read what it sent.
    let _ = conn.send(bytes);
    let head = bytes.starts_with(b"HEAD ");
    conn.read_response(head)
}
