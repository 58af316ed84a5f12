//! Subset load balancing (`lb_subset_config`) and the metadata it works on: endpoint
//! `metadata` (`filter_metadata`, whose `envoy.lb` namespace places hosts in subsets) and the
//! `metadata_match` criteria requests carry.

use envoy_api::pb::envoy::config::cluster::v3 as cl;
use envoy_api::pb::envoy::config::core::v3 as core;
use envoy_api::pb::google::protobuf::{Struct, Value, value::Kind};

use crate::error::{ConfigErrors, FieldPath};

/// The metadata namespace subset load balancing reads.
pub const ENVOY_LB: &str = "envoy.lb";

/// A `google.protobuf.Value` that can be compared and hashed: numbers by their bits, struct
/// fields sorted by name. Equality is Envoy's (`0 == -0`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MetadataValue {
    Null,
    Number(u64),
    String(String),
    Bool(bool),
    List(Vec<MetadataValue>),
    Struct(Vec<(String, MetadataValue)>),
}

impl MetadataValue {
    pub fn from_proto(v: &Value) -> MetadataValue {
        match &v.kind {
            None | Some(Kind::NullValue(_)) => MetadataValue::Null,
            Some(Kind::NumberValue(n)) => {
                // -0.0 and 0.0 are equal numbers.
                let n = if *n == 0.0 { 0.0 } else { *n };
                MetadataValue::Number(n.to_bits())
            }
            Some(Kind::StringValue(s)) => MetadataValue::String(s.clone()),
            Some(Kind::BoolValue(b)) => MetadataValue::Bool(*b),
            Some(Kind::ListValue(l)) => {
                MetadataValue::List(l.values.iter().map(MetadataValue::from_proto).collect())
            }
            Some(Kind::StructValue(s)) => MetadataValue::Struct(sorted_fields(s)),
        }
    }

    /// A string value (the common case in tests and configs).
    pub fn string(s: &str) -> MetadataValue {
        MetadataValue::String(s.to_string())
    }
}

/// The fields of a `Struct`, sorted by name.
pub fn sorted_fields(s: &Struct) -> Vec<(String, MetadataValue)> {
    let mut v: Vec<(String, MetadataValue)> = s
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), MetadataValue::from_proto(v)))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// An endpoint's `metadata.filter_metadata`, namespaces and fields sorted by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointMetadata {
    pub filter_metadata: Vec<(String, Vec<(String, MetadataValue)>)>,
}

impl EndpointMetadata {
    pub fn from_proto(m: &core::Metadata) -> EndpointMetadata {
        let mut filter_metadata: Vec<_> = m
            .filter_metadata
            .iter()
            .map(|(k, s)| (k.clone(), sorted_fields(s)))
            .collect();
        filter_metadata.sort_by(|a, b| a.0.cmp(&b.0));
        EndpointMetadata { filter_metadata }
    }

    /// The fields of one namespace (empty when absent).
    pub fn namespace(&self, name: &str) -> &[(String, MetadataValue)] {
        self.filter_metadata
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .map(|i| self.filter_metadata[i].1.as_slice())
            .unwrap_or(&[])
    }

    /// The `envoy.lb` fields: subset keys and `canary`.
    pub fn lb(&self) -> &[(String, MetadataValue)] {
        self.namespace(ENVOY_LB)
    }

    /// One `envoy.lb` field.
    pub fn lb_value(&self, key: &str) -> Option<&MetadataValue> {
        let lb = self.lb();
        lb.binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| &lb[i].1)
    }
}

/// A request's `metadata_match` criteria (the `envoy.lb` fields of a route's or weighted
/// cluster's `metadata_match`): (key, value) pairs sorted by key, keys unique.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct MetadataMatch {
    criteria: Vec<(String, MetadataValue)>,
}

impl MetadataMatch {
    /// Criteria from pairs in any order; a repeated key keeps its last value.
    pub fn new(pairs: Vec<(String, MetadataValue)>) -> MetadataMatch {
        let mut map: Vec<(String, MetadataValue)> = Vec::with_capacity(pairs.len());
        for (k, v) in pairs {
            match map.iter_mut().find(|(m, _)| *m == k) {
                Some(slot) => slot.1 = v,
                None => map.push((k, v)),
            }
        }
        map.sort_by(|a, b| a.0.cmp(&b.0));
        MetadataMatch { criteria: map }
    }

    /// The `envoy.lb` namespace of a `metadata_match` (route or weighted cluster); `None`
    /// when it has no `envoy.lb` fields.
    pub fn from_metadata(m: &core::Metadata) -> Option<MetadataMatch> {
        let s = m.filter_metadata.get(ENVOY_LB)?;
        let c = MetadataMatch {
            criteria: sorted_fields(s),
        };
        (!c.criteria.is_empty()).then_some(c)
    }

    /// These criteria overridden by `over`'s (a weighted cluster's `metadata_match` over its
    /// route's, as Envoy merges them).
    pub fn merged_with(&self, over: &MetadataMatch) -> MetadataMatch {
        let mut pairs = self.criteria.clone();
        pairs.extend(over.criteria.iter().cloned());
        MetadataMatch::new(pairs)
    }

    pub fn criteria(&self) -> &[(String, MetadataValue)] {
        &self.criteria
    }

    pub fn is_empty(&self) -> bool {
        self.criteria.is_empty()
    }
}

/// Cluster-level fallback when a request's criteria find no subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubsetFallback {
    NoFallback,
    AnyEndpoint,
    DefaultSubset,
}

/// Per-selector fallback (`LbSubsetSelector.fallback_policy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectorFallback {
    /// Use the cluster-level fallback.
    NotDefined,
    NoFallback,
    AnyEndpoint,
    DefaultSubset,
    /// Retry with the request's criteria reduced to these keys (sorted).
    KeysSubset(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubsetSelector {
    /// Sorted, unique.
    pub keys: Vec<String>,
    pub fallback: SelectorFallback,
}

/// A compiled `lb_subset_config` with at least one selector.
#[derive(Debug, Clone, PartialEq)]
pub struct SubsetSpec {
    pub selectors: Vec<SubsetSelector>,
    pub fallback: SubsetFallback,
    /// `default_subset`, sorted by key (empty: every host).
    pub default_subset: Vec<(String, MetadataValue)>,
    pub locality_weight_aware: bool,
    pub scale_locality_weight: bool,
    pub panic_mode_any: bool,
    pub list_as_any: bool,
}

/// Fields of subset messages Strait implements (chained into the supported table).
pub const SUPPORTED: &[(&str, &[&str])] = &[
    ("envoy.config.cluster.v3.Cluster", &["lb_subset_config"]),
    (
        "envoy.config.cluster.v3.Cluster.LbSubsetConfig",
        &[
            "fallback_policy",
            "default_subset",
            "subset_selectors",
            "locality_weight_aware",
            "scale_locality_weight",
            "panic_mode_any",
            "list_as_any",
            "metadata_fallback_policy",
        ],
    ),
    (
        "envoy.config.cluster.v3.Cluster.LbSubsetConfig.LbSubsetSelector",
        &["keys", "fallback_policy", "fallback_keys_subset"],
    ),
    ("envoy.config.endpoint.v3.LbEndpoint", &["metadata"]),
    ("envoy.config.core.v3.Metadata", &["filter_metadata"]),
];

pub(crate) fn compile(
    c: &cl::Cluster,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<SubsetSpec> {
    use cl::cluster::lb_subset_config::LbSubsetFallbackPolicy as F;
    use cl::cluster::lb_subset_config::LbSubsetMetadataFallbackPolicy as M;
    use cl::cluster::lb_subset_config::lb_subset_selector::LbSubsetSelectorFallbackPolicy as SF;
    let s = c.lb_subset_config.as_ref()?;
    let p = path.field("lb_subset_config");
    if s.metadata_fallback_policy == M::FallbackList as i32 {
        errs.push(
            p.field("metadata_fallback_policy").to_string(),
            "FALLBACK_LIST is not supported by Strait yet (METADATA_NO_FALLBACK is)",
        );
    }
    let mut selectors = Vec::new();
    for (i, sel) in s.subset_selectors.iter().enumerate() {
        let sp = p.field("subset_selectors").index(i);
        let mut keys = sel.keys.clone();
        keys.sort();
        keys.dedup();
        let mut fallback_keys = sel.fallback_keys_subset.clone();
        fallback_keys.sort();
        fallback_keys.dedup();
        let fallback = match SF::try_from(sel.fallback_policy).unwrap_or(SF::NotDefined) {
            SF::NotDefined => SelectorFallback::NotDefined,
            SF::NoFallback => SelectorFallback::NoFallback,
            SF::AnyEndpoint => SelectorFallback::AnyEndpoint,
            SF::DefaultSubset => SelectorFallback::DefaultSubset,
            SF::KeysSubset => SelectorFallback::KeysSubset(fallback_keys.clone()),
        };
        // Envoy's checks of a selector, with its messages.
        let fk = sp.field("fallback_keys_subset").to_string();
        if !matches!(fallback, SelectorFallback::KeysSubset(_)) {
            if !fallback_keys.is_empty() {
                errs.push(
                    fk,
                    "fallback_keys_subset can be set only for KEYS_SUBSET fallback_policy",
                );
                continue;
            }
        } else if fallback_keys.is_empty() {
            errs.push(fk, "fallback_keys_subset cannot be empty");
            continue;
        } else if !fallback_keys.iter().all(|k| keys.contains(k)) {
            errs.push(fk, "fallback_keys_subset must be a subset of selector keys");
            continue;
        } else if fallback_keys.len() == keys.len() {
            errs.push(fk, "fallback_keys_subset cannot be equal to keys");
            continue;
        }
        // A selector without keys selects nothing (Envoy skips it).
        if !keys.is_empty() {
            selectors.push(SubsetSelector { keys, fallback });
        }
    }
    // Without selectors Envoy does not use subset load balancing at all.
    if s.subset_selectors.is_empty() {
        return None;
    }
    let fallback = match F::try_from(s.fallback_policy).unwrap_or(F::NoFallback) {
        F::NoFallback => SubsetFallback::NoFallback,
        F::AnyEndpoint => SubsetFallback::AnyEndpoint,
        F::DefaultSubset => SubsetFallback::DefaultSubset,
    };
    Some(SubsetSpec {
        selectors,
        fallback,
        default_subset: s
            .default_subset
            .as_ref()
            .map(sorted_fields)
            .unwrap_or_default(),
        locality_weight_aware: s.locality_weight_aware,
        scale_locality_weight: s.scale_locality_weight,
        panic_mode_any: s.panic_mode_any,
        list_as_any: s.list_as_any,
    })
}

/// Endpoint `metadata` compiled; `typed_filter_metadata` is refused by the supported table.
pub(crate) fn endpoint_metadata(m: Option<&core::Metadata>) -> EndpointMetadata {
    m.map(EndpointMetadata::from_proto).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sv(s: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(s.into())),
        }
    }

    #[test]
    fn criteria_are_sorted_and_merged() {
        let m = MetadataMatch::new(vec![
            ("version".into(), MetadataValue::string("v1")),
            ("stage".into(), MetadataValue::string("prod")),
        ]);
        let keys: Vec<&str> = m.criteria().iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["stage", "version"]);
        let over = MetadataMatch::new(vec![("version".into(), MetadataValue::string("v2"))]);
        let merged = m.merged_with(&over);
        assert_eq!(
            merged.criteria()[1],
            ("version".into(), MetadataValue::string("v2"))
        );
    }

    #[test]
    fn numbers_compare_as_envoy_does() {
        let a = MetadataValue::from_proto(&Value {
            kind: Some(Kind::NumberValue(0.0)),
        });
        let b = MetadataValue::from_proto(&Value {
            kind: Some(Kind::NumberValue(-0.0)),
        });
        assert_eq!(a, b);
        assert_ne!(a, MetadataValue::from_proto(&sv("0")));
    }

    #[test]
    fn endpoint_metadata_reads_envoy_lb() {
        let mut s = Struct::default();
        s.fields.insert("version".into(), sv("v1"));
        let mut m = core::Metadata::default();
        m.filter_metadata.insert(ENVOY_LB.into(), s);
        let e = EndpointMetadata::from_proto(&m);
        assert_eq!(e.lb_value("version"), Some(&MetadataValue::string("v1")));
        assert_eq!(e.lb_value("stage"), None);
        assert!(e.namespace("other").is_empty());
    }
}
