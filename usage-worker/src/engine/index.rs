//! The engine's store of per-file facts: an embedded SQLite database in the data dir
//! (`usage-index.sqlite`), so that what the worker holds in memory follows the answer, not the
//! number of transcripts.
//!
//! One row per transcript (`files`): where it is, the stat facts its rollup was built at, the
//! rollup itself (compact MessagePack), and the `sessions.json` facts a row is sorted and
//! grouped by (copied from `entries` whenever either side changes, so paging is one indexed
//! query). One row per `sessions.json` entry (`entries`), with the whole entry for rendering.
//! Answers stream the rollups they need from here ([`Index::scan`]) and read single ones back
//! by id; nothing keeps all of them in memory. SQLite's own page cache is capped
//! ([`CACHE_KIB`]), no `mmap` (its pages would count against the worker's RSS cap).
//!
//! The file is clawgate's own and holds only derived data: a file written by another format
//! version, for another state dir or line limit, or one that cannot be opened, is deleted and
//! rebuilt from the store. Writes are batched in transactions; WAL mode with `synchronous=NORMAL`
//! keeps a crash from corrupting it (the last batch may be lost, and is re-read).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::discover::{Discovered, FileKind, FileMeta};
use super::rollup::FileRollup;
use super::store::StoreEntry;

/// The index file inside the data dir.
pub const FILE_NAME: &str = "usage-index.sqlite";
/// Bump when the schema, the rollup encoding or what a stored entry means changes (3: internal
/// channels dropped, `displayName` as label): an older file is rebuilt.
const FORMAT: i64 = 3;
/// Rendered rows kept on disk, so a restarted worker's first page is read, not rendered.
const RENDERED_MAX: i64 = 20_000;
/// SQLite's page cache for the index, KiB.
const CACHE_KIB: i64 = 8 * 1024;
/// Page size of a new index file (SQLite's default is 4 KiB): a cold build of 54,000 sessions
/// writes a quarter as many WAL frames, and its order index, which reads every `files` row, took
/// 41-43 ms instead of 48-58. It only takes effect before the file's first table.
const PAGE_BYTES: i64 = 16384;

/// Why the index cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("usage index: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("usage index: {0}")]
    Io(#[from] std::io::Error),
    #[error("usage index: {0}")]
    Column(#[from] rusqlite::types::FromSqlError),
    #[error("usage index: undecodable rollup: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("usage index: cannot encode a rollup: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// A write given up by its caller (its input turned out unreadable): rolled back.
    #[error("usage index: write abandoned")]
    Abandoned,
}

/// What a file's rows depend on besides its bytes; an index written for anything else is
/// rebuilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub state_dir: PathBuf,
    pub max_line_bytes: u64,
}

/// The `sessions.json` facts a file's row carries (from the entry that names it, if any).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowFacts {
    pub entry_key: Option<String>,
    /// The entry's `updatedAt`, else the file's mtime (OpenClaw's row order).
    pub updated_at: f64,
    pub channel: Option<String>,
    /// Lower-cased text `search` matches: key, label, session id, agent, channel, model.
    pub search_text: String,
    /// [`StoreEntry::hash`] of the entry (0 without one): what a rendered row depends on.
    pub entry_hash: i64,
}

/// One file as the index knows it.
#[derive(Debug, Clone)]
pub struct FileRow {
    pub id: i64,
    pub disc: Discovered,
    /// Changes whenever the rollup does (rendered rows are cached against it).
    pub generation: i64,
    pub facts: RowFacts,
}

/// The stat facts of a file's checkpoint, for change detection without loading its rollup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    pub id: i64,
    pub meta: FileMeta,
}

fn kind_code(k: &FileKind) -> (i64, Option<&str>) {
    match k {
        FileKind::Primary => (0, None),
        FileKind::Reset(ts) => (1, Some(ts)),
        FileKind::Deleted(ts) => (2, Some(ts)),
    }
}

fn kind_of(code: i64, ts: Option<String>) -> FileKind {
    match code {
        1 => FileKind::Reset(ts.unwrap_or_default()),
        2 => FileKind::Deleted(ts.unwrap_or_default()),
        _ => FileKind::Primary,
    }
}

/// The `files` columns [`FileRow`] is read from, in order.
const ROW_COLUMNS: &str = "id, path, file_name, agent, session_id, kind, archive_ts, dev, ino, size, mtime_ns, \
     ctime_ns, generation, entry_key, updated_at, channel, search_text, entry_hash";

fn file_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileRow> {
    let path: Vec<u8> = r.get(1)?;
    let meta = FileMeta {
        dev: r.get::<_, i64>(7)? as u64,
        ino: r.get::<_, i64>(8)? as u64,
        size: r.get::<_, i64>(9)? as u64,
        mtime_ns: i128::from(r.get::<_, i64>(10)?),
        ctime_ns: i128::from(r.get::<_, i64>(11)?),
    };
    Ok(FileRow {
        id: r.get(0)?,
        disc: Discovered {
            path: PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(path)),
            file_name: r.get(2)?,
            agent_id: r.get(3)?,
            session_id: r.get(4)?,
            kind: kind_of(r.get(5)?, r.get(6)?),
            meta,
            span: None,
        },
        generation: r.get(12)?,
        facts: RowFacts {
            entry_key: r.get(13)?,
            updated_at: r.get(14)?,
            channel: r.get(15)?,
            search_text: r.get(16)?,
            entry_hash: r.get(17)?,
        },
    })
}

/// The files of an agent whose names start with `?2` (up to `?3`): what a `sessionFile` names.
const FILES_NAMED: &str = "FROM files WHERE agent = ?1 AND file_name >= ?2 AND file_name < ?3";

fn path_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_encoded_bytes()
}

/// i128 nanoseconds as SQLite's i64 (until the year 2262).
fn ns(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The index. Owned by the engine's compute thread; parse threads never touch it.
pub struct Index {
    conn: Connection,
    /// A temporary directory holding the file when there is no data dir.
    _temp: Option<tempfile::TempDir>,
    next_generation: i64,
    /// Agents the index holds anything of (read once, then kept in step).
    agents: Option<std::collections::BTreeSet<String>>,
    /// A rebuild happened at open (the old file was unusable), for diagnostics.
    pub discarded: bool,
    /// A cold build is writing without the [`DEFERRED`] indexes ([`Index::begin_bulk`]).
    bulk: bool,
    /// A cold build ended with some [`DEFERRED`] indexes still to make ([`Index::end_late`]).
    late: bool,
    /// A cold build's WAL is still to checkpoint ([`Index::checkpoint_due`]).
    wal_due: bool,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").field("path", &self.conn.path()).finish()
    }
}

// `files_inode` leaves database sessions out by their `dev`, written here as -1.
const _: () = assert!(super::sqlite::SQLITE_DEV as i64 == -1);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS files(
  id INTEGER PRIMARY KEY,
  path BLOB NOT NULL UNIQUE,
  file_name TEXT NOT NULL,
  agent TEXT NOT NULL,
  session_id TEXT NOT NULL,
  kind INTEGER NOT NULL,
  archive_ts TEXT,
  dev INTEGER NOT NULL, ino INTEGER NOT NULL, size INTEGER NOT NULL,
  mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,
  mtime_ms INTEGER NOT NULL,
  generation INTEGER NOT NULL,
  rollup BLOB NOT NULL,
  entry_key TEXT,
  updated_at REAL NOT NULL,
  channel TEXT,
  search_text TEXT NOT NULL DEFAULT '',
  entry_hash INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS files_agent ON files(agent, session_id);
-- files_stat, files_page and files_name are dropped while a cold build writes (DEFERRED); a
-- crash then leaves them missing, and these lines make them again at the next open.
CREATE INDEX IF NOT EXISTS files_stat ON files(agent, path, id, dev, ino, size, mtime_ns, ctime_ns);
-- Renames are followed by inode for transcript files only: a database session's `dev` is -1
-- (SQLITE_DEV) and its `ino` a hash, so its rows stay out of this index (one random b-tree
-- insert less per session of a cold read).
CREATE INDEX IF NOT EXISTS files_inode ON files(dev, ino) WHERE dev <> -1;
-- files_page: ORDER_INDEX, made with the schema and by Index::end_bulk.
-- The files an entry's `sessionFile` names (Index::refresh_facts): without it, one rewritten
-- entry walked every file of its agent (5-10 ms of an append on 6,600 sessions an agent).
CREATE INDEX IF NOT EXISTS files_name ON files(agent, file_name);
CREATE TABLE IF NOT EXISTS entries(
  agent TEXT NOT NULL,
  key TEXT NOT NULL,
  ord INTEGER NOT NULL,
  session_id TEXT NOT NULL,
  file_name TEXT,
  updated_at REAL,
  hash INTEGER NOT NULL,
  families INTEGER NOT NULL,
  data BLOB NOT NULL,
  PRIMARY KEY(agent, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_session ON entries(agent, session_id);
-- Only entries that name a file (an OpenClaw database's nodes name none).
CREATE INDEX IF NOT EXISTS entries_file ON entries(agent, file_name) WHERE file_name IS NOT NULL;
CREATE TABLE IF NOT EXISTS lives(
  id INTEGER PRIMARY KEY,
  shape BLOB NOT NULL UNIQUE,
  version INTEGER NOT NULL,
  data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS rendered(
  stamp INTEGER PRIMARY KEY,
  used INTEGER NOT NULL,
  text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rendered_used ON rendered(used);
CREATE TABLE IF NOT EXISTS dbs(
  agent TEXT PRIMARY KEY,
  data BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stores(
  agent TEXT PRIMARY KEY,
  meta BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS family(
  agent TEXT NOT NULL,
  member TEXT NOT NULL,
  key TEXT NOT NULL,
  PRIMARY KEY(agent, member, key)
) WITHOUT ROWID;
-- An entry's family rows, deleted by its key when it is written again: without it each
-- rewritten entry walked all of its agent's family rows.
CREATE INDEX IF NOT EXISTS family_key ON family(agent, key);
";

/// WAL pages between checkpoints (16 MB): a cold parse of a large store writes tens of MB of
/// rollups; checkpointing every 4 MB (SQLite's default) fsynced four times as often.
const CHECKPOINT_PAGES: i64 = 4096;
/// WAL pages between checkpoints during a cold build (256 MB): the answer waits for no
/// checkpoint on a store of ~50,000 sessions (a 124 MB index; checkpoints were ~13% of the
/// writing thread), and one of 200,000 has a few. [`Index::checkpoint_due`] checkpoints once
/// the worker is idle.
const BULK_CHECKPOINT_PAGES: i64 = 65_536;
/// What a WAL is cut back to at a reset (see [`BULK_CHECKPOINT_PAGES`]).
const JOURNAL_LIMIT_BYTES: i64 = 64 << 20;

/// Indexes of `files` that a cold build makes after its rows, with one sort each, instead of
/// updating them row by row: on a 54,000-session store their random inserts were most of the
/// writing thread's b-tree work. Nothing a cold build reads goes through them.
const DEFERRED: &str =
    "DROP INDEX IF EXISTS files_stat; DROP INDEX IF EXISTS files_page; DROP INDEX IF EXISTS files_name;";

/// The one [`DEFERRED`] index an answer reads (its row order), made before the answer
/// ([`Index::end_bulk`]); the others only serve the next refresh (listings, `sessionFile`
/// look-ups) and are made after the answer is sent ([`Index::end_late`]): on 54,000 sessions
/// they were ~150 ms of a cold answer's ~220 ms of index making.
///
/// It covers the default page: besides its order it holds what the page filters on and reads
/// (`agent`, `mtime_ms`, and `id`, `generation`, `entry_hash`, `updated_at` for
/// [`page_row`]), so a page of 1,000 rows reads ~25 index pages instead of 1,000 table rows,
/// each beside its rollup on a page of its own (7-8 ms of the answer after an append on
/// 54,000 sessions, whose answer phase went 13-15 -> 5.5-8 ms). Making it costs ~25 ms more
/// than the order alone on 59,000 files. It replaces `files_order`, which held the order alone.
const ORDER_INDEX: &str = "DROP INDEX IF EXISTS files_order;
    CREATE INDEX IF NOT EXISTS files_page
    ON files(updated_at DESC, mtime_ms DESC, file_name, agent, generation, entry_hash);";

/// The columns a live shape's row-number table (`rowvals_<id>`) is sorted by, each with an
/// index `<table>_<column>`.
const ROWVALS_SORTS: [&str; 3] = ["cost", "tokens", "messages"];

/// Makes the sort indexes of a row-number table.
pub fn rowvals_indexes_sql(table: &str) -> String {
    ROWVALS_SORTS.map(|c| format!("CREATE INDEX IF NOT EXISTS {table}_{c} ON {table}({c});")).concat()
}

/// Turns off SQLite's global memory statistics, which it keeps behind one process-wide mutex
/// taken on every allocation: the parser threads and the writer contended on it (futex calls
/// were a sixth of a cold read's system time). Nothing here reads those statistics. SQLite
/// takes this only before its first connection; later calls are refused, harmlessly.
pub fn configure_sqlite() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: `sqlite3_config` with an int argument, as SQLITE_CONFIG_MEMSTATUS takes; it
        // returns SQLITE_MISUSE instead of acting once SQLite is initialized.
        let rc = unsafe {
            rusqlite::ffi::sqlite3_config(rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS, 0 as std::ffi::c_int)
        };
        tracing::debug!(rc, "SQLite memory statistics off (0 = done).");
    });
}

impl Index {
    /// Opens (or creates) the index for `identity`: in `data_dir`, else in a temporary
    /// directory that goes away with the index.
    pub fn open(data_dir: Option<&Path>, identity: &Identity) -> Result<Index, IndexError> {
        configure_sqlite();
        let (dir, temp) = match data_dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                (d.to_path_buf(), None)
            }
            None => {
                let t = tempfile::Builder::new().prefix("clawgate-index").tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let path = dir.join(FILE_NAME);
        match Index::open_at(&path, identity) {
            Ok(Some(mut index)) => {
                index._temp = temp;
                Ok(index)
            }
            Ok(None) | Err(_) => {
                // Another format, another store, or a broken file: start over.
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    match std::fs::remove_file(PathBuf::from(p)) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                        _ => {}
                    }
                }
                let mut index = Index::open_at(&path, identity)?.ok_or_else(|| {
                    IndexError::Io(std::io::Error::other("a new index does not match its own identity"))
                })?;
                index.discarded = true;
                index._temp = temp;
                Ok(index)
            }
        }
    }

    /// `Ok(None)` when the file belongs to another identity or format.
    fn open_at(path: &Path, identity: &Identity) -> Result<Option<Index>, IndexError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.pragma_update(None, "page_size", PAGE_BYTES)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
        conn.pragma_update(None, "mmap_size", 0)?;
        conn.pragma_update(None, "temp_store", "FILE")?;
        conn.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES)?;
        // A WAL grown past this (a cold build's, see BULK_CHECKPOINT_PAGES) is cut back to it
        // at its next reset instead of keeping its size on disk.
        conn.pragma_update(None, "journal_size_limit", JOURNAL_LIMIT_BYTES)?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(ORDER_INDEX)?;
        let want = format!("{}\u{0}{}\u{0}{}", FORMAT, identity.state_dir.display(), identity.max_line_bytes);
        let have: Option<String> =
            conn.query_row("SELECT v FROM meta WHERE k = 'identity'", [], |r| r.get(0)).optional()?;
        match have {
            Some(h) if h != want => return Ok(None),
            Some(_) => {}
            None => {
                let files: i64 = conn.query_row("SELECT count(*) FROM files", [], |r| r.get(0))?;
                if files > 0 {
                    return Ok(None);
                }
                conn.execute("INSERT INTO meta(k, v) VALUES ('identity', ?1)", [&want])?;
            }
        }
        conn.execute("INSERT OR IGNORE INTO meta(k, v) VALUES ('version', 0)", [])?;
        // Row-number tables of shapes no longer saved (an evicted or discarded shape).
        let orphans: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB 'rowvals_*'
                 AND CAST(substr(name, 9) AS INTEGER) NOT IN (SELECT id FROM lives)",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for t in orphans {
            conn.execute_batch(&format!("DROP TABLE IF EXISTS \"{t}\""))?;
        }
        // A cold build cut short leaves its row-number tables without their indexes.
        for t in rowvals_tables(&conn)? {
            conn.execute_batch(&rowvals_indexes_sql(&t))?;
        }
        let next_generation: i64 =
            conn.query_row("SELECT coalesce(max(generation), 0) + 1 FROM files", [], |r| r.get(0))?;
        Ok(Some(Index {
            conn,
            _temp: None,
            next_generation,
            agents: None,
            discarded: false,
            bulk: false,
            late: false,
            wal_due: false,
        }))
    }

    /// Starts a cold build when no file is indexed yet: the [`DEFERRED`] indexes and those of
    /// the row-number tables are dropped until [`Index::end_bulk`] makes them again. Returns
    /// whether the index is in that mode.
    pub fn begin_bulk(&mut self) -> Result<bool, IndexError> {
        if self.bulk {
            return Ok(true);
        }
        let any = self.conn.query_row("SELECT 1 FROM files LIMIT 1", [], |_| Ok(())).optional()?;
        if any.is_some() {
            return Ok(false);
        }
        let mut sql = DEFERRED.to_owned();
        for t in rowvals_tables(&self.conn)? {
            for c in ROWVALS_SORTS {
                sql.push_str(&format!("DROP INDEX IF EXISTS {t}_{c};"));
            }
        }
        self.conn.execute_batch(&sql)?;
        self.conn.pragma_update(None, "wal_autocheckpoint", BULK_CHECKPOINT_PAGES)?;
        self.bulk = true;
        Ok(true)
    }

    /// Whether a cold build is writing ([`Index::begin_bulk`]): no file was indexed before it.
    pub fn is_bulk(&self) -> bool {
        self.bulk
    }

    /// Ends a cold build ([`Index::begin_bulk`]): makes the one dropped index the default
    /// page walks ([`ORDER_INDEX`]); [`Index::end_late`] makes the rest.
    pub fn end_bulk(&mut self) -> Result<(), IndexError> {
        if !self.bulk {
            return Ok(());
        }
        let started = std::time::Instant::now();
        self.conn.execute_batch(ORDER_INDEX)?;
        self.bulk = false;
        self.late = true;
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "Made the indexes answers read.");
        Ok(())
    }

    /// Makes the [`DEFERRED`] indexes [`Index::end_bulk`] left, and the row-number tables'
    /// sort indexes (~40 ms of a cold answer on 54,000 sessions): called once the cold build's
    /// answer is sent, and before any later refresh (which reads them). Until then, or after a
    /// crash (the next open makes them), queries are the same, only without them.
    pub fn end_late(&mut self) -> Result<(), IndexError> {
        if !self.late {
            return Ok(());
        }
        let started = std::time::Instant::now();
        self.conn.execute_batch(SCHEMA)?;
        // A page sorted by cost, tokens or messages is sorted without them until then.
        for t in rowvals_tables(&self.conn)? {
            self.conn.execute_batch(&rowvals_indexes_sql(&t))?;
        }
        self.late = false;
        self.wal_due = true;
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "Made the deferred indexes.");
        Ok(())
    }

    /// Checkpoints a cold build's WAL (up to [`BULK_CHECKPOINT_PAGES`]) into the database and
    /// goes back to checkpointing every [`CHECKPOINT_PAGES`]: called when the worker is idle
    /// (and at exit), since copying ~145 MB of WAL took ~250 ms that the next call waited
    /// for when [`Index::end_late`] did it. Until then answers read through the larger WAL.
    pub fn checkpoint_due(&mut self) {
        if !std::mem::take(&mut self.wal_due) {
            return;
        }
        let started = std::time::Instant::now();
        let _ = self.conn.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES);
        // Busy (a reader in another process) is no failure: the next checkpoints do it.
        let _ = self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "Checkpointed the cold build's WAL.");
    }

    fn generation(&mut self) -> i64 {
        self.next_generation += 1;
        self.next_generation
    }

    /// Runs `f` in one write transaction.
    pub fn batch<T>(&mut self, f: impl FnOnce(&mut Index) -> Result<T, IndexError>) -> Result<T, IndexError> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        // Every write transaction moves the version, so saved aggregates know what they match.
        let bumped = self.conn.execute("UPDATE meta SET v = v + 1 WHERE k = 'version'", []);
        if let Err(e) = bumped {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(e.into());
        }
        match f(self) {
            Ok(v) => {
                self.conn.execute_batch("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Stat facts of the files of `agent` whose path is in `range` (after the first bound, up
    /// to and including the second; `None`: unbounded), for comparing a directory listing.
    pub fn known_of_agent(
        &self,
        agent: &str,
        range: (Option<&Path>, Option<&Path>),
        mut f: impl FnMut(&[u8], Known),
    ) -> Result<(), IndexError> {
        // From the covering index alone: no table row (and no rollup) is read. During a cold
        // build it is not there, and the agent's rows (if any) are found by `files_agent`.
        // Paths are blobs, compared byte by byte: the empty blob is below every path.
        let sql = format!(
            "SELECT path, id, dev, ino, size, mtime_ns, ctime_ns FROM files {} WHERE agent = ?1 AND path > ?2{}",
            if self.bulk { "" } else { "INDEXED BY files_stat" },
            if range.1.is_some() { " AND path <= ?3" } else { "" },
        );
        let mut st = self.conn.prepare_cached(&sql)?;
        fn bytes(p: Option<&Path>) -> &[u8] {
            p.map_or(&[], |p| p.as_os_str().as_encoded_bytes())
        }
        let (after, upto) = (bytes(range.0), bytes(range.1));
        let mut rows = match range.1 {
            Some(_) => st.query(params![agent, after, upto])?,
            None => st.query(params![agent, after])?,
        };
        while let Some(r) = rows.next()? {
            let path: &[u8] = r.get_ref(0)?.as_blob()?;
            let known = Known {
                id: r.get(1)?,
                meta: FileMeta {
                    dev: r.get::<_, i64>(2)? as u64,
                    ino: r.get::<_, i64>(3)? as u64,
                    size: r.get::<_, i64>(4)? as u64,
                    mtime_ns: i128::from(r.get::<_, i64>(5)?),
                    ctime_ns: i128::from(r.get::<_, i64>(6)?),
                },
            };
            f(path, known);
        }
        Ok(())
    }

    /// The file at `path`, if known.
    pub fn file_by_path(&self, path: &Path) -> Result<Option<FileRow>, IndexError> {
        let mut st = self.conn.prepare_cached(&format!("SELECT {ROW_COLUMNS} FROM files WHERE path = ?1"))?;
        Ok(st.query_row([path_bytes(path)], file_row).optional()?)
    }

    /// A file known under another name with this device and inode (a rename).
    pub fn file_by_inode(&self, dev: u64, ino: u64, agent: &str) -> Result<Option<FileRow>, IndexError> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {ROW_COLUMNS} FROM files WHERE dev = ?1 AND ino = ?2 AND agent = ?3 AND dev <> -1"
        ))?;
        Ok(st.query_row(params![dev as i64, ino as i64, agent], file_row).optional()?)
    }

    /// The file with this id, if still known.
    pub fn file(&self, id: i64) -> Result<Option<FileRow>, IndexError> {
        let mut st = self.conn.prepare_cached(&format!("SELECT {ROW_COLUMNS} FROM files WHERE id = ?1"))?;
        Ok(st.query_row([id], file_row).optional()?)
    }

    /// A file's rollup.
    pub fn rollup(&self, id: i64) -> Result<Option<FileRollup>, IndexError> {
        let mut st = self.conn.prepare_cached("SELECT rollup FROM files WHERE id = ?1")?;
        let blob: Option<Vec<u8>> = st.query_row([id], |r| r.get(0)).optional()?;
        blob.map(|b| decode_rollup(&b)).transpose()
    }

    /// Files of one agent with this session id (a session's transcript and its archives).
    pub fn files_of_session(&self, agent: &str, session_id: &str) -> Result<Vec<FileRow>, IndexError> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {ROW_COLUMNS} FROM files WHERE agent = ?1 AND session_id = ?2"
        ))?;
        let rows = st.query_map([agent, session_id], file_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Stores a (new or re-read) file's encoded rollup and row facts; returns its id and whether
    /// it replaced a row though `new` said there was none (the caller had no old state).
    pub fn put_file(
        &mut self,
        disc: &Discovered,
        blob: &[u8],
        facts: &RowFacts,
        new: bool,
    ) -> Result<(i64, bool), IndexError> {
        let generation = self.generation();
        let (kind, ts) = kind_code(&disc.kind);
        let m = &disc.meta;
        let values = params![
            path_bytes(&disc.path),
            disc.file_name,
            disc.agent_id,
            disc.session_id,
            kind,
            ts,
            m.dev as i64,
            m.ino as i64,
            m.size as i64,
            ns(m.mtime_ns),
            ns(m.ctime_ns),
            m.mtime_ms(),
            generation,
            blob,
            facts.entry_key,
            facts.updated_at,
            facts.channel,
            facts.search_text,
            facts.entry_hash
        ];
        // Literal SQL (no text built per row): the statement cache is keyed by it.
        macro_rules! columns {
            () => {
                "path, file_name, agent, session_id, kind, archive_ts, dev, ino, size, mtime_ns,
                ctime_ns, mtime_ms, generation, rollup, entry_key, updated_at, channel, search_text, entry_hash"
            };
        }
        macro_rules! values {
            () => {
                "?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19"
            };
        }
        if new {
            // A plain one-row insert checks its constraints before it writes anything, so SQLite
            // keeps no statement journal for it; the upsert below keeps one (a copy of every
            // page it touches that this transaction already changed), which was a fifth of a
            // cold read's writing time.
            let mut st = self.conn.prepare_cached(concat!(
                "INSERT INTO files(",
                columns!(),
                ") VALUES (",
                values!(),
                ")"
            ))?;
            match st.execute(values) {
                Ok(_) => return Ok((self.conn.last_insert_rowid(), false)),
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut st = self.conn.prepare_cached(concat!(
            "INSERT INTO files(",
            columns!(),
            ") VALUES (",
            values!(),
            ")
             ON CONFLICT(path) DO UPDATE SET file_name = excluded.file_name, agent = excluded.agent,
                session_id = excluded.session_id, kind = excluded.kind, archive_ts = excluded.archive_ts,
                dev = excluded.dev, ino = excluded.ino, size = excluded.size, mtime_ns = excluded.mtime_ns,
                ctime_ns = excluded.ctime_ns, mtime_ms = excluded.mtime_ms, generation = excluded.generation,
                rollup = excluded.rollup, entry_key = excluded.entry_key, updated_at = excluded.updated_at,
                channel = excluded.channel, search_text = excluded.search_text, entry_hash = excluded.entry_hash
             RETURNING id"
        ))?;
        let id: i64 = st.query_row(values, |r| r.get(0))?;
        Ok((id, new))
    }

    /// Moves a known file to a new name (a rename keeps device, inode and bytes).
    pub fn rename_file(&mut self, id: i64, disc: &Discovered) -> Result<i64, IndexError> {
        let generation = self.generation();
        let (kind, ts) = kind_code(&disc.kind);
        let mut st = self.conn.prepare_cached(
            "UPDATE files SET path = ?2, file_name = ?3, session_id = ?4, kind = ?5, archive_ts = ?6,
                ctime_ns = ?7, generation = ?8 WHERE id = ?1",
        )?;
        st.execute(params![
            id,
            path_bytes(&disc.path),
            disc.file_name,
            disc.session_id,
            kind,
            ts,
            ns(disc.meta.ctime_ns),
            generation
        ])?;
        Ok(generation)
    }

    pub fn remove_file(&mut self, id: i64) -> Result<(), IndexError> {
        self.conn.prepare_cached("DELETE FROM files WHERE id = ?1")?.execute([id])?;
        Ok(())
    }

    /// Forgets every file and entry of agents not in `agents` (they were removed from the store).
    pub fn retain_agents(&mut self, agents: &[String]) -> Result<Vec<String>, IndexError> {
        if self.agents.is_none() {
            // Once per process: every agent the index holds anything of.
            let mut st = self.conn.prepare(
                "SELECT DISTINCT agent FROM files UNION SELECT agent FROM entries UNION SELECT agent FROM stores
                 UNION SELECT agent FROM dbs",
            )?;
            let known: std::collections::BTreeSet<String> =
                st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
            self.agents = Some(known);
        }
        let known = self.agents.as_mut().expect("filled above");
        let gone: Vec<String> = known.iter().filter(|a| !agents.contains(a)).cloned().collect();
        known.extend(agents.iter().cloned());
        for a in &gone {
            known.remove(a);
            self.conn.execute("DELETE FROM files WHERE agent = ?1", [a])?;
            self.conn.execute("DELETE FROM entries WHERE agent = ?1", [a])?;
            self.conn.execute("DELETE FROM family WHERE agent = ?1", [a])?;
            self.conn.execute("DELETE FROM stores WHERE agent = ?1", [a])?;
            self.conn.execute("DELETE FROM dbs WHERE agent = ?1", [a])?;
        }
        Ok(gone)
    }

    /// What the last applied listing of an agent's OpenClaw database was (`sqlite::AgentDb`).
    pub fn db_state(&self, agent: &str) -> Result<Option<Vec<u8>>, IndexError> {
        let mut st = self.conn.prepare_cached("SELECT data FROM dbs WHERE agent = ?1")?;
        Ok(st.query_row([agent], |r| r.get(0)).optional()?)
    }

    pub fn set_db_state(&mut self, agent: &str, data: &[u8]) -> Result<(), IndexError> {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO dbs(agent, data) VALUES (?1, ?2)")?
            .execute(params![agent, data])?;
        Ok(())
    }

    /// The stat facts of an agent's `sessions.json` when its entries were last stored.
    pub fn store_meta(&self, agent: &str) -> Result<Option<FileMeta>, IndexError> {
        let mut st = self.conn.prepare_cached("SELECT meta FROM stores WHERE agent = ?1")?;
        let blob: Option<Vec<u8>> = st.query_row([agent], |r| r.get(0)).optional()?;
        Ok(blob.and_then(|b| rmp_serde::from_slice(&b).ok()))
    }

    /// Records (or, with `None`, forgets) the stat facts an agent's entries were read at.
    pub fn set_store_meta(&mut self, agent: &str, meta: Option<&FileMeta>) -> Result<(), IndexError> {
        match meta {
            Some(m) => {
                self.conn
                    .prepare_cached("INSERT OR REPLACE INTO stores(agent, meta) VALUES (?1, ?2)")?
                    .execute(params![agent, rmp_serde::to_vec(m)?])?;
            }
            None => {
                self.conn.prepare_cached("DELETE FROM stores WHERE agent = ?1")?.execute([agent])?;
            }
        }
        Ok(())
    }

    /// Every file of `agents` with its rollup, in id order. `f` returns `false` to stop.
    pub fn scan(
        &self,
        agents: &[String],
        mut f: impl FnMut(FileRow, FileRollup) -> Result<bool, IndexError>,
    ) -> Result<(), IndexError> {
        // One pass over the table in storage order: walking an index instead would look up
        // every row's blob at random (a page-cache miss each, on a large store).
        let mut st =
            self.conn.prepare_cached(&format!("SELECT {ROW_COLUMNS}, rollup FROM files NOT INDEXED"))?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let agent = r.get_ref(3)?.as_str()?;
            if !agents.iter().any(|a| a == agent) {
                continue;
            }
            let row = file_row(r)?;
            let rollup = decode_rollup(r.get_ref(18)?.as_blob()?)?;
            if !f(row, rollup)? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Number of files known.
    pub fn count_all(&self) -> Result<u64, IndexError> {
        Ok(self.conn.query_row("SELECT count(*) FROM files", [], |r| r.get::<_, i64>(0))? as u64)
    }

    /// Number of entries of an agent.
    pub fn entry_count(&self, agent: &str) -> Result<u64, IndexError> {
        let mut st = self.conn.prepare_cached("SELECT count(*) FROM entries WHERE agent = ?1")?;
        Ok(st.query_row([agent], |r| r.get::<_, i64>(0))? as u64)
    }

    /// Whether any file of `agents` is known.
    pub fn has_files(&self, agents: &[String]) -> Result<bool, IndexError> {
        let mut st = self.conn.prepare_cached("SELECT 1 FROM files WHERE agent = ?1 LIMIT 1")?;
        for a in agents {
            if st.query_row([a], |_| Ok(())).optional()?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Number of files of `agents`.
    pub fn count_files(&self, agents: &[String]) -> Result<u64, IndexError> {
        let mut st = self.conn.prepare_cached("SELECT count(*) FROM files WHERE agent = ?1")?;
        let mut n = 0i64;
        for a in agents {
            n += st.query_row([a], |r| r.get::<_, i64>(0))?;
        }
        Ok(n as u64)
    }

    // -----------------------------------------------------------------------------------------
    // sessions.json entries

    /// Updates some entries of one agent in place, each keeping its position (the rest are as
    /// they were): what an OpenClaw database's nodes updated since the last listing stand for,
    /// or the entries of a rewritten `sessions.json` whose text changed (`ords`: the position
    /// each must already have). `added` of them are new keys (an OpenClaw database's nodes added
    /// since), each put where key order puts it (the entries after it keep their positions until
    /// the agent is next applied whole, which moves them). `None`, with nothing written, when
    /// not exactly `added` keys are new, or one is not at its position (keys came, went or
    /// moved): the caller applies the agent's entries completely.
    pub fn patch_entries(
        &mut self,
        agent: &str,
        entries: &[StoreEntry],
        ords: Option<&[usize]>,
        added: usize,
    ) -> Result<Option<Touched>, IndexError> {
        let mut olds = Vec::with_capacity(entries.len());
        let mut new = 0;
        {
            let mut get = self.conn.prepare_cached(
                "SELECT hash, session_id, file_name, ord FROM entries WHERE agent = ?1 AND key = ?2",
            )?;
            for (i, e) in entries.iter().enumerate() {
                let old: Option<(i64, String, Option<String>, i64)> = get
                    .query_row([agent, &e.key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .optional()?;
                match old {
                    Some(o) if ords.is_none_or(|ords| ords[i] as i64 == o.3) => olds.push(Some(o)),
                    None if ords.is_none() => {
                        new += 1;
                        olds.push(None);
                    }
                    _ => return Ok(None),
                }
            }
        }
        if new != added {
            return Ok(None);
        }
        let mut touched = Touched::default();
        for (e, old) in entries.iter().zip(olds) {
            let hash = e.hash();
            let Some((old_hash, sid, file, ord)) = old else {
                let ord: i64 = self
                    .conn
                    .prepare_cached("SELECT count(*) FROM entries WHERE agent = ?1 AND key < ?2")?
                    .query_row([agent, &e.key], |r| r.get(0))?;
                self.put_entry(agent, e, ord as usize, hash, false, &mut touched)?;
                continue;
            };
            if old_hash == hash as i64 {
                continue;
            }
            touched.add(&sid, file.as_deref());
            self.put_entry(agent, e, ord as usize, hash, true, &mut touched)?;
        }
        Ok(Some(touched))
    }

    /// Writes one entry at position `ord` (its family rows first deleted when it may have had
    /// some) and adds what it names to `touched`.
    fn put_entry(
        &mut self,
        agent: &str,
        e: &StoreEntry,
        ord: usize,
        hash: u64,
        had_family: bool,
        touched: &mut Touched,
    ) -> Result<(), IndexError> {
        if had_family {
            self.conn
                .prepare_cached("DELETE FROM family WHERE agent = ?1 AND key = ?2")?
                .execute([agent, &e.key])?;
        }
        touched.add(&e.session_id, e.session_file_name.as_deref());
        if !e.family_ids.is_empty() {
            let mut fam_put = self
                .conn
                .prepare_cached("INSERT OR IGNORE INTO family(agent, member, key) VALUES (?1, ?2, ?3)")?;
            for m in &e.family_ids {
                fam_put.execute([agent, m, &e.key])?;
                touched.add(m, None);
            }
        }
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO entries(agent, key, ord, session_id, file_name, updated_at, hash, families, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                agent,
                e.key,
                ord as i64,
                e.session_id,
                e.session_file_name,
                e.updated_at,
                hash as i64,
                i64::from(!e.family_ids.is_empty()),
                rmp_serde::to_vec(e)?
            ])?;
        Ok(())
    }

    /// Replaces the entries of one agent with `entries` (in file order), updating only what
    /// changed. Returns the session ids and file names whose entries changed (their files'
    /// row facts must be recomputed), or `None` when more changed than is worth listing.
    pub fn replace_entries(
        &mut self,
        agent: &str,
        entries: &mut dyn Iterator<Item = StoreEntry>,
    ) -> Result<Touched, IndexError> {
        let mut w = self.entry_writer(agent)?;
        for e in entries {
            w.put(&e)?;
        }
        w.finish()
    }

    /// [`Index::replace_entries`] one entry at a time, for entries streamed from a file too
    /// large to hold them all.
    pub fn entry_writer<'a>(&'a mut self, agent: &'a str) -> Result<EntryWriter<'a>, IndexError> {
        // An agent without entries yet (a cold read): nothing to look up, compare or delete.
        let had_none = {
            let mut any = self.conn.prepare_cached("SELECT 1 FROM entries WHERE agent = ?1 LIMIT 1")?;
            any.query_row([agent], |_| Ok(())).optional()?.is_none()
        };
        Ok(EntryWriter {
            index: self,
            agent,
            had_none,
            seen: foldhash::HashSet::default(),
            touched: Touched::default(),
            ord: 0,
        })
    }

    /// Forgets all entries of an agent (its `sessions.json` is gone or unreadable).
    pub fn clear_entries(&mut self, agent: &str) -> Result<Touched, IndexError> {
        self.replace_entries(agent, &mut std::iter::empty())
    }

    /// The entry with this key.
    pub fn entry(&self, agent: &str, key: &str) -> Result<Option<StoreEntry>, IndexError> {
        let mut st = self.conn.prepare_cached("SELECT data FROM entries WHERE agent = ?1 AND key = ?2")?;
        let blob: Option<Vec<u8>> = st.query_row([agent, key], |r| r.get(0)).optional()?;
        Ok(blob.map(|b| rmp_serde::from_slice(&b)).transpose()?)
    }

    /// The entry of a session id: the most recently updated one when several keys share it.
    pub fn entry_by_session(&self, agent: &str, session_id: &str) -> Result<Option<StoreEntry>, IndexError> {
        entry_by_session(&self.conn, agent, session_id)
    }

    /// A transcript's row facts, from its entry (see [`facts_for`]).
    pub fn facts_for(&self, d: &Discovered, memo: Option<&EntryMemo>) -> Result<RowFacts, IndexError> {
        facts_for(&self.conn, d, memo)
    }

    /// Whether `session_id` is a usage-family member of some entry of `agent`.
    pub fn is_family_member(&self, agent: &str, session_id: &str) -> Result<bool, IndexError> {
        let mut st =
            self.conn.prepare_cached("SELECT 1 FROM family WHERE agent = ?1 AND member = ?2 LIMIT 1")?;
        Ok(st.query_row([agent, session_id], |_| Ok(())).optional()?.is_some())
    }

    /// Recomputes the row facts of the files of `agent` named by `touched` (all of the agent's
    /// files when `touched.all`). Returns the files whose channel changed, with the old one.
    /// `memo`, when given, holds the agent's entries as written.
    pub fn refresh_facts(
        &mut self,
        agent: &str,
        touched: &Touched,
        memo: Option<&EntryMemo>,
    ) -> Result<Vec<(i64, Option<String>)>, IndexError> {
        // Rows are read a few at a time and each as it is now: one reached twice (by its
        // session and by its name) has its new facts the second time, and is left as it is.
        let mut changed = Vec::new();
        if touched.all {
            // Every file of the agent, a page at a time: all of 200,000 at once held ~80 MB.
            const PAGE: usize = 1024;
            let mut after = (String::new(), i64::MIN);
            loop {
                let rows: Vec<FileRow> = self
                    .conn
                    .prepare_cached(&format!(
                        "SELECT {ROW_COLUMNS} FROM files WHERE agent = ?1 AND (session_id, id) > (?2, ?3)
                         ORDER BY session_id, id LIMIT {PAGE}"
                    ))?
                    .query_map(params![agent, after.0, after.1], file_row)?
                    .collect::<Result<_, _>>()?;
                let Some(last) = rows.last() else { break };
                after = (last.disc.session_id.clone(), last.id);
                let full = rows.len() == PAGE;
                self.refresh_rows(rows, memo, &mut changed)?;
                if !full {
                    break;
                }
            }
        } else {
            for sid in &touched.sessions {
                let rows = self.files_of_session(agent, sid)?;
                self.refresh_rows(rows, memo, &mut changed)?;
            }
            for f in &touched.file_names {
                let mut hi = f.clone();
                hi.push('\u{10FFFF}');
                let rows: Vec<FileRow> = self
                    .conn
                    .prepare_cached(&format!("SELECT {ROW_COLUMNS} {FILES_NAMED}"))?
                    .query_map(params![agent, f, hi], file_row)?
                    .filter_map(Result::ok)
                    .collect();
                self.refresh_rows(rows, memo, &mut changed)?;
            }
        }
        Ok(changed)
    }

    /// [`Index::refresh_facts`] of some rows: those whose facts changed are written, and those
    /// whose channel changed pushed to `changed` with the old one.
    fn refresh_rows(
        &mut self,
        rows: Vec<FileRow>,
        memo: Option<&EntryMemo>,
        changed: &mut Vec<(i64, Option<String>)>,
    ) -> Result<(), IndexError> {
        for row in rows {
            let facts = self.facts_for(&row.disc, memo)?;
            if facts != row.facts {
                if facts.channel != row.facts.channel {
                    changed.push((row.id, row.facts.channel.clone()));
                }
                self.set_facts(row.id, &facts)?;
            }
        }
        Ok(())
    }

    /// Sets a file's row facts (after it was put or renamed).
    pub fn set_facts(&mut self, id: i64, facts: &RowFacts) -> Result<(), IndexError> {
        let mut st = self.conn.prepare_cached(
            "UPDATE files SET entry_key = ?2, updated_at = ?3, channel = ?4, search_text = ?5, entry_hash = ?6
             WHERE id = ?1",
        )?;
        st.execute(params![
            id,
            facts.entry_key,
            facts.updated_at,
            facts.channel,
            facts.search_text,
            facts.entry_hash
        ])?;
        Ok(())
    }

    /// One page of rows: ids of the files of `agents` listed for a range starting at
    /// `start_ms` (modified since), in OpenClaw's order (most recently updated first), matching
    /// every term of `search`, skipping `offset`. `heads_only` drops files that family mode
    /// folds into another row.
    pub fn page(&self, q: &PageQuery<'_>) -> Result<Vec<PageRow>, IndexError> {
        let (sql, args) = q.sql("id, generation, entry_hash, updated_at");
        let mut st = self.conn.prepare_cached(&format!(
            "{sql} ORDER BY updated_at {dir}, mtime_ms {dir}, file_name {rdir} LIMIT ?{l} OFFSET ?{o}",
            dir = if q.ascending { "ASC" } else { "DESC" },
            rdir = if q.ascending { "DESC" } else { "ASC" },
            l = args.len() + 1,
            o = args.len() + 2
        ))?;
        let mut all: Vec<&dyn rusqlite::ToSql> = args.iter().map(|a| a as &dyn rusqlite::ToSql).collect();
        let (limit, offset) = (q.limit as i64, q.offset as i64);
        all.push(&limit);
        all.push(&offset);
        let rows = st.query_map(all.as_slice(), page_row)?.collect::<Result<Vec<PageRow>, _>>()?;
        Ok(rows)
    }

    /// How many rows [`Index::page`] pages through.
    pub fn count_rows(&self, q: &PageQuery<'_>) -> Result<u64, IndexError> {
        let (sql, args) = q.sql("count(*)");
        let mut st = self.conn.prepare_cached(&sql)?;
        let all: Vec<&dyn rusqlite::ToSql> = args.iter().map(|a| a as &dyn rusqlite::ToSql).collect();
        Ok(st.query_row(all.as_slice(), |r| r.get::<_, i64>(0))? as u64)
    }

    /// The version of the index: moves with every write transaction.
    pub fn version(&self) -> Result<i64, IndexError> {
        Ok(self.conn.query_row("SELECT v FROM meta WHERE k = 'version'", [], |r| r.get(0))?)
    }

    /// The saved shape whose serialised form is `shape`: its id, version and data.
    pub fn saved_live(&self, shape: &[u8]) -> Result<Option<(i64, i64, Vec<u8>)>, IndexError> {
        let mut st = self.conn.prepare_cached("SELECT id, version, data FROM lives WHERE shape = ?1")?;
        Ok(st.query_row([shape], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional()?)
    }

    /// A new saved-shape id (its row-number table is `rowvals_<id>`).
    pub fn new_live(&mut self, shape: &[u8]) -> Result<i64, IndexError> {
        self.conn
            .prepare_cached("INSERT INTO lives(shape, version, data) VALUES (?1, -1, x'') ON CONFLICT(shape) DO UPDATE SET version = -1 RETURNING id")?
            .query_row([shape], |r| r.get(0))
            .map_err(Into::into)
    }

    pub fn save_live(&mut self, id: i64, version: i64, data: &[u8]) -> Result<(), IndexError> {
        self.conn
            .prepare_cached("UPDATE lives SET version = ?2, data = ?3 WHERE id = ?1")?
            .execute(params![id, version, data])?;
        Ok(())
    }

    pub fn drop_live(&mut self, id: i64) -> Result<(), IndexError> {
        self.conn.prepare_cached("DELETE FROM lives WHERE id = ?1")?.execute([id])?;
        self.conn.execute_batch(&format!("DROP TABLE IF EXISTS rowvals_{id}"))?;
        Ok(())
    }

    /// A rendered row saved by an earlier answer (or process).
    pub fn rendered(&self, stamp: u64) -> Result<Option<String>, IndexError> {
        let mut st = self.conn.prepare_cached("SELECT text FROM rendered WHERE stamp = ?1")?;
        Ok(st.query_row([stamp as i64], |r| r.get(0)).optional()?)
    }

    /// Saves rendered rows, then keeps the newest [`RENDERED_MAX`] of them.
    pub fn put_rendered(&mut self, rows: &[(u64, std::sync::Arc<str>)], tick: i64) -> Result<(), IndexError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.conn.execute_batch("BEGIN")?;
        let result = (|| {
            let mut st = self
                .conn
                .prepare_cached("INSERT OR REPLACE INTO rendered(stamp, used, text) VALUES (?1, ?2, ?3)")?;
            for (stamp, text) in rows {
                st.execute(params![*stamp as i64, tick, &**text])?;
            }
            self.conn.execute(
                "DELETE FROM rendered WHERE stamp IN (SELECT stamp FROM rendered ORDER BY used DESC LIMIT -1 OFFSET ?1)",
                [RENDERED_MAX],
            )?;
            Ok::<(), IndexError>(())
        })();
        match result {
            Ok(()) => self.conn.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
        Ok(())
    }

    /// Where the index file is (for read-only connections of parser threads).
    pub fn path(&self) -> PathBuf {
        PathBuf::from(self.conn.path().unwrap_or_default())
    }

    /// Gives SQLite's cached pages back (after a big job).
    pub fn shrink(&self) {
        let _ = self.conn.execute_batch("PRAGMA shrink_memory");
    }

    /// The raw connection, for the per-shape row tables of [`super::live`].
    pub fn conn(&self) -> &Connection {
        &self.conn
    }
}

fn entry_by_session(
    conn: &Connection,
    agent: &str,
    session_id: &str,
) -> Result<Option<StoreEntry>, IndexError> {
    let mut st = conn.prepare_cached(
        // Without statistics SQLite would walk the primary key (agent, key) instead.
        "SELECT data FROM entries INDEXED BY entries_session WHERE agent = ?1 AND session_id = ?2
         ORDER BY coalesce(updated_at, -1e308) DESC, ord LIMIT 1",
    )?;
    let blob: Option<Vec<u8>> = st.query_row([agent, session_id], |r| r.get(0)).optional()?;
    Ok(blob.map(|b| rmp_serde::from_slice(&b)).transpose()?)
}

fn entry_for_file(
    conn: &Connection,
    agent: &str,
    session_id: &str,
    file_name: &str,
) -> Result<Option<StoreEntry>, IndexError> {
    if let Some(e) = entry_by_session(conn, agent, session_id)? {
        return Ok(Some(e));
    }
    let mut st = conn.prepare_cached(
        "SELECT data FROM entries INDEXED BY entries_file WHERE agent = ?1 AND file_name = ?2 ORDER BY ord LIMIT 1",
    )?;
    let blob: Option<Vec<u8>> = st.query_row([agent, transcript_stem(file_name)], |r| r.get(0)).optional()?;
    Ok(blob.map(|b| rmp_serde::from_slice(&b)).transpose()?)
}

/// A transcript's row facts from the entry that names it (by session id, else by an explicit
/// `sessionFile` name): looked up in `memo` when it holds the file's agent, else in the entries
/// table.
fn facts_for(conn: &Connection, d: &Discovered, memo: Option<&EntryMemo>) -> Result<RowFacts, IndexError> {
    Ok(match memo.filter(|m| m.agent == d.agent_id) {
        Some(m) => facts_of(d, m.entry_for_file(&d.session_id, &d.file_name)),
        None => {
            let e = entry_for_file(conn, &d.agent_id, &d.session_id, &d.file_name)?;
            facts_of(d, e.map(|e| EntryFacts::of(&e)).as_ref())
        }
    })
}

/// The row-number tables of live shapes.
fn rowvals_tables(conn: &Connection) -> Result<Vec<String>, IndexError> {
    let mut st =
        conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB 'rowvals_*'")?;
    let names = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    Ok(names)
}

/// A read-only connection to the index, for a parser thread that needs the old state of the
/// files it re-reads (WAL mode: it never blocks the writer, and sees what was committed).
pub struct Reader {
    conn: Connection,
}

impl Reader {
    pub fn open(path: &Path) -> Result<Reader, IndexError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.pragma_update(None, "cache_size", -1024)?;
        conn.pragma_update(None, "mmap_size", 0)?;
        Ok(Reader { conn })
    }

    /// A file's row and rollup.
    pub fn file_and_rollup(&self, id: i64) -> Result<Option<(FileRow, FileRollup)>, IndexError> {
        let mut st =
            self.conn.prepare_cached(&format!("SELECT {ROW_COLUMNS}, rollup FROM files WHERE id = ?1"))?;
        let mut rows = st.query([id])?;
        let Some(r) = rows.next()? else { return Ok(None) };
        let row = file_row(r)?;
        let rollup = decode_rollup(r.get_ref(18)?.as_blob()?)?;
        Ok(Some((row, rollup)))
    }

    /// A parsed file's row facts and encoded rollup, ready for [`Index::put_file`]: made on the
    /// parser threads so that the one writing thread only writes. The entries they come from
    /// do not change while files are parsed (they are written before, in their own batch).
    /// `memo`, when it holds the file's agent, stands in for the entries table.
    pub fn prepare(
        &self,
        disc: &Discovered,
        rollup: &FileRollup,
        memo: Option<&EntryMemo>,
    ) -> Result<Prepared, IndexError> {
        Ok(Prepared { facts: facts_for(&self.conn, disc, memo)?, blob: encode_rollup(rollup)? })
    }
}

/// A file's row facts and encoded rollup ([`Reader::prepare`]).
#[derive(Debug)]
pub struct Prepared {
    pub facts: RowFacts,
    pub blob: Vec<u8>,
}

/// A row of a page: what its rendered text depends on, read with the page.
#[derive(Debug, Clone, Copy)]
pub struct PageRow {
    pub id: i64,
    pub generation: i64,
    pub entry_hash: i64,
    pub updated_at: f64,
}

pub fn page_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PageRow> {
    Ok(PageRow { id: r.get(0)?, generation: r.get(1)?, entry_hash: r.get(2)?, updated_at: r.get(3)? })
}

/// What [`Index::page`] selects.
pub struct PageQuery<'a> {
    pub agents: &'a [String],
    pub start_ms: i64,
    pub heads_only: bool,
    /// Only primary transcripts named by a session-store entry (`sessions.list`).
    pub entries_only: bool,
    pub search: &'a [String],
    pub ascending: bool,
    pub limit: u32,
    pub offset: u32,
}

impl PageQuery<'_> {
    fn sql(&self, what: &str) -> (String, Vec<rusqlite::types::Value>) {
        use rusqlite::types::Value;
        let mut args: Vec<Value> = Vec::new();
        let marks: Vec<String> = self
            .agents
            .iter()
            .map(|a| {
                args.push(Value::Text(a.clone()));
                format!("?{}", args.len())
            })
            .collect();
        // Walk the order index (a page is its first rows); by agent the planner would sort every
        // row of the scope first.
        let mut sql =
            format!("SELECT {what} FROM files INDEXED BY files_page WHERE agent IN ({})", marks.join(","));
        if self.start_ms > 0 {
            args.push(Value::Integer(self.start_ms));
            sql.push_str(&format!(" AND mtime_ms >= ?{}", args.len()));
        }
        if self.entries_only {
            sql.push_str(" AND entry_key IS NOT NULL AND kind = 0");
        }
        if self.heads_only {
            sql.push_str(
                " AND NOT (entry_key IS NULL AND EXISTS (SELECT 1 FROM family f WHERE f.agent = files.agent AND f.member = files.session_id))",
            );
        }
        for term in self.search {
            args.push(Value::Text(format!(
                "%{}%",
                term.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
            )));
            sql.push_str(&format!(" AND search_text LIKE ?{} ESCAPE '\\'", args.len()));
        }
        (sql, args)
    }
}

/// Session ids and file names whose entries changed.
#[derive(Debug, Default)]
pub struct Touched {
    pub sessions: std::collections::BTreeSet<String>,
    pub file_names: std::collections::BTreeSet<String>,
    /// Too many to list: every file of the agent.
    pub all: bool,
}

/// Writes an agent's entries in file order ([`Index::entry_writer`]), then deletes those it
/// was not given ([`EntryWriter::finish`]). What it holds per entry is a 16-byte hash of its
/// key: an agent's `sessions.json` of 200,000 entries is ~140 MB of text.
pub struct EntryWriter<'a> {
    index: &'a mut Index,
    agent: &'a str,
    had_none: bool,
    /// The keys given so far, by [`key_hash`].
    seen: foldhash::HashSet<u128>,
    touched: Touched,
    ord: usize,
}

/// A key's 128-bit hash: two keys of one agent share it with a chance of ~n²/2¹²⁹.
fn key_hash(key: &str) -> u128 {
    use std::hash::BuildHasher as _;
    let half = |seed| u128::from(foldhash::quality::FixedState::with_seed(seed).hash_one(key));
    half(0x5851_F42D_4C95_7F2D) << 64 | half(0x1405_7B7E_F767_814F)
}

impl EntryWriter<'_> {
    /// The next entry (its key canonical).
    pub fn put(&mut self, e: &StoreEntry) -> Result<(), IndexError> {
        let (agent, ord) = (self.agent, self.ord);
        self.ord += 1;
        let hash = e.hash();
        let first = self.seen.insert(key_hash(&e.key));
        let look = !(self.had_none && first);
        if look {
            let old: Option<(i64, i64, String, Option<String>)> = self
                .index
                .conn
                .prepare_cached(
                    "SELECT hash, ord, session_id, file_name FROM entries WHERE agent = ?1 AND key = ?2",
                )?
                .query_row([agent, &e.key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .optional()?;
            match &old {
                Some((h, old_ord, sid, file)) if *h == hash as i64 => {
                    if *old_ord != ord as i64 {
                        self.moved(e, ord, sid, file.as_deref())?;
                    }
                    return Ok(());
                }
                Some((_, _, sid, file)) => self.touched.add(sid, file.as_deref()),
                None => {}
            }
        }
        self.index.put_entry(agent, e, ord, hash, look, &mut self.touched)
    }

    /// An unchanged entry at another position (an entry before it came or went): only its
    /// position is written. Every entry after a key added to an OpenClaw database or removed
    /// from a `sessions.json` moves; rewritten and their files' facts recomputed, one new session
    /// on an agent of 200,000 took minutes. Moving keeps the order of the entries that did not
    /// change, so which of several entries naming one session or file wins (the first) can only
    /// change where such entries share one: those are recomputed.
    fn moved(&mut self, e: &StoreEntry, ord: usize, sid: &str, file: Option<&str>) -> Result<(), IndexError> {
        let conn = &self.index.conn;
        conn.prepare_cached("UPDATE entries SET ord = ?3 WHERE agent = ?1 AND key = ?2")?
            .execute(params![self.agent, e.key, ord as i64])?;
        let shared: bool = conn
            .prepare_cached(
                "SELECT EXISTS(SELECT 1 FROM entries WHERE agent = ?1 AND session_id = ?3 AND key <> ?2)
                     OR EXISTS(SELECT 1 FROM entries WHERE agent = ?1 AND file_name = ?4 AND key <> ?2)",
            )?
            .query_row(params![self.agent, e.key, sid, file], |r| r.get(0))?;
        if shared {
            self.touched.add(sid, file);
        }
        Ok(())
    }

    /// Deletes the agent's entries that were not given; returns what changed.
    pub fn finish(self) -> Result<Touched, IndexError> {
        let EntryWriter { index, agent, had_none, seen, mut touched, .. } = self;
        if had_none {
            return Ok(touched);
        }
        // Entries that are gone.
        let mut st =
            index.conn.prepare_cached("SELECT key, session_id, file_name FROM entries WHERE agent = ?1")?;
        let gone: Vec<(String, String, Option<String>)> = st
            .query_map([agent], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))?
            .filter_map(Result::ok)
            .filter(|(k, _, _)| !seen.contains(&key_hash(k)))
            .collect();
        drop(st);
        for (key, sid, file) in gone {
            touched.add(&sid, file.as_deref());
            let members: Vec<String> = {
                let mut st =
                    index.conn.prepare_cached("SELECT member FROM family WHERE agent = ?1 AND key = ?2")?;
                st.query_map([agent, &key], |r| r.get(0))?.collect::<Result<_, _>>()?
            };
            for m in members {
                touched.add(&m, None);
            }
            index.conn.execute("DELETE FROM entries WHERE agent = ?1 AND key = ?2", [agent, &key])?;
            index.conn.execute("DELETE FROM family WHERE agent = ?1 AND key = ?2", [agent, &key])?;
        }
        Ok(touched)
    }
}

/// Past this many touched names, every file of the agent is re-checked instead.
const TOUCHED_MAX: usize = 4096;

impl Touched {
    fn add(&mut self, session_id: &str, file_name: Option<&str>) {
        if self.all {
            return;
        }
        self.sessions.insert(session_id.to_owned());
        if let Some(f) = file_name {
            self.file_names.insert(f.to_owned());
        }
        if self.sessions.len() + self.file_names.len() > TOUCHED_MAX {
            *self = Touched { all: true, ..Touched::default() };
        }
    }

    pub fn is_empty(&self) -> bool {
        !self.all && self.sessions.is_empty() && self.file_names.is_empty()
    }
}

/// What a file's row facts take from the entry that names it ([`facts_of`]).
#[derive(Debug, Clone, PartialEq)]
pub struct EntryFacts {
    pub key: String,
    pub label: Option<String>,
    pub channel: Option<String>,
    pub model: Option<String>,
    pub model_provider: Option<String>,
    pub updated_at: Option<f64>,
    /// [`StoreEntry::hash`].
    pub hash: u64,
}

impl EntryFacts {
    pub fn of(e: &StoreEntry) -> EntryFacts {
        EntryFacts {
            key: e.key.clone(),
            label: e.label.clone(),
            channel: e.channel.clone(),
            model: e.model.clone(),
            model_provider: e.model_provider.clone(),
            updated_at: e.updated_at,
            hash: e.hash(),
        }
    }
}

/// A file's row facts from the entry that names it.
fn facts_of(d: &Discovered, e: Option<&EntryFacts>) -> RowFacts {
    let key = e.map_or_else(|| format!("agent:{}:{}", d.agent_id, d.session_id), |e| e.key.clone());
    let mut search_text = String::new();
    for part in [
        Some(key.as_str()),
        e.and_then(|e| e.label.as_deref()),
        Some(d.session_id.as_str()),
        Some(d.agent_id.as_str()),
        e.and_then(|e| e.channel.as_deref()),
        e.and_then(|e| e.model.as_deref()),
        e.and_then(|e| e.model_provider.as_deref()),
    ]
    .into_iter()
    .flatten()
    {
        search_text.push_str(&part.to_lowercase());
        search_text.push(' ');
    }
    RowFacts {
        entry_key: e.map(|e| e.key.clone()),
        updated_at: e.and_then(|e| e.updated_at).unwrap_or(d.meta.mtime_ms() as f64),
        channel: e.and_then(|e| e.channel.clone()),
        search_text,
        entry_hash: e.map_or(0, |e| e.hash as i64),
    }
}

/// One agent's entries as [`entry_for_file`] would find them in the index, held while that
/// agent's files are parsed right after its entries were written whole: a cold build's parser
/// threads then look each session up here instead of in SQLite (a B-tree walk and an entry
/// decode per file were a sixth of their time on a store of 54,000 sessions). Slim facts only,
/// and only for agents of a bounded number of entries (the engine's `MEMO_MAX`).
#[derive(Debug, Default)]
pub struct EntryMemo {
    pub agent: String,
    by_session: foldhash::HashMap<String, (i64, EntryFacts)>,
    by_file: foldhash::HashMap<String, (i64, EntryFacts)>,
}

impl EntryMemo {
    /// The memo of `entries` as [`Index::replace_entries`] writes them (keys canonical; a key
    /// listed twice keeps its last position and value).
    pub fn of(agent: &str, entries: &[StoreEntry]) -> EntryMemo {
        let mut last: foldhash::HashMap<&str, usize> = foldhash::HashMap::default();
        for (ord, e) in entries.iter().enumerate() {
            last.insert(&e.key, ord);
        }
        let mut memo = EntryMemo { agent: agent.to_owned(), ..EntryMemo::default() };
        for (ord, e) in entries.iter().enumerate() {
            if last.get(e.key.as_str()) != Some(&ord) {
                continue;
            }
            let ord = ord as i64;
            // `ORDER BY coalesce(updated_at, -1e308) DESC, ord`: the first wins a tie.
            let rank = |u: Option<f64>| u.filter(|u| !u.is_nan()).unwrap_or(-1e308);
            match memo.by_session.get(&e.session_id) {
                Some((o, f))
                    if rank(f.updated_at) > rank(e.updated_at)
                        || (rank(f.updated_at) == rank(e.updated_at) && *o < ord) => {}
                _ => {
                    memo.by_session.insert(e.session_id.clone(), (ord, EntryFacts::of(e)));
                }
            }
            if let Some(name) = &e.session_file_name {
                match memo.by_file.get(name) {
                    Some((o, _)) if *o < ord => {}
                    _ => {
                        memo.by_file.insert(name.clone(), (ord, EntryFacts::of(e)));
                    }
                }
            }
        }
        memo
    }

    /// [`entry_for_file`] from memory.
    pub fn entry_for_file(&self, session_id: &str, file_name: &str) -> Option<&EntryFacts> {
        self.by_session
            .get(session_id)
            .or_else(|| self.by_file.get(transcript_stem(file_name)))
            .map(|(_, f)| f)
    }
}

/// A transcript's name up to `.jsonl` (an archive's suffix dropped): what a `sessionFile` names.
fn transcript_stem(file_name: &str) -> &str {
    file_name.find(".jsonl").map_or(file_name, |i| &file_name[..i + ".jsonl".len()])
}

/// A rollup as stored: compact MessagePack (positional; the format version covers changes).
pub fn encode_rollup(r: &FileRollup) -> Result<Vec<u8>, IndexError> {
    // Sized for a short session's rollup up front: grown from empty, the buffer was reallocated
    // ~8 times per rollup.
    let mut out = Vec::with_capacity(1024);
    rmp_serde::encode::write(&mut out, r)?;
    Ok(out)
}

pub fn decode_rollup(b: &[u8]) -> Result<FileRollup, IndexError> {
    Ok(rmp_serde::from_slice(b)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry((key, sid, updated, file, label): (u8, u8, Option<i8>, Option<u8>, bool)) -> StoreEntry {
        StoreEntry {
            key: format!("agent:a:k{key}"),
            session_id: format!("s{sid}"),
            updated_at: updated.map(f64::from),
            label: label.then(|| format!("L{key}-{sid}")),
            session_file_name: file.map(|f| format!("f{f}.jsonl")),
            channel: Some(format!("c{key}")),
            ..StoreEntry::default()
        }
    }

    fn disc(session_id: &str, file_name: &str) -> Discovered {
        Discovered {
            path: PathBuf::from(format!("/s/{file_name}")),
            file_name: file_name.to_owned(),
            agent_id: "a".into(),
            session_id: session_id.to_owned(),
            kind: FileKind::Primary,
            meta: FileMeta { dev: 1, ino: 2, size: 3, mtime_ns: 4_000_000, ctime_ns: 5 },
            span: None,
        }
    }

    /// An entry that names its transcript (`sessionFile`) finds that file through an index,
    /// before and after a cold build: walking the agent's files cost 5-10 ms of each append.
    #[test]
    fn files_named_by_an_entry_are_found_through_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity { state_dir: dir.path().join("state"), max_line_bytes: 1 << 20 };
        let mut index = Index::open(Some(dir.path()), &identity).unwrap();
        let plan = |index: &Index| -> String {
            let mut st =
                index.conn().prepare(&format!("EXPLAIN QUERY PLAN SELECT id {FILES_NAMED}")).unwrap();
            let rows = st.query_map(["a", "x", "y"], |r| r.get::<_, String>(3)).unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
        };
        assert!(plan(&index).contains("files_name"), "{}", plan(&index));
        assert!(index.begin_bulk().unwrap());
        index.end_bulk().unwrap();
        // Made once the cold build's answer is out, or by the next open.
        assert!(!plan(&index).contains("files_name"), "before its answer: {}", plan(&index));
        index.end_late().unwrap();
        assert!(plan(&index).contains("files_name"), "after a cold build: {}", plan(&index));
        assert!(index.begin_bulk().unwrap());
        index.end_bulk().unwrap();
        drop(index);
        let index = Index::open(Some(dir.path()), &identity).unwrap();
        assert!(plan(&index).contains("files_name"), "opened after a cold build cut short: {}", plan(&index));
    }

    /// The default page reads its index alone (no table row, no rollup beside it), after a
    /// cold build too, and a database made with the old order index gets the new one.
    #[test]
    fn the_default_page_is_read_from_its_index_alone() {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity { state_dir: dir.path().join("state"), max_line_bytes: 1 << 20 };
        let mut index = Index::open(Some(dir.path()), &identity).unwrap();
        let agents = ["a".to_owned(), "b".to_owned()];
        let plan = |index: &Index, start_ms: i64| -> String {
            let q = PageQuery {
                agents: &agents,
                start_ms,
                heads_only: false,
                entries_only: false,
                search: &[],
                ascending: false,
                limit: 10,
                offset: 0,
            };
            let (sql, args) = q.sql("id, generation, entry_hash, updated_at");
            let mut st =
                index.conn().prepare(&format!("EXPLAIN QUERY PLAN {sql} ORDER BY updated_at DESC")).unwrap();
            let rows =
                st.query_map(rusqlite::params_from_iter(args.iter()), |r| r.get::<_, String>(3)).unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
        };
        for start in [0, 5] {
            assert!(plan(&index, start).contains("COVERING INDEX files_page"), "{}", plan(&index, start));
        }
        assert!(index.begin_bulk().unwrap());
        index.end_bulk().unwrap();
        assert!(
            plan(&index, 0).contains("COVERING INDEX files_page"),
            "after a cold build: {}",
            plan(&index, 0)
        );
        index
            .conn()
            .execute_batch(
                "DROP INDEX files_page;
                 CREATE INDEX files_order ON files(updated_at DESC, mtime_ms DESC, file_name);",
            )
            .unwrap();
        drop(index);
        let index = Index::open(Some(dir.path()), &identity).unwrap();
        assert!(plan(&index, 0).contains("COVERING INDEX files_page"), "reopened: {}", plan(&index, 0));
        let old: i64 = index
            .conn()
            .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'files_order'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(old, 0, "the old order index is dropped");
    }

    /// A key added before others (as a new key sorts into an OpenClaw database's nodes, or a
    /// key leaves the start of a `sessions.json`) moves every entry after it: only its own
    /// session is touched, the others keep their data and take their new positions.
    #[test]
    fn entries_after_a_new_key_move_without_being_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity { state_dir: dir.path().join("state"), max_line_bytes: 1 << 20 };
        let mut index = Index::open(Some(dir.path()), &identity).unwrap();
        let before: Vec<StoreEntry> = (1..=4).map(|k| entry((k, k, Some(1), None, false))).collect();
        index.batch(|i| i.replace_entries("a", &mut before.clone().into_iter())).unwrap();
        let mut after = vec![entry((0, 0, Some(1), None, false))];
        after.extend(before.iter().cloned());
        let touched = index.batch(|i| i.replace_entries("a", &mut after.clone().into_iter())).unwrap();
        assert_eq!(touched.sessions.iter().map(String::as_str).collect::<Vec<_>>(), ["s0"]);
        let ords: Vec<(String, i64)> = index
            .conn()
            .prepare("SELECT key, ord FROM entries ORDER BY key")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let want: Vec<(String, i64)> =
            after.iter().enumerate().map(|(i, e)| (e.key.clone(), i as i64)).collect();
        assert_eq!(ords, want);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Entries written again in another order (reversed or rotated), one gone and one added
        /// or changed: every file whose entry that changes is touched, and the index then finds
        /// what a fresh one does.
        #[test]
        fn entries_written_again_find_what_a_fresh_index_finds(
            before in proptest::collection::vec(
                (0u8..6, 0u8..5, proptest::option::of(-2i8..3), proptest::option::of(0u8..4), any::<bool>()),
                0..16,
            ),
            reverse in any::<bool>(),
            rotate in 0usize..16,
            gone in proptest::option::of(0usize..16),
            added in proptest::option::of(
                (0u8..8, 0u8..5, proptest::option::of(-2i8..3), proptest::option::of(0u8..4), any::<bool>()),
            ),
        ) {
            let mut after = before.clone();
            if reverse {
                after.reverse();
            }
            if !after.is_empty() {
                let n = after.len();
                after.rotate_left(rotate % n);
            }
            if let Some(i) = gone.filter(|i| *i < after.len()) {
                after.remove(i);
            }
            if let Some(a) = added {
                after.insert(rotate % (after.len() + 1), a);
            }
            let open = |name: &str| {
                let dir = tempfile::tempdir().unwrap();
                let identity = Identity { state_dir: dir.path().join(name), max_line_bytes: 1 << 20 };
                (Index::open(Some(dir.path()), &identity).unwrap(), dir)
            };
            let (mut index, _d1) = open("one");
            let (mut fresh, _d2) = open("two");
            let before: Vec<StoreEntry> = before.into_iter().map(entry).collect();
            let after: Vec<StoreEntry> = after.into_iter().map(entry).collect();
            let files: Vec<Discovered> = (0..6)
                .flat_map(|sid| {
                    let id = format!("s{sid}");
                    [disc(&id, &format!("{id}.jsonl")), disc(&id, &format!("f{}.jsonl", sid % 4))]
                })
                .collect();
            let found = |index: &Index, d: &Discovered| {
                let e = entry_for_file(index.conn(), "a", &d.session_id, &d.file_name).unwrap();
                e.map(|e| EntryFacts::of(&e))
            };
            index.batch(|i| i.replace_entries("a", &mut before.into_iter())).unwrap();
            let was: Vec<_> = files.iter().map(|d| found(&index, d)).collect();
            let touched = index.batch(|i| i.replace_entries("a", &mut after.clone().into_iter())).unwrap();
            fresh.batch(|i| i.replace_entries("a", &mut after.into_iter())).unwrap();
            for (d, was) in files.iter().zip(was) {
                let now = found(&index, d);
                prop_assert_eq!(&now, &found(&fresh, d));
                if now != was {
                    prop_assert!(
                        touched.all
                            || touched.sessions.contains(&d.session_id)
                            || touched.file_names.contains(&d.file_name),
                        "{} {} changed untouched", d.session_id, d.file_name
                    );
                }
            }
        }

        /// The memo a cold build's parsers read stands for the entries table exactly: the same
        /// entry (or none) for every file, with keys repeated, sessions shared by several keys,
        /// ties and missing `updatedAt`, and explicit `sessionFile` names.
        #[test]
        fn the_memo_finds_the_entry_the_index_finds(
            raw in proptest::collection::vec(
                (0u8..6, 0u8..5, proptest::option::of(-2i8..3), proptest::option::of(0u8..4), any::<bool>()),
                0..24,
            )
        ) {
            let dir = tempfile::tempdir().unwrap();
            let identity = Identity { state_dir: dir.path().join("state"), max_line_bytes: 1 << 20 };
            let mut index = Index::open(Some(dir.path()), &identity).unwrap();
            let entries: Vec<StoreEntry> = raw.into_iter().map(entry).collect();
            let memo = EntryMemo::of("a", &entries);
            index.batch(|i| i.replace_entries("a", &mut entries.clone().into_iter())).unwrap();
            for sid in 0..6 {
                for name in ["s{sid}.jsonl".replace("{sid}", &sid.to_string()), format!("f{}.jsonl.reset.x", sid % 5)] {
                    let d = disc(&format!("s{sid}"), &name);
                    let from_db = entry_for_file(index.conn(), "a", &d.session_id, &d.file_name).unwrap();
                    let from_db = from_db.map(|e| EntryFacts::of(&e));
                    prop_assert_eq!(memo.entry_for_file(&d.session_id, &d.file_name), from_db.as_ref());
                    prop_assert_eq!(index.facts_for(&d, Some(&memo)).unwrap(), index.facts_for(&d, None).unwrap());
                }
            }
        }
    }
}
