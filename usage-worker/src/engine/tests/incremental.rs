//! Incremental refresh: after appends, truncation, replacement, in-place rewrites, deletion and
//! renames, a long-lived engine answers exactly like a fresh one, parsing only what changed.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::generate::{Rng, Spec, generate, transcript};
use super::{ask, assert_json_close, engine, query, strip_volatile};
use crate::engine::Engine;
use ipc_proto::{Method, UsageQuery};

const SPEC: Spec = Spec { agents: 2, sessions_per_agent: 6, turns: 12, tool_result_bytes: 800, seed: 11 };

fn queries() -> Vec<UsageQuery> {
    let mut s = query(Method::SessionsUsage);
    s.limit = Some(3);
    let mut f = query(Method::SessionsUsage);
    f.group_by = ipc_proto::GroupBy::Family;
    vec![query(Method::UsageCost), query(Method::SessionsUsage), s, f]
}

/// The warm engine's answers equal a fresh engine's, for every query.
fn assert_same_as_fresh(warm: &mut Engine, dir: &Path) -> u64 {
    let mut fresh = engine(dir);
    let mut parsed = 0;
    for (i, q) in queries().iter().enumerate() {
        let (mut a, stats) = ask(warm, q);
        if i == 0 {
            parsed = stats.bytes_parsed;
        }
        let (mut b, _) = ask(&mut fresh, q);
        strip_volatile(&mut a);
        strip_volatile(&mut b);
        assert_json_close(&a, &b, "answer");
    }
    parsed
}

fn first_transcript(dir: &Path, agent: &str) -> PathBuf {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join("agents").join(agent).join("sessions"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "jsonl")
                && !p.to_string_lossy().contains(".checkpoint.")
                && !p.to_string_lossy().contains(".trajectory")
        })
        .collect();
    files.sort();
    files.remove(0)
}

fn bump_mtime(p: &Path) {
    let f = OpenOptions::new().write(true).open(p).unwrap();
    let m = fs::metadata(p).unwrap().modified().unwrap();
    f.set_modified(m + Duration::from_secs(5)).unwrap();
}

/// A transcript directory listed 30 s ago is listed whole again while the worker is idle, not
/// by the call that finds it that old (a stat of every file cost the first append after a quiet
/// spell ~350 ms on nine agents of 6,000), however long the spell: that call takes the events.
/// A call lists it when 30 s more pass with no idle moment (a worker never idle for a second).
#[test]
fn a_directory_listed_30_s_ago_is_listed_again_while_idle() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), &SPEC);
    let mut warm = engine(dir.path());
    assert_same_as_fresh(&mut warm, dir.path());
    let cancel = std::sync::atomic::AtomicBool::new(false);
    assert!(warm.maintain(&cancel).unwrap().is_empty(), "nothing due");
    let p = first_transcript(dir.path(), "main");
    let mut rng = Rng::new(7);
    let append = |rng: &mut Rng| {
        let extra = transcript(rng, "y", &SPEC, 1_793_000_000_000);
        let extra = extra.split_once('\n').unwrap().1.to_owned();
        OpenOptions::new().append(true).open(&p).unwrap().write_all(extra.as_bytes()).unwrap();
    };
    warm.watch.age(Duration::from_secs(31));
    append(&mut rng);
    let listings = warm.watch.listings;
    let (_, s) = ask(&mut warm, &query(Method::UsageCost));
    assert_eq!((s.files_parsed, warm.watch.listings), (1, listings), "the call took the events");
    let due = warm.maintain(&cancel).unwrap();
    assert!(due.contains(&"main".to_owned()), "{due:?}");
    assert_eq!(warm.watch.listings, listings + due.len() as u64);
    assert!(warm.maintain(&cancel).unwrap().is_empty(), "listed: nothing due");
    assert_eq!(assert_same_as_fresh(&mut warm, dir.path()), 0);
    // A spell ten minutes long: the call still takes the events.
    warm.watch.age(Duration::from_secs(600));
    append(&mut rng);
    let listings = warm.watch.listings;
    let (_, s) = ask(&mut warm, &query(Method::UsageCost));
    assert_eq!((s.files_parsed, warm.watch.listings), (1, listings), "a long spell: the events");
    // No idle moment for 30 s after that call: the next call lists.
    warm.watch.age(Duration::from_secs(31));
    append(&mut rng);
    let (_, s) = ask(&mut warm, &query(Method::UsageCost));
    assert_eq!(s.files_parsed, 1);
    assert!(warm.watch.listings > listings, "30 s due with no idle moment: the call lists");
    assert_same_as_fresh(&mut warm, dir.path());
}

#[test]
fn appends_parse_only_new_bytes() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), &SPEC);
    let mut warm = engine(dir.path());
    let total = assert_same_as_fresh(&mut warm, dir.path());
    assert!(total > 0);
    let p = first_transcript(dir.path(), "main");
    let mut rng = Rng::new(99);
    let extra = transcript(&mut rng, "x", &SPEC, 1_793_000_000_000);
    // Drop the header line so the append looks like more turns.
    let extra = extra.split_once('\n').unwrap().1.to_owned();
    OpenOptions::new().append(true).open(&p).unwrap().write_all(extra.as_bytes()).unwrap();
    let parsed = assert_same_as_fresh(&mut warm, dir.path());
    assert_eq!(parsed, extra.len() as u64);
    // Nothing changed: nothing parsed.
    assert_eq!(assert_same_as_fresh(&mut warm, dir.path()), 0);
}

#[test]
fn truncation_replacement_rewrite_deletion_and_rename() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), &SPEC);
    let mut warm = engine(dir.path());
    assert_same_as_fresh(&mut warm, dir.path());

    // Truncate to the first half of its lines.
    let p = first_transcript(dir.path(), "main");
    let body = fs::read_to_string(&p).unwrap();
    let lines: Vec<&str> = body.lines().collect();
    let half = lines[..lines.len() / 2].join("\n") + "\n";
    fs::write(&p, &half).unwrap();
    let parsed = assert_same_as_fresh(&mut warm, dir.path());
    assert_eq!(parsed, half.len() as u64);

    // Replace with different content via a new inode (write + rename over).
    let mut rng = Rng::new(5);
    let other = transcript(&mut rng, "y", &SPEC, 1_792_000_000_000);
    let tmp = p.with_extension("tmp");
    fs::write(&tmp, &other).unwrap();
    fs::rename(&tmp, &p).unwrap();
    let parsed = assert_same_as_fresh(&mut warm, dir.path());
    assert_eq!(parsed, other.len() as u64);

    // Rewrite in place, same length, different bytes before the checkpoint.
    let at = other.find("\"output\":").unwrap() + "\"output\":".len();
    let mut bytes = other.clone().into_bytes();
    bytes[at] = if bytes[at] == b'1' { b'2' } else { b'1' };
    let body = String::from_utf8(bytes).unwrap();
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(body.as_bytes(), 0).unwrap();
    drop(f);
    bump_mtime(&p);
    let parsed = assert_same_as_fresh(&mut warm, dir.path());
    assert_eq!(parsed, body.len() as u64, "rescanned");

    // Delete one file.
    fs::remove_file(&p).unwrap();
    assert_eq!(assert_same_as_fresh(&mut warm, dir.path()), 0);

    // Archive another by renaming it: followed by inode, nothing re-parsed.
    let q = first_transcript(dir.path(), "agent1");
    let archived = PathBuf::from(format!("{}.deleted.2026-11-29T10-00-00.000Z", q.display()));
    fs::rename(&q, &archived).unwrap();
    assert_eq!(assert_same_as_fresh(&mut warm, dir.path()), 0);
    let (v, _) = ask(&mut warm, &query(Method::SessionsUsage));
    let files: Vec<&str> = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["usage"]["sessionFile"].as_str().unwrap())
        .collect();
    assert!(files.contains(&archived.to_str().unwrap()));
}

#[test]
fn a_removed_agent_drops_its_rollups() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), &SPEC);
    let mut warm = engine(dir.path());
    assert_same_as_fresh(&mut warm, dir.path());
    let all = warm.cached_files();
    // A query scoped to one agent keeps the other's rollups…
    let mut one = query(Method::UsageCost);
    one.agents = ipc_proto::AgentScope::One("main".into());
    ask(&mut warm, &one);
    assert_eq!(warm.cached_files(), all);
    // …but an agent whose directory is gone is forgotten.
    fs::remove_dir_all(dir.path().join("agents/agent1")).unwrap();
    assert_eq!(assert_same_as_fresh(&mut warm, dir.path()), 0);
    assert!(warm.cached_files() < all);
}

/// Two `sessions.json` keys that name one entry once canonical (`cron:j` and `agent:<a>:cron:j`):
/// the later wins, whether the agent's entries are stored at once on a cold read (no look-ups)
/// or the second key arrives in a later version of the file.
#[test]
fn a_key_repeated_once_canonical_reads_alike_cold_and_warm() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), &SPEC);
    let store = dir.path().join("agents/main/sessions/sessions.json");
    let text = fs::read_to_string(&store).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let (key, entry) = v.as_object().unwrap().iter().next().unwrap();
    let short = key.strip_prefix("agent:main:").expect("a canonical key");
    let mut repeated = entry.clone();
    repeated["label"] = "the later one".into();
    let with_repeat = format!(
        "{}, {}: {}}}",
        text.trim_end().strip_suffix('}').unwrap(),
        serde_json::Value::from(short),
        repeated
    );
    let mut warm = engine(dir.path());
    assert_same_as_fresh(&mut warm, dir.path());
    fs::write(&store, &with_repeat).unwrap();
    bump_mtime(&store);
    assert_same_as_fresh(&mut warm, dir.path());
    let (rows, _) = ask(&mut engine(dir.path()), &query(Method::SessionsUsage));
    let labels: Vec<&str> =
        rows["sessions"].as_array().unwrap().iter().filter_map(|r| r["label"].as_str()).collect();
    assert!(labels.contains(&"the later one"), "{labels:?}");
}

/// OpenClaw's legacy layout rewrites the whole `sessions.json` after every turn. Entries whose
/// text changed in place are applied alone (digests of the last read); an entry added, removed,
/// renamed or made unusable applies the whole file. Every step answers as a fresh engine does.
#[test]
fn a_sessions_json_rewritten_after_each_turn_answers_like_a_fresh_engine() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), &SPEC);
    let store = dir.path().join("agents/main/sessions/sessions.json");
    let read = || -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str(&fs::read_to_string(&store).unwrap()).unwrap()
    };
    // Written as OpenClaw does (a new file renamed over the old one), keys in the same order.
    let write = |m: &serde_json::Map<String, serde_json::Value>| {
        let tmp = store.with_extension("json.tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(m).unwrap()).unwrap();
        fs::rename(&tmp, &store).unwrap();
        bump_mtime(&store);
    };
    let mut warm = engine(dir.path());
    assert_same_as_fresh(&mut warm, dir.path());
    let keys: Vec<String> = read().keys().cloned().collect();
    let label_of = |e: &mut Engine, key: &str| -> Option<String> {
        let (v, _) = ask(e, &query(Method::SessionsUsage));
        let rows = v["sessions"].as_array().unwrap().clone();
        rows.iter().find(|r| r["key"] == key).and_then(|r| r["label"].as_str().map(str::to_owned))
    };

    // A turn: one entry's `updatedAt` and label change in place.
    let mut m = read();
    m[&keys[1]]["updatedAt"] = (m[&keys[1]]["updatedAt"].as_f64().unwrap() + 60_000.0).into();
    m[&keys[1]]["label"] = "after a turn".into();
    write(&m);
    assert_eq!(label_of(&mut warm, &keys[1]).as_deref(), Some("after a turn"));
    assert_eq!(warm.store_patches, 1, "the changed entry alone");
    assert_same_as_fresh(&mut warm, dir.path());

    // Two more in place, then each change of shape: the whole file, and still exact.
    m[&keys[0]]["label"] = "first".into();
    m[&keys[2]]["label"] = "third".into();
    write(&m);
    assert_same_as_fresh(&mut warm, dir.path());
    assert_eq!(warm.store_patches, 2);
    assert_eq!(label_of(&mut warm, &keys[2]).as_deref(), Some("third"));

    // A key renamed where it stands: a key the index does not know.
    let mut renamed = serde_json::Map::new();
    for (k, v) in read() {
        let k = if k == keys[0] { format!("{k}-renamed") } else { k };
        renamed.insert(k, v);
    }
    write(&renamed);
    assert_same_as_fresh(&mut warm, dir.path());
    assert_eq!(label_of(&mut warm, &format!("{}-renamed", keys[0])).as_deref(), Some("first"));
    assert_eq!(warm.store_patches, 2, "applied whole");

    // An entry that is no longer one (no `sessionId`), then one removed.
    let mut m = read();
    m[&keys[1]].as_object_mut().unwrap().remove("sessionId");
    write(&m);
    assert_same_as_fresh(&mut warm, dir.path());
    assert_eq!(label_of(&mut warm, &keys[1]), None);
    m.remove(&keys[2]);
    write(&m);
    assert_same_as_fresh(&mut warm, dir.path());
    assert_eq!(label_of(&mut warm, &keys[2]), None);
    assert_eq!(warm.store_patches, 2);
}

/// A cold build answers before it makes the indexes only the next refresh reads (its file
/// listings and `sessionFile` look-ups): they are made once the answer is out, and whichever
/// way they come (after the answer, or at the next job), later answers are a fresh engine's.
#[test]
fn a_cold_build_answers_before_making_the_indexes_only_refreshes_read() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), &SPEC);
    let indexes = |e: &Engine| -> Vec<String> {
        let conn = e.index.as_ref().unwrap().conn();
        let mut st = conn
            .prepare(
                "SELECT CASE WHEN name GLOB 'rowvals_*' THEN 'rowvals' || substr(name, instr(substr(name, 9), '_') + 8) ELSE name END
                 FROM sqlite_master WHERE type = 'index'
                 AND (name IN ('files_stat', 'files_name', 'files_page') OR name GLOB 'rowvals_*') ORDER BY 1",
            )
            .unwrap();
        let mut names: Vec<String> = st.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
        // Each live shape has its row-number table's three.
        names.dedup();
        names
    };
    let all =
        ["files_name", "files_page", "files_stat", "rowvals_cost", "rowvals_messages", "rowvals_tokens"];
    let mut by_cost = query(Method::SessionsUsage);
    by_cost.sort = Some(ipc_proto::RowSort { key: ipc_proto::SortKey::Cost, descending: true });
    for after_answer in [true, false] {
        let mut e = engine(dir.path());
        ask(&mut e, &query(Method::SessionsUsage));
        assert_eq!(indexes(&e), ["files_page"], "answered with the row order alone");
        // Rows by cost are sorted without the index meanwhile, as they are with it (rows of
        // equal cost in the order of their ids, which differ between engines).
        let costs = |v: &serde_json::Value| -> (Vec<String>, std::collections::BTreeSet<String>) {
            let rows = v["sessions"].as_array().unwrap();
            (
                rows.iter().map(|r| r["usage"]["totalCost"].to_string()).collect(),
                rows.iter().map(|r| r["key"].to_string()).collect(),
            )
        };
        let (a, _) = ask(&mut e, &by_cost);
        let (b, _) = ask(&mut engine(dir.path()), &by_cost);
        assert!(a["sessions"].as_array().unwrap().len() > 10);
        assert_eq!(costs(&a), costs(&b), "rows by cost");
        if after_answer {
            e.after_answer();
            assert_eq!(indexes(&e), all);
            // The cold build's WAL is checkpointed when the worker is idle (`save`), not by
            // the answer's aftermath: until then checkpoints stay 256 MB apart.
            let pages = |e: &Engine| -> i64 {
                e.index
                    .as_ref()
                    .unwrap()
                    .conn()
                    .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
                    .unwrap()
            };
            let wal = e.index.as_ref().unwrap().path().with_extension("sqlite-wal");
            assert_eq!(pages(&e), 65_536);
            assert!(std::fs::metadata(&wal).unwrap().len() > 0, "frames still in the WAL");
            e.save();
            assert_eq!(pages(&e), 4096);
            assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0, "checkpointed and truncated");
        }
        // Turns appended: the next refresh lists the agent's files.
        let extra = transcript(&mut Rng::new(7), "x", &SPEC, 1_793_000_000_000);
        let extra = extra.split_once('\n').unwrap().1.to_owned();
        let p = first_transcript(dir.path(), "main");
        OpenOptions::new().append(true).open(&p).unwrap().write_all(extra.as_bytes()).unwrap();
        assert_same_as_fresh(&mut e, dir.path());
        assert_eq!(indexes(&e), all);
    }
}

/// A large `sessions.json` is written to the index as its entries are built, streamed from the
/// file or walked from its text, never all held: its answers are those of a read of every
/// entry at once, after entries change, vanish and get renamed (the keys it no longer has are
/// deleted), and a file cut short midway writes nothing of it (its entries are dropped with an
/// error, as that read drops them) until it is whole again.
#[test]
fn a_large_sessions_json_is_written_as_its_entries_are_built() {
    for streamed in [true, false] {
        large_sessions_json_written_as_built(streamed);
    }
}

fn large_sessions_json_written_as_built(streamed: bool) {
    use crate::engine::store::READ_AS;
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), &SPEC);
    let store = dir.path().join("agents/main/sessions/sessions.json");
    let write = |text: &[u8]| {
        let tmp = store.with_extension("json.tmp");
        fs::write(&tmp, text).unwrap();
        fs::rename(&tmp, &store).unwrap();
        bump_mtime(&store);
    };
    // Answers of the streaming engine and of a fresh one reading the file whole, with the
    // number of `sessions.json` errors each reports.
    let compare = |warm: &mut Engine| -> u64 {
        let mut errors = Vec::new();
        for q in queries() {
            READ_AS.set(Some(streamed));
            let (mut a, _) = ask(warm, &q);
            READ_AS.set(None);
            let (mut b, _) = ask(&mut engine(dir.path()), &q);
            let n = |v: &serde_json::Value| v["diagnostics"]["sessionsJsonErrors"].as_u64();
            assert_eq!(n(&a), n(&b));
            errors.push(n(&a).unwrap_or(0));
            strip_volatile(&mut a);
            strip_volatile(&mut b);
            assert_json_close(&a, &b, if streamed { "streamed" } else { "walked" });
        }
        errors[0]
    };
    let mut warm = engine(dir.path());
    assert_eq!(compare(&mut warm), 0);
    let mut m: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&fs::read_to_string(&store).unwrap()).unwrap();
    let keys: Vec<String> = m.keys().cloned().collect();
    assert!(keys.len() >= 4);
    m[&keys[0]]["label"] = "relabelled".into();
    m.remove(&keys[1]);
    let moved = m.remove(&keys[2]).unwrap();
    m.insert(format!("{}-renamed", keys[2]), moved);
    let whole = serde_json::to_vec_pretty(&m).unwrap();
    write(&whole);
    assert_eq!(compare(&mut warm), 0);
    let (v, _) = ask(&mut warm, &query(Method::SessionsUsage));
    let rows = v["sessions"].as_array().unwrap();
    assert!(rows.iter().any(|r| r["label"] == "relabelled"));
    assert!(rows.iter().any(|r| r["key"] == format!("{}-renamed", keys[2]).as_str()));
    assert!(!rows.iter().any(|r| r["key"] == keys[1].as_str()));

    // Cut short past its first entries: nothing of it is kept, and it says why.
    write(&whole[..whole.len() * 2 / 3]);
    assert_eq!(compare(&mut warm), 1);
    let (v, _) = ask(&mut warm, &query(Method::SessionsUsage));
    assert!(!v["sessions"].as_array().unwrap().iter().any(|r| r["label"] == "relabelled"));
    write(&whole);
    assert_eq!(compare(&mut warm), 0);
}
