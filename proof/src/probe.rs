//! `/healthz` probes on a fixed schedule over one keep-alive connection, as a load balancer's
//! health checker would send them.
//!
//! They run in a child process of their own (this executable with `--probe-child`), so that
//! the harness's own work (parsing 20 dashboards' answers) cannot stall them in its address
//! space and pass for gateway latency. The child probes until its stdin closes, then prints its
//! figures as one JSON line. With `PROOF_PROBE_TRACE=FILE` in the environment it also writes
//! every probe to FILE as `<unix seconds at send> <microseconds>` lines, to line slow probes up
//! with the gateway log.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::{ctx::histogram, report};

/// Probes `GET {base}/healthz` every `every` until `stop` and returns the figures: a probe
/// fails on any status but 200, or when it takes longer than `timeout`.
pub fn probe(base: &str, every: Duration, timeout: Duration, stop: &AtomicBool) -> Value {
    let agent = crate::ctx::agent(timeout);
    let url = format!("{base}/healthz");
    let mut hist = histogram();
    let (mut failures, mut examples, mut max_at_s) = (0u64, Vec::<String>::new(), 0.0f64);
    let started = Instant::now();
    let mut trace = std::env::var_os("PROOF_PROBE_TRACE").map(|_| Vec::new());
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        let result = agent.get(&url).call().map_err(|e| e.to_string()).and_then(|mut res| {
            let status = res.status().as_u16();
            let body = res.body_mut().read_to_string().map_err(|e| e.to_string())?;
            if status == 200 { Ok(()) } else { Err(format!("status {status}: {body:.200}")) }
        });
        let took = sent.elapsed();
        let result = result.and_then(|()| {
            if took > timeout {
                Err(format!("answered after {took:?}, over the {timeout:?} limit"))
            } else {
                Ok(())
            }
        });
        let micros = (took.as_micros() as u64).max(1);
        if micros >= hist.max() {
            max_at_s = sent.duration_since(started).as_secs_f64();
        }
        let _ = hist.record(micros);
        if let Some(t) = trace.as_mut() {
            let epoch =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            t.push(format!("{:.3} {micros}\n", epoch.as_secs_f64() - took.as_secs_f64()));
        }
        if let Err(why) = result {
            failures += 1;
            if examples.len() < 8 {
                examples.push(format!(
                    "probe at {:.2}s failed after {took:?}: {why}",
                    sent.duration_since(started).as_secs_f64()
                ));
            }
        }
        // A fixed schedule: a slow probe delays the next one, never causes a burst.
        next = (next + every).max(Instant::now());
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    if let (Some(t), Some(path)) = (trace, std::env::var_os("PROOF_PROBE_TRACE")) {
        let _ = std::fs::write(path, t.concat());
    }
    let latency = report::latency(&hist);
    json!({
        "count": hist.len(),
        "failures": failures,
        "p50Ms": latency["p50Ms"],
        "p99Ms": latency["p99Ms"],
        "maxMs": latency["maxMs"],
        "maxAtS": (max_at_s * 10.0).round() / 10.0,
        "failureExamples": examples,
    })
}

/// The `--probe-child` process: probes until stdin closes, then prints the figures.
pub fn child_main(base: &str, every: Duration, timeout: Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        flag.store(true, Ordering::Relaxed);
    });
    println!("{}", probe(base, every, timeout, &stop));
}

/// A running probe child.
pub struct Prober {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Prober {
    pub fn start(exe: &Path, base: &str, every: Duration, timeout: Duration) -> anyhow::Result<Prober> {
        let mut child = Command::new(exe)
            .arg("--probe-child")
            .arg(base)
            .arg("--probe-every")
            .arg(format!("{}ms", every.as_secs_f64() * 1000.0))
            .arg("--probe-timeout")
            .arg(format!("{}ms", timeout.as_secs_f64() * 1000.0))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting the prober {}", exe.display()))?;
        let stdin = child.stdin.take();
        Ok(Prober { child, stdin })
    }

    /// Stops probing and returns the figures.
    pub fn finish(mut self) -> anyhow::Result<Value> {
        drop(self.stdin.take());
        let stdout = self.child.stdout.take().context("prober stdout")?;
        let line = BufReader::new(stdout).lines().next().context("the prober printed nothing")??;
        let _ = self.child.wait();
        serde_json::from_str(&line).context("the prober's figures")
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
