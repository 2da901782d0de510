//! The SQLite layout's benchmark beside the JSONL one: `cargo bench -p usage-worker --bench sqlite`.
//!
//! It generates (or reuses) the seed-size demo store (9 agents x 184 sessions x 100 turns,
//! ~1.45 GB of JSONL) under `$CLAWGATE_BENCH_DIR/seed-9x184` (kept between runs) or a temporary
//! dir, converts it into OpenClaw 2026.7+'s SQLite layout with `demo_store::sqlite` (reused
//! while the store's spec is unchanged), then times the same calls on both layouts through the
//! in-process engine API (`Engine::answer`, 2 parser threads): a cold `sessions.usage` over
//! everything, warm calls, a call after an unrelated write (SQLite: the database changed, no
//! transcript did), and calls after appending one turn (4 events) to one session. The page
//! cache is warm for both (each store was just written or read). Prints one table.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use ipc_proto::{AgentScope, DayZone, GroupBy, Method, UsageQuery};
use rusqlite::{Connection, params};
use usage_worker::engine::{Engine, EngineConfig};

/// Repeated calls report their median.
const REPEAT: usize = 5;
/// Marks a converted store with the spec it came from.
const CONVERTED_MARKER: &str = "clawgate-sqlite-bench.json";

fn query(method: Method) -> UsageQuery {
    UsageQuery {
        method,
        start_ms: 0,
        end_ms: i64::MAX / 4,
        agents: AgentScope::All,
        key: None,
        limit: Some(1000),
        group_by: GroupBy::Instance,
        day_zone: DayZone::Utc,
        include_context_weight: false,
    }
}

struct Call {
    time: Duration,
    /// CPU time of the whole process (all threads) during the call: unlike wall time, not
    /// inflated by other load on the machine.
    cpu: Duration,
    parsed: u64,
    files_parsed: u64,
}

/// User + system CPU time of this process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn call(e: &mut Engine, method: Method) -> Call {
    let (t, c) = (Instant::now(), cpu_time());
    let a = e.answer(&query(method), &AtomicBool::new(false), &mut |_| {}).expect("answer");
    Call {
        time: t.elapsed(),
        cpu: cpu_time() - c,
        parsed: a.stats.bytes_parsed,
        files_parsed: a.stats.files_parsed,
    }
}

fn median(mut v: Vec<Call>) -> Call {
    v.sort_by_key(|c| c.time);
    v.swap_remove(v.len() / 2)
}

#[derive(Default)]
struct Figures {
    sessions: u64,
    cold: Option<Call>,
    cold_mb: f64,
    warm_usage: Option<Call>,
    warm_cost: Option<Call>,
    unrelated_write: Option<Call>,
    append: Option<Call>,
    rollup_mb: f64,
}

fn engine(store: &Path) -> Engine {
    let mut cfg = EngineConfig::new(store);
    cfg.threads = 2;
    Engine::new(cfg)
}

/// Cold, warm and "something else changed" figures; `append` grows one session by one turn.
fn measure(
    label: &'static str,
    store: &Path,
    mut append: impl FnMut(usize),
    mut unrelated: impl FnMut(),
) -> Figures {
    let mut e = engine(store);
    let cold = call(&mut e, Method::SessionsUsage);
    eprintln!("[{label}] cold {:.2?} (CPU {:.2?}), {} MB", cold.time, cold.cpu, cold.parsed >> 20);
    let mut f = Figures {
        sessions: e.cached_files() as u64,
        cold_mb: cold.parsed as f64 / 1048576.0,
        ..Figures::default()
    };
    f.cold = Some(cold);
    f.warm_usage = Some(median((0..REPEAT).map(|_| call(&mut e, Method::SessionsUsage)).collect()));
    f.warm_cost = Some(median((0..REPEAT).map(|_| call(&mut e, Method::UsageCost)).collect()));
    f.unrelated_write = Some(median(
        (0..REPEAT)
            .map(|_| {
                unrelated();
                call(&mut e, Method::SessionsUsage)
            })
            .collect(),
    ));
    f.append = Some(median(
        (0..REPEAT)
            .map(|i| {
                append(i);
                call(&mut e, Method::SessionsUsage)
            })
            .collect(),
    ));
    f.rollup_mb = e.rollup_bytes() as f64 / 1048576.0;
    f
}

/// The primary transcript of the first session of `main`.
fn first_transcript(store: &Path) -> PathBuf {
    let dir = store.join("agents/main/sessions");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("sessions dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    files.remove(0)
}

/// One turn as four events (user, assistant tool call, a ~6 KB tool result, assistant reply).
fn turn_events(i: usize, at_ms: i64) -> Vec<String> {
    let ts = |d: i64| {
        let s = (at_ms + d) / 1000;
        let (days, rem) = (s.div_euclid(86_400), s.rem_euclid(86_400));
        // Days to civil date (Hinnant), enough for a valid ISO stamp.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.000Z", rem / 3600, rem % 3600 / 60, rem % 60)
    };
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
fn append_sqlite(c: &Connection, session: &str, events: &[String]) {
    let nav = r#"{"version":1,"report":{"kind":"canonical"},"navigation":{},"reset":{},"model":{},"modelBytes":1,"modelWithoutCheckpointBytes":1,"withoutCustomDataBytes":1}"#;
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
                params![session, seq, blob, e.len() as i64, nav],
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
    tx.execute(
        "UPDATE session_windows SET transcript_updated_at = transcript_updated_at + 1 WHERE session_id = ?1",
        [session],
    )
    .expect("touch");
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

/// Wall ms (CPU ms).
fn ms(d: &Option<Call>) -> String {
    d.as_ref().map_or("-".into(), |c| {
        format!("{:.1} ({:.1})", c.time.as_secs_f64() * 1000.0, c.cpu.as_secs_f64() * 1000.0)
    })
}

fn main() {
    let (_tmp, root) = match std::env::var_os("CLAWGATE_BENCH_DIR") {
        Some(d) => (None, PathBuf::from(d)),
        None => {
            let t = tempfile::tempdir().expect("temp dir");
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let spec = demo_store::DemoSpec::seed_size();
    let legacy = root.join("seed-9x184");
    fs::create_dir_all(&legacy).expect("store dir");
    let t = Instant::now();
    let manifest = demo_store::generate_or_reuse(&legacy, &spec).expect("generate the store");
    eprintln!(
        "[jsonl] store ready in {:.1?} ({} files, {} MB)",
        t.elapsed(),
        manifest.files,
        manifest.bytes >> 20
    );

    let sqlite = root.join("seed-9x184-sqlite");
    let marker = sqlite.join(CONVERTED_MARKER);
    let wanted = serde_json::to_string(&manifest.spec).expect("spec");
    let convert_time = if fs::read_to_string(&marker).ok().as_deref() == Some(wanted.as_str()) {
        eprintln!("[sqlite] reusing {}", sqlite.display());
        None
    } else {
        let _ = fs::remove_dir_all(&sqlite);
        let t = Instant::now();
        let stats = demo_store::sqlite::convert_to_sqlite(&legacy, &sqlite).expect("convert");
        let took = t.elapsed();
        eprintln!(
            "[sqlite] converted in {took:.1?}: {} sessions, {} events ({} compressed), {} MB of databases",
            stats.sessions,
            stats.events,
            stats.compressed_events,
            stats.db_bytes >> 20
        );
        fs::write(&marker, &wanted).expect("marker");
        Some(took)
    };

    // `CLAWGATE_BENCH_ONLY=jsonl|sqlite` measures one layout (for profiling).
    let only = std::env::var("CLAWGATE_BENCH_ONLY").unwrap_or_default();
    let run = |layout: &str| only.is_empty() || only == layout;

    // JSONL: appends a turn to one transcript; an unrelated change is a touched sessions.json.
    let transcript = first_transcript(&legacy);
    let sessions_json = legacy.join("agents/agent1/sessions/sessions.json");
    let jsonl = if !run("jsonl") {
        Figures::default()
    } else {
        measure(
            "jsonl",
            &legacy,
            |i| {
                let at = manifest.last_ms.unwrap_or(0) + 60_000 * (i as i64 + 1);
                demo_store::append_turn(&transcript, 7 + i as u64, at).expect("append");
            },
            || {
                let f = fs::File::options().write(true).open(&sessions_json).expect("sessions.json");
                f.set_modified(std::time::SystemTime::now()).expect("touch");
            },
        )
    };

    // SQLite: OpenClaw's connection stays open (WAL), as on a live install.
    let db = sqlite.join("agents/main/agent/openclaw-agent.sqlite");
    let w = Connection::open(&db).expect("writer");
    w.busy_timeout(Duration::from_secs(5)).expect("busy timeout");
    let session: String = w
        .query_row("SELECT session_id FROM session_windows ORDER BY session_id LIMIT 1", [], |r| r.get(0))
        .expect("a session");
    let sq = if !run("sqlite") {
        Figures::default()
    } else {
        measure(
            "sqlite",
            &sqlite,
            |i| {
                append_sqlite(
                    &w,
                    &session,
                    &turn_events(i, manifest.last_ms.unwrap_or(0) + 60_000 * (i as i64 + 1)),
                )
            },
            || {
                w.execute("UPDATE session_nodes SET last_read_at = coalesce(last_read_at, 0) + 1", [])
                    .expect("write");
            },
        )
    };
    drop(w);

    println!(
        "SQLite layout vs JSONL, seed-size demo store ({} sessions), in-process Engine::answer, 2 threads, page cache warm; wall ms (process CPU ms)",
        jsonl.sessions.max(sq.sessions)
    );
    if let Some(t) = convert_time {
        println!("conversion: {t:.1?}");
    }
    println!(
        "store size: jsonl {} MB, sqlite {} MB",
        dir_bytes(&legacy.join("agents")) >> 20,
        dir_bytes(&sqlite.join("agents")) >> 20
    );
    println!("| | jsonl | sqlite |");
    println!("|---|---|---|");
    let row = |name: &str, a: &Figures, b: &Figures, f: &dyn Fn(&Figures) -> String| {
        println!("| {name} | {} | {} |", f(a), f(b));
    };
    row("sessions (files / windows)", &jsonl, &sq, &|f| f.sessions.to_string());
    row("cold sessions.usage, ms", &jsonl, &sq, &|f| ms(&f.cold));
    row("cold event MB parsed", &jsonl, &sq, &|f| format!("{:.0}", f.cold_mb));
    row("cold MB per CPU second", &jsonl, &sq, &|f| {
        f.cold.as_ref().map_or("-".into(), |c| format!("{:.0}", f.cold_mb / c.cpu.as_secs_f64()))
    });
    row("warm sessions.usage, ms (median)", &jsonl, &sq, &|f| ms(&f.warm_usage));
    row("warm usage.cost, ms (median)", &jsonl, &sq, &|f| ms(&f.warm_cost));
    row("after an unrelated write, ms", &jsonl, &sq, &|f| ms(&f.unrelated_write));
    row("after appending 1 turn to 1 session, ms", &jsonl, &sq, &|f| ms(&f.append));
    row("  bytes parsed / sessions parsed", &jsonl, &sq, &|f| {
        f.append.as_ref().map_or("-".into(), |c| format!("{} / {}", c.parsed, c.files_parsed))
    });
    row("rollups in memory, MB", &jsonl, &sq, &|f| format!("{:.1}", f.rollup_mb));
}
