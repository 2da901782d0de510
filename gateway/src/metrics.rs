//! `GET /metrics`, encoded by `prometheus-client` (OpenMetrics text 1.0, which Prometheus
//! reads natively).
//!
//! Request counts and latency histograms by transport (`http`, `ws`), method or route and
//! outcome; runtime lag; worker state, restarts by cause and memory; cache freshness, lookups and
//! jobs; usage totals (tokens and cost) by agent, provider and model; and cost budgets with
//! their spend and month-end forecast (the names docs/ops/alerts.md's contract gives the
//! shipped alert rules and Grafana dashboard).
//! Request metrics live in a registry for the process; everything else is a snapshot taken at
//! scrape time and encoded by a one-scrape collector, so no figure is copied into a metric
//! between scrapes. Usage figures come from a `sessions.usage {agentScope:"all", range:"all",
//! limit:1}` answer the scrape keeps warm through the cache in the background (a scrape never
//! waits for the worker); its aggregates are parsed once per new answer, on the blocking pool.
//!
//! Label values are bounded: a method label is one of [`api::METHODS`] or `connect`, a route
//! label one of the router's own templates (`/api/v1/call/{method}` is labelled by its method);
//! anything else is `other` or `/unmatched`, so no request can mint a series. Values that come
//! from the stores (agent, provider and model names) are escaped.
//! Requires the same bearer token as the API when one is configured.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use ipc_proto::{Method, UsageQuery};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        histogram::Histogram,
    },
    registry::Registry,
};
use serde::Deserialize;
use serde_json::json;

use crate::{AppState, api, cache::Outcome};

/// Histogram bucket bounds, seconds.
const BUCKETS: [f64; 16] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// The OpenMetrics content type `prometheus-client` writes.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    transport: &'static str,
    method: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    transport: &'static str,
    method: String,
}

type Latency = Family<LatencyLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Request counters and latencies; everything else is read at scrape time.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Latency,
    pub ws_connections: AtomicU64,
    pub ws_connections_total: AtomicU64,
    pub auth_failures: AtomicU64,
    usage: Mutex<Option<(u64, Arc<Breakdown>)>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: Latency = Family::new_with_constructor(latency_histogram);
        let mut registry = Registry::default();
        registry.register(
            "clawgate_requests",
            // The registry adds the final period.
            "Requests by transport, method or route, and outcome",
            requests.clone(),
        );
        registry.register(
            "clawgate_request_duration_seconds",
            "Request latency by transport and method or route",
            latency.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            ws_connections: AtomicU64::new(0),
            ws_connections_total: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            usage: Mutex::new(None),
        }
    }
}

impl Metrics {
    /// Records one request: `transport` `http`|`ws`, `method` a method name (an unknown one is
    /// counted as `other`), `outcome` `ok`, an error code, or an HTTP status.
    pub fn observe(&self, transport: &'static str, method: &str, outcome: &str, took: Duration) {
        self.observe_label(transport, label_method(method), outcome, took);
    }

    /// Records one request under a label already known to be bounded.
    fn observe_label(&self, transport: &'static str, method: &str, outcome: &str, took: Duration) {
        let labels = RequestLabels {
            transport,
            method: method.to_owned(),
            outcome: label_outcome(outcome).to_owned(),
        };
        self.requests.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&LatencyLabels { transport, method: labels.method })
            .observe(took.as_secs_f64());
    }

    /// The exposition: the request registry, then the scrape's snapshot.
    fn encode(&self, scrape: Scrape) -> Result<String, std::fmt::Error> {
        let mut snapshot = Registry::default();
        snapshot.register_collector(Box::new(scrape));
        let mut out = String::with_capacity(16 << 10);
        prometheus_client::encoding::text::encode_registry(&mut out, &self.registry)?;
        prometheus_client::encoding::text::encode_registry(&mut out, &snapshot)?;
        prometheus_client::encoding::text::encode_eof(&mut out)?;
        Ok(out)
    }
}

/// A method name as a label: a method clawgate serves, or `connect`; anything else `other`.
pub fn label_method(method: &str) -> &str {
    if api::METHODS.contains(&method) || method == "connect" { method } else { "other" }
}

/// An outcome as a label: `ok`, an OpenClaw error code, a WebSocket connect outcome or an
/// HTTP status; anything else `other`.
fn label_outcome(outcome: &str) -> &str {
    let code = outcome.len() == 3 && outcome.bytes().all(|b| b.is_ascii_digit());
    let word = outcome.len() <= 32 && outcome.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_');
    if code || word { outcome } else { "other" }
}

/// The route label of an HTTP request: the router's template that matched (`/api/v1/call/{method}`
/// by the method it names, if clawgate serves it), else `/unmatched`. Never the raw path.
fn route_label<'a>(matched: Option<&'a str>, path: &'a str) -> &'a str {
    match matched {
        Some("/api/v1/call/{method}") => label_method(path.strip_prefix("/api/v1/call/").unwrap_or("")),
        Some(template) => template,
        None => "/unmatched",
    }
}

/// Middleware: counts and times every HTTP request by route (or called method) and status.
pub async fn track_http(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let matched = request.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    let route = match matched {
        // Shield mode: everything no route matched is relayed to OpenClaw.
        None if state.relay.is_some() => "relay".to_owned(),
        _ => route_label(matched.as_deref(), request.uri().path()).to_owned(),
    };
    let response = next.run(request).await;
    // Upgrades (101) hand off to the WebSocket task; their requests are counted there.
    state.metrics.observe_label("http", &route, response.status().as_str(), started.elapsed());
    response
}

/// `GET /metrics`.
pub async fn handler(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(e) = state.authorize(&headers) {
        return e.into_response();
    }
    let usage = usage_breakdown(&state).await;
    match state.metrics.encode(Scrape::take(&state, usage)) {
        Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
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

/// A label value from the stores, escaped as the exposition format requires
/// (`prometheus-client` writes label values as they are).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Esc(String);

impl EncodeLabelValue for Esc {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

fn esc(value: Option<&str>) -> Esc {
    Esc(value.unwrap_or("unknown").to_owned())
}

/// Everything read at scrape time, owned, so the collector needs no access to the state.
#[derive(Debug)]
struct Scrape {
    lag: crate::lag::LagSnapshot,
    worker: supervisor::WorkerStatus,
    gateway_rss: Option<u64>,
    pressure: Vec<(&'static str, crate::lag::Pressure)>,
    cache: crate::cache::CacheStats,
    lookups: Vec<(&'static str, u64)>,
    jobs: Vec<(&'static str, u64)>,
    rejected_queue_full: u64,
    deadline_expired: u64,
    events_sent: u64,
    ws_connections: u64,
    ws_connections_total: u64,
    auth_failures: u64,
    usage: Option<Arc<Breakdown>>,
    budgets: Option<crate::budget::BudgetStatus>,
}

impl Scrape {
    fn take(state: &AppState, usage: Option<Arc<Breakdown>>) -> Scrape {
        let c = &state.cache.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let m = &state.metrics;
        let (gateway_memory, worker_memory) = state.lag.memory();
        let pressure = [("gateway", gateway_memory), ("worker", worker_memory)]
            .into_iter()
            .filter_map(|(process, memory)| memory.pressure.map(|p| (process, p)))
            .collect();
        Scrape {
            lag: state.lag.snapshot(),
            worker: state.supervisor.status(),
            gateway_rss: supervisor::rss_bytes(std::process::id()),
            pressure,
            cache: state.cache.stats(),
            lookups: Outcome::ALL.iter().map(|o| (o.as_str(), load(&c.lookups[*o as usize]))).collect(),
            jobs: vec![
                ("started", load(&c.jobs_started)),
                ("ok", load(&c.jobs_ok)),
                ("failed", load(&c.jobs_failed)),
                ("cancelled", load(&c.jobs_cancelled)),
                ("background", load(&c.refreshes)),
            ],
            rejected_queue_full: load(&c.rejected_queue_full),
            deadline_expired: load(&c.deadline_expired),
            events_sent: load(&c.events_sent),
            ws_connections: load(&m.ws_connections),
            ws_connections_total: load(&m.ws_connections_total),
            auth_failures: load(&m.auth_failures),
            usage,
            budgets: state.budgets.as_ref().map(|b| b.status()),
        }
    }
}

/// No labels.
type Bare = [(&'static str, &'static str); 0];

/// The metric type of a sample type, known without a sample: a family is described even
/// when it has none yet (no restarts so far), so scrapers and alert rules see it exists.
trait Kind: EncodeMetric {
    const TYPE: MetricType;
}

impl Kind for ConstGauge<f64> {
    const TYPE: MetricType = MetricType::Gauge;
}

impl<N: prometheus_client::encoding::EncodeCounterValue> Kind for ConstCounter<N> {
    const TYPE: MetricType = MetricType::Counter;
}

/// Writes one metric family: its descriptor, then its samples.
fn family<L: EncodeLabelSet, M: Kind>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, M)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, M::TYPE)?;
    for (labels, value) in samples {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(v: f64) -> [(Bare, ConstGauge<f64>); 1] {
    [([], ConstGauge::new(v))]
}

fn counter(v: u64) -> [(Bare, ConstCounter<u64>); 1] {
    [([], ConstCounter::new(v))]
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let lag = &self.lag;
        family(
            &mut e,
            "clawgate_runtime_lag_max_seconds",
            "Largest scheduling delay of the gateway runtime over the window.",
            gauge(lag.delay_max_ms / 1000.0),
        )?;
        family(
            &mut e,
            "clawgate_runtime_lag_p99_seconds",
            "99th percentile scheduling delay over the window.",
            gauge(lag.delay_p99_ms / 1000.0),
        )?;
        family(
            &mut e,
            "clawgate_runtime_utilization_ratio",
            "Share of runtime worker time spent busy over the window.",
            gauge(lag.utilization),
        )?;
        family(
            &mut e,
            "clawgate_gateway_cpu_core_ratio",
            "Gateway CPU time over wall time over the window.",
            gauge(lag.cpu_core_ratio),
        )?;

        let worker = &self.worker;
        let up = matches!(worker.state_name(), "ready" | "busy");
        family(
            &mut e,
            "clawgate_worker_up",
            "1 when the usage worker is ready (or busy).",
            gauge(f64::from(u8::from(up))),
        )?;
        let current = worker.state_name();
        family(
            &mut e,
            "clawgate_worker_state",
            "1 for the usage worker's current state, 0 for the others.",
            WORKER_STATES
                .iter()
                .map(|s| ([("state", *s)], ConstGauge::new(f64::from(u8::from(*s == current))))),
        )?;
        family(
            &mut e,
            "clawgate_worker_restarts",
            "Usage worker restarts by cause.",
            worker.restarts_by_cause.iter().map(|(cause, n)| ([("cause", *cause)], ConstCounter::new(*n))),
        )?;
        family(
            &mut e,
            "clawgate_worker_jobs_in_flight",
            "Jobs sent to the worker and not yet answered.",
            gauge(worker.jobs_in_flight as f64),
        )?;
        let rss = [("gateway", self.gateway_rss), ("worker", worker.rss_bytes)];
        family(
            &mut e,
            "clawgate_rss_bytes",
            "Resident memory by process.",
            rss.into_iter().filter_map(|(process, rss)| {
                rss.map(|r| ([("process", process)], ConstGauge::new(r as f64)))
            }),
        )?;
        family(
            &mut e,
            "clawgate_worker_heap_bytes",
            "The worker's heap as its allocator counts it.",
            worker.reported_memory.map(|report| ([] as Bare, ConstGauge::new(report.heap_bytes as f64))),
        )?;
        family(
            &mut e,
            "clawgate_memory_pressure",
            "1 while a process is under memory pressure, by level and reason.",
            self.pressure.iter().map(|(process, p)| {
                ([("process", *process), ("level", p.level), ("reason", p.reason)], ConstGauge::new(1.0))
            }),
        )?;

        let cache = &self.cache;
        family(&mut e, "clawgate_cache_entries", "Cached usage answers.", gauge(cache.answers as f64))?;
        family(&mut e, "clawgate_cache_bytes", "Bytes of cached usage answers.", gauge(cache.bytes as f64))?;
        let ages = match (cache.newest_age, cache.oldest_age) {
            (Some(newest), Some(oldest)) => vec![("newest", newest), ("oldest", oldest)],
            _ => Vec::new(),
        };
        family(
            &mut e,
            "clawgate_cache_answer_age_seconds",
            "Age of the newest and oldest cached answers.",
            ages.into_iter().map(|(which, age)| ([("which", which)], ConstGauge::new(age.as_secs_f64()))),
        )?;
        family(
            &mut e,
            "clawgate_cache_lookups",
            "Usage requests by how they were served (hit, miss, shared, stale).",
            self.lookups.iter().map(|(result, n)| ([("result", *result)], ConstCounter::new(*n))),
        )?;
        family(
            &mut e,
            "clawgate_usage_jobs",
            "Worker jobs started and how they ended.",
            self.jobs.iter().map(|(outcome, n)| ([("outcome", *outcome)], ConstCounter::new(*n))),
        )?;
        family(
            &mut e,
            "clawgate_usage_jobs_running",
            "Distinct usage jobs running or queued.",
            gauge(cache.jobs_running as f64),
        )?;
        family(
            &mut e,
            "clawgate_usage_rejected",
            "Requests refused at once because the job queue was full.",
            counter(self.rejected_queue_full),
        )?;
        family(
            &mut e,
            "clawgate_usage_deadline_expired",
            "Requests answered stale or UNAVAILABLE at their deadline.",
            counter(self.deadline_expired),
        )?;
        family(
            &mut e,
            "clawgate_usage_updated_events",
            "usage.updated events broadcast.",
            counter(self.events_sent),
        )?;
        family(
            &mut e,
            "clawgate_ws_connections",
            "Open WebSocket connections.",
            gauge(self.ws_connections as f64),
        )?;
        // A counter family of the same stem: OpenMetrics names its samples `_total`, so the
        // exposition keeps `clawgate_ws_connections_total` beside the gauge.
        family(
            &mut e,
            "clawgate_ws_connections_accepted",
            "WebSocket connections accepted.",
            counter(self.ws_connections_total),
        )?;
        family(
            &mut e,
            "clawgate_auth_failures",
            "Failed authentications (HTTP and WebSocket).",
            counter(self.auth_failures),
        )?;
        if let Some(usage) = &self.usage {
            usage.encode(&mut e)?;
        }
        if let Some(budgets) = &self.budgets {
            encode_budgets(budgets, &mut e)?;
        }
        Ok(())
    }
}

/// Every state `clawgate_worker_state` has a series for (the alert contract's list).
const WORKER_STATES: [&str; 7] = ["ready", "busy", "backoff", "spawning", "handshaking", "failed", "stopped"];

/// Budgets, spend and forecast (gauges, labels `period` and `agent`): a budget's series exists
/// when it is configured, its spend and forecast once the first answer is in.
fn encode_budgets(
    budgets: &crate::budget::BudgetStatus,
    e: &mut DescriptorEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    let labels = |line: &crate::budget::Line| {
        let period = line.period.map_or("unknown", crate::budget::Period::as_str);
        vec![("period", Esc(period.to_owned())), ("agent", Esc(line.agent.clone()))]
    };
    family(
        e,
        "clawgate_budget_usd",
        "Configured cost budget in USD, by period (day, month) and agent (all or an id).",
        budgets.items.iter().map(|l| (labels(l), ConstGauge::new(l.budget_usd))),
    )?;
    family(
        e,
        "clawgate_spend_usd",
        "Spend in USD in the current day or month, as the worker computed it.",
        budgets.items.iter().filter_map(|l| l.spend_usd.map(|s| (labels(l), ConstGauge::new(s)))),
    )?;
    family(
        e,
        "clawgate_spend_forecast_usd",
        "Month-end spend forecast in USD: the month so far at its average burn rate.",
        budgets.items.iter().filter_map(|l| l.forecast_usd.map(|f| (labels(l), ConstGauge::new(f)))),
    )
}

impl Breakdown {
    /// Tokens and cost over all time, by agent, provider and model.
    fn encode(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let by = |what: &str| ("by", Esc(what.to_owned()));
        let rows = || {
            let by_agent = self
                .by_agent
                .iter()
                .map(move |r| (vec![by("agent"), ("agent", esc(r.agent_id.as_deref()))], &r.totals));
            let by_provider = self
                .by_provider
                .iter()
                .map(move |r| (vec![by("provider"), ("provider", esc(r.provider.as_deref()))], &r.totals));
            let by_model = self.by_model.iter().map(move |r| {
                let labels = vec![
                    by("model"),
                    ("provider", esc(r.provider.as_deref())),
                    ("model", esc(r.model.as_deref())),
                ];
                (labels, &r.totals)
            });
            by_agent.chain(by_provider).chain(by_model)
        };
        family(
            e,
            "clawgate_usage_tokens",
            "Tokens over all time by agent, provider or model, and token type.",
            rows().flat_map(|(labels, t)| {
                [
                    ("input", t.input),
                    ("output", t.output),
                    ("cache_read", t.cache_read),
                    ("cache_write", t.cache_write),
                ]
                .into_iter()
                .map(move |(kind, n)| {
                    let mut labels = labels.clone();
                    labels.push(("type", Esc(kind.to_owned())));
                    (labels, ConstCounter::new(n))
                })
            }),
        )?;
        family(
            e,
            "clawgate_usage_cost_usd",
            "Cost in USD over all time by agent, provider or model.",
            rows().map(|(labels, t)| (labels, ConstCounter::new(t.total_cost.max(0.0)))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(label_method("sessions.usage"), "sessions.usage");
        assert_eq!(label_method("connect"), "connect");
        assert_eq!(label_method("x.random.123"), "other");
        assert_eq!(label_method("/anything"), "other", "a WS method starting with / mints no label");
        assert_eq!(route_label(Some("/healthz"), "/healthz"), "/healthz");
        assert_eq!(route_label(Some("/api/v1/call/{method}"), "/api/v1/call/usage.cost"), "usage.cost");
        assert_eq!(route_label(Some("/api/v1/call/{method}"), "/api/v1/call//etc/passwd"), "other");
        assert_eq!(route_label(None, "/api/v1/call//x"), "/unmatched");
        assert_eq!(label_outcome("404"), "404");
        assert_eq!(label_outcome("INVALID_REQUEST"), "INVALID_REQUEST");
        assert_eq!(label_outcome("x\"y"), "other");
    }

    fn exposition(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn requests_encode_as_openmetrics_with_bounded_series() {
        let metrics = Metrics::default();
        metrics.observe("ws", "health", "ok", Duration::from_micros(400));
        metrics.observe("ws", "health", "ok", Duration::from_millis(3));
        for i in 0..1000 {
            metrics.observe("ws", &format!("/junk/{i}"), "INVALID_REQUEST", Duration::from_millis(1));
        }
        let out = exposition(&metrics.registry);
        assert!(out.contains("# TYPE clawgate_requests counter\n"), "{out}");
        assert!(
            out.contains(r#"clawgate_requests_total{transport="ws",method="health",outcome="ok"} 2"#),
            "{out}"
        );
        assert!(
            out.contains(
                r#"clawgate_requests_total{transport="ws",method="other",outcome="INVALID_REQUEST"} 1000"#
            ),
            "{out}"
        );
        assert!(
            out.contains(
                r#"clawgate_request_duration_seconds_bucket{le="0.0005",transport="ws",method="health"} 1"#
            ),
            "{out}"
        );
        assert!(
            out.contains("# HELP clawgate_requests Requests by transport, method or route, and outcome.\n")
        );
        assert_eq!(out.matches("clawgate_requests_total{").count(), 2, "{out}");
        assert!(out.ends_with("# EOF\n"));
    }

    #[test]
    fn store_names_are_escaped() {
        #[derive(Debug)]
        struct Only(Breakdown);
        impl Collector for Only {
            fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
                self.0.encode(&mut e)
            }
        }
        let breakdown = Breakdown {
            by_model: vec![Row {
                provider: Some("evil\"} 1\nfake_metric 2".into()),
                model: Some("m\\".into()),
                totals: Totals { input: 5, total_cost: 0.25, ..Totals::default() },
                ..Row::default()
            }],
            ..Breakdown::default()
        };
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Only(breakdown)));
        let out = exposition(&registry);
        assert!(!out.lines().any(|l| l.starts_with("fake_metric")), "{out}");
        assert!(out.contains(r#"provider="evil\"} 1\nfake_metric 2",model="m\\",type="input"} 5"#), "{out}");
        assert!(out.contains(r#"clawgate_usage_cost_usd_total{by="model","#), "{out}");
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
