//! The accept loop of every HTTP server of the product (admin endpoints,
//! the sandbox, the notify receiver): axum's router on hyper's HTTP/1
//! connections, with what `axum::serve` lacks (contract §9) — a bound on
//! the time to read a request's headers and on the open connections, so
//! that idle or slow clients cannot starve the server or the process's
//! file descriptors.
//!
//! `serve(listener, app, shutdown)` runs until `shutdown` resolves (the
//! caller decides when: a signal, a test), then lets requests in progress
//! finish for a short while.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::telemetry::metrics::{self, Label, Server};

/// How long a client may take to send a request's headers (also while a
/// kept-alive connection waits for its next request) before the connection
/// is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections open at once; one more is closed as soon as it is accepted,
/// so a flood cannot pile up in the accept backlog either.
pub const MAX_CONNECTIONS: usize = 1024;

/// How long requests in progress may take after the shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` until `shutdown` resolves. `server` labels
/// it in logs and metrics.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    server: Server,
    shutdown: impl Future<Output = ()>,
) {
    let name = server.as_str();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors (or a transient error): wait a moment
                // rather than spin; connections in progress go on.
                tracing::warn!(server = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::http_connection_refused(server);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A client that breaks off mid-request is not the server's error.
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!(
            server = name,
            "connections still open after the drain; closing them"
        );
    }
}
