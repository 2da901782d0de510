//! OpenClaw's own configuration and agent identity files, read-only: where the Control UI's agent
//! roster (`agents.list`) and display names (`agent.identity.get`) come from in OpenClaw 2026.9.6.
//!
//! OpenClaw reads `$OPENCLAW_CONFIG_PATH`, else `<stateDir>/openclaw.json` (JSON5). An agent's
//! name is its config entry's `name`, else `identity.name` (roster), and for the identity method
//! `identity.name`, else the `Name:` line of `IDENTITY.md` in its workspace, else `Assistant`
//! (`resolveAssistantIdentity`, `assistant-avatar-*.mjs`). The workspace is the entry's
//! `workspace`, else `agents.defaults.workspace/<id>`, else `<stateDir>/workspace-<id>`
//! (`resolveAgentWorkspaceDir`). Files are small and read per call on the blocking pool; one
//! that is missing, too large or malformed reads as an empty config, never an error: the
//! methods then answer what OpenClaw answers with nothing configured.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// Config and identity files larger than this are not read (a real one is a few KiB).
const MAX_FILE_BYTES: u64 = 1 << 20;
/// OpenClaw's name and emoji limits (UTF-16 units).
const MAX_NAME: usize = 50;
const MAX_EMOJI: usize = 16;

/// Where OpenClaw's config lives for this state dir.
pub fn config_path(state_dir: &Path) -> PathBuf {
    match std::env::var_os("OPENCLAW_CONFIG_PATH") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => state_dir.join("openclaw.json"),
    }
}

/// A small regular file as text, or `None` (absent, special, too large, not UTF-8).
fn read_small(path: &Path) -> Option<String> {
    let file = std::fs::File::open(path).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
        return None;
    }
    let mut text = String::new();
    file.take(MAX_FILE_BYTES).read_to_string(&mut text).ok()?;
    Some(text)
}

/// The parts of OpenClaw's config the Control UI's shell methods need.
#[derive(Debug, Clone, Default)]
pub struct Config {
    root: Map<String, Value>,
    state_dir: PathBuf,
}

/// One configured agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEntry {
    pub id: String,
    entry: Map<String, Value>,
}

/// `agent.identity.get`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    pub agent_id: String,
    pub name: String,
    pub name_source: &'static str,
    pub avatar: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emoji: Option<String>,
}

/// OpenClaw's `normalizeAgentId` as far as lookups need it.
pub fn normalize_agent_id(id: &str) -> String {
    let id = id.trim().to_ascii_lowercase();
    if id.is_empty() { "main".into() } else { id }
}

fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// Cuts to `max` UTF-16 units, never inside a character.
fn cut(s: &str, max: usize) -> String {
    let mut units = 0;
    s.chars()
        .take_while(|c| {
            units += c.len_utf16();
            units <= max
        })
        .collect()
}

impl Config {
    /// Reads the config of `state_dir` (blocking; a missing or malformed file is empty).
    pub fn load(state_dir: &Path) -> Config {
        let root = read_small(&config_path(state_dir))
            .and_then(|t| json5::from_str::<Value>(&t).ok())
            .and_then(|v| match v {
                Value::Object(m) => Some(m),
                _ => None,
            })
            .unwrap_or_default();
        Config { root, state_dir: state_dir.to_owned() }
    }

    fn agents(&self) -> Option<&Map<String, Value>> {
        self.root.get("agents").and_then(Value::as_object)
    }

    /// Configured agents (`agents.entries` or `agents.list`).
    pub fn entries(&self) -> Vec<AgentEntry> {
        let Some(agents) = self.agents() else { return Vec::new() };
        if let Some(Value::Object(entries)) = agents.get("entries") {
            return entries
                .iter()
                .filter_map(|(id, e)| {
                    Some(AgentEntry { id: normalize_agent_id(id), entry: e.as_object()?.clone() })
                })
                .collect();
        }
        if let Some(Value::Array(list)) = agents.get("list") {
            return list
                .iter()
                .filter_map(|e| {
                    let e = e.as_object()?;
                    Some(AgentEntry { id: normalize_agent_id(&text(e.get("id"))?), entry: e.clone() })
                })
                .collect();
        }
        Vec::new()
    }

    fn entry(&self, id: &str) -> Option<AgentEntry> {
        let id = normalize_agent_id(id);
        self.entries().into_iter().find(|e| e.id == id)
    }

    /// `session.mainKey` (default `main`) and `session.scope` (default `per-sender`).
    pub fn session(&self) -> (String, String) {
        let s = self.root.get("session");
        let main = text(s.and_then(|s| s.get("mainKey"))).unwrap_or_else(|| "main".into());
        let scope = text(s.and_then(|s| s.get("scope"))).unwrap_or_else(|| "per-sender".into());
        (main.to_ascii_lowercase(), scope)
    }

    /// The agent's workspace directory, as OpenClaw resolves it.
    pub fn workspace(&self, id: &str) -> PathBuf {
        let id = normalize_agent_id(id);
        let home = || std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
        let user_path = |p: &str| match p.strip_prefix("~/") {
            Some(rest) => home().join(rest),
            None if p == "~" => home(),
            None => PathBuf::from(p),
        };
        if let Some(w) = self.entry(&id).and_then(|e| text(e.entry.get("workspace"))) {
            return user_path(&w);
        }
        let defaults = self.agents().and_then(|a| a.get("defaults"));
        if let Some(w) = text(defaults.and_then(|d| d.get("workspace"))) {
            return user_path(&w).join(&id);
        }
        self.state_dir.join(format!("workspace-{id}"))
    }

    /// `agents.list`'s `name` of a configured agent: its `name`, else `identity.name`.
    pub fn roster_name(&self, entry: &AgentEntry) -> Option<String> {
        text(entry.entry.get("name"))
            .or_else(|| text(entry.entry.get("identity").and_then(|i| i.get("name"))))
    }

    /// `agent.identity.get` for `id` (OpenClaw's `resolveAssistantIdentity`; reads the workspace's
    /// `IDENTITY.md`, blocking).
    pub fn identity(&self, id: &str) -> Identity {
        let agent_id = normalize_agent_id(id);
        let configured = self.entry(&agent_id).and_then(|e| e.entry.get("identity").cloned());
        let conf = |k: &str| text(configured.as_ref().and_then(|i| i.get(k)));
        let file = read_small(&self.workspace(&agent_id).join("IDENTITY.md"))
            .map(|t| parse_identity_markdown(&t))
            .unwrap_or_default();
        let file_field = |k: &str| file.iter().find(|(l, _)| l == k).map(|(_, v)| v.clone());
        let (name, name_source) = match (conf("name"), file_field("name")) {
            (Some(n), _) => (cut(&n, MAX_NAME), "agent"),
            (None, Some(n)) => (cut(&n, MAX_NAME), "workspace"),
            (None, None) => ("Assistant".to_owned(), "default"),
        };
        let candidates = [conf("avatar"), conf("emoji"), file_field("avatar"), file_field("emoji")];
        let avatar = candidates.iter().flatten().find_map(|v| avatar_value(v)).unwrap_or_else(|| "A".into());
        let emoji = [conf("emoji"), file_field("emoji"), conf("avatar"), file_field("avatar")]
            .into_iter()
            .flatten()
            .map(|v| cut(&v, MAX_EMOJI))
            .find(|v| !v.is_ascii() && !looks_like_path_or_url(v));
        Identity { agent_id, name, name_source, avatar, emoji }
    }
}

fn looks_like_path_or_url(v: &str) -> bool {
    v.contains("://") || v.starts_with("data:") || v.contains('/') || v.starts_with('.')
}

/// OpenClaw's `normalizeAvatarValue`: a URL or path as is, else a short token without spaces.
fn avatar_value(v: &str) -> Option<String> {
    if v.starts_with("https://") || v.starts_with("http://") || v.starts_with("data:image/") {
        return Some(v.to_owned());
    }
    if v.contains("://") {
        return None;
    }
    if looks_like_path_or_url(v) {
        return Some(v.to_owned());
    }
    (!v.chars().any(char::is_whitespace) && v.encode_utf16().count() <= 4).then(|| v.to_owned())
}

/// `IDENTITY.md` lines `- Label: value` (OpenClaw's `parseIdentityMarkdown`): lower-case labels
/// with their values, markdown emphasis and placeholders left out.
fn parse_identity_markdown(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let cleaned = line.trim().trim_start_matches('-').trim_start();
        let Some((label, value)) = cleaned.split_once(':') else { continue };
        let label: String =
            label.trim().trim_matches(|c| matches!(c, '*' | '_' | '`')).trim().to_ascii_lowercase();
        let value = value.trim_matches(|c: char| matches!(c, '*' | '_' | '`') || c.is_whitespace());
        let placeholder = value.starts_with('(') && value.ends_with(')')
            || value.starts_with('<') && value.ends_with('>')
            || value.starts_with('[') && value.ends_with(']');
        if value.is_empty() || placeholder {
            continue;
        }
        if ["name", "emoji", "creature", "vibe", "theme", "avatar"].contains(&label.as_str()) {
            out.retain(|(l, _): &(String, String)| *l != label);
            out.push((label, value.to_owned()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_falls_back_from_config_to_workspace_to_default() {
        let dir = std::env::temp_dir().join(format!("clawgate-oc-config-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("workspace-agent1")).unwrap();
        std::fs::write(
            dir.join("openclaw.json"),
            "// JSON5, as OpenClaw writes it by hand\n{agents: {entries: {main: {identity: {name: 'Molty', emoji: '🦞'}}, agent1: {}, Agent2: {name: 'Second'}}}}",
        )
        .unwrap();
        std::fs::write(
            dir.join("workspace-agent1/IDENTITY.md"),
            "# Identity\n- **Name:** Scout\n- Emoji: (pick one)\n",
        )
        .unwrap();
        let c = Config::load(&dir);
        let main = c.identity("main");
        assert_eq!((main.name.as_str(), main.name_source, main.avatar.as_str()), ("Molty", "agent", "🦞"));
        assert_eq!(main.emoji.as_deref(), Some("🦞"));
        let a1 = c.identity("AGENT1");
        assert_eq!(
            (a1.agent_id.as_str(), a1.name.as_str(), a1.name_source),
            ("agent1", "Scout", "workspace")
        );
        assert_eq!(a1.avatar, "A");
        let none = c.identity("nobody");
        assert_eq!(
            (none.name.as_str(), none.name_source, none.avatar.as_str()),
            ("Assistant", "default", "A")
        );
        let mut ids: Vec<String> = c.entries().into_iter().map(|e| e.id).collect();
        ids.sort();
        assert_eq!(ids, ["agent1", "agent2", "main"]);
        let second = c.entries().into_iter().find(|e| e.id == "agent2").unwrap();
        assert_eq!(c.roster_name(&second).as_deref(), Some("Second"));
        std::fs::write(dir.join("openclaw.json"), "{not json5").unwrap();
        assert!(Config::load(&dir).entries().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
