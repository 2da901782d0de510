//! The methods OpenClaw's Control UI calls around its Usage page and shell, answered in OpenClaw
//! 2026.9.6's shapes with what clawgate knows: `usage.status` (no provider usage: an empty
//! list, which the UI shows without a banner), `agents.list` and `agent.identity.get` (from
//! OpenClaw's own config and identity files, `openclaw_config`), the `agents`, `sessions` and
//! `plugins` parts of `health`, OpenClaw's keys beside clawgate's in `status`, and empty lists
//! for the shell's approval, question, group and plugin lists (clawgate has none of those).
//!
//! Session counts and recent sessions per agent come from a snapshot refreshed in the
//! background (at most every [`SNAPSHOT_TTL`], when the `health` method is called: the worker
//! does no work nobody asked for, and the dashboard's frequent `status` polls cause none),
//! one small `entriesOnly` page per agent asked of the worker directly (not through the answer
//! cache: its jobs, waiters and `usage.updated` pushes stay those of the clients): `health`
//! itself never waits for the worker.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ipc_proto::Method;
use serde_json::{Value, json};

use crate::{
    AppState,
    api::now_ms,
    error::ApiError,
    openclaw_config::{self, Config},
};

/// How old the sessions snapshot may get before a `health` call refreshes it.
pub const SNAPSHOT_TTL: Duration = Duration::from_secs(30);
/// Agents whose sessions the snapshot counts (a larger roster is cut, not stalled on).
const MAX_SNAPSHOT_AGENTS: usize = 64;
/// Recent sessions listed per agent, as OpenClaw's health lists them.
const RECENT: usize = 5;
/// How long one agent's page may take (the worker may be busy with a long job).
const SNAPSHOT_CALL: Duration = Duration::from_secs(30);

/// Methods answered here with empty lists, and their payloads.
pub fn empty_list(method: &str) -> Option<Value> {
    Some(match method {
        "exec.approval.list" | "plugin.approval.list" | "openclaw.approval.list" => json!([]),
        "question.list" => json!({"questions": []}),
        "sessions.groups.list" => json!({"groups": [], "sectionOrder": []}),
        "sessions.groups.defaults" => json!({"defaults": []}),
        "plugins.controlUi.list" => json!({"diagnostics": [], "plugins": [], "revision": "clawgate"}),
        "models.list" => json!({"models": []}),
        _ => return None,
    })
}

/// `usage.status`: provider quota usage. clawgate talks to no provider, so there is none to
/// report: OpenClaw's answer with nothing configured.
pub fn usage_status() -> Value {
    json!({"providers": [], "updatedAt": now_ms()})
}

/// One agent's sessions as the snapshot saw them.
#[derive(Debug, Clone)]
struct AgentSessions {
    agent: String,
    count: u64,
    path: PathBuf,
    recent: Vec<(String, u64)>,
}

/// The roster and its sessions, as last read in the background.
#[derive(Debug, Clone)]
struct Snapshot {
    at: Instant,
    default: String,
    ids: Vec<String>,
    /// `None` when the worker could not answer (the roster still stands).
    sessions: Option<Vec<AgentSessions>>,
}

/// The shell's state: the snapshot, so `health` and `status` read no file on the runtime.
#[derive(Debug, Default)]
pub struct Shell {
    snapshot: Mutex<Option<Snapshot>>,
    refreshing: AtomicBool,
}

/// Agent ids as OpenClaw's `listGatewayAgentsBasic` lists them: the default first, then the
/// configured agents (or, with none configured, the store's agent dirs) by name.
fn roster(config: &Config, state_dir: &std::path::Path) -> (String, Vec<String>) {
    let configured: Vec<String> = config.entries().into_iter().map(|e| e.id).collect();
    let mut ids: Vec<String> = configured.clone();
    if ids.is_empty() {
        ids = std::fs::read_dir(state_dir.join("agents"))
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .filter_map(|e| e.file_name().to_str().map(openclaw_config::normalize_agent_id))
                    .collect()
            })
            .unwrap_or_default();
    }
    ids.sort();
    ids.dedup();
    let default = if ids.iter().any(|i| i == "main") || ids.is_empty() {
        "main".to_owned()
    } else {
        configured.first().cloned().unwrap_or_else(|| ids[0].clone())
    };
    ids.retain(|i| *i != default);
    ids.insert(0, default.clone());
    (default, ids)
}

fn blocking_error(e: tokio::task::JoinError) -> ApiError {
    ApiError::unavailable(e.to_string(), None)
}

/// `agents.list`.
pub async fn agents_list(state: &AppState) -> Result<Value, ApiError> {
    let state_dir = state.config.state_dir.clone();
    tokio::task::spawn_blocking(move || {
        let config = Config::load(&state_dir);
        let (default, ids) = roster(&config, &state_dir);
        let (main_key, scope) = config.session();
        let entries = config.entries();
        let agents: Vec<Value> = ids
            .iter()
            .map(|id| {
                let workspace = config.workspace(id);
                let mut a = json!({
                    "id": id,
                    "workspace": workspace,
                    "workspaceGit": workspace.join(".git").exists(),
                });
                if let Some(name) = entries.iter().find(|e| e.id == *id).and_then(|e| config.roster_name(e)) {
                    a["name"] = json!(name);
                }
                a
            })
            .collect();
        json!({
            "defaultId": default,
            "mainKey": main_key,
            "scope": scope,
            "ownership": "explicit",
            "selectionRequired": false,
            "agents": agents,
        })
    })
    .await
    .map_err(blocking_error)
}

/// `agent.identity.get` (params `{agentId?, sessionKey?}`, OpenClaw's closed schema).
pub async fn agent_identity(state: &AppState, params: &Value) -> Result<Value, ApiError> {
    let empty = serde_json::Map::new();
    let obj = match params {
        Value::Null => &empty,
        Value::Object(o) => o,
        _ => return Err(ApiError::invalid("invalid agent.identity.get params: at root: must be object")),
    };
    if let Some(k) = obj.keys().find(|k| !matches!(k.as_str(), "agentId" | "sessionKey")) {
        return Err(ApiError::invalid(format!(
            "invalid agent.identity.get params: at root: unexpected property '{}'",
            crate::params::shown(k)
        )));
    }
    let text = |k: &str| obj.get(k).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
    let from_key = text("sessionKey")
        .and_then(|k| k.strip_prefix("agent:"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(agent, _)| agent.to_owned());
    let requested = text("agentId").map(str::to_owned).or(from_key);
    let state_dir = state.config.state_dir.clone();
    tokio::task::spawn_blocking(move || {
        let config = Config::load(&state_dir);
        let id = requested.unwrap_or_else(|| roster(&config, &state_dir).0);
        json!(config.identity(&id))
    })
    .await
    .map_err(blocking_error)
}

impl Shell {
    /// The snapshot if there is one; with `refresh`, starts a refresh when it is missing or old.
    fn snapshot(&self, state: &AppState, refresh: bool) -> Option<Snapshot> {
        let current = self.snapshot.lock().ok().and_then(|s| s.clone());
        let stale = current.as_ref().is_none_or(|s| s.at.elapsed() > SNAPSHOT_TTL);
        if refresh && stale && !self.refreshing.swap(true, Ordering::AcqRel) {
            let state = state.clone();
            tokio::spawn(async move {
                if let Some(fresh) = snapshot(&state).await
                    && let Ok(mut slot) = state.shell.snapshot.lock()
                {
                    *slot = Some(fresh);
                }
                state.shell.refreshing.store(false, Ordering::Release);
            });
        }
        current
    }

    /// `health`'s `agents`, `sessions` and `plugins`, added to clawgate's own health document;
    /// `refresh`: the `health` method (not `hello-ok`'s snapshot) renews an old snapshot.
    pub fn extend_health(&self, state: &AppState, health: &mut Value, refresh: bool) {
        let snap = self.snapshot(state, refresh);
        let (default, ids) = snap
            .as_ref()
            .map_or_else(|| ("main".to_owned(), Vec::new()), |s| (s.default.clone(), s.ids.clone()));
        let known = snap.and_then(|s| s.sessions);
        let now = now_ms();
        let sessions_of = |id: &str| -> Value {
            let s = known.as_ref().and_then(|all| all.iter().find(|a| a.agent == id));
            match s {
                Some(s) => json!({
                    "count": s.count,
                    "path": s.path,
                    "recent": s.recent.iter().map(|(key, at)| json!({
                        "key": key, "updatedAt": at, "age": now.saturating_sub(*at),
                    })).collect::<Vec<_>>(),
                }),
                // Not counted yet (the first snapshot is on its way): no figure rather than 0.
                None => json!({"count": null, "path": null, "recent": []}),
            }
        };
        // OpenClaw's health lists agents by id (the default is flagged, not first).
        let mut by_id: Vec<&String> = ids.iter().collect();
        by_id.sort();
        let agents: Vec<Value> = by_id
            .into_iter()
            .map(|id| {
                json!({
                    "agentId": id,
                    "isDefault": *id == default,
                    "heartbeat": {"enabled": false, "every": "disabled", "everyMs": null},
                    "sessions": sessions_of(id),
                })
            })
            .collect();
        health["agents"] = json!(agents);
        health["defaultAgentId"] = json!(default);
        health["sessions"] = sessions_of(&default);
        health["plugins"] = json!({"loaded": [], "errors": [], "unavailable": []});
        health["heartbeatSeconds"] = json!(0);
    }

    /// OpenClaw's `status` keys, added beside clawgate's own status document (which the
    /// dashboard and `clawgate status` read): what clawgate runs is not OpenClaw's runtime, so
    /// the channel, heartbeat and plugin parts are empty.
    pub fn extend_status(&self, state: &AppState, status: &mut Value) {
        let snap = self.snapshot(state, false);
        let (default, ids) = snap
            .as_ref()
            .map_or_else(|| ("main".to_owned(), Vec::new()), |s| (s.default.clone(), s.ids.clone()));
        let known = snap.and_then(|s| s.sessions).unwrap_or_default();
        let by_agent: Vec<Value> =
            known.iter().map(|a| json!({"agentId": a.agent, "count": a.count, "path": a.path})).collect();
        status["runtimeVersion"] = json!(env!("CARGO_PKG_VERSION"));
        status["pid"] = json!(std::process::id());
        status["sessions"] = json!({"byAgent": by_agent});
        status["heartbeat"] = json!({
            "defaultAgentId": default,
            "agents": ids.iter().map(|id| json!({
                "agentId": id, "enabled": false, "every": "disabled", "everyMs": null, "waitingForRoute": false,
            })).collect::<Vec<_>>(),
        });
        for key in ["channelSummary", "queuedSystemEvents", "degradedPlugins", "degradedSecretOwners"] {
            status[key] = json!([]);
        }
        status["modelRuntime"] = json!({"degraded": false, "pendingAgents": []});
    }
}

/// The roster (files read on the blocking pool) and one `entriesOnly` page per agent (its count
/// and most recent sessions).
async fn snapshot(state: &AppState) -> Option<Snapshot> {
    let state_dir = state.config.state_dir.clone();
    let (default, ids) = tokio::task::spawn_blocking(move || {
        let config = Config::load(&state_dir);
        roster(&config, &state_dir)
    })
    .await
    .ok()?;
    let sessions = agent_sessions(state, &ids).await;
    Some(Snapshot { at: Instant::now(), default, ids, sessions })
}

async fn agent_sessions(state: &AppState, ids: &[String]) -> Option<Vec<AgentSessions>> {
    let mut out = Vec::new();
    for id in ids.iter().take(MAX_SNAPSHOT_AGENTS).cloned() {
        let params = json!({"agentId": id, "range": "all", "limit": RECENT, "entriesOnly": true});
        let query = crate::params::parse(Method::SessionsUsage, &params, jiff::Timestamp::now()).ok()?;
        let call = state.supervisor.call(query, None);
        let Ok(Ok(ipc_proto::UsageReply::Answer(answer))) = tokio::time::timeout(SNAPSHOT_CALL, call).await
        else {
            return None;
        };
        #[derive(serde::Deserialize)]
        struct Page {
            page: Option<Total>,
            sessions: Vec<Row>,
        }
        #[derive(serde::Deserialize)]
        struct Total {
            total: u64,
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Row {
            key: String,
            updated_at: Option<f64>,
        }
        // Rows carry their quarter hours: parsed off the runtime's threads.
        let page: Page =
            tokio::task::spawn_blocking(move || serde_json::from_str(&answer.payload_text()).ok())
                .await
                .ok()??;
        let db = state.config.state_dir.join("agents").join(&id).join("agent/openclaw-agent.sqlite");
        let path = if db.exists() {
            db
        } else {
            state.config.state_dir.join("agents").join(&id).join("sessions/sessions.json")
        };
        out.push(AgentSessions {
            agent: id,
            count: page.page.map_or(page.sessions.len() as u64, |p| p.total),
            path,
            recent: page.sessions.into_iter().map(|r| (r.key, r.updated_at.unwrap_or(0.0) as u64)).collect(),
        });
    }
    Some(out)
}
