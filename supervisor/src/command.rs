//! The one place that builds a worker process.
//!
//! stdin and stdout are closed (the worker speaks only over its socket); stderr is piped so the
//! worker's log lines reach the gateway's log and the tail of them can be shown after a crash.
//! `kill_on_drop` guarantees that a supervisor that unwinds never leaves a worker behind, and
//! `PR_SET_PDEATHSIG` does the same if the whole gateway dies (even by SIGKILL).

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

use crate::Config;

/// The worker's nice value: below the gateway, so health and WebSocket stay prompt while it computes.
const WORKER_NICE: libc::c_int = 10;

/// How many stderr lines are kept for the last-exit report.
const STDERR_TAIL_LINES: usize = 20;

/// The last lines of a worker's stderr, and the task collecting them.
#[derive(Default)]
pub(crate) struct StderrTail {
    lines: Arc<Mutex<VecDeque<String>>>,
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl StderrTail {
    /// The lines, after giving the reader a moment to drain what a just-exited worker wrote
    /// last (usually the reason it exited).
    pub(crate) async fn collect(&mut self) -> Vec<String> {
        if let Some(reader) = self.reader.as_mut() {
            let _ = tokio::time::timeout(std::time::Duration::from_millis(200), reader).await;
            self.reader = None;
        }
        self.lines.lock().expect("stderr tail").iter().cloned().collect()
    }
}

/// The address-space limit for the worker: a loose backstop behind the real caps. Virtual size
/// runs far above RSS (thread stacks, one 64 MiB malloc arena per thread), so it is set to
/// 4x the cap and at least cap + 2 GiB; measured worker VSZ with 2 compute threads stays under
/// 600 MiB (see docs/ops/memory.md).
pub fn address_space_limit(cap: u64) -> u64 {
    (cap.saturating_mul(4)).max(cap.saturating_add(2 << 30))
}

/// A spawn request for the [`spawn_from_forker`] thread, and where its result goes.
type SpawnRequest = (
    tokio::runtime::Handle,
    Config,
    PathBuf,
    tokio::sync::oneshot::Sender<std::io::Result<(Child, StderrTail)>>,
);

/// Spawns the worker from one long-lived thread of its own, off the async runtime.
///
/// Off the runtime: `spawn` returns only once the child has called `exec`, and from `pre_exec`
/// on the child runs at the worker's low priority; on a busy host that wait lasted up to 150
/// ms, a stall of whichever runtime thread was also serving probes. One long-lived thread, not
/// the blocking pool: `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits,
/// and a blocking-pool thread retires after 10 s idle, which killed a healthy, idle worker
/// every 10 s. The thread lives as long as the process.
pub(crate) async fn spawn_from_forker(
    config: &Config,
    socket: &Path,
) -> std::io::Result<(Child, StderrTail)> {
    static FORKER: std::sync::OnceLock<std::sync::mpsc::Sender<SpawnRequest>> = std::sync::OnceLock::new();
    let forker = FORKER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<SpawnRequest>();
        let started = std::thread::Builder::new().name("clawgate-forker".into()).spawn(move || {
            for (runtime, config, socket, reply) in rx {
                let _in_runtime = runtime.enter();
                // A runtime shut down meanwhile must not take this thread down with it.
                let spawned =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| spawn_worker(&config, &socket)))
                        .unwrap_or_else(|_| Err(std::io::Error::other("spawning the worker panicked")));
                let _ = reply.send(spawned);
            }
        });
        if let Err(e) = started {
            tracing::error!(error = %e, "Cannot start the worker-spawning thread.");
        }
        tx
    });
    let (reply, answer) = tokio::sync::oneshot::channel();
    let request = (tokio::runtime::Handle::current(), config.clone(), socket.to_owned(), reply);
    forker.send(request).map_err(|_| std::io::Error::other("the worker-spawning thread is gone"))?;
    answer.await.map_err(|_| std::io::Error::other("the worker-spawning thread dropped the request"))?
}

/// Spawns the worker, connecting back to `socket`, and starts forwarding its stderr. Call it
/// from [`spawn_from_forker`]'s thread (see there why).
fn spawn_worker(config: &Config, socket: &Path) -> std::io::Result<(Child, StderrTail)> {
    let mut command = Command::new(&config.worker_bin);
    let budget = crate::heap_budget(config.memory_max);
    command
        .arg("--socket")
        .arg(socket)
        .arg("--memory-budget")
        .arg(budget.to_string())
        .arg("--parent-pid")
        .arg(std::process::id().to_string())
        .args(&config.worker_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let rlimit = address_space_limit(config.memory_max);
    // SAFETY: the closure runs in the forked child before exec and makes only async-signal-safe
    // calls (prctl, setpriority, setrlimit), without allocating.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            // The worker is batch work: on a 2-core host its compute threads must not compete
            // with the gateway's runtime on equal terms, or probe latency suffers. (nix has no
            // setpriority; the call takes plain integers and cannot fail unsafely.)
            let _ = libc::setpriority(libc::PRIO_PROCESS, 0, WORKER_NICE);
            // Best effort: an unprivileged process may only lower its limit, which this does.
            let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_AS, rlimit, rlimit);
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    let mut tail = StderrTail::default();
    if let Some(stderr) = child.stderr.take() {
        let kept = Arc::clone(&tail.lines);
        let pid = child.id().unwrap_or(0);
        tail.reader = Some(tokio::spawn(async move {
            let mut incoming = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = incoming.next_line().await {
                tracing::info!(target: "clawgate::worker", worker_pid = pid, "{line}");
                let mut kept = kept.lock().expect("stderr tail");
                if kept.len() == STDERR_TAIL_LINES {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
        }));
    }
    Ok((child, tail))
}
