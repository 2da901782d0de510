//! OpenClaw's Gateway protocol v4 over WebSocket (REFERENCE §4), at `/` and `/ws`, so OpenClaw's
//! own clients (CLI `gateway call`, Control UI, `openclaw-node`) work against clawgate unmodified.
//!
//! Per connection: the server sends `connect.challenge {nonce, ts}`; the first frame must be a
//! `connect` request (at most 64 KiB, else close 1009) with a protocol range including 4 (else
//! `INVALID_REQUEST` "protocol mismatch" and close 1002), client info, and the token or password
//! when one is configured (else close 1008). A device identity, when sent, must verify
//! (`device.rs`); loopback clients may omit it. The answer is `hello-ok`; then `tick` events every
//! `tickIntervalMs`, `usage.updated` events, and `res` frames for requests. Requests run as tasks
//! owned by the connection: when it closes they are dropped, which cancels worker jobs nobody else
//! waits for. Usage answers are spliced into `res` frames as text, never re-parsed or copied per
//! client: a frame over 64 KiB goes out as WebSocket fragments that point into the cached answer,
//! so twenty dashboards reading one 8 MB answer share one copy of it and each connection's write
//! buffer stays near 64 KiB (an unfragmented frame would grow it to the frame's size for good).
//! That is why the upgrade is done here with tokio-tungstenite rather than axum's `WebSocket`,
//! which cannot send fragments. Outgoing bytes queued per connection are bounded by
//! `maxBufferedBytes` (requests wait for room), and a client that stops reading for 30 s is dropped.
//!
//! Also here: the failed-authentication limiter (per IP, HTTP 429 once exceeded) and the browser
//! `Origin` check that keeps other web pages from reading a token-less loopback gateway.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Body,
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, broadcast::error::RecvError, mpsc},
    task::JoinSet,
};
use tokio_tungstenite::WebSocketStream;
use tungstenite::{
    Message, Utf8Bytes,
    handshake::derive_accept_key,
    protocol::{
        CloseFrame, Role, WebSocketConfig,
        frame::{
            Frame,
            coding::{Data as OpData, OpCode},
        },
    },
};

use crate::{
    AppState,
    api::{self, ApiError, ErrorCode, Reply},
    device,
};

/// The protocol version clawgate speaks.
pub const PROTOCOL_VERSION: u64 = 4;
/// Close codes: policy violation (bad handshake or auth), message too big, protocol error,
/// unsupported data.
pub const CLOSE_POLICY: u16 = 1008;
pub const CLOSE_TOO_BIG: u16 = 1009;
pub const CLOSE_PROTOCOL: u16 = 1002;
pub const CLOSE_UNSUPPORTED: u16 = 1003;

/// Events a client may receive.
pub const EVENTS: [&str; 3] = ["connect.challenge", "tick", "usage.updated"];

/// OpenClaw's `client.id` and `client.mode` enums (`client-info.ts`).
const CLIENT_IDS: [&str; 13] = [
    "webchat-ui",
    "openclaw-control-ui",
    "openclaw-tui",
    "webchat",
    "cli",
    "gateway-client",
    "openclaw-macos",
    "openclaw-ios",
    "openclaw-android",
    "node-host",
    "test",
    "fingerprint",
    "openclaw-probe",
];
const CLIENT_MODES: [&str; 7] = ["webchat", "cli", "ui", "backend", "node", "probe", "test"];

/// WebSocket limits and timers.
#[derive(Debug, Clone)]
pub struct WsConfig {
    pub tick_interval: Duration,
    /// Time from open to a completed `connect` (OpenClaw's preauth timeout).
    pub handshake_timeout: Duration,
    /// Largest frame before `connect` succeeds (OpenClaw's `MAX_PREAUTH_PAYLOAD_BYTES`).
    pub preauth_max_payload: usize,
    /// Largest incoming frame after `connect` (`policy.maxPayload`): requests are small params.
    pub max_payload: usize,
    /// Outgoing bytes that may wait per connection (`policy.maxBufferedBytes`).
    pub max_buffered_bytes: usize,
    /// Requests running at once per connection; beyond it `UNAVAILABLE` at once.
    pub max_in_flight: usize,
    /// A send that cannot complete in this time drops the connection (client not reading).
    pub send_timeout: Duration,
}

impl Default for WsConfig {
    fn default() -> WsConfig {
        WsConfig {
            tick_interval: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(15),
            preauth_max_payload: 64 << 10,
            max_payload: 1 << 20,
            max_buffered_bytes: 50 << 20,
            max_in_flight: 32,
            send_timeout: Duration::from_secs(30),
        }
    }
}

/// Shared WebSocket state.
pub struct WsShared {
    pub config: WsConfig,
    pub limiter: AuthLimiter,
    /// Connections copying a fragment of a large message into their socket at this moment: at
    /// most [`BULK_SENDERS`]. Twenty dashboards receiving an 8 MB answer at once would otherwise
    /// all be runnable together, and a probe would wait behind all of them for a runtime thread.
    pub bulk: Arc<Semaphore>,
}

/// See [`WsShared::bulk`]: one sender at a time keeps the other runtime thread free for probes
/// and small frames; a permit is held only while one fragment is copied, never while waiting
/// for a slow client, so one client cannot hold up the others.
const BULK_SENDERS: usize = 1;

/// Largest WebSocket frame sent: bigger messages go out as fragments of this size. A frame is
/// formatted into the connection's write buffer before it is written, so this also bounds
/// that buffer (twenty dashboards: under 2 MB of buffers).
const FRAGMENT: usize = 64 << 10;

impl WsShared {
    pub fn new(config: WsConfig) -> WsShared {
        WsShared {
            config,
            limiter: AuthLimiter::new(20, Duration::from_secs(60)),
            bulk: Arc::new(Semaphore::new(BULK_SENDERS)),
        }
    }

    pub fn status_json(&self) -> Value {
        json!({
            "protocol": PROTOCOL_VERSION,
            "tickIntervalMs": self.config.tick_interval.as_millis() as u64,
            "maxPayload": self.config.max_payload,
            "maxBufferedBytes": self.config.max_buffered_bytes,
            "blockedClients": self.limiter.blocked_count(),
        })
    }
}

/// Counts failed authentications per client IP; past `max_failures` within `window` the IP is
/// refused with 429 until the window ends.
pub struct AuthLimiter {
    max_failures: u32,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl AuthLimiter {
    pub fn new(max_failures: u32, window: Duration) -> AuthLimiter {
        AuthLimiter { max_failures, window, failures: Mutex::new(HashMap::new()) }
    }

    /// `Some(retry after)` while `ip` is over the limit.
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let failures = self.failures.lock().expect("auth limiter");
        let (since, count) = failures.get(&ip)?;
        let left = self.window.checked_sub(since.elapsed())?;
        (*count >= self.max_failures).then_some(left)
    }

    pub fn record_failure(&self, ip: IpAddr) {
        let mut failures = self.failures.lock().expect("auth limiter");
        if failures.len() > 4096 {
            let window = self.window;
            failures.retain(|_, (since, _)| since.elapsed() < window);
        }
        let slot = failures.entry(ip).or_insert((Instant::now(), 0));
        if slot.0.elapsed() >= self.window {
            *slot = (Instant::now(), 0);
        }
        slot.1 = slot.1.saturating_add(1);
    }

    fn blocked_count(&self) -> usize {
        let failures = self.failures.lock().expect("auth limiter");
        failures
            .values()
            .filter(|(since, n)| *n >= self.max_failures && since.elapsed() < self.window)
            .count()
    }
}

fn peer_of(request: &Request) -> Option<SocketAddr> {
    request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}

fn too_many(retry_after: Duration) -> Response {
    let error = ApiError {
        code: ErrorCode::Overloaded,
        message: "too many failed authentication attempts; retry later".into(),
        retry_after: Some(retry_after),
    };
    let mut response = error.into_response();
    if let Ok(value) = retry_after.as_secs().max(1).to_string().parse() {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// Middleware: refuses clients over the failed-auth limit (probes stay open) and counts 401s.
pub async fn limit_failed_auth(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let ip = peer_of(&request).map(|p| p.ip());
    let probe = matches!(request.uri().path(), "/healthz" | "/health" | "/readyz" | "/ready");
    if let (Some(ip), false) = (ip, probe) {
        if let Some(after) = state.ws.limiter.blocked(ip) {
            return too_many(after);
        }
    }
    let response = next.run(request).await;
    if response.status() == StatusCode::UNAUTHORIZED {
        state.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
        if let Some(ip) = ip {
            state.ws.limiter.record_failure(ip);
        }
    }
    response
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// `GET /`: the dashboard for browsers, the protocol for WebSocket upgrades (as OpenClaw's port).
pub async fn root(State(state): State<AppState>, request: Request) -> Response {
    if is_upgrade(request.headers()) {
        upgrade(state, request).await
    } else {
        crate::dashboard::index().await.into_response()
    }
}

/// `GET /ws`: WebSocket only.
pub async fn ws_only(State(state): State<AppState>, request: Request) -> Response {
    if is_upgrade(request.headers()) {
        upgrade(state, request).await
    } else {
        (StatusCode::UPGRADE_REQUIRED, "this endpoint speaks OpenClaw's protocol v4 over WebSocket\n")
            .into_response()
    }
}

/// A browser page may connect only from this gateway's own origin or a loopback origin;
/// non-browser clients send no `Origin`.
fn origin_allowed(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return true };
    let Some(authority) = origin.split_once("://").map(|(_, rest)| rest.trim_end_matches('/')) else {
        return false;
    };
    if headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|host| host.eq_ignore_ascii_case(authority))
    {
        return true;
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

async fn upgrade(state: AppState, request: Request) -> Response {
    let peer = peer_of(&request);
    if let Some(after) = peer.and_then(|p| state.ws.limiter.blocked(p.ip())) {
        return too_many(after);
    }
    if !origin_allowed(request.headers()) {
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    let accept = match accept_key(&request) {
        Ok(accept) => accept,
        Err((status, why)) => return (status, format!("{why}\n")).into_response(),
    };
    let on_upgrade = hyper::upgrade::on(request);
    let max = state.ws.config.max_payload;
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        // Requests are small JSON frames; the buffer grows for a big one and is reused.
        .read_buffer_size(8 << 10)
        // Write each frame out at once (no coalescing), so the buffer holds one frame at most.
        .write_buffer_size(0);
    let runtime = state.config.bulk_runtime.clone();
    let run = async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => return tracing::debug!(%error, "WebSocket upgrade did not complete."),
        };
        // Take the socket back from hyper and register it with the I/O driver of the runtime
        // this runs on: every frame and ACK of a big answer then wakes only these threads.
        let parts = match upgraded.downcast::<TokioIo<tokio::net::TcpStream>>() {
            Ok(parts) => parts,
            Err(_) => return tracing::error!("WebSocket upgrade on an unexpected connection type; closed."),
        };
        let tcp = match parts.io.into_inner().into_std().and_then(tokio::net::TcpStream::from_std) {
            Ok(tcp) => tcp,
            Err(error) => return tracing::warn!(%error, "Cannot move an upgraded WebSocket; closed."),
        };
        let socket =
            WebSocketStream::from_partially_read(tcp, parts.read_buf.to_vec(), Role::Server, Some(config))
                .await;
        connection(socket, state, peer).await;
    };
    match runtime {
        Some(runtime) => drop(runtime.spawn(run)),
        None => drop(tokio::spawn(run)),
    }
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Checks an upgrade request (RFC 6455 §4.2.1) and returns its `Sec-WebSocket-Accept`.
fn accept_key(request: &Request) -> Result<String, (StatusCode, &'static str)> {
    let refuse = |status: StatusCode, why: &'static str| Err((status, why));
    if request.method() != Method::GET {
        return refuse(StatusCode::METHOD_NOT_ALLOWED, "a WebSocket upgrade must be a GET");
    }
    let headers = request.headers();
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if !connection_upgrade {
        return refuse(StatusCode::BAD_REQUEST, "Connection header did not include 'upgrade'");
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v.as_bytes() != b"13") {
        return refuse(StatusCode::BAD_REQUEST, "Sec-WebSocket-Version must be 13");
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return refuse(StatusCode::BAD_REQUEST, "Sec-WebSocket-Key header missing");
    };
    if request.extensions().get::<hyper::upgrade::OnUpgrade>().is_none() {
        return refuse(StatusCode::UPGRADE_REQUIRED, "this connection cannot be upgraded");
    }
    Ok(derive_accept_key(key.as_bytes()))
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A random UUID v4 (nonces, connection ids).
pub fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness (never on Linux): time and a counter at least keep nonces distinct.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let n = u128::from(COUNTER.fetch_add(1, Ordering::Relaxed));
        b = (t ^ (n << 64)).to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// A JSON string literal.
fn quote(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

/// `{"type":"res","id":…,"ok":false,"error":…}`.
pub fn res_error(id: &str, error: &Value) -> String {
    format!(r#"{{"type":"res","id":{},"ok":false,"error":{error}}}"#, quote(id))
}

/// `{"type":"res","id":…,"ok":true,"payload":…}` from JSON text.
pub fn res_ok(id: &str, payload_json: &str) -> String {
    format!(r#"{{"type":"res","id":{},"ok":true,"payload":{payload_json}}}"#, quote(id))
}

/// A `res` frame around a worker answer's pieces, which are shared, not copied.
fn res_ok_chunks(id: &str, chunks: Vec<Bytes>) -> Vec<Bytes> {
    let head = format!(r#"{{"type":"res","id":{},"ok":true,"payload":"#, quote(id));
    let mut pieces = Vec::with_capacity(chunks.len() + 2);
    pieces.push(Bytes::from(head));
    pieces.extend(chunks);
    pieces.push(Bytes::from_static(b"}"));
    pieces
}

/// Renders a method's reply as the pieces of a `res` frame.
fn render_reply(id: &str, reply: &Result<Reply, ApiError>) -> Vec<Bytes> {
    match reply {
        Ok(Reply::Json(payload)) => vec![Bytes::from(res_ok(id, &payload.to_string()))],
        Ok(Reply::Usage(served)) => res_ok_chunks(id, served.chunks()),
        Err(error) => vec![Bytes::from(res_error(id, &error.body()))],
    }
}

/// Splits a message's pieces into WebSocket frames of at most [`FRAGMENT`] bytes: one text frame,
/// or a text frame and continuations. The slices share the pieces' memory. Fragments may cut a
/// UTF-8 sequence; RFC 6455 checks text only once the message is whole.
fn fragments(pieces: Vec<Bytes>) -> Result<Vec<Message>, std::str::Utf8Error> {
    let total: usize = pieces.iter().map(Bytes::len).sum();
    if total <= FRAGMENT {
        let text = match <[Bytes; 1]>::try_from(pieces) {
            Ok([one]) => one,
            Err(pieces) => Bytes::from(pieces.concat()),
        };
        return Ok(vec![Message::Text(Utf8Bytes::try_from(text)?)]);
    }
    let mut slices = Vec::with_capacity(total / FRAGMENT + pieces.len() + 1);
    for piece in pieces.into_iter().filter(|p| !p.is_empty()) {
        let mut at = 0;
        while at < piece.len() {
            let end = (at + FRAGMENT).min(piece.len());
            slices.push(piece.slice(at..end));
            at = end;
        }
    }
    let last = slices.len() - 1;
    Ok(slices
        .into_iter()
        .enumerate()
        .map(|(i, slice)| {
            let opcode = if i == 0 { OpCode::Data(OpData::Text) } else { OpCode::Data(OpData::Continue) };
            Message::Frame(Frame::message(slice, opcode, i == last))
        })
        .collect())
}

/// An error shape with `details`.
fn error_with_details(code: &str, message: &str, details: Value) -> Value {
    json!({"code": code, "message": message, "details": details})
}

/// Why a `connect` was refused: the error for the `res` frame and how to close.
#[derive(Debug, Clone)]
pub struct HandshakeError {
    pub error: Value,
    pub close_code: u16,
    pub close_reason: &'static str,
    /// Counts against the failed-auth limit.
    pub auth_failure: bool,
}

impl HandshakeError {
    fn invalid(message: String) -> HandshakeError {
        HandshakeError {
            error: json!({"code": "INVALID_REQUEST", "message": message}),
            close_code: CLOSE_POLICY,
            close_reason: "invalid connect params",
            auth_failure: false,
        }
    }
}

/// Who is connected, after a successful `connect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub client_id: String,
    pub client_mode: String,
    pub client_version: String,
    pub role: String,
    pub scopes: Vec<String>,
    pub device_id: Option<String>,
}

impl Session {
    /// `health` is always allowed; usage needs an operator scope (clawgate serves reads only).
    pub fn authorize(&self, method: &str) -> Result<(), ApiError> {
        if method == "health" || !api::METHODS.contains(&method) {
            return Ok(());
        }
        if self.role == "node" {
            return Err(ApiError::invalid(format!("unauthorized role: {}", self.role)));
        }
        let ok = self
            .scopes
            .iter()
            .any(|s| matches!(s.as_str(), "operator.read" | "operator.write" | "operator.admin"));
        if ok { Ok(()) } else { Err(ApiError::invalid("missing scope: operator.read")) }
    }
}

/// What the server knows when checking `connect`.
#[derive(Debug, Clone)]
pub struct ConnectContext<'a> {
    pub nonce: &'a str,
    /// The configured token (also accepted as a password); `None`: auth mode none.
    pub token: Option<&'a str>,
    pub peer_loopback: bool,
    pub now_ms: i64,
}

fn check_keys(obj: &Map<String, Value>, allowed: &[&str], at: &str) -> Result<(), HandshakeError> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(HandshakeError::invalid(format!(
            "invalid connect params: at {at}: unexpected property '{k}'"
        ))),
        None => Ok(()),
    }
}

fn opt_str<'a>(obj: &'a Map<String, Value>, name: &str, at: &str) -> Result<Option<&'a str>, HandshakeError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => {
            Err(HandshakeError::invalid(format!("invalid connect params: at {at}: {name} must be a string")))
        }
    }
}

fn req_str<'a>(obj: &'a Map<String, Value>, name: &str, at: &str) -> Result<&'a str, HandshakeError> {
    opt_str(obj, name, at)?.filter(|s| !s.is_empty()).ok_or_else(|| {
        HandshakeError::invalid(format!(
            "invalid connect params: at {at}: must have required property '{name}'"
        ))
    })
}

fn str_list(obj: &Map<String, Value>, name: &str) -> Result<Vec<String>, HandshakeError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => {
            items.iter().map(|v| v.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>().ok_or_else(|| {
                HandshakeError::invalid(format!(
                    "invalid connect params: at root: {name} must be an array of strings"
                ))
            })
        }
        Some(_) => Err(HandshakeError::invalid(format!(
            "invalid connect params: at root: {name} must be an array of strings"
        ))),
    }
}

fn sub_object<'a>(
    obj: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a Map<String, Value>>, HandshakeError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => {
            Err(HandshakeError::invalid(format!("invalid connect params: at root: {name} must be an object")))
        }
    }
}

/// Validates `connect` params and authenticates; the pure part of the handshake.
pub fn check_connect(params: &Value, ctx: &ConnectContext<'_>) -> Result<Session, HandshakeError> {
    let Value::Object(p) = params else {
        return Err(HandshakeError::invalid("invalid connect params: params must be an object".into()));
    };
    check_keys(
        p,
        &[
            "minProtocol",
            "maxProtocol",
            "client",
            "caps",
            "commands",
            "permissions",
            "pathEnv",
            "role",
            "scopes",
            "device",
            "auth",
            "locale",
            "userAgent",
        ],
        "root",
    )?;
    let protocol = |name: &str| {
        p.get(name).and_then(Value::as_u64).ok_or_else(|| {
            HandshakeError::invalid(format!(
                "invalid connect params: at root: {name} must be an integer >= 1"
            ))
        })
    };
    let (min, max) = (protocol("minProtocol")?, protocol("maxProtocol")?);
    let client = sub_object(p, "client")?.ok_or_else(|| {
        HandshakeError::invalid(
            "invalid connect params: at root: must have required property 'client'".into(),
        )
    })?;
    check_keys(
        client,
        &[
            "id",
            "displayName",
            "version",
            "platform",
            "deviceFamily",
            "modelIdentifier",
            "mode",
            "instanceId",
        ],
        "/client",
    )?;
    let client_id = req_str(client, "id", "/client")?;
    let client_mode = req_str(client, "mode", "/client")?;
    let client_version = req_str(client, "version", "/client")?;
    let platform = req_str(client, "platform", "/client")?;
    for name in ["displayName", "deviceFamily", "modelIdentifier", "instanceId"] {
        opt_str(client, name, "/client")?;
    }
    if !CLIENT_IDS.contains(&client_id) {
        return Err(HandshakeError::invalid(format!(
            "invalid connect params: at /client/id: must be one of {}",
            CLIENT_IDS.join(", ")
        )));
    }
    if !CLIENT_MODES.contains(&client_mode) {
        return Err(HandshakeError::invalid(format!(
            "invalid connect params: at /client/mode: must be one of {}",
            CLIENT_MODES.join(", ")
        )));
    }
    let device_family = opt_str(client, "deviceFamily", "/client")?.unwrap_or("");
    let caps = str_list(p, "caps")?;
    let _ = (caps, str_list(p, "commands")?, sub_object(p, "permissions")?);
    for name in ["pathEnv", "locale", "userAgent"] {
        opt_str(p, name, "root")?;
    }
    let role = opt_str(p, "role", "root")?.unwrap_or("operator");
    if !matches!(role, "operator" | "node") {
        return Err(HandshakeError::invalid(format!(
            "invalid connect params: at root: unknown role \"{role}\""
        )));
    }
    let requested_scopes = str_list(p, "scopes")?;
    let empty = Map::new();
    let auth = sub_object(p, "auth")?.unwrap_or(&empty);
    check_keys(
        auth,
        &["token", "bootstrapToken", "deviceToken", "password", "approvalRuntimeToken"],
        "/auth",
    )?;
    let cred = |name: &str| opt_str(auth, name, "/auth").map(|v| v.filter(|s| !s.is_empty()));
    let (token, password) = (cred("token")?, cred("password")?);
    let (device_token, bootstrap_token) = (cred("deviceToken")?, cred("bootstrapToken")?);
    cred("approvalRuntimeToken")?;
    let device = sub_object(p, "device")?;

    if !(min <= PROTOCOL_VERSION && PROTOCOL_VERSION <= max) {
        return Err(HandshakeError {
            error: error_with_details(
                "INVALID_REQUEST",
                "protocol mismatch",
                json!({
                    "code": "PROTOCOL_MISMATCH",
                    "clientMinProtocol": min,
                    "clientMaxProtocol": max,
                    "expectedProtocol": PROTOCOL_VERSION,
                }),
            ),
            close_code: CLOSE_PROTOCOL,
            close_reason: "protocol mismatch",
            auth_failure: false,
        });
    }

    if let Some(expected) = ctx.token {
        let auth_error = |message: &str, code: &str, reason: &str| HandshakeError {
            error: error_with_details(
                "INVALID_REQUEST",
                message,
                json!({
                    "code": code,
                    "authReason": reason,
                    "canRetryWithDeviceToken": false,
                    "recommendedNextStep": "pass the clawgate token (--token / CLAWGATE_TOKEN) as auth.token",
                }),
            ),
            close_code: CLOSE_POLICY,
            close_reason: "unauthorized",
            auth_failure: true,
        };
        match token.or(password) {
            None => {
                return Err(auth_error(
                    "unauthorized: gateway token missing",
                    "AUTH_TOKEN_MISSING",
                    "token_missing",
                ));
            }
            Some(given) if !api::constant_time_eq(given.as_bytes(), expected.as_bytes()) => {
                return Err(auth_error(
                    "unauthorized: gateway token mismatch",
                    "AUTH_TOKEN_MISMATCH",
                    "token_mismatch",
                ));
            }
            Some(_) => {}
        }
    }

    let device_id = match device {
        Some(d) => {
            check_keys(d, &["id", "publicKey", "signature", "signedAt", "nonce"], "/device")?;
            let signed_at = d.get("signedAt").and_then(Value::as_i64).ok_or_else(|| {
                HandshakeError::invalid(
                    "invalid connect params: at /device: signedAt must be an integer".into(),
                )
            })?;
            let claim = device::DeviceClaim {
                id: req_str(d, "id", "/device")?,
                public_key: req_str(d, "publicKey", "/device")?,
                signature: req_str(d, "signature", "/device")?,
                signed_at_ms: signed_at,
                nonce: opt_str(d, "nonce", "/device")?,
            };
            let signed = device::SignedContext {
                challenge_nonce: ctx.nonce,
                client_id,
                client_mode,
                role,
                scopes: &requested_scopes,
                token: token.or(device_token).or(bootstrap_token).unwrap_or(""),
                platform,
                device_family,
            };
            match device::verify(&claim, &signed, ctx.now_ms) {
                Ok(verified) => Some(verified.id),
                Err(e) => {
                    return Err(HandshakeError {
                        error: error_with_details(
                            "INVALID_REQUEST",
                            &e.to_string(),
                            json!({"code": e.code(), "reason": e.code()}),
                        ),
                        close_code: CLOSE_POLICY,
                        close_reason: "device identity refused",
                        auth_failure: true,
                    });
                }
            }
        }
        None if ctx.peer_loopback => None,
        None => {
            return Err(HandshakeError {
                error: error_with_details(
                    "NOT_PAIRED",
                    "device identity required for non-loopback clients",
                    json!({"code": "DEVICE_IDENTITY_REQUIRED"}),
                ),
                close_code: CLOSE_POLICY,
                close_reason: "device identity required",
                auth_failure: false,
            });
        }
    };
    let scopes =
        if requested_scopes.is_empty() { vec!["operator.read".to_owned()] } else { requested_scopes };
    Ok(Session {
        client_id: client_id.to_owned(),
        client_mode: client_mode.to_owned(),
        client_version: client_version.to_owned(),
        role: role.to_owned(),
        scopes,
        device_id,
    })
}

/// The `hello-ok` payload.
pub fn hello_ok(state: &AppState, session: &Session, conn_id: &str) -> Value {
    let cfg = &state.ws.config;
    json!({
        "type": "hello-ok",
        "protocol": PROTOCOL_VERSION,
        "server": {"version": env!("CARGO_PKG_VERSION"), "connId": conn_id},
        "features": {"methods": api::METHODS, "events": EVENTS},
        "snapshot": {
            "presence": [],
            "health": api::health_json(state),
            "stateVersion": {"presence": 0, "health": 0},
            "uptimeMs": state.uptime_ms(),
            "stateDir": state.config.state_dir,
            "sessionDefaults": {"defaultAgentId": "main", "mainKey": "main", "mainSessionKey": "agent:main:main"},
            "authMode": if state.config.token.is_some() { "token" } else { "none" },
        },
        "auth": {"role": session.role, "scopes": session.scopes},
        "policy": {
            "maxPayload": cfg.max_payload,
            "maxBufferedBytes": cfg.max_buffered_bytes,
            "tickIntervalMs": cfg.tick_interval.as_millis() as u64,
        },
    })
}

/// An outgoing message (its pieces) with its share of the connection's byte budget.
struct Outgoing {
    pieces: Vec<Bytes>,
    _permit: OwnedSemaphorePermit,
}

type Socket = WebSocketStream<tokio::net::TcpStream>;

struct Conn {
    socket: Socket,
    state: AppState,
    /// Per-client event sequence (after `hello-ok`).
    seq: u64,
}

impl Conn {
    async fn send(&mut self, frame: String) -> bool {
        self.send_pieces(vec![Bytes::from(frame)]).await
    }

    /// Sends one text message made of `pieces`, fragmented when large; `false` when the client
    /// is gone or did not take it within the send timeout.
    async fn send_pieces(&mut self, pieces: Vec<Bytes>) -> bool {
        let frames = match fragments(pieces) {
            Ok(frames) => frames,
            Err(error) => {
                tracing::error!(%error, "Refusing to send a text frame that is not UTF-8.");
                return false;
            }
        };
        let socket = &mut self.socket;
        let bulk = Arc::clone(&self.state.ws.bulk);
        let send_all = async move {
            if frames.len() == 1 {
                for frame in frames {
                    socket.send(frame).await?;
                }
                return Ok(());
            }
            for frame in frames {
                // Wait for the client to take what was sent so far (no permit held), then copy
                // one fragment with a permit (pure CPU: the sink is ready after a flush), then
                // let other tasks run: see `WsShared::bulk`.
                socket.flush().await?;
                let Ok(permit) = bulk.acquire().await else { break };
                socket.feed(frame).await?;
                drop(permit);
                tokio::task::yield_now().await;
            }
            socket.flush().await
        };
        matches!(tokio::time::timeout(self.state.ws.config.send_timeout, send_all).await, Ok(Ok(())))
    }

    async fn send_event(&mut self, event: &str, payload_json: &str) -> bool {
        self.seq += 1;
        let frame = format!(
            r#"{{"type":"event","event":{},"payload":{payload_json},"seq":{}}}"#,
            quote(event),
            self.seq
        );
        self.send(frame).await
    }

    /// Sends a close frame, then reads until the client answers it (1 s at most), so the close
    /// frame is not lost to a reset.
    async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame { code: code.into(), reason: reason.into() };
        let _ =
            tokio::time::timeout(Duration::from_secs(1), self.socket.send(Message::Close(Some(frame)))).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(Ok(msg)) = self.socket.next().await {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

/// Decrements the open-connection gauge however the connection ends.
struct Open(AppState);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.metrics.ws_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn connection(socket: Socket, state: AppState, peer: Option<SocketAddr>) {
    state.metrics.ws_connections.fetch_add(1, Ordering::Relaxed);
    state.metrics.ws_connections_total.fetch_add(1, Ordering::Relaxed);
    let _open = Open(state.clone());
    let conn_id = uuid_v4();
    let nonce = uuid_v4();
    let mut conn = Conn { socket, state: state.clone(), seq: 0 };
    let challenge =
        json!({"type": "event", "event": "connect.challenge", "payload": {"nonce": nonce, "ts": now_ms()}});
    if !conn.send(challenge.to_string()).await {
        return;
    }
    let started = Instant::now();
    let handshake =
        tokio::time::timeout(state.ws.config.handshake_timeout, handshake(&mut conn, &nonce, &conn_id, peer))
            .await;
    let session = match handshake {
        Ok(Some(session)) => session,
        Ok(None) => {
            state.metrics.observe("ws", "connect", "refused", started.elapsed());
            return;
        }
        Err(_) => {
            state.metrics.observe("ws", "connect", "timeout", started.elapsed());
            conn.close(CLOSE_POLICY, "handshake timeout").await;
            return;
        }
    };
    state.metrics.observe("ws", "connect", "ok", started.elapsed());
    tracing::info!(conn_id = %conn_id, client = %session.client_id, mode = %session.client_mode,
        version = %session.client_version, role = %session.role, device = session.device_id.as_deref().unwrap_or("-"),
        peer = ?peer, "WebSocket client connected.");
    serve(conn, session).await;
    tracing::debug!(conn_id = %conn_id, "WebSocket client gone.");
}

/// Reads the first frame and answers `hello-ok` or an error with the documented close code.
async fn handshake(conn: &mut Conn, nonce: &str, conn_id: &str, peer: Option<SocketAddr>) -> Option<Session> {
    let limit = conn.state.ws.config.preauth_max_payload;
    let text = loop {
        match conn.socket.next().await? {
            Ok(Message::Text(text)) if text.len() > limit => {
                conn.close(CLOSE_TOO_BIG, "preauth payload too large").await;
                return None;
            }
            Ok(Message::Text(text)) => break text,
            Ok(Message::Binary(data)) => {
                let (code, reason) = if data.len() > limit {
                    (CLOSE_TOO_BIG, "preauth payload too large")
                } else {
                    (CLOSE_POLICY, "invalid handshake: expected a JSON text frame")
                };
                conn.close(code, reason).await;
                return None;
            }
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
            Ok(Message::Close(_)) => return None,
            Err(error) => {
                if is_too_big(&error) {
                    conn.close(CLOSE_TOO_BIG, "preauth payload too large").await;
                }
                return None;
            }
        }
    };
    let frame: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(_) => {
            conn.close(CLOSE_POLICY, "invalid handshake: not JSON").await;
            return None;
        }
    };
    let id = frame.get("id").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
    let is_connect = frame.get("type").and_then(Value::as_str) == Some("req")
        && frame.get("method").and_then(Value::as_str) == Some("connect");
    let (Some(id), true) = (id.clone(), is_connect) else {
        if let Some(id) = id {
            let error = json!({"code": "INVALID_REQUEST", "message": "invalid handshake: first request must be connect"});
            conn.send(res_error(&id, &error)).await;
        }
        conn.close(CLOSE_POLICY, "invalid handshake").await;
        return None;
    };
    let state = conn.state.clone();
    let ctx = ConnectContext {
        nonce,
        token: state.config.token.as_deref(),
        peer_loopback: peer.is_some_and(|p| p.ip().is_loopback() || p.ip().to_canonical().is_loopback()),
        now_ms: now_ms(),
    };
    match check_connect(frame.get("params").unwrap_or(&Value::Null), &ctx) {
        Ok(session) => {
            let hello = hello_ok(&state, &session, conn_id);
            conn.send(res_ok(&id, &hello.to_string())).await.then_some(session)
        }
        Err(refused) => {
            if refused.auth_failure {
                state.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
                if let Some(peer) = peer {
                    state.ws.limiter.record_failure(peer.ip());
                }
            }
            tracing::info!(peer = ?peer, error = %refused.error, "WebSocket connect refused.");
            conn.send(res_error(&id, &refused.error)).await;
            conn.close(refused.close_code, refused.close_reason).await;
            None
        }
    }
}

fn is_too_big(error: &tungstenite::Error) -> bool {
    matches!(error, tungstenite::Error::Capacity(_))
}

/// The request loop after `hello-ok`.
async fn serve(mut conn: Conn, session: Session) {
    let state = conn.state.clone();
    let cfg = state.ws.config.clone();
    let (out_tx, mut out_rx) = mpsc::channel::<Outgoing>(256);
    let budget = Arc::new(Semaphore::new(cfg.max_buffered_bytes));
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut events = state.cache.subscribe();
    let period = cfg.tick_interval;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            incoming = conn.socket.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    if !on_request(&mut conn, &session, text.as_str(), &mut tasks, &out_tx, &budget).await {
                        break;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    conn.close(CLOSE_UNSUPPORTED, "binary frames are not supported").await;
                    break;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | None => break,
                Some(Err(error)) => {
                    if is_too_big(&error) {
                        conn.close(CLOSE_TOO_BIG, "payload too large").await;
                    }
                    break;
                }
            },
            Some(out) = out_rx.recv() => {
                if !conn.send_pieces(out.pieces).await {
                    break;
                }
            }
            _ = tick.tick() => {
                if !conn.send_event("tick", &format!(r#"{{"ts":{}}}"#, now_ms())).await {
                    break;
                }
            }
            event = events.recv() => match event {
                Ok(update) => {
                    if session.authorize("sessions.usage").is_ok() && !conn.send_event("usage.updated", &update.payload_json).await {
                        break;
                    }
                }
                Err(RecvError::Lagged(missed)) => tracing::debug!(missed, "A slow WebSocket client missed usage.updated events."),
                Err(RecvError::Closed) => events = state.cache.subscribe(),
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    // Dropping the tasks drops their waits on usage jobs: jobs nobody else waits for are cancelled.
    tasks.abort_all();
}

/// Handles one request frame; `false` ends the connection.
async fn on_request(
    conn: &mut Conn,
    session: &Session,
    text: &str,
    tasks: &mut JoinSet<()>,
    out_tx: &mpsc::Sender<Outgoing>,
    budget: &Arc<Semaphore>,
) -> bool {
    let started = Instant::now();
    let Ok(frame) = serde_json::from_str::<Value>(text) else {
        conn.close(CLOSE_POLICY, "invalid frame: not JSON").await;
        return false;
    };
    let id = frame.get("id").and_then(Value::as_str).filter(|s| !s.is_empty());
    let method = frame.get("method").and_then(Value::as_str);
    let is_req = frame.get("type").and_then(Value::as_str) == Some("req");
    let (Some(id), Some(method), true) = (id, method, is_req) else {
        if let Some(id) = id {
            let error =
                ApiError::invalid("invalid request frame: expected {type:\"req\", id, method, params?}");
            return conn.send(res_error(id, &error.body())).await;
        }
        tracing::debug!("Ignoring a WebSocket frame that is not a request.");
        return true;
    };
    let state = conn.state.clone();
    let refuse = if method == "connect" {
        Some(ApiError::invalid("connect already completed"))
    } else {
        session.authorize(method).err()
    };
    if let Some(error) = refuse {
        state.metrics.observe("ws", method, error.code.as_str(), started.elapsed());
        return conn.send(res_error(id, &error.body())).await;
    }
    let params = frame.get("params").cloned().unwrap_or(Value::Null);
    if matches!(method, "health" | "status") {
        // Answered inline from gateway state: never queued behind usage work.
        let reply = api::dispatch(&state, method, &params, api::Via::WebSocket).await;
        let pieces = render_reply(id, &reply);
        state.metrics.observe("ws", method, "ok", started.elapsed());
        return conn.send_pieces(pieces).await;
    }
    if tasks.len() >= state.ws.config.max_in_flight {
        let error = ApiError {
            code: ErrorCode::Overloaded,
            message: format!("{} requests already in flight on this connection", tasks.len()),
            retry_after: Some(Duration::from_millis(500)),
        };
        state.metrics.observe("ws", method, error.code.as_str(), started.elapsed());
        return conn.send(res_error(id, &error.body())).await;
    }
    let (id, method) = (id.to_owned(), method.to_owned());
    let (out_tx, budget) = (out_tx.clone(), Arc::clone(budget));
    let max_budget = state.ws.config.max_buffered_bytes;
    tasks.spawn(async move {
        let reply = api::dispatch(&state, &method, &params, api::Via::WebSocket).await;
        let outcome = match &reply {
            Ok(Reply::Usage(served)) => served.outcome.as_str(),
            Ok(Reply::Json(_)) => "ok",
            Err(error) => error.code.as_str(),
        };
        let pieces = render_reply(&id, &reply);
        drop(reply);
        state.metrics.observe("ws", &method, outcome, started.elapsed());
        let size = pieces.iter().map(Bytes::len).sum::<usize>();
        let Ok(permit) = budget.acquire_many_owned(size.clamp(1, max_budget) as u32).await else { return };
        let _ = out_tx.send(Outgoing { pieces, _permit: permit }).await;
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn params() -> Value {
        json!({
            "minProtocol": 4, "maxProtocol": 4,
            "client": {"id": "gateway-client", "version": "1.0", "platform": "linux", "mode": "backend"},
            "role": "operator", "scopes": ["operator.read"], "caps": [], "commands": [], "permissions": {},
            "auth": {"token": "s3cret"}, "locale": "en-US", "userAgent": "test"
        })
    }

    fn ctx(token: Option<&str>, loopback: bool) -> ConnectContext<'_> {
        ConnectContext { nonce: "n-1", token, peer_loopback: loopback, now_ms: 1_795_000_000_000 }
    }

    fn refused(params: &Value, ctx: &ConnectContext<'_>) -> HandshakeError {
        check_connect(params, ctx).expect_err("must be refused")
    }

    #[test]
    fn a_loopback_client_with_the_token_connects() {
        let session = check_connect(&params(), &ctx(Some("s3cret"), true)).unwrap();
        assert_eq!(session.scopes, vec!["operator.read"]);
        assert_eq!(session.device_id, None);
        assert!(session.authorize("sessions.usage").is_ok());
        // Password auth carries the same secret.
        let mut p = params();
        p["auth"] = json!({"password": "s3cret"});
        assert!(check_connect(&p, &ctx(Some("s3cret"), true)).is_ok());
    }

    #[test]
    fn protocol_mismatch_closes_1002_with_details() {
        let mut p = params();
        p["minProtocol"] = json!(1);
        p["maxProtocol"] = json!(3);
        let e = refused(&p, &ctx(Some("s3cret"), true));
        assert_eq!(e.close_code, CLOSE_PROTOCOL);
        assert_eq!(e.error["message"], "protocol mismatch");
        assert_eq!(e.error["details"]["expectedProtocol"], 4);
        assert_eq!(e.error["details"]["clientMaxProtocol"], 3);
        // A range that includes 4 is fine (the measuring client sent 1..99).
        p["maxProtocol"] = json!(99);
        assert!(check_connect(&p, &ctx(Some("s3cret"), true)).is_ok());
    }

    #[test]
    fn bad_tokens_close_1008_and_count_as_auth_failures() {
        let mut p = params();
        p["auth"] = json!({"token": "nope"});
        let e = refused(&p, &ctx(Some("s3cret"), true));
        assert_eq!((e.close_code, e.auth_failure), (CLOSE_POLICY, true));
        assert_eq!(e.error["code"], "INVALID_REQUEST");
        assert_eq!(e.error["details"]["code"], "AUTH_TOKEN_MISMATCH");
        p["auth"] = json!({});
        assert_eq!(refused(&p, &ctx(Some("s3cret"), true)).error["details"]["authReason"], "token_missing");
        // Auth mode none accepts anything (loopback only, enforced at startup).
        assert!(check_connect(&p, &ctx(None, true)).is_ok());
    }

    #[test]
    fn params_are_validated_with_clear_messages() {
        let cases: [(&str, Value, &str); 5] = [
            ("/extra", json!(1), "unexpected property 'extra'"),
            ("/client/id", json!("martian"), "at /client/id: must be one of"),
            ("/client/version", Value::Null, "must have required property 'version'"),
            ("/maxProtocol", json!("4"), "maxProtocol must be an integer"),
            ("/scopes", json!("operator.read"), "scopes must be an array of strings"),
        ];
        for (pointer, value, needle) in cases {
            let mut p = params();
            let (parent, name) = pointer.rsplit_once('/').unwrap();
            let target = if parent.is_empty() { &mut p } else { p.pointer_mut(parent).unwrap() };
            target[name] = value;
            let e = refused(&p, &ctx(Some("s3cret"), true));
            let message = e.error["message"].as_str().unwrap();
            assert!(message.starts_with("invalid connect params"), "{message}");
            assert!(message.contains(needle), "{pointer}: {message}");
            assert_eq!(e.close_code, CLOSE_POLICY);
        }
    }

    #[test]
    fn remote_clients_need_a_verified_device() {
        let e = refused(&params(), &ctx(Some("s3cret"), false));
        assert_eq!(e.error["details"]["code"], "DEVICE_IDENTITY_REQUIRED");

        let signing = SigningKey::from_bytes(&[9u8; 32]);
        let id = device::device_id(signing.verifying_key().as_bytes());
        let scopes = vec!["operator.read".to_owned()];
        let signed_ctx = device::SignedContext {
            challenge_nonce: "n-1",
            client_id: "gateway-client",
            client_mode: "backend",
            role: "operator",
            scopes: &scopes,
            token: "s3cret",
            platform: "linux",
            device_family: "",
        };
        let now = 1_795_000_000_000i64;
        let payload = device::payload_v3(&id, &signed_ctx, now, "n-1", "linux", "");
        let mut p = params();
        p["device"] = json!({
            "id": id, "publicKey": device::base64url(signing.verifying_key().as_bytes()),
            "signature": device::base64url(&signing.sign(payload.as_bytes()).to_bytes()),
            "signedAt": now, "nonce": "n-1",
        });
        let session = check_connect(&p, &ctx(Some("s3cret"), false)).unwrap();
        assert_eq!(session.device_id.as_deref(), Some(id.as_str()));
        // The same signature on another connection's challenge is refused.
        let e = refused(&p, &ConnectContext { nonce: "n-2", ..ctx(Some("s3cret"), false) });
        assert_eq!(e.error["details"]["code"], "DEVICE_AUTH_NONCE_MISMATCH");
        assert!(e.auth_failure);
    }

    #[test]
    fn scopes_and_roles_gate_usage_methods() {
        let mut session = check_connect(&params(), &ctx(None, true)).unwrap();
        session.scopes = vec!["operator.pairing".into()];
        assert_eq!(session.authorize("usage.cost").unwrap_err().message, "missing scope: operator.read");
        assert!(session.authorize("health").is_ok());
        session.role = "node".into();
        assert!(session.authorize("sessions.usage").is_err());
    }

    #[test]
    fn frames_splice_payload_text() {
        let chunks = vec![Bytes::from_static(br#"{"a":"#), Bytes::from_static(b"1}")];
        let frame = res_ok_chunks("x\"1", chunks).concat();
        let v: Value = serde_json::from_slice(&frame).unwrap();
        assert_eq!(v, json!({"type": "res", "id": "x\"1", "ok": true, "payload": {"a": 1}}));
        let e: Value = serde_json::from_str(&res_error("7", &json!({"code": "UNAVAILABLE"}))).unwrap();
        assert_eq!(e["ok"], false);
    }

    #[test]
    fn large_messages_go_out_as_fragments_that_share_the_answer() {
        let answer = Bytes::from(format!(r#"{{"rows":"{}é"}}"#, "x".repeat(3 * FRAGMENT)));
        let pieces = res_ok_chunks("7", vec![answer.clone()]);
        let whole = pieces.concat();
        let frames = fragments(pieces).expect("UTF-8");
        assert_eq!(frames.len(), 1 + answer.len().div_ceil(FRAGMENT) + 1, "head, answer slices, tail");
        let mut joined = Vec::new();
        for (i, message) in frames.iter().enumerate() {
            let Message::Frame(frame) = message else { panic!("frame {i} is not a raw frame") };
            let header = frame.header();
            let first = i == 0;
            assert_eq!(
                header.opcode,
                if first { OpCode::Data(OpData::Text) } else { OpCode::Data(OpData::Continue) }
            );
            assert_eq!(header.is_final, i == frames.len() - 1);
            assert!(frame.payload().len() <= FRAGMENT);
            joined.extend_from_slice(frame.payload());
        }
        assert_eq!(joined, whole);
        // The answer's slices point into the answer itself: no copy per client.
        let Message::Frame(second) = &frames[1] else { unreachable!() };
        assert_eq!(second.payload().as_ptr(), answer.as_ptr());
        // Small messages are one text frame; text that is not UTF-8 is refused.
        let small = fragments(vec![Bytes::from_static(b"{\"a\":"), Bytes::from_static(b"1}")]).unwrap();
        assert!(matches!(&small[..], [Message::Text(t)] if t.as_str() == r#"{"a":1}"#));
        assert!(fragments(vec![Bytes::from_static(b"\xff")]).is_err());
    }

    #[test]
    fn origins_and_the_limiter() {
        let mut h = HeaderMap::new();
        assert!(origin_allowed(&h));
        h.insert(header::HOST, "127.0.0.1:18790".parse().unwrap());
        h.insert(header::ORIGIN, "http://127.0.0.1:18790".parse().unwrap());
        assert!(origin_allowed(&h));
        h.insert(header::ORIGIN, "http://localhost:5173".parse().unwrap());
        assert!(origin_allowed(&h));
        h.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(!origin_allowed(&h));

        let limiter = AuthLimiter::new(2, Duration::from_secs(60));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        limiter.record_failure(ip);
        assert!(limiter.blocked(ip).is_none());
        limiter.record_failure(ip);
        assert!(limiter.blocked(ip).is_some());
        assert!(limiter.blocked("127.0.0.2".parse().unwrap()).is_none());
    }

    #[test]
    fn nonces_are_uuid_v4() {
        let (a, b) = (uuid_v4(), uuid_v4());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }
}
