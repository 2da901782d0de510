//! Rollups on disk, so a restarted worker answers without re-reading the store.
//!
//! One file, `<data dir>/rollups.bin`: a fixed header (magic, format version, a fingerprint of
//! what the rollups depend on, body length and checksum) and a MessagePack body with every
//! file's [`Discovered`] and [`FileRollup`] (checkpoints included). It is written to a temporary
//! file, fsynced, renamed over the old one and the directory fsynced, so a crash leaves the old
//! file or the new one, never a mix. Writes are debounced: after rollups changed, once the
//! worker has seen no change for [`SAVE_IDLE`] (or changes kept coming for [`MAX_DIRTY_AGE`]),
//! at most every [`MIN_SAVE_INTERVAL`]; and at shutdown.
//!
//! A file that is not exactly what this build would write (another format version, another
//! state dir, line limit or worker version, a bad checksum, a decode error) is discarded,
//! counted in the answer's diagnostics, and rebuilt from the store. It is never trusted
//! partially. Loaded checkpoints are still only hints: each file's stat and anchor hash are
//! checked on the next call as for rollups built in this process.
//!
//! Prices are not part of the fingerprint: rollups keep unpriced token counts per model and are
//! priced at answer time, so a `models.json` change needs no rebuild.

use std::fs::{self, File};
use std::hash::Hasher;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::cache::Fnv;
use super::discover::Discovered;
use super::respond::Diagnostics;
use super::rollup::FileRollup;
use super::{Engine, FileKey, FileState};

/// The cache file inside the data dir.
pub const FILE_NAME: &str = "rollups.bin";
const MAGIC: [u8; 8] = *b"CGROLLUP";
/// Bump when the rollup types or their meaning change (the worker version is in the
/// fingerprint too, so a new release never trusts an old file).
pub const FORMAT_VERSION: u32 = 1;
/// magic, version, fingerprint, body length, body checksum.
const HEADER_LEN: usize = 8 + 4 + 8 + 8 + 8;
/// Quiet time after the last change before a save.
pub const SAVE_IDLE: Duration = Duration::from_secs(2);
/// Longest time changed rollups wait for a quiet moment before they are saved anyway.
pub const MAX_DIRTY_AGE: Duration = Duration::from_secs(60);
/// Minimum time between two saves while rollups keep changing (live transcripts).
pub const MIN_SAVE_INTERVAL: Duration = Duration::from_secs(30);
/// Transcript bytes parsed since the last save past which a save is due at once, debounce or
/// not: a worker restarted before then would parse them all again (a cold seed-size store is
/// 1.45 GB, seconds of both cores), while a save writes ~9 KB a file in ~0.1 s.
pub const SAVE_AFTER_BYTES: u64 = 64 << 20;

/// Why a cache file was not used.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not a clawgate rollup cache")]
    BadMagic,
    #[error("format version {found}, this worker writes {FORMAT_VERSION}")]
    Version { found: u32 },
    #[error("written for another state dir, line limit or worker version")]
    Foreign,
    #[error("truncated or corrupt (checksum mismatch)")]
    Checksum,
    #[error("cannot decode: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("cannot encode: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
}

/// The engine's bookkeeping about its on-disk copy.
#[derive(Debug, Default)]
pub struct Persisted {
    load_attempted: bool,
    /// Rollups changed since the last save.
    dirty: bool,
    /// When rollups first changed since the last save, and last changed.
    first_change: Option<Instant>,
    last_change: Option<Instant>,
    last_save: Option<Instant>,
    /// Transcript bytes parsed into rollups since the last save (see [`SAVE_AFTER_BYTES`]).
    unsaved_bytes: u64,
    /// Cache files discarded since the worker started, and the last reason.
    discards: u64,
    discard_reason: Option<String>,
    /// Files loaded from the cache at start.
    pub loaded_files: u64,
}

impl Persisted {
    /// Notes that rollups changed.
    pub fn changed(&mut self) {
        let now = Instant::now();
        if !self.dirty {
            self.first_change = Some(now);
        }
        self.dirty = true;
        self.last_change = Some(now);
    }

    /// Notes that rollups changed by parsing `bytes` of transcripts.
    pub fn parsed(&mut self, bytes: u64) {
        self.changed();
        self.unsaved_bytes = self.unsaved_bytes.saturating_add(bytes);
    }

    /// Adds the cache's state to an answer's diagnostics (the reason of a discard once).
    pub fn report(&mut self, diag: &mut Diagnostics) {
        diag.rollup_cache_discards = self.discards;
        if let Some(r) = self.discard_reason.take() {
            diag.error(format!("rollup cache not used, rebuilt from the store: {r}"));
        }
    }

    fn discard(&mut self, path: &Path, reason: &PersistError) {
        tracing::warn!(path = %path.display(), %reason, "Discarding the rollup cache; it will be rebuilt.");
        self.discards += 1;
        self.discard_reason = Some(reason.to_string());
        let _ = fs::remove_file(path);
    }
}

/// One file as stored.
#[derive(Serialize)]
struct EntryRef<'a> {
    disc: &'a Discovered,
    rollup: &'a FileRollup,
}

#[derive(Deserialize)]
struct Entry {
    disc: Discovered,
    rollup: FileRollup,
}

/// What the rollups were built from, beyond the transcripts themselves.
fn fingerprint(state_dir: &Path, max_line_bytes: u64) -> u64 {
    let abs = std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    let mut h = Fnv::default();
    h.write(abs.as_os_str().as_encoded_bytes());
    h.write(&max_line_bytes.to_le_bytes());
    h.write(env!("CARGO_PKG_VERSION").as_bytes());
    h.write(&FORMAT_VERSION.to_le_bytes());
    h.finish()
}

/// A fast checksum over 8-byte words (corruption detection, not security).
#[derive(Default)]
struct Checksum {
    h: u64,
    tail: Vec<u8>,
    len: u64,
}

impl Checksum {
    fn update(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if !self.tail.is_empty() {
            let take = (8 - self.tail.len()).min(bytes.len());
            self.tail.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.tail.len() == 8 {
                let w = u64::from_le_bytes(self.tail[..].try_into().expect("8 bytes"));
                self.mix(w);
                self.tail.clear();
            }
        }
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.mix(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        self.tail.extend_from_slice(chunks.remainder());
    }

    #[inline]
    fn mix(&mut self, w: u64) {
        self.h = (self.h ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
    }

    fn finish(mut self) -> u64 {
        let mut last = [0u8; 8];
        last[..self.tail.len()].copy_from_slice(&self.tail);
        let tail = std::mem::take(&mut self.tail);
        if !tail.is_empty() {
            self.mix(u64::from_le_bytes(last));
        }
        self.mix(self.len);
        self.h
    }
}

/// A writer that checksums what passes through.
struct Summing<W> {
    inner: W,
    sum: Checksum,
}

impl<W: Write> Write for Summing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sum.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads and checks the cache file; `Ok(None)` when there is none.
fn read(path: &Path, fingerprint: u64) -> Result<Option<Vec<Entry>>, PersistError> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut header = [0u8; HEADER_LEN];
    f.read_exact(&mut header).map_err(|_| PersistError::Checksum)?;
    if header[..8] != MAGIC {
        return Err(PersistError::BadMagic);
    }
    let word = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(PersistError::Version { found: version });
    }
    if word(12) != fingerprint {
        return Err(PersistError::Foreign);
    }
    let (len, checksum) = (word(20), word(28));
    if f.metadata()?.len() != HEADER_LEN as u64 + len {
        return Err(PersistError::Checksum);
    }
    // Checked in a first pass and decoded in a second, both streaming: nothing is decoded from
    // a damaged file, and no buffer as large as the file is held beside the decoded rollups.
    let mut sum = Checksum::default();
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        sum.update(&chunk[..n]);
    }
    drop(chunk);
    if sum.len != len || sum.finish() != checksum {
        return Err(PersistError::Checksum);
    }
    f.seek(SeekFrom::Start(HEADER_LEN as u64))?;
    let entries = rmp_serde::from_read(io::BufReader::with_capacity(1 << 20, f))?;
    Ok(Some(entries))
}

/// Writes the cache file atomically and durably.
fn write(dir: &Path, fingerprint: u64, files: &[EntryRef<'_>]) -> Result<u64, PersistError> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let path = dir.join(FILE_NAME);
    let tmp = dir.join(format!("{FILE_NAME}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(&[0u8; HEADER_LEN])?;
        let mut w = Summing { inner: BufWriter::with_capacity(1 << 20, &file), sum: Checksum::default() };
        rmp_serde::encode::write(&mut w, files)?;
        w.flush()?;
        let Summing { inner, sum } = w;
        drop(inner);
        let len = sum.len;
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(&MAGIC);
        header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        header.extend_from_slice(&fingerprint.to_le_bytes());
        header.extend_from_slice(&len.to_le_bytes());
        header.extend_from_slice(&sum.finish().to_le_bytes());
        file.write_all_at(&header, 0)?;
        file.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()?;
        Ok(HEADER_LEN as u64 + len)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

impl Engine {
    fn cache_path(&self) -> Option<PathBuf> {
        self.config.data_dir.as_ref().map(|d| d.join(FILE_NAME))
    }

    /// Loads the persisted rollups once, before the first answer; a bad file is discarded.
    pub fn load_persisted(&mut self) {
        if self.persisted.load_attempted {
            return;
        }
        self.persisted.load_attempted = true;
        let Some(path) = self.cache_path() else { return };
        let started = Instant::now();
        let fp = fingerprint(&self.config.state_dir, self.config.max_line_bytes);
        match read(&path, fp) {
            Ok(None) => {}
            Ok(Some(entries)) => {
                let n = entries.len();
                for Entry { disc, rollup } in entries {
                    let generation = self.next_gen();
                    self.files.entry(FileKey::of(&disc.path)).or_insert(FileState {
                        disc,
                        rollup,
                        generation,
                    });
                }
                self.persisted.loaded_files = n as u64;
                self.persisted.last_save = Some(Instant::now());
                tracing::info!(
                    files = n,
                    ms = started.elapsed().as_millis() as u64,
                    path = %path.display(),
                    "Loaded the rollup cache."
                );
            }
            Err(PersistError::Io(e)) => {
                // The data dir itself is the problem (permissions, not a directory): nothing
                // to discard; answers are built from the store and saving will fail loudly.
                tracing::warn!(path = %path.display(), error = %e, "Cannot read the rollup cache.");
                self.persisted.discard_reason = Some(format!("cannot read {}: {e}", path.display()));
            }
            Err(e) => self.persisted.discard(&path, &e),
        }
    }

    /// How long until a debounced save is due (`None`: nothing to save).
    pub fn save_due_in(&self) -> Option<Duration> {
        if !self.persisted.dirty || self.config.data_dir.is_none() {
            return None;
        }
        let p = &self.persisted;
        if p.unsaved_bytes >= SAVE_AFTER_BYTES {
            return Some(Duration::ZERO);
        }
        let left = |since: Option<Instant>, wait: Duration| {
            since.map_or(Duration::ZERO, |t| wait.saturating_sub(t.elapsed()))
        };
        // Quiet for a moment, or dirty for long; and never sooner than the minimum interval.
        let settled = left(p.last_change, SAVE_IDLE).min(left(p.first_change, MAX_DIRTY_AGE));
        Some(settled.max(left(p.last_save, MIN_SAVE_INTERVAL)))
    }

    /// Saves the rollups if they changed since the last save. Errors are logged, not returned:
    /// the cache only saves time.
    pub fn save_if_dirty(&mut self) {
        if !self.persisted.dirty {
            return;
        }
        let Some(dir) = self.config.data_dir.clone() else { return };
        let started = Instant::now();
        let fp = fingerprint(&self.config.state_dir, self.config.max_line_bytes);
        let mut entries: Vec<EntryRef<'_>> =
            self.files.values().map(|f| EntryRef { disc: &f.disc, rollup: &f.rollup }).collect();
        entries.sort_by(|a, b| a.disc.path.cmp(&b.disc.path));
        match write(&dir, fp, &entries) {
            Ok(bytes) => {
                tracing::info!(
                    files = entries.len(),
                    bytes,
                    ms = started.elapsed().as_millis() as u64,
                    "Saved the rollup cache."
                );
                self.persisted.dirty = false;
            }
            Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "Cannot save the rollup cache."),
        }
        // Also after a failure, so a broken disk is not retried in a tight loop.
        self.persisted.last_save = Some(Instant::now());
        self.persisted.unsaved_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_are_debounced() {
        let mut cfg = super::super::EngineConfig::new("/nonexistent");
        cfg.data_dir = Some("/nonexistent-data".into());
        let mut e = Engine::new(cfg);
        assert_eq!(e.save_due_in(), None, "nothing changed");
        e.persisted.changed();
        let due = e.save_due_in().unwrap();
        assert!(due > SAVE_IDLE - Duration::from_millis(500) && due <= SAVE_IDLE, "{due:?}");
        // Saved a moment ago: not again before the minimum interval.
        e.persisted.last_save = Some(Instant::now());
        assert!(e.save_due_in().unwrap() > MIN_SAVE_INTERVAL - Duration::from_secs(1));
        // Changes kept coming for longer than MAX_DIRTY_AGE: due once the interval allows.
        let long_ago = Instant::now().checked_sub(MAX_DIRTY_AGE + MIN_SAVE_INTERVAL).unwrap();
        e.persisted.first_change = Some(long_ago);
        e.persisted.last_save = Some(long_ago);
        e.persisted.last_change = Some(Instant::now());
        assert_eq!(e.save_due_in(), Some(Duration::ZERO));
        // Much parsed since the last save: due at once, whatever the debounce says.
        e.persisted.last_save = Some(Instant::now());
        e.persisted.parsed(SAVE_AFTER_BYTES);
        assert_eq!(e.save_due_in(), Some(Duration::ZERO));
        // Without a data dir there is never anything to save.
        let mut plain = Engine::new(super::super::EngineConfig::new("/nonexistent"));
        plain.persisted.changed();
        assert_eq!(plain.save_due_in(), None);
    }

    #[test]
    fn checksum_is_split_invariant() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut a = Checksum::default();
        a.update(&data);
        let mut b = Checksum::default();
        for c in data.chunks(3) {
            b.update(c);
        }
        assert_eq!(a.finish(), b.finish());
        let mut c = Checksum::default();
        c.update(&data[..999]);
        let mut d = Checksum::default();
        d.update(&data);
        assert_ne!(c.finish(), d.finish());
    }
}
