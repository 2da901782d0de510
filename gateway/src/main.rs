//! `clawgate`: serve the gateway, generate a demo store.

use std::{io::IsTerminal as _, net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use gateway::config::{self, ApiTuning, Dur, Size};

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
    /// 2 unreachable or failed, 3 unauthorized.
    Status(StatusArgs),
    /// Usage and cost tables by day, week, month, session, model or agent, for all agents
    /// unless --agent: from a running gateway, or straight from a state dir with --state-dir.
    /// Exit 0 ok, 1 failed, 2 usage error, 3 unauthorized, 4 unreachable, 5 unavailable.
    Report(ReportArgs),
}

#[derive(Debug, clap::Args)]
struct ReportArgs {
    /// One row per day, ISO week, month, session, model or agent.
    #[arg(value_enum)]
    kind: gateway::report::Kind,
    /// First day (YYYY-MM-DD or YYYYMMDD) [default: the first day with usage].
    #[arg(long, value_name = "DATE")]
    since: Option<String>,
    /// Last day (YYYY-MM-DD or YYYYMMDD) [default: today].
    #[arg(long, value_name = "DATE")]
    until: Option<String>,
    /// Only this agent [default: every agent].
    #[arg(long, value_name = "ID")]
    agent: Option<String>,
    /// Time zone days are cut in (IANA name, e.g. Europe/Paris, or UTC) [default: this
    /// machine's].
    #[arg(long, value_name = "ZONE")]
    tz: Option<String>,
    /// Print one JSON document (schema clawgate.report/v1) instead of a table.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print CSV (a header line, one line per row, the API's numbers) instead of a table.
    #[arg(long)]
    csv: bool,
    /// Sessions shown by `session`, most expensive first (the total covers all of them).
    #[arg(long, value_name = "N", default_value_t = gateway::report::DEFAULT_LIMIT)]
    limit: u32,
    /// The gateway's URL or HOST:PORT [default: as `clawgate status`].
    #[arg(long, env = "CLAWGATE_URL", conflicts_with = "state_dir")]
    url: Option<String>,
    /// Bearer token [default: $CLAWGATE_TOKEN, else the environment file's CLAWGATE_TOKEN].
    #[arg(long, env = "CLAWGATE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The environment file to read CLAWGATE_TOKEN and CLAWGATE_LISTEN from [default: as
    /// `clawgate status`].
    #[arg(long, value_name = "PATH")]
    env_file: Option<PathBuf>,
    /// Read this OpenClaw state directory directly, through a usage worker of this command's
    /// own, instead of asking a gateway.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// With --state-dir: where the worker keeps its rollups between reports [default:
    /// $XDG_STATE_HOME/clawgate, else ~/.local/state/clawgate; under report/].
    #[arg(long, value_name = "DIR", env = "CLAWGATE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// With --state-dir: the usage worker executable [default: beside this binary].
    #[arg(long, value_name = "PATH", env = "CLAWGATE_WORKER_BIN")]
    worker_bin: Option<PathBuf>,
    /// Longest the whole command may take (a cold read of a large store takes a while).
    #[arg(long, value_name = "DURATION", default_value_t = Dur(gateway::report::DEFAULT_TIMEOUT))]
    timeout: Dur,
}

#[derive(Debug, clap::Args)]
struct StatusArgs {
    /// The gateway's URL or HOST:PORT [default: $CLAWGATE_LISTEN, else the environment
    /// file's CLAWGATE_LISTEN, else 127.0.0.1:18790].
    #[arg(long, env = "CLAWGATE_URL")]
    url: Option<String>,
    /// Bearer token, if the gateway has one [default: $CLAWGATE_TOKEN, else the environment
    /// file's CLAWGATE_TOKEN].
    #[arg(long, env = "CLAWGATE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The environment file to read CLAWGATE_TOKEN and CLAWGATE_LISTEN from [default:
    /// ~/.config/clawgate/clawgate.env, then /etc/clawgate/clawgate.env, as install.sh writes them].
    #[arg(long, value_name = "PATH")]
    env_file: Option<PathBuf>,
    /// Total deadline for the whole command (e.g. 5s, 500ms).
    #[arg(long, default_value_t = Dur(gateway::cli_status::DEFAULT_TIMEOUT), value_name = "DURATION")]
    timeout: Dur,
    /// Also probe a WebSocket handshake, a worker ping, a tiny usage call, the socket's
    /// permissions and systemd's view of the units.
    #[arg(long)]
    deep: bool,
    /// Print one JSON document (schema clawgate.status/v1) instead of text.
    #[arg(long)]
    json: bool,
}

/// Sizes take a unit (`512MiB`, `1G`) and durations too (`10s`, `500ms`, `5m`): see
/// docs/ops/configuration.md. Defaults come from `supervisor::defaults` and `ApiTuning`.
#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on: IP:PORT or HOST:PORT. Non-loopback addresses require a token.
    #[arg(long, default_value = config::DEFAULT_LISTEN, env = "CLAWGATE_LISTEN", value_parser = config::parse_listen)]
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
    #[arg(long, value_enum, default_value_t = WorkerMode::Managed, env = "CLAWGATE_WORKER_MODE")]
    worker_mode: WorkerMode,
    /// The external worker's socket (external mode) [default: <run-dir>/worker.sock].
    #[arg(long, value_name = "PATH", env = "CLAWGATE_WORKER_SOCKET")]
    worker_socket: Option<PathBuf>,
    /// The worker's memory cap, with a unit (e.g. 512MiB, 1G; at least 256MiB). Its heap budget
    /// is 80% of it; above the cap its RSS gets it killed and restarted.
    #[arg(long, value_name = "SIZE", default_value_t = Size(supervisor::defaults::MEMORY_MAX), env = "CLAWGATE_WORKER_MEMORY_MAX")]
    worker_memory_max: Size,
    /// Let --worker-memory-max go below 256MiB: for fault drills and tests that want the
    /// worker's memory layers to act quickly, never for serving.
    #[arg(long, hide = true)]
    allow_small_worker_memory: bool,
    /// After more than --worker-max-restarts restarts within --worker-restart-window, the
    /// worker is parked in `failed` this long before the next try.
    #[arg(long, value_name = "DURATION", default_value_t = Dur(supervisor::defaults::COOLDOWN))]
    worker_cooldown: Dur,
    /// Restarts allowed within --worker-restart-window before the worker is parked.
    #[arg(long, value_name = "N", default_value_t = supervisor::defaults::MAX_RESTARTS)]
    worker_max_restarts: usize,
    /// The window for --worker-max-restarts.
    #[arg(long, value_name = "DURATION", default_value_t = Dur(supervisor::defaults::RESTART_WINDOW))]
    worker_restart_window: Dur,
    /// How often the worker is pinged; three missed pings in a row count as a hang.
    #[arg(long, value_name = "DURATION", default_value_t = Dur(supervisor::defaults::HEARTBEAT_INTERVAL))]
    worker_heartbeat: Dur,
    /// A worker job running longer than this is cancelled.
    #[arg(long, value_name = "DURATION", default_value_t = Dur(supervisor::defaults::JOB_TIMEOUT))]
    worker_job_timeout: Dur,
    /// A cancelled job still running after this counts as a hang and its worker is killed.
    #[arg(long, value_name = "DURATION", default_value_t = Dur(supervisor::defaults::CANCEL_GRACE))]
    worker_cancel_grace: Dur,
    /// Try a cgroup v2 memory.max for the worker when this gateway's cgroup is delegated.
    #[arg(long, value_enum, default_value_t = WorkerCgroup::Auto)]
    worker_cgroup: WorkerCgroup,
    /// Longest an API call waits for the worker before answering UNAVAILABLE.
    #[arg(long, value_name = "DURATION", default_value_t = Dur(config::DEFAULT_REQUEST_TIMEOUT))]
    request_timeout: Dur,
    /// Re-run recently requested usage queries this often while WebSocket clients are
    /// connected, pushing `usage.updated` when data changed (0 turns it off).
    #[arg(long, value_name = "DURATION", default_value_t = Dur(ApiTuning::default().refresh_interval))]
    refresh_interval: Dur,
    /// Distinct usage jobs running or queued at once; beyond it calls are answered at once
    /// (stale data, or UNAVAILABLE with HTTP 429).
    #[arg(long, value_name = "N", default_value_t = ApiTuning::default().max_queued_jobs)]
    max_queued_jobs: usize,
    /// Most bytes of usage answers kept between calls (e.g. 16MiB). Past it, idle answers are
    /// dropped, those only HTTP callers asked first; one still being sent stays until sent.
    #[arg(long, value_name = "SIZE", default_value_t = Size(ApiTuning::default().cache_max_bytes as u64))]
    cache_max_bytes: Size,
    /// WebSocket `tick` event interval.
    #[arg(long, value_name = "DURATION", default_value_t = Dur(ApiTuning::default().tick_interval), hide = true)]
    tick_interval: Dur,
    /// Longest a client may take to send a request head, and to start its next one on an idle
    /// keep-alive connection, before the connection is closed.
    #[arg(long, value_name = "DURATION", default_value_t = Dur(ApiTuning::default().header_read_timeout), hide = true)]
    header_read_timeout: Dur,
    /// A public name this gateway is reached by (e.g. dash.example.com or dash.example.com:8443),
    /// besides the loopback names and IP addresses; repeat for several. Requests whose `Host` or
    /// browser `Origin` names anything else are refused (DNS rebinding, cross-site pages).
    #[arg(long = "allowed-host", value_name = "NAME", env = "CLAWGATE_ALLOWED_HOSTS", value_delimiter = ',')]
    allowed_hosts: Vec<String>,
    /// Most client connections open at once (HTTP and WebSocket) [default: derived from the
    /// open-file limit, keeping room for /healthz]. At the cap the longest-idle one is closed.
    #[arg(long, value_name = "N", env = "CLAWGATE_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Shield mode: relay everything but clawgate's own routes and the usage methods to this
    /// OpenClaw gateway (e.g. ws://127.0.0.1:18788, where OpenClaw was moved), listening where
    /// users reached OpenClaw. The dashboard moves to /clawgate/. See docs/ops/shield.md.
    #[arg(long, value_name = "URL", env = "CLAWGATE_UPSTREAM", value_parser = gateway::relay::Upstream::parse)]
    upstream: Option<gateway::relay::Upstream>,
    /// A WebSocket client that takes no bytes for this long while the gateway has some to send
    /// (an answer, a pong) is disconnected.
    #[arg(long, value_name = "DURATION", default_value_t = Dur(ApiTuning::default().ws_send_timeout), hide = true)]
    ws_send_timeout: Dur,
    /// A cost budget in US dollars: day=USD or month=USD for all agents together, AGENT:day=USD
    /// or AGENT:month=USD for one agent; repeat for several (e.g. --budget month=500 --budget
    /// main:day=20). Exposed on /metrics, in status and on the dashboard; crossing 80%, 100% or
    /// a month-end forecast over the budget sends a `usage.budget` event.
    #[arg(
        long = "budget",
        value_name = "[AGENT:]PERIOD=USD",
        env = "CLAWGATE_BUDGETS",
        value_delimiter = ','
    )]
    budgets: Vec<gateway::budget::Budget>,
    /// The time zone budget days and months are cut in (IANA name, e.g. Europe/Paris).
    #[arg(long, value_name = "ZONE", default_value = "UTC", env = "CLAWGATE_BUDGET_TZ")]
    budget_tz: String,
    /// How often spend is asked of the worker for the budgets.
    #[arg(long, value_name = "DURATION", default_value_t = Dur(gateway::budget::DEFAULT_INTERVAL))]
    budget_interval: Dur,
    /// How often the state dir's agents are listed (a missing or empty one is logged and
    /// reported by `status`).
    #[arg(long, value_name = "DURATION", default_value_t = Dur(config::DEFAULT_STATE_CHECK_INTERVAL), hide = true)]
    state_check_interval: Dur,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum WorkerMode {
    Managed,
    External,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum WorkerCgroup {
    Auto,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Layout {
    /// sessions.json + JSONL (OpenClaw up to 2026.6).
    Legacy,
    /// Also one agents/<id>/agent/openclaw-agent.sqlite per agent, as OpenClaw 2026.7+ keeps
    /// them (the database wins over the JSONL files, as after OpenClaw's own import).
    Sqlite,
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
    /// Days the sessions spread over, ending now [default: 90].
    #[arg(long)]
    days: Option<u32>,
    /// Average size of a tool result's text in bytes: the bulk of the store [default: 5500].
    #[arg(long, value_name = "BYTES")]
    tool_result_bytes: Option<u32>,
    /// A harder shape: sessions spanning weeks, a model switch every three turns, many tools.
    #[arg(long)]
    wide: bool,
    /// The seed-size store of the incident: 9 agents x 184 sessions, about 1.45 GB.
    #[arg(long)]
    seed_size: bool,
    /// The store's layout.
    #[arg(long, value_enum, default_value_t = Layout::Legacy)]
    layout: Layout,
}

/// Keeps the gateway's RSS near its live data. Usage answers are multi-MB strings built on
/// several threads; glibc's defaults (a dynamic mmap threshold that climbs to 32 MiB once such
/// blocks are freed, and one arena per thread) keep their freed pages resident. A fixed 1 MiB
/// threshold returns big blocks to the kernel on free, and two arenas bound the rest.
///
/// Kept in code rather than as `MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=1048576` in the units,
/// measured with `clawgate-proof --duration 30s --agents 9 --sessions 184 --turns 5` (20
/// dashboards, no faults, release build): gateway peak RSS 25.8 MiB with this call (median of 6
/// runs), 25.9 MiB with the variables instead, 46.0 MiB with neither (3 runs). The variables
/// save nothing, only act where they are set (not under `clawgate serve` from a shell or a test),
/// and would pass to a managed worker too. glibc only: musl's allocator has neither knob.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    // SAFETY: mallopt only adjusts allocator parameters; called once, before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

/// Whether log lines on stderr get colour: only on a terminal, and never with `NO_COLOR` set
/// (no-color.org). The journal and log files get plain text.
fn log_colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn main() -> std::process::ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    // A report's output is its table: the worker's and supervisor's info lines would only
    // clutter it (CLAWGATE_LOG still turns them on).
    let default_level = if matches!(cli.command, Command::Report(_)) { "warn" } else { "info" };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(log_colour())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CLAWGATE_LOG")
                .unwrap_or_else(|_| default_level.into()),
        )
        .init();
    let res = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Demo(args) => demo(args),
        Command::Report(args) => {
            let format = match (args.json, args.csv) {
                (true, _) => gateway::report::Format::Json,
                (_, true) => gateway::report::Format::Csv,
                _ => gateway::report::Format::Table,
            };
            if args.timeout.0.is_zero() {
                eprintln!("clawgate report: --timeout must be more than zero");
                return std::process::ExitCode::from(gateway::report::EXIT_USAGE as u8);
            }
            let code = gateway::report::run(gateway::report::Given {
                kind: args.kind,
                since: args.since,
                until: args.until,
                agent: args.agent,
                tz: args.tz,
                format,
                limit: args.limit,
                url: args.url,
                token: args.token,
                env_file: args.env_file,
                state_dir: args.state_dir,
                data_dir: args.data_dir,
                worker_bin: args.worker_bin,
                timeout: args.timeout.0,
            });
            return std::process::ExitCode::from(code as u8);
        }
        Command::Status(args) => {
            let opts = gateway::cli_status::Options::resolve(gateway::cli_status::Given {
                url: args.url,
                token: args.token,
                env_file: args.env_file,
                timeout: args.timeout.0,
                deep: args.deep,
                json: args.json,
            });
            return match opts {
                Ok(opts) => std::process::ExitCode::from(gateway::cli_status::run(&opts) as u8),
                Err(error) => {
                    eprintln!("clawgate status: {error:#}");
                    std::process::ExitCode::from(gateway::cli_status::EXIT_UNREACHABLE as u8)
                }
            };
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

/// A duration flag that must be more than zero.
fn positive(flag: &str, value: Dur) -> anyhow::Result<Duration> {
    anyhow::ensure!(!value.0.is_zero(), "--{flag} must be more than zero");
    Ok(value.0)
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
    let memory_max = config::check_worker_memory_max(args.worker_memory_max, args.allow_small_worker_memory)
        .map_err(anyhow::Error::msg)?;
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
    worker.memory_max = memory_max;
    worker.use_cgroup = args.worker_cgroup == WorkerCgroup::Auto;
    worker.heartbeat_interval =
        positive("worker-heartbeat", args.worker_heartbeat)?.max(Duration::from_millis(10));
    worker.job_timeout = positive("worker-job-timeout", args.worker_job_timeout)?;
    worker.cancel_grace = args.worker_cancel_grace.0;
    worker.restart.cooldown = positive("worker-cooldown", args.worker_cooldown)?;
    worker.restart.max_restarts = args.worker_max_restarts;
    worker.restart.window = positive("worker-restart-window", args.worker_restart_window)?;
    let budgets =
        gateway::budget::BudgetConfig::new(args.budgets, Some(&args.budget_tz), args.budget_interval.0)
            .map_err(anyhow::Error::msg)?;
    let config = gateway::Config {
        budgets,
        state_check_interval: positive("state-check-interval", args.state_check_interval)?,
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
        upstream: args.upstream,
        worker,
        request_timeout: positive("request-timeout", args.request_timeout)?,
        api: ApiTuning {
            max_queued_jobs: args.max_queued_jobs.max(1),
            cache_max_bytes: usize::try_from(args.cache_max_bytes.0).unwrap_or(usize::MAX),
            refresh_interval: args.refresh_interval.0,
            tick_interval: positive("tick-interval", args.tick_interval)?,
            header_read_timeout: positive("header-read-timeout", args.header_read_timeout)?,
            ws_send_timeout: positive("ws-send-timeout", args.ws_send_timeout)?,
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
    if let Some(v) = args.days {
        spec.days = v.max(1);
    }
    if let Some(v) = args.tool_result_bytes {
        spec.tool_result_bytes = v;
    }
    spec.wide = args.wide;
    let started = std::time::Instant::now();
    let manifest = demo_store::generate_or_reuse(&args.out, &spec)
        .with_context(|| format!("writing the demo store to {}", args.out.display()))?;
    if args.layout == Layout::Sqlite {
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
