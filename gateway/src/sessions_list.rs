//! `sessions.list` (the Control UI's sidebar) in OpenClaw 2026.9.6's shape, built on one page of
//! `sessions.usage` rows from the worker (`entriesOnly`: session-store entries only, OpenClaw's
//! order, no totals). The gateway never holds more than that page: `limit` rows (default 100,
//! at most [`MAX_LIMIT`]) parsed on the blocking pool.
//!
//! Params are OpenClaw's closed schema (`SessionsListParamsSchema`). Honoured: `limit`,
//! `offset`, `agentId`, `search` (in the worker, before paging, so `totalCount` is exact);
//! `archived: true` and `pinned: true` (nothing is archived or pinned for clawgate: an empty
//! page); `label`, `activeMinutes`, `excludeCron` (applied to the page, so `totalCount` counts
//! rows before them). The rest are accepted and ignored (runtime state clawgate does not have).
//! What differs and why: docs/openclaw-compatibility.md, "sessions.list".

use ipc_proto::Method;
use serde_json::{Map, Value, json};

use crate::{
    AppState,
    api::{Via, now_ms, params_error, usage_call},
    error::ApiError,
    params,
};

/// OpenClaw's default page.
pub const DEFAULT_LIMIT: u64 = 100;
/// The largest page served (OpenClaw's Control UI asks for 200).
pub const MAX_LIMIT: u64 = 1000;

/// Every property of OpenClaw's `SessionsListParamsSchema`.
const PARAMS: [&str; 33] = [
    "limit",
    "offset",
    "activeMinutes",
    "activeOnly",
    "requireLastInteraction",
    "sortBy",
    "includeGlobal",
    "includeUnknown",
    "excludeSubagents",
    "excludeCron",
    "excludeSystem",
    "configuredAgentsOnly",
    "includeDerivedTitles",
    "includeLastMessage",
    "includeActivitySummary",
    "label",
    "projectId",
    "workspaceDir",
    "group",
    "pinned",
    "boardFace",
    "hasBoard",
    "creatorId",
    "ownerId",
    "ownerFirst",
    "involvingMe",
    "profileRelation",
    "involvingProfileId",
    "includePeople",
    "spawnedBy",
    "agentId",
    "search",
    "archived",
];

fn invalid(detail: impl std::fmt::Display) -> ApiError {
    ApiError::invalid(format!("invalid sessions.list params: {detail}"))
}

/// Filters applied to the page the worker returned.
struct PageFilter {
    label: Option<String>,
    active_since_ms: Option<u64>,
    exclude_cron: bool,
}

/// `sessions.list`.
pub async fn sessions_list(state: &AppState, params: &Value, via: Via) -> Result<Value, ApiError> {
    let empty = Map::new();
    let obj = match params {
        Value::Null => &empty,
        Value::Object(obj) => obj,
        _ => return Err(invalid("at root: must be object")),
    };
    params::check_sizes("sessions.list", obj).map_err(params_error)?;
    if let Some(unknown) = obj.keys().find(|k| !PARAMS.contains(&k.as_str())) {
        return Err(invalid(format!("at root: unexpected property '{}'", params::shown(unknown))));
    }
    let int = |name: &str, min: u64| match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => match n.as_u64() {
            Some(v) if v >= min => Ok(Some(v)),
            _ => Err(invalid(format!("at /{name}: must be >= {min}"))),
        },
        Some(_) => Err(invalid(format!("at /{name}: must be integer"))),
    };
    let text = |name: &str| match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_owned()).filter(|s| !s.is_empty())),
        Some(_) => Err(invalid(format!("at /{name}: must be string"))),
    };
    let flag = |name: &str| match obj.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(invalid(format!("at /{name}: must be boolean"))),
    };
    let limit = int("limit", 1)?.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    let offset = int("offset", 0)?.unwrap_or(0).min(u64::from(u32::MAX));
    let active_minutes = int("activeMinutes", 1)?;
    let (label, search, agent_id) = (text("label")?, text("search")?, text("agentId")?);
    if search.as_ref().is_some_and(|s| s.len() > params::MAX_SEARCH) {
        return Err(invalid(format!("search must be at most {} bytes", params::MAX_SEARCH)));
    }
    let archived_only = matches!(obj.get("archived"), Some(Value::Bool(true)));
    let pinned_only = flag("pinned")?;
    let filter = PageFilter {
        label,
        active_since_ms: active_minutes.map(|m| now_ms().saturating_sub(m.saturating_mul(60_000))),
        exclude_cron: flag("excludeCron")?,
    };

    let path = match &agent_id {
        Some(agent) => json!(agent_path(state, &params::normalize_agent_id(agent))),
        None => json!("(multiple)"),
    };
    let mut out = json!({
        "ts": now_ms(),
        "path": path,
        "count": 0,
        "totalCount": 0,
        "limitApplied": limit,
        "hasMore": false,
        "nextOffset": null,
        "owners": [],
        "defaults": {"modelProvider": null, "model": null, "contextTokens": null},
        "sessions": [],
    });
    if offset > 0 {
        out["offset"] = json!(offset);
    }
    if archived_only || pinned_only {
        return Ok(out);
    }
    let mut usage_params = json!({"range": "all", "limit": limit, "offset": offset, "entriesOnly": true});
    match &agent_id {
        Some(agent) => usage_params["agentId"] = json!(agent),
        None => usage_params["agentScope"] = json!("all"),
    }
    if let Some(s) = &search {
        usage_params["search"] = json!(s);
    }
    let served = usage_call(state, Method::SessionsUsage, &usage_params, via).await?;
    let payload = served.payload();
    let page = tokio::task::spawn_blocking(move || page_rows(&payload, &filter))
        .await
        .map_err(|e| ApiError::unavailable(e.to_string(), None))?
        .map_err(|e| ApiError::unavailable(format!("unreadable sessions.usage page: {e}"), None))?;
    let shown = page.rows.len() as u64;
    let next = offset + page.returned;
    out["count"] = json!(shown);
    out["totalCount"] = json!(page.total);
    out["hasMore"] = json!(next < page.total);
    out["nextOffset"] = if next < page.total { json!(next) } else { Value::Null };
    out["sessions"] = Value::Array(page.rows);
    Ok(out)
}

/// Where an agent's sessions live, as OpenClaw reports it: its database once it has one, else
/// the legacy `sessions.json`.
fn agent_path(state: &AppState, agent: &str) -> std::path::PathBuf {
    let dir = state.config.state_dir.join("agents").join(agent);
    let db = dir.join("agent/openclaw-agent.sqlite");
    if db.exists() { db } else { dir.join("sessions/sessions.json") }
}

struct Page {
    rows: Vec<Value>,
    /// Rows the worker returned (before the page filters).
    returned: u64,
    total: u64,
}

#[derive(serde::Deserialize)]
struct UsagePage {
    #[serde(default)]
    page: Option<PageInfo>,
    sessions: Vec<UsageRow>,
}

#[derive(serde::Deserialize)]
struct PageInfo {
    total: u64,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageRow {
    key: String,
    session_id: Option<String>,
    label: Option<String>,
    updated_at: Option<f64>,
    agent_id: Option<String>,
    channel: Option<String>,
    chat_type: Option<String>,
    origin: Option<Value>,
    model_provider: Option<String>,
    model: Option<String>,
    usage: Option<RowUsage>,
}

#[derive(serde::Deserialize)]
struct RowUsage {
    #[serde(default)]
    input: u64,
    #[serde(default)]
    output: u64,
}

/// The channel a group session's key names (`agent:<id>:<channel>:group:<peer>`): OpenClaw keeps
/// it for group sessions on internal channels, which have no delivery route.
fn group_channel(key: &str) -> Option<&str> {
    let parts: Vec<&str> = key.split(':').collect();
    match parts.as_slice() {
        ["agent", _, channel, "group" | "channel", ..] if !channel.is_empty() => Some(channel),
        _ => None,
    }
}

/// One `sessions.usage` row as an OpenClaw `sessions.list` row (the facts the store gives;
/// runtime-only fields are left out, see the module docs).
fn list_row(r: UsageRow) -> Value {
    let parts: Vec<&str> = r.key.split(':').collect();
    let rest = parts.get(2..).unwrap_or_default();
    let is_main = rest.len() == 1 && parts.first() == Some(&"agent");
    let is_cron = rest.first() == Some(&"cron");
    let group = r.chat_type.as_deref() == Some("group");
    let classification = if is_main {
        "main"
    } else if is_cron {
        "cron"
    } else if group {
        "group"
    } else {
        "direct"
    };
    let usage = r.usage.unwrap_or(RowUsage { input: 0, output: 0 });
    let updated = r.updated_at.map(|u| u as u64);
    let mut row = Map::new();
    row.insert("key".into(), json!(r.key));
    row.insert("sessionId".into(), json!(r.session_id));
    row.insert("agentId".into(), json!(r.agent_id));
    row.insert("kind".into(), json!(if group { "group" } else { "direct" }));
    row.insert("classification".into(), json!(classification));
    if let Some(c) = &r.chat_type {
        row.insert("chatType".into(), json!(c));
        if !is_main && !is_cron {
            row.insert("peerKind".into(), json!(c));
        }
    }
    match &r.channel {
        Some(c) => {
            row.insert("channel".into(), json!(c));
            row.insert("lastChannel".into(), json!(c));
            row.insert("deliveryContext".into(), json!({"channel": c}));
        }
        None => {
            if let Some(c) = group.then(|| group_channel(&r.key)).flatten() {
                row.insert("channel".into(), json!(c));
            }
        }
    }
    if let Some(o) = r.origin {
        row.insert("origin".into(), o);
    }
    // OpenClaw names an unlabelled group `<channel>:g-<peer>`: a display name, not a label.
    let group_title = group
        .then(|| group_channel(&r.key))
        .flatten()
        .map(|c| format!("{c}:g-{}", parts.last().copied().unwrap_or_default()));
    match &r.label {
        Some(l) => {
            if group_title.as_ref() != Some(l) {
                row.insert("label".into(), json!(l));
            }
            row.insert("displayName".into(), json!(l));
        }
        None => {
            if let Some(t) = group_title {
                row.insert("displayName".into(), json!(t));
            }
        }
    }
    row.insert("updatedAt".into(), json!(updated));
    row.insert("lastInteractionAt".into(), json!(updated));
    if let Some(m) = r.model {
        row.insert("model".into(), json!(m));
    }
    if let Some(p) = r.model_provider {
        row.insert("modelProvider".into(), json!(p));
    }
    row.insert("inputTokens".into(), json!(usage.input));
    row.insert("outputTokens".into(), json!(usage.output));
    row.insert("isMain".into(), json!(is_main));
    row.insert("isBackground".into(), json!(is_cron));
    row.insert("archived".into(), json!(false));
    row.insert("pinned".into(), json!(false));
    row.insert("unread".into(), json!(false));
    row.insert("hasActiveRun".into(), json!(false));
    row.insert("activeRunIds".into(), json!([]));
    if is_cron {
        row.insert("hasAutomation".into(), json!(true));
    }
    Value::Object(row)
}

/// The worker's page → `sessions.list` rows, with the page filters applied.
fn page_rows(payload: &[u8], filter: &PageFilter) -> Result<Page, serde_json::Error> {
    let parsed: UsagePage = serde_json::from_slice(payload)?;
    let returned = parsed.sessions.len() as u64;
    let total = parsed.page.map_or(returned, |p| p.total);
    let rows = parsed
        .sessions
        .into_iter()
        .filter(|r| filter.label.as_ref().is_none_or(|l| r.label.as_ref() == Some(l)))
        .filter(|r| {
            filter.active_since_ms.is_none_or(|since| r.updated_at.is_some_and(|u| u as u64 >= since))
        })
        .filter(|r| !(filter.exclude_cron && r.key.split(':').nth(2) == Some("cron")))
        .map(list_row)
        .collect();
    Ok(Page { rows, returned, total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_take_openclaws_shape() {
        let page = br#"{"startDate":"1970-01-01","endDate":"2026-12-04","page":{"offset":0,"limit":2,"total":7},
            "sessions":[
              {"key":"agent:main:main","sessionId":"s1","updatedAt":5,"agentId":"main","channel":"slack","chatType":"direct",
               "origin":{"provider":"slack"},"model":"m","modelProvider":"p","usage":{"input":3,"output":4}},
              {"key":"agent:a1:webchat:group:g6","sessionId":"s2","updatedAt":4,"agentId":"a1","chatType":"group"},
              {"key":"agent:a1:cron:j1","label":"Cron: weekly","sessionId":"s3","updatedAt":3,"agentId":"a1","chatType":"direct"}
            ]}"#;
        let filter = PageFilter { label: None, active_since_ms: None, exclude_cron: false };
        let p = page_rows(page, &filter).unwrap();
        assert_eq!((p.returned, p.total), (3, 7));
        let main = &p.rows[0];
        assert_eq!(main["classification"], "main");
        assert_eq!(main["isMain"], true);
        assert_eq!(main["deliveryContext"], json!({"channel": "slack"}));
        assert_eq!((main["inputTokens"].as_u64(), main["outputTokens"].as_u64()), (Some(3), Some(4)));
        assert!(main.get("peerKind").is_none());
        let group = &p.rows[1];
        assert_eq!((group["kind"].as_str(), group["channel"].as_str()), (Some("group"), Some("webchat")));
        assert_eq!(group["displayName"], "webchat:g-g6");
        assert!(group.get("label").is_none());
        assert!(group.get("lastChannel").is_none() && group.get("origin").is_none());
        let cron = &p.rows[2];
        assert_eq!(
            (cron["classification"].as_str(), cron["isBackground"].as_bool()),
            (Some("cron"), Some(true))
        );
        assert_eq!(cron["displayName"], "Cron: weekly");
        let no_cron = PageFilter { exclude_cron: true, ..filter };
        assert_eq!(page_rows(page, &no_cron).unwrap().rows.len(), 2);
    }
}
