//! Benchmark of `/metrics`: latency and size of the exposition with 2,000
//! namespaces in each of three image types, 17 images each (102,000 images;
//! and 200 and 667 namespaces for how it grows), with a target name and an
//! enterprise project id (36 characters) as long as real ones, plain and
//! gzip, over the real HTTP endpoint.
//!
//! The data goes through the whole pipeline: the built-in simulator (in this
//! process) serves the rows, the exporter runs every lane once, then the
//! web server answers scrapes on a loopback port. "First" is a scrape right
//! after the scopes' results were rendered anew (the exporter renders a
//! scope's series once per published result and reuses them until the next
//! one; the cache is cleared before each such scrape), "cached" the scrapes
//! after it. Latency is from sending the request to the last byte of the
//! body, on one keep-alive connection. The cached scrapes are also timed by
//! curl in its own process (when installed), which is what the targets are
//! judged by: the in-process client shares the process and both cores with
//! the server and is itself the limit of its plain figure.
//!
//! Run: `cargo bench --bench scrape` (about half a minute), or
//! `cargo bench --bench scrape -- --quick` for 2,000 namespaces only.

use std::path::Path;
use std::time::{Duration, Instant};

use hss_swr_exporter::app::Exporter;
use hss_swr_exporter::config::Config;
use hss_swr_exporter::simulator::{SimConfig, SimImage, Simulator};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const AK: &str = "BENCHAK";
const SK: &str = "bench-secret";
const TYPES: [&str; 3] = ["private_image", "shared_image", "instance_image"];
/// 2,000 namespaces x 3 image types x 17 images = 102,000 images.
const IMAGES_PER_NAMESPACE: usize = 17;
/// A target name and an enterprise project id as long as real ones.
const TARGET: &str = "prod-cn-north-4-container-registry";
const ENTERPRISE_PROJECT: &str = "3f2b8c1e-7a4d-4e9b-a6c5-0d1e2f3a4b5c";
const FIRST_SCRAPES: usize = 10;
const CACHED_SCRAPES: usize = 100;
const GZIP_TARGET_MS: f64 = 2.0;
const PLAIN_TARGET_MS: f64 = 10.0;

/// `namespaces` namespaces in each image type, a few images each, with
/// every scan status and some failures, vulnerabilities and malicious files.
fn rows(namespaces: usize) -> Vec<SimImage> {
    let statuses = [
        "success",
        "success",
        "failed",
        "unscan",
        "scanning",
        "download_failed",
        "image_oversized",
        "waiting_for_scan",
    ];
    let mut out = Vec::new();
    for (t, image_type) in TYPES.iter().enumerate() {
        for ns in 0..namespaces {
            for i in 0..IMAGES_PER_NAMESPACE {
                let n = out.len();
                let status = statuses[n % statuses.len()];
                out.push(SimImage {
                    id: 1000 + n as u64,
                    namespace: format!("payments-team-{ns:05}"),
                    image_name: format!("service-{i}"),
                    image_version: format!("1.{t}.{i}"),
                    image_digest: format!("sha256:{n:064x}"),
                    image_type: image_type.to_string(),
                    latest_version: true,
                    scan_status: status.to_string(),
                    scan_failed_desc: if status == "failed" {
                        "failed_to_scan_vulnerability".to_string()
                    } else {
                        String::new()
                    },
                    latest_scan_time: 1_760_000_000_000 - n as i64 * 1000,
                    vul_num: (n % 300) as i64,
                    unsafe_setting_num: (n % 5) as i64,
                    malicious_file_num: i64::from(n % 97 == 0),
                    instance_name: if *image_type == "instance_image" {
                        "ee-prod".to_string()
                    } else {
                        String::new()
                    },
                    enterprise_project_id: ENTERPRISE_PROJECT.to_string(),
                    ..SimImage::default()
                });
            }
        }
    }
    out
}

struct Figures {
    body_bytes: usize,
    gzip_bytes: usize,
    series: usize,
    first_ms: Vec<f64>,
    /// A plain scrape right after the background rendering of a new
    /// publication.
    plain_first_ms: Vec<f64>,
    plain_ms: Vec<f64>,
    gzip_ms: Vec<f64>,
    /// The same, from curl in its own process on one keep-alive connection
    /// (empty when curl is not installed).
    curl_plain_ms: Vec<f64>,
    curl_gzip_ms: Vec<f64>,
    /// `Metrics::render` alone, in this process: after the cache was
    /// cleared, and from the cache.
    render_cold_ms: Vec<f64>,
    render_cached_ms: Vec<f64>,
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

async fn timed(client: &reqwest::Client, url: &str, gzip: bool) -> (f64, usize) {
    let mut request = client.get(url);
    if gzip {
        request = request.header("Accept-Encoding", "gzip");
    }
    let started = Instant::now();
    let response = request.send().await.expect("scrape");
    assert_eq!(response.status(), 200);
    let encoded = response
        .headers()
        .get("content-encoding")
        .is_some_and(|v| v == "gzip");
    assert_eq!(encoded, gzip, "gzip only when asked for");
    let body = response.bytes().await.expect("body");
    (started.elapsed().as_secs_f64() * 1000.0, body.len())
}

/// `n` scrapes by curl, in its own process, on one keep-alive connection:
/// the client a user (or another exporter's harness) runs. Empty when curl
/// is not installed.
async fn curl_times(url: &str, gzip: bool, n: usize) -> Vec<f64> {
    let mut command = std::process::Command::new("curl");
    command.args(["-s", "--http1.1", "-w", "%{time_total} %{size_download}\\n"]);
    if gzip {
        // Ask for gzip and keep the body as sent, as Prometheus does.
        command.args(["-H", "Accept-Encoding: gzip"]);
    }
    for _ in 0..n {
        command.args(["-o", "/dev/null", url]);
    }
    let Ok(Ok(output)) = tokio::task::spawn_blocking(move || command.output()).await else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next()?.parse::<f64>().ok())
        .map(|seconds| seconds * 1000.0)
        .collect()
}

async fn measure(namespaces: usize) -> Figures {
    let sim = Simulator::new(SimConfig {
        images: 0,
        credentials: vec![(AK.into(), SK.into())],
        ..SimConfig::default()
    });
    sim.set_images(rows(namespaces));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    let stop = CancellationToken::new();
    tokio::spawn(sim.clone().serve(listener, stop.clone().cancelled_owned()));

    let yaml = format!(
        "api_rate_limit: 100000/1s
malicious_interval: 1h
poll_interval: 1h
credentials: {{access_key: {AK}, secret_key: {SK}}}
targets:
  - name: {TARGET}
    region: cn-north-4
    project_id: 0123456789abcdef0123456789abcdef
    endpoint: {endpoint}
    enterprise_project_ids: ['{ENTERPRISE_PROJECT}']
    image_types: [{}]
",
        TYPES.join(", ")
    );
    let config = Config::parse(&yaml, Path::new("bench.yml"), &|_| None).expect("config");
    let exporter = Exporter::new(config).expect("exporter");
    assert!(exporter.run_once().await, "every lane succeeds");
    let metrics = exporter.metrics();

    let web = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/metrics", web.local_addr().expect("address"));
    let router = hss_swr_exporter::web::router(exporter.web_state("/metrics"));
    let web_stop = CancellationToken::new();
    tokio::spawn(hss_swr_exporter::web::serve(
        web,
        router,
        web_stop.clone().cancelled_owned(),
    ));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");

    // Warm the connection and the allocator.
    let (_, body_bytes) = timed(&client, &url, false).await;
    let text = metrics.render();
    let series = text.lines().filter(|l| !l.starts_with('#')).count();
    let mut first_ms = Vec::new();
    for _ in 0..FIRST_SCRAPES {
        // Forget the rendered series, as a newly published result does.
        metrics.set_image_metrics(false);
        first_ms.push(timed(&client, &url, false).await.0);
    }
    let mut plain_first_ms = Vec::new();
    for _ in 0..FIRST_SCRAPES {
        metrics.set_image_metrics(false);
        metrics.prerender();
        plain_first_ms.push(timed(&client, &url, false).await.0);
    }
    // The daemon renders (and compresses) a publication in the background
    // within a second; cached scrapes find it ready.
    metrics.set_image_metrics(false);
    metrics.prerender();
    let mut plain_ms = Vec::new();
    let mut gzip_ms = Vec::new();
    let mut gzip_bytes = 0;
    for _ in 0..CACHED_SCRAPES {
        plain_ms.push(timed(&client, &url, false).await.0);
        let (ms, bytes) = timed(&client, &url, true).await;
        gzip_ms.push(ms);
        gzip_bytes = bytes;
    }
    let curl_plain_ms = curl_times(&url, false, CACHED_SCRAPES).await;
    let curl_gzip_ms = curl_times(&url, true, CACHED_SCRAPES).await;
    let mut render_cold_ms = Vec::new();
    let mut render_cached_ms = Vec::new();
    for _ in 0..FIRST_SCRAPES {
        metrics.set_image_metrics(false);
        let started = Instant::now();
        std::hint::black_box(metrics.render());
        render_cold_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        let started = Instant::now();
        std::hint::black_box(metrics.render());
        render_cached_ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    web_stop.cancel();
    stop.cancel();
    Figures {
        render_cold_ms,
        render_cached_ms,
        body_bytes,
        gzip_bytes,
        series,
        first_ms,
        plain_first_ms,
        plain_ms,
        gzip_ms,
        curl_plain_ms,
        curl_gzip_ms,
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // 667 per type is 2,000 namespaces in all.
    let sizes: &[usize] = if quick { &[2_000] } else { &[200, 667, 2_000] };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "/metrics over loopback HTTP: N namespaces in each of 3 image types, {IMAGES_PER_NAMESPACE} images each; \
         latency from request to last body byte, ms (median / p95 / max)"
    );
    println!(
        "{:>7} {:>7} | {:>9} {:>9} | {:>22} | {:>22} | {:>22} | {:>22} | {:>15}",
        "ns/type",
        "series",
        "plain KiB",
        "gzip KiB",
        "before background render",
        "1st plain after render",
        "cached plain",
        "cached gzip",
        "render cold/hot"
    );
    let mut at_2000 = None;
    for &namespaces in sizes {
        let f = runtime.block_on(measure(namespaces));
        let stats = |v: &[f64]| {
            format!(
                "{:>6.2} /{:>6.2} /{:>6.2}",
                percentile(v, 0.5),
                percentile(v, 0.95),
                percentile(v, 1.0)
            )
        };
        println!(
            "{:>7} {:>7} | {:>9.0} {:>9.0} | {} | {} | {} | {} | {:>6.2} /{:>6.2}",
            namespaces,
            f.series,
            f.body_bytes as f64 / 1024.0,
            f.gzip_bytes as f64 / 1024.0,
            stats(&f.first_ms),
            stats(&f.plain_first_ms),
            stats(&f.plain_ms),
            stats(&f.gzip_ms),
            percentile(&f.render_cold_ms, 0.5),
            percentile(&f.render_cached_ms, 0.5),
        );
        if namespaces == 2_000 {
            at_2000 = Some(f);
        }
    }
    if let Some(f) = at_2000 {
        let verdict = |ms: f64, target: f64| if ms < target { "met" } else { "MISSED" };
        // The targets are judged by curl, in its own process, when it is
        // installed: the in-process client shares the process and the cores
        // with the server and is itself the limit of its plain figure.
        let (gzip_ms, plain_ms, client) = if f.curl_plain_ms.is_empty() || f.curl_gzip_ms.is_empty()
        {
            (&f.gzip_ms, &f.plain_ms, "in-process client")
        } else {
            (&f.curl_gzip_ms, &f.curl_plain_ms, "curl")
        };
        let (gzip, gzip95) = (percentile(gzip_ms, 0.5), percentile(gzip_ms, 0.95));
        let (plain, plain95) = (percentile(plain_ms, 0.5), percentile(plain_ms, 0.95));
        let first = percentile(&f.first_ms, 0.5);
        if !f.curl_plain_ms.is_empty() && !f.curl_gzip_ms.is_empty() {
            println!(
                "2,000 namespaces x 3 image types, scraped by curl (own process, keep-alive): plain median {:.2} ms (p95 {:.2}), gzip median {:.2} ms (p95 {:.2})",
                percentile(&f.curl_plain_ms, 0.5),
                percentile(&f.curl_plain_ms, 0.95),
                percentile(&f.curl_gzip_ms, 0.5),
                percentile(&f.curl_gzip_ms, 0.95),
            );
        }
        println!(
            "2,000 namespaces x 3 image types, by {client}: gzip scrape (what Prometheus asks for) median {gzip:.2} ms (p95 {gzip95:.2}), \
             target < {GZIP_TARGET_MS} ms: {}; plain scrape median {plain:.2} ms (p95 {plain95:.2}), target < {PLAIN_TARGET_MS} ms: {}; \
             a scrape before the daemon's background rendering has caught up with a publication: {first:.2} ms",
            verdict(gzip, GZIP_TARGET_MS),
            verdict(plain, PLAIN_TARGET_MS),
        );
    }
    println!(
        "reproduce: cargo bench --bench scrape{}",
        if quick { " -- --quick" } else { "" }
    );
}
