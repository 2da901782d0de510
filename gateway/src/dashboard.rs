//! The dashboard page, embedded in the binary: no CDN, no build step, works offline.

use axum::response::Html;

static INDEX: &str = include_str!("../assets/index.html");

/// `GET /`
pub async fn index() -> Html<&'static str> {
    Html(INDEX)
}
