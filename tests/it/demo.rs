//! The demo: what a new user sees on `/metrics` with no cloud account.

use crate::common::*;
use hss_swr_exporter::app;
use hss_swr_exporter::simulator::generate;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Every namespace metric of the contract (DESIGN.md section 5) but the
/// opt-in per-image ones and the detection counter of the malicious lane.
const NAMESPACE_METRICS: [&str; 9] = [
    "hss_swr_images",
    "hss_swr_vulnerabilities",
    "hss_swr_malicious_files",
    "hss_swr_unsafe_settings",
    "hss_swr_vulnerable_images",
    "hss_swr_malicious_images",
    "hss_swr_unsafe_images",
    "hss_swr_scan_failures",
    "hss_swr_oldest_scan_timestamp_seconds",
];

#[tokio::test]
async fn the_demo_shows_every_namespace_metric_with_the_simulators_numbers() {
    let mut sim_config = app::demo_simulator_config();
    sim_config.base_time_ms = 1_760_000_000_000;
    let images = generate(&sim_config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let demo = tokio::spawn(app::run_demo_with(
        sim_config,
        listener,
        "/metrics",
        None,
        stop.clone().cancelled_owned(),
    ));

    let client = http();
    let mut ready = false;
    for _ in 0..600 {
        if let Ok(r) = client.get(format!("{url}/-/ready")).send().await
            && r.status() == 200
        {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ready, "the demo becomes ready");
    // Ready needs one lane run per scope; wait for the sweeps too.
    let mut swept = false;
    for _ in 0..600 {
        let status: serde_json::Value = client
            .get(format!("{url}/status"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let lanes: Vec<&serde_json::Value> = status["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["lanes"].as_array().unwrap())
            .collect();
        if lanes.iter().all(|l| l["state"] == "ok") {
            swept = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(swept, "every lane of the demo succeeds");
    let exposition = scrape(&url).await;
    for name in NAMESPACE_METRICS {
        assert!(!exposition.find(name, &[]).is_empty(), "{name} is shown");
    }
    // Something to show everywhere: malicious images, failed scans, enterprise instances.
    assert!(exposition.sum("hss_swr_malicious_images", &[]) > 0.0);
    assert!(exposition.sum("hss_swr_scan_failures", &[]) > 0.0);
    assert!(exposition.sum("hss_swr_images", &[("scan_status", "failed")]) > 0.0);
    assert!(
        exposition
            .find("hss_swr_images", &[("image_type", "instance_image")])
            .iter()
            .any(|s| !s.labels["instance_name"].is_empty())
    );
    for status in [
        "unscan",
        "success",
        "scanning",
        "failed",
        "download_failed",
        "image_oversized",
        "waiting_for_scan",
    ] {
        assert!(
            exposition.sum("hss_swr_images", &[("scan_status", status)]) > 0.0,
            "some image is {status}"
        );
    }
    for image_type in ["private_image", "shared_image", "instance_image"] {
        let want = expected(&images, image_type, "all_granted_eps");
        assert_scope_matches(&exposition, "demo", "all_granted_eps", image_type, &want);
    }
    let want = expected(&images, "private_image", "ep-finance");
    assert_scope_matches(
        &exposition,
        "demo-finance",
        "ep-finance",
        "private_image",
        &want,
    );
    assert_eq!(
        exposition.sum("hss_swr_api_throttled_total", &[]),
        0.0,
        "the demo's budget matches its quota"
    );
    stop.cancel();
    demo.await.unwrap().unwrap();
}
