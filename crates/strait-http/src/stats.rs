//! Envoy's HTTP connection manager and router stats (`http.<stat_prefix>.*`) and listener
//! stats (`listener.<address>.*`).

use strait_stats::{Counter, Gauge, Histogram, HistogramUnit, StatusCounters, Store};

#[derive(Debug)]
pub struct HcmStats {
    pub downstream_cx_total: Counter,
    pub downstream_cx_active: Gauge,
    pub downstream_cx_http1_total: Counter,
    pub downstream_cx_http1_active: Gauge,
    pub downstream_cx_http2_total: Counter,
    pub downstream_cx_http2_active: Gauge,
    pub downstream_cx_destroy: Counter,
    pub downstream_cx_length_ms: Histogram,
    pub downstream_cx_protocol_error: Counter,
    pub downstream_cx_idle_timeout: Counter,
    pub downstream_cx_rx_bytes_total: Counter,
    pub downstream_cx_tx_bytes_total: Counter,
    pub downstream_rq_total: Counter,
    pub downstream_rq_http1_total: Counter,
    pub downstream_rq_http2_total: Counter,
    pub downstream_rq_active: Gauge,
    pub downstream_rq_completed: Counter,
    pub downstream_rq_rx_reset: Counter,
    pub downstream_rq_idle_timeout: Counter,
    pub downstream_rq_max_duration_reached: Counter,
    pub downstream_rq_time: Histogram,
    pub downstream_rq_xx: [Counter; 5],
    // Upgrades (see `router::upgrade`).
    pub downstream_cx_upgrades_total: Counter,
    pub downstream_cx_upgrades_active: Gauge,
    pub downstream_rq_ws_on_non_ws_route: Counter,
    // Router stats, also under `http.<prefix>.`.
    pub no_route: Counter,
    pub no_cluster: Counter,
    pub rq_total: Counter,
    pub rq_direct_response: Counter,
    pub passthrough_internal_redirect_bad_location: Counter,
    pub passthrough_internal_redirect_unsafe_scheme: Counter,
    pub passthrough_internal_redirect_too_many_redirects: Counter,
    pub passthrough_internal_redirect_predicate: Counter,
    pub passthrough_internal_redirect_no_route: Counter,
}

impl HcmStats {
    pub fn new(store: &Store, stat_prefix: &str) -> Self {
        let p = format!("http.{stat_prefix}.");
        let c = |n: &str| store.counter(&format!("{p}{n}"));
        let g = |n: &str| store.gauge(&format!("{p}{n}"));
        let h = |n: &str| store.histogram(&format!("{p}{n}"), HistogramUnit::Milliseconds);
        HcmStats {
            downstream_cx_total: c("downstream_cx_total"),
            downstream_cx_active: g("downstream_cx_active"),
            downstream_cx_http1_total: c("downstream_cx_http1_total"),
            downstream_cx_http1_active: g("downstream_cx_http1_active"),
            downstream_cx_http2_total: c("downstream_cx_http2_total"),
            downstream_cx_http2_active: g("downstream_cx_http2_active"),
            downstream_cx_destroy: c("downstream_cx_destroy"),
            downstream_cx_length_ms: h("downstream_cx_length_ms"),
            downstream_cx_protocol_error: c("downstream_cx_protocol_error"),
            downstream_cx_idle_timeout: c("downstream_cx_idle_timeout"),
            downstream_cx_rx_bytes_total: c("downstream_cx_rx_bytes_total"),
            downstream_cx_tx_bytes_total: c("downstream_cx_tx_bytes_total"),
            downstream_rq_total: c("downstream_rq_total"),
            downstream_rq_http1_total: c("downstream_rq_http1_total"),
            downstream_rq_http2_total: c("downstream_rq_http2_total"),
            downstream_rq_active: g("downstream_rq_active"),
            downstream_rq_completed: c("downstream_rq_completed"),
            downstream_rq_rx_reset: c("downstream_rq_rx_reset"),
            downstream_rq_idle_timeout: c("downstream_rq_idle_timeout"),
            downstream_rq_max_duration_reached: c("downstream_rq_max_duration_reached"),
            downstream_rq_time: h("downstream_rq_time"),
            downstream_rq_xx: [
                c("downstream_rq_1xx"),
                c("downstream_rq_2xx"),
                c("downstream_rq_3xx"),
                c("downstream_rq_4xx"),
                c("downstream_rq_5xx"),
            ],
            downstream_cx_upgrades_total: c("downstream_cx_upgrades_total"),
            downstream_cx_upgrades_active: g("downstream_cx_upgrades_active"),
            downstream_rq_ws_on_non_ws_route: c("downstream_rq_ws_on_non_ws_route"),
            no_route: c("no_route"),
            no_cluster: c("no_cluster"),
            rq_total: c("rq_total"),
            rq_direct_response: c("rq_direct_response"),
            passthrough_internal_redirect_bad_location: c(
                "passthrough_internal_redirect_bad_location",
            ),
            passthrough_internal_redirect_unsafe_scheme: c(
                "passthrough_internal_redirect_unsafe_scheme",
            ),
            passthrough_internal_redirect_too_many_redirects: c(
                "passthrough_internal_redirect_too_many_redirects",
            ),
            passthrough_internal_redirect_predicate: c("passthrough_internal_redirect_predicate"),
            passthrough_internal_redirect_no_route: c("passthrough_internal_redirect_no_route"),
        }
    }

    pub fn record_status(&self, status: u16) {
        if let Some(c) = (status / 100)
            .checked_sub(1)
            .and_then(|i| self.downstream_rq_xx.get(i as usize))
        {
            c.inc();
        }
    }
}

#[derive(Debug)]
pub struct ListenerStats {
    pub downstream_cx_total: Counter,
    pub downstream_cx_active: Gauge,
    pub downstream_cx_destroy: Counter,
    pub downstream_cx_length_ms: Histogram,
}

impl ListenerStats {
    pub fn new(store: &Store, prefix: &str) -> Self {
        ListenerStats {
            downstream_cx_total: store.counter(&format!("{prefix}.downstream_cx_total")),
            downstream_cx_active: store.gauge(&format!("{prefix}.downstream_cx_active")),
            downstream_cx_destroy: store.counter(&format!("{prefix}.downstream_cx_destroy")),
            downstream_cx_length_ms: store.histogram(
                &format!("{prefix}.downstream_cx_length_ms"),
                HistogramUnit::Milliseconds,
            ),
        }
    }
}

/// A virtual cluster's stats (`vhost.<vhost>.vcluster.<name>.*`), created when the route
/// configuration loads, codes on first use, as Envoy does.
#[derive(Debug)]
pub struct VclusterStats {
    pub upstream_rq_total: Counter,
    pub upstream_rq_completed: Counter,
    pub upstream_rq_timeout: Counter,
    pub upstream_rq_retry: Counter,
    pub upstream_rq_retry_success: Counter,
    pub upstream_rq_retry_overflow: Counter,
    pub upstream_rq_retry_limit_exceeded: Counter,
    pub upstream_rq_time: Histogram,
    pub codes: StatusCounters,
}

impl VclusterStats {
    pub fn new(store: &Store, vhost: &str, vcluster: &str) -> Self {
        let p = format!("vhost.{vhost}.vcluster.{vcluster}.");
        let c = |n: &str| store.counter(&format!("{p}{n}"));
        VclusterStats {
            upstream_rq_total: c("upstream_rq_total"),
            upstream_rq_completed: c("upstream_rq_completed"),
            upstream_rq_timeout: c("upstream_rq_timeout"),
            upstream_rq_retry: c("upstream_rq_retry"),
            upstream_rq_retry_success: c("upstream_rq_retry_success"),
            upstream_rq_retry_overflow: c("upstream_rq_retry_overflow"),
            upstream_rq_retry_limit_exceeded: c("upstream_rq_retry_limit_exceeded"),
            upstream_rq_time: store
                .histogram(&format!("{p}upstream_rq_time"), HistogramUnit::Milliseconds),
            codes: StatusCounters::new(store, &p),
        }
    }
}

/// Per virtual host (by index in the route table), its virtual clusters' stats followed by
/// `other`; empty for a virtual host without virtual clusters.
pub fn vcluster_stats(
    store: &Store,
    routes: &strait_config::route::RouteTable,
) -> Vec<Box<[std::sync::Arc<VclusterStats>]>> {
    use strait_config::route::vcluster::OTHER;
    routes
        .vhosts
        .iter()
        .map(|vh| {
            if vh.virtual_clusters.is_empty() {
                return Box::default();
            }
            vh.virtual_clusters
                .iter()
                .map(|vc| vc.name.as_str())
                .chain(std::iter::once(OTHER))
                .map(|n| std::sync::Arc::new(VclusterStats::new(store, &vh.name, n)))
                .collect()
        })
        .collect()
}
