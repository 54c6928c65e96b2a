//! Temporary AK/SK from the ECS/CCE metadata service (agency credentials).
//!
//! Place in the data flow: called by the client for every attempt. The
//! credentials come from `GET {endpoint}/openstack/latest/securitykey`, after a
//! `PUT /meta-data/latest/api/token` session token when the service offers
//! one; calls are signed with the temporary AK/SK and carry (and sign)
//! `X-Security-Token`. They are fetched again well before `expires_at` (40
//! minutes early, as the official SDK does, or at half their remaining life
//! when they live shorter) and once after the API answers 401.
//!
//! Like the SDKs, a 404, 405 or 503 (and 501) answer to the session-token PUT
//! means the service offers no session tokens. Answers are read up to
//! [`MAX_BODY_BYTES`]; a redirect is never followed but reported with the
//! host it points to; a refused security-key request reports the service's
//! own message ("configure a cloud service agency first"), cut short.

use std::time::{Duration, SystemTime};

use reqwest::Url;
use serde::Deserialize;
use tokio::time::Instant;

use super::aksk::sign_request;
use super::{AuthError, BoxFuture, Credential, OutgoingRequest};
use crate::hss::settings::Secret;

/// The default metadata endpoint of ECS and CCE nodes.
pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";

/// Lifetime asked for the session token, in seconds.
const SESSION_TOKEN_TTL: &str = "21600";

/// Cap on a metadata answer: a security key is about 2 KiB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Cap on the service's own message quoted in an error, in characters.
const MAX_MESSAGE_CHARS: usize = 256;

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
    /// The least lifetime left when credentials are fetched again.
    refresh_floor: Duration,
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
            refresh_floor: Duration::ZERO,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// Fetches credentials again at least `floor` before they expire, when
    /// [`refresh_after`] leaves less.
    #[must_use]
    pub fn with_refresh_floor(mut self, floor: Duration) -> Self {
        self.refresh_floor = floor;
        self
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
        let url = self.url("/meta-data/latest/api/token");
        let response = self
            .http
            .put(url.clone())
            .header("X-Metadata-Token-Ttl-Seconds", SESSION_TOKEN_TTL)
            .send()
            .await
            .map_err(|e| Self::error(format!("session token request failed: {e}")))?;
        let status = response.status().as_u16();
        match status {
            200 => {
                let body = read_capped(response)
                    .await
                    .map_err(|e| Self::error(format!("session token answer {e}")))?;
                let token = String::from_utf8_lossy(&body).trim().to_string();
                Ok(Some(token).filter(|t| !t.is_empty()))
            }
            // The service does not offer session tokens (Go SDK: 404, 405;
            // Python SDK: 404, 405, 503).
            404 | 405 | 501 | 503 => Ok(None),
            300..=399 => Err(Self::error(format!(
                "session token request {}",
                redirect_refused(&url, &response)
            ))),
            status => Err(Self::error(format!(
                "session token request answered HTTP {status}"
            ))),
        }
    }

    async fn fetch(&self) -> Result<Temporary, AuthError> {
        let session = self.session_token().await?;
        let url = self.url("/openstack/latest/securitykey");
        let mut request = self.http.get(url.clone());
        if let Some(token) = &session {
            request = request.header("X-Metadata-Token", token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Self::error(format!("security key request failed: {e}")))?;
        let status = response.status().as_u16();
        if (300..400).contains(&status) {
            return Err(Self::error(format!(
                "security key request {}",
                redirect_refused(&url, &response)
            )));
        }
        let body = read_capped(response).await;
        if status != 200 {
            let said = match body {
                Ok(body) if status >= 400 => service_message(&body)
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default(),
                _ => String::new(),
            };
            return Err(Self::error(format!(
                "security key request answered HTTP {status}{said}"
            )));
        }
        let body = body.map_err(|e| Self::error(format!("security key answer {e}")))?;
        // serde's own message may quote a value of the answer, which holds
        // secrets: only the position is shown.
        let key: SecurityKey = serde_json::from_slice(&body).map_err(|e| {
            Self::error(format!(
                "security key answer is not the expected JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
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
            refresh_at: super::refresh_at(
                now,
                lifetime,
                refresh_after(lifetime),
                self.refresh_floor,
            ),
        })
    }
}

/// Reads a body of at most [`MAX_BODY_BYTES`] (see
/// [`http::read_capped`](crate::hss::http::read_capped)). The error reads
/// after "answer".
async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    crate::hss::http::read_capped(&mut response, MAX_BODY_BYTES)
        .await
        .map_err(|e| format!("refused: {e}"))
}

/// Why a redirect is not followed (see
/// [`http::redirect_refusal`](crate::hss::http::redirect_refusal)).
fn redirect_refused(url: &Url, response: &reqwest::Response) -> String {
    let status = response.status().as_u16();
    crate::hss::http::redirect_refusal(url, status, response.headers())
        .unwrap_or_else(|| format!("answered HTTP {status}"))
}

/// The service's own words in an error answer, on one line and at most
/// [`MAX_MESSAGE_CHARS`] characters: a message field of a JSON object
/// (`error_msg`, `message`, `msg`, `error_description`, or those inside
/// `error`, or `error` itself as text), or a plain-text body. A JSON body
/// without such a field gives nothing: it is never quoted whole.
fn service_message(body: &[u8]) -> Option<String> {
    const FIELDS: [&str; 4] = ["error_msg", "message", "msg", "error_description"];
    let text = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) => {
            let field = |map: &serde_json::Map<String, serde_json::Value>| {
                FIELDS
                    .iter()
                    .find_map(|f| map.get(*f).and_then(|v| v.as_str()).map(str::to_string))
            };
            match map.get("error") {
                Some(serde_json::Value::Object(inner)) => field(inner).or_else(|| field(&map)),
                Some(serde_json::Value::String(text)) => field(&map).or(Some(text.clone())),
                _ => field(&map),
            }?
        }
        Ok(serde_json::Value::String(text)) => text,
        Ok(_) => return None,
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    let line = text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if line.is_empty() {
        return None;
    }
    if line.chars().count() > MAX_MESSAGE_CHARS {
        let cut: String = line.chars().take(MAX_MESSAGE_CHARS).collect();
        Some(format!("{cut}…"))
    } else {
        Some(line)
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
    use axum::Router;
    use axum::body::Body;
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, put};

    const TOKEN_PATH: &str = "/meta-data/latest/api/token";
    const KEY_PATH: &str = "/openstack/latest/securitykey";

    fn credentials_json() -> String {
        r#"{"credential":{"access":"TMPAK","secret":"TMPSECRET","securitytoken":"gQsts","expires_at":"2099-01-01T00:00:00.000000Z"}}"#.to_string()
    }

    /// A metadata service on 127.0.0.1 answering `router`.
    async fn serve(router: Router) -> Metadata {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        // As the exporter's shared client: redirects are not followed.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Metadata::new(http, Url::parse(&format!("http://{addr}")).unwrap())
    }

    fn request() -> OutgoingRequest {
        OutgoingRequest {
            method: "GET",
            host: "hss.test".into(),
            path: "/v5/p/image/swr-repository".into(),
            query: Vec::new(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    async fn authorize(metadata: &Metadata) -> Result<OutgoingRequest, String> {
        let mut request = request();
        metadata
            .authorize(&mut request)
            .await
            .map(|()| request)
            .map_err(|e| e.to_string())
    }

    fn status(code: u16, body: &'static str) -> Response {
        (StatusCode::from_u16(code).unwrap(), body).into_response()
    }

    /// The security key, given only when no session token is sent.
    async fn key_without_session(headers: HeaderMap) -> Response {
        if headers.contains_key("x-metadata-token") {
            return status(401, "unexpected session token");
        }
        (StatusCode::OK, credentials_json()).into_response()
    }

    #[tokio::test]
    async fn these_session_token_answers_mean_no_session_token() {
        for code in [404_u16, 405, 501, 503] {
            let router = Router::new()
                .route(TOKEN_PATH, put(move || async move { status(code, "no") }))
                .route(KEY_PATH, get(key_without_session));
            let signed = authorize(&serve(router).await).await;
            let signed = signed.unwrap_or_else(|e| panic!("HTTP {code}: {e}"));
            assert!(
                signed
                    .headers
                    .iter()
                    .any(|(n, v)| n == "X-Security-Token" && v == "gQsts"),
                "HTTP {code}"
            );
        }
        let router = Router::new()
            .route(TOKEN_PATH, put(|| async { status(500, "broken") }))
            .route(KEY_PATH, get(key_without_session));
        let error = authorize(&serve(router).await).await.unwrap_err();
        assert_eq!(
            error,
            "metadata credentials: session token request answered HTTP 500"
        );
    }

    #[tokio::test]
    async fn the_session_token_is_sent_when_offered() {
        let router = Router::new()
            .route(TOKEN_PATH, put(|| async { status(200, "session-1\n") }))
            .route(
                KEY_PATH,
                get(|headers: HeaderMap| async move {
                    match headers.get("x-metadata-token").map(|v| v.as_bytes()) {
                        Some(b"session-1") => (StatusCode::OK, credentials_json()).into_response(),
                        _ => status(401, "a valid X-Metadata-Token is required"),
                    }
                }),
            );
        assert!(authorize(&serve(router).await).await.is_ok());
    }

    async fn refused_with(code: u16, body: impl Into<String>) -> String {
        let body: String = body.into();
        let answer = move || {
            let body = body.clone();
            async move { (StatusCode::from_u16(code).unwrap(), body).into_response() }
        };
        let router = Router::new()
            .route(TOKEN_PATH, put(|| async { status(404, "") }))
            .route(KEY_PATH, get(answer));
        authorize(&serve(router).await).await.unwrap_err()
    }

    #[tokio::test]
    async fn a_refused_security_key_carries_the_services_message() {
        let error = refused_with(
            401,
            r#"{"error":{"code":"401","message":"Please configure Cloud Service Agency first"}}"#,
        )
        .await;
        assert_eq!(
            error,
            "metadata credentials: security key request answered HTTP 401: \
             Please configure Cloud Service Agency first"
        );
        let error = refused_with(
            403,
            r#"{"error_code":"X","error_msg":"agency\nnot   allowed"}"#,
        )
        .await;
        assert!(error.ends_with("HTTP 403: agency not allowed"), "{error}");
        let error = refused_with(500, "plain text trouble\n").await;
        assert!(error.ends_with("HTTP 500: plain text trouble"), "{error}");
        // A JSON body without a message field is not quoted.
        let error = refused_with(500, r#"{"credential":{"secret":"LEAKED"}}"#).await;
        assert_eq!(
            error,
            "metadata credentials: security key request answered HTTP 500"
        );
    }

    #[tokio::test]
    async fn the_services_message_is_cut_to_256_characters() {
        let long = format!(r#"{{"message":"{}"}}"#, "é".repeat(1000));
        let error = refused_with(401, long).await;
        let said = error.split_once("HTTP 401: ").unwrap().1;
        assert_eq!(said.chars().count(), 257, "256 characters and an ellipsis");
        assert!(said.ends_with("é…"));
    }

    #[tokio::test]
    async fn an_answer_over_one_mebibyte_is_refused_without_reading_it_whole() {
        // Endless, without a length: only the cap ends the read.
        let endless = || async {
            let chunk = bytes::Bytes::from(vec![b' '; 64 * 1024]);
            let stream = futures_util::stream::repeat(Ok::<_, std::convert::Infallible>(chunk));
            Body::from_stream(stream).into_response()
        };
        let router = Router::new()
            .route(TOKEN_PATH, put(|| async { status(404, "") }))
            .route(KEY_PATH, get(endless));
        let error = authorize(&serve(router).await).await.unwrap_err();
        assert_eq!(
            error,
            "metadata credentials: security key answer refused: response body larger than the 1048576-byte cap"
        );
        // The session token's answer is capped too.
        let router = Router::new()
            .route(TOKEN_PATH, put(endless))
            .route(KEY_PATH, get(key_without_session));
        assert_eq!(
            authorize(&serve(router).await).await.unwrap_err(),
            "metadata credentials: session token answer refused: response body larger than the 1048576-byte cap"
        );
        // With a length over the cap: refused before reading.
        let big = || async { (StatusCode::OK, vec![b' '; MAX_BODY_BYTES + 1]).into_response() };
        let router = Router::new()
            .route(TOKEN_PATH, put(|| async { status(404, "") }))
            .route(KEY_PATH, get(big));
        let error = authorize(&serve(router).await).await.unwrap_err();
        assert!(
            error.ends_with("larger than the 1048576-byte cap"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn redirects_are_reported_with_their_host_and_not_followed() {
        let redirect = |code: u16, location: &'static str| {
            move || async move {
                (
                    StatusCode::from_u16(code).unwrap(),
                    [(header::LOCATION, location)],
                )
                    .into_response()
            }
        };
        let router = Router::new()
            .route(TOKEN_PATH, put(|| async { status(404, "") }))
            .route(
                KEY_PATH,
                get(redirect(302, "http://evil.example:8080/steal")),
            );
        let error = authorize(&serve(router).await).await.unwrap_err();
        assert_eq!(
            error,
            "metadata credentials: security key request HTTP 302 redirect to evil.example \
             not followed: credentials go only to the configured endpoint"
        );
        let router = Router::new()
            .route(TOKEN_PATH, put(redirect(307, "/elsewhere")))
            .route(KEY_PATH, get(key_without_session));
        let error = authorize(&serve(router).await).await.unwrap_err();
        assert_eq!(
            error,
            "metadata credentials: session token request HTTP 307 redirect to 127.0.0.1 \
             not followed: credentials go only to the configured endpoint"
        );
    }

    #[tokio::test]
    async fn a_malformed_security_key_is_not_quoted() {
        let router = Router::new()
            .route(TOKEN_PATH, put(|| async { status(404, "") }))
            .route(
                KEY_PATH,
                get(|| async { status(200, r#"{"credential":"TMPSECRET-LIKE"}"#) }),
            );
        let error = authorize(&serve(router).await).await.unwrap_err();
        assert!(error.contains("not the expected JSON (line 1"), "{error}");
        assert!(!error.contains("TMPSECRET"), "{error}");
    }

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
