//! `clawgate`: serve the gateway, generate a demo store.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use gateway::config;

/// clawgate: usage and cost reporting, health and a dashboard for OpenClaw deployments, with
/// the heavy work in a supervised worker process so the gateway never goes dark.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (HTTP API, health, dashboard) and its usage worker.
    Serve(ServeArgs),
    /// Write a realistic synthetic OpenClaw store (legacy layout) for demos and tests.
    Demo(DemoArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on. Non-loopback addresses require a token.
    #[arg(long, default_value = config::DEFAULT_LISTEN, env = "CLAWGATE_LISTEN")]
    listen: SocketAddr,
    /// OpenClaw state directory [default: $OPENCLAW_STATE_DIR, else ~/.openclaw].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// clawgate's own data directory [default: $XDG_STATE_HOME/clawgate, else ~/.local/state/clawgate].
    #[arg(long, value_name = "DIR", env = "CLAWGATE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Directory for the worker socket [default: <data-dir>/run].
    #[arg(long, value_name = "DIR", env = "CLAWGATE_RUN_DIR")]
    run_dir: Option<PathBuf>,
    /// Bearer token required by the API (everything but /healthz and /health).
    #[arg(long, env = "CLAWGATE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Serve a generated demo store (written once to <data-dir>/demo) instead of --state-dir.
    #[arg(long, conflicts_with = "state_dir")]
    demo: bool,
    /// The usage worker executable [default: clawgate-usage-worker beside this binary].
    #[arg(long, value_name = "PATH", env = "CLAWGATE_WORKER_BIN")]
    worker_bin: Option<PathBuf>,
    /// Longest an API call waits for the worker before answering UNAVAILABLE (seconds).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    request_timeout: f64,
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Where to write the store (created; must be empty or a previous demo store).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Number of agents.
    #[arg(long)]
    agents: Option<u32>,
    /// Sessions per agent.
    #[arg(long)]
    sessions: Option<u32>,
    /// Turns per session (each turn has two assistant messages with usage).
    #[arg(long)]
    messages: Option<u32>,
    /// Random seed; the same arguments and seed give the same store.
    #[arg(long)]
    seed: Option<u64>,
    /// The seed-size store of the incident: 9 agents x 184 sessions, about 1.45 GB.
    #[arg(long)]
    seed_size: bool,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CLAWGATE_LOG").unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Demo(args) => demo(args),
    };
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("clawgate: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir.unwrap_or_else(config::default_data_dir);
    let state_dir = if args.demo {
        let out = data_dir.join("demo");
        if demo_store::read_manifest(&out).is_err() {
            tracing::info!(dir = %out.display(), "Writing the demo store.");
            demo_store::generate(&out, &demo_store::DemoSpec::default())
                .with_context(|| format!("writing the demo store to {}", out.display()))?;
        }
        out
    } else {
        args.state_dir.unwrap_or_else(config::default_state_dir)
    };
    let request_timeout = Duration::try_from_secs_f64(args.request_timeout)
        .ok()
        .filter(|d| !d.is_zero())
        .context("--request-timeout must be a positive number of seconds")?;
    let config = gateway::Config {
        listen: args.listen,
        run_dir: args.run_dir.unwrap_or_else(|| data_dir.join("run")),
        state_dir,
        data_dir,
        token: args.token.filter(|t| !t.is_empty()),
        worker_bin: args.worker_bin.unwrap_or_else(config::default_worker_bin),
        request_timeout,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the runtime")?;
    runtime.block_on(gateway::serve(config, gateway::shutdown_signal()))
}

fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let mut spec =
        if args.seed_size { demo_store::DemoSpec::seed_size() } else { demo_store::DemoSpec::default() };
    if let Some(v) = args.agents {
        spec.agents = v;
    }
    if let Some(v) = args.sessions {
        spec.sessions_per_agent = v;
    }
    if let Some(v) = args.messages {
        spec.turns_per_session = v;
    }
    if let Some(v) = args.seed {
        spec.seed = v;
    }
    let started = std::time::Instant::now();
    let manifest = demo_store::generate_or_reuse(&args.out, &spec)
        .with_context(|| format!("writing the demo store to {}", args.out.display()))?;
    println!(
        "wrote {} sessions in {} files ({} bytes) to {} in {:.1} s; totals: {} tokens, ${:.2}; manifest: {}",
        manifest.sessions,
        manifest.files,
        manifest.bytes,
        args.out.display(),
        started.elapsed().as_secs_f64(),
        manifest.totals.total_tokens,
        manifest.totals.total_cost,
        args.out.join(demo_store::MANIFEST_FILE).display()
    );
    Ok(())
}
