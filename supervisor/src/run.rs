//! The supervision loop: spawn → handshake → serve (heartbeats) → exit → backoff → again.

use std::{
    collections::HashMap,
    os::unix::process::ExitStatusExt,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use interprocess::local_socket::traits::tokio::Listener as _;
use ipc_proto::{Connection, FromWorker, MAX_RESPONSE_FRAME, ToWorker, frame};
use tokio::{
    process::Child,
    sync::{mpsc, watch},
    time::timeout,
};

use crate::{
    CallError, Config, Live, Shared,
    command::{self, StderrTail},
    memory,
    policy::clock_jitter,
    status::{ExitCause, ExitInfo, Phase},
};

const BUILD: &str = env!("CARGO_PKG_VERSION");
/// How long a worker asked to shut down may take before it is killed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long a worker whose connection closed may take to exit on its own before it is killed.
const EXIT_AFTER_EOF: Duration = Duration::from_millis(500);

/// Runs until shutdown is requested.
pub(crate) async fn supervise(config: Config, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let socket = config.run_dir.join("worker.sock");
    let mut failures: u32 = 0;
    loop {
        if is_stopping(&shutdown) {
            break;
        }
        let generation = run_generation(&config, &shared, &socket, &mut shutdown).await;
        let Some(ended) = generation else { break };
        if ended.stable {
            failures = 0;
        }
        let cause = ended.info.cause;
        tracing::warn!(
            cause = cause.as_str(),
            pid = ended.info.pid,
            code = ended.info.code,
            signal = ended.info.signal,
            "Usage worker exited."
        );
        if cause == ExitCause::ConfigError {
            shared.status.send_modify(|s| {
                s.phase = Phase::Failed;
                s.pid = None;
                s.last_exit = Some(ended.info.clone());
            });
            tracing::error!("Usage worker reported a configuration error (exit 78); not restarting.");
            stopped(&mut shutdown).await;
            break;
        }
        let delay = config.restart.delay(failures, clock_jitter());
        failures = failures.saturating_add(1);
        shared.status.send_modify(|s| {
            s.phase = Phase::Backoff;
            s.pid = None;
            s.ready_since = None;
            s.restarts += 1;
            *s.restarts_by_cause.entry(cause.as_str()).or_default() += 1;
            s.last_exit = Some(ended.info.clone());
            s.retry_after = Some(delay);
        });
        tracing::info!(delay_ms = delay.as_millis() as u64, "Restarting the usage worker after backoff.");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stopped(&mut shutdown) => break,
        }
    }
    shared.status.send_modify(|s| {
        s.phase = Phase::Stopped;
        s.pid = None;
        s.retry_after = None;
    });
    let _ = std::fs::remove_file(&socket);
}

/// How one worker generation ended.
struct Ended {
    info: ExitInfo,
    /// It stayed ready long enough to reset the backoff.
    stable: bool,
}

fn set_phase(shared: &Shared, phase: Phase, pid: Option<u32>) {
    shared.status.send_modify(|s| {
        s.phase = phase;
        s.pid = pid;
        s.retry_after = None;
    });
    tracing::info!(phase = phase.as_str(), pid, "Usage worker phase changed.");
}

/// Spawns one worker and serves it until it ends. `None` means shutdown was requested (the
/// worker has been stopped and reaped).
async fn run_generation(
    config: &Config,
    shared: &Arc<Shared>,
    socket: &std::path::Path,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Ended> {
    set_phase(shared, Phase::Spawning, None);
    let spawned = ipc_proto::endpoint::ensure_private_dir(&config.run_dir)
        .and_then(|()| ipc_proto::endpoint::bind(socket))
        .and_then(|listener| Ok((listener, command::spawn_worker(config, socket)?)));
    let (listener, (mut child, stderr_tail)) = match spawned {
        Ok(ok) => ok,
        Err(error) => {
            tracing::error!(%error, bin = %config.worker_bin.display(), "Cannot start the usage worker.");
            return Some(Ended { info: exit_info(ExitCause::SpawnFailed, None, None, &None), stable: false });
        }
    };
    let pid = child.id();
    set_phase(shared, Phase::Handshaking, pid);

    // Readiness is an accepted connection plus a valid Hello within the deadline.
    let handshake = async {
        let stream = listener.accept().await?;
        let mut conn = Connection::new(stream, MAX_RESPONSE_FRAME);
        let hello = conn.handshake_as_gateway(BUILD).await?;
        Ok::<_, ipc_proto::ProtoError>((conn, hello))
    };
    let conn = tokio::select! {
        res = timeout(config.handshake_timeout, handshake) => match res {
            Ok(Ok(conn)) => conn,
            Ok(Err(error)) => {
                tracing::warn!(%error, "Usage worker handshake failed.");
                return Some(stop_child(&mut child, ExitCause::Handshake, &stderr_tail).await);
            }
            Err(_) => {
                tracing::warn!("Usage worker did not complete its handshake in time.");
                return Some(stop_child(&mut child, ExitCause::Handshake, &stderr_tail).await);
            }
        },
        status = child.wait() => {
            let status = status.ok();
            let cause = classify(status, ExitCause::Handshake);
            return Some(Ended { info: exit_from_status(cause, pid, status, &stderr_tail), stable: false });
        }
        () = stopped(shutdown) => {
            stop_child(&mut child, ExitCause::ConnectionLost, &stderr_tail).await;
            return None;
        }
    };
    drop(listener);
    let (conn, hello) = conn;
    shared.status.send_modify(|s| s.build = Some(hello.build.clone()));
    serve_generation(config, shared, conn.into_inner(), child, stderr_tail, shutdown).await
}

/// The ready phase: route messages, ping, and wait for the worker to end.
async fn serve_generation(
    config: &Config,
    shared: &Arc<Shared>,
    stream: interprocess::local_socket::tokio::Stream,
    mut child: Child,
    stderr_tail: StderrTail,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Ended> {
    let pid = child.id();
    let stream = Arc::new(stream);
    let (to_worker, mut outbox) = mpsc::unbounded_channel::<ToWorker>();
    let pending: Arc<Mutex<HashMap<u64, crate::Reply>>> = Arc::default();

    let writer_stream = Arc::clone(&stream);
    let writer = tokio::spawn(async move {
        let mut writer = &*writer_stream;
        while let Some(msg) = outbox.recv().await {
            if frame::write_msg(&mut writer, &msg).await.is_err() {
                break;
            }
        }
    });

    // Pongs update this; the heartbeat compares it with what it sent.
    let (pong_tx, mut pong_rx) = mpsc::unbounded_channel::<(u64, ipc_proto::MemoryReport)>();
    let reader_stream = Arc::clone(&stream);
    let reader_pending = Arc::clone(&pending);
    let mut reader = tokio::spawn(async move {
        let mut reader = &*reader_stream;
        loop {
            match frame::read_msg::<FromWorker, _>(&mut reader, MAX_RESPONSE_FRAME).await {
                Ok(Some(FromWorker::Response { id, result })) => {
                    let reply = reader_pending.lock().expect("pending map").remove(&id);
                    if let Some(reply) = reply {
                        let _ = reply.send(result.map_err(CallError::Worker));
                    }
                }
                Ok(Some(FromWorker::Pong { seq, memory })) => {
                    let _ = pong_tx.send((seq, memory));
                }
                Ok(Some(FromWorker::Progress { id, progress })) => {
                    tracing::debug!(
                        id,
                        files_done = progress.files_done,
                        files_total = progress.files_total,
                        "Job progress."
                    );
                }
                Ok(Some(FromWorker::Hello(_))) => tracing::warn!("Unexpected second Hello from the worker."),
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%error, "Bad frame from the usage worker; dropping the connection.");
                    break;
                }
            }
        }
    });

    *shared.live.lock().expect("live slot") =
        Some(Live { to_worker: to_worker.clone(), pending: Arc::clone(&pending) });
    let ready_at = Instant::now();
    shared.status.send_modify(|s| s.ready_since = Some(ready_at));
    set_phase(shared, Phase::Ready, pid);

    let mut heartbeat = tokio::time::interval(config.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq: u64 = 0;
    let mut last_answered: u64 = 0;
    let mut sent_at: HashMap<u64, Instant> = HashMap::new();
    let mut stopping = false;

    let (cause, status) = loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.ok();
                break (classify(status, ExitCause::ConnectionLost), status);
            }
            _ = &mut reader => {
                // The connection is gone. Usually the process is dying too (give it a moment so
                // its real exit status is what we report); if it lingers, it must not stay.
                match timeout(EXIT_AFTER_EOF, child.wait()).await {
                    Ok(status) => {
                        let status = status.ok();
                        break (classify(status, ExitCause::ConnectionLost), status);
                    }
                    Err(_) => {
                        stop_child(&mut child, ExitCause::ConnectionLost, &stderr_tail).await;
                        break (ExitCause::ConnectionLost, None);
                    }
                }
            }
            Some((pong_seq, memory)) = pong_rx.recv() => {
                last_answered = last_answered.max(pong_seq);
                let rtt = sent_at.remove(&pong_seq).map(|at| at.elapsed());
                sent_at.retain(|s, _| *s > pong_seq);
                shared.status.send_modify(|s| {
                    s.reported_memory = Some(memory);
                    s.last_ping_rtt = rtt.or(s.last_ping_rtt);
                    s.rss_bytes = pid.and_then(memory::rss_bytes);
                });
            }
            _ = heartbeat.tick() => {
                if seq.saturating_sub(last_answered) >= u64::from(config.heartbeat_misses) {
                    tracing::warn!(pid, missed = seq - last_answered, "Usage worker stopped answering pings; killing it.");
                    stop_child(&mut child, ExitCause::Hang, &stderr_tail).await;
                    break (ExitCause::Hang, None);
                }
                seq += 1;
                sent_at.insert(seq, Instant::now());
                let _ = to_worker.send(ToWorker::Ping { seq });
            }
            _ = stopped(shutdown), if !stopping => {
                stopping = true;
                let _ = to_worker.send(ToWorker::Shutdown);
                match timeout(SHUTDOWN_GRACE, child.wait()).await {
                    Ok(status) => break (ExitCause::ConnectionLost, status.ok()),
                    Err(_) => {
                        stop_child(&mut child, ExitCause::ConnectionLost, &stderr_tail).await;
                        break (ExitCause::ConnectionLost, None);
                    }
                }
            }
        }
    };

    *shared.live.lock().expect("live slot") = None;
    for (_, reply) in pending.lock().expect("pending map").drain() {
        let _ = reply.send(Err(CallError::WorkerDied));
    }
    reader.abort();
    writer.abort();
    if stopping {
        return None;
    }
    let stable = ready_at.elapsed() >= config.restart.stable_after;
    Some(Ended { info: exit_from_status(cause, pid, status, &stderr_tail), stable })
}

/// Kills and reaps the child.
async fn stop_child(child: &mut Child, cause: ExitCause, tail: &StderrTail) -> Ended {
    let pid = child.id();
    let _ = child.start_kill();
    let status = child.wait().await.ok();
    Ended { info: exit_from_status(cause, pid, status, tail), stable: false }
}

/// Turns an exit status into a cause, given what we expected at that point.
fn classify(status: Option<std::process::ExitStatus>, default: ExitCause) -> ExitCause {
    match status {
        Some(status) if status.code() == Some(78) => ExitCause::ConfigError,
        Some(status) if status.signal().is_some() => ExitCause::Signal,
        Some(status) if status.code().is_some_and(|c| c != 0) => ExitCause::Crash,
        _ => default,
    }
}

fn exit_from_status(
    cause: ExitCause,
    pid: Option<u32>,
    status: Option<std::process::ExitStatus>,
    tail: &StderrTail,
) -> ExitInfo {
    let code = status.and_then(|s| s.code());
    let signal = status.and_then(|s| s.signal());
    let mut info = exit_info(cause, code, signal, &Some(Arc::clone(tail)));
    info.pid = pid;
    info
}

fn exit_info(
    cause: ExitCause,
    code: Option<i32>,
    signal: Option<i32>,
    tail: &Option<StderrTail>,
) -> ExitInfo {
    ExitInfo {
        cause,
        pid: None,
        code,
        signal,
        at: SystemTime::now(),
        stderr_tail: tail
            .as_ref()
            .map(|t| t.lock().expect("stderr tail").iter().cloned().collect())
            .unwrap_or_default(),
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
