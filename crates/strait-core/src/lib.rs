//! The server: binds listeners, runs N worker threads (one current-thread Tokio runtime
//! each, `SO_REUSEPORT` sockets so the kernel spreads connections), runs the admin API and
//! stats upkeep on a separate control thread, and drains on SIGTERM or `/quitquitquit`.
//!
//! Owns: threads, sockets, lifecycle. Does not own: what a connection speaks
//! (`strait-http`) or where requests go (`strait-upstream`).

pub mod listener;
pub mod server;

pub use server::{ServerOptions, run};
