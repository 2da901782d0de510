//! The supervision loop: start → handshake → serve (heartbeats, memory and job watch) → end →
//! backoff or `failed` cool-down → again. One loop for both modes; only how a worker is started
//! and whether we may kill it differ.

use std::{
    collections::HashMap,
    os::unix::process::ExitStatusExt,
    path::Path,
    process::ExitStatus,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use interprocess::local_socket::{
    tokio::Stream,
    traits::{StreamCommon as _, tokio::Listener as _},
};
use ipc_proto::{Connection, FromWorker, Hello, MAX_RESPONSE_FRAME, ToWorker, WorkerErrorKind, frame};
use tokio::{
    process::Child,
    sync::{mpsc, watch},
    time::{Instant, timeout},
};

use crate::{
    CallError, Config, Live, Mode, Shared,
    calls::{Calls, Job},
    cgroup::{self, WorkerCgroup},
    command::{self, StderrTail},
    memory,
    policy::{Intensity, jitter},
    status::{ExitCause, ExitInfo, Phase, exit_reason},
};

const BUILD: &str = env!("CARGO_PKG_VERSION");
/// How long a worker asked to shut down may take before it is killed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long a worker whose connection closed may take to exit on its own before it is killed.
const EXIT_AFTER_EOF: Duration = Duration::from_millis(500);

/// How one worker generation ended.
struct Ended {
    info: ExitInfo,
    /// It stayed ready long enough to reset the backoff.
    stable: bool,
    /// Jobs it had not answered, oldest first; the oldest is blamed for its death when
    /// `job_caused`.
    in_flight: Vec<(u64, Job)>,
    /// Whether the running job can have caused this end (see [`blame`]).
    job_caused: bool,
}

impl Ended {
    fn before_ready(info: ExitInfo) -> Ended {
        Ended { info, stable: false, in_flight: Vec::new(), job_caused: false }
    }
}

/// Runs until shutdown is requested.
pub(crate) async fn supervise(config: Config, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let socket = config.run_dir.join("worker.sock");
    let cgroup = match (&config.mode, config.use_cgroup) {
        (Mode::Managed, true) => cgroup::setup(config.memory_max),
        (Mode::Managed, false) => Err("disabled".to_owned()),
        (Mode::External { .. }, _) => Err("external mode: the worker's own unit sets MemoryMax=".to_owned()),
    };
    match &cgroup {
        Ok(cg) => {
            tracing::info!(path = %cg.path.display(), "Worker memory cap enforced by a cgroup v2 memory.max.")
        }
        Err(reason) => {
            tracing::info!(%reason, "No cgroup for the worker; the budget and RSS layers enforce the cap.")
        }
    }
    let socket_path = match &config.mode {
        Mode::Managed => socket.clone(),
        Mode::External { socket } => socket.clone(),
    };
    shared.status.send_modify(|s| {
        s.socket = Some(socket_path);
        s.memory.cgroup = cgroup.as_ref().map(|cg| cg.path.display().to_string()).map_err(Clone::clone);
    });
    let cgroup = cgroup.ok();

    let mut failures: u32 = 0;
    let mut intensity = Intensity::default();
    loop {
        if is_stopping(&shutdown) {
            break;
        }
        let generation = match &config.mode {
            Mode::Managed => run_managed(&config, &shared, &socket, cgroup.as_ref(), &mut shutdown).await,
            Mode::External { socket } => run_external(&config, &shared, socket, &mut shutdown).await,
        };
        let Some(ended) = generation else { break };
        blame(&shared, &ended);
        if ended.stable {
            failures = 0;
        }
        let cause = ended.info.cause;
        tracing::warn!(
            cause = cause.as_str(),
            pid = ended.info.pid,
            code = ended.info.code,
            signal = ended.info.signal,
            "Usage worker ended."
        );
        let (phase, delay) = if cause == ExitCause::ConfigError {
            tracing::error!(
                "Usage worker reported a configuration error (exit 78); retrying only after a long cool-down."
            );
            (Phase::Failed, config.restart.config_error_cooldown)
        } else if intensity.record(&config.restart, Instant::now()) {
            intensity.clear();
            failures = 0;
            tracing::error!(
                max_restarts = config.restart.max_restarts,
                window_s = config.restart.window.as_secs(),
                "Usage worker is crash-looping; parking it in failed for a cool-down."
            );
            (Phase::Failed, config.restart.cooldown)
        } else {
            let delay = config.restart.delay(failures, jitter());
            failures = failures.saturating_add(1);
            (Phase::Backoff, delay)
        };
        let retry_at = Instant::now() + delay;
        shared.status.send_modify(|s| {
            s.phase = phase;
            s.pid = None;
            s.ready_since = None;
            s.restarts += 1;
            *s.restarts_by_cause.entry(cause.as_str()).or_default() += 1;
            s.last_exit = Some(ended.info.clone());
            s.retry_after = Some(delay);
        });
        tracing::info!(
            phase = phase.as_str(),
            delay_ms = delay.as_millis() as u64,
            "Usage worker phase changed."
        );
        // Keep `retry_after` counting down for callers and status readers.
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(retry_at) => break,
                _ = tick.tick() => {
                    let left = retry_at.saturating_duration_since(Instant::now());
                    shared.status.send_modify(|s| s.retry_after = Some(left));
                }
                () = stopped(&mut shutdown) => break,
            }
        }
    }
    shared.status.send_modify(|s| {
        s.phase = Phase::Stopped;
        s.pid = None;
        s.retry_after = None;
    });
    tracing::info!("Usage worker supervision stopped.");
    if config.mode == Mode::Managed {
        let _ = std::fs::remove_file(&socket);
    }
}

/// Counts a death against the job that was running (the worker runs jobs in order, so the
/// oldest unanswered one), so a query that kills two workers is refused as poison. Only ends
/// the job can have caused count: a crash, abort, panic, memory kill, or a job that ignored its
/// cancel. A SIGKILL from outside or a stopped process (missed heartbeats) is not the query's
/// fault, and must not get a dashboard's query refused.
fn blame(shared: &Shared, ended: &Ended) {
    if !ended.job_caused {
        return;
    }
    let Some((_, job)) = ended.in_flight.first() else { return };
    let mut deaths = shared.deaths.lock().expect("deaths");
    let entry = deaths.entry(job.query_key).or_insert((0, Instant::now()));
    entry.0 += 1;
    entry.1 = Instant::now();
    tracing::warn!(deaths = entry.0, "A usage query was running when its worker died.");
}

fn set_phase(shared: &Shared, phase: Phase, pid: Option<u32>) {
    shared.status.send_modify(|s| {
        s.phase = phase;
        s.pid = pid;
        s.retry_after = None;
    });
    tracing::info!(phase = phase.as_str(), pid, "Usage worker phase changed.");
}

/// Reads and decodes one worker frame. Decoding an answer checks its text is UTF-8, a few ms for
/// 10 MB: large frames are decoded on the blocking pool, so no runtime thread stalls on it.
async fn read_from_worker<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Option<FromWorker>, ipc_proto::ProtoError> {
    let Some(body) = frame::read_frame(reader, MAX_RESPONSE_FRAME).await? else { return Ok(None) };
    if body.len() < LARGE_FRAME {
        return frame::decode_owned(body).map(Some);
    }
    match tokio::task::spawn_blocking(move || frame::decode_owned(body)).await {
        Ok(decoded) => decoded.map(Some),
        Err(error) => Err(ipc_proto::ProtoError::Io(std::io::Error::other(error))),
    }
}

/// Frames from this size on are decoded off the runtime.
const LARGE_FRAME: usize = 1 << 20;

/// Managed mode: spawn, handshake, serve. `None` means shutdown was requested (the worker has
/// been stopped and reaped).
async fn run_managed(
    config: &Config,
    shared: &Arc<Shared>,
    socket: &Path,
    cgroup: Option<&WorkerCgroup>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Ended> {
    set_phase(shared, Phase::Spawning, None);
    let spawned = match ipc_proto::endpoint::ensure_private_dir(&config.run_dir)
        .and_then(|()| ipc_proto::endpoint::bind(socket))
    {
        Ok(listener) => command::spawn_from_forker(config, socket).await.map(|spawned| (listener, spawned)),
        Err(error) => Err(error),
    };
    let (listener, (mut child, mut stderr_tail)) = match spawned {
        Ok(ok) => ok,
        Err(error) => {
            tracing::error!(%error, bin = %config.worker_bin.display(), "Cannot start the usage worker.");
            let info = exit_info(ExitCause::SpawnFailed, None, None, Vec::new())
                .because(format!("cannot start {}: {error}", config.worker_bin.display()));
            return Some(Ended::before_ready(info));
        }
    };
    let pid = child.id();
    if let (Some(cgroup), Some(pid)) = (cgroup, pid) {
        if let Err(error) = cgroup.add(pid) {
            tracing::warn!(%error, "Cannot move the worker into its cgroup.");
        }
    }
    set_phase(shared, Phase::Handshaking, pid);

    // Readiness is an accepted connection from the spawned worker itself plus a valid Hello
    // within the deadline. Any other process of ours that connects first (the socket is 0600
    // in a 0700 directory, so only our user can) is refused and the listener keeps waiting.
    let handshake = async {
        let stream = loop {
            let stream = listener.accept().await?;
            match check_peer(&stream, pid) {
                Ok(()) => break stream,
                Err(why) => {
                    tracing::warn!(%why, "Refused a connection to the worker socket: not the spawned worker.");
                    shared.status.send_modify(|s| s.rejected_peers += 1);
                }
            }
        };
        let mut conn = Connection::new(stream, MAX_RESPONSE_FRAME);
        let hello = conn.handshake_as_gateway(BUILD).await?;
        Ok::<_, ipc_proto::ProtoError>((conn, hello))
    };
    let (conn, hello) = tokio::select! {
        res = timeout(config.handshake_timeout, handshake) => match res {
            Ok(Ok(conn)) => conn,
            Ok(Err(error)) => {
                tracing::warn!(%error, "Usage worker handshake failed.");
                return Some(Ended::before_ready(stop_child(&mut child, ExitCause::Handshake, &mut stderr_tail).await));
            }
            Err(_) => {
                tracing::warn!("Usage worker did not complete its handshake in time.");
                return Some(Ended::before_ready(stop_child(&mut child, ExitCause::Handshake, &mut stderr_tail).await));
            }
        },
        status = child.wait() => {
            let status = status.ok();
            let cause = classify(status, ExitCause::Handshake);
            let tail = stderr_tail.collect().await;
            return Some(Ended::before_ready(exit_info(cause, pid, status, tail)));
        }
        () = stopped(shutdown) => {
            stop_child(&mut child, ExitCause::ConnectionLost, &mut stderr_tail).await;
            return None;
        }
    };
    drop(listener);
    let worker = Worker { child: Some(child), stderr_tail, cgroup: cgroup.cloned(), pid };
    serve(config, shared, conn.into_inner(), hello, worker, shutdown).await
}

/// External mode: connect to the worker systemd runs, handshake, serve.
async fn run_external(
    config: &Config,
    shared: &Arc<Shared>,
    socket: &Path,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Ended> {
    set_phase(shared, Phase::Handshaking, None);
    let connect = async {
        let stream = ipc_proto::endpoint::connect(socket).await?;
        let mut conn = Connection::new(stream, MAX_RESPONSE_FRAME);
        let hello = conn.handshake_as_gateway(BUILD).await?;
        Ok::<_, ipc_proto::ProtoError>((conn, hello))
    };
    let (conn, hello) = tokio::select! {
        res = timeout(config.handshake_timeout, connect) => match res {
            Ok(Ok(conn)) => conn,
            Ok(Err(error)) => {
                tracing::warn!(%error, socket = %socket.display(), "Cannot reach the external usage worker.");
                let info = exit_info(ExitCause::Handshake, None, None, Vec::new())
                    .because(format!("cannot reach the worker at {}: {error}", socket.display()));
                return Some(Ended::before_ready(info));
            }
            Err(_) => {
                tracing::warn!(socket = %socket.display(), "The external usage worker did not answer in time.");
                let info = exit_info(ExitCause::Handshake, None, None, Vec::new()).because(format!(
                    "the worker at {} did not complete a handshake within {:?}",
                    socket.display(),
                    config.handshake_timeout
                ));
                return Some(Ended::before_ready(info));
            }
        },
        () = stopped(shutdown) => return None,
    };
    let pid = Some(hello.pid);
    let worker = Worker { child: None, stderr_tail: StderrTail::default(), cgroup: None, pid };
    serve(config, shared, conn.into_inner(), hello, worker, shutdown).await
}

/// The process side of a generation: a child we own (managed) or nothing we may kill (external).
struct Worker {
    child: Option<Child>,
    stderr_tail: StderrTail,
    cgroup: Option<WorkerCgroup>,
    pid: Option<u32>,
}

impl Worker {
    async fn wait(&mut self) -> Option<ExitStatus> {
        match &mut self.child {
            Some(child) => child.wait().await.ok(),
            None => std::future::pending().await,
        }
    }

    /// Kills (managed) and reaps; in external mode only the connection is dropped.
    async fn stop(&mut self, cause: ExitCause) -> ExitInfo {
        match &mut self.child {
            Some(child) => stop_child(child, cause, &mut self.stderr_tail).await,
            None => exit_info(cause, self.pid, None, Vec::new()),
        }
    }

    /// The exit report for a worker that ended by itself.
    async fn exited(&mut self, cause: ExitCause, status: Option<ExitStatus>) -> ExitInfo {
        let tail = self.stderr_tail.collect().await;
        exit_info(cause, self.pid, status, tail)
    }
}

/// What ended the serve loop.
enum Outcome {
    Exited(Option<ExitStatus>),
    ConnectionLost,
    Kill(ExitCause),
    /// A cancelled job outlived its grace: kill, as a hang the job caused.
    JobHang,
    Shutdown,
}

/// The ready phase: route messages, ping, watch memory and job deadlines, until the worker ends.
async fn serve(
    config: &Config,
    shared: &Arc<Shared>,
    stream: Stream,
    hello: Hello,
    mut worker: Worker,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Ended> {
    let pid = worker.pid;
    let stream = Arc::new(stream);
    let (to_worker, mut outbox) = mpsc::unbounded_channel::<ToWorker>();
    let calls: Arc<Mutex<Calls>> = Arc::default();
    let oom_kills_before = worker.cgroup.as_ref().map(WorkerCgroup::oom_kills);

    let writer_stream = Arc::clone(&stream);
    let writer = tokio::spawn(async move {
        let mut writer = &*writer_stream;
        while let Some(msg) = outbox.recv().await {
            if frame::write_msg(&mut writer, &msg).await.is_err() {
                break;
            }
        }
    });

    let (pong_tx, mut pong_rx) = mpsc::unbounded_channel::<(u64, ipc_proto::MemoryReport)>();
    let reader_stream = Arc::clone(&stream);
    let reader_calls = Arc::clone(&calls);
    let reader_shared = Arc::clone(shared);
    let mut reader = tokio::spawn(async move {
        let mut reader = &*reader_stream;
        loop {
            match read_from_worker(&mut reader).await {
                Ok(Some(FromWorker::Response { id, result })) => {
                    if matches!(&result, Err(e) if e.kind == WorkerErrorKind::OverBudget) {
                        let rss = pid.and_then(memory::rss_bytes);
                        reader_shared.status.send_modify(|s| {
                            s.memory.budget_refusals += 1;
                            s.memory.last_action = Some(("budget", SystemTime::now(), rss));
                        });
                        tracing::warn!(id, "The usage worker refused a job over its memory budget.");
                    }
                    reader_calls.lock().expect("calls").answer(id, result.map_err(CallError::Worker));
                }
                Ok(Some(FromWorker::Pong { seq, memory })) if seq >= crate::PROBE_PING_BASE => {
                    let waiter = reader_calls.lock().expect("calls").pings.remove(&seq);
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(memory);
                    }
                }
                Ok(Some(FromWorker::Pong { seq, memory })) => {
                    let _ = pong_tx.send((seq, memory));
                }
                Ok(Some(FromWorker::Progress { id, progress })) => {
                    reader_shared.progress.send_replace(Some(progress));
                    tracing::debug!(
                        id,
                        files_done = progress.files_done,
                        files_total = progress.files_total,
                        "Job progress."
                    );
                }
                Ok(Some(FromWorker::Hello(_))) => tracing::warn!("Unexpected second Hello from the worker."),
                Ok(None) => break,
                // The socket failing is the connection ending, not a bad frame: a worker that
                // exits with a ping unread resets it (most clean stops did), and what ended the
                // worker is reported where its exit is.
                Err(ipc_proto::ProtoError::Io(error)) => {
                    tracing::debug!(%error, "The usage worker's connection ended.");
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "Bad frame from the usage worker; dropping the connection.");
                    break;
                }
            }
        }
    });

    *shared.live.lock().expect("live slot") =
        Some(Live { to_worker: to_worker.clone(), calls: Arc::clone(&calls) });
    let ready_at = Instant::now();
    shared.status.send_modify(|s| {
        s.ready_since = Some(ready_at);
        s.build = Some(hello.build.clone());
    });
    set_phase(shared, Phase::Ready, pid);

    let mut heartbeat = tokio::time::interval(config.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watch = tokio::time::interval(config.watch_interval);
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq: u64 = 0;
    let mut last_answered: u64 = 0;
    let mut sent_at: HashMap<u64, Instant> = HashMap::new();

    let outcome = loop {
        tokio::select! {
            status = worker.wait() => break Outcome::Exited(status),
            _ = &mut reader => break Outcome::ConnectionLost,
            Some((pong_seq, memory)) = pong_rx.recv() => {
                last_answered = last_answered.max(pong_seq);
                let rtt = sent_at.remove(&pong_seq).map(|at| at.elapsed());
                sent_at.retain(|s, _| *s > pong_seq);
                shared.status.send_modify(|s| {
                    s.reported_memory = Some(memory);
                    s.last_ping_rtt = rtt.or(s.last_ping_rtt);
                });
            }
            _ = heartbeat.tick() => {
                if seq.saturating_sub(last_answered) >= u64::from(config.heartbeat_misses) {
                    tracing::warn!(pid, missed = seq - last_answered, "Usage worker stopped answering pings.");
                    break Outcome::Kill(ExitCause::Hang);
                }
                seq += 1;
                sent_at.insert(seq, Instant::now());
                let _ = to_worker.send(ToWorker::Ping { seq });
            }
            _ = watch.tick() => {
                let rss = pid.and_then(memory::rss_bytes);
                shared.status.send_modify(|s| s.rss_bytes = rss);
                if worker.child.is_some() && rss.is_some_and(|r| r > config.memory_max) {
                    tracing::warn!(pid, rss, cap = config.memory_max, "Usage worker is over its memory cap; killing it.");
                    shared.status.send_modify(|s| {
                        s.memory.rss_kills += 1;
                        s.memory.last_action = Some(("rss", SystemTime::now(), rss));
                    });
                    break Outcome::Kill(ExitCause::RssCap);
                }
                if check_jobs(config, &calls, &to_worker) {
                    break Outcome::JobHang;
                }
            }
            () = stopped(shutdown) => break Outcome::Shutdown,
        }
    };

    let mut stopping = false;
    // A hang found by the job watch (a cancelled job still running) is the job's doing; one
    // found by missed heartbeats (a stopped or starved process) is not.
    let mut job_hang = false;
    let info = match outcome {
        Outcome::Exited(status) => {
            let mut cause = classify(status, ExitCause::ConnectionLost);
            if cause == ExitCause::Signal && oom_killed(&worker, oom_kills_before, shared) {
                cause = ExitCause::OomKill;
            }
            worker.exited(cause, status).await
        }
        // External mode: there is no process of ours to wait for.
        Outcome::ConnectionLost if worker.child.is_none() => worker.stop(ExitCause::ConnectionLost).await,
        Outcome::ConnectionLost => {
            // Usually the process is dying too: give it a moment so its real exit status is
            // what we report; if it lingers, it must not stay.
            match timeout(EXIT_AFTER_EOF, worker.wait()).await {
                Ok(status) => {
                    let mut cause = classify(status, ExitCause::ConnectionLost);
                    if cause == ExitCause::Signal && oom_killed(&worker, oom_kills_before, shared) {
                        cause = ExitCause::OomKill;
                    }
                    worker.exited(cause, status).await
                }
                Err(_) => worker.stop(ExitCause::ConnectionLost).await,
            }
        }
        Outcome::Kill(cause) => worker.stop(cause).await,
        Outcome::JobHang => {
            job_hang = true;
            worker.stop(ExitCause::Hang).await
        }
        Outcome::Shutdown => {
            stopping = true;
            let _ = to_worker.send(ToWorker::Shutdown);
            match timeout(SHUTDOWN_GRACE, worker.wait()).await {
                Ok(status) => exit_info(ExitCause::ConnectionLost, pid, status, Vec::new()),
                Err(_) => worker.stop(ExitCause::ConnectionLost).await,
            }
        }
    };

    *shared.live.lock().expect("live slot") = None;
    let in_flight = calls.lock().expect("calls").fail_all();
    reader.abort();
    writer.abort();
    if stopping {
        return None;
    }
    let stable = ready_at.elapsed() >= config.restart.stable_after;
    let job_caused = job_hang
        || matches!(
            info.cause,
            ExitCause::Crash | ExitCause::Abort | ExitCause::Panic | ExitCause::RssCap | ExitCause::OomKill
        );
    Some(Ended { info, stable, in_flight, job_caused })
}

/// Cancels jobs past the job deadline; true (a hang) when a cancelled job outlives its grace.
fn check_jobs(config: &Config, calls: &Mutex<Calls>, to_worker: &mpsc::UnboundedSender<ToWorker>) -> bool {
    let mut calls = calls.lock().expect("calls");
    for (id, job) in calls.jobs.iter_mut() {
        match job.cancel_sent {
            None if job.started.elapsed() > config.job_timeout => {
                tracing::warn!(
                    id,
                    timeout_s = config.job_timeout.as_secs(),
                    "Usage job ran past its deadline; cancelling it."
                );
                job.cancel_sent = Some(Instant::now());
                let _ = to_worker.send(ToWorker::Cancel { id: *id });
            }
            Some(at) if at.elapsed() > config.cancel_grace => {
                tracing::warn!(id, "Usage job ignored its cancel; the worker counts as hung.");
                return true;
            }
            _ => {}
        }
    }
    false
}

fn oom_killed(worker: &Worker, before: Option<u64>, shared: &Shared) -> bool {
    let (Some(cgroup), Some(before)) = (&worker.cgroup, before) else { return false };
    let killed = cgroup.oom_kills() > before;
    if killed {
        shared.status.send_modify(|s| {
            s.memory.oom_kills += 1;
            s.memory.last_action = Some(("cgroup", SystemTime::now(), None));
        });
    }
    killed
}

/// Kills and reaps the child.
async fn stop_child(child: &mut Child, cause: ExitCause, tail: &mut StderrTail) -> ExitInfo {
    let pid = child.id();
    let _ = child.start_kill();
    let status = child.wait().await.ok();
    exit_info(cause, pid, status, tail.collect().await)
}

/// Turns an exit status into a cause, given what we expected at that point.
fn classify(status: Option<ExitStatus>, default: ExitCause) -> ExitCause {
    match status {
        Some(status) if status.code() == Some(78) => ExitCause::ConfigError,
        Some(status) if status.code() == Some(101) => ExitCause::Panic,
        Some(status) if status.signal() == Some(libc::SIGABRT) => ExitCause::Abort,
        Some(status) if status.signal().is_some() => ExitCause::Signal,
        Some(status) if status.code().is_some_and(|c| c != 0) => ExitCause::Crash,
        _ => default,
    }
}

/// The report of an ended generation. A worker that exited with an error code by itself gets
/// its own last error line as the reason; one we killed, or that a signal ended, gets none
/// (its last lines are in the tail, but they are not why it ended).
fn exit_info(
    cause: ExitCause,
    pid: Option<u32>,
    status: Option<ExitStatus>,
    stderr_tail: Vec<String>,
) -> ExitInfo {
    let code = status.and_then(|s| s.code());
    let reason = code.filter(|c| *c != 0).and_then(|_| exit_reason(&stderr_tail));
    ExitInfo {
        cause,
        pid,
        code,
        signal: status.and_then(|s| s.signal()),
        at: SystemTime::now(),
        stderr_tail,
        reason,
    }
}

impl ExitInfo {
    /// The same report with a reason we know better than the worker's stderr.
    fn because(self, reason: String) -> ExitInfo {
        ExitInfo { reason: Some(reason), ..self }
    }
}

/// Whether the process at the other end of `stream` is the worker we spawned: same pid (the
/// worker is our child, or a wrapper that `exec`s it), same effective uid, as the kernel
/// reports them (`SO_PEERCRED`), not as the peer claims in its `Hello`.
fn check_peer(stream: &Stream, child: Option<u32>) -> Result<(), String> {
    let creds = stream.peer_creds().map_err(|e| format!("cannot read the peer's credentials: {e}"))?;
    let (pid, uid) = (creds.pid(), creds.euid());
    let ours = nix::unistd::geteuid().as_raw();
    if uid != Some(ours) {
        return Err(format!("peer uid {uid:?} is not ours ({ours})"));
    }
    match (pid, child) {
        (Some(pid), Some(child)) if u32::try_from(pid).ok() == Some(child) => Ok(()),
        (pid, child) => Err(format!("peer pid {pid:?} is not the spawned worker's ({child:?})")),
    }
}

/// Resolves once shutdown has been requested; the watch guard is dropped before returning so
/// the future stays `Send`.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}

fn is_stopping(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow()
}
