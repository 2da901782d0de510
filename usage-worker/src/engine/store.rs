//! The small per-agent JSON files: `sessions.json` (session metadata joined to transcripts by
//! session id) and `agent/models.json` (per-million-token prices for messages without a stored
//! cost). Both are re-read only when their size or mtime changes.
//!
//! A malformed file is a diagnostic, never an error: transcripts still count, they just lose
//! their labels (store) or stay unpriced (`missingCostEntries`).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::discover::FileMeta;

/// The `sessions.json` fields usage rows show.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreEntry {
    pub key: String,
    pub session_id: String,
    pub updated_at: Option<f64>,
    pub label: Option<String>,
    /// `entry.channel ?? entry.origin.provider`
    pub channel: Option<String>,
    /// `entry.chatType ?? entry.origin.chatType`
    pub chat_type: Option<String>,
    /// `origin` as raw JSON text, passed through.
    pub origin: Option<String>,
    pub model_provider: Option<String>,
    pub model: Option<String>,
    pub model_override: Option<String>,
    pub provider_override: Option<String>,
    pub family_key: Option<String>,
    pub family_ids: Vec<String>,
    /// File name of an explicit `sessionFile` (topic transcripts are named differently).
    pub session_file_name: Option<String>,
    /// `systemPromptReport` as raw JSON text (`contextWeight`).
    pub context_weight: Option<String>,
}

/// One agent's `sessions.json`, indexed.
#[derive(Debug, Clone, Default)]
pub struct StoreIndex {
    pub entries: Vec<StoreEntry>,
    by_key: HashMap<String, usize>,
    by_session_id: HashMap<String, usize>,
    by_file_name: HashMap<String, usize>,
    /// Every id listed in some entry's `usageFamilySessionIds`.
    pub family_ids: HashSet<String>,
}

/// The pass-through fields of an entry as written, so their key order survives (a
/// `serde_json::Value` would sort object keys).
#[derive(Deserialize)]
struct RawFields<'a> {
    #[serde(borrow)]
    origin: Option<&'a RawValue>,
    #[serde(borrow, rename = "systemPromptReport")]
    system_prompt_report: Option<&'a RawValue>,
}

/// JSON text without insignificant whitespace (store files are pretty-printed).
fn compact_json(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let (mut in_str, mut escaped) = (false, false);
    for c in raw.chars() {
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
            out.push(c);
        } else if !c.is_ascii_whitespace() {
            out.push(c);
        }
    }
    out
}

fn raw_text(r: Option<&RawValue>) -> Option<String> {
    r.map(RawValue::get).filter(|t| t.trim() != "null").map(compact_json)
}

fn str_of(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_owned)
}

impl StoreIndex {
    /// Parses `{sessionKey: entry}`. Entries without a string `sessionId` are ignored.
    pub fn parse(bytes: &[u8]) -> Result<StoreIndex, String> {
        let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
        let root: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let Value::Object(map) = root else {
            return Err("sessions.json is not a JSON object".into());
        };
        let raw_of: HashMap<String, &RawValue> = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut idx = StoreIndex::default();
        for (key, v) in map {
            let raw = raw_of.get(&key).and_then(|r| serde_json::from_str::<RawFields<'_>>(r.get()).ok());
            let Some(session_id) = str_of(&v, "sessionId") else {
                continue;
            };
            let origin = v.get("origin").filter(|o| !o.is_null());
            let family_ids: Vec<String> = v
                .get("usageFamilySessionIds")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            idx.family_ids.extend(family_ids.iter().cloned());
            let e = StoreEntry {
                key: key.clone(),
                session_id,
                updated_at: v.get("updatedAt").and_then(Value::as_f64),
                label: str_of(&v, "label"),
                channel: str_of(&v, "channel").or_else(|| origin.and_then(|o| str_of(o, "provider"))),
                chat_type: str_of(&v, "chatType").or_else(|| origin.and_then(|o| str_of(o, "chatType"))),
                origin: raw.as_ref().and_then(|r| raw_text(r.origin)),
                model_provider: str_of(&v, "modelProvider"),
                model: str_of(&v, "model"),
                model_override: str_of(&v, "modelOverride"),
                provider_override: str_of(&v, "providerOverride"),
                family_key: str_of(&v, "usageFamilyKey"),
                family_ids,
                session_file_name: str_of(&v, "sessionFile")
                    .and_then(|p| Path::new(&p).file_name().and_then(|n| n.to_str()).map(str::to_owned)),
                context_weight: raw.as_ref().and_then(|r| raw_text(r.system_prompt_report)),
            };
            idx.entries.push(e);
        }
        for (i, e) in idx.entries.iter().enumerate() {
            idx.by_key.insert(e.key.clone(), i);
            // Several keys may share a session id: prefer the most recently updated entry.
            let better = |j: usize| {
                let (a, b) = (&idx.entries[i], &idx.entries[j]);
                a.updated_at.unwrap_or(f64::MIN) > b.updated_at.unwrap_or(f64::MIN)
            };
            match idx.by_session_id.get(&e.session_id) {
                Some(&j) if !better(j) => {}
                _ => {
                    idx.by_session_id.insert(e.session_id.clone(), i);
                }
            }
            if let Some(f) = &e.session_file_name {
                idx.by_file_name.entry(f.clone()).or_insert(i);
            }
        }
        Ok(idx)
    }

    pub fn by_key(&self, key: &str) -> Option<&StoreEntry> {
        self.by_key.get(key).map(|&i| &self.entries[i])
    }

    pub fn by_session_id(&self, id: &str) -> Option<&StoreEntry> {
        self.by_session_id.get(id).map(|&i| &self.entries[i])
    }

    /// The entry of a transcript file: by session id, else by an explicit `sessionFile` name.
    pub fn for_file(&self, session_id: &str, file_name: &str) -> Option<&StoreEntry> {
        self.by_session_id(session_id).or_else(|| {
            let stem = file_name.find(".jsonl").map_or(file_name, |i| &file_name[..i + ".jsonl".len()]);
            self.by_file_name.get(stem).map(|&i| &self.entries[i])
        })
    }
}

/// Per-million-token prices of one model.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    pub cache_read: f64,
    pub cache_write: f64,
}

/// One agent's `models.json` prices, keyed by (provider, model id).
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    /// provider → model id → price (nested, so a lookup needs no allocation).
    map: HashMap<String, HashMap<String, Price>>,
}

impl PriceTable {
    /// Parses `{providers: {<p>: {models: [{id, cost: {input, output, cacheRead, cacheWrite}}]}}}`.
    pub fn parse(bytes: &[u8]) -> Result<PriceTable, String> {
        let root: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let mut t = PriceTable::default();
        let Some(providers) = root.get("providers").and_then(Value::as_object) else {
            return Ok(t);
        };
        for (p, pv) in providers {
            let Some(models) = pv.get("models").and_then(Value::as_array) else {
                continue;
            };
            for m in models {
                let (Some(id), Some(cost)) =
                    (m.get("id").and_then(Value::as_str), m.get("cost").filter(|c| c.is_object()))
                else {
                    continue;
                };
                let num = |k: &str| cost.get(k).and_then(Value::as_f64).unwrap_or(0.0);
                t.map.entry(p.clone()).or_default().entry(id.to_owned()).or_insert(Price {
                    input: num("input"),
                    output: num("output"),
                    cache_read: num("cacheRead"),
                    cache_write: num("cacheWrite"),
                });
            }
        }
        Ok(t)
    }

    pub fn get(&self, provider: &str, model: &str) -> Option<Price> {
        self.map.get(provider)?.get(model).copied()
    }
}

/// Prices entries without a stored cost: (agent, provider, model) → per-million prices.
pub type PriceFn<'a> = dyn Fn(&str, Option<&str>, Option<&str>) -> Option<Price> + 'a;

/// Stamps of [`Cached`] values: process-wide, so two values never share one.
static NEXT_STAMP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_stamp() -> u64 {
    NEXT_STAMP.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A parsed file remembered with the stat facts it was parsed at.
#[derive(Debug, Clone)]
pub struct Cached<T> {
    meta: Option<FileMeta>,
    pub value: Option<T>,
    pub error: Option<String>,
    /// Changes whenever `value` or `error` may have changed, so answers built from this value can
    /// be cached against it. A fresh `Cached` (e.g. a database's re-read session index) gets a
    /// new stamp.
    pub stamp: u64,
}

impl<T> Default for Cached<T> {
    fn default() -> Self {
        Cached { meta: None, value: None, error: None, stamp: next_stamp() }
    }
}

impl<T> Cached<T> {
    /// Forgets the value; the stamp changes only if there was something to forget.
    fn clear(&mut self, error: Option<String>) {
        if self.meta.is_some() || self.value.is_some() || self.error != error {
            *self = Cached { error, ..Cached::default() };
        }
    }

    /// Re-parses `path` if it changed; a missing file is `None` without an error.
    pub fn refresh(&mut self, path: &Path, parse: impl FnOnce(&[u8]) -> Result<T, String>) {
        let meta = match fs::metadata(path) {
            Ok(m) if m.is_file() => FileMeta::of(&m),
            Ok(_) => return self.clear(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return self.clear(None),
            Err(e) => return self.clear(Some(format!("{}: {e}", path.display()))),
        };
        if self.meta == Some(meta) {
            return;
        }
        self.meta = Some(meta);
        self.stamp = next_stamp();
        match fs::read(path) {
            Ok(bytes) => match parse(&bytes) {
                Ok(v) => {
                    self.value = Some(v);
                    self.error = None;
                }
                Err(e) => {
                    self.value = None;
                    self.error = Some(format!("{}: {e}", path.display()));
                }
            },
            Err(e) => {
                self.value = None;
                self.error = Some(format!("{}: {e}", path.display()));
            }
        }
    }
}

/// Where an agent's files live.
pub fn store_path(state_dir: &Path, agent: &str) -> PathBuf {
    super::discover::sessions_dir(state_dir, agent).join("sessions.json")
}

/// Where an agent's model catalog lives.
pub fn models_path(state_dir: &Path, agent: &str) -> PathBuf {
    state_dir.join("agents").join(agent).join("agent").join("models.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_joins_and_prefers_recent() {
        let idx = StoreIndex::parse(
            br#"{"agent:a:main":{"sessionId":"s1","updatedAt":5,"origin":{"provider":"slack","chatType":"direct"}},
                 "agent:a:old":{"sessionId":"s1","updatedAt":1,"channel":"x"},
                 "agent:a:t":{"sessionId":"s2","sessionFile":"/x/s2-topic-9.jsonl","usageFamilySessionIds":["s0"," "]},
                 "bad":{"updatedAt":3}}"#,
        )
        .unwrap();
        let e = idx.by_session_id("s1").unwrap();
        assert_eq!(e.key, "agent:a:main");
        assert_eq!(e.channel.as_deref(), Some("slack"));
        assert_eq!(e.chat_type.as_deref(), Some("direct"));
        assert_eq!(
            idx.for_file("s2-topic-9", "s2-topic-9.jsonl.reset.2026-01-01T00-00-00Z").unwrap().key,
            "agent:a:t"
        );
        assert!(idx.family_ids.contains("s0") && idx.family_ids.len() == 1);
        assert_eq!(e.origin.as_deref(), Some(r#"{"provider":"slack","chatType":"direct"}"#));
        assert!(StoreIndex::parse(b"[1]").is_err());
        assert!(StoreIndex::parse(b"{oops").is_err());
    }

    #[test]
    fn prices() {
        let t = PriceTable::parse(
            br#"{"providers":{"acme":{"models":[{"id":"m1","cost":{"input":3,"output":15,"cacheRead":0.3}},{"id":"m2"}]}}}"#,
        )
        .unwrap();
        assert_eq!(t.get("acme", "m1").unwrap().output, 15.0);
        assert_eq!(t.get("acme", "m1").unwrap().cache_write, 0.0);
        assert!(t.get("acme", "m2").is_none());
    }
}
