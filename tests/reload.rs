//! Reloading the configuration: `POST /-/reload` (and SIGHUP, in
//! tests/cli.rs) re-read the file; a valid one replaces the scopes while kept
//! scopes keep their data and counters, an invalid one is refused with the
//! reason and the running configuration stays.

mod common;

use common::*;

const DETECTED: &str = "hss_swr_malicious_images_detected_total";

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
    let exporter = start_exporter_with_file(&path).await;
    let scopes = exporter.scopes.clone();
    eventually("every lane has run", || all_lanes_ran(&scopes)).await;

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
        "configuration reloaded: 1 target(s), 2 scope(s), budget 1000/1s\n"
    );
    let scopes = exporter.scopes.clone();
    eventually("the new scope has run", || {
        scopes.list().len() == 2 && all_lanes_ran(&scopes)
    })
    .await;
    let exposition = scrape(&url).await;
    assert_eq!(
        exposition.value(DETECTED, &[("namespace", "reload-ns")]),
        1.0,
        "counters survive a reload"
    );
    // The kept scope's lanes restart under the new configuration; its run
    // count goes on from where it was (a fresh scope would stay at 1, with
    // poll_interval at one hour).
    let mut polls = 0.0;
    for _ in 0..300 {
        polls = scrape(&url).await.value(
            "hss_swr_polls_total",
            &[("image_type", "private_image"), ("lane", "sweep")],
        );
        if polls >= 2.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(polls, 2.0, "lane history survives a reload");
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

    // GET is not a reload.
    let response = http().get(format!("{url}/-/reload")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    exporter.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn without_a_configuration_file_reload_is_refused() {
    let sim = start_simulator(sim_config(100, 2)).await;
    let exporter = start_exporter(&config_yaml(
        &sim.endpoint,
        "",
        "    image_types: [private_image]\n",
    ))
    .await;
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
