//! What the gateway sees of OpenClaw's state dir: the agents under `<stateDir>/agents/`.
//!
//! A wrong `--state-dir` (a typo, an empty directory, `~/.openclaw/agents` instead of
//! `~/.openclaw`) used to look healthy: the worker reads nothing, every answer is $0.00 and
//! `status` said `ok`. The gateway now lists the agents itself, at start and every few seconds
//! (a directory listing on the blocking pool, never a transcript), logs a warning at start and
//! whenever that changes, and puts "no OpenClaw agents found in DIR" in the status document,
//! which `clawgate status` reports as degraded.
//!
//! An agent is what the worker takes for one (`usage-worker/src/engine/discover.rs`): a
//! directory (not a symlink) under `agents/` whose name is UTF-8.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::{Deserialize, Serialize};

/// Most agent ids the status document lists (the count is always exact).
const MAX_IDS: usize = 64;

/// The `agents` section of status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AgentsView {
    /// Agents found.
    pub count: u64,
    /// Their ids, sorted (the first [`MAX_IDS`]).
    pub ids: Vec<String>,
    /// `no OpenClaw agents found in DIR: why`, when there are none.
    pub warning: Option<String>,
    pub checked_at_ms: u64,
}

/// Why `dir` holds no agents, with a hint when it looks like a part of a state dir.
fn why_none(dir: &Path) -> String {
    let agents = dir.join("agents");
    let why = match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "it does not exist".to_owned(),
        Err(e) => format!("cannot read it ({e})"),
        Ok(meta) if !meta.is_dir() => "it is not a directory".to_owned(),
        Ok(_) => match std::fs::read_dir(&agents) {
            Ok(_) => "agents/ is empty".to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "it has no agents/ directory".to_owned(),
            Err(e) => format!("cannot read {} ({e})", agents.display()),
        },
    };
    let looks_like = |child: &str| {
        std::fs::read_dir(dir).ok().into_iter().flatten().flatten().any(|e| e.path().join(child).is_dir())
    };
    let hint = if dir.file_name().is_some_and(|n| n == "agents") || looks_like("sessions") {
        match dir.parent().filter(|p| p.join("agents").is_dir()) {
            Some(parent) => format!(
                "; {} looks like OpenClaw's agents/ directory: use {}",
                dir.display(),
                parent.display()
            ),
            None => format!(
                "; {} looks like OpenClaw's agents/ directory: use the directory above it",
                dir.display()
            ),
        }
    } else if dir.join("sessions").is_dir() {
        "; it looks like one agent's directory: use the state directory that holds agents/".to_owned()
    } else {
        String::new()
    };
    format!("no OpenClaw agents found in {}: {why}{hint}", dir.display())
}

/// Lists the agents of `state_dir` now.
pub fn look(state_dir: &Path) -> AgentsView {
    let mut ids: Vec<String> = std::fs::read_dir(state_dir.join("agents"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    ids.sort();
    let count = ids.len() as u64;
    ids.truncate(MAX_IDS);
    AgentsView {
        count,
        ids,
        warning: (count == 0).then(|| why_none(state_dir)),
        checked_at_ms: crate::status::epoch_ms(std::time::SystemTime::now()),
    }
}

/// The latest view of the state dir's agents, kept current in the background.
pub struct AgentsWatch {
    state_dir: PathBuf,
    view: Mutex<Option<AgentsView>>,
}

impl AgentsWatch {
    pub fn new(state_dir: PathBuf) -> Arc<AgentsWatch> {
        Arc::new(AgentsWatch { state_dir, view: Mutex::new(None) })
    }

    /// `None` until the first look (a few ms after start).
    pub fn view(&self) -> Option<AgentsView> {
        self.view.lock().expect("agents view").clone()
    }

    /// Looks now and every `interval`; logs when agents appear or disappear. `budget_agents`:
    /// agents named by budgets, each checked once against what is there.
    pub fn spawn(self: &Arc<Self>, interval: Duration, budget_agents: Vec<String>) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut budgets_checked = budget_agents.is_empty();
            loop {
                tick.tick().await;
                let dir = this.state_dir.clone();
                let Ok(view) = tokio::task::spawn_blocking(move || look(&dir)).await else { continue };
                let before = this.view.lock().expect("agents view").replace(view.clone());
                let warn = |why: &str| {
                    tracing::warn!(state_dir = %this.state_dir.display(), why,
                        "No OpenClaw agents found in the state directory: every usage figure will be zero.");
                };
                match (&before, &view.warning) {
                    (None, Some(warning)) => warn(warning),
                    (Some(b), Some(warning)) if b.warning.as_ref() != Some(warning) => warn(warning),
                    (None, None) | (Some(AgentsView { count: 0, .. }), None) => {
                        tracing::info!(state_dir = %this.state_dir.display(), agents = view.count, "OpenClaw agents found.")
                    }
                    (Some(b), None) if b.count != view.count => tracing::info!(
                        state_dir = %this.state_dir.display(), agents = view.count, before = b.count,
                        "The number of OpenClaw agents changed."),
                    _ => {}
                }
                if !budgets_checked && view.count > 0 {
                    budgets_checked = true;
                    for agent in budget_agents.iter().filter(|a| !view.ids.contains(a)) {
                        tracing::warn!(agent, state_dir = %this.state_dir.display(),
                            "A budget names an agent that is not in the state directory; its spend stays 0 until it appears.");
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_wrong_and_right_state_dirs() {
        let dir = std::env::temp_dir().join(format!("clawgate-agents-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let missing = look(&dir);
        assert_eq!(missing.count, 0);
        let warning = missing.warning.unwrap();
        assert!(warning.starts_with(&format!("no OpenClaw agents found in {}", dir.display())), "{warning}");
        assert!(warning.contains("does not exist"), "{warning}");

        std::fs::create_dir_all(&dir).unwrap();
        assert!(look(&dir).warning.unwrap().ends_with("it has no agents/ directory"));
        std::fs::create_dir_all(dir.join("agents")).unwrap();
        assert!(look(&dir).warning.unwrap().ends_with("agents/ is empty"));

        std::fs::create_dir_all(dir.join("agents/main/sessions")).unwrap();
        std::fs::create_dir_all(dir.join("agents/ops")).unwrap();
        std::fs::write(dir.join("agents/not-an-agent.txt"), "x").unwrap();
        std::os::unix::fs::symlink(dir.join("agents/main"), dir.join("agents/link")).unwrap();
        let found = look(&dir);
        assert_eq!(
            (found.count, found.ids.clone(), found.warning),
            (2, vec!["main".into(), "ops".into()], None)
        );

        // One level too deep: the hint names the right directory.
        let deep = look(&dir.join("agents"));
        let warning = deep.warning.unwrap();
        assert!(warning.contains(&format!("use {}", dir.display())), "{warning}");
        let agent = look(&dir.join("agents/main"));
        assert!(agent.warning.unwrap().contains("one agent's directory"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
