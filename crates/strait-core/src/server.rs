//! Start, serve, drain, exit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use strait_admin::{AdminContext, ServerState, State};
use strait_config::Config;
use strait_http::HttpConnectionManager;
use strait_http::stats::ListenerStats;
use strait_stats::Store;
use strait_upstream::ClusterManager;
use tokio::sync::watch;

use crate::listener::bind;

#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub concurrency: usize,
    pub drain_time: Duration,
    pub version: String,
    pub command_line: serde_json::Value,
}

/// One listener as every worker sees it.
struct ListenerRuntime {
    name: String,
    address: SocketAddr,
    hcm: Arc<HttpConnectionManager>,
    stats: Arc<ListenerStats>,
    /// One socket per worker (SO_REUSEPORT), or one shared socket.
    sockets: Vec<std::net::TcpListener>,
}

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// Runs the server until SIGTERM/SIGINT or `/quitquitquit`, then drains. Returns the exit
/// code.
pub fn run(config: Config, opts: ServerOptions) -> Result<i32, String> {
    let workers = opts.concurrency.max(1);
    let store = Store::new(workers + 1);
    let config = Arc::new(config);
    let clusters = Arc::new(ClusterManager::new(&config, &store, workers + 1));
    let state = Arc::new(ServerState::default());

    // Bind everything first: a bad address fails the start, never half-serves.
    let mut listeners = Vec::new();
    for l in &config.listeners {
        let hcm = HttpConnectionManager::new(l.hcm.clone(), clusters.clone(), &store)
            .map_err(|e| format!("listener {}: cannot open access log: {e}", l.name))?;
        let n = if l.reuse_port { workers } else { 1 };
        let mut sockets = Vec::with_capacity(n);
        for _ in 0..n {
            let s = bind(l.address, l.reuse_port, 1024)
                .map_err(|e| format!("listener {}: cannot bind {}: {e}", l.name, l.address))?;
            sockets.push(s);
        }
        listeners.push(ListenerRuntime {
            name: l.name.clone(),
            address: l.address,
            hcm: Arc::new(hcm),
            stats: Arc::new(ListenerStats::new(&store, &l.stat_prefix)),
            sockets,
        });
    }
    let admin_logs = match &config.admin {
        Some(a) => strait_http::hcm::open_access_logs(&a.access_logs)
            .map_err(|e| format!("admin: cannot open an access log: {e}"))?,
        None => Vec::new(),
    };
    let admin_socket = match &config.admin {
        Some(a) => Some(
            bind(a.address, false, 128)
                .map_err(|e| format!("admin: cannot bind {}: {e}", a.address))?,
        ),
        None => None,
    };
    // Port 0 listeners get their real address for /listeners.
    let listener_addrs: Vec<(String, SocketAddr)> = listeners
        .iter()
        .map(|l| {
            (
                l.name.clone(),
                l.sockets
                    .first()
                    .and_then(|s| s.local_addr().ok())
                    .unwrap_or(l.address),
            )
        })
        .collect();

    let (drain_tx, drain_rx) = watch::channel(false);
    // Workers accept once initialization is done (first health checks, as Envoy waits).
    let (ready_tx, ready_rx) = watch::channel(false);
    let active_conns = Arc::new(AtomicUsize::new(0));

    // Workers.
    let mut per_worker: Vec<Vec<WorkerSocket>> = (0..workers).map(|_| Vec::new()).collect();
    for l in listeners {
        let shared = l.sockets.len() == 1 && workers > 1;
        for (i, s) in l.sockets.into_iter().enumerate() {
            if shared {
                // One socket accepted by every worker.
                for w in per_worker.iter_mut() {
                    let dup = s
                        .try_clone()
                        .map_err(|e| format!("listener {}: {e}", l.name))?;
                    w.push((dup, l.hcm.clone(), l.stats.clone()));
                }
                break;
            }
            per_worker[i].push((s, l.hcm.clone(), l.stats.clone()));
        }
        let _ = l.address;
    }
    let mut handles = Vec::new();
    if std::env::var("STRAIT_RUNTIME").is_ok_and(|v| v == "multi_thread") {
        // The alternative kept for measurement (docs/design/threading.md): one work-stealing
        // runtime with N threads serving every listener socket.
        let socks: Vec<WorkerSocket> = per_worker.into_iter().flatten().collect();
        let drain = drain_rx.clone();
        let active = active_conns.clone();
        let ready = ready_rx.clone();
        let h = thread::Builder::new()
            .name("strait-wrk".into())
            .spawn(move || shared_runtime_main(workers, socks, ready, drain, active))
            .map_err(|e| format!("cannot start worker thread: {e}"))?;
        handles.push(h);
        per_worker = Vec::new();
    }
    for (w, socks) in per_worker.into_iter().enumerate() {
        let drain = drain_rx.clone();
        let active = active_conns.clone();
        let ready = ready_rx.clone();
        let h = thread::Builder::new()
            .name(format!("strait-wrk:{w}"))
            .spawn(move || worker_main(w, socks, ready, drain, active))
            .map_err(|e| format!("cannot start worker thread: {e}"))?;
        handles.push(h);
    }

    // Control thread work (admin, stats upkeep, signals) runs on this thread's runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the control runtime: {e}"))?;
    let code = rt.block_on(async {
        if let Some(sock) = admin_socket {
            match tokio::net::TcpListener::from_std(sock) {
                Ok(l) => {
                    let ctx = Arc::new(AdminContext {
                        store: store.clone(),
                        state: state.clone(),
                        config: config.clone(),
                        clusters: clusters.clone(),
                        listeners: listener_addrs.clone(),
                        version: opts.version.clone(),
                        command_line: opts.command_line.clone(),
                        access_logs: admin_logs.clone(),
                    });
                    tokio::spawn(strait_admin::serve_admin(l, ctx));
                }
                Err(e) => return Err(format!("admin: {e}")),
            }
        }
        clusters.start_control_tasks();
        tokio::spawn(stats_upkeep(
            store.clone(),
            state.clone(),
            config.stats_flush_interval,
            workers,
        ));
        // Envoy initializes clusters before it serves: with active health checking, until
        // every host has had its first check (until then `/ready` says PRE_INITIALIZING).
        state.set_state(State::PreInitializing);
        for c in &clusters.order {
            c.initialized().await;
            strait_upstream::health::initialized(c).await;
        }
        let _ = ready_tx.send(true);
        state.set_state(State::Live);
        tracing::info!(
            "strait is live: {} listener(s), {} worker(s)",
            listener_addrs.len(),
            workers
        );

        wait_for_shutdown(&state).await;
        tracing::info!("shutting down: draining for up to {:?}", opts.drain_time);
        state.set_state(State::Draining);
        let _ = drain_tx.send(true);
        let deadline = Instant::now() + opts.drain_time;
        while active_conns.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(0)
    })?;
    // Workers exit once their connections are done or the drain time has passed; don't
    // wait on stragglers past it.
    drop(rt);
    if let Err(e) = strait_accesslog::flush_all() {
        eprintln!("error: flushing access logs: {e}");
    }
    Ok(code)
}

async fn wait_for_shutdown(state: &ServerState) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                    _ = state.quit.notified() => {}
                }
            }
            _ => state.quit.notified().await,
        }
    }
    #[cfg(not(unix))]
    state.quit.notified().await;
}

/// Server-level gauges, refreshed off the workers.
async fn stats_upkeep(store: Store, state: Arc<ServerState>, interval: Duration, workers: usize) {
    let live = store.gauge("server.live");
    let uptime = store.gauge("server.uptime");
    let mem_alloc = store.gauge("server.memory_allocated");
    let mem_heap = store.gauge("server.memory_heap_size");
    let concurrency = store.gauge("server.concurrency");
    let state_g = store.gauge("server.state");
    concurrency.set(workers as i64);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut since_flush = Duration::ZERO;
    loop {
        tick.tick().await;
        let s = state.state();
        live.set(i64::from(s == State::Live));
        state_g.set(s as i64);
        uptime.set(state.started.elapsed().as_secs() as i64);
        let (a, h) = strait_admin::server::memory();
        mem_alloc.set(a as i64);
        mem_heap.set(h as i64);
        since_flush += Duration::from_secs(1);
        if since_flush >= interval {
            since_flush = Duration::ZERO;
            store.flush_interval();
        }
    }
}

type WorkerSocket = (
    std::net::TcpListener,
    Arc<HttpConnectionManager>,
    Arc<ListenerStats>,
);

/// `STRAIT_RUNTIME=multi_thread`: every listener on one multi-thread runtime.
fn shared_runtime_main(
    workers: usize,
    sockets: Vec<WorkerSocket>,
    ready: watch::Receiver<bool>,
    drain: watch::Receiver<bool>,
    active: Arc<AtomicUsize>,
) {
    let next_slot = Arc::new(AtomicUsize::new(0));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .on_thread_start(move || {
            let n = next_slot.fetch_add(1, Ordering::Relaxed);
            strait_stats::set_thread_slot(1 + n % workers);
        })
        .build();
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the worker runtime: {e}");
            return;
        }
    };
    rt.block_on(serve_sockets(0, sockets, ready, drain, active));
}

fn worker_main(
    index: usize,
    sockets: Vec<WorkerSocket>,
    ready: watch::Receiver<bool>,
    drain: watch::Receiver<bool>,
    active: Arc<AtomicUsize>,
) {
    strait_stats::set_thread_slot(index + 1);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("worker {index}: cannot start its runtime: {e}");
            return;
        }
    };
    rt.block_on(serve_sockets(index, sockets, ready, drain, active));
}

/// Accepts on `sockets` until draining starts, then waits for this worker's connections.
async fn serve_sockets(
    index: usize,
    sockets: Vec<WorkerSocket>,
    mut ready: watch::Receiver<bool>,
    drain: watch::Receiver<bool>,
    active: Arc<AtomicUsize>,
) {
    // Connections wait in the listen backlog until the server is initialized.
    if ready.wait_for(|r| *r).await.is_err() {
        return;
    }
    let mut accept_tasks = Vec::new();
    for (sock, hcm, stats) in sockets {
        let listener = match tokio::net::TcpListener::from_std(sock) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("worker {index}: {e}");
                continue;
            }
        };
        let drain = drain.clone();
        let active = active.clone();
        accept_tasks.push(tokio::spawn(accept_loop(
            listener, hcm, stats, drain, active,
        )));
    }
    // Stop accepting when draining; connections finish on their own.
    let mut d = drain.clone();
    while !*d.borrow() {
        if d.changed().await.is_err() {
            break;
        }
    }
    for t in &accept_tasks {
        t.abort();
    }
    while active.load(Ordering::Acquire) > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    hcm: Arc<HttpConnectionManager>,
    stats: Arc<ListenerStats>,
    drain: watch::Receiver<bool>,
    active: Arc<AtomicUsize>,
) {
    let local = listener.local_addr().ok();
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let local = stream.local_addr().ok().or(local).unwrap_or(remote);
        let info =
            strait_http::ConnInfo::new(remote, local, NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed));
        active.fetch_add(1, Ordering::AcqRel);
        let hcm = hcm.clone();
        let stats = stats.clone();
        let drain = drain.clone();
        let active = active.clone();
        tokio::spawn(async move {
            strait_http::serve_connection(stream, info, hcm, stats, drain).await;
            active.fetch_sub(1, Ordering::AcqRel);
        });
    }
}
