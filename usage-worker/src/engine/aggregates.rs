//! `sessions.usage` `totals` and `aggregates` (and `usage.cost`'s days) over every row in
//! scope, kept up to date by contribution: a row's summary is added once, and when its files
//! change its old summary is taken away and its new one added ([`Aggregates::apply`]).
//!
//! Every sum is exact (integers and [`Exact`]), so the order rows come and go in never shows
//! in an answer, and an aggregate maintained through a thousand appends is bit for bit the one
//! a fresh computation gives. Maxima and minima (latency, longest session) are [`TopK`]s; when
//! one is lost the aggregate says so ([`Aggregates::lost`]) and its owner rebuilds it. Lists
//! are ordered by value, then by name, never by arrival. Memory follows the answer: days ×
//! models, agents, channels, tools and activity-date sets, not rows.

use std::collections::BTreeMap;

use foldhash::HashMap;
use serde::ser::{Serialize, SerializeStruct, Serializer};

use super::num::{Exact, Js, JsExact, apply_u64};
use super::rollup::MsgCounts;
use super::summary::{LatencyStats, Summary, Totals, TotalsOut};
use super::time::Day;
use super::topk::TopK;

/// The creator key of sessions without creator metadata.
pub const UNKNOWN_CREATOR: &str = "[\"unknown\"]";

/// OpenClaw's model key: missing parts read as `unknown`.
pub fn model_key(provider: &Option<String>, model: &Option<String>) -> (String, String) {
    let n = |x: &Option<String>| x.as_deref().unwrap_or("unknown").to_owned();
    (n(provider), n(model))
}

/// Usage of one model (or provider) over the rows in scope.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelAcc {
    pub count: u64,
    pub totals: Totals,
    /// Contributions that named the provider / model (shown only when some did).
    named_provider: i64,
    named_model: i64,
}

impl ModelAcc {
    fn apply(&mut self, count: u64, totals: &Totals, provider: bool, model: bool, sign: i64) {
        apply_u64(&mut self.count, count, sign);
        self.totals.apply(totals, sign);
        self.named_provider += i64::from(provider) * sign;
        self.named_model += i64::from(model) * sign;
    }
}

/// Totals of the rows of one agent or channel.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct NamedAcc {
    rows: i64,
    totals: Totals,
}

/// `{tokens, cost, count}` of one model on one day.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct DayModelAcc {
    tokens: u64,
    cost: Exact,
    count: u64,
    named_provider: i64,
    named_model: i64,
}

/// One day of `aggregates.daily`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct DailyAcc {
    /// Rows active that day (the day exists while this is above zero).
    rows: i64,
    tokens: u64,
    cost: Exact,
    messages: u64,
    tool_calls: u64,
    errors: u64,
}

/// Merged latency of many rows: OpenClaw's merge (count-weighted mean, max of p95s, min, max).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct LatencyAcc {
    count: u64,
    sum: Exact,
    p95: TopK<f64>,
    max: TopK<f64>,
    /// Negated minima.
    min: TopK<f64>,
}

impl LatencyAcc {
    fn apply(&mut self, l: &LatencyStats, id: u64, sign: i64) {
        apply_u64(&mut self.count, l.count, sign);
        self.sum.apply(l.sum, sign);
        self.p95.apply(l.p95, id, sign);
        self.max.apply(l.max, id, sign);
        self.min.apply(-l.min, id, sign);
    }

    fn stats(&self) -> Option<LatencyStats> {
        if self.p95.is_empty() {
            return None;
        }
        Some(LatencyStats {
            count: self.count,
            sum: self.sum,
            p95: self.p95.max()?,
            min: -self.min.max()?,
            max: self.max.max()?,
        })
    }

    fn lost(&self) -> bool {
        self.p95.lost() || self.max.lost() || self.min.lost()
    }
}

/// Totals of one day of `usage.cost` / `aggregates.costDaily`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct CostDayAcc {
    /// Rows with usage that day.
    rows: i64,
    totals: Totals,
}

/// Everything the aggregate part of an answer needs, over the rows in scope.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Aggregates {
    /// Rows in scope (whether `byCreator`/`creatorOptions` are shown, page totals).
    pub rows: i64,
    /// Rows with activity in range: a first activity or a message (OpenClaw's `sessionCount`).
    #[serde(default)]
    pub active_rows: i64,
    longest: TopK<i64>,
    /// `totals`: every entry of every row, timestamped or not.
    pub totals: Totals,
    /// `usage.cost`'s totals: timestamped entries only (the sum of `cost_daily`).
    pub timed_totals: Totals,
    messages: MsgCounts,
    tools: HashMap<String, u64>,
    models: HashMap<(String, String), ModelAcc>,
    providers: HashMap<String, ModelAcc>,
    agents: HashMap<String, NamedAcc>,
    channels: HashMap<String, NamedAcc>,
    cost_daily: BTreeMap<i64, CostDayAcc>,
    activity: BTreeMap<Vec<i64>, i64>,
    latency: LatencyAcc,
    daily_latency: BTreeMap<i64, LatencyAcc>,
    model_daily: BTreeMap<i64, HashMap<(String, String), DayModelAcc>>,
    daily: BTreeMap<i64, DailyAcc>,
}

/// Adds `n` to the counter at `key`, removing the entry when it reaches zero.
fn bump<K: Ord + Clone>(map: &mut BTreeMap<K, i64>, key: &K, n: i64) {
    let v = map.entry(key.clone()).or_default();
    *v += n;
    if *v == 0 {
        map.remove(key);
    }
}

impl Aggregates {
    /// Adds a row (`sign` 1) or takes the same row away again (`sign` -1). `id` identifies the
    /// row among all rows (its first file's index id); `s` is its summary without quarter hours.
    pub fn apply(&mut self, id: u64, agent: &str, channel: Option<&str>, s: &Summary, sign: i64) {
        self.rows += sign;
        if s.first.is_some() || s.counts.total > 0 {
            self.active_rows += sign;
        }
        self.longest.apply(s.duration_ms().unwrap_or(0), id, sign);
        self.totals.apply(&s.totals, sign);
        apply_counts(&mut self.messages, &s.counts, sign);
        for (t, n) in &s.tools {
            let c = self.tools.entry(t.clone()).or_default();
            apply_u64(c, *n, sign);
            if *c == 0 {
                self.tools.remove(t);
            }
        }
        for m in &s.models {
            let key = model_key(&m.provider, &m.model);
            let acc = self.models.entry(key.clone()).or_default();
            acc.apply(m.count, &m.totals, m.provider.is_some(), m.model.is_some(), sign);
            if acc.count == 0
                && acc.named_provider == 0
                && acc.named_model == 0
                && acc.totals == Totals::default()
            {
                self.models.remove(&key);
            }
            let p = self.providers.entry(key.0.clone()).or_default();
            p.apply(m.count, &m.totals, m.provider.is_some(), false, sign);
            if p.count == 0 && p.named_provider == 0 && p.totals == Totals::default() {
                self.providers.remove(&key.0);
            }
        }
        if let Some(l) = &s.latency {
            self.latency.apply(l, id, sign);
        }
        apply_named(&mut self.agents, agent, &s.totals, sign);
        if let Some(c) = channel {
            apply_named(&mut self.channels, c, &s.totals, sign);
        }
        // `sessionActivity` groups sessions by their active days; one without any is not listed.
        if !s.days.is_empty() {
            let dates: Vec<i64> = s.days.keys().copied().collect();
            bump(&mut self.activity, &dates, sign);
        }
        for (d, da) in &s.days {
            if da.usage_count > 0 {
                let c = self.cost_daily.entry(*d).or_default();
                c.rows += sign;
                c.totals.apply(&da.totals, sign);
                self.timed_totals.apply(&da.totals, sign);
                if c.rows == 0 {
                    self.cost_daily.remove(d);
                }
            }
            if let Some(l) = &da.latency {
                let acc = self.daily_latency.entry(*d).or_default();
                acc.apply(l, id, sign);
                if acc.p95.is_empty() {
                    self.daily_latency.remove(d);
                }
            }
            if !da.models.is_empty() {
                let md = self.model_daily.entry(*d).or_default();
                for m in &da.models {
                    let key = model_key(&m.provider, &m.model);
                    let acc = md.entry(key.clone()).or_default();
                    apply_u64(&mut acc.tokens, m.tokens, sign);
                    acc.cost.apply(m.cost, sign);
                    apply_u64(&mut acc.count, m.count, sign);
                    acc.named_provider += i64::from(m.provider.is_some()) * sign;
                    acc.named_model += i64::from(m.model.is_some()) * sign;
                    if acc.count == 0 && acc.tokens == 0 && acc.cost.is_zero() && acc.named_model == 0 {
                        md.remove(&key);
                    }
                }
                if md.is_empty() {
                    self.model_daily.remove(d);
                }
            }
            let dd = self.daily.entry(*d).or_default();
            dd.rows += sign;
            if da.usage_count > 0 {
                apply_u64(&mut dd.tokens, da.totals.tokens4(), sign);
                dd.cost.apply(da.totals.total_cost, sign);
            }
            apply_u64(&mut dd.messages, da.counts.total, sign);
            apply_u64(&mut dd.tool_calls, da.counts.tool_calls, sign);
            apply_u64(&mut dd.errors, da.counts.errors, sign);
            if dd.rows == 0 {
                self.daily.remove(d);
            }
        }
    }

    /// A maximum or minimum was lost by removals: rebuild before answering from it.
    pub fn lost(&self) -> bool {
        self.longest.lost() || self.latency.lost() || self.daily_latency.values().any(LatencyAcc::lost)
    }

    /// `usage.cost`'s days with usage, with their totals.
    pub fn cost_days(&self) -> impl Iterator<Item = (i64, &Totals)> {
        self.cost_daily.iter().map(|(d, c)| (*d, &c.totals))
    }

    /// Approximate heap bytes, for the engine's memory accounting.
    pub fn heap_bytes(&self) -> usize {
        let per_day = self.daily.len() * 96 + self.cost_daily.len() * 160 + self.daily_latency.len() * 600;
        let models: usize = self.model_daily.values().map(|m| m.len() * 120).sum();
        let activity: usize = self.activity.keys().map(|k| k.len() * 8 + 48).sum();
        per_day + models + activity + (self.models.len() + self.providers.len()) * 250 + self.tools.len() * 64
    }
}

fn apply_counts(a: &mut MsgCounts, o: &MsgCounts, sign: i64) {
    apply_u64(&mut a.total, o.total, sign);
    apply_u64(&mut a.user, o.user, sign);
    apply_u64(&mut a.assistant, o.assistant, sign);
    apply_u64(&mut a.tool_calls, o.tool_calls, sign);
    apply_u64(&mut a.tool_results, o.tool_results, sign);
    apply_u64(&mut a.errors, o.errors, sign);
}

fn apply_named(map: &mut HashMap<String, NamedAcc>, name: &str, t: &Totals, sign: i64) {
    let acc = map.entry(name.to_owned()).or_default();
    acc.rows += sign;
    acc.totals.apply(t, sign);
    if acc.rows == 0 {
        map.remove(name);
    }
}

// ---------------------------------------------------------------------------------------------
// JSON

/// Model rows by cost, then tokens, descending, then by name: an order that never depends on
/// which row arrived first.
fn by_cost<'a, K: Ord + 'a>(rows: impl Iterator<Item = (&'a K, &'a ModelAcc)>) -> Vec<(&'a K, &'a ModelAcc)> {
    let mut v: Vec<_> = rows.collect();
    v.sort_by(|a, b| {
        b.1.totals
            .total_cost
            .units()
            .cmp(&a.1.totals.total_cost.units())
            .then(b.1.totals.total_tokens.cmp(&a.1.totals.total_tokens))
            .then(a.0.cmp(b.0))
    });
    v
}

/// `{provider?, model?, count, totals}`.
pub struct ModelOut<'a> {
    pub provider: Option<&'a str>,
    pub model: Option<&'a str>,
    pub count: u64,
    pub totals: &'a Totals,
}

impl Serialize for ModelOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("ModelUsage", 4)?;
        if let Some(p) = self.provider {
            st.serialize_field("provider", p)?;
        }
        if let Some(m) = self.model {
            st.serialize_field("model", m)?;
        }
        st.serialize_field("count", &self.count)?;
        st.serialize_field("totals", &TotalsOut(self.totals))?;
        st.end()
    }
}

/// `{totalCalls, uniqueTools, tools: [{name, count}]}`, by count descending, then by name.
pub struct ToolsOut<'a>(pub Vec<(&'a str, u64)>);

impl Serialize for ToolsOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Tool<'a> {
            name: &'a str,
            count: u64,
        }
        let mut tools = self.0.clone();
        tools.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let list: Vec<Tool<'_>> = tools.iter().map(|(name, count)| Tool { name, count: *count }).collect();
        let mut st = s.serialize_struct("ToolUsage", 3)?;
        st.serialize_field("totalCalls", &tools.iter().map(|t| t.1).sum::<u64>())?;
        st.serialize_field("uniqueTools", &tools.len())?;
        st.serialize_field("tools", &list)?;
        st.end()
    }
}

/// `{total, user, assistant, toolCalls, toolResults, errors}`.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CountsOut {
    total: u64,
    user: u64,
    assistant: u64,
    tool_calls: u64,
    tool_results: u64,
    errors: u64,
}

impl From<&MsgCounts> for CountsOut {
    fn from(c: &MsgCounts) -> CountsOut {
        CountsOut {
            total: c.total,
            user: c.user,
            assistant: c.assistant,
            tool_calls: c.tool_calls,
            tool_results: c.tool_results,
            errors: c.errors,
        }
    }
}

/// `{date, eleven totals}`.
pub struct DatedTotals<'a> {
    pub date: Day,
    pub totals: &'a Totals,
    /// `dailyBreakdown` rows lead with `tokens` (four-component sum) and `cost`.
    pub lead: bool,
}

impl Serialize for DatedTotals<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Daily", 14)?;
        st.serialize_field("date", &self.date)?;
        if self.lead {
            st.serialize_field("tokens", &self.totals.tokens4())?;
            st.serialize_field("cost", &JsExact(self.totals.total_cost))?;
        }
        self.totals.write_fields(&mut st)?;
        st.end()
    }
}

/// Daily latency; sessions print `p95Ms` before `minMs`, aggregates after `maxMs`.
pub struct DatedLatency {
    pub date: Day,
    pub l: LatencyStats,
    pub session_order: bool,
}

impl Serialize for DatedLatency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let l = &self.l;
        let mut st = s.serialize_struct("DailyLatency", 6)?;
        st.serialize_field("date", &self.date)?;
        st.serialize_field("count", &l.count)?;
        st.serialize_field("avgMs", &Js(l.avg()))?;
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

/// `{date, provider?, model?, tokens, cost, count}`.
pub struct DatedModel<'a> {
    pub date: Day,
    pub provider: Option<&'a str>,
    pub model: Option<&'a str>,
    pub tokens: u64,
    pub cost: Exact,
    pub count: u64,
}

impl Serialize for DatedModel<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("DailyModelUsage", 6)?;
        st.serialize_field("date", &self.date)?;
        if let Some(p) = self.provider {
            st.serialize_field("provider", p)?;
        }
        if let Some(m) = self.model {
            st.serialize_field("model", m)?;
        }
        st.serialize_field("tokens", &self.tokens)?;
        st.serialize_field("cost", &JsExact(self.cost))?;
        st.serialize_field("count", &self.count)?;
        st.end()
    }
}

/// `{<label>: name, totals}` (byAgent, byChannel).
struct Named<'a>(&'static str, &'a str, &'a Totals);

impl Serialize for Named<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Named", 2)?;
        st.serialize_field(self.0, self.1)?;
        st.serialize_field("totals", &TotalsOut(self.2))?;
        st.end()
    }
}

fn named_by_cost<'a>(map: &'a HashMap<String, NamedAcc>, label: &'static str) -> Vec<Named<'a>> {
    let mut v: Vec<(&String, &NamedAcc)> = map.iter().collect();
    v.sort_by(|a, b| b.1.totals.total_cost.units().cmp(&a.1.totals.total_cost.units()).then(a.0.cmp(b.0)));
    v.into_iter().map(|(n, a)| Named(label, n, &a.totals)).collect()
}

/// `sessions.usage`'s `totals`, `aggregates` and `creatorOptions`, in that order.
pub struct SessionsTail<'a>(pub &'a Aggregates);

impl Serialize for SessionsTail<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct CreatorOption {
            key: &'static str,
        }
        let a = self.0;
        let mut st = s.serialize_struct("SessionsUsageResult", 3)?;
        st.serialize_field("totals", &TotalsOut(&a.totals))?;
        st.serialize_field("aggregates", &AggregatesOut(a))?;
        let options: Vec<CreatorOption> =
            if a.rows > 0 { vec![CreatorOption { key: UNKNOWN_CREATOR }] } else { Vec::new() };
        st.serialize_field("creatorOptions", &options)?;
        st.end()
    }
}

struct AggregatesOut<'a>(&'a Aggregates);

impl Serialize for AggregatesOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let a = self.0;
        let mut st = s.serialize_struct("SessionsUsageAggregates", 14)?;
        st.serialize_field("sessionCount", &a.active_rows)?;
        // OpenClaw leaves the field out while no session has a duration.
        if let Some(longest) = a.longest.max().filter(|l| *l > 0) {
            st.serialize_field("longestSessionDurationMs", &longest)?;
        }
        st.serialize_field("messages", &CountsOut::from(&a.messages))?;
        st.serialize_field("tools", &ToolsOut(a.tools.iter().map(|(n, c)| (n.as_str(), *c)).collect()))?;
        let models: Vec<ModelOut<'_>> = by_cost(a.models.iter())
            .into_iter()
            .map(|((p, m), acc)| ModelOut {
                provider: (acc.named_provider > 0).then_some(p.as_str()),
                model: (acc.named_model > 0).then_some(m.as_str()),
                count: acc.count,
                totals: &acc.totals,
            })
            .collect();
        st.serialize_field("byModel", &models)?;
        let providers: Vec<ModelOut<'_>> = by_cost(a.providers.iter())
            .into_iter()
            .map(|(p, acc)| ModelOut {
                provider: (acc.named_provider > 0).then_some(p.as_str()),
                model: None,
                count: acc.count,
                totals: &acc.totals,
            })
            .collect();
        st.serialize_field("byProvider", &providers)?;
        st.serialize_field("byAgent", &named_by_cost(&a.agents, "agentId"))?;
        st.serialize_field("byChannel", &named_by_cost(&a.channels, "channel"))?;
        let creators: Vec<CreatorOut<'_>> = if a.rows > 0 { vec![CreatorOut(a)] } else { Vec::new() };
        st.serialize_field("byCreator", &creators)?;
        st.serialize_field("costDaily", &cost_daily_rows(a))?;
        if let Some(l) = a.latency.stats() {
            st.serialize_field("latency", &AggLatency(l))?;
        }
        let dl: Vec<DatedLatency> = a
            .daily_latency
            .iter()
            .filter_map(|(d, l)| l.stats().map(|l| DatedLatency { date: Day(*d), l, session_order: false }))
            .collect();
        st.serialize_field("dailyLatency", &dl)?;
        let mut md: Vec<DatedModel<'_>> = Vec::new();
        for (d, ms) in &a.model_daily {
            let mut ms: Vec<(&(String, String), &DayModelAcc)> = ms.iter().collect();
            ms.sort_by(|x, y| y.1.cost.units().cmp(&x.1.cost.units()).then(x.0.cmp(y.0)));
            let date = Day(*d);
            md.extend(ms.into_iter().map(|((p, m), acc)| DatedModel {
                date,
                provider: (acc.named_provider > 0).then_some(p.as_str()),
                model: (acc.named_model > 0).then_some(m.as_str()),
                tokens: acc.tokens,
                cost: acc.cost,
                count: acc.count,
            }));
        }
        st.serialize_field("modelDaily", &md)?;
        let daily: Vec<DailyOut<'_>> = a.daily.iter().map(|(d, x)| DailyOut(*d, x)).collect();
        st.serialize_field("daily", &daily)?;
        st.end()
    }
}

fn cost_daily_rows(a: &Aggregates) -> Vec<DatedTotals<'_>> {
    a.cost_daily.iter().map(|(d, c)| DatedTotals { date: Day(*d), totals: &c.totals, lead: false }).collect()
}

struct AggLatency(LatencyStats);

impl Serialize for AggLatency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let l = &self.0;
        let mut st = s.serialize_struct("Latency", 5)?;
        st.serialize_field("count", &l.count)?;
        st.serialize_field("avgMs", &Js(l.avg()))?;
        st.serialize_field("minMs", &Js(l.min))?;
        st.serialize_field("maxMs", &Js(l.max))?;
        st.serialize_field("p95Ms", &Js(l.p95))?;
        st.end()
    }
}

struct DailyOut<'a>(i64, &'a DailyAcc);

impl Serialize for DailyOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Daily", 6)?;
        st.serialize_field("date", &Day(self.0))?;
        st.serialize_field("tokens", &self.1.tokens)?;
        st.serialize_field("cost", &JsExact(self.1.cost))?;
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
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Activity {
            dates: Vec<Day>,
            session_count: i64,
        }
        let a = self.0;
        let mut st = s.serialize_struct("CreatorUsage", 5)?;
        st.serialize_field("key", UNKNOWN_CREATOR)?;
        st.serialize_field("totals", &TotalsOut(&a.totals))?;
        st.serialize_field("sessionCount", &a.active_rows)?;
        st.serialize_field("daily", &cost_daily_rows(a))?;
        let activity: Vec<Activity> = a
            .activity
            .iter()
            .map(|(d, n)| Activity { dates: d.iter().map(|d| Day(*d)).collect(), session_count: *n })
            .collect();
        st.serialize_field("sessionActivity", &activity)?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::summary::{DayAgg, ModelRow};

    fn summary(cost: f64, tokens: u64, days: &[i64], lat: Option<f64>) -> Summary {
        let t =
            Totals { total_tokens: tokens, input: tokens, total_cost: Exact::of(cost), ..Totals::default() };
        let mut s = Summary {
            totals: t.clone(),
            first: Some(0),
            last: Some(1000 * tokens as i64),
            ..Summary::default()
        };
        s.counts.total = 2;
        s.tools.push(("edit".into(), 1));
        s.models.push(ModelRow {
            provider: Some("p".into()),
            model: Some("m".into()),
            count: 1,
            totals: t.clone(),
        });
        s.latency = lat.map(|v| LatencyStats::of(&mut [v]).unwrap());
        for d in days {
            let mut da = DayAgg { totals: t.clone(), usage_count: 1, ..DayAgg::default() };
            da.counts.total = 2;
            da.latency = s.latency;
            s.days.insert(*d, da);
        }
        s
    }

    fn json(a: &Aggregates) -> String {
        serde_json::to_string(&SessionsTail(a)).unwrap()
    }

    #[test]
    fn removing_a_row_undoes_it_exactly() {
        let rows: Vec<Summary> = (0..40)
            .map(|i| {
                summary(0.1 * f64::from(i) + 1e-3, 10 + i as u64, &[i as i64 % 5, 7], Some(f64::from(i)))
            })
            .collect();
        let mut all = Aggregates::default();
        for (i, s) in rows.iter().enumerate() {
            all.apply(i as u64, if i % 2 == 0 { "main" } else { "a1" }, Some("slack"), s, 1);
        }
        // Without row 3, built two ways: fresh, and by removing it.
        let mut fresh = Aggregates::default();
        for (i, s) in rows.iter().enumerate().rev().filter(|(i, _)| *i != 3) {
            fresh.apply(i as u64, if i % 2 == 0 { "main" } else { "a1" }, Some("slack"), s, 1);
        }
        let mut removed = all.clone();
        removed.apply(3, "a1", Some("slack"), &rows[3], -1);
        assert!(!removed.lost());
        assert_eq!(json(&removed), json(&fresh));
        // Everything removed: empty again.
        let mut empty = all;
        for (i, s) in rows.iter().enumerate() {
            empty.apply(i as u64, if i % 2 == 0 { "main" } else { "a1" }, Some("slack"), s, -1);
        }
        assert_eq!(json(&empty), json(&Aggregates::default()));
    }

    #[test]
    fn losing_every_listed_maximum_is_reported() {
        let rows: Vec<Summary> = (0..20).map(|i| summary(1.0, 1, &[1], Some(f64::from(i)))).collect();
        let mut a = Aggregates::default();
        for (i, s) in rows.iter().enumerate() {
            a.apply(i as u64, "main", None, s, 1);
        }
        for (i, s) in rows.iter().enumerate().rev().take(8) {
            a.apply(i as u64, "main", None, s, -1);
        }
        assert!(a.lost(), "the 8 largest latencies left; the 9th is not known");
    }
}
