//! `sessions.usage.logs`: one session's conversation as short log entries (REFERENCE §3.7).
//!
//! Like OpenClaw, every call reads the one transcript in full (no cache). The rendering is
//! OpenClaw 2026.9.6's `loadSessionLogs` (`session-cost-usage-*.mjs`):
//! - Entries are `message` lines whose role is `user`, `assistant`, `toolResult` or `tool`; one
//!   without a timestamp (the entry's ISO `timestamp`, else `message.timestamp`) is kept at 0.
//! - `content`: a tool result starts `[Tool: <toolName>]\n[Tool Result]`; then the message's
//!   text (a string content as is, else its blocks joined by newlines: strings and `text`
//!   blocks as they are, tool calls as `[Tool: name]`, `tool_result` blocks as
//!   `[Tool Result]`, thinking and images left out), then `[Tool: name]` per `tool_calls` entry.
//!   Assistant and tool text is trimmed; user text loses OpenClaw's inbound envelope (a leading
//!   `[Channel sender … date]` header recognised only when the bracket holds a date or an `id:`
//!   field, and trailing `[message_id: …]` lines). Entries left empty are skipped.
//! - Content longer than 2000 characters (UTF-16 code units, as JavaScript counts them) is cut
//!   to 2000 and gets `…` appended.
//! - Assistant entries with usage carry `tokens` (`totalTokens`) and `cost` (the stored cost,
//!   else the price estimate; absent when neither exists).
//! - Entries are sorted by timestamp (ties in file order) and the last `limit` kept: default
//!   200, at most 1000. Only `limit` entries are held while reading, so a huge transcript costs
//!   no more memory than a small one.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::AtomicBool;

use ipc_proto::{WorkerError, WorkerErrorKind};
use serde::ser::{Serialize, SerializeStruct, Serializer};
use serde_json::Value;

use super::discover::Discovered;
use super::line::{LineOutcome, Role, parse_line};
use super::num::Js;
use super::store::PriceFn;

/// Default and maximum `limit`.
pub const DEFAULT_LIMIT: u32 = 200;
pub const MAX_LIMIT: u32 = 1000;
/// Longest `content`, in UTF-16 code units, before `…`.
const MAX_CONTENT: usize = 2000;

/// One log entry; ordered by (timestamp, line number).
#[derive(Debug, Clone, PartialEq)]
struct Log {
    ts: i64,
    seq: u64,
    role: &'static str,
    content: String,
    tokens: Option<u64>,
    cost: Option<f64>,
}

impl Eq for Log {}

impl PartialOrd for Log {
    fn partial_cmp(&self, o: &Log) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Log {
    fn cmp(&self, o: &Log) -> std::cmp::Ordering {
        (self.ts, self.seq).cmp(&(o.ts, o.seq))
    }
}

impl Serialize for Log {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("SessionLogEntry", 5)?;
        st.serialize_field("timestamp", &self.ts)?;
        st.serialize_field("role", self.role)?;
        st.serialize_field("content", &self.content)?;
        if let Some(t) = self.tokens {
            st.serialize_field("tokens", &t)?;
        }
        if let Some(c) = self.cost {
            st.serialize_field("cost", &Js(c))?;
        }
        st.end()
    }
}

struct Payload<'a>(&'a [Log]);

impl Serialize for Payload<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("SessionLogs", 1)?;
        st.serialize_field("logs", self.0)?;
        st.end()
    }
}

/// Whether a bracketed header looks like OpenClaw's inbound envelope rather than user text.
fn is_envelope(inner: &str) -> bool {
    let has_date = inner.as_bytes().windows(10).any(|w| {
        w.iter().enumerate().all(|(i, c)| if i == 4 || i == 7 { *c == b'-' } else { c.is_ascii_digit() })
    });
    has_date || inner.contains(" id:")
}

/// User text without the inbound envelope (see the module docs).
fn strip_envelope(text: &str) -> &str {
    let mut t = text.trim();
    if let Some(rest) = t.strip_prefix('[')
        && let Some(end) = rest.find(']')
        && !rest[..end].contains('\n')
        && is_envelope(&rest[..end])
    {
        t = rest[end + 1..].trim_start();
    }
    while let Some(i) = t.rfind('\n') {
        let last = t[i + 1..].trim();
        if !(last.starts_with("[message_id:") && last.ends_with(']')) {
            break;
        }
        t = t[..i].trim_end();
    }
    t
}

/// The text of a message's `content` blocks (OpenClaw's `loadSessionLogs`): strings and `text`
/// blocks as they are, tool calls as `[Tool: name]`, `tool_result` blocks as `[Tool Result]`,
/// nothing for the rest (thinking, images); empty pieces dropped, joined by newlines.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => {
            let mut parts: Vec<String> = Vec::new();
            for b in blocks {
                let piece = match b {
                    Value::String(s) => s.clone(),
                    _ => {
                        let ty = b.get("type").and_then(Value::as_str).unwrap_or("");
                        let norm = ty.trim().to_ascii_lowercase();
                        if ty == "text" {
                            b.get("text").and_then(Value::as_str).unwrap_or("").to_owned()
                        } else if matches!(norm.as_str(), "toolcall" | "tool_call" | "tooluse" | "tool_use") {
                            format!("[Tool: {}]", b.get("name").and_then(Value::as_str).unwrap_or("unknown"))
                        } else if ty == "tool_result" {
                            "[Tool Result]".to_owned()
                        } else {
                            String::new()
                        }
                    }
                };
                if !piece.is_empty() {
                    parts.push(piece);
                }
            }
            parts.join("\n")
        }
        _ => String::new(),
    }
}

/// The whole entry text: a tool result's `[Tool: name]\n[Tool Result]` header, the content, and
/// `[Tool: name]` for each call in `tool_calls`/`toolCalls`/`function_call`/`functionCall`.
fn message_text(m: &Value, role: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    if role == "tool" || role == "toolResult" {
        let name = ["toolName", "tool_name", "name", "tool"]
            .iter()
            .find_map(|k| m.get(*k).and_then(Value::as_str))
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .unwrap_or("tool");
        parts.push(format!("[Tool: {name}]"));
        parts.push("[Tool Result]".to_owned());
    }
    if let Some(c) = m.get("content") {
        let text = content_text(c);
        if !text.is_empty() || c.is_string() {
            parts.push(text);
        }
    }
    let calls = ["tool_calls", "toolCalls", "function_call", "functionCall"].iter().find_map(|k| m.get(*k));
    let calls: Vec<&Value> = match calls {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(v) => vec![v],
    };
    for call in calls {
        let name = call
            .get("name")
            .and_then(Value::as_str)
            .or_else(|| call.get("function").and_then(|f| f.get("name")).and_then(Value::as_str))
            .unwrap_or("unknown");
        parts.push(format!("[Tool: {name}]"));
    }
    parts.join("\n")
}

/// Cuts to [`MAX_CONTENT`] UTF-16 code units plus `…`, never inside a character.
fn truncate(mut s: String) -> String {
    let mut units = 0usize;
    for (i, c) in s.char_indices() {
        units += c.len_utf16();
        if units > MAX_CONTENT {
            s.truncate(i);
            s.push('…');
            return s;
        }
    }
    s
}

/// Builds one entry from a line, if it is one.
fn log_of(line: &str, seq: u64, agent: &str, price: &PriceFn<'_>) -> Option<Log> {
    let v: Value = serde_json::from_str(line).ok()?;
    let m = v.get("message").filter(|m| m.is_object())?;
    let role = match m.get("role").and_then(Value::as_str)? {
        "user" => "user",
        "assistant" => "assistant",
        "toolResult" => "toolResult",
        "tool" => "tool",
        _ => return None,
    };
    // Timestamp, usage and cost exactly as the usage views read them.
    let entry = match parse_line(line) {
        LineOutcome::Entry(e) => Some(e),
        _ => None,
    };
    // As OpenClaw: an entry without a timestamp is kept, at time 0.
    let ts = entry.as_ref().and_then(|e| e.ts).unwrap_or(0);
    let raw = message_text(m, role);
    let text = if role == "user" { strip_envelope(&raw).to_owned() } else { raw.trim().to_owned() };
    if text.is_empty() {
        return None;
    }
    let (mut tokens, mut cost) = (None, None);
    if let Some(e) = entry.filter(|e| e.role == Role::Assistant)
        && let Some(u) = e.usage
    {
        tokens = Some(u.total_tokens());
        cost = match e.cost {
            Some(c) => Some(c.total),
            None => price(agent, e.provider.as_deref(), e.model.as_deref()).map(|p| {
                let [i, o, cr, cw] = u.parts();
                (i as f64 * p.input
                    + o as f64 * p.output
                    + cr as f64 * p.cache_read
                    + cw as f64 * p.cache_write)
                    / 1e6
            }),
        };
    }
    Some(Log { ts, seq, role, content: truncate(text), tokens, cost })
}

/// Builds the payload; returns it with the bytes read.
pub fn logs(
    file: &Discovered,
    session_id: &str,
    limit: Option<u32>,
    max_line: u64,
    cancel: &AtomicBool,
    price: &PriceFn<'_>,
) -> Result<(String, u64), WorkerError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT) as usize;
    // The newest `limit` entries so far; the heap's top is the oldest of them.
    let mut kept: BinaryHeap<Reverse<Log>> = BinaryHeap::with_capacity(limit + 1);
    let mut seq = 0u64;
    let on_line = |raw: &[u8]| {
        seq += 1;
        let line = raw.trim_ascii();
        if line.is_empty() || memchr::memchr(0, line).is_some() {
            return;
        }
        let Ok(text) = std::str::from_utf8(line) else { return };
        if let Some(log) = log_of(text, seq, &file.agent_id, price) {
            if kept.len() == limit {
                if kept.peek().is_some_and(|Reverse(oldest)| log <= *oldest) {
                    return;
                }
                kept.pop();
            }
            kept.push(Reverse(log));
        }
    };
    let bytes_read = super::series::read_session(file, session_id, max_line, cancel, on_line)?;
    let logs: Vec<Log> = kept.into_sorted_vec().into_iter().rev().map(|Reverse(l)| l).collect();
    let json = serde_json::to_string(&Payload(&logs))
        .map_err(|e| WorkerError::new(WorkerErrorKind::Internal, e.to_string()))?;
    Ok((json, bytes_read))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_are_stripped_conservatively() {
        assert_eq!(strip_envelope("[Telegram Ann id:42 2026-11-01 10:00] hi there"), "hi there");
        assert_eq!(strip_envelope("[WIP] keep me"), "[WIP] keep me");
        assert_eq!(strip_envelope("hello\n[message_id: 77]"), "hello");
        assert_eq!(strip_envelope("plain"), "plain");
    }

    #[test]
    fn content_and_truncation() {
        let v: Value = serde_json::json!([
            {"type": "thinking", "thinking": "hmm"},
            {"type": "text", "text": "a"},
            {"type": "toolCall", "name": " read "},
            {"type": "tool_result", "content": "x"}
        ]);
        // The name as written (OpenClaw does not trim it).
        assert_eq!(content_text(&v), "a\n[Tool:  read ]\n[Tool Result]");
        let tool = serde_json::json!({"role": "toolResult", "toolName": "exec", "content": [{"type": "text", "text": " out "}]});
        assert_eq!(message_text(&tool, "toolResult"), "[Tool: exec]\n[Tool Result]\n out ");
        let calls = serde_json::json!({"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "read"}}]});
        assert_eq!(message_text(&calls, "assistant"), "\n[Tool: read]");
        let long = "é".repeat(2100);
        let t = truncate(long);
        assert_eq!(t.chars().count(), 2001);
        assert!(t.ends_with('…'));
        // An astral character counts two units and is never split.
        let astral = format!("{}{}", "a".repeat(1999), "😀");
        assert_eq!(truncate(astral), format!("{}…", "a".repeat(1999)));
    }
}
