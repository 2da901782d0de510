//! `/healthz` probes on a fixed schedule, on a thread of their own, over one keep-alive
//! connection (as a load balancer's health checker would).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;

use crate::ctx::{Ctx, agent, histogram};

/// What the prober saw.
pub struct ProbeReport {
    /// Latencies, µs.
    pub hist: Histogram<u64>,
    pub failures: u64,
    pub failure_examples: Vec<String>,
    /// When the slowest probe was sent, seconds into the run.
    pub max_at_s: f64,
}

/// Probes `GET /healthz` every `every` until `stop`. A probe fails on any status but 200 or
/// when it takes longer than `timeout`.
pub fn run(ctx: Arc<Ctx>, every: Duration, timeout: Duration, stop: Arc<AtomicBool>) -> ProbeReport {
    let agent = agent(timeout);
    let url = format!("{}/healthz", ctx.base);
    let mut report =
        ProbeReport { hist: histogram(), failures: 0, failure_examples: Vec::new(), max_at_s: 0.0 };
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let result = agent.get(&url).call().map_err(|e| e.to_string()).and_then(|mut res| {
            let status = res.status().as_u16();
            let body = res.body_mut().read_to_string().map_err(|e| e.to_string())?;
            if status == 200 { Ok(()) } else { Err(format!("status {status}: {body:.200}")) }
        });
        let took = started.elapsed();
        let micros = (took.as_micros() as u64).max(1);
        if micros >= report.hist.max() {
            report.max_at_s = started.duration_since(ctx.started).as_secs_f64();
        }
        let _ = report.hist.record(micros);
        if let Err(why) = result {
            report.failures += 1;
            if report.failure_examples.len() < 8 {
                let what = format!("probe at {:.2}s failed after {took:?}: {why}", ctx.secs());
                eprintln!("clawgate-proof: FAILURE: {what}");
                report.failure_examples.push(what);
            }
        }
        // A fixed schedule: a slow probe delays the next one, never causes a burst.
        next = (next + every).max(Instant::now());
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    report
}
