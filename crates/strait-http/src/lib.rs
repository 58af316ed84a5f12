//! The HTTP connection manager (Envoy's `envoy.filters.network.http_connection_manager`)
//! and the router filter.
//!
//! A request's life, in order: `conn` accepts a downstream connection and runs the codec
//! (HTTP/1.1, h2c or auto-detected); `hcm::handle` checks the request and picks the route;
//! `router` rewrites headers Envoy's way, picks a host, sends upstream through the worker's
//! pool and applies the route timeout; `body::ResponseBody` streams the answer back and,
//! when the stream ends, `finish` records stats and writes access logs.
//! Owns: request/response header semantics, local replies, HCM and router stats.
//! Does not own: sockets and workers (`strait-core`), pools and load balancing
//! (`strait-upstream`), config parsing (`strait-config`).

pub mod body;
pub mod conn;
pub mod finish;
pub mod hcm;
pub mod headers;
pub mod io;
pub mod local_reply;
pub mod router;
pub mod stats;

pub use conn::{ConnInfo, serve_connection};
pub use hcm::HttpConnectionManager;
