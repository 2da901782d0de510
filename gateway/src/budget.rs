//! Daily and monthly cost budgets, for all agents and per agent: spend against them, a month-end
//! forecast, and a `usage.budget` event when a threshold is crossed.
//!
//! Spend is what the worker answers, never an estimate of the gateway's: every refresh asks
//! (through the answer cache, so an unchanged store costs the worker a fingerprint check)
//! `usage.cost` for the month to date over every agent, whose `totals` is the month's spend and
//! whose last day is today's; and, only when a budget names an agent, `sessions.usage` (one
//! row) for the month and for today, whose `byAgent` aggregates hold every agent's spend at once
//! (two queries whatever the number of agents, so budgets never crowd the worker's live
//! aggregates out). Days and months are cut in the budget time zone (`--budget-tz`, UTC by
//! default).
//!
//! The forecast is the month's spend so far at its average burn rate to date, over the whole
//! month; the time elapsed counts as at least one day, so the first hour's spend is not
//! multiplied by 700.
//!
//! Thresholds (80%, 100%, forecast over) are judged at each refresh; each one crossed upward
//! in a period sends one `usage.budget` event and logs a warning. A new period starts over, and
//! the first refresh after a start reports thresholds already crossed.

use std::{
    collections::HashMap,
    fmt,
    str::FromStr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use ipc_proto::Method;
use jiff::{
    Timestamp,
    civil::{Date, Time},
    tz::TimeZone,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::cache::UsageCache;

/// The default of `--budget-interval`: how often spend is asked of the worker. Alerts hold
/// for a minute or more, and each refresh is up to three worker jobs and their log lines.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// A budget's period: the UTC (or `--budget-tz`) day or calendar month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    Month,
}

impl Period {
    /// The metric label and the word in flags.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
        }
    }
}

/// One configured budget: `[AGENT:]day=USD` or `[AGENT:]month=USD`.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// `None`: every agent together.
    pub agent: Option<String>,
    pub period: Period,
    pub usd: f64,
}

impl FromStr for Budget {
    type Err = String;

    fn from_str(text: &str) -> Result<Budget, String> {
        let text = text.trim();
        let example = "e.g. month=500, day=20, or main:month=200 for one agent";
        let (scope, usd) = text
            .split_once('=')
            .ok_or_else(|| format!("budget \"{text}\" is not [AGENT:]day|month=USD ({example})"))?;
        let (agent, period) = match scope.rsplit_once(':') {
            Some((agent, period)) => (Some(agent.trim()), period.trim()),
            None => (None, scope.trim()),
        };
        let period = match period.to_ascii_lowercase().as_str() {
            "day" | "daily" => Period::Day,
            "month" | "monthly" => Period::Month,
            other => {
                return Err(format!(
                    "budget \"{text}\": the period is day or month, not \"{other}\" ({example})"
                ));
            }
        };
        let agent = match agent {
            None | Some("all") => None,
            Some("") => return Err(format!("budget \"{text}\": the agent before ':' is empty ({example})")),
            Some(agent) if agent.contains([',', '=', ' ']) || agent.len() > 128 => {
                return Err(format!("budget \"{text}\": \"{agent}\" is not an agent id"));
            }
            Some(agent) => Some(agent.to_owned()),
        };
        let amount = usd.trim().trim_start_matches('$').trim();
        let usd: f64 = amount.parse().ok().filter(|v: &f64| v.is_finite() && *v > 0.0).ok_or_else(|| {
            format!("budget \"{text}\": \"{}\" is not an amount of US dollars above 0", usd.trim())
        })?;
        Ok(Budget { agent, period, usd })
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(agent) = &self.agent {
            write!(f, "{agent}:")?;
        }
        write!(f, "{}={}", self.period.as_str(), self.usd)
    }
}

/// Every budget and the zone their days and months are cut in.
#[derive(Debug, Clone)]
pub struct BudgetConfig {
    pub budgets: Vec<Budget>,
    /// The IANA name (or `UTC`) the API is asked with.
    pub zone_name: String,
    pub zone: TimeZone,
    /// How often spend is refreshed.
    pub interval: Duration,
}

impl Default for BudgetConfig {
    fn default() -> BudgetConfig {
        BudgetConfig {
            budgets: Vec::new(),
            zone_name: "UTC".to_owned(),
            zone: TimeZone::UTC,
            interval: DEFAULT_INTERVAL,
        }
    }
}

impl BudgetConfig {
    /// Checks the list (one budget per agent and period) and the zone.
    pub fn new(budgets: Vec<Budget>, zone: Option<&str>, interval: Duration) -> Result<BudgetConfig, String> {
        let mut seen = std::collections::HashSet::new();
        for b in &budgets {
            if !seen.insert((b.agent.clone(), b.period)) {
                let who =
                    b.agent.as_deref().map_or_else(|| "all agents".to_owned(), |a| format!("agent {a}"));
                return Err(format!("two {} budgets for {who}: give one", b.period.as_str()));
            }
        }
        let zone_name = zone.map(str::trim).filter(|z| !z.is_empty()).unwrap_or("UTC").to_owned();
        let zone = TimeZone::get(&zone_name).map_err(|_| {
            format!("--budget-tz \"{zone_name}\" is not a time zone (e.g. UTC, Europe/Paris)")
        })?;
        if interval.is_zero() {
            return Err("--budget-interval must be more than zero".to_owned());
        }
        Ok(BudgetConfig { budgets, zone_name, zone, interval })
    }

    pub fn is_empty(&self) -> bool {
        self.budgets.is_empty()
    }
}

/// Where spend stands against a budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Below 80%.
    #[default]
    Ok,
    /// At or above 80%.
    Warning,
    /// Above 100% (spend equal to the budget is within it, as in the alert rules).
    Exceeded,
}

impl Level {
    pub fn of(spend: f64, budget: f64) -> Level {
        if spend > budget {
            Level::Exceeded
        } else if spend >= budget * 0.8 {
            Level::Warning
        } else {
            Level::Ok
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Exceeded => "exceeded",
        }
    }
}

/// One budget's state, as `/api/v1/status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Line {
    pub period: Option<Period>,
    /// `all` or an agent id.
    pub agent: String,
    /// `YYYY-MM-DD` or `YYYY-MM` in the budget time zone.
    pub period_key: String,
    /// When the period ends, epoch ms.
    pub period_end_ms: i64,
    pub budget_usd: f64,
    /// `None` until the first answer.
    pub spend_usd: Option<f64>,
    /// Monthly budgets only.
    pub forecast_usd: Option<f64>,
    /// Spend over budget.
    pub ratio: Option<f64>,
    pub level: Level,
    /// The forecast is above the budget while the spend is not.
    pub forecast_over: bool,
}

/// The `budgets` section of status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BudgetStatus {
    pub time_zone: String,
    /// The last refresh that got its answers; `None` before the first.
    pub updated_at_ms: Option<i64>,
    /// Why the last refresh did not (the figures are then those of the one before).
    pub error: Option<String>,
    /// `usage.budget` events sent since the start.
    pub events_sent: u64,
    pub items: Vec<Line>,
}

/// A period in the budget zone: its key, start and end as instants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounds {
    pub today: Date,
    pub month_start: Date,
    pub day_key: String,
    pub month_key: String,
    pub day_end_ms: i64,
    pub month_start_ms: i64,
    pub month_end_ms: i64,
}

fn start_ms(zone: &TimeZone, date: Date) -> i64 {
    zone.to_timestamp(date.to_datetime(Time::midnight())).map_or(0, |t| t.as_millisecond())
}

impl Bounds {
    pub fn at(now: Timestamp, zone: &TimeZone) -> Bounds {
        let today = zone.to_datetime(now).date();
        let month_start = today.first_of_month();
        let next_month = today.last_of_month().tomorrow().unwrap_or(today);
        let tomorrow = today.tomorrow().unwrap_or(today);
        Bounds {
            today,
            month_start,
            day_key: today.to_string(),
            month_key: format!("{:04}-{:02}", today.year(), today.month()),
            day_end_ms: start_ms(zone, tomorrow),
            month_start_ms: start_ms(zone, month_start),
            month_end_ms: start_ms(zone, next_month),
        }
    }
}

/// The month's spend so far at its average burn rate to date, over the whole month (time
/// elapsed counted as at least a day).
pub fn forecast(spend: f64, now_ms: i64, month_start_ms: i64, month_end_ms: i64) -> f64 {
    let month = (month_end_ms - month_start_ms).max(1) as f64;
    let elapsed = ((now_ms - month_start_ms) as f64).clamp(86_400_000.0_f64.min(month), month);
    spend * month / elapsed
}

/// The thresholds a line crossed going from `before` (same period) to `now`, lowest first.
pub fn crossed(before: Option<(Level, bool)>, now: (Level, bool)) -> Vec<&'static str> {
    let (level_before, forecast_before) = before.unwrap_or_default();
    let mut out = Vec::new();
    if level_before < Level::Warning && now.0 >= Level::Warning {
        out.push("80%");
    }
    if level_before < Level::Exceeded && now.0 == Level::Exceeded {
        out.push("100%");
    }
    if !forecast_before && now.1 {
        out.push("forecast");
    }
    out
}

/// Spend per agent from a `sessions.usage` payload's `byAgent`.
fn by_agent(payload: &Value) -> HashMap<String, f64> {
    payload["aggregates"]["byAgent"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|row| Some((row["agentId"].as_str()?.to_owned(), row["totals"]["totalCost"].as_f64()?)))
        .collect()
}

#[derive(Default)]
struct State {
    status: BudgetStatus,
    /// Per (agent, period): the period key and what had been crossed in it.
    crossed: HashMap<(String, Period), (String, Level, bool)>,
}

/// The budgets of a running gateway: refreshed in the background, read by status and metrics.
pub struct Budgets {
    config: BudgetConfig,
    state: Mutex<State>,
    events_sent: AtomicU64,
}

impl Budgets {
    pub fn new(config: BudgetConfig) -> Arc<Budgets> {
        let state = State {
            status: BudgetStatus { time_zone: config.zone_name.clone(), ..BudgetStatus::default() },
            ..State::default()
        };
        Arc::new(Budgets { config, state: Mutex::new(state), events_sent: AtomicU64::new(0) })
    }

    pub fn config(&self) -> &BudgetConfig {
        &self.config
    }

    /// The status section: every budget, with its spend once known.
    pub fn status(&self) -> BudgetStatus {
        let mut status = self.state.lock().expect("budget state").status.clone();
        status.events_sent = self.events_sent.load(Ordering::Relaxed);
        if status.items.is_empty() {
            let bounds = Bounds::at(Timestamp::now(), &self.config.zone);
            status.items = self.config.budgets.iter().map(|b| self.line(b, &bounds, None, 0)).collect();
        }
        status
    }

    fn line(&self, budget: &Budget, bounds: &Bounds, spend: Option<f64>, now_ms: i64) -> Line {
        let (period_key, period_end_ms) = match budget.period {
            Period::Day => (bounds.day_key.clone(), bounds.day_end_ms),
            Period::Month => (bounds.month_key.clone(), bounds.month_end_ms),
        };
        let forecast_usd = match (budget.period, spend) {
            (Period::Month, Some(spend)) => {
                Some(forecast(spend, now_ms, bounds.month_start_ms, bounds.month_end_ms))
            }
            _ => None,
        };
        let level = spend.map_or(Level::Ok, |s| Level::of(s, budget.usd));
        Line {
            period: Some(budget.period),
            agent: budget.agent.clone().unwrap_or_else(|| "all".to_owned()),
            period_key,
            period_end_ms,
            budget_usd: budget.usd,
            spend_usd: spend,
            forecast_usd,
            ratio: spend.map(|s| s / budget.usd),
            level,
            forecast_over: level != Level::Exceeded && forecast_usd.is_some_and(|f| f > budget.usd),
        }
    }

    /// The params of the queries one refresh needs at `bounds`: (what, method, params).
    fn queries(&self, bounds: &Bounds) -> Vec<(&'static str, Method, Value)> {
        let zone = &self.config.zone_name;
        let range = |from: Date| json!({"agentScope": "all", "startDate": from.to_string(), "endDate": bounds.today.to_string(), "timeZone": zone});
        let mut out = vec![("all", Method::UsageCost, range(bounds.month_start))];
        let per_agent = |period| self.config.budgets.iter().any(|b| b.agent.is_some() && b.period == period);
        for (what, period, from) in
            [("agents-month", Period::Month, bounds.month_start), ("agents-day", Period::Day, bounds.today)]
        {
            if per_agent(period) {
                let mut params = range(from);
                params["limit"] = json!(1);
                out.push((what, Method::SessionsUsage, params));
            }
        }
        out
    }

    /// One refresh: asks the worker (through the cache), updates the lines, and returns the
    /// `usage.budget` events to send.
    pub async fn refresh(&self, cache: &Arc<UsageCache>) -> Vec<Value> {
        let now = Timestamp::now();
        let bounds = Bounds::at(now, &self.config.zone);
        let mut answers: HashMap<&str, Value> = HashMap::new();
        let mut error = None;
        for (what, method, params) in self.queries(&bounds) {
            let query = match crate::params::parse(method, &params, now) {
                Ok(query) => query,
                Err(e) => {
                    error = Some(format!("{}: {e}", method.name()));
                    break;
                }
            };
            match cache.get(query, false).await {
                Ok(served) => {
                    let bytes = served.payload();
                    match tokio::task::spawn_blocking(move || serde_json::from_slice::<Value>(&bytes)).await {
                        Ok(Ok(payload)) => {
                            answers.insert(what, payload);
                        }
                        _ => error = Some(format!("{}: the answer could not be read", method.name())),
                    }
                }
                Err(e) => error = Some(format!("{}: {}", method.name(), e.message)),
            }
            if error.is_some() {
                break;
            }
        }
        let mut state = self.state.lock().expect("budget state");
        if let Some(error) = error {
            state.status.error = Some(error);
            return Vec::new();
        }
        let month_all = answers.get("all").map(|p| p["totals"]["totalCost"].as_f64().unwrap_or(0.0));
        let day_all = answers.get("all").map(|p| {
            p["daily"]
                .as_array()
                .and_then(|days| days.iter().find(|d| d["date"].as_str() == Some(bounds.day_key.as_str())))
                .and_then(|d| d["totalCost"].as_f64())
                .unwrap_or(0.0)
        });
        let agents_month = answers.get("agents-month").map(by_agent);
        let agents_day = answers.get("agents-day").map(by_agent);
        let now_ms = now.as_millisecond();
        let mut events = Vec::new();
        let mut items = Vec::new();
        for budget in &self.config.budgets {
            let spend = match (&budget.agent, budget.period) {
                (None, Period::Month) => month_all,
                (None, Period::Day) => day_all,
                (Some(agent), Period::Month) => {
                    agents_month.as_ref().map(|m| m.get(agent).copied().unwrap_or(0.0))
                }
                (Some(agent), Period::Day) => {
                    agents_day.as_ref().map(|m| m.get(agent).copied().unwrap_or(0.0))
                }
            };
            let line = self.line(budget, &bounds, spend, now_ms);
            let key = (line.agent.clone(), budget.period);
            let before = state
                .crossed
                .get(&key)
                .filter(|(period_key, _, _)| *period_key == line.period_key)
                .map(|(_, level, forecast)| (*level, *forecast));
            let now_state = (line.level, line.forecast_over || before.is_some_and(|b| b.1));
            for threshold in crossed(before, now_state) {
                tracing::warn!(period = budget.period.as_str(), agent = %line.agent, threshold,
                    spend_usd = line.spend_usd.unwrap_or(0.0), budget_usd = budget.usd,
                    forecast_usd = line.forecast_usd, "Budget threshold crossed.");
                events.push(json!({
                    "ts": now_ms,
                    "period": budget.period.as_str(),
                    "agent": line.agent,
                    "periodKey": line.period_key,
                    "threshold": threshold,
                    "level": line.level.as_str(),
                    "budgetUsd": budget.usd,
                    "spendUsd": line.spend_usd,
                    "forecastUsd": line.forecast_usd,
                    "ratio": line.ratio,
                }));
            }
            // Levels only go up within a period: a refund or an edited transcript lowers the
            // spend, but a threshold once announced is not announced again.
            let kept = before.map_or(now_state, |b| (b.0.max(now_state.0), now_state.1));
            state.crossed.insert(key, (line.period_key.clone(), kept.0, kept.1));
            items.push(line);
        }
        state.status.items = items;
        state.status.error = None;
        state.status.updated_at_ms = Some(now_ms);
        events
    }

    /// Refreshes every `interval` for as long as the gateway runs, broadcasting `usage.budget`.
    pub fn spawn(self: &Arc<Self>, cache: Arc<UsageCache>, interval: Duration) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                for event in this.refresh(&cache).await {
                    if cache.broadcast("usage.budget", event.to_string()) {
                        this.events_sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_parse_from_flags() {
        let b: Budget = "month=500".parse().unwrap();
        assert_eq!((b.agent, b.period, b.usd), (None, Period::Month, 500.0));
        let b: Budget = " main:day=$12.5 ".parse().unwrap();
        assert_eq!((b.agent.as_deref(), b.period, b.usd), (Some("main"), Period::Day, 12.5));
        let b: Budget = "all:monthly=3".parse().unwrap();
        assert_eq!(b.agent, None, "all: means every agent");
        assert_eq!("ops:month=20".parse::<Budget>().unwrap().to_string(), "ops:month=20");
        for bad in ["500", "week=5", "month=0", "month=-3", "month=abc", ":month=5", "month=inf", "a b:day=1"]
        {
            assert!(bad.parse::<Budget>().is_err(), "{bad}");
        }
        let err = "year=5".parse::<Budget>().unwrap_err();
        assert!(err.contains("day or month") && err.contains("e.g."), "{err}");
        let config = |budgets: Vec<Budget>, zone| BudgetConfig::new(budgets, zone, DEFAULT_INTERVAL);
        let twice = config(vec!["month=5".parse().unwrap(), "all:month=6".parse().unwrap()], None);
        assert!(twice.unwrap_err().contains("two month budgets"));
        assert!(config(Vec::new(), Some("Mars/Olympus")).is_err());
        assert_eq!(config(Vec::new(), Some("Europe/Paris")).unwrap().zone_name, "Europe/Paris");
        assert!(BudgetConfig::new(Vec::new(), None, Duration::ZERO).is_err());
    }

    #[test]
    fn levels_and_crossings() {
        assert_eq!(Level::of(79.9, 100.0), Level::Ok);
        assert_eq!(Level::of(80.0, 100.0), Level::Warning);
        assert_eq!(Level::of(100.0, 100.0), Level::Warning, "spend equal to the budget is within it");
        assert_eq!(Level::of(100.01, 100.0), Level::Exceeded);
        assert_eq!(crossed(None, (Level::Ok, false)), Vec::<&str>::new());
        assert_eq!(crossed(None, (Level::Exceeded, false)), ["80%", "100%"]);
        assert_eq!(crossed(Some((Level::Warning, false)), (Level::Exceeded, false)), ["100%"]);
        assert_eq!(crossed(Some((Level::Warning, false)), (Level::Warning, true)), ["forecast"]);
        assert_eq!(crossed(Some((Level::Exceeded, true)), (Level::Exceeded, true)), Vec::<&str>::new());
    }

    #[test]
    fn periods_and_the_forecast() {
        let now: Timestamp = "2026-02-10T12:00:00Z".parse().unwrap();
        let utc = Bounds::at(now, &TimeZone::UTC);
        assert_eq!((utc.day_key.as_str(), utc.month_key.as_str()), ("2026-02-10", "2026-02"));
        let feb_start: Timestamp = "2026-02-01T00:00:00Z".parse().unwrap();
        let mar_start: Timestamp = "2026-03-01T00:00:00Z".parse().unwrap();
        assert_eq!(utc.month_start_ms, feb_start.as_millisecond());
        assert_eq!(utc.month_end_ms, mar_start.as_millisecond());
        // 9.5 of 28 days gone: $95 so far burns to $280.
        let f = forecast(95.0, now.as_millisecond(), utc.month_start_ms, utc.month_end_ms);
        assert!((f - 280.0).abs() < 1e-9, "{f}");
        // The first hour counts as a day.
        let early = feb_start.as_millisecond() + 3_600_000;
        assert!((forecast(1.0, early, utc.month_start_ms, utc.month_end_ms) - 28.0).abs() < 1e-9);
        // After the month's end the forecast is the spend.
        assert_eq!(forecast(7.0, mar_start.as_millisecond() + 5, utc.month_start_ms, utc.month_end_ms), 7.0);
        // Tokyo is already on the 11th.
        let tokyo = Bounds::at(
            now.checked_add(jiff::Span::new().hours(3)).unwrap(),
            &TimeZone::get("Asia/Tokyo").unwrap(),
        );
        assert_eq!(tokyo.day_key, "2026-02-11");
        assert_eq!(tokyo.month_start_ms, feb_start.as_millisecond() - 9 * 3_600_000);
    }

    #[test]
    fn agents_spend_reads_from_by_agent() {
        let payload = json!({"aggregates": {"byAgent": [{"agentId": "main", "totals": {"totalCost": 1.5}}, {"agentId": 3}]}});
        let spend = by_agent(&payload);
        assert_eq!(spend.get("main"), Some(&1.5));
        assert_eq!(spend.len(), 1);
    }
}
