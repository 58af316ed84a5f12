//! The Redis health check (`envoy.health_checkers.redis`): `PING` expecting `+PONG`, or with
//! `key`, `EXISTS <key>` expecting `:0` (a set key takes the host out for maintenance).
//! The connection is kept between checks if `reuse_connection`.

use std::net::SocketAddr;

use strait_config::cluster::health::RedisCheck;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Verdict;

pub struct Prober {
    command: Vec<u8>,
    key: bool,
    addr: SocketAddr,
    reuse: bool,
    conn: Option<TcpStream>,
}

/// A RESP array of bulk strings.
pub fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The verdict on one complete RESP reply line; `None` while the line is incomplete.
pub fn judge(reply: &[u8], key: bool) -> Option<Verdict> {
    let end = reply.windows(2).position(|w| w == b"\r\n")?;
    let line = &reply[..end];
    let ok = if key { line == b":0" } else { line == b"+PONG" };
    Some(if ok {
        Verdict::Healthy { degraded: false }
    } else {
        Verdict::Failed {
            retriable: false,
            status: 0,
            immediate: false,
        }
    })
}

impl Prober {
    pub fn new(check: RedisCheck, addr: SocketAddr, reuse: bool) -> Prober {
        let key = !check.key.is_empty();
        let command = if key {
            command(&[b"EXISTS", check.key.as_bytes()])
        } else {
            command(&[b"PING"])
        };
        Prober {
            command,
            key,
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
        if conn.write_all(&self.command).await.is_err() {
            return Verdict::Network;
        }
        let mut buf = Vec::new();
        let mut chunk = [0u8; 512];
        loop {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return Verdict::Network,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if let Some(v) = judge(&buf, self.key) {
                if self.reuse && buf.ends_with(b"\r\n") {
                    self.conn = Some(conn);
                }
                return v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp() {
        assert_eq!(command(&[b"PING"]), b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(
            command(&[b"EXISTS", b"maint"]),
            b"*2\r\n$6\r\nEXISTS\r\n$5\r\nmaint\r\n"
        );
        let healthy = Some(Verdict::Healthy { degraded: false });
        assert_eq!(judge(b"+PONG\r\n", false), healthy);
        assert_eq!(judge(b"+PON", false), None);
        assert!(matches!(
            judge(b"-ERR x\r\n", false),
            Some(Verdict::Failed { .. })
        ));
        assert_eq!(judge(b":0\r\n", true), healthy);
        assert!(matches!(
            judge(b":1\r\n", true),
            Some(Verdict::Failed { .. })
        ));
    }
}
