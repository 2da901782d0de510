//! Ground truth: what every usage answer must say, computed by the harness, never by the worker.
//!
//! The store's sums come from the generator's manifest (`clawgate-demo.json`); each append's
//! from what `demo_store::append_turn` returns, split per message by the harness's own reading
//! of the lines it appended. A worker reads each transcript at its own moment, so for a file the
//! writer touched any prefix of the appended messages is a correct view of it; everything else
//! must be exact. So a `sessions.usage` answer that lists every touched file's row is checked
//! exactly (each touched row against its prefixes, the rest of the totals against the manifest);
//! other answers are checked against bounds, and exactly once the writer pauses (a settle).
//!
//! The writer restores the store when it is done: touched files are truncated back to their
//! original length (recorded in a marker file first, so an interrupted run is undone next time).

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    fs::OpenOptions,
    io::{Read as _, Seek as _, SeekFrom},
    ops::{Add, Sub},
    path::{Path, PathBuf},
    sync::RwLock,
};

use anyhow::{Context as _, bail};
use serde::Deserialize;

/// The marker listing touched files and their original lengths, at the store's root.
pub const DIRTY_MARKER: &str = "clawgate-proof.dirty.json";

/// Usage sums with OpenClaw's field names. Tokens are signed so that differences work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Tot {
    pub input: i64,
    pub output: i64,
    pub cache_read: i64,
    pub cache_write: i64,
    pub total_tokens: i64,
    pub total_cost: f64,
    pub input_cost: f64,
    pub output_cost: f64,
    pub cache_read_cost: f64,
    pub cache_write_cost: f64,
    pub missing_cost_entries: i64,
}

impl Tot {
    fn tokens(&self) -> [i64; 6] {
        [
            self.input,
            self.output,
            self.cache_read,
            self.cache_write,
            self.total_tokens,
            self.missing_cost_entries,
        ]
    }

    fn costs(&self) -> [f64; 5] {
        [self.total_cost, self.input_cost, self.output_cost, self.cache_read_cost, self.cache_write_cost]
    }

    /// Equal tokens, and costs within 1e-9 relative to `max(|expected|, scale)`: `scale` is the
    /// magnitude the compared numbers were derived from (differences of big sums carry the big
    /// sums' rounding).
    pub fn matches(&self, expected: &Tot, scale: f64) -> bool {
        self.tokens() == expected.tokens()
            && self.costs().iter().zip(expected.costs()).all(|(a, e)| close(*a, e, scale))
    }

    /// Every field within `[lo, hi]` (costs with the same tolerance as [`Tot::matches`]).
    pub fn within(&self, lo: &Tot, hi: &Tot) -> bool {
        let t = self
            .tokens()
            .iter()
            .zip(lo.tokens().iter().zip(hi.tokens()))
            .all(|(v, (l, h))| *l <= *v && *v <= h);
        let c = self.costs().iter().zip(lo.costs().iter().zip(hi.costs())).all(|(v, (l, h))| {
            let slack = 1e-9 * h.abs().max(1e-12);
            *l - slack <= *v && *v <= h + slack
        });
        t && c
    }

    pub fn from_demo(t: &demo_store::Totals) -> Tot {
        Tot {
            input: t.input as i64,
            output: t.output as i64,
            cache_read: t.cache_read as i64,
            cache_write: t.cache_write as i64,
            total_tokens: t.total_tokens as i64,
            total_cost: t.total_cost,
            input_cost: t.input_cost,
            output_cost: t.output_cost,
            cache_read_cost: t.cache_read_cost,
            cache_write_cost: t.cache_write_cost,
            missing_cost_entries: t.missing_cost_entries as i64,
        }
    }
}

fn close(actual: f64, expected: f64, scale: f64) -> bool {
    (actual - expected).abs() <= 1e-9 * expected.abs().max(scale).max(1e-12)
}

impl Add for Tot {
    type Output = Tot;
    fn add(self, o: Tot) -> Tot {
        Tot {
            input: self.input + o.input,
            output: self.output + o.output,
            cache_read: self.cache_read + o.cache_read,
            cache_write: self.cache_write + o.cache_write,
            total_tokens: self.total_tokens + o.total_tokens,
            total_cost: self.total_cost + o.total_cost,
            input_cost: self.input_cost + o.input_cost,
            output_cost: self.output_cost + o.output_cost,
            cache_read_cost: self.cache_read_cost + o.cache_read_cost,
            cache_write_cost: self.cache_write_cost + o.cache_write_cost,
            missing_cost_entries: self.missing_cost_entries + o.missing_cost_entries,
        }
    }
}

impl Sub for Tot {
    type Output = Tot;
    fn sub(self, o: Tot) -> Tot {
        Tot {
            input: self.input - o.input,
            output: self.output - o.output,
            cache_read: self.cache_read - o.cache_read,
            cache_write: self.cache_write - o.cache_write,
            total_tokens: self.total_tokens - o.total_tokens,
            total_cost: self.total_cost - o.total_cost,
            input_cost: self.input_cost - o.input_cost,
            output_cost: self.output_cost - o.output_cost,
            cache_read_cost: self.cache_read_cost - o.cache_read_cost,
            cache_write_cost: self.cache_write_cost - o.cache_write_cost,
            missing_cost_entries: self.missing_cost_entries - o.missing_cost_entries,
        }
    }
}

impl fmt::Display for Tot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{in {} out {} cr {} cw {} total {} tokens; cost {:.12} (in {:.12} out {:.12} cr {:.12} cw {:.12}); missing {}}}",
            self.input,
            self.output,
            self.cache_read,
            self.cache_write,
            self.total_tokens,
            self.total_cost,
            self.input_cost,
            self.output_cost,
            self.cache_read_cost,
            self.cache_write_cost,
            self.missing_cost_entries
        )
    }
}

// --- the harness's own transcript reading -------------------------------------------------------

#[derive(Deserialize)]
struct Line {
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<Message>,
}

#[derive(Deserialize)]
struct Message {
    role: Option<String>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Usage {
    #[serde(default)]
    input: i64,
    #[serde(default)]
    output: i64,
    #[serde(default)]
    cache_read: i64,
    #[serde(default)]
    cache_write: i64,
    total_tokens: Option<i64>,
    cost: Option<Cost>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Cost {
    #[serde(default)]
    input: f64,
    #[serde(default)]
    output: f64,
    #[serde(default)]
    cache_read: f64,
    #[serde(default)]
    cache_write: f64,
    #[serde(default)]
    total: f64,
}

/// The usage of one JSONL line, when it is an assistant message carrying usage (OpenClaw's
/// rule: `totalTokens` if present, else the sum of the four components; no cost is a missing
/// cost entry).
pub fn line_usage(line: &[u8]) -> Option<Tot> {
    let line: Line = serde_json::from_slice(line).ok()?;
    let message = line.message.filter(|_| line.kind.as_deref() == Some("message"))?;
    if message.role.as_deref() != Some("assistant") {
        return None;
    }
    let u = message.usage?;
    let mut t = Tot {
        input: u.input,
        output: u.output,
        cache_read: u.cache_read,
        cache_write: u.cache_write,
        total_tokens: u.total_tokens.unwrap_or(u.input + u.output + u.cache_read + u.cache_write),
        ..Tot::default()
    };
    match u.cost {
        Some(c) => {
            t.total_cost = c.total;
            t.input_cost = c.input;
            t.output_cost = c.output;
            t.cache_read_cost = c.cache_read;
            t.cache_write_cost = c.cache_write;
        }
        None => t.missing_cost_entries = 1,
    }
    Some(t)
}

/// The usage of every complete line in `bytes`, in order.
pub fn usages(bytes: &[u8]) -> Vec<Tot> {
    bytes.split(|b| *b == b'\n').filter_map(line_usage).collect()
}

// --- answer shapes (only the fields checked) ------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheStatus {
    pub status: String,
}

/// A `sessions.usage` payload.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionsUsage {
    pub totals: Tot,
    pub aggregates: Aggregates,
    #[serde(default)]
    pub sessions: Vec<Row>,
    pub cache_status: Option<CacheStatus>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Aggregates {
    #[serde(default)]
    pub by_agent: Vec<AgentRow>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRow {
    pub agent_id: String,
    pub totals: Tot,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub agent_id: Option<String>,
    pub usage: Option<RowUsage>,
}

/// A row's `usage`: the eleven totals and the transcript it covers (the rest is skipped).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[derive(Default)]
pub struct RowUsage {
    pub session_file: Option<String>,
    pub input: i64,
    pub output: i64,
    pub cache_read: i64,
    pub cache_write: i64,
    pub total_tokens: i64,
    pub total_cost: f64,
    pub input_cost: f64,
    pub output_cost: f64,
    pub cache_read_cost: f64,
    pub cache_write_cost: f64,
    pub missing_cost_entries: i64,
}

impl RowUsage {
    fn tot(&self) -> Tot {
        Tot {
            input: self.input,
            output: self.output,
            cache_read: self.cache_read,
            cache_write: self.cache_write,
            total_tokens: self.total_tokens,
            total_cost: self.total_cost,
            input_cost: self.input_cost,
            output_cost: self.output_cost,
            cache_read_cost: self.cache_read_cost,
            cache_write_cost: self.cache_write_cost,
            missing_cost_entries: self.missing_cost_entries,
        }
    }
}

/// A `usage.cost` payload.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageCost {
    pub totals: Tot,
    pub cache_status: Option<CacheStatus>,
}

impl SessionsUsage {
    pub fn is_stale(&self) -> bool {
        self.cache_status.as_ref().is_some_and(|c| c.status == "stale")
    }
}

impl UsageCost {
    pub fn is_stale(&self) -> bool {
        self.cache_status.as_ref().is_some_and(|c| c.status == "stale")
    }
}

// --- the truth ------------------------------------------------------------------------------------

/// A transcript the writer touched.
#[derive(Debug)]
struct FileTruth {
    agent: String,
    path: PathBuf,
    /// Its sums before the first append (the harness's own reading).
    base: Tot,
    orig_len: u64,
    /// `cum[k]`: the first `k` appended messages; `cum[0]` is zero.
    cum: Vec<Tot>,
}

#[derive(Debug, Default)]
struct State {
    /// By `<agent>/<file name>`.
    files: HashMap<String, FileTruth>,
    appended: Tot,
    appended_by_agent: BTreeMap<String, Tot>,
    appends: u64,
}

/// What a check concluded.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Consistent. `exact`: checked field by field against known values (not only bounds);
    /// `converged`: equals the store with every append so far; `behind`: when not, why.
    Ok {
        exact: bool,
        converged: bool,
        behind: Option<String>,
    },
    Wrong(String),
}

/// Expected sums, shared by the writer and every checker.
pub struct Truth {
    store: PathBuf,
    manifest: Tot,
    manifest_by_agent: BTreeMap<String, Tot>,
    state: RwLock<State>,
}

impl Truth {
    pub fn new(store: &Path, manifest: &demo_store::DemoManifest) -> Truth {
        Truth {
            store: store.to_path_buf(),
            manifest: Tot::from_demo(&manifest.totals),
            manifest_by_agent: manifest
                .by_agent
                .iter()
                .map(|(a, t)| (a.clone(), Tot::from_demo(t)))
                .collect(),
            state: RwLock::new(State::default()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The store with every append so far, and how many turns were appended.
    pub fn expected(&self) -> (Tot, u64) {
        let st = self.read();
        (self.manifest + st.appended, st.appends)
    }

    pub fn manifest(&self) -> Tot {
        self.manifest
    }

    /// Appends one turn to `file` (a live transcript of `agent`) stamped `at_ms`, and records
    /// its messages. Holds the write lock throughout, so a checker that gets the read lock knows
    /// every append an answer may have seen.
    pub fn append(&self, agent: &str, file: &Path, seed: u64, at_ms: i64) -> anyhow::Result<Tot> {
        let name = file.file_name().and_then(|n| n.to_str()).context("transcript name")?;
        let key = format!("{agent}/{name}");
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        if !st.files.contains_key(&key) {
            let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            let base = usages(&bytes).into_iter().fold(Tot::default(), |a, b| a + b);
            st.files.insert(
                key.clone(),
                FileTruth {
                    agent: agent.to_owned(),
                    path: file.to_path_buf(),
                    base,
                    orig_len: bytes.len() as u64,
                    cum: vec![Tot::default()],
                },
            );
            write_marker(&self.store, &st.files)?;
        }
        let before = std::fs::metadata(file)?.len();
        let added = demo_store::append_turn(file, seed, at_ms)
            .with_context(|| format!("appending to {}", file.display()))?;
        let mut f = OpenOptions::new().read(true).open(file)?;
        f.seek(SeekFrom::Start(before))?;
        let mut tail = Vec::new();
        f.read_to_end(&mut tail)?;
        let messages = usages(&tail);
        let sum = messages.iter().fold(Tot::default(), |a, b| a + *b);
        let returned = Tot::from_demo(&added);
        if !sum.matches(&returned, 0.0) {
            bail!(
                "harness inconsistency: the lines appended to {} sum to {sum}, append_turn returned {returned}",
                file.display()
            );
        }
        let ft = st.files.get_mut(&key).expect("inserted above");
        let mut last = *ft.cum.last().expect("cum[0]");
        for m in messages {
            last = last + m;
            ft.cum.push(last);
        }
        st.appended = st.appended + returned;
        let by_agent = st.appended_by_agent.entry(agent.to_owned()).or_default();
        *by_agent = *by_agent + returned;
        st.appends += 1;
        Ok(returned)
    }

    /// Checks a `sessions.usage` answer over the whole store (`agentScope:"all"`, every day).
    pub fn check_sessions_usage(&self, p: &SessionsUsage) -> Verdict {
        let st = self.read();
        let scale = self.manifest.total_cost.abs();
        let mut seen: HashMap<&str, Tot> = HashMap::new();
        let mut behind: Option<String> = None;
        for row in &p.sessions {
            let (Some(u), Some(agent)) = (&row.usage, &row.agent_id) else { continue };
            let Some(name) = u.session_file.as_deref().and_then(|f| Path::new(f).file_name()?.to_str())
            else {
                continue;
            };
            let key = format!("{agent}/{name}");
            let Some((key, ft)) = st.files.get_key_value(&key) else { continue };
            let got = u.tot();
            // The last match: a zero-usage message (an API error reply) repeats the previous sum.
            let at = ft.cum.iter().rposition(|c| got.matches(&(ft.base + *c), 0.0));
            match at {
                Some(k) if k + 1 < ft.cum.len() && behind.is_none() => {
                    behind =
                        Some(format!("row {key} shows {k} of the {} messages appended", ft.cum.len() - 1));
                }
                Some(_) => {}
                None => {
                    return Verdict::Wrong(format!(
                        "sessions.usage row {key}: got {got}; expected its original {} plus one of the {} prefixes of the {} messages appended (all of them: {})",
                        ft.base,
                        ft.cum.len(),
                        ft.cum.len() - 1,
                        ft.base + *ft.cum.last().expect("cum[0]")
                    ));
                }
            }
            seen.insert(key.as_str(), got);
        }
        let all_rows = seen.len() == st.files.len();
        let answer_agents: BTreeMap<&str, Tot> =
            p.aggregates.by_agent.iter().map(|r| (r.agent_id.as_str(), r.totals)).collect();
        if let Some(extra) = answer_agents.keys().find(|a| !self.manifest_by_agent.contains_key(**a)) {
            return Verdict::Wrong(format!(
                "sessions.usage byAgent lists an agent the store does not have: {extra}"
            ));
        }
        if all_rows {
            // Totals minus the touched rows must be exactly the untouched rest of the store.
            let touched: Tot = seen.values().fold(Tot::default(), |a, b| a + *b);
            let base: Tot = st.files.values().fold(Tot::default(), |a, f| a + f.base);
            let (got, want) = (p.totals - touched, self.manifest - base);
            if !got.matches(&want, scale) {
                return Verdict::Wrong(format!(
                    "sessions.usage totals {}: minus the {} touched rows {got}, expected the untouched rest {want}",
                    p.totals,
                    seen.len()
                ));
            }
            for (agent, manifest) in &self.manifest_by_agent {
                let mut touched = Tot::default();
                let mut base = Tot::default();
                for (key, ft) in st.files.iter().filter(|(_, f)| &f.agent == agent) {
                    touched = touched + seen[key.as_str()];
                    base = base + ft.base;
                }
                let answer = answer_agents.get(agent.as_str()).copied().unwrap_or_default();
                let (got, want) = (answer - touched, *manifest - base);
                if !got.matches(&want, scale) {
                    return Verdict::Wrong(format!(
                        "sessions.usage byAgent {agent} {answer}: minus touched rows {got}, expected {want}"
                    ));
                }
            }
            let converged = behind.is_none() && p.totals.matches(&(self.manifest + st.appended), scale);
            return Verdict::Ok { exact: true, converged, behind };
        }
        // Some touched rows were cut by `limit`: bounds only.
        let (lo, hi) = (self.manifest, self.manifest + st.appended);
        if !p.totals.within(&lo, &hi) {
            return Verdict::Wrong(format!(
                "sessions.usage totals {} outside [store {lo}, store + every append {hi}]",
                p.totals
            ));
        }
        for (agent, manifest) in &self.manifest_by_agent {
            let hi = *manifest + st.appended_by_agent.get(agent).copied().unwrap_or_default();
            let answer = answer_agents.get(agent.as_str()).copied().unwrap_or_default();
            if !answer.within(manifest, &hi) {
                return Verdict::Wrong(format!(
                    "sessions.usage byAgent {agent} {answer} outside [{manifest}, {hi}]"
                ));
            }
        }
        let missing = st.files.keys().find(|k| !seen.contains_key(k.as_str()));
        Verdict::Ok { exact: false, converged: false, behind: missing.map(|k| format!("row {k} not listed")) }
    }

    /// Checks a `usage.cost` answer over the whole store: within bounds, and converged when it
    /// equals the store with every append.
    pub fn check_usage_cost(&self, p: &UsageCost) -> Verdict {
        let st = self.read();
        let (lo, hi) = (self.manifest, self.manifest + st.appended);
        if !p.totals.within(&lo, &hi) {
            return Verdict::Wrong(format!(
                "usage.cost totals {} outside [store {lo}, store + every append {hi}]",
                p.totals
            ));
        }
        let converged = p.totals.matches(&hi, self.manifest.total_cost.abs());
        let behind = (!converged).then(|| format!("totals {} vs every append {hi}", p.totals));
        Verdict::Ok { exact: converged, converged, behind }
    }

    /// Truncates every touched transcript back to its original length and removes the marker.
    pub fn restore(&self) -> anyhow::Result<usize> {
        let st = self.read();
        for ft in st.files.values() {
            truncate(&ft.path, ft.orig_len)?;
        }
        let marker = self.store.join(DIRTY_MARKER);
        if marker.exists() {
            std::fs::remove_file(&marker).with_context(|| format!("removing {}", marker.display()))?;
        }
        Ok(st.files.len())
    }
}

fn truncate(path: &Path, len: u64) -> anyhow::Result<()> {
    let f =
        OpenOptions::new().write(true).open(path).with_context(|| format!("opening {}", path.display()))?;
    f.set_len(len).with_context(|| format!("truncating {}", path.display()))
}

fn write_marker(store: &Path, files: &HashMap<String, FileTruth>) -> anyhow::Result<()> {
    let lens: BTreeMap<String, u64> =
        files.values().map(|f| (f.path.display().to_string(), f.orig_len)).collect();
    let path = store.join(DIRTY_MARKER);
    let tmp = store.join(format!("{DIRTY_MARKER}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&lens)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
}

/// Undoes an interrupted run's appends, if its marker is there. Returns the files restored.
pub fn restore_from_marker(store: &Path) -> anyhow::Result<usize> {
    let path = store.join(DIRTY_MARKER);
    let Ok(bytes) = std::fs::read(&path) else { return Ok(0) };
    let lens: BTreeMap<String, u64> =
        serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display()))?;
    for (file, len) in &lens {
        truncate(Path::new(file), *len)?;
    }
    std::fs::remove_file(&path)?;
    Ok(lens.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_harness_reads_a_generated_store_to_its_manifest_sums() {
        let dir = tempfile::tempdir().unwrap();
        let spec = demo_store::DemoSpec {
            agents: 2,
            sessions_per_agent: 3,
            turns_per_session: 4,
            ..Default::default()
        };
        let manifest = demo_store::generate(dir.path(), &spec).unwrap();
        let mut sum = Tot::default();
        for entry in walk(&dir.path().join("agents")) {
            let name = entry.file_name().unwrap().to_string_lossy().into_owned();
            if name.contains(".jsonl") {
                sum = usages(&std::fs::read(&entry).unwrap()).into_iter().fold(sum, |a, b| a + b);
            }
        }
        let want = Tot::from_demo(&manifest.totals);
        assert!(sum.matches(&want, 0.0), "{sum} vs {want}");
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.path().is_dir() { out.extend(walk(&e.path())) } else { out.push(e.path()) }
        }
        out
    }

    #[test]
    fn appends_are_recorded_per_message_and_undone() {
        let dir = tempfile::tempdir().unwrap();
        let spec = demo_store::DemoSpec {
            agents: 1,
            sessions_per_agent: 2,
            turns_per_session: 3,
            ..Default::default()
        };
        let manifest = demo_store::generate(dir.path(), &spec).unwrap();
        let truth = Truth::new(dir.path(), &manifest);
        let sessions = dir.path().join("agents/main/sessions");
        let file = std::fs::read_dir(&sessions)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .unwrap();
        let len = std::fs::metadata(&file).unwrap().len();
        let added = truth.append("main", &file, 1, spec.end_ms + 1000).unwrap();
        assert!(added.total_tokens > 0);
        assert!(dir.path().join(DIRTY_MARKER).exists());
        let (expected, appends) = truth.expected();
        assert_eq!(appends, 1);
        assert!(expected.matches(&(Tot::from_demo(&manifest.totals) + added), 0.0));
        let cost = UsageCost { totals: expected, cache_status: None };
        assert!(matches!(truth.check_usage_cost(&cost), Verdict::Ok { exact: true, converged: true, .. }));
        let before = UsageCost { totals: truth.manifest(), cache_status: None };
        assert!(matches!(
            truth.check_usage_cost(&before),
            Verdict::Ok { exact: false, converged: false, .. }
        ));
        let mut wrong = expected;
        wrong.output += 1;
        assert!(matches!(
            truth.check_usage_cost(&UsageCost { totals: wrong, cache_status: None }),
            Verdict::Wrong(_)
        ));
        // Interrupted run: the marker undoes the append.
        assert_eq!(restore_from_marker(dir.path()).unwrap(), 1);
        assert_eq!(std::fs::metadata(&file).unwrap().len(), len);
    }

    fn row(agent: &str, file: &Path, t: Tot) -> Row {
        let u = RowUsage {
            session_file: Some(file.display().to_string()),
            input: t.input,
            output: t.output,
            cache_read: t.cache_read,
            cache_write: t.cache_write,
            total_tokens: t.total_tokens,
            total_cost: t.total_cost,
            input_cost: t.input_cost,
            output_cost: t.output_cost,
            cache_read_cost: t.cache_read_cost,
            cache_write_cost: t.cache_write_cost,
            missing_cost_entries: t.missing_cost_entries,
        };
        Row { agent_id: Some(agent.to_owned()), usage: Some(u) }
    }

    #[test]
    fn sessions_usage_rows_may_show_any_prefix_and_the_rest_must_be_exact() {
        let dir = tempfile::tempdir().unwrap();
        let spec = demo_store::DemoSpec {
            agents: 1,
            sessions_per_agent: 2,
            turns_per_session: 3,
            ..Default::default()
        };
        let manifest = demo_store::generate(dir.path(), &spec).unwrap();
        let truth = Truth::new(dir.path(), &manifest);
        let file = std::fs::read_dir(dir.path().join("agents/main/sessions"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .unwrap();
        truth.append("main", &file, 3, spec.end_ms + 1000).unwrap();
        let (base, cum) = {
            let st = truth.read();
            let ft = st.files.values().next().unwrap();
            (ft.base, ft.cum.clone())
        };
        let manifest_total = truth.manifest();
        let answer = |k: usize, extra: i64| {
            let shown = base + cum[k];
            let mut totals = manifest_total - base + shown;
            totals.output += extra;
            SessionsUsage {
                totals,
                aggregates: Aggregates { by_agent: vec![AgentRow { agent_id: "main".into(), totals }] },
                sessions: vec![row("main", &file, shown)],
                cache_status: None,
            }
        };
        let last = cum.len() - 1;
        assert!(matches!(
            truth.check_sessions_usage(&answer(last, 0)),
            Verdict::Ok { exact: true, converged: true, .. }
        ));
        // Mid-append views are correct, not converged.
        assert!(matches!(
            truth.check_sessions_usage(&answer(0, 0)),
            Verdict::Ok { exact: true, converged: false, .. }
        ));
        // One token off anywhere else is wrong.
        assert!(matches!(truth.check_sessions_usage(&answer(last, 1)), Verdict::Wrong(_)));
        let mut off = answer(last, 0);
        off.sessions[0].usage.as_mut().unwrap().output += 1;
        assert!(matches!(truth.check_sessions_usage(&off), Verdict::Wrong(_)));
        // Without the touched row (cut by `limit`), only bounds apply.
        let mut cut = answer(last, 0);
        cut.sessions.clear();
        assert!(matches!(truth.check_sessions_usage(&cut), Verdict::Ok { exact: false, .. }));
        truth.restore().unwrap();
    }
}
