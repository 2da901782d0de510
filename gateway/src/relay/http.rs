//! The HTTP half of shield mode: every request clawgate does not serve itself goes to the
//! upstream unchanged (method, path, headers, body), and its answer comes back unchanged, bodies
//! streamed both ways through hyper (bounded buffers: a slow side slows the other). WebSocket
//! upgrades go to `conn`.
//!
//! Changed on the way, and only these: hop-by-hop headers (RFC 9110 §7.6.1), which belong to one
//! connection; and, for a client not on loopback, the forwarded-for headers. OpenClaw treats a
//! loopback peer without forwarded headers as a local client (device auto-pairing, no device
//! identity needed for backends, no failed-auth limit). Behind clawgate every peer it sees is
//! loopback, so for a remote client clawgate replaces whatever `Forwarded`, `X-Forwarded-*`,
//! `X-Real-IP` and `Tailscale-*` headers it sent with `X-Forwarded-For: <its address>`: OpenClaw
//! then attributes the request to that address when `gateway.trustedProxies` names clawgate's,
//! and refuses it (`proxy_attribution_required`) when not. A loopback client's request is passed
//! as it came, so OpenClaw sees exactly what it would have seen without clawgate.

use std::{error::Error as _, net::SocketAddr, sync::Arc};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};

use super::{Counters, Relay};
use crate::{AppState, auth};

/// Headers that describe one connection, never passed on (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Removes hop-by-hop headers, and those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// The request headers sent on to the upstream (see the module doc). `upgrade`: a WebSocket
/// upgrade, which keeps `Connection: upgrade` and `Upgrade: websocket`.
pub fn prepare_request_headers(headers: &mut HeaderMap, peer: Option<SocketAddr>, upgrade: bool) {
    strip_hop_by_hop(headers);
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    if auth::is_loopback(peer) {
        return;
    }
    let forwarded: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            name == "forwarded"
                || name == "x-real-ip"
                || name.starts_with("x-forwarded-")
                || name.starts_with("tailscale-")
        })
        .cloned()
        .collect();
    for name in forwarded {
        headers.remove(name);
    }
    if let Some(ip) = peer.map(|p| p.ip().to_canonical()) {
        if let Ok(value) = HeaderValue::from_str(&ip.to_string()) {
            headers.insert("x-forwarded-for", value);
        }
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        if let Some(host) = headers.get(header::HOST).cloned() {
            headers.insert("x-forwarded-host", host);
        }
    }
}

/// An error with its causes, `a: b: c` (hyper's own text is only "client error (Connect)").
pub fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// 502: the upstream could not be reached. clawgate's own routes keep answering.
pub fn bad_gateway(relay: &Relay, why: &str) -> Response {
    Counters::count(&relay.counters.http_failures);
    tracing::debug!(upstream = %relay.upstream.url, why, "Relayed request failed.");
    let body = format!(
        "502 Bad Gateway: clawgate could not reach the OpenClaw gateway at {} ({why}).\n\
         clawgate's own /healthz, /readyz, /api/v1/* and its dashboard at {}/ keep working.\n",
        relay.upstream.url,
        super::DASHBOARD_PREFIX
    );
    (StatusCode::BAD_GATEWAY, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// The router's fallback in shield mode: every request no clawgate route matched.
pub async fn fallback(State(state): State<AppState>, request: Request) -> Response {
    let Some(relay) = state.relay.clone() else { return StatusCode::NOT_FOUND.into_response() };
    let peer = auth::peer_of(&request);
    if is_upgrade(request.headers()) {
        return super::conn::upgrade(state, relay, request, peer).await;
    }
    relay_http(&relay, request, peer).await
}

async fn relay_http(relay: &Arc<Relay>, request: Request, peer: Option<SocketAddr>) -> Response {
    Counters::count(&relay.counters.http_requests);
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = match Uri::builder()
        .scheme("http")
        .authority(relay.upstream.authority.as_str())
        .path_and_query(path)
        .build()
    {
        Ok(uri) => uri,
        Err(error) => return bad_gateway(relay, &error.to_string()),
    };
    prepare_request_headers(&mut parts.headers, peer, false);
    // The request's own extensions (the connection slot, the peer) stay here.
    parts.extensions = Default::default();
    match relay.client.request(Request::from_parts(parts, body)).await {
        Ok(response) => {
            let mut response = response.map(Body::new);
            strip_hop_by_hop(response.headers_mut());
            response
        }
        Err(error) => {
            // A connect error is the upstream's absence; anything else (a reset mid-answer) too,
            // as far as this client is concerned.
            let why = error.source().map_or_else(|| error.to_string(), describe);
            bad_gateway(relay, &why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(list: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in list {
            map.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        map
    }

    #[test]
    fn hop_by_hop_headers_stay_behind() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("authorization", "Bearer t"),
            ("host", "127.0.0.1:18789"),
        ]);
        prepare_request_headers(&mut h, Some("127.0.0.1:5000".parse().unwrap()), false);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h["authorization"], "Bearer t");
        assert_eq!(h["host"], "127.0.0.1:18789", "Host goes on unchanged");
    }

    #[test]
    fn remote_clients_are_attributed_and_cannot_claim_another_address() {
        let spoofed = [
            ("host", "gw.example:18789"),
            ("x-forwarded-for", "127.0.0.1"),
            ("forwarded", "for=127.0.0.1"),
            ("x-real-ip", "127.0.0.1"),
            ("tailscale-user-login", "owner@example"),
            ("origin", "http://gw.example:18789"),
        ];
        let mut h = headers(&spoofed);
        prepare_request_headers(&mut h, Some("[::ffff:192.0.2.7]:4000".parse().unwrap()), false);
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "gw.example:18789");
        assert!(h.get("forwarded").is_none() && h.get("x-real-ip").is_none());
        assert!(h.get("tailscale-user-login").is_none());
        assert_eq!(h["origin"], "http://gw.example:18789");
        // A loopback client's request goes as it came: OpenClaw judges it as it would directly.
        let mut h = headers(&spoofed);
        prepare_request_headers(&mut h, Some("127.0.0.1:4000".parse().unwrap()), true);
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h["tailscale-user-login"], "owner@example");
        assert_eq!(
            (&h["connection"], &h["upgrade"]),
            (&HeaderValue::from_static("upgrade"), &HeaderValue::from_static("websocket"))
        );
    }
}
