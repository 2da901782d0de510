//! The WebSocket upgrade at `/` and `/ws`: RFC 6455 checks, the browser `Origin` judged (and
//! enforced at `connect`, with OpenClaw's error), the socket taken back from hyper and run on the
//! bulk runtime. `Host` and the failed-auth limiter were already checked by the auth layer.

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use hyper_util::rt::TokioIo;
use tungstenite::handshake::derive_accept_key;

use super::{conn, connect::OriginCheck};
use crate::{AppState, auth, conns::Slot};

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// `GET /`: the dashboard for browsers, the protocol for WebSocket upgrades (as OpenClaw's port).
pub async fn root(State(state): State<AppState>, request: Request) -> Response {
    if is_upgrade(request.headers()) {
        upgrade(state, request).await
    } else {
        crate::dashboard::index().await.into_response()
    }
}

/// `GET /ws`: WebSocket only.
pub async fn ws_only(State(state): State<AppState>, request: Request) -> Response {
    if is_upgrade(request.headers()) {
        upgrade(state, request).await
    } else {
        (StatusCode::UPGRADE_REQUIRED, "this endpoint speaks OpenClaw's protocol v4 over WebSocket\n")
            .into_response()
    }
}

/// Checks an upgrade request (RFC 6455 §4.2.1) and returns its `Sec-WebSocket-Accept`.
fn accept_key(request: &Request) -> Result<String, (StatusCode, &'static str)> {
    let refuse = |status: StatusCode, why: &'static str| Err((status, why));
    if request.method() != Method::GET {
        return refuse(StatusCode::METHOD_NOT_ALLOWED, "a WebSocket upgrade must be a GET");
    }
    let headers = request.headers();
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if !connection_upgrade {
        return refuse(StatusCode::BAD_REQUEST, "Connection header did not include 'upgrade'");
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v.as_bytes() != b"13") {
        return refuse(StatusCode::BAD_REQUEST, "Sec-WebSocket-Version must be 13");
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return refuse(StatusCode::BAD_REQUEST, "Sec-WebSocket-Key header missing");
    };
    if request.extensions().get::<hyper::upgrade::OnUpgrade>().is_none() {
        return refuse(StatusCode::UPGRADE_REQUIRED, "this connection cannot be upgraded");
    }
    Ok(derive_accept_key(key.as_bytes()))
}

async fn upgrade(state: AppState, request: Request) -> Response {
    let accept = match accept_key(&request) {
        Ok(accept) => accept,
        Err((status, why)) => return (status, format!("{why}\n")).into_response(),
    };
    let peer = auth::peer_of(&request);
    let headers = request.headers();
    let origin = match headers.get(header::ORIGIN) {
        None => OriginCheck::Absent,
        Some(origin) => {
            let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
            let allowed = origin
                .to_str()
                .is_ok_and(|o| state.auth.hosts.origin_allowed(o, host, auth::is_loopback(peer)));
            if allowed { OriginCheck::Allowed } else { OriginCheck::Refused }
        }
    };
    let Some(slot) = request.extensions().get::<Slot>().cloned() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "connection not admitted\n").into_response();
    };
    let on_upgrade = hyper::upgrade::on(request);
    let runtime = state.config.bulk_runtime.clone();
    let run = async move {
        tracing::debug!(peer = ?peer, "WebSocket upgrade waiting for hyper.");
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => return tracing::debug!(%error, "WebSocket upgrade did not complete."),
        };
        // Take the socket back from hyper and register it with the I/O driver of the runtime
        // this runs on: every frame and ACK of a big answer then wakes only these threads.
        let parts = match upgraded.downcast::<TokioIo<tokio::net::TcpStream>>() {
            Ok(parts) => parts,
            Err(_) => return tracing::error!("WebSocket upgrade on an unexpected connection type; closed."),
        };
        let tcp = match parts.io.into_inner().into_std().and_then(tokio::net::TcpStream::from_std) {
            Ok(tcp) => tcp,
            Err(error) => return tracing::warn!(%error, "Cannot move an upgraded WebSocket; closed."),
        };
        conn::run(tcp, parts.read_buf.to_vec(), state, peer, origin, slot).await;
    };
    match runtime {
        Some(runtime) => drop(runtime.spawn(run)),
        None => drop(tokio::spawn(run)),
    }
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
