// Envoy still accepts the deprecated fields read here (file log `format`, admin
// `access_log_path`, ...), so Strait does too.
#![allow(deprecated)]

//! Typed Envoy protos -> Strait's runtime model (`model.rs`), with the semantic checks that
//! PGV rules cannot express: routes to undefined clusters, duplicate names, regexes,
//! addresses, values Strait does not implement yet.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_api::pb::envoy::config::bootstrap::v3::Bootstrap;
use envoy_api::pb::envoy::config::listener::v3 as ls;
use envoy_api::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_api::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use strait_accesslog::Formatter;

use crate::error::{ConfigErrors, FieldPath};
use crate::model::*;

pub(crate) mod access_log;

pub(crate) mod common;

use crate::cluster::compile_cluster;
use access_log::compile_access_logs;
use common::{duration, socket_address, type_name, unpack};

const HCM_TYPE: &str =
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ROUTER_TYPE: &str = "envoy.extensions.filters.http.router.v3.Router";
/// Envoy's default `per_connection_buffer_limit_bytes`.
const DEFAULT_BUFFER_LIMIT: u32 = 1024 * 1024;
pub(crate) const HTTP_OPTIONS_TYPE: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// Options from the command line that shape the compiled config.
#[derive(Debug, Clone, Default)]
pub struct CompileOptions {
    pub service_cluster: Option<String>,
    pub service_node: Option<String>,
    pub service_zone: Option<String>,
}

pub fn compile(
    b: &Bootstrap,
    bootstrap_json: serde_json::Value,
    opts: &CompileOptions,
    errs: &mut ConfigErrors,
) -> Option<Config> {
    let root = FieldPath::root();
    let node = b.node.clone().unwrap_or_default();
    let node = NodeInfo {
        id: opts.service_node.clone().unwrap_or(node.id),
        cluster: opts.service_cluster.clone().unwrap_or(node.cluster),
        zone: opts
            .service_zone
            .clone()
            .unwrap_or_else(|| node.locality.map(|l| l.zone).unwrap_or_default()),
    };

    let admin = b
        .admin
        .as_ref()
        .and_then(|a| compile_admin(a, &root.field("admin"), errs));

    let sr = b.static_resources.clone().unwrap_or_default();
    let sr_path = root.field("static_resources");

    let mut clusters = Vec::new();
    let mut cluster_names = HashSet::new();
    for (i, c) in sr.clusters.iter().enumerate() {
        let p = sr_path.field("clusters").index(i);
        if !cluster_names.insert(c.name.clone()) {
            errs.push(
                p.field("name").to_string(),
                format!("duplicate cluster name {:?}", c.name),
            );
            continue;
        }
        if let Some(spec) = compile_cluster(c, &p, errs) {
            clusters.push(Arc::new(spec));
        }
    }

    let mut listeners = Vec::new();
    let mut listener_names = HashSet::new();
    let mut listener_addrs = HashMap::new();
    for (i, l) in sr.listeners.iter().enumerate() {
        let p = sr_path.field("listeners").index(i);
        if !listener_names.insert(l.name.clone()) {
            errs.push(
                p.field("name").to_string(),
                format!("duplicate listener name {:?}", l.name),
            );
            continue;
        }
        if let Some(spec) = compile_listener(l, &p, &cluster_names, errs) {
            if let Some(other) = listener_addrs.insert(spec.address, spec.name.clone()) {
                errs.push(
                    p.field("address").to_string(),
                    format!(
                        "address {} is already used by listener {other:?}",
                        spec.address
                    ),
                );
            }
            listeners.push(Arc::new(spec));
        }
    }

    let stats_flush_interval = b
        .stats_flush_interval
        .as_ref()
        .and_then(|d| duration(d, &root.field("stats_flush_interval"), errs))
        .unwrap_or(Duration::from_secs(5));

    if !errs.is_empty() {
        return None;
    }
    Some(Config {
        node,
        admin,
        listeners,
        clusters,
        stats_flush_interval,
        bootstrap_json,
    })
}

fn compile_admin(
    a: &envoy_api::pb::envoy::config::bootstrap::v3::Admin,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<AdminSpec> {
    let address = socket_address(a.address.as_ref(), &path.field("address"), errs)?;
    let mut access_logs = compile_access_logs(&a.access_log, &path.field("access_log"), errs);
    if !a.access_log_path.is_empty() {
        access_logs.push(AccessLogSpec {
            sink: sink_for_path(&a.access_log_path),
            format: Arc::new(Formatter::envoy_default()),
        });
    }
    Some(AdminSpec {
        address,
        access_logs,
    })
}

fn sink_for_path(p: &str) -> AccessLogSink {
    match p {
        "/dev/stdout" => AccessLogSink::Stdout,
        "/dev/stderr" => AccessLogSink::Stderr,
        other => AccessLogSink::File(other.to_string()),
    }
}

fn compile_listener(
    l: &ls::Listener,
    path: &FieldPath,
    clusters: &HashSet<String>,
    errs: &mut ConfigErrors,
) -> Option<ListenerSpec> {
    let address = socket_address(l.address.as_ref(), &path.field("address"), errs);
    if l.filter_chains.is_empty() {
        errs.push(
            path.field("filter_chains").to_string(),
            "a listener needs at least one filter chain",
        );
        return None;
    }
    if l.filter_chains.len() > 1 {
        errs.push(
            path.field("filter_chains").to_string(),
            "more than one filter chain (filter_chain_match) is not supported by Strait yet",
        );
        return None;
    }
    let fc_path = path.field("filter_chains").index(0);
    let fc = &l.filter_chains[0];
    let mut hcm_spec = None;
    for (i, f) in fc.filters.iter().enumerate() {
        let fp = fc_path.field("filters").index(i);
        let Some(ls::filter::ConfigType::TypedConfig(any)) = &f.config_type else {
            errs.push(
                fp.field("typed_config").to_string(),
                format!("filter {:?} needs a typed_config", f.name),
            );
            continue;
        };
        if type_name(any) != HCM_TYPE {
            errs.push(
                fp.field("typed_config").to_string(),
                format!(
                    "network filter {} is not supported by Strait yet",
                    type_name(any)
                ),
            );
            continue;
        }
        if i + 1 != fc.filters.len() {
            errs.push(
                fp.to_string(),
                "the http_connection_manager must be the last network filter",
            );
        }
        let tp = fp.field("typed_config");
        if let Some(h) = unpack::<hcm::HttpConnectionManager>(any, &tp, errs) {
            hcm_spec = compile_hcm(&h, &tp, clusters, errs);
            if let Some(spec) = hcm_spec.as_mut() {
                spec.buffer_limit_bytes = l
                    .per_connection_buffer_limit_bytes
                    .as_ref()
                    .map(|v| v.value)
                    .unwrap_or(DEFAULT_BUFFER_LIMIT);
            }
        }
    }
    let address = address?;
    let Some(hcm) = hcm_spec else {
        if errs.is_empty() {
            errs.push(
                fc_path.field("filters").to_string(),
                "an http_connection_manager filter is required",
            );
        }
        return None;
    };
    let stat_prefix = if l.stat_prefix.is_empty() {
        format!("listener.{}", listener_stat_address(&address))
    } else {
        format!("listener.{}", l.stat_prefix)
    };
    Some(ListenerSpec {
        name: if l.name.is_empty() {
            address.to_string()
        } else {
            l.name.clone()
        },
        address,
        stat_prefix,
        reuse_port: l
            .enable_reuse_port
            .as_ref()
            .map(|v| v.value)
            .unwrap_or(true),
        buffer_limit_bytes: l
            .per_connection_buffer_limit_bytes
            .as_ref()
            .map(|v| v.value)
            .unwrap_or(1024 * 1024),
        hcm: Arc::new(hcm),
    })
}

/// Envoy names listener stats after the address with `:` turned into `_`:
/// `0.0.0.0_10000`, `[__1]_10000`.
pub fn listener_stat_address(a: &SocketAddr) -> String {
    match a {
        SocketAddr::V4(v4) => format!("{}_{}", v4.ip(), v4.port()),
        SocketAddr::V6(v6) => format!("[{}]_{}", v6.ip().to_string().replace(':', "_"), v6.port()),
    }
}

fn compile_hcm(
    h: &hcm::HttpConnectionManager,
    path: &FieldPath,
    clusters: &HashSet<String>,
    errs: &mut ConfigErrors,
) -> Option<HcmSpec> {
    use hcm::http_connection_manager::{CodecType, RouteSpecifier, ServerHeaderTransformation};
    let codec = match CodecType::try_from(h.codec_type) {
        Ok(CodecType::Auto) => Codec::Auto,
        Ok(CodecType::Http1) => Codec::Http1,
        Ok(CodecType::Http2) => Codec::Http2,
        _ => {
            errs.push(
                path.field("codec_type").to_string(),
                "only AUTO, HTTP1 and HTTP2 are supported by Strait yet",
            );
            Codec::Auto
        }
    };
    let routes = match &h.route_specifier {
        Some(RouteSpecifier::RouteConfig(rc)) => {
            crate::route::compile_route_config(rc, &path.field("route_config"), clusters, errs)
        }
        Some(_) => {
            errs.push(path.to_string(), "only a static route_config is supported by Strait yet (rds, scoped_routes are not)");
            return None;
        }
        None => {
            errs.push(
                path.field("route_config").to_string(),
                "a route_config is required",
            );
            return None;
        }
    };
    // HTTP filters: the router, last.
    let mut suppress_envoy_headers = false;
    if h.http_filters.is_empty() {
        errs.push(
            path.field("http_filters").to_string(),
            "the router filter (envoy.filters.http.router) is required",
        );
    }
    for (i, f) in h.http_filters.iter().enumerate() {
        let fp = path.field("http_filters").index(i);
        let any = match &f.config_type {
            Some(hcm::http_filter::ConfigType::TypedConfig(any)) => any,
            _ => {
                errs.push(
                    fp.field("typed_config").to_string(),
                    format!("http filter {:?} needs a typed_config", f.name),
                );
                continue;
            }
        };
        if type_name(any) != ROUTER_TYPE {
            errs.push(
                fp.field("typed_config").to_string(),
                format!(
                    "http filter {} is not supported by Strait yet",
                    type_name(any)
                ),
            );
            continue;
        }
        if i + 1 != h.http_filters.len() {
            errs.push(fp.to_string(), "the router must be the last http filter");
        }
        if let Some(r) = unpack::<Router>(any, &fp.field("typed_config"), errs) {
            suppress_envoy_headers = r.suppress_envoy_headers;
        }
    }
    let common = h.common_http_protocol_options.unwrap_or_default();
    let cp = path.field("common_http_protocol_options");
    let idle_timeout = match &common.idle_timeout {
        Some(d) => duration(d, &cp.field("idle_timeout"), errs).filter(|d| !d.is_zero()),
        None => Some(Duration::from_secs(3600)),
    };
    let h1 = h.http_protocol_options.clone().unwrap_or_default();
    let h2 = h.http2_protocol_options.clone().unwrap_or_default();
    let server_header = match ServerHeaderTransformation::try_from(h.server_header_transformation) {
        Ok(ServerHeaderTransformation::AppendIfAbsent) => ServerHeader::AppendIfAbsent,
        Ok(ServerHeaderTransformation::PassThrough) => ServerHeader::PassThrough,
        _ => ServerHeader::Overwrite,
    };
    let opt_duration = |d: &Option<envoy_api::pb::google::protobuf::Duration>,
                        name: &str,
                        errs: &mut ConfigErrors| {
        d.as_ref()
            .and_then(|d| duration(d, &path.field(name), errs))
            .filter(|d| !d.is_zero())
    };
    let stream_idle_timeout = match &h.stream_idle_timeout {
        Some(_) => opt_duration(&h.stream_idle_timeout, "stream_idle_timeout", errs),
        None => Some(Duration::from_secs(300)),
    };
    let request_timeout = opt_duration(&h.request_timeout, "request_timeout", errs);
    let drain_timeout = h
        .drain_timeout
        .as_ref()
        .and_then(|d| duration(d, &path.field("drain_timeout"), errs))
        .unwrap_or(Duration::from_secs(5));
    let access_logs = compile_access_logs(&h.access_log, &path.field("access_log"), errs);
    let upgrades = crate::route::upgrade::compile_hcm(
        &h.upgrade_configs,
        h2.allow_connect,
        &path.field("upgrade_configs"),
        errs,
    );
    Some(HcmSpec {
        stat_prefix: h.stat_prefix.clone(),
        buffer_limit_bytes: DEFAULT_BUFFER_LIMIT,
        codec,
        routes: Arc::new(routes?),
        server_name: if h.server_name.is_empty() {
            "envoy".into()
        } else {
            h.server_name.clone()
        },
        server_header,
        use_remote_address: h
            .use_remote_address
            .as_ref()
            .map(|v| v.value)
            .unwrap_or(false),
        xff_num_trusted_hops: h.xff_num_trusted_hops,
        skip_xff_append: h.skip_xff_append,
        generate_request_id: h
            .generate_request_id
            .as_ref()
            .map(|v| v.value)
            .unwrap_or(true),
        preserve_external_request_id: h.preserve_external_request_id,
        always_set_request_id_in_response: h.always_set_request_id_in_response,
        max_request_headers_kb: h
            .max_request_headers_kb
            .as_ref()
            .map(|v| v.value)
            .unwrap_or(60),
        max_headers_count: common
            .max_headers_count
            .as_ref()
            .map(|v| v.value)
            .unwrap_or(100),
        idle_timeout,
        stream_idle_timeout,
        request_timeout,
        drain_timeout,
        accept_http_10: h1.accept_http_10,
        default_host_for_http_10: Some(h1.default_host_for_http_10).filter(|s| !s.is_empty()),
        via: Some(h.via.clone()).filter(|s| !s.is_empty()),
        suppress_envoy_headers,
        h2: H2Settings {
            max_concurrent_streams: h2.max_concurrent_streams.as_ref().map(|v| v.value),
            initial_stream_window_size: h2.initial_stream_window_size.as_ref().map(|v| v.value),
            initial_connection_window_size: h2
                .initial_connection_window_size
                .as_ref()
                .map(|v| v.value),
        },
        access_logs,
        upgrades,
    })
}
