//! Envoy's HTTP connection manager and router stats (`http.<stat_prefix>.*`) and listener
//! stats (`listener.<address>.*`).

use strait_stats::{Counter, Gauge, Histogram, HistogramUnit, Store};

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
    // Router stats, also under `http.<prefix>.`.
    pub no_route: Counter,
    pub no_cluster: Counter,
    pub rq_total: Counter,
    pub rq_direct_response: Counter,
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
            no_route: c("no_route"),
            no_cluster: c("no_cluster"),
            rq_total: c("rq_total"),
            rq_direct_response: c("rq_direct_response"),
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
