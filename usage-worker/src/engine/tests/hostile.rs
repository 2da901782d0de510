//! A hostile store (issue #17): edits that hide from size and mtime, impossible usage numbers,
//! symlinks leading out of the state dir, FIFOs put in a transcript's place. Each is seen,
//! counted or refused, and never blocks or corrupts the totals.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

use ipc_proto::Method;

use super::{ask, query};
use crate::engine::{Engine, EngineConfig};

fn assistant(ts: &str, input: &str, cost: &str) -> String {
    format!(
        r#"{{"type":"message","timestamp":"{ts}","message":{{"role":"assistant","content":[],"provider":"p","model":"m","usage":{{"input":{input},"output":1,"cost":{{"total":{cost}}}}}}}}}"#
    )
}

fn sessions(dir: &Path) -> std::path::PathBuf {
    let s = dir.join("agents/main/sessions");
    fs::create_dir_all(&s).unwrap();
    s
}

fn persistent(dir: &Path, data: &Path) -> Engine {
    let mut cfg = EngineConfig::new(dir);
    cfg.data_dir = Some(data.to_path_buf());
    Engine::new(cfg)
}

#[test]
fn a_same_size_edit_with_the_old_mtime_put_back_is_seen_also_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let file = sessions(dir.path()).join("s1.jsonl");
    fs::write(&file, format!("{}\n", assistant("2026-11-01T10:00:00.000Z", "100", "0.5"))).unwrap();
    let mut e = persistent(dir.path(), data.path());
    let (v, _) = ask(&mut e, &query(Method::UsageCost));
    assert_eq!(v["totals"]["input"], 100);
    // Same length, new number, mtime restored: only the inode change time tells.
    let mtime = fs::metadata(&file).unwrap().modified().unwrap();
    let edited = assistant("2026-11-01T10:00:00.000Z", "900", "0.5");
    fs::write(&file, format!("{edited}\n")).unwrap();
    fs::File::options().write(true).open(&file).unwrap().set_modified(mtime).unwrap();
    // The running engine (its directory watch sees the write) ...
    let (v, _) = ask(&mut e, &query(Method::UsageCost));
    assert_eq!(v["totals"]["input"], 900);
    drop(e);
    // ... and a restarted one, which only has its index's checkpoint to compare with.
    let edited = assistant("2026-11-01T10:00:00.000Z", "300", "0.5");
    fs::write(&file, format!("{edited}\n")).unwrap();
    fs::File::options().write(true).open(&file).unwrap().set_modified(mtime).unwrap();
    let mut restarted = persistent(dir.path(), data.path());
    let (v, stats) = ask(&mut restarted, &query(Method::UsageCost));
    assert_eq!(v["totals"]["input"], 300);
    assert_eq!(stats.files_parsed, 1);
}

#[test]
fn impossible_usage_numbers_are_not_summed_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let lines = [
        assistant("2026-11-01T10:00:00.000Z", "10", "0.25"),
        assistant("2026-11-01T10:00:01.000Z", "18446744073709551616", "0.25"), // 2^64 tokens
        assistant("2026-11-01T10:00:02.000Z", "10", "1e308"),                  // absurd cost
        assistant("2026-11-01T10:00:03.000Z", "20000000000", "0.25"),          // 2e10 > 1e10
        assistant("2026-11-01T10:00:04.000Z", "10", "0.25"),
    ];
    fs::write(sessions(dir.path()).join("s1.jsonl"), lines.join("\n") + "\n").unwrap();
    let mut e = Engine::new(EngineConfig::new(dir.path()));
    let (v, _) = ask(&mut e, &query(Method::SessionsUsage));
    assert_eq!(v["totals"]["input"], 20);
    assert_eq!(v["totals"]["totalCost"], 0.5);
    // The messages still count; their usage does not.
    assert_eq!(v["aggregates"]["messages"]["assistant"], 5);
    assert_eq!(v["diagnostics"]["implausibleUsage"], 3);
    assert_eq!(v["diagnostics"]["malformedJsonLines"], 0);
}

#[test]
fn symlinks_out_of_the_state_dir_are_not_read_and_say_so() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("sessions");
    fs::create_dir_all(&secret).unwrap();
    fs::write(secret.join("s9.jsonl"), format!("{}\n", assistant("2026-11-01T10:00:00.000Z", "777", "1")))
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    // Agent `main`: real sessions plus a file symlink to a transcript outside.
    let s = sessions(dir.path());
    fs::write(s.join("s1.jsonl"), format!("{}\n", assistant("2026-11-01T10:00:00.000Z", "5", "1"))).unwrap();
    symlink(secret.join("s9.jsonl"), s.join("s9.jsonl")).unwrap();
    // Agent `evil`: its whole sessions/ is a symlink outside.
    fs::create_dir_all(dir.path().join("agents/evil")).unwrap();
    symlink(&secret, dir.path().join("agents/evil/sessions")).unwrap();
    // Agent `ok`: a sessions/ symlinked to a directory inside the state dir is fine.
    let inner = dir.path().join("elsewhere-inside");
    fs::create_dir_all(&inner).unwrap();
    fs::write(inner.join("s2.jsonl"), format!("{}\n", assistant("2026-11-01T10:00:00.000Z", "11", "1")))
        .unwrap();
    fs::create_dir_all(dir.path().join("agents/ok")).unwrap();
    symlink(&inner, dir.path().join("agents/ok/sessions")).unwrap();

    let mut e = Engine::new(EngineConfig::new(dir.path()));
    let (v, _) = ask(&mut e, &query(Method::UsageCost));
    assert_eq!(v["totals"]["input"], 16, "main's own file and ok's, nothing from outside");
    assert_eq!(v["diagnostics"]["skippedSpecialFiles"], 2);
    let errors = v["diagnostics"]["errors"].to_string();
    assert!(errors.contains("a symlink") && errors.contains("outside the state dir"), "{errors}");
}

#[test]
fn a_fifo_renamed_over_a_transcript_never_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let s = sessions(dir.path());
    let file = s.join("s1.jsonl");
    fs::write(&file, format!("{}\n", assistant("2026-11-01T10:00:00.000Z", "5", "1"))).unwrap();
    let mut e = Engine::new(EngineConfig::new(dir.path()));
    assert_eq!(ask(&mut e, &query(Method::UsageCost)).0["totals"]["input"], 5);
    // A FIFO (nobody writes to it) takes the transcript's place.
    let fifo = s.join("fifo.tmp");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    fs::rename(&fifo, &file).unwrap();
    let started = Instant::now();
    let (v, _) = ask(&mut e, &query(Method::UsageCost));
    assert!(started.elapsed() < Duration::from_secs(5), "blocked on the FIFO for {:?}", started.elapsed());
    assert_eq!(v["totals"]["input"], 0, "the FIFO is not a transcript");
    assert_eq!(v["diagnostics"]["skippedSpecialFiles"], 1, "{}", v["diagnostics"]);
    // A fresh engine listing the directory skips it too.
    let mut fresh = Engine::new(EngineConfig::new(dir.path()));
    let started = Instant::now();
    let (v, _) = ask(&mut fresh, &query(Method::UsageCost));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(v["diagnostics"]["skippedSpecialFiles"], 1);
    // And a sessions.json that is a FIFO does not block either.
    let store = s.join("sessions.json");
    nix::unistd::mkfifo(&store, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut again = Engine::new(EngineConfig::new(dir.path()));
    let started = Instant::now();
    let (v, _) = ask(&mut again, &query(Method::UsageCost));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(v["diagnostics"]["sessionsJsonErrors"], 1);
}
