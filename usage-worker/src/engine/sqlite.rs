//! OpenClaw 2026.7+ stores: one SQLite database per agent, read live and read-only (the layout
//! is in docs/usage-engine.md).
//!
//! An agent with `<stateDir>/agents/<id>/agent/openclaw-agent.sqlite` is read from that database
//! and its legacy `sessions/` files are ignored (after `openclaw doctor --session-sqlite import`
//! they are archived copies of what the database holds). Each session (a `session_windows`
//! instance with `transcript_events` rows) becomes one [`Discovered`] whose path is OpenClaw's
//! own `sessionFile` for it, `sqlite:<agentId>:<sessionId>:<db path>`, and whose rollup is built
//! by the same line parser and [`FileRollup`] as a JSONL file: each event row is the JSON of one
//! transcript line. `session_nodes` (with `session_windows` filling the gaps) stands in for
//! `sessions.json`, and `previous_session_id` links a key's instances into a usage family.
//!
//! Incremental reads: a session's checkpoint is the last `seq` read, the rows counted up to it, a
//! watermark (a hash of the session, its `transcript_rewrite_watermarks` generation and that
//! seq) and an anchor (a hash of the last row as stored). The next read resumes after that seq
//! when all still hold, and re-reads the whole session when rows were rewritten or deleted (count
//! mismatch, max seq shrank, a new generation, a changed last row; a row rewritten in place
//! while count, max seq, generation and window all stay put is noticed at the session's next
//! change, as listing looks at no row contents). [`SqliteCheckpoint`] is
//! stored in the rollup's plain [`Checkpoint`] (see [`SqliteCheckpoint::encode`]), so it persists
//! with the rollup and the engine's stat comparison finds unchanged sessions unchanged.
//!
//! Listing is cheap when nothing changed: the database and WAL file stats are compared first,
//! and only a changed database is queried (one short read transaction: per-session row counts
//! from the primary-key index, windows, nodes, generations). Rows are read in slices of
//! [`SLICE_ROWS`], one read transaction each, so OpenClaw's WAL checkpoints are never held back
//! for long. A database that cannot be opened, is corrupt or has an unknown schema is skipped and
//! reported for that agent only; an undecodable or oversized row is skipped and counted.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::ffi::c_int;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use foldhash::{HashMap, HashMapExt, HashSet};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::discover::{Discovered, FileKind, FileMeta};
use super::payload::Diagnostics;
use super::rollup::{Checkpoint, FileRollup, SkipCounts, fold_if_tool_result, fold_line};
use super::sqlite_schema::{self, RowDecoder, RowSkip, SqliteError};
use super::stepper::Stepper;
use super::store::{self, StoreEntry};
use super::{JobResult, Old};

/// The database of an agent, relative to its agent directory.
pub const DB_RELATIVE: &str = "agent/openclaw-agent.sqlite";
/// The "device" of a SQLite session's [`FileMeta`] and [`Checkpoint`]: no filesystem has it, so
/// the engine's rename-following (by device and inode) never mistakes a session for a file.
pub const SQLITE_DEV: u64 = u64::MAX;
/// Rows read per read transaction.
pub const SLICE_ROWS: i64 = 512;
/// How often (in rows) a read looks at the cancel flag.
const CANCEL_EVERY: u64 = 64;
/// A database whose files changed this recently is queried again on the next call even if its
/// stats look unchanged: a commit in the same timestamp tick would not move them.
const RACY_NS: i128 = 2_000_000_000;

/// Where an agent's database lives.
pub fn db_path(state_dir: &Path, agent: &str) -> PathBuf {
    state_dir.join("agents").join(agent).join(DB_RELATIVE)
}

/// Whether a discovered transcript is a SQLite session.
pub fn is_session(d: &Discovered) -> bool {
    d.meta.dev == SQLITE_DEV
}

/// The database a SQLite session is read from.
pub fn db_of_session(d: &Discovered) -> Option<&Path> {
    db_of(d)
}

/// OpenClaw 2026.9's `sessionFile` for a SQLite session.
pub fn session_path(agent: &str, session_id: &str, db: &Path) -> PathBuf {
    // Pushed, not `format!`ed: a listing makes one per session (`to_string_lossy` is what
    // `display` writes).
    let db = db.to_string_lossy();
    let mut p = String::with_capacity(9 + agent.len() + session_id.len() + db.len());
    for part in ["sqlite:", agent, ":", session_id, ":", &db] {
        p.push_str(part);
    }
    PathBuf::from(p)
}

/// The database path inside a session path (`sqlite:<agent>:<session id>:<database>`). Cut
/// in place: grouping a cold agent's sessions by database asks it of each.
fn db_of(d: &Discovered) -> Option<&Path> {
    let rest = d.path.to_str()?.strip_prefix("sqlite:")?.strip_prefix(d.agent_id.as_str())?;
    let rest = rest.strip_prefix(':')?.strip_prefix(d.session_id.as_str())?.strip_prefix(':')?;
    Some(Path::new(rest))
}

/// FNV-1a continued from `h`, stable across builds (checkpoints persist).
fn fnv1a(h: u64, bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut x = fnv::FnvHasher::with_key(h);
    x.write(bytes);
    x.finish()
}

/// FNV-1a's offset basis.
const FNV_SEED: u64 = 0xcbf2_9ce4_8422_2325;

/// Identity of "this session, at this rewrite generation, read up to this seq".
fn watermark(path: &Path, generation: Option<&str>, last_seq: i64) -> u64 {
    let mut h = fnv1a(FNV_SEED, path.as_os_str().as_encoded_bytes());
    h = fnv1a(h, &[0xff]);
    if let Some(g) = generation {
        h = fnv1a(fnv1a(h, &[1]), g.as_bytes());
    }
    fnv1a(h, &last_seq.to_le_bytes())
}

/// Hash of a row as stored (either column), so an in-place rewrite of the last row read shows.
fn row_anchor(seq: i64, json: Option<&[u8]>, zstd: Option<&[u8]>) -> u64 {
    let h = fnv1a(FNV_SEED, &seq.to_le_bytes());
    let h = fnv1a(fnv1a(h, &[u8::from(json.is_some())]), json.unwrap_or_default());
    fnv1a(fnv1a(h, &[u8::from(zstd.is_some())]), zstd.unwrap_or_default())
}

/// Where the next incremental read of a session starts, and how to tell nothing moved under it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SqliteCheckpoint {
    /// The last `seq` read.
    pub last_seq: i64,
    /// Rows read, i.e. rows with `seq <= last_seq` when read.
    pub rows: u64,
    /// [`watermark`] of the session at its generation and `last_seq`.
    pub watermark: u64,
    /// `transcript_updated_at` (else `updated_at`) of the session's window, epoch ms.
    pub updated_ms: i64,
    /// [`row_anchor`] of the row at `last_seq`.
    pub anchor: u64,
}

impl SqliteCheckpoint {
    /// The rollup's checkpoint form: `dev` [`SQLITE_DEV`], `ino` the watermark, `size` the rows,
    /// `mtime_ns` the update time, `offset` the last seq (two's complement), `anchor` the anchor.
    pub fn encode(&self) -> Checkpoint {
        Checkpoint {
            dev: SQLITE_DEV,
            ino: self.watermark,
            size: self.rows,
            mtime_ns: i128::from(self.updated_ms) * 1_000_000,
            ctime_ns: 0,
            offset: self.last_seq as u64,
            anchor: self.anchor,
        }
    }

    /// Inverse of [`Self::encode`]; `None` for a file's checkpoint or an empty read.
    pub fn decode(cp: &Checkpoint) -> Option<SqliteCheckpoint> {
        (cp.dev == SQLITE_DEV && cp.size > 0).then(|| SqliteCheckpoint {
            last_seq: cp.offset as i64,
            rows: cp.size,
            watermark: cp.ino,
            updated_ms: i64::try_from(cp.mtime_ns.div_euclid(1_000_000)).unwrap_or(0),
            anchor: cp.anchor,
        })
    }

    /// The stat-like facts listing compares with, equal to the checkpoint's exactly when the
    /// session is as it was read.
    fn meta(&self) -> FileMeta {
        let cp = self.encode();
        FileMeta { dev: cp.dev, ino: cp.ino, size: cp.size, mtime_ns: cp.mtime_ns, ctime_ns: cp.ctime_ns }
    }
}

/// Stats of the database and its WAL: equal stats, same content (outside the racy window).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct DbStamp {
    db: (u64, u64, u64, i128),
    wal: Option<(u64, u64, u64, i128)>,
}

fn stat_of(m: &fs::Metadata) -> (u64, u64, u64, i128) {
    let f = FileMeta::of(m);
    (f.dev, f.ino, f.size, f.mtime_ns)
}

impl DbStamp {
    fn of(db: &Path) -> Option<DbStamp> {
        let m = fs::metadata(db).ok().filter(fs::Metadata::is_file)?;
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        Some(DbStamp { db: stat_of(&m), wal: fs::metadata(PathBuf::from(wal)).ok().map(|m| stat_of(&m)) })
    }

    fn newest_ns(&self) -> i128 {
        self.db.3.max(self.wal.map_or(i128::MIN, |w| w.3))
    }
}

fn now_ns() -> i128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128)
}

/// What the engine remembers of one agent's database between calls (and, through the index,
/// between worker runs: see [`Databases::confirm`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentDb {
    stamp: DbStamp,
    racy: bool,
    /// Hash of the entries the nodes stood for ([`session_entries`]): unchanged, they are not
    /// applied again.
    index_hash: u64,
    /// Windows when last listed: their number (a change lists everything) and newest update.
    windows: (i64, i64),
    /// `session_nodes`: their number and newest update time.
    nodes: (i64, i64),
    /// Labelled nodes: their number and the labels' bytes (OpenClaw sets a label without a new
    /// update time). `None` in a state saved by an earlier version: the index is rebuilt.
    #[serde(default)]
    labels: Option<(i64, i64)>,
    /// The newest `transcript_events` rowid: rows appended since have larger ones.
    max_rowid: i64,
    /// The newest `updated_at` of `transcript_rewrite_watermarks` when they were last looked
    /// at: OpenClaw rotates a session's generation with `updated_at` set to the time it does
    /// so, so the sessions rewritten since are those past it.
    rewrites_at: i64,
    /// The newest window's `created_at`: windows created since, as many as the count grew, are
    /// windows added with none removed. `None` in a state saved by an earlier version.
    #[serde(default)]
    windows_created: Option<i64>,
    /// When everything was last listed (epoch ms): at least every [`FULL_EVERY_MS`] it is again,
    /// whatever the update times say.
    full_at_ms: i64,
    /// The last listing looked only at what the signatures showed: once [`FULL_EVERY_MS`] has
    /// passed, the database is listed completely even if its files did not move since, so an
    /// edit no signature shows is found without waiting for the next write.
    #[serde(default)]
    partial: bool,
    /// The last listing did not look at labels and rewrite generations (each a walk of a whole
    /// table or index: [`DEEP_ON_CALLS_MAX`]): the worker looks at them when idle.
    #[serde(default)]
    deep_behind: bool,
    /// The last listing found windows removed on an agent too large for a call to list
    /// completely ([`DEEP_ON_CALLS_MAX`]), and listed only the rows appended since: the worker
    /// lists it completely when idle (a call does once [`FULL_EVERY_MS`] have passed).
    #[serde(default)]
    relist_behind: bool,
}

/// Longest time between two complete listings of a database that keeps changing.
const FULL_EVERY_MS: i64 = 30_000;

/// Session nodes or windows up to which a call's listing also looks at labels and rewrite
/// generations ([`Deep`]); past it, the worker does when idle ([`Databases::due`]), so that an
/// append costs what it touches, not the size of its agent. Both walk a whole index or table:
/// on one agent of 54,000 sessions they were ~23 ms of a ~34 ms append. A label set or a
/// session rewritten in place on such an agent shows from the first idle moment after it (the
/// worker is idle a second after a call), not in the call right after.
#[cfg_attr(test, allow(dead_code))]
const DEEP_ON_CALLS_MAX: usize = SLICED_OVER;

/// Sessions rewritten since the last look past which the database is listed completely (two
/// in unit tests).
const ROTATED_MAX: usize = if cfg!(test) { 2 } else { 1024 };

/// What [`Databases::list`] found.
#[derive(Debug)]
pub enum Listing {
    /// The agent has no database: read its legacy files.
    NoDatabase,
    /// Nothing changed since the last listing.
    Unchanged,
    /// The database cannot be read; its sessions count as absent (reported in diagnostics).
    Failed,
    /// Every session, and the entries of the `sessions.json` the database's session nodes
    /// stand for (`None` when unchanged).
    Changed { listed: Vec<Discovered>, entries: Option<Entries> },
    /// A complete listing of a database too large to hold at once ([`SLICED_OVER`]): its
    /// entries are written as [`Databases::stream_entries`] builds them, then its sessions
    /// listed a slice at a time ([`Databases::next_sessions`]).
    Sliced(Slices),
    /// The sessions updated since the last listing (others are as they were); the whole session
    /// index, or `patch`: the entries of the nodes updated since (the others are as they were).
    /// `stream`: the whole index changed and is too large to hold: written as
    /// [`Databases::stream_entries`] builds it. `added`: how many of the patch's keys are new
    /// (nodes added since, none removed).
    Some {
        listed: Vec<Discovered>,
        entries: Option<Entries>,
        patch: Option<Entries>,
        stream: bool,
        added: usize,
    },
}

/// Session nodes or windows past which a complete listing is not held at once
/// ([`Listing::Sliced`]): one agent of 200,000 sessions held 329 MiB of nodes, windows and
/// entries beside its session list. At or below it they are held together, and the entries are
/// made on a second thread while the session list is read.
#[cfg_attr(test, allow(dead_code))]
const SLICED_OVER: usize = super::MEMO_MAX;

#[cfg(test)]
thread_local! {
    /// Tests: [`SLICED_OVER`] of the engines made on this thread (small, so that most test
    /// stores take the sliced way; tests of both ways set it).
    pub static SLICED_OVER_TEST: std::cell::Cell<usize> = const { std::cell::Cell::new(2) };
    /// Tests: [`DEEP_ON_CALLS_MAX`] of the engines made on this thread (every test store is
    /// looked at on calls unless a test sets it).
    pub static DEEP_ON_CALLS_TEST: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}

/// The rest of a complete listing of a database too large to hold whole: its sessions, a
/// slice at a time in session id order ([`Databases::next_sessions`]).
#[derive(Debug)]
pub struct Slices {
    db: PathBuf,
    agent: String,
    /// The last session id listed.
    after: Option<String>,
    done: bool,
}

impl Slices {
    /// The path of the last session listed, if any: what the next slice comes after. Paths
    /// sort as their session ids unless one id is another's prefix followed by a byte below
    /// `:`; such a session at a slice's end is followed as a rename, as a directory's would be.
    pub fn last_path(&self) -> Option<PathBuf> {
        self.after.as_deref().map(|id| session_path(&self.agent, id, &self.db))
    }

    /// Whether the last slice was listed.
    pub fn done(&self) -> bool {
        self.done
    }
}

/// Entries parsed from the `sessions.json` text a database's nodes stand for (parsed with the
/// listing, so that a listing made on another thread leaves only the writing to the engine).
pub type Entries = Result<Vec<StoreEntry>, String>;

/// The SQLite side of the engine: per-agent database listings.
#[derive(Debug)]
pub struct Databases {
    agents: HashMap<String, AgentDb>,
    /// What a listing found, until the engine has applied it ([`Databases::confirm`]).
    pending: HashMap<String, AgentDb>,
    /// The last error of each unreadable database, so a persisting one is logged once.
    failing: HashMap<String, String>,
    /// One listing connection per database, kept between calls: opening one parses OpenClaw's
    /// schema, ~1 ms of an append's ~10 ms answer. It holds no transaction between listings.
    held: HashMap<String, Pooled>,
    /// [`FULL_EVERY_MS`]; tests shorten it.
    full_every_ms: i64,
    /// Whole session indexes rebuilt between complete listings (tests: a turn patches entries).
    pub index_rebuilds: u64,
    /// Complete listings made (tests).
    pub complete_listings: u64,
    /// Complete listings made in slices (tests).
    pub sliced_listings: u64,
    /// [`SLICED_OVER`]; tests set it.
    sliced_over: usize,
    /// [`DEEP_ON_CALLS_MAX`]; tests set it.
    deep_on_calls: usize,
    /// Listing while idle ([`Databases::set_idle`]): labels and rewrites are looked at.
    idle: bool,
    /// No idle moment follows a listing ([`Databases::set_one_shot`]).
    one_shot: bool,
}

impl Default for Databases {
    fn default() -> Databases {
        Databases {
            agents: HashMap::new(),
            pending: HashMap::new(),
            failing: HashMap::new(),
            held: HashMap::new(),
            full_every_ms: FULL_EVERY_MS,
            index_rebuilds: 0,
            complete_listings: 0,
            sliced_listings: 0,
            #[cfg(not(test))]
            sliced_over: SLICED_OVER,
            #[cfg(test)]
            sliced_over: SLICED_OVER_TEST.get(),
            #[cfg(not(test))]
            deep_on_calls: DEEP_ON_CALLS_MAX,
            #[cfg(test)]
            deep_on_calls: DEEP_ON_CALLS_TEST.get(),
            idle: false,
            one_shot: false,
        }
    }
}

/// Page cache of a listing connection, KiB: listings read the ends of indexes, and the session
/// tables once per complete listing; nothing is gained by keeping those pages.
const LISTING_CACHE_KIB: i64 = 256;
/// Listing connections held at most (each holds its cache and OpenClaw's parsed schema): a
/// state dir with more agent databases than this opens the others per call.
const HELD_MAX: usize = 16;

impl Databases {
    /// Forgets what was listed of `agent`: the next call lists it again.
    pub fn forget(&mut self, agent: &str) {
        self.agents.remove(agent);
        self.pending.remove(agent);
        self.held.remove(agent);
    }

    /// Lists every database completely when its last complete listing is `ms` old (tests).
    #[cfg(test)]
    pub fn set_full_every_ms(&mut self, ms: i64) {
        self.full_every_ms = ms;
    }

    /// The listing connection to `agent`'s database `db`: the held one while it is still valid
    /// (see [`Pooled::valid`]), else a new one.
    fn connection(&mut self, agent: &str, db: &Path) -> Result<&Connection, SqliteError> {
        let file = file_id(db).ok_or_else(|| SqliteError::CannotOpen(format!("{} is gone", db.display())))?;
        if self.held.get(agent).is_some_and(|p| !p.valid(db, file)) {
            self.held.remove(agent);
        }
        if !self.held.contains_key(agent) {
            if self.held.len() >= HELD_MAX
                && let Some(other) = self.held.keys().next().cloned()
            {
                self.held.remove(&other);
            }
            let immutable = sqlite_schema::opens_immutable(db);
            let conn = sqlite_schema::open_as(db, immutable)?;
            conn.pragma_update(None, "cache_size", -LISTING_CACHE_KIB)?;
            self.held.insert(agent.to_owned(), Pooled { db: db.to_owned(), conn, immutable, file });
        }
        Ok(&self.held[agent].conn)
    }

    /// Makes every last complete listing `ms` older (tests: instead of waiting for one to be due).
    #[cfg(test)]
    pub fn age_listings(&mut self, ms: i64) {
        for a in self.agents.values_mut() {
            a.full_at_ms -= ms;
        }
    }

    /// Listing connections held now (tests).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Whether `agent`'s database was listed (or restored) in this process.
    pub fn knows(&self, agent: &str) -> bool {
        self.agents.contains_key(agent)
    }

    /// A patch of `agent`'s entries could not be applied (a key it does not know): the listing
    /// is dropped and the next one is complete.
    pub fn relist(&mut self, agent: &str) {
        self.pending.remove(agent);
        if let Some(a) = self.agents.get_mut(agent) {
            a.racy = true;
            a.full_at_ms = i64::MIN / 2;
        }
    }

    /// Agents whose database changed since its last complete listing, which is now
    /// [`FULL_EVERY_MS`] old, or whose labels and rewrites the last listing did not look at
    /// ([`DEEP_ON_CALLS_MAX`]): the worker lists them when idle ([`Databases::set_idle`]), so
    /// that a call does not pay for it.
    pub fn due(&self) -> Vec<String> {
        let now = now_ms();
        let mut due: Vec<String> = self
            .agents
            .iter()
            .filter(|(_, a)| {
                a.deep_behind || a.relist_behind || (a.partial && now - a.full_at_ms >= self.full_every_ms)
            })
            .map(|(agent, _)| agent.clone())
            .collect();
        due.sort_unstable();
        due
    }

    /// Listings made from now on are the idle ones ([`Databases::due`]): they look at labels
    /// and rewrites whatever the size of the agent.
    pub fn set_idle(&mut self, idle: bool) {
        self.idle = idle;
    }

    /// No idle moment follows a listing (a worker serving one command): every listing looks as
    /// an idle one does, and a complete listing that is due is made by the call, whether or not
    /// listings by signatures came since.
    pub fn set_one_shot(&mut self, one_shot: bool) {
        self.one_shot = one_shot;
    }

    /// What a previous worker saved of `agent`'s database (its last applied listing).
    pub fn restore(&mut self, agent: &str, saved: &[u8]) {
        if let Ok(a) = rmp_serde::from_slice::<AgentDb>(saved) {
            self.agents.entry(agent.to_owned()).or_insert(a);
        }
    }

    /// The listing of `agent` is applied to the index: it is the base of the next one. Returns
    /// it serialised, for the index to keep across restarts.
    pub fn confirm(&mut self, agent: &str) -> Option<Vec<u8>> {
        let a = self.pending.remove(agent)?;
        let saved = rmp_serde::to_vec(&a).ok();
        self.agents.insert(agent.to_owned(), a);
        saved
    }

    /// Lists the sessions of `agent` if it has a database and it changed since last listed.
    pub fn list(&mut self, state_dir: &Path, agent: &str, diag: &mut Diagnostics) -> Listing {
        let db = db_path(state_dir, agent);
        let Some(stamp) = DbStamp::of(&db) else {
            // No database (any more): list the legacy files.
            self.forget(agent);
            return Listing::NoDatabase;
        };
        let now = now_ms();
        if let Some(known) = self.agents.get(agent)
            && known.stamp == stamp
            && !known.racy
            && !(known.partial && now - known.full_at_ms >= self.full_every_ms)
            && !((self.idle || self.one_shot) && (known.deep_behind || known.relist_behind))
        {
            return Listing::Unchanged;
        }
        let racy = now_ns() - stamp.newest_ns() < RACY_NS;
        let abs = absolute(&db);
        let known = self.agents.get(agent).cloned();
        let (full_every, over) = (self.full_every_ms, self.sliced_over);
        let (idle, one_shot) = (self.idle || self.one_shot, self.one_shot);
        let deep_over = if idle { usize::MAX } else { self.deep_on_calls };
        let result = self.connection(agent, &abs).and_then(|conn| {
            // By signatures unless a complete listing is due: one is when the last was
            // [`FULL_EVERY_MS`] ago and listings by signatures came since. The first change after
            // a quiet spell is listed by signatures too (the worker lists it completely when idle,
            // a second later): listing everything then cost the first append on an agent of
            // 200,000 sessions ~10 s.
            let partial = match &known {
                Some(k)
                    if (now - k.full_at_ms < full_every || !(k.partial || one_shot))
                        && !(idle && k.relist_behind) =>
                {
                    since(conn, &abs, agent, k, over, deep_over)?
                }
                _ => None,
            };
            match partial {
                Some(s) => {
                    let added = s.patch.as_ref().map_or(0, |(_, added)| *added);
                    let listing = Listing::Some {
                        listed: s.listed,
                        entries: s.entries.map(Ok),
                        patch: s.patch.map(|(p, _)| Ok(p)),
                        stream: s.stream,
                        added,
                    };
                    Ok((listing, s.state, false))
                }
                None => snapshot(conn, &abs, agent, known.as_ref().map(|k| k.index_hash), over)
                    .map(|(listing, state)| (listing, state, true)),
            }
        });
        match result {
            Ok((listing, mut state, full)) => {
                self.index_rebuilds += u64::from(matches!(
                    listing,
                    Listing::Some { entries: Some(_), .. } | Listing::Some { stream: true, .. }
                ));
                self.complete_listings += u64::from(full);
                self.sliced_listings += u64::from(matches!(listing, Listing::Sliced(_)));
                state.stamp = stamp;
                state.racy = racy;
                state.partial = !full;
                if full {
                    state.full_at_ms = now;
                } else if let Some(k) = &known {
                    state.full_at_ms = k.full_at_ms;
                }
                self.pending.insert(agent.to_owned(), state);
                if self.failing.remove(agent).is_some() {
                    tracing::info!(agent, db = %db.display(), "agent database readable again");
                }
                listing
            }
            Err(e) => {
                self.failed(agent, &db, &e, diag);
                Listing::Failed
            }
        }
    }

    /// `agent`'s database `db` could not be read: what was listed of it is forgotten (the next
    /// call lists it again) and the error reported (logged once while it persists).
    pub fn failed(&mut self, agent: &str, db: &Path, e: &SqliteError, diag: &mut Diagnostics) {
        self.forget(agent);
        let msg = format!("{}: {e}", db.display());
        if self.failing.get(agent) != Some(&msg) {
            tracing::warn!(agent, db = %db.display(), error = %e, "skipping an unreadable agent database");
            self.failing.insert(agent.to_owned(), msg.clone());
        }
        diag.unreadable_databases += 1;
        diag.error(msg);
    }

    /// Builds the entries of all of `agent`'s session nodes in key order, handing each to `put`
    /// (for a [`Listing::Sliced`], or a [`Listing::Some`] to `stream`): what is held is one node
    /// and its windows' ids at a time. Their hash is the listing's, as [`session_entries`]
    /// makes it.
    pub fn stream_entries(
        &mut self,
        state_dir: &Path,
        agent: &str,
        put: &mut dyn FnMut(StoreEntry),
    ) -> Result<(), SqliteError> {
        let db = absolute(&db_path(state_dir, agent));
        self.connection(agent, &db)?;
        let mut pooled = self.held.remove(agent);
        // The nodes are read and their entries built on a second thread while this one writes
        // them: a core the parsers leave idle between two agents.
        let made = std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<StoreEntry>(256);
            let lent = &mut pooled;
            let reader =
                std::thread::Builder::new().name("usage-entries".into()).spawn_scoped(scope, move || {
                    let conn = &lent.as_ref().expect("held by connection()").conn;
                    // The writer never leaves early, so every send is received.
                    stream_node_entries(conn, &mut |e| drop(tx.send(e)))
                });
            let reader = reader.ok()?;
            for e in rx {
                put(e);
            }
            Some(reader.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        });
        let pooled = pooled.expect("held by connection()");
        // No thread to be had: read here.
        let hash = made.unwrap_or_else(|| stream_node_entries(&pooled.conn, put));
        self.held.insert(agent.to_owned(), pooled);
        let hash = hash?;
        if let Some(p) = self.pending.get_mut(agent) {
            p.index_hash = hash;
        }
        Ok(())
    }

    /// The next slice of a [`Listing::Sliced`]: about `n` sessions, each as [`snapshot`] lists
    /// it, in one read transaction of its own (a session that changes between two slices is
    /// listed as it is then; the next listing looks again).
    pub fn next_sessions(&mut self, s: &mut Slices, n: usize) -> Result<Vec<Discovered>, SqliteError> {
        let conn = self.connection(&s.agent, &s.db)?;
        let tx = conn.unchecked_transaction()?;
        let mut counts: Vec<Counted> = Vec::with_capacity(n.min(1 << 16));
        let more = {
            let mut st = match &s.after {
                Some(after) => {
                    let mut st =
                        Stepper::prepare(&tx, &format!("{COUNTS} WHERE session_id > ?1 {COUNTS_ORDER}"))?;
                    st.bind_text(1, after)?;
                    st
                }
                None => Stepper::prepare(&tx, &format!("{COUNTS} {COUNTS_ORDER}"))?,
            };
            count_sessions(&mut st, &mut counts, n)?
        };
        let (Some(first), Some(last)) = (counts.first(), counts.last()) else {
            s.done = true;
            tx.commit()?;
            return Ok(Vec::new());
        };
        let (first, last) = (first.0.clone(), last.0.clone());
        let mut updated: HashMap<String, Option<i64>> = HashMap::with_capacity(counts.len());
        {
            let mut st = tx.prepare_cached(
                "SELECT session_id, coalesce(transcript_updated_at, updated_at) FROM session_windows
                 WHERE session_id >= ?1 AND session_id <= ?2",
            )?;
            for r in st.query_map([&first, &last], |r| Ok((r.get(0)?, r.get(1)?)))? {
                let (id, u) = r?;
                updated.insert(id, u);
            }
        }
        let listed = session_list(
            &tx,
            &s.db,
            &s.agent,
            &|id| updated.get(id).copied().flatten(),
            Some((&first, &last)),
            counts,
        )?;
        tx.commit()?;
        s.after = Some(last);
        s.done = !more;
        Ok(listed)
    }

    /// `archives` but those whose session the database of `s` holds (counted once, as a
    /// complete listing in one piece does).
    pub fn not_held(
        &mut self,
        s: &Slices,
        archives: Vec<Discovered>,
    ) -> Result<Vec<Discovered>, SqliteError> {
        if archives.is_empty() {
            return Ok(archives);
        }
        let conn = self.connection(&s.agent, &s.db)?;
        let mut st = conn.prepare_cached("SELECT 1 FROM transcript_events WHERE session_id = ?1 LIMIT 1")?;
        let mut apart = Vec::new();
        for a in archives {
            if st.query_row([&a.session_id], |_| Ok(())).optional()?.is_none() {
                apart.push(a);
            }
        }
        Ok(apart)
    }
}

/// The absolute path of a database, as OpenClaw prints it in `sessionFile`.
fn absolute(db: &Path) -> PathBuf {
    std::path::absolute(db).unwrap_or_else(|_| db.to_owned())
}

/// Whether a database has more than `over` session nodes or windows: past [`SLICED_OVER`] its
/// complete listing is made in slices ([`Listing::Sliced`]).
fn too_large(sig: &Signatures, over: usize) -> bool {
    let over = i64::try_from(over).unwrap_or(i64::MAX);
    sig.nodes.0 > over || sig.windows.0 > over
}

fn now_ms() -> i64 {
    (now_ns() / 1_000_000) as i64
}

/// What a listing compares: windows and nodes (number, newest update), the newest window's
/// creation and the newest event rowid. Each is read from one end of an index, or counted from
/// the smallest index, never by walking the session tables or the events' index (walking them
/// took ~10 ms of an append's ~16 ms on a 6,600-session database: a write empties the reader's
/// page cache, so every page is read again). Labels and rewrite generations ([`Deep`]) are
/// looked at beside them on agents of up to [`DEEP_ON_CALLS_MAX`] sessions, else when idle.
/// What no signature shows between complete listings (an entry rewritten in place without a new
/// update time, as OpenClaw's `doctor` does; event rows deleted without a rewrite generation or
/// a removed window) shows at the next one, at most [`FULL_EVERY_MS`] later.
struct Signatures {
    windows: (i64, i64),
    /// The newest window's `created_at` (OpenClaw's `created_at` index).
    windows_created: i64,
    nodes: (i64, i64),
    max_rowid: i64,
}

fn signatures(tx: &Connection) -> Result<Signatures, SqliteError> {
    // One aggregate per query: SQLite answers `count(*)` from the smallest index and `max()`
    // from one end of an index, but walks a whole index or table for the two together.
    let one = |sql: &str| tx.prepare_cached(sql)?.query_row([], |r| r.get::<_, i64>(0));
    let windows = (
        one("SELECT count(*) FROM session_windows")?,
        one("SELECT coalesce(max(updated_at), 0) FROM session_windows")?,
    );
    let windows_created = one("SELECT coalesce(max(created_at), 0) FROM session_windows")?;
    let nodes = (
        one("SELECT count(*) FROM session_nodes")?,
        one("SELECT coalesce(max(updated_at), 0) FROM session_nodes")?,
    );
    let max_rowid = one("SELECT coalesce(max(rowid), 0) FROM transcript_events")?;
    Ok(Signatures { windows, windows_created, nodes, max_rowid })
}

/// Labelled nodes: their number and the labels' bytes, from OpenClaw's partial index of
/// labelled nodes (it sets a label without a new update time; a rename to another of the same
/// length shows at the next complete listing). A walk of that index.
fn labels(tx: &Connection) -> Result<(i64, i64), SqliteError> {
    Ok(tx
        .prepare_cached(
            "SELECT count(*), coalesce(sum(octet_length(label)), 0) FROM session_nodes WHERE label IS NOT NULL",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?)
}

/// The newest rewrite watermark's `updated_at` (a walk of the table: it has no index on it).
fn newest_rewrite(tx: &Connection) -> Result<i64, SqliteError> {
    Ok(tx
        .prepare_cached("SELECT coalesce(max(updated_at), 0) FROM transcript_rewrite_watermarks")?
        .query_row([], |r| r.get(0))?)
}

/// What a listing that looks deeper finds: the labels, and the sessions whose rewrite generation
/// OpenClaw rotated since the last look, with the newest `updated_at` among them.
struct Deep {
    labels: (i64, i64),
    rotated: Vec<String>,
    rewrites_at: i64,
}

/// Labels, and the sessions rotated after `since` (OpenClaw stamps a rotation with the time it
/// makes it). Strictly after: OpenClaw's schema migration stamps every session's first
/// generation with one and the same time, so "at or after" would name them all at every look.
/// A rotation committed within the millisecond of the newest one seen, after that look, shows
/// at the next complete listing (due, as this listing was not complete). `None`: more than
/// [`ROTATED_MAX`], list everything. A walk of the table.
fn deep(tx: &Connection, since: i64) -> Result<Option<Deep>, SqliteError> {
    let labels = labels(tx)?;
    let mut st = tx.prepare_cached(
        "SELECT session_id, updated_at FROM transcript_rewrite_watermarks WHERE updated_at > ?1 LIMIT ?2",
    )?;
    let (mut rotated, mut rewrites_at) = (Vec::new(), since);
    for r in st.query_map(params![since, ROTATED_MAX as i64 + 1], |r| Ok((r.get(0)?, r.get(1)?)))? {
        let (id, at): (String, i64) = r?;
        rewrites_at = rewrites_at.max(at);
        rotated.push(id);
    }
    if rotated.len() > ROTATED_MAX {
        return Ok(None);
    }
    Ok(Some(Deep { labels, rotated, rewrites_at }))
}

/// What changed in a database since its last listing.
struct Since {
    listed: Vec<Discovered>,
    entries: Option<Vec<StoreEntry>>,
    /// The entries of the nodes that changed, and how many of them are new.
    patch: Option<(Vec<StoreEntry>, usize)>,
    /// The whole index is to be streamed ([`Listing::Some`]).
    stream: bool,
    state: AgentDb,
}

/// The sessions with events appended since `known` was listed (rowids past its newest), and
/// those rewritten since when it looks deeper ([`Deep`], up to `deep_over` nodes and windows),
/// each as [`snapshot`] describes it; the entries of nodes that changed, or the whole session
/// index when those cannot be told apart (streamed past `over` nodes or windows). `Ok(None)`:
/// windows were removed, rows went back, a rewritten session has no rows left or too many were
/// rewritten: list everything.
fn since(
    conn: &Connection,
    db: &Path,
    agent: &str,
    known: &AgentDb,
    over: usize,
    deep_over: usize,
) -> Result<Option<Since>, SqliteError> {
    let tx = conn.unchecked_transaction()?;
    let sig = signatures(&tx)?;
    if sig.max_rowid < known.max_rowid {
        return Ok(None);
    }
    if !only_added(&tx, known, &sig)? {
        if !too_large(&sig, deep_over) {
            return Ok(None);
        }
        // Windows removed from an agent too large to list completely on a call (~10 s for
        // 200,000 sessions): the rows appended since are listed now, with the session index as it
        // was; what went is dropped by the complete listing the worker makes when idle.
        let appended = appended_since(&tx, known.max_rowid)?;
        let listed = describe(&tx, db, agent, appended, &[])?.unwrap_or_default();
        tx.commit()?;
        let state = AgentDb { relist_behind: true, ..known.clone() };
        return Ok(Some(Since { listed, entries: None, patch: None, stream: false, state }));
    }
    let looked = if too_large(&sig, deep_over) {
        None
    } else {
        match deep(&tx, known.rewrites_at)? {
            Some(d) => Some(d),
            None => return Ok(None),
        }
    };
    let labels = looked.as_ref().map_or(known.labels, |d| Some(d.labels));
    let mut sessions = appended_since(&tx, known.max_rowid)?;
    let rotated = looked.as_ref().map_or(&[][..], |d| &d.rotated[..]);
    sessions.extend(rotated.iter().cloned());
    let Some(listed) = describe(&tx, db, agent, sessions, rotated)? else { return Ok(None) };
    let index_changed =
        sig.nodes != known.nodes || sig.windows.1 != known.windows.1 || labels != known.labels;
    let (entries, patch, index_hash, stream) = if !index_changed {
        (None, None, known.index_hash, false)
    } else if let Some(patch) = entries_since(&tx, known, &sig, labels)? {
        // The hash of the whole index is not known any more: the next complete listing applies
        // it (entries that did not change are compared, not written).
        (None, Some(patch), 0, false)
    } else if too_large(&sig, over) {
        // Streamed by the engine, which sets the hash ([`Databases::stream_entries`]).
        (None, None, 0, true)
    } else {
        // Nodes were removed, labels changed, or too many nodes changed at once: the session
        // index is rebuilt and compared by hash.
        let (all_nodes, all_windows) = read_index(&tx)?;
        let (entries, hash) = session_entries(&all_nodes, &all_windows);
        (if hash == known.index_hash { None } else { Some(entries) }, None, hash, false)
    };
    tx.commit()?;
    let state = AgentDb {
        stamp: known.stamp,
        racy: false,
        index_hash,
        windows: sig.windows,
        nodes: sig.nodes,
        labels,
        max_rowid: sig.max_rowid,
        rewrites_at: looked.as_ref().map_or(known.rewrites_at, |d| d.rewrites_at),
        windows_created: Some(sig.windows_created),
        full_at_ms: known.full_at_ms,
        partial: true,
        deep_behind: looked.is_none(),
        relist_behind: false,
    };
    Ok(Some(Since { listed, entries, patch, stream, state }))
}

/// A session of `agent` listed with checkpoint `cp` (its rowid `span` when counted with one).
fn discovered(
    agent: &str,
    session_id: String,
    path: PathBuf,
    cp: &SqliteCheckpoint,
    span: Option<(i64, i64)>,
) -> Discovered {
    Discovered {
        path,
        file_name: session_id.clone(),
        agent_id: agent.to_owned(),
        session_id,
        kind: FileKind::Primary,
        meta: cp.meta(),
        span,
    }
}

/// The sessions with rows past `max_rowid` (appended since a listing that saw it).
fn appended_since(tx: &Connection, max_rowid: i64) -> Result<BTreeSet<String>, SqliteError> {
    // Not `DISTINCT`: SQLite would walk the whole primary-key index for it (~5 ms on 91,000
    // rows) instead of the few rows past the rowid.
    let mut st = tx.prepare_cached("SELECT session_id FROM transcript_events WHERE rowid > ?1")?;
    Ok(st.query_map([max_rowid], |r| r.get(0))?.collect::<Result<_, _>>()?)
}

/// `sessions` as [`snapshot`] lists them. A session without rows is left out (its rows went
/// since), unless it is one of `rotated`, rewritten to nothing: `None`, only a complete listing
/// drops a session.
fn describe(
    tx: &Connection,
    db: &Path,
    agent: &str,
    sessions: BTreeSet<String>,
    rotated: &[String],
) -> Result<Option<Vec<Discovered>>, SqliteError> {
    let mut counts =
        tx.prepare_cached("SELECT count(*), max(seq) FROM transcript_events WHERE session_id = ?1")?;
    let mut window = tx.prepare_cached(
        "SELECT coalesce(transcript_updated_at, updated_at) FROM session_windows WHERE session_id = ?1",
    )?;
    let mut generation =
        tx.prepare_cached("SELECT generation FROM transcript_rewrite_watermarks WHERE session_id = ?1")?;
    let mut listed = Vec::with_capacity(sessions.len());
    for session_id in sessions {
        let (rows, max_seq): (i64, Option<i64>) =
            counts.query_row([&session_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let Some(max_seq) = max_seq.filter(|_| rows > 0) else {
            if rotated.contains(&session_id) {
                return Ok(None);
            }
            continue;
        };
        let updated_ms =
            match window.query_row([&session_id], |r| r.get::<_, Option<i64>>(0)).optional()?.flatten() {
                Some(u) => u,
                None => last_created_at(tx, &session_id)?.unwrap_or(0),
            };
        let generation: Option<String> = generation.query_row([&session_id], |r| r.get(0)).optional()?;
        let path = session_path(agent, &session_id, db);
        let cp = SqliteCheckpoint {
            last_seq: max_seq,
            rows: rows as u64,
            watermark: watermark(&path, generation.as_deref(), max_seq),
            updated_ms,
            anchor: 0,
        };
        listed.push(discovered(agent, session_id, path, &cp, None));
    }
    Ok(Some(listed))
}

/// Whether the windows are those of the last listing and any created since: as many were
/// created since (`created_at` past the newest then, from OpenClaw's `created_at` index) as the
/// count grew by. A window removed (OpenClaw deletes a session's rows with it), even beside one
/// added, lists everything; so does one created with a time not past the newest then. (A state
/// saved by an earlier version knows only the count.)
fn only_added(tx: &Connection, known: &AgentDb, sig: &Signatures) -> Result<bool, SqliteError> {
    let grown = sig.windows.0 - known.windows.0;
    let Some(newest) = known.windows_created else { return Ok(grown == 0) };
    if grown < 0 {
        return Ok(false);
    }
    let created: i64 = tx
        .prepare_cached("SELECT count(*) FROM session_windows WHERE created_at > ?1")?
        .query_row([newest], |r| r.get(0))?;
    Ok(created == grown)
}

/// Past this many nodes changed since the last listing, the whole session index is rebuilt
/// instead of looking each one up.
pub const PATCH_MAX: usize = 256;

/// The entries of the nodes that changed since `known` was listed, as a `sessions.json` of
/// those keys alone: nodes updated since, and the nodes of windows updated since (a turn
/// updates both: rebuilding the whole index for it took ~80 ms of an append on a 6,600-session
/// database), and how many nodes were added (their keys are among those: the index checks that
/// exactly that many are new to it, so a node removed beside them lists everything). `None`
/// when only a complete index says what changed: fewer nodes, labels changed, an update time
/// that went back, more than [`PATCH_MAX`] nodes. What no update time shows (a window's key or
/// previous window changed in place) shows at the next complete listing, as other in-place
/// edits do.
fn entries_since(
    tx: &Connection,
    known: &AgentDb,
    sig: &Signatures,
    labels: Option<(i64, i64)>,
) -> Result<Option<(Vec<StoreEntry>, usize)>, SqliteError> {
    let Ok(added) = usize::try_from(sig.nodes.0 - known.nodes.0) else { return Ok(None) };
    if added > PATCH_MAX
        || known.labels != labels
        || sig.nodes.1 < known.nodes.1
        || sig.windows.1 < known.windows.1
    {
        return Ok(None);
    }
    let limit = PATCH_MAX as i64 + 1;
    let mut keys: BTreeSet<String> = BTreeSet::new();
    {
        let mut st =
            tx.prepare_cached("SELECT session_key FROM session_nodes WHERE updated_at > ?1 LIMIT ?2")?;
        for k in st.query_map(params![known.nodes.1, limit], |r| r.get(0))? {
            keys.insert(k?);
        }
        let mut st = tx.prepare_cached(
            "SELECT session_key, session_id FROM session_windows WHERE updated_at > ?1 LIMIT ?2",
        )?;
        let mut current =
            tx.prepare_cached("SELECT session_key FROM session_nodes WHERE current_session_id = ?1")?;
        let changed: Vec<(String, String)> = st
            .query_map(params![known.windows.1, limit], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for (key, id) in changed {
            keys.insert(key);
            for k in current.query_map([&id], |r| r.get(0))? {
                keys.insert(k?);
            }
        }
    }
    if keys.len() > PATCH_MAX {
        return Ok(None);
    }
    let mut nodes = Vec::with_capacity(keys.len());
    let mut windows: HashMap<String, Window> = HashMap::new();
    {
        let mut node =
            tx.prepare_cached(&format!("SELECT {NODE_COLUMNS} FROM session_nodes WHERE session_key = ?1"))?;
        let mut of_key = tx.prepare_cached(&format!(
            "SELECT {WINDOW_COLUMNS} FROM session_windows WHERE session_key = ?1"
        ))?;
        let mut by_id = tx
            .prepare_cached(&format!("SELECT {WINDOW_COLUMNS} FROM session_windows WHERE session_id = ?1"))?;
        for key in &keys {
            let Some(n) = node.query_row([key], node_of_row).optional()? else {
                // Gone since (with the count unchanged, another came): list everything.
                return Ok(None);
            };
            for w in of_key.query_map([key], window_of_row)? {
                let (id, w) = w?;
                windows.insert(id, w);
            }
            // The current window and the previous-instance chain, wherever their keys are.
            let mut at = Some(n.current.clone());
            let mut hops = 0;
            while let Some(id) = at.take() {
                hops += 1;
                if hops > 10_000 {
                    break;
                }
                if let Some(w) = windows.get(&id) {
                    at = w.previous.clone().filter(|p| p != &id);
                    continue;
                }
                if let Some((id, w)) = by_id.query_row([&id], window_of_row).optional()? {
                    at = w.previous.clone().filter(|p| p != &id);
                    windows.insert(id, w);
                }
            }
            nodes.push(n);
        }
    }
    Ok(Some((session_entries(&nodes, &windows).0, added)))
}

/// The columns [`window_of_row`] reads.
const WINDOW_COLUMNS: &str =
    "session_id, session_key, previous_session_id, coalesce(transcript_updated_at, updated_at),
    channel, chat_type, model_provider, model, display_name";

fn window_of_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, Window)> {
    window_at(r, 0)
}

/// [`window_of_row`] of the columns from `at` on.
fn window_at(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<(String, Window)> {
    Ok((
        r.get(at)?,
        Window {
            key: r.get(at + 1)?,
            previous: r.get(at + 2)?,
            updated_ms: r.get(at + 3)?,
            channel: r.get(at + 4)?,
            chat_type: r.get(at + 5)?,
            model_provider: r.get(at + 6)?,
            model: r.get(at + 7)?,
            display_name: r.get(at + 8)?,
        },
    ))
}

/// The columns [`node_of_row`] reads.
const NODE_COLUMNS: &str = "session_key, current_session_id, entry_json, label, updated_at";

fn node_of_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Node> {
    Ok(Node {
        key: r.get(0)?,
        current: r.get(1)?,
        entry_json: r.get(2)?,
        label: r.get(3)?,
        updated_ms: r.get(4)?,
    })
}

/// Every node and window of a database (for the session index).
fn read_index(tx: &Connection) -> Result<(Vec<Node>, HashMap<String, Window>), SqliteError> {
    let windows = tx
        .prepare(&format!("SELECT {WINDOW_COLUMNS} FROM session_windows"))?
        .query_map([], window_of_row)?
        .collect::<Result<HashMap<_, _>, _>>()?;
    let nodes = tx
        .prepare(&format!("SELECT {NODE_COLUMNS} FROM session_nodes"))?
        .query_map([], node_of_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok((nodes, windows))
}

/// One `session_windows` row, as far as usage cares.
struct Window {
    key: String,
    previous: Option<String>,
    updated_ms: Option<i64>,
    channel: Option<String>,
    chat_type: Option<String>,
    model_provider: Option<String>,
    /// The title OpenClaw shows when the node has no label (`discord:g-g6`, a derived title).
    display_name: Option<String>,
    model: Option<String>,
}

/// One `session_nodes` row.
struct Node {
    key: String,
    current: String,
    entry_json: String,
    label: Option<String>,
    updated_ms: i64,
}

/// Lists an agent's sessions and builds its session index, in one read transaction. The index
/// is `None` when its hash equals `known_index`. A database of more than `over` nodes or
/// windows is only signed here, and listed by the engine in slices ([`Listing::Sliced`]).
fn snapshot(
    conn: &Connection,
    db: &Path,
    agent: &str,
    known_index: Option<u64>,
    over: usize,
) -> Result<(Listing, AgentDb), SqliteError> {
    let tx = conn.unchecked_transaction()?;
    let sig = signatures(&tx)?;
    let mut state = AgentDb {
        stamp: DbStamp { db: (0, 0, 0, 0), wal: None },
        racy: false,
        index_hash: 0,
        windows: sig.windows,
        nodes: sig.nodes,
        labels: Some(labels(&tx)?),
        max_rowid: sig.max_rowid,
        rewrites_at: newest_rewrite(&tx)?,
        windows_created: Some(sig.windows_created),
        full_at_ms: 0,
        partial: false,
        deep_behind: false,
        relist_behind: false,
    };
    if too_large(&sig, over) {
        tx.commit()?;
        let slices = Slices { db: db.to_owned(), agent: agent.to_owned(), after: None, done: false };
        return Ok((Listing::Sliced(slices), state));
    }
    // The entries are made from the nodes on another thread while this one reads the session
    // list: the first agent's listing is the one part of a cold read no other work overlaps,
    // and this takes ~18 ms off its ~60 on 6,600 sessions.
    let (nodes, windows) = read_index(&tx)?;
    let (listed, (entries, hash)) = std::thread::scope(|scope| {
        let entries = std::thread::Builder::new()
            .name("usage-entries".into())
            .spawn_scoped(scope, || session_entries(&nodes, &windows));
        let listed = session_counts(&tx).and_then(|counts| {
            session_list(&tx, db, agent, &|id| windows.get(id).and_then(|w| w.updated_ms), None, counts)
        });
        let made = match entries {
            Ok(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            // No thread to be had: made here.
            Err(_) => session_entries(&nodes, &windows),
        };
        (listed, made)
    });
    drop(nodes);
    let mut listed = listed?;
    tx.commit()?;
    drop(windows);
    listed.sort_by(|a, b| a.file_name.cmp(&b.file_name));
    state.index_hash = hash;
    let entries = if known_index == Some(hash) { None } else { Some(Ok(entries)) };
    Ok((Listing::Changed { listed, entries }, state))
}

/// One session's events as counted: id, rows, last `seq`, and first and last rowid.
type Counted = (String, u64, i64, (i64, i64));

/// The walk [`count_sessions`] steps through, and its order ([`Databases::next_sessions`] puts
/// a lower bound between them).
const COUNTS: &str = "SELECT session_id, seq, rowid FROM transcript_events";
const COUNTS_ORDER: &str = "ORDER BY session_id, seq";

/// Each session with rows: its id, row count, last `seq` and rowid span, counted from the
/// primary-key index alone (its entries carry the rowid; sessions without rows have no
/// transcript). One walk of the index, summed here: a `GROUP BY` with `min(rowid)` and
/// `max(rowid)` beside `count(*)` and `max(seq)` cost twice the instructions.
fn session_counts(tx: &Connection) -> Result<Vec<Counted>, SqliteError> {
    let mut counts: Vec<Counted> = Vec::new();
    let mut st = Stepper::prepare(tx, &format!("{COUNTS} {COUNTS_ORDER}"))?;
    count_sessions(&mut st, &mut counts, usize::MAX)?;
    Ok(counts)
}

/// Steps `st` (a [`COUNTS`] walk) through at most `n` sessions into `counts`; whether rows of
/// another session remain.
fn count_sessions(st: &mut Stepper<'_>, counts: &mut Vec<Counted>, n: usize) -> Result<bool, SqliteError> {
    let start = counts.len();
    while st.step()? {
        let (seq, rowid) = (st.int(1)?, st.rowid(2));
        let listed = counts.len() - start;
        match counts.last_mut() {
            // Rows come by session, then by `seq`: the last one's is the session's largest.
            Some((id, rows, last_seq, (lo, hi))) if listed > 0 && st.is_text(0, id) => {
                *rows += 1;
                *last_seq = seq;
                *lo = (*lo).min(rowid);
                *hi = (*hi).max(rowid);
            }
            _ if listed == n => return Ok(true),
            _ => counts.push((st.text(0)?.to_owned(), 1, seq, (rowid, rowid))),
        }
    }
    Ok(false)
}

/// The sessions of `counts`, each with its checkpoint as listed: row count, last `seq`, rewrite
/// generation and update time (`updated` gives its window's; else its last event's). `ids`:
/// the first and last session id of `counts` (`None`: every session of the database).
fn session_list(
    tx: &Connection,
    db: &Path,
    agent: &str,
    updated: &dyn Fn(&str) -> Option<i64>,
    ids: Option<(&str, &str)>,
    counts: Vec<Counted>,
) -> Result<Vec<Discovered>, SqliteError> {
    let mut generations: HashMap<String, String> = HashMap::new();
    {
        let sql = "SELECT session_id, generation FROM transcript_rewrite_watermarks";
        let mut st = match ids {
            Some(_) => tx.prepare_cached(&format!("{sql} WHERE session_id >= ?1 AND session_id <= ?2"))?,
            None => tx.prepare_cached(sql)?,
        };
        let mut rows = match ids {
            Some((first, last)) => st.query([first, last])?,
            None => st.query([])?,
        };
        while let Some(r) = rows.next()? {
            generations.insert(r.get(0)?, r.get(1)?);
        }
    }
    let mut listed = Vec::with_capacity(counts.len());
    for (session_id, rows, max_seq, span) in counts {
        let updated_ms = match updated(&session_id) {
            Some(u) => u,
            // Rows without a window (not expected): the last event's time stands in.
            None => last_created_at(tx, &session_id)?.unwrap_or(0),
        };
        let path = session_path(agent, &session_id, db);
        let generation = generations.get(&session_id).map(String::as_str);
        let cp = SqliteCheckpoint {
            last_seq: max_seq,
            rows,
            watermark: watermark(&path, generation, max_seq),
            updated_ms,
            anchor: 0,
        };
        listed.push(discovered(agent, session_id, path, &cp, Some(span)));
    }
    Ok(listed)
}

fn last_created_at(conn: &Connection, session_id: &str) -> Result<Option<i64>, SqliteError> {
    Ok(conn
        .query_row(
            "SELECT created_at FROM transcript_events WHERE session_id = ?1 ORDER BY seq DESC LIMIT 1",
            [session_id],
            |r| r.get(0),
        )
        .optional()?)
}

/// The entries of the `sessions.json` the nodes stand for, in key order, and a hash of them
/// all (unchanged, the engine does not apply them again). A key listed twice keeps its last
/// node, as a map would. See [`entry_of_node`].
fn session_entries(nodes: &[Node], windows: &HashMap<String, Window>) -> (Vec<StoreEntry>, u64) {
    let mut by_key: HashMap<&str, Vec<&str>> = HashMap::new();
    for (id, w) in windows {
        by_key.entry(w.key.as_str()).or_default().push(id.as_str());
    }
    let mut order: Vec<&Node> = nodes.iter().collect();
    order.sort_by(|a, b| a.key.cmp(&b.key));
    let order: Vec<&Node> = order
        .iter()
        .enumerate()
        .filter(|(i, n)| order.get(i + 1).is_none_or(|m| m.key != n.key))
        .map(|(_, n)| *n)
        .collect();
    let mut hash = FNV_SEED;
    let mut out = Vec::with_capacity(order.len());
    for n in order {
        let same_key = by_key.get(n.key.as_str()).map_or(&[][..], Vec::as_slice);
        let e = entry_of_node(n, windows.get(&n.current), same_key, &mut |id| {
            windows.get(id).and_then(|w| w.previous.clone())
        });
        hash = fnv1a(hash, &e.hash().to_le_bytes());
        out.push(e);
    }
    (out, hash)
}

/// The `sessions.json` entry node `n` stands for. Its `entry_json` is the imported entry;
/// where 2026.9 moved a field out of it, the columns fill in: `sessionId` is
/// `current_session_id`, `origin` comes from `delivery.origin`, `channel`/`chatType`/model
/// from its current window `w`, `label` from the node, and the usage family is every instance
/// reachable through `previous_session_id` (`previous` gives a window's) or sharing the key
/// (`same_key`: the ids of the key's windows) ([`store::node_entry`]).
fn entry_of_node<S: AsRef<str>>(
    n: &Node,
    w: Option<&Window>,
    same_key: &[S],
    previous: &mut dyn FnMut(&str) -> Option<String>,
) -> StoreEntry {
    let facts = store::NodeFacts {
        session_id: &n.current,
        updated_ms: n.updated_ms,
        label: n.label.as_deref(),
        channel: w.and_then(|w| w.channel.as_deref()),
        chat_type: w.and_then(|w| w.chat_type.as_deref()),
        model_provider: w.and_then(|w| w.model_provider.as_deref()),
        model: w.and_then(|w| w.model.as_deref()),
        display_name: w.and_then(|w| w.display_name.as_deref()),
    };
    // The family: the entry's own list, then the previous-instance chain, then any other
    // instance of the key.
    store::node_entry(n.key.clone(), &n.entry_json, &facts, |mut family| {
        // Most sessions are alone: no list, no previous instance, no other of the key.
        if family.is_empty()
            && w.is_none_or(|w| w.previous.is_none())
            && same_key.iter().all(|id| id.as_ref() == n.current)
        {
            return family;
        }
        let mut seen: HashSet<String> = family.iter().cloned().collect();
        seen.insert(n.current.clone());
        let mut at = w.and_then(|w| w.previous.clone());
        while let Some(id) = at {
            if !seen.insert(id.clone()) {
                break;
            }
            at = previous(&id);
            family.push(id);
        }
        let mut same: Vec<&str> = same_key.iter().map(AsRef::as_ref).collect();
        same.sort_unstable();
        for id in same {
            if seen.insert(id.to_owned()) {
                family.push(id.to_owned());
            }
        }
        family
    })
}

/// [`session_entries`] of a database's every node, one at a time in key order, each handed to
/// `put`; returns their hash. A node's current window comes joined to it, its key's window ids
/// from a second walk in key order beside the first, and a previous instance is looked up by
/// id: nothing is held but the node at hand.
fn stream_node_entries(conn: &Connection, put: &mut dyn FnMut(StoreEntry)) -> Result<u64, SqliteError> {
    let tx = conn.unchecked_transaction()?;
    let mut hash = FNV_SEED;
    {
        let mut nodes = tx.prepare(&format!(
            "SELECT n.session_key, n.current_session_id, n.entry_json, n.label, n.updated_at, w.*
             FROM session_nodes n
             LEFT JOIN (SELECT {WINDOW_COLUMNS} FROM session_windows) w ON w.session_id = n.current_session_id
             ORDER BY n.session_key"
        ))?;
        let mut keys =
            tx.prepare("SELECT session_key, session_id FROM session_windows ORDER BY session_key")?;
        let mut previous =
            tx.prepare("SELECT previous_session_id FROM session_windows WHERE session_id = ?1")?;
        let mut key_rows = keys.query([])?;
        let mut next_window = || -> rusqlite::Result<Option<(String, String)>> {
            key_rows.next()?.map(|r| Ok((r.get(0)?, r.get(1)?))).transpose()
        };
        let mut ahead = next_window()?;
        let mut same_key: Vec<String> = Vec::new();
        let mut rows = nodes.query([])?;
        while let Some(r) = rows.next()? {
            let n = node_of_row(r)?;
            let w = match r.get_ref(5)? {
                ValueRef::Null => None,
                _ => Some(window_at(r, 5)?.1),
            };
            same_key.clear();
            while let Some((key, id)) = ahead.take() {
                if key > n.key {
                    ahead = Some((key, id));
                    break;
                }
                if key == n.key {
                    same_key.push(id);
                }
                ahead = next_window()?;
            }
            let mut failed = None;
            let e = entry_of_node(&n, w.as_ref(), &same_key, &mut |id| match previous
                .query_row([id], |r| r.get::<_, Option<String>>(0))
                .optional()
            {
                Ok(p) => p.flatten(),
                Err(e) => {
                    failed.get_or_insert(e);
                    None
                }
            });
            if let Some(e) = failed {
                return Err(e.into());
            }
            hash = fnv1a(hash, &e.hash().to_le_bytes());
            put(e);
        }
    }
    tx.commit()?;
    Ok(hash)
}

/// A connection to one database, reused while [`Pooled::valid`] (a job thread's, or a listing's).
#[derive(Debug)]
struct Pooled {
    db: PathBuf,
    conn: Connection,
    /// Opened `immutable` (nobody had the database open): valid only while that holds.
    immutable: bool,
    /// Device and inode of the file opened: a replaced database needs a new connection.
    file: (u64, u64),
}

thread_local! {
    /// The job threads' connections, one per database, reused across the sessions of a refresh
    /// (its threads end with it, closing them; the checks in [`with_connection`] keep a reused
    /// one honest should threads ever live longer).
    static CONNECTIONS: RefCell<Vec<Pooled>> = const { RefCell::new(Vec::new()) };
}

impl Pooled {
    /// Still the database at `db` (not one renamed over it), and opened `immutable` only while
    /// nobody else has it open.
    fn valid(&self, db: &Path, file: (u64, u64)) -> bool {
        self.db == db && self.file == file && (!self.immutable || sqlite_schema::opens_immutable(db))
    }
}

fn file_id(db: &Path) -> Option<(u64, u64)> {
    fs::metadata(db).ok().map(|m| {
        let f = FileMeta::of(&m);
        (f.dev, f.ino)
    })
}

fn with_connection<T>(
    db: &Path,
    f: impl FnOnce(&Connection) -> Result<T, SqliteError>,
) -> Result<T, SqliteError> {
    CONNECTIONS.with(|cell| {
        let mut conns = cell.borrow_mut();
        let file = file_id(db).ok_or_else(|| SqliteError::CannotOpen(format!("{} is gone", db.display())))?;
        conns.retain(|p| p.db != db || p.valid(db, file));
        let i = match conns.iter().position(|p| p.db == db) {
            Some(i) => i,
            None => {
                let immutable = sqlite_schema::opens_immutable(db);
                conns.push(Pooled {
                    db: db.to_owned(),
                    conn: sqlite_schema::open_as(db, immutable)?,
                    immutable,
                    file,
                });
                conns.len() - 1
            }
        };
        let result = f(&conns[i].conn);
        if result.is_err() {
            // A connection that failed (corrupt page, lock) is not trusted again.
            conns.swap_remove(i);
        }
        result
    })
}

/// Brings one session's rollup up to date; the SQLite counterpart of the engine's file job.
pub(super) fn run_job(
    mut disc: Discovered,
    old: Option<Old>,
    max_line: u64,
    cancel: &AtomicBool,
) -> JobResult {
    let Some(db) = db_of(&disc).map(Path::to_path_buf) else {
        return JobResult::Unreadable { disc, error: "not a SQLite session path".into(), old };
    };
    let prev = old.as_deref().map(|(_, r)| r.clone());
    match with_connection(&db, |conn| read_session(conn, &disc, prev, max_line, cancel)) {
        Ok((rollup, bytes)) => {
            if let Some(cp) = SqliteCheckpoint::decode(&rollup.checkpoint) {
                disc.meta = cp.meta();
            }
            JobResult::Done { disc, rollup: Box::new(rollup), bytes, old }
        }
        Err(SqliteError::Cancelled) => JobResult::Cancelled,
        Err(e) => JobResult::Unreadable { disc, error: e.to_string(), old },
    }
}

thread_local! {
    /// Each parser thread's zstd decoder, kept from session to session: creating one per session
    /// (a context and its window buffers) was a tenth of a cold read of many small sessions.
    static DECODER: std::cell::Cell<Option<RowDecoder>> = const { std::cell::Cell::new(None) };
}

/// The thread's decoder, given back when dropped.
struct DecoderGuard(Option<RowDecoder>);

impl DecoderGuard {
    fn take() -> Result<DecoderGuard, SqliteError> {
        let d = match DECODER.with(std::cell::Cell::take) {
            Some(d) => d,
            None => RowDecoder::new().map_err(|e| SqliteError::Other(e.to_string()))?,
        };
        Ok(DecoderGuard(Some(d)))
    }
}

impl std::ops::Deref for DecoderGuard {
    type Target = RowDecoder;
    fn deref(&self) -> &RowDecoder {
        self.0.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for DecoderGuard {
    fn deref_mut(&mut self) -> &mut RowDecoder {
        self.0.as_mut().expect("present until dropped")
    }
}

impl Drop for DecoderGuard {
    fn drop(&mut self) {
        DECODER.with(|c| c.set(self.0.take()));
    }
}

fn count_skip(skips: &mut SkipCounts, s: RowSkip) {
    match s {
        RowSkip::Oversize => skips.oversize += 1,
        RowSkip::Undecodable => skips.undecodable += 1,
    }
}

/// Reads a session's new rows (all of them when its checkpoint no longer holds) into its
/// rollup. Returns the rollup, checkpoint set, and the event bytes read.
fn read_session(
    conn: &Connection,
    disc: &Discovered,
    prev: Option<FileRollup>,
    max_line: u64,
    cancel: &AtomicBool,
) -> Result<(FileRollup, u64), SqliteError> {
    let sid = disc.session_id.as_str();
    let tx = conn.unchecked_transaction()?;
    let generation: Option<String> = tx
        .query_row("SELECT generation FROM transcript_rewrite_watermarks WHERE session_id = ?1", [sid], |r| {
            r.get(0)
        })
        .optional()?;
    let resume = match prev {
        Some(p) => match SqliteCheckpoint::decode(&p.checkpoint) {
            Some(cp) if still_holds(&tx, disc, generation.as_deref(), &cp)? => Some((p, cp)),
            _ => None,
        },
        None => None,
    };
    let (mut rollup, mut cp) = match resume {
        Some((p, cp)) => (p, cp),
        None => {
            (FileRollup::default(), SqliteCheckpoint { last_seq: i64::MIN, ..SqliteCheckpoint::default() })
        }
    };
    let mut skips = SkipCounts::default();
    let mut decoder = DecoderGuard::take()?;
    let mut bytes = 0u64;
    let mut tx = Some(tx);
    loop {
        let t = match tx.take() {
            Some(t) => t,
            None => conn.unchecked_transaction()?,
        };
        let mut n = 0i64;
        {
            let mut st = t.prepare_cached(
                "SELECT seq, event_json, event_zstd, event_utf8_bytes, navigation_json FROM transcript_events
                 WHERE session_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let mut rows = st.query(params![sid, cp.last_seq, SLICE_ROWS])?;
            while let Some(r) = rows.next()? {
                n += 1;
                if (cp.rows + 1) % CANCEL_EVERY == 0 && cancel.load(Ordering::Relaxed) {
                    return Err(SqliteError::Cancelled);
                }
                let seq: i64 = r.get(0)?;
                let columns = event_columns(r, 1)?;
                bytes += fold_event(&mut rollup, &mut skips, &mut decoder, columns, max_line);
                cp.last_seq = seq;
                cp.rows += 1;
            }
        }
        let done = n < SLICE_ROWS;
        if done {
            // Read in the same snapshot as the last rows, so the checkpoint describes exactly
            // what was folded in.
            if cp.rows > 0 {
                cp.anchor = anchor_at(&t, sid, cp.last_seq)?.unwrap_or(0);
                cp.updated_ms = updated_ms(&t, sid)?.unwrap_or(0);
            }
            t.commit()?;
            break;
        }
        t.commit()?;
    }
    rollup.skips.add(&skips);
    rollup.shrink();
    rollup.pending_tail = false;
    cp.watermark = watermark(&disc.path, generation.as_deref(), cp.last_seq);
    rollup.checkpoint =
        if cp.rows > 0 { cp.encode() } else { Checkpoint { dev: SQLITE_DEV, ..Checkpoint::default() } };
    Ok((rollup, bytes))
}

/// A row's event columns from `first` on: `event_json`, `event_zstd`, `event_utf8_bytes`,
/// `navigation_json`. The last three only for an event that is not plain JSON: OpenClaw stores
/// one form or the other, and asking SQLite for three NULL columns of each JSON row was ~1% of a
/// cold read's instructions.
fn event_columns<'r>(
    r: &'r rusqlite::Row<'_>,
    first: usize,
) -> rusqlite::Result<(ValueRef<'r>, ValueRef<'r>, ValueRef<'r>, ValueRef<'r>)> {
    let json = r.get_ref(first)?;
    if json != ValueRef::Null {
        return Ok((json, ValueRef::Null, ValueRef::Null, ValueRef::Null));
    }
    Ok((json, r.get_ref(first + 1)?, r.get_ref(first + 2)?, r.get_ref(first + 3)?))
}

/// Rows read per read transaction by [`run_bulk`] (a few in unit tests, so that their small
/// stores have slices that end inside and between sessions).
#[cfg(not(test))]
const BULK_SLICE_ROWS: i64 = 4096;
#[cfg(test)]
const BULK_SLICE_ROWS: i64 = 5;

/// Rows of other sessions a pass in rowid order steps over before it seeks to its next session
/// instead (one in unit tests, so that both are taken).
const BULK_GAP_ROWS: i64 = if cfg!(test) { 1 } else { 64 };

/// A session being read by [`run_bulk`]: its listing, rollup, skips, checkpoint and bytes.
type Reading = (Discovered, FileRollup, SkipCounts, SqliteCheckpoint, u64);

fn reading(d: Discovered) -> Reading {
    (d, FileRollup::default(), SkipCounts::default(), SqliteCheckpoint::default(), 0)
}

/// The sessions a bulk pass has yet to read, in its order.
type Pending = std::iter::Peekable<std::vec::IntoIter<Discovered>>;

/// Reads many sessions of one database from scratch in one pass over its events, handing each
/// session's result to `send` as soon as its rows are read. A cold read of a database of
/// thousands of short sessions otherwise pays a transaction and a handful of queries per
/// session. `send` returns `false` to stop.
///
/// With `by_rowid`, `sessions` are sorted by their listed rowid spans, which overlap no other
/// session's, and are read in the table's own order: every page once, without the key index
/// (sessions are seldom written in key order, so the key order read each page a session shares
/// with its neighbours again, ~28% more pages, and walked the index besides). A session whose
/// rows turn out not to be in `seq` order there is read again by key. Otherwise `sessions` are
/// sorted by session id and read in key order. Both take slices of [`BULK_SLICE_ROWS`] rows,
/// one short read transaction each, so OpenClaw's checkpoints are not held back.
pub(super) fn run_bulk(
    db: &Path,
    mut sessions: Vec<Discovered>,
    by_rowid: bool,
    max_line: u64,
    cancel: &AtomicBool,
    send: &mut dyn FnMut(JobResult) -> bool,
) {
    // Sessions without a span (never grouped so) are read by key.
    if by_rowid && let Some(hi) = sessions.last().and_then(|d| d.span).map(|s| s.1) {
        let mut redo = Vec::new();
        let mut pending = sessions.into_iter().peekable();
        let result = with_connection(db, |conn| {
            bulk_by_rowid(conn, &mut pending, hi, &mut redo, max_line, cancel, send)
        });
        if !matches!(result, Ok(true)) {
            settle(result, pending.chain(redo), send);
            return;
        }
        redo.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        sessions = redo;
    }
    let (Some(lo), Some(hi)) =
        (sessions.first().map(|d| d.session_id.clone()), sessions.last().map(|d| d.session_id.clone()))
    else {
        return;
    };
    let mut pending = sessions.into_iter().peekable();
    let result =
        with_connection(db, |conn| bulk_by_key(conn, &mut pending, (lo, &hi), max_line, cancel, send));
    settle(result, pending, send);
}

/// Ends a bulk pass: `true` when it read everything and the next may start; a cancelled one
/// says so, a failed one reports the sessions it had `left` unreadable.
fn settle(
    result: Result<bool, SqliteError>,
    left: impl Iterator<Item = Discovered>,
    send: &mut dyn FnMut(JobResult) -> bool,
) -> bool {
    match result {
        Ok(go_on) => go_on,
        Err(SqliteError::Cancelled) => {
            send(JobResult::Cancelled);
            false
        }
        Err(e) => {
            let error = e.to_string();
            for disc in left {
                if !send(JobResult::Unreadable { disc, error: error.clone(), old: None }) {
                    break;
                }
            }
            false
        }
    }
}

/// Folds one event row, `(event_json, event_zstd, event_utf8_bytes, navigation_json)`: a
/// compressed tool result from its `model` projection when the line reader reads that as a tool
/// result (the tool's output is neither inflated nor scanned), any other row from its event.
/// Returns the event's size.
fn fold_event(
    rollup: &mut FileRollup,
    skips: &mut SkipCounts,
    decoder: &mut RowDecoder,
    (json, zstd, size, nav): (ValueRef<'_>, ValueRef<'_>, ValueRef<'_>, ValueRef<'_>),
    max_line: u64,
) -> u64 {
    if let Some((model, n)) = RowDecoder::projection(json, zstd, size, nav, max_line)
        && fold_if_tool_result(rollup, skips, model)
    {
        return n;
    }
    match decoder.decode(json, zstd, size, max_line) {
        Ok(text) => {
            fold_line(rollup, skips, text);
            text.len() as u64
        }
        Err(s) => {
            count_skip(skips, s);
            0
        }
    }
}

/// Folds one event row into the session being read. `first` is the column of `event_json`,
/// followed by `event_zstd`, `event_utf8_bytes` and `navigation_json`.
fn fold_row(
    (disc, rollup, skips, cp, bytes): &mut Reading,
    st: &Stepper<'_>,
    first: c_int,
    seq: i64,
    decoder: &mut RowDecoder,
    max_line: u64,
) {
    // A JSON event has no other columns (OpenClaw's CHECK): they are read only without one.
    let json = st.value(first);
    let (zstd, size, nav) = if json == ValueRef::Null {
        (st.value(first + 1), st.value(first + 2), st.value(first + 3))
    } else {
        (ValueRef::Null, ValueRef::Null, ValueRef::Null)
    };
    *bytes += fold_event(rollup, skips, decoder, (json, zstd, size, nav), max_line);
    cp.last_seq = seq;
    cp.rows += 1;
    // The last row as listed (rows come in seq order, so it is the listed count's row) or a
    // later one: its anchor is the checkpoint's. Hashing every row's bytes instead cost a
    // tenth of a cold read. When rows went away since the listing, the count never matches
    // and the session is read again anyway.
    if cp.rows >= disc.meta.size {
        fn bytes(v: ValueRef<'_>) -> Option<&[u8]> {
            v.as_bytes_or_null().ok().flatten()
        }
        // `event_zstd` as stored, even beside a JSON event (not OpenClaw's rows, but
        // `anchor_at` hashes what is there).
        let zstd = if zstd == ValueRef::Null { st.value(first + 1) } else { zstd };
        cp.anchor = row_anchor(seq, bytes(json), bytes(zstd));
    }
}

/// Counts a row a bulk pass read (`n` in its slice, `seen` in all), checking every 256 rows
/// whether the job was cancelled.
fn count_row(n: &mut i64, seen: &mut u64, cancel: &AtomicBool) -> Result<(), SqliteError> {
    *n += 1;
    *seen += 1;
    if *seen % 256 == 0 && cancel.load(Ordering::Relaxed) {
        return Err(SqliteError::Cancelled);
    }
    Ok(())
}

/// The key-order pass of [`run_bulk`]: one indexed scan from the first session's first row to
/// the last session's last.
fn bulk_by_key(
    conn: &Connection,
    pending: &mut Pending,
    (lo, hi): (String, &str),
    max_line: u64,
    cancel: &AtomicBool,
    send: &mut dyn FnMut(JobResult) -> bool,
) -> Result<bool, SqliteError> {
    let mut decoder = DecoderGuard::take()?;
    let mut current: Option<Reading> = None;
    // The last row read; the first slice starts at the first session's first row.
    let mut after: (String, i64) = (lo, i64::MIN);
    let mut seen = 0u64;
    // The row value is the seek key: each slice starts where the last one ended. With a
    // separate `session_id >= lo` term SQLite sought to `lo` instead and stepped over every row
    // already read, slice after slice (a group of long sessions read ~2x the index rows it
    // needed).
    let slice = |from: &str| {
        Stepper::prepare(
            conn,
            &format!(
                "SELECT session_id, seq, event_json, event_zstd, event_utf8_bytes, navigation_json
                 FROM transcript_events WHERE (session_id, seq) {from} (?1, ?2) AND session_id <= ?3
                 ORDER BY session_id, seq LIMIT ?4"
            ),
        )
    };
    let (mut first, mut next) = (Some(slice(">=")?), slice(">")?);
    loop {
        let tx = conn.unchecked_transaction()?;
        let mut n = 0i64;
        let mut taken = first.take();
        let st = taken.as_mut().unwrap_or(&mut next);
        st.bind_text(1, &after.0)?;
        st.bind_int(2, after.1)?;
        st.bind_text(3, hi)?;
        st.bind_int(4, BULK_SLICE_ROWS)?;
        let read = (|| -> Result<bool, SqliteError> {
            while st.step()? {
                count_row(&mut n, &mut seen, cancel)?;
                let (sid, seq) = (st.text(0)?, st.int(1)?);
                if after.0 != sid {
                    after.0 = sid.to_owned();
                }
                after.1 = seq;
                // Move to this row's session, finishing the ones before it.
                if current.as_ref().is_none_or(|c| c.0.session_id != sid) {
                    if let Some(done) = current.take()
                        && !send(finish(done))
                    {
                        return Ok(false);
                    }
                    while pending.peek().is_some_and(|d| d.session_id.as_str() < sid) {
                        if !send(finish(reading(pending.next().expect("peeked")))) {
                            return Ok(false);
                        }
                    }
                    if pending.peek().is_some_and(|d| d.session_id == sid) {
                        current = Some(reading(pending.next().expect("peeked")));
                    }
                }
                // A session in the range that is not being read (unchanged) is skipped.
                let Some(c) = current.as_mut() else { continue };
                fold_row(c, st, 2, seq, &mut decoder, max_line);
            }
            Ok(true)
        })();
        st.reset();
        if !read? {
            return Ok(false);
        }
        tx.commit()?;
        if n < BULK_SLICE_ROWS {
            break;
        }
    }
    if let Some(done) = current.take()
        && !send(finish(done))
    {
        return Ok(false);
    }
    for d in pending.by_ref() {
        if !send(finish(reading(d))) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The rowid-order pass of [`run_bulk`] up to rowid `hi`: `pending` sorted by their spans, which
/// do not overlap. A session's rows are those of its span, as listed; rows added since are the next
/// listing's. Sessions whose rows are not in `seq` order go to `redo`, unsent.
fn bulk_by_rowid(
    conn: &Connection,
    pending: &mut Pending,
    hi: i64,
    redo: &mut Vec<Discovered>,
    max_line: u64,
    cancel: &AtomicBool,
    send: &mut dyn FnMut(JobResult) -> bool,
) -> Result<bool, SqliteError> {
    /// Sends a session read in `seq` order; keeps one that was not for `redo`.
    fn done(
        (reading, ordered): (Reading, bool),
        redo: &mut Vec<Discovered>,
        send: &mut dyn FnMut(JobResult) -> bool,
    ) -> bool {
        if ordered {
            send(finish(reading))
        } else {
            redo.push(reading.0);
            true
        }
    }
    let mut decoder = DecoderGuard::take()?;
    // The session being read, and whether its rows came in `seq` order so far.
    let mut current: Option<(Reading, bool)> = None;
    let mut after = i64::MIN;
    let mut seen = 0u64;
    let mut st = Stepper::prepare(
        conn,
        "SELECT rowid, session_id, seq, event_json, event_zstd, event_utf8_bytes, navigation_json
         FROM transcript_events WHERE rowid > ?1 AND rowid <= ?2 ORDER BY rowid LIMIT ?3",
    )?;
    loop {
        // Between sessions, the next slice starts at the next one's first row.
        if current.is_none() {
            match pending.peek() {
                Some(d) => after = after.max(d.span.map_or(i64::MIN, |s| s.0.saturating_sub(1))),
                None => break,
            }
        }
        let tx = conn.unchecked_transaction()?;
        let (mut n, mut seek) = (0i64, false);
        st.bind_int(1, after)?;
        st.bind_int(2, hi)?;
        st.bind_int(3, BULK_SLICE_ROWS)?;
        let read = (|| -> Result<bool, SqliteError> {
            while st.step()? {
                count_row(&mut n, &mut seen, cancel)?;
                let rowid = st.rowid(0);
                after = rowid;
                // The session being read ends with its span.
                if let Some(c) = current.take_if(|c| c.0.0.span.is_none_or(|s| s.1 < rowid))
                    && !done(c, redo, send)
                {
                    return Ok(false);
                }
                if current.is_none() {
                    let sid = st.text(1)?;
                    // Sessions whose spans ended before this row had no rows left in them.
                    while pending.peek().is_some_and(|d| d.span.is_none_or(|s| s.1 < rowid)) {
                        if !send(finish(reading(pending.next().expect("peeked")))) {
                            return Ok(false);
                        }
                    }
                    if pending
                        .peek()
                        .is_some_and(|d| d.session_id == sid && d.span.is_some_and(|s| s.0 <= rowid))
                    {
                        current = Some((reading(pending.next().expect("peeked")), true));
                    }
                }
                let Some((c, ordered)) = current.as_mut().filter(|c| st.is_text(1, &c.0.0.session_id)) else {
                    // Another session's row: stepped over, or sought past when the next session
                    // starts far ahead.
                    if current.is_none()
                        && pending
                            .peek()
                            .and_then(|d| d.span)
                            .is_some_and(|s| s.0.saturating_sub(rowid) > BULK_GAP_ROWS)
                    {
                        seek = true;
                        break;
                    }
                    continue;
                };
                let seq = st.int(2)?;
                if *ordered && c.3.rows > 0 && seq <= c.3.last_seq {
                    *ordered = false;
                }
                if *ordered {
                    fold_row(c, &st, 3, seq, &mut decoder, max_line);
                }
            }
            Ok(true)
        })();
        st.reset();
        if !read? {
            return Ok(false);
        }
        tx.commit()?;
        if n < BULK_SLICE_ROWS && !seek {
            break;
        }
    }
    if let Some(c) = current.take()
        && !done(c, redo, send)
    {
        return Ok(false);
    }
    for d in pending.by_ref() {
        if !send(finish(reading(d))) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A session read by [`run_bulk`], as a job result. Its watermark and update time are the
/// listing's when it read up to the listed last row; rows appended since make the next listing
/// see it changed, and it is then read incrementally.
fn finish((mut disc, mut rollup, skips, mut cp, bytes): Reading) -> JobResult {
    rollup.skips.add(&skips);
    rollup.shrink();
    rollup.pending_tail = false;
    let listed_watermark = disc.meta.ino;
    let listed_rows = disc.meta.size;
    cp.updated_ms = i64::try_from(disc.meta.mtime_ns.div_euclid(1_000_000)).unwrap_or(0);
    // The listing's watermark covers (session, generation, listed last seq): it holds when
    // exactly the listed rows were read; otherwise a zero watermark makes the next listing
    // read the session again from its start, which is always right.
    cp.watermark = if cp.rows == listed_rows { listed_watermark } else { 0 };
    rollup.checkpoint =
        if cp.rows > 0 { cp.encode() } else { Checkpoint { dev: SQLITE_DEV, ..Checkpoint::default() } };
    if let Some(c) = SqliteCheckpoint::decode(&rollup.checkpoint) {
        disc.meta = c.meta();
    }
    JobResult::Done { disc, rollup: Box::new(rollup), bytes, old: None }
}

/// Whether a checkpoint still describes the session's first rows: same generation, as many
/// rows up to its seq, and the same last row.
fn still_holds(
    conn: &Connection,
    disc: &Discovered,
    generation: Option<&str>,
    cp: &SqliteCheckpoint,
) -> Result<bool, SqliteError> {
    if watermark(&disc.path, generation, cp.last_seq) != cp.watermark {
        return Ok(false);
    }
    let sid = disc.session_id.as_str();
    let rows: i64 = conn.query_row(
        "SELECT count(*) FROM transcript_events WHERE session_id = ?1 AND seq <= ?2",
        params![sid, cp.last_seq],
        |r| r.get(0),
    )?;
    if rows as u64 != cp.rows {
        return Ok(false);
    }
    Ok(anchor_at(conn, sid, cp.last_seq)? == Some(cp.anchor))
}

fn anchor_at(conn: &Connection, sid: &str, seq: i64) -> Result<Option<u64>, SqliteError> {
    let mut st = conn.prepare_cached(
        "SELECT event_json, event_zstd FROM transcript_events WHERE session_id = ?1 AND seq = ?2",
    )?;
    let mut rows = st.query(params![sid, seq])?;
    let Some(r) = rows.next()? else { return Ok(None) };
    let bytes = |v: rusqlite::types::ValueRef<'_>| v.as_bytes_or_null().ok().flatten().map(<[u8]>::to_vec);
    Ok(Some(row_anchor(seq, bytes(r.get_ref(0)?).as_deref(), bytes(r.get_ref(1)?).as_deref())))
}

fn updated_ms(conn: &Connection, sid: &str) -> Result<Option<i64>, SqliteError> {
    let w: Option<Option<i64>> = conn
        .query_row(
            "SELECT coalesce(transcript_updated_at, updated_at) FROM session_windows WHERE session_id = ?1",
            [sid],
            |r| r.get(0),
        )
        .optional()?;
    match w.flatten() {
        Some(u) => Ok(Some(u)),
        None => last_created_at(conn, sid),
    }
}

/// Calls `on_line` with every decodable event of a session in `seq` order (for the per-message
/// views, which read one session in full like OpenClaw does). Returns the event bytes read.
pub fn read_events(
    d: &Discovered,
    max_line: u64,
    cancel: &AtomicBool,
    mut on_line: impl FnMut(&[u8]),
) -> Result<u64, SqliteError> {
    let db = db_of(d).ok_or_else(|| SqliteError::Other("not a SQLite session path".into()))?;
    let conn = sqlite_schema::open(db)?;
    let mut decoder = RowDecoder::new().map_err(|e| SqliteError::Other(e.to_string()))?;
    let (mut after, mut bytes, mut seen) = (i64::MIN, 0u64, 0u64);
    loop {
        let t = conn.unchecked_transaction()?;
        let mut n = 0;
        {
            let mut st = t.prepare_cached(
                "SELECT seq, event_json, event_zstd, event_utf8_bytes FROM transcript_events
                 WHERE session_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let mut rows = st.query(params![d.session_id, after, SLICE_ROWS])?;
            while let Some(r) = rows.next()? {
                n += 1;
                seen += 1;
                if seen % CANCEL_EVERY == 0 && cancel.load(Ordering::Relaxed) {
                    return Err(SqliteError::Cancelled);
                }
                after = r.get(0)?;
                if let Ok(text) = decoder.decode(r.get_ref(1)?, r.get_ref(2)?, r.get_ref(3)?, max_line) {
                    bytes += text.len() as u64;
                    on_line(text);
                }
            }
        }
        t.commit()?;
        if n < SLICE_ROWS {
            return Ok(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trips_through_the_rollup_form() {
        let cp = SqliteCheckpoint {
            last_seq: -3,
            rows: 7,
            watermark: 42,
            updated_ms: 1_794_000_000_123,
            anchor: 9,
        };
        assert_eq!(SqliteCheckpoint::decode(&cp.encode()), Some(cp));
        assert_eq!(SqliteCheckpoint::decode(&Checkpoint::default()), None);
        let json = serde_json::to_string(&cp).unwrap();
        assert_eq!(serde_json::from_str::<SqliteCheckpoint>(&json).unwrap(), cp);
    }

    /// The index text is written entry by entry; it must be what serialising the map of all
    /// entries wrote (its hash is persisted: another text would rebuild every agent's entries).
    #[test]
    fn the_session_index_is_the_entries_of_its_nodes() {
        let node = |key: &str, current: &str, json: &str| Node {
            key: key.into(),
            current: current.into(),
            entry_json: json.into(),
            label: None,
            updated_ms: 5,
        };
        let mut nodes = vec![
            node("agent:main:z", "s3", r#"{"updatedAt":3,"label":"old","origin":{"b":1, "a":2},"x":[1]}"#),
            node(
                "agent:main:a\"q",
                "s1",
                r#"{"sessionFile":"/x/y.jsonl","chatType":"direct","usageFamilySessionIds":["s9"]}"#,
            ),
            node("agent:main:m", "s2", "not json"),
            node(
                "agent:main:d",
                "s4",
                r#"{"sessionId":"other","delivery":{"origin":{"provider":"slack","chatType":"group"}}}"#,
            ),
            node("agent:main:z", "s5", r#"{"updatedAt":4}"#),
        ];
        nodes[4].label = Some("new".into());
        let window = |key: &str, previous: Option<&str>| Window {
            key: key.into(),
            previous: previous.map(Into::into),
            updated_ms: Some(1),
            channel: Some("telegram".into()),
            chat_type: Some("group".into()),
            model_provider: None,
            display_name: None,
            model: Some("gpt-5".into()),
        };
        let mut windows = HashMap::new();
        windows.insert("s1".to_owned(), window("agent:main:a\"q", Some("s0")));
        windows.insert("s0".to_owned(), window("agent:main:a\"q", None));
        windows.insert("s7".to_owned(), window("agent:main:a\"q", None));
        let (entries, hash) = session_entries(&nodes, &windows);
        let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            ["agent:main:a\"q", "agent:main:d", "agent:main:m", "agent:main:z"],
            "key order, the last node of a key"
        );
        let by = |k: &str| entries.iter().find(|e| e.key == k).unwrap();
        let a = by("agent:main:a\"q");
        assert_eq!((a.session_id.as_str(), a.session_file_name.as_deref()), ("s1", None));
        // The entry's own chat type stays; the window fills what the entry lacks.
        assert_eq!(
            (a.chat_type.as_deref(), a.channel.as_deref(), a.model.as_deref()),
            (Some("direct"), Some("telegram"), Some("gpt-5"))
        );
        assert_eq!(a.family_ids, ["s9", "s0", "s7"], "own list, previous chain, same key");
        assert_eq!(a.updated_at, Some(5.0), "the node's time where the entry has none");
        let d = by("agent:main:d");
        assert_eq!(d.session_id, "s4", "current_session_id over the entry's");
        assert_eq!((d.channel.as_deref(), d.chat_type.as_deref()), (Some("slack"), Some("group")));
        assert_eq!(
            d.origin.as_deref(),
            Some(r#"{"provider":"slack","chatType":"group"}"#),
            "origin from delivery"
        );
        let m = by("agent:main:m");
        assert_eq!(
            (m.session_id.as_str(), m.updated_at, m.label.as_deref()),
            ("s2", Some(5.0), None),
            "not JSON: the node alone"
        );
        let z = by("agent:main:z");
        assert_eq!((z.session_id.as_str(), z.updated_at, z.label.as_deref()), ("s5", Some(4.0), Some("new")));
        // The hash follows the entries: the same nodes give the same, any change another.
        assert_eq!(session_entries(&nodes, &windows).1, hash);
        nodes[0].entry_json = r#"{"updatedAt":3,"label":"old","origin":{"b":1,"a":3}}"#.into();
        nodes[4].entry_json = r#"{"updatedAt":4.5}"#.into();
        assert_ne!(session_entries(&nodes, &windows).1, hash);
        let (none, empty) = session_entries(&[], &windows);
        assert!(none.is_empty());
        assert_ne!(empty, hash);
    }

    /// The entries built from nodes are the ones the `sessions.json` text they stand for (the
    /// way they were built before) parses to.
    #[test]
    fn node_entries_are_what_their_sessions_json_text_parses_to() {
        let node = |key: &str, current: &str, json: &str, label: Option<&str>| Node {
            key: key.into(),
            current: current.into(),
            entry_json: json.into(),
            label: label.map(Into::into),
            updated_ms: 1_700_000_000_000,
        };
        let nodes = [
            node(
                "agent:main:discord:group:g6",
                "s1",
                r#"{"origin":null,"usageFamilySessionIds":[1,"s8"]}"#,
                None,
            ),
            node(
                "agent:main:b",
                "s2",
                r#"{"chatType":"direct","channel":"webchat","systemPromptReport":{"b": 1}}"#,
                Some("L"),
            ),
            node("agent:main:c", "s3", r#"[1,2]"#, None),
            node(
                "agent:main:e",
                "s4",
                r#"{"updatedAt":null,"modelOverride":"m","providerOverride":"p","usageFamilyKey":"k"}"#,
                None,
            ),
        ];
        let mut windows = HashMap::new();
        windows.insert(
            "s1".to_owned(),
            Window {
                key: "agent:main:discord:group:g6".into(),
                previous: None,
                updated_ms: None,
                channel: Some("discord".into()),
                chat_type: None,
                model_provider: Some("openai".into()),
                display_name: None,
                model: None,
            },
        );
        windows.insert(
            "s4".to_owned(),
            Window {
                key: "agent:main:e".into(),
                previous: None,
                updated_ms: None,
                channel: None,
                chat_type: None,
                model_provider: None,
                display_name: Some("d".into()),
                model: None,
            },
        );
        let (entries, _) = session_entries(&nodes, &windows);
        // The text, as it was written before: each entry's map with the node's columns set.
        let mut text = String::from("{");
        for (i, e) in entries.iter().enumerate() {
            let n = nodes.iter().find(|n| n.key == e.key).unwrap();
            let mut m: std::collections::BTreeMap<String, serde_json::Value> =
                serde_json::from_str(&n.entry_json).unwrap_or_default();
            m.remove("sessionFile");
            m.insert("sessionId".into(), n.current.clone().into());
            m.entry("updatedAt".into()).or_insert(n.updated_ms.into());
            if let Some(w) = windows.get(&n.current) {
                for (f, v) in [
                    ("channel", &w.channel),
                    ("chatType", &w.chat_type),
                    ("modelProvider", &w.model_provider),
                    ("model", &w.model),
                    ("displayName", &w.display_name),
                ] {
                    if let Some(v) = v {
                        m.entry(f.into()).or_insert(v.clone().into());
                    }
                }
            }
            if let Some(l) = &n.label {
                m.insert("label".into(), l.clone().into());
            }
            if i > 0 {
                text.push(',');
            }
            text.push_str(&serde_json::to_string(&n.key).unwrap());
            text.push(':');
            text.push_str(&serde_json::to_string(&m).unwrap());
        }
        text.push('}');
        let parsed = store::parse_entries(text.as_bytes()).unwrap();
        assert_eq!(format!("{parsed:?}"), format!("{entries:?}"));
        let by = |k: &str| entries.iter().find(|e| e.key == k).unwrap();
        let g = by("agent:main:discord:group:g6");
        assert_eq!(
            (g.label.as_deref(), g.family_ids.as_slice()),
            (Some("discord:g-g6"), &["s8".to_owned()][..])
        );
        assert_eq!(by("agent:main:e").label.as_deref(), Some("d"), "the window's display name");
        assert_eq!(by("agent:main:b").channel, None, "an internal channel");
    }

    #[test]
    fn session_paths_are_openclaws_session_files() {
        let db = Path::new("/s/agents/main/agent/openclaw-agent.sqlite");
        let p = session_path("main", "abc", db);
        assert_eq!(p, Path::new("sqlite:main:abc:/s/agents/main/agent/openclaw-agent.sqlite"));
        let d = Discovered {
            path: p,
            file_name: "abc".into(),
            agent_id: "main".into(),
            session_id: "abc".into(),
            kind: FileKind::Primary,
            meta: FileMeta { dev: SQLITE_DEV, ..FileMeta::default() },
            span: None,
        };
        assert!(is_session(&d));
        assert_eq!(db_of(&d), Some(db));
    }
}
