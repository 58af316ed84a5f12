//! The admin listener: Envoy's admin endpoints with Envoy's output formats.
//!
//! Runs on the control thread, never on a worker, so a large stats rendering cannot add
//! latency to traffic. Owns: endpoint routing and rendering of server/cluster/listener
//! state. Does not own: the stats store's formats (`strait-stats`) or lifecycle decisions
//! (it only signals them through `ServerState`).

pub mod clusters;
pub mod server;
pub mod state;

pub use server::{AdminContext, serve_admin};
pub use state::{ServerState, State};
