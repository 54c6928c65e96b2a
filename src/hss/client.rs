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
//! authentication, not one per scope. Any refusal of the credentials (a 401
//! from the listing or the project lookup, IAM refusing the password) puts
//! the whole target on hold for [`AUTH_HOLD`] (the documented lock time):
//! every lane of the target fails at once with "authentication failed, held
//! until ..." instead of adding failed authentications. A 3xx is never
//! followed. What happens is reported to an [`ApiObserver`], which the metrics
//! module implements.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;

use super::auth::{AuthError, Credential, OutgoingRequest};
use super::budget::{Budget, Priority};
use super::model::{ModelError, Page, parse_page_limited};
use super::settings::{ImageType, ListingApi, TargetSettings};

/// First backoff before a retry; doubles each attempt.
pub const RETRY_BASE: Duration = Duration::from_secs(1);
/// Longest backoff before a retry.
pub const RETRY_CAP: Duration = Duration::from_secs(60);
pub use super::auth::AUTH_HOLD;
use super::http::request_id_suffix;

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
    #[error("HTTP {status}: {code}: {message}{}", request_id_suffix(.request_id.as_deref()))]
    Api {
        /// HTTP status.
        status: u16,
        /// The API's `error_code`, or `-` when there was none.
        code: String,
        /// The API's `error_msg` (cut), or a description of a non-JSON body.
        message: String,
        /// The `Retry-After` the server asked for.
        retry_after: Option<Duration>,
        /// The gateway's `X-Request-Id`, which support asks for.
        request_id: Option<String>,
    },
    /// The API answered with a redirect, which is never followed.
    #[error("{0}")]
    Redirect(String),
    /// No answer: connection refused or reset, DNS, TLS.
    #[error("request failed: {0}")]
    Transport(String),
    /// No complete answer within `request_timeout`.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Not sent: no budget slot came before the caller's deadline.
    #[error("not sent: no budget slot before the deadline")]
    NoSlot,
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
        /// Whether IAM refused the credentials (401).
        refused: bool,
    },
    /// Not sent: the credentials were refused a moment ago, and another
    /// failed authentication could lock the key.
    #[error("authentication failed, held until {} ({}s left) so that retries cannot lock the key: {refusal}", humantime::format_rfc3339_seconds(*.until), .resume_in.as_secs())]
    AuthHold {
        /// The refusal that started the hold.
        refusal: String,
        /// When calls resume, in wall-clock time.
        until: SystemTime,
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
            | Self::Redirect(_)
            | Self::Auth(_)
            | Self::AuthHold { .. }
            | Self::ProjectLookup { .. }
            | Self::NoSlot => false,
        }
    }

    /// Whether the credentials were refused: a 401 from the listing or the
    /// project lookup, or IAM refusing to issue a token.
    pub fn is_auth_refusal(&self) -> bool {
        match self {
            Self::Api { status, .. } => *status == 401,
            Self::Auth(error) => error.is_refusal(),
            Self::ProjectLookup { refused, .. } => *refused,
            _ => false,
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
            Self::Redirect(_) => "redirect",
            Self::NoSlot => "no_slot",
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
    /// Only images whose latest scan completed at or after this time (epoch
    /// milliseconds, `start_latest_scan_time`).
    pub scanned_since_ms: Option<i64>,
    /// Only images pushed or updated at or after this time (epoch
    /// milliseconds, `start_latest_update_time`).
    pub updated_since_ms: Option<i64>,
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
        if let Some(ms) = self.scanned_since_ms {
            pairs.push(("start_latest_scan_time".to_string(), ms.to_string()));
        }
        if let Some(ms) = self.updated_since_ms {
            pairs.push(("start_latest_update_time".to_string(), ms.to_string()));
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
    api: ListingApi,
    /// Configured, or looked up through IAM before the first call.
    project_id: Arc<tokio::sync::Mutex<Option<String>>>,
    credential: Arc<dyn Credential>,
    budget: Arc<Budget>,
    observer: Arc<dyn ApiObserver>,
    settings: ClientSettings,
    /// Until when nothing is sent after a refusal, and the refusal.
    auth_hold: Arc<std::sync::Mutex<Option<Hold>>>,
    /// Whether a call with these credentials has succeeded since the last 401.
    proven: Arc<std::sync::atomic::AtomicBool>,
    /// Held by the one call in flight while the credentials are unproven.
    probe: Arc<tokio::sync::Mutex<()>>,
}

/// A target's hold after its credentials were refused.
#[derive(Debug, Clone)]
struct Hold {
    until: Instant,
    until_wall: SystemTime,
    refusal: String,
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

/// Builds the HTTP client all outbound calls share (see [`super::http::client`]).
pub fn http_client(request_timeout: Duration) -> Result<reqwest::Client, Error> {
    super::http::client(request_timeout).map_err(Error::Transport)
}

impl Client {
    /// A client for one target.
    pub fn new(
        target: &TargetSettings,
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
        let hold = hold.as_ref()?;
        let now = Instant::now();
        (hold.until > now).then(|| Error::AuthHold {
            refusal: hold.refusal.clone(),
            until: hold.until_wall,
            resume_in: hold.until - now,
        })
    }

    /// Puts the whole target on hold after `refusal`; returns the error every
    /// lane reports until the hold ends.
    fn hold(&self, refusal: &Error) -> Error {
        use std::sync::atomic::Ordering;
        self.proven.store(false, Ordering::Release);
        let now = Instant::now();
        let hold = Hold {
            until: now.checked_add(AUTH_HOLD).unwrap_or(now),
            until_wall: SystemTime::now() + AUTH_HOLD,
            refusal: refusal.to_string(),
        };
        tracing::warn!(
            target_name = %self.target,
            error = %refusal,
            hold_seconds = AUTH_HOLD.as_secs(),
            "the credentials were refused; this target sends nothing until the hold ends, so the key is not locked by repeated failures"
        );
        *self
            .auth_hold
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(hold.clone());
        Error::AuthHold {
            refusal: hold.refusal,
            until: hold.until_wall,
            resume_in: AUTH_HOLD,
        }
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

    /// The project id: configured, given by the credential (an IAM token's
    /// scope), or looked up through IAM once. A refusal puts the target on
    /// hold before the next caller can try again.
    async fn project_id(&self) -> Result<String, Error> {
        let mut project = self.project_id.lock().await;
        if let Some(id) = &*project {
            return Ok(id.clone());
        }
        if let Some(error) = self.held() {
            return Err(error);
        }
        let found = match self.credential.scoped_project_id().await {
            Ok(Some(id)) => Ok(id),
            Ok(None) => super::iam::lookup_project_id(
                &self.http,
                &self.iam_endpoint,
                &self.region,
                self.credential.as_ref(),
            )
            .await
            .map_err(|e| Error::ProjectLookup {
                region: self.region.clone(),
                reason: e.to_string(),
                refused: e.is_refusal(),
            }),
            Err(error) => Err(Error::Auth(error)),
        };
        match found {
            Ok(id) => {
                tracing::info!(target_name = %self.target, region = %self.region, project_id = %id, "found the project id through IAM");
                *project = Some(id.clone());
                Ok(id)
            }
            Err(error) if error.is_auth_refusal() => Err(self.hold(&error)),
            Err(error) => Err(error),
        }
    }

    /// Fetches one page, with retries. Every attempt waits for a budget permit
    /// of `priority`; the first one not before `not_before`, for which it
    /// holds a reservation in the budget until then. An attempt that gets no
    /// permit by `give_up_at` is not sent ([`Error::NoSlot`]).
    pub async fn list_page(
        &self,
        query: &ListQuery,
        priority: Priority,
        not_before: Option<Instant>,
        give_up_at: Option<Instant>,
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
            let Some((permit, waited)) = self
                .budget
                .acquire_until(priority, reserved, give_up_at)
                .await
            else {
                return Err(Error::NoSlot);
            };
            if let Some(error) = self.held() {
                // Another lane was refused while this call waited.
                permit.finish();
                return Err(error);
            }
            self.observer.budget_wait(&self.target, waited);
            let result = self.attempt(query).await;
            let error = match result {
                Ok(page) => {
                    permit.succeeded();
                    self.proven.store(true, Ordering::Release);
                    for (field, count) in &page.invalid_fields {
                        self.observer.invalid_field(&self.target, field, *count);
                    }
                    return Ok(page);
                }
                Err(error @ Error::Timeout(_)) => {
                    // The server may answer it yet, and count it then.
                    permit.unanswered();
                    error
                }
                Err(error) => {
                    permit.finish();
                    error
                }
            };
            if let Error::Api {
                status: 429,
                retry_after,
                ..
            } = &error
            {
                // Whether or not the call is tried again, the server's
                // window is full: nothing of this API goes out for a while.
                self.observer.throttled(&self.target);
                self.budget
                    .pause(retry_after.unwrap_or(self.budget.limit().window));
            }
            let next = match classify(&error, attempt, self.settings.max_retries, refreshed) {
                Next::Refresh if self.credential.refresh_after_unauthorized().await => {
                    refreshed = true;
                    self.observer.retry(&self.target, "unauthorized");
                    continue;
                }
                // Nothing to refresh: the credentials themselves were refused.
                Next::Refresh | Next::Hold => return Err(self.hold(&error)),
                Next::Fail => return Err(error),
                next @ (Next::AfterPause | Next::AfterBackoff) => next,
            };
            self.observer.retry(&self.target, error.retry_reason());
            tracing::debug!(
                target_name = %self.target,
                offset = query.offset,
                attempt = attempt + 1,
                error = %error,
                "retrying call"
            );
            if next == Next::AfterBackoff {
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
        let response = self.http.get(url.clone()).headers(headers).send().await;
        let mut response = match response {
            Ok(response) => response,
            Err(error) => {
                self.observer
                    .request(&self.target, "error", started.elapsed());
                return Err(self.transport_error(&error));
            }
        };
        let status = response.status().as_u16();
        let retry_after = super::http::retry_after(response.headers(), SystemTime::now());
        let request_id = super::http::request_id(response.headers());
        if let Some(refusal) = super::http::redirect_refusal(&url, status, response.headers()) {
            self.observer
                .request(&self.target, &status.to_string(), started.elapsed());
            return Err(Error::Redirect(refusal));
        }
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
                request_id,
            });
        }
        Ok(parse_page_limited(&body, query.limit)?)
    }

    async fn read_body(&self, response: &mut reqwest::Response) -> Result<Vec<u8>, Error> {
        use super::http::ReadError;
        super::http::read_capped(response, self.settings.max_response_bytes)
            .await
            .map_err(|error| match error {
                ReadError::TooLarge { limit } => Error::BodyTooLarge { limit },
                ReadError::Timeout => Error::Timeout(self.settings.request_timeout),
                ReadError::Transport(reason) => Error::Transport(reason),
            })
    }

    fn transport_error(&self, error: &reqwest::Error) -> Error {
        if error.is_timeout() {
            Error::Timeout(self.settings.request_timeout)
        } else {
            Error::Transport(super::http::error_chain(error))
        }
    }
}

/// The `Host` header value for a URL, as the HTTP client will send it.
pub(crate) fn host_header(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

pub use super::http::error_details;

/// What to do after attempt number `attempt` (0 for the first) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// A 401 not yet refreshed for: let the credential drop its cached token
    /// or keys and try once more, if it had any (else [`Next::Hold`]).
    Refresh,
    /// The credentials were refused: hold the whole target.
    Hold,
    /// Give up with the error.
    Fail,
    /// Try again once the budget's pause (after a 429) allows.
    AfterPause,
    /// Try again after an exponential backoff with full jitter.
    AfterBackoff,
}

/// The retry decision of [`Client::list_page`], without I/O: 401s get one
/// refresh, then hold the target, as any refusal of the credentials does;
/// transport errors, timeouts, malformed pages, 429 and 5xx are retried up to
/// `max_retries` (a 429 waits for the budget's pause, the rest back off);
/// everything else fails at once.
pub fn classify(error: &Error, attempt: u32, max_retries: u32, refreshed: bool) -> Next {
    if matches!(error, Error::Api { status: 401, .. }) && !refreshed {
        return Next::Refresh;
    }
    if error.is_auth_refusal() {
        return Next::Hold;
    }
    if !error.is_retryable() || attempt >= max_retries {
        return Next::Fail;
    }
    if matches!(error, Error::Api { status: 429, .. }) {
        Next::AfterPause
    } else {
        Next::AfterBackoff
    }
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
    fn only_real_faults_are_retried() {
        let api = |status| Error::Api {
            status,
            code: "-".into(),
            message: String::new(),
            retry_after: None,
            request_id: None,
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
    fn every_failure_gets_its_next_step() {
        let api = |status| Error::Api {
            status,
            code: "-".into(),
            message: String::new(),
            retry_after: None,
            request_id: None,
        };
        let refused = Error::Auth(super::super::auth::AuthError::Refused("wrong".into()));
        let lookup_refused = Error::ProjectLookup {
            region: "r".into(),
            reason: "401".into(),
            refused: true,
        };
        let cases = [
            // (error, attempt, refreshed) -> next, with max_retries = 2
            (api(401), 0, false, Next::Refresh),
            (api(401), 0, true, Next::Hold),
            (api(401), 2, false, Next::Refresh),
            (refused, 0, false, Next::Hold),
            (lookup_refused, 0, false, Next::Hold),
            (api(429), 0, false, Next::AfterPause),
            (api(429), 2, false, Next::Fail),
            (api(503), 1, false, Next::AfterBackoff),
            (api(503), 2, false, Next::Fail),
            (
                Error::Timeout(Duration::from_secs(1)),
                0,
                false,
                Next::AfterBackoff,
            ),
            (
                Error::Transport("reset".into()),
                0,
                false,
                Next::AfterBackoff,
            ),
            (api(400), 0, false, Next::Fail),
            (api(403), 0, false, Next::Fail),
            (api(404), 0, false, Next::Fail),
            (Error::Redirect("302".into()), 0, false, Next::Fail),
            (Error::BodyTooLarge { limit: 1 }, 0, false, Next::Fail),
        ];
        for (error, attempt, refreshed, expected) in cases {
            assert_eq!(
                classify(&error, attempt, 2, refreshed),
                expected,
                "{error} after attempt {attempt}"
            );
        }
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
            scanned_since_ms: None,
            updated_since_ms: None,
        };
        assert_eq!(
            super::super::auth::signer::canonical_query(&query.pairs()),
            "enterprise_project_id=0&has_malicious_file=true&image_type=shared_image&latest_version=true&limit=200&offset=400"
        );
        let changes = ListQuery {
            has_malicious_file: None,
            latest_version: false,
            scanned_since_ms: Some(1_700_000_000_000),
            updated_since_ms: Some(1_700_000_000_001),
            ..query
        };
        assert_eq!(
            super::super::auth::signer::canonical_query(&changes.pairs()),
            "enterprise_project_id=0&image_type=shared_image&limit=200&offset=400&start_latest_scan_time=1700000000000&start_latest_update_time=1700000000001"
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
