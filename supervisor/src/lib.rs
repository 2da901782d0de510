//! The supervisor: runs the usage worker, handshakes with it, routes calls to it, watches it and
//! restarts it with backoff when it exits, hangs, overruns its memory cap or loses its connection.
//!
//! It is a library hosted inside the gateway process, and the only code in clawgate that starts
//! the worker. It knows nothing about HTTP: callers get [`SupervisorHandle::call`] and a
//! [`WorkerStatus`] snapshot, and build their own wire shapes from those.
//!
//! Two modes share one state machine: `managed` (we spawn the worker and own its restarts) and
//! `external` (systemd runs `clawgate-usage-worker --listen`; we connect and reconnect).
//! Invariants: exactly one live worker at a time; every child is reaped; calls in flight when a
//! worker dies fail at once with [`CallError::WorkerDied`] instead of hanging; a query that took
//! down two workers is refused as poison. Time is tokio's clock throughout (never
//! `std::time::Instant`), so the whole loop runs on paused time in tests.

mod calls;
mod cgroup;
mod command;
mod error;
pub use ipc_proto::host;
mod memory;
mod policy;
mod run;
mod status;

use std::{
    collections::HashMap,
    ffi::OsString,
    hash::{Hash, Hasher},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

pub use command::address_space_limit;
pub use error::CallError;
pub use memory::rss_bytes;
pub use policy::RestartPolicy;
pub use status::{ExitCause, ExitInfo, MemoryStatus, Phase, WorkerStatus};

use calls::{Calls, Job};
use ipc_proto::{RequestId, ToWorker, UsageQuery, UsageReply};
use tokio::{
    sync::{oneshot, watch},
    time::Instant,
};

/// Who starts the worker process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// We spawn it as our child and restart it.
    Managed,
    /// It runs under its own supervisor (systemd) and listens on `socket`; we connect.
    External { socket: PathBuf },
}

/// The defaults of every supervision setting: written here once. `clawgate serve` shows these
/// in its `--help` and passes them on unchanged when a flag is not given.
pub mod defaults {
    use std::time::Duration;

    /// The worker's memory cap.
    pub const MEMORY_MAX: u64 = 512 << 20;
    /// The smallest cap `clawgate serve` accepts: below it, the worker cannot hold the rollups
    /// of an ordinary store (docs/ops/memory.md), and a typo such as `512` (bytes) would kill
    /// it in a loop.
    pub const MIN_MEMORY_MAX: u64 = 256 << 20;
    /// From spawn (or connect) to a completed handshake.
    pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
    pub const HEARTBEAT_MISSES: u32 = 3;
    pub const WATCH_INTERVAL: Duration = Duration::from_millis(250);
    pub const JOB_TIMEOUT: Duration = Duration::from_secs(300);
    pub const CANCEL_GRACE: Duration = Duration::from_secs(3);
    pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
    pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
    pub const STABLE_AFTER: Duration = Duration::from_secs(60);
    pub const MAX_RESTARTS: usize = 5;
    pub const RESTART_WINDOW: Duration = Duration::from_secs(60);
    pub const COOLDOWN: Duration = Duration::from_secs(60);
    pub const CONFIG_ERROR_COOLDOWN: Duration = Duration::from_secs(300);
}

pub use ipc_proto::host::heap_budget;

/// How to run and watch the worker.
#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    /// The `clawgate-usage-worker` executable (managed mode).
    pub worker_bin: PathBuf,
    /// Extra worker arguments (e.g. `--state-dir DIR`), managed mode.
    pub worker_args: Vec<OsString>,
    /// Private directory for the worker socket (created 0700), managed mode.
    pub run_dir: PathBuf,
    /// The worker's memory cap in bytes; its heap budget is [`heap_budget`] of it.
    pub memory_max: u64,
    /// Whether to try a cgroup v2 `memory.max` for the worker.
    pub use_cgroup: bool,
    /// Time allowed from spawn (or connect) to a completed handshake.
    pub handshake_timeout: Duration,
    /// How often the worker is pinged.
    pub heartbeat_interval: Duration,
    /// Consecutive unanswered pings after which the worker counts as hung and is killed.
    pub heartbeat_misses: u32,
    /// How often the worker's RSS is read from /proc and jobs are checked against deadlines.
    pub watch_interval: Duration,
    /// A job running longer than this is cancelled.
    pub job_timeout: Duration,
    /// A cancelled job still running after this counts as a hang: the worker is killed.
    pub cancel_grace: Duration,
    pub restart: RestartPolicy,
}

impl Config {
    /// [`defaults`] for everything but the binary, its arguments and the run directory.
    pub fn new(worker_bin: PathBuf, worker_args: Vec<OsString>, run_dir: PathBuf) -> Config {
        Config {
            mode: Mode::Managed,
            worker_bin,
            worker_args,
            run_dir,
            memory_max: defaults::MEMORY_MAX,
            use_cgroup: true,
            handshake_timeout: defaults::HANDSHAKE_TIMEOUT,
            heartbeat_interval: defaults::HEARTBEAT_INTERVAL,
            heartbeat_misses: defaults::HEARTBEAT_MISSES,
            watch_interval: defaults::WATCH_INTERVAL,
            job_timeout: defaults::JOB_TIMEOUT,
            cancel_grace: defaults::CANCEL_GRACE,
            restart: RestartPolicy::default(),
        }
    }
}

/// The live connection's sending side, shared with callers.
#[derive(Clone)]
struct Live {
    to_worker: tokio::sync::mpsc::UnboundedSender<ToWorker>,
    /// Every call this connection carries: jobs (with their callers) and on-demand pings.
    calls: Arc<Mutex<Calls>>,
}

/// Sequence numbers at or above this are on-demand pings, never heartbeats.
pub(crate) const PROBE_PING_BASE: u64 = 1 << 63;

/// How long a query that killed two workers stays refused.
const POISON_TTL: Duration = Duration::from_secs(600);

/// State shared by the supervisor task and every handle.
struct Shared {
    live: Mutex<Option<Live>>,
    status: watch::Sender<WorkerStatus>,
    /// Request ids and probe-ping sequence numbers, unique across worker generations.
    next_id: AtomicU64,
    shutdown: watch::Sender<bool>,
    /// Worker deaths per query key, with the time of the last one.
    deaths: Mutex<HashMap<u64, (u32, Instant)>>,
    /// The latest `Progress` frame of any job (see [`SupervisorHandle::progress`]).
    progress: watch::Sender<Option<ipc_proto::Progress>>,
}

/// A cheap, cloneable handle to a running supervisor.
#[derive(Clone)]
pub struct SupervisorHandle {
    shared: Arc<Shared>,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

/// Starts supervising: the first worker is started (or connected to) at once. Must be called
/// inside a tokio runtime.
pub fn start(config: Config) -> SupervisorHandle {
    let mut initial = WorkerStatus::new();
    initial.mode = if config.mode == Mode::Managed { "managed" } else { "external" };
    initial.memory.cap_bytes = config.memory_max;
    initial.memory.budget_bytes = heap_budget(config.memory_max);
    initial.memory.rlimit_as_bytes = command::address_space_limit(config.memory_max);
    let (status, _) = watch::channel(initial);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        live: Mutex::new(None),
        status,
        next_id: AtomicU64::new(1),
        shutdown,
        deaths: Mutex::new(HashMap::new()),
        progress: watch::channel(None).0,
    });
    let task = tokio::spawn(run::supervise(config, Arc::clone(&shared), shutdown_rx));
    SupervisorHandle { shared, task: Arc::new(Mutex::new(Some(task))) }
}

fn query_key(query: &UsageQuery) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    query.hash(&mut hasher);
    hasher.finish()
}

impl SupervisorHandle {
    /// Sends `query` to the worker and waits for its answer. Dropping the future cancels the
    /// job in the worker. While a worker is starting or restarting the call waits for it (bound
    /// it with a deadline); when the worker is `failed` it fails at once. Fails with
    /// `WorkerDied` when the worker exits mid-job, and with `Poisoned` for a query that already
    /// took down two workers.
    /// `known` is the fingerprint of the answer the caller holds: if the data is unchanged the
    /// worker replies [`UsageReply::Unchanged`] instead of sending it again.
    pub async fn call(&self, query: UsageQuery, known: Option<u64>) -> Result<UsageReply, CallError> {
        let key = query_key(&query);
        if let Some((deaths, at)) = self.shared.deaths.lock().expect("deaths").get(&key).copied() {
            if deaths >= 2 && at.elapsed() < POISON_TTL {
                return Err(CallError::Poisoned { deaths });
            }
        }
        let live = self.live_worker().await?;
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply_tx, reply_rx) = oneshot::channel();
        live.calls.lock().expect("calls").jobs.insert(id, Job::new(key, reply_tx));
        let mut guard = CancelOnDrop { id, live: live.clone(), done: false };
        if live.to_worker.send(ToWorker::Request { id, query, known }).is_err() {
            guard.done = true;
            live.calls.lock().expect("calls").jobs.remove(&id);
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

    /// One ping round trip to the worker, answered off its compute path: what
    /// `clawgate status --deep` reports as the worker's responsiveness.
    pub async fn ping(&self) -> Result<(Duration, ipc_proto::MemoryReport), CallError> {
        let live = self.live_worker().await?;
        let seq = PROBE_PING_BASE | self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        live.calls.lock().expect("calls").pings.insert(seq, tx);
        let started = Instant::now();
        if live.to_worker.send(ToWorker::Ping { seq }).is_err() {
            live.calls.lock().expect("calls").pings.remove(&seq);
            return Err(CallError::WorkerDied);
        }
        let memory = rx.await.map_err(|_| CallError::WorkerDied)?;
        Ok((started.elapsed(), memory))
    }

    /// The current status snapshot, with the worker's RSS read fresh from /proc and the calls
    /// waiting on it counted now.
    pub fn status(&self) -> WorkerStatus {
        let mut status = self.shared.status.borrow().clone();
        if let Some(pid) = status.pid {
            status.rss_bytes = memory::rss_bytes(pid).or(status.rss_bytes);
        }
        let live = self.shared.live.lock().expect("live slot").clone();
        status.jobs_in_flight = live.map_or(0, |live| live.calls.lock().expect("calls").waiting());
        status
    }

    /// A receiver that sees every status change (phase transitions, restarts). Its snapshots
    /// leave `jobs_in_flight` at zero and the RSS as last watched: use [`Self::status`] for
    /// those.
    pub fn watch(&self) -> watch::Receiver<WorkerStatus> {
        self.shared.status.subscribe()
    }

    /// The latest progress any job reported (files read of those listed so far, bytes parsed):
    /// what `clawgate report` draws its progress bar from during a cold read. Jobs are not told
    /// apart, so it is meaningful to a caller that runs one job at a time.
    pub fn progress(&self) -> watch::Receiver<Option<ipc_proto::Progress>> {
        self.shared.progress.subscribe()
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
/// went away or the caller's deadline fired), so the worker stops spending time on it. The job
/// stays in the call table until the worker answers, so one that ignores the cancel is caught.
struct CancelOnDrop {
    id: RequestId,
    live: Live,
    done: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.done && self.live.calls.lock().expect("calls").cancel(self.id) {
            let _ = self.live.to_worker.send(ToWorker::Cancel { id: self.id });
        }
    }
}

#[cfg(test)]
mod tests;
