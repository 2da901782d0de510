//! What an answer is made of on its way out: the data as shared text pieces ([`Payload`]), the
//! answer-time fields ([`ipc_proto::AnswerMeta`]) and clawgate's `diagnostics`.
//!
//! The data of a large `sessions.usage` answer is mostly rendered rows, each a shared piece
//! also held by the row cache, so an answer is assembled and sent without copying them into one
//! buffer. The answer-time fields stay typed all the way to the gateway (ipc-proto assembles
//! the final JSON), so nothing downstream patches JSON text.

use std::sync::Arc;

use ipc_proto::{AnswerMeta, CacheInfo, CacheState, UsageQuery};
use serde::Serialize;

use super::rollup::SkipCounts;

/// An answer's data (JSON object members without braces) as pieces to be written one after the
/// other.
#[derive(Debug, Clone, Default)]
pub struct Payload {
    parts: Vec<Arc<str>>,
    len: usize,
}

impl Payload {
    pub fn from_parts(parts: Vec<Arc<str>>) -> Payload {
        let len = parts.iter().map(|p| p.len()).sum();
        Payload { parts, len }
    }

    pub fn text(text: String) -> Payload {
        Payload::from_parts(vec![Arc::from(text)])
    }

    /// The pieces, in order.
    pub fn parts(&self) -> &[Arc<str>] {
        &self.parts
    }

    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The text in one string (a copy).
    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(self.len);
        for p in &self.parts {
            out.push_str(p);
        }
        out
    }
}

/// A computed answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub meta: AnswerMeta,
    /// Equal for equal data (within one worker process).
    pub fingerprint: u64,
    pub data: Payload,
}

impl Answer {
    /// The whole payload as JSON text (a copy; tests and tools).
    pub fn payload_text(&self) -> String {
        format!("{}{}{}", self.meta.json_head(), self.data.to_text(), self.meta.json_tail(None))
    }
}

/// What a request gets.
#[derive(Debug, Clone)]
pub enum Reply {
    Answer(Answer),
    /// The caller's copy (by fingerprint) is still the data; new answer-time fields only.
    Unchanged(AnswerMeta),
}

/// The members of a serialised struct, without its braces: `"a":1,"b":2`.
pub fn fields_of<T: Serialize>(value: &T) -> Result<String, serde_json::Error> {
    let mut s = serde_json::to_string(value)?;
    debug_assert!(s.starts_with('{') && s.ends_with('}'));
    s.pop();
    s.remove(0);
    Ok(s)
}

/// A deterministic 64-bit hash (FNV-1a): fingerprints and stored hashes mean the same thing on
/// every call and in every process.
pub fn hash_of<T: std::hash::Hash + ?Sized>(t: &T) -> u64 {
    use std::hash::Hasher;
    let mut h = fnv::FnvHasher::default();
    t.hash(&mut h);
    h.finish()
}

/// Counters that are not part of OpenClaw's payload (the `diagnostics` object).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Diagnostics {
    pub agents: u64,
    pub files: u64,
    pub files_parsed: u64,
    pub bytes_parsed: u64,
    #[serde(flatten)]
    pub skips: SkipsOut,
    pub pending_tails: u64,
    pub unreadable_files: u64,
    /// Agent databases skipped whole: locked, corrupt, or of an unknown schema.
    pub unreadable_databases: u64,
    pub sessions_json_errors: u64,
    pub models_json_errors: u64,
    /// Index files found unusable (another format, store or version; corrupt) and rebuilt since
    /// the worker started.
    pub rollup_cache_discards: u64,
    /// Files skipped because they are not regular files (FIFOs, sockets, devices) or are
    /// symlinks leading out of the state dir.
    pub skipped_special_files: u64,
    /// `sessions.usage` rows left out because the answer would not fit the worker's memory
    /// budget (`rowsCut`); the totals and aggregates still cover every row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_cut: Option<RowsCut>,
    /// The first few error messages, for humans.
    pub errors: Vec<String>,
}

/// How many rows an answer left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RowsCut {
    pub returned: u64,
    pub requested: u64,
    pub reason: String,
}

/// Skip counts with their diagnostic names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SkipsOut {
    pub malformed_json_lines: u64,
    pub invalid_utf8_lines: u64,
    pub nul_byte_lines: u64,
    pub oversize_lines: u64,
    pub undecodable_rows: u64,
    pub implausible_usage: u64,
}

impl From<&SkipCounts> for SkipsOut {
    fn from(s: &SkipCounts) -> SkipsOut {
        SkipsOut {
            malformed_json_lines: s.malformed_json,
            invalid_utf8_lines: s.invalid_utf8,
            nul_byte_lines: s.nul_bytes,
            oversize_lines: s.oversize,
            undecodable_rows: s.undecodable,
            implausible_usage: s.implausible,
        }
    }
}

impl Diagnostics {
    pub fn error(&mut self, msg: String) {
        if self.errors.len() < 20 {
            self.errors.push(msg);
        }
    }

    /// Adds what a listing made on another thread found: it counts unreadable databases and
    /// skipped special files and reports errors, nothing else.
    pub fn absorb_listing(&mut self, o: Diagnostics) {
        debug_assert_eq!(
            Diagnostics {
                unreadable_databases: 0,
                skipped_special_files: 0,
                errors: Vec::new(),
                ..o.clone()
            },
            Diagnostics::default()
        );
        self.unreadable_databases += o.unreadable_databases;
        self.skipped_special_files += o.skipped_special_files;
        for e in o.errors {
            self.error(e);
        }
    }
}

/// The answer-time fields of an answer whose rows come from `files` transcripts (`None`: no
/// transcript in scope, so no `cacheStatus`), refreshed at `now_ms`.
pub fn meta(now_ms: i64, files: Option<u64>, diag: &Diagnostics, rows_total: Option<u64>) -> AnswerMeta {
    AnswerMeta {
        updated_at: Some(now_ms),
        cache: files.map(|files| CacheInfo {
            state: CacheState::Fresh,
            cached_files: files,
            pending_files: 0,
            stale_files: 0,
            refreshed_at: now_ms,
        }),
        diagnostics: serde_json::to_string(diag).ok().map(Into::into),
        rows_total,
    }
}

/// Recently given answers, so an unchanged store is answered without assembling anything.
/// Bounded by count and by bytes (rows are shared with the row cache, so this mostly holds
/// pointers).
#[derive(Debug, Default)]
pub struct AnswerCache {
    /// (query, engine change counter it was built at, answer, its scope's diagnostics); most
    /// recent last.
    entries: Vec<(UsageQuery, u64, Answer, Scoped)>,
}

/// The diagnostics that belong to one answer's scope rather than to the whole store: a cached
/// answer is given again with these and the store-wide counters of the moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scoped {
    pub files: u64,
    pub skips: SkipsOut,
    pub pending_tails: u64,
    pub rows_cut: Option<RowsCut>,
}

impl Scoped {
    pub fn of(diag: &Diagnostics) -> Scoped {
        Scoped {
            files: diag.files,
            skips: diag.skips,
            pending_tails: diag.pending_tails,
            rows_cut: diag.rows_cut.clone(),
        }
    }

    /// `diag` with this scope's counters in place of the store-wide ones.
    pub fn apply(&self, diag: &mut Diagnostics) {
        diag.files = self.files;
        diag.skips = self.skips;
        diag.pending_tails = self.pending_tails;
        diag.rows_cut.clone_from(&self.rows_cut);
    }
}

const ANSWERS: usize = 8;

impl AnswerCache {
    pub fn get(&self, query: &UsageQuery, change: u64) -> Option<(&Answer, &Scoped)> {
        self.entries.iter().rev().find(|(q, c, _, _)| *c == change && q == query).map(|(_, _, a, s)| (a, s))
    }

    pub fn put(&mut self, query: &UsageQuery, change: u64, answer: Answer, scoped: Scoped) {
        self.entries.retain(|(q, _, _, _)| q != query);
        if self.entries.len() >= ANSWERS {
            self.entries.remove(0);
        }
        self.entries.push((query.clone(), change, answer, scoped));
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Bytes of text kept (shared pieces counted once per answer, an upper bound).
    pub fn heap_bytes(&self) -> usize {
        self.entries.iter().map(|(_, _, a, _)| a.data.len() / 8 + a.data.parts().len() * 16).sum()
    }
}
