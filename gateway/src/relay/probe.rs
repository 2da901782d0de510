//! The upstream's health as clawgate sees it: a `GET /readyz` every [`PROBE_INTERVAL`] over the
//! relay's own connection pool (reachable, OpenClaw's readiness and what it says is failing, the
//! round trip), and OpenClaw's version.
//!
//! The version comes from the last `hello-ok` a relayed client got (`server.version`), and until
//! one arrives (or after the upstream restarted, which may be an upgrade) from the build id
//! OpenClaw's Control UI page carries (`data-openclaw-control-ui-build-id`), the one version fact
//! OpenClaw serves without a token.
//!
//! clawgate's `/readyz` fails with `upstream` only when the upstream does not answer at all:
//! OpenClaw's own readiness also fails for a disconnected chat channel, which says nothing about
//! the front door; it is reported as `upstream.ready` and `upstream.failing`.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    http::{Request, header},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Relay, RelayCounts, http};

/// How often the upstream is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// A probe without an answer in this time has timed out (OpenClaw's `/readyz` took up to 0.9 s
/// while it computed usage on the seed-size store, and over 2 s on a machine loaded 7-fold).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Timed-out probes in a row before a reachable upstream counts as unreachable: a busy OpenClaw
/// is slow, not gone. A refused or reset connection counts at once.
pub const TIMEOUTS_TO_UNREACHABLE: u32 = 2;

/// What the probes found, kept between them.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// `None` before the first probe.
    pub reachable: Option<bool>,
    pub ready: Option<bool>,
    pub failing: Vec<String>,
    pub latency: Option<Duration>,
    pub uptime_ms: Option<u64>,
    pub error: Option<String>,
    pub checked_at: Option<Instant>,
    /// When `reachable` last changed.
    pub since: Option<Instant>,
    pub version: Option<String>,
    pub build_id: Option<String>,
    /// `hello-ok` or `control-ui`.
    pub version_source: Option<&'static str>,
    /// The Control UI's page was read for the version since the upstream came (back): once is
    /// enough, and a gateway without the Control UI is not asked for it every probe.
    pub page_read: bool,
    /// Probes in a row that timed out.
    pub timeouts: u32,
}

/// The `upstream` section of the status document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UpstreamStatus {
    /// `ws://HOST:PORT`.
    pub url: String,
    /// Answered the last probe; `false` also before the first one.
    pub reachable: bool,
    /// OpenClaw's own `/readyz` verdict, and what it says is failing.
    pub ready: Option<bool>,
    pub failing: Vec<String>,
    /// Round trip of the last probe that was answered.
    pub latency_ms: Option<f64>,
    /// OpenClaw's version, e.g. `2026.9.6`.
    pub version: Option<String>,
    pub build_id: Option<String>,
    /// Where the version was read: `hello-ok` (a relayed client's) or `control-ui` (its page).
    pub version_source: Option<String>,
    pub upstream_uptime_ms: Option<u64>,
    pub checked_ago_ms: Option<u64>,
    /// How long `reachable` has had its value.
    pub for_ms: Option<u64>,
    /// Why the last probe failed.
    pub error: Option<String>,
    pub relay: RelayCounts,
}

impl Relay {
    /// Starts probing the upstream, for as long as the runtime runs.
    pub fn spawn_probe(self: &Arc<Self>) {
        let relay = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROBE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                relay.probe_once().await;
            }
        });
    }

    /// One probe: `/readyz`, and the Control UI's build id when no version is known.
    pub async fn probe_once(&self) {
        let started = Instant::now();
        let answer = tokio::time::timeout(PROBE_TIMEOUT, self.get_json("/readyz")).await;
        let latency = started.elapsed();
        let timed_out = answer.is_err();
        let (reachable, body, error) = match answer {
            Ok(Ok(body)) => (true, body, None),
            Ok(Err(error)) => (false, Value::Null, Some(error)),
            Err(_) => (false, Value::Null, Some(format!("no answer within {PROBE_TIMEOUT:?}"))),
        };
        let need_version = {
            let mut seen = self.observed.lock().expect("upstream observations");
            seen.timeouts = if timed_out { seen.timeouts + 1 } else { 0 };
            if timed_out && seen.timeouts < TIMEOUTS_TO_UNREACHABLE && seen.reachable == Some(true) {
                // Slow, not gone (yet): the verdict stands, the error is shown.
                seen.error = error;
                seen.checked_at = Some(Instant::now());
                return;
            }
            let now = Instant::now();
            if seen.reachable != Some(reachable) {
                seen.since = Some(now);
                if reachable {
                    tracing::info!(upstream = %self.upstream.url, "The upstream OpenClaw gateway answers.");
                } else {
                    tracing::warn!(upstream = %self.upstream.url, error = error.as_deref().unwrap_or(""),
                        "The upstream OpenClaw gateway does not answer; usage keeps answering over HTTP.");
                }
            }
            let uptime = body["uptimeMs"].as_u64();
            // A restart may be an upgrade: the version is read again.
            if matches!((seen.uptime_ms, uptime), (Some(before), Some(now)) if now < before) || !reachable {
                seen.version = None;
                seen.build_id = None;
                seen.version_source = None;
                seen.page_read = false;
            }
            seen.reachable = Some(reachable);
            seen.ready = body["ready"].as_bool();
            seen.failing = body["failing"]
                .as_array()
                .map(|f| f.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
            seen.uptime_ms = uptime;
            seen.checked_at = Some(now);
            if reachable {
                seen.latency = Some(latency);
            }
            seen.error = error;
            let need = reachable && seen.version.is_none() && !seen.page_read;
            seen.page_read |= need;
            need
        };
        if need_version {
            if let Ok(Ok(Some(build_id))) =
                tokio::time::timeout(PROBE_TIMEOUT, self.control_ui_build_id()).await
            {
                let mut seen = self.observed.lock().expect("upstream observations");
                if seen.version.is_none() {
                    seen.version = Some(version_of_build(&build_id));
                    seen.build_id = Some(build_id);
                    seen.version_source = Some("control-ui");
                }
            }
        }
    }

    /// Records the version a relayed client's `hello-ok` named (`server.version`, `buildId`).
    pub fn saw_hello(&self, version: Option<&str>, build_id: Option<&str>) {
        let Some(version) = version.filter(|v| !v.is_empty()) else { return };
        let mut seen = self.observed.lock().expect("upstream observations");
        seen.version = Some(version.to_owned());
        seen.build_id = build_id.map(str::to_owned);
        seen.version_source = Some("hello-ok");
    }

    /// A `GET` of `path` on the upstream: its body as JSON (any status: `/readyz` answers 503
    /// with a body when not ready).
    async fn get_json(&self, path: &str) -> Result<Value, String> {
        let body = self.get(path, 64 << 10).await?;
        serde_json::from_slice(&body).map_err(|e| format!("{path}: not JSON ({e})"))
    }

    async fn get(&self, path: &str, limit: usize) -> Result<bytes::Bytes, String> {
        let request = Request::get(format!("http://{}{path}", self.upstream.authority))
            .header(header::HOST, &self.upstream.authority)
            .body(Body::empty())
            .map_err(|e| e.to_string())?;
        let response = self.client.request(request).await.map_err(|e| http::describe(&e))?;
        axum::body::to_bytes(Body::new(response.into_body()), limit).await.map_err(|e| format!("{path}: {e}"))
    }

    /// The build id in the Control UI's page, if OpenClaw serves it.
    async fn control_ui_build_id(&self) -> Result<Option<String>, String> {
        let page = self.get("/", 4 << 20).await?;
        const ATTRIBUTE: &[u8] = b"data-openclaw-control-ui-build-id=\"";
        let Some(at) = memchr::memmem::find(&page, ATTRIBUTE) else { return Ok(None) };
        let rest = &page[at + ATTRIBUTE.len()..];
        let end = memchr::memchr(b'"', rest).unwrap_or(0);
        Ok(std::str::from_utf8(&rest[..end.min(200)]).ok().filter(|s| !s.is_empty()).map(str::to_owned))
    }

    /// The status document's `upstream` section.
    pub fn status(&self) -> UpstreamStatus {
        let seen = self.observed.lock().expect("upstream observations").clone();
        let ms = |d: Duration| d.as_millis() as u64;
        UpstreamStatus {
            url: self.upstream.url.clone(),
            reachable: seen.reachable == Some(true),
            ready: seen.ready,
            failing: seen.failing,
            latency_ms: seen.latency.map(|l| (l.as_secs_f64() * 10_000.0).round() / 10.0),
            version: seen.version,
            build_id: seen.build_id,
            version_source: seen.version_source.map(str::to_owned),
            upstream_uptime_ms: seen.uptime_ms,
            checked_ago_ms: seen.checked_at.map(|t| ms(t.elapsed())),
            for_ms: seen.since.map(|t| ms(t.elapsed())),
            error: seen.error,
            relay: self.counters.snapshot(),
        }
    }

    /// For `/readyz`: whether the upstream answers, and what to say about it.
    pub fn readiness(&self) -> (bool, Value) {
        let status = self.status();
        let detail = json!({
            "url": status.url,
            "reachable": status.reachable,
            "ready": status.ready,
            "version": status.version,
            "latencyMs": status.latency_ms,
            "error": status.error,
        });
        (status.reachable, detail)
    }

    /// Open relayed WebSockets (for the status page's `websocket` part).
    pub fn open_connections(&self) -> u64 {
        self.counters.ws_open.load(Ordering::Relaxed)
    }
}

/// `2026.9.6` from `2026.9.6-release-eb377ac59e6c-…`: the leading version number of a build id.
pub fn version_of_build(build_id: &str) -> String {
    let end = build_id.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(build_id.len());
    let version = build_id[..end].trim_end_matches('.');
    if version.is_empty() { build_id.to_owned() } else { version.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::Upstream;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// An upstream that answers `/readyz` `answers` times, then accepts and never answers.
    async fn upstream_that_hangs_after(answers: usize) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            let mut served = 0;
            while let Ok((mut tcp, _)) = listener.accept().await {
                if served < answers {
                    served += 1;
                    let mut buf = [0u8; 1024];
                    let _ = tcp.read(&mut buf).await;
                    let body = r#"{"ready":true,"failing":[],"uptimeMs":5}"#;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = tcp.write_all(format!("{head}{body}").as_bytes()).await;
                } else {
                    held.push(tcp);
                }
            }
        });
        Upstream::parse(&format!("ws://{addr}")).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_upstream_stays_reachable_for_one_timeout() {
        let relay = Relay::new(upstream_that_hangs_after(1).await);
        relay.probe_once().await;
        assert!(relay.status().reachable);
        relay.probe_once().await;
        let status = relay.status();
        assert!(status.reachable, "one timeout is slowness: {status:?}");
        assert!(status.error.as_deref().is_some_and(|e| e.contains("no answer")), "{status:?}");
        relay.probe_once().await;
        assert!(!relay.status().reachable, "two timeouts in a row: unreachable");
    }

    #[tokio::test]
    async fn a_refused_connection_is_unreachable_at_once() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let relay = Relay::new(Upstream::parse(&format!("ws://127.0.0.1:{port}")).unwrap());
        relay.probe_once().await;
        let status = relay.status();
        assert!(!status.reachable && status.error.is_some(), "{status:?}");
        assert!(!relay.readiness().0);
    }

    #[test]
    fn versions_from_build_ids() {
        assert_eq!(version_of_build("2026.9.6-release-eb377ac59e6c-2026-09-23T16-33-12.144Z"), "2026.9.6");
        assert_eq!(version_of_build("2026.10.1"), "2026.10.1");
        assert_eq!(version_of_build("dev-abc"), "dev-abc");
    }
}
