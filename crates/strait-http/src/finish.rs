//! The end of a request: stats and access logs, written once when the response stream
//! finishes or is abandoned (`Drop`), so no path can forget them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::HeaderMap;
use strait_accesslog::{LogContext, ResponseFlag, ResponseFlags};
use strait_upstream::{Cluster, Host, StreamCounters};

use crate::conn::ConnInfo;
use crate::hcm::HttpConnectionManager;
use crate::stats::VclusterStats;

/// What access logs need beyond counters; captured only when the HCM has access logs.
#[derive(Debug, Default)]
pub struct LogData {
    pub method: String,
    pub path: String,
    pub authority: String,
    pub scheme: &'static str,
    pub request_headers: HeaderMap,
    pub response_headers: Option<HeaderMap>,
    pub route_name: String,
    pub upstream_failure: Option<String>,
}

/// The upstream a request went to.
#[derive(Debug)]
pub struct UpstreamInfo {
    pub cluster: Arc<Cluster>,
    pub host: Arc<Host>,
    pub started: Instant,
    /// Whether the host's/cluster's active-request gauges are still held.
    pub active: bool,
}

#[derive(Debug)]
pub struct Finish {
    hcm: Arc<HttpConnectionManager>,
    conn: Arc<ConnInfo>,
    pub start: Instant,
    pub start_time: SystemTime,
    pub protocol: &'static str,
    /// A gRPC request: local replies become gRPC statuses (HTTP 200 + `grpc-status`).
    pub is_grpc: bool,
    pub status: u16,
    pub flags: ResponseFlags,
    pub details: &'static str,
    pub counters: Option<Arc<StreamCounters>>,
    pub bytes_sent: u64,
    pub upstream: Option<UpstreamInfo>,
    /// `x-envoy-internal: true` on the routed request (Envoy's `internal.` code stats).
    pub internal_request: bool,
    /// The virtual cluster the request counts under, when its virtual host has any.
    pub vcluster: Option<Arc<VclusterStats>>,
    pub log: Option<Box<LogData>>,
    pub completed: bool,
    /// This stream hands the downstream request on to the next leg of an internal redirect:
    /// the connection's request count is released by that leg.
    pub handed_over: bool,
    pub response_started: Option<Instant>,
}

impl Finish {
    pub fn new(
        hcm: Arc<HttpConnectionManager>,
        conn: Arc<ConnInfo>,
        protocol: &'static str,
    ) -> Self {
        let log = (!hcm.access_logs.is_empty()).then(Box::<LogData>::default);
        Finish {
            hcm,
            conn,
            start: Instant::now(),
            start_time: SystemTime::now(),
            protocol,
            is_grpc: false,
            status: 0,
            flags: ResponseFlags::default(),
            details: "",
            counters: None,
            bytes_sent: 0,
            upstream: None,
            internal_request: false,
            vcluster: None,
            handed_over: false,
            log,
            completed: false,
            response_started: None,
        }
    }

    /// The connection manager's stats.
    pub fn hcm_stats(&self) -> &crate::stats::HcmStats {
        &self.hcm.stats
    }

    /// Response headers are going out with `status`.
    pub fn on_response_headers(&mut self, status: u16, headers: &HeaderMap) {
        self.status = status;
        self.response_started = Some(Instant::now());
        self.hcm.stats.record_status(status);
        if let Some(l) = self.log.as_mut() {
            l.response_headers = Some(headers.clone());
        }
    }

    fn release_upstream(&mut self) {
        if let Some(u) = self.upstream.as_mut()
            && u.active
        {
            u.active = false;
            u.cluster.stats.upstream_rq_active.dec();
            u.host.request_ended();
            let ms = u.started.elapsed().as_millis() as u64;
            let origin = strait_upstream::cluster::RqOrigin {
                internal: self.internal_request,
                canary: u.host.canary,
            };
            u.cluster.stats.record_time(ms, origin);
            u.cluster.stats.upstream_rq_completed.inc();
            if let Some(vc) = &self.vcluster {
                vc.upstream_rq_time.record(ms);
                vc.upstream_rq_completed.inc();
            }
            if self.status >= 500 || self.status == 0 {
                u.host.stats.rq_error.inc();
            } else {
                u.host.stats.rq_success.inc();
            }
        }
    }

    fn write_access_logs(&self) {
        let Some(l) = self.log.as_deref() else { return };
        let now = Instant::now();
        let bytes_received = self
            .counters
            .as_ref()
            .map(|c| c.bytes_received.load(std::sync::atomic::Ordering::Relaxed))
            .unwrap_or(0);
        let upstream_host: Option<SocketAddr> = self.upstream.as_ref().map(|u| u.host.address);
        let ctx = LogContext {
            start_time: self.start_time,
            method: Some(&l.method),
            // Empty for CONNECT, which has no path.
            path: Some(l.path.as_str()).filter(|p| !p.is_empty()),
            authority: Some(&l.authority),
            scheme: Some(l.scheme),
            request_headers: Some(&l.request_headers),
            response_headers: l.response_headers.as_ref(),
            protocol: Some(self.protocol),
            response_code: self.status,
            response_code_details: Some(self.details).filter(|d| !d.is_empty()),
            response_flags: self.flags,
            bytes_received,
            bytes_sent: self.bytes_sent,
            duration: Some(now - self.start),
            request_duration: None,
            response_duration: self.response_started.map(|t| t - self.start),
            upstream_host,
            upstream_cluster: self.upstream.as_ref().map(|u| &*u.cluster.name),
            downstream_remote_address: Some(self.conn.remote),
            downstream_direct_remote_address: Some(self.conn.remote),
            downstream_local_address: Some(self.conn.local),
            route_name: Some(l.route_name.as_str()).filter(|s| !s.is_empty()),
            connection_id: self.conn.id,
            upstream_transport_failure_reason: l.upstream_failure.as_deref(),
            upstream_request_attempt_count: self
                .counters
                .as_ref()
                .map(|c| c.attempts())
                .unwrap_or(0),
            ..Default::default()
        };
        let mut line = Vec::with_capacity(256);
        for (sink, fmt) in &self.hcm.access_logs {
            line.clear();
            fmt.render(&ctx, &mut line);
            sink.write(&line);
        }
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        if !self.completed {
            // The downstream went away before the response was fully sent.
            self.flags
                .insert(ResponseFlag::DownstreamConnectionTermination);
            self.hcm.stats.downstream_rq_rx_reset.inc();
        }
        self.release_upstream();
        if !self.handed_over {
            self.conn.request_ended();
        }
        let s = &self.hcm.stats;
        s.downstream_rq_active.dec();
        s.downstream_rq_completed.inc();
        s.downstream_rq_time
            .record(self.start.elapsed().as_millis() as u64);
        self.write_access_logs();
    }
}
