//! The metrics endpoint: `GET /metrics` over HTTP/1.1 in the OpenMetrics
//! text format, on a listener of its own (`--metrics-listen`), apart from
//! the gRPC port so a scraper needs no HTTP/2.

use std::{future::Future, sync::Arc};

use axum::{http::header, http::StatusCode, response::IntoResponse, routing::get, Router};
use tokio::net::TcpListener;

use super::metrics::Metrics;

/// What Prometheus expects of the OpenMetrics text format.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `metrics` on `listener` until `stop` completes.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                match metrics.render() {
                    Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
                    Err(_) => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the metrics could not be encoded",
                    )
                        .into_response(),
                }
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
}
