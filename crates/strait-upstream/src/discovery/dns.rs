//! STRICT_DNS and LOGICAL_DNS: each endpoint name is resolved on its own timer on the
//! control runtime (one task per name, so a slow name delays nothing else), then the
//! cluster's host set is rebuilt from every name's latest answer.
//!
//! As in Envoy 1.40 (c-ares): answers are not cached between refreshes; an answer with no
//! address (NXDOMAIN or no records) is a successful update that empties a STRICT_DNS
//! name's hosts; a failed lookup (timeout, server error) keeps the hosts and counts
//! `update_failure`. Hosts whose address stays keep their `Arc<Host>` (stats, health).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use strait_config::model::{DiscoverySpec, DnsLookupFamily, DnsSpec, EndpointSpec};
use strait_stats::{Counter, Gauge, Store};

use crate::Cluster;
use crate::host::Host;

/// The resolver's stats, shared by every cluster (Envoy's `dns.cares.*`).
#[derive(Debug, Clone)]
struct ResolverStats {
    resolve_total: Counter,
    pending_resolutions: Gauge,
    not_found: Counter,
    timeouts: Counter,
    get_addr_failure: Counter,
}

impl ResolverStats {
    fn new(store: &Store) -> Self {
        // `reinits` exists in Envoy too; Strait never re-creates a resolver.
        store.counter("dns.cares.reinits");
        ResolverStats {
            resolve_total: store.counter("dns.cares.resolve_total"),
            pending_resolutions: store.gauge("dns.cares.pending_resolutions"),
            not_found: store.counter("dns.cares.not_found"),
            timeouts: store.counter("dns.cares.timeouts"),
            get_addr_failure: store.counter("dns.cares.get_addr_failure"),
        }
    }
}

/// A resolver for the cluster's settings: its `resolvers` when set, otherwise the system's
/// (`/etc/resolv.conf`); `/etc/hosts` is read either way, as c-ares does.
pub fn build_resolver(spec: &DnsSpec) -> Result<TokioResolver, String> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = if spec.resolvers.is_empty() {
        TokioResolver::builder(provider).map_err(|e| format!("reading /etc/resolv.conf: {e}"))?
    } else {
        let servers = spec
            .resolvers
            .iter()
            .map(|a| {
                let mut conns = Vec::new();
                if !spec.use_tcp {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = a.port();
                    conns.push(udp);
                }
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = a.port();
                conns.push(tcp);
                NameServerConfig::new(a.ip(), true, conns)
            })
            .collect();
        TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
    };
    let o = builder.options_mut();
    if let Some(t) = spec.query_timeout {
        o.timeout = t;
    }
    if let Some(n) = spec.query_tries {
        o.attempts = n as usize;
    }
    // Each refresh asks the servers again, as Envoy does (no answer cache).
    o.cache_size = 0;
    o.use_hosts_file = ResolveHosts::Always;
    o.ip_strategy = match spec.lookup_family {
        DnsLookupFamily::Auto => LookupIpStrategy::Ipv6thenIpv4,
        DnsLookupFamily::V4Only => LookupIpStrategy::Ipv4Only,
        DnsLookupFamily::V6Only => LookupIpStrategy::Ipv6Only,
        DnsLookupFamily::V4Preferred => LookupIpStrategy::Ipv4thenIpv6,
        DnsLookupFamily::All => LookupIpStrategy::Ipv4AndIpv6,
    };
    builder.build().map_err(|e| e.to_string())
}

/// The outcome of one resolution.
#[derive(Debug, PartialEq)]
pub enum Resolution {
    /// Addresses (possibly none) and the smallest TTL among them.
    Done(Vec<IpAddr>, Option<Duration>),
    Failed,
}

/// The hosts of each name of one cluster, in endpoint order.
struct Targets {
    lists: Mutex<Vec<Vec<Arc<Host>>>>,
}

/// Starts one resolution task per endpoint name of a DNS cluster.
pub fn start(cluster: &Arc<Cluster>) {
    let Some(spec) = cluster.spec.discovery.dns() else {
        return;
    };
    let store = cluster.discovery.store.clone();
    let rstats = ResolverStats::new(&store);
    let resolver = match build_resolver(spec) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            tracing::error!(cluster = %cluster.name, "DNS resolver: {e}");
            cluster.discovery.init.complete(true);
            return;
        }
    };
    let targets = Arc::new(Targets {
        lists: Mutex::new(vec![Vec::new(); spec.targets.len()]),
    });
    for i in 0..spec.targets.len() {
        tokio::spawn(resolve_loop(
            Arc::downgrade(cluster),
            i,
            resolver.clone(),
            targets.clone(),
            rstats.clone(),
        ));
    }
}

async fn resolve(resolver: &TokioResolver, name: &str, stats: &ResolverStats) -> Resolution {
    stats.resolve_total.inc();
    stats.pending_resolutions.inc();
    let r = resolver.lookup_ip(name).await;
    stats.pending_resolutions.dec();
    match r {
        Ok(lookup) => {
            let ttl = lookup
                .as_lookup()
                .answers()
                .iter()
                .filter(|r| r.data.ip_addr().is_some())
                .map(|r| r.ttl)
                .min()
                .map(|s| Duration::from_secs(u64::from(s)));
            let mut ips: Vec<IpAddr> = Vec::new();
            for ip in lookup.iter() {
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
            Resolution::Done(ips, ttl)
        }
        Err(e) if e.is_no_records_found() || e.is_nx_domain() => {
            stats.not_found.inc();
            Resolution::Done(Vec::new(), None)
        }
        Err(e) => {
            if matches!(e, NetError::Timeout) {
                stats.timeouts.inc();
            } else {
                stats.get_addr_failure.inc();
            }
            tracing::debug!(name, "DNS resolution failed: {e}");
            Resolution::Failed
        }
    }
}

async fn resolve_loop(
    weak: Weak<Cluster>,
    index: usize,
    resolver: Arc<TokioResolver>,
    targets: Arc<Targets>,
    rstats: ResolverStats,
) {
    let mut failures: u32 = 0;
    let mut first = true;
    loop {
        // Holding the cluster only between awaits lets a removed cluster end its task.
        let Some(spec) = weak.upgrade().map(|c| c.spec.clone()) else {
            return;
        };
        let Some(dns) = spec.discovery.dns() else {
            return;
        };
        let (Some(target), Some(endpoint)) = (dns.targets.get(index), spec.endpoints.get(index))
        else {
            return;
        };
        if let Some(c) = weak.upgrade() {
            c.discovery.stats.update_attempt.inc();
        }
        let outcome = resolve(&resolver, &target.name, &rstats).await;
        let Some(cluster) = weak.upgrade() else {
            return;
        };
        let wait = match outcome {
            Resolution::Done(ips, ttl) => {
                failures = 0;
                let addrs: Vec<SocketAddr> = ips
                    .iter()
                    .map(|ip| SocketAddr::new(*ip, target.port))
                    .collect();
                apply(&cluster, &targets, index, endpoint, &target.name, &addrs);
                cluster.discovery.stats.update_success.inc();
                match ttl {
                    Some(t) if dns.respect_dns_ttl && !t.is_zero() => t,
                    _ => dns.refresh_rate,
                }
            }
            Resolution::Failed => {
                cluster.discovery.stats.update_failure.inc();
                failures = failures.saturating_add(1);
                match dns.failure_refresh {
                    Some((base, max)) => backoff(base, max, failures),
                    None => dns.refresh_rate,
                }
            }
        };
        if std::mem::take(&mut first) {
            cluster.discovery.init.complete(false);
        }
        drop(cluster);
        let jitter = dns
            .jitter
            .map(|j| Duration::from_nanos(random_below(j.as_nanos() as u64)))
            .unwrap_or_default();
        tokio::time::sleep(wait + jitter).await;
    }
}

/// Puts one name's new addresses in the cluster. STRICT_DNS: every address is a host;
/// LOGICAL_DNS: the first address is the one host, an empty answer keeps the old one.
fn apply(
    cluster: &Cluster,
    targets: &Targets,
    index: usize,
    endpoint: &EndpointSpec,
    name: &str,
    addrs: &[SocketAddr],
) {
    let logical = matches!(cluster.spec.discovery, DiscoverySpec::LogicalDns(_));
    let addrs = if logical {
        match addrs.first() {
            Some(a) => std::slice::from_ref(a),
            None => {
                cluster.discovery.stats.update_no_rebuild.inc();
                return;
            }
        }
    } else {
        // Envoy sets `max_host_weight` on every STRICT_DNS answer, from that name's hosts
        // only (at least 1): the name resolved last decides. LOGICAL_DNS leaves it at 0.
        let w = if addrs.is_empty() { 1 } else { endpoint.weight };
        cluster.stats.max_host_weight.set(i64::from(w.max(1)));
        addrs
    };
    let mut lists = targets.lists.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(old) = lists.get(index) else {
        return;
    };
    let same =
        old.len() == addrs.len() && addrs.iter().all(|a| old.iter().any(|h| h.address == *a));
    if same {
        cluster.discovery.stats.update_no_rebuild.inc();
        return;
    }
    let mut ep = endpoint.clone();
    if ep.hostname.is_empty() {
        ep.hostname = name.to_string();
    }
    let new: Vec<Arc<Host>> = addrs
        .iter()
        .map(|a| match old.iter().find(|h| h.address == *a) {
            Some(h) => h.clone(),
            None => {
                let h = Arc::new(Host::new(&ep, *a, &cluster.discovery.store));
                // Each new host resolves its transport socket once (LOGICAL_DNS keeps one
                // logical host across address changes in Envoy: counted once).
                if !logical || old.is_empty() {
                    cluster.stats.default_total_match_count.inc();
                }
                // Health-checked clusters: a new host starts failed until its first check.
                crate::health::prepare_new_host(cluster, &h);
                h
            }
        })
        .collect();
    lists[index] = new;
    let all: Vec<Arc<Host>> = lists.iter().flatten().cloned().collect();
    drop(lists);
    cluster.set_hosts(all);
    // A LOGICAL_DNS address change counts too, as in Envoy 1.40.
    cluster.discovery.stats.membership_change.inc();
}

/// Envoy's jittered exponential back-off: a random wait below
/// `min(base * (2^n - 1), max)`.
fn backoff(base: Duration, max: Duration, failures: u32) -> Duration {
    let mult = (1u64 << failures.min(30)) - 1;
    let ceiling = base
        .saturating_mul(u32::try_from(mult).unwrap_or(u32::MAX))
        .min(max);
    Duration::from_nanos(random_below(ceiling.as_nanos() as u64).max(1_000_000))
}

/// A cheap random number below `n` (timing jitter only).
fn random_below(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x9E37_79B9_7F4A_7C15);
    let mut x = seed ^ 0x2545_F491_4F6C_DD1D;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x % n
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_config::model::{ClusterSpec, DnsTarget};
    use strait_testkit::TestDns;

    fn spec(dns: &TestDns, names: &[&str], logical: bool) -> ClusterSpec {
        let mut c =
            ClusterSpec::static_http1("d", &vec!["0.0.0.0:80".parse().expect("addr"); names.len()]);
        let d = DnsSpec {
            targets: names
                .iter()
                .map(|n| DnsTarget {
                    name: n.to_string(),
                    port: 80,
                })
                .collect(),
            refresh_rate: Duration::from_secs(60),
            failure_refresh: None,
            respect_dns_ttl: false,
            jitter: None,
            lookup_family: DnsLookupFamily::All,
            resolvers: vec![dns.addr()],
            use_tcp: false,
            no_default_search_domain: false,
            query_timeout: Some(Duration::from_secs(1)),
            query_tries: Some(1),
        };
        c.discovery = if logical {
            DiscoverySpec::LogicalDns(d)
        } else {
            DiscoverySpec::StrictDns(d)
        };
        c
    }

    #[tokio::test]
    async fn resolution_reports_addresses_and_ttl() {
        let dns = TestDns::start().expect("dns");
        dns.set(
            "a.test",
            &["127.0.0.7".parse().expect("ip"), "::1".parse().expect("ip")],
        );
        dns.set_ttl(42);
        let s = spec(&dns, &["a.test"], false);
        let r = build_resolver(s.discovery.dns().expect("dns")).expect("resolver");
        let stats = ResolverStats::new(&Store::new(1));
        let Resolution::Done(ips, ttl) = resolve(&r, "a.test", &stats).await else {
            panic!("failed")
        };
        assert_eq!(ips.len(), 2, "{ips:?}");
        assert!(ips.contains(&"127.0.0.7".parse().expect("ip")));
        assert_eq!(ttl, Some(Duration::from_secs(42)));
        assert_eq!(
            resolve(&r, "missing.test", &stats).await,
            Resolution::Done(Vec::new(), None),
            "NXDOMAIN is an empty answer"
        );
        assert_eq!(stats.not_found.value(), 1);
    }

    #[tokio::test]
    async fn cluster_initializes_after_every_first_resolution() {
        let dns = TestDns::start().expect("dns");
        dns.set(
            "a.test",
            &[
                "127.0.0.7".parse().expect("ip"),
                "127.0.0.8".parse().expect("ip"),
            ],
        );
        dns.set("b.test", &["127.0.0.9".parse().expect("ip")]);
        let store = Store::new(1);
        let c = Arc::new(Cluster::new(
            Arc::new(spec(&dns, &["a.test", "b.test"], false)),
            &store,
            1,
        ));
        assert!(c.hosts().is_empty(), "nothing before the first answer");
        crate::discovery::start(&c);
        c.initialized().await;
        let mut addrs: Vec<String> = c.hosts().iter().map(|h| h.address.to_string()).collect();
        addrs.sort();
        assert_eq!(addrs, ["127.0.0.7:80", "127.0.0.8:80", "127.0.0.9:80"]);
        assert!(c.hosts().iter().all(|h| h.hostname.ends_with(".test")));

        // LOGICAL_DNS: one host, the first address.
        let l = Arc::new(Cluster::new(
            Arc::new(spec(&dns, &["a.test"], true)),
            &store,
            1,
        ));
        crate::discovery::start(&l);
        l.initialized().await;
        let hosts = l.hosts();
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].address.to_string(), "127.0.0.7:80");
    }

    #[test]
    fn backoff_stays_within_bounds() {
        let (base, max) = (Duration::from_millis(100), Duration::from_millis(1000));
        for n in 1..40 {
            let d = backoff(base, max, n);
            assert!(d <= max, "{n}: {d:?}");
            if n == 1 {
                assert!(d <= base, "first back-off is below the base: {d:?}");
            }
        }
    }
}
