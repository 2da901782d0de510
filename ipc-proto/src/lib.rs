//! The contract between the clawgate gateway (with its supervisor) and the usage worker.
//!
//! Everything that crosses the process boundary is defined here and nowhere else: the gateway and
//! the worker share no other crate. [`host`] is the one exception to "only the wire": the host
//! facts (state directory, cgroup, heap budget) both processes must resolve identically. Messages are MessagePack *named maps* (`rmp_serde::to_vec_named`)
//! behind a u32 big-endian length prefix, so a field added with `#[serde(default)]` does not break
//! an older peer. A breaking change bumps [`version::CURRENT`]; each side checks the other's
//! [`Hello`] before anything else and refuses a mismatch with [`ProtoError::VersionMismatch`].
//!
//! Bad bytes on the wire are a typed [`ProtoError`], never a panic, and a length prefix above the
//! configured maximum is refused before any buffer is allocated for it.

pub mod endpoint;
pub mod frame;
pub mod host;
pub mod msg;
pub mod version;

mod error;
mod text;

pub use error::ProtoError;
pub use frame::{Connection, MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME};
pub use msg::*;
pub use text::JsonText;

#[cfg(test)]
mod tests;
