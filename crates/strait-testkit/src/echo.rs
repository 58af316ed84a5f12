//! The echo upstream used by tests: HTTP/1.1 and h2c (prior knowledge) on one port.
//!
//! Default answer: `200` with a JSON body describing the request
//! (`{"name","method","path","version","headers":[[name,value],..],"body_len"}`) and the
//! response header `x-echo-name`. The request body is always read to the end and counted
//! without buffering. Special paths (matched on the path, query ignored unless stated):
//!
//! * `/delay/<ms>`: wait `ms` milliseconds, then answer as usual.
//! * `/bytes/<n>`: answer with `n` bytes (`content-length: n`), streamed in 16 KiB chunks.
//! * `/status/<code>?k=v`: answer with that status (and the query's pairs as headers).
//! * `/drip/<n>/<ms>`: answer at once, then `n` chunks of `ab\n`, `ms` milliseconds apart.
//! * `/close`: close the connection (HTTP/1) or reset the stream (HTTP/2) without answering.
//! * `/headers?k=v&k2=v2`: add the query pairs as response headers (percent-decoded).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Version};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

type EchoBody = UnsyncBoxBody<Bytes, Infallible>;

/// Error returned by the service for `/close`: hyper then drops the connection (HTTP/1) or
/// resets the stream (HTTP/2) without a response.
#[derive(Debug)]
struct CloseRequested;

impl std::fmt::Display for CloseRequested {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("close requested by /close")
    }
}

impl std::error::Error for CloseRequested {}

/// Constructors for the in-process echo server.
pub struct EchoServer;

/// A running in-process echo server; dropping it (or [`EchoHandle::shutdown`]) stops the
/// listener and every open connection.
pub struct EchoHandle {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl EchoHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and waits until every connection task has ended.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for EchoHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl EchoServer {
    /// Starts an echo server named `echo` on a free 127.0.0.1 port in the current tokio
    /// runtime.
    pub async fn start() -> io::Result<(SocketAddr, EchoHandle)> {
        Self::start_named("echo", "127.0.0.1:0".parse().expect("addr")).await
    }

    /// Starts an echo server with the given name on `addr` (port 0 picks a free port) in the
    /// current tokio runtime.
    pub async fn start_named(name: &str, addr: SocketAddr) -> io::Result<(SocketAddr, EchoHandle)> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel();
        let name: Arc<str> = Arc::from(name);
        let task = tokio::spawn(serve(listener, name, async {
            let _ = rx.await;
        }));
        Ok((
            addr,
            EchoHandle {
                addr,
                shutdown: Some(tx),
                task: Some(task),
            },
        ))
    }

    /// Starts an echo server on its own thread and runtime, for synchronous tests.
    pub fn start_background(name: &str) -> io::Result<BackgroundEcho> {
        BackgroundEcho::start(name, "127.0.0.1:0".parse().expect("addr"))
    }
}

/// An echo server running on a dedicated thread with its own tokio runtime; stopped on drop.
pub struct BackgroundEcho {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BackgroundEcho {
    pub fn start(name: &str, addr: SocketAddr) -> io::Result<BackgroundEcho> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let name: Arc<str> = Arc::from(name);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("strait-echo")
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name(format!("echo-{name}"))
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            eprintln!("strait-echo: {e}");
                            return;
                        }
                    };
                    serve(listener, name, async {
                        let _ = rx.await;
                    })
                    .await;
                });
                rt.shutdown_background();
            })?;
        Ok(BackgroundEcho {
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for BackgroundEcho {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Accepts connections on `listener` until `shutdown` completes; every connection is served
/// by hyper-util's auto builder (HTTP/1.1 or h2c prior knowledge). When this future ends or is
/// dropped, all connection tasks are aborted.
pub async fn serve(listener: TcpListener, name: Arc<str>, shutdown: impl Future<Output = ()>) {
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(x) => x,
                    Err(_) => {
                        // e.g. EMFILE: back off briefly instead of spinning.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let name = name.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req| handle(req, name.clone()));
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.shutdown().await;
}

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

fn full(body: impl Into<Bytes>) -> EchoBody {
    Full::new(body.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

async fn handle(
    req: Request<Incoming>,
    name: Arc<str>,
) -> Result<Response<EchoBody>, CloseRequested> {
    let (parts, mut body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());

    let mut headers: Vec<serde_json::Value> = Vec::new();
    if parts.version == Version::HTTP_2
        && !parts.headers.contains_key(http::header::HOST)
        && let Some(authority) = parts.uri.authority()
    {
        headers.push(serde_json::json!(["host", authority.as_str()]));
    }
    for (k, v) in &parts.headers {
        headers.push(serde_json::json!([
            k.as_str(),
            String::from_utf8_lossy(v.as_bytes())
        ]));
    }

    // Count the request body as it streams in; never buffer it.
    let mut body_len: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    body_len += data.len() as u64;
                }
            }
            Err(_) => break,
        }
    }

    let uri_path = parts.uri.path();
    let mut status = StatusCode::OK;
    let mut extra_headers: Vec<(String, String)> = Vec::new();
    if uri_path == "/close" {
        return Err(CloseRequested);
    } else if let Some(code) = uri_path.strip_prefix("/status/") {
        // `?k=v` adds response headers here too (a 302 with a `location`).
        extra_headers = parts.uri.query().map(parse_query).unwrap_or_default();
        status = code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .filter(|c| c.as_u16() >= 200)
            .unwrap_or(StatusCode::BAD_REQUEST);
    } else if let Some(ms) = uri_path.strip_prefix("/delay/") {
        let ms = ms.parse::<u64>().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    } else if let Some(n) = uri_path.strip_prefix("/bytes/") {
        let n = n.parse::<u64>().unwrap_or(0);
        return Ok(bytes_response(&name, n));
    } else if let Some(rest) = uri_path.strip_prefix("/drip/") {
        let (n, ms) = rest.split_once('/').unwrap_or((rest, "0"));
        return Ok(drip_response(
            &name,
            n.parse().unwrap_or(0),
            Duration::from_millis(ms.parse().unwrap_or(0)),
        ));
    } else if (uri_path == "/headers" || uri_path.starts_with("/headers/"))
        && let Some(q) = parts.uri.query()
    {
        extra_headers = parse_query(q);
    }

    let json = serde_json::json!({
        "name": &*name,
        "method": parts.method.as_str(),
        "path": path,
        "version": version_str(parts.version),
        "headers": headers,
        "body_len": body_len,
    });
    let mut resp = Response::new(full(json.to_string()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&name) {
        h.insert("x-echo-name", v);
    }
    for (k, v) in extra_headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(&v),
        ) {
            h.append(k, v);
        }
    }
    Ok(resp)
}

fn bytes_response(name: &str, n: u64) -> Response<EchoBody> {
    const CHUNK: u64 = 16 * 1024;
    let chunk = Bytes::from(vec![b'x'; CHUNK as usize]);
    let s = stream::unfold(n, move |remaining| {
        let chunk = chunk.clone();
        async move {
            if remaining == 0 {
                return None;
            }
            let take = remaining.min(CHUNK);
            let frame = Frame::data(chunk.slice(..take as usize));
            Some((Ok::<_, Infallible>(frame), remaining - take))
        }
    });
    let mut resp = Response::new(StreamBody::new(s).boxed_unsync());
    let h = resp.headers_mut();
    h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(name) {
        h.insert("x-echo-name", v);
    }
    resp
}

/// `n` chunks of "ab\n" (chunked, no length), the first at once, each next after `gap`.
fn drip_response(name: &str, n: u64, gap: Duration) -> Response<EchoBody> {
    let s = stream::unfold(0u64, move |i| async move {
        if i == n {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        Some((
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"ab\n"))),
            i + 1,
        ))
    });
    let mut resp = Response::new(StreamBody::new(s).boxed_unsync());
    if let Ok(v) = HeaderValue::from_str(name) {
        resp.headers_mut().insert("x-echo-name", v);
    }
    resp
}

/// Splits `a=b&c=d` into percent-decoded pairs (`+` is a space).
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        assert_eq!(
            parse_query("a=b&x-y=hello+world&z=%41%2f&bad=%zz&t=%4"),
            vec![
                ("a".into(), "b".into()),
                ("x-y".into(), "hello world".into()),
                ("z".into(), "A/".into()),
                ("bad".into(), "%zz".into()),
                ("t".into(), "%4".into()),
            ]
        );
    }
}
