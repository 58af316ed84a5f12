//! An HTTP client for tests: HTTP/1.1 or h2c with prior knowledge, one connection per
//! request, built on hyper's connection-level API.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderName, HeaderValue, Method, Request, Uri, Version};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpSocket, TcpStream};

/// A request to send. Build with [`HttpRequest::new`] / [`HttpRequest::get`] and the
/// builder methods, or fill the fields directly.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: String,
    /// Path and query, e.g. `/a?b=c`.
    pub path: String,
    /// Sent in order. A `host` header becomes `:authority` for HTTP/2; for HTTP/1.1 a
    /// `host: <addr>` header is added when none is given.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// h2c with prior knowledge instead of HTTP/1.1.
    pub http2: bool,
    /// Send the body with unknown length (HTTP/1.1: `transfer-encoding: chunked`), split in
    /// two frames.
    pub chunked: bool,
    /// Local address to connect from (e.g. `127.0.0.2`); default: chosen by the OS.
    pub source_ip: Option<IpAddr>,
    /// Whole-request timeout (connect, send, read the full response).
    pub timeout: Duration,
}

impl HttpRequest {
    pub fn new(method: &str, path: &str) -> HttpRequest {
        HttpRequest {
            method: method.to_string(),
            path: path.to_string(),
            headers: Vec::new(),
            body: Bytes::new(),
            http2: false,
            chunked: false,
            source_ip: None,
            timeout: Duration::from_secs(10),
        }
    }

    pub fn get(path: &str) -> HttpRequest {
        Self::new("GET", path)
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    pub fn http2(mut self) -> Self {
        self.http2 = true;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// A complete response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// `HTTP/1.1`, `HTTP/2`, ...
    pub version: String,
    /// Lowercased names, in order (repeated names appear repeatedly).
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub trailers: Vec<(String, String)>,
}

impl HttpResponse {
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

    /// The body parsed as JSON (e.g. the echo server's description of the request).
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// Client failure: connect error, protocol error, reset, or timeout.
#[derive(Debug)]
pub struct ClientError(pub String);

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClientError {}

type ReqBody = UnsyncBoxBody<Bytes, Infallible>;

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "unknown",
    }
}

fn pairs(map: &http::HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn build_request(addr: SocketAddr, req: &HttpRequest) -> Result<Request<ReqBody>, ClientError> {
    let method = Method::from_bytes(req.method.as_bytes())
        .map_err(|e| ClientError(format!("bad method {:?}: {e}", req.method)))?;
    let host = req
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.clone());
    let uri: Uri = if req.http2 {
        let authority = host.clone().unwrap_or_else(|| addr.to_string());
        format!("http://{authority}{}", req.path).parse()
    } else {
        req.path.parse()
    }
    .map_err(|e| ClientError(format!("bad path {:?}: {e}", req.path)))?;

    let body: ReqBody = if req.chunked {
        let mid = req.body.len() / 2;
        let frames = vec![req.body.slice(..mid), req.body.slice(mid..)]
            .into_iter()
            .filter(|b| !b.is_empty())
            .map(|b| Ok::<_, Infallible>(Frame::data(b)));
        StreamBody::new(stream::iter(frames)).boxed_unsync()
    } else {
        Full::new(req.body.clone()).boxed_unsync()
    };
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .version(if req.http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        });
    if !req.http2 && host.is_none() {
        builder = builder.header(http::header::HOST, addr.to_string());
    }
    for (k, v) in &req.headers {
        if req.http2 && k.eq_ignore_ascii_case("host") {
            continue;
        }
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| ClientError(format!("bad header name {k:?}: {e}")))?;
        let value = HeaderValue::from_str(v)
            .map_err(|e| ClientError(format!("bad header value {v:?}: {e}")))?;
        builder = builder.header(name, value);
    }
    builder
        .body(body)
        .map_err(|e| ClientError(format!("building request: {e}")))
}

/// Sends one request on a fresh connection to `addr` and reads the whole response.
pub async fn send(addr: SocketAddr, req: &HttpRequest) -> Result<HttpResponse, ClientError> {
    match tokio::time::timeout(req.timeout, send_inner(addr, req)).await {
        Ok(r) => r,
        Err(_) => Err(ClientError(format!("timed out after {:?}", req.timeout))),
    }
}

async fn send_inner(addr: SocketAddr, req: &HttpRequest) -> Result<HttpResponse, ClientError> {
    let request = build_request(addr, req)?;
    let stream = match req.source_ip {
        None => TcpStream::connect(addr).await,
        Some(ip) => {
            async {
                let sock = if ip.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                sock.bind(SocketAddr::new(ip, 0))?;
                sock.connect(addr).await
            }
            .await
        }
    }
    .map_err(|e| ClientError(format!("connect {addr}: {e}")))?;
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(stream);
    let response = if req.http2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| ClientError(format!("h2 handshake: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        sender.send_request(request).await
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| ClientError(format!("http1 handshake: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        sender.send_request(request).await
    }
    .map_err(|e| ClientError(format!("request failed: {}", error_chain(&e))))?;

    let (parts, body) = response.into_parts();
    let collected = body
        .collect()
        .await
        .map_err(|e| ClientError(format!("reading body: {}", error_chain(&e))))?;
    let trailers = collected.trailers().map(pairs).unwrap_or_default();
    Ok(HttpResponse {
        status: parts.status.as_u16(),
        version: version_str(parts.version).to_string(),
        headers: pairs(&parts.headers),
        body: collected.to_bytes(),
        trailers,
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

/// [`send`] on a throwaway current-thread runtime, for synchronous tests. Do not call from
/// inside a tokio runtime.
pub fn send_blocking(addr: SocketAddr, req: &HttpRequest) -> Result<HttpResponse, ClientError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError(format!("runtime: {e}")))?;
    rt.block_on(send(addr, req))
}
