//! The gRPC health check: `grpc.health.v1.Health/Check` over h2c with the configured
//! `service_name`; healthy when the call ends with grpc-status 0 and the response says
//! `SERVING`. The two tiny messages are encoded by hand.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use strait_config::cluster::health::GrpcCheck;
use tokio::net::TcpStream;

use super::Verdict;
use super::http::apply_headers;

/// `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: u64 = 1;

pub struct Prober {
    check: Arc<GrpcCheck>,
    uri: Uri,
    body: Bytes,
    timeout: HeaderValue,
    addr: SocketAddr,
    reuse: bool,
    sender: Option<http2::SendRequest<Full<Bytes>>>,
}

/// `HealthCheckRequest { service }` in a gRPC length-prefixed frame.
pub fn request_frame(service: &str) -> Bytes {
    let mut msg = Vec::new();
    if !service.is_empty() {
        msg.push(0x0a); // field 1, length-delimited
        put_varint(&mut msg, service.len() as u64);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut out = BytesMut::with_capacity(5 + msg.len());
    out.put_u8(0);
    out.put_u32(msg.len() as u32);
    out.extend_from_slice(&msg);
    out.freeze()
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// `HealthCheckResponse.status` from one message (0, UNKNOWN, when absent); `None` when
/// the message is malformed.
pub fn response_status(mut msg: &[u8]) -> Option<u64> {
    let mut status = 0;
    while !msg.is_empty() {
        let (key, n) = varint(msg)?;
        msg = &msg[n..];
        match key & 7 {
            0 => {
                let (v, n) = varint(msg)?;
                msg = &msg[n..];
                if key >> 3 == 1 {
                    status = v;
                }
            }
            1 => msg = msg.get(8..)?,
            2 => {
                let (len, n) = varint(msg)?;
                msg = msg.get(n + len as usize..)?;
            }
            5 => msg = msg.get(4..)?,
            _ => return None,
        }
    }
    Some(status)
}

/// Envoy's `grpc-timeout` form of a duration: milliseconds while they fit in 8 digits.
pub fn grpc_timeout(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 100_000_000 {
        format!("{ms}m")
    } else if d.as_secs() < 100_000_000 {
        format!("{}S", d.as_secs())
    } else {
        format!("{}M", d.as_secs() / 60)
    }
}

fn grpc_status(h: &HeaderMap) -> Option<u32> {
    h.get("grpc-status")?.to_str().ok()?.parse().ok()
}

impl Prober {
    pub fn new(
        check: Arc<GrpcCheck>,
        cluster: &str,
        addr: SocketAddr,
        reuse: bool,
        timeout: Duration,
    ) -> Prober {
        let authority = if check.authority.is_empty() {
            cluster
        } else {
            check.authority.as_str()
        };
        let uri = format!("http://{authority}/grpc.health.v1.Health/Check")
            .parse()
            .unwrap_or_else(|_| Uri::from_static("/grpc.health.v1.Health/Check"));
        Prober {
            body: request_frame(&check.service_name),
            timeout: HeaderValue::from_str(&grpc_timeout(timeout))
                .unwrap_or_else(|_| HeaderValue::from_static("1000m")),
            check,
            uri,
            addr,
            reuse,
            sender: None,
        }
    }

    pub fn reset(&mut self) {
        self.sender = None;
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = self.uri.clone();
        let h = req.headers_mut();
        h.insert("content-type", HeaderValue::from_static("application/grpc"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("user-agent", HeaderValue::from_static("Envoy/HC"));
        apply_headers(h, &self.check.initial_metadata, &[]);
        h.insert("grpc-timeout", self.timeout.clone());
        req
    }

    pub async fn probe(&mut self) -> Verdict {
        if self.sender.is_none() {
            let Ok(tcp) = TcpStream::connect(self.addr).await else {
                return Verdict::Network;
            };
            let _ = tcp.set_nodelay(true);
            let Ok((s, conn)) = http2::Builder::new(TokioExecutor::new())
                .handshake(TokioIo::new(tcp))
                .await
            else {
                return Verdict::Network;
            };
            tokio::spawn(conn);
            self.sender = Some(s);
        }
        let req = self.request();
        let sent = match self.sender.as_mut() {
            Some(s) => match s.ready().await {
                Ok(()) => s.send_request(req).await,
                Err(e) => Err(e),
            },
            None => return Verdict::Network,
        };
        let Ok(resp) = sent else {
            self.sender = None;
            return Verdict::Network;
        };
        let verdict = self.read(resp).await;
        if !self.reuse {
            self.sender = None;
        }
        verdict
    }

    async fn read(&mut self, resp: http::Response<hyper::body::Incoming>) -> Verdict {
        let fail = Verdict::Failed {
            retriable: false,
            status: 0,
            immediate: false,
        };
        let (parts, body) = resp.into_parts();
        if parts.status != http::StatusCode::OK {
            return fail;
        }
        // A trailers-only response carries grpc-status in the head.
        if let Some(s) = grpc_status(&parts.headers) {
            // No message came, so even OK is not SERVING.
            let _ = s;
            return fail;
        }
        let is_grpc = parts
            .headers
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if !is_grpc {
            return fail;
        }
        let Ok(collected) = body.collect().await else {
            self.sender = None;
            return Verdict::Network;
        };
        let status = collected.trailers().and_then(grpc_status);
        let data = collected.to_bytes();
        let serving = data.len() >= 5
            && data[0] == 0
            && u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize == data.len() - 5
            && response_status(&data[5..]) == Some(SERVING);
        if status == Some(0) && serving {
            Verdict::Healthy { degraded: false }
        } else {
            fail
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_statuses() {
        assert_eq!(&request_frame("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &request_frame("ab")[..],
            &[0, 0, 0, 0, 4, 0x0a, 2, b'a', b'b']
        );
        assert_eq!(response_status(&[0x08, 0x01]), Some(SERVING));
        assert_eq!(response_status(&[0x08, 0x02]), Some(2));
        assert_eq!(response_status(&[]), Some(0));
        assert_eq!(response_status(&[0x08]), None);
        // Unknown fields are skipped.
        assert_eq!(
            response_status(&[0x12, 0x01, b'x', 0x08, 0x01]),
            Some(SERVING)
        );
    }

    #[test]
    fn timeouts() {
        assert_eq!(grpc_timeout(Duration::from_secs(1)), "1000m");
        assert_eq!(grpc_timeout(Duration::from_millis(250)), "250m");
        assert_eq!(grpc_timeout(Duration::from_secs(200_000)), "200000S");
    }
}
