//! Host selection through a whole [`HostSnapshot`]: priorities with EDS health, locality
//! weights, subsets and their fallback policies.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use strait_config::model::*;
use strait_stats::Store;

use super::*;
use crate::host::health_flag;

/// One endpoint: port, priority, locality zone, locality weight, EDS status, `envoy.lb`
/// string fields.
struct Ep<'a> {
    port: u16,
    priority: u32,
    zone: &'a str,
    locality_weight: u32,
    status: EdsHealthStatus,
    lb: &'a [(&'a str, &'a str)],
}

fn ep(port: u16) -> Ep<'static> {
    Ep {
        port,
        priority: 0,
        zone: "",
        locality_weight: 0,
        status: EdsHealthStatus::Unknown,
        lb: &[],
    }
}

fn snapshot(eps: &[Ep<'_>], f: impl FnOnce(&mut ClusterSpec)) -> HostSnapshot {
    let store = Store::new(1);
    let mut spec = ClusterSpec::static_http1("c", &[]);
    f(&mut spec);
    let mut zones: HashMap<String, Arc<LocalitySpec>> = HashMap::new();
    let hosts = eps
        .iter()
        .map(|e| {
            let locality = zones
                .entry(e.zone.to_string())
                .or_insert_with(|| {
                    Arc::new(LocalitySpec {
                        zone: e.zone.to_string(),
                        ..Default::default()
                    })
                })
                .clone();
            let metadata = EndpointMetadata {
                filter_metadata: vec![(
                    "envoy.lb".into(),
                    e.lb.iter()
                        .map(|(k, v)| (k.to_string(), MetadataValue::string(v)))
                        .collect::<Vec<_>>(),
                )],
            };
            let mut md = metadata;
            md.filter_metadata[0].1.sort_by(|a, b| a.0.cmp(&b.0));
            let address: SocketAddr = ([127, 0, 0, 1], e.port).into();
            let spec = EndpointSpec {
                address,
                weight: 1,
                hostname: String::new(),
                priority: e.priority,
                locality,
                locality_weight: e.locality_weight,
                health_status: e.status,
                metadata: Arc::new(md),
            };
            Arc::new(Host::new(&spec, address, &store))
        })
        .collect();
    HostSnapshot::build(hosts, &spec, 1)
}

/// Ports picked by `n` requests.
fn picks(s: &HostSnapshot, n: usize, m: Option<&MetadataMatch>) -> HashMap<u16, usize> {
    let mut out = HashMap::new();
    for _ in 0..n {
        let ctx = LbContext {
            metadata_match: m,
            ..Default::default()
        };
        if let Some(h) = s.choose(&ctx) {
            *out.entry(h.address.port()).or_default() += 1;
        }
    }
    out
}

fn hashed(s: &HostSnapshot, hash: u64) -> u16 {
    let ctx = LbContext {
        hash: Some(hash),
        ..Default::default()
    };
    s.choose(&ctx).map(|h| h.address.port()).unwrap_or(0)
}

fn status(s: EdsHealthStatus, port: u16, priority: u32) -> Ep<'static> {
    Ep {
        status: s,
        priority,
        ..ep(port)
    }
}

#[test]
fn p0_hosts_take_all_traffic_while_healthy() {
    let s = snapshot(
        &[ep(1), ep(2), status(EdsHealthStatus::Healthy, 3, 1)],
        |_| {},
    );
    let p = picks(&s, 100, None);
    assert_eq!(p.get(&3), None);
    assert_eq!(p[&1] + p[&2], 100);
    assert_eq!(
        s.priority_load().map(|l| l.healthy.clone()),
        Some(vec![100, 0])
    );
}

#[test]
fn eds_health_status_moves_traffic_to_p1() {
    use EdsHealthStatus::*;
    // 2 of 5 P0 hosts healthy: 56% stays in P0 (hash 0..=55), 44% to P1.
    let s = snapshot(
        &[
            ep(1),
            ep(2),
            status(Unhealthy, 3, 0),
            status(Timeout, 4, 0),
            status(Unhealthy, 5, 0),
            status(Healthy, 10, 1),
        ],
        |_| {},
    );
    assert_eq!(
        s.priority_load().map(|l| l.healthy.clone()),
        Some(vec![56, 44])
    );
    assert_ne!(hashed(&s, 55), 10);
    assert_eq!(hashed(&s, 56), 10);
    assert_eq!(hashed(&s, 99), 10);
    // Every P0 host unhealthy: all traffic to P1.
    let s = snapshot(&[status(Unhealthy, 1, 0), status(Unknown, 10, 1)], |_| {});
    assert_eq!(picks(&s, 20, None).get(&10), Some(&20));
    assert_eq!((s.healthy, s.excluded), (1, 0));
}

#[test]
fn draining_hosts_are_excluded_and_degraded_hosts_take_leftover_load() {
    use EdsHealthStatus::*;
    // P0: one healthy host and one draining (excluded): 1/1 healthy -> all to P0.
    let s = snapshot(
        &[ep(1), status(Draining, 2, 0), ep(10).with_priority(1)],
        |_| {},
    );
    assert_eq!(s.excluded, 1);
    assert_eq!(picks(&s, 20, None).get(&1), Some(&20));
    let h = s
        .hosts
        .iter()
        .find(|h| h.address.port() == 2)
        .map(|h| h.health_flags());
    assert_eq!(h, Some(health_flag::EDS_STATUS_DRAINING));
    // Only degraded hosts: they take the load (degraded load after healthy load).
    let s = snapshot(&[status(Degraded, 1, 0), status(Degraded, 2, 0)], |_| {});
    assert_eq!(
        s.priority_load().map(|l| l.degraded.clone()),
        Some(vec![100])
    );
    assert_eq!(picks(&s, 10, None).values().sum::<usize>(), 10);
    assert_eq!(s.degraded, 2);
}

#[test]
fn panic_balances_over_all_hosts_of_the_level() {
    use EdsHealthStatus::*;
    // 1 of 4 healthy (25% < 50%): panic, every host gets traffic.
    let eps = [
        ep(1),
        status(Unhealthy, 2, 0),
        status(Unhealthy, 3, 0),
        status(Unhealthy, 4, 0),
    ];
    let s = snapshot(&eps, |_| {});
    assert!(s.panic);
    assert_eq!(picks(&s, 40, None).len(), 4);
    // Threshold 0: no panic, only the healthy host.
    let s = snapshot(&eps, |c| c.common_lb.healthy_panic_threshold = 0);
    assert!(!s.panic);
    assert_eq!(picks(&s, 40, None).get(&1), Some(&40));
    // Nothing healthy and no panic: no host.
    let s = snapshot(&[status(Unhealthy, 1, 0)], |c| {
        c.common_lb.healthy_panic_threshold = 0
    });
    assert!(picks(&s, 5, None).is_empty());
}

#[test]
fn locality_picks_follow_weights() {
    let z = |port, zone, w| Ep {
        zone,
        locality_weight: w,
        ..ep(port)
    };
    let eps = [z(1, "a", 3), z(2, "a", 3), z(3, "b", 1)];
    let s = snapshot(&eps, |c| c.common_lb.locality_weighted = true);
    // Locality a: 3 of 4 picks, spread over its two hosts; b: 1 of 4.
    let p = picks(&s, 400, None);
    assert_eq!(p[&1] + p[&2], 300);
    assert_eq!(p[&3], 100);
    assert_eq!(p[&1], 150);
    // Without locality weighting: host round robin.
    let p = picks(&snapshot(&eps, |_| {}), 300, None);
    assert_eq!(p[&3], 100);
    // A locality without weight gets nothing while another has one.
    let s = snapshot(&[z(1, "a", 2), z(2, "b", 0)], |c| {
        c.common_lb.locality_weighted = true
    });
    assert_eq!(picks(&s, 10, None).get(&1), Some(&10));
}

#[test]
fn locality_weight_follows_locality_health() {
    use EdsHealthStatus::*;
    // a: weight 1, 1 of 2 healthy -> 1 x min(1, 1.4 x 0.5) = 0.7; b: weight 1, healthy -> 1.
    let eps = [
        Ep {
            zone: "a",
            locality_weight: 1,
            ..ep(1)
        },
        Ep {
            zone: "a",
            locality_weight: 1,
            status: Unhealthy,
            ..ep(2)
        },
        Ep {
            zone: "b",
            locality_weight: 1,
            ..ep(3)
        },
    ];
    let s = snapshot(&eps, |c| c.common_lb.locality_weighted = true);
    let p = picks(&s, 1700, None);
    assert_eq!(p[&1], 700);
    assert_eq!(p[&3], 1000);
    assert_eq!(p.get(&2), None);
}

fn criteria(pairs: &[(&str, &str)]) -> MetadataMatch {
    MetadataMatch::new(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), MetadataValue::string(v)))
            .collect(),
    )
}

fn subset_spec(selectors: Vec<SubsetSelector>, fallback: SubsetFallback) -> SubsetSpec {
    SubsetSpec {
        selectors,
        fallback,
        default_subset: Vec::new(),
        locality_weight_aware: false,
        scale_locality_weight: false,
        panic_mode_any: false,
        list_as_any: false,
    }
}

fn selector(keys: &[&str], fallback: SelectorFallback) -> SubsetSelector {
    SubsetSelector {
        keys: keys.iter().map(|k| k.to_string()).collect(),
        fallback,
    }
}

fn subset_hosts() -> Vec<Ep<'static>> {
    vec![
        Ep {
            lb: &[("version", "v1"), ("stage", "prod")],
            ..ep(1)
        },
        Ep {
            lb: &[("version", "v1"), ("stage", "canary")],
            ..ep(2)
        },
        Ep {
            lb: &[("version", "v2"), ("stage", "prod")],
            ..ep(3)
        },
        Ep {
            lb: &[("version", "v2")],
            ..ep(4)
        },
    ]
}

#[test]
fn subset_selection_by_criteria() {
    let s = snapshot(&subset_hosts(), |c| {
        c.subset = Some(Arc::new(subset_spec(
            vec![
                selector(&["version"], SelectorFallback::NotDefined),
                selector(&["stage", "version"], SelectorFallback::NotDefined),
            ],
            SubsetFallback::NoFallback,
        )))
    });
    // version=v1: hosts 1 and 2.
    let p = picks(&s, 10, Some(&criteria(&[("version", "v1")])));
    assert_eq!((p[&1], p[&2], p.len()), (5, 5, 2));
    // version=v2, stage=prod: host 3 only.
    let m = criteria(&[("version", "v2"), ("stage", "prod")]);
    assert_eq!(picks(&s, 5, Some(&m)).get(&3), Some(&5));
    assert_eq!(
        s.choose_once(&LbContext {
            metadata_match: Some(&m),
            ..Default::default()
        })
        .1,
        SubsetPick::Selected
    );
    // No subset, NO_FALLBACK: nothing; no criteria: nothing.
    assert!(picks(&s, 5, Some(&criteria(&[("version", "v3")]))).is_empty());
    assert!(picks(&s, 5, None).is_empty());
    // stage alone is no selector's key set.
    assert!(picks(&s, 5, Some(&criteria(&[("stage", "prod")]))).is_empty());
    assert_eq!(s.subsets_active(), 2 + 3);
}

#[test]
fn cluster_fallback_policies() {
    let build = |fallback, default: &[(&str, &str)]| {
        let default: Vec<(String, MetadataValue)> = default
            .iter()
            .map(|(k, v)| (k.to_string(), MetadataValue::string(v)))
            .collect();
        snapshot(&subset_hosts(), move |c| {
            let mut s = subset_spec(
                vec![selector(&["version"], SelectorFallback::NotDefined)],
                fallback,
            );
            s.default_subset = default;
            c.subset = Some(Arc::new(s));
        })
    };
    let miss = criteria(&[("version", "v9")]);
    // ANY_ENDPOINT: every host.
    let s = build(SubsetFallback::AnyEndpoint, &[]);
    assert_eq!(picks(&s, 40, Some(&miss)).len(), 4);
    assert_eq!(picks(&s, 40, None).len(), 4);
    assert_eq!(s.choose_once(&LbContext::default()).1, SubsetPick::Fallback);
    // DEFAULT_SUBSET stage=prod: hosts 1 and 3.
    let s = build(SubsetFallback::DefaultSubset, &[("stage", "prod")]);
    let p = picks(&s, 10, Some(&miss));
    assert_eq!((p.get(&1), p.get(&3), p.len()), (Some(&5), Some(&5), 2));
    // An empty default subset is every host.
    let s = build(SubsetFallback::DefaultSubset, &[]);
    assert_eq!(picks(&s, 40, None).len(), 4);
    // A default subset matching nothing: no host, unless panic_mode_any.
    let s = build(SubsetFallback::DefaultSubset, &[("stage", "nowhere")]);
    assert!(picks(&s, 5, None).is_empty());
    let s = snapshot(&subset_hosts(), |c| {
        let mut s = subset_spec(
            vec![selector(&["version"], SelectorFallback::NotDefined)],
            SubsetFallback::DefaultSubset,
        );
        s.default_subset = vec![("stage".into(), MetadataValue::string("nowhere"))];
        s.panic_mode_any = true;
        c.subset = Some(Arc::new(s));
    });
    assert_eq!(picks(&s, 40, None).len(), 4);
    assert_eq!(
        s.choose_once(&LbContext::default()).1,
        SubsetPick::FallbackPanic
    );
}

#[test]
fn selector_fallback_policies() {
    let build = |fallback: SelectorFallback| {
        snapshot(&subset_hosts(), move |c| {
            let mut s = subset_spec(
                vec![
                    selector(&["stage", "version"], fallback),
                    selector(&["version"], SelectorFallback::NotDefined),
                ],
                SubsetFallback::DefaultSubset,
            );
            s.default_subset = vec![("version".into(), MetadataValue::string("v2"))];
            c.subset = Some(Arc::new(s));
        })
    };
    let miss = criteria(&[("version", "v1"), ("stage", "dev")]);
    // KEYS_SUBSET [version]: retried with version=v1 -> hosts 1 and 2.
    let s = build(SelectorFallback::KeysSubset(vec!["version".into()]));
    let p = picks(&s, 10, Some(&miss));
    assert_eq!((p.get(&1), p.get(&2), p.len()), (Some(&5), Some(&5), 2));
    // NO_FALLBACK: nothing, the cluster fallback is not used.
    assert!(picks(&build(SelectorFallback::NoFallback), 5, Some(&miss)).is_empty());
    // ANY_ENDPOINT: every host.
    assert_eq!(
        picks(&build(SelectorFallback::AnyEndpoint), 40, Some(&miss)).len(),
        4
    );
    // DEFAULT_SUBSET: version=v2 -> hosts 3 and 4.
    let p = picks(&build(SelectorFallback::DefaultSubset), 10, Some(&miss));
    assert_eq!((p.get(&3), p.get(&4), p.len()), (Some(&5), Some(&5), 2));
    // NOT_DEFINED: the cluster's fallback (DEFAULT_SUBSET) as well.
    let p = picks(&build(SelectorFallback::NotDefined), 10, Some(&miss));
    assert_eq!(p.len(), 2);
}

#[test]
fn list_as_any_places_a_host_in_each_listed_subset() {
    let store = Store::new(1);
    let mut spec = ClusterSpec::static_http1("c", &[]);
    let mut s = subset_spec(
        vec![selector(&["version"], SelectorFallback::NotDefined)],
        SubsetFallback::NoFallback,
    );
    s.list_as_any = true;
    spec.subset = Some(Arc::new(s));
    let address: SocketAddr = ([127, 0, 0, 1], 7).into();
    let e = EndpointSpec {
        address,
        weight: 1,
        hostname: String::new(),
        priority: 0,
        locality: Arc::default(),
        locality_weight: 0,
        health_status: EdsHealthStatus::Unknown,
        metadata: Arc::new(EndpointMetadata {
            filter_metadata: vec![(
                "envoy.lb".into(),
                vec![(
                    "version".into(),
                    MetadataValue::List(vec![
                        MetadataValue::string("v1"),
                        MetadataValue::string("v2"),
                    ]),
                )],
            )],
        }),
    };
    let snap = HostSnapshot::build(vec![Arc::new(Host::new(&e, address, &store))], &spec, 1);
    for v in ["v1", "v2"] {
        assert_eq!(
            picks(&snap, 2, Some(&criteria(&[("version", v)]))).get(&7),
            Some(&2)
        );
    }
    assert!(picks(&snap, 2, Some(&criteria(&[("version", "v3")]))).is_empty());
}

#[test]
fn subsets_use_locality_weights_only_when_aware() {
    let eps = [
        Ep {
            zone: "a",
            locality_weight: 3,
            lb: &[("v", "1")],
            ..ep(1)
        },
        Ep {
            zone: "b",
            locality_weight: 4,
            lb: &[("v", "1")],
            ..ep(2)
        },
        Ep {
            zone: "b",
            locality_weight: 4,
            lb: &[("v", "2")],
            ..ep(3)
        },
    ];
    let build = |aware: bool, scale: bool| {
        snapshot(&eps, move |c| {
            c.common_lb.locality_weighted = true;
            let mut s = subset_spec(
                vec![selector(&["v"], SelectorFallback::NotDefined)],
                SubsetFallback::NoFallback,
            );
            s.locality_weight_aware = aware;
            s.scale_locality_weight = scale;
            c.subset = Some(Arc::new(s));
        })
    };
    let m = criteria(&[("v", "1")]);
    // Not aware: plain round robin over hosts 1 and 2.
    let p = picks(&build(false, false), 70, Some(&m));
    assert_eq!((p[&1], p[&2]), (35, 35));
    // Aware: locality weights 3 : 4.
    let p = picks(&build(true, false), 70, Some(&m));
    assert_eq!((p[&1], p[&2]), (30, 40));
    // Scaled: b keeps 1 of its 2 hosts -> round(4 x 1 / 2) = 2; a keeps all, stays 3.
    let p = picks(&build(true, true), 70, Some(&m));
    assert_eq!((p[&1], p[&2]), (42, 28));
}

#[test]
fn previous_hosts_are_avoided() {
    let s = snapshot(&[ep(1), ep(2)], |_| {});
    let first = s.choose(&LbContext::default()).map(|h| h.id);
    let attempted = [first.unwrap_or(0)];
    let ctx = LbContext {
        attempted: &attempted,
        host_selection_retry_max_attempts: 3,
        ..Default::default()
    };
    for _ in 0..5 {
        assert_ne!(s.choose(&ctx).map(|h| h.id), first);
    }
}

trait WithPriority {
    fn with_priority(self, p: u32) -> Self;
}

impl WithPriority for Ep<'_> {
    fn with_priority(mut self, p: u32) -> Self {
        self.priority = p;
        self
    }
}

#[test]
fn cluster_counts_lb_stats() {
    use crate::Cluster;
    let store = Store::new(1);
    let mut spec = ClusterSpec::static_http1("s", &[]);
    let md = |v: &str| {
        Arc::new(EndpointMetadata {
            filter_metadata: vec![(
                "envoy.lb".into(),
                vec![("version".into(), MetadataValue::string(v))],
            )],
        })
    };
    for (port, v, status) in [
        (1, "v1", EdsHealthStatus::Healthy),
        (2, "v2", EdsHealthStatus::Unhealthy),
        (3, "v2", EdsHealthStatus::Draining),
    ] {
        spec.endpoints.push(EndpointSpec {
            address: ([127, 0, 0, 1], port).into(),
            weight: 1,
            hostname: String::new(),
            priority: 0,
            locality: Arc::default(),
            locality_weight: 0,
            health_status: status,
            metadata: md(v),
        });
    }
    let mut s = subset_spec(
        vec![selector(&["version"], SelectorFallback::NotDefined)],
        SubsetFallback::AnyEndpoint,
    );
    s.panic_mode_any = true;
    spec.subset = Some(Arc::new(s));
    let c = Cluster::new(Arc::new(spec), &store, 1);
    let stat = |n: &str| store.counter(&format!("cluster.s.{n}")).value();
    let gauge = |n: &str| store.gauge(&format!("cluster.s.{n}")).value();
    assert_eq!(
        (gauge("lb_subsets_active"), stat("lb_subsets_created")),
        (2, 2)
    );
    assert_eq!(gauge("membership_excluded"), 1);
    let v1 = criteria(&[("version", "v1")]);
    let v2 = criteria(&[("version", "v2")]);
    for m in [Some(&v1), Some(&v2), None] {
        let ctx = LbContext {
            metadata_match: m,
            ..Default::default()
        };
        assert!(c.choose_host(&ctx).is_some());
    }
    // v1 and v2 selected (v2's subset has no healthy host: panic), no criteria fell back.
    assert_eq!(stat("lb_subsets_selected"), 2);
    assert_eq!(stat("lb_subsets_fallback"), 1);
    assert_eq!(stat("lb_healthy_panic"), 1);
    // Membership unchanged on refresh: no subset created or removed.
    c.refresh();
    assert_eq!(
        (stat("lb_subsets_created"), stat("lb_subsets_removed")),
        (2, 0)
    );
    c.set_hosts(
        c.hosts()
            .into_iter()
            .filter(|h| h.address.port() == 1)
            .collect(),
    );
    assert_eq!(
        (gauge("lb_subsets_active"), stat("lb_subsets_removed")),
        (1, 1)
    );
    assert_eq!(gauge("membership_excluded"), 0);
}
