//! The usage engine's benchmark, end to end through the real worker process:
//! `cargo bench -p usage-worker --bench engine` (all stores), or
//! `CLAWGATE_BENCH_ONLY=seed,many cargo bench -p usage-worker --bench engine`.
//!
//! For each store it generates (or reuses, under `$CLAWGATE_BENCH_DIR`, else a temporary dir):
//! syncs it (a store at rest), `cat`s it to /dev/null (the physical reference: the median of
//! three timed reads after one that warms the page cache), starts the release
//! `clawgate-usage-worker` exactly as the supervisor does (a private socket, `Hello` both ways,
//! requests as ipc-proto frames, the heap budget of the default 512 MiB cap) and times a cold
//! `sessions.usage` (limit 1000, all agents, all time), warm calls, calls after appending one
//! turn to one session as OpenClaw writes it (the transcript and a rewritten `sessions.json`;
//! in the SQLite layout the events and the session's window and node), and the first calls of a
//! restarted worker over its index. Peak RSS is
//! the worker's `VmHWM` from /proc. It prints one table with the stores side by side, each
//! issue #16 target with its verdict, and a one-line JSON summary. Every answer's token totals
//! are checked against the generator's manifest. Timings are round trips as the gateway sees
//! them.
//!
//! Stores: `seed` (the incident: 9 agents x 184 sessions x 100 turns, 1.45 GB), `seed-sqlite`
//! (the same in OpenClaw 2026.7+'s SQLite layout, as OpenClaw's import leaves such a store; the
//! seed's targets), `many` (9 x 6,000 short sessions over a year), `many-sqlite` (the same in
//! SQLite), `huge` (9 x 22,000 sessions), `huge-sqlite` (the same in SQLite), `one` (one agent
//! of 54,000 sessions), `one-sqlite` (the same in SQLite) and `wide`
//! (sessions spanning weeks of quarter hours, a model switch every three turns, tools from a
//! wide set).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use interprocess::local_socket::traits::tokio::Listener as _;
use ipc_proto::{
    AgentScope, Connection, DayZone, FromWorker, GroupBy, MAX_RESPONSE_FRAME, Method, ToWorker, UsageAnswer,
    UsageQuery, UsageReply,
};
use rusqlite::params;

/// The worker binary cargo built next to this bench (same profile).
const BUILT_WORKER: &str = env!("CARGO_BIN_EXE_clawgate-usage-worker");

/// The worker benchmarked: `CLAWGATE_BENCH_WORKER` (another build, for side-by-side runs), else
/// the one cargo built.
fn worker() -> String {
    std::env::var("CLAWGATE_BENCH_WORKER").unwrap_or_else(|_| BUILT_WORKER.to_owned())
}
/// Warm and append calls are repeated this many times; the table shows the median.
const REPEAT: usize = 5;
/// The gateway's default `--worker-memory-max`, and the heap budget it gives the worker (80%).
const DEFAULT_CAP: u64 = 512 << 20;

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
        let child = Command::new(worker())
            .arg("--socket")
            .arg(&sock)
            .arg("--state-dir")
            .arg(&p.store)
            .arg("--data-dir")
            .arg(&p.cache)
            .args(["--threads", "2"])
            .arg("--memory-budget")
            .arg((DEFAULT_CAP / 10 * 8).to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", worker()));
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

    /// Asks for a clean shutdown and waits for the exit.
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
        entries_only: false,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Every file of the store that holds transcripts: JSONL files, or the agent databases.
fn store_files(store: &Path, sqlite: bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for agent in fs::read_dir(store.join("agents")).expect("agents dir") {
        let agent = agent.expect("agent entry").path();
        if sqlite {
            let db = agent.join("agent/openclaw-agent.sqlite");
            if db.is_file() {
                out.push(db);
            }
            continue;
        }
        for f in fs::read_dir(agent.join("sessions")).expect("sessions dir") {
            let p = f.expect("entry").path();
            let name = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
            if name.contains(".jsonl") {
                out.push(p);
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

/// One store of the benchmark.
struct StoreSpec {
    name: &'static str,
    spec: demo_store::DemoSpec,
    sqlite: bool,
    targets: Targets,
}

/// Issue #16's targets for one store (`None`: none set).
#[derive(Clone, Copy, Default)]
struct Targets {
    cold_over_cat: Option<f64>,
    warm_ms: Option<f64>,
    append_ms: Option<f64>,
    restart_ms: Option<f64>,
    rss_mb: Option<f64>,
}

/// Everything measured on one store.
#[derive(Default)]
struct Figures {
    name: String,
    sessions: u64,
    files: u64,
    bytes: u64,
    cat: Duration,
    cold: Duration,
    cold_parsed: u64,
    answer_bytes: u64,
    warm_cost: Duration,
    warm_sessions: Duration,
    append_cost: Duration,
    append_sessions: Duration,
    /// SQLite stores: an append once the last complete listing of its database is 30 s old (the
    /// worker then lists the whole database again).
    append_complete: Option<Duration>,
    restart_handshake: Duration,
    restart_sessions: Duration,
    restart_cost: Duration,
    restart_parsed: u64,
    rss_first: u64,
    rss_restarted: u64,
    index_bytes: u64,
}

impl Figures {
    fn cold_over_cat(&self) -> f64 {
        self.cold.as_secs_f64() / self.cat.as_secs_f64().max(1e-9)
    }
}

async fn measure(s: &StoreSpec, root: &Path) -> Figures {
    let store = root.join(s.name);
    fs::create_dir_all(&store).expect("store dir");
    let t = Instant::now();
    let marker = root.join(format!("{}-appended.json", s.name));
    undo_appends(&marker);
    let manifest = demo_store::generate_or_reuse(&store, &s.spec).expect("generate the store");
    if s.sqlite {
        let done = store.join("clawgate-bench-sqlite.json");
        // The spec the store was made with: the asked one's `end_ms` moves with the clock, and
        // comparing it reconverted the store on every run.
        let want = serde_json::to_string(&manifest.spec).expect("spec");
        if fs::read_to_string(&done).ok().as_deref() != Some(want.as_str()) {
            demo_store::sqlite::convert_to_sqlite(&store, &store).expect("convert to SQLite");
            fs::write(&done, want).expect("conversion marker");
        }
    }
    // A store at rest: a store just written (or converted) had the kernel writing back its
    // dirty pages on the two cores during the cold read.
    assert!(Command::new("sync").status().expect("run sync").success());
    eprintln!("[{}] store ready in {:.1?} ({} sessions)", s.name, t.elapsed(), manifest.sessions);
    let p = Paths {
        store: store.clone(),
        cache: root.join(format!("{}-cache", s.name)),
        run: root.join(format!("{}-run", s.name)),
        log: root.join(format!("{}-worker.log", s.name)),
    };
    let _ = fs::remove_dir_all(&p.cache);
    let files = store_files(&store, s.sqlite);
    let mut f = Figures {
        name: s.name.to_owned(),
        sessions: manifest.sessions,
        files: files.len() as u64,
        ..Figures::default()
    };
    f.bytes = files.iter().map(|p| fs::metadata(p).map_or(0, |m| m.len())).sum();

    // The physical reference: read every file with `cat`, four times; the first warms the page
    // cache the way the generator left it, the median of the other three is the figure (one
    // timed read of the same files ranged 198-317 ms on `many-sqlite` within an hour). In
    // chunks: one argument list cannot hold 200,000 paths.
    let cat = || {
        let t = Instant::now();
        for chunk in files.chunks(4096) {
            let status = Command::new("cat")
                .args(chunk)
                .stdout(fs::File::create("/dev/null").expect("/dev/null"))
                .status()
                .expect("run cat");
            assert!(status.success());
        }
        t.elapsed()
    };
    cat();
    let mut cats = [cat(), cat(), cat()];
    cats.sort();
    f.cat = cats[1];

    let sessions_q = query(Method::SessionsUsage);
    let cost_q = query(Method::UsageCost);
    let mut w = Worker::start(&p).await;
    let (a, cold) = w.call(&sessions_q).await;
    f.cold = cold;
    f.cold_parsed = a.stats.bytes_parsed;
    f.answer_bytes = a.data_json.len() as u64;
    assert_eq!(total_tokens(&a), manifest.totals.total_tokens, "[{}] cold totals match the manifest", s.name);
    eprintln!("[{}] cold {cold:.1?}", s.name);

    let mut cost = Vec::new();
    let mut sess = Vec::new();
    for _ in 0..REPEAT {
        cost.push(w.call(&cost_q).await.1);
        sess.push(w.call(&sessions_q).await.1);
    }
    f.warm_cost = median(cost);
    f.warm_sessions = median(sess);

    // Append one turn to one session, then call; each method after its own append.
    let mut appended = 0u64;
    let mut at = manifest.last_ms.unwrap_or(0) + 60_000;
    let (mut cost, mut sess) = (Vec::new(), Vec::new());
    let mut append = appender(s, &store, &marker);
    for i in 0..REPEAT as u64 {
        appended += append(1000 + 2 * i, at);
        at += 600_000;
        let (a, d) = w.call(&cost_q).await;
        assert_eq!(a.stats.files_parsed, 1, "only the appended file is parsed");
        assert_eq!(total_tokens(&a), manifest.totals.total_tokens + appended);
        cost.push(d);
        appended += append(1001 + 2 * i, at);
        at += 600_000;
        let (a, d) = w.call(&sessions_q).await;
        assert_eq!(total_tokens(&a), manifest.totals.total_tokens + appended);
        sess.push(d);
    }
    f.append_cost = median(cost);
    f.append_sessions = median(sess);
    {
        // Waiting out the worker's 30 s of trust in a listing (a time, not an event): the
        // directory or database listed whole again, while idle.
        tokio::time::sleep(Duration::from_secs(31)).await;
        appended += append(1000 + 2 * REPEAT as u64, at);
        let (a, d) = w.call(&sessions_q).await;
        assert_eq!(total_tokens(&a), manifest.totals.total_tokens + appended);
        f.append_complete = Some(d);
    }
    f.rss_first = w.peak_rss();
    w.stop().await;

    // Restart: a new process answers from the index.
    let t = Instant::now();
    let mut w = Worker::start(&p).await;
    f.restart_handshake = t.elapsed();
    let (a, d) = w.call(&sessions_q).await;
    f.restart_sessions = d;
    f.restart_parsed = a.stats.bytes_parsed;
    assert_eq!(total_tokens(&a), manifest.totals.total_tokens + appended);
    let (a, d) = w.call(&cost_q).await;
    f.restart_cost = d;
    assert_eq!(total_tokens(&a), manifest.totals.total_tokens + appended);
    f.rss_restarted = w.peak_rss();
    w.stop().await;
    f.index_bytes = dir_bytes(&p.cache);
    undo_appends(&marker);
    f
}

/// Appends one turn (4 lines or events) to a session of agent `main` and returns its
/// total tokens. Records how to undo it in `marker`.
fn appender<'a>(s: &StoreSpec, store: &'a Path, marker: &'a Path) -> Box<dyn FnMut(u64, i64) -> u64 + 'a> {
    if s.sqlite {
        let db = store.join("agents/main/agent/openclaw-agent.sqlite");
        let c = rusqlite::Connection::open(&db).expect("open the agent database");
        let session: String = c
            .query_row(
                // The first session (by id) that is its key's current one, as a live session is.
                "SELECT n.current_session_id FROM session_nodes n WHERE EXISTS
                   (SELECT 1 FROM transcript_events e WHERE e.session_id = n.current_session_id)
                 ORDER BY 1 LIMIT 1",
                [],
                |r| r.get(0),
            )
            .expect("a session");
        let max_seq: i64 = c
            .query_row("SELECT max(seq) FROM transcript_events WHERE session_id = ?1", [&session], |r| {
                r.get(0)
            })
            .expect("max seq");
        // OpenClaw's turn also updates the session's window and node (update times, the entry's
        // counters): kept to be put back.
        let (w_updated, w_transcript): (i64, Option<i64>) = c
            .query_row(
                "SELECT updated_at, transcript_updated_at FROM session_windows WHERE session_id = ?1",
                [&session],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("the session's window");
        let (key, n_updated, entry): (String, i64, String) = c
            .query_row(
                "SELECT session_key, updated_at, entry_json FROM session_nodes WHERE current_session_id = ?1",
                [&session],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .expect("the session's node");
        fs::write(
            marker,
            serde_json::json!({"db": db, "session": session, "seq": max_seq,
                "window": [w_updated, w_transcript], "node": [key, n_updated, entry]})
            .to_string(),
        )
        .expect("marker");
        Box::new(move |i, at| {
            append_sqlite(&c, &session, &turn_events(i as usize, at));
            // Two usages of 9,550 tokens each (see `turn_events`).
            2 * 9_550
        })
    } else {
        let target = store_files(store, false)
            .into_iter()
            .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .expect("a transcript");
        let len = fs::metadata(&target).expect("transcript").len();
        // OpenClaw's legacy turn also rewrites the agent's `sessions.json` (the entry's
        // `updatedAt`, by write-and-rename): kept to be put back.
        let store_json = target.with_file_name("sessions.json");
        let saved = marker.with_extension("sessions.json");
        fs::copy(&store_json, &saved).expect("keep sessions.json");
        fs::write(
            marker,
            serde_json::json!({"path": target, "len": len, "store": store_json, "saved": saved}).to_string(),
        )
        .expect("marker");
        let session = target.file_stem().and_then(|s| s.to_str()).expect("a session id").to_owned();
        Box::new(move |seed, at| {
            let added = demo_store::append_turn(&target, seed, at).expect("append").total_tokens;
            touch_entry(&store_json, &session, at);
            added
        })
    }
}

/// Undoes the bench's appends, so the store keeps matching its manifest (also after an
/// interrupted run, which leaves the marker behind).
fn undo_appends(marker: &Path) {
    let Ok(text) = fs::read_to_string(marker) else { return };
    let v: serde_json::Value = serde_json::from_str(&text).expect("append marker");
    if let Some(path) = v["path"].as_str() {
        let len = v["len"].as_u64().expect("len");
        if let Ok(f) = fs::OpenOptions::new().write(true).open(path) {
            f.set_len(len).expect("truncate the appended transcript");
        }
        if let (Some(store), Some(saved)) = (v["store"].as_str(), v["saved"].as_str()) {
            fs::rename(saved, store).expect("put sessions.json back");
        }
    } else if let Some(db) = v["db"].as_str() {
        let c = rusqlite::Connection::open(db).expect("open the agent database");
        c.execute(
            "DELETE FROM transcript_events WHERE session_id = ?1 AND seq > ?2",
            params![v["session"].as_str().expect("session"), v["seq"].as_i64().expect("seq")],
        )
        .expect("remove the appended events");
        let session = v["session"].as_str().expect("session");
        if let Some(w) = v["window"].as_array() {
            c.execute(
                "UPDATE session_windows SET updated_at = ?2, transcript_updated_at = ?3 WHERE session_id = ?1",
                params![session, w[0].as_i64(), w[1].as_i64()],
            )
            .expect("put the window back");
        }
        if let Some(n) = v["node"].as_array() {
            c.execute(
                "UPDATE session_nodes SET updated_at = ?2, entry_json = ?3 WHERE session_key = ?1",
                params![n[0].as_str(), n[1].as_i64(), n[2].as_str()],
            )
            .expect("put the node back");
        }
    }
    fs::remove_file(marker).expect("remove the append marker");
}

/// Sets the `updatedAt` of `session`'s entry in a `sessions.json` as OpenClaw does after a turn:
/// the whole file written again (key order kept) and renamed over the old one.
fn touch_entry(store_json: &Path, session: &str, at_ms: i64) {
    let text = fs::read_to_string(store_json).expect("sessions.json");
    let at = text.find(&format!("\"sessionId\": \"{session}\"")).expect("the session's entry");
    let field = "\"updatedAt\": ";
    let start = at + text[at..].find(field).expect("updatedAt") + field.len();
    let end = start + text[start..].find(|c: char| !c.is_ascii_digit()).expect("a number");
    let tmp = store_json.with_extension("json.tmp");
    fs::write(&tmp, format!("{}{}{}", &text[..start], at_ms, &text[end..])).expect("write sessions.json");
    fs::rename(&tmp, store_json).expect("rename sessions.json");
}

/// One turn as four events (user, assistant tool call, a ~6 KB tool result, assistant reply),
/// 9,550 tokens per assistant message.
fn turn_events(i: usize, at_ms: i64) -> Vec<String> {
    let ts = |d: i64| demo_store::iso(at_ms + d);
    let usage = r#""usage":{"input":1200,"output":350,"cacheRead":8000,"cacheWrite":0,"totalTokens":9550,"cost":{"input":0.0036,"output":0.00525,"cacheRead":0.0024,"cacheWrite":0,"total":0.01125}}"#;
    let big = "lorem ipsum dolor sit amet ".repeat(230);
    vec![
        format!(
            r#"{{"type":"message","id":"u{i}","parentId":null,"timestamp":"{}","message":{{"role":"user","content":[{{"type":"text","text":"next"}}]}}}}"#,
            ts(0)
        ),
        format!(
            r#"{{"type":"message","id":"a{i}","parentId":"u{i}","timestamp":"{}","message":{{"role":"assistant","content":[{{"type":"toolCall","id":"t{i}","name":"read","arguments":{{}}}}],"provider":"anthropic","model":"claude-sonnet-4-5",{usage},"stopReason":"toolUse"}}}}"#,
            ts(2000)
        ),
        format!(
            r#"{{"type":"message","id":"r{i}","parentId":"a{i}","timestamp":"{}","message":{{"role":"toolResult","toolCallId":"t{i}","toolName":"read","content":[{{"type":"text","text":"{big}"}}],"isError":false}}}}"#,
            ts(2500)
        ),
        format!(
            r#"{{"type":"message","id":"b{i}","parentId":"r{i}","timestamp":"{}","message":{{"role":"assistant","content":[{{"type":"text","text":"done"}}],"provider":"anthropic","model":"claude-sonnet-4-5",{usage},"stopReason":"stop"}}}}"#,
            ts(5000)
        ),
    ]
}

/// Appends events to a session as OpenClaw does: next seq, large ones compressed.
fn append_sqlite(c: &rusqlite::Connection, session: &str, events: &[String]) {
    let tx = c.unchecked_transaction().expect("begin");
    for e in events {
        let seq: i64 = tx
            .query_row(
                "SELECT coalesce(max(seq), -1) + 1 FROM transcript_events WHERE session_id = ?1",
                [session],
                |r| r.get(0),
            )
            .expect("seq");
        if e.len() > demo_store::sqlite::COMPRESS_ABOVE_BYTES {
            let blob = zstd::bulk::compress(e.as_bytes(), 1).expect("compress");
            tx.execute(
                "INSERT INTO transcript_events (session_id, seq, created_at, event_zstd, event_utf8_bytes, navigation_json)
                 VALUES (?1, ?2, 0, ?3, ?4, ?5)",
                params![session, seq, blob, e.len() as i64, demo_store::sqlite::navigation_for(e)],
            )
            .expect("insert");
        } else {
            tx.execute(
                "INSERT INTO transcript_events (session_id, seq, event_json, created_at, event_utf8_bytes) VALUES (?1, ?2, ?3, 0, ?4)",
                params![session, seq, e, e.len() as i64],
            )
            .expect("insert");
        }
    }
    // As OpenClaw's turn does: the window's update times, and the node's entry (its `updatedAt`
    // and counters) with its update time.
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    tx.execute(
        "UPDATE session_windows SET updated_at = max(updated_at + 1, ?2),
                transcript_updated_at = max(coalesce(transcript_updated_at, 0) + 1, ?2)
         WHERE session_id = ?1",
        params![session, now],
    )
    .expect("touch the window");
    tx.execute(
        "UPDATE session_nodes SET updated_at = max(updated_at + 1, ?2),
                entry_json = json_set(entry_json, '$.updatedAt', max(updated_at + 1, ?2),
                    '$.totalTokens', coalesce(json_extract(entry_json, '$.totalTokens'), 0) + 19100)
         WHERE current_session_id = ?1",
        params![session, now],
    )
    .expect("touch the node");
    tx.commit().expect("commit");
}

fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(p) else { return 0 };
    rd.filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 100.0 { format!("{ms:.0} ms") } else { format!("{ms:.1} ms") }
}

fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

/// A figure with its target's verdict.
fn judged(text: String, value: f64, target: Option<f64>) -> String {
    match target {
        Some(t) if value <= t => format!("{text} ✓ (≤ {t})"),
        Some(t) => format!("{text} ✗ MISS (≤ {t})"),
        None => text,
    }
}

fn print_table(figs: &[(Figures, Targets)]) {
    type Cell = fn(&Figures, &Targets) -> String;
    let rows: Vec<(&str, Cell)> = vec![
        ("sessions", |f, _| f.sessions.to_string()),
        ("files (transcripts or databases)", |f, _| f.files.to_string()),
        ("store bytes", |f, _| mb(f.bytes)),
        ("cat to /dev/null (median of 3)", |f, _| ms(f.cat)),
        ("cold sessions.usage (limit 1000)", |f, t| {
            judged(
                format!("{} = {:.2}x cat", ms(f.cold), f.cold_over_cat()),
                f.cold_over_cat(),
                t.cold_over_cat,
            )
        }),
        ("  parse rate", |f, _| format!("{:.0} MB/s", f.cold_parsed as f64 / 1e6 / f.cold.as_secs_f64())),
        ("  answer size", |f, _| mb(f.answer_bytes)),
        ("warm usage.cost", |f, t| judged(ms(f.warm_cost), f.warm_cost.as_secs_f64() * 1e3, t.warm_ms)),
        ("warm sessions.usage", |f, t| {
            judged(ms(f.warm_sessions), f.warm_sessions.as_secs_f64() * 1e3, t.warm_ms)
        }),
        ("append 1 turn + usage.cost", |f, t| {
            judged(ms(f.append_cost), f.append_cost.as_secs_f64() * 1e3, t.append_ms)
        }),
        ("append 1 turn + sessions.usage", |f, t| {
            judged(ms(f.append_sessions), f.append_sessions.as_secs_f64() * 1e3, t.append_ms)
        }),
        ("  30 s later (the listing redone while idle)", |f, _| f.append_complete.map_or("-".into(), ms)),
        ("restart: spawn + handshake", |f, _| ms(f.restart_handshake)),
        ("restart: first sessions.usage", |f, t| {
            judged(ms(f.restart_sessions), f.restart_sessions.as_secs_f64() * 1e3, t.restart_ms)
        }),
        ("restart: then usage.cost", |f, _| ms(f.restart_cost)),
        ("restart: bytes re-parsed", |f, _| mb(f.restart_parsed)),
        ("peak RSS, first worker", |f, t| judged(mb(f.rss_first), f.rss_first as f64 / 1e6, t.rss_mb)),
        ("peak RSS, restarted worker", |f, t| {
            judged(mb(f.rss_restarted), f.rss_restarted as f64 / 1e6, t.rss_mb)
        }),
        ("index on disk", |f, _| mb(f.index_bytes)),
    ];
    let head: Vec<String> = figs.iter().map(|(f, _)| f.name.clone()).collect();
    println!("| | {} |", head.join(" | "));
    println!("|---|{}", "---:|".repeat(figs.len()));
    for (label, cell) in rows {
        let cells: Vec<String> = figs.iter().map(|(f, t)| cell(f, t)).collect();
        println!("| {label} | {} |", cells.join(" | "));
    }
}

fn json_summary(figs: &[(Figures, Targets)]) -> String {
    let v: Vec<serde_json::Value> = figs
        .iter()
        .map(|(f, _)| {
            serde_json::json!({
                "store": f.name, "sessions": f.sessions, "files": f.files, "bytes": f.bytes,
                "catMs": f.cat.as_secs_f64() * 1e3, "coldMs": f.cold.as_secs_f64() * 1e3,
                "coldOverCat": (f.cold_over_cat() * 100.0).round() / 100.0,
                "warmCostMs": f.warm_cost.as_secs_f64() * 1e3, "warmSessionsMs": f.warm_sessions.as_secs_f64() * 1e3,
                "appendCostMs": f.append_cost.as_secs_f64() * 1e3,
                "appendSessionsMs": f.append_sessions.as_secs_f64() * 1e3,
                "appendCompleteListingMs": f.append_complete.map(|d| d.as_secs_f64() * 1e3),
                "restartSessionsMs": f.restart_sessions.as_secs_f64() * 1e3,
                "restartCostMs": f.restart_cost.as_secs_f64() * 1e3,
                "peakRssBytes": f.rss_first.max(f.rss_restarted), "answerBytes": f.answer_bytes,
                "indexBytes": f.index_bytes,
            })
        })
        .collect();
    serde_json::Value::Array(v).to_string()
}

fn stores() -> Vec<StoreSpec> {
    let seed = demo_store::DemoSpec::seed_size();
    let year = |sessions: u32, turns: u32, tool_result_bytes: u32, wide: bool| demo_store::DemoSpec {
        agents: 9,
        sessions_per_agent: sessions,
        turns_per_session: turns,
        days: 365,
        tool_result_bytes,
        wide,
        ..demo_store::DemoSpec::default()
    };
    // The seed's targets, in either layout: it is the same store.
    let small =
        Targets { cold_over_cat: Some(3.5), warm_ms: Some(10.0), rss_mb: Some(64.0), ..Targets::default() };
    let big = Targets {
        cold_over_cat: Some(6.0),
        warm_ms: Some(20.0),
        append_ms: Some(20.0),
        restart_ms: Some(500.0),
        rss_mb: Some(128.0),
    };
    vec![
        StoreSpec { name: "seed", spec: seed.clone(), sqlite: false, targets: small },
        StoreSpec { name: "seed-sqlite", spec: seed, sqlite: true, targets: small },
        StoreSpec {
            name: "many",
            spec: year(6_000, 3, demo_store::DEFAULT_TOOL_RESULT_BYTES, false),
            sqlite: false,
            targets: big,
        },
        StoreSpec {
            name: "many-sqlite",
            spec: year(6_000, 3, demo_store::DEFAULT_TOOL_RESULT_BYTES, false),
            sqlite: true,
            targets: big,
        },
        StoreSpec {
            name: "huge",
            spec: year(22_000, 3, 1_000, false),
            sqlite: false,
            targets: Targets { rss_mb: Some(128.0), ..Targets::default() },
        },
        StoreSpec {
            name: "huge-sqlite",
            spec: year(22_000, 3, 1_000, false),
            sqlite: true,
            targets: Targets { rss_mb: Some(128.0), ..Targets::default() },
        },
        // One agent holding every session: one `sessions.json` of 39 MB and one directory of
        // 59,000 files, where the stores above spread theirs over nine agents.
        StoreSpec {
            name: "one",
            spec: demo_store::DemoSpec { agents: 1, ..year(54_000, 3, 2_000, false) },
            sqlite: false,
            targets: Targets { rss_mb: Some(128.0), ..Targets::default() },
        },
        // The same in one database: past the sessions a listing holds at once, so its entries
        // are written as its nodes are read and its sessions listed in slices.
        StoreSpec {
            name: "one-sqlite",
            spec: demo_store::DemoSpec { agents: 1, ..year(54_000, 3, 2_000, false) },
            sqlite: true,
            targets: Targets { rss_mb: Some(128.0), ..Targets::default() },
        },
        StoreSpec {
            name: "wide",
            spec: year(600, 40, 1_500, true),
            sqlite: false,
            targets: Targets { rss_mb: Some(128.0), ..Targets::default() },
        },
    ]
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
    if !Path::new(&worker()).is_file() {
        eprintln!("{} is missing; build it with `cargo build --release -p usage-worker`", worker());
        std::process::exit(2);
    }
    // `CLAWGATE_BENCH_ONLY=seed,many` measures those stores only.
    let only = std::env::var("CLAWGATE_BENCH_ONLY").unwrap_or_default();
    let chosen: Vec<StoreSpec> = stores()
        .into_iter()
        .filter(|s| only.is_empty() || only.split(',').any(|o| o.trim() == s.name))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let figs: Vec<(Figures, Targets)> = runtime.block_on(async {
        let mut figs = Vec::new();
        for s in &chosen {
            figs.push((measure(s, &root).await, s.targets));
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
        "worker {} (--threads 2, heap budget of a 512 MiB cap), {} cores ({cpu}), page cache warm; warm/append rows are medians of {REPEAT} calls",
        worker(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    print_table(&figs);
    println!("{}", json_summary(&figs));
}
