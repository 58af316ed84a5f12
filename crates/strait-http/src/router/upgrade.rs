//! Upgraded streams, Envoy 1.40's way: WebSocket (and any other `Upgrade:` type) and
//! CONNECT.
//!
//! The connection manager asks [`detect`] first (before hop-by-hop headers are dropped):
//! an HTTP/1.1 request with `connection: upgrade` and an `upgrade` header, an HTTP/1.1 or
//! HTTP/2 CONNECT, or an HTTP/2 extended CONNECT (RFC 8441, `:protocol`), which is turned
//! into the HTTP/1.1 form Envoy uses internally (`GET` + `upgrade: <protocol>` +
//! `connection: upgrade`). After route selection [`allowed`] applies the connection
//! manager's and the route's `upgrade_configs`; a refused upgrade gets Envoy's 403
//! (`upgrade_failed`). [`forward`] then sends the request head on a dedicated HTTP/1.1
//! connection (or, for a route whose CONNECT `connect_config` is set, opens TCP to the host
//! and answers 200 itself), passes the `101` down, and tunnels bytes both ways on a task of
//! its own until either side closes or the stream idle timeout fires. The access log of an
//! upgraded stream is written when the tunnel ends, with the tunneled bytes as
//! `%BYTES_RECEIVED%` / `%BYTES_SENT%`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::Empty;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use strait_accesslog::ResponseFlag;
use strait_config::route::RouteAction;
use strait_config::route::upgrade::{self as cfg, UpgradeEntry};
use strait_upstream::cluster::RqOrigin;
use strait_upstream::{LbContext, StreamCounters, UpstreamError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Target;
use super::upstream::{Failure, FailureKind, failure_reply};
use crate::body::ResponseBody;
use crate::conn::ConnInfo;
use crate::finish::{Finish, UpstreamInfo};
use crate::hcm::HttpConnectionManager;
use crate::local_reply::local_reply_with;

/// A request that asks for an upgraded stream.
pub struct UpgradeRequest {
    /// The upgrade type as the request names it (`websocket`, ...), `CONNECT` for CONNECT.
    pub upgrade_type: String,
    /// A CONNECT request (not an extended CONNECT, which is an upgrade).
    pub connect: bool,
    /// The downstream speaks HTTP/2: success is `200`, not `101`.
    pub h2: bool,
    /// The downstream connection (HTTP/1.1) or stream (HTTP/2), once upgraded.
    on_upgrade: OnUpgrade,
    /// The request's `connection` and `upgrade` headers, forwarded verbatim (Envoy keeps
    /// them on upgrade requests).
    connection: Option<HeaderValue>,
    upgrade: Option<HeaderValue>,
}

/// `connection` lists the `upgrade` token.
fn connection_has_upgrade(h: &HeaderMap) -> bool {
    h.get_all(header::CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
    })
}

/// Recognises an upgrade or CONNECT request and takes what the upgrade needs from it.
/// An HTTP/2 extended CONNECT becomes `GET` (Envoy's normalised form, also what its access
/// log and route matching see). `upgrade: h2c` is not an upgrade Strait proxies (Envoy
/// drops it and forwards a plain request).
pub fn detect<B>(req: &mut Request<B>) -> Option<UpgradeRequest> {
    let h2 = req.version() == Version::HTTP_2;
    if req.method() == Method::CONNECT {
        let protocol = req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .map(|p| p.as_str().to_string());
        let on_upgrade = hyper::upgrade::on(&mut *req);
        return Some(match protocol {
            Some(p) => {
                *req.method_mut() = Method::GET;
                UpgradeRequest {
                    upgrade: HeaderValue::from_str(&p).ok(),
                    upgrade_type: p,
                    connect: false,
                    h2,
                    on_upgrade,
                    connection: Some(HeaderValue::from_static("upgrade")),
                }
            }
            None => UpgradeRequest {
                upgrade_type: "CONNECT".into(),
                connect: true,
                h2,
                on_upgrade,
                connection: None,
                upgrade: None,
            },
        });
    }
    if h2 || !connection_has_upgrade(req.headers()) {
        return None;
    }
    let upgrade = req.headers().get(header::UPGRADE)?.clone();
    if upgrade.as_bytes().eq_ignore_ascii_case(b"h2c") {
        return None;
    }
    let upgrade_type = String::from_utf8_lossy(upgrade.as_bytes()).into_owned();
    Some(UpgradeRequest {
        upgrade_type,
        connect: false,
        h2,
        on_upgrade: hyper::upgrade::on(&mut *req),
        connection: req.headers().get(header::CONNECTION).cloned(),
        upgrade: Some(upgrade),
    })
}

impl UpgradeRequest {
    /// Puts the upgrade headers back after the connection manager dropped the hop-by-hop
    /// ones.
    pub fn restore_headers(&self, h: &mut HeaderMap) {
        if self.h2 {
            // Envoy's HTTP/1.1 form of an extended CONNECT: `upgrade` then `connection`.
            if let Some(u) = &self.upgrade {
                h.insert(header::UPGRADE, u.clone());
            }
            if let Some(c) = &self.connection {
                h.insert(header::CONNECTION, c.clone());
            }
            return;
        }
        if let Some(c) = &self.connection {
            h.insert(header::CONNECTION, c.clone());
        }
        if let Some(u) = &self.upgrade {
            h.insert(header::UPGRADE, u.clone());
        }
    }
}

/// The route's `upgrade_configs`, for a route that forwards to a cluster.
pub fn route_upgrades(action: &RouteAction) -> Option<&[UpgradeEntry]> {
    match action {
        RouteAction::Cluster(a) => Some(&a.forward.upgrades),
        RouteAction::ClusterHeader(ch) => Some(&ch.action.forward.upgrades),
        RouteAction::Weighted(w) => w.entries.first().map(|e| &*e.action.forward.upgrades),
        _ => None,
    }
}

/// Whether the connection manager and the matched route allow this upgrade (Envoy's table:
/// the route's entry for the type decides, else the connection manager's; none: refused).
/// Routes that do not forward (direct responses, redirects) leave it to the connection
/// manager.
pub fn allowed(hcm: &HttpConnectionManager, action: &RouteAction, up: &UpgradeRequest) -> bool {
    cfg::allowed(&hcm.spec.upgrades, route_upgrades(action), &up.upgrade_type)
}

/// Envoy's answer to a refused upgrade: 403, empty body, `connection: close`, details
/// `upgrade_failed`.
pub fn refuse(
    hcm: &HttpConnectionManager,
    conn: &ConnInfo,
    finish: Finish,
) -> Response<ResponseBody> {
    hcm.stats.downstream_rq_ws_on_non_ws_route.inc();
    conn.closing.store(true, Ordering::Relaxed);
    local_reply_with(hcm, 403, None, Some(finish), "upgrade_failed", true)
}

/// Marks a reply to an upgrade or CONNECT that did not happen `connection: close`, as Envoy
/// does: the connection ends with it.
pub fn close_after(mut resp: Response<ResponseBody>, conn: &ConnInfo) -> Response<ResponseBody> {
    conn.closing.store(true, Ordering::Relaxed);
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Keeps `downstream_cx_upgrades_active` right for the life of an upgraded stream.
struct ActiveUpgrade(Arc<HttpConnectionManager>);

impl ActiveUpgrade {
    fn new(hcm: Arc<HttpConnectionManager>) -> Self {
        hcm.stats.downstream_cx_upgrades_total.inc();
        hcm.stats.downstream_cx_upgrades_active.inc();
        ActiveUpgrade(hcm)
    }
}

impl Drop for ActiveUpgrade {
    fn drop(&mut self) {
        self.0.stats.downstream_cx_upgrades_active.dec();
    }
}

/// Forwards an allowed upgrade or CONNECT request; the route's header rules were applied
/// (`route_request`). Returns the downstream response; on success the tunnel runs on its
/// own task and writes the access log when it ends.
pub async fn forward<B>(
    hcm: &Arc<HttpConnectionManager>,
    req: Request<B>,
    target: Target<'_>,
    conn: &Arc<ConnInfo>,
    mut finish: Finish,
    up: UpgradeRequest,
) -> Response<ResponseBody> {
    let active = ActiveUpgrade::new(hcm.clone());
    let (mut parts, _body) = req.into_parts();
    let request_id = super::request::prepare(hcm, &mut parts, &target, conn, &mut finish);
    let cluster = target.cluster.clone();
    let hashed = super::request_hash(&target, &parts, conn);
    let host = cluster.choose_host(&LbContext {
        hash: hashed.hash,
        attempted: &[],
        host_selection_retry_max_attempts: 0,
        metadata_match: target.action.metadata_match.as_deref(),
        selection_attempt: 0,
        original_dst: cluster.original_dst(&parts.headers, None),
    });
    let fail = |kind| Failure {
        kind,
        attempts: 1,
        attempt_count_header: false,
    };
    let Some(host) = host else {
        cluster.stats.upstream_cx_none_healthy.inc();
        let resp = failure_reply(
            hcm,
            &target,
            fail(FailureKind::NoHealthyUpstream),
            request_id,
            finish,
        );
        return close_after(resp, conn);
    };
    let counters = Arc::new(StreamCounters::default());
    counters.next_attempt();
    finish.counters = Some(counters.clone());
    cluster.stats.upstream_rq_active.inc();
    host.request_started();
    finish.upstream = Some(UpstreamInfo {
        cluster: cluster.clone(),
        host: host.clone(),
        started: Instant::now(),
        active: true,
    });
    finish.internal_request = RqOrigin::is_internal(&parts.headers);
    let origin = RqOrigin {
        internal: finish.internal_request,
        canary: host.canary,
    };
    let idle = match target.action.retry.as_deref().and_then(|p| p.stream.idle) {
        Some(route) => route,
        None => hcm.spec.stream_idle_timeout,
    };
    let tunnel = Tunnel {
        hcm: hcm.clone(),
        conn: conn.clone(),
        finish,
        counters,
        idle,
        _active: active,
    };

    if up.connect && cfg::terminates_connect(&target.action.forward.upgrades) {
        // The router terminates CONNECT: TCP to the host, then 200 from Strait itself.
        return match strait_upstream::upgrade::connect(&cluster, &host).await {
            Ok(stream) => {
                cluster.stats.upstream_rq_total.inc();
                host.stats.rq_total.inc();
                let mut resp = Response::new(ResponseBody::full(None, None));
                hcm.apply_server_header(resp.headers_mut());
                tunnel.start(resp, 200, up.on_upgrade, Upstream::Tcp(stream))
            }
            Err(error) => {
                let Tunnel { finish, .. } = tunnel;
                let resp = failure_reply(
                    hcm,
                    &target,
                    fail(upstream_failure(error)),
                    request_id,
                    finish,
                );
                close_after(resp, conn)
            }
        };
    }

    // An upgrade (or a CONNECT forwarded as such): the request head on a connection of its
    // own, always HTTP/1.1.
    let mut head = Request::new(Empty::<Bytes>::new());
    *head.method_mut() = parts.method.clone();
    *head.version_mut() = Version::HTTP_11;
    *head.uri_mut() = if up.connect {
        Uri::try_from(target.authority).unwrap_or_default()
    } else {
        parts
            .uri
            .path_and_query()
            .map(|p| Uri::from(p.clone()))
            .unwrap_or_else(|| Uri::from_static("/"))
    };
    let mut headers = parts.headers;
    if !headers.contains_key(header::HOST)
        && let Ok(v) = HeaderValue::from_str(target.authority)
    {
        headers.insert(header::HOST, v);
    }
    headers.remove(header::CONTENT_LENGTH);
    *head.headers_mut() = headers;
    let response = match strait_upstream::upgrade::send_upgrade(&cluster, &host, head).await {
        Ok(r) => r,
        Err(error) => {
            let Tunnel { finish, .. } = tunnel;
            let resp = failure_reply(
                hcm,
                &target,
                fail(upstream_failure(error)),
                request_id,
                finish,
            );
            return close_after(resp, conn);
        }
    };
    let status = response.status().as_u16();
    cluster.stats.record_status(status, origin);
    strait_upstream::outlier::report(
        &cluster,
        &host,
        strait_upstream::outlier::Outcome::ConnectSuccess,
    );
    strait_upstream::outlier::report(
        &cluster,
        &host,
        strait_upstream::outlier::Outcome::Status(status),
    );
    let upgraded = if up.connect {
        (200..300).contains(&status)
    } else {
        status == 101
    };
    if !upgraded {
        // Envoy: the upstream refused the handshake; a local reply with its status and
        // headers but no body (`content-length: 0`, no `content-type`), `connection: close`,
        // details `websocket_handshake_unsuccessful`.
        let Tunnel { finish, .. } = tunnel;
        conn.closing.store(true, Ordering::Relaxed);
        let mut resp = local_reply_with(
            hcm,
            status,
            None,
            Some(finish),
            "websocket_handshake_unsuccessful",
            true,
        );
        let out = resp.headers_mut();
        for (name, value) in response.headers() {
            let skip = [
                header::CONTENT_TYPE,
                header::CONTENT_LENGTH,
                header::TRANSFER_ENCODING,
                header::CONNECTION,
                header::UPGRADE,
                header::DATE,
                header::SERVER,
            ]
            .contains(name)
                || *name == crate::headers::KEEP_ALIVE
                || *name == crate::headers::PROXY_CONNECTION;
            if !skip {
                out.append(name.clone(), value.clone());
            }
        }
        return resp;
    }
    let mut response = response;
    let upstream_upgrade = hyper::upgrade::on(&mut response);
    let (mut rparts, _) = response.into_parts();
    let h = &mut rparts.headers;
    h.remove(&crate::headers::KEEP_ALIVE);
    h.remove(&crate::headers::PROXY_CONNECTION);
    if up.h2 {
        h.remove(header::CONNECTION);
        h.remove(header::UPGRADE);
    }
    h.remove(header::CONTENT_LENGTH);
    h.remove(header::TRANSFER_ENCODING);
    hcm.apply_server_header(h);
    if let Some(via) = &hcm.via {
        h.append(header::VIA, via.clone());
    }
    let mut resp = Response::new(ResponseBody::full(None, None));
    *resp.status_mut() = if up.h2 { StatusCode::OK } else { rparts.status };
    *resp.headers_mut() = rparts.headers;
    tunnel.start(
        resp,
        status,
        up.on_upgrade,
        Upstream::Http(upstream_upgrade),
    )
}

fn upstream_failure(error: UpstreamError) -> FailureKind {
    FailureKind::Upstream {
        error,
        retried: false,
    }
}

/// The upstream side of a tunnel.
enum Upstream {
    Tcp(strait_upstream::upgrade::TunnelStream),
    /// The upstream's `101`: its connection once hyper hands it over.
    Http(OnUpgrade),
}

/// An upgraded stream's state until its tunnel ends.
struct Tunnel {
    hcm: Arc<HttpConnectionManager>,
    conn: Arc<ConnInfo>,
    finish: Finish,
    counters: Arc<StreamCounters>,
    idle: Option<Duration>,
    _active: ActiveUpgrade,
}

/// How a tunnel ended, with Envoy's response flag and details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Both sides ended their halves (HTTP/2 CONNECT only).
    Complete,
    Downstream,
    Upstream,
    Idle,
}

impl Tunnel {
    /// Sends `resp` down and runs the tunnel once both sides are handed over. `status` is
    /// what the access log records (the upstream's: 101 also when HTTP/2 downstream gets 200).
    fn start(
        mut self,
        resp: Response<ResponseBody>,
        status: u16,
        downstream: OnUpgrade,
        upstream: Upstream,
    ) -> Response<ResponseBody> {
        self.finish.details = "via_upstream";
        self.finish.on_response_headers(status, resp.headers());
        if self.finish.protocol != "HTTP/2" {
            // The HTTP/1.1 connection now belongs to the tunnel: the connection waits for it.
            self.conn.upgraded.store(true, Ordering::Relaxed);
        }
        tokio::spawn(self.run(downstream, upstream));
        resp
    }

    async fn run(mut self, downstream: OnUpgrade, upstream: Upstream) {
        let conn = self.conn.clone();
        // An HTTP/2 stream's END_STREAM half-closes a terminated CONNECT's TCP connection;
        // everywhere else Envoy closes both sides when one ends.
        let half_close = self.finish.protocol == "HTTP/2" && matches!(upstream, Upstream::Tcp(_));
        let up = match upstream {
            Upstream::Tcp(s) => Ok(Box::new(s) as Box<dyn Io>),
            Upstream::Http(on) => on.await.map(|u| Box::new(TokioIo::new(u)) as Box<dyn Io>),
        };
        match (downstream.await, up) {
            (Ok(down), Ok(up)) => {
                let end = self.pump(TokioIo::new(down), up, half_close).await;
                match end {
                    End::Complete => {
                        self.finish.completed = true;
                    }
                    End::Downstream => {
                        self.finish.details = "downstream_remote_disconnect";
                    }
                    End::Upstream => {
                        self.finish.completed = true;
                        self.finish
                            .flags
                            .insert(ResponseFlag::UpstreamConnectionTermination);
                        self.finish.details =
                            "upstream_reset_after_response_started{connection_termination}";
                    }
                    End::Idle => {
                        self.finish.completed = true;
                        self.finish.flags.insert(ResponseFlag::StreamIdleTimeout);
                        self.finish.details = "stream_idle_timeout";
                        self.hcm.stats.downstream_rq_idle_timeout.inc();
                    }
                }
            }
            (Err(_), _) => {
                self.finish.details = "downstream_remote_disconnect";
            }
            (_, Err(_)) => {
                self.finish.completed = true;
                self.finish
                    .flags
                    .insert(ResponseFlag::UpstreamConnectionTermination);
                self.finish.details =
                    "upstream_reset_after_response_started{connection_termination}";
            }
        }
        let finished = conn.upgraded.load(Ordering::Relaxed);
        drop(self);
        if finished {
            conn.tunnel_done.notify_one();
        }
    }

    /// Copies both ways until one side closes (Envoy then closes the other: no half-close
    /// on upgraded HTTP/1.1 streams) or nothing moves for the idle timeout.
    async fn pump<D: Io, U: Io>(&mut self, down: D, up: U, half_close: bool) -> End {
        let (mut dr, mut dw) = tokio::io::split(down);
        let (mut ur, mut uw) = tokio::io::split(up);
        let rx = &self.counters.bytes_received;
        let tx = AtomicU64::new(0);
        let start = Instant::now();
        let last = AtomicU64::new(0);
        let end = {
            let to_up = async {
                let r = copy_half(&mut dr, &mut uw, rx, &last, start).await;
                if r.is_ok() && half_close {
                    let _ = uw.shutdown().await;
                    return None;
                }
                Some(r)
            };
            let to_down = copy_half(&mut ur, &mut dw, &tx, &last, start);
            let idle = async {
                let Some(idle) = self.idle else {
                    return std::future::pending().await;
                };
                loop {
                    let at = start + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
                    if at <= Instant::now() {
                        return;
                    }
                    tokio::time::sleep_until(at.into()).await;
                }
            };
            tokio::pin!(to_up, to_down, idle);
            let mut down_done = false;
            loop {
                tokio::select! {
                    r = &mut to_up, if !down_done => match r {
                        Some(Ok(())) => break End::Downstream,
                        Some(Err(())) => break End::Upstream,
                        None => down_done = true,
                    },
                    r = &mut to_down => break match (r, down_done) {
                        (Ok(()), true) => End::Complete,
                        (Ok(()), false) => End::Upstream,
                        (Err(()), _) => End::Downstream,
                    },
                    _ = &mut idle => break End::Idle,
                }
            }
        };
        if matches!(end, End::Upstream | End::Complete) {
            // What the upstream sent before closing is down; close the downstream cleanly.
            let _ = dw.shutdown().await;
        }
        self.finish.bytes_sent = tx.load(Ordering::Relaxed);
        end
    }
}

/// A byte stream a tunnel copies from and to.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Copies `from` to `to` until `from` ends or either fails, counting bytes into `count` and
/// marking activity (ms since `start`) in `last`. `Err`: writing to `to` failed (that side
/// is gone); `Ok`: `from` ended or failed.
async fn copy_half<R, W>(
    from: &mut R,
    to: &mut W,
    count: &AtomicU64,
    last: &AtomicU64,
    start: Instant,
) -> Result<(), ()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return Ok(()),
            Ok(n) => n,
        };
        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        if to.write_all(&buf[..n]).await.is_err() || to.flush().await.is_err() {
            return Err(());
        }
        count.fetch_add(n as u64, Ordering::Relaxed);
        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}
