//! Appends one more realistic turn to an existing transcript, for live demos.
//!
//! Only the tail of the file is read (transcripts can be megabytes) to find what the new lines
//! must continue from: the last entry id (`parentId`), the model in use, the context size and
//! the time of the last model call (prompt-cache warmth).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde_json::Value;

use crate::catalog::{DEFAULT_MODEL, ModelInfo, find_model};
use crate::clock::parse_iso;
use crate::rng::Rng;
use crate::transcript::{Resume, Transcript, TurnTimes};
use crate::{DEFAULT_TOOL_RESULT_BYTES, DemoError, Totals};

/// How much of the file end is read first; enough for dozens of lines.
const TAIL_BYTES: u64 = 256 * 1024;

/// Context assumed when the transcript shows no earlier model call.
const FRESH_CONTEXT: u64 = 15_000;

/// Appends one turn (user, assistant tool call, tool result, assistant reply: 4 lines) to
/// `session_file` and returns the usage of its two assistant messages.
///
/// The user message is stamped `at_ms` (or 1 ms after the file's last entry if that is later);
/// the rest follow by realistic latencies. The turn continues the file's last model and entry
/// chain. Same file content, `seed` and `at_ms` give the same lines. `sessions.json` is not
/// touched.
pub fn append_turn(session_file: &Path, seed: u64, at_ms: i64) -> Result<Totals, DemoError> {
    let io = |e| DemoError::io(session_file)(e);
    let bad = |reason: &str| DemoError::BadTranscript {
        path: session_file.to_path_buf(),
        reason: reason.to_string(),
    };
    let mut file = OpenOptions::new().read(true).append(true).open(session_file).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len == 0 {
        return Err(bad("empty file"));
    }
    let start = len.saturating_sub(TAIL_BYTES);
    let mut scan = Scan::of(&read_from(&mut file, start).map_err(io)?, start == 0);
    if start > 0 && (scan.model.is_none() || scan.context.is_none() || scan.last_ms.is_none()) {
        scan = Scan::of(&read_from(&mut file, 0).map_err(io)?, true);
    }
    let Some(last_ms) = scan.last_ms else {
        return Err(bad("no JSONL entry with a timestamp"));
    };

    let state = Resume {
        parent: scan.parent,
        model: scan.model.unwrap_or(DEFAULT_MODEL),
        context: scan.context.unwrap_or(FRESH_CONTEXT),
        last_call_ms: scan.last_call_ms,
        last_ms,
        last_user_id: scan.last_user_id,
        ids: scan.ids,
    };
    let mut timing = Rng::derive(seed, &[at_ms as u64, len, 0]);
    let content = Rng::derive(seed, &[at_ms as u64, len, 1]);
    let times = TurnTimes::draw(&mut timing, at_ms.max(last_ms.saturating_add(1)));

    let mut w = BufWriter::new(&file);
    if !scan.ends_with_newline {
        // Never glue our first line onto a torn last line.
        w.write_all(b"\n").map_err(io)?;
    }
    let mut t = Transcript::resume(w, content, state, DEFAULT_TOOL_RESULT_BYTES);
    t.write_compactions = false;
    let added = t.turn(times).map_err(io)?;
    t.flush().map_err(io)?;
    Ok(added)
}

fn read_from(file: &mut File, start: u64) -> std::io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)?;
    Ok(buf)
}

/// What the end of a transcript says about where it stands.
#[derive(Default)]
struct Scan {
    parent: Option<String>,
    model: Option<&'static ModelInfo>,
    context: Option<u64>,
    last_call_ms: Option<i64>,
    last_ms: Option<i64>,
    last_user_id: Option<String>,
    ids: HashSet<String>,
    ends_with_newline: bool,
}

impl Scan {
    /// Scans `buf`, newest line first. Unless `whole` (the buffer starts the file), its first
    /// line may be cut and is skipped.
    fn of(buf: &[u8], whole: bool) -> Scan {
        let mut s = Scan { ends_with_newline: buf.last() == Some(&b'\n'), ..Scan::default() };
        let mut lines: Vec<&[u8]> = buf.split(|&b| b == b'\n').collect();
        if !whole && !lines.is_empty() {
            lines.remove(0);
        }
        let mut model_seen = false;
        for line in lines.iter().rev() {
            let Ok(v) = serde_json::from_slice::<Value>(line) else {
                continue; // empty or torn line
            };
            let kind = v["type"].as_str().unwrap_or_default();
            let ts = v["timestamp"].as_str().and_then(parse_iso);
            if s.last_ms.is_none() {
                s.last_ms = ts;
            }
            if kind == "session" {
                break;
            }
            if let Some(id) = v["id"].as_str() {
                if s.parent.is_none() {
                    s.parent = Some(id.to_string());
                }
                s.ids.insert(id.to_string());
            }
            let msg = &v["message"];
            match (kind, msg["role"].as_str()) {
                ("model_change", _) if !model_seen => {
                    model_seen = true;
                    s.model = lookup(&v["provider"], &v["modelId"]);
                }
                ("message", Some("assistant")) => {
                    if !model_seen {
                        model_seen = true;
                        s.model = lookup(&msg["provider"], &msg["model"]);
                    }
                    let u = &msg["usage"];
                    let n = |k: &str| u[k].as_u64().unwrap_or(0);
                    let context = n("input") + n("cacheRead") + n("cacheWrite") + n("output");
                    if s.context.is_none() && context > 0 {
                        s.context = Some(context);
                        s.last_call_ms = msg["timestamp"].as_i64().or(ts);
                    }
                }
                ("message", Some("user")) if s.last_user_id.is_none() => {
                    s.last_user_id = v["id"].as_str().map(str::to_string);
                }
                _ => {}
            }
        }
        if !model_seen && whole {
            s.model = Some(DEFAULT_MODEL);
        }
        s
    }
}

fn lookup(provider: &Value, model: &Value) -> Option<&'static ModelInfo> {
    Some(find_model(provider.as_str()?, model.as_str()?).unwrap_or(DEFAULT_MODEL))
}
