//! OpenClaw 2026.7+ SQLite stores: the same answers as the legacy layout (the shared fixture in
//! both layouts, and generated stores through clawgate's converter), live appends read
//! incrementally, rewrites re-read, bad databases and rows counted while other agents answer,
//! and a store holding both layouts after an import counted once.
//!
//! Every test works on a copy: opening a WAL database may create its `-shm`/`-wal` files.

use std::fs;
use std::path::{Path, PathBuf};

use ipc_proto::{AgentScope, GroupBy, Method, UsageQuery};
use rusqlite::{Connection, params};
use serde_json::Value;

use super::generate::{Spec, generate};
use super::{ask, assert_json_close, engine, query, strip_volatile, tiny_dir, try_ask};
use crate::engine::{Engine, EngineConfig, sqlite};

const DB: &str = "agent/openclaw-agent.sqlite";

/// The shared fixture's SQLite layout, as openclaw 2026.9.6's importer wrote it (copied into the
/// repo beside the legacy copy).
fn tiny_sqlite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/engine/tests/tiny-sqlite")
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for ent in fs::read_dir(from).unwrap() {
        let ent = ent.unwrap();
        let dst = to.join(ent.file_name());
        if ent.file_type().unwrap().is_dir() {
            copy_tree(&ent.path(), &dst);
        } else {
            fs::copy(ent.path(), &dst).unwrap();
        }
    }
}

/// A writable copy of the fixture's SQLite layout.
fn sqlite_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&tiny_sqlite_dir(), dir.path());
    dir
}

fn db(dir: &Path, agent: &str) -> PathBuf {
    dir.join("agents").join(agent).join(DB)
}

/// A read-write connection, as OpenClaw holds one.
fn writer(dir: &Path, agent: &str) -> Connection {
    let c = Connection::open(db(dir, agent)).unwrap();
    c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    c
}

fn queries() -> Vec<UsageQuery> {
    let mut family = query(Method::SessionsUsage);
    family.group_by = GroupBy::Family;
    let mut one = query(Method::UsageCost);
    one.agents = AgentScope::One("agent1".into());
    let mut offset = query(Method::SessionsUsage);
    offset.day_zone = ipc_proto::DayZone::FixedOffsetMinutes(330);
    let mut limited = query(Method::SessionsUsage);
    limited.limit = Some(2);
    vec![query(Method::SessionsUsage), query(Method::UsageCost), family, one, offset, limited]
}

/// Drops what legitimately differs between layouts: `sessionFile` (a path vs OpenClaw's
/// `sqlite:<agent>:<session>:<db>`), plus the clock and diagnostics.
fn normalise(mut v: Value) -> Value {
    strip_volatile(&mut v);
    if let Some(rows) = v.get_mut("sessions").and_then(Value::as_array_mut) {
        for r in rows {
            if let Some(u) = r.get_mut("usage").and_then(Value::as_object_mut) {
                u.remove("sessionFile");
            }
        }
    }
    v
}

/// The Control UI's own chat: OpenClaw's importer stores it as internal delivery and keeps
/// neither its channel nor its origin, so a database cannot say what `sessions.json` said.
const INTERNAL_CHANNEL: &str = "webchat";

/// What a legacy answer says that the imported database no longer can: the channel and origin
/// of `webchat` sessions (and so their `byChannel` group).
fn forget_internal_channel(mut v: Value) -> Value {
    if let Some(rows) = v.get_mut("sessions").and_then(Value::as_array_mut) {
        for r in rows.iter_mut().filter(|r| r["channel"] == INTERNAL_CHANNEL) {
            let r = r.as_object_mut().unwrap();
            r.remove("channel");
            r.remove("origin");
        }
    }
    if let Some(groups) = v.pointer_mut("/aggregates/byChannel").and_then(Value::as_array_mut) {
        groups.retain(|g| g["channel"] != INTERNAL_CHANNEL);
    }
    v
}

/// `legacy` on the legacy layout and `sqlite` on the SQLite one answer alike.
fn assert_same_answers(legacy: &mut Engine, sqlite: &mut Engine, qs: &[UsageQuery]) {
    for q in qs {
        let (va, _) = ask(legacy, q);
        let (vb, _) = ask(sqlite, q);
        let what = format!("{:?} {:?}", q.method, q.group_by);
        assert_json_close(&forget_internal_channel(normalise(va)), &normalise(vb), &what);
    }
}

#[test]
fn fixture_gives_the_same_answers_in_both_layouts() {
    both_ways(|| {
        let dir = sqlite_copy();
        let mut legacy = engine(&tiny_dir());
        let mut sqlite = engine(dir.path());
        assert_same_answers(&mut legacy, &mut sqlite, &queries());
        // Exactly the fields said to differ do: nothing else was stripped above.
        let (v, stats) = ask(&mut sqlite, &query(Method::SessionsUsage));
        assert_eq!(stats.files_total, 6);
        assert_eq!(stats.lines_skipped, 0);
        assert_eq!(v["totals"]["totalTokens"], 3_013_505);
        for r in v["sessions"].as_array().unwrap() {
            let (agent, id) = (r["agentId"].as_str().unwrap(), r["sessionId"].as_str().unwrap());
            let abs = std::path::absolute(db(dir.path(), agent)).unwrap();
            assert_eq!(r["usage"]["sessionFile"], format!("sqlite:{agent}:{id}:{}", abs.display()));
        }
        // Labels come from the database: the importer moved `origin` into `delivery`.
        let main = v["sessions"].as_array().unwrap().iter().find(|r| r["key"] == "agent:main:main").unwrap();
        assert_eq!(
            main["origin"],
            serde_json::json!({"provider":"slack","chatType":"direct","from":"slack:user0"})
        );
        assert_eq!(main["channel"], "slack");
        assert_eq!(v["diagnostics"]["unreadableDatabases"], 0);
    });
}

#[test]
fn keys_and_timeseries_work_on_sqlite_sessions() {
    let dir = sqlite_copy();
    let mut legacy = engine(&tiny_dir());
    let mut sqlite = engine(dir.path());
    for key in [
        "agent:main:main",
        "6513270e-269e-4d37-b2a7-4de452e6b438",
        "agent:agent1:whatsapp:group:g1",
        "agent:main:nope",
    ] {
        for method in [Method::SessionsUsage, Method::SessionsUsageTimeseries] {
            let mut q = query(method);
            q.key = Some(key.into());
            match (try_ask(&mut legacy, &q), try_ask(&mut sqlite, &q)) {
                (Ok((a, _)), Ok((b, _))) => assert_json_close(&normalise(a), &normalise(b), key),
                (Err(a), Err(b)) => assert_eq!(a.kind, b.kind, "{key}"),
                (a, b) => panic!("{key}: {a:?} vs {b:?}"),
            }
        }
    }
}

/// The converter's output of the legacy fixture answers like the importer's.
#[test]
fn converted_fixture_answers_like_the_importers_database() {
    let out = tempfile::tempdir().unwrap();
    let stats = demo_store::sqlite::convert_to_sqlite(&tiny_dir(), out.path()).unwrap();
    assert_eq!((stats.agents, stats.sessions, stats.events), (2, 6, 102));
    // The importer compressed 25 of these 102 events; the converter's size rule agrees.
    assert_eq!(stats.compressed_events, 25);
    let fixture = sqlite_copy();
    let mut a = engine(fixture.path());
    let mut b = engine(out.path());
    for q in queries() {
        let (va, _) = ask(&mut a, &q);
        let (vb, _) = ask(&mut b, &q);
        assert_json_close(&normalise(va), &normalise(vb), &format!("{:?}", q.method));
    }
    // Byte-identical blobs: same level, checksum and content size as the importer.
    let blob = |dir: &Path| -> Vec<u8> {
        Connection::open(db(dir, "main"))
            .unwrap()
            .query_row(
                "SELECT event_zstd FROM transcript_events WHERE session_id LIKE '6513%' AND seq = 3",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert_eq!(blob(out.path()), blob(fixture.path()));
}

/// Generated stores (clawgate's test generator: archives, orphans, sidecars, unpriced models,
/// aliases, untimed entries, malformed lines; and the demo generator: usage families across
/// resets): the converted store answers like the JSONL one, up to transcripts without a store
/// entry (their time is a file's mtime versus its window's last update, and in the database they
/// have a node of their own).
#[test]
fn generated_stores_give_the_same_answers_in_both_layouts() {
    both_ways(|| {
        let test_store = tempfile::tempdir().unwrap();
        let spec = Spec { agents: 2, sessions_per_agent: 10, turns: 9, tool_result_bytes: 2500, seed: 7 };
        generate(test_store.path(), &spec);
        let demo = tempfile::tempdir().unwrap();
        let demo_spec = demo_store::DemoSpec {
            agents: 2,
            sessions_per_agent: 12,
            turns_per_session: 5,
            seed: 5,
            days: 30,
            end_ms: 1_795_000_000_000,
            tool_result_bytes: 2000,
            wide: false,
        };
        let manifest = demo_store::generate(demo.path(), &demo_spec).unwrap();
        assert!(manifest.archives > 0, "the demo store has usage families");
        for legacy in [test_store.path(), demo.path()] {
            let out = tempfile::tempdir().unwrap();
            demo_store::sqlite::convert_to_sqlite(legacy, out.path()).unwrap();
            assert_converted_answers_alike(legacy, out.path());
        }
    });
}

fn assert_converted_answers_alike(legacy: &Path, converted: &Path) {
    let mut a = engine(legacy);
    let mut b = engine(converted);
    let mut family = query(Method::SessionsUsage);
    family.group_by = GroupBy::Family;
    for q in [query(Method::UsageCost), query(Method::SessionsUsage), family] {
        let (va, _) = ask(&mut a, &q);
        let (vb, _) = ask(&mut b, &q);
        let (va, vb) = (forget_internal_channel(normalise(va)), normalise(vb));
        for k in ["totals", "daily"] {
            if va.get(k).is_some() {
                assert_json_close(&va[k], &vb[k], k);
            }
        }
        if q.method != Method::SessionsUsage {
            continue;
        }
        assert_json_close(&va["aggregates"], &vb["aggregates"], "aggregates");
        let by_id = |v: &Value| -> std::collections::BTreeMap<String, Value> {
            v["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    let key = r["key"].as_str().unwrap();
                    if r.get("label").is_none() && key.ends_with(r["sessionId"].as_str().unwrap()) {
                        // No store entry in `sessions.json`: its updatedAt is the transcript's
                        // own time, and the converter gives it a node of its own (the window's
                        // key must exist), which family mode shows as a family of one.
                        let r = r.as_object_mut().unwrap();
                        for k in [
                            "updatedAt",
                            "scope",
                            "sessionFamilyKey",
                            "currentSessionId",
                            "includedSessionIds",
                            "historicalInstanceCount",
                        ] {
                            r.remove(k);
                        }
                    }
                    (format!("{}/{}", r["agentId"], r["sessionId"]), r)
                })
                .collect()
        };
        let (ra, rb) = (by_id(&va), by_id(&vb));
        assert_eq!(ra.keys().collect::<Vec<_>>(), rb.keys().collect::<Vec<_>>());
        for (k, r) in &ra {
            assert_json_close(r, &rb[k], k);
        }
        if q.group_by == GroupBy::Family && legacy.join(demo_store::MANIFEST_FILE).is_file() {
            assert!(ra.values().any(|r| r["historicalInstanceCount"].as_u64() > Some(1)), "families merged");
        }
    }
}

/// An assistant event with the given usage, as OpenClaw writes one.
fn assistant_event(id: &str, ts: &str, input: u64, pad: usize) -> String {
    format!(
        r#"{{"type":"message","id":"{id}","parentId":null,"timestamp":"{ts}","message":{{"role":"assistant","content":[{{"type":"text","text":"{}"}}],"provider":"openai","model":"gpt-5","usage":{{"input":{input},"output":2,"cacheRead":0,"cacheWrite":0,"totalTokens":{},"cost":{{"input":0.5,"output":0.25,"cacheRead":0,"cacheWrite":0,"total":0.75}}}},"stopReason":"stop","timestamp":1794700000000}}}}"#,
        "y".repeat(pad),
        input + 2
    )
}

/// Appends events as OpenClaw does: next seq, plain or compressed by size, window touched.
fn append(c: &Connection, session: &str, events: &[String]) -> u64 {
    let mut bytes = 0;
    for e in events {
        let seq: i64 = c
            .query_row(
                "SELECT coalesce(max(seq), -1) + 1 FROM transcript_events WHERE session_id = ?1",
                [session],
                |r| r.get(0),
            )
            .unwrap();
        if e.len() > demo_store::sqlite::COMPRESS_ABOVE_BYTES {
            let blob = zstd::bulk::compress(e.as_bytes(), 1).unwrap();
            c.execute(
                "INSERT INTO transcript_events (session_id, seq, event_json, created_at, event_zstd, event_utf8_bytes, navigation_json)
                 VALUES (?1, ?2, NULL, 1794700000000, ?3, ?4, ?5)",
                params![session, seq, blob, e.len() as i64, demo_store::sqlite::navigation_for(e)],
            )
            .unwrap();
        } else {
            c.execute(
                "INSERT INTO transcript_events (session_id, seq, event_json, created_at, event_utf8_bytes) VALUES (?1, ?2, ?3, 1794700000000, ?4)",
                params![session, seq, e, e.len() as i64],
            )
            .unwrap();
        }
        c.execute(
            "UPDATE session_windows SET transcript_updated_at = transcript_updated_at + 1 WHERE session_id = ?1",
            [session],
        )
        .unwrap();
        bytes += e.len() as u64;
    }
    bytes
}

const MAIN_SESSION: &str = "6513270e-269e-4d37-b2a7-4de452e6b438";

#[test]
fn appended_events_are_read_incrementally_while_openclaw_holds_the_database() {
    let dir = sqlite_copy();
    let mut e = engine(dir.path());
    let (v0, s0) = ask(&mut e, &query(Method::SessionsUsage));
    assert_eq!(s0.files_parsed, 6);
    // OpenClaw keeps its connection open (WAL mode) while clawgate reads.
    let w = writer(dir.path(), "main");
    assert_eq!(w.query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0)).unwrap(), "wal");
    let added = append(
        &w,
        MAIN_SESSION,
        &[
            assistant_event("n1", "2026-11-20T10:00:00.000Z", 1000, 10),
            assistant_event("n2", "2026-11-20T10:05:00.000Z", 20_000, 3000), // compressed
        ],
    );
    let (v1, s1) = ask(&mut e, &query(Method::SessionsUsage));
    assert_eq!(s1.files_parsed, 1, "only the grown session");
    assert_eq!(s1.bytes_parsed, added, "only the new rows");
    let input = |v: &Value| v["totals"]["input"].as_u64().unwrap();
    assert_eq!(input(&v1), input(&v0) + 21_000);
    assert_eq!(
        v1["aggregates"]["messages"]["assistant"],
        v0["aggregates"]["messages"]["assistant"].as_u64().unwrap() + 2
    );
    // Unchanged: nothing read, same answer; a fresh engine agrees.
    let (v2, s2) = ask(&mut e, &query(Method::SessionsUsage));
    assert_eq!((s2.files_parsed, s2.bytes_parsed), (0, 0));
    assert_json_close(&normalise(v1.clone()), &normalise(v2), "unchanged");
    let (fresh, _) = ask(&mut engine(dir.path()), &query(Method::SessionsUsage));
    assert_json_close(&normalise(v1), &normalise(fresh), "fresh");
}

#[test]
fn events_appended_during_reads_are_all_counted() {
    let dir = sqlite_copy();
    let mut e = engine(dir.path());
    let (v0, _) = ask(&mut e, &query(Method::UsageCost));
    let path = dir.path().to_path_buf();
    let writer_thread = std::thread::spawn(move || {
        let w = writer(&path, "main");
        let mut n = 0;
        for i in 0..40 {
            let ev = assistant_event(
                &format!("c{i}"),
                "2026-11-21T10:00:00.000Z",
                100,
                if i % 5 == 0 { 2000 } else { 5 },
            );
            append(&w, MAIN_SESSION, &[ev]);
            n += 1;
            std::thread::sleep(std::time::Duration::from_millis(3));
        }
        n
    });
    // Answers while the writer writes: each is consistent (never an error), totals only grow.
    let mut last = v0["totals"]["input"].as_u64().unwrap();
    while !writer_thread.is_finished() {
        let (v, _) = ask(&mut e, &query(Method::UsageCost));
        let now = v["totals"]["input"].as_u64().unwrap();
        assert!(now >= last && (now - last) % 100 == 0, "{last} -> {now}");
        last = now;
    }
    let n = writer_thread.join().unwrap();
    let (v, _) = ask(&mut e, &query(Method::UsageCost));
    assert_eq!(v["totals"]["input"].as_u64().unwrap(), v0["totals"]["input"].as_u64().unwrap() + 100 * n);
    let (fresh, _) = ask(&mut engine(dir.path()), &query(Method::UsageCost));
    assert_json_close(&normalise(v), &normalise(fresh), "fresh");
}

/// Bytes of a whole session as stored (decoded), i.e. what a full re-read parses.
fn session_bytes(c: &Connection, session: &str) -> u64 {
    c.query_row("SELECT sum(event_utf8_bytes) FROM transcript_events WHERE session_id = ?1", [session], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap() as u64
}

#[test]
fn rewritten_or_deleted_rows_make_the_session_be_read_again() {
    both_ways(|| {
        let dir = sqlite_copy();
        let mut e = engine(dir.path());
        ask(&mut e, &query(Method::SessionsUsage));
        let w = writer(dir.path(), "main");
        let check = |e: &mut Engine, what: &str| {
            let (v, s) = ask(e, &query(Method::SessionsUsage));
            assert_eq!(s.files_parsed, 1, "{what}");
            assert_eq!(s.bytes_parsed, session_bytes(&w, MAIN_SESSION), "{what}: whole session re-read");
            let (fresh, _) = ask(&mut engine(dir.path()), &query(Method::SessionsUsage));
            assert_json_close(&normalise(v), &normalise(fresh), what);
        };
        // A middle row deleted: no signature an append's listing reads shows it (counting every
        // event on each call cost ~5 ms); the next complete listing does (at most 30 s later), and
        // the count up to the checkpoint no longer matches.
        w.execute("DELETE FROM transcript_events WHERE session_id = ?1 AND seq = 5", [MAIN_SESSION]).unwrap();
        let (_, s) = ask(&mut e, &query(Method::SessionsUsage));
        assert_eq!(s.files_parsed, 0, "between complete listings");
        e.sqlite.set_full_every_ms(0);
        check(&mut e, "middle row deleted");
        e.sqlite.set_full_every_ms(30_000);
        // The last row rewritten in place, same length: its anchor changed.
        let last: String = w
            .query_row(
                "SELECT event_json FROM transcript_events WHERE session_id = ?1 AND seq = 16",
                [MAIN_SESSION],
                |r| r.get(0),
            )
            .unwrap();
        let at = last.find("\"output\":").unwrap() + "\"output\":".len();
        let mut changed = last.clone().into_bytes();
        changed[at] = if changed[at] == b'1' { b'2' } else { b'1' };
        w.execute(
            "UPDATE transcript_events SET event_json = ?2 WHERE session_id = ?1 AND seq = 16",
            params![MAIN_SESSION, String::from_utf8(changed).unwrap()],
        )
        .unwrap();
        // Nothing else moved, so listing cannot see it; the session's next change re-reads it whole
        // instead of appending to rows that are no longer there.
        let (_, s) = ask(&mut e, &query(Method::SessionsUsage));
        assert_eq!(s.files_parsed, 0);
        append(&w, MAIN_SESSION, &[assistant_event("r1", "2026-11-20T11:00:00.000Z", 5, 1)]);
        check(&mut e, "last row rewritten, then an append");
        // The last rows deleted: the max seq shrank.
        w.execute("DELETE FROM transcript_events WHERE session_id = ?1 AND seq >= 15", [MAIN_SESSION])
            .unwrap();
        check(&mut e, "tail deleted");
        // A new rewrite generation, rows untouched (OpenClaw stamps it with the time).
        w.execute(
            "UPDATE transcript_rewrite_watermarks SET generation = 'g2', updated_at = ?2 WHERE session_id = ?1",
            params![MAIN_SESSION, now_ms()],
        )
        .unwrap();
        check(&mut e, "new generation");
        // A session whose rows are all deleted (its window kept) leaves the answer at the next
        // complete listing. (OpenClaw deletes a session's window, and its rows with it by cascade:
        // the window count shows that at once.)
        w.execute("DELETE FROM transcript_events WHERE session_id = ?1", [MAIN_SESSION]).unwrap();
        e.sqlite.set_full_every_ms(0);
        let (v, s) = ask(&mut e, &query(Method::SessionsUsage));
        assert_eq!((s.files_total, s.files_parsed), (5, 0));
        assert!(v["sessions"].as_array().unwrap().iter().all(|r| r["sessionId"] != MAIN_SESSION));
    });
}

/// A state dir with more agent databases than the worker keeps listing connections for: the
/// held ones stay capped, and every agent still answers.
#[test]
fn listing_connections_stay_capped_with_many_agent_databases() {
    let dir = sqlite_copy();
    let main_db = db(dir.path(), "main");
    for i in 0..20 {
        let to = db(dir.path(), &format!("extra{i}"));
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(&main_db, &to).unwrap();
    }
    let mut e = engine(dir.path());
    let (v, _) = ask(&mut e, &query(Method::UsageCost));
    assert!(e.sqlite.held() <= 16, "held {}", e.sqlite.held());
    let mut main_only = query(Method::UsageCost);
    main_only.agents = AgentScope::One("main".into());
    let (main, _) = ask(&mut e, &main_only);
    assert!(
        v["totals"]["totalTokens"].as_u64().unwrap() > 20 * main["totals"]["totalTokens"].as_u64().unwrap()
    );
}

/// How OpenClaw deletes a session (its window, the rows following by cascade) shows on the next
/// call, not at the next complete listing: the window count is a signature.
#[test]
fn a_session_deleted_as_openclaw_does_leaves_at_once() {
    both_ways(|| {
        let dir = sqlite_copy();
        let mut e = engine(dir.path());
        let (before, _) = ask(&mut e, &query(Method::SessionsUsage));
        assert!(before["sessions"].as_array().unwrap().iter().any(|r| r["sessionId"] == MAIN_SESSION));
        let w = writer(dir.path(), "main");
        w.execute_batch("PRAGMA foreign_keys = ON").unwrap();
        w.execute("DELETE FROM session_windows WHERE session_id = ?1", [MAIN_SESSION]).unwrap();
        let left: i64 = w
            .query_row("SELECT count(*) FROM transcript_events WHERE session_id = ?1", [MAIN_SESSION], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(left, 0, "rows go with their window");
        let (v, _) = ask(&mut e, &query(Method::SessionsUsage));
        assert!(v["sessions"].as_array().unwrap().iter().all(|r| r["sessionId"] != MAIN_SESSION));
        let (fresh, _) = ask(&mut engine(dir.path()), &query(Method::SessionsUsage));
        assert_json_close(&normalise(v), &normalise(fresh), "deleted session");
    });
}

#[test]
fn bad_databases_and_rows_are_counted_and_other_agents_still_answer() {
    let dir = sqlite_copy();
    let (all, _) = ask(&mut engine(dir.path()), &query(Method::UsageCost));
    let mut main_only = query(Method::UsageCost);
    main_only.agents = AgentScope::One("main".into());
    let (main, _) = ask(&mut engine(dir.path()), &main_only);
    let main_tokens = main["totals"]["totalTokens"].clone();
    assert_ne!(all["totals"]["totalTokens"], main_tokens);

    // Unknown schema version.
    let w = writer(dir.path(), "agent1");
    w.execute("UPDATE schema_meta SET schema_version = 99", []).unwrap();
    drop(w);
    let mut e = engine(dir.path());
    let (v, _) = ask(&mut e, &query(Method::UsageCost));
    assert_eq!(v["totals"]["totalTokens"], main_tokens);
    assert_eq!(v["diagnostics"]["unreadableDatabases"], 1);
    assert!(
        v["diagnostics"]["errors"][0].as_str().unwrap().contains("schema_version 99"),
        "{}",
        v["diagnostics"]
    );
    let w = writer(dir.path(), "agent1");
    w.execute("UPDATE schema_meta SET schema_version = 23", []).unwrap();
    drop(w);
    let (v, _) = ask(&mut e, &query(Method::UsageCost));
    assert_eq!(v["totals"], all["totals"], "recovers once fixed");

    // A locked database (a rollback-journal writer mid-transaction holds it exclusively).
    let w = writer(dir.path(), "agent1");
    w.execute_batch("PRAGMA journal_mode = DELETE; BEGIN EXCLUSIVE;").unwrap();
    let (v, _) = ask(&mut engine(dir.path()), &query(Method::UsageCost));
    assert_eq!(v["totals"]["totalTokens"], main_tokens);
    assert_eq!(v["diagnostics"]["unreadableDatabases"], 1);
    assert!(v["diagnostics"]["errors"][0].as_str().unwrap().contains("locked"), "{}", v["diagnostics"]);
    w.execute_batch("COMMIT").unwrap();
    drop(w);

    // A corrupt file.
    let p = db(dir.path(), "agent1");
    fs::write(&p, b"this is not an SQLite database, but it is long enough to have a header....").unwrap();
    let (v, _) = ask(&mut engine(dir.path()), &query(Method::UsageCost));
    assert_eq!(v["totals"]["totalTokens"], main_tokens);
    assert_eq!(v["diagnostics"]["unreadableDatabases"], 1);
}

#[test]
fn undecodable_and_oversize_rows_are_skipped_and_counted() {
    let dir = sqlite_copy();
    let w = writer(dir.path(), "main");
    // A compressed toolResult whose blob is garbage, and one whose recorded size lies.
    let compressed: Vec<(String, i64)> = w
        .prepare("SELECT session_id, seq FROM transcript_events WHERE event_zstd IS NOT NULL ORDER BY session_id, seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(compressed.len(), 12);
    w.execute(
        "UPDATE transcript_events SET event_zstd = x'28b52ffd00112233' WHERE session_id = ?1 AND seq = ?2",
        params![compressed[0].0, compressed[0].1],
    )
    .unwrap();
    w.execute(
        "UPDATE transcript_events SET event_utf8_bytes = event_utf8_bytes - 1 WHERE session_id = ?1 AND seq = ?2",
        params![compressed[1].0, compressed[1].1],
    )
    .unwrap();
    drop(w);
    let mut e = engine(dir.path());
    let (v, s) = ask(&mut e, &query(Method::SessionsUsage));
    assert_eq!(v["diagnostics"]["undecodableRows"], 2);
    assert_eq!(s.lines_skipped, 2);
    // Tool results carry no usage: totals are untouched, two tool results fewer.
    assert_eq!(v["totals"]["totalTokens"], 3_013_505);
    assert_eq!(v["aggregates"]["messages"]["toolResults"], 22);

    // Oversize: with a 4000-byte limit the larger compressed events are skipped unread.
    let mut cfg = EngineConfig::new(dir.path());
    cfg.max_line_bytes = 4000;
    let (v, _) = ask(&mut Engine::new(cfg), &query(Method::SessionsUsage));
    let big: i64 = Connection::open(db(dir.path(), "main"))
        .unwrap()
        .query_row("SELECT count(*) FROM transcript_events WHERE event_utf8_bytes > 4000", [], |r| r.get(0))
        .unwrap();
    let big1: i64 = Connection::open(db(dir.path(), "agent1"))
        .unwrap()
        .query_row("SELECT count(*) FROM transcript_events WHERE event_utf8_bytes > 4000", [], |r| r.get(0))
        .unwrap();
    assert!(big > 0);
    assert_eq!(v["diagnostics"]["oversizeLines"].as_i64().unwrap(), big + big1);
    assert_eq!(v["totals"]["totalTokens"], 3_013_505);
}

#[test]
fn a_store_holding_both_layouts_after_an_import_counts_once() {
    let dir = sqlite_copy();
    for agent in ["main", "agent1"] {
        let legacy = tiny_dir().join("agents").join(agent).join("sessions");
        // What the importer archives, and what it may leave behind.
        let archive = dir.path().join("agents").join(agent).join("session-sqlite-import-archive");
        fs::create_dir_all(&archive).unwrap();
        let sessions = dir.path().join("agents").join(agent).join("sessions");
        fs::create_dir_all(&sessions).unwrap();
        for ent in fs::read_dir(&legacy).unwrap() {
            let ent = ent.unwrap();
            let name = ent.file_name().into_string().unwrap();
            fs::copy(ent.path(), archive.join(format!("{name}.imported-1795973187107"))).unwrap();
            fs::copy(ent.path(), sessions.join(&name)).unwrap();
        }
    }
    let mut both = engine(dir.path());
    let mut legacy = engine(&tiny_dir());
    assert_same_answers(&mut legacy, &mut both, &queries());
    let (v, s) = ask(&mut both, &query(Method::SessionsUsage));
    assert_eq!(s.files_total, 6);
    assert!(v["sessions"][0]["usage"]["sessionFile"].as_str().unwrap().starts_with("sqlite:"));
}

#[test]
fn reading_creates_no_files_beside_a_database_nobody_has_open() {
    let dir = sqlite_copy();
    let agent_dir = dir.path().join("agents/agent1/agent");
    let before: Vec<_> = fs::read_dir(&agent_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&agent_dir, fs::Permissions::from_mode(0o555)).unwrap();
    let mut one = query(Method::UsageCost);
    one.agents = AgentScope::One("agent1".into());
    let (v, _) = ask(&mut engine(dir.path()), &one);
    assert_eq!(v["totals"]["totalTokens"], 1_423_011);
    let after: Vec<_> = fs::read_dir(&agent_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    fs::set_permissions(&agent_dir, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(before, after, "no -shm/-wal created");
}

#[test]
fn an_unrelated_write_keeps_the_session_index_and_a_label_change_shows() {
    let dir = sqlite_copy();
    let mut e = engine(dir.path());
    ask(&mut e, &query(Method::SessionsUsage));
    let change = e.change;
    let w = writer(dir.path(), "main");
    w.execute("UPDATE session_nodes SET last_read_at = 1", []).unwrap();
    let (_, s) = ask(&mut e, &query(Method::SessionsUsage));
    assert_eq!(s.files_parsed, 0);
    assert_eq!(e.change, change, "answers cached against the index stay valid");
    w.execute("UPDATE session_nodes SET label = 'Ops' WHERE session_key = 'agent:main:main'", []).unwrap();
    let (v, s) = ask(&mut e, &query(Method::SessionsUsage));
    assert_eq!(s.files_parsed, 0);
    assert_ne!(e.change, change);
    let row = v["sessions"].as_array().unwrap().iter().find(|r| r["key"] == "agent:main:main").unwrap();
    assert_eq!(row["label"], "Ops");
}

/// OpenClaw's importer leaves `.reset.`/`.deleted.` archives in `sessions/` beside the
/// database, and OpenClaw 2026.9.6 still counts them as rows (measured on an imported demo
/// store: 33 rows, 3 of them such archives). They count here too, and leave with their file
/// (seen at the database's next complete listing: at most 30 s later for a running worker).
#[test]
fn archives_left_beside_a_database_are_rows() {
    both_ways(|| {
        let dir = sqlite_copy();
        let mut e = engine(dir.path());
        let q = query(Method::SessionsUsage);
        let (before, _) = ask(&mut e, &q);
        let sessions = dir.path().join("agents/main/sessions");
        fs::create_dir_all(&sessions).unwrap();
        let legacy = tiny_dir().join("agents/main/sessions/6513270e-269e-4d37-b2a7-4de452e6b438.jsonl");
        let archive =
            sessions.join("0badc0de-0000-4000-8000-000000000001.jsonl.reset.2026-11-15T04-03-12.803Z");
        fs::copy(&legacy, &archive).unwrap();
        // A primary transcript there is the imported original: still not counted.
        fs::copy(&legacy, sessions.join("6513270e-269e-4d37-b2a7-4de452e6b438.jsonl")).unwrap();
        // The database changed too (OpenClaw wrote to it), so the agent is listed again.
        writer(dir.path(), "main").execute_batch("PRAGMA user_version = 7").unwrap();
        let mut fresh = engine(dir.path());
        let (with, _) = ask(&mut fresh, &q);
        let rows = |v: &Value| v["sessions"].as_array().unwrap().len();
        assert_eq!(rows(&with), rows(&before) + 1);
        let tokens = |v: &Value| v["totals"]["totalTokens"].as_u64().unwrap();
        let (one, _) =
            ask(&mut engine(&tiny_dir()), &UsageQuery { key: Some("agent:main:main".into()), ..q.clone() });
        assert_eq!(tokens(&with), tokens(&before) + tokens(&one));
        assert!(
            with["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["sessionId"] == "0badc0de-0000-4000-8000-000000000001")
        );
        // An archive of a session the database holds (as clawgate's demo converter writes them)
        // counts once.
        let held = sessions.join("6513270e-269e-4d37-b2a7-4de452e6b438.jsonl.reset.2026-11-16T00-00-00.000Z");
        fs::copy(&legacy, &held).unwrap();
        let (same, _) = ask(&mut engine(dir.path()), &q);
        assert_eq!((rows(&same), tokens(&same)), (rows(&with), tokens(&with)));
        fs::remove_file(&held).unwrap();
        fs::remove_file(&archive).unwrap();
        let (after, _) = ask(&mut engine(dir.path()), &q);
        assert_eq!((rows(&after), tokens(&after)), (rows(&before), tokens(&before)));
    });
}

/// Agents with hundreds of sessions each: while one agent's sessions are parsed, the next
/// agent's database is listed on another thread. The answers are the legacy layout's.
#[test]
fn agents_listed_while_the_previous_one_is_parsed_answer_like_the_legacy_layout() {
    both_ways(|| {
        let legacy = tempfile::tempdir().unwrap();
        let spec = demo_store::DemoSpec {
            agents: 3,
            sessions_per_agent: 300,
            turns_per_session: 1,
            seed: 11,
            days: 60,
            end_ms: 1_795_000_000_000,
            tool_result_bytes: 200,
            wide: false,
        };
        demo_store::generate(legacy.path(), &spec).unwrap();
        let converted = tempfile::tempdir().unwrap();
        demo_store::sqlite::convert_to_sqlite(legacy.path(), converted.path()).unwrap();
        assert_converted_answers_alike(legacy.path(), converted.path());
    });
}

/// Each agent's archives (and special files) and entries are taken on the listing thread when
/// that agent is listed while the previous one is parsed: they count as when listed in place.
#[test]
fn archives_and_special_files_of_agents_listed_ahead_count_as_listed_in_place() {
    let (legacy, converted) = in_both_layouts(&Spec {
        agents: 3,
        sessions_per_agent: 300,
        turns: 1,
        tool_result_bytes: 200,
        seed: 5,
    });
    let donor = fs::read_dir(legacy.path().join("agents/main/sessions"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .min()
        .unwrap();
    for (i, agent) in ["main", "agent1", "agent2"].into_iter().enumerate() {
        for store in [legacy.path(), converted.path()] {
            let sessions = store.join("agents").join(agent).join("sessions");
            fs::create_dir_all(&sessions).unwrap();
            let archive =
                format!("0badc0de-0000-4000-8000-00000000000{i}.jsonl.reset.2026-11-15T04-03-12.803Z");
            fs::copy(&donor, sessions.join(archive)).unwrap();
            let fifo = sessions.join(format!(
                "1badc0de-0000-4000-8000-00000000000{i}.jsonl.deleted.2026-11-15T04-03-12.803Z"
            ));
            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        }
    }
    assert_converted_answers_alike(legacy.path(), converted.path());
    let (v, _) = ask(&mut engine(converted.path()), &query(Method::SessionsUsage));
    assert_eq!(v["diagnostics"]["skippedSpecialFiles"], 3, "{}", v["diagnostics"]);
    let rows = v["sessions"].as_array().unwrap();
    for i in 0..3 {
        let id = format!("0badc0de-0000-4000-8000-00000000000{i}");
        assert_eq!(rows.iter().filter(|r| r["sessionId"] == id.as_str()).count(), 1, "{id}");
    }
}

/// A generated store (legacy layout) and its conversion to OpenClaw's SQLite layout.
fn in_both_layouts(spec: &Spec) -> (tempfile::TempDir, tempfile::TempDir) {
    let legacy = tempfile::tempdir().unwrap();
    generate(legacy.path(), spec);
    let converted = tempfile::tempdir().unwrap();
    demo_store::sqlite::convert_to_sqlite(legacy.path(), converted.path()).unwrap();
    (legacy, converted)
}

/// A cold read starts the query's aggregates empty and adds each file as it is written; the
/// same aggregates built afterwards from the index (the path of any query whose agents are
/// already indexed) are identical.
#[test]
fn aggregates_built_during_a_cold_read_equal_ones_built_from_the_index() {
    let (legacy, converted) = in_both_layouts(&Spec {
        agents: 2,
        sessions_per_agent: 10,
        turns: 9,
        tool_result_bytes: 500,
        seed: 3,
    });
    let mut one = query(Method::UsageCost);
    one.agents = AgentScope::One("agent1".into());
    for dir in [legacy.path(), converted.path()] {
        for q in [query(Method::SessionsUsage), query(Method::UsageCost)] {
            let mut cold = engine(dir);
            let (during, _) = ask(&mut cold, &q);
            // Another engine indexes one agent first: the query's agents are then not all new,
            // so its aggregates are built by reading the index back.
            let mut after = engine(dir);
            ask(&mut after, &one);
            let (built, _) = ask(&mut after, &q);
            let (mut during, mut built) = (during, built);
            strip_volatile(&mut during);
            strip_volatile(&mut built);
            assert!(during["totals"]["totalTokens"].as_u64() > Some(0));
            assert_json_close(&during, &built, &format!("{} {:?}", dir.display(), q.method));
        }
    }
}

/// A turn as OpenClaw 2026.9.6 writes it: the events, and the session's window and node with
/// new update times (the entry's `updatedAt` and counters). The engine applies just the entries
/// of the nodes and windows updated since (a whole index rebuild cost ~80 ms of an append on a
/// 6,600-session database), and answers as a fresh engine does; a key renamed in place (nodes
/// as many as before) lists the agent completely.
#[test]
fn a_turn_that_updates_nodes_and_windows_answers_like_a_fresh_engine() {
    both_ways(|| {
        let dir = sqlite_copy();
        let mut e = engine(dir.path());
        for q in queries() {
            ask(&mut e, &q);
        }
        let w = writer(dir.path(), "main");
        let row_of = |v: &Value, session: &str| -> Value {
            v["sessions"].as_array().unwrap().iter().find(|r| r["sessionId"] == session).cloned().unwrap()
        };
        let check_all = |e: &mut Engine, what: &str| {
            let mut fresh = engine(dir.path());
            for q in queries() {
                let (va, _) = ask(e, &q);
                let (vb, _) = ask(&mut fresh, &q);
                assert_json_close(
                    &normalise(va),
                    &normalise(vb),
                    &format!("{what}: {:?} {:?}", q.method, q.group_by),
                );
            }
        };

        // 1. A turn: events, then the window (its channel changes too) and the node's entry, at a
        // time past every other update (OpenClaw's clock).
        let now: i64 =
            w.query_row("SELECT max(updated_at) + 1000 FROM session_windows", [], |r| r.get(0)).unwrap();
        append(&w, MAIN_SESSION, &[assistant_event("t1", "2026-11-20T10:00:00.000Z", 1000, 10)]);
        w.execute(
            "UPDATE session_windows SET updated_at = ?2, channel = 'telegram' WHERE session_id = ?1",
            params![MAIN_SESSION, now],
        )
        .unwrap();
        w.execute(
            "UPDATE session_nodes SET updated_at = ?2,
                entry_json = json_set(entry_json, '$.updatedAt', ?2, '$.chatType', 'group')
         WHERE current_session_id = ?1",
            params![MAIN_SESSION, now],
        )
        .unwrap();
        let (v, s) = ask(&mut e, &query(Method::SessionsUsage));
        assert_eq!(s.files_parsed, 1, "only the grown session");
        let row = row_of(&v, MAIN_SESSION);
        assert_eq!((row["channel"].as_str(), row["chatType"].as_str()), (Some("telegram"), Some("group")));
        check_all(&mut e, "a turn");

        // 2. Only another session's window changed (its channel): its entry follows.
        let other = "d269a9a5-ae65-4f33-be3b-890b93f448b3";
        let later: i64 =
            w.query_row("SELECT max(updated_at) + 1 FROM session_windows", [], |r| r.get(0)).unwrap();
        w.execute(
            "UPDATE session_windows SET updated_at = ?2, channel = 'discord' WHERE session_id = ?1",
            params![other, later],
        )
        .unwrap();
        let (v, s) = ask(&mut e, &query(Method::SessionsUsage));
        assert_eq!(s.files_parsed, 0);
        assert_eq!(row_of(&v, other)["channel"], "discord");
        check_all(&mut e, "a window");
        assert_eq!(e.sqlite.index_rebuilds, 0, "entries patched, the index not rebuilt");

        // 3. A node's key renamed in place with a new update time: not a key the engine knows.
        let later: i64 =
            w.query_row("SELECT max(updated_at) + 1 FROM session_nodes", [], |r| r.get(0)).unwrap();
        w.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
        w.execute(
            "UPDATE session_nodes SET session_key = 'agent:main:renamed', updated_at = ?2
             WHERE current_session_id = ?1",
            params![other, later],
        )
        .unwrap();
        w.execute(
            "UPDATE session_windows SET session_key = 'agent:main:renamed' WHERE session_id = ?1",
            [other],
        )
        .unwrap();
        let (v, _) = ask(&mut e, &query(Method::SessionsUsage));
        assert_eq!(row_of(&v, other)["key"], "agent:main:renamed");
        assert!(v["sessions"].as_array().unwrap().iter().all(|r| r["key"] != "agent:main:slack:direct:u1"));
        check_all(&mut e, "a renamed key");
    });
}

/// A database that changed since its last complete listing is listed completely when that is
/// due (every 30 s), by the worker while idle ([`Engine::maintain`]), not by the next call.
#[test]
fn a_complete_listing_that_is_due_is_made_while_idle() {
    both_ways(|| {
        let dir = sqlite_copy();
        let mut e = engine(dir.path());
        ask(&mut e, &query(Method::SessionsUsage));
        let cancel = std::sync::atomic::AtomicBool::new(false);
        assert!(e.maintain(&cancel).unwrap().is_empty(), "nothing changed: nothing due");
        let w = writer(dir.path(), "main");
        let now: i64 =
            w.query_row("SELECT max(updated_at) + 1000 FROM session_windows", [], |r| r.get(0)).unwrap();
        append(&w, MAIN_SESSION, &[assistant_event("i1", "2026-11-20T10:00:00.000Z", 1000, 10)]);
        w.execute(
            "UPDATE session_nodes SET updated_at = ?2 WHERE current_session_id = ?1",
            params![MAIN_SESSION, now],
        )
        .unwrap();
        let (v1, _) = ask(&mut e, &query(Method::SessionsUsage));
        assert!(e.sqlite.due().is_empty(), "the last complete listing is recent");
        e.sqlite.age_listings(31_000);
        // `main` changed since; `agent1` was listed by signatures too (its files were new enough to
        // be racy), so an edit they cannot show may be there as well.
        let due = e.sqlite.due();
        assert!(due.contains(&"main".to_owned()), "changed since, and 30 s old: {due:?}");
        let complete = e.sqlite.complete_listings;
        assert_eq!(e.maintain(&cancel).unwrap(), due);
        let complete = complete + due.len() as u64;
        assert_eq!(e.sqlite.complete_listings, complete);
        assert!(e.sqlite.due().is_empty());
        // The next call lists only what changed since, and answers as before.
        let change = e.change;
        let (v2, s2) = ask(&mut e, &query(Method::SessionsUsage));
        assert_eq!((s2.files_parsed, e.sqlite.complete_listings), (0, complete));
        assert_eq!(e.change, change, "the complete listing changed nothing: answers stay cached");
        assert_json_close(&normalise(v1), &normalise(v2), "after the idle listing");
    });
}

/// Now, in epoch ms (OpenClaw stamps a rewrite generation with it).
fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// On an agent too large for a call to walk its labels and rewrite generations
/// (`DEEP_ON_CALLS_MAX`: 2 sessions here), a call lists what its signatures show and the worker
/// looks at those while idle: a label set or a session rewritten in place as OpenClaw does shows
/// from there, the rewritten session read again alone; a session rewritten to nothing, or
/// deleted, leaves at the complete listing made then (the call meanwhile reads what grew).
#[test]
fn on_a_large_agent_labels_and_rewrites_are_looked_at_while_idle() {
    let dir = sqlite_copy();
    let deep = sqlite::DEEP_ON_CALLS_TEST.replace(2);
    let mut e = engine(dir.path());
    sqlite::DEEP_ON_CALLS_TEST.set(deep);
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let q = query(Method::SessionsUsage);
    let fresh = || normalise(ask(&mut engine(dir.path()), &q).0);
    // `main`, and `agent1` while its files are new enough to be racy (listed again each call).
    let due = |e: &Engine| {
        let due = e.sqlite.due();
        assert!(due.contains(&"main".to_owned()), "{due:?}");
        due
    };
    ask(&mut e, &q);
    assert!(e.maintain(&cancel).unwrap().is_empty(), "a complete listing looked at everything");
    let w = writer(dir.path(), "main");

    // 1. An append: listed by its signatures alone; the idle look finds nothing more.
    append(&w, MAIN_SESSION, &[assistant_event("d1", "2026-11-20T10:00:00.000Z", 1000, 10)]);
    let (_, s) = ask(&mut e, &q);
    assert_eq!(s.files_parsed, 1);
    let (complete, change) = (e.sqlite.complete_listings, e.change);
    let due_now = due(&e);
    assert_eq!(e.maintain(&cancel).unwrap(), due_now);
    assert_eq!((e.sqlite.complete_listings, e.change), (complete, change), "nothing found");
    assert!(e.sqlite.due().is_empty());

    // 2. A label set: not in the next call's answer, in the one after the idle look.
    w.execute("UPDATE session_nodes SET label = 'Ops' WHERE session_key = 'agent:main:main'", []).unwrap();
    let label = |v: &Value| {
        let row = v["sessions"].as_array().unwrap().iter().find(|r| r["key"] == "agent:main:main").unwrap();
        row["label"].clone()
    };
    let (v, _) = ask(&mut e, &q);
    assert_ne!(label(&v), "Ops");
    let due_now = due(&e);
    assert_eq!(e.maintain(&cancel).unwrap(), due_now);
    let (v, s) = ask(&mut e, &q);
    assert_eq!((label(&v), s.files_parsed), (Value::from("Ops"), 0));
    assert_json_close(&normalise(v), &fresh(), "label set");

    // 3. The last row rewritten in place, its generation rotated with the time: the idle look
    // reads that session again, without listing everything.
    let last: String = w
        .query_row(
            "SELECT event_json FROM transcript_events WHERE session_id = ?1 ORDER BY seq DESC LIMIT 1",
            [MAIN_SESSION],
            |r| r.get(0),
        )
        .unwrap();
    let rewritten = last.replacen("\"output\":", "\"output\":9", 1);
    assert_ne!(rewritten, last);
    w.execute(
        "UPDATE transcript_events SET event_json = ?2 WHERE session_id = ?1 AND event_json = ?3",
        params![MAIN_SESSION, rewritten, last],
    )
    .unwrap();
    let rotate = |session: &str| {
        w.execute(
            "UPDATE transcript_rewrite_watermarks SET generation = 'g2', updated_at = ?2 WHERE session_id = ?1",
            params![session, now_ms()],
        )
        .unwrap()
    };
    assert_eq!(rotate(MAIN_SESSION), 1);
    let (before, s) = ask(&mut e, &q);
    assert_eq!(s.files_parsed, 0, "no signature a call reads shows it");
    let complete = e.sqlite.complete_listings;
    let due_now = due(&e);
    assert_eq!(e.maintain(&cancel).unwrap(), due_now);
    assert_eq!(e.sqlite.complete_listings, complete);
    let (after, s) = ask(&mut e, &q);
    assert_eq!(s.files_parsed, 0, "read again while idle");
    let fresh_after = fresh();
    assert_ne!(normalise(before), fresh_after);
    assert_json_close(&normalise(after), &fresh_after, "rewritten in place");

    // 4. A session rewritten to nothing (its rows deleted, the generation rotated; not the one
    // holding the newest rows, whose deletion a call sees): gone after the idle look, which lists
    // everything for it.
    let other: String = w
        .query_row(
            "SELECT session_id FROM transcript_events WHERE session_id <> ?1 LIMIT 1",
            [MAIN_SESSION],
            |r| r.get(0),
        )
        .unwrap();
    w.execute("DELETE FROM transcript_events WHERE session_id = ?1", [&other]).unwrap();
    assert_eq!(rotate(&other), 1);
    let (v, _) = ask(&mut e, &q);
    assert!(v["sessions"].as_array().unwrap().iter().any(|r| r["sessionId"] == other.as_str()));
    let due_now = due(&e);
    assert_eq!(e.maintain(&cancel).unwrap(), due_now);
    assert_eq!(e.sqlite.complete_listings, complete + 1);
    let (v, _) = ask(&mut e, &q);
    assert!(v["sessions"].as_array().unwrap().iter().all(|r| r["sessionId"] != other.as_str()));
    assert_json_close(&normalise(v), &fresh(), "rewritten to nothing");

    // 5. A session deleted as OpenClaw deletes one (its window, its rows by cascade) while another
    // grows: the call reads the grown one and lists nothing completely; the deleted one leaves at
    // the complete listing made while idle.
    let gone: String = w
        .query_row(
            "SELECT session_id FROM session_windows WHERE session_id NOT IN (?1, ?2) LIMIT 1",
            [MAIN_SESSION, &other],
            |r| r.get(0),
        )
        .unwrap();
    w.execute_batch("PRAGMA foreign_keys = ON").unwrap();
    w.execute("DELETE FROM session_windows WHERE session_id = ?1", [&gone]).unwrap();
    append(&w, MAIN_SESSION, &[assistant_event("d2", "2026-11-20T11:00:00.000Z", 500, 10)]);
    let complete = e.sqlite.complete_listings;
    let (v, s) = ask(&mut e, &q);
    assert_eq!((s.files_parsed, e.sqlite.complete_listings), (1, complete));
    assert!(v["sessions"].as_array().unwrap().iter().any(|r| r["sessionId"] == gone.as_str()));
    let due_now = due(&e);
    assert_eq!(e.maintain(&cancel).unwrap(), due_now);
    assert!(e.sqlite.complete_listings > complete);
    let (v, s) = ask(&mut e, &q);
    assert_eq!(s.files_parsed, 0);
    assert!(v["sessions"].as_array().unwrap().iter().all(|r| r["sessionId"] != gone.as_str()));
    assert_json_close(&normalise(v), &fresh(), "deleted");
}

/// A worker serving one command (`--one-shot`, as `clawgate report` starts it) has no idle
/// moment to come: on a large agent its calls show a label set and a session deleted at once,
/// and the first change after a quiet spell is listed completely by the call.
#[test]
fn a_one_shot_worker_shows_on_the_call_what_a_running_one_leaves_to_idle() {
    let dir = sqlite_copy();
    let deep = sqlite::DEEP_ON_CALLS_TEST.replace(2);
    let mut cfg = EngineConfig::new(dir.path());
    cfg.one_shot = true;
    let mut e = Engine::new(cfg);
    sqlite::DEEP_ON_CALLS_TEST.set(deep);
    let q = query(Method::SessionsUsage);
    ask(&mut e, &q);
    let w = writer(dir.path(), "main");
    w.execute("UPDATE session_nodes SET label = 'Ops' WHERE session_key = 'agent:main:main'", []).unwrap();
    let (v, _) = ask(&mut e, &q);
    let row = v["sessions"].as_array().unwrap().iter().find(|r| r["key"] == "agent:main:main").unwrap();
    assert_eq!(row["label"], "Ops");
    let gone: String = w
        .query_row(
            "SELECT session_id FROM session_windows WHERE session_id <> ?1 LIMIT 1",
            [MAIN_SESSION],
            |r| r.get(0),
        )
        .unwrap();
    w.execute_batch("PRAGMA foreign_keys = ON").unwrap();
    w.execute("DELETE FROM session_windows WHERE session_id = ?1", [&gone]).unwrap();
    let (v, _) = ask(&mut e, &q);
    assert!(v["sessions"].as_array().unwrap().iter().all(|r| r["sessionId"] != gone.as_str()));
    assert!(e.sqlite.due().is_empty(), "nothing left for an idle moment");
    e.sqlite.age_listings(31_000);
    append(&w, MAIN_SESSION, &[assistant_event("o1", "2026-11-20T10:00:00.000Z", 1000, 10)]);
    let complete = e.sqlite.complete_listings;
    let (v, s) = ask(&mut e, &q);
    // (`agent1` too while its files are new enough to be racy.)
    assert_eq!((s.files_parsed, e.sqlite.complete_listings > complete), (1, true));
    assert_json_close(&normalise(v), &normalise(ask(&mut engine(dir.path()), &q).0), "one shot");
}

/// OpenClaw's schema migration stamps every session's first rewrite generation with one and the
/// same time: an append after it is still listed by signatures alone (the sessions at the
/// newest stamp are not taken for rewritten ones: past two, everything would be listed).
#[test]
fn generations_stamped_alike_by_a_migration_are_not_rewrites() {
    let dir = sqlite_copy();
    let w = writer(dir.path(), "main");
    let stamped =
        w.execute("UPDATE transcript_rewrite_watermarks SET updated_at = 1795973180000", []).unwrap();
    assert!(stamped > 2, "more sessions than a listing takes for rewritten at once: {stamped}");
    let mut e = engine(dir.path());
    let q = query(Method::SessionsUsage);
    ask(&mut e, &q);
    append(&w, MAIN_SESSION, &[assistant_event("m1", "2026-11-20T10:00:00.000Z", 1000, 10)]);
    let complete = e.sqlite.complete_listings;
    let (v, s) = ask(&mut e, &q);
    assert_eq!((s.files_parsed, e.sqlite.complete_listings), (1, complete));
    assert_json_close(&normalise(v), &normalise(ask(&mut engine(dir.path()), &q).0), "after the migration");
}

/// The first change after a quiet spell longer than the 30 s between complete listings is
/// listed by signatures, as any other (listing everything then cost the first append on one
/// agent of 200,000 sessions ~10 s); the complete listing it makes due follows while idle.
#[test]
fn the_first_change_after_a_quiet_spell_is_listed_by_signatures() {
    both_ways(|| {
        let dir = sqlite_copy();
        let mut e = engine(dir.path());
        let q = query(Method::SessionsUsage);
        ask(&mut e, &q);
        let cancel = std::sync::atomic::AtomicBool::new(false);
        e.sqlite.age_listings(31_000);
        assert!(e.sqlite.due().is_empty(), "nothing changed since the complete listing");
        let w = writer(dir.path(), "main");
        append(&w, MAIN_SESSION, &[assistant_event("q1", "2026-11-20T10:00:00.000Z", 1000, 10)]);
        let complete = e.sqlite.complete_listings;
        let (v, s) = ask(&mut e, &q);
        assert_eq!((s.files_parsed, e.sqlite.complete_listings), (1, complete));
        let due = e.sqlite.due();
        assert!(due.contains(&"main".to_owned()), "{due:?}");
        assert_eq!(e.maintain(&cancel).unwrap(), due);
        assert_eq!(e.sqlite.complete_listings, complete + due.len() as u64);
        assert_json_close(
            &normalise(v),
            &normalise(ask(&mut engine(dir.path()), &q).0),
            "after a quiet spell",
        );
    });
}

/// `n` bare entries `k<i>` -> session `s<i>`.
fn entries(n: usize) -> Vec<crate::engine::store::StoreEntry> {
    (0..n)
        .map(|i| crate::engine::store::StoreEntry {
            key: format!("k{i}"),
            session_id: format!("s{i}"),
            ..Default::default()
        })
        .collect()
}

/// What a cold build holds beside an agent's files stays bounded: the row-facts memo exists only
/// for agents of at most `MEMO_MAX` entries (a 22,000-session agent keeps looking its entries up
/// in the index), and only those agents have the next agent listed while they are parsed.
#[test]
fn the_row_facts_memo_and_the_listing_ahead_are_only_for_agents_of_bounded_size() {
    use crate::engine::{LIST_AHEAD_JOBS, MEMO_MAX, Put};
    let dir = tempfile::tempdir().unwrap();
    let mut e = engine(dir.path());
    e.open().unwrap();
    e.put_entries("a", entries(10), Put::All).unwrap();
    assert!(e.memo.is_some(), "a small agent's entries are held for its parse");
    e.put_entries("a", entries(MEMO_MAX + 1), Put::All).unwrap();
    assert!(e.memo.is_none(), "an agent past the bound is looked up in the index");
    assert!(LIST_AHEAD_JOBS.contains(&MEMO_MAX) && !LIST_AHEAD_JOBS.contains(&(MEMO_MAX + 1)));
}

/// A cold build holds a small agent's entries while its parser threads start, and writes them
/// before its first file (whose live contribution and row facts read them); out of a cold build,
/// or past the memo's bound, they are written at once.
#[test]
fn a_cold_agents_entries_are_written_once_its_parsers_start() {
    use crate::engine::{MEMO_MAX, Put};
    let dir = sqlite_copy();
    let mut e = engine(dir.path());
    e.open().unwrap();
    assert!(e.index_mut().begin_bulk().unwrap(), "nothing indexed yet");
    e.put_entries("a", entries(3), Put::All).unwrap();
    assert!(e.deferred.is_some() && e.memo.is_some());
    assert_eq!(e.index().entry_count("a").unwrap(), 0, "held, not written");
    // Anything else that writes entries writes the held ones first.
    e.put_entries("b", entries(MEMO_MAX + 1), Put::All).unwrap();
    assert!(e.deferred.is_none(), "past the bound: written at once");
    assert_eq!(e.index().entry_count("a").unwrap(), 3);
    assert_eq!(e.index().entry_count("b").unwrap(), MEMO_MAX as u64 + 1);
    e.index_mut().end_bulk().unwrap();
    // A whole cold build: every agent's entries are in the index when it answers, and its rows
    // carry their entries' labels (the answers match the legacy layout's in the tests above).
    let dir2 = sqlite_copy();
    let mut cold = engine(dir2.path());
    let (v, _) = ask(&mut cold, &query(Method::SessionsUsage));
    assert!(cold.deferred.is_none());
    for agent in ["main", "agent1"] {
        assert!(cold.index().entry_count(agent).unwrap() > 0, "{agent}'s entries written");
    }
    assert!(
        v["sessions"].as_array().unwrap().iter().any(|r| r["label"].is_string()),
        "rows labelled from their entries"
    );
}

/// A cold read takes sessions in the table's rowid order where their rows lie apart and in
/// `seq` order, and by key otherwise. Whatever order the table holds the same rows in (sessions
/// apart in any order, interleaved, backwards within a session, a mixture, shuffled), every
/// answer is the one of the table as converted.
#[test]
fn a_cold_read_answers_alike_whatever_order_the_table_holds_its_rows_in() {
    let (_legacy, converted) = in_both_layouts(&Spec {
        agents: 2,
        sessions_per_agent: 12,
        turns: 7,
        tool_result_bytes: 2500,
        seed: 11,
    });
    let mut reference = engine(converted.path());
    let answers: Vec<Value> = queries().iter().map(|q| normalise(ask(&mut reference, q).0)).collect();
    let orders = [
        "session_id DESC, seq",
        "seq, session_id",
        "session_id, seq DESC",
        // Sessions apart, with rows of the others spread between them.
        "CASE WHEN session_id < '8' THEN session_id || ':' || printf('%08d', seq)
         ELSE printf('%d~', seq % 8) || session_id || printf('%08d', seq) END",
        // Shuffled, the same way every run.
        "(rowid * 2654435761) % 4294967291",
    ];
    for order in orders {
        let dir = tempfile::tempdir().unwrap();
        copy_tree(converted.path(), dir.path());
        for agent in ["main", "agent1"] {
            let c = writer(dir.path(), agent);
            c.execute_batch(&format!(
                "CREATE TEMP TABLE held AS SELECT * FROM transcript_events;
                 DELETE FROM transcript_events;
                 INSERT INTO transcript_events SELECT * FROM held ORDER BY {order};"
            ))
            .unwrap();
        }
        let mut e = engine(dir.path());
        for (q, want) in queries().iter().zip(&answers) {
            let (got, stats) = ask(&mut e, q);
            assert_eq!(stats.lines_skipped, 0, "{order}");
            assert_json_close(want, &normalise(got), &format!("{order}: {:?} {:?}", q.method, q.group_by));
        }
    }
}

/// As many sessions as can be whose rowid spans do not overlap are read in span order; the
/// others, and those without a span, by key.
#[test]
fn only_sessions_lying_apart_are_read_in_rowid_order() {
    use crate::engine::discover::{Discovered, FileKind, FileMeta};
    let d = |id: &str, span: Option<(i64, i64)>| Discovered {
        path: PathBuf::from(id),
        file_name: id.into(),
        agent_id: "a".into(),
        session_id: id.into(),
        kind: FileKind::Primary,
        meta: FileMeta::default(),
        span,
    };
    let sessions = vec![
        d("e", Some((30, 39))),
        d("a", Some((1, 9))),
        d("d", Some((12, 15))),
        d("c", Some((10, 20))),
        d("b", None),
        d("f", Some((40, 40))),
        d("g", Some((50, 45))),
        d("h", Some((41, 60))),
    ];
    let (by_rowid, by_key) = crate::engine::split_by_span(sessions);
    let ids = |v: &[Discovered]| v.iter().map(|d| d.session_id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&by_rowid), ["a", "d", "e", "f", "h"]);
    assert_eq!(ids(&by_key), ["b", "c", "g"]);
}

/// A cold agent's sessions go to the parser threads in groups that shrink towards the end (by
/// rows), so that the threads finish together; every session is in exactly one group, in read
/// order.
#[test]
fn session_groups_shrink_towards_the_end_and_hold_every_session_once() {
    use crate::engine::{
        BULK_ROWS_MIN, BULK_SESSIONS, Job, Work,
        discover::{Discovered, FileKind, FileMeta},
        group_work,
    };
    let db = "/x/openclaw-agent.sqlite";
    let session = |i: usize, span: Option<(i64, i64)>| Job {
        disc: Discovered {
            path: PathBuf::from(format!("sqlite:a:s{i:05}:{db}")),
            file_name: format!("s{i:05}"),
            agent_id: "a".into(),
            session_id: format!("s{i:05}"),
            kind: FileKind::Primary,
            meta: FileMeta { dev: crate::engine::sqlite::SQLITE_DEV, size: 10, ..FileMeta::default() },
            span,
        },
        known: None,
    };
    // Spans in reverse order of ids, and three sessions without one (read by key).
    let n = 2000;
    let mut jobs: Vec<Job> =
        (0..n).map(|i| session(i, Some((10 * (n - i) as i64, 10 * (n - i) as i64 + 5)))).collect();
    jobs.extend((n..n + 3).map(|i| session(i, None)));
    let work = group_work(jobs, 2);
    let groups: Vec<(bool, Vec<String>)> = work
        .into_iter()
        .map(|w| match w {
            Work::Sessions { db: d, sessions, by_rowid } => {
                assert_eq!(d, PathBuf::from(db));
                (by_rowid, sessions.into_iter().map(|s| s.session_id).collect())
            }
            Work::One(_) => panic!("a new session read alone"),
        })
        .collect();
    let rowid: Vec<&Vec<String>> = groups.iter().filter(|g| g.0).map(|g| &g.1).collect();
    let key: Vec<&Vec<String>> = groups.iter().filter(|g| !g.0).map(|g| &g.1).collect();
    assert!(groups.iter().take(rowid.len()).all(|g| g.0), "rowid groups first");
    // In rowid order (the spans run backwards), each session once.
    let read: Vec<&String> = rowid.iter().flat_map(|g| g.iter()).collect();
    let want: Vec<String> = (0..n).rev().map(|i| format!("s{i:05}")).collect();
    assert_eq!(read, want.iter().collect::<Vec<_>>());
    assert_eq!(
        key.iter().flat_map(|g| g.iter().cloned()).collect::<Vec<_>>(),
        [format!("s{n:05}"), format!("s{:05}", n + 1), format!("s{:05}", n + 2)]
    );
    let sizes: Vec<usize> = rowid.iter().map(|g| g.len()).collect();
    assert_eq!(sizes[0], BULK_SESSIONS, "{sizes:?}");
    assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "never growing: {sizes:?}");
    assert!(sizes[..sizes.len() - 1].iter().all(|&s| s as u64 * 10 >= BULK_ROWS_MIN), "{sizes:?}");
    assert!(*sizes.last().unwrap() <= BULK_SESSIONS / 8, "the last groups are short: {sizes:?}");
    // Long sessions make fewer sessions a group: 200 of 400 rows each, in rows of ~a quarter
    // of what is left.
    let long = |i: usize| {
        let mut job = session(i, Some((i as i64, i as i64)));
        job.disc.meta.size = 400;
        job
    };
    let sizes: Vec<usize> = group_work((0..200).map(long).collect(), 2)
        .into_iter()
        .map(|w| match w {
            Work::Sessions { sessions, .. } => sessions.len(),
            Work::One(_) => panic!("a new session read alone"),
        })
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), 200);
    assert_eq!(sizes[0], 50, "{sizes:?}");
    assert_eq!(*sizes.last().unwrap(), 1, "{sizes:?}");
}

/// An engine on `dir` that lists every database whole, however large.
fn listing_whole(dir: &Path) -> Engine {
    let over = sqlite::SLICED_OVER_TEST.replace(usize::MAX);
    let e = engine(dir);
    sqlite::SLICED_OVER_TEST.set(over);
    e
}

/// Runs `test` with databases listed whole, as all but the largest are, then in slices of
/// a few sessions, as those are (the default in tests).
fn both_ways(test: impl Fn()) {
    for over in [usize::MAX, 2] {
        sqlite::SLICED_OVER_TEST.set(over);
        test();
    }
}

/// A database past the bound of what a listing holds at once (`SLICED_OVER`: 2 nodes in tests,
/// slices of 4 sessions) has its entries written as its nodes are read in key order and its
/// sessions listed a slice at a time, an archive beside it in the slice whose range of paths
/// holds it. Cold, listed completely again after a restart, and after labels change and
/// sessions come, grow and go, it answers as the same database listed whole; a complete
/// listing of what the index holds parses nothing again.
#[test]
fn a_database_listed_in_slices_answers_as_one_listed_whole() {
    let (legacy, converted) = in_both_layouts(&Spec {
        agents: 2,
        sessions_per_agent: 25,
        turns: 2,
        tool_result_bytes: 200,
        seed: 9,
    });
    let dir = converted.path();
    let donor = fs::read_dir(legacy.path().join("agents/main/sessions"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .min()
        .unwrap();
    let sessions = dir.join("agents/main/sessions");
    fs::create_dir_all(&sessions).unwrap();
    let archived = "0badc0de-0000-4000-8000-000000000009";
    fs::copy(&donor, sessions.join(format!("{archived}.jsonl.reset.2026-11-15T04-03-12.803Z"))).unwrap();
    let data = tempfile::tempdir().unwrap();
    let sliced = || {
        let mut cfg = EngineConfig::new(dir);
        cfg.data_dir = Some(data.path().to_owned());
        Engine::new(cfg)
    };
    let check = |e: &mut Engine, what: &str| {
        let mut whole = listing_whole(dir);
        for q in queries() {
            let (va, _) = ask(e, &q);
            let (vb, _) = ask(&mut whole, &q);
            assert_json_close(
                &normalise(va),
                &normalise(vb),
                &format!("{what}: {:?} {:?}", q.method, q.group_by),
            );
        }
        assert_eq!(whole.sqlite.sliced_listings, 0);
    };
    let rows = |v: &Value| -> Vec<String> {
        v["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["sessionId"].as_str().unwrap().to_owned())
            .collect()
    };

    // 1. Cold.
    let mut e = sliced();
    let (v, s) = ask(&mut e, &query(Method::SessionsUsage));
    assert_eq!(e.sqlite.sliced_listings, 2, "both agents listed in slices");
    assert_eq!(s.files_parsed, 51, "25 sessions an agent, and the archive");
    assert!(rows(&v).contains(&archived.to_owned()));
    check(&mut e, "cold");
    drop(e);

    // 2. Restarted, the database touched, every listing complete: nothing parsed again.
    writer(dir, "main").execute_batch("PRAGMA user_version = 7").unwrap();
    let mut e = sliced();
    e.sqlite.set_full_every_ms(0);
    let (_, s) = ask(&mut e, &query(Method::SessionsUsage));
    // (`agent1` too when its files are new enough to be racy.)
    assert_eq!((s.files_parsed, e.sqlite.sliced_listings > 0), (0, true));
    check(&mut e, "restarted");
    drop(e);

    // 3. A label set and a session grown: listed by signatures, the whole index streamed.
    let w = writer(dir, "main");
    let ids: Vec<String> = w
        .prepare("SELECT DISTINCT session_id FROM transcript_events ORDER BY session_id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(ids.len(), 25);
    let mut e = sliced();
    ask(&mut e, &query(Method::SessionsUsage));
    let current: String = w
        .query_row(
            "SELECT current_session_id FROM session_nodes ORDER BY session_key LIMIT 1 OFFSET 7",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let set =
        w.execute("UPDATE session_nodes SET label = 'relabelled' WHERE current_session_id = ?1", [&current]);
    assert_eq!(set.unwrap(), 1);
    append(&w, &ids[10], &[assistant_event("g1", "2026-11-20T10:00:00.000Z", 1000, 10)]);
    let (v, s) = ask(&mut e, &query(Method::SessionsUsage));
    assert_eq!((s.files_parsed, e.sqlite.sliced_listings, e.sqlite.index_rebuilds), (1, 0, 1));
    let row = v["sessions"].as_array().unwrap().iter().find(|r| r["sessionId"] == current.as_str()).unwrap();
    assert_eq!(row["label"], "relabelled");
    check(&mut e, "relabelled and grown");

    // 4. A session gone (as OpenClaw deletes one) and one come (another's copy, created now as
    // OpenClaw creates one): listed completely, in slices.
    w.execute_batch("PRAGMA foreign_keys = ON").unwrap();
    w.execute("DELETE FROM session_windows WHERE session_id = ?1", [&ids[3]]).unwrap();
    // (Node, window and rows inserted in turn, as one would not be without the others.)
    w.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
    let copy = "zz-copied-session";
    for (table, id_column) in [
        ("session_windows", "session_id"),
        ("session_nodes", "current_session_id"),
        ("transcript_events", "session_id"),
    ] {
        w.execute_batch(&format!(
            "CREATE TEMP TABLE t AS SELECT * FROM {table} WHERE {id_column} = '{}';
             UPDATE t SET {id_column} = '{copy}';
             {}
             INSERT INTO {table} SELECT * FROM t;
             DROP TABLE t;",
            ids[12],
            match table {
                "transcript_events" => String::new(),
                "session_windows" =>
                    format!("UPDATE t SET session_key = 'agent:main:copied', created_at = {};", now_ms()),
                _ => "UPDATE t SET session_key = 'agent:main:copied';".to_owned(),
            },
        ))
        .unwrap();
    }
    let (v, s) = ask(&mut e, &query(Method::SessionsUsage));
    assert_eq!((s.files_parsed, e.sqlite.sliced_listings), (1, 1));
    let listed = rows(&v);
    assert!(listed.contains(&copy.to_owned()) && !listed.contains(&ids[3]));
    check(&mut e, "one gone, one come");

    // 5. Sessions only come, as OpenClaw adds them (created and updated after everything
    // else): a new key, and a reset of an existing one (a new window, the node pointed at it).
    // Listed by signatures, the new entries patched in: no complete listing.
    let (listings, rebuilds) = (e.sqlite.complete_listings, e.sqlite.index_rebuilds);
    let later: i64 = w
        .query_row("SELECT max(max(updated_at), max(created_at)) + 1000 FROM session_windows", [], |r| {
            r.get(0)
        })
        .unwrap();
    let reset_key: String = w
        .query_row("SELECT session_key FROM session_nodes WHERE current_session_id = ?1", [&ids[14]], |r| {
            r.get(0)
        })
        .unwrap();
    for (id, key, from) in
        [("aa-new-key", "agent:main:new-key", &ids[13]), ("ab-reset", reset_key.as_str(), &ids[14])]
    {
        w.execute_batch(&format!(
            "CREATE TEMP TABLE t AS SELECT * FROM session_windows WHERE session_id = '{from}';
             UPDATE t SET session_id = '{id}', session_key = '{key}', previous_session_id = '{from}',
                          created_at = {later}, updated_at = {later};
             INSERT INTO session_windows SELECT * FROM t;
             DROP TABLE t;
             CREATE TEMP TABLE t AS SELECT * FROM transcript_events WHERE session_id = '{from}';
             UPDATE t SET session_id = '{id}';
             INSERT INTO transcript_events SELECT * FROM t;
             DROP TABLE t;"
        ))
        .unwrap();
    }
    w.execute_batch(&format!(
        "CREATE TEMP TABLE t AS SELECT * FROM session_nodes WHERE current_session_id = '{}';
         UPDATE t SET session_key = 'agent:main:new-key', current_session_id = 'aa-new-key', updated_at = {later},
                      label = NULL;
         INSERT INTO session_nodes SELECT * FROM t;
         DROP TABLE t;
         UPDATE session_nodes SET current_session_id = 'ab-reset', updated_at = {later} WHERE session_key = '{reset_key}';",
        ids[13]
    ))
    .unwrap();
    let (v, s) = ask(&mut e, &query(Method::SessionsUsage));
    assert_eq!(s.files_parsed, 2, "the two new sessions");
    assert_eq!((e.sqlite.complete_listings, e.sqlite.index_rebuilds), (listings, rebuilds), "patched");
    let listed = rows(&v);
    assert!(listed.contains(&"aa-new-key".to_owned()) && listed.contains(&"ab-reset".to_owned()));
    check(&mut e, "sessions added");
}
