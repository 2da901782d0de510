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
    Connection, FromWorker, MAX_REQUEST_FRAME, MemoryReport, RequestId, ToWorker, UsageQuery, UsageReply,
    WorkerError, WorkerErrorKind, frame,
};
use tokio::sync::mpsc;

use crate::{
    alloc,
    engine::{Engine, EngineConfig, Reply},
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
    /// No idle moments will come (`--one-shot`): calls do what they would leave to them.
    pub one_shot: bool,
}

impl Config {
    /// Bytes of rendered rows one answer may hold: a quarter of the heap budget, so that the
    /// answer, its copy on the way out and everything else fit. Past it, rows are cut with a
    /// diagnostic rather than the answer refused (0: no budget, no cut).
    pub fn answer_budget(&self) -> usize {
        (self.memory_budget / 4) as usize
    }
}

const BUILD: &str = env!("CARGO_PKG_VERSION");

/// A job handed to the compute thread.
struct Job {
    id: RequestId,
    query: UsageQuery,
    known: Option<u64>,
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
                if let Ok(frame) = frame::encode(&FromWorker::Pong { seq, memory }) {
                    let _ = out_tx.send(OutFrame::bytes(frame));
                }
            }
            ToWorker::Request { id, query, known } => {
                let cancel = Arc::new(AtomicBool::new(false));
                cancels.lock().expect("cancel map").insert(id, Arc::clone(&cancel));
                if job_tx.send(Job { id, query, known, cancel }).is_err() {
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

/// Idle work ([`Engine::maintain`]) under the same memory budget and panic guard as a job; a
/// failure is logged and left to the next call, which finds the same work due.
fn maintain(engine: &mut Engine, budget: &crate::budget::Watch) {
    let cancel = Arc::new(AtomicBool::new(false));
    let guard = budget.guard(&cancel);
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.maintain(&cancel)));
    if guard.tripped() {
        engine.shed();
        crate::alloc::trim();
        tracing::warn!("Idle listing went over the memory budget; the next call lists again.");
        return;
    }
    match res {
        Ok(Ok(agents)) if !agents.is_empty() => {
            tracing::debug!(?agents, "Listed databases completely while idle.")
        }
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::warn!(%error, "Idle listing failed; the next call lists again."),
        Err(_) => tracing::warn!("Idle listing panicked; the next call lists again."),
    }
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
                answer_budget: config.answer_budget(),
                one_shot: config.one_shot,
            };
            let mut engine = Engine::new(engine_config);
            // Off the handshake and ping path: the async side answers those meanwhile.
            if let Err(error) = engine.open() {
                tracing::warn!(%error, "Cannot open the usage index; every job will say why.");
            }
            let budget = crate::budget::Watch::start(config.memory_budget);
            let mut unsaved = false;
            loop {
                // Idle for a second after work: save what a restarted worker can reuse.
                let job = match jobs.recv_timeout(std::time::Duration::from_secs(1)) {
                    Ok(job) => job,
                    Err(std_mpsc::RecvTimeoutError::Timeout) => {
                        maintain(&mut engine, &budget);
                        if std::mem::take(&mut unsaved) {
                            engine.save();
                        }
                        continue;
                    }
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
                };
                unsaved = true;
                let started = Instant::now();
                let result = if job.cancel.load(Ordering::Relaxed) {
                    Err(WorkerError::new(WorkerErrorKind::Cancelled, "cancelled before it started"))
                } else {
                    let guard = budget.guard(&job.cancel);
                    let id = job.id;
                    let progress_out = out.clone();
                    let mut progress = move |progress| {
                        if let Ok(frame) = frame::encode(&FromWorker::Progress { id, progress }) {
                            let _ = progress_out.send(OutFrame::bytes(frame));
                        }
                    };
                    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        match crate::fault::maybe_inject(&job.query, &job.cancel) {
                            Some(Err(error)) => Err(error),
                            _ => engine.reply(&job.query, job.known, &job.cancel, &mut progress),
                        }
                    }));
                    let res = res.unwrap_or_else(|_| {
                        Err(WorkerError::new(WorkerErrorKind::Internal, "the usage engine panicked"))
                    });
                    if guard.tripped() {
                        // Drop everything the engine holds between calls: whatever pushed the
                        // heap over the budget must not stay resident and refuse the next job.
                        engine.shed();
                        crate::alloc::trim();
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
                if result.as_ref().is_ok_and(|(_, s)| s.bytes_parsed > 64 << 20) {
                    // A big parse leaves freed buffers behind: give them back now.
                    crate::alloc::trim();
                }
                let frame = match result {
                    Ok((Reply::Answer(a), stats)) => {
                        match frame::answer_frame_head(job.id, &a.meta, &stats, a.fingerprint, a.data.len()) {
                            Ok(head) => OutFrame { head, parts: a.data.parts().to_vec() },
                            Err(e) => error_frame(
                                job.id,
                                WorkerError::new(WorkerErrorKind::Internal, format!("cannot send the answer: {e}")),
                            ),
                        }
                    }
                    Ok((Reply::Unchanged(meta), stats)) => OutFrame::bytes(
                        frame::encode(&FromWorker::Response {
                            id: job.id,
                            result: Ok(UsageReply::Unchanged { meta, stats }),
                        })
                        .unwrap_or_default(),
                    ),
                    Err(error) => error_frame(job.id, error),
                };
                if out.send(frame).is_err() {
                    break;
                }
                // After the answer is on its way, not before it.
                engine.after_answer();
            }
        })
        .expect("spawn the compute thread")
}

fn error_frame(id: RequestId, error: WorkerError) -> OutFrame {
    OutFrame::bytes(frame::encode(&FromWorker::Response { id, result: Err(error) }).unwrap_or_default())
}

/// What the writer task sends: `head`, then the answer's pieces. Small messages are all `head`.
struct OutFrame {
    head: Vec<u8>,
    parts: Vec<Arc<str>>,
}

/// The writer's coalescing buffer: pieces (rows of a few KB) go out in writes of this size.
const WRITE_BUFFER: usize = 256 << 10;

impl OutFrame {
    fn bytes(head: Vec<u8>) -> OutFrame {
        OutFrame { head, parts: Vec::new() }
    }

    async fn write_to<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        w: &mut W,
        buf: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt as _;
        buf.clear();
        let pieces = std::iter::once(&self.head[..]).chain(self.parts.iter().map(|p| p.as_bytes()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use ipc_proto::{AnswerMeta, JobStats, UsageAnswer};

    #[test]
    fn an_answer_written_from_pieces_is_ipc_protos_frame() {
        // The writer's coalescing buffer must not change the bytes: pieces of every size,
        // split anywhere, come out as ipc-proto's frame of the whole answer.
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        for len in [1usize, 300, 300_000, 700_000] {
            let text: String = (0..len).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
            let (a, b) = text.split_at(len / 3);
            let parts: Vec<Arc<str>> = vec![Arc::from(a), Arc::from(""), Arc::from(b)];
            let meta =
                AnswerMeta { updated_at: Some(5), cache: None, diagnostics: None, rows_total: Some(1) };
            let stats = JobStats { files_total: 9, ..JobStats::default() };
            let head = frame::answer_frame_head(7, &meta, &stats, 3, len).unwrap();
            let f = OutFrame { head, parts };
            let mut bytes: Vec<u8> = Vec::new();
            rt.block_on(f.write_to(&mut bytes, &mut Vec::new())).unwrap();
            let whole = FromWorker::Response {
                id: 7,
                result: Ok(UsageReply::Answer(UsageAnswer {
                    meta,
                    stats,
                    fingerprint: 3,
                    data_json: text.into(),
                })),
            };
            assert_eq!(bytes, frame::encode(&whole).unwrap(), "len {len}");
        }
    }
}
