//! Clusters: discovery type, load balancing policy, endpoints and upstream protocol options.
//! Each concern of a cluster has its own submodule with its spec types, its compile step and
//! the table of Envoy fields it implements.

pub mod circuit;
pub mod discovery;
pub mod health;
pub mod lb;
pub mod locality;
pub mod outlier;
pub mod subset;

use std::sync::Arc;
use std::time::Duration;

use envoy_api::pb::envoy::config::cluster::v3 as cl;
use envoy_api::pb::envoy::extensions::upstreams::http::v3 as uphttp;

use crate::compile::HTTP_OPTIONS_TYPE;
use crate::compile::common::{duration, socket_address, type_name, unpack};
use crate::error::{ConfigErrors, FieldPath};
use crate::model::*;

pub(crate) fn compile_cluster(
    c: &cl::Cluster,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<ClusterSpec> {
    let mut discovery = discovery::compile(c, path, errs)?;
    // ORIGINAL_DST brings its own balancer (CLUSTER_PROVIDED, checked by discovery).
    let lb = match discovery {
        DiscoverySpec::OriginalDst(_) => LbSpec::default(),
        _ => lb::compile(c, path, errs),
    };
    let common_lb = locality::compile(c, path, errs);
    let subset = subset::compile(c, path, errs).map(Arc::new);
    let health_checks = health::compile(c, path, errs);
    let outlier = outlier::compile(c, path, errs);
    let circuit_breakers = circuit::compile(c, path, errs);
    let connect_timeout = c
        .connect_timeout
        .as_ref()
        .and_then(|d| duration(d, &path.field("connect_timeout"), errs))
        .unwrap_or(Duration::from_secs(5));
    let mut endpoints = Vec::new();
    if let Some(la) = &c.load_assignment {
        let lp = path.field("load_assignment");
        for (i, lle) in la.endpoints.iter().enumerate() {
            let ep = lp.field("endpoints").index(i);
            let locality = Arc::new(
                lle.locality
                    .as_ref()
                    .map(|l| LocalitySpec {
                        region: l.region.clone(),
                        zone: l.zone.clone(),
                        sub_zone: l.sub_zone.clone(),
                    })
                    .unwrap_or_default(),
            );
            let locality_weight = lle.load_balancing_weight.as_ref().map_or(0, |w| w.value);
            for (j, lbe) in lle.lb_endpoints.iter().enumerate() {
                let bp = ep.field("lb_endpoints").index(j);
                use envoy_api::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier as H;
                let Some(H::Endpoint(e)) = &lbe.host_identifier else {
                    errs.push(
                        bp.field("endpoint").to_string(),
                        "an endpoint is required (endpoint_name is not supported by Strait yet)",
                    );
                    continue;
                };
                let ap = bp.field("endpoint").field("address");
                let address = if discovery.dns().is_some() {
                    discovery::dns_endpoint(&mut discovery, e.address.as_ref(), &ap, errs)
                } else {
                    socket_address(e.address.as_ref(), &ap, errs)
                };
                let Some(address) = address else {
                    continue;
                };
                let weight = lbe
                    .load_balancing_weight
                    .as_ref()
                    .map(|w| w.value)
                    .unwrap_or(1);
                endpoints.push(EndpointSpec {
                    address,
                    weight: weight.max(1),
                    hostname: e.hostname.clone(),
                    priority: lle.priority,
                    locality: locality.clone(),
                    locality_weight,
                    health_status: EdsHealthStatus::from_proto(lbe.health_status),
                    metadata: Arc::new(subset::endpoint_metadata(lbe.metadata.as_ref())),
                });
            }
        }
    }
    discovery::check_endpoints(&discovery, c, path, errs);
    // Upstream protocol: typed_extension_protocol_options' HttpProtocolOptions.
    let mut protocol = UpstreamProtocol::Http1;
    let mut h2 = H2Settings::default();
    #[allow(deprecated)] // the cluster-level field is still honoured, as by Envoy
    let mut common = c.common_http_protocol_options;
    for (k, any) in &c.typed_extension_protocol_options {
        let kp = path.field("typed_extension_protocol_options").key(k);
        if type_name(any) != HTTP_OPTIONS_TYPE {
            errs.push(
                kp.to_string(),
                format!(
                    "protocol options {} are not supported by Strait yet",
                    type_name(any)
                ),
            );
            continue;
        }
        let Some(o) = unpack::<uphttp::HttpProtocolOptions>(any, &kp, errs) else {
            continue;
        };
        if o.common_http_protocol_options.is_some() {
            common = o.common_http_protocol_options;
        }
        use uphttp::http_protocol_options::UpstreamProtocolOptions as U;
        use uphttp::http_protocol_options::explicit_http_config::ProtocolConfig as P;
        match &o.upstream_protocol_options {
            Some(U::ExplicitHttpConfig(e)) => match &e.protocol_config {
                Some(P::Http2ProtocolOptions(o2)) => {
                    protocol = UpstreamProtocol::Http2;
                    h2 = H2Settings {
                        max_concurrent_streams: o2.max_concurrent_streams.as_ref().map(|v| v.value),
                        initial_stream_window_size: o2.initial_stream_window_size.as_ref().map(|v| v.value),
                        initial_connection_window_size: o2.initial_connection_window_size.as_ref().map(|v| v.value),
                    };
                }
                Some(P::HttpProtocolOptions(_)) | None => {}
                Some(_) => errs.push(kp.field("explicit_http_config").to_string(), "HTTP/3 upstreams are not supported by Strait yet"),
            },
            Some(_) => errs.push(
                kp.to_string(),
                "only explicit_http_config is supported by Strait yet (use_downstream_protocol_config and auto_config are not)",
            ),
            None => {}
        }
    }
    let common = common.unwrap_or_default();
    let idle_timeout = match &common.idle_timeout {
        Some(d) => duration(
            d,
            &path
                .field("common_http_protocol_options")
                .field("idle_timeout"),
            errs,
        )
        .filter(|d| !d.is_zero()),
        None => Some(Duration::from_secs(3600)),
    };
    let max_connection_duration = common.max_connection_duration.as_ref().and_then(|d| {
        duration(
            d,
            &path
                .field("common_http_protocol_options")
                .field("max_connection_duration"),
            errs,
        )
        .filter(|d| !d.is_zero())
    });
    Some(ClusterSpec {
        name: c.name.clone(),
        connect_timeout,
        discovery,
        lb,
        common_lb,
        subset,
        health_checks,
        outlier,
        circuit_breakers,
        endpoints,
        protocol,
        h2,
        idle_timeout,
        max_requests_per_connection: common
            .max_requests_per_connection
            .as_ref()
            .map(|v| v.value)
            .filter(|v| *v > 0),
        max_connection_duration,
        buffer_limit_bytes: c
            .per_connection_buffer_limit_bytes
            .as_ref()
            .map(|v| v.value)
            .unwrap_or(1024 * 1024),
    })
}

/// Every Envoy field the cluster modules implement, for the supported-field check.
pub fn supported_fields() -> impl Iterator<Item = &'static (&'static str, &'static [&'static str])>
{
    lb::SUPPORTED
        .iter()
        .chain(health::SUPPORTED.iter())
        .chain(outlier::SUPPORTED.iter())
        .chain(circuit::SUPPORTED.iter())
        .chain(discovery::SUPPORTED.iter())
        .chain(locality::SUPPORTED.iter())
        .chain(subset::SUPPORTED.iter())
}
