//! Finding agents and usage-counted transcript files (REFERENCE §1).
//!
//! Agents are the directories `<stateDir>/agents/*/` (symlinks skipped, as OpenClaw skips
//! symlinked stores). Counted files are primary `<id>.jsonl` transcripts and their
//! `.jsonl.reset.<ts>` / `.jsonl.deleted.<ts>` archives; checkpoints, trajectories, backups,
//! locks and anything else are not. Only regular files count (a symlink is not `isFile()`).

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
}

impl FileMeta {
    pub fn of(m: &fs::Metadata) -> FileMeta {
        FileMeta {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
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

/// Counted files of one agent. Files that vanish between `readdir` and `stat` are skipped.
pub fn list_files(state_dir: &Path, agent: &str) -> io::Result<Vec<Discovered>> {
    let dir = sessions_dir(state_dir, agent);
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for ent in rd {
        let Ok(ent) = ent else { continue };
        let Ok(name) = ent.file_name().into_string() else {
            continue;
        };
        let Some((session_id, kind)) = classify(&name) else {
            continue;
        };
        if !ent.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let Ok(meta) = ent.metadata() else { continue };
        out.push(Discovered {
            path: ent.path(),
            file_name: name,
            agent_id: agent.to_owned(),
            session_id,
            kind,
            meta: FileMeta::of(&meta),
        });
    }
    out.sort_by(|a, b| a.file_name.cmp(&b.file_name));
    Ok(out)
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
}
