//! The HTTP/1.1 accept loop (in place of `axum::serve`).
//!
//! Why our own: a WebSocket upgrade must be able to take its socket back as a plain
//! `TcpStream` (see `ws::upgrade`), so that it can move to the bulk runtime's I/O driver.
//! `axum::serve` speaks HTTP/1 and HTTP/2 through a version-sniffing wrapper that an upgraded
//! connection cannot be unwrapped from; nothing here uses HTTP/2 (browsers only speak it over
//! TLS, and OpenClaw's clients use HTTP/1.1 for WebSockets).

use std::{future::Future, net::SocketAddr, pin::pin, time::Duration};

use axum::{Router, extract::ConnectInfo};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::watch};
use tower::ServiceExt as _;

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets requests in
/// progress finish (idle keep-alive connections close at once) and returns when every
/// connection is done. Upgraded connections are no longer ours by then and do not hold it up.
/// A connection that has not sent a whole request head within `header_timeout` (counted from
/// when the server starts waiting for one, so also on an idle keep-alive) is closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    // Drops are the signals: dropping `stop` tells connections to finish, and `done.closed()`
    // resolves once every connection task has dropped its receiver.
    let (stop, _) = watch::channel(());
    let (done, done_rx) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, usually: wait for some to close instead of spinning.
                    tracing::warn!(%error, "Cannot accept an HTTP connection.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // No Nagle: a small frame right after another (an event, then a response) must not wait
        // for the client's delayed ACK (40 ms on Linux).
        let _ = tcp.set_nodelay(true);
        tokio::spawn(connection(tcp, peer, app.clone(), header_timeout, stop.subscribe(), done_rx.clone()));
    }
    drop(listener);
    drop(done_rx);
    drop(stop);
    done.closed().await;
}

/// One connection: HTTP/1.1 with upgrades, the peer address as axum's `ConnectInfo`.
async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    header_timeout: Duration,
    mut stop: watch::Receiver<()>,
    _done: watch::Receiver<()>,
) {
    let service = app.map_request(move |mut request: axum::http::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service))
        .with_upgrades();
    let mut conn = pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "HTTP connection ended with an error.");
    }
}
