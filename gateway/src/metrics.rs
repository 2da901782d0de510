//! `GET /metrics` in the Prometheus text format (version 0.0.4).
//!
//! Request counts and latency histograms by transport (`http`, `ws`), method or route and
//! outcome; runtime lag; worker state, restarts by cause and memory; cache freshness, lookups and
//! jobs; and usage totals (tokens and cost) by agent, provider and model.
//! Usage figures come from a `sessions.usage {agentScope:"all", range:"all", limit:1}` answer
//! the scrape keeps warm through the cache in the background (a scrape never waits for the
//! worker); its aggregates are parsed once per new answer, on the blocking pool. Label values
//! are bounded: unknown method names are reported as `other`.
//! Requires the same bearer token as the API when one is configured.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderMap, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use ipc_proto::{Method, UsageQuery};
use serde::Deserialize;
use serde_json::json;

use crate::{AppState, api, cache::Outcome};

/// Histogram bucket bounds, seconds.
const BUCKETS: [f64; 16] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }
}

type Key = (&'static str, String);

/// Request counters and latencies; everything else is read at scrape time.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, String, String), u64>>,
    latency: Mutex<BTreeMap<Key, Histogram>>,
    pub ws_connections: AtomicU64,
    pub ws_connections_total: AtomicU64,
    pub auth_failures: AtomicU64,
    usage: Mutex<Option<(u64, Arc<Breakdown>)>>,
}

impl Metrics {
    /// Records one request: `transport` `http`|`ws`, `method` a method name or route,
    /// `outcome` `ok`, an error code, or an HTTP status.
    pub fn observe(&self, transport: &'static str, method: &str, outcome: &str, took: Duration) {
        let method = label_method(method);
        *self
            .requests
            .lock()
            .expect("requests")
            .entry((transport, method.clone(), outcome.to_owned()))
            .or_default() += 1;
        self.latency
            .lock()
            .expect("latency")
            .entry((transport, method))
            .or_default()
            .observe(took.as_secs_f64());
    }
}

/// Method names as labels, bounded: known methods and routes, else `other`.
pub fn label_method(method: &str) -> String {
    if api::METHODS.contains(&method) || method == "connect" || method.starts_with('/') {
        method.to_owned()
    } else {
        "other".to_owned()
    }
}

/// Middleware: counts and times every HTTP request by route (or called method) and status.
pub async fn track_http(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let path = request.uri().path().to_owned();
    let route = match path.strip_prefix("/api/v1/call/") {
        Some(method) => method.to_owned(),
        None => request
            .extensions()
            .get::<MatchedPath>()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_else(|| "/unmatched".to_owned()),
    };
    let response = next.run(request).await;
    // Upgrades (101) hand off to the WebSocket task; their requests are counted there.
    state.metrics.observe("http", &route, response.status().as_str(), started.elapsed());
    response
}

/// `GET /metrics`.
pub async fn handler(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(e) = state.authorize(&headers) {
        return e.into_response();
    }
    let usage = usage_breakdown(&state).await;
    let body = render(&state, usage.as_deref());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

/// The query whose aggregates feed the usage figures.
pub fn usage_query() -> Option<UsageQuery> {
    crate::params::parse(
        Method::SessionsUsage,
        &json!({"agentScope": "all", "range": "all", "limit": 1}),
        jiff::Timestamp::now(),
    )
    .ok()
}

/// Totals by agent, provider and model from the latest all-time answer; starts a background
/// refresh when that answer is older than the refresh interval.
async fn usage_breakdown(state: &AppState) -> Option<Arc<Breakdown>> {
    let query = usage_query()?;
    let min_age = state.cache.tuning().refresh_interval.max(Duration::from_secs(5));
    state.cache.prefetch(&query, min_age);
    let answer = state.cache.peek(&query)?;
    if let Some((version, parsed)) = state.metrics.usage.lock().expect("usage memo").as_ref() {
        if *version == answer.version {
            return Some(Arc::clone(parsed));
        }
    }
    let data = answer.data.clone();
    let parsed = tokio::task::spawn_blocking(move || {
        // The data members in braces: an object with `aggregates`.
        let mut text = Vec::with_capacity(data.len() + 2);
        text.push(b'{');
        text.extend_from_slice(&data);
        text.push(b'}');
        serde_json::from_slice::<UsagePayload>(&text)
    })
    .await
    .ok()?;
    let parsed = match parsed {
        Ok(p) => Arc::new(p.aggregates),
        Err(error) => {
            tracing::warn!(%error, "Cannot read the usage aggregates for /metrics.");
            return None;
        }
    };
    *state.metrics.usage.lock().expect("usage memo") = Some((answer.version, Arc::clone(&parsed)));
    Some(parsed)
}

#[derive(Debug, Default, Deserialize)]
struct UsagePayload {
    #[serde(default)]
    aggregates: Breakdown,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Breakdown {
    #[serde(default)]
    by_agent: Vec<Row>,
    #[serde(default)]
    by_provider: Vec<Row>,
    #[serde(default)]
    by_model: Vec<Row>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    agent_id: Option<String>,
    provider: Option<String>,
    model: Option<String>,
    #[serde(default)]
    totals: Totals,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Totals {
    #[serde(default)]
    input: u64,
    #[serde(default)]
    output: u64,
    #[serde(default)]
    cache_read: u64,
    #[serde(default)]
    cache_write: u64,
    #[serde(default)]
    total_cost: f64,
}

/// Escapes a label value.
fn esc(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", esc(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

fn render(state: &AppState, usage: Option<&Breakdown>) -> String {
    let mut out = Out(String::with_capacity(16 << 10));
    let m = &state.metrics;

    out.family("clawgate_requests_total", "counter", "Requests by transport, method or route, and outcome.");
    for ((transport, method, outcome), n) in m.requests.lock().expect("requests").iter() {
        out.sample(
            "clawgate_requests_total",
            &[("transport", transport), ("method", method), ("outcome", outcome)],
            *n as f64,
        );
    }
    out.family(
        "clawgate_request_duration_seconds",
        "histogram",
        "Request latency by transport and method or route.",
    );
    for ((transport, method), h) in m.latency.lock().expect("latency").iter() {
        let base = [("transport", *transport), ("method", method.as_str())];
        for (bound, count) in BUCKETS.iter().zip(h.counts) {
            let le = bound.to_string();
            out.sample(
                "clawgate_request_duration_seconds_bucket",
                &[base[0], base[1], ("le", &le)],
                count as f64,
            );
        }
        out.sample(
            "clawgate_request_duration_seconds_bucket",
            &[base[0], base[1], ("le", "+Inf")],
            h.count as f64,
        );
        out.sample("clawgate_request_duration_seconds_sum", &base, h.sum);
        out.sample("clawgate_request_duration_seconds_count", &base, h.count as f64);
    }

    let lag = state.lag.snapshot();
    out.family(
        "clawgate_runtime_lag_max_seconds",
        "gauge",
        "Largest scheduling delay of the gateway runtime over the window.",
    );
    out.sample("clawgate_runtime_lag_max_seconds", &[], lag.delay_max_ms / 1000.0);
    out.family(
        "clawgate_runtime_lag_p99_seconds",
        "gauge",
        "99th percentile scheduling delay over the window.",
    );
    out.sample("clawgate_runtime_lag_p99_seconds", &[], lag.delay_p99_ms / 1000.0);
    out.family(
        "clawgate_runtime_utilization_ratio",
        "gauge",
        "Share of runtime worker time spent busy over the window.",
    );
    out.sample("clawgate_runtime_utilization_ratio", &[], lag.utilization);
    out.family(
        "clawgate_gateway_cpu_core_ratio",
        "gauge",
        "Gateway CPU time over wall time over the window.",
    );
    out.sample("clawgate_gateway_cpu_core_ratio", &[], lag.cpu_core_ratio);

    let worker = state.supervisor.status();
    out.family("clawgate_worker_up", "gauge", "1 when the usage worker is ready (or busy).");
    out.sample(
        "clawgate_worker_up",
        &[],
        f64::from(u8::from(matches!(worker.state_name(), "ready" | "busy"))),
    );
    out.family("clawgate_worker_restarts_total", "counter", "Usage worker restarts by cause.");
    for (cause, n) in &worker.restarts_by_cause {
        out.sample("clawgate_worker_restarts_total", &[("cause", cause)], *n as f64);
    }
    out.family("clawgate_worker_jobs_in_flight", "gauge", "Jobs sent to the worker and not yet answered.");
    out.sample("clawgate_worker_jobs_in_flight", &[], worker.jobs_in_flight as f64);
    out.family("clawgate_rss_bytes", "gauge", "Resident memory by process.");
    if let Some(rss) = supervisor::rss_bytes(std::process::id()) {
        out.sample("clawgate_rss_bytes", &[("process", "gateway")], rss as f64);
    }
    if let Some(rss) = worker.rss_bytes {
        out.sample("clawgate_rss_bytes", &[("process", "worker")], rss as f64);
    }
    out.family("clawgate_worker_heap_bytes", "gauge", "The worker's heap as its allocator counts it.");
    if let Some(heap) = worker.reported_memory.map(|r| r.heap_bytes) {
        out.sample("clawgate_worker_heap_bytes", &[], heap as f64);
    }
    let (gateway_memory, worker_memory) = state.lag.memory();
    out.family(
        "clawgate_memory_pressure",
        "gauge",
        "1 while a process is under memory pressure, by level and reason.",
    );
    for (process, memory) in [("gateway", gateway_memory), ("worker", worker_memory)] {
        if let Some(p) = memory.pressure {
            out.sample(
                "clawgate_memory_pressure",
                &[("process", process), ("level", p.level), ("reason", p.reason)],
                1.0,
            );
        }
    }

    let cache = state.cache.stats();
    let c = &state.cache.counters;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
    out.family("clawgate_cache_entries", "gauge", "Cached usage answers.");
    out.sample("clawgate_cache_entries", &[], cache.answers as f64);
    out.family("clawgate_cache_bytes", "gauge", "Bytes of cached usage answers.");
    out.sample("clawgate_cache_bytes", &[], cache.bytes as f64);
    out.family("clawgate_cache_answer_age_seconds", "gauge", "Age of the newest and oldest cached answers.");
    if let (Some(newest), Some(oldest)) = (cache.newest_age, cache.oldest_age) {
        out.sample("clawgate_cache_answer_age_seconds", &[("which", "newest")], newest.as_secs_f64());
        out.sample("clawgate_cache_answer_age_seconds", &[("which", "oldest")], oldest.as_secs_f64());
    }
    out.family(
        "clawgate_cache_lookups_total",
        "counter",
        "Usage requests by how they were served (hit, miss, shared, stale).",
    );
    for outcome in Outcome::ALL {
        out.sample(
            "clawgate_cache_lookups_total",
            &[("result", outcome.as_str())],
            load(&c.lookups[outcome as usize]),
        );
    }
    out.family("clawgate_usage_jobs_total", "counter", "Worker jobs started and how they ended.");
    for (what, value) in [
        ("started", &c.jobs_started),
        ("ok", &c.jobs_ok),
        ("failed", &c.jobs_failed),
        ("cancelled", &c.jobs_cancelled),
        ("background", &c.refreshes),
    ] {
        out.sample("clawgate_usage_jobs_total", &[("outcome", what)], load(value));
    }
    out.family("clawgate_usage_jobs_running", "gauge", "Distinct usage jobs running or queued.");
    out.sample("clawgate_usage_jobs_running", &[], cache.jobs_running as f64);
    out.family(
        "clawgate_usage_rejected_total",
        "counter",
        "Requests refused at once because the job queue was full.",
    );
    out.sample("clawgate_usage_rejected_total", &[], load(&c.rejected_queue_full));
    out.family(
        "clawgate_usage_deadline_expired_total",
        "counter",
        "Requests answered stale or UNAVAILABLE at their deadline.",
    );
    out.sample("clawgate_usage_deadline_expired_total", &[], load(&c.deadline_expired));
    out.family("clawgate_usage_updated_events_total", "counter", "usage.updated events broadcast.");
    out.sample("clawgate_usage_updated_events_total", &[], load(&c.events_sent));
    out.family("clawgate_ws_connections", "gauge", "Open WebSocket connections.");
    out.sample("clawgate_ws_connections", &[], load(&m.ws_connections));
    out.family("clawgate_ws_connections_total", "counter", "WebSocket connections accepted.");
    out.sample("clawgate_ws_connections_total", &[], load(&m.ws_connections_total));
    out.family("clawgate_auth_failures_total", "counter", "Failed authentications (HTTP and WebSocket).");
    out.sample("clawgate_auth_failures_total", &[], load(&m.auth_failures));

    if let Some(usage) = usage {
        let token_types = |t: &Totals| {
            [
                ("input", t.input),
                ("output", t.output),
                ("cache_read", t.cache_read),
                ("cache_write", t.cache_write),
            ]
        };
        out.family(
            "clawgate_usage_tokens_total",
            "counter",
            "Tokens over all time by agent, provider or model, and token type.",
        );
        for row in &usage.by_agent {
            let agent = row.agent_id.as_deref().unwrap_or("unknown");
            for (kind, n) in token_types(&row.totals) {
                out.sample(
                    "clawgate_usage_tokens_total",
                    &[("by", "agent"), ("agent", agent), ("type", kind)],
                    n as f64,
                );
            }
        }
        for row in &usage.by_provider {
            let provider = row.provider.as_deref().unwrap_or("unknown");
            for (kind, n) in token_types(&row.totals) {
                out.sample(
                    "clawgate_usage_tokens_total",
                    &[("by", "provider"), ("provider", provider), ("type", kind)],
                    n as f64,
                );
            }
        }
        for row in &usage.by_model {
            let (provider, model) =
                (row.provider.as_deref().unwrap_or("unknown"), row.model.as_deref().unwrap_or("unknown"));
            for (kind, n) in token_types(&row.totals) {
                out.sample(
                    "clawgate_usage_tokens_total",
                    &[("by", "model"), ("provider", provider), ("model", model), ("type", kind)],
                    n as f64,
                );
            }
        }
        out.family(
            "clawgate_usage_cost_usd_total",
            "counter",
            "Cost in USD over all time by agent, provider or model.",
        );
        for row in &usage.by_agent {
            out.sample(
                "clawgate_usage_cost_usd_total",
                &[("by", "agent"), ("agent", row.agent_id.as_deref().unwrap_or("unknown"))],
                row.totals.total_cost,
            );
        }
        for row in &usage.by_provider {
            out.sample(
                "clawgate_usage_cost_usd_total",
                &[("by", "provider"), ("provider", row.provider.as_deref().unwrap_or("unknown"))],
                row.totals.total_cost,
            );
        }
        for row in &usage.by_model {
            let (provider, model) =
                (row.provider.as_deref().unwrap_or("unknown"), row.model.as_deref().unwrap_or("unknown"));
            out.sample(
                "clawgate_usage_cost_usd_total",
                &[("by", "model"), ("provider", provider), ("model", model)],
                row.totals.total_cost,
            );
        }
    }
    out.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::default();
        h.observe(0.0004);
        h.observe(0.003);
        h.observe(100.0);
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[3], 2, "0.005 bucket holds both small samples");
        assert_eq!(*h.counts.last().unwrap(), 2);
        assert_eq!(h.count, 3);
    }

    #[test]
    fn labels_are_escaped_and_bounded() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(label_method("sessions.usage"), "sessions.usage");
        assert_eq!(label_method("/healthz"), "/healthz");
        assert_eq!(label_method("x.random.123"), "other");
    }

    #[test]
    fn aggregates_parse_from_a_worker_answer() {
        let text = r#"{"updatedAt":1,"sessions":[],"totals":{},"aggregates":{"byAgent":[{"agentId":"main","totals":{"input":1,"output":2,"cacheRead":3,"cacheWrite":4,"totalCost":0.5}}],"byModel":[{"provider":"anthropic","model":"m","count":1,"totals":{"input":1}}],"daily":[]}}"#;
        let parsed: UsagePayload = serde_json::from_str(text).unwrap();
        assert_eq!(parsed.aggregates.by_agent[0].totals.cache_write, 4);
        assert_eq!(parsed.aggregates.by_model[0].model.as_deref(), Some("m"));
        assert!(parsed.aggregates.by_provider.is_empty());
    }
}
