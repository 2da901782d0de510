//! The HTTP/1.1 accept loop (in place of `axum::serve`), with the connection cap.
//!
//! Why our own: a WebSocket upgrade must be able to take its socket back as a plain
//! `TcpStream` (see `ws::upgrade`), so that it can move to the bulk runtime's I/O driver.
//! `axum::serve` speaks HTTP/1 and HTTP/2 through a version-sniffing wrapper that an upgraded
//! connection cannot be unwrapped from; nothing here uses HTTP/2 (browsers only speak it over
//! TLS, and OpenClaw's clients use HTTP/1.1 for WebSockets).
//!
//! Every accepted connection takes a [`conns::Slot`]: busy from a request head until its
//! response body is sent, idle otherwise, closed when the cap needs room for a newer one (see
//! `conns`). The slot rides in the request's extensions, so an upgraded WebSocket keeps it.

use std::{
    future::Future,
    net::SocketAddr,
    pin::{Pin, pin},
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, body::Body, extract::ConnectInfo};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::watch};
use tower::ServiceExt as _;

use crate::conns::{ConnLimit, Slot};

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets requests in
/// progress finish (idle keep-alive connections close at once) and returns when every
/// connection is done. Upgraded connections are no longer ours by then and do not hold it up.
/// A connection that has not sent a whole request head within `header_timeout` (counted from
/// when the server starts waiting for one, so also on an idle keep-alive) is closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    conns: Arc<ConnLimit>,
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
                    // Out of file descriptors despite the cap (something else holds them): wait
                    // for some to close instead of spinning.
                    tracing::warn!(%error, "Cannot accept an HTTP connection.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = conns.admit() else {
            tracing::debug!(%peer, "Connection refused: at the connection cap with none idle.");
            continue;
        };
        // No Nagle: a small frame right after another (an event, then a response) must not wait
        // for the client's delayed ACK (40 ms on Linux).
        let _ = tcp.set_nodelay(true);
        tokio::spawn(connection(
            tcp,
            peer,
            app.clone(),
            header_timeout,
            slot,
            stop.subscribe(),
            done_rx.clone(),
        ));
    }
    drop(listener);
    drop(done_rx);
    drop(stop);
    done.closed().await;
}

/// A response body that marks its connection idle once it is sent (or dropped).
struct IdleWhenDone {
    body: Body,
    slot: Option<Slot>,
}

impl Drop for IdleWhenDone {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            slot.idle();
        }
    }
}

impl http_body::Body for IdleWhenDone {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// One connection: HTTP/1.1 with upgrades, the peer address as axum's `ConnectInfo`.
async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    header_timeout: Duration,
    slot: Slot,
    mut stop: watch::Receiver<()>,
    _done: watch::Receiver<()>,
) {
    // HTTP/1.1 serves one request at a time: busy from each head to its body's end.
    let (request_slot, response_slot) = (slot.clone(), slot.clone());
    let service = app
        .map_request(move |mut request: axum::http::Request<Incoming>| {
            request_slot.busy();
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(request_slot.clone());
            request
        })
        .map_response(move |response: axum::response::Response| {
            let slot = Some(response_slot.clone());
            response.map(|body| Body::new(IdleWhenDone { body, slot }))
        });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service))
        .with_upgrades();
    let mut conn = pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = slot.evicted() => {
            tracing::debug!(%peer, "Idle connection closed to make room under the connection cap.");
            return;
        }
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "HTTP connection ended with an error.");
    }
}
