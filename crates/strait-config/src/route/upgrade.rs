//! HTTP upgrades (WebSocket and the like) and CONNECT: which upgrade types a request may
//! use. The connection manager's `upgrade_configs` give the default per type; a route's
//! `RouteAction.upgrade_configs` override it for that route (Envoy's table: the route's
//! `enabled` wins when the route names the type; otherwise the connection manager's).
//! `connect_config` makes the router terminate CONNECT itself: TCP to the upstream host.

use envoy_api::pb::envoy::config::route::v3 as rt;
use envoy_api::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;

use crate::error::{ConfigErrors, FieldPath};

pub const SUPPORTED: &[(&str, &[&str])] = &[
    ("envoy.config.route.v3.RouteAction", &["upgrade_configs"]),
    (
        "envoy.config.route.v3.RouteAction.UpgradeConfig",
        &["upgrade_type", "enabled", "connect_config"],
    ),
    (
        "envoy.config.route.v3.RouteAction.UpgradeConfig.ConnectConfig",
        &[],
    ),
    ("envoy.config.route.v3.RouteMatch", &["connect_matcher"]),
    ("envoy.config.route.v3.RouteMatch.ConnectMatcher", &[]),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        &["upgrade_configs"],
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.UpgradeConfig",
        &["upgrade_type", "enabled", "filters"],
    ),
    (
        "envoy.config.core.v3.Http2ProtocolOptions",
        &["allow_connect"],
    ),
];

/// One upgrade type a connection manager or route names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeEntry {
    /// As configured; compared ignoring ASCII case (`CONNECT` for CONNECT requests).
    pub upgrade_type: Box<str>,
    pub enabled: bool,
    /// Route only: `connect_config` is set, the router terminates CONNECT (raw TCP to the
    /// upstream host) instead of forwarding the CONNECT request.
    pub terminate_connect: bool,
}

/// The connection manager's upgrade settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HcmUpgrades {
    pub configs: Box<[UpgradeEntry]>,
    /// `http2_protocol_options.allow_connect`: extended CONNECT (RFC 8441) is offered to
    /// HTTP/2 clients, so WebSocket can run over HTTP/2 streams.
    pub h2_allow_connect: bool,
}

/// Whether an upgrade of `upgrade_type` is allowed, Envoy's way: the route's entry for the
/// type decides when there is one; otherwise the connection manager's. `route` is `None`
/// for requests without a route or whose route does not forward (direct responses,
/// redirects).
pub fn allowed(hcm: &HcmUpgrades, route: Option<&[UpgradeEntry]>, upgrade_type: &str) -> bool {
    let find = |list: &[UpgradeEntry]| {
        list.iter()
            .find(|e| e.upgrade_type.eq_ignore_ascii_case(upgrade_type))
            .map(|e| e.enabled)
    };
    if let Some(enabled) = route.and_then(find) {
        return enabled;
    }
    find(&hcm.configs).unwrap_or(false)
}

/// Whether the route terminates CONNECT (an enabled `CONNECT` entry with `connect_config`).
pub fn terminates_connect(route: &[UpgradeEntry]) -> bool {
    route
        .iter()
        .any(|e| e.enabled && e.terminate_connect && e.upgrade_type.eq_ignore_ascii_case("CONNECT"))
}

fn check_type(t: &str, path: &FieldPath, errs: &mut ConfigErrors) -> bool {
    // protoc-gen-validate on the route's type: `min_len: 1`, a header value without
    // CR/LF/NUL.
    if t.is_empty() {
        errs.push(
            path.to_string(),
            "value length must be at least 1 characters",
        );
        return false;
    }
    if t.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        errs.push(path.to_string(), "must be a valid header value");
        return false;
    }
    true
}

/// Compiles `RouteAction.upgrade_configs`.
pub fn compile_route(
    list: &[rt::route_action::UpgradeConfig],
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Box<[UpgradeEntry]> {
    let mut out = Vec::with_capacity(list.len());
    for (i, u) in list.iter().enumerate() {
        let p = path.index(i);
        if !check_type(&u.upgrade_type, &p.field("upgrade_type"), errs) {
            continue;
        }
        let is_connect = u.upgrade_type.eq_ignore_ascii_case("CONNECT");
        if let Some(cc) = &u.connect_config {
            let cp = p.field("connect_config");
            if !is_connect {
                errs.push(
                    cp.to_string(),
                    format!(
                        "Non-CONNECT upgrade type {} has ConnectConfig",
                        u.upgrade_type
                    ),
                );
                continue;
            }
            if cc.allow_post {
                errs.push(
                    cp.field("allow_post").to_string(),
                    "is not supported by Strait yet",
                );
            }
        }
        // Envoy refuses a route that lists a type twice (the map is keyed by type).
        if out
            .iter()
            .any(|e: &UpgradeEntry| e.upgrade_type.eq_ignore_ascii_case(&u.upgrade_type))
        {
            errs.push(
                p.field("upgrade_type").to_string(),
                format!("Duplicate upgrade {}", u.upgrade_type),
            );
            continue;
        }
        out.push(UpgradeEntry {
            upgrade_type: u.upgrade_type.as_str().into(),
            enabled: u.enabled.as_ref().is_none_or(|v| v.value),
            terminate_connect: is_connect && u.connect_config.is_some(),
        });
    }
    out.into()
}

/// Compiles the connection manager's `upgrade_configs`; `allow_connect` is
/// `http2_protocol_options.allow_connect`.
pub fn compile_hcm(
    list: &[hcm::http_connection_manager::UpgradeConfig],
    allow_connect: bool,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> HcmUpgrades {
    let mut configs: Vec<UpgradeEntry> = Vec::with_capacity(list.len());
    for (i, u) in list.iter().enumerate() {
        // Unlike the route's, Envoy accepts any type here (an empty one included).
        let p = path.index(i);
        if !u.filters.is_empty() {
            errs.push(
                p.field("filters").to_string(),
                "upgrade filter chains are not supported by Strait yet (leave filters empty: the HTTP filter chain is used)",
            );
        }
        if configs
            .iter()
            .any(|e| e.upgrade_type.eq_ignore_ascii_case(&u.upgrade_type))
        {
            // Envoy: "Error: multiple upgrade configs with the same name".
            errs.push(
                p.field("upgrade_type").to_string(),
                format!(
                    "multiple upgrade configs with the same name: {:?}",
                    u.upgrade_type
                ),
            );
            continue;
        }
        configs.push(UpgradeEntry {
            upgrade_type: u.upgrade_type.as_str().into(),
            enabled: u.enabled.as_ref().is_none_or(|v| v.value),
            terminate_connect: false,
        });
    }
    HcmUpgrades {
        configs: configs.into(),
        h2_allow_connect: allow_connect,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(t: &str, enabled: bool) -> UpgradeEntry {
        UpgradeEntry {
            upgrade_type: t.into(),
            enabled,
            terminate_connect: false,
        }
    }

    #[test]
    fn envoy_enable_table() {
        let hcm_on = HcmUpgrades {
            configs: vec![e("websocket", true)].into(),
            h2_allow_connect: false,
        };
        let hcm_off = HcmUpgrades {
            configs: vec![e("websocket", false)].into(),
            h2_allow_connect: false,
        };
        let none = HcmUpgrades::default();
        let r_on = [e("WebSocket", true)];
        let r_off = [e("websocket", false)];
        let r_other = [e("foo", true)];
        assert!(allowed(&hcm_on, Some(&[]), "websocket"));
        assert!(allowed(&hcm_on, None, "WEBSOCKET"));
        assert!(!allowed(&hcm_on, Some(&r_off), "websocket"));
        assert!(allowed(&hcm_off, Some(&r_on), "websocket"));
        assert!(!allowed(&hcm_off, Some(&[]), "websocket"));
        assert!(allowed(&none, Some(&r_on), "websocket"));
        assert!(!allowed(&none, Some(&r_other), "websocket"));
        assert!(allowed(&hcm_on, Some(&r_other), "websocket"));
        assert!(!allowed(&none, None, "websocket"));
    }

    #[test]
    fn connect_termination() {
        let mut c = e("CONNECT", true);
        assert!(!terminates_connect(std::slice::from_ref(&c)));
        c.terminate_connect = true;
        assert!(terminates_connect(std::slice::from_ref(&c)));
        c.enabled = false;
        assert!(!terminates_connect(&[c]));
    }
}
