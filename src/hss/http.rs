//! The HTTP plumbing every outbound call shares: the listing, IAM tokens,
//! project lookup and the metadata service.
//!
//! Place in the data flow: below the client and the credential kinds, which
//! send their requests through the one [`client`] built here and read answers
//! with these helpers. What comes back from the network is bounded here:
//! redirects are never followed (credentials go only to configured
//! endpoints; a 3xx is an error naming the status and the `Location`'s
//! host), bodies are read up to a cap, error text is cut to
//! [`MAX_ERROR_TEXT`] characters with only the API's code and message kept,
//! and the gateway's request id is kept for support.

use std::time::Duration;

use reqwest::header::HeaderMap;

/// Cap on the body of an IAM, project-lookup or metadata answer.
pub const MAX_AUX_BODY: usize = 1 << 20;
/// Longest upstream error text kept for logs and `/status`.
pub const MAX_ERROR_TEXT: usize = 256;
/// Longest request id kept.
const MAX_REQUEST_ID: usize = 128;

/// An answer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The body is larger than the cap.
    #[error("response body larger than the {limit}-byte cap")]
    TooLarge {
        /// The cap.
        limit: usize,
    },
    /// The connection failed while the body was read.
    #[error("answer unreadable: {0}")]
    Transport(String),
    /// The time limit passed while the body was read.
    #[error("answer not complete within the request timeout")]
    Timeout,
}

/// Builds the HTTP client all outbound calls share: rustls with the system's
/// roots, proxies from `HTTPS_PROXY`/`NO_PROXY`, HTTP/1.1 only (as the
/// official SDKs), and no redirects followed.
pub fn client(request_timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(request_timeout)
        .connect_timeout(request_timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("hss-swr-exporter/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .http1_only()
        .build()
        .map_err(|e| error_chain(&e))
}

/// Reads the body of `response`, refusing more than `limit` bytes (by
/// `Content-Length` before reading, and while reading).
pub async fn read_capped(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ReadError> {
    let length = response.content_length();
    if length.is_some_and(|len| len > limit as u64) {
        return Err(ReadError::TooLarge { limit });
    }
    // One allocation of the announced size: growing by doubling would copy
    // a listing page several times, into freshly mapped memory each time.
    let mut body = Vec::with_capacity(
        length
            .and_then(|len| usize::try_from(len).ok())
            .unwrap_or(0),
    );
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(ReadError::TooLarge { limit });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(error) if error.is_timeout() => return Err(ReadError::Timeout),
            Err(error) => return Err(ReadError::Transport(error_chain(&error))),
        }
    }
}

/// The gateway's id of the request (`X-Request-Id`, or IAM's
/// `X-IAM-Trace-Id`), printable ASCII only and cut short.
pub fn request_id(headers: &HeaderMap) -> Option<String> {
    ["x-request-id", "x-iam-trace-id"].iter().find_map(|name| {
        let value = headers.get(*name)?.to_str().ok()?;
        let clean: String = value
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(MAX_REQUEST_ID)
            .collect();
        (!clean.is_empty()).then_some(clean)
    })
}

/// ` (request id X)` when there is one, for the end of a message.
pub fn request_id_suffix(request_id: Option<&str>) -> String {
    request_id.map_or_else(String::new, |id| format!(" (request id {id})"))
}

/// For a 3xx answer to a request for `url`, why it is not followed: the
/// status and the host the `Location` names (resolved against `url`). `None`
/// for any other status.
pub fn redirect_refusal(url: &reqwest::Url, status: u16, headers: &HeaderMap) -> Option<String> {
    if !(300..400).contains(&status) {
        return None;
    }
    let host = headers
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|location| url.join(location).ok())
        .and_then(|to| to.host_str().map(|h| cut(h, MAX_REQUEST_ID)))
        .unwrap_or_else(|| "an unreadable location".to_string());
    Some(format!(
        "HTTP {status} redirect to {host} not followed: credentials go only to the configured endpoint"
    ))
}

/// Reads `error_code` and `error_msg` from an error body, in the shapes
/// Huawei Cloud services use (`{"error_code","error_msg"}`, the gateway's
/// `error_message`, IAM's `{"error":{"code","message"}}`). Nothing else of
/// the body is kept: a body that is not such JSON is described by its length
/// only, so an error page that echoes request headers never reaches a log.
/// Both parts are cut to [`MAX_ERROR_TEXT`] characters.
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
                code.map_or_else(|| "-".to_string(), |c| cut(&one_line(&c), 64)),
                message
                    .map(|m| cut(&one_line(&m), MAX_ERROR_TEXT))
                    .unwrap_or_default(),
            );
        }
    }
    (
        "-".to_string(),
        format!("non-JSON answer of {} bytes", body.len()),
    )
}

/// `text` cut to at most `max` characters, with `...` when cut.
pub fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((end, _)) => format!("{}...", &text[..end]),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .collect()
}

/// The error with its causes, on one line.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
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

/// The wait a `Retry-After` header asks for: whole seconds or an HTTP date.
/// `None` when absent or unreadable; the caller bounds the result.
pub fn retry_after(headers: &HeaderMap, now: std::time::SystemTime) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds: as long as it gets.
        return Some(Duration::MAX);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn error_bodies_in_every_known_shape() {
        assert_eq!(
            error_details(br#"{"error_code":"HSS.0001","error_msg":"invalid  parameter"}"#),
            ("HSS.0001".into(), "invalid parameter".into())
        );
        assert_eq!(
            error_details(
                br#"{"status_code":429,"error_code":"APIGW.0308","error_message":"The throttling threshold has been reached"}"#
            ),
            (
                "APIGW.0308".into(),
                "The throttling threshold has been reached".into()
            )
        );
        assert_eq!(
            error_details(
                br#"{"error":{"code":401,"message":"The request you have made requires authentication.","title":"Unauthorized"}}"#
            ),
            (
                "401".into(),
                "The request you have made requires authentication.".into()
            )
        );
    }

    #[test]
    fn non_json_bodies_are_described_not_quoted() {
        let page = b"<html>X-Auth-Token: MIIsecret-token</html>";
        let (code, message) = error_details(page);
        assert_eq!(code, "-");
        assert_eq!(message, format!("non-JSON answer of {} bytes", page.len()));
        assert!(!message.contains("MII"));
    }

    #[test]
    fn long_error_messages_are_cut() {
        let body = format!(
            r#"{{"error_code":"X","error_msg":"{}"}}"#,
            "a".repeat(8 * 1024 * 1024)
        );
        let (_, message) = error_details(body.as_bytes());
        assert_eq!(message.chars().count(), MAX_ERROR_TEXT + 3);
        assert_eq!(cut("日本語テキスト", 3), "日本語...");
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers, now), None);
        headers.insert("retry-after", HeaderValue::from_static("120"));
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(120)));
        headers.insert(
            "retry-after",
            HeaderValue::from_static("18446744073709551616999"),
        );
        assert_eq!(retry_after(&headers, now), Some(Duration::MAX));
        // 784111777 is Sun, 06 Nov 1994 08:49:37 GMT.
        headers.insert(
            "retry-after",
            HeaderValue::from_static("Sun, 06 Nov 1994 08:50:37 GMT"),
        );
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(60)));
        headers.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers, now), None);
    }

    #[test]
    fn redirects_are_named_by_status_and_host() {
        let url = reqwest::Url::parse("https://hss.example/v5/x").unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(redirect_refusal(&url, 200, &headers), None);
        headers.insert(
            "location",
            HeaderValue::from_static("http://evil.example:8080/steal?x=1"),
        );
        let refusal = redirect_refusal(&url, 302, &headers).unwrap();
        assert!(refusal.starts_with("HTTP 302 redirect to evil.example not followed"));
        assert!(!refusal.contains("steal"));
        headers.insert("location", HeaderValue::from_static("/elsewhere"));
        let refusal = redirect_refusal(&url, 307, &headers).unwrap();
        assert!(refusal.starts_with("HTTP 307 redirect to hss.example not followed"));
    }

    #[test]
    fn request_ids_are_kept_clean() {
        let mut headers = HeaderMap::new();
        assert_eq!(request_id(&headers), None);
        headers.insert("x-iam-trace-id", HeaderValue::from_static("trace-1"));
        assert_eq!(request_id(&headers).as_deref(), Some("trace-1"));
        headers.insert("x-request-id", HeaderValue::from_static("abc 123"));
        assert_eq!(request_id(&headers).as_deref(), Some("abc123"));
    }
}
