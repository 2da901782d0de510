//! HTTP handlers: probes, status, and the `POST /api/v1/call/{method}` mirror of OpenClaw's
//! WebSocket methods. Handlers never touch transcripts and never block: usage work is a
//! message to the worker with a deadline.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{Path, State, rejection::BytesRejection},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use ipc_proto::Method;
use serde_json::{Value, json};
use supervisor::Phase;

pub use crate::error::{ApiError, ErrorCode};
use crate::{
    AppState,
    auth::{Caller, scope},
    cache::Served,
    limits, params,
};

/// `GET /healthz`, `/health`: the gateway is alive. Answered from the gateway alone.
pub async fn healthz() -> Response {
    static BODY: &str = r#"{"ok":true,"status":"live"}"#;
    ([(header::CONTENT_TYPE, "application/json")], BODY).into_response()
}

/// `GET /readyz`, `/ready`: 200 when the worker can take work, else 503. As OpenClaw, only local
/// or authorised callers learn what is failing; others get `{"ready": bool}`.
pub async fn readyz(State(state): State<AppState>, caller: Option<Extension<Caller>>) -> Response {
    let status = state.supervisor.status();
    let worker_ready = status.phase == Phase::Ready;
    // Shield mode: the front door is ready only when the OpenClaw gateway behind it answers.
    let upstream = state.relay.as_ref().map(|relay| relay.readiness());
    let upstream_ready = upstream.as_ref().is_none_or(|(ready, _)| *ready);
    let ready = worker_ready && upstream_ready;
    let failing: Vec<&str> =
        [(!worker_ready).then_some("usage-worker"), (!upstream_ready).then_some("upstream")]
            .into_iter()
            .flatten()
            .collect();
    let detailed = caller.is_some_and(|Extension(c)| c.authorized || c.loopback);
    let mut body = if detailed {
        json!({"ready": ready, "failing": failing, "uptimeMs": state.uptime_ms()})
    } else {
        json!({"ready": ready})
    };
    if let (true, Some((_, upstream))) = (detailed, upstream) {
        body["upstream"] = upstream;
    }
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body)).into_response()
}

/// `GET /api/v1/status`: gateway and worker facts for the dashboard and `clawgate status`
/// (the typed document of `status.rs`).
pub async fn status(State(state): State<AppState>) -> Response {
    Json(crate::status::build(&state)).into_response()
}

/// The status document as JSON, for the `status` method.
pub fn status_json(state: &AppState) -> Value {
    serde_json::to_value(crate::status::build(state)).unwrap_or(Value::Null)
}

/// `GET /api/v1/worker/ping`: one ping round trip to the worker through the supervisor, for
/// `clawgate status --deep`. Bounded by a 2 s deadline.
pub async fn worker_ping(State(state): State<AppState>) -> Response {
    match tokio::time::timeout(Duration::from_secs(2), state.supervisor.ping()).await {
        Ok(Ok((rtt, memory))) => Json(json!({
            "ok": true,
            "rttUs": rtt.as_micros() as u64,
            "heapBytes": memory.heap_bytes,
            "rssBytes": memory.rss_bytes,
        }))
        .into_response(),
        Ok(Err(error)) => ApiError::from(error).into_response(),
        Err(_) => {
            ApiError::unavailable("the worker did not answer a ping within 2 s", Some(Duration::from_secs(1)))
                .into_response()
        }
    }
}

/// `POST /api/v1/call/{method}`: the HTTP mirror of OpenClaw's WS methods. The token (checked
/// by the auth layer) grants every operator scope, as OpenClaw's shared secret does.
pub async fn call(
    State(state): State<AppState>,
    Path(method): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let message = format!("request body over {} KiB", limits::MAX_REQUEST_BYTES >> 10);
            return ApiError::new(ErrorCode::TooLarge, message).into_response();
        }
        Err(rejection) => return ApiError::invalid(rejection.body_text()).into_response(),
    };
    let params: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return ApiError::invalid(format!("params are not valid JSON: {e}")).into_response(),
        }
    };
    match dispatch(&state, &method, &params, Via::Http).await {
        Ok(Reply::Json(payload)) => ok_json(&payload),
        Ok(Reply::Usage(served)) => usage_response(&served),
        Err(e) => e.into_response(),
    }
}

/// What a method answers: JSON built by the gateway, or a worker answer passed through as text.
pub enum Reply {
    Json(Value),
    Usage(Served),
}

/// Every method clawgate serves, over WebSocket and `POST /api/v1/call/{method}` alike.
pub const METHODS: [&str; 7] = [
    "health",
    "status",
    "sessions.list",
    "sessions.usage",
    "sessions.usage.timeseries",
    "sessions.usage.logs",
    "usage.cost",
];

/// The operator scope a method needs, as OpenClaw's method descriptors say: `health` none (always
/// allowed after connect), the methods served here `operator.read`, any other `operator.admin`
/// (so a read-only client calling one is told `FORBIDDEN`, an admin `unknown method`).
pub fn required_scope(method: &str) -> Option<&'static str> {
    match method {
        "health" => None,
        m if METHODS.contains(&m) => Some(scope::READ),
        _ => Some(scope::ADMIN),
    }
}

fn params_error(error: params::ParamsError) -> ApiError {
    let code = if error.too_large { ErrorCode::TooLarge } else { ErrorCode::InvalidRequest };
    ApiError::new(code, error.message)
}

/// Which transport a call came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Http,
    /// A WebSocket client, which gets `usage.updated` pushes for what it asked.
    WebSocket,
}

/// Runs one method; the one handler behind both transports.
pub async fn dispatch(state: &AppState, method: &str, params: &Value, via: Via) -> Result<Reply, ApiError> {
    match method {
        "health" => Ok(Reply::Json(health_json(state))),
        "status" => Ok(Reply::Json(status_json(state))),
        "sessions.list" => sessions_list(state, params, via).await.map(Reply::Json),
        other => {
            let Some(method) = Method::from_name(other) else {
                return Err(ApiError::invalid(format!("unknown method: {}", params::shown(other))));
            };
            usage_call(state, method, params, via).await.map(Reply::Usage)
        }
    }
}

/// Validates params and answers through the single-flight cache (deadline, stale, queue bound).
pub async fn usage_call(
    state: &AppState,
    method: Method,
    params: &Value,
    via: Via,
) -> Result<Served, ApiError> {
    let query = params::parse(method, params, jiff::Timestamp::now()).map_err(params_error)?;
    state.cache.get(query, via == Via::WebSocket).await
}

/// `{"ok":true,"payload":<answer>}` streamed from the answer's bytes without copying them.
fn usage_response(served: &Served) -> Response {
    let mut parts = vec![Bytes::from_static(br#"{"ok":true,"payload":"#)];
    parts.extend(served.chunks());
    parts.push(Bytes::from_static(b"}"));
    let len: usize = parts.iter().map(Bytes::len).sum();
    let body = axum::body::Body::from_stream(futures_util::stream::iter(
        parts.into_iter().map(Ok::<_, std::convert::Infallible>),
    ));
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, len)
        .header("x-clawgate-cache", served.outcome.as_str())
        .header("x-clawgate-served-by", served.outcome.served_by())
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The `health` method: OpenClaw's snapshot shape as far as clawgate has the facts, answered
/// from the gateway alone (no worker round trip).
pub fn health_json(state: &AppState) -> Value {
    let started = std::time::Instant::now();
    let worker = state.supervisor.status();
    let gateway_rss = supervisor::rss_bytes(std::process::id());
    let mut health = json!({
        "ok": true,
        "ts": now_ms(),
        "eventLoop": crate::status::EventLoop::from(&state.lag.snapshot()),
        "memory": crate::status::memory(state, gateway_rss, &worker),
        "uptimeMs": state.uptime_ms(),
        "worker": {
            "state": worker.state_name(),
            "pid": worker.pid,
            "restarts": worker.restarts,
            "jobsInFlight": worker.jobs_in_flight,
        },
        "channels": {},
        "channelOrder": [],
        "channelLabels": {},
        "defaultAgentId": "main",
    });
    health["durationMs"] = json!(started.elapsed().as_millis() as u64);
    health
}

/// `sessions.list` params (OpenClaw's closed schema); only these filters apply here.
const SESSIONS_LIST_PARAMS: [&str; 10] = [
    "limit",
    "activeMinutes",
    "includeGlobal",
    "includeUnknown",
    "includeDerivedTitles",
    "includeLastMessage",
    "label",
    "spawnedBy",
    "agentId",
    "search",
];

/// `sessions.list`, answered from a worker `sessions.usage` over all time (the gateway never
/// reads sessions.json). Reshaping parses the worker's JSON here; that is acceptable because
/// this method is not on the hot path, and it happens on the blocking pool.
pub async fn sessions_list(state: &AppState, params: &Value, via: Via) -> Result<Value, ApiError> {
    let invalid = |detail: String| ApiError::invalid(format!("invalid sessions.list params: {detail}"));
    let empty = serde_json::Map::new();
    let obj = match params {
        Value::Null => &empty,
        Value::Object(obj) => obj,
        _ => return Err(invalid("params must be an object".into())),
    };
    params::check_sizes("sessions.list", obj).map_err(params_error)?;
    if let Some(unknown) = obj.keys().find(|k| !SESSIONS_LIST_PARAMS.contains(&k.as_str())) {
        return Err(invalid(format!("unexpected property '{}'", params::shown(unknown))));
    }
    let positive = |name: &str| match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| *n >= 1)
            .map(Some)
            .ok_or_else(|| invalid(format!("{name} must be an integer >= 1"))),
    };
    let text = |name: &str| match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_owned()).filter(|s| !s.is_empty())),
        Some(_) => Err(invalid(format!("{name} must be a string"))),
    };
    let flag = |name: &str| match obj.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(invalid(format!("{name} must be a boolean"))),
    };
    let limit = positive("limit")?.map(|l| l.min(u64::from(params::MAX_LIMIT)) as usize);
    let active_minutes = positive("activeMinutes")?;
    let (label, search, agent_id) = (text("label")?, text("search")?, text("agentId")?);
    let _ = (text("spawnedBy")?, flag("includeDerivedTitles")?, flag("includeLastMessage")?);
    let (include_global, include_unknown) = (flag("includeGlobal")?, flag("includeUnknown")?);

    let mut usage_params = json!({"range": "all", "limit": params::MAX_LIMIT});
    match &agent_id {
        Some(agent) => usage_params["agentId"] = json!(agent),
        None => usage_params["agentScope"] = json!("all"),
    }
    let served = usage_call(state, Method::SessionsUsage, &usage_params, via).await?;
    let path = match &agent_id {
        Some(agent) => json!(
            state
                .config
                .state_dir
                .join("agents")
                .join(params::normalize_agent_id(agent))
                .join("sessions/sessions.json")
        ),
        None => json!("(multiple)"),
    };
    let filter = SessionsFilter {
        limit,
        active_since_ms: active_minutes.map(|m| now_ms().saturating_sub(m.saturating_mul(60_000))),
        label,
        search: search.map(|s| s.to_lowercase()),
        include_global,
        include_unknown,
    };
    let payload = served.payload();
    let rows = tokio::task::spawn_blocking(move || session_rows(&payload, &filter))
        .await
        .map_err(|e| ApiError::unavailable(e.to_string(), None))?
        .map_err(|e| ApiError::unavailable(format!("unreadable sessions.usage answer: {e}"), None))?;
    Ok(json!({
        "ts": now_ms(),
        "path": path,
        "count": rows.len(),
        "defaults": {"modelProvider": null, "model": null, "contextTokens": null},
        "sessions": rows,
    }))
}

struct SessionsFilter {
    limit: Option<usize>,
    active_since_ms: Option<u64>,
    label: Option<String>,
    search: Option<String>,
    include_global: bool,
    include_unknown: bool,
}

#[derive(serde::Deserialize)]
struct UsageRows {
    sessions: Vec<UsageRow>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageRow {
    key: String,
    session_id: Option<String>,
    label: Option<String>,
    display_name: Option<String>,
    updated_at: Option<u64>,
    agent_id: Option<String>,
    channel: Option<String>,
    chat_type: Option<String>,
    origin: Option<Value>,
    model_provider: Option<String>,
    model: Option<String>,
    usage: Option<RowUsage>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RowUsage {
    #[serde(default)]
    input: u64,
    #[serde(default)]
    output: u64,
    #[serde(default)]
    total_tokens: u64,
    #[serde(default)]
    total_cost: f64,
}

/// `sessions.usage` rows → OpenClaw `sessions.list` rows, newest first, filtered.
fn session_rows(payload: &[u8], filter: &SessionsFilter) -> Result<Vec<Value>, serde_json::Error> {
    let parsed: UsageRows = serde_json::from_slice(payload)?;
    let mut rows: Vec<UsageRow> = parsed
        .sessions
        .into_iter()
        .filter(|r| filter.include_global || r.key != "global")
        .filter(|r| filter.include_unknown || r.key != "unknown")
        .filter(|r| filter.active_since_ms.is_none_or(|since| r.updated_at.unwrap_or(0) >= since))
        .filter(|r| filter.label.as_ref().is_none_or(|l| r.label.as_ref() == Some(l)))
        .filter(|r| {
            filter.search.as_ref().is_none_or(|needle| {
                [Some(&r.key), r.label.as_ref(), r.display_name.as_ref(), r.session_id.as_ref()]
                    .into_iter()
                    .flatten()
                    .any(|h| h.to_lowercase().contains(needle))
            })
        })
        .collect();
    rows.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then_with(|| a.key.cmp(&b.key)));
    rows.truncate(filter.limit.unwrap_or(usize::MAX));
    Ok(rows
        .into_iter()
        .map(|r| {
            let kind = match r.key.as_str() {
                "global" => "global",
                "unknown" => "unknown",
                k if k.contains(":group:") || k.contains(":channel:") => "group",
                _ => "direct",
            };
            let usage = r.usage.unwrap_or(RowUsage { input: 0, output: 0, total_tokens: 0, total_cost: 0.0 });
            let mut row = json!({
                "key": r.key,
                "kind": kind,
                "updatedAt": r.updated_at,
                "sessionId": r.session_id,
                "agentId": r.agent_id,
                "inputTokens": usage.input,
                "outputTokens": usage.output,
                "totalTokens": usage.total_tokens,
                "estimatedCostUsd": usage.total_cost,
            });
            for (name, value) in [
                ("label", r.label),
                ("displayName", r.display_name),
                ("channel", r.channel),
                ("chatType", r.chat_type),
                ("modelProvider", r.model_provider),
                ("model", r.model),
            ] {
                if let Some(v) = value {
                    row[name] = json!(v);
                }
            }
            if let Some(origin) = r.origin {
                row["origin"] = origin;
            }
            row
        })
        .collect())
}

fn ok_json(payload: &Value) -> Response {
    Json(json!({"ok": true, "payload": payload})).into_response()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
