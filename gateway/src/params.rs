//! OpenClaw method params → a validated [`UsageQuery`].
//!
//! The gateway validates here so that bad params get a clear `INVALID_REQUEST` at once, without
//! a round trip to the worker, and so equal requests normalise to equal queries.
//! Date rules follow OpenClaw (REFERENCE §3.2): both dates → that range; else `range`; else
//! `days` (`usage.cost`); else the last 30 days ending today. Ranges are whole days in the
//! chosen zone (`mode`: `utc` default, `gateway` = this host's zone, `specific` + `utcOffset`,
//! or an IANA `timeZone`). An IANA zone is applied with its offset at the end of the range;
//! a DST change inside the range shifts day cuts there by the DST step (documented limitation).

use ipc_proto::{AgentScope, DayZone, GroupBy, Method, RowSort, SortKey, UsageQuery};

use crate::limits::MAX_STRING_PARAM_BYTES;
use jiff::{Timestamp, civil::Date, tz::TimeZone};
use serde_json::{Map, Value};

/// A param problem, worded for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParamsError {
    pub message: String,
    /// A param over the request-size contract (`limits`): HTTP 413 rather than 400.
    pub too_large: bool,
}

impl ParamsError {
    fn new(message: impl Into<String>) -> ParamsError {
        ParamsError { message: message.into(), too_large: false }
    }
}

const DAY_MS: i64 = 86_400_000;
/// The most rows a `limit` may ask for; larger values are clamped, keeping answers bounded.
pub const MAX_LIMIT: u32 = 100_000;

fn invalid(method: Method, detail: impl std::fmt::Display) -> ParamsError {
    ParamsError::new(format!("invalid {} params: {detail}", method.name()))
}

/// A name as shown in an error message: client text, so cut short.
pub fn shown(name: &str) -> String {
    match name.char_indices().nth(64) {
        Some((at, _)) => format!("{}…", &name[..at]),
        None => name.to_owned(),
    }
}

/// The request-size contract for params (see `limits`): no property name or string value longer
/// than [`MAX_STRING_PARAM_BYTES`]. Checked first, so no later message echoes a huge string.
pub fn check_sizes(method: &str, obj: &Map<String, Value>) -> Result<(), ParamsError> {
    for (name, value) in obj {
        let long_value = matches!(value, Value::String(v) if v.len() > MAX_STRING_PARAM_BYTES);
        if name.len() > MAX_STRING_PARAM_BYTES || long_value {
            return Err(ParamsError {
                message: format!(
                    "invalid {method} params: {} is longer than {MAX_STRING_PARAM_BYTES} bytes",
                    shown(name)
                ),
                too_large: true,
            });
        }
    }
    Ok(())
}

/// Builds the query for `method` from its JSON params (`null` counts as `{}`).
pub fn parse(method: Method, params: &Value, now: Timestamp) -> Result<UsageQuery, ParamsError> {
    let empty = Map::new();
    let obj = match params {
        Value::Null => &empty,
        Value::Object(obj) => obj,
        _ => return Err(invalid(method, "params must be an object")),
    };
    check_sizes(method.name(), obj)?;
    let allowed: &[&str] = match method {
        Method::SessionsUsage => &[
            "key",
            "agentId",
            "agentScope",
            "creatorKey",
            "startDate",
            "endDate",
            "mode",
            "range",
            "groupBy",
            "includeHistorical",
            "utcOffset",
            "timeZone",
            "limit",
            "includeContextWeight",
            // clawgate's paging (additive; OpenClaw's clients never send them).
            "offset",
            "sortBy",
            "sortDir",
            "search",
            // clawgate's `sessions.list` page (entry rows only, no totals).
            "entriesOnly",
        ],
        Method::UsageCost => &[
            "agentId",
            "agentScope",
            "startDate",
            "endDate",
            "days",
            "mode",
            "range",
            "utcOffset",
            "timeZone",
        ],
        Method::SessionsUsageTimeseries => &["key", "agentId"],
        Method::SessionsUsageLogs => &["key", "agentId", "limit"],
    };
    // OpenClaw validates `usage.cost` params by hand (unknown ones are ignored) and the others
    // against closed schemas (ajv's wording).
    if method != Method::UsageCost
        && let Some(unknown) = obj.keys().find(|k| !allowed.contains(&k.as_str()))
    {
        return Err(invalid(method, format!("at root: unexpected property '{}'", shown(unknown))));
    }
    let key = opt_str(method, obj, "key")?;
    let agent_id = opt_str(method, obj, "agentId")?;
    let agent_scope = opt_str(method, obj, "agentScope")?;
    let agents = match agent_scope.as_deref() {
        Some("all") => {
            if key.is_some() || agent_id.is_some() {
                return Err(ParamsError::new("agentScope=all cannot be combined with key or agentId"));
            }
            AgentScope::All
        }
        Some(_) => return Err(invalid(method, "at /agentScope: must be equal to constant")),
        None => {
            let key_agent = key.as_deref().and_then(agent_of_key);
            if let (Some(a), Some(k)) = (&agent_id, &key_agent) {
                if normalize_agent_id(a) != *k {
                    return Err(ParamsError::new(format!(
                        "agent \"{}\" does not match session key agent \"{}\"",
                        shown(&normalize_agent_id(a)),
                        shown(k)
                    )));
                }
            }
            AgentScope::One(
                agent_id.map(|a| normalize_agent_id(&a)).or(key_agent).unwrap_or_else(|| "main".into()),
            )
        }
    };
    if matches!(method, Method::SessionsUsageTimeseries | Method::SessionsUsageLogs) && key.is_none() {
        let what = if method == Method::SessionsUsageLogs { "logs" } else { "timeseries" };
        return Err(ParamsError::new(format!("key is required for {what}")));
    }
    let limit = match obj.get("limit") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => match n.as_u64() {
            Some(v) if v >= 1 => Some(v.min(u64::from(MAX_LIMIT)) as u32),
            _ => return Err(invalid(method, "at /limit: must be >= 1")),
        },
        Some(_) => return Err(invalid(method, "at /limit: must be integer")),
    };
    let include_historical = opt_bool(method, obj, "includeHistorical")?.unwrap_or(false);
    let group_by = match opt_str(method, obj, "groupBy")?.as_deref() {
        None => {
            if include_historical {
                GroupBy::Family
            } else {
                GroupBy::Instance
            }
        }
        Some("instance") => GroupBy::Instance,
        Some("family") => GroupBy::Family,
        Some(other) => {
            return Err(invalid(
                method,
                format!("groupBy must be instance or family, got \"{}\"", shown(other)),
            ));
        }
    };
    let include_context_weight = opt_bool(method, obj, "includeContextWeight")?.unwrap_or(false);
    // Stores carry no creator metadata, so every session's creator is `["unknown"]`: any
    // other `creatorKey` selects no session, which OpenClaw answers with an empty result (an
    // empty agent scope gives exactly that).
    let creator_key = opt_str(method, obj, "creatorKey")?;
    let agents = match creator_key.as_deref() {
        Some(k) if k != UNKNOWN_CREATOR => AgentScope::One(String::new()),
        _ => agents,
    };
    let (offset, sort, search) = parse_paging(method, obj)?;
    let entries_only = opt_bool(method, obj, "entriesOnly")?.unwrap_or(false);

    let (zone_offset_min, day_zone) = parse_zone(method, obj, now)?;
    let (start_ms, end_ms) = parse_range(method, obj, now, zone_offset_min)?;
    Ok(UsageQuery {
        method,
        start_ms,
        end_ms,
        agents,
        key,
        limit,
        group_by,
        day_zone,
        include_context_weight,
        offset,
        sort,
        search,
        entries_only,
    })
}

/// OpenClaw's agent id normalisation, as far as usage needs it: trimmed, lowercase.
pub fn normalize_agent_id(id: &str) -> String {
    let id = id.trim().to_ascii_lowercase();
    if id.is_empty() { "main".into() } else { id }
}

/// `agent:<id>:...` → `<id>`.
fn agent_of_key(key: &str) -> Option<String> {
    let rest = key.strip_prefix("agent:")?;
    let (agent, _) = rest.split_once(':')?;
    Some(normalize_agent_id(agent))
}

/// The one creator key sessions have (no store records a creator).
const UNKNOWN_CREATOR: &str = "[\"unknown\"]";

/// The longest `search` text accepted.
pub const MAX_SEARCH: usize = 200;

/// clawgate's additive paging params of `sessions.usage`: `offset` (rows skipped, default 0),
/// `sortBy` (`cost`, `tokens`, `messages` or `updatedAt`; default OpenClaw's order, most
/// recently updated first), `sortDir` (`desc` default, or `asc`) and `search` (rows whose key,
/// label, session id, agent, channel or model contain every term).
type Paging = (Option<u32>, Option<RowSort>, Option<String>);

fn parse_paging(method: Method, obj: &Map<String, Value>) -> Result<Paging, ParamsError> {
    let offset = match obj.get("offset") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) => Some(n.min(u64::from(u32::MAX)) as u32),
            None => return Err(invalid(method, "offset must be an integer >= 0")),
        },
    };
    let key = match opt_str(method, obj, "sortBy")?.as_deref() {
        None => None,
        Some("cost") => Some(SortKey::Cost),
        Some("tokens") => Some(SortKey::Tokens),
        Some("messages") => Some(SortKey::Messages),
        Some("updatedAt") => Some(SortKey::UpdatedAt),
        Some(other) => {
            return Err(invalid(
                method,
                format!("sortBy must be cost, tokens, messages or updatedAt, got \"{}\"", shown(other)),
            ));
        }
    };
    let descending = match opt_str(method, obj, "sortDir")?.as_deref() {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(other) => {
            return Err(invalid(method, format!("sortDir must be asc or desc, got \"{}\"", shown(other))));
        }
    };
    let sort = match key {
        None if !descending => Some(RowSort { key: SortKey::UpdatedAt, descending }),
        None => None,
        Some(key) => Some(RowSort { key, descending }),
    };
    let search = opt_str(method, obj, "search")?;
    if search.as_ref().is_some_and(|s| s.len() > MAX_SEARCH) {
        return Err(invalid(method, format!("search must be at most {MAX_SEARCH} bytes")));
    }
    Ok((offset, sort, search))
}

fn opt_str(method: Method, obj: &Map<String, Value>, name: &str) -> Result<Option<String>, ParamsError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
        Some(_) => Err(invalid(method, format!("{name} must be a string"))),
    }
}

fn opt_bool(method: Method, obj: &Map<String, Value>, name: &str) -> Result<Option<bool>, ParamsError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(invalid(method, format!("{name} must be a boolean"))),
    }
}

/// The zone used for range cuts (as an offset in minutes at `now`) and for day keys, as
/// OpenClaw's `resolveDateInterpretation`: `timeZone` and `utcOffset` are read only under
/// `mode: "specific"` (a valid `timeZone` first, an invalid one falls back to a valid
/// `utcOffset`); `specific` with neither, and no `mode`, are UTC.
fn parse_zone(
    method: Method,
    obj: &Map<String, Value>,
    now: Timestamp,
) -> Result<(i32, DayZone), ParamsError> {
    let mode = opt_str(method, obj, "mode")?;
    match mode.as_deref() {
        None | Some("utc") => Ok((0, DayZone::Utc)),
        Some("gateway") => {
            let minutes = TimeZone::system().to_offset(now).seconds() / 60;
            Ok((minutes, zone_of(minutes)))
        }
        Some("specific") => {
            let offset_text = match obj.get("utcOffset") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.trim().to_owned()),
                Some(_) => return Err(ParamsError::new(BAD_OFFSET)),
            };
            let offset = offset_text.as_deref().and_then(parse_utc_offset);
            if let Some(name) = opt_str(method, obj, "timeZone")? {
                if let Ok(tz) = TimeZone::get(&name) {
                    let minutes = tz.to_offset(now).seconds() / 60;
                    return Ok((minutes, zone_of(minutes)));
                }
                return match offset {
                    Some(minutes) => Ok((minutes, zone_of(minutes))),
                    None => Err(ParamsError::new("invalid timeZone: expected a valid IANA time zone")),
                };
            }
            match (offset, offset_text.as_deref()) {
                (Some(minutes), _) => Ok((minutes, zone_of(minutes))),
                (None, None | Some("")) => Ok((0, DayZone::Utc)),
                (None, Some(_)) => Err(ParamsError::new(BAD_OFFSET)),
            }
        }
        Some(_) => Err(invalid(method, "at /mode: must be equal to one of the allowed values")),
    }
}

const BAD_OFFSET: &str = "invalid utcOffset: expected UTC-12:00 through UTC+14:00";

fn zone_of(minutes: i32) -> DayZone {
    if minutes == 0 { DayZone::Utc } else { DayZone::FixedOffsetMinutes(minutes) }
}

/// `UTC+5:30` → 330; OpenClaw's `^UTC[+-]H{1,2}(:MM)?$`, within -12:00..+14:00.
pub fn parse_utc_offset(text: &str) -> Option<i32> {
    let rest = text.strip_prefix("UTC")?;
    let (sign, rest) = match rest.as_bytes().first()? {
        b'+' => (1, &rest[1..]),
        b'-' => (-1, &rest[1..]),
        _ => return None,
    };
    let (hours, minutes) = match rest.split_once(':') {
        Some((h, m)) => (h, Some(m)),
        None => (rest, None),
    };
    if hours.is_empty() || hours.len() > 2 || !hours.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: i32 = hours.parse().ok()?;
    let minutes: i32 = match minutes {
        Some(m) if m.len() == 2 && m.bytes().all(|b| b.is_ascii_digit()) => m.parse().ok()?,
        Some(_) => return None,
        None => 0,
    };
    if minutes >= 60 {
        return None;
    }
    let total = sign * (hours * 60 + minutes);
    (-12 * 60..=14 * 60).contains(&total).then_some(total)
}

fn parse_date(text: &str) -> Option<Date> {
    if text.len() != 10 {
        return None;
    }
    text.parse::<Date>().ok()
}

/// Midnight starting `date` in a zone `offset_min` east of UTC, as epoch ms.
fn day_start_ms(date: Date, offset_min: i32) -> i64 {
    let days = i64::from(date.since(Date::constant(1970, 1, 1)).map(|s| s.get_days()).unwrap_or(0));
    days * DAY_MS - i64::from(offset_min) * 60_000
}

fn parse_range(
    method: Method,
    obj: &Map<String, Value>,
    now: Timestamp,
    offset_min: i32,
) -> Result<(i64, i64), ParamsError> {
    let now_ms = now.as_millisecond();
    let local_today = Timestamp::from_millisecond(now_ms + i64::from(offset_min) * 60_000)
        .map(|t| TimeZone::UTC.to_datetime(t).date())
        .map_err(|e| ParamsError::new(e.to_string()))?;
    let today_start = day_start_ms(local_today, offset_min);
    let end_of_today = today_start + DAY_MS - 1;
    let start_date = opt_str(method, obj, "startDate")?;
    let end_date = opt_str(method, obj, "endDate")?;
    for (name, value) in [("startDate", &start_date), ("endDate", &end_date)] {
        if let Some(v) = value {
            if parse_date(v).is_none() {
                return Err(ParamsError::new(format!(
                    "invalid {name}: expected a valid YYYY-MM-DD calendar date"
                )));
            }
        }
    }
    match (start_date.as_deref().and_then(parse_date), end_date.as_deref().and_then(parse_date)) {
        (Some(start), Some(end)) => {
            let start_ms = day_start_ms(start, offset_min);
            let end_ms = day_start_ms(end, offset_min) + DAY_MS - 1;
            if end_ms < start_ms {
                return Err(ParamsError::new("startDate must not be after endDate"));
            }
            return Ok((start_ms, end_ms));
        }
        (None, None) => {}
        _ => return Err(ParamsError::new("startDate and endDate must be provided together")),
    }
    if let Some(range) = opt_str(method, obj, "range")? {
        let days = match range.as_str() {
            "7d" => 7,
            "30d" => 30,
            "90d" => 90,
            "1y" => 365,
            "all" => return Ok((0, end_of_today)),
            _ => {
                return Err(invalid(
                    method,
                    "at /range: must be equal to constant; at /range: must match a schema in anyOf",
                ));
            }
        };
        return Ok((today_start - (days - 1) * DAY_MS, end_of_today));
    }
    if let Some(days) = obj.get("days") {
        let days = match days {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        }
        .filter(|d| d.is_finite() && *d >= 1.0)
        .ok_or_else(|| invalid(method, "days must be a number >= 1"))?;
        let days = (days.floor() as i64).min(36_500);
        return Ok((today_start - (days - 1) * DAY_MS, end_of_today));
    }
    Ok((today_start - 29 * DAY_MS, end_of_today))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2026-11-29T17:00:00Z".parse().unwrap()
    }

    fn q(method: Method, params: Value) -> Result<UsageQuery, ParamsError> {
        parse(method, &params, now())
    }

    #[test]
    fn explicit_dates_are_whole_utc_days() {
        let query = q(
            Method::SessionsUsage,
            json!({"startDate":"2026-11-01","endDate":"2026-11-02","agentScope":"all"}),
        )
        .unwrap();
        assert_eq!(query.start_ms, 1_793_491_200_000);
        assert_eq!(query.end_ms, 1_793_491_200_000 + 2 * DAY_MS - 1);
        assert_eq!(query.agents, AgentScope::All);
        assert_eq!(query.day_zone, DayZone::Utc);
    }

    #[test]
    fn specific_offset_shifts_the_cut() {
        let query = q(
            Method::UsageCost,
            json!({"startDate":"2026-11-01","endDate":"2026-11-01","mode":"specific","utcOffset":"UTC+5:30"}),
        )
        .unwrap();
        assert_eq!(query.start_ms, 1_793_491_200_000 - 330 * 60_000);
        assert_eq!(query.day_zone, DayZone::FixedOffsetMinutes(330));
        assert_eq!(query.agents, AgentScope::One("main".into()));
    }

    #[test]
    fn defaults_and_ranges() {
        let today_start = 1_793_491_200_000 + 28 * DAY_MS; // 2026-11-29
        let default = q(Method::SessionsUsage, json!({})).unwrap();
        assert_eq!(default.start_ms, today_start - 29 * DAY_MS);
        assert_eq!(default.end_ms, today_start + DAY_MS - 1);
        let week = q(Method::SessionsUsage, json!({"range":"7d"})).unwrap();
        assert_eq!(week.start_ms, today_start - 6 * DAY_MS);
        let all = q(Method::UsageCost, json!({"range":"all"})).unwrap();
        assert_eq!(all.start_ms, 0);
        let days = q(Method::UsageCost, json!({"days":"3"})).unwrap();
        assert_eq!(days.start_ms, today_start - 2 * DAY_MS);
    }

    #[test]
    fn bad_params_are_explained_in_openclaws_words() {
        let cases = [
            (json!({"limit":0}), "invalid sessions.usage params: at /limit: must be >= 1"),
            (json!({"limit":"5"}), "invalid sessions.usage params: at /limit: must be integer"),
            (json!({"bogus":1}), "invalid sessions.usage params: at root: unexpected property 'bogus'"),
            (
                json!({"startDate":"2026-13-01","endDate":"2026-11-01"}),
                "invalid startDate: expected a valid YYYY-MM-DD calendar date",
            ),
            (json!({"startDate":"2026-11-02","endDate":"2026-11-01"}), "startDate must not be after endDate"),
            (json!({"startDate":"2026-11-02"}), "startDate and endDate must be provided together"),
            (json!({"endDate":"2026-11-02"}), "startDate and endDate must be provided together"),
            (
                json!({"mode":"specific","utcOffset":"UTC+15"}),
                "invalid utcOffset: expected UTC-12:00 through UTC+14:00",
            ),
            (
                json!({"mode":"specific","timeZone":"Mars/Olympus"}),
                "invalid timeZone: expected a valid IANA time zone",
            ),
            (
                json!({"agentScope":"all","agentId":"main"}),
                "agentScope=all cannot be combined with key or agentId",
            ),
            (
                json!({"agentScope":"some"}),
                "invalid sessions.usage params: at /agentScope: must be equal to constant",
            ),
            (json!([1, 2]), "invalid sessions.usage params: params must be an object"),
            (
                json!({"key":"agent:a1:main","agentId":"main"}),
                "agent \"main\" does not match session key agent \"a1\"",
            ),
        ];
        for (params, message) in cases {
            let err = q(Method::SessionsUsage, params.clone()).unwrap_err();
            assert_eq!(err.message, message, "{params}");
        }
        let err = q(Method::SessionsUsageLogs, json!({})).unwrap_err();
        assert_eq!(err.message, "key is required for logs");
        // usage.cost ignores what it does not know, as OpenClaw's hand validation does.
        assert!(q(Method::UsageCost, json!({"range":"all","bogus":1})).is_ok());
    }

    /// A refused value is echoed short, however long (up to the 512-byte string bound) it is.
    #[test]
    fn refusals_echo_at_most_a_short_piece_of_a_value() {
        let long = "k".repeat(MAX_STRING_PARAM_BYTES);
        let other = format!("agent:{}:main", "k".repeat(400));
        for (method, params) in [
            (Method::UsageCost, json!({"groupBy": long})),
            (Method::SessionsUsage, json!({"sortBy": long})),
            (Method::SessionsUsage, json!({"sortDir": long})),
            (Method::SessionsUsage, json!({"key": other, "agentId": "main"})),
            (Method::SessionsUsage, json!({"key": "agent:a:main", "agentId": long})),
        ] {
            let message = q(method, params.clone()).unwrap_err().message;
            assert!(message.len() < 200, "{params}: {message}");
            assert!(message.contains("kkkk") && message.contains('…'), "{params}: {message}");
        }
    }

    #[test]
    fn zones_apply_only_in_specific_mode() {
        let day = json!({"startDate":"2026-11-01","endDate":"2026-11-01"});
        let with = |extra: Value| {
            let mut p = day.clone();
            p.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            q(Method::SessionsUsage, p).unwrap()
        };
        let utc = with(json!({}));
        assert_eq!(utc.day_zone, DayZone::Utc);
        // Without mode OpenClaw ignores timeZone and utcOffset.
        assert_eq!(with(json!({"timeZone":"Asia/Kolkata","utcOffset":"UTC+1"})).start_ms, utc.start_ms);
        assert_eq!(with(json!({"mode":"specific"})).day_zone, DayZone::Utc);
        assert_eq!(
            with(json!({"mode":"specific","timeZone":"Asia/Kolkata"})).day_zone,
            DayZone::FixedOffsetMinutes(330)
        );
        // An invalid zone falls back to a valid offset.
        let fallback = with(json!({"mode":"specific","timeZone":"Mars/Olympus","utcOffset":"UTC-8"}));
        assert_eq!(fallback.day_zone, DayZone::FixedOffsetMinutes(-480));
    }

    #[test]
    fn key_selects_its_agent_and_limit_clamps() {
        let query = q(Method::SessionsUsage, json!({"key":"agent:Agent1:main","limit":10_000_000})).unwrap();
        assert_eq!(query.agents, AgentScope::One("agent1".into()));
        assert_eq!(query.limit, Some(MAX_LIMIT));
    }

    #[test]
    fn utc_offsets() {
        assert_eq!(parse_utc_offset("UTC+5:30"), Some(330));
        assert_eq!(parse_utc_offset("UTC-12"), Some(-720));
        assert_eq!(parse_utc_offset("UTC+14:00"), Some(840));
        assert_eq!(parse_utc_offset("UTC+14:01"), None);
        assert_eq!(parse_utc_offset("GMT+1"), None);
        assert_eq!(parse_utc_offset("UTC+1:5"), None);
    }
}
