//! What Strait implements, field by field. A field that is set in a config but not listed
//! here is an error naming its path: nothing is silently ignored. This table is also the
//! source of `docs/supported-fields.md` (a test keeps the two in sync; regenerate with
//! `STRAIT_REGEN_DOCS=1 cargo test -p strait-config supported`).

use prost_reflect::{DynamicMessage, ReflectMessage, Value};

use crate::error::{ConfigErrors, FieldPath};
use crate::load::unpack_any;

/// (message full name, fields Strait implements).
pub const SUPPORTED_FIELDS: &[(&str, &[&str])] = &[
    (
        "envoy.config.bootstrap.v3.Bootstrap",
        &["node", "static_resources", "admin", "stats_flush_interval"],
    ),
    (
        "envoy.config.core.v3.Node",
        &["id", "cluster", "metadata", "locality", "user_agent_name"],
    ),
    (
        "envoy.config.core.v3.Locality",
        &["region", "zone", "sub_zone"],
    ),
    (
        "envoy.config.bootstrap.v3.Bootstrap.StaticResources",
        &["listeners", "clusters"],
    ),
    (
        "envoy.config.bootstrap.v3.Admin",
        &["address", "access_log", "access_log_path"],
    ),
    ("envoy.config.core.v3.Address", &["socket_address"]),
    (
        "envoy.config.core.v3.SocketAddress",
        &["address", "port_value", "protocol", "ipv4_compat"],
    ),
    (
        "envoy.config.listener.v3.Listener",
        &[
            "name",
            "address",
            "filter_chains",
            "stat_prefix",
            "per_connection_buffer_limit_bytes",
            "enable_reuse_port",
        ],
    ),
    ("envoy.config.listener.v3.FilterChain", &["filters", "name"]),
    ("envoy.config.listener.v3.Filter", &["name", "typed_config"]),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        &[
            "codec_type",
            "stat_prefix",
            "route_config",
            "http_filters",
            "server_name",
            "server_header_transformation",
            "use_remote_address",
            "xff_num_trusted_hops",
            "skip_xff_append",
            "generate_request_id",
            "preserve_external_request_id",
            "always_set_request_id_in_response",
            "max_request_headers_kb",
            "common_http_protocol_options",
            "http_protocol_options",
            "http2_protocol_options",
            "stream_idle_timeout",
            "request_timeout",
            "drain_timeout",
            "access_log",
            "via",
        ],
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter",
        &["name", "typed_config"],
    ),
    (
        "envoy.extensions.filters.http.router.v3.Router",
        &["suppress_envoy_headers"],
    ),
    (
        "envoy.config.core.v3.DataSource",
        &["inline_string", "inline_bytes", "filename"],
    ),
    (
        "envoy.config.cluster.v3.Cluster",
        &[
            "name",
            "type",
            "connect_timeout",
            "lb_policy",
            "load_assignment",
            "typed_extension_protocol_options",
            "per_connection_buffer_limit_bytes",
            "common_http_protocol_options",
        ],
    ),
    (
        "envoy.config.endpoint.v3.ClusterLoadAssignment",
        &["cluster_name", "endpoints"],
    ),
    (
        "envoy.config.endpoint.v3.LocalityLbEndpoints",
        &["lb_endpoints", "locality"],
    ),
    (
        "envoy.config.endpoint.v3.LbEndpoint",
        &["endpoint", "load_balancing_weight"],
    ),
    (
        "envoy.config.endpoint.v3.Endpoint",
        &["address", "hostname"],
    ),
    (
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        &["explicit_http_config", "common_http_protocol_options"],
    ),
    (
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig",
        &["http_protocol_options", "http2_protocol_options"],
    ),
    (
        "envoy.config.core.v3.Http1ProtocolOptions",
        &["accept_http_10", "default_host_for_http_10"],
    ),
    (
        "envoy.config.core.v3.Http2ProtocolOptions",
        &[
            "max_concurrent_streams",
            "initial_stream_window_size",
            "initial_connection_window_size",
        ],
    ),
    (
        "envoy.config.core.v3.HttpProtocolOptions",
        &[
            "idle_timeout",
            "max_headers_count",
            "max_requests_per_connection",
        ],
    ),
    (
        "envoy.config.accesslog.v3.AccessLog",
        &["name", "typed_config"],
    ),
    (
        "envoy.extensions.access_loggers.file.v3.FileAccessLog",
        &["path", "log_format", "format", "json_format"],
    ),
    (
        "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
        &["log_format"],
    ),
    (
        "envoy.extensions.access_loggers.stream.v3.StderrAccessLog",
        &["log_format"],
    ),
    (
        "envoy.config.core.v3.SubstitutionFormatString",
        &[
            "text_format",
            "text_format_source",
            "json_format",
            "content_type",
        ],
    ),
];

/// Extension types (`typed_config` / `typed_extension_protocol_options` payloads) Strait
/// implements.
pub const SUPPORTED_EXTENSIONS: &[&str] = &[
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "envoy.extensions.filters.http.router.v3.Router",
    "envoy.extensions.access_loggers.file.v3.FileAccessLog",
    "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
    "envoy.extensions.access_loggers.stream.v3.StderrAccessLog",
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate",
    crate::cluster::health::REDIS_TYPE,
    "envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig",
];

/// Every (message, fields) entry: this table plus the ones the routing modules keep next
/// to their code. A message may appear in several tables; its fields are the union.
fn all_tables() -> impl Iterator<Item = &'static (&'static str, &'static [&'static str])> {
    SUPPORTED_FIELDS
        .iter()
        .chain(crate::route::supported_fields())
        .chain(crate::cluster::supported_fields())
}

/// Every supported extension type: [`SUPPORTED_EXTENSIONS`] plus the per-module lists.
fn all_extensions() -> impl Iterator<Item = &'static &'static str> {
    SUPPORTED_EXTENSIONS
        .iter()
        .chain(crate::cluster::lb::SUPPORTED_EXTENSIONS.iter())
        .chain(crate::route::forward::SUPPORTED_EXTENSIONS.iter())
}

fn is_supported(message: &str, field: &str) -> bool {
    all_tables().any(|(m, fs)| *m == message && fs.contains(&field))
}

/// Reports every set field (at any depth, inside `Any` payloads too) that Strait does not
/// implement yet.
pub fn check_supported(msg: &DynamicMessage, path: &FieldPath, errs: &mut ConfigErrors) {
    let desc = msg.descriptor();
    let name = desc.full_name();
    if name == "google.protobuf.Any" {
        let type_name = msg
            .get_field_by_name("type_url")
            .and_then(|v| {
                v.as_str()
                    .map(|s| envoy_api::type_name_of_url(s).to_string())
            })
            .unwrap_or_default();
        if type_name.is_empty() {
            return;
        }
        if !all_extensions().any(|e| *e == type_name) {
            errs.push(
                path.to_string(),
                format!("extension type {type_name} is not supported by Strait yet"),
            );
            return;
        }
        match unpack_any(msg, path) {
            Ok(Some(inner)) => check_supported(&inner, path, errs),
            Ok(None) => {}
            Err(e) => errs.0.extend(e.0),
        }
        return;
    }
    if name.starts_with("google.protobuf.") {
        return;
    }
    for (field, value) in msg.fields() {
        let fpath = path.field(field.name());
        if !is_supported(name, field.name()) {
            errs.push(fpath.to_string(), "is not supported by Strait yet");
            continue;
        }
        match value {
            Value::Message(m) => check_supported(m, &fpath, errs),
            Value::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Value::Message(m) = item {
                        check_supported(m, &fpath.index(i), errs);
                    }
                }
            }
            Value::Map(entries) => {
                for (k, v) in entries {
                    if let Value::Message(m) = v {
                        let key = k
                            .as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| format!("{k:?}"));
                        check_supported(m, &fpath.key(&key), errs);
                    }
                }
            }
            _ => {}
        }
    }
}

/// The supported-field table as Markdown (the body of `docs/supported-fields.md`).
pub fn render_markdown() -> String {
    let mut out = String::from(
        "# Envoy fields Strait implements\n\n\
         Generated from `crates/strait-config/src/supported.rs`. A field that is set in a config\n\
         but not listed here is refused with its path and \"is not supported by Strait yet\".\n\
         Well-known `google.protobuf.*` types (durations, wrappers, Struct) are accepted wherever\n\
         a listed field uses them.\n\n## Extensions (`typed_config` types)\n\n",
    );
    for e in all_extensions() {
        out.push_str(&format!("- `{e}`\n"));
    }
    out.push_str("\n## Fields by message\n\n| message | fields |\n|---|---|\n");
    let mut merged: Vec<(&str, Vec<&str>)> = Vec::new();
    for (m, fields) in all_tables() {
        match merged.iter_mut().find(|(n, _)| n == m) {
            Some((_, fs)) => fs.extend(fields.iter().copied()),
            None => merged.push((m, fields.to_vec())),
        }
    }
    merged.sort_by(|a, b| a.0.cmp(b.0));
    for (m, fields) in merged {
        let f: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
        let f = if f.is_empty() {
            "(none; the message may be empty)".to_string()
        } else {
            f.join(", ")
        };
        out.push_str(&format!("| `{m}` | {f} |\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_fields_exist_in_the_descriptors() {
        let pool = envoy_api::pool();
        for (m, fields) in all_tables() {
            let desc = pool
                .get_message_by_name(m)
                .unwrap_or_else(|| panic!("no message {m}"));
            for f in *fields {
                assert!(desc.get_field_by_name(f).is_some(), "{m} has no field {f}");
            }
        }
        for e in all_extensions() {
            assert!(
                pool.get_message_by_name(e).is_some(),
                "no extension type {e}"
            );
        }
    }

    #[test]
    fn supported_fields_doc_is_in_sync() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/supported-fields.md");
        let want = render_markdown();
        if std::env::var_os("STRAIT_REGEN_DOCS").is_some() {
            std::fs::write(&path, &want).expect("write docs/supported-fields.md");
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "docs/supported-fields.md is stale: run STRAIT_REGEN_DOCS=1 cargo test -p strait-config supported"
        );
    }
}
