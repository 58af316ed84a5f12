//! Test helpers for Strait.
//!
//! * [`ports`]: free loopback port allocation.
//! * [`process`]: a [`Process`] guard that spawns a binary, logs its output to a file and
//!   stops it on drop, plus [`wait_for_port`].
//! * [`echo`]: the echo upstream (`strait-echo` binary and in-process [`EchoServer`]).
//! * [`raw`]: a tiny blocking HTTP/1 client over a `TcpStream` for malformed-input tests.
//! * [`dns`]: a tiny test DNS server ([`TestDns`]) whose answers and TTL a test controls.
//! * [`client`]: an HTTP/1.1 and h2c (prior knowledge) client built on hyper.
//! * [`compat`]: the Envoy compatibility harness that runs `compat/cases/*.yaml` against a
//!   proxy binary (Strait or real Envoy).

pub mod client;
pub mod compat;
pub mod dns;
pub mod echo;
pub mod ports;
pub mod process;
pub mod raw;

pub use client::{HttpRequest, HttpResponse};
pub use dns::TestDns;
pub use echo::{BackgroundEcho, EchoHandle, EchoServer};
pub use ports::free_port;
pub use process::{Process, wait_for_port};
pub use raw::{RawConn, RawResponse};

use std::path::PathBuf;

/// The workspace root (the directory holding the root `Cargo.toml` and `compat/`).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .unwrap_or(here)
}
