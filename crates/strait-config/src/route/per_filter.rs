//! `typed_per_filter_config`: per-route overrides of HTTP filter configuration, keyed by
//! filter name, at the virtual host, route and weighted-cluster levels. Kept as the typed
//! `Any` payloads; an HTTP filter decodes its own (once, at config load) and reads the most
//! specific one for a request with [`most_specific`]. Which payload types are accepted is
//! decided by the supported-extension table: a filter Strait does not implement is refused
//! with the path of its entry, like any other unimplemented field.

use std::collections::HashMap;
use std::sync::Arc;

use envoy_api::pb::google::protobuf::Any;

pub const SUPPORTED: &[(&str, &[&str])] = &[
    (
        "envoy.config.route.v3.VirtualHost",
        &["typed_per_filter_config"],
    ),
    ("envoy.config.route.v3.Route", &["typed_per_filter_config"]),
    (
        "envoy.config.route.v3.WeightedCluster.ClusterWeight",
        &["typed_per_filter_config"],
    ),
];

/// One level's `typed_per_filter_config`, sorted by filter name.
#[derive(Debug, Clone, Default)]
pub struct PerFilterConfigs(Arc<[(Box<str>, Arc<Any>)]>);

impl PerFilterConfigs {
    pub fn from_map(map: &HashMap<String, Any>) -> Self {
        let mut v: Vec<(Box<str>, Arc<Any>)> = map
            .iter()
            .map(|(k, a)| (k.as_str().into(), Arc::new(a.clone())))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        PerFilterConfigs(v.into())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The payload configured for filter `name` at this level.
    pub fn get(&self, name: &str) -> Option<&Any> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(name))
            .ok()
            .and_then(|i| self.0.get(i))
            .map(|(_, a)| &**a)
    }
}

/// Envoy's most-specific-wins lookup: the weighted cluster's entry, else the route's, else
/// the virtual host's.
pub fn most_specific<'a>(
    levels: [Option<&'a PerFilterConfigs>; 3],
    filter: &str,
) -> Option<&'a Any> {
    levels.into_iter().flatten().find_map(|l| l.get(filter))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(entries: &[(&str, &str)]) -> PerFilterConfigs {
        PerFilterConfigs::from_map(
            &entries
                .iter()
                .map(|(k, t)| {
                    (
                        k.to_string(),
                        Any {
                            type_url: format!("type.googleapis.com/{t}"),
                            value: Vec::new(),
                        },
                    )
                })
                .collect(),
        )
    }

    #[test]
    fn the_most_specific_level_wins() {
        let vhost = level(&[("f.a", "vhost.A"), ("f.b", "vhost.B")]);
        let route = level(&[("f.a", "route.A")]);
        let cluster = level(&[("f.c", "cluster.C")]);
        let url = |a: Option<&Any>| a.map(|a| a.type_url.clone()).unwrap_or_default();
        let levels = [Some(&cluster), Some(&route), Some(&vhost)];
        assert_eq!(
            url(most_specific(levels, "f.a")),
            "type.googleapis.com/route.A"
        );
        assert_eq!(
            url(most_specific(levels, "f.b")),
            "type.googleapis.com/vhost.B"
        );
        assert_eq!(
            url(most_specific(levels, "f.c")),
            "type.googleapis.com/cluster.C"
        );
        assert!(most_specific(levels, "f.d").is_none());
        assert!(most_specific([None, None, Some(&vhost)], "f.c").is_none());
    }
}
