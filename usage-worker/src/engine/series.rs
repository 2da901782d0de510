//! `sessions.usage.timeseries`: per-message usage points of one session (REFERENCE §3.7).
//!
//! Like OpenClaw, this reads the one transcript in full on every call (it is one session, and
//! per-message points are exactly what rollups aggregate away). Points are sorted by time and,
//! above 200, downsampled into buckets of `ceil(n / 200)` stamped with their last timestamp.

use std::fs::File;
use std::sync::atomic::AtomicBool;

use ipc_proto::{WorkerError, WorkerErrorKind};
use serde::ser::{Serialize, SerializeStruct, Serializer};

use super::discover::Discovered;
use super::line::{LineOutcome, parse_line};
use super::num::{Exact, Js};
use super::reader::{ReadError, read_lines};
use super::sqlite;
use super::sqlite_schema::SqliteError;
use super::store::PriceFn;

const MAX_POINTS: usize = 200;

#[derive(Debug, Clone, Copy, Default)]
struct Point {
    ts: i64,
    tokens: [u64; 5],
    cost: f64,
    cum_tokens: u64,
    cum_cost: f64,
}

impl Serialize for Point {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Point", 9)?;
        st.serialize_field("timestamp", &self.ts)?;
        st.serialize_field("input", &self.tokens[0])?;
        st.serialize_field("output", &self.tokens[1])?;
        st.serialize_field("cacheRead", &self.tokens[2])?;
        st.serialize_field("cacheWrite", &self.tokens[3])?;
        st.serialize_field("totalTokens", &self.tokens[4])?;
        st.serialize_field("cost", &Js(self.cost))?;
        st.serialize_field("cumulativeTokens", &self.cum_tokens)?;
        st.serialize_field("cumulativeCost", &Js(self.cum_cost))?;
        st.end()
    }
}

struct Payload<'a> {
    session_id: &'a str,
    points: Vec<Point>,
}

impl Serialize for Payload<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("SessionUsageTimeSeries", 2)?;
        st.serialize_field("sessionId", self.session_id)?;
        st.serialize_field("points", &self.points)?;
        st.end()
    }
}

/// Builds the payload; returns it with the bytes read.
pub fn timeseries(
    file: &Discovered,
    session_id: &str,
    max_line: u64,
    cancel: &AtomicBool,
    price: &PriceFn<'_>,
) -> Result<(String, u64), WorkerError> {
    let mut points = Vec::new();
    let on_line = |raw: &[u8]| {
        let line = raw.trim_ascii();
        if line.is_empty() || memchr::memchr(0, line).is_some() {
            return;
        }
        let Ok(text) = std::str::from_utf8(line) else {
            return;
        };
        let LineOutcome::Entry(e) = parse_line(text) else {
            return;
        };
        let (Some(u), Some(ts)) = (e.usage, e.ts) else {
            return;
        };
        if ts == 0 {
            return;
        }
        let [i, o, cr, cw] = u.parts();
        let cost = match e.cost {
            Some(c) => c.total,
            None => price(&file.agent_id, e.provider.as_deref(), e.model.as_deref()).map_or(0.0, |p| {
                (i as f64 * p.input
                    + o as f64 * p.output
                    + cr as f64 * p.cache_read
                    + cw as f64 * p.cache_write)
                    / 1e6
            }),
        };
        points.push(Point { ts, tokens: [i, o, cr, cw, u.total_tokens()], cost, ..Point::default() });
    };
    let bytes_read = read_session(file, session_id, max_line, cancel, on_line)?;
    points.sort_by_key(|p| p.ts);
    let points = downsample(points);
    let payload = Payload { session_id, points };
    let json = serde_json::to_string(&payload)
        .map_err(|e| WorkerError::new(WorkerErrorKind::Internal, e.to_string()))?;
    Ok((json, bytes_read))
}

/// Reads one whole session, from its JSONL file or its SQLite rows, for the per-message views
/// (timeseries, logs), which OpenClaw also answers by re-reading the transcript. Returns the
/// bytes read; a missing transcript is OpenClaw's `INVALID_REQUEST` "No transcript found".
pub(super) fn read_session(
    file: &Discovered,
    session_id: &str,
    max_line: u64,
    cancel: &AtomicBool,
    on_line: impl FnMut(&[u8]),
) -> Result<u64, WorkerError> {
    let not_found = |e: &dyn std::fmt::Display| {
        WorkerError::new(
            WorkerErrorKind::InvalidRequest,
            format!("No transcript found for session: {session_id} ({e})"),
        )
    };
    let cancelled = || WorkerError::new(WorkerErrorKind::Cancelled, "cancelled");
    if sqlite::is_session(file) {
        return sqlite::read_events(file, max_line, cancel, on_line).map_err(|e| match e {
            SqliteError::Cancelled => cancelled(),
            e => not_found(&e),
        });
    }
    let f = File::open(&file.path).map_err(|e| not_found(&e))?;
    let out = read_lines(&f, 0, max_line, cancel, on_line).map_err(|e| match e {
        ReadError::Cancelled => cancelled(),
        ReadError::Io(e) => not_found(&e),
    })?;
    Ok(out.bytes_read)
}

/// Cumulative sums, and buckets of `ceil(n / 200)` points above 200 points.
fn downsample(points: Vec<Point>) -> Vec<Point> {
    let step = if points.len() > MAX_POINTS { points.len().div_ceil(MAX_POINTS) } else { 1 };
    let mut out = Vec::with_capacity(points.len().div_ceil(step));
    let (mut cum_tokens, mut cum_cost) = (0u64, Exact::ZERO);
    for chunk in points.chunks(step) {
        let mut p = Point { ts: chunk.last().map_or(0, |p| p.ts), ..Point::default() };
        let mut cost = Exact::ZERO;
        for x in chunk {
            for (a, b) in p.tokens.iter_mut().zip(x.tokens) {
                *a = a.saturating_add(b);
            }
            cost.add_f64(x.cost);
        }
        p.cost = cost.value();
        cum_tokens = cum_tokens.saturating_add(p.tokens[4]);
        cum_cost.add(cost);
        p.cum_tokens = cum_tokens;
        p.cum_cost = cum_cost.value();
        out.push(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downsamples_to_at_most_200() {
        let pts: Vec<Point> = (0..450)
            .map(|i| Point { ts: i, tokens: [1, 0, 0, 0, 1], cost: 0.5, ..Point::default() })
            .collect();
        let out = downsample(pts);
        assert_eq!(out.len(), 150);
        assert_eq!(out[0].ts, 2);
        assert_eq!(out[0].tokens[4], 3);
        assert_eq!(out.last().unwrap().cum_tokens, 450);
        assert_eq!(out.last().unwrap().cum_cost, 225.0);
    }
}
