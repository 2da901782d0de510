//! HTTP handlers: probes, status, and the `POST /api/v1/call/{method}` mirror of OpenClaw's
//! WebSocket methods. Handlers never touch transcripts and never block: usage work is a
//! message to the worker with a deadline.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use ipc_proto::Method;
use serde_json::{Value, json};
use supervisor::{CallError, Phase, WorkerStatus};

use crate::{AppState, params};

/// OpenClaw's error codes that clawgate uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    Unavailable,
    Unauthorized,
}

impl ErrorCode {
    fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
        }
    }
}

/// An error answer in OpenClaw's shape: `{code, message, retryable?, retryAfterMs?}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError { code: ErrorCode::InvalidRequest, message: message.into(), retry_after: None }
    }

    pub fn body(&self) -> Value {
        let mut error = json!({"code": self.code.as_str(), "message": self.message});
        if let Some(after) = self.retry_after {
            error["retryable"] = json!(true);
            error["retryAfterMs"] = json!(after.as_millis() as u64);
        }
        error
    }
}

impl From<CallError> for ApiError {
    fn from(error: CallError) -> ApiError {
        let retry_after = match &error {
            CallError::Unavailable { retry_after, .. } => {
                Some((*retry_after).max(Duration::from_millis(100)))
            }
            other if other.retryable() => Some(Duration::from_millis(500)),
            _ => None,
        };
        let code = match &error {
            CallError::Worker(e) if e.kind == ipc_proto::WorkerErrorKind::InvalidRequest => {
                ErrorCode::InvalidRequest
            }
            _ => ErrorCode::Unavailable,
        };
        ApiError { code, message: error.to_string(), retry_after }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self.code {
            ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        };
        (status, Json(json!({"ok": false, "error": self.body()}))).into_response()
    }
}

/// `GET /healthz`, `/health`: the gateway is alive. Answered from the gateway alone.
pub async fn healthz() -> Response {
    static BODY: &str = r#"{"ok":true,"status":"live"}"#;
    ([(header::CONTENT_TYPE, "application/json")], BODY).into_response()
}

/// `GET /readyz`, `/ready`: 200 when the worker can take work, else 503 with what is failing.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let status = state.supervisor.status();
    let ready = status.phase == Phase::Ready;
    let failing: Vec<&str> = if ready { vec![] } else { vec!["usage-worker"] };
    let body = json!({"ready": ready, "failing": failing, "uptimeMs": state.uptime_ms()});
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body)).into_response()
}

/// `GET /api/v1/status`: gateway and worker facts for the dashboard and `clawgate status`.
pub async fn status(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(e) = state.authorize(&headers) {
        return e.into_response();
    }
    Json(status_json(&state)).into_response()
}

pub fn status_json(state: &AppState) -> Value {
    let worker = state.supervisor.status();
    json!({
        "gateway": {
            "pid": std::process::id(),
            "version": env!("CARGO_PKG_VERSION"),
            "uptimeMs": state.uptime_ms(),
            "listen": state.config.listen.to_string(),
            "stateDir": state.config.state_dir,
            "authMode": if state.config.token.is_some() { "token" } else { "none" },
            "rssBytes": supervisor::rss_bytes(std::process::id()),
        },
        "worker": worker_json(&worker),
    })
}

fn worker_json(worker: &WorkerStatus) -> Value {
    let last_exit = worker.last_exit.as_ref().map(|exit| {
        json!({
            "cause": exit.cause.as_str(),
            "pid": exit.pid,
            "code": exit.code,
            "signal": exit.signal,
            "atMs": exit.at.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
            "stderrTail": exit.stderr_tail,
        })
    });
    json!({
        "mode": "managed",
        "state": worker.state_name(),
        "pid": worker.pid,
        "build": worker.build,
        "uptimeMs": worker.ready_since.map(|t| t.elapsed().as_millis() as u64),
        "restarts": worker.restarts,
        "restartsByCause": worker.restarts_by_cause,
        "lastExit": last_exit,
        "rssBytes": worker.rss_bytes,
        "heapBytes": worker.reported_memory.map(|m| m.heap_bytes),
        "jobsInFlight": worker.jobs_in_flight,
        "retryAfterMs": worker.retry_after.map(|d| d.as_millis() as u64),
        "lastPingRttUs": worker.last_ping_rtt.map(|d| d.as_micros() as u64),
    })
}

/// `POST /api/v1/call/{method}`: the HTTP mirror of OpenClaw's WS methods.
pub async fn call(
    State(state): State<AppState>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = state.authorize(&headers) {
        return e.into_response();
    }
    let params: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return ApiError::invalid(format!("params are not valid JSON: {e}")).into_response(),
        }
    };
    match method.as_str() {
        "health" => return ok_json(&json!({"ok": true, "ts": now_ms(), "status": status_json(&state)})),
        "status" => return ok_json(&status_json(&state)),
        _ => {}
    }
    let Some(method) = Method::from_name(&method) else {
        return ApiError::invalid(format!("unknown method: {method}")).into_response();
    };
    match usage_call(&state, method, &params).await {
        Ok(payload_json) => {
            let mut body = String::with_capacity(payload_json.len() + 24);
            body.push_str(r#"{"ok":true,"payload":"#);
            body.push_str(&payload_json);
            body.push('}');
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// Validates params, asks the worker, applies the deadline. Returns the payload JSON text.
pub async fn usage_call(state: &AppState, method: Method, params: &Value) -> Result<String, ApiError> {
    let query = params::parse(method, params, jiff::Timestamp::now()).map_err(|e| ApiError::invalid(e.0))?;
    match tokio::time::timeout(state.config.request_timeout, state.supervisor.call(query)).await {
        Ok(Ok(answer)) => Ok(answer.payload_json),
        Ok(Err(error)) => Err(error.into()),
        Err(_) => Err(ApiError {
            code: ErrorCode::Unavailable,
            message: format!(
                "{} did not finish within {} ms; retry shortly",
                method.name(),
                state.config.request_timeout.as_millis()
            ),
            retry_after: Some(Duration::from_secs(1)),
        }),
    }
}

fn ok_json(payload: &Value) -> Response {
    Json(json!({"ok": true, "payload": payload})).into_response()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Compares secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl AppState {
    /// Checks `Authorization: Bearer <token>` when a token is configured.
    pub fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(token) = &self.config.token else { return Ok(()) };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if constant_time_eq(given.as_bytes(), token.as_bytes()) {
            Ok(())
        } else {
            Err(ApiError {
                code: ErrorCode::Unauthorized,
                message: "missing or wrong token (send Authorization: Bearer <token>)".into(),
                retry_after: None,
            })
        }
    }
}
