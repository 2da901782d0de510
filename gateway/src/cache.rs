//! The usage answer cache: single-flight jobs, stale answers when the worker is slow or down,
//! a bounded job queue, and `usage.updated` events.
//!
//! Keys are validated [`UsageQuery`]s, so equal requests share one entry whatever their params
//! looked like. Per request:
//! - an answer younger than `fresh_for` (default 0: off) is served at once (`hit`);
//! - else the request joins the query's running job (`shared`) or starts one (`miss`); at most
//!   `max_jobs` distinct jobs run at a time, and a request that would start one more gets the
//!   cached answer marked stale, or `UNAVAILABLE` (HTTP 429) at once;
//! - it waits until its deadline (`request_timeout`). Past it, the job keeps running to refresh
//!   the entry (stale-while-revalidate) and the request gets the last good answer with
//!   `cacheStatus.status` set to `"stale"` (`stale`), or `UNAVAILABLE` with `retryable` and
//!   `retryAfterMs` when there is none. A worker failure that is retryable does the same.
//! - when every request waiting on a job has gone away (client disconnected) before its deadline
//!   and the job is not a background refresh, the job is aborted, which cancels it in the worker.
//!
//! Answers stay JSON text (`Bytes`): the gateway never parses them on this path. The worker
//! sends the data as text and the answer-time fields (`updatedAt`, `cacheStatus`,
//! `diagnostics`) typed (`ipc_proto::AnswerMeta`), so a stale answer is the same data with a
//! `"stale"` status rendered around it. Each job tells the worker the fingerprint of the answer
//! the entry holds; unchanged data comes back as a small `Unchanged` reply and the entry keeps its
//! bytes, and only a new fingerprint broadcasts `usage.updated`.
//! A background refresher re-runs the queries WebSocket clients asked recently, every
//! `refresh_interval` while such clients are connected, so dashboards get pushes without
//! polling. Queries only HTTP callers asked are not re-run: nobody would be told.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use ipc_proto::{AgentScope, AnswerMeta, CacheState, JobStats, SortKey, UsageQuery, UsageReply};
use serde_json::json;
use supervisor::SupervisorHandle;
use tokio::sync::{broadcast, watch};

use crate::error::{ApiError, ErrorCode};

/// Cache and queue limits.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Longest a request waits for its answer before it is served stale or `UNAVAILABLE`.
    pub request_timeout: Duration,
    /// Longest a job may run, even detached (the worker's own limit may be shorter).
    pub job_timeout: Duration,
    /// Distinct jobs running or queued in the worker at once.
    pub max_jobs: usize,
    /// Answers younger than this are served without asking the worker (0: always ask; the
    /// worker's incremental rollups make a warm job cheap, and answers stay exact).
    pub fresh_for: Duration,
    /// Most entries kept; the least recently used idle ones go first.
    pub max_entries: usize,
    /// Most answer bytes kept between calls (see `ApiTuning::cache_max_bytes`).
    pub max_bytes: usize,
    /// How often recently requested queries are re-run for `usage.updated` (0: never).
    pub refresh_interval: Duration,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            request_timeout: Duration::from_secs(10),
            job_timeout: Duration::from_secs(300),
            max_jobs: 16,
            fresh_for: Duration::ZERO,
            max_entries: 256,
            max_bytes: 16 << 20,
            refresh_interval: Duration::from_secs(15),
        }
    }
}

/// How a request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A cached answer within `fresh_for`.
    Hit,
    /// This request started the job that answered it.
    Miss,
    /// It joined a job another request or the refresher had started.
    Shared,
    /// The last good answer, marked stale: the worker was too slow, failing or saturated.
    Stale,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [Outcome::Hit, Outcome::Miss, Outcome::Shared, Outcome::Stale];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Shared => "shared",
            Outcome::Stale => "stale",
        }
    }

    /// `worker` when a job computed the answer for this request, else `cache`.
    pub fn served_by(self) -> &'static str {
        match self {
            Outcome::Miss | Outcome::Shared => "worker",
            Outcome::Hit | Outcome::Stale => "cache",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One good answer from the worker.
#[derive(Debug)]
pub struct Answer {
    /// The payload's data members as JSON text, exactly as the worker wrote them (shared with
    /// every client being sent this answer).
    pub data: Bytes,
    /// The answer-time fields of the latest job that confirmed `data`.
    pub meta: AnswerMeta,
    /// The worker's fingerprint of `data`.
    pub fingerprint: u64,
    /// Changes exactly when the data changes; unique per cache.
    pub version: u64,
    pub computed_at: Instant,
    pub stats: JobStats,
}

impl Answer {
    /// Bytes held (the data; the answer-time fields are small).
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// What a request gets.
#[derive(Debug, Clone)]
pub struct Served {
    pub answer: Arc<Answer>,
    pub outcome: Outcome,
}

impl Served {
    /// The payload text in pieces that concatenate to the answer, with the stale mark applied.
    pub fn chunks(&self) -> Vec<Bytes> {
        let meta = &self.answer.meta;
        let state = (self.outcome == Outcome::Stale).then_some(CacheState::Stale);
        vec![Bytes::from(meta.json_head()), self.answer.data.clone(), Bytes::from(meta.json_tail(state))]
    }

    /// The whole payload in one buffer (a copy; for the few callers that parse it).
    pub fn payload(&self) -> Bytes {
        let chunks = self.chunks();
        let mut out = Vec::with_capacity(chunks.iter().map(Bytes::len).sum());
        chunks.iter().for_each(|c| out.extend_from_slice(c));
        Bytes::from(out)
    }

    /// Age of the answer.
    pub fn age(&self) -> Duration {
        self.answer.computed_at.elapsed()
    }
}

/// An event for every WebSocket client, payload rendered once: `usage.updated`, or another
/// usage event sent through [`UsageCache::broadcast`] (`usage.budget`).
#[derive(Debug, Clone)]
pub struct UsageUpdated {
    /// The event name.
    pub event: &'static str,
    /// For `usage.updated`: `{ts, method, query:{...}, version, bytes}` as JSON text.
    pub payload_json: Arc<str>,
}

/// Counters for `/metrics` and status.
#[derive(Debug, Default)]
pub struct Counters {
    pub lookups: [AtomicU64; 4],
    pub jobs_started: AtomicU64,
    pub jobs_ok: AtomicU64,
    pub jobs_failed: AtomicU64,
    pub jobs_cancelled: AtomicU64,
    pub rejected_queue_full: AtomicU64,
    pub deadline_expired: AtomicU64,
    pub events_sent: AtomicU64,
    pub refreshes: AtomicU64,
}

/// A point-in-time view of the cache.
#[derive(Debug, Clone, Default)]
pub struct CacheStats {
    pub entries: usize,
    pub answers: usize,
    pub bytes: usize,
    pub jobs_running: usize,
    /// Requests waiting on running jobs.
    pub waiters: usize,
    /// Age of the newest and oldest cached answers.
    pub newest_age: Option<Duration>,
    pub oldest_age: Option<Duration>,
}

struct Job {
    id: u64,
    result: watch::Sender<Option<Result<Arc<Answer>, ApiError>>>,
    /// Requests waiting on it; changed only under the cache lock.
    waiters: AtomicUsize,
    /// Kept running without waiters: a background refresh, or a request's deadline passed.
    detached: AtomicBool,
    abort: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Job {
    fn finished(&self) -> bool {
        self.result.borrow().is_some()
    }
}

#[derive(Default)]
struct Entry {
    good: Option<Arc<Answer>>,
    job: Option<Arc<Job>>,
    last_used: Option<Instant>,
    /// Last time a WebSocket client asked for it. Only such queries are re-run by the
    /// refresher: their askers get `usage.updated` pushes, while HTTP callers poll anyway, and
    /// re-running a 15 MB query every 15 s for nobody costs the worker's CPU and the gateway's
    /// memory.
    last_pushed: Option<Instant>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<UsageQuery, Entry>,
    running: usize,
    bytes: usize,
    next_job: u64,
    /// Durations of the last [`RECENT_JOBS`] finished jobs, for p50/p99 in status.
    recent_ms: std::collections::VecDeque<u64>,
    /// The most recent successful job and when it finished: what status reports of the stores.
    last_ok: Option<(std::time::SystemTime, ipc_proto::JobStats, AgentScope)>,
}

/// The entry to drop first: an idle one (no job) that no WebSocket client asked, least
/// recently used first; then the one whose last WebSocket asker is oldest, since those queries
/// are the refresher's and back `usage.updated` pushes.
fn eviction_victim<K>(entries: &HashMap<K, Entry>) -> Option<&K> {
    entries
        .iter()
        .filter(|(_, e)| e.job.is_none())
        .min_by_key(|(_, e)| (e.last_pushed, e.last_used))
        .map(|(k, _)| k)
}

/// How many finished jobs the duration percentiles cover.
const RECENT_JOBS: usize = 256;

/// The cache; share it as `Arc<UsageCache>`.
pub struct UsageCache {
    supervisor: SupervisorHandle,
    tuning: Tuning,
    inner: Mutex<Inner>,
    events: broadcast::Sender<UsageUpdated>,
    next_version: AtomicU64,
    pub counters: Counters,
}

impl UsageCache {
    pub fn new(supervisor: SupervisorHandle, tuning: Tuning) -> Arc<UsageCache> {
        let (events, _) = broadcast::channel(64);
        Arc::new(UsageCache {
            supervisor,
            tuning,
            inner: Mutex::default(),
            events,
            next_version: AtomicU64::new(1),
            counters: Counters::default(),
        })
    }

    pub fn tuning(&self) -> &Tuning {
        &self.tuning
    }

    /// Receives every `usage.updated`.
    pub fn subscribe(&self) -> broadcast::Receiver<UsageUpdated> {
        self.events.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Answers `query` within the request deadline; see the module docs for the rules.
    /// `pushed`: the asker is a WebSocket client (see `Entry::last_pushed`).
    pub async fn get(self: &Arc<Self>, query: UsageQuery, pushed: bool) -> Result<Served, ApiError> {
        let started = Instant::now();
        enum Plan {
            Ready(Served),
            Busy(Option<Arc<Answer>>),
            Wait(Arc<Job>, Option<Arc<Answer>>, Outcome),
        }
        let plan = {
            let mut inner = self.lock();
            let running = inner.running;
            let entry = inner.entries.entry(query.clone()).or_default();
            entry.last_used = Some(started);
            if pushed {
                entry.last_pushed = Some(started);
            }
            let cached = entry.good.clone();
            let fresh = cached.as_ref().filter(|a| a.computed_at.elapsed() < self.tuning.fresh_for);
            if let Some(answer) = fresh {
                Plan::Ready(Served { answer: Arc::clone(answer), outcome: Outcome::Hit })
            } else if let Some(job) = entry.job.clone() {
                job.waiters.fetch_add(1, Ordering::Relaxed);
                Plan::Wait(job, cached, Outcome::Shared)
            } else if running >= self.tuning.max_jobs {
                Plan::Busy(cached)
            } else {
                let job = self.start_job_locked(&mut inner, &query, false);
                job.waiters.fetch_add(1, Ordering::Relaxed);
                Plan::Wait(job, cached, Outcome::Miss)
            }
        };
        let result = match plan {
            Plan::Ready(served) => Ok(served),
            Plan::Busy(cached) => {
                self.counters.rejected_queue_full.fetch_add(1, Ordering::Relaxed);
                match cached {
                    Some(answer) => Ok(Served { answer, outcome: Outcome::Stale }),
                    None => Err(ApiError {
                        code: ErrorCode::Overloaded,
                        message: format!("{} jobs are already running; retry shortly", self.tuning.max_jobs),
                        retry_after: Some(Duration::from_secs(1)),
                    }),
                }
            }
            Plan::Wait(job, cached, outcome) => self.wait(&query, job, cached, outcome, started).await,
        };
        if let Ok(served) = &result {
            self.counters.lookups[served.outcome.index()].fetch_add(1, Ordering::Relaxed);
            let stats = served.answer.stats;
            let fields = (
                query.method.name(),
                scope_name(&query.agents),
                served.outcome.as_str(),
                started.elapsed().as_millis() as u64,
            );
            if served.outcome.served_by() == "cache" {
                tracing::info!(method = fields.0, agents = %fields.1, files = stats.files_total, files_parsed = 0,
                    bytes_parsed = 0, ms = fields.3, cache = fields.2, served_by = "cache",
                    age_ms = served.age().as_millis() as u64, "Usage request served.");
            } else {
                tracing::debug!(method = fields.0, agents = %fields.1, ms = fields.3, cache = fields.2,
                    served_by = "worker", "Usage request served.");
            }
        }
        result
    }

    async fn wait(
        self: &Arc<Self>,
        query: &UsageQuery,
        job: Arc<Job>,
        cached: Option<Arc<Answer>>,
        outcome: Outcome,
        started: Instant,
    ) -> Result<Served, ApiError> {
        let guard = Waiter { cache: Arc::clone(self), query, job: Arc::clone(&job) };
        let mut rx = job.result.subscribe();
        let left = self.tuning.request_timeout.saturating_sub(started.elapsed());
        let waited = tokio::time::timeout(left, async {
            match rx.wait_for(Option::is_some).await {
                Ok(done) => done.clone().expect("checked by wait_for"),
                Err(_) => Err(cancelled_error()),
            }
        })
        .await;
        match waited {
            Ok(Ok(answer)) => Ok(Served { answer, outcome }),
            Ok(Err(error)) => match cached {
                Some(answer) if error.retry_after.is_some() => Ok(Served { answer, outcome: Outcome::Stale }),
                _ => Err(error),
            },
            Err(_) => {
                // The job goes on so that a retry (or a `usage.updated`) finds the answer.
                guard.job.detached.store(true, Ordering::Relaxed);
                self.counters.deadline_expired.fetch_add(1, Ordering::Relaxed);
                match cached {
                    Some(answer) => Ok(Served { answer, outcome: Outcome::Stale }),
                    None => Err(ApiError {
                        code: ErrorCode::Unavailable,
                        message: format!(
                            "{} did not finish within {} ms; it continues in the background, retry shortly",
                            query.method.name(),
                            self.tuning.request_timeout.as_millis()
                        ),
                        retry_after: Some(Duration::from_secs(2)),
                    }),
                }
            }
        }
    }

    /// Starts a job for `query` (the caller holds the lock and checked the queue bound).
    fn start_job_locked(self: &Arc<Self>, inner: &mut Inner, query: &UsageQuery, detached: bool) -> Arc<Job> {
        inner.next_job += 1;
        inner.running += 1;
        let (result, _) = watch::channel(None);
        let job = Arc::new(Job {
            id: inner.next_job,
            result,
            waiters: AtomicUsize::new(0),
            detached: AtomicBool::new(detached),
            abort: Mutex::new(None),
        });
        inner.entries.entry(query.clone()).or_default().job = Some(Arc::clone(&job));
        self.counters.jobs_started.fetch_add(1, Ordering::Relaxed);
        let task = tokio::spawn(Arc::clone(self).run_job(query.clone(), Arc::clone(&job)));
        *job.abort.lock().expect("abort slot") = Some(task.abort_handle());
        job
    }

    async fn run_job(self: Arc<Self>, query: UsageQuery, job: Arc<Job>) {
        let mut guard =
            JobGuard { cache: Arc::clone(&self), query: Some(query.clone()), job: Arc::clone(&job) };
        let started = Instant::now();
        // One job per query at a time, so the previous answer cannot change meanwhile.
        let old = self.peek(&query);
        let known = old.as_ref().map(|a| a.fingerprint);
        let called =
            tokio::time::timeout(self.tuning.job_timeout, self.supervisor.call(query.clone(), known)).await;
        let result = match called {
            Ok(Ok(reply)) => {
                let computed_at = Instant::now();
                match (reply, old) {
                    (UsageReply::Unchanged { meta, stats }, Some(old)) => Ok(Arc::new(Answer {
                        data: old.data.clone(),
                        meta,
                        fingerprint: old.fingerprint,
                        version: old.version,
                        computed_at,
                        stats,
                    })),
                    (UsageReply::Unchanged { .. }, None) => Err(ApiError {
                        code: ErrorCode::Unavailable,
                        message: "the worker answered 'unchanged' to a query it was not told about".into(),
                        retry_after: Some(Duration::from_millis(500)),
                    }),
                    (UsageReply::Answer(a), old) => {
                        // The same data under a new fingerprint (a restarted worker) keeps the
                        // old bytes and version: nothing changed for the clients.
                        let (data, version) = match old {
                            Some(old)
                                if old.fingerprint == a.fingerprint || old.data == a.data_json.as_ref() =>
                            {
                                (old.data.clone(), old.version)
                            }
                            _ => {
                                (a.data_json.into_bytes(), self.next_version.fetch_add(1, Ordering::Relaxed))
                            }
                        };
                        Ok(Arc::new(Answer {
                            data,
                            meta: a.meta,
                            fingerprint: a.fingerprint,
                            version,
                            computed_at,
                            stats: a.stats,
                        }))
                    }
                }
            }
            Ok(Err(error)) => Err(ApiError::from(error)),
            Err(_) => Err(ApiError {
                code: ErrorCode::Unavailable,
                message: format!(
                    "{} did not finish within {} s",
                    query.method.name(),
                    self.tuning.job_timeout.as_secs()
                ),
                retry_after: Some(Duration::from_secs(5)),
            }),
        };
        guard.query = None;
        self.finish(&query, &job, result, started.elapsed());
    }

    /// Records a job's result, wakes its waiters and announces changed data.
    fn finish(
        &self,
        query: &UsageQuery,
        job: &Arc<Job>,
        result: Result<Arc<Answer>, ApiError>,
        took: Duration,
    ) {
        let (changed, waiters) = {
            let mut inner = self.lock();
            inner.running = inner.running.saturating_sub(1);
            let waiters = job.waiters.load(Ordering::Relaxed);
            let mut changed = false;
            let mut delta: isize = 0;
            if let Some(entry) = inner.entries.get_mut(query) {
                if entry.job.as_ref().is_some_and(|j| j.id == job.id) {
                    entry.job = None;
                }
                if let Ok(answer) = &result {
                    changed = entry.good.as_ref().is_none_or(|old| old.version != answer.version);
                    delta = answer.len() as isize - entry.good.as_ref().map_or(0, |old| old.len() as isize);
                    entry.good = Some(Arc::clone(answer));
                }
            }
            inner.bytes = inner.bytes.saturating_add_signed(delta);
            if inner.recent_ms.len() == RECENT_JOBS {
                inner.recent_ms.pop_front();
            }
            inner.recent_ms.push_back(took.as_millis() as u64);
            if let Ok(answer) = &result {
                // Prefer the widest view of the stores: an all-agents answer replaces anything.
                let wider = query.agents == AgentScope::All
                    || inner.last_ok.as_ref().is_none_or(|(_, _, scope)| *scope != AgentScope::All);
                if wider {
                    inner.last_ok = Some((std::time::SystemTime::now(), answer.stats, query.agents.clone()));
                }
            }
            self.evict_locked(&mut inner);
            (changed, waiters)
        };
        let origin =
            if job.detached.load(Ordering::Relaxed) && waiters == 0 { "background" } else { "request" };
        match &result {
            Ok(answer) => {
                self.counters.jobs_ok.fetch_add(1, Ordering::Relaxed);
                let s = answer.stats;
                tracing::info!(method = query.method.name(), agents = %scope_name(&query.agents), stores = s.agents,
                    files = s.files_total, files_parsed = s.files_parsed, bytes_parsed = s.bytes_parsed,
                    lines_skipped = s.lines_skipped, worker_ms = s.duration_ms, ms = took.as_millis() as u64,
                    bytes = answer.len(), waiters, origin, changed, cache = "miss", served_by = "worker",
                    "Usage job done.");
                if changed {
                    self.announce(query, answer);
                }
            }
            Err(error) => {
                self.counters.jobs_failed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(method = query.method.name(), agents = %scope_name(&query.agents),
                    ms = took.as_millis() as u64, waiters, origin, code = error.code.as_str(), error = %error.message,
                    "Usage job failed.");
            }
        }
        job.result.send_replace(Some(result));
    }

    fn announce(&self, query: &UsageQuery, answer: &Answer) {
        let ts = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let payload = json!({
            "ts": ts,
            "method": query.method.name(),
            "query": query_json(query),
            "version": answer.version,
            "bytes": answer.len(),
        });
        if self
            .events
            .send(UsageUpdated { event: "usage.updated", payload_json: payload.to_string().into() })
            .is_ok()
        {
            self.counters.events_sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends `event` with `payload_json` to every WebSocket client allowed to read usage;
    /// `false` when none is connected.
    pub fn broadcast(&self, event: &'static str, payload_json: String) -> bool {
        self.events.send(UsageUpdated { event, payload_json: payload_json.into() }).is_ok()
    }

    /// Drops idle entries, in [`eviction_victim`]'s order, while over the entry or byte bound.
    fn evict_locked(&self, inner: &mut Inner) {
        while inner.entries.len() > self.tuning.max_entries || inner.bytes > self.tuning.max_bytes {
            let Some(victim) = eviction_victim(&inner.entries).cloned() else { break };
            if let Some(entry) = inner.entries.remove(&victim) {
                inner.bytes = inner.bytes.saturating_sub(entry.good.map_or(0, |g| g.len()));
            }
        }
    }

    /// The cached answer for `query`, without starting anything.
    pub fn peek(&self, query: &UsageQuery) -> Option<Arc<Answer>> {
        self.lock().entries.get(query).and_then(|e| e.good.clone())
    }

    /// Starts a background job for `query` unless one runs, its answer is younger than
    /// `min_age`, or the queue is over half full (background work leaves room for clients).
    pub fn prefetch(self: &Arc<Self>, query: &UsageQuery, min_age: Duration) -> bool {
        let mut inner = self.lock();
        if inner.running * 2 >= self.tuning.max_jobs {
            return false;
        }
        let entry = inner.entries.entry(query.clone()).or_default();
        if entry.job.is_some() || entry.good.as_ref().is_some_and(|g| g.computed_at.elapsed() < min_age) {
            return false;
        }
        entry.last_used = Some(Instant::now());
        self.start_job_locked(&mut inner, query, true);
        self.counters.refreshes.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Re-runs the eight queries WebSocket clients asked most recently. It runs only while they
    /// listen, and carries no age limit: a dashboard left open for hours asked its queries
    /// long ago and must still get `usage.updated` pushes without polling.
    pub fn refresh_recent(self: &Arc<Self>) -> usize {
        let mut candidates: Vec<(Instant, UsageQuery)> = {
            let inner = self.lock();
            inner
                .entries
                .iter()
                .filter(|(_, e)| e.job.is_none() && e.good.is_some())
                .filter_map(|(q, e)| e.last_pushed.map(|t| (t, q.clone())))
                .collect()
        };
        candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
        let min_age = self.tuning.refresh_interval / 2;
        candidates.into_iter().take(8).filter(|(_, q)| self.prefetch(q, min_age)).count()
    }

    /// Runs [`Self::refresh_recent`] every `refresh_interval` while anyone listens for events.
    pub fn spawn_refresher(self: &Arc<Self>) {
        if self.tuning.refresh_interval.is_zero() {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(this.tuning.refresh_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                if this.events.receiver_count() > 0 {
                    let started = this.refresh_recent();
                    if started > 0 {
                        tracing::debug!(started, "Refreshing recently requested usage queries.");
                    }
                }
            }
        });
    }

    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        let ages: Vec<Duration> =
            inner.entries.values().filter_map(|e| e.good.as_ref().map(|g| g.computed_at.elapsed())).collect();
        CacheStats {
            entries: inner.entries.len(),
            answers: ages.len(),
            bytes: inner.bytes,
            jobs_running: inner.running,
            waiters: inner
                .entries
                .values()
                .filter_map(|e| e.job.as_ref())
                .map(|j| j.waiters.load(Ordering::Relaxed))
                .sum(),
            newest_age: ages.iter().min().copied(),
            oldest_age: ages.iter().max().copied(),
        }
    }

    /// Recent job durations (p50, p99, count) and the queue: the `jobs` section of status.
    pub fn jobs_json(&self) -> serde_json::Value {
        let inner = self.lock();
        let mut sorted: Vec<u64> = inner.recent_ms.iter().copied().collect();
        sorted.sort_unstable();
        let pct = |p: f64| -> Option<u64> {
            (!sorted.is_empty())
                .then(|| sorted[((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1])
        };
        let waiters: usize = inner
            .entries
            .values()
            .filter_map(|e| e.job.as_ref())
            .map(|j| j.waiters.load(Ordering::Relaxed))
            .sum();
        json!({
            "recent": sorted.len(),
            "p50Ms": pct(0.5),
            "p99Ms": pct(0.99),
            "running": inner.running,
            "maxJobs": self.tuning.max_jobs,
            "waiters": waiters,
        })
    }

    /// What the last successful job saw of the stores (widest scope first): the `stores`
    /// section of status. `null` before the first answer.
    pub fn stores_json(&self) -> serde_json::Value {
        let inner = self.lock();
        let Some((at, stats, scope)) = &inner.last_ok else { return serde_json::Value::Null };
        json!({
            "scope": scope_name(scope),
            "agents": stats.agents,
            "files": stats.files_total,
            "filesParsed": stats.files_parsed,
            "bytesParsed": stats.bytes_parsed,
            "linesSkipped": stats.lines_skipped,
            "atMs": at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
        })
    }

    /// `{entries, answers, bytes, jobsRunning, maxJobs, ...counters}` for status.
    pub fn status_json(&self) -> serde_json::Value {
        let s = self.stats();
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let lookups: serde_json::Map<String, serde_json::Value> = Outcome::ALL
            .iter()
            .map(|o| (o.as_str().to_owned(), json!(load(&c.lookups[o.index()]))))
            .collect();
        json!({
            "entries": s.entries,
            "answers": s.answers,
            "bytes": s.bytes,
            "jobsRunning": s.jobs_running,
            "waiters": s.waiters,
            "maxJobs": self.tuning.max_jobs,
            "requestTimeoutMs": self.tuning.request_timeout.as_millis() as u64,
            "refreshIntervalMs": self.tuning.refresh_interval.as_millis() as u64,
            "newestAgeMs": s.newest_age.map(|d| d.as_millis() as u64),
            "oldestAgeMs": s.oldest_age.map(|d| d.as_millis() as u64),
            "lookups": lookups,
            "jobs": {
                "started": load(&c.jobs_started),
                "ok": load(&c.jobs_ok),
                "failed": load(&c.jobs_failed),
                "cancelled": load(&c.jobs_cancelled),
                "rejectedQueueFull": load(&c.rejected_queue_full),
                "deadlineExpired": load(&c.deadline_expired),
                "refreshes": load(&c.refreshes),
            },
            "eventsSent": load(&c.events_sent),
        })
    }
}

/// `all` or the agent id, for logs.
pub fn scope_name(scope: &AgentScope) -> String {
    match scope {
        AgentScope::All => "all".to_owned(),
        AgentScope::One(agent) => agent.clone(),
    }
}

/// The normalised query, as clients see it in `usage.updated`.
pub fn query_json(query: &UsageQuery) -> serde_json::Value {
    let mut q = json!({
        "agentScope": if query.agents == AgentScope::All { json!("all") } else { json!(null) },
        "agentId": match &query.agents { AgentScope::One(a) => json!(a), AgentScope::All => json!(null) },
        "startMs": query.start_ms,
        "endMs": query.end_ms,
    });
    if let Some(key) = &query.key {
        q["key"] = json!(key);
    }
    if let Some(limit) = query.limit {
        q["limit"] = json!(limit);
    }
    // The paging params, as a client sends them, so it can tell its own page's event exactly.
    if let Some(offset) = query.offset {
        q["offset"] = json!(offset);
    }
    if let Some(sort) = &query.sort {
        q["sortBy"] = json!(match sort.key {
            SortKey::Cost => "cost",
            SortKey::Tokens => "tokens",
            SortKey::Messages => "messages",
            SortKey::UpdatedAt => "updatedAt",
        });
        q["sortDir"] = json!(if sort.descending { "desc" } else { "asc" });
    }
    if let Some(search) = &query.search {
        q["search"] = json!(search);
    }
    q
}

fn cancelled_error() -> ApiError {
    ApiError {
        code: ErrorCode::Unavailable,
        message: "the usage job was cancelled; retry".into(),
        retry_after: Some(Duration::from_millis(500)),
    }
}

/// One request waiting on a job. When the last waiter of a foreground job leaves before the
/// job finished (its client went away), the job is aborted: dropping the supervisor call
/// sends `Cancel` to the worker.
struct Waiter<'a> {
    cache: Arc<UsageCache>,
    query: &'a UsageQuery,
    job: Arc<Job>,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let abort = {
            let mut inner = self.cache.lock();
            let left = self.job.waiters.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
            if left > 0 || self.job.detached.load(Ordering::Relaxed) || self.job.finished() {
                None
            } else {
                if let Some(entry) = inner.entries.get_mut(self.query) {
                    if entry.job.as_ref().is_some_and(|j| j.id == self.job.id) {
                        entry.job = None;
                    }
                }
                self.job.abort.lock().expect("abort slot").take()
            }
        };
        if let Some(handle) = abort {
            self.cache.counters.jobs_cancelled.fetch_add(1, Ordering::Relaxed);
            tracing::info!(method = self.query.method.name(), agents = %scope_name(&self.query.agents),
                "Usage job cancelled: every client waiting for it went away.");
            handle.abort();
        }
    }
}

/// Releases a job's queue slot and wakes its waiters if the job task ends without finishing
/// (aborted, or a panic).
struct JobGuard {
    cache: Arc<UsageCache>,
    /// `None` once the job finished normally.
    query: Option<UsageQuery>,
    job: Arc<Job>,
}

impl Drop for JobGuard {
    fn drop(&mut self) {
        let Some(query) = self.query.take() else { return };
        {
            let mut inner = self.cache.lock();
            inner.running = inner.running.saturating_sub(1);
            if let Some(entry) = inner.entries.get_mut(&query) {
                if entry.job.as_ref().is_some_and(|j| j.id == self.job.id) {
                    entry.job = None;
                }
            }
        }
        self.job.result.send_replace(Some(Err(cancelled_error())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_drops_http_only_answers_before_pushed_ones() {
        let now = Instant::now();
        let at = |s: u64| Some(now + Duration::from_secs(s));
        let entry = |last_used, last_pushed| Entry { good: None, job: None, last_used, last_pushed };
        let mut entries = HashMap::from([
            ("ws-old", entry(at(9), at(1))),
            ("ws-new", entry(at(9), at(5))),
            ("http-recent", entry(at(8), None)),
            ("http-old", entry(at(2), None)),
        ]);
        let mut order = Vec::new();
        while let Some(victim) = eviction_victim(&entries).copied() {
            entries.remove(victim);
            order.push(victim);
        }
        assert_eq!(order, ["http-old", "http-recent", "ws-old", "ws-new"]);
    }

    #[test]
    fn a_stale_answer_is_the_same_data_with_a_stale_status() {
        let data = Bytes::from_static(
            br#""sessions":[{"label":"\"cacheStatus\":{\"status\":\"x\""}],"totals":{"input":5}"#,
        );
        let meta = AnswerMeta {
            updated_at: Some(1_795_000_009_999),
            cache: Some(ipc_proto::CacheInfo {
                state: CacheState::Fresh,
                cached_files: 3,
                pending_files: 0,
                stale_files: 0,
                refreshed_at: 5,
            }),
            diagnostics: Some(r#"{"filesParsed":0}"#.into()),
            rows_total: Some(1),
        };
        let answer = Arc::new(Answer {
            data: data.clone(),
            meta,
            fingerprint: 1,
            version: 1,
            computed_at: Instant::now(),
            stats: JobStats::default(),
        });
        let served = |outcome| Served { answer: Arc::clone(&answer), outcome };
        let fresh: serde_json::Value = serde_json::from_slice(&served(Outcome::Miss).payload()).unwrap();
        assert_eq!(fresh["cacheStatus"]["status"], "fresh");
        assert_eq!(fresh["updatedAt"], 1_795_000_009_999u64);
        let stale: serde_json::Value = serde_json::from_slice(&served(Outcome::Stale).payload()).unwrap();
        assert_eq!(stale["cacheStatus"]["status"], "stale");
        assert_eq!(stale["cacheStatus"]["cachedFiles"], 3);
        assert_eq!(stale["sessions"][0]["label"], r#""cacheStatus":{"status":"x""#);
        assert_eq!(stale["totals"]["input"], 5);
        // The data is the answer's memory, not a copy.
        assert_eq!(served(Outcome::Stale).chunks()[1].as_ptr(), data.as_ptr());
    }
}
