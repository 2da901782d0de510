//! Named protocol revisions, one constant each, so a version check reads as what changed.

/// The first protocol: `Hello`, usage requests, `Cancel`, `Ping`/`Pong`, `Progress`, typed errors.
pub const V1_INITIAL: u32 = 1;

/// Answers carry typed answer-time fields (`AnswerMeta`) beside the data's JSON text and a
/// fingerprint; a request may name the fingerprint it holds and get `Unchanged`; queries gain
/// paging (`offset`, `sort`, `search`).
pub const V2_TYPED_ANSWERS: u32 = 2;

/// The revision this build speaks. Peers must announce exactly this in their `Hello`.
pub const CURRENT: u32 = V2_TYPED_ANSWERS;
