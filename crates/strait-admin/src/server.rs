//! Admin HTTP server and endpoint routing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use strait_config::Config;
use strait_stats::{StatsQuery, Store};
use strait_upstream::ClusterManager;
use tokio::net::TcpListener;

use crate::state::{ServerState, State};

/// Everything the admin endpoints read.
#[derive(Debug)]
pub struct AdminContext {
    pub store: Store,
    pub state: Arc<ServerState>,
    pub config: Arc<Config>,
    pub clusters: Arc<ClusterManager>,
    pub listeners: Vec<(String, SocketAddr)>,
    pub version: String,
    /// `command_line_options` for `/server_info`, as Envoy prints them.
    pub command_line: serde_json::Value,
    /// `admin.access_log`: every admin request is logged like a proxied one.
    pub access_logs: Vec<(
        Arc<strait_accesslog::AccessLogSink>,
        Arc<strait_accesslog::Formatter>,
    )>,
}

type Resp = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    h.insert(
        "cache-control",
        http::HeaderValue::from_static("no-cache, max-age=0"),
    );
    h.insert(
        "x-content-type-options",
        http::HeaderValue::from_static("nosniff"),
    );
    h.insert(header::SERVER, http::HeaderValue::from_static("envoy"));
    r
}

const TEXT: &str = "text/plain; charset=UTF-8";
const JSON: &str = "application/json";

/// Serves the admin API on `listener` until the task is dropped.
pub async fn serve_admin(listener: TcpListener, ctx: Arc<AdminContext>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let local = stream.local_addr().ok();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let ctx = ctx.clone();
                async move {
                    let start = std::time::Instant::now();
                    let start_time = std::time::SystemTime::now();
                    let method = req.method().as_str().to_string();
                    let path = req
                        .uri()
                        .path_and_query()
                        .map(|p| p.as_str().to_string())
                        .unwrap_or_default();
                    let headers = (!ctx.access_logs.is_empty()).then(|| req.headers().clone());
                    let resp = handle(&ctx, req);
                    if let Some(headers) = headers {
                        let ctx_log = strait_accesslog::LogContext {
                            start_time,
                            method: Some(&method),
                            path: Some(&path),
                            request_headers: Some(&headers),
                            response_headers: Some(resp.headers()),
                            protocol: Some("HTTP/1.1"),
                            response_code: resp.status().as_u16(),
                            bytes_sent: http_body::Body::size_hint(resp.body())
                                .exact()
                                .unwrap_or(0),
                            duration: Some(start.elapsed()),
                            downstream_remote_address: Some(peer),
                            downstream_direct_remote_address: Some(peer),
                            downstream_local_address: local,
                            ..Default::default()
                        };
                        let mut line = Vec::with_capacity(256);
                        for (sink, fmt) in &ctx.access_logs {
                            line.clear();
                            fmt.render(&ctx_log, &mut line);
                            sink.write(&line);
                        }
                    }
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Mutating endpoints must be POSTed, as in Envoy.
fn needs_post(path: &str) -> bool {
    matches!(
        path,
        "/quitquitquit"
            | "/healthcheck/fail"
            | "/healthcheck/ok"
            | "/reset_counters"
            | "/drain_listeners"
            | "/logging"
            | "/cpuprofiler"
            | "/heapprofiler"
            | "/runtime_modify"
    )
}

pub fn handle(ctx: &AdminContext, req: Request<Incoming>) -> Resp {
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    if needs_post(path) && req.method() != Method::POST {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            format!("Method {} not allowed, POST required.", req.method()),
        );
    }
    let format_json = query_param(query, "format").is_some_and(|f| f == "json");
    match path {
        "/ready" => {
            let s = ctx.state.state();
            let code = if s == State::Live {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            reply(code, TEXT, format!("{}\n", s.as_str()))
        }
        "/server_info" => reply(StatusCode::OK, JSON, server_info(ctx)),
        "/stats" => match StatsQuery::from_query_string(query) {
            Ok(q) if format_json => reply(StatusCode::OK, JSON, ctx.store.render_json(&q)),
            Ok(q) if query_param(query, "format").is_some_and(|f| f == "prometheus") => {
                reply(StatusCode::OK, TEXT, ctx.store.render_prometheus(&q))
            }
            Ok(q) => reply(StatusCode::OK, TEXT, ctx.store.render_text(&q)),
            Err(e) => reply(StatusCode::BAD_REQUEST, TEXT, format!("{e}\n")),
        },
        "/stats/prometheus" => match StatsQuery::from_query_string(query) {
            Ok(q) => reply(StatusCode::OK, TEXT, ctx.store.render_prometheus(&q)),
            Err(e) => reply(StatusCode::BAD_REQUEST, TEXT, format!("{e}\n")),
        },
        "/clusters" => {
            if format_json {
                reply(
                    StatusCode::OK,
                    JSON,
                    crate::clusters::render_json(&ctx.clusters),
                )
            } else {
                reply(
                    StatusCode::OK,
                    TEXT,
                    crate::clusters::render_text(&ctx.clusters),
                )
            }
        }
        "/listeners" => {
            if format_json {
                let ls: Vec<_> = ctx
                    .listeners
                    .iter()
                    .map(|(n, a)| json!({"name": n, "local_address": {"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}}}))
                    .collect();
                reply(
                    StatusCode::OK,
                    JSON,
                    json!({"listener_statuses": ls}).to_string(),
                )
            } else {
                let mut out = String::new();
                for (n, a) in &ctx.listeners {
                    out.push_str(&format!("{n}::{a}\n"));
                }
                reply(StatusCode::OK, TEXT, out)
            }
        }
        "/config_dump" => reply(StatusCode::OK, JSON, config_dump(ctx)),
        "/memory" => {
            let m = crate::server::memory();
            reply(
                StatusCode::OK,
                JSON,
                serde_json::to_string_pretty(&json!({
                    "allocated": m.0.to_string(),
                    "heap_size": m.1.to_string(),
                    "pageheap_unmapped": "0",
                    "pageheap_free": "0",
                    "total_thread_cache": "0",
                    "total_physical_bytes": m.1.to_string(),
                }))
                .unwrap_or_default(),
            )
        }
        "/quitquitquit" => {
            ctx.state.quit.notify_one();
            reply(StatusCode::OK, TEXT, "OK\n")
        }
        "/healthcheck/fail" => {
            ctx.state.set_healthcheck_failed(true);
            reply(StatusCode::OK, TEXT, "OK\n")
        }
        "/healthcheck/ok" => {
            ctx.state.set_healthcheck_failed(false);
            reply(StatusCode::OK, TEXT, "OK\n")
        }
        "/reset_counters" => {
            ctx.store.reset_counters();
            reply(StatusCode::OK, TEXT, "OK\n")
        }
        "/" | "/help" => reply(StatusCode::OK, TEXT, HELP),
        _ => reply(
            StatusCode::NOT_FOUND,
            TEXT,
            format!("invalid path. admin commands are:\n{HELP}"),
        ),
    }
}

const HELP: &str = "admin commands are:
  /: Admin home page
  /clusters: upstream cluster status
  /config_dump: dump current Envoy configs
  /healthcheck/fail (POST): cause the server to fail health checks
  /healthcheck/ok (POST): cause the server to pass health checks
  /help: print out list of admin commands
  /listeners: print listener info
  /memory: print current allocation/heap usage
  /quitquitquit (POST): exit the server
  /ready: print server state, return 200 if LIVE, otherwise return 503
  /reset_counters (POST): reset all counters to zero
  /server_info: print server version/status information
  /stats: print server stats
  /stats/prometheus: print server stats in prometheus format
";

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        let mut it = kv.splitn(2, '=');
        (it.next() == Some(key)).then(|| it.next().unwrap_or(""))
    })
}

fn fmt_secs(s: u64) -> String {
    format!("{s}s")
}

fn server_info(ctx: &AdminContext) -> String {
    let up = ctx.state.started.elapsed().as_secs();
    let n = &ctx.config.node;
    let v = json!({
        "version": ctx.version,
        "state": ctx.state.state().as_str(),
        "hot_restart_version": "disabled",
        "command_line_options": ctx.command_line,
        "node": {"id": n.id, "cluster": n.cluster, "locality": {"zone": n.zone}, "user_agent_name": "strait"},
        "uptime_current_epoch": fmt_secs(up),
        "uptime_all_epochs": fmt_secs(up),
    });
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

fn config_dump(ctx: &AdminContext) -> String {
    let b = &ctx.config.bootstrap_json;
    let now = httpdate_like_rfc3339();
    let sr = b.get("static_resources");
    let listeners: Vec<_> = sr
        .and_then(|s| s.get("listeners"))
        .and_then(|l| l.as_array())
        .map(|ls| ls.iter().map(|l| json!({"listener": with_type(l, "envoy.config.listener.v3.Listener"), "last_updated": now})).collect())
        .unwrap_or_default();
    let clusters: Vec<_> = sr
        .and_then(|s| s.get("clusters"))
        .and_then(|l| l.as_array())
        .map(|cs| cs.iter().map(|c| json!({"cluster": with_type(c, "envoy.config.cluster.v3.Cluster"), "last_updated": now})).collect())
        .unwrap_or_default();
    let mut routes = Vec::new();
    for l in sr
        .and_then(|s| s.get("listeners"))
        .and_then(|l| l.as_array())
        .into_iter()
        .flatten()
    {
        for fc in l
            .get("filter_chains")
            .and_then(|f| f.as_array())
            .into_iter()
            .flatten()
        {
            for f in fc
                .get("filters")
                .and_then(|f| f.as_array())
                .into_iter()
                .flatten()
            {
                if let Some(rc) = f.get("typed_config").and_then(|t| t.get("route_config")) {
                    routes.push(json!({"route_config": with_type(rc, "envoy.config.route.v3.RouteConfiguration"), "last_updated": now}));
                }
            }
        }
    }
    let dump = json!({
        "configs": [
            {"@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump", "bootstrap": b, "last_updated": now},
            {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump", "static_clusters": clusters},
            {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump", "static_listeners": listeners},
            {"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump", "static_route_configs": routes},
        ]
    });
    serde_json::to_string_pretty(&dump).unwrap_or_default()
}

fn with_type(v: &serde_json::Value, ty: &str) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("@type".into(), json!(format!("type.googleapis.com/{ty}")));
    if let Some(o) = v.as_object() {
        m.extend(o.clone());
    }
    serde_json::Value::Object(m)
}

/// The current time as RFC 3339 (UTC, seconds), as Envoy prints `last_updated`.
fn httpdate_like_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (bytes allocated, heap size) from the C allocator.
pub fn memory() -> (u64, u64) {
    // SAFETY: mallinfo2 only reads allocator statistics.
    let mi = unsafe { libc_mallinfo2() };
    (mi.0, mi.1)
}

#[repr(C)]
struct MallInfo2 {
    arena: usize,
    ordblks: usize,
    smblks: usize,
    hblks: usize,
    hblkhd: usize,
    usmblks: usize,
    fsmblks: usize,
    uordblks: usize,
    fordblks: usize,
    keepcost: usize,
}

unsafe extern "C" {
    fn mallinfo2() -> MallInfo2;
}

unsafe fn libc_mallinfo2() -> (u64, u64) {
    // SAFETY: glibc >= 2.33 provides mallinfo2; it has no preconditions.
    let m = unsafe { mallinfo2() };
    ((m.uordblks + m.hblkhd) as u64, (m.arena + m.hblkhd) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_779), (2026, 11, 22));
    }

    #[test]
    fn query_params() {
        assert_eq!(query_param("a=1&format=json", "format"), Some("json"));
        assert_eq!(query_param("usedonly", "usedonly"), Some(""));
        assert_eq!(query_param("", "format"), None);
    }

    #[test]
    fn memory_is_reported() {
        let (alloc, heap) = memory();
        assert!(alloc > 0 && heap > 0);
    }
}
