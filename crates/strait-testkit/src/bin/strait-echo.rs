//! `strait-echo --listen 127.0.0.1:PORT [--name NAME]`: the echo upstream for tests.
//!
//! Speaks HTTP/1.1 and h2c (prior knowledge) on one port and answers with a JSON description
//! of each request (see `strait_testkit::echo`). Prints `listening on ADDR` once bound.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

const USAGE: &str = "usage: strait-echo --listen 127.0.0.1:PORT [--name NAME]";

fn main() -> ExitCode {
    let mut listen: Option<SocketAddr> = None;
    let mut name = String::from("echo");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || inline.clone().or_else(|| args.next());
        match flag.as_str() {
            "--listen" | "-l" => match value().and_then(|v| v.parse().ok()) {
                Some(a) => listen = Some(a),
                None => return usage_error("--listen needs an address like 127.0.0.1:8080"),
            },
            "--name" | "-n" => match value() {
                Some(v) => name = v,
                None => return usage_error("--name needs a value"),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return usage_error(&format!("unknown argument {other:?}")),
        }
    }
    let Some(listen) = listen else {
        return usage_error("--listen is required");
    };

    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("strait-echo: building runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("strait-echo: bind {listen}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let addr = listener.local_addr().unwrap_or(listen);
        println!("listening on {addr}");
        let _ = std::io::stdout().flush();
        strait_testkit::echo::serve(listener, Arc::from(name.as_str()), async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
        ExitCode::SUCCESS
    })
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("strait-echo: {msg}\n{USAGE}");
    ExitCode::from(2)
}
