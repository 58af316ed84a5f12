//! Passive health checking configuration (`outlier_detection`), with Envoy's defaults.

use std::time::Duration;

use envoy_api::pb::envoy::config::cluster::v3 as cl;

use crate::compile::common::duration;
use crate::error::{ConfigErrors, FieldPath};

/// A compiled `outlier_detection` block. Percentages are 0..=100.
#[derive(Debug, Clone)]
pub struct OutlierSpec {
    pub interval: Duration,
    pub base_ejection_time: Duration,
    /// Default: the larger of 300s and `base_ejection_time`.
    pub max_ejection_time: Duration,
    pub max_ejection_time_jitter: Duration,
    pub max_ejection_percent: u32,
    pub always_eject_one_host: bool,
    pub consecutive_5xx: u32,
    pub consecutive_gateway_failure: u32,
    pub consecutive_local_origin_failure: u32,
    pub split_external_local_origin_errors: bool,
    pub enforcing_consecutive_5xx: u32,
    pub enforcing_consecutive_gateway_failure: u32,
    pub enforcing_consecutive_local_origin_failure: u32,
    pub enforcing_success_rate: u32,
    pub enforcing_local_origin_success_rate: u32,
    pub enforcing_failure_percentage: u32,
    pub enforcing_failure_percentage_local_origin: u32,
    pub success_rate_minimum_hosts: u32,
    pub success_rate_request_volume: u32,
    /// `success_rate_stdev_factor` / 1000 (1900 -> 1.9).
    pub success_rate_stdev_factor: f64,
    pub failure_percentage_threshold: u32,
    pub failure_percentage_minimum_hosts: u32,
    pub failure_percentage_request_volume: u32,
    /// A passing active health check unejects the host (default true).
    pub successful_active_health_check_uneject_host: bool,
}

impl Default for OutlierSpec {
    fn default() -> Self {
        OutlierSpec {
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_time_jitter: Duration::ZERO,
            max_ejection_percent: 10,
            always_eject_one_host: false,
            consecutive_5xx: 5,
            consecutive_gateway_failure: 5,
            consecutive_local_origin_failure: 5,
            split_external_local_origin_errors: false,
            enforcing_consecutive_5xx: 100,
            enforcing_consecutive_gateway_failure: 0,
            enforcing_consecutive_local_origin_failure: 100,
            enforcing_success_rate: 100,
            enforcing_local_origin_success_rate: 100,
            enforcing_failure_percentage: 0,
            enforcing_failure_percentage_local_origin: 0,
            success_rate_minimum_hosts: 5,
            success_rate_request_volume: 100,
            success_rate_stdev_factor: 1.9,
            failure_percentage_threshold: 85,
            failure_percentage_minimum_hosts: 5,
            failure_percentage_request_volume: 50,
            successful_active_health_check_uneject_host: true,
        }
    }
}

/// Fields of outlier-detection messages Strait implements (chained into the supported table).
pub const SUPPORTED: &[(&str, &[&str])] = &[
    ("envoy.config.cluster.v3.Cluster", &["outlier_detection"]),
    (
        "envoy.config.cluster.v3.OutlierDetection",
        &[
            "consecutive_5xx",
            "interval",
            "base_ejection_time",
            "max_ejection_percent",
            "enforcing_consecutive_5xx",
            "enforcing_success_rate",
            "success_rate_minimum_hosts",
            "success_rate_request_volume",
            "success_rate_stdev_factor",
            "consecutive_gateway_failure",
            "enforcing_consecutive_gateway_failure",
            "split_external_local_origin_errors",
            "consecutive_local_origin_failure",
            "enforcing_consecutive_local_origin_failure",
            "enforcing_local_origin_success_rate",
            "failure_percentage_threshold",
            "enforcing_failure_percentage",
            "enforcing_failure_percentage_local_origin",
            "failure_percentage_minimum_hosts",
            "failure_percentage_request_volume",
            "max_ejection_time",
            "max_ejection_time_jitter",
            "successful_active_health_check_uneject_host",
            "always_eject_one_host",
        ],
    ),
];

pub(crate) fn compile(
    c: &cl::Cluster,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<OutlierSpec> {
    let o = c.outlier_detection.as_ref()?;
    let p = path.field("outlier_detection");
    let d = OutlierSpec::default();
    let dur = |v: &Option<envoy_api::pb::google::protobuf::Duration>,
               f: &str,
               errs: &mut ConfigErrors| {
        v.as_ref().and_then(|v| duration(v, &p.field(f), errs))
    };
    let u32v = |v: &Option<envoy_api::pb::google::protobuf::UInt32Value>, def: u32| {
        v.as_ref().map_or(def, |v| v.value)
    };
    let base_ejection_time =
        dur(&o.base_ejection_time, "base_ejection_time", errs).unwrap_or(d.base_ejection_time);
    let max_ejection_time = dur(&o.max_ejection_time, "max_ejection_time", errs)
        .unwrap_or(d.max_ejection_time.max(base_ejection_time));
    if max_ejection_time < base_ejection_time {
        errs.push(
            p.field("max_ejection_time").to_string(),
            "outlier detector's max_ejection_time cannot be smaller than base_ejection_time",
        );
        return None;
    }
    let spec = OutlierSpec {
        interval: dur(&o.interval, "interval", errs).unwrap_or(d.interval),
        base_ejection_time,
        max_ejection_time,
        max_ejection_time_jitter: dur(
            &o.max_ejection_time_jitter,
            "max_ejection_time_jitter",
            errs,
        )
        .unwrap_or_default(),
        max_ejection_percent: u32v(&o.max_ejection_percent, d.max_ejection_percent).min(100),
        always_eject_one_host: o.always_eject_one_host.as_ref().is_some_and(|b| b.value),
        consecutive_5xx: u32v(&o.consecutive_5xx, d.consecutive_5xx),
        consecutive_gateway_failure: u32v(
            &o.consecutive_gateway_failure,
            d.consecutive_gateway_failure,
        ),
        consecutive_local_origin_failure: u32v(
            &o.consecutive_local_origin_failure,
            d.consecutive_local_origin_failure,
        ),
        split_external_local_origin_errors: o.split_external_local_origin_errors,
        enforcing_consecutive_5xx: u32v(&o.enforcing_consecutive_5xx, d.enforcing_consecutive_5xx),
        enforcing_consecutive_gateway_failure: u32v(
            &o.enforcing_consecutive_gateway_failure,
            d.enforcing_consecutive_gateway_failure,
        ),
        enforcing_consecutive_local_origin_failure: u32v(
            &o.enforcing_consecutive_local_origin_failure,
            d.enforcing_consecutive_local_origin_failure,
        ),
        enforcing_success_rate: u32v(&o.enforcing_success_rate, d.enforcing_success_rate),
        enforcing_local_origin_success_rate: u32v(
            &o.enforcing_local_origin_success_rate,
            d.enforcing_local_origin_success_rate,
        ),
        enforcing_failure_percentage: u32v(
            &o.enforcing_failure_percentage,
            d.enforcing_failure_percentage,
        ),
        enforcing_failure_percentage_local_origin: u32v(
            &o.enforcing_failure_percentage_local_origin,
            d.enforcing_failure_percentage_local_origin,
        ),
        success_rate_minimum_hosts: u32v(
            &o.success_rate_minimum_hosts,
            d.success_rate_minimum_hosts,
        ),
        success_rate_request_volume: u32v(
            &o.success_rate_request_volume,
            d.success_rate_request_volume,
        ),
        success_rate_stdev_factor: o
            .success_rate_stdev_factor
            .as_ref()
            .map_or(d.success_rate_stdev_factor, |v| f64::from(v.value) / 1000.0),
        failure_percentage_threshold: u32v(
            &o.failure_percentage_threshold,
            d.failure_percentage_threshold,
        ),
        failure_percentage_minimum_hosts: u32v(
            &o.failure_percentage_minimum_hosts,
            d.failure_percentage_minimum_hosts,
        ),
        failure_percentage_request_volume: u32v(
            &o.failure_percentage_request_volume,
            d.failure_percentage_request_volume,
        ),
        successful_active_health_check_uneject_host: o
            .successful_active_health_check_uneject_host
            .as_ref()
            .is_none_or(|b| b.value),
    };
    Some(spec)
}
