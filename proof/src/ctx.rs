//! State shared by the harness's threads: where the gateway is, which worker generation is
//! running, when faults happened, and the counters every thread adds to.
//!
//! Fault attribution: a call that fails with a retryable `UNAVAILABLE` is expected (not a
//! failure) when it overlapped an injected fault (a SIGKILL; a hang until its worker was
//! replaced; a memory fault until it was answered) or a worker death, was sent while no worker
//! was running after one, or was the cold first call of a worker generation started by one.
//! Everything else that fails, or answers late, is a failure.

use std::{
    net::SocketAddr,
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::truth::{Truth, Verdict};

/// The two dashboard methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    SessionsUsage,
    UsageCost,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::SessionsUsage => "sessions.usage",
            Method::UsageCost => "usage.cost",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// [`Ctx::memory_fault`] values (bits).
pub const MEMORY_ALLOC: u8 = 1;
pub const MEMORY_RSS: u8 = 2;

/// How many examples of each kind of problem are kept for the report.
const EXAMPLES: usize = 8;

/// Latencies of successful usage calls, ms precision kept in µs.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds")
}

/// Counters of usage calls and answers.
pub struct Calls {
    pub ok: u64,
    /// Answers marked `cacheStatus.status: "stale"` (included in `ok`).
    pub stale: u64,
    /// Retryable errors attributed to injected faults.
    pub fault_errors: u64,
    pub failures: u64,
    pub failure_examples: Vec<String>,
    /// Dashboard (WebSocket) call latency: sent before the worker generation had answered that
    /// method (it has to read the store: cold) or after (warm).
    pub cold: Histogram<u64>,
    pub warm: Histogram<u64>,
    /// Answers checked, exactly (field by field) or against bounds only.
    pub checked: u64,
    pub checked_exact: u64,
    pub wrong: u64,
    pub wrong_examples: Vec<String>,
}

impl Default for Calls {
    fn default() -> Calls {
        Calls {
            ok: 0,
            stale: 0,
            fault_errors: 0,
            failures: 0,
            failure_examples: Vec::new(),
            cold: histogram(),
            warm: histogram(),
            checked: 0,
            checked_exact: 0,
            wrong: 0,
            wrong_examples: Vec::new(),
        }
    }
}

impl Calls {
    pub fn fail(&mut self, what: String) {
        self.failures += 1;
        if self.failure_examples.len() < EXAMPLES {
            eprintln!("clawgate-proof: FAILURE: {what}");
            self.failure_examples.push(what);
        }
    }

    pub fn verdict(&mut self, verdict: &Verdict) {
        self.checked += 1;
        match verdict {
            Verdict::Ok { exact, .. } => self.checked_exact += u64::from(*exact),
            Verdict::Wrong(what) => {
                self.wrong += 1;
                if self.wrong_examples.len() < EXAMPLES {
                    eprintln!("clawgate-proof: WRONG ANSWER: {what}");
                    self.wrong_examples.push(what.clone());
                }
            }
        }
    }
}

/// WebSocket connection counters.
#[derive(Default)]
pub struct WsCounts {
    pub connects: u64,
    pub connect_failures: u64,
    pub unexpected_closes: u64,
    pub graceful_closes: u64,
    pub events: u64,
    pub examples: Vec<String>,
}

impl WsCounts {
    pub fn problem(&mut self, what: String) {
        if self.examples.len() < EXAMPLES {
            eprintln!("clawgate-proof: WEBSOCKET: {what}");
            self.examples.push(what);
        }
    }
}

/// What the harness injected.
#[derive(Default, Debug)]
pub struct Injected {
    pub sigkill: u64,
    /// Kill slots when no worker was running (in backoff after an earlier fault).
    pub sigkill_skipped: u64,
    pub sigstop: u64,
    pub sigstop_skipped: u64,
    /// Stopped workers the supervisor did not replace in time (killed by the harness).
    pub hangs_undetected: u64,
    /// Stopped workers found running again before the supervisor acted: the hang was undone
    /// from outside clawgate (nothing in it sends SIGCONT), so there was nothing to detect.
    pub hangs_continued: Vec<String>,
    pub alloc: u64,
    pub alloc_refused: u64,
    pub rss: u64,
    pub rss_killed: u64,
    /// Memory faults whose worker another fault took first.
    pub memory_interrupted: u64,
    /// Slots skipped because the previous fault was still being handled.
    pub deferred: u64,
    /// Memory faults not sent: no idle worker within 5 s.
    pub memory_skipped: u64,
    /// Memory faults whose call hit the gateway's deadline (queued behind other work).
    pub memory_delayed: u64,
    pub unexpected_outcomes: Vec<String>,
}

/// Shared by every thread.
pub struct Ctx {
    pub addr: SocketAddr,
    pub base: String,
    pub token: String,
    pub gateway_pid: u32,
    pub started: Instant,
    pub truth: Truth,
    /// `startDate`/`endDate` covering the store and every append.
    pub dates: (String, String),
    /// Current worker pid (0: none) and generation (1 = the first worker).
    pub worker_pid: AtomicU32,
    pub generation: AtomicU64,
    /// Per method: the generation that has answered it fresh (warm from then on).
    warm_gen: [AtomicU64; 2],
    /// Injected faults and observed worker deaths, as intervals: a hang lasts until its worker
    /// is replaced, a memory fault until its call is answered (`None`: still going on).
    faults: Mutex<Vec<(Instant, Option<Instant>)>>,
    /// The memory fault running, if any ([`MEMORY_ALLOC`], [`MEMORY_RSS`]): worker samples
    /// taken meanwhile count toward that fault's peak.
    pub memory_fault: AtomicU8,
    pub calls: Mutex<Calls>,
    pub ws: Mutex<WsCounts>,
    pub injected: Mutex<Injected>,
    /// Parses shared by identical payloads (`None`: every answer is parsed).
    pub parse_memo: Option<crate::answer::ParseMemo>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Ctx {
    pub fn new(
        addr: SocketAddr,
        token: String,
        gateway_pid: u32,
        truth: Truth,
        dates: (String, String),
    ) -> Ctx {
        Ctx {
            addr,
            base: format!("http://{addr}"),
            token,
            gateway_pid,
            started: Instant::now(),
            truth,
            dates,
            worker_pid: AtomicU32::new(0),
            generation: AtomicU64::new(0),
            warm_gen: [AtomicU64::new(0), AtomicU64::new(0)],
            faults: Mutex::new(Vec::new()),
            memory_fault: AtomicU8::new(0),
            calls: Mutex::default(),
            ws: Mutex::default(),
            injected: Mutex::default(),
            parse_memo: Some(crate::answer::ParseMemo::default()),
        }
    }

    pub fn calls(&self) -> MutexGuard<'_, Calls> {
        lock(&self.calls)
    }

    pub fn ws(&self) -> MutexGuard<'_, WsCounts> {
        lock(&self.ws)
    }

    pub fn injected(&self) -> MutexGuard<'_, Injected> {
        lock(&self.injected)
    }

    pub fn secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Records an instant fault (a SIGKILL) or an observed worker death.
    pub fn fault(&self) {
        let now = Instant::now();
        lock(&self.faults).push((now, Some(now)));
    }

    /// Starts a fault that lasts; [`Ctx::fault_end`] ends it.
    pub fn fault_begin(&self) -> usize {
        let mut faults = lock(&self.faults);
        faults.push((Instant::now(), None));
        faults.len() - 1
    }

    pub fn fault_end(&self, index: usize) {
        if let Some(f) = lock(&self.faults).get_mut(index) {
            f.1 = Some(Instant::now());
        }
    }

    fn fault_between(&self, from: Instant, to: Instant) -> bool {
        let now = Instant::now();
        lock(&self.faults).iter().any(|(start, end)| *start <= to && end.unwrap_or(now) >= from)
    }

    fn any_fault_before(&self, at: Instant) -> bool {
        lock(&self.faults).iter().any(|(start, _)| *start <= at)
    }

    /// The query params of the dashboard calls (and of the settle's `usage.cost`).
    pub fn params(&self, method: Method, limit: u32) -> Value {
        let (start, end) = &self.dates;
        match method {
            Method::SessionsUsage => {
                json!({"agentScope": "all", "startDate": start, "endDate": end, "limit": limit})
            }
            Method::UsageCost => json!({"agentScope": "all", "startDate": start, "endDate": end}),
        }
    }

    /// Facts about the moment a call was sent, for classifying its outcome. `timed`: its
    /// latency counts in the cold/warm figures (the dashboards' calls; not the settle polls).
    pub fn sent(&self, method: Method, timed: bool) -> Sent {
        let generation = self.generation.load(Ordering::Relaxed);
        Sent {
            method,
            at: Instant::now(),
            generation,
            worker_running: self.worker_pid.load(Ordering::Relaxed) != 0,
            cold: self.warm_gen[method.index()].load(Ordering::Relaxed) != generation,
            timed,
        }
    }

    /// A successful answer: latency into the cold or warm histogram; a fresh answer from the
    /// generation the call was sent to warms that generation for the method.
    pub fn answered(&self, sent: &Sent, received: Instant, stale: bool, verdict: &Verdict) {
        let took = received.saturating_duration_since(sent.at);
        if !stale && self.generation.load(Ordering::Relaxed) == sent.generation {
            self.warm_gen[sent.method.index()].store(sent.generation, Ordering::Relaxed);
        }
        let mut calls = self.calls();
        calls.ok += 1;
        calls.stale += u64::from(stale);
        if sent.timed {
            let hist = if sent.cold { &mut calls.cold } else { &mut calls.warm };
            let _ = hist.record((took.as_micros() as u64).max(1));
        }
        calls.verdict(verdict);
    }

    /// A failed call: `retryable` errors that faults explain are counted apart.
    pub fn failed(&self, sent: &Sent, retryable: bool, what: &str) {
        let now = Instant::now();
        let explained = retryable
            && (self.fault_between(sent.at.checked_sub(Duration::from_secs(1)).unwrap_or(sent.at), now)
                || (!sent.worker_running && self.any_fault_before(sent.at))
                || (sent.cold && sent.generation >= 2));
        let mut calls = self.calls();
        if explained {
            calls.fault_errors += 1;
        } else {
            calls.fail(format!(
                "{} at {:.1}s after {} ms: {what}",
                sent.method.name(),
                self.secs(),
                sent.at.elapsed().as_millis()
            ));
        }
    }
}

/// When and into what state a call was sent.
#[derive(Debug, Clone)]
pub struct Sent {
    pub method: Method,
    pub at: Instant,
    pub generation: u64,
    pub worker_running: bool,
    pub cold: bool,
    pub timed: bool,
}

/// An HTTP agent that returns error statuses as values; no phase of a call (connect, send,
/// wait for the head, read the body) waits longer than `timeout`.
///
/// Per phase, not `timeout_global`: with any timeout on name resolution ureq resolves on a
/// new thread for every call, pooled connection or not, and the prober would then measure a
/// thread start (and its wait for a CPU) with every `/healthz`. Resolution stays untimed; the
/// harness only ever names IP literals.
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(timeout))
        .timeout_send_request(Some(timeout))
        .timeout_send_body(Some(timeout))
        .timeout_recv_response(Some(timeout))
        .timeout_recv_body(Some(timeout))
        .build()
        .into()
}

/// `POST /api/v1/call/{method}` → (HTTP status, body text).
pub fn call(ctx: &Ctx, agent: &ureq::Agent, method: &str, params: &Value) -> Result<(u16, String), String> {
    let mut res = agent
        .post(format!("{}/api/v1/call/{method}", ctx.base))
        .header("authorization", format!("Bearer {}", ctx.token))
        .header("content-type", "application/json")
        .send(params.to_string())
        .map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let body = res.body_mut().with_config().limit(1 << 30).read_to_string().map_err(|e| e.to_string())?;
    Ok((status, body))
}

/// `GET /api/v1/status`.
pub fn status(ctx: &Ctx, agent: &ureq::Agent) -> Result<Value, String> {
    let mut res = agent
        .get(format!("{}/api/v1/status", ctx.base))
        .header("authorization", format!("Bearer {}", ctx.token))
        .call()
        .map_err(|e| e.to_string())?;
    let body = res.body_mut().read_to_string().map_err(|e| e.to_string())?;
    serde_json::from_str(&body).map_err(|e| format!("status is not JSON: {e}"))
}
