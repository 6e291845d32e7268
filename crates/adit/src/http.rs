//! The HTTP endpoint: `/metrics` (Prometheus text format), `/healthz`
//! (the pipeline is running), `/readyz` (running, and every sink open with
//! its last write succeeded; the JSON body names each sink and the failing
//! ones), and the live state as JSON:
//! - `GET /api/points[?device=ID][&quality=good|uncertain|bad|stale]`
//! - `GET /api/points/{id}` (404 for an unknown point)
//!
//! Every point carries its last value (kept while bad or stale), quality,
//! reason, source and receive times, age in ms and a stale flag.
//!
//! The control-room page (`/`, `/assets/*`, `/events`, `/api/trends`, see
//! [`crate::web`]) and `/api` sit behind [`crate::web::access`]: optional
//! credentials, and every access in the audit log. `/metrics`, `/healthz`
//! and `/readyz` stay open for probes and scrapers.

use std::sync::{Arc, Mutex, PoisonError};

use adit_core::{PointId, PointRegistry, Value};
use adit_pipeline::{Health, LiveState, Metrics, PointState};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use axum::Router;
use prometheus::{Encoder, TextEncoder};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::web::access::Gate;
use crate::web::feed::Feed;

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Metrics,
    pub health: Arc<Health>,
    pub live: Arc<Mutex<LiveState>>,
    pub registry: Arc<PointRegistry>,
}

/// The control-room page's parts: `None` when `http.page = false`.
pub struct PageParts {
    pub feed: Option<Arc<Feed>>,
    pub gate: Arc<Gate>,
}

pub fn router(state: HttpState, page: PageParts) -> Router {
    let mut guarded = Router::new()
        .route("/api/points", get(points))
        .route("/api/points/{id}", get(point))
        .with_state(state.clone());
    // The page's shell (HTML, JS, CSS: no site data) is open under a bearer
    // token, so a browser can load it and ask for the token before it opens
    // the event stream; under basic auth it is guarded too, so the browser
    // asks for the credentials itself.
    let mut shell = Router::new();
    if let Some(feed) = page.feed {
        shell = shell
            .route("/", get(crate::web::assets::index))
            .route("/assets/{name}", get(crate::web::assets::asset));
        guarded = guarded.merge(
            Router::new()
                .route("/events", get(crate::web::events::events))
                .route("/api/trends", get(crate::web::events::trends))
                .with_state(feed),
        );
    }
    let shell_guarded = page.gate.browser_asks_for_credentials();
    let open_shell = if shell_guarded {
        guarded = guarded.merge(shell);
        None
    } else {
        Some(shell)
    };
    let guarded = guarded.route_layer(axum::middleware::from_fn_with_state(
        page.gate,
        crate::web::access::guard,
    ));
    let open = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state);
    let open = match open_shell {
        Some(shell) => open.merge(shell),
        None => open,
    };
    open.merge(guarded)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointFilter {
    device: Option<String>,
    quality: Option<String>,
}

fn point_json(
    id: PointId,
    meta: &adit_core::PointMeta,
    state: &PointState,
    stale: bool,
    now: std::time::Instant,
) -> serde_json::Value {
    let value = match &state.value {
        None => serde_json::Value::Null,
        Some(Value::F64(v)) => serde_json::json!(v),
        Some(Value::I64(v)) => serde_json::json!(v),
        Some(Value::Bool(v)) => serde_json::json!(v),
        Some(Value::Text(t)) => serde_json::json!(t.as_ref()),
    };
    let seen = state.updated_at.is_some();
    serde_json::json!({
        "id": meta.name.as_ref(),
        "index": id.0,
        "device": meta.device.as_ref(),
        "unit": meta.unit.as_ref(),
        "value": value,
        "quality": if seen { state.quality.class().name() } else { "never" },
        "reason": state.quality.reason().map(adit_core::Reason::name),
        "reason_code": state.quality.reason().and_then(adit_core::Reason::detail),
        "stale": stale,
        "source_ts": seen.then(|| state.source_ts.to_rfc3339()),
        "received_ts": seen.then(|| state.received_ts.to_rfc3339()),
        "age_ms": state.updated_at.map(|t| now.saturating_duration_since(t).as_millis() as u64),
        "value_age_ms": state.value_at.map(|t| now.saturating_duration_since(t).as_millis() as u64),
        "readings": state.readings,
    })
}

async fn points(
    State(state): State<HttpState>,
    Query(filter): Query<PointFilter>,
) -> impl IntoResponse {
    let now = tokio::time::Instant::now().into_std();
    let live = state.live.lock().unwrap_or_else(PoisonError::into_inner);
    let list: Vec<serde_json::Value> = state
        .registry
        .iter()
        .filter(|(_, m)| {
            filter
                .device
                .as_deref()
                .is_none_or(|d| d == m.device.as_ref())
        })
        .filter_map(|(id, m)| {
            let s = live.get(id)?;
            let stale = live.is_stale(id);
            let keep = match filter.quality.as_deref() {
                None => true,
                Some("stale") => stale,
                Some("never") => s.updated_at.is_none(),
                Some(q) => s.updated_at.is_some() && s.quality.class().name() == q,
            };
            keep.then(|| point_json(id, m, s, stale, now))
        })
        .collect();
    Json(serde_json::json!({ "points": list, "count": list.len() }))
}

async fn point(State(state): State<HttpState>, Path(name): Path<String>) -> Response {
    let now = tokio::time::Instant::now().into_std();
    let Some(id) = state.registry.id_of(&name) else {
        return (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": format!("no point {name:?}") })),
        )
            .into_response();
    };
    let live = state.live.lock().unwrap_or_else(PoisonError::into_inner);
    match (state.registry.get(id), live.get(id)) {
        (Some(m), Some(s)) => Json(point_json(id, m, s, live.is_stale(id), now)).into_response(),
        _ => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": format!("no point {name:?}") })),
        )
            .into_response(),
    }
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    page: PageParts,
    stop: CancellationToken,
) {
    let app = router(state, page).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let result = axum::serve(listener, app)
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

/// 200 when every sink is ready, else 503; the JSON body names each sink,
/// whether it is ready, how long it has been failing and its last error.
async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    let sinks: Vec<serde_json::Value> = state
        .health
        .sinks()
        .into_iter()
        .map(|s| {
            serde_json::json!({
                "sink": s.sink,
                "ready": s.ready && s.failing_for.is_none(),
                "failing_for_s": s.failing_for.map(|d| d.as_secs_f64()),
                "last_error": s.failing_for.map(|_| s.last_error),
            })
        })
        .collect();
    let ready = state.health.is_ready();
    let failing: Vec<&str> = sinks
        .iter()
        .filter(|s| s["ready"] == false)
        .filter_map(|s| s["sink"].as_str())
        .collect();
    let body = serde_json::json!({
        "ready": ready,
        "live": state.health.is_live(),
        "failing": failing,
        "sinks": sinks,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
