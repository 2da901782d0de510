//! Building OpenClaw 2026.9 response payloads from rollups.
//!
//! Field names, order and optionality follow a real 2026.9.6 `sessions.usage` response
//! (`samples/sessions.usage.small.json`); JavaScript number formatting comes from [`Js`].
//! Differences from 2026.5 that we follow (2026.9):
//! - `sessions.usage` `totals`/`aggregates` cover **every** session row in range and scope, and
//!   only `sessions[]` is cut to `limit` (2026.5 aggregated the returned rows only; the 2026.9
//!   sample has `limit:3` with `sessionCount:180` and complete totals).
//! - `aggregates` gains `sessionCount`, `longestSessionDurationMs`, `byCreator`, `costDaily`;
//!   rows gain `creatorKey` and `hasContextWeight`; `dailyBreakdown` rows carry the eleven
//!   totals besides `tokens`/`cost`; the top level gains `creatorOptions`.
//! - `usage.cost` `days` is the number of days in the range (`(end - start + 1) / 1 day`, 90
//!   for a 90-day range; 2026.5 printed one more) and `daily` lists every day of the range, zeros
//!   included (for an unbounded range, from the first day with data).
//!
//! clawgate adds one top-level object, `diagnostics`, to both payloads: skipped-line counts per
//! kind, unreadable files, and `sessions.json`/`models.json` errors. Legacy stores carry no
//! creator metadata, so every row's `creatorKey` is `["unknown"]`, as 2026.9 reports for them.
//! Days are cut on quarter-hour buckets: exact for offsets that are whole quarter hours (every
//! current IANA zone); see `docs/usage-engine.md` for the others and for all other choices.
//!
//! Answers are built against [`AnswerCache`]: `usage.cost` and `sessions.usage` fold cached
//! per-file summaries, and `sessions.usage` rows are rendered once per row stamp and then shared.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

use ipc_proto::{GroupBy, UsageQuery, WorkerError, WorkerErrorKind};
use serde::ser::{Serialize, SerializeStruct, Serializer};
use serde_json::value::RawValue;

use super::cache::{
    AnswerCache, Fnv, IdMap, Payload, SessionsBody, Shape, SummaryMap, assemble, fields_of, hash_of,
};
use super::discover::{Discovered, FileKind};
use super::num::{Js, KSum};
use super::rollup::{FileRollup, MsgCounts, SkipCounts};
use super::store::{Price, PriceFn, StoreEntry, StoreIndex};
use super::summary::{
    DayModel, LatencyStats, ModelRow, SessionLatency, Summary, Totals, Want, Window, model_key_eq, summarize,
};
use super::time::{DAY_MS, QUARTERS_PER_DAY, day_of, format_day, zone_offset_ms};

/// The creator key of sessions without creator metadata.
const UNKNOWN_CREATOR: &str = "[\"unknown\"]";
/// Longest `usage.cost` range that is listed day by day from its start.
const MAX_DENSE_DAYS: i64 = 1000;

/// Counters that are not part of OpenClaw's payload (the `diagnostics` object).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics {
    pub agents: u64,
    pub files: u64,
    pub files_parsed: u64,
    pub bytes_parsed: u64,
    pub skips: SkipCounts,
    pub pending_tails: u64,
    pub unreadable_files: u64,
    /// Agent databases skipped whole: locked, corrupt, or of an unknown schema.
    pub unreadable_databases: u64,
    pub sessions_json_errors: u64,
    pub models_json_errors: u64,
    /// Persisted rollup caches found corrupt, old or foreign (discarded and rebuilt) since the
    /// worker started.
    pub rollup_cache_discards: u64,
    /// The first few error messages, for humans.
    pub errors: Vec<String>,
}

impl Diagnostics {
    pub fn error(&mut self, msg: String) {
        if self.errors.len() < 20 {
            self.errors.push(msg);
        }
    }
}

impl Serialize for Diagnostics {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Diagnostics", 12)?;
        st.serialize_field("agents", &self.agents)?;
        st.serialize_field("files", &self.files)?;
        st.serialize_field("filesParsed", &self.files_parsed)?;
        st.serialize_field("bytesParsed", &self.bytes_parsed)?;
        st.serialize_field("malformedJsonLines", &self.skips.malformed_json)?;
        st.serialize_field("invalidUtf8Lines", &self.skips.invalid_utf8)?;
        st.serialize_field("nulByteLines", &self.skips.nul_bytes)?;
        st.serialize_field("oversizeLines", &self.skips.oversize)?;
        st.serialize_field("undecodableRows", &self.skips.undecodable)?;
        st.serialize_field("pendingTails", &self.pending_tails)?;
        st.serialize_field("unreadableFiles", &self.unreadable_files)?;
        st.serialize_field("unreadableDatabases", &self.unreadable_databases)?;
        st.serialize_field("sessionsJsonErrors", &self.sessions_json_errors)?;
        st.serialize_field("modelsJsonErrors", &self.models_json_errors)?;
        st.serialize_field("rollupCacheDiscards", &self.rollup_cache_discards)?;
        st.serialize_field("errors", &self.errors)?;
        st.end()
    }
}

/// One readable, up-to-date transcript in scope.
pub struct FileRef<'a> {
    pub disc: &'a Discovered,
    pub rollup: &'a FileRollup,
    /// Changes whenever the rollup does (cache validity).
    pub generation: u64,
}

/// Everything a payload is built from.
pub struct View<'a> {
    pub query: &'a UsageQuery,
    pub now_ms: i64,
    pub files: Vec<FileRef<'a>>,
    pub stores: HashMap<&'a str, &'a StoreIndex>,
    /// [`super::store::Cached::stamp`] of each agent's store index.
    pub store_stamps: HashMap<&'a str, u64>,
    /// One stamp over every price table: summaries hold priced costs.
    pub prices_stamp: u64,
    /// Price of (agent, provider, model) for entries without a stored cost.
    pub price: &'a PriceFn<'a>,
    pub diag: &'a Diagnostics,
}

/// What cached per-file summaries hold: everything but quarter hours, which only rendered rows
/// need (and rendered rows are cached as text).
const CACHED_WANT: Want = Want { quarters: false, latency: true, untimed: true };

impl View<'_> {
    fn window(&self) -> Window {
        Window {
            start: self.query.start_ms,
            end: self.query.end_ms,
            offset_ms: zone_offset_ms(&self.query.day_zone),
        }
    }

    fn shape(&self) -> Shape {
        let w = self.window();
        Shape { start: w.start, end: w.end, offset_ms: w.offset_ms, prices: self.prices_stamp }
    }

    fn summarize(&self, f: &FileRef<'_>, want: Want) -> Summary {
        let prices: Vec<Option<Price>> = f
            .rollup
            .models
            .iter()
            .map(|(p, m)| (self.price)(&f.disc.agent_id, p.as_deref(), m.as_deref()))
            .collect();
        summarize(f.rollup, &self.window(), &prices, want)
    }

    /// Brings the cached summaries of `files` up to date; returns them.
    fn summaries<'c, 'f>(
        &self,
        cache: &'c mut AnswerCache,
        files: impl Iterator<Item = &'f FileRef<'f>>,
    ) -> &'c SummaryMap
    where
        Self: 'f,
    {
        let map = cache.summaries(self.shape());
        for f in files {
            map.entry(f.generation).or_insert_with(|| self.summarize(f, CACHED_WANT));
        }
        self.prune(map);
        map
    }

    /// Drops summaries of generations not in scope once they are many (files changed or went
    /// away); a scope narrower than the last one only costs recomputation later.
    fn prune(&self, map: &mut SummaryMap) {
        if map.len() > 2 * self.files.len() + 64 {
            let live: HashSet<u64> = self.files.iter().map(|f| f.generation).collect();
            map.retain(|g, _| live.contains(g));
        }
    }

    /// Everything an answer is built from, hashed: the query, the day (unbounded `usage.cost`
    /// ranges end today), prices, store indexes, and each file in scope by its generation
    /// (unique per path and rollup state within this process).
    fn fingerprint(&self) -> u64 {
        let mut h = Fnv::default();
        self.query.hash(&mut h);
        day_of(self.now_ms, 0).hash(&mut h);
        self.prices_stamp.hash(&mut h);
        let mut stamps: Vec<(&str, u64)> = self.store_stamps.iter().map(|(a, s)| (*a, *s)).collect();
        stamps.sort_unstable();
        stamps.hash(&mut h);
        for f in &self.files {
            h.write_u64(f.generation);
        }
        h.finish()
    }

    fn entry_for(&self, d: &Discovered) -> Option<&StoreEntry> {
        self.stores.get(d.agent_id.as_str()).and_then(|s| s.for_file(&d.session_id, &d.file_name))
    }

    /// Discovery's range filter: files last modified before the range start are not listed.
    fn listed(&self, d: &Discovered) -> bool {
        self.query.start_ms <= 0 || d.meta.mtime_ms() >= self.query.start_ms
    }

    fn cache_status(&self) -> CacheStatus {
        CacheStatus { cached: self.files.len() as u64, refreshed_at: self.now_ms }
    }

    /// The fields that change on every call, rendered last: `,"cacheStatus":…,"diagnostics":…`.
    fn volatile_tail(&self) -> Result<String, WorkerError> {
        struct Tail<'a>(CacheStatus, &'a Diagnostics);
        impl Serialize for Tail<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut st = s.serialize_struct("Tail", 2)?;
                st.serialize_field("cacheStatus", &self.0)?;
                st.serialize_field("diagnostics", self.1)?;
                st.end()
            }
        }
        Ok(format!(",{}", fields_of(&Tail(self.cache_status(), self.diag)).map_err(internal)?))
    }
}

struct CacheStatus {
    cached: u64,
    refreshed_at: i64,
}

impl Serialize for CacheStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("CacheStatus", 5)?;
        st.serialize_field("status", "fresh")?;
        st.serialize_field("cachedFiles", &self.cached)?;
        st.serialize_field("pendingFiles", &0)?;
        st.serialize_field("staleFiles", &0)?;
        st.serialize_field("refreshedAt", &self.refreshed_at)?;
        st.end()
    }
}

fn internal(e: serde_json::Error) -> WorkerError {
    WorkerError::new(WorkerErrorKind::Internal, format!("serialising the answer: {e}"))
}

fn raw(s: &str) -> Option<Box<RawValue>> {
    RawValue::from_string(s.to_owned()).ok()
}

// ---------------------------------------------------------------------------------------------
// usage.cost

/// `usage.cost`: daily totals of timestamped entries in range, over the agents in scope.
pub fn usage_cost(v: &View<'_>, cache: &mut AnswerCache) -> Result<String, WorkerError> {
    let fingerprint = v.fingerprint();
    let tail = v.volatile_tail()?;
    if let Some(body) = cache.body(v.query, fingerprint) {
        return Ok(assemble(v.now_ms, &[body], &tail));
    }
    let w = v.window();
    let listed: Vec<&FileRef<'_>> = v.files.iter().filter(|f| v.listed(f.disc)).collect();
    let sums = v.summaries(cache, listed.iter().copied());
    let mut days: BTreeMap<i64, Totals> = BTreeMap::new();
    let mut totals = Totals::default();
    for f in &listed {
        let s = &sums[&f.generation];
        for (d, da) in &s.days {
            if da.usage_count > 0 {
                days.entry(*d).or_default().merge(&da.totals);
                totals.merge(&da.totals);
            }
        }
    }
    let (mut lo, mut hi) = (day_of(w.start, w.offset_ms), day_of(w.end, w.offset_ms));
    if hi - lo + 1 > MAX_DENSE_DAYS {
        // An unbounded range: from the first day with data to today (or the last day with
        // data, if later).
        lo = days.keys().next().copied().unwrap_or(hi + 1);
        let last = days.keys().next_back().copied().unwrap_or(lo);
        hi = hi.min(last.max(day_of(v.now_ms, w.offset_ms)));
    }
    let empty = Totals::default();
    let dated = |d: i64| DatedTotals {
        date: format_day(d),
        totals: days.get(&d).unwrap_or(&empty).clone(),
        lead: None,
        _p: std::marker::PhantomData,
    };
    let daily: Vec<DatedTotals<'_>> = if hi - lo + 1 > MAX_DENSE_DAYS {
        // Still huge (timestamps far in the past or future): days with data only, so a bogus
        // timestamp cannot make the answer millions of empty rows.
        days.keys().copied().filter(|d| (lo..=hi).contains(d)).map(dated).collect()
    } else if lo <= hi {
        (lo..=hi).map(dated).collect()
    } else {
        Vec::new()
    };
    let days_count = (w.end - w.start + 1 + DAY_MS - 1).div_euclid(DAY_MS).max(0);
    let body = fields_of(&CostBody { days: days_count, daily, totals }).map_err(internal)?;
    let out = assemble(v.now_ms, &[&body], &tail);
    cache.put_body(v.query, fingerprint, body);
    Ok(out)
}

/// `usage.cost` between `updatedAt` and `cacheStatus`.
struct CostBody<'a> {
    days: i64,
    daily: Vec<DatedTotals<'a>>,
    totals: Totals,
}

impl Serialize for CostBody<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("CostUsageSummary", 3)?;
        st.serialize_field("days", &self.days)?;
        st.serialize_field("daily", &self.daily)?;
        st.serialize_field("totals", &self.totals)?;
        st.end()
    }
}

/// `{date, [tokens, cost,] …eleven totals}`.
struct DatedTotals<'a> {
    date: String,
    totals: Totals,
    /// `dailyBreakdown` rows lead with `tokens` (four-component sum) and `cost`.
    lead: Option<(u64, f64)>,
    _p: std::marker::PhantomData<&'a ()>,
}

impl Serialize for DatedTotals<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Daily", 14)?;
        st.serialize_field("date", &self.date)?;
        if let Some((tokens, cost)) = self.lead {
            st.serialize_field("tokens", &tokens)?;
            st.serialize_field("cost", &Js(cost))?;
        }
        self.totals.write_fields(&mut st)?;
        st.end()
    }
}

// ---------------------------------------------------------------------------------------------
// sessions.usage rows

/// One `sessions[]` row before its summary is attached.
struct Row<'v, 'a> {
    file: &'v FileRef<'a>,
    /// Family mode: the other instances whose usage this row includes.
    members: Vec<&'v FileRef<'a>>,
    family: Option<Family>,
    updated_at: f64,
    /// The file's mtime in ms (a sort key; computed once, it divides an i128).
    mtime_ms: i64,
    entry: Option<&'v StoreEntry>,
}

impl Row<'_, '_> {
    /// What the row's rendered text depends on within one shape.
    fn stamp(&self, v: &View<'_>) -> u64 {
        let mut h = Fnv::default();
        self.file.generation.hash(&mut h);
        for m in &self.members {
            m.generation.hash(&mut h);
        }
        v.store_stamps.get(self.file.disc.agent_id.as_str()).hash(&mut h);
        h.finish()
    }
}

struct Family {
    key: String,
    included: Vec<String>,
}

/// Which row a file becomes, or `None` when family mode folds it into another row.
fn row_key(agent: &str, d: &Discovered, entry: Option<&StoreEntry>) -> String {
    entry.map_or_else(|| format!("agent:{agent}:{}", d.session_id), |e| e.key.clone())
}

/// The transcript OpenClaw would read for a session id: the primary file, else the newest
/// archive.
fn file_for_session<'v, 'a>(
    files: &'v [FileRef<'a>],
    agent: &str,
    session_id: &str,
) -> Option<&'v FileRef<'a>> {
    let mut best: Option<&FileRef<'a>> = None;
    for f in files.iter().filter(|f| f.disc.agent_id == agent && f.disc.session_id == session_id) {
        let rank = |f: &FileRef<'_>| match &f.disc.kind {
            FileKind::Primary => (1, String::new()),
            FileKind::Reset(ts) | FileKind::Deleted(ts) => (0, ts.clone()),
        };
        if best.is_none_or(|b| rank(f) > rank(b)) {
            best = Some(f);
        }
    }
    best
}

/// A resolved `key` parameter.
pub struct KeyTarget {
    pub agent: String,
    pub session_id: String,
}

/// `sessions.usage`. With `target`, only that session's row.
///
/// Rows are ordered from file and store metadata alone. Then, in that order, every row's
/// summary (cached per file and shape) is folded into the aggregates, and the first `limit`
/// rows are written out: copied from the previous answer of the same shape when their stamp is
/// unchanged, rendered from a full summary otherwise.
///
/// Rows are shared pieces ([`Payload`]): an unchanged store's next answer is the same pieces
/// with new volatile fields, and a changed row costs its own rendering only.
pub fn sessions_usage(
    v: &View<'_>,
    target: Option<&KeyTarget>,
    cache: &mut AnswerCache,
) -> Result<Payload, WorkerError> {
    let fingerprint = v.fingerprint();
    let tail = v.volatile_tail()?;
    let shape = v.shape();
    let row_shape = hash_of(&(shape, v.query.group_by, v.query.include_context_weight));
    let old = cache.sessions.take().filter(|b| b.row_shape == row_shape);
    if let Some(b) = &old
        && b.fingerprint == fingerprint
        && b.query == *v.query
    {
        let payload = b.payload(v.now_ms, &tail);
        cache.sessions = old;
        return Ok(payload);
    }
    // Rows of the last answer of this shape, by stamp, for reuse.
    let reusable: IdMap<Arc<str>> = old.map(|b| b.rows.into_iter().collect()).unwrap_or_default();

    let family_mode = v.query.group_by == GroupBy::Family;
    let candidates: Vec<&FileRef<'_>> = match target {
        Some(t) => file_for_session(&v.files, &t.agent, &t.session_id).into_iter().collect(),
        None => v.files.iter().filter(|f| v.listed(f.disc)).collect(),
    };
    let mut rows: Vec<Row<'_, '_>> = Vec::with_capacity(candidates.len());
    for f in candidates {
        let d = f.disc;
        let entry = v.entry_for(d);
        if family_mode
            && entry.is_none()
            && target.is_none()
            && v.stores.get(d.agent_id.as_str()).is_some_and(|s| s.family_ids.contains(&d.session_id))
        {
            continue;
        }
        let (family, members) = match (family_mode, entry) {
            (true, Some(e)) => {
                let mut included = vec![d.session_id.clone()];
                for id in &e.family_ids {
                    if !included.contains(id) {
                        included.push(id.clone());
                    }
                }
                let members = included
                    .iter()
                    .skip(1)
                    .filter_map(|id| file_for_session(&v.files, &d.agent_id, id))
                    .collect();
                (
                    Some(Family { key: e.family_key.clone().unwrap_or_else(|| e.key.clone()), included }),
                    members,
                )
            }
            _ => (None, Vec::new()),
        };
        let mtime_ms = d.meta.mtime_ms();
        rows.push(Row {
            file: f,
            members,
            family,
            updated_at: entry.and_then(|e| e.updated_at).unwrap_or(mtime_ms as f64),
            mtime_ms,
            entry,
        });
    }
    rows.sort_by(|a, b| {
        b.updated_at
            .total_cmp(&a.updated_at)
            .then(b.mtime_ms.cmp(&a.mtime_ms))
            .then(a.file.disc.file_name.cmp(&b.file.disc.file_name))
    });

    let limit = v.query.limit.unwrap_or(50).max(1) as usize;
    let w = v.window();
    let head = format!(
        "{},\"sessions\":[",
        fields_of(&Dates(format_day(day_of(w.start, 0)), format_day(day_of(w.end, 0)))).map_err(internal)?
    );
    let mut placed: Vec<(u64, Arc<str>)> = Vec::with_capacity(rows.len().min(limit));
    let mut aggregates = Aggregates::default();
    let full = Want { quarters: true, latency: true, untimed: true };
    let map = cache.summaries(shape);
    for (i, r) in rows.iter().enumerate() {
        let channel = r.entry.and_then(|e| e.channel.as_deref());
        let agent = r.file.disc.agent_id.as_str();
        let row_files = || std::iter::once(r.file).chain(r.members.iter().copied());
        let render = i < limit;
        let stamp = if render { r.stamp(v) } else { 0 };
        let reuse = if render { reusable.get(&stamp).cloned() } else { None };
        if render && reuse.is_none() {
            // A full summary (with quarter hours) renders the row; its files' cached summaries
            // are refreshed from the same computation.
            let mut merged: Option<Summary> = None;
            for f in row_files() {
                let s = v.summarize(f, full);
                map.entry(f.generation).or_insert_with(|| s.without_quarters());
                match &mut merged {
                    None => merged = Some(s),
                    Some(m) => m.merge(&s),
                }
            }
            let s = merged.expect("a row has its own file");
            aggregates.add(agent, channel, &s);
            let row = RowOut { r, s: &s, include_cw: v.query.include_context_weight };
            placed.push((stamp, Arc::from(serde_json::to_string(&row).map_err(internal)?)));
        } else {
            for f in row_files() {
                map.entry(f.generation).or_insert_with(|| v.summarize(f, CACHED_WANT));
            }
            let own = &map[&r.file.generation];
            if r.members.is_empty() {
                aggregates.add(agent, channel, own);
            } else {
                let mut merged = own.clone();
                for m in &r.members {
                    merged.merge(&map[&m.generation]);
                }
                aggregates.add(agent, channel, &merged);
            }
            if let Some(row) = reuse {
                placed.push((stamp, row));
            }
        }
    }
    v.prune(map);
    drop(reusable);
    let body = SessionsBody {
        query: v.query.clone(),
        fingerprint,
        row_shape,
        head: Arc::from(head),
        rows: placed,
        tail: Arc::from(format!("],{}", fields_of(&SessionsTail(&aggregates)).map_err(internal)?)),
    };
    let payload = body.payload(v.now_ms, &tail);
    cache.sessions = Some(body);
    Ok(payload)
}

struct Dates(String, String);

impl Serialize for Dates {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Dates", 2)?;
        st.serialize_field("startDate", &self.0)?;
        st.serialize_field("endDate", &self.1)?;
        st.end()
    }
}

/// `totals`, `aggregates` and `creatorOptions`.
struct SessionsTail<'a>(&'a Aggregates);

impl Serialize for SessionsTail<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("SessionsUsageResult", 3)?;
        st.serialize_field("totals", &self.0.totals)?;
        st.serialize_field("aggregates", self.0)?;
        let options: Vec<CreatorOption> =
            if self.0.session_count > 0 { vec![CreatorOption] } else { Vec::new() };
        st.serialize_field("creatorOptions", &options)?;
        st.end()
    }
}

struct CreatorOption;

impl Serialize for CreatorOption {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("CreatorOption", 1)?;
        st.serialize_field("key", UNKNOWN_CREATOR)?;
        st.end()
    }
}

struct RowOut<'a, 'v, 'f> {
    r: &'a Row<'v, 'f>,
    s: &'a Summary,
    include_cw: bool,
}

impl Serialize for RowOut<'_, '_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.r;
        let d = r.file.disc;
        let e = r.entry;
        let mut st = s.serialize_struct("SessionUsageEntry", 22)?;
        st.serialize_field("key", &row_key(&d.agent_id, d, e))?;
        if let Some(l) = e.and_then(|e| e.label.as_ref()) {
            st.serialize_field("label", l)?;
        }
        st.serialize_field("sessionId", &d.session_id)?;
        match &r.family {
            Some(f) => {
                st.serialize_field("scope", "family")?;
                st.serialize_field("sessionFamilyKey", &f.key)?;
                st.serialize_field("currentSessionId", &d.session_id)?;
                st.serialize_field("includedSessionIds", &f.included)?;
                st.serialize_field("historicalInstanceCount", &f.included.len())?;
            }
            None => st.serialize_field("scope", "instance")?,
        }
        st.serialize_field("updatedAt", &Js(r.updated_at))?;
        st.serialize_field("agentId", &d.agent_id)?;
        st.serialize_field("creatorKey", UNKNOWN_CREATOR)?;
        if let Some(c) = e.and_then(|e| e.channel.as_ref()) {
            st.serialize_field("channel", c)?;
        }
        if let Some(c) = e.and_then(|e| e.chat_type.as_ref()) {
            st.serialize_field("chatType", c)?;
        }
        if let Some(o) = e.and_then(|e| e.origin.as_deref()).and_then(raw) {
            st.serialize_field("origin", &o)?;
        }
        if let Some(m) = e.and_then(|e| e.model_override.as_ref()) {
            st.serialize_field("modelOverride", m)?;
        }
        if let Some(p) = e.and_then(|e| e.provider_override.as_ref()) {
            st.serialize_field("providerOverride", p)?;
        }
        if let Some(p) = e.and_then(|e| e.model_provider.as_ref()) {
            st.serialize_field("modelProvider", p)?;
        }
        if let Some(m) = e.and_then(|e| e.model.as_ref()) {
            st.serialize_field("model", m)?;
        }
        st.serialize_field(
            "usage",
            &UsageOut { s: self.s, session_id: &d.session_id, session_file: &d.path.display().to_string() },
        )?;
        let cw = e.and_then(|e| e.context_weight.as_deref());
        st.serialize_field("hasContextWeight", &cw.is_some())?;
        if self.include_cw {
            st.serialize_field("contextWeight", &cw.and_then(raw))?;
        }
        st.end()
    }
}

struct CountsOut<'a>(&'a MsgCounts);

impl Serialize for CountsOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("MessageCounts", 6)?;
        write_counts(&mut st, self.0)?;
        st.end()
    }
}

fn write_counts<S: SerializeStruct>(st: &mut S, c: &MsgCounts) -> Result<(), S::Error> {
    st.serialize_field("total", &c.total)?;
    st.serialize_field("user", &c.user)?;
    st.serialize_field("assistant", &c.assistant)?;
    st.serialize_field("toolCalls", &c.tool_calls)?;
    st.serialize_field("toolResults", &c.tool_results)?;
    st.serialize_field("errors", &c.errors)
}

/// `{totalCalls, uniqueTools, tools: [{name, count}]}`, by count, descending.
struct ToolsOut<'a>(&'a [(String, u64)]);

impl Serialize for ToolsOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut tools: Vec<&(String, u64)> = self.0.iter().collect();
        tools.sort_by_key(|t| std::cmp::Reverse(t.1));
        let list: Vec<NameCount<'_>> = tools.iter().map(|(n, c)| NameCount(n, *c)).collect();
        let mut st = s.serialize_struct("ToolUsage", 3)?;
        st.serialize_field("totalCalls", &self.0.iter().map(|t| t.1).sum::<u64>())?;
        st.serialize_field("uniqueTools", &self.0.len())?;
        st.serialize_field("tools", &list)?;
        st.end()
    }
}

struct NameCount<'a>(&'a str, u64);

impl Serialize for NameCount<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Tool", 2)?;
        st.serialize_field("name", self.0)?;
        st.serialize_field("count", &self.1)?;
        st.end()
    }
}

/// Model rows sorted by cost, then tokens, descending (stable).
fn sorted_models(rows: &[ModelRow]) -> Vec<&ModelRow> {
    let mut v: Vec<&ModelRow> = rows.iter().collect();
    v.sort_by(|a, b| {
        b.totals
            .total_cost
            .value()
            .total_cmp(&a.totals.total_cost.value())
            .then(b.totals.total_tokens.cmp(&a.totals.total_tokens))
    });
    v
}

struct ModelOut<'a> {
    m: &'a ModelRow,
    with_model: bool,
}

impl Serialize for ModelOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("ModelUsage", 4)?;
        if let Some(p) = &self.m.provider {
            st.serialize_field("provider", p)?;
        }
        if self.with_model
            && let Some(m) = &self.m.model
        {
            st.serialize_field("model", m)?;
        }
        st.serialize_field("count", &self.m.count)?;
        st.serialize_field("totals", &self.m.totals)?;
        st.end()
    }
}

struct UsageOut<'a> {
    s: &'a Summary,
    session_id: &'a str,
    session_file: &'a str,
}

impl Serialize for UsageOut<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let s = self.s;
        let mut st = ser.serialize_struct("SessionCostSummary", 27)?;
        s.totals.write_fields(&mut st)?;
        st.serialize_field("sessionId", self.session_id)?;
        st.serialize_field("sessionFile", self.session_file)?;
        if let Some(f) = s.first {
            st.serialize_field("firstActivity", &f)?;
        }
        if let Some(l) = s.last {
            st.serialize_field("lastActivity", &l)?;
        }
        if let Some(d) = s.duration_ms() {
            st.serialize_field("durationMs", &d)?;
        }
        st.serialize_field("messageCounts", &CountsOut(&s.counts))?;
        if !s.tools.is_empty() {
            st.serialize_field("toolUsage", &ToolsOut(&s.tools))?;
        }
        if !s.models.is_empty() {
            let rows: Vec<ModelOut<'_>> =
                sorted_models(&s.models).into_iter().map(|m| ModelOut { m, with_model: true }).collect();
            st.serialize_field("modelUsage", &rows)?;
        }
        if let Some(l) = &s.latency {
            st.serialize_field("latency", &SessionLatency(l))?;
        }
        let dates: Vec<String> = s.days.keys().map(|d| format_day(*d)).collect();
        st.serialize_field("activityDates", &dates)?;
        let breakdown: Vec<DatedTotals<'_>> = s
            .days
            .iter()
            .filter(|(_, d)| d.usage_count > 0)
            .map(|(d, da)| DatedTotals {
                date: format_day(*d),
                totals: da.totals.clone(),
                lead: Some((da.totals.tokens4(), da.totals.total_cost.value())),
                _p: std::marker::PhantomData,
            })
            .collect();
        st.serialize_field("dailyBreakdown", &breakdown)?;
        let counts: Vec<DatedCounts> = s
            .days
            .iter()
            .filter(|(_, d)| !d.counts.is_empty())
            .map(|(d, da)| DatedCounts { date: format_day(*d), quarter: None, counts: da.counts })
            .collect();
        st.serialize_field("dailyMessageCounts", &counts)?;
        if !s.quarters.is_empty() {
            let qc: Vec<DatedCounts> = s
                .quarters
                .iter()
                .filter(|(_, q)| !q.counts.is_empty())
                .map(|(q, qa)| DatedCounts {
                    date: format_day(q.div_euclid(QUARTERS_PER_DAY)),
                    quarter: Some(q.rem_euclid(QUARTERS_PER_DAY)),
                    counts: qa.counts,
                })
                .collect();
            st.serialize_field("utcQuarterHourMessageCounts", &qc)?;
            let qt: Vec<QuarterTokens<'_>> = s
                .quarters
                .iter()
                .filter(|(_, q)| q.has_usage)
                .map(|(q, qa)| QuarterTokens { q: *q, tokens: &qa.tokens, cost: qa.cost })
                .collect();
            st.serialize_field("utcQuarterHourTokenUsage", &qt)?;
        }
        let lat: Vec<DatedLatency> = s
            .days
            .iter()
            .filter_map(|(d, da)| {
                da.latency.map(|l| DatedLatency { date: format_day(*d), l, session_order: true })
            })
            .collect();
        if !lat.is_empty() {
            st.serialize_field("dailyLatency", &lat)?;
        }
        let mut dm: Vec<DatedModel<'_>> = Vec::new();
        for (d, da) in &s.days {
            let mut ms: Vec<&DayModel> = da.models.iter().collect();
            ms.sort_by(|a, b| b.cost.value().total_cmp(&a.cost.value()));
            dm.extend(ms.into_iter().map(|m| DatedModel { day: *d, m }));
        }
        if !dm.is_empty() {
            st.serialize_field("dailyModelUsage", &dm)?;
        }
        st.end()
    }
}

struct DatedCounts {
    date: String,
    quarter: Option<i64>,
    counts: MsgCounts,
}

impl Serialize for DatedCounts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("DailyMessageCounts", 8)?;
        st.serialize_field("date", &self.date)?;
        if let Some(q) = self.quarter {
            st.serialize_field("quarterIndex", &q)?;
        }
        write_counts(&mut st, &self.counts)?;
        st.end()
    }
}

struct QuarterTokens<'a> {
    q: i64,
    tokens: &'a [u64; 5],
    cost: KSum,
}

impl Serialize for QuarterTokens<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("QuarterTokens", 8)?;
        st.serialize_field("date", &format_day(self.q.div_euclid(QUARTERS_PER_DAY)))?;
        st.serialize_field("quarterIndex", &self.q.rem_euclid(QUARTERS_PER_DAY))?;
        st.serialize_field("input", &self.tokens[0])?;
        st.serialize_field("output", &self.tokens[1])?;
        st.serialize_field("cacheRead", &self.tokens[2])?;
        st.serialize_field("cacheWrite", &self.tokens[3])?;
        st.serialize_field("totalTokens", &self.tokens[4])?;
        st.serialize_field("totalCost", &self.cost)?;
        st.end()
    }
}

/// Daily latency; sessions print `p95Ms` before `minMs`, aggregates after `maxMs`.
struct DatedLatency {
    date: String,
    l: LatencyStats,
    session_order: bool,
}

impl Serialize for DatedLatency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let l = &self.l;
        let mut st = s.serialize_struct("DailyLatency", 6)?;
        st.serialize_field("date", &self.date)?;
        st.serialize_field("count", &l.count)?;
        st.serialize_field("avgMs", &Js(l.avg))?;
        if self.session_order {
            st.serialize_field("p95Ms", &Js(l.p95))?;
        }
        st.serialize_field("minMs", &Js(l.min))?;
        st.serialize_field("maxMs", &Js(l.max))?;
        if !self.session_order {
            st.serialize_field("p95Ms", &Js(l.p95))?;
        }
        st.end()
    }
}

struct DatedModel<'a> {
    day: i64,
    m: &'a DayModel,
}

impl Serialize for DatedModel<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("DailyModelUsage", 6)?;
        st.serialize_field("date", &format_day(self.day))?;
        if let Some(p) = &self.m.provider {
            st.serialize_field("provider", p)?;
        }
        if let Some(m) = &self.m.model {
            st.serialize_field("model", m)?;
        }
        st.serialize_field("tokens", &self.m.tokens)?;
        st.serialize_field("cost", &self.m.cost)?;
        st.serialize_field("count", &self.m.count)?;
        st.end()
    }
}

// ---------------------------------------------------------------------------------------------
// aggregates

#[derive(Default)]
struct DailyAgg {
    tokens: u64,
    cost: KSum,
    messages: u64,
    tool_calls: u64,
    errors: u64,
}

#[derive(Default)]
struct Aggregates {
    session_count: u64,
    longest: i64,
    totals: Totals,
    messages: MsgCounts,
    tools: Vec<(String, u64)>,
    by_model: Vec<ModelRow>,
    by_provider: Vec<ModelRow>,
    by_agent: Vec<(String, Totals)>,
    by_channel: Vec<(String, Totals)>,
    cost_daily: BTreeMap<i64, Totals>,
    activity: BTreeMap<Vec<i64>, u64>,
    latency: Option<LatencyStats>,
    daily_latency: BTreeMap<i64, LatencyStats>,
    model_daily: BTreeMap<i64, Vec<DayModel>>,
    daily: BTreeMap<i64, DailyAgg>,
    /// Lookup indexes into the lists above (which keep first-seen order for ties).
    index: AggIndex,
}

/// Name → position indexes of [`Aggregates`]: a row folds in with hash lookups instead of
/// scanning lists with string compares.
#[derive(Default)]
struct AggIndex {
    tools: HashMap<String, usize, BuildHasherDefault<Fnv>>,
    /// [`model_hash`] → positions in `by_model` (checked with [`model_key_eq`]).
    models: IdMap<Vec<usize>>,
    providers: HashMap<String, usize, BuildHasherDefault<Fnv>>,
    agents: HashMap<String, usize, BuildHasherDefault<Fnv>>,
    channels: HashMap<String, usize, BuildHasherDefault<Fnv>>,
    /// Scratch for a row's activity dates.
    dates: Vec<i64>,
}

/// A hash of OpenClaw's model key (missing parts read as `unknown`).
fn model_hash(provider: &Option<String>, model: &Option<String>) -> u64 {
    let mut h = Fnv::default();
    h.write(provider.as_deref().unwrap_or("unknown").as_bytes());
    h.write(&[0xff]);
    h.write(model.as_deref().unwrap_or("unknown").as_bytes());
    h.finish()
}

fn add_named(
    list: &mut Vec<(String, Totals)>,
    index: &mut HashMap<String, usize, BuildHasherDefault<Fnv>>,
    name: &str,
    t: &Totals,
) {
    match index.get(name) {
        Some(&i) => list[i].1.merge(t),
        None => {
            index.insert(name.to_owned(), list.len());
            list.push((name.to_owned(), t.clone()));
        }
    }
}

impl Aggregates {
    /// Folds one row in (rows in answer order: first-seen order decides ties).
    fn add(&mut self, agent_id: &str, channel: Option<&str>, s: &Summary) {
        let a = self;
        a.session_count += 1;
        a.longest = a.longest.max(s.duration_ms().unwrap_or(0));
        a.totals.merge(&s.totals);
        a.messages.add(&s.counts);
        for (t, n) in &s.tools {
            match a.index.tools.get(t.as_str()) {
                Some(&i) => a.tools[i].1 += n,
                None => {
                    a.index.tools.insert(t.clone(), a.tools.len());
                    a.tools.push((t.clone(), *n));
                }
            }
        }
        for m in sorted_models(&s.models) {
            let candidates = a.index.models.entry(model_hash(&m.provider, &m.model)).or_default();
            let i = match candidates.iter().copied().find(|&i| {
                model_key_eq((&a.by_model[i].provider, &a.by_model[i].model), (&m.provider, &m.model))
            }) {
                Some(i) => i,
                None => {
                    candidates.push(a.by_model.len());
                    a.by_model.push(ModelRow {
                        provider: m.provider.clone(),
                        model: m.model.clone(),
                        ..ModelRow::default()
                    });
                    a.by_model.len() - 1
                }
            };
            a.by_model[i].count += m.count;
            a.by_model[i].totals.merge(&m.totals);
            let pk = m.provider.as_deref().unwrap_or("unknown");
            let j = match a.index.providers.get(pk) {
                Some(&j) => j,
                None => {
                    a.index.providers.insert(pk.to_owned(), a.by_provider.len());
                    a.by_provider.push(ModelRow { provider: m.provider.clone(), ..ModelRow::default() });
                    a.by_provider.len() - 1
                }
            };
            a.by_provider[j].count += m.count;
            a.by_provider[j].totals.merge(&m.totals);
        }
        a.latency = LatencyStats::merge(a.latency, s.latency);
        add_named(&mut a.by_agent, &mut a.index.agents, agent_id, &s.totals);
        if let Some(c) = channel {
            add_named(&mut a.by_channel, &mut a.index.channels, c, &s.totals);
        }
        a.index.dates.clear();
        a.index.dates.extend(s.days.keys().copied());
        match a.activity.get_mut(a.index.dates.as_slice()) {
            Some(n) => *n += 1,
            None => {
                a.activity.insert(a.index.dates.clone(), 1);
            }
        }
        for (d, da) in &s.days {
            if da.usage_count > 0 {
                a.cost_daily.entry(*d).or_default().merge(&da.totals);
            }
            if let Some(l) = da.latency {
                let x = a.daily_latency.remove(d);
                if let Some(m) = LatencyStats::merge(x, Some(l)) {
                    a.daily_latency.insert(*d, m);
                }
            }
            if !da.models.is_empty() {
                let md = a.model_daily.entry(*d).or_default();
                for m in &da.models {
                    match md
                        .iter_mut()
                        .find(|x| model_key_eq((&x.provider, &x.model), (&m.provider, &m.model)))
                    {
                        Some(x) => {
                            x.tokens = x.tokens.saturating_add(m.tokens);
                            x.cost.merge(&m.cost);
                            x.count += m.count;
                        }
                        None => md.push(m.clone()),
                    }
                }
            }
            let dd = a.daily.entry(*d).or_default();
            if da.usage_count > 0 {
                dd.tokens = dd.tokens.saturating_add(da.totals.tokens4());
                dd.cost.merge(&da.totals.total_cost);
            }
            dd.messages += da.counts.total;
            dd.tool_calls += da.counts.tool_calls;
            dd.errors += da.counts.errors;
        }
    }
}

fn by_cost_desc(list: &mut [(String, Totals)]) {
    list.sort_by(|a, b| b.1.total_cost.value().total_cmp(&a.1.total_cost.value()));
}

impl Serialize for Aggregates {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("SessionsUsageAggregates", 14)?;
        st.serialize_field("sessionCount", &self.session_count)?;
        st.serialize_field("longestSessionDurationMs", &self.longest)?;
        st.serialize_field("messages", &CountsOut(&self.messages))?;
        st.serialize_field("tools", &ToolsOut(&self.tools))?;
        let models: Vec<ModelOut<'_>> =
            sorted_models(&self.by_model).into_iter().map(|m| ModelOut { m, with_model: true }).collect();
        st.serialize_field("byModel", &models)?;
        let providers: Vec<ModelOut<'_>> =
            sorted_models(&self.by_provider).into_iter().map(|m| ModelOut { m, with_model: false }).collect();
        st.serialize_field("byProvider", &providers)?;
        let mut agents = self.by_agent.clone();
        by_cost_desc(&mut agents);
        let agents: Vec<Named<'_>> = agents.iter().map(|(n, t)| Named("agentId", n, t)).collect();
        st.serialize_field("byAgent", &agents)?;
        let mut channels = self.by_channel.clone();
        by_cost_desc(&mut channels);
        let channels: Vec<Named<'_>> = channels.iter().map(|(n, t)| Named("channel", n, t)).collect();
        st.serialize_field("byChannel", &channels)?;
        let creators: Vec<CreatorOut<'_>> =
            if self.session_count > 0 { vec![CreatorOut(self)] } else { Vec::new() };
        st.serialize_field("byCreator", &creators)?;
        st.serialize_field("costDaily", &self.cost_daily_rows())?;
        if let Some(l) = &self.latency {
            st.serialize_field("latency", &AggLatency(l))?;
        }
        let dl: Vec<DatedLatency> = self
            .daily_latency
            .iter()
            .map(|(d, l)| DatedLatency { date: format_day(*d), l: *l, session_order: false })
            .collect();
        st.serialize_field("dailyLatency", &dl)?;
        let mut md: Vec<DatedModel<'_>> = Vec::new();
        for (d, ms) in &self.model_daily {
            let mut ms: Vec<&DayModel> = ms.iter().collect();
            ms.sort_by(|a, b| b.cost.value().total_cmp(&a.cost.value()));
            md.extend(ms.into_iter().map(|m| DatedModel { day: *d, m }));
        }
        st.serialize_field("modelDaily", &md)?;
        let daily: Vec<DailyOut<'_>> = self.daily.iter().map(|(d, x)| DailyOut(*d, x)).collect();
        st.serialize_field("daily", &daily)?;
        st.end()
    }
}

impl Aggregates {
    fn cost_daily_rows(&self) -> Vec<DatedTotals<'_>> {
        self.cost_daily
            .iter()
            .map(|(d, t)| DatedTotals {
                date: format_day(*d),
                totals: t.clone(),
                lead: None,
                _p: std::marker::PhantomData,
            })
            .collect()
    }
}

struct Named<'a>(&'static str, &'a str, &'a Totals);

impl Serialize for Named<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Named", 2)?;
        st.serialize_field(self.0, self.1)?;
        st.serialize_field("totals", self.2)?;
        st.end()
    }
}

struct AggLatency<'a>(&'a LatencyStats);

impl Serialize for AggLatency<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let l = self.0;
        let mut st = s.serialize_struct("Latency", 5)?;
        st.serialize_field("count", &l.count)?;
        st.serialize_field("avgMs", &Js(l.avg))?;
        st.serialize_field("minMs", &Js(l.min))?;
        st.serialize_field("maxMs", &Js(l.max))?;
        st.serialize_field("p95Ms", &Js(l.p95))?;
        st.end()
    }
}

struct DailyOut<'a>(i64, &'a DailyAgg);

impl Serialize for DailyOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Daily", 6)?;
        st.serialize_field("date", &format_day(self.0))?;
        st.serialize_field("tokens", &self.1.tokens)?;
        st.serialize_field("cost", &self.1.cost)?;
        st.serialize_field("messages", &self.1.messages)?;
        st.serialize_field("toolCalls", &self.1.tool_calls)?;
        st.serialize_field("errors", &self.1.errors)?;
        st.end()
    }
}

/// The single `byCreator` group legacy stores have.
struct CreatorOut<'a>(&'a Aggregates);

impl Serialize for CreatorOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let a = self.0;
        let mut st = s.serialize_struct("CreatorUsage", 5)?;
        st.serialize_field("key", UNKNOWN_CREATOR)?;
        st.serialize_field("totals", &a.totals)?;
        st.serialize_field("sessionCount", &a.session_count)?;
        st.serialize_field("daily", &a.cost_daily_rows())?;
        let activity: Vec<Activity<'_>> = a.activity.iter().map(|(d, n)| Activity(d, *n)).collect();
        st.serialize_field("sessionActivity", &activity)?;
        st.end()
    }
}

struct Activity<'a>(&'a [i64], u64);

impl Serialize for Activity<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let dates: Vec<String> = self.0.iter().map(|d| format_day(*d)).collect();
        let mut st = s.serialize_struct("SessionActivity", 2)?;
        st.serialize_field("dates", &dates)?;
        st.serialize_field("sessionCount", &self.1)?;
        st.end()
    }
}
