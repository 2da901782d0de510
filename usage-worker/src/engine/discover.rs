//! Finding agents and usage-counted transcript files (REFERENCE §1).
//!
//! Agents are the directories `<stateDir>/agents/*/` (symlinks skipped, as OpenClaw skips
//! symlinked stores). Counted files are primary `<id>.jsonl` transcripts and their
//! `.jsonl.reset.<ts>` / `.jsonl.deleted.<ts>` archives; checkpoints, trajectories, backups,
//! locks and anything else are not.
//!
//! Symlinks and special files (one policy, `docs/ops/security.md`): only regular files are
//! read, opened without following a symlink and without blocking (a FIFO renamed over a
//! transcript cannot stall the worker); a transcript name that is a symlink, FIFO, socket or
//! device is skipped and counted (`skippedSpecialFiles`, with its path in `errors`). An agent's
//! `sessions/` directory may be a symlink only to a directory inside the state dir; one leading
//! elsewhere is not read, and says so.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What kind of usage-counted file a name is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    Primary,
    /// `.jsonl.reset.<ts>`
    Reset(String),
    /// `.jsonl.deleted.<ts>`
    Deleted(String),
}

/// The stat facts a checkpoint compares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileMeta {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    /// Inode change time: moves on every write, also when the mtime is put back afterwards.
    pub ctime_ns: i128,
}

impl FileMeta {
    pub fn of(m: &fs::Metadata) -> FileMeta {
        FileMeta {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        }
    }

    /// The same facts from a raw `stat` (a listing stats names relative to their directory).
    pub fn of_stat(st: &libc::stat) -> FileMeta {
        FileMeta {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime_ns: i128::from(st.st_mtime) * 1_000_000_000 + i128::from(st.st_mtime_nsec),
            ctime_ns: i128::from(st.st_ctime) * 1_000_000_000 + i128::from(st.st_ctime_nsec),
        }
    }

    /// Modification time in epoch ms (OpenClaw's `mtimeMs`, used for discovery filtering and as
    /// `updatedAt` of sessions without a store entry).
    pub fn mtime_ms(&self) -> i64 {
        (self.mtime_ns.div_euclid(1_000_000)) as i64
    }
}

/// One counted file found on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovered {
    pub path: PathBuf,
    pub file_name: String,
    pub agent_id: String,
    pub session_id: String,
    pub kind: FileKind,
    pub meta: FileMeta,
    /// A SQLite session's events as listed: the first and last rowid. A cold read takes
    /// sessions whose spans do not overlap in the table's own order. Not persisted.
    #[serde(skip)]
    pub span: Option<(i64, i64)>,
}

/// `^\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(?:\.\d{3})?Z$`
fn is_archive_ts(ts: &str) -> bool {
    let b = ts.as_bytes();
    let pat = b"dddd-dd-ddTdd-dd-dd";
    let head_ok = |n: usize| {
        b.len() >= n
            && b[..n].iter().zip(&pat[..n]).all(|(c, p)| if *p == b'd' { c.is_ascii_digit() } else { c == p })
    };
    if !head_ok(pat.len()) {
        return false;
    }
    match &b[pat.len()..] {
        [b'Z'] => true,
        [b'.', a, c, d, b'Z'] => a.is_ascii_digit() && c.is_ascii_digit() && d.is_ascii_digit(),
        _ => false,
    }
}

/// Classifies a file name: `Some((sessionId, kind))` for usage-counted transcripts.
pub fn classify(name: &str) -> Option<(String, FileKind)> {
    let (stem, kind) = if let Some(stem) = name.strip_suffix(".jsonl") {
        (stem, FileKind::Primary)
    } else if let Some(i) = name.find(".jsonl.reset.") {
        let ts = &name[i + ".jsonl.reset.".len()..];
        if !is_archive_ts(ts) {
            return None;
        }
        (&name[..i], FileKind::Reset(ts.to_owned()))
    } else if let Some(i) = name.find(".jsonl.deleted.") {
        let ts = &name[i + ".jsonl.deleted.".len()..];
        if !is_archive_ts(ts) {
            return None;
        }
        (&name[..i], FileKind::Deleted(ts.to_owned()))
    } else {
        return None;
    };
    if stem.is_empty()
        || stem.starts_with('.')
        || stem.ends_with(".trajectory")
        || stem.contains(".checkpoint.")
        || stem.contains(".bak")
    {
        return None;
    }
    Some((stem.to_owned(), kind))
}

/// Agent directory names under `<state_dir>/agents/`, sorted. A missing `agents/` is empty;
/// an unreadable state dir is an error.
pub fn list_agents(state_dir: &Path) -> io::Result<Vec<String>> {
    fs::metadata(state_dir)?;
    let dir = state_dir.join("agents");
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut agents = Vec::new();
    for ent in rd {
        let ent = ent?;
        if !ent.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if let Ok(name) = ent.file_name().into_string() {
            agents.push(name);
        }
    }
    agents.sort();
    Ok(agents)
}

/// The sessions dir of an agent.
pub fn sessions_dir(state_dir: &Path, agent: &str) -> PathBuf {
    state_dir.join("agents").join(agent).join("sessions")
}

/// The stat facts of `path` if it is a regular file (not following a symlink). Anything else
/// is an `InvalidInput` error that says what it is.
pub fn stat_regular(path: &Path) -> io::Result<FileMeta> {
    let m = fs::symlink_metadata(path)?;
    if !m.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a regular file ({})", mode_name(m.mode())),
        ));
    }
    Ok(FileMeta::of(&m))
}

/// What a file that is not a regular one is, by its `st_mode`.
fn mode_name(mode: libc::mode_t) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFLNK => "a symlink",
        libc::S_IFDIR => "a directory",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFSOCK => "a socket",
        libc::S_IFBLK | libc::S_IFCHR => "a device",
        _ => "not a regular file",
    }
}

/// Opens a transcript for reading: never follows a symlink, never blocks (a FIFO put in a
/// transcript's place would block a plain `open` until a writer comes), and refuses anything
/// that is not a regular file.
pub fn open_regular(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                io::Error::new(io::ErrorKind::InvalidInput, "not a regular file (a symlink)")
            } else {
                e
            }
        })?;
    let m = f.metadata()?;
    if !m.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a regular file ({})", mode_name(m.mode())),
        ));
    }
    Ok(f)
}

/// Whether an agent's `sessions/` may be read: a real directory, or a symlink to a directory
/// inside the state dir.
fn sessions_dir_allowed(state_dir: &Path, dir: &Path) -> Result<(), String> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => {
            let (Ok(real), Ok(root)) = (fs::canonicalize(dir), fs::canonicalize(state_dir)) else {
                return Err(format!("{} is a broken symlink", dir.display()));
            };
            if real.starts_with(&root) {
                Ok(())
            } else {
                Err(format!(
                    "{} is a symlink to {}, outside the state dir: not read",
                    dir.display(),
                    real.display()
                ))
            }
        }
        _ => Ok(()),
    }
}

/// Listings this long are stat'ed on two threads ([`Names::next_slice`]).
const SPLIT_STATS_FROM: usize = 1024;

/// An agent's transcript names as `readdir` gave them, accepted by [`classify`] but not stat'ed
/// yet: sorted, in one buffer, ~60 bytes a name where a stat'ed [`Discovered`] holds ~450 (an
/// agent of 220,000 sessions held ~100 MB of them at once). Stat'ed a slice at a time.
pub struct Names {
    /// The directory, open: each name is stat'ed relative to it (no path walk per file).
    dir: fs::File,
    path: PathBuf,
    agent: String,
    text: String,
    /// Each name's bytes in `text`, in name order.
    spans: Vec<(u32, u32)>,
    /// The first name not handed out yet.
    next: usize,
}

/// A name after its stat.
enum Stated {
    File(Discovered),
    /// Not a regular file: skipped, and why.
    Special(String),
    /// Gone since `readdir`, or not stat-able: skipped.
    Gone,
}

impl Names {
    fn name(&self, i: usize) -> &str {
        let (start, len) = self.spans[i];
        &self.text[start as usize..(start + len) as usize]
    }

    /// Names not handed out yet.
    pub fn remaining(&self) -> usize {
        self.spans.len() - self.next
    }

    /// The path of the last name handed out, if any: what the next slice comes after.
    pub fn last_path(&self) -> Option<PathBuf> {
        self.next.checked_sub(1).map(|i| self.path.join(self.name(i)))
    }

    /// The next `n` names or so, stat'ed, in name order: a slice ends with the last name of a
    /// session id (an archived transcript sorts right after its live name, so a rename between
    /// them is seen within one slice). Files gone since `readdir` are skipped; special files and
    /// symlinks are skipped and counted in `diag`.
    pub fn next_slice(&mut self, n: usize, diag: &mut super::payload::Diagnostics) -> Vec<Discovered> {
        let start = self.next;
        let mut end = start.saturating_add(n).min(self.spans.len());
        let stem = |i: usize| classify(self.name(i)).map(|(id, _)| id);
        if end > start && end < self.spans.len() {
            let last = stem(end - 1);
            while end < self.spans.len() && stem(end) == last {
                end += 1;
            }
        }
        self.next = end;
        // The stats are most of a listing (a restarted worker lists every agent: ~37 ms of
        // 6,600 files an agent, ~6 µs a file): a large slice is stat'ed in two halves at once.
        let len = end - start;
        let half = if len >= SPLIT_STATS_FROM { start + len / 2 } else { end };
        let this = &*self;
        let (mut out, helped) = std::thread::scope(|scope| {
            let helper = (half < end).then(|| {
                std::thread::Builder::new()
                    .name("usage-stat".into())
                    .spawn_scoped(scope, || this.stat_range(half..end))
            });
            let mut out = this.stat_range(start..half);
            let helped = match helper {
                Some(Ok(h)) => {
                    out.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
                    true
                }
                _ => false,
            };
            (out, helped)
        });
        if !helped {
            // No thread to be had (or nothing to split): the rest here.
            out.extend(self.stat_range(half..end));
        }
        let mut files = Vec::with_capacity(out.len());
        for s in out {
            match s {
                Stated::File(d) => files.push(d),
                Stated::Special(why) => {
                    diag.skipped_special_files += 1;
                    diag.error(why);
                }
                Stated::Gone => {}
            }
        }
        files
    }

    fn stat_range(&self, range: std::ops::Range<usize>) -> Vec<Stated> {
        use nix::fcntl::AtFlags;
        range
            .map(|i| {
                let name = self.name(i);
                let Some((session_id, kind)) = classify(name) else { return Stated::Gone };
                let Ok(st) = nix::sys::stat::fstatat(&self.dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) else {
                    return Stated::Gone;
                };
                let path = self.path.join(name);
                let mode = st.st_mode as libc::mode_t;
                if mode & libc::S_IFMT != libc::S_IFREG {
                    return Stated::Special(format!("{}: skipped, {}", path.display(), mode_name(mode)));
                }
                Stated::File(Discovered {
                    path,
                    file_name: name.to_owned(),
                    agent_id: self.agent.clone(),
                    session_id,
                    kind,
                    meta: FileMeta::of_stat(&st),
                    span: None,
                })
            })
            .collect()
    }
}

/// Counted files of one agent, of the kinds `keep` accepts; the others are not even stat'ed (an agent's
/// archives next to thousands of transcripts an OpenClaw database replaces).
pub fn list_files_of_kind(
    state_dir: &Path,
    agent: &str,
    diag: &mut super::payload::Diagnostics,
    keep: impl Fn(&FileKind) -> bool,
) -> io::Result<Vec<Discovered>> {
    Ok(match list_names(state_dir, agent, diag, keep)? {
        Some(mut names) => names.next_slice(usize::MAX, diag),
        None => Vec::new(),
    })
}

/// The names of one agent's counted files of the kinds `keep` accepts, to be stat'ed a slice
/// at a time. `None` when the agent has no `sessions/` (or one that may not be read, which
/// `diag` then says).
pub fn list_names(
    state_dir: &Path,
    agent: &str,
    diag: &mut super::payload::Diagnostics,
    keep: impl Fn(&FileKind) -> bool,
) -> io::Result<Option<Names>> {
    let path = sessions_dir(state_dir, agent);
    if let Err(why) = sessions_dir_allowed(state_dir, &path) {
        diag.skipped_special_files += 1;
        diag.error(why);
        return Ok(None);
    }
    let (dir, rd) = match fs::File::open(&path).and_then(|dir| Ok((dir, fs::read_dir(&path)?))) {
        Ok(opened) => opened,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    let mut spans = Vec::new();
    for ent in rd {
        let Ok(ent) = ent else { continue };
        let Ok(name) = ent.file_name().into_string() else {
            continue;
        };
        if !classify(&name).is_some_and(|(_, k)| keep(&k)) {
            continue;
        }
        let (Ok(start), Ok(len)) = (u32::try_from(text.len()), u32::try_from(name.len())) else {
            return Err(io::Error::other(format!("{}: too many names to list", path.display())));
        };
        text.push_str(&name);
        spans.push((start, len));
    }
    spans.sort_unstable_by(|a, b| {
        let name = |(s, l): &(u32, u32)| &text.as_bytes()[*s as usize..(*s + *l) as usize];
        name(a).cmp(name(b))
    });
    Ok(Some(Names { dir, path, agent: agent.to_owned(), text, spans, next: 0 }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_names() {
        assert_eq!(classify("abc.jsonl"), Some(("abc".into(), FileKind::Primary)));
        assert_eq!(
            classify("abc.jsonl.reset.2026-05-25T00-55-12.345Z"),
            Some(("abc".into(), FileKind::Reset("2026-05-25T00-55-12.345Z".into())))
        );
        assert_eq!(
            classify("abc-topic-7.jsonl.deleted.2026-05-25T00-55-12Z"),
            Some(("abc-topic-7".into(), FileKind::Deleted("2026-05-25T00-55-12Z".into())))
        );
        for skip in [
            "abc.jsonl.reset.2026-05-25T00:55:12Z",
            "abc.checkpoint.0f3a.jsonl",
            "abc.trajectory.jsonl",
            "abc.trajectory-path.json",
            "abc.jsonl.lock",
            "sessions.json",
            "sessions.json.bak.3",
            "abc.jsonl.bak.2026-05-25T00-55-12Z",
            ".usage-cost-cache.json",
            ".jsonl",
        ] {
            assert_eq!(classify(skip), None, "{skip}");
        }
    }

    #[test]
    fn a_large_directory_stated_in_halves_lists_every_file_once() {
        let root = tempfile::tempdir().unwrap();
        let dir = sessions_dir(root.path(), "a");
        fs::create_dir_all(&dir).unwrap();
        let n = SPLIT_STATS_FROM + 300;
        let mut want = Vec::new();
        for i in 0..n {
            let name = if i % 100 == 7 {
                format!("s{i:05}.jsonl.deleted.2026-05-25T00-55-12Z")
            } else {
                format!("s{i:05}.jsonl")
            };
            fs::write(dir.join(&name), b"{}\n").unwrap();
            want.push(name);
        }
        // Special files in both halves, and names that are not transcripts.
        std::os::unix::fs::symlink(dir.join("s00000.jsonl"), dir.join("a-link.jsonl")).unwrap();
        std::os::unix::fs::symlink(dir.join("s00001.jsonl"), dir.join("z-link.jsonl")).unwrap();
        fs::create_dir(dir.join("m-dir.jsonl")).unwrap();
        fs::write(dir.join("sessions.json"), b"{}").unwrap();
        let mut diag = super::super::payload::Diagnostics::default();
        let listed = list_files_of_kind(root.path(), "a", &mut diag, |_| true).unwrap();
        let names: Vec<&str> = listed.iter().map(|d| d.file_name.as_str()).collect();
        assert_eq!(names, want.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(diag.skipped_special_files, 3);
        let d = &listed[7];
        assert_eq!((d.session_id.as_str(), d.agent_id.as_str()), ("s00007", "a"));
        assert!(matches!(d.kind, FileKind::Deleted(_)));
        assert_eq!(d.path, dir.join(&want[7]));
        assert_eq!(d.meta.size, 3);
    }

    #[test]
    fn slices_end_with_a_sessions_last_name_and_stat_as_std_does() {
        let root = tempfile::tempdir().unwrap();
        let dir = sessions_dir(root.path(), "a");
        fs::create_dir_all(&dir).unwrap();
        let ts = "2026-05-25T00-55-12Z";
        let all = [
            "a.jsonl".to_owned(),
            format!("a.jsonl.deleted.{ts}"),
            format!("a.jsonl.reset.{ts}"),
            "b.jsonl".to_owned(),
            "c.jsonl".to_owned(),
            format!("c.jsonl.reset.{ts}"),
            "d.jsonl".to_owned(),
        ];
        for (i, name) in all.iter().enumerate() {
            fs::write(dir.join(name), vec![b'x'; i]).unwrap();
        }
        fs::write(dir.join("notes.txt"), b"").unwrap();
        let mut diag = super::super::payload::Diagnostics::default();
        let mut names = list_names(root.path(), "a", &mut diag, |_| true).unwrap().unwrap();
        assert_eq!((names.remaining(), names.last_path()), (7, None));
        let mut slices = Vec::new();
        for n in [2, 1, 2, 5] {
            let slice = names.next_slice(n, &mut diag);
            for d in &slice {
                assert_eq!(d.meta, FileMeta::of(&fs::symlink_metadata(&d.path).unwrap()), "{}", d.file_name);
            }
            let listed: Vec<String> = slice.into_iter().map(|d| d.file_name).collect();
            assert_eq!(names.last_path(), Some(dir.join(listed.last().unwrap())));
            slices.push(listed);
        }
        assert_eq!(slices, [&all[0..3], &all[3..4], &all[4..6], &all[6..7]]);
        assert_eq!(names.remaining(), 0);
        assert_eq!(diag.skipped_special_files, 0);
    }
}
