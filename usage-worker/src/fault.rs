//! Fault injection for tests, compiled only into debug builds.
//!
//! `CLAWGATE_WORKER_FAULT` makes the worker misbehave through its real compute path, so tests
//! exercise the supervisor against the real binary: `panic` (abort the process), `hang` (spin
//! forever inside the job), `alloc:<MiB>` (allocate and touch that much memory, then hold it).
//! Release builds ignore the variable entirely.

use ipc_proto::UsageQuery;

/// Injects the configured fault, if any, at the start of a job.
pub fn maybe_inject(_query: &UsageQuery) {
    if !cfg!(debug_assertions) {
        return;
    }
    let Ok(fault) = std::env::var("CLAWGATE_WORKER_FAULT") else { return };
    match fault.as_str() {
        "panic" => std::process::abort(),
        "hang" => loop {
            std::hint::spin_loop();
        },
        other => {
            if let Some(mib) = other.strip_prefix("alloc:").and_then(|s| s.parse::<usize>().ok()) {
                let mut hog = vec![1u8; mib << 20];
                for i in (0..hog.len()).step_by(4096) {
                    hog[i] = (i % 251) as u8;
                }
                std::mem::forget(hog);
            }
        }
    }
}
