//! A scriptable HTTP/1.1 test upstream for end-to-end tests: a thread per connection reads
//! each request whole (content-length or chunked body) and a closure decides the answer.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

/// One request as a test upstream read it.
pub struct UpRequest {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl UpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Reads one HTTP/1.1 request (content-length or chunked body); `None` at EOF.
pub fn read_request(r: &mut BufReader<TcpStream>) -> Option<UpRequest> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut words = line.split_whitespace();
    let method = words.next()?.to_string();
    let path = words.next().unwrap_or_default().to_string();
    let mut headers = HashMap::new();
    loop {
        line.clear();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let mut body = Vec::new();
    if let Some(len) = headers.get("content-length") {
        body.resize(len.parse().ok()?, 0);
        r.read_exact(&mut body).ok()?;
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        loop {
            line.clear();
            r.read_line(&mut line).ok()?;
            let n = usize::from_str_radix(line.trim(), 16).ok()?;
            let mut chunk = vec![0u8; n + 2];
            r.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    Some(UpRequest {
        method,
        path,
        headers,
        body,
    })
}

/// A test upstream: a thread per connection, `handle` decides what to do with each request.
pub struct Upstream {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    pub connections: Arc<AtomicUsize>,
}

/// What the upstream does with a request.
pub enum Reply {
    /// Answer with this status and body, keep the connection.
    Answer(u16, String),
    /// Answer after a delay.
    Later(Duration, u16, String),
    /// Close the connection without answering.
    Close,
    /// Answer with `connection: close`, then close the connection.
    AnswerThenClose(u16, String),
}

impl Upstream {
    pub fn start(handle: impl Fn(&UpRequest, usize) -> Reply + Send + Sync + 'static) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let handle = Arc::new(handle);
        let (st, cx) = (stop.clone(), connections.clone());
        thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        cx.fetch_add(1, Ordering::Relaxed);
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_nodelay(true);
                        let handle = handle.clone();
                        thread::spawn(move || serve(s, &*handle));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Upstream {
            addr,
            stop,
            connections,
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub fn serve(s: TcpStream, handle: &(dyn Fn(&UpRequest, usize) -> Reply + Send + Sync)) {
    let Ok(mut w) = s.try_clone() else { return };
    let mut r = BufReader::new(s);
    let mut n = 0;
    while let Some(req) = read_request(&mut r) {
        n += 1;
        let (delay, status, body, close) = match handle(&req, n) {
            Reply::Answer(status, body) => (None, status, body, false),
            Reply::Later(d, status, body) => (Some(d), status, body, false),
            Reply::AnswerThenClose(status, body) => (None, status, body, true),
            Reply::Close => return,
        };
        if let Some(d) = delay {
            thread::sleep(d);
        }
        let connection = if close { "connection: close\r\n" } else { "" };
        let msg = format!(
            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\ncontent-type: text/plain\r\n{connection}\r\n{body}",
            body.len()
        );
        if w.write_all(msg.as_bytes()).is_err() || close {
            return;
        }
    }
}

/// A body whose bytes depend on the request id, so a replayed or mixed-up body shows.
pub fn body_for(id: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + ((id * 7 + i) % 26) as u8).collect()
}

pub fn checksum(b: &[u8]) -> u64 {
    b.iter().enumerate().fold(0u64, |a, (i, c)| {
        a.wrapping_mul(31).wrapping_add(*c as u64 ^ i as u64)
    })
}
