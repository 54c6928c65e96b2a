//! The daemon: binds the listener, starts the lanes and the web server,
//! reloads the configuration on SIGHUP or `POST /-/reload`, and stops on
//! SIGTERM or SIGINT.
//!
//! Place in the data flow: on top, with the rest of [`crate::app`].

use super::*;

/// Parses a listen address; `:9929` means every interface.
pub fn parse_listen_address(address: &str) -> Result<SocketAddr, Error> {
    let full = if address.starts_with(':') {
        format!("0.0.0.0{address}")
    } else {
        address.to_string()
    };
    full.parse()
        .map_err(|e: std::net::AddrParseError| Error::ListenAddress {
            address: address.to_string(),
            reason: e.to_string(),
        })
}

/// Binds a listen address.
pub async fn bind(address: &str) -> Result<TcpListener, Error> {
    let addr = parse_listen_address(address)?;
    TcpListener::bind(addr)
        .await
        .map_err(io(format!("cannot listen on {address}")))
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot watch SIGTERM; only SIGINT stops the exporter");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutting down");
}

/// How the daemon serves, besides the pipeline: see [`run_daemon_with`].
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Where `/metrics` is served.
    pub telemetry_path: String,
    /// The configuration file SIGHUP and `POST /-/reload` re-read.
    pub config_path: Option<std::path::PathBuf>,
    /// The exporter-toolkit web configuration file (TLS, basic auth).
    pub web_config: Option<std::path::PathBuf>,
    /// `--web.enable-lifecycle`: whether `POST /-/reload` is served.
    pub enable_lifecycle: bool,
    /// Timeouts and connection limits of the HTTP server.
    pub limits: web::ServerLimits,
}

impl DaemonOptions {
    /// Defaults: no files, lifecycle APIs off, default server limits.
    pub fn new(telemetry_path: &str) -> Self {
        Self {
            telemetry_path: telemetry_path.to_string(),
            config_path: None,
            web_config: None,
            enable_lifecycle: false,
            limits: web::ServerLimits::default(),
        }
    }
}

/// [`run_daemon_with`] with lifecycle APIs off and the default server
/// limits.
pub async fn run_daemon(
    exporter: Exporter,
    listener: TcpListener,
    telemetry_path: &str,
    config_path: Option<std::path::PathBuf>,
    web_config: Option<std::path::PathBuf>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let options = DaemonOptions {
        config_path,
        web_config,
        ..DaemonOptions::new(telemetry_path)
    };
    run_daemon_with(exporter, listener, options, shutdown).await
}

/// Runs the daemon until `shutdown` completes: lanes in the background, the
/// web server on `listener` (with TLS and basic auth when `web_config` names
/// an exporter-toolkit web configuration file). SIGHUP, and `POST /-/reload`
/// when lifecycle APIs are enabled, re-read `config_path`, one reload at a
/// time: a valid file replaces the configuration (scopes still configured
/// keep their data and counters; a file equal to the running configuration
/// restarts nothing), an invalid one is refused with its reason and the
/// running configuration stays.
pub async fn run_daemon_with(
    mut exporter: Exporter,
    listener: TcpListener,
    options: DaemonOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let DaemonOptions {
        telemetry_path,
        config_path,
        web_config,
        enable_lifecycle,
        limits,
    } = options;
    let telemetry_path = telemetry_path.as_str();
    let (reload_tx, mut reload_rx) = web::reload_channel();
    let mut generation = CancellationToken::new();
    exporter.log_plan();
    let mut lanes = exporter.spawn(&generation);
    // The state file's one writer: lanes only signal it.
    let stop_writer = CancellationToken::new();
    let writer = {
        let (state, stop) = (Arc::clone(&exporter.state), stop_writer.clone());
        tokio::spawn(async move { state.run(stop).await })
    };
    let address = listener.local_addr().map_err(io("listener address"))?;
    tracing::info!(%address, telemetry_path, "serving metrics");
    let mut state = exporter.web_state(telemetry_path);
    state.reload = config_path.is_some().then_some(reload_tx);
    state.lifecycle = enable_lifecycle;
    let stop_server = CancellationToken::new();
    let server = tokio::spawn(web::serve_with_limits(
        listener,
        web::router(state),
        web_config,
        limits,
        stop_server.clone().cancelled_owned(),
    ));
    let prerender = {
        let metrics = exporter.metrics();
        let stop = stop_server.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(PRERENDER_PERIOD) => {}
                }
                let metrics = Arc::clone(&metrics);
                let _ = tokio::task::spawn_blocking(move || metrics.prerender()).await;
            }
        })
    };
    let mut hangup = hangup_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(request) = reload_rx.recv() => {
                let outcome = reload(&mut exporter, config_path.as_deref(), &mut generation, &mut lanes).await;
                let _ = request.reply.send(outcome);
            }
            Some(()) = next_hangup(&mut hangup) => {
                let _ = reload(&mut exporter, config_path.as_deref(), &mut generation, &mut lanes).await;
            }
        }
    }
    // Reload requests still queued get "shutting down" rather than keeping
    // their connections (and so the server's shutdown) waiting.
    drop(reload_rx);
    generation.cancel();
    stop_server.cancel();
    let _ = prerender.await;
    while lanes.join_next().await.is_some() {}
    stop_writer.cancel();
    let _ = writer.await;
    exporter.persist().await;
    match server.await {
        Ok(result) => Ok(result?),
        Err(join) => Err(Error::Io {
            context: "HTTP server task".into(),
            source: std::io::Error::other(join.to_string()),
        }),
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
fn hangup_signal() -> Hangup {
    None
}

/// The next SIGHUP; never completes where there is none.
async fn next_hangup(hangup: &mut Hangup) -> Option<()> {
    #[cfg(unix)]
    if let Some(signal) = hangup {
        return signal.recv().await;
    }
    let _ = hangup;
    std::future::pending().await
}

/// Re-reads the configuration and, when it is valid and differs from the
/// running one, restarts the lanes under it; records the outcome in the
/// reload metrics.
async fn reload(
    exporter: &mut Exporter,
    path: Option<&Path>,
    generation: &mut CancellationToken,
    lanes: &mut tokio::task::JoinSet<()>,
) -> Result<String, String> {
    let Some(path) = path else {
        return Err("this process has no configuration file to re-read".into());
    };
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(error) => {
            tracing::warn!(%error, "reload refused; the running configuration stays");
            exporter.metrics().record_reload(false);
            return Err(error.to_string());
        }
    };
    if config == *exporter.config() {
        // Nothing to apply: lanes keep running, sweeps in progress go on.
        exporter.metrics().record_reload(true);
        let summary = format!(
            "configuration unchanged: {} target(s), {} scope(s), budget {}; nothing restarted",
            config.targets.len(),
            config.scope_count(),
            config.api_rate_limit
        );
        tracing::info!(path = %path.display(), "{summary}");
        return Ok(summary);
    }
    match exporter.apply(config).await {
        Ok(start) => {
            exporter.spawn_scopes(generation, lanes, &start);
            // Reap the tasks of stopped scopes.
            while lanes.try_join_next().is_some() {}
            let summary = format!(
                "configuration reloaded: {} target(s), {} scope(s), budget {}; {} scope(s) (re)started, the others kept running",
                exporter.config().targets.len(),
                exporter.config().scope_count(),
                exporter.config().api_rate_limit,
                start.len()
            );
            tracing::info!(path = %path.display(), "{summary}");
            exporter.log_plan();
            exporter.metrics().record_reload(true);
            Ok(summary)
        }
        Err(error) => {
            tracing::warn!(%error, "reload failed; the running configuration stays");
            exporter.metrics().record_reload(false);
            Err(error.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_in_prometheus_form() {
        assert_eq!(
            parse_listen_address(":9929").unwrap().to_string(),
            "0.0.0.0:9929"
        );
        assert_eq!(parse_listen_address("127.0.0.1:0").unwrap().port(), 0);
        assert_eq!(
            parse_listen_address("[::1]:9929").unwrap().to_string(),
            "[::1]:9929"
        );
        assert!(parse_listen_address("localhost").is_err());
    }
}
