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
    limits, params, shell,
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

/// Every method clawgate serves, over WebSocket and `POST /api/v1/call/{method}` alike: the
/// usage methods, and what OpenClaw's Control UI calls around its Usage page (`shell`).
pub const METHODS: [&str; 18] = [
    "health",
    "status",
    "sessions.list",
    "sessions.usage",
    "sessions.usage.timeseries",
    "sessions.usage.logs",
    "usage.cost",
    "usage.status",
    "agents.list",
    "agent.identity.get",
    "exec.approval.list",
    "plugin.approval.list",
    "openclaw.approval.list",
    "question.list",
    "sessions.groups.list",
    "sessions.groups.defaults",
    "plugins.controlUi.list",
    "models.list",
];

/// The operator scope a method needs, as OpenClaw's method descriptors say
/// (`tests/openclaw-gateway/method-scopes.mjs`): `health` none (always allowed after connect),
/// approval lists `operator.approvals`, `question.list` `operator.questions`, group defaults
/// `operator.write`, the rest of the methods served here `operator.read`, and any other
/// `operator.admin` (so a read-only client calling one is told `FORBIDDEN`, an admin
/// `unknown method`).
pub fn required_scope(method: &str) -> Option<&'static str> {
    match method {
        "health" => None,
        "exec.approval.list" | "plugin.approval.list" | "openclaw.approval.list" => Some(scope::APPROVALS),
        "question.list" => Some(scope::QUESTIONS),
        "sessions.groups.defaults" => Some(scope::WRITE),
        m if METHODS.contains(&m) => Some(scope::READ),
        _ => Some(scope::ADMIN),
    }
}

pub(crate) fn params_error(error: params::ParamsError) -> ApiError {
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
        "health" => Ok(Reply::Json(health_with(state, true))),
        "status" => {
            let mut status = status_json(state);
            state.shell.extend_status(state, &mut status);
            Ok(Reply::Json(status))
        }
        "sessions.list" => crate::sessions_list::sessions_list(state, params, via).await.map(Reply::Json),
        "usage.status" => Ok(Reply::Json(shell::usage_status())),
        "agents.list" => shell::agents_list(state).await.map(Reply::Json),
        "agent.identity.get" => shell::agent_identity(state, params).await.map(Reply::Json),
        m if shell::empty_list(m).is_some() => Ok(Reply::Json(shell::empty_list(m).unwrap_or_default())),
        other => {
            let Some(method) = Method::from_name(other) else {
                return Err(ApiError::invalid(format!("unknown method: {}", params::shown(other))));
            };
            usage_call(state, method, params, via).await.map(Reply::Usage)
        }
    }
}

/// Validates params and answers through the single-flight cache (deadline, stale, queue bound).
pub(crate) async fn usage_call(
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

/// `hello-ok`'s health snapshot: OpenClaw's `health` shape as far as clawgate has the facts,
/// answered from the gateway alone (no worker round trip).
pub fn health_json(state: &AppState) -> Value {
    health_with(state, false)
}

/// The `health` method's document; `refresh` lets the call renew an old sessions snapshot (in
/// the background: the answer never waits for the worker).
fn health_with(state: &AppState, refresh: bool) -> Value {
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
    state.shell.extend_health(state, &mut health, refresh);
    health["durationMs"] = json!(started.elapsed().as_millis() as u64);
    health
}

fn ok_json(payload: &Value) -> Response {
    Json(json!({"ok": true, "payload": payload})).into_response()
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
