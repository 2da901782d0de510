//! A small deterministic generator of legacy stores with the awkward cases real stores have:
//! archives, ignored sidecars, stored and missing costs, priced and unpriced models, usage
//! aliases, top-level usage, untimed entries, errors, `durationMs`, big tool results with escapes.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

pub use demo_store::Rng;

/// Shape of a generated store.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub agents: usize,
    pub sessions_per_agent: usize,
    pub turns: usize,
    /// Approximate size of each tool result's text.
    pub tool_result_bytes: usize,
    pub seed: u64,
}

const MODELS: [(&str, &str); 5] = [
    ("anthropic", "claude-sonnet-4-5"),
    ("openai", "gpt-5"),
    ("google", "gemini-2.5-pro"),
    ("openrouter", "deepseek/deepseek-chat-v3.1"),
    ("local", "unpriced-model"),
];
const TOOLS: [&str; 5] = ["read", "exec", "edit", "web_search", "browser"];
const WORDS: [&str; 12] = [
    "session",
    "gateway",
    "token",
    "cost",
    "the",
    "worker",
    "cache",
    "\\\"quoted\\\"",
    "line\\nbreak",
    "ünïcødé",
    "emoji😀",
    "tab\\t",
];

/// 2026-10-01T00:00:00Z
const BASE_MS: i64 = 1_790_812_800_000;

pub fn iso(ms: i64) -> String {
    let day = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = crate::engine::time::civil_from_days(day);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

fn text(rng: &mut Rng, bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + 16);
    while s.len() < bytes {
        s.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
        s.push(' ');
    }
    s
}

fn usage_json(rng: &mut Rng, model: usize) -> String {
    let input = rng.below(5000);
    let output = rng.below(3000);
    let cache_read = rng.below(80_000);
    let cache_write = if rng.chance(0.3) { rng.below(9000) } else { 0 };
    let total = input + output + cache_read + cache_write;
    let roll = rng.below(100);
    if roll < 5 {
        // OpenAI-shaped: prompt tokens include cached tokens.
        return format!(
            r#"{{"prompt_tokens":{},"completion_tokens":{output},"prompt_tokens_details":{{"cached_tokens":{cache_read}}},"total_tokens":{}}}"#,
            input + cache_read,
            input + output + cache_read
        );
    }
    if roll < 8 {
        return format!(
            r#"{{"input_tokens":{input},"output_tokens":{output},"cache_read_input_tokens":{cache_read}}}"#
        );
    }
    let unpriced = model == 4 || roll < 25;
    if unpriced {
        return format!(
            r#"{{"input":{input},"output":{output},"cacheRead":{cache_read},"cacheWrite":{cache_write},"totalTokens":{total}}}"#
        );
    }
    let ci = input as f64 * 3e-6;
    let co = output as f64 * 15e-6;
    let cr = cache_read as f64 * 0.3e-6;
    let cw = cache_write as f64 * 3.75e-6;
    format!(
        r#"{{"input":{input},"output":{output},"cacheRead":{cache_read},"cacheWrite":{cache_write},"totalTokens":{total},"cost":{{"input":{ci},"output":{co},"cacheRead":{cr},"cacheWrite":{cw},"total":{}}}}}"#,
        ci + co + cr + cw
    )
}

/// One transcript's lines.
pub fn transcript(rng: &mut Rng, session_id: &str, spec: &Spec, start: i64) -> String {
    let mut out = String::new();
    let mut t = start;
    let model = rng.below(MODELS.len() as u64) as usize;
    let (prov, name) = MODELS[model];
    let _ = writeln!(
        out,
        r#"{{"type":"session","version":3,"id":"{session_id}","timestamp":"{}","cwd":"/w"}}"#,
        iso(t)
    );
    for turn in 0..spec.turns {
        let gap = if rng.chance(0.1) { 86_400_000 } else { 3_600_000 };
        t += 1000 + rng.below(gap) as i64;
        let _ = writeln!(
            out,
            r#"{{"type":"message","id":"u{turn}","timestamp":"{}","message":{{"role":"user","content":[{{"type":"text","text":"{}"}}],"timestamp":{t}}}}}"#,
            iso(t),
            text(rng, 40)
        );
        t += 500 + rng.below(20_000) as i64;
        let tool = TOOLS[rng.below(TOOLS.len() as u64) as usize];
        let stop = if rng.chance(0.05) { "error" } else { "toolUse" };
        let duration =
            if rng.chance(0.2) { format!(r#","durationMs":{}"#, rng.below(30_000)) } else { String::new() };
        let usage = usage_json(rng, model);
        if rng.chance(0.04) {
            // Usage at the top level, provider/model too.
            let _ = writeln!(
                out,
                r#"{{"type":"message","timestamp":"{}","provider":"{prov}","model":"{name}","usage":{usage},"message":{{"role":"assistant","content":[{{"type":"toolCall","name":"{tool}"}},{{"type":"tool_use","name":"{tool}"}}],"stopReason":"{stop}"{duration}}}}}"#,
                iso(t)
            );
        } else {
            let _ = writeln!(
                out,
                r#"{{"type":"message","id":"a{turn}","timestamp":"{}","message":{{"role":"assistant","content":[{{"type":"thinking","thinking":"{}"}},{{"type":"toolCall","id":"c{turn}","name":"{tool}","arguments":{{"p":"x"}}}}],"api":"x","provider":"{prov}","model":"{name}","usage":{usage},"stopReason":"{stop}"{duration},"timestamp":{t}}}}}"#,
                iso(t),
                text(rng, 60)
            );
        }
        t += 100 + rng.below(3000) as i64;
        let _ = writeln!(
            out,
            r#"{{"type":"message","id":"r{turn}","timestamp":"{}","message":{{"role":"toolResult","toolCallId":"c{turn}","toolName":"{tool}","content":[{{"type":"text","text":"{}"}}],"isError":{},"timestamp":{t}}}}}"#,
            iso(t),
            text(rng, spec.tool_result_bytes),
            rng.chance(0.07)
        );
        t += 500 + rng.below(20_000) as i64;
        let usage = usage_json(rng, model);
        let _ = writeln!(
            out,
            r#"{{"type":"message","id":"f{turn}","timestamp":"{}","message":{{"role":"assistant","content":[{{"type":"text","text":"{}"}}],"provider":"{prov}","model":"{name}","usage":{usage},"stopReason":"stop","timestamp":{t}}}}}"#,
            iso(t),
            text(rng, 200)
        );
        if rng.chance(0.03) {
            // No timestamp anywhere: counted in sessions.usage totals only.
            let _ = writeln!(
                out,
                r#"{{"type":"message","message":{{"role":"assistant","provider":"{prov}","model":"{name}","usage":{{"input":7,"output":3}}}}}}"#
            );
        }
        if rng.chance(0.05) {
            let _ = writeln!(
                out,
                r#"{{"type":"custom","customType":"model-snapshot","timestamp":"{}","data":{{"provider":"{prov}"}}}}"#,
                iso(t)
            );
        }
    }
    out
}

/// Writes a store under `dir`; returns transcript bytes written.
pub fn generate(dir: &Path, spec: &Spec) -> u64 {
    let mut rng = Rng::new(spec.seed);
    let mut bytes = 0u64;
    for a in 0..spec.agents {
        let agent = if a == 0 { "main".to_owned() } else { format!("agent{a}") };
        let sessions = dir.join("agents").join(&agent).join("sessions");
        fs::create_dir_all(&sessions).unwrap();
        let mut store = serde_json::Map::new();
        for s in 0..spec.sessions_per_agent {
            let id = format!("{:08x}-{a:04x}-{s:04x}-0000-000000000000", rng.next_u64() as u32);
            let start = BASE_MS + rng.below(50 * 86_400_000) as i64;
            let body = transcript(&mut rng, &id, spec, start);
            bytes += body.len() as u64;
            let name = match s % 10 {
                7 => format!("{id}.jsonl.reset.2026-11-20T10-00-00.123Z"),
                8 => format!("{id}.jsonl.deleted.2026-11-21T10-00-00Z"),
                _ => format!("{id}.jsonl"),
            };
            fs::write(sessions.join(&name), &body).unwrap();
            if s % 10 != 9 {
                let channel = ["slack", "discord", "telegram"][s % 3];
                store.insert(
                    format!("agent:{agent}:{channel}:direct:u{s}"),
                    serde_json::json!({
                        "sessionId": id,
                        "updatedAt": start + 10_000_000 + s as i64,
                        "chatType": "direct",
                        "origin": {"provider": channel, "chatType": "direct"},
                        "modelProvider": "anthropic",
                        "model": "claude-sonnet-4-5",
                        "label": format!("session {s}"),
                    }),
                );
            }
            if s == 0 {
                // Sidecars that must not count, with usage lines in them.
                fs::write(sessions.join(format!("{id}.checkpoint.abc.jsonl")), &body).unwrap();
                fs::write(sessions.join(format!("{id}.trajectory.jsonl")), &body).unwrap();
                fs::write(sessions.join(format!("{id}.jsonl.bak.2026-11-21T10-00-00Z")), &body).unwrap();
            }
        }
        fs::write(
            sessions.join("sessions.json"),
            serde_json::to_vec_pretty(&serde_json::Value::Object(store)).unwrap(),
        )
        .unwrap();
        let models_dir = dir.join("agents").join(&agent).join("agent");
        fs::create_dir_all(&models_dir).unwrap();
        let models = if a == 0 {
            r#"{"providers":{"anthropic":{"models":[{"id":"claude-sonnet-4-5","cost":{"input":3,"output":15,"cacheRead":0.3,"cacheWrite":3.75}}]},"openai":{"models":[{"id":"gpt-5","cost":{"input":1.25,"output":10,"cacheRead":0.125}}]}}}"#
        } else {
            r#"{"providers":{"google":{"models":[{"id":"gemini-2.5-pro","cost":{"input":1.25,"output":10,"cacheRead":0.31}}]},"openai":{"models":[{"id":"gpt-5","cost":{"input":99,"output":99}}]}}}"#
        };
        fs::write(models_dir.join("models.json"), models).unwrap();
    }
    bytes
}
