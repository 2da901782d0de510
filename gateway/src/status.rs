//! The typed status document: what `GET /api/v1/status` (and the `status` method) serves and
//! what `clawgate status` reads back, one struct on both ends instead of JSON walked by hand.
//!
//! Every figure is taken once per document: one supervisor snapshot and one `/proc` read of
//! each process, shared by every section that shows it. (The `memory` section used to show the
//! lag monitor's 30-second sample, so it could disagree with `worker` in the same answer: RSS
//! 5.9 MB beside 152 MB, the first sample taken while the worker was starting.) The monitor
//! now contributes only its pressure findings.
//!
//! Deserialization is lenient (`#[serde(default)]` everywhere), so the CLI reads an older or
//! newer gateway; sections built by other modules keep fields this struct does not know in
//! `extra`, so nothing they add is dropped on the way out.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{AppState, lag};

/// The whole document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Status {
    pub gateway: Gateway,
    pub worker: Worker,
    pub event_loop: EventLoop,
    pub memory: Memory,
    pub cache: Cache,
    pub jobs: Jobs,
    /// What the last successful job saw of the stores; `None` before the first answer.
    pub stores: Option<Stores>,
    pub websocket: Websocket,
    /// Shield mode: the OpenClaw gateway behind clawgate (`relay::probe`); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<crate::relay::probe::UpstreamStatus>,
    /// The agents of the state dir as the gateway lists them, with a warning when there are
    /// none; `None` before the first look.
    pub agents: Option<crate::agents::AgentsView>,
    /// Cost budgets, spend and forecast; `None` when no budget is configured.
    pub budgets: Option<crate::budget::BudgetStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Gateway {
    pub pid: u32,
    pub version: String,
    pub uptime_ms: u64,
    pub listen: String,
    pub state_dir: PathBuf,
    pub auth_mode: AuthMode,
    pub rss_bytes: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    #[default]
    None,
    Token,
}

/// The worker's lifecycle state as reported: a supervisor phase, with `busy` for ready and
/// computing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    Spawning,
    Handshaking,
    Ready,
    Busy,
    Backoff,
    Failed,
    Stopped,
    /// A state this build does not know (a newer gateway).
    #[default]
    #[serde(other)]
    Unknown,
}

impl WorkerState {
    /// Whether the worker can take work now.
    pub fn is_up(self) -> bool {
        matches!(self, WorkerState::Ready | WorkerState::Busy)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Spawning => "spawning",
            WorkerState::Handshaking => "handshaking",
            WorkerState::Ready => "ready",
            WorkerState::Busy => "busy",
            WorkerState::Backoff => "backoff",
            WorkerState::Failed => "failed",
            WorkerState::Stopped => "stopped",
            WorkerState::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Worker {
    /// `managed` or `external`.
    pub mode: String,
    pub socket: Option<PathBuf>,
    pub memory: WorkerMemory,
    pub state: WorkerState,
    pub pid: Option<u32>,
    pub build: Option<String>,
    pub uptime_ms: Option<u64>,
    pub restarts: u64,
    pub restarts_by_cause: BTreeMap<String, u64>,
    pub last_exit: Option<LastExit>,
    pub rss_bytes: Option<u64>,
    pub heap_bytes: Option<u64>,
    pub jobs_in_flight: usize,
    /// Time until the next start attempt, in `backoff` and `failed`.
    pub retry_after_ms: Option<u64>,
    pub last_ping_rtt_us: Option<u64>,
    /// Connections to the managed worker's socket refused: not from the spawned worker.
    pub rejected_peers: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LastExit {
    /// `crash`, `signal`, `hang`, `config_error`, ... (docs/ops/status.md).
    pub cause: String,
    pub pid: Option<u32>,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub at_ms: u64,
    pub stderr_tail: Vec<String>,
    /// Why, in the worker's words (its last error line), when it exited by itself with an error.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkerMemory {
    pub cap_bytes: u64,
    pub budget_bytes: u64,
    pub rss_bytes: Option<u64>,
    pub heap_bytes: Option<u64>,
    pub cgroup: CgroupLayer,
    pub rlimit_as_bytes: u64,
    pub budget_refusals: u64,
    pub rss_kills: u64,
    pub oom_kills: u64,
    pub last_action: Option<MemoryAction>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CgroupLayer {
    pub enforced: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MemoryAction {
    /// `budget`, `rss` or `cgroup`.
    pub layer: String,
    pub at_ms: u64,
    pub rss_bytes: Option<u64>,
}

/// Runtime lag over the last 30 s, in OpenClaw's `eventLoop` shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EventLoop {
    pub degraded: bool,
    pub reasons: Vec<String>,
    pub interval_ms: u64,
    pub samples: u64,
    pub delay_p99_ms: f64,
    pub delay_max_ms: f64,
    pub delay_mean_ms: f64,
    pub utilization: f64,
    pub cpu_core_ratio: f64,
}

impl From<&lag::LagSnapshot> for EventLoop {
    fn from(s: &lag::LagSnapshot) -> EventLoop {
        let round = |v: f64, scale: f64| (v * scale).round() / scale;
        EventLoop {
            degraded: s.degraded,
            reasons: s.reasons.iter().map(|r| (*r).to_owned()).collect(),
            interval_ms: s.interval_ms,
            samples: s.samples,
            delay_p99_ms: round(s.delay_p99_ms, 10.0),
            delay_max_ms: round(s.delay_max_ms, 10.0),
            delay_mean_ms: round(s.delay_mean_ms, 10.0),
            utilization: round(s.utilization, 1000.0),
            cpu_core_ratio: round(s.cpu_core_ratio, 1000.0),
        }
    }
}

/// Both processes' memory now, with the pressure the memory watch last found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Memory {
    pub gateway: ProcessMemory,
    pub worker: ProcessMemory,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProcessMemory {
    pub rss_bytes: Option<u64>,
    pub heap_bytes: Option<u64>,
    pub pressure: Option<Pressure>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Pressure {
    /// `warning` or `critical`.
    pub level: String,
    /// `rss_threshold`, `heap_threshold` or `rss_growth`.
    pub reason: String,
    pub threshold_bytes: u64,
}

impl From<&lag::Pressure> for Pressure {
    fn from(p: &lag::Pressure) -> Pressure {
        Pressure {
            level: p.level.to_owned(),
            reason: p.reason.to_owned(),
            threshold_bytes: p.threshold_bytes,
        }
    }
}

/// The gateway's answer cache (built by `cache.rs`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Cache {
    pub entries: u64,
    pub answers: u64,
    pub bytes: u64,
    pub jobs_running: u64,
    pub waiters: u64,
    pub max_jobs: u64,
    pub newest_age_ms: Option<u64>,
    pub oldest_age_ms: Option<u64>,
    /// Lookups by how they were served: `hit`, `miss`, `shared`, `stale`.
    pub lookups: BTreeMap<String, u64>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// Recent job durations and the queue (built by `cache.rs`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Jobs {
    /// How many finished jobs the percentiles cover.
    pub recent: u64,
    pub p50_ms: Option<u64>,
    pub p99_ms: Option<u64>,
    pub running: u64,
    pub max_jobs: u64,
    pub waiters: u64,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// What the last successful job saw of the stores (built by `cache.rs`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Stores {
    /// `all` or an agent id.
    pub scope: String,
    pub agents: u64,
    pub files: u64,
    pub files_parsed: u64,
    pub bytes_parsed: u64,
    pub lines_skipped: u64,
    pub at_ms: u64,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// WebSocket settings and the failed-auth limiter (built by `ws.rs`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Websocket {
    pub protocol: u64,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// Milliseconds since the epoch of `at`.
pub fn epoch_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A section another module renders as JSON, read into its typed form. A section that does not
/// fit (a field of the wrong type) is a bug in this file or that module, caught by
/// `tests::sections_from_other_modules_fit`; at run time it is logged and left at its default
/// rather than failing the whole document.
fn section<T: Default + serde::de::DeserializeOwned>(name: &str, value: Value) -> T {
    serde_json::from_value(value).unwrap_or_else(|error| {
        tracing::warn!(section = name, %error, "A status section does not fit its type.");
        T::default()
    })
}

/// The worker section from one supervisor snapshot.
pub fn worker(worker: &supervisor::WorkerStatus) -> Worker {
    let memory = &worker.memory;
    let heap = worker.reported_memory.map(|m| m.heap_bytes);
    Worker {
        mode: worker.mode.to_owned(),
        socket: worker.socket.clone(),
        memory: WorkerMemory {
            cap_bytes: memory.cap_bytes,
            budget_bytes: memory.budget_bytes,
            rss_bytes: worker.rss_bytes,
            heap_bytes: heap,
            cgroup: match &memory.cgroup {
                Ok(path) => CgroupLayer { enforced: true, path: Some(path.clone()), reason: None },
                Err(why) => CgroupLayer { enforced: false, path: None, reason: Some(why.clone()) },
            },
            rlimit_as_bytes: memory.rlimit_as_bytes,
            budget_refusals: memory.budget_refusals,
            rss_kills: memory.rss_kills,
            oom_kills: memory.oom_kills,
            last_action: memory.last_action.map(|(layer, at, rss)| MemoryAction {
                layer: layer.to_owned(),
                at_ms: epoch_ms(at),
                rss_bytes: rss,
            }),
        },
        state: serde_json::from_value(Value::from(worker.state_name())).unwrap_or_default(),
        pid: worker.pid,
        build: worker.build.clone(),
        uptime_ms: worker.ready_since.map(|t| t.elapsed().as_millis() as u64),
        restarts: worker.restarts,
        restarts_by_cause: worker.restarts_by_cause.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        last_exit: worker.last_exit.as_ref().map(|exit| LastExit {
            cause: exit.cause.as_str().to_owned(),
            pid: exit.pid,
            code: exit.code,
            signal: exit.signal,
            at_ms: epoch_ms(exit.at),
            stderr_tail: exit.stderr_tail.clone(),
            reason: exit.reason.clone(),
        }),
        rss_bytes: worker.rss_bytes,
        heap_bytes: heap,
        jobs_in_flight: worker.jobs_in_flight,
        retry_after_ms: worker.retry_after.map(|d| d.as_millis() as u64),
        last_ping_rtt_us: worker.last_ping_rtt.map(|d| d.as_micros() as u64),
        rejected_peers: worker.rejected_peers,
    }
}

/// The memory section: RSS and heap from the same readings the other sections show, pressure
/// from the memory watch.
pub fn memory(state: &AppState, gateway_rss: Option<u64>, worker: &supervisor::WorkerStatus) -> Memory {
    let (gateway_watch, worker_watch) = state.lag.memory();
    Memory {
        gateway: ProcessMemory {
            rss_bytes: gateway_rss,
            heap_bytes: None,
            pressure: gateway_watch.pressure.as_ref().map(Pressure::from),
        },
        worker: ProcessMemory {
            rss_bytes: worker.rss_bytes,
            heap_bytes: worker.reported_memory.map(|m| m.heap_bytes),
            pressure: worker_watch.pressure.as_ref().map(Pressure::from),
        },
    }
}

/// Builds the document.
pub fn build(state: &AppState) -> Status {
    let snapshot = state.supervisor.status();
    let gateway_rss = supervisor::rss_bytes(std::process::id());
    Status {
        gateway: Gateway {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_ms: state.uptime_ms(),
            listen: state.config.listen.to_string(),
            state_dir: state.config.state_dir.clone(),
            auth_mode: if state.config.token.is_some() { AuthMode::Token } else { AuthMode::None },
            rss_bytes: gateway_rss,
        },
        worker: worker(&snapshot),
        event_loop: EventLoop::from(&state.lag.snapshot()),
        memory: memory(state, gateway_rss, &snapshot),
        cache: section("cache", state.cache.status_json()),
        jobs: section("jobs", state.cache.jobs_json()),
        stores: section("stores", state.cache.stores_json()),
        websocket: section("websocket", state.websocket_status_json()),
        upstream: state.relay.as_ref().map(|relay| relay.status()),
        agents: state.agents.view(),
        budgets: state.budgets.as_ref().map(|b| b.status()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gateway state over a supervisor whose worker cannot start: every section is built by
    /// its real module.
    fn state() -> AppState {
        let dir = std::env::temp_dir().join(format!("clawgate-status-test-{}", std::process::id()));
        let worker = supervisor::Config::new(dir.join("no-such-worker"), Vec::new(), dir.join("run"));
        let config = crate::Config {
            listen: "127.0.0.1:1".parse().unwrap(),
            state_dir: dir.join("state"),
            data_dir: dir.clone(),
            run_dir: dir.join("run"),
            token: Some("t".into()),
            allowed_hosts: Vec::new(),
            max_connections: None,
            upstream: None,
            worker: worker.clone(),
            request_timeout: crate::config::DEFAULT_REQUEST_TIMEOUT,
            api: crate::config::ApiTuning::default(),
            budgets: crate::budget::BudgetConfig::default(),
            state_check_interval: crate::config::DEFAULT_STATE_CHECK_INTERVAL,
            bulk_runtime: None,
        };
        AppState::new(config, supervisor::start(worker), crate::conns::ConnLimit::new(16)).expect("state")
    }

    #[tokio::test]
    async fn sections_from_other_modules_fit() {
        let state = state();
        // Each section, as its module renders it, reads into its type without loss.
        for (name, value) in [
            ("cache", state.cache.status_json()),
            ("jobs", state.cache.jobs_json()),
            ("websocket", state.websocket_status_json()),
        ] {
            let typed: Value = match name {
                "cache" => serde_json::to_value(serde_json::from_value::<Cache>(value.clone()).expect(name)),
                "jobs" => serde_json::to_value(serde_json::from_value::<Jobs>(value.clone()).expect(name)),
                _ => serde_json::to_value(serde_json::from_value::<Websocket>(value.clone()).expect(name)),
            }
            .unwrap();
            assert_eq!(typed, value, "{name} changed on the way through its type");
        }
        assert_eq!(state.cache.stores_json(), Value::Null, "no job yet");
        state.supervisor.shutdown().await;
    }

    #[tokio::test]
    async fn the_document_round_trips_and_agrees_with_itself() {
        let state = state();
        let status = build(&state);
        assert_eq!(status.gateway.auth_mode, AuthMode::Token);
        assert_eq!(status.memory.gateway.rss_bytes.is_some(), status.gateway.rss_bytes.is_some());
        assert_eq!(status.memory.worker.rss_bytes, status.worker.rss_bytes);
        assert_eq!(status.memory.worker.heap_bytes, status.worker.heap_bytes);
        assert_eq!(
            status.worker.memory.budget_bytes,
            supervisor::heap_budget(status.worker.memory.cap_bytes)
        );
        let text = serde_json::to_string(&status).unwrap();
        let back: Status = serde_json::from_str(&text).unwrap();
        assert_eq!(back, status);
        // The wire names the dashboard and scripts read.
        let value: Value = serde_json::from_str(&text).unwrap();
        for path in
            ["/gateway/uptimeMs", "/worker/memory/capBytes", "/eventLoop/delayP99Ms", "/cache/jobsRunning"]
        {
            assert!(value.pointer(path).is_some(), "{path} missing: {value}");
        }
        assert_eq!(value["gateway"]["authMode"], "token");
        state.supervisor.shutdown().await;
    }

    #[test]
    fn an_older_or_newer_document_still_reads() {
        let status: Status = serde_json::from_str(
            r#"{"worker":{"state":"hibernating","pid":3,"futureField":1},"gateway":{"pid":9},"stores":null}"#,
        )
        .unwrap();
        assert_eq!(status.worker.state, WorkerState::Unknown);
        assert_eq!((status.worker.pid, status.gateway.pid), (Some(3), 9));
        assert!(!status.worker.state.is_up());
    }
}
