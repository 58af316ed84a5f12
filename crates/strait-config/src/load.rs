//! Text -> `DynamicMessage` with Envoy's JSON mapping rules.
//!
//! YAML and JSON documents are first read into a JSON tree, normalised where Envoy is laxer
//! than canonical proto JSON (booleans written `yes`/`on`, lowercase enum names, numbers
//! where strings are expected, wrappers written `{value: N}`, `TypedStruct`-wrapped
//! extensions), then deserialised reflectively against the descriptor with unknown fields
//! denied, tracking the field path for the error message.

use std::path::Path;

use prost::Message;
use prost_reflect::{DynamicMessage, Kind, MessageDescriptor};
use serde_json::{Map, Value};

use crate::error::{ConfigErrors, FieldPath};

/// The document formats Envoy reads a bootstrap from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocFormat {
    Yaml,
    Json,
}

impl DocFormat {
    /// Envoy decides by extension: `.json` is JSON, `.yaml`/`.yml` YAML. YAML is a superset
    /// of JSON, so anything else is read as YAML too.
    pub fn from_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => DocFormat::Json,
            _ => DocFormat::Yaml,
        }
    }
}

/// Reads text into a JSON tree.
pub fn parse_document(text: &str, format: DocFormat) -> Result<Value, ConfigErrors> {
    let value: Value = match format {
        DocFormat::Json => serde_json::from_str(text)
            .map_err(|e| ConfigErrors::one("", format!("invalid JSON: {e}")))?,
        DocFormat::Yaml => serde_saphyr::from_str(text)
            .map_err(|e| ConfigErrors::one("", format!("invalid YAML: {e}")))?,
    };
    match value {
        Value::Object(_) => Ok(value),
        Value::Null => Ok(Value::Object(Map::new())),
        other => Err(ConfigErrors::one(
            "",
            format!(
                "the document must be a mapping, found {}",
                json_kind(&other)
            ),
        )),
    }
}

/// Parses a whole document into a message of type `desc`.
pub fn message_from_text(
    text: &str,
    format: DocFormat,
    desc: &MessageDescriptor,
) -> Result<DynamicMessage, ConfigErrors> {
    let value = parse_document(text, format)?;
    message_from_json(value, desc)
}

/// [`message_from_text`] with [`message_from_json_lenient`]'s pruning.
pub fn message_from_text_lenient(
    text: &str,
    format: DocFormat,
    desc: &MessageDescriptor,
) -> Result<(DynamicMessage, ConfigErrors), ConfigErrors> {
    let value = parse_document(text, format)?;
    message_from_json_lenient(value, desc)
}

/// Deserialises a JSON tree into a message of type `desc` with Envoy's rules.
pub fn message_from_json(
    value: Value,
    desc: &MessageDescriptor,
) -> Result<DynamicMessage, ConfigErrors> {
    let (msg, errs) = message_from_json_lenient(value, desc)?;
    errs.into_result(msg)
}

/// Like [`message_from_json`], but unknown fields and `Any`s of unknown types are pruned and
/// returned as errors beside the message, so later checks can report their problems in the
/// same run. A value that cannot be deserialised at all is still a hard error.
pub fn message_from_json_lenient(
    mut value: Value,
    desc: &MessageDescriptor,
) -> Result<(DynamicMessage, ConfigErrors), ConfigErrors> {
    let mut pruned = ConfigErrors::default();
    normalize_message(&mut value, desc, &FieldPath::root(), &mut pruned);
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(&value, &mut track);
    let opts = prost_reflect::DeserializeOptions::new().deny_unknown_fields(true);
    match DynamicMessage::deserialize_with_options(desc.clone(), de, &opts) {
        Ok(m) => Ok((m, pruned)),
        Err(e) => {
            let path = track.path().to_string();
            let mut path = if path == "." { String::new() } else { path };
            let msg = e.to_string();
            // The tracked path stops at the message holding the unknown key: add the key.
            if let Some(rest) = msg.strip_prefix("unrecognized field name ") {
                let key = rest.trim_matches(|c| c == '\'' || c == '"' || c == '`');
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            pruned.push(path, explain_serde_error(&msg));
            Err(pruned)
        }
    }
}

/// Proto `MergeFrom` of `overlay` into `base`: scalars replaced, messages merged, repeated
/// fields appended. This is how Envoy applies `--config-yaml` over `-c`.
pub fn merge_into(base: &mut DynamicMessage, overlay: &DynamicMessage) -> Result<(), ConfigErrors> {
    let bytes = overlay.encode_to_vec();
    base.merge(bytes.as_slice())
        .map_err(|e| ConfigErrors::one("", format!("cannot merge --config-yaml: {e}")))
}

fn explain_serde_error(msg: &str) -> String {
    // prost-reflect says "unrecognized field name 'x'"; keep its words but make the
    // unknown-field case read like Envoy's.
    if let Some(rest) = msg.strip_prefix("unrecognized field name ") {
        return format!("unknown field {rest}");
    }
    msg.to_string()
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

const TYPED_STRUCTS: [&str; 2] = ["xds.type.v3.TypedStruct", "udpa.type.v1.TypedStruct"];

fn is_wrapper(name: &str) -> bool {
    matches!(
        name,
        "google.protobuf.BoolValue"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.Int64Value"
            | "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
    )
}

/// Rewrites `value` in place so canonical proto JSON accepts what Envoy accepts, and prunes
/// what it cannot accept (unknown fields, `Any`s of unknown types), recording each with its
/// path, so one run reports all of them and the later checks still see the rest. Returns
/// false when `value` itself must be dropped.
fn normalize_message(
    value: &mut Value,
    desc: &MessageDescriptor,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> bool {
    let name = desc.full_name();
    if name == "google.protobuf.Any" {
        return normalize_any(value, path, errs);
    }
    if is_wrapper(name) {
        // Envoy accepts `{value: N}` for wrappers as well as the bare `N`.
        if let Value::Object(map) = value
            && map.len() == 1
            && let Some(inner) = map.remove("value")
        {
            *value = inner;
        }
        if let Some(field) = desc.get_field_by_name("value") {
            normalize_scalar(value, &field.kind());
        }
        return true;
    }
    if name.starts_with("google.protobuf.") {
        return true; // Duration, Struct, Timestamp...: canonical JSON only.
    }
    let Value::Object(map) = value else {
        return true;
    };
    let mut unknown = Vec::new();
    let mut dropped = Vec::new();
    for (key, v) in map.iter_mut() {
        let field = desc
            .get_field_by_name(key)
            .or_else(|| desc.get_field_by_json_name(key));
        let Some(field) = field else {
            errs.push(
                path.field(key).to_string(),
                format!("unknown field \"{key}\""),
            );
            unknown.push(key.clone());
            continue;
        };
        let fpath = path.field(field.name());
        if field.is_map() {
            if let (Value::Object(entries), Kind::Message(entry)) = (v, field.kind())
                && let Some(vf) = entry.map_entry_value_field().kind().as_message().cloned()
            {
                entries.retain(|k, ev| normalize_message(ev, &vf, &fpath.key(k), errs));
            }
            continue;
        }
        let kind = field.kind();
        if field.is_list() {
            if let Value::Array(items) = v {
                let mut i = 0;
                items.retain_mut(|item| {
                    let keep = normalize_value(item, &kind, &fpath.index(i), errs);
                    i += 1;
                    keep
                });
            }
        } else if !normalize_value(v, &kind, &fpath, errs) {
            dropped.push(key.clone());
        }
    }
    for k in unknown.iter().chain(dropped.iter()) {
        map.remove(k);
    }
    true
}

fn normalize_value(v: &mut Value, kind: &Kind, path: &FieldPath, errs: &mut ConfigErrors) -> bool {
    match kind {
        Kind::Message(m) => normalize_message(v, m, path, errs),
        other => {
            normalize_scalar(v, other);
            true
        }
    }
}

fn normalize_scalar(v: &mut Value, kind: &Kind) {
    match kind {
        Kind::Bool => {
            if let Value::String(s) = v {
                match s.to_ascii_lowercase().as_str() {
                    "true" | "yes" | "on" | "y" => *v = Value::Bool(true),
                    "false" | "no" | "off" | "n" => *v = Value::Bool(false),
                    _ => {}
                }
            }
        }
        Kind::String => match v {
            Value::Number(n) => *v = Value::String(n.to_string()),
            Value::Bool(b) => *v = Value::String(b.to_string()),
            _ => {}
        },
        Kind::Enum(e) => {
            if let Value::String(s) = v
                && e.get_value_by_name(s).is_none()
            {
                let upper = s.to_ascii_uppercase();
                if e.get_value_by_name(&upper).is_some() {
                    *s = upper;
                }
            }
        }
        _ => {}
    }
}

fn normalize_any(value: &mut Value, path: &FieldPath, errs: &mut ConfigErrors) -> bool {
    let Value::Object(map) = value else {
        return true;
    };
    let Some(Value::String(type_url)) = map.get("@type") else {
        return true; // deserialisation reports the missing @type
    };
    let type_name = envoy_api::type_name_of_url(type_url).to_string();
    if TYPED_STRUCTS.contains(&type_name.as_str()) {
        // {"@type": TypedStruct, type_url: X, value: {...}} -> {"@type": X, ...}
        let inner_url = match map.get("type_url") {
            Some(Value::String(s)) => s.clone(),
            _ => return true, // left as is: deserialisation reports the problem
        };
        let mut rewritten = match map.remove("value") {
            Some(Value::Object(m)) => m,
            Some(_) => return true,
            None => Map::new(),
        };
        rewritten.insert("@type".into(), Value::String(inner_url));
        *map = rewritten;
        return normalize_any(value, path, errs);
    }
    let Some(desc) = envoy_api::pool().get_message_by_name(&type_name) else {
        errs.push(
            path.field("@type").to_string(),
            format!("unknown type {type_url}"),
        );
        return false;
    };
    if desc.full_name().starts_with("google.protobuf.") {
        if let Some(inner) = map.get_mut("value") {
            normalize_message(inner, &desc, &path.field("value"), errs);
        }
        return true;
    }
    let ty = map.remove("@type");
    let mut rest = Value::Object(std::mem::take(map));
    normalize_message(&mut rest, &desc, path, errs);
    if let (Value::Object(rest), Some(ty)) = (rest, ty) {
        map.insert("@type".into(), ty);
        map.extend(rest);
    }
    true
}

/// Reads the config file named by `-c`, choosing the format by extension.
pub fn read_file(path: &Path) -> Result<(String, DocFormat), ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::one(
            "",
            format!("cannot read config file {}: {e}", path.display()),
        )
    })?;
    Ok((text, DocFormat::from_path(path)))
}

/// Decodes the payload of an `Any` into a dynamic message of its own type.
pub fn unpack_any(
    any: &DynamicMessage,
    path: &FieldPath,
) -> Result<Option<DynamicMessage>, ConfigErrors> {
    let type_url = any
        .get_field_by_name("type_url")
        .and_then(|v| v.as_str().map(str::to_string));
    let Some(type_url) = type_url else {
        return Ok(None);
    };
    if type_url.is_empty() {
        return Ok(None);
    }
    let name = envoy_api::type_name_of_url(&type_url);
    let Some(desc) = envoy_api::pool().get_message_by_name(name) else {
        return Err(ConfigErrors::one(
            path.field("@type").to_string(),
            format!("unknown type {type_url}"),
        ));
    };
    let bytes = any
        .get_field_by_name("value")
        .and_then(|v| v.as_bytes().cloned())
        .unwrap_or_default();
    DynamicMessage::decode(desc, bytes.as_ref())
        .map(Some)
        .map_err(|e| ConfigErrors::one(path.to_string(), format!("cannot decode {type_url}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bootstrap_desc() -> MessageDescriptor {
        envoy_api::pool()
            .get_message_by_name("envoy.config.bootstrap.v3.Bootstrap")
            .expect("bootstrap")
    }

    #[test]
    fn unknown_field_names_path() {
        let err = message_from_text(
            "static_resources:\n  clusters:\n  - name: a\n    bogus: 1\n",
            DocFormat::Yaml,
            &bootstrap_desc(),
        )
        .unwrap_err();
        let e = &err.0[0];
        assert_eq!(e.path, "static_resources.clusters[0].bogus");
        assert!(e.reason.contains("unknown field"), "{}", e.reason);
    }

    #[test]
    #[allow(deprecated)] // respect_dns_ttl is deprecated but Envoy still reads it
    fn lax_forms_are_accepted() {
        let text = r#"
static_resources:
  clusters:
  - name: a
    connect_timeout: 0.25s
    lb_policy: round_robin
    respect_dns_ttl: yes
    per_connection_buffer_limit_bytes: {value: 1024}
"#;
        let m = message_from_text(text, DocFormat::Yaml, &bootstrap_desc()).expect("parses");
        let b: envoy_api::pb::envoy::config::bootstrap::v3::Bootstrap =
            m.transcode_to().expect("transcodes");
        let c = &b.static_resources.expect("sr").clusters[0];
        assert!(c.respect_dns_ttl);
        assert_eq!(
            c.per_connection_buffer_limit_bytes
                .as_ref()
                .map(|v| v.value),
            Some(1024)
        );
        assert_eq!(
            c.connect_timeout.as_ref().map(|d| d.nanos),
            Some(250_000_000)
        );
    }

    #[test]
    fn camel_case_and_typed_any() {
        let text = r#"{"staticResources":{"listeners":[{"name":"l","filterChains":[{"filters":[{"name":"hcm","typedConfig":{"@type":"type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager","statPrefix":"x","codecType":"auto"}}]}]}]}}"#;
        let m = message_from_text(text, DocFormat::Json, &bootstrap_desc()).expect("parses");
        assert!(m.has_field_by_name("static_resources"));
    }

    #[test]
    fn typed_struct_is_unwrapped() {
        let text = r#"
static_resources:
  listeners:
  - name: l
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/xds.type.v3.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          value:
            stat_prefix: x
"#;
        message_from_text(text, DocFormat::Yaml, &bootstrap_desc()).expect("parses");
    }

    #[test]
    fn bad_type_url_is_an_error() {
        let text = r#"
static_resources:
  listeners:
  - name: l
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.nope.Nope
"#;
        let err = message_from_text(text, DocFormat::Yaml, &bootstrap_desc()).unwrap_err();
        assert!(err.0[0].reason.contains("envoy.nope.Nope"), "{err}");
        assert!(err.0[0].path.contains("typed_config"), "{err}");
    }

    #[test]
    fn merge_appends_and_overrides() {
        let d = bootstrap_desc();
        let mut base = message_from_text(
            "static_resources: {clusters: [{name: a}]}\nnode: {id: one}",
            DocFormat::Yaml,
            &d,
        )
        .expect("base");
        let over = message_from_text(
            "static_resources: {clusters: [{name: b}]}\nnode: {id: two}",
            DocFormat::Yaml,
            &d,
        )
        .expect("over");
        merge_into(&mut base, &over).expect("merge");
        let b: envoy_api::pb::envoy::config::bootstrap::v3::Bootstrap =
            base.transcode_to().expect("transcode");
        assert_eq!(b.static_resources.expect("sr").clusters.len(), 2);
        assert_eq!(b.node.expect("node").id, "two");
    }
}
