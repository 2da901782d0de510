//! The usage engine: answers OpenClaw usage queries over a legacy (JSONL) session store from
//! incrementally maintained per-file rollups.
//!
//! One [`Engine`] lives in the worker process for its lifetime. Each [`Engine::answer`] call
//! lists the agents and transcripts in scope (cheap: `readdir` + `stat`), brings every changed
//! file's rollup up to date (parsing only appended bytes when the file merely grew; changed
//! files are parsed on `threads` threads), then aggregates rollups into the response. Unchanged
//! files cost a `stat` (none in a watched directory without change events); per-file summaries
//! and rendered rows are cached against generation stamps, so an unchanged store is answered
//! from cached text and one appended file costs one file's summary and row. Rollups persist in
//! the data dir, so a restarted worker does not re-read the store. Semantics and choices:
//! `docs/usage-engine.md`.
//!
//! Module map: [`discover`] finds files, [`reader`] streams lines, [`line`] decodes a line,
//! [`rollup`] folds lines into quarter-hour buckets, [`summary`] aggregates buckets for a range,
//! [`respond`], [`series`] and [`logs`] build payloads, [`cache`] remembers answers,
//! [`persist`] keeps rollups on disk, [`watch`] spares listings of unchanged directories,
//! [`store`] reads `sessions.json` / `models.json`.
//! [`sqlite`] (with [`sqlite_schema`]) reads agents that have an OpenClaw 2026.7+ database instead.

mod cache;
mod discover;
mod line;
mod logs;
mod num;
mod persist;
mod reader;
mod respond;
mod rollup;
mod series;
mod sqlite;
mod sqlite_schema;
mod store;
mod summary;
mod time;
mod watch;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ipc_proto::{
    AgentScope, JobStats, Method, Progress, UsageAnswer, UsageQuery, WorkerError, WorkerErrorKind,
};

use discover::{Discovered, FileMeta};
use reader::{ReadError, anchor_hash, read_lines};
use respond::{Diagnostics, FileRef, KeyTarget, View};
use rollup::{Checkpoint, FileRollup};
use store::{Cached, Price, PriceTable, StoreIndex};

pub use cache::Payload;

/// The agent whose `models.json` is consulted first for prices, as OpenClaw consults the
/// default agent's catalog before anything else.
const DEFAULT_AGENT: &str = "main";
/// Minimum time between two progress reports while parsing.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// How the engine reads the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// The OpenClaw state dir (`~/.openclaw`), holding `agents/`.
    pub state_dir: PathBuf,
    /// Where rollups persist between worker runs (`None`: memory only).
    pub data_dir: Option<PathBuf>,
    /// Lines longer than this are skipped and counted (`oversizeLines`), never buffered whole.
    pub max_line_bytes: u64,
    /// Parser threads for changed files.
    pub threads: usize,
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
        }
    }
}

/// One transcript the engine knows, with its rollup.
#[derive(Debug, Clone)]
struct FileState {
    disc: Discovered,
    rollup: FileRollup,
    /// Changes whenever `rollup` or `disc` does: what answer caches are checked against.
    generation: u64,
}

/// A path as a map key, hashed and compared as bytes: `Path` hashes and compares component by
/// component, which made the per-call lookups of every known file a visible cost.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FileKey(std::ffi::OsString);

impl FileKey {
    fn of(path: &std::path::Path) -> FileKey {
        FileKey(path.as_os_str().to_owned())
    }
}

impl std::borrow::Borrow<std::ffi::OsStr> for FileKey {
    fn borrow(&self) -> &std::ffi::OsStr {
        &self.0
    }
}

/// Known transcripts by path (look them up with `path.as_os_str()`).
type FileMap = HashMap<FileKey, FileState, std::hash::BuildHasherDefault<cache::Fnv>>;

/// Owns the per-file rollups between calls.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    files: FileMap,
    stores: HashMap<String, Cached<StoreIndex>>,
    prices: HashMap<String, Cached<PriceTable>>,
    /// Agents read from an OpenClaw 2026.7+ database instead of files.
    sqlite: sqlite::Databases,
    /// Summaries and rendered answers (derived data, never persisted).
    cache: cache::AnswerCache,
    /// Source of [`FileState::generation`].
    next_gen: u64,
    /// The on-disk copy of `files` in the data dir, if there is one.
    persisted: persist::Persisted,
    /// Change events of the transcript directories, and their last listings.
    watch: watch::Watch,
    listings: HashMap<String, Vec<Discovered>>,
}

/// What [`Engine::refresh`] did.
#[derive(Debug, Default)]
struct RefreshStats {
    files_parsed: u64,
    bytes_parsed: u64,
}

/// A file whose rollup must be brought up to date.
struct Job {
    disc: Discovered,
    prev: Option<FileRollup>,
}

enum JobResult {
    Done { disc: Discovered, rollup: Box<FileRollup>, bytes: u64 },
    Unreadable { disc: Discovered, error: String },
    Cancelled,
}

fn cancelled() -> WorkerError {
    WorkerError::new(WorkerErrorKind::Cancelled, "cancelled")
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Engine {
    pub fn new(config: EngineConfig) -> Engine {
        Engine {
            config,
            files: FileMap::default(),
            stores: HashMap::new(),
            prices: HashMap::new(),
            sqlite: sqlite::Databases::default(),
            cache: cache::AnswerCache::default(),
            next_gen: 1,
            persisted: persist::Persisted::default(),
            watch: watch::Watch::default(),
            listings: HashMap::new(),
        }
    }

    fn next_gen(&mut self) -> u64 {
        self.next_gen += 1;
        self.next_gen
    }

    /// The configuration this engine reads with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Number of transcripts with a rollup in memory.
    pub fn cached_files(&self) -> usize {
        self.files.len()
    }

    /// Approximate heap bytes held by rollups.
    pub fn rollup_bytes(&self) -> usize {
        self.files.values().map(|f| f.rollup.heap_bytes()).sum()
    }

    /// Approximate heap bytes held by answer caches (summaries, rendered rows and answers).
    pub fn cache_bytes(&self) -> usize {
        self.cache.heap_bytes()
    }

    /// Answers one query. Called on a compute thread (not async). `cancel` is polled between
    /// files (and every few MB inside a big file); when set, the answer is
    /// [`WorkerErrorKind::Cancelled`], and rollups of files finished so far are kept.
    /// `progress` is called now and then (files done/total, bytes).
    pub fn answer(
        &mut self,
        query: &UsageQuery,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<UsageAnswer, WorkerError> {
        let (payload, stats) = self.answer_parts(query, cancel, progress)?;
        Ok(UsageAnswer { payload_json: payload.to_text().into(), stats })
    }

    /// [`Self::answer`] with the payload as pieces (see [`Payload`]): a large answer's rows stay
    /// shared with the engine's cache, and the worker writes them to its socket without first
    /// copying them into one buffer.
    pub fn answer_parts(
        &mut self,
        query: &UsageQuery,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(Payload, JobStats), WorkerError> {
        let started = Instant::now();
        let cpu_started = thread_cpu_us();
        self.load_persisted();
        let all_agents = discover::list_agents(&self.config.state_dir).map_err(|e| {
            WorkerError::new(
                WorkerErrorKind::StoreUnavailable,
                format!("cannot read {}: {e}", self.config.state_dir.display()),
            )
        })?;
        // Rollups of agents that no longer exist would otherwise stay (and persist) forever.
        let before = self.files.len();
        self.files.retain(|_, f| all_agents.contains(&f.disc.agent_id));
        if self.files.len() != before {
            self.persisted.changed();
        }
        let agents: Vec<String> = match &query.agents {
            AgentScope::All => all_agents,
            AgentScope::One(id) => all_agents.into_iter().filter(|a| a.eq_ignore_ascii_case(id)).collect(),
        };
        let mut diag = Diagnostics { agents: agents.len() as u64, ..Diagnostics::default() };
        self.persisted.report(&mut diag);
        self.refresh_json(&agents, &mut diag);
        let listed = self.discover(&agents, &mut diag);

        let target = match (&query.key, query.method) {
            (Some(key), _) => Some(self.resolve_key(key, &agents, &listed)?),
            (None, Method::SessionsUsageTimeseries | Method::SessionsUsageLogs) => {
                return Err(WorkerError::new(
                    WorkerErrorKind::InvalidRequest,
                    format!("key is required for {}", query.method.name().rsplit('.').next().unwrap_or("")),
                ));
            }
            (None, _) => None,
        };
        if matches!(query.method, Method::SessionsUsageTimeseries | Method::SessionsUsageLogs) {
            let t = target.as_ref().expect("key checked above");
            let file = listed
                .iter()
                .filter(|d| d.agent_id == t.agent && d.session_id == t.session_id)
                .max_by_key(|d| matches!(d.kind, discover::FileKind::Primary));
            let Some(file) = file else {
                return Err(WorkerError::new(
                    WorkerErrorKind::InvalidRequest,
                    format!("No transcript found for session: {}", query.key.as_deref().unwrap_or("")),
                ));
            };
            let price = price_fn(&self.prices);
            let max_line = self.config.max_line_bytes;
            let (payload, bytes) = if query.method == Method::SessionsUsageLogs {
                logs::logs(file, &t.session_id, query.limit, max_line, cancel, &price)?
            } else {
                series::timeseries(file, &t.session_id, max_line, cancel, &price)?
            };
            let stats = JobStats {
                agents: agents.len() as u64,
                files_total: 1,
                files_parsed: 1,
                bytes_parsed: bytes,
                lines_skipped: 0,
                duration_ms: started.elapsed().as_millis() as u64,
            };
            return Ok((Payload::text(payload), stats));
        }

        // Which files need to be current: all listed ones, or the key's session (+ family).
        let selection: Vec<&Discovered> = match &target {
            None => listed.iter().collect(),
            Some(t) => {
                let mut ids: HashSet<&str> = HashSet::from([t.session_id.as_str()]);
                if let Some(store) = self.stores.get(&t.agent).and_then(|c| c.value.as_ref())
                    && let Some(e) = store.by_session_id(&t.session_id)
                {
                    ids.extend(e.family_ids.iter().map(String::as_str));
                }
                listed
                    .iter()
                    .filter(|d| d.agent_id == t.agent && ids.contains(d.session_id.as_str()))
                    .collect()
            }
        };
        let listed_at = started.elapsed();
        let stats = self.refresh(&selection, cancel, progress, &mut diag)?;
        let refreshed_at = started.elapsed();
        diag.files_parsed = stats.files_parsed;
        diag.bytes_parsed = stats.bytes_parsed;

        let files: Vec<FileRef<'_>> = selection
            .iter()
            .filter_map(|d| self.files.get(d.path.as_os_str()))
            .map(|f| FileRef { disc: &f.disc, rollup: &f.rollup, generation: f.generation })
            .collect();
        diag.files = files.len() as u64;
        for f in &files {
            diag.skips.add(&f.rollup.skips);
            diag.pending_tails += u64::from(f.rollup.pending_tail);
        }
        let stores: HashMap<&str, &StoreIndex> =
            self.stores.iter().filter_map(|(a, c)| c.value.as_ref().map(|v| (a.as_str(), v))).collect();
        let store_stamps: HashMap<&str, u64> =
            self.stores.iter().map(|(a, c)| (a.as_str(), c.stamp)).collect();
        let mut price_stamps: Vec<(&str, u64)> =
            self.prices.iter().map(|(a, c)| (a.as_str(), c.stamp)).collect();
        price_stamps.sort_unstable();
        let price = price_fn(&self.prices);
        let view = View {
            query,
            now_ms: now_ms(),
            files,
            stores,
            store_stamps,
            prices_stamp: cache::hash_of(&price_stamps),
            price: &price,
            diag: &diag,
        };
        let payload = match query.method {
            Method::UsageCost => Payload::text(respond::usage_cost(&view, &mut self.cache)?),
            _ => respond::sessions_usage(&view, target.as_ref(), &mut self.cache)?,
        };
        tracing::debug!(
            list_us = listed_at.as_micros() as u64,
            refresh_us = (refreshed_at - listed_at).as_micros() as u64,
            answer_us = (started.elapsed() - refreshed_at).as_micros() as u64,
            cpu_us = thread_cpu_us() - cpu_started,
            "Answer phases."
        );
        let stats = JobStats {
            agents: agents.len() as u64,
            files_total: diag.files,
            files_parsed: stats.files_parsed,
            bytes_parsed: stats.bytes_parsed,
            // Skipped lines of the files in scope as they stand (not only those met in this
            // job's bytes), plus unterminated tails waiting for their newline.
            lines_skipped: diag.skips.total() + diag.pending_tails,
            duration_ms: started.elapsed().as_millis() as u64,
        };
        Ok((payload, stats))
    }

    /// Re-reads changed `sessions.json` / `models.json` files of the agents in scope.
    fn refresh_json(&mut self, agents: &[String], diag: &mut Diagnostics) {
        let dir = self.config.state_dir.clone();
        for a in agents {
            if sqlite::has_db(&dir, a) {
                continue; // its session index comes from the database (`discover`)
            }
            let c = self.stores.entry(a.clone()).or_default();
            c.refresh(&store::store_path(&dir, a), StoreIndex::parse);
            if let Some(e) = &c.error {
                diag.sessions_json_errors += 1;
                diag.error(format!("sessions.json: {e}"));
            }
        }
        let mut price_agents: Vec<&str> = agents.iter().map(String::as_str).collect();
        price_agents.push(DEFAULT_AGENT);
        for a in price_agents {
            let c = self.prices.entry(a.to_owned()).or_default();
            c.refresh(&store::models_path(&dir, a), PriceTable::parse);
            if let Some(e) = &c.error {
                diag.models_json_errors += 1;
                diag.error(format!("models.json: {e}"));
            }
        }
    }

    /// Lists the counted files of `agents`, follows renames (same device and inode) and drops
    /// rollups of files that are gone.
    fn discover(&mut self, agents: &[String], diag: &mut Diagnostics) -> Vec<Discovered> {
        // Databases first (in order); directory listings then run on the worker's threads, as
        // `stat`ing every transcript is most of an unchanged call's cost.
        let mut per_agent: Vec<Option<io::Result<Vec<Discovered>>>> = Vec::with_capacity(agents.len());
        for a in agents {
            let db = self.sqlite.list(&self.config.state_dir, a, &mut self.stores, diag);
            per_agent.push(db.map(Ok));
        }
        // A directory without change events since its last listing is not listed again.
        self.watch.drain();
        let mut todo: Vec<usize> = Vec::new();
        for (i, a) in agents.iter().enumerate() {
            if per_agent[i].is_some() {
                continue;
            }
            let dir = discover::sessions_dir(&self.config.state_dir, a);
            match self.listings.get(a) {
                Some(l) if self.watch.is_clean(&dir) => per_agent[i] = Some(Ok(l.clone())),
                _ => {
                    self.watch.listing(&dir);
                    todo.push(i);
                }
            }
        }
        let threads = self.config.threads.clamp(1, todo.len().max(1));
        let state_dir = &self.config.state_dir;
        let lists: Vec<(usize, io::Result<Vec<Discovered>>)> = if threads <= 1 {
            todo.iter().map(|&i| (i, discover::list_files(state_dir, &agents[i]))).collect()
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let mine: Vec<usize> = todo.iter().copied().skip(t).step_by(threads).collect();
                        scope.spawn(move || {
                            mine.into_iter()
                                .map(|i| (i, discover::list_files(state_dir, &agents[i])))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                handles.into_iter().flat_map(|h| h.join().expect("listing thread")).collect()
            })
        };
        for (i, l) in lists {
            match &l {
                Ok(files) => {
                    self.listings.insert(agents[i].clone(), files.clone());
                }
                Err(_) => {
                    self.listings.remove(&agents[i]);
                    self.watch.forget(&discover::sessions_dir(&self.config.state_dir, &agents[i]));
                }
            }
            per_agent[i] = Some(l);
        }
        let mut listed = Vec::new();
        for (a, l) in agents.iter().zip(per_agent) {
            match l {
                Some(Ok(files)) => listed.extend(files),
                Some(Err(e)) => diag.error(format!("listing sessions of agent {a}: {e}")),
                None => {}
            }
        }
        let in_scope: HashSet<&str> = agents.iter().map(String::as_str).collect();
        // Usually every known file is still listed: then nothing is gone, without building a set.
        let known = listed.iter().filter(|d| self.files.contains_key(d.path.as_os_str())).count();
        let known_in_scope =
            self.files.values().filter(|f| in_scope.contains(f.disc.agent_id.as_str())).count();
        let gone: Vec<FileKey> = if known == known_in_scope {
            Vec::new()
        } else {
            let present: HashSet<&std::ffi::OsStr> = listed.iter().map(|d| d.path.as_os_str()).collect();
            self.files
                .iter()
                .filter(|(p, f)| {
                    in_scope.contains(f.disc.agent_id.as_str()) && !present.contains(p.0.as_os_str())
                })
                .map(|(p, _)| p.clone())
                .collect()
        };
        if !gone.is_empty() {
            let mut by_inode: HashMap<(u64, u64), FileState> = HashMap::new();
            for p in gone {
                if let Some(f) = self.files.remove(&p) {
                    by_inode.insert((f.disc.meta.dev, f.disc.meta.ino), f);
                }
            }
            for d in &listed {
                if self.files.contains_key(d.path.as_os_str()) {
                    continue;
                }
                if let Some(mut f) = by_inode.remove(&(d.meta.dev, d.meta.ino)) {
                    // Renamed (e.g. archived to `.deleted.<ts>`): same bytes, new name.
                    f.disc = Discovered { meta: f.disc.meta, ..d.clone() };
                    f.generation = self.next_gen();
                    self.files.insert(FileKey::of(&d.path), f);
                }
            }
            self.persisted.changed();
        }
        listed
    }

    /// Resolves a `key`: a session key from a store, `agent:<id>:<sessionId>`, or a bare session
    /// id, within the agents in scope.
    fn resolve_key(
        &self,
        key: &str,
        agents: &[String],
        listed: &[Discovered],
    ) -> Result<KeyTarget, WorkerError> {
        let store = |a: &str| self.stores.get(a).and_then(|c| c.value.as_ref());
        let has_file = |a: &str, id: &str| listed.iter().any(|d| d.agent_id == a && d.session_id == id);
        let parsed = key.strip_prefix("agent:").and_then(|rest| rest.split_once(':'));
        if let Some((agent, rest)) = parsed {
            let Some(agent) = agents.iter().find(|a| a.eq_ignore_ascii_case(agent)) else {
                return Err(WorkerError::new(
                    WorkerErrorKind::InvalidRequest,
                    format!("unknown session key: {key}"),
                ));
            };
            if let Some(s) = store(agent) {
                if let Some(e) = s.by_key(key).or_else(|| s.by_session_id(rest)) {
                    return Ok(KeyTarget { agent: agent.clone(), session_id: e.session_id.clone() });
                }
            }
            if has_file(agent, rest) {
                return Ok(KeyTarget { agent: agent.clone(), session_id: rest.to_owned() });
            }
        } else {
            for a in agents {
                if let Some(e) = store(a).and_then(|s| s.by_key(key).or_else(|| s.by_session_id(key))) {
                    return Ok(KeyTarget { agent: a.clone(), session_id: e.session_id.clone() });
                }
            }
            for a in agents {
                if has_file(a, key) {
                    return Ok(KeyTarget { agent: a.clone(), session_id: key.to_owned() });
                }
            }
        }
        Err(WorkerError::new(WorkerErrorKind::InvalidRequest, format!("unknown session key: {key}")))
    }

    /// Brings the rollups of `selection` up to date, parsing changed files in parallel.
    fn refresh(
        &mut self,
        selection: &[&Discovered],
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(Progress),
        diag: &mut Diagnostics,
    ) -> Result<RefreshStats, WorkerError> {
        let mut jobs: Vec<Job> = Vec::new();
        for d in selection {
            match self.files.get_mut(d.path.as_os_str()) {
                Some(f) if same_stat(&f.rollup.checkpoint, &d.meta) => {
                    if f.disc != **d {
                        f.disc = (*d).clone();
                        self.next_gen += 1;
                        f.generation = self.next_gen;
                    }
                }
                Some(f) => {
                    let prev = std::mem::take(&mut f.rollup);
                    jobs.push(Job { disc: (*d).clone(), prev: Some(prev) });
                }
                None => jobs.push(Job { disc: (*d).clone(), prev: None }),
            }
        }
        let total = selection.len() as u64;
        let mut done = total - jobs.len() as u64;
        let mut stats = RefreshStats::default();
        progress(Progress { files_done: done, files_total: total, bytes_done: 0 });
        if jobs.is_empty() {
            return Ok(stats);
        }
        // Biggest first, so one large file does not finish last on one core.
        jobs.sort_by_key(|j| {
            std::cmp::Reverse(
                j.disc.meta.size.saturating_sub(j.prev.as_ref().map_or(0, |p| p.checkpoint.offset)),
            )
        });
        let max_line = self.config.max_line_bytes;
        let threads = self.config.threads.clamp(1, jobs.len());
        let queue: Vec<Mutex<Option<Job>>> = jobs.into_iter().map(|j| Mutex::new(Some(j))).collect();
        let next = AtomicUsize::new(0);
        let mut was_cancelled = false;
        let mut last_report = Instant::now();
        std::thread::scope(|scope| {
            let (tx, rx) = mpsc::channel::<JobResult>();
            for _ in 0..threads {
                let tx = tx.clone();
                let (queue, next) = (&queue, &next);
                scope.spawn(move || {
                    loop {
                        if cancel.load(Ordering::Relaxed) {
                            let _ = tx.send(JobResult::Cancelled);
                            return;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(slot) = queue.get(i) else { return };
                        let job = slot.lock().map(|mut s| s.take()).ok().flatten();
                        let Some(job) = job else { continue };
                        if tx.send(run_job(job, max_line, cancel)).is_err() {
                            return;
                        }
                    }
                });
            }
            drop(tx);
            for r in rx {
                match r {
                    JobResult::Done { disc, rollup, bytes } => {
                        done += 1;
                        stats.files_parsed += 1;
                        stats.bytes_parsed += bytes;
                        let generation = self.next_gen();
                        self.files
                            .insert(FileKey::of(&disc.path), FileState { disc, rollup: *rollup, generation });
                        self.persisted.parsed(bytes);
                    }
                    JobResult::Unreadable { disc, error } => {
                        done += 1;
                        diag.unreadable_files += 1;
                        diag.error(format!("{}: {error}", disc.path.display()));
                        if self.files.remove(disc.path.as_os_str()).is_some() {
                            self.persisted.changed();
                        }
                    }
                    JobResult::Cancelled => was_cancelled = true,
                }
                // At most ~10 reports a second: the callback may cross a process boundary.
                if last_report.elapsed() >= PROGRESS_EVERY || done == total {
                    last_report = Instant::now();
                    progress(Progress {
                        files_done: done,
                        files_total: total,
                        bytes_done: stats.bytes_parsed,
                    });
                }
            }
        });
        // Files whose job never ran (cancelled) lost their taken rollup: forget them so the
        // next call rescans them instead of trusting a stale checkpoint.
        for slot in queue {
            if let Ok(Some(job)) = slot.into_inner() {
                self.files.remove(job.disc.path.as_os_str());
                self.persisted.changed();
            }
        }
        if was_cancelled || cancel.load(Ordering::Relaxed) {
            return Err(cancelled());
        }
        Ok(stats)
    }
}

/// CPU time of the calling thread, µs (what a job cost, however busy the machine is).
fn thread_cpu_us() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
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

/// Whether a checkpoint was taken at exactly this stat (then the file is unchanged).
fn same_stat(cp: &Checkpoint, m: &FileMeta) -> bool {
    cp.dev == m.dev && cp.ino == m.ino && cp.size == m.size && cp.mtime_ns == m.mtime_ns
}

/// Parses one file: only the appended bytes when its checkpoint still matches, else all of it.
fn run_job(job: Job, max_line: u64, cancel: &AtomicBool) -> JobResult {
    if sqlite::is_session(&job.disc) {
        return sqlite::run_job(job, max_line, cancel);
    }
    let Job { mut disc, prev } = job;
    let file = match File::open(&disc.path) {
        Ok(f) => f,
        Err(e) => {
            return JobResult::Unreadable { disc, error: e.to_string() };
        }
    };
    let meta = match file.metadata() {
        Ok(m) => FileMeta::of(&m),
        Err(e) => {
            return JobResult::Unreadable { disc, error: e.to_string() };
        }
    };
    disc.meta = meta;
    let mut rollup = match prev {
        Some(p) if can_append(&file, &p.checkpoint, &meta) => p,
        _ => FileRollup::default(),
    };
    let start = rollup.checkpoint.offset;
    match scan_into(&file, &mut rollup, start, max_line, cancel) {
        Ok(bytes) => {
            rollup.checkpoint.dev = meta.dev;
            rollup.checkpoint.ino = meta.ino;
            rollup.checkpoint.size = meta.size;
            rollup.checkpoint.mtime_ns = meta.mtime_ns;
            JobResult::Done { disc, rollup: Box::new(rollup), bytes }
        }
        Err(ReadError::Cancelled) => JobResult::Cancelled,
        Err(ReadError::Io(e)) => JobResult::Unreadable { disc, error: e.to_string() },
    }
}

/// Same file, grown (or untouched) since the checkpoint, and the bytes before the offset
/// unchanged. A file that did not grow but has a new mtime was rewritten in place (transcripts
/// only ever grow), which the anchor cannot see when the change lies before its 4 KiB: rescan.
fn can_append(file: &File, cp: &Checkpoint, m: &FileMeta) -> bool {
    cp.dev == m.dev
        && cp.ino == m.ino
        && m.size >= cp.offset
        && (m.size > cp.size || m.mtime_ns == cp.mtime_ns)
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
    let out = read_lines(file, start, max_line, cancel, |raw| sqlite::fold(rollup, &mut skips, raw))?;
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
