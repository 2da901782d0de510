//! End-to-end checks of generated stores against an independent re-read of the files.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use demo_store::{
    DemoError, DemoManifest, DemoSpec, MANIFEST_FILE, Totals, append_turn, generate, generate_or_reuse,
    read_manifest,
};
use serde_json::Value;

const END_MS: i64 = 1_790_000_000_000;

fn small() -> DemoSpec {
    DemoSpec { end_ms: END_MS, ..DemoSpec::default() }
}

/// Usage sums as an independent reader computes them.
#[derive(Debug, Default, Clone)]
struct Sum {
    tokens: [u64; 5],
    costs: [f64; 5],
}

impl Sum {
    fn add(&mut self, usage: &Value) {
        for (i, k) in ["input", "output", "cacheRead", "cacheWrite", "totalTokens"].iter().enumerate() {
            self.tokens[i] += usage[k].as_u64().expect("token count");
        }
        let cost = &usage["cost"];
        for (i, k) in ["total", "input", "output", "cacheRead", "cacheWrite"].iter().enumerate() {
            self.costs[i] += cost[k].as_f64().expect("cost");
        }
    }

    fn assert_matches(&self, t: &Totals, what: &str) {
        let tokens = [t.input, t.output, t.cache_read, t.cache_write, t.total_tokens];
        assert_eq!(self.tokens, tokens, "{what}: tokens");
        let costs = [t.total_cost, t.input_cost, t.output_cost, t.cache_read_cost, t.cache_write_cost];
        for (a, b) in self.costs.iter().zip(costs) {
            assert!((a - b).abs() <= 1e-9 * a.abs().max(b.abs()), "{what}: cost {a} vs {b}");
        }
        assert_eq!(t.missing_cost_entries, 0);
    }
}

#[derive(Debug, Default)]
struct Reread {
    total: Sum,
    by_agent: BTreeMap<String, Sum>,
    by_model: BTreeMap<String, Sum>,
    user: u64,
    assistant: u64,
    tool_results: u64,
    tool_calls: u64,
    errors: u64,
    files: u64,
    bytes: u64,
    first_ms: Option<i64>,
    last_ms: Option<i64>,
}

fn is_transcript(name: &str) -> bool {
    name.ends_with(".jsonl") || name.contains(".jsonl.reset.")
}

fn transcripts(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| is_transcript(&p.file_name().unwrap().to_string_lossy()))
        .collect();
    files.sort();
    files
}

/// Parses every line of every transcript and checks its structure on the way.
fn reread(root: &Path) -> Reread {
    let mut r = Reread::default();
    let mut agents: Vec<PathBuf> =
        fs::read_dir(root.join("agents")).unwrap().map(|e| e.unwrap().path()).collect();
    agents.sort();
    for agent_dir in agents {
        let agent = agent_dir.file_name().unwrap().to_string_lossy().to_string();
        assert!(agent_dir.join("agent/models.json").is_file());
        for file in transcripts(&agent_dir.join("sessions")) {
            r.files += 1;
            let text = fs::read_to_string(&file).unwrap();
            r.bytes += text.len() as u64;
            assert!(text.ends_with('\n'));
            let mut prev_id: Option<String> = None;
            let mut prev_ms = i64::MIN;
            for (n, line) in text.lines().enumerate() {
                let v: Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{}:{}: {e}", file.display(), n + 1));
                let kind = v["type"].as_str().unwrap();
                match n {
                    0 => {
                        assert_eq!(kind, "session");
                        assert_eq!(v["version"], 3);
                        let id = v["id"].as_str().unwrap();
                        let name = file.file_name().unwrap().to_string_lossy().to_string();
                        assert!(name.starts_with(&format!("{id}.jsonl")));
                    }
                    1 => assert_eq!(kind, "model_change"),
                    _ => {}
                }
                let ts = v["timestamp"].as_str().unwrap();
                assert_eq!(ts.len(), 24, "{ts}");
                let ms = iso_ms(ts);
                assert!(ms > prev_ms, "{}:{}: time goes back", file.display(), n + 1);
                prev_ms = ms;
                assert!(ms <= END_MS);
                if n > 0 {
                    assert_eq!(v["parentId"].as_str(), prev_id.as_deref());
                    prev_id = Some(v["id"].as_str().unwrap().to_string());
                }
                if kind != "message" {
                    continue;
                }
                let m = &v["message"];
                assert_eq!(m["timestamp"].as_i64(), Some(ms));
                r.first_ms = Some(r.first_ms.map_or(ms, |f| f.min(ms)));
                r.last_ms = Some(r.last_ms.map_or(ms, |l| l.max(ms)));
                match m["role"].as_str().unwrap() {
                    "user" => r.user += 1,
                    "toolResult" => {
                        r.tool_results += 1;
                        assert_eq!(m["isError"], false);
                    }
                    "assistant" => {
                        r.assistant += 1;
                        let blocks = m["content"].as_array().unwrap();
                        r.tool_calls += blocks.iter().filter(|b| b["type"] == "toolCall").count() as u64;
                        if m["stopReason"] == "error" {
                            r.errors += 1;
                            assert!(m["errorMessage"].is_string());
                        }
                        let usage = &m["usage"];
                        let model =
                            format!("{}/{}", m["provider"].as_str().unwrap(), m["model"].as_str().unwrap());
                        r.total.add(usage);
                        r.by_agent.entry(agent.clone()).or_default().add(usage);
                        r.by_model.entry(model).or_default().add(usage);
                    }
                    other => panic!("unexpected role {other}"),
                }
            }
        }
    }
    r
}

/// Epoch ms of a `YYYY-MM-DDTHH:MM:SS.mmmZ` string (days-from-civil).
fn iso_ms(s: &str) -> i64 {
    let n = |a: usize, b: usize| s[a..b].parse::<i64>().unwrap();
    let (y, m, d) = (n(0, 4), n(5, 7), n(8, 10));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    ((days * 24 + n(11, 13)) * 60 + n(14, 16)) * 60_000 + n(17, 19) * 1000 + n(20, 23)
}

fn check_manifest(root: &Path, m: &DemoManifest) {
    let r = reread(root);
    r.total.assert_matches(&m.totals, "totals");
    assert_eq!(r.by_agent.len(), m.by_agent.len());
    for (agent, sum) in &r.by_agent {
        sum.assert_matches(&m.by_agent[agent], agent);
    }
    assert_eq!(r.by_model.len(), m.by_model.len());
    for (model, sum) in &r.by_model {
        sum.assert_matches(&m.by_model[model], model);
    }
    let mut by_channel = Totals::default();
    m.by_channel.values().for_each(|t| by_channel.merge(t));
    assert_eq!(by_channel.total_tokens, m.totals.total_tokens);
    assert_eq!(m.messages.user, r.user);
    assert_eq!(m.messages.assistant, r.assistant);
    assert_eq!(m.messages.tool_results, r.tool_results);
    assert_eq!(m.messages.tool_calls, r.tool_calls);
    assert_eq!(m.messages.errors, r.errors);
    assert_eq!((m.files, m.bytes), (r.files, r.bytes));
    assert_eq!((m.first_ms, m.last_ms), (r.first_ms, r.last_ms));
}

#[test]
fn manifest_matches_an_independent_reread() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("store");
    let spec = small();
    let m = generate(&out, &spec).unwrap();
    assert_eq!(read_manifest(&out).unwrap(), m);
    check_manifest(&out, &m);

    assert_eq!(m.sessions, 36);
    assert_eq!(m.messages.user, m.messages.tool_results);
    assert!(m.archives > 0, "small spec should include an archive");
    assert_eq!(m.files, m.sessions + m.archives);
    assert!(m.messages.assistant >= 2 * 36 * 20);
    assert_eq!(m.by_agent.keys().collect::<Vec<_>>(), ["agent1", "agent2", "main"]);
    assert!(m.by_model.len() >= 4, "{:?}", m.by_model.keys());
    // Cache reads dominate, as in real agent sessions.
    assert!(m.totals.cache_read > m.totals.input * 5);
    assert!(m.totals.total_cost > 0.0);

    // sessions.json: parses, one entry per session, every sessionFile exists.
    let mut families = 0;
    for (i, agent) in ["main", "agent1", "agent2"].iter().enumerate() {
        let path = out.join("agents").join(agent).join("sessions/sessions.json");
        let store: serde_json::Map<String, Value> =
            serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(store.len(), 12);
        assert!(store.contains_key(&format!("agent:{agent}:main")), "agent {i}");
        for (key, e) in &store {
            assert!(key.starts_with(&format!("agent:{agent}:")) || key.starts_with("cron:"));
            let file = Path::new(e["sessionFile"].as_str().unwrap());
            assert!(file.is_absolute() && file.is_file(), "{key}");
            let sid = e["sessionId"].as_str().unwrap();
            assert_eq!(file.file_name().unwrap().to_string_lossy(), format!("{sid}.jsonl"));
            assert!(e["updatedAt"].as_i64().unwrap() >= e["sessionStartedAt"].as_i64().unwrap());
            for k in ["chatType", "channel", "lastChannel", "modelProvider", "model"] {
                assert!(e[k].is_string(), "{key}.{k}");
            }
            assert!(e["origin"]["from"].is_string());
            if let Some(ids) = e["usageFamilySessionIds"].as_array() {
                families += 1;
                let old = ids[0].as_str().unwrap();
                let dir = file.parent().unwrap();
                let archived = fs::read_dir(dir).unwrap().any(|f| {
                    let name = f.unwrap().file_name().to_string_lossy().to_string();
                    name.starts_with(&format!("{old}.jsonl.reset."))
                });
                assert!(archived, "{key}: archive of {old}");
            }
        }
    }
    assert_eq!(families, m.archives);
}

fn all_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn same_spec_gives_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let spec = DemoSpec { agents: 2, sessions_per_agent: 15, turns_per_session: 12, ..small() };
    let ma = generate(&a, &spec).unwrap();
    let mb = generate(&b, &spec).unwrap();
    assert_eq!(ma, mb);
    let files = all_files(&a);
    assert_eq!(files, all_files(&b));
    let (ra, rb) = (
        fs::canonicalize(&a).unwrap().display().to_string(),
        fs::canonicalize(&b).unwrap().display().to_string(),
    );
    for f in files {
        let (x, y) = (fs::read(a.join(&f)).unwrap(), fs::read(b.join(&f)).unwrap());
        if f.ends_with("sessions.json") {
            // Only the absolute sessionFile paths differ.
            let x = String::from_utf8(x).unwrap().replace(&ra, "<root>");
            let y = String::from_utf8(y).unwrap().replace(&rb, "<root>");
            assert_eq!(x, y, "{}", f.display());
        } else {
            assert!(x == y, "{} differs", f.display());
        }
    }

    let other = generate(&dir.path().join("c"), &DemoSpec { seed: 7, ..spec }).unwrap();
    assert_ne!(other.totals, ma.totals);
}

#[test]
fn regenerates_only_when_the_spec_changes_and_refuses_foreign_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("store");
    let spec = DemoSpec { agents: 1, sessions_per_agent: 3, turns_per_session: 4, ..small() };
    let first = generate(&out, &spec).unwrap();
    let sentinel = out.join("agents/main/sentinel");
    fs::write(&sentinel, "x").unwrap();
    assert_eq!(generate(&out, &spec).unwrap(), first);
    assert!(sentinel.exists(), "same spec must not regenerate");
    let later = DemoSpec { end_ms: END_MS + 3_600_000, ..spec.clone() };
    assert_eq!(generate_or_reuse(&out, &later).unwrap(), first);
    assert!(sentinel.exists(), "same shape, other end: reused");

    let bigger = DemoSpec { agents: 2, ..spec.clone() };
    let second = generate(&out, &bigger).unwrap();
    assert!(!sentinel.exists(), "changed spec regenerates from scratch");
    assert_eq!(second.spec, bigger);
    assert_eq!(second.by_agent.len(), 2);
    check_manifest(&out, &second);

    // An interrupted run (marker, no manifest) is ours: cleaned and regenerated.
    fs::remove_file(out.join(MANIFEST_FILE)).unwrap();
    fs::write(out.join("clawgate-demo.partial"), "").unwrap();
    assert_eq!(generate(&out, &bigger).unwrap(), second);

    let foreign = dir.path().join("foreign");
    fs::create_dir(&foreign).unwrap();
    fs::write(foreign.join("notes.txt"), "mine").unwrap();
    let err = generate(&foreign, &spec).unwrap_err();
    assert!(matches!(err, DemoError::NotEmpty(_)), "{err}");
    assert!(err.to_string().contains(MANIFEST_FILE));
    assert_eq!(fs::read_dir(&foreign).unwrap().count(), 1);

    let file = dir.path().join("plain-file");
    fs::write(&file, "x").unwrap();
    assert!(matches!(generate(&file, &spec), Err(DemoError::NotADirectory(_))));
    assert!(read_manifest(&foreign).is_err());
}

fn file_sum(path: &Path) -> (Sum, usize, Vec<Value>) {
    let text = fs::read_to_string(path).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut sum = Sum::default();
    for v in &lines {
        if v["message"]["role"] == "assistant" {
            sum.add(&v["message"]["usage"]);
        }
    }
    (sum, lines.len(), lines)
}

#[test]
fn append_turn_adds_exactly_what_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("store");
    let spec = DemoSpec { agents: 1, sessions_per_agent: 2, turns_per_session: 30, ..small() };
    generate(&out, &spec).unwrap();
    let store: Value =
        serde_json::from_str(&fs::read_to_string(out.join("agents/main/sessions/sessions.json")).unwrap())
            .unwrap();
    let entry = &store["agent:main:main"];
    let file = PathBuf::from(entry["sessionFile"].as_str().unwrap());
    let copy = dir.path().join("copy.jsonl");
    fs::copy(&file, &copy).unwrap();

    let (before, n_before, lines_before) = file_sum(&file);
    let last_id = lines_before.last().unwrap()["id"].as_str().unwrap().to_string();
    let at = END_MS + 60_000;
    let mut added = Totals::default();
    for i in 0..3 {
        let t = append_turn(&file, 99, at + i * 600_000).unwrap();
        assert!(t.total_tokens > 0 || t.total_cost == 0.0);
        added.merge(&t);
    }
    let (after, n_after, lines) = file_sum(&file);
    assert_eq!(n_after, n_before + 12);

    let added_tokens = [added.input, added.output, added.cache_read, added.cache_write, added.total_tokens];
    for ((a, b), add) in after.tokens.iter().zip(before.tokens).zip(added_tokens) {
        assert_eq!(*a, b + add);
    }
    let added_costs = [
        added.total_cost,
        added.input_cost,
        added.output_cost,
        added.cache_read_cost,
        added.cache_write_cost,
    ];
    for ((a, b), add) in after.costs.iter().zip(before.costs).zip(added_costs) {
        let want = b + add;
        assert!((a - want).abs() <= 1e-9 * want.max(1e-12), "{a} vs {want}");
    }

    // The new lines continue the chain, keep the session's model, and start at `at`.
    let first_new = &lines[n_before];
    assert_eq!(first_new["parentId"].as_str(), Some(last_id.as_str()));
    assert_eq!(first_new["message"]["role"], "user");
    assert_eq!(first_new["message"]["timestamp"].as_i64(), Some(at));
    let roles: Vec<&str> =
        lines[n_before..n_before + 4].iter().map(|v| v["message"]["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "toolResult", "assistant"]);
    assert_eq!(lines[n_before + 1]["message"]["model"], entry["model"]);
    for w in lines[1..].windows(2) {
        assert_eq!(w[1]["parentId"], w[0]["id"]);
    }

    // Deterministic for the same file content, seed and time.
    let t = append_turn(&copy, 99, at).unwrap();
    let expected_bytes: Vec<u8> = {
        let text = fs::read_to_string(&file).unwrap();
        let upto: usize = text.lines().take(n_before + 4).map(|l| l.len() + 1).sum();
        text.as_bytes()[..upto].to_vec()
    };
    assert_eq!(fs::read(&copy).unwrap(), expected_bytes);
    assert!(t.total_tokens > 0 || t.total_cost == 0.0);

    // Not a transcript.
    let empty = dir.path().join("empty.jsonl");
    fs::write(&empty, "").unwrap();
    assert!(matches!(append_turn(&empty, 1, at), Err(DemoError::BadTranscript { .. })));
}

#[test]
fn seed_size_extrapolates_to_about_1_45_gb() {
    let dir = tempfile::tempdir().unwrap();
    let seed = DemoSpec::seed_size();
    assert_eq!((seed.agents, seed.sessions_per_agent, seed.turns_per_session), (9, 184, 100));
    let spec = DemoSpec { agents: 1, sessions_per_agent: 4, end_ms: END_MS, ..seed };
    let m = generate(&dir.path().join("s"), &spec).unwrap();
    let projected = m.bytes as f64 / 4.0 * (9.0 * 184.0);
    assert!((projected / 1.45e9 - 1.0).abs() < 0.25, "projected {projected:.3e} bytes");
    // ~200 assistant messages per session.
    assert!(m.messages.assistant >= 4 * 200);
}
