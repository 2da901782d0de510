//! Fault injection for tests, compiled into debug builds and `--features faults` builds only.
//!
//! A query whose `key` is `__fault__:<fault>` misbehaves through the worker's real compute path,
//! so tests exercise the supervisor against the real binary, one request at a time:
//! `panic` (abort the process), `exit78`, `hang` (spin without polling cancel),
//! `alloc:<MiB>` (grow the counted heap 1 MiB at a time, as runaway engine work would, polling
//! cancel), `rss:<MiB>` (grow RSS outside the counting allocator, so only the supervisor's RSS
//! watch can see it). Other builds treat such keys as ordinary (unknown) keys; `clawgate-proof`
//! needs release binaries built with `--features usage-worker/faults`.

use std::sync::atomic::{AtomicBool, Ordering};

use ipc_proto::{UsageQuery, WorkerError, WorkerErrorKind};

const PREFIX: &str = "__fault__:";

/// Runs the fault named by the query, if any. `Some` is the job's result when the fault
/// returns instead of killing the process.
pub fn maybe_inject(query: &UsageQuery, cancel: &AtomicBool) -> Option<Result<(), WorkerError>> {
    if !cfg!(any(debug_assertions, feature = "faults")) {
        return None;
    }
    let fault = query.key.as_deref()?.strip_prefix(PREFIX)?;
    tracing::warn!(fault, "Injecting a test fault.");
    match fault {
        "panic" => std::process::abort(),
        "exit78" => std::process::exit(78),
        "hang" => loop {
            std::hint::spin_loop();
        },
        other => {
            if let Some(mib) = other.strip_prefix("alloc:").and_then(|s| s.parse::<usize>().ok()) {
                let mut hog: Vec<Vec<u8>> = Vec::new();
                for _ in 0..mib {
                    if cancel.load(Ordering::Relaxed) {
                        return Some(Err(WorkerError::new(WorkerErrorKind::Cancelled, "fault cancelled")));
                    }
                    hog.push(vec![1u8; 1 << 20]);
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                // Hold it until cancelled, like a job stuck on a huge input.
                while !cancel.load(Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                drop(hog);
                return Some(Err(WorkerError::new(WorkerErrorKind::Cancelled, "fault cancelled")));
            }
            if let Some(mib) = other.strip_prefix("rss:").and_then(|s| s.parse::<usize>().ok()) {
                rss_hog(mib);
                loop {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
            None
        }
    }
}

/// Maps and touches `mib` MiB directly from the kernel, bypassing the counting allocator.
fn rss_hog(mib: usize) {
    let len = mib << 20;
    // SAFETY: an anonymous private mapping of `len` bytes; on success we only write within it,
    // and it is never unmapped (the process is about to be killed by the test).
    unsafe {
        let ptr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if ptr == libc::MAP_FAILED {
            return;
        }
        let bytes = ptr.cast::<u8>();
        for offset in (0..len).step_by(4096) {
            bytes.add(offset).write_volatile(1);
            if offset % (1 << 20) == 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }
}
