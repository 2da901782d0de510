//! A counting global allocator over mimalloc: the worker's heap in bytes, cheap enough to read
//! on every `Ping`.
//!
//! RSS lags and includes freed-but-cached pages; the live heap is the figure a memory budget can
//! act on before the supervisor's RSS cap or the kernel has to. mimalloc instead of glibc's
//! malloc because after a cold parse glibc kept freed buffers resident in per-thread arenas (RSS
//! 1.4-2.3x the live heap on large stores, issue #16); mimalloc returns them to the OS within
//! milliseconds, and [`trim`] does it at once after a big job. BENCHMARKS.md has the figures.

use std::{
    alloc::{GlobalAlloc, Layout},
    sync::atomic::{AtomicUsize, Ordering},
};

use mimalloc::MiMalloc as System;

/// Wraps mimalloc and counts live bytes.
pub struct CountingAlloc;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Bytes currently allocated through the global allocator.
pub fn heap_bytes() -> u64 {
    LIVE_BYTES.load(Ordering::Relaxed) as u64
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged and only adds
// bookkeeping on an atomic counter, so `System`'s guarantees carry over.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        let new_ptr = unsafe { System.realloc(ptr, layout, new_size) };
        if !new_ptr.is_null() {
            if new_size >= layout.size() {
                LIVE_BYTES.fetch_add(new_size - layout.size(), Ordering::Relaxed);
            } else {
                LIVE_BYTES.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        new_ptr
    }
}

/// Sets the process up for a watched RSS: no transparent huge pages, whose 2 MiB granules keep
/// memory the allocator freed resident (measured on a cold parse of a 54,000-session store, heap
/// 5 MB: peak RSS 43-46 MB with them, 34 MB without; BENCHMARKS.md). Call first thing in
/// `main`; children inherit it.
pub fn tune() {
    if let Err(error) = nix::sys::prctl::set_thp_disable(true) {
        tracing::debug!(%error, "Cannot turn transparent huge pages off; RSS may run higher.");
    }
}

/// Returns freed memory to the OS now: mimalloc's free pages, and glibc's (SQLite allocates
/// through libc's `malloc`).
pub fn trim() {
    // SAFETY: both calls only release memory the allocators hold free; no pointer is involved.
    unsafe {
        libmimalloc_sys::mi_collect(true);
        #[cfg(target_env = "gnu")]
        libc::malloc_trim(0);
    }
}

/// This process's resident set size, from /proc/self/statm (0 where /proc is unavailable).
pub fn rss_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else { return 0 };
    let resident_pages: u64 = statm.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    resident_pages * page_size()
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().map_or(4096, |v| v as u64)
}
