//! `POST /-/reload`: asks the daemon to re-read its configuration.
//!
//! Place in the data flow: part of the web server, the last stage. The
//! handler only passes the request to the daemon (which owns the pipeline)
//! over a channel and reports its answer: 200 when the new configuration is
//! in use, 400 with the reason when it was refused and the running one stays.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::sync::{mpsc, oneshot};

use super::WebState;

/// A request to reload, with where to send the outcome: a summary of the new
/// configuration, or why it was refused.
#[derive(Debug)]
pub struct ReloadRequest {
    /// Where the daemon answers.
    pub reply: oneshot::Sender<Result<String, String>>,
}

/// Sends reload requests to the daemon.
pub type ReloadSender = mpsc::Sender<ReloadRequest>;

pub(super) async fn reload(State(state): State<Arc<WebState>>) -> Response {
    let Some(sender) = &state.reload else {
        return (
            StatusCode::BAD_REQUEST,
            "reload refused: this process has no configuration file to re-read\n",
        )
            .into_response();
    };
    let (reply, answer) = oneshot::channel();
    if sender.send(ReloadRequest { reply }).await.is_err() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "reload refused: shutting down\n",
        )
            .into_response();
    }
    match answer.await {
        Ok(Ok(summary)) => (StatusCode::OK, format!("{summary}\n")).into_response(),
        Ok(Err(reason)) => (
            StatusCode::BAD_REQUEST,
            format!("reload refused, the running configuration stays: {reason}\n"),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "reload refused: shutting down\n",
        )
            .into_response(),
    }
}
