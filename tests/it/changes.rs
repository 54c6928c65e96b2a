//! The changes lane against the simulator: after a first complete sweep, a
//! rescan, a push, a malicious image, a burst of more than a page of changes
//! and changes under a skewed server clock reach `/metrics` with one changes
//! round and no sweep; deletions and everything else are corrected by the
//! next sweep, also after an interrupted one. Lanes are run one round at a
//! time (`Exporter::run_lane_once`), so nothing here waits on a clock.

use crate::common::*;
use hss_swr_exporter::app::Exporter;
use hss_swr_exporter::collect::Lane;
use hss_swr_exporter::simulator::{Scripted, SimConfig, SimImage};

const TYPE: &str = "private_image";
const DETECTED: &str = "hss_swr_malicious_images_detected_total";

struct Rig {
    sim: RunningSimulator,
    exporter: Exporter,
}

impl Rig {
    /// 900 images in 4 namespaces, one scope with every lane; the first
    /// malicious listing and the first sweep done.
    async fn new(config: SimConfig) -> Self {
        let sim = start_simulator(config).await;
        let yaml = config_yaml(
            &sim.endpoint,
            "changes_interval: 1m\npage_size: 200\n",
            "    image_types: [private_image]\n",
        );
        let exporter = Exporter::new(parse_config(&yaml)).unwrap();
        let rig = Self { sim, exporter };
        assert!(rig.run(Lane::Malicious).await);
        assert!(rig.run(Lane::Sweep).await);
        rig
    }

    async fn run(&self, lane: Lane) -> bool {
        self.exporter.run_lane_once(lane).await
    }

    fn exposition(&self) -> Exposition {
        Exposition::parse(&self.exporter.metrics().render())
    }

    /// The exposition equals what the simulator holds now.
    fn assert_current(&self) {
        assert_matches_simulator(&self.exposition(), &self.sim.sim, TYPE);
    }

    fn lane_value(&self, family: &str, lane: &str) -> f64 {
        self.exposition().value(family, &[("lane", lane)])
    }

    fn image(&self, namespace_index: usize) -> SimImage {
        let images = self.sim.sim.images();
        let mut namespaces: Vec<&str> = images
            .iter()
            .filter(|i| i.image_type == TYPE)
            .map(|i| i.namespace.as_str())
            .collect();
        namespaces.sort_unstable();
        namespaces.dedup();
        let namespace = namespaces[namespace_index % namespaces.len()];
        images
            .iter()
            .find(|i| i.image_type == TYPE && i.namespace == namespace && i.malicious_file_num == 0)
            .cloned()
            .unwrap()
    }

    fn listing_calls(&self) -> usize {
        self.sim.sim.stats().calls.len()
    }
}

fn config() -> SimConfig {
    sim_config(900, 4)
}

#[tokio::test]
async fn a_rescan_reaches_metrics_with_one_changes_round_and_no_sweep() {
    let rig = Rig::new(config()).await;
    rig.assert_current();
    // Round 0 catches up from before the sweep began, with both filters.
    assert!(rig.run(Lane::Changes).await);
    let image = rig.image(0);
    rig.sim
        .sim
        .rescan(
            image.id,
            image.vul_num + 17,
            image.unsafe_setting_num + 1,
            0,
        )
        .unwrap();
    let calls = rig.listing_calls();
    assert!(rig.run(Lane::Changes).await);
    rig.assert_current();
    // Round 1 asks for scans only: one call.
    assert_eq!(rig.listing_calls() - calls, 1);
    assert_eq!(rig.lane_value("hss_swr_polls_total", "sweep"), 1.0);
    assert_eq!(rig.lane_value("hss_swr_up", "changes"), 1.0);
    assert!(rig.lane_value("hss_swr_rows_applied_total", "changes") >= 1.0);
    let age = rig.exposition().value(
        "hss_swr_changes_watermark_age_seconds",
        &[("filter", "scan")],
    );
    assert!(
        (0.0..3600.0).contains(&age),
        "the watermark follows the server's newest scan time: {age}"
    );
}

#[tokio::test]
async fn a_push_appears_within_two_rounds() {
    let rig = Rig::new(config()).await;
    assert!(rig.run(Lane::Changes).await, "round 0: both filters");
    let namespace = rig.image(1).namespace;
    let pushed = rig.sim.sim.push(&namespace, TYPE);
    assert_eq!(pushed.scan_status, "waiting_for_scan");
    // Round 1 asks only for scans; round 2 for pushes too.
    assert!(rig.run(Lane::Changes).await);
    assert!(rig.run(Lane::Changes).await);
    rig.assert_current();
    assert_eq!(
        rig.exposition().value(
            "hss_swr_images",
            &[
                ("namespace", namespace.as_str()),
                ("scan_status", "waiting_for_scan")
            ]
        ),
        rig.sim
            .sim
            .images()
            .iter()
            .filter(|i| i.image_type == TYPE
                && i.namespace == namespace
                && i.scan_status == "waiting_for_scan")
            .count() as f64
    );
}

#[tokio::test]
async fn a_deletion_is_corrected_by_the_next_sweep() {
    let rig = Rig::new(config()).await;
    let image = rig.image(2);
    assert!(rig.sim.sim.delete(image.id));
    assert!(rig.run(Lane::Changes).await);
    let namespace = [("namespace", image.namespace.as_str())];
    let images = |e: &Exposition| e.sum("hss_swr_images", &namespace);
    let before = images(&rig.exposition());
    assert!(rig.run(Lane::Sweep).await);
    assert_eq!(
        images(&rig.exposition()),
        before - 1.0,
        "the sweep replaced the table"
    );
    rig.assert_current();
}

#[tokio::test]
async fn a_malicious_image_between_sweeps_is_detected_once_by_the_changes_lane() {
    let rig = Rig::new(config()).await;
    assert!(rig.run(Lane::Changes).await);
    let image = rig.image(3);
    let namespace = [("namespace", image.namespace.as_str())];
    assert_eq!(rig.exposition().value(DETECTED, &namespace), 0.0);
    rig.sim
        .sim
        .rescan(image.id, image.vul_num, image.unsafe_setting_num, 4)
        .unwrap();
    assert!(rig.run(Lane::Changes).await);
    let exposition = rig.exposition();
    assert_eq!(exposition.value(DETECTED, &namespace), 1.0);
    rig.assert_current();
    // The overlap, the malicious check and a sweep all see it again: still
    // one detection.
    assert!(rig.run(Lane::Changes).await);
    assert!(rig.run(Lane::Malicious).await);
    assert!(rig.run(Lane::Sweep).await);
    assert_eq!(rig.exposition().value(DETECTED, &namespace), 1.0);
    assert_eq!(rig.exposition().sum(DETECTED, &[]), 1.0);
}

#[tokio::test]
async fn a_burst_of_more_than_a_page_of_changes_is_paged_through() {
    let rig = Rig::new(config()).await;
    assert!(rig.run(Lane::Changes).await);
    let ids: Vec<SimImage> = rig
        .sim
        .sim
        .images()
        .into_iter()
        .filter(|i| i.image_type == TYPE)
        .take(450)
        .collect();
    for image in &ids {
        rig.sim
            .sim
            .rescan(image.id, image.vul_num + 1, 0, 0)
            .unwrap();
    }
    let calls = rig.listing_calls();
    assert!(rig.run(Lane::Changes).await);
    assert_eq!(
        rig.listing_calls() - calls,
        3,
        "450 rows: three pages of 200"
    );
    rig.assert_current();
}

#[tokio::test]
async fn a_server_clock_ahead_or_behind_loses_no_change() {
    for offset_minutes in [-90i64, -10, 10, 90] {
        let rig = Rig::new(SimConfig {
            clock_offset_ms: offset_minutes * 60_000,
            ..config()
        })
        .await;
        for round in 0..3 {
            let image = rig.image(round);
            rig.sim
                .sim
                .rescan(image.id, image.vul_num + 5, image.unsafe_setting_num, 0)
                .unwrap();
            assert!(rig.run(Lane::Changes).await);
            rig.assert_current();
        }
    }
}

#[tokio::test]
async fn an_interrupted_sweep_loses_no_change_and_the_next_one_converges() {
    let rig = Rig::new(config()).await;
    assert!(rig.run(Lane::Changes).await);
    // The next sweep fails on its second page.
    rig.sim
        .sim
        .fail_next(vec![Scripted::Status(200), Scripted::Status(404)]);
    assert!(!rig.run(Lane::Sweep).await);
    assert_eq!(rig.lane_value("hss_swr_up", "sweep"), 0.0);
    // Changes keep flowing while sweeps fail.
    let image = rig.image(0);
    rig.sim.sim.rescan(image.id, 1234, 0, 0).unwrap();
    let gone = rig.image(1);
    assert!(rig.sim.sim.delete(gone.id));
    assert!(rig.run(Lane::Changes).await);
    let namespace = [("namespace", image.namespace.as_str())];
    let expected = expected(&rig.sim.sim.images(), TYPE, "all_granted_eps");
    let want = &expected[&(String::new(), image.namespace.clone())];
    assert_eq!(
        rig.exposition()
            .value("hss_swr_vulnerabilities", &namespace),
        want.vulnerabilities as f64
    );
    // One complete sweep later, everything (the deletion too) is exact.
    assert!(rig.run(Lane::Sweep).await);
    rig.assert_current();
}

#[tokio::test]
async fn before_the_first_sweep_the_changes_lane_publishes_nothing_and_calls_nothing() {
    let sim = start_simulator(config()).await;
    let yaml = config_yaml(&sim.endpoint, "", "    image_types: [private_image]\n");
    let exporter = Exporter::new(parse_config(&yaml)).unwrap();
    assert!(exporter.run_lane_once(Lane::Changes).await);
    assert_eq!(sim.sim.stats().calls.len(), 0);
    let exposition = Exposition::parse(&exporter.metrics().render());
    assert!(exposition.find("hss_swr_vulnerabilities", &[]).is_empty());
    assert!(
        exposition
            .find("hss_swr_up", &[("lane", "changes")])
            .is_empty()
    );
}
