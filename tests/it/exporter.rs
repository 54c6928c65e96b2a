//! End-to-end behaviour of the exporter against the built-in simulator on a
//! loopback port: the numbers it publishes, the calls it spends, and how it
//! behaves when the API refuses, fails or throttles.

use std::time::Duration;

use crate::common::*;
use hss_swr_exporter::collect::Lane;
use hss_swr_exporter::simulator::{Faults, Quota, Scripted, SimImage, max_calls_in_window};

const TYPES: [&str; 3] = ["private_image", "shared_image", "instance_image"];

#[tokio::test]
async fn published_numbers_match_the_simulator_for_every_scope() {
    let sim = start_simulator(sim_config(3000, 12)).await;
    let yaml = config_yaml(
        &sim.endpoint,
        "",
        "    enterprise_project_ids: [all_granted_eps, ep-finance]\n",
    );
    let (_, ok, exposition) = once(&yaml).await;
    assert!(ok, "every scope succeeds");
    let images = sim.sim.images();
    for ep in ["all_granted_eps", "ep-finance"] {
        for image_type in TYPES {
            let want = expected(&images, image_type, ep);
            assert!(
                !want.is_empty(),
                "the synthetic data covers {ep}/{image_type}"
            );
            assert_scope_matches(&exposition, "test", ep, image_type, &want);
            let scope = [
                ("target", "test"),
                ("enterprise_project_id", ep),
                ("image_type", image_type),
                ("lane", "sweep"),
            ];
            assert_eq!(exposition.value("hss_swr_up", &scope), 1.0);
            assert_eq!(exposition.value("hss_swr_polls_total", &scope), 1.0);
            assert_eq!(exposition.value("hss_swr_poll_failures_total", &scope), 0.0);
            assert!(exposition.value("hss_swr_last_success_timestamp_seconds", &scope) > 1.7e9);
        }
    }
    // Enterprise-edition namespaces carry their instance name.
    assert!(
        exposition
            .find(
                "hss_swr_vulnerabilities",
                &[("image_type", "instance_image")]
            )
            .iter()
            .all(|s| !s.labels["instance_name"].is_empty())
    );
    // Every call asked for 200 rows; no offset was asked for twice per scope.
    let calls = sim.sim.stats().calls;
    assert!(calls.iter().all(|c| c.limit == 200 && c.status == 200));
    let mut seen = std::collections::BTreeSet::new();
    for c in &calls {
        let key = (
            c.query.replace(&format!("offset={}", c.offset), ""),
            c.offset,
        );
        assert!(seen.insert(key), "page asked twice: {}", c.query);
    }
    assert_eq!(
        exposition.value(
            "hss_swr_api_requests_total",
            &[("target", "test"), ("code", "200")]
        ),
        calls.len() as f64
    );
    assert_eq!(
        exposition.value("hss_swr_api_throttled_total", &[("target", "test")]),
        0.0
    );
}

fn private_rows(n: usize) -> Vec<SimImage> {
    let mut config = sim_config(n * 3 + 50, 4);
    config.seed = 11;
    let mut rows: Vec<SimImage> = hss_swr_exporter::simulator::generate(&config)
        .into_iter()
        .filter(|i| i.image_type == "private_image")
        .collect();
    assert!(rows.len() >= n, "enough private images generated");
    rows.truncate(n);
    rows
}

#[tokio::test]
async fn page_boundaries_ask_for_each_page_once() {
    for (rows, offsets) in [
        (0, vec![0]),
        (200, vec![0]),
        (201, vec![0, 200]),
        (401, vec![0, 200, 400]),
    ] {
        let sim = start_simulator(sim_config(0, 1)).await;
        sim.sim.set_images(private_rows(rows));
        let yaml = config_yaml(
            &sim.endpoint,
            "malicious_interval: 0\n",
            "    image_types: [private_image]\n",
        );
        let (_, ok, exposition) = once(&yaml).await;
        assert!(ok);
        let mut asked: Vec<u64> = sim.sim.stats().calls.iter().map(|c| c.offset).collect();
        asked.sort_unstable();
        assert_eq!(asked, offsets, "{rows} rows");
        assert_eq!(
            exposition.sum("hss_swr_images", &[]),
            rows as f64,
            "{rows} rows"
        );
        assert_matches_simulator(&exposition, &sim.sim, "private_image");
    }
}

#[tokio::test]
async fn rows_repeated_across_pages_count_once() {
    let sim = start_simulator(sim_config(0, 1)).await;
    sim.sim.set_images(private_rows(650));
    sim.sim.set_faults(Faults {
        duplicate_rows: true,
        ..Faults::default()
    });
    let yaml = config_yaml(&sim.endpoint, "", "    image_types: [private_image]\n");
    let (_, ok, exposition) = once(&yaml).await;
    assert!(ok);
    assert_matches_simulator(&exposition, &sim.sim, "private_image");
    assert_eq!(exposition.sum("hss_swr_images", &[]), 650.0);
    assert!(exposition.sum("hss_swr_duplicate_rows_total", &[]) >= 3.0);
}

#[tokio::test]
async fn loose_types_parse_and_are_counted() {
    let sim = start_simulator(sim_config(900, 6)).await;
    sim.sim.set_faults(Faults {
        loose_types: true,
        ..Faults::default()
    });
    let yaml = config_yaml(&sim.endpoint, "", "");
    let (_, ok, exposition) = once(&yaml).await;
    assert!(ok);
    let images = sim.sim.images();
    for image_type in TYPES {
        assert_scope_matches(
            &exposition,
            "test",
            "all_granted_eps",
            image_type,
            &expected(&images, image_type, "all_granted_eps"),
        );
    }
    // Ids like "111(...)" cannot be read; they are counted, never fatal.
    assert!(exposition.sum("hss_swr_invalid_fields_total", &[("field", "id")]) > 0.0);
}

#[tokio::test]
async fn unknown_values_and_awkward_label_text_come_through() {
    let sim = start_simulator(sim_config(0, 1)).await;
    let mut rows = private_rows(4);
    rows[0].namespace = "q\"uote\\back\nline".into();
    rows[1].namespace = "支付-团队".into();
    rows[1].scan_status = "quantum_scanning".into();
    rows[2].namespace = "支付-团队".into();
    rows[2].scan_status = "failed".into();
    rows[2].scan_failed_desc = "brand_new_reason \"x\"".into();
    sim.sim.set_images(rows);
    let yaml = config_yaml(&sim.endpoint, "", "    image_types: [private_image]\n");
    let (_, ok, exposition) = once(&yaml).await;
    assert!(ok);
    assert_matches_simulator(&exposition, &sim.sim, "private_image");
    assert_eq!(
        exposition.value(
            "hss_swr_images",
            &[
                ("namespace", "支付-团队"),
                ("scan_status", "quantum_scanning")
            ]
        ),
        1.0
    );
    assert_eq!(
        exposition.value(
            "hss_swr_scan_failures",
            &[
                ("namespace", "支付-团队"),
                ("reason", "brand_new_reason \"x\"")
            ]
        ),
        1.0
    );
    assert_eq!(
        exposition
            .find(
                "hss_swr_vulnerabilities",
                &[("namespace", "q\"uote\\back\nline")]
            )
            .len(),
        1
    );
    assert!(
        exposition
            .text
            .contains(r#"namespace="q\"uote\\back\nline""#)
    );
}

#[tokio::test]
async fn a_refused_scope_fails_alone() {
    let sim = start_simulator(sim_config(1200, 6)).await;
    sim.sim.set_faults(Faults {
        forbidden_eps: vec!["ep-secret".into()],
        ..Faults::default()
    });
    let yaml = config_yaml(
        &sim.endpoint,
        "",
        "    enterprise_project_ids: ['0', ep-secret]\n",
    );
    let (exporter, ok, exposition) = once(&yaml).await;
    assert!(!ok, "once reports the failed scope");
    let images = sim.sim.images();
    for image_type in TYPES {
        assert_scope_matches(
            &exposition,
            "test",
            "0",
            image_type,
            &expected(&images, image_type, "0"),
        );
        let ok_scope = [
            ("enterprise_project_id", "0"),
            ("image_type", image_type),
            ("lane", "sweep"),
        ];
        assert_eq!(exposition.value("hss_swr_up", &ok_scope), 1.0);
        let bad_scope = [
            ("enterprise_project_id", "ep-secret"),
            ("image_type", image_type),
            ("lane", "sweep"),
        ];
        assert_eq!(exposition.value("hss_swr_up", &bad_scope), 0.0);
        assert_eq!(
            exposition.value("hss_swr_poll_failures_total", &bad_scope),
            1.0
        );
        assert!(
            exposition
                .find(
                    "hss_swr_vulnerabilities",
                    &[("enterprise_project_id", "ep-secret")]
                )
                .is_empty()
        );
    }
    for scope in exporter.scopes().list() {
        let status = scope.lane_status(Lane::Sweep);
        if scope.scope.enterprise_project_id == "ep-secret" {
            let error = status.last_error.unwrap();
            assert!(error.contains("HTTP 403: HSS.0013"), "{error}");
        } else {
            assert!(status.last_error.is_none());
        }
    }
    // A 403 is not retried: one call per lane of each refused scope.
    let refused = sim
        .sim
        .stats()
        .calls
        .iter()
        .filter(|c| c.status == 403)
        .count();
    assert_eq!(refused, 6);
}

#[tokio::test]
async fn server_errors_and_throttling_are_retried_until_they_clear() {
    let sim = start_simulator(sim_config(600, 4)).await;
    sim.sim.fail_next(vec![
        Scripted::Status(500),
        Scripted::Status(429),
        Scripted::Status(503),
        Scripted::Reset,
    ]);
    let yaml = config_yaml(
        &sim.endpoint,
        "max_retries: 5\n",
        "    image_types: [private_image]\n",
    );
    let (_, ok, exposition) = once(&yaml).await;
    assert!(ok, "the sweep completes after the faults clear");
    assert_matches_simulator(&exposition, &sim.sim, "private_image");
    let t = [("target", "test")];
    assert_eq!(exposition.value("hss_swr_api_throttled_total", &t), 1.0);
    assert_eq!(
        exposition.value(
            "hss_swr_api_retries_total",
            &[("target", "test"), ("reason", "server_error")]
        ),
        2.0
    );
    assert_eq!(
        exposition.value(
            "hss_swr_api_retries_total",
            &[("target", "test"), ("reason", "throttled")]
        ),
        1.0
    );
    assert_eq!(
        exposition.value(
            "hss_swr_api_retries_total",
            &[("target", "test"), ("reason", "transport")]
        ),
        1.0
    );
    assert_eq!(
        exposition.value(
            "hss_swr_api_requests_total",
            &[("target", "test"), ("code", "500")]
        ),
        1.0
    );
    assert_eq!(
        exposition.value(
            "hss_swr_api_requests_total",
            &[("target", "test"), ("code", "429")]
        ),
        1.0
    );
}

#[tokio::test]
async fn retries_give_up_after_max_retries() {
    let sim = start_simulator(sim_config(100, 2)).await;
    sim.sim.fail_next(vec![Scripted::Status(502); 3]);
    let yaml = config_yaml(
        &sim.endpoint,
        "max_retries: 2\nmalicious_interval: 0\n",
        "    image_types: [private_image]\n",
    );
    let (exporter, ok, exposition) = once(&yaml).await;
    assert!(!ok);
    assert_eq!(sim.sim.stats().calls.len(), 3, "one call and two retries");
    assert_eq!(exposition.value("hss_swr_up", &[("lane", "sweep")]), 0.0);
    let error = exporter.scopes().list()[0]
        .lane_status(Lane::Sweep)
        .last_error
        .unwrap();
    assert!(error.starts_with("page at offset 0: HTTP 502"), "{error}");
}

#[tokio::test]
async fn a_failed_sweep_leaves_the_previous_result_in_place() {
    let sim = start_simulator(sim_config(900, 5)).await;
    // Without the changes lane: its malicious check would rightly publish the
    // changed rows of the malicious images; this is about the sweep alone.
    let yaml = config_yaml(
        &sim.endpoint,
        "changes_interval: 0\n",
        "    image_types: [private_image]\n",
    );
    let exporter = hss_swr_exporter::app::Exporter::new(parse_config(&yaml)).unwrap();
    assert!(exporter.run_once().await);
    let before = Exposition::parse(&exporter.metrics().render());
    let want = expected(&sim.sim.images(), "private_image", "all_granted_eps");

    // The data changes, and the next sweep fails on a later page.
    let mut changed = sim.sim.images();
    for image in &mut changed {
        image.vul_num += 1000;
    }
    sim.sim.set_images(changed);
    sim.sim
        .fail_next(vec![Scripted::Status(200), Scripted::Status(404)]);
    assert!(!exporter.run_once().await);
    let after = Exposition::parse(&exporter.metrics().render());
    assert_scope_matches(&after, "test", "all_granted_eps", "private_image", &want);
    let lane = [("lane", "sweep")];
    assert_eq!(after.value("hss_swr_up", &lane), 0.0);
    assert_eq!(
        after.value("hss_swr_last_success_timestamp_seconds", &lane),
        before.value("hss_swr_last_success_timestamp_seconds", &lane)
    );
    assert_eq!(after.value("hss_swr_polls_total", &lane), 2.0);
    assert_eq!(after.value("hss_swr_poll_failures_total", &lane), 1.0);

    // Once the fault clears, the new numbers are published whole.
    assert!(exporter.run_once().await);
    let recovered = Exposition::parse(&exporter.metrics().render());
    assert_matches_simulator(&recovered, &sim.sim, "private_image");
    assert_eq!(recovered.value("hss_swr_up", &lane), 1.0);
}

#[tokio::test]
async fn the_budget_is_never_exceeded_and_draws_no_429() {
    let mut config = sim_config(2400, 8);
    config.quota = Some(Quota {
        calls: 5,
        window: Duration::from_millis(500),
    });
    config.latency = Duration::from_millis(5);
    let sim = start_simulator(config).await;
    let yaml = config_yaml(&sim.endpoint, "", "")
        .replace("api_rate_limit: 1000/1s", "api_rate_limit: 5/500ms");
    let (_, ok, exposition) = once(&yaml).await;
    assert!(ok);
    let calls = sim.sim.stats().calls;
    assert!(calls.len() >= 12, "{} calls", calls.len());
    assert!(calls.iter().all(|c| c.status == 200), "no call was refused");
    assert!(max_calls_in_window(&calls, Duration::from_millis(500)) <= 5);
    assert_eq!(
        exposition.value("hss_swr_api_throttled_total", &[("target", "test")]),
        0.0
    );
    assert!(
        exposition.value(
            "hss_swr_api_budget_wait_seconds_total",
            &[("target", "test")]
        ) > 0.5
    );
}

#[tokio::test]
async fn a_static_token_from_a_file_authenticates() {
    let dir = std::env::temp_dir().join(format!("hss-it-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_path = dir.join("token");
    std::fs::write(&token_path, "static-token-value\n").unwrap();
    let mut config = sim_config(300, 3);
    config.tokens = vec!["static-token-value".into()];
    let sim = start_simulator(config).await;
    let yaml = format!(
        "api_rate_limit: 1000/1s\ncredentials:\n  token_file: {}\ntargets:\n  - name: test\n    region: r\n    project_id: {PROJECT}\n    endpoint: {}\n    image_types: [shared_image]\n",
        token_path.display(),
        sim.endpoint
    );
    let (_, ok, exposition) = once(&yaml).await;
    assert!(ok);
    assert_matches_simulator(&exposition, &sim.sim, "shared_image");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_wrong_secret_fails_once_and_is_not_retried() {
    let sim = start_simulator(sim_config(100, 2)).await;
    let yaml = config_yaml(&sim.endpoint, "max_retries: 4\n", "").replace(SK, "wrong-secret-value");
    let (exporter, ok, exposition) = once(&yaml).await;
    assert!(!ok);
    let calls = sim.sim.stats().calls;
    assert_eq!(
        calls.len(),
        1,
        "after a 401 no lane of the target sends anything: repeated failures lock the key"
    );
    assert_eq!(calls[0].status, 401);
    // One lane saw the 401; every lane, that one included, reports the hold.
    for scope in exporter.scopes().list() {
        for lane in [Lane::Malicious, Lane::Sweep] {
            let error = scope.lane_status(lane).last_error.unwrap();
            assert!(
                error.contains("authentication failed, held until "),
                "{error}"
            );
            assert!(error.contains("HTTP 401: APIG.0301"), "{error}");
            assert!(!error.contains("wrong-secret-value"));
        }
    }
    assert_eq!(exposition.sum("hss_swr_up", &[]), 0.0);
    assert!(!exposition.text.contains("wrong-secret-value"));
}

#[tokio::test]
async fn an_oversized_body_is_refused_not_read() {
    let sim = start_simulator(sim_config(300, 3)).await;
    let yaml = config_yaml(
        &sim.endpoint,
        "max_response_bytes: 2048\nmalicious_interval: 0\n",
        "    image_types: [private_image]\n",
    );
    let (exporter, ok, _) = once(&yaml).await;
    assert!(!ok);
    let error = exporter.scopes().list()[0]
        .lane_status(Lane::Sweep)
        .last_error
        .unwrap();
    assert!(
        error.ends_with("response body larger than the 2048-byte cap"),
        "{error}"
    );
    assert_eq!(
        sim.sim.stats().calls.len(),
        1,
        "a too-large body is not asked for again"
    );
}

#[tokio::test]
async fn a_cut_off_page_is_retried() {
    let sim = start_simulator(sim_config(500, 3)).await;
    sim.sim.fail_next(vec![Scripted::Malformed]);
    let yaml = config_yaml(&sim.endpoint, "", "    image_types: [private_image]\n");
    let (_, ok, exposition) = once(&yaml).await;
    assert!(ok);
    assert_eq!(
        exposition.value("hss_swr_api_retries_total", &[("reason", "malformed")]),
        1.0
    );
    assert_matches_simulator(&exposition, &sim.sim, "private_image");
}

#[tokio::test]
async fn the_daemon_serves_every_endpoint() {
    let sim = start_simulator(sim_config(1500, 6)).await;
    let yaml = config_yaml(&sim.endpoint, "poll_interval: 1h\n", "");
    let exporter = start_exporter(&yaml).await;
    let client = http();
    let healthy = client
        .get(format!("{}/-/healthy", exporter.url))
        .send()
        .await
        .unwrap();
    assert_eq!(healthy.status(), 200);
    let scopes = exporter.scopes.clone();
    eventually("every scope has run", || scopes.ready()).await;
    eventually("every lane has run", || all_lanes_ran(&scopes)).await;
    let ready = client
        .get(format!("{}/-/ready", exporter.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    let exposition = scrape(&exporter.url).await;
    let images = sim.sim.images();
    for image_type in TYPES {
        assert_scope_matches(
            &exposition,
            "test",
            "all_granted_eps",
            image_type,
            &expected(&images, image_type, "all_granted_eps"),
        );
    }
    assert!(exposition.find("process_resident_memory_bytes", &[]).len() == 1);
    assert!(exposition.find("hss_swr_build_info", &[]).len() == 1);

    let gzip = client
        .get(format!("{}/metrics", exporter.url))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gzip.headers()["content-encoding"], "gzip");
    assert!(
        gzip.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let compressed = gzip.bytes().await.unwrap();
    assert_eq!(&compressed[..2], &[0x1f, 0x8b]);
    // Two gzip members (fresh self-metrics, cached namespace series) that
    // any gzip reader joins into the plain exposition.
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::MultiGzDecoder::new(&compressed[..]),
        &mut text,
    )
    .unwrap();
    let unzipped = Exposition::parse(&text);
    assert_eq!(
        unzipped.find("hss_swr_vulnerabilities", &[]).len(),
        exposition.find("hss_swr_vulnerabilities", &[]).len()
    );
    assert!(text.ends_with('\n'));

    let status: serde_json::Value = client
        .get(format!("{}/status", exporter.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["ready"], true);
    assert_eq!(status["scopes"].as_array().unwrap().len(), 3);
    assert_eq!(status["scopes"][0]["lanes"][0]["state"], "ok");
    assert!(status["scopes"][0]["lanes"][0]["images"].as_u64().unwrap() > 0);
    assert_eq!(status["budgets"][0]["limit"], "1000/1s");
    assert!(!status.to_string().contains(SK));

    let landing = client
        .get(&exporter.url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(landing.contains("<a href=\"/metrics\">Metrics</a>"));
    assert!(landing.contains("private_image"));
    exporter.stop().await;
}

#[tokio::test]
async fn not_ready_until_every_scope_has_run() {
    let mut config = sim_config(200, 2);
    config.latency = Duration::from_secs(600);
    let sim = start_simulator(config).await;
    let yaml = config_yaml(
        &sim.endpoint,
        "request_timeout: 10m\n",
        "    image_types: [private_image]\n",
    );
    let exporter = start_exporter(&yaml).await;
    let ready = http()
        .get(format!("{}/-/ready", exporter.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    assert!(
        ready
            .text()
            .await
            .unwrap()
            .starts_with("Not ready: 0 of 1 scopes")
    );
    let exposition = scrape(&exporter.url).await;
    assert!(
        exposition.find("hss_swr_up", &[]).is_empty(),
        "no up series before the first run ends"
    );
    assert_eq!(
        exposition.value("hss_swr_polls_total", &[("lane", "sweep")]),
        0.0
    );
    exporter.stop().await;
}
