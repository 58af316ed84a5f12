//! The HTTP health check: `GET <path>` (or the configured method) with Envoy's headers
//! (`host: <host or cluster name>`, `user-agent: Envoy/HC`), over HTTP/1.1 or h2c, keeping the
//! connection between checks unless `reuse_connection` is false or the response closes it.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONNECTION, HOST, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use strait_config::cluster::health::{HeaderAdd, HttpCheck};
use tokio::net::TcpStream;

use super::{Stats, Verdict};

static IMMEDIATE_FAIL: HeaderName = HeaderName::from_static("x-envoy-immediate-health-check-fail");
static DEGRADED: HeaderName = HeaderName::from_static("x-envoy-degraded");
static HEALTHCHECKED_CLUSTER: HeaderName =
    HeaderName::from_static("x-envoy-upstream-healthchecked-cluster");
static ENVOY_HC: HeaderValue = HeaderValue::from_static("Envoy/HC");

/// Bytes of a response body read before giving up on reusing the connection.
const MAX_DRAIN: usize = 64 * 1024;

enum Sender {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>),
}

pub struct Prober {
    check: Arc<HttpCheck>,
    authority: HeaderValue,
    uri: Uri,
    addr: SocketAddr,
    reuse: bool,
    sender: Option<Sender>,
}

impl Prober {
    pub fn new(check: Arc<HttpCheck>, cluster: &str, addr: SocketAddr, reuse: bool) -> Prober {
        let host = if check.host.is_empty() {
            cluster
        } else {
            check.host.as_str()
        };
        let authority =
            HeaderValue::from_str(host).unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        // h2 takes :authority from the URI; HTTP/1.1 sends origin-form and a host header.
        let uri = if check.http2 {
            format!("http://{host}{}", check.path).parse()
        } else {
            check.path.parse()
        }
        .unwrap_or_else(|_| Uri::from_static("/"));
        Prober {
            check,
            authority,
            uri,
            addr,
            reuse,
            sender: None,
        }
    }

    pub fn reset(&mut self) {
        self.sender = None;
    }

    async fn connect(&self) -> Option<Sender> {
        let tcp = TcpStream::connect(self.addr).await.ok()?;
        let _ = tcp.set_nodelay(true);
        let io = TokioIo::new(tcp);
        if self.check.http2 {
            let (s, conn) = http2::Builder::new(TokioExecutor::new())
                .handshake(io)
                .await
                .ok()?;
            tokio::spawn(conn);
            Some(Sender::H2(s))
        } else {
            let (s, conn) = http1::handshake(io).await.ok()?;
            tokio::spawn(conn);
            Some(Sender::H1(s))
        }
    }

    fn request(&self) -> Request<Empty<Bytes>> {
        let mut req = Request::new(Empty::new());
        *req.method_mut() = self.check.method.clone();
        *req.uri_mut() = self.uri.clone();
        let h = req.headers_mut();
        if !self.check.http2 {
            h.insert(HOST, self.authority.clone());
        }
        h.insert(USER_AGENT, ENVOY_HC.clone());
        apply_headers(h, &self.check.headers_to_add, &self.check.headers_to_remove);
        req
    }

    pub async fn probe(&mut self, stats: &Stats) -> Verdict {
        if self.sender.is_none() {
            match self.connect().await {
                Some(s) => self.sender = Some(s),
                None => return Verdict::Network,
            }
        }
        let req = self.request();
        let sent = match self.sender.as_mut() {
            Some(Sender::H1(s)) => match s.ready().await {
                Ok(()) => s.send_request(req).await,
                Err(e) => Err(e),
            },
            Some(Sender::H2(s)) => match s.ready().await {
                Ok(()) => s.send_request(req).await,
                Err(e) => Err(e),
            },
            None => return Verdict::Network,
        };
        let resp = match sent {
            Ok(r) => r,
            Err(_) => {
                self.sender = None;
                return Verdict::Network;
            }
        };
        let (parts, mut body) = resp.into_parts();
        // Read the body to the end so the connection can carry the next check.
        let mut read = 0usize;
        let mut complete = false;
        while read <= MAX_DRAIN {
            match body.frame().await {
                Some(Ok(f)) => read += f.data_ref().map_or(0, |d| d.len()),
                Some(Err(_)) => {
                    self.sender = None;
                    return Verdict::Network;
                }
                None => {
                    complete = true;
                    break;
                }
            }
        }
        let verdict = judge(&self.check, parts.status.as_u16(), &parts.headers, stats);
        let close = !self.reuse
            || !complete
            || parts
                .headers
                .get(CONNECTION)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        if close {
            self.sender = None;
        }
        verdict
    }
}

/// Envoy's HTTP health-check verdict from a response head.
pub fn judge(check: &HttpCheck, status: u16, headers: &HeaderMap, stats: &Stats) -> Verdict {
    if !check.expects(status) {
        return Verdict::Failed {
            retriable: check.retriable(status),
            status,
            immediate: headers.contains_key(&IMMEDIATE_FAIL),
        };
    }
    let degraded = headers.contains_key(&DEGRADED);
    if let Some(m) = &check.service_name_matcher {
        stats.verify_cluster.inc();
        let v = headers
            .get(&HEALTHCHECKED_CLUSTER)
            .map_or(&b""[..], |v| v.as_bytes());
        if !m.matches(v) {
            return Verdict::Failed {
                retriable: false,
                status,
                immediate: false,
            };
        }
    }
    Verdict::Healthy { degraded }
}

/// `request_headers_to_add` / `_to_remove` on a check request.
pub fn apply_headers(
    h: &mut HeaderMap,
    add: &[(HeaderName, HeaderValue, HeaderAdd)],
    remove: &[HeaderName],
) {
    for (n, v, action) in add {
        match action {
            HeaderAdd::Append => {
                h.append(n.clone(), v.clone());
            }
            HeaderAdd::AddIfAbsent => {
                if !h.contains_key(n) {
                    h.insert(n.clone(), v.clone());
                }
            }
            HeaderAdd::OverwriteOrAdd => {
                h.insert(n.clone(), v.clone());
            }
            HeaderAdd::OverwriteIfExists => {
                if h.contains_key(n) {
                    h.insert(n.clone(), v.clone());
                }
            }
        }
    }
    for n in remove {
        h.remove(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(matcher: Option<&str>) -> HttpCheck {
        HttpCheck {
            host: String::new(),
            path: "/healthz".into(),
            method: http::Method::GET,
            expected_statuses: vec![(200, 201)],
            retriable_statuses: vec![(503, 504)],
            http2: false,
            headers_to_add: Vec::new(),
            headers_to_remove: Vec::new(),
            service_name_matcher: matcher.map(|m| {
                strait_config::route::matcher::StringMatch::Exact {
                    value: m.as_bytes().into(),
                    ignore_case: false,
                }
            }),
        }
    }

    #[test]
    fn verdicts() {
        let store = strait_stats::Store::new(1);
        let stats = Stats::new(&store, "c");
        let c = check(None);
        let mut h = HeaderMap::new();
        assert_eq!(
            judge(&c, 200, &h, &stats),
            Verdict::Healthy { degraded: false }
        );
        assert_eq!(
            judge(&c, 500, &h, &stats),
            Verdict::Failed {
                retriable: false,
                status: 500,
                immediate: false
            }
        );
        h.insert(&IMMEDIATE_FAIL, HeaderValue::from_static("true"));
        assert_eq!(
            judge(&c, 503, &h, &stats),
            Verdict::Failed {
                retriable: true,
                status: 503,
                immediate: true
            }
        );
        // The immediate-fail header only counts on a failing status.
        assert_eq!(
            judge(&c, 200, &h, &stats),
            Verdict::Healthy { degraded: false }
        );
        h.insert(&DEGRADED, HeaderValue::from_static("1"));
        assert_eq!(
            judge(&c, 200, &h, &stats),
            Verdict::Healthy { degraded: true }
        );

        let c = check(Some("web"));
        let mut h = HeaderMap::new();
        assert!(matches!(judge(&c, 200, &h, &stats), Verdict::Failed { .. }));
        h.insert(&HEALTHCHECKED_CLUSTER, HeaderValue::from_static("web"));
        assert_eq!(
            judge(&c, 200, &h, &stats),
            Verdict::Healthy { degraded: false }
        );
        assert_eq!(stats.verify_cluster.value(), 2);
    }

    #[test]
    fn header_actions() {
        let mut h = HeaderMap::new();
        h.insert(USER_AGENT, ENVOY_HC.clone());
        let n = |s: &'static str| HeaderName::from_static(s);
        let v = |s: &'static str| HeaderValue::from_static(s);
        apply_headers(
            &mut h,
            &[
                (n("x-a"), v("1"), HeaderAdd::Append),
                (n("x-a"), v("2"), HeaderAdd::Append),
                (n("user-agent"), v("mine"), HeaderAdd::OverwriteOrAdd),
                (n("x-b"), v("b"), HeaderAdd::OverwriteIfExists),
                (n("x-c"), v("c"), HeaderAdd::AddIfAbsent),
                (n("x-c"), v("c2"), HeaderAdd::AddIfAbsent),
            ],
            &[n("x-gone")],
        );
        assert_eq!(h.get_all("x-a").iter().count(), 2);
        assert_eq!(h["user-agent"], "mine");
        assert!(!h.contains_key("x-b"));
        assert_eq!(h["x-c"], "c");
    }
}
