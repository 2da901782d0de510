//! The supervisor: spawns the usage worker, handshakes with it, routes calls to it, watches it
//! and restarts it with backoff when it exits, hangs or loses its connection.
//!
//! It is a library hosted inside the gateway process, and the only code in clawgate that spawns
//! a process. It knows nothing about HTTP: callers get [`SupervisorHandle::call`] and a
//! [`WorkerStatus`] snapshot, and build their own wire shapes from those.
//!
//! Invariants: exactly one live worker at a time; every child is reaped (we always `wait` it,
//! and `kill_on_drop` covers panics); calls in flight when a worker dies fail at once with
//! [`CallError::WorkerDied`] instead of hanging.

mod command;
mod error;
mod memory;
mod policy;
mod run;
mod status;

use std::{
    ffi::OsString,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

pub use error::CallError;
pub use memory::rss_bytes;
pub use policy::RestartPolicy;
pub use status::{ExitCause, ExitInfo, Phase, WorkerStatus};

use ipc_proto::{RequestId, ToWorker, UsageAnswer, UsageQuery};
use tokio::sync::{oneshot, watch};

/// How to run and watch the worker.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `clawgate-usage-worker` executable.
    pub worker_bin: PathBuf,
    /// Arguments after `--socket PATH` (e.g. `--state-dir DIR`).
    pub worker_args: Vec<OsString>,
    /// Private directory for the worker socket (created 0700).
    pub run_dir: PathBuf,
    /// Time allowed from spawn to a completed handshake.
    pub handshake_timeout: Duration,
    /// How often the worker is pinged.
    pub heartbeat_interval: Duration,
    /// Consecutive unanswered pings after which the worker counts as hung and is killed.
    pub heartbeat_misses: u32,
    pub restart: RestartPolicy,
}

impl Config {
    /// Defaults for everything but the binary, its arguments and the run directory.
    pub fn new(worker_bin: PathBuf, worker_args: Vec<OsString>, run_dir: PathBuf) -> Config {
        Config {
            worker_bin,
            worker_args,
            run_dir,
            handshake_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_misses: 3,
            restart: RestartPolicy::default(),
        }
    }
}

type Reply = oneshot::Sender<Result<UsageAnswer, CallError>>;

/// The live connection's sending side, shared with callers.
#[derive(Clone)]
struct Live {
    to_worker: tokio::sync::mpsc::UnboundedSender<ToWorker>,
    pending: Arc<Mutex<std::collections::HashMap<RequestId, Reply>>>,
}

/// State shared by the supervisor task and every handle.
struct Shared {
    live: Mutex<Option<Live>>,
    status: watch::Sender<WorkerStatus>,
    next_id: AtomicU64,
    shutdown: watch::Sender<bool>,
}

/// A cheap, cloneable handle to a running supervisor.
#[derive(Clone)]
pub struct SupervisorHandle {
    shared: Arc<Shared>,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

/// Starts supervising: the first worker is spawned at once. Must be called inside a tokio runtime.
pub fn start(config: Config) -> SupervisorHandle {
    let (status, _) = watch::channel(WorkerStatus::new());
    let (shutdown, shutdown_rx) = watch::channel(false);
    let shared = Arc::new(Shared { live: Mutex::new(None), status, next_id: AtomicU64::new(1), shutdown });
    let task = tokio::spawn(run::supervise(config, Arc::clone(&shared), shutdown_rx));
    SupervisorHandle { shared, task: Arc::new(Mutex::new(Some(task))) }
}

impl SupervisorHandle {
    /// Sends `query` to the worker and waits for its answer. Dropping the future cancels the
    /// job in the worker. Fails at once when no worker is ready, and with `WorkerDied` when the
    /// worker exits mid-job; callers apply their own deadline.
    pub async fn call(&self, query: UsageQuery) -> Result<UsageAnswer, CallError> {
        let live = self.live_worker().await?;
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply_tx, reply_rx) = oneshot::channel();
        live.pending.lock().expect("pending map").insert(id, reply_tx);
        self.shared.status.send_modify(|s| s.jobs_in_flight += 1);
        let mut guard =
            CancelOnDrop { id, live: live.clone(), shared: Arc::clone(&self.shared), done: false };
        if live.to_worker.send(ToWorker::Request { id, query }).is_err() {
            guard.done = true;
            live.pending.lock().expect("pending map").remove(&id);
            return Err(CallError::WorkerDied);
        }
        let res = reply_rx.await.unwrap_or(Err(CallError::WorkerDied));
        guard.done = true;
        res
    }

    /// The live worker connection, waiting while one is starting or restarting (callers bound
    /// the wait with their own deadline); fails at once when the worker is failed or stopped.
    async fn live_worker(&self) -> Result<Live, CallError> {
        let mut changes = self.shared.status.subscribe();
        loop {
            if let Some(live) = self.shared.live.lock().expect("live slot").clone() {
                return Ok(live);
            }
            let (phase, retry_after) = {
                let status = changes.borrow_and_update();
                (status.phase, status.retry_after)
            };
            if matches!(phase, Phase::Failed | Phase::Stopped) {
                return Err(CallError::Unavailable {
                    phase,
                    retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
                });
            }
            if changes.changed().await.is_err() {
                return Err(CallError::Unavailable {
                    phase: Phase::Stopped,
                    retry_after: Duration::from_secs(1),
                });
            }
        }
    }

    /// The current status snapshot.
    pub fn status(&self) -> WorkerStatus {
        let mut status = self.shared.status.borrow().clone();
        if let Some(pid) = status.pid {
            status.rss_bytes = memory::rss_bytes(pid).or(status.rss_bytes);
        }
        status
    }

    /// A receiver that sees every status change (phase transitions, restarts).
    pub fn watch(&self) -> watch::Receiver<WorkerStatus> {
        self.shared.status.subscribe()
    }

    /// Asks the worker to finish, kills it after a grace period, reaps it, and stops supervising.
    pub async fn shutdown(&self) {
        let _ = self.shared.shutdown.send(true);
        let task = self.task.lock().expect("task slot").take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// Cancels the worker job when a call future is dropped before its answer arrived (the client
/// went away or the caller's deadline fired), so the worker stops spending time on it.
struct CancelOnDrop {
    id: RequestId,
    live: Live,
    shared: Arc<Shared>,
    done: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.shared.status.send_modify(|s| s.jobs_in_flight = s.jobs_in_flight.saturating_sub(1));
        if !self.done {
            self.live.pending.lock().expect("pending map").remove(&self.id);
            let _ = self.live.to_worker.send(ToWorker::Cancel { id: self.id });
        }
    }
}
