//! The connection loop under both plain HTTP and HTTPS: accepts TCP
//! connections (at most `max_connections` at once), and keeps each within the
//! [`ServerLimits`] while hyper serves it.
//!
//! Place in the data flow: the very front of the web server, before TLS
//! (`tls`), basic auth (`auth`) and routing. Nothing here reads a request;
//! it only watches when bytes arrive and when handlers run:
//!
//! - a new connection, and a keep-alive connection whose next request has
//!   begun to arrive, must deliver a complete request head within
//!   `header_read_timeout` (slow-header clients are closed, whatever they keep
//!   sending);
//! - a keep-alive connection with no request for `idle_timeout` is closed;
//! - beyond `max_connections` open connections, the accept loop waits
//!   (connections stay in the kernel's backlog, unaccepted) until one closes;
//! - the TLS handshake must finish within `tls_handshake_timeout`.
//!
//! hyper's own `header_read_timeout` is not used: it starts as soon as a
//! keep-alive connection goes idle, so it would also close idle connections
//! of a Prometheus scraping every 60 s. Request heads are bounded in size
//! ([`MAX_BUFFER_BYTES`]), so memory per connection is bounded too.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The largest request head (and read buffer) a connection may use; a larger
/// head is answered 431.
pub const MAX_BUFFER_BYTES: usize = 64 * 1024;

/// The most `--web.max-connections` may be.
pub const MAX_CONNECTIONS_LIMIT: usize = 1 << 20;

/// What one client may hold of the server. The defaults are those of the
/// daemon; tests inject short durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Time allowed for a complete request head, from the connection's start
    /// or from the first byte of the next request on a kept-alive connection.
    pub header_read_timeout: Duration,
    /// Time a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Time allowed for the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Connections served at once; more wait in the backlog, unaccepted.
    pub max_connections: usize,
    /// Requests that may wait for a bcrypt check while one runs; more get
    /// 429 at once.
    pub bcrypt_queue: usize,
    /// Failed basic-auth attempts a client address may make within
    /// `auth_failure_window` before it gets 429 without a check.
    pub auth_failures_per_client: u32,
    /// The window of `auth_failures_per_client`.
    pub auth_failure_window: Duration,
    /// How often the web configuration file (and the certificate files it
    /// names) are looked at for changes, at most.
    pub web_config_check_interval: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            tls_handshake_timeout: Duration::from_secs(10),
            max_connections: 512,
            bcrypt_queue: 8,
            auth_failures_per_client: 10,
            auth_failure_window: Duration::from_secs(60),
            web_config_check_interval: super::watch::CHECK_INTERVAL,
        }
    }
}

/// How connections are set up before HTTP.
pub(crate) enum Transport {
    /// Plain HTTP/1.1.
    Plain,
    /// TLS, with the configuration of the watcher at accept time.
    Tls(Arc<super::watch::Watcher>),
}

fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Serves `router` on `listener` until `shutdown` completes; then stops
/// accepting, lets the requests in progress finish, and closes connections
/// that hold no request.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    transport: Transport,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let max = limits.max_connections.clamp(1, MAX_CONNECTIONS_LIMIT);
    let slots = Arc::new(Semaphore::new(max));
    let closing = CancellationToken::new();
    let transport = Arc::new(transport);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Wait for a free slot before accepting: beyond the limit,
        // connections stay in the backlog.
        let slot = tokio::select! {
            biased;
            () = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
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
        let router = router.clone();
        let closing = closing.clone();
        let transport = Arc::clone(&transport);
        tokio::spawn(async move {
            accept(tcp, peer, router, &transport, limits, closing).await;
            drop(slot);
        });
    }
    drop(listener);
    closing.cancel();
    // Every connection holds a slot until it ends.
    let _ = slots
        .acquire_many(u32::try_from(max).unwrap_or(u32::MAX))
        .await;
}

/// Sets one connection up (TLS when configured) and serves it.
async fn accept(
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    transport: &Transport,
    limits: ServerLimits,
    closing: CancellationToken,
) {
    let _ = tcp.set_nodelay(true);
    match transport {
        Transport::Plain => serve_connection(tcp, peer, router, false, limits, closing).await,
        Transport::Tls(watcher) => {
            let handshake = super::tls::handshake(tcp, peer, watcher, limits.tls_handshake_timeout);
            let (stream, h2) = tokio::select! {
                () = closing.cancelled() => return,
                done = handshake => match done {
                    Some(done) => done,
                    None => return,
                },
            };
            serve_connection(stream, peer, router, h2, limits, closing).await;
        }
    }
}

/// Serves HTTP on one established connection within `limits`.
async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    router: Router,
    h2: bool,
    limits: ServerLimits,
    closing: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new(!h2));
    let io = TokioIo::new(Watched {
        inner: io,
        activity: Arc::clone(&activity),
    });
    let inner = TowerToHyperService::new(router);
    let tracked = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let busy = Busy::begin(Arc::clone(&tracked));
        let response = inner.call(request);
        async move {
            let response = response.await;
            drop(busy);
            response
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .header_read_timeout(None)
        .max_buf_size(MAX_BUFFER_BYTES);
    builder
        .http2()
        .max_header_list_size(u32::try_from(MAX_BUFFER_BYTES).unwrap_or(u32::MAX))
        .max_concurrent_streams(32);
    let builder = if h2 {
        builder.http2_only()
    } else {
        builder.http1_only()
    };
    let connection = builder.serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    let mut draining = false;
    loop {
        let deadline = activity.deadline(&limits, draining);
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            () = closing.cancelled(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            () = activity.changed.notified() => {}
            () = sleep => {
                if let Some(reason) = activity.expired(Instant::now(), &limits, draining) {
                    tracing::debug!(%peer, reason, "closing connection");
                    return;
                }
            }
        }
    }
}

/// When a connection last did what, for its timeouts.
#[derive(Debug)]
struct Activity {
    state: Mutex<ActivityState>,
    /// Woken when the deadline may have moved earlier.
    changed: Notify,
    /// Whether bytes read while no request runs start a request head
    /// (HTTP/1); HTTP/2 reads also carry pings and window updates.
    heads_from_reads: bool,
}

#[derive(Debug)]
struct ActivityState {
    /// Handlers running.
    busy: usize,
    /// Since when a request head is being read.
    head_since: Option<Instant>,
    /// Bytes were read while a handler ran (a pipelined request, a body).
    read_while_busy: bool,
    /// The last read or write, or the end of the last handler.
    last_io: Instant,
}

impl Activity {
    fn new(heads_from_reads: bool) -> Self {
        let now = Instant::now();
        Self {
            state: Mutex::new(ActivityState {
                busy: 0,
                // A new connection owes its first head at once.
                head_since: Some(now),
                read_while_busy: false,
                last_io: now,
            }),
            changed: Notify::new(),
            heads_from_reads,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let mut state = self.lock();
        let now = Instant::now();
        if state.busy > 0 {
            state.last_io = now;
            state.read_while_busy = true;
        } else if self.heads_from_reads && state.head_since.is_none() {
            state.head_since = Some(now);
            drop(state);
            self.changed.notify_one();
        }
        // Otherwise (HTTP/2 between requests: pings, window updates) reads
        // do not keep the connection open.
    }

    fn wrote(&self, bytes: usize) {
        if bytes > 0 {
            self.lock().last_io = Instant::now();
        }
    }

    /// When to look again; `None` while a handler runs.
    fn deadline(&self, limits: &ServerLimits, draining: bool) -> Option<Instant> {
        let state = self.lock();
        if state.busy > 0 {
            return None;
        }
        match state.head_since {
            Some(_) if draining => Some(Instant::now()),
            Some(since) => Some(since + limits.header_read_timeout),
            None => Some(state.last_io + limits.idle_timeout),
        }
    }

    /// Why the connection should be closed now, if it should.
    fn expired(&self, now: Instant, limits: &ServerLimits, draining: bool) -> Option<&'static str> {
        let state = self.lock();
        if state.busy > 0 {
            return None;
        }
        match state.head_since {
            Some(_) if draining => Some("shutting down; no complete request"),
            Some(since) if now >= since + limits.header_read_timeout => Some("header read timeout"),
            Some(_) => None,
            None if now >= state.last_io + limits.idle_timeout => Some("idle timeout"),
            None => None,
        }
    }
}

/// A handler running on a connection: no timeout applies meanwhile.
struct Busy(Arc<Activity>);

impl Busy {
    fn begin(activity: Arc<Activity>) -> Self {
        {
            let mut state = activity.lock();
            state.busy += 1;
            state.head_since = None;
            state.read_while_busy = false;
        }
        activity.changed.notify_one();
        Self(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        {
            let mut state = self.0.lock();
            state.busy = state.busy.saturating_sub(1);
            let now = Instant::now();
            state.last_io = now;
            if state.busy == 0 && state.read_while_busy && self.0.heads_from_reads {
                // The next request (or what follows this one) has begun.
                state.head_since = Some(now);
            }
        }
        self.0.changed.notify_one();
    }
}

/// A connection's byte stream, reporting reads and writes to its
/// [`Activity`].
struct Watched<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.activity.read(buf.filled().len() - before);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.activity.wrote(n);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            self.activity.wrote(n);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ServerLimits {
        ServerLimits {
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            ..ServerLimits::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_owes_its_head_within_the_header_timeout() {
        let activity = Activity::new(true);
        let start = Instant::now();
        assert_eq!(
            activity.deadline(&limits(), false),
            Some(start + Duration::from_secs(30))
        );
        // Bytes keep coming, one line at a time: the deadline does not move.
        tokio::time::advance(Duration::from_secs(20)).await;
        activity.read(20);
        assert_eq!(activity.expired(Instant::now(), &limits(), false), None);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            activity.expired(Instant::now(), &limits(), false),
            Some("header read timeout")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_keep_alive_connection_gets_the_idle_timeout_then_a_head_timeout() {
        let activity = Arc::new(Activity::new(true));
        let busy = Busy::begin(Arc::clone(&activity));
        assert_eq!(activity.deadline(&limits(), false), None, "handler runs");
        tokio::time::advance(Duration::from_secs(100)).await;
        assert_eq!(activity.expired(Instant::now(), &limits(), false), None);
        drop(busy);
        let idle_from = Instant::now();
        assert_eq!(
            activity.deadline(&limits(), false),
            Some(idle_from + Duration::from_secs(300))
        );
        // 60 s later (a scrape interval): still open; the next request's
        // first bytes start the header timeout.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(activity.expired(Instant::now(), &limits(), false), None);
        activity.read(10);
        let head_from = Instant::now();
        assert_eq!(
            activity.deadline(&limits(), false),
            Some(head_from + Duration::from_secs(30))
        );
        // Draining closes a connection with a head in progress at once.
        assert_eq!(
            activity.expired(Instant::now(), &limits(), true),
            Some("shutting down; no complete request")
        );
        // Without a new request, idle connections go at the idle timeout.
        let idle = Arc::new(Activity::new(true));
        drop(Busy::begin(Arc::clone(&idle)));
        tokio::time::advance(Duration::from_secs(300)).await;
        assert_eq!(
            idle.expired(Instant::now(), &limits(), false),
            Some("idle timeout")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn http2_reads_do_not_start_a_head() {
        let activity = Arc::new(Activity::new(false));
        drop(Busy::begin(Arc::clone(&activity)));
        tokio::time::advance(Duration::from_secs(60)).await;
        activity.read(9); // a window update, or a ping
        assert_eq!(
            activity.deadline(&limits(), false),
            Some(Instant::now() + Duration::from_secs(240)),
            "reads between requests neither start a head nor keep it open"
        );
    }
}
