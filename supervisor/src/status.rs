//! The observable state of the worker: phase, pid, memory, restarts and the last exit.

use std::{
    collections::BTreeMap,
    fmt,
    time::{Duration, SystemTime},
};

use ipc_proto::MemoryReport;
use tokio::time::Instant;

/// Where the worker's lifecycle is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Spawning,
    Handshaking,
    Ready,
    Backoff,
    /// Parked: a crash loop (more restarts in the window than allowed) waits out the cool-down,
    /// a configuration error (exit code 78) the longer config-error cool-down (300 s), then the
    /// supervisor tries again, so a fixed setup recovers without a gateway restart.
    Failed,
    Stopped,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Spawning => "spawning",
            Phase::Handshaking => "handshaking",
            Phase::Ready => "ready",
            Phase::Backoff => "backoff",
            Phase::Failed => "failed",
            Phase::Stopped => "stopped",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a worker generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExitCause {
    /// The binary could not be started at all.
    SpawnFailed,
    /// It exited or failed before completing the handshake in time.
    Handshake,
    /// It exited with a non-zero code.
    Crash,
    /// It was killed by a signal we did not send (OOM killer, an operator, a test).
    Signal,
    /// It stopped answering pings and was killed.
    Hang,
    /// Its connection broke or it exited cleanly while it should have been serving.
    ConnectionLost,
    /// Exit code 78: configuration error; retried only after the long config-error cool-down.
    ConfigError,
    /// Its RSS went over the cap and the supervisor killed it.
    RssCap,
    /// The kernel's OOM killer ended it (the cgroup's `oom_kill` count rose).
    OomKill,
    /// It aborted (SIGABRT).
    Abort,
    /// A Rust panic ended it (exit code 101).
    Panic,
}

impl ExitCause {
    pub fn as_str(self) -> &'static str {
        match self {
            ExitCause::SpawnFailed => "spawn_failed",
            ExitCause::Handshake => "handshake",
            ExitCause::Crash => "crash",
            ExitCause::Signal => "signal",
            ExitCause::Hang => "hang",
            ExitCause::ConnectionLost => "connection_lost",
            ExitCause::ConfigError => "config_error",
            ExitCause::RssCap => "rss_cap",
            ExitCause::OomKill => "oom_kill",
            ExitCause::Abort => "abort",
            ExitCause::Panic => "panic",
        }
    }
}

/// One ended worker generation.
#[derive(Debug, Clone)]
pub struct ExitInfo {
    pub cause: ExitCause,
    pub pid: Option<u32>,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub at: SystemTime,
    /// The last lines the worker wrote to stderr, for the operator.
    pub stderr_tail: Vec<String>,
    /// Why it ended, in the worker's own words when it said (its last error line), so a
    /// configuration error shows its cause rather than only `config_error (code 78)`.
    pub reason: Option<String>,
}

/// A snapshot of the worker as the supervisor sees it.
#[derive(Debug, Clone)]
pub struct WorkerStatus {
    pub phase: Phase,
    pub pid: Option<u32>,
    /// The worker's build, from its `Hello`.
    pub build: Option<String>,
    /// When the current worker became ready.
    pub ready_since: Option<Instant>,
    pub restarts: u64,
    pub restarts_by_cause: BTreeMap<&'static str, u64>,
    pub last_exit: Option<ExitInfo>,
    /// Heap and RSS as the worker last reported them in a `Pong`.
    pub reported_memory: Option<MemoryReport>,
    /// RSS read from /proc by the supervisor.
    pub rss_bytes: Option<u64>,
    pub jobs_in_flight: usize,
    /// Time until the next restart attempt, while in backoff.
    pub retry_after: Option<Duration>,
    /// Round trip of the last answered ping.
    pub last_ping_rtt: Option<Duration>,
    /// `managed` (we spawn it) or `external` (systemd runs it; we connect).
    pub mode: &'static str,
    /// The worker socket's path.
    pub socket: Option<std::path::PathBuf>,
    pub memory: MemoryStatus,
    /// Connections to the managed worker's socket refused because the peer was not the
    /// spawned worker (another process of ours, or another user).
    pub rejected_peers: u64,
}

/// The memory cap and which layer of it acted last.
#[derive(Debug, Clone)]
pub struct MemoryStatus {
    /// `--worker-memory-max`.
    pub cap_bytes: u64,
    /// The worker's own heap budget (80% of the cap).
    pub budget_bytes: u64,
    /// Where the kernel layer is: the worker cgroup's path, or why there is none.
    pub cgroup: Result<String, String>,
    /// The address-space backstop (`RLIMIT_AS`) given to managed workers.
    pub rlimit_as_bytes: u64,
    /// Jobs refused by the worker's budget (the worker stayed up).
    pub budget_refusals: u64,
    /// Workers killed by the supervisor's RSS watch.
    pub rss_kills: u64,
    /// Workers killed by the kernel in their cgroup.
    pub oom_kills: u64,
    /// The last layer that acted: `budget`, `rss` or `cgroup`, with when and at what RSS.
    pub last_action: Option<(&'static str, SystemTime, Option<u64>)>,
}

impl Default for MemoryStatus {
    fn default() -> MemoryStatus {
        MemoryStatus {
            cap_bytes: 0,
            budget_bytes: 0,
            cgroup: Err("not set up yet".into()),
            rlimit_as_bytes: 0,
            budget_refusals: 0,
            rss_kills: 0,
            oom_kills: 0,
            last_action: None,
        }
    }
}

impl WorkerStatus {
    /// The status before the first worker starts.
    pub fn new() -> WorkerStatus {
        WorkerStatus {
            phase: Phase::Spawning,
            pid: None,
            build: None,
            ready_since: None,
            restarts: 0,
            restarts_by_cause: BTreeMap::new(),
            last_exit: None,
            reported_memory: None,
            rss_bytes: None,
            jobs_in_flight: 0,
            retry_after: None,
            last_ping_rtt: None,
            mode: "managed",
            socket: None,
            memory: MemoryStatus::default(),
            rejected_peers: 0,
        }
    }

    /// `ready`, or `busy` while jobs run, else the phase name.
    pub fn state_name(&self) -> &'static str {
        if self.phase == Phase::Ready && self.jobs_in_flight > 0 { "busy" } else { self.phase.as_str() }
    }
}

impl Default for WorkerStatus {
    fn default() -> WorkerStatus {
        WorkerStatus::new()
    }
}

/// The worker's own account of why it stopped: its last error line on stderr. The worker logs
/// with tracing without colour (`<time> ERROR <target>: <message> error="<cause>"`), and clap
/// prints usage errors as `error: <cause>`; the cause is taken out of either. Without such a
/// line (a wrapper script, a crash), the last line that is not an ordinary log line. `None` when
/// there is nothing of the kind.
pub(crate) fn exit_reason(stderr_tail: &[String]) -> Option<String> {
    let Some(line) = stderr_tail.iter().rev().find(|l| l.contains(" ERROR ") || l.starts_with("error:"))
    else {
        let ordinary = |l: &str| [" INFO ", " WARN ", " DEBUG ", " TRACE "].iter().any(|lvl| l.contains(lvl));
        return stderr_tail
            .iter()
            .rev()
            .map(|l| l.trim())
            .find(|l| !l.is_empty() && !ordinary(l))
            .map(str::to_owned);
    };
    if let Some(rest) = line.strip_prefix("error:") {
        return Some(rest.trim().to_owned());
    }
    if let Some(cause) = line.split_once(" error=").map(|(_, cause)| cause.trim()) {
        let unquoted = cause.strip_prefix('"').and_then(|c| c.strip_suffix('"')).unwrap_or(cause);
        return Some(unquoted.replace("\\\"", "\""));
    }
    let message = line.split_once(" ERROR ").map_or(line.as_str(), |(_, m)| m);
    let message = message.split_once(": ").map_or(message, |(_, m)| m);
    Some(message.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::exit_reason;

    fn lines(text: &[&str]) -> Vec<String> {
        text.iter().map(|l| (*l).to_owned()).collect()
    }

    #[test]
    fn the_reason_is_the_cause_of_the_last_error_line() {
        let tail = lines(&[
            "2026-12-04T15:47:30.1Z  INFO clawgate_usage_worker: Starting.",
            r#"2026-12-04T15:47:30.4Z ERROR clawgate_usage_worker: Worker failed. error="state directory /x does not exist or is not a directory""#,
        ]);
        assert_eq!(
            exit_reason(&tail).as_deref(),
            Some("state directory /x does not exist or is not a directory")
        );
        let tail = lines(&["error: unexpected argument '--bogus' found", "", "Usage: clawgate-usage-worker"]);
        assert_eq!(exit_reason(&tail).as_deref(), Some("unexpected argument '--bogus' found"));
        let tail = lines(&["2026-12-04T15:47:30.4Z ERROR clawgate_usage_worker::server: Cannot write."]);
        assert_eq!(exit_reason(&tail).as_deref(), Some("Cannot write."));
        assert_eq!(exit_reason(&lines(&["broken on purpose", ""])).as_deref(), Some("broken on purpose"));
        assert_eq!(
            exit_reason(&lines(&["2026-12-04T15:47:30.1Z  INFO clawgate_usage_worker: Ready."])),
            None
        );
        assert_eq!(exit_reason(&[]), None);
    }
}
