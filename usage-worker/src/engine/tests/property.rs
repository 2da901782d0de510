//! Property test: for random sequences of store changes (appends, unterminated tails and their
//! completion, truncations, replacements by a new inode, same-size rewrites, deletions, renames
//! to archives, new sessions, `sessions.json` and `models.json` edits), a long-lived engine, and
//! one that is restarted from its persisted cache now and then, answer exactly like a fresh
//! engine, for several query shapes. A small seeded PRNG drives it; a failure prints the seed
//! and step to replay.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipc_proto::{DayZone, GroupBy, Method, UsageQuery};

use super::generate::{Rng, Spec, generate, transcript};
use super::{ask, assert_json_close, engine, query, strip_volatile};
use crate::engine::{Engine, EngineConfig};

const SPEC: Spec = Spec { agents: 2, sessions_per_agent: 5, turns: 6, tool_result_bytes: 300, seed: 3 };
/// 2026-10-01T00:00:00Z, where the generator's data starts.
const BASE_MS: i64 = 1_790_812_800_000;

fn queries() -> Vec<UsageQuery> {
    let mut out = vec![query(Method::UsageCost), query(Method::SessionsUsage)];
    let mut limited = query(Method::SessionsUsage);
    limited.limit = Some(3);
    out.push(limited);
    let mut family = query(Method::SessionsUsage);
    family.group_by = GroupBy::Family;
    out.push(family);
    // A sub-range in UTC+05:30.
    let mut range = query(Method::SessionsUsage);
    let off = 330 * 60_000;
    range.start_ms = BASE_MS + 10 * 86_400_000 - off;
    range.end_ms = BASE_MS + 40 * 86_400_000 - 1 - off;
    range.day_zone = DayZone::FixedOffsetMinutes(330);
    out.push(range.clone());
    range.method = Method::UsageCost;
    out.push(range);
    let mut one = query(Method::UsageCost);
    one.agents = ipc_proto::AgentScope::One("agent1".into());
    out.push(one);
    out
}

/// Transcript files (counted or not) of every agent, sorted.
fn transcripts(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for a in fs::read_dir(dir.join("agents")).unwrap() {
        let sessions = a.unwrap().path().join("sessions");
        for f in fs::read_dir(&sessions).unwrap() {
            let p = f.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.contains(".jsonl") && !name.contains(".checkpoint.") && !name.contains(".trajectory") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Lines of a new transcript without its header, as appended turns.
fn more_lines(rng: &mut Rng, start: i64) -> String {
    let turns = 1 + rng.below(3) as usize;
    let t = transcript(rng, "x", &Spec { turns, ..SPEC }, start);
    t.split_once('\n').unwrap().1.to_owned()
}

fn bump_mtime(p: &Path, secs: u64) {
    let f = OpenOptions::new().write(true).open(p).unwrap();
    let m = fs::metadata(p).unwrap().modified().unwrap();
    f.set_modified(m + Duration::from_secs(secs)).unwrap();
}

/// One random change; returns a description for failure messages.
fn mutate(rng: &mut Rng, dir: &Path, step: usize) -> String {
    let files = transcripts(dir);
    let pick = |rng: &mut Rng| files[rng.below(files.len() as u64) as usize].clone();
    let at = BASE_MS + rng.below(60 * 86_400_000) as i64;
    match rng.below(11) {
        0..=2 => {
            let p = pick(rng);
            let lines = more_lines(rng, at);
            OpenOptions::new().append(true).open(&p).unwrap().write_all(lines.as_bytes()).unwrap();
            format!("append {} bytes to {}", lines.len(), p.display())
        }
        3 => {
            // An unterminated last line; a later append (or this step's next op) completes it.
            let p = pick(rng);
            let lines = more_lines(rng, at);
            let cut = lines.len() - 1 - rng.below(40).min(lines.len() as u64 - 2) as usize;
            OpenOptions::new().append(true).open(&p).unwrap().write_all(&lines.as_bytes()[..cut]).unwrap();
            format!("append a partial line to {}", p.display())
        }
        4 => {
            let p = pick(rng);
            let body = fs::read(&p).unwrap();
            let keep = rng.below(body.len() as u64 + 1) as usize;
            fs::write(&p, &body[..keep]).unwrap();
            format!("truncate {} to {keep} of {} bytes", p.display(), body.len())
        }
        5 => {
            let p = pick(rng);
            let tmp = p.with_extension("tmp-replace");
            fs::write(&tmp, transcript(rng, "r", &SPEC, at)).unwrap();
            fs::rename(&tmp, &p).unwrap();
            format!("replace {} (new inode)", p.display())
        }
        6 => {
            // Same length, different bytes somewhere before the end: a rewrite in place.
            let p = pick(rng);
            let mut body = fs::read(&p).unwrap();
            let digits: Vec<usize> = (0..body.len()).filter(|&i| body[i].is_ascii_digit()).collect();
            if digits.is_empty() {
                return "nothing to rewrite".into();
            }
            let i = digits[rng.below(digits.len() as u64) as usize];
            body[i] = if body[i] == b'7' { b'3' } else { b'7' };
            use std::os::unix::fs::FileExt;
            OpenOptions::new().write(true).open(&p).unwrap().write_all_at(&body, 0).unwrap();
            bump_mtime(&p, 1 + rng.below(5));
            format!("rewrite byte {i} of {} in place", p.display())
        }
        7 => {
            if files.len() <= 2 {
                return "kept the last files".into();
            }
            let p = pick(rng);
            fs::remove_file(&p).unwrap();
            format!("delete {}", p.display())
        }
        8 => {
            let p = pick(rng);
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let Some(stem) = name.find(".jsonl").map(|i| &name[..i]) else { return "odd name".into() };
            let kind = if rng.chance(0.5) { "deleted" } else { "reset" };
            let to = p.with_file_name(format!(
                "{stem}.jsonl.{kind}.2026-11-{:02}T10-00-00.{step:03}Z",
                1 + step % 28
            ));
            fs::rename(&p, &to).unwrap();
            format!("rename {} to {}", p.display(), to.display())
        }
        9 => {
            let agent = if rng.chance(0.5) { "main" } else { "agent1" };
            let p = dir.join("agents").join(agent).join("sessions").join(format!("new-{step}.jsonl"));
            fs::write(&p, transcript(rng, &format!("new-{step}"), &SPEC, at)).unwrap();
            format!("create {}", p.display())
        }
        _ => {
            if rng.chance(0.5) {
                let p = dir.join("agents/main/sessions/sessions.json");
                let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
                if let Some(entry) = v.as_object_mut().unwrap().values_mut().next() {
                    entry["label"] = format!("relabelled {step}").into();
                    entry["updatedAt"] = (BASE_MS + 90 * 86_400_000 + step as i64).into();
                }
                fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
                bump_mtime(&p, 1);
                "edit sessions.json".into()
            } else {
                let p = dir.join("agents/main/agent/models.json");
                let price = 1 + rng.below(9);
                fs::write(
                    &p,
                    format!(
                        r#"{{"providers":{{"local":{{"models":[{{"id":"unpriced-model","cost":{{"input":{price},"output":2}}}}]}},"anthropic":{{"models":[{{"id":"claude-sonnet-4-5","cost":{{"input":3,"output":15,"cacheRead":0.3,"cacheWrite":3.75}}}}]}}}}}}"#
                    ),
                )
                .unwrap();
                bump_mtime(&p, 1);
                format!("reprice local/unpriced-model at {price}")
            }
        }
    }
}

fn persistent(dir: &Path, data: &Path) -> Engine {
    let mut cfg = EngineConfig::new(dir);
    cfg.data_dir = Some(data.to_path_buf());
    Engine::new(cfg)
}

fn run(seed: u64, steps: usize) {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    generate(dir.path(), &Spec { seed, ..SPEC });
    let mut rng = Rng::new(seed);
    let mut warm = engine(dir.path());
    let mut restarted = persistent(dir.path(), data.path());
    let qs = queries();
    for step in 0..steps {
        let what = mutate(&mut rng, dir.path(), step);
        // Every few steps the persistent engine saves and a new process would load it.
        if rng.chance(0.25) {
            drop(restarted);
            restarted = persistent(dir.path(), data.path());
        }
        let mut fresh = engine(dir.path());
        // Queries in a random order, so caches of one shape meet changes made under another.
        let first = rng.below(qs.len() as u64) as usize;
        for i in 0..qs.len() {
            let q = &qs[(first + i) % qs.len()];
            let (mut want, _) = ask(&mut fresh, q);
            strip_volatile(&mut want);
            for (name, e) in [("warm", &mut warm), ("restarted", &mut restarted)] {
                let (mut got, _) = ask(e, q);
                strip_volatile(&mut got);
                let at =
                    format!("seed {seed} step {step} ({what}), {name} engine, {} {q:?}", q.method.name());
                assert_json_close(&got, &want, &at);
            }
        }
    }
}

#[test]
fn incremental_answers_equal_fresh_ones_under_random_changes() {
    for seed in [1, 2, 3] {
        run(seed, 30);
    }
}
