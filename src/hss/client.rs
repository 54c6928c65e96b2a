//! The listing call: budget, authentication, sending, bounded reading,
//! parsing, and retries.
//!
//! Place in the data flow: the scheduler asks [`Client::list_page`] for one
//! page of one scope; the client takes a budget permit for every attempt,
//! lets the target's credential authorize the request, sends it, reads at most
//! `max_response_bytes` of the answer and parses it into a
//! [`Page`](super::model::Page). Transport errors, timeouts, malformed bodies,
//! 429 and 5xx are retried with exponential backoff and full jitter, up to
//! `max_retries`; a 429 also pauses the shared budget. 400, 401, 403 and 404
//! are never retried: repeated authentication failures lock the key, and the
//! others will not change by asking again. Until a call of the target has
//! succeeded, its calls go one at a time, so wrong credentials cost one failed
//! authentication, not one per scope; after a 401 the client sends nothing
//! for [`AUTH_HOLD`] (the documented lock time), and every lane of the target
//! fails at once with the refusal instead of adding failed authentications. What happens is reported to an [`ApiObserver`], which the
//! metrics module implements.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;

use super::auth::{AuthError, Credential, OutgoingRequest};
use super::budget::{Budget, Priority};
use super::model::{ModelError, Page, parse_page_limited};
use crate::config::ImageType;

/// First backoff before a retry; doubles each attempt.
pub const RETRY_BASE: Duration = Duration::from_secs(1);
/// Longest backoff before a retry.
pub const RETRY_CAP: Duration = Duration::from_secs(60);
/// How long a target sends nothing after a 401: more than 5 failed AK/SK
/// authentications in a row lock the key for 5 minutes.
pub const AUTH_HOLD: Duration = Duration::from_secs(300);

/// Receives what happens to calls, for self-metrics.
pub trait ApiObserver: Send + Sync {
    /// A call was answered with `code` (HTTP status, or `error` when no
    /// answer came) after `duration`.
    fn request(&self, target: &str, code: &str, duration: Duration);
    /// A call is retried because of `reason`.
    fn retry(&self, target: &str, reason: &'static str);
    /// The server answered 429.
    fn throttled(&self, target: &str);
    /// A call waited `waited` for a budget permit.
    fn budget_wait(&self, target: &str, waited: Duration);
    /// `count` values of `field` in a page could not be read.
    fn invalid_field(&self, target: &str, field: &'static str, count: u64);
}

/// An observer that ignores everything.
#[derive(Debug, Default)]
pub struct NoopObserver;

impl ApiObserver for NoopObserver {
    fn request(&self, _: &str, _: &str, _: Duration) {}
    fn retry(&self, _: &str, _: &'static str) {}
    fn throttled(&self, _: &str) {}
    fn budget_wait(&self, _: &str, _: Duration) {}
    fn invalid_field(&self, _: &str, _: &'static str, _: u64) {}
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API answered with an error status.
    #[error("HTTP {status}: {code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The API's `error_code`, or `-` when there was none.
        code: String,
        /// The API's `error_msg`, or the start of the body.
        message: String,
        /// The `Retry-After` the server asked for.
        retry_after: Option<Duration>,
    },
    /// No answer: connection refused or reset, DNS, TLS.
    #[error("request failed: {0}")]
    Transport(String),
    /// No complete answer within `request_timeout`.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The body is larger than the cap.
    #[error("response body larger than the {limit}-byte cap")]
    BodyTooLarge {
        /// The cap.
        limit: usize,
    },
    /// The body is not a page.
    #[error(transparent)]
    Decode(#[from] ModelError),
    /// The credential could not authorize the call.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The project id could not be looked up through IAM.
    #[error("project_id lookup through IAM for region {region}: {reason}")]
    ProjectLookup {
        /// The region whose project was looked for.
        region: String,
        /// Why it failed.
        reason: String,
    },
    /// Not sent: the API refused this target's credentials a moment ago.
    #[error("not sent: the API refused this target's credentials ({refusal}); calls resume in {}s", .resume_in.as_secs())]
    AuthHold {
        /// The refusal, as the 401 said it.
        refusal: String,
        /// Time left of the hold.
        resume_in: Duration,
    },
}

impl Error {
    /// Whether asking again may help.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api { status, .. } => *status == 429 || *status >= 500,
            Self::Transport(_) | Self::Timeout(_) | Self::Decode(_) => true,
            Self::BodyTooLarge { .. }
            | Self::Auth(_)
            | Self::AuthHold { .. }
            | Self::ProjectLookup { .. } => false,
        }
    }

    /// The `reason` label of a retry.
    pub fn retry_reason(&self) -> &'static str {
        match self {
            Self::Api { status: 429, .. } => "throttled",
            Self::Api { .. } => "server_error",
            Self::Transport(_) => "transport",
            Self::Timeout(_) => "timeout",
            Self::Decode(_) => "malformed",
            Self::BodyTooLarge { .. } => "too_large",
            Self::Auth(_) | Self::AuthHold { .. } | Self::ProjectLookup { .. } => "auth",
        }
    }
}

/// One page request of the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Enterprise project (`0`, an id, or `all_granted_eps`).
    pub enterprise_project_id: String,
    /// Image type.
    pub image_type: ImageType,
    /// First row.
    pub offset: u64,
    /// Rows per page.
    pub limit: u32,
    /// Only the latest version of each image.
    pub latest_version: bool,
    /// Only images with (or without) malicious files.
    pub has_malicious_file: Option<bool>,
}

impl ListQuery {
    fn pairs(&self) -> Vec<(String, String)> {
        let mut pairs = vec![
            (
                "enterprise_project_id".to_string(),
                self.enterprise_project_id.clone(),
            ),
            (
                "image_type".to_string(),
                self.image_type.as_str().to_string(),
            ),
            ("limit".to_string(), self.limit.to_string()),
            ("offset".to_string(), self.offset.to_string()),
        ];
        if self.latest_version {
            pairs.push(("latest_version".to_string(), "true".to_string()));
        }
        if let Some(has) = self.has_malicious_file {
            pairs.push(("has_malicious_file".to_string(), has.to_string()));
        }
        pairs
    }
}

/// How calls behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSettings {
    /// Time limit of one attempt, body included.
    pub request_timeout: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Cap on one response body.
    pub max_response_bytes: usize,
    /// First backoff; doubles per attempt up to `retry_cap`.
    pub retry_base: Duration,
    /// Longest backoff.
    pub retry_cap: Duration,
}

/// The API client of one target.
#[derive(Clone)]
pub struct Client {
    target: Arc<str>,
    http: reqwest::Client,
    endpoint: Url,
    iam_endpoint: Url,
    region: String,
    api: crate::config::ListingApi,
    /// Configured, or looked up through IAM before the first call.
    project_id: Arc<tokio::sync::Mutex<Option<String>>>,
    credential: Arc<dyn Credential>,
    budget: Arc<Budget>,
    observer: Arc<dyn ApiObserver>,
    settings: ClientSettings,
    /// Until when nothing is sent after a 401, and the refusal.
    auth_hold: Arc<std::sync::Mutex<Option<(Instant, String)>>>,
    /// Whether a call with these credentials has succeeded since the last 401.
    proven: Arc<std::sync::atomic::AtomicBool>,
    /// Held by the one call in flight while the credentials are unproven.
    probe: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("target", &self.target)
            .field("endpoint", &self.endpoint.as_str())
            .field("credential", &self.credential.kind())
            .finish_non_exhaustive()
    }
}

/// Builds the HTTP client all targets share: rustls with the system's roots,
/// proxies from `HTTPS_PROXY`/`NO_PROXY`.
pub fn http_client(request_timeout: Duration) -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .timeout(request_timeout)
        .connect_timeout(request_timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("hss-swr-exporter/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Transport(e.to_string()))
}

impl Client {
    /// A client for one target.
    pub fn new(
        target: &crate::config::Target,
        http: reqwest::Client,
        credential: Arc<dyn Credential>,
        budget: Arc<Budget>,
        observer: Arc<dyn ApiObserver>,
        settings: ClientSettings,
    ) -> Self {
        Self {
            target: Arc::from(target.name.as_str()),
            http,
            endpoint: target.endpoint.clone(),
            iam_endpoint: target.iam_endpoint.clone(),
            region: target.region.clone(),
            api: target.api,
            project_id: Arc::new(tokio::sync::Mutex::new(target.project_id.clone())),
            credential,
            budget,
            observer,
            settings,
            auth_hold: Arc::new(std::sync::Mutex::new(None)),
            proven: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            probe: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    fn held(&self) -> Option<Error> {
        let hold = self
            .auth_hold
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (until, refusal) = hold.as_ref()?;
        let now = Instant::now();
        (*until > now).then(|| Error::AuthHold {
            refusal: refusal.clone(),
            resume_in: *until - now,
        })
    }

    /// The target this client calls for.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The listing path for a project, below the endpoint's own path.
    fn listing_path(&self, project_id: &str) -> String {
        format!(
            "{}/v5/{project_id}/{}",
            self.endpoint.path().trim_end_matches('/'),
            self.api.path(),
        )
    }

    /// The project id: configured, or looked up through IAM once.
    async fn project_id(&self) -> Result<String, Error> {
        let mut project = self.project_id.lock().await;
        if let Some(id) = &*project {
            return Ok(id.clone());
        }
        let id = super::iam::lookup_project_id(
            &self.http,
            &self.iam_endpoint,
            &self.region,
            self.credential.as_ref(),
        )
        .await
        .map_err(|reason| Error::ProjectLookup {
            region: self.region.clone(),
            reason,
        })?;
        tracing::info!(target_name = %self.target, region = %self.region, project_id = %id, "looked up the project id through IAM");
        *project = Some(id.clone());
        Ok(id)
    }

    /// Fetches one page, with retries. Every attempt waits for a budget permit
    /// of `priority`; the first one not before `not_before`, for which it
    /// holds a reservation in the budget until then.
    pub async fn list_page(
        &self,
        query: &ListQuery,
        priority: Priority,
        not_before: Option<Instant>,
    ) -> Result<Page, Error> {
        use std::sync::atomic::Ordering;
        let mut attempt = 0;
        let mut refreshed = false;
        loop {
            let _probe = if self.proven.load(Ordering::Acquire) {
                None
            } else {
                Some(self.probe.lock().await)
            };
            if let Some(error) = self.held() {
                return Err(error);
            }
            let reserved = if attempt == 0 { not_before } else { None };
            let (permit, waited) = self.budget.acquire_at(priority, reserved).await;
            if let Some(error) = self.held() {
                // Another lane was refused while this call waited.
                permit.finish();
                return Err(error);
            }
            self.observer.budget_wait(&self.target, waited);
            let result = self.attempt(query).await;
            permit.finish();
            let error = match result {
                Ok(page) => {
                    self.proven.store(true, Ordering::Release);
                    for (field, count) in &page.invalid_fields {
                        self.observer.invalid_field(&self.target, field, *count);
                    }
                    return Ok(page);
                }
                Err(error) => error,
            };
            if let Error::Api { status: 401, .. } = &error
                && !refreshed
                && self.credential.refresh_after_unauthorized().await
            {
                // The credential dropped an expired token: one more try.
                refreshed = true;
                self.observer.retry(&self.target, "unauthorized");
                continue;
            }
            if let Error::Api { status: 401, .. } = &error {
                self.proven.store(false, Ordering::Release);
                *self
                    .auth_hold
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some((Instant::now() + AUTH_HOLD, error.to_string()));
                tracing::warn!(
                    target_name = %self.target,
                    error = %error,
                    hold_seconds = AUTH_HOLD.as_secs(),
                    "the API refused the credentials; this target sends nothing until the hold ends, so the key is not locked by repeated failures"
                );
            }
            if let Error::Api {
                status: 429,
                retry_after,
                ..
            } = &error
            {
                self.observer.throttled(&self.target);
                self.budget
                    .pause(retry_after.unwrap_or(self.budget.limit().window));
            }
            if !error.is_retryable() || attempt >= self.settings.max_retries {
                return Err(error);
            }
            self.observer.retry(&self.target, error.retry_reason());
            tracing::debug!(
                target_name = %self.target,
                offset = query.offset,
                attempt = attempt + 1,
                error = %error,
                "retrying call"
            );
            // After a 429 the budget pause is the wait; otherwise back off.
            if !matches!(error, Error::Api { status: 429, .. }) {
                tokio::time::sleep(backoff(
                    attempt,
                    self.settings.retry_base,
                    self.settings.retry_cap,
                ))
                .await;
            }
            attempt += 1;
        }
    }

    async fn attempt(&self, query: &ListQuery) -> Result<Page, Error> {
        let project_id = self.project_id().await?;
        let mut request = OutgoingRequest {
            method: "GET",
            host: host_header(&self.endpoint),
            path: self.listing_path(&project_id),
            query: query.pairs(),
            headers: vec![
                ("X-Project-Id".to_string(), project_id),
                ("Accept".to_string(), "application/json".to_string()),
            ],
            body: Vec::new(),
        };
        self.credential.authorize(&mut request).await?;
        let mut url = self.endpoint.clone();
        url.set_path(&request.path);
        url.set_query(Some(&super::auth::signer::canonical_query(&request.query)));
        let mut headers = HeaderMap::new();
        for (name, value) in &request.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| Error::Transport(format!("invalid header name {name}")))?;
            // Header values never go into messages: they may hold secrets.
            let value = HeaderValue::from_str(value)
                .map_err(|_| Error::Transport(format!("invalid value for header {name}")))?;
            headers.insert(name, value);
        }
        let started = Instant::now();
        let response = self.http.get(url).headers(headers).send().await;
        let mut response = match response {
            Ok(response) => response,
            Err(error) => {
                self.observer
                    .request(&self.target, "error", started.elapsed());
                return Err(self.transport_error(&error));
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = self.read_body(&mut response).await;
        let code = if body.is_ok() {
            status.to_string()
        } else {
            "error".to_string()
        };
        self.observer
            .request(&self.target, &code, started.elapsed());
        let body = body?;
        if !(200..300).contains(&status) {
            let (code, message) = error_details(&body);
            return Err(Error::Api {
                status,
                code,
                message,
                retry_after,
            });
        }
        Ok(parse_page_limited(&body, query.limit)?)
    }

    async fn read_body(&self, response: &mut reqwest::Response) -> Result<Vec<u8>, Error> {
        let limit = self.settings.max_response_bytes;
        if response
            .content_length()
            .is_some_and(|len| len > limit as u64)
        {
            return Err(Error::BodyTooLarge { limit });
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > limit {
                        return Err(Error::BodyTooLarge { limit });
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
                Err(error) => return Err(self.transport_error(&error)),
            }
        }
    }

    fn transport_error(&self, error: &reqwest::Error) -> Error {
        if error.is_timeout() {
            Error::Timeout(self.settings.request_timeout)
        } else {
            Error::Transport(error_chain(error))
        }
    }
}

/// The error with its causes, on one line.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// The `Host` header value for a URL, as the HTTP client will send it.
pub(crate) fn host_header(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// Reads `error_code` and `error_msg` from an error body, in the shapes
/// Huawei Cloud services use; falls back to the start of the body.
pub fn error_details(body: &[u8]) -> (String, String) {
    fn text(value: Option<&serde_json::Value>) -> Option<String> {
        match value? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        let inner = value
            .get("error")
            .filter(|v| v.is_object())
            .unwrap_or(&value);
        let code = text(inner.get("error_code")).or_else(|| text(inner.get("code")));
        let message = text(inner.get("error_msg"))
            .or_else(|| text(inner.get("error_message")))
            .or_else(|| text(inner.get("message")));
        if code.is_some() || message.is_some() {
            return (
                code.unwrap_or_else(|| "-".to_string()),
                message.map(|m| one_line(&m)).unwrap_or_default(),
            );
        }
    }
    let start = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    ("-".to_string(), one_line(&start))
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Full-jitter exponential backoff: a random time up to `base * 2^attempt`,
/// capped.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let ceiling = base
        .checked_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX))
        .unwrap_or(cap)
        .min(cap);
    let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::random_range(0..=millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_in_every_known_shape() {
        assert_eq!(
            error_details(br#"{"error_code":"HSS.0001","error_msg":"invalid  parameter"}"#),
            ("HSS.0001".into(), "invalid parameter".into())
        );
        assert_eq!(
            error_details(br#"{"status_code":429,"error_code":"APIGW.0308","error_message":"The throttling threshold has been reached"}"#),
            ("APIGW.0308".into(), "The throttling threshold has been reached".into())
        );
        assert_eq!(
            error_details(br#"{"error":{"code":401,"message":"The request you have made requires authentication.","title":"Unauthorized"}}"#),
            ("401".into(), "The request you have made requires authentication.".into())
        );
        assert_eq!(
            error_details(b"<html>\n bad gateway</html>"),
            ("-".into(), "<html> bad gateway</html>".into())
        );
    }

    #[test]
    fn only_real_faults_are_retried() {
        let api = |status| Error::Api {
            status,
            code: "-".into(),
            message: String::new(),
            retry_after: None,
        };
        assert!(api(429).is_retryable());
        assert!(api(500).is_retryable());
        assert!(api(503).is_retryable());
        for status in [400, 401, 403, 404] {
            assert!(!api(status).is_retryable(), "{status}");
        }
        assert!(Error::Timeout(Duration::from_secs(1)).is_retryable());
        assert!(!Error::BodyTooLarge { limit: 1 }.is_retryable());
        assert_eq!(api(429).retry_reason(), "throttled");
    }

    #[test]
    fn backoff_stays_under_its_ceiling() {
        for attempt in 0..40 {
            let d = backoff(attempt, Duration::from_secs(1), Duration::from_secs(60));
            assert!(d <= Duration::from_secs(60));
            if attempt == 0 {
                assert!(d <= Duration::from_secs(1));
            }
        }
    }

    #[test]
    fn query_carries_the_page_and_filters() {
        let query = ListQuery {
            enterprise_project_id: "0".into(),
            image_type: ImageType::Shared,
            offset: 400,
            limit: 200,
            latest_version: true,
            has_malicious_file: Some(true),
        };
        assert_eq!(
            super::super::auth::signer::canonical_query(&query.pairs()),
            "enterprise_project_id=0&has_malicious_file=true&image_type=shared_image&latest_version=true&limit=200&offset=400"
        );
    }

    #[test]
    fn host_header_keeps_explicit_ports_only() {
        assert_eq!(
            host_header(&Url::parse("https://hss.x.com/").unwrap()),
            "hss.x.com"
        );
        assert_eq!(
            host_header(&Url::parse("https://hss.x.com:443/").unwrap()),
            "hss.x.com"
        );
        assert_eq!(
            host_header(&Url::parse("http://127.0.0.1:9930/").unwrap()),
            "127.0.0.1:9930"
        );
    }
}
