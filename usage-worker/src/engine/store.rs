//! The small per-agent JSON files: `sessions.json` (session metadata joined to transcripts by
//! session id) and `agent/models.json` (per-million-token prices for messages without a stored
//! cost). Both are re-read only when their size or mtime changes.
//!
//! A malformed file is a diagnostic, never an error: transcripts still count, they just lose
//! their labels (store) or stay unpriced (`missingCostEntries`).

use foldhash::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::discover::FileMeta;
use super::json::{Bad, Cursor, R};

/// The `sessions.json` fields usage rows show.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreEntry {
    pub key: String,
    pub session_id: String,
    pub updated_at: Option<f64>,
    /// `label`, else `displayName`, else a group's `<channel>:g-<peer>` (OpenClaw's row `label`).
    pub label: Option<String>,
    /// `entry.channel ?? entry.origin.provider`, unless that is an internal channel
    /// ([`is_internal_channel`]).
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

impl std::hash::Hash for HashF64 {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.0.map(f64::to_bits).hash(h);
    }
}

/// `Option<f64>` hashed by its bits.
struct HashF64(Option<f64>);

impl StoreEntry {
    /// A hash of every field: what a rendered row depends on of its entry.
    pub fn hash(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = fnv::FnvHasher::default();
        (
            &self.key,
            &self.session_id,
            HashF64(self.updated_at),
            &self.label,
            &self.channel,
            &self.chat_type,
            &self.origin,
            &self.model_provider,
            &self.model,
        )
            .hash(&mut h);
        (
            &self.model_override,
            &self.provider_override,
            &self.family_key,
            &self.family_ids,
            &self.session_file_name,
            &self.context_weight,
        )
            .hash(&mut h);
        h.finish()
    }
}

/// The fields of an entry usage reads, from one pass over its JSON: the others (token
/// counters, delivery state, skills, ...) are skipped without being built, which made listing
/// an agent of thousands of sessions several times cheaper than a whole `serde_json::Value`.
/// A repeated key keeps its last value, as a `Value` would. `origin` and `systemPromptReport`
/// stay raw text, so their key order survives (a `Value` would sort object keys).
#[derive(Default)]
struct Fields<'a> {
    session_id: Option<Value>,
    updated_at: Option<Value>,
    label: Option<Value>,
    display_name: Option<Value>,
    channel: Option<Value>,
    chat_type: Option<Value>,
    model_provider: Option<Value>,
    model: Option<Value>,
    model_override: Option<Value>,
    provider_override: Option<Value>,
    family_key: Option<Value>,
    family_ids: Option<Value>,
    session_file: Option<Value>,
    /// Raw JSON text.
    origin: Option<&'a str>,
    system_prompt_report: Option<&'a str>,
    /// 2026.9's delivery state, where [`node_entry`] finds an `origin` the entry lacks.
    delivery: Option<&'a str>,
}

impl<'a> Fields<'a> {
    /// The fields of one entry's JSON text, read with the JSON cursor: what serde_json reads
    /// through [`Fields`]'s `Deserialize` (the property test `fields_read_like_serde_json`
    /// holds them equal), with the members not read passed by the cursor's skip and the raw
    /// ones taken as text spans. Listing an SQLite agent reads one per session node, and
    /// serde_json's pass was a third of that listing's instructions. `None`: not a JSON object,
    /// as serde_json would say.
    fn read(text: &'a str) -> Option<Fields<'a>> {
        let mut c = Cursor::new(text.as_bytes());
        if c.peek().ok()? != b'{' {
            return None;
        }
        let mut f = Fields::default();
        let raw = |c: &mut Cursor<'a>| -> R<&'a str> {
            c.peek()?;
            let at = c.pos();
            c.raw_value()?;
            text.get(at..c.pos()).ok_or(Bad)
        };
        c.object(|c, key| {
            let slot = match &*key {
                b"sessionId" => &mut f.session_id,
                b"updatedAt" => &mut f.updated_at,
                b"label" => &mut f.label,
                b"displayName" => &mut f.display_name,
                b"channel" => &mut f.channel,
                b"chatType" => &mut f.chat_type,
                b"modelProvider" => &mut f.model_provider,
                b"model" => &mut f.model,
                b"modelOverride" => &mut f.model_override,
                b"providerOverride" => &mut f.provider_override,
                b"usageFamilyKey" => &mut f.family_key,
                b"usageFamilySessionIds" => &mut f.family_ids,
                b"sessionFile" => &mut f.session_file,
                // Kept as text: `origin` and `systemPromptReport` as written, `delivery` for its
                // `origin`.
                b"origin" | b"systemPromptReport" | b"delivery" => {
                    let text = match &*key {
                        b"origin" => &mut f.origin,
                        b"systemPromptReport" => &mut f.system_prompt_report,
                        _ => &mut f.delivery,
                    };
                    *text = Some(raw(c)?);
                    return Ok(());
                }
                _ => return c.skip(),
            };
            *slot = Some(match c.peek()? {
                b'"' => Value::String(c.string()?.into_owned()),
                b'-' | b'0'..=b'9' => Value::from(c.number()?),
                // Literals, lists and objects (rare here): serde_json reads the text, so that a
                // value is refused exactly where it would be (lone surrogates, numbers out of
                // range, nesting past its limit).
                _ => serde_json::from_str(raw(c)?).map_err(|_| Bad)?,
            });
            Ok(())
        })
        .ok()?;
        c.at_end().then_some(f)
    }
}

/// `delivery.origin`'s text (the last one, as a map keeps it), when `delivery` is an object.
fn delivery_origin(delivery: &str) -> Option<&str> {
    let mut c = Cursor::new(delivery.as_bytes());
    if c.peek().ok()? != b'{' {
        return None;
    }
    let mut origin = None;
    c.object(|c, key| {
        if &*key != b"origin" {
            return c.skip();
        }
        c.peek()?;
        let at = c.pos();
        c.raw_value()?;
        origin = Some(delivery.get(at..c.pos()).ok_or(Bad)?);
        Ok(())
    })
    .ok()?;
    c.at_end().then_some(origin).flatten()
}

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                out.write_str("a session entry object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut f = Fields::default();
                while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    let slot = match k.as_ref() {
                        "sessionId" => &mut f.session_id,
                        "updatedAt" => &mut f.updated_at,
                        "label" => &mut f.label,
                        "displayName" => &mut f.display_name,
                        "channel" => &mut f.channel,
                        "chatType" => &mut f.chat_type,
                        "modelProvider" => &mut f.model_provider,
                        "model" => &mut f.model,
                        "modelOverride" => &mut f.model_override,
                        "providerOverride" => &mut f.provider_override,
                        "usageFamilyKey" => &mut f.family_key,
                        "usageFamilySessionIds" => &mut f.family_ids,
                        "sessionFile" => &mut f.session_file,
                        "origin" => {
                            f.origin = Some(map.next_value::<&RawValue>()?.get());
                            continue;
                        }
                        "systemPromptReport" => {
                            f.system_prompt_report = Some(map.next_value::<&RawValue>()?.get());
                            continue;
                        }
                        "delivery" => {
                            f.delivery = Some(map.next_value::<&RawValue>()?.get());
                            continue;
                        }
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value()?);
                }
                Ok(f)
            }
        }
        d.deserialize_map(V)
    }
}

/// JSON text without insignificant whitespace (store files are pretty-printed).
fn compact_json(raw: &str) -> String {
    // OpenClaw writes compact JSON: most texts have no whitespace at all.
    if !raw.bytes().any(|b| matches!(b, b' ' | b'\n' | b'\r' | b'\t')) {
        return raw.to_owned();
    }
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

fn raw_text(r: Option<&str>) -> Option<String> {
    r.filter(|t| t.trim() != "null").map(compact_json)
}

fn str_of(v: &Option<Value>) -> Option<String> {
    v.as_ref().and_then(Value::as_str).map(str::to_owned)
}

fn str_in(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_owned)
}

/// Channels OpenClaw treats as internal routes rather than deliveries (`isInternalRouteContext`,
/// `message-channel-constants`): the legacy importer turns an entry on one of them into
/// `{kind: "internal"}` delivery state, which has no channel.
pub fn is_internal_channel(channel: &str) -> bool {
    matches!(
        channel.trim().to_ascii_lowercase().as_str(),
        "webchat" | "heartbeat" | "cron" | "webhook" | "voice" | "sessions_send"
    )
}

/// The key OpenClaw 2026.9.6 gives a legacy entry: keys are `agent:<agentId>:<rest>`, and its
/// importer prefixes one stored without its agent (`cron:<id>` in agent `a2` becomes
/// `agent:a2:cron:<id>`); the legacy `global` and `unknown` keys stay as they are.
pub fn canonical_key(agent: &str, key: &str) -> String {
    if key.starts_with("agent:") || key == "global" || key == "unknown" || key.is_empty() {
        key.to_owned()
    } else {
        format!("agent:{agent}:{key}")
    }
}

/// The title OpenClaw 2026.9.6 gives a group session that has none: `<channel>:g-<peer>` from
/// its key (`agent:<agent>:<channel>:group:<peer>`), e.g. `discord:g-g6`.
fn group_title(key: &str) -> Option<String> {
    let parts: Vec<&str> = key.split(':').collect();
    match parts.as_slice() {
        ["agent", _, channel, "group", peer] if !channel.is_empty() && !peer.is_empty() => {
            Some(format!("{channel}:g-{peer}"))
        }
        _ => None,
    }
}

/// One entry from its key and raw JSON text; `None` without a string `sessionId`.
fn entry_of(key: String, raw: &str) -> Option<StoreEntry> {
    entry_from(key, serde_json::from_str(raw).ok()?)
}

/// What an OpenClaw 2026.7+ session node holds beside its `entry_json` (the `sessions.json`
/// entry it was imported from): where 2026.9 moved a field out of the entry, these fill it in.
#[derive(Debug, Default)]
pub struct NodeFacts<'a> {
    /// `current_session_id`: the entry's `sessionId`.
    pub session_id: &'a str,
    /// The node's update time: `updatedAt` when the entry has none.
    pub updated_ms: i64,
    /// The node's label, over the entry's.
    pub label: Option<&'a str>,
    /// The current window's `channel`, `chatType`, `modelProvider`, `model` and `displayName`,
    /// each where the entry has none.
    pub channel: Option<&'a str>,
    pub chat_type: Option<&'a str>,
    pub model_provider: Option<&'a str>,
    pub model: Option<&'a str>,
    pub display_name: Option<&'a str>,
}

/// The entry a session node stands for: its `entry_json` (not an object: the node's facts
/// alone) without `sessionFile`, with `n` filled in, `origin` from `delivery.origin` when it
/// has none, and `family` given the entry's own `usageFamilySessionIds` (a list of strings,
/// else none) returning the whole family (empty: the entry's own field stays as it is).
/// Built from the parsed fields, not from a `sessions.json` text written and parsed again
/// (that round trip was most of listing a database of 6,000 sessions).
pub fn node_entry(
    key: String,
    entry_json: &str,
    n: &NodeFacts<'_>,
    family: impl FnOnce(Vec<String>) -> Vec<String>,
) -> StoreEntry {
    node_entry_of(key, Fields::read(entry_json).unwrap_or_default(), n, family, delivery_origin)
}

/// [`node_entry`] from the entry's fields; `origin_of` finds `delivery.origin`'s text.
fn node_entry_of(
    key: String,
    mut f: Fields<'_>,
    n: &NodeFacts<'_>,
    family: impl FnOnce(Vec<String>) -> Vec<String>,
    origin_of: fn(&str) -> Option<&str>,
) -> StoreEntry {
    f.session_file = None;
    f.session_id = Some(Value::String(n.session_id.to_owned()));
    if f.updated_at.is_none() {
        f.updated_at = Some(Value::from(n.updated_ms));
    }
    if f.origin.is_none() {
        f.origin = f.delivery.and_then(origin_of);
    }
    for (slot, value) in [
        (&mut f.channel, n.channel),
        (&mut f.chat_type, n.chat_type),
        (&mut f.model_provider, n.model_provider),
        (&mut f.model, n.model),
        (&mut f.display_name, n.display_name),
    ] {
        if slot.is_none()
            && let Some(v) = value
        {
            *slot = Some(Value::String(v.to_owned()));
        }
    }
    if let Some(l) = n.label {
        f.label = Some(Value::String(l.to_owned()));
    }
    let own: Vec<String> = f
        .family_ids
        .as_ref()
        .and_then(Value::as_array)
        .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let family = family(own);
    if !family.is_empty() {
        f.family_ids = Some(Value::Array(family.into_iter().map(Value::String).collect()));
    }
    entry_from(key, f).expect("a string sessionId was set")
}

/// One entry from its key and parsed fields; `None` without a string `sessionId`.
fn entry_from(key: String, f: Fields<'_>) -> Option<StoreEntry> {
    let session_id = str_of(&f.session_id)?;
    // Parsed only when a field falls back to it (most entries have both).
    let origin = std::cell::OnceCell::new();
    let origin = || {
        origin
            .get_or_init(|| {
                f.origin.and_then(|o| serde_json::from_str::<Value>(o).ok()).filter(|o| !o.is_null())
            })
            .as_ref()
    };
    let family_ids: Vec<String> = f
        .family_ids
        .as_ref()
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
    let channel = str_of(&f.channel).or_else(|| origin().and_then(|o| str_in(o, "provider")));
    // OpenClaw 2026.9.6 keeps a delivery route only for external channels: a session on an
    // internal one (webchat, heartbeat, …) has no channel, no origin and no `byChannel` row.
    let internal = channel.as_deref().is_some_and(is_internal_channel);
    let group = group_title(&key);
    Some(StoreEntry {
        key,
        session_id,
        updated_at: f.updated_at.as_ref().and_then(Value::as_f64),
        label: str_of(&f.label).or_else(|| str_of(&f.display_name)).or(group),
        channel: channel.filter(|_| !internal),
        chat_type: str_of(&f.chat_type).or_else(|| origin().and_then(|o| str_in(o, "chatType"))),
        origin: raw_text(f.origin).filter(|_| !internal),
        model_provider: str_of(&f.model_provider),
        model: str_of(&f.model),
        model_override: str_of(&f.model_override),
        provider_override: str_of(&f.provider_override),
        family_key: str_of(&f.family_key),
        family_ids,
        session_file_name: str_of(&f.session_file)
            .and_then(|p| Path::new(&p).file_name().and_then(|n| n.to_str()).map(str::to_owned)),
        context_weight: raw_text(f.system_prompt_report),
    })
}

/// Streams `{sessionKey: entry}` from `reader`, calling `f` for each entry in file order, one
/// entry in memory at a time (a store of 20,000 sessions is tens of MB of JSON). Entries without
/// a string `sessionId` are skipped.
pub fn for_each_entry<R: io::Read>(reader: R, mut f: impl FnMut(StoreEntry)) -> Result<(), String> {
    struct Entries<'f>(&'f mut dyn FnMut(StoreEntry));
    impl<'de> serde::de::Visitor<'de> for Entries<'_> {
        type Value = ();
        fn expecting(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            out.write_str("a JSON object of session entries")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some((key, raw)) = map.next_entry::<String, Box<RawValue>>()? {
                if let Some(e) = entry_of(key, raw.get()) {
                    (self.0)(e);
                }
            }
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_reader(io::BufReader::with_capacity(64 << 10, reader));
    serde::Deserializer::deserialize_map(&mut de, Entries(&mut f)).map_err(|e| {
        if e.is_data() { "sessions.json is not a JSON object of entries".to_owned() } else { e.to_string() }
    })?;
    de.end().map_err(|e| e.to_string())
}

/// Calls `f` with each `(key, raw entry)` of a `sessions.json` text held in memory, in file
/// order. Parsing from a slice is several times faster than through a reader (serde_json reads
/// those byte by byte), and the raw entries are borrowed, not copied.
fn for_each_raw<'a>(bytes: &'a [u8], mut f: impl FnMut(String, &'a RawValue)) -> Result<(), String> {
    struct Raw<'f, 'a>(&'f mut dyn FnMut(String, &'a RawValue));
    impl<'a> serde::de::Visitor<'a> for Raw<'_, 'a> {
        type Value = ();
        fn expecting(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            out.write_str("a JSON object of session entries")
        }
        fn visit_map<A: serde::de::MapAccess<'a>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some((key, raw)) = map.next_entry::<String, &'a RawValue>()? {
                (self.0)(key, raw);
            }
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde::Deserializer::deserialize_map(&mut de, Raw(&mut f)).map_err(|e| {
        if e.is_data() { "sessions.json is not a JSON object of entries".to_owned() } else { e.to_string() }
    })?;
    de.end().map_err(|e| e.to_string())
}

/// Every entry of a `sessions.json` text, in file order.
pub fn parse_entries(bytes: &[u8]) -> Result<Vec<StoreEntry>, String> {
    let mut out = Vec::new();
    for_each_raw(bytes, |key, raw| out.extend(entry_of(key, raw.get())))?;
    Ok(out)
}

/// `sessions.json` files up to this size are read whole and parsed from memory; larger ones
/// are streamed, one entry in memory at a time.
const READ_WHOLE_MAX: u64 = 64 << 20;

/// Whether a `sessions.json` of `len` bytes is streamed rather than read whole.
pub fn is_streamed(len: u64) -> bool {
    #[cfg(test)]
    if let Some(streamed) = READ_AS.get() {
        return streamed;
    }
    len > READ_WHOLE_MAX
}

/// Whether a `sessions.json` text of `len` bytes read whole has its entries built one at a
/// time ([`StoreRead::Whole`]).
fn is_walked(len: u64) -> bool {
    #[cfg(test)]
    if READ_AS.get().is_some() {
        return true;
    }
    len > COLLECT_MAX
}

#[cfg(test)]
thread_local! {
    /// Tests: every `sessions.json` read on this thread whatever its size is streamed
    /// (`Some(true)`) or read whole and walked (`Some(false)`).
    pub static READ_AS: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// Texts up to this size have their entries built in one list ([`StoreRead::All`]); larger
/// ones are handed over whole, their entries built one at a time as they are written
/// ([`StoreRead::Whole`]): held whole, a 39 MB text's 54,000 entries took as much memory again.
const COLLECT_MAX: u64 = 8 << 20;

/// What [`read_store`] found.
#[derive(Debug)]
pub enum StoreRead {
    /// Every entry, in file order.
    All(Vec<StoreEntry>),
    /// Every entry, to be built from the text as it is walked (a text over [`COLLECT_MAX`]).
    Whole(Whole),
    /// Every entry, to be streamed from the file (too large to read whole: [`is_streamed`]).
    Stream(std::fs::File),
    /// Only these entries differ from the digests compared with; every other entry is as it was.
    Changed(Changed),
}

/// Entries that changed, each with its position among the entries (which is where it was).
pub type Changed = Vec<(usize, StoreEntry)>;

/// One raw entry of a `sessions.json` as last read: a digest of its text, from its key's opening
/// quote to its value's end, and that text's length. The next read hashes the bytes where it
/// expects the entry; only an entry whose bytes differ is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    /// The low bit: the raw entry is an entry (it has a `sessionId`).
    hash: u64,
    len: usize,
}

impl Digest {
    fn of(text: &[u8], is_entry: bool) -> Digest {
        Digest { hash: digest(text) | u64::from(is_entry), len: text.len() }
    }

    fn is_entry(self) -> bool {
        self.hash & 1 == 1
    }
}

/// A digest of an entry's text, keyed per process: a text written to collide with another
/// (a label is user input) cannot be prepared in advance. The low bit is left for "is an entry".
fn digest(text: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    static KEY: std::sync::OnceLock<foldhash::quality::RandomState> = std::sync::OnceLock::new();
    KEY.get_or_init(Default::default).hash_one(text) & !1
}

/// Walks the top-level object of a `sessions.json` text with the JSON cursor, calling `f` with
/// each entry's key, its text's span (key to value end) and its value's text. `None` when the
/// text is not such an object (the caller falls back to serde_json, which says why).
fn walk_spans<'a>(text: &'a str, mut f: impl FnMut(String, std::ops::Range<usize>, &'a str)) -> Option<()> {
    let mut c = Cursor::new(text.as_bytes());
    c.expect(b'{').ok()?;
    if c.peek().ok()? == b'}' {
        c.seek(c.pos() + 1);
    } else {
        loop {
            c.peek().ok()?;
            let start = c.pos();
            let (key, raw) = pair(&mut c, text)?;
            f(key, start..c.pos(), raw);
            match c.peek().ok()? {
                b',' => c.seek(c.pos() + 1),
                b'}' => {
                    c.seek(c.pos() + 1);
                    break;
                }
                _ => return None,
            }
        }
    }
    c.at_end().then_some(())
}

/// The `"key": value` at the cursor: the key, unescaped, and the value's text.
fn pair<'a>(c: &mut Cursor<'a>, text: &'a str) -> Option<(String, &'a str)> {
    let key = c.string().ok()?.into_owned();
    c.expect(b':').ok()?;
    c.peek().ok()?;
    let value_at = c.pos();
    c.raw_value().ok()?;
    Some((key, text.get(value_at..c.pos())?))
}

/// The changed entries of `text` against the digests of its last read (`old`): every entry the
/// digests describe is checked by hashing the bytes where it should stand; one that differs is
/// parsed there. `None` (read it whole) when an entry came, went, stopped or started being an
/// entry, or more than `max_changed` changed, or the text does not hold together.
///
/// Why this is exact: an unchanged entry's bytes are a key and a complete value that were
/// parsed before, each verified span is followed by a separator checked here, and a JSON value
/// cannot be extended into a longer one past a checked `,` or `}`.
fn changed_since(text: &str, old: &[Digest], max_changed: usize) -> Option<(Changed, Vec<Digest>)> {
    let bytes = text.as_bytes();
    let mut c = Cursor::new(bytes);
    c.expect(b'{').ok()?;
    let mut digests = Vec::with_capacity(old.len());
    let mut changed = Vec::new();
    let mut ord = 0;
    for (k, o) in old.iter().enumerate() {
        if k > 0 {
            c.expect(b',').ok()?;
        }
        c.peek().ok()?;
        let start = c.pos();
        let span = bytes.get(start..start + o.len);
        if span.is_some_and(|s| digest(s) == o.hash & !1) {
            c.seek(start + o.len);
            digests.push(*o);
            ord += usize::from(o.is_entry());
            continue;
        }
        if changed.len() >= max_changed {
            return None;
        }
        let (key, raw) = pair(&mut c, text)?;
        let e = entry_of(key, raw);
        if e.is_some() != o.is_entry() {
            // An entry came or went: the positions after it moved.
            return None;
        }
        digests.push(Digest::of(&bytes[start..c.pos()], e.is_some()));
        if let Some(e) = e {
            changed.push((ord, e));
            ord += 1;
        }
    }
    c.expect(b'}').ok()?;
    c.at_end().then_some((changed, digests))
}

/// Reads the `sessions.json` at `path` (without following a symlink or blocking). With the
/// digests of its last read (`old`), only the entries whose text changed are built, while no
/// entry came, went or moved and at most `max_changed` changed: OpenClaw rewrites the whole
/// file after every turn (4.3 MB for 6,000 sessions), and parsing all of it for one changed
/// entry took ~3.7 ms of an append's ~10 (hashing it ~0.5 ms). Returns the file's digests (one
/// per raw entry) with the entries they come with: `None` with a [`StoreRead::Whole`] (its walk
/// makes them) or [`StoreRead::Stream`] (a file too large to read whole has none).
pub fn read_store(
    path: &Path,
    old: Option<&[Digest]>,
    max_changed: usize,
) -> Result<(StoreRead, Option<Vec<Digest>>), String> {
    use std::io::Read as _;
    let mut file = super::discover::open_regular(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if is_streamed(len) {
        return Ok((StoreRead::Stream(file), None));
    }
    let mut bytes = Vec::with_capacity(len as usize + 1);
    file.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    let Ok(text) = simdutf8::basic::from_utf8(&bytes) else {
        // serde_json says where the text is not UTF-8.
        return parse_entries(&bytes).map(|e| (StoreRead::All(e), None));
    };
    if let Some(old) = old
        && let Some((changed, digests)) = changed_since(text, old, max_changed)
    {
        return Ok((StoreRead::Changed(changed), Some(digests)));
    }
    if is_walked(bytes.len() as u64) {
        return Ok((StoreRead::Whole(Whole { bytes }), None));
    }
    let whole = Whole { bytes };
    let mut out = Vec::new();
    match whole.walk(|e| out.push(e)) {
        Some(digests) => Ok((StoreRead::All(out), Some(digests))),
        None => whole.fallback().map(|e| (StoreRead::All(e), None)),
    }
}

/// A `sessions.json` text read whole (UTF-8), its entries not built yet.
#[derive(Debug)]
pub struct Whole {
    bytes: Vec<u8>,
}

impl Whole {
    /// Calls `f` with each entry in file order and returns the text's digests; `None` (`f`
    /// may have had some entries) when the text is not an object of entries, for
    /// [`Whole::fallback`] to say why.
    pub fn walk(&self, mut f: impl FnMut(StoreEntry)) -> Option<Vec<Digest>> {
        let text = simdutf8::basic::from_utf8(&self.bytes).ok()?;
        let mut digests = Vec::new();
        walk_spans(text, |key, span, raw| {
            let e = entry_of(key, raw);
            digests.push(Digest::of(&self.bytes[span], e.is_some()));
            if let Some(e) = e {
                f(e);
            }
        })?;
        Some(digests)
    }

    /// What a text [`Whole::walk`] refused holds: serde_json's error (or, should it read what
    /// the cursor refused, its entries, without digests).
    pub fn fallback(&self) -> Result<Vec<StoreEntry>, String> {
        parse_entries(&self.bytes)
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
    /// The stat facts the value was read at.
    pub fn meta(&self) -> Option<FileMeta> {
        self.meta
    }

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
    fn entries_stream_in_file_order() {
        let e = parse_entries(
            br#"{"agent:a:main":{"sessionId":"s1","updatedAt":5,"origin":{"provider":"slack", "chatType":"direct"}},
                 "agent:a:old":{"sessionId":"s1","updatedAt":1,"channel":"x"},
                 "agent:a:t":{"sessionId":"s2","sessionFile":"/x/s2-topic-9.jsonl","usageFamilySessionIds":["s0"," "]},
                 "bad":{"updatedAt":3}}"#,
        )
        .unwrap();
        let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["agent:a:main", "agent:a:old", "agent:a:t"]);
        assert_eq!(e[0].channel.as_deref(), Some("slack"));
        assert_eq!(e[0].chat_type.as_deref(), Some("direct"));
        assert_eq!(e[0].origin.as_deref(), Some(r#"{"provider":"slack","chatType":"direct"}"#));
        assert_eq!(e[2].session_file_name.as_deref(), Some("s2-topic-9.jsonl"));
        assert_eq!(e[2].family_ids, ["s0"]);
        assert_ne!(e[0].hash(), e[1].hash());
        assert!(parse_entries(b"[1]").is_err());
        assert!(parse_entries(b"{oops").is_err());
        assert!(parse_entries(b"{} trailing").is_err());
    }

    /// The one-pass field reader reads entries as a whole `serde_json::Value` would: the last of
    /// repeated keys, keys written with escapes, other fields of any shape skipped, raw
    /// pass-through fields in their own key order, entries that are not objects or have no
    /// string `sessionId` left out.
    #[test]
    fn entry_fields_read_like_a_json_value() {
        let e = parse_entries(
            br#"{"k1":{"sessionId":"old","skills":{"deep":[1,{"x":[true,null,"\"s\""]}]},"sessionId":"s1",
                       "model":"m","model":"m2","\u006cabel":"escaped","systemPromptReport":{"z":1,"a":[2]},
                       "origin":7,"updatedAt":"not a number","usageFamilySessionIds":"nope"},
                 "k2":[1,2], "k3":"text", "k4":{"sessionId":5}, "k5":{"sessionId":"s5","origin":null}}"#,
        )
        .unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].key.as_str(), e[0].session_id.as_str()), ("k1", "s1"));
        assert_eq!((e[0].model.as_deref(), e[0].label.as_deref()), (Some("m2"), Some("escaped")));
        assert_eq!(e[0].context_weight.as_deref(), Some(r#"{"z":1,"a":[2]}"#));
        assert_eq!((e[0].origin.as_deref(), e[0].channel.as_deref()), (Some("7"), None));
        assert_eq!((e[0].updated_at, e[0].family_ids.len()), (None, 0));
        assert_eq!((e[1].key.as_str(), e[1].origin.as_deref()), ("k5", None));
    }

    #[test]
    fn legacy_keys_get_their_agent_and_internal_channels_no_route() {
        assert_eq!(canonical_key("a2", "cron:j1"), "agent:a2:cron:j1");
        assert_eq!(canonical_key("a2", "agent:a2:main"), "agent:a2:main");
        assert_eq!(canonical_key("a2", "global"), "global");
        let e = parse_entries(
            br#"{"agent:a:webchat:direct:u1":{"sessionId":"s1","channel":"webchat","origin":{"provider":"webchat"},"displayName":"Ann"},
                 "agent:a:slack:direct:u2":{"sessionId":"s2","origin":{"provider":"slack"},"label":"L","displayName":"D"}}"#,
        )
        .unwrap();
        assert_eq!(
            (e[0].channel.as_deref(), e[0].origin.as_deref(), e[0].label.as_deref()),
            (None, None, Some("Ann"))
        );
        assert_eq!((e[1].channel.as_deref(), e[1].label.as_deref()), (Some("slack"), Some("L")));
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

    /// A `sessions.json` text of entries built from `(key, sessionId?, updatedAt, label?)`,
    /// pretty or compact, with `extra` spaces after each separator.
    fn store_text(entries: &[(u8, Option<u8>, u32, Option<String>)], pretty: bool) -> String {
        let mut m = serde_json::Map::new();
        for (k, sid, at, label) in entries {
            let mut e = serde_json::Map::new();
            if let Some(s) = sid {
                e.insert("sessionId".into(), format!("s{s}").into());
            }
            e.insert("updatedAt".into(), (*at).into());
            e.insert("origin".into(), serde_json::json!({"provider": "slack", "chatType": "direct"}));
            if let Some(l) = label {
                e.insert("label".into(), l.clone().into());
            }
            m.insert(format!("agent:a:k\"{k}"), e.into());
        }
        if pretty { serde_json::to_string_pretty(&m).unwrap() } else { serde_json::to_string(&m).unwrap() }
    }

    /// Reads `text` as the file, with `old` digests.
    fn read_text(
        dir: &Path,
        text: &[u8],
        old: Option<&[Digest]>,
    ) -> Result<(StoreRead, Option<Vec<Digest>>), String> {
        let p = dir.join("sessions.json");
        fs::write(&p, text).unwrap();
        read_store(&p, old, 4)
    }

    /// An empty store that gains an entry, and one that loses its last, are read whole.
    #[test]
    fn a_store_emptied_or_filled_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let one = br#"{ "agent:a:main": {"sessionId": "s1"} }"#;
        let (_, empty) = read_text(dir.path(), b" { } ", None).unwrap();
        let (read, _) = read_text(dir.path(), one, empty.as_deref()).unwrap();
        assert!(matches!(&read, StoreRead::All(e) if e.len() == 1), "{read:?}");
        let (_, full) = read_text(dir.path(), one, None).unwrap();
        let (read, _) = read_text(dir.path(), b"{}", full.as_deref()).unwrap();
        assert!(matches!(&read, StoreRead::All(e) if e.is_empty()), "{read:?}");
        let (read, _) = read_text(dir.path(), b" {}\n", empty.as_deref()).unwrap();
        assert!(matches!(&read, StoreRead::Changed(c) if c.is_empty()), "{read:?}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// A rewritten `sessions.json` read against the digests of its last read gives what a
        /// whole read gives (the same entries, the same digests for the next read), or a whole
        /// read; whatever the edit: values changed in place or in length, keys renamed, entries
        /// added, removed or made non-entries, separators, whitespace or bytes broken.
        #[test]
        fn a_rewritten_store_read_against_its_digests_reads_like_a_whole_read(
            entries in proptest::collection::vec(
                (0u8..40, proptest::option::of(0u8..9), 0u32..2_000_000, proptest::option::of("[a-zé\"\\\\ ]{0,6}")),
                0..12,
            ),
            edits in proptest::collection::vec((0usize..12, 0u8..9, 0u32..2_000_000), 0..4),
            pretty: bool,
            bytes_edit in proptest::option::of((0usize..2000, 0u8..8)),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let before = store_text(&entries, pretty);
            let (first, old) = read_text(dir.path(), before.as_bytes(), None).unwrap();
            let StoreRead::All(mut known) = first else { panic!("a first read is whole") };
            proptest::prop_assert_eq!(&known, &parse_entries(before.as_bytes()).unwrap());
            let old = old.unwrap();
            let mut now = entries.clone();
            for (at, what, v) in edits {
                if now.is_empty() {
                    break;
                }
                let at = at % now.len();
                match what {
                    0 => now[at].2 = v,
                    1 => now[at].3 = Some("x".repeat(v as usize % 5)),
                    2 => now[at].0 = (v % 40) as u8,
                    3 => now[at].1 = None,
                    4 => now[at].1 = Some((v % 9) as u8),
                    5 => { now.remove(at); }
                    6 => now.insert(at, ((v % 40) as u8, Some(1), v, None)),
                    _ => now[at].2 = now[at].2.saturating_mul(10).saturating_add(7),
                }
            }
            let mut after = store_text(&now, pretty).into_bytes();
            if let Some((at, how)) = bytes_edit && !after.is_empty() {
                // The n-th byte matching `f` (n = at modulo their count), else any.
                let nth = |after: &[u8], f: &dyn Fn(usize) -> bool| {
                    let hits: Vec<usize> = (0..after.len()).filter(|&i| f(i)).collect();
                    if hits.is_empty() { at % after.len() } else { hits[at % hits.len()] }
                };
                match how {
                    0 => { let i = nth(&after, &|i| after[i] == b','); after.remove(i); }
                    1 => after.insert(at % after.len(), b' '),
                    2 => { let i = nth(&after, &|i| after[i] == b'}'); after.insert(i, b','); }
                    3 => { let i = at % after.len(); after[i] = b'9'; }
                    4 => after.truncate(at % after.len()),
                    5 => after.insert(at % after.len(), 0xff),
                    // A number made longer where it ends.
                    6 => {
                        let i = nth(&after, &|i| after[i].is_ascii_digit() && after.get(i + 1).is_some_and(|c| !c.is_ascii_digit()));
                        after.insert(i + 1, b'7');
                    }
                    _ => { let i = nth(&after, &|i| after[i] == b'}'); after.remove(i); }
                }
            }
            let whole = read_text(dir.path(), &after, None);
            let incremental = read_text(dir.path(), &after, Some(&old));
            match (whole, incremental) {
                (Err(_), Err(_)) => {}
                (Ok((StoreRead::All(w), wd)), Ok((StoreRead::All(i), id))) => {
                    proptest::prop_assert_eq!(&w, &i);
                    proptest::prop_assert_eq!(wd, id);
                    proptest::prop_assert_eq!(&w, &parse_entries(&after).unwrap());
                }
                (Ok((StoreRead::All(w), wd)), Ok((StoreRead::Changed(changed), id))) => {
                    for (ord, e) in changed {
                        known[ord] = e;
                    }
                    proptest::prop_assert_eq!(&w, &known);
                    proptest::prop_assert_eq!(wd, id);
                    proptest::prop_assert_eq!(&w, &parse_entries(&after).unwrap());
                }
                (w, i) => proptest::prop_assert!(false, "whole {:?}, against digests {:?}", w.map(|r| r.0), i.map(|r| r.0)),
            }
        }
    }

    /// Hostile nesting in a session node's entry: 200,000 levels in a member not read are
    /// passed without recursion (the entry's fields still count); in a member read, serde_json's
    /// nesting limit refuses the entry, whose node's facts then stand alone. Neither overflows
    /// the stack.
    #[test]
    fn deeply_nested_entries_are_read_or_refused_without_recursion() {
        let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
        let n = NodeFacts { session_id: "s1", updated_ms: 7, ..NodeFacts::default() };
        let skipped = format!(r#"{{"skills":{deep},"label":"L","model":"m"}}"#);
        let e = node_entry("k".to_owned(), &skipped, &n, |own| own);
        assert_eq!((e.label.as_deref(), e.model.as_deref()), (Some("L"), Some("m")));
        let read = format!(r#"{{"label":{deep},"model":"m"}}"#);
        let e = node_entry("k".to_owned(), &read, &n, |own| own);
        assert_eq!((e.label, e.model, e.session_id.as_str()), (None, None, "s1"));
    }

    /// The serde_json reading [`Fields::read`] and [`delivery_origin`] replaced: the oracle.
    fn node_entry_serde(key: &str, text: &str, n: &NodeFacts<'_>) -> StoreEntry {
        fn origin_of(d: &str) -> Option<&str> {
            serde_json::from_str::<std::collections::BTreeMap<String, &RawValue>>(d)
                .ok()
                .and_then(|mut d| d.remove("origin"))
                .map(RawValue::get)
        }
        node_entry_of(key.to_owned(), serde_json::from_str(text).unwrap_or_default(), n, |own| own, origin_of)
    }

    /// JSON-ish text: mostly valid, with the edges where readers differ (escaped keys, lone
    /// surrogates, numbers out of range or of every form, literals, nesting, bad tokens).
    fn json_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            8 => proptest::sample::select(vec![
                "a", "é", "😀", " ", r#"\n"#, r#"\""#, r#"\\"#, r#"\u0041"#, r#"\ud83d\ude00"#, "discord", "null",
            ]),
            1 => proptest::sample::select(vec![r#"\ud800"#, r#"\x"#, "\u{1}"]),
        ];
        let string = proptest::collection::vec(piece, 0..5).prop_map(|p| format!("\"{}\"", p.concat()));
        let number = prop_oneof![
            8 => proptest::sample::select(vec![
                "0", "-0", "1775611871725", "-12", "1.5", "1e3", "18446744073709551616", "123456789012345678901234567",
                "0.1", "2.5e-3",
            ]),
            1 => proptest::sample::select(vec!["1e400", "-1e400", "01", "1.", "-"]),
        ]
        .prop_map(str::to_owned);
        let literal =
            prop_oneof![Just("true"), Just("false"), Just("null"), Just("nul")].prop_map(str::to_owned);
        let leaf = prop_oneof![4 => string, 2 => number, 1 => literal];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
                proptest::collection::vec((key(), inner), 0..4).prop_map(|kv| {
                    format!(
                        "{{{}}}",
                        kv.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")
                    )
                }),
            ]
        })
    }

    /// Object keys: the fields read, escaped spellings of them, and others.
    fn key() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        proptest::sample::select(vec![
            "sessionId",
            "updatedAt",
            "label",
            "displayName",
            "channel",
            "chatType",
            "modelProvider",
            "model",
            "modelOverride",
            "providerOverride",
            "usageFamilyKey",
            "usageFamilySessionIds",
            "sessionFile",
            "origin",
            "systemPromptReport",
            "delivery",
            "provider",
            "x",
            "",
            r#"session\u0049d"#,
            r#"deliv\u0065ry"#,
            r#"origin\ud800"#,
        ])
        .prop_map(|k| format!("\"{k}\""))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// A session node's entry reads the same through the JSON cursor as through serde_json,
        /// valid or not, with the node's facts filling in or not.
        #[test]
        fn fields_read_like_serde_json(
            fields in proptest::collection::vec((key(), json_text(), 0u8..3), 0..8),
            delivery in proptest::option::of(proptest::collection::vec((proptest::bool::ANY, json_text()), 0..4)),
            shape in 0u8..12,
            facts in proptest::bool::ANY,
        ) {
            let mut body = fields.iter().map(|(k, v, ws)| {
                let ws = [" ", "", "\n "][*ws as usize];
                format!("{ws}{k}{ws}:{ws}{v}{ws}")
            }).collect::<Vec<_>>();
            // 2026.9's delivery state, its origin given once, twice or not at all.
            if let Some(d) = delivery {
                let d = d.iter().map(|(o, v)| format!(r#""{}":{v}"#, if *o { "origin" } else { "kind" }));
                body.push(format!(r#""delivery":{{{}}}"#, d.collect::<Vec<_>>().join(",")));
            }
            let body = body.join(",");
            let text = match shape {
                0 => format!("[{body}]"),
                1 => format!("{{{body}}} x"),
                2 => format!("{{{body}"),
                3 => "null".to_owned(),
                _ => format!(" {{{body}}}\n"),
            };
            let n = if facts {
                NodeFacts {
                    session_id: "s1", updated_ms: 7, label: Some("L"), channel: Some("slack"),
                    chat_type: Some("group"), model_provider: Some("p"), model: Some("m"), display_name: Some("D"),
                }
            } else {
                NodeFacts { session_id: "s1", updated_ms: 7, ..NodeFacts::default() }
            };
            let fast = node_entry("k".to_owned(), &text, &n, |own| own);
            proptest::prop_assert_eq!(fast, node_entry_serde("k", &text, &n), "{}", text);
        }
    }
}
