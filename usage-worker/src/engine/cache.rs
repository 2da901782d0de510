//! What the engine remembers between answers besides rollups, so that a call over an unchanged
//! store costs a `stat` pass, and a call after one append re-summarises one file.
//!
//! Three layers, each checked against stamps rather than trusted:
//! - per-file [`Summary`]s for the most recent query shapes (range, zone and prices), valid while
//!   the file's rollup generation is unchanged;
//! - whole answers, without their volatile fields (`updatedAt`, `cacheStatus`, `diagnostics`),
//!   keyed by the query and a fingerprint of everything the answer was built from;
//! - inside the last `sessions.usage` answer, where each rendered row's text lies and the stamp
//!   it was rendered at (its files' generations, its store entry), so the next answer of the
//!   same shape copies unchanged rows instead of rendering them again.
//!
//! Everything here is derived data: dropping it only costs time.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use ipc_proto::UsageQuery;

use super::summary::Summary;

/// Shapes whose per-file summaries are kept (e.g. the dashboard's `usage.cost` and
/// `sessions.usage` ranges).
const SUMMARY_SLOTS: usize = 2;
/// Small whole answers (`usage.cost`) kept.
const BODIES: usize = 8;

/// FNV-1a as a [`Hasher`]: deterministic (no random state), so a fingerprint means the same
/// thing on every call.
#[derive(Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Hashes the unique `u64` ids the caches are keyed by (generations, stamps) with one multiply:
/// they are already well spread, and SipHash would cost more than the lookup.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }
}

/// A map keyed by unique ids.
pub type IdMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<IdHasher>>;

/// The FNV hash of a value.
pub fn hash_of<T: Hash + ?Sized>(t: &T) -> u64 {
    let mut h = Fnv::default();
    t.hash(&mut h);
    h.finish()
}

/// What a file's summary depends on besides the file: the range, the day zone and prices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    pub start: i64,
    pub end: i64,
    pub offset_ms: i64,
    pub prices: u64,
}

/// Per-file summaries of one shape, by the file's generation (which changes with its rollup
/// and its path, so an entry can never be stale, only unused).
pub type SummaryMap = IdMap<Summary>;

/// The last `sessions.usage` answer without its volatile fields, as shared pieces: the text
/// is `{"updatedAt":…,` + `head` + rows joined by commas + `tail` + the volatile tail + `}`.
pub struct SessionsBody {
    pub query: UsageQuery,
    pub fingerprint: u64,
    /// What rows depend on besides their own stamps: shape, grouping, context weights.
    pub row_shape: u64,
    /// `"startDate":…,"endDate":…,"sessions":[`
    pub head: Arc<str>,
    /// Rendered rows in answer order, with the stamp each was rendered at.
    pub rows: Vec<(u64, Arc<str>)>,
    /// `],"totals":…,"aggregates":…,"creatorOptions":[…]`
    pub tail: Arc<str>,
}

impl SessionsBody {
    /// The whole answer as pieces, with this call's volatile fields.
    pub fn payload(&self, now_ms: i64, volatile_tail: &str) -> Payload {
        let mut parts = Vec::with_capacity(2 * self.rows.len() + 4);
        parts.push(Arc::from(volatile_head(now_ms)));
        parts.push(Arc::clone(&self.head));
        let comma: Arc<str> = Arc::from(",");
        for (i, (_, row)) in self.rows.iter().enumerate() {
            if i > 0 {
                parts.push(Arc::clone(&comma));
            }
            parts.push(Arc::clone(row));
        }
        parts.push(Arc::clone(&self.tail));
        parts.push(Arc::from(format!("{volatile_tail}}}")));
        Payload::from_parts(parts)
    }
}

/// An answer's JSON text as pieces to be written one after the other. Large answers keep their
/// rows shared with the cache, so sending one never copies it into a single buffer first.
#[derive(Debug, Clone)]
pub struct Payload {
    parts: Vec<Arc<str>>,
    len: usize,
}

impl Payload {
    pub fn from_parts(parts: Vec<Arc<str>>) -> Payload {
        let len = parts.iter().map(|p| p.len()).sum();
        Payload { parts, len }
    }

    pub fn text(text: String) -> Payload {
        Payload::from_parts(vec![Arc::from(text)])
    }

    /// The pieces, in order.
    pub fn parts(&self) -> &[Arc<str>] {
        &self.parts
    }

    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The text in one string (a copy).
    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(self.len);
        for p in &self.parts {
            out.push_str(p);
        }
        out
    }
}

/// `{"updatedAt":…,`: what every answer starts with.
pub fn volatile_head(now_ms: i64) -> String {
    format!("{{\"updatedAt\":{now_ms},")
}

/// The engine's answer caches.
#[derive(Default)]
pub struct AnswerCache {
    /// Most recently used first.
    summaries: VecDeque<(Shape, SummaryMap)>,
    pub sessions: Option<SessionsBody>,
    /// `(query, fingerprint, body)` of small answers, most recent last.
    bodies: VecDeque<(UsageQuery, u64, String)>,
}

impl std::fmt::Debug for AnswerCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerCache")
            .field("summary_shapes", &self.summaries.len())
            .field("sessions", &self.sessions.as_ref().map(|s| s.rows.len()))
            .field("bodies", &self.bodies.len())
            .finish()
    }
}

impl AnswerCache {
    /// The summaries of `shape`, made the most recently used (created empty if new).
    pub fn summaries(&mut self, shape: Shape) -> &mut SummaryMap {
        match self.summaries.iter().position(|(s, _)| *s == shape) {
            Some(0) => {}
            Some(i) => {
                let slot = self.summaries.remove(i).expect("index in range");
                self.summaries.push_front(slot);
            }
            None => {
                self.summaries.truncate(SUMMARY_SLOTS - 1);
                self.summaries.push_front((shape, IdMap::default()));
            }
        }
        &mut self.summaries[0].1
    }

    /// A cached small answer body.
    pub fn body(&self, query: &UsageQuery, fingerprint: u64) -> Option<&str> {
        self.bodies.iter().find(|(q, f, _)| *f == fingerprint && q == query).map(|(_, _, b)| b.as_str())
    }

    pub fn put_body(&mut self, query: &UsageQuery, fingerprint: u64, body: String) {
        self.bodies.retain(|(q, _, _)| q != query);
        if self.bodies.len() >= BODIES {
            self.bodies.pop_front();
        }
        self.bodies.push_back((query.clone(), fingerprint, body));
    }

    /// Approximate heap bytes held, for logs.
    pub fn heap_bytes(&self) -> usize {
        let bodies: usize = self.bodies.iter().map(|(_, _, b)| b.capacity()).sum();
        let sessions = self.sessions.as_ref().map_or(0, |s| {
            s.head.len() + s.tail.len() + s.rows.iter().map(|(_, r)| r.len() + 40).sum::<usize>()
        });
        let summaries: usize = self.summaries.iter().map(|(_, m)| m.len() * 1024).sum();
        bodies + sessions + summaries
    }
}

/// The answer text: `{"updatedAt":…,` + body fields + `,"cacheStatus":…,"diagnostics":…}`.
/// `parts` hold the fields in between, without braces.
pub fn assemble(updated_at: i64, parts: &[&str], tail: &str) -> String {
    let len: usize = parts.iter().map(|p| p.len()).sum::<usize>() + tail.len() + 40;
    let mut out = String::with_capacity(len);
    out.push_str(&volatile_head(updated_at));
    for p in parts {
        out.push_str(p);
    }
    out.push_str(tail);
    out.push('}');
    out
}

/// The fields of a serialised struct, without its braces: `"a":1,"b":2`.
pub fn fields_of<T: serde::Serialize>(value: &T) -> Result<String, serde_json::Error> {
    let mut s = serde_json::to_string(value)?;
    debug_assert!(s.starts_with('{') && s.ends_with('}'));
    s.pop();
    s.remove(0);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_assembly() {
        let f = fields_of(&serde_json::json!({"a": 1, "b": [2]})).unwrap();
        assert_eq!(f, r#""a":1,"b":[2]"#);
        let out = assemble(7, &[&f], r#","c":{}"#);
        assert_eq!(out, r#"{"updatedAt":7,"a":1,"b":[2],"c":{}}"#);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["updatedAt"], 7);
    }

    #[test]
    fn summary_slots_are_lru() {
        let mut c = AnswerCache::default();
        let shape = |start| Shape { start, end: 10, offset_ms: 0, prices: 0 };
        c.summaries(shape(1)).insert(1, Summary::default());
        c.summaries(shape(2));
        assert_eq!(c.summaries(shape(1)).len(), 1, "kept while among the last two");
        c.summaries(shape(3));
        assert_eq!(c.summaries(shape(2)).len(), 0, "evicted: 1 and 3 were used after it");
        assert_eq!(hash_of("x"), hash_of("x"));
    }
}
