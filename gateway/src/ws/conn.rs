//! One WebSocket connection: `connect.challenge`, the handshake (64 KiB frames at most), then
//! requests, ticks and `usage.updated` events until either side closes.
//!
//! Requests run as tasks owned by the connection: when it closes they are dropped, which
//! cancels worker jobs nobody else waits for. Answers wait for a share of the connection's
//! `maxBufferedBytes` before they are queued. A ping is answered by tungstenite, and its pong
//! flushed before the next frame is read: a client that sends pings and never reads stops being
//! read once its socket is full, and is dropped after the send timeout instead of having pongs
//! pile up. The write buffer is capped at two fragments for the same reason.

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, broadcast::error::RecvError, mpsc},
    task::JoinSet,
};
use tokio_tungstenite::WebSocketStream;
use tungstenite::{
    Message,
    protocol::{CloseFrame, Role, WebSocketConfig},
};

use super::{
    CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TOO_BIG, FRAGMENT,
    connect::{self, ConnectContext, OriginCheck, RequestFrame, Session},
    frames, metric_label,
    stream::PhasedStream,
};
use crate::{
    AppState,
    api::{self, Reply},
    auth,
    conns::Slot,
    error::{ApiError, ErrorCode},
};

type Socket = WebSocketStream<PhasedStream>;

/// Tungstenite's settings for one phase: `max` caps a frame and a message while reading (the
/// frame header is refused before its payload is buffered).
fn socket_config(max: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        // Requests are small JSON frames; the buffer grows for a big one and is reused.
        .read_buffer_size(8 << 10)
        // Write each frame out at once (no coalescing), so the buffer holds one frame at most,
        // plus a pong or close reply: queued pongs beyond that replace each other.
        .write_buffer_size(0)
        .max_write_buffer_size(2 * FRAGMENT + 4096)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// An outgoing message (its pieces) with its share of the connection's byte budget.
struct Outgoing {
    pieces: Vec<Bytes>,
    _permit: OwnedSemaphorePermit,
}

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
        let frames = match frames::fragments(pieces) {
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
        matches!(tokio::time::timeout(self.state.ws.limits.send_timeout, send_all).await, Ok(Ok(())))
    }

    /// Writes out what tungstenite has queued (a pong, a close reply); `false` if the client did
    /// not take it within the send timeout.
    async fn flush_queued(&mut self) -> bool {
        matches!(
            tokio::time::timeout(self.state.ws.limits.send_timeout, self.socket.flush()).await,
            Ok(Ok(()))
        )
    }

    async fn send_event(&mut self, event: &str, payload_json: &str) -> bool {
        self.seq += 1;
        let frame = frames::event(event, payload_json, self.seq);
        self.send(frame).await
    }

    /// Sends a close frame, then reads until the client answers it (1 s at most), so the close
    /// frame is not lost to a reset.
    async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame { code: code.into(), reason: connect::close_reason(reason).into() };
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

    /// The client sent a close frame: tungstenite queued the answer (its code echoed, 1000 for a
    /// normal close); send it, so the client sees a clean close rather than 1006.
    async fn answer_close(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.socket.flush()).await;
    }
}

/// Decrements the open-connection gauge however the connection ends.
struct Open(AppState);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.metrics.ws_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs one upgraded connection to its end. `leftover`: bytes read after the upgrade request.
pub(super) async fn run(
    tcp: tokio::net::TcpStream,
    leftover: Vec<u8>,
    state: AppState,
    peer: Option<SocketAddr>,
    origin: OriginCheck,
    slot: Slot,
) {
    state.metrics.ws_connections.fetch_add(1, Ordering::Relaxed);
    state.metrics.ws_connections_total.fetch_add(1, Ordering::Relaxed);
    let _open = Open(state.clone());
    let limits = state.ws.limits.clone();
    let socket = WebSocketStream::from_raw_socket(
        PhasedStream::new(tcp, leftover),
        Role::Server,
        Some(socket_config(limits.preauth_max_payload)),
    )
    .await;
    let conn_id = uuid::Uuid::new_v4().to_string();
    let nonce = uuid::Uuid::new_v4().to_string();
    let mut conn = Conn { socket, state: state.clone(), seq: 0 };
    // OpenClaw lists the optional server features a client may ask for in `connect`; clawgate
    // offers none of them (its one, `model-catalog-snapshot`, needs a model catalog).
    let challenge = json!({"type": "event", "event": "connect.challenge",
        "payload": {"nonce": nonce, "ts": now_ms(), "capabilities": []}});
    if !conn.send(challenge.to_string()).await {
        return;
    }
    let started = Instant::now();
    tracing::debug!(conn_id = %conn_id, peer = ?peer, "WebSocket opened; challenge sent.");
    let handshake = tokio::select! {
        handshake = tokio::time::timeout(limits.handshake_timeout, handshake(&mut conn, &nonce, peer, origin)) => handshake,
        () = slot.evicted() => {
            tracing::debug!(peer = ?peer, "Unauthenticated WebSocket closed to make room under the connection cap.");
            return;
        }
    };
    let (session, id) = match handshake {
        Ok(Some(accepted)) => accepted,
        Ok(None) => {
            state.metrics.observe("ws", "connect", "refused", started.elapsed());
            tracing::debug!(conn_id = %conn_id, peer = ?peer, "WebSocket closed before connect.");
            return;
        }
        Err(_) => {
            state.metrics.observe("ws", "connect", "timeout", started.elapsed());
            // OpenClaw closes a connection that did not connect in time normally.
            conn.close(CLOSE_NORMAL, "handshake timeout").await;
            return;
        }
    };
    // Authenticated: never closed to make room, and frames up to `policy.maxPayload`. The
    // socket is rebuilt with that limit; the stream under it kept every byte behind `connect`.
    slot.busy();
    let Conn { socket, state: _, seq } = conn;
    let mut stream = socket.into_inner();
    stream.open_up();
    let socket =
        WebSocketStream::from_raw_socket(stream, Role::Server, Some(socket_config(limits.max_payload))).await;
    let mut conn = Conn { socket, state: state.clone(), seq };
    let hello = connect::hello_ok(&state, &session, &conn_id);
    if !conn.send(frames::res_ok(&id, &hello.to_string())).await {
        return;
    }
    state.metrics.observe("ws", "connect", "ok", started.elapsed());
    tracing::info!(conn_id = %conn_id, client = %session.client_id, mode = %session.client_mode,
        version = %session.client_version, build = session.client_build.as_deref().unwrap_or("-"),
        role = %session.role, device = session.device_id.as_deref().unwrap_or("-"),
        peer = ?peer, "WebSocket client connected.");
    serve(conn, session).await;
    tracing::debug!(conn_id = %conn_id, "WebSocket client gone.");
}

/// The first message as text: a text frame, or a binary one holding UTF-8 (OpenClaw reads both
/// as text).
fn message_text(message: Message) -> Option<Result<String, ()>> {
    match message {
        Message::Text(text) => Some(Ok(text.as_str().to_owned())),
        Message::Binary(data) => Some(String::from_utf8(data.to_vec()).map_err(|_| ())),
        _ => None,
    }
}

/// Reads the first message and answers it as OpenClaw does; `Some((session, request id))` when
/// `connect` succeeded (`hello-ok` is sent by the caller, on the rebuilt socket).
async fn handshake(
    conn: &mut Conn,
    nonce: &str,
    peer: Option<SocketAddr>,
    origin: OriginCheck,
) -> Option<(Session, String)> {
    let text = loop {
        match conn.socket.next().await? {
            Ok(Message::Ping(_)) => {
                if !conn.flush_queued().await {
                    tracing::debug!(peer = ?peer, "A WebSocket client took no bytes for the send timeout; closed.");
                    return None;
                }
            }
            Ok(Message::Close(_)) => {
                conn.answer_close().await;
                return None;
            }
            Ok(message) => match message_text(message) {
                Some(Ok(text)) => break text,
                Some(Err(())) => {
                    conn.close(CLOSE_NORMAL, "").await;
                    return None;
                }
                None => continue,
            },
            Err(error) => {
                if matches!(error, tungstenite::Error::Capacity(_)) {
                    conn.close(CLOSE_TOO_BIG, "preauth payload too large").await;
                }
                return None;
            }
        }
    };
    // Not JSON: OpenClaw's parse error path closes normally.
    let Ok(value) = serde_json::from_str::<Value>(&text) else {
        conn.close(CLOSE_NORMAL, "").await;
        return None;
    };
    let frame = match serde_json::from_value::<RequestFrame>(value) {
        Ok(frame) if frame.kind == "req" && !frame.id.is_empty() && !frame.method.is_empty() => frame,
        _ => {
            conn.close(CLOSE_POLICY, "invalid request frame").await;
            return None;
        }
    };
    if frame.method != "connect" {
        let message = "invalid handshake: first request must be connect";
        let error = json!({"code": "INVALID_REQUEST", "message": message});
        conn.send(frames::res_error(&frame.id, &error)).await;
        conn.close(CLOSE_POLICY, message).await;
        return None;
    }
    let state = conn.state.clone();
    let ctx = ConnectContext {
        nonce,
        token: state.config.token.as_deref(),
        peer_loopback: auth::is_loopback(peer),
        origin,
        now_ms: now_ms(),
    };
    match connect::check_connect(frame.params.as_ref().unwrap_or(&Value::Null), &ctx) {
        Ok(session) => Some((session, frame.id)),
        Err(refused) => {
            if refused.auth_failure {
                state.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
                if let Some(peer) = peer {
                    state.auth.limiter.record_failure(peer.ip());
                }
            }
            tracing::info!(peer = ?peer, error = %refused.error, "WebSocket connect refused.");
            conn.send(frames::res_error(&frame.id, &refused.error)).await;
            conn.close(refused.close_code, &refused.close_reason).await;
            None
        }
    }
}

/// The request loop after `hello-ok`.
async fn serve(mut conn: Conn, session: Session) {
    let state = conn.state.clone();
    let limits = state.ws.limits.clone();
    let (out_tx, mut out_rx) = mpsc::channel::<Outgoing>(256);
    let budget = Arc::new(Semaphore::new(limits.max_buffered_bytes));
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut events = state.cache.subscribe();
    let first = state.ws.next_tick(Instant::now());
    let mut tick = tokio::time::interval_at(first.into(), limits.tick_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            incoming = conn.socket.next() => match incoming {
                Some(Ok(Message::Ping(_))) => {
                    if !conn.flush_queued().await {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) => {
                    conn.answer_close().await;
                    break;
                }
                Some(Ok(message)) => match message_text(message) {
                    Some(Ok(text)) if !on_request(&mut conn, &session, &text, &mut tasks, &out_tx, &budget).await => break,
                    Some(Ok(_)) => {}
                    // After `connect` OpenClaw logs a frame it cannot parse and carries on.
                    Some(Err(())) => tracing::debug!("Ignoring a binary WebSocket frame that is not UTF-8."),
                    None => {}
                },
                None => break,
                Some(Err(error)) => {
                    if matches!(error, tungstenite::Error::Capacity(_)) {
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
                    if session.authorize("sessions.usage").is_ok() && !conn.send_event(update.event, &update.payload_json).await {
                        break;
                    }
                }
                Err(RecvError::Lagged(missed)) => tracing::debug!(missed, "A slow WebSocket client missed usage events."),
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
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        tracing::debug!("Ignoring a WebSocket frame that is not JSON.");
        return true;
    };
    let raw_id = value.get("id").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
    let frame = match serde_path_to_error::deserialize::<_, RequestFrame>(value) {
        Ok(frame) if frame.kind == "req" && !frame.id.is_empty() && !frame.method.is_empty() => frame,
        other => {
            let detail = match other {
                Err(e) => connect::schema_message(&e),
                Ok(_) => "type must be \"req\", id and method non-empty strings".to_owned(),
            };
            let error = ApiError::invalid(format!("invalid request frame: {detail}"));
            return conn.send(frames::res_error(raw_id.as_deref().unwrap_or("invalid"), &error.body())).await;
        }
    };
    let RequestFrame { id, method, params, .. } = frame;
    let state = conn.state.clone();
    let label = metric_label(&method);
    let refuse = if method == "connect" {
        Some(ApiError::invalid("connect already completed"))
    } else {
        session.authorize(&method).err()
    };
    if let Some(error) = refuse {
        state.metrics.observe("ws", label, error.code.as_str(), started.elapsed());
        return conn.send(frames::res_error(&id, &error.body())).await;
    }
    let params = params.unwrap_or(Value::Null);
    if matches!(method.as_str(), "health" | "status") {
        // Answered inline from gateway state: never queued behind usage work.
        let reply = api::dispatch(&state, &method, &params, api::Via::WebSocket).await;
        let pieces = frames::render_reply(&id, &reply);
        state.metrics.observe("ws", label, "ok", started.elapsed());
        return conn.send_pieces(pieces).await;
    }
    if tasks.len() >= state.ws.limits.max_in_flight {
        let error = ApiError {
            retry_after: Some(Duration::from_millis(500)),
            ..ApiError::new(
                ErrorCode::Overloaded,
                format!("{} requests already in flight on this connection", tasks.len()),
            )
        };
        state.metrics.observe("ws", label, error.code.as_str(), started.elapsed());
        return conn.send(frames::res_error(&id, &error.body())).await;
    }
    let (out_tx, budget) = (out_tx.clone(), Arc::clone(budget));
    let max_budget = state.ws.limits.max_buffered_bytes;
    tasks.spawn(async move {
        let reply = api::dispatch(&state, &method, &params, api::Via::WebSocket).await;
        let outcome = match &reply {
            Ok(Reply::Usage(served)) => served.outcome.as_str(),
            Ok(Reply::Json(_)) => "ok",
            Err(error) => error.code.as_str(),
        };
        let pieces = frames::render_reply(&id, &reply);
        drop(reply);
        state.metrics.observe("ws", label, outcome, started.elapsed());
        let size = pieces.iter().map(Bytes::len).sum::<usize>();
        let Ok(permit) = budget.acquire_many_owned(size.clamp(1, max_budget) as u32).await else { return };
        let _ = out_tx.send(Outgoing { pieces, _permit: permit }).await;
    });
    true
}
