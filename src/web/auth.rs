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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;
use tokio::sync::Semaphore;

use super::config::WebConfig;
use super::watch::Watcher;

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
}

impl Guard {
    pub(crate) fn new(watcher: Arc<Watcher>) -> Self {
        Self {
            watcher,
            verified: Mutex::new(HashMap::new()),
            bcrypt: Semaphore::new(1),
        }
    }

    /// Whether `user` / `password` is a configured user with that password.
    async fn check(&self, config: &WebConfig, user: &str, password: Vec<u8>) -> bool {
        let users = config.users();
        let digest: [u8; 32] = Sha256::digest(&password).into();
        let known = users.get(user);
        if let Some(hash) = known {
            let verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = verified.get(user)
                && entry.hash == *hash
                && bool::from(entry.digest.ct_eq(&digest))
            {
                return true;
            }
        }
        // An unknown user is checked against some configured hash, for the
        // same cost, and refused whatever the outcome.
        let Some(hash) = known.or_else(|| users.values().next()).cloned() else {
            return false;
        };
        let Ok(_permit) = self.bcrypt.acquire().await else {
            return false;
        };
        let checked = hash.clone();
        let matched = tokio::task::spawn_blocking(move || {
            bcrypt::verify(&password, &checked).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        let ok = matched && known.is_some();
        if ok {
            self.verified
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(user.to_owned(), Verified { hash, digest });
        }
        ok
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
                if guard.check(&config, &user, password).await {
                    next.run(request).await
                } else {
                    tracing::debug!(user, "basic auth refused");
                    unauthorized()
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
        let guard = Guard::new(Arc::clone(&watcher));
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
