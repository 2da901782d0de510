//! `sessions.usage` rows: one page of them, rendered from full summaries (quarter hours
//! included) and cached as text by what they depend on, so an unchanged row is never rendered
//! twice and a page costs the rows that changed.
//!
//! Field names, order and optionality follow a real OpenClaw 2026.9.6 `sessions.usage` response
//! (`shared/openclaw/samples`). Legacy stores carry no creator metadata, so every row's
//! `creatorKey` is `["unknown"]`, as 2026.9 reports for them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, mpsc};

use serde::ser::{Serialize, SerializeStruct, Serializer};
use serde_json::value::RawValue;

use super::aggregates::{
    CountsOut, DatedLatency, DatedModel, DatedTotals, ModelOut, ToolsOut, UNKNOWN_CREATOR, model_key,
};
use super::index::FileRow;
use super::num::{Js, JsExact};
use super::payload::RowsCut;
use super::rollup::FileRollup;
use super::rollup::MsgCounts;
use super::store::Price;
use super::store::StoreEntry;
use super::summary::{DayModel, ModelRow, SessionLatency, Summary};
use super::summary::{Window, summarize};
use super::time::{Day, QUARTERS_PER_DAY};
use super::{FULL, WorkerError, internal};

/// Rows of a page rendered on this thread before a helper is started (an append changes one).
pub const INLINE_ROWS: usize = 4;
/// Rows read ahead of the first row not yet placed, at most.
pub const READ_AHEAD: usize = 64;

/// One row of a page in page order: its place among the ids asked for, its stamp, and its text
/// (`None` while the helper renders it).
pub struct Slot {
    pub at: usize,
    pub stamp: u64,
    pub text: Option<Arc<str>>,
}

/// What a helper needs to render a row (prices looked up here: the price table is not `Sync`).
pub struct RowJob {
    pub row: FileRow,
    pub entry: Option<StoreEntry>,
    pub rollup: FileRollup,
    pub prices: Vec<Option<Price>>,
}

/// A thread that summarises and renders rows in the order they are sent.
pub struct RowHelper {
    pub jobs: mpsc::SyncSender<RowJob>,
    results: mpsc::Receiver<Result<Arc<str>, String>>,
}

impl RowHelper {
    /// `None` when no thread can be started (the rows are then rendered inline).
    pub fn spawn<'scope>(
        sc: &'scope std::thread::Scope<'scope, '_>,
        window: Window,
        include_context_weight: bool,
    ) -> Option<RowHelper> {
        let (jobs, job_rx) = mpsc::sync_channel::<RowJob>(READ_AHEAD);
        // Unbounded: the helper never waits on this thread, so neither can wait on the other.
        let (done, results) = mpsc::channel();
        let spawned = std::thread::Builder::new().name("usage-rows".into()).spawn_scoped(sc, move || {
            for job in job_rx {
                let s = summarize(&job.rollup, &window, &job.prices, FULL);
                let out = RowOut {
                    row: &job.row,
                    entry: job.entry.as_ref(),
                    family: None,
                    summary: &s,
                    include_context_weight,
                };
                let text = out.text().map_err(|e| e.to_string());
                if done.send(text).is_err() {
                    break;
                }
            }
        });
        match spawned {
            Ok(_) => Some(RowHelper { jobs, results }),
            Err(error) => {
                tracing::debug!(%error, "Cannot start a row helper; rendering inline.");
                None
            }
        }
    }
}

/// A page as it is placed: its parts, the stamps of its rows, the rows rendered for it, and
/// where the answer budget cut it.
pub struct Placed {
    pub budget: usize,
    pub requested: u64,
    pub parts: Vec<Arc<str>>,
    pub stamps: Vec<u64>,
    pub rendered: Vec<(u64, Arc<str>)>,
    pub bytes: usize,
    pub cut: Option<RowsCut>,
    /// The separator between rows (one allocation for the page).
    pub comma: Arc<str>,
}

impl Placed {
    /// Places the rows at the front of `slots` that are ready (waiting for the helper's next
    /// one when `wait`, until none is left). `false`: the budget cut the page here.
    pub fn place(
        &mut self,
        slots: &mut VecDeque<Slot>,
        helper: Option<&RowHelper>,
        wait: bool,
        cache: &mut RowCache,
    ) -> Result<bool, WorkerError> {
        while let Some(front) = slots.front_mut() {
            if front.text.is_none() {
                let helper =
                    helper.ok_or_else(|| internal("a row waits for a helper that was not started"))?;
                let got = if wait {
                    helper.results.recv().ok()
                } else {
                    match helper.results.try_recv() {
                        Ok(r) => Some(r),
                        Err(mpsc::TryRecvError::Empty) => return Ok(true),
                        Err(mpsc::TryRecvError::Disconnected) => None,
                    }
                };
                let text = got.ok_or_else(|| internal("the row helper stopped"))?.map_err(internal)?;
                cache.put(front.stamp, Arc::clone(&text));
                self.rendered.push((front.stamp, Arc::clone(&text)));
                front.text = Some(text);
            }
            let Slot { at, stamp, text } = slots.pop_front().expect("front");
            let text = text.expect("ready");
            if self.budget > 0 && self.bytes + text.len() > self.budget {
                self.cut = Some(RowsCut {
                    returned: at as u64,
                    requested: self.requested,
                    reason: format!(
                        "the rows asked for need more than the answer budget of {} MiB; ask for fewer (limit) or page with offset",
                        self.budget >> 20
                    ),
                });
                return Ok(false);
            }
            self.bytes += text.len();
            if !self.stamps.is_empty() {
                self.parts.push(Arc::clone(&self.comma));
            }
            self.stamps.push(stamp);
            self.parts.push(text);
        }
        Ok(true)
    }
}

/// Rendered rows kept between answers, by stamp. Bounded in bytes; least recently used first out.
#[derive(Debug, Default)]
pub struct RowCache {
    rows: HashMap<u64, (Arc<str>, u64)>,
    bytes: usize,
    tick: u64,
}

/// Rendered rows kept at most (a `limit:1000` page of the seed store is ~8 MB).
pub const ROW_CACHE_BYTES: usize = 24 << 20;

impl RowCache {
    pub fn get(&mut self, stamp: u64) -> Option<Arc<str>> {
        self.tick += 1;
        let tick = self.tick;
        self.rows.get_mut(&stamp).map(|(r, used)| {
            *used = tick;
            Arc::clone(r)
        })
    }

    pub fn put(&mut self, stamp: u64, row: Arc<str>) {
        self.tick += 1;
        self.bytes += row.len();
        if let Some((old, _)) = self.rows.insert(stamp, (row, self.tick)) {
            self.bytes -= old.len();
        }
        if self.bytes > ROW_CACHE_BYTES {
            // Evict the older half by use; rows of the page being built were just used.
            let mut ticks: Vec<u64> = self.rows.values().map(|(_, t)| *t).collect();
            ticks.sort_unstable();
            let cut = ticks[ticks.len() / 2];
            self.rows.retain(|_, (_, t)| *t > cut);
            self.bytes = self.rows.values().map(|(r, _)| r.len()).sum();
        }
    }

    pub fn heap_bytes(&self) -> usize {
        self.bytes + self.rows.len() * 48
    }

    pub fn clear(&mut self) {
        self.rows.clear();
        self.bytes = 0;
    }
}

/// A row's family: the key it is grouped under and every session id it includes.
pub struct Family {
    pub key: String,
    pub included: Vec<String>,
}

/// Everything one rendered row shows.
pub struct RowOut<'a> {
    pub row: &'a FileRow,
    pub entry: Option<&'a StoreEntry>,
    pub family: Option<&'a Family>,
    pub summary: &'a Summary,
    pub include_context_weight: bool,
}

fn raw(s: &str) -> Option<Box<RawValue>> {
    RawValue::from_string(s.to_owned()).ok()
}

/// The row key: the entry's key, else `agent:<agent>:<sessionId>`.
pub fn row_key(row: &FileRow, entry: Option<&StoreEntry>) -> String {
    entry.map_or_else(|| format!("agent:{}:{}", row.disc.agent_id, row.disc.session_id), |e| e.key.clone())
}

impl RowOut<'_> {
    /// The row as JSON text.
    pub fn text(&self) -> serde_json::Result<Arc<str>> {
        serde_json::to_string(self).map(Arc::from)
    }
}

impl Serialize for RowOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let d = &self.row.disc;
        let e = self.entry;
        let mut st = s.serialize_struct("SessionUsageEntry", 22)?;
        st.serialize_field("key", &row_key(self.row, e))?;
        if let Some(l) = e.and_then(|e| e.label.as_ref()) {
            st.serialize_field("label", l)?;
        }
        st.serialize_field("sessionId", &d.session_id)?;
        match self.family {
            Some(f) => {
                st.serialize_field("scope", "family")?;
                st.serialize_field("sessionFamilyKey", &f.key)?;
                st.serialize_field("currentSessionId", &d.session_id)?;
                st.serialize_field("includedSessionIds", &f.included)?;
                st.serialize_field("historicalInstanceCount", &f.included.len())?;
            }
            None => st.serialize_field("scope", "instance")?,
        }
        st.serialize_field("updatedAt", &Js(self.row.facts.updated_at))?;
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
            &UsageOut {
                s: self.summary,
                session_id: &d.session_id,
                session_file: &d.path.display().to_string(),
            },
        )?;
        let cw = e.and_then(|e| e.context_weight.as_deref());
        st.serialize_field("hasContextWeight", &cw.is_some())?;
        if self.include_context_weight {
            st.serialize_field("contextWeight", &cw.and_then(raw))?;
        }
        st.end()
    }
}

/// Model rows by cost, then tokens, descending, then by name.
fn sorted_models(rows: &[ModelRow]) -> Vec<&ModelRow> {
    let mut v: Vec<&ModelRow> = rows.iter().collect();
    v.sort_by(|a, b| {
        b.totals
            .total_cost
            .units()
            .cmp(&a.totals.total_cost.units())
            .then(b.totals.total_tokens.cmp(&a.totals.total_tokens))
            .then_with(|| model_key(&a.provider, &a.model).cmp(&model_key(&b.provider, &b.model)))
    });
    v
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
        st.serialize_field("messageCounts", &CountsOut::from(&s.counts))?;
        if !s.tools.is_empty() {
            st.serialize_field(
                "toolUsage",
                &ToolsOut(s.tools.iter().map(|(n, c)| (n.as_str(), *c)).collect()),
            )?;
        }
        if !s.models.is_empty() {
            let rows: Vec<ModelOut<'_>> = sorted_models(&s.models)
                .into_iter()
                .map(|m| ModelOut {
                    provider: m.provider.as_deref(),
                    model: m.model.as_deref(),
                    count: m.count,
                    totals: &m.totals,
                })
                .collect();
            st.serialize_field("modelUsage", &rows)?;
        }
        if let Some(l) = &s.latency {
            st.serialize_field("latency", &SessionLatency(l))?;
        }
        // A row without activity in range has none of the dated arrays (OpenClaw omits them);
        // one with activity lists every bucket that has a message, zero tokens included.
        if !s.days.is_empty() {
            let dates: Vec<Day> = s.days.keys().map(|d| Day(*d)).collect();
            st.serialize_field("activityDates", &dates)?;
            let breakdown: Vec<DatedTotals<'_>> = s
                .days
                .iter()
                .map(|(d, da)| DatedTotals { date: Day(*d), totals: &da.totals, lead: true })
                .collect();
            st.serialize_field("dailyBreakdown", &breakdown)?;
            let counts: Vec<DatedCounts> = s
                .days
                .iter()
                .filter(|(_, d)| !d.counts.is_empty())
                .map(|(d, da)| DatedCounts { date: Day(*d), quarter: None, counts: da.counts })
                .collect();
            st.serialize_field("dailyMessageCounts", &counts)?;
        }
        if !s.quarters.is_empty() {
            let qc: Vec<DatedCounts> = s
                .quarters
                .iter()
                .filter(|(_, q)| !q.counts.is_empty())
                .map(|(q, qa)| DatedCounts {
                    date: Day(q.div_euclid(QUARTERS_PER_DAY)),
                    quarter: Some(q.rem_euclid(QUARTERS_PER_DAY)),
                    counts: qa.counts,
                })
                .collect();
            st.serialize_field("utcQuarterHourMessageCounts", &qc)?;
            let qt: Vec<QuarterTokens<'_>> = s
                .quarters
                .iter()
                .map(|(q, qa)| QuarterTokens { q: *q, tokens: &qa.tokens, cost: JsExact(qa.cost) })
                .collect();
            st.serialize_field("utcQuarterHourTokenUsage", &qt)?;
        }
        let lat: Vec<DatedLatency> = s
            .days
            .iter()
            .filter_map(|(d, da)| da.latency.map(|l| DatedLatency { date: Day(*d), l, session_order: true }))
            .collect();
        if !lat.is_empty() {
            st.serialize_field("dailyLatency", &lat)?;
        }
        let mut dm: Vec<DatedModel<'_>> = Vec::new();
        for (d, da) in &s.days {
            let mut ms: Vec<&DayModel> = da.models.iter().collect();
            ms.sort_by(|a, b| {
                b.cost
                    .units()
                    .cmp(&a.cost.units())
                    .then_with(|| model_key(&a.provider, &a.model).cmp(&model_key(&b.provider, &b.model)))
            });
            let date = Day(*d);
            dm.extend(ms.into_iter().map(|m| DatedModel {
                date,
                provider: m.provider.as_deref(),
                model: m.model.as_deref(),
                tokens: m.tokens,
                cost: m.cost,
                count: m.count,
            }));
        }
        if !dm.is_empty() {
            st.serialize_field("dailyModelUsage", &dm)?;
        }
        st.end()
    }
}

struct DatedCounts {
    date: Day,
    quarter: Option<i64>,
    counts: MsgCounts,
}

impl Serialize for DatedCounts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = &self.counts;
        let mut st = s.serialize_struct("DailyMessageCounts", 8)?;
        st.serialize_field("date", &self.date)?;
        if let Some(q) = self.quarter {
            st.serialize_field("quarterIndex", &q)?;
        }
        st.serialize_field("total", &c.total)?;
        st.serialize_field("user", &c.user)?;
        st.serialize_field("assistant", &c.assistant)?;
        st.serialize_field("toolCalls", &c.tool_calls)?;
        st.serialize_field("toolResults", &c.tool_results)?;
        st.serialize_field("errors", &c.errors)?;
        st.end()
    }
}

struct QuarterTokens<'a> {
    q: i64,
    tokens: &'a [u64; 5],
    cost: JsExact,
}

impl Serialize for QuarterTokens<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("QuarterTokens", 8)?;
        st.serialize_field("date", &Day(self.q.div_euclid(QUARTERS_PER_DAY)))?;
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
