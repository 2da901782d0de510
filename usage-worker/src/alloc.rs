//! A counting global allocator over mimalloc: the worker's heap in bytes, cheap enough to read
//! on every `Ping`.
//!
//! RSS lags and includes freed-but-cached pages; the live heap is the figure a memory budget can
//! act on before the supervisor's RSS cap or the kernel has to. mimalloc instead of glibc's
//! malloc because after a cold parse glibc kept freed buffers resident in per-thread arenas (RSS
//! 1.4-2.3x the live heap on large stores, issue #16); mimalloc (v3) returns them to the OS once
//! its purge delay has passed (1 s by default), and [`trim`] does it at once after a big job.
//! BENCHMARKS.md has the figures.

use std::{
    alloc::{GlobalAlloc, Layout},
    cell::Cell,
    sync::atomic::{AtomicIsize, AtomicUsize, Ordering},
};

use libmimalloc_sys as mi;
use mimalloc::MiMalloc as System;

/// Wraps mimalloc and counts live bytes.
pub struct CountingAlloc;

/// Counter shards, one cache line each: with one shared counter, every allocation of the
/// parser threads and the writer fought over its line (the `lock add` was 7% of a cold read's
/// CPU). A thread keeps to one shard; the sum is exact, whichever thread frees what.
const SHARDS: usize = 16;

#[repr(align(128))]
struct Shard(AtomicIsize);

static LIVE_BYTES: [Shard; SHARDS] = [const { Shard(AtomicIsize::new(0)) }; SHARDS];
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard (`usize::MAX`: not chosen yet). No destructor, so it can be read
    /// from inside the allocator at any point of a thread's life.
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn count(delta: isize) {
    let i = SHARD
        .try_with(|s| {
            let mut i = s.get();
            if i == usize::MAX {
                i = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
                s.set(i);
            }
            i
        })
        .unwrap_or(0);
    LIVE_BYTES[i].0.fetch_add(delta, Ordering::Relaxed);
}

/// Bytes currently allocated through the global allocator.
pub fn heap_bytes() -> u64 {
    let sum: isize = LIVE_BYTES.iter().map(|s| s.0.load(Ordering::Relaxed)).sum();
    sum.max(0) as u64
}

/// Whether `layout` can take mimalloc's plain `malloc` path: every block it hands out is
/// word-aligned. `MiMalloc` always takes the aligned path, ~40 instructions more per allocation
/// (a cold agent of 6,600 sessions makes ~1 M of them).
#[inline]
fn plain(layout: Layout) -> bool {
    layout.align() <= std::mem::size_of::<usize>()
}

// SAFETY: every method forwards to mimalloc with the caller's arguments unchanged (its plain
// entry points where `plain` says the alignment is one every block has) and only adds
// bookkeeping on atomic counters, so mimalloc's guarantees carry over.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract; every mimalloc block is word-aligned ([`plain`]).
        let ptr =
            unsafe { if plain(layout) { mi::mi_malloc(layout.size()).cast() } else { System.alloc(layout) } };
        if !ptr.is_null() {
            count(layout.size() as isize);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        let ptr = unsafe {
            if plain(layout) { mi::mi_zalloc(layout.size()).cast() } else { System.alloc_zeroed(layout) }
        };
        if !ptr.is_null() {
            count(layout.size() as isize);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as in `alloc`; `ptr` came from mimalloc either way, and a block keeps its
        // alignment when it moves.
        let new_ptr = unsafe {
            if plain(layout) {
                mi::mi_realloc(ptr.cast(), new_size).cast()
            } else {
                System.realloc(ptr, layout, new_size)
            }
        };
        if !new_ptr.is_null() {
            count(new_size as isize - layout.size() as isize);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes counted on one thread and given back on others (as a buffer made by a parser and
    /// freed by the writer is) sum to what is live, whatever shards the threads took. The test
    /// binary does not install the counting allocator, so only these calls move the counters.
    #[test]
    fn the_shards_sum_to_the_live_bytes_across_threads() {
        let before = heap_bytes();
        std::thread::scope(|s| {
            for _ in 0..SHARDS + 3 {
                s.spawn(|| (0..1000).for_each(|_| count(4096)));
            }
        });
        assert_eq!(heap_bytes(), before + (SHARDS as u64 + 3) * 1000 * 4096);
        std::thread::scope(|s| {
            for _ in 0..7 {
                s.spawn(|| (0..(SHARDS + 3) * 1000 / 7).for_each(|_| count(-4096)));
            }
        });
        let left = (SHARDS + 3) * 1000 % 7;
        assert_eq!(heap_bytes(), before + left as u64 * 4096);
        (0..left).for_each(|_| count(-4096));
        assert_eq!(heap_bytes(), before);
    }
}
