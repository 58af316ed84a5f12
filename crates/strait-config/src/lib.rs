//! Envoy v3 configuration for Strait: the only place Envoy's protos are interpreted.
//!
//! Loading goes text -> JSON tree (normalised to Envoy's lax forms) -> reflective
//! `DynamicMessage` (unknown fields and bad `@type` rejected with their path) ->
//! protoc-gen-validate rules -> "does Strait implement every field that is set" ->
//! typed protos -> compiled runtime model (`model`). Every stage reports field paths.
//! Owns: config errors, the supported-field table, the compiled model. Does not own:
//! sockets, workers, or anything on the request path beyond the model's matchers.

pub mod compile;
pub mod error;
pub mod load;
pub mod model;
pub mod pgv;
pub mod route;
pub mod supported;

use std::path::Path;

use envoy_api::pb::envoy::config::bootstrap::v3::Bootstrap;
use prost_reflect::{DynamicMessage, MessageDescriptor, SerializeOptions};

pub use compile::CompileOptions;
pub use error::{ConfigError, ConfigErrors, FieldPath};
pub use model::Config;

const BOOTSTRAP: &str = "envoy.config.bootstrap.v3.Bootstrap";

fn bootstrap_desc() -> Result<MessageDescriptor, ConfigErrors> {
    envoy_api::pool()
        .get_message_by_name(BOOTSTRAP)
        .ok_or_else(|| ConfigErrors::one("", "the Envoy descriptor set has no Bootstrap message"))
}

/// Where a bootstrap comes from: `-c` file and/or `--config-yaml` text (merged over the file).
#[derive(Debug, Clone, Default)]
pub struct Source<'a> {
    pub path: Option<&'a Path>,
    pub yaml: Option<&'a str>,
}

/// Loads, validates and compiles a bootstrap. Returns every error found.
pub fn load_bootstrap(src: &Source<'_>, opts: &CompileOptions) -> Result<Config, ConfigErrors> {
    let msg = load_bootstrap_message(src)?;
    compile_message(&msg, opts)
}

/// Text to a merged, syntactically valid Bootstrap message (no semantic checks yet).
pub fn load_bootstrap_message(src: &Source<'_>) -> Result<DynamicMessage, ConfigErrors> {
    let desc = bootstrap_desc()?;
    let mut msg = match src.path {
        Some(p) => {
            let (text, format) = load::read_file(p)?;
            load::message_from_text(&text, format, &desc)?
        }
        None => DynamicMessage::new(desc.clone()),
    };
    if let Some(yaml) = src.yaml {
        let overlay = load::message_from_text(yaml, load::DocFormat::Yaml, &desc).map_err(|e| {
            ConfigErrors(
                e.0.into_iter()
                    .map(|mut e| {
                        e.reason = format!("in --config-yaml: {}", e.reason);
                        e
                    })
                    .collect(),
            )
        })?;
        load::merge_into(&mut msg, &overlay)?;
    }
    if src.path.is_none() && src.yaml.is_none() {
        return Err(ConfigErrors::one(
            "",
            "no configuration: give -c/--config-path or --config-yaml",
        ));
    }
    Ok(msg)
}

/// Validation rules, supported-field check and compilation of a loaded message.
pub fn compile_message(
    msg: &DynamicMessage,
    opts: &CompileOptions,
) -> Result<Config, ConfigErrors> {
    let mut errs = ConfigErrors::default();
    let root = FieldPath::root();
    pgv::validate(msg, &root, &mut errs);
    supported::check_supported(msg, &root, &mut errs);
    let typed: Bootstrap = msg
        .transcode_to()
        .map_err(|e| ConfigErrors::one("", format!("cannot decode the bootstrap: {e}")))?;
    let json = to_envoy_json(msg);
    // Compile even when earlier stages found problems, so one run reports every error
    // (route to an undefined cluster, bad regex, duplicates...); one error per field path.
    let mut compile_errs = ConfigErrors::default();
    let config = compile::compile(&typed, json, opts, &mut compile_errs);
    for e in compile_errs.0 {
        if !errs.0.iter().any(|x| x.path == e.path) {
            errs.0.push(e);
        }
    }
    match config {
        Some(c) if errs.is_empty() => Ok(c),
        _ => Err(errs),
    }
}

/// A message as Envoy prints it in `/config_dump`: proto field names, `@type` in `Any`s.
pub fn to_envoy_json(msg: &DynamicMessage) -> serde_json::Value {
    let opts = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(true);
    msg.serialize_with_options(serde_json::value::Serializer, &opts)
        .unwrap_or(serde_json::Value::Null)
}
