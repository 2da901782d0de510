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
    Serve(Box<ServeArgs>),
    /// Write a realistic synthetic OpenClaw store (legacy layout) for demos and tests.
    Demo(DemoArgs),
    /// Report on a running gateway and its worker; never hangs. Exit 0 ok, 1 degraded,
    /// 2 unreachable or failed.
    Status(StatusArgs),
}

#[derive(Debug, clap::Args)]
struct StatusArgs {
    /// The gateway's URL [default: http://$CLAWGATE_LISTEN, else http://127.0.0.1:18790].
    #[arg(long, env = "CLAWGATE_URL")]
    url: Option<String>,
    /// Bearer token, if the gateway has one.
    #[arg(long, env = "CLAWGATE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Total deadline for the whole command (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s", value_parser = gateway::cli_status::parse_duration)]
    timeout: Duration,
    /// Also probe a WebSocket handshake, a worker ping, a tiny usage call, the socket's
    /// permissions and systemd's view of the units.
    #[arg(long)]
    deep: bool,
    /// Print one JSON document (schema clawgate.status/v1) instead of text.
    #[arg(long)]
    json: bool,
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
    /// `managed`: spawn and restart the worker ourselves. `external`: connect to a worker that
    /// systemd runs with `clawgate-usage-worker --listen` (see packaging/).
    #[arg(long, value_enum, default_value = "managed", env = "CLAWGATE_WORKER_MODE")]
    worker_mode: WorkerMode,
    /// The external worker's socket (external mode) [default: <run-dir>/worker.sock].
    #[arg(long, value_name = "PATH", env = "CLAWGATE_WORKER_SOCKET")]
    worker_socket: Option<PathBuf>,
    /// The worker's memory cap (e.g. 512MiB). Its heap budget is 80% of it; above the cap its
    /// RSS gets it killed and restarted.
    #[arg(long, default_value = "512MiB", value_parser = config::parse_bytes, env = "CLAWGATE_WORKER_MEMORY_MAX")]
    worker_memory_max: u64,
    /// After more than --worker-max-restarts restarts within --worker-restart-window, the
    /// worker is parked in `failed` this long before the next try (seconds).
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    worker_cooldown: f64,
    /// Restarts allowed within --worker-restart-window before the worker is parked.
    #[arg(long, default_value_t = 5)]
    worker_max_restarts: usize,
    /// The window for --worker-max-restarts (seconds).
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    worker_restart_window: f64,
    /// How often the worker is pinged; three missed pings in a row count as a hang (ms).
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    worker_heartbeat_ms: u64,
    /// A worker job running longer than this is cancelled (seconds).
    #[arg(long, default_value_t = 300.0, value_name = "SECS")]
    worker_job_timeout: f64,
    /// A cancelled job still running after this counts as a hang and its worker is killed (ms).
    #[arg(long, default_value_t = 3000, value_name = "MS")]
    worker_cancel_grace_ms: u64,
    /// Try a cgroup v2 memory.max for the worker when this gateway's cgroup is delegated.
    #[arg(long, default_value = "auto", value_parser = ["auto", "off"])]
    worker_cgroup: String,
    /// Longest an API call waits for the worker before answering UNAVAILABLE (seconds).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    request_timeout: f64,
    /// Re-run recently requested usage queries this often while WebSocket clients are
    /// connected, pushing `usage.updated` when data changed (seconds; 0 turns it off).
    #[arg(long, default_value_t = 15.0, value_name = "SECS")]
    refresh_interval: f64,
    /// Distinct usage jobs running or queued at once; beyond it calls are answered at once
    /// (stale data, or UNAVAILABLE with HTTP 429).
    #[arg(long, default_value_t = 16, value_name = "N")]
    max_queued_jobs: usize,
    /// Most bytes of usage answers kept between calls (e.g. 16MiB). Past it, idle answers are
    /// dropped, those only HTTP callers asked first; one still being sent stays until sent.
    #[arg(long, default_value = "16MiB", value_parser = config::parse_bytes, value_name = "SIZE")]
    cache_max_bytes: u64,
    /// WebSocket `tick` event interval (seconds).
    #[arg(long, default_value_t = 30.0, value_name = "SECS", hide = true)]
    tick_interval: f64,
    /// Longest a client may take to send a request head, and to start its next one on an idle
    /// keep-alive connection, before the connection is closed (seconds).
    #[arg(long, default_value_t = 60.0, value_name = "SECS", hide = true)]
    header_read_timeout: f64,
    /// A public name this gateway is reached by (e.g. dash.example.com or dash.example.com:8443),
    /// besides the loopback names and IP addresses; repeat for several. Requests whose `Host` or
    /// browser `Origin` names anything else are refused (DNS rebinding, cross-site pages).
    #[arg(long = "allowed-host", value_name = "NAME", env = "CLAWGATE_ALLOWED_HOSTS", value_delimiter = ',')]
    allowed_hosts: Vec<String>,
    /// Most client connections open at once (HTTP and WebSocket) [default: derived from the
    /// open-file limit, keeping room for /healthz]. At the cap the longest-idle one is closed.
    #[arg(long, value_name = "N", env = "CLAWGATE_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// A WebSocket client that takes no bytes for this long while the gateway has some to send
    /// (an answer, a pong) is disconnected (seconds).
    #[arg(long, default_value_t = 30.0, value_name = "SECS", hide = true)]
    ws_send_timeout: f64,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum WorkerMode {
    Managed,
    External,
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
    /// `legacy`: sessions.json + JSONL (OpenClaw up to 2026.6). `sqlite`: also one
    /// `agents/<id>/agent/openclaw-agent.sqlite` per agent, as OpenClaw 2026.7+ keeps them (the
    /// database wins over the JSONL files, as after OpenClaw's own import).
    #[arg(long, value_parser = ["legacy", "sqlite"], default_value = "legacy")]
    layout: String,
}

/// Keeps the gateway's RSS near its live data. Usage answers are multi-MB strings built on
/// several threads; glibc's defaults (a dynamic mmap threshold that climbs to 32 MiB once such
/// blocks are freed, and one arena per thread) keep their freed pages resident. A fixed 1 MiB
/// threshold returns big blocks to the kernel on free, and two arenas bound the rest.
fn tune_allocator() {
    // SAFETY: mallopt only adjusts allocator parameters; called once, before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> std::process::ExitCode {
    tune_allocator();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CLAWGATE_LOG").unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Demo(args) => demo(args),
        Command::Status(args) => {
            let listen =
                std::env::var("CLAWGATE_LISTEN").unwrap_or_else(|_| config::DEFAULT_LISTEN.to_owned());
            let url = args.url.unwrap_or_else(|| format!("http://{listen}"));
            let opts = gateway::cli_status::Options {
                url: url.trim_end_matches('/').to_owned(),
                token: args.token.filter(|t| !t.is_empty()),
                timeout: args.timeout,
                deep: args.deep,
                json: args.json,
            };
            return std::process::ExitCode::from(gateway::cli_status::run(&opts) as u8);
        }
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
    let secs = |name: &str, value: f64| {
        Duration::try_from_secs_f64(value)
            .ok()
            .filter(|d| !d.is_zero())
            .with_context(|| format!("--{name} must be a positive number of seconds"))
    };
    let run_dir = args.run_dir.clone().unwrap_or_else(|| data_dir.join("run"));
    let mut worker = supervisor::Config::new(
        args.worker_bin.unwrap_or_else(config::default_worker_bin),
        Vec::new(),
        run_dir.clone(),
    );
    worker.mode = match args.worker_mode {
        WorkerMode::Managed => supervisor::Mode::Managed,
        WorkerMode::External => supervisor::Mode::External {
            socket: args.worker_socket.unwrap_or_else(|| run_dir.join("worker.sock")),
        },
    };
    worker.memory_max = args.worker_memory_max;
    worker.use_cgroup = args.worker_cgroup == "auto";
    worker.heartbeat_interval = Duration::from_millis(args.worker_heartbeat_ms.max(10));
    worker.job_timeout = secs("worker-job-timeout", args.worker_job_timeout)?;
    worker.cancel_grace = Duration::from_millis(args.worker_cancel_grace_ms);
    worker.restart.cooldown = secs("worker-cooldown", args.worker_cooldown)?;
    worker.restart.max_restarts = args.worker_max_restarts;
    worker.restart.window = secs("worker-restart-window", args.worker_restart_window)?;
    let config = gateway::Config {
        listen: args.listen,
        run_dir,
        state_dir,
        data_dir,
        token: args.token.filter(|t| !t.is_empty()),
        allowed_hosts: args
            .allowed_hosts
            .into_iter()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .collect(),
        max_connections: args.max_connections,
        worker,
        request_timeout,
        api: config::ApiTuning {
            max_queued_jobs: args.max_queued_jobs.max(1),
            cache_max_bytes: usize::try_from(args.cache_max_bytes).unwrap_or(usize::MAX),
            refresh_interval: Duration::try_from_secs_f64(args.refresh_interval)
                .ok()
                .context("--refresh-interval must be a number of seconds (0: off)")?,
            tick_interval: secs("tick-interval", args.tick_interval)?,
            header_read_timeout: secs("header-read-timeout", args.header_read_timeout)?,
            ws_send_timeout: secs("ws-send-timeout", args.ws_send_timeout)?,
        },
        bulk_runtime: None,
    };
    // Bulk I/O gets its own threads (see `Config::bulk_runtime`), with the kernel's default
    // slice: they yield the CPU to the main runtime's threads, not the reverse.
    let bulk_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("clawgate-bulk")
        .event_interval(8)
        .enable_all()
        .build()
        .context("building the bulk I/O runtime")?;
    let config = gateway::Config { bulk_runtime: Some(bulk_runtime.handle().clone()), ..config };
    let slice_refused = std::sync::Once::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Check for I/O and timers every 8 task polls (tokio's default is 61): a probe's
        // readiness must not wait behind a long run of large sends.
        .event_interval(8)
        .on_thread_start(move || {
            if let Err(why) = gateway::sched::request_slice(gateway::sched::RUNTIME_SLICE) {
                slice_refused
                    .call_once(|| tracing::info!(%why, "Runtime threads keep the default scheduler slice."));
            }
        })
        .enable_all()
        .build()
        .context("building the runtime")?;
    let served = runtime.block_on(gateway::serve(config, gateway::shutdown_signal()));
    // The worker is stopped by now; connections still open end with the process. Their tasks
    // use the main runtime's I/O driver, so they go first.
    bulk_runtime.shutdown_timeout(Duration::from_secs(1));
    served
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
    if args.layout == "sqlite" {
        let converted = demo_store::sqlite::convert_to_sqlite(&args.out, &args.out)
            .with_context(|| format!("converting {} to the SQLite layout", args.out.display()))?;
        println!("converted to the SQLite layout: {converted:?}");
    }
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
