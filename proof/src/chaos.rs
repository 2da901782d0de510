//! Injected faults, on fixed schedules: SIGKILL of the worker, hangs (SIGSTOP: the supervisor
//! must notice the missed heartbeats and replace it), and memory overruns through the worker's
//! real compute path (`__fault__:alloc:<MiB>`, refused by the heap budget, and
//! `__fault__:rss:<MiB>`, killed by the supervisor's RSS watch).
//!
//! One fault at a time: a slot that comes while the previous fault is still being handled is
//! skipped (counted as deferred). A worker is signalled only when the gateway's status names it
//! ready or busy and /proc confirms it is that gateway's worker child. Each memory fault asks a slightly different size,
//! so the supervisor's poison rule (a query that killed two workers is refused) does not turn
//! later injections into refusals.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::{Value, json};

use crate::{
    ctx::{Ctx, MEMORY_ALLOC, MEMORY_RSS, agent, call, status},
    procs,
};

/// Which faults, how often. `None` turns one off.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub kill_every: Option<Duration>,
    pub hang_every: Option<Duration>,
    pub memory_every: Option<Duration>,
    /// The worker's memory cap, MiB.
    pub cap_mib: u64,
    /// How long a stopped worker may stay before the hang counts as undetected.
    pub hang_deadline: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Kill,
    Hang,
    Memory,
}

/// Runs the schedule until `stop`; memory faults run on threads of their own (their calls
/// block until the fault resolves), joined before returning.
pub fn run(ctx: Arc<Ctx>, config: ChaosConfig, stop: Arc<AtomicBool>) {
    let http = agent(Duration::from_secs(5));
    let start = Instant::now();
    // Offsets keep the kinds from landing on the same instant.
    let mut next: Vec<(Kind, Duration, Instant)> = [
        (Kind::Kill, config.kill_every, 1.0),
        (Kind::Hang, config.hang_every, 0.5),
        (Kind::Memory, config.memory_every, 0.25),
    ]
    .into_iter()
    .filter_map(|(kind, every, phase)| every.map(|e| (kind, e, start + e.mul_f64(phase))))
    .collect();
    let mut memory_faults: Vec<JoinHandle<()>> = Vec::new();
    let mut memory_count = 0u64;
    let mut stopped: Vec<Stopped> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        check_hangs(&ctx, &mut stopped, config.hang_deadline);
        let Some(i) = (0..next.len()).min_by_key(|i| next[*i].2) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let (kind, every, at) = next[i];
        if Instant::now() < at {
            std::thread::sleep(at.saturating_duration_since(Instant::now()).min(Duration::from_millis(50)));
            continue;
        }
        next[i].2 = at + every;
        // One fault at a time: a slot that comes while the last fault is still being handled
        // (a stopped worker not yet replaced, a memory fault not yet answered) is skipped, so
        // every fault's handling is seen on its own rather than cut short by the next one.
        if !stopped.is_empty() || memory_faults.iter().any(|h| !h.is_finished()) {
            ctx.injected().deferred += 1;
            continue;
        }
        match kind {
            Kind::Kill => match ready_worker(&ctx, &http) {
                Some(pid) => {
                    ctx.fault();
                    if kill(Pid::from_raw(pid as i32), Signal::SIGKILL).is_ok() {
                        ctx.injected().sigkill += 1;
                    }
                }
                None => ctx.injected().sigkill_skipped += 1,
            },
            Kind::Hang => match ready_worker(&ctx, &http) {
                Some(pid) => {
                    let fault = ctx.fault_begin();
                    if kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).is_ok() {
                        ctx.injected().sigstop += 1;
                        stopped.push(Stopped {
                            pid,
                            at: Instant::now(),
                            fault,
                            seen_stopped: false,
                            running_since: None,
                        });
                    } else {
                        ctx.fault_end(fault);
                    }
                }
                None => ctx.injected().sigstop_skipped += 1,
            },
            Kind::Memory => {
                memory_count += 1;
                let (ctx, cap) = (Arc::clone(&ctx), config.cap_mib);
                let rss = memory_count % 2 == 0;
                memory_faults.push(std::thread::spawn(move || memory_fault(&ctx, cap, memory_count, rss)));
            }
        }
    }
    for handle in memory_faults {
        let _ = handle.join();
    }
    // A hang injected just before the end must still be detected.
    let end = Instant::now() + config.hang_deadline;
    while !stopped.is_empty() && Instant::now() < end {
        check_hangs(&ctx, &mut stopped, config.hang_deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    check_hangs(&ctx, &mut stopped, Duration::ZERO);
}

/// The pid of the worker when it is ready or busy (not starting, not in backoff).
fn ready_worker(ctx: &Ctx, http: &ureq::Agent) -> Option<u32> {
    let status = status(ctx, http).ok()?;
    let worker = &status["worker"];
    let ready = matches!(worker["state"].as_str(), Some("ready" | "busy"));
    let pid = worker["pid"].as_u64()? as u32;
    (ready && procs::is_worker_of(pid, ctx.gateway_pid)).then_some(pid)
}

/// A worker the harness stopped, until it is gone.
struct Stopped {
    pid: u32,
    at: Instant,
    /// The fault interval to end when it is gone.
    fault: usize,
    /// Whether the harness has seen it in the stopped state (a group stop takes effect once
    /// every thread has taken the signal).
    seen_stopped: bool,
    /// Since when it has been seen out of the stopped state while still there.
    running_since: Option<Instant>,
}

/// What became of a stopped worker at one look.
#[derive(Debug, PartialEq)]
enum Hang {
    /// Still stopped (or just leaving that state), within the deadline.
    Pending,
    /// Gone: the supervisor killed it, as it should.
    Gone,
    /// Running again for [`CONTINUED_AFTER`] without dying: something outside clawgate sent
    /// SIGCONT (nothing in clawgate does), so there is no hang left to detect.
    Continued { after: Duration },
    /// Still there at the deadline: the supervisor missed it.
    Undetected,
}

/// How long a stopped worker must be seen running before it counts as continued; a worker the
/// supervisor kills leaves the stopped state too, but is gone within milliseconds.
const CONTINUED_AFTER: Duration = Duration::from_secs(1);

impl Stopped {
    /// Updates what the harness knows from the process state (`None`: gone or a zombie).
    fn look(&mut self, state: Option<char>, now: Instant, deadline: Duration) -> Hang {
        let Some(state) = state else { return Hang::Gone };
        if matches!(state, 'T' | 't') {
            self.seen_stopped = true;
            self.running_since = None;
        } else {
            let since = *self.running_since.get_or_insert(now);
            let long_enough = now.duration_since(since) >= CONTINUED_AFTER;
            if long_enough && (self.seen_stopped || now.duration_since(self.at) >= CONTINUED_AFTER) {
                return Hang::Continued { after: since.duration_since(self.at) };
            }
        }
        if now.duration_since(self.at) < deadline { Hang::Pending } else { Hang::Undetected }
    }
}

/// Stopped workers must be gone (killed by the supervisor) within `deadline`; one that is not
/// is counted and killed here so the run can go on. One found running again was continued from
/// outside and is reported apart.
fn check_hangs(ctx: &Ctx, stopped: &mut Vec<Stopped>, deadline: Duration) {
    stopped.retain_mut(|w| {
        let state = match procs::stat(w.pid) {
            Some((state, ppid)) if ppid == ctx.gateway_pid && state != 'Z' && state != 'X' => Some(state),
            _ => None,
        };
        let when = w.at.duration_since(ctx.started).as_secs_f64();
        match w.look(state, Instant::now(), deadline) {
            Hang::Pending => return true,
            Hang::Gone => {}
            Hang::Continued { after } => ctx.injected().hangs_continued.push(format!(
                "worker {} stopped (SIGSTOP) at {when:.1}s was running again {} ms later",
                w.pid,
                after.as_millis()
            )),
            Hang::Undetected => {
                let mut injected = ctx.injected();
                injected.hangs_undetected += 1;
                injected.unexpected_outcomes.push(format!(
                    "worker {} stopped (SIGSTOP) at {when:.1}s was still there after {} ms",
                    w.pid,
                    deadline.as_millis()
                ));
                let _ = kill(Pid::from_raw(w.pid as i32), Signal::SIGKILL);
            }
        }
        ctx.fault_end(w.fault);
        false
    });
}

/// One memory overrun through the worker's compute path: `alloc` asks twice the cap of heap
/// (the budget must refuse it, the worker stays), `rss` maps cap + 256 MiB outside the heap
/// (the RSS watch must kill the worker).
///
/// It is sent when the worker is ready and idle (waiting up to 5 s for that), so that it runs
/// at once rather than queued behind a cold read: a fault still queued when its call hits the
/// gateway's deadline would go on running unobserved.
fn memory_fault(ctx: &Ctx, cap_mib: u64, n: u64, rss: bool) {
    let fault = if rss { format!("rss:{}", cap_mib + 256 + n) } else { format!("alloc:{}", cap_mib * 2 + n) };
    let http = agent(Duration::from_secs(60));
    let waiting = Instant::now() + Duration::from_secs(5);
    let worker = loop {
        if let Some(pid) = idle_worker(ctx, &http) {
            break pid;
        }
        if Instant::now() > waiting {
            ctx.injected().memory_skipped += 1;
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    ctx.memory_fault.store(if rss { MEMORY_RSS } else { MEMORY_ALLOC }, Ordering::Relaxed);
    let interval = ctx.fault_begin();
    let started = Instant::now();
    let signals = |ctx: &Ctx| {
        let injected = ctx.injected();
        injected.sigkill + injected.sigstop
    };
    let signalled = signals(ctx);
    let result =
        call(ctx, &http, "sessions.usage", &json!({"key": format!("__fault__:{fault}"), "range": "all"}));
    let body: Value = match &result {
        Ok((_, body)) => serde_json::from_str(body).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    let error = &body["error"];
    let message = error["message"].as_str().unwrap_or("");
    // Past the gateway's deadline the job goes on in the worker: keep its samples and its
    // interval marked until it has played out (the worker replaced, or time enough to refuse).
    let delayed = message.contains("did not finish");
    if delayed {
        let end = Instant::now() + Duration::from_secs(if rss { 20 } else { 5 });
        while Instant::now() < end && (!rss || ctx.worker_pid.load(Ordering::Relaxed) == worker) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // Let the sampler see the worker's peak (or the killed worker gone) before samples count
    // as normal again.
    std::thread::sleep(Duration::from_millis(300));
    ctx.memory_fault.store(0, Ordering::Relaxed);
    ctx.fault_end(interval);
    // Another fault (a SIGKILL or hang) took the worker while this one ran: its outcome says
    // nothing about the memory layers. (A worker exit no fault explains shows in the restart
    // causes instead.)
    let taken = signals(ctx) != signalled || ctx.worker_pid.load(Ordering::Relaxed) != worker;
    let interrupted = taken && error["retryable"] == true;
    let mut injected = ctx.injected();
    let expected = if rss {
        injected.rss += 1;
        // Killed mid-job: a retryable UNAVAILABLE.
        let ok = error["code"] == "UNAVAILABLE" && error["retryable"] == true && !delayed;
        injected.rss_killed += u64::from(ok);
        ok
    } else {
        injected.alloc += 1;
        let ok = error["code"] == "UNAVAILABLE" && message.contains("budget");
        injected.alloc_refused += u64::from(ok);
        ok
    };
    if !expected && delayed {
        injected.memory_delayed += 1;
    } else if !expected && interrupted {
        injected.memory_interrupted += 1;
    } else if !expected {
        injected.unexpected_outcomes.push(format!(
            "fault {fault} at {:.1}s answered after {} ms: {}",
            started.duration_since(ctx.started).as_secs_f64(),
            started.elapsed().as_millis(),
            match &result {
                Ok((status, body)) => format!("HTTP {status} {body:.300}"),
                Err(e) => e.clone(),
            }
        ));
    }
}

/// The pid of the worker when it is ready with no job in flight.
fn idle_worker(ctx: &Ctx, http: &ureq::Agent) -> Option<u32> {
    let status = status(ctx, http).ok()?;
    let worker = &status["worker"];
    let idle = worker["state"] == "ready" && worker["jobsInFlight"].as_u64() == Some(0);
    let pid = worker["pid"].as_u64()? as u32;
    (idle && procs::is_worker_of(pid, ctx.gateway_pid)).then_some(pid)
}

/// Whether the worker honours `__fault__:` keys (debug builds, or `--features faults`): an
/// `alloc` of twice the cap must be refused by the heap budget. A build without fault injection
/// takes it for an unknown session key and answers as OpenClaw does: an empty `ok` answer.
pub fn preflight(ctx: &Ctx, cap_mib: u64) -> anyhow::Result<bool> {
    let http = agent(Duration::from_secs(60));
    let params = json!({"key": format!("__fault__:alloc:{}", cap_mib * 2), "range": "all"});
    ctx.memory_fault.store(MEMORY_ALLOC, Ordering::Relaxed);
    let answer = call(ctx, &http, "sessions.usage", &params);
    std::thread::sleep(Duration::from_millis(300));
    ctx.memory_fault.store(0, Ordering::Relaxed);
    let (status, body) = answer.map_err(anyhow::Error::msg)?;
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let message = body["error"]["message"].as_str().unwrap_or("");
    if body["error"]["code"] == "UNAVAILABLE" && message.contains("budget") {
        return Ok(true);
    }
    if status == 200 && body["ok"] == true {
        return Ok(false);
    }
    anyhow::bail!("the fault-injection preflight got an unexpected answer: HTTP {status} {body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINE: Duration = Duration::from_secs(15);

    fn stopped(at: Instant) -> Stopped {
        Stopped { pid: 1, at, fault: 0, seen_stopped: false, running_since: None }
    }

    #[test]
    fn a_stopped_worker_the_supervisor_kills_is_gone_not_continued() {
        let t0 = Instant::now();
        let mut w = stopped(t0);
        assert_eq!(w.look(Some('S'), t0, DEADLINE), Hang::Pending, "the stop has not taken effect yet");
        assert_eq!(w.look(Some('T'), t0 + Duration::from_millis(50), DEADLINE), Hang::Pending);
        // SIGKILL wakes it to die: briefly running, then gone.
        assert_eq!(w.look(Some('R'), t0 + Duration::from_millis(3000), DEADLINE), Hang::Pending);
        assert_eq!(w.look(None, t0 + Duration::from_millis(3050), DEADLINE), Hang::Gone);
    }

    #[test]
    fn a_stopped_worker_running_again_for_a_second_was_continued() {
        let t0 = Instant::now();
        let mut w = stopped(t0);
        assert_eq!(w.look(Some('T'), t0 + Duration::from_millis(50), DEADLINE), Hang::Pending);
        assert_eq!(w.look(Some('S'), t0 + Duration::from_millis(2600), DEADLINE), Hang::Pending);
        assert_eq!(w.look(Some('R'), t0 + Duration::from_millis(3000), DEADLINE), Hang::Pending);
        assert_eq!(
            w.look(Some('S'), t0 + Duration::from_millis(3600), DEADLINE),
            Hang::Continued { after: Duration::from_millis(2600) }
        );
    }

    #[test]
    fn a_worker_that_never_stops_counts_as_continued_and_one_stopped_too_long_as_undetected() {
        let t0 = Instant::now();
        let mut never = stopped(t0);
        assert_eq!(never.look(Some('S'), t0, DEADLINE), Hang::Pending);
        assert_eq!(
            never.look(Some('S'), t0 + Duration::from_secs(1), DEADLINE),
            Hang::Continued { after: Duration::ZERO }
        );

        let mut hung = stopped(t0);
        assert_eq!(hung.look(Some('T'), t0 + Duration::from_secs(1), DEADLINE), Hang::Pending);
        assert_eq!(hung.look(Some('T'), t0 + DEADLINE, DEADLINE), Hang::Undetected);
    }
}
