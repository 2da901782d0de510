//! The error every method and route answers with, in OpenClaw's shape
//! (`{code, message, details?, retryable?, retryAfterMs?}`), and its HTTP status.
//!
//! A leaf module: the cache, the API dispatch, auth and both transports use it, and it uses none
//! of them (it used to live in `api`, which made `cache -> api -> cache` a cycle).

use std::time::Duration;

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use supervisor::CallError;

/// OpenClaw's error codes that clawgate uses, plus the HTTP distinctions it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    /// `INVALID_REQUEST` for a request bigger than the gateway forwards: HTTP 413.
    TooLarge,
    /// An authenticated caller without this operator scope (OpenClaw's `FORBIDDEN` with
    /// `details.code` `MISSING_SCOPE`).
    MissingScope(&'static str),
    Unavailable,
    /// `UNAVAILABLE` because the job queue is full: HTTP 429 rather than 503.
    Overloaded,
    Unauthorized,
    /// A browser request from another site, or a `Host` this gateway is not known by: HTTP 403.
    NotAllowed,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest | ErrorCode::TooLarge => "INVALID_REQUEST",
            ErrorCode::MissingScope(_) | ErrorCode::NotAllowed => "FORBIDDEN",
            ErrorCode::Unavailable | ErrorCode::Overloaded => "UNAVAILABLE",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
        }
    }

    pub fn http_status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::MissingScope(_) | ErrorCode::NotAllowed => StatusCode::FORBIDDEN,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        }
    }
}

/// An error answer in OpenClaw's shape.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into(), retry_after: None }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidRequest, message)
    }

    pub fn unavailable(message: impl Into<String>, retry_after: Option<Duration>) -> ApiError {
        ApiError { retry_after, ..ApiError::new(ErrorCode::Unavailable, message) }
    }

    /// OpenClaw's answer to a call without the scope it needs.
    pub fn missing_scope(scope: &'static str) -> ApiError {
        ApiError::new(ErrorCode::MissingScope(scope), format!("missing scope: {scope}"))
    }

    pub fn body(&self) -> Value {
        let mut error = json!({"code": self.code.as_str(), "message": self.message});
        if let ErrorCode::MissingScope(scope) = self.code {
            error["details"] =
                json!({"code": "MISSING_SCOPE", "missingScope": scope, "requiredScopes": [scope]});
        }
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
        // A request the worker refuses is the client's mistake: its message alone, as OpenClaw
        // words it (e.g. "No transcript found for session: …").
        let (code, message) = match &error {
            CallError::Worker(e) if e.kind == ipc_proto::WorkerErrorKind::InvalidRequest => {
                (ErrorCode::InvalidRequest, e.message.clone())
            }
            _ => (ErrorCode::Unavailable, error.to_string()),
        };
        ApiError { retry_after, ..ApiError::new(code, message) }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.code.http_status(), Json(json!({"ok": false, "error": self.body()}))).into_response()
    }
}
