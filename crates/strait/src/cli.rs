//! Envoy's command line, as `strait` accepts it.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Load the config and serve (default).
    Serve,
    /// Load and validate the config, then exit: 0 if valid, 1 with every error otherwise.
    Validate,
    /// Load the config, initialise everything, and exit without serving.
    #[value(name = "init_only")]
    InitOnly,
}

/// Strait: an Envoy-compatible proxy. Takes Envoy's flags and Envoy's v3 bootstrap.
#[derive(Debug, Parser)]
#[command(name = "strait", disable_version_flag = true)]
pub struct Cli {
    /// Path to the bootstrap (YAML or JSON; `.json` is JSON, anything else YAML).
    #[arg(short = 'c', long = "config-path")]
    pub config_path: Option<PathBuf>,

    /// Bootstrap YAML merged over the file given by -c (proto merge: lists are appended).
    #[arg(long = "config-yaml")]
    pub config_yaml: Option<String>,

    #[arg(long = "mode", value_enum, default_value = "serve")]
    pub mode: Mode,

    /// Number of worker threads (default: number of cores).
    #[arg(long = "concurrency")]
    pub concurrency: Option<usize>,

    /// Log level: trace, debug, info, warning (warn), error, critical, off.
    #[arg(short = 'l', long = "log-level", default_value = "info")]
    pub log_level: String,

    /// spdlog-style log line format, Envoy's default when absent.
    #[arg(long = "log-format")]
    pub log_format: Option<String>,

    /// Log to this file instead of stderr.
    #[arg(long = "log-path")]
    pub log_path: Option<PathBuf>,

    /// Per-component log levels (`upstream:debug,connection:trace`): accepted, applied as
    /// the global level's refinement where the component exists in Strait.
    #[arg(long = "component-log-level")]
    pub component_log_level: Option<String>,

    #[arg(long = "service-cluster")]
    pub service_cluster: Option<String>,

    #[arg(long = "service-node")]
    pub service_node: Option<String>,

    #[arg(long = "service-zone")]
    pub service_zone: Option<String>,

    /// Seconds to let in-flight requests finish on shutdown.
    #[arg(long = "drain-time-s", default_value_t = 600)]
    pub drain_time_s: u64,

    /// Envoy's drain strategy (`gradual` or `immediate`).
    #[arg(long = "drain-strategy", default_value = "gradual")]
    pub drain_strategy: String,

    /// Hot restart options. Strait does not use shared memory; these are accepted so
    /// Envoy command lines work unchanged.
    #[arg(long = "base-id", default_value_t = 0)]
    pub base_id: u32,
    #[arg(long = "use-dynamic-base-id")]
    pub use_dynamic_base_id: bool,
    #[arg(long = "restart-epoch", default_value_t = 0)]
    pub restart_epoch: u32,
    #[arg(long = "disable-hot-restart")]
    pub disable_hot_restart: bool,
    #[arg(long = "parent-shutdown-time-s", default_value_t = 900)]
    pub parent_shutdown_time_s: u64,

    /// Access log flush interval (Envoy's flag; Strait flushes every second or 64 KiB).
    #[arg(long = "file-flush-interval-msec")]
    pub file_flush_interval_msec: Option<u64>,

    /// Print the version and exit.
    #[arg(long = "version")]
    pub version: bool,
}
