//! `clawgate report daily|weekly|monthly|session|model|agent`: usage and cost tables for the
//! terminal (ccusage's shape), CSV, or one JSON document (`clawgate.report/v1`,
//! docs/ops/report.md).
//!
//! Every figure is the API's: days, sessions, models and agents are the rows of one
//! `usage.cost` or `sessions.usage` answer, `totals` is that answer's `totals`; weeks and months
//! are exact sums of its days (see [`sum_days`]). The report covers every agent unless
//! `--agent` names one: it always sends `agentScope:"all"` or an `agentId`, never neither
//! (OpenClaw's `usage.cost` without a scope counts one agent and says nothing).
//!
//! The answers come from a running gateway (`--url`, its token as `clawgate status` finds it)
//! or, with `--state-dir`, from a worker this command starts itself (`source`).
//! Exit codes: 0 ok, 1 failed, 2 usage error, 3 unauthorized, 4 unreachable, 5 unavailable.

pub mod progress;
pub mod render;
pub mod source;

use std::{
    io::{IsTerminal as _, Write as _},
    path::PathBuf,
    time::{Duration, Instant},
};

use jiff::{Timestamp, civil::Date, tz::TimeZone};
use serde_json::{Map, Value, json};

use crate::cli_status;
use source::{GatewaySource, Source, StateDirSource};

/// The JSON schema name; bump the suffix on incompatible changes.
pub const SCHEMA: &str = "clawgate.report/v1";
/// The default of `--timeout`: long enough for a cold read of a large store.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// The default of `--limit` (session rows shown).
pub const DEFAULT_LIMIT: u32 = 50;

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_UNAUTHORIZED: i32 = 3;
pub const EXIT_UNREACHABLE: i32 = 4;
pub const EXIT_UNAVAILABLE: i32 = 5;

/// What a report is about: one row per ...
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// day (from `usage.cost`).
    Daily,
    /// ISO week, Monday first (the sum of its days).
    Weekly,
    /// calendar month (the sum of its days).
    Monthly,
    /// session, most expensive first (from `sessions.usage`).
    Session,
    /// provider and model (from `sessions.usage`).
    Model,
    /// agent (from `sessions.usage`).
    Agent,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Daily => "daily",
            Kind::Weekly => "weekly",
            Kind::Monthly => "monthly",
            Kind::Session => "session",
            Kind::Model => "model",
            Kind::Agent => "agent",
        }
    }

    fn method(self) -> &'static str {
        match self {
            Kind::Daily | Kind::Weekly | Kind::Monthly => "usage.cost",
            Kind::Session | Kind::Model | Kind::Agent => "sessions.usage",
        }
    }
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// What was given on the command line.
#[derive(Debug, Clone)]
pub struct Given {
    pub kind: Kind,
    pub since: Option<String>,
    pub until: Option<String>,
    pub agent: Option<String>,
    pub tz: Option<String>,
    pub format: Format,
    pub limit: u32,
    pub url: Option<String>,
    pub token: Option<String>,
    pub env_file: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub worker_bin: Option<PathBuf>,
    pub timeout: Duration,
}

/// Why a report could not be made; each has its exit code.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Bad flags or params (also the API's `INVALID_REQUEST`).
    #[error("{0}")]
    Usage(String),
    /// HTTP 401; the text says which token was tried.
    #[error("unauthorized (HTTP 401): {0}")]
    Unauthorized(String),
    #[error(
        "cannot reach the gateway at {url}: {why} (start it, pass --url, or read a store directly with --state-dir)"
    )]
    Unreachable { url: String, why: String },
    /// The gateway or worker is there but could not answer in time (restarting, failed, busy).
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Failed(String),
}

impl ReportError {
    pub fn exit_code(&self) -> i32 {
        match self {
            ReportError::Usage(_) => EXIT_USAGE,
            ReportError::Unauthorized(_) => EXIT_UNAUTHORIZED,
            ReportError::Unreachable { .. } => EXIT_UNREACHABLE,
            ReportError::Unavailable(_) => EXIT_UNAVAILABLE,
            ReportError::Failed(_) => EXIT_FAILED,
        }
    }
}

/// A finished report: what all three formats print.
#[derive(Debug, Clone)]
pub struct Report {
    pub kind: Kind,
    pub source: Value,
    pub agent: Option<String>,
    pub time_zone: String,
    pub since: Option<String>,
    pub until: Option<String>,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub method: &'static str,
    pub params: Value,
    pub updated_at: Value,
    pub totals: Value,
    pub rows: Vec<Value>,
    /// Rows in all: more than `rows` when `--limit` cut the session list.
    pub rows_total: u64,
    pub warnings: Vec<String>,
    pub diagnostics: Value,
}

impl Report {
    /// The one JSON document (`clawgate.report/v1`).
    pub fn to_json(&self) -> Value {
        json!({
            "schema": SCHEMA,
            "report": self.kind.as_str(),
            "source": self.source,
            "agent": self.agent,
            "timeZone": self.time_zone,
            "since": self.since,
            "until": self.until,
            "startDate": self.start_date,
            "endDate": self.end_date,
            "method": self.method,
            "params": self.params,
            "updatedAt": self.updated_at,
            "totals": self.totals,
            "rows": self.rows,
            "rowsTotal": self.rows_total,
            "warnings": self.warnings,
            "diagnostics": self.diagnostics,
        })
    }

    /// The table's first line: what, whose, when.
    pub fn title(&self) -> String {
        let who = match &self.agent {
            Some(agent) => format!("agent {agent}"),
            None => "all agents".to_owned(),
        };
        let when = match (&self.start_date, &self.end_date) {
            (Some(start), Some(end)) => format!("{start} to {end}"),
            (None, Some(end)) => format!("all time to {end}"),
            _ => "no usage yet".to_owned(),
        };
        format!("clawgate {} report · {who} · {when} ({})", self.kind.as_str(), self.time_zone)
    }

    /// A line under the totals when the rows are not all of them.
    pub fn footnote(&self) -> Option<String> {
        (self.kind == Kind::Session && self.rows_total > self.rows.len() as u64).then(|| {
            format!(
                "The {} most expensive of {} sessions; the total covers all of them (--limit to see more).",
                self.rows.len(),
                render::thousands(self.rows_total)
            )
        })
    }
}

/// `YYYY-MM-DD` or `YYYYMMDD` (ccusage's form).
pub fn parse_date(flag: &str, text: &str) -> Result<Date, ReportError> {
    let text = text.trim();
    let iso = if text.len() == 8 && text.bytes().all(|b| b.is_ascii_digit()) {
        format!("{}-{}-{}", &text[..4], &text[4..6], &text[6..])
    } else {
        text.to_owned()
    };
    iso.parse::<Date>().map_err(|_| {
        ReportError::Usage(format!("--{flag} \"{text}\" is not a date (YYYY-MM-DD or YYYYMMDD)"))
    })
}

/// `--tz` or the system's zone by its IANA name (UTC when it has none): the name and the zone.
pub fn resolve_zone(given: Option<&str>) -> Result<(String, TimeZone), ReportError> {
    match given.map(str::trim).filter(|z| !z.is_empty()) {
        Some(name) => TimeZone::get(name).map(|tz| (name.to_owned(), tz)).map_err(|_| {
            ReportError::Usage(format!("--tz \"{name}\" is not a time zone (e.g. UTC, Europe/Paris)"))
        }),
        None => {
            let system = TimeZone::system();
            match system.iana_name() {
                Some(name) => Ok((name.to_owned(), system.clone())),
                None => Ok(("UTC".to_owned(), TimeZone::UTC)),
            }
        }
    }
}

/// The exact sum of dollar amounts: each rounded once to a multiple of 2^-60 and added as
/// integers, the result rounded once (the worker's own rule for its sums, so a week adds up as
/// the API would have added it, without float drift or dependence on order).
pub fn exact_sum(values: impl IntoIterator<Item = f64>) -> f64 {
    const SCALE: f64 = (1u64 << 60) as f64;
    let units: i128 = values
        .into_iter()
        .filter(|v| v.is_finite())
        .map(|v| (v.clamp(-1e20, 1e20) * SCALE).round() as i128)
        .sum();
    units as f64 / SCALE
}

/// Whether a day row carries anything: days without usage are left out of the rows.
fn has_usage(row: &Value) -> bool {
    let n = render::numbers(row);
    ["totalTokens", "missingCostEntries"].iter().any(|k| n[*k].as_u64().unwrap_or(0) > 0)
        || n["totalCost"].as_f64().unwrap_or(0.0) != 0.0
}

/// Weeks (ISO, Monday first) or months of `usage.cost` days, each with its first and last day
/// in range and the exact sums of its days' numbers.
pub fn sum_days(kind: Kind, daily: &[Value]) -> Vec<Value> {
    let mut groups: Vec<(String, Vec<&Value>)> = Vec::new();
    for day in daily {
        let Some(date) = day["date"].as_str().and_then(|d| d.parse::<Date>().ok()) else { continue };
        let key = match kind {
            Kind::Weekly => {
                let monday = date
                    .checked_sub(jiff::Span::new().days(i64::from(date.weekday().to_monday_zero_offset())))
                    .unwrap_or(date);
                monday.to_string()
            }
            _ => format!("{:04}-{:02}", date.year(), date.month()),
        };
        match groups.last_mut() {
            Some((k, days)) if *k == key => days.push(day),
            _ => groups.push((key, vec![day])),
        }
    }
    let label = if kind == Kind::Weekly { "week" } else { "month" };
    groups
        .into_iter()
        .map(|(key, days)| {
            let mut row = Map::new();
            row.insert(label.to_owned(), json!(key));
            row.insert("startDate".to_owned(), days[0]["date"].clone());
            row.insert("endDate".to_owned(), days[days.len() - 1]["date"].clone());
            for field in render::TOTALS_FIELDS {
                let value = if field.ends_with("Cost") {
                    json!(exact_sum(days.iter().map(|d| d[field].as_f64().unwrap_or(0.0))))
                } else {
                    json!(days.iter().map(|d| d[field].as_u64().unwrap_or(0)).sum::<u64>())
                };
                row.insert(field.to_owned(), value);
            }
            Value::Object(row)
        })
        .collect()
}

/// A `sessions.usage` row cut to what a report shows, its figures exactly the API's.
fn session_row(session: &Value) -> Value {
    let usage = &session["usage"];
    let mut row = Map::new();
    for key in ["key", "label", "sessionId", "agentId", "channel", "modelProvider", "model", "updatedAt"] {
        if let Some(v) = session.get(key).filter(|v| !v.is_null()) {
            row.insert(key.to_owned(), v.clone());
        }
    }
    for key in ["firstActivity", "lastActivity"] {
        row.insert(key.to_owned(), usage.get(key).cloned().unwrap_or(Value::Null));
    }
    row.insert("messages".to_owned(), usage["messageCounts"]["total"].clone());
    for field in render::TOTALS_FIELDS {
        row.insert(field.to_owned(), usage.get(field).cloned().unwrap_or(json!(0)));
    }
    Value::Object(row)
}

/// Scope, zone and range as OpenClaw params (clawgate's `timeZone`, OpenClaw's dates).
fn base_params(agent: Option<&str>, zone: &str) -> Map<String, Value> {
    let mut params = Map::new();
    match agent {
        Some(agent) => params.insert("agentId".to_owned(), json!(agent)),
        None => params.insert("agentScope".to_owned(), json!("all")),
    };
    params.insert("timeZone".to_owned(), json!(zone));
    params
}

/// Makes the report: resolves the range, asks the source, shapes the rows.
pub fn build(given: &Given, source: &mut Source, deadline: Instant) -> Result<Report, ReportError> {
    let since = given.since.as_deref().map(|s| parse_date("since", s)).transpose()?;
    let until = given.until.as_deref().map(|s| parse_date("until", s)).transpose()?;
    if let (Some(since), Some(until)) = (since, until) {
        if until < since {
            return Err(ReportError::Usage(format!("--until {until} is before --since {since}")));
        }
    }
    let agent = given.agent.as_deref().map(str::trim).filter(|a| !a.is_empty());
    let (zone_name, zone) = resolve_zone(given.tz.as_deref())?;
    let today = zone.to_datetime(Timestamp::now()).date();
    let mut params = base_params(agent, &zone_name);
    match (since, until) {
        (Some(since), until) => {
            params.insert("startDate".to_owned(), json!(since.to_string()));
            params.insert("endDate".to_owned(), json!(until.unwrap_or(today.max(since)).to_string()));
        }
        (None, Some(until)) => {
            // From the first day with usage: `usage.cost` over all time starts there.
            let mut probe = base_params(agent, &zone_name);
            probe.insert("range".to_owned(), json!("all"));
            let all = source.fetch("usage.cost", &Value::Object(probe), deadline)?;
            let first = all["daily"]
                .as_array()
                .and_then(|d| d.first())
                .and_then(|d| d["date"].as_str())
                .and_then(|d| d.parse::<Date>().ok())
                .unwrap_or(until);
            params.insert("startDate".to_owned(), json!(first.min(until).to_string()));
            params.insert("endDate".to_owned(), json!(until.to_string()));
        }
        (None, None) => {
            params.insert("range".to_owned(), json!("all"));
        }
    }
    let method = given.kind.method();
    match given.kind {
        Kind::Session => {
            params.insert("limit".to_owned(), json!(given.limit.max(1)));
            params.insert("sortBy".to_owned(), json!("cost"));
            params.insert("sortDir".to_owned(), json!("desc"));
        }
        Kind::Model | Kind::Agent => {
            // `totals` and `aggregates` cover every session whatever the limit.
            params.insert("limit".to_owned(), json!(1));
        }
        _ => {}
    }
    let params = Value::Object(params);
    let payload = source.fetch(method, &params, deadline)?;

    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let (rows, rows_total, start_date, end_date) = match given.kind {
        Kind::Daily | Kind::Weekly | Kind::Monthly => {
            let daily = list(&payload["daily"]);
            let start = daily.first().and_then(|d| d["date"].as_str()).map(str::to_owned);
            let end = daily.last().and_then(|d| d["date"].as_str()).map(str::to_owned);
            let rows: Vec<Value> = match given.kind {
                Kind::Daily => daily.into_iter().filter(has_usage).collect(),
                kind => sum_days(kind, &daily).into_iter().filter(has_usage).collect(),
            };
            let n = rows.len() as u64;
            (rows, n, start, end)
        }
        kind => {
            let rows: Vec<Value> = match kind {
                Kind::Session => list(&payload["sessions"]).iter().map(session_row).collect(),
                Kind::Model => list(&payload["aggregates"]["byModel"]),
                _ => list(&payload["aggregates"]["byAgent"]),
            };
            let total = match kind {
                Kind::Session => payload["page"]["total"].as_u64().unwrap_or(rows.len() as u64),
                _ => rows.len() as u64,
            };
            // Over all time `sessions.usage` starts at the epoch: say "all time" instead.
            let start = payload["startDate"].as_str().filter(|_| params.get("range").is_none());
            let end = payload["endDate"].as_str().map(str::to_owned);
            (rows, total, start.map(str::to_owned), end)
        }
    };

    let mut warnings = Vec::new();
    let diagnostics = payload.get("diagnostics").cloned().unwrap_or(Value::Null);
    if agent.is_none() && diagnostics["agents"].as_u64() == Some(0) {
        let dir = source
            .state_dir()
            .map_or_else(|| "the gateway's state directory".to_owned(), |d| d.display().to_string());
        warnings.push(format!("no OpenClaw agents found in {dir}: every figure is zero"));
    } else if let Some(agent) = agent.filter(|_| diagnostics["files"].as_u64() == Some(0)) {
        warnings.push(format!(
            "agent \"{agent}\" has no transcripts (`clawgate report agent` lists the agents with usage)"
        ));
    }
    if let Some(status) = payload["cacheStatus"]["status"].as_str().filter(|s| *s != "fresh") {
        warnings.push(format!(
            "figures are {status}: the worker had not read every transcript when it answered ({} pending)",
            payload["cacheStatus"]["pendingFiles"]
        ));
    }
    let missing = payload["totals"]["missingCostEntries"].as_u64().unwrap_or(0);
    if missing > 0 {
        warnings.push(format!(
            "{} messages have no price (neither a stored cost nor a models.json entry): their cost is not counted",
            render::thousands(missing)
        ));
    }
    let skipped: u64 =
        ["malformedJsonLines", "invalidUtf8Lines", "nulByteLines", "oversizeLines", "undecodableRows"]
            .iter()
            .filter_map(|k| diagnostics[*k].as_u64())
            .sum();
    if skipped > 0 {
        warnings.push(format!(
            "{} transcript lines were skipped as unreadable (see diagnostics in --json)",
            render::thousands(skipped)
        ));
    }

    Ok(Report {
        kind: given.kind,
        source: source.describe(),
        agent: agent.map(str::to_owned),
        time_zone: zone_name,
        since: since.map(|d| d.to_string()),
        until: until.map(|d| d.to_string()),
        start_date,
        end_date,
        method,
        params,
        updated_at: payload.get("updatedAt").cloned().unwrap_or(Value::Null),
        totals: payload.get("totals").cloned().unwrap_or(json!({})),
        rows,
        rows_total,
        warnings,
        diagnostics,
    })
}

/// Colour on stdout: only on a terminal, never with `NO_COLOR` set (no-color.org).
fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The source the flags ask for: `--state-dir` reads the store itself, anything else asks a
/// gateway.
fn open_source(given: &Given, warnings: &mut Vec<String>) -> Result<Source, ReportError> {
    let progress = progress::Progress::new(source::stderr_is_terminal() && given.format == Format::Table);
    let Some(state_dir) = &given.state_dir else {
        let opts = cli_status::Options::resolve(cli_status::Given {
            url: given.url.clone(),
            token: given.token.clone(),
            env_file: given.env_file.clone(),
            timeout: given.timeout,
            deep: false,
            json: false,
        })
        .map_err(ReportError::Usage)?;
        return Ok(Source::Gateway(GatewaySource { opts, progress }));
    };
    let state_dir = std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.clone());
    let data_dir = given.data_dir.clone().unwrap_or_else(crate::config::default_data_dir);
    let cache = source::report_cache_dir(&data_dir, &state_dir);
    let cache = match std::fs::create_dir_all(&cache) {
        Ok(()) => Some(cache),
        Err(e) => {
            warnings.push(format!(
                "cannot keep rollups in {} ({e}): this report read every transcript, and so will the next",
                cache.display()
            ));
            None
        }
    };
    let worker_bin = given.worker_bin.clone().unwrap_or_else(crate::config::default_worker_bin);
    StateDirSource::start(state_dir, cache, worker_bin, progress).map(|s| Source::StateDir(Box::new(s)))
}

/// Runs the command: prints the report (or the error on stderr) and returns the exit code.
pub fn run(given: Given) -> i32 {
    let deadline = Instant::now() + given.timeout;
    let mut early_warnings = Vec::new();
    let mut source = match open_source(&given, &mut early_warnings) {
        Ok(source) => source,
        Err(error) => {
            eprintln!("clawgate report: {error}");
            return error.exit_code();
        }
    };
    let made = build(&given, &mut source, deadline);
    // The worker is told to stop now and reaped after the report is out: a worker that has just
    // read a store cold finishes its index on the way out (the deferred indexes, the WAL
    // checkpoint: ~0.5-0.9 s of a 54,000-session store), which the next report gains from but
    // nobody needs to wait for to read this one.
    let stopping = match source {
        Source::StateDir(s) => Some(s.stop()),
        Source::Gateway(_) => None,
    };
    let code = match made {
        Ok(mut report) => {
            report.warnings.splice(0..0, early_warnings);
            print(&given, &report);
            EXIT_OK
        }
        Err(error) => {
            eprintln!("clawgate report: {error}");
            error.exit_code()
        }
    };
    if let Some(stopping) = stopping {
        stopping.wait();
    }
    code
}

/// Writes the report on stdout in the format asked for (warnings on stderr, or in the table).
fn print(given: &Given, report: &Report) {
    let text = match given.format {
        Format::Json => serde_json::to_string_pretty(&report.to_json()).unwrap_or_default() + "\n",
        Format::Csv => render::csv(report),
        Format::Table => render::table(report, colour()),
    };
    if given.format != Format::Table {
        for warning in &report.warnings {
            eprintln!("clawgate report: warning: {warning}");
        }
    }
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(date: &str, tokens: u64, cost: f64) -> Value {
        json!({"date": date, "input": tokens, "output": 0, "cacheRead": 0, "cacheWrite": 0, "totalTokens": tokens,
               "totalCost": cost, "inputCost": cost, "outputCost": 0, "cacheReadCost": 0, "cacheWriteCost": 0,
               "missingCostEntries": 0})
    }

    #[test]
    fn dates_take_both_forms() {
        assert_eq!(parse_date("since", "2026-05-04").unwrap().to_string(), "2026-05-04");
        assert_eq!(parse_date("since", "20260504").unwrap().to_string(), "2026-05-04");
        let err = parse_date("until", "May 4").unwrap_err();
        assert_eq!(err.exit_code(), EXIT_USAGE);
        assert!(err.to_string().contains("--until \"May 4\""), "{err}");
        assert!(parse_date("since", "2026-02-30").is_err());
    }

    #[test]
    fn zones_are_checked() {
        assert_eq!(resolve_zone(Some("Europe/Paris")).unwrap().0, "Europe/Paris");
        assert_eq!(resolve_zone(Some("UTC")).unwrap().0, "UTC");
        assert_eq!(resolve_zone(Some("Mars/Olympus")).unwrap_err().exit_code(), EXIT_USAGE);
        assert!(!resolve_zone(None).unwrap().0.is_empty());
    }

    #[test]
    fn weeks_start_on_monday_and_sum_exactly() {
        // 2026-05-03 is a Sunday; 2026-05-04 a Monday.
        let days = [
            day("2026-05-03", 1, 0.1),
            day("2026-05-04", 2, 0.2),
            day("2026-05-10", 3, 0.1),
            day("2026-05-11", 4, 0.7),
        ];
        let weeks = sum_days(Kind::Weekly, &days);
        let keys: Vec<&str> = weeks.iter().map(|w| w["week"].as_str().unwrap()).collect();
        assert_eq!(keys, ["2026-04-27", "2026-05-04", "2026-05-11"]);
        assert_eq!(
            (weeks[1]["startDate"].as_str(), weeks[1]["endDate"].as_str()),
            (Some("2026-05-04"), Some("2026-05-10"))
        );
        assert_eq!(weeks[1]["totalTokens"], 5);
        assert_eq!(weeks[1]["totalCost"].as_f64(), Some(exact_sum([0.2, 0.1])));
        let months = sum_days(Kind::Monthly, &days);
        assert_eq!(months.len(), 1);
        assert_eq!(months[0]["month"], "2026-05");
        assert_eq!(months[0]["totalTokens"], 10);
        assert_eq!(months[0]["missingCostEntries"], 0);
        assert_eq!(months[0]["startDate"], "2026-05-03");
    }

    #[test]
    fn exact_sums_do_not_depend_on_order() {
        let values: Vec<f64> = (0..1000).map(|i| f64::from(i % 97) * 0.013_7 + 1e-9).collect();
        let forward = exact_sum(values.iter().copied());
        let backward = exact_sum(values.iter().rev().copied());
        assert_eq!(forward.to_bits(), backward.to_bits());
        // Rounded once: a naive running sum loses the 1 here.
        assert_eq!(exact_sum([1e16, 1.0, -1e16]), 1.0);
        assert_eq!(exact_sum([0.1, 0.2]), 0.1 + 0.2, "a single addition is already correctly rounded");
        assert_eq!(exact_sum([f64::NAN, 1.5]), 1.5);
    }

    #[test]
    fn days_without_usage_are_not_rows() {
        assert!(!has_usage(&day("2026-05-03", 0, 0.0)));
        assert!(has_usage(&day("2026-05-03", 0, 0.5)));
        let mut missing = day("2026-05-03", 0, 0.0);
        missing["missingCostEntries"] = json!(2);
        assert!(has_usage(&missing));
        assert!(has_usage(&json!({"agentId": "main", "totals": {"totalTokens": 3}})));
    }

    #[test]
    fn sessions_keep_the_apis_figures() {
        let session = json!({"key": "agent:main:x", "agentId": "main", "model": "m", "label": null, "origin": {"x": 1},
            "usage": {"totalTokens": 7, "totalCost": 0.1234567890123, "messageCounts": {"total": 4}, "lastActivity": 5,
                      "dailyBreakdown": [1, 2, 3]}});
        let row = session_row(&session);
        assert_eq!(row["totalCost"].as_f64(), Some(0.1234567890123));
        assert_eq!(row["messages"], 4);
        assert_eq!(row["lastActivity"], 5);
        assert!(
            row.get("label").is_none() && row.get("origin").is_none() && row.get("dailyBreakdown").is_none()
        );
        assert_eq!(row["inputCost"], 0, "a field the API left out reads as 0");
    }
}
