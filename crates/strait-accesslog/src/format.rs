//! Format-string compiler and renderer.
//!
//! Grammar (Envoy's `SubstitutionFormatParser`): plain text, `%%` for a literal `%`, and
//! command operators `%NAME%`, `%NAME(params)%`, `%NAME(params):N%` or `%NAME:N%` where
//! `NAME` is `[A-Z0-9_]+` and `N` a decimal truncation length. The parameter is the shortest
//! text such that `)` is followed by an optional `:N` and a `%` — so
//! `%START_TIME(%Y-%m-%d)%` works. Any other `%` is an error naming its position.
//!
//! Rendering never parses: every operator is resolved to a [`Cmd`] at compile time, header
//! names are pre-validated [`HeaderName`]s, time formats are pre-compiled, constant values
//! (`HOSTNAME`, `ENVIRONMENT`) are captured once (as Envoy does).

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use http::HeaderName;
use serde_json::{Map, Value};

use crate::context::LogContext;
use crate::error::FormatError;
use crate::json;
use crate::time::TimeFormat;

/// A compiled access-log format: a text format string or a `json_format` object.
///
/// Compile once at config load ([`parse_text`](Self::parse_text),
/// [`parse_json`](Self::parse_json), [`envoy_default`](Self::envoy_default)); share it
/// (`Formatter` is `Send + Sync`) and call [`render`](Self::render) per request.
#[derive(Debug, Clone)]
pub struct Formatter {
    body: Body,
    omit_empty_values: bool,
}

#[derive(Debug, Clone)]
enum Body {
    Text(Box<[Segment]>),
    Json(JsonNode),
}

#[derive(Debug, Clone)]
enum Segment {
    /// Literal bytes (already JSON-escaped when part of a JSON template).
    Lit(Box<[u8]>),
    Op(Op),
}

#[derive(Debug, Clone)]
struct Op {
    cmd: Cmd,
    max_len: Option<usize>,
}

#[derive(Debug, Clone)]
enum JsonNode {
    /// Entries sorted by key; each key is pre-serialized as `"key":`.
    Object(Box<[(Box<[u8]>, JsonNode)]>),
    Array(Box<[JsonNode]>),
    /// Pre-serialized constant JSON value.
    Const(Box<[u8]>),
    /// A string that is exactly one operator: typed output (number / string / null).
    Op(Op),
    /// A string mixing literals and operators: always a JSON string.
    Template(Box<[Segment]>),
}

/// Envoy's default access-log format (`SubstitutionFormatUtils::DEFAULT_FORMAT`).
pub const ENVOY_DEFAULT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" \
%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% \
%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \
\"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \
\"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

impl Formatter {
    /// Compiles a text format (`text_format_source`, `text_format`, legacy `format`).
    pub fn parse_text(format: &str) -> Result<Formatter, FormatError> {
        Ok(Formatter {
            body: Body::Text(parse_segments(format, false)?.into_boxed_slice()),
            omit_empty_values: false,
        })
    }

    /// Compiles a `json_format` object. Values may be strings (format strings), numbers,
    /// booleans, null, nested objects and lists. Like Envoy 1.40: keys are emitted sorted,
    /// a string that is exactly one operator renders typed (`%RESPONSE_CODE%` → `200`, a
    /// missing value → `null`), strings mixing text and operators render as JSON strings
    /// (missing → `-`), and each rendered line ends with `\n`.
    pub fn parse_json(format: &Map<String, Value>) -> Result<Formatter, FormatError> {
        let mut path = String::new();
        Ok(Formatter {
            body: Body::Json(compile_object(format, &mut path)?),
            omit_empty_values: false,
        })
    }

    /// Envoy's default format, [`ENVOY_DEFAULT_FORMAT`].
    pub fn envoy_default() -> Formatter {
        match Formatter::parse_text(ENVOY_DEFAULT_FORMAT) {
            Ok(f) => f,
            // The default format is a compile-time constant covered by tests.
            Err(e) => unreachable!("default format must compile: {e}"),
        }
    }

    /// `SubstitutionFormatString.omit_empty_values`: missing values render as nothing
    /// instead of `-` (text) and are left out of JSON objects and lists (an object left
    /// empty by this is left out too).
    #[must_use]
    pub fn with_omit_empty_values(mut self, omit: bool) -> Formatter {
        self.omit_empty_values = omit;
        self
    }

    /// Whether this is a `json_format`.
    pub fn is_json(&self) -> bool {
        matches!(self.body, Body::Json(_))
    }

    /// Appends one rendered log line to `out`. Text formats render exactly what the format
    /// says (Envoy's default ends in `\n`); JSON formats always end with `\n`.
    pub fn render(&self, ctx: &LogContext<'_>, out: &mut Vec<u8>) {
        match &self.body {
            Body::Text(segments) => {
                let missing: &[u8] = if self.omit_empty_values { b"" } else { b"-" };
                for seg in segments.iter() {
                    match seg {
                        Segment::Lit(l) => out.extend_from_slice(l),
                        Segment::Op(op) => {
                            if op.write(ctx, out) == Val::Missing {
                                out.extend_from_slice(missing);
                            }
                        }
                    }
                }
            }
            Body::Json(node) => {
                if !self.render_json(node, ctx, out) {
                    out.extend_from_slice(b"{}");
                }
                out.push(b'\n');
            }
        }
    }

    /// Convenience for tests and tooling: renders into a fresh `String` (lossy on invalid
    /// UTF-8, which only raw header bytes can produce).
    pub fn render_to_string(&self, ctx: &LogContext<'_>) -> String {
        let mut out = Vec::with_capacity(256);
        self.render(ctx, &mut out);
        match String::from_utf8(out) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }

    /// Renders a JSON node; returns false (and writes nothing) when it is omitted.
    fn render_json(&self, node: &JsonNode, ctx: &LogContext<'_>, out: &mut Vec<u8>) -> bool {
        match node {
            JsonNode::Const(c) => out.extend_from_slice(c),
            JsonNode::Object(entries) => {
                let mark = out.len();
                out.push(b'{');
                let mut any = false;
                for (key, value) in entries.iter() {
                    let entry_mark = out.len();
                    if any {
                        out.push(b',');
                    }
                    out.extend_from_slice(key);
                    if self.render_json(value, ctx, out) {
                        any = true;
                    } else {
                        out.truncate(entry_mark);
                    }
                }
                if !any && self.omit_empty_values && !entries.is_empty() {
                    out.truncate(mark);
                    return false;
                }
                out.push(b'}');
            }
            JsonNode::Array(items) => {
                out.push(b'[');
                let mut any = false;
                for item in items.iter() {
                    let item_mark = out.len();
                    if any {
                        out.push(b',');
                    }
                    if self.render_json(item, ctx, out) {
                        any = true;
                    } else {
                        out.truncate(item_mark);
                    }
                }
                out.push(b']');
            }
            JsonNode::Op(op) => {
                let mark = out.len();
                if op.cmd.is_numeric() {
                    if op.cmd.write(ctx, out) == Val::Missing {
                        return self.json_null(out, mark);
                    }
                } else {
                    out.push(b'"');
                    let start = out.len();
                    if op.write(ctx, out) == Val::Missing {
                        return self.json_null(out, mark);
                    }
                    json::escape_tail(out, start);
                    out.push(b'"');
                }
            }
            JsonNode::Template(segments) => {
                let missing: &[u8] = if self.omit_empty_values { b"" } else { b"-" };
                out.push(b'"');
                for seg in segments.iter() {
                    match seg {
                        Segment::Lit(l) => out.extend_from_slice(l),
                        Segment::Op(op) => {
                            let start = out.len();
                            if op.write(ctx, out) == Val::Missing {
                                out.extend_from_slice(missing);
                            } else {
                                json::escape_tail(out, start);
                            }
                        }
                    }
                }
                out.push(b'"');
            }
        }
        true
    }

    fn json_null(&self, out: &mut Vec<u8>, mark: usize) -> bool {
        out.truncate(mark);
        if self.omit_empty_values {
            return false;
        }
        out.extend_from_slice(b"null");
        true
    }
}

// ---------------------------------------------------------------------------------------
// Compilation
// ---------------------------------------------------------------------------------------

fn compile_object(map: &Map<String, Value>, path: &mut String) -> Result<JsonNode, FormatError> {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    // Envoy serializes a protobuf Struct: keys in byte order.
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        let saved = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(k);
        let node = compile_value(v, path)?;
        path.truncate(saved);
        let mut key = Vec::with_capacity(k.len() + 3);
        key.push(b'"');
        json::escape_into(&mut key, k.as_bytes());
        key.extend_from_slice(b"\":");
        out.push((key.into_boxed_slice(), node));
    }
    Ok(JsonNode::Object(out.into_boxed_slice()))
}

fn compile_value(v: &Value, path: &mut String) -> Result<JsonNode, FormatError> {
    Ok(match v {
        Value::Null => JsonNode::Const(Box::from(&b"null"[..])),
        Value::Bool(b) => JsonNode::Const(Box::from(if *b { &b"true"[..] } else { &b"false"[..] })),
        Value::Number(n) => {
            // Envoy holds json_format numbers as protobuf doubles.
            let f = n.as_f64().unwrap_or(f64::NAN);
            JsonNode::Const(json::format_number(f).into_bytes().into_boxed_slice())
        }
        Value::String(s) => {
            let segments = parse_segments(s, true).map_err(|e| FormatError::InJsonField {
                path: path.clone(),
                source: Box::new(e),
            })?;
            match segments.as_slice() {
                [Segment::Op(op)] => JsonNode::Op(op.clone()),
                segs if segs.iter().all(|s| matches!(s, Segment::Lit(_))) => {
                    let mut c = vec![b'"'];
                    for s in segs {
                        if let Segment::Lit(l) = s {
                            c.extend_from_slice(l);
                        }
                    }
                    c.push(b'"');
                    JsonNode::Const(c.into_boxed_slice())
                }
                _ => JsonNode::Template(segments.into_boxed_slice()),
            }
        }
        Value::Array(items) => {
            let mut nodes = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let saved = path.len();
                path.push('[');
                path.push_str(itoa::Buffer::new().format(i));
                path.push(']');
                nodes.push(compile_value(item, path)?);
                path.truncate(saved);
            }
            JsonNode::Array(nodes.into_boxed_slice())
        }
        Value::Object(map) => compile_object(map, path)?,
    })
}

/// Splits a format string into literal and operator segments. With `json_literals`, literal
/// text is stored JSON-escaped.
fn parse_segments(format: &str, json_literals: bool) -> Result<Vec<Segment>, FormatError> {
    let b = format.as_bytes();
    let mut segments = Vec::new();
    let mut lit: Vec<u8> = Vec::new();
    let flush = |lit: &mut Vec<u8>, segments: &mut Vec<Segment>| {
        if !lit.is_empty() {
            let bytes = if json_literals {
                let mut e = Vec::with_capacity(lit.len());
                json::escape_into(&mut e, lit);
                e
            } else {
                std::mem::take(lit)
            };
            lit.clear();
            segments.push(Segment::Lit(bytes.into_boxed_slice()));
        }
    };
    let syntax = |position: usize| FormatError::Syntax {
        format: format.to_owned(),
        position,
    };

    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            let start = i;
            while i < b.len() && b[i] != b'%' {
                i += 1;
            }
            lit.extend_from_slice(&b[start..i]);
            continue;
        }
        if b.get(i + 1) == Some(&b'%') {
            lit.push(b'%');
            i += 2;
            continue;
        }
        let pos = i;
        let name_start = i + 1;
        let mut j = name_start;
        while j < b.len() && (b[j].is_ascii_uppercase() || b[j].is_ascii_digit() || b[j] == b'_') {
            j += 1;
        }
        if j == name_start {
            return Err(syntax(pos));
        }
        let name = &format[name_start..j];
        let mut params: Option<&str> = None;
        if b.get(j) == Some(&b'(') {
            // Shortest parameter such that ')' is followed by optional ":digits" and '%'.
            let p_start = j + 1;
            let mut k = p_start;
            let mut close = None;
            while k < b.len() && b[k] != b'\n' {
                if b[k] == b')' {
                    let mut m = k + 1;
                    if b.get(m) == Some(&b':') {
                        let d = m + 1;
                        let mut e = d;
                        while e < b.len() && b[e].is_ascii_digit() {
                            e += 1;
                        }
                        m = if e > d { e } else { usize::MAX };
                    }
                    if m != usize::MAX && b.get(m) == Some(&b'%') {
                        close = Some(k);
                        break;
                    }
                }
                k += 1;
            }
            let Some(k) = close else {
                return Err(syntax(pos));
            };
            params = Some(&format[p_start..k]);
            j = k + 1;
        }
        let mut max_len = None;
        if b.get(j) == Some(&b':') {
            let d = j + 1;
            let mut e = d;
            while e < b.len() && b[e].is_ascii_digit() {
                e += 1;
            }
            if e == d {
                return Err(syntax(pos));
            }
            let n: u64 = format[d..e].parse().map_err(|_| syntax(pos))?;
            max_len = Some(usize::try_from(n).map_err(|_| syntax(pos))?);
            j = e;
        }
        if b.get(j) != Some(&b'%') {
            return Err(syntax(pos));
        }
        i = j + 1;
        flush(&mut lit, &mut segments);
        segments.push(Segment::Op(compile_command(name, params, max_len)?));
    }
    flush(&mut lit, &mut segments);
    Ok(segments)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Syntax {
    CommandOnly,
    ParamsOptional,
    ParamsOptionalLen,
    ParamsRequiredLen,
}

fn check_syntax(
    name: &str,
    syntax: Syntax,
    params: Option<&str>,
    max_len: Option<usize>,
) -> Result<(), FormatError> {
    let has_params = params.is_some_and(|p| !p.is_empty());
    match syntax {
        Syntax::CommandOnly => {
            if has_params || max_len.is_some() {
                return Err(FormatError::NoParamsOrLength(name.to_owned()));
            }
        }
        Syntax::ParamsOptional => {
            if max_len.is_some() {
                return Err(FormatError::LengthNotAllowed(name.to_owned()));
            }
        }
        Syntax::ParamsOptionalLen => {}
        Syntax::ParamsRequiredLen => {
            if !has_params {
                return Err(FormatError::ParamsRequired(name.to_owned()));
            }
        }
    }
    Ok(())
}

fn compile_command(
    name: &str,
    params: Option<&str>,
    max_len: Option<usize>,
) -> Result<Op, FormatError> {
    use Cmd::*;
    let simple = |cmd: Cmd| -> Result<Op, FormatError> {
        check_syntax(name, Syntax::CommandOnly, params, max_len)?;
        Ok(Op { cmd, max_len: None })
    };
    let p = params.unwrap_or("");
    let addr = |which: AddrField, part: AddrPart| simple(Addr { which, part });
    let addr_no_port = |which: AddrField| -> Result<Op, FormatError> {
        check_syntax(name, Syntax::ParamsOptional, params, max_len)?;
        Ok(Op {
            cmd: Addr {
                which,
                part: AddrPart::WithoutPort(parse_mask(p)),
            },
            max_len: None,
        })
    };
    let headers = |f: fn(HeaderSel) -> Cmd| -> Result<Op, FormatError> {
        check_syntax(name, Syntax::ParamsRequiredLen, params, max_len)?;
        Ok(Op {
            cmd: f(HeaderSel::parse(p)?),
            max_len,
        })
    };
    let time = |f: fn(TimeFormat) -> Cmd| -> Result<Op, FormatError> {
        check_syntax(name, Syntax::ParamsOptional, params, max_len)?;
        Ok(Op {
            cmd: f(TimeFormat::parse(p)?),
            max_len: None,
        })
    };
    match name {
        "START_TIME" => time(StartTime),
        "EMIT_TIME" => time(EmitTime),
        // REQUEST_HEADER / RESPONSE_HEADER / RESPONSE_TRAILER / STREAM_INFO_REQ are Envoy
        // 1.40 spellings of REQ / RESP / TRAILER.
        "REQ" | "REQUEST_HEADER" | "STREAM_INFO_REQ" => headers(ReqHeader),
        "RESP" | "RESPONSE_HEADER" => headers(RespHeader),
        "TRAILER" | "RESPONSE_TRAILER" => headers(Trailer),
        "REQ_WITHOUT_QUERY" => headers(ReqWithoutQuery),
        "PATH" => {
            check_syntax(name, Syntax::ParamsOptionalLen, params, max_len)?;
            let (mode, orig) = match p.split_once(':') {
                Some((m, "ORIG")) => (m, true),
                Some(_) => return Err(invalid_path_option(p)),
                None => (p, false),
            };
            let with_query = match mode {
                "" | "WQ" => true,
                "NQ" => false,
                _ => return Err(invalid_path_option(p)),
            };
            Ok(Op {
                cmd: Path { with_query, orig },
                max_len,
            })
        }
        "QUERY_PARAMS" => {
            check_syntax(name, Syntax::ParamsOptionalLen, params, max_len)?;
            match p {
                "" | "ORIG" => Ok(Op {
                    cmd: QueryParams,
                    max_len,
                }),
                "DECODED" => Err(FormatError::UnsupportedOperator(
                    "QUERY_PARAMS(DECODED)".to_owned(),
                )),
                _ => Err(FormatError::InvalidParameter(format!(
                    "Invalid QUERY_PARAMS option: '{p}', only 'ORIG'/'DECODED' are allowed"
                ))),
            }
        }
        "ENVIRONMENT" => {
            check_syntax(name, Syntax::ParamsRequiredLen, params, max_len)?;
            // Envoy reads the variable once, at config load, and stores "-" when unset.
            let v = match std::env::var_os(p) {
                Some(v) => {
                    let mut v = v.into_encoded_bytes();
                    if let Some(n) = max_len {
                        v.truncate(n);
                    }
                    v
                }
                None => b"-".to_vec(),
            };
            Ok(Op {
                cmd: Static(Some(v.into_boxed_slice())),
                max_len: None,
            })
        }
        "HOSTNAME" => simple(Static(
            hostname().map(|h| h.into_bytes().into_boxed_slice()),
        )),
        "UNIQUE_ID" => simple(UniqueId),
        "PROTOCOL" => simple(Protocol),
        "UPSTREAM_PROTOCOL" => simple(UpstreamProtocol),
        "RESPONSE_CODE" => simple(ResponseCode),
        "RESPONSE_CODE_DETAILS" => {
            check_syntax(name, Syntax::ParamsOptional, params, max_len)?;
            Ok(Op {
                cmd: Str(StrField::ResponseCodeDetails),
                max_len: None,
            })
        }
        "CONNECTION_TERMINATION_DETAILS" => simple(Str(StrField::ConnectionTerminationDetails)),
        "RESPONSE_FLAGS" => simple(ResponseFlags),
        "RESPONSE_FLAGS_LONG" => simple(ResponseFlagsLong),
        "BYTES_RECEIVED" => simple(U64(U64Field::BytesReceived)),
        "BYTES_SENT" => simple(U64(U64Field::BytesSent)),
        "UPSTREAM_WIRE_BYTES_SENT" => simple(U64(U64Field::UpstreamWireBytesSent)),
        "UPSTREAM_WIRE_BYTES_RECEIVED" => simple(U64(U64Field::UpstreamWireBytesReceived)),
        "REQUEST_HEADERS_BYTES" => simple(U64(U64Field::RequestHeadersBytes)),
        "RESPONSE_HEADERS_BYTES" => simple(U64(U64Field::ResponseHeadersBytes)),
        "RESPONSE_TRAILERS_BYTES" => simple(U64(U64Field::ResponseTrailersBytes)),
        "UPSTREAM_REQUEST_ATTEMPT_COUNT" => simple(U64(U64Field::UpstreamRequestAttemptCount)),
        "UPSTREAM_CONNECTION_ID" => simple(U64(U64Field::UpstreamConnectionId)),
        "CONNECTION_ID" => simple(U64(U64Field::ConnectionId)),
        "DURATION" => simple(Dur(DurField::Duration)),
        "REQUEST_DURATION" => simple(Dur(DurField::Request)),
        "REQUEST_TX_DURATION" => simple(Dur(DurField::RequestTx)),
        "RESPONSE_DURATION" => simple(Dur(DurField::Response)),
        "RESPONSE_TX_DURATION" => simple(Dur(DurField::ResponseTx)),
        "UPSTREAM_HOST" => addr(AddrField::UpstreamHost, AddrPart::WithPort),
        "UPSTREAM_HOST_NAME" => simple(UpstreamHostName { port: true }),
        "UPSTREAM_HOST_NAME_WITHOUT_PORT" => simple(UpstreamHostName { port: false }),
        "UPSTREAM_CLUSTER" => simple(Str(StrField::UpstreamCluster)),
        "UPSTREAM_TRANSPORT_FAILURE_REASON" => simple(UpstreamTransportFailureReason),
        "UPSTREAM_REMOTE_ADDRESS" => addr(AddrField::UpstreamHost, AddrPart::WithPort),
        "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => addr_no_port(AddrField::UpstreamHost),
        "UPSTREAM_REMOTE_PORT" => addr(AddrField::UpstreamHost, AddrPart::Port),
        "UPSTREAM_LOCAL_ADDRESS" => addr(AddrField::UpstreamLocal, AddrPart::WithPort),
        "UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => addr_no_port(AddrField::UpstreamLocal),
        "UPSTREAM_LOCAL_PORT" => addr(AddrField::UpstreamLocal, AddrPart::Port),
        "DOWNSTREAM_REMOTE_ADDRESS" => addr(AddrField::DownstreamRemote, AddrPart::WithPort),
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => addr_no_port(AddrField::DownstreamRemote),
        "DOWNSTREAM_REMOTE_PORT" => addr(AddrField::DownstreamRemote, AddrPart::Port),
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS" => {
            addr(AddrField::DownstreamDirectRemote, AddrPart::WithPort)
        }
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT" => {
            addr_no_port(AddrField::DownstreamDirectRemote)
        }
        "DOWNSTREAM_DIRECT_REMOTE_PORT" => addr(AddrField::DownstreamDirectRemote, AddrPart::Port),
        "DOWNSTREAM_LOCAL_ADDRESS" => addr(AddrField::DownstreamLocal, AddrPart::WithPort),
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => addr_no_port(AddrField::DownstreamLocal),
        "DOWNSTREAM_LOCAL_PORT" => addr(AddrField::DownstreamLocal, AddrPart::Port),
        "ROUTE_NAME" => simple(Str(StrField::RouteName)),
        "VIRTUAL_CLUSTER_NAME" => simple(Str(StrField::VirtualClusterName)),
        "REQUESTED_SERVER_NAME" => simple(Str(StrField::RequestedServerName)),
        "FILTER_CHAIN_NAME" => simple(Str(StrField::FilterChainName)),
        "LISTENER_NAME" => simple(Str(StrField::ListenerName)),
        other if crate::operators::is_envoy_operator(other) => {
            Err(FormatError::UnsupportedOperator(other.to_owned()))
        }
        other => Err(FormatError::UnknownOperator(other.to_owned())),
    }
}

fn invalid_path_option(p: &str) -> FormatError {
    FormatError::InvalidParameter(format!(
        "Invalid PATH option: '{p}', only 'WQ'/'NQ' are allowed"
    ))
}

/// `*_WITHOUT_PORT(N)`: Envoy masks the address to a `/N` prefix. A non-numeric parameter
/// means no mask; a negative one renders an empty value (both observed from Envoy 1.40).
fn parse_mask(p: &str) -> Option<Mask> {
    let t = p.trim();
    if t.is_empty() {
        return None;
    }
    match t.parse::<i64>() {
        Ok(n) if n < 0 => Some(Mask::Empty),
        Ok(n) => Some(Mask::Bits(n.min(255) as u8)),
        Err(_) => None,
    }
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for `buf.len()` bytes; gethostname NUL-terminates on
    // success when the name fits, and we also bound the scan by the buffer length.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let len = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..len]).into_owned())
}

// ---------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Cmd {
    StartTime(TimeFormat),
    EmitTime(TimeFormat),
    ReqHeader(HeaderSel),
    RespHeader(HeaderSel),
    Trailer(HeaderSel),
    ReqWithoutQuery(HeaderSel),
    Protocol,
    UpstreamProtocol,
    ResponseCode,
    ResponseFlags,
    ResponseFlagsLong,
    U64(U64Field),
    Dur(DurField),
    Addr {
        which: AddrField,
        part: AddrPart,
    },
    Str(StrField),
    UpstreamHostName {
        port: bool,
    },
    UpstreamTransportFailureReason,
    /// `%PATH(WQ|NQ[:ORIG])%`.
    Path {
        with_query: bool,
        orig: bool,
    },
    /// `%QUERY_PARAMS%`: the query string without `?`.
    QueryParams,
    /// Value fixed at config load (`HOSTNAME`, `ENVIRONMENT`); `None` = missing.
    Static(Option<Box<[u8]>>),
    UniqueId,
}

#[derive(Debug, Clone, Copy)]
enum U64Field {
    BytesReceived,
    BytesSent,
    UpstreamWireBytesSent,
    UpstreamWireBytesReceived,
    RequestHeadersBytes,
    ResponseHeadersBytes,
    ResponseTrailersBytes,
    UpstreamRequestAttemptCount,
    UpstreamConnectionId,
    ConnectionId,
}

#[derive(Debug, Clone, Copy)]
enum DurField {
    Duration,
    Request,
    RequestTx,
    Response,
    ResponseTx,
}

#[derive(Debug, Clone, Copy)]
enum StrField {
    ResponseCodeDetails,
    ConnectionTerminationDetails,
    UpstreamCluster,
    RouteName,
    VirtualClusterName,
    RequestedServerName,
    FilterChainName,
    ListenerName,
}

#[derive(Debug, Clone, Copy)]
enum AddrField {
    UpstreamHost,
    UpstreamLocal,
    DownstreamRemote,
    DownstreamDirectRemote,
    DownstreamLocal,
}

#[derive(Debug, Clone, Copy)]
enum AddrPart {
    WithPort,
    WithoutPort(Option<Mask>),
    Port,
}

#[derive(Debug, Clone, Copy)]
enum Mask {
    Bits(u8),
    Empty,
}

/// `REQ(main?alt)` header selection.
#[derive(Debug, Clone)]
struct HeaderSel {
    main: HeaderKey,
    alt: Option<HeaderKey>,
}

#[derive(Debug, Clone)]
enum HeaderKey {
    Method,
    Path,
    /// `:authority` and `host`.
    Authority,
    Scheme,
    Status,
    /// A pseudo-header Strait does not track (e.g. `:protocol`), or an empty name.
    Never,
    Name(HeaderName),
}

impl HeaderSel {
    fn parse(params: &str) -> Result<HeaderSel, FormatError> {
        let mut parts = params.split('?');
        let main = parts.next().unwrap_or("");
        let alt = parts.next();
        if parts.next().is_some() {
            return Err(FormatError::TooManyAlternatives(params.to_owned()));
        }
        Ok(HeaderSel {
            main: HeaderKey::parse(main)?,
            alt: alt.map(HeaderKey::parse).transpose()?,
        })
    }
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

impl HeaderKey {
    fn parse(name: &str) -> Result<HeaderKey, FormatError> {
        if name.is_empty() {
            return Ok(HeaderKey::Never);
        }
        let lower = name.to_ascii_lowercase();
        let (pseudo, rest) = match lower.strip_prefix(':') {
            Some(r) => (true, r),
            None => (false, lower.as_str()),
        };
        if rest.is_empty() || !rest.bytes().all(is_tchar) {
            return Err(FormatError::InvalidHeaderName(name.to_owned()));
        }
        if pseudo {
            return Ok(match rest {
                "method" => HeaderKey::Method,
                "path" => HeaderKey::Path,
                "authority" => HeaderKey::Authority,
                "scheme" => HeaderKey::Scheme,
                "status" => HeaderKey::Status,
                _ => HeaderKey::Never,
            });
        }
        if rest == "host" {
            return Ok(HeaderKey::Authority);
        }
        HeaderName::from_bytes(rest.as_bytes())
            .map(HeaderKey::Name)
            .map_err(|_| FormatError::InvalidHeaderName(name.to_owned()))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Val {
    /// Nothing written; the caller writes `-` / `null`.
    Missing,
    /// A string value was appended.
    Str,
    /// Decimal digits were appended.
    Num,
}

enum Which {
    Request,
    Response,
    Trailers,
}

fn lookup<'a>(ctx: &LogContext<'a>, which: &Which, key: &HeaderKey) -> Option<HeaderVal<'a>> {
    match which {
        Which::Request => match key {
            HeaderKey::Method => ctx.method.map(HeaderVal::Str),
            HeaderKey::Path => ctx.path.map(HeaderVal::Str),
            HeaderKey::Authority => ctx.authority.map(HeaderVal::Str).or_else(|| {
                ctx.request_headers
                    .and_then(|h| h.get(http::header::HOST))
                    .map(|v| HeaderVal::Bytes(v.as_bytes()))
            }),
            HeaderKey::Scheme => ctx.scheme.map(HeaderVal::Str),
            HeaderKey::Status | HeaderKey::Never => None,
            HeaderKey::Name(n) => ctx
                .request_headers?
                .get(n)
                .map(|v| HeaderVal::Bytes(v.as_bytes())),
        },
        Which::Response => match key {
            HeaderKey::Status if ctx.response_code != 0 => {
                Some(HeaderVal::Status(ctx.response_code))
            }
            HeaderKey::Name(n) => ctx
                .response_headers?
                .get(n)
                .map(|v| HeaderVal::Bytes(v.as_bytes())),
            _ => None,
        },
        Which::Trailers => match key {
            HeaderKey::Name(n) => ctx
                .response_trailers?
                .get(n)
                .map(|v| HeaderVal::Bytes(v.as_bytes())),
            _ => None,
        },
    }
}

enum HeaderVal<'a> {
    Str(&'a str),
    Bytes(&'a [u8]),
    Status(u16),
}

impl Op {
    /// Writes the value (truncated to `:N`) and reports what was written.
    fn write(&self, ctx: &LogContext<'_>, out: &mut Vec<u8>) -> Val {
        let start = out.len();
        let v = self.cmd.write(ctx, out);
        if let Some(n) = self.max_len
            && v == Val::Str
            && out.len() - start > n
        {
            out.truncate(start + n);
        }
        v
    }
}

impl Cmd {
    /// Renders as a JSON number in typed (`json_format`) output.
    fn is_numeric(&self) -> bool {
        matches!(
            self,
            Cmd::ResponseCode
                | Cmd::U64(_)
                | Cmd::Dur(_)
                | Cmd::Addr {
                    part: AddrPart::Port,
                    ..
                }
        )
    }

    fn write(&self, ctx: &LogContext<'_>, out: &mut Vec<u8>) -> Val {
        match self {
            Cmd::StartTime(tf) => {
                tf.write(ctx.start_time, out);
                Val::Str
            }
            Cmd::EmitTime(tf) => {
                tf.write(SystemTime::now(), out);
                Val::Str
            }
            Cmd::ReqHeader(sel) => write_header(ctx, Which::Request, sel, false, out),
            Cmd::ReqWithoutQuery(sel) => write_header(ctx, Which::Request, sel, true, out),
            Cmd::RespHeader(sel) => write_header(ctx, Which::Response, sel, false, out),
            Cmd::Trailer(sel) => write_header(ctx, Which::Trailers, sel, false, out),
            Cmd::Protocol => write_opt_str(ctx.protocol, out),
            Cmd::UpstreamProtocol => write_opt_str(ctx.upstream_protocol, out),
            Cmd::ResponseCode => write_u64(u64::from(ctx.response_code), out),
            Cmd::ResponseFlags => {
                ctx.response_flags.write_short(out);
                Val::Str
            }
            Cmd::ResponseFlagsLong => {
                ctx.response_flags.write_long(out);
                Val::Str
            }
            Cmd::U64(f) => write_u64(
                match f {
                    U64Field::BytesReceived => ctx.bytes_received,
                    U64Field::BytesSent => ctx.bytes_sent,
                    U64Field::UpstreamWireBytesSent => ctx.upstream_wire_bytes_sent,
                    U64Field::UpstreamWireBytesReceived => ctx.upstream_wire_bytes_received,
                    U64Field::RequestHeadersBytes => ctx.request_headers_bytes(),
                    U64Field::ResponseHeadersBytes => ctx.response_headers_bytes(),
                    U64Field::ResponseTrailersBytes => ctx.response_trailers_bytes(),
                    U64Field::UpstreamRequestAttemptCount => {
                        u64::from(ctx.upstream_request_attempt_count)
                    }
                    U64Field::UpstreamConnectionId => ctx.upstream_connection_id,
                    U64Field::ConnectionId => ctx.connection_id,
                },
                out,
            ),
            Cmd::Dur(f) => {
                let d: Option<Duration> = match f {
                    DurField::Duration => ctx.duration,
                    DurField::Request => ctx.request_duration,
                    DurField::RequestTx => ctx.request_tx_duration,
                    DurField::Response => ctx.response_duration,
                    DurField::ResponseTx => ctx.response_tx_duration,
                };
                match d {
                    // Envoy truncates to whole milliseconds.
                    Some(d) => write_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX), out),
                    None => Val::Missing,
                }
            }
            Cmd::Addr { which, part } => {
                let a = match which {
                    AddrField::UpstreamHost => ctx.upstream_host,
                    AddrField::UpstreamLocal => ctx.upstream_local_address,
                    AddrField::DownstreamRemote => ctx.downstream_remote_address,
                    AddrField::DownstreamDirectRemote => ctx.downstream_direct_remote_address,
                    AddrField::DownstreamLocal => ctx.downstream_local_address,
                };
                match a {
                    None => Val::Missing,
                    Some(a) => write_addr(a, *part, out),
                }
            }
            Cmd::Str(f) => {
                let s = match f {
                    StrField::ResponseCodeDetails => ctx.response_code_details,
                    StrField::ConnectionTerminationDetails => ctx.connection_termination_details,
                    // Envoy treats these as missing when empty.
                    StrField::UpstreamCluster => ctx.upstream_cluster.filter(|s| !s.is_empty()),
                    StrField::RouteName => ctx.route_name.filter(|s| !s.is_empty()),
                    StrField::VirtualClusterName => ctx.virtual_cluster_name,
                    StrField::RequestedServerName => {
                        ctx.requested_server_name.filter(|s| !s.is_empty())
                    }
                    StrField::FilterChainName => ctx.filter_chain_name.filter(|s| !s.is_empty()),
                    StrField::ListenerName => ctx.listener_name.filter(|s| !s.is_empty()),
                };
                write_opt_str(s, out)
            }
            Cmd::UpstreamHostName { port } => {
                match (
                    ctx.upstream_host_name.filter(|s| !s.is_empty()),
                    ctx.upstream_host,
                ) {
                    (Some(h), _) if *port => write_opt_str(Some(h), out),
                    (Some(h), _) => write_opt_str(Some(strip_port(h)), out),
                    // Envoy falls back to the host's address.
                    (None, Some(a)) if *port => write_addr(a, AddrPart::WithPort, out),
                    (None, Some(a)) => write_addr(a, AddrPart::WithoutPort(None), out),
                    (None, None) => Val::Missing,
                }
            }
            Cmd::Path { with_query, orig } => {
                let path = if *orig {
                    ctx.request_headers
                        .and_then(|h| h.get("x-envoy-original-path"))
                        .map(|v| v.as_bytes())
                } else {
                    ctx.path.map(str::as_bytes)
                };
                match path {
                    None => Val::Missing,
                    Some(p) => {
                        let p = if *with_query {
                            p
                        } else {
                            p.iter().position(|&c| c == b'?').map_or(p, |q| &p[..q])
                        };
                        out.extend_from_slice(p);
                        Val::Str
                    }
                }
            }
            Cmd::QueryParams => match ctx.path.and_then(|p| p.split_once('?')) {
                Some((_, q)) => write_opt_str(Some(q), out),
                None => Val::Missing,
            },
            Cmd::UpstreamTransportFailureReason => match ctx.upstream_transport_failure_reason {
                Some(r) if !r.is_empty() => {
                    out.extend(r.bytes().map(|c| if c == b' ' { b'_' } else { c }));
                    Val::Str
                }
                _ => Val::Missing,
            },
            Cmd::Static(v) => match v {
                Some(v) => {
                    out.extend_from_slice(v);
                    Val::Str
                }
                None => Val::Missing,
            },
            Cmd::UniqueId => {
                crate::uuid::write_v4(out);
                Val::Str
            }
        }
    }
}

/// `host:port` → `host`, `[v6]:port` → `v6` (Envoy's hostname-without-port).
fn strip_port(h: &str) -> &str {
    if let Some(rest) = h.strip_prefix('[')
        && let Some((inner, _)) = rest.split_once(']')
    {
        return inner;
    }
    match h.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|c| c.is_ascii_digit()) => {
            host
        }
        _ => h,
    }
}

fn write_opt_str(s: Option<&str>, out: &mut Vec<u8>) -> Val {
    match s {
        Some(s) => {
            out.extend_from_slice(s.as_bytes());
            Val::Str
        }
        None => Val::Missing,
    }
}

fn write_u64(v: u64, out: &mut Vec<u8>) -> Val {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    Val::Num
}

fn write_header(
    ctx: &LogContext<'_>,
    which: Which,
    sel: &HeaderSel,
    strip_query: bool,
    out: &mut Vec<u8>,
) -> Val {
    let found = lookup(ctx, &which, &sel.main)
        .or_else(|| sel.alt.as_ref().and_then(|k| lookup(ctx, &which, k)));
    let bytes: &[u8] = match &found {
        None => return Val::Missing,
        Some(HeaderVal::Str(s)) => s.as_bytes(),
        Some(HeaderVal::Bytes(b)) => b,
        Some(HeaderVal::Status(code)) => {
            out.extend_from_slice(itoa::Buffer::new().format(*code).as_bytes());
            return Val::Str;
        }
    };
    let bytes = if strip_query {
        bytes
            .iter()
            .position(|&c| c == b'?')
            .map_or(bytes, |q| &bytes[..q])
    } else {
        bytes
    };
    out.extend_from_slice(bytes);
    Val::Str
}

fn write_addr(a: SocketAddr, part: AddrPart, out: &mut Vec<u8>) -> Val {
    // Writing to a Vec<u8> cannot fail.
    match part {
        AddrPart::WithPort => {
            let _ = write!(out, "{a}");
            Val::Str
        }
        AddrPart::Port => write_u64(u64::from(a.port()), out),
        AddrPart::WithoutPort(None) => {
            let _ = write!(out, "{}", a.ip());
            Val::Str
        }
        AddrPart::WithoutPort(Some(Mask::Empty)) => Val::Str,
        AddrPart::WithoutPort(Some(Mask::Bits(bits))) => {
            match a.ip() {
                IpAddr::V4(ip) => {
                    let bits = bits.min(32);
                    let mask = if bits == 0 {
                        0
                    } else {
                        u32::MAX << (32 - u32::from(bits))
                    };
                    let net = std::net::Ipv4Addr::from(u32::from(ip) & mask);
                    let _ = write!(out, "{net}/{bits}");
                }
                IpAddr::V6(ip) => {
                    let bits = bits.min(128);
                    let mask = if bits == 0 {
                        0
                    } else {
                        u128::MAX << (128 - u32::from(bits))
                    };
                    let net = std::net::Ipv6Addr::from(u128::from(ip) & mask);
                    let _ = write!(out, "{net}/{bits}");
                }
            }
            Val::Str
        }
    }
}
