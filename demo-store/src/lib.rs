//! Generates realistic synthetic OpenClaw session stores (legacy `sessions.json` + JSONL layout).
//!
//! `clawgate demo`, `clawgate serve --demo`, the tests and the benchmarks need a store that looks
//! like a busy real install (many agents, long tool-heavy sessions, archives, several providers)
//! without shipping gigabytes of fixtures. [`generate`] writes one deterministically from a
//! [`DemoSpec`] and records the exact expected usage totals in a [`DemoManifest`], so a reader's
//! numbers can be checked against ground truth ([`generate_or_reuse`] keeps an existing store
//! whose spec differs only in its end time). [`append_turn`] grows a transcript live.
//! [`sqlite::convert_to_sqlite`] rewrites a store into OpenClaw 2026.7+'s per-agent SQLite layout.
//!
//! Floats are written by serde_json in shortest round-trip form; this crate enables serde_json's
//! `float_roundtrip` feature so that reading them back is exact too.

mod append;
mod catalog;
mod clock;
mod plan;
mod rng;
pub mod sqlite;
mod store;
mod text;
mod transcript;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use append::append_turn;
pub use catalog::{MODELS, ModelInfo, find_model};
pub use clock::iso;
pub use rng::Rng;
pub use store::{generate, generate_or_reuse, read_manifest};

/// File name of the manifest written at the root of a generated store.
pub const MANIFEST_FILE: &str = "clawgate-demo.json";

/// Version of the generator's output; a manifest with another version is regenerated.
pub const FORMAT_VERSION: u32 = 1;

/// Default average size of a tool-result text, bytes: with JSON escaping and the line around
/// it, a `toolResult` line averages about 6 KB, which sizes [`DemoSpec::seed_size`] at ~1.45 GB.
pub const DEFAULT_TOOL_RESULT_BYTES: u32 = 5_500;

/// What to generate. Equal specs (including `end_ms`) give byte-identical transcripts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DemoSpec {
    /// Number of agents (`main`, `agent1`, `agent2`, ...), one session store each.
    pub agents: u32,
    /// Sessions (entries of `sessions.json`) per agent.
    pub sessions_per_agent: u32,
    /// Turns per session. One turn is user, assistant (tool call), tool result, assistant
    /// (reply): two assistant messages with usage.
    pub turns_per_session: u32,
    /// PRNG seed.
    pub seed: u64,
    /// The data spreads over this many days ending at `end_ms`.
    pub days: u32,
    /// Epoch ms the data ends at (no message is later).
    pub end_ms: i64,
    /// Average size of a tool-result text, bytes (the bulk of the store).
    pub tool_result_bytes: u32,
    /// A harder shape for the usage engine: every session spans one to four weeks of quarter
    /// hours, switches models every few turns, and calls tools from a wide set.
    #[serde(default)]
    pub wide: bool,
}

impl Default for DemoSpec {
    /// Small: 3 agents x 12 sessions x 20 turns over 90 days ending now.
    fn default() -> Self {
        DemoSpec {
            agents: 3,
            sessions_per_agent: 12,
            turns_per_session: 20,
            seed: 42,
            days: 90,
            end_ms: clock::now_ms(),
            tool_result_bytes: DEFAULT_TOOL_RESULT_BYTES,
            wide: false,
        }
    }
}

impl DemoSpec {
    /// The size of the upstream incident's store: 9 agents x 184 sessions x 100 turns
    /// (~200 assistant messages per session), about 1.45 GB of JSONL.
    pub fn seed_size() -> DemoSpec {
        DemoSpec { agents: 9, sessions_per_agent: 184, turns_per_session: 100, ..DemoSpec::default() }
    }

    /// Equal except for `end_ms`: the same store shifted in time. Lets a caller whose spec
    /// defaults `end_ms` to "now" reuse an existing store instead of regenerating it.
    pub fn same_shape(&self, other: &DemoSpec) -> bool {
        DemoSpec { end_ms: other.end_ms, ..self.clone() } == *other
    }

    /// Agent id of the `i`-th agent: `main`, then `agent1`, `agent2`, ...
    pub fn agent_id(i: u32) -> String {
        if i == 0 { "main".to_string() } else { format!("agent{i}") }
    }
}

/// Usage sums with OpenClaw's field names (the `totals` object of `sessions.usage`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub total_tokens: u64,
    pub total_cost: f64,
    pub input_cost: f64,
    pub output_cost: f64,
    pub cache_read_cost: f64,
    pub cache_write_cost: f64,
    /// Usage entries without a cost (always 0 here: every message carries its cost).
    pub missing_cost_entries: u64,
}

impl Totals {
    /// Adds another sum field by field (plain `f64` additions).
    pub fn merge(&mut self, o: &Totals) {
        self.input += o.input;
        self.output += o.output;
        self.cache_read += o.cache_read;
        self.cache_write += o.cache_write;
        self.total_tokens += o.total_tokens;
        self.total_cost += o.total_cost;
        self.input_cost += o.input_cost;
        self.output_cost += o.output_cost;
        self.cache_read_cost += o.cache_read_cost;
        self.cache_write_cost += o.cache_write_cost;
        self.missing_cost_entries += o.missing_cost_entries;
    }
}

/// Message counts of the store.
///
/// These count what is in the files: `toolResults` is the number of `toolResult` messages,
/// which OpenClaw 2026.5.22 itself reports as 0 (it counts only `tool_result` content blocks).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageCounts {
    pub user: u64,
    pub assistant: u64,
    pub tool_results: u64,
    pub tool_calls: u64,
    /// Assistant messages with `stopReason: "error"`.
    pub errors: u64,
}

impl MessageCounts {
    pub fn merge(&mut self, o: &MessageCounts) {
        self.user += o.user;
        self.assistant += o.assistant;
        self.tool_results += o.tool_results;
        self.tool_calls += o.tool_calls;
        self.errors += o.errors;
    }
}

/// Ground truth about a generated store, saved as `<out>/clawgate-demo.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DemoManifest {
    /// [`FORMAT_VERSION`] of the generator that wrote the store.
    pub format: u32,
    pub spec: DemoSpec,
    /// Usage-counted transcript files (primary `.jsonl` plus `.jsonl.reset.<ts>` archives).
    pub files: u64,
    /// Total bytes of those transcript files.
    pub bytes: u64,
    /// Entries across all `sessions.json` files.
    pub sessions: u64,
    /// How many of `files` are archives.
    pub archives: u64,
    /// Sum over every assistant message of every transcript file, archives included.
    pub totals: Totals,
    /// Per agent id.
    pub by_agent: BTreeMap<String, Totals>,
    /// Per `provider/model`.
    pub by_model: BTreeMap<String, Totals>,
    /// Per session channel (`sessions.json` `channel`; archives count for their session).
    pub by_channel: BTreeMap<String, Totals>,
    pub messages: MessageCounts,
    /// Earliest user/assistant/toolResult message time, epoch ms.
    pub first_ms: Option<i64>,
    /// Latest message time, epoch ms.
    pub last_ms: Option<i64>,
}

/// Why generating, reading or appending failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{0} is not empty and is not a clawgate demo store (no {MANIFEST_FILE}); refusing to write into it"
    )]
    NotEmpty(PathBuf),
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("{path}: not a usable transcript: {reason}")]
    BadTranscript { path: PathBuf, reason: String },
    #[error("a generator thread panicked")]
    WorkerPanicked,
}

impl DemoError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DemoError {
        let path = path.into();
        move |source| DemoError::Io { path, source }
    }
}
