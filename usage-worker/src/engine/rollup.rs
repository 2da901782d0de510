//! Per-file rollups: everything an answer needs from one transcript, aggregated per UTC quarter
//! hour (and per model within it), plus the checkpoint that lets the next call parse only
//! appended bytes.
//!
//! Any day-aligned range in any fixed offset that is a multiple of 15 minutes is a union of
//! whole buckets, so answers are aggregations over rollups and never rescans. Memory is
//! O(sessions × active quarter hours), flat in transcript bytes, except latency samples (one per
//! assistant message, needed for exact p95s). Costs without a stored `usage.cost` are kept as
//! token sums per model and priced at answer time, so a `models.json` change needs no rescan.
//! Everything here is plain data (no handles, no interior pointers) so it can be serialized later.

use serde::{Deserialize, Serialize};

use super::line::{Entry, LineOutcome, Role, parse_line_bytes};
use super::time::quarter_of;

/// Marks "no model": usage entries that named neither provider nor model.
pub const NO_MODEL: u32 = u32::MAX;
/// Latency samples longer than this are dropped (OpenClaw's 12 h cap).
const MAX_LATENCY_MS: f64 = 12.0 * 60.0 * 60.0 * 1000.0;

/// Where the next incremental parse of a file starts, and how to tell the file is the same one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub dev: u64,
    pub ino: u64,
    /// File size when last read.
    pub size: u64,
    /// Modification time when last read, in ns since the epoch.
    pub mtime_ns: i128,
    /// Inode change time when last read, in ns since the epoch: an edit that keeps the size and
    /// puts the old mtime back still moves it.
    pub ctime_ns: i128,
    /// Offset just after the last complete line.
    pub offset: u64,
    /// Hash of the bytes just before `offset` ([`super::reader::anchor_hash`]).
    pub anchor: u64,
}

/// Lines skipped per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkipCounts {
    pub malformed_json: u64,
    pub invalid_utf8: u64,
    pub nul_bytes: u64,
    pub oversize: u64,
    /// SQLite rows whose compressed event does not inflate to its recorded size (or that hold
    /// no event at all).
    pub undecodable: u64,
    /// Usage objects with impossible numbers (a token count above [`super::line::MAX_TOKENS`],
    /// a cost above [`super::line::MAX_COST`]): the message counts, its usage does not.
    pub implausible: u64,
}

impl SkipCounts {
    pub fn total(&self) -> u64 {
        self.malformed_json + self.invalid_utf8 + self.nul_bytes + self.oversize + self.undecodable
    }

    /// Lines skipped whole (implausible usage drops only the numbers, not the line).
    pub fn lines(&self) -> u64 {
        self.total()
    }

    pub fn add(&mut self, o: &SkipCounts) {
        self.malformed_json += o.malformed_json;
        self.invalid_utf8 += o.invalid_utf8;
        self.nul_bytes += o.nul_bytes;
        self.oversize += o.oversize;
        self.undecodable += o.undecodable;
        self.implausible += o.implausible;
    }
}

/// Message counts (`messageCounts` shape).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsgCounts {
    pub total: u64,
    pub user: u64,
    pub assistant: u64,
    pub tool_calls: u64,
    pub tool_results: u64,
    pub errors: u64,
}

impl MsgCounts {
    pub fn add(&mut self, o: &MsgCounts) {
        self.total += o.total;
        self.user += o.user;
        self.assistant += o.assistant;
        self.tool_calls += o.tool_calls;
        self.tool_results += o.tool_results;
        self.errors += o.errors;
    }

    pub fn is_empty(&self) -> bool {
        *self == MsgCounts::default()
    }
}

/// Usage of one model within one bucket, for entries that carried a stored cost or none.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelAgg {
    /// Index into [`FileRollup::models`], or [`NO_MODEL`].
    pub model: u32,
    /// Usage entries.
    pub count: u64,
    /// input, output, cacheRead, cacheWrite, totalTokens.
    pub tokens: [u64; 5],
    /// Stored costs: total, input, output, cacheRead, cacheWrite, added in line order. Answers
    /// convert each bucket's sums to [`super::num::Exact`] once, so a bucket contributes the same
    /// amount however and whenever it is summed (a rollup extended by an append holds the same
    /// doubles as one parsed whole).
    pub cost: [f64; 5],
    /// Entries without a stored cost: priced at answer time, or counted as missing.
    pub unpriced: u64,
    /// input, output, cacheRead, cacheWrite of the unpriced entries.
    pub unpriced_tokens: [u64; 4],
}

/// One quarter hour of one file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Quarter-hour index since the epoch (UTC).
    pub q: i64,
    pub min_ts: i64,
    pub max_ts: i64,
    pub counts: MsgCounts,
    pub models: Vec<ModelAgg>,
    /// (index into [`FileRollup::tools`], calls)
    pub tools: Vec<(u32, u64)>,
}

impl Bucket {
    fn new(q: i64) -> Bucket {
        Bucket { q, min_ts: i64::MAX, max_ts: i64::MIN, ..Bucket::default() }
    }
}

/// One assistant-message latency.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencySample {
    /// The assistant message's time.
    pub ts: i64,
    pub ms: f64,
    /// The user message it was measured from, or `i64::MIN` when it came from `durationMs`.
    /// OpenClaw only remembers user messages inside the range, so a sample measured from a user
    /// message before the range start does not count.
    pub user_ts: i64,
}

/// Everything one transcript file contributes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileRollup {
    pub checkpoint: Checkpoint,
    /// Buckets sorted by `q`.
    pub buckets: Vec<Bucket>,
    /// Entries without a timestamp: counted in `sessions.usage` totals for any range, never
    /// bucketed by day, and not in `usage.cost` (which needs a timestamp).
    pub untimed: Bucket,
    pub latency: Vec<LatencySample>,
    /// (provider, model) names referenced by [`ModelAgg::model`].
    pub models: Vec<(Option<String>, Option<String>)>,
    /// Tool names referenced by [`Bucket::tools`].
    pub tools: Vec<String>,
    pub skips: SkipCounts,
    /// The last timestamped user message, carried across incremental parses for latency.
    pub last_user_ts: Option<i64>,
    /// Whether unterminated bytes follow the checkpoint offset.
    pub pending_tail: bool,
}

impl FileRollup {
    fn bucket_index(&mut self, q: i64) -> usize {
        // Transcripts are appended in time order: the last bucket is almost always the one.
        if let Some(last) = self.buckets.last() {
            if last.q == q {
                return self.buckets.len() - 1;
            }
            if last.q < q {
                self.buckets.push(Bucket::new(q));
                return self.buckets.len() - 1;
            }
        } else {
            self.buckets.push(Bucket::new(q));
            return 0;
        }
        match self.buckets.binary_search_by_key(&q, |b| b.q) {
            Ok(i) => i,
            Err(i) => {
                self.buckets.insert(i, Bucket::new(q));
                i
            }
        }
    }

    fn model_index(&mut self, provider: Option<&str>, model: Option<&str>) -> u32 {
        if provider.is_none() && model.is_none() {
            return NO_MODEL;
        }
        if let Some(i) =
            self.models.iter().position(|(p, m)| p.as_deref() == provider && m.as_deref() == model)
        {
            return i as u32;
        }
        self.models.push((provider.map(str::to_owned), model.map(str::to_owned)));
        (self.models.len() - 1) as u32
    }

    fn tool_index(&mut self, name: &str) -> u32 {
        if let Some(i) = self.tools.iter().position(|t| t == name) {
            return i as u32;
        }
        self.tools.push(name.to_owned());
        (self.tools.len() - 1) as u32
    }

    /// Folds one counted entry in.
    pub fn add(&mut self, e: &Entry<'_>) {
        let model = match &e.usage {
            Some(_) => self.model_index(e.provider.as_deref(), e.model.as_deref()),
            None => NO_MODEL,
        };
        let tools: Vec<u32> = e.tool_names.iter().map(|n| self.tool_index(n)).collect();
        let b = match e.ts {
            Some(ts) => {
                let i = self.bucket_index(quarter_of(ts));
                let b = &mut self.buckets[i];
                b.min_ts = b.min_ts.min(ts);
                b.max_ts = b.max_ts.max(ts);
                b
            }
            None => &mut self.untimed,
        };
        match e.role {
            Role::User => {
                b.counts.user += 1;
                b.counts.total += 1;
            }
            Role::Assistant => {
                b.counts.assistant += 1;
                b.counts.total += 1;
            }
            Role::ToolResult => {}
        }
        b.counts.tool_calls += tools.len() as u64;
        for t in tools {
            match b.tools.iter_mut().find(|(i, _)| *i == t) {
                Some((_, n)) => *n += 1,
                None => b.tools.push((t, 1)),
            }
        }
        b.counts.tool_results += u64::from(e.tool_results);
        b.counts.errors += u64::from(e.tool_errors) + u64::from(e.error_stop);
        if let Some(u) = &e.usage {
            let agg = match b.models.iter().position(|m| m.model == model) {
                Some(i) => &mut b.models[i],
                None => {
                    b.models.push(ModelAgg { model, ..ModelAgg::default() });
                    b.models.last_mut().expect("just pushed")
                }
            };
            agg.count += 1;
            let parts = u.parts();
            for (t, p) in agg.tokens.iter_mut().zip(parts) {
                *t = t.saturating_add(p);
            }
            agg.tokens[4] = agg.tokens[4].saturating_add(u.total_tokens());
            match &e.cost {
                Some(c) => {
                    agg.cost[0] += c.total;
                    agg.cost[1] += c.input;
                    agg.cost[2] += c.output;
                    agg.cost[3] += c.cache_read;
                    agg.cost[4] += c.cache_write;
                }
                None => {
                    agg.unpriced += 1;
                    for (t, p) in agg.unpriced_tokens.iter_mut().zip(parts) {
                        *t = t.saturating_add(p);
                    }
                }
            }
        }
        // Latency: OpenClaw measures every assistant message from the last user message.
        match (e.role, e.ts) {
            (Role::User, Some(ts)) => self.last_user_ts = Some(ts),
            (Role::Assistant, Some(ts)) => {
                let sample = match (e.duration_ms, self.last_user_ts) {
                    (Some(d), _) => Some((d, i64::MIN)),
                    (None, Some(u)) => Some(((ts - u).max(0) as f64, u)),
                    (None, None) => None,
                };
                if let Some((ms, user_ts)) = sample
                    && ms.is_finite()
                    && ms <= MAX_LATENCY_MS
                {
                    self.latency.push(LatencySample { ts, ms, user_ts });
                }
            }
            _ => {}
        }
    }

    /// Releases growth slack after a parse: small vectors grow to capacity 4, which for
    /// per-bucket model lists is most of a rollup's memory.
    pub fn shrink(&mut self) {
        for b in &mut self.buckets {
            b.models.shrink_to_fit();
            b.tools.shrink_to_fit();
        }
        self.untimed.models.shrink_to_fit();
        self.untimed.tools.shrink_to_fit();
        self.buckets.shrink_to_fit();
        self.latency.shrink_to_fit();
    }

    /// Approximate heap bytes held, for memory reporting.
    pub fn heap_bytes(&self) -> usize {
        let buckets: usize = self
            .buckets
            .iter()
            .map(|b| {
                std::mem::size_of::<Bucket>()
                    + b.models.capacity() * std::mem::size_of::<ModelAgg>()
                    + b.tools.capacity() * 16
            })
            .sum();
        buckets
            + self.latency.capacity() * std::mem::size_of::<LatencySample>()
            + self.tools.iter().map(|t| t.len() + 24).sum::<usize>()
            + self.models.len() * 64
    }
}

/// Folds `raw` only if the line reader reads it as a tool result (a compressed event's `model`
/// projection, which stands for the event only then); otherwise folds and counts nothing.
pub fn fold_if_tool_result(rollup: &mut FileRollup, skips: &mut SkipCounts, raw: &[u8]) -> bool {
    match parse_line_bytes(raw.trim_ascii()) {
        LineOutcome::Entry(e) if e.role == Role::ToolResult => {
            skips.implausible += u64::from(e.implausible);
            rollup.add(&e);
            true
        }
        _ => false,
    }
}

/// Folds one line (a JSONL line or an event's JSON) into a rollup, counting bad input by kind.
/// The JSONL reader and the SQLite reader share it, so both layouts classify alike.
pub fn fold_line(rollup: &mut FileRollup, skips: &mut SkipCounts, raw: &[u8]) {
    let line = raw.trim_ascii();
    if line.is_empty() {
        return;
    }
    match parse_line_bytes(line) {
        LineOutcome::Entry(e) => {
            skips.implausible += u64::from(e.implausible);
            rollup.add(&e);
        }
        LineOutcome::Ignored => {}
        // Only a line that failed is asked why (a good line is never scanned twice).
        LineOutcome::Malformed => {
            if memchr::memchr(0, line).is_some() {
                skips.nul_bytes += 1;
            } else if std::str::from_utf8(line).is_err() {
                skips.invalid_utf8 += 1;
            } else {
                skips.malformed_json += 1;
            }
        }
    }
}
