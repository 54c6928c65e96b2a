//! Golden test of the exposition: for a fixed simulator seed, what
//! `/metrics` shows (every family but the ones that depend on the clock, the
//! build or the process) equals `tests/it/golden/metrics.txt` byte for byte.
//!
//! Any change to a family, a label, a HELP text, a value or the order of the
//! lines shows up as a diff of that file. When the change is intended,
//! regenerate it with `UPDATE_GOLDEN=1 cargo test --test it golden::` and review
//! the diff; `scripts/test` runs `promtool check metrics` on it.

use crate::common::*;
use hss_swr_exporter::simulator::SimImage;

/// The fixture, relative to the crate root.
const FIXTURE: &str = "tests/it/golden/metrics.txt";

/// Families whose values depend on the clock, the build or the process
/// rather than on the data: left out of the comparison.
const VOLATILE: [&str; 7] = [
    "hss_swr_last_success_timestamp_seconds",
    "hss_swr_changes_watermark_age_seconds",
    "hss_swr_poll_duration_seconds",
    "hss_swr_api_request_duration_seconds",
    "hss_swr_api_budget_wait_seconds_total",
    "hss_swr_config_last_reload_success_timestamp_seconds",
    "hss_swr_build_info",
];

fn volatile(family: &str) -> bool {
    family.starts_with("process_") || VOLATILE.contains(&family)
}

/// The exposition without the volatile families (their HELP and TYPE lines
/// and samples alike).
fn stable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut family = String::new();
    for line in text.lines() {
        if let Some(rest) = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
        {
            family = rest.split(' ').next().unwrap_or_default().to_string();
        } else {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            // Samples of a histogram carry a suffix; others start a family
            // of their own only after its HELP line.
            if !name.starts_with(family.as_str()) {
                family = name.to_string();
            }
        }
        if !volatile(&family) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// An image whose namespace has every character the text format escapes,
/// and CJK text.
fn awkward_image() -> SimImage {
    SimImage {
        id: 900_000,
        namespace: "q\"uote\\back\nline 团队".to_string(),
        image_name: "odd\"name".to_string(),
        image_version: "1.0\\rc".to_string(),
        image_digest: format!("sha256:{:064x}", 1),
        image_type: "private_image".to_string(),
        latest_version: true,
        scan_status: "failed".to_string(),
        scan_failed_desc: "failed_to_scan_vulnerability".to_string(),
        latest_scan_time: 1_759_000_000_250,
        vul_num: 4,
        malicious_file_num: 2,
        unsafe_setting_num: 1,
        enterprise_project_id: "0".to_string(),
        ..SimImage::default()
    }
}

#[tokio::test]
async fn the_exposition_equals_the_checked_in_fixture() {
    let sim = start_simulator(sim_config(300, 12)).await;
    sim.sim.add_image(awkward_image());
    let yaml = format!(
        "api_rate_limit: 1000/1s
request_timeout: 5s
image_metrics: true
max_image_series: 25
credentials: {{access_key: {AK}, secret_key: {SK}}}
targets:
  - name: swr-prod
    region: cn-north-4
    project_id: {PROJECT}
    endpoint: {e}
  - name: registry-prod
    region: cn-north-4
    project_id: {PROJECT}
    endpoint: {e}
    api: registry-images
    image_types: [private_image, harbor]
",
        e = sim.endpoint
    );
    let (_exporter, ok, exposition) = once(&yaml).await;
    assert!(ok, "every lane succeeds");
    let actual = stable(&exposition.text);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("{FIXTURE}: {e}; create it with UPDATE_GOLDEN=1 cargo test --test it golden::")
    });
    if actual != expected {
        let (line, (want, got)) = expected
            .lines()
            .chain(std::iter::repeat("<end of text>"))
            .zip(actual.lines().chain(std::iter::repeat("<end of text>")))
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .unwrap_or((0, ("", "")));
        panic!(
            "/metrics differs from {FIXTURE} at line {}:\n  fixture: {want}\n  now:     {got}\n\
             (if the change is intended: UPDATE_GOLDEN=1 cargo test --test it golden::, and review the diff)",
            line + 1
        );
    }
}

#[test]
fn volatile_families_are_left_out_whole() {
    let text = "# HELP a_total A.\n# TYPE a_total counter\na_total 1\n\
                # HELP hss_swr_api_request_duration_seconds D.\n# TYPE hss_swr_api_request_duration_seconds histogram\n\
                hss_swr_api_request_duration_seconds_bucket{le=\"+Inf\"} 1\nhss_swr_api_request_duration_seconds_count 1\n\
                # HELP process_cpu_seconds_total C.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 0.5\n\
                # HELP b B.\n# TYPE b gauge\nb{x=\"1\"} 2\n";
    assert_eq!(
        stable(text),
        "# HELP a_total A.\n# TYPE a_total counter\na_total 1\n# HELP b B.\n# TYPE b gauge\nb{x=\"1\"} 2\n"
    );
}
