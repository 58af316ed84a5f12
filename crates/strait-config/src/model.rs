//! The compiled, immutable runtime model that workers read. Built once per config version
//! on the control thread, shared as `Arc`s; nothing here is parsed on the request path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use strait_accesslog::Formatter;

pub use crate::cluster::circuit::{CircuitBreakersSpec, RetryBudget, Thresholds};
pub use crate::cluster::discovery::{
    DiscoverySpec, DnsLookupFamily, DnsSpec, DnsTarget, OriginalDstSpec,
};
pub use crate::cluster::health::HealthCheckSpec;
pub use crate::cluster::lb::{LbPolicy, LbSpec};
pub use crate::cluster::locality::{CommonLbSpec, EdsHealthStatus};
pub use crate::cluster::outlier::OutlierSpec;
pub use crate::cluster::subset::{
    EndpointMetadata, MetadataMatch, MetadataValue, SelectorFallback, SubsetFallback,
    SubsetSelector, SubsetSpec,
};
pub use crate::route::{ClusterAction, PathMatcher, Route, RouteAction, RouteTable, VirtualHost};

/// A whole validated bootstrap, compiled.
#[derive(Debug)]
pub struct Config {
    pub node: NodeInfo,
    pub admin: Option<AdminSpec>,
    pub listeners: Vec<Arc<ListenerSpec>>,
    pub clusters: Vec<Arc<ClusterSpec>>,
    pub stats_flush_interval: Duration,
    /// The loaded bootstrap as Envoy JSON (snake_case), for `/config_dump`.
    pub bootstrap_json: serde_json::Value,
}

#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub id: String,
    pub cluster: String,
    pub zone: String,
}

#[derive(Debug)]
pub struct AdminSpec {
    pub address: SocketAddr,
    pub access_logs: Vec<AccessLogSpec>,
}

#[derive(Debug)]
pub struct ListenerSpec {
    pub name: String,
    pub address: SocketAddr,
    /// `listener.<stat_prefix or address>.` without the trailing dot.
    pub stat_prefix: String,
    pub reuse_port: bool,
    pub buffer_limit_bytes: u32,
    pub hcm: Arc<HcmSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Auto,
    Http1,
    Http2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerHeader {
    Overwrite,
    AppendIfAbsent,
    PassThrough,
}

#[derive(Debug)]
pub struct HcmSpec {
    pub stat_prefix: String,
    /// The listener's `per_connection_buffer_limit_bytes` (1 MiB by default): how much of
    /// a request body may be kept for a retry when the route sets no limit.
    pub buffer_limit_bytes: u32,
    pub codec: Codec,
    pub routes: Arc<RouteTable>,
    pub server_name: String,
    pub server_header: ServerHeader,
    pub use_remote_address: bool,
    pub xff_num_trusted_hops: u32,
    pub skip_xff_append: bool,
    pub generate_request_id: bool,
    pub preserve_external_request_id: bool,
    pub always_set_request_id_in_response: bool,
    pub max_request_headers_kb: u32,
    pub max_headers_count: u32,
    /// Connection idle timeout (`common_http_protocol_options.idle_timeout`, default 1 h).
    pub idle_timeout: Option<Duration>,
    pub stream_idle_timeout: Option<Duration>,
    pub request_timeout: Option<Duration>,
    pub drain_timeout: Duration,
    pub accept_http_10: bool,
    pub default_host_for_http_10: Option<String>,
    pub via: Option<String>,
    pub suppress_envoy_headers: bool,
    pub h2: H2Settings,
    pub access_logs: Vec<AccessLogSpec>,
    /// `upgrade_configs` and `http2_protocol_options.allow_connect`.
    pub upgrades: crate::route::upgrade::HcmUpgrades,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct H2Settings {
    pub max_concurrent_streams: Option<u32>,
    pub initial_stream_window_size: Option<u32>,
    pub initial_connection_window_size: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    Http2,
}

#[derive(Debug)]
pub struct ClusterSpec {
    pub name: String,
    pub connect_timeout: Duration,
    pub discovery: DiscoverySpec,
    pub lb: LbSpec,
    /// Priority levels, panic threshold, locality weighting (`common_lb_config`,
    /// `load_assignment.policy`).
    pub common_lb: CommonLbSpec,
    /// `lb_subset_config` with at least one selector.
    pub subset: Option<Arc<SubsetSpec>>,
    pub health_checks: Vec<HealthCheckSpec>,
    pub outlier: Option<OutlierSpec>,
    pub circuit_breakers: CircuitBreakersSpec,
    pub endpoints: Vec<EndpointSpec>,
    pub protocol: UpstreamProtocol,
    pub h2: H2Settings,
    pub idle_timeout: Option<Duration>,
    pub max_requests_per_connection: Option<u32>,
    /// `common_http_protocol_options.max_connection_duration`: an upstream connection is
    /// drained (no new requests, closed when idle) after this long.
    pub max_connection_duration: Option<Duration>,
    pub buffer_limit_bytes: u32,
}

#[derive(Debug, Clone)]
pub struct EndpointSpec {
    pub address: SocketAddr,
    pub weight: u32,
    pub hostname: String,
    /// Priority level of the endpoint's `LocalityLbEndpoints` (0 is the highest).
    pub priority: u32,
    pub locality: Arc<LocalitySpec>,
    /// The `load_balancing_weight` of the endpoint's `LocalityLbEndpoints` (0 when unset:
    /// such a locality gets no traffic under locality weighted load balancing).
    pub locality_weight: u32,
    /// `health_status` from EDS or the static `load_assignment`.
    pub health_status: EdsHealthStatus,
    /// The endpoint's `metadata` (`envoy.lb` places it in subsets).
    pub metadata: Arc<EndpointMetadata>,
}

impl EndpointSpec {
    /// An endpoint at `address` with Envoy's defaults: weight 1, priority 0, no locality,
    /// no metadata, health status unknown.
    pub fn at(address: SocketAddr) -> EndpointSpec {
        EndpointSpec {
            address,
            weight: 1,
            hostname: String::new(),
            priority: 0,
            locality: Arc::default(),
            locality_weight: 0,
            health_status: EdsHealthStatus::Unknown,
            metadata: Arc::default(),
        }
    }
}

/// Where an endpoint runs (`region`/`zone`/`sub_zone`); shared by the endpoints of one
/// `LocalityLbEndpoints`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct LocalitySpec {
    pub region: String,
    pub zone: String,
    pub sub_zone: String,
}

#[derive(Debug, Clone)]
pub enum AccessLogSink {
    File(String),
    Stdout,
    Stderr,
}

#[derive(Debug, Clone)]
pub struct AccessLogSpec {
    pub sink: AccessLogSink,
    pub format: Arc<Formatter>,
}

impl ClusterSpec {
    /// A STATIC HTTP/1.1 cluster with Envoy's defaults over `addresses` (weight 1 each):
    /// what unit tests of the layers above need.
    pub fn static_http1(name: &str, addresses: &[SocketAddr]) -> ClusterSpec {
        ClusterSpec {
            name: name.into(),
            connect_timeout: Duration::from_secs(5),
            discovery: DiscoverySpec::Static,
            lb: LbSpec::default(),
            common_lb: CommonLbSpec::default(),
            subset: None,
            health_checks: Vec::new(),
            outlier: None,
            circuit_breakers: CircuitBreakersSpec::default(),
            endpoints: addresses.iter().map(|a| EndpointSpec::at(*a)).collect(),
            protocol: UpstreamProtocol::Http1,
            h2: H2Settings::default(),
            idle_timeout: None,
            max_requests_per_connection: None,
            max_connection_duration: None,
            buffer_limit_bytes: 1 << 20,
        }
    }
}
