//! The usage engine's benchmark, end to end through the real worker process:
//! `cargo bench -p usage-worker --bench engine`.
//!
//! It generates (or reuses) the seed-size demo store (9 agents x 184 sessions x 100 turns,
//! ~1.45 GB), a half-size one (9 x 92) and one with the seed's sessions but twice its bytes
//! (tool results twice as long) under `$CLAWGATE_BENCH_DIR` (kept between runs) or a
//! temporary dir, then for each store: `cat`s every transcript to /dev/null (the physical
//! reference), starts the release `clawgate-usage-worker` exactly as the supervisor does (a
//! private socket, `Hello` both ways, requests as ipc-proto frames) and times a cold call, warm
//! calls, calls after appending one turn to one session, and the first calls after a restart
//! that reloads the persisted cache. Peak RSS is the worker's `VmHWM` from /proc. It prints
//! one table with both stores side by side and a one-line JSON summary.
//! Timings are wall-clock times of the request/response round trip, as the gateway sees them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use interprocess::local_socket::traits::tokio::Listener as _;
use ipc_proto::{
    AgentScope, Connection, DayZone, FromWorker, GroupBy, MAX_RESPONSE_FRAME, Method, ToWorker, UsageAnswer,
    UsageQuery, UsageReply,
};

/// The worker binary cargo built next to this bench (same profile).
const WORKER: &str = env!("CARGO_BIN_EXE_clawgate-usage-worker");
/// Warm and append calls are repeated this many times; the table shows the median.
const REPEAT: usize = 5;

type Conn = Connection<interprocess::local_socket::tokio::Stream>;

/// One running worker and our end of its connection.
struct Worker {
    child: Child,
    conn: Conn,
    next_id: u64,
}

struct Paths {
    store: PathBuf,
    cache: PathBuf,
    run: PathBuf,
    log: PathBuf,
}

impl Worker {
    async fn start(p: &Paths) -> Worker {
        ipc_proto::endpoint::ensure_private_dir(&p.run).expect("run dir");
        let sock = p.run.join("worker.sock");
        let listener = ipc_proto::endpoint::bind(&sock).expect("bind");
        let log = fs::OpenOptions::new().create(true).append(true).open(&p.log).expect("log file");
        let child = Command::new(WORKER)
            .arg("--socket")
            .arg(&sock)
            .arg("--state-dir")
            .arg(&p.store)
            .arg("--data-dir")
            .arg(&p.cache)
            .args(["--threads", "2"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {WORKER}: {e}"));
        let stream = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .expect("worker connects within 10 s")
            .expect("accept");
        let mut conn = Connection::new(stream, MAX_RESPONSE_FRAME);
        conn.handshake_as_gateway("bench").await.expect("handshake");
        Worker { child, conn, next_id: 1 }
    }

    /// One request; returns the answer and the round-trip time.
    async fn call(&mut self, query: &UsageQuery) -> (UsageAnswer, Duration) {
        let id = self.next_id;
        self.next_id += 1;
        let t = Instant::now();
        self.conn.write(&ToWorker::Request { id, query: query.clone(), known: None }).await.expect("send");
        loop {
            match self.conn.read::<FromWorker>().await.expect("read").expect("worker closed") {
                FromWorker::Response { id: got, result } if got == id => {
                    let elapsed = t.elapsed();
                    return match result.unwrap_or_else(|e| panic!("{} failed: {e}", query.method.name())) {
                        UsageReply::Answer(a) => (a, elapsed),
                        UsageReply::Unchanged { .. } => unreachable!("no fingerprint was sent"),
                    };
                }
                _ => {}
            }
        }
    }

    /// `VmHWM` (peak RSS) in bytes.
    fn peak_rss(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// Asks for a clean shutdown (which persists the cache) and waits for the exit.
    async fn stop(mut self) {
        let _ = self.conn.write(&ToWorker::Shutdown).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn query(method: Method) -> UsageQuery {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    UsageQuery {
        method,
        start_ms: 0,
        end_ms: now + 86_400_000,
        agents: AgentScope::All,
        key: None,
        limit: Some(1000),
        group_by: GroupBy::Instance,
        day_zone: DayZone::Utc,
        include_context_weight: false,
        offset: None,
        sort: None,
        search: None,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn transcripts(store: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for agent in fs::read_dir(store.join("agents")).expect("agents dir") {
        let sessions = agent.expect("agent").path().join("sessions");
        for f in fs::read_dir(&sessions).into_iter().flatten().flatten() {
            if f.file_name().to_string_lossy().contains(".jsonl") {
                out.push(f.path());
            }
        }
    }
    out.sort();
    out
}

fn total_tokens(answer: &UsageAnswer) -> u64 {
    let v: serde_json::Value = serde_json::from_str(&answer.payload_text()).expect("payload JSON");
    v["totals"]["totalTokens"].as_u64().expect("totals.totalTokens")
}

/// Everything measured on one store.
#[derive(Default)]
struct Figures {
    label: String,
    files: u64,
    bytes: u64,
    cat: Duration,
    cold: Duration,
    cold_parsed: u64,
    warm_cost: Duration,
    warm_sessions: Duration,
    append_cost: Duration,
    append_sessions: Duration,
    restart_handshake: Duration,
    restart_sessions: Duration,
    restart_cost: Duration,
    /// Bytes the restarted worker parsed again (0 when its persisted cache was used).
    restart_parsed: u64,
    answer_bytes: u64,
    rss_first: u64,
    rss_restarted: u64,
}

async fn measure(label: &str, root: &Path, spec: &demo_store::DemoSpec) -> Figures {
    let store = root.join(label);
    fs::create_dir_all(&store).expect("store dir");
    let t = Instant::now();
    let marker = root.join(format!("{label}-appended.json"));
    undo_appends(&marker);
    let manifest = demo_store::generate_or_reuse(&store, spec).expect("generate the store");
    eprintln!("[{label}] store ready in {:.1?} ({} files)", t.elapsed(), manifest.files);
    let p = Paths {
        store: store.clone(),
        cache: root.join(format!("{label}-cache")),
        run: root.join(format!("{label}-run")),
        log: root.join(format!("{label}-worker.log")),
    };
    let _ = fs::remove_dir_all(&p.cache);
    let files = transcripts(&store);
    let mut f = Figures { label: label.to_owned(), files: files.len() as u64, ..Figures::default() };
    f.bytes = files.iter().map(|p| fs::metadata(p).map_or(0, |m| m.len())).sum();

    // The physical reference: read every transcript once (twice; the first warms the page
    // cache the way the generator left it, the second is timed).
    for round in 0..2 {
        let t = Instant::now();
        // In chunks: one argument list cannot hold 60,000 paths.
        for chunk in files.chunks(4096) {
            let status = Command::new("cat")
                .args(chunk)
                .stdout(fs::File::create("/dev/null").expect("/dev/null"))
                .status()
                .expect("run cat");
            assert!(status.success());
        }
        if round == 1 {
            f.cat = t.elapsed();
        }
    }

    let sessions_q = query(Method::SessionsUsage);
    let cost_q = query(Method::UsageCost);
    let mut w = Worker::start(&p).await;
    let (a, cold) = w.call(&sessions_q).await;
    f.cold = cold;
    f.cold_parsed = a.stats.bytes_parsed;
    f.answer_bytes = a.data_json.len() as u64;
    assert_eq!(total_tokens(&a), manifest.totals.total_tokens, "cold totals match the manifest");
    eprintln!("[{label}] cold {cold:.1?}");

    let mut cost = Vec::new();
    let mut sess = Vec::new();
    for _ in 0..REPEAT {
        cost.push(w.call(&cost_q).await.1);
        sess.push(w.call(&sessions_q).await.1);
    }
    f.warm_cost = median(cost);
    f.warm_sessions = median(sess);

    // Append one turn (4 lines) to one session, then call; each method after its own append.
    let target = files.iter().find(|p| p.extension().is_some_and(|e| e == "jsonl")).expect("a transcript");
    let original_len = fs::metadata(target).expect("transcript").len();
    fs::write(&marker, serde_json::json!({"path": target, "len": original_len}).to_string()).expect("marker");
    let mut appended = 0u64;
    let mut at = manifest.last_ms.unwrap_or(0) + 60_000;
    let (mut cost, mut sess) = (Vec::new(), Vec::new());
    for i in 0..REPEAT as u64 {
        appended += demo_store::append_turn(target, 1000 + 2 * i, at).expect("append").total_tokens;
        at += 600_000;
        let (a, d) = w.call(&cost_q).await;
        assert_eq!(a.stats.files_parsed, 1, "only the appended file is parsed");
        assert_eq!(total_tokens(&a), manifest.totals.total_tokens + appended);
        cost.push(d);
        appended += demo_store::append_turn(target, 1001 + 2 * i, at).expect("append").total_tokens;
        at += 600_000;
        sess.push(w.call(&sessions_q).await.1);
    }
    f.append_cost = median(cost);
    f.append_sessions = median(sess);
    f.rss_first = w.peak_rss();
    w.stop().await;

    // Restart: a new process answers from the persisted cache.
    let t = Instant::now();
    let mut w = Worker::start(&p).await;
    f.restart_handshake = t.elapsed();
    let (a, d) = w.call(&sessions_q).await;
    f.restart_sessions = d;
    f.restart_parsed = a.stats.bytes_parsed;
    let (a, d) = w.call(&cost_q).await;
    f.restart_cost = d;
    assert_eq!(total_tokens(&a), manifest.totals.total_tokens + appended);
    f.rss_restarted = w.peak_rss();
    w.stop().await;
    undo_appends(&marker);
    f
}

/// Cuts the transcript the bench appended to back to its generated length, so the store keeps
/// matching its manifest (also after an interrupted run, which leaves the marker behind).
fn undo_appends(marker: &Path) {
    let Ok(text) = fs::read_to_string(marker) else { return };
    let v: serde_json::Value = serde_json::from_str(&text).expect("append marker");
    let path = PathBuf::from(v["path"].as_str().expect("path"));
    let len = v["len"].as_u64().expect("len");
    if let Ok(f) = fs::OpenOptions::new().write(true).open(&path) {
        f.set_len(len).expect("truncate the appended transcript");
    }
    fs::remove_file(marker).expect("remove the append marker");
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 100.0 { format!("{ms:.0} ms") } else { format!("{ms:.1} ms") }
}

fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

/// How one table cell is computed from a store's figures.
type Cell = Box<dyn Fn(&Figures) -> String>;

fn print_table(figs: &[Figures]) {
    let rows: Vec<(&str, Cell)> = vec![
        ("transcript files", Box::new(|f| f.files.to_string())),
        ("transcript bytes", Box::new(|f| mb(f.bytes))),
        ("cat to /dev/null", Box::new(|f| ms(f.cat))),
        (
            "cold sessions.usage (limit 1000)",
            Box::new(|f| format!("{} = {:.2}x cat", ms(f.cold), f.cold.as_secs_f64() / f.cat.as_secs_f64())),
        ),
        (
            "  parse rate",
            Box::new(|f| format!("{:.0} MB/s", f.cold_parsed as f64 / 1e6 / f.cold.as_secs_f64())),
        ),
        ("  answer size", Box::new(|f| mb(f.answer_bytes))),
        ("warm usage.cost", Box::new(|f| ms(f.warm_cost))),
        ("warm sessions.usage", Box::new(|f| ms(f.warm_sessions))),
        ("append 1 turn + usage.cost", Box::new(|f| ms(f.append_cost))),
        ("append 1 turn + sessions.usage", Box::new(|f| ms(f.append_sessions))),
        ("restart: spawn + handshake", Box::new(|f| ms(f.restart_handshake))),
        ("restart: first sessions.usage", Box::new(|f| ms(f.restart_sessions))),
        ("restart: then usage.cost", Box::new(|f| ms(f.restart_cost))),
        ("restart: bytes re-parsed", Box::new(|f| mb(f.restart_parsed))),
        ("peak RSS, first worker", Box::new(|f| mb(f.rss_first))),
        ("peak RSS, restarted worker", Box::new(|f| mb(f.rss_restarted))),
    ];
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let cells: Vec<Vec<String>> = rows.iter().map(|(_, f)| figs.iter().map(f).collect()).collect();
    let widths: Vec<usize> = (0..figs.len())
        .map(|i| cells.iter().map(|c| c[i].len()).chain([figs[i].label.len()]).max().unwrap_or(0))
        .collect();
    let mut head = format!("| {:w0$} |", "");
    let mut rule = format!("|{}|", "-".repeat(w0 + 2));
    for (f, w) in figs.iter().zip(&widths) {
        head += &format!(" {:>w$} |", f.label);
        rule += &format!("{}:|", "-".repeat(w + 1));
    }
    println!("{head}\n{rule}");
    for ((name, _), c) in rows.iter().zip(&cells) {
        let mut line = format!("| {name:w0$} |");
        for (v, w) in c.iter().zip(&widths) {
            line += &format!(" {v:>w$} |");
        }
        println!("{line}");
    }
}

fn json_summary(figs: &[Figures]) -> String {
    let v: Vec<serde_json::Value> = figs
        .iter()
        .map(|f| {
            let ms = |d: Duration| (d.as_secs_f64() * 1e4).round() / 10.0;
            serde_json::json!({
                "store": f.label, "files": f.files, "bytes": f.bytes,
                "catMs": ms(f.cat), "coldMs": ms(f.cold), "coldOverCat": (f.cold.as_secs_f64() / f.cat.as_secs_f64() * 100.0).round() / 100.0,
                "warmCostMs": ms(f.warm_cost), "warmSessionsMs": ms(f.warm_sessions),
                "appendCostMs": ms(f.append_cost), "appendSessionsMs": ms(f.append_sessions),
                "restartHandshakeMs": ms(f.restart_handshake), "restartSessionsMs": ms(f.restart_sessions),
                "restartCostMs": ms(f.restart_cost), "answerBytes": f.answer_bytes,
                "peakRssBytes": f.rss_first.max(f.rss_restarted),
            })
        })
        .collect();
    serde_json::Value::Array(v).to_string()
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is accepted and ignored.
    let (_tmp, root) = match std::env::var_os("CLAWGATE_BENCH_DIR") {
        Some(d) => (None, PathBuf::from(d)),
        None => {
            let t = tempfile::tempdir().expect("temp dir");
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    fs::create_dir_all(&root).expect("bench dir");
    if !Path::new(WORKER).is_file() {
        eprintln!("{WORKER} is missing; build it with `cargo build --release -p usage-worker`");
        std::process::exit(2);
    }
    let seed = demo_store::DemoSpec::seed_size();
    let half = demo_store::DemoSpec { sessions_per_agent: seed.sessions_per_agent / 2, ..seed.clone() };
    // Same sessions and messages as the seed store, twice the bytes (tool results): memory
    // should follow sessions, not bytes.
    let fat = demo_store::DemoSpec { tool_result_bytes: seed.tool_result_bytes * 2, ..seed.clone() };
    // Many short sessions over a year (issue 16): memory must follow the answer, not sessions.
    let many = demo_store::DemoSpec {
        agents: 9,
        sessions_per_agent: 6_000,
        turns_per_session: 3,
        days: 365,
        ..demo_store::DemoSpec::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    // `CLAWGATE_BENCH_ONLY=seed|half|fat` measures one store (for profiling).
    let only = std::env::var("CLAWGATE_BENCH_ONLY").unwrap_or_default();
    let figs = runtime.block_on(async {
        let mut figs = Vec::new();
        for (name, label, spec) in [
            ("seed", "seed-9x184", &seed),
            ("half", "half-9x92", &half),
            ("fat", "seed-2x-bytes", &fat),
            ("many", "many-9x6000", &many),
        ] {
            if only.is_empty() || only == name {
                figs.push(measure(label, &root, spec).await);
            }
        }
        figs
    });
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_default();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    println!("`cargo bench -p usage-worker --bench engine`, {date}");
    println!(
        "worker {WORKER} (--threads 2), {} cores ({cpu}), page cache warm; warm/append rows are medians of {REPEAT} calls",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    print_table(&figs);
    println!("{}", json_summary(&figs));
}
