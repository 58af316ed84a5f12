//! Access loggers: file, stdout and stderr sinks with Envoy's format strings.

use std::sync::Arc;

use envoy_api::pb::envoy::config::accesslog::v3 as al;
use envoy_api::pb::envoy::config::core::v3 as core;
use envoy_api::pb::envoy::extensions::access_loggers::file::v3 as file_log;
use envoy_api::pb::envoy::extensions::access_loggers::stream::v3 as stream_log;
use strait_accesslog::Formatter;

use super::common::{data_source, type_name, unpack};
use super::sink_for_path;
use crate::error::{ConfigErrors, FieldPath};
use crate::model::*;

pub(crate) fn compile_access_logs(
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

pub(crate) fn parse_text(s: &str, path: &FieldPath, errs: &mut ConfigErrors) -> Option<Formatter> {
    match Formatter::parse_text(s) {
        Ok(f) => Some(f),
        Err(e) => {
            errs.push(path.to_string(), e.to_string());
            None
        }
    }
}

pub(crate) fn parse_json(
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

pub(crate) fn substitution_format(
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
