//! Change notification for transcript directories (Linux inotify), so a call over an unchanged
//! store does not `stat` every transcript again.
//!
//! The engine lists an agent's `sessions/` directory, remembers the listing, and watches the
//! directory. Until an event arrives for it (a write, truncation, attribute change, create,
//! delete or rename inside it, or the directory itself moving), the listing is reused as is;
//! an event marks it for a fresh listing, so at worst a change costs one extra listing. The
//! directory is marked clean *before* it is listed, so a change made during the listing
//! marks it again.
//!
//! Events are trusted only where they are complete: directories on local filesystems (ext4,
//! xfs, btrfs, tmpfs, overlayfs, zfs, f2fs). On anything else (NFS, SMB, FUSE, …), when inotify
//! is unavailable or its queue overflowed, the directory is listed on every call as before.
//! As a last guard against writes that bypass notification (e.g. through `mmap`), every
//! listing is also redone once it is [`MAX_TRUST`] old.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Longest time a listing is reused without being redone, events or not.
pub const MAX_TRUST: Duration = Duration::from_secs(30);

/// What a watched directory's events are for.
const MASK: u32 = libc::IN_MODIFY
    | libc::IN_ATTRIB
    | libc::IN_CLOSE_WRITE
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR;

/// `statfs` magic numbers of filesystems whose inotify events are complete.
const LOCAL_FILESYSTEMS: [i64; 8] = [
    0xEF53,      // ext2/3/4
    0x5846_5342, // xfs
    0x9123_683E, // btrfs
    0x0102_1994, // tmpfs
    0x794C_7630, // overlayfs
    0x2FC1_2FC1, // zfs
    0xF2F5_2010, // f2fs
    0x5265_4973, // reiserfs
];

/// One watched directory.
#[derive(Debug)]
struct Dir {
    wd: i32,
    /// No event since it was last listed.
    clean: bool,
    listed_at: Instant,
}

/// The engine's inotify instance and the directories it trusts.
#[derive(Debug)]
pub struct Watch {
    fd: Option<OwnedFd>,
    dirs: HashMap<PathBuf, Dir>,
    by_wd: HashMap<i32, PathBuf>,
}

impl Default for Watch {
    fn default() -> Watch {
        // SAFETY: plain syscall with constant flags; a negative result is handled.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        let fd = (fd >= 0).then(|| {
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            unsafe { OwnedFd::from_raw_fd(fd) }
        });
        if fd.is_none() {
            tracing::debug!("inotify is unavailable; every call lists the transcript directories");
        }
        Watch { fd, dirs: HashMap::new(), by_wd: HashMap::new() }
    }
}

/// Whether `dir` is on a filesystem whose change events can be trusted.
fn local_filesystem(dir: &Path) -> bool {
    let Ok(path) = CString::new(dir.as_os_str().as_bytes()) else { return false };
    // SAFETY: `statfs` is plain data; all-zero is a valid value to be overwritten.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `st` is writable for the duration of the call.
    if unsafe { libc::statfs(path.as_ptr(), &mut st) } != 0 {
        return false;
    }
    LOCAL_FILESYSTEMS.contains(&(st.f_type as i64))
}

impl Watch {
    /// Reads all pending events and marks the directories they concern.
    pub fn drain(&mut self) {
        let Some(raw) = self.fd.as_ref().map(|fd| fd.as_raw_fd()) else { return };
        let mut buf = [0u8; 16 * 1024];
        loop {
            // SAFETY: `buf` is writable for its length; the descriptor is ours and non-blocking.
            let n = unsafe { libc::read(raw, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                // EAGAIN (nothing pending) or an error: either way, nothing more to read now.
                return;
            }
            let mut at = 0usize;
            let n = n as usize;
            while at + std::mem::size_of::<libc::inotify_event>() <= n {
                // SAFETY: the kernel wrote whole events; `read_unaligned` copes with alignment.
                let ev: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast::<libc::inotify_event>()) };
                at += std::mem::size_of::<libc::inotify_event>() + ev.len as usize;
                if ev.mask & libc::IN_Q_OVERFLOW != 0 {
                    // Events were lost: trust nothing until listed again.
                    self.dirs.values_mut().for_each(|d| d.clean = false);
                    continue;
                }
                let Some(path) = self.by_wd.get(&ev.wd) else { continue };
                if ev.mask & (libc::IN_IGNORED | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_UNMOUNT)
                    != 0
                {
                    // The watch is gone or points elsewhere now: forget it; the next listing
                    // watches whatever is at the path then.
                    let path = path.clone();
                    self.forget(&path);
                    continue;
                }
                if let Some(d) = self.dirs.get_mut(path) {
                    d.clean = false;
                }
            }
        }
    }

    /// Whether `dir`'s last listing is still good: watched, no event since, not too old.
    pub fn is_clean(&self, dir: &Path) -> bool {
        self.dirs.get(dir).is_some_and(|d| d.clean && d.listed_at.elapsed() < MAX_TRUST)
    }

    /// Call right before listing `dir`: watches it (if it can be trusted) and marks it clean, so
    /// an event during the listing marks it again.
    pub fn listing(&mut self, dir: &Path) {
        let Some(fd) = &self.fd else { return };
        if let Some(d) = self.dirs.get_mut(dir) {
            d.clean = true;
            d.listed_at = Instant::now();
            return;
        }
        if !local_filesystem(dir) {
            return;
        }
        let Ok(path) = CString::new(dir.as_os_str().as_bytes()) else { return };
        // SAFETY: the descriptor is ours and `path` is NUL-terminated.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), MASK) };
        if wd < 0 {
            return;
        }
        if let Some(old) = self.by_wd.insert(wd, dir.to_path_buf()) {
            // Another path names the same directory (a symlink or bind mount): keep one.
            self.dirs.remove(&old);
        }
        self.dirs.insert(dir.to_path_buf(), Dir { wd, clean: true, listed_at: Instant::now() });
    }

    /// Stops trusting `dir` (e.g. its listing failed).
    pub fn forget(&mut self, dir: &Path) {
        if let Some(d) = self.dirs.remove(dir) {
            self.by_wd.remove(&d.wd);
            if let Some(fd) = &self.fd {
                // SAFETY: removing a possibly stale watch descriptor only fails harmlessly.
                unsafe { libc::inotify_rm_watch(fd.as_raw_fd(), d.wd) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;

    #[test]
    fn events_mark_directories_and_listing_clears_them() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut w = Watch::default();
        if w.fd.is_none() || !local_filesystem(d) {
            return; // nothing to test on this machine
        }
        assert!(!w.is_clean(d), "never listed");
        w.listing(d);
        w.drain();
        assert!(w.is_clean(d));
        fs::write(d.join("a.jsonl"), b"x\n").unwrap();
        w.drain();
        assert!(!w.is_clean(d), "created");
        w.listing(d);
        w.drain();
        assert!(w.is_clean(d));
        fs::OpenOptions::new().append(true).open(d.join("a.jsonl")).unwrap().write_all(b"y\n").unwrap();
        w.drain();
        assert!(!w.is_clean(d), "appended");
        w.listing(d);
        fs::rename(d.join("a.jsonl"), d.join("b.jsonl")).unwrap();
        w.drain();
        assert!(!w.is_clean(d), "renamed during the listing");
        w.listing(d);
        let f = fs::OpenOptions::new().write(true).open(d.join("b.jsonl")).unwrap();
        f.set_len(1).unwrap();
        w.drain();
        assert!(!w.is_clean(d), "truncated");
        // The directory itself goes away: the watch is dropped, and it is listed again.
        w.listing(d);
        let moved = d.with_extension("moved");
        fs::rename(d, &moved).unwrap();
        w.drain();
        assert!(!w.is_clean(d));
        fs::rename(&moved, d).unwrap();
    }
}
