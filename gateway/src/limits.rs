//! Every size and time limit a client meets, in one place: the request-size contract from HTTP to
//! IPC, and the WebSocket limits advertised in `hello-ok.policy`.
//!
//! The contract: whatever a client sends, the gateway refuses what it could not forward to the
//! worker before the worker sees it (HTTP 413 / `INVALID_REQUEST`), never by a worker death.
//! - a request (an HTTP body, a WebSocket message after `connect`) is at most
//!   [`MAX_REQUEST_BYTES`]; before `connect` a message is at most [`MAX_PREAUTH_PAYLOAD_BYTES`];
//! - every string param is at most [`MAX_STRING_PARAM_BYTES`] (OpenClaw's session keys and agent
//!   ids are tens of bytes), so a query sent to the worker encodes to a few KiB, far below
//!   ipc-proto's 1 MiB request frame limit (`params::tests` checks the largest possible one).
//!
//! A leaf module: read by `params`, `auth`, `http`, `ws` and the status page, it uses none of them.

use std::time::Duration;

/// The largest request: an HTTP body or a WebSocket message after `connect`
/// (`hello-ok.policy.maxPayload`). OpenClaw allows 25 MiB for chat attachments; clawgate serves
/// reads whose params are a few hundred bytes, and a smaller cap bounds what each connection's
/// read buffer can grow to.
pub const MAX_REQUEST_BYTES: usize = 256 << 10;

/// The largest WebSocket message before `connect` succeeds: OpenClaw's
/// `MAX_PREAUTH_PAYLOAD_BYTES`. Enforced on the frame header, before any of it is buffered.
pub const MAX_PREAUTH_PAYLOAD_BYTES: usize = 64 << 10;

/// The longest string param (`key`, `agentId`, `timeZone`, ...).
pub const MAX_STRING_PARAM_BYTES: usize = 512;

/// Outgoing bytes that may wait per WebSocket connection (`policy.maxBufferedBytes`, as
/// OpenClaw). Most of them are shared slices of cached answers, not copies.
pub const MAX_BUFFERED_BYTES: usize = 50 << 20;

/// Time from WebSocket open to a completed `connect` (OpenClaw's preauth handshake timeout).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// WebSocket `tick` interval (OpenClaw's `TICK_INTERVAL_MS`).
pub const TICK_INTERVAL: Duration = Duration::from_secs(30);

/// Requests running at once per WebSocket connection; beyond it `UNAVAILABLE` at once.
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 32;

/// Failed authentications per client address within [`AUTH_FAILURE_WINDOW`] before it is refused
/// with 429 (loopback is never limited, as OpenClaw).
pub const MAX_AUTH_FAILURES: u32 = 20;
pub const AUTH_FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses the failed-auth limiter tracks at once; past it the oldest entry goes.
pub const AUTH_LIMITER_ENTRIES: usize = 4096;

/// WebSocket limits and timers; [`WsLimits::default`] is OpenClaw's and clawgate's defaults.
#[derive(Debug, Clone)]
pub struct WsLimits {
    pub tick_interval: Duration,
    pub handshake_timeout: Duration,
    pub preauth_max_payload: usize,
    pub max_payload: usize,
    pub max_buffered_bytes: usize,
    pub max_in_flight: usize,
    /// A client that takes none of the bytes queued for it (an answer, a pong) for this long is
    /// disconnected, not buffered for (`--ws-send-timeout`).
    pub send_timeout: Duration,
}

impl Default for WsLimits {
    fn default() -> WsLimits {
        WsLimits {
            tick_interval: TICK_INTERVAL,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            preauth_max_payload: MAX_PREAUTH_PAYLOAD_BYTES,
            max_payload: MAX_REQUEST_BYTES,
            max_buffered_bytes: MAX_BUFFERED_BYTES,
            max_in_flight: MAX_IN_FLIGHT_PER_CONNECTION,
            send_timeout: Duration::from_secs(30),
        }
    }
}
