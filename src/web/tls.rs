//! The TLS handshake of the HTTPS server, with the web configuration in
//! service.
//!
//! Place in the data flow: the last step, between the connection loop
//! (`server`, which accepts and bounds connections) and HTTP. Each new
//! connection takes the rustls configuration from the configuration watcher,
//! so rotated certificates and CAs apply from the next connection on;
//! connections already open keep the certificate they started with. HTTP/2 is
//! served when the configuration allows it and the client asks through ALPN.
//! A failed or slow handshake (no client certificate, an untrusted one, a
//! plain-HTTP client, nothing sent within the handshake timeout) closes that
//! connection only and is logged at debug level.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::watch::Watcher;

/// Runs the TLS handshake on `tcp` within `timeout`: the stream, and whether
/// to speak HTTP/2 on it; `None` when the connection is to be closed.
pub(crate) async fn handshake(
    tcp: TcpStream,
    peer: SocketAddr,
    watcher: &Watcher,
    timeout: Duration,
) -> Option<(TlsStream<TcpStream>, bool)> {
    let config = watcher.current();
    let Some(tls) = config.tls_server_config() else {
        // The watcher never puts a configuration without TLS in place of one
        // with it; refuse the connection rather than serve plain text.
        tracing::error!("web configuration lost its TLS settings; refusing connection");
        return None;
    };
    match tokio::time::timeout(timeout, TlsAcceptor::from(tls).accept(tcp)).await {
        Ok(Ok(stream)) => {
            let h2 = config.http2() && stream.get_ref().1.alpn_protocol() == Some(b"h2");
            Some((stream, h2))
        }
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}
