//! The HTTP server: `/metrics`, the landing page, health, readiness and
//! `/status`, optionally behind TLS and basic auth (`--web.config.file`).
//!
//! Place in the data flow: last. Handlers only read memory (the metrics
//! module's exposition and the scopes' status); no request ever reaches the
//! HSS API. `/metrics` is gzip-compressed when the client accepts it. With a
//! web configuration ([`config`]), every request first passes basic auth and
//! gets the configured headers (`auth`), over TLS when a certificate is
//! configured (`tls`); the configuration is re-read when its files change
//! (`watch`). In front of all that, the connection loop (`server`) holds
//! every client to [`ServerLimits`]: header-read, idle and TLS handshake
//! timeouts and a cap on open connections.

pub mod config;

mod auth;
mod server;
mod tls;
mod watch;

use std::fmt::Write as _;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::collect::{Lane, LaneStatus, Published, ScopeSet};
use crate::hss::Budget;
use crate::metrics::{CONTENT_TYPE, Metrics};

pub mod reload;

pub use reload::{RELOAD_QUEUE, ReloadRequest, ReloadSender, reload_channel};

pub use config::{ClientAuth, WebConfig, load_web_config};
pub use server::{MAX_BUFFER_BYTES, MAX_CONNECTIONS_LIMIT, ServerLimits};

/// The web server could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Serving failed.
    #[error("HTTP server: {0}")]
    Serve(#[from] std::io::Error),
    /// The web configuration file is invalid.
    #[error("invalid web configuration {path}: {source}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: config::Error,
    },
}

/// What the handlers read.
#[derive(Debug, Clone)]
pub struct WebState {
    /// The exposition.
    pub metrics: Arc<Metrics>,
    /// The scopes, for status and readiness.
    pub scopes: Arc<ScopeSet>,
    /// The request budgets, named by the API they guard.
    pub budgets: Vec<(String, Arc<Budget>)>,
    /// Where `/metrics` is served.
    pub telemetry_path: String,
    /// Where `POST /-/reload` sends its requests; `None` when there is no
    /// configuration file to re-read.
    pub reload: Option<ReloadSender>,
    /// Whether lifecycle APIs (`POST /-/reload`) are enabled
    /// (`--web.enable-lifecycle`); without it they answer 403.
    pub lifecycle: bool,
}

/// The router with every endpoint.
pub fn router(state: WebState) -> Router {
    let telemetry_path = state.telemetry_path.clone();
    let metrics_route = Router::new().route(&telemetry_path, get(metrics));
    Router::new()
        .route("/", get(landing))
        .route("/-/healthy", get(healthy))
        .route("/-/ready", get(ready))
        .route("/status", get(status))
        .route("/-/reload", post(reload::reload))
        .merge(metrics_route)
        .with_state(Arc::new(state))
}

/// Serves `router` on `listener` over plain HTTP until `shutdown` completes,
/// then finishes the requests in progress.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    serve_with_limits(listener, router, None, ServerLimits::default(), shutdown).await
}

/// [`serve_with_limits`] with the default [`ServerLimits`].
pub async fn serve_with_config(
    listener: tokio::net::TcpListener,
    router: Router,
    web_config: Option<PathBuf>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    serve_with_limits(
        listener,
        router,
        web_config,
        ServerLimits::default(),
        shutdown,
    )
    .await
}

/// Serves `router` on `listener` until `shutdown` completes, then stops
/// accepting, finishes the requests in progress and closes idle
/// connections.
///
/// Every connection is held to `limits` (see [`ServerLimits`]): a header
/// read timeout, an idle keep-alive timeout, a TLS handshake timeout, and at
/// most `max_connections` at once (more wait, unaccepted).
///
/// Without `web_config` this is plain HTTP. With it, the file
/// (exporter-toolkit format, see [`load_web_config`]) is loaded first, and
/// an invalid one is returned as [`Error::Config`] before anything is
/// served. Then every request needs the basic-auth credentials it lists (if
/// any) and gets the headers it sets, over TLS if it configures a
/// certificate. The file and the files it names are re-read when they
/// change (looked at, at most once a second, on new connections and
/// requests): rotated certificates apply from the next connection, users and
/// headers from the next request. A changed file that does not load is
/// logged once and the last valid configuration stays. Switching between TLS
/// and plain HTTP needs a restart.
pub async fn serve_with_limits(
    listener: tokio::net::TcpListener,
    router: Router,
    web_config: Option<PathBuf>,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let Some(path) = web_config else {
        server::serve(listener, router, server::Transport::Plain, limits, shutdown).await;
        return Ok(());
    };
    let initial = load_web_config(&path).map_err(|source| Error::Config {
        path: path.clone(),
        source,
    })?;
    tracing::info!(
        path = %path.display(),
        tls = initial.tls_enabled(),
        client_auth = %initial.client_auth(),
        http2 = initial.tls_enabled() && initial.http2(),
        basic_auth_users = initial.basic_auth_user_names().count(),
        "web configuration loaded"
    );
    let tls = initial.tls_enabled();
    let watcher = Arc::new(watch::Watcher::with_interval(
        path,
        initial,
        limits.web_config_check_interval,
    ));
    let guard = Arc::new(auth::Guard::new(Arc::clone(&watcher), &limits));
    let router = router.layer(axum::middleware::from_fn_with_state(guard, auth::layer));
    let transport = if tls {
        server::Transport::Tls(watcher)
    } else {
        server::Transport::Plain
    };
    server::serve(listener, router, transport, limits, shutdown).await;
    Ok(())
}

/// Whether the client takes gzip (`Accept-Encoding: gzip`, not `q=0`).
fn accepts_gzip(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused =
                parts.any(|p| p.replace(' ', "") == "q=0" || p.replace(' ', "") == "q=0.0");
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// `/metrics`: the self-metrics, encoded now, followed by the namespace
/// families assembled once per publication, kept compressed. With gzip, the
/// two parts are gzip members of one stream, and the large second one is
/// compressed once per publication, not per scrape; without, the second part
/// is written out piece by piece from a front-coded copy kept while plain
/// scrapes come.
async fn metrics(State(state): State<Arc<WebState>>, headers: axum::http::HeaderMap) -> Response {
    let metrics = Arc::clone(&state.metrics);
    let gzip = accepts_gzip(&headers);
    let parts = tokio::task::spawn_blocking(move || {
        let head = metrics.self_metrics();
        let tail = metrics.namespace_text();
        if gzip {
            let parts = vec![crate::metrics::gzip(head.as_bytes()), tail.gzip()];
            let length = parts.iter().map(bytes::Bytes::len).sum();
            (parts, None, length)
        } else {
            // The plain text is written out of its front-coded copy piece
            // by piece as the body is sent.
            let length = head.len() + tail.plain_len();
            (vec![bytes::Bytes::from(head)], Some(tail.plain()), length)
        }
    })
    .await;
    match parts {
        Ok((parts, pieces, length)) => {
            let body = axum::body::Body::from_stream(futures_util::stream::iter(
                parts
                    .into_iter()
                    .chain(pieces.into_iter().flatten())
                    .map(Ok::<_, std::convert::Infallible>),
            ));
            let mut response = Response::new(body);
            let h = response.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(CONTENT_TYPE),
            );
            h.insert(header::CONTENT_LENGTH, header::HeaderValue::from(length));
            h.insert(
                header::VARY,
                header::HeaderValue::from_static("accept-encoding"),
            );
            if gzip {
                h.insert(
                    header::CONTENT_ENCODING,
                    header::HeaderValue::from_static("gzip"),
                );
            }
            response
        }
        Err(error) => {
            tracing::error!(%error, "rendering metrics failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "rendering metrics failed\n",
            )
                .into_response()
        }
    }
}

async fn healthy() -> &'static str {
    "Healthy\n"
}

async fn ready(State(state): State<Arc<WebState>>) -> Response {
    let scopes = state.scopes.list();
    let done = scopes.iter().filter(|s| s.has_run()).count();
    if done == scopes.len() {
        (StatusCode::OK, "Ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "Not ready: {done} of {} scopes have finished a first run\n",
                scopes.len()
            ),
        )
            .into_response()
    }
}

fn epoch(t: Option<SystemTime>) -> Value {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(Value::Null, |d| json!(d.as_secs_f64()))
}

fn rfc3339(t: Option<SystemTime>) -> String {
    t.map_or_else(String::new, |t| {
        humantime::format_rfc3339_seconds(t).to_string()
    })
}

fn lane_state(status: &LaneStatus) -> &'static str {
    match (status.running_since.is_some(), status.runs, status.up) {
        (_, 0, _) => "pending",
        (_, _, true) => "ok",
        (_, _, false) => "failed",
    }
}

fn lane_json(view: &Published, lane: Lane) -> Value {
    let s = view.lane(lane);
    json!({
        "lane": lane.as_str(),
        "state": lane_state(s),
        "running": s.running_since.is_some(),
        "runs": s.runs,
        "failures": s.failures,
        "last_run_end": epoch(s.last_run_end),
        "last_success": epoch(s.last_success),
        "last_duration_seconds": s.last_duration.map(|d| d.as_secs_f64()),
        "next_run": epoch(s.next_run),
        "pages": s.last_pages,
        "images": s.last_images,
        "namespaces": s.last_namespaces,
        "duplicate_rows": s.duplicate_rows,
        "total_changes": s.total_changes,
        "last_error": s.last_error,
    })
}

async fn status(State(state): State<Arc<WebState>>) -> Response {
    let scopes: Vec<Value> = state
        .scopes
        .list()
        .iter()
        .map(|scope| {
            // One view: the scope's lanes and data from one publication.
            let view = scope.view();
            json!({
                "target": scope.scope.target,
                "enterprise_project_id": scope.scope.enterprise_project_id,
                "image_type": scope.scope.image_type.as_str(),
                "serving_data": scope.serving_snapshot(&view).is_some(),
                "lanes": scope.lanes().iter().map(|lane| lane_json(&view, *lane)).collect::<Vec<_>>(),
            })
        })
        .collect();
    let budgets: Vec<Value> = state
        .budgets
        .iter()
        .map(|(api, budget)| {
            let s = budget.status();
            json!({
                "api": api,
                "limit": budget.limit().to_string(),
                "calls_in_window": s.calls_in_window,
                "waiting": s.waiting,
                "paused_seconds": s.paused_for.map(|d| d.as_secs_f64()),
                "calls_granted": s.granted,
            })
        })
        .collect();
    let body = json!({
        "version": crate::VERSION,
        "revision": crate::REVISION,
        "ready": state.scopes.ready(),
        "scopes": scopes,
        "budgets": budgets,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string_pretty(&body).unwrap_or_default(),
    )
        .into_response()
}

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

async fn landing(State(state): State<Arc<WebState>>) -> Html<String> {
    let mut rows = String::new();
    for scope in state.scopes.list() {
        let view = scope.view();
        for lane in scope.lanes() {
            let s = view.lane(*lane);
            let _ = write!(
                rows,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{state}\">{state}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&scope.scope.target),
                escape(&scope.scope.enterprise_project_id),
                scope.scope.image_type,
                lane.as_str(),
                escape(&rfc3339(s.last_success)),
                s.last_images,
                s.last_namespaces,
                escape(s.last_error.as_deref().unwrap_or("")),
                state = lane_state(s),
            );
        }
    }
    let path = escape(&state.telemetry_path);
    Html(format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>HSS SWR exporter</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}.ok{{color:#080}}.failed{{color:#c00}}\
         .pending{{color:#888}}</style></head><body>\
         <h1>HSS SWR exporter</h1><p>Version {version} (revision {revision})</p>\
         <ul><li><a href=\"{path}\">Metrics</a></li><li><a href=\"/status\">Status (JSON)</a></li>\
         <li><a href=\"/-/healthy\">Health</a></li><li><a href=\"/-/ready\">Readiness</a></li></ul>\
         <h2>Scopes</h2><table><tr><th>Target</th><th>Enterprise project</th><th>Image type</th><th>Lane</th>\
         <th>State</th><th>Last success</th><th>Images</th><th>Namespaces</th><th>Last error</th></tr>\
         {rows}</table></body></html>\n",
        version = crate::VERSION,
        revision = crate::REVISION,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_taken_unless_refused() {
        let with = |value: &str| {
            let mut headers = axum::http::HeaderMap::new();
            headers.insert(header::ACCEPT_ENCODING, value.parse().unwrap());
            accepts_gzip(&headers)
        };
        assert!(with("gzip"));
        assert!(with("deflate, GZIP;q=0.8"));
        assert!(with("*"));
        assert!(!with("gzip;q=0"));
        assert!(!with("identity"));
        assert!(!accepts_gzip(&axum::http::HeaderMap::new()));
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
