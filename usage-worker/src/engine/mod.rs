//! The usage engine: answers OpenClaw usage queries over a session store (legacy JSONL files or
//! OpenClaw 2026.7+ per-agent databases) from incrementally maintained per-file rollups.
//!
//! One [`Engine`] lives in the worker process for its lifetime. Each [`Engine::answer`] call
//! brings the agents in scope up to date: `sessions.json` and `models.json` when their stat
//! changed, and the transcripts that changed (named by inotify events, or found by listing a
//! directory that has no trustworthy events). A changed transcript is parsed from its
//! checkpoint (only appended bytes when it merely grew) on `threads` threads, and its rollup is
//! written to the [`index`] (an SQLite file in the data dir), never kept in memory. Then the
//! answer is built from [`live`] aggregates (built once per query shape by streaming rollups
//! from the index, then kept current by taking each changed file's old summary away and adding
//! its new one) and one page of rendered [`rows`].
//!
//! So the worker's memory follows the answer (days × models × agents × channels, and the rows
//! asked for), not the number of sessions, and one append costs one file's work. Semantics and
//! choices: `docs/usage-engine.md`.
//!
//! Module map: [`discover`] finds files, [`reader`] streams lines, [`line`] decodes a line,
//! [`rollup`] folds lines into quarter-hour buckets, [`summary`] summarises a rollup for a
//! range, [`aggregates`] sums summaries invertibly, [`live`] keeps aggregates per shape,
//! [`rows`] renders rows, [`payload`] assembles answers, [`series`] and [`logs`] serve one
//! session, [`index`] stores rollups, [`watch`] names changed files, [`store`] reads
//! `sessions.json` / `models.json`, [`sqlite`] (with [`sqlite_schema`]) reads OpenClaw's
//! databases.

mod aggregates;
mod discover;
pub(crate) mod index;
mod json;
mod line;
mod live;
mod logs;
mod num;
mod payload;
mod reader;
mod rollup;
mod rows;
mod series;
mod sqlite;
mod sqlite_schema;
mod stepper;
mod store;
mod summary;
mod time;
mod topk;
mod watch;

#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use foldhash::{HashMap, HashMapExt};
use ipc_proto::{
    AgentScope, GroupBy, JobStats, Method, Progress, RowSort, SortKey, UsageQuery, WorkerError,
    WorkerErrorKind,
};

use aggregates::{Aggregates, SessionsTail};
use discover::{Discovered, FileMeta};
use index::{FileRow, Index, IndexError, PageQuery};
use live::{Change, Shape};
use reader::{ReadError, anchor_hash, read_lines};
use rollup::{Checkpoint, FileRollup};
use rows::{Family, INLINE_ROWS, Placed, READ_AHEAD, RowCache, RowHelper, RowJob, RowOut, Slot};
use store::{Cached, Price, PriceTable};
use summary::{Want, Window};
use time::{DAY_MS, Day, day_of, format_day, zone_offset_ms};

pub use payload::{Answer, Diagnostics, Payload, Reply, RowsCut};

/// The agent whose `models.json` is consulted first for prices, as OpenClaw consults the
/// default agent's catalog before anything else.
const DEFAULT_AGENT: &str = "main";
/// Minimum time between two progress reports while parsing.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
/// Files parsed per batch: their results are written to the index in one transaction. Each
/// commit writes every page the batch changed to the WAL, and index pages (random places in
/// `files_page`) are changed by almost every batch: fewer, larger batches write them fewer
/// times (a cold read of 54,000 sessions into a 122 MB index: 396 MB written instead of 896 MB
/// with batches of 256).
const BATCH_FILES: usize = 2048;
/// An agent with this many files to parse has the next agent listed meanwhile
/// ([`Engine::run_jobs_listing`]). From 64: on the seed-size store in OpenClaw's layout (agents
/// of ~200 sessions) listing each agent in the step between two agents kept one core idle for
/// ~20 of its ~60 ms (bench, cold: 877-944 ms against 975-1,053 ms from 256). Bounded above: the
/// next listing is held beside this agent's jobs and [`index::EntryMemo`], so their size must
/// not grow with the store.
const LIST_AHEAD_JOBS: std::ops::RangeInclusive<usize> = 64..=MEMO_MAX;
/// Agents of more entries than this have their files' row facts looked up in the index, not
/// held in memory ([`index::EntryMemo`]: ~600 bytes an entry).
const MEMO_MAX: usize = 8192;
/// An agent's transcripts are stat'ed, compared with the index and parsed this many at a time
/// ([`Slicing`]): what is held of a listing while it is parsed does not grow with the agent (one
/// agent of 220,000 sessions held ~100 MB of stat'ed names, and as much again in jobs).
const SLICE_FILES: usize = if cfg!(test) { 4 } else { 16_384 };

/// The rest of an agent's listing, compared with the index and parsed a slice at a time
/// ([`Engine::next_slice`]).
struct Slicing {
    listing: Sliced,
    /// Nothing of the agent was indexed when it was listed: every file is new.
    cold: bool,
    /// Known files that no slice so far listed (renamed or gone): followed when a later slice
    /// lists them under a new name, else removed after the last slice.
    vanished: Vec<index::Known>,
}

/// What a [`Slicing`] lists: a directory's names, or a database's sessions and the archived
/// transcripts beside it that it does not hold (`None` until the first slice lists them; each
/// slice takes those in its range of paths).
enum Sliced {
    Dir(discover::Names),
    Db(sqlite::Slices, Option<Vec<Discovered>>),
}

/// An agent's database listing and archived transcripts (`None`: not listed yet), made by
/// [`Engine::run_jobs_listing`] for [`Engine::refresh_agent`]. The entries of a changed
/// listing are taken out of it, made ready.
struct Ahead {
    listing: sqlite::Listing,
    archives: Option<Vec<Discovered>>,
    entries: Option<ReadyEntries>,
}

/// An agent's entries with canonical keys, and the memo [`Engine::put_entries`] holds of them
/// when they are all of them and fit [`MEMO_MAX`].
struct ReadyEntries {
    entries: Vec<store::StoreEntry>,
    memo: Option<index::EntryMemo>,
}

impl ReadyEntries {
    fn of(agent: &str, mut entries: Vec<store::StoreEntry>, all: bool) -> ReadyEntries {
        for e in &mut entries {
            e.key = store::canonical_key(agent, &e.key);
        }
        let memo = (all && entries.len() <= MEMO_MAX).then(|| index::EntryMemo::of(agent, &entries));
        ReadyEntries { entries, memo }
    }
}

/// Parsed results waiting for the writer, at most (and [`SEND_BATCH`] more held by each
/// parser): parsers wait rather than pile them up.
const RESULTS_IN_FLIGHT: usize = 512;
/// Results a parser thread sends the writer at once ([`Outbox`]).
const SEND_BATCH: usize = 32;
/// What a rendered row needs of a summary: everything.
const FULL: Want = Want { quarters: true, latency: true, untimed: true };
/// Longest `usage.cost` range that is listed day by day from its start.
const MAX_DENSE_DAYS: i64 = 1000;

/// How the engine reads the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// The OpenClaw state dir (`~/.openclaw`), holding `agents/`.
    pub state_dir: PathBuf,
    /// Where the index persists between worker runs (`None`: a temporary directory).
    pub data_dir: Option<PathBuf>,
    /// Lines longer than this are skipped and counted (`oversizeLines`), never buffered whole.
    pub max_line_bytes: u64,
    /// Parser threads for changed files.
    pub threads: usize,
    /// Most bytes of rendered rows one answer may hold; rows past it are cut with a diagnostic
    /// (`rowsCut`) instead of the answer being refused. 0: no limit.
    pub answer_budget: usize,
    /// The worker serves one command (`clawgate report`): no idle moment follows a call, so a
    /// call does what it would leave to them ([`sqlite::Databases::set_one_shot`]).
    pub one_shot: bool,
}

impl EngineConfig {
    /// 16 MiB: far above any real transcript line, far below memory trouble.
    pub const DEFAULT_MAX_LINE_BYTES: u64 = 16 << 20;
    /// The machine this ships on has two cores.
    pub const DEFAULT_THREADS: usize = 2;

    /// Defaults for a state dir.
    pub fn new(state_dir: impl Into<PathBuf>) -> EngineConfig {
        EngineConfig {
            state_dir: state_dir.into(),
            data_dir: None,
            max_line_bytes: Self::DEFAULT_MAX_LINE_BYTES,
            threads: Self::DEFAULT_THREADS,
            answer_budget: 0,
            one_shot: false,
        }
    }
}

/// What one agent's `sessions.json` was when last read.
#[derive(Debug, Clone, Default)]
struct StoreState {
    /// Stat facts of the file (`None`: absent or not read yet).
    meta: Option<FileMeta>,
    error: Option<String>,
    /// Digests of the file's entries when last read and applied ([`store::read_store`]): the
    /// next read builds only the entries whose text changed. At most [`DIGESTS_MAX`] in all.
    digests: Option<Vec<store::Digest>>,
}

/// Entry digests kept at most, over all agents (16 bytes each: 4 MiB). Past it, an agent's
/// `sessions.json` is compared entry by entry with the index, as before digests.
const DIGESTS_MAX: usize = 1 << 18;

/// How [`Engine::put_entries`] writes an agent's entries.
#[derive(Clone, Copy)]
enum Put<'a> {
    /// These are all of them: others are removed.
    All,
    /// Only these changed, each staying where it was (or at the given positions, which must be
    /// where they were), and this many of them are new keys (an OpenClaw database's nodes
    /// added; in key order).
    Patch(Option<&'a [usize]>, usize),
}

/// Owns the index and the live aggregates between calls.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    index: Option<Index>,
    prices: HashMap<String, Cached<PriceTable>>,
    stores: HashMap<String, StoreState>,
    /// Agents read from an OpenClaw 2026.7+ database instead of files.
    sqlite: sqlite::Databases,
    watch: watch::Watch,
    lives: live::Lives,
    rows: RowCache,
    /// Rows rendered for the last answer, kept in the index once it is sent
    /// ([`Self::keep_rendered`]): writing them first delayed a cold page by 10-16 ms.
    unkept: Vec<(u64, Arc<str>)>,
    /// The entries of the agent being refreshed, when they were just written whole: its
    /// parser threads read their files' row facts from here ([`index::EntryMemo`]). Dropped
    /// when that agent's files are done or its entries are patched.
    memo: Option<index::EntryMemo>,
    /// A cold agent's entries, held while its parser threads start: [`Engine::run_jobs`]
    /// writes them before the first result (which reads them), while the parsers, reading
    /// their row facts from [`Engine::memo`], already parse. Written in series, they idled a
    /// core ~30 ms per agent of 6,000 sessions.
    deferred: Option<(String, Vec<store::StoreEntry>)>,
    answers: payload::AnswerCache,
    /// Bumped whenever anything an answer depends on changes.
    change: u64,
    /// Indexes found unusable and rebuilt since start.
    discards: u64,
    /// Rewritten `sessions.json` files applied by their changed entries alone (tests).
    pub(crate) store_patches: u64,
}

/// A parser thread's result for the writer: the job's, and what it prepared to write.
type Parsed = (JobResult, Option<index::Prepared>);

/// A parser thread's side of the results channel: results go in batches of [`SEND_BATCH`]
/// (the rest when the thread ends), one wake-up of the writer each. Sent one by one, the
/// wake-ups and context switches were ~5% of a cold build's CPU on 54,000 sessions.
struct Outbox {
    tx: mpsc::SyncSender<Vec<Parsed>>,
    held: Vec<Parsed>,
}

impl Outbox {
    /// Queues a result; `false` when the writer is gone.
    fn send(&mut self, p: Parsed) -> bool {
        self.held.push(p);
        self.held.len() < SEND_BATCH || self.flush()
    }

    fn flush(&mut self) -> bool {
        self.held.is_empty()
            || self.tx.send(std::mem::replace(&mut self.held, Vec::with_capacity(SEND_BATCH))).is_ok()
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.flush();
    }
}

/// What [`Engine::refresh`] did.
#[derive(Debug, Default)]
struct RefreshStats {
    files_parsed: u64,
    bytes_parsed: u64,
}

/// A file whose rollup must be brought up to date: its new stat facts, and its id in the index
/// if it is known (the parser thread reads its old state from there, so queued jobs hold no
/// rollups).
struct Job {
    disc: Discovered,
    known: Option<i64>,
}

/// A file's state in the index before its job: what the live aggregates take away.
type Old = Box<(FileRow, FileRollup)>;

enum JobResult {
    Done { disc: Discovered, rollup: Box<FileRollup>, bytes: u64, old: Option<Old> },
    Unreadable { disc: Discovered, error: String, old: Option<Old> },
    Cancelled,
}

fn cancelled() -> WorkerError {
    WorkerError::new(WorkerErrorKind::Cancelled, "cancelled")
}

fn internal(e: impl std::fmt::Display) -> WorkerError {
    WorkerError::new(WorkerErrorKind::Internal, e.to_string())
}

impl From<IndexError> for WorkerError {
    fn from(e: IndexError) -> WorkerError {
        internal(e)
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Engine {
    pub fn new(config: EngineConfig) -> Engine {
        index::configure_sqlite();
        let mut sqlite = sqlite::Databases::default();
        sqlite.set_one_shot(config.one_shot);
        Engine {
            config,
            index: None,
            prices: HashMap::new(),
            stores: HashMap::new(),
            sqlite,
            watch: watch::Watch::default(),
            lives: live::Lives::default(),
            rows: RowCache::default(),
            unkept: Vec::new(),
            memo: None,
            deferred: None,
            answers: payload::AnswerCache::default(),
            change: 1,
            discards: 0,
            store_patches: 0,
        }
    }

    /// The configuration this engine reads with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Opens the index (once): off the handshake path, before the first job.
    pub fn open(&mut self) -> Result<&mut Index, WorkerError> {
        if self.index.is_none() {
            let identity = index::Identity {
                state_dir: std::path::absolute(&self.config.state_dir)
                    .unwrap_or_else(|_| self.config.state_dir.clone()),
                max_line_bytes: self.config.max_line_bytes,
            };
            let index = match Index::open(self.config.data_dir.as_deref(), &identity) {
                Ok(i) => i,
                Err(e) if self.config.data_dir.is_some() => {
                    // An unusable data dir costs restarts their head start, not answers.
                    tracing::warn!(error = %e, "Cannot keep the usage index in the data dir; using a temporary one.");
                    Index::open(None, &identity).map_err(|e| {
                        WorkerError::new(
                            WorkerErrorKind::Internal,
                            format!("cannot open the usage index: {e}"),
                        )
                    })?
                }
                Err(e) => {
                    return Err(WorkerError::new(
                        WorkerErrorKind::Internal,
                        format!("cannot open the usage index: {e}"),
                    ));
                }
            };
            if index.discarded {
                self.discards += 1;
                tracing::info!("The usage index was rebuilt (another version, store or a damaged file).");
            }
            self.index = Some(index);
        }
        Ok(self.index.as_mut().expect("opened above"))
    }

    /// Number of transcripts the index knows.
    pub fn cached_files(&mut self) -> usize {
        let Ok(index) = self.open() else { return 0 };
        index.count_all().unwrap_or(0) as usize
    }

    /// Approximate heap bytes held between calls: live aggregates, rendered rows, answers.
    pub fn cache_bytes(&self) -> usize {
        self.lives.heap_bytes() + self.rows.heap_bytes() + self.answers.heap_bytes()
    }

    /// Drops everything held between calls that can be rebuilt (after a job that went over the
    /// memory budget).
    pub fn shed(&mut self) {
        for s in self.stores.values_mut() {
            s.digests = None;
        }
        self.lives.clear();
        self.rows.clear();
        self.unkept = Vec::new();
        self.answers.clear();
        if let Some(i) = &self.index {
            i.shrink();
        }
        self.change += 1;
    }

    /// Answers one query (see [`Self::reply`]); the data is always sent.
    pub fn answer(
        &mut self,
        query: &UsageQuery,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(Answer, JobStats), WorkerError> {
        match self.reply(query, None, cancel, progress)? {
            (Reply::Answer(a), stats) => Ok((a, stats)),
            (Reply::Unchanged(_), _) => unreachable!("no fingerprint was given"),
        }
    }

    /// Answers one query. Called on a compute thread (not async). `cancel` is polled between
    /// files (and every few MB inside a big file); when set, the answer is
    /// [`WorkerErrorKind::Cancelled`], and rollups of files finished so far are kept. `known` is
    /// the fingerprint of the answer the caller holds: if the data is still that, the reply is
    /// [`Reply::Unchanged`]. `progress` is called now and then (files done/total, bytes).
    pub fn reply(
        &mut self,
        query: &UsageQuery,
        known: Option<u64>,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(Reply, JobStats), WorkerError> {
        let started = Instant::now();
        self.open()?;
        self.after_answer();
        let all_agents = discover::list_agents(&self.config.state_dir).map_err(|e| {
            WorkerError::new(
                WorkerErrorKind::StoreUnavailable,
                format!("cannot read {}: {e}", self.config.state_dir.display()),
            )
        })?;
        let gone = self.index_mut().retain_agents(&all_agents)?;
        if !gone.is_empty() {
            self.lives.invalidate(None);
            self.change += 1;
        }
        let agents: Vec<String> = match &query.agents {
            AgentScope::All => all_agents,
            AgentScope::One(id) => all_agents.into_iter().filter(|a| a.eq_ignore_ascii_case(id)).collect(),
        };
        let mut diag = Diagnostics {
            agents: agents.len() as u64,
            rollup_cache_discards: self.discards,
            ..Diagnostics::default()
        };
        self.refresh_prices(&agents, &mut diag);
        self.start_cold_live(query, &agents, cancel)?;
        let stats = self.refresh(&agents, cancel, progress, &mut diag)?;
        tracing::debug!(heap_mib = crate::alloc::heap_bytes() >> 20, "Refreshed.");
        diag.files_parsed = stats.files_parsed;
        diag.bytes_parsed = stats.bytes_parsed;
        let refreshed_at = started.elapsed();

        let mut job = JobStats {
            agents: agents.len() as u64,
            files_parsed: stats.files_parsed,
            bytes_parsed: stats.bytes_parsed,
            ..JobStats::default()
        };
        let reply = match (query.method, &query.key) {
            (Method::SessionsUsageTimeseries | Method::SessionsUsageLogs, None) => {
                return Err(WorkerError::new(
                    WorkerErrorKind::InvalidRequest,
                    format!("key is required for {}", query.method.name().rsplit('.').next().unwrap_or("")),
                ));
            }
            (Method::SessionsUsageTimeseries | Method::SessionsUsageLogs, Some(key)) => {
                let (answer, bytes) = self.one_session(query, key, &agents, cancel)?;
                job.files_total = 1;
                job.files_parsed += 1;
                job.bytes_parsed += bytes;
                Reply::Answer(answer)
            }
            (Method::SessionsUsage, Some(key)) => {
                Reply::Answer(self.keyed(query, key, &agents, &mut diag, &mut job)?)
            }
            _ => self.aggregated(query, known, &agents, &mut diag, &mut job, cancel)?,
        };
        job.duration_ms = started.elapsed().as_millis() as u64;
        tracing::debug!(
            refresh_us = refreshed_at.as_micros() as u64,
            answer_us = (started.elapsed() - refreshed_at).as_micros() as u64,
            "Answer phases."
        );
        Ok((reply, job))
    }

    fn index_mut(&mut self) -> &mut Index {
        self.index.as_mut().expect("opened at the start of every call")
    }

    fn index(&self) -> &Index {
        self.index.as_ref().expect("opened at the start of every call")
    }

    /// Re-reads changed `models.json` files (prices) of the agents in scope and the default
    /// agent. A change invalidates the live aggregates priced with the old tables.
    fn refresh_prices(&mut self, agents: &[String], diag: &mut Diagnostics) {
        let dir = self.config.state_dir.clone();
        let mut price_agents: Vec<&str> = agents.iter().map(String::as_str).collect();
        price_agents.push(DEFAULT_AGENT);
        for a in price_agents {
            let c = self.prices.entry(a.to_owned()).or_default();
            let before = c.stamp;
            c.refresh(&store::models_path(&dir, a), PriceTable::parse);
            if c.stamp != before {
                self.change += 1;
            }
            if let Some(e) = &c.error {
                diag.models_json_errors += 1;
                diag.error(format!("models.json: {e}"));
            }
        }
    }

    /// One stamp over every price table (costs in live aggregates depend on them), from the
    /// tables' stat facts: the same in a restarted worker while `models.json` is unchanged.
    fn prices_stamp(&self) -> u64 {
        let mut stamps: Vec<(&str, Option<FileMeta>)> = self
            .prices
            .iter()
            .filter(|(_, c)| c.value.is_some())
            .map(|(a, c)| (a.as_str(), c.meta()))
            .collect();
        stamps.sort_unstable_by(|a, b| a.0.cmp(b.0));
        payload::hash_of(&stamps)
    }

    /// Saves what is worth keeping for a restarted worker (live aggregates); called when idle
    /// and at exit.
    pub fn save(&mut self) {
        self.after_answer();
        let Some(index) = self.index.as_mut() else { return };
        match self.lives.save(index) {
            Ok(n) if n > 0 => tracing::debug!(shapes = n, "Saved live aggregates."),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "Cannot save live aggregates; a restart rebuilds them."),
        }
        index.checkpoint_due();
    }

    /// Work an answer does not wait for, done once it is sent (and before the next job, in case
    /// it was not): the rows rendered for it are kept, and a cold build's remaining indexes are
    /// made ([`Index::end_late`]).
    pub fn after_answer(&mut self) {
        self.keep_rendered();
        let Some(index) = self.index.as_mut() else { return };
        if let Err(error) = index.end_late() {
            // The next open makes them; until then queries only go without them.
            tracing::warn!(%error, "Cannot make the usage index's lookup indexes yet.");
        }
    }

    /// Keeps the rows rendered for the answers given so far in the index (called once an answer
    /// is sent, before the next job, and when idle or exiting).
    fn keep_rendered(&mut self) {
        if self.unkept.is_empty() {
            return;
        }
        let rows = std::mem::take(&mut self.unkept);
        let Some(index) = self.index.as_mut() else { return };
        if let Err(error) = index.put_rendered(&rows, now_ms()) {
            tracing::debug!(%error, "Cannot keep rendered rows in the index.");
        }
    }

    /// Work done while idle, between calls: the listings of OpenClaw databases that are due
    /// (see [`sqlite::Databases::due`]): complete ones, each ~0.2 s on a 6,600-session agent
    /// (every session counted, the whole session index compared), and on agents too large for
    /// a call to do so, a look at labels and rewrite generations; and the transcript
    /// directories a call found listed 30 s ago ([`watch::Watch::due`]), each listed whole. A
    /// call finding them due would pay that instead of an append's few milliseconds. Returns
    /// the agents listed.
    pub fn maintain(&mut self, cancel: &AtomicBool) -> Result<Vec<String>, WorkerError> {
        let mut due = self.sqlite.due();
        for dir in self.watch.due() {
            // `<state dir>/agents/<agent>/sessions`.
            if let Some(agent) = dir.parent().and_then(Path::file_name).and_then(|n| n.to_str()) {
                due.push(agent.to_owned());
            }
        }
        due.sort_unstable();
        due.dedup();
        if due.is_empty() {
            return Ok(due);
        }
        self.open()?;
        self.after_answer();
        let mut diag = Diagnostics::default();
        self.refresh_prices(&due, &mut diag);
        self.sqlite.set_idle(true);
        // Idle listings end here even if one panics (the caller catches it): a call must not
        // list as an idle moment does.
        let refreshed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.refresh(&due, cancel, &mut |_| {}, &mut diag)
        }));
        self.sqlite.set_idle(false);
        refreshed.unwrap_or_else(|p| std::panic::resume_unwind(p))?;
        Ok(due)
    }

    /// Brings the index up to date for `agents`: session indexes first, then transcripts.
    fn refresh(
        &mut self,
        agents: &[String],
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(Progress),
        diag: &mut Diagnostics,
    ) -> Result<RefreshStats, WorkerError> {
        self.watch.drain();
        // Nothing indexed yet: write the rows first and their sort indexes after.
        self.index_mut().begin_bulk()?;
        // Agent by agent: what is held while listing and parsing is one agent's worth.
        let mut result = Ok(RefreshStats::default());
        // Progress counts over all agents so far (later agents' files join the total as they
        // are listed).
        let mut before = Progress::default();
        // The next agent's database listing, made while this agent's files were parsed.
        let mut ahead: Option<Ahead> = None;
        for (k, agent) in agents.iter().enumerate() {
            let mut jobs: Vec<Job> = Vec::new();
            let base = before;
            // This agent's runs so far (one per slice of a sliced listing), and the current one.
            let runs = Cell::new(Progress::default());
            let last = Cell::new(Progress::default());
            let mut report = |p: Progress| {
                last.set(p);
                progress(added(added(base, runs.get()), p));
            };
            self.memo = None;
            let listed = ahead.take();
            let step = self.refresh_agent(agent, &mut jobs, diag, listed).and_then(|mut slicing| {
                tracing::debug!(
                    agent,
                    jobs = jobs.len(),
                    slices = slicing.is_some(),
                    heap_mib = crate::alloc::heap_bytes() >> 20,
                    "Listed."
                );
                let list_ahead = slicing.is_none() && LIST_AHEAD_JOBS.contains(&jobs.len());
                let stats = match agents.get(k + 1).filter(|_| list_ahead) {
                    Some(next) => {
                        self.restore_db_state(next)?;
                        let (stats, listing) = self.run_jobs_listing(next, jobs, cancel, &mut report, diag);
                        ahead = Some(listing);
                        stats
                    }
                    None => self.run_jobs(jobs, cancel, &mut report, diag),
                };
                let mut stats = stats?;
                while let Some(s) = slicing.as_mut() {
                    let mut jobs = Vec::new();
                    if !self.next_slice(agent, s, &mut jobs, diag)? {
                        slicing = None;
                    }
                    tracing::debug!(
                        agent,
                        jobs = jobs.len(),
                        heap_mib = crate::alloc::heap_bytes() >> 20,
                        "Listed a slice."
                    );
                    runs.set(added(runs.get(), last.take()));
                    let more = self.run_jobs(jobs, cancel, &mut report, diag)?;
                    stats.files_parsed += more.files_parsed;
                    stats.bytes_parsed += more.bytes_parsed;
                }
                self.memo = None;
                // Applied: the database listing is the base of the next one, here and after a
                // restart.
                if let Some(saved) = self.sqlite.confirm(agent) {
                    self.index_mut().set_db_state(agent, &saved)?;
                }
                Ok(stats)
            });
            before = added(added(before, runs.get()), last.get());
            match (step, &mut result) {
                (Ok(s), Ok(total)) => {
                    total.files_parsed += s.files_parsed;
                    total.bytes_parsed += s.bytes_parsed;
                }
                (Err(e), _) => {
                    result = Err(e);
                    break;
                }
                (Ok(_), Err(_)) => unreachable!("the loop stops at the first error"),
            }
        }
        self.memo = None;
        self.deferred = None;
        if result.is_err() {
            // Changes found but not all applied (cancelled, or the index failed): whatever the
            // watches and database stamps say now, look at everything again next time.
            for agent in agents {
                self.watch.forget(&discover::sessions_dir(&self.config.state_dir, agent));
                self.sqlite.forget(agent);
            }
        }
        // Made even when the refresh failed: what it wrote stays, and answers walk these.
        self.index_mut().end_bulk()?;
        result
    }

    /// Finds what changed in one agent: its session index (applied at once) and the
    /// transcripts to parse (pushed to `jobs`). Removals and renames are applied at once. A
    /// directory listing longer than [`SLICE_FILES`] pushes its first slice's jobs and returns
    /// the rest, for [`Engine::next_slice`].
    fn refresh_agent(
        &mut self,
        agent: &str,
        jobs: &mut Vec<Job>,
        diag: &mut Diagnostics,
        listed: Option<Ahead>,
    ) -> Result<Option<Slicing>, WorkerError> {
        let dir = self.config.state_dir.clone();
        // An OpenClaw 2026.7+ database wins over legacy files.
        let (listing, mut archives, ready) = match listed {
            Some(Ahead { listing, archives, entries }) => (listing, archives, entries),
            None => {
                self.restore_db_state(agent)?;
                (self.sqlite.list(&dir, agent, diag), None, None)
            }
        };
        let mut archives_of = |diag: &mut Diagnostics| match archives.take() {
            Some(a) => a,
            None => archived_files(&dir, agent, diag),
        };
        if !matches!(listing, sqlite::Listing::NoDatabase)
            && let Some(s) = self.stores.get_mut(agent)
        {
            // The database's entries replace the file's: its digests no longer describe the index.
            s.digests = None;
        }
        match listing {
            sqlite::Listing::NoDatabase => {}
            sqlite::Listing::Unchanged => return Ok(None),
            sqlite::Listing::Failed => {
                // Unreadable: its sessions count as absent until it is readable again.
                let archives = archives_of(diag);
                self.compare_listing(agent, archives, jobs)?;
                return Ok(None);
            }
            sqlite::Listing::Changed { mut listed, entries } => {
                if let Some(ready) = ready {
                    self.put_ready_entries(agent, ready, Put::All)?;
                } else if let Some(entries) = entries {
                    self.apply_entries(agent, entries, diag)?;
                }
                // Archives the database does not hold already (OpenClaw's importer leaves them
                // out; clawgate's demo converter puts them in): counted once either way.
                let archives = archives_of(diag);
                if !archives.is_empty() {
                    let in_db: foldhash::HashSet<&str> =
                        listed.iter().map(|d| d.session_id.as_str()).collect();
                    let apart: Vec<Discovered> =
                        archives.into_iter().filter(|a| !in_db.contains(a.session_id.as_str())).collect();
                    listed.extend(apart);
                }
                self.compare_listing(agent, listed, jobs)?;
                return Ok(None);
            }
            sqlite::Listing::Sliced(slices) => {
                if !self.stream_db_entries(agent, diag)? {
                    return Ok(None);
                }
                let cold = !self.index().has_files(std::slice::from_ref(&agent.to_owned()))?;
                let mut slicing = Slicing { listing: Sliced::Db(slices, None), cold, vanished: Vec::new() };
                if self.next_slice(agent, &mut slicing, jobs, diag)? {
                    return Ok(Some(slicing));
                }
                return Ok(None);
            }
            sqlite::Listing::Some { listed, entries, patch, stream, added } => {
                if let Some(entries) = entries {
                    self.apply_entries(agent, entries, diag)?;
                }
                if stream && !self.stream_db_entries(agent, diag)? {
                    return Ok(None);
                }
                if let Some(entries) = patch
                    && !self.patch_entries(agent, entries, added)?
                {
                    // Keys came and went: the agent is listed completely, now (that listing
                    // never patches, so this happens once).
                    self.sqlite.relist(agent);
                    return self.refresh_agent(agent, jobs, diag, None);
                }
                for d in listed {
                    match self.index().file_by_path(&d.path)? {
                        Some(k) if k.disc.meta == d.meta => {}
                        Some(k) => jobs.push(Job { disc: d, known: Some(k.id) }),
                        None => jobs.push(Job { disc: d, known: None }),
                    }
                }
                return Ok(None);
            }
        }
        self.refresh_store(agent, diag)?;
        let sessions = discover::sessions_dir(&dir, agent);
        match self.watch.pending(&sessions) {
            watch::Pending::Nothing => {}
            watch::Pending::Names(names) => {
                // Vanished files last: a rename's new name (in the same batch) follows the
                // old file's rollup instead of parsing it again.
                let mut vanished = Vec::new();
                for name in names {
                    vanished.extend(self.check_name(agent, &sessions, &name, jobs, diag)?);
                }
                for row in vanished {
                    if self.index().file(row.id)?.is_some_and(|now| now.disc.path == row.disc.path) {
                        self.remove(row)?;
                    }
                }
            }
            watch::Pending::Everything => {
                self.watch.listing(&sessions);
                match discover::list_names(&dir, agent, diag, |_| true) {
                    Ok(Some(names)) => {
                        let cold = !self.index().has_files(std::slice::from_ref(&agent.to_owned()))?;
                        let mut slicing = Slicing { listing: Sliced::Dir(names), cold, vanished: Vec::new() };
                        if self.next_slice(agent, &mut slicing, jobs, diag)? {
                            return Ok(Some(slicing));
                        }
                    }
                    // No `sessions/`: whatever was indexed of it is gone.
                    Ok(None) => self.compare_listing(agent, Vec::new(), jobs)?,
                    Err(e) => {
                        self.watch.forget(&sessions);
                        diag.error(format!("listing sessions of agent {agent}: {e}"));
                    }
                }
            }
        }
        Ok(None)
    }

    /// What a previous worker saved of `agent`'s database listing, the base of the next one.
    fn restore_db_state(&mut self, agent: &str) -> Result<(), WorkerError> {
        if !self.sqlite.knows(agent)
            && let Some(saved) = self.index().db_state(agent)?
        {
            self.sqlite.restore(agent, &saved);
        }
        Ok(())
    }

    /// Re-reads one agent's `sessions.json` when its stat changed (since this process last read
    /// it, or since the index stored its entries).
    fn refresh_store(&mut self, agent: &str, diag: &mut Diagnostics) -> Result<(), WorkerError> {
        let path = store::store_path(&self.config.state_dir, agent);
        let meta = match discover::stat_regular(&path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                let msg = format!("{}: {e}", path.display());
                diag.sessions_json_errors += 1;
                diag.error(format!("sessions.json: {msg}"));
                None
            }
        };
        if !self.stores.contains_key(agent) {
            let stored = self.index().store_meta(agent)?;
            self.stores.insert(agent.to_owned(), StoreState { meta: stored, error: None, digests: None });
        }
        let state = self.stores.get_mut(agent).expect("inserted above");
        if state.meta == meta {
            if let Some(e) = &state.error {
                diag.sessions_json_errors += 1;
                diag.error(format!("sessions.json: {e}"));
            }
            return Ok(());
        }
        state.meta = meta;
        state.error = None;
        // The digests of the last read stand for the entries in the index only once that read
        // is applied: taken now, put back after.
        let old = state.digests.take();
        let parsed = match meta {
            None => Ok((store::StoreRead::All(Vec::new()), None)),
            Some(_) => store::read_store(&path, old.as_deref(), sqlite::PATCH_MAX),
        };
        let digests = match parsed {
            Ok((store::StoreRead::Changed(changed), digests)) => {
                let (ords, entries): (Vec<usize>, Vec<store::StoreEntry>) = changed.into_iter().unzip();
                if self.put_entries(agent, entries, Put::Patch(Some(&ords), 0))? {
                    self.store_patches += 1;
                    digests
                } else {
                    // A key that is not where it was: every entry, read again.
                    self.apply_whole_read(agent, &path, store::read_store(&path, None, 0), diag)?
                }
            }
            parsed => self.apply_whole_read(agent, &path, parsed, diag)?,
        };
        self.index_mut().set_store_meta(agent, meta.as_ref())?;
        let others: usize = self
            .stores
            .iter()
            .filter(|(a, _)| *a != agent)
            .filter_map(|(_, s)| s.digests.as_ref())
            .map(Vec::len)
            .sum();
        let state = self.stores.get_mut(agent).expect("inserted above");
        state.digests = digests.filter(|d| others + d.len() <= DIGESTS_MAX);
        Ok(())
    }

    /// Applies a read of all of an agent's `sessions.json` ([`store::read_store`], not a
    /// patch): its entries listed, walked from its text or streamed from the file, the last
    /// two written as they are built, never all held (see [`Engine::write_all_entries`]).
    /// Returns the digests the read made, if any.
    fn apply_whole_read(
        &mut self,
        agent: &str,
        path: &std::path::Path,
        read: Result<(store::StoreRead, Option<Vec<store::Digest>>), String>,
        diag: &mut Diagnostics,
    ) -> Result<Option<Vec<store::Digest>>, WorkerError> {
        match read {
            Ok((store::StoreRead::Stream(file), _)) => {
                if let Err(e) = self.write_all_entries(agent, |put| store::for_each_entry(file, put))? {
                    self.apply_read(agent, path, Err(e), diag)?;
                }
                Ok(None)
            }
            Ok((store::StoreRead::Whole(whole), _)) => {
                let mut digests = None;
                let walked = self.write_all_entries(agent, |put| {
                    digests = whole.walk(put);
                    digests.as_ref().map(|_| ()).ok_or_else(String::new)
                })?;
                if walked.is_err() {
                    // Not an object of entries: nothing of it was written; why, or (should
                    // serde_json read what the cursor refused) its entries.
                    self.apply_read(agent, path, whole.fallback().map(store::StoreRead::All), diag)?;
                }
                Ok(digests)
            }
            read => {
                let digests = read.as_ref().ok().and_then(|(_, d)| d.clone());
                self.apply_read(agent, path, read.map(|(r, _)| r), diag)?;
                Ok(digests)
            }
        }
    }

    /// Writes all of an agent's entries, in one transaction, as `feed` builds them (from a
    /// `sessions.json` too large to hold its entries at once): what is held per entry is a hash
    /// of its key. `Err` with what `feed` found wrong with its file, and nothing written.
    fn write_all_entries(
        &mut self,
        agent: &str,
        feed: impl FnOnce(&mut dyn FnMut(store::StoreEntry)) -> Result<(), String>,
    ) -> Result<Result<(), String>, WorkerError> {
        self.write_deferred()?;
        self.memo = None;
        let mut read = Ok(());
        let index = self.index.as_mut().expect("opened");
        let written = write_entries_with(index, &mut self.lives, &self.prices, agent, None, |index| {
            let mut w = index.entry_writer(agent)?;
            let mut failed = None;
            read = feed(&mut |mut e| {
                if failed.is_none() {
                    e.key = store::canonical_key(agent, &e.key);
                    failed = w.put(&e).err();
                }
            });
            match (failed, &read) {
                (Some(e), _) => Err(e),
                // Rolled back: the entries already written go with the file's error.
                (None, Err(_)) => Err(IndexError::Abandoned),
                (None, Ok(())) => w.finish().map(Some),
            }
        });
        match written {
            Ok((_, changed)) => {
                self.change += u64::from(changed);
                Ok(Ok(()))
            }
            Err(_) if read.is_err() => Ok(read),
            Err(e) => Err(e),
        }
    }

    /// Applies a whole read of an agent's `sessions.json` (an unreadable one: no entries, and
    /// the error in diagnostics until the file changes).
    fn apply_read(
        &mut self,
        agent: &str,
        path: &std::path::Path,
        read: Result<store::StoreRead, String>,
        diag: &mut Diagnostics,
    ) -> Result<(), WorkerError> {
        let entries = match read {
            Ok(store::StoreRead::All(entries)) => Ok(entries),
            Ok(store::StoreRead::Changed(_) | store::StoreRead::Whole(_) | store::StoreRead::Stream(_)) => {
                unreachable!("a read of listed entries")
            }
            Err(e) => {
                let msg = format!("{}: {e}", path.display());
                self.stores.get_mut(agent).expect("inserted above").error = Some(msg.clone());
                diag.sessions_json_errors += 1;
                diag.error(format!("sessions.json: {msg}"));
                Err(e)
            }
        };
        self.apply_entries(agent, entries, diag)
    }

    /// Stores an agent's entries and recomputes the row facts of the files they name; a file
    /// whose channel changed moves between `byChannel` groups in the live aggregates.
    fn apply_entries(
        &mut self,
        agent: &str,
        entries: Result<Vec<store::StoreEntry>, String>,
        _diag: &mut Diagnostics,
    ) -> Result<(), WorkerError> {
        // A malformed file: transcripts still count, without labels (no entries).
        self.put_entries(agent, entries.unwrap_or_default(), Put::All).map(|_| ())
    }

    /// Updates some of an agent's entries in place (see [`Index::patch_entries`]), as
    /// [`Engine::apply_entries`] does all; `added` of them are new keys. `false`, with nothing
    /// changed, when not exactly `added` are unknown (or the patch is unreadable, which it
    /// should never be).
    fn patch_entries(
        &mut self,
        agent: &str,
        entries: Result<Vec<store::StoreEntry>, String>,
        added: usize,
    ) -> Result<bool, WorkerError> {
        match entries {
            Ok(entries) => self.put_entries(agent, entries, Put::Patch(None, added)),
            Err(_) => Ok(false),
        }
    }

    /// [`Engine::apply_entries`] ([`Put::All`]) or [`Engine::patch_entries`]. `false`, with
    /// nothing changed, when a patch names a key that is not where it should be. During a cold
    /// build, all of an agent's entries that fit [`index::EntryMemo`] are held for
    /// [`Engine::run_jobs`] to write ([`Engine::deferred`]).
    fn put_entries(
        &mut self,
        agent: &str,
        entries: Vec<store::StoreEntry>,
        put: Put<'_>,
    ) -> Result<bool, WorkerError> {
        let ready = ReadyEntries::of(agent, entries, matches!(put, Put::All));
        self.put_ready_entries(agent, ready, put)
    }

    /// [`Engine::put_entries`] of entries made ready for `put` ([`ReadyEntries::of`]).
    fn put_ready_entries(
        &mut self,
        agent: &str,
        ReadyEntries { entries, memo }: ReadyEntries,
        put: Put<'_>,
    ) -> Result<bool, WorkerError> {
        self.write_deferred()?;
        self.memo = None;
        if memo.is_some() && self.index().is_bulk() {
            // No file is indexed yet, so none has facts to refresh; nothing reads entries
            // before run_jobs writes them.
            self.memo = memo;
            self.deferred = Some((agent.to_owned(), entries));
            self.change += 1;
            return Ok(true);
        }
        let (known, changed) = write_entries(
            self.index.as_mut().expect("opened"),
            &mut self.lives,
            &self.prices,
            agent,
            entries,
            put,
            memo.as_ref(),
        )?;
        self.memo = memo;
        // Answers cached against the index stay valid when no entry changed.
        self.change += u64::from(changed);
        Ok(known)
    }

    /// Writes the entries [`Engine::put_entries`] held, if any.
    fn write_deferred(&mut self) -> Result<(), WorkerError> {
        let Some((agent, entries)) = self.deferred.take() else { return Ok(()) };
        let index = self.index.as_mut().expect("opened");
        write_entries(index, &mut self.lives, &self.prices, &agent, entries, Put::All, self.memo.as_ref())?;
        Ok(())
    }

    /// One changed name in a watched directory: a new, grown, rewritten or removed transcript.
    /// A known file that is gone is returned, for the caller to remove after the other names.
    fn check_name(
        &mut self,
        agent: &str,
        dir: &std::path::Path,
        name: &str,
        jobs: &mut Vec<Job>,
        diag: &mut Diagnostics,
    ) -> Result<Option<FileRow>, WorkerError> {
        let Some((session_id, kind)) = discover::classify(name) else { return Ok(None) };
        let path = dir.join(name);
        let known = self.index().file_by_path(&path)?;
        let meta = match discover::stat_regular(&path) {
            Ok(meta) => meta,
            Err(e) => {
                if e.kind() == std::io::ErrorKind::InvalidInput {
                    diag.skipped_special_files += 1;
                    diag.error(format!("{}: skipped, {e}", path.display()));
                }
                return Ok(known);
            }
        };
        let disc = Discovered {
            path,
            file_name: name.to_owned(),
            agent_id: agent.to_owned(),
            session_id,
            kind,
            meta,
            span: None,
        };
        match known {
            Some(k) if k.disc.meta == meta => {}
            Some(k) => jobs.push(Job { disc, known: Some(k.id) }),
            None => {
                // A rename keeps device and inode: follow it without re-reading.
                match self.index().file_by_inode(meta.dev, meta.ino, agent)? {
                    Some(old) if discover::stat_regular(&old.disc.path).is_err() => {
                        self.follow_rename(old, disc)?
                    }
                    _ => jobs.push(Job { disc, known: None }),
                }
            }
        }
        Ok(None)
    }

    /// Compares a full listing of one agent with the index: new and changed files become
    /// jobs, renamed ones are followed, vanished ones removed.
    fn compare_listing(
        &mut self,
        agent: &str,
        listed: Vec<Discovered>,
        jobs: &mut Vec<Job>,
    ) -> Result<(), WorkerError> {
        let mut vanished = Vec::new();
        self.compare_slice(agent, listed, (None, None), false, &mut vanished, jobs)?;
        self.remove_vanished(vanished)
    }

    /// Writes all entries of `agent`'s database as they are built
    /// ([`sqlite::Databases::stream_entries`]). `false` when the database could not be read
    /// (reported; the entries are as they were, and the next call lists it again).
    fn stream_db_entries(&mut self, agent: &str, diag: &mut Diagnostics) -> Result<bool, WorkerError> {
        let mut dbs = std::mem::take(&mut self.sqlite);
        let dir = self.config.state_dir.clone();
        let mut failed = None;
        let written = self.write_all_entries(agent, |put| {
            dbs.stream_entries(&dir, agent, put).map_err(|e| {
                let msg = e.to_string();
                failed = Some(e);
                msg
            })
        });
        self.sqlite = dbs;
        // A read error (nothing written) is in `failed`; an error of the index is the caller's.
        let _read = written?;
        match failed {
            Some(e) => {
                self.sqlite.failed(agent, &sqlite::db_path(&dir, agent), &e, diag);
                Ok(false)
            }
            None => Ok(true),
        }
    }

    /// Compares the next slice of a sliced listing with the index (see
    /// [`Engine::compare_slice`]); after the last one, removes the files no slice listed.
    /// Returns whether slices remain. A database that cannot be read midway is reported and
    /// ends the listing with nothing removed (the next call lists it again).
    fn next_slice(
        &mut self,
        agent: &str,
        s: &mut Slicing,
        jobs: &mut Vec<Job>,
        diag: &mut Diagnostics,
    ) -> Result<bool, WorkerError> {
        let (listed, after, upto, more) = match &mut s.listing {
            Sliced::Dir(names) => {
                let after = names.last_path();
                let listed = names.next_slice(SLICE_FILES, diag);
                let more = names.remaining() > 0;
                (listed, after, if more { names.last_path() } else { None }, more)
            }
            Sliced::Db(slices, archives) => {
                let after = slices.last_path();
                let listed = match archives {
                    Some(_) => Ok(()),
                    None => {
                        // Listed once, for the slices to share out by path.
                        let all = archived_files(&self.config.state_dir, agent, diag);
                        self.sqlite.not_held(slices, all).map(|mut apart| {
                            apart.sort_unstable_by(|a, b| path_bytes(&a.path).cmp(path_bytes(&b.path)));
                            *archives = Some(apart);
                        })
                    }
                }
                .and_then(|()| self.sqlite.next_sessions(slices, SLICE_FILES));
                match listed {
                    Ok(mut listed) => {
                        let more = !slices.done();
                        let upto = if more { slices.last_path() } else { None };
                        let archives = archives.as_mut().expect("listed above");
                        let within = match &upto {
                            Some(upto) => {
                                archives.partition_point(|a| path_bytes(&a.path) <= path_bytes(upto))
                            }
                            None => archives.len(),
                        };
                        listed.extend(archives.drain(..within));
                        (listed, after, upto, more)
                    }
                    Err(e) => {
                        let db = sqlite::db_path(&self.config.state_dir, agent);
                        self.sqlite.failed(agent, &db, &e, diag);
                        return Ok(false);
                    }
                }
            }
        };
        self.compare_slice(
            agent,
            listed,
            (after.as_deref(), upto.as_deref()),
            s.cold,
            &mut s.vanished,
            jobs,
        )?;
        if !more {
            self.remove_vanished(std::mem::take(&mut s.vanished))?;
        }
        Ok(more)
    }

    /// Compares `listed`, every file of `agent` whose path is in `range` (after the first
    /// bound, up to and including the second; `None`: unbounded), with what the index knows
    /// there: new and changed files become jobs, a new name of a file that vanished in this or
    /// an earlier range is followed, and the known files not listed join `vanished`. A rename
    /// across ranges whose new name comes first is parsed as new (and the old row removed
    /// after): the same totals, a file's work more. `cold`: the agent had nothing indexed, so
    /// every file is new, without asking the index.
    fn compare_slice(
        &mut self,
        agent: &str,
        listed: Vec<Discovered>,
        range: (Option<&std::path::Path>, Option<&std::path::Path>),
        cold: bool,
        vanished: &mut Vec<index::Known>,
        jobs: &mut Vec<Job>,
    ) -> Result<(), WorkerError> {
        jobs.reserve(listed.len());
        let mut known: HashMap<Vec<u8>, index::Known> = HashMap::new();
        if !cold {
            self.index().known_of_agent(agent, range, |path, k| {
                known.insert(path.to_vec(), k);
            })?;
        }
        if known.is_empty() && vanished.is_empty() {
            // Nothing to compare with: every file goes to the jobs without a second list of them
            // all (one agent of 220,000 files held the listing, that list and the jobs at once).
            jobs.extend(listed.into_iter().map(|disc| Job { disc, known: None }));
            return Ok(());
        }
        let mut fresh: Vec<Discovered> = Vec::new();
        for d in listed {
            match known.remove(d.path.as_os_str().as_encoded_bytes()) {
                Some(k) if k.meta == d.meta => {}
                Some(k) => jobs.push(Job { disc: d, known: Some(k.id) }),
                None => fresh.push(d),
            }
        }
        vanished.extend(known.into_values());
        if fresh.is_empty() {
            return Ok(());
        }
        // Gone from the listing: renamed (same inode) or removed.
        let mut by_inode: HashMap<(u64, u64), index::Known> =
            vanished.drain(..).map(|k| ((k.meta.dev, k.meta.ino), k)).collect();
        for d in fresh {
            match by_inode.remove(&(d.meta.dev, d.meta.ino)) {
                Some(k) => {
                    if let Some(row) = self.index().file(k.id)? {
                        self.follow_rename(row, d)?;
                    }
                }
                None => jobs.push(Job { disc: d, known: None }),
            }
        }
        vanished.extend(by_inode.into_values());
        Ok(())
    }

    /// Removes known files that a listing did not list.
    fn remove_vanished(&mut self, vanished: Vec<index::Known>) -> Result<(), WorkerError> {
        for k in vanished {
            if let Some(row) = self.index().file(k.id)? {
                self.remove(row)?;
            }
        }
        Ok(())
    }

    /// A known file under a new name (archived to `.deleted.<ts>`, say): same bytes, new path.
    fn follow_rename(&mut self, old: FileRow, new: Discovered) -> Result<(), WorkerError> {
        self.write_deferred()?;
        let price_tables = self.prices.clone();
        let price = price_fn(&price_tables);
        let index = self.index.as_mut().expect("opened");
        let lives = &mut self.lives;
        index.batch(|index| {
            let Some(rollup) = index.rollup(old.id)? else { return Ok(()) };
            // The new name keeps the old stat facts but its own ctime (a rename changes it).
            let mut disc = new.clone();
            disc.meta = FileMeta { ctime_ns: new.meta.ctime_ns, ..old.disc.meta };
            if disc.meta != new.meta {
                // Not only renamed: size or mtime moved too; the next call re-reads it.
                disc.meta = new.meta;
            }
            index.rename_file(old.id, &disc)?;
            let facts = index.facts_for(&disc, None)?;
            index.set_facts(old.id, &facts)?;
            lives.file_changed(
                index,
                &Change {
                    id: old.id,
                    agent: &old.disc.agent_id,
                    old: Some((&old.disc, &rollup, old.facts.channel.as_deref())),
                    new: Some((&disc, &rollup, facts.channel.as_deref())),
                },
                &price,
            )?;
            Ok(())
        })?;
        self.change += 1;
        Ok(())
    }

    fn remove(&mut self, old: FileRow) -> Result<(), WorkerError> {
        self.write_deferred()?;
        let price_tables = self.prices.clone();
        let price = price_fn(&price_tables);
        let index = self.index.as_mut().expect("opened");
        let lives = &mut self.lives;
        index.batch(|index| {
            if let Some(rollup) = index.rollup(old.id)? {
                lives.file_changed(
                    index,
                    &Change {
                        id: old.id,
                        agent: &old.disc.agent_id,
                        old: Some((&old.disc, &rollup, old.facts.channel.as_deref())),
                        new: None,
                    },
                    &price,
                )?;
            }
            index.remove_file(old.id)
        })?;
        self.change += 1;
        Ok(())
    }

    /// [`Engine::run_jobs`] while a helper thread lists agent `next`'s database and archived
    /// transcripts: on a cold build the parser threads would otherwise wait for each agent's
    /// listing (~0.2 s for a database of 6,000 sessions, nine times on the bench's 54,000).
    /// Holds two agents' listings at once, so only worth it when this agent has many files to
    /// parse.
    fn run_jobs_listing(
        &mut self,
        next: &str,
        jobs: Vec<Job>,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(Progress),
        diag: &mut Diagnostics,
    ) -> (Result<RefreshStats, WorkerError>, Ahead) {
        let mut dbs = std::mem::take(&mut self.sqlite);
        let dir = self.config.state_dir.clone();
        let (stats, listed) = std::thread::scope(|scope| {
            let lister = std::thread::Builder::new().name("usage-list".into()).spawn_scoped(scope, || {
                let mut d = Diagnostics::default();
                let mut listing = dbs.list(&dir, next, &mut d);
                // The archives and entries too, where `refresh_agent` takes them: a directory of
                // one file per session and a memo of 6,000 entries were ~10 ms of the step
                // between two agents, which no other work overlaps.
                let archives = matches!(listing, sqlite::Listing::Changed { .. } | sqlite::Listing::Failed)
                    .then(|| archived_files(&dir, next, &mut d));
                let entries = match &mut listing {
                    sqlite::Listing::Changed { entries: e @ Some(Ok(_)), .. } => {
                        e.take().and_then(Result::ok).map(|e| ReadyEntries::of(next, e, true))
                    }
                    _ => None,
                };
                (Ahead { listing, archives, entries }, d)
            });
            let stats = self.run_jobs(jobs, cancel, progress, diag);
            let listed = lister.map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
            (stats, listed)
        });
        let ahead = match listed {
            Ok((ahead, d)) => {
                diag.absorb_listing(d);
                ahead
            }
            // No thread to be had: listed here, after.
            Err(_) => Ahead { listing: dbs.list(&dir, next, diag), archives: None, entries: None },
        };
        self.sqlite = dbs;
        (stats, ahead)
    }

    /// Parses the changed files on `threads` threads while this thread writes their results to
    /// the index in transactions of [`BATCH_FILES`], applying each file's change to the live
    /// aggregates: parsing and writing overlap, and memory holds a bounded number of results.
    fn run_jobs(
        &mut self,
        jobs: Vec<Job>,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(Progress),
        diag: &mut Diagnostics,
    ) -> Result<RefreshStats, WorkerError> {
        let total = jobs.len() as u64;
        let mut stats = RefreshStats::default();
        progress(Progress { files_done: 0, files_total: total, bytes_done: 0 });
        if jobs.is_empty() {
            self.write_deferred()?;
            return Ok(stats);
        }
        let deferred = self.deferred.take();
        self.change += 1;
        let max_line = self.config.max_line_bytes;
        let index_path = self.index().path();
        let work = group_work(jobs, self.config.threads.max(1));
        let threads = self.config.threads.clamp(1, work.len());
        // Taken in order by whichever parser is free (one short lock a file or group of
        // sessions); the work is not copied again (one agent of 220,000 files held it twice).
        let queue = Mutex::new(work.into_iter());
        let price_tables = self.prices.clone();
        let price = price_fn(&price_tables);
        let memo = self.memo.as_ref();
        let index = self.index.as_mut().expect("opened");
        let lives = &mut self.lives;
        let mut done = 0u64;
        let mut last_report = Instant::now();
        let mut was_cancelled = false;
        let written: Result<(), WorkerError> = std::thread::scope(|scope| {
            let (tx, rx) = mpsc::sync_channel::<Vec<Parsed>>(RESULTS_IN_FLIGHT / SEND_BATCH);
            for _ in 0..threads {
                let mut tx = Outbox { tx: tx.clone(), held: Vec::with_capacity(SEND_BATCH) };
                let (queue, index_path) = (&queue, &index_path);
                scope.spawn(move || {
                    // Each parser reads old states through its own read-only connection, and
                    // prepares what the writer stores (the entry look-up, the encoded rollup).
                    let reader = index::Reader::open(index_path);
                    let prepared = |r: JobResult| {
                        let p = match (&reader, &r) {
                            (Ok(reader), JobResult::Done { disc, rollup, .. }) => {
                                reader.prepare(disc, rollup, memo).ok()
                            }
                            _ => None,
                        };
                        (r, p)
                    };
                    loop {
                        if cancel.load(Ordering::Relaxed) {
                            tx.send((JobResult::Cancelled, None));
                            return;
                        }
                        let work = queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).next();
                        let Some(work) = work else { return };
                        let sent = match work {
                            Work::One(job) => {
                                let old = match (&reader, job.known) {
                                    (Ok(r), Some(id)) => r.file_and_rollup(id).ok().flatten().map(Box::new),
                                    _ => None,
                                };
                                tx.send(prepared(run_job(job.disc, old, max_line, cancel)))
                            }
                            Work::Sessions { db, sessions, by_rowid } => {
                                let mut ok = true;
                                let t = Instant::now();
                                let n = sessions.len();
                                sqlite::run_bulk(&db, sessions, by_rowid, max_line, cancel, &mut |r| {
                                    ok = tx.send(prepared(r));
                                    ok
                                });
                                tracing::debug!(
                                    sessions = n,
                                    us = t.elapsed().as_micros() as u64,
                                    "Read sessions in one pass."
                                );
                                ok
                            }
                        };
                        if !sent {
                            return;
                        }
                    }
                });
            }
            drop(tx);
            // The parsers are started: the entries their results are written against now.
            if let Some((agent, entries)) = deferred {
                write_entries(index, lives, &price_tables, &agent, entries, Put::All, memo)?;
            }
            let mut results = rx.into_iter().flatten().peekable();
            while results.peek().is_some() {
                index.batch(|index| {
                    for (r, prepared) in results.by_ref().take(BATCH_FILES) {
                        match r {
                            JobResult::Done { disc, rollup, bytes, old } => {
                                done += 1;
                                stats.files_parsed += 1;
                                stats.bytes_parsed += bytes;
                                let index::Prepared { facts, blob } = match prepared {
                                    Some(p) => p,
                                    None => {
                                        let facts = index.facts_for(&disc, None)?;
                                        index::Prepared { facts, blob: index::encode_rollup(&rollup)? }
                                    }
                                };
                                let (id, replaced) = index.put_file(&disc, &blob, &facts, old.is_none())?;
                                if replaced {
                                    // A row whose old state could not be read back: its old
                                    // contribution is unknown, so the shapes are rebuilt.
                                    lives.invalidate(Some(&disc.agent_id));
                                }
                                let old = old
                                    .as_deref()
                                    .map(|(row, r)| (&row.disc, r, row.facts.channel.as_deref()));
                                lives.file_changed(
                                    index,
                                    &Change {
                                        id,
                                        agent: &disc.agent_id,
                                        old,
                                        new: Some((&disc, &rollup, facts.channel.as_deref())),
                                    },
                                    &price,
                                )?;
                            }
                            JobResult::Unreadable { disc, error, old } => {
                                done += 1;
                                diag.unreadable_files += 1;
                                diag.error(format!("{}: {error}", disc.path.display()));
                                if let Some((row, rollup)) = old.as_deref() {
                                    let old = Some((&row.disc, rollup, row.facts.channel.as_deref()));
                                    lives.file_changed(
                                        index,
                                        &Change { id: row.id, agent: &row.disc.agent_id, old, new: None },
                                        &price,
                                    )?;
                                    index.remove_file(row.id)?;
                                }
                            }
                            JobResult::Cancelled => was_cancelled = true,
                        }
                    }
                    Ok(())
                })?;
                // At most ~10 reports a second: the callback crosses a process boundary.
                if last_report.elapsed() >= PROGRESS_EVERY || done == total {
                    last_report = Instant::now();
                    progress(Progress {
                        files_done: done,
                        files_total: total,
                        bytes_done: stats.bytes_parsed,
                    });
                }
            }
            Ok(())
        });
        written?;
        if was_cancelled || cancel.load(Ordering::Relaxed) {
            // Files whose job never ran keep their old rollup and checkpoint in the index: the
            // caller makes the next call look at everything again.
            return Err(cancelled());
        }
        Ok(stats)
    }

    /// `usage.cost` and `sessions.usage` without a key: from the live aggregates of the query's
    /// shape and one page of rows.
    fn aggregated(
        &mut self,
        query: &UsageQuery,
        known: Option<u64>,
        agents: &[String],
        diag: &mut Diagnostics,
        job: &mut JobStats,
        cancel: &AtomicBool,
    ) -> Result<Reply, WorkerError> {
        let now = now_ms();
        // Unbounded `usage.cost` ranges end today: a new day is a new answer.
        let day = day_of(now, 0);
        let cache_key_change = self.change ^ (day as u64).rotate_left(32);
        if let Some((a, scoped)) = self.answers.get(query, cache_key_change) {
            let mut a = a.clone();
            scoped.apply(diag);
            let listed = a.meta.cache.map(|c| c.cached_files);
            a.meta = payload::meta(now, listed, diag, a.meta.rows_total);
            job.files_total = diag.files;

            return Ok(if known == Some(a.fingerprint) {
                Reply::Unchanged(a.meta)
            } else {
                Reply::Answer(a)
            });
        }
        let shape = self.shape_of(query, agents);
        let price_tables = self.prices.clone();
        let price = price_fn(&price_tables);
        if query.method == Method::SessionsUsage && query.entries_only {
            // The gateway's `sessions.list`: a page of entry rows, no aggregates (so no live
            // shape is built or evicted for it).
            let (data, total, fingerprint, cut) = self.sessions_page(query, &shape, None, 0, "", &price)?;
            if let Some(cut) = cut {
                diag.rows_cut = Some(cut);
            }
            let meta = payload::meta(now, None, diag, Some(total));
            let answer = Answer { meta, fingerprint, data };
            self.answers.put(query, cache_key_change, answer.clone(), payload::Scoped::of(diag));
            return Ok(if known == Some(fingerprint) {
                Reply::Unchanged(answer.meta)
            } else {
                Reply::Answer(answer)
            });
        }
        let index = self.index.as_mut().expect("opened");
        let is_cancelled = || cancel.load(Ordering::Relaxed);
        let Some(live) = self.lives.get(index, &shape, &price, &is_cancelled)? else {
            return Err(cancelled());
        };
        tracing::debug!(heap_mib = crate::alloc::heap_bytes() >> 20, "Live aggregates ready.");
        let d = &live.data;
        diag.files = d.files;
        // OpenClaw's cacheStatus counts, for `sessions.usage`, the transcripts of the answer's
        // rows (those the range lists), for `usage.cost` every transcript of the scope; a scope
        // without any transcript has no cacheStatus.
        let counted = if query.method == Method::UsageCost { d.files } else { d.listed };
        let listed = (d.files > 0).then_some(counted);
        diag.skips = (&d.skips).into();
        diag.pending_tails = d.pending_tails;
        job.files_total = d.files;
        job.lines_skipped = d.skips.lines() + d.pending_tails;
        let version = live.version;
        let (data, rows_total, fingerprint) = match query.method {
            Method::UsageCost => {
                let data = cost_data(&live.data.agg, &shape.window()).map_err(internal)?;
                let fp = payload::hash_of(&(query, version, day));
                (Payload::text(data), None, fp)
            }
            _ => {
                let live_table = live.table.clone();
                let agg = live.data.agg.clone();
                let (data, total, fp, cut) =
                    self.sessions_page(query, &shape, Some(&agg), version, &live_table, &price)?;
                if let Some(cut) = cut {
                    diag.rows_cut = Some(cut);
                }
                (data, Some(total), fp)
            }
        };
        let meta = payload::meta(now, listed, diag, rows_total);
        let answer = Answer { meta, fingerprint, data };
        self.answers.put(query, cache_key_change, answer.clone(), payload::Scoped::of(diag));
        Ok(if known == Some(fingerprint) { Reply::Unchanged(answer.meta) } else { Reply::Answer(answer) })
    }

    /// The live aggregates a query without a key is answered from.
    fn shape_of(&self, query: &UsageQuery, agents: &[String]) -> Shape {
        Shape {
            agents: agents.to_vec(),
            start: query.start_ms,
            end: query.end_ms,
            offset_ms: zone_offset_ms(&query.day_zone),
            family: query.method == Method::SessionsUsage && query.group_by == GroupBy::Family,
            prices: self.prices_stamp(),
        }
    }

    /// On a cold read (nothing of `agents` indexed yet) starts the query's live aggregates
    /// empty, before the refresh: each parsed file is then added as it is written, instead of
    /// every rollup being read back from the index afterwards (0.4 s of a 54,000-session cold
    /// read). Family grouping is rebuilt after any change anyway, so it is left to the answer.
    fn start_cold_live(
        &mut self,
        query: &UsageQuery,
        agents: &[String],
        cancel: &AtomicBool,
    ) -> Result<(), WorkerError> {
        let aggregated = matches!(query.method, Method::UsageCost | Method::SessionsUsage)
            && query.key.is_none()
            && !query.entries_only;
        if !aggregated || agents.is_empty() {
            return Ok(());
        }
        let shape = self.shape_of(query, agents);
        if shape.family || self.lives.has(&shape) || self.index().has_files(agents)? {
            return Ok(());
        }
        let price_tables = self.prices.clone();
        let price = price_fn(&price_tables);
        let index = self.index.as_mut().expect("opened");
        let is_cancelled = || cancel.load(Ordering::Relaxed);
        self.lives.get(index, &shape, &price, &is_cancelled)?;
        Ok(())
    }

    /// One page of `sessions.usage` rows around the live aggregates (`None`: an entries-only
    /// page, without totals): the data, the number of rows in all, the fingerprint, and what was
    /// cut to fit the answer budget.
    #[allow(clippy::type_complexity)]
    fn sessions_page(
        &mut self,
        query: &UsageQuery,
        shape: &Shape,
        agg: Option<&Aggregates>,
        version: u64,
        live_table: &str,
        price: &store::PriceFn<'_>,
    ) -> Result<(Payload, u64, u64, Option<RowsCut>), WorkerError> {
        let limit = query.limit.unwrap_or(50).max(1);
        let offset = query.offset.unwrap_or(0);
        let search: Vec<String> =
            query.search.as_deref().unwrap_or("").split_whitespace().map(str::to_lowercase).collect();
        let index = self.index.as_ref().expect("opened");
        let pq = PageQuery {
            agents: &shape.agents,
            start_ms: shape.start,
            heads_only: shape.family,
            entries_only: query.entries_only,
            search: &search,
            ascending: false,
            limit,
            offset,
        };
        let count = |pq: &PageQuery<'_>| match agg {
            Some(agg) if search.is_empty() => Ok(agg.rows.max(0) as u64),
            _ => index.count_rows(pq),
        };
        let (ids, total) = match (query.sort, agg) {
            (None | Some(RowSort { key: SortKey::UpdatedAt, descending: true }), _) | (_, None) => {
                (index.page(&pq)?, count(&pq)?)
            }
            (Some(RowSort { key: SortKey::UpdatedAt, descending: false }), _) => {
                let pq = PageQuery { ascending: true, ..pq };
                (index.page(&pq)?, count(&pq)?)
            }
            (Some(RowSort { key, descending }), Some(_)) => {
                by_value(index, live_table, key, descending, &search, limit, offset)?
            }
        };
        let paged_at = Instant::now();
        let window = shape.window();
        let row_shape = payload::hash_of(&(
            &window.start,
            &window.end,
            &window.offset_ms,
            shape.prices,
            shape.family,
            query.include_context_weight,
        ));
        let w = Window { start: query.start_ms, end: query.end_ms, offset_ms: window.offset_ms };
        // clawgate's paging, answered only to a query that pages (OpenClaw's clients never do):
        // where this page lies among all rows.
        let paging = if query.offset.is_some()
            || query.sort.is_some()
            || query.search.is_some()
            || query.entries_only
        {
            let (by, dir) = match query.sort {
                None => ("updatedAt", "desc"),
                Some(RowSort { key, descending }) => (
                    match key {
                        SortKey::Cost => "cost",
                        SortKey::Tokens => "tokens",
                        SortKey::Messages => "messages",
                        SortKey::UpdatedAt => "updatedAt",
                    },
                    if descending { "desc" } else { "asc" },
                ),
            };
            format!(
                "\"page\":{{\"offset\":{offset},\"limit\":{limit},\"total\":{total},\"sortBy\":\"{by}\",\"sortDir\":\"{dir}\"}},"
            )
        } else {
            String::new()
        };
        let head = format!(
            "\"startDate\":\"{}\",\"endDate\":\"{}\",{paging}\"sessions\":[",
            format_day(day_of(w.start, w.offset_ms)),
            format_day(day_of(w.end, w.offset_ms))
        );
        let mut placed = Placed {
            budget: self.config.answer_budget,
            requested: ids.len() as u64,
            parts: Vec::with_capacity(2 * ids.len() + 3),
            stamps: Vec::with_capacity(ids.len()),
            rendered: Vec::new(),
            bytes: 0,
            cut: None,
            comma: Arc::from(","),
        };
        placed.parts.push(Arc::from(head));
        // Rows past the first few that are rendered here are summarised and turned into JSON on
        // a helper thread while this one reads the next from the index: a cold page of 1,000
        // seed rows took ~100 µs a row on one thread, half of it summary and JSON (BENCHMARKS.md).
        // Rows are placed in page order, each against the answer budget, as they are ready.
        let mut slots: VecDeque<Slot> = VecDeque::new();
        let rows_cache = &mut self.rows;
        let index = self.index.as_ref().expect("opened");
        std::thread::scope(|sc| -> Result<(), WorkerError> {
            let mut helper: Option<RowHelper> = None;
            let mut misses = 0usize;
            let mut started = false;
            for (at, p) in ids.iter().enumerate() {
                // Family rows depend on their members too, found through the row's entry.
                let family_parts = if shape.family {
                    let Some(row) = index.file(p.id)? else { continue };
                    let entry = match &row.facts.entry_key {
                        Some(k) => index.entry(&row.disc.agent_id, k)?,
                        None => None,
                    };
                    let members = live::family_members(index, &row, entry.as_ref())?;
                    Some((row, entry, members))
                } else {
                    None
                };
                let member_generations: Vec<i64> = family_parts
                    .as_ref()
                    .map(|(_, _, m)| m.iter().map(|m| m.generation).collect())
                    .unwrap_or_default();
                let stamp = payload::hash_of(&(
                    row_shape,
                    p.generation,
                    member_generations,
                    p.entry_hash,
                    p.updated_at.to_bits(),
                ));
                let cached = match rows_cache.get(stamp) {
                    Some(t) => Some(t),
                    None => index.rendered(stamp)?.map(|t| {
                        let t: Arc<str> = Arc::from(t);
                        rows_cache.put(stamp, Arc::clone(&t));
                        t
                    }),
                };
                let text = match cached {
                    Some(t) => Some(t),
                    None => {
                        let (row, entry, members) = match family_parts {
                            Some(parts) => parts,
                            None => {
                                let Some(row) = index.file(p.id)? else { continue };
                                let entry = match &row.facts.entry_key {
                                    Some(k) => index.entry(&row.disc.agent_id, k)?,
                                    None => None,
                                };
                                (row, entry, Vec::new())
                            }
                        };
                        let Some(rollup) = index.rollup(p.id)? else { continue };
                        misses += 1;
                        if !started && !shape.family && misses > INLINE_ROWS {
                            started = true;
                            helper = RowHelper::spawn(sc, w, query.include_context_weight);
                        }
                        match helper.as_ref().filter(|_| !shape.family) {
                            Some(h) => {
                                let prices = live::prices_of(&row.disc, &rollup, price);
                                h.jobs
                                    .send(RowJob { row, entry, rollup, prices })
                                    .map_err(|_| internal("the row renderer stopped"))?;
                                None
                            }
                            None => {
                                let s = live::row_summary(index, &w, &row, &rollup, &members, price, FULL)?;
                                let family =
                                    if shape.family { family_of(&row, entry.as_ref()) } else { None };
                                let out = RowOut {
                                    row: &row,
                                    entry: entry.as_ref(),
                                    family: family.as_ref(),
                                    summary: &s,
                                    include_context_weight: query.include_context_weight,
                                };
                                let t = out.text().map_err(internal)?;
                                rows_cache.put(stamp, Arc::clone(&t));
                                placed.rendered.push((stamp, Arc::clone(&t)));
                                Some(t)
                            }
                        }
                    }
                };
                slots.push_back(Slot { at, stamp, text });
                // Never more than a bounded stretch of the page ahead of what is placed.
                let wait = slots.len() > READ_AHEAD;
                if !placed.place(&mut slots, helper.as_ref(), wait, rows_cache)? {
                    return Ok(());
                }
                debug_assert!(slots.len() <= READ_AHEAD, "{} rows unplaced", slots.len());
            }
            placed.place(&mut slots, helper.as_ref(), true, rows_cache)?;
            Ok(())
        })?;
        let Placed { mut parts, stamps, rendered, cut, .. } = placed;
        // Kept on disk too, once the answer is sent: a restarted worker's first page is read
        // back, not rendered.
        self.unkept.extend(rendered);
        let rows_at = paged_at.elapsed();
        let tail = match agg {
            Some(agg) => format!("],{}", payload::fields_of(&SessionsTail(agg)).map_err(internal)?),
            None => "]".to_owned(),
        };
        parts.push(Arc::from(tail));
        let fingerprint = payload::hash_of(&(query, version, &stamps));
        tracing::debug!(
            rows = stamps.len(),
            rows_us = rows_at.as_micros() as u64,
            tail_us = (paged_at.elapsed() - rows_at).as_micros() as u64,
            "Page rendered."
        );
        Ok((Payload::from_parts(parts), total, fingerprint, cut))
    }

    /// `sessions.usage` with a `key`: that session's row alone (with its family in family mode).
    fn keyed(
        &mut self,
        query: &UsageQuery,
        key: &str,
        agents: &[String],
        diag: &mut Diagnostics,
        job: &mut JobStats,
    ) -> Result<Answer, WorkerError> {
        let now = now_ms();
        let price_tables = self.prices.clone();
        let price = price_fn(&price_tables);
        let index = self.index.as_ref().expect("opened");
        let target = resolve_key(index, key, agents)?;
        let mut agg = Aggregates::default();
        let mut parts: Vec<Arc<str>> = Vec::new();
        let w =
            Window { start: query.start_ms, end: query.end_ms, offset_ms: zone_offset_ms(&query.day_zone) };
        let head = format!(
            "\"startDate\":\"{}\",\"endDate\":\"{}\",\"sessions\":[",
            format_day(day_of(w.start, w.offset_ms)),
            format_day(day_of(w.end, w.offset_ms))
        );
        parts.push(Arc::from(head));
        let mut rows_total = 0;
        if let Some((agent, session_id)) = target
            && let Some(row) = live::file_for_session(index, &agent, &session_id)?
            && let Some(rollup) = index.rollup(row.id)?
        {
            let entry = match &row.facts.entry_key {
                Some(k) => index.entry(&agent, k)?,
                None => None,
            };
            let family = query.group_by == GroupBy::Family;
            let members =
                if family { live::family_members(index, &row, entry.as_ref())? } else { Vec::new() };
            let s = live::row_summary(index, &w, &row, &rollup, &members, &price, FULL)?;
            agg.apply(row.id as u64, &agent, row.facts.channel.as_deref(), &s.without_quarters(), 1);
            let fam = family.then(|| family_of(&row, entry.as_ref())).flatten();
            let out = RowOut {
                row: &row,
                entry: entry.as_ref(),
                family: fam.as_ref(),
                summary: &s,
                include_context_weight: query.include_context_weight,
            };
            parts.push(out.text().map_err(internal)?);
            diag.files = 1 + members.len() as u64;
            diag.skips = (&rollup.skips).into();
            job.files_total = diag.files;
            rows_total = 1;
        }
        parts.push(Arc::from(format!("],{}", payload::fields_of(&SessionsTail(&agg)).map_err(internal)?)));
        let data = Payload::from_parts(parts);
        let fingerprint = payload::hash_of(&data.to_text());
        let listed = (rows_total > 0).then_some(diag.files);
        Ok(Answer { meta: payload::meta(now, listed, diag, Some(rows_total)), fingerprint, data })
    }

    /// `sessions.usage.timeseries` / `.logs`: one session's transcript, read whole.
    fn one_session(
        &mut self,
        query: &UsageQuery,
        key: &str,
        agents: &[String],
        cancel: &AtomicBool,
    ) -> Result<(Answer, u64), WorkerError> {
        let index = self.index.as_ref().expect("opened");
        let not_found = || {
            WorkerError::new(
                WorkerErrorKind::InvalidRequest,
                format!("No transcript found for session: {key}"),
            )
        };
        let found = match resolve_key(index, key, agents)? {
            Some((agent, session_id)) => {
                live::file_for_session(index, &agent, &session_id)?.map(|f| (f, session_id))
            }
            None => None,
        };
        let (file, session_id) = match found {
            Some(found) => found,
            // OpenClaw answers logs of an unknown session with an empty list, a timeseries with
            // an error.
            None if query.method == Method::SessionsUsageLogs => {
                let data = "\"logs\":[]".to_owned();
                let meta = ipc_proto::AnswerMeta {
                    updated_at: None,
                    cache: None,
                    diagnostics: None,
                    rows_total: None,
                };
                return Ok((
                    Answer { meta, fingerprint: payload::hash_of(&data), data: Payload::text(data) },
                    0,
                ));
            }
            None => return Err(not_found()),
        };
        let price = price_fn(&self.prices);
        let max_line = self.config.max_line_bytes;
        let (text, bytes) = if query.method == Method::SessionsUsageLogs {
            logs::logs(&file.disc, &session_id, query.limit, max_line, cancel, &price)?
        } else {
            series::timeseries(&file.disc, &session_id, max_line, cancel, &price)?
        };
        let data = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')).unwrap_or(&text).to_owned();
        let fingerprint = payload::hash_of(&data);
        let meta =
            ipc_proto::AnswerMeta { updated_at: None, cache: None, diagnostics: None, rows_total: None };
        Ok((Answer { meta, fingerprint, data: Payload::text(data) }, bytes))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.save();
    }
}

/// Writes an agent's entries in one transaction and recomputes the row facts of the files they
/// name; a file whose channel changed moves between `byChannel` groups in the live aggregates.
/// Returns whether a patch's keys were known, and whether any entry changed.
fn write_entries(
    index: &mut Index,
    lives: &mut live::Lives,
    prices: &HashMap<String, Cached<PriceTable>>,
    agent: &str,
    entries: Vec<store::StoreEntry>,
    put: Put<'_>,
    memo: Option<&index::EntryMemo>,
) -> Result<(bool, bool), WorkerError> {
    write_entries_with(index, lives, prices, agent, memo, |index| match put {
        Put::Patch(ords, added) => index.patch_entries(agent, &entries, ords, added),
        Put::All => index.replace_entries(agent, &mut entries.into_iter()).map(Some),
    })
}

/// [`write_entries`] of what `write` writes in its transaction: the entries it returns as
/// touched (`None`: a patch that did not apply, nothing written) have their files' row facts
/// recomputed, and the files whose channel moved move in the live aggregates.
fn write_entries_with(
    index: &mut Index,
    lives: &mut live::Lives,
    prices: &HashMap<String, Cached<PriceTable>>,
    agent: &str,
    memo: Option<&index::EntryMemo>,
    write: impl FnOnce(&mut Index) -> Result<Option<index::Touched>, IndexError>,
) -> Result<(bool, bool), WorkerError> {
    let price = price_fn(prices);
    let mut known = true;
    let mut changed = false;
    index.batch(|index| {
        let Some(touched) = write(index)? else {
            known = false;
            return Ok(());
        };
        if touched.is_empty() {
            return Ok(());
        }
        changed = true;
        let moved = index.refresh_facts(agent, &touched, memo)?;
        // Family rows may have changed membership: rebuilt on next use.
        lives.invalidate_family(agent);
        for (id, old_channel) in moved {
            let (Some(row), Some(rollup)) = (index.file(id)?, index.rollup(id)?) else { continue };
            lives.file_changed(
                index,
                &Change {
                    id,
                    agent,
                    old: Some((&row.disc, &rollup, old_channel.as_deref())),
                    new: Some((&row.disc, &rollup, row.facts.channel.as_deref())),
                },
                &price,
            )?;
        }
        Ok(())
    })?;
    Ok((known, changed))
}

/// A path as the index orders paths: byte by byte (a [`std::path::Path`] compares by
/// components).
fn path_bytes(p: &std::path::Path) -> &[u8] {
    p.as_os_str().as_encoded_bytes()
}

/// The archived transcripts (`.reset.`/`.deleted.`) left in an agent's `sessions/` beside its
/// OpenClaw 2026.7+ database: the importer leaves them there and OpenClaw still counts them as
/// usage rows (its `discoverAllSessions` lists the directory too). Listed with the database, so
/// their rows stay as long as the files do.
fn archived_files(state_dir: &std::path::Path, agent: &str, diag: &mut Diagnostics) -> Vec<Discovered> {
    match discover::list_files_of_kind(state_dir, agent, diag, |k| *k != discover::FileKind::Primary) {
        Ok(files) => files,
        Err(e) => {
            diag.error(format!("listing archived sessions of agent {agent}: {e}"));
            Vec::new()
        }
    }
}

/// A row's family (family mode), when its entry names one.
fn family_of(row: &FileRow, entry: Option<&store::StoreEntry>) -> Option<Family> {
    let e = entry?;
    let mut included = vec![row.disc.session_id.clone()];
    for id in &e.family_ids {
        if !included.contains(id) {
            included.push(id.clone());
        }
    }
    Some(Family { key: e.family_key.clone().unwrap_or_else(|| e.key.clone()), included })
}

/// Rows ordered by one of their numbers in the live shape's table.
fn by_value(
    index: &Index,
    table: &str,
    key: SortKey,
    descending: bool,
    search: &[String],
    limit: u32,
    offset: u32,
) -> Result<(Vec<index::PageRow>, u64), IndexError> {
    let col = match key {
        SortKey::Cost => "cost",
        SortKey::Tokens => "tokens",
        SortKey::Messages => "messages",
        SortKey::UpdatedAt => "id",
    };
    let dir = if descending { "DESC" } else { "ASC" };
    let mut filter = String::new();
    let mut args: Vec<String> = Vec::new();
    for term in search {
        args.push(format!("%{}%", term.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")));
        filter.push_str(&format!(" AND f.search_text LIKE ?{} ESCAPE '\\'", args.len()));
    }
    let conn = index.conn();
    let from = format!("FROM {table} v JOIN files f ON f.id = v.id WHERE 1=1{filter}");
    let total: i64 = conn
        .prepare_cached(&format!("SELECT count(*) {from}"))?
        .query_row(rusqlite::params_from_iter(args.iter()), |r| r.get(0))?;
    let mut st = conn.prepare_cached(&format!(
        "SELECT v.id, f.generation, f.entry_hash, f.updated_at {from}
         ORDER BY v.{col} {dir}, v.id {dir} LIMIT {limit} OFFSET {offset}"
    ))?;
    let rows = st
        .query_map(rusqlite::params_from_iter(args.iter()), index::page_row)?
        .collect::<Result<Vec<index::PageRow>, _>>()?;
    Ok((rows, total as u64))
}

/// `usage.cost`'s data: `days`, `daily` (every day of a bounded range, zeros included; for an
/// unbounded range the days with data only, as OpenClaw lists them) and `totals`.
fn cost_data(agg: &Aggregates, w: &Window) -> Result<String, serde_json::Error> {
    use aggregates::DatedTotals;
    use summary::Totals;
    let days: std::collections::BTreeMap<i64, &Totals> = agg.cost_days().collect();
    let (mut lo, mut hi) = (day_of(w.start, w.offset_ms), day_of(w.end, w.offset_ms));
    let unbounded = hi - lo + 1 > MAX_DENSE_DAYS;
    if unbounded {
        // An unbounded range (`range: "all"`): from the first to the last day with data, as
        // OpenClaw lists it.
        lo = days.keys().next().copied().unwrap_or(hi + 1);
        hi = hi.min(days.keys().next_back().copied().unwrap_or(lo));
    }
    let empty = Totals::default();
    let dated =
        |d: i64| DatedTotals { date: Day(d), totals: days.get(&d).copied().unwrap_or(&empty), lead: false };
    let daily: Vec<DatedTotals<'_>> = if unbounded || hi - lo + 1 > MAX_DENSE_DAYS {
        // Days with data only: OpenClaw lists an unbounded range so, and a bogus timestamp far in
        // the past or future cannot make the answer millions of empty rows.
        days.keys().copied().filter(|d| (lo..=hi).contains(d)).map(dated).collect()
    } else if lo <= hi {
        (lo..=hi).map(dated).collect()
    } else {
        Vec::new()
    };
    let days_count = (w.end - w.start + 1 + DAY_MS - 1).div_euclid(DAY_MS).max(0);
    #[derive(serde::Serialize)]
    struct CostBody<'a> {
        days: i64,
        daily: Vec<DatedTotals<'a>>,
        totals: summary::TotalsOut<'a>,
    }
    payload::fields_of(&CostBody { days: days_count, daily, totals: summary::TotalsOut(&agg.timed_totals) })
}

/// Resolves a `key`: a session key from a store, `agent:<id>:<sessionId>`, or a bare session
/// id, within the agents in scope. `Ok(None)`: no such session (OpenClaw answers an empty
/// result, not an error).
fn resolve_key(index: &Index, key: &str, agents: &[String]) -> Result<Option<(String, String)>, WorkerError> {
    if key.len() > 1024 {
        return Ok(None);
    }
    let parsed = key.strip_prefix("agent:").and_then(|rest| rest.split_once(':'));
    if parsed.is_none() {
        // A legacy key without its agent (`cron:<id>`): the canonical key in each agent.
        for a in agents {
            if let Some(e) = index.entry(a, &store::canonical_key(a, key))? {
                return Ok(Some((a.clone(), e.session_id)));
            }
        }
    }
    if let Some((agent, rest)) = parsed {
        let Some(agent) = agents.iter().find(|a| a.eq_ignore_ascii_case(agent)) else { return Ok(None) };
        if let Some(e) = index.entry(agent, key)?.or(index.entry_by_session(agent, rest)?) {
            return Ok(Some((agent.clone(), e.session_id)));
        }
        if !index.files_of_session(agent, rest)?.is_empty() {
            return Ok(Some((agent.clone(), rest.to_owned())));
        }
        return Ok(None);
    }
    for a in agents {
        if let Some(e) = index.entry(a, key)?.or(index.entry_by_session(a, key)?) {
            return Ok(Some((a.clone(), e.session_id)));
        }
    }
    for a in agents {
        if !index.files_of_session(a, key)?.is_empty() {
            return Ok(Some((a.clone(), key.to_owned())));
        }
    }
    Ok(None)
}

/// A price lookup: the default agent's catalog first, then the entry's own agent's.
fn price_fn(
    prices: &HashMap<String, Cached<PriceTable>>,
) -> impl Fn(&str, Option<&str>, Option<&str>) -> Option<Price> + '_ {
    move |agent: &str, provider: Option<&str>, model: Option<&str>| {
        let (p, m) = (provider?, model?);
        let table = |a: &str| prices.get(a).and_then(|c| c.value.as_ref()).and_then(|t| t.get(p, m));
        table(DEFAULT_AGENT).or_else(|| table(agent))
    }
}

/// Progress of two runs one after the other.
fn added(a: Progress, b: Progress) -> Progress {
    Progress {
        files_done: a.files_done + b.files_done,
        files_total: a.files_total + b.files_total,
        bytes_done: a.bytes_done + b.bytes_done,
    }
}

/// What one parser thread takes at a time.
enum Work {
    One(Job),
    /// Sessions of one database read from scratch in one pass: sorted by their rowid spans
    /// when `by_rowid`, else by session id ([`sqlite::run_bulk`]).
    Sessions {
        db: PathBuf,
        sessions: Vec<Discovered>,
        by_rowid: bool,
    },
}

/// Sessions of one database read together in one pass ([`sqlite::run_bulk`]); two parser
/// threads take alternate groups. Against 512: the last group of an agent, which one thread
/// reads alone, is half as long, and the worker's peak RSS on 54,000 sessions in that layout
/// read 79-91 MB against 90-101 MB (bench, six alternating runs; cold time 1.61-1.85 s against
/// 1.65-1.83 s).
const BULK_SESSIONS: usize = 256;
/// The fewest rows a group of [`group_work`] holds but for the last (each pass costs a read
/// transaction and its statements; a row ~3 µs); two in unit tests, so that their small stores
/// still make several groups.
const BULK_ROWS_MIN: u64 = if cfg!(test) { 2 } else { 512 };

/// Groups jobs into work: new SQLite sessions by database in runs of [`BULK_SESSIONS`]; every
/// other file (and a session with an old state, read from its checkpoint) on its own.
fn group_work(jobs: Vec<Job>, threads: usize) -> Vec<Work> {
    /// The database a job is read from in bulk with others: a new session of one.
    fn bulk_db(job: &Job) -> Option<&std::path::Path> {
        let d = &job.disc;
        (job.known.is_none() && sqlite::is_session(d)).then(|| sqlite::db_of_session(d)).flatten()
    }
    let mut by_db: std::collections::BTreeMap<PathBuf, Vec<Discovered>> = std::collections::BTreeMap::new();
    // Sized once: grown by doubling, a list of 220,000 single jobs was copied on the way.
    let mut work = Vec::with_capacity(jobs.iter().filter(|j| bulk_db(j).is_none()).count());
    for job in jobs {
        match bulk_db(&job) {
            // Looked up by the borrowed path: one allocation a database, not a session.
            Some(db) => match by_db.get_mut(db) {
                Some(sessions) => sessions.push(job.disc),
                None => {
                    let db = db.to_path_buf();
                    by_db.insert(db, vec![job.disc]);
                }
            },
            None => work.push(Work::One(job)),
        }
    }
    // Biggest first, so one large file does not finish last on one core.
    work.sort_by_key(|w| match w {
        Work::One(j) => std::cmp::Reverse(j.disc.meta.size),
        Work::Sessions { .. } => unreachable!("only single jobs so far"),
    });
    for (db, sessions) in by_db {
        let (by_rowid, by_key) = split_by_span(sessions);
        for (sessions, by_rowid) in [(by_rowid, true), (by_key, false)] {
            // Groups shrink towards the end (a share of the rows left, per thread), so that the
            // threads finish together: with equal groups of 256 one thread idled for up to a
            // group's ~10 ms at the end of every agent (more for long sessions).
            // A database session's `meta.size` is its row count ([`sqlite::SqliteCheckpoint`]).
            let mut left: u64 = sessions.iter().map(|d| d.meta.size).sum();
            let mut rest = sessions.into_iter().peekable();
            while rest.peek().is_some() {
                let target = (left / (2 * threads as u64)).max(BULK_ROWS_MIN);
                let (mut group, mut rows) = (Vec::new(), 0u64);
                while let Some(d) = rest.next_if(|_| group.len() < BULK_SESSIONS && rows < target) {
                    rows += d.meta.size;
                    group.push(d);
                }
                left = left.saturating_sub(rows);
                work.push(Work::Sessions { db: db.clone(), sessions: group, by_rowid });
            }
        }
    }
    work
}

/// Splits new sessions of one database into as many as can be whose rowid spans overlap none
/// of the others' (read in the table's order, sorted by span), and the rest, sorted by session
/// id (read by key). Picking by earliest end keeps the most: a long session whose rows are
/// spread over the table (a main session that lives for months) goes by key alone, and the
/// sessions inside its span stay in rowid order (its rows there are stepped over).
fn split_by_span(sessions: Vec<Discovered>) -> (Vec<Discovered>, Vec<Discovered>) {
    // Sorted as (end, start, position) keys, and the sessions moved once in that order: a
    // `Discovered` is ~200 bytes, and sorting them in place cost ~3 ms of each cold agent.
    let mut keys: Vec<(i64, i64, usize)> = Vec::with_capacity(sessions.len());
    let mut by_key = Vec::new();
    let mut slots: Vec<Option<Discovered>> = Vec::with_capacity(sessions.len());
    for d in sessions {
        match d.span {
            Some((lo, hi)) if lo <= hi => {
                keys.push((hi, lo, slots.len()));
                slots.push(Some(d));
            }
            _ => by_key.push(d),
        }
    }
    keys.sort_unstable();
    let mut by_rowid = Vec::with_capacity(keys.len());
    let mut end = None;
    for (hi, lo, i) in keys {
        let d = slots[i].take().expect("each position once");
        if end.is_none_or(|e| lo > e) {
            end = Some(hi);
            by_rowid.push(d);
        } else {
            by_key.push(d);
        }
    }
    by_key.sort_by(|a, b| a.session_id.cmp(&b.session_id));
    (by_rowid, by_key)
}

/// Whether a checkpoint was taken at exactly this stat (then the file is unchanged).
fn same_stat(cp: &Checkpoint, m: &FileMeta) -> bool {
    cp.dev == m.dev
        && cp.ino == m.ino
        && cp.size == m.size
        && cp.mtime_ns == m.mtime_ns
        && cp.ctime_ns == m.ctime_ns
}

/// Parses one file: only the appended bytes when its old checkpoint still matches, else all of
/// it. The old state is handed back with the result (unchanged) for the live aggregates.
fn run_job(mut disc: Discovered, old: Option<Old>, max_line: u64, cancel: &AtomicBool) -> JobResult {
    if sqlite::is_session(&disc) {
        return sqlite::run_job(disc, old, max_line, cancel);
    }
    let file = match discover::open_regular(&disc.path) {
        Ok(f) => f,
        Err(e) => return JobResult::Unreadable { disc, error: e.to_string(), old },
    };
    let meta = match file.metadata() {
        Ok(m) => FileMeta::of(&m),
        Err(e) => return JobResult::Unreadable { disc, error: e.to_string(), old },
    };
    disc.meta = meta;
    let mut rollup = match old.as_deref() {
        Some((_, p)) if same_stat(&p.checkpoint, &meta) || can_append(&file, &p.checkpoint, &meta) => {
            p.clone()
        }
        _ => FileRollup::default(),
    };
    let start = rollup.checkpoint.offset;
    match scan_into(&file, &mut rollup, start, max_line, cancel) {
        Ok(bytes) => {
            rollup.checkpoint.dev = meta.dev;
            rollup.checkpoint.ino = meta.ino;
            rollup.checkpoint.size = meta.size;
            rollup.checkpoint.mtime_ns = meta.mtime_ns;
            rollup.checkpoint.ctime_ns = meta.ctime_ns;
            JobResult::Done { disc, rollup: Box::new(rollup), bytes, old }
        }
        Err(ReadError::Cancelled) => JobResult::Cancelled,
        Err(ReadError::Io(e)) => JobResult::Unreadable { disc, error: e.to_string(), old },
    }
}

/// Same file, grown since the checkpoint, and the bytes before the offset unchanged. A file
/// that did not grow but changed (mtime, or ctime: an edit that put the old mtime back) was
/// rewritten in place (transcripts only ever grow), which the anchor cannot see when the change
/// lies before its 4 KiB: rescan.
fn can_append(file: &File, cp: &Checkpoint, m: &FileMeta) -> bool {
    cp.dev == m.dev
        && cp.ino == m.ino
        && m.size >= cp.offset
        && m.size > cp.size
        && (cp.offset == 0 || anchor_hash(file, cp.offset).is_ok_and(|h| h == cp.anchor))
}

/// Reads lines from `start` into `rollup`, updating its skip counts, tail flag and checkpoint
/// offset/anchor. Returns the bytes read.
fn scan_into(
    file: &File,
    rollup: &mut FileRollup,
    start: u64,
    max_line: u64,
    cancel: &AtomicBool,
) -> Result<u64, ReadError> {
    let mut skips = rollup::SkipCounts::default();
    let out = read_lines(file, start, max_line, cancel, |raw| rollup::fold_line(rollup, &mut skips, raw))?;
    skips.oversize += out.oversize;
    rollup.skips.add(&skips);
    rollup.shrink();
    rollup.pending_tail = out.pending_tail;
    if out.end_offset != rollup.checkpoint.offset || rollup.checkpoint.anchor == 0 {
        rollup.checkpoint.offset = out.end_offset;
        rollup.checkpoint.anchor = anchor_hash(file, out.end_offset)?;
    }
    Ok(out.bytes_read)
}
