//! Load-balancing configuration of a cluster: `lb_policy` / `load_balancing_policy`, the
//! per-policy configs (`least_request_lb_config`, `ring_hash_lb_config`, `maglev_lb_config`),
//! `common_lb_config` (panic threshold, locality weighting) and `lb_subset_config`.
//!
//! This module compiles which algorithm picks a host inside one priority level and its
//! parameters. As in Envoy, a `load_balancing_policy` takes precedence over `lb_policy`, and
//! a `*_lb_config` that does not belong to the chosen `lb_policy` has no effect.

use envoy_api::pb::envoy::config::cluster::v3 as cl;
use envoy_api::pb::envoy::extensions::load_balancing_policies as lbp;

use crate::compile::common::{type_name, unpack};
use crate::error::{ConfigErrors, FieldPath};

/// Which algorithm picks a host inside one priority level.
#[derive(Debug, Clone, PartialEq)]
pub enum LbPolicy {
    RoundRobin,
    LeastRequest(LeastRequestSpec),
    Random,
    RingHash(RingHashSpec),
    Maglev(MaglevSpec),
}

/// `LEAST_REQUEST` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct LeastRequestSpec {
    /// Hosts sampled per pick when all weights are equal (`choice_count`, default 2).
    pub choice_count: u32,
    /// Exponent of `weight / (active + 1)^bias` when weights differ (default 1.0).
    pub active_request_bias: f64,
    /// `selection_method: FULL_SCAN` (or the deprecated `enable_full_scan`).
    pub full_scan: bool,
}

impl Default for LeastRequestSpec {
    fn default() -> Self {
        LeastRequestSpec {
            choice_count: 2,
            active_request_bias: 1.0,
            full_scan: false,
        }
    }
}

/// The hash a ring places its entries with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingHashFunction {
    XxHash,
    MurmurHash2,
}

/// `RING_HASH` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct RingHashSpec {
    pub minimum_ring_size: u64,
    pub maximum_ring_size: u64,
    pub hash_function: RingHashFunction,
    /// Hash hosts by their `hostname` instead of their address.
    pub use_hostname_for_hashing: bool,
}

impl Default for RingHashSpec {
    fn default() -> Self {
        RingHashSpec {
            minimum_ring_size: 1024,
            maximum_ring_size: 8 * 1024 * 1024,
            hash_function: RingHashFunction::XxHash,
            use_hostname_for_hashing: false,
        }
    }
}

/// `MAGLEV` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct MaglevSpec {
    /// Lookup table size; a prime (default 65537).
    pub table_size: u64,
    pub use_hostname_for_hashing: bool,
}

impl Default for MaglevSpec {
    fn default() -> Self {
        MaglevSpec {
            table_size: 65537,
            use_hostname_for_hashing: false,
        }
    }
}

impl LbPolicy {
    /// Whether the policy balances on the request hash (`hash_policy`); the router computes
    /// the hash only then, as Envoy does.
    pub fn uses_hash(&self) -> bool {
        matches!(self, LbPolicy::RingHash(_) | LbPolicy::Maglev(_))
    }
}

/// Everything a cluster's load balancer is built from.
#[derive(Debug, Clone)]
pub struct LbSpec {
    pub policy: LbPolicy,
}

impl Default for LbSpec {
    fn default() -> Self {
        LbSpec {
            policy: LbPolicy::RoundRobin,
        }
    }
}

const CLUSTER: &str = "envoy.config.cluster.v3.Cluster";
const POLICY_PKG: &str = "envoy.extensions.load_balancing_policies";

/// `load_balancing_policy` extension types Strait implements.
pub const SUPPORTED_EXTENSIONS: &[&str] = &[
    "envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin",
    "envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest",
    "envoy.extensions.load_balancing_policies.random.v3.Random",
    "envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash",
    "envoy.extensions.load_balancing_policies.maglev.v3.Maglev",
];

/// Fields of load-balancing messages Strait implements (chained into the supported table).
pub const SUPPORTED: &[(&str, &[&str])] = &[
    (
        CLUSTER,
        &[
            "lb_policy",
            "load_balancing_policy",
            "least_request_lb_config",
            "ring_hash_lb_config",
            "maglev_lb_config",
            "round_robin_lb_config",
            "common_lb_config",
        ],
    ),
    (
        "envoy.config.cluster.v3.Cluster.LeastRequestLbConfig",
        &["choice_count", "active_request_bias"],
    ),
    (
        "envoy.config.cluster.v3.Cluster.RingHashLbConfig",
        &["minimum_ring_size", "maximum_ring_size", "hash_function"],
    ),
    (
        "envoy.config.cluster.v3.Cluster.MaglevLbConfig",
        &["table_size"],
    ),
    ("envoy.config.cluster.v3.Cluster.RoundRobinLbConfig", &[]),
    (
        "envoy.config.cluster.v3.Cluster.CommonLbConfig",
        &["consistent_hashing_lb_config"],
    ),
    (
        "envoy.config.cluster.v3.Cluster.CommonLbConfig.ConsistentHashingLbConfig",
        &["use_hostname_for_hashing"],
    ),
    (
        "envoy.config.core.v3.RuntimeDouble",
        &["default_value", "runtime_key"],
    ),
    ("envoy.config.cluster.v3.LoadBalancingPolicy", &["policies"]),
    (
        "envoy.config.cluster.v3.LoadBalancingPolicy.Policy",
        &["typed_extension_config"],
    ),
    (
        "envoy.config.core.v3.TypedExtensionConfig",
        &["name", "typed_config"],
    ),
    (
        "envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin",
        &[],
    ),
    (
        "envoy.extensions.load_balancing_policies.random.v3.Random",
        &[],
    ),
    (
        "envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest",
        &[
            "choice_count",
            "active_request_bias",
            "selection_method",
            "enable_full_scan",
        ],
    ),
    (
        "envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash",
        &[
            "hash_function",
            "minimum_ring_size",
            "maximum_ring_size",
            "use_hostname_for_hashing",
            "consistent_hashing_lb_config",
        ],
    ),
    (
        "envoy.extensions.load_balancing_policies.maglev.v3.Maglev",
        &["table_size", "consistent_hashing_lb_config"],
    ),
    (
        "envoy.extensions.load_balancing_policies.common.v3.ConsistentHashingLbConfig",
        &["use_hostname_for_hashing"],
    ),
];

pub(crate) fn compile(c: &cl::Cluster, path: &FieldPath, errs: &mut ConfigErrors) -> LbSpec {
    let policy = match &c.load_balancing_policy {
        Some(p) => policy_extension(p, &path.field("load_balancing_policy"), errs),
        None => legacy_policy(c, path, errs),
    };
    LbSpec {
        policy: policy.unwrap_or(LbPolicy::RoundRobin),
        ..LbSpec::default()
    }
}

/// `lb_policy` and its `*_lb_config`.
fn legacy_policy(c: &cl::Cluster, path: &FieldPath, errs: &mut ConfigErrors) -> Option<LbPolicy> {
    use cl::cluster::LbConfig;
    use cl::cluster::LbPolicy as P;
    let hashing_by_hostname = c
        .common_lb_config
        .as_ref()
        .and_then(|x| x.consistent_hashing_lb_config.as_ref())
        .is_some_and(|x| x.use_hostname_for_hashing);
    match P::try_from(c.lb_policy) {
        Ok(P::RoundRobin) => Some(LbPolicy::RoundRobin),
        Ok(P::Random) => Some(LbPolicy::Random),
        Ok(P::LeastRequest) => {
            let mut spec = LeastRequestSpec::default();
            if let Some(LbConfig::LeastRequestLbConfig(x)) = &c.lb_config {
                if let Some(n) = &x.choice_count {
                    spec.choice_count = n.value;
                    check_choice_count(
                        n.value,
                        &path.field("least_request_lb_config").field("choice_count"),
                        errs,
                    );
                }
                if let Some(b) = &x.active_request_bias {
                    spec.active_request_bias = bias(b.default_value);
                }
            }
            Some(LbPolicy::LeastRequest(spec))
        }
        Ok(P::RingHash) => {
            let mut spec = RingHashSpec {
                use_hostname_for_hashing: hashing_by_hostname,
                ..RingHashSpec::default()
            };
            let rp = path.field("ring_hash_lb_config");
            if let Some(LbConfig::RingHashLbConfig(x)) = &c.lb_config {
                if let Some(v) = &x.minimum_ring_size {
                    spec.minimum_ring_size = v.value;
                }
                if let Some(v) = &x.maximum_ring_size {
                    spec.maximum_ring_size = v.value;
                }
                if x.hash_function
                    == cl::cluster::ring_hash_lb_config::HashFunction::MurmurHash2 as i32
                {
                    spec.hash_function = RingHashFunction::MurmurHash2;
                }
            }
            check_ring(&spec, false, &rp, errs);
            Some(LbPolicy::RingHash(spec))
        }
        Ok(P::Maglev) => {
            let mut spec = MaglevSpec {
                use_hostname_for_hashing: hashing_by_hostname,
                ..MaglevSpec::default()
            };
            if let Some(LbConfig::MaglevLbConfig(x)) = &c.lb_config
                && let Some(v) = &x.table_size
            {
                spec.table_size = v.value;
            }
            check_table_size(
                spec.table_size,
                &path.field("maglev_lb_config").field("table_size"),
                errs,
            );
            Some(LbPolicy::Maglev(spec))
        }
        Ok(other) => {
            errs.push(
                path.field("lb_policy").to_string(),
                format!(
                    "lb_policy {} is not supported by Strait yet (ROUND_ROBIN, LEAST_REQUEST, \
                     RANDOM, RING_HASH and MAGLEV are)",
                    other.as_str_name()
                ),
            );
            None
        }
        Err(_) => {
            errs.push(
                path.field("lb_policy").to_string(),
                format!("unknown lb_policy {}", c.lb_policy),
            );
            None
        }
    }
}

/// `load_balancing_policy`: the first policy decides. Envoy would skip a policy it has no
/// factory for and take the next; every type the config loader accepts is one Envoy knows,
/// so a first policy Strait does not implement is refused rather than skipped.
fn policy_extension(
    p: &cl::LoadBalancingPolicy,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<LbPolicy> {
    let Some(first) = p.policies.first() else {
        errs.push(
            path.field("policies").to_string(),
            "at least one load balancing policy is required",
        );
        return None;
    };
    let pp = path
        .field("policies")
        .index(0)
        .field("typed_extension_config");
    let Some(any) = first
        .typed_extension_config
        .as_ref()
        .and_then(|t| t.typed_config.as_ref())
    else {
        errs.push(pp.to_string(), "a typed_config is required");
        return None;
    };
    let tp = pp.field("typed_config");
    let name = type_name(any);
    let use_hostname = |c: &Option<lbp::common::v3::ConsistentHashingLbConfig>| {
        c.as_ref().is_some_and(|c| c.use_hostname_for_hashing)
    };
    match name.strip_prefix(POLICY_PKG) {
        Some(".round_robin.v3.RoundRobin") => Some(LbPolicy::RoundRobin),
        Some(".random.v3.Random") => Some(LbPolicy::Random),
        Some(".least_request.v3.LeastRequest") => {
            let x: lbp::least_request::v3::LeastRequest = unpack(any, &tp, errs)?;
            let mut spec = LeastRequestSpec::default();
            if let Some(n) = &x.choice_count {
                spec.choice_count = n.value;
                check_choice_count(n.value, &tp.field("choice_count"), errs);
            }
            if let Some(b) = &x.active_request_bias {
                spec.active_request_bias = bias(b.default_value);
            }
            #[allow(deprecated)] // still honoured by Envoy
            let full_scan_flag = x.enable_full_scan.is_some_and(|v| v.value);
            spec.full_scan = full_scan_flag
                || x.selection_method
                    == lbp::least_request::v3::least_request::SelectionMethod::FullScan as i32;
            Some(LbPolicy::LeastRequest(spec))
        }
        Some(".ring_hash.v3.RingHash") => {
            let x: lbp::ring_hash::v3::RingHash = unpack(any, &tp, errs)?;
            #[allow(deprecated)] // the message-level flag is used when the sub-config is absent
            let hostname = if x.consistent_hashing_lb_config.is_some() {
                use_hostname(&x.consistent_hashing_lb_config)
            } else {
                x.use_hostname_for_hashing
            };
            let spec = RingHashSpec {
                minimum_ring_size: x.minimum_ring_size.map_or(1024, |v| v.value),
                maximum_ring_size: x.maximum_ring_size.map_or(8 * 1024 * 1024, |v| v.value),
                hash_function: if x.hash_function
                    == lbp::ring_hash::v3::ring_hash::HashFunction::MurmurHash2 as i32
                {
                    RingHashFunction::MurmurHash2
                } else {
                    RingHashFunction::XxHash
                },
                use_hostname_for_hashing: hostname,
            };
            check_ring(&spec, true, &tp, errs);
            Some(LbPolicy::RingHash(spec))
        }
        Some(".maglev.v3.Maglev") => {
            let x: lbp::maglev::v3::Maglev = unpack(any, &tp, errs)?;
            let spec = MaglevSpec {
                table_size: x.table_size.map_or(65537, |v| v.value),
                use_hostname_for_hashing: use_hostname(&x.consistent_hashing_lb_config),
            };
            check_table_size(spec.table_size, &tp.field("table_size"), errs);
            Some(LbPolicy::Maglev(spec))
        }
        _ => {
            // The supported-field check reports unknown types at this path already; this
            // keeps the compile step self-contained.
            errs.push(
                tp.to_string(),
                format!("load balancing policy {name} is not supported by Strait yet"),
            );
            None
        }
    }
}

/// `active_request_bias`: Envoy falls back to 1.0 (with a warning) for a negative or NaN bias.
fn bias(v: f64) -> f64 {
    if v < 0.0 || v.is_nan() { 1.0 } else { v }
}

/// Envoy's PGV bound on `choice_count` (checked here too: it sits in a wrapper).
fn check_choice_count(n: u32, path: &FieldPath, errs: &mut ConfigErrors) {
    if n < 2 {
        errs.push(path.to_string(), "value must be greater than or equal to 2");
    }
}

/// Largest ring Envoy accepts (its PGV bound on both ring sizes).
const MAX_RING: u64 = 8_388_608;
/// Largest Maglev table Envoy accepts.
const MAX_TABLE: u64 = 5_000_011;

fn check_ring(spec: &RingHashSpec, extension: bool, path: &FieldPath, errs: &mut ConfigErrors) {
    for (name, v) in [
        ("minimum_ring_size", spec.minimum_ring_size),
        ("maximum_ring_size", spec.maximum_ring_size),
    ] {
        if v > MAX_RING {
            errs.push(
                path.field(name).to_string(),
                format!("value must be less than or equal to {MAX_RING}"),
            );
            return;
        }
    }
    // The extension requires >= 1. The legacy field allows 0, which builds an empty ring
    // (no host is ever chosen), as in Envoy.
    if extension && spec.minimum_ring_size == 0 {
        errs.push(
            path.field("minimum_ring_size").to_string(),
            "value must be greater than or equal to 1",
        );
    }
    if spec.minimum_ring_size > spec.maximum_ring_size {
        errs.push(
            path.field("minimum_ring_size").to_string(),
            format!(
                "ring hash: minimum_ring_size ({}) > maximum_ring_size ({})",
                spec.minimum_ring_size, spec.maximum_ring_size
            ),
        );
    }
}

fn check_table_size(size: u64, path: &FieldPath, errs: &mut ConfigErrors) {
    if size > MAX_TABLE {
        errs.push(
            path.to_string(),
            format!("value must be less than or equal to {MAX_TABLE}"),
        );
    } else if !is_prime(size) {
        errs.push(
            path.to_string(),
            format!("the table size of maglev must be a prime number (got {size})"),
        );
    }
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u64;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster_lb(extra: &str) -> Result<LbPolicy, crate::ConfigErrors> {
        let yaml = format!(
            r#"
static_resources:
  clusters:
  - name: c
    connect_timeout: 1s
{extra}
    load_assignment:
      cluster_name: c
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 1}}}}}}
"#
        );
        let src = crate::Source {
            path: None,
            yaml: Some(&yaml),
        };
        let cfg = crate::load_bootstrap(&src, &crate::CompileOptions::default())?;
        Ok(cfg.clusters[0].lb.policy.clone())
    }

    fn err_paths(r: Result<LbPolicy, crate::ConfigErrors>) -> Vec<String> {
        match r {
            Ok(p) => panic!("expected an error, got {p:?}"),
            Err(e) => {
                e.0.into_iter()
                    .map(|e| format!("{}: {}", e.path, e.reason))
                    .collect()
            }
        }
    }

    #[test]
    fn legacy_policies_and_defaults() {
        assert_eq!(cluster_lb("").unwrap(), LbPolicy::RoundRobin);
        assert_eq!(
            cluster_lb("    lb_policy: RANDOM").unwrap(),
            LbPolicy::Random
        );
        assert_eq!(
            cluster_lb("    lb_policy: LEAST_REQUEST").unwrap(),
            LbPolicy::LeastRequest(LeastRequestSpec::default())
        );
        assert_eq!(
            cluster_lb(
                "    lb_policy: LEAST_REQUEST
    least_request_lb_config:
      choice_count: 3
      active_request_bias: {default_value: 0.5, runtime_key: k}"
            )
            .unwrap(),
            LbPolicy::LeastRequest(LeastRequestSpec {
                choice_count: 3,
                active_request_bias: 0.5,
                full_scan: false
            })
        );
        assert_eq!(
            cluster_lb(
                "    lb_policy: RING_HASH
    ring_hash_lb_config: {minimum_ring_size: 10, maximum_ring_size: 20, hash_function: MURMUR_HASH_2}
    common_lb_config: {consistent_hashing_lb_config: {use_hostname_for_hashing: true}}"
            )
            .unwrap(),
            LbPolicy::RingHash(RingHashSpec {
                minimum_ring_size: 10,
                maximum_ring_size: 20,
                hash_function: RingHashFunction::MurmurHash2,
                use_hostname_for_hashing: true,
            })
        );
        assert_eq!(
            cluster_lb("    lb_policy: MAGLEV").unwrap(),
            LbPolicy::Maglev(MaglevSpec::default())
        );
        // A config of another policy has no effect, as in Envoy.
        assert_eq!(
            cluster_lb(
                "    lb_policy: ROUND_ROBIN
    ring_hash_lb_config: {minimum_ring_size: 100}"
            )
            .unwrap(),
            LbPolicy::RoundRobin
        );
    }

    #[test]
    fn extension_policies() {
        let ext = |ty: &str, body: &str| {
            cluster_lb(&format!(
                "    load_balancing_policy:
      policies:
      - typed_extension_config:
          name: x
          typed_config:
            '@type': type.googleapis.com/envoy.extensions.load_balancing_policies.{ty}
{body}"
            ))
        };
        assert_eq!(
            ext("maglev.v3.Maglev", "            table_size: 7").unwrap(),
            LbPolicy::Maglev(MaglevSpec {
                table_size: 7,
                use_hostname_for_hashing: false
            })
        );
        assert_eq!(
            ext(
                "least_request.v3.LeastRequest",
                "            selection_method: FULL_SCAN"
            )
            .unwrap(),
            LbPolicy::LeastRequest(LeastRequestSpec {
                full_scan: true,
                ..LeastRequestSpec::default()
            })
        );
        assert_eq!(
            ext(
                "ring_hash.v3.RingHash",
                "            consistent_hashing_lb_config: {use_hostname_for_hashing: true}"
            )
            .unwrap(),
            LbPolicy::RingHash(RingHashSpec {
                use_hostname_for_hashing: true,
                ..RingHashSpec::default()
            })
        );
        assert_eq!(ext("random.v3.Random", "").unwrap(), LbPolicy::Random);
        assert_eq!(
            ext("round_robin.v3.RoundRobin", "").unwrap(),
            LbPolicy::RoundRobin
        );
        // load_balancing_policy wins over lb_policy, as in Envoy.
        let both = cluster_lb(
            "    lb_policy: RING_HASH
    load_balancing_policy:
      policies:
      - typed_extension_config:
          name: x
          typed_config: {'@type': type.googleapis.com/envoy.extensions.load_balancing_policies.random.v3.Random}",
        );
        assert_eq!(both.unwrap(), LbPolicy::Random);
        let unknown = err_paths(ext(
            "client_side_weighted_round_robin.v3.ClientSideWeightedRoundRobin",
            "",
        ));
        assert!(
            unknown.iter().any(|e| e.starts_with(
                "static_resources.clusters[0].load_balancing_policy.policies[0].typed_extension_config.typed_config"
            ) && e.contains("not supported")),
            "{unknown:?}"
        );
    }

    #[test]
    fn bad_sizes_name_their_field() {
        let e = err_paths(cluster_lb(
            "    lb_policy: RING_HASH
    ring_hash_lb_config: {minimum_ring_size: 100, maximum_ring_size: 10}",
        ));
        assert!(
            e.iter().any(|e| e.starts_with(
                "static_resources.clusters[0].ring_hash_lb_config.minimum_ring_size: ring hash: minimum_ring_size (100) > maximum_ring_size (10)"
            )),
            "{e:?}"
        );
        let e = err_paths(cluster_lb(
            "    lb_policy: MAGLEV
    maglev_lb_config: {table_size: 100}",
        ));
        assert!(
            e.iter().any(|e| e.starts_with(
                "static_resources.clusters[0].maglev_lb_config.table_size: the table size of maglev must be a prime"
            )),
            "{e:?}"
        );
        // PGV bounds come from Envoy's own rules.
        let e = err_paths(cluster_lb(
            "    lb_policy: LEAST_REQUEST
    least_request_lb_config: {choice_count: 1}",
        ));
        assert!(
            e.iter()
                .any(|e| e.contains("least_request_lb_config.choice_count")),
            "{e:?}"
        );
        // An unimplemented field inside a policy config is refused with its path.
        let e = err_paths(cluster_lb(
            "    lb_policy: MAGLEV
    common_lb_config: {consistent_hashing_lb_config: {hash_balance_factor: 150}}",
        ));
        assert!(
            e.iter().any(|e| e.starts_with(
                "static_resources.clusters[0].common_lb_config.consistent_hashing_lb_config.hash_balance_factor"
            )),
            "{e:?}"
        );
    }

    #[test]
    fn primes() {
        assert!(is_prime(65537) && is_prime(5000011) && is_prime(2) && is_prime(7));
        assert!(!is_prime(0) && !is_prime(1) && !is_prime(100) && !is_prime(65535));
    }
}
