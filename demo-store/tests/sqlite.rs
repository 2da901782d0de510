//! The SQLite layout converter: a generated store becomes valid agent databases (integrity and
//! foreign keys hold, the schema is openclaw 2026.9.6's) whose events are exactly the
//! transcripts' lines, large ones compressed.

use std::collections::BTreeMap;
use std::fs;

use demo_store::sqlite::{COMPRESS_ABOVE_BYTES, SCHEMA_VERSION, convert_to_sqlite};
use demo_store::{DemoSpec, generate};
use rusqlite::Connection;

#[test]
fn converted_store_is_a_valid_database_holding_every_line() {
    let legacy = tempfile::tempdir().unwrap();
    let spec = DemoSpec {
        agents: 2,
        sessions_per_agent: 4,
        turns_per_session: 6,
        seed: 3,
        days: 20,
        end_ms: 1_795_000_000_000,
        tool_result_bytes: 3000,
        wide: false,
    };
    let manifest = generate(legacy.path(), &spec).unwrap();
    let out = tempfile::tempdir().unwrap();
    let stats = convert_to_sqlite(legacy.path(), out.path()).unwrap();
    assert_eq!(stats.agents, 2);
    assert_eq!(stats.sessions, manifest.files);
    assert_eq!(stats.nodes, manifest.sessions);
    assert!(stats.compressed_events > 0 && stats.compressed_events < stats.events);
    // Every line is one event (the files end each line with one newline).
    assert_eq!(stats.event_bytes + stats.events, manifest.bytes);
    assert!(out.path().join("clawgate-demo.json").is_file());

    for agent in ["main", "agent1"] {
        let dir = out.path().join("agents").join(agent).join("agent");
        assert!(dir.join("models.json").is_file());
        let names: Vec<String> =
            fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert!(!names.iter().any(|n| n.ends_with("-wal") || n.ends_with("-shm") || n.ends_with(".partial")));
        let c = Connection::open(dir.join("openclaw-agent.sqlite")).unwrap();
        let one = |sql: &str| -> String {
            c.query_row(sql, [], |r| r.get::<_, rusqlite::types::Value>(0)).map(|v| format!("{v:?}")).unwrap()
        };
        assert_eq!(one("PRAGMA integrity_check"), "Text(\"ok\")");
        assert_eq!(one("SELECT count(*) FROM pragma_foreign_key_check"), "Integer(0)");
        assert_eq!(one("PRAGMA journal_mode"), "Text(\"wal\")");
        assert_eq!(one("PRAGMA user_version"), format!("Integer({SCHEMA_VERSION})"));
        assert_eq!(
            one("SELECT schema_version FROM schema_meta WHERE role = 'agent'"),
            format!("Integer({SCHEMA_VERSION})")
        );
        // Exactly one of the two payload columns, compressed exactly when large.
        assert_eq!(
            one(&format!(
                "SELECT count(*) FROM transcript_events WHERE (event_zstd IS NOT NULL) != (event_utf8_bytes > {COMPRESS_ABOVE_BYTES})"
            )),
            "Integer(0)"
        );
        // Each session's events, inflated and joined, are its transcript file.
        let mut st = c
            .prepare(
                "SELECT session_id, event_json, event_zstd FROM transcript_events ORDER BY session_id, seq",
            )
            .unwrap();
        let mut by_session: BTreeMap<String, String> = BTreeMap::new();
        let rows = st
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?, r.get::<_, Option<Vec<u8>>>(2)?))
            })
            .unwrap();
        for row in rows {
            let (sid, json, blob) = row.unwrap();
            let text = json
                .unwrap_or_else(|| String::from_utf8(zstd::decode_all(&blob.unwrap()[..]).unwrap()).unwrap());
            let body = by_session.entry(sid).or_default();
            body.push_str(&text);
            body.push('\n');
        }
        let sessions = legacy.path().join("agents").join(agent).join("sessions");
        for ent in fs::read_dir(&sessions).unwrap() {
            let name = ent.unwrap().file_name().into_string().unwrap();
            let Some(id) = name.split(".jsonl").next().filter(|_| name.contains(".jsonl")) else { continue };
            assert_eq!(by_session[id], fs::read_to_string(sessions.join(&name)).unwrap(), "{name}");
        }
    }
}
