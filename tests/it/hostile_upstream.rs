//! The exporter against a hostile HSS, IAM or metadata server: redirects
//! that would carry credentials elsewhere, absurd `Retry-After` values,
//! oversized answers, error pages that echo request headers. Each case checks
//! what an operator relies on: credentials are not sent anywhere else, the
//! lanes fail with a short reason and recover, nothing unbounded is kept.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hss_swr_exporter::app::Exporter;
use hss_swr_exporter::collect::Lane;
use tokio::net::TcpListener;

/// One request a server saw: method, path, headers, body.
type Received = (String, String, HeaderMap, Vec<u8>);

/// What a server saw.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Received>>>);

impl Seen {
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// Serves `answer` for every request on a loopback port; returns its URL
/// and what it saw.
async fn serve(
    answer: impl Fn(&Request) -> Response + Clone + Send + Sync + 'static,
) -> (String, Seen) {
    let seen = Seen::default();
    let record = seen.clone();
    let app = Router::new().fallback(move |request: Request| {
        let answer = answer.clone();
        let record = record.clone();
        async move {
            let response = answer(&request);
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20)
                .await
                .unwrap_or_default();
            record.0.lock().unwrap().push((
                parts.method.to_string(),
                parts.uri.path().to_string(),
                parts.headers,
                body.to_vec(),
            ));
            response
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

fn redirect_to(location: String) -> impl Fn(&Request) -> Response + Clone + Send + Sync {
    move |_: &Request| {
        (
            StatusCode::TEMPORARY_REDIRECT,
            [("location", location.clone())],
            "",
        )
            .into_response()
    }
}

/// Runs every lane once with `yaml`, which must fail, and returns the sweep
/// lane's error.
async fn failed_sweep(yaml: &str) -> String {
    let (exporter, ok, _) = once(yaml).await;
    assert!(!ok);
    exporter.scopes().list()[0]
        .lane_status(Lane::Sweep)
        .last_error
        .unwrap_or_default()
}

/// The simulator's AK/SK credentials, as a YAML flow mapping.
fn aksk() -> String {
    format!("{{access_key: {AK}, secret_key: {SK}}}")
}

fn one_target(endpoint: &str, iam: &str, credentials: &str, project: bool) -> String {
    let project = if project {
        format!("    project_id: {PROJECT}\n")
    } else {
        String::new()
    };
    format!(
        "api_rate_limit: 100/1s
request_timeout: 5s
max_retries: 1
malicious_interval: 0s
targets:
  - name: test
    region: cn-north-4
{project}    endpoint: {endpoint}
    iam_endpoint: {iam}
    image_types: [private_image]
    credentials: {credentials}
"
    )
}

#[tokio::test]
async fn an_iam_redirect_does_not_carry_the_password_elsewhere() {
    let (thief, stolen) = serve(|_: &Request| StatusCode::CREATED.into_response()).await;
    let (iam, _) = serve(redirect_to(format!("{thief}/v3/auth/tokens"))).await;
    let yaml = one_target(
        &iam,
        &iam,
        "{iam: {domain_name: acme, user_name: exporter, password: secret-pw-1}}",
        true,
    );
    let error = failed_sweep(&yaml).await;
    assert!(
        error.contains("HTTP 307 redirect to 127.0.0.1 not followed"),
        "{error}"
    );
    assert_eq!(stolen.count(), 0, "nothing reached the other host");
}

#[tokio::test]
async fn a_listing_redirect_does_not_carry_the_signature_elsewhere() {
    let (thief, stolen) = serve(|_: &Request| StatusCode::OK.into_response()).await;
    let (hss, seen) = serve(redirect_to(format!("{thief}/v5/x"))).await;
    let yaml = one_target(&hss, &hss, &aksk(), true);
    assert!(
        failed_sweep(&yaml)
            .await
            .contains("redirect to 127.0.0.1 not followed")
    );
    assert_eq!(seen.count(), 1, "a redirect is not retried");
    assert_eq!(stolen.count(), 0);
}

#[tokio::test]
async fn a_metadata_redirect_hands_over_no_foreign_keys() {
    let (thief, stolen) = serve(|_: &Request| {
        (
            StatusCode::OK,
            r#"{"credential":{"access":"EVILAK","secret":"evil","securitytoken":"x","expires_at":"2099-01-01T00:00:00.000000Z"}}"#,
        )
            .into_response()
    })
    .await;
    let (metadata, _) = serve(redirect_to(format!("{thief}/openstack/latest/securitykey"))).await;
    let (hss, listing) = serve(|_: &Request| StatusCode::OK.into_response()).await;
    let yaml = one_target(
        &hss,
        &hss,
        &format!("{{metadata: {{endpoint: {metadata}}}}}"),
        true,
    );
    let error = failed_sweep(&yaml).await;
    assert!(error.contains("metadata"), "{error}");
    assert_eq!(stolen.count(), 0, "the redirect was not followed");
    assert_eq!(listing.count(), 0, "nothing was signed with foreign keys");
}

#[tokio::test]
async fn an_absurd_retry_after_pauses_at_most_five_windows() {
    for value in [
        "999999999",
        "18446744073709551615",
        "99999999999999999999999",
    ] {
        let (hss, seen) = serve(move |_: &Request| {
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", value)],
                r#"{"error_code":"APIGW.0308","error_msg":"throttled"}"#,
            )
                .into_response()
        })
        .await;
        let yaml =
            one_target(&hss, &hss, &aksk(), true).replace("max_retries: 1", "max_retries: 0");
        let exporter = Exporter::new(parse_config(&yaml)).unwrap();
        assert!(!exporter.run_once().await);
        assert_eq!(seen.count(), 1);
        let state = exporter.web_state("/metrics");
        let paused = state
            .budgets
            .iter()
            .filter_map(|(_, b)| b.status().paused_for)
            .max()
            .unwrap();
        assert!(
            paused <= Duration::from_secs(5) && paused > Duration::from_secs(4),
            "Retry-After {value}: paused {paused:?}, at most five 1 s windows"
        );
    }
}

#[tokio::test]
async fn error_pages_that_echo_headers_never_reach_status() {
    // A gateway page that echoes every request header, token included.
    let (hss, _) = serve(|request: &Request| {
        let echo: String = request
            .headers()
            .iter()
            .map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or("")))
            .collect();
        (
            StatusCode::BAD_GATEWAY,
            [("content-type", "text/html")],
            format!("<html><pre>{echo}</pre></html>"),
        )
            .into_response()
    })
    .await;
    let token = "MIIT-secret-token-value-0123456789";
    let dir = std::env::temp_dir().join(format!("hss-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("token");
    std::fs::write(&path, token).unwrap();
    let yaml = one_target(
        &hss,
        &hss,
        &format!("{{token_file: {}}}", path.display()),
        true,
    );
    let exporter = start_exporter(&yaml).await;
    let status_url = format!("{}/status", exporter.url);
    let landing_url = format!("{}/", exporter.url);
    let mut status = String::new();
    for _ in 0..200 {
        status = http()
            .get(&status_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if status.contains("HTTP 502") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(status.contains("non-JSON answer of"), "{status}");
    assert!(!status.contains(token));
    let landing = http()
        .get(&landing_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!landing.contains(token));
    exporter.stop().await;
}

#[tokio::test]
async fn huge_error_messages_are_cut() {
    let message = "x".repeat(4 * 1024 * 1024);
    let (hss, _) = serve(move |_: &Request| {
        (
            StatusCode::FORBIDDEN,
            format!(r#"{{"error_code":"HSS.0013","error_msg":"{message}"}}"#),
        )
            .into_response()
    })
    .await;
    let yaml = one_target(&hss, &hss, &aksk(), true);
    let error = failed_sweep(&yaml).await;
    assert!(
        error.contains("HTTP 403: HSS.0013: xxx"),
        "{}",
        &error[..200]
    );
    assert!(error.len() < 600, "{} bytes", error.len());
}

#[tokio::test]
async fn oversized_iam_and_lookup_answers_are_refused_unread() {
    let (iam, _) = serve(|_: &Request| {
        Response::builder()
            .status(StatusCode::OK)
            .body(Body::from(vec![b' '; 3 << 20]))
            .unwrap()
    })
    .await;
    // AK/SK without a project id: the lookup's answer is too large.
    let yaml = one_target(&iam, &iam, &aksk(), false);
    let error = failed_sweep(&yaml).await;
    assert!(
        error.contains("larger than the 1048576-byte cap"),
        "{error}"
    );
    // An IAM password token whose answer is too large.
    let yaml = one_target(
        &iam,
        &iam,
        "{iam: {domain_name: acme, user_name: exporter, password: pw}}",
        true,
    );
    let error = failed_sweep(&yaml).await;
    assert!(
        error.contains("larger than the 1048576-byte cap"),
        "{error}"
    );
}
