//! Hostile clients of the exporter's own HTTP server: slow or idle
//! connections, connection floods, password guessing and cross-site reload
//! requests. Timeouts are injected ([`ServerLimits`]) short, and every
//! assertion allows generous margins or checks order, not speed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::*;
use axum::Router;
use axum::routing::get;
use hss_swr_exporter::app::DaemonOptions;
use hss_swr_exporter::web::{self, ServerLimits};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Long enough never to be reached in a test.
const LONG: Duration = Duration::from_secs(60);
/// How long a test waits for something that must happen.
const PATIENCE: Duration = Duration::from_secs(10);

fn limits() -> ServerLimits {
    ServerLimits {
        header_read_timeout: LONG,
        idle_timeout: LONG,
        ..ServerLimits::default()
    }
}

fn router() -> Router {
    Router::new().route("/metrics", get(|| async { "hss_swr_up 1\n" }))
}

/// A server on a loopback port, stopped when dropped.
struct Server {
    address: SocketAddr,
    stop: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Server {
    async fn start(limits: ServerLimits, web_config: Option<PathBuf>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(web::serve_with_limits(
            listener,
            router(),
            web_config,
            limits,
            stop.clone().cancelled_owned(),
        ));
        Self { address, stop }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.address).await.unwrap()
    }
}

/// Sends a GET on `stream` and reads the response (head and body); keeps the
/// connection open.
async fn get_on(stream: &mut TcpStream, path: &str) -> String {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    tokio::time::timeout(PATIENCE, read_response(stream))
        .await
        .expect("a response")
}

async fn read_response(stream: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed before a full response");
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

/// Whether the server has closed `stream` (EOF or reset) within `wait`.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 1024];
    match tokio::time::timeout(wait, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(n)) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(_) => false,
    }
}

#[tokio::test]
async fn slow_headers_are_closed_at_the_header_timeout() {
    let server = Server::start(
        ServerLimits {
            header_read_timeout: Duration::from_millis(300),
            ..limits()
        },
        None,
    )
    .await;
    // One header line every 50 ms: the connection keeps sending, but never
    // finishes its head. It is closed, without an answer, long before the
    // 40 lines (2 s) are out.
    let mut slow = server.connect().await;
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let mut closed_after = None;
    for line in 0..40 {
        if slow
            .write_all(format!("X-Slow-{line}: x\r\n").as_bytes())
            .await
            .is_err()
            || closed_within(&mut slow, Duration::from_millis(50)).await
        {
            closed_after = Some(line);
            break;
        }
    }
    assert!(closed_after.is_some(), "the slow client was never closed");
    // A connection that sends nothing at all goes the same way.
    let mut silent = server.connect().await;
    assert!(closed_within(&mut silent, PATIENCE).await);
    // Others are served.
    let mut normal = server.connect().await;
    assert!(
        get_on(&mut normal, "/metrics")
            .await
            .starts_with("HTTP/1.1 200")
    );
}

#[tokio::test]
async fn idle_keep_alive_connections_outlive_the_header_timeout_then_close() {
    let server = Server::start(
        ServerLimits {
            header_read_timeout: Duration::from_millis(150),
            idle_timeout: Duration::from_millis(1000),
            ..limits()
        },
        None,
    )
    .await;
    let mut stream = server.connect().await;
    assert!(
        get_on(&mut stream, "/metrics")
            .await
            .starts_with("HTTP/1.1 200")
    );
    // Idle for twice the header timeout: a kept-alive connection waits for
    // its next request under the (longer) idle timeout.
    assert!(!closed_within(&mut stream, Duration::from_millis(300)).await);
    assert!(
        get_on(&mut stream, "/metrics")
            .await
            .starts_with("HTTP/1.1 200")
    );
    // Then, with no request, the idle timeout closes it.
    assert!(closed_within(&mut stream, PATIENCE).await);
}

#[tokio::test]
async fn a_connection_flood_waits_beyond_max_connections_and_metrics_answer_after() {
    let server = Server::start(
        ServerLimits {
            max_connections: 3,
            ..limits()
        },
        None,
    )
    .await;
    // Three connections, each served once and then kept open: all slots.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = server.connect().await;
        assert!(
            get_on(&mut stream, "/metrics")
                .await
                .starts_with("HTTP/1.1 200")
        );
        held.push(stream);
    }
    // A fourth is not accepted, so its request is not answered...
    let mut waiting = server.connect().await;
    waiting
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), waiting.read(&mut buf))
            .await
            .is_err(),
        "a connection beyond max_connections was served"
    );
    // ... and neither is a flood behind it: they all wait in the backlog.
    let mut flood = Vec::new();
    for _ in 0..50 {
        flood.push(server.connect().await);
    }
    // One held connection closes: the fourth is accepted and answered.
    held.pop();
    let answer = tokio::time::timeout(PATIENCE, read_response(&mut waiting))
        .await
        .expect("answered once a slot was free");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The flood goes away: /metrics answers new clients again.
    drop(flood);
    drop(held);
    drop(waiting);
    let client = reqwest::Client::builder()
        .timeout(PATIENCE)
        .build()
        .unwrap();
    let response = client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

// ---------------------------------------------------------------------------
// Password guessing

struct WebConfigFile(PathBuf);

impl WebConfigFile {
    fn new(name: &str, cost: u32) -> Self {
        let dir =
            std::env::temp_dir().join(format!("hss-swr-hostile-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("web.yml");
        let hash = bcrypt::hash("right", cost).unwrap();
        std::fs::write(&path, format!("basic_auth_users:\n  prometheus: {hash}\n")).unwrap();
        Self(path)
    }
}

impl Drop for WebConfigFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

async fn get_as(client: &reqwest::Client, url: &str, password: &str) -> reqwest::Response {
    client
        .get(url)
        .basic_auth("prometheus", Some(password))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_bcrypt_flood_does_not_delay_a_remembered_password() {
    // Cost 8: each wrong guess costs a real bcrypt check (tens of ms).
    let file = WebConfigFile::new("flood", 8);
    let server = Server::start(
        ServerLimits {
            bcrypt_queue: 2,
            auth_failures_per_client: 0, // off here; see the next test
            ..limits()
        },
        Some(file.0.clone()),
    )
    .await;
    let url = server.url("/metrics");
    let client = reqwest::Client::builder()
        .timeout(PATIENCE)
        .build()
        .unwrap();
    // The legitimate scrape: its password is now remembered.
    assert_eq!(
        get_as(&client, &url, "right").await.status(),
        StatusCode::OK
    );

    let refused = Arc::new(AtomicUsize::new(0));
    let (busy_tx, mut busy_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..30 {
        let client = client.clone();
        let url = url.clone();
        let refused = Arc::clone(&refused);
        let busy_tx = busy_tx.clone();
        flood.spawn(async move {
            let status = get_as(&client, &url, &format!("guess-{i}")).await.status();
            if status == StatusCode::UNAUTHORIZED {
                refused.fetch_add(1, Ordering::SeqCst);
            } else {
                let _ = busy_tx.send(());
            }
            status
        });
    }
    drop(busy_tx);
    // The first 429 means the queue is full (one check running, two
    // waiting). A remembered password goes through now, ahead of them.
    busy_rx.recv().await.expect("the bcrypt queue filled up");
    let response = get_as(&client, &url, "right").await;
    assert_eq!(response.status(), StatusCode::OK);
    let refused_before = refused.load(Ordering::SeqCst);

    let mut statuses = Vec::new();
    while let Some(status) = flood.join_next().await {
        statuses.push(status.unwrap());
    }
    let unauthorized = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let busy = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(unauthorized + busy, 30, "{statuses:?}");
    assert!(busy >= 1, "{statuses:?}");
    assert!(
        refused_before < unauthorized,
        "the remembered password waited for every queued check ({refused_before} of {unauthorized} done)"
    );
}

#[tokio::test]
async fn a_client_with_too_many_failures_gets_429_without_a_check() {
    let file = WebConfigFile::new("failures", 4);
    let server = Server::start(
        ServerLimits {
            auth_failures_per_client: 3,
            auth_failure_window: LONG,
            ..limits()
        },
        Some(file.0.clone()),
    )
    .await;
    let url = server.url("/metrics");
    let client = reqwest::Client::builder()
        .timeout(PATIENCE)
        .build()
        .unwrap();
    assert_eq!(
        get_as(&client, &url, "right").await.status(),
        StatusCode::OK
    );
    for _ in 0..3 {
        assert_eq!(
            get_as(&client, &url, "wrong").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let response = get_as(&client, &url, "wrong").await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("too many failed logins")
    );
    // Even the right password of an unknown user gets no check now...
    let other = client
        .get(&url)
        .basic_auth("nobody", Some("right"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::TOO_MANY_REQUESTS);
    // ... but the remembered password of the legitimate scrape still works.
    assert_eq!(
        get_as(&client, &url, "right").await.status(),
        StatusCode::OK
    );
}

// ---------------------------------------------------------------------------
// Reload

async fn daemon(lifecycle: bool) -> (RunningSimulator, RunningExporter, PathBuf) {
    let sim = start_simulator(sim_config(50, 2)).await;
    let dir = std::env::temp_dir().join(format!(
        "hss-swr-hostile-reload-{lifecycle}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yml");
    std::fs::write(
        &path,
        config_yaml(&sim.endpoint, "", "    image_types: [private_image]\n"),
    )
    .unwrap();
    let options = DaemonOptions {
        config_path: Some(path.clone()),
        enable_lifecycle: lifecycle,
        ..DaemonOptions::new("/metrics")
    };
    let exporter = start_exporter_with_options(
        hss_swr_exporter::config::Config::load(&path).unwrap(),
        options,
    )
    .await;
    (sim, exporter, dir)
}

#[tokio::test]
async fn reload_without_the_lifecycle_flag_is_403() {
    let (_sim, exporter, dir) = daemon(false).await;
    let response = http()
        .post(format!("{}/-/reload", exporter.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        response.text().await.unwrap(),
        "reload refused: lifecycle APIs are not enabled; start with --web.enable-lifecycle, or send SIGHUP\n"
    );
    exporter.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_cross_site_reload_is_403_and_a_same_origin_one_is_served() {
    let (_sim, exporter, dir) = daemon(true).await;
    let url = format!("{}/-/reload", exporter.url);
    let host = exporter.url.trim_start_matches("http://").to_string();
    let post = |headers: &[(&str, &str)]| {
        let mut request = http().post(&url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };
    let response = post(&[("Origin", "http://evil.example")]).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        response.text().await.unwrap(),
        "reload refused: the request's Origin is not this server\n"
    );
    let response = post(&[("Sec-Fetch-Site", "cross-site")]).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.text().await.unwrap().contains("cross-site"));
    // The exporter's own origin, and a client that sends no Origin (curl).
    let same = format!("http://{host}");
    let response = post(&[("Origin", same.as_str()), ("Sec-Fetch-Site", "same-origin")])
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .starts_with("configuration unchanged:")
    );
    assert_eq!(post(&[]).await.unwrap().status(), StatusCode::OK);
    exporter.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}
