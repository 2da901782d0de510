//! The persisted index: a restarted engine answers from it without parsing, picks up what
//! changed while it was down, and discards (and reports) an index that is corrupt, truncated,
//! of another format version, or written for another state dir.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use ipc_proto::Method;
use serde_json::Value;

use super::generate::{Rng, Spec, generate, transcript};
use super::{ask, assert_json_close, engine, query, strip_volatile};
use crate::engine::index::FILE_NAME;
use crate::engine::{Engine, EngineConfig};

const SPEC: Spec = Spec { agents: 2, sessions_per_agent: 4, turns: 5, tool_result_bytes: 500, seed: 21 };

fn persistent(dir: &Path, data: &Path) -> Engine {
    let mut cfg = EngineConfig::new(dir);
    cfg.data_dir = Some(data.to_path_buf());
    Engine::new(cfg)
}

fn answer(e: &mut Engine) -> (Value, u64) {
    let (mut v, stats) = ask(e, &query(Method::SessionsUsage));
    let discards = v["diagnostics"]["rollupCacheDiscards"].as_u64().unwrap();
    strip_volatile(&mut v);
    (v, stats.bytes_parsed + discards * 1_000_000_000_000)
}

/// A store, a data dir, and the answer of a fresh engine that saved its cache there.
fn saved() -> (tempfile::TempDir, tempfile::TempDir, Value) {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    generate(dir.path(), &SPEC);
    let mut first = persistent(dir.path(), data.path());
    let (v, parsed) = answer(&mut first);
    assert!(parsed > 0);
    drop(first);
    assert!(data.path().join(FILE_NAME).is_file());
    (dir, data, v)
}

#[test]
fn a_restarted_engine_answers_from_the_cache() {
    let (dir, data, want) = saved();
    let mut second = persistent(dir.path(), data.path());
    let (got, parsed) = answer(&mut second);
    assert_eq!(parsed, 0, "nothing parsed, nothing discarded");
    assert_json_close(&got, &want, "restarted");
}

#[test]
fn changes_made_while_down_are_picked_up_incrementally() {
    let (dir, data, _) = saved();
    let p = dir.path().join("agents/main/sessions").join(
        fs::read_dir(dir.path().join("agents/main/sessions"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .find(|n| n.ends_with(".jsonl") && !n.contains(".checkpoint.") && !n.contains(".trajectory"))
            .unwrap(),
    );
    let extra = transcript(&mut Rng::new(4), "x", &SPEC, 1_793_000_000_000);
    let extra = extra.split_once('\n').unwrap().1;
    OpenOptions::new().append(true).open(&p).unwrap().write_all(extra.as_bytes()).unwrap();
    let mut second = persistent(dir.path(), data.path());
    let (got, parsed) = answer(&mut second);
    assert_eq!(parsed, extra.len() as u64, "only the appended bytes");
    let (want, _) = answer(&mut engine(dir.path()));
    assert_json_close(&got, &want, "after appends while down");
}

/// Damages the cache file with `damage`, then checks the next engine discards it, says so in
/// its diagnostics, rebuilds, and answers correctly.
fn discarded_after(damage: impl FnOnce(&Path, &Path)) {
    let (dir, data, want) = saved();
    damage(dir.path(), &data.path().join(FILE_NAME));
    let mut second = persistent(dir.path(), data.path());
    let (mut v, stats) = ask(&mut second, &query(Method::SessionsUsage));
    assert_eq!(v["diagnostics"]["rollupCacheDiscards"], 1);
    assert!(stats.bytes_parsed > 0, "rebuilt from the store");
    strip_volatile(&mut v);
    assert_json_close(&v, &want, "after a discard");
    // The rebuilt index is kept and then trusted.
    drop(second);
    let (_, parsed) = answer(&mut persistent(dir.path(), data.path()));
    assert_eq!(parsed, 0);
}

#[test]
fn a_damaged_header_is_discarded() {
    discarded_after(|_, f| {
        let mut bytes = fs::read(f).unwrap();
        bytes[..16].copy_from_slice(b"not a database!!");
        fs::write(f, bytes).unwrap();
    });
}

#[test]
fn a_truncated_index_is_discarded() {
    discarded_after(|_, f| {
        OpenOptions::new().write(true).open(f).unwrap().set_len(100).unwrap();
    });
}

#[test]
fn garbage_is_discarded() {
    discarded_after(|_, f| fs::write(f, b"not an index at all").unwrap());
}

#[test]
fn another_format_is_discarded() {
    discarded_after(|_, f| {
        let c = rusqlite::Connection::open(f).unwrap();
        c.execute("UPDATE meta SET v = 'format 0' WHERE k = 'identity'", []).unwrap();
    });
}

#[test]
fn a_cache_of_another_state_dir_is_discarded() {
    discarded_after(|dir, f| {
        // Written by an engine over a copy of the store elsewhere.
        let other = tempfile::tempdir().unwrap();
        generate(other.path(), &SPEC);
        let scratch = tempfile::tempdir().unwrap();
        let mut e = persistent(other.path(), scratch.path());
        answer(&mut e);
        drop(e);
        fs::copy(scratch.path().join(FILE_NAME), f).unwrap();
        assert!(dir.is_dir());
    });
}

#[test]
fn an_unwritable_data_dir_does_not_fail_answers() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), &SPEC);
    let blocker = tempfile::NamedTempFile::new().unwrap();
    // A data dir below a regular file cannot be created.
    let mut e = persistent(dir.path(), &blocker.path().join("cache"));
    let (v, _) = answer(&mut e);
    let (again, parsed) = answer(&mut e);
    assert_eq!(parsed, 0);
    assert_json_close(&again, &v, "still answering");
}

/// A file whose stored rollup cannot be read back when it changes (a damaged row) is parsed
/// whole again; its old contribution, unknown, cannot be taken away from the live aggregates,
/// so they are rebuilt rather than left counting it twice.
#[test]
fn a_changed_file_whose_stored_rollup_is_unreadable_is_not_counted_twice() {
    let (dir, data, _) = saved();
    let mut warm = persistent(dir.path(), data.path());
    answer(&mut warm);
    let sessions = dir.path().join("agents/main/sessions");
    let name = fs::read_dir(&sessions)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.ends_with(".jsonl") && !n.contains(".checkpoint.") && !n.contains(".trajectory"))
        .unwrap();
    let index = rusqlite::Connection::open(data.path().join(FILE_NAME)).unwrap();
    let damaged = index.execute("UPDATE files SET rollup = x'c1' WHERE file_name = ?1", [&name]).unwrap();
    assert_eq!(damaged, 1);
    drop(index);
    let extra = transcript(&mut Rng::new(5), "y", &SPEC, 1_793_100_000_000);
    let extra = extra.split_once('\n').unwrap().1;
    OpenOptions::new().append(true).open(sessions.join(&name)).unwrap().write_all(extra.as_bytes()).unwrap();
    let (got, _) = answer(&mut warm);
    let (want, _) = answer(&mut engine(dir.path()));
    assert_json_close(&got, &want, "after a damaged rollup");
}

/// Indexes of the index's own tables, by name.
fn index_names(data: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(data.join(FILE_NAME)).unwrap();
    let mut st = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'index' ORDER BY name").unwrap();
    st.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
}

#[test]
fn a_cold_build_cut_short_gets_its_deferred_indexes_at_the_next_open() {
    let (dir, data, want) = saved();
    // A cold build drops these while it writes and makes them after its rows.
    let deferred = ["files_page", "files_stat", "rowvals_1_cost", "rowvals_1_messages", "rowvals_1_tokens"];
    let names = index_names(data.path());
    for n in deferred {
        assert!(names.iter().any(|x| x == n), "{n} made after the cold build: {names:?}");
    }
    // As a worker killed in the middle of a cold build leaves the file.
    {
        let conn = rusqlite::Connection::open(data.path().join(FILE_NAME)).unwrap();
        for n in deferred {
            conn.execute_batch(&format!("DROP INDEX {n}")).unwrap();
        }
    }
    let mut second = persistent(dir.path(), data.path());
    let (got, parsed) = answer(&mut second);
    assert_eq!(parsed, 0, "the rows were kept: nothing parsed again");
    assert_json_close(&got, &want, "after the indexes were made again");
    let names = index_names(data.path());
    for n in deferred {
        assert!(names.iter().any(|x| x == n), "{n} made again at open: {names:?}");
    }
}

/// A restarted engine compares a long listing with its index a slice at a time (four files a
/// slice in tests): a file renamed to a name in a later slice is followed without parsing it,
/// one renamed to a name in an earlier slice is parsed again (its old row removed after the
/// last slice), a removed one goes and an appended one is read from its checkpoint; every
/// answer is a fresh engine's.
#[test]
fn a_restart_compares_a_long_listing_slice_by_slice() {
    let spec = Spec { agents: 1, sessions_per_agent: 12, turns: 3, tool_result_bytes: 300, seed: 31 };
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    generate(dir.path(), &spec);
    drop(answer(&mut persistent(dir.path(), data.path())));
    let sessions = dir.path().join("agents/main/sessions");
    let mut names: Vec<String> = fs::read_dir(&sessions)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| crate::engine::discover::classify(n).is_some())
        .collect();
    names.sort();
    assert!(names.len() >= 12, "{names:?}");
    let last = names.last().unwrap().clone();
    let last_len = fs::metadata(sessions.join(&last)).unwrap().len();
    fs::rename(sessions.join(&names[0]), sessions.join("zzzz-later.jsonl")).unwrap();
    fs::rename(sessions.join(&last), sessions.join("0000-earlier.jsonl")).unwrap();
    fs::remove_file(sessions.join(&names[5])).unwrap();
    let mut rng = Rng::new(7);
    let extra = transcript(&mut rng, "x", &spec, 1_793_000_000_000);
    let extra = extra.split_once('\n').unwrap().1.to_owned();
    OpenOptions::new()
        .append(true)
        .open(sessions.join(&names[7]))
        .unwrap()
        .write_all(extra.as_bytes())
        .unwrap();

    let mut second = persistent(dir.path(), data.path());
    let (got, parsed) = answer(&mut second);
    assert_eq!(parsed, last_len + extra.len() as u64);
    let (want, _) = answer(&mut engine(dir.path()));
    assert_json_close(&got, &want, "restarted");
    let files: Vec<&str> = got["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["usage"]["sessionFile"].as_str())
        .collect();
    for gone in [&names[0], &last, &names[5]] {
        assert!(!files.iter().any(|f| f.ends_with(gone.as_str())), "{gone} listed");
    }
    assert!(files.iter().any(|f| f.ends_with("zzzz-later.jsonl")));
    assert!(files.iter().any(|f| f.ends_with("0000-earlier.jsonl")));
}
