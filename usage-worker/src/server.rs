//! The worker's connection loop: handshake, then requests in, answers out.
//!
//! Reading the socket, answering `Ping` and accepting `Cancel` happen on the async side; usage
//! work runs on one dedicated compute thread that owns the [`Engine`]. A long job therefore never
//! delays a heartbeat, and a cancel reaches the job through a shared flag it polls.
//! The worker exits when its connection closes, so it cannot outlive the gateway that spawned it.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc as std_mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use interprocess::local_socket::tokio::Stream;
use ipc_proto::{
    Connection, FromWorker, JobStats, MAX_REQUEST_FRAME, MemoryReport, RequestId, ToWorker, UsageQuery,
    WorkerError, WorkerErrorKind, frame,
};
use tokio::sync::mpsc;

use crate::{
    alloc,
    engine::{Engine, EngineConfig, Payload},
};

/// What the worker needs to serve.
#[derive(Debug, Clone)]
pub struct Config {
    /// The OpenClaw state directory (read only).
    pub state_dir: PathBuf,
    /// clawgate's cache directory for persisted rollups (`None`: memory only).
    pub data_dir: Option<PathBuf>,
    /// Lines longer than this are skipped and counted, never buffered.
    pub max_line_bytes: u64,
    /// Compute threads used by one job.
    pub threads: usize,
    /// Heap bytes a job may push the worker to before it is refused as over budget (0: none).
    pub memory_budget: u64,
}

const BUILD: &str = env!("CARGO_PKG_VERSION");

/// A job handed to the compute thread.
struct Job {
    id: RequestId,
    query: UsageQuery,
    cancel: Arc<AtomicBool>,
}

/// How long a peer has to send its `Hello`. A gateway sends it at once; in external mode the
/// worker serves one connection at a time, so a client that connects and stays silent must not
/// hold the socket and keep the real gateway waiting in the listen queue.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);

/// Serves one connection until the peer closes it or asks us to shut down.
pub async fn serve_connection(stream: Stream, config: &Config) -> anyhow::Result<()> {
    let mut conn = Connection::new(stream, MAX_REQUEST_FRAME);
    let gateway = tokio::time::timeout(HANDSHAKE_DEADLINE, conn.handshake_as_worker(BUILD))
        .await
        .map_err(|_| anyhow::anyhow!("the peer sent no Hello within {HANDSHAKE_DEADLINE:?}"))?
        .context("handshake with the gateway")?;
    tracing::info!(gateway_pid = gateway.pid, gateway_build = %gateway.build, "Connected to the gateway.");
    let stream = Arc::new(conn.into_inner());

    // Frames are encoded by their sender; a large answer arrives as its shared pieces, which
    // the writer streams through one small buffer.
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<OutFrame>();
    let writer_stream = Arc::clone(&stream);
    let writer = tokio::spawn(async move {
        let mut writer = &*writer_stream;
        let mut buf = Vec::with_capacity(WRITE_BUFFER);
        while let Some(frame) = out_rx.recv().await {
            if let Err(error) = frame.write_to(&mut writer, &mut buf).await {
                tracing::warn!(%error, "Cannot write to the gateway.");
                break;
            }
        }
    });

    let cancels: Arc<Mutex<HashMap<RequestId, Arc<AtomicBool>>>> = Arc::default();
    let (job_tx, job_rx) = std_mpsc::channel::<Job>();
    let compute = spawn_compute_thread(config.clone(), job_rx, out_tx.clone(), Arc::clone(&cancels));

    let mut reader = &*stream;
    let outcome = loop {
        let msg = match frame::read_msg::<ToWorker, _>(&mut reader, MAX_REQUEST_FRAME).await {
            Ok(Some(msg)) => msg,
            Ok(None) => break Ok(()),
            Err(error) => break Err(anyhow::Error::new(error).context("reading from the gateway")),
        };
        match msg {
            ToWorker::Ping { seq } => {
                let memory = MemoryReport { heap_bytes: alloc::heap_bytes(), rss_bytes: alloc::rss_bytes() };
                if let Ok(frame) = encode(&FromWorker::Pong { seq, memory }, 0) {
                    let _ = out_tx.send(OutFrame::bytes(frame));
                }
            }
            ToWorker::Request { id, query } => {
                let cancel = Arc::new(AtomicBool::new(false));
                cancels.lock().expect("cancel map").insert(id, Arc::clone(&cancel));
                if job_tx.send(Job { id, query, cancel }).is_err() {
                    break Err(anyhow::format_err!("compute thread is gone"));
                }
            }
            ToWorker::Cancel { id } => {
                if let Some(flag) = cancels.lock().expect("cancel map").get(&id) {
                    flag.store(true, Ordering::Relaxed);
                }
            }
            ToWorker::Shutdown => break Ok(()),
            ToWorker::Hello(_) => {
                tracing::warn!("Ignoring a second Hello from the gateway.");
            }
        }
    };
    // Stop queued and running jobs, then let the writer drain what is already answered.
    for flag in cancels.lock().expect("cancel map").values() {
        flag.store(true, Ordering::Relaxed);
    }
    drop(job_tx);
    drop(out_tx);
    let _ = tokio::task::spawn_blocking(move || compute.join()).await;
    let _ = writer.await;
    outcome
}

fn spawn_compute_thread(
    config: Config,
    jobs: std_mpsc::Receiver<Job>,
    out: mpsc::UnboundedSender<OutFrame>,
    cancels: Arc<Mutex<HashMap<RequestId, Arc<AtomicBool>>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("usage-compute".into())
        .spawn(move || {
            let engine_config = EngineConfig {
                state_dir: config.state_dir.clone(),
                data_dir: config.data_dir.clone(),
                max_line_bytes: config.max_line_bytes,
                threads: config.threads,
            };
            let mut engine = Engine::new(engine_config.clone());
            // Off the handshake and ping path: the async side answers those meanwhile.
            engine.load_persisted();
            let budget = crate::budget::Watch::start(config.memory_budget);
            loop {
                // Wait for a job, or until a debounced save of changed rollups is due. A due
                // save goes before queued jobs: under steady load the queue is never empty.
                let job = match engine.save_due_in() {
                    Some(Duration::ZERO) => {
                        engine.save_if_dirty();
                        continue;
                    }
                    None => match jobs.recv() {
                        Ok(job) => job,
                        Err(_) => break,
                    },
                    Some(wait) => match jobs.recv_timeout(wait) {
                        Ok(job) => job,
                        Err(std_mpsc::RecvTimeoutError::Timeout) => {
                            engine.save_if_dirty();
                            continue;
                        }
                        Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
                    },
                };
                let started = Instant::now();
                let result = if job.cancel.load(Ordering::Relaxed) {
                    Err(WorkerError::new(WorkerErrorKind::Cancelled, "cancelled before it started"))
                } else {
                    let guard = budget.guard(&job.cancel);
                    let id = job.id;
                    let progress_out = out.clone();
                    let mut progress = move |progress| {
                        if let Ok(frame) = encode(&FromWorker::Progress { id, progress }, 0) {
                            let _ = progress_out.send(OutFrame::bytes(frame));
                        }
                    };
                    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        match crate::fault::maybe_inject(&job.query, &job.cancel) {
                            Some(Err(error)) => Err(error),
                            _ => engine
                                .answer_parts(&job.query, &job.cancel, &mut progress)
                                .map(|(payload, stats)| (encode_answer(id, &payload, &stats), stats)),
                        }
                    }));
                    let res = res.unwrap_or_else(|_| {
                        Err(WorkerError::new(WorkerErrorKind::Internal, "the usage engine panicked"))
                    });
                    if guard.tripped() {
                        // Drop everything the engine holds: whatever pushed the heap over the
                        // budget must not stay resident and refuse the next job too.
                        engine = Engine::new(engine_config.clone());
                        Err(WorkerError::new(
                            WorkerErrorKind::OverBudget,
                            format!(
                                "the job needed more than the worker's memory budget of {} MiB; the worker stays up",
                                config.memory_budget >> 20
                            ),
                        ))
                    } else {
                        res
                    }
                };
                cancels.lock().expect("cancel map").remove(&job.id);
                match &result {
                    Ok((_, stats)) => tracing::info!(
                        id = job.id,
                        method = job.query.method.name(),
                        files = stats.files_total,
                        files_parsed = stats.files_parsed,
                        bytes_parsed = stats.bytes_parsed,
                        lines_skipped = stats.lines_skipped,
                        cache_kib = engine.cache_bytes() >> 10,
                        ms = started.elapsed().as_millis() as u64,
                        "Job done."
                    ),
                    Err(error) => tracing::info!(id = job.id, %error, "Job failed."),
                }
                let frame = match result {
                    Ok((Ok(frame), _)) => Ok(frame),
                    Ok((Err(e), _)) => Err(WorkerError::new(
                        WorkerErrorKind::Internal,
                        format!("cannot send the answer: {e}"),
                    )),
                    Err(error) => Err(error),
                };
                let frame = frame.unwrap_or_else(|error| {
                    OutFrame::bytes(
                        encode(&FromWorker::Response { id: job.id, result: Err(error) }, 0).unwrap_or_default(),
                    )
                });
                if out.send(frame).is_err() {
                    break;
                }
            }
            engine.save_if_dirty();
        })
        .expect("spawn the compute thread")
}

/// What the writer task sends: `head`, the payload's pieces, `tail`. Small messages are all
/// `head`.
struct OutFrame {
    head: Vec<u8>,
    parts: Vec<Arc<str>>,
    tail: Vec<u8>,
}

/// The writer's coalescing buffer: pieces (rows of a few KB) go out in writes of this size.
const WRITE_BUFFER: usize = 256 << 10;

impl OutFrame {
    fn bytes(head: Vec<u8>) -> OutFrame {
        OutFrame { head, parts: Vec::new(), tail: Vec::new() }
    }

    async fn write_to<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        w: &mut W,
        buf: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt as _;
        buf.clear();
        let pieces = std::iter::once(&self.head[..])
            .chain(self.parts.iter().map(|p| p.as_bytes()))
            .chain(std::iter::once(&self.tail[..]));
        for piece in pieces {
            if buf.len() + piece.len() > WRITE_BUFFER && !buf.is_empty() {
                w.write_all(buf).await?;
                buf.clear();
            }
            if piece.len() >= WRITE_BUFFER {
                w.write_all(piece).await?;
            } else {
                buf.extend_from_slice(piece);
            }
        }
        if !buf.is_empty() {
            w.write_all(buf).await?;
        }
        w.flush().await
    }
}

/// `FromWorker::Response { id, result: Ok(UsageAnswer { payload_json, stats }) }` with the
/// payload borrowed: the same MessagePack (variants and fields go by name).
#[derive(serde::Serialize)]
enum ResponseRef<'a> {
    Response { id: RequestId, result: Result<AnswerRef<'a>, WorkerError> },
}

#[derive(serde::Serialize)]
struct AnswerRef<'a> {
    payload_json: &'a str,
    stats: JobStats,
}

/// The frame of a successful answer without copying the payload: the message is encoded with
/// an empty `payload_json`, and the string's MessagePack header plus the payload's pieces take
/// the empty string's place. A test checks the bytes against ipc-proto's own encoding.
fn encode_answer(id: RequestId, payload: &Payload, stats: &JobStats) -> Result<OutFrame, String> {
    let msg = ResponseRef::Response { id, result: Ok(AnswerRef { payload_json: "", stats: *stats }) };
    let frame = encode(&msg, 0)?;
    // The key `payload_json` (a 12-byte fixstr), then the empty string (0xa0).
    let key: &[u8] = b"\xacpayload_json\xa0";
    let at = frame
        .windows(key.len())
        .position(|w| w == key)
        .ok_or("the answer's encoding has no payload_json field")?;
    let len = payload.len();
    let too_large = || format!("answer of {len} bytes is too large");
    let mut head = frame[..at + key.len() - 1].to_vec();
    match len {
        0..=31 => head.push(0xa0 | len as u8),
        32..=0xff => head.extend([0xd9, len as u8]),
        0x100..=0xffff => {
            head.push(0xda);
            head.extend((len as u16).to_be_bytes());
        }
        _ => {
            head.push(0xdb);
            head.extend(u32::try_from(len).map_err(|_| too_large())?.to_be_bytes());
        }
    }
    let tail = frame[at + key.len()..].to_vec();
    let body = u32::try_from(head.len() - 4 + len + tail.len()).map_err(|_| too_large())?;
    head[..4].copy_from_slice(&body.to_be_bytes());
    Ok(OutFrame { head, parts: payload.parts().to_vec(), tail })
}

/// One frame, exactly as `ipc_proto::frame::encode` lays it out (u32 big-endian length, then
/// named MessagePack), but in a buffer sized for `payload` bytes up front: a large answer is
/// then copied once, not again at every doubling of a growing buffer.
fn encode<T: serde::Serialize>(msg: &T, payload: usize) -> Result<Vec<u8>, String> {
    let mut buf = Vec::with_capacity(payload + 1024);
    buf.extend_from_slice(&[0u8; 4]);
    rmp_serde::encode::write_named(&mut buf, msg).map_err(|e| e.to_string())?;
    let len =
        u32::try_from(buf.len() - 4).map_err(|_| format!("answer of {} bytes is too large", buf.len()))?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_decode_with_ipc_proto() {
        let answer = ipc_proto::UsageAnswer {
            payload_json: "{\"a\":1}".repeat(1000).into(),
            stats: Default::default(),
        };
        let msg = FromWorker::Response { id: 7, result: Ok(answer) };
        let bytes = encode(&msg, 8000).unwrap();
        assert_eq!(bytes, frame::encode(&msg).unwrap());
        let back: FromWorker = frame::decode_frame(&bytes, ipc_proto::MAX_RESPONSE_FRAME).unwrap();
        assert_eq!(back, msg);
        // An answer's frame from its pieces is byte for byte ipc-proto's frame, for every
        // string header size, ids and stats of every size, and pieces split anywhere.
        for len in [0, 1, 31, 32, 255, 256, 65_535, 65_536, 300_000] {
            for id in [0, 200, u64::MAX - 3] {
                let stats =
                    JobStats { agents: 2, files_total: id % 7, bytes_parsed: 1 << 40, ..JobStats::default() };
                let text: String = (0..len).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
                let cut = len / 3;
                let parts = vec![Arc::from(&text[..cut]), Arc::from(""), Arc::from(&text[cut..])];
                let payload = Payload::from_parts(parts);
                let owned = FromWorker::Response {
                    id,
                    result: Ok(ipc_proto::UsageAnswer { payload_json: text.clone().into(), stats }),
                };
                let f = encode_answer(id, &payload, &stats).unwrap();
                // What the writer puts on the wire, through its coalescing buffer.
                let mut bytes: Vec<u8> = Vec::new();
                let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                rt.block_on(f.write_to(&mut bytes, &mut Vec::new())).unwrap();
                assert_eq!(bytes, frame::encode(&owned).unwrap(), "len {len}, id {id}");
            }
        }
    }
}
