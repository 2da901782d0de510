//! A short scheduler slice for the gateway's runtime threads (Linux 6.12+, EEVDF).
//!
//! On a small host busy with the usage worker (nice 10) and whatever else runs there, a woken
//! runtime thread otherwise waits for the running task's slice (about 3 ms) to end before it gets
//! a CPU, and a probe's round trip takes several such wake-ups. A shorter slice gives the thread
//! earlier deadlines, so it preempts at once; it asks for no more CPU than before. Kernels
//! without custom slices ignore the value; any refusal is logged and changes nothing else.
//!
//! Raw libc on purpose: nix wraps neither `sched_setattr` (glibc has no wrapper either, hence
//! `syscall`) nor `getpriority`, and the struct layout is the kernel's `SCHED_ATTR_SIZE_VER0`.

use std::time::Duration;

/// `struct sched_attr` (`SCHED_ATTR_SIZE_VER0`).
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// The slice the runtime threads ask for.
pub const RUNTIME_SLICE: Duration = Duration::from_micros(200);

/// Asks for `slice` on the calling thread, keeping its policy (only `SCHED_OTHER` threads are
/// changed: an operator's `SCHED_BATCH` or real-time choice stands) and its nice value.
pub fn request_slice(slice: Duration) -> Result<(), String> {
    // SAFETY: plain syscalls on the calling thread; `attr` outlives the call and has the size
    // it declares.
    unsafe {
        let policy = libc::sched_getscheduler(0);
        if policy != libc::SCHED_OTHER {
            return Err(format!("scheduling policy {policy} is not SCHED_OTHER; left as is"));
        }
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, 0);
        if nice == -1 && *libc::__errno_location() != 0 {
            return Err(format!("getpriority: {}", std::io::Error::last_os_error()));
        }
        let attr = SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            policy: libc::SCHED_OTHER as u32,
            flags: 0,
            nice,
            priority: 0,
            runtime: slice.as_nanos() as u64,
            deadline: 0,
            period: 0,
        };
        if libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) != 0 {
            return Err(format!("sched_setattr: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_gets_the_slice_and_keeps_its_nice_value() {
        std::thread::spawn(|| {
            // SAFETY: plain syscalls on this thread.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 3) };
            request_slice(RUNTIME_SLICE).expect("sched_setattr");
            // SAFETY: as above.
            assert_eq!(unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }, 3);
            let sched = std::fs::read_to_string("/proc/thread-self/sched").unwrap_or_default();
            if let Some(line) = sched.lines().find(|l| l.starts_with("se.slice")) {
                // Kernels with custom slices (6.12+) report it here.
                assert!(line.ends_with(&RUNTIME_SLICE.as_nanos().to_string()), "{line}");
            }
        })
        .join()
        .unwrap();
    }
}
