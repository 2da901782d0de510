//! The clawgate gateway: a thin tokio + axum process serving health, status, the usage API and
//! the dashboard, with the usage worker supervised beside it.
//!
//! Architecture invariant: nothing here parses a transcript or blocks the runtime. Usage answers
//! come from the worker over ipc-proto as ready-made JSON; health is answered from this process
//! alone, whatever the worker is doing.

pub mod agents;
pub mod api;
pub mod auth;
pub mod budget;
pub mod cache;
pub mod cli_status;
pub mod config;
pub mod conns;
mod dashboard;
pub mod device;
pub mod error;
mod http;
pub mod lag;
pub mod limits;
pub mod metrics;
pub mod openclaw_config;
pub mod params;
pub mod relay;
pub mod report;
pub mod sched;
pub mod sessions_list;
pub mod shell;
pub mod status;
pub mod systemd;
pub mod ws;

use std::{ffi::OsString, future::Future, sync::Arc, time::Instant};

use anyhow::Context as _;
use axum::{
    Router,
    extract::DefaultBodyLimit,
    middleware,
    routing::{get, post},
};
pub use config::Config;
use supervisor::SupervisorHandle;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub supervisor: SupervisorHandle,
    pub started_at: Instant,
    /// Single-flight usage cache and job queue.
    pub cache: Arc<cache::UsageCache>,
    /// Runtime lag and memory pressure.
    pub lag: lag::LagMonitor,
    pub metrics: Arc<metrics::Metrics>,
    /// WebSocket limits, boot id and the bulk-send gate.
    pub ws: Arc<ws::WsShared>,
    /// The token, the Host/Origin allowlist and the failed-auth limiter (`auth`).
    pub auth: Arc<auth::Auth>,
    /// Open connections and their cap (`conns`).
    pub conns: Arc<conns::ConnLimit>,
    /// The Control UI's shell methods' snapshot (`shell`).
    pub shell: Arc<shell::Shell>,
    /// Shield mode: the OpenClaw gateway behind clawgate (`relay`); `None` otherwise.
    pub relay: Option<Arc<relay::Relay>>,
    /// Cost budgets and their spend, when any is configured (`budget`).
    pub budgets: Option<Arc<budget::Budgets>>,
    /// The agents of the state dir, looked at every few seconds (`agents`).
    pub agents: Arc<agents::AgentsWatch>,
}

impl AppState {
    /// Builds the state and starts its background tasks (lag sampler, cache refresher). Must be
    /// called inside a tokio runtime. `conns`: the connection cap (see [`serve`]).
    pub fn new(
        config: Config,
        supervisor: SupervisorHandle,
        conns: Arc<conns::ConnLimit>,
    ) -> anyhow::Result<AppState> {
        let tuning = cache::Tuning {
            request_timeout: config.request_timeout,
            // The supervisor cancels a job at its own timeout; ours is only a backstop.
            job_timeout: config.worker.job_timeout + std::time::Duration::from_secs(5),
            max_jobs: config.api.max_queued_jobs,
            max_bytes: config.api.cache_max_bytes,
            refresh_interval: config.api.refresh_interval,
            ..cache::Tuning::default()
        };
        let cache = cache::UsageCache::new(supervisor.clone(), tuning);
        cache.spawn_refresher();
        let budgets = (!config.budgets.is_empty()).then(|| {
            let budgets = budget::Budgets::new(config.budgets.clone());
            budgets.spawn(Arc::clone(&cache), config.budgets.interval);
            budgets
        });
        let agents = agents::AgentsWatch::new(config.state_dir.clone());
        agents.spawn(
            config.state_check_interval,
            config.budgets.budgets.iter().filter_map(|b| b.agent.clone()).collect(),
        );
        let worker = supervisor.clone();
        let lag = lag::LagMonitor::spawn(Box::new(move || {
            let status = worker.status();
            (status.rss_bytes, status.reported_memory.map(|m| m.heap_bytes))
        }));
        let ws = Arc::new(ws::WsShared::new(limits::WsLimits {
            tick_interval: config.api.tick_interval,
            send_timeout: config.api.ws_send_timeout,
            ..limits::WsLimits::default()
        }));
        let hosts = auth::host::HostPolicy::new(config.listen.port(), &config.allowed_hosts)
            .map_err(|why| anyhow::anyhow!(why))?;
        let auth = Arc::new(auth::Auth::new(config.token.clone(), hosts));
        let relay = config.upstream.clone().map(|upstream| {
            let relay = Arc::new(relay::Relay::new(upstream));
            relay.spawn_probe();
            relay
        });
        Ok(AppState {
            config: Arc::new(config),
            supervisor,
            started_at: Instant::now(),
            cache,
            lag,
            metrics: Arc::new(metrics::Metrics::default()),
            ws,
            auth,
            conns,
            shell: Arc::default(),
            relay,
            budgets,
            agents,
        })
    }

    pub fn uptime_ms(&self) -> u64 {
        self.started_at.elapsed().as_millis() as u64
    }

    /// The `websocket` part of the status page: limits, connections, the failed-auth limiter.
    pub fn websocket_status_json(&self) -> serde_json::Value {
        let mut status = self.ws.status_json();
        let (open, evicted, refused) = self.conns.counts();
        status["connections"] = serde_json::json!({"open": open, "max": self.conns.max(), "closedForRoom": evicted, "refused": refused});
        status["blockedClients"] = serde_json::json!(self.auth.limiter.blocked_count());
        status
    }
}

/// The HTTP routes. Every route is private (token required) unless `auth::PUBLIC_ROUTES` lists
/// it; the auth layer also checks `Host`, cross-site requests and the failed-auth limiter.
/// In shield mode the dashboard moves under `relay::DASHBOARD_PREFIX` and every other request
/// goes to the upstream (`relay::fallback`, outside clawgate's auth: OpenClaw judges it).
pub fn router(state: AppState) -> Router {
    let routes = if state.relay.is_some() {
        Router::new()
            .route("/clawgate", get(dashboard::to_prefixed_index))
            .route("/clawgate/", get(dashboard::prefixed_index))
            .route("/clawgate/index.html", get(dashboard::prefixed_index))
            .route("/clawgate/assets/{file}", get(dashboard::asset))
            .fallback(relay::fallback)
    } else {
        Router::new()
            .route("/", get(ws::root))
            .route("/index.html", get(dashboard::index_html))
            .route("/assets/{file}", get(dashboard::asset))
    };
    routes
        .route("/ws", get(ws::ws_only))
        .route("/metrics", get(metrics::handler))
        .route("/healthz", get(api::healthz).head(api::healthz))
        .route("/health", get(api::healthz).head(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/ready", get(api::readyz))
        .route("/api/v1/status", get(api::status))
        .route("/api/v1/worker/ping", get(api::worker_ping))
        .route("/api/v1/call/{method}", post(api::call))
        // The request-size contract (`limits`): bodies over it are answered 413 by `api::call`.
        .layer(DefaultBodyLimit::max(limits::MAX_REQUEST_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), auth::guard))
        .layer(middleware::from_fn_with_state(state.clone(), metrics::track_http))
        .with_state(state)
}

/// Refuses configurations that would expose usage data: a non-loopback address without a token.
pub fn check_config(config: &Config) -> anyhow::Result<()> {
    if !config.listen.ip().is_loopback() && config.token.is_none() {
        anyhow::bail!(
            "refusing to listen on non-loopback address {} without a token (set --token or CLAWGATE_TOKEN)",
            config.listen
        );
    }
    auth::host::HostPolicy::new(config.listen.port(), &config.allowed_hosts)
        .map_err(|why| anyhow::anyhow!(why))?;
    Ok(())
}

/// Binds, starts the worker supervisor, serves until `shutdown` resolves, then stops the worker.
/// Prints one line `clawgate listening on http://ADDR` to stdout once the socket is bound, which
/// scripts and tests wait for (useful with `--listen 127.0.0.1:0`).
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    check_config(&config)?;
    // File descriptors: the soft limit up to the hard one, and a connection cap below it that
    // keeps room for the worker socket, logs and the runtime (`conns`).
    let nofile = conns::raise_nofile_limit();
    // A relayed connection holds two descriptors (client and upstream).
    let per_connection = if config.upstream.is_some() { 2 } else { 1 };
    let max_connections =
        config.max_connections.unwrap_or_else(|| conns::default_max(nofile) / per_connection);
    if (max_connections * per_connection) as u64 + 32 > nofile {
        tracing::warn!(
            max_connections,
            nofile,
            "The connection cap leaves little room below the open-file limit."
        );
    }
    let conns = conns::ConnLimit::new(max_connections);
    if let Some(upstream) = &config.upstream {
        relay::check_not_self(upstream, config.listen).map_err(|why| anyhow::anyhow!(why))?;
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr().context("reading the bound address")?;
    let mut config = config;
    config.listen = local;

    let mut worker = config.worker.clone();
    worker.worker_args.extend([
        OsString::from("--state-dir"),
        config.state_dir.clone().into_os_string(),
        OsString::from("--data-dir"),
        config.data_dir.join("cache").into_os_string(),
    ]);
    // The supervisor's tasks (and so the reading of worker answers) go to the bulk runtime.
    let supervisor = {
        let _on_bulk = config.bulk_runtime.as_ref().map(|bulk| bulk.enter());
        supervisor::start(worker)
    };
    let state = AppState::new(config, supervisor.clone(), Arc::clone(&conns))?;
    {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "clawgate listening on http://{local}");
        let _ = stdout.flush();
    }
    systemd::notify_ready();
    let _watchdog = systemd::spawn_watchdog();
    tracing::info!(listen = %local, state_dir = %state.config.state_dir.display(), max_connections, nofile,
        upstream = state.relay.as_ref().map_or("-", |r| r.upstream.url.as_str()), "Gateway listening.");
    let header_read_timeout = state.config.api.header_read_timeout;
    let relay = state.relay.clone();
    http::serve(listener, router(state), header_read_timeout, conns, shutdown).await;
    systemd::notify_stopping();
    if let Some(relay) = relay {
        // Relayed clients are told to reconnect (1012, as OpenClaw on a restart), not cut off.
        relay.stop();
        relay.closed(std::time::Duration::from_secs(2)).await;
    }
    tracing::info!("Gateway stopping; stopping the usage worker.");
    supervisor.shutdown().await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
