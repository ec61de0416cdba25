//! The HTTP server: `/metrics`, `/ready`, `/targets`, `/api/v1/targets` and `POST /reload`.

use crate::acknowledge::Acknowledger;
use crate::metrics::Metrics;
use crate::status::{self, StatusBoard};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{mpsc, oneshot};

/// What the handlers read.
#[derive(Clone)]
pub struct ServerState {
    pub metrics: Arc<Metrics>,
    pub status: Arc<StatusBoard>,
    pub acks: Arc<Acknowledger>,
    /// Where `POST /reload` asks for a reload; None when the endpoint is not enabled.
    pub reload: Option<mpsc::Sender<ReloadRequest>>,
    /// Set once the config is loaded and the targets run (even if no file matches yet).
    pub ready: Arc<AtomicBool>,
}

pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/ready", get(ready))
        .route("/targets", get(targets_page))
        .route("/api/v1/targets", get(targets_json))
        .route("/reload", post(reload))
        .with_state(state)
}

async fn metrics(State(state): State<ServerState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn targets_page(State(state): State<ServerState>) -> impl IntoResponse {
    let overview = state.status.overview(&state.acks);
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        status::render_html(&overview),
    )
}

async fn targets_json(State(state): State<ServerState>) -> impl IntoResponse {
    let overview = state.status.overview(&state.acks);
    let body = serde_json::to_string_pretty(&overview)
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    ([(header::CONTENT_TYPE, "application/json")], body)
}

/// A reload asked for over HTTP, answered with the outcome.
pub type ReloadRequest = oneshot::Sender<Result<(), String>>;

async fn reload(State(state): State<ServerState>) -> impl IntoResponse {
    let Some(requests) = state.reload else {
        return (
            StatusCode::FORBIDDEN,
            "reloading over HTTP is off; start logferry with -server.enable-runtime-reload\n"
                .to_string(),
        );
    };
    let (reply, outcome) = oneshot::channel();
    if requests.send(reply).await.is_err() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down\n".to_string(),
        );
    }
    match outcome.await {
        Ok(Ok(())) => (StatusCode::OK, "config reloaded\n".to_string()),
        Ok(Err(e)) => (StatusCode::BAD_REQUEST, format!("config rejected: {e}\n")),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down\n".to_string(),
        ),
    }
}

async fn ready(State(state): State<ServerState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Binds the listener (so a taken port is an error at start, not later).
pub async fn bind(address: &str, port: u16) -> anyhow::Result<tokio::net::TcpListener> {
    let host = if address.is_empty() {
        "0.0.0.0"
    } else {
        address
    };
    let addr: SocketAddr = tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or_else(|| {
            anyhow::anyhow!("server.http_listen_address {host:?} resolves to nothing")
        })?;
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {addr} (server.http_listen_address/http_listen_port): {e}"
        )
    })
}
