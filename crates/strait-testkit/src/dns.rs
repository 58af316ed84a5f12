//! A tiny authoritative DNS server for tests: UDP on 127.0.0.1, answers A and AAAA queries
//! from a table the test changes at run time, with a TTL the test sets. Unknown names get
//! NXDOMAIN; a known name without records of the asked family gets an empty NOERROR answer.
//! [`TestDns::set_answering`]`(false)` makes it drop queries (the resolver times out).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

#[derive(Default)]
struct State {
    records: HashMap<String, Vec<IpAddr>>,
    ttl: u32,
    silent: bool,
    queries: HashMap<String, u64>,
}

/// A running test DNS server; stops when dropped.
pub struct TestDns {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl TestDns {
    /// Starts the server on an ephemeral UDP port of 127.0.0.1 (TTL 30 s).
    pub fn start() -> io::Result<TestDns> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = sock.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            ttl: 30,
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let thread = thread::Builder::new()
            .name("test-dns".into())
            .spawn(move || serve(sock, st, sp))?;
        Ok(TestDns {
            addr,
            state,
            stop,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Sets the addresses of `name` (A records for IPv4, AAAA for IPv6); empty keeps the
    /// name known with no records.
    pub fn set(&self, name: &str, ips: &[IpAddr]) {
        self.with(|s| s.records.insert(key(name), ips.to_vec()));
    }

    /// Forgets `name`: queries get NXDOMAIN.
    pub fn remove(&self, name: &str) {
        self.with(|s| s.records.remove(&key(name)));
    }

    /// The TTL of every answer from now on.
    pub fn set_ttl(&self, ttl: u32) {
        self.with(|s| s.ttl = ttl);
    }

    /// `false`: queries are read and dropped unanswered.
    pub fn set_answering(&self, answering: bool) {
        self.with(|s| s.silent = !answering);
    }

    /// Queries received for `name` (any type, answered or not).
    pub fn queries(&self, name: &str) -> u64 {
        self.with(|s| s.queries.get(&key(name)).copied().unwrap_or(0))
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(sock: UdpSocket, state: Arc<Mutex<State>>, stop: Arc<AtomicBool>) {
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, peer)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let Some(q) = Query::parse(&buf[..n]) else {
            continue;
        };
        let answer = {
            let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
            *s.queries.entry(key(&q.name)).or_default() += 1;
            if s.silent {
                continue;
            }
            let records = s.records.get(&key(&q.name)).map(|ips| {
                ips.iter()
                    .copied()
                    .filter(|ip| match q.qtype {
                        1 => ip.is_ipv4(),
                        28 => ip.is_ipv6(),
                        _ => false,
                    })
                    .collect::<Vec<_>>()
            });
            q.response(&buf[..n], records.as_deref(), s.ttl)
        };
        let _ = sock.send_to(&answer, peer);
    }
}

/// The one question of a query.
struct Query {
    name: String,
    qtype: u16,
    /// End of the question section in the query.
    question_end: usize,
}

impl Query {
    fn parse(m: &[u8]) -> Option<Query> {
        if m.len() < 12 || u16::from_be_bytes([m[4], m[5]]) != 1 {
            return None;
        }
        let mut i = 12;
        let mut labels = Vec::new();
        loop {
            let len = usize::from(*m.get(i)?);
            i += 1;
            if len == 0 {
                break;
            }
            if len & 0xC0 != 0 {
                return None; // no compression in questions we send ourselves
            }
            labels.push(String::from_utf8_lossy(m.get(i..i + len)?).into_owned());
            i += len;
        }
        let qtype = u16::from_be_bytes([*m.get(i)?, *m.get(i + 1)?]);
        Some(Query {
            name: labels.join("."),
            qtype,
            question_end: i + 4,
        })
    }

    /// NXDOMAIN for an unknown name, else NOERROR with the given records.
    fn response(&self, query: &[u8], records: Option<&[IpAddr]>, ttl: u32) -> Vec<u8> {
        let mut r = Vec::with_capacity(512);
        r.extend_from_slice(&query[..2]); // id
        let rd = query[2] & 0x01;
        r.push(0x80 | 0x04 | rd); // QR, AA, RD copied
        r.push(0x80 | if records.is_none() { 3 } else { 0 }); // RA, rcode
        r.extend_from_slice(&1u16.to_be_bytes());
        let answers = records.unwrap_or(&[]);
        r.extend_from_slice(&(answers.len() as u16).to_be_bytes());
        r.extend_from_slice(&[0, 0, 0, 0]); // no authority, no additional
        r.extend_from_slice(&query[12..self.question_end]);
        for ip in answers {
            r.extend_from_slice(&[0xC0, 12]); // the question's name
            let (t, data): (u16, Vec<u8>) = match ip {
                IpAddr::V4(a) => (1, a.octets().to_vec()),
                IpAddr::V6(a) => (28, a.octets().to_vec()),
            };
            r.extend_from_slice(&t.to_be_bytes());
            r.extend_from_slice(&1u16.to_be_bytes()); // IN
            r.extend_from_slice(&ttl.to_be_bytes());
            r.extend_from_slice(&(data.len() as u16).to_be_bytes());
            r.extend_from_slice(&data);
        }
        r
    }
}
