//! A deliberately slow, straightforward reference: every line through `serde_json::Value`,
//! OpenClaw's rules written out per entry, no rollups. The engine must agree with it.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use ipc_proto::{DayZone, Method, UsageQuery};
use serde_json::Value;

use super::generate::{Spec, generate};
use super::{END_2026, ask, assert_close, engine, query};
use crate::engine::time::{format_day, parse_iso_ms};

#[derive(Debug, Clone, Default)]
pub struct RefTotals {
    pub tokens: [u64; 5],
    pub cost: [f64; 5],
    pub missing: u64,
}

impl RefTotals {
    fn add(&mut self, e: &RefEntry) {
        for (t, p) in self.tokens.iter_mut().zip(e.parts) {
            *t += p;
        }
        self.tokens[4] += e.total;
        match e.cost {
            Some(c) => {
                for (x, y) in self.cost.iter_mut().zip(c) {
                    *x += y;
                }
            }
            None => self.missing += 1,
        }
    }

    fn merge(&mut self, o: &RefTotals) {
        for (x, y) in self.tokens.iter_mut().zip(o.tokens) {
            *x += y;
        }
        for (x, y) in self.cost.iter_mut().zip(o.cost) {
            *x += y;
        }
        self.missing += o.missing;
    }
}

#[derive(Debug, Clone)]
pub(super) struct RefEntry {
    pub role: String,
    pub ts: Option<i64>,
    pub has_usage: bool,
    pub parts: [u64; 4],
    pub total: u64,
    /// total, input, output, cacheRead, cacheWrite
    pub cost: Option<[f64; 5]>,
    pub model_key: Option<String>,
    pub tools: Vec<String>,
    pub tool_results: u64,
    pub errors: u64,
    pub duration: Option<f64>,
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn pick(u: &Value, keys: &[&str]) -> Option<f64> {
    let vals: Vec<f64> = keys
        .iter()
        .filter_map(|k| {
            if let Some(rest) = k.strip_prefix('*') {
                u.as_object()?
                    .iter()
                    .find(|(n, v)| n.ends_with("_tokens_details") && v.get(rest).is_some())
                    .and_then(|(_, v)| num(&v[rest]))
            } else {
                num(u.get(*k)?)
            }
        })
        .collect();
    vals.iter().copied().find(|v| *v > 0.0).or(vals.first().copied())
}

fn prices(dir: &Path, agent: &str) -> Value {
    fs::read(dir.join("agents").join(agent).join("agent/models.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

fn price_of(tables: &[&Value], provider: &str, model: &str) -> Option<[f64; 4]> {
    for t in tables {
        if let Some(models) = t["providers"][provider]["models"].as_array()
            && let Some(m) = models.iter().find(|m| m["id"] == model)
            && m["cost"].is_object()
        {
            let c = &m["cost"];
            let g = |k: &str| c[k].as_f64().unwrap_or(0.0);
            return Some([g("input"), g("output"), g("cacheRead"), g("cacheWrite")]);
        }
    }
    None
}

pub(super) fn parse_entry(v: &Value, tables: &[&Value]) -> Option<RefEntry> {
    let m = v.get("message")?;
    if !m.is_object() {
        return None;
    }
    let role = m["role"].as_str()?.to_owned();
    if !["user", "assistant", "toolResult"].contains(&role.as_str()) {
        return None;
    }
    let ts =
        v["timestamp"].as_str().and_then(parse_iso_ms).or_else(|| m["timestamp"].as_f64().map(|t| t as i64));
    let mut e = RefEntry {
        role: role.clone(),
        ts,
        has_usage: false,
        parts: [0; 4],
        total: 0,
        cost: None,
        model_key: None,
        tools: Vec::new(),
        tool_results: 0,
        errors: 0,
        duration: None,
    };
    if role == "toolResult" {
        e.tool_results = 1;
        e.errors = u64::from(m["isError"] == Value::Bool(true));
        return Some(e);
    }
    let u = match m.get("usage") {
        None | Some(Value::Null) => v.get("usage").cloned().unwrap_or(Value::Null),
        Some(x) => x.clone(),
    };
    // A usage with a count above ten billion tokens or a cost above a million dollars is not
    // believed (the engine's plausibility limits): the message counts, its usage does not.
    let implausible = [
        &["input", "inputTokens", "input_tokens", "promptTokens", "prompt_tokens", "prompt_n"][..],
        &["output", "outputTokens", "output_tokens", "completionTokens", "completion_tokens", "predicted_n"],
        &["cacheRead", "cache_read", "cache_read_input_tokens", "cached_tokens", "*cached_tokens"],
        &["cacheWrite", "cache_write", "cache_creation_input_tokens"],
        &["total", "totalTokens", "total_tokens"],
    ]
    .iter()
    .any(|names| pick(&u, names).is_some_and(|x| x > 1e10))
        || ["total", "input", "output", "cacheRead", "cacheWrite"].iter().any(|k| {
            u["cost"].get(k).is_some_and(|c| {
                c.as_f64().is_none_or(|c| !c.is_finite() || c.abs() > 1e6) && !c.is_null() && c.is_number()
            })
        });
    let u = if implausible { Value::Null } else { u };
    // Truncated, negative as 0.
    let tok = |x: Option<f64>| x.map(|v| if v > 0.0 { v.trunc() as u64 } else { 0 });
    let input =
        tok(pick(&u, &["input", "inputTokens", "input_tokens", "promptTokens", "prompt_tokens", "prompt_n"]));
    let output = tok(pick(
        &u,
        &["output", "outputTokens", "output_tokens", "completionTokens", "completion_tokens", "predicted_n"],
    ));
    let cr = tok(pick(
        &u,
        &["cacheRead", "cache_read", "cache_read_input_tokens", "cached_tokens", "*cached_tokens"],
    ));
    let cw = tok(pick(&u, &["cacheWrite", "cache_write", "cache_creation_input_tokens"]));
    let total = tok(pick(&u, &["total", "totalTokens", "total_tokens"]));
    let provider = m["provider"].as_str().or(v["provider"].as_str());
    let model = m["model"].as_str().or(v["model"].as_str());
    if input.is_some() || output.is_some() || cr.is_some() || cw.is_some() || total.is_some() {
        e.has_usage = true;
        let openai = u.get("cached_tokens").is_some()
            || u.as_object().is_some_and(|o| {
                o.iter().any(|(k, v)| k.ends_with("_tokens_details") && v.get("cached_tokens").is_some())
            });
        let mut input = input.unwrap_or(0);
        if openai {
            input = input.saturating_sub(cr.unwrap_or(0));
        }
        e.parts = [input, output.unwrap_or(0), cr.unwrap_or(0), cw.unwrap_or(0)];
        e.total = total.unwrap_or(e.parts.iter().sum());
        let c = &u["cost"];
        if let Some(t) = c["total"].as_f64().filter(|t| *t >= 0.0) {
            let g = |k: &str| c[k].as_f64().unwrap_or(0.0);
            e.cost = Some([t, g("input"), g("output"), g("cacheRead"), g("cacheWrite")]);
        } else if let (Some(p), Some(mo)) = (provider, model)
            && let Some(pr) = price_of(tables, p, mo)
        {
            let parts: Vec<f64> = (0..4).map(|i| e.parts[i] as f64 * pr[i] / 1e6).collect();
            e.cost = Some([parts.iter().sum(), parts[0], parts[1], parts[2], parts[3]]);
        }
        if provider.is_some() || model.is_some() {
            e.model_key = Some(format!("{}/{}", provider.unwrap_or("unknown"), model.unwrap_or("unknown")));
        }
    }
    let mut tools: Vec<String> = Vec::new();
    let mut add = |n: &str| {
        let n = n.trim();
        if !n.is_empty() && !tools.iter().any(|t| t == n) {
            tools.push(n.to_owned());
        }
    };
    if let Some(n) = m.get("toolName").or(m.get("tool_name")).and_then(Value::as_str) {
        add(n);
    }
    for b in m["content"].as_array().into_iter().flatten() {
        let ty = b["type"].as_str().unwrap_or("").trim().to_lowercase();
        if ["tool_use", "toolcall", "tool_call"].contains(&ty.as_str()) {
            if let Some(n) = b["name"].as_str() {
                add(n);
            }
        } else if ty == "tool_result" || ty == "tool_result_error" {
            e.tool_results += 1;
            e.errors += u64::from(b["is_error"] == Value::Bool(true));
        }
    }
    e.tools = tools;
    if ["error", "aborted", "timeout"].contains(&m["stopReason"].as_str().unwrap_or("")) {
        e.errors += 1;
    }
    e.duration = m["durationMs"].as_f64().or(v["durationMs"].as_f64());
    Some(e)
}

/// The reference's view of a session.
#[derive(Debug, Default)]
pub struct RefSession {
    pub agent: String,
    pub totals: RefTotals,
    pub counts: [u64; 6],
    pub first: Option<i64>,
    pub last: Option<i64>,
    pub latency: Vec<f64>,
}

#[derive(Debug, Default)]
pub struct RefAnswer {
    pub cost_totals: RefTotals,
    pub cost_daily: BTreeMap<String, RefTotals>,
    pub sessions: BTreeMap<String, RefSession>,
    pub by_model: BTreeMap<String, (RefTotals, u64)>,
    pub tools: BTreeMap<String, u64>,
    pub daily_tokens: BTreeMap<String, (u64, f64, u64)>,
}

fn counted_name(name: &str) -> bool {
    !name.contains(".checkpoint.")
        && !name.contains(".trajectory")
        && (name.ends_with(".jsonl") || name.contains(".jsonl.reset.") || name.contains(".jsonl.deleted."))
}

/// Computes the reference answer for a window; lines longer than `max_line` bytes are skipped.
pub fn reference(dir: &Path, start: i64, end: i64, offset_ms: i64, max_line: usize) -> RefAnswer {
    let main_prices = prices(dir, "main");
    let mut out = RefAnswer::default();
    // Real directories only: symlinked agents and transcripts do not count.
    let mut agents: Vec<String> = fs::read_dir(dir.join("agents"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    agents.sort();
    for agent in agents {
        let own = prices(dir, &agent);
        let tables = [&main_prices, &own];
        let sdir = dir.join("agents").join(&agent).join("sessions");
        let Ok(listing) = fs::read_dir(&sdir) else { continue };
        for f in listing {
            let f = f.unwrap();
            let name = f.file_name().into_string().unwrap();
            if !counted_name(&name) || !f.file_type().unwrap().is_file() {
                continue;
            }
            let Ok(bytes) = fs::read(f.path()) else { continue };
            let mut sess = RefSession { agent: agent.clone(), ..RefSession::default() };
            let mut last_user: Option<i64> = None;
            let complete = match bytes.iter().rposition(|b| *b == b'\n') {
                Some(i) => &bytes[..=i],
                None => &bytes[..0],
            };
            for raw in complete.split(|b| *b == b'\n') {
                if raw.len() > max_line {
                    continue;
                }
                let Ok(text) = std::str::from_utf8(raw) else { continue };
                let text = text.trim();
                if text.is_empty() || text.contains('\0') {
                    continue;
                }
                let Ok(v) = serde_json::from_str::<Value>(text) else { continue };
                let Some(e) = parse_entry(&v, &tables) else { continue };
                let in_range = e.ts.is_none_or(|t| t >= start && t <= end);
                // usage.cost: timestamped usage entries in range.
                if e.has_usage
                    && let Some(t) = e.ts
                    && t != 0
                    && t >= start
                    && t <= end
                {
                    out.cost_totals.add(&e);
                    let day = format_day((t + offset_ms).div_euclid(86_400_000));
                    out.cost_daily.entry(day).or_default().add(&e);
                }
                if !in_range {
                    continue;
                }
                let c = &mut sess.counts;
                match e.role.as_str() {
                    "user" => {
                        c[0] += 1;
                        c[1] += 1;
                        if e.ts.is_some() {
                            last_user = e.ts;
                        }
                    }
                    "assistant" => {
                        c[0] += 1;
                        c[2] += 1;
                        if let Some(t) = e.ts {
                            let l = e.duration.or(last_user.map(|u| (t - u).max(0) as f64));
                            if let Some(l) = l.filter(|l| *l <= 43_200_000.0) {
                                sess.latency.push(l);
                            }
                        }
                    }
                    _ => {}
                }
                c[3] += e.tools.len() as u64;
                c[4] += e.tool_results;
                c[5] += e.errors;
                for t in &e.tools {
                    *out.tools.entry(t.clone()).or_default() += 1;
                }
                if let Some(t) = e.ts {
                    sess.first = Some(sess.first.map_or(t, |f| f.min(t)));
                    sess.last = Some(sess.last.map_or(t, |l| l.max(t)));
                    let day = format_day((t + offset_ms).div_euclid(86_400_000));
                    let d = out.daily_tokens.entry(day).or_default();
                    if e.role != "toolResult" {
                        d.2 += 1;
                    }
                    if e.has_usage {
                        d.0 += e.parts.iter().sum::<u64>();
                        d.1 += e.cost.map_or(0.0, |c| c[0]);
                    }
                }
                if e.has_usage {
                    sess.totals.add(&e);
                    if let Some(k) = &e.model_key {
                        let m = out.by_model.entry(k.clone()).or_default();
                        m.0.add(&e);
                        m.1 += 1;
                    }
                }
            }
            out.sessions.insert(f.path().display().to_string(), sess);
        }
    }
    out
}

fn check_totals(got: &Value, exp: &RefTotals, what: &str) {
    let names = ["input", "output", "cacheRead", "cacheWrite", "totalTokens"];
    for (i, n) in names.iter().enumerate() {
        assert_eq!(got[n].as_u64(), Some(exp.tokens[i]), "{what}.{n}");
    }
    let costs = ["totalCost", "inputCost", "outputCost", "cacheReadCost", "cacheWriteCost"];
    for (i, n) in costs.iter().enumerate() {
        assert_close(got[n].as_f64().unwrap(), exp.cost[i]);
    }
    assert_eq!(got["missingCostEntries"].as_u64(), Some(exp.missing), "{what}.missing");
}

fn p95(v: &mut [f64]) -> (u64, f64, f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let idx = ((n as f64 * 0.95).ceil() as usize).saturating_sub(1);
    (n as u64, v.iter().sum::<f64>() / n as f64, v[idx], v[0], v[n - 1])
}

/// Compares the engine's two main answers for `q` with the reference.
pub fn compare(dir: &Path, q: &UsageQuery) {
    compare_with(dir, q, crate::engine::EngineConfig::DEFAULT_MAX_LINE_BYTES);
}

/// [`compare`] with a line limit.
pub fn compare_with(dir: &Path, q: &UsageQuery, max_line: u64) {
    let offset = match q.day_zone {
        DayZone::Utc => 0,
        DayZone::FixedOffsetMinutes(m) => i64::from(m) * 60_000,
    };
    let r = reference(dir, q.start_ms, q.end_ms, offset, max_line as usize);
    let mut cfg = crate::engine::EngineConfig::new(dir);
    cfg.max_line_bytes = max_line;
    let mut e = crate::engine::Engine::new(cfg);
    let mut qc = q.clone();
    qc.method = Method::UsageCost;
    let (cost, _) = ask(&mut e, &qc);
    check_totals(&cost["totals"], &r.cost_totals, "usage.cost totals");
    let daily: BTreeMap<String, &Value> = cost["daily"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["totalTokens"].as_u64() != Some(0) || d["missingCostEntries"].as_u64() != Some(0))
        .map(|d| (d["date"].as_str().unwrap().to_owned(), d))
        .collect();
    assert_eq!(daily.keys().collect::<Vec<_>>(), r.cost_daily.keys().collect::<Vec<_>>());
    for (d, t) in &r.cost_daily {
        check_totals(daily[d], t, d);
    }

    let mut qs = q.clone();
    qs.method = Method::SessionsUsage;
    qs.limit = Some(1_000_000);
    let (su, _) = ask(&mut e, &qs);
    let rows = su["sessions"].as_array().unwrap();
    assert_eq!(rows.len(), r.sessions.len());
    let mut all = RefTotals::default();
    let mut by_agent: BTreeMap<String, RefTotals> = BTreeMap::new();
    for row in rows {
        let u = &row["usage"];
        let file = u["sessionFile"].as_str().unwrap();
        let s = &r.sessions[file];
        check_totals(u, &s.totals, file);
        let c = &u["messageCounts"];
        let got: Vec<u64> = ["total", "user", "assistant", "toolCalls", "toolResults", "errors"]
            .iter()
            .map(|k| c[k].as_u64().unwrap())
            .collect();
        assert_eq!(got, s.counts, "{file} counts");
        assert_eq!(u["firstActivity"].as_i64(), s.first, "{file} first");
        assert_eq!(u["lastActivity"].as_i64(), s.last, "{file} last");
        let mut lat = s.latency.clone();
        if lat.is_empty() {
            assert!(u.get("latency").is_none(), "{file} latency");
        } else {
            let (n, avg, p, mn, mx) = p95(&mut lat);
            let l = &u["latency"];
            assert_eq!(l["count"].as_u64(), Some(n));
            assert_close(l["avgMs"].as_f64().unwrap(), avg);
            assert_eq!(l["p95Ms"].as_f64(), Some(p));
            assert_eq!(l["minMs"].as_f64(), Some(mn));
            assert_eq!(l["maxMs"].as_f64(), Some(mx));
        }
        all.merge(&s.totals);
        by_agent.entry(s.agent.clone()).or_default().merge(&s.totals);
    }
    check_totals(&su["totals"], &all, "sessions.usage totals");
    let agg = &su["aggregates"];
    for a in agg["byAgent"].as_array().unwrap() {
        check_totals(&a["totals"], &by_agent[a["agentId"].as_str().unwrap()], "byAgent");
    }
    let models = agg["byModel"].as_array().unwrap();
    assert_eq!(models.len(), r.by_model.len());
    for m in models {
        let k = format!("{}/{}", m["provider"].as_str().unwrap(), m["model"].as_str().unwrap());
        let (t, n) = &r.by_model[&k];
        check_totals(&m["totals"], t, &k);
        assert_eq!(m["count"].as_u64(), Some(*n), "{k} count");
    }
    let tools: BTreeMap<String, u64> = agg["tools"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_owned(), t["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(tools, r.tools);
    let daily = agg["daily"].as_array().unwrap();
    assert_eq!(daily.len(), r.daily_tokens.len());
    for d in daily {
        let (tok, cost, msgs) = r.daily_tokens[d["date"].as_str().unwrap()];
        assert_eq!(d["tokens"].as_u64(), Some(tok));
        assert_close(d["cost"].as_f64().unwrap(), cost);
        assert_eq!(d["messages"].as_u64(), Some(msgs));
    }
}

const SPEC: Spec = Spec { agents: 3, sessions_per_agent: 12, turns: 30, tool_result_bytes: 3000, seed: 7 };

#[test]
fn engine_agrees_with_reference_on_everything() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), &SPEC);
    compare(dir.path(), &query(Method::SessionsUsage));
}

#[test]
fn engine_agrees_with_reference_on_sub_ranges_and_offsets() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), &SPEC);
    // 2026-10-20 .. 2026-11-05 in UTC.
    let mut q = query(Method::SessionsUsage);
    q.start_ms = 1_792_454_400_000;
    q.end_ms = 1_793_923_200_000 - 1;
    compare(dir.path(), &q);
    // The same dates in UTC+05:30 and UTC-09:45.
    for minutes in [330i32, -585] {
        let off = i64::from(minutes) * 60_000;
        q.start_ms = 1_792_454_400_000 - off;
        q.end_ms = 1_793_923_200_000 - 1 - off;
        q.day_zone = DayZone::FixedOffsetMinutes(minutes);
        compare(dir.path(), &q);
    }
    let _ = END_2026;
}

/// Appends every kind of hostile line to the store's transcripts and adds files that must not
/// count, so the engine and the reference meet all of them.
fn add_hostile_input(dir: &Path) {
    use std::io::Write as _;
    let sessions = dir.join("agents/main/sessions");
    let mut files: Vec<std::path::PathBuf> = fs::read_dir(&sessions)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| counted_name(&p.file_name().unwrap().to_string_lossy()))
        .collect();
    files.sort();
    let ts = "2026-10-20T10:00:00.000Z";
    let assistant = |usage: &str| {
        format!(
            r#"{{"type":"message","timestamp":"{ts}","message":{{"role":"assistant","provider":"anthropic","model":"claude-sonnet-4-5","usage":{usage}}}}}"#
        )
    };
    let mut lines: Vec<Vec<u8>> = vec![
        b"{\"type\":\"message\",\"message\":{".to_vec(),
        b"\xff\xfe not utf-8 \x80".to_vec(),
        b"{\"message\":{\"role\":\"user\",\"content\":\"caf\xe9\"}}".to_vec(),
        b"{\"message\":{\"role\":\"user\"}}\0".to_vec(),
        b"[1,2,3]".to_vec(),
        b"null".to_vec(),
        b"\"just a string\"".to_vec(),
        b"{\"a\":1} trailing".to_vec(),
        // NaN is not JSON; an exponent is; values beyond f64 are not.
        assistant(r#"{"input":NaN,"output":3}"#).into_bytes(),
        assistant(r#"{"input":1.5e3,"output":2,"cost":{"total":1e-3}}"#).into_bytes(),
        assistant(r#"{"input":1e400}"#).into_bytes(),
        // Huge but finite: capped per field.
        assistant(
            r#"{"input":123456789012345678901234567890,"output":7,"totalTokens":1e300,"cost":{"total":0.5}}"#,
        )
        .into_bytes(),
        // Negative tokens count as 0; a negative cost is no cost.
        assistant(r#"{"input":-40,"output":-1,"cacheRead":5,"cost":{"total":-2,"input":9}}"#).into_bytes(),
        // Wrong types are ignored field by field.
        assistant(r#"{"input":"12","output":[1],"cacheRead":{"x":1},"cacheWrite":true,"total":null}"#)
            .into_bytes(),
        // Longer than the test's line limit.
        assistant(&format!(r#"{{"input":5,"pad":"{}"}}"#, "y".repeat(70_000))).into_bytes(),
    ];
    lines.push(Vec::new());
    for (i, f) in files.iter().enumerate().take(4) {
        let mut w = fs::OpenOptions::new().append(true).open(f).unwrap();
        for l in lines.iter().skip(i % 2) {
            w.write_all(l).unwrap();
            w.write_all(b"\n").unwrap();
        }
        if i == 0 {
            // An unterminated last line: not counted yet.
            w.write_all(assistant(r#"{"input":99}"#).as_bytes()).unwrap();
        }
    }
    // Files that must not count: a symlink to a transcript, a symlink loop, a directory named
    // like a transcript, an empty transcript; and a symlinked agent that loops.
    std::os::unix::fs::symlink(&files[0], sessions.join("link.jsonl")).unwrap();
    std::os::unix::fs::symlink(sessions.join("loop.jsonl"), sessions.join("loop.jsonl")).unwrap();
    fs::create_dir(sessions.join("dir.jsonl")).unwrap();
    fs::write(sessions.join("empty.jsonl"), b"").unwrap();
    std::os::unix::fs::symlink(dir.join("agents"), dir.join("agents/loopy")).unwrap();
}

#[test]
fn engine_agrees_with_reference_on_hostile_input() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), &SPEC);
    add_hostile_input(dir.path());
    compare_with(dir.path(), &query(Method::SessionsUsage), 64 << 10);
    let (v, _) = ask(&mut engine(dir.path()), &query(Method::SessionsUsage));
    let d = &v["diagnostics"];
    assert!(d["malformedJsonLines"].as_u64().unwrap() >= 8, "{d}");
    assert!(d["invalidUtf8Lines"].as_u64().unwrap() >= 2, "{d}");
    assert!(d["nulByteLines"].as_u64().unwrap() >= 1, "{d}");
    assert_eq!(d["pendingTails"], 1);
}
