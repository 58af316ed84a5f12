//! `strait`: the Envoy-compatible proxy binary. Parses Envoy's command line, loads the
//! bootstrap, and runs the server (or only validates, with `--mode validate`).

mod cli;
mod logging;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use strait_config::{CompileOptions, Source};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // clap prints "unexpected argument" with a hint; exit 1 like Envoy on bad flags.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if cli.version {
        println!("strait  version: {VERSION}/Clean/RELEASE/rustls");
        return ExitCode::SUCCESS;
    }
    let level = match logging::level_filter(&cli.log_level) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let format = cli.log_format.as_deref().unwrap_or(logging::DEFAULT_FORMAT);
    if let Err(e) = logging::init(level, format, cli.log_path.as_deref()) {
        eprintln!("{e}");
        return ExitCode::from(1);
    }

    let src = Source {
        path: cli.config_path.as_deref(),
        yaml: cli.config_yaml.as_deref(),
    };
    let opts = CompileOptions {
        service_cluster: cli.service_cluster.clone(),
        service_node: cli.service_node.clone(),
        service_zone: cli.service_zone.clone(),
    };
    let config = match strait_config::load_bootstrap(&src, &opts) {
        Ok(c) => c,
        Err(errs) => {
            let name = cli
                .config_path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "--config-yaml".into());
            eprintln!(
                "error: invalid configuration '{name}': {} error(s)",
                errs.0.len()
            );
            for e in &errs.0 {
                eprintln!("  {e}");
            }
            return ExitCode::from(1);
        }
    };
    match cli.mode {
        cli::Mode::Validate => {
            let name = cli
                .config_path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "--config-yaml".into());
            println!("configuration '{name}' OK");
            return ExitCode::SUCCESS;
        }
        cli::Mode::InitOnly | cli::Mode::Serve => {}
    }

    let concurrency = cli.concurrency.filter(|c| *c > 0).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let command_line = serde_json::json!({
        "base_id": cli.base_id.to_string(),
        "concurrency": concurrency,
        "config_path": cli.config_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        "config_yaml": cli.config_yaml.clone().unwrap_or_default(),
        "log_level": cli.log_level,
        "log_format": format,
        "service_cluster": cli.service_cluster.clone().unwrap_or_default(),
        "service_node": cli.service_node.clone().unwrap_or_default(),
        "service_zone": cli.service_zone.clone().unwrap_or_default(),
        "drain_time": format!("{}s", cli.drain_time_s),
        "drain_strategy": cli.drain_strategy.to_ascii_uppercase(),
        "parent_shutdown_time": format!("{}s", cli.parent_shutdown_time_s),
        "restart_epoch": cli.restart_epoch,
        "mode": format!("{:?}", cli.mode).to_ascii_uppercase(),
        "disable_hot_restart": true,
    });
    if cli.mode == cli::Mode::InitOnly {
        return ExitCode::SUCCESS;
    }
    let server_opts = strait_core::ServerOptions {
        concurrency,
        drain_time: Duration::from_secs(cli.drain_time_s),
        version: format!("{VERSION}/Clean/RELEASE/rustls"),
        command_line,
    };
    match strait_core::run(config, server_opts) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
