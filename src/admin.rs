//! Health and metrics (contract §9): `/healthz` while the process runs,
//! `/readyz` only while consuming with RabbitMQ and Redis reachable (a
//! Redis PING no older than two seconds, also when idle), `/metrics` in
//! Prometheus text format.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;
use tokio::time::Instant;

use crate::claim::ClaimStore;
use crate::gateway::breaker::Breaker;

/// How fresh the last good Redis PING must be for readiness.
pub const REDIS_FRESHNESS: Duration = Duration::from_secs(2);
const PING_EVERY: Duration = Duration::from_millis(500);
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// What readiness is made of; shared by a process and its admin server.
pub struct Health {
    /// The worker: consuming intents. The notify receiver: connected to
    /// RabbitMQ with a publisher ready.
    consuming: AtomicBool,
    stopping: AtomicBool,
    redis_ok_at: Mutex<Option<Instant>>,
    /// The worker's gateway breaker (shown, never a reason to be unready).
    breaker: Option<Arc<Breaker>>,
}

impl Health {
    /// The worker's health.
    pub fn new(breaker: Arc<Breaker>) -> Self {
        Health {
            consuming: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            redis_ok_at: Mutex::new(None),
            breaker: Some(breaker),
        }
    }

    /// The notify receiver's health: RabbitMQ connected, Redis reachable.
    pub fn receiver() -> Self {
        Health {
            consuming: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            redis_ok_at: Mutex::new(None),
            breaker: None,
        }
    }

    pub fn set_consuming(&self, on: bool) {
        self.consuming.store(on, Ordering::SeqCst);
    }

    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    pub fn redis_ok(&self) {
        *self.redis_ok_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Readiness and its reasons.
    pub fn readiness(&self) -> (bool, serde_json::Value) {
        let consuming = self.consuming.load(Ordering::SeqCst);
        let stopping = self.stopping.load(Ordering::SeqCst);
        let last = *self.redis_ok_at.lock().unwrap_or_else(|p| p.into_inner());
        let age = last.map(|t| t.elapsed());
        let redis = age.is_some_and(|a| a <= REDIS_FRESHNESS);
        let ready = consuming && redis && !stopping;
        let redis =
            json!({"reachable": redis, "last_ping_ms_ago": age.map(|a| a.as_millis() as u64)});
        let detail = match &self.breaker {
            Some(b) => json!({
                "ready": ready,
                "stopping": stopping,
                "amqp": {"consuming": consuming},
                "redis": redis,
                "breaker": b.state().as_str(),
            }),
            None => json!({
                "ready": ready,
                "stopping": stopping,
                "amqp": {"connected": consuming},
                "redis": redis,
            }),
        };
        (ready, detail)
    }
}

/// Pings Redis every half second and records the last success.
pub async fn ping_redis(claims: ClaimStore, health: Arc<Health>) {
    loop {
        if let Ok(Ok(())) = tokio::time::timeout(PING_TIMEOUT, claims.ping()).await {
            health.redis_ok();
        }
        let (ready, _) = health.readiness();
        crate::telemetry::metrics::ready(ready);
        tokio::time::sleep(PING_EVERY).await;
    }
}

pub fn app(health: Arc<Health>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(health)
}

async fn readyz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    let (ready, detail) = health.readiness();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(detail))
}

async fn metrics_text() -> impl IntoResponse {
    let body = crate::telemetry::recorder()
        .map(|h| h.render())
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// Binds the admin server; the returned future serves until dropped.
pub async fn bind(
    listen: &str,
    health: Arc<Health>,
) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = ()> + use<>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    // Served until the task is dropped: probes must answer to the end.
    let serve = crate::http_server::serve(
        listener,
        app(health),
        crate::telemetry::metrics::Server::Admin,
        std::future::pending(),
    );
    Ok((addr, serve))
}

/// Keeps histograms from growing without bound.
pub async fn metrics_upkeep() {
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        if let Some(h) = crate::telemetry::recorder() {
            h.run_upkeep();
        }
    }
}
