//! The one place that builds a worker process.
//!
//! stdin and stdout are closed (the worker speaks only over its socket); stderr is piped so the
//! worker's log lines reach the gateway's log and the tail of them can be shown after a crash.
//! `kill_on_drop` guarantees that a supervisor that unwinds never leaves a worker behind.

use std::{
    collections::VecDeque,
    path::Path,
    process::Stdio,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

use crate::Config;

/// How many stderr lines are kept for the last-exit report.
const STDERR_TAIL_LINES: usize = 20;

/// The last lines of a worker's stderr.
pub(crate) type StderrTail = Arc<Mutex<VecDeque<String>>>;

/// Spawns the worker, connecting back to `socket`, and starts forwarding its stderr.
pub(crate) fn spawn_worker(config: &Config, socket: &Path) -> std::io::Result<(Child, StderrTail)> {
    let mut command = Command::new(&config.worker_bin);
    command
        .arg("--socket")
        .arg(socket)
        .args(&config.worker_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn()?;
    let tail: StderrTail = Arc::default();
    if let Some(stderr) = child.stderr.take() {
        let tail = Arc::clone(&tail);
        let pid = child.id().unwrap_or(0);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(target: "clawgate::worker", worker_pid = pid, "{line}");
                let mut tail = tail.lock().expect("stderr tail");
                if tail.len() == STDERR_TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
    }
    Ok((child, tail))
}
