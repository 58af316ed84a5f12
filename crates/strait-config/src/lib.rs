//! Envoy v3 configuration for Strait: the only place Envoy's protos are interpreted.
//!
//! Loading goes text -> JSON tree (normalised to Envoy's lax forms) -> reflective
//! `DynamicMessage` (unknown fields and bad `@type` rejected with their path) ->
//! protoc-gen-validate rules -> "does Strait implement every field that is set" ->
//! typed protos -> compiled runtime model (`model`). Every stage reports field paths.
//! Owns: config errors, the supported-field table, the compiled model. Does not own:
//! sockets, workers, or anything on the request path beyond the model's matchers.

pub mod cluster;
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
    let (msg, pruned) = load_bootstrap_message_lenient(src)?;
    compile_message_after(&msg, opts, pruned)
}

/// Text to a merged, syntactically valid Bootstrap message (no semantic checks yet).
pub fn load_bootstrap_message(src: &Source<'_>) -> Result<DynamicMessage, ConfigErrors> {
    let (msg, pruned) = load_bootstrap_message_lenient(src)?;
    pruned.into_result(msg)
}

/// Like [`load_bootstrap_message`], but unknown fields and unknown `@type`s are pruned and
/// returned beside the message, so the later stages can still report their own errors.
fn load_bootstrap_message_lenient(
    src: &Source<'_>,
) -> Result<(DynamicMessage, ConfigErrors), ConfigErrors> {
    if src.path.is_none() && src.yaml.is_none() {
        return Err(ConfigErrors::one(
            "",
            "no configuration: give -c/--config-path or --config-yaml",
        ));
    }
    let desc = bootstrap_desc()?;
    let (mut msg, mut pruned) = match src.path {
        Some(p) => {
            let (text, format) = load::read_file(p)?;
            load::message_from_text_lenient(&text, format, &desc)?
        }
        None => (DynamicMessage::new(desc.clone()), ConfigErrors::default()),
    };
    if let Some(yaml) = src.yaml {
        let in_overlay = |e: ConfigErrors| {
            ConfigErrors(
                e.0.into_iter()
                    .map(|mut e| {
                        e.reason = format!("in --config-yaml: {}", e.reason);
                        e
                    })
                    .collect(),
            )
        };
        let (overlay, overlay_pruned) =
            load::message_from_text_lenient(yaml, load::DocFormat::Yaml, &desc)
                .map_err(in_overlay)?;
        pruned.0.extend(in_overlay(overlay_pruned).0);
        load::merge_into(&mut msg, &overlay)?;
    }
    Ok((msg, pruned))
}

/// Validation rules, supported-field check and compilation of a loaded message.
pub fn compile_message(
    msg: &DynamicMessage,
    opts: &CompileOptions,
) -> Result<Config, ConfigErrors> {
    compile_message_after(msg, opts, ConfigErrors::default())
}

/// [`compile_message`], adding its errors to those the loading stage already found.
fn compile_message_after(
    msg: &DynamicMessage,
    opts: &CompileOptions,
    mut errs: ConfigErrors,
) -> Result<Config, ConfigErrors> {
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
        // Skip what an earlier stage already reported at this path or inside it (a pruned
        // `typed_config` makes the compile step see it as missing).
        let covered = errs.0.iter().any(|x| {
            x.path == e.path
                || (x.path.starts_with(e.path.as_str()) && x.path[e.path.len()..].starts_with('.'))
        });
        if !covered {
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
