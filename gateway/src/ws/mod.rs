//! OpenClaw's Gateway protocol v4 over WebSocket (REFERENCE §4), at `/` and `/ws`, so OpenClaw's
//! own clients (CLI `gateway call`, Control UI, `openclaw-node`) work against clawgate unmodified.
//!
//! By concern:
//! - [`upgrade`]: the HTTP upgrade (RFC 6455 checks, taking the socket back from hyper and moving
//!   it to the bulk runtime); `Host` was checked by the auth layer, `Origin` is judged here and
//!   enforced at `connect`;
//! - [`stream`]: the socket under the WebSocket, which lets the pre-`connect` frame limit
//!   (64 KiB) be enforced by tungstenite on the frame header and raised after `connect`;
//! - [`connect`]: `connect` params (serde, OpenClaw 2026.9.6's schema), authentication, the
//!   `hello-ok` payload;
//! - [`frames`]: the JSON frames clawgate writes, and the fragmenting of large ones;
//! - [`conn`]: the connection loop: challenge, handshake, requests, ticks, events, close.
//!
//! Usage answers are spliced into `res` frames as text, never re-parsed or copied per client: a
//! frame over 64 KiB goes out as WebSocket fragments that point into the cached answer, so twenty
//! dashboards reading one 8 MB answer share one copy of it and each connection's write buffer
//! stays near 64 KiB. That is why the upgrade is done here with tokio-tungstenite rather than
//! axum's `WebSocket`, which cannot send fragments.
//!
//! Bounds per connection: frames are capped while reading (64 KiB before `connect`,
//! `policy.maxPayload` after); outgoing bytes waiting are bounded by `maxBufferedBytes`, the
//! write buffer by two fragments, and a client that takes none of what is queued for it (an
//! answer, a pong) for `--ws-send-timeout` is disconnected rather than buffered for.

mod conn;
pub mod connect;
pub mod frames;
mod stream;
mod upgrade;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tokio::sync::Semaphore;

pub use upgrade::{root, ws_only};

use crate::limits::WsLimits;

/// The protocol version clawgate speaks.
pub const PROTOCOL_VERSION: u64 = 4;

/// Close codes: normal (OpenClaw closes a bad first frame that is not JSON, or a handshake that
/// timed out, with it), protocol error, policy violation (bad handshake or auth), message too big.
pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_PROTOCOL: u16 = 1002;
pub const CLOSE_POLICY: u16 = 1008;
pub const CLOSE_TOO_BIG: u16 = 1009;

/// Events a client may receive.
pub const EVENTS: [&str; 4] = ["connect.challenge", "tick", "usage.updated", "usage.budget"];

/// Largest WebSocket frame sent: bigger messages go out as fragments of this size. A frame is
/// formatted into the connection's write buffer before it is written, so this also bounds that
/// buffer (twenty dashboards: under 2 MB of buffers).
pub(crate) const FRAGMENT: usize = 64 << 10;

/// See [`WsShared::bulk`]: one sender at a time keeps the other runtime thread free for probes
/// and small frames; a permit is held only while one fragment is copied, never while waiting
/// for a slow client, so one client cannot hold up the others.
const BULK_SENDERS: usize = 1;

/// State shared by every WebSocket connection.
pub struct WsShared {
    pub limits: WsLimits,
    /// Connections copying a fragment of a large message into their socket at this moment: at
    /// most [`BULK_SENDERS`]. Twenty dashboards receiving an 8 MB answer at once would otherwise
    /// all be runnable together, and a probe would wait behind all of them for a runtime thread.
    pub bulk: Arc<Semaphore>,
    /// This process's boot id (`hello-ok.server.bootId`): a client sees a restart as a new id.
    pub boot_id: String,
    /// Ticks are sent on one gateway-wide beat from here, as OpenClaw's one interval timer: a
    /// client's first tick comes within one interval of connecting, not a full interval after.
    pub ticks_from: Instant,
}

impl WsShared {
    pub fn new(limits: WsLimits) -> WsShared {
        WsShared {
            limits,
            bulk: Arc::new(Semaphore::new(BULK_SENDERS)),
            boot_id: uuid::Uuid::new_v4().to_string(),
            ticks_from: Instant::now(),
        }
    }

    /// The next tick instant at or after `now` on the gateway-wide beat.
    pub fn next_tick(&self, now: Instant) -> Instant {
        let period = self.limits.tick_interval.max(Duration::from_millis(1));
        let since = now.saturating_duration_since(self.ticks_from);
        let beats = since.as_nanos().div_ceil(period.as_nanos()).max(1);
        self.ticks_from + period * u32::try_from(beats).unwrap_or(u32::MAX)
    }

    /// The `websocket` part of the status page.
    pub fn status_json(&self) -> Value {
        json!({
            "protocol": PROTOCOL_VERSION,
            "tickIntervalMs": self.limits.tick_interval.as_millis() as u64,
            "maxPayload": self.limits.max_payload,
            "preauthMaxPayload": self.limits.preauth_max_payload,
            "maxBufferedBytes": self.limits.max_buffered_bytes,
            "sendTimeoutMs": self.limits.send_timeout.as_millis() as u64,
        })
    }
}

/// Method names as metric labels: a method clawgate serves, `connect`, or `other`, never text a
/// client made up (each distinct label is a time series kept for good).
pub fn metric_label(method: &str) -> &'static str {
    crate::api::METHODS.iter().copied().find(|m| *m == method).unwrap_or(if method == "connect" {
        "connect"
    } else {
        "other"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_share_one_beat() {
        let shared =
            WsShared::new(WsLimits { tick_interval: Duration::from_secs(30), ..WsLimits::default() });
        let t0 = shared.ticks_from;
        assert_eq!(shared.next_tick(t0), t0 + Duration::from_secs(30));
        assert_eq!(shared.next_tick(t0 + Duration::from_secs(20)), t0 + Duration::from_secs(30));
        assert_eq!(shared.next_tick(t0 + Duration::from_secs(31)), t0 + Duration::from_secs(60));
    }

    #[test]
    fn labels_are_bounded() {
        assert_eq!(metric_label("sessions.usage"), "sessions.usage");
        assert_eq!(metric_label("connect"), "connect");
        assert_eq!(metric_label("/evil/1"), "other");
        assert_eq!(metric_label("chat.send"), "other");
    }
}
