//! Dedicated upstream connections for upgraded streams (WebSocket and other HTTP/1.1
//! upgrades, terminated CONNECT). An upgraded stream owns its connection until it ends, so
//! these connections never enter the pool: each one is opened for its stream and closed
//! with it.
//!
//! Owns: connecting (with `connect_timeout` and the cluster's connection stats), sending
//! the upgrade request head over HTTP/1.1, and counting the connection's bytes into
//! `upstream_cx_rx_bytes_total` / `upstream_cx_tx_bytes_total` when it closes.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::cluster::Cluster;
use crate::counted::{Counted, OnClose};
use crate::host::Host;
use crate::pool::UpstreamError;

/// A TCP connection to an upstream host, held by one upgraded stream. Counts its bytes
/// and keeps the cluster's and host's active-connection gauges while it lives.
pub type TunnelStream = Counted<TunnelStats>;

/// The gauges and totals of a tunnel's upstream connection.
#[derive(Debug)]
pub struct TunnelStats {
    cluster: Arc<Cluster>,
    host: Arc<Host>,
    opened: Instant,
}

fn tunnel_stream(inner: TcpStream, cluster: &Arc<Cluster>, host: &Arc<Host>) -> TunnelStream {
    cluster.stats.upstream_cx_active.inc();
    host.stats.cx_active.inc();
    Counted::new(
        inner,
        TunnelStats {
            cluster: cluster.clone(),
            host: host.clone(),
            opened: Instant::now(),
        },
    )
}

impl OnClose for TunnelStats {
    fn closed(&mut self, rx: u64, tx: u64) {
        let s = &self.cluster.stats;
        s.upstream_cx_rx_bytes_total.add(rx);
        s.upstream_cx_tx_bytes_total.add(tx);
        s.upstream_cx_active.dec();
        s.upstream_cx_destroy.inc();
        s.upstream_cx_length_ms
            .record(self.opened.elapsed().as_millis() as u64);
        self.host.stats.cx_active.dec();
    }
}

/// Opens a new TCP connection to `host`, bounded by the cluster's `connect_timeout`, with
/// Envoy's connection stats (`upstream_cx_total`, `upstream_cx_connect_fail`,
/// `upstream_cx_connect_timeout`, `upstream_cx_connect_ms`).
pub async fn connect(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
) -> Result<TunnelStream, UpstreamError> {
    let started = Instant::now();
    let r = tokio::time::timeout(
        cluster.spec.connect_timeout,
        TcpStream::connect(host.address),
    )
    .await;
    cluster.stats.upstream_cx_total.inc();
    host.stats.cx_total.inc();
    let stream = match r {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            cluster.stats.upstream_cx_connect_fail.inc();
            host.stats.cx_connect_fail.inc();
            return Err(UpstreamError::ConnectFailure(e));
        }
        Err(_) => {
            cluster.stats.upstream_cx_connect_fail.inc();
            cluster.stats.upstream_cx_connect_timeout.inc();
            host.stats.cx_connect_fail.inc();
            return Err(UpstreamError::ConnectTimeout);
        }
    };
    let _ = stream.set_nodelay(true);
    cluster
        .stats
        .upstream_cx_connect_ms
        .record(started.elapsed().as_millis() as u64);
    Ok(tunnel_stream(stream, cluster, host))
}

/// Sends an upgrade request head (no body: the payload follows the upgrade) over a new
/// HTTP/1.1 connection to `host`. The response is the upstream's answer; on a `101` (or a
/// 2xx to CONNECT), `hyper::upgrade::on(response)` yields the connection to tunnel over.
/// Any other answer closes the connection when the response is dropped.
pub async fn send_upgrade(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
    req: Request<Empty<Bytes>>,
) -> Result<Response<Incoming>, UpstreamError> {
    let stream = connect(cluster, host).await?;
    let (mut tx, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(UpstreamError::Reset)?;
    cluster.stats.upstream_cx_http1_total.inc();
    // The connection task ends when the upgrade hands the socket over (or it closes).
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    cluster.stats.upstream_rq_total.inc();
    host.stats.rq_total.inc();
    tx.send_request(req).await.map_err(|e| {
        if e.is_parse() || e.is_parse_status() {
            cluster.stats.upstream_cx_protocol_error.inc();
            UpstreamError::Protocol(e)
        } else {
            UpstreamError::Reset(e)
        }
    })
}
