//! Temporary AK/SK from the ECS/CCE metadata service (agency credentials).
//!
//! Place in the data flow: called by the client for every attempt. The
//! credentials come from `GET {endpoint}/openstack/latest/securitykey`, after a
//! `PUT /meta-data/latest/api/token` session token when the service offers
//! one; calls are signed with the temporary AK/SK and carry (and sign)
//! `X-Security-Token`. They are fetched again well before `expires_at` (40
//! minutes early, as the official SDK does, or at half their remaining life
//! when they live shorter) and once after the API answers 401.

use std::time::{Duration, SystemTime};

use reqwest::Url;
use serde::Deserialize;
use tokio::time::Instant;

use super::aksk::sign_request;
use super::{AuthError, BoxFuture, Credential, OutgoingRequest};
use crate::config::Secret;

/// The default metadata endpoint of ECS and CCE nodes.
pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";

/// Lifetime asked for the session token, in seconds.
const SESSION_TOKEN_TTL: &str = "21600";

#[derive(Debug)]
struct Temporary {
    access_key: String,
    secret_key: Secret,
    security_token: Secret,
    refresh_at: Instant,
}

#[derive(Deserialize)]
struct SecurityKey {
    credential: Credentials,
}

#[derive(Deserialize)]
struct Credentials {
    access: String,
    secret: String,
    securitytoken: String,
    expires_at: Option<String>,
}

/// Signs calls with temporary credentials from the metadata service.
#[derive(Debug)]
pub struct Metadata {
    http: reqwest::Client,
    endpoint: Url,
    cached: tokio::sync::Mutex<Option<Temporary>>,
}

/// When temporary credentials living `lifetime` are fetched again: 40
/// minutes before expiry, or halfway when they live less than 80 minutes.
pub fn refresh_after(lifetime: Duration) -> Duration {
    let margin = Duration::from_secs(40 * 60).min(lifetime / 2);
    lifetime - margin
}

impl Metadata {
    /// Credentials from the metadata service at `endpoint`.
    pub fn new(http: reqwest::Client, endpoint: Url) -> Self {
        Self {
            http,
            endpoint,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    fn url(&self, path: &str) -> Url {
        let mut url = self.endpoint.clone();
        url.set_path(&format!(
            "{}{path}",
            self.endpoint.path().trim_end_matches('/')
        ));
        url
    }

    fn error(reason: impl Into<String>) -> AuthError {
        AuthError::Metadata(reason.into())
    }

    async fn session_token(&self) -> Result<Option<String>, AuthError> {
        let response = self
            .http
            .put(self.url("/meta-data/latest/api/token"))
            .header("X-Metadata-Token-Ttl-Seconds", SESSION_TOKEN_TTL)
            .send()
            .await
            .map_err(|e| Self::error(format!("session token request failed: {e}")))?;
        match response.status().as_u16() {
            200 => {
                let token = response
                    .text()
                    .await
                    .map_err(|e| Self::error(format!("session token unreadable: {e}")))?;
                Ok(Some(token.trim().to_string()).filter(|t| !t.is_empty()))
            }
            // The service does not offer session tokens.
            404 | 405 | 501 => Ok(None),
            status => Err(Self::error(format!(
                "session token request answered HTTP {status}"
            ))),
        }
    }

    async fn fetch(&self) -> Result<Temporary, AuthError> {
        let session = self.session_token().await?;
        let mut request = self.http.get(self.url("/openstack/latest/securitykey"));
        if let Some(token) = &session {
            request = request.header("X-Metadata-Token", token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Self::error(format!("security key request failed: {e}")))?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| Self::error(format!("security key answer unreadable: {e}")))?;
        if status != 200 {
            return Err(Self::error(format!(
                "security key request answered HTTP {status}"
            )));
        }
        let key: SecurityKey = serde_json::from_slice(&body).map_err(|e| {
            Self::error(format!("security key answer is not the expected JSON: {e}"))
        })?;
        let c = key.credential;
        if c.access.is_empty() || c.secret.is_empty() || c.securitytoken.is_empty() {
            return Err(Self::error("security key answer has empty credentials"));
        }
        let lifetime = c
            .expires_at
            .as_deref()
            .and_then(|e| humantime::parse_rfc3339_weak(e.trim_end_matches('Z')).ok())
            .and_then(|at| at.duration_since(SystemTime::now()).ok())
            // Temporary credentials live at least 15 minutes.
            .unwrap_or(Duration::from_secs(15 * 60));
        let now = Instant::now();
        tracing::debug!(
            access_key = %c.access,
            lifetime_seconds = lifetime.as_secs(),
            "fetched temporary credentials from the metadata service"
        );
        Ok(Temporary {
            access_key: c.access,
            secret_key: Secret::new(c.secret),
            security_token: Secret::new(c.securitytoken),
            refresh_at: now + refresh_after(lifetime),
        })
    }
}

impl Credential for Metadata {
    fn authorize<'a>(
        &'a self,
        request: &'a mut OutgoingRequest,
    ) -> BoxFuture<'a, Result<(), AuthError>> {
        Box::pin(async move {
            let mut cached = self.cached.lock().await;
            let due = cached
                .as_ref()
                .is_none_or(|c| Instant::now() >= c.refresh_at);
            if due {
                *cached = Some(self.fetch().await?);
            }
            if let Some(c) = &*cached {
                sign_request(
                    request,
                    &c.access_key,
                    &c.secret_key,
                    Some(&c.security_token),
                    SystemTime::now(),
                );
            }
            Ok(())
        })
    }

    fn kind(&self) -> &'static str {
        "metadata"
    }

    fn refresh_after_unauthorized(&self) -> BoxFuture<'_, bool> {
        // The credentials were refused: drop what is cached (another call
        // refused at the same time may have dropped it already), so the one
        // retry the client allows per call fetches new ones.
        Box::pin(async move {
            self.cached.lock().await.take();
            true
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_refreshed_well_before_they_expire() {
        assert_eq!(
            refresh_after(Duration::from_secs(24 * 3600)),
            Duration::from_secs(24 * 3600 - 2400)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(15 * 60)),
            Duration::from_secs(450)
        );
    }
}
