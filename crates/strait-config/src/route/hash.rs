//! `hash_policy`: the request hash that ring-hash and Maglev clusters balance on (and that
//! picks a priority level). Computed like Envoy's `HashPolicyImpl`: each policy that yields
//! a value is xxHash64'd and folded into the running hash (rotated left by one first, so two
//! equal policies do not cancel out); a `terminal` policy that produced a hash ends the walk.

use std::net::IpAddr;
use std::time::Duration;

use envoy_api::pb::envoy::config::route::v3 as rt;
use http::HeaderMap;
use http::header::{COOKIE, HeaderName};
use xxhash_rust::xxh64::xxh64;

use super::action::{RegexRewrite, compile_regex_rewrite};
use super::matcher::{first_query_value, query_string};
use crate::error::{ConfigErrors, FieldPath};

pub const SUPPORTED: &[(&str, &[&str])] = &[
    ("envoy.config.route.v3.RouteAction", &["hash_policy"]),
    (
        "envoy.config.route.v3.RouteAction.HashPolicy",
        &[
            "header",
            "cookie",
            "connection_properties",
            "query_parameter",
            "filter_state",
            "terminal",
        ],
    ),
    (
        "envoy.config.route.v3.RouteAction.HashPolicy.Header",
        &["header_name", "regex_rewrite"],
    ),
    (
        "envoy.config.route.v3.RouteAction.HashPolicy.Cookie",
        &["name", "ttl", "path", "attributes"],
    ),
    (
        "envoy.config.route.v3.RouteAction.HashPolicy.CookieAttribute",
        &["name", "value"],
    ),
    (
        "envoy.config.route.v3.RouteAction.HashPolicy.ConnectionProperties",
        &["source_ip"],
    ),
    (
        "envoy.config.route.v3.RouteAction.HashPolicy.QueryParameter",
        &["name"],
    ),
    (
        "envoy.config.route.v3.RouteAction.HashPolicy.FilterState",
        &["key"],
    ),
];

/// A route's compiled `hash_policy` list.
#[derive(Debug)]
pub struct HashPolicy {
    methods: Box<[(HashMethod, bool)]>,
}

#[derive(Debug)]
enum HashMethod {
    Header {
        name: HeaderName,
        rewrite: Option<RegexRewrite>,
    },
    Cookie(CookiePolicy),
    SourceIp,
    QueryParameter(Box<str>),
    /// Strait has no hashable filter-state objects yet, so this never yields a value: what
    /// Envoy does when the key is absent.
    FilterState,
}

/// `cookie` hashing; with a `ttl`, a missing cookie is generated and set on the response.
#[derive(Debug)]
pub struct CookiePolicy {
    pub name: Box<str>,
    pub ttl: Option<Duration>,
    pub path: Box<str>,
    pub attributes: Box<[(Box<str>, Box<str>)]>,
}

/// What a request offers to hashing besides its headers.
#[derive(Clone, Copy)]
pub struct HashInput<'a> {
    pub headers: &'a HeaderMap,
    /// `:path` with its query.
    pub path: &'a str,
    pub source_ip: Option<IpAddr>,
    /// The value a generated cookie takes on this connection (Envoy: hex of the xxHash64 of
    /// the remote and local addresses, so racing requests of a connection agree).
    pub connection_cookie: &'a dyn Fn() -> String,
}

/// The request hash, and a `set-cookie` value when a cookie policy generated the cookie.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HashOutcome {
    pub hash: Option<u64>,
    pub set_cookie: Option<String>,
}

impl HashPolicy {
    pub fn evaluate(&self, input: &HashInput<'_>) -> HashOutcome {
        let mut out = HashOutcome::default();
        for (method, terminal) in self.methods.iter() {
            if let Some(new) = method.evaluate(input, &mut out.set_cookie) {
                let old = out.hash.map_or(0, |h| h.rotate_left(1));
                out.hash = Some(old ^ new);
            }
            if *terminal && out.hash.is_some() {
                break;
            }
        }
        out
    }
}

impl HashMethod {
    fn evaluate(&self, input: &HashInput<'_>, set_cookie: &mut Option<String>) -> Option<u64> {
        match self {
            HashMethod::Header { name, rewrite } => {
                let mut values: Vec<std::borrow::Cow<'_, str>> = input
                    .headers
                    .get_all(name)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()))
                    .map(|v| match rewrite {
                        Some(r) => std::borrow::Cow::Owned(r.replace_all(&v)),
                        None => v,
                    })
                    .collect();
                if values.is_empty() {
                    return None;
                }
                // Same hash whatever the order of repeated headers, as Envoy.
                values.sort();
                // Envoy's xxHash64 over a list chains the seed through the values.
                Some(values.iter().fold(0, |seed, v| xxh64(v.as_bytes(), seed)))
            }
            HashMethod::Cookie(c) => match cookie_value(input.headers, &c.name) {
                Some(v) if !v.is_empty() => Some(xxh64(v.as_bytes(), 0)),
                _ => {
                    let ttl = c.ttl?;
                    let value = (input.connection_cookie)();
                    *set_cookie = Some(c.set_cookie_value(&value, ttl));
                    Some(xxh64(value.as_bytes(), 0))
                }
            },
            HashMethod::SourceIp => input
                .source_ip
                .map(|ip| xxh64(ip.to_string().as_bytes(), 0)),
            HashMethod::QueryParameter(name) => query_string(input.path)
                .and_then(|q| first_query_value(q, name))
                .map(|v| xxh64(v.as_bytes(), 0)),
            HashMethod::FilterState => None,
        }
    }
}

impl CookiePolicy {
    /// Envoy's `makeSetCookieValue`: quoted value, `Max-Age` unless zero, `Path`, the
    /// attributes, `HttpOnly`.
    fn set_cookie_value(&self, value: &str, ttl: Duration) -> String {
        let mut s = format!("{}=\"{}\"", self.name, value);
        if ttl.as_secs() != 0 {
            s.push_str(&format!("; Max-Age={}", ttl.as_secs()));
        }
        if !self.path.is_empty() {
            s.push_str(&format!("; Path={}", self.path));
        }
        for (k, v) in self.attributes.iter() {
            if v.is_empty() {
                s.push_str(&format!("; {k}"));
            } else {
                s.push_str(&format!("; {k}={v}"));
            }
        }
        s.push_str("; HttpOnly");
        s
    }
}

/// The generated cookie's value for a connection: Envoy hashes the remote address followed
/// by the local address (`ip:port` each) and prints the hash as 16 hex digits.
pub fn connection_cookie_value(remote: &str, local: &str) -> String {
    let mut s = String::with_capacity(remote.len() + local.len());
    s.push_str(remote);
    s.push_str(local);
    format!("{:016x}", xxh64(s.as_bytes(), 0))
}

/// The value of cookie `name` (Envoy's `parseCookieValue`: every `cookie` header, pairs split
/// on ';', surrounding double quotes removed).
fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get_all(COOKIE).iter().find_map(|v| {
        let v = v.to_str().ok()?;
        v.split(';').find_map(|pair| {
            let (k, val) = pair.trim_start().split_once('=')?;
            (k == name).then(|| {
                val.strip_prefix('"')
                    .and_then(|x| x.strip_suffix('"'))
                    .unwrap_or(val)
            })
        })
    })
}

pub(crate) fn compile(
    ra: &rt::RouteAction,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<std::sync::Arc<HashPolicy>> {
    use rt::route_action::hash_policy::PolicySpecifier as P;
    if ra.hash_policy.is_empty() {
        return None;
    }
    let mut methods = Vec::with_capacity(ra.hash_policy.len());
    for (i, hp) in ra.hash_policy.iter().enumerate() {
        let p = path.field("hash_policy").index(i);
        let method = match &hp.policy_specifier {
            Some(P::Header(h)) => {
                let Ok(name) =
                    HeaderName::from_bytes(h.header_name.to_ascii_lowercase().as_bytes())
                else {
                    errs.push(
                        p.field("header").field("header_name").to_string(),
                        format!("{:?} is not a valid header name", h.header_name),
                    );
                    continue;
                };
                let rewrite = match &h.regex_rewrite {
                    Some(rs) => {
                        let rp = p.field("header").field("regex_rewrite");
                        let Some(r) = compile_regex_rewrite(rs, &rp, errs) else {
                            continue;
                        };
                        Some(r)
                    }
                    None => None,
                };
                HashMethod::Header { name, rewrite }
            }
            Some(P::Cookie(c)) => HashMethod::Cookie(CookiePolicy {
                name: c.name.as_str().into(),
                ttl: c
                    .ttl
                    .as_ref()
                    .map(|d| Duration::from_secs(d.seconds.max(0) as u64)),
                path: c.path.as_str().into(),
                attributes: c
                    .attributes
                    .iter()
                    .map(|a| (a.name.as_str().into(), a.value.as_str().into()))
                    .collect(),
            }),
            // `source_ip: false` adds no method, as in Envoy.
            Some(P::ConnectionProperties(cp)) if !cp.source_ip => continue,
            Some(P::ConnectionProperties(_)) => HashMethod::SourceIp,
            Some(P::QueryParameter(q)) => HashMethod::QueryParameter(q.name.as_str().into()),
            Some(P::FilterState(_)) => HashMethod::FilterState,
            None => {
                errs.push(
                    p.to_string(),
                    "one of header, cookie, connection_properties, query_parameter or filter_state must be set",
                );
                continue;
            }
        };
        methods.push((method, hp.terminal));
    }
    Some(std::sync::Arc::new(HashPolicy {
        methods: methods.into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn policy(methods: Vec<(HashMethod, bool)>) -> HashPolicy {
        HashPolicy {
            methods: methods.into(),
        }
    }

    fn input<'a>(
        headers: &'a HeaderMap,
        path: &'a str,
        f: &'a dyn Fn() -> String,
    ) -> HashInput<'a> {
        HashInput {
            headers,
            path,
            source_ip: "10.0.0.1".parse().ok(),
            connection_cookie: f,
        }
    }

    fn header(name: &str) -> HashMethod {
        HashMethod::Header {
            name: HeaderName::from_bytes(name.as_bytes()).expect("name"),
            rewrite: None,
        }
    }

    #[test]
    fn header_hash_is_xxhash64_of_the_value_and_order_independent() {
        let f = || String::new();
        let mut h = HeaderMap::new();
        h.insert("x-key", HeaderValue::from_static("abc"));
        let p = policy(vec![(header("x-key"), false)]);
        assert_eq!(p.evaluate(&input(&h, "/", &f)).hash, Some(xxh64(b"abc", 0)));
        let mut a = HeaderMap::new();
        a.append("x-key", HeaderValue::from_static("b"));
        a.append("x-key", HeaderValue::from_static("a"));
        let mut b = HeaderMap::new();
        b.append("x-key", HeaderValue::from_static("a"));
        b.append("x-key", HeaderValue::from_static("b"));
        assert_eq!(
            p.evaluate(&input(&a, "/", &f)),
            p.evaluate(&input(&b, "/", &f))
        );
        assert_eq!(
            p.evaluate(&input(&a, "/", &f)).hash,
            Some(xxh64(b"b", xxh64(b"a", 0)))
        );
        assert_eq!(p.evaluate(&input(&HeaderMap::new(), "/", &f)).hash, None);
    }

    #[test]
    fn hashes_fold_with_rotation_and_terminal_stops() {
        let f = || String::new();
        let mut h = HeaderMap::new();
        h.insert("a", HeaderValue::from_static("1"));
        h.insert("b", HeaderValue::from_static("2"));
        let two = policy(vec![(header("a"), false), (header("b"), false)]);
        let want = xxh64(b"1", 0).rotate_left(1) ^ xxh64(b"2", 0);
        assert_eq!(two.evaluate(&input(&h, "/", &f)).hash, Some(want));
        // Two equal policies do not cancel each other out.
        let same = policy(vec![(header("a"), false), (header("a"), false)]);
        assert_ne!(same.evaluate(&input(&h, "/", &f)).hash, Some(0));
        let terminal = policy(vec![(header("a"), true), (header("b"), false)]);
        assert_eq!(
            terminal.evaluate(&input(&h, "/", &f)).hash,
            Some(xxh64(b"1", 0))
        );
        // A terminal policy without a value does not stop the walk.
        let skip = policy(vec![(header("zz"), true), (header("b"), false)]);
        assert_eq!(
            skip.evaluate(&input(&h, "/", &f)).hash,
            Some(xxh64(b"2", 0))
        );
    }

    #[test]
    fn query_source_ip_and_cookie() {
        let f = || "0123456789abcdef".to_string();
        let mut h = HeaderMap::new();
        let q = policy(vec![(HashMethod::QueryParameter("u".into()), false)]);
        assert_eq!(
            q.evaluate(&input(&h, "/p?x=1&u=42", &f)).hash,
            Some(xxh64(b"42", 0))
        );
        assert_eq!(q.evaluate(&input(&h, "/p?x=1", &f)).hash, None);
        let ip = policy(vec![(HashMethod::SourceIp, false)]);
        assert_eq!(
            ip.evaluate(&input(&h, "/", &f)).hash,
            Some(xxh64(b"10.0.0.1", 0))
        );
        let cookie = |ttl| {
            policy(vec![(
                HashMethod::Cookie(CookiePolicy {
                    name: "sid".into(),
                    ttl,
                    path: "/".into(),
                    attributes: Box::new([("SameSite".into(), "Lax".into())]),
                }),
                false,
            )])
        };
        // No cookie and no ttl: no hash, nothing set.
        assert_eq!(
            cookie(None).evaluate(&input(&h, "/", &f)),
            HashOutcome::default()
        );
        // No cookie with a ttl: generated and set.
        let out = cookie(Some(Duration::from_secs(60))).evaluate(&input(&h, "/", &f));
        assert_eq!(out.hash, Some(xxh64(b"0123456789abcdef", 0)));
        assert_eq!(
            out.set_cookie.as_deref(),
            Some("sid=\"0123456789abcdef\"; Max-Age=60; Path=/; SameSite=Lax; HttpOnly")
        );
        h.insert(COOKIE, HeaderValue::from_static("a=1; sid=\"xyz\""));
        let out = cookie(Some(Duration::from_secs(60))).evaluate(&input(&h, "/", &f));
        assert_eq!(out.hash, Some(xxh64(b"xyz", 0)));
        assert_eq!(out.set_cookie, None);
    }
}
