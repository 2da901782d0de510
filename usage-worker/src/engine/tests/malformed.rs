//! Broken input: every kind of bad line is skipped and counted, valid lines count exactly, and
//! an unterminated last line is counted exactly once, when its newline arrives.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use ipc_proto::Method;

use super::{ask, query};
use crate::engine::{Engine, EngineConfig};

fn assistant(ts: &str, input: u64, pad: usize) -> String {
    format!(
        r#"{{"type":"message","timestamp":"{ts}","message":{{"role":"assistant","content":[{{"type":"text","text":"{}"}}],"provider":"p","model":"m","usage":{{"input":{input},"output":1,"cost":{{"total":0.5}}}}}}}}"#,
        "x".repeat(pad)
    )
}

fn write_store(dir: &Path) -> (std::path::PathBuf, String) {
    let sessions = dir.join("agents/main/sessions");
    fs::create_dir_all(&sessions).unwrap();
    let mut body: Vec<u8> = Vec::new();
    let mut line = |b: &[u8]| {
        body.extend_from_slice(b);
        body.push(b'\n');
    };
    line(br#"{"type":"message","timestamp":"2026-11-01T10:00:00.000Z","message":{"role":"user","content":"hi"}}"#);
    line(br#"{"type":"message","message":{"#); // broken JSON
    line(b"\xff\xfe\x80 binary junk \x81"); // not UTF-8
    line(b"{\"message\":{\"role\":\"user\",\"content\":\"caf\xe9\"}}"); // invalid UTF-8 in a string
    line(b"{\"message\":{\"role\":\"user\"}}\0"); // NUL byte
    line(b"   "); // blank: not counted at all
    line(assistant("2026-11-01T10:00:05.000Z", 100, 10).as_bytes());
    line(assistant("2026-11-01T10:00:06.000Z", 1_000_000, 3 << 20).as_bytes()); // several MB
    line(b"[1,2,3]"); // JSON, not an object
    line(assistant("2026-11-01T10:00:07.000Z", 20, 10).as_bytes());
    let tail = assistant("2026-11-01T10:00:08.000Z", 3, 10);
    body.extend_from_slice(tail.as_bytes()); // no newline yet
    let path = sessions.join("s1.jsonl");
    fs::write(&path, &body).unwrap();
    // A malformed sessions.json is a diagnostic, not an error.
    fs::write(sessions.join("sessions.json"), b"{not json").unwrap();
    (path, tail)
}

#[test]
fn bad_lines_are_counted_per_kind_and_the_tail_once() {
    let dir = tempfile::tempdir().unwrap();
    let (path, tail) = write_store(dir.path());
    let mut cfg = EngineConfig::new(dir.path());
    cfg.max_line_bytes = 1 << 20;
    let mut e = Engine::new(cfg);
    let (v, stats) = ask(&mut e, &query(Method::SessionsUsage));
    assert_eq!(v["totals"]["input"], 120);
    assert_eq!(v["totals"]["totalCost"], 1.0);
    assert_eq!(v["aggregates"]["messages"]["user"], 1);
    assert_eq!(v["aggregates"]["messages"]["assistant"], 2);
    let d = &v["diagnostics"];
    assert_eq!(d["malformedJsonLines"], 2);
    assert_eq!(d["invalidUtf8Lines"], 2);
    assert_eq!(d["nulByteLines"], 1);
    assert_eq!(d["oversizeLines"], 1);
    assert_eq!(d["pendingTails"], 1);
    assert_eq!(d["sessionsJsonErrors"], 1);
    assert_eq!(stats.lines_skipped, 7);
    assert_eq!(stats.files_parsed, 1);

    // Unchanged: nothing is parsed again and the answer is the same.
    let (v2, stats2) = ask(&mut e, &query(Method::SessionsUsage));
    assert_eq!(stats2.bytes_parsed, 0);
    assert_eq!(v2["totals"], v["totals"]);

    // The newline arrives: the tail counts, once, and only its bytes are parsed.
    OpenOptions::new().append(true).open(&path).unwrap().write_all(b"\n").unwrap();
    let (v3, stats3) = ask(&mut e, &query(Method::SessionsUsage));
    assert_eq!(v3["totals"]["input"], 123);
    assert_eq!(v3["diagnostics"]["pendingTails"], 0);
    assert_eq!(stats3.bytes_parsed, tail.len() as u64 + 1);
    let (v4, stats4) = ask(&mut e, &query(Method::SessionsUsage));
    assert_eq!(v4["totals"]["input"], 123);
    assert_eq!(stats4.bytes_parsed, 0);
    // A fresh engine agrees.
    let mut cfg = EngineConfig::new(dir.path());
    cfg.max_line_bytes = 1 << 20;
    let (v5, _) = ask(&mut Engine::new(cfg), &query(Method::SessionsUsage));
    assert_eq!(v5["totals"], v4["totals"]);
    assert_eq!(v5["diagnostics"]["oversizeLines"], 1);
}

#[test]
fn unreadable_and_missing_things_do_not_fail_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let sessions = dir.path().join("agents/main/sessions");
    fs::create_dir_all(&sessions).unwrap();
    fs::write(sessions.join("ok.jsonl"), assistant("2026-11-01T10:00:05.000Z", 5, 1) + "\n").unwrap();
    let locked = sessions.join("locked.jsonl");
    fs::write(&locked, assistant("2026-11-01T10:00:05.000Z", 7, 1) + "\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    // A directory and a symlink named like transcripts are not files.
    fs::create_dir(sessions.join("dir.jsonl")).unwrap();
    std::os::unix::fs::symlink(sessions.join("ok.jsonl"), sessions.join("link.jsonl")).unwrap();
    fs::create_dir_all(dir.path().join("agents/empty")).unwrap();
    let mut e = super::engine(dir.path());
    let (v, _) = ask(&mut e, &query(Method::UsageCost));
    let root_reads_anything = fs::read(&locked).is_ok();
    if root_reads_anything {
        assert_eq!(v["totals"]["input"], 12);
    } else {
        assert_eq!(v["totals"]["input"], 5);
        assert_eq!(v["diagnostics"]["unreadableFiles"], 1);
    }
    // No state dir at all: the store is unavailable.
    let mut e = super::engine(&dir.path().join("missing"));
    let err = super::try_ask(&mut e, &query(Method::UsageCost)).unwrap_err();
    assert_eq!(err.kind, ipc_proto::WorkerErrorKind::StoreUnavailable);
}

/// Documented behaviour for day zones that are not whole quarter hours (`UTC+0:10` here): a
/// quarter hour straddling local midnight counts whole for the day of its first entry, while
/// whole-quarter-hour offsets cut days exactly.
#[test]
fn offsets_that_are_not_quarter_hours_cut_days_on_buckets() {
    let dir = tempfile::tempdir().unwrap();
    let sessions = dir.path().join("agents/main/sessions");
    fs::create_dir_all(&sessions).unwrap();
    // 23:46 and 23:55 UTC share the quarter hour 23:45-24:00; at UTC+0:10 they are 23:56 on
    // 2026-11-01 and 00:05 on 2026-11-02.
    let body = [assistant("2026-11-01T23:46:00.000Z", 10, 1), assistant("2026-11-01T23:55:00.000Z", 20, 1)]
        .join("\n")
        + "\n";
    fs::write(sessions.join("s.jsonl"), body).unwrap();
    let mut e = crate::engine::Engine::new(EngineConfig::new(dir.path()));
    let day_inputs = |e: &mut Engine, minutes: i32| {
        let mut q = query(Method::UsageCost);
        q.day_zone = ipc_proto::DayZone::FixedOffsetMinutes(minutes);
        let (v, _) = ask(e, &q);
        v["daily"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["input"].as_u64() != Some(0))
            .map(|d| (d["date"].as_str().unwrap().to_owned(), d["input"].as_u64().unwrap()))
            .collect::<Vec<_>>()
    };
    assert_eq!(day_inputs(&mut e, 10), [("2026-11-01".to_owned(), 30)]);
    // A whole quarter hour (+00:15) puts both on the next day, exactly.
    assert_eq!(day_inputs(&mut e, 15), [("2026-11-02".to_owned(), 30)]);
    assert_eq!(day_inputs(&mut e, 0), [("2026-11-01".to_owned(), 30)]);
}
