//! The cluster manager: clusters and their hosts, load balancing, and per-worker upstream
//! connection pools for HTTP/1.1 and HTTP/2.
//!
//! Owns: host selection, connecting (with `connect_timeout`), pooling and reusing upstream
//! connections, cluster and host stats. Does not own: what a request looks like (the HTTP
//! connection manager builds it) or retries (the router decides).

pub mod body;
pub mod circuit;
pub mod cluster;
pub mod counted;
pub mod discovery;
pub mod health;
pub mod host;
pub mod lb;
pub mod outlier;
pub mod pool;
pub mod shadow;
pub mod upgrade;

pub use body::{RequestBody, StreamCounters};
pub use circuit::Priority;
pub use cluster::{Cluster, ClusterManager};
pub use host::{Host, HostHealth, health_flag};
pub use lb::{HostSnapshot, LbContext};
pub use pool::{UpstreamError, UpstreamResponse, send_request};
