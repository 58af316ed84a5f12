// Envoy still accepts the deprecated fields read here (file log `format`, admin
// `access_log_path`, ...), so Strait does too.
#![allow(deprecated)]

//! Typed Envoy protos -> Strait's runtime model (`model.rs`), with the semantic checks that
//! PGV rules cannot express: routes to undefined clusters, duplicate names, regexes,
//! addresses, values Strait does not implement yet.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use envoy_api::pb::envoy::config::accesslog::v3 as al;
use envoy_api::pb::envoy::config::bootstrap::v3::Bootstrap;
use envoy_api::pb::envoy::config::cluster::v3 as cl;
use envoy_api::pb::envoy::config::core::v3 as core;
use envoy_api::pb::envoy::config::listener::v3 as ls;
use envoy_api::pb::envoy::config::route::v3 as rt;
use envoy_api::pb::envoy::extensions::access_loggers::file::v3 as file_log;
use envoy_api::pb::envoy::extensions::access_loggers::stream::v3 as stream_log;
use envoy_api::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_api::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_api::pb::envoy::extensions::upstreams::http::v3 as uphttp;
use envoy_api::pb::google::protobuf::Any;
use prost::Message;
use strait_accesslog::Formatter;

use crate::error::{ConfigErrors, FieldPath};
use crate::model::*;

const HCM_TYPE: &str =
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ROUTER_TYPE: &str = "envoy.extensions.filters.http.router.v3.Router";
const HTTP_OPTIONS_TYPE: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

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

fn duration(
    d: &envoy_api::pb::google::protobuf::Duration,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<Duration> {
    if d.seconds < 0 || d.nanos < 0 {
        errs.push(path.to_string(), "duration must not be negative");
        return None;
    }
    Some(Duration::new(d.seconds as u64, d.nanos as u32))
}

fn socket_address(
    a: Option<&core::Address>,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<SocketAddr> {
    use core::address::Address as A;
    let Some(a) = a else {
        errs.push(path.to_string(), "is required");
        return None;
    };
    match &a.address {
        Some(A::SocketAddress(sa)) => {
            let sp = path.field("socket_address");
            if sa.protocol != core::socket_address::Protocol::Tcp as i32 {
                errs.push(
                    sp.field("protocol").to_string(),
                    "only TCP is supported by Strait yet",
                );
                return None;
            }
            let port = match &sa.port_specifier {
                Some(core::socket_address::PortSpecifier::PortValue(p)) => *p,
                Some(_) => {
                    errs.push(
                        sp.field("named_port").to_string(),
                        "is not supported by Strait yet",
                    );
                    return None;
                }
                None => 0,
            };
            let Ok(port) = u16::try_from(port) else {
                errs.push(
                    sp.field("port_value").to_string(),
                    format!("port {port} is above 65535"),
                );
                return None;
            };
            match sa.address.parse::<IpAddr>() {
                Ok(ip) => Some(SocketAddr::new(ip, port)),
                Err(_) => {
                    errs.push(
                        sp.field("address").to_string(),
                        format!(
                            "{:?} is not an IP address (STATIC addresses must be IPs)",
                            sa.address
                        ),
                    );
                    None
                }
            }
        }
        Some(A::Pipe(_)) => {
            errs.push(
                path.field("pipe").to_string(),
                "is not supported by Strait yet",
            );
            None
        }
        Some(A::EnvoyInternalAddress(_)) => {
            errs.push(
                path.field("envoy_internal_address").to_string(),
                "is not supported by Strait yet",
            );
            None
        }
        None => {
            errs.push(path.to_string(), "an address must be set");
            None
        }
    }
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

fn unpack<T: Message + Default>(any: &Any, path: &FieldPath, errs: &mut ConfigErrors) -> Option<T> {
    match T::decode(any.value.as_slice()) {
        Ok(v) => Some(v),
        Err(e) => {
            errs.push(
                path.to_string(),
                format!("cannot decode {}: {e}", any.type_url),
            );
            None
        }
    }
}

fn type_name(any: &Any) -> &str {
    envoy_api::type_name_of_url(&any.type_url)
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
            compile_routes(rc, &path.field("route_config"), clusters, errs)
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
    Some(HcmSpec {
        stat_prefix: h.stat_prefix.clone(),
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
    })
}

fn compile_routes(
    rc: &rt::RouteConfiguration,
    path: &FieldPath,
    clusters: &HashSet<String>,
    errs: &mut ConfigErrors,
) -> Option<RouteTable> {
    let mut table = RouteTable {
        name: rc.name.clone(),
        ignore_port_in_host_matching: rc.ignore_port_in_host_matching,
        ..Default::default()
    };
    let mut seen_domains: HashMap<String, String> = HashMap::new();
    let mut vhost_names = HashSet::new();
    for (vi, vh) in rc.virtual_hosts.iter().enumerate() {
        let vp = path.field("virtual_hosts").index(vi);
        if !vhost_names.insert(vh.name.clone()) {
            errs.push(
                vp.field("name").to_string(),
                format!("duplicate virtual host name {:?}", vh.name),
            );
        }
        let idx = table.vhosts.len();
        for (di, d) in vh.domains.iter().enumerate() {
            let dp = vp.field("domains").index(di);
            let d = d.to_ascii_lowercase();
            if let Some(other) = seen_domains.insert(d.clone(), vh.name.clone()) {
                errs.push(
                    dp.to_string(),
                    format!(
                        "domain {d:?} is used by virtual hosts {other:?} and {:?}",
                        vh.name
                    ),
                );
                continue;
            }
            if d == "*" {
                table.default = Some(idx);
            } else if let Some(suffix) = d.strip_prefix('*') {
                table.suffix.push((suffix.to_string(), idx));
            } else if let Some(prefix) = d.strip_suffix('*') {
                table.prefix.push((prefix.to_string(), idx));
            } else if d.contains('*') {
                errs.push(
                    dp.to_string(),
                    format!("domain {d:?}: a wildcard may only be the first or last character"),
                );
            } else {
                table.exact.insert(d, idx);
            }
        }
        let mut routes = Vec::new();
        for (ri, r) in vh.routes.iter().enumerate() {
            let rp = vp.field("routes").index(ri);
            if let Some(route) = compile_route(r, &rp, clusters, errs) {
                routes.push(route);
            }
        }
        table.vhosts.push(VirtualHost {
            name: vh.name.clone(),
            routes,
        });
    }
    // Longest wildcard first; equal lengths keep config order (stable sort).
    table.suffix.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
    table.prefix.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
    Some(table)
}

fn compile_route(
    r: &rt::Route,
    path: &FieldPath,
    clusters: &HashSet<String>,
    errs: &mut ConfigErrors,
) -> Option<Route> {
    use rt::route_match::PathSpecifier as PS;
    let mp = path.field("match");
    let Some(m) = &r.r#match else {
        errs.push(mp.to_string(), "is required");
        return None;
    };
    let case_sensitive = m.case_sensitive.as_ref().map(|v| v.value).unwrap_or(true);
    let matcher = match &m.path_specifier {
        Some(PS::Prefix(p)) => PathMatcher::Prefix {
            prefix: p.clone(),
            case_sensitive,
        },
        Some(PS::Path(p)) => PathMatcher::Path {
            path: p.clone(),
            case_sensitive,
        },
        Some(PS::SafeRegex(re)) => {
            // Envoy's safe_regex must match the whole path: anchor it.
            match regex::Regex::new(&re.regex)
                .and_then(|_| regex::Regex::new(&format!("^(?:{})$", re.regex)))
            {
                Ok(re) => PathMatcher::Regex(re),
                Err(e) => {
                    errs.push(
                        mp.field("safe_regex").field("regex").to_string(),
                        format!("invalid regex {:?}: {e}", re.regex),
                    );
                    return None;
                }
            }
        }
        Some(_) => {
            errs.push(mp.to_string(), "this path matcher is not supported by Strait yet (prefix, path and safe_regex are)");
            return None;
        }
        None => {
            errs.push(
                mp.to_string(),
                "one of prefix, path or safe_regex must be set",
            );
            return None;
        }
    };
    use rt::route::Action as A;
    let action = match &r.action {
        Some(A::Route(ra)) => {
            let ap = path.field("route");
            let cluster = match &ra.cluster_specifier {
                Some(rt::route_action::ClusterSpecifier::Cluster(c)) => c.clone(),
                _ => {
                    errs.push(
                        ap.to_string(),
                        "only `cluster` is supported by Strait yet as the cluster specifier",
                    );
                    return None;
                }
            };
            if !clusters.contains(&cluster) {
                errs.push(
                    ap.field("cluster").to_string(),
                    format!("route refers to undefined cluster {cluster:?}"),
                );
            }
            let timeout = match &ra.timeout {
                Some(d) => duration(d, &ap.field("timeout"), errs).filter(|d| !d.is_zero()),
                None => Some(Duration::from_secs(15)),
            };
            // ClusterNotFoundResponseCode: SERVICE_UNAVAILABLE (0) => 503, NOT_FOUND (1) => 404,
            // INTERNAL_SERVER_ERROR (2) => 500.
            let cluster_not_found_status = match ra.cluster_not_found_response_code {
                1 => 404,
                2 => 500,
                _ => 503,
            };
            RouteAction::Cluster {
                cluster: Arc::from(cluster.as_str()),
                timeout,
                cluster_not_found_status,
            }
        }
        Some(A::DirectResponse(dr)) => {
            let dp = path.field("direct_response");
            let Ok(status) = u16::try_from(dr.status) else {
                errs.push(dp.field("status").to_string(), "invalid status");
                return None;
            };
            let body = match &dr.body {
                Some(ds) => Some(data_source(ds, &dp.field("body"), errs)?),
                None => None,
            };
            RouteAction::DirectResponse { status, body }
        }
        Some(_) => {
            errs.push(
                path.to_string(),
                "this route action is not supported by Strait yet (route and direct_response are)",
            );
            return None;
        }
        None => {
            errs.push(
                path.to_string(),
                "one of route, redirect or direct_response must be set",
            );
            return None;
        }
    };
    Some(Route {
        name: r.name.clone(),
        matcher,
        action,
    })
}

fn data_source(
    ds: &core::DataSource,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<bytes::Bytes> {
    use core::data_source::Specifier as S;
    match &ds.specifier {
        Some(S::InlineString(s)) => Some(bytes::Bytes::from(s.clone())),
        Some(S::InlineBytes(b)) => Some(bytes::Bytes::from(b.clone())),
        Some(S::Filename(f)) => match std::fs::read(f) {
            Ok(b) => Some(bytes::Bytes::from(b)),
            Err(e) => {
                errs.push(
                    path.field("filename").to_string(),
                    format!("cannot read {f:?}: {e}"),
                );
                None
            }
        },
        Some(_) => {
            errs.push(
                path.to_string(),
                "this data source is not supported by Strait yet",
            );
            None
        }
        None => Some(bytes::Bytes::new()),
    }
}

fn compile_cluster(
    c: &cl::Cluster,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<ClusterSpec> {
    match &c.cluster_discovery_type {
        None => {}
        Some(cl::cluster::ClusterDiscoveryType::Type(t))
            if *t == cl::cluster::DiscoveryType::Static as i32 => {}
        Some(cl::cluster::ClusterDiscoveryType::Type(t)) => {
            let name = cl::cluster::DiscoveryType::try_from(*t)
                .map(|d| d.as_str_name())
                .unwrap_or("?");
            errs.push(
                path.field("type").to_string(),
                format!("cluster type {name} is not supported by Strait yet (STATIC is)"),
            );
            return None;
        }
        Some(_) => {
            errs.push(
                path.field("cluster_type").to_string(),
                "is not supported by Strait yet",
            );
            return None;
        }
    }
    if c.lb_policy != cl::cluster::LbPolicy::RoundRobin as i32 {
        let name = cl::cluster::LbPolicy::try_from(c.lb_policy)
            .map(|d| d.as_str_name())
            .unwrap_or("?");
        errs.push(
            path.field("lb_policy").to_string(),
            format!("lb_policy {name} is not supported by Strait yet (ROUND_ROBIN is)"),
        );
        return None;
    }
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
                let Some(address) = socket_address(
                    e.address.as_ref(),
                    &bp.field("endpoint").field("address"),
                    errs,
                ) else {
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
                });
            }
        }
    }
    // Upstream protocol: typed_extension_protocol_options' HttpProtocolOptions.
    let mut protocol = UpstreamProtocol::Http1;
    let mut h2 = H2Settings::default();
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
    Some(ClusterSpec {
        name: c.name.clone(),
        connect_timeout,
        lb_policy: LbPolicy::RoundRobin,
        endpoints,
        protocol,
        h2,
        idle_timeout,
        max_requests_per_connection: common
            .max_requests_per_connection
            .as_ref()
            .map(|v| v.value)
            .filter(|v| *v > 0),
        buffer_limit_bytes: c
            .per_connection_buffer_limit_bytes
            .as_ref()
            .map(|v| v.value)
            .unwrap_or(1024 * 1024),
    })
}

fn compile_access_logs(
    logs: &[al::AccessLog],
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Vec<AccessLogSpec> {
    let mut out = Vec::new();
    for (i, l) in logs.iter().enumerate() {
        let lp = path.index(i);
        let Some(al::access_log::ConfigType::TypedConfig(any)) = &l.config_type else {
            errs.push(
                lp.field("typed_config").to_string(),
                format!("access log {:?} needs a typed_config", l.name),
            );
            continue;
        };
        let tp = lp.field("typed_config");
        let (sink, format) = match type_name(any) {
            "envoy.extensions.access_loggers.file.v3.FileAccessLog" => {
                let Some(f) = unpack::<file_log::FileAccessLog>(any, &tp, errs) else {
                    continue;
                };
                use file_log::file_access_log::AccessLogFormat as F;
                let format = match &f.access_log_format {
                    Some(F::LogFormat(sfs)) => {
                        substitution_format(sfs, &tp.field("log_format"), errs)
                    }
                    Some(F::Format(s)) => parse_text(s, &tp.field("format"), errs),
                    Some(F::JsonFormat(st)) => parse_json(st, &tp.field("json_format"), errs),
                    Some(_) => {
                        errs.push(
                            tp.to_string(),
                            "this access log format is not supported by Strait yet",
                        );
                        None
                    }
                    None => Some(Formatter::envoy_default()),
                };
                if f.path.is_empty() {
                    errs.push(tp.field("path").to_string(), "must not be empty");
                }
                (sink_for_path(&f.path), format)
            }
            "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog" => {
                let Some(f) = unpack::<stream_log::StdoutAccessLog>(any, &tp, errs) else {
                    continue;
                };
                let format = match &f.access_log_format {
                    Some(stream_log::stdout_access_log::AccessLogFormat::LogFormat(sfs)) => {
                        substitution_format(sfs, &tp.field("log_format"), errs)
                    }
                    None => Some(Formatter::envoy_default()),
                };
                (AccessLogSink::Stdout, format)
            }
            "envoy.extensions.access_loggers.stream.v3.StderrAccessLog" => {
                let Some(f) = unpack::<stream_log::StderrAccessLog>(any, &tp, errs) else {
                    continue;
                };
                let format = match &f.access_log_format {
                    Some(stream_log::stderr_access_log::AccessLogFormat::LogFormat(sfs)) => {
                        substitution_format(sfs, &tp.field("log_format"), errs)
                    }
                    None => Some(Formatter::envoy_default()),
                };
                (AccessLogSink::Stderr, format)
            }
            other => {
                errs.push(
                    tp.to_string(),
                    format!("access logger {other} is not supported by Strait yet"),
                );
                continue;
            }
        };
        if let Some(format) = format {
            out.push(AccessLogSpec {
                sink,
                format: Arc::new(format),
            });
        }
    }
    out
}

fn parse_text(s: &str, path: &FieldPath, errs: &mut ConfigErrors) -> Option<Formatter> {
    match Formatter::parse_text(s) {
        Ok(f) => Some(f),
        Err(e) => {
            errs.push(path.to_string(), e.to_string());
            None
        }
    }
}

fn parse_json(
    st: &envoy_api::pb::google::protobuf::Struct,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<Formatter> {
    let map = struct_to_json(st);
    match Formatter::parse_json(&map) {
        Ok(f) => Some(f),
        Err(e) => {
            errs.push(path.to_string(), e.to_string());
            None
        }
    }
}

fn substitution_format(
    sfs: &core::SubstitutionFormatString,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<Formatter> {
    use core::substitution_format_string::Format as F;
    match &sfs.format {
        Some(F::TextFormat(s)) => parse_text(s, &path.field("text_format"), errs),
        Some(F::TextFormatSource(ds)) => {
            let bytes = data_source(ds, &path.field("text_format_source"), errs)?;
            let s = String::from_utf8_lossy(&bytes).into_owned();
            parse_text(&s, &path.field("text_format_source"), errs)
        }
        Some(F::JsonFormat(st)) => parse_json(st, &path.field("json_format"), errs),
        None => Some(Formatter::envoy_default()),
    }
}

/// google.protobuf.Struct -> JSON object.
pub fn struct_to_json(
    st: &envoy_api::pb::google::protobuf::Struct,
) -> serde_json::Map<String, serde_json::Value> {
    st.fields
        .iter()
        .map(|(k, v)| (k.clone(), value_to_json(v)))
        .collect()
}

fn value_to_json(v: &envoy_api::pb::google::protobuf::Value) -> serde_json::Value {
    use envoy_api::pb::google::protobuf::value::Kind as K;
    match &v.kind {
        Some(K::NullValue(_)) | None => serde_json::Value::Null,
        Some(K::NumberValue(n)) => serde_json::Number::from_f64(*n)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        Some(K::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(K::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(K::StructValue(s)) => serde_json::Value::Object(struct_to_json(s)),
        Some(K::ListValue(l)) => {
            serde_json::Value::Array(l.values.iter().map(value_to_json).collect())
        }
    }
}
