//! Converts a legacy store (`sessions.json` + JSONL) into OpenClaw 2026.7+'s SQLite layout: one
//! `agents/<id>/agent/openclaw-agent.sqlite` per agent, with the schema openclaw 2026.9.6 writes
//! (schema version 23, taken verbatim from a database its own importer made).
//!
//! Used to test and benchmark readers of that layout on stores of any size. What it writes
//! mirrors what the importer made of the shared fixture:
//! - one `transcript_events` row per transcript line, `seq` from 0, `created_at` the line's
//!   time; events longer than [`COMPRESS_ABOVE_BYTES`] are zstd-compressed into `event_zstd`
//!   (with `event_utf8_bytes` and the `navigation_json` projection the table's CHECK requires);
//! - one `session_windows` row per transcript, archives (`.jsonl.reset.<ts>` / `.deleted.<ts>`)
//!   included: an entry's `usageFamilySessionIds` become earlier windows of its key, linked by
//!   `previous_session_id`;
//! - one `session_nodes` row per `sessions.json` entry (and a minimal one per transcript no
//!   entry names, as the window's key must exist), whose `entry_json` is the entry without
//!   `sessionFile`/`channel`/`lastChannel`/`origin`/`usageFamilySessionIds` (the importer moves
//!   `origin` and the channel into `delivery`, and keeps neither for `webchat`, the Control UI's
//!   internal chat);
//! - `transcript_event_identities`, `transcript_rewrite_watermarks`, `schema_meta`.
//!
//! The database is built under a temporary name with journaling off, switched to WAL mode and
//! renamed into place, so a reader never sees a half-written one. `models.json` and the demo
//! manifest are copied alongside.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::clock::{now_ms, parse_iso};
use crate::{DemoError, MANIFEST_FILE};

/// The CREATE statements of an openclaw 2026.9.6 agent database, in creation order (FTS shadow
/// tables and `sqlite_sequence` are created by SQLite itself).
pub const SCHEMA_SQL: &str = include_str!("openclaw-agent-schema.sql");
/// `schema_meta.schema_version` (and `user_version`) of that schema.
pub const SCHEMA_VERSION: i64 = 23;
/// The database file, relative to an agent directory.
pub const DB_RELATIVE: &str = "agent/openclaw-agent.sqlite";
/// Events larger than this are stored compressed. The fixture made by openclaw's importer has
/// every event up to 1,660 bytes plain and every one from 1,758 bytes compressed; this splits
/// the difference.
pub const COMPRESS_ABOVE_BYTES: usize = 1_700;
/// The channel of the Control UI's chat, which the importer stores as internal delivery.
const INTERNAL_CHANNEL: &str = "webchat";
/// zstd level and checksum flag that reproduce the importer's blobs byte for byte.
const ZSTD_LEVEL: i32 = 1;

/// What a conversion wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConvertStats {
    pub agents: u64,
    /// `session_nodes` rows (entries of `sessions.json`).
    pub nodes: u64,
    /// `session_windows` rows (transcripts).
    pub sessions: u64,
    pub events: u64,
    /// Of `events`, stored in `event_zstd`.
    pub compressed_events: u64,
    /// Total UTF-8 bytes of all events.
    pub event_bytes: u64,
    /// Size of the databases written.
    pub db_bytes: u64,
    /// Transcript lines that were not valid UTF-8 (not stored).
    pub skipped_lines: u64,
    /// Transcripts whose session id another transcript of the agent already used (not stored).
    pub skipped_files: u64,
}

impl ConvertStats {
    fn merge(&mut self, o: &ConvertStats) {
        self.agents += o.agents;
        self.nodes += o.nodes;
        self.sessions += o.sessions;
        self.events += o.events;
        self.compressed_events += o.compressed_events;
        self.event_bytes += o.event_bytes;
        self.db_bytes += o.db_bytes;
        self.skipped_lines += o.skipped_lines;
        self.skipped_files += o.skipped_files;
    }
}

fn sql_err(path: &Path) -> impl Fn(rusqlite::Error) -> DemoError + '_ {
    move |e| DemoError::Io { path: path.to_path_buf(), source: std::io::Error::other(e) }
}

/// Writes the SQLite layout of the legacy store at `legacy_store` into `out` (which may be the
/// same directory: legacy files are left as they are). Existing databases in `out` are
/// replaced. Agents are converted in parallel.
pub fn convert_to_sqlite(legacy_store: &Path, out: &Path) -> Result<ConvertStats, DemoError> {
    let agents_dir = legacy_store.join("agents");
    let mut agents: Vec<String> = Vec::new();
    for ent in fs::read_dir(&agents_dir).map_err(DemoError::io(&agents_dir))? {
        let ent = ent.map_err(DemoError::io(&agents_dir))?;
        if ent.file_type().is_ok_and(|t| t.is_dir())
            && let Ok(name) = ent.file_name().into_string()
        {
            agents.push(name);
        }
    }
    agents.sort();
    fs::create_dir_all(out).map_err(DemoError::io(out))?;
    let out = fs::canonicalize(out).map_err(DemoError::io(out))?;
    let manifest = legacy_store.join(MANIFEST_FILE);
    if manifest.is_file() && fs::canonicalize(&manifest).ok() != Some(out.join(MANIFEST_FILE)) {
        fs::copy(&manifest, out.join(MANIFEST_FILE)).map_err(DemoError::io(&manifest))?;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(agents.len()).max(1);
    let queue = Mutex::new(agents.into_iter());
    let total = Mutex::new(ConvertStats::default());
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<(), DemoError> {
                    loop {
                        let next = queue.lock().map_err(|_| DemoError::WorkerPanicked)?.next();
                        let Some(agent) = next else { return Ok(()) };
                        let s = convert_agent(legacy_store, &out, &agent)?;
                        total.lock().map_err(|_| DemoError::WorkerPanicked)?.merge(&s);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| DemoError::WorkerPanicked)??;
        }
        Ok::<(), DemoError>(())
    })?;
    total.into_inner().map_err(|_| DemoError::WorkerPanicked)
}

/// One transcript to store as a session window.
struct Transcript {
    path: PathBuf,
    session_id: String,
    key: Option<String>,
    previous: Option<String>,
}

fn is_archive_name(name: &str) -> Option<&str> {
    [".jsonl.reset.", ".jsonl.deleted."].iter().find_map(|m| name.find(m).map(|i| &name[..i]))
}

fn convert_agent(legacy: &Path, out: &Path, agent: &str) -> Result<ConvertStats, DemoError> {
    let src = legacy.join("agents").join(agent);
    let sessions_dir = src.join("sessions");
    let store_path = sessions_dir.join("sessions.json");
    let store: BTreeMap<String, BTreeMap<String, Box<RawValue>>> = match fs::read(&store_path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|source| DemoError::Json { path: store_path.clone(), source })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(DemoError::io(&store_path)(e)),
    };
    // Usage-counted transcripts by session id.
    let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut stats = ConvertStats { agents: 1, ..ConvertStats::default() };
    let mut names: Vec<String> = match fs::read_dir(&sessions_dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(DemoError::io(&sessions_dir)(e)),
    };
    names.sort();
    for name in names {
        let id = match (name.strip_suffix(".jsonl"), is_archive_name(&name)) {
            (Some(stem), _) if !stem.contains(".checkpoint.") && !stem.ends_with(".trajectory") => stem,
            (None, Some(stem)) => stem,
            _ => continue,
        };
        if files.insert(id.to_owned(), sessions_dir.join(&name)).is_some() {
            stats.skipped_files += 1;
        }
    }
    let str_field = |e: &BTreeMap<String, Box<RawValue>>, k: &str| -> Option<String> {
        e.get(k).and_then(|v| serde_json::from_str::<String>(v.get()).ok())
    };
    let mut transcripts: Vec<Transcript> = Vec::new();
    let mut claimed: HashSet<String> = HashSet::new();
    for (key, entry) in &store {
        let Some(current) = str_field(entry, "sessionId") else { continue };
        let family: Vec<String> = entry
            .get("usageFamilySessionIds")
            .and_then(|v| serde_json::from_str::<Vec<String>>(v.get()).ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|id| *id != current && files.contains_key(id))
            .collect();
        let mut previous = None;
        for id in family.iter().chain(std::iter::once(&current)) {
            if !claimed.insert(id.clone()) {
                continue;
            }
            if let Some(path) = files.get(id) {
                transcripts.push(Transcript {
                    path: path.clone(),
                    session_id: id.clone(),
                    key: Some(key.clone()),
                    previous: previous.clone(),
                });
            }
            previous = Some(id.clone());
        }
    }
    for (id, path) in &files {
        if claimed.insert(id.clone()) {
            transcripts.push(Transcript {
                path: path.clone(),
                session_id: id.clone(),
                key: None,
                previous: None,
            });
        }
    }

    let dir = out.join("agents").join(agent).join("agent");
    fs::create_dir_all(&dir).map_err(DemoError::io(&dir))?;
    let models = src.join("agent").join("models.json");
    if models.is_file() && fs::canonicalize(&models).ok() != fs::canonicalize(dir.join("models.json")).ok() {
        fs::copy(&models, dir.join("models.json")).map_err(DemoError::io(&models))?;
    }
    let db = out.join("agents").join(agent).join(DB_RELATIVE);
    let partial = db.with_extension("sqlite.partial");
    for p in [partial.clone(), suffixed(&partial, "-journal")] {
        let _ = fs::remove_file(p);
    }
    let err = sql_err(&partial);
    let mut conn = Connection::open(&partial).map_err(&err)?;
    conn.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA foreign_keys = OFF;")
        .map_err(&err)?;
    conn.execute_batch(SCHEMA_SQL).map_err(&err)?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(&err)?;
    let tx = conn.transaction().map_err(&err)?;
    let now = now_ms();
    tx.execute(
        "INSERT INTO schema_meta (meta_key, role, schema_version, agent_id, app_version, created_at, updated_at)
         VALUES ('primary', 'agent', ?1, ?2, 'clawgate-demo-store', ?3, ?3)",
        params![SCHEMA_VERSION, agent, now],
    )
    .map_err(&err)?;
    tx.execute("INSERT INTO session_key_contract (id, main_key, canonical_ready, updated_at) VALUES (1, 'main', NULL, 0)", [])
        .map_err(&err)?;
    let mut windows: HashMap<String, WindowFacts> = HashMap::new();
    let mut compressor = zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(DemoError::io(&partial))?;
    compressor.include_checksum(true).map_err(DemoError::io(&partial))?;
    compressor.include_contentsize(true).map_err(DemoError::io(&partial))?;
    for t in &transcripts {
        let facts = write_events(&tx, &mut compressor, t, &mut stats)?;
        windows.insert(t.session_id.clone(), facts);
    }
    for t in &transcripts {
        let entry = t.key.as_ref().and_then(|k| store.get(k));
        write_window(&tx, agent, t, entry, &windows[&t.session_id]).map_err(&err)?;
        stats.sessions += 1;
    }
    for (key, entry) in &store {
        let Some(current) = str_field(entry, "sessionId") else { continue };
        write_node(&tx, key, &current, entry).map_err(&err)?;
        stats.nodes += 1;
    }
    // A transcript no entry names gets a minimal node of its own, so every window's key exists
    // (OpenClaw enforces the foreign key).
    for t in transcripts.iter().filter(|t| t.key.is_none()) {
        let facts = &windows[&t.session_id];
        let updated = facts.last_ms.unwrap_or(0);
        let entry = format!(r#"{{"sessionId":{},"updatedAt":{updated}}}"#, json_string(&t.session_id));
        let entry: BTreeMap<String, Box<RawValue>> = serde_json::from_str(&entry).expect("valid JSON");
        write_node(&tx, &orphan_key(agent, &t.session_id), &t.session_id, &entry).map_err(&err)?;
        stats.nodes += 1;
    }
    // The importer leaves every node validated.
    tx.execute_batch(
        "UPDATE session_nodes SET entry_valid = 1; DELETE FROM session_canonical_validation_pending;",
    )
    .map_err(&err)?;
    tx.commit().map_err(&err)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(&err)?;
    conn.close().map_err(|(_, e)| err(e))?;
    for p in
        [suffixed(&db, "-wal"), suffixed(&db, "-shm"), suffixed(&partial, "-wal"), suffixed(&partial, "-shm")]
    {
        let _ = fs::remove_file(p);
    }
    fs::rename(&partial, &db).map_err(DemoError::io(&db))?;
    stats.db_bytes = fs::metadata(&db).map_err(DemoError::io(&db))?.len();
    Ok(stats)
}

fn suffixed(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    s.into()
}

/// The time span and model of one stored transcript.
#[derive(Default)]
struct WindowFacts {
    first_ms: Option<i64>,
    last_ms: Option<i64>,
    events: u64,
}

/// The few fields of a line the tables index; anything else is ignored.
#[derive(Deserialize, Default)]
struct LineMeta<'a> {
    #[serde(rename = "type", borrow, default)]
    ty: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(rename = "parentId", borrow, default)]
    parent_id: Option<Cow<'a, str>>,
    #[serde(default)]
    timestamp: Option<Value>,
    #[serde(default)]
    message: Option<MessageMeta>,
}

#[derive(Deserialize, Default)]
struct MessageMeta {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    timestamp: Option<Value>,
    // The other message facts OpenClaw's `model` projection keeps (`projectModelContextNavigationSql`).
    #[serde(default)]
    provider: Option<Value>,
    #[serde(default)]
    model: Option<Value>,
    #[serde(rename = "toolCallId", default)]
    tool_call_id: Option<Value>,
    #[serde(rename = "toolName", default)]
    tool_name: Option<Value>,
    #[serde(rename = "isError", default)]
    is_error: Option<Value>,
    #[serde(rename = "stopReason", default)]
    stop_reason: Option<Value>,
}

fn time_of(v: &Option<Value>) -> Option<i64> {
    match v {
        Some(Value::String(s)) => parse_iso(s),
        Some(Value::Number(n)) => n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64),
        _ => None,
    }
}

fn write_events(
    tx: &rusqlite::Transaction<'_>,
    compressor: &mut zstd::bulk::Compressor<'_>,
    t: &Transcript,
    stats: &mut ConvertStats,
) -> Result<WindowFacts, DemoError> {
    let err = sql_err(&t.path);
    let file = fs::File::open(&t.path).map_err(DemoError::io(&t.path))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut event = tx
        .prepare_cached(
            "INSERT INTO transcript_events (session_id, seq, event_json, created_at, event_zstd, event_utf8_bytes, navigation_json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .map_err(&err)?;
    let mut identity = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO transcript_event_identities (session_id, event_id, seq, event_type, parent_id, message_idempotency_key, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6)",
        )
        .map_err(&err)?;
    let mut facts = WindowFacts::default();
    let mut buf = Vec::new();
    let mut seq = 0i64;
    let mut created = 0i64;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(DemoError::io(&t.path))? == 0 {
            break;
        }
        while buf.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
            buf.pop();
        }
        if buf.trim_ascii().is_empty() {
            continue;
        }
        let Ok(text) = std::str::from_utf8(&buf) else {
            stats.skipped_lines += 1;
            continue;
        };
        let meta: LineMeta<'_> = serde_json::from_str(text).unwrap_or_default();
        let msg = meta.message.as_ref();
        if let Some(ts) = time_of(&meta.timestamp).or_else(|| msg.and_then(|m| time_of(&m.timestamp))) {
            created = ts;
        }
        facts.first_ms = Some(facts.first_ms.map_or(created, |f| f.min(created)));
        facts.last_ms = Some(facts.last_ms.map_or(created, |l| l.max(created)));
        let bytes = text.len();
        if bytes > COMPRESS_ABOVE_BYTES {
            let blob = compressor.compress(text.as_bytes()).map_err(DemoError::io(&t.path))?;
            let nav = navigation_json(&meta, bytes);
            event
                .execute(params![t.session_id, seq, None::<&str>, created, blob, bytes as i64, nav])
                .map_err(&err)?;
            stats.compressed_events += 1;
        } else {
            event
                .execute(params![t.session_id, seq, text, created, None::<&[u8]>, bytes as i64, None::<&str>])
                .map_err(&err)?;
        }
        let event_id = match meta.ty.as_deref() {
            Some("session") => Some(t.session_id.as_str()),
            _ => meta.id.as_deref(),
        };
        if let Some(id) = event_id {
            identity
                .execute(params![
                    t.session_id,
                    id,
                    seq,
                    meta.ty.as_deref(),
                    meta.parent_id.as_deref(),
                    created
                ])
                .map_err(&err)?;
        }
        stats.events += 1;
        stats.event_bytes += bytes as u64;
        facts.events += 1;
        seq += 1;
    }
    Ok(facts)
}

/// The `navigation_json` OpenClaw stores beside `event` when it compresses it (for writers of
/// test and bench rows; [`navigation_json`] is the same for a line already parsed).
pub fn navigation_for(event: &str) -> String {
    let meta: LineMeta<'_> = serde_json::from_str(event).unwrap_or_default();
    navigation_json(&meta, event.len())
}

/// The projection OpenClaw stores beside a compressed event, so it can walk the transcript
/// without inflating it.
fn navigation_json(meta: &LineMeta<'_>, bytes: usize) -> String {
    let nav = serde_json::json!({
        "type": meta.ty,
        "id": meta.id,
        "parentId": meta.parent_id,
        "timestamp": meta.timestamp,
        "message": meta.message.as_ref().map(|m| serde_json::json!({"role": m.role})),
    });
    // What OpenClaw's `model` projection keeps of a message: its facts without content (tool
    // calls are left out here; readers of this store use the projection of tool results only).
    let mut model = nav.clone();
    if let (Some(m), Some(obj)) =
        (meta.message.as_ref(), model.get_mut("message").and_then(Value::as_object_mut))
    {
        let facts = [
            ("timestamp", &m.timestamp),
            ("provider", &m.provider),
            ("model", &m.model),
            ("toolCallId", &m.tool_call_id),
            ("toolName", &m.tool_name),
            ("isError", &m.is_error),
            ("stopReason", &m.stop_reason),
        ];
        for (k, v) in facts {
            if let Some(v) = v {
                obj.insert(k.into(), v.clone());
            }
        }
        obj.insert("content".into(), Value::Array(Vec::new()));
    }
    serde_json::json!({
        "version": 1,
        "report": {
            "kind": "canonical",
            "hasParentId": meta.parent_id.is_some(),
            "entry": {"id": meta.id, "parentId": meta.parent_id, "timestamp": meta.timestamp, "type": meta.ty},
        },
        "navigation": nav,
        "reset": nav,
        "model": model,
        "modelBytes": bytes,
        "modelWithoutCheckpointBytes": bytes,
        "withoutCustomDataBytes": bytes,
    })
    .to_string()
}

fn raw_str(e: Option<&BTreeMap<String, Box<RawValue>>>, k: &str) -> Option<String> {
    e?.get(k).and_then(|v| serde_json::from_str::<String>(v.get()).ok())
}

fn raw_i64(e: Option<&BTreeMap<String, Box<RawValue>>>, k: &str) -> Option<i64> {
    e?.get(k).and_then(|v| serde_json::from_str::<f64>(v.get()).ok()).map(|f| f as i64)
}

fn write_window(
    tx: &rusqlite::Transaction<'_>,
    agent: &str,
    t: &Transcript,
    entry: Option<&BTreeMap<String, Box<RawValue>>>,
    facts: &WindowFacts,
) -> rusqlite::Result<()> {
    let key = t.key.clone().unwrap_or_else(|| orphan_key(agent, &t.session_id));
    // Only the current instance carries the entry's labels; archives keep their times.
    let current =
        entry.is_some_and(|e| raw_str(Some(e), "sessionId").as_deref() == Some(t.session_id.as_str()));
    let entry = entry.filter(|_| current);
    let origin: Option<BTreeMap<String, Box<RawValue>>> =
        entry.and_then(|e| e.get("origin")).and_then(|o| serde_json::from_str(o.get()).ok());
    let channel = raw_str(entry, "channel")
        .or_else(|| raw_str(origin.as_ref(), "provider"))
        .filter(|c| c != INTERNAL_CHANNEL);
    let chat_type = raw_str(entry, "chatType")
        .or_else(|| raw_str(origin.as_ref(), "chatType"))
        .filter(|c| matches!(c.as_str(), "direct" | "group" | "channel"));
    let scope = if key.ends_with(":main") {
        "shared-main"
    } else {
        match chat_type.as_deref() {
            Some("group") => "group",
            Some("channel") => "channel",
            _ => "conversation",
        }
    };
    let first = facts.first_ms.unwrap_or(0);
    let last = facts.last_ms.unwrap_or(first);
    let created = raw_i64(entry, "sessionStartedAt").unwrap_or(first);
    let updated = raw_i64(entry, "updatedAt").unwrap_or(last);
    let reason = t.previous.as_ref().map(|_| "reset");
    tx.prepare_cached(
        "INSERT INTO session_windows (session_id, session_key, previous_session_id, reason, session_scope,
            created_at, updated_at, transcript_updated_at, transcript_observed_at, session_entry_provenance,
            chat_type, channel, model_provider, model)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, 1, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        t.session_id,
        key,
        t.previous,
        reason,
        scope,
        created,
        updated,
        last,
        chat_type,
        channel,
        raw_str(entry, "modelProvider"),
        raw_str(entry, "model"),
    ])?;
    // A rewrite generation per transcript, as the importer records one.
    let generation = format!("{:016x}{:016x}", fnv(t.session_id.as_bytes()), fnv(agent.as_bytes()));
    tx.prepare_cached(
        "INSERT INTO transcript_rewrite_watermarks (session_id, generation, updated_at) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![t.session_id, generation, last])?;
    Ok(())
}

/// The key OpenClaw reports for a transcript without a store entry.
fn orphan_key(agent: &str, session_id: &str) -> String {
    format!("agent:{agent}:{session_id}")
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

fn fnv(bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = fnv::FnvHasher::default();
    h.write(bytes);
    h.finish()
}

fn write_node(
    tx: &rusqlite::Transaction<'_>,
    key: &str,
    current: &str,
    entry: &BTreeMap<String, Box<RawValue>>,
) -> rusqlite::Result<()> {
    let mut e: BTreeMap<&str, &RawValue> = entry.iter().map(|(k, v)| (k.as_str(), v.as_ref())).collect();
    let mut channel = raw_str(Some(entry), "channel");
    let mut origin = e.get("origin").copied();
    for k in ["sessionFile", "channel", "lastChannel", "origin", "usageFamilySessionIds"] {
        e.remove(k);
    }
    // Written by hand so `origin` keeps its key order.
    if channel.as_deref() == Some(INTERNAL_CHANNEL) {
        // The Control UI's own chat is internal delivery: the importer keeps neither its
        // channel nor its origin.
        channel = None;
        origin = None;
    }
    let mut delivery = String::from(if channel.is_some() || origin.is_some() {
        r#"{"kind":"external""#
    } else {
        r#"{"kind":"internal""#
    });
    if let Some(c) = &channel {
        let c = serde_json::to_string(c).expect("a string serialises");
        delivery.push_str(&format!(r#","route":{{"channel":{c}}},"context":{{"channel":{c}}}"#));
    }
    if let Some(o) = origin {
        delivery.push_str(&format!(r#","origin":{}"#, compact(o.get())));
    }
    delivery.push('}');
    let delivery = RawValue::from_string(delivery).expect("valid JSON");
    e.insert("delivery", &delivery);
    let entry_json = serde_json::to_string(&e).expect("raw JSON serialises");
    let updated = raw_i64(Some(entry), "updatedAt").unwrap_or(0);
    tx.prepare_cached(
        "INSERT INTO session_nodes (session_key, current_session_id, entry_json, entry_valid, updated_at, label,
            display_name, last_interaction_at)
         VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        key,
        current,
        entry_json,
        updated,
        raw_str(Some(entry), "label"),
        raw_str(Some(entry), "displayName"),
        raw_i64(Some(entry), "lastInteractionAt"),
    ])?;
    Ok(())
}

/// JSON text without insignificant whitespace (`sessions.json` is pretty-printed).
fn compact(raw: &str) -> String {
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
