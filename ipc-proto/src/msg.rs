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
    /// Compute one answer. Since [`crate::version::V1_INITIAL`].
    Request { id: RequestId, query: UsageQuery },
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
    /// The final answer to a request. Since [`crate::version::V1_INITIAL`].
    Response { id: RequestId, result: Result<UsageAnswer, WorkerError> },
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
}

/// A successful answer: the OpenClaw payload as JSON text, passed through by the gateway
/// unparsed (and uncopied: see [`crate::JsonText`]), plus what the job cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageAnswer {
    pub payload_json: crate::JsonText,
    pub stats: JobStats,
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
