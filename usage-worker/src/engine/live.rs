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
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Shape {
    pub agents: Vec<String>,
    pub start: i64,
    pub end: i64,
    pub offset_ms: i64,
    pub family: bool,
    /// Stamp of the price tables the costs were computed with.
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
    pub agg: Aggregates,
    /// Files in scope (listed or not) and what was skipped in them, for diagnostics.
    pub files: u64,
    pub skips: SkipCounts,
    pub pending_tails: u64,
    /// Changes whenever `agg` or the per-row numbers do.
    pub version: u64,
    /// Must be rebuilt before use (family grouping changed, or a maximum was lost).
    pub stale: bool,
    /// The temporary table of per-row sort numbers.
    pub table: String,
    last_used: Instant,
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
    let prices: Vec<Option<Price>> =
        rollup.models.iter().map(|(p, m)| price(&disc.agent_id, p.as_deref(), m.as_deref())).collect();
    Some(summarize(rollup, &shape.window(), &prices, CONTRIBUTION))
}

/// All live shapes.
#[derive(Debug, Default)]
pub struct Lives {
    lives: Vec<Live>,
    next_table: u64,
    next_version: u64,
}

/// One file's change, for [`Lives::file_changed`].
pub struct Change<'a> {
    pub id: i64,
    pub agent: &'a str,
    pub old: Option<(&'a Discovered, &'a FileRollup, Option<&'a str>)>,
    pub new: Option<(&'a Discovered, &'a FileRollup, Option<&'a str>)>,
}

impl Lives {
    fn version(&mut self) -> u64 {
        self.next_version += 1;
        self.next_version
    }

    /// The live aggregates of `shape`, built or rebuilt if needed.
    pub fn get(
        &mut self,
        index: &Index,
        shape: &Shape,
        price: &PriceFn<'_>,
        cancel: &dyn Fn() -> bool,
    ) -> Result<Option<&mut Live>, IndexError> {
        let pos = self.lives.iter().position(|l| l.shape == *shape);
        let needs_build = pos.is_none_or(|i| self.lives[i].stale || self.lives[i].agg.lost());
        if needs_build {
            let table = match pos {
                Some(i) => self.lives[i].table.clone(),
                None => {
                    self.next_table += 1;
                    format!("rowvals_{}", self.next_table)
                }
            };
            let Some(mut live) = build(index, shape, table, price, cancel)? else {
                return Ok(None);
            };
            live.version = self.version();
            match pos {
                Some(i) => self.lives[i] = live,
                None => {
                    if self.lives.len() >= MAX_LIVES {
                        let oldest = (0..self.lives.len())
                            .min_by_key(|&i| self.lives[i].last_used)
                            .expect("MAX_LIVES > 0");
                        let old = self.lives.remove(oldest);
                        let _ =
                            index.conn().execute_batch(&format!("DROP TABLE IF EXISTS temp.{}", old.table));
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
                live.files -= 1;
                sub_skips(&mut live.skips, &rollup.skips);
                live.pending_tails -= u64::from(rollup.pending_tail);
                if let Some(s) = contribution(&live.shape, disc, rollup, price) {
                    live.agg.apply(c.id as u64, c.agent, channel, &s, -1);
                    index
                        .conn()
                        .prepare_cached(&format!("DELETE FROM temp.{} WHERE id = ?1", live.table))?
                        .execute([c.id])?;
                    changed = true;
                }
            }
            if let Some((disc, rollup, channel)) = c.new {
                live.files += 1;
                live.skips.add(&rollup.skips);
                live.pending_tails += u64::from(rollup.pending_tail);
                if let Some(s) = contribution(&live.shape, disc, rollup, price) {
                    live.agg.apply(c.id as u64, c.agent, channel, &s, 1);
                    put_values(index, &live.table, c.id, &s)?;
                    changed = true;
                }
            }
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

    /// Forgets every shape (the index was rebuilt).
    pub fn clear(&mut self, index: Option<&Index>) {
        for live in self.lives.drain(..) {
            if let Some(index) = index {
                let _ = index.conn().execute_batch(&format!("DROP TABLE IF EXISTS temp.{}", live.table));
            }
        }
    }

    /// Approximate heap bytes.
    pub fn heap_bytes(&self) -> usize {
        self.lives.iter().map(|l| l.agg.heap_bytes()).sum()
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

fn put_values(index: &Index, table: &str, id: i64, s: &Summary) -> Result<(), IndexError> {
    index
        .conn()
        .prepare_cached(&format!(
            "INSERT OR REPLACE INTO temp.{table}(id, cost, tokens, messages) VALUES (?1, ?2, ?3, ?4)"
        ))?
        .execute(rusqlite::params![
            id,
            s.totals.total_cost.value(),
            s.totals.total_tokens as i64,
            s.counts.total as i64
        ])?;
    Ok(())
}

/// Builds a shape's aggregates from every rollup in scope. `Ok(None)` when cancelled.
fn build(
    index: &Index,
    shape: &Shape,
    table: String,
    price: &PriceFn<'_>,
    cancel: &dyn Fn() -> bool,
) -> Result<Option<Live>, IndexError> {
    let started = Instant::now();
    let conn = index.conn();
    conn.execute_batch(&format!(
        "DROP TABLE IF EXISTS temp.{table};
         CREATE TEMP TABLE {table}(id INTEGER PRIMARY KEY, cost REAL NOT NULL, tokens INTEGER NOT NULL,
            messages INTEGER NOT NULL);
         CREATE INDEX temp.{table}_cost ON {table}(cost);
         CREATE INDEX temp.{table}_tokens ON {table}(tokens);
         CREATE INDEX temp.{table}_messages ON {table}(messages);"
    ))?;
    let mut live = Live {
        shape: shape.clone(),
        agg: Aggregates::default(),
        files: 0,
        skips: SkipCounts::default(),
        pending_tails: 0,
        version: 0,
        stale: false,
        table,
        last_used: Instant::now(),
    };
    let mut cancelled = false;
    let mut seen = 0u64;
    conn.execute_batch("SAVEPOINT live_build")?;
    let result = index.scan(&shape.agents, |row, rollup| {
        seen += 1;
        if seen % 256 == 0 && cancel() {
            cancelled = true;
            return Ok(false);
        }
        live.files += 1;
        live.skips.add(&rollup.skips);
        live.pending_tails += u64::from(rollup.pending_tail);
        if !shape.lists(&row.disc) {
            return Ok(true);
        }
        let summary = if shape.family {
            family_row(index, shape, &row, &rollup, price)?
        } else {
            contribution(shape, &row.disc, &rollup, price)
        };
        if let Some(s) = summary {
            live.agg.apply(row.id as u64, &row.disc.agent_id, row.facts.channel.as_deref(), &s, 1);
            put_values(index, &live.table, row.id, &s)?;
        }
        Ok(true)
    });
    conn.execute_batch("RELEASE live_build")?;
    result?;
    if cancelled {
        return Ok(None);
    }
    tracing::debug!(
        files = live.files,
        rows = live.agg.rows,
        ms = started.elapsed().as_millis() as u64,
        "Built live aggregates."
    );
    Ok(Some(live))
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
    let one = |d: &Discovered, r: &FileRollup| {
        let prices: Vec<Option<Price>> =
            r.models.iter().map(|(p, m)| price(&d.agent_id, p.as_deref(), m.as_deref())).collect();
        summarize(r, window, &prices, want)
    };
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
