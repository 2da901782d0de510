//! Turning rollups into one session's summary for a range and day zone, and merging summaries
//! the way OpenClaw merges them (family rows, aggregates).
//!
//! Merging follows OpenClaw's rules, including its approximations: merged latency keeps the
//! count-weighted mean but the *maximum* of the p95s (not a true p95), per day as well.

use std::collections::BTreeMap;

use serde::ser::{Serialize, SerializeStruct, Serializer};

use super::num::{Exact, Js, JsExact, apply_u64};
use super::rollup::{Bucket, FileRollup, ModelAgg, MsgCounts, NO_MODEL};
use super::store::Price;
use super::time::day_of;

/// The eleven usage/cost totals OpenClaw reports everywhere.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Totals {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub total_tokens: u64,
    pub total_cost: Exact,
    pub input_cost: Exact,
    pub output_cost: Exact,
    pub cache_read_cost: Exact,
    pub cache_write_cost: Exact,
    pub missing: u64,
}

impl Totals {
    /// Adds one bucket-model aggregate. Entries without a stored cost are priced per million
    /// tokens when `price` is known (breakdown included, so the parts add up to the total),
    /// else counted in `missingCostEntries`.
    pub fn add_agg(&mut self, a: &ModelAgg, price: Option<Price>) {
        self.add_tokens(&a.tokens);
        self.total_cost.add_f64(a.cost[0]);
        self.input_cost.add_f64(a.cost[1]);
        self.output_cost.add_f64(a.cost[2]);
        self.cache_read_cost.add_f64(a.cost[3]);
        self.cache_write_cost.add_f64(a.cost[4]);
        if a.unpriced > 0 {
            match price {
                Some(p) => {
                    let t = &a.unpriced_tokens;
                    let parts = [
                        Exact::of(t[0] as f64 * p.input / 1e6),
                        Exact::of(t[1] as f64 * p.output / 1e6),
                        Exact::of(t[2] as f64 * p.cache_read / 1e6),
                        Exact::of(t[3] as f64 * p.cache_write / 1e6),
                    ];
                    // The total is the sum of the exact parts, so the parts add up to it.
                    for part in parts {
                        self.total_cost.add(part);
                    }
                    self.input_cost.add(parts[0]);
                    self.output_cost.add(parts[1]);
                    self.cache_read_cost.add(parts[2]);
                    self.cache_write_cost.add(parts[3]);
                }
                None => self.missing += a.unpriced,
            }
        }
    }

    pub fn merge(&mut self, o: &Totals) {
        self.apply(o, 1);
    }

    /// Adds `o` (`sign` 1) or takes it away again (`sign` -1), exactly.
    pub fn apply(&mut self, o: &Totals, sign: i64) {
        apply_u64(&mut self.input, o.input, sign);
        apply_u64(&mut self.output, o.output, sign);
        apply_u64(&mut self.cache_read, o.cache_read, sign);
        apply_u64(&mut self.cache_write, o.cache_write, sign);
        apply_u64(&mut self.total_tokens, o.total_tokens, sign);
        self.total_cost.apply(o.total_cost, sign);
        self.input_cost.apply(o.input_cost, sign);
        self.output_cost.apply(o.output_cost, sign);
        self.cache_read_cost.apply(o.cache_read_cost, sign);
        self.cache_write_cost.apply(o.cache_write_cost, sign);
        apply_u64(&mut self.missing, o.missing, sign);
    }

    /// Adds input, output, cacheRead, cacheWrite, totalTokens. Wrapping like every sum here:
    /// plausible data never comes near `u64::MAX` (see `line::MAX_TOKENS`), and wrapping keeps
    /// removal the exact inverse of addition.
    fn add_tokens(&mut self, t: &[u64; 5]) {
        self.input = self.input.wrapping_add(t[0]);
        self.output = self.output.wrapping_add(t[1]);
        self.cache_read = self.cache_read.wrapping_add(t[2]);
        self.cache_write = self.cache_write.wrapping_add(t[3]);
        self.total_tokens = self.total_tokens.wrapping_add(t[4]);
    }

    /// input + output + cacheRead + cacheWrite (the `tokens` of daily rows).
    pub fn tokens4(&self) -> u64 {
        [self.output, self.cache_read, self.cache_write].iter().fold(self.input, |a, b| a.wrapping_add(*b))
    }

    /// Serializes the eleven fields into an open struct (for rows that extend them).
    pub fn write_fields<S: SerializeStruct>(&self, s: &mut S) -> Result<(), S::Error> {
        s.serialize_field("input", &self.input)?;
        s.serialize_field("output", &self.output)?;
        s.serialize_field("cacheRead", &self.cache_read)?;
        s.serialize_field("cacheWrite", &self.cache_write)?;
        s.serialize_field("totalTokens", &self.total_tokens)?;
        s.serialize_field("totalCost", &JsExact(self.total_cost))?;
        s.serialize_field("inputCost", &JsExact(self.input_cost))?;
        s.serialize_field("outputCost", &JsExact(self.output_cost))?;
        s.serialize_field("cacheReadCost", &JsExact(self.cache_read_cost))?;
        s.serialize_field("cacheWriteCost", &JsExact(self.cache_write_cost))?;
        s.serialize_field("missingCostEntries", &self.missing)
    }
}

/// [`Totals`] as OpenClaw's eleven-field JSON object (the derived serialisation is the
/// index's persisted form).
pub struct TotalsOut<'a>(pub &'a Totals);

impl Serialize for TotalsOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Totals", 11)?;
        self.0.write_fields(&mut st)?;
        st.end()
    }
}

/// `{count, avgMs, p95Ms, minMs, maxMs}`, with the sum kept exactly so that sessions merge
/// into aggregates in any order (and out of them again) to the same mean.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LatencyStats {
    pub count: u64,
    pub sum: Exact,
    pub p95: f64,
    pub min: f64,
    pub max: f64,
}

impl LatencyStats {
    /// Exact stats; p95 is `sorted[ceil(0.95 n) - 1]`, found by selection rather than a sort.
    /// Reorders `values`.
    pub fn of(values: &mut [f64]) -> Option<LatencyStats> {
        let n = values.len();
        let (&first, _) = values.split_first()?;
        let mut sum = Exact::ZERO;
        let (mut min, mut max) = (first, first);
        for &v in values.iter() {
            sum.add_f64(v);
            if v.total_cmp(&min).is_lt() {
                min = v;
            }
            if v.total_cmp(&max).is_gt() {
                max = v;
            }
        }
        let idx = ((n as f64 * 0.95).ceil() as usize).saturating_sub(1).min(n - 1);
        let (_, p95, _) = values.select_nth_unstable_by(idx, f64::total_cmp);
        Some(LatencyStats { count: n as u64, sum, p95: *p95, min, max })
    }

    /// The mean.
    pub fn avg(&self) -> f64 {
        if self.count == 0 { 0.0 } else { self.sum.value() / self.count as f64 }
    }

    /// OpenClaw's merge: counts and sums add, max of p95s (not a true p95).
    pub fn merge(a: Option<LatencyStats>, b: Option<LatencyStats>) -> Option<LatencyStats> {
        match (a, b) {
            (None, x) | (x, None) => x,
            (Some(a), Some(b)) => {
                let mut sum = a.sum;
                sum.add(b.sum);
                Some(LatencyStats {
                    count: a.count + b.count,
                    sum,
                    p95: a.p95.max(b.p95),
                    min: a.min.min(b.min),
                    max: a.max.max(b.max),
                })
            }
        }
    }
}

/// Per-model usage within a summary (`modelUsage` row).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelRow {
    pub provider: Option<String>,
    pub model: Option<String>,
    pub count: u64,
    pub totals: Totals,
}

/// OpenClaw's model key: missing parts read as `unknown`.
pub fn model_key_eq(a: (&Option<String>, &Option<String>), b: (&Option<String>, &Option<String>)) -> bool {
    let n = |x: &Option<String>| x.as_deref().unwrap_or("unknown").to_owned();
    let eq = |x: &Option<String>, y: &Option<String>| match (x, y) {
        (Some(x), Some(y)) => x == y,
        _ => n(x) == n(y),
    };
    eq(a.0, b.0) && eq(a.1, b.1)
}

/// Per-day, per-model usage (`dailyModelUsage` row): tokens are the four-component sum.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DayModel {
    pub provider: Option<String>,
    pub model: Option<String>,
    pub tokens: u64,
    pub cost: Exact,
    pub count: u64,
}

/// One day of one summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DayAgg {
    pub totals: Totals,
    /// Usage entries that day (a day with messages but no usage has no `dailyBreakdown` row).
    pub usage_count: u64,
    pub counts: MsgCounts,
    pub models: Vec<DayModel>,
    pub latency: Option<LatencyStats>,
}

/// One UTC quarter hour of one summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuarterAgg {
    pub counts: MsgCounts,
    /// input, output, cacheRead, cacheWrite, totalTokens
    pub tokens: [u64; 5],
    pub cost: Exact,
    pub has_usage: bool,
}

/// A session's usage over a range: the `SessionCostSummary` before serialisation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub totals: Totals,
    pub first: Option<i64>,
    pub last: Option<i64>,
    pub counts: MsgCounts,
    /// Tool calls by name, in first-seen order.
    pub tools: Vec<(String, u64)>,
    pub models: Vec<ModelRow>,
    pub latency: Option<LatencyStats>,
    /// Keyed by day number in the query's zone.
    pub days: BTreeMap<i64, DayAgg>,
    /// Keyed by UTC quarter index; only filled when asked for.
    pub quarters: BTreeMap<i64, QuarterAgg>,
}

/// The range and zone of a query.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: i64,
    pub end: i64,
    pub offset_ms: i64,
}

impl Window {
    fn contains(&self, ts: i64) -> bool {
        ts >= self.start && ts <= self.end
    }
}

/// What a caller needs beyond totals and days.
#[derive(Debug, Clone, Copy)]
pub struct Want {
    pub quarters: bool,
    pub latency: bool,
    /// Include timestamp-less entries (`sessions.usage` does, `usage.cost` does not).
    pub untimed: bool,
}

fn add_tool(tools: &mut Vec<(String, u64)>, name: &str, n: u64) {
    match tools.iter_mut().find(|(t, _)| t == name) {
        Some((_, c)) => *c += n,
        None => tools.push((name.to_owned(), n)),
    }
}

fn add_model_row(rows: &mut Vec<ModelRow>, provider: &Option<String>, model: &Option<String>) -> usize {
    if let Some(i) = rows.iter().position(|r| model_key_eq((&r.provider, &r.model), (provider, model))) {
        return i;
    }
    rows.push(ModelRow { provider: provider.clone(), model: model.clone(), ..ModelRow::default() });
    rows.len() - 1
}

fn add_day_model(rows: &mut Vec<DayModel>, provider: &Option<String>, model: &Option<String>) -> usize {
    if let Some(i) = rows.iter().position(|r| model_key_eq((&r.provider, &r.model), (provider, model))) {
        return i;
    }
    rows.push(DayModel { provider: provider.clone(), model: model.clone(), ..DayModel::default() });
    rows.len() - 1
}

/// Summarises one file's rollup. `prices[i]` is the price of `r.models[i]`.
pub fn summarize(r: &FileRollup, w: &Window, prices: &[Option<Price>], want: Want) -> Summary {
    let mut acc = Acc {
        r,
        prices,
        s: Summary::default(),
        model_rows: vec![u32::MAX; r.models.len()],
        tool_rows: vec![u32::MAX; r.tools.len()],
        day: None,
        quarters: Vec::new(),
    };
    let from = r.buckets.partition_point(|b| b.max_ts < w.start);
    for b in &r.buckets[from..] {
        if b.min_ts > w.end {
            break;
        }
        if w.contains(b.min_ts) {
            acc.fold(b, Some(day_of(b.min_ts, w.offset_ms)), want.quarters);
        }
    }
    acc.flush_day();
    if want.untimed {
        acc.fold(&r.untimed, None, false);
    }
    let mut s = acc.s;
    // Buckets come in time order, so quarters are sorted: a bulk build.
    s.quarters = acc.quarters.into_iter().collect();
    if want.latency {
        let mut all = Vec::new();
        let mut by_day: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
        for l in &r.latency {
            if w.contains(l.ts) && (l.user_ts == i64::MIN || l.user_ts >= w.start) {
                all.push(l.ms);
                by_day.entry(day_of(l.ts, w.offset_ms)).or_default().push(l.ms);
            }
        }
        s.latency = LatencyStats::of(&mut all);
        for (d, mut v) in by_day {
            s.days.entry(d).or_default().latency = LatencyStats::of(&mut v);
        }
    }
    s
}

/// [`summarize`]'s working state. Rollup model and tool indexes are mapped to the summary's
/// rows once (first use), so the per-bucket work compares integers, not names.
struct Acc<'a> {
    r: &'a FileRollup,
    prices: &'a [Option<Price>],
    s: Summary,
    model_rows: Vec<u32>,
    tool_rows: Vec<u32>,
    /// The day being filled (days arrive in order, as buckets do), with the summary model row
    /// of each of its `models`.
    day: Option<(i64, DayAgg, Vec<u32>)>,
    quarters: Vec<(i64, QuarterAgg)>,
}

impl Acc<'_> {
    fn model_row(&mut self, m: u32) -> usize {
        let slot = &mut self.model_rows[m as usize];
        if *slot == u32::MAX {
            let (prov, model) = &self.r.models[m as usize];
            *slot = add_model_row(&mut self.s.models, prov, model) as u32;
        }
        *slot as usize
    }

    fn tool_row(&mut self, t: u32) -> usize {
        let slot = &mut self.tool_rows[t as usize];
        if *slot == u32::MAX {
            let name = &self.r.tools[t as usize];
            *slot = match self.s.tools.iter().position(|(n, _)| n == name) {
                Some(i) => i,
                None => {
                    self.s.tools.push((name.clone(), 0));
                    self.s.tools.len() - 1
                }
            } as u32;
        }
        *slot as usize
    }

    fn flush_day(&mut self) {
        if let Some((d, da, _)) = self.day.take() {
            debug_assert!(!self.s.days.contains_key(&d), "days arrive in order");
            self.s.days.insert(d, da);
        }
    }

    fn fold(&mut self, b: &Bucket, day: Option<i64>, quarters: bool) {
        self.s.counts.add(&b.counts);
        for &(t, n) in &b.tools {
            let i = self.tool_row(t);
            self.s.tools[i].1 += n;
        }
        if let Some(d) = day
            && self.day.as_ref().is_none_or(|(cur, _, _)| *cur != d)
        {
            self.flush_day();
            self.day = Some((d, DayAgg::default(), Vec::new()));
        }
        let mut bucket_totals = Totals::default();
        for a in &b.models {
            let p =
                if a.model == NO_MODEL { None } else { self.prices.get(a.model as usize).copied().flatten() };
            let mut t = Totals::default();
            t.add_agg(a, p);
            bucket_totals.merge(&t);
            if a.model == NO_MODEL {
                continue;
            }
            let i = self.model_row(a.model);
            let row = &mut self.s.models[i];
            row.count += a.count;
            row.totals.merge(&t);
            if let Some((_, da, rows)) = &mut self.day {
                let j = match rows.iter().position(|&x| x as usize == i) {
                    Some(j) => j,
                    None => {
                        let row = &self.s.models[i];
                        da.models.push(DayModel {
                            provider: row.provider.clone(),
                            model: row.model.clone(),
                            ..DayModel::default()
                        });
                        rows.push(i as u32);
                        rows.len() - 1
                    }
                };
                let dm = &mut da.models[j];
                dm.tokens = dm.tokens.wrapping_add(t.tokens4());
                dm.cost.add(t.total_cost);
                dm.count += a.count;
            }
        }
        self.s.totals.merge(&bucket_totals);
        if let Some((_, da, _)) = &mut self.day {
            self.s.first = Some(self.s.first.map_or(b.min_ts, |f| f.min(b.min_ts)));
            self.s.last = Some(self.s.last.map_or(b.max_ts, |l| l.max(b.max_ts)));
            da.counts.add(&b.counts);
            da.totals.merge(&bucket_totals);
            da.usage_count += b.models.iter().map(|a| a.count).sum::<u64>();
            if quarters {
                let tokens = [
                    bucket_totals.input,
                    bucket_totals.output,
                    bucket_totals.cache_read,
                    bucket_totals.cache_write,
                    bucket_totals.total_tokens,
                ];
                let qa = QuarterAgg {
                    counts: b.counts,
                    tokens,
                    cost: bucket_totals.total_cost,
                    has_usage: !b.models.is_empty(),
                };
                self.quarters.push((b.q, qa));
            }
        }
    }
}

impl Summary {
    /// A copy without quarter hours (what cached summaries keep).
    pub fn without_quarters(&self) -> Summary {
        Summary {
            totals: self.totals.clone(),
            first: self.first,
            last: self.last,
            counts: self.counts,
            tools: self.tools.clone(),
            models: self.models.clone(),
            latency: self.latency,
            days: self.days.clone(),
            quarters: BTreeMap::new(),
        }
    }

    /// Folds another summary in (OpenClaw's `mergeSessionUsageInto`).
    pub fn merge(&mut self, o: &Summary) {
        self.totals.merge(&o.totals);
        self.first = match (self.first, o.first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last = match (self.last, o.last) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.counts.add(&o.counts);
        for (t, n) in &o.tools {
            add_tool(&mut self.tools, t, *n);
        }
        for m in &o.models {
            let i = add_model_row(&mut self.models, &m.provider, &m.model);
            self.models[i].count += m.count;
            self.models[i].totals.merge(&m.totals);
        }
        self.latency = LatencyStats::merge(self.latency, o.latency);
        for (d, od) in &o.days {
            let da = self.days.entry(*d).or_default();
            da.totals.merge(&od.totals);
            da.usage_count += od.usage_count;
            da.counts.add(&od.counts);
            for m in &od.models {
                let j = add_day_model(&mut da.models, &m.provider, &m.model);
                da.models[j].tokens = da.models[j].tokens.wrapping_add(m.tokens);
                da.models[j].cost.add(m.cost);
                da.models[j].count += m.count;
            }
            da.latency = LatencyStats::merge(da.latency, od.latency);
        }
        for (q, oq) in &o.quarters {
            let qa = self.quarters.entry(*q).or_default();
            qa.counts.add(&oq.counts);
            for (a, b) in qa.tokens.iter_mut().zip(oq.tokens) {
                *a = a.wrapping_add(b);
            }
            qa.cost.add(oq.cost);
            qa.has_usage |= oq.has_usage;
        }
    }

    /// `lastActivity - firstActivity`, when both exist.
    pub fn duration_ms(&self) -> Option<i64> {
        Some((self.last? - self.first?).max(0))
    }
}

/// Latency stats as `{count, avgMs, p95Ms, minMs, maxMs}` (session order).
pub struct SessionLatency<'a>(pub &'a LatencyStats);

impl Serialize for SessionLatency<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let l = self.0;
        let mut st = s.serialize_struct("Latency", 5)?;
        st.serialize_field("count", &l.count)?;
        st.serialize_field("avgMs", &Js(l.avg()))?;
        st.serialize_field("p95Ms", &Js(l.p95))?;
        st.serialize_field("minMs", &Js(l.min))?;
        st.serialize_field("maxMs", &Js(l.max))?;
        st.end()
    }
}
