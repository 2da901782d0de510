//! The usage worker: reads OpenClaw session stores and answers usage queries over ipc-proto.
//!
//! Layout: `server` runs the connection loop, `engine` computes answers, `alloc` counts the heap,
//! `fault` injects test faults in debug builds. The gateway reaches this crate only through the
//! wire types of `ipc-proto`; nothing here opens a network socket.

pub mod alloc;
mod budget;
pub mod engine;
mod fault;
mod server;

use std::path::PathBuf;

use anyhow::Context as _;
pub use server::Config;

/// How the worker reaches its gateway.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// Managed mode: connect to the supervisor's socket; exit when it closes.
    Connect(PathBuf),
    /// External mode: listen and serve one gateway connection at a time, forever.
    Listen(PathBuf),
}

/// A setup problem that restarting will not fix (exit code 78).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// Whether `error` is a [`ConfigError`], i.e. the worker should not be restarted.
pub fn is_config_error(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| cause.is::<ConfigError>())
}

/// OpenClaw's state directory, resolved as the gateway resolves it.
pub use ipc_proto::host::default_state_dir;

/// The heap budget a worker run as its own unit (systemd's `MemoryMax=`) gives itself, so it
/// refuses over-budget jobs before the kernel kills it; 0 (no budget) without a cgroup limit.
pub fn default_memory_budget() -> u64 {
    ipc_proto::host::own_memory_max().map_or(0, ipc_proto::host::heap_budget)
}

/// Exits the process when its parent is no longer `parent_pid` (the gateway died and we were
/// re-parented): the third guard after the socket's EOF and `PR_SET_PDEATHSIG`.
pub fn exit_when_orphaned(parent_pid: u32) {
    std::thread::Builder::new()
        .name("parent-watch".into())
        .spawn(move || {
            loop {
                if std::os::unix::process::parent_id() != parent_pid {
                    tracing::warn!(parent_pid, "The gateway is gone; exiting.");
                    std::process::exit(0);
                }
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
        })
        .expect("spawn the parent watch thread");
}

/// Runs the worker until its connection closes (managed) or forever (external).
pub fn run(endpoint: Endpoint, config: Config) -> anyhow::Result<()> {
    if !config.state_dir.is_dir() {
        return Err(ConfigError(format!(
            "state directory {} does not exist or is not a directory",
            config.state_dir.display()
        ))
        .into());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the worker's runtime")?;
    runtime.block_on(async move {
        match endpoint {
            Endpoint::Connect(path) => {
                let stream = ipc_proto::endpoint::connect(&path)
                    .await
                    .with_context(|| format!("connecting to {}", path.display()))?;
                server::serve_connection(stream, &config).await
            }
            Endpoint::Listen(path) => {
                use interprocess::local_socket::traits::tokio::Listener as _;
                if let Some(dir) = path.parent() {
                    ipc_proto::endpoint::ensure_private_dir(dir)
                        .map_err(|e| ConfigError(format!("runtime dir {}: {e}", dir.display())))?;
                }
                let listener = ipc_proto::endpoint::bind(&path)
                    .map_err(|e| ConfigError(format!("cannot listen on {}: {e}", path.display())))?;
                tracing::info!(socket = %path.display(), "Listening for the gateway.");
                loop {
                    let stream = listener.accept().await.context("accepting a gateway")?;
                    if let Err(error) = server::serve_connection(stream, &config).await {
                        tracing::warn!(error = format!("{error:#}"), "Gateway connection ended.");
                    }
                }
            }
        }
    })
}
