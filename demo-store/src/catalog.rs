//! The fixed cast of the demo: models with their list prices, channels and tools.
//!
//! Prices are USD per million tokens, the unit of OpenClaw's `models.json` `cost` object, so the
//! same table both prices the generated messages and is written out as each agent's catalog.

/// One model the demo uses, with the list prices its messages are costed at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelInfo {
    /// OpenClaw provider id (`message.provider`).
    pub provider: &'static str,
    /// Model id (`message.model`).
    pub id: &'static str,
    /// Human-readable name, as in `models.json`.
    pub name: &'static str,
    /// The pi-ai `api` string written on assistant messages.
    pub api: &'static str,
    /// USD per million uncached input tokens.
    pub input: f64,
    /// USD per million output tokens.
    pub output: f64,
    /// USD per million cache-read tokens.
    pub cache_read: f64,
    /// USD per million cache-write tokens (0 where the provider does not bill writes).
    pub cache_write: f64,
    /// Context window in tokens (written as `contextTokens` in `sessions.json`).
    pub context_window: u64,
}

impl ModelInfo {
    /// `provider/model`, the key of [`crate::DemoManifest::by_model`].
    pub fn key(&self) -> String {
        format!("{}/{}", self.provider, self.id)
    }

    /// Anthropic bills explicit cache writes; the others cache implicitly.
    pub(crate) fn explicit_cache(&self) -> bool {
        self.cache_write > 0.0
    }

    /// Reasoning models spend extra (billed as output) tokens on every call.
    pub(crate) fn reasoning(&self) -> bool {
        matches!(self.id, "gpt-5" | "gpt-5-mini" | "gemini-2.5-pro" | "claude-opus-4-1")
    }

    /// How long a prompt cache stays warm between calls, in ms.
    pub(crate) fn cache_ttl_ms(&self) -> i64 {
        if self.provider == "anthropic" { 5 * 60 * 1000 } else { 60 * 60 * 1000 }
    }
}

const fn model(
    provider: &'static str,
    id: &'static str,
    name: &'static str,
    api: &'static str,
    prices: [f64; 4],
    context_window: u64,
) -> ModelInfo {
    ModelInfo {
        provider,
        id,
        name,
        api,
        input: prices[0],
        output: prices[1],
        cache_read: prices[2],
        cache_write: prices[3],
        context_window,
    }
}

/// Every model the demo store uses, in `models.json` order.
pub const MODELS: &[ModelInfo] = &[
    model(
        "anthropic",
        "claude-sonnet-4-5",
        "Claude Sonnet 4.5",
        "anthropic-messages",
        [3.0, 15.0, 0.30, 3.75],
        200_000,
    ),
    model(
        "anthropic",
        "claude-opus-4-1",
        "Claude Opus 4.1",
        "anthropic-messages",
        [15.0, 75.0, 1.5, 18.75],
        200_000,
    ),
    model(
        "anthropic",
        "claude-haiku-4-5",
        "Claude Haiku 4.5",
        "anthropic-messages",
        [1.0, 5.0, 0.10, 1.25],
        200_000,
    ),
    model("openai", "gpt-5", "GPT-5", "openai-responses", [1.25, 10.0, 0.125, 0.0], 400_000),
    model("openai", "gpt-5-mini", "GPT-5 mini", "openai-responses", [0.25, 2.0, 0.025, 0.0], 400_000),
    model(
        "google",
        "gemini-2.5-pro",
        "Gemini 2.5 Pro",
        "google-generative-ai",
        [1.25, 10.0, 0.31, 0.0],
        1_048_576,
    ),
    model(
        "openrouter",
        "deepseek/deepseek-chat-v3.1",
        "DeepSeek V3.1 (OpenRouter)",
        "openai-completions",
        [0.2, 0.8, 0.02, 0.0],
        163_840,
    ),
];

/// How often each of [`MODELS`] is a session's main model (same order).
pub(crate) const MODEL_WEIGHTS: &[u32] = &[34, 8, 14, 15, 10, 11, 8];

/// The model `append_turn` falls back to for transcripts naming a model outside the catalog.
pub(crate) const DEFAULT_MODEL: &ModelInfo = &MODELS[0];

/// Looks a model up by provider and id.
pub fn find_model(provider: &str, id: &str) -> Option<&'static ModelInfo> {
    MODELS.iter().find(|m| m.provider == provider && m.id == id)
}

/// Channels sessions arrive on, with weights.
pub(crate) const CHANNELS: &[&str] = &["slack", "discord", "telegram", "webchat", "whatsapp"];
pub(crate) const CHANNEL_WEIGHTS: &[u32] = &[35, 20, 20, 15, 10];

/// Tools the assistant calls, with weights.
pub(crate) const TOOLS: &[&str] =
    &["read", "write", "edit", "exec", "browser", "web_search", "memory_search"];
pub(crate) const TOOL_WEIGHTS: &[u32] = &[25, 8, 15, 22, 8, 12, 10];

/// More tools, for the wide demo shape: MCP servers' tools as OpenClaw names them.
pub(crate) const WIDE_TOOLS: &[&str] = &[
    "github__create_issue",
    "github__list_prs",
    "github__get_file",
    "linear__create_ticket",
    "linear__search",
    "slack__post_message",
    "slack__search",
    "notion__query",
    "notion__append",
    "postgres__query",
    "postgres__schema",
    "sentry__issues",
    "sentry__events",
    "grafana__query",
    "k8s__get_pods",
    "k8s__logs",
    "aws__s3_list",
    "aws__cloudwatch",
    "jira__search",
    "jira__comment",
    "calendar__events",
    "gmail__search",
    "gmail__send",
    "drive__find",
    "figma__export",
    "stripe__charges",
    "hubspot__contacts",
    "zendesk__tickets",
    "pagerduty__incidents",
    "datadog__metrics",
    "vercel__deploys",
    "docker__ps",
];
