//! Envoy's protoc-gen-validate rules, read from the descriptors' field options and checked
//! over a loaded message, the way Envoy checks them before accepting a config.
//!
//! Every violation is collected (not just the first) with its field path. Unset members of a
//! oneof are skipped; proto3 scalars without presence are checked with their default value,
//! as PGV does.

use prost_reflect::{
    DynamicMessage, ExtensionDescriptor, FieldDescriptor, Kind, ReflectMessage, Value,
};

use crate::error::{ConfigErrors, FieldPath};
use crate::load::unpack_any;

struct Exts {
    field_rules: Option<ExtensionDescriptor>,
    oneof_required: Option<ExtensionDescriptor>,
}

fn exts() -> Exts {
    let pool = envoy_api::pool();
    Exts {
        field_rules: pool.get_extension_by_name("validate.rules"),
        oneof_required: pool.get_extension_by_name("validate.required"),
    }
}

/// Checks every PGV rule in `msg` and its sub-messages (including `Any` payloads).
pub fn validate(msg: &DynamicMessage, root: &FieldPath, errs: &mut ConfigErrors) {
    let e = exts();
    validate_message(&e, msg, root, errs);
}

fn validate_message(e: &Exts, msg: &DynamicMessage, path: &FieldPath, errs: &mut ConfigErrors) {
    let desc = msg.descriptor();
    if desc.full_name() == "google.protobuf.Any" {
        match unpack_any(msg, path) {
            Ok(Some(inner)) => validate_message(e, &inner, path, errs),
            Ok(None) => {}
            Err(es) => errs.0.extend(es.0),
        }
        return;
    }
    if desc.full_name().starts_with("google.protobuf.") {
        return;
    }
    // Oneofs marked `(validate.required) = true` need one member set.
    if let Some(req) = &e.oneof_required {
        for oneof in desc.oneofs() {
            if oneof.is_synthetic() {
                continue;
            }
            let required = oneof
                .options()
                .get_extension(req)
                .as_bool()
                .unwrap_or(false);
            if required && !oneof.fields().any(|f| msg.has_field(&f)) {
                let names: Vec<String> = oneof.fields().map(|f| f.name().to_string()).collect();
                errs.push(
                    path.to_string(),
                    format!("one of [{}] must be set", names.join(", ")),
                );
            }
        }
    }
    for field in desc.fields() {
        let fpath = path.field(field.name());
        let set = msg.has_field(&field);
        let in_oneof = field.containing_oneof().is_some();
        let rules = field_rules(e, &field);
        if !set && in_oneof {
            continue; // an unset oneof member: no rule applies
        }
        if !set && field.supports_presence() && !field.is_list() && !field.is_map() {
            // Absent: only "required" rules apply.
            if let Some(r) = &rules
                && is_required(r)
            {
                errs.push(fpath.to_string(), "is required");
            }
            continue;
        }
        let value = msg.get_field(&field);
        if let Some(r) = &rules {
            check_rules(r, &field, &value, &fpath, errs);
        }
        // Recurse into messages.
        if let Kind::Message(_) = field.kind() {
            let skip = rules.as_ref().map(message_skipped).unwrap_or(false);
            if skip {
                continue;
            }
            match value.as_ref() {
                Value::Message(m) => validate_message(e, m, &fpath, errs),
                Value::List(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let Value::Message(m) = item {
                            validate_message(e, m, &fpath.index(i), errs);
                        }
                    }
                }
                Value::Map(entries) => {
                    for (k, v) in entries {
                        if let Value::Message(m) = v {
                            let key = format!("{k:?}");
                            validate_message(e, m, &fpath.key(key.trim_matches('"')), errs);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

fn field_rules(e: &Exts, field: &FieldDescriptor) -> Option<DynamicMessage> {
    let ext = e.field_rules.as_ref()?;
    let opts = field.options();
    if !opts.has_extension(ext) {
        return None;
    }
    match opts.get_extension(ext).into_owned() {
        Value::Message(m) => Some(m),
        _ => None,
    }
}

fn sub(m: &DynamicMessage, name: &str) -> Option<DynamicMessage> {
    if !m.has_field_by_name(name) {
        return None;
    }
    match m.get_field_by_name(name)?.into_owned() {
        Value::Message(m) => Some(m),
        _ => None,
    }
}

fn flag(m: &DynamicMessage, name: &str) -> bool {
    m.get_field_by_name(name)
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

fn is_required(rules: &DynamicMessage) -> bool {
    ["message", "duration", "any", "timestamp"]
        .iter()
        .any(|k| sub(rules, k).map(|r| flag(&r, "required")).unwrap_or(false))
}

fn message_skipped(rules: &DynamicMessage) -> bool {
    sub(rules, "message")
        .map(|r| flag(&r, "skip"))
        .unwrap_or(false)
}

fn check_rules(
    rules: &DynamicMessage,
    field: &FieldDescriptor,
    value: &Value,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) {
    if field.is_list() {
        let Value::List(items) = value else { return };
        if let Some(r) = sub(rules, "repeated") {
            if flag(&r, "ignore_empty") && items.is_empty() {
                return;
            }
            if let Some(min) = get_u64(&r, "min_items")
                && (items.len() as u64) < min
            {
                errs.push(
                    path.to_string(),
                    format!("must have at least {min} item(s)"),
                );
            }
            if let Some(max) = get_u64(&r, "max_items")
                && (items.len() as u64) > max
            {
                errs.push(path.to_string(), format!("must have at most {max} item(s)"));
            }
            if let Some(item_rules) = sub(&r, "items") {
                for (i, item) in items.iter().enumerate() {
                    check_single(&item_rules, item, &path.index(i), errs);
                }
            }
        }
        return;
    }
    if field.is_map() {
        let Value::Map(entries) = value else { return };
        if let Some(r) = sub(rules, "map") {
            if flag(&r, "ignore_empty") && entries.is_empty() {
                return;
            }
            if let Some(min) = get_u64(&r, "min_pairs")
                && (entries.len() as u64) < min
            {
                errs.push(
                    path.to_string(),
                    format!("must have at least {min} entries"),
                );
            }
        }
        return;
    }
    check_single(rules, value, path, errs);
}

fn get_u64(m: &DynamicMessage, name: &str) -> Option<u64> {
    if !m.has_field_by_name(name) {
        return None;
    }
    m.get_field_by_name(name).and_then(|v| v.as_u64())
}

/// A number from a numeric rule message, as f64/i128 for comparison.
fn num(v: &Value) -> Option<f64> {
    Some(match v {
        Value::I32(x) => *x as f64,
        Value::I64(x) => *x as f64,
        Value::U32(x) => *x as f64,
        Value::U64(x) => *x as f64,
        Value::F32(x) => *x as f64,
        Value::F64(x) => *x,
        Value::EnumNumber(x) => *x as f64,
        _ => return None,
    })
}

fn rule_num(r: &DynamicMessage, name: &str) -> Option<f64> {
    if !r.has_field_by_name(name) {
        return None;
    }
    r.get_field_by_name(name).and_then(|v| num(&v))
}

fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

fn check_numeric(r: &DynamicMessage, x: f64, path: &FieldPath, errs: &mut ConfigErrors) {
    if flag(r, "ignore_empty") && x == 0.0 {
        return;
    }
    if let Some(c) = rule_num(r, "const")
        && x != c
    {
        errs.push(path.to_string(), format!("value must equal {}", fmt_num(c)));
    }
    let gt = rule_num(r, "gt");
    let gte = rule_num(r, "gte");
    let lt = rule_num(r, "lt");
    let lte = rule_num(r, "lte");
    let low_ok = gt.map(|g| x > g).unwrap_or(true) && gte.map(|g| x >= g).unwrap_or(true);
    let high_ok = lt.map(|l| x < l).unwrap_or(true) && lte.map(|l| x <= l).unwrap_or(true);
    if !low_ok {
        match (gt, gte) {
            (Some(g), _) => errs.push(
                path.to_string(),
                format!("value {} must be greater than {}", fmt_num(x), fmt_num(g)),
            ),
            (_, Some(g)) => errs.push(
                path.to_string(),
                format!("value {} must be at least {}", fmt_num(x), fmt_num(g)),
            ),
            _ => {}
        }
    }
    if !high_ok {
        match (lt, lte) {
            (Some(l), _) => errs.push(
                path.to_string(),
                format!("value {} must be less than {}", fmt_num(x), fmt_num(l)),
            ),
            (_, Some(l)) => errs.push(
                path.to_string(),
                format!("value {} must be at most {}", fmt_num(x), fmt_num(l)),
            ),
            _ => {}
        }
    }
    let list = |name: &str| -> Vec<f64> {
        match r.get_field_by_name(name).map(|v| v.into_owned()) {
            Some(Value::List(items)) => items.iter().filter_map(num).collect(),
            _ => Vec::new(),
        }
    };
    let ins = list("in");
    if !ins.is_empty() && !ins.contains(&x) {
        errs.push(
            path.to_string(),
            format!("value {} is not one of the allowed values", fmt_num(x)),
        );
    }
    if list("not_in").contains(&x) {
        errs.push(
            path.to_string(),
            format!("value {} is not allowed", fmt_num(x)),
        );
    }
}

fn check_single(rules: &DynamicMessage, value: &Value, path: &FieldPath, errs: &mut ConfigErrors) {
    for kind in [
        "float", "double", "int32", "int64", "uint32", "uint64", "sint32", "sint64", "fixed32",
        "fixed64", "sfixed32", "sfixed64",
    ] {
        if let Some(r) = sub(rules, kind)
            && let Some(x) = num(value)
        {
            check_numeric(&r, x, path, errs);
        }
    }
    if let Some(r) = sub(rules, "enum")
        && let Value::EnumNumber(n) = value
    {
        check_numeric(&r, *n as f64, path, errs);
    }
    if let Some(r) = sub(rules, "string")
        && let Value::String(s) = value
    {
        check_string(&r, s, path, errs);
    }
    if let Some(r) = sub(rules, "bytes")
        && let Value::Bytes(b) = value
        && let Some(min) = get_u64(&r, "min_len")
        && (b.len() as u64) < min
    {
        errs.push(
            path.to_string(),
            format!("must be at least {min} byte(s) long"),
        );
    }
    if let Some(r) = sub(rules, "duration")
        && let Value::Message(d) = value
    {
        check_duration(&r, d, path, errs);
    }
}

fn check_string(r: &DynamicMessage, s: &str, path: &FieldPath, errs: &mut ConfigErrors) {
    if flag(r, "ignore_empty") && s.is_empty() {
        return;
    }
    let chars = s.chars().count() as u64;
    if let Some(min) = get_u64(r, "min_len")
        && chars < min
    {
        if s.is_empty() {
            errs.push(path.to_string(), "must not be empty");
        } else {
            errs.push(
                path.to_string(),
                format!("must be at least {min} character(s) long"),
            );
        }
    }
    if let Some(max) = get_u64(r, "max_len")
        && chars > max
    {
        errs.push(
            path.to_string(),
            format!("must be at most {max} character(s) long"),
        );
    }
    if let Some(min) = get_u64(r, "min_bytes")
        && (s.len() as u64) < min
    {
        errs.push(
            path.to_string(),
            format!("must be at least {min} byte(s) long"),
        );
    }
    if let Some(max) = get_u64(r, "max_bytes")
        && (s.len() as u64) > max
    {
        errs.push(
            path.to_string(),
            format!("must be at most {max} byte(s) long"),
        );
    }
    if r.has_field_by_name("prefix")
        && let Some(p) = r
            .get_field_by_name("prefix")
            .and_then(|v| v.as_str().map(str::to_string))
        && !s.starts_with(&p)
    {
        errs.push(path.to_string(), format!("must start with {p:?}"));
    }
    if r.has_field_by_name("pattern")
        && let Some(p) = r
            .get_field_by_name("pattern")
            .and_then(|v| v.as_str().map(str::to_string))
        && let Ok(re) = regex::Regex::new(&p)
        && !re.is_match(s)
    {
        errs.push(
            path.to_string(),
            format!("{s:?} does not match the pattern {p:?}"),
        );
    }
    if r.has_field_by_name("well_known_regex")
        && let Some(Value::EnumNumber(n)) = r
            .get_field_by_name("well_known_regex")
            .map(|v| v.into_owned())
    {
        let strict = !r.has_field_by_name("strict") || flag(r, "strict");
        let ok = match n {
            // Non-strict HTTP_HEADER_NAME is PGV's loose `^[^\0\n\r]*$` (empty allowed).
            1 if !strict => !s.contains(['\0', '\n', '\r']),
            1 => http::HeaderName::from_bytes(s.as_bytes()).is_ok() || s.starts_with(':'),
            2 => !strict || http::HeaderValue::from_str(s).is_ok(),
            _ => true,
        };
        if !ok {
            let what = if n == 1 {
                "a valid HTTP header name"
            } else {
                "a valid HTTP header value"
            };
            errs.push(path.to_string(), format!("{s:?} is not {what}"));
        }
    }
    let list = |name: &str| -> Vec<String> {
        match r.get_field_by_name(name).map(|v| v.into_owned()) {
            Some(Value::List(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    };
    let ins = list("in");
    if !ins.is_empty() && !ins.iter().any(|x| x == s) {
        errs.push(path.to_string(), format!("{s:?} must be one of {ins:?}"));
    }
    if list("not_in").iter().any(|x| x == s) {
        errs.push(path.to_string(), format!("{s:?} is not allowed"));
    }
}

fn duration_secs(d: &DynamicMessage) -> f64 {
    let secs = d
        .get_field_by_name("seconds")
        .and_then(|v| v.as_i64())
        .unwrap_or(0);
    let nanos = d
        .get_field_by_name("nanos")
        .and_then(|v| v.as_i32())
        .unwrap_or(0);
    secs as f64 + nanos as f64 / 1e9
}

fn check_duration(
    r: &DynamicMessage,
    d: &DynamicMessage,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) {
    let x = duration_secs(d);
    let bound = |name: &str| sub(r, name).map(|m| duration_secs(&m));
    let fmt = |s: f64| format!("{}s", fmt_num(s));
    if let Some(g) = bound("gt")
        && x <= g
    {
        errs.push(
            path.to_string(),
            format!("duration {} must be greater than {}", fmt(x), fmt(g)),
        );
    }
    if let Some(g) = bound("gte")
        && x < g
    {
        errs.push(
            path.to_string(),
            format!("duration {} must be at least {}", fmt(x), fmt(g)),
        );
    }
    if let Some(l) = bound("lt")
        && x >= l
    {
        errs.push(
            path.to_string(),
            format!("duration {} must be less than {}", fmt(x), fmt(l)),
        );
    }
    if let Some(l) = bound("lte")
        && x > l
    {
        errs.push(
            path.to_string(),
            format!("duration {} must be at most {}", fmt(x), fmt(l)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{DocFormat, message_from_text};

    fn check(yaml: &str) -> ConfigErrors {
        let desc = envoy_api::pool()
            .get_message_by_name("envoy.config.bootstrap.v3.Bootstrap")
            .expect("desc");
        let m = message_from_text(yaml, DocFormat::Yaml, &desc).expect("parses");
        let mut errs = ConfigErrors::default();
        validate(&m, &FieldPath::root(), &mut errs);
        errs
    }

    #[test]
    fn port_above_65535_is_rejected() {
        let errs = check(
            "static_resources: {listeners: [{name: l, address: {socket_address: {address: 0.0.0.0, port_value: 70000}}}]}",
        );
        let e = errs
            .0
            .iter()
            .find(|e| e.path.ends_with("port_value"))
            .expect("port error");
        assert_eq!(
            e.path,
            "static_resources.listeners[0].address.socket_address.port_value"
        );
        assert!(e.reason.contains("65535"), "{}", e.reason);
    }

    #[test]
    fn negative_duration_is_rejected() {
        let errs = check("static_resources: {clusters: [{name: c, connect_timeout: -1s}]}");
        assert!(
            errs.0
                .iter()
                .any(|e| e.path == "static_resources.clusters[0].connect_timeout"),
            "{errs}"
        );
    }

    #[test]
    fn empty_cluster_name_is_rejected() {
        let errs = check("static_resources: {clusters: [{connect_timeout: 1s}]}");
        assert!(
            errs.0
                .iter()
                .any(|e| e.path == "static_resources.clusters[0].name"),
            "{errs}"
        );
    }

    #[test]
    fn valid_config_has_no_errors() {
        let errs = check(
            "static_resources: {clusters: [{name: c, connect_timeout: 1s}], listeners: [{name: l, address: {socket_address: {address: 0.0.0.0, port_value: 80}}}]}",
        );
        assert!(errs.is_empty(), "{errs}");
    }
}
