//! The HTTPS server: accepts TCP connections, runs the TLS handshake with the
//! web configuration in service, and serves HTTP/1.1 (and HTTP/2 when the
//! configuration allows it and the client asks through ALPN) on top.
//!
//! Place in the data flow: the last step, in front of the router. Each new
//! connection takes the rustls configuration from the configuration watcher,
//! so rotated certificates and CAs apply from the next connection on;
//! connections already open keep the certificate they started with. A failed
//! handshake (no client certificate, an untrusted one, a plain-HTTP client)
//! closes that connection only and is logged at debug level. On shutdown the
//! listener closes and open connections finish their requests.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::watch::Watcher;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn is_connection_error(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Serves `router` over TLS on `listener` until `shutdown` completes, then
/// waits for the connections in progress.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    watcher: Arc<Watcher>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    if !is_connection_error(&error) {
                        // E.g. out of file descriptors: give it time.
                        tracing::error!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
            },
        };
        let config = watcher.current();
        let Some(tls) = config.tls_server_config() else {
            // The watcher never puts a configuration without TLS in place of
            // one with it; refuse the connection rather than serve plain text.
            tracing::error!("web configuration lost its TLS settings; refusing connection");
            continue;
        };
        let http2 = config.http2();
        let service = TowerToHyperService::new(router.clone());
        let watch = graceful.watcher();
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsAcceptor::from(tls).accept(tcp))
                    .await
                {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let mut builder = auto::Builder::new(TokioExecutor::new());
            if !http2 || stream.get_ref().1.alpn_protocol() != Some(b"h2") {
                builder = builder.http1_only();
            }
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(error) = watch.watch(connection).await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
