//! Change notification for transcript directories (Linux inotify): which files changed since a
//! directory was last looked at, so a call over an unchanged store `stat`s nothing and a call
//! after one append looks at one file.
//!
//! The engine lists an agent's `sessions/` directory once and watches it. From then on the
//! names in its events (writes, truncations, attribute changes, creates, deletes, renames)
//! are what [`Watch::pending`] hands back, and only those files are looked at. A directory is
//! listed whole again when its events cannot be trusted: the queue overflowed, too many names
//! piled up, the directory itself moved or went away, or the listing is [`MAX_TRUST`] old (a
//! last guard against writes that bypass notification, e.g. through `mmap`). That last one is
//! made while the worker is idle ([`Watch::due`]): the call that finds a listing that old still
//! takes the events, as a stat of every file cost the first append after a quiet spell
//! ~350 ms on nine agents of 6,000 sessions, however long the spell. A call lists only when
//! [`MAX_TRUST`] more passed since one found it due with no idle moment between (a worker that
//! is never idle for a second).
//!
//! Events are trusted only where they are complete: directories on local filesystems (ext4,
//! xfs, btrfs, tmpfs, overlayfs, zfs, f2fs, reiserfs). On anything else (NFS, SMB, FUSE, …), or
//! when inotify is unavailable, the directory is listed on every call.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use nix::sys::statfs::{self, FsType};

/// Longest time a listing is trusted without being redone, events or not.
pub const MAX_TRUST: Duration = Duration::from_secs(30);
/// Past this many changed names, the directory is listed whole instead.
const MAX_NAMES: usize = 1024;

/// ZFS's `statfs` magic (not among nix's constants).
const ZFS_SUPER_MAGIC: FsType = FsType(0x2FC1_2FC1);
/// F2FS's.
const F2FS_SUPER_MAGIC: FsType = FsType(0xF2F5_2010);
/// Filesystems whose inotify events are complete.
const LOCAL_FILESYSTEMS: [FsType; 8] = [
    statfs::EXT4_SUPER_MAGIC,
    statfs::XFS_SUPER_MAGIC,
    statfs::BTRFS_SUPER_MAGIC,
    statfs::TMPFS_MAGIC,
    statfs::OVERLAYFS_SUPER_MAGIC,
    ZFS_SUPER_MAGIC,
    F2FS_SUPER_MAGIC,
    statfs::REISERFS_SUPER_MAGIC,
];

fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ONLYDIR
}

/// What changed in a directory since it was last asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// Nothing: its files are as the index has them.
    Nothing,
    /// These names (in that directory) changed.
    Names(Vec<String>),
    /// Unknown: list the directory whole (and call [`Watch::listing`] first).
    Everything,
}

/// One watched directory.
#[derive(Debug)]
struct Dir {
    wd: WatchDescriptor,
    names: BTreeSet<String>,
    /// Events were lost or the directory itself changed: list it whole.
    overflow: bool,
    listed_at: Instant,
    /// When a call first found the listing [`MAX_TRUST`] old: list it whole when idle
    /// ([`Watch::due`]), or on a call once this is [`MAX_TRUST`] old too.
    due_at: Option<Instant>,
}

/// The engine's inotify instance and the directories it trusts.
#[derive(Debug)]
pub struct Watch {
    inotify: Option<Inotify>,
    dirs: HashMap<PathBuf, Dir>,
    by_wd: HashMap<WatchDescriptor, PathBuf>,
    /// Directories listed whole so far (tests).
    pub listings: u64,
}

impl Default for Watch {
    fn default() -> Watch {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok();
        if inotify.is_none() {
            tracing::debug!("inotify is unavailable; every call lists the transcript directories");
        }
        Watch { inotify, dirs: HashMap::new(), by_wd: HashMap::new(), listings: 0 }
    }
}

/// Whether `dir` is on a filesystem whose change events can be trusted.
fn local_filesystem(dir: &Path) -> bool {
    statfs::statfs(dir).is_ok_and(|s| LOCAL_FILESYSTEMS.contains(&s.filesystem_type()))
}

impl Watch {
    /// Reads all pending events and records the names they concern.
    pub fn drain(&mut self) {
        // `read_events` fails with EAGAIN when nothing is pending.
        while let Some(Ok(events)) = self.inotify.as_ref().map(Inotify::read_events) {
            if events.is_empty() {
                return;
            }
            for ev in events {
                if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    // Events were lost: trust nothing until listed again.
                    self.dirs.values_mut().for_each(|d| d.overflow = true);
                    continue;
                }
                let Some(path) = self.by_wd.get(&ev.wd) else { continue };
                if ev.mask.intersects(
                    AddWatchFlags::IN_IGNORED
                        | AddWatchFlags::IN_DELETE_SELF
                        | AddWatchFlags::IN_MOVE_SELF
                        | AddWatchFlags::IN_UNMOUNT,
                ) {
                    // The watch is gone or points elsewhere now: forget it; the next listing
                    // watches whatever is at the path then.
                    let path = path.clone();
                    self.forget(&path);
                    continue;
                }
                let Some(d) = self.dirs.get_mut(path) else { continue };
                match ev.name.and_then(|n| n.into_string().ok()) {
                    Some(name) if d.names.len() < MAX_NAMES => {
                        d.names.insert(name);
                    }
                    _ => d.overflow = true,
                }
            }
        }
    }

    /// What changed in `dir` since the last call (names are handed out once).
    pub fn pending(&mut self, dir: &Path) -> Pending {
        let Some(d) = self.dirs.get_mut(dir) else { return Pending::Everything };
        if d.overflow {
            return Pending::Everything;
        }
        if d.listed_at.elapsed() >= MAX_TRUST
            && d.due_at.get_or_insert_with(Instant::now).elapsed() >= MAX_TRUST
        {
            return Pending::Everything;
        }
        if d.names.is_empty() {
            return Pending::Nothing;
        }
        Pending::Names(std::mem::take(&mut d.names).into_iter().collect())
    }

    /// Call right before listing `dir` whole: watches it (if it can be trusted) and forgets
    /// the names seen so far, so an event during the listing is seen next time.
    pub fn listing(&mut self, dir: &Path) {
        self.listings += 1;
        let Some(inotify) = &self.inotify else { return };
        if let Some(d) = self.dirs.get_mut(dir) {
            d.names.clear();
            d.overflow = false;
            d.due_at = None;
            d.listed_at = Instant::now();
            return;
        }
        if !local_filesystem(dir) {
            return;
        }
        let Ok(wd) = inotify.add_watch(dir, mask()) else { return };
        if let Some(old) = self.by_wd.insert(wd, dir.to_path_buf()) {
            // Another path names the same directory (a symlink or bind mount): keep one.
            self.dirs.remove(&old);
        }
        self.dirs.insert(
            dir.to_path_buf(),
            Dir { wd, names: BTreeSet::new(), overflow: false, listed_at: Instant::now(), due_at: None },
        );
    }

    /// The directories a call found listed [`MAX_TRUST`] ago: each is to be listed whole while
    /// the worker is idle, and its next [`Watch::pending`] says so.
    pub fn due(&mut self) -> Vec<PathBuf> {
        let mut due = Vec::new();
        for (path, d) in &mut self.dirs {
            if d.due_at.is_some() && !d.overflow {
                d.overflow = true;
                due.push(path.clone());
            }
        }
        due.sort_unstable();
        due
    }

    /// Makes every listing, and every time a call found one due, `by` older (tests: instead of
    /// waiting for them to expire).
    #[cfg(test)]
    pub fn age(&mut self, by: Duration) {
        let back = |t: Instant| t.checked_sub(by).expect("an instant that far back");
        for d in self.dirs.values_mut() {
            d.listed_at = back(d.listed_at);
            d.due_at = d.due_at.map(back);
        }
    }

    /// Stops trusting `dir` (e.g. its listing failed).
    pub fn forget(&mut self, dir: &Path) {
        if let Some(d) = self.dirs.remove(dir) {
            self.by_wd.remove(&d.wd);
            if let Some(inotify) = &self.inotify {
                // Removing a stale watch descriptor fails harmlessly.
                let _ = inotify.rm_watch(d.wd);
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
    fn events_name_the_files_that_changed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut w = Watch::default();
        if w.inotify.is_none() || !local_filesystem(d) {
            return; // nothing to test on this machine
        }
        assert_eq!(w.pending(d), Pending::Everything, "never listed");
        w.listing(d);
        w.drain();
        assert_eq!(w.pending(d), Pending::Nothing);
        fs::write(d.join("a.jsonl"), b"x\n").unwrap();
        w.drain();
        assert_eq!(w.pending(d), Pending::Names(vec!["a.jsonl".into()]), "created");
        assert_eq!(w.pending(d), Pending::Nothing, "names are handed out once");
        fs::OpenOptions::new().append(true).open(d.join("a.jsonl")).unwrap().write_all(b"y\n").unwrap();
        w.drain();
        assert_eq!(w.pending(d), Pending::Names(vec!["a.jsonl".into()]), "appended");
        fs::rename(d.join("a.jsonl"), d.join("b.jsonl")).unwrap();
        w.drain();
        assert_eq!(w.pending(d), Pending::Names(vec!["a.jsonl".into(), "b.jsonl".into()]), "renamed");
        let f = fs::OpenOptions::new().write(true).open(d.join("b.jsonl")).unwrap();
        f.set_len(1).unwrap();
        w.drain();
        assert_eq!(w.pending(d), Pending::Names(vec!["b.jsonl".into()]), "truncated");
        // The directory itself goes away: the watch is dropped, and it is listed again.
        let moved = d.with_extension("moved");
        fs::rename(d, &moved).unwrap();
        w.drain();
        assert_eq!(w.pending(d), Pending::Everything);
        fs::rename(&moved, d).unwrap();
    }

    #[test]
    fn too_many_names_mean_a_listing() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut w = Watch::default();
        if w.inotify.is_none() || !local_filesystem(d) {
            return;
        }
        w.listing(d);
        for i in 0..MAX_NAMES + 5 {
            fs::write(d.join(format!("{i}.jsonl")), b"x\n").unwrap();
        }
        w.drain();
        assert_eq!(w.pending(d), Pending::Everything);
    }
}
