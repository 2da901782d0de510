//! Engine tests: the real tiny fixture, malformed input, incremental refresh, and a slow
//! reference implementation agreeing with the engine on generated stores.

mod fixture;
mod fuzz;
mod generate;
mod hostile;
mod incremental;
mod malformed;
mod openclaw;
mod paging;
mod persist;
mod property;
mod reference;
mod shape;
mod sqlite;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use ipc_proto::{AgentScope, DayZone, GroupBy, JobStats, Method, UsageQuery, WorkerError};
use serde_json::Value;

use super::{Engine, EngineConfig};

/// A copy of `shared/openclaw/fixtures/tiny` (legacy layout + expected oracle), kept in the repo
/// so the tests do not depend on files outside it.
pub fn tiny_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/engine/tests/tiny")
}

/// 2026-12-31T23:59:59.999Z
pub const END_2026: i64 = 1_798_761_599_999;

/// A query over everything up to the end of 2026, all agents, UTC days.
pub fn query(method: Method) -> UsageQuery {
    UsageQuery {
        method,
        start_ms: 0,
        end_ms: END_2026,
        agents: AgentScope::All,
        key: None,
        limit: Some(1000),
        group_by: GroupBy::Instance,
        day_zone: DayZone::Utc,
        include_context_weight: false,
        offset: None,
        sort: None,
        search: None,
        entries_only: false,
    }
}

/// Runs a query and parses the payload.
pub fn try_ask(engine: &mut Engine, q: &UsageQuery) -> Result<(Value, JobStats), WorkerError> {
    let cancel = AtomicBool::new(false);
    let (a, stats) = engine.answer(q, &cancel, &mut |_| {})?;
    let v: Value = serde_json::from_str(&a.payload_text()).expect("payload is JSON");
    Ok((v, stats))
}

pub fn ask(engine: &mut Engine, q: &UsageQuery) -> (Value, JobStats) {
    try_ask(engine, q).expect("answer")
}

pub fn engine(dir: &Path) -> Engine {
    Engine::new(EngineConfig::new(dir))
}

/// Relative closeness for money.
#[track_caller]
pub fn assert_close(a: f64, b: f64) {
    let scale = a.abs().max(b.abs()).max(1e-12);
    assert!((a - b).abs() / scale <= 1e-9, "{a} vs {b}");
}

/// Removes fields that differ between two otherwise equal answers (clock, job counters).
pub fn strip_volatile(v: &mut Value) {
    if let Some(o) = v.as_object_mut() {
        o.remove("updatedAt");
        o.remove("diagnostics");
        if let Some(c) = o.get_mut("cacheStatus").and_then(Value::as_object_mut) {
            c.remove("refreshedAt");
        }
    }
}

/// Compares two JSON values, numbers within 1e-9 relative.
#[track_caller]
pub fn assert_json_close(a: &Value, b: &Value, path: &str) {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            let scale = x.abs().max(y.abs()).max(1e-12);
            assert!((x - y).abs() / scale <= 1e-9, "{path}: {x} vs {y}");
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{path}: array lengths");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                assert_json_close(x, y, &format!("{path}[{i}]"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            let kx: Vec<&String> = x.keys().collect();
            let ky: Vec<&String> = y.keys().collect();
            assert_eq!(kx, ky, "{path}: keys");
            for (k, xv) in x {
                assert_json_close(xv, &y[k], &format!("{path}.{k}"));
            }
        }
        _ => assert_eq!(a, b, "{path}"),
    }
}
