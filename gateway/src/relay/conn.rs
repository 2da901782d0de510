//! One relayed WebSocket: the client's upgrade is sent on to the upstream, and once both sides
//! switched protocols, frames go across byte for byte in both directions, except the four usage
//! methods, which are answered here.
//!
//! What is parsed, and only as far as routing needs:
//! - upstream to client: the messages before `hello-ok` (the first must be OpenClaw's
//!   `connect.challenge`, else the connection is relayed without routing), to read the scopes
//!   the upstream granted; after it, only frame headers, to find the boundaries between messages
//!   where an answer of clawgate's may go;
//! - client to upstream: a data message of at most [`HOLD_MAX`] bytes is held until it is
//!   complete; one that mentions `usage` is read for `type`, `id` and `method`. A usage request
//!   is answered here (same id; `FORBIDDEN` without `operator.read`); everything else is
//!   forwarded as it came, still masked with the client's key. Larger messages stream through.
//!
//! Bounds: each direction reads 64 KiB at a time and writes it before reading more, so a slow
//! side slows the other (TCP backpressure) and nothing grows; a held message is at most
//! [`HOLD_MAX`]; clawgate's answers wait for a share of `maxBufferedBytes` as on its own
//! connections; a side that takes no bytes for `--ws-send-timeout` ends the connection.
//!
//! Closing: a close frame from either side is relayed like any frame. When the upstream goes
//! away without one (killed, restarting), the client gets 1012 "service restart", what OpenClaw
//! sends its clients when it restarts, and OpenClaw's clients reconnect on it; so does clawgate
//! stopping. When the client goes away, the upstream gets 1001 "going away".

use std::{
    io::{self, IoSlice},
    net::SocketAddr,
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use axum::{
    body::Body,
    extract::Request,
    http::{HeaderValue, Response, StatusCode, header},
    response::IntoResponse,
};
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{
        TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch},
    task::JoinSet,
};

use super::{
    Counters, Relay, USAGE_METHODS,
    frame::{self, FrameReader, Header, Piece},
    http::{bad_gateway, prepare_request_headers, strip_hop_by_hop},
};
use crate::{
    AppState,
    api::{self, Via},
    auth::scope,
    conns::Slot,
    error::{ApiError, ErrorCode},
    ws::{FRAGMENT, frames},
};

/// The largest client message held and read for routing: a usage request is a few hundred
/// bytes (every string param is capped at 512), so anything larger is never one and streams.
pub const HOLD_MAX: usize = crate::limits::MAX_REQUEST_BYTES;

/// The largest upstream message read before `hello-ok` (the challenge, `hello-ok` itself: tens
/// of KiB on OpenClaw 2026.9.6).
const HELLO_MAX: usize = 8 << 20;

/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 64 << 10;

/// How long closing may take: a close frame sent, the other side's answer awaited.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Where the connection is in OpenClaw's handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Before the upstream answered `connect`.
    Handshake,
    /// After `hello-ok`: usage methods are answered here, with these rights.
    Routed { role: String, scopes: Vec<String> },
    /// Relayed without routing: not OpenClaw's protocol, or its `connect` failed.
    Transparent,
}

/// How the relay loop ended.
#[derive(Debug)]
enum End {
    /// The upstream closed its socket (after its close frame, or without one).
    UpstreamGone,
    /// The client closed its socket, or stopped taking bytes.
    ClientGone,
    /// A side sent bytes that are not WebSocket frames.
    ClientProtocol(frame::FrameError),
    UpstreamProtocol(frame::FrameError),
    /// clawgate is stopping.
    Stopping,
    /// Closed before `hello-ok` to make room under the connection cap.
    Evicted,
}

/// What the two directions share.
struct Shared {
    state: AppState,
    relay: Arc<Relay>,
    phase: watch::Sender<Phase>,
    /// The id of the client's `connect` request, whose answer is `hello-ok`.
    connect_id: Mutex<Option<String>>,
    send_timeout: Duration,
}

impl Shared {
    fn set_phase(&self, phase: Phase) {
        if phase == Phase::Transparent {
            Counters::count(&self.relay.counters.ws_transparent);
        }
        self.phase.send_replace(phase);
    }
}

/// An answer of clawgate's, with its share of the connection's byte budget.
struct Outgoing {
    pieces: Vec<Bytes>,
    _permit: OwnedSemaphorePermit,
}

/// Writes all of `parts` (one frame: header and payload slices) within `timeout`.
async fn write_parts(socket: &mut OwnedWriteHalf, parts: &[&[u8]], timeout: Duration) -> io::Result<()> {
    let write = async {
        let (mut index, mut offset) = (0, 0);
        while index < parts.len() {
            let slices: Vec<IoSlice<'_>> = std::iter::once(&parts[index][offset..])
                .chain(parts[index + 1..].iter().copied())
                .map(IoSlice::new)
                .collect();
            let mut n = socket.write_vectored(&slices).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            while index < parts.len() && n >= parts[index].len() - offset {
                n -= parts[index].len() - offset;
                index += 1;
                offset = 0;
            }
            offset += n;
        }
        Ok(())
    };
    tokio::time::timeout(timeout, write)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "peer took no bytes")))
}

/// The upgrade: asks the upstream first, and switches protocols with the client only when the
/// upstream did; any other answer (403 for a foreign origin, 429, 503) goes back as it came.
pub(super) async fn upgrade(
    state: AppState,
    relay: Arc<Relay>,
    request: Request,
    peer: Option<SocketAddr>,
) -> axum::response::Response {
    let Some(slot) = request.extensions().get::<Slot>().cloned() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "connection not admitted\n").into_response();
    };
    let (mut parts, _) = request.into_parts();
    let Some(client_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return (StatusCode::UPGRADE_REQUIRED, "this connection cannot be upgraded\n").into_response();
    };
    Counters::count(&relay.counters.http_requests);
    let connect = tokio::time::timeout(super::CONNECT_TIMEOUT, TcpStream::connect(&relay.upstream.authority));
    let tcp = match connect.await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(error)) => return bad_gateway(&relay, &error.to_string()),
        Err(_) => return bad_gateway(&relay, "connect timed out"),
    };
    let _ = tcp.set_nodelay(true);
    let (mut sender, connection) = match hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await {
        Ok(handshake) => handshake,
        Err(error) => return bad_gateway(&relay, &error.to_string()),
    };
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "Upstream upgrade connection ended with an error.");
        }
    });
    let mut headers = parts.headers.clone();
    prepare_request_headers(&mut headers, peer, true);
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let mut upstream_request = Request::builder().method(parts.method.clone()).uri(path);
    if let Some(h) = upstream_request.headers_mut() {
        *h = headers;
    }
    let Ok(upstream_request) = upstream_request.body(Body::empty()) else {
        return bad_gateway(&relay, "unrepresentable upgrade request");
    };
    // OpenClaw answers an upgrade at once (its checks are in memory); one that hangs is not
    // waited for longer than OpenClaw gives a client to complete its handshake.
    let sent = tokio::time::timeout(crate::limits::HANDSHAKE_TIMEOUT, sender.send_request(upstream_request));
    let mut response = match sent.await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => return bad_gateway(&relay, &error.to_string()),
        Err(_) => return bad_gateway(&relay, "no answer to the WebSocket upgrade within 15 s"),
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let mut response = response.map(Body::new);
        strip_hop_by_hop(response.headers_mut());
        return response;
    }
    let upstream_upgrade = hyper::upgrade::on(&mut response);
    // Routing reads frames: with an extension (permessage-deflate) they are not plain text, so
    // such a connection is relayed without routing. OpenClaw's gateway turns deflate off.
    let route = !response.headers().contains_key(header::SEC_WEBSOCKET_EXTENSIONS);
    let mut reply = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    if let Some(h) = reply.headers_mut() {
        *h = response.headers().clone();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    let runtime = state.config.bulk_runtime.clone();
    let run = async move {
        let (client, upstream) = tokio::join!(client_upgrade, upstream_upgrade);
        let take = |upgraded: Result<hyper::upgrade::Upgraded, hyper::Error>| {
            let parts = upgraded
                .map_err(|e| e.to_string())?
                .downcast::<TokioIo<TcpStream>>()
                .map_err(|_| "unexpected connection type".to_owned())?;
            // Register the socket with the I/O driver of the runtime this runs on.
            let tcp =
                parts.io.into_inner().into_std().and_then(TcpStream::from_std).map_err(|e| e.to_string())?;
            Ok::<_, String>((tcp, parts.read_buf.to_vec()))
        };
        match (take(client), take(upstream)) {
            (Ok(client), Ok(upstream)) => run(client, upstream, state, relay, peer, slot, route).await,
            (client, upstream) => {
                tracing::debug!(client = ?client.err(), upstream = ?upstream.err(), "A relayed upgrade did not complete.");
            }
        }
    };
    match runtime {
        Some(runtime) => drop(runtime.spawn(run)),
        None => drop(tokio::spawn(run)),
    }
    reply.body(Body::empty()).unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Keeps the open-connection gauge right however the connection ends.
struct Open(Arc<Relay>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.counters.ws_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs one relayed connection to its end.
async fn run(
    (client, client_early): (TcpStream, Vec<u8>),
    (upstream, upstream_early): (TcpStream, Vec<u8>),
    state: AppState,
    relay: Arc<Relay>,
    peer: Option<SocketAddr>,
    slot: Slot,
    route: bool,
) {
    Counters::count(&relay.counters.ws_connections);
    relay.counters.ws_open.fetch_add(1, Ordering::Relaxed);
    let _open = Open(Arc::clone(&relay));
    let mut stopping = relay.stopping();
    let limits = state.ws.limits.clone();
    let shared = Shared {
        state,
        relay: Arc::clone(&relay),
        phase: watch::channel(if route { Phase::Handshake } else { Phase::Transparent }).0,
        connect_id: Mutex::new(None),
        send_timeout: limits.send_timeout,
    };
    if !route {
        Counters::count(&relay.counters.ws_transparent);
    }
    let (client_rd, client_wr) = client.into_split();
    let (upstream_rd, upstream_wr) = upstream.into_split();
    let (answers_tx, answers_rx) = mpsc::channel(64);
    let mut down = Down {
        upstream: upstream_rd,
        client: client_wr,
        early: upstream_early,
        reader: FrameReader::default(),
        client_mid_frame: false,
        saw_close: false,
        capture: None,
        messages: 0,
        handshake_over: false,
        answers: answers_rx,
    };
    let mut up = Up {
        client: client_rd,
        upstream: upstream_wr,
        early: client_early,
        reader: FrameReader::default(),
        partial_header: Vec::new(),
        held: None,
        streaming: false,
        upstream_mid_frame: false,
        sent_close: false,
        tasks: JoinSet::new(),
        answers: answers_tx,
        budget: Arc::new(Semaphore::new(limits.max_buffered_bytes)),
        max_budget: limits.max_buffered_bytes,
        max_in_flight: limits.max_in_flight,
    };
    tracing::debug!(peer = ?peer, route, "Relayed WebSocket opened.");
    let end = {
        let mut phase = shared.phase.subscribe();
        let down_run = down.run(&shared);
        let up_run = up.run(&shared);
        tokio::pin!(down_run, up_run);
        loop {
            let handshake = *phase.borrow_and_update() == Phase::Handshake;
            if !handshake {
                slot.busy();
            }
            tokio::select! {
                end = &mut down_run => break end,
                end = &mut up_run => break end,
                _ = stopping.wait_for(|stop| *stop) => break End::Stopping,
                () = slot.evicted(), if handshake => break End::Evicted,
                _ = phase.changed(), if handshake => {}
            }
        }
    };
    up.tasks.abort_all();
    finish(end, &mut down, &mut up, &shared, peer).await;
}

/// Closes both sides after the loop ended, each with what OpenClaw's clients expect.
async fn finish(end: End, down: &mut Down, up: &mut Up, shared: &Shared, peer: Option<SocketAddr>) {
    let timeout = CLOSE_GRACE;
    let close_client = |code: u16, reason: &str| {
        frame::encode_frame(frame::CLOSE, true, &frame::close_payload(code, reason), None)
    };
    let close_upstream = |code: u16, reason: &str| {
        let key: [u8; 4] = uuid::Uuid::new_v4().as_bytes()[..4].try_into().expect("4 bytes");
        frame::encode_frame(frame::CLOSE, true, &frame::close_payload(code, reason), Some(key))
    };
    let client_clean = !down.client_mid_frame;
    let upstream_clean = !up.upstream_mid_frame && !up.sent_close;
    let (to_client, to_upstream) = match &end {
        End::UpstreamGone if down.saw_close => (None, None),
        End::UpstreamGone => {
            Counters::count(&shared.relay.counters.ws_upstream_lost);
            tracing::info!(peer = ?peer, "The upstream went away; relayed client closed with 1012 (service restart).");
            (Some(close_client(1012, "service restart")), None)
        }
        End::ClientGone => (None, Some(close_upstream(1001, "going away"))),
        End::Stopping => {
            (Some(close_client(1012, "service restart")), Some(close_upstream(1001, "going away")))
        }
        End::Evicted => (None, None),
        End::ClientProtocol(error) => {
            tracing::debug!(peer = ?peer, %error, "A relayed client sent bytes that are not WebSocket frames.");
            (Some(close_client(1002, "protocol error")), Some(close_upstream(1001, "going away")))
        }
        End::UpstreamProtocol(error) => {
            tracing::warn!(peer = ?peer, %error, "The upstream sent bytes that are not WebSocket frames.");
            (Some(close_client(1011, "upstream protocol error")), None)
        }
    };
    if let Some(close) = to_upstream.filter(|_| upstream_clean) {
        let _ = write_parts(&mut up.upstream, &[&close], timeout).await;
    }
    let _ = tokio::time::timeout(timeout, up.upstream.shutdown()).await;
    if let Some(close) = to_client.filter(|_| client_clean) {
        if write_parts(&mut down.client, &[&close], timeout).await.is_ok() {
            let _ = tokio::time::timeout(timeout, down.client.shutdown()).await;
            // The client answers with its own close frame, then closes: read until then, so
            // the close is clean rather than lost to a reset.
            let mut sink = vec![0u8; 4096];
            let _ = tokio::time::timeout(timeout, async {
                while matches!(up.client.read(&mut sink).await, Ok(n) if n > 0) {}
            })
            .await;
            return;
        }
    }
    let _ = tokio::time::timeout(timeout, down.client.shutdown()).await;
}

/// Upstream to client.
struct Down {
    upstream: OwnedReadHalf,
    client: OwnedWriteHalf,
    /// Bytes the upstream sent right behind its 101 (OpenClaw's challenge, often).
    early: Vec<u8>,
    reader: FrameReader,
    /// A write to the client was cut short: no frame of ours may follow.
    client_mid_frame: bool,
    /// The upstream sent a close frame.
    saw_close: bool,
    /// Before `hello-ok`: the message being read (payload so far; `None` past [`HELLO_MAX`]).
    capture: Option<Option<Vec<u8>>>,
    /// Data messages seen before `hello-ok`.
    messages: u32,
    /// Past `hello-ok` (or relaying without routing): upstream messages are no longer read.
    handshake_over: bool,
    answers: mpsc::Receiver<Outgoing>,
}

impl Down {
    async fn run(&mut self, shared: &Shared) -> End {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let chunk: Vec<u8>;
            let data: &[u8] = if !self.early.is_empty() {
                chunk = std::mem::take(&mut self.early);
                &chunk
            } else {
                tokio::select! {
                    read = self.upstream.read(&mut buf) => match read {
                        Ok(0) | Err(_) => return End::UpstreamGone,
                        Ok(n) => &buf[..n],
                    },
                    Some(out) = self.answers.recv(), if self.reader.between_messages() => {
                        if self.send_answer(out, shared).await.is_err() {
                            return End::ClientGone;
                        }
                        continue;
                    }
                }
            };
            if let Err(end) = self.forward(data, shared).await {
                return end;
            }
        }
    }

    /// Forwards `data` to the client; between messages, answers waiting are sent first.
    async fn forward(&mut self, data: &[u8], shared: &Shared) -> Result<(), End> {
        let (mut at, mut from) = (0, 0);
        while at < data.len() {
            let (n, piece) = self.reader.read(&data[at..]).map_err(End::UpstreamProtocol)?;
            if !self.handshake_over {
                if self.capture.is_some() || *shared.phase.borrow() == Phase::Handshake {
                    self.follow_handshake(&piece, shared);
                } else {
                    self.handshake_over = true;
                }
            }
            if let Piece::Header { header, .. } = &piece {
                self.saw_close |= header.opcode == frame::CLOSE;
            }
            at += n;
            if self.reader.between_messages() && !self.answers.is_empty() {
                self.write(&data[from..at], shared).await?;
                from = at;
                while let Ok(out) = self.answers.try_recv() {
                    self.send_answer(out, shared).await.map_err(|_| End::ClientGone)?;
                }
            }
        }
        self.write(&data[from..], shared).await
    }

    async fn write(&mut self, bytes: &[u8], shared: &Shared) -> Result<(), End> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.client_mid_frame = true;
        write_parts(&mut self.client, &[bytes], shared.send_timeout).await.map_err(|_| End::ClientGone)?;
        self.client_mid_frame = !self.reader.between_frames();
        Ok(())
    }

    /// Reads the upstream's messages before `hello-ok`: the challenge, then the answer to the
    /// client's `connect`.
    fn follow_handshake(&mut self, piece: &Piece<'_>, shared: &Shared) {
        let (bytes, ends, mask, offset) = match piece {
            Piece::Partial => return,
            Piece::Header { header, ends } => {
                if header.is_control() {
                    return;
                }
                if header.opcode != frame::CONTINUATION {
                    self.capture = Some(Some(Vec::new()));
                }
                (&[][..], *ends && header.fin, header.mask, 0)
            }
            Piece::Payload { header, bytes, offset, ends } => {
                if header.is_control() {
                    return;
                }
                (*bytes, *ends && header.fin, header.mask, *offset)
            }
        };
        let Some(capture) = &mut self.capture else { return };
        if let Some(text) = capture {
            if text.len() + bytes.len() > HELLO_MAX {
                *capture = None;
            } else {
                let start = text.len();
                text.extend_from_slice(bytes);
                if let Some(key) = mask {
                    frame::apply_mask(&mut text[start..], key, offset);
                }
            }
        }
        if ends {
            let message = self.capture.take().flatten();
            self.messages += 1;
            self.examine(message.as_deref(), shared);
        }
    }

    /// Judges one whole upstream message before `hello-ok`.
    fn examine(&mut self, message: Option<&[u8]>, shared: &Shared) {
        #[derive(Deserialize)]
        struct Frame<'a> {
            #[serde(rename = "type", borrow)]
            kind: Option<&'a str>,
            #[serde(borrow)]
            event: Option<&'a str>,
            id: Option<String>,
            ok: Option<bool>,
            payload: Option<Hello>,
        }
        #[derive(Deserialize)]
        struct Hello {
            auth: Option<HelloAuth>,
            server: Option<HelloServer>,
        }
        #[derive(Deserialize)]
        struct HelloAuth {
            role: Option<String>,
            #[serde(default)]
            scopes: Vec<String>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct HelloServer {
            version: Option<String>,
            build_id: Option<String>,
        }
        let parsed = message.and_then(|m| serde_json::from_slice::<Frame<'_>>(m).ok());
        if self.messages == 1 {
            // OpenClaw's protocol opens with its challenge; anything else is not routed.
            if !parsed
                .as_ref()
                .is_some_and(|f| f.kind == Some("event") && f.event == Some("connect.challenge"))
            {
                shared.set_phase(Phase::Transparent);
            }
            return;
        }
        let connect_id = shared.connect_id.lock().expect("connect id").clone();
        let Some(frame) = parsed else {
            if message.is_none() && connect_id.is_some() {
                tracing::warn!(
                    "An upstream message before hello-ok was too large to read; relaying without routing."
                );
                shared.set_phase(Phase::Transparent);
            }
            return;
        };
        if frame.kind != Some("res") || connect_id.is_none() || frame.id != connect_id {
            return;
        }
        match frame.payload.filter(|_| frame.ok == Some(true)) {
            Some(hello) => {
                let server = hello.server.unwrap_or(HelloServer { version: None, build_id: None });
                shared.relay.saw_hello(server.version.as_deref(), server.build_id.as_deref());
                let auth = hello.auth.unwrap_or(HelloAuth { role: None, scopes: Vec::new() });
                shared.set_phase(Phase::Routed {
                    role: auth.role.unwrap_or_else(|| "operator".to_owned()),
                    scopes: auth.scopes,
                });
            }
            None => shared.set_phase(Phase::Transparent),
        }
    }

    /// Writes one answer of clawgate's as a text message, fragmented when large (the pieces are
    /// slices of the cached answer, shared, not copied).
    async fn send_answer(&mut self, out: Outgoing, shared: &Shared) -> io::Result<()> {
        let total: usize = out.pieces.iter().map(Bytes::len).sum();
        if total <= FRAGMENT {
            let payload = out.pieces.concat();
            let header =
                Header { fin: true, rsv: 0, opcode: frame::TEXT, mask: None, len: payload.len() as u64 };
            self.client_mid_frame = true;
            write_parts(&mut self.client, &[&header.encode(), &payload], shared.send_timeout).await?;
            self.client_mid_frame = false;
            return Ok(());
        }
        let slices: Vec<Bytes> = out
            .pieces
            .iter()
            .flat_map(|piece| {
                (0..piece.len()).step_by(FRAGMENT).map(|at| piece.slice(at..(at + FRAGMENT).min(piece.len())))
            })
            .filter(|s| !s.is_empty())
            .collect();
        let last = slices.len() - 1;
        let bulk = Arc::clone(&shared.state.ws.bulk);
        for (i, slice) in slices.into_iter().enumerate() {
            let opcode = if i == 0 { frame::TEXT } else { frame::CONTINUATION };
            let header = Header { fin: i == last, rsv: 0, opcode, mask: None, len: slice.len() as u64 };
            // One large copy at a time gateway-wide, as on clawgate's own connections
            // (`WsShared::bulk`); the permit is not held while waiting for a slow client.
            let permit = bulk.acquire().await.map_err(|_| io::Error::other("stopping"))?;
            self.client_mid_frame = true;
            let written =
                write_parts(&mut self.client, &[&header.encode(), &slice], shared.send_timeout).await;
            drop(permit);
            written?;
            self.client_mid_frame = false;
            tokio::task::yield_now().await;
        }
        Ok(())
    }
}

/// A client message held until it is complete, to be read for routing.
struct Held {
    /// The frames as they came (masked), to forward unchanged.
    raw: Vec<u8>,
    /// The payload, unmasked.
    text: Vec<u8>,
}

/// Client to upstream.
struct Up {
    client: OwnedReadHalf,
    upstream: OwnedWriteHalf,
    early: Vec<u8>,
    reader: FrameReader,
    /// The start of a header, until the rest arrives: whether its frame is held depends on it.
    partial_header: Vec<u8>,
    held: Option<Held>,
    /// The current frame is being forwarded as it comes (not held).
    streaming: bool,
    /// A write to the upstream ended inside a frame.
    upstream_mid_frame: bool,
    /// The client's close frame was forwarded.
    sent_close: bool,
    /// Usage answers being computed; dropped with the connection.
    tasks: JoinSet<()>,
    answers: mpsc::Sender<Outgoing>,
    budget: Arc<Semaphore>,
    max_budget: usize,
    max_in_flight: usize,
}

/// What routing reads of a client message.
#[derive(Deserialize)]
struct RequestHead<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a str>,
    id: Option<String>,
    #[serde(borrow)]
    method: Option<&'a str>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
}

impl Up {
    async fn run(&mut self, shared: &Shared) -> End {
        let mut buf = vec![0u8; READ_CHUNK];
        let mut phase = shared.phase.subscribe();
        loop {
            // After the client's `connect` went on, nothing more is read until the upstream
            // answered it: a usage request must not overtake `hello-ok` and reach the upstream.
            let connect_sent = shared.connect_id.lock().expect("connect id").is_some();
            if connect_sent && phase.wait_for(|p| *p != Phase::Handshake).await.is_err() {
                return End::UpstreamGone;
            }
            let chunk: Vec<u8>;
            let data: &[u8] = if !self.early.is_empty() {
                chunk = std::mem::take(&mut self.early);
                &chunk
            } else {
                match self.client.read(&mut buf).await {
                    Ok(0) | Err(_) => return End::ClientGone,
                    Ok(n) => &buf[..n],
                }
            };
            let mut out = Vec::new();
            let rest = match self.route(data, &mut out, shared) {
                Ok(rest) => rest,
                Err(error) => return End::ClientProtocol(error),
            };
            if !out.is_empty() {
                self.upstream_mid_frame = true;
                if write_parts(&mut self.upstream, &[&out], shared.send_timeout).await.is_err() {
                    return End::UpstreamGone;
                }
                self.upstream_mid_frame = self.streaming && self.reader.current().is_some();
            }
            if rest < data.len() {
                self.early = data[rest..].to_vec();
            }
        }
    }

    /// Sorts `data` into bytes to forward (appended to `out`), messages held, and requests
    /// answered here. Returns how much of `data` was used: it stops right after a `connect`.
    fn route(&mut self, data: &[u8], out: &mut Vec<u8>, shared: &Shared) -> Result<usize, frame::FrameError> {
        let mut at = 0;
        while at < data.len() {
            let (n, piece) = self.reader.read(&data[at..])?;
            let raw = &data[at..at + n];
            at += n;
            match piece {
                Piece::Partial => self.partial_header.extend_from_slice(raw),
                Piece::Header { header, ends } => {
                    let mut bytes = std::mem::take(&mut self.partial_header);
                    bytes.extend_from_slice(raw);
                    if header.is_control() {
                        // A control frame may come between a message's fragments; it goes on at
                        // once, ahead of a message still held (a ping's place among data frames
                        // means nothing). A close ends the client's side: what is held of an
                        // unfinished message goes before it.
                        if header.opcode == frame::CLOSE {
                            if let Some(held) = self.held.take() {
                                out.extend_from_slice(&held.raw);
                            }
                        }
                        self.sent_close |= header.opcode == frame::CLOSE;
                        self.streaming = true;
                        out.extend_from_slice(&bytes);
                        continue;
                    }
                    let starts = header.opcode != frame::CONTINUATION;
                    if starts {
                        let routing = !matches!(*shared.phase.borrow(), Phase::Transparent);
                        if routing && header.rsv == 0 && header.len <= HOLD_MAX as u64 {
                            self.held = Some(Held { raw: Vec::new(), text: Vec::new() });
                        } else {
                            self.count_forwarded(shared);
                        }
                    }
                    match &mut self.held {
                        Some(held) if held.raw.len() + bytes.len() + header.len as usize <= HOLD_MAX + 64 => {
                            held.raw.extend_from_slice(&bytes);
                            self.streaming = false;
                        }
                        held => {
                            // Too large to be a usage request: what was held goes, the rest streams.
                            if let Some(held) = held.take() {
                                out.extend_from_slice(&held.raw);
                                self.count_forwarded(shared);
                            }
                            self.streaming = true;
                            out.extend_from_slice(&bytes);
                        }
                    }
                    if ends && header.fin && self.held.is_some() && self.decide(out, shared) {
                        return Ok(at);
                    }
                }
                Piece::Payload { header, bytes, offset, ends } => match (&mut self.held, self.streaming) {
                    (Some(held), false) => {
                        held.raw.extend_from_slice(raw);
                        let start = held.text.len();
                        held.text.extend_from_slice(bytes);
                        if let Some(key) = header.mask {
                            frame::apply_mask(&mut held.text[start..], key, offset);
                        }
                        if ends && self.reader.between_messages() && self.decide(out, shared) {
                            return Ok(at);
                        }
                    }
                    _ => out.extend_from_slice(raw),
                },
            }
        }
        Ok(at)
    }

    fn count_forwarded(&self, shared: &Shared) {
        if matches!(*shared.phase.borrow(), Phase::Routed { .. }) {
            Counters::count(&shared.relay.counters.messages_forwarded);
        }
    }

    /// A held message is complete: answer it here or forward it. `true` when it was the
    /// client's `connect` (reading pauses until the upstream answers it).
    fn decide(&mut self, out: &mut Vec<u8>, shared: &Shared) -> bool {
        let Some(held) = self.held.take() else { return false };
        self.streaming = true;
        let phase = shared.phase.borrow();
        let read = match &*phase {
            Phase::Handshake => true,
            // Only a message that mentions `usage` can be a usage request.
            Phase::Routed { .. } => memchr::memmem::find(&held.text, b"usage").is_some(),
            Phase::Transparent => false,
        };
        let head = if read { serde_json::from_slice::<RequestHead<'_>>(&held.text).ok() } else { None };
        match (&*phase, head.filter(|h| h.kind == Some("req"))) {
            (Phase::Handshake, Some(RequestHead { id: Some(id), method: Some("connect"), .. })) => {
                *shared.connect_id.lock().expect("connect id") = Some(id);
                out.extend_from_slice(&held.raw);
                true
            }
            (
                Phase::Routed { role, scopes },
                Some(RequestHead { id: Some(id), method: Some(method), params, .. }),
            ) if USAGE_METHODS.contains(&method) && !id.is_empty() => {
                let refused = scope::authorize(role, scopes, api::required_scope(method)).err();
                let params = params
                    .and_then(|p| serde_json::from_str(p.get()).ok())
                    .unwrap_or(serde_json::Value::Null);
                let method = method.to_owned();
                drop(phase);
                self.answer(id, method, params, refused, shared);
                false
            }
            _ => {
                drop(phase);
                self.count_forwarded(shared);
                out.extend_from_slice(&held.raw);
                false
            }
        }
    }

    /// Answers a usage request here: refused when the upstream's `hello-ok` did not grant the
    /// scope (`refused`), else the worker's answer through the cache.
    fn answer(
        &mut self,
        id: String,
        method: String,
        params: serde_json::Value,
        refused: Option<ApiError>,
        shared: &Shared,
    ) {
        let index = USAGE_METHODS.iter().position(|m| *m == method).unwrap_or(0);
        let refused = match refused {
            Some(error) => {
                Counters::count(&shared.relay.counters.forbidden);
                Some(error)
            }
            None if self.tasks.len() >= self.max_in_flight => Some(ApiError {
                retry_after: Some(Duration::from_millis(500)),
                ..ApiError::new(
                    ErrorCode::Overloaded,
                    format!("{} requests already in flight on this connection", self.tasks.len()),
                )
            }),
            None => {
                Counters::count(&shared.relay.counters.answered[index]);
                None
            }
        };
        let state = shared.state.clone();
        let (answers, budget, max_budget) = (self.answers.clone(), Arc::clone(&self.budget), self.max_budget);
        self.tasks.spawn(async move {
            let started = std::time::Instant::now();
            // Relayed clients get no `usage.updated` pushes, so their answers are cached as
            // HTTP callers' are.
            let reply = match refused {
                Some(error) => Err(error),
                None => api::dispatch(&state, &method, &params, Via::Http).await,
            };
            let outcome = match &reply {
                Ok(api::Reply::Usage(served)) => served.outcome.as_str(),
                Ok(api::Reply::Json(_)) => "ok",
                Err(error) => error.code.as_str(),
            };
            state.metrics.observe("relay", &method, outcome, started.elapsed());
            let pieces = frames::render_reply(&id, &reply);
            drop(reply);
            let size = pieces.iter().map(Bytes::len).sum::<usize>();
            let Ok(permit) = budget.acquire_many_owned(size.clamp(1, max_budget) as u32).await else {
                return;
            };
            let _ = answers.send(Outgoing { pieces, _permit: permit }).await;
        });
    }
}
