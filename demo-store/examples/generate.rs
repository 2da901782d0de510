//! Generates a demo store from the command line and prints its manifest and timing.
//!
//! Usage: `cargo run --release -p demo-store --example generate -- <out> [small|seed|sample N]`.

use std::path::PathBuf;
use std::time::Instant;

use demo_store::{DemoSpec, generate};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().ok_or("usage: generate <out> [small|seed|sample N]")?);
    let spec = match args.next().as_deref() {
        Some("seed") => DemoSpec::seed_size(),
        // `sample N`: seed-size sessions, but 1 agent x N sessions (for size extrapolation).
        Some("sample") => DemoSpec {
            agents: 1,
            sessions_per_agent: args.next().and_then(|n| n.parse().ok()).unwrap_or(20),
            ..DemoSpec::seed_size()
        },
        _ => DemoSpec::default(),
    };
    let started = Instant::now();
    let manifest = generate(&out, &spec)?;
    let took = started.elapsed();
    println!("{}", serde_json::to_string_pretty(&manifest)?);
    let sessions = f64::from(spec.agents * spec.sessions_per_agent);
    eprintln!(
        "{} files, {} bytes ({:.3} GB) in {:.2?}; {:.3} GB at seed size",
        manifest.files,
        manifest.bytes,
        manifest.bytes as f64 / 1e9,
        took,
        manifest.bytes as f64 / sessions * 9.0 * 184.0 / 1e9
    );
    Ok(())
}
