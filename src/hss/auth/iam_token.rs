//! IAM user tokens: a password identity exchanged for a project-scoped token.
//!
//! Place in the data flow: called by the client for every attempt. The token
//! comes from `POST {iam}/v3/auth/tokens` (HTTP 201, token in the
//! `X-Subject-Token` header, `expires_at` in the body), is sent as
//! `X-Auth-Token`, and is fetched again before it expires (a fifth of its
//! lifetime early, at most an hour) and once after the API answers 401. The
//! token's body names its project, so a target without `project_id` needs
//! no lookup. A refused password (IAM's 400, 401 or 403) is remembered for
//! [`AUTH_HOLD`](super::AUTH_HOLD): no lane asks IAM again until then, so a
//! typo cannot lock the IAM user.

use std::time::{Duration, SystemTime};

use reqwest::Url;
use serde_json::json;
use tokio::time::Instant;

use super::{AuthError, BoxFuture, Credential, OutgoingRequest};
use crate::hss::settings::Secret;

/// How the token is scoped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectScope {
    /// The project's id.
    Id(String),
    /// The project's name: the region id.
    Name(String),
}

/// A cached token.
#[derive(Debug)]
struct Cached {
    token: Secret,
    refresh_at: Instant,
    /// The project the token is scoped to, from its body.
    project_id: Option<String>,
}

/// What the credential holds between calls.
#[derive(Debug, Default)]
struct State {
    token: Option<Cached>,
    /// IAM refused the password: until when nothing is asked, and why.
    refused: Option<(Instant, String)>,
}

/// Authenticates calls with an IAM user's token.
#[derive(Debug)]
pub struct IamToken {
    http: reqwest::Client,
    iam_endpoint: Url,
    domain_name: String,
    user_name: String,
    password: Secret,
    scope: ProjectScope,
    /// The least lifetime left when a token is fetched again.
    refresh_floor: Duration,
    cached: tokio::sync::Mutex<State>,
}

/// How long before expiry a token is fetched again: a fifth of its lifetime,
/// at most an hour.
pub fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 5).min(Duration::from_secs(3600))
}

impl IamToken {
    /// Credentials for one user, scoped to one project.
    pub fn new(
        http: reqwest::Client,
        iam_endpoint: Url,
        domain_name: String,
        user_name: String,
        password: Secret,
        scope: ProjectScope,
    ) -> Self {
        Self {
            http,
            iam_endpoint,
            domain_name,
            user_name,
            password,
            scope,
            refresh_floor: Duration::ZERO,
            cached: tokio::sync::Mutex::new(State::default()),
        }
    }

    /// Fetches tokens again at least `floor` before they expire, when their
    /// [`refresh_margin`] is shorter.
    #[must_use]
    pub fn with_refresh_floor(mut self, floor: Duration) -> Self {
        self.refresh_floor = floor;
        self
    }

    fn error(reason: impl Into<String>) -> AuthError {
        AuthError::Iam(reason.into())
    }

    /// The current token, fetched when there is none or it is due.
    pub async fn token(&self) -> Result<Secret, AuthError> {
        self.current(|c| c.token.clone()).await
    }

    /// Reads the cached token (fetched when there is none or it is due).
    /// Callers wait for one fetch at a time; after a refusal they get it
    /// again, without asking IAM, until the hold ends.
    async fn current<T>(&self, read: impl FnOnce(&Cached) -> T) -> Result<T, AuthError> {
        let mut state = self.cached.lock().await;
        let now = Instant::now();
        if let Some((until, refusal)) = &state.refused {
            if now < *until {
                return Err(AuthError::Refused(refusal.clone()));
            }
            state.refused = None;
        }
        if let Some(c) = &state.token
            && now < c.refresh_at
        {
            return Ok(read(c));
        }
        match self.fetch().await {
            Ok(fresh) => {
                let value = read(&fresh);
                state.token = Some(fresh);
                Ok(value)
            }
            Err(AuthError::Refused(refusal)) => {
                let until = now.checked_add(super::AUTH_HOLD).unwrap_or(now);
                state.refused = Some((until, refusal.clone()));
                Err(AuthError::Refused(refusal))
            }
            Err(error) => Err(error),
        }
    }

    async fn fetch(&self) -> Result<Cached, AuthError> {
        let mut url = self.iam_endpoint.clone();
        url.set_path(&format!(
            "{}/v3/auth/tokens",
            self.iam_endpoint.path().trim_end_matches('/')
        ));
        url.set_query(Some("nocatalog=true"));
        let project = match &self.scope {
            ProjectScope::Id(id) => json!({ "id": id }),
            ProjectScope::Name(name) => json!({ "name": name }),
        };
        let body = json!({
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": { "user": {
                        "name": self.user_name,
                        "password": self.password.expose(),
                        "domain": { "name": self.domain_name },
                    }},
                },
                "scope": { "project": project },
            }
        });
        use super::super::http;
        let mut response = self
            .http
            .post(url.clone())
            .header("Content-Type", "application/json;charset=utf8")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| Self::error(format!("token request failed: {}", http::error_chain(&e))))?;
        let status = response.status().as_u16();
        let request_id = http::request_id(response.headers());
        if let Some(refusal) = http::redirect_refusal(&url, status, response.headers()) {
            return Err(Self::error(refusal));
        }
        let token = response
            .headers()
            .get("X-Subject-Token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = http::read_capped(&mut response, http::MAX_AUX_BODY)
            .await
            .map_err(|e| Self::error(format!("token answer: {e}")))?;
        if status != 201 && status != 200 {
            let (code, message) = http::error_details(&text);
            let reason = format!(
                "HTTP {status} for user {}: {code}: {message}{}",
                self.user_name,
                http::request_id_suffix(request_id.as_deref())
            );
            // IAM answers a wrong password, an unknown or a locked user with
            // 400, 401 or 403: each one counts towards the lockout.
            return Err(if matches!(status, 400 | 401 | 403) {
                AuthError::Refused(reason)
            } else {
                Self::error(reason)
            });
        }
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Self::error("IAM answered without an X-Subject-Token header"))?;
        let parsed = serde_json::from_slice::<serde_json::Value>(&text).ok();
        let field = |pointer: &str| {
            parsed
                .as_ref()
                .and_then(|v| v.pointer(pointer))
                .and_then(|e| e.as_str())
                .map(str::to_string)
        };
        let project_id = field("/token/project/id").filter(|id| {
            !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
        });
        let expires_at = field("/token/expires_at")
            .and_then(|e| humantime::parse_rfc3339_weak(e.trim_end_matches('Z')).ok());
        let lifetime = expires_at
            .and_then(|at| at.duration_since(SystemTime::now()).ok())
            // Tokens live 24 hours; an unreadable expiry is taken as one hour.
            .unwrap_or(Duration::from_secs(3600));
        let now = Instant::now();
        tracing::debug!(
            user = %self.user_name,
            lifetime_seconds = lifetime.as_secs(),
            "fetched an IAM token"
        );
        Ok(Cached {
            token: Secret::new(token),
            refresh_at: super::refresh_at(
                now,
                lifetime,
                lifetime - refresh_margin(lifetime),
                self.refresh_floor,
            ),
            project_id,
        })
    }
}

impl Credential for IamToken {
    fn authorize<'a>(
        &'a self,
        request: &'a mut OutgoingRequest,
    ) -> BoxFuture<'a, Result<(), AuthError>> {
        Box::pin(async move {
            let token = self.token().await?;
            request
                .headers
                .push(("X-Auth-Token".to_string(), token.expose().to_string()));
            Ok(())
        })
    }

    fn kind(&self) -> &'static str {
        "iam"
    }

    fn refresh_after_unauthorized(&self) -> BoxFuture<'_, bool> {
        // The credentials were refused: drop what is cached (another call
        // refused at the same time may have dropped it already), so the one
        // retry the client allows per call fetches new ones.
        Box::pin(async move {
            self.cached.lock().await.token = None;
            true
        })
    }

    fn scoped_project_id(&self) -> BoxFuture<'_, Result<Option<String>, AuthError>> {
        Box::pin(async move { self.current(|c| c.project_id.clone()).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_refreshed_well_before_they_expire() {
        assert_eq!(
            refresh_margin(Duration::from_secs(24 * 3600)),
            Duration::from_secs(3600)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(10)),
            Duration::from_secs(2)
        );
    }
}
