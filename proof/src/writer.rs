//! The writer: appends turns to random live sessions in bursts, and between bursts waits for
//! the answers to reflect every append exactly (a settle).
//!
//! Live sessions are the newer half of each agent's `sessions.json` entries (what a running
//! deployment writes to); their rows sort near the top of `sessions.usage`, so a dashboard's
//! `limit:1000` answer lists them and can be checked exactly.
//!
//! `CLAWGATE_PROOF_DUMP=DIR` keeps the settle's last answer of each method in `DIR`, for a
//! bug report when a settle does not converge.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use demo_store::Rng;
use hdrhistogram::Histogram;
use serde_json::Value;

use crate::{
    answer::{self, Envelope, Outcome},
    ctx::{Ctx, Method, agent, call, histogram},
    truth::Verdict,
};

#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub append_every: Duration,
    pub write_for: Duration,
    pub settle_deadline: Duration,
    pub seed: u64,
}

/// Settles: how long the answers took to reflect every append once the writer paused.
pub struct Settles {
    pub converged: u64,
    pub timed_out: u64,
    pub took: Histogram<u64>,
    pub examples: Vec<String>,
}

impl Default for Settles {
    fn default() -> Settles {
        Settles { converged: 0, timed_out: 0, took: histogram(), examples: Vec::new() }
    }
}

/// A live transcript the writer may append to.
#[derive(Debug, Clone)]
pub struct Live {
    pub agent: String,
    pub file: PathBuf,
}

/// The newer half of each agent's sessions (by `sessions.json` `updatedAt`) whose transcript
/// exists.
pub fn live_sessions(store: &Path, agents: &[String]) -> anyhow::Result<Vec<Live>> {
    let mut out = Vec::new();
    for agent in agents {
        let dir = store.join("agents").join(agent).join("sessions");
        let path = dir.join("sessions.json");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let entries: serde_json::Map<String, Value> =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let mut sessions: Vec<(i64, PathBuf)> = entries
            .values()
            .filter_map(|e| {
                let file = dir.join(format!("{}.jsonl", e["sessionId"].as_str()?));
                file.is_file().then(|| (e["updatedAt"].as_i64().unwrap_or(0), file))
            })
            .collect();
        sessions.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let keep = sessions.len().div_ceil(2);
        out.extend(sessions.into_iter().take(keep).map(|(_, file)| Live { agent: agent.clone(), file }));
    }
    anyhow::ensure!(!out.is_empty(), "the store has no live session to append to");
    Ok(out)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Bursts of appends and settles until `stop`. An append that fails ends the run (the store
/// or the harness is broken, and nothing after it could be checked).
pub fn run(
    ctx: Arc<Ctx>,
    live: Vec<Live>,
    config: WriterConfig,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Settles> {
    let mut rng = Rng::new(config.seed);
    let mut settles = Settles::default();
    while !stop.load(Ordering::Relaxed) {
        let burst_end = Instant::now() + config.write_for;
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) && Instant::now() < burst_end {
            let target = &live[rng.below(live.len() as u64) as usize];
            ctx.truth.append(&target.agent, &target.file, rng.next_u64(), now_ms())?;
            next = (next + config.append_every).max(Instant::now());
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        settle(&ctx, config.settle_deadline, &stop, &mut settles);
    }
    Ok(settles)
}

/// Polls both methods over HTTP until each answers fresh with every append (or `deadline`).
/// Every answer on the way is checked and counted like any other.
pub fn settle(ctx: &Ctx, deadline: Duration, stop: &AtomicBool, settles: &mut Settles) -> bool {
    let http = agent(Duration::from_secs(30));
    let started = Instant::now();
    let mut done = [false, false];
    let mut last = [String::new(), String::new()];
    let (expected, appends) = ctx.truth.expected();
    loop {
        for (i, method) in [Method::SessionsUsage, Method::UsageCost].into_iter().enumerate() {
            if done[i] {
                continue;
            }
            // Limit high enough to list every row: the remainder check is then always exact.
            let params = ctx.params(method, 100_000);
            let sent = ctx.sent(method, false);
            match call(ctx, &http, method.name(), &params) {
                Ok((_, body)) => {
                    let received = Instant::now();
                    if let Some(dir) = std::env::var_os("CLAWGATE_PROOF_DUMP") {
                        let _ =
                            std::fs::write(Path::new(&dir).join(format!("{}.json", method.name())), &body);
                    }
                    match serde_json::from_str::<Envelope<'_>>(&body) {
                        Ok(envelope) => match answer::handle(ctx, &sent, received, &envelope) {
                            Outcome::Answer { verdict: Verdict::Ok { converged, behind, .. }, stale } => {
                                done[i] = converged && !stale;
                                last[i] = format!(
                                    "{}: stale {stale}, converged {converged}{}",
                                    method.name(),
                                    behind.map(|b| format!(" ({b})")).unwrap_or_default()
                                );
                            }
                            Outcome::Answer { verdict: Verdict::Wrong(why), .. } => last[i] = why,
                            Outcome::Failed => last[i] = format!("{}: error answer", method.name()),
                        },
                        Err(e) => {
                            ctx.calls().fail(format!("{} over HTTP: unreadable body: {e}", method.name()));
                        }
                    }
                }
                Err(e) => ctx.failed(&sent, false, &format!("over HTTP: {e}")),
            }
        }
        if done == [true, true] {
            settles.converged += 1;
            let _ = settles.took.record((started.elapsed().as_micros() as u64).max(1));
            return true;
        }
        if stop.load(Ordering::Relaxed) {
            // Cut short by the end of the run: the final settle checks the end state.
            return false;
        }
        if started.elapsed() >= deadline {
            settles.timed_out += 1;
            if settles.examples.len() < 8 {
                let what = format!(
                    "settle at {:.1}s ({appends} appends, expected {} tokens) not reached in {} ms: {} / {}",
                    ctx.secs(),
                    expected.total_tokens,
                    started.elapsed().as_millis(),
                    last[0],
                    last[1]
                );
                eprintln!("clawgate-proof: SETTLE: {what}");
                settles.examples.push(what);
            }
            return false;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
