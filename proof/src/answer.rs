//! One usage answer, from a WebSocket `res` frame or an HTTP body: parse only what is checked,
//! check it against the truth, and count it.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

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
    let parsed = match ctx.parse_memo.as_ref().and_then(|memo| memo.find(method, payload)) {
        Some(parsed) => parsed,
        None => {
            let parsed = match parse(method, payload) {
                Ok(parsed) => Arc::new(parsed),
                Err(why) => return (Verdict::Wrong(why), false),
            };
            if let Some(memo) = &ctx.parse_memo {
                memo.insert(method, payload, Arc::clone(&parsed));
            }
            parsed
        }
    };
    match &*parsed {
        Parsed::SessionsUsage(p) => (ctx.truth.check_sessions_usage(p), p.is_stale()),
        Parsed::UsageCost(p) => (ctx.truth.check_usage_cost(p), p.is_stale()),
    }
}

/// What is checked of a payload.
pub enum Parsed {
    SessionsUsage(SessionsUsage),
    UsageCost(UsageCost),
}

fn parse(method: Method, payload: &str) -> Result<Parsed, String> {
    match method {
        Method::SessionsUsage => serde_json::from_str(payload)
            .map(Parsed::SessionsUsage)
            .map_err(|e| format!("unreadable sessions.usage payload: {e}")),
        Method::UsageCost => serde_json::from_str(payload)
            .map(Parsed::UsageCost)
            .map_err(|e| format!("unreadable usage.cost payload: {e}")),
    }
}

/// The last few payloads parsed, by their exact text. Twenty dashboards mostly receive the
/// same cached answer byte for byte; parsing twenty copies of 8 MB is work a browser does on
/// its own machine, while here it would take CPU turns from the gateway under test. A payload
/// equal to one parsed before (compared whole) reuses that parse; its verdict is still made
/// against the truth of its own moment. `--parse-memo=false` parses every answer.
#[derive(Default)]
pub struct ParseMemo {
    entries: Mutex<VecDeque<MemoEntry>>,
    pub hits: AtomicU64,
}

/// A payload's method and text, and its parse.
type MemoEntry = (Method, Arc<str>, Arc<Parsed>);

/// Distinct payloads remembered (about 15 MB each at most with the default shape).
const MEMO_ENTRIES: usize = 4;

impl ParseMemo {
    fn find(&self, method: Method, payload: &str) -> Option<Arc<Parsed>> {
        // Compare outside the lock: a comparison reads megabytes.
        let candidates: Vec<_> = {
            let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            entries
                .iter()
                .filter(|(m, text, _)| *m == method && text.len() == payload.len())
                .map(|(_, text, parsed)| (Arc::clone(text), Arc::clone(parsed)))
                .collect()
        };
        let hit = candidates.into_iter().find(|(text, _)| **text == *payload).map(|(_, parsed)| parsed);
        if hit.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    fn insert(&self, method: Method, payload: &str, parsed: Arc<Parsed>) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() == MEMO_ENTRIES {
            entries.pop_front();
        }
        entries.push_back((method, Arc::from(payload), parsed));
    }
}
