//! `clawgate-usage-worker`: the process that reads OpenClaw session stores and computes usage.
//!
//! It is started by the clawgate gateway's supervisor with `--socket` (it connects back to the
//! gateway and exits when that connection closes), or run standalone under its own supervisor
//! (systemd) with `--listen`, serving one gateway connection at a time.

use std::path::PathBuf;

use clap::Parser;

#[global_allocator]
static GLOBAL: usage_worker::alloc::CountingAlloc = usage_worker::alloc::CountingAlloc;

/// The clawgate usage worker. Normally started by `clawgate serve`; not meant to be run by hand
/// except under systemd with `--listen`.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Connect to the gateway's socket at PATH (managed mode).
    #[arg(long, value_name = "PATH", conflicts_with = "listen", required_unless_present = "listen")]
    socket: Option<PathBuf>,
    /// Listen on a socket at PATH and serve gateways one at a time (external mode).
    #[arg(long, value_name = "PATH")]
    listen: Option<PathBuf>,
    /// The OpenClaw state directory to read [default: $OPENCLAW_STATE_DIR, else ~/.openclaw].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Where the worker keeps its persistent rollup cache (the gateway passes
    /// `<data-dir>/cache`). Without it, rollups live in memory only and a restarted worker
    /// rescans the store.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Lines longer than this many bytes are skipped and counted.
    #[arg(long, default_value_t = 16 << 20)]
    max_line_bytes: u64,
    /// Threads one job may use.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Heap bytes a job may push the worker to before it is refused as over budget (0: no
    /// budget). The supervisor passes 80% of `--worker-memory-max`; without it, 80% of this
    /// process's cgroup `memory.max` (e.g. systemd's `MemoryMax=`) when there is one.
    #[arg(long, value_name = "BYTES", env = "CLAWGATE_WORKER_MEMORY_BUDGET")]
    memory_budget: Option<u64>,
    /// Exit when our parent process is no longer this pid (set by the supervisor).
    #[arg(long, value_name = "PID")]
    parent_pid: Option<u32>,
    /// Serve one command and exit (`clawgate report`): every call looks at what a running
    /// worker leaves to its idle moments on large OpenClaw databases (labels, rewrites,
    /// removed sessions, complete listings due).
    #[arg(long)]
    one_shot: bool,
}

fn main() -> std::process::ExitCode {
    usage_worker::alloc::tune();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CLAWGATE_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(false)
        .init();
    let args = Args::parse();
    let config = usage_worker::Config {
        state_dir: args.state_dir.unwrap_or_else(usage_worker::default_state_dir),
        data_dir: args.data_dir,
        max_line_bytes: args.max_line_bytes,
        threads: args.threads.max(1),
        memory_budget: args.memory_budget.unwrap_or_else(usage_worker::default_memory_budget),
        one_shot: args.one_shot,
    };
    if let Some(parent_pid) = args.parent_pid {
        usage_worker::exit_when_orphaned(parent_pid);
    }
    let endpoint = match (args.socket, args.listen) {
        (Some(path), _) => usage_worker::Endpoint::Connect(path),
        (None, Some(path)) => usage_worker::Endpoint::Listen(path),
        (None, None) => unreachable!("clap requires one of --socket and --listen"),
    };
    match usage_worker::run(endpoint, config) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "Worker failed.");
            // 78 (EX_CONFIG) tells the supervisor not to restart: the setup, not the run, is wrong.
            std::process::ExitCode::from(if usage_worker::is_config_error(&error) { 78 } else { 1 })
        }
    }
}
