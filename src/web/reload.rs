//! `POST /-/reload`: asks the daemon to re-read its configuration.
//!
//! Place in the data flow: part of the web server, the last stage. As in
//! Prometheus, the endpoint is a lifecycle API: it answers 403 unless the
//! daemon runs with `--web.enable-lifecycle` (SIGHUP always reloads), and
//! with the flag it still refuses cross-site requests with 403 (a browser's
//! `Sec-Fetch-Site: cross-site`, or an `Origin` whose host and port are not
//! the request's own `Host`), so that a web page cannot make a visitor's
//! browser reload the exporter.
//!
//! The handler only passes the request to the daemon (which owns the
//! pipeline) over a channel and reports its answer: 200 when the new
//! configuration is in use (or was unchanged, so nothing restarted), 400 with
//! the reason when it was refused and the running one stays. The daemon runs
//! one reload at a time, SIGHUP included; a request that comes while one runs
//! waits for it and then re-reads the file itself. At most
//! [`RELOAD_QUEUE`] requests wait; more get 503 at once.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::{mpsc, oneshot};

use super::WebState;

/// How many reload requests may wait while one runs.
pub const RELOAD_QUEUE: usize = 4;

/// A request to reload, with where to send the outcome: a summary of the new
/// configuration, or why it was refused.
#[derive(Debug)]
pub struct ReloadRequest {
    /// Where the daemon answers.
    pub reply: oneshot::Sender<Result<String, String>>,
}

/// Sends reload requests to the daemon.
pub type ReloadSender = mpsc::Sender<ReloadRequest>;

/// A channel for reload requests, of the size the handler expects.
pub fn reload_channel() -> (ReloadSender, mpsc::Receiver<ReloadRequest>) {
    mpsc::channel(RELOAD_QUEUE)
}

/// The host and port of an origin or authority, lower-cased, with the
/// scheme's default port when none is given.
fn host_port(authority: &str, default_port: u16) -> Option<(String, u16)> {
    let authority: axum::http::uri::Authority = authority.parse().ok()?;
    let port = authority.port_u16().unwrap_or(default_port);
    Some((authority.host().to_ascii_lowercase(), port))
}

/// Why the request comes from another site, if it does.
fn cross_site(headers: &HeaderMap, uri: &Uri) -> Option<&'static str> {
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("cross-site"))
    {
        return Some("the request is cross-site (Sec-Fetch-Site)");
    }
    let origin = headers.get(header::ORIGIN)?;
    let Some((scheme, rest)) = origin.to_str().ok().and_then(|o| o.split_once("://")) else {
        return Some("the request's Origin is not this server");
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return Some("the request's Origin is not this server"),
    };
    let from = host_port(rest.trim_end_matches('/'), default_port);
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| uri.authority().map(ToString::to_string));
    let to = host.and_then(|h| host_port(&h, default_port));
    match (from, to) {
        (Some(from), Some(to)) if from == to => None,
        _ => Some("the request's Origin is not this server"),
    }
}

fn refused(status: StatusCode, reason: &str) -> Response {
    (status, format!("reload refused: {reason}\n")).into_response()
}

pub(super) async fn reload(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if !state.lifecycle {
        return refused(
            StatusCode::FORBIDDEN,
            "lifecycle APIs are not enabled; start with --web.enable-lifecycle, or send SIGHUP",
        );
    }
    if let Some(reason) = cross_site(&headers, &uri) {
        return refused(StatusCode::FORBIDDEN, reason);
    }
    let Some(sender) = &state.reload else {
        return refused(
            StatusCode::BAD_REQUEST,
            "this process has no configuration file to re-read",
        );
    };
    let (reply, answer) = oneshot::channel();
    match sender.try_send(ReloadRequest { reply }) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            return refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many reloads are waiting; try again",
            );
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            return refused(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
        }
    }
    match answer.await {
        Ok(Ok(summary)) => (StatusCode::OK, format!("{summary}\n")).into_response(),
        Ok(Err(reason)) => (
            StatusCode::BAD_REQUEST,
            format!("reload refused, the running configuration stays: {reason}\n"),
        )
            .into_response(),
        Err(_) => refused(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pairs: &[(&str, &str)]) -> Option<&'static str> {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        cross_site(&headers, &Uri::from_static("/-/reload"))
    }

    #[test]
    fn same_origin_and_non_browser_requests_pass_cross_site_ones_do_not() {
        // curl: no Origin, no Sec-Fetch-Site.
        assert_eq!(check(&[("host", "localhost:9929")]), None);
        assert_eq!(
            check(&[
                ("host", "LocalHost:9929"),
                ("origin", "http://localhost:9929"),
                ("sec-fetch-site", "same-origin"),
            ]),
            None
        );
        // Default ports.
        assert_eq!(
            check(&[("host", "exporter"), ("origin", "http://exporter")]),
            None
        );
        assert_eq!(
            check(&[("host", "exporter:443"), ("origin", "https://exporter")]),
            None
        );
        assert!(check(&[("host", "localhost:9929"), ("sec-fetch-site", "cross-site")]).is_some());
        assert!(
            check(&[
                ("host", "localhost:9929"),
                ("origin", "http://evil.example")
            ])
            .is_some()
        );
        assert!(
            check(&[
                ("host", "localhost:9929"),
                ("origin", "http://localhost:8080")
            ])
            .is_some()
        );
        assert!(check(&[("host", "localhost:9929"), ("origin", "null")]).is_some());
        assert!(
            check(&[("origin", "http://localhost:9929")]).is_some(),
            "no Host"
        );
    }
}
