//! `clawgate-proof`: puts a real clawgate through the seed incident's situation and worse, and
//! proves what it claims with figures anyone can rerun.
//!
//! It drives the built binaries as an operator would (it links neither the gateway nor the
//! worker): generates the seed-size demo store if absent, starts `clawgate serve` in managed
//! mode, and for `--duration` runs `/healthz` probes every 10 ms, dashboard-like WebSocket
//! clients, a writer appending turns to live sessions, and injected faults (worker SIGKILL,
//! SIGSTOP hangs, heap and RSS overruns). Every usage answer is checked against totals the
//! harness computes itself. It prints one JSON line on stdout (and a table on stderr) and exits
//! 0 only when every target is met (1: missed, 2: the run itself failed).

mod answer;
mod chaos;
mod ctx;
mod probe;
mod procs;
mod report;
mod truth;
mod writer;
mod ws;

use std::{
    collections::BTreeMap,
    io::Read as _,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use clap::Parser;
use serde_json::{Value, json};

use crate::{
    ctx::{Ctx, agent, status},
    report::Targets,
    truth::Truth,
};

/// Load, chaos and correctness proof for clawgate: probes, dashboard WebSocket clients, a
/// writer and injected worker faults against the real binaries; prints a one-line JSON
/// summary and exits non-zero when a target is missed.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// How long load and faults run (e.g. 60s, 2m, 500ms).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// The demo store to serve, generated there if absent and reused when it has the requested
    /// shape [default: a temporary directory, deleted after the run].
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
    /// Where `clawgate` and `clawgate-usage-worker` are [default: beside this executable].
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Agents in the store (the default shape is the seed incident's: 9 x 184 x 100, ~1.45 GB).
    #[arg(long, default_value_t = 9)]
    agents: u32,
    /// Sessions per agent.
    #[arg(long, default_value_t = 184)]
    sessions: u32,
    /// Turns per session (two assistant messages each).
    #[arg(long, default_value_t = 100)]
    turns: u32,
    /// Seed of the store and of the harness's random choices.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Dashboard-like WebSocket clients.
    #[arg(long, default_value_t = 20)]
    clients: usize,
    /// How often each client refreshes (`sessions.usage` + `usage.cost`), jittered ±30%.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    call_every: Duration,
    /// `limit` of the clients' `sessions.usage`.
    #[arg(long, default_value_t = 1000)]
    limit: u32,
    /// Clients reconnect after about this long (0.5-1.5x), as browser tabs come and go.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    reconnect_every: Duration,
    /// Nice value of the client threads, so that checking their answers yields the CPU to the
    /// gateway under test and the prober (0: same priority as everything else).
    #[arg(long, default_value_t = 10, allow_hyphen_values = true)]
    client_nice: i32,
    /// Run the client threads under `SCHED_IDLE` as well. The clients stand for browsers on
    /// other machines; on a 2-core host their parsing of 20 x 8 MB answers must not take CPU
    /// turns from the gateway and the prober. `--client-idle=false` measures with them competing.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    client_idle: bool,
    /// Parse a payload once when clients receive it byte for byte again (as 20 dashboards do
    /// with one cached answer): the harness's own parsing would otherwise take CPU from the
    /// gateway under test. Every answer is still checked. `--parse-memo=false` parses each.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    parse_memo: bool,
    /// A usage call unanswered after this is a failure.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    call_deadline: Duration,
    /// Interval of the `/healthz` probes.
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    probe_every: Duration,
    /// A probe slower than this fails.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    probe_timeout: Duration,
    /// Interval between the writer's appended turns, within a burst.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    append_every: Duration,
    /// Length of a burst of appends; between bursts the writer pauses until the answers show
    /// every append (a settle).
    #[arg(long, default_value = "4s", value_parser = parse_duration)]
    write_for: Duration,
    /// Longest a settle waits.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    settle_deadline: Duration,
    /// Longest the final settle (after the faults stop) waits for the exact final totals.
    #[arg(long, default_value = "90s", value_parser = parse_duration)]
    final_settle_deadline: Duration,
    /// SIGKILL the worker this often (0: never).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    kill_every: Duration,
    /// SIGSTOP the worker this often, a hang the supervisor must detect (0: never).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    hang_every: Duration,
    /// Inject a memory overrun this often, alternating heap (`alloc`) and RSS (`rss`) (0: never).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    memory_every: Duration,
    /// Run without memory faults against a worker built without fault injection (release
    /// builds need `--features usage-worker/faults`).
    #[arg(long)]
    no_memory_faults: bool,
    /// The worker's memory cap, passed to the gateway.
    #[arg(long, default_value = "512MiB", value_parser = parse_bytes)]
    worker_memory_max: u64,
    /// An extra argument for `clawgate serve` (repeatable), e.g. `--gateway-arg=--request-timeout=5s`.
    #[arg(long = "gateway-arg", value_name = "ARG", allow_hyphen_values = true)]
    gateway_args: Vec<String>,
    /// Target: probe p99.
    #[arg(long, default_value = "5ms", value_parser = parse_duration)]
    target_probe_p99: Duration,
    /// Target: slowest probe.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    target_probe_max: Duration,
    /// Target: the gateway's peak RSS (50 MB = 50,000,000 bytes).
    #[arg(long, default_value = "50MB", value_parser = parse_bytes)]
    target_gateway_rss: u64,
    /// Keep the work directory (gateway log, and the store when it is temporary). Without it, a
    /// run that misses a target still keeps a copy of the gateway log (its path is printed).
    #[arg(long)]
    keep_work: bool,
    /// Internal: be the probe process for the gateway at this base URL.
    #[arg(long, value_name = "URL", hide = true)]
    probe_child: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(base) = &args.probe_child {
        probe::child_main(base, args.probe_every, args.probe_timeout);
        return ExitCode::SUCCESS;
    }
    match run(&args) {
        Ok(summary) => {
            println!("{summary}");
            if summary["targetsMet"] == true { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(error) => {
            eprintln!("clawgate-proof: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// `60s`, `500ms`, `2m`, `1.5s`, or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len()));
    let value: f64 = number.trim().parse().map_err(|_| format!("not a duration: {text:?}"))?;
    let secs = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("unknown unit in {text:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{text:?}: {e}"))
}

/// `512MiB`, `50MB`, `1GiB`, `4096` (bytes).
fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len()));
    let value: f64 = number.trim().parse().map_err(|_| format!("not a size: {text:?}"))?;
    let factor: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "kib" | "k" => 1024.0,
        "mib" | "m" => 1024.0 * 1024.0,
        "gib" | "g" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("unknown unit in {text:?}")),
    };
    Ok((value * factor) as u64)
}

/// `YYYY-MM-DD` (UTC) of a day number since 1970-01-01: the date part of the generator's own
/// ISO timestamps.
fn day_string(days: i64) -> String {
    demo_store::iso(days * 86_400_000)[..10].to_owned()
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn bin_dir(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &args.bin_dir {
        return Ok(dir.clone());
    }
    let exe = std::env::current_exe().context("locating this executable")?;
    Ok(exe.parent().context("this executable's directory")?.to_path_buf())
}

fn optional(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// Waits (60 s at most) for a worker the gateway reports ready.
fn wait_ready(ctx: &Ctx) -> anyhow::Result<()> {
    let http = agent(Duration::from_secs(5));
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let last = status(ctx, &http);
        if let Ok(s) = &last {
            if matches!(s["worker"]["state"].as_str(), Some("ready" | "busy")) {
                return Ok(());
            }
        }
        if Instant::now() > end {
            bail!("the worker never became ready: {last:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads every file under `dir` and drops the bytes; returns how many were read.
fn read_tree(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                dirs.push(entry.path());
                continue;
            }
            total += std::io::copy(&mut std::fs::File::open(entry.path())?, &mut std::io::sink())?;
        }
    }
    Ok(total)
}

fn run(args: &Args) -> anyhow::Result<Value> {
    let bins = bin_dir(args)?;
    let (clawgate, worker_bin) = (bins.join("clawgate"), bins.join("clawgate-usage-worker"));
    for bin in [&clawgate, &worker_bin] {
        if !bin.is_file() {
            bail!(
                "{} is missing: build with `cargo build --release --workspace --bins` (or pass --bin-dir)",
                bin.display()
            );
        }
    }
    let work =
        tempfile::Builder::new().prefix("clawgate-proof-").tempdir().context("creating a work directory")?;
    let store = match &args.store {
        Some(dir) => dir.clone(),
        None => work.path().join("store"),
    };
    std::fs::create_dir_all(&store).with_context(|| format!("creating {}", store.display()))?;
    let restored = truth::restore_from_marker(&store)?;
    if restored > 0 {
        eprintln!("clawgate-proof: undid an interrupted run's appends to {restored} transcripts");
    }
    let spec = demo_store::DemoSpec {
        agents: args.agents,
        sessions_per_agent: args.sessions,
        turns_per_session: args.turns,
        seed: args.seed,
        ..demo_store::DemoSpec::default()
    };
    let generating = Instant::now();
    let manifest = demo_store::generate_or_reuse(&store, &spec)
        .with_context(|| format!("preparing the demo store in {}", store.display()))?;
    let store = std::fs::canonicalize(&store)?;
    eprintln!(
        "clawgate-proof: store {} ready in {:.1} s: {} sessions, {} files, {} bytes",
        store.display(),
        generating.elapsed().as_secs_f64(),
        manifest.sessions,
        manifest.files,
        manifest.bytes
    );
    // A host whose sessions are being written has them in its page cache; a store generated
    // earlier may not be. Read it once so the run measures the gateway, not the disk: from a
    // cold disk the first full parse can outlast the gateway's 10 s request deadline.
    let warming = Instant::now();
    let warmed = read_tree(&store.join("agents")).context("reading the store into the page cache")?;
    eprintln!(
        "clawgate-proof: read {warmed} bytes of the store in {:.1} s (page cache)",
        warming.elapsed().as_secs_f64()
    );
    let agents: Vec<String> = manifest.by_agent.keys().cloned().collect();
    let live = writer::live_sessions(&store, &agents)?;
    let day = |ms: i64| ms.div_euclid(86_400_000);
    // Every day with data, and two days past today: appended turns are stamped now and later.
    let dates = (day_string(day(manifest.first_ms.unwrap_or(0))), day_string(day(now_ms()) + 2));

    let token = random_token()?;
    let data_dir = work.path().join("data");
    let mut gateway_args: Vec<String> = vec![
        "--state-dir".into(),
        store.display().to_string(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--worker-memory-max".into(),
        format!("{}B", args.worker_memory_max),
        // A cap below clawgate's 256 MiB floor is a drill: the memory faults reach it sooner,
        // but the heap budget (80%) no longer promises that a refused overrun stays under it.
        "--allow-small-worker-memory".into(),
        // Chaos restarts the worker far more often than the crash-loop guard allows by default
        // (5 a minute); parking it in `failed` would measure that guard, not the system.
        "--worker-max-restarts".into(),
        "1000".into(),
    ];
    gateway_args.extend(args.gateway_args.iter().cloned());
    let mut gateway = procs::Gateway::start(&clawgate, &worker_bin, work.path(), &gateway_args, &token)?;
    let truth = Truth::new(&store, &manifest);
    let mut ctx = Ctx::new(gateway.addr, token, gateway.pid(), truth, dates);
    if !args.parse_memo {
        ctx.parse_memo = None;
    }
    let ctx = Arc::new(ctx);

    let sampler_stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (ctx, stop) = (Arc::clone(&ctx), Arc::clone(&sampler_stop));
        std::thread::spawn(move || procs::sampler(ctx, stop))
    };
    wait_ready(&ctx)?;
    let cap_mib = args.worker_memory_max >> 20;
    let memory_faults = !args.no_memory_faults && optional(args.memory_every).is_some();
    if memory_faults && !chaos::preflight(&ctx, cap_mib)? {
        bail!(
            "{} ignores __fault__ keys: build it with fault injection (`cargo build --release --workspace --bins --features usage-worker/faults`) or pass --no-memory-faults",
            worker_bin.display()
        );
    }
    eprintln!(
        "clawgate-proof: gateway {} (pid {}), {} clients, {} s of load and faults",
        ctx.base,
        ctx.gateway_pid,
        args.clients,
        args.duration.as_secs_f64()
    );

    // The measured window.
    let window = Instant::now();
    let exe = std::env::current_exe().context("locating this executable")?;
    let prober = probe::Prober::start(&exe, &ctx.base, args.probe_every, args.probe_timeout)?;
    let ws_stop = Arc::new(AtomicBool::new(false));
    let ws_config = ws::WsConfig {
        call_every: args.call_every,
        reconnect_every: args.reconnect_every,
        call_deadline: args.call_deadline,
        limit: args.limit,
        clients: args.clients,
        nice: args.client_nice,
        idle: args.client_idle,
    };
    let clients: Vec<_> = (0..args.clients)
        .map(|i| {
            let (ctx, stop, config) = (Arc::clone(&ctx), Arc::clone(&ws_stop), ws_config.clone());
            std::thread::spawn(move || ws::client(ctx, i, config, stop))
        })
        .collect();
    let writer_stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (ctx, stop) = (Arc::clone(&ctx), Arc::clone(&writer_stop));
        let config = writer::WriterConfig {
            append_every: args.append_every,
            write_for: args.write_for,
            settle_deadline: args.settle_deadline,
            seed: args.seed,
        };
        std::thread::spawn(move || writer::run(ctx, live, config, stop))
    };
    let chaos_stop = Arc::new(AtomicBool::new(false));
    let chaos = {
        let (ctx, stop) = (Arc::clone(&ctx), Arc::clone(&chaos_stop));
        let config = chaos::ChaosConfig {
            kill_every: optional(args.kill_every),
            hang_every: optional(args.hang_every),
            memory_every: optional(args.memory_every).filter(|_| memory_faults),
            cap_mib,
            hang_deadline: Duration::from_secs(15),
        };
        std::thread::spawn(move || chaos::run(ctx, config, stop))
    };

    let end = window + args.duration;
    let mut next_report = window + Duration::from_secs(10);
    // The gateway's own runtime-lag figures (30 s windows), worst seen: they tell a stall of the
    // gateway's runtime from probes that waited for a CPU.
    let mut lag = LagSeen::default();
    let status_http = agent(Duration::from_secs(5));
    while Instant::now() < end {
        std::thread::sleep(end.saturating_duration_since(Instant::now()).min(Duration::from_millis(200)));
        if Instant::now() >= next_report && Instant::now() < end {
            next_report += Duration::from_secs(10);
            let calls = ctx.calls();
            let event_loop =
                status(&ctx, &status_http).map(|s| s["eventLoop"].clone()).unwrap_or(Value::Null);
            lag.see(&event_loop);
            eprintln!(
                "clawgate-proof: {:>5.1}s  calls ok {} (stale {}) fault-errors {} failures {}  checked {} wrong {}  appends {}  generations {}  gateway lag p99 {} ms max {} ms",
                window.elapsed().as_secs_f64(),
                calls.ok,
                calls.stale,
                calls.fault_errors,
                calls.failures,
                calls.checked,
                calls.wrong,
                ctx.truth.expected().1,
                ctx.generation.load(Ordering::Relaxed),
                event_loop["delayP99Ms"],
                event_loop["delayMaxMs"],
            );
        }
    }
    let measured = window.elapsed();

    // Faults stop first, then writes and dashboards; then the answers must reach the exact
    // final totals while probes go on.
    chaos_stop.store(true, Ordering::Relaxed);
    let _ = chaos.join();
    writer_stop.store(true, Ordering::Relaxed);
    let settles = writer.join().map_err(|_| anyhow::anyhow!("the writer panicked"))??;
    ws_stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.join();
    }
    let final_started = Instant::now();
    let mut final_settles = writer::Settles::default();
    let final_converged =
        writer::settle(&ctx, args.final_settle_deadline, &AtomicBool::new(false), &mut final_settles);
    let final_ms = final_started.elapsed().as_millis() as u64;
    let probes = prober.finish()?;
    let final_status = status(&ctx, &agent(Duration::from_secs(5))).unwrap_or(Value::Null);
    lag.see(&final_status["eventLoop"]);
    sampler_stop.store(true, Ordering::Relaxed);
    let memory = sampler.join().map_err(|_| anyhow::anyhow!("the sampler panicked"))?;
    gateway.stop();
    let restored = ctx.truth.restore()?;
    eprintln!("clawgate-proof: restored {restored} touched transcripts to their original length");

    let summary = summarize(&Summary {
        args,
        ctx: &ctx,
        store: &store,
        manifest: &manifest,
        measured,
        probes: &probes,
        memory: &memory,
        settles: &settles,
        parses_shared: ctx
            .parse_memo
            .as_ref()
            .map_or(0, |m| m.hits.load(std::sync::atomic::Ordering::Relaxed)),
        final_settle: (final_converged, final_ms, final_settles.examples.first().cloned()),
        final_status: &final_status,
        lag: &lag,
    });
    let missed = summary["missed"].as_array().is_some_and(|m| !m.is_empty());
    if args.keep_work {
        eprintln!("clawgate-proof: work directory kept: {}", work.keep().display());
    } else if missed {
        // A missed target must leave evidence, and the work directory may hold a 1.45 GB store.
        let kept = std::env::temp_dir().join(format!("clawgate-proof-{}-gateway.log", std::process::id()));
        match std::fs::copy(&gateway.log, &kept) {
            Ok(_) => eprintln!("clawgate-proof: a target was missed; gateway log kept: {}", kept.display()),
            Err(e) => eprintln!("clawgate-proof: cannot keep the gateway log {}: {e}", gateway.log.display()),
        }
    } else {
        eprintln!(
            "clawgate-proof: gateway log: {} (deleted with the work directory; --keep-work keeps it)",
            gateway.log.display()
        );
    }
    eprint!("{}", report::table(&summary));
    Ok(summary)
}

struct Summary<'a> {
    args: &'a Args,
    ctx: &'a Ctx,
    store: &'a Path,
    manifest: &'a demo_store::DemoManifest,
    measured: Duration,
    probes: &'a Value,
    memory: &'a procs::MemoryReport,
    settles: &'a writer::Settles,
    /// Answers checked with the parse of an identical payload (see `answer::ParseMemo`).
    parses_shared: u64,
    final_settle: (bool, u64, Option<String>),
    final_status: &'a Value,
    lag: &'a LagSeen,
}

/// The worst of the gateway's `eventLoop` figures over the run.
#[derive(Default)]
struct LagSeen {
    p99_ms: f64,
    max_ms: f64,
    cpu_core_ratio: f64,
}

impl LagSeen {
    fn see(&mut self, event_loop: &Value) {
        let get = |name: &str| event_loop[name].as_f64().unwrap_or(0.0);
        self.p99_ms = self.p99_ms.max(get("delayP99Ms"));
        self.max_ms = self.max_ms.max(get("delayMaxMs"));
        self.cpu_core_ratio = self.cpu_core_ratio.max(get("cpuCoreRatio"));
    }
}

fn summarize(s: &Summary<'_>) -> Value {
    let calls = s.ctx.calls();
    let ws = s.ctx.ws();
    let injected = s.ctx.injected();
    let (expected, appends) = s.ctx.truth.expected();
    let worker = &s.final_status["worker"];
    let by_cause: BTreeMap<String, u64> = worker["restartsByCause"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))).collect())
        .unwrap_or_default();
    let unexpected = report::unexpected_exits(&by_cause, injected.sigkill, injected.sigstop, injected.rss);
    let appended_tokens = expected.total_tokens - s.ctx.truth.manifest().total_tokens;
    let targets = Targets {
        probe_p99_ms: s.args.target_probe_p99.as_secs_f64() * 1000.0,
        probe_max_ms: s.args.target_probe_max.as_secs_f64() * 1000.0,
        gateway_rss_bytes: s.args.target_gateway_rss,
        worker_cap_bytes: s.args.worker_memory_max,
    };
    let mut summary = json!({
        "schema": "clawgate.proof/v1",
        "durationS": (s.measured.as_secs_f64() * 10.0).round() / 10.0,
        "store": {
            "dir": s.store.display().to_string(),
            "shape": format!("{}x{}x{}", s.args.agents, s.args.sessions, s.args.turns),
            "sessions": s.manifest.sessions,
            "files": s.manifest.files,
            "bytes": s.manifest.bytes,
        },
        "probes": s.probes,
        "ws": {
            "clients": s.args.clients,
            "clientNice": s.args.client_nice,
            "clientIdle": s.args.client_idle,
            "parseMemo": s.args.parse_memo,
            "connects": ws.connects,
            "unexpectedCloses": ws.unexpected_closes,
            "connectFailures": ws.connect_failures,
            "gracefulCloses": ws.graceful_closes,
            "events": ws.events,
            "examples": ws.examples,
        },
        "usage": {
            "ok": calls.ok,
            "stale": calls.stale,
            "faultErrors": calls.fault_errors,
            "failures": calls.failures,
            "cold": report::latency(&calls.cold),
            "warm": report::latency(&calls.warm),
            "failureExamples": calls.failure_examples,
        },
        "correctness": {
            "checked": calls.checked,
            "checkedExact": calls.checked_exact,
            "parsesShared": s.parses_shared,
            "wrong": calls.wrong,
            "wrongExamples": calls.wrong_examples,
            "appends": appends,
            "appendedTokens": appended_tokens,
            "expectedTotalTokens": expected.total_tokens,
            "expectedTotalCost": expected.total_cost,
            "settles": {
                "converged": s.settles.converged,
                "timedOut": s.settles.timed_out,
                "took": report::latency(&s.settles.took),
                "examples": s.settles.examples,
            },
            "finalSettle": {"converged": s.final_settle.0, "ms": s.final_settle.1, "why": s.final_settle.2},
        },
        "faults": {
            "sigkill": injected.sigkill,
            "sigkillSkipped": injected.sigkill_skipped,
            "sigstop": injected.sigstop,
            "sigstopSkipped": injected.sigstop_skipped,
            "hangsUndetected": injected.hangs_undetected,
            "hangsContinued": injected.hangs_continued,
            "alloc": injected.alloc,
            "allocRefused": injected.alloc_refused,
            "rss": injected.rss,
            "rssKilled": injected.rss_killed,
            "memoryInterrupted": injected.memory_interrupted,
            "deferred": injected.deferred,
            "memorySkipped": injected.memory_skipped,
            "memoryDelayed": injected.memory_delayed,
            "unexpectedOutcomes": injected.unexpected_outcomes,
        },
        "worker": {
            "restarts": worker["restarts"],
            "restartsByCause": by_cause,
            "unexpectedExits": unexpected,
            "generations": s.memory.generations,
            "peakRssBytes": s.memory.worker_peak,
            "peakAtS": (s.memory.worker_peak_at_s * 10.0).round() / 10.0,
            "allocFaultPeakRssBytes": s.memory.alloc_fault_peak,
            "capBytes": s.args.worker_memory_max,
            "rssFaultPeakBytes": s.memory.rss_fault_peak,
        },
        "gateway": {
            "peakRssBytes": s.memory.gateway_peak,
            "targetRssBytes": s.args.target_gateway_rss,
            "runtimeLagWorstP99Ms": s.lag.p99_ms,
            "runtimeLagMaxMs": s.lag.max_ms,
            "cpuCoreRatioMax": s.lag.cpu_core_ratio,
        },
    });
    let missed = report::missed(&summary, &targets);
    summary["targetsMet"] = json!(missed.is_empty());
    summary["missed"] = json!(missed);
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_sizes_and_days_parse() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("10ms"), Ok(Duration::from_millis(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("fast").is_err());
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("50MB"), Ok(50_000_000));
        assert_eq!(day_string(0), "1970-01-01");
        assert_eq!(day_string(20_423), "2025-12-01");
        assert_eq!(day_string(-1), "1969-12-31");
    }
}
