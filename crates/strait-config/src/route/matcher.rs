//! Route matchers: does this route apply to this request?
//!
//! A `RouteMatch` is compiled once into a [`RouteMatcher`]; evaluating it never allocates:
//! header and query bytes are compared in place (the rare joined value of a repeated
//! Envoy "inline" header is built in a reused thread-local buffer). Every behaviour here
//! was observed from Envoy 1.40 (`compat/cases/route_match_*.yaml`); see
//! `docs/routing-matching.md`.

use std::cell::{Cell, RefCell};

use envoy_api::pb::envoy::config::route::v3 as rt;
use envoy_api::pb::envoy::r#type::matcher::v3 as tm;

use super::{RequestView, path_without_query};
use crate::error::{ConfigErrors, FieldPath};

pub const SUPPORTED: &[(&str, &[&str])] = &[
    (
        "envoy.config.route.v3.RouteMatch",
        &[
            "prefix",
            "path",
            "safe_regex",
            "path_separated_prefix",
            "case_sensitive",
            "headers",
            "query_parameters",
            "cookies",
            "grpc",
            "runtime_fraction",
        ],
    ),
    (
        "envoy.config.route.v3.RouteMatch.GrpcRouteMatchOptions",
        &[],
    ),
    (
        "envoy.config.route.v3.HeaderMatcher",
        &[
            "name",
            "string_match",
            "exact_match",
            "prefix_match",
            "suffix_match",
            "contains_match",
            "safe_regex_match",
            "present_match",
            "range_match",
            "invert_match",
            "treat_missing_header_as_empty",
        ],
    ),
    (
        "envoy.config.route.v3.QueryParameterMatcher",
        &["name", "string_match", "present_match"],
    ),
    (
        "envoy.config.route.v3.CookieMatcher",
        &["name", "string_match", "invert_match"],
    ),
    (
        "envoy.type.matcher.v3.StringMatcher",
        &[
            "exact",
            "prefix",
            "suffix",
            "contains",
            "safe_regex",
            "ignore_case",
        ],
    ),
    ("envoy.type.v3.Int64Range", &["start", "end"]),
    (
        "envoy.config.core.v3.RuntimeFractionalPercent",
        &["default_value", "runtime_key"],
    ),
    (
        "envoy.type.v3.FractionalPercent",
        &["numerator", "denominator"],
    ),
    (
        "envoy.type.matcher.v3.RegexMatcher",
        &["regex", "google_re2"],
    ),
    ("envoy.type.matcher.v3.RegexMatcher.GoogleRE2", &[]),
];

/// A compiled `RouteMatch`: every condition must hold.
#[derive(Debug)]
pub struct RouteMatcher {
    pub path: PathMatcher,
    /// `headers`: all must match.
    pub headers: Box<[HeaderMatcher]>,
    /// `query_parameters`: all must match.
    pub query_parameters: Box<[QueryParamMatcher]>,
    /// `cookies`: all must match.
    pub cookies: Box<[CookieMatcher]>,
    /// `grpc: {}`: content-type `application/grpc` or `application/grpc+...`.
    pub grpc: bool,
    /// `runtime_fraction` (its `default_value`; Strait has no runtime to override it).
    pub runtime_fraction: Option<RuntimeFraction>,
}

impl RouteMatcher {
    /// A matcher with only a path condition.
    pub fn path_only(path: PathMatcher) -> Self {
        Self {
            path,
            headers: Box::default(),
            query_parameters: Box::default(),
            cookies: Box::default(),
            grpc: false,
            runtime_fraction: None,
        }
    }

    /// Whether the route applies, drawing this request's random value if a
    /// `runtime_fraction` needs one. To evaluate several routes for one request, use
    /// [`RouteMatcher::matches_with`] with one shared [`RequestRandom`].
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        self.matches_with(req, &RequestRandom::new())
    }

    /// Whether the route applies; `random` is the request's random value (Envoy draws one
    /// per request and gives every route's `runtime_fraction` the same).
    pub fn matches_with(&self, req: &RequestView<'_>, random: &RequestRandom) -> bool {
        // The cheapest and most selective test first; the result does not depend on order.
        // A CONNECT request only matches `connect_matcher` routes, which match nothing else
        // (Envoy: a CONNECT request has no path for path matchers to see).
        let connect = req.method == http::Method::CONNECT;
        if connect != matches!(self.path, PathMatcher::Connect) || !self.path.matches(req.path) {
            return false;
        }
        if let Some(f) = &self.runtime_fraction
            && !f.sample(random.get())
        {
            return false;
        }
        if self.grpc && !is_grpc(req.headers) {
            return false;
        }
        if !self.headers.iter().all(|h| h.matches(req)) {
            return false;
        }
        if !self.query_parameters.is_empty() {
            let query = query_string(req.path);
            if !self.query_parameters.iter().all(|q| q.matches(query)) {
                return false;
            }
        }
        self.cookies.iter().all(|c| c.matches(req.headers))
    }
}

/// The request's random value for `runtime_fraction`: drawn on first use, then the same
/// for every route tried for this request (Envoy uses the stream id).
#[derive(Debug, Default)]
pub struct RequestRandom(Cell<Option<u64>>);

impl RequestRandom {
    pub fn new() -> Self {
        Self(Cell::new(None))
    }

    /// A fixed value (tests and benchmarks).
    pub fn fixed(value: u64) -> Self {
        Self(Cell::new(Some(value)))
    }

    pub fn get(&self) -> u64 {
        match self.0.get() {
            Some(v) => v,
            None => {
                let v = random_u64();
                self.0.set(Some(v));
                v
            }
        }
    }
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(rng_seed());
}

fn rng_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is randomly keyed per thread; mix in the time for good measure.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(nanos);
    h.finish()
}

/// A fast thread-local pseudo-random u64 (wyrand): no locking, no syscall.
pub fn random_u64() -> u64 {
    RNG.with(|s| {
        let x = s.get().wrapping_add(0xa076_1d64_78bd_642f);
        s.set(x);
        let t = u128::from(x) * u128::from(x ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    })
}

/// `runtime_fraction.default_value`: matches when `random % denominator < numerator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeFraction {
    pub numerator: u64,
    /// 100, 10 000 or 1 000 000.
    pub denominator: u64,
}

impl RuntimeFraction {
    /// A `FractionalPercent` (a `runtime_fraction`'s `default_value`).
    pub fn from_percent(fp: &envoy_api::pb::envoy::r#type::v3::FractionalPercent) -> Self {
        RuntimeFraction {
            numerator: u64::from(fp.numerator),
            // DenominatorType: HUNDRED = 0, TEN_THOUSAND = 1, MILLION = 2.
            denominator: match fp.denominator {
                1 => 10_000,
                2 => 1_000_000,
                _ => 100,
            },
        }
    }

    pub fn sample(&self, random: u64) -> bool {
        random % self.denominator < self.numerator
    }
}

#[derive(Debug)]
pub enum PathMatcher {
    /// The path (without query) starts with `prefix`.
    Prefix {
        prefix: String,
        case_sensitive: bool,
    },
    /// The path without the query equals `path`.
    Path { path: String, case_sensitive: bool },
    /// The path (without query) is `prefix` or starts with `prefix` + "/".
    PathSeparatedPrefix {
        prefix: String,
        case_sensitive: bool,
    },
    /// The whole path without the query must match (anchored; `case_sensitive` ignored,
    /// like Envoy).
    Regex(regex::Regex),
    /// `connect_matcher`: CONNECT requests only, whatever their path (checked in
    /// [`RouteMatcher::matches_with`], which sees the method).
    Connect,
}

impl PathMatcher {
    /// `path` is the full `:path`. Like Envoy, every path matcher looks at it without the
    /// query and fragment: a prefix "/a?b" never matches.
    pub fn matches(&self, path: &str) -> bool {
        let p = path_without_query(path);
        match self {
            PathMatcher::Prefix {
                prefix,
                case_sensitive,
            } => starts_with(p.as_bytes(), prefix.as_bytes(), !*case_sensitive),
            PathMatcher::Path {
                path: want,
                case_sensitive,
            } => {
                if *case_sensitive {
                    p == want
                } else {
                    p.eq_ignore_ascii_case(want)
                }
            }
            PathMatcher::PathSeparatedPrefix {
                prefix,
                case_sensitive,
            } => {
                starts_with(p.as_bytes(), prefix.as_bytes(), !*case_sensitive)
                    && p.as_bytes().get(prefix.len()).is_none_or(|&b| b == b'/')
            }
            PathMatcher::Regex(re) => re.is_match(p),
            PathMatcher::Connect => true,
        }
    }

    /// The literal every matching path (without query) starts with, and whether it is
    /// compared ignoring ASCII case; `None` when there is no such literal (regex). Used to
    /// index routes.
    pub fn literal_prefix(&self) -> Option<(&str, bool)> {
        match self {
            PathMatcher::Prefix {
                prefix,
                case_sensitive,
            }
            | PathMatcher::PathSeparatedPrefix {
                prefix,
                case_sensitive,
            } => Some((prefix, !*case_sensitive)),
            PathMatcher::Path {
                path,
                case_sensitive,
            } => Some((path, !*case_sensitive)),
            PathMatcher::Regex(re) => {
                let pattern = re
                    .as_str()
                    .strip_prefix("^(?:")
                    .and_then(|p| p.strip_suffix(")$"))?;
                let lit = regex_literal_prefix(pattern);
                (!lit.is_empty()).then_some((lit, false))
            }
            PathMatcher::Connect => None,
        }
    }
}

/// A literal every full match of `pattern` starts with (conservatively short): the leading
/// run of plain ASCII characters, minus its last one when a quantifier follows; nothing
/// when the pattern has a `|` anywhere.
pub fn regex_literal_prefix(pattern: &str) -> &str {
    if pattern.contains('|') {
        return "";
    }
    let plain = |b: u8| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'/' | b'-'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'@'
                    | b'&'
                    | b'='
                    | b':'
                    | b';'
                    | b','
                    | b'\''
                    | b'"'
                    | b'<'
                    | b'>'
                    | b'`'
            )
    };
    let bytes = pattern.as_bytes();
    let end = bytes.iter().position(|&b| !plain(b)).unwrap_or(bytes.len());
    let end = match bytes.get(end) {
        Some(b'?' | b'*' | b'+' | b'{') => end.saturating_sub(1),
        _ => end,
    };
    &pattern[..end]
}

fn starts_with(s: &[u8], prefix: &[u8], ignore_case: bool) -> bool {
    if ignore_case {
        s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
    } else {
        s.starts_with(prefix)
    }
}

fn ends_with(s: &[u8], suffix: &[u8], ignore_case: bool) -> bool {
    if ignore_case {
        s.len() >= suffix.len() && s[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    } else {
        s.ends_with(suffix)
    }
}

fn contains(s: &[u8], needle: &[u8], ignore_case: bool) -> bool {
    if needle.is_empty() {
        return true;
    }
    if needle.len() > s.len() {
        return false;
    }
    if ignore_case {
        s.windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
    } else {
        let first = needle[0];
        s.windows(needle.len())
            .any(|w| w[0] == first && w == needle)
    }
}

/// Envoy's `StringMatcher`, on bytes. `ignore_case` is ASCII-only, like absl's.
#[derive(Debug)]
pub enum StringMatch {
    Exact {
        value: Box<[u8]>,
        ignore_case: bool,
    },
    Prefix {
        value: Box<[u8]>,
        ignore_case: bool,
    },
    Suffix {
        value: Box<[u8]>,
        ignore_case: bool,
    },
    Contains {
        value: Box<[u8]>,
        ignore_case: bool,
    },
    /// Anchored: the whole value must match.
    Regex(regex::bytes::Regex),
}

impl StringMatch {
    pub fn matches(&self, v: &[u8]) -> bool {
        match self {
            StringMatch::Exact { value, ignore_case } => {
                if *ignore_case {
                    v.eq_ignore_ascii_case(value)
                } else {
                    v == &**value
                }
            }
            StringMatch::Prefix { value, ignore_case } => starts_with(v, value, *ignore_case),
            StringMatch::Suffix { value, ignore_case } => ends_with(v, value, *ignore_case),
            StringMatch::Contains { value, ignore_case } => contains(v, value, *ignore_case),
            StringMatch::Regex(re) => re.is_match(v),
        }
    }
}

/// Where a header matcher reads its value from.
#[derive(Debug)]
pub enum HeaderTarget {
    /// `:method`
    Method,
    /// `:path` (query included)
    Path,
    /// `:authority`, also `host` (Envoy keeps Host as `:authority`)
    Authority,
    /// `:scheme`
    Scheme,
    /// Any other pseudo-header, or a name no request can carry: never present.
    Absent,
    /// A regular header. `joined`: Envoy keeps this header "inline" and joins repeated
    /// values into one with ","; other headers keep each value, and a matcher matches when
    /// any one of them does.
    Header {
        name: http::HeaderName,
        joined: bool,
    },
}

/// What a header matcher checks.
#[derive(Debug)]
pub enum HeaderValueMatch {
    /// `present_match` (also a matcher with only a name: present).
    Present(bool),
    /// `range_match`: an int64 in [start, end).
    Range { start: i64, end: i64 },
    /// `string_match` and the deprecated direct fields.
    String(StringMatch),
    /// The deprecated `exact_match: ""`: any value of a present header.
    AnyValue,
}

impl HeaderValueMatch {
    fn matches_value(&self, v: &[u8]) -> bool {
        match self {
            HeaderValueMatch::Present(p) => *p,
            HeaderValueMatch::Range { start, end } => {
                simple_atoi(v).is_some_and(|n| n >= *start && n < *end)
            }
            HeaderValueMatch::String(m) => m.matches(v),
            HeaderValueMatch::AnyValue => true,
        }
    }
}

/// A compiled `HeaderMatcher`.
#[derive(Debug)]
pub struct HeaderMatcher {
    pub target: HeaderTarget,
    pub value: HeaderValueMatch,
    pub invert: bool,
    pub treat_missing_as_empty: bool,
}

impl HeaderMatcher {
    /// Envoy 1.40: a presence matcher compares presence (a missing header counts as
    /// present when `treat_missing_header_as_empty`); any other matcher never matches a
    /// missing header (inverted or not) unless it is treated as an empty value, and
    /// otherwise matches when any value matches, then `invert_match` negates that.
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        let mut seen = false;
        let mut any = false;
        self.for_each_value(req, &mut |v| {
            seen = true;
            if self.value.matches_value(v) {
                any = true;
                return true;
            }
            false
        });
        if let HeaderValueMatch::Present(want) = self.value {
            let present = seen || self.treat_missing_as_empty;
            return (present == want) != self.invert;
        }
        if !seen {
            if !self.treat_missing_as_empty {
                return false;
            }
            any = self.value.matches_value(b"");
        }
        any != self.invert
    }

    /// Calls `f` with each value the matcher sees, until `f` returns true.
    fn for_each_value(&self, req: &RequestView<'_>, f: &mut dyn FnMut(&[u8]) -> bool) {
        match &self.target {
            HeaderTarget::Method => {
                f(req.method.as_str().as_bytes());
            }
            HeaderTarget::Path => {
                f(req.path.as_bytes());
            }
            HeaderTarget::Authority => {
                f(req.authority.as_bytes());
            }
            HeaderTarget::Scheme => {
                f(req.scheme.as_bytes());
            }
            HeaderTarget::Absent => {}
            HeaderTarget::Header { name, joined } => {
                let mut values = req.headers.get_all(name).iter();
                let Some(first) = values.next() else {
                    return;
                };
                if !*joined {
                    if f(first.as_bytes()) {
                        return;
                    }
                    for v in values {
                        if f(v.as_bytes()) {
                            return;
                        }
                    }
                    return;
                }
                let Some(second) = values.next() else {
                    f(first.as_bytes());
                    return;
                };
                with_joined(first.as_bytes(), second.as_bytes(), values, f);
            }
        }
    }
}

thread_local! {
    static JOIN_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Calls `f` with `first,second,rest...` built in a reused thread-local buffer.
fn with_joined<'a>(
    first: &[u8],
    second: &[u8],
    rest: impl Iterator<Item = &'a http::HeaderValue>,
    f: &mut dyn FnMut(&[u8]) -> bool,
) {
    let fill = |buf: &mut Vec<u8>| {
        buf.clear();
        buf.extend_from_slice(first);
        buf.push(b',');
        buf.extend_from_slice(second);
        for v in rest {
            buf.push(b',');
            buf.extend_from_slice(v.as_bytes());
        }
    };
    JOIN_BUF.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            fill(&mut buf);
            f(&buf);
        }
        Err(_) => {
            let mut buf = Vec::new();
            fill(&mut buf);
            f(&buf);
        }
    });
}

/// Request headers Envoy 1.40 keeps "inline" (printed at startup as the request header
/// map): repeated values are joined into one with ",". Pseudo-headers are handled apart.
const INLINE_REQUEST_HEADERS: &[&str] = &[
    "accept",
    "accept-encoding",
    "access-control-request-headers",
    "access-control-request-method",
    "access-control-request-private-network",
    "authentication",
    "authorization",
    "cache-control",
    "cdn-loop",
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "expect",
    "grpc-accept-encoding",
    "grpc-timeout",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "keep-alive",
    "origin",
    "pragma",
    "proxy-connection",
    "proxy-status",
    "referer",
    "te",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "via",
    "x-client-trace-id",
    "x-envoy-attempt-count",
    "x-envoy-decorator-operation",
    "x-envoy-downstream-service-cluster",
    "x-envoy-downstream-service-node",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-external-address",
    "x-envoy-force-trace",
    "x-envoy-hedge-on-per-try-timeout",
    "x-envoy-internal",
    "x-envoy-ip-tags",
    "x-envoy-is-timeout-retry",
    "x-envoy-max-retries",
    "x-envoy-original-host",
    "x-envoy-original-path",
    "x-envoy-original-url",
    "x-envoy-retriable-header-names",
    "x-envoy-retriable-status-codes",
    "x-envoy-retry-grpc-on",
    "x-envoy-retry-on",
    "x-envoy-upstream-alt-stat-name",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-upstream-rq-timeout-alt-response",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-stream-duration-ms",
    "x-forwarded-client-cert",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-proto",
    "x-request-id",
];

/// absl::SimpleAtoi for int64: optional ASCII whitespace around, an optional sign, decimal
/// digits, no overflow.
pub fn simple_atoi(v: &[u8]) -> Option<i64> {
    let v = v.trim_ascii();
    let (neg, digits) = match v.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, v),
    };
    if digits.is_empty() {
        return None;
    }
    let mut n: i64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        let d = i64::from(b - b'0');
        n = n.checked_mul(10)?;
        n = if neg {
            n.checked_sub(d)?
        } else {
            n.checked_add(d)?
        };
    }
    Some(n)
}

/// Envoy's `Grpc::Common::isGrpcRequestHeaders`: content-type (repeated values joined with
/// ",", as Envoy keeps it inline) is "application/grpc" or starts with "application/grpc+".
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    let mut values = headers.get_all(http::header::CONTENT_TYPE).iter();
    let Some(first) = values.next() else {
        return false;
    };
    let first = first.as_bytes();
    match first.strip_prefix(GRPC) {
        Some([]) => values.next().is_none(),
        Some([b'+', ..]) => true,
        _ => false,
    }
}

/// The query string: everything after the first "?" of `:path`, if any.
pub fn query_string(path: &str) -> Option<&str> {
    path.split_once('?').map(|(_, q)| q)
}

/// The first value of query parameter `name`, parsed like Envoy's
/// `QueryParamsMulti::parseQueryString`: split on "&", name and value split at the first
/// "=" (none: empty value), nothing decoded.
pub fn first_query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|piece| {
        let (k, v) = piece.split_once('=').unwrap_or((piece, ""));
        (k == name).then_some(v)
    })
}

/// A compiled `QueryParameterMatcher`.
#[derive(Debug)]
pub struct QueryParamMatcher {
    pub name: Box<str>,
    pub value: QueryValueMatch,
}

#[derive(Debug)]
pub enum QueryValueMatch {
    /// `present_match` (a matcher with only a name is present_match true).
    Present(bool),
    /// `string_match` on the first value.
    String(StringMatch),
}

impl QueryParamMatcher {
    pub fn matches(&self, query: Option<&str>) -> bool {
        let v = query.and_then(|q| first_query_value(q, &self.name));
        match &self.value {
            QueryValueMatch::Present(want) => v.is_some() == *want,
            QueryValueMatch::String(m) => v.is_some_and(|v| m.matches(v.as_bytes())),
        }
    }
}

/// A compiled `CookieMatcher`.
#[derive(Debug)]
pub struct CookieMatcher {
    pub name: Box<str>,
    pub value: StringMatch,
    pub invert: bool,
}

impl CookieMatcher {
    /// A missing cookie does not match (so an inverted matcher matches it).
    pub fn matches(&self, headers: &http::HeaderMap) -> bool {
        let found =
            first_cookie(headers, self.name.as_bytes()).is_some_and(|v| self.value.matches(v));
        found != self.invert
    }
}

/// The first value of cookie `name` over every Cookie header, parsed like Envoy's
/// `Utility::parseCookies`: ";"-separated tokens, whitespace-trimmed, empty ones and ones
/// without "=" skipped, the value's surrounding double quotes removed.
pub fn first_cookie<'a>(headers: &'a http::HeaderMap, name: &[u8]) -> Option<&'a [u8]> {
    for h in headers.get_all(http::header::COOKIE) {
        for token in h.as_bytes().split(|&b| b == b';') {
            let token = token.trim_ascii();
            let Some(eq) = token.iter().position(|&b| b == b'=') else {
                continue;
            };
            if &token[..eq] != name {
                continue;
            }
            let v = &token[eq + 1..];
            return Some(match v {
                [b'"', inner @ .., b'"'] => inner,
                _ => v,
            });
        }
    }
    None
}

/// Validates `pattern` as written, then anchors it (Envoy's safe_regex is a full match).
fn anchored(pattern: &str) -> Result<String, regex::Error> {
    regex::Regex::new(pattern)?;
    Ok(format!("^(?:{pattern})$"))
}

fn compile_regex_str(
    re: &tm::RegexMatcher,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<regex::Regex> {
    match anchored(&re.regex).and_then(|a| regex::Regex::new(&a)) {
        Ok(r) => Some(r),
        Err(e) => {
            errs.push(
                path.field("regex").to_string(),
                format!("invalid regex {:?}: {e}", re.regex),
            );
            None
        }
    }
}

fn compile_regex_bytes(
    re: &tm::RegexMatcher,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<regex::bytes::Regex> {
    match anchored(&re.regex).and_then(|a| regex::bytes::Regex::new(&a)) {
        Ok(r) => Some(r),
        Err(e) => {
            errs.push(
                path.field("regex").to_string(),
                format!("invalid regex {:?}: {e}", re.regex),
            );
            None
        }
    }
}

/// Compiles an Envoy `StringMatcher`.
pub fn compile_string_match(
    m: &tm::StringMatcher,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<StringMatch> {
    use tm::string_matcher::MatchPattern as P;
    let ignore_case = m.ignore_case;
    let bytes = |s: &str| -> Box<[u8]> { s.as_bytes().into() };
    match &m.match_pattern {
        Some(P::Exact(s)) => Some(StringMatch::Exact {
            value: bytes(s),
            ignore_case,
        }),
        Some(P::Prefix(s)) => Some(StringMatch::Prefix {
            value: bytes(s),
            ignore_case,
        }),
        Some(P::Suffix(s)) => Some(StringMatch::Suffix {
            value: bytes(s),
            ignore_case,
        }),
        Some(P::Contains(s)) => Some(StringMatch::Contains {
            value: bytes(s),
            ignore_case,
        }),
        Some(P::SafeRegex(re)) => {
            if ignore_case {
                // Envoy refuses the config: "ignore_case has no effect for safe_regex."
                errs.push(
                    path.field("ignore_case").to_string(),
                    "ignore_case has no effect for safe_regex (Envoy refuses it)",
                );
                return None;
            }
            compile_regex_bytes(re, &path.field("safe_regex"), errs).map(StringMatch::Regex)
        }
        Some(P::Custom(_)) => {
            errs.push(
                path.field("custom").to_string(),
                "is not supported by Strait yet",
            );
            None
        }
        None => {
            errs.push(
                path.to_string(),
                "one of exact, prefix, suffix, contains or safe_regex must be set",
            );
            None
        }
    }
}

fn header_target(name: &str) -> HeaderTarget {
    let lower = name.to_ascii_lowercase();
    match lower.as_str() {
        ":method" => HeaderTarget::Method,
        ":path" => HeaderTarget::Path,
        ":authority" | "host" => HeaderTarget::Authority,
        ":scheme" => HeaderTarget::Scheme,
        n if n.starts_with(':') => HeaderTarget::Absent,
        n => match http::HeaderName::from_bytes(n.as_bytes()) {
            Ok(h) => HeaderTarget::Header {
                joined: INLINE_REQUEST_HEADERS.contains(&n),
                name: h,
            },
            Err(_) => HeaderTarget::Absent,
        },
    }
}

/// Compiles a `HeaderMatcher`. The deprecated direct fields are still honoured by Envoy
/// 1.40 (with a warning), so they are compiled too.
#[allow(deprecated)]
pub fn compile_header_matcher(
    h: &rt::HeaderMatcher,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<HeaderMatcher> {
    use rt::header_matcher::HeaderMatchSpecifier as S;
    let exact = |value: &str| StringMatch::Exact {
        value: value.as_bytes().into(),
        ignore_case: false,
    };
    let value = match &h.header_match_specifier {
        None => HeaderValueMatch::Present(true),
        Some(S::PresentMatch(p)) => HeaderValueMatch::Present(*p),
        Some(S::RangeMatch(r)) => HeaderValueMatch::Range {
            start: r.start,
            end: r.end,
        },
        Some(S::StringMatch(m)) => {
            HeaderValueMatch::String(compile_string_match(m, &path.field("string_match"), errs)?)
        }
        Some(S::ExactMatch(v)) if v.is_empty() => HeaderValueMatch::AnyValue,
        Some(S::ExactMatch(v)) => HeaderValueMatch::String(exact(v)),
        Some(S::PrefixMatch(v)) => HeaderValueMatch::String(StringMatch::Prefix {
            value: v.as_bytes().into(),
            ignore_case: false,
        }),
        Some(S::SuffixMatch(v)) => HeaderValueMatch::String(StringMatch::Suffix {
            value: v.as_bytes().into(),
            ignore_case: false,
        }),
        Some(S::ContainsMatch(v)) => HeaderValueMatch::String(StringMatch::Contains {
            value: v.as_bytes().into(),
            ignore_case: false,
        }),
        Some(S::SafeRegexMatch(re)) => HeaderValueMatch::String(StringMatch::Regex(
            compile_regex_bytes(re, &path.field("safe_regex_match"), errs)?,
        )),
    };
    Some(HeaderMatcher {
        target: header_target(&h.name),
        value,
        invert: h.invert_match,
        treat_missing_as_empty: h.treat_missing_header_as_empty,
    })
}

/// Compiles a `QueryParameterMatcher`.
pub fn compile_query_matcher(
    q: &rt::QueryParameterMatcher,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<QueryParamMatcher> {
    use rt::query_parameter_matcher::QueryParameterMatchSpecifier as S;
    let value = match &q.query_parameter_match_specifier {
        None => QueryValueMatch::Present(true),
        Some(S::PresentMatch(p)) => QueryValueMatch::Present(*p),
        Some(S::StringMatch(m)) => {
            QueryValueMatch::String(compile_string_match(m, &path.field("string_match"), errs)?)
        }
    };
    Some(QueryParamMatcher {
        name: q.name.as_str().into(),
        value,
    })
}

/// Compiles a `CookieMatcher`.
pub fn compile_cookie_matcher(
    c: &rt::CookieMatcher,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<CookieMatcher> {
    let sp = path.field("string_match");
    let Some(m) = &c.string_match else {
        errs.push(sp.to_string(), "is required");
        return None;
    };
    Some(CookieMatcher {
        name: c.name.as_str().into(),
        value: compile_string_match(m, &sp, errs)?,
        invert: c.invert_match,
    })
}

/// Compiles a `RouteMatch`.
pub fn compile_match(
    m: &rt::RouteMatch,
    mp: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<RouteMatcher> {
    use rt::route_match::PathSpecifier as PS;
    let errors_before = errs.0.len();
    let case_sensitive = m.case_sensitive.as_ref().map(|v| v.value).unwrap_or(true);
    let path = match &m.path_specifier {
        Some(PS::Prefix(p)) => Some(PathMatcher::Prefix {
            prefix: p.clone(),
            case_sensitive,
        }),
        Some(PS::Path(p)) => Some(PathMatcher::Path {
            path: p.clone(),
            case_sensitive,
        }),
        Some(PS::PathSeparatedPrefix(p)) => {
            // Envoy's rule (protoc-gen-validate): `^[^?#]+[^?#/]$`.
            let ok = p.len() >= 2 && !p.contains(['?', '#']) && !p.ends_with('/');
            if ok {
                Some(PathMatcher::PathSeparatedPrefix {
                    prefix: p.clone(),
                    case_sensitive,
                })
            } else {
                errs.push(
                    mp.field("path_separated_prefix").to_string(),
                    format!(
                        "{p:?} must be at least 2 characters, without '?' or '#', and not end with '/'"
                    ),
                );
                None
            }
        }
        Some(PS::SafeRegex(re)) => {
            compile_regex_str(re, &mp.field("safe_regex"), errs).map(PathMatcher::Regex)
        }
        Some(PS::PathMatchPolicy(_)) => {
            errs.push(
                mp.to_string(),
                "path_match_policy (URI templates) is not supported by Strait yet; use safe_regex",
            );
            None
        }
        Some(PS::ConnectMatcher(_)) => Some(PathMatcher::Connect),
        None => {
            errs.push(
                mp.to_string(),
                "one of prefix, path, safe_regex or path_separated_prefix must be set",
            );
            None
        }
    };
    if !m.dynamic_metadata.is_empty() {
        errs.push(
            mp.field("dynamic_metadata").to_string(),
            "is not supported by Strait yet (no HTTP filter sets dynamic metadata)",
        );
    }
    if !m.filter_state.is_empty() {
        errs.push(
            mp.field("filter_state").to_string(),
            "is not supported by Strait yet (no HTTP filter sets filter state)",
        );
    }
    if m.tls_context.is_some() {
        errs.push(
            mp.field("tls_context").to_string(),
            "is not supported by Strait yet (no TLS listeners)",
        );
    }
    let mut headers = Vec::with_capacity(m.headers.len());
    for (i, h) in m.headers.iter().enumerate() {
        if let Some(h) = compile_header_matcher(h, &mp.field("headers").index(i), errs) {
            headers.push(h);
        }
    }
    let mut query_parameters = Vec::with_capacity(m.query_parameters.len());
    for (i, q) in m.query_parameters.iter().enumerate() {
        if let Some(q) = compile_query_matcher(q, &mp.field("query_parameters").index(i), errs) {
            query_parameters.push(q);
        }
    }
    let mut cookies = Vec::with_capacity(m.cookies.len());
    for (i, c) in m.cookies.iter().enumerate() {
        if let Some(c) = compile_cookie_matcher(c, &mp.field("cookies").index(i), errs) {
            cookies.push(c);
        }
    }
    let runtime_fraction = match &m.runtime_fraction {
        None => None,
        Some(rf) => match &rf.default_value {
            None => {
                errs.push(
                    mp.field("runtime_fraction")
                        .field("default_value")
                        .to_string(),
                    "is required",
                );
                None
            }
            Some(fp) => Some(RuntimeFraction::from_percent(fp)),
        },
    };
    if errs.0.len() != errors_before {
        return None;
    }
    Some(RouteMatcher {
        path: path?,
        headers: headers.into(),
        query_parameters: query_parameters.into(),
        cookies: cookies.into(),
        grpc: m.grpc.is_some(),
        runtime_fraction,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Req {
        path: String,
        method: http::Method,
        headers: http::HeaderMap,
        authority: String,
    }

    impl Req {
        fn new(path: &str) -> Self {
            Self {
                path: path.into(),
                method: http::Method::GET,
                headers: http::HeaderMap::new(),
                authority: "Example.com:81".into(),
            }
        }
        fn header(mut self, k: &'static str, v: &str) -> Self {
            self.headers.append(
                k,
                http::HeaderValue::from_str(v).expect("test header value"),
            );
            self
        }
        fn view(&self) -> RequestView<'_> {
            RequestView {
                path: &self.path,
                method: &self.method,
                headers: &self.headers,
                authority: &self.authority,
                scheme: "http",
            }
        }
    }

    fn decode<T: prost::Message + Default>(
        v: serde_json::Value,
        name: &str,
    ) -> Result<T, ConfigErrors> {
        let desc = envoy_api::pool()
            .get_message_by_name(name)
            .ok_or_else(|| ConfigErrors::one("", format!("no message {name}")))?;
        crate::load::message_from_json(v, &desc)?
            .transcode_to()
            .map_err(|e| ConfigErrors::one("", e.to_string()))
    }

    fn route_match(yaml_json: serde_json::Value) -> Result<RouteMatcher, ConfigErrors> {
        let m: rt::RouteMatch = decode(yaml_json, "envoy.config.route.v3.RouteMatch")?;
        let mut errs = ConfigErrors::default();
        let r = compile_match(&m, &FieldPath::root().field("match"), &mut errs);
        match r {
            Some(r) if errs.is_empty() => Ok(r),
            _ => Err(errs),
        }
    }

    fn ok(j: serde_json::Value) -> RouteMatcher {
        match route_match(j.clone()) {
            Ok(m) => m,
            Err(e) => panic!("{j} did not compile: {e}"),
        }
    }

    fn hm(j: serde_json::Value) -> RouteMatcher {
        ok(serde_json::json!({"prefix": "/", "headers": [j]}))
    }

    #[test]
    fn path_matchers_ignore_the_query() {
        let m = ok(serde_json::json!({"prefix": "/q?x"}));
        assert!(!m.matches(&Req::new("/q?x=1").view()));
        let m = ok(serde_json::json!({"prefix": "/api"}));
        assert!(m.matches(&Req::new("/api/x?y").view()));
        assert!(m.matches(&Req::new("/apix").view()));
        assert!(!m.matches(&Req::new("/API").view()));
        let m = ok(serde_json::json!({"prefix": "/Api", "case_sensitive": false}));
        assert!(m.matches(&Req::new("/aPI/x").view()));
        let m = ok(serde_json::json!({"path": "/e"}));
        assert!(m.matches(&Req::new("/e?x=1").view()));
        assert!(m.matches(&Req::new("/e#frag").view()));
        assert!(!m.matches(&Req::new("/e/").view()));
        let m = ok(serde_json::json!({"path": "/E", "case_sensitive": false}));
        assert!(m.matches(&Req::new("/e").view()));
    }

    #[test]
    fn path_separated_prefix() {
        let m = ok(serde_json::json!({"path_separated_prefix": "/sep"}));
        for p in ["/sep", "/sep/", "/sep/a/b", "/sep?a=b", "/sep#x"] {
            assert!(m.matches(&Req::new(p).view()), "{p}");
        }
        for p in ["/sepx", "/SEP", "/se", "/", "/x/sep"] {
            assert!(!m.matches(&Req::new(p).view()), "{p}");
        }
        let m = ok(serde_json::json!({"path_separated_prefix": "/Ci/x", "case_sensitive": false}));
        assert!(m.matches(&Req::new("/ci/X/y").view()));
        assert!(!m.matches(&Req::new("/ci/xy").view()));
        for bad in ["/foo/", "/", "/a?b", "/a#b"] {
            let e = route_match(serde_json::json!({"path_separated_prefix": bad}))
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(e.0[0].path == "match.path_separated_prefix", "{bad}: {e}");
        }
        assert!(route_match(serde_json::json!({"path_separated_prefix": "ab"})).is_ok());
    }

    #[test]
    fn regex_path_is_anchored_and_ignores_case_flag() {
        let m = ok(serde_json::json!({"safe_regex": {"regex": "/re/[a-z]+"}}));
        assert!(m.matches(&Req::new("/re/abc?x=1").view()));
        assert!(!m.matches(&Req::new("/re/abc/").view()));
        assert!(!m.matches(&Req::new("/x/re/abc").view()));
        let m = ok(serde_json::json!({"safe_regex": {"regex": "/A"}, "case_sensitive": false}));
        assert!(!m.matches(&Req::new("/a").view()));
        // An alternation cannot escape the anchors.
        let m = ok(serde_json::json!({"safe_regex": {"regex": "/a|/b"}}));
        assert!(!m.matches(&Req::new("/a/x").view()));
        assert!(m.matches(&Req::new("/b").view()));
        let e = route_match(serde_json::json!({"safe_regex": {"regex": "/("}})).err();
        assert_eq!(
            e.map(|e| e.0[0].path.clone()).as_deref(),
            Some("match.safe_regex.regex")
        );
    }

    #[test]
    fn regex_literal_prefixes() {
        for (p, want) in [
            ("/re/[a-z]+", "/re/"),
            ("/abc", "/abc"),
            ("/ab*", "/a"),
            ("/ab?", "/a"),
            ("/ab+c", "/a"),
            ("/ab{2}", "/a"),
            ("/a.b", "/a"),
            ("/a\\.b", "/a"),
            ("/a|/b", ""),
            ("(/a)", ""),
            ("(?i)/a", ""),
            ("^/a", ""),
            ("/a(?i)b", "/a"),
            ("/é", "/"),
        ] {
            assert_eq!(regex_literal_prefix(p), want, "{p}");
        }
        let m = ok(serde_json::json!({"safe_regex": {"regex": "/re/[a-z]+"}}));
        assert_eq!(m.path.literal_prefix(), Some(("/re/", false)));
    }

    #[test]
    fn string_matchers() {
        let m = |v: serde_json::Value| {
            let mut errs = ConfigErrors::default();
            let sm: tm::StringMatcher = decode(v.clone(), "envoy.type.matcher.v3.StringMatcher")
                .unwrap_or_else(|e| panic!("{v}: {e}"));
            let r = compile_string_match(&sm, &FieldPath::root(), &mut errs);
            (r, errs)
        };
        let cases: &[(serde_json::Value, &[&str], &[&str])] = &[
            (
                serde_json::json!({"exact": "foo"}),
                &["foo"],
                &["Foo", "fooo", ""],
            ),
            (
                serde_json::json!({"exact": "foo", "ignore_case": true}),
                &["FOO", "foo"],
                &["fo"],
            ),
            (serde_json::json!({"exact": ""}), &[""], &["v"]),
            (
                serde_json::json!({"prefix": "ab"}),
                &["ab", "abc"],
                &["ABc", "a"],
            ),
            (
                serde_json::json!({"prefix": "ab", "ignore_case": true}),
                &["ABc"],
                &["xab"],
            ),
            (serde_json::json!({"suffix": "yz"}), &["xyz"], &["xYZ", "z"]),
            (
                serde_json::json!({"suffix": "yz", "ignore_case": true}),
                &["xYZ"],
                &["yzx"],
            ),
            (
                serde_json::json!({"contains": "mid"}),
                &["amidb", "mid"],
                &["aMIDb", "mi"],
            ),
            (
                serde_json::json!({"contains": "mid", "ignore_case": true}),
                &["aMIDb"],
                &["m i d"],
            ),
            (
                serde_json::json!({"safe_regex": {"regex": "[0-9]+"}}),
                &["123"],
                &["a123", "123a", ""],
            ),
        ];
        for (cfg, yes, no) in cases {
            let (r, errs) = m(cfg.clone());
            let r = r.unwrap_or_else(|| panic!("{cfg}: {errs}"));
            for v in *yes {
                assert!(r.matches(v.as_bytes()), "{cfg} should match {v:?}");
            }
            for v in *no {
                assert!(!r.matches(v.as_bytes()), "{cfg} should not match {v:?}");
            }
        }
        let (r, errs) = m(serde_json::json!({"safe_regex": {"regex": "a"}, "ignore_case": true}));
        assert!(r.is_none());
        assert_eq!(errs.0[0].path, "ignore_case");
        let (r, errs) = m(serde_json::json!({"safe_regex": {"regex": "a("}}));
        assert!(r.is_none());
        assert_eq!(errs.0[0].path, "safe_regex.regex");
    }

    #[test]
    fn header_string_and_deprecated_matchers() {
        let m = hm(serde_json::json!({"name": "X-A", "string_match": {"exact": "foo"}}));
        assert!(m.matches(&Req::new("/").header("x-a", "foo").view()));
        assert!(!m.matches(&Req::new("/").header("x-a", "Foo").view()));
        assert!(!m.matches(&Req::new("/").view()));
        let m = hm(serde_json::json!({"name": "x-a", "exact_match": ""}));
        assert!(m.matches(&Req::new("/").header("x-a", "anything").view()));
        assert!(!m.matches(&Req::new("/").view()));
        let m = hm(serde_json::json!({"name": "x-a", "prefix_match": "ab"}));
        assert!(m.matches(&Req::new("/").header("x-a", "abc").view()));
        let m = hm(serde_json::json!({"name": "x-a", "suffix_match": "yz"}));
        assert!(m.matches(&Req::new("/").header("x-a", "xyz").view()));
        let m = hm(serde_json::json!({"name": "x-a", "contains_match": "mid"}));
        assert!(m.matches(&Req::new("/").header("x-a", "amidb").view()));
        let m = hm(serde_json::json!({"name": "x-a", "safe_regex_match": {"regex": "[0-9]+"}}));
        assert!(m.matches(&Req::new("/").header("x-a", "42").view()));
        assert!(!m.matches(&Req::new("/").header("x-a", "42x").view()));
        let e = route_match(serde_json::json!({"prefix": "/", "headers": [
            {"name": "x-a", "safe_regex_match": {"regex": "[z-a]"}}]}))
        .err();
        assert_eq!(
            e.map(|e| e.0[0].path.clone()).as_deref(),
            Some("match.headers[0].safe_regex_match.regex")
        );
    }

    #[test]
    fn repeated_headers_match_any_value_unless_inline() {
        let m = hm(serde_json::json!({"name": "x-a", "string_match": {"exact": "foo"}}));
        let two = Req::new("/").header("x-a", "bar").header("x-a", "foo");
        assert!(m.matches(&two.view()));
        let m = hm(serde_json::json!({"name": "x-a", "string_match": {"exact": "bar,foo"}}));
        assert!(!m.matches(&two.view()));
        let inv = hm(
            serde_json::json!({"name": "x-a", "string_match": {"exact": "foo"}, "invert_match": true}),
        );
        assert!(!inv.matches(&two.view()));
        assert!(
            inv.matches(
                &Req::new("/")
                    .header("x-a", "bar")
                    .header("x-a", "baz")
                    .view()
            )
        );
        // user-agent is inline in Envoy: values joined with ",".
        let ua = Req::new("/")
            .header("user-agent", "a")
            .header("user-agent", "b")
            .header("user-agent", "c");
        let m = hm(serde_json::json!({"name": "user-agent", "string_match": {"exact": "a,b,c"}}));
        assert!(m.matches(&ua.view()));
        let m = hm(serde_json::json!({"name": "user-agent", "string_match": {"exact": "b"}}));
        assert!(!m.matches(&ua.view()));
        let m = hm(
            serde_json::json!({"name": "user-agent", "string_match": {"safe_regex": {"regex": "a,.,c"}}}),
        );
        assert!(m.matches(&ua.view()));
    }

    #[test]
    fn header_presence_inversion_and_missing_as_empty() {
        let present = Req::new("/").header("x-a", "v");
        let empty = Req::new("/").header("x-a", "");
        let missing = Req::new("/");
        let check = |j: serde_json::Value, p: bool, e: bool, m: bool| {
            let r = hm(j.clone());
            assert_eq!(r.matches(&present.view()), p, "{j} present");
            assert_eq!(r.matches(&empty.view()), e, "{j} empty");
            assert_eq!(r.matches(&missing.view()), m, "{j} missing");
        };
        check(
            serde_json::json!({"name": "x-a", "present_match": true}),
            true,
            true,
            false,
        );
        check(
            serde_json::json!({"name": "x-a", "present_match": false}),
            false,
            false,
            true,
        );
        check(serde_json::json!({"name": "x-a"}), true, true, false);
        check(
            serde_json::json!({"name": "x-a", "present_match": true, "invert_match": true}),
            false,
            false,
            true,
        );
        check(
            serde_json::json!({"name": "x-a", "present_match": false, "invert_match": true}),
            true,
            true,
            false,
        );
        check(
            serde_json::json!({"name": "x-a", "string_match": {"exact": "foo"}, "invert_match": true}),
            true,
            true,
            false,
        );
        check(
            serde_json::json!({"name": "x-a", "string_match": {"exact": ""}, "treat_missing_header_as_empty": true}),
            false,
            true,
            true,
        );
        check(
            serde_json::json!({"name": "x-a", "string_match": {"prefix": "a"}, "treat_missing_header_as_empty": true}),
            false,
            false,
            false,
        );
        check(
            serde_json::json!({"name": "x-a", "string_match": {"exact": "foo"}, "invert_match": true, "treat_missing_header_as_empty": true}),
            true,
            true,
            true,
        );
        check(
            serde_json::json!({"name": "x-a", "present_match": false, "treat_missing_header_as_empty": true}),
            false,
            false,
            false,
        );
        check(
            serde_json::json!({"name": "x-a", "present_match": true, "treat_missing_header_as_empty": true}),
            true,
            true,
            true,
        );
    }

    #[test]
    fn header_range() {
        let m = hm(serde_json::json!({"name": "x-n", "range_match": {"start": -10, "end": 20}}));
        for v in ["5", "-10", "+5", "007", "19", " 5 "] {
            assert!(m.matches(&Req::new("/").header("x-n", v).view()), "{v}");
        }
        for v in [
            "20",
            "-11",
            "5x",
            "0x5",
            "5.0",
            "",
            "- 5",
            "99999999999999999999",
            "1,2",
            "+",
            "-",
        ] {
            assert!(!m.matches(&Req::new("/").header("x-n", v).view()), "{v:?}");
        }
        assert!(m.matches(&Req::new("/").header("x-n", "100").header("x-n", "2").view()));
        let inv = hm(
            serde_json::json!({"name": "x-n", "range_match": {"start": 0, "end": 10}, "invert_match": true}),
        );
        assert!(inv.matches(&Req::new("/").header("x-n", "abc").view()));
        assert!(!inv.matches(&Req::new("/").view()));
        assert_eq!(simple_atoi(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(simple_atoi(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(simple_atoi(b"9223372036854775808"), None);
        // A reversed range is accepted and matches nothing, like Envoy.
        let m = hm(serde_json::json!({"name": "x-n", "range_match": {"start": 10, "end": 1}}));
        assert!(!m.matches(&Req::new("/").header("x-n", "5").view()));
    }

    #[test]
    fn pseudo_headers() {
        let mut r = Req::new("/p/x?q=1");
        r.method = http::Method::POST;
        let m = hm(serde_json::json!({"name": ":method", "string_match": {"exact": "POST"}}));
        assert!(m.matches(&r.view()));
        let m = hm(serde_json::json!({"name": ":path", "string_match": {"exact": "/p/x?q=1"}}));
        assert!(m.matches(&r.view()));
        let m = hm(
            serde_json::json!({"name": ":authority", "string_match": {"exact": "Example.com:81"}}),
        );
        assert!(m.matches(&r.view()));
        let m =
            hm(serde_json::json!({"name": "Host", "string_match": {"exact": "Example.com:81"}}));
        assert!(m.matches(&r.view()));
        let m = hm(serde_json::json!({"name": ":scheme", "string_match": {"exact": "http"}}));
        assert!(m.matches(&r.view()));
        let m = hm(serde_json::json!({"name": ":foo", "present_match": true}));
        assert!(!m.matches(&r.view()));
    }

    #[test]
    fn query_parameters() {
        let q =
            |j: serde_json::Value| ok(serde_json::json!({"prefix": "/", "query_parameters": [j]}));
        let m = q(serde_json::json!({"name": "a", "string_match": {"exact": "1"}}));
        for p in ["/?a=1", "/?b=2&a=1&c", "/?a=1&a=2", "/?&&a=1&", "/?x=?&a=1"] {
            assert!(m.matches(&Req::new(p).view()), "{p}");
        }
        for p in [
            "/",
            "/?a=2",
            "/?a=2&a=1",
            "/?a=%31",
            "/?%61=1",
            "/?A=1",
            "/?a=1=2",
            "/a=1",
        ] {
            assert!(!m.matches(&Req::new(p).view()), "{p}");
        }
        let m = q(serde_json::json!({"name": "a", "present_match": true}));
        assert!(m.matches(&Req::new("/?a").view()));
        assert!(m.matches(&Req::new("/?x=1&a=").view()));
        assert!(!m.matches(&Req::new("/?ab=1").view()));
        let m = q(serde_json::json!({"name": "a", "present_match": false}));
        assert!(m.matches(&Req::new("/?b=1").view()));
        assert!(m.matches(&Req::new("/").view()));
        assert!(!m.matches(&Req::new("/?a=1").view()));
        let m = q(serde_json::json!({"name": "a"}));
        assert!(m.matches(&Req::new("/?a=1").view()));
        assert!(!m.matches(&Req::new("/").view()));
        let m = q(serde_json::json!({"name": "a", "string_match": {"exact": ""}}));
        assert!(m.matches(&Req::new("/?a").view()));
        assert!(m.matches(&Req::new("/?a=").view()));
        assert!(!m.matches(&Req::new("/?a=v").view()));
    }

    #[test]
    fn cookies() {
        let m = ok(
            serde_json::json!({"prefix": "/", "cookies": [{"name": "a", "string_match": {"exact": "1"}}]}),
        );
        for c in [
            "a=1",
            "b=2; a=1",
            "b=2;a=1 ",
            "a=\"1\"",
            "a=1; a=2",
            " ; x ; a=1",
        ] {
            assert!(m.matches(&Req::new("/").header("cookie", c).view()), "{c}");
        }
        for c in ["a=2; a=1", "a= 1", "A=1", "a", "ab=1"] {
            assert!(!m.matches(&Req::new("/").header("cookie", c).view()), "{c}");
        }
        assert!(
            m.matches(
                &Req::new("/")
                    .header("cookie", "b=2")
                    .header("cookie", "a=1")
                    .view()
            )
        );
        let inv = ok(
            serde_json::json!({"prefix": "/", "cookies": [{"name": "a", "string_match": {"exact": "1"}, "invert_match": true}]}),
        );
        assert!(inv.matches(&Req::new("/").view()));
        assert!(inv.matches(&Req::new("/").header("cookie", "a=2").view()));
        assert!(!inv.matches(&Req::new("/").header("cookie", "a=1").view()));
    }

    #[test]
    fn grpc() {
        let m = ok(serde_json::json!({"prefix": "/", "grpc": {}}));
        let ct = |v: &[&str]| {
            let mut r = Req::new("/");
            for v in v {
                r = r.header("content-type", v);
            }
            m.matches(&r.view())
        };
        assert!(ct(&["application/grpc"]));
        assert!(ct(&["application/grpc+proto"]));
        assert!(ct(&["application/grpc+"]));
        assert!(ct(&["application/grpc+proto", "application/json"]));
        assert!(!ct(&["application/grpc-web"]));
        assert!(!ct(&["Application/gRPC"]));
        assert!(!ct(&["application/grpc; charset=utf-8"]));
        assert!(!ct(&["application/grpc", "application/json"]));
        assert!(!ct(&["application/json", "application/grpc"]));
        assert!(!ct(&[]));
    }

    #[test]
    fn runtime_fraction() {
        let m = |num: u32, den: &str| {
            ok(serde_json::json!({"prefix": "/", "runtime_fraction": {
                "default_value": {"numerator": num, "denominator": den}, "runtime_key": "k"}}))
        };
        let r = Req::new("/");
        let never = m(0, "HUNDRED");
        let always = m(100, "HUNDRED");
        let over = m(500, "HUNDRED");
        let million = m(1_000_000, "MILLION");
        let tenk = m(1, "TEN_THOUSAND");
        for x in [0u64, 1, 99, 100, 12345, u64::MAX] {
            let rnd = RequestRandom::fixed(x);
            assert!(!never.matches_with(&r.view(), &rnd));
            assert!(always.matches_with(&r.view(), &rnd));
            assert!(over.matches_with(&r.view(), &rnd));
            assert!(million.matches_with(&r.view(), &rnd));
            assert_eq!(tenk.matches_with(&r.view(), &rnd), x % 10_000 == 0);
        }
        let half = m(50, "HUNDRED");
        let hits = (0..2000).filter(|_| half.matches(&r.view())).count();
        assert!((700..1300).contains(&hits), "{hits}");
        // One random value per request, shared by every route.
        let rnd = RequestRandom::new();
        let first = rnd.get();
        assert_eq!(rnd.get(), first);
        let e = route_match(
            serde_json::json!({"prefix": "/", "runtime_fraction": {"runtime_key": "k"}}),
        );
        assert!(e.is_err());
    }

    #[test]
    fn unsupported_match_fields_are_refused() {
        let e = route_match(serde_json::json!({"prefix": "/", "dynamic_metadata": [
            {"filter": "f", "path": [{"key": "k"}], "value": {"present_match": true}}]}))
        .err();
        assert_eq!(
            e.map(|e| e.0[0].path.clone()).as_deref(),
            Some("match.dynamic_metadata")
        );
        let m = route_match(serde_json::json!({"connect_matcher": {}}));
        assert!(matches!(m.map(|m| m.path), Ok(PathMatcher::Connect)));
        let e = route_match(serde_json::json!({"prefix": "/", "tls_context": {"presented": true}}))
            .err();
        assert!(e.is_some());
    }
}
