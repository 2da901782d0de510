//! The real processes: start `clawgate serve` like an operator would, find its worker in
//! /proc, and sample both processes' memory every 100 ms.

use std::{
    fs::File,
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::ctx::{Ctx, MEMORY_ALLOC, MEMORY_RSS};

/// A running `clawgate serve`, stopped (with its worker) on drop.
pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl Gateway {
    /// Starts the gateway on an ephemeral loopback port with `token`, and waits (60 s at most)
    /// for its `clawgate listening on` line.
    pub fn start(
        clawgate: &Path,
        worker: &Path,
        work: &Path,
        args: &[String],
        token: &str,
    ) -> anyhow::Result<Gateway> {
        let log = work.join("gateway.log");
        let stderr = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new(clawgate)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--worker-mode", "managed"])
            .arg("--worker-bin")
            .arg(worker)
            .args(args)
            // In the environment, not argv: other users can read a process's arguments.
            .env("CLAWGATE_TOKEN", token)
            .env_remove("CLAWGATE_LISTEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .with_context(|| format!("starting {}", clawgate.display()))?;
        let stdout = child.stdout.take().context("gateway stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut gateway = Gateway { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)), log };
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            match rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("clawgate listening on http://") {
                        gateway.addr = url.trim().parse().context("the listening address")?;
                        return Ok(gateway);
                    }
                }
                Err(_) => bail!(
                    "clawgate serve did not report listening within 60 s (log: {})",
                    gateway.log.display()
                ),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub fn stop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// `(state letter, parent pid)` of `pid` from /proc.
pub fn stat(pid: u32) -> Option<(char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` is a live (not zombie) child of `parent` running the usage worker.
pub fn is_worker_of(pid: u32, parent: u32) -> bool {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    matches!(stat(pid), Some((state, ppid)) if ppid == parent && state != 'Z' && state != 'X')
        && comm.starts_with("clawgate-usage")
}

/// `(VmRSS, VmHWM)` of `pid` in bytes.
pub fn memory(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Live usage-worker children of `parent` (every thread's children: tokio forks from any).
fn workers_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) else { return out };
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for pid in children.split_whitespace().filter_map(|p| p.parse::<u32>().ok()) {
            if is_worker_of(pid, parent) && !out.contains(&pid) {
                out.push(pid);
            }
        }
    }
    out
}

/// Peak memory seen.
#[derive(Debug, Default)]
pub struct MemoryReport {
    /// The gateway's VmHWM (peak RSS over its life).
    pub gateway_peak: u64,
    /// Peak RSS of workers no memory fault was pushing, and when (seconds into the run).
    pub worker_peak: u64,
    pub worker_peak_at_s: f64,
    /// Peak RSS of workers an `alloc:` fault pushed toward the heap budget (which must keep
    /// them within the cap).
    pub alloc_fault_peak: u64,
    /// Peak RSS of workers an `rss:` fault pushed past the cap (until they were killed).
    pub rss_fault_peak: u64,
    pub generations: u64,
    pub deaths_seen: u64,
}

/// Samples every 100 ms until `stop`: the gateway's VmRSS/VmHWM, and the current worker's,
/// tracking worker generations (a new pid is a new generation; a vanished one is a death).
pub fn sampler(ctx: Arc<Ctx>, stop: Arc<AtomicBool>) -> MemoryReport {
    let mut report = MemoryReport::default();
    // Per live worker pid: the memory faults that have pushed it (its VmHWM keeps their peak).
    let mut live: Vec<(u32, u8)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        sample(&ctx, &mut report, &mut live);
        std::thread::sleep(Duration::from_millis(100));
    }
    sample(&ctx, &mut report, &mut live);
    report
}

fn sample(ctx: &Ctx, report: &mut MemoryReport, live: &mut Vec<(u32, u8)>) {
    if let Some((_, hwm)) = memory(ctx.gateway_pid) {
        report.gateway_peak = report.gateway_peak.max(hwm);
    }
    let now: Vec<u32> = workers_of(ctx.gateway_pid);
    let before = live.len();
    live.retain(|(pid, _)| now.contains(pid));
    if live.len() < before {
        report.deaths_seen += (before - live.len()) as u64;
        ctx.fault();
    }
    let faulting = ctx.memory_fault.load(Ordering::Relaxed);
    for pid in now {
        if !live.iter().any(|(p, _)| *p == pid) {
            live.push((pid, 0));
            report.generations += 1;
            ctx.generation.fetch_add(1, Ordering::Relaxed);
        }
        let Some(slot) = live.iter_mut().find(|(p, _)| *p == pid) else { continue };
        slot.1 |= faulting;
        if let Some((_, hwm)) = memory(pid) {
            if slot.1 & MEMORY_RSS != 0 {
                report.rss_fault_peak = report.rss_fault_peak.max(hwm);
            } else if slot.1 & MEMORY_ALLOC != 0 {
                report.alloc_fault_peak = report.alloc_fault_peak.max(hwm);
            } else if hwm > report.worker_peak {
                report.worker_peak = hwm;
                report.worker_peak_at_s = ctx.secs();
            }
        }
    }
    ctx.worker_pid.store(live.last().map_or(0, |(p, _)| *p), Ordering::Relaxed);
}
