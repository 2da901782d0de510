//! Local profiling driver (not committed).
use ipc_proto::*;
use std::sync::atomic::AtomicBool;
use std::time::Instant;
use usage_worker::engine::{Engine, EngineConfig};

fn q(method: Method) -> UsageQuery {
    UsageQuery {
        method,
        start_ms: 0,
        end_ms: 1_900_000_000_000,
        agents: AgentScope::All,
        key: None,
        limit: Some(1000),
        group_by: GroupBy::Instance,
        day_zone: DayZone::Utc,
        include_context_weight: false,
        offset: None,
        sort: None,
        search: None,
    }
}

#[global_allocator]
static GLOBAL: usage_worker::alloc::CountingAlloc = usage_worker::alloc::CountingAlloc;

fn main() {
    if std::env::var("SETTHP").is_ok() {
        usage_worker::alloc::tune();
    }
    std::thread::spawn(|| {
        let (mut rss, mut heap) = (0u64, 0u64);
        loop {
            std::thread::sleep(std::time::Duration::from_millis(20));
            let r = usage_worker::alloc::rss_bytes();
            let h = usage_worker::alloc::heap_bytes();
            if r > rss || h > heap {
                rss = rss.max(r);
                heap = heap.max(h);
                eprintln!(
                    "peak rss {} MB heap {} MB (now rss {} heap {})",
                    rss >> 20,
                    heap >> 20,
                    r >> 20,
                    h >> 20
                );
            }
        }
    });
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("CLAWGATE_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let mut cfg = EngineConfig::new(&args[1]);
    cfg.data_dir = Some(args[2].clone().into());
    let c = AtomicBool::new(false);
    let mut e = Engine::new(cfg.clone());
    for (label, m) in [
        ("cold-or-restart sessions", Method::SessionsUsage),
        ("cost", Method::UsageCost),
        ("warm sessions", Method::SessionsUsage),
        ("warm sessions", Method::SessionsUsage),
    ] {
        let t = Instant::now();
        let (a, s) = e.answer(&q(m), &c, &mut |_| {}).unwrap();
        eprintln!("{label}: {:?} parsed={} bytes={}", t.elapsed(), s.files_parsed, a.data.len());
    }
    if args.len() > 3 {
        let target = std::path::PathBuf::from(&args[3]);
        let len = std::fs::metadata(&target).unwrap().len();
        for i in 0..3u64 {
            demo_store::append_turn(&target, 1000 + i, 1_796_000_000_000 + i as i64 * 60_000).unwrap();
            let t = Instant::now();
            let (_, s) = e.answer(&q(Method::SessionsUsage), &c, &mut |_| {}).unwrap();
            eprintln!("append+sessions: {:?} parsed={}", t.elapsed(), s.files_parsed);
            demo_store::append_turn(&target, 2000 + i, 1_796_000_000_000 + i as i64 * 60_000).unwrap();
            let t = Instant::now();
            let (_, s) = e.answer(&q(Method::UsageCost), &c, &mut |_| {}).unwrap();
            eprintln!("append+cost: {:?} parsed={}", t.elapsed(), s.files_parsed);
        }
        std::fs::OpenOptions::new().write(true).open(&target).unwrap().set_len(len).unwrap();
    }
}
