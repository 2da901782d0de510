//! Opening an OpenClaw agent database read-only, checking its schema, and decoding one
//! `transcript_events` row into the JSON text of a transcript line (layout: docs/usage-engine.md).
//!
//! The database belongs to a running OpenClaw that keeps writing it in WAL mode, so a connection
//! here is read-only (`mode=ro`, `query_only`), waits only a few milliseconds for a lock, and
//! every read is a short transaction. A WAL database whose index (`-shm`) does not exist (and
//! whose WAL holds no frames) has no open connection at all: it is opened `immutable`, so reading
//! never creates `-shm`/`-wal` files in OpenClaw's directory (they would carry clawgate's owner, and a read-only directory
//! would refuse them). Rows are decoded with bounded memory: a compressed event is inflated into
//! a buffer of exactly its recorded size, never more.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags};

/// The `schema_meta` versions whose layout this reader was checked against (openclaw 2026.9.6
/// writes 23). Another version may have moved the columns read here: its agent is skipped and
/// reported rather than misread.
pub const SUPPORTED_SCHEMA_VERSIONS: std::ops::RangeInclusive<i64> = 23..=23;
/// The `schema_meta.role` of a per-agent database (the shared state database has another).
pub const AGENT_ROLE: &str = "agent";
/// OpenClaw's bound on a compressed event and on its inflated size (the table's CHECK).
pub const MAX_COMPRESSED_EVENT_BYTES: u64 = 4 * 1024 * 1024;
/// OpenClaw's bound on a row's `navigation_json` (`MAX_NAVIGATION_BYTES`, the table's CHECK).
const MAX_NAVIGATION_BYTES: usize = 16 * 1024;
/// How long a statement waits for a lock: long enough to ride out a commit, short enough that
/// a database held by a long write costs the answer a few milliseconds, not a stall.
const BUSY_TIMEOUT: Duration = Duration::from_millis(25);

/// Columns this reader needs, per table.
const REQUIRED: &[(&str, &[&str])] = &[
    (
        "transcript_events",
        &[
            "session_id",
            "seq",
            "event_json",
            "event_zstd",
            "event_utf8_bytes",
            "navigation_json",
            "created_at",
        ],
    ),
    (
        "session_windows",
        &[
            "session_id",
            "session_key",
            "previous_session_id",
            "updated_at",
            "created_at",
            "transcript_updated_at",
            "channel",
            "chat_type",
            "model_provider",
            "model",
            "display_name",
        ],
    ),
    ("session_nodes", &["session_key", "current_session_id", "entry_json", "label", "updated_at"]),
    ("transcript_rewrite_watermarks", &["session_id", "generation", "updated_at"]),
];

/// Why a database (or one of its sessions) could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    #[error("database is locked or busy: {0}")]
    Busy(String),
    #[error("database is corrupt or not a database: {0}")]
    Corrupt(String),
    #[error("cannot open the database: {0}")]
    CannotOpen(String),
    #[error("unknown schema: {0}")]
    UnknownSchema(String),
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Other(String),
}

impl From<rusqlite::Error> for SqliteError {
    fn from(e: rusqlite::Error) -> Self {
        let msg = e.to_string();
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => SqliteError::Busy(msg),
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => SqliteError::Corrupt(msg),
            Some(ErrorCode::CannotOpen | ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => {
                SqliteError::CannotOpen(msg)
            }
            _ => SqliteError::Other(msg),
        }
    }
}

/// `file:` URI of a path, percent-encoding what URIs reserve.
fn file_uri(path: &Path, immutable: bool) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::from("file:");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            uri.push(char::from(b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str(if immutable { "?mode=ro&immutable=1" } else { "?mode=ro" });
    uri
}

fn open_uri(uri: &str) -> Result<Connection, SqliteError> {
    let flags =
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(uri, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Belt and braces: even a statement that would write is refused.
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

/// Opens `path` read-only and checks that it is an agent database this reader understands.
pub fn open(path: &Path) -> Result<Connection, SqliteError> {
    open_as(path, opens_immutable(path))
}

/// [`open`] with the mode decided by the caller (from [`opens_immutable`]).
pub fn open_as(path: &Path, immutable: bool) -> Result<Connection, SqliteError> {
    let conn = open_uri(&file_uri(path, immutable))?;
    check_schema(&conn)?;
    Ok(conn)
}

/// Whether [`open`] would open `path` as `immutable` now: a WAL database nobody has open. A
/// rollback-journal database is written in place, so it is always read under SQLite's locks;
/// so is a WAL holding frames without an index (a copied or crashed store), which only SQLite's
/// recovery reads. An `immutable` connection must not outlive this state.
pub fn opens_immutable(path: &Path) -> bool {
    let wal_frames = std::fs::metadata(suffixed(path, "-wal")).is_ok_and(|m| m.len() > 0);
    is_wal(path) && !suffixed(path, "-shm").exists() && !wal_frames
}

/// Whether the header says WAL mode (file format versions 2 at offsets 18 and 19).
fn is_wal(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 20];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)).is_ok()
        && head.starts_with(b"SQLite format 3\0")
        && head[18] == 2
        && head[19] == 2
}

fn suffixed(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    s.into()
}

/// `schema_meta` says agent database of a supported version, and the columns read exist.
pub fn check_schema(conn: &Connection) -> Result<(), SqliteError> {
    let has_meta: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_meta')",
        [],
        |r| r.get(0),
    )?;
    if !has_meta {
        return Err(SqliteError::UnknownSchema("no schema_meta table".into()));
    }
    let meta: Option<(String, i64)> = conn
        .query_row(
            "SELECT role, schema_version FROM schema_meta ORDER BY meta_key = 'primary' DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map(Some)
        .or_else(|e| if matches!(e, rusqlite::Error::QueryReturnedNoRows) { Ok(None) } else { Err(e) })?;
    let Some((role, version)) = meta else {
        return Err(SqliteError::UnknownSchema("schema_meta is empty".into()));
    };
    if role != AGENT_ROLE {
        return Err(SqliteError::UnknownSchema(format!(
            "schema_meta role {role:?}, expected {AGENT_ROLE:?}"
        )));
    }
    if !SUPPORTED_SCHEMA_VERSIONS.contains(&version) {
        return Err(SqliteError::UnknownSchema(format!(
            "schema_version {version} (this reader knows {}..={})",
            SUPPORTED_SCHEMA_VERSIONS.start(),
            SUPPORTED_SCHEMA_VERSIONS.end()
        )));
    }
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
    for (table, columns) in REQUIRED {
        let have: Vec<String> = stmt.query_map([table], |r| r.get(0))?.collect::<Result<_, _>>()?;
        if let Some(missing) = columns.iter().find(|c| !have.iter().any(|h| h == *c)) {
            return Err(SqliteError::UnknownSchema(format!("{table}.{missing} is missing")));
        }
    }
    Ok(())
}

/// Why a row yields no line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowSkip {
    /// Longer than the engine's line limit.
    Oversize,
    /// Neither column set, a compressed blob that does not inflate to exactly its recorded
    /// size, or sizes outside OpenClaw's own bounds.
    Undecodable,
}

/// Inflates compressed rows into one reused buffer.
pub struct RowDecoder {
    zstd: zstd::bulk::Decompressor<'static>,
    buf: Vec<u8>,
}

impl RowDecoder {
    pub fn new() -> std::io::Result<RowDecoder> {
        Ok(RowDecoder { zstd: zstd::bulk::Decompressor::new()?, buf: Vec::new() })
    }

    /// The event's JSON bytes from `(event_json, event_zstd, event_utf8_bytes)`.
    pub fn decode<'a>(
        &'a mut self,
        json: ValueRef<'a>,
        zstd: ValueRef<'a>,
        utf8_bytes: ValueRef<'a>,
        max_line: u64,
    ) -> Result<&'a [u8], RowSkip> {
        match json {
            ValueRef::Text(t) | ValueRef::Blob(t) => {
                return if t.len() as u64 > max_line { Err(RowSkip::Oversize) } else { Ok(t) };
            }
            ValueRef::Null => {}
            _ => return Err(RowSkip::Undecodable),
        }
        let (blob, n) = compressed(zstd, utf8_bytes, max_line)?;
        self.buf.clear();
        // Exactly the recorded size: a blob that inflates to more fails instead of growing.
        self.buf.reserve_exact(n as usize);
        let cap = self.buf.capacity();
        match self.zstd.decompress_to_buffer(blob, &mut self.buf) {
            Ok(len) if len as u64 == n && cap >= len => Ok(&self.buf[..len]),
            _ => Err(RowSkip::Undecodable),
        }
    }

    /// For a compressed row, the `model` projection OpenClaw stores beside it in
    /// `navigation_json` ([`model_projection`]) and the event's size, which usage may fold
    /// instead of inflating and scanning the event (for a tool result: most of a store's
    /// compressed bytes). The event's size limits apply, and the blob's frame header must
    /// declare the recorded size (OpenClaw's frames do); otherwise `None`, and the row is
    /// inflated by [`RowDecoder::decode`].
    pub fn projection<'a>(
        json: ValueRef<'a>,
        zstd: ValueRef<'a>,
        utf8_bytes: ValueRef<'a>,
        navigation: ValueRef<'a>,
        max_line: u64,
    ) -> Option<(&'a [u8], u64)> {
        let (ValueRef::Null, ValueRef::Text(nav)) = (json, navigation) else { return None };
        let (blob, n) = compressed(zstd, utf8_bytes, max_line).ok()?;
        if !matches!(zstd::zstd_safe::get_frame_content_size(blob), Ok(Some(size)) if size == n) {
            return None;
        }
        Some((model_projection(nav)?, n))
    }
}

/// A compressed event's blob and recorded size, within OpenClaw's bounds and the line limit.
fn compressed<'a>(
    zstd: ValueRef<'a>,
    utf8_bytes: ValueRef<'a>,
    max_line: u64,
) -> Result<(&'a [u8], u64), RowSkip> {
    let ValueRef::Blob(blob) = zstd else {
        return Err(RowSkip::Undecodable);
    };
    let ValueRef::Integer(n) = utf8_bytes else {
        return Err(RowSkip::Undecodable);
    };
    let n = u64::try_from(n).map_err(|_| RowSkip::Undecodable)?;
    if n > max_line {
        return Err(RowSkip::Oversize);
    }
    if n == 0
        || n > MAX_COMPRESSED_EVENT_BYTES
        || blob.is_empty()
        || blob.len() as u64 > MAX_COMPRESSED_EVENT_BYTES
    {
        return Err(RowSkip::Undecodable);
    }
    Ok((blob, n))
}

/// The `model` member of a compressed row's `navigation_json`. OpenClaw 2026.9.6 builds it from
/// the event in SQL (`projectModelContextNavigationSql`): the entry's `type`, `id`, `parentId`,
/// `timestamp`, ... and the message's `role`, `timestamp`, `toolName`, `isError`, ... with the
/// content reduced to its tool calls. For a tool result that is everything usage reads (role,
/// times, `isError`), so folding it counts exactly what folding the event would; the engine folds
/// it when the line reader reads it as a tool result, and inflates the event otherwise (an
/// assistant's projection drops its usage).
///
/// Found by structure alone (`json::Cursor::pass`): the text must be one object whose members
/// balance, with one `model` that is an object; what is inside is checked by the line reader
/// when it reads the projection, as it would check the event. The other members (`navigation`,
/// `report`, `reset`, sizes) are OpenClaw's own bookkeeping: checking their every escape and
/// number was two thirds of reading a projection on a seed-size store.
pub fn model_projection(nav: &[u8]) -> Option<&[u8]> {
    use super::json::{Bad, Cursor};
    if nav.len() > MAX_NAVIGATION_BYTES {
        return None;
    }
    let mut c = Cursor::new(nav);
    let mut model = None;
    c.object(|c, key| {
        if &*key != b"model" {
            return c.pass();
        }
        if model.is_some() || c.peek()? != b'{' {
            return Err(Bad);
        }
        let start = c.pos();
        c.pass()?;
        model = Some(&nav[start..c.pos()]);
        Ok(())
    })
    .ok()?;
    if c.at_end() { model } else { None }
}

/// [`model_projection`] of a text serde_json reads whole (as a value, numbers in range): its
/// `model` member's text when that is an object and the only `model`. The oracle for such texts.
#[cfg(test)]
pub fn model_projection_serde(nav: &[u8]) -> Option<&[u8]> {
    #[derive(serde::Deserialize)]
    struct Nav<'a> {
        #[serde(borrow)]
        model: &'a serde_json::value::RawValue,
    }
    if nav.len() > MAX_NAVIGATION_BYTES {
        return None;
    }
    serde_json::from_slice::<serde_json::Value>(nav).ok()?.as_object()?;
    // A struct refuses a repeated `model`, as the projection does.
    let nav: Nav<'_> = serde_json::from_slice(nav).ok()?;
    let model = nav.model.get();
    model.starts_with('{').then_some(model.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A column listings read (here the rewrite stamp) missing from a database: an unknown
    /// schema, said as such, not an SQL error at the first listing that reads it.
    #[test]
    fn a_database_without_a_column_listings_read_is_an_unknown_schema() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("openclaw-agent.sqlite");
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/engine/tests/tiny-sqlite/agents/main/agent/openclaw-agent.sqlite");
        std::fs::copy(fixture, &db).unwrap();
        Connection::open(&db)
            .unwrap()
            .execute_batch("ALTER TABLE transcript_rewrite_watermarks DROP COLUMN updated_at")
            .unwrap();
        match open_as(&db, false) {
            Err(SqliteError::UnknownSchema(why)) => {
                assert_eq!(why, "transcript_rewrite_watermarks.updated_at is missing")
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn uri_escapes_reserved_characters() {
        assert_eq!(
            file_uri(Path::new("/a b/c?d#e%f.sqlite"), false),
            "file:/a%20b/c%3Fd%23e%25f.sqlite?mode=ro"
        );
        assert!(file_uri(Path::new("/x"), true).ends_with("?mode=ro&immutable=1"));
    }

    #[test]
    fn decodes_plain_and_compressed_rows_with_bounds() {
        let mut d = RowDecoder::new().unwrap();
        let text = br#"{"type":"message"}"#;
        assert_eq!(d.decode(ValueRef::Text(text), ValueRef::Null, ValueRef::Null, 100).unwrap(), text);
        assert_eq!(d.decode(ValueRef::Text(text), ValueRef::Null, ValueRef::Null, 5), Err(RowSkip::Oversize));
        let big = vec![b'x'; 5000];
        let z = zstd::bulk::compress(&big, 1).unwrap();
        let n = ValueRef::Integer(5000);
        assert_eq!(d.decode(ValueRef::Null, ValueRef::Blob(&z), n, 1 << 20).unwrap().len(), 5000);
        // Recorded size smaller than the content: refused, not grown.
        assert_eq!(
            d.decode(ValueRef::Null, ValueRef::Blob(&z), ValueRef::Integer(4999), 1 << 20),
            Err(RowSkip::Undecodable)
        );
        assert_eq!(
            d.decode(ValueRef::Null, ValueRef::Blob(&z), ValueRef::Integer(5001), 1 << 20),
            Err(RowSkip::Undecodable)
        );
        assert_eq!(d.decode(ValueRef::Null, ValueRef::Blob(&z), n, 4000), Err(RowSkip::Oversize));
        assert_eq!(
            d.decode(ValueRef::Null, ValueRef::Blob(b"not zstd"), n, 1 << 20),
            Err(RowSkip::Undecodable)
        );
        assert_eq!(
            d.decode(ValueRef::Null, ValueRef::Null, ValueRef::Null, 1 << 20),
            Err(RowSkip::Undecodable)
        );
    }

    /// Every compressed row of the databases openclaw 2026.9.6's own importer made whose
    /// projection the line reader reads as a tool result folds to the same entry as the inflated
    /// event; the other compressed rows are inflated.
    #[test]
    fn openclaws_tool_result_projection_folds_like_the_event() {
        use crate::engine::line::{LineOutcome, parse_line};
        use crate::engine::rollup::{FileRollup, SkipCounts, fold_if_tool_result};
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/engine/tests/tiny-sqlite/agents");
        let (mut projected, mut inflated) = (0, 0);
        for agent in ["main", "agent1"] {
            // Immutable: read where it lies without the -wal/-shm a writable open leaves there
            // for a moment, which the tests copying the fixture meanwhile tripped over.
            let conn = open_as(&root.join(agent).join("agent/openclaw-agent.sqlite"), true).unwrap();
            let mut st = conn
                .prepare("SELECT event_zstd, event_utf8_bytes, navigation_json FROM transcript_events WHERE event_zstd IS NOT NULL")
                .unwrap();
            let mut rows = st.query([]).unwrap();
            let mut d = RowDecoder::new().unwrap();
            while let Some(r) = rows.next().unwrap() {
                let (z, n, nav) = (r.get_ref(0).unwrap(), r.get_ref(1).unwrap(), r.get_ref(2).unwrap());
                let event = d.decode(ValueRef::Null, z, n, 1 << 20).unwrap().to_vec();
                let parse = |b: &[u8]| match parse_line(std::str::from_utf8(b).unwrap()) {
                    LineOutcome::Entry(e) => format!("{e:?}"),
                    other => format!("{other:?}"),
                };
                let (model, size) = RowDecoder::projection(ValueRef::Null, z, n, nav, 1 << 20).unwrap();
                assert_eq!(size, event.len() as u64);
                let mut r = FileRollup::default();
                if fold_if_tool_result(&mut r, &mut SkipCounts::default(), model) {
                    assert_eq!(parse(model), parse(&event), "row of {agent}");
                    projected += 1;
                } else {
                    assert!(!parse(&event).contains("ToolResult"), "row of {agent}");
                    inflated += 1;
                }
            }
        }
        // 22 tool results and 3 assistant replies (whose usage only the event holds).
        assert_eq!((projected, inflated), (22, 3));
    }

    #[test]
    fn a_projection_is_the_model_member_of_one_balanced_object() {
        let nav = |model: &str| {
            format!(
                r#"{{"version":1,"report":{{"kind":"canonical"}},"navigation":{{}},"reset":{{}},"model":{model},"modelBytes":1}}"#
            )
        };
        let tool = r#"{"type":"message","timestamp":"2026-11-09T10:36:36.088Z","message":{"role":"toolResult","isError":true,"content":[]}}"#;
        assert_eq!(model_projection(nav(tool).as_bytes()), Some(tool.as_bytes()));
        // Whatever the model says: the line reader decides whether it stands for the event.
        let assistant =
            r#"{"type":"message","message":{"role":"assistant","stopReason":"stop","content":[]}}"#;
        assert_eq!(model_projection(nav(assistant).as_bytes()), Some(assistant.as_bytes()));
        // OpenClaw's other members are passed by structure: an escape or a number serde_json
        // refuses there does not matter.
        let odd_others = format!(r#"{{"reset":{{"a":"\q","n":1e999}},"model":{tool}}}"#);
        assert!(serde_json::from_str::<serde_json::Value>(&odd_others).is_err());
        assert_eq!(model_projection(odd_others.as_bytes()), Some(tool.as_bytes()));
        for bad in [
            "not json".to_owned(),
            "[]".to_owned(),
            r#"{"version":1}"#.to_owned(),
            r#"{"model":"text"}"#.to_owned(),
            r#"{"model":[]}"#.to_owned(),
            format!(r#"{{"model":{tool},"model":{tool}}}"#),
            format!(r#"{{"reset":{{"a":[}},"model":{tool}}}"#),
            format!(r#"{{"model":{tool}}} trailing"#),
            format!(r#"{{"model":{tool}"#),
        ] {
            assert_eq!(model_projection(bad.as_bytes()), None, "{bad}");
        }
        let huge = nav(&tool
            .replace("\"content\":[]", &format!("\"content\":[\"{}\"]", "x".repeat(MAX_NAVIGATION_BYTES))));
        assert_eq!(model_projection(huge.as_bytes()), None, "over OpenClaw's own bound");
    }

    /// The event's size limits and frame header decide first: a row whose event would be
    /// refused, or that has no projection, is left to `decode`.
    #[test]
    fn a_projection_is_offered_only_beside_an_event_within_bounds() {
        let tool = r#"{"type":"message","message":{"role":"toolResult","content":[]}}"#;
        let good = format!(r#"{{"model":{tool}}}"#);
        let g = ValueRef::Text(good.as_bytes());
        let z = zstd::bulk::compress(tool.as_bytes(), 1).unwrap();
        let n = ValueRef::Integer(tool.len() as i64);
        let projection = |json, z, n, nav, max| RowDecoder::projection(json, z, n, nav, max);
        assert_eq!(
            projection(ValueRef::Null, ValueRef::Blob(&z), n, g, 1 << 20),
            Some((tool.as_bytes(), tool.len() as u64))
        );
        assert_eq!(
            projection(ValueRef::Null, ValueRef::Blob(&z), n, g, 10),
            None,
            "the event is over the line limit"
        );
        assert_eq!(projection(ValueRef::Null, ValueRef::Blob(&z), n, ValueRef::Null, 1 << 20), None);
        assert_eq!(
            projection(ValueRef::Text(b"{}"), ValueRef::Blob(&z), n, g, 1 << 20),
            None,
            "a JSON event"
        );
        let lie = ValueRef::Integer(tool.len() as i64 - 1);
        assert_eq!(
            projection(ValueRef::Null, ValueRef::Blob(&z), lie, g, 1 << 20),
            None,
            "the frame says otherwise"
        );
        let garbage = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x11, 0x22, 0x33];
        assert_eq!(projection(ValueRef::Null, ValueRef::Blob(&garbage), n, g, 1 << 20), None);
        // Left to `decode`, those rows are refused as before.
        let mut d = RowDecoder::new().unwrap();
        assert_eq!(d.decode(ValueRef::Null, ValueRef::Blob(&z), n, 10), Err(RowSkip::Oversize));
        assert_eq!(d.decode(ValueRef::Null, ValueRef::Blob(&z), lie, 1 << 20), Err(RowSkip::Undecodable));
        assert_eq!(d.decode(ValueRef::Null, ValueRef::Blob(&garbage), n, 1 << 20), Err(RowSkip::Undecodable));
        assert_eq!(d.decode(ValueRef::Null, ValueRef::Blob(&z), n, 1 << 20).unwrap(), tool.as_bytes());
    }
}
