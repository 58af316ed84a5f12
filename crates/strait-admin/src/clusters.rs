//! `/clusters`: Envoy's text and JSON views of every cluster and host.

use std::fmt::Write;

use serde_json::json;
use strait_config::model::{LocalitySpec, Thresholds};
use strait_upstream::{ClusterManager, Host, health_flag};

/// A priority's circuit breaker thresholds as `/clusters` names them.
fn thresholds(t: &Thresholds) -> [(&'static str, u32); 4] {
    [
        ("max_connections", t.max_connections),
        ("max_pending_requests", t.max_pending_requests),
        ("max_requests", t.max_requests),
        ("max_retries", t.max_retries),
    ]
}

/// Envoy's JSON `health_status` of a host: the EDS status and one boolean per failure.
fn health_status_json(h: &Host) -> serde_json::Value {
    let f = h.health_flags();
    let mut v = serde_json::Map::new();
    for (flag, name) in [
        (health_flag::FAILED_ACTIVE_HC, "failed_active_health_check"),
        (health_flag::FAILED_OUTLIER_CHECK, "failed_outlier_check"),
        (
            health_flag::DEGRADED_ACTIVE_HC,
            "failed_active_degraded_check",
        ),
        (
            health_flag::PENDING_DYNAMIC_REMOVAL,
            "pending_dynamic_removal",
        ),
        (health_flag::PENDING_ACTIVE_HC, "pending_active_hc"),
        (
            health_flag::EXCLUDED_VIA_IMMEDIATE_HC_FAIL,
            "excluded_via_immediate_hc_fail",
        ),
        (health_flag::ACTIVE_HC_TIMEOUT, "active_hc_timeout"),
    ] {
        if f & flag != 0 {
            v.insert(name.into(), json!(true));
        }
    }
    // From the flags, as Envoy does: TIMEOUT shows as UNHEALTHY, UNKNOWN as HEALTHY.
    let eds = if f & health_flag::FAILED_EDS_HEALTH != 0 {
        "UNHEALTHY"
    } else if f & health_flag::EDS_STATUS_DRAINING != 0 {
        "DRAINING"
    } else if f & health_flag::DEGRADED_EDS_HEALTH != 0 {
        "DEGRADED"
    } else {
        "HEALTHY"
    };
    v.insert("eds_health_status".into(), json!(eds));
    serde_json::Value::Object(v)
}

pub fn render_text(cm: &ClusterManager) -> String {
    let mut out = String::new();
    for c in &cm.order {
        let n = &c.name;
        let _ = writeln!(out, "{n}::observability_name::{n}");
        if let Some(r) = strait_upstream::outlier::cluster_rates(c) {
            let (avg, thr) = r.get(false);
            let (lavg, lthr) = r.get(true);
            let _ = writeln!(out, "{n}::outlier::success_rate_average::{avg}");
            let _ = writeln!(out, "{n}::outlier::success_rate_ejection_threshold::{thr}");
            let _ = writeln!(
                out,
                "{n}::outlier::local_origin_success_rate_average::{lavg}"
            );
            let _ = writeln!(
                out,
                "{n}::outlier::local_origin_success_rate_ejection_threshold::{lthr}"
            );
        }
        let cb = &c.spec.circuit_breakers;
        for (prio, t) in [
            ("default_priority", &cb.default),
            ("high_priority", &cb.high),
        ] {
            for (k, v) in thresholds(t) {
                let _ = writeln!(out, "{n}::{prio}::{k}::{v}");
            }
        }
        let _ = writeln!(out, "{n}::added_via_api::false");
        for h in c.hosts().iter() {
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
            let _ = writeln!(out, "{n}::{a}::health_flags::{}", h.health_flags_text());
            let _ = writeln!(out, "{n}::{a}::weight::{}", h.weight);
            let l = &h.locality;
            let _ = writeln!(out, "{n}::{a}::region::{}", l.region);
            let _ = writeln!(out, "{n}::{a}::zone::{}", l.zone);
            let _ = writeln!(out, "{n}::{a}::sub_zone::{}", l.sub_zone);
            let _ = writeln!(out, "{n}::{a}::canary::{}", h.canary);
            let _ = writeln!(out, "{n}::{a}::priority::{}", h.priority);
            let _ = writeln!(out, "{n}::{a}::success_rate::{}", h.outlier.success_rate());
            let _ = writeln!(
                out,
                "{n}::{a}::local_origin_success_rate::{}",
                h.outlier.local_success_rate()
            );
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
                .hosts()
                .iter()
                .map(|h| {
                    let s = &h.stats;
                    let mut v = json!({
                        "address": {"socket_address": {"address": h.address.ip().to_string(), "port_value": h.address.port()}},
                        "stats": [
                            stat_json(None, "cx_connect_fail", s.cx_connect_fail.value()),
                            stat_json(None, "cx_total", s.cx_total.value()),
                            stat_json(None, "rq_error", s.rq_error.value()),
                            stat_json(None, "rq_success", s.rq_success.value()),
                            stat_json(None, "rq_timeout", s.rq_timeout.value()),
                            stat_json(None, "rq_total", s.rq_total.value()),
                            stat_json(Some("GAUGE"), "cx_active", s.cx_active.value().max(0) as u64),
                            stat_json(Some("GAUGE"), "rq_active", s.rq_active.value().max(0) as u64),
                            stat_json(Some("GAUGE"), "rq_pending_active", 0),
                        ],
                        "health_status": health_status_json(h),
                        "weight": h.weight,
                        "locality": locality_json(&h.locality),
                    });
                    // Proto3 JSON leaves default values out: an empty hostname, priority 0.
                    if let Some(m) = v.as_object_mut() {
                        if !h.hostname.is_empty() {
                            m.insert("hostname".into(), json!(h.hostname));
                        }
                        if h.priority != 0 {
                            m.insert("priority".into(), json!(h.priority));
                        }
                    }
                    v
                })
                .collect();
            json!({
                "name": &*c.name,
                "observability_name": &*c.name,
                "circuit_breakers": {"thresholds": [
                    thresholds_json(None, &c.spec.circuit_breakers.default),
                    thresholds_json(Some("HIGH"), &c.spec.circuit_breakers.high),
                ]},
                "host_statuses": hosts,
            })
        })
        .collect();
    serde_json::to_string_pretty(&json!({ "cluster_statuses": statuses })).unwrap_or_default()
}

fn thresholds_json(priority: Option<&str>, t: &Thresholds) -> serde_json::Value {
    let mut v = serde_json::Map::new();
    if let Some(p) = priority {
        v.insert("priority".into(), json!(p));
    }
    for (k, n) in thresholds(t) {
        v.insert(k.into(), json!(n));
    }
    serde_json::Value::Object(v)
}

/// One host stat as Envoy's JSON shows it: a zero value is left out (proto3 default).
fn stat_json(kind: Option<&str>, name: &str, value: u64) -> serde_json::Value {
    let mut v = serde_json::Map::new();
    if let Some(k) = kind {
        v.insert("type".into(), json!(k));
    }
    v.insert("name".into(), json!(name));
    if value != 0 {
        v.insert("value".into(), json!(value.to_string()));
    }
    serde_json::Value::Object(v)
}

/// Envoy leaves empty locality fields out of the JSON.
fn locality_json(l: &LocalitySpec) -> serde_json::Value {
    let mut v = serde_json::Map::new();
    for (k, s) in [
        ("region", &l.region),
        ("zone", &l.zone),
        ("sub_zone", &l.sub_zone),
    ] {
        if !s.is_empty() {
            v.insert(k.into(), json!(s));
        }
    }
    serde_json::Value::Object(v)
}
