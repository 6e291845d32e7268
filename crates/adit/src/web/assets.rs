//! The page's files, embedded at build time (`crates/adit/web/`), served
//! with a strict content security policy: nothing loads from elsewhere.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../../web/index.html");
const SCRIPT: &str = include_str!("../../web/app.js");
const STYLE: &str = include_str!("../../web/app.css");

/// Bytes of the page as first loaded (HTML, script, style).
pub const PAGE_BYTES: usize = INDEX.len() + SCRIPT.len() + STYLE.len();

fn file(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            ),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

pub async fn index() -> Response {
    file(INDEX, "text/html; charset=utf-8")
}

pub async fn asset(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "app.js" => file(SCRIPT, "text/javascript; charset=utf-8"),
        "app.css" => file(STYLE, "text/css; charset=utf-8"),
        _ => (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    }
}
