//! `/clusters`: Envoy's text and JSON views of every cluster and host.

use std::fmt::Write;

use serde_json::json;
use strait_upstream::ClusterManager;

/// Envoy's default circuit breaker thresholds, printed per priority.
const DEFAULT_THRESHOLDS: [(&str, u64); 4] = [
    ("max_connections", 1024),
    ("max_pending_requests", 1024),
    ("max_requests", 1024),
    ("max_retries", 3),
];

pub fn render_text(cm: &ClusterManager) -> String {
    let mut out = String::new();
    for c in &cm.order {
        let n = &c.name;
        let _ = writeln!(out, "{n}::observability_name::{n}");
        for prio in ["default_priority", "high_priority"] {
            for (k, v) in DEFAULT_THRESHOLDS {
                let _ = writeln!(out, "{n}::{prio}::{k}::{v}");
            }
        }
        let _ = writeln!(out, "{n}::added_via_api::false");
        for h in &c.hosts {
            let a = h.address;
            let s = &h.stats;
            let _ = writeln!(out, "{n}::{a}::cx_active::{}", s.cx_active.value());
            let _ = writeln!(
                out,
                "{n}::{a}::cx_connect_fail::{}",
                s.cx_connect_fail.value()
            );
            let _ = writeln!(out, "{n}::{a}::cx_total::{}", s.cx_total.value());
            let _ = writeln!(out, "{n}::{a}::rq_active::{}", s.rq_active.value());
            let _ = writeln!(out, "{n}::{a}::rq_error::{}", s.rq_error.value());
            let _ = writeln!(out, "{n}::{a}::rq_pending_active::0");
            let _ = writeln!(out, "{n}::{a}::rq_success::{}", s.rq_success.value());
            let _ = writeln!(out, "{n}::{a}::rq_timeout::{}", s.rq_timeout.value());
            let _ = writeln!(out, "{n}::{a}::rq_total::{}", s.rq_total.value());
            let _ = writeln!(out, "{n}::{a}::hostname::{}", h.hostname);
            let _ = writeln!(out, "{n}::{a}::health_flags::healthy");
            let _ = writeln!(out, "{n}::{a}::weight::{}", h.weight);
            let _ = writeln!(out, "{n}::{a}::region::");
            let _ = writeln!(out, "{n}::{a}::zone::");
            let _ = writeln!(out, "{n}::{a}::sub_zone::");
            let _ = writeln!(out, "{n}::{a}::canary::false");
            let _ = writeln!(out, "{n}::{a}::priority::0");
            let _ = writeln!(out, "{n}::{a}::success_rate::-1");
            let _ = writeln!(out, "{n}::{a}::local_origin_success_rate::-1");
        }
    }
    out
}

pub fn render_json(cm: &ClusterManager) -> String {
    let statuses: Vec<_> = cm
        .order
        .iter()
        .map(|c| {
            let hosts: Vec<_> = c
                .hosts
                .iter()
                .map(|h| {
                    let s = &h.stats;
                    json!({
                        "address": {"socket_address": {"address": h.address.ip().to_string(), "port_value": h.address.port()}},
                        "stats": [
                            {"name": "cx_connect_fail", "value": s.cx_connect_fail.value().to_string()},
                            {"name": "cx_total", "value": s.cx_total.value().to_string()},
                            {"name": "rq_error", "value": s.rq_error.value().to_string()},
                            {"name": "rq_success", "value": s.rq_success.value().to_string()},
                            {"name": "rq_timeout", "value": s.rq_timeout.value().to_string()},
                            {"name": "rq_total", "value": s.rq_total.value().to_string()},
                            {"type": "GAUGE", "name": "cx_active", "value": s.cx_active.value().to_string()},
                            {"type": "GAUGE", "name": "rq_active", "value": s.rq_active.value().to_string()},
                        ],
                        "health_status": {"eds_health_status": "HEALTHY"},
                        "weight": h.weight,
                        "hostname": h.hostname,
                        "locality": {},
                    })
                })
                .collect();
            json!({
                "name": &*c.name,
                "observability_name": &*c.name,
                "circuit_breakers": {"thresholds": [
                    {"max_connections": 1024, "max_pending_requests": 1024, "max_requests": 1024, "max_retries": 3},
                    {"priority": "HIGH", "max_connections": 1024, "max_pending_requests": 1024, "max_requests": 1024, "max_retries": 3}
                ]},
                "host_statuses": hosts,
            })
        })
        .collect();
    serde_json::to_string_pretty(&json!({ "cluster_statuses": statuses })).unwrap_or_default()
}
