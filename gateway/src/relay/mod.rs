//! Shield mode (`clawgate serve --upstream ws://127.0.0.1:18789`): clawgate listens where users
//! reach OpenClaw and relays everything to the OpenClaw gateway behind it, except the usage
//! methods, which it answers itself from its worker. OpenClaw's own Control UI, CLI and apps keep
//! their URL and never make OpenClaw compute usage again (issue 19).
//!
//! By concern:
//! - [`http`]: the fallback route: every HTTP request clawgate does not serve itself goes to the
//!   upstream, bodies streamed both ways; WebSocket upgrades are handed to `conn`;
//! - `conn`: one relayed WebSocket: frames forwarded byte for byte both ways, the four usage
//!   methods answered here (same id, OpenClaw's shape, the scopes of the upstream's `hello-ok`);
//! - [`frame`]: frame headers and message boundaries, read as bytes stream by;
//! - [`probe`]: the upstream's health (reachable, ready, version, latency) for `/readyz` and
//!   the status document.
//!
//! What clawgate keeps for itself in shield mode: `/healthz`, `/health`, `/readyz`, `/ready`,
//! `/metrics`, `/api/v1/*`, `/ws` (its own protocol endpoint; OpenClaw's clients connect at `/`)
//! and its dashboard under [`DASHBOARD_PREFIX`]. Everything else is OpenClaw's
//! (docs/ops/shield.md).

pub mod frame;
pub mod http;
pub mod probe;

mod conn;

use std::{
    net::{SocketAddr, ToSocketAddrs},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::body::Body;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use http::fallback;

/// Where clawgate's dashboard lives in shield mode: `/` is OpenClaw's Control UI there.
pub const DASHBOARD_PREFIX: &str = "/clawgate";

/// The methods clawgate answers itself on a relayed connection; the upstream never sees them.
pub const USAGE_METHODS: [&str; 4] =
    ["sessions.usage", "sessions.usage.timeseries", "sessions.usage.logs", "usage.cost"];

/// Time to open a TCP connection to the upstream: it is on this machine (or a LAN), so a
/// connect that takes longer means it is not there.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Pooled connections to the upstream are dropped after this idle time: OpenClaw closes idle
/// keep-alive connections after 5 s (`Keep-Alive: timeout=5`), and a request sent on a
/// connection it is closing fails.
const POOL_IDLE: Duration = Duration::from_secs(4);

/// The upstream OpenClaw gateway (`--upstream`), as given and as resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `ws://HOST:PORT`, as shown in the status and logs.
    pub url: String,
    /// `HOST:PORT` to connect to (resolved at every connect).
    pub authority: String,
}

impl Upstream {
    /// Parses `--upstream`: `ws://HOST:PORT` (or `http://HOST:PORT`, the same server), no path.
    /// TLS is refused: OpenClaw behind clawgate listens on loopback or a private address.
    pub fn parse(text: &str) -> Result<Upstream, String> {
        let text = text.trim();
        let uri: axum::http::Uri =
            text.parse().map_err(|e| format!("\"{text}\" is not a URL ({e}); e.g. ws://127.0.0.1:18789"))?;
        match uri.scheme_str() {
            Some("ws" | "http") => {}
            Some("wss" | "https") => {
                return Err(format!(
                    "\"{text}\": TLS to the upstream is not supported; run OpenClaw's gateway on loopback \
                     (ws://127.0.0.1:PORT) behind clawgate"
                ));
            }
            _ => return Err(format!("\"{text}\" needs ws:// (e.g. ws://127.0.0.1:18789)")),
        }
        let Some(authority) = uri.authority() else {
            return Err(format!("\"{text}\" names no host (e.g. ws://127.0.0.1:18789)"));
        };
        if authority.as_str().contains('@') {
            return Err(format!("\"{text}\": credentials in the URL are not supported"));
        }
        let Some(port) = authority.port_u16() else {
            return Err(format!("\"{text}\" needs a port (OpenClaw's default is 18789)"));
        };
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "\"{text}\": a path is not supported; clients' paths are passed through as they are"
            ));
        }
        let host = authority.host();
        Ok(Upstream { url: format!("ws://{host}:{port}"), authority: format!("{host}:{port}") })
    }

    /// The addresses the upstream resolves to now.
    pub fn resolve(&self) -> Result<Vec<SocketAddr>, String> {
        self.authority
            .to_socket_addrs()
            .map(Iterator::collect)
            .map_err(|e| format!("cannot resolve the upstream {}: {e}", self.url))
    }
}

/// Counters of what the relay did since start (the status document's `upstream.relay`).
#[derive(Debug, Default)]
pub struct Counters {
    pub http_requests: AtomicU64,
    /// HTTP requests answered 502 because the upstream could not be reached.
    pub http_failures: AtomicU64,
    pub ws_connections: AtomicU64,
    pub ws_open: AtomicU64,
    /// Connections whose upstream went away, closed with 1012 as OpenClaw closes on restart.
    pub ws_upstream_lost: AtomicU64,
    /// Connections relayed without routing (not OpenClaw's protocol, or its `connect` failed).
    pub ws_transparent: AtomicU64,
    /// Client messages forwarded to the upstream after `hello-ok`.
    pub messages_forwarded: AtomicU64,
    /// Usage calls answered here, by method (in [`USAGE_METHODS`] order).
    pub answered: [AtomicU64; 4],
    /// Usage calls refused here with `FORBIDDEN` (no `operator.read` in the `hello-ok`).
    pub forbidden: AtomicU64,
}

impl Counters {
    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> RelayCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RelayCounts {
            http_requests: get(&self.http_requests),
            http_failures: get(&self.http_failures),
            ws_connections: get(&self.ws_connections),
            ws_open: get(&self.ws_open),
            ws_upstream_lost: get(&self.ws_upstream_lost),
            ws_transparent: get(&self.ws_transparent),
            messages_forwarded: get(&self.messages_forwarded),
            answered: USAGE_METHODS
                .iter()
                .zip(&self.answered)
                .map(|(m, c)| ((*m).to_owned(), get(c)))
                .collect(),
            forbidden: get(&self.forbidden),
        }
    }
}

/// [`Counters`] as served.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RelayCounts {
    pub http_requests: u64,
    pub http_failures: u64,
    pub ws_connections: u64,
    pub ws_open: u64,
    pub ws_upstream_lost: u64,
    pub ws_transparent: u64,
    pub messages_forwarded: u64,
    pub answered: std::collections::BTreeMap<String, u64>,
    pub forbidden: u64,
}

/// Shield mode's shared state.
pub struct Relay {
    pub upstream: Upstream,
    /// Pooled HTTP/1.1 connections to the upstream, for relayed requests and probes.
    client: Client<HttpConnector, Body>,
    pub counters: Counters,
    /// What the last probe found, and the version the last `hello-ok` named.
    observed: Mutex<probe::Observed>,
    /// Set when clawgate stops: relayed connections close as OpenClaw's do on a restart.
    stopping: watch::Sender<bool>,
}

impl Relay {
    pub fn new(upstream: Upstream) -> Relay {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        Relay {
            upstream,
            client,
            counters: Counters::default(),
            observed: Mutex::new(probe::Observed::default()),
            stopping: watch::channel(false).0,
        }
    }

    /// Tells relayed connections that clawgate is stopping.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Waits (up to `deadline`) until every relayed WebSocket has closed.
    pub async fn closed(&self, deadline: Duration) {
        let _ = tokio::time::timeout(deadline, async {
            while self.counters.ws_open.load(Ordering::Relaxed) > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }

    fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }
}

/// Refuses an upstream that is this gateway itself (a loop that would eat every connection).
pub fn check_not_self(upstream: &Upstream, listen: SocketAddr) -> Result<(), String> {
    let addrs = upstream.resolve()?;
    let same = |a: &SocketAddr| {
        a.port() == listen.port()
            && (a.ip() == listen.ip()
                || listen.ip().is_unspecified()
                || a.ip().is_loopback() && listen.ip().is_loopback())
    };
    if addrs.iter().any(same) {
        return Err(format!(
            "--upstream {} is this gateway's own address ({listen}): move OpenClaw's gateway to another port \
             (gateway.port in openclaw.json) and point --upstream there",
            upstream.url
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls() {
        let up = Upstream::parse("ws://127.0.0.1:18789").unwrap();
        assert_eq!(up, Upstream { url: "ws://127.0.0.1:18789".into(), authority: "127.0.0.1:18789".into() });
        assert_eq!(Upstream::parse(" http://localhost:18789/ ").unwrap().authority, "localhost:18789");
        assert_eq!(Upstream::parse("ws://[::1]:18789").unwrap().authority, "[::1]:18789");
        for (bad, says) in [
            ("wss://127.0.0.1:18789", "TLS"),
            ("127.0.0.1:18789", "ws://"),
            ("ws://127.0.0.1", "port"),
            ("ws://127.0.0.1:18789/gateway", "path"),
            ("ws://u:p@127.0.0.1:1", "credentials"),
            ("ftp://x:1", "ws://"),
        ] {
            let error = Upstream::parse(bad).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn the_upstream_is_not_this_gateway() {
        let up = Upstream::parse("ws://127.0.0.1:18789").unwrap();
        assert!(check_not_self(&up, "127.0.0.1:18790".parse().unwrap()).is_ok());
        assert!(check_not_self(&up, "127.0.0.1:18789".parse().unwrap()).is_err());
        assert!(check_not_self(&up, "0.0.0.0:18789".parse().unwrap()).is_err());
        let local = Upstream::parse("ws://localhost:18789").unwrap();
        assert!(check_not_self(&local, "127.0.0.1:18789".parse().unwrap()).is_err());
    }
}
