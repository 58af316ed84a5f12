//! The case file format (see `compat/README.md`).

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

/// One `compat/cases/*.yaml` file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    pub name: String,
    pub description: String,
    /// Envoy bootstrap YAML (already rendered: placeholders replaced).
    pub bootstrap: String,
    pub requests: Vec<RequestSpec>,
    /// Strait does not implement this yet (the reason names the issue). Against Strait the
    /// case still runs: a failure is reported as PENDING, a pass is a failure asking to
    /// remove this field, so the marker cannot outlive the gap. Envoy ignores it.
    #[serde(default)]
    pub strait_pending: Option<String>,
}

/// One `compat/validate/*.yaml` file: a bootstrap run with `--mode validate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateFile {
    pub name: String,
    pub description: String,
    pub bootstrap: String,
    /// Expected exit code of `--mode validate` (Envoy: 0 valid, 1 invalid).
    pub expect_exit: i32,
    /// Substrings of the output; checked against real Envoy only (Strait's messages may
    /// differ, only its exit code is compared).
    #[serde(default)]
    pub envoy_output_contains: OneOrMany,
    /// Where Strait deliberately differs from Envoy: its expected exit code, with
    /// `strait_difference` saying why (docs/compatibility.md lists these).
    #[serde(default)]
    pub strait_expect_exit: Option<i32>,
    #[serde(default)]
    pub strait_difference: Option<String>,
}

/// Which port of the proxy a request goes to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// `{{LISTEN_PORT}}` (the default).
    #[default]
    Listener,
    /// `{{LISTEN2_PORT}}`.
    Listener2,
    /// `{{LISTEN3_PORT}}`.
    Listener3,
    /// `{{ADMIN_PORT}}`.
    Admin,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// Optional label used in failure messages.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub to: Target,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub headers: HeaderList,
    #[serde(default)]
    pub body: Option<String>,
    /// h2c with prior knowledge.
    #[serde(default)]
    pub http2: bool,
    /// Send the body without a length (HTTP/1.1 chunked).
    #[serde(default)]
    pub chunked: bool,
    /// Bytes to write as-is on a new connection (HTTP/1 response parsed back).
    #[serde(default)]
    pub raw: Option<String>,
    /// Send the request this many times (each on a new connection); every response must match.
    #[serde(default)]
    pub repeat: Option<u32>,
    /// Retry (every 50 ms, up to 5 s) until the expectations hold, e.g. for stats.
    #[serde(default)]
    pub eventually: bool,
    /// Local address the client connects from (any 127.x.y.z works on Linux), e.g.
    /// `127.0.0.2`: Envoy treats only 127.0.0.1 as loopback.
    #[serde(default)]
    pub source_ip: Option<std::net::IpAddr>,
    /// Client timeout for this request in milliseconds (default 10000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    pub expect: Expect,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    #[serde(default)]
    pub status: Option<u16>,
    /// Response protocol version: `HTTP/1.1`, `HTTP/1.0` or `HTTP/2`.
    #[serde(default)]
    pub version: Option<String>,
    /// Exact values (repeated headers are joined with `, `).
    #[serde(default)]
    pub headers: HeaderList,
    #[serde(default)]
    pub headers_present: Vec<String>,
    #[serde(default)]
    pub headers_absent: Vec<String>,
    /// Exact body.
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub body_contains: OneOrMany,
    #[serde(default)]
    pub body_not_contains: OneOrMany,
    /// The body parsed as JSON must contain this value: objects match as subsets (every key
    /// given must be there and match), arrays and scalars match exactly.
    #[serde(default)]
    pub json: Option<serde_json::Value>,
    /// The request must fail without any HTTP response (connection closed or reset, or
    /// bytes that are not an HTTP/1 response for `raw`).
    #[serde(default)]
    pub no_response: bool,
    /// `raw` only: after the response the proxy closes the connection (within 2 s).
    #[serde(default)]
    pub connection_closed: bool,
    /// The request reached the echo upstream: checks on its JSON description.
    #[serde(default)]
    pub upstream: Option<UpstreamExpect>,
    /// With `repeat`: the set of echo names that answered, across all repetitions.
    #[serde(default)]
    pub upstream_names_seen: Option<Vec<String>>,
}

impl Expect {
    /// True when nothing at all is asserted.
    pub fn is_empty(&self) -> bool {
        self.status.is_none()
            && self.version.is_none()
            && self.headers.0.is_empty()
            && self.headers_present.is_empty()
            && self.headers_absent.is_empty()
            && self.body.is_none()
            && self.body_contains.0.is_empty()
            && self.body_not_contains.0.is_empty()
            && self.json.is_none()
            && !self.no_response
            && !self.connection_closed
            && self.upstream.is_none()
            && self.upstream_names_seen.is_none()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamExpect {
    /// `echo` (`{{ECHO_PORT}}`) or `echo2` (`{{ECHO2_PORT}}`).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    /// Path and query as the upstream received it.
    #[serde(default)]
    pub path: Option<String>,
    /// `HTTP/1.1` or `HTTP/2`.
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub headers: HeaderList,
    #[serde(default)]
    pub headers_present: Vec<String>,
    #[serde(default)]
    pub headers_absent: Vec<String>,
    #[serde(default)]
    pub body_len: Option<u64>,
}

/// A string or a list of strings.
#[derive(Debug, Default, Clone)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<Scalar>()? {
                    out.push(s.0);
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Header name/value pairs, written either as a mapping (`name: value`) or as a list of
/// `[name, value]` pairs (for repeated names or a fixed order). Values may be YAML scalars of
/// any type (`content-length: 5`).
#[derive(Debug, Default, Clone)]
pub struct HeaderList(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for HeaderList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HeaderList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of header names to values or a list of [name, value] pairs")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HeaderList, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Scalar>()? {
                    out.push((k, v.0));
                }
                Ok(HeaderList(out))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<HeaderList, A::Error> {
                let mut out = Vec::new();
                while let Some(pair) = seq.next_element::<Vec<Scalar>>()? {
                    if pair.len() != 2 {
                        return Err(de::Error::custom("header pairs must be [name, value]"));
                    }
                    let mut it = pair.into_iter();
                    let (k, v) = (it.next().unwrap_or_default(), it.next().unwrap_or_default());
                    out.push((k.0, v.0));
                }
                Ok(HeaderList(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Any YAML scalar, as a string.
#[derive(Debug, Default, Clone)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a scalar")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}
