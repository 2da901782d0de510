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
            format!("not a regular file ({})", type_name(&m)),
        ));
    }
    Ok(FileMeta::of(&m))
}

fn type_name(m: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_symlink() {
        "a symlink"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a regular file"
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
            format!("not a regular file ({})", type_name(&m)),
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

/// Listings this long are stat'ed on two threads ([`list_files_of_kind`]).
const SPLIT_STATS_FROM: usize = 1024;

/// A directory entry [`classify`] accepted, not stat'ed yet.
struct Named {
    ent: fs::DirEntry,
    name: String,
    session_id: String,
    kind: FileKind,
}

/// A [`Named`] after its stat.
enum Stated {
    File(Discovered),
    /// Not a regular file: skipped, and why.
    Special(String),
    /// Gone since `readdir`, or not stat-able: skipped.
    Gone,
}

/// Stats `named` (taking their names): files vanished since `readdir` are skipped, special
/// files and symlinks are skipped with a reason.
fn stat_named(agent: &str, named: &mut [Named]) -> Vec<Stated> {
    named
        .iter_mut()
        .map(|n| {
            // `DirEntry::metadata` does not follow symlinks.
            let Ok(meta) = n.ent.metadata() else { return Stated::Gone };
            if !meta.file_type().is_file() {
                return Stated::Special(format!("{}: skipped, {}", n.ent.path().display(), type_name(&meta)));
            }
            Stated::File(Discovered {
                path: n.ent.path(),
                file_name: std::mem::take(&mut n.name),
                agent_id: agent.to_owned(),
                session_id: std::mem::take(&mut n.session_id),
                kind: std::mem::replace(&mut n.kind, FileKind::Primary),
                meta: FileMeta::of(&meta),
                span: None,
            })
        })
        .collect()
}

/// Counted files of one agent. Files that vanish between `readdir` and `stat` are skipped;
/// special files and symlinks are skipped and counted in `diag`.
pub fn list_files(
    state_dir: &Path,
    agent: &str,
    diag: &mut super::payload::Diagnostics,
) -> io::Result<Vec<Discovered>> {
    list_files_of_kind(state_dir, agent, diag, |_| true)
}

/// [`list_files`] of the kinds `keep` accepts; the others are not even stat'ed (an agent's
/// archives next to thousands of transcripts an OpenClaw database replaces).
pub fn list_files_of_kind(
    state_dir: &Path,
    agent: &str,
    diag: &mut super::payload::Diagnostics,
    keep: impl Fn(&FileKind) -> bool,
) -> io::Result<Vec<Discovered>> {
    let dir = sessions_dir(state_dir, agent);
    if let Err(why) = sessions_dir_allowed(state_dir, &dir) {
        diag.skipped_special_files += 1;
        diag.error(why);
        return Ok(Vec::new());
    }
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut named = Vec::new();
    for ent in rd {
        let Ok(ent) = ent else { continue };
        let Ok(name) = ent.file_name().into_string() else {
            continue;
        };
        let Some((session_id, kind)) = classify(&name).filter(|(_, k)| keep(k)) else {
            continue;
        };
        named.push(Named { ent, name, session_id, kind });
    }
    // The stats are most of a listing (a restarted worker lists every agent: ~37 ms of 6,600
    // files an agent, ~6 µs a file): a large directory is stat'ed in two halves at once.
    let half = if named.len() >= SPLIT_STATS_FROM { named.len() / 2 } else { named.len() };
    let (first, second) = named.split_at_mut(half);
    let (mut out, helped) = std::thread::scope(|scope| {
        let helper = (!second.is_empty()).then(|| {
            std::thread::Builder::new()
                .name("usage-stat".into())
                .spawn_scoped(scope, || stat_named(agent, second))
        });
        let mut out = stat_named(agent, first);
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
        out.extend(stat_named(agent, &mut named[half..]));
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
    files.sort_by(|a, b| a.file_name.cmp(&b.file_name));
    Ok(files)
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
        let listed = list_files(root.path(), "a", &mut diag).unwrap();
        let names: Vec<&str> = listed.iter().map(|d| d.file_name.as_str()).collect();
        assert_eq!(names, want.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(diag.skipped_special_files, 3);
        let d = &listed[7];
        assert_eq!((d.session_id.as_str(), d.agent_id.as_str()), ("s00007", "a"));
        assert!(matches!(d.kind, FileKind::Deleted(_)));
        assert_eq!(d.path, dir.join(&want[7]));
        assert_eq!(d.meta.size, 3);
    }
}
