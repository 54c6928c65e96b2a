//! Basic auth and the configured response headers, in front of every
//! endpoint.
//!
//! Place in the data flow: the outermost layer of the web server, after TLS
//! and before routing. Each request takes the web configuration in service;
//! when it has `basic_auth_users`, a request without the right credentials
//! gets 401 with `WWW-Authenticate: Basic` and never reaches a handler (so
//! unknown paths answer 401 too, as with exporter-toolkit). The configured
//! headers are added to every response, 401s included.
//!
//! bcrypt is slow on purpose, so a verified password is remembered per user:
//! the SHA-256 of the password and the bcrypt hash it was checked against.
//! The next scrape with the same password costs a hash and a constant-time
//! comparison; a changed hash in the configuration invalidates the entry.
//! Failed checks are not remembered, run one at a time on the blocking pool
//! (so guessing cannot take every core), and an unknown user is checked
//! against a configured hash too, so the answer takes as long as for a known
//! one. Passwords are never logged.
//!
//! Guessing is bounded twice, and neither bound touches a scrape whose
//! password is remembered (that check comes first and needs no bcrypt): at
//! most `bcrypt_queue` requests wait for the bcrypt check while one runs,
//! more get 429 at once; and a client address (an IPv6 /64) that failed
//! `auth_failures_per_client` times within `auth_failure_window` gets 429,
//! with `Retry-After`, without a check until its window has passed. The
//! failure table holds at most [`MAX_TRACKED_CLIENTS`] addresses; when full,
//! expired entries go first, then the oldest.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::config::WebConfig;
use super::server::ServerLimits;
use super::watch::Watcher;

/// The most client addresses whose failed attempts are counted at once.
pub const MAX_TRACKED_CLIENTS: usize = 4096;

/// A password that passed bcrypt for a user.
#[derive(Debug)]
struct Verified {
    /// The bcrypt hash it was checked against.
    hash: String,
    /// SHA-256 of the password.
    digest: [u8; 32],
}

/// What the layer keeps between requests.
#[derive(Debug)]
pub(crate) struct Guard {
    watcher: Arc<Watcher>,
    /// One entry per user: the last password that passed.
    verified: Mutex<HashMap<String, Verified>>,
    /// bcrypt runs one at a time.
    bcrypt: Semaphore,
    /// Places for the request in bcrypt and those waiting for it.
    queue: Semaphore,
    /// Recent failed attempts per client address.
    failures: Mutex<FailureTable>,
}

/// The outcome of a basic-auth check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Right user and password.
    Allowed,
    /// Wrong user or password: 401.
    Refused,
    /// The bcrypt queue is full: 429 at once.
    Busy,
    /// Too many failures from this client: 429 until the window passes.
    Limited(Duration),
}

impl Guard {
    pub(crate) fn new(watcher: Arc<Watcher>, limits: &ServerLimits) -> Self {
        Self {
            watcher,
            verified: Mutex::new(HashMap::new()),
            bcrypt: Semaphore::new(1),
            queue: Semaphore::new(limits.bcrypt_queue.saturating_add(1)),
            failures: Mutex::new(FailureTable::new(
                limits.auth_failures_per_client,
                limits.auth_failure_window,
                MAX_TRACKED_CLIENTS,
            )),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, FailureTable> {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `user` / `password` is a configured user with that password.
    #[cfg(test)]
    async fn check(&self, config: &WebConfig, user: &str, password: Vec<u8>) -> bool {
        self.authorize(config, user, password, None).await == Outcome::Allowed
    }

    /// Checks `user` / `password` from `client`: a remembered password
    /// first, then the client's failure count, the queue, and bcrypt.
    async fn authorize(
        &self,
        config: &WebConfig,
        user: &str,
        password: Vec<u8>,
        client: Option<IpAddr>,
    ) -> Outcome {
        let users = config.users();
        let digest: [u8; 32] = Sha256::digest(&password).into();
        let known = users.get(user);
        if let Some(hash) = known {
            let verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = verified.get(user)
                && entry.hash == *hash
                && bool::from(entry.digest.ct_eq(&digest))
            {
                return Outcome::Allowed;
            }
        }
        if let Some(ip) = client
            && let Some(wait) = self.failures().blocked(ip, Instant::now())
        {
            return Outcome::Limited(wait);
        }
        // An unknown user is checked against some configured hash, for the
        // same cost, and refused whatever the outcome.
        let Some(hash) = known.or_else(|| users.values().next()).cloned() else {
            return Outcome::Refused;
        };
        let Ok(_place) = self.queue.try_acquire() else {
            return Outcome::Busy;
        };
        let Ok(_permit) = self.bcrypt.acquire().await else {
            return Outcome::Refused;
        };
        let checked = hash.clone();
        let matched = tokio::task::spawn_blocking(move || {
            bcrypt::verify(&password, &checked).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        if matched && known.is_some() {
            self.verified
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(user.to_owned(), Verified { hash, digest });
            Outcome::Allowed
        } else {
            if let Some(ip) = client {
                self.failures().record(ip, Instant::now());
            }
            Outcome::Refused
        }
    }
}

/// The address failures are counted under: IPv4 addresses as they are,
/// IPv6 ones by their /64 (one host usually holds a whole /64).
fn client_key(peer: SocketAddr) -> IpAddr {
    match peer.ip().to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::V6(octets.into())
        }
    }
}

/// Failed attempts per client address within a fixed window.
#[derive(Debug)]
struct FailureTable {
    /// Failures allowed per window; 0 turns the limit off.
    max: u32,
    window: Duration,
    capacity: usize,
    clients: HashMap<IpAddr, Window>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

impl FailureTable {
    fn new(max: u32, window: Duration, capacity: usize) -> Self {
        Self {
            max,
            window,
            capacity: capacity.max(1),
            clients: HashMap::new(),
        }
    }

    /// How long `ip` must wait, if it has used up its failures.
    fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        if self.max == 0 {
            return None;
        }
        let entry = self.clients.get(&ip)?;
        let end = entry.start + self.window;
        (entry.failures >= self.max && now < end).then(|| end - now)
    }

    fn record(&mut self, ip: IpAddr, now: Instant) {
        if self.max == 0 {
            return;
        }
        let window = self.window;
        if let Some(entry) = self.clients.get_mut(&ip) {
            if now >= entry.start + window {
                *entry = Window {
                    start: now,
                    failures: 1,
                };
            } else {
                entry.failures = entry.failures.saturating_add(1);
            }
            return;
        }
        if self.clients.len() >= self.capacity {
            self.clients.retain(|_, w| now < w.start + window);
        }
        if self.clients.len() >= self.capacity
            && let Some(oldest) = self
                .clients
                .iter()
                .min_by_key(|(_, w)| w.start)
                .map(|(ip, _)| *ip)
        {
            self.clients.remove(&oldest);
        }
        self.clients.insert(
            ip,
            Window {
                start: now,
                failures: 1,
            },
        );
    }
}

/// The user name and password of a `Basic` `Authorization` header.
fn credentials(headers: &HeaderMap) -> Option<(String, Vec<u8>)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"))],
        "Unauthorized\n",
    )
        .into_response()
}

fn too_many(wait: Duration, why: &'static str) -> Response {
    // Whole seconds, rounded up, at least 1.
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)))],
        why,
    )
        .into_response()
}

/// The layer: basic auth (when configured), then the handler, then the
/// configured headers.
pub(crate) async fn layer(
    State(guard): State<Arc<Guard>>,
    request: Request,
    next: Next,
) -> Response {
    let config = guard.watcher.current();
    let mut response = if !config.basic_auth_enabled() {
        next.run(request).await
    } else {
        match credentials(request.headers()) {
            Some((user, password)) => {
                let client = request
                    .extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|ConnectInfo(peer)| client_key(*peer));
                match guard.authorize(&config, &user, password, client).await {
                    Outcome::Allowed => next.run(request).await,
                    Outcome::Refused => {
                        tracing::debug!(user, "basic auth refused");
                        unauthorized()
                    }
                    Outcome::Busy => too_many(
                        Duration::from_secs(1),
                        "Too many requests: password checks are busy\n",
                    ),
                    Outcome::Limited(wait) => {
                        tracing::debug!(?client, "basic auth: too many failures from this client");
                        too_many(
                            wait,
                            "Too many requests: too many failed logins from this address\n",
                        )
                    }
                }
            }
            None => unauthorized(),
        }
    };
    let headers = response.headers_mut();
    for (name, value) in config.headers() {
        headers.insert(name.clone(), value.clone());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::config::load_web_config;

    fn write_users(path: &std::path::Path, password: &str) {
        let tmp = path.with_extension("tmp");
        let hash = bcrypt::hash(password, 4).unwrap();
        std::fs::write(&tmp, format!("basic_auth_users:\n  prometheus: {hash}\n")).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    #[tokio::test]
    async fn verified_passwords_are_remembered_until_the_hash_changes() {
        let dir = std::env::temp_dir().join(format!("hss-swr-web-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("web.yml");
        write_users(&path, "first");
        let watcher = Arc::new(Watcher::new(path.clone(), load_web_config(&path).unwrap()));
        let guard = Guard::new(Arc::clone(&watcher), &ServerLimits::default());
        let config = watcher.current();

        assert!(!guard.check(&config, "prometheus", b"wrong".to_vec()).await);
        assert!(!guard.check(&config, "nobody", b"first".to_vec()).await);
        assert!(
            guard.verified.lock().unwrap().is_empty(),
            "failures are not remembered"
        );
        assert!(guard.check(&config, "prometheus", b"first".to_vec()).await);
        assert_eq!(guard.verified.lock().unwrap().len(), 1);
        // From the cache now; a wrong password still fails.
        assert!(guard.check(&config, "prometheus", b"first".to_vec()).await);
        assert!(!guard.check(&config, "prometheus", b"firsT".to_vec()).await);

        // A new hash: the remembered password no longer counts.
        write_users(&path, "second");
        assert_eq!(watcher.check_now(), crate::web::watch::Check::Reloaded);
        let config = watcher.current();
        assert!(!guard.check(&config, "prometheus", b"first".to_vec()).await);
        assert!(guard.check(&config, "prometheus", b"second".to_vec()).await);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn basic(text: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(text).unwrap());
        headers
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_with_too_many_failures_waits_out_its_window() {
        let mut table = FailureTable::new(3, Duration::from_secs(60), 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(table.blocked(a, Instant::now()), None);
            table.record(a, Instant::now());
        }
        assert_eq!(
            table.blocked(a, Instant::now()),
            Some(Duration::from_secs(60))
        );
        assert_eq!(table.blocked(b, Instant::now()), None, "per address");
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(
            table.blocked(a, Instant::now()),
            Some(Duration::from_secs(1))
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(table.blocked(a, Instant::now()), None, "window passed");
        // A new window starts with the next failure.
        table.record(a, Instant::now());
        assert_eq!(table.clients[&a].failures, 1);
        assert!(table.clients[&a].start > start);

        // Bounded: a third address pushes out the oldest entry.
        table.record(b, Instant::now());
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        table.record(c, Instant::now());
        assert_eq!(table.clients.len(), 2);
        assert!(table.clients.contains_key(&c));

        // 0 turns the limit off.
        let mut off = FailureTable::new(0, Duration::from_secs(60), 2);
        off.record(a, Instant::now());
        assert_eq!(off.blocked(a, Instant::now()), None);
        assert!(off.clients.is_empty());
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let one: SocketAddr = "[2001:db8:1:2:aaaa::1]:4000".parse().unwrap();
        let two: SocketAddr = "[2001:db8:1:2:bbbb::2]:5000".parse().unwrap();
        let other: SocketAddr = "[2001:db8:1:3::1]:4000".parse().unwrap();
        assert_eq!(client_key(one), client_key(two));
        assert_ne!(client_key(one), client_key(other));
        let mapped: SocketAddr = "[::ffff:192.0.2.7]:1".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn parses_basic_credentials() {
        // "prometheus:se:cret"
        let headers = basic("Basic cHJvbWV0aGV1czpzZTpjcmV0");
        assert_eq!(
            credentials(&headers),
            Some(("prometheus".to_string(), b"se:cret".to_vec()))
        );
        assert_eq!(
            credentials(&basic("basic cHJvbWV0aGV1czpzZTpjcmV0")).map(|c| c.0),
            Some("prometheus".to_string())
        );
        assert_eq!(credentials(&basic("Bearer abc")), None);
        assert_eq!(credentials(&basic("Basic !!!")), None);
        // No colon.
        assert_eq!(credentials(&basic("Basic cHJvbWV0aGV1cw==")), None);
        assert_eq!(credentials(&HeaderMap::new()), None);
    }
}
