//! The clawgate gateway: a thin tokio + axum process serving health, status, the usage API and
//! the dashboard, with the usage worker supervised beside it.
//!
//! Architecture invariant: nothing here parses a transcript or blocks the runtime. Usage answers
//! come from the worker over ipc-proto as ready-made JSON; health is answered from this process
//! alone, whatever the worker is doing.

pub mod api;
pub mod config;
mod dashboard;
pub mod params;
pub mod systemd;

use std::{ffi::OsString, future::Future, sync::Arc, time::Instant};

use anyhow::Context as _;
use axum::{
    Router,
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
}

impl AppState {
    pub fn uptime_ms(&self) -> u64 {
        self.started_at.elapsed().as_millis() as u64
    }
}

/// The HTTP routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(dashboard::index))
        .route("/healthz", get(api::healthz).head(api::healthz))
        .route("/health", get(api::healthz).head(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/ready", get(api::readyz))
        .route("/api/v1/status", get(api::status))
        .route("/api/v1/call/{method}", post(api::call))
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

    let worker_args: Vec<OsString> = vec!["--state-dir".into(), config.state_dir.clone().into_os_string()];
    let supervisor = supervisor::start(supervisor::Config::new(
        config.worker_bin.clone(),
        worker_args,
        config.run_dir.clone(),
    ));
    let state =
        AppState { config: Arc::new(config), supervisor: supervisor.clone(), started_at: Instant::now() };
    {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "clawgate listening on http://{local}");
        let _ = stdout.flush();
    }
    systemd::notify_ready();
    let _watchdog = systemd::spawn_watchdog();
    tracing::info!(listen = %local, state_dir = %state.config.state_dir.display(), "Gateway listening.");
    let served = axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await;
    systemd::notify_stopping();
    tracing::info!("Gateway stopping; stopping the usage worker.");
    supervisor.shutdown().await;
    served.context("serving HTTP")
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
