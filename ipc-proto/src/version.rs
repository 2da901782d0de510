//! Named protocol revisions, one constant each, so a version check reads as what changed.

/// The first protocol: `Hello`, usage requests, `Cancel`, `Ping`/`Pong`, `Progress`, typed errors.
pub const V1_INITIAL: u32 = 1;

/// The revision this build speaks. Peers must announce exactly this in their `Hello`.
pub const CURRENT: u32 = V1_INITIAL;
