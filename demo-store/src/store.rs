//! Lays out a whole demo store on disk: per-agent directories, `models.json`, every transcript
//! (in parallel), `sessions.json`, and finally the manifest.
//!
//! The manifest is written last (atomically) and a marker file exists while generation runs, so
//! an interrupted run is recognised as ours and cleaned up rather than mistaken for a finished
//! store or refused as foreign data.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;
use serde::ser::SerializeMap;

use crate::catalog::{MODELS, ModelInfo};
use crate::clock::archive_stamp;
use crate::plan::{SessionPlan, Timeline, plan_session};
use crate::rng::Rng;
use crate::transcript::{Stats, Transcript};
use crate::{DemoError, DemoManifest, DemoSpec, FORMAT_VERSION, MANIFEST_FILE, Totals};

/// Present while a generation is in progress (or was interrupted).
const PARTIAL_MARKER: &str = "clawgate-demo.partial";

const WRITE_BUFFER: usize = 256 * 1024;

/// Reads `<out>/clawgate-demo.json`.
pub fn read_manifest(out: &Path) -> Result<DemoManifest, DemoError> {
    let path = out.join(MANIFEST_FILE);
    let bytes = fs::read(&path).map_err(DemoError::io(&path))?;
    serde_json::from_slice(&bytes).map_err(|source| DemoError::Json { path, source })
}

/// Generates the store described by `spec` into `out` and returns its manifest.
///
/// - `out` missing or empty: generated there.
/// - `out` holds a demo store with the same spec (and generator version): returned as is.
/// - `out` holds a demo store with another spec, or an interrupted one: its `agents/` tree is
///   deleted and the store regenerated.
/// - `out` holds anything else: [`DemoError::NotEmpty`], nothing is touched.
pub fn generate(out: &Path, spec: &DemoSpec) -> Result<DemoManifest, DemoError> {
    generate_with(out, spec, DemoSpec::eq)
}

/// Like [`generate`], but an existing store whose spec differs only in `end_ms` is reused as
/// is (see [`DemoSpec::same_shape`]): for callers whose `end_ms` defaults to "now", so every
/// run does not regenerate. The returned manifest carries the store's own spec.
pub fn generate_or_reuse(out: &Path, spec: &DemoSpec) -> Result<DemoManifest, DemoError> {
    generate_with(out, spec, DemoSpec::same_shape)
}

fn generate_with(
    out: &Path,
    spec: &DemoSpec,
    reusable: fn(&DemoSpec, &DemoSpec) -> bool,
) -> Result<DemoManifest, DemoError> {
    if let Some(existing) = prepare_out(out, spec, reusable)? {
        return Ok(existing);
    }
    let root = fs::canonicalize(out).map_err(DemoError::io(out))?;
    let marker = root.join(PARTIAL_MARKER);
    fs::write(&marker, b"generation in progress\n").map_err(DemoError::io(&marker))?;

    let agent_ids: Vec<String> = (0..spec.agents).map(DemoSpec::agent_id).collect();
    for id in &agent_ids {
        let agent_dir = root.join("agents").join(id);
        let sessions = agent_dir.join("sessions");
        fs::create_dir_all(&sessions).map_err(DemoError::io(&sessions))?;
        let catalog_dir = agent_dir.join("agent");
        fs::create_dir_all(&catalog_dir).map_err(DemoError::io(&catalog_dir))?;
        write_json(&catalog_dir.join("models.json"), &models_json())?;
    }

    let results = generate_sessions(&root, spec, &agent_ids)?;

    let mut manifest = DemoManifest {
        format: FORMAT_VERSION,
        spec: spec.clone(),
        files: 0,
        bytes: 0,
        sessions: 0,
        archives: 0,
        totals: Totals::default(),
        by_agent: BTreeMap::new(),
        by_model: BTreeMap::new(),
        by_channel: BTreeMap::new(),
        messages: Default::default(),
        first_ms: None,
        last_ms: None,
    };
    let mut all = Stats::default();
    let per_agent = spec.sessions_per_agent as usize;
    for (a, id) in agent_ids.iter().enumerate() {
        let sessions = &results[a * per_agent..(a + 1) * per_agent];
        let mut agent = Stats::default();
        for s in sessions {
            agent.merge(&s.stats);
            manifest.files += s.files;
            manifest.bytes += s.bytes;
            manifest.archives += s.files - 1;
            manifest.by_channel.entry(s.channel.to_string()).or_default().merge(&s.stats.totals);
        }
        manifest.sessions += sessions.len() as u64;
        manifest.by_agent.insert(id.clone(), agent.totals.clone());
        all.merge(&agent);
        let store = root.join("agents").join(id).join("sessions/sessions.json");
        write_json(&store, &Store(sessions))?;
    }
    manifest.totals = all.totals;
    for (m, t) in MODELS.iter().zip(all.by_model) {
        if let Some(t) = t {
            manifest.by_model.insert(m.key(), t);
        }
    }
    manifest.messages = all.messages;
    manifest.first_ms = all.first_ms;
    manifest.last_ms = all.last_ms;

    let tmp = root.join(format!("{MANIFEST_FILE}.tmp"));
    write_json(&tmp, &manifest)?;
    let path = root.join(MANIFEST_FILE);
    fs::rename(&tmp, &path).map_err(DemoError::io(&path))?;
    fs::remove_file(&marker).map_err(DemoError::io(&marker))?;
    Ok(manifest)
}

/// Checks what is at `out`; returns the manifest if the store there can be reused, otherwise
/// leaves `out` as an existing empty-of-ours directory.
fn prepare_out(
    out: &Path,
    spec: &DemoSpec,
    reusable: fn(&DemoSpec, &DemoSpec) -> bool,
) -> Result<Option<DemoManifest>, DemoError> {
    match fs::metadata(out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(out).map_err(DemoError::io(out))?;
            return Ok(None);
        }
        Err(e) => return Err(DemoError::io(out)(e)),
        Ok(m) if !m.is_dir() => return Err(DemoError::NotADirectory(out.to_path_buf())),
        Ok(_) => {}
    }
    let manifest_path = out.join(MANIFEST_FILE);
    let ours = manifest_path.exists() || out.join(PARTIAL_MARKER).exists();
    if !ours {
        let mut entries = fs::read_dir(out).map_err(DemoError::io(out))?;
        if entries.next().is_some() {
            return Err(DemoError::NotEmpty(out.to_path_buf()));
        }
        return Ok(None);
    }
    if !out.join(PARTIAL_MARKER).exists()
        && let Ok(m) = read_manifest(out)
        && m.format == FORMAT_VERSION
        && reusable(&m.spec, spec)
        && out.join("agents").is_dir()
    {
        return Ok(Some(m));
    }
    // A store of ours with another spec, another version, or half-written: start over.
    let agents = out.join("agents");
    if agents.exists() {
        fs::remove_dir_all(&agents).map_err(DemoError::io(&agents))?;
    }
    for name in [MANIFEST_FILE, &format!("{MANIFEST_FILE}.tmp")] {
        let p = out.join(name);
        if p.exists() {
            fs::remove_file(&p).map_err(DemoError::io(&p))?;
        }
    }
    Ok(None)
}

/// Writes `value` as pretty JSON (2-space indent, like OpenClaw's own files) plus a newline.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), DemoError> {
    let file = File::create(path).map_err(DemoError::io(path))?;
    let mut w = BufWriter::new(file);
    serde_json::to_writer_pretty(&mut w, value)
        .map_err(|source| DemoError::Json { path: path.to_path_buf(), source })?;
    w.write_all(b"\n").and_then(|()| w.flush()).map_err(DemoError::io(path))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CatalogCost {
    input: f64,
    output: f64,
    cache_read: f64,
    cache_write: f64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CatalogModel {
    id: &'static str,
    name: &'static str,
    context_window: u64,
    cost: CatalogCost,
}

#[derive(Serialize)]
struct CatalogProvider {
    api: &'static str,
    models: Vec<CatalogModel>,
}

#[derive(Serialize)]
struct Catalog {
    providers: BTreeMap<&'static str, CatalogProvider>,
}

/// `models.json`: `{"providers":{"<p>":{"api","models":[{"id","name","contextWindow","cost"}]}}}`
/// with `cost` in USD per million tokens, where OpenClaw looks prices up first.
fn models_json() -> Catalog {
    let mut providers = BTreeMap::new();
    for m in MODELS {
        let p =
            providers.entry(m.provider).or_insert_with(|| CatalogProvider { api: m.api, models: Vec::new() });
        p.models.push(CatalogModel {
            id: m.id,
            name: m.name,
            context_window: m.context_window,
            cost: CatalogCost {
                input: m.input,
                output: m.output,
                cache_read: m.cache_read,
                cache_write: m.cache_write,
            },
        });
    }
    Catalog { providers }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Origin {
    provider: &'static str,
    chat_type: &'static str,
    from: String,
}

/// One `sessions.json` entry.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionEntry {
    session_id: String,
    updated_at: i64,
    session_started_at: i64,
    last_interaction_at: i64,
    session_file: String,
    chat_type: &'static str,
    channel: &'static str,
    last_channel: &'static str,
    origin: Origin,
    model_provider: &'static str,
    model: &'static str,
    input_tokens: u64,
    output_tokens: u64,
    total_tokens: u64,
    context_tokens: u64,
    compaction_count: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage_family_session_ids: Option<Vec<String>>,
}

/// What generating one session produced.
struct SessionResult {
    key: String,
    entry: SessionEntry,
    channel: &'static str,
    /// Current transcript and archive together.
    stats: Stats,
    files: u64,
    bytes: u64,
}

/// `sessions.json` in session order (a JSON object, keys unique per agent).
struct Store<'a>(&'a [SessionResult]);

impl Serialize for Store<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for r in self.0 {
            map.serialize_entry(&r.key, &r.entry)?;
        }
        map.end()
    }
}

/// Generates every session on all cores; results come back in (agent, session) order.
fn generate_sessions(
    root: &Path,
    spec: &DemoSpec,
    agent_ids: &[String],
) -> Result<Vec<SessionResult>, DemoError> {
    let per_agent = spec.sessions_per_agent as usize;
    let jobs = agent_ids.len() * per_agent;
    if jobs == 0 {
        return Ok(Vec::new());
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(jobs);
    let next = AtomicUsize::new(0);
    let mut slots: Vec<Option<SessionResult>> = (0..jobs).map(|_| None).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<Vec<(usize, SessionResult)>, DemoError> {
                    let mut done = Vec::new();
                    loop {
                        let job = next.fetch_add(1, Ordering::Relaxed);
                        if job >= jobs {
                            return Ok(done);
                        }
                        let (agent, index) = (job / per_agent, job % per_agent);
                        let res = write_session(root, spec, agent as u32, &agent_ids[agent], index as u32);
                        match res {
                            Ok(r) => done.push((job, r)),
                            Err(e) => {
                                // Make the other workers stop early too.
                                next.store(jobs, Ordering::Relaxed);
                                return Err(e);
                            }
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            for (job, r) in h.join().map_err(|_| DemoError::WorkerPanicked)?? {
                slots[job] = Some(r);
            }
        }
        Ok::<(), DemoError>(())
    })?;
    slots.into_iter().map(|s| s.ok_or(DemoError::WorkerPanicked)).collect()
}

fn cwd(agent_id: &str) -> String {
    if agent_id == "main" {
        "/home/user/.openclaw/workspace".to_string()
    } else {
        format!("/home/user/.openclaw/workspace-{agent_id}")
    }
}

/// What every transcript of one session shares.
struct SessionCtx<'a> {
    spec: &'a DemoSpec,
    plan: &'a SessionPlan,
    agent_id: &'a str,
}

/// Writes one transcript file following `timeline` (with the plan's model switch if `switch`);
/// returns its stats, byte size, final model and compaction count.
fn write_transcript(
    path: &Path,
    ctx: &SessionCtx<'_>,
    session_id: &str,
    timeline: &Timeline,
    content: Rng,
    switch: bool,
) -> Result<(Stats, u64, &'static ModelInfo, u32), DemoError> {
    let file = File::create(path).map_err(DemoError::io(path))?;
    let w = BufWriter::with_capacity(WRITE_BUFFER, file);
    let plan = ctx.plan;
    let mut t = Transcript::new(w, content, plan.model, ctx.spec.tool_result_bytes, ctx.spec.wide);
    let res = (|| -> std::io::Result<()> {
        let start = t.header(session_id, timeline.start_ms, &cwd(ctx.agent_id))?;
        t.model_change(start + 5, plan.model)?;
        let switches: &[(usize, &ModelInfo)] = if switch { &plan.switches } else { &[] };
        for (i, times) in timeline.turns.iter().enumerate() {
            if let Some((_, other)) = switches.iter().find(|(at, _)| *at == i) {
                t.model_change(times.user - 2_000, other)?;
            }
            t.turn(*times)?;
        }
        t.flush()
    })();
    res.map_err(DemoError::io(path))?;
    let (model, compactions, bytes) = (t.model(), t.compactions, t.bytes());
    let (w, stats) = t.into_inner();
    // The file was last written when its last message was, as a real transcript's would be
    // (OpenClaw and clawgate list only files modified since a range's start).
    let last = timeline.turns.last().map_or(timeline.start_ms, |t| t.reply);
    let file = w.into_inner().map_err(|e| DemoError::io(path)(e.into_error()))?;
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(last.max(0) as u64);
    file.set_modified(at).map_err(DemoError::io(path))?;
    Ok((stats, bytes, model, compactions))
}

fn write_session(
    root: &Path,
    spec: &DemoSpec,
    agent: u32,
    agent_id: &str,
    index: u32,
) -> Result<SessionResult, DemoError> {
    let plan = plan_session(spec, agent, agent_id, index);
    let dir = root.join("agents").join(agent_id).join("sessions");
    let content = |part: u64| Rng::derive(spec.seed, &[u64::from(agent), u64::from(index), part]);
    let ctx = SessionCtx { spec, plan: &plan, agent_id };
    let mut stats = Stats::default();
    let mut files = 1;
    let mut bytes = 0;
    if let Some(a) = &plan.archive {
        let name = format!("{}.jsonl.reset.{}", a.session_id, archive_stamp(a.reset_ms));
        let (s, b, _, _) =
            write_transcript(&dir.join(name), &ctx, &a.session_id, &a.timeline, content(2), false)?;
        stats.merge(&s);
        bytes += b;
        files += 1;
    }
    let path: PathBuf = dir.join(format!("{}.jsonl", plan.session_id));
    let (current, b, model, compactions) =
        write_transcript(&path, &ctx, &plan.session_id, &plan.timeline, content(1), true)?;
    bytes += b;
    stats.merge(&current);
    let last = current.last_ms.unwrap_or(plan.timeline.start_ms);
    let entry = SessionEntry {
        session_id: plan.session_id.clone(),
        updated_at: last,
        session_started_at: plan.timeline.start_ms,
        last_interaction_at: last,
        session_file: path.to_string_lossy().into_owned(),
        chat_type: plan.chat_type,
        channel: plan.channel,
        last_channel: plan.channel,
        origin: Origin { provider: plan.channel, chat_type: plan.chat_type, from: plan.from.clone() },
        model_provider: model.provider,
        model: model.id,
        input_tokens: current.totals.input,
        output_tokens: current.totals.output,
        total_tokens: current.totals.total_tokens,
        context_tokens: model.context_window,
        compaction_count: compactions,
        label: plan.label.clone(),
        usage_family_session_ids: plan.archive.as_ref().map(|a| vec![a.session_id.clone()]),
    };
    Ok(SessionResult { key: plan.key, entry, channel: plan.channel, stats, files, bytes })
}
