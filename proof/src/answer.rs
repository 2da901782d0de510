//! One usage answer, from a WebSocket `res` frame or an HTTP body: parse only what is checked,
//! check it against the truth, and count it.

use std::time::Instant;

use serde::Deserialize;
use serde_json::{Value, value::RawValue};

use crate::{
    ctx::{Ctx, Method, Sent},
    truth::{SessionsUsage, UsageCost, Verdict},
};

/// A WebSocket frame or an HTTP call body; the payload stays unparsed text until checked.
#[derive(Deserialize)]
pub struct Envelope<'a> {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub id: Option<String>,
    pub event: Option<String>,
    pub ok: Option<bool>,
    #[serde(borrow)]
    pub payload: Option<&'a RawValue>,
    pub error: Option<Value>,
}

/// What became of a call.
#[derive(Debug)]
pub enum Outcome {
    Answer { verdict: Verdict, stale: bool },
    Failed,
}

/// Checks and counts the answer to the call described by `sent`, fully received at
/// `received` (its latency ends there: checking it is the harness's time, not the gateway's).
pub fn handle(ctx: &Ctx, sent: &Sent, received: Instant, envelope: &Envelope<'_>) -> Outcome {
    match (envelope.ok, envelope.payload) {
        (Some(true), Some(raw)) => {
            let (verdict, stale) = check(ctx, sent.method, raw.get());
            ctx.answered(sent, received, stale, &verdict);
            Outcome::Answer { verdict, stale }
        }
        _ => {
            let error = envelope.error.clone().unwrap_or(Value::Null);
            let retryable = error["retryable"] == Value::Bool(true);
            let what = format!(
                "{} {}",
                error["code"].as_str().unwrap_or("(no code)"),
                error["message"].as_str().unwrap_or("(no message)")
            );
            ctx.failed(sent, retryable, &what);
            Outcome::Failed
        }
    }
}

/// The verdict on a payload, and whether the gateway marked it stale.
pub fn check(ctx: &Ctx, method: Method, payload: &str) -> (Verdict, bool) {
    match method {
        Method::SessionsUsage => match serde_json::from_str::<SessionsUsage>(payload) {
            Ok(p) => (ctx.truth.check_sessions_usage(&p), p.is_stale()),
            Err(e) => (Verdict::Wrong(format!("unreadable sessions.usage payload: {e}")), false),
        },
        Method::UsageCost => match serde_json::from_str::<UsageCost>(payload) {
            Ok(p) => (ctx.truth.check_usage_cost(&p), p.is_stale()),
            Err(e) => (Verdict::Wrong(format!("unreadable usage.cost payload: {e}")), false),
        },
    }
}
