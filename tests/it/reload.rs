//! Reloading the configuration: `POST /-/reload` (with
//! `--web.enable-lifecycle`; SIGHUP in tests/cli.rs) re-reads the file; a
//! valid one replaces the scopes while kept scopes keep their data and
//! counters, one equal to the running configuration restarts nothing, an
//! invalid one is refused with the reason and the running configuration
//! stays. The reload gauges say how the last one went.

use crate::common::*;

const DETECTED: &str = "hss_swr_malicious_images_detected_total";
const RELOAD_OK: &str = "hss_swr_config_last_reload_successful";
const RELOAD_TIME: &str = "hss_swr_config_last_reload_success_timestamp_seconds";

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test]
async fn a_valid_reload_keeps_the_kept_scopes_and_an_invalid_one_changes_nothing() {
    let sim = start_simulator(sim_config(900, 4)).await;
    let dir = std::env::temp_dir().join(format!("hss-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yml");
    let extra = "malicious_interval: 200ms\npoll_interval: 1h\n";
    std::fs::write(
        &path,
        config_yaml(&sim.endpoint, extra, "    image_types: [private_image]\n"),
    )
    .unwrap();
    let started = unix_now();
    let exporter = start_exporter_with_lifecycle(&path).await;
    let scopes = exporter.scopes.clone();
    eventually("every lane has run", || all_lanes_ran(&scopes)).await;
    let at_start = scrape(&exporter.url).await;
    assert_eq!(at_start.value(RELOAD_OK, &[]), 1.0, "1 at start");
    let start_time = at_start.value(RELOAD_TIME, &[]);
    assert!(
        start_time >= started.floor() && start_time <= unix_now(),
        "{start_time}"
    );

    sim.sim
        .set_malicious("reload-ns", "evil", "1", "private_image", "0", 2);
    let url = exporter.url.clone();
    let mut counted = false;
    for _ in 0..300 {
        if scrape(&url)
            .await
            .find(DETECTED, &[("namespace", "reload-ns")])
            .first()
            .is_some_and(|s| s.value == 1.0)
        {
            counted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(counted);

    // A second image type: one scope more; the kept one keeps its counter.
    std::fs::write(
        &path,
        config_yaml(
            &sim.endpoint,
            extra,
            "    image_types: [private_image, shared_image]\n",
        ),
    )
    .unwrap();
    let response = http().post(format!("{url}/-/reload")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        "configuration reloaded: 1 target(s), 2 scope(s), budget 1000/1s; 1 scope(s) (re)started, the others kept running\n"
    );
    let scopes = exporter.scopes.clone();
    eventually("the new scope has run", || {
        scopes.list().len() == 2 && all_lanes_ran(&scopes)
    })
    .await;
    let exposition = scrape(&url).await;
    assert_eq!(exposition.value(RELOAD_OK, &[]), 1.0);
    let reload_time = exposition.value(RELOAD_TIME, &[]);
    assert!(reload_time >= start_time, "{reload_time} {start_time}");
    assert_eq!(
        exposition.value(DETECTED, &[("namespace", "reload-ns")]),
        1.0,
        "counters survive a reload"
    );
    // The kept scope's lanes were not restarted: its sweep (every hour) ran
    // once, while its malicious lane goes on.
    let private = [("image_type", "private_image"), ("lane", "sweep")];
    assert_eq!(exposition.value("hss_swr_polls_total", &private), 1.0);
    let sweeps_of_private = sim
        .sim
        .stats()
        .calls
        .iter()
        .filter(|c| {
            c.offset == 0
                && c.query.contains("image_type=private_image")
                && !c.query.contains("has_malicious_file")
                && !c.query.contains("start_latest")
        })
        .count();
    assert_eq!(
        sweeps_of_private, 1,
        "the kept scope's sweep was not repeated"
    );
    let malicious = [("image_type", "private_image"), ("lane", "malicious")];
    let runs = exposition.value("hss_swr_polls_total", &malicious);
    eventually("the kept scope's malicious lane goes on", || {
        scopes
            .list()
            .iter()
            .find(|s| s.scope.image_type.as_str() == "private_image")
            .is_some_and(|s| {
                s.lane_status(hss_swr_exporter::collect::Lane::Malicious)
                    .runs as f64
                    >= runs + 2.0
            })
    })
    .await;
    assert!(
        !exposition
            .find("hss_swr_vulnerabilities", &[("image_type", "shared_image")])
            .is_empty()
    );

    // A typo: refused with the reason; the running configuration stays.
    std::fs::write(&path, "targets:\n  - regoin: cn-north-4\n").unwrap();
    let response = http().post(format!("{url}/-/reload")).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let text = response.text().await.unwrap();
    assert!(
        text.starts_with(
            "reload refused, the running configuration stays: targets[0].regoin: unknown field"
        ),
        "{text}"
    );
    assert_eq!(exporter.scopes.list().len(), 2);
    let status: serde_json::Value = http()
        .get(format!("{url}/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["scopes"].as_array().unwrap().len(), 2);
    let failed = scrape(&url).await;
    assert_eq!(failed.value(RELOAD_OK, &[]), 0.0, "the last reload failed");
    assert_eq!(
        failed.value(RELOAD_TIME, &[]),
        reload_time,
        "the last success stays"
    );

    // GET is not a reload.
    let response = http().get(format!("{url}/-/reload")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    exporter.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn without_a_configuration_file_reload_is_refused() {
    let sim = start_simulator(sim_config(100, 2)).await;
    let config = parse_config(&config_yaml(
        &sim.endpoint,
        "",
        "    image_types: [private_image]\n",
    ));
    let options = hss_swr_exporter::app::DaemonOptions {
        enable_lifecycle: true,
        ..hss_swr_exporter::app::DaemonOptions::new("/metrics")
    };
    let exporter = start_exporter_with_options(config, options).await;
    let response = http()
        .post(format!("{}/-/reload", exporter.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("no configuration file")
    );
    exporter.stop().await;
}

/// The sweep lane's status in `/status`.
async fn sweep_status(url: &str) -> serde_json::Value {
    let status: serde_json::Value = http()
        .get(format!("{url}/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    status["scopes"][0]["lanes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["lane"] == "sweep")
        .unwrap()
        .clone()
}

#[tokio::test]
async fn a_reload_to_an_equal_configuration_restarts_nothing() {
    let sim = start_simulator(sim_config(300, 3)).await;
    let dir = std::env::temp_dir().join(format!("hss-reload-same-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yml");
    let yaml = config_yaml(
        &sim.endpoint,
        "malicious_interval: 100ms\npoll_interval: 1h\n",
        "    image_types: [private_image]\n",
    );
    std::fs::write(&path, &yaml).unwrap();
    let exporter = start_exporter_with_lifecycle(&path).await;
    let scopes = exporter.scopes.clone();
    eventually("every lane has run", || all_lanes_ran(&scopes)).await;
    let url = exporter.url.clone();
    let before = sweep_status(&url).await;
    assert_eq!(before["runs"], 1);

    // The same content, rewritten (new modification time) and with a
    // comment: equal configurations, so nothing restarts.
    std::fs::write(&path, format!("# touched\n{yaml}")).unwrap();
    let response = http().post(format!("{url}/-/reload")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        "configuration unchanged: 1 target(s), 1 scope(s), budget 1000/1s; nothing restarted\n"
    );
    assert_eq!(scrape(&url).await.value(RELOAD_OK, &[]), 1.0);
    // The malicious lane goes on running (several rounds pass) while the
    // sweep lane, an hour from its next run, is not started again: a
    // restarted lane would sweep at once.
    let malicious_runs = |scopes: &hss_swr_exporter::collect::ScopeSet| {
        scopes.list()[0]
            .lane_status(hss_swr_exporter::collect::Lane::Malicious)
            .runs
    };
    let runs_then = malicious_runs(&scopes);
    eventually("the malicious lane keeps running", || {
        malicious_runs(&scopes) >= runs_then + 3
    })
    .await;
    let after = sweep_status(&url).await;
    assert_eq!(after["runs"], 1, "the sweep lane was not restarted");
    assert_eq!(after["next_run"], before["next_run"]);

    // A change of the scope's lane settings restarts its lanes: the sweep
    // runs again at once. Two requests at the same time run one after the
    // other: the first applies the change, the second finds it applied.
    std::fs::write(
        &path,
        yaml.replace("poll_interval: 1h", "poll_interval: 59m"),
    )
    .unwrap();
    let post = || async {
        let response = http().post(format!("{url}/-/reload")).send().await.unwrap();
        (response.status(), response.text().await.unwrap())
    };
    let (first, second) = tokio::join!(post(), post());
    assert_eq!((first.0.as_u16(), second.0.as_u16()), (200, 200));
    let mut answers = [first.1, second.1];
    answers.sort();
    assert!(
        answers[0].starts_with("configuration reloaded:")
            && answers[1].starts_with("configuration unchanged:"),
        "{answers:?}"
    );
    let scopes = exporter.scopes.clone();
    eventually("the restarted sweep lane has run again", || {
        scopes.list()[0]
            .lane_status(hss_swr_exporter::collect::Lane::Sweep)
            .runs
            >= 2
    })
    .await;
    exporter.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_rotated_secret_file_is_a_change_not_an_unchanged_configuration() {
    let sim = start_simulator(sim_config(50, 2)).await;
    let dir = std::env::temp_dir().join(format!("hss-reload-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yml");
    let secret = dir.join("secret_key");
    std::fs::write(&secret, SK).unwrap();
    let yaml = config_yaml(&sim.endpoint, "", "    image_types: [private_image]\n").replace(
        &format!("  secret_key: {SK}\n"),
        &format!("  secret_key_file: {}\n", secret.display()),
    );
    assert!(yaml.contains("secret_key_file"), "{yaml}");
    std::fs::write(&path, &yaml).unwrap();
    let exporter = start_exporter_with_lifecycle(&path).await;
    let reload = || async {
        http()
            .post(format!("{}/-/reload", exporter.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    assert!(reload().await.starts_with("configuration unchanged:"));
    // The configuration file is untouched; the secret it names is rotated.
    std::fs::write(&secret, format!("{SK}-rotated")).unwrap();
    let answer = reload().await;
    assert!(answer.starts_with("configuration reloaded:"), "{answer}");
    assert!(!answer.contains(SK), "no secret in the answer");
    exporter.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

/// Sweep calls (offset 0 of a full listing) of `image_type` the simulator
/// has answered.
fn sweeps_started(sim: &hss_swr_exporter::simulator::Simulator, image_type: &str) -> usize {
    sim.stats()
        .calls
        .iter()
        .filter(|c| {
            c.offset == 0
                && c.query.contains(&format!("image_type={image_type}"))
                && !c.query.contains("has_malicious_file")
                && !c.query.contains("start_latest")
        })
        .count()
}

#[tokio::test]
async fn a_reload_keeps_a_sweep_in_progress_of_an_unchanged_scope() {
    // A sweep of many small pages at 20 calls a second: caught mid-way.
    let sim = start_simulator(sim_config(2000, 4)).await;
    let dir = std::env::temp_dir().join(format!("hss-reload-keep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yml");
    let extra = "api_rate_limit: 10/500ms\npage_size: 10\nconcurrency: 1\n\
                 malicious_interval: 0\nchanges_interval: 0\npoll_interval: 1h\n";
    let write = |types: &str| {
        std::fs::write(
            &path,
            config_yaml(
                &sim.endpoint,
                extra,
                &format!("    image_types: [{types}]\n"),
            ),
        )
        .unwrap();
    };
    write("private_image");
    let exporter = start_exporter_with_lifecycle(&path).await;
    let url = exporter.url.clone();
    let pages = |sim: &hss_swr_exporter::simulator::Simulator| {
        sim.stats()
            .calls
            .iter()
            .filter(|c| c.query.contains("image_type=private_image"))
            .count()
    };
    eventually("the sweep is under way", || pages(&sim.sim) >= 3).await;
    assert_eq!(
        scrape(&url)
            .await
            .find("hss_swr_polls_total", &[("lane", "sweep")])
            .iter()
            .map(|s| s.value)
            .sum::<f64>(),
        0.0,
        "no sweep has finished yet"
    );

    // A second image type: the private_image sweep goes on where it was.
    write("private_image, shared_image");
    let response = http().post(format!("{url}/-/reload")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("1 scope(s) (re)started"),
        "only the new scope starts"
    );
    let scopes = exporter.scopes.clone();
    eventually("both scopes have swept", || {
        scopes.list().len() == 2 && all_lanes_ran(&scopes)
    })
    .await;
    assert_eq!(
        sweeps_started(&sim.sim, "private_image"),
        1,
        "the sweep in progress was not thrown away"
    );
    let exposition = scrape(&url).await;
    assert_matches_simulator(&exposition, &sim.sim, "private_image");
    assert_matches_simulator(&exposition, &sim.sim, "shared_image");

    // A change every scope depends on (the page size) restarts them all.
    std::fs::write(
        &path,
        config_yaml(
            &sim.endpoint,
            &extra.replace("page_size: 10", "page_size: 200"),
            "    image_types: [private_image, shared_image]\n",
        ),
    )
    .unwrap();
    let response = http().post(format!("{url}/-/reload")).send().await.unwrap();
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("2 scope(s) (re)started")
    );
    eventually("the restarted scopes swept again", || {
        sweeps_started(&sim.sim, "private_image") == 2
            && sweeps_started(&sim.sim, "shared_image") == 2
    })
    .await;
    std::fs::remove_dir_all(dir).unwrap();
}
