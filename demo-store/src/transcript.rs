//! Writes transcript JSONL lines in pi-agent/OpenClaw shape and keeps the exact usage sums.
//!
//! A [`Transcript`] owns the writer and the conversational state that makes the numbers look
//! real (current context size, prompt-cache warmth, compactions). Every usage object is summed
//! into [`Stats`] as the very `f64`s that are serialized, so the manifest matches a re-read of the
//! files exactly (serde_json prints floats in shortest round-trip form).

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::{self, Write};

use serde::Serialize;

use crate::catalog::{MODELS, ModelInfo, TOOL_WEIGHTS, TOOLS, WIDE_TOOLS};
use crate::clock::iso;
use crate::rng::Rng;
use crate::text::{Flavor, slice, slice_between};
use crate::{MessageCounts, Totals};

/// Context size (tokens) past which a session compacts, whatever the model's window.
const COMPACT_AT: u64 = 160_000;

/// Share of final assistant replies that fail with `stopReason: "error"`.
const ERROR_RATE: f64 = 0.015;

// ---------------------------------------------------------------------------------------------
// Line shapes. Field order follows what OpenClaw writes.

#[derive(Serialize)]
struct HeaderLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    version: u32,
    id: &'a str,
    timestamp: &'a str,
    cwd: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ModelChangeLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    parent_id: Option<&'a str>,
    timestamp: &'a str,
    provider: &'a str,
    model_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotData<'a> {
    timestamp: i64,
    provider: &'a str,
    model_api: &'a str,
    model_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CustomLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    parent_id: Option<&'a str>,
    timestamp: &'a str,
    custom_type: &'a str,
    data: SnapshotData<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CompactionLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    parent_id: Option<&'a str>,
    timestamp: &'a str,
    summary: &'a str,
    first_kept_entry_id: &'a str,
    tokens_before: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MessageLine<'a, M> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    parent_id: Option<&'a str>,
    timestamp: &'a str,
    message: M,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum Block<'a> {
    Text {
        text: &'a str,
    },
    #[serde(rename_all = "camelCase")]
    Thinking {
        thinking: &'a str,
        thinking_signature: &'a str,
    },
    ToolCall {
        id: &'a str,
        name: &'a str,
        arguments: &'a Args<'a>,
    },
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Args<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    old_text: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    new_text: Option<Cow<'a, str>>,
}

#[derive(Serialize)]
struct UserMessage<'a> {
    role: &'static str,
    content: [Block<'a>; 1],
    timestamp: i64,
}

/// pi-ai's per-call cost breakdown, USD.
#[derive(Serialize, Debug, Clone, Copy, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Cost {
    pub input: f64,
    pub output: f64,
    pub cache_read: f64,
    pub cache_write: f64,
    pub total: f64,
}

/// pi-ai's `Usage` object as written on assistant messages.
#[derive(Serialize, Debug, Clone, Copy, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Usage {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub total_tokens: u64,
    pub cost: Cost,
}

impl Usage {
    /// Prices the four token counts the way pi-ai does: `price / 1e6 * tokens`, total = sum.
    fn priced(m: &ModelInfo, input: u64, output: u64, cache_read: u64, cache_write: u64) -> Self {
        let c = |price: f64, tokens: u64| price / 1_000_000.0 * tokens as f64;
        let (ci, co, cr, cw) = (
            c(m.input, input),
            c(m.output, output),
            c(m.cache_read, cache_read),
            c(m.cache_write, cache_write),
        );
        Usage {
            input,
            output,
            cache_read,
            cache_write,
            total_tokens: input + output + cache_read + cache_write,
            cost: Cost { input: ci, output: co, cache_read: cr, cache_write: cw, total: ci + co + cr + cw },
        }
    }
}

impl Totals {
    /// Adds one message's usage with plain `f64` additions, in the order a reader would.
    pub(crate) fn add_usage(&mut self, u: &Usage) {
        self.input += u.input;
        self.output += u.output;
        self.cache_read += u.cache_read;
        self.cache_write += u.cache_write;
        self.total_tokens += u.total_tokens;
        self.total_cost += u.cost.total;
        self.input_cost += u.cost.input;
        self.output_cost += u.cost.output;
        self.cache_read_cost += u.cost.cache_read;
        self.cache_write_cost += u.cost.cache_write;
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AssistantMessage<'a> {
    role: &'static str,
    content: &'a [Block<'a>],
    api: &'a str,
    provider: &'a str,
    model: &'a str,
    usage: &'a Usage,
    stop_reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_message: Option<&'a str>,
    timestamp: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolResultMessage<'a> {
    role: &'static str,
    tool_call_id: &'a str,
    tool_name: &'a str,
    content: [Block<'a>; 1],
    is_error: bool,
    timestamp: i64,
}

// ---------------------------------------------------------------------------------------------

/// Running sums over what has been written (one file, a session, an agent, ...).
#[derive(Debug, Clone, Default)]
pub(crate) struct Stats {
    pub totals: Totals,
    /// Per catalog model, indexed like [`MODELS`].
    pub by_model: Vec<Option<Totals>>,
    pub messages: MessageCounts,
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
}

impl Stats {
    fn add_usage(&mut self, model: &ModelInfo, u: &Usage) {
        self.totals.add_usage(u);
        if self.by_model.is_empty() {
            self.by_model = vec![None; MODELS.len()];
        }
        let i = model_index(model);
        self.by_model[i].get_or_insert_with(Totals::default).add_usage(u);
    }

    fn saw_message(&mut self, at_ms: i64) {
        self.first_ms = Some(self.first_ms.map_or(at_ms, |f| f.min(at_ms)));
        self.last_ms = Some(self.last_ms.map_or(at_ms, |l| l.max(at_ms)));
    }

    pub(crate) fn merge(&mut self, o: &Stats) {
        self.totals.merge(&o.totals);
        if self.by_model.is_empty() {
            self.by_model = vec![None; MODELS.len()];
        }
        for (mine, theirs) in self.by_model.iter_mut().zip(&o.by_model) {
            if let Some(t) = theirs {
                mine.get_or_insert_with(Totals::default).merge(t);
            }
        }
        self.messages.merge(&o.messages);
        for v in [o.first_ms, o.last_ms].into_iter().flatten() {
            self.saw_message(v);
        }
    }
}

fn model_index(m: &ModelInfo) -> usize {
    MODELS.iter().position(|x| x.provider == m.provider && x.id == m.id).unwrap_or(0)
}

/// Times of the four messages of one turn, epoch ms, non-decreasing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TurnTimes {
    pub user: i64,
    pub call: i64,
    pub result: i64,
    pub reply: i64,
}

impl TurnTimes {
    /// Draws the in-turn latencies: model 0.8–18 s, tool 30 ms–4 s.
    pub(crate) fn draw(r: &mut Rng, user: i64) -> Self {
        let call = user + r.range(800, 18_000) as i64;
        let result = call + r.range(30, 4_000) as i64;
        let reply = result + r.range(800, 18_000) as i64;
        TurnTimes { user, call, result, reply }
    }
}

/// Counts bytes on their way to the file (the manifest reports store size without a stat).
pub(crate) struct Counting<W> {
    pub inner: W,
    pub bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn write_line<W: Write, T: Serialize>(w: &mut W, v: &T) -> io::Result<()> {
    serde_json::to_writer(&mut *w, v)?;
    w.write_all(b"\n")
}

/// Where a transcript stands, so a later writer (e.g. `append_turn`) can carry on from it.
#[derive(Debug, Clone)]
pub(crate) struct Resume {
    pub parent: Option<String>,
    pub model: &'static ModelInfo,
    pub context: u64,
    pub last_call_ms: Option<i64>,
    pub last_ms: i64,
    pub last_user_id: Option<String>,
    pub ids: HashSet<String>,
}

/// One transcript being written.
pub(crate) struct Transcript<W: Write> {
    w: Counting<W>,
    r: Rng,
    parent: Option<String>,
    ids: HashSet<String>,
    model: &'static ModelInfo,
    /// Tokens currently in the prompt (system prompt + history).
    context: u64,
    last_call_ms: Option<i64>,
    last_ms: i64,
    last_user_id: Option<String>,
    /// Average tool-result text size in bytes.
    tool_result_bytes: u32,
    /// Call tools from a wide set (the wide demo shape).
    wide_tools: bool,
    /// Whether to write `compaction` entries; if not, an overflowing context just shrinks.
    pub write_compactions: bool,
    pub compactions: u32,
    pub stats: Stats,
}

impl<W: Write> Transcript<W> {
    pub(crate) fn new(
        w: W,
        r: Rng,
        model: &'static ModelInfo,
        tool_result_bytes: u32,
        wide_tools: bool,
    ) -> Self {
        Transcript {
            w: Counting { inner: w, bytes: 0 },
            r,
            parent: None,
            ids: HashSet::new(),
            model,
            context: 0,
            last_call_ms: None,
            last_ms: i64::MIN,
            last_user_id: None,
            tool_result_bytes,
            wide_tools,
            write_compactions: true,
            compactions: 0,
            stats: Stats::default(),
        }
    }

    pub(crate) fn resume(w: W, r: Rng, state: Resume, tool_result_bytes: u32) -> Self {
        let mut t = Transcript::new(w, r, state.model, tool_result_bytes, false);
        t.parent = state.parent;
        t.ids = state.ids;
        t.context = state.context;
        t.last_call_ms = state.last_call_ms;
        t.last_ms = state.last_ms;
        t.last_user_id = state.last_user_id;
        t
    }

    pub(crate) fn model(&self) -> &'static ModelInfo {
        self.model
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.w.bytes
    }

    pub(crate) fn into_inner(self) -> (W, Stats) {
        (self.w.inner, self.stats)
    }

    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }

    /// A fresh entry id: 8 hex digits, or a full UUID on the (rare) collision, like pi does.
    fn next_id(&mut self) -> String {
        let mut id = self.r.hex8();
        if !self.ids.insert(id.clone()) {
            id = self.r.uuid_v4();
            self.ids.insert(id.clone());
        }
        id
    }

    /// Keeps entry times strictly increasing even if a caller asks for an earlier time.
    fn stamp(&mut self, at_ms: i64) -> i64 {
        let t = at_ms.max(self.last_ms.saturating_add(1));
        self.last_ms = t;
        t
    }

    /// The `session` header line; `at_ms` becomes the session's start.
    pub(crate) fn header(&mut self, session_id: &str, at_ms: i64, cwd: &str) -> io::Result<i64> {
        let t = self.stamp(at_ms);
        self.context = self.r.range(9_000, 22_000);
        write_line(
            &mut self.w,
            &HeaderLine { kind: "session", version: 3, id: session_id, timestamp: &iso(t), cwd },
        )?;
        Ok(t)
    }

    /// A `model_change` line (plus, sometimes, a `model-snapshot` custom line) switching models.
    pub(crate) fn model_change(&mut self, at_ms: i64, model: &'static ModelInfo) -> io::Result<()> {
        self.model = model;
        let t = self.stamp(at_ms);
        let id = self.next_id();
        write_line(
            &mut self.w,
            &ModelChangeLine {
                kind: "model_change",
                id: &id,
                parent_id: self.parent.as_deref(),
                timestamp: &iso(t),
                provider: model.provider,
                model_id: model.id,
            },
        )?;
        self.parent = Some(id);
        if self.r.chance(0.6) {
            let after = self.r.range(1, 20) as i64;
            let t = self.stamp(t + after);
            let id = self.next_id();
            write_line(
                &mut self.w,
                &CustomLine {
                    kind: "custom",
                    id: &id,
                    parent_id: self.parent.as_deref(),
                    timestamp: &iso(t),
                    custom_type: "model-snapshot",
                    data: SnapshotData {
                        timestamp: t,
                        provider: model.provider,
                        model_api: model.api,
                        model_id: model.id,
                    },
                },
            )?;
            self.parent = Some(id);
        }
        Ok(())
    }

    /// Whether the context is full enough that the next turn should compact first.
    pub(crate) fn needs_compaction(&self) -> bool {
        self.context > COMPACT_AT.min(self.model.context_window * 8 / 10)
    }

    /// Compacts the context: a `compaction` entry (if enabled) and a much smaller prompt.
    pub(crate) fn compact(&mut self, at_ms: i64) -> io::Result<()> {
        let before = self.context;
        let summary = slice_between(&mut self.r, Flavor::Prose, 400, 2_000);
        self.context = self.r.range(9_000, 22_000) + summary.len() as u64 / 4;
        if !self.write_compactions {
            return Ok(());
        }
        let t = self.stamp(at_ms);
        let id = self.next_id();
        let kept = self.last_user_id.clone().or_else(|| self.parent.clone());
        write_line(
            &mut self.w,
            &CompactionLine {
                kind: "compaction",
                id: &id,
                parent_id: self.parent.as_deref(),
                timestamp: &iso(t),
                summary: &summary,
                first_kept_entry_id: kept.as_deref().unwrap_or(&id),
                tokens_before: before,
            },
        )?;
        self.parent = Some(id);
        self.compactions += 1;
        Ok(())
    }

    /// Token split of one model call that adds `new` prompt tokens and produces `output`.
    fn call_usage(&mut self, at_ms: i64, new: u64, output: u64) -> Usage {
        let m = self.model;
        let warm = self.last_call_ms.is_some_and(|last| at_ms - last <= m.cache_ttl_ms());
        let ctx = self.context;
        let (input, cache_read, cache_write) = if m.explicit_cache() {
            // Anthropic: cached prefix read, the new tail written to cache, a few raw tokens.
            let raw = self.r.range(1, 12).min(new);
            if warm { (raw, ctx, new - raw) } else { (raw, 0, ctx + new - raw) }
        } else if warm {
            // Implicit prefix caching in fixed-size blocks.
            let block = if m.provider == "openai" { 128 } else { 256 };
            let cached = ctx / block * block;
            (ctx - cached + new, cached, 0)
        } else {
            (ctx + new, 0, 0)
        };
        self.context += new + output;
        self.last_call_ms = Some(at_ms);
        Usage::priced(m, input, output, cache_read, cache_write)
    }

    fn reasoning_tokens(&mut self, hi: u64) -> u64 {
        if self.model.reasoning() { self.r.range(40, hi) } else { 0 }
    }

    fn tool_call(&mut self, tool: &'static str) -> Args<'static> {
        let r = &mut self.r;
        let path = |r: &mut Rng| {
            format!(
                "/home/user/project/src/{}/{}.{}",
                r.pick(&["gateway", "usage", "store", "cli", "web", "infra"]),
                r.pick(&["handler", "config", "worker", "index", "session", "cache"]),
                r.pick(&["ts", "rs", "json", "md", "py"])
            )
        };
        let query = |r: &mut Rng| slice_between(r, Flavor::Prose, 15, 60);
        match tool {
            "read" => Args { path: Some(path(r)), ..Args::default() },
            "write" => Args {
                path: Some(path(r)),
                content: Some(slice_between(r, Flavor::Code, 100, 800)),
                ..Args::default()
            },
            "edit" => Args {
                path: Some(path(r)),
                old_text: Some(slice_between(r, Flavor::Code, 30, 240)),
                new_text: Some(slice_between(r, Flavor::Code, 30, 240)),
                ..Args::default()
            },
            "exec" => Args {
                command: Some(
                    (r.pick(&[
                        "cargo test --workspace 2>&1 | tail -n 80",
                        "ls -la src",
                        "git status --short && git log --oneline -n 20",
                        "rg -n \"sessions.usage\" src | head -n 50",
                        "npm run build",
                        "docker compose ps",
                        "journalctl -u openclaw --since \"1 hour ago\" | tail -n 100",
                    ]))
                    .to_string(),
                ),
                ..Args::default()
            },
            "browser" => Args {
                action: Some("navigate"),
                url: Some(format!(
                    "https://{}.example.com/{}",
                    r.pick(&["docs", "status", "blog", "dashboard"]),
                    r.hex8()
                )),
                ..Args::default()
            },
            _ => Args { query: Some(query(r)), ..Args::default() },
        }
    }

    fn tool_call_id(&mut self) -> String {
        if self.model.provider == "anthropic" {
            const B62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
            format!("toolu_01{}", self.r.token(B62, 22))
        } else {
            format!("call_{:016x}", self.r.next_u64())
        }
    }

    fn error_message(&mut self) -> &'static str {
        if self.model.provider == "anthropic" && self.r.chance(0.6) {
            return r#"529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        }
        self.r.pick(&[
            "429 Rate limit reached for requests per min (RPM). Please try again in 20s.",
            "terminated",
            "fetch failed",
            "Request timed out.",
            "500 Internal server error",
        ])
    }

    fn message<M: Serialize>(&mut self, at_ms: i64, msg: impl FnOnce(i64) -> M) -> io::Result<String> {
        let id = self.next_id();
        let line = MessageLine {
            kind: "message",
            id: &id,
            parent_id: self.parent.as_deref(),
            timestamp: &iso(at_ms),
            message: msg(at_ms),
        };
        write_line(&mut self.w, &line)?;
        self.parent = Some(id.clone());
        self.stats.saw_message(at_ms);
        Ok(id)
    }

    /// One turn: user prompt, assistant tool call, tool result, assistant reply. Returns the
    /// usage of the two assistant messages (also added to [`Self::stats`]).
    pub(crate) fn turn(&mut self, times: TurnTimes) -> io::Result<Totals> {
        let mut added = Totals::default();
        if self.needs_compaction() {
            self.compact(times.user - 1_000)?;
        }
        let model = self.model;

        // User prompt.
        let user_len = if self.r.chance(0.1) { self.r.range(300, 1_200) } else { self.r.range(20, 300) };
        let prompt = slice(&mut self.r, Flavor::Prose, user_len as usize);
        let t = self.stamp(times.user);
        let user_id = self.message(t, |ts| UserMessage {
            role: "user",
            content: [Block::Text { text: &prompt }],
            timestamp: ts,
        })?;
        self.last_user_id = Some(user_id);
        self.stats.messages.user += 1;

        // Assistant: optional thinking and text, then the tool call.
        let tool = if self.wide_tools && self.r.chance(0.5) {
            WIDE_TOOLS[self.r.below(WIDE_TOOLS.len() as u64) as usize]
        } else {
            TOOLS[self.r.weighted(TOOL_WEIGHTS)]
        };
        let thinks = model.provider == "anthropic"
            && self.r.chance(if model.id == "claude-opus-4-1" { 0.8 } else { 0.35 });
        let thinking = if thinks {
            let len = self.r.range(100, 800) as usize;
            Some(slice(&mut self.r, Flavor::Prose, len))
        } else {
            None
        };
        let signature: String = if thinks {
            (0..12).map(|_| format!("{:016x}", self.r.next_u64())).collect()
        } else {
            String::new()
        };
        let preface = if self.r.chance(0.6) {
            let len = self.r.range(40, 300) as usize;
            Some(slice(&mut self.r, Flavor::Prose, len))
        } else {
            None
        };
        let args = self.tool_call(tool);
        let call_id = self.tool_call_id();
        let mut blocks = Vec::with_capacity(3);
        if let Some(th) = &thinking {
            blocks.push(Block::Thinking { thinking: th, thinking_signature: &signature });
        }
        if let Some(p) = &preface {
            blocks.push(Block::Text { text: p });
        }
        blocks.push(Block::ToolCall { id: &call_id, name: tool, arguments: &args });
        let out_tokens =
            (thinking.as_ref().map_or(0, |s| s.len()) + preface.as_ref().map_or(0, |s| s.len())) as u64 / 4
                + self.r.range(25, 160)
                + self.reasoning_tokens(2_500);
        let new = prompt.len() as u64 / 4 + self.r.range(20, 300);
        let t = self.stamp(times.call);
        let usage = self.call_usage(t, new, out_tokens);
        self.message(t, |ts| AssistantMessage {
            role: "assistant",
            content: &blocks,
            api: model.api,
            provider: model.provider,
            model: model.id,
            usage: &usage,
            stop_reason: "toolUse",
            error_message: None,
            timestamp: ts,
        })?;
        drop(blocks);
        self.stats.add_usage(model, &usage);
        added.add_usage(&usage);
        self.stats.messages.assistant += 1;
        self.stats.messages.tool_calls += 1;

        // Tool result: several KB, mean `tool_result_bytes` (0.25x..2.5x, skewed low).
        let u = self.r.unit();
        let len = (f64::from(self.tool_result_bytes) * (0.25 + 2.25 * u * u)) as usize;
        let flavor = match tool {
            "read" | "write" | "edit" => Flavor::Code,
            "exec" => Flavor::Log,
            _ => Flavor::Web,
        };
        let result = slice(&mut self.r, flavor, len.max(1));
        let t = self.stamp(times.result);
        self.message(t, |ts| ToolResultMessage {
            role: "toolResult",
            tool_call_id: &call_id,
            tool_name: tool,
            content: [Block::Text { text: &result }],
            is_error: false,
            timestamp: ts,
        })?;
        self.stats.messages.tool_results += 1;

        // Final reply (occasionally an API error with zero usage).
        let t = self.stamp(times.reply);
        if self.r.chance(ERROR_RATE) {
            let error = self.error_message();
            let usage = Usage::priced(model, 0, 0, 0, 0);
            self.message(t, |ts| AssistantMessage {
                role: "assistant",
                content: &[],
                api: model.api,
                provider: model.provider,
                model: model.id,
                usage: &usage,
                stop_reason: "error",
                error_message: Some(error),
                timestamp: ts,
            })?;
            self.stats.add_usage(model, &usage);
            added.add_usage(&usage);
            self.stats.messages.errors += 1;
        } else {
            let len = self.r.range(100, 1_000) as usize;
            let reply = slice(&mut self.r, Flavor::Prose, len);
            let new = result.len() as u64 / 4 + self.r.range(10, 120);
            let out_tokens = reply.len() as u64 / 4 + self.reasoning_tokens(900);
            let usage = self.call_usage(t, new, out_tokens);
            let blocks = [Block::Text { text: &reply }];
            self.message(t, |ts| AssistantMessage {
                role: "assistant",
                content: &blocks,
                api: model.api,
                provider: model.provider,
                model: model.id,
                usage: &usage,
                stop_reason: "stop",
                error_message: None,
                timestamp: ts,
            })?;
            self.stats.add_usage(model, &usage);
            added.add_usage(&usage);
        }
        self.stats.messages.assistant += 1;
        Ok(added)
    }
}
