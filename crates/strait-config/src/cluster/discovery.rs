//! Service discovery configuration: the cluster `type` and what it needs (DNS settings,
//! original-destination options).
//!
//! DNS clusters keep their endpoints' names here ([`DnsSpec::targets`], one per entry of
//! `ClusterSpec::endpoints`, in the same order); the endpoints themselves carry a
//! placeholder address (`0.0.0.0:<port>`) and give the resolved hosts their weight,
//! priority and locality.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use envoy_api::pb::envoy::config::cluster::v3 as cl;
use envoy_api::pb::envoy::config::core::v3 as core;
use envoy_api::pb::envoy::extensions::network::dns_resolver::cares::v3 as cares;

use crate::compile::common::{duration, socket_address, type_name, unpack};
use crate::error::{ConfigErrors, FieldPath};

/// The c-ares resolver extension: the only `typed_dns_resolver_config` Strait reads.
pub const CARES_RESOLVER_TYPE: &str =
    "envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig";

/// How a cluster finds its hosts.
#[derive(Debug, Clone, PartialEq)]
pub enum DiscoverySpec {
    Static,
    /// Every address of every endpoint's name is a host.
    StrictDns(DnsSpec),
    /// One host whose address is the first one the (single) endpoint's name resolves to.
    LogicalDns(DnsSpec),
    /// Hosts are the requests' original destinations, created on demand.
    OriginalDst(OriginalDstSpec),
}

impl DiscoverySpec {
    /// The DNS settings of a STRICT_DNS or LOGICAL_DNS cluster.
    pub fn dns(&self) -> Option<&DnsSpec> {
        match self {
            DiscoverySpec::StrictDns(d) | DiscoverySpec::LogicalDns(d) => Some(d),
            _ => None,
        }
    }

    fn dns_mut(&mut self) -> Option<&mut DnsSpec> {
        match self {
            DiscoverySpec::StrictDns(d) | DiscoverySpec::LogicalDns(d) => Some(d),
            _ => None,
        }
    }

    /// Whether the endpoints of the config are the hosts (STATIC only).
    pub fn hosts_from_config(&self) -> bool {
        matches!(self, DiscoverySpec::Static)
    }
}

/// `dns_lookup_family`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsLookupFamily {
    /// IPv6 if the name has AAAA records, IPv4 otherwise (Envoy's default).
    Auto,
    V4Only,
    V6Only,
    /// IPv4 if the name has A records, IPv6 otherwise.
    V4Preferred,
    /// Both families.
    All,
}

/// One name to resolve: an endpoint's `socket_address`.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsTarget {
    pub name: String,
    pub port: u16,
}

/// What a DNS cluster resolves, how often, and with which servers.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsSpec {
    /// One per endpoint, in `ClusterSpec::endpoints` order.
    pub targets: Vec<DnsTarget>,
    /// `dns_refresh_rate` (5 s by default).
    pub refresh_rate: Duration,
    /// `dns_failure_refresh_rate` (`base_interval`, `max_interval`): back-off after a
    /// failed resolution; without it a failure waits `refresh_rate`.
    pub failure_refresh: Option<(Duration, Duration)>,
    /// `respect_dns_ttl`: wait the answer's TTL instead of `refresh_rate`.
    pub respect_dns_ttl: bool,
    /// `dns_jitter`: a random extra wait up to this, added to each refresh.
    pub jitter: Option<Duration>,
    pub lookup_family: DnsLookupFamily,
    /// Name servers from `typed_dns_resolver_config` (c-ares `resolvers`), `dns_resolvers`
    /// or `dns_resolution_config.resolvers`; empty means the system's (`/etc/resolv.conf`).
    pub resolvers: Vec<SocketAddr>,
    pub use_tcp: bool,
    /// `no_default_search_domain`: do not apply resolv.conf's search domains.
    pub no_default_search_domain: bool,
    /// c-ares `query_timeout_seconds`: how long one try waits for an answer.
    pub query_timeout: Option<Duration>,
    /// c-ares `query_tries`: tries per server before the lookup fails.
    pub query_tries: Option<u32>,
}

/// `ORIGINAL_DST` options (`original_dst_lb_config`, `cleanup_interval`).
#[derive(Debug, Clone, PartialEq)]
pub struct OriginalDstSpec {
    /// Take the destination from a request header instead of the connection.
    pub use_http_header: bool,
    /// The header (lower case); `x-envoy-original-dst-host` unless `http_header_name`.
    pub header_name: String,
    /// `upstream_port_override`: connect to this port whatever the destination's.
    pub port_override: Option<u16>,
    /// Hosts unused for this long are removed (5 s by default).
    pub cleanup_interval: Duration,
}

/// Fields of discovery messages Strait implements (chained into the supported table).
pub const SUPPORTED: &[(&str, &[&str])] = &[
    (
        "envoy.config.cluster.v3.Cluster",
        &[
            "dns_refresh_rate",
            "dns_failure_refresh_rate",
            "respect_dns_ttl",
            "dns_jitter",
            "dns_lookup_family",
            "dns_resolvers",
            "use_tcp_for_dns_lookups",
            "dns_resolution_config",
            "typed_dns_resolver_config",
            "original_dst_lb_config",
            "cleanup_interval",
        ],
    ),
    (
        "envoy.config.cluster.v3.Cluster.RefreshRate",
        &["base_interval", "max_interval"],
    ),
    (
        "envoy.config.cluster.v3.Cluster.OriginalDstLbConfig",
        &[
            "use_http_header",
            "http_header_name",
            "upstream_port_override",
        ],
    ),
    (
        "envoy.config.core.v3.TypedExtensionConfig",
        &["name", "typed_config"],
    ),
    (
        "envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig",
        &[
            "resolvers",
            "dns_resolver_options",
            "query_timeout_seconds",
            "query_tries",
        ],
    ),
    (
        "envoy.config.core.v3.DnsResolutionConfig",
        &["resolvers", "dns_resolver_options"],
    ),
    (
        "envoy.config.core.v3.DnsResolverOptions",
        &["use_tcp_for_dns_lookups", "no_default_search_domain"],
    ),
];

pub(crate) fn compile(
    c: &cl::Cluster,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<DiscoverySpec> {
    use cl::cluster::DiscoveryType as T;
    let t = match &c.cluster_discovery_type {
        None => T::Static,
        Some(cl::cluster::ClusterDiscoveryType::Type(t)) => T::try_from(*t).unwrap_or(T::Static),
        Some(_) => {
            errs.push(
                path.field("cluster_type").to_string(),
                "is not supported by Strait yet",
            );
            return None;
        }
    };
    let cluster_provided = c.lb_policy == cl::cluster::LbPolicy::ClusterProvided as i32;
    if cluster_provided && t != T::OriginalDst {
        errs.push(
            path.field("lb_policy").to_string(),
            format!(
                "cluster provided LB specified but cluster '{}' did not provide one",
                c.name
            ),
        );
        return None;
    }
    match t {
        T::Static => Some(DiscoverySpec::Static),
        T::StrictDns => Some(DiscoverySpec::StrictDns(dns(c, path, errs)?)),
        T::LogicalDns => Some(DiscoverySpec::LogicalDns(dns(c, path, errs)?)),
        T::OriginalDst => original_dst(c, path, errs).map(DiscoverySpec::OriginalDst),
        T::Eds => {
            errs.push(
                path.field("type").to_string(),
                "cluster type EDS is not supported by Strait yet (it needs xDS)",
            );
            None
        }
    }
}

fn original_dst(
    c: &cl::Cluster,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<OriginalDstSpec> {
    if c.lb_policy != cl::cluster::LbPolicy::ClusterProvided as i32 {
        let name = cl::cluster::LbPolicy::try_from(c.lb_policy)
            .map(|d| d.as_str_name())
            .unwrap_or("?");
        errs.push(
            path.field("lb_policy").to_string(),
            format!(
                "LB policy {name} is not valid for Cluster type ORIGINAL_DST. Only \
                 'CLUSTER_PROVIDED' is allowed with cluster type 'ORIGINAL_DST'"
            ),
        );
        return None;
    }
    if c.load_assignment.is_some() {
        errs.push(
            path.field("load_assignment").to_string(),
            "ORIGINAL_DST clusters must have no load assignment configured",
        );
        return None;
    }
    let o = match &c.lb_config {
        Some(cl::cluster::LbConfig::OriginalDstLbConfig(o)) => o.clone(),
        _ => Default::default(),
    };
    let op = path.field("original_dst_lb_config");
    let port_override = match o.upstream_port_override.map(|v| v.value) {
        Some(p) => match u16::try_from(p) {
            Ok(p) => Some(p),
            Err(_) => {
                errs.push(
                    op.field("upstream_port_override").to_string(),
                    format!("port {p} is above 65535"),
                );
                return None;
            }
        },
        None => None,
    };
    let header_name = if o.http_header_name.is_empty() {
        "x-envoy-original-dst-host".to_string()
    } else {
        o.http_header_name.to_ascii_lowercase()
    };
    if http::HeaderName::from_bytes(header_name.as_bytes()).is_err() {
        errs.push(
            op.field("http_header_name").to_string(),
            format!("{header_name:?} is not a valid header name"),
        );
        return None;
    }
    let cleanup_interval = match &c.cleanup_interval {
        Some(d) => duration(d, &path.field("cleanup_interval"), errs)?,
        None => Duration::from_secs(5),
    };
    Some(OriginalDstSpec {
        use_http_header: o.use_http_header,
        header_name,
        port_override,
        cleanup_interval,
    })
}

// The DNS fields of `Cluster` are deprecated in favour of the DNS cluster extension, and
// still honoured by Envoy.
#[allow(deprecated)]
fn dns(c: &cl::Cluster, path: &FieldPath, errs: &mut ConfigErrors) -> Option<DnsSpec> {
    let refresh_rate = match &c.dns_refresh_rate {
        Some(d) => duration(d, &path.field("dns_refresh_rate"), errs)?,
        None => Duration::from_secs(5),
    };
    let failure_refresh = match &c.dns_failure_refresh_rate {
        Some(r) => {
            let rp = path.field("dns_failure_refresh_rate");
            let base = r
                .base_interval
                .as_ref()
                .and_then(|d| duration(d, &rp.field("base_interval"), errs))?;
            let max = match &r.max_interval {
                Some(d) => duration(d, &rp.field("max_interval"), errs)?,
                None => base * 10,
            };
            if max < base {
                errs.push(
                    rp.field("max_interval").to_string(),
                    "dns_failure_refresh_rate must have max_interval greater than or equal to \
                     the base_interval",
                );
                return None;
            }
            Some((base, max))
        }
        None => None,
    };
    use cl::cluster::DnsLookupFamily as F;
    let lookup_family = match F::try_from(c.dns_lookup_family).unwrap_or(F::Auto) {
        F::Auto => DnsLookupFamily::Auto,
        F::V4Only => DnsLookupFamily::V4Only,
        F::V6Only => DnsLookupFamily::V6Only,
        F::V4Preferred => DnsLookupFamily::V4Preferred,
        F::All => DnsLookupFamily::All,
    };
    let spec = DnsSpec {
        targets: Vec::new(),
        refresh_rate,
        failure_refresh,
        respect_dns_ttl: c.respect_dns_ttl,
        jitter: match &c.dns_jitter {
            Some(d) => duration(d, &path.field("dns_jitter"), errs).filter(|d| !d.is_zero()),
            None => None,
        },
        lookup_family,
        resolvers: Vec::new(),
        use_tcp: c.use_tcp_for_dns_lookups,
        no_default_search_domain: false,
        query_timeout: None,
        query_tries: None,
    };
    // Envoy's precedence: typed_dns_resolver_config, then dns_resolution_config, then the
    // deprecated dns_resolvers / use_tcp_for_dns_lookups.
    let mut spec = spec;
    let (addresses, options, apath) = if let Some(t) = &c.typed_dns_resolver_config {
        let tp = path
            .field("typed_dns_resolver_config")
            .field("typed_config");
        let Some(any) = &t.typed_config else {
            errs.push(tp.to_string(), "is required");
            return None;
        };
        if type_name(any) != CARES_RESOLVER_TYPE {
            errs.push(
                tp.to_string(),
                format!(
                    "DNS resolver {} is not supported by Strait yet",
                    type_name(any)
                ),
            );
            return None;
        }
        let cfg: cares::CaresDnsResolverConfig = unpack(any, &tp, errs)?;
        spec.query_timeout = cfg
            .query_timeout_seconds
            .map(|v| Duration::from_secs(v.value))
            .filter(|d| !d.is_zero());
        spec.query_tries = cfg.query_tries.map(|v| v.value).filter(|t| *t > 0);
        (
            cfg.resolvers,
            cfg.dns_resolver_options,
            tp.field("resolvers"),
        )
    } else if let Some(r) = &c.dns_resolution_config {
        (
            r.resolvers.clone(),
            r.dns_resolver_options,
            path.field("dns_resolution_config").field("resolvers"),
        )
    } else {
        (c.dns_resolvers.clone(), None, path.field("dns_resolvers"))
    };
    finish_resolvers(spec, &addresses, options, &apath, errs)
}

fn finish_resolvers(
    mut spec: DnsSpec,
    addresses: &[core::Address],
    options: Option<core::DnsResolverOptions>,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<DnsSpec> {
    for (i, a) in addresses.iter().enumerate() {
        let mut addr = socket_address(Some(a), &path.index(i), errs)?;
        if addr.port() == 0 {
            addr.set_port(53);
        }
        spec.resolvers.push(addr);
    }
    if let Some(o) = options {
        spec.use_tcp |= o.use_tcp_for_dns_lookups;
        spec.no_default_search_domain = o.no_default_search_domain;
    }
    Some(spec)
}

/// An endpoint address of a DNS cluster: records its name and port in `discovery` and
/// returns the placeholder address the endpoint keeps (`None` for other cluster types or a
/// bad address, with the error pushed).
pub(crate) fn dns_endpoint(
    discovery: &mut DiscoverySpec,
    a: Option<&core::Address>,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<SocketAddr> {
    use core::address::Address as A;
    let dns = discovery.dns_mut()?;
    let Some(A::SocketAddress(sa)) = a.and_then(|a| a.address.as_ref()) else {
        // Pipes and internal addresses: let the common parser name the problem.
        return socket_address(a, path, errs);
    };
    let sp = path.field("socket_address");
    if sa.protocol != core::socket_address::Protocol::Tcp as i32 {
        errs.push(
            sp.field("protocol").to_string(),
            "only TCP is supported by Strait yet",
        );
        return None;
    }
    let port = match &sa.port_specifier {
        Some(core::socket_address::PortSpecifier::PortValue(p)) => *p,
        _ => {
            errs.push(
                sp.field("port_value").to_string(),
                "DNS clusters need a port_value",
            );
            return None;
        }
    };
    let Ok(port) = u16::try_from(port) else {
        errs.push(
            sp.field("port_value").to_string(),
            format!("port {port} is above 65535"),
        );
        return None;
    };
    if sa.address.is_empty() {
        errs.push(sp.field("address").to_string(), "is required");
        return None;
    }
    dns.targets.push(DnsTarget {
        name: sa.address.clone(),
        port,
    });
    Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
}

/// Checks what only holds for the whole endpoint list (a LOGICAL_DNS cluster has exactly
/// one endpoint).
pub(crate) fn check_endpoints(
    discovery: &DiscoverySpec,
    c: &cl::Cluster,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) {
    if let DiscoverySpec::LogicalDns(_) = discovery {
        let groups = c
            .load_assignment
            .as_ref()
            .map_or(0, |la| la.endpoints.len());
        let first = c
            .load_assignment
            .as_ref()
            .and_then(|la| la.endpoints.first())
            .map_or(0, |l| l.lb_endpoints.len());
        if groups == 0 {
            errs.push(
                path.field("load_assignment").to_string(),
                "LOGICAL_DNS clusters must have a single host",
            );
        } else if groups != 1 || first != 1 {
            errs.push(
                path.field("load_assignment").to_string(),
                "LOGICAL_DNS clusters must have a single locality_lb_endpoint and a single \
                 lb_endpoint",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(cluster: &str) -> Result<crate::model::Config, ConfigErrors> {
        let yaml = format!("static_resources:\n  clusters:\n{cluster}");
        let src = crate::Source {
            path: None,
            yaml: Some(&yaml),
        };
        crate::load_bootstrap(&src, &crate::CompileOptions::default())
    }

    fn error_of(cluster: &str) -> String {
        match load(cluster) {
            Ok(_) => panic!("accepted: {cluster}"),
            Err(e) => format!("{e:?}"),
        }
    }

    const EP: &str = "{lb_endpoints: [{endpoint: {address: {socket_address: {address: backend.test, port_value: 8080}}}}]}";

    #[test]
    fn strict_dns_keeps_names_and_settings() {
        let cfg = load(&format!(
            "  - name: d\n    type: STRICT_DNS\n    connect_timeout: 1s\n    dns_refresh_rate: 2s\n    respect_dns_ttl: true\n    dns_lookup_family: V4_ONLY\n    dns_failure_refresh_rate: {{base_interval: 1s, max_interval: 4s}}\n    typed_dns_resolver_config:\n      name: envoy.network.dns_resolver.cares\n      typed_config:\n        \"@type\": type.googleapis.com/{CARES_RESOLVER_TYPE}\n        resolvers: [{{socket_address: {{address: 127.0.0.1, port_value: 5353}}}}]\n        query_tries: 1\n    load_assignment:\n      cluster_name: d\n      endpoints: [{EP}]\n"
        ))
        .expect("valid");
        let c = &cfg.clusters[0];
        let DiscoverySpec::StrictDns(d) = &c.discovery else {
            panic!("{:?}", c.discovery)
        };
        assert_eq!(
            d.targets,
            vec![DnsTarget {
                name: "backend.test".into(),
                port: 8080
            }]
        );
        assert_eq!(d.refresh_rate, Duration::from_secs(2));
        assert!(d.respect_dns_ttl);
        assert_eq!(d.lookup_family, DnsLookupFamily::V4Only);
        assert_eq!(
            d.failure_refresh,
            Some((Duration::from_secs(1), Duration::from_secs(4)))
        );
        assert_eq!(d.resolvers, vec!["127.0.0.1:5353".parse().expect("addr")]);
        assert_eq!(d.query_tries, Some(1));
        assert_eq!(c.endpoints.len(), 1);
        assert_eq!(c.endpoints[0].address.port(), 8080);
    }

    #[test]
    fn static_clusters_still_need_ips() {
        let e = error_of(&format!(
            "  - name: s\n    connect_timeout: 1s\n    load_assignment:\n      cluster_name: s\n      endpoints: [{EP}]\n"
        ));
        assert!(e.contains("not an IP address"), "{e}");
    }

    #[test]
    fn envoy_rules_for_logical_dns_and_original_dst() {
        let two = "{lb_endpoints: [{endpoint: {address: {socket_address: {address: a.test, port_value: 1}}}}, {endpoint: {address: {socket_address: {address: b.test, port_value: 1}}}}]}";
        let e = error_of(&format!(
            "  - name: l\n    type: LOGICAL_DNS\n    connect_timeout: 1s\n    load_assignment:\n      cluster_name: l\n      endpoints: [{two}]\n"
        ));
        assert!(
            e.contains("single locality_lb_endpoint and a single lb_endpoint"),
            "{e}"
        );
        let e = error_of("  - name: o\n    type: ORIGINAL_DST\n    connect_timeout: 1s\n");
        assert!(e.contains("Only 'CLUSTER_PROVIDED' is allowed"), "{e}");
        let e = error_of(&format!(
            "  - name: o\n    type: ORIGINAL_DST\n    lb_policy: CLUSTER_PROVIDED\n    connect_timeout: 1s\n    load_assignment:\n      cluster_name: o\n      endpoints: [{EP}]\n"
        ));
        assert!(e.contains("must have no load assignment"), "{e}");
        let e = error_of("  - name: s\n    lb_policy: CLUSTER_PROVIDED\n    connect_timeout: 1s\n");
        assert!(e.contains("did not provide one"), "{e}");
        let e = error_of(
            "  - name: e\n    type: EDS\n    connect_timeout: 1s\n    eds_cluster_config: {}\n",
        );
        assert!(e.contains("EDS"), "{e}");
        let cfg = load(
            "  - name: o\n    type: ORIGINAL_DST\n    lb_policy: CLUSTER_PROVIDED\n    connect_timeout: 1s\n    cleanup_interval: 1s\n    original_dst_lb_config: {use_http_header: true, http_header_name: X-Dst}\n",
        )
        .expect("valid");
        assert_eq!(
            cfg.clusters[0].discovery,
            DiscoverySpec::OriginalDst(OriginalDstSpec {
                use_http_header: true,
                header_name: "x-dst".into(),
                port_override: None,
                cleanup_interval: Duration::from_secs(1),
            })
        );
    }
}
