//! The messages. One enum per direction; `Hello` is always the first frame both ways.
//!
//! rmp-serde encodes enum variants by name: reordering variants is safe, renaming one breaks the
//! wire, and a new variant is safe only if an older peer never receives it.

use serde::{Deserialize, Serialize};

/// Identifies one request on one connection; chosen by the gateway, echoed by the worker.
pub type RequestId = u64;

/// First frame in both directions. Since [`crate::version::V1_INITIAL`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The sender's [`crate::version::CURRENT`].
    pub protocol: u32,
    /// Human-readable build identity (crate version), for status output and logs.
    pub build: String,
    /// The sender's process id, so the gateway can watch the worker it actually talks to.
    pub pid: u32,
}

impl Hello {
    /// This process's hello.
    pub fn ours(build: &str) -> Hello {
        Hello { protocol: crate::version::CURRENT, build: build.to_owned(), pid: std::process::id() }
    }
}

/// Gateway to worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToWorker {
    /// Since [`crate::version::V1_INITIAL`].
    Hello(Hello),
    /// Compute one answer. Since [`crate::version::V1_INITIAL`]. `known` (since
    /// [`crate::version::V2_TYPED_ANSWERS`]) is the fingerprint of the answer the gateway holds for
    /// this query: when the data is still the same the worker replies [`UsageReply::Unchanged`].
    Request {
        id: RequestId,
        query: UsageQuery,
        #[serde(default)]
        known: Option<u64>,
    },
    /// Stop working on `id`; the worker answers it with [`WorkerErrorKind::Cancelled`].
    /// Since [`crate::version::V1_INITIAL`].
    Cancel { id: RequestId },
    /// Liveness probe, answered off the compute path. Since [`crate::version::V1_INITIAL`].
    Ping { seq: u64 },
    /// Finish and exit cleanly. Since [`crate::version::V1_INITIAL`].
    Shutdown,
}

/// Worker to gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FromWorker {
    /// Since [`crate::version::V1_INITIAL`].
    Hello(Hello),
    /// Progress of a long request. Since [`crate::version::V1_INITIAL`].
    Progress { id: RequestId, progress: Progress },
    /// The final answer to a request. Since [`crate::version::V2_TYPED_ANSWERS`].
    Response { id: RequestId, result: Result<UsageReply, WorkerError> },
    /// Answer to `Ping`, with the worker's own view of its memory.
    /// Since [`crate::version::V1_INITIAL`].
    Pong { seq: u64, memory: MemoryReport },
}

impl FromWorker {
    /// Variant name, for error messages that must not dump a whole payload.
    pub fn kind(&self) -> &'static str {
        match self {
            FromWorker::Hello(_) => "Hello",
            FromWorker::Progress { .. } => "Progress",
            FromWorker::Response { .. } => "Response",
            FromWorker::Pong { .. } => "Pong",
        }
    }
}

impl ToWorker {
    /// Variant name, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            ToWorker::Hello(_) => "Hello",
            ToWorker::Request { .. } => "Request",
            ToWorker::Cancel { .. } => "Cancel",
            ToWorker::Ping { .. } => "Ping",
            ToWorker::Shutdown => "Shutdown",
        }
    }
}

/// The worker's memory as it sees it: heap from its counting allocator, RSS from /proc.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryReport {
    pub heap_bytes: u64,
    pub rss_bytes: u64,
}

/// How far a request has got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_done: u64,
}

/// The OpenClaw method a query answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Method {
    /// `sessions.usage`
    SessionsUsage,
    /// `usage.cost`
    UsageCost,
    /// `sessions.usage.timeseries`
    SessionsUsageTimeseries,
    /// `sessions.usage.logs`
    SessionsUsageLogs,
}

impl Method {
    /// The OpenClaw wire name.
    pub fn name(self) -> &'static str {
        match self {
            Method::SessionsUsage => "sessions.usage",
            Method::UsageCost => "usage.cost",
            Method::SessionsUsageTimeseries => "sessions.usage.timeseries",
            Method::SessionsUsageLogs => "sessions.usage.logs",
        }
    }

    /// Parses an OpenClaw wire name.
    pub fn from_name(name: &str) -> Option<Method> {
        [Method::SessionsUsage, Method::UsageCost, Method::SessionsUsageTimeseries, Method::SessionsUsageLogs]
            .into_iter()
            .find(|m| m.name() == name)
    }
}

/// Which agents' stores a query reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AgentScope {
    /// Every agent found under `<stateDir>/agents/`.
    All,
    /// One agent by normalised id.
    One(String),
}

/// How day keys (`YYYY-MM-DD`) are cut.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DayZone {
    Utc,
    /// A fixed offset east of UTC, in minutes (`mode:"specific"` + `utcOffset`).
    FixedOffsetMinutes(i32),
}

/// `groupBy`: one row per transcript instance, or per logical key with its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GroupBy {
    Instance,
    Family,
}

/// A validated, normalised usage query. The gateway builds it from OpenClaw params, so the
/// worker never sees raw client JSON and equal queries compare equal (the cache key).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UsageQuery {
    pub method: Method,
    /// Inclusive start of the range, epoch ms (0 for "all").
    pub start_ms: i64,
    /// Inclusive end of the range, epoch ms.
    pub end_ms: i64,
    pub agents: AgentScope,
    /// A session key or bare session id (`sessions.usage` with `key`, timeseries, logs).
    #[serde(default)]
    pub key: Option<String>,
    /// Maximum rows (`sessions.usage` sessions, `logs` entries).
    #[serde(default)]
    pub limit: Option<u32>,
    pub group_by: GroupBy,
    pub day_zone: DayZone,
    #[serde(default)]
    pub include_context_weight: bool,
    /// `sessions.usage` rows skipped before the first one returned (clawgate's paging; OpenClaw
    /// sends none). Since [`crate::version::V2_TYPED_ANSWERS`].
    #[serde(default)]
    pub offset: Option<u32>,
    /// Order of `sessions.usage` rows (`None`: OpenClaw's, most recently updated first).
    #[serde(default)]
    pub sort: Option<RowSort>,
    /// Only `sessions.usage` rows whose key, label, session id, agent, channel or model contain
    /// every whitespace-separated term (case-insensitive). Validated short by the gateway.
    #[serde(default)]
    pub search: Option<String>,
    /// `sessions.usage` rows of session-store entries only (one per entry: no archived
    /// transcripts), without totals or aggregates: the page the gateway's `sessions.list` is
    /// built from. Since [`crate::version::V2_TYPED_ANSWERS`] (additive, defaults to `false`).
    #[serde(default)]
    pub entries_only: bool,
}

/// A `sessions.usage` row order other than OpenClaw's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RowSort {
    pub key: SortKey,
    /// Largest first.
    pub descending: bool,
}

/// What rows can be ordered by: the numbers of the row in the query's range, or its last update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SortKey {
    /// `totalCost` in range.
    Cost,
    /// `totalTokens` in range.
    Tokens,
    /// `messageCounts.total` in range.
    Messages,
    /// `updatedAt` (OpenClaw's own order when descending).
    UpdatedAt,
}

/// What the worker replies to a request that succeeded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UsageReply {
    /// A new answer.
    Answer(UsageAnswer),
    /// The data is the one the gateway said it holds (`known`); only the answer-time fields are
    /// new. A few hundred bytes instead of the same megabytes again.
    Unchanged { meta: AnswerMeta, stats: JobStats },
}

/// A successful answer: OpenClaw's payload as typed answer-time fields plus the data as JSON
/// text, passed through by the gateway unparsed (and uncopied: see [`crate::JsonText`]).
///
/// The payload a client sees is `{"updatedAt":…,`, then `data_json`, then
/// `,"cacheStatus":{…},"diagnostics":…}` ([`AnswerMeta::json_head`], [`AnswerMeta::json_tail`]).
/// Keeping the answer-time fields typed lets the gateway mark an answer stale or serve old data
/// with new times without touching the JSON.
///
/// `data_json` must stay the last field: the worker streams it after a head encoded by
/// [`crate::frame::answer_frame_head`], without first copying it into one buffer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageAnswer {
    pub meta: AnswerMeta,
    pub stats: JobStats,
    /// Changes whenever `data_json` does (the worker may also change it when it does not).
    pub fingerprint: u64,
    /// The payload's data members, without braces: `"startDate":…,"sessions":[…],…`. Never
    /// empty (every payload has data members), so head, data and tail always join with commas.
    pub data_json: crate::JsonText,
}

/// The fields of a payload that say when and how it was answered, not what the data is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerMeta {
    /// `updatedAt`, epoch ms; `None` for payloads without it (timeseries, logs).
    pub updated_at: Option<i64>,
    /// `cacheStatus`; `None` for payloads without it.
    pub cache: Option<CacheInfo>,
    /// clawgate's `diagnostics` object as JSON text (skipped lines, unreadable files, ...).
    pub diagnostics: Option<crate::JsonText>,
    /// `sessions.usage` rows the answer has in all (before `offset`/`limit`), when known.
    pub rows_total: Option<u64>,
}

/// OpenClaw's `cacheStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheInfo {
    pub state: CacheState,
    pub cached_files: u64,
    pub pending_files: u64,
    pub stale_files: u64,
    pub refreshed_at: i64,
}

/// `cacheStatus.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CacheState {
    Fresh,
    Refreshing,
    Partial,
    Stale,
}

impl CacheState {
    /// OpenClaw's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheState::Fresh => "fresh",
            CacheState::Refreshing => "refreshing",
            CacheState::Partial => "partial",
            CacheState::Stale => "stale",
        }
    }
}

impl AnswerMeta {
    /// `{"updatedAt":…,` (or `{`): what goes before the data.
    pub fn json_head(&self) -> String {
        match self.updated_at {
            Some(t) => format!("{{\"updatedAt\":{t},"),
            None => "{".to_owned(),
        }
    }

    /// `,"cacheStatus":{…},"diagnostics":…}` (or `}`), with `state` instead of the answer's own
    /// cache state when given (a stale answer served past its deadline).
    pub fn json_tail(&self, state: Option<CacheState>) -> String {
        let mut out = String::new();
        if let Some(c) = &self.cache {
            out.push_str(&format!(
                ",\"cacheStatus\":{{\"status\":\"{}\",\"cachedFiles\":{},\"pendingFiles\":{},\"staleFiles\":{},\"refreshedAt\":{}}}",
                state.unwrap_or(c.state).as_str(),
                c.cached_files,
                c.pending_files,
                c.stale_files,
                c.refreshed_at
            ));
        }
        if let Some(d) = &self.diagnostics {
            out.push_str(",\"diagnostics\":");
            out.push_str(d);
        }
        out.push('}');
        out
    }
}

impl UsageAnswer {
    /// The whole OpenClaw payload as JSON text (copies; for tests, tools and small answers).
    pub fn payload_text(&self) -> String {
        format!("{}{}{}", self.meta.json_head(), &*self.data_json, self.meta.json_tail(None))
    }
}

/// What one job did; logged per job and surfaced in status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStats {
    pub agents: u64,
    pub files_total: u64,
    /// Files whose bytes were (re)parsed for this answer; the rest came from rollups.
    pub files_parsed: u64,
    pub bytes_parsed: u64,
    /// Lines skipped as malformed (bad JSON, bad UTF-8, over-long, unterminated).
    pub lines_skipped: u64,
    pub duration_ms: u64,
}

/// A typed failure of one request; the worker stays up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct WorkerError {
    pub kind: WorkerErrorKind,
    pub message: String,
}

/// What a caller can do about a [`WorkerError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerErrorKind {
    /// The query is valid JSON but makes no sense here (unknown key, ...). Not retryable.
    InvalidRequest,
    /// The job would exceed the worker's memory budget. Retryable later.
    OverBudget,
    /// The job was cancelled by `Cancel` or shutdown.
    Cancelled,
    /// The state dir cannot be read at all.
    StoreUnavailable,
    /// A bug; the message says what.
    Internal,
}

impl WorkerError {
    pub fn new(kind: WorkerErrorKind, message: impl Into<String>) -> WorkerError {
        WorkerError { kind, message: message.into() }
    }
}
