//! The TCP health check: connect, write `send`, pass once every `receive` block has arrived
//! in order. With no `receive` a successful connect passes and the connection is closed (as
//! Envoy does); otherwise the connection is kept for the next check if `reuse_connection`.

use std::net::SocketAddr;

use bytes::Bytes;
use strait_config::cluster::health::TcpCheck;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Verdict;

pub struct Prober {
    check: TcpCheck,
    addr: SocketAddr,
    reuse: bool,
    conn: Option<TcpStream>,
}

impl Prober {
    pub fn new(check: TcpCheck, addr: SocketAddr, reuse: bool) -> Prober {
        Prober {
            check,
            addr,
            reuse,
            conn: None,
        }
    }

    pub fn reset(&mut self) {
        self.conn = None;
    }

    pub async fn probe(&mut self) -> Verdict {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => match TcpStream::connect(self.addr).await {
                Ok(c) => c,
                Err(_) => return Verdict::Network,
            },
        };
        if self.check.receive.is_empty() {
            // A connect test: the connection is closed right away.
            if !self.check.send.is_empty() {
                let _ = conn.write_all(&self.check.send).await;
            }
            return Verdict::Healthy { degraded: false };
        }
        if !self.check.send.is_empty() && conn.write_all(&self.check.send).await.is_err() {
            return Verdict::Network;
        }
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return Verdict::Network,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if payload_matches(&self.check.receive, &buf) {
                if self.reuse {
                    self.conn = Some(conn);
                }
                return Verdict::Healthy { degraded: false };
            }
        }
    }
}

/// Envoy's payload match: each block found in `data` after the previous one.
pub fn payload_matches(blocks: &[Bytes], data: &[u8]) -> bool {
    let mut start = 0;
    for b in blocks {
        if b.is_empty() {
            continue;
        }
        match data
            .get(start..)
            .and_then(|rest| rest.windows(b.len()).position(|w| w == &b[..]))
        {
            Some(i) => start += i + b.len(),
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_match_in_order() {
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        assert!(payload_matches(&[b("PO"), b("NG")], b"+PONG\r\n"));
        assert!(!payload_matches(&[b("NG"), b("PO")], b"+PONG\r\n"));
        assert!(!payload_matches(&[b("PONG")], b"+PON"));
        assert!(payload_matches(&[], b""));
    }
}
