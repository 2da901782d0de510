//! In-process measurements on a large store, for profiling (ignored by default; run in release):
//! `CLAWGATE_BENCH_DIR=/tmp/big cargo test --release -p usage-worker --lib bench_ -- --ignored --nocapture`.
//! The store in `CLAWGATE_BENCH_DIR` is generated if missing (or any store may be pointed at).
//! `CLAWGATE_BENCH_ROUNDS` warm calls per method (`CLAWGATE_BENCH_METHOD=cost|sessions` for one),
//! `CLAWGATE_BENCH_TOUCH=1` appends a blank line to one transcript before each call, and
//! `CLAWGATE_BENCH_DUMP=FILE` writes the cold answer. The end-to-end benchmark through the
//! worker process is `cargo bench -p usage-worker --bench engine`.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use ipc_proto::Method;

use super::generate::{Spec, generate};
use super::query;
use crate::engine::{Engine, EngineConfig};

fn bench_dir() -> PathBuf {
    let dir =
        PathBuf::from(std::env::var("CLAWGATE_BENCH_DIR").unwrap_or_else(|_| "/tmp/clawgate-bench".into()));
    if !dir.join("agents").exists() {
        let spec = Spec { agents: 9, sessions_per_agent: 184, turns: 100, tool_result_bytes: 7000, seed: 1 };
        let t = Instant::now();
        let bytes = generate(&dir, &spec);
        eprintln!("generated {} MB in {:?}", bytes >> 20, t.elapsed());
    }
    dir
}

#[test]
#[ignore = "benchmark: needs a release build and ~1.5 GB of disk"]
fn bench_cold_and_warm() {
    let dir = bench_dir();
    let threads: usize =
        std::env::var("CLAWGATE_BENCH_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(2);
    let mut cfg = EngineConfig::new(&dir);
    cfg.threads = threads;
    let mut e = Engine::new(cfg);
    let cancel = AtomicBool::new(false);
    let mut q = query(Method::SessionsUsage);
    q.limit = Some(1000);
    let t = Instant::now();
    let a = e.answer(&q, &cancel, &mut |_| {}).unwrap();
    let cold = t.elapsed();
    if let Ok(out) = std::env::var("CLAWGATE_BENCH_DUMP") {
        std::fs::write(out, &a.payload_json).unwrap();
    }
    eprintln!(
        "cold: {} files, {} MB parsed in {:?} = {:.0} MB/s on {threads} threads; answer {} KB; rollups ~{} MB",
        a.stats.files_total,
        a.stats.bytes_parsed >> 20,
        cold,
        a.stats.bytes_parsed as f64 / 1048576.0 / cold.as_secs_f64(),
        a.payload_json.len() >> 10,
        e.rollup_bytes() >> 20,
    );
    let rounds: usize = std::env::var("CLAWGATE_BENCH_ROUNDS").ok().and_then(|t| t.parse().ok()).unwrap_or(1);
    let methods = match std::env::var("CLAWGATE_BENCH_METHOD").as_deref() {
        Ok("cost") => vec![Method::UsageCost],
        Ok("sessions") => vec![Method::SessionsUsage],
        _ => vec![Method::SessionsUsage, Method::UsageCost],
    };
    for method in methods {
        let mut q = query(method);
        q.limit = Some(1000);
        q.end_ms = i64::MAX / 4;
        // `CLAWGATE_BENCH_TOUCH=1`: append a blank line to one transcript before each call, so
        // every call re-reads one file and re-aggregates (the store is left with blank lines).
        let touch = std::env::var("CLAWGATE_BENCH_TOUCH").is_ok_and(|v| v == "1");
        let target = crate::engine::discover::list_files(&dir, "main").unwrap()[0].path.clone();
        let mut times = Vec::new();
        for _ in 0..rounds {
            if touch {
                use std::io::Write as _;
                std::fs::OpenOptions::new().append(true).open(&target).unwrap().write_all(b"\n").unwrap();
            }
            let t = Instant::now();
            let a = e.answer(&q, &cancel, &mut |_| {}).unwrap();
            times.push(t.elapsed());
            assert_eq!(a.stats.bytes_parsed, u64::from(touch));
        }
        times.sort();
        eprintln!("warm {}: median {:?} over {rounds} calls", method.name(), times[times.len() / 2]);
    }
}

#[test]
#[ignore = "benchmark: times the stat pass over a store in CLAWGATE_BENCH_DIR"]
fn bench_listing() {
    let dir = bench_dir();
    let agents = crate::engine::discover::list_agents(&dir).unwrap();
    for round in 0..5 {
        let t = Instant::now();
        let mut n = 0;
        for a in &agents {
            n += crate::engine::discover::list_files(&dir, a).unwrap().len();
        }
        let listed = t.elapsed();
        let t = Instant::now();
        for a in &agents {
            for e in std::fs::read_dir(crate::engine::discover::sessions_dir(&dir, a)).unwrap() {
                let _ = e.unwrap().metadata();
            }
        }
        let bare = t.elapsed();
        let t = Instant::now();
        let n2: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|k| {
                    let (agents, dir) = (&agents, &dir);
                    s.spawn(move || {
                        agents
                            .iter()
                            .skip(k)
                            .step_by(2)
                            .map(|a| crate::engine::discover::list_files(dir, a).unwrap().len())
                            .sum::<usize>()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        eprintln!(
            "round {round}: list_files {n} files in {listed:?}; bare readdir+stat {bare:?}; 2 threads {n2} in {:?}",
            t.elapsed()
        );
    }
}
