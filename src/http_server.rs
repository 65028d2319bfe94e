//! The accept loop of every HTTP server of the product (admin endpoints,
//! the sandbox, the notify receiver): axum's router on hyper's HTTP/1
//! connections, with what `axum::serve` lacks (contract §9) — bounds on
//! the open connections, on the bytes of a request head, on the time to
//! read it and on the time to read a request body, so that idle, slow or
//! bloated clients cannot starve the server, the process's file
//! descriptors or its memory.
//!
//! What one connection can hold is then bounded: a read buffer of at most
//! [`MAX_HEAD_BYTES`] (hyper's default is ~400 KiB), the head it parsed,
//! and what its handler buffers of the body (the receiver: at most
//! `notify.body_limit_bytes`) for at most [`BODY_READ_TIMEOUT`]. Times
//! [`MAX_CONNECTIONS`], that stays within the receiver's pod limit in
//! deploy/ (OPERATIONS.md, "Memory at the connection cap").
//!
//! `serve(listener, app, shutdown)` runs until `shutdown` resolves (the
//! caller decides when: a signal, a test), then lets requests in progress
//! finish for a short while.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};

use crate::telemetry::metrics::{self, Label, Server};

/// How long a client may take to send a request's headers (also while a
/// kept-alive connection waits for its next request) before the connection
/// is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client may take to send a request's body, counted from the
/// end of its head: a body still incomplete then is answered 408 and the
/// connection closed. The same for every server (contract §9).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request head (request line and header fields together) a
/// server reads; a longer one is answered 431 and the connection closed
/// (contract §9). Also the most a connection buffers of what it reads.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Connections open at once; one more is closed as soon as it is accepted,
/// so a flood cannot pile up in the accept backlog either.
pub const MAX_CONNECTIONS: usize = 1024;

/// How long requests in progress may take after the shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// A listener on a free loopback port, and its address: how the demo's
/// sandbox and receiver, and the stand-in servers of the tests, listen.
pub async fn loopback() -> std::io::Result<(TcpListener, std::net::SocketAddr)> {
    let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

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
        .max_header_size(MAX_HEAD_BYTES)
        // hyper's read buffer grows to ~400 KiB by default, heads or not.
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    let router = TowerToHyperService::new(app);
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
        let router = router.clone();
        let service = hyper::service::service_fn(move |request| timed(router.clone(), request));
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

/// One request, its body read within [`BODY_READ_TIMEOUT`]: when the body
/// did not come in time (the handler saw [`BodyReadTimeout`]), the answer
/// is 408 and the connection is closed, whatever the handler made of the
/// error.
async fn timed(
    router: TowerToHyperService<Router>,
    request: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    use hyper::service::Service as _;
    let (parts, body) = request.into_parts();
    let body = DeadlineBody::new(body, Instant::now() + BODY_READ_TIMEOUT);
    let expired = body.expired.clone();
    let mut response = router.call(Request::from_parts(parts, body)).await?;
    if expired.load(Ordering::Relaxed) {
        tracing::debug!("request body not received in time: 408");
        if response.status() != StatusCode::REQUEST_TIMEOUT {
            response = Response::new(Body::from("request body not received in time\n"));
            *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
        }
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(response)
}

/// The error a request body yields once [`BODY_READ_TIMEOUT`] has passed
/// before its end; handlers may look for it in an error's sources.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within {} s", BODY_READ_TIMEOUT.as_secs())]
pub struct BodyReadTimeout;

impl BodyReadTimeout {
    /// Whether `error` (or one of its sources) is a body read timeout.
    pub fn caused(error: &(dyn std::error::Error + 'static)) -> bool {
        let mut cause = Some(error);
        while let Some(e) = cause {
            if e.is::<BodyReadTimeout>() {
                return true;
            }
            cause = e.source();
        }
        false
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body that fails with [`BodyReadTimeout`] when it has not
/// ended by `deadline`. Its timer is made only when a read has to wait, so
/// a request without a body costs none.
struct DeadlineBody {
    inner: Incoming,
    deadline: Instant,
    timer: Option<Pin<Box<Sleep>>>,
    /// Set once the timeout was handed to the reader.
    expired: Arc<AtomicBool>,
}

impl DeadlineBody {
    fn new(inner: Incoming, deadline: Instant) -> Self {
        DeadlineBody {
            inner,
            deadline,
            timer: None,
            expired: Arc::new(AtomicBool::new(false)),
        }
    }

    fn expire(&self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.expired.store(true, Ordering::Relaxed);
        Poll::Ready(Some(Err(Box::new(BodyReadTimeout))))
    }
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        // A trickle that always has a byte ready is cut off too.
        if let Some(timer) = &mut this.timer
            && timer.as_mut().poll(cx).is_ready()
        {
            return this.expire();
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(BoxError::from)));
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => this.expire(),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
