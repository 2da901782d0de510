//! Runtime-lag and memory-pressure diagnostics, the tokio counterpart of OpenClaw's event-loop
//! figures (REFERENCE §6).
//!
//! A sampler task sleeps 10 ms at a time and records how late it wakes up: that overshoot is the
//! scheduling delay any request would have seen. Each second it hands its raw samples to a
//! summariser thread, which keeps one-second `hdrhistogram` slots; the snapshot covers the last
//! 30 s (max, p99, mean) plus runtime utilisation (tokio worker busy time / wall time) and the
//! process's CPU-core ratio, with OpenClaw's `degraded` reasons. Reading the snapshot is a mutex
//! copy, so `health` stays cheap however busy the runtime is. Every 30 s the summariser samples
//! gateway and worker memory and logs OpenClaw-style `memory pressure` lines (with a 5-minute
//! cooldown per process, level and reason).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;

/// How long the sampler sleeps between samples.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(10);
/// Slot length; the snapshot is rebuilt at each slot end.
const SLOT: Duration = Duration::from_secs(1);
/// Slots in the reported window.
const WINDOW_SLOTS: usize = 30;
/// Memory is sampled this often.
const MEMORY_INTERVAL: Duration = Duration::from_secs(30);

/// Runtime lag over the recent window; OpenClaw's `eventLoop` shape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LagSnapshot {
    pub interval_ms: u64,
    pub samples: u64,
    pub delay_p99_ms: f64,
    pub delay_max_ms: f64,
    pub delay_mean_ms: f64,
    /// Share of tokio worker time spent busy, 0..1.
    pub utilization: f64,
    /// Process CPU time over wall time (1.0 = one core).
    pub cpu_core_ratio: f64,
    pub degraded: bool,
    pub reasons: Vec<&'static str>,
}

/// OpenClaw's reasons: delay when p99 or max ≥ 1 s; utilisation ≥ 0.95 and CPU ≥ 0.9 count
/// only over a window of at least 1 s in which p99 or max reached 25 ms.
fn reasons(s: &LagSnapshot) -> Vec<&'static str> {
    let mut reasons = Vec::new();
    if s.delay_p99_ms >= 1000.0 || s.delay_max_ms >= 1000.0 {
        reasons.push("event_loop_delay");
    }
    let qualifies = s.interval_ms >= 1000 && (s.delay_p99_ms >= 25.0 || s.delay_max_ms >= 25.0);
    if qualifies && s.utilization >= 0.95 {
        reasons.push("event_loop_utilization");
    }
    if qualifies && s.cpu_core_ratio >= 0.9 {
        reasons.push("cpu");
    }
    reasons
}

/// Memory of one process and its pressure level, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessMemory {
    pub rss_bytes: Option<u64>,
    pub heap_bytes: Option<u64>,
    pub pressure: Option<Pressure>,
}

/// A memory-pressure finding: `level` warning|critical, `reason` rss_threshold|heap_threshold|rss_growth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pressure {
    pub level: &'static str,
    pub reason: &'static str,
    pub threshold_bytes: u64,
}

/// OpenClaw's default thresholds (REFERENCE §6).
#[derive(Debug, Clone, Copy)]
pub struct MemoryThresholds {
    pub rss_warning: u64,
    pub rss_critical: u64,
    pub heap_warning: u64,
    pub heap_critical: u64,
    pub growth_warning: u64,
    pub growth_critical: u64,
    pub growth_window: Duration,
    pub cooldown: Duration,
}

const MIB: u64 = 1 << 20;

impl Default for MemoryThresholds {
    fn default() -> Self {
        MemoryThresholds {
            rss_warning: 1536 * MIB,
            rss_critical: 3072 * MIB,
            heap_warning: 1024 * MIB,
            heap_critical: 2048 * MIB,
            growth_warning: 512 * MIB,
            growth_critical: 1024 * MIB,
            growth_window: Duration::from_secs(600),
            cooldown: Duration::from_secs(300),
        }
    }
}

/// The level check, in OpenClaw's order: rss critical, heap critical, rss warning, heap warning,
/// then growth within the window.
pub fn classify(t: &MemoryThresholds, rss: Option<u64>, heap: Option<u64>, growth: u64) -> Option<Pressure> {
    let rss = rss.unwrap_or(0);
    let heap = heap.unwrap_or(0);
    let p = |level, reason, threshold_bytes| Some(Pressure { level, reason, threshold_bytes });
    if rss >= t.rss_critical {
        return p("critical", "rss_threshold", t.rss_critical);
    }
    if heap >= t.heap_critical {
        return p("critical", "heap_threshold", t.heap_critical);
    }
    if rss >= t.rss_warning {
        return p("warning", "rss_threshold", t.rss_warning);
    }
    if heap >= t.heap_warning {
        return p("warning", "heap_threshold", t.heap_warning);
    }
    if growth >= t.growth_critical {
        return p("critical", "rss_growth", t.growth_critical);
    }
    if growth >= t.growth_warning {
        return p("warning", "rss_growth", t.growth_warning);
    }
    None
}

/// Reads (rss, heap) of the worker; `None`s when it is not running.
pub type WorkerMemoryFn = Box<dyn Fn() -> (Option<u64>, Option<u64>) + Send + Sync>;

struct Shared {
    lag: Mutex<LagSnapshot>,
    memory: Mutex<(ProcessMemory, ProcessMemory)>,
}

/// A handle to the running monitor; cheap to clone.
#[derive(Clone)]
pub struct LagMonitor {
    shared: Arc<Shared>,
}

impl LagMonitor {
    /// Starts the sampler on the current runtime and its summariser thread.
    pub fn spawn(worker_memory: WorkerMemoryFn) -> LagMonitor {
        let shared = Arc::new(Shared {
            lag: Mutex::new(LagSnapshot::default()),
            memory: Mutex::new((ProcessMemory::default(), ProcessMemory::default())),
        });
        let (slots, received) = std::sync::mpsc::channel();
        let metrics = tokio::runtime::Handle::current().metrics();
        let summariser = Arc::clone(&shared);
        let thresholds = MemoryThresholds::default();
        let spawned = std::thread::Builder::new()
            .name("clawgate-lag".into())
            .spawn(move || summarise_slots(summariser, received, metrics, worker_memory, thresholds));
        if let Err(error) = spawned {
            tracing::warn!(%error, "Cannot start the runtime-lag summariser; lag figures stay empty.");
        }
        tokio::spawn(sample(slots));
        LagMonitor { shared }
    }

    pub fn snapshot(&self) -> LagSnapshot {
        self.shared.lag.lock().expect("lag snapshot").clone()
    }

    /// (gateway, worker) memory as last sampled.
    pub fn memory(&self) -> (ProcessMemory, ProcessMemory) {
        self.shared.memory.lock().expect("memory snapshot").clone()
    }
}

struct Slot {
    hist: Histogram<u64>,
    busy: Duration,
    cpu: Duration,
    wall: Duration,
}

fn new_hist() -> Histogram<u64> {
    // Microseconds, 1 µs .. 10 min, 2 significant figures: small and fast to merge.
    Histogram::new_with_bounds(1, 600_000_000, 2).expect("valid histogram bounds")
}

/// One slot's raw samples: how late each 10 ms sleep woke up, in µs.
struct SlotSamples {
    late_us: Vec<u64>,
    ended: Instant,
}

/// The runtime side: only sleeps, measures and hands raw samples over. Everything costly
/// (histograms, percentiles, /proc reads, memory checks) runs on the summariser thread, so the
/// monitor does not add the delay it measures (a histogram merge in a debug build takes ms).
async fn sample(slots: std::sync::mpsc::Sender<SlotSamples>) {
    let mut late_us = Vec::with_capacity(128);
    let mut slot_start = Instant::now();
    loop {
        let before = Instant::now();
        tokio::time::sleep(SAMPLE_INTERVAL).await;
        let now = Instant::now();
        late_us.push(now.duration_since(before).saturating_sub(SAMPLE_INTERVAL).as_micros().max(1) as u64);
        if now.duration_since(slot_start) >= SLOT {
            slot_start = now;
            let full = std::mem::replace(&mut late_us, Vec::with_capacity(128));
            if slots.send(SlotSamples { late_us: full, ended: now }).is_err() {
                return;
            }
        }
    }
}

/// The summariser thread: builds the window from slots and samples memory every 30 s.
fn summarise_slots(
    shared: Arc<Shared>,
    slots: std::sync::mpsc::Receiver<SlotSamples>,
    metrics: tokio::runtime::RuntimeMetrics,
    worker_memory: WorkerMemoryFn,
    thresholds: MemoryThresholds,
) {
    let workers = metrics.num_workers().max(1);
    let busy_total = || (0..workers).map(|w| metrics.worker_total_busy_duration(w)).sum::<Duration>();
    let mut ring: VecDeque<Slot> = VecDeque::with_capacity(WINDOW_SLOTS + 1);
    let (mut slot_start, mut busy_at, mut cpu_at) = (Instant::now(), busy_total(), process_cpu());
    let mut memory = MemoryWatch::new(thresholds);
    let mut next_memory = Instant::now();
    for slot in slots {
        let (busy, cpu) = (busy_total(), process_cpu());
        let mut hist = new_hist();
        for late in &slot.late_us {
            hist.saturating_record(*late);
        }
        ring.push_back(Slot {
            hist,
            busy: busy.saturating_sub(busy_at),
            cpu: cpu.saturating_sub(cpu_at),
            wall: slot.ended.saturating_duration_since(slot_start),
        });
        if ring.len() > WINDOW_SLOTS {
            ring.pop_front();
        }
        (slot_start, busy_at, cpu_at) = (slot.ended, busy, cpu);
        let snapshot = summarise(&ring, workers);
        *shared.lag.lock().expect("lag snapshot") = snapshot;
        let now = Instant::now();
        if now >= next_memory {
            next_memory = now + MEMORY_INTERVAL;
            let gateway_rss = supervisor::rss_bytes(std::process::id());
            let (worker_rss, worker_heap) = worker_memory();
            let sampled = memory.check(now, gateway_rss, worker_rss, worker_heap);
            *shared.memory.lock().expect("memory snapshot") = sampled;
        }
    }
}

fn summarise(ring: &VecDeque<Slot>, workers: usize) -> LagSnapshot {
    let mut merged = new_hist();
    let (mut busy, mut cpu, mut wall) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for slot in ring {
        let _ = merged.add(&slot.hist);
        busy += slot.busy;
        cpu += slot.cpu;
        wall += slot.wall;
    }
    let ms = |us: u64| us as f64 / 1000.0;
    let wall_s = wall.as_secs_f64().max(1e-9);
    let mut s = LagSnapshot {
        interval_ms: wall.as_millis() as u64,
        samples: merged.len(),
        delay_p99_ms: ms(merged.value_at_quantile(0.99)),
        delay_max_ms: ms(merged.max()),
        delay_mean_ms: merged.mean() / 1000.0,
        utilization: (busy.as_secs_f64() / (wall_s * workers as f64)).clamp(0.0, 1.0),
        cpu_core_ratio: cpu.as_secs_f64() / wall_s,
        degraded: false,
        reasons: Vec::new(),
    };
    s.reasons = reasons(&s);
    s.degraded = !s.reasons.is_empty();
    s
}

/// User + system CPU time of this process, from /proc/self/stat.
fn process_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return Duration::ZERO };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { return Duration::ZERO };
    // Fields after the command: state is #3, utime #14, stime #15 (1-based in proc(5)).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let hz =
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100).max(1) as u64;
    let total = ticks(11) + ticks(12);
    Duration::from_micros(total * 1_000_000 / hz)
}

/// RSS history and log cooldowns for memory-pressure lines.
struct MemoryWatch {
    thresholds: MemoryThresholds,
    history: [VecDeque<(Instant, u64)>; 2],
    last_logged: HashMap<(usize, &'static str, &'static str), Instant>,
}

impl MemoryWatch {
    fn new(thresholds: MemoryThresholds) -> MemoryWatch {
        MemoryWatch { thresholds, history: [VecDeque::new(), VecDeque::new()], last_logged: HashMap::new() }
    }

    fn check(
        &mut self,
        now: Instant,
        gateway_rss: Option<u64>,
        worker_rss: Option<u64>,
        worker_heap: Option<u64>,
    ) -> (ProcessMemory, ProcessMemory) {
        let gateway = self.one(now, 0, "gateway", gateway_rss, None);
        let worker = self.one(now, 1, "usage-worker", worker_rss, worker_heap);
        (gateway, worker)
    }

    fn one(
        &mut self,
        now: Instant,
        which: usize,
        name: &str,
        rss: Option<u64>,
        heap: Option<u64>,
    ) -> ProcessMemory {
        let history = &mut self.history[which];
        if let Some(r) = rss {
            history.push_back((now, r));
        }
        while history.front().is_some_and(|(t, _)| now.duration_since(*t) > self.thresholds.growth_window) {
            history.pop_front();
        }
        let low = history.iter().map(|(_, r)| *r).min().unwrap_or(0);
        let growth = rss.unwrap_or(0).saturating_sub(low);
        let pressure = classify(&self.thresholds, rss, heap, growth);
        if let Some(p) = &pressure {
            let key = (which, p.level, p.reason);
            let due =
                self.last_logged.get(&key).is_none_or(|t| now.duration_since(*t) >= self.thresholds.cooldown);
            if due {
                self.last_logged.insert(key, now);
                let (rss, heap) = (rss.unwrap_or(0), heap.unwrap_or(0));
                if p.level == "critical" {
                    tracing::warn!(target: "clawgate::diagnostics::memory", process = name, level = p.level, reason = p.reason,
                        rss_bytes = rss, heap_used_bytes = heap, threshold_bytes = p.threshold_bytes, rss_growth_bytes = growth,
                        "memory pressure: level={} reason={} process={name} rssBytes={rss} heapUsedBytes={heap} thresholdBytes={}",
                        p.level, p.reason, p.threshold_bytes);
                } else {
                    tracing::info!(target: "clawgate::diagnostics::memory", process = name, level = p.level, reason = p.reason,
                        rss_bytes = rss, heap_used_bytes = heap, threshold_bytes = p.threshold_bytes, rss_growth_bytes = growth,
                        "memory pressure: level={} reason={} process={name} rssBytes={rss} heapUsedBytes={heap} thresholdBytes={}",
                        p.level, p.reason, p.threshold_bytes);
                }
            }
        }
        ProcessMemory { rss_bytes: rss, heap_bytes: heap, pressure }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_levels_follow_openclaw_order() {
        let t = MemoryThresholds::default();
        assert_eq!(classify(&t, Some(100 * MIB), Some(10 * MIB), 0), None);
        let p = classify(&t, Some(1600 * MIB), Some(2100 * MIB), 0).unwrap();
        assert_eq!((p.level, p.reason), ("critical", "heap_threshold"));
        let p = classify(&t, Some(1600 * MIB), None, 0).unwrap();
        assert_eq!((p.level, p.reason, p.threshold_bytes), ("warning", "rss_threshold", 1536 * MIB));
        let p = classify(&t, Some(700 * MIB), None, 600 * MIB).unwrap();
        assert_eq!((p.level, p.reason), ("warning", "rss_growth"));
    }

    #[test]
    fn growth_is_measured_within_the_window_and_logs_cool_down() {
        let mut watch = MemoryWatch::new(MemoryThresholds::default());
        let t0 = Instant::now();
        let (_, w) = watch.check(t0, Some(50 * MIB), Some(100 * MIB), None);
        assert_eq!(w.pressure, None);
        let (_, w) = watch.check(t0 + Duration::from_secs(60), Some(50 * MIB), Some(700 * MIB), None);
        assert_eq!(w.pressure.as_ref().map(|p| p.reason), Some("rss_growth"));
        // Outside the 10-minute window the old low no longer counts.
        let (_, w) = watch.check(t0 + Duration::from_secs(700), Some(50 * MIB), Some(700 * MIB), None);
        assert_eq!(w.pressure, None);
        assert_eq!(watch.last_logged.len(), 1);
    }

    #[test]
    fn summary_reports_delay_and_reasons() {
        let mut ring = VecDeque::new();
        let mut hist = new_hist();
        for _ in 0..99 {
            hist.record(500).unwrap();
        }
        hist.record(1_500_000).unwrap();
        ring.push_back(Slot {
            hist,
            busy: Duration::from_millis(1900),
            cpu: Duration::from_millis(950),
            wall: Duration::from_secs(1),
        });
        let s = summarise(&ring, 2);
        assert_eq!(s.samples, 100);
        assert!((s.delay_p99_ms - 0.5).abs() < 0.01, "{s:?}");
        assert!((s.delay_max_ms - 1500.0).abs() < 20.0, "{s:?}");
        assert!((s.utilization - 0.95).abs() < 1e-9);
        assert_eq!(s.reasons, vec!["event_loop_delay", "event_loop_utilization", "cpu"]);
        assert!(s.degraded);
        assert!(crate::status::EventLoop::from(&s).delay_max_ms >= 1480.0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_blocked_worker_thread_shows_up_as_delay() {
        let monitor = LagMonitor::spawn(Box::new(|| (None, None)));
        // Wait for the first slot, so the sampler is in its loop before the stall.
        let deadline = Instant::now() + Duration::from_secs(5);
        while monitor.snapshot().samples == 0 {
            assert!(Instant::now() < deadline, "the sampler never reported");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Block both runtime threads for 60 ms, the way a parse on the runtime would.
        let a = tokio::spawn(async { std::thread::sleep(Duration::from_millis(60)) });
        let b = tokio::spawn(async { std::thread::sleep(Duration::from_millis(60)) });
        let _ = tokio::join!(a, b);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let s = monitor.snapshot();
            if s.samples > 0 && s.delay_max_ms >= 30.0 {
                assert!(s.delay_p99_ms <= s.delay_max_ms);
                break;
            }
            assert!(Instant::now() < deadline, "no delay recorded: {s:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
