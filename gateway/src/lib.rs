//! The clawgate gateway: a thin tokio + axum process serving health, status, the usage API and
//! the dashboard, with the usage worker supervised beside it.
//!
//! Architecture invariant: nothing here parses a transcript or blocks the runtime. Usage answers
//! come from the worker over ipc-proto as ready-made JSON; health is answered from this process
//! alone, whatever the worker is doing.

pub mod api;
pub mod cache;
pub mod cli_status;
pub mod config;
mod dashboard;
pub mod device;
mod http;
pub mod lag;
pub mod metrics;
pub mod params;
pub mod sched;
pub mod status;
pub mod systemd;
pub mod ws;

use std::{ffi::OsString, future::Future, sync::Arc, time::Instant};

use anyhow::Context as _;
use axum::{
    Router, middleware,
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
    /// WebSocket settings, connection count and the failed-auth limiter.
    pub ws: Arc<ws::WsShared>,
}

impl AppState {
    /// Builds the state and starts its background tasks (lag sampler, cache refresher). Must be
    /// called inside a tokio runtime.
    pub fn new(config: Config, supervisor: SupervisorHandle) -> AppState {
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
        let worker = supervisor.clone();
        let lag = lag::LagMonitor::spawn(Box::new(move || {
            let status = worker.status();
            (status.rss_bytes, status.reported_memory.map(|m| m.heap_bytes))
        }));
        let ws = Arc::new(ws::WsShared::new(ws::WsConfig {
            tick_interval: config.api.tick_interval,
            ..ws::WsConfig::default()
        }));
        AppState {
            config: Arc::new(config),
            supervisor,
            started_at: Instant::now(),
            cache,
            lag,
            metrics: Arc::new(metrics::Metrics::default()),
            ws,
        }
    }

    pub fn uptime_ms(&self) -> u64 {
        self.started_at.elapsed().as_millis() as u64
    }
}

/// The HTTP routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(ws::root))
        .route("/index.html", get(dashboard::index_html))
        .route("/assets/{file}", get(dashboard::asset))
        .route("/ws", get(ws::ws_only))
        .route("/metrics", get(metrics::handler))
        .route("/healthz", get(api::healthz).head(api::healthz))
        .route("/health", get(api::healthz).head(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/ready", get(api::readyz))
        .route("/api/v1/status", get(api::status))
        .route("/api/v1/worker/ping", get(api::worker_ping))
        .route("/api/v1/call/{method}", post(api::call))
        .layer(middleware::from_fn_with_state(state.clone(), ws::limit_failed_auth))
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
    let state = AppState::new(config, supervisor.clone());
    {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "clawgate listening on http://{local}");
        let _ = stdout.flush();
    }
    systemd::notify_ready();
    let _watchdog = systemd::spawn_watchdog();
    tracing::info!(listen = %local, state_dir = %state.config.state_dir.display(), "Gateway listening.");
    let header_read_timeout = state.config.api.header_read_timeout;
    http::serve(listener, router(state), header_read_timeout, shutdown).await;
    systemd::notify_stopping();
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
