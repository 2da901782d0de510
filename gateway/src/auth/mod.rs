//! Authentication and access, as one layer in front of every route.
//!
//! [`guard`] runs for every request. Routes are private unless listed in [`PUBLIC_ROUTES`]:
//! a route added to the router without an entry there needs the bearer token. In order:
//! 1. probes (`/healthz`, `/health`) are answered whatever the request says (load balancers and
//!    container runtimes send any `Host`);
//! 2. `Host` must name this gateway ([`host::HostPolicy`]): 403 otherwise (DNS rebinding);
//! 3. a browser request from another site is refused (403): `Sec-Fetch-Site: cross-site`
//!    (except a top-level navigation to a page), or an `Origin` that is not allowed. WebSocket
//!    upgrades are let through: their `Origin` is checked at `connect`, with OpenClaw's error;
//! 4. a client over the failed-auth limit gets 429 ([`limiter`]; never loopback);
//! 5. private routes need `Authorization: Bearer <token>` when a token is configured; a wrong
//!    one is 401 and counts against the limiter.
//!
//! The HTTP API with the token has every operator scope (OpenClaw's shared-secret auth); the
//! WebSocket `connect` (in `ws::connect`) authenticates its own way: token or password, device
//! identity, scopes ([`scope`]).

pub mod host;
pub mod limiter;
pub mod scope;

use std::{net::SocketAddr, sync::atomic::Ordering, time::Duration};

use axum::{
    extract::{ConnectInfo, MatchedPath, Request, State},
    http::{HeaderMap, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{
    AppState,
    error::{ApiError, ErrorCode},
    limits,
};

/// How a route is exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// Answered for anyone, with any `Host`: liveness probes.
    Probe,
    /// No token needed (Host and cross-site checks still apply): the dashboard's files, the
    /// basic readiness answer, WebSocket upgrades (authenticated by `connect`).
    Public,
    /// The default: the token is needed when one is configured.
    Private,
}

/// Routes reachable without the token (as OpenClaw: probes, readiness, the Control UI's files,
/// the WebSocket). Everything else is private.
pub const PUBLIC_ROUTES: [(&str, Exposure); 12] = [
    ("/healthz", Exposure::Probe),
    ("/health", Exposure::Probe),
    ("/readyz", Exposure::Public),
    ("/ready", Exposure::Public),
    ("/", Exposure::Public),
    ("/index.html", Exposure::Public),
    ("/assets/{file}", Exposure::Public),
    ("/ws", Exposure::Public),
    // Shield mode's dashboard (`relay::DASHBOARD_PREFIX`).
    ("/clawgate", Exposure::Public),
    ("/clawgate/", Exposure::Public),
    ("/clawgate/index.html", Exposure::Public),
    ("/clawgate/assets/{file}", Exposure::Public),
];

pub fn exposure(route: &str) -> Exposure {
    PUBLIC_ROUTES.iter().find(|(r, _)| *r == route).map_or(Exposure::Private, |(_, e)| *e)
}

/// What the guard learnt about the caller, for handlers that answer differently (readiness
/// details go to local or authorised callers only, as OpenClaw).
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// The token matched, or none is configured.
    pub authorized: bool,
    pub loopback: bool,
}

/// The shared auth state: the token, the Host/Origin allowlist, the failed-auth limiter.
#[derive(Debug)]
pub struct Auth {
    pub token: Option<String>,
    pub hosts: host::HostPolicy,
    pub limiter: limiter::AuthLimiter,
}

impl Auth {
    pub fn new(token: Option<String>, hosts: host::HostPolicy) -> Auth {
        Auth {
            token,
            hosts,
            limiter: limiter::AuthLimiter::new(
                limits::MAX_AUTH_FAILURES,
                limits::AUTH_FAILURE_WINDOW,
                limits::AUTH_LIMITER_ENTRIES,
            ),
        }
    }

    /// Checks `Authorization: Bearer <token>` when a token is configured.
    pub fn check_bearer(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(token) = &self.token else { return Ok(()) };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if constant_time_eq(given.as_bytes(), token.as_bytes()) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Unauthorized,
                "missing or wrong token (send Authorization: Bearer <token>)",
            ))
        }
    }

    /// Whether a browser request comes from another site: refused for everything but probes.
    /// `None` when it may go on.
    pub fn cross_site(&self, request: &Request, peer_loopback: bool) -> Option<&'static str> {
        let headers = request.headers();
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let navigation = request.method() == Method::GET && text("sec-fetch-mode") == Some("navigate");
        if text("sec-fetch-site").is_some_and(|s| s.eq_ignore_ascii_case("cross-site")) && !navigation {
            return Some("cross-site request refused");
        }
        match text("origin") {
            Some(origin) if !self.hosts.origin_allowed(origin, text("host"), peer_loopback) => {
                Some("origin not allowed")
            }
            _ => None,
        }
    }
}

/// Compares secrets in time independent of where they differ and of their lengths: both are
/// hashed to fixed-size digests first.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (x, y) = (Sha256::digest(a), Sha256::digest(b));
    x.iter().zip(y.iter()).fold(0u8, |acc, (p, q)| acc | (p ^ q)) == 0
}

pub fn peer_of(request: &Request) -> Option<SocketAddr> {
    request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}

pub fn is_loopback(peer: Option<SocketAddr>) -> bool {
    peer.is_some_and(|p| p.ip().to_canonical().is_loopback())
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// 429 with `Retry-After`.
pub fn too_many(retry_after: Duration) -> Response {
    let error = ApiError {
        retry_after: Some(retry_after),
        ..ApiError::new(ErrorCode::Overloaded, "too many failed authentication attempts; retry later")
    };
    let mut response = error.into_response();
    if let Ok(value) = retry_after.as_secs().max(1).to_string().parse() {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The layer: see the module docs.
pub async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    // Shield mode: a request no route of clawgate's matched is OpenClaw's, relayed as it came;
    // OpenClaw applies its own auth, origin and rate-limit rules to it (`relay::http`).
    if route.is_none() && state.relay.is_some() {
        return next.run(request).await;
    }
    // An unmatched path is no route: 404 for anyone who passes the Host and cross-site checks
    // (a browser's `/favicon.ico` must not count as a failed authentication).
    let exposure = route.as_deref().map_or(Exposure::Public, exposure);
    let peer = peer_of(&request);
    let loopback = is_loopback(peer);
    let auth = &state.auth;
    if exposure == Exposure::Probe {
        return next.run(request).await;
    }
    let host = request.headers().get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !auth.hosts.host_allowed(host) {
        return ApiError::new(
            ErrorCode::NotAllowed,
            "host not allowed (add the name this gateway is reached by with --allowed-host)",
        )
        .into_response();
    }
    if !is_upgrade(request.headers()) {
        if let Some(why) = auth.cross_site(&request, loopback) {
            return ApiError::new(ErrorCode::NotAllowed, why).into_response();
        }
    }
    if let Some(after) = peer.and_then(|p| auth.limiter.blocked(p.ip())) {
        return too_many(after);
    }
    let authorized = auth.check_bearer(request.headers());
    if exposure == Exposure::Private {
        if let Err(error) = authorized {
            state.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
            if let Some(peer) = peer {
                auth.limiter.record_failure(peer.ip());
            }
            return error.into_response();
        }
    }
    request.extensions_mut().insert(Caller { authorized: authorized.is_ok(), loopback });
    next.run(request).await
}

impl AppState {
    /// Checks the bearer token (kept for handlers outside the layer's knowledge; the layer has
    /// already done it for every private route).
    pub fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        self.auth.check_bearer(headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_private_unless_listed() {
        assert_eq!(exposure("/healthz"), Exposure::Probe);
        assert_eq!(exposure("/assets/{file}"), Exposure::Public);
        for private in ["/api/v1/status", "/api/v1/call/{method}", "/metrics", "/api/v1/worker/ping", "/new"]
        {
            assert_eq!(exposure(private), Exposure::Private, "{private}");
        }
    }

    #[test]
    fn bearer_tokens() {
        let auth = Auth::new(Some("s3cret".into()), host::HostPolicy::new(1, &[]).unwrap());
        let mut headers = HeaderMap::new();
        assert!(auth.check_bearer(&headers).is_err());
        headers.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(auth.check_bearer(&headers).is_ok());
        headers.insert(header::AUTHORIZATION, "Bearer s3cret2".parse().unwrap());
        assert!(auth.check_bearer(&headers).is_err());
        assert!(constant_time_eq(b"a", b"a") && !constant_time_eq(b"a", b"ab"));
    }
}
