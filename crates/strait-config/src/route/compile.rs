//! `RouteConfiguration` -> `RouteTable`.

use std::collections::{HashMap, HashSet};

use envoy_api::pb::envoy::config::route::v3 as rt;

use super::action::compile_action;
use super::matcher::compile_match;
use super::per_filter::PerFilterConfigs;
use super::{Route, RouteTable, VirtualHost};
use crate::error::{ConfigErrors, FieldPath};

/// Everything a route compile may need from its surroundings.
pub struct RouteContext<'a> {
    pub clusters: &'a HashSet<String>,
    pub config: &'a rt::RouteConfiguration,
    pub vhost: &'a rt::VirtualHost,
}

pub fn compile_route_config(
    rc: &rt::RouteConfiguration,
    path: &FieldPath,
    clusters: &HashSet<String>,
    errs: &mut ConfigErrors,
) -> Option<RouteTable> {
    let mut table = RouteTable {
        name: rc.name.clone(),
        ignore_port_in_host_matching: rc.ignore_port_in_host_matching,
        internal_only_headers: super::headers::internal_only_headers(rc),
        ..Default::default()
    };
    let mut seen_domains: HashMap<String, String> = HashMap::new();
    let mut vhost_names = HashSet::new();
    for (vi, vh) in rc.virtual_hosts.iter().enumerate() {
        let vp = path.field("virtual_hosts").index(vi);
        if !vhost_names.insert(vh.name.clone()) {
            errs.push(
                vp.field("name").to_string(),
                format!("duplicate virtual host name {:?}", vh.name),
            );
        }
        let idx = table.vhosts.len();
        for (di, d) in vh.domains.iter().enumerate() {
            let dp = vp.field("domains").index(di);
            let d = d.to_ascii_lowercase();
            if let Some(other) = seen_domains.insert(d.clone(), vh.name.clone()) {
                errs.push(
                    dp.to_string(),
                    format!(
                        "domain {d:?} is used by virtual hosts {other:?} and {:?}",
                        vh.name
                    ),
                );
                continue;
            }
            if d == "*" {
                table.default = Some(idx);
            } else if let Some(suffix) = d.strip_prefix('*') {
                table.suffix.push((suffix.to_string(), idx));
            } else if let Some(prefix) = d.strip_suffix('*') {
                table.prefix.push((prefix.to_string(), idx));
            } else if d.contains('*') {
                errs.push(
                    dp.to_string(),
                    format!("domain {d:?}: a wildcard may only be the first or last character"),
                );
            } else {
                table.exact.insert(d, idx);
            }
        }
        let mut routes = Vec::new();
        for (ri, r) in vh.routes.iter().enumerate() {
            let rp = vp.field("routes").index(ri);
            let ctx = RouteContext {
                clusters,
                config: rc,
                vhost: vh,
            };
            if let Some(route) = compile_route(r, &ctx, &rp, errs) {
                routes.push(route);
            }
        }
        table.vhosts.push(VirtualHost {
            name: vh.name.clone(),
            routes,
            virtual_clusters: super::vcluster::compile(vh, &vp, errs),
            per_filter: PerFilterConfigs::from_map(&vh.typed_per_filter_config),
        });
    }
    // Longest wildcard first; equal lengths keep config order (stable sort).
    table.suffix.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
    table.prefix.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
    Some(table)
}

/// One route: its matcher and its action. The virtual host and route configuration are
/// passed for the settings they can carry at their level (header mutations, retry policy).
fn compile_route(
    r: &rt::Route,
    ctx: &RouteContext<'_>,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<Route> {
    let mp = path.field("match");
    let Some(m) = &r.r#match else {
        errs.push(mp.to_string(), "is required");
        return None;
    };
    let matcher = compile_match(m, &mp, errs);
    let action = compile_action(r, ctx, path, errs);
    Some(Route {
        name: r.name.clone(),
        matcher: matcher?,
        action: action?,
        per_filter: PerFilterConfigs::from_map(&r.typed_per_filter_config),
    })
}
