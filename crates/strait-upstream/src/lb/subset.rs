//! Subset load balancing (`lb_subset_config`): hosts are grouped by the values of their
//! `envoy.lb` metadata keys named by each selector, each group with its own priority-aware
//! balancer, built once per snapshot. A request with `metadata_match` criteria goes to the
//! subset with exactly those key/value pairs (a hash lookup, no allocation); otherwise the
//! selector's fallback policy applies, then the cluster's (`fallback_policy`,
//! `panic_mode_any`), as in Envoy.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use strait_config::model::{
    ClusterSpec, LocalitySpec, MetadataMatch, MetadataValue, SelectorFallback, SubsetFallback,
    SubsetSpec,
};

use super::priority::{LocalityWeights, PrioritySet};
use super::{LbContext, LbStats};
use crate::host::Host;

type Kvs = Vec<(String, MetadataValue)>;

#[derive(Debug)]
struct Subset {
    kvs: Kvs,
    lb: PrioritySet,
}

#[derive(Debug)]
pub(crate) struct SubsetLb {
    subsets: Vec<Subset>,
    /// Hash of a subset's (key, value) pairs -> indexes into `subsets`.
    index: HashMap<u64, Vec<usize>>,
    /// Fallback of each key set a request's criteria can name: the key-path nodes of Envoy's
    /// selector tree (a node first created by a longer selector has no fallback).
    selector_fallbacks: Vec<(Vec<String>, SelectorFallback)>,
    any: Option<PrioritySet>,
    default: Option<PrioritySet>,
    fallback: SubsetFallback,
    panic_mode_any: bool,
}

/// What a pick found, for the subset stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubsetPick {
    /// The request's subset (`lb_subsets_selected`).
    Selected,
    /// The cluster-level fallback (`lb_subsets_fallback`).
    Fallback,
    /// `panic_mode_any` (`lb_subsets_fallback_panic`).
    FallbackPanic,
    /// A selector-level fallback, or nothing.
    Other,
}

impl SubsetLb {
    pub fn build(
        hosts: &[Arc<Host>],
        spec: &ClusterSpec,
        s: &SubsetSpec,
        slots: usize,
    ) -> SubsetLb {
        let levels = hosts
            .iter()
            .map(|h| h.priority as usize + 1)
            .max()
            .unwrap_or(1);
        // Hosts per (priority, locality) of the whole cluster, for `scale_locality_weight`.
        let mut original: HashMap<(u32, &LocalitySpec), usize> = HashMap::new();
        for h in hosts {
            *original.entry((h.priority, &*h.locality)).or_default() += 1;
        }
        let weights = if !s.locality_weight_aware || !spec.common_lb.locality_weighted {
            LocalityWeights::Off
        } else if s.scale_locality_weight {
            LocalityWeights::Scaled(&original)
        } else {
            LocalityWeights::Configured
        };
        let make = |members: &[Arc<Host>]| {
            PrioritySet::build(
                members,
                levels,
                &spec.lb.policy,
                &spec.common_lb,
                weights,
                slots,
            )
        };

        // Group hosts by each selector's key/value combinations, in discovery order.
        let mut groups: Vec<(Kvs, Vec<Arc<Host>>)> = Vec::new();
        let mut where_: HashMap<Kvs, usize> = HashMap::new();
        for h in hosts {
            for sel in &s.selectors {
                for kvs in host_kvs(h, &sel.keys, s.list_as_any) {
                    let i = *where_.entry(kvs.clone()).or_insert_with(|| {
                        groups.push((kvs, Vec::new()));
                        groups.len() - 1
                    });
                    let members = &mut groups[i].1;
                    // A host listed by two selectors with the same keys joins once.
                    if !members.iter().any(|m| Arc::ptr_eq(m, h)) {
                        members.push(h.clone());
                    }
                }
            }
        }
        let mut index: HashMap<u64, Vec<usize>> = HashMap::new();
        let subsets: Vec<Subset> = groups
            .into_iter()
            .enumerate()
            .map(|(i, (kvs, members))| {
                index
                    .entry(hash_kvs(kvs.iter().map(|(k, v)| (k, v))))
                    .or_default()
                    .push(i);
                Subset {
                    lb: make(&members),
                    kvs,
                }
            })
            .collect();

        let mut selector_fallbacks: Vec<(Vec<String>, SelectorFallback)> = Vec::new();
        for sel in &s.selectors {
            for l in 1..=sel.keys.len() {
                let path = &sel.keys[..l];
                if !selector_fallbacks.iter().any(|(p, _)| p == path) {
                    let f = if l == sel.keys.len() {
                        sel.fallback.clone()
                    } else {
                        SelectorFallback::NotDefined
                    };
                    selector_fallbacks.push((path.to_vec(), f));
                }
            }
        }
        let uses = |f: &SelectorFallback| s.selectors.iter().any(|sel| sel.fallback == *f);
        let any = (s.fallback == SubsetFallback::AnyEndpoint
            || s.panic_mode_any
            || uses(&SelectorFallback::AnyEndpoint))
        .then(|| make(hosts));
        let default = (s.fallback == SubsetFallback::DefaultSubset
            || uses(&SelectorFallback::DefaultSubset))
        .then(|| {
            let members: Vec<Arc<Host>> = hosts
                .iter()
                .filter(|h| label_match(&s.default_subset, h, s.list_as_any))
                .cloned()
                .collect();
            make(&members)
        });
        SubsetLb {
            subsets,
            index,
            selector_fallbacks,
            any,
            default,
            fallback: s.fallback,
            panic_mode_any: s.panic_mode_any,
        }
    }

    /// Picks a host for a request (its `metadata_match`, if any, in `ctx`).
    pub fn choose(
        &self,
        ctx: &LbContext<'_>,
        stats: Option<&LbStats>,
    ) -> (Option<&Arc<Host>>, SubsetPick) {
        let (h, pick) = self.choose_filtered(ctx, ctx.metadata_match, None, stats);
        if let Some(s) = stats {
            match pick {
                SubsetPick::Selected => s.lb_subsets_selected.inc(),
                SubsetPick::Fallback => s.lb_subsets_fallback.inc(),
                SubsetPick::FallbackPanic => s.lb_subsets_fallback_panic.inc(),
                SubsetPick::Other => {}
            }
        }
        (h, pick)
    }

    /// The (key, value) pairs of every subset built.
    pub fn keys(&self) -> Vec<&[(String, MetadataValue)]> {
        self.subsets.iter().map(|s| s.kvs.as_slice()).collect()
    }

    /// One round of Envoy's subset selection with the request's criteria restricted to
    /// `keys` (a `KEYS_SUBSET` fallback narrows them).
    fn choose_filtered(
        &self,
        ctx: &LbContext<'_>,
        criteria: Option<&MetadataMatch>,
        keys: Option<&[String]>,
        stats: Option<&LbStats>,
    ) -> (Option<&Arc<Host>>, SubsetPick) {
        if let Some(m) = criteria.filter(|m| !m.is_empty()) {
            let pairs = || {
                m.criteria()
                    .iter()
                    .filter(move |(k, _)| keys.is_none_or(|ks| ks.contains(k)))
            };
            if let Some(s) = self.find(pairs) {
                return (s.lb.choose(ctx, stats), SubsetPick::Selected);
            }
            let fallback = self
                .selector_fallbacks
                .iter()
                .find(|(path, _)| path.iter().eq(pairs().map(|(k, _)| k)))
                .map(|(_, f)| f);
            match fallback {
                None | Some(SelectorFallback::NotDefined) => {}
                Some(SelectorFallback::NoFallback) => return (None, SubsetPick::Other),
                Some(SelectorFallback::AnyEndpoint) => {
                    return (
                        self.any.as_ref().and_then(|a| a.choose(ctx, stats)),
                        SubsetPick::Other,
                    );
                }
                Some(SelectorFallback::DefaultSubset) => {
                    return (
                        self.default.as_ref().and_then(|d| d.choose(ctx, stats)),
                        SubsetPick::Other,
                    );
                }
                Some(SelectorFallback::KeysSubset(fk)) => {
                    return self.choose_filtered(ctx, criteria, Some(fk), stats);
                }
            }
        }
        let fallback = match self.fallback {
            SubsetFallback::NoFallback => return (None, SubsetPick::Other),
            SubsetFallback::AnyEndpoint => self.any.as_ref(),
            SubsetFallback::DefaultSubset => self.default.as_ref(),
        };
        if let Some(h) = fallback.and_then(|f| f.choose(ctx, stats)) {
            return (Some(h), SubsetPick::Fallback);
        }
        if self.panic_mode_any
            && let Some(h) = self.any.as_ref().and_then(|a| a.choose(ctx, stats))
        {
            return (Some(h), SubsetPick::FallbackPanic);
        }
        (None, SubsetPick::Other)
    }

    /// The subset with exactly these (key, value) pairs, without building a key.
    fn find<'a, I>(&self, pairs: impl Fn() -> I) -> Option<&Subset>
    where
        I: Iterator<Item = &'a (String, MetadataValue)>,
    {
        let h = hash_kvs(pairs().map(|(k, v)| (k, v)));
        self.index.get(&h)?.iter().find_map(|i| {
            let s = self.subsets.get(*i)?;
            let same = s.kvs.len() == pairs().count()
                && s.kvs
                    .iter()
                    .zip(pairs())
                    .all(|(a, b)| a.0 == b.0 && a.1 == b.1);
            same.then_some(s)
        })
    }

    /// Subsets built (`lb_subsets_active`).
    pub fn active(&self) -> usize {
        self.subsets.len()
    }
}

fn hash_kvs<'a>(pairs: impl Iterator<Item = (&'a String, &'a MetadataValue)>) -> u64 {
    let mut h = DefaultHasher::new();
    for (k, v) in pairs {
        k.hash(&mut h);
        v.hash(&mut h);
    }
    h.finish()
}

/// The key/value combinations a host has for `keys` (sorted): none when a key is missing;
/// with `list_as_any` a list value stands for each of its elements.
fn host_kvs(h: &Host, keys: &[String], list_as_any: bool) -> Vec<Kvs> {
    let mut all: Vec<Kvs> = vec![Vec::new()];
    for k in keys {
        let Some(v) = h.metadata.lb_value(k) else {
            return Vec::new();
        };
        match v {
            MetadataValue::List(items) if list_as_any => {
                all = all
                    .iter()
                    .flat_map(|kvs| {
                        items.iter().map(move |item| {
                            let mut n = kvs.clone();
                            n.push((k.clone(), item.clone()));
                            n
                        })
                    })
                    .collect();
            }
            _ => all
                .iter_mut()
                .for_each(|kvs| kvs.push((k.clone(), v.clone()))),
        }
    }
    all.retain(|kvs| !kvs.is_empty());
    all
}

/// Envoy's `metadataLabelMatch`: every pair equals the host's `envoy.lb` value (or, with
/// `list_as_any`, one element of a list value). Empty labels match every host.
fn label_match(labels: &[(String, MetadataValue)], h: &Host, list_as_any: bool) -> bool {
    labels.iter().all(|(k, want)| match h.metadata.lb_value(k) {
        None => false,
        Some(MetadataValue::List(items)) if list_as_any => items.contains(want),
        Some(v) => v == want,
    })
}
