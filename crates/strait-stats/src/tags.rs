//! Envoy's default tag extraction (`source/common/config/well_known_names.cc`,
//! `source/common/stats/tag_extractor_impl.cc`, `tag_producer_impl.cc`).
//!
//! Semantics reproduced from Envoy:
//! * Two kinds of extractors: RE2 regexes (partial match; capture group 1 is removed
//!   from the name, group 2 — or group 1 when 2 is empty — is the tag value; an
//!   optional literal "substr" must occur in the name; an optional "negative match"
//!   value suppresses the tag) and token patterns (`cluster.$.**`: `*` one token, `**`
//!   one or more tokens at the end / any number in the middle, `$` the captured token;
//!   the token plus its following dot — or preceding dot when it is last — is removed).
//! * Order: extractors with no leading literal token run first, in definition order
//!   (regexes before token patterns), then those whose leading literal token equals the
//!   stat name's first token, in definition order. Tags come out in that order.
//! * Every extractor sees the original name; the removed character ranges are merged
//!   and cut out at the end, giving the tag-extracted name.
//! * When several extractors share a tag name, only the first that matches adds a tag.

use std::sync::OnceLock;

use regex::Regex;

/// One extracted tag: `(name, value)`, e.g. `("envoy.cluster_name", "backend")`.
pub type Tag = (String, String);

/// Result of running the default extractors over a stat name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtractedName {
    /// The name with the tag values removed (e.g. `cluster.upstream_rq_total`).
    pub tag_extracted_name: String,
    /// Tags in Envoy's extraction order.
    pub tags: Vec<Tag>,
}

// Substitutions Envoy applies to its regexes (written here in Rust `regex` syntax).
const TAG_VALUE: &str = r"[^\.]+";
const ADDRESS: &str = r"(?:(?:\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[[a-fA-F_\d]+\])_\d+)";
const CIPHER: &str = r"[\w-]+";
const TLS_VERSION: &str = r"TLSv\d\.\d";
const ROUTE_CONFIG_NAME: &str = r"[\w\-\./]+";
const SCOPED_ROUTE_CONFIG_NAME: &str = r"[\w\-\.]+";
const LISTENER_OR_CLUSTER_WITH_NAME: &str = r"(?:listener|cluster)\..*?";
const PROXY_PROTOCOL_VERSION: &str = r"\d";

fn expand(re: &str) -> String {
    re.replace("<ADDRESS>", ADDRESS)
        .replace("<CIPHER>", CIPHER)
        .replace("<TLS_VERSION>", TLS_VERSION)
        .replace("<TAG_VALUE>", TAG_VALUE)
        .replace("<ROUTE_CONFIG_NAME>", ROUTE_CONFIG_NAME)
        .replace("<SCOPED_ROUTE_CONFIG_NAME>", SCOPED_ROUTE_CONFIG_NAME)
        .replace(
            "<LISTENER_OR_CLUSTER_WITH_NAME>",
            LISTENER_OR_CLUSTER_WITH_NAME,
        )
        .replace("<PROXY_PROTOCOL_VERSION>", PROXY_PROTOCOL_VERSION)
}

/// Regex descriptors: (tag name, regex, substr, negative match), in Envoy's order.
const REGEX_DESCRIPTORS: &[(&str, &str, &str, &str)] = &[
    ("envoy.response_code", r"_rq(_(\d{3}))$", "_rq_", ""),
    ("envoy.response_code_class", r"_rq_((\d))xx$", "_rq_", ""),
    (
        "envoy.dynamo_partition_id",
        r"^http\.<TAG_VALUE>\.dynamodb\.table\.<TAG_VALUE>\.capacity\.<TAG_VALUE>(\.__partition_id=(\w{7}))$",
        ".dynamodb.table.",
        "",
    ),
    (
        "envoy.dynamo_operation",
        r"^http\.<TAG_VALUE>\.dynamodb.(?:operation|table\.<TAG_VALUE>\.capacity)(\.(<TAG_VALUE>))(?:\.|$)",
        ".dynamodb.",
        "",
    ),
    (
        "envoy.dynamo_table",
        r"^http\.<TAG_VALUE>\.dynamodb.(?:table|error)\.((<TAG_VALUE>)\.)",
        ".dynamodb.",
        "",
    ),
    (
        "envoy.ssl_cipher",
        r"^listener\..*?\.ssl\.ciphers(\.(<CIPHER>))$",
        ".ssl.ciphers.",
        "",
    ),
    (
        "envoy.ssl_curve",
        r"^<LISTENER_OR_CLUSTER_WITH_NAME>\.ssl\.curves(\.(<CIPHER>))$",
        ".ssl.curves.",
        "",
    ),
    (
        "envoy.ssl_sigalg",
        r"^<LISTENER_OR_CLUSTER_WITH_NAME>\.ssl\.sigalgs(\.(<CIPHER>))$",
        ".ssl.sigalgs.",
        "",
    ),
    (
        "envoy.ssl_version",
        r"^<LISTENER_OR_CLUSTER_WITH_NAME>\.ssl\.versions(\.(<TLS_VERSION>))$",
        ".ssl.versions.",
        "",
    ),
    (
        "cipher_suite",
        r"^cluster\.<TAG_VALUE>\.ssl\.ciphers(\.(<CIPHER>))$",
        ".ssl.ciphers.",
        "",
    ),
    (
        "envoy.http_conn_manager_prefix",
        r"^listener\..*?\.http\.((<TAG_VALUE>)\.)",
        ".http.",
        "",
    ),
    (
        "envoy.worker_id",
        r"^(?:listener\.(?:<ADDRESS>|<TAG_VALUE>)|server|listener_manager|thread_local_cluster_manager)\.worker_((\d+)\.)",
        "",
        "",
    ),
    (
        "envoy.listener_address",
        r"^listener\.((<ADDRESS>|<TAG_VALUE>)\.)",
        "",
        "admin",
    ),
    (
        "envoy.rds_route_config",
        r"^http\.<TAG_VALUE>\.rds\.((<ROUTE_CONFIG_NAME>)\.)\w+?$",
        ".rds.",
        "",
    ),
    (
        "envoy.scoped_rds_config",
        r"^http\.<TAG_VALUE>\.scoped_rds\.((<SCOPED_ROUTE_CONFIG_NAME>)\.)\w+?$",
        ".scoped_rds.",
        "",
    ),
    (
        "envoy.rbac_policy_name",
        r"^http\.<TAG_VALUE>\.rbac\.(?:<TAG_VALUE>\.)?policy\.((<TAG_VALUE>)\.)(allowed|shadow_allowed|denied|shadow_denied)$",
        "",
        "",
    ),
    (
        "envoy.rbac_http_prefix",
        r"^http\.<TAG_VALUE>\.rbac\.((<TAG_VALUE>)\.).*?",
        "",
        "policy",
    ),
    (
        "envoy.proxy_protocol_prefix",
        r"^proxy_proto\.((<TAG_VALUE>)\.).+$",
        "",
        "versions",
    ),
    (
        "envoy.proxy_protocol_version",
        r"^proxy_proto\.((?:<TAG_VALUE>\.)?versions\.v(<PROXY_PROTOCOL_VERSION>)\.)\w+$",
        "",
        "",
    ),
    (
        "envoy.tls_certificate",
        r"^<LISTENER_OR_CLUSTER_WITH_NAME>\.ssl\.certificate\.((<TAG_VALUE>)\.).*$",
        ".ssl.certificate",
        "",
    ),
    (
        "envoy.xds_resource_name",
        r"^sds\.((<TAG_VALUE>)\.).+",
        "",
        "",
    ),
];

/// Token-pattern descriptors: (tag name, pattern), in Envoy's order.
const TOKEN_DESCRIPTORS: &[(&str, &str)] = &[
    (
        "envoy.mongo_callsite",
        "mongo.*.collection.*.callsite.$.query.**",
    ),
    ("envoy.mongo_collection", "mongo.*.collection.$.**.query.*"),
    ("envoy.mongo_cmd", "mongo.*.cmd.$.**"),
    ("envoy.grpc_bridge_method", "cluster.*.grpc.*.$.**"),
    ("envoy.http_user_agent", "http.*.user_agent.$.**"),
    ("envoy.virtual_cluster", "vhost.*.vcluster.$.**"),
    ("envoy.fault_downstream_cluster", "http.*.fault.$.**"),
    ("envoy.grpc_bridge_service", "cluster.*.grpc.$.**"),
    ("envoy.tcp_prefix", "tcp.$.**"),
    ("envoy.udp_prefix", "udp.$.**"),
    ("envoy.clientssl_prefix", "auth.clientssl.$.**"),
    ("envoy.ratelimit_prefix", "ratelimit.$.**"),
    ("envoy.cluster_name", "cluster.$.**"),
    ("envoy.ext_authz_prefix", "cluster.*.ext_authz.$.**"),
    ("envoy.ext_authz_prefix", "http.*.ext_authz.$.**"),
    ("envoy.http_conn_manager_prefix", "http.$.**"),
    ("envoy.virtual_host", "vhost.$.**"),
    ("envoy.mongo_prefix", "mongo.$.**"),
    ("envoy.route", "vhost.*.route.$.**"),
    ("envoy.thrift_prefix", "thrift.$.**"),
    ("envoy.redis_prefix", "redis.$.**"),
    (
        "envoy.local_http_ratelimit_prefix",
        "$.http_local_rate_limit.**",
    ),
    (
        "envoy.local_network_ratelimit_prefix",
        "local_rate_limit.$.**",
    ),
    (
        "envoy.local_listener_ratelimit_prefix",
        "listener_local_ratelimit.$.**",
    ),
    ("envoy.dns_filter_prefix", "dns_filter.$.**"),
    ("envoy.connection_limit_prefix", "connection_limit.$.**"),
    ("envoy.rbac_prefix", "$.rbac.**"),
    ("envoy.google_grpc_client_prefix", "grpc.$.**"),
];

enum Kind {
    Regex {
        re: Regex,
        substr: &'static str,
        negative: &'static str,
    },
    Tokens {
        tokens: Vec<&'static str>,
        match_index: usize,
    },
}

struct Extractor {
    name: &'static str,
    kind: Kind,
    /// Set when another extractor produces the same tag name.
    shares_name: bool,
}

/// Envoy's `extractRegexPrefix`: the literal first token of an anchored regex.
fn regex_prefix(re: &str) -> Option<&str> {
    let rest = re.strip_prefix('^')?;
    let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
    if end == 0 {
        return None;
    }
    let after = &rest[end..];
    let ok = if after.len() == 1 {
        after == "$"
    } else {
        after.starts_with(r"\.") || after.starts_with(r"(?=\.)")
    };
    ok.then_some(&rest[..end])
}

impl Extractor {
    /// Returns `(value, remove_start, remove_end)` when the extractor matches.
    fn extract(&self, name: &str, tokens: &[&str]) -> Option<(String, usize, usize)> {
        match &self.kind {
            Kind::Regex {
                re,
                substr,
                negative,
            } => {
                if !substr.is_empty() && !name.contains(substr) {
                    return None;
                }
                let caps = re.captures(name)?;
                let remove = caps.get(1).filter(|m| !m.as_str().is_empty())?;
                let value = caps
                    .get(2)
                    .filter(|m| !m.as_str().is_empty())
                    .unwrap_or(remove);
                if !negative.is_empty() && value.as_str() == *negative {
                    return None;
                }
                Some((value.as_str().to_string(), remove.start(), remove.end()))
            }
            Kind::Tokens {
                tokens: pattern,
                match_index,
            } => {
                let mut start = 0usize;
                let mut matched = tokens.len();
                if !search_tokens(
                    pattern,
                    *match_index,
                    tokens,
                    0,
                    0,
                    0,
                    &mut start,
                    &mut matched,
                ) {
                    return None;
                }
                let value = tokens.get(matched)?;
                let mut end = start + value.len();
                if matched + 1 < tokens.len() {
                    end += 1;
                } else {
                    start = start.saturating_sub(1);
                }
                Some((value.to_string(), start, end))
            }
        }
    }
}

/// Envoy's `TagExtractorTokensImpl::searchTags`.
#[allow(clippy::too_many_arguments)]
fn search_tokens(
    pattern: &[&str],
    match_index: usize,
    input: &[&str],
    mut ii: usize,
    mut pi: usize,
    mut ci: usize,
    start: &mut usize,
    matched: &mut usize,
) -> bool {
    while ii < input.len() && pi < pattern.len() {
        if pi == match_index {
            *start = ci;
            *matched = ii;
        } else {
            let expected = pattern[pi];
            if expected == "**" {
                if pi == pattern.len() - 1 {
                    return true;
                }
                pi += 1;
                while ii < input.len() {
                    if search_tokens(pattern, match_index, input, ii, pi, ci, start, matched) {
                        return true;
                    }
                    ci += input[ii].len() + 1;
                    ii += 1;
                }
                return false;
            }
            if expected != "*" && expected != input[ii] {
                return false;
            }
            ci += input[ii].len() + 1;
        }
        ii += 1;
        pi += 1;
    }
    pi == pattern.len() && ii == input.len()
}

/// The default tag producer.
pub struct TagExtractor {
    extractors: Vec<Extractor>,
    /// Indices of extractors without a prefix token.
    no_prefix: Vec<usize>,
    /// `(prefix token, extractor indices)`.
    by_prefix: Vec<(&'static str, Vec<usize>)>,
}

impl TagExtractor {
    fn build() -> TagExtractor {
        let mut extractors = Vec::new();
        let mut prefixes: Vec<Option<&'static str>> = Vec::new();
        for (name, re, substr, negative) in REGEX_DESCRIPTORS {
            let Ok(compiled) = Regex::new(&expand(re)) else {
                // All built-in patterns compile; a failure here would be a bug in the table.
                debug_assert!(false, "bad built-in tag regex for {name}");
                continue;
            };
            prefixes.push(regex_prefix(re));
            extractors.push(Extractor {
                name,
                kind: Kind::Regex {
                    re: compiled,
                    substr,
                    negative,
                },
                shares_name: false,
            });
        }
        for (name, pattern) in TOKEN_DESCRIPTORS {
            let tokens: Vec<&'static str> = pattern.split('.').collect();
            let match_index = tokens.iter().position(|t| *t == "$").unwrap_or(0);
            let first = tokens.first().copied().unwrap_or("");
            prefixes.push((first != "$" && first != "*" && first != "**").then_some(first));
            extractors.push(Extractor {
                name,
                kind: Kind::Tokens {
                    tokens,
                    match_index,
                },
                shares_name: false,
            });
        }
        for i in 0..extractors.len() {
            let shared = extractors
                .iter()
                .filter(|e| e.name == extractors[i].name)
                .count()
                > 1;
            extractors[i].shares_name = shared;
        }
        let mut no_prefix = Vec::new();
        let mut by_prefix: Vec<(&'static str, Vec<usize>)> = Vec::new();
        for (i, p) in prefixes.iter().enumerate() {
            match p {
                None => no_prefix.push(i),
                Some(p) => match by_prefix.iter_mut().find(|(k, _)| k == p) {
                    Some((_, v)) => v.push(i),
                    None => by_prefix.push((p, vec![i])),
                },
            }
        }
        TagExtractor {
            extractors,
            no_prefix,
            by_prefix,
        }
    }

    /// The process-wide default extractor set.
    pub fn default_set() -> &'static TagExtractor {
        static DEFAULT: OnceLock<TagExtractor> = OnceLock::new();
        DEFAULT.get_or_init(TagExtractor::build)
    }

    /// Runs the extractors over `name`.
    pub fn extract(&self, name: &str) -> ExtractedName {
        let tokens: Vec<&str> = name.split('.').collect();
        let first = name.find('.').map(|dot| &name[..dot]);
        let prefixed: &[usize] = first
            .and_then(|f| self.by_prefix.iter().find(|(k, _)| *k == f))
            .map_or(&[], |(_, v)| v.as_slice());
        let mut tags: Vec<Tag> = Vec::new();
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        for &i in self.no_prefix.iter().chain(prefixed.iter()) {
            let ex = &self.extractors[i];
            if ex.shares_name && tags.iter().any(|(n, _)| n == ex.name) {
                continue;
            }
            if let Some((value, s, e)) = ex.extract(name, &tokens) {
                tags.push((ex.name.to_string(), value));
                ranges.push((s, e));
            }
        }
        ExtractedName {
            tag_extracted_name: remove_ranges(name, ranges),
            tags,
        }
    }
}

/// Removes the union of the half-open byte ranges from `name`.
fn remove_ranges(name: &str, mut ranges: Vec<(usize, usize)>) -> String {
    if ranges.is_empty() {
        return name.to_string();
    }
    ranges.sort_unstable();
    let bytes = name.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut pos = 0usize;
    for (s, e) in ranges {
        let s = s.min(bytes.len());
        let e = e.min(bytes.len());
        if s > pos {
            out.extend_from_slice(&bytes[pos..s]);
        }
        pos = pos.max(e);
    }
    if pos < bytes.len() {
        out.extend_from_slice(&bytes[pos..]);
    }
    // Ranges start/end on ASCII '.' or regex match boundaries, so this is valid UTF-8;
    // fall back to a lossy conversion rather than panicking.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Runs Envoy's default tag extractors over a stat name.
pub fn extract_tags(name: &str) -> ExtractedName {
    TagExtractor::default_set().extract(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, extracted: &str, tags: &[(&str, &str)]) {
        let r = extract_tags(name);
        assert_eq!(r.tag_extracted_name, extracted, "name {name}");
        let want: Vec<Tag> = tags
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(r.tags, want, "name {name}");
    }

    #[test]
    fn all_builtin_regexes_compile() {
        let t = TagExtractor::default_set();
        assert_eq!(
            t.extractors.len(),
            REGEX_DESCRIPTORS.len() + TOKEN_DESCRIPTORS.len()
        );
    }

    #[test]
    fn regex_prefixes() {
        assert_eq!(regex_prefix(r"^cluster\.<TAG_VALUE>"), Some("cluster"));
        assert_eq!(regex_prefix(r"^listener\..*?"), Some("listener"));
        assert_eq!(regex_prefix(r"_rq(_(\d{3}))$"), None);
        assert_eq!(regex_prefix(r"^(?:listener|cluster)"), None);
        assert_eq!(regex_prefix(r"^sds\.((x)\.).+"), Some("sds"));
    }

    #[test]
    fn cluster_stats() {
        check(
            "cluster.backend.upstream_rq_total",
            "cluster.upstream_rq_total",
            &[("envoy.cluster_name", "backend")],
        );
        check(
            "cluster.backend.upstream_rq_200",
            "cluster.upstream_rq",
            &[
                ("envoy.response_code", "200"),
                ("envoy.cluster_name", "backend"),
            ],
        );
        check(
            "cluster.backend.upstream_rq_5xx",
            "cluster.upstream_rq_xx",
            &[
                ("envoy.response_code_class", "5"),
                ("envoy.cluster_name", "backend"),
            ],
        );
        // A dotted cluster name: only the first token is the tag value (as in Envoy).
        check(
            "cluster.a.b.upstream_rq_200",
            "cluster.b.upstream_rq",
            &[("envoy.response_code", "200"), ("envoy.cluster_name", "a")],
        );
        check(
            "cluster.foo.grpc.svc.Method.success",
            "cluster.grpc.success",
            &[
                ("envoy.grpc_bridge_method", "Method"),
                ("envoy.grpc_bridge_service", "svc"),
                ("envoy.cluster_name", "foo"),
            ],
        );
        // A single-token cluster stat has nothing after the name: no tag.
        check("cluster.backend", "cluster.backend", &[]);
    }

    #[test]
    fn http_and_listener_stats() {
        check(
            "http.ingress_http.downstream_rq_2xx",
            "http.downstream_rq_xx",
            &[
                ("envoy.response_code_class", "2"),
                ("envoy.http_conn_manager_prefix", "ingress_http"),
            ],
        );
        check(
            "http.ingress_http.downstream_cx_total",
            "http.downstream_cx_total",
            &[("envoy.http_conn_manager_prefix", "ingress_http")],
        );
        check(
            "listener.0.0.0.0_10000.downstream_cx_total",
            "listener.downstream_cx_total",
            &[("envoy.listener_address", "0.0.0.0_10000")],
        );
        check(
            "listener.[__1]_10000.downstream_cx_total",
            "listener.downstream_cx_total",
            &[("envoy.listener_address", "[__1]_10000")],
        );
        check(
            "listener.0.0.0.0_10000.http.ingress_http.downstream_rq_2xx",
            "listener.http.downstream_rq_xx",
            &[
                ("envoy.response_code_class", "2"),
                ("envoy.http_conn_manager_prefix", "ingress_http"),
                ("envoy.listener_address", "0.0.0.0_10000"),
            ],
        );
        check(
            "listener.0.0.0.0_10000.worker_1.downstream_cx_active",
            "listener.worker_downstream_cx_active",
            &[
                ("envoy.worker_id", "1"),
                ("envoy.listener_address", "0.0.0.0_10000"),
            ],
        );
        // "admin" is excluded as a listener address.
        check(
            "listener.admin.downstream_cx_total",
            "listener.admin.downstream_cx_total",
            &[],
        );
        check(
            "listener_manager.worker_0.dispatcher.loop_duration_us",
            "listener_manager.worker_dispatcher.loop_duration_us",
            &[("envoy.worker_id", "0")],
        );
        check(
            "server.worker_3.watchdog_miss",
            "server.worker_watchdog_miss",
            &[("envoy.worker_id", "3")],
        );
        check(
            "http.admin.downstream_rq_200",
            "http.downstream_rq",
            &[
                ("envoy.response_code", "200"),
                ("envoy.http_conn_manager_prefix", "admin"),
            ],
        );
        check(
            "vhost.vh1.vcluster.other.upstream_rq_total",
            "vhost.vcluster.upstream_rq_total",
            &[
                ("envoy.virtual_cluster", "other"),
                ("envoy.virtual_host", "vh1"),
            ],
        );
        check(
            "tcp.ingress_tcp.downstream_cx_total",
            "tcp.downstream_cx_total",
            &[("envoy.tcp_prefix", "ingress_tcp")],
        );
        check(
            "http.ingress_http.rds.local_route.config_reload",
            "http.rds.config_reload",
            &[
                ("envoy.rds_route_config", "local_route"),
                ("envoy.http_conn_manager_prefix", "ingress_http"),
            ],
        );
    }

    #[test]
    fn untagged_stats() {
        check("server.uptime", "server.uptime", &[]);
        check("runtime.load_success", "runtime.load_success", &[]);
        check("nodots", "nodots", &[]);
        check("", "", &[]);
    }

    #[test]
    fn token_matching() {
        let p: Vec<&str> = "mongo.*.collection.$.**.query.*".split('.').collect();
        let input: Vec<&str> = "mongo.p.collection.c.x.y.query.total".split('.').collect();
        let (mut s, mut m) = (0, 0);
        assert!(search_tokens(&p, 3, &input, 0, 0, 0, &mut s, &mut m));
        assert_eq!(input[m], "c");
        let input: Vec<&str> = "mongo.p.collection.c.query.total".split('.').collect();
        assert!(search_tokens(&p, 3, &input, 0, 0, 0, &mut s, &mut m));
        let p: Vec<&str> = "cluster.$.**".split('.').collect();
        let input: Vec<&str> = "cluster.x".split('.').collect();
        assert!(!search_tokens(&p, 1, &input, 0, 0, 0, &mut s, &mut m));
    }
}
