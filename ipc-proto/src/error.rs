//! The one error type of the wire: every way a frame or handshake can be wrong.

/// Why a frame could not be read, written or accepted.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The socket failed (the peer died, the path is wrong, ...).
    #[error("i/o error on the worker socket: {0}")]
    Io(#[from] std::io::Error),
    /// A message could not be encoded; a bug on our side, reported rather than panicking.
    #[error("cannot encode message: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// The frame body is not a message we understand (garbage bytes, wrong schema).
    #[error("cannot decode message: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    /// The length prefix announces more than this side accepts; nothing was allocated for it.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge { len: u64, max: u64 },
    /// The stream ended inside a frame (after `got` of `expected` bytes).
    #[error("connection closed mid-frame after {got} of {expected} bytes")]
    Truncated { got: u64, expected: u64 },
    /// The peer speaks another protocol revision.
    #[error("protocol version mismatch: ours {ours}, theirs {theirs}")]
    VersionMismatch { ours: u32, theirs: u32 },
    /// The peer sent something other than `Hello` as its first message.
    #[error("expected Hello as the first message, got {got}")]
    NotHello { got: &'static str },
}
