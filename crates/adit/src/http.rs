//! The HTTP endpoint: `/metrics` (Prometheus text format), `/healthz`
//! (the pipeline is running) and `/readyz` (running, sink open, last sink write
//! succeeded).

use std::sync::Arc;

use adit_pipeline::{Health, Metrics};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, TextEncoder};
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Metrics,
    pub health: Arc<Health>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

pub async fn serve(listener: tokio::net::TcpListener, state: HttpState, stop: CancellationToken) {
    let result = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "http endpoint stopped");
    }
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    let mut body = Vec::with_capacity(16 * 1024);
    match TextEncoder::new().encode(&state.metrics.registry.gather(), &mut body) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            format!("cannot encode metrics: {e}").into_bytes(),
        ),
    }
}

async fn healthz(State(state): State<HttpState>) -> impl IntoResponse {
    if state.health.is_live() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "pipeline not running\n")
    }
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    if state.health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: pipeline stopped, sink not open, or sink failing\n",
        )
    }
}
