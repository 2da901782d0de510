//! Dashboard-like WebSocket clients speaking OpenClaw's protocol v4.
//!
//! Each client connects (`connect.challenge` → `connect` as a backend `gateway-client` with the
//! `operator.read` scope and the token → `hello-ok`), then every few seconds asks what the usage
//! page asks: `sessions.usage` (limit 1000) and `usage.cost` over the whole store, both in flight
//! at once, and waits for both before the next refresh. It reconnects now and then, as browser
//! tabs do. A close or error it did not start counts as an unexpected close.

use std::{
    collections::HashMap,
    io::ErrorKind,
    net::TcpStream,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use demo_store::Rng;
use serde_json::json;
use tungstenite::{Message, WebSocket, protocol::WebSocketConfig};

use crate::{
    answer::{self, Envelope},
    ctx::{Ctx, Method, Sent},
};

/// Client behaviour.
#[derive(Debug, Clone)]
pub struct WsConfig {
    pub call_every: Duration,
    pub reconnect_every: Duration,
    /// A call unanswered after this is a failure.
    pub call_deadline: Duration,
    pub limit: u32,
    /// How many clients run (their first refreshes are spread over `call_every`).
    pub clients: usize,
    /// Nice value of the client threads (0: unchanged).
    pub nice: i32,
    /// `SCHED_IDLE` for the client threads.
    pub idle: bool,
}

type Socket = WebSocket<TcpStream>;

/// Why a connection ended.
enum End {
    /// We closed it (stop or planned reconnect).
    Planned,
    /// The server closed it or it broke.
    Unexpected(String),
}

/// Runs one client until `stop`, then lets its pending calls finish and closes.
pub fn client(ctx: Arc<Ctx>, index: usize, config: WsConfig, stop: Arc<AtomicBool>) {
    // Linux nice values and policies are per thread: this client's JSON parsing yields the CPU
    // to the gateway and the prober (the load generator must not pass for gateway latency).
    // SAFETY: plain syscalls on this thread's own id.
    unsafe {
        if config.nice != 0 {
            libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, config.nice);
        }
        if config.idle {
            let param = libc::sched_param { sched_priority: 0 };
            libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
        }
    }
    let mut rng = Rng::new(0x5eed_0000 + index as u64);
    // Spread the clients' refreshes over the interval, as independent dashboards would be.
    let first = config.call_every.mul_f64(index as f64 / config.clients.max(1) as f64);
    let mut next_call = Instant::now() + first;
    while !stop.load(Ordering::Relaxed) {
        let mut socket = match connect(&ctx) {
            Ok(socket) => socket,
            Err(why) => {
                let mut ws = ctx.ws();
                ws.connect_failures += 1;
                ws.problem(format!("client {index}: connect failed at {:.1}s: {why}", ctx.secs()));
                drop(ws);
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        ctx.ws().connects += 1;
        let lifetime = config.reconnect_every.mul_f64(0.5 + rng.unit());
        let end =
            session(&ctx, &mut socket, &config, &stop, &mut rng, &mut next_call, Instant::now() + lifetime);
        match end {
            End::Planned => {
                close(&mut socket);
                ctx.ws().graceful_closes += 1;
            }
            End::Unexpected(why) => {
                let mut ws = ctx.ws();
                ws.unexpected_closes += 1;
                ws.problem(format!("client {index}: connection lost at {:.1}s: {why}", ctx.secs()));
            }
        }
    }
}

fn connect(ctx: &Ctx) -> Result<Socket, String> {
    let stream = TcpStream::connect_timeout(&ctx.addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    // Answers over the whole store are tens of MB; the defaults (64 MiB messages) are too low
    // for the largest stores.
    let config = WebSocketConfig::default().max_message_size(Some(1 << 30)).max_frame_size(Some(1 << 30));
    let (mut socket, _) =
        tungstenite::client::client_with_config(format!("ws://{}/ws", ctx.addr), stream, Some(config))
            .map_err(|e| format!("upgrade: {e}"))?;
    let challenge = read_text(&mut socket)?;
    let frame: Envelope<'_> = serde_json::from_str(&challenge).map_err(|e| format!("first frame: {e}"))?;
    if frame.event.as_deref() != Some("connect.challenge") {
        return Err(format!("first frame is not connect.challenge: {challenge:.200}"));
    }
    let connect = json!({
        "type": "req", "id": "connect", "method": "connect",
        "params": {
            "minProtocol": 4, "maxProtocol": 4,
            "client": {"id": "gateway-client", "version": env!("CARGO_PKG_VERSION"), "platform": "linux", "mode": "backend"},
            "role": "operator", "scopes": ["operator.read"],
            "auth": {"token": ctx.token},
        }
    });
    socket.send(Message::text(connect.to_string())).map_err(|e| format!("sending connect: {e}"))?;
    let hello = read_text(&mut socket)?;
    let frame: Envelope<'_> = serde_json::from_str(&hello).map_err(|e| format!("connect answer: {e}"))?;
    let ok =
        frame.ok == Some(true) && frame.payload.is_some_and(|p| p.get().contains(r#""type":"hello-ok""#));
    if !ok {
        return Err(format!("connect refused: {hello:.300}"));
    }
    // From here on, short reads so the loop can keep time.
    socket.get_mut().set_read_timeout(Some(Duration::from_millis(50))).map_err(|e| e.to_string())?;
    Ok(socket)
}

/// The next text frame (handshake only: blocking with the connect timeouts).
fn read_text(socket: &mut Socket) -> Result<String, String> {
    loop {
        match socket.read() {
            Ok(Message::Text(text)) => return Ok(text.as_str().to_owned()),
            Ok(Message::Close(frame)) => return Err(format!("closed during handshake: {frame:?}")),
            Ok(_) => {}
            Err(e) => return Err(format!("handshake read: {e}")),
        }
    }
}

/// Sends a request.
fn request(socket: &mut Socket, id: &str, method: &str, params: &serde_json::Value) -> Result<(), String> {
    let frame = json!({"type": "req", "id": id, "method": method, "params": params});
    socket.send(Message::text(frame.to_string())).map_err(|e| format!("sending {method}: {e}"))
}

fn session(
    ctx: &Ctx,
    socket: &mut Socket,
    config: &WsConfig,
    stop: &AtomicBool,
    rng: &mut Rng,
    next_call: &mut Instant,
    reconnect_at: Instant,
) -> End {
    let mut pending: HashMap<String, Sent> = HashMap::new();
    let mut seq = 0u64;
    loop {
        let now = Instant::now();
        let stopping = stop.load(Ordering::Relaxed);
        if pending.is_empty() && (stopping || now >= reconnect_at) {
            return End::Planned;
        }
        if pending.is_empty() && !stopping && now >= *next_call {
            for method in [Method::SessionsUsage, Method::UsageCost] {
                seq += 1;
                let id = format!("{}-{seq}", method.name());
                let sent = ctx.sent(method, true);
                if let Err(why) = request(socket, &id, method.name(), &ctx.params(method, config.limit)) {
                    return lost(ctx, &pending, why);
                }
                pending.insert(id, sent);
            }
            *next_call = now + config.call_every.mul_f64(0.7 + 0.6 * rng.unit());
        }
        pending.retain(|_, sent| {
            if sent.at.elapsed() < config.call_deadline {
                return true;
            }
            ctx.calls().fail(format!(
                "{} over WebSocket: no answer within {} ms (sent at {:.1}s)",
                sent.method.name(),
                config.call_deadline.as_millis(),
                sent.at.duration_since(ctx.started).as_secs_f64()
            ));
            false
        });
        match socket.read() {
            Ok(Message::Text(text)) => {
                let received = Instant::now();
                let Ok(frame) = serde_json::from_str::<Envelope<'_>>(text.as_str()) else {
                    return lost(ctx, &pending, format!("a frame that is not JSON: {:.200}", text.as_str()));
                };
                match frame.kind.as_deref() {
                    Some("res") => {
                        let Some(sent) = frame.id.as_ref().and_then(|id| pending.remove(id)) else {
                            continue;
                        };
                        answer::handle(ctx, &sent, received, &frame);
                    }
                    Some("event") => ctx.ws().events += 1,
                    _ => {}
                }
            }
            Ok(Message::Close(frame)) => return lost(ctx, &pending, format!("server closed: {frame:?}")),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return lost(ctx, &pending, e.to_string()),
        }
    }
}

/// The connection broke: its pending calls failed with it.
fn lost(ctx: &Ctx, pending: &HashMap<String, Sent>, why: String) -> End {
    for sent in pending.values() {
        ctx.calls().fail(format!("{} over WebSocket: connection lost: {why}", sent.method.name()));
    }
    End::Unexpected(why)
}

/// Closes our side and waits briefly for the server's close.
fn close(socket: &mut Socket) {
    let _ = socket.close(None);
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        match socket.read() {
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
}
