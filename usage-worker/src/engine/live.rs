//! Live aggregates: for the few query shapes in use (scope, range, day zone, grouping, prices),
//! the [`Aggregates`] over every row, kept current as files change.
//!
//! A shape's aggregates are built once by streaming every rollup in scope from the index
//! ([`Lives::build`]); after that a changed file costs its old and new summaries: the old
//! contribution is taken away and the new one added ([`Lives::file_changed`]). Family grouping
//! (a row spans several files) and a lost maximum are rebuilt instead. Besides the aggregates a
//! shape keeps, per row, the numbers rows can be sorted by (cost, tokens, messages) in a
//! temporary table of the index, so any page in any order is one indexed query.
//!
//! Memory is the aggregates (days × models, agents, channels, ...) of at most [`MAX_LIVES`]
//! shapes; nothing here grows with the number of rows.

use std::time::Instant;

use super::aggregates::Aggregates;
use super::discover::Discovered;
use super::index::{FileRow, Index, IndexError};
use super::rollup::{FileRollup, SkipCounts};
use super::store::{Price, PriceFn};
use super::summary::{Summary, Want, Window, summarize};

/// Shapes kept at once (e.g. the dashboard's `usage.cost` and `sessions.usage` ranges, and a
/// CLI report's).
pub const MAX_LIVES: usize = 4;

/// What a row's contribution to the aggregates needs: no quarter hours.
pub const CONTRIBUTION: Want = Want { quarters: false, latency: true, untimed: true };

/// What live aggregates are kept for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Shape {
    pub agents: Vec<String>,
    pub start: i64,
    pub end: i64,
    pub offset_ms: i64,
    pub family: bool,
    /// Stamp of the price tables the costs were computed with (from their stat facts, so it
    /// means the same in a restarted worker).
    pub prices: u64,
}

impl Shape {
    pub fn window(&self) -> Window {
        Window { start: self.start, end: self.end, offset_ms: self.offset_ms }
    }

    /// Discovery's range filter: files last modified before the range start are not listed.
    pub fn lists(&self, d: &Discovered) -> bool {
        self.start <= 0 || d.meta.mtime_ms() >= self.start
    }

    fn in_scope(&self, agent: &str) -> bool {
        self.agents.iter().any(|a| a == agent)
    }
}

/// The aggregates of one shape.
#[derive(Debug)]
pub struct Live {
    pub shape: Shape,
    pub data: LiveData,
    /// Changes whenever `agg` or the per-row numbers do.
    pub version: u64,
    /// Must be rebuilt before use (family grouping changed, or a maximum was lost).
    pub stale: bool,
    /// Changed since last saved to the index.
    dirty: bool,
    /// Its id in the index's `lives` table; its per-row sort numbers are `rowvals_<id>`.
    pub id: i64,
    pub table: String,
    /// The statements that put and delete a row's numbers in `table`: their text is made once,
    /// not for every file changed.
    put_sql: String,
    delete_sql: String,
    last_used: Instant,
}

/// What a shape's aggregates are, as saved in the index between worker runs.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct LiveData {
    pub agg: Aggregates,
    /// Files in scope (listed or not) and what was skipped in them, for diagnostics.
    pub files: u64,
    /// Files the shape's range lists (its rows' transcripts: OpenClaw's `cachedFiles`).
    #[serde(default)]
    pub listed: u64,
    pub skips: SkipCounts,
    pub pending_tails: u64,
}

/// A file's summary for a shape, or `None` when the shape does not list it.
pub fn contribution(
    shape: &Shape,
    disc: &Discovered,
    rollup: &FileRollup,
    price: &PriceFn<'_>,
) -> Option<Summary> {
    if !shape.lists(disc) {
        return None;
    }
    Some(summarize(rollup, &shape.window(), &prices_of(disc, rollup, price), CONTRIBUTION))
}

/// All live shapes.
#[derive(Debug, Default)]
pub struct Lives {
    lives: Vec<Live>,
    next_version: u64,
}

/// One file's change, for [`Lives::file_changed`].
pub struct Change<'a> {
    pub id: i64,
    pub agent: &'a str,
    pub old: Option<(&'a Discovered, &'a FileRollup, Option<&'a str>)>,
    pub new: Option<(&'a Discovered, &'a FileRollup, Option<&'a str>)>,
}

impl Live {
    fn new(shape: &Shape, id: i64, data: LiveData, dirty: bool) -> Live {
        Live {
            shape: shape.clone(),
            data,
            version: 0,
            stale: false,
            dirty,
            id,
            table: format!("rowvals_{id}"),
            put_sql: put_sql(&format!("rowvals_{id}")),
            delete_sql: format!("DELETE FROM rowvals_{id} WHERE id = ?1"),
            last_used: Instant::now(),
        }
    }
}

/// A shape saved at the index's current version, if any.
fn load(index: &Index, key: &[u8]) -> Result<Option<(i64, LiveData)>, IndexError> {
    let Some((id, version, data)) = index.saved_live(key)? else { return Ok(None) };
    if version != index.version()? {
        return Ok(None);
    }
    match rmp_serde::from_slice::<LiveData>(&data) {
        Ok(d) => Ok(Some((id, d))),
        Err(e) => {
            tracing::debug!(error = %e, "A saved shape does not decode; rebuilding it.");
            Ok(None)
        }
    }
}

impl Lives {
    fn version(&mut self) -> u64 {
        self.next_version += 1;
        self.next_version
    }

    /// The live aggregates of `shape`: kept in memory, else saved in the index at its current
    /// version, else built (or rebuilt when stale).
    /// Whether `shape` is live and usable as it is.
    pub fn has(&self, shape: &Shape) -> bool {
        self.lives.iter().any(|l| l.shape == *shape && !l.stale && !l.data.agg.lost())
    }

    pub fn get(
        &mut self,
        index: &mut Index,
        shape: &Shape,
        price: &PriceFn<'_>,
        cancel: &dyn Fn() -> bool,
    ) -> Result<Option<&mut Live>, IndexError> {
        let pos = self.lives.iter().position(|l| l.shape == *shape);
        let usable = pos.is_some_and(|i| !self.lives[i].stale && !self.lives[i].data.agg.lost());
        if !usable {
            let key = rmp_serde::to_vec(shape)?;
            let saved = match pos {
                Some(_) => None,
                None => load(index, &key)?,
            };
            let live = match saved {
                Some((id, data)) => Live::new(shape, id, data, false),
                None => {
                    let id = index.new_live(&key)?;
                    let Some(data) = build(index, shape, &format!("rowvals_{id}"), price, cancel)? else {
                        return Ok(None);
                    };
                    Live::new(shape, id, data, true)
                }
            };
            let mut live = live;
            live.version = self.version();
            match pos {
                Some(i) => self.lives[i] = live,
                None => {
                    if self.lives.len() >= MAX_LIVES {
                        let oldest = (0..self.lives.len())
                            .min_by_key(|&i| self.lives[i].last_used)
                            .expect("MAX_LIVES > 0");
                        let old = self.lives.remove(oldest);
                        index.drop_live(old.id)?;
                    }
                    self.lives.push(live);
                }
            }
        }
        let i = self.lives.iter().position(|l| l.shape == *shape).expect("just built");
        let live = &mut self.lives[i];
        live.last_used = Instant::now();
        Ok(Some(live))
    }

    /// Saves the shapes that changed since last saved, at the index's current version (so a
    /// restarted worker uses them only if nothing changed in between).
    pub fn save(&mut self, index: &mut Index) -> Result<usize, IndexError> {
        let version = index.version()?;
        let mut saved = 0;
        for live in self.lives.iter_mut().filter(|l| l.dirty && !l.stale) {
            index.save_live(live.id, version, &rmp_serde::to_vec(&live.data)?)?;
            live.dirty = false;
            saved += 1;
        }
        Ok(saved)
    }

    /// Applies one file's change to every live shape that covers its agent: the old summary is
    /// taken away and the new one added (each only where the shape lists the file).
    pub fn file_changed(
        &mut self,
        index: &Index,
        c: &Change<'_>,
        price: &PriceFn<'_>,
    ) -> Result<(), IndexError> {
        let version = self.version();
        for live in self.lives.iter_mut().filter(|l| l.shape.in_scope(c.agent)) {
            if live.stale {
                continue;
            }
            if live.shape.family {
                // A file's change may move it between family rows: rebuild on next use.
                live.stale = true;
                continue;
            }
            let mut changed = false;
            if let Some((disc, rollup, channel)) = c.old {
                live.data.files -= 1;
                sub_skips(&mut live.data.skips, &rollup.skips);
                live.data.pending_tails -= u64::from(rollup.pending_tail);
                live.data.listed -= u64::from(live.shape.lists(disc));
                if let Some(s) = contribution(&live.shape, disc, rollup, price) {
                    live.data.agg.apply(c.id as u64, c.agent, channel, &s, -1);
                    index.conn().prepare_cached(&live.delete_sql)?.execute([c.id])?;
                    changed = true;
                }
            }
            if let Some((disc, rollup, channel)) = c.new {
                live.data.files += 1;
                live.data.skips.add(&rollup.skips);
                live.data.pending_tails += u64::from(rollup.pending_tail);
                live.data.listed += u64::from(live.shape.lists(disc));
                if let Some(s) = contribution(&live.shape, disc, rollup, price) {
                    live.data.agg.apply(c.id as u64, c.agent, channel, &s, 1);
                    put_values(index, &live.put_sql, c.id, &s)?;
                    changed = true;
                }
            }
            // The file counts change even when the shape does not list the file.
            live.dirty = true;
            if changed {
                live.version = version;
            }
        }
        Ok(())
    }

    /// Marks every shape covering `agent` for a rebuild (prices or grouping changed under it).
    pub fn invalidate(&mut self, agent: Option<&str>) {
        for live in &mut self.lives {
            if agent.is_none_or(|a| live.shape.in_scope(a)) {
                live.stale = true;
            }
        }
    }

    /// Marks the family-grouped shapes covering `agent` for a rebuild (entries changed, so
    /// family membership may have).
    pub fn invalidate_family(&mut self, agent: &str) {
        for live in &mut self.lives {
            if live.shape.family && live.shape.in_scope(agent) {
                live.stale = true;
            }
        }
    }

    /// Forgets every shape held in memory (saved ones stay in the index).
    pub fn clear(&mut self) {
        self.lives.clear();
    }

    /// Approximate heap bytes.
    pub fn heap_bytes(&self) -> usize {
        self.lives.iter().map(|l| l.data.agg.heap_bytes()).sum()
    }
}

fn sub_skips(a: &mut SkipCounts, o: &SkipCounts) {
    a.malformed_json -= o.malformed_json;
    a.invalid_utf8 -= o.invalid_utf8;
    a.nul_bytes -= o.nul_bytes;
    a.oversize -= o.oversize;
    a.undecodable -= o.undecodable;
    a.implausible -= o.implausible;
}

fn put_sql(table: &str) -> String {
    format!("INSERT OR REPLACE INTO {table}(id, cost, tokens, messages) VALUES (?1, ?2, ?3, ?4)")
}

/// Puts a row's sort numbers with `sql`, a [`put_sql`].
fn put_values(index: &Index, sql: &str, id: i64, s: &Summary) -> Result<(), IndexError> {
    index.conn().prepare_cached(sql)?.execute(rusqlite::params![
        id,
        s.totals.total_cost.value(),
        s.totals.total_tokens as i64,
        s.counts.total as i64
    ])?;
    Ok(())
}

/// Builds a shape's aggregates from every rollup in scope, and its per-row sort numbers into
/// `table`. `Ok(None)` when cancelled.
fn build(
    index: &Index,
    shape: &Shape,
    table: &str,
    price: &PriceFn<'_>,
    cancel: &dyn Fn() -> bool,
) -> Result<Option<LiveData>, IndexError> {
    let started = Instant::now();
    let conn = index.conn();
    conn.execute_batch("SAVEPOINT live_build")?;
    conn.execute_batch(&format!(
        "DROP TABLE IF EXISTS {table};
         CREATE TABLE {table}(id INTEGER PRIMARY KEY, cost REAL NOT NULL, tokens INTEGER NOT NULL,
            messages INTEGER NOT NULL);"
    ))?;
    let put = put_sql(table);
    let mut data = LiveData::default();
    let mut cancelled = false;
    let mut seen = 0u64;
    let result = index.scan(&shape.agents, |row, rollup| {
        seen += 1;
        if seen % 256 == 0 && cancel() {
            cancelled = true;
            return Ok(false);
        }
        data.files += 1;
        data.skips.add(&rollup.skips);
        data.pending_tails += u64::from(rollup.pending_tail);
        if !shape.lists(&row.disc) {
            return Ok(true);
        }
        data.listed += 1;
        let summary = if shape.family {
            family_row(index, shape, &row, &rollup, price)?
        } else {
            contribution(shape, &row.disc, &rollup, price)
        };
        if let Some(s) = summary {
            data.agg.apply(row.id as u64, &row.disc.agent_id, row.facts.channel.as_deref(), &s, 1);
            put_values(index, &put, row.id, &s)?;
        }
        Ok(true)
    });
    // Indexes after the rows: one sort each instead of an update per row.
    let indexed = result.and_then(|()| {
        conn.execute_batch(&crate::engine::index::rowvals_indexes_sql(table)).map_err(IndexError::from)
    });
    if indexed.is_err() || cancelled {
        conn.execute_batch("ROLLBACK TO live_build; RELEASE live_build")?;
        indexed?;
        return Ok(None);
    }
    conn.execute_batch("RELEASE live_build")?;
    tracing::debug!(
        files = data.files,
        rows = data.agg.rows,
        ms = started.elapsed().as_millis() as u64,
        "Built live aggregates."
    );
    Ok(Some(data))
}

/// Family grouping: a file's row (its own usage plus its family's), or `None` when the file
/// is a family member folded into another row.
fn family_row(
    index: &Index,
    shape: &Shape,
    row: &FileRow,
    rollup: &FileRollup,
    price: &PriceFn<'_>,
) -> Result<Option<Summary>, IndexError> {
    let agent = &row.disc.agent_id;
    let entry = match &row.facts.entry_key {
        Some(k) => index.entry(agent, k)?,
        None if index.is_family_member(agent, &row.disc.session_id)? => return Ok(None),
        None => None,
    };
    let members = family_members(index, row, entry.as_ref())?;
    Ok(Some(row_summary(index, &shape.window(), row, rollup, &members, price, CONTRIBUTION)?))
}

/// The prices of a file's models, in the order of its rollup's models.
pub fn prices_of(disc: &Discovered, rollup: &FileRollup, price: &PriceFn<'_>) -> Vec<Option<Price>> {
    rollup.models.iter().map(|(p, m)| price(&disc.agent_id, p.as_deref(), m.as_deref())).collect()
}

/// A row's summary over its own file and its family members' files.
pub fn row_summary(
    index: &Index,
    window: &Window,
    row: &FileRow,
    rollup: &FileRollup,
    members: &[FileRow],
    price: &PriceFn<'_>,
    want: Want,
) -> Result<Summary, IndexError> {
    let one = |d: &Discovered, r: &FileRollup| summarize(r, window, &prices_of(d, r, price), want);
    let mut s = one(&row.disc, rollup);
    for m in members {
        if let Some(r) = index.rollup(m.id)? {
            s.merge(&one(&m.disc, &r));
        }
    }
    Ok(s)
}

/// The other files whose usage a family row includes: for each listed family session id, the
/// transcript OpenClaw would read (the primary file, else the newest archive).
pub fn family_members(
    index: &Index,
    row: &FileRow,
    entry: Option<&super::store::StoreEntry>,
) -> Result<Vec<FileRow>, IndexError> {
    let Some(e) = entry else { return Ok(Vec::new()) };
    let mut included = vec![row.disc.session_id.clone()];
    let mut out = Vec::new();
    for id in &e.family_ids {
        if included.contains(id) {
            continue;
        }
        included.push(id.clone());
        if let Some(f) = file_for_session(index, &row.disc.agent_id, id)? {
            out.push(f);
        }
    }
    Ok(out)
}

/// The transcript OpenClaw reads for a session id: the primary file, else the newest archive.
pub fn file_for_session(index: &Index, agent: &str, session_id: &str) -> Result<Option<FileRow>, IndexError> {
    use super::discover::FileKind;
    let rank = |f: &FileRow| match &f.disc.kind {
        FileKind::Primary => (1, String::new()),
        FileKind::Reset(ts) | FileKind::Deleted(ts) => (0, ts.clone()),
    };
    Ok(index.files_of_session(agent, session_id)?.into_iter().max_by(|a, b| rank(a).cmp(&rank(b))))
}
