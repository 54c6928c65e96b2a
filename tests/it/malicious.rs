//! The malicious lane against the simulator: detection, the counter at 0 for
//! every known namespace, and the state file across restarts.

use std::collections::BTreeSet;

use crate::common::*;
use hss_swr_exporter::app::Exporter;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("hss-mal-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn render(exporter: &Exporter) -> Exposition {
    Exposition::parse(&exporter.metrics().render())
}

const DETECTED: &str = "hss_swr_malicious_images_detected_total";

#[tokio::test]
async fn the_counter_starts_at_zero_for_every_known_namespace() {
    let sim = start_simulator(sim_config(1500, 8)).await;
    let (_, ok, exposition) = once(&config_yaml(&sim.endpoint, "", "")).await;
    assert!(ok);
    for image_type in ["private_image", "shared_image", "instance_image"] {
        let scope = [("image_type", image_type)];
        let namespaces: BTreeSet<String> = exposition
            .find("hss_swr_vulnerabilities", &scope)
            .iter()
            .map(|s| s.labels["namespace"].clone())
            .collect();
        let counted: BTreeSet<String> = exposition
            .find(DETECTED, &scope)
            .iter()
            .map(|s| s.labels["namespace"].clone())
            .collect();
        assert_eq!(namespaces, counted, "{image_type}");
        assert_eq!(
            exposition.sum(DETECTED, &scope),
            0.0,
            "the first run only sets the baseline"
        );
        let lane = [("image_type", image_type), ("lane", "malicious")];
        assert_eq!(exposition.value("hss_swr_up", &lane), 1.0);
        assert_eq!(exposition.value("hss_swr_polls_total", &lane), 1.0);
    }
    assert!(
        exposition
            .text
            .contains(&format!("# TYPE {DETECTED} counter"))
    );
}

#[tokio::test]
async fn new_and_growing_malicious_images_are_counted() {
    let sim = start_simulator(sim_config(1200, 6)).await;
    let yaml = config_yaml(&sim.endpoint, "", "    image_types: [private_image]\n");
    let exporter = Exporter::new(parse_config(&yaml)).unwrap();
    assert!(exporter.run_once().await);
    let baseline_files = render(&exporter).await.sum("hss_swr_malicious_files", &[]);

    // A namespace never seen before, and a second image in a known one.
    sim.sim
        .set_malicious("brand-new-ns", "evil", "1.0", "private_image", "0", 3);
    let known = sim.sim.images()[0].namespace.clone();
    sim.sim
        .set_malicious(&known, "dropper", "7", "private_image", "0", 1);
    assert!(exporter.run_once().await);
    let exposition = render(&exporter).await;
    assert_eq!(
        exposition.value(DETECTED, &[("namespace", "brand-new-ns")]),
        1.0
    );
    assert_eq!(
        exposition.value(DETECTED, &[("namespace", known.as_str())]),
        1.0
    );
    assert_eq!(exposition.sum(DETECTED, &[]), 2.0);
    assert_eq!(
        exposition.value("hss_swr_malicious_files", &[("namespace", "brand-new-ns")]),
        3.0
    );
    assert_eq!(
        exposition.value("hss_swr_malicious_images", &[("namespace", "brand-new-ns")]),
        1.0
    );
    assert_eq!(
        exposition.sum("hss_swr_malicious_files", &[]),
        baseline_files + 4.0
    );

    // More files in the same image count again; the same image unchanged does not.
    sim.sim
        .set_malicious("brand-new-ns", "evil", "1.0", "private_image", "0", 5);
    assert!(exporter.run_once().await);
    assert!(exporter.run_once().await);
    let exposition = render(&exporter).await;
    assert_eq!(
        exposition.value(DETECTED, &[("namespace", "brand-new-ns")]),
        2.0
    );
    assert_eq!(exposition.sum(DETECTED, &[]), 3.0);
}

#[tokio::test]
async fn the_malicious_lane_is_fresher_than_the_last_sweep() {
    malicious_lane_is_fresher(false).await;
    malicious_lane_is_fresher(true).await;
}

/// A malicious listing after a sweep: its figures win over the sweep's. With
/// the changes lane, the listing's rows also go into the image table, so the
/// image's namespace has all its gauges at once.
async fn malicious_lane_is_fresher(changes_lane: bool) {
    let sim = start_simulator(sim_config(900, 4)).await;
    let extra = if changes_lane {
        ""
    } else {
        "changes_interval: 0\n"
    };
    let yaml = config_yaml(&sim.endpoint, extra, "    image_types: [private_image]\n");
    let exporter = Exporter::new(parse_config(&yaml)).unwrap();
    assert!(exporter.run_once().await);
    sim.sim
        .set_malicious("fresh-ns", "evil", "1", "private_image", "0", 2);
    // Only the malicious lane runs (the sweep would take an hour on a big registry).
    assert!(
        exporter
            .run_lane_once(hss_swr_exporter::collect::Lane::Malicious)
            .await
    );
    let exposition = render(&exporter).await;
    assert_eq!(
        exposition.value("hss_swr_malicious_files", &[("namespace", "fresh-ns")]),
        2.0
    );
    let vulnerabilities = exposition.find("hss_swr_vulnerabilities", &[("namespace", "fresh-ns")]);
    if changes_lane {
        let row = sim
            .sim
            .images()
            .into_iter()
            .find(|i| i.namespace == "fresh-ns")
            .unwrap();
        assert_eq!(vulnerabilities.len(), 1, "the row is in the image table");
        assert_eq!(vulnerabilities[0].value, row.vul_num as f64);
        assert_eq!(
            exposition.value(
                "hss_swr_images",
                &[("namespace", "fresh-ns"), ("scan_status", "success")]
            ),
            1.0
        );
    } else {
        assert!(
            vulnerabilities.is_empty(),
            "the other gauges wait for the next sweep"
        );
    }
    assert_eq!(
        exposition.value(DETECTED, &[("namespace", "fresh-ns")]),
        1.0
    );
}

#[tokio::test]
async fn the_state_file_carries_the_baseline_across_restarts() {
    let sim = start_simulator(sim_config(900, 4)).await;
    let dir = temp_dir("restart");
    let state = dir.join("state.json");
    let extra = format!("state_file: {}\n", state.display());
    let yaml = config_yaml(&sim.endpoint, &extra, "    image_types: [private_image]\n");

    let first = Exporter::new(parse_config(&yaml)).unwrap();
    assert!(first.run_once().await);
    assert!(state.exists(), "the baseline is written");
    drop(first);

    // While the exporter is down, a malicious image appears.
    sim.sim
        .set_malicious("while-down", "evil", "1", "private_image", "0", 1);
    let second = Exporter::new(parse_config(&yaml)).unwrap();
    assert!(second.run_once().await);
    let exposition = render(&second).await;
    assert_eq!(
        exposition.value(DETECTED, &[("namespace", "while-down")]),
        1.0,
        "the restored baseline makes the first run after a restart count"
    );
    assert_eq!(
        exposition.sum(DETECTED, &[]),
        1.0,
        "images known before the restart are not counted again"
    );

    // Without the state file, the first run would only have set the baseline.
    let yaml_without = config_yaml(&sim.endpoint, "", "    image_types: [private_image]\n");
    let (_, _, fresh) = once(&yaml_without).await;
    assert_eq!(fresh.sum(DETECTED, &[]), 0.0);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_corrupt_state_file_is_replaced_by_a_fresh_baseline() {
    let sim = start_simulator(sim_config(600, 3)).await;
    let dir = temp_dir("corrupt");
    let state = dir.join("state.json");
    std::fs::write(&state, "{\"version\": 1, \"scopes\": [ {\"target\": ").unwrap();
    let extra = format!("state_file: {}\n", state.display());
    let yaml = config_yaml(&sim.endpoint, &extra, "    image_types: [private_image]\n");
    let exporter = Exporter::new(parse_config(&yaml)).unwrap();
    assert!(
        exporter.run_once().await,
        "a corrupt state file never stops the exporter"
    );
    assert_eq!(render(&exporter).await.sum(DETECTED, &[]), 0.0);
    let text = std::fs::read_to_string(&state).unwrap();
    let parsed: serde_json::Value =
        serde_json::from_str(&text).expect("the file was replaced by a valid one");
    assert_eq!(parsed["version"], 1);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn the_daemon_detects_within_one_lane_round() {
    let sim = start_simulator(sim_config(2000, 6)).await;
    let yaml = config_yaml(
        &sim.endpoint,
        "malicious_interval: 300ms\npoll_interval: 1h\n",
        "    image_types: [private_image]\n",
    );
    let exporter = start_exporter(&yaml).await;
    let scopes = exporter.scopes.clone();
    eventually("every lane has run", || all_lanes_ran(&scopes)).await;
    sim.sim
        .set_malicious("late-ns", "evil", "9", "private_image", "0", 4);
    let url = exporter.url.clone();
    let mut found = false;
    for _ in 0..300 {
        let exposition = scrape(&url).await;
        if exposition
            .find(DETECTED, &[("namespace", "late-ns")])
            .first()
            .is_some_and(|s| s.value == 1.0)
        {
            found = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        found,
        "the new malicious image is counted without waiting for a sweep"
    );
    let exposition = scrape(&url).await;
    assert_eq!(
        exposition.value("hss_swr_polls_total", &[("lane", "sweep")]),
        1.0,
        "no second sweep ran"
    );
    exporter.stop().await;
}
