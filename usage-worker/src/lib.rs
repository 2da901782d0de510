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

/// `$OPENCLAW_STATE_DIR`, else `~/.openclaw` (`OPENCLAW_HOME` replacing `$HOME`), as OpenClaw
/// resolves it.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("OPENCLAW_STATE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = ["OPENCLAW_HOME", "HOME"]
        .iter()
        .find_map(|v| std::env::var_os(v).filter(|h| !h.is_empty()))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"));
    home.join(".openclaw")
}

/// 80% of this process's cgroup v2 `memory.max` (systemd's `MemoryMax=`), so a worker run as
/// its own unit refuses over-budget jobs before the kernel kills it; 0 (no budget) when there
/// is no limit to derive it from.
pub fn default_memory_budget() -> u64 {
    let limit = std::fs::read_to_string("/proc/self/cgroup").ok().and_then(|cgroups| {
        let rel = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?.trim_start_matches('/').to_owned();
        let max =
            std::fs::read_to_string(std::path::Path::new("/sys/fs/cgroup").join(rel).join("memory.max"))
                .ok()?;
        max.trim().parse::<u64>().ok()
    });
    limit.map_or(0, |max| max / 10 * 8)
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
